//! The daemon's state and its JSON-RPC API.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use jsonrpsee::core::server::Extensions;
use jsonrpsee::core::{SubscriptionResult, async_trait};
use jsonrpsee::types::ErrorObjectOwned;
use jsonrpsee::{PendingSubscriptionSink, SubscriptionSink};
use taskrush_protocol::PROTOCOL_VERSION;
use taskrush_protocol::api::TaskRushApiServer;
use taskrush_protocol::daemon::{
    DaemonStatus, Hello, PluginDetails, PluginStatus, PluginTestReport, TaskInfo, TaskList,
};
use taskrush_protocol::error::{self, ErrorData};
use taskrush_protocol::events::DaemonEvent;
use taskrush_protocol::paths::DaemonPaths;
use taskrush_protocol::plugin::CommandResult;
use taskrush_protocol::run::{OnChange, RunEvent, RunRequest};
use tokio::sync::{mpsc, watch};

use crate::cache::up_to_date::UpToDate;
use crate::config::config_error::{ConfigError, ConfigErrorKind};
use crate::config::projects::{Change, Loaded, Projects};
use crate::event_bus::Events;
use crate::plugin::{Phase, PluginFailure, PluginHost, RunPlugins};
use crate::run::planner::{self, Plan};
use crate::run::runner::{self, Cancel, RunSpec};
use crate::run::watch_run::{SharedFilter, WatchFilter};
use crate::server::client_stdio::ClientStdio;
use crate::server::connection::ClientGone;
use crate::watch::{Key, Watcher};

/// Shared state of the daemon; one per process.
pub(crate) struct Daemon {
    started: Instant,
    paths: DaemonPaths,
    /// Shared with the blocking threads that read and parse `.rush` files.
    projects: Arc<Projects>,
    /// File hashes and clean keys, for up-to-date checks.
    up_to_date: Arc<UpToDate>,
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

