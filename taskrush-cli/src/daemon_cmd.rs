//! `taskrush daemon start|status|stop|restart|logs|cache`.

use std::io::{Read, Seek, Write};
use std::time::Duration;

use taskrush_protocol::daemon::{CachePruned, CacheStatus, DaemonStatus};
use taskrush_protocol::method;
use taskrush_protocol::paths::DaemonPaths;

use crate::args::{CacheAction, DaemonAction};
use crate::client;
use crate::error::CliError;

/// Exit status of `daemon status` when no daemon runs (as LSB `status`).
const EXIT_NOT_RUNNING: i32 = 3;
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

pub fn daemon(action: DaemonAction) -> Result<i32, CliError> {
    let paths = DaemonPaths::from_env();
    match action {
        DaemonAction::Start { json } => start(&paths, json),
        DaemonAction::Status { json } => status(&paths, json),
        DaemonAction::Stop => {
            if !stop(&paths)? {
                println!("taskrushd is not running");
            }
            Ok(0)
        }
        DaemonAction::Restart => {
            stop(&paths)?;
            client::start_daemon(&paths, "restarted by `taskrush daemon restart`")?;
            status(&paths, false)
        }
        DaemonAction::Logs { follow, lines } => logs(&paths, follow, lines),
        DaemonAction::Cache { action } => cache(&paths, action),
        DaemonAction::Stats { json } => {
            let mut c = client::connect(&paths, false, false)?;
            crate::stats_cmd::daemon_stats(&mut c, json)
        }
        DaemonAction::Metrics => {
            let mut c = client::connect(&paths, false, false)?;
            crate::stats_cmd::daemon_metrics(&mut c)
        }
        DaemonAction::Ui { print } => ui(&paths, print),
    }
}

/// `daemon ui`: ask the daemon for the page's address (starting the
/// daemon and the page's server if needed) and open it in the user's
/// browser: `$BROWSER`, else `xdg-open` (`open` on macOS); the link is
/// printed when there is none, or with `--print`.
fn ui(paths: &DaemonPaths, print: bool) -> Result<i32, CliError> {
    let mut c = client::connect(paths, false, false)?;
    let opened: taskrush_protocol::daemon::UiOpened =
        c.call(method::UI_OPEN, serde_json::json!({}))?;
    if print {
        println!("{}", opened.url);
        return Ok(0);
    }
    match open_browser(&opened.url) {
        Some(browser) => {
            println!("opened the plugin manager page with `{browser}`");
            println!("(the link works once; `taskrush daemon ui` gives a new one)");
        }
        None => {
            println!("open this link in your browser (it works once):");
            println!("{}", opened.url);
        }
    }
    Ok(0)
}

