//! Cached tasks' inputs: their watched directories and generations, and
//! the cookies that prove every earlier change has been routed (see
//! "Inputs" in the room's documentation).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::routes::Key;
use super::watcher::Watcher;

/// How long [`Watcher::sync`] waits for its cookie.
const SYNC_TIMEOUT: Duration = Duration::from_secs(1);

/// A directory to watch, and which one it was when the inputs were listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct WatchDir {
    pub(crate) path: PathBuf,
    /// (device, inode): a watch follows an inode, so a directory replaced
    /// since it was watched must be watched again.
    pub(crate) id: (u64, u64),
}

/// (device, inode) of what `path` names (symlinks followed): which
/// directory a watch on it follows.
pub(crate) fn path_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// The generation of a cached task's inputs when a key computation began
/// ([`Watcher::begin_inputs`]). Generations only grow, so a ticket that is
/// still current ([`Watcher::is_current`]) proves that nothing changed
/// under the inputs' watched directories since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket(pub(super) u64);

#[cfg(test)]
impl Ticket {
    /// A ticket for unit tests outside this room.
    pub(crate) fn for_test(generation: u64) -> Ticket {
        Ticket(generation)
    }
}

/// A cached task's watched input directories.
pub(super) struct Inputs {
    pub(super) dirs: Vec<PathBuf>,
    /// Bumped by every event under `dirs`.
    pub(super) generation: u64,
}

/// The cookie files of [`Watcher::sync`].
pub(super) struct Cookies {
    /// Private to this daemon process (`cookies.<pid>` in the socket's
    /// directory).
    pub(super) dir: PathBuf,
    pub(super) next: std::sync::atomic::AtomicU64,
    /// The highest cookie number whose event has been routed.
    pub(super) seen: tokio::sync::watch::Sender<u64>,
}

impl Watcher {
    /// Whether nothing changed under the watched directories of `inputs`
    /// since `ticket` was handed out (and they were not forgotten). Only
    /// meaningful right after a successful [`Watcher::sync`].
    pub(crate) fn is_current(&self, inputs: &Key, ticket: Ticket) -> bool {
        self.routes()
            .inputs
            .get(inputs)
            .is_some_and(|i| i.generation == ticket.0)
    }

    /// Call before computing a key of `inputs`: a ticket if its directories
    /// are watched now (so every change from here on shows), else `None`.
    pub(crate) fn begin_inputs(&self, inputs: &Key) -> Option<Ticket> {
        if !self.has_native {
            return None;
        }
        // Lock order: `applied` after `routes`; the directories are
        // checked in place, not copied.
        let r = self.routes();
        let i = r.inputs.get(inputs)?;
        let applied = self.applied();
        i.dirs
            .iter()
            .all(|d| applied.contains_key(d))
            .then_some(Ticket(i.generation))
    }

    /// Call after computing a key of `inputs` (with the ticket of
    /// [`Watcher::begin_inputs`]): true if the ticket is still good — the
    /// same directories were watched throughout, as the inodes listed, and
    /// nothing changed under them — so that the key may be trusted while
    /// [`Watcher::is_current`] says so. Otherwise (first check, other
    /// directories) watches `dirs` so that the next check can be, and
    /// returns false. `None` for `dirs`: inputs that watching cannot cover;
    /// they are forgotten.
    pub(crate) async fn finish_inputs(
        self: &Arc<Self>,
        inputs: Key,
        ticket: Option<Ticket>,
        dirs: Option<Vec<WatchDir>>,
    ) -> bool {
        let Some(listed) = dirs else {
            self.forget(&inputs);
            return false;
        };
        // A directory replaced since its watch was added: the watch
        // follows the old inode. Watch it again; the ticket is not good.
        let replaced: Vec<PathBuf> = {
            let applied = self.applied();
            listed
                .iter()
                .filter(|d| {
                    applied
                        .get(&d.path)
                        .is_some_and(|a| a.id.is_some_and(|id| id != d.id))
                })
                .map(|d| d.path.clone())
                .collect()
        };
        if !replaced.is_empty() {
            self.rewatch(&replaced);
        }
        let dirs: Vec<PathBuf> = listed.iter().map(|d| d.path.clone()).collect();
        {
            let mut r = self.routes();
            if let Some(i) = r.inputs.get(&inputs)
                && ticket == Some(Ticket(i.generation))
                && i.dirs == dirs
                && self.watched_as_listed(&listed)
            {
                return true;
            }
            if r.input_dirs_besides(&inputs) + dirs.len() > self.input_budget {
                tracing::debug!(
                    ?inputs,
                    dirs = dirs.len(),
                    "input directories over budget: not watched"
                );
                drop(r);
                self.forget(&inputs);
                return false;
            }
            let generation = r.next_generation();
            r.inputs.insert(inputs, Inputs { dirs, generation });
            r.reindex();
        }
        if let Some(c) = &self.cookies {
            let _ = create_private_dir(&c.dir);
        }
        let me = self.clone();
        let _ = tokio::task::spawn_blocking(move || me.apply()).await;
        false
    }