    fn runs_lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, watch::Sender<Cancel>>> {
        // Single inserts and removes: a poisoned map is still consistent.
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn load(&self, cwd: &str, file: Option<&str>) -> Result<Loaded, ErrorObjectOwned> {
        let cwd = Path::new(cwd);
        if !cwd.is_absolute() {
            return Err(ErrorObjectOwned::owned(
                error::INVALID_PARAMS,
                format!("`cwd` must be an absolute path, got `{}`", cwd.display()),
                None::<()>,
            ));
        }
        let path = self.projects.locate(cwd, file).map_err(config_error)?;
        let loaded = self.load_path(&path).await.map_err(config_error)?;
        // Watch it from now on (at once, so that a save right after this
        // request is seen by the watcher too).
        let key = Key::Config(path.clone());
        if !self.watcher.has(&key, std::slice::from_ref(&path)) {
            self.watcher.watch_files(key, vec![path]).await;
        }
        Ok(loaded)
    }

    /// Load (or re-check) one `.rush` file and publish what changed: a
    /// request and the watcher both come here, and whichever notices a
    /// change first reports it.
    ///
    /// Reading and parsing happen on a blocking thread, without the
    /// daemon's locks: a file that takes long to parse stalls only the
    /// requests for that file.
    pub(crate) async fn load_path(
        &self,
        path: &Path,
    ) -> Result<Loaded, crate::config::config_error::ConfigError> {
        if let Some(loaded) = self.projects.cached(path) {
            return Ok(loaded);
        }
        let (loaded, change) = self.projects.load_async(path).await?;
        for gone in self.projects.take_evicted() {
            self.watcher.forget(&Key::Config(gone.clone()));
            if let Some(root) = gone.parent() {
                self.watcher.retain_inputs(root, |_| false);
            }
        }
        match change {
            Change::None => {}
            Change::Reloaded(config) => {
                // Tasks that are gone (or lost their cache) need no watches.
                self.watcher.retain_inputs(&config.root, |task| {
                    config
                        .tasks
                        .get(task)
                        .is_some_and(|t| !t.cache_files.is_empty())
                });
                self.events.send(DaemonEvent::ConfigReloaded {
                    root: display(&config.root),
                    file: display(&config.path),
                    tasks: config.tasks.len(),
                });
                let host = self.plugins.clone();
                tokio::spawn(async move { host.config_changed(config).await });
            }
            Change::Rejected {
                error,
                using_last_valid,
            } => {
                self.events.send(DaemonEvent::ConfigRejected {
                    root: display(path.parent().unwrap_or(path)),
                    file: display(path),
                    location: error.location(),
                    message: error.message.clone(),
                    line: error.line,
                    column: error.column,
                    using_last_valid,
                });
            }
        }
        Ok(loaded)
    }

    /// A run event, as the global stream tells it.
    fn publish(&self, run_id: u64, root: &Path, ev: &RunEvent) {
        if !self.events.has_subscribers() {
            return;
        }
        let g = match ev {
            RunEvent::RunStarted {
                file,
                tasks,
                iteration,
                ..
            } => DaemonEvent::RunStarted {
                run_id,
                root: display(root),
                file: file.clone(),
                tasks: tasks.clone(),
                iteration: *iteration,
            },
            RunEvent::TaskStarted { task, .. } => DaemonEvent::TaskStarted {
                run_id,
                task: task.clone(),
            },
            RunEvent::TaskCached { task } => DaemonEvent::TaskCached {
                run_id,
                task: task.clone(),
            },
            RunEvent::TaskFinished {
                task,
                status,
                exit_code,
                duration_ms,
                ..
            } => DaemonEvent::TaskFinished {
                run_id,
                task: task.clone(),
                status: *status,
                exit_code: *exit_code,
                duration_ms: *duration_ms,
            },
            RunEvent::RunFinished {
                status,
                exit_code,
                duration_ms,
                ..
            } => DaemonEvent::RunFinished {
                run_id,
                status: *status,
                exit_code: *exit_code,
                duration_ms: *duration_ms,
            },
            _ => return,
        };
        self.events.send(g);
    }
}

/// What the watcher reports, applied: a `.rush` file is re-checked (and
/// reloaded or rejected), a plugin's new files are swapped in.
async fn apply_changes(daemon: Weak<Daemon>, mut changes: mpsc::UnboundedReceiver<Key>) {
    // Files being reloaded, and whether they changed again meanwhile: one
    // reload task per file, however often it is saved.
    let reloading: Arc<Mutex<HashMap<PathBuf, bool>>> = Arc::default();
    while let Some(key) = changes.recv().await {
        let Some(d) = daemon.upgrade() else { return };
        match key {
            Key::Config(path) => {
                {
                    let mut r = reloading.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(again) = r.get_mut(&path) {
                        *again = true;
                        continue;
                    }
                    r.insert(path.clone(), false);
                }
                // Not awaited here: a file slow to parse must not hold up
                // the changes of other projects.
                let reloading = reloading.clone();
                tokio::spawn(async move {
                    loop {
                        let _ = d.load_path(&path).await;
                        let mut r = reloading.lock().unwrap_or_else(|p| p.into_inner());
                        match r.get_mut(&path) {
                            Some(again) if *again => *again = false,
                            _ => {
                                r.remove(&path);
                                return;
                            }
                        }
                    }
                });
            }
            Key::Plugin(root, name) => {
                let Some(config) = d.projects.config_of(&root) else {
                    continue;
                };
                let host = d.plugins.clone();
                tokio::spawn(async move { host.files_changed(&config, &name).await });
            }
            // Inputs are not reported: their events only clear clean keys.
            Key::Inputs(..) => {}
        }
    }
}

/// One client's run subscription, as the run loop sees it.
struct RunCtx {
    sink: SubscriptionSink,
    gone: Option<ClientGone>,
    /// Whether the client still listens.
    listening: bool,
    run_id: u64,
    /// The run's cancel level (a watch session's, for `run --watch`).
    cancel: watch::Sender<Cancel>,
    /// The client's descriptors, when it passed them and wants them used.
    stdio: Option<Arc<ClientStdio>>,
}

impl RunCtx {
    /// Send an event; a client that left cancels the run.
    async fn send(&mut self, ev: &RunEvent) {
        if self.listening && !send(&self.sink, &self.gone, ev).await {
            self.left();
        }
    }

