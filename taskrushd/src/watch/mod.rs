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
//! - Cached tasks' input directories are watched too (see "Inputs" below).
//! - Nothing polls: with no events, no task wakes up. A `--watch` session
//!   that cannot get a native watch falls back to a polling watcher of its
//!   own, the only polling there is.
//!
//! Calls into notify (`watch`/`unwatch`) block on notify's thread, so they
//! run on tokio's blocking pool, never on a runtime worker.
//!
//! # Inputs: up-to-date checks without touching the inputs
//!
//! After a cached task's key is computed (every input `stat`ed, hashed when
//! new), the directories that could show a change to its inputs are watched
//! ([`Key::Inputs`]; which directories: `InputFiles::watch_dirs`). Every
//! event under them bumps the key's *generation* and drops its remembered
//! key. A key computed while the directories were already watched and the
//! generation did not move is remembered as *clean*: the next check of the
//! same recipe takes it without a single `stat` of the inputs.
//!
//! Consistency ("a request issued after a save sees that save") needs one
//! more thing: the events of every change made *before* the request must
//! have been routed. [`Watcher::sync`] proves it the way Watchman does:
//! it creates a cookie file in a directory of the same inotify instance
//! and waits for its event. An inotify instance has one queue, filled in
//! the order the changes were made, and the router reads it in order; so
//! when the cookie's event arrives, every earlier change has bumped its
//! generation. If the cookie does not come back in time (or the watch
//! limit, an overflow or a missing watcher got in the way), the check falls
//! back to `stat`ing everything — the watcher only ever makes it faster.
//! A watched directory that is itself replaced, renamed or deleted is
//! watched again from scratch (its old watch follows the old inode).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{Event, EventKind, RecursiveMode, Watcher as _};
use taskrush_protocol::events::DaemonEvent;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::cache::CacheKey;
use crate::events::Events;
use crate::input_files::{WatchDir, path_id as dir_id};

/// Quiet time after the last event before a file key is reported.
pub const DEBOUNCE: Duration = Duration::from_millis(50);
/// Longest a file key waits under a constant stream of events.
pub const MAX_DELAY: Duration = Duration::from_millis(1000);
/// Raw events queued between notify's thread and the router.
const RAW_QUEUE: usize = 4096;
/// Poll interval of the fallback watcher of a `--watch` session.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// How long [`Watcher::sync`] waits for its cookie.
const SYNC_TIMEOUT: Duration = Duration::from_secs(1);

/// Who is interested in a change.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// A project's `.rush` file.
    Config(PathBuf),
    /// A plugin of a project: (project root, plugin name).
    Plugin(PathBuf, String),
    /// A cached task's inputs: (project root, task name).
    Inputs(PathBuf, String),
}

/// A key computed while nothing changed under its watched directories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanKey {
    /// What the key was computed for, besides the input files
    /// (`cache::recipe`).
    pub recipe: CacheKey,
    /// The task's cache key.
    pub key: CacheKey,
    /// (device, inode) of the project root then: a different directory at
    /// the same path (an ancestor was renamed) is not the same project.
    pub root_id: (u64, u64),
}

/// A cached task's watched input directories.
struct Inputs {
    dirs: Vec<PathBuf>,
    /// Bumped by every event under `dirs`.
    generation: u64,
    clean: Option<CleanKey>,
}

/// The cookie files of [`Watcher::sync`].
struct Cookies {
    /// Private to this daemon process (`cookies.<pid>` in the socket's
    /// directory).
    dir: PathBuf,
    next: std::sync::atomic::AtomicU64,
    /// The highest cookie number whose event has been routed.
    seen: tokio::sync::watch::Sender<u64>,
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
    /// Cached tasks' input directories.
    inputs: HashMap<Key, Inputs>,
    /// Input directory → the keys watching it.
    by_dir: HashMap<PathBuf, Vec<Key>>,
    /// The cookie directory, watched once inputs are.
    cookie_dir: Option<PathBuf>,
    /// The last generation given out: generations only grow, so a ticket
    /// can never match a key that was forgotten and registered again.
    generation: u64,
}

