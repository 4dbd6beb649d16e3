//! Where the daemon's socket, lock and log live. The CLI and the daemon
//! compute them with this one function, so they always agree.
//!
//! Pure computation over environment variables and the user's standard
//! directories; nothing is created or checked here.

use std::ffi::OsString;
use std::path::PathBuf;

/// Overrides the socket path (and puts the lock and log beside it).
pub const ENV_SOCKET: &str = "TASKRUSH_SOCKET";
/// Overrides the daemon's log file.
pub const ENV_LOG: &str = "TASKRUSH_LOG";

/// The daemon's files for this user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonPaths {
    /// The local socket clients connect to.
    pub socket: PathBuf,
    /// The directory holding the socket (0700, owned by the user).
    pub dir: PathBuf,
    /// Held locked by the serving daemon for its whole life.
    pub lock: PathBuf,
    /// The daemon's log file.
    pub log: PathBuf,
    /// The plugin audit trail (JSON Lines): beside an explicit socket, else
    /// in the per-user state directory (`$TASKRUSH_LOG` does not move it).
    pub audit: PathBuf,
}

impl DaemonPaths {
    /// Resolve from the process environment.
    pub fn from_env() -> DaemonPaths {
        DaemonPaths::resolve(|k| std::env::var_os(k))
    }

    /// Resolve with `var` standing for the environment:
    /// `$TASKRUSH_SOCKET`, else `$XDG_RUNTIME_DIR/taskrush/taskrushd.sock`,
    /// else the per-user cache directory. The log goes to `$TASKRUSH_LOG`,
    /// else beside an explicit socket, else the per-user state directory.
    pub fn resolve(var: impl Fn(&str) -> Option<OsString>) -> DaemonPaths {
        let explicit = var(ENV_SOCKET).filter(|s| !s.is_empty()).map(PathBuf::from);
        let (socket, default_log_dir) = match explicit {
            Some(socket) => {
                let dir = parent_of(&socket);
                (socket, dir)
            }
            None => {
                let base = var("XDG_RUNTIME_DIR")
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from)
                    .or_else(std_dirs::runtime_dir)
                    .or_else(std_dirs::cache_dir)
                    .unwrap_or_else(std::env::temp_dir);
                let dir = base.join("taskrush");
                let state = var("XDG_STATE_HOME")
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from)
                    .or_else(std_dirs::state_dir)
                    .map(|d| d.join("taskrush"))
                    .unwrap_or_else(|| dir.clone());
                (dir.join("taskrushd.sock"), state)
            }
        };
        let dir = parent_of(&socket);
        let mut lock = socket.clone().into_os_string();
        lock.push(".lock");
        let audit = default_log_dir.join("audit.jsonl");
        let log = var(ENV_LOG)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| default_log_dir.join("taskrushd.log"));
        DaemonPaths {
            socket,
            dir,
            lock: PathBuf::from(lock),
            log,
            audit,
        }
    }
}

/// The user's standard directories; a WebAssembly guest (the Rust plugin
/// SDK builds this crate for `wasm32-wasip1`) has none.
#[cfg(not(target_family = "wasm"))]
mod std_dirs {
    pub use dirs::{cache_dir, runtime_dir, state_dir};
}

#[cfg(target_family = "wasm")]
mod std_dirs {
    use std::path::PathBuf;

    pub fn runtime_dir() -> Option<PathBuf> {
        None
    }
    pub fn cache_dir() -> Option<PathBuf> {
        None
    }
    pub fn state_dir() -> Option<PathBuf> {
        None
    }
}

fn parent_of(p: &std::path::Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn an_explicit_socket_keeps_lock_and_log_beside_it() {
        let p = DaemonPaths::resolve(env(&[(ENV_SOCKET, "/tmp/t1/d.sock")]));
        assert_eq!(p.socket, PathBuf::from("/tmp/t1/d.sock"));
        assert_eq!(p.lock, PathBuf::from("/tmp/t1/d.sock.lock"));
        assert_eq!(p.log, PathBuf::from("/tmp/t1/taskrushd.log"));
        assert_eq!(p.audit, PathBuf::from("/tmp/t1/audit.jsonl"));
    }

    #[test]
    fn the_runtime_dir_holds_the_default_socket() {
        let p = DaemonPaths::resolve(env(&[
            ("XDG_RUNTIME_DIR", "/run/user/7"),
            ("XDG_STATE_HOME", "/home/u/.local/state"),
        ]));
        assert_eq!(
            p.socket,
            PathBuf::from("/run/user/7/taskrush/taskrushd.sock")
        );
        assert_eq!(p.dir, PathBuf::from("/run/user/7/taskrush"));
        assert_eq!(
            p.log,
            PathBuf::from("/home/u/.local/state/taskrush/taskrushd.log")
        );
        assert_eq!(
            p.audit,
            PathBuf::from("/home/u/.local/state/taskrush/audit.jsonl")
        );
    }
}