    fn left(&mut self) {
        if self.listening {
            self.listening = false;
            tracing::info!(run = self.run_id, "client left: cancelling the run");
        }
        self.cancel
            .send_if_modified(|c| raise(c, Cancel::Interrupt));
    }

    fn cancelled(&self) -> bool {
        *self.cancel.borrow() != Cancel::No
    }
}

impl Api {
    /// Run `plan` once and return its `run_finished` (not sent). With
    /// `changes` (a watch session), a change during the run is collected
    /// into its `Vec` and, with [`OnChange::Restart`], cancels the run.
    async fn run_once(
        &self,
        ctx: &mut RunCtx,
        request: &RunRequest,
        loaded: Loaded,
        plan: Plan,
        iteration: Option<u32>,
        mut changes: Option<(&mut mpsc::UnboundedReceiver<PathBuf>, &mut Vec<PathBuf>)>,
    ) -> RunEvent {
        let run_id = ctx.run_id;
        let config = loaded.config;
        let root = config.root.clone();
        let jobs = request.jobs.max(1);
        // Tasks write to the client's own descriptors when it passed them
        // and they run one at a time; parallel output is prefixed by the
        // client, so it travels as events.
        let stdio = ctx
            .stdio
            .clone()
            .filter(|_| jobs == 1 || plan.tasks.len() == 1);
        let started = RunEvent::RunStarted {
            run_id,
            file: config.path.display().to_string(),
            tasks: plan.names(),
            jobs,
            inherit_stdio: stdio.is_some(),
            warning: loaded.warning,
            iteration,
        };
        let plugins = (!config.plugins.is_empty()).then(|| {
            RunPlugins::new(
                self.plugins.clone(),
                config.clone(),
                request.env.clone(),
                run_id,
            )
        });
        let spec = RunSpec {
            run_id,
            config,
            plan,
            plugins,
            env: request.env.clone(),
            jobs,
            force: request.force,
            stdio,
        };
        // The runner watches its own cancel level: the run's (Ctrl-C, the
        // client leaving, the daemon stopping) relayed, or a restart.
        let mut session = ctx.cancel.subscribe();
        let (inner_tx, inner_rx) = watch::channel(*session.borrow_and_update());
        // Small: each output event holds up to 64 KiB, and a client that
        // does not read must cost little per run (its tasks then block).
        let (events_tx, mut events_rx) = mpsc::channel::<RunEvent>(8);
        let up_to_date = self.up_to_date.clone();
        let runner = tokio::spawn(runner::run(spec, up_to_date, events_tx, inner_rx));

        self.publish(run_id, &root, &started);
        ctx.send(&started).await;
        let restart = request.on_change == OnChange::Restart;
        let mut restarting = false;
        loop {
            tokio::select! {
                ev = events_rx.recv() => {
                    let Some(ev) = ev else { break };
                    self.publish(run_id, &root, &ev);
                    ctx.send(&ev).await;
                }
                _ = client_left(&ctx.sink, &ctx.gone), if ctx.listening => ctx.left(),
                r = session.changed() => {
                    if r.is_err() {
                        break;
                    }
                    let level = *session.borrow_and_update();
                    inner_tx.send_if_modified(|c| raise(c, level));
                }
                Some(p) = next_change(&mut changes) => {
                    if let Some((_, pending)) = changes.as_mut()
                        && !pending.contains(&p)
                    {
                        pending.push(p);
                    }
                    if restart && !restarting {
                        restarting = true;
                        tracing::info!(run = run_id, "inputs changed: restarting the run");
                        inner_tx.send_if_modified(|c| raise(c, Cancel::Interrupt));
                    }
                }
            }
        }
        // The runner's channel closed: it is ending.
        while events_rx.recv().await.is_some() {}
        let finished = match runner.await {
            Ok(ev) => ev,
            Err(e) => {
                tracing::error!(run = run_id, "run failed: {e}");
                runner::finished_with_error(
                    run_id,
                    "internal error in the daemon; see `taskrush daemon logs`".into(),
                )
            }
        };
        let finished = if *self.stopping.borrow() {
            with_error(finished, "the daemon was stopped")
        } else {
            finished
        };
        tracing::info!(
            run = run_id,
            "run finished: {}",
            serde_json::to_string(&finished).unwrap_or_default()
        );
        self.publish(run_id, &root, &finished);
        crate::memory::release_soon();
        finished
    }

