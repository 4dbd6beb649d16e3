//! Binding the daemon's socket safely.
//!
//! The recipe: make sure the directory is
//! ours and private, take an OS lock on a file beside the socket for the
//! daemon's whole life, and only then replace whatever socket file is
//! there. Holding the lock proves no live daemon serves that socket, so a
//! stale socket from a `kill -9` is replaced and a live one never is.
//!
//! The daemon remembers the (device, inode) of the socket it bound and of
//! its lock file: it re-binds a socket that was deleted while it still
//! owns the lock, and never unlinks a socket file that is not the one it
//! bound (a new daemon's, after the directory was removed and recreated).

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
pub(crate) struct Bound {
    pub(crate) listener: Listener,
    /// The (device, inode) of the socket file this daemon bound.
    pub(crate) socket_id: FileId,
    /// Keep this until the process exits: it is released (by the OS) when
    /// the daemon exits, however it exits, and `taskrush daemon stop`
    /// waits for that.
    pub(crate) lock: File,
}

/// A file's (device, inode): what a path named when it was checked.
pub(crate) type FileId = (u64, u64);

/// The (device, inode) a path names now, without following a symlink.
pub(crate) fn file_id(path: &Path) -> Option<FileId> {
    std::fs::symlink_metadata(path)
        .ok()
        .map(|md| (md.dev(), md.ino()))
}

/// Whether the lock file at its path is still the one this daemon holds
/// (not deleted, not replaced, its directory not removed or recreated).
pub(crate) fn lock_is_ours(paths: &DaemonPaths, lock: &File) -> bool {
    let Ok(held) = lock.metadata() else {
        return false;
    };
    file_id(&paths.lock) == Some((held.dev(), held.ino()))
}

/// Remove the socket file only if it is the one this daemon bound and
/// the lock is still ours: after a logout removed the directory and a
/// new daemon bound the same path, that socket is the new daemon's.
pub(crate) fn unlink_own_socket(paths: &DaemonPaths, lock: &File, socket_id: FileId) {
    if lock_is_ours(paths, lock) && file_id(&paths.socket) == Some(socket_id) {
        let _ = std::fs::remove_file(&paths.socket);
    }
}

/// Bind the socket again (it was deleted while we hold the lock). Any
/// file at the path is stale: we hold the lock.
pub(crate) fn rebind(paths: &DaemonPaths) -> Result<(Listener, FileId), BindError> {
    match std::fs::remove_file(&paths.socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(BindError::Io(paths.socket.clone(), e)),
    }
    listen(&paths.socket)
}

fn listen(socket: &Path) -> Result<(Listener, FileId), BindError> {
    let name = socket
        .to_fs_name::<GenericFilePath>()
        .map_err(|e| BindError::Io(socket.into(), e))?;
    let listener = ListenerOptions::new()
        .name(name)
        .mode(0o600)
        // Never unlink by path on drop: `unlink_own_socket` checks first.
        .reclaim_name(false)
        .create_tokio()
        .map_err(|e| BindError::Io(socket.into(), e))?;
    let id = file_id(socket).ok_or_else(|| {
        BindError::Io(
            socket.into(),
            std::io::Error::other("the socket vanished as it was bound"),
        )
    })?;
    Ok((listener, id))
}

/// Open a file of the daemon's own (its lock, its log): never through a
/// symlink, only a regular file owned by this user, mode 0600. In a
/// shared directory someone else may have planted either.
pub(crate) fn open_private(path: &Path, append: bool) -> Result<File, BindError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .append(append)
        .mode(0o600)
        // NONBLOCK: opening a FIFO planted there for writing would wait
        // for a reader forever (the daemon, and a CLI waiting for it,
        // would hang); it is refused below as not a regular file.
        .custom_flags((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
                BindError::Unsafe(format!(
                    "`{}` is a symbolic link\nhint: remove it; taskrushd creates its own file",
                    path.display()
                ))
            } else if e.raw_os_error() == Some(rustix::io::Errno::NXIO.raw_os_error()) {
                // A FIFO with no reader (or a socket): never a file of ours.
                BindError::Unsafe(format!(
                    "`{}` is not a regular file\nhint: remove it",
                    path.display()
                ))
            } else {
                BindError::Io(path.into(), e)
            }
        })?;
    let md = file.metadata().map_err(|e| BindError::Io(path.into(), e))?;
    let uid = rustix::process::geteuid().as_raw();
    if !md.is_file() {
        return Err(BindError::Unsafe(format!(
            "`{}` is not a regular file\nhint: remove it",
            path.display()
        )));
    }
    if md.nlink() != 1 {
        // A hard link planted in a shared directory (where the kernel does
        // not protect hard links) names someone's file under our name.
        return Err(BindError::Unsafe(format!(
            "`{}` has other hard links (it is another file's name too)\nhint: remove it; taskrushd creates its own file",
            path.display()
        )));
    }
    // Back to blocking writes for the regular file it is.
    let blocking = if append {
        rustix::fs::OFlags::APPEND
    } else {
        rustix::fs::OFlags::empty()
    };
    let _ = rustix::fs::fcntl_setfl(&file, blocking);
    if md.uid() != uid {
        return Err(BindError::Unsafe(format!(
            "`{}` belongs to uid {}, not to you (uid {uid})\nhint: remove it or set TASKRUSH_SOCKET to a private directory",
            path.display(),
            md.uid()
        )));
    }
    if md.mode() & 0o077 != 0 {
        let _ = rustix::fs::fchmod(&file, rustix::fs::Mode::from_raw_mode(0o600));
    }
    Ok(file)
}

#[derive(Debug)]
pub(crate) enum BindError {
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

/// Take the lock, bind the socket (mode 0600), in the directory
/// [`prepare_dir`] has checked.
pub(crate) fn bind(paths: &DaemonPaths) -> Result<Bound, BindError> {
    if paths.socket.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(BindError::PathTooLong(paths.socket.clone()));
    }
    let mut lock = open_private(&paths.lock, false)?;
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
    let (listener, socket_id) = listen(&paths.socket)?;
    Ok(Bound {
        listener,
        socket_id,
        lock,
    })
}

/// The socket's directory must be a real directory owned by this user.
/// The default one must also be private (0700); a missing one (and its
/// missing parents) is created so, in every configuration. Called before
/// the log is opened, which may live in the same directory.
pub(crate) fn prepare_dir(dir: &Path, must_be_private: bool) -> Result<(), BindError> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .recursive(true)
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
