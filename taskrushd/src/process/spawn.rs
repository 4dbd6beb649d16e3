//! The one place where the daemon starts task and plugin processes and
//! stops them.
//!
//! Every task command runs as `sh -c CMD` in the project directory, with an
//! environment built from scratch (the client's environment plus the task's
//! `env`, never the daemon's), in a process group of its own so that
//! cancelling reaches its children and grandchildren too.
//!
//! A plugin runs its manifest's `entry_point` (no shell) in the plugin's
//! directory, with an environment built from scratch by the host, in a
//! process group of its own, and dies with the daemon: kill-on-drop covers
//! an orderly exit, `PR_SET_PDEATHSIG` (Linux) a `kill -9` of the daemon.
//!
//! Every group started here is registered with the daemon's
//! [`watchdog`](crate::process::watchdog) until its leader is reaped, so that a
//! `kill -9` of the daemon ends the tasks and the plugins' helpers too.
//! Children get back the soft `RLIMIT_NOFILE` the daemon was started with
//! ([`raise_fd_limit`]): a task sees what its shell would.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use rustix::process::{Pid, Resource, Rlimit, Signal};
use tokio::process::{Child, Command};

use crate::server::client_stdio::ClientStdio;

/// How long a cancelled task gets after SIGINT before SIGTERM, and after
/// SIGTERM before SIGKILL.
pub(crate) const GRACE: Duration = Duration::from_millis(500);

/// A started task process and its process group.
pub(crate) struct TaskProcess {
    pub(crate) child: Child,
    pgid: Option<Pid>,
}

/// Start `sh -c cmd` in `cwd` with exactly `env`, in its own process
/// group. Its stdio is the client's own descriptors when given, else
/// stdout and stderr are piped and stdin is /dev/null.
///
/// (Executing commands without shell syntax directly, as make does, was
/// measured: no faster here, because dash execs a lone command itself and
/// process creation dominates. So every task goes through `sh -c`.)
pub(crate) fn spawn_shell(
    cmd: &str,
    args: &[String],
    cwd: &Path,
    env: &BTreeMap<String, String>,
    stdio: Option<&ClientStdio>,
) -> std::io::Result<TaskProcess> {
    let mut command = Command::new("/bin/sh");
    match STARTING_FD_LIMIT.get().and_then(|l| l.current) {
        // The daemon raised its open-file limit: the shell puts the soft
        // limit back and execs the task's own `sh -c` (same pid, same
        // `$0`; should the reset fail, the task still runs). Not a
        // `pre_exec` hook: that would turn every spawn into a fork of the
        // whole daemon, about three times slower per task than the
        // `posix_spawn` used without one.
        Some(soft) => command
            .arg("-c")
            .arg(format!(
                "ulimit -S -n {soft} 2>/dev/null; exec /bin/sh -c \"$0\"{}",
                if args.is_empty() {
                    ""
                } else {
                    " /bin/sh \"$@\""
                }
            ))
            .arg(cmd)
            .args(args),
        // The task's arguments are its positional parameters (`"$@"`),
        // never part of the command text; `$0` stays `/bin/sh`.
        None if args.is_empty() => command.arg("-c").arg(cmd),
        None => command.arg("-c").arg(cmd).arg("/bin/sh").args(args),
    };
    spawn(command, cwd, env, stdio)
}

fn spawn(
    mut command: Command,
    cwd: &Path,
    env: &BTreeMap<String, String>,
    stdio: Option<&ClientStdio>,
) -> std::io::Result<TaskProcess> {
    command
        .current_dir(cwd)
        .env_clear()
        .envs(env)
        .process_group(0)
        .kill_on_drop(true);
    match stdio.map(ClientStdio::for_child).transpose()? {
        Some(io) => command.stdin(io.stdin).stdout(io.stdout).stderr(io.stderr),
        None => command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    };
    started(command.spawn()?)
}

/// A spawned group leader, registered with the watchdog.
fn started(child: Child) -> std::io::Result<TaskProcess> {
    let pgid = child.id().and_then(|id| Pid::from_raw(id as i32));
    if let Some(pgid) = pgid {
        crate::process::watchdog::register(pgid.as_raw_nonzero().get() as u32);
    }
    Ok(TaskProcess { child, pgid })
}