    /// `run --watch`: run, then run again on every change of the inputs
    /// until cancelled; returns the closing `watch_ended`.
    async fn watch_session(
        &self,
        ctx: &mut RunCtx,
        request: &RunRequest,
        loaded: Loaded,
        plan: Plan,
    ) -> RunEvent {
        let run_id = ctx.run_id;
        let root = loaded.config.root.clone();
        let filter = SharedFilter::new(WatchFilter::new(&loaded.config, &plan));
        let (_guard, mut rx) = self.watcher.watch_tree(root.clone(), filter.as_fn()).await;
        // Held for the whole session: a project in use is never forgotten
        // by the projects cache, so it keeps its last valid config.
        let mut _in_use = loaded.config.clone();
        let mut next = Some((loaded, plan));
        let mut iteration = 1u32;
        let mut exit_code = 0;
        loop {
            let mut pending = Vec::new();
            if let Some((loaded, plan)) = next.take() {
                let finished = self
                    .run_once(
                        ctx,
                        request,
                        loaded,
                        plan,
                        Some(iteration),
                        Some((&mut rx, &mut pending)),
                    )
                    .await;
                if let RunEvent::RunFinished { exit_code: c, .. } = &finished {
                    exit_code = *c;
                }
                ctx.send(&finished).await;
            }
            if ctx.cancelled() || !ctx.listening || *self.stopping.borrow() {
                break;
            }
            let action = if pending.is_empty() {
                let waiting = RunEvent::WatchWaiting {
                    run_id,
                    watching: filter.get().describe(),
                };
                ctx.send(&waiting).await;
                let mut cancel = ctx.cancel.subscribe();
                let first = tokio::select! {
                    p = rx.recv() => p,
                    _ = cancel.wait_for(|c| *c != Cancel::No) => None,
                    _ = client_left(&ctx.sink, &ctx.gone), if ctx.listening => {
                        ctx.left();
                        None
                    }
                };
                let Some(first) = first else { break };
                pending.push(first);
                "run"
            } else if request.on_change == OnChange::Restart {
                "restart"
            } else {
                "queue"
            };
            let pending = crate::run::watch_run::burst(pending, &mut rx).await;
            if ctx.cancelled() || !ctx.listening {
                break;
            }
            ctx.send(&RunEvent::WatchTriggered {
                run_id,
                paths: crate::run::watch_run::shown(&root, &pending),
                action: action.into(),
            })
            .await;
            iteration += 1;
            // The config as of now: a saved `.rush` applies to the re-run.
            let replanned = self
                .load(&request.cwd, request.file.as_deref())
                .await
                .and_then(|l| {
                    let p = planner::plan(&l.config, &request.tasks).map_err(config_error)?;
                    Ok((l, p))
                });
            match replanned {
                Ok((l, p)) => {
                    filter.set(WatchFilter::new(&l.config, &p));
                    _in_use = l.config.clone();
                    next = Some((l, p));
                }
                Err(e) => {
                    exit_code = taskrush_protocol::run::EXIT_ERROR;
                    ctx.send(&runner::finished_with_error(run_id, e.message().to_owned()))
                        .await;
                }
            }
        }
        let exit_code = if ctx.cancelled() {
            taskrush_protocol::run::EXIT_CANCELLED
        } else {
            exit_code
        };
        RunEvent::WatchEnded { run_id, exit_code }
    }

