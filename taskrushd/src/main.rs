//! `taskrushd`: the per-user TaskRush daemon.
//!
//! Usually started by `taskrush` on first use; it can also be started by
//! hand (`taskrushd --foreground`) to watch its log on the terminal.
//!
//! Exit codes: 0 after a clean stop (or when another daemon already serves
//! the socket), 1 when it cannot start.

mod cache;
mod config_error;
mod connection;
mod daemon;
mod discover;
mod expand;
mod file_hashes;
mod input_files;
mod listener;
mod planner;
mod projects;
mod runner;
mod rush_file;
mod server;
mod spawn;
mod transport;

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser;
use taskrush_protocol::paths::{DaemonPaths, ENV_SOCKET};

/// The TaskRush daemon. You rarely start it yourself: `taskrush` does.
#[derive(Parser, Debug)]
#[command(name = "taskrushd", version)]
struct Args {
    /// Log to stderr and stay attached to the terminal (for debugging).
    #[arg(long)]
    foreground: bool,
    /// Print `ready` on stdout once the socket accepts connections, then
    /// detach from it (used by `taskrush` when it starts the daemon).
    #[arg(long)]
    notify_ready: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let paths = DaemonPaths::from_env();
    if !args.foreground {
        // Our own session: no terminal, no signals from the user's shell.
        let _ = rustix::process::setsid();
    }
    if let Err(e) = init_logging(&paths, args.foreground) {
        eprintln!("error: cannot open the log `{}`: {e}", paths.log.display());
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let explicit = std::env::var_os(ENV_SOCKET).is_some_and(|s| !s.is_empty());
        let bound = match listener::bind(&paths, explicit) {
            Ok(b) => b,
            Err(listener::BindError::AlreadyRunning) => {
                tracing::info!("another daemon serves `{}`", paths.socket.display());
                ready(args.notify_ready, "already-running");
                return ExitCode::SUCCESS;
            }
            Err(e) => {
                tracing::error!("{e}");
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(pid = std::process::id(), version = taskrush_protocol::VERSION, socket = %paths.socket.display(), "listening");
        ready(args.notify_ready, "ready");
        let daemon = daemon::Daemon::new(paths);
        let listener::Bound { listener, lock } = bound;
        server::serve(listener, daemon).await;
        drop(lock);
        ExitCode::SUCCESS
    })
}

/// Tell the starting CLI we are serving, then let go of its pipe.
fn ready(notify: bool, word: &str) {
    if !notify {
        return;
    }
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{word} {}", std::process::id());
    let _ = out.flush();
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        let _ = rustix::stdio::dup2_stdout(&null);
        let _ = rustix::stdio::dup2_stderr(&null);
    }
}

fn init_logging(paths: &DaemonPaths, foreground: bool) -> std::io::Result<()> {
    use tracing_subscriber::filter::LevelFilter;
    let level = match std::env::var("TASKRUSH_LOG_LEVEL").as_deref() {
        Ok("trace") => LevelFilter::TRACE,
        Ok("debug") => LevelFilter::DEBUG,
        Ok("warn") => LevelFilter::WARN,
        Ok("error") => LevelFilter::ERROR,
        _ => LevelFilter::INFO,
    };
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_target(false);
    if foreground {
        builder.with_writer(std::io::stderr).init();
        return Ok(());
    }
    if let Some(dir) = paths.log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&paths.log)?;
    builder
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .init();
    Ok(())
}
