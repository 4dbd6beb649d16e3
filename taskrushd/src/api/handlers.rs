//! The JSON-RPC methods: the API trait implemented for the daemon.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use jsonrpsee::PendingSubscriptionSink;
use jsonrpsee::core::server::Extensions;
use jsonrpsee::core::{SubscriptionResult, async_trait};
use jsonrpsee::types::ErrorObjectOwned;
use taskrush_protocol::PROTOCOL_VERSION;
use taskrush_protocol::api::TaskRushApiServer;
use taskrush_protocol::daemon::{
    CachePruned, CacheStatus, DaemonStatus, Hello, PluginDetails, PluginGrant, PluginPending,
    PluginStatus, PluginTestReport, RunExplained, TaskList,
};
use taskrush_protocol::editor::{PositionEncoding, RushCheck};
use taskrush_protocol::error::{self, ErrorData};
use taskrush_protocol::plugin::CommandResult;
use taskrush_protocol::run::RunRequest;

use crate::run::cancel::Cancel;
use crate::server::client_stdio::ClientStdio;
use crate::server::connection::ClientGone;

use super::daemon::Daemon;
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
        let gone = ext.get::<ClientGone>().cloned();
        let stdio = ext.get::<Arc<ClientStdio>>().cloned();
        self.0.run_session(pending, gone, stdio, request).await
    }

    async fn dispatch(
        &self,
        pending: PendingSubscriptionSink,
        ext: &Extensions,
        request: RunRequest,
        args: Vec<String>,
        command_only: Option<bool>,
    ) -> SubscriptionResult {
        let gone = ext.get::<ClientGone>().cloned();
        let stdio = ext.get::<Arc<ClientStdio>>().cloned();
        self.0
            .dispatch_session(
                pending,
                gone,
                stdio,
                request,
                args,
                command_only.unwrap_or(false),
            )
            .await
    }

    fn cancel_run(&self, run_id: u64, force: Option<bool>) -> Result<bool, ErrorObjectOwned> {
        let level = if force.unwrap_or(false) {
            Cancel::Kill
        } else {
            Cancel::Interrupt
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
        let plan =
            crate::run::planner::plan(&config, &request.tasks).map_err(to_proto::config_error)?;
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