/// Open `url` with the first browser launcher that starts; its name.
fn open_browser(url: &str) -> Option<String> {
    let mut candidates: Vec<String> = std::env::var("BROWSER")
        .ok()
        .filter(|b| !b.trim().is_empty())
        .map(|b| b.split(':').map(str::to_owned).collect())
        .unwrap_or_default();
    if candidates.is_empty() {
        candidates.push(
            if cfg!(target_os = "macos") {
                "open"
            } else {
                "xdg-open"
            }
            .into(),
        );
    }
    candidates.into_iter().find(|browser| {
        std::process::Command::new(browser)
            .arg(url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .is_ok()
    })
}

/// `daemon cache status|prune`: the per-user output store, through the
/// daemon (started if needed: it owns the store and its counters).
fn cache(paths: &DaemonPaths, action: CacheAction) -> Result<i32, CliError> {
    let mut c = client::connect(paths, false, false)?;
    match action {
        CacheAction::Status { json } => {
            let s: CacheStatus = c.call(method::CACHE_STATUS, serde_json::json!({}))?;
            if json {
                let v = serde_json::to_value(&s).map_err(|e| CliError::Protocol(e.to_string()))?;
                println!("{v}");
                return Ok(0);
            }
            println!("store:     {}", s.dir);
            println!(
                "size:      {} of {} ({} blobs)",
                size(s.bytes),
                size(s.limit_bytes),
                s.blobs
            );
            println!("entries:   {}", s.entries);
            println!(
                "hits:      {} since the daemon started ({} files restored)",
                s.hits, s.restored_files
            );
        }
        CacheAction::Prune { max_size } => {
            let p: CachePruned = c.call(
                method::CACHE_PRUNE,
                serde_json::json!({ "max_bytes": max_size }),
            )?;
            println!("pruned {} entries, {} freed", p.entries, size(p.bytes));
        }
    }
    Ok(0)
}

/// `1.5 GiB`, `12.0 MiB`, `300 B`.
fn size(bytes: u64) -> String {
    const UNITS: &[&str] = &["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Exit status of `daemon status` when a daemon holds the lock but does
/// not answer on the socket (as LSB `status`: unknown).
const EXIT_NOT_ANSWERING: i32 = 4;
/// How long a daemon that holds its lock gets to bring its socket back
/// (it re-binds a deleted socket as soon as it sees it gone).
const REBIND_WAIT: Duration = Duration::from_secs(2);

/// Connect to the running daemon. `Err(None)` when none runs; `Err(Some(pid))`
/// when one holds the lock (`pid` as its lock file says, for people) but
/// does not answer on the socket, even after a moment to re-bind it.
fn connect_running(
    paths: &DaemonPaths,
) -> Result<Result<client::Client, Option<String>>, CliError> {
    let deadline = std::time::Instant::now() + REBIND_WAIT;
    loop {
        if let Some(c) = client::connect_existing(paths)? {
            return Ok(Ok(c));
        }
        if !client::lock_held(paths) {
            return Ok(Err(None));
        }
        if std::time::Instant::now() >= deadline {
            let mut pid = String::new();
            if let Ok(f) = client::open_regular(&paths.lock) {
                let _ = f.take(32).read_to_string(&mut pid);
            }
            let pid = pid.trim().to_owned();
            return Ok(Err(Some(pid)));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What to say about a daemon that holds the lock and does not answer:
/// the message and the hint.
fn not_answering(paths: &DaemonPaths, pid: &str) -> (String, String) {
    (
        format!(
            "a taskrushd (pid {pid}, per `{}`) holds the lock but does not answer on `{}`",
            paths.lock.display(),
            paths.socket.display()
        ),
        format!("see `taskrush daemon logs`; if it does not recover, end it with `kill {pid}`"),
    )
}

/// `daemon start`: idempotent, and it returns once the daemon answers on
/// its socket (the daemon's own output is not inherited, so a caller
/// reading ours to its end, as `execFile` does, is not held open).
fn start(paths: &DaemonPaths, json: bool) -> Result<i32, CliError> {
    let (mut c, started) = match connect_running(paths)? {
        Ok(c) => (c, false),
        Err(Some(pid)) => {
            let (message, hint) = not_answering(paths, &pid);
            eprintln!("error: {message}\nhint: {hint}");
            return Ok(EXIT_NOT_ANSWERING);
        }
        Err(None) => {
            client::start_daemon(paths, "started by `taskrush daemon start`")?;
            (client::connect(paths, false, false)?, true)
        }
    };
    let s: DaemonStatus = c.call(method::DAEMON_STATUS, serde_json::json!({}))?;
    if json {
        println!(
            "{}",
            serde_json::json!({"pid": s.pid, "socket": s.socket, "started": started})
        );
    } else if started {
        println!("taskrushd started, pid {}, socket `{}`", s.pid, s.socket);
    } else {
        println!(
            "taskrushd already running, pid {}, socket `{}`",
            s.pid, s.socket
        );
    }
    Ok(0)
}

fn status(paths: &DaemonPaths, json: bool) -> Result<i32, CliError> {
    let mut c = match connect_running(paths)? {
        Ok(c) => c,
        Err(Some(pid)) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"running": true, "answering": false,
                        "socket": paths.socket.display().to_string(), "lock_pid": pid})
                );
            } else {
                let (message, hint) = not_answering(paths, &pid);
                println!("{message}\nhint: {hint}");
            }
            return Ok(EXIT_NOT_ANSWERING);
        }
        Err(None) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"running": false, "socket": paths.socket.display().to_string()})
                );
            } else {
                println!(
                    "taskrushd is not running (socket `{}`)",
                    paths.socket.display()
                );
            }
            return Ok(EXIT_NOT_RUNNING);
        }
    };
    let s: DaemonStatus = c.call(method::DAEMON_STATUS, serde_json::json!({}))?;
    if json {
        let mut v = serde_json::to_value(&s).map_err(|e| CliError::Protocol(e.to_string()))?;
        v["running"] = true.into();
        println!("{v}");
        return Ok(0);
    }
    println!(
        "taskrushd {} (protocol {}), pid {}, up {}",
        s.version,
        s.protocol,
        s.pid,
        uptime(s.uptime_ms)
    );
    println!("socket:   {}", s.socket);
    println!("log:      {}", s.log);
    println!("projects: {}", s.projects.len());
    for p in &s.projects {
        println!("  {p}");
    }
    println!("runs:     {}", s.runs);
    println!("clients:  {}", s.clients);
    println!(
        "memory:   {:.1} MiB",
        s.rss_bytes as f64 / (1024.0 * 1024.0)
    );
    println!("started:  {}", s.started_because);
    match &s.watcher_error {
        Some(e) => println!("watching: degraded: {e}"),
        None => println!("watching: {} directories", s.watched_dirs),
    }
    let checks = s.cache_checks_watched + s.cache_checks_full;
    if checks > 0 {
        println!(
            "checks:   {checks} up-to-date checks ({} answered by the watcher, {} in full)",
            s.cache_checks_watched, s.cache_checks_full
        );
    }
    if !s.plugins.is_empty() {
        let all =
            |m: &std::collections::BTreeMap<String, String>| m.values().all(|v| v == "enforced");
        let sandboxed = s.plugins.iter().filter(|p| all(&p.enforcement)).count();
        let limited = s
            .plugins
            .iter()
            .filter(|p| p.limits.values().all(|l| l.level == "enforced"))
            .count();
        println!(
            "plugins:  {} running; sandbox fully enforced for {sandboxed}, limits fully enforced for {limited} (`--json` for each kind)",
            s.plugins.len()
        );
    }
    for w in &s.config_warnings {
        println!("warning:  {w}");
    }
    if s.idle_timeout_s > 0 {
        println!(
            "idle:     exits after {} without clients or runs",
            uptime(s.idle_timeout_s * 1000)
        );
    }
    Ok(0)
}

