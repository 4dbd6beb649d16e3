//! End-to-end scenarios: given a `.rush` and files, a private `taskrushd`
//! on a temp socket, the real `taskrush`; expect this output and status.

mod arguments;
mod audit;
mod builtin_words;
mod cache;
mod cancel;
mod client;
mod completions;
mod connection_limits;
mod daemon;
mod dotenv;
mod duration;
mod escapes;
mod grants;
mod hashing;
mod hostile_files;
mod includes;
mod limits;
mod listing;
mod orphans;
mod outputs;
mod plugin_commands;
mod plugins;
mod protocol;
mod proxy;
mod reload;
mod run;
mod run_summary;
mod rush_file;
mod sandbox;
mod schema;
mod socket_life;
mod terminal;
mod tidy;
mod trust;
mod working_dir;