impl Routes {
    fn reindex(&mut self) {
        self.by_file.clear();
        for (k, files) in &self.files {
            for f in files {
                self.by_file.entry(f.clone()).or_default().push(k.clone());
            }
        }
        self.by_dir.clear();
        for (k, inputs) in &self.inputs {
            for d in &inputs.dirs {
                self.by_dir.entry(d.clone()).or_default().push(k.clone());
            }
        }
    }

    fn next_generation(&mut self) -> u64 {
        self.generation += 1;
        self.generation
    }

    /// The inputs watching `dir` are no longer clean. True if any watch it.
    fn bump_dir(&mut self, dir: &Path) -> bool {
        let Some(keys) = self.by_dir.get(dir) else {
            return false;
        };
        for k in keys {
            if let Some(i) = self.inputs.get_mut(k) {
                self.generation += 1;
                i.generation = self.generation;
                i.clean = None;
            }
        }
        true
    }

    /// Something changed at `path`: the inputs watching it or its directory
    /// are no longer clean. True if `path` is itself a watched input
    /// directory (it must be watched again: it may be a new inode).
    fn input_changed(&mut self, path: &Path) -> bool {
        if let Some(parent) = path.parent() {
            self.bump_dir(parent);
        }
        self.bump_dir(path)
    }

    /// The watches of `dirs` are gone or going: no input relying on them is
    /// clean.
    fn inputs_changed(&mut self, dirs: &[PathBuf]) {
        for d in dirs {
            self.bump_dir(d);
        }
    }

    /// Every input is unclean (after an overflow).
    fn all_inputs_changed(&mut self) {
        let keys: Vec<Key> = self.inputs.keys().cloned().collect();
        for k in keys {
            let g = self.next_generation();
            if let Some(i) = self.inputs.get_mut(&k) {
                i.generation = g;
                i.clean = None;
            }
        }
    }

