//! The daemon's state and its JSON-RPC API.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use jsonrpsee::core::server::Extensions;
use jsonrpsee::core::{SubscriptionResult, async_trait};
use jsonrpsee::types::ErrorObjectOwned;
use jsonrpsee::{PendingSubscriptionSink, SubscriptionSink};
use taskrush_protocol::api::TaskRushApiServer;
use taskrush_protocol::daemon::{DaemonStatus, Hello, TaskInfo, TaskList};
use taskrush_protocol::error::{self, ErrorData};
use taskrush_protocol::paths::DaemonPaths;
use taskrush_protocol::run::{RunEvent, RunRequest};
use taskrush_protocol::{PROTOCOL_VERSION, VERSION};
use tokio::sync::{mpsc, watch};

use crate::config_error::ConfigError;
use crate::connection::ClientGone;
use crate::file_hashes::FileHashes;
use crate::planner;
use crate::projects::Projects;
use crate::runner::{self, Cancel, RunSpec};

/// Shared state of the daemon; one per process.
pub struct Daemon {
    started: Instant,
    paths: DaemonPaths,
    projects: Projects,
    hashes: Arc<FileHashes>,
    runs: Mutex<HashMap<u64, watch::Sender<Cancel>>>,
    next_run: AtomicU64,
    /// Connected clients, maintained by the accept loop.
    pub clients: AtomicUsize,
    /// `true` once the daemon is stopping.
    pub stopping: watch::Sender<bool>,
}

impl Daemon {
    pub fn new(paths: DaemonPaths) -> Arc<Daemon> {
        Arc::new(Daemon {
            started: Instant::now(),
            paths,
            projects: Projects::default(),
            hashes: Arc::new(FileHashes::new()),
            runs: Mutex::new(HashMap::new()),
            next_run: AtomicU64::new(1),
            clients: AtomicUsize::new(0),
            stopping: watch::channel(false).0,
        })
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
    };
    let code = if e.line.is_none() && e.message.starts_with("no task named") {
        error::TASK_NOT_FOUND
    } else {
        error::CONFIG_ERROR
    };
    ErrorObjectOwned::owned(code, e.message, Some(data))
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
                    "taskrushd {VERSION} speaks protocol {PROTOCOL_VERSION}, the client ({version}) speaks {protocol}"
                ),
                Some(ErrorData {
                    hint: Some("restart the daemon: `taskrush daemon restart`".into()),
                    ..Default::default()
                }),
            ));
        }
        Ok(Hello {
            version: VERSION.to_owned(),
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
        let started = RunEvent::RunStarted {
            run_id,
            file: config.path.display().to_string(),
            tasks: plan.names(),
            jobs,
        };
        let spec = RunSpec {
            run_id,
            config,
            plan,
            env: request.env,
            jobs,
            force: request.force,
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
    ) -> Result<TaskList, ErrorObjectOwned> {
        let config = self.load(&cwd, file.as_deref())?;
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
        })
    }

    fn daemon_status(&self) -> Result<DaemonStatus, ErrorObjectOwned> {
        Ok(DaemonStatus {
            pid: std::process::id(),
            version: VERSION.to_owned(),
            protocol: PROTOCOL_VERSION,
            uptime_ms: self.started.elapsed().as_millis() as u64,
            socket: display(&self.paths.socket),
            log: display(&self.paths.log),
            projects: self.projects.roots(),
            runs: self.active_runs(),
            clients: self.clients.load(Ordering::Relaxed),
        })
    }

    fn daemon_stop(&self) -> Result<bool, ErrorObjectOwned> {
        tracing::info!("stop requested by a client");
        self.stopping.send_replace(true);
        Ok(true)
    }
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
