//! Binding the daemon's socket safely.
//!
//! The recipe (see `notes/dependencies.md`): make sure the directory is
//! ours and private, take an OS lock on a file beside the socket for the
//! daemon's whole life, and only then replace whatever socket file is
//! there. Holding the lock proves no live daemon serves that socket, so a
//! stale socket from a `kill -9` is replaced and a live one never is.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use interprocess::local_socket::tokio::Listener;
use interprocess::local_socket::{GenericFilePath, ListenerOptions, ToFsName};
use interprocess::os::unix::local_socket::ListenerOptionsExt;
use taskrush_protocol::paths::DaemonPaths;

/// Longest socket path a Unix socket address holds (`sun_path` less NUL).
const MAX_SOCKET_PATH: usize = 107;

/// A bound socket and the lock that makes it ours.
pub struct Bound {
    pub listener: Listener,
    /// Keep this until the process exits: it is released (by the OS) when
    /// the daemon exits, however it exits, and `taskrush daemon stop`
    /// waits for that.
    pub lock: File,
}

#[derive(Debug)]
pub enum BindError {
    /// Another daemon holds the lock and serves this socket.
    AlreadyRunning,
    /// The socket directory is not safe to use; the message says why and how to fix it.
    Unsafe(String),
    PathTooLong(PathBuf),
    Io(PathBuf, std::io::Error),
}

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BindError::AlreadyRunning => write!(f, "another taskrushd is serving this socket"),
            BindError::Unsafe(why) => write!(f, "{why}"),
            BindError::PathTooLong(p) => write!(
                f,
                "socket path `{}` is longer than {MAX_SOCKET_PATH} bytes\nhint: set TASKRUSH_SOCKET to a shorter path",
                p.display()
            ),
            BindError::Io(p, e) => write!(f, "`{}`: {e}", p.display()),
        }
    }
}

/// Prepare the directory, take the lock, bind the socket (mode 0600).
pub fn bind(paths: &DaemonPaths, explicit_socket: bool) -> Result<Bound, BindError> {
    if paths.socket.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(BindError::PathTooLong(paths.socket.clone()));
    }
    prepare_dir(&paths.dir, !explicit_socket)?;
    let mut lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&paths.lock)
        .map_err(|e| BindError::Io(paths.lock.clone(), e))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Err(BindError::AlreadyRunning),
        Err(TryLockError::Error(e)) => return Err(BindError::Io(paths.lock.clone(), e)),
    }
    // For people reading the directory; nothing trusts this pid.
    let _ = lock.set_len(0);
    let _ = writeln!(lock, "{}", std::process::id());

    // We hold the lock: any socket file here is stale.
    match std::fs::remove_file(&paths.socket) {
        Ok(()) => tracing::info!("removed stale socket `{}`", paths.socket.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(BindError::Io(paths.socket.clone(), e)),
    }
    let name = paths
        .socket
        .as_path()
        .to_fs_name::<GenericFilePath>()
        .map_err(|e| BindError::Io(paths.socket.clone(), e))?;
    let listener = ListenerOptions::new()
        .name(name)
        .mode(0o600)
        .create_tokio()
        .map_err(|e| BindError::Io(paths.socket.clone(), e))?;
    Ok(Bound { listener, lock })
}

/// The socket's directory must be a real directory owned by this user.
/// The default one must also be private (0700); it is created so.
fn prepare_dir(dir: &Path, must_be_private: bool) -> Result<(), BindError> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent() {
                std::fs::create_dir_all(parent).map_err(|e| BindError::Io(parent.into(), e))?;
            }
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .map_err(|e| BindError::Io(dir.into(), e))?;
            Ok(())
        }
        Err(e) => Err(BindError::Io(dir.into(), e)),
        Ok(md) => {
            let uid = rustix::process::geteuid().as_raw();
            let shown = dir.display();
            if md.file_type().is_symlink() {
                return Err(BindError::Unsafe(format!(
                    "socket directory `{shown}` is a symbolic link\nhint: remove it (`rm {shown}`); taskrush will create a private directory"
                )));
            }
            if !md.is_dir() {
                return Err(BindError::Unsafe(format!(
                    "socket directory `{shown}` is not a directory\nhint: remove it or set TASKRUSH_SOCKET"
                )));
            }
            if must_be_private && md.uid() != uid {
                return Err(BindError::Unsafe(format!(
                    "socket directory `{shown}` belongs to uid {}, not to you (uid {uid})\nhint: remove it or set TASKRUSH_SOCKET",
                    md.uid()
                )));
            }
            if must_be_private && md.mode() & 0o077 != 0 {
                return Err(BindError::Unsafe(format!(
                    "socket directory `{shown}` is accessible to other users (mode {:o})\nhint: `chmod 700 {shown}`",
                    md.mode() & 0o777
                )));
            }
            Ok(())
        }
    }
}