    /// A `run` whose first target is no task but a plugin's command is
    /// answered `PLUGIN_COMMAND`: the client sends `plugin_command` instead.
    async fn plugin_command_instead(
        &self,
        config: Arc<crate::config::rush_file::RushFile>,
        request: &RunRequest,
    ) -> Result<Arc<crate::config::rush_file::RushFile>, ErrorObjectOwned> {
        let Some(first) = request.tasks.first() else {
            return Ok(config);
        };
        if config.tasks.contains_key(first) || config.plugins.is_empty() {
            return Ok(config);
        }
        match self
            .plugins
            .command_owner(&config, first, &request.env)
            .await
        {
            Some(plugin) => Err(ErrorObjectOwned::owned(
                error::PLUGIN_COMMAND,
                format!("`{first}` is a command of plugin `{plugin}`, not a task"),
                Some(ErrorData {
                    plugin: Some(plugin),
                    command: Some(first.clone()),
                    hint: Some("send `plugin_command` to run it".into()),
                    ..Default::default()
                }),
            )),
            None => Ok(config),
        }
    }
}

fn raise(current: &mut Cancel, level: Cancel) -> bool {
    if level > *current {
        *current = level;
        true
    } else {
        false
    }
}

/// A config error as it crosses the socket.
pub(crate) fn config_error(e: ConfigError) -> ErrorObjectOwned {
    let data = ErrorData {
        path: Some(e.path.display().to_string()),
        line: e.line,
        column: e.column,
        task: None,
        hint: e.hint.clone(),
        ..Default::default()
    };
    let code = match e.kind {
        ConfigErrorKind::UnknownTask => error::TASK_NOT_FOUND,
        ConfigErrorKind::Invalid => error::CONFIG_ERROR,
    };
    ErrorObjectOwned::owned(code, e.message, Some(data))
}

/// A plugin failure as it crosses the socket.
pub(crate) fn plugin_error(f: PluginFailure) -> ErrorObjectOwned {
    let data = ErrorData {
        plugin: (!f.plugin.is_empty()).then(|| f.plugin.clone()),
        hint: f.hint.clone(),
        ..Default::default()
    };
    let message = if f.plugin.is_empty() || f.phase == Phase::Lookup {
        f.message.clone()
    } else {
        f.render()
    };
    ErrorObjectOwned::owned(error::PLUGIN_ERROR, message, Some(data))
}

/// The JSON-RPC face of the daemon (a newtype: the API trait is foreign).
#[derive(Clone)]
pub(crate) struct Api(pub Arc<Daemon>);

impl std::ops::Deref for Api {
    type Target = Daemon;
    fn deref(&self) -> &Daemon {
        &self.0
    }
}

#[async_trait]
impl TaskRushApiServer for Api {
    fn hello(&self, version: String, protocol: u32) -> Result<Hello, ErrorObjectOwned> {
        if protocol != PROTOCOL_VERSION {
            return Err(ErrorObjectOwned::owned(
                error::PROTOCOL_MISMATCH,
                format!(
                    "taskrushd {} speaks protocol {PROTOCOL_VERSION}, the client ({version}) speaks {protocol}",
                    self.options.version
                ),
                Some(ErrorData {
                    hint: Some("restart the daemon: `taskrush daemon restart`".into()),
                    ..Default::default()
                }),
            ));
        }
        Ok(Hello {
            version: self.options.version.clone(),
            protocol: PROTOCOL_VERSION,
            pid: std::process::id(),
        })
    }

    async fn run(
        &self,
        pending: PendingSubscriptionSink,
        ext: &Extensions,
        request: RunRequest,
    ) -> SubscriptionResult {
        if *self.stopping.borrow() {
            pending
                .reject(ErrorObjectOwned::owned(
                    error::SHUTTING_DOWN,
                    "the daemon is stopping",
                    None::<()>,
                ))
                .await;
            return Ok(());
        }
        let prepared = self
            .load(&request.cwd, request.file.as_deref())
            .await
            .and_then(|loaded| {
                if request.tasks.is_empty() {
                    return Err(ErrorObjectOwned::owned(
                        error::INVALID_PARAMS,
                        "no task to run",
                        None::<()>,
                    ));
                }
                Ok(loaded)
            });
        let prepared = match prepared {
            Ok(loaded) => self
                .plugin_command_instead(loaded.config.clone(), &request)
                .await
                .map(|_| loaded),
            Err(e) => Err(e),
        };
        let prepared = prepared.and_then(|loaded| {
            let plan = planner::plan(&loaded.config, &request.tasks).map_err(config_error)?;
            Ok((loaded, plan))
        });
        let (loaded, plan) = match prepared {
            Ok(p) => p,
            Err(e) => {
                pending.reject(e).await;
                return Ok(());
            }
        };
        let sink = pending.accept().await?;
        let run_id = self.next_run.fetch_add(1, Ordering::Relaxed);
        let (cancel_tx, _) = watch::channel(Cancel::No);
        self.runs_lock().insert(run_id, cancel_tx.clone());
        let mut ctx = RunCtx {
            sink,
            gone: ext.get::<ClientGone>().cloned(),
            listening: true,
            run_id,
            cancel: cancel_tx,
            stdio: ext
                .get::<Arc<ClientStdio>>()
                .filter(|_| request.inherit_stdio)
                .cloned(),
        };
        tracing::info!(run = run_id, tasks = ?request.tasks, file = %loaded.config.path.display(), watch = request.watch, "run started");
        let last = if request.watch {
            self.watch_session(&mut ctx, &request, loaded, plan).await
        } else {
            self.run_once(&mut ctx, &request, loaded, plan, None, None)
                .await
        };
        self.runs_lock().remove(&run_id);
        self.touch();
        if ctx.listening {
            send(&ctx.sink, &ctx.gone, &last).await;
        }
        Ok(())
    }