impl Drop for TaskProcess {
    /// The leader was reaped: what it left in its group is kept (as a
    /// shell keeps `pg_ctl start`'s server), and the watchdog forgets the
    /// group. Dropped before it was reaped (a run abandoned midway): the
    /// whole group ends, not just the leader that kill-on-drop reaches.
    fn drop(&mut self) {
        let Some(pgid) = self.pgid else { return };
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            let _ = rustix::process::kill_process_group(pgid, Signal::KILL);
        }
        crate::process::watchdog::unregister(pgid.as_raw_nonzero().get() as u32);
    }
}

/// The soft `RLIMIT_NOFILE` the daemon started with, when it raised it.
static STARTING_FD_LIMIT: OnceLock<Rlimit> = OnceLock::new();

/// Raise the soft limit on open files to the hard limit: the daemon serves
/// many clients and watches many files, and the usual soft limit (1,024)
/// runs out first. Children get the original soft limit back. Call once,
/// early, before any thread is started.
pub(crate) fn raise_fd_limit() {
    let now = rustix::process::getrlimit(Resource::Nofile);
    let hard = now.maximum.or_else(|| {
        // No hard limit: the kernel's ceiling for one process.
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse().ok())
    });
    let (Some(soft), Some(hard)) = (now.current, hard) else {
        return;
    };
    if soft >= hard {
        return;
    }
    let raised = Rlimit {
        current: Some(hard),
        maximum: now.maximum,
    };
    if rustix::process::setrlimit(Resource::Nofile, raised).is_ok() {
        let _ = STARTING_FD_LIMIT.set(now);
    }
}

/// Give a plugin the soft `RLIMIT_NOFILE` the daemon started with, when
/// the daemon raised its own, when it is started without the sandbox
/// helper (which puts the limit back itself, as it sets the parent-death
/// signal); tasks get it back from their shell, see [`spawn_shell`].
fn restore_fd_limit(command: &mut Command) {
    let Some(&limit) = STARTING_FD_LIMIT.get() else {
        return;
    };
    // SAFETY: the closure runs in the forked child before exec; it only
    // makes the `setrlimit` syscall through rustix, which neither
    // allocates nor takes locks, so it is async-signal-safe.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(move || {
            rustix::process::setrlimit(Resource::Nofile, limit).map_err(std::io::Error::from)
        });
    }
}

impl TaskProcess {
    /// The process group id (the leader's pid).
    pub(crate) fn pgid(&self) -> Option<u32> {
        self.pgid.map(|p| p.as_raw_nonzero().get() as u32)
    }

    /// Send `sig` to the whole process group. Errors (the group is gone)
    /// are ignored: the group id is ours until we reap the leader, and we
    /// stop signalling once the group is empty.
    pub(crate) fn signal_group(&self, sig: Signal) {
        if let Some(pgid) = self.pgid {
            let _ = rustix::process::kill_process_group(pgid, sig);
        }
    }

    /// Whether any process of the group is still alive.
    pub(crate) fn group_alive(&self) -> bool {
        match self.pgid {
            Some(pgid) => group_has_live_members(pgid),
            None => false,
        }
    }

