//! The JSON-RPC methods: the API trait implemented for the daemon.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use jsonrpsee::PendingSubscriptionSink;
use jsonrpsee::core::server::Extensions;
use jsonrpsee::core::{SubscriptionResult, async_trait};
use jsonrpsee::types::ErrorObjectOwned;
use taskrush_protocol::api::TaskRushApiServer;
use taskrush_protocol::daemon::{
    CachePruned, CacheStatus, DaemonStatus, Hello, PluginDetails, PluginGrant, PluginPending,
    PluginStatus, PluginTestReport, ProjectFound, ProjectsFound, RunExplained, RunInfo, TaskList,
    UiOpened,
};
use taskrush_protocol::editor::{PositionEncoding, RushCheck};
use taskrush_protocol::error::{self, ErrorData};
use taskrush_protocol::lockfile::{LockCheck, LockReport};
use taskrush_protocol::plugin::CommandResult;
use taskrush_protocol::registry::{Published, Receipt, Removed, SearchHit};
use taskrush_protocol::run::RunRequest;
use taskrush_protocol::{PROTOCOL_VERSION, capability};

use crate::run::cancel::Cancel;
use crate::server::client_stdio::ClientStdio;
use crate::server::connection::{ClientGone, ClientInfo};

use super::daemon::Daemon;
use super::sessions::Caller;
use super::to_proto::{self, plugin_error};

/// The JSON-RPC face of the daemon (a newtype: the API trait is foreign).
#[derive(Clone)]
pub(crate) struct Api(pub Arc<Daemon>);

impl std::ops::Deref for Api {
    type Target = Daemon;
    fn deref(&self) -> &Daemon {
        &self.0
    }
}

/// Who sent a request, from its extensions.
fn caller(ext: &Extensions) -> Caller {
    Caller {
        gone: ext.get::<ClientGone>().cloned(),
        stdio: ext.get::<Arc<ClientStdio>>().cloned(),
        client: ext.get::<Arc<ClientInfo>>().cloned(),
    }
}

#[async_trait]
impl TaskRushApiServer for Api {
    fn hello(
        &self,
        ext: &Extensions,
        version: String,
        protocol: u32,
        required: Option<Vec<String>>,
        optional: Option<Vec<String>>,
        client: Option<String>,
    ) -> Result<Hello, ErrorObjectOwned> {
        if let (Some(name), Some(info)) = (client, ext.get::<Arc<ClientInfo>>()) {
            *info.name.lock().unwrap_or_else(|p| p.into_inner()) = Some(name);
        }
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
        let missing: Vec<String> = required
            .unwrap_or_default()
            .into_iter()
            .filter(|name| !capability::has(name))
            .map(|name| format!("`{name}`"))
            .collect();
        if !missing.is_empty() {
            return Err(ErrorObjectOwned::owned(
                error::PROTOCOL_MISMATCH,
                format!(
                    "taskrushd {} (protocol {PROTOCOL_VERSION}.{}) lacks capabilities the client ({version}) requires: {}",
                    self.options.version,
                    capability::PROTOCOL_MINOR,
                    missing.join(", ")
                ),
                Some(ErrorData {
                    hint: Some(
                        "update TaskRush, then restart the daemon: `taskrush daemon restart`"
                            .into(),
                    ),
                    ..Default::default()
                }),
            ));
        }
        Ok(Hello {
            version: self.options.version.clone(),
            protocol: PROTOCOL_VERSION,
            minor: capability::PROTOCOL_MINOR,
            pid: std::process::id(),
            capabilities: capability::ALL.iter().map(|c| c.name.to_owned()).collect(),
            optional: optional.map(|names| {
                names
                    .into_iter()
                    .map(|name| {
                        let has = capability::has(&name);
                        (name, has)
                    })
                    .collect()
            }),
        })
    }

    async fn run(
        &self,
        pending: PendingSubscriptionSink,
        ext: &Extensions,
        request: RunRequest,
    ) -> SubscriptionResult {
        self.0.run_session(pending, caller(ext), request).await
    }

    async fn dispatch(
        &self,
        pending: PendingSubscriptionSink,
        ext: &Extensions,
        request: RunRequest,
        args: Vec<String>,
        command_only: Option<bool>,
    ) -> SubscriptionResult {
        self.0
            .dispatch_session(
                pending,
                caller(ext),
                request,
                args,
                command_only.unwrap_or(false),
            )
            .await
    }