    fn cancel_run(&self, run_id: u64, force: Option<bool>) -> Result<bool, ErrorObjectOwned> {
        let level = if force.unwrap_or(false) {
            Cancel::Kill
        } else {
            Cancel::Interrupt
        };
        match self.runs_lock().get(&run_id) {
            Some(tx) => {
                tx.send_if_modified(|c| raise(c, level));
                Ok(true)
            }
            None => Err(ErrorObjectOwned::owned(
                error::RUN_NOT_FOUND,
                format!("no run with id {run_id}"),
                None::<()>,
            )),
        }
    }

    async fn list_tasks(
        &self,
        cwd: String,
        file: Option<String>,
        env: Option<BTreeMap<String, String>>,
    ) -> Result<TaskList, ErrorObjectOwned> {
        let loaded = self.load(&cwd, file.as_deref()).await?;
        let config = loaded.config;
        let commands = self.plugins.commands(&config, env.as_ref()).await;
        let tasks = config
            .tasks
            .values()
            .map(|t| TaskInfo {
                name: t.name.clone(),
                description: t.description.clone(),
                depends_on: t.depends_on.clone(),
                cached: !t.cache_files.is_empty(),
            })
            .collect();
        let tasks: Vec<TaskInfo> = tasks;
        Ok(TaskList {
            file: config.path.display().to_string(),
            name_width: tasks
                .iter()
                .map(|t| t.name.chars().count())
                .max()
                .unwrap_or(0),
            tasks,
            commands,
            warning: loaded.warning,
        })
    }

    fn daemon_status(&self) -> Result<DaemonStatus, ErrorObjectOwned> {
        Ok(DaemonStatus {
            pid: std::process::id(),
            version: self.options.version.clone(),
            protocol: PROTOCOL_VERSION,
            uptime_ms: self.started.elapsed().as_millis() as u64,
            socket: display(&self.paths.socket),
            log: display(&self.paths.log),
            projects: self.projects.roots(),
            runs: self.active_runs(),
            clients: self.clients.load(Ordering::Relaxed),
            rss_bytes: rss_bytes(),
            started_because: self.options.started_because.clone(),
            idle_timeout_s: self.options.idle_timeout.map(|d| d.as_secs()).unwrap_or(0),
            config_warnings: self.projects.warnings(),
            watched_dirs: self.watcher.watched(),
            watcher_error: self.watcher.problem(),
            cache_checks_watched: self.up_to_date.watched_checks(),
            cache_checks_full: self.up_to_date.full_checks(),
        })
    }

    async fn plugin_list(
        &self,
        cwd: String,
        file: Option<String>,
    ) -> Result<Vec<PluginStatus>, ErrorObjectOwned> {
        let config = self.load(&cwd, file.as_deref()).await?.config;
        Ok(self.plugins.list(&config))
    }

    async fn plugin_info(
        &self,
        cwd: String,
        file: Option<String>,
        name: String,
    ) -> Result<PluginDetails, ErrorObjectOwned> {
        let config = self.load(&cwd, file.as_deref()).await?.config;
        self.plugins
            .info(&config, &name)
            .ok_or_else(|| plugin_error(crate::plugin::not_declared(&config, &name)))
    }

