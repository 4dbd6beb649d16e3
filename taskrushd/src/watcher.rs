//! The daemon's one file watcher (one inotify instance for everything).
//!
//! Theory of operation:
//! - Interest is registered by key: a project's `.rush` file, a plugin's
//!   files (manifest and entry point), or a `run --watch` session's tree.
//!   Single files are watched through their **parent directory**, filtered
//!   by path: watching the file itself misses editor saves (write a temp
//!   file, rename it over), because the watch dies with the replaced inode.
//! - The set of watched directories is recomputed from the registrations
//!   and applied as a diff; a directory covered by a recursive watch is not
//!   watched twice.
//! - notify's thread hands raw events to a tokio task with `blocking_send`
//!   (a full queue pushes back into the kernel's queue, whose overflow is
//!   the `Rescan` flag). That task routes them: file keys are debounced
//!   ([`DEBOUNCE`] after the last event, at most [`MAX_DELAY`] after the
//!   first) and handed to the daemon; session trees get every matching path
//!   and debounce themselves.
//! - Overflow (`Rescan`) marks every key changed: a full rescan. Hitting
//!   the watch limit (ENOSPC, notify's `MaxFilesWatch`) is logged and shown
//!   by `daemon status` with how to raise it; nothing depends on the
//!   watcher for correctness, since every request stats its `.rush` file.
//! - Nothing polls: with no events, no task wakes up. A `--watch` session
//!   that cannot get a native watch falls back to a polling watcher of its
//!   own, the only polling there is.
//!
//! Calls into notify (`watch`/`unwatch`) block on notify's thread, so they
//! run on tokio's blocking pool, never on a runtime worker.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{Event, EventKind, RecursiveMode, Watcher as _};
use taskrush_protocol::events::DaemonEvent;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::events::Events;

/// Quiet time after the last event before a file key is reported.
pub const DEBOUNCE: Duration = Duration::from_millis(50);
/// Longest a file key waits under a constant stream of events.
pub const MAX_DELAY: Duration = Duration::from_millis(1000);
/// Raw events queued between notify's thread and the router.
const RAW_QUEUE: usize = 4096;
/// Poll interval of the fallback watcher of a `--watch` session.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Who is interested in a change.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// A project's `.rush` file.
    Config(PathBuf),
    /// A plugin of a project: (project root, plugin name).
    Plugin(PathBuf, String),
}

/// Decides whether a changed path is of interest to a session.
pub type PathFilter = Arc<dyn Fn(&Path) -> bool + Send + Sync>;

struct Tree {
    root: PathBuf,
    filter: PathFilter,
    tx: mpsc::UnboundedSender<PathBuf>,
}

#[derive(Default)]
struct Routes {
    /// File keys and their files.
    files: HashMap<Key, Vec<PathBuf>>,
    /// Exact file path → the keys watching it.
    by_file: HashMap<PathBuf, Vec<Key>>,
    /// `run --watch` sessions.
    trees: HashMap<u64, Tree>,
}

impl Routes {
    fn reindex(&mut self) {
        self.by_file.clear();
        for (k, files) in &self.files {
            for f in files {
                self.by_file.entry(f.clone()).or_default().push(k.clone());
            }
        }
    }

    /// Directory → recursive, without directories a recursive watch covers.
    fn desired(&self) -> BTreeMap<PathBuf, bool> {
        let mut dirs: BTreeMap<PathBuf, bool> = BTreeMap::new();
        for t in self.trees.values() {
            dirs.insert(t.root.clone(), true);
        }
        for files in self.files.values() {
            for f in files {
                if let Some(d) = f.parent() {
                    dirs.entry(d.to_path_buf()).or_insert(false);
                }
            }
        }
        let trees: Vec<PathBuf> = dirs
            .iter()
            .filter(|(_, r)| **r)
            .map(|(p, _)| p.clone())
            .collect();
        dirs.retain(|p, rec| *rec || !trees.iter().any(|t| p.starts_with(t)));
        // Nested recursive trees: the outer one covers the inner.
        let outer: Vec<PathBuf> = trees.clone();
        dirs.retain(|p, rec| !*rec || !outer.iter().any(|t| t != p && p.starts_with(t)));
        dirs
    }
}

struct Native {
    watcher: Option<notify::RecommendedWatcher>,
    /// What is watched now: directory → recursive.
    applied: BTreeMap<PathBuf, bool>,
}

/// The watcher; one per daemon.
pub struct Watcher {
    routes: Mutex<Routes>,
    native: Mutex<Native>,
    /// Why watching is degraded, with what to do.
    problem: Mutex<Option<String>>,
    events: Events,
    /// Tests pretend the watch limit is this many directories
    /// (`TASKRUSH_TEST_MAX_WATCHES`).
    fake_limit: Option<usize>,
    next_session: std::sync::atomic::AtomicU64,
}

