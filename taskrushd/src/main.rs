//! `taskrushd`: the per-user TaskRush daemon.
//!
//! Usually started by `taskrush` on first use; it can also be started by
//! hand (`taskrushd --foreground`) to watch its log on the terminal.
//!
//! Exit codes: 0 after a clean stop (or when another daemon already serves
//! the socket), 1 when it cannot start.

mod api;
mod cache;
mod config;
mod event_bus;
mod human;
mod memory;
mod metrics;
mod plugin;
mod process;
mod registry;
mod run;
mod server;
mod stamp;
mod ui;
mod watch;

use api::{Daemon, DaemonOptions};
use process::spawn;
use process::watchdog;
use server::listener;
use server::log_file;

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
    /// Print `ready <pid>` on stdout once the socket accepts connections,
    /// then detach from it (used by `taskrush` when it starts the daemon).
    /// The process stays in the foreground: it is the daemon (to start it
    /// and return, use `taskrush daemon start`).
    #[arg(long)]
    notify_ready: bool,
    /// Exit after this long with no clients and no runs (`90s`, `30m`,
    /// `3h`; `0` = never). Shorter frees memory sooner; longer keeps
    /// parsed configs and file hashes warm across breaks. Default:
    /// $TASKRUSH_IDLE_TIMEOUT, else 3h.
    #[arg(long, value_name = "DURATION")]
    idle_timeout: Option<String>,
    /// Why this daemon is being started (shown by `taskrush daemon status`).
    #[arg(long, value_name = "TEXT", default_value = "started by hand")]
    started_because: String,
    /// Serve exactly one client on the Unix socket that is this process's
    /// stdin, then exit: `taskrush --no-daemon` (no socket, no lock, no
    /// process left behind).
    #[arg(long, conflicts_with = "notify_ready")]
    stdio: bool,
    /// Connections served at once (beyond it a client is refused with an
    /// error saying so). Default: $TASKRUSH_MAX_CONNECTIONS, else 1024.
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
}

/// Default idle timeout: three hours, as Gradle, Nx and Bazel.
const DEFAULT_IDLE: std::time::Duration = std::time::Duration::from_secs(3 * 3600);

/// `90`, `90s`, `500ms`, `30m`, `3h`; `0` means never.
fn parse_duration(text: &str) -> Result<Option<std::time::Duration>, String> {
    let t = text.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration `{text}` (try `90s`, `30m`, `3h`)"))?;
    let d = match unit {
        "" | "s" => std::time::Duration::from_secs(n),
        "ms" => std::time::Duration::from_millis(n),
        "m" => std::time::Duration::from_secs(n * 60),
        "h" => std::time::Duration::from_secs(n * 3600),
        _ => {
            return Err(format!(
                "invalid duration `{text}` (try `90s`, `30m`, `3h`)"
            ));
        }
    };
    Ok((!d.is_zero()).then_some(d))
}

