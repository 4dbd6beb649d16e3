//! The JSON-RPC methods: the API trait implemented for the daemon.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use jsonrpsee::PendingSubscriptionSink;
use jsonrpsee::core::server::Extensions;
use jsonrpsee::core::{SubscriptionResult, async_trait};
use jsonrpsee::types::ErrorObjectOwned;
use taskrush_protocol::PROTOCOL_VERSION;
use taskrush_protocol::api::TaskRushApiServer;
use taskrush_protocol::daemon::{
    DaemonStatus, Hello, PluginDetails, PluginStatus, PluginTestReport, TaskInfo, TaskList,
};
use taskrush_protocol::error::{self, ErrorData};
use taskrush_protocol::plugin::CommandResult;
use taskrush_protocol::run::RunRequest;
use tokio::sync::watch;

use crate::run::planner;
use crate::run::runner::Cancel;
use crate::server::client_stdio::ClientStdio;
use crate::server::connection::ClientGone;

use super::daemon::{Daemon, raise, rss_bytes};
use super::sessions::{RunCtx, send};
use super::to_proto::{config_error, display, plugin_error};

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
