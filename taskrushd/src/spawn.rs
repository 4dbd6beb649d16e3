//! The one place where the daemon starts task processes and stops them.
//!
//! Every task command runs as `sh -c CMD` in the project directory, with an
//! environment built from scratch (the client's environment plus the task's
//! `env`, never the daemon's), in a process group of its own so that
//! cancelling reaches its children and grandchildren too.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use rustix::process::{Pid, Signal};
use tokio::process::{Child, Command};

/// How long a cancelled task gets after SIGINT before SIGTERM, and after
/// SIGTERM before SIGKILL.
pub const GRACE: Duration = Duration::from_millis(500);

/// A started task process and its process group.
pub struct TaskProcess {
    pub child: Child,
    pgid: Option<Pid>,
}

/// Start `sh -c cmd` in `cwd` with exactly `env`, stdout and stderr piped,
/// stdin from /dev/null, in its own process group.
pub fn spawn_shell(
    cmd: &str,
    cwd: &Path,
    env: &BTreeMap<String, String>,
) -> std::io::Result<TaskProcess> {
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(cmd)
        .current_dir(cwd)
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let child = command.spawn()?;
    let pgid = child.id().and_then(|id| Pid::from_raw(id as i32));
    Ok(TaskProcess { child, pgid })
}

impl TaskProcess {
    /// Send `sig` to the whole process group. Errors (the group is gone)
    /// are ignored: the group id is ours until we reap the leader, and we
    /// stop signalling once the group is empty.
    pub fn signal_group(&self, sig: Signal) {
        if let Some(pgid) = self.pgid {
            let _ = rustix::process::kill_process_group(pgid, sig);
        }
    }

    /// Whether any process of the group is still alive.
    pub fn group_alive(&self) -> bool {
        match self.pgid {
            Some(pgid) => rustix::process::test_kill_process_group(pgid).is_ok(),
            None => false,
        }
    }

    /// Wait until the group is empty, at most `limit`. True if it emptied.
    /// Reaps the leader on the way, so that it does not count as alive.
    pub async fn wait_group_empty(&mut self, limit: Duration) -> bool {
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

/// Exit status as a shell reports it: the code, or 128 + signal.
pub fn exit_code(status: std::process::ExitStatus) -> (Option<i32>, Option<i32>, i32) {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => (Some(code), None, code),
        (None, Some(sig)) => (None, Some(sig), 128 + sig),
        (None, None) => (None, None, 1),
    }
}