fn main() -> ExitCode {
    #[cfg(target_os = "linux")]
    if let Some(code) = process::sandbox::run_if_asked() {
        return code;
    }
    if let Some(code) = watchdog::run_if_asked() {
        return code;
    }
    // A native plugin's host process: `taskrushd --native-host LIB`.
    if let Some(code) = plugin::run_native_host_if_asked() {
        return code;
    }
    spawn::raise_fd_limit();
    let args = Args::parse();
    let paths = DaemonPaths::from_env();
    let idle = args
        .idle_timeout
        .clone()
        .or_else(|| std::env::var("TASKRUSH_IDLE_TIMEOUT").ok())
        .map(|t| parse_duration(&t))
        .unwrap_or(Ok(Some(DEFAULT_IDLE)));
    let idle_timeout = match idle {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let options = DaemonOptions {
        // Tests pretend to be another version to exercise replacement.
        version: std::env::var("TASKRUSH_TEST_DAEMON_VERSION")
            .unwrap_or_else(|_| taskrush_protocol::VERSION.to_owned()),
        started_because: args.started_because.clone(),
        idle_timeout: if args.stdio { None } else { idle_timeout },
        watch_inputs: !args.stdio,
    };
    if !args.foreground {
        // Our own session: no controlling terminal (a task reading a
        // passed terminal is not stopped by job control), no signals from
        // the user's shell.
        let _ = rustix::process::setsid();
    }
    watchdog::start();
    if args.stdio {
        return serve_stdio(paths, options);
    }
    // Only the shared daemon limits connections (`--stdio` serves one).
    let (max_connections, from) = match args.max_connections {
        Some(n) => (n.to_string(), "--max-connections"),
        None => match std::env::var("TASKRUSH_MAX_CONNECTIONS") {
            Ok(n) => (n, "TASKRUSH_MAX_CONNECTIONS"),
            Err(_) => (
                server::accept::DEFAULT_MAX_CONNECTIONS.to_string(),
                "the default",
            ),
        },
    };
    let max_connections = match max_connections.trim().parse::<usize>() {
        Ok(n) if n > 0 => n,
        _ => {
            eprintln!(
                "error: invalid `{from}` value `{max_connections}`: expected a number of connections above 0"
            );
            return ExitCode::FAILURE;
        }
    };
    let explicit = std::env::var_os(ENV_SOCKET).is_some_and(|s| !s.is_empty());
    // The socket's directory first (0700 when created), then the log,
    // which may live in it.
    if let Err(e) = listener::prepare_dir(&paths.dir, !explicit) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    if let Err(e) = init_logging(&paths, args.foreground) {
        eprintln!("error: cannot open the log: {e}");
        return ExitCode::FAILURE;
    }
    open_audit_trail(&paths);
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
    // The lock outlives the runtime: `taskrush daemon stop` returns when
    // the lock is free, and by then nothing of this daemon may be running.
    let (code, lock) = runtime.block_on(async {
        let bound = match listener::bind(&paths) {
            Ok(b) => b,
            Err(listener::BindError::AlreadyRunning) => {
                tracing::info!("another daemon serves `{}`", paths.socket.display());
                ready(args.notify_ready, "already-running");
                return (ExitCode::SUCCESS, None);
            }
            Err(e) => {
                tracing::error!("{e}");
                eprintln!("error: {e}");
                return (ExitCode::FAILURE, None);
            }
        };
        tracing::info!(pid = std::process::id(), version = taskrush_protocol::VERSION, socket = %paths.socket.display(), "listening");
        ready(args.notify_ready, "ready");
        let daemon = Daemon::new(paths.clone(), options);
        let listener::Bound {
            listener,
            socket_id,
            lock,
        } = bound;
        let socket = server::accept::Socket {
            listener,
            id: socket_id,
            lock: &lock,
            paths,
            max_connections,
        };
        server::accept::serve(socket, daemon.clone()).await;
        daemon.watcher.remove_cookies();
        (ExitCode::SUCCESS, Some(lock))
    });
    // Bounded: a blocking task stuck in a system call must not keep the
    // daemon (and its lock) alive.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    plugin::flush_audit(std::time::Duration::from_secs(1));
    drop(lock);
    code
}

/// `--stdio`: one client on the socket that is our stdin; the same
/// daemon code, without a listening socket. Logs go to the usual log file
/// when it can be opened. Ctrl-C is the client's business: it cancels
/// its run through the protocol, so SIGINT is ignored here.
fn serve_stdio(paths: DaemonPaths, options: DaemonOptions) -> ExitCode {
    let _ = init_logging(&paths, false);
    open_audit_trail(&paths);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async {
        let _ignore_sigint =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt());
        // Close-on-exec: tasks, plugins and the watchdog must not hold the
        // client's connection (a task's background process would keep it).
        let stdin = match rustix::io::fcntl_dupfd_cloexec(std::io::stdin(), 0) {
            Ok(fd) => fd,
            Err(e) => {
                eprintln!("error: --stdio needs a socket on stdin: {e}");
                return ExitCode::FAILURE;
            }
        };
        let std_stream = std::os::unix::net::UnixStream::from(stdin);
        let stream = match std_stream
            .set_nonblocking(true)
            .and_then(|_| tokio::net::UnixStream::from_std(std_stream))
        {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: --stdio needs a socket on stdin: {e}");
                return ExitCode::FAILURE;
            }
        };
        let daemon = Daemon::new(paths, options);
        server::accept::serve_one(stream, daemon).await;
        ExitCode::SUCCESS
    });
    plugin::flush_audit(std::time::Duration::from_secs(1));
    code
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

/// The plugin audit trail (and the grants file beside it); a daemon that
/// cannot open the trail still serves, and says so in its log.
fn open_audit_trail(paths: &DaemonPaths) {
    plugin::open_grants(&paths.grants);
    plugin::open_command_cache(&paths.grants.with_file_name("plugin-commands.json"));
    plugin::open_disabled(&paths.grants.with_file_name("plugins-disabled.json"));
    metrics::start();
    if let Err(e) = plugin::open_audit(&paths.audit) {
        tracing::warn!(
            "cannot open the plugin audit trail `{}`: {e}",
            paths.audit.display()
        );
    }
}

fn init_logging(paths: &DaemonPaths, foreground: bool) -> Result<(), listener::BindError> {
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
    let file = log_file::RotatingLog::open(&paths.log)?;
    builder
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .init();
    if let Err(invalid) = log_file::max_bytes() {
        tracing::warn!("{invalid}");
    }
    Ok(())
}
