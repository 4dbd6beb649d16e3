//! The daemon's state and its life: options, runs in progress, idle time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use taskrush_protocol::paths::DaemonPaths;
use tokio::sync::watch;

use crate::cache::up_to_date::UpToDate;
use crate::config::projects::Projects;
use crate::event_bus::Events;
use crate::plugin::PluginHost;
use crate::run::cancel::{Cancel, raise};
use crate::watch::Watcher;

use super::reload::apply_changes;

/// Shared state of the daemon; one per process.
pub(crate) struct Daemon {
    pub(super) started: Instant,
    pub(super) paths: DaemonPaths,
    /// Shared with the blocking threads that read and parse `.rush` files.
    pub(super) projects: Arc<Projects>,
    /// File hashes and clean keys, for up-to-date checks.
    pub(super) up_to_date: Arc<UpToDate>,
    /// Every plugin process, per project.
    pub(crate) plugins: Arc<PluginHost>,
    runs: Mutex<HashMap<u64, watch::Sender<Cancel>>>,
    next_run: AtomicU64,
    /// Connected clients, maintained by the accept loop.
    pub(crate) clients: AtomicUsize,
    /// `true` once the daemon is stopping.
    pub(crate) stopping: watch::Sender<bool>,
    pub(crate) options: DaemonOptions,
    /// When the last client left or the last run ended.
    last_active: Mutex<Instant>,
    /// The global event stream (`events` subscription).
    pub(crate) events: Events,
    /// The one file watcher: `.rush` files, plugin files, `run --watch`.
    pub(crate) watcher: Arc<Watcher>,
}

/// How this daemon was started.
#[derive(Debug, Clone)]
pub(crate) struct DaemonOptions {
    /// The version announced by `hello` (TaskRush's own, unless a test
    /// pretends to be another version).
    pub(crate) version: String,
    /// Why it was started, for `daemon status`.
    pub(crate) started_because: String,
    /// Exit after this long without clients and runs.
    pub(crate) idle_timeout: Option<std::time::Duration>,
    /// Watch cached tasks' inputs so that the next check need not `stat`
    /// them (off for a one-run private daemon, which has no next check).
    pub(crate) watch_inputs: bool,
}

impl Daemon {
    /// Must be called within the runtime: it starts the watcher's tasks.
    pub(crate) fn new(paths: DaemonPaths, options: DaemonOptions) -> Arc<Daemon> {
        let events = Events::default();
        let cookies = options
            .watch_inputs
            .then(|| paths.dir.join(format!("cookies.{}", std::process::id())));
        let (watcher, changes) = Watcher::start(events.clone(), cookies);
        watcher.remove_cookies();
        let up_to_date = UpToDate::new(options.watch_inputs.then(|| watcher.clone()));
        let plugins = PluginHost::new(events.clone());
        plugins.set_watcher(watcher.clone());
        let daemon = Arc::new(Daemon {
            events,
            watcher,
            options,
            last_active: Mutex::new(Instant::now()),
            started: Instant::now(),
            paths,
            projects: Arc::new(Projects::from_env()),
            up_to_date,
            plugins,
            runs: Mutex::new(HashMap::new()),
            next_run: AtomicU64::new(1),
            clients: AtomicUsize::new(0),
            stopping: watch::channel(false).0,
        });
        tokio::spawn(apply_changes(Arc::downgrade(&daemon), changes));
        daemon
    }

    /// Note that a client left or a run ended (for idle shutdown).
    pub(crate) fn touch(&self) {
        *self.last_active.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    /// How long the daemon has had no client and no run, if it has none.
    pub(crate) fn idle_for(&self) -> Option<std::time::Duration> {
        if self.clients.load(Ordering::Relaxed) > 0 || self.active_runs() > 0 {
            return None;
        }
        Some(
            self.last_active
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .elapsed(),
        )
    }

    /// Number of runs in progress.
    pub(crate) fn active_runs(&self) -> usize {
        self.runs_lock().len()
    }

    /// Cancel every run (daemon shutdown).
    pub(crate) fn cancel_all(&self, level: Cancel) {
        for tx in self.runs_lock().values() {
            tx.send_if_modified(|c| raise(c, level));
        }
    }

    /// Register a new run: its id and its cancel level, in the runs map
    /// until [`Daemon::end_run`].
    pub(super) fn start_run(&self) -> (u64, watch::Sender<Cancel>) {
        let run_id = self.next_run.fetch_add(1, Ordering::Relaxed);
        let (cancel, _) = watch::channel(Cancel::No);
        self.runs_lock().insert(run_id, cancel.clone());
        (run_id, cancel)
    }

    /// A run's session ended: it no longer counts as active.
    pub(super) fn end_run(&self, run_id: u64) {
        self.runs_lock().remove(&run_id);
        self.touch();
    }

    /// Raise one run's cancel level; false when there is no such run.
    pub(super) fn cancel_run(&self, run_id: u64, level: Cancel) -> bool {
        match self.runs_lock().get(&run_id) {
            Some(tx) => {
                tx.send_if_modified(|c| raise(c, level));
                true
            }
            None => false,
        }
    }

    fn runs_lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, watch::Sender<Cancel>>> {
        // Single inserts and removes: a poisoned map is still consistent.
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Resident set size from `/proc/self/statm` (0 where unavailable).
pub(super) fn rss_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * rustix::param::page_size() as u64
}