impl Watcher {
    /// Start the watcher; debounced file keys arrive on the returned
    /// receiver. Without inotify the daemon still works (every request
    /// checks its files); the reason shows in `daemon status`.
    pub fn start(events: Events) -> (Arc<Watcher>, mpsc::UnboundedReceiver<Key>) {
        let (raw_tx, raw_rx) = mpsc::channel::<notify::Result<Event>>(RAW_QUEUE);
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let native = notify::recommended_watcher(move |ev: notify::Result<Event>| {
            // notify's thread: hand over, never touch the daemon's locks.
            let _ = raw_tx.blocking_send(ev);
        });
        let (watcher, problem) = match native {
            Ok(w) => (Some(w), None),
            Err(e) => {
                let m = format!(
                    "cannot start the file watcher ({e}); changes are picked up on each request instead"
                );
                tracing::warn!("{m}");
                (None, Some(m))
            }
        };
        let w = Arc::new(Watcher {
            routes: Mutex::new(Routes::default()),
            native: Mutex::new(Native {
                watcher,
                applied: BTreeMap::new(),
            }),
            problem: Mutex::new(problem),
            events,
            fake_limit: std::env::var("TASKRUSH_TEST_MAX_WATCHES")
                .ok()
                .and_then(|v| v.parse().ok()),
            next_session: std::sync::atomic::AtomicU64::new(1),
        });
        tokio::spawn(route(w.clone(), raw_rx, out_tx));
        (w, out_rx)
    }