    /// Wait until the group is empty, at most `limit`. True if it emptied.
    /// Reaps the leader on the way, so that it does not count as alive.
    pub(crate) async fn wait_group_empty(&mut self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let _ = self.child.try_wait();
            if !self.group_alive() {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Start a plugin: `argv[0]` with `argv[1..]` in `dir` with exactly `env`,
/// stdin/stdout/stderr piped, in its own process group. A program path with
/// a `/` is taken relative to `dir`; a bare name is searched on `env`'s
/// `PATH`.
///
/// With a `sandbox` (Linux), the process is the daemon's own binary in its
/// [`--sandbox-exec`](crate::process::sandbox) mode, which sets the
/// parent-death signal and the open-file limit, restricts itself and execs
/// the plugin: no `pre_exec` hook, so the spawn is a `posix_spawn`.
pub(crate) fn spawn_plugin(
    argv: &[String],
    dir: &Path,
    env: &BTreeMap<String, String>,
    sandbox: Option<&crate::process::sandbox::Spec>,
) -> std::io::Result<TaskProcess> {
    let Some((program, args)) = argv.split_first() else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "empty entry point",
        ));
    };
    let program = if program.contains('/') {
        dir.join(program).into_os_string()
    } else {
        program.into()
    };
    #[cfg(target_os = "linux")]
    let mut command = match sandbox {
        Some(spec) => {
            let mut spec = spec.clone();
            spec.fd_limit = STARTING_FD_LIMIT.get().and_then(|l| l.current);
            let json = serde_json::to_string(&spec).map_err(std::io::Error::other)?;
            // A bare name is searched on the plugin's PATH, as without a
            // sandbox.
            let program = if program.to_string_lossy().contains('/') {
                program
            } else {
                which_on(&program, env.get("PATH")).unwrap_or(program)
            };
            let mut command = Command::new("/proc/self/exe");
            command
                .arg(crate::process::sandbox::FLAG)
                .arg(json)
                .arg("--")
                .arg(program)
                .args(args);
            command
        }
        None => {
            let mut command = Command::new(&program);
            command.args(args);
            die_with_parent(&mut command);
            restore_fd_limit(&mut command);
            command
        }
    };
    #[cfg(not(target_os = "linux"))]
    let mut command = {
        let _ = sandbox;
        let mut command = Command::new(&program);
        command.args(args);
        die_with_parent(&mut command);
        restore_fd_limit(&mut command);
        command
    };
    command
        .current_dir(dir)
        .env_clear()
        .envs(env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    started(command.spawn()?)
}

/// `name` on the `:`-list `path`, the first executable file.
#[cfg(target_os = "linux")]
fn which_on(name: &std::ffi::OsStr, path: Option<&String>) -> Option<std::ffi::OsString> {
    use std::os::unix::fs::PermissionsExt;
    path?
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .map(Into::into)
}

/// Ask the kernel to SIGKILL the child when the daemon dies, even by
/// `kill -9`. The signal follows the *thread* that forked, so plugins must
/// be spawned from a runtime worker thread (they live as long as the
/// runtime), never from a `spawn_blocking` thread, which exits when idle.
#[cfg(target_os = "linux")]
fn die_with_parent(command: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec; it only
    // makes the `prctl` syscall through rustix, which neither allocates nor
    // takes locks, so it is async-signal-safe.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(Signal::KILL))
                .map_err(std::io::Error::from)
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_: &mut Command) {}

impl TaskProcess {
    /// The process id of the leader (also the process group id).
    pub(crate) fn pid(&self) -> Option<u32> {
        self.pgid.map(|p| p.as_raw_nonzero().get() as u32)
    }

    /// A handle that signals the process group, usable after the child was
    /// moved elsewhere (to the task that reaps it).
    pub(crate) fn group(&self) -> ProcessGroup {
        ProcessGroup(self.pgid)
    }
}

/// Signals a process group (see [`TaskProcess::signal_group`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProcessGroup(Option<Pid>);

impl ProcessGroup {
    pub(crate) fn signal(self, sig: Signal) {
        if let Some(pgid) = self.0 {
            let _ = rustix::process::kill_process_group(pgid, sig);
        }
    }
}

/// Whether a process group has a member that is not a zombie.
///
/// `kill(-pgid, 0)` alone counts zombies, and orphaned grandchildren stay
/// zombies for as long as the system's init does not reap them (some
/// container inits never do): cancelling would wait out every grace
/// period. So when the group still "exists", look at its members' states.
pub(crate) fn group_has_live_members(pgid: Pid) -> bool {
    if rustix::process::test_kill_process_group(pgid).is_err() {
        return false;
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return true;
    };
    let want = pgid.as_raw_nonzero().get();
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid pgrp …`; comm may contain spaces and parens.
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut fields = after.split_whitespace();
        let (Some(state), Some(_ppid), Some(pgrp)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if pgrp.parse::<i32>() == Ok(want) && !matches!(state, "Z" | "X" | "x") {
            return true;
        }
    }
    false
}

/// Exit status as a shell reports it: the code, or 128 + signal.
pub(crate) fn exit_code(status: std::process::ExitStatus) -> (Option<i32>, Option<i32>, i32) {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => (Some(code), None, code),
        (None, Some(sig)) => (None, Some(sig), 128 + sig),
        (None, None) => (None, None, 1),
    }
}
