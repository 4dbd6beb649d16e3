//! The daemon's state and its JSON-RPC API.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
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
use taskrush_protocol::paths::DaemonPaths;
use taskrush_protocol::plugin::CommandResult;
use taskrush_protocol::run::{RunEvent, RunRequest};
use tokio::sync::{mpsc, watch};

use crate::client_stdio::ClientStdio;
use crate::config_error::ConfigError;
use crate::connection::ClientGone;
use crate::file_hashes::FileHashes;
use crate::planner;
use crate::plugin_host::{PluginFailure, PluginHost, RunPlugins};
use crate::projects::Projects;
use crate::runner::{self, Cancel, RunSpec};

/// Shared state of the daemon; one per process.
pub struct Daemon {
    started: Instant,
    paths: DaemonPaths,
    projects: Projects,
    hashes: Arc<FileHashes>,
    /// Every plugin process, per project.
    pub plugins: Arc<PluginHost>,
    runs: Mutex<HashMap<u64, watch::Sender<Cancel>>>,
    next_run: AtomicU64,
    /// Connected clients, maintained by the accept loop.
    pub clients: AtomicUsize,
    /// `true` once the daemon is stopping.
    pub stopping: watch::Sender<bool>,
    pub options: DaemonOptions,
    /// When the last client left or the last run ended.
    last_active: Mutex<Instant>,
}

/// How this daemon was started.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// The version announced by `hello` (TaskRush's own, unless a test
    /// pretends to be another version).
    pub version: String,
    /// Why it was started, for `daemon status`.
    pub started_because: String,
    /// Exit after this long without clients and runs.
    pub idle_timeout: Option<std::time::Duration>,
}

impl Daemon {
    pub fn new(paths: DaemonPaths, options: DaemonOptions) -> Arc<Daemon> {
        Arc::new(Daemon {
            options,
            last_active: Mutex::new(Instant::now()),
            started: Instant::now(),
            paths,
            projects: Projects::default(),
            hashes: Arc::new(FileHashes::new()),
            plugins: PluginHost::new(),
            runs: Mutex::new(HashMap::new()),
            next_run: AtomicU64::new(1),
            clients: AtomicUsize::new(0),
            stopping: watch::channel(false).0,
        })
    }