fn uptime(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}

/// Ask the daemon to stop and wait until its socket is gone. False when
/// none was running.
fn stop(paths: &DaemonPaths) -> Result<bool, CliError> {
    let running = match connect_running(paths) {
        // Refused (at its connection limit, or out of descriptors): it
        // stops the same way on SIGTERM, sent to the process that holds
        // its lock.
        Err(CliError::Remote(e)) if e.code == taskrush_protocol::error::BUSY => {
            let Some(pid) = lock_holder(paths) else {
                return Err(CliError::Remote(e));
            };
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            if client::wait_stopped(paths, STOP_TIMEOUT) {
                return Ok(true);
            }
            return Err(CliError::Remote(e));
        }
        other => other?,
    };
    let mut c = match running {
        Ok(c) => c,
        Err(None) => return Ok(false),
        Err(Some(pid)) => {
            let (message, hint) = not_answering(paths, &pid);
            return Err(CliError::Remote(taskrush_protocol::error::WireError {
                code: taskrush_protocol::error::BUSY,
                message,
                data: Some(serde_json::json!({ "hint": hint })),
            }));
        }
    };
    let _: bool = c.call(method::DAEMON_STOP, serde_json::json!({}))?;
    drop(c);
    if client::wait_stopped(paths, STOP_TIMEOUT) {
        return Ok(true);
    }
    Err(CliError::Protocol(format!(
        "the daemon did not stop within {}s; see `taskrush daemon logs`",
        STOP_TIMEOUT.as_secs()
    )))
}

/// The process holding the daemon's lock, as the kernel says
/// (`/proc/locks`: `1: FLOCK ADVISORY WRITE PID MAJ:MIN:INODE 0 EOF`),
/// not as the lock file's text says.
fn lock_holder(paths: &DaemonPaths) -> Option<rustix::process::Pid> {
    use std::os::unix::fs::MetadataExt as _;
    let md = std::fs::symlink_metadata(&paths.lock).ok()?;
    if !md.is_file() {
        return None;
    }
    let want = format!(
        "{:02x}:{:02x}:{}",
        rustix::fs::major(md.dev()),
        rustix::fs::minor(md.dev()),
        md.ino()
    );
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.get(1) == Some(&"FLOCK") && f.get(5) == Some(&want.as_str()) {
            rustix::process::Pid::from_raw(f.get(4)?.parse().ok()?)
        } else {
            None
        }
    })
}

fn logs(paths: &DaemonPaths, follow: bool, lines: usize) -> Result<i32, CliError> {
    let mut file = match client::open_regular(&paths.log) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !follow => {
            println!("no log yet (`{}`)", paths.log.display());
            return Ok(0);
        }
        Err(e) => {
            return Err(CliError::io(
                &format!("cannot open `{}`", paths.log.display()),
                e,
            ));
        }
    };
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| CliError::io("cannot read the log", e))?;
    let all: Vec<&str> = text.lines().collect();
    let mut out = std::io::stdout();
    for l in &all[all.len().saturating_sub(lines)..] {
        if writeln!(out, "{l}").is_err() {
            return Ok(0);
        }
    }
    if !follow {
        return Ok(0);
    }
    let mut pos = file
        .stream_position()
        .map_err(|e| CliError::io("cannot read the log", e))?;
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let Ok(mut f) = client::open_regular(&paths.log) else {
            continue;
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        if len < pos {
            pos = 0; // truncated or replaced
        }
        if len > pos {
            let _ = f.seek(std::io::SeekFrom::Start(pos));
            let mut chunk = Vec::new();
            let _ = f.read_to_end(&mut chunk);
            pos += chunk.len() as u64;
            if out.write_all(&chunk).and_then(|_| out.flush()).is_err() {
                return Ok(0);
            }
        }
    }
}
