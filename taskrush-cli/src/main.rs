//! `taskrush`: the thin TaskRush command line.
//!
//! It parses arguments, connects to the daemon's socket (starting the
//! daemon if none answers), sends one request, renders the answer and
//! exits. It never spawns a task and never reads a `.rush` file.
//!
//! Exit codes: 0 success; the failing task's exit status (128 + N when a
//! signal N killed it); 1 for TaskRush's own errors (bad `.rush`, unknown
//! task, daemon unreachable); 2 for command-line usage errors; 130 when
//! the run was cancelled with Ctrl-C; 3 for `daemon status` when no daemon
//! runs.

mod args;
mod client;
mod daemon_cmd;
mod error;
mod list;
mod render;
mod run;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command};

fn main() -> ExitCode {
    let argv = args::normalize(std::env::args_os().collect());
    let cli = Cli::parse_from(argv);
    let result = match cli.command {
        Command::Run(args) if args.list => list::list(&args),
        Command::Run(args) => run::run(args),
        Command::Daemon { action } => daemon_cmd::daemon(action),
    };
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprint!("{}", e.render());
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// The client's working directory, as the daemon must see it.
pub fn cwd() -> Result<String, error::CliError> {
    std::env::current_dir()
        .map(|p| p.display().to_string())
        .map_err(|e| error::CliError::io("cannot read the current directory", e))
}