    fn routes(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why watching is degraded, if it is.
    pub fn problem(&self) -> Option<String> {
        self.problem
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// How many directories are watched (a recursive tree counts once).
    pub fn watched(&self) -> usize {
        self.native
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .applied
            .len()
    }

    /// Whether `key` is registered with exactly `files`.
    pub fn has(&self, key: &Key, files: &[PathBuf]) -> bool {
        self.routes().files.get(key).is_some_and(|f| f == files)
    }

    /// Watch `files` for `key` (replacing what it watched before); done
    /// when this returns.
    pub async fn watch_files(self: &Arc<Self>, key: Key, files: Vec<PathBuf>) {
        if self.has(&key, &files) {
            return;
        }
        {
            let mut r = self.routes();
            r.files.insert(key, files);
            r.reindex();
        }
        let me = self.clone();
        let _ = tokio::task::spawn_blocking(move || me.apply()).await;
    }

    /// Stop watching for `key`.
    pub fn forget(self: &Arc<Self>, key: &Key) {
        {
            let mut r = self.routes();
            if r.files.remove(key).is_none() {
                return;
            }
            r.reindex();
        }
        self.apply_soon();
    }

    /// Watch the tree under `root` for a `run --watch` session: every
    /// changed path that `filter` accepts is sent on the receiver (the
    /// root itself after an overflow: "anything may have changed"). The
    /// watch ends when the returned guard is dropped.
    pub async fn watch_tree(
        self: &Arc<Self>,
        root: PathBuf,
        filter: PathFilter,
    ) -> (TreeGuard, mpsc::UnboundedReceiver<PathBuf>) {
        let id = self
            .next_session
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        self.routes().trees.insert(
            id,
            Tree {
                root: root.clone(),
                filter: filter.clone(),
                tx: tx.clone(),
            },
        );
        let me = self.clone();
        let applied = tokio::task::spawn_blocking(move || me.apply())
            .await
            .unwrap_or(false);
        let covered = self
            .native
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .applied
            .iter()
            .any(|(p, rec)| *rec && root.starts_with(p));
        let mut guard = TreeGuard {
            watcher: self.clone(),
            id,
            _poll: None,
        };
        if !applied || !covered {
            tracing::warn!(root = %root.display(), "no native watch for `run --watch`: polling every {:?}", POLL_INTERVAL);
            guard._poll = poll_tree(&root, filter, tx);
        }
        (guard, rx)
    }

    /// Apply the registrations on the blocking pool.
    fn apply_soon(self: &Arc<Self>) {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.apply());
    }

    /// Bring the watched directories in line with the registrations.
    /// False when some could not be watched because of the watch limit.
    fn apply(&self) -> bool {
        let mut native = self.native.lock().unwrap_or_else(|p| p.into_inner());
        let desired = self.routes().desired();
        let Native { watcher, applied } = &mut *native;
        let Some(watcher) = watcher.as_mut() else {
            return false;
        };
        let stale: Vec<PathBuf> = applied
            .iter()
            .filter(|(p, rec)| desired.get(*p) != Some(rec))
            .map(|(p, _)| p.clone())
            .collect();
        for p in stale {
            let _ = watcher.unwatch(&p);
            applied.remove(&p);
        }
        let mut ok = true;
        for (dir, rec) in desired {
            if applied.contains_key(&dir) {
                continue;
            }
            let mode = if rec {
                RecursiveMode::Recursive
            } else {
                RecursiveMode::NonRecursive
            };
            let result = match self.fake_limit {
                Some(limit) if applied.len() >= limit => {
                    Err(notify::Error::new(notify::ErrorKind::MaxFilesWatch))
                }
                _ => watcher.watch(&dir, mode),
            };
            match result {
                Ok(()) => {
                    applied.insert(dir, rec);
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
        ok
    }

    fn limit_reached(&self, dir: &Path) {
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

    /// Every file key, for a full rescan.
    fn all_keys(&self) -> Vec<Key> {
        self.routes().files.keys().cloned().collect()
    }
}

/// Ends a `run --watch` session's watch when dropped.
pub struct TreeGuard {
    watcher: Arc<Watcher>,
    id: u64,
    _poll: Option<notify::PollWatcher>,
}

impl Drop for TreeGuard {
    fn drop(&mut self) {
        self.watcher.routes().trees.remove(&self.id);
        if tokio::runtime::Handle::try_current().is_ok() {
            self.watcher.apply_soon();
        }
    }
}

/// The fallback for a session without a native watch.
fn poll_tree(
    root: &Path,
    filter: PathFilter,
    tx: mpsc::UnboundedSender<PathBuf>,
) -> Option<notify::PollWatcher> {
    let config = notify::Config::default().with_poll_interval(POLL_INTERVAL);
    let mut w = notify::PollWatcher::new(
        move |ev: notify::Result<Event>| {
            if let Ok(ev) = ev {
                for p in ev.paths {
                    if filter(&p) {
                        let _ = tx.send(p);
                    }
                }
            }
        },
        config,
    )
    .ok()?;
    w.watch(root, RecursiveMode::Recursive).ok()?;
    Some(w)
}

/// Whether an event can mean new content (opening or reading cannot).
fn is_change(kind: &EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// The router: raw events in, debounced keys and session paths out.
async fn route(
    w: Arc<Watcher>,
    mut raw: mpsc::Receiver<notify::Result<Event>>,
    out: mpsc::UnboundedSender<Key>,
) {
    // Key → (first event, last event) of the pending burst.
    let mut due: HashMap<Key, (Instant, Instant)> = HashMap::new();
    loop {
        let next = due
            .values()
            .map(|(first, last)| (*last + DEBOUNCE).min(*first + MAX_DELAY))
            .min();
        let ev = tokio::select! {
            ev = raw.recv() => ev,
            _ = sleep_until(next) => {
                let now = Instant::now();
                let ready: Vec<Key> = due
                    .iter()
                    .filter(|(_, (first, last))| (*last + DEBOUNCE).min(*first + MAX_DELAY) <= now)
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in ready {
                    due.remove(&k);
                    let _ = out.send(k);
                }
                continue;
            }
        };
        let Some(ev) = ev else { return };
        let now = Instant::now();
        let mut mark = |k: Key| {
            due.entry(k).and_modify(|e| e.1 = now).or_insert((now, now));
        };
        match ev {
            Ok(ev) if ev.need_rescan() => {
                tracing::warn!("the file watcher's event queue overflowed: rescanning everything");
                w.events.send(DaemonEvent::WatcherProblem {
                    message: "the file watcher's event queue overflowed: everything is rescanned"
                        .into(),
                });
                for k in w.all_keys() {
                    mark(k);
                }
                for t in w.routes().trees.values() {
                    let _ = t.tx.send(t.root.clone());
                }
            }
            Ok(ev) if is_change(&ev.kind) => {
                let routes = w.routes();
                for p in &ev.paths {
                    if let Some(keys) = routes.by_file.get(p) {
                        for k in keys {
                            mark(k.clone());
                        }
                    }
                    for t in routes.trees.values() {
                        if p.starts_with(&t.root) && (t.filter)(p) {
                            let _ = t.tx.send(p.clone());
                        }
                    }
                }
            }
            Ok(_) => {}
            Err(e) if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) => {
                let dir = e.paths.first().cloned().unwrap_or_default();
                w.limit_reached(&dir);
            }
            Err(e) => tracing::debug!("file watcher: {e}"),
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(root: &str) -> Tree {
        Tree {
            root: root.into(),
            filter: Arc::new(|_| true),
            tx: mpsc::unbounded_channel().0,
        }
    }

    #[test]
    fn files_are_watched_through_their_directory_and_trees_cover_them() {
        let mut r = Routes::default();
        r.files.insert(
            Key::Config("/p/.rush".into()),
            vec![PathBuf::from("/p/.rush")],
        );
        r.files.insert(
            Key::Plugin("/p".into(), "x".into()),
            vec![
                PathBuf::from("/p/.rush-plugins/x/plugin.toml"),
                PathBuf::from("/elsewhere/x.py"),
            ],
        );
        let got: Vec<(String, bool)> = r
            .desired()
            .into_iter()
            .map(|(p, rec)| (p.display().to_string(), rec))
            .collect();
        assert_eq!(
            got,
            [
                ("/elsewhere".to_owned(), false),
                ("/p".to_owned(), false),
                ("/p/.rush-plugins/x".to_owned(), false)
            ]
        );
        r.trees.insert(1, tree("/p"));
        r.trees.insert(2, tree("/p/sub"));
        let got: Vec<(String, bool)> = r
            .desired()
            .into_iter()
            .map(|(p, rec)| (p.display().to_string(), rec))
            .collect();
        assert_eq!(
            got,
            [("/elsewhere".to_owned(), false), ("/p".to_owned(), true)]
        );
    }
}
