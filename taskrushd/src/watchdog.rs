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
//! [`GRACE`](crate::spawn::GRACE), sends SIGKILL to what is left, and
//! exits.
//!
//! A group is unregistered once its leader was reaped (a normal exit, or
//! after a cancel ended the group): what a task leaves running on purpose
//! after it exited (`pg_ctl start`, `docker compose up -d`) is kept, as it
//! would be from a shell. A process that left its group (`setsid`,
//! `setpgid`) escapes the watchdog too.

use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::os::unix::process::CommandExt;
use std::process::{ChildStdin, Command, ExitCode, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

/// The argument that turns `taskrushd` into a watchdog.
const FLAG: &str = "--watchdog";

/// The pipe to this daemon's watchdog, once started.
static PIPE: OnceLock<Mutex<Pipe>> = OnceLock::new();

enum Pipe {
    Open(ChildStdin),
    /// Why there is no watchdog (logged at the first spawn, then `None`).
    Broken(Option<String>),
}

/// `taskrushd --watchdog PID`: be the watchdog of daemon PID, and return
/// its exit code. `None` for any other command line.
pub fn run_if_asked() -> Option<ExitCode> {
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

/// Start this daemon's watchdog. Call it from the thread that lives as
/// long as the daemon (the parent-death signal follows the thread that
/// forked). Failing to start it is logged at the first spawn and
/// otherwise harmless: tasks then die with the daemon only as before.
pub fn start() {
    // `/proc/self/exe` still works when the binary was replaced on disk
    // since the daemon started (an upgrade).
    let exe = if cfg!(target_os = "linux") {
        Ok(std::path::PathBuf::from("/proc/self/exe"))
    } else {
        std::env::current_exe()
    };
    let started = exe.and_then(|exe| {
        Command::new(exe)
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
            .spawn()
    });
    // The child is never waited for: it outlives us by design.
    let pipe = match started.map(|mut child| child.stdin.take()) {
        Ok(Some(stdin)) => Pipe::Open(stdin),
        Ok(None) => Pipe::Broken(Some("it has no stdin".into())),
        Err(e) => Pipe::Broken(Some(format!("cannot start it: {e}"))),
    };
    let _ = PIPE.set(Mutex::new(pipe));
}

/// Have the watchdog end group `pgid` should the daemon die.
pub fn register(pgid: u32) {
    send('+', pgid);
}

/// The group's leader was reaped: leave what remains of it alone.
pub fn unregister(pgid: u32) {
    send('-', pgid);
}

fn send(op: char, pgid: u32) {
    let Some(pipe) = PIPE.get() else { return };
    let mut pipe = pipe.lock().unwrap_or_else(|e| e.into_inner());
    let failed = match &mut *pipe {
        // A few bytes, below PIPE_BUF: one atomic write to a reader that
        // does nothing else, so this never waits in practice.
        Pipe::Open(w) => match w.write_all(format!("{op}{pgid}\n").as_bytes()) {
            Ok(()) => return,
            Err(e) => format!("it is gone ({e})"),
        },
        Pipe::Broken(why) => match why.take() {
            Some(why) => why,
            None => return,
        },
    };
    tracing::warn!(
        "no watchdog: {failed}; tasks and plugin helpers no longer end with a killed daemon"
    );
    *pipe = Pipe::Broken(None);
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
    let deadline = Instant::now() + crate::spawn::GRACE;
    while Instant::now() < deadline
        && groups
            .iter()
            .any(|&g| crate::spawn::group_has_live_members(g))
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    for &g in groups {
        let _ = rustix::process::kill_process_group(g, Signal::KILL);
    }
}