    fn cancel_run(
        &self,
        ext: &Extensions,
        run_id: Option<u64>,
        force: Option<bool>,
        token: Option<String>,
    ) -> Result<bool, ErrorObjectOwned> {
        let level = if force.unwrap_or(false) {
            Cancel::Kill
        } else {
            Cancel::Interrupt
        };
        let run_id = match (run_id, token) {
            (Some(id), _) => id,
            (None, Some(token)) => {
                let found = ext.get::<Arc<ClientInfo>>().and_then(|c| {
                    c.tokens
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(&token)
                        .copied()
                });
                match found {
                    Some(id) if id != 0 => id,
                    _ => {
                        return Err(ErrorObjectOwned::owned(
                            error::RUN_NOT_FOUND,
                            format!("no run with token `{token}` in progress on this connection"),
                            None::<()>,
                        ));
                    }
                }
            }
            (None, None) => {
                return Err(ErrorObjectOwned::owned(
                    error::INVALID_PARAMS,
                    "`cancel_run` needs `run_id` or `token`",
                    None::<()>,
                ));
            }
        };
        if self.0.cancel_run(run_id, level) {
            Ok(true)
        } else {
            Err(ErrorObjectOwned::owned(
                error::RUN_NOT_FOUND,
                format!("no run with id {run_id}"),
                None::<()>,
            ))
        }
    }

    async fn check_rush(
        &self,
        path: String,
        text: String,
        position_encoding: Option<String>,
    ) -> Result<RushCheck, ErrorObjectOwned> {
        let invalid =
            |message: String| ErrorObjectOwned::owned(error::INVALID_PARAMS, message, None::<()>);
        let encoding = encoding_param(position_encoding.as_deref(), "check_rush")?;
        if !Path::new(&path).is_absolute() {
            return Err(invalid(format!(
                "`path` of `check_rush` must be absolute, got `{path}`"
            )));
        }
        let max = crate::config::whole_file::MAX_BYTES;
        if text.len() as u64 > max {
            return Err(invalid(format!(
                "the text of `{path}` is larger than {max} bytes, the most a `.rush` file may hold"
            )));
        }
        self.projects
            .check(path.into(), text, encoding)
            .await
            .ok_or_else(|| {
                ErrorObjectOwned::owned(
                    error::INTERNAL_ERROR,
                    "checking the text failed: its parse stopped",
                    None::<()>,
                )
            })
    }

    async fn list_tasks(
        &self,
        cwd: String,
        file: Option<String>,
        env: Option<BTreeMap<String, String>>,
        position_encoding: Option<String>,
    ) -> Result<TaskList, ErrorObjectOwned> {
        let encoding = encoding_param(position_encoding.as_deref(), "list_tasks")?;
        let loaded = match self.load(&cwd, file.as_deref()).await {
            Ok(loaded) => loaded,
            Err(e) if encoding != PositionEncoding::Utf32 => {
                return Err(
                    tokio::task::spawn_blocking(move || recount_error(e, encoding))
                        .await
                        .map_err(|e| {
                            ErrorObjectOwned::owned(
                                error::INTERNAL_ERROR,
                                format!("counting columns failed: {e}"),
                                None::<()>,
                            )
                        })?,
                );
            }
            Err(e) => return Err(e),
        };
        let config = loaded.config;
        let commands = self.plugins.commands(&config, env.as_ref()).await;
        let mut list = to_proto::task_list(&config, commands, loaded.warning);
        if encoding != PositionEncoding::Utf32 {
            list = tokio::task::spawn_blocking(move || {
                crate::config::check::recount_tasks(&mut list, encoding);
                list
            })
            .await
            .map_err(|e| {
                ErrorObjectOwned::owned(
                    error::INTERNAL_ERROR,
                    format!("counting columns failed: {e}"),
                    None::<()>,
                )
            })?;
        }
        Ok(list)
    }

    fn list_runs(&self) -> Result<Vec<RunInfo>, ErrorObjectOwned> {
        Ok(self.0.list_runs())
    }

    async fn attach(&self, pending: PendingSubscriptionSink, run_id: u64) -> SubscriptionResult {
        self.0.attach_session(pending, run_id).await
    }

