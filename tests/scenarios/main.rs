//! End-to-end scenarios: given a `.rush` and files, a private `taskrushd`
//! on a temp socket, the real `taskrush`; expect this output and status.

mod audit;
mod cache;
mod cancel;
mod client;
mod connection_limits;
mod daemon;
mod duration;
mod hashing;
mod hostile_files;
mod orphans;
mod plugins;
mod protocol;
mod reload;
mod run;
mod rush_file;
mod sandbox;
mod socket_life;
mod terminal;
mod tidy;
mod trust;
mod wasm;