    /// Note that a client left or a run ended (for idle shutdown).
    pub fn touch(&self) {
        *self.last_active.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    /// How long the daemon has had no client and no run, if it has none.
    pub fn idle_for(&self) -> Option<std::time::Duration> {
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
    pub fn active_runs(&self) -> usize {
        self.runs_lock().len()
    }

    /// Cancel every run (daemon shutdown).
    pub fn cancel_all(&self, level: Cancel) {
        for tx in self.runs_lock().values() {
            tx.send_if_modified(|c| raise(c, level));
        }
    }

    fn runs_lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, watch::Sender<Cancel>>> {
        // Single inserts and removes: a poisoned map is still consistent.
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn load(
        &self,
        cwd: &str,
        file: Option<&str>,
    ) -> Result<Arc<crate::rush_file::RushFile>, ErrorObjectOwned> {
        let cwd = Path::new(cwd);
        if !cwd.is_absolute() {
            return Err(ErrorObjectOwned::owned(
                error::INVALID_PARAMS,
                format!("`cwd` must be an absolute path, got `{}`", cwd.display()),
                None::<()>,
            ));
        }
        let path = Projects::locate(cwd, file).map_err(config_error)?;
        self.projects.load(&path).map_err(config_error)
    }
}

impl Api {
    /// A `run` whose first target is no task but a plugin's command is
    /// answered `PLUGIN_COMMAND`: the client sends `plugin_command` instead.
    async fn plugin_command_instead(
        &self,
        config: Arc<crate::rush_file::RushFile>,
        request: &RunRequest,
    ) -> Result<Arc<crate::rush_file::RushFile>, ErrorObjectOwned> {
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
pub fn config_error(e: ConfigError) -> ErrorObjectOwned {
    let data = ErrorData {
        path: Some(e.path.display().to_string()),
        line: e.line,
        column: e.column,
        task: None,
        hint: e.hint.clone(),
        ..Default::default()
    };
    let code = if e.line.is_none() && e.message.starts_with("unknown task") {
        error::TASK_NOT_FOUND
    } else {
        error::CONFIG_ERROR
    };
    ErrorObjectOwned::owned(code, e.message, Some(data))
}

/// A plugin failure as it crosses the socket.
pub fn plugin_error(f: PluginFailure) -> ErrorObjectOwned {
    let data = ErrorData {
        plugin: (!f.plugin.is_empty()).then(|| f.plugin.clone()),
        hint: f.hint.clone(),
        ..Default::default()
    };
    let message = if f.plugin.is_empty() || f.phase == "lookup" {
        f.message.clone()
    } else {
        f.render()
    };
    ErrorObjectOwned::owned(error::PLUGIN_ERROR, message, Some(data))
}

/// The JSON-RPC face of the daemon (a newtype: the API trait is foreign).
#[derive(Clone)]
pub struct Api(pub Arc<Daemon>);

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
            .and_then(|config| {
                if request.tasks.is_empty() {
                    return Err(ErrorObjectOwned::owned(
                        error::INVALID_PARAMS,
                        "no task to run",
                        None::<()>,
                    ));
                }
                Ok(config)
            });
        let prepared = match prepared {
            Ok(config) => self.plugin_command_instead(config, &request).await,
            Err(e) => Err(e),
        };
        let prepared = prepared.and_then(|config| {
            let plan = planner::plan(&config, &request.tasks).map_err(config_error)?;
            Ok((config, plan))
        });
        let (config, plan) = match prepared {
            Ok(p) => p,
            Err(e) => {
                pending.reject(e).await;
                return Ok(());
            }
        };
        let sink = pending.accept().await?;
        let run_id = self.next_run.fetch_add(1, Ordering::Relaxed);
        let (cancel_tx, cancel_rx) = watch::channel(Cancel::No);
        self.runs_lock().insert(run_id, cancel_tx.clone());
        let gone = ext.get::<ClientGone>().cloned();
        tracing::info!(run = run_id, tasks = ?request.tasks, file = %config.path.display(), "run started");

        let jobs = request.jobs.max(1);
        // Tasks write to the client's own descriptors when it passed them
        // and they run one at a time; parallel output is prefixed by the
        // client, so it travels as events.
        let stdio = match ext.get::<Arc<ClientStdio>>() {
            Some(s) if request.inherit_stdio && (jobs == 1 || plan.tasks.len() == 1) => {
                Some(s.clone())
            }
            _ => None,
        };
        let started = RunEvent::RunStarted {
            run_id,
            file: config.path.display().to_string(),
            tasks: plan.names(),
            jobs,
            inherit_stdio: stdio.is_some(),
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
            env: request.env,
            jobs,
            force: request.force,
            stdio,
        };
        let (events_tx, mut events_rx) = mpsc::channel::<RunEvent>(64);
        let hashes = self.hashes.clone();
        let runner = tokio::spawn(runner::run(spec, hashes, events_tx, cancel_rx));

        let mut listening = send(&sink, &gone, &started).await;
        if !listening {
            cancel_tx.send_if_modified(|c| raise(c, Cancel::Interrupt));
        }
        loop {
            tokio::select! {
                ev = events_rx.recv() => {
                    let Some(ev) = ev else { break };
                    if listening && !send(&sink, &gone, &ev).await {
                        listening = false;
                        tracing::info!(run = run_id, "client left: cancelling the run");
                        cancel_tx.send_if_modified(|c| raise(c, Cancel::Interrupt));
                    }
                }
                _ = client_left(&sink, &gone), if listening => {
                    listening = false;
                    tracing::info!(run = run_id, "client left: cancelling the run");
                    cancel_tx.send_if_modified(|c| raise(c, Cancel::Interrupt));
                }
            }
        }
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
        self.runs_lock().remove(&run_id);
        self.touch();
        if listening {
            send(&sink, &gone, &finished).await;
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
        let config = self.load(&cwd, file.as_deref())?;
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
        Ok(TaskList {
            file: config.path.display().to_string(),
            tasks,
            commands,
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
        })
    }

    async fn plugin_list(
        &self,
        cwd: String,
        file: Option<String>,
    ) -> Result<Vec<PluginStatus>, ErrorObjectOwned> {
        let config = self.load(&cwd, file.as_deref())?;
        Ok(self.plugins.list(&config))
    }

    async fn plugin_info(
        &self,
        cwd: String,
        file: Option<String>,
        name: String,
    ) -> Result<PluginDetails, ErrorObjectOwned> {
        let config = self.load(&cwd, file.as_deref())?;
        self.plugins
            .info(&config, &name)
            .ok_or_else(|| plugin_error(crate::plugin_host::not_declared(&config, &name)))
    }

    async fn plugin_restart(
        &self,
        cwd: String,
        file: Option<String>,
        name: String,
        env: Option<BTreeMap<String, String>>,
    ) -> Result<PluginStatus, ErrorObjectOwned> {
        let config = self.load(&cwd, file.as_deref())?;
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
        let config = self.load(&cwd, file.as_deref())?;
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
        Ok(crate::plugin_conformance::test(dir, &env.unwrap_or_default()).await)
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