    /// Whether every listed directory is watched now, as the inode listed,
    /// and no other watched path is the same inode (one inode watched under
    /// two paths reports under one of them only). Called with `routes`
    /// held (lock order: `applied` after `routes`).
    fn watched_as_listed(&self, listed: &[WatchDir]) -> bool {
        let applied = self.applied();
        let all_there = listed
            .iter()
            .all(|d| applied.get(&d.path).is_some_and(|a| a.id == Some(d.id)));
        if !all_there {
            return false;
        }
        let mine: std::collections::HashSet<&Path> =
            listed.iter().map(|d| d.path.as_path()).collect();
        let ids: std::collections::HashSet<(u64, u64)> = listed.iter().map(|d| d.id).collect();
        !applied
            .iter()
            .any(|(p, a)| !mine.contains(p.as_path()) && a.id.is_some_and(|id| ids.contains(&id)))
    }

    /// Wait until every change made before this call has been routed (see
    /// "Inputs" in the module documentation). False if that cannot be
    /// proven within [`SYNC_TIMEOUT`]: the caller must not trust
    /// [`Watcher::is_current`].
    pub(crate) async fn sync(self: &Arc<Self>) -> bool {
        let Some(c) = &self.cookies else {
            return false;
        };
        if !self.has_native {
            return false;
        }
        if !self.applied().contains_key(&c.dir) {
            // Not watched (yet, or any more: deleted from outside). Set it
            // up for the next check.
            let _ = create_private_dir(&c.dir);
            self.apply_soon();
            return false;
        }
        let n = c.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut seen = c.seen.subscribe();
        let cookie = match Cookie::create(c.dir.join(n.to_string())) {
            Ok(cookie) => cookie,
            Err(e) => {
                tracing::debug!(dir = %c.dir.display(), "cannot write a watcher cookie: {e}");
                return false;
            }
        };
        let routed = tokio::time::timeout(SYNC_TIMEOUT, seen.wait_for(|&s| s >= n)).await;
        drop(cookie);
        if routed.is_err() {
            // Deleted from outside, or the watch is lost: set it up again
            // rather than wait out every later check.
            tracing::debug!(dir = %c.dir.display(), "watcher cookie timed out: watching its directory again");
            let _ = create_private_dir(&c.dir);
            self.rewatch(std::slice::from_ref(&c.dir));
        }
        matches!(routed, Ok(Ok(_)))
    }

    /// Remove this process's cookie directory (at shutdown), and those of
    /// daemons that are gone.
    pub(crate) fn remove_cookies(&self) {
        let Some(c) = &self.cookies else { return };
        let _ = std::fs::remove_dir_all(&c.dir);
        let Some(parent) = c.dir.parent() else { return };
        let Ok(entries) = std::fs::read_dir(parent) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix("cookies."))
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if !Path::new("/proc").join(pid.to_string()).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// A cookie file, removed when dropped (also when the check waiting for it
/// is cancelled).
struct Cookie(PathBuf);

impl Cookie {
    fn create(path: PathBuf) -> std::io::Result<Cookie> {
        std::fs::File::create(&path)?;
        Ok(Cookie(path))
    }
}

impl Drop for Cookie {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A quarter of the user's inotify watches (`fs.inotify.max_user_watches`).
pub(super) fn input_budget() -> usize {
    std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .map_or(2048, |max| max / 4)
}

/// Create `dir` (0700) if it does not exist.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        r => r,
    }
}
