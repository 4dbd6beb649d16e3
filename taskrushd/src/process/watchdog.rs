//! The watchdog: one tiny process per daemon that ends the daemon's task
//! and plugin process groups when the daemon dies, even by `kill -9`.
//!
//! A task run without a client terminal has nobody left to stop it when
//! the daemon is killed, and a plugin's `PR_SET_PDEATHSIG` reaches the
//! plugin itself, not its helpers. So at start the daemon runs its own
//! binary as `taskrushd --watchdog PID` (in a process group of its own,
//! with no environment and `/` as its directory) and keeps the write end of
//! a pipe to its stdin. It writes one line per spawn (`+PGID`) and one per
//! reaped group leader (`-PGID`): no extra process per task. The watchdog
//! learns that the daemon died in two ways: end of file on the pipe (the
//! kernel closes the daemon's descriptors when it dies, however it dies)
//! and `PR_SET_PDEATHSIG` (should a descriptor leak keep the pipe open).
//! It then sends SIGTERM to every group still registered, waits up to
//! [`GRACE`](crate::process::spawn::GRACE), sends SIGKILL to what is left, and
//! exits.
//!
//! A group is unregistered once its leader was reaped (a normal exit, or
//! after a cancel ended the group): what a task leaves running on purpose
//! after it exited (`pg_ctl start`, `docker compose up -d`) is kept, as it
//! would be from a shell. A process that left its group (`setsid`,
//! `setpgid`) escapes the watchdog too.
//!
//! The daemon keeps the set of registered groups and a thread that waits
//! for its watchdog: should the watchdog end while the daemon lives (a
//! `kill -9` of it), it is reaped, logged, and a new one is started within
//! [`RESTART_MIN`] and handed every registered group.

use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

/// How long a watchdog whose daemon died waits for the rest of its pipe.
const DRAIN: Duration = Duration::from_secs(1);

/// The argument that turns `taskrushd` into a watchdog.
const FLAG: &str = "--watchdog";

/// How long the keeper waits before starting a watchdog again after one
/// ended or could not be started (doubling up to [`RESTART_MAX`]), so that
/// a watchdog that cannot live costs nothing.
const RESTART_MIN: Duration = Duration::from_millis(100);
const RESTART_MAX: Duration = Duration::from_secs(60);

/// What the daemon knows of its watchdog.
static STATE: OnceLock<Mutex<State>> = OnceLock::new();

struct State {
    /// The groups registered now: sent again to a new watchdog.
    groups: BTreeSet<u32>,
    /// The pipe to the running watchdog (non-blocking) and its pid;
    /// `None` while there is none.
    pipe: Option<(ChildStdin, u32)>,
}

fn state() -> std::sync::MutexGuard<'static, State> {
    STATE
        .get_or_init(|| {
            Mutex::new(State {
                groups: BTreeSet::new(),
                pipe: None,
            })
        })
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// `taskrushd --watchdog PID`: be the watchdog of daemon PID, and return
/// its exit code. `None` for any other command line.
pub(crate) fn run_if_asked() -> Option<ExitCode> {
    let mut args = std::env::args_os().skip(1);
    if args.next()? != FLAG {
        return None;
    }
    let parent = args
        .next()
        .and_then(|a| a.to_str()?.parse::<i32>().ok())
        .and_then(Pid::from_raw);
    Some(match parent {
        Some(parent) => watch(parent),
        None => ExitCode::FAILURE,
    })
}

/// Start this daemon's watchdog, and keep one running. Call it from the
/// thread that lives as long as the daemon (the parent-death signal
/// follows the thread that forked). A keeper thread (living as long as
/// the daemon too) waits for it (so an ended watchdog is reaped, never left a
/// zombie), and should it end while the daemon lives (a `kill -9` of the
/// watchdog) starts a new one and registers the current groups with it.
/// Failing to start one is logged and retried; tasks then die with the
/// daemon only as before, meanwhile.
pub(crate) fn start() {
    // The first one from this thread, before anything else is open: it
    // inherits nothing the daemon opens later without `O_CLOEXEC`.
    let first = spawn_watchdog();
    let _ = std::thread::Builder::new()
        .name("watchdog-keeper".into())
        .spawn(move || keep(first));
}

fn keep(first: std::io::Result<Child>) {
    let mut next = Some(first);
    let mut backoff = RESTART_MIN;
    // Consecutive failures to start one: the first is retried before it
    // is logged (the log may not be open yet when the daemon starts).
    let mut failing = 0u32;
    loop {
        match next.take().unwrap_or_else(spawn_watchdog) {
            Ok(mut child) => {
                if failing > 1 {
                    tracing::info!(pid = child.id(), "watchdog started");
                }
                failing = 0;
                let started = Instant::now();
                let status = child.wait();
                state().pipe = None;
                tracing::warn!(
                    pid = child.id(),
                    "the watchdog ended ({}); starting a new one",
                    match status {
                        Ok(s) => s.to_string(),
                        Err(e) => e.to_string(),
                    }
                );
                if started.elapsed() > RESTART_MAX {
                    backoff = RESTART_MIN;
                }
            }
            Err(e) => {
                failing += 1;
                if failing == 2 {
                    tracing::warn!(
                        "no watchdog: cannot start it: {e}; tasks and plugin helpers do not end with a killed daemon until it starts (retrying)"
                    );
                }
            }
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(RESTART_MAX);
    }
}

/// Start a watchdog and hand it the groups registered now.
fn spawn_watchdog() -> std::io::Result<Child> {
    // `/proc/self/exe` still works when the binary was replaced on disk
    // since the daemon started (an upgrade).
    let exe = if cfg!(target_os = "linux") {
        std::path::PathBuf::from("/proc/self/exe")
    } else {
        std::env::current_exe()?
    };
    // Under the lock: a group registered meanwhile is either in the list
    // sent here or written to the new pipe after it.
    let mut st = state();
    let mut child = Command::new(exe)
        .arg0("taskrushd")
        .arg(FLAG)
        .arg(std::process::id().to_string())
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own group: a Ctrl-C meant for a `--foreground` daemon,
        // or a cancel of a task group, never reaches it.
        .process_group(0)
        .spawn()?;
    let Some(mut pipe) = child.stdin.take() else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(std::io::Error::other("it has no stdin"));
    };
    let all: String = st.groups.iter().map(|g| format!("+{g}\n")).collect();
    // Blocking for this first write (a fresh watchdog reads it at once),
    // non-blocking from then on: see [`send`].
    if !all.is_empty() && pipe.write_all(all.as_bytes()).is_err()
        || rustix::io::ioctl_fionbio(&pipe, true).is_err()
    {
        // It died at once, or cannot be written to safely. Never let it
        // see end of file while we live (it would end every group): kill
        // it; the keeper sees it end and tries again.
        let _ = child.kill();
        return Ok(child);
    }
    st.pipe = Some((pipe, child.id()));
    Ok(child)
}

