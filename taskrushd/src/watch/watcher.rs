//! The [`Watcher`]: its state, starting it, file keys (`.rush` files,
//! plugin files) registered and forgotten, what `daemon status` shows.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use notify::{Event, Watcher as _};
use tokio::sync::mpsc;

use super::inputs::{Cookies, input_budget};
use super::native::Applied;
use super::router::route;
use super::routes::{Key, Routes};
use crate::event_bus::Events;

/// Raw events queued between notify's thread and the router.
const RAW_QUEUE: usize = 4096;

/// The watcher; one per daemon.
pub(crate) struct Watcher {
    pub(super) routes: Mutex<Routes>,
    /// notify's watcher. Held across calls into notify (which wait for
    /// notify's thread), so only [`Watcher::apply`] takes it, on the
    /// blocking pool; never the router, whose draining notify's queue is
    /// what lets notify's thread answer.
    pub(super) native: Mutex<Option<notify::RecommendedWatcher>>,
    pub(super) has_native: bool,
    /// What is watched now: directory → how. Only short critical sections,
    /// never across a call into notify. Lock order: `native`, `routes`,
    /// `applied` (never `routes` while holding `applied`).
    pub(super) applied: Mutex<BTreeMap<PathBuf, Applied>>,
    /// Bumped (under the `applied` lock) whenever watches may have been
    /// dropped by notify: a watch added meanwhile may be one of them, so
    /// `apply` does not record it and tries again.
    pub(super) drops: std::sync::atomic::AtomicU64,
    /// Itself, for `retry_soon`.
    pub(super) me: std::sync::OnceLock<std::sync::Weak<Watcher>>,
    /// Why watching is degraded, with what to do.
    pub(super) problem: Mutex<Option<String>>,
    pub(super) events: Events,
    /// Tests pretend the watch limit is this many directories
    /// (`TASKRUSH_TEST_MAX_WATCHES`).
    pub(super) fake_limit: Option<usize>,
    pub(super) next_session: std::sync::atomic::AtomicU64,
    pub(super) cookies: Option<Cookies>,
    /// At most this many directories are watched for inputs (a quarter of
    /// the user's inotify watches: editors and other tools need them too).
    pub(super) input_budget: usize,
}

impl Watcher {
    /// Start the watcher; debounced file keys arrive on the returned
    /// receiver. Without inotify the daemon still works (every request
    /// checks its files); the reason shows in `daemon status`.
    ///
    /// `cookie_dir` is where [`Watcher::sync`] writes its cookies: a
    /// directory private to this process, created when first needed.
    pub(crate) fn start(
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
        let w = Watcher::new(watcher, problem, events, cookie_dir);
        tokio::spawn(route(w.clone(), raw_rx, out_tx));
        (w, out_rx)
    }

    /// The watcher's state around `native` (`None`: no native watching,
    /// for the reason in `problem`); its router is not started.
    pub(super) fn new(
        watcher: Option<notify::RecommendedWatcher>,
        problem: Option<String>,
        events: Events,
        cookie_dir: Option<PathBuf>,
    ) -> Arc<Watcher> {
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
        w
    }

    pub(super) fn routes(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn applied(&self) -> std::sync::MutexGuard<'_, BTreeMap<PathBuf, Applied>> {
        self.applied.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why watching is degraded, if it is.
    pub(crate) fn problem(&self) -> Option<String> {
        self.problem
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// How many directories are watched (a recursive tree counts once).
    pub(crate) fn watched(&self) -> usize {
        self.applied().len()
    }

    /// Whether `key` is registered with exactly `files`.
    pub(crate) fn has(&self, key: &Key, files: &[PathBuf]) -> bool {
        self.routes().files.get(key).is_some_and(|f| f == files)
    }

    /// Watch `files` for `key` (replacing what it watched before); done
    /// when this returns.
    pub(crate) async fn watch_files(self: &Arc<Self>, key: Key, files: Vec<PathBuf>) {
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
    pub(crate) fn forget(self: &Arc<Self>, key: &Key) {
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
    pub(crate) fn retain_inputs(self: &Arc<Self>, root: &Path, keep: impl Fn(&str) -> bool) {
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
}
