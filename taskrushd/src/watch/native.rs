//! The adapter to notify's native watcher: which directories are watched
//! now ([`Applied`]), bringing them in line with the routes, watching
//! replaced directories again, the watch limit.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};
use taskrush_protocol::events::DaemonEvent;

use super::inputs::path_id as dir_id;
use super::watcher::Watcher;

/// A directory watched now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Applied {
    pub(super) recursive: bool,
    /// (device, inode) of a single directory when its watch was added
    /// (`stat` before and after agreed): the inode the watch follows.
    pub(super) id: Option<(u64, u64)>,
}

impl Watcher {
    /// Apply again shortly (from `apply`, which has no `Arc`).
    fn retry_soon(&self) {
        if let Some(me) = self.me.get().and_then(std::sync::Weak::upgrade) {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                me.apply_soon();
            });
        }
    }

    /// Apply the registrations on the blocking pool.
    pub(super) fn apply_soon(self: &Arc<Self>) {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.apply());
    }

    /// Bring the watched directories in line with the registrations.
    /// False when some could not be watched because of the watch limit.
    pub(super) fn apply(&self) -> bool {
        let mut native = self.native.lock().unwrap_or_else(|p| p.into_inner());
        let Some(watcher) = native.as_mut() else {
            return false;
        };
        let desired = self.routes().desired();
        let (stale, missing): (Vec<PathBuf>, Vec<(PathBuf, bool)>) = {
            let applied = self.applied();
            let stale = applied
                .iter()
                .filter(|(p, a)| desired.get(*p) != Some(&a.recursive))
                .map(|(p, _)| p.clone())
                .collect();
            // Not watched, or watched the other way (then also stale).
            let missing = desired
                .iter()
                .filter(|(p, rec)| applied.get(*p).map(|a| a.recursive) != Some(**rec))
                .map(|(p, rec)| (p.clone(), *rec))
                .collect();
            (stale, missing)
        };
        if !stale.is_empty() {
            // Unwatched from here on: tickets relying on them are not current.
            {
                let mut applied = self.applied();
                for p in &stale {
                    applied.remove(p);
                }
            }
            self.routes().inputs_changed(&stale);
            for p in &stale {
                let _ = watcher.unwatch(p);
            }
        }
        let mut ok = true;
        let mut retry = false;
        for (dir, rec) in missing {
            let mode = if rec {
                RecursiveMode::Recursive
            } else {
                RecursiveMode::NonRecursive
            };
            let before = dir_id(&dir);
            let drops = self.drops.load(std::sync::atomic::Ordering::SeqCst);
            let result = match self.fake_limit {
                Some(limit) if self.applied().len() >= limit => {
                    Err(notify::Error::new(notify::ErrorKind::MaxFilesWatch))
                }
                _ => watcher.watch(&dir, mode),
            };
            match result {
                Ok(()) => {
                    let id = if rec {
                        None
                    } else {
                        match (before, dir_id(&dir)) {
                            (Some(a), Some(b)) if a == b => Some(a),
                            // Replaced while the watch was added: which
                            // inode is watched is unknown. Try again later.
                            _ => {
                                let _ = watcher.unwatch(&dir);
                                retry = true;
                                continue;
                            }
                        }
                    };
                    let mut applied = self.applied();
                    if self.drops.load(std::sync::atomic::Ordering::SeqCst) != drops {
                        // A removal was routed meanwhile: notify may have
                        // dropped this very watch. Try again later.
                        retry = true;
                        continue;
                    }
                    applied.insert(dir, Applied { recursive: rec, id });
                }
                Err(e) if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) => {
                    // A recursive watch may be half applied: drop it whole.
                    let _ = watcher.unwatch(&dir);
                    self.limit_reached(&dir);
                    ok = false;
                    break;
                }
                Err(e) => {
                    // Gone meanwhile, or unreadable: checked on requests.
                    tracing::debug!(dir = %dir.display(), "cannot watch: {e}");
                }
            }
        }
        if retry {
            // Not from this thread: `apply` holds `native`.
            self.retry_soon();
        }
        ok
    }

    pub(super) fn limit_reached(&self, dir: &Path) {
        let m = format!(
            "the inotify watch limit is reached (while watching `{}`): changes are picked up on each request instead of at once; raise it with `sudo sysctl fs.inotify.max_user_watches=524288` (and in /etc/sysctl.d/ to keep it)",
            dir.display()
        );
        let mut p = self.problem.lock().unwrap_or_else(|p| p.into_inner());
        if p.as_deref() != Some(m.as_str()) {
            tracing::warn!("{m}");
            self.events
                .send(DaemonEvent::WatcherProblem { message: m.clone() });
            *p = Some(m);
        }
    }

    /// Watch `dirs` and every watched directory below them again from
    /// scratch: each was replaced, renamed or deleted, so its watch (and
    /// those below it, whose paths now lead elsewhere; notify itself drops
    /// the watches below a renamed directory) may follow inodes that are no
    /// longer there, or be gone. Until watched again they count as
    /// unwatched, and the inputs relying on them get a new generation. (A
    /// recursive `run --watch` tree is left alone: notify follows renames
    /// within it itself.)
    pub(super) fn rewatch(self: &Arc<Self>, dirs: &[PathBuf]) {
        let removed: Vec<PathBuf> = {
            let mut applied = self.applied();
            self.drops.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            // A directory and everything below it sort together.
            let mut removed: Vec<PathBuf> = Vec::new();
            for d in dirs {
                removed.extend(
                    applied
                        .range(d.clone()..)
                        .take_while(|(p, _)| p.starts_with(d))
                        .filter(|(_, a)| !a.recursive)
                        .map(|(p, _)| p.clone()),
                );
            }
            for p in &removed {
                applied.remove(p);
            }
            removed
        };
        if removed.is_empty() {
            return;
        }
        self.routes().inputs_changed(&removed);
        self.apply_soon();
    }

    /// After an overflow: every single-directory watch is set up again
    /// (events that would have told of replaced directories were lost).
    pub(super) fn rewatch_all(self: &Arc<Self>) {
        {
            let mut applied = self.applied();
            self.drops.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            applied.retain(|_, a| a.recursive);
        }
        self.apply_soon();
    }
}