    /// Input directories in use by keys other than `key`.
    fn input_dirs_besides(&self, key: &Key) -> usize {
        self.inputs
            .iter()
            .filter(|(k, _)| *k != key)
            .map(|(_, i)| i.dirs.len())
            .sum()
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
        for inputs in self.inputs.values() {
            for d in &inputs.dirs {
                dirs.entry(d.clone()).or_insert(false);
            }
        }
        if let Some(d) = &self.cookie_dir
            && !self.inputs.is_empty()
        {
            dirs.entry(d.clone()).or_insert(false);
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

/// A directory watched now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Applied {
    recursive: bool,
    /// (device, inode) of a single directory when its watch was added
    /// (`stat` before and after agreed): the inode the watch follows.
    id: Option<(u64, u64)>,
}

/// The watcher; one per daemon.
pub struct Watcher {
    routes: Mutex<Routes>,
    /// notify's watcher. Held across calls into notify (which wait for
    /// notify's thread), so only [`Watcher::apply`] takes it, on the
    /// blocking pool; never the router, whose draining notify's queue is
    /// what lets notify's thread answer.
    native: Mutex<Option<notify::RecommendedWatcher>>,
    has_native: bool,
    /// What is watched now: directory → how. Only short critical sections,
    /// never across a call into notify. Lock order: `native`, `routes`,
    /// `applied` (never `routes` while holding `applied`).
    applied: Mutex<BTreeMap<PathBuf, Applied>>,
    /// Bumped (under the `applied` lock) whenever watches may have been
    /// dropped by notify: a watch added meanwhile may be one of them, so
    /// `apply` does not record it and tries again.
    drops: std::sync::atomic::AtomicU64,
    /// Itself, for `retry_soon`.
    me: std::sync::OnceLock<std::sync::Weak<Watcher>>,
    /// Why watching is degraded, with what to do.
    problem: Mutex<Option<String>>,
    events: Events,
    /// Tests pretend the watch limit is this many directories
    /// (`TASKRUSH_TEST_MAX_WATCHES`).
    fake_limit: Option<usize>,
    next_session: std::sync::atomic::AtomicU64,
    cookies: Option<Cookies>,
    /// At most this many directories are watched for inputs (a quarter of
    /// the user's inotify watches: editors and other tools need them too).
    input_budget: usize,
}

impl Watcher {
    /// Start the watcher; debounced file keys arrive on the returned
    /// receiver. Without inotify the daemon still works (every request
    /// checks its files); the reason shows in `daemon status`.
    ///
    /// `cookie_dir` is where [`Watcher::sync`] writes its cookies: a
    /// directory private to this process, created when first needed.
    pub fn start(
        events: Events,
        cookie_dir: Option<PathBuf>,
    ) -> (Arc<Watcher>, mpsc::UnboundedReceiver<Key>) {
        let (raw_tx, raw_rx) = mpsc::channel::<notify::Result<Event>>(RAW_QUEUE);
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        // Symlinks are not followed into: one inode watched under two paths
        // reports its events under one of them only.
        let native = notify::RecommendedWatcher::new(
            move |ev: notify::Result<Event>| {
                // notify's thread: hand over, never touch the daemon's locks.
                let _ = raw_tx.blocking_send(ev);
            },
            notify::Config::default().with_follow_symlinks(false),
        );
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
        let cookies = cookie_dir.clone().map(|dir| Cookies {
            dir,
            next: std::sync::atomic::AtomicU64::new(1),
            seen: tokio::sync::watch::channel(0).0,
        });
        let w = Arc::new(Watcher {
            routes: Mutex::new(Routes {
                cookie_dir,
                ..Routes::default()
            }),
            has_native: watcher.is_some(),
            native: Mutex::new(watcher),
            applied: Mutex::new(BTreeMap::new()),
            drops: std::sync::atomic::AtomicU64::new(0),
            me: std::sync::OnceLock::new(),
            problem: Mutex::new(problem),
            events,
            fake_limit: std::env::var("TASKRUSH_TEST_MAX_WATCHES")
                .ok()
                .and_then(|v| v.parse().ok()),
            next_session: std::sync::atomic::AtomicU64::new(1),
            cookies,
            input_budget: input_budget(),
        });
        let _ = w.me.set(Arc::downgrade(&w));
        tokio::spawn(route(w.clone(), raw_rx, out_tx));
        (w, out_rx)
    }

    fn routes(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn applied(&self) -> std::sync::MutexGuard<'_, BTreeMap<PathBuf, Applied>> {
        self.applied.lock().unwrap_or_else(|p| p.into_inner())
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
        self.applied().len()
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
            if r.files.remove(key).is_none() && r.inputs.remove(key).is_none() {
                return;
            }
            r.reindex();
        }
        self.apply_soon();
    }

    /// Forget the inputs of the project at `root` whose task `keep` rejects.
    pub fn retain_inputs(self: &Arc<Self>, root: &Path, keep: impl Fn(&str) -> bool) {
        {
            let mut r = self.routes();
            let before = r.inputs.len();
            r.inputs.retain(|k, _| match k {
                Key::Inputs(r, task) => r != root || keep(task),
                _ => true,
            });
            if r.inputs.len() == before {
                return;
            }
            r.reindex();
        }
        self.apply_soon();
    }

    /// The remembered key of `inputs` if nothing changed under its watched
    /// directories since it was computed, for the same recipe and root.
    /// Only meaningful right after a successful [`Watcher::sync`].
    pub fn clean_key(
        &self,
        inputs: &Key,
        recipe: &CacheKey,
        root_id: (u64, u64),
    ) -> Option<CacheKey> {
        let r = self.routes();
        let clean = r.inputs.get(inputs)?.clean?;
        (clean.recipe == *recipe && clean.root_id == root_id).then_some(clean.key)
    }

    /// Call before computing a key of `inputs`: a ticket if its directories
    /// are watched now (so every change from here on shows), else `None`.
    pub fn begin_inputs(&self, inputs: &Key) -> Option<u64> {
        let (generation, dirs) = {
            let r = self.routes();
            let i = r.inputs.get(inputs)?;
            (i.generation, i.dirs.clone())
        };
        if !self.has_native {
            return None;
        }
        let applied = self.applied();
        dirs.iter()
            .all(|d| applied.contains_key(d))
            .then_some(generation)
    }

    /// Call after computing a key of `inputs` (with the ticket of
    /// [`Watcher::begin_inputs`]): remembers it as clean if the same
    /// directories were watched throughout and nothing changed under them;
    /// otherwise (first check, other directories) watches `dirs` so that
    /// the next check can be. `None` for `dirs`: inputs that watching
    /// cannot cover; they are forgotten.
    pub async fn finish_inputs(
        self: &Arc<Self>,
        inputs: Key,
        ticket: Option<u64>,
        dirs: Option<Vec<WatchDir>>,
        clean: CleanKey,
    ) {
        let Some(listed) = dirs else {
            self.forget(&inputs);
            return;
        };
        // A directory replaced since its watch was added: the watch
        // follows the old inode. Watch it again; not clean this time.
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
                && ticket == Some(i.generation)
                && i.dirs == dirs
                && self.watched_as_listed(&listed)
            {
                if let Some(i) = r.inputs.get_mut(&inputs) {
                    i.clean = Some(clean);
                }
                return;
            }
            if r.input_dirs_besides(&inputs) + dirs.len() > self.input_budget {
                tracing::debug!(
                    ?inputs,
                    dirs = dirs.len(),
                    "input directories over budget: not watched"
                );
                drop(r);
                self.forget(&inputs);
                return;
            }
            let generation = r.next_generation();
            r.inputs.insert(
                inputs,
                Inputs {
                    dirs,
                    generation,
                    clean: None,
                },
            );
            r.reindex();
        }
        if let Some(c) = &self.cookies {
            let _ = create_private_dir(&c.dir);
        }
        let me = self.clone();
        let _ = tokio::task::spawn_blocking(move || me.apply()).await;
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
    /// proven within [`SYNC_TIMEOUT`]: the caller must not trust clean keys.
    pub async fn sync(self: &Arc<Self>) -> bool {
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
    pub fn remove_cookies(&self) {
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
            .applied()
            .iter()
            .any(|(p, a)| a.recursive && root.starts_with(p));
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
    fn apply_soon(self: &Arc<Self>) {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.apply());
    }

    /// Bring the watched directories in line with the registrations.
    /// False when some could not be watched because of the watch limit.
    fn apply(&self) -> bool {
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
            // Unwatched from here on: clean keys relying on them are not.
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

    /// Watch `dirs` and every watched directory below them again from
    /// scratch: each was replaced, renamed or deleted, so its watch (and
    /// those below it, whose paths now lead elsewhere; notify itself drops
    /// the watches below a renamed directory) may follow inodes that are no
    /// longer there, or be gone. Until watched again they count as
    /// unwatched, and the clean keys relying on them are dropped. (A
    /// recursive `run --watch` tree is left alone: notify follows renames
    /// within it itself.)
    fn rewatch(self: &Arc<Self>, dirs: &[PathBuf]) {
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
    fn rewatch_all(self: &Arc<Self>) {
        {
            let mut applied = self.applied();
            self.drops.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            applied.retain(|_, a| a.recursive);
        }
        self.apply_soon();
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

/// Whether an event removes or renames away its path.
fn is_removal(kind: &EventKind) -> bool {
    use notify::event::{ModifyKind, RenameMode};
    matches!(
        kind,
        EventKind::Remove(_)
            | EventKind::Modify(ModifyKind::Name(
                RenameMode::From | RenameMode::Both | RenameMode::Any
            ))
    )
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
                // Drop the watches first, then the clean keys: a check in
                // between must not get a ticket on the old watches.
                w.rewatch_all();
                w.routes().all_inputs_changed();
                for t in w.routes().trees.values() {
                    let _ = t.tx.send(t.root.clone());
                }
            }
            Ok(ev) if is_change(&ev.kind) => {
                let mut routes = w.routes();
                let mut rewatch = Vec::new();
                for p in &ev.paths {
                    if let Some(c) = &w.cookies
                        && p.parent() == Some(c.dir.as_path())
                    {
                        if let Some(n) = p.file_name().and_then(|n| n.to_str()?.parse::<u64>().ok())
                        {
                            c.seen.send_if_modified(|seen| {
                                let newer = n > *seen;
                                *seen = (*seen).max(n);
                                newer
                            });
                        }
                        continue;
                    }
                    // A watched directory replaced, or anything removed or
                    // renamed away (notify drops watches below it).
                    if routes.input_changed(p) || is_removal(&ev.kind) {
                        rewatch.push(p.clone());
                    }
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
                drop(routes);
                if !rewatch.is_empty() {
                    w.rewatch(&rewatch);
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

/// A quarter of the user's inotify watches (`fs.inotify.max_user_watches`).
fn input_budget() -> usize {
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