    async fn plugin_restart(
        &self,
        cwd: String,
        file: Option<String>,
        name: String,
        env: Option<BTreeMap<String, String>>,
    ) -> Result<PluginStatus, ErrorObjectOwned> {
        let config = self.load(&cwd, file.as_deref()).await?.config;
        self.plugins
            .restart(&config, &name, &env.unwrap_or_default())
            .await
            .map_err(plugin_error)
    }

    async fn plugin_command(
        &self,
        cwd: String,
        file: Option<String>,
        name: String,
        args: Vec<String>,
        env: Option<BTreeMap<String, String>>,
    ) -> Result<CommandResult, ErrorObjectOwned> {
        let config = self.load(&cwd, file.as_deref()).await?.config;
        self.plugins
            .command(&config, &name, args, &cwd, &env.unwrap_or_default())
            .await
            .map_err(plugin_error)
    }

    async fn plugin_test(
        &self,
        path: String,
        env: Option<BTreeMap<String, String>>,
    ) -> Result<PluginTestReport, ErrorObjectOwned> {
        let dir = Path::new(&path);
        if !dir.is_absolute() {
            return Err(ErrorObjectOwned::owned(
                error::INVALID_PARAMS,
                format!("`path` must be an absolute path, got `{path}`"),
                None::<()>,
            ));
        }
        Ok(crate::plugin::conformance_test(dir, &env.unwrap_or_default()).await)
    }

    async fn events(&self, pending: PendingSubscriptionSink) -> SubscriptionResult {
        self.0
            .events
            .serve(pending, self.stopping.subscribe())
            .await;
        Ok(())
    }

    fn daemon_stop(&self) -> Result<bool, ErrorObjectOwned> {
        tracing::info!("stop requested by a client");
        self.stopping.send_replace(true);
        Ok(true)
    }
}

/// Resident set size from `/proc/self/statm` (0 where unavailable).
fn rss_bytes() -> u64 {
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

fn display(p: &Path) -> String {
    p.display().to_string()
}

fn with_error(ev: RunEvent, message: &str) -> RunEvent {
    match ev {
        RunEvent::RunFinished {
            run_id,
            status,
            exit_code,
            failed_task,
            duration_ms,
            error: None,
        } => RunEvent::RunFinished {
            run_id,
            status,
            exit_code,
            failed_task,
            duration_ms,
            error: Some(taskrush_protocol::run::RunError {
                message: message.into(),
                data: Default::default(),
            }),
        },
        other => other,
    }
}

/// The next changed path of a watch session; never for a plain run.
async fn next_change(
    changes: &mut Option<(&mut mpsc::UnboundedReceiver<PathBuf>, &mut Vec<PathBuf>)>,
) -> Option<PathBuf> {
    match changes {
        Some((rx, _)) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Send one event; false when the client is gone.
async fn send(sink: &SubscriptionSink, gone: &Option<ClientGone>, ev: &RunEvent) -> bool {
    let Ok(msg) = serde_json::value::to_raw_value(ev) else {
        return true;
    };
    tokio::select! {
        r = sink.send(msg) => r.is_ok(),
        _ = client_left(sink, gone) => false,
    }
}

/// Resolves when the client unsubscribed, disconnected or closed its side.
async fn client_left(sink: &SubscriptionSink, gone: &Option<ClientGone>) {
    match gone {
        Some(g) => tokio::select! { _ = sink.closed() => {}, _ = g.clone().wait() => {} },
        None => sink.closed().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `taskrush_protocol::method::ALL` is what hand-written clients (the
    /// CLI, scripts) and the docs rely on; the `#[rpc]` trait is what the
    /// daemon serves. They must name the same methods.
    #[tokio::test]
    async fn the_served_methods_are_exactly_the_listed_ones() {
        let options = DaemonOptions {
            version: "test".into(),
            started_because: "test".into(),
            idle_timeout: None,
            watch_inputs: false,
        };
        let daemon = Daemon::new(DaemonPaths::resolve(|_| None), options);
        let module = Api(daemon).into_rpc();
        let mut served: Vec<&str> = module.method_names().collect();
        served.sort_unstable();
        let mut listed: Vec<&str> = taskrush_protocol::method::ALL.to_vec();
        listed.sort_unstable();
        assert_eq!(served, listed);
    }
}
