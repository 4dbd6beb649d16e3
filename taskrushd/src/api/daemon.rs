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
    /// Runs in progress, each with its cancel level. A `watch` so that
    /// shutdown can await the map becoming empty ([`Daemon::runs_ended`]).
    runs: watch::Sender<HashMap<u64, watch::Sender<Cancel>>>,
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
    /// `.rush` files watched although no project is loaded from them (a
    /// file broken on its first load, or one that may be created in a
    /// folder a client asked about), oldest first, at most
    /// [`super::reload::MAX_AWAITED`].
    pub(super) awaited: Mutex<std::collections::VecDeque<std::path::PathBuf>>,
    /// Runs in progress as observers see them (`list_runs`, `attach`).
    live: Mutex<std::collections::BTreeMap<u64, Arc<super::live::LiveRun>>>,
    /// The plugin manager page's server, once `ui_open` started it.
    pub(crate) ui: crate::ui::Ui,
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
            runs: watch::channel(HashMap::new()).0,
            next_run: AtomicU64::new(1),
            clients: AtomicUsize::new(0),
            stopping: watch::channel(false).0,
            awaited: Mutex::default(),
            live: Mutex::default(),
            ui: crate::ui::Ui::default(),
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
        self.runs.borrow().len()
    }

    /// Resolves once no run is in progress: when the last run's session
    /// ends (at once if there is none).
    pub(crate) async fn runs_ended(&self) {
        // The sender lives as long as `self`: this only returns once empty.
        let _ = self.runs.subscribe().wait_for(HashMap::is_empty).await;
    }

    /// Cancel every run (daemon shutdown).
    pub(crate) fn cancel_all(&self, level: Cancel) {
        for tx in self.runs.borrow().values() {
            tx.send_if_modified(|c| raise(c, level));
        }
    }

    /// Register a new run: its id and its cancel level, in the runs map
    /// while the returned [`RunEntry`] lives (dropping it, even by a panic
    /// unwinding the session, ends the run).
    pub(super) fn start_run(&self) -> (RunEntry<'_>, watch::Sender<Cancel>) {
        let run_id = self.next_run.fetch_add(1, Ordering::Relaxed);
        let (cancel, _) = watch::channel(Cancel::No);
        self.runs.send_modify(|runs| {
            runs.insert(run_id, cancel.clone());
        });
        (
            RunEntry {
                daemon: self,
                id: run_id,
            },
            cancel,
        )
    }

    /// The roots of the projects whose configuration is loaded.
    pub(crate) fn loaded_roots(&self) -> Vec<String> {
        self.projects.roots()
    }

    /// The plugin audit trail's file.
    pub(crate) fn audit_path(&self) -> std::path::PathBuf {
        self.paths.audit.clone()
    }

    /// Runs in progress as observers see them.
    pub(super) fn live_runs(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<u64, Arc<super::live::LiveRun>>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Raise one run's cancel level; false when there is no such run.
    pub(super) fn cancel_run(&self, run_id: u64, level: Cancel) -> bool {
        match self.runs.borrow().get(&run_id) {
            Some(tx) => {
                tx.send_if_modified(|c| raise(c, level));
                true
            }
            None => false,
        }
    }
}

/// A run in the runs map, as its session holds it: when the last one is
/// dropped, [`Daemon::runs_ended`] resolves (shutdown awaits that).
pub(super) struct RunEntry<'a> {
    daemon: &'a Daemon,
    pub(super) id: u64,
}

impl Drop for RunEntry<'_> {
    /// The run's session ended: it no longer counts as active.
    fn drop(&mut self) {
        let id = self.id;
        self.daemon.live_runs().remove(&id);
        self.daemon
            .runs
            .send_if_modified(|runs| runs.remove(&id).is_some());
        self.daemon.touch();
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
