//! The client's own stdin, stdout and stderr, passed over the socket.
//!
//! Like Mercurial's `chg`, the CLI sends its three standard descriptors
//! with `SCM_RIGHTS` alongside the first message of a connection. Tasks of
//! a serial run then use them directly: a task whose stdout is the user's
//! terminal sees a terminal (`test -t 1`, colours, progress bars), can read
//! the keyboard, and writes at full speed with no copy through the daemon.
//!
//! The daemon's session has no controlling terminal, so a task reading the
//! passed terminal is not stopped by job control (SIGTTIN applies only to a
//! process's controlling terminal); Ctrl-C reaches the CLI, which cancels
//! the run.

use std::os::fd::OwnedFd;
use std::process::Stdio;

/// The three descriptors a client passed, kept for its connection's life.
#[derive(Debug)]
pub(crate) struct ClientStdio {
    pub(crate) stdin: OwnedFd,
    pub(crate) stdout: OwnedFd,
    pub(crate) stderr: OwnedFd,
}

/// Descriptors for one child process (duplicates of the client's).
pub(crate) struct ChildStdio {
    pub(crate) stdin: Stdio,
    pub(crate) stdout: Stdio,
    pub(crate) stderr: Stdio,
}

impl ClientStdio {
    /// Take exactly three received descriptors, in order.
    pub(crate) fn from_fds(fds: Vec<OwnedFd>) -> Option<ClientStdio> {
        let mut it = fds.into_iter();
        let (stdin, stdout, stderr) = (it.next()?, it.next()?, it.next()?);
        if it.next().is_some() {
            return None;
        }
        Some(ClientStdio {
            stdin,
            stdout,
            stderr,
        })
    }

    pub(crate) fn for_child(&self) -> std::io::Result<ChildStdio> {
        Ok(ChildStdio {
            stdin: Stdio::from(self.stdin.try_clone()?),
            stdout: Stdio::from(self.stdout.try_clone()?),
            stderr: Stdio::from(self.stderr.try_clone()?),
        })
    }
}