/// Have the watchdog end group `pgid` should the daemon die.
pub(crate) fn register(pgid: u32) {
    let mut st = state();
    st.groups.insert(pgid);
    send(&mut st, '+', pgid);
}

/// The group's leader was reaped: leave what remains of it alone.
pub(crate) fn unregister(pgid: u32) {
    let mut st = state();
    st.groups.remove(&pgid);
    send(&mut st, '-', pgid);
}

fn send(st: &mut State, op: char, pgid: u32) {
    let Some((w, pid)) = st.pipe.as_mut() else {
        return;
    };
    // A few bytes, below PIPE_BUF: written whole or not at all, and never
    // waited for (the caller is a runtime worker). Failing means the
    // watchdog is gone, or does not read (stopped, `kill -STOP`) and its
    // pipe is full: either way the keeper starts a new one with every
    // group, after this one is ended.
    match w.write_all(format!("{op}{pgid}\n").as_bytes()) {
        Ok(()) => {}
        Err(e) => {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                tracing::warn!(
                    pid = *pid,
                    "the watchdog does not read its pipe: ending it, a new one takes over"
                );
                if let Some(pid) = Pid::from_raw(*pid as i32) {
                    let _ = rustix::process::kill_process(pid, Signal::KILL);
                }
            }
            st.pipe = None;
        }
    }
}

/// The watchdog's life: collect groups until the daemon is gone, then
/// end them.
fn watch(parent: Pid) -> ExitCode {
    let groups = std::sync::Arc::new(Mutex::new(BTreeSet::<i32>::new()));
    let (gone_tx, gone_rx) = std::sync::mpsc::channel::<()>();
    let eof = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The pipe: registrations until end of file.
    {
        let groups = groups.clone();
        let gone = gone_tx.clone();
        let eof = eof.clone();
        std::thread::spawn(move || {
            let stdin = std::io::stdin().lock();
            for line in stdin.lines() {
                let Ok(line) = line else { break };
                let (op, n) = line.split_at(line.len().min(1));
                let Ok(pgid) = n.parse::<i32>() else { continue };
                let mut g = groups.lock().unwrap_or_else(|e| e.into_inner());
                match op {
                    "+" => g.insert(pgid),
                    "-" => g.remove(&pgid),
                    _ => false,
                };
            }
            eof.store(true, std::sync::atomic::Ordering::SeqCst);
            let _ = gone.send(());
        });
    }
    // The parent-death signal, should the pipe stay open (a leaked
    // descriptor): SIGTERM to us, caught here.
    let signal_seen = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()
        .and_then(|rt| {
            let _guard = rt.enter();
            let sig =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok()?;
            Some((rt, sig))
        });
    let _ = rustix::process::set_parent_process_death_signal(Some(Signal::TERM));
    if rustix::process::getppid() != Some(parent) {
        let _ = gone_tx.send(()); // died before we asked
    }
    if let Some((rt, mut sig)) = signal_seen {
        std::thread::spawn(move || {
            while rt.block_on(sig.recv()).is_some() {
                let _ = gone_tx.send(());
            }
        });
    }
    // A SIGTERM from anyone but the kernel (the daemon still being our
    // parent, its pipe open) ends nothing.
    while gone_rx.recv().is_ok()
        && !eof.load(std::sync::atomic::Ordering::SeqCst)
        && rustix::process::getppid() == Some(parent)
    {}
    // The daemon is gone, but what it wrote just before may still be in
    // the pipe (the parent-death signal can arrive before the last lines
    // were read): read to the end of file before ending anything, bounded
    // in case a leaked descriptor keeps the pipe open.
    let deadline = Instant::now() + DRAIN;
    while !eof.load(std::sync::atomic::Ordering::SeqCst) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || gone_rx.recv_timeout(left).is_err() {
            break;
        }
    }
    let groups: Vec<Pid> = groups
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter_map(|&g| Pid::from_raw(g))
        .collect();
    end_groups(&groups);
    ExitCode::SUCCESS
}

/// SIGTERM to every group, SIGKILL to those still there after the grace.
fn end_groups(groups: &[Pid]) {
    for &g in groups {
        let _ = rustix::process::kill_process_group(g, Signal::TERM);
    }
    let deadline = Instant::now() + crate::process::spawn::GRACE;
    while Instant::now() < deadline
        && groups
            .iter()
            .any(|&g| crate::process::spawn::group_has_live_members(g))
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    for &g in groups {
        let _ = rustix::process::kill_process_group(g, Signal::KILL);
    }
}