    fn daemon_status(&self) -> Result<DaemonStatus, ErrorObjectOwned> {
        Ok(to_proto::daemon_status(&self.0))
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

    async fn plugin_pending(
        &self,
        cwd: String,
        file: Option<String>,
    ) -> Result<Vec<PluginPending>, ErrorObjectOwned> {
        let config = self.load(&cwd, file.as_deref()).await?.config;
        Ok(self.plugins.pending(&config))
    }

    async fn plugin_grant(
        &self,
        cwd: String,
        file: Option<String>,
        name: String,
        refuse: Option<bool>,
        env: Option<BTreeMap<String, String>>,
    ) -> Result<PluginGrant, ErrorObjectOwned> {
        let config = self.load(&cwd, file.as_deref()).await?.config;
        self.plugins
            .grant(
                &config,
                &name,
                refuse.unwrap_or(false),
                &env.unwrap_or_default(),
            )
            .await
            .map_err(plugin_error)
    }

    async fn plugin_revoke(
        &self,
        cwd: String,
        file: Option<String>,
        name: String,
    ) -> Result<bool, ErrorObjectOwned> {
        let config = self.load(&cwd, file.as_deref()).await?.config;
        self.plugins.revoke(&config, &name).map_err(plugin_error)
    }

    async fn plugin_disable(
        &self,
        cwd: String,
        file: Option<String>,
        name: String,
        disable: bool,
    ) -> Result<bool, ErrorObjectOwned> {
        let config = self.load(&cwd, file.as_deref()).await?.config;
        self.plugins
            .set_disabled(&config, &name, disable)
            .map_err(plugin_error)
    }

    async fn metrics(
        &self,
        cwd: Option<String>,
        file: Option<String>,
    ) -> Result<taskrush_protocol::metrics::Metrics, ErrorObjectOwned> {
        let root = match cwd {
            Some(cwd) => Some(self.load(&cwd, file.as_deref()).await?.config.root.clone()),
            None => None,
        };
        // Reads `/proc` for each live plugin process.
        tokio::task::spawn_blocking(move || crate::metrics::snapshot(root.as_deref()))
            .await
            .map_err(|e| {
                ErrorObjectOwned::owned(
                    error::INTERNAL_ERROR,
                    format!("cannot read the metrics: {e}"),
                    None::<()>,
                )
            })
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

    fn plugin_logs(
        &self,
        name: String,
    ) -> Result<Vec<taskrush_protocol::daemon::PluginLogLine>, ErrorObjectOwned> {
        Ok(crate::plugin::log_lines(&name))
    }

    async fn plugin_logs_follow(
        &self,
        pending: PendingSubscriptionSink,
        name: String,
    ) -> SubscriptionResult {
        crate::plugin::follow_logs(name, pending, self.stopping.subscribe()).await;
        Ok(())
    }

    async fn plugin_search(&self, text: String) -> Result<Vec<SearchHit>, ErrorObjectOwned> {
        blocking_registry(move || crate::registry::search(&text)).await
    }

    async fn plugin_install(
        &self,
        spec: String,
        allow_unsigned: Option<bool>,
        cwd: Option<String>,
        file: Option<String>,
        progress_id: Option<String>,
    ) -> Result<Receipt, ErrorObjectOwned> {
        let progress = self.progress(progress_id);
        // The project the install is run in, if any: its lock is written.
        // No `.rush` there (or one that does not load): nothing is locked.
        let project = match &cwd {
            Some(cwd)
                if Path::new(cwd).is_absolute()
                    && self
                        .projects
                        .locate(Path::new(cwd), file.as_deref())
                        .is_ok() =>
            {
                self.load(cwd, file.as_deref()).await.ok().map(|l| l.config)
            }
            _ => None,
        };
        blocking_registry(move || {
            crate::registry::install(
                &spec,
                allow_unsigned.unwrap_or(false),
                project.as_deref(),
                &progress,
            )
        })
        .await
    }

    async fn plugin_installed(&self) -> Result<Vec<Receipt>, ErrorObjectOwned> {
        blocking_registry(crate::registry::installed).await
    }

    async fn plugin_remove(
        &self,
        name: String,
        version: Option<String>,
    ) -> Result<Removed, ErrorObjectOwned> {
        blocking_registry(move || crate::registry::remove(&name, version.as_deref())).await
    }

    async fn plugin_publish(
        &self,
        path: String,
        registry: String,
        key: String,
        platform: Option<String>,
        expires_days: Option<u64>,
        revoke: Option<Vec<String>>,
    ) -> Result<Published, ErrorObjectOwned> {
        for (field, p) in [("path", &path), ("registry", &registry), ("key", &key)] {
            if !Path::new(p).is_absolute() {
                return Err(ErrorObjectOwned::owned(
                    error::INVALID_PARAMS,
                    format!("`{field}` must be an absolute path, got `{p}`"),
                    None::<()>,
                ));
            }
        }
        blocking_registry(move || {
            crate::registry::publish(crate::registry::Publish {
                path: Path::new(&path),
                registry: Path::new(&registry),
                key: Path::new(&key),
                platform: platform.as_deref(),
                expires_days: expires_days.unwrap_or(30),
                revoke: &revoke.unwrap_or_default(),
            })
        })
        .await
    }

    async fn plugin_sync(
        &self,
        cwd: String,
        file: Option<String>,
        locked: Option<bool>,
        progress_id: Option<String>,
    ) -> Result<LockReport, ErrorObjectOwned> {
        let rush = self.load(&cwd, file.as_deref()).await?.config;
        let locked = locked.unwrap_or(false);
        let progress = self.progress(progress_id);
        blocking_registry(move || crate::registry::lock::sync(&rush, locked, &progress)).await
    }

    async fn plugin_update(
        &self,
        cwd: String,
        file: Option<String>,
        name: Option<String>,
        locked: Option<bool>,
        progress_id: Option<String>,
    ) -> Result<LockReport, ErrorObjectOwned> {
        let rush = self.load(&cwd, file.as_deref()).await?.config;
        let locked = locked.unwrap_or(false);
        let progress = self.progress(progress_id);
        blocking_registry(move || {
            crate::registry::lock::update(&rush, name.as_deref(), locked, &progress)
        })
        .await
    }

    async fn plugin_lock_check(
        &self,
        cwd: String,
        file: Option<String>,
    ) -> Result<LockCheck, ErrorObjectOwned> {
        let rush = self.load(&cwd, file.as_deref()).await?.config;
        blocking_registry(move || crate::registry::lock::check(&rush)).await
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

    async fn cache_status(&self) -> Result<CacheStatus, ErrorObjectOwned> {
        let store = self.up_to_date.outputs.clone();
        let status = tokio::task::spawn_blocking(move || store.status())
            .await
            .unwrap_or_default();
        let store = &self.up_to_date.outputs;
        let (hits, restored_files) = store.counters();
        Ok(CacheStatus {
            dir: store.dir().display().to_string(),
            bytes: status.bytes,
            limit_bytes: store.limit(),
            entries: status.entries,
            blobs: status.blobs,
            hits,
            restored_files,
        })
    }

    async fn cache_prune(&self, max_bytes: Option<u64>) -> Result<CachePruned, ErrorObjectOwned> {
        let store = self.up_to_date.outputs.clone();
        let limit = max_bytes.unwrap_or(0);
        let (entries, bytes) = tokio::task::spawn_blocking(move || store.evict_to(limit))
            .await
            .unwrap_or_default();
        tracing::info!(entries, bytes, "output store pruned by a client");
        Ok(CachePruned { entries, bytes })
    }

    async fn find_projects(
        &self,
        folder: String,
        max_depth: Option<usize>,
        max_count: Option<usize>,
        parse: Option<bool>,
    ) -> Result<ProjectsFound, ErrorObjectOwned> {
        let dir = Path::new(&folder);
        if !dir.is_absolute() {
            return Err(ErrorObjectOwned::owned(
                error::INVALID_PARAMS,
                format!("`folder` must be an absolute path, got `{folder}`"),
                None::<()>,
            ));
        }
        let dir = match dir.canonicalize() {
            Ok(d) if d.is_dir() => d,
            Ok(_) => {
                return Err(ErrorObjectOwned::owned(
                    error::INVALID_PARAMS,
                    format!("`folder` `{folder}` is not a directory"),
                    None::<()>,
                ));
            }
            Err(e) => {
                return Err(ErrorObjectOwned::owned(
                    error::INVALID_PARAMS,
                    format!("`folder` `{folder}` cannot be used: {e}"),
                    None::<()>,
                ));
            }
        };
        let depth = max_depth.unwrap_or(8).min(64);
        let count = max_count.unwrap_or(1000).clamp(1, 100_000);
        let (files, truncated) = tokio::task::spawn_blocking(move || {
            crate::config::discover::find_under(&dir, depth, count)
        })
        .await
        .unwrap_or_default();
        let mut projects = Vec::with_capacity(files.len());
        for file in files {
            let root = file.parent().unwrap_or(&file).to_path_buf();
            let mut found = ProjectFound {
                root: root.display().to_string(),
                file: file.display().to_string(),
                ok: None,
                tasks: None,
                error: None,
            };
            if parse.unwrap_or(false) {
                let name = file.file_name().and_then(|n| n.to_str()).unwrap_or(".rush");
                match self.load(&found.root, Some(name)).await {
                    Ok(loaded) => {
                        found.ok = Some(true);
                        found.tasks = Some(loaded.config.tasks.len());
                    }
                    Err(e) => {
                        found.ok = Some(false);
                        found.error = Some(taskrush_protocol::error::WireError {
                            code: e.code(),
                            message: e.message().to_owned(),
                            data: e.data().and_then(|d| serde_json::from_str(d.get()).ok()),
                        });
                    }
                }
            }
            projects.push(found);
        }
        Ok(ProjectsFound {
            projects,
            truncated,
        })
    }

    async fn ui_open(&self) -> Result<UiOpened, ErrorObjectOwned> {
        crate::ui::open(&self.0).await.map_err(|e| {
            ErrorObjectOwned::owned(
                error::INTERNAL_ERROR,
                format!("cannot serve the plugin manager page on 127.0.0.1: {e}"),
                None::<()>,
            )
        })
    }

    async fn explain_run(&self, request: RunRequest) -> Result<RunExplained, ErrorObjectOwned> {
        if request.tasks.is_empty() {
            return Err(ErrorObjectOwned::owned(
                error::INVALID_PARAMS,
                "no task to explain",
                None::<()>,
            ));
        }
        let config = self
            .load(&request.cwd, request.file.as_deref())
            .await?
            .config;
        let plan = crate::run::planner::plan_for(&config, &request.tasks, request.no_deps)
            .map_err(to_proto::config_error)?;
        let tasks = crate::run::explain::explain(
            &config,
            &plan,
            &request.env,
            request.force,
            request
                .tasks
                .last()
                .filter(|_| !request.args.is_empty())
                .map(|task| (task.clone(), request.args.clone()))
                .as_ref(),
            &self.up_to_date,
        )
        .await;
        Ok(RunExplained {
            file: config.path.display().to_string(),
            tasks,
        })
    }
}

/// The `position_encoding` parameter of `method`.
fn encoding_param(name: Option<&str>, method: &str) -> Result<PositionEncoding, ErrorObjectOwned> {
    match name {
        None => Ok(PositionEncoding::default()),
        Some(name) => PositionEncoding::from_name(name).ok_or_else(|| {
            ErrorObjectOwned::owned(
                error::INVALID_PARAMS,
                format!("unknown `position_encoding` `{name}` in `{method}`"),
                Some(ErrorData {
                    hint: Some("use `utf-32` (characters), `utf-16` or `utf-8`".into()),
                    ..Default::default()
                }),
            )
        }),
    }
}

/// A config error with its column counted in `encoding` (blocking: it
/// reads the file).
fn recount_error(e: ErrorObjectOwned, encoding: PositionEncoding) -> ErrorObjectOwned {
    let data = e
        .data()
        .and_then(|d| serde_json::from_str::<ErrorData>(d.get()).ok());
    let Some(mut data) = data else { return e };
    let (Some(path), Some(line), Some(column)) = (&data.path, data.line, data.column) else {
        return e;
    };
    data.column = Some(crate::config::check::recount(
        Path::new(path),
        line,
        column,
        encoding,
    ));
    ErrorObjectOwned::owned(e.code(), e.message().to_owned(), Some(data))
}

/// Run a registry operation on a blocking thread (file and network I/O);
/// its error becomes a `REGISTRY_ERROR`.
impl Daemon {
    /// Download progress of a registry request, on the event bus.
    fn progress(&self, id: Option<String>) -> crate::registry::Progress {
        crate::registry::Progress {
            events: Some(self.events.clone()),
            id,
        }
    }
}

async fn blocking_registry<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, ErrorObjectOwned> {
    let fail = |m: String| ErrorObjectOwned::owned(error::REGISTRY_ERROR, m, None::<()>);
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| fail(format!("the registry operation failed: {e}")))?
        .map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::DaemonOptions;
    use taskrush_protocol::paths::DaemonPaths;

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
