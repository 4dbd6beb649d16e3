//! Run and `run --watch` sessions: one client's run subscription, from the
//! accepted request to its last event.

use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

use jsonrpsee::core::SubscriptionResult;
use jsonrpsee::types::ErrorObjectOwned;
use jsonrpsee::{PendingSubscriptionSink, SubscriptionSink};
use taskrush_protocol::error::{self, ErrorData};
use taskrush_protocol::run::{OnChange, RunEvent, RunRequest};
use tokio::sync::{mpsc, watch};

use crate::config::projects::Loaded;
use crate::plugin::RunPlugins;
use crate::run::cancel::{Cancel, raise};
use crate::run::planner::{self, Plan};
use crate::run::runner::{self, RunSpec};
use crate::run::watch_run::{SharedFilter, WatchFilter};
use crate::server::client_stdio::ClientStdio;
use crate::server::connection::{ClientGone, ClientInfo};
use taskrush_protocol::events::{DaemonEvent, RunClient};

use super::live::LiveRun;

use super::daemon::Daemon;
use super::to_proto::{self, config_error};

impl Daemon {
    /// A run event, as the global stream tells it (`run_started` says
    /// which client started the run).
    fn publish(&self, run_id: u64, root: &Path, ev: &RunEvent, client: &RunClient) {
        if !self.events.has_subscribers() {
            return;
        }
        if let Some(mut g) = to_proto::daemon_event(run_id, root, ev) {
            if let DaemonEvent::RunStarted { client: c, .. } = &mut g {
                *c = Some(client.clone());
            }
            self.events.send(g);
        }
    }
}

/// Who sent a `run` or `dispatch`: what the connection put in the
/// request's extensions.
pub(super) struct Caller {
    pub(super) gone: Option<ClientGone>,
    pub(super) stdio: Option<Arc<ClientStdio>>,
    pub(super) client: Option<Arc<ClientInfo>>,
}

/// A run's token, reserved on its connection while the run's session
/// lives.
struct TokenGuard {
    client: Arc<ClientInfo>,
    token: String,
}

impl TokenGuard {
    /// Reserve `token` on this connection: an error names the run that
    /// holds it.
    fn reserve(client: &Arc<ClientInfo>, token: &str) -> Result<TokenGuard, ErrorObjectOwned> {
        let mut tokens = client.tokens.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(run) = tokens.get(token) {
            return Err(ErrorObjectOwned::owned(
                error::INVALID_PARAMS,
                format!("`token` `{token}` is already used by run {run} of this connection"),
                Some(ErrorData {
                    hint: Some("give each run in progress its own token".into()),
                    ..Default::default()
                }),
            ));
        }
        tokens.insert(token.to_owned(), 0);
        Ok(TokenGuard {
            client: client.clone(),
            token: token.to_owned(),
        })
    }

    fn set_run(&self, run_id: u64) {
        let mut tokens = self.client.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens.insert(self.token.clone(), run_id);
    }
}

impl Drop for TokenGuard {
    fn drop(&mut self) {
        let mut tokens = self.client.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens.remove(&self.token);
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
    /// The run as observers see it; every event passes through it.
    live: Arc<LiveRun>,
    /// The client's name for the run, added to each of its events.
    token: Option<String>,
}

impl RunCtx {
    /// Send an event (and show it to observers); a client that left
    /// cancels the run.
    async fn send(&mut self, ev: &RunEvent) {
        self.live.saw(ev);
        if self.listening && !send(&self.sink, &self.gone, ev, self.token.as_deref()).await {
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

impl Daemon {
    /// A `run` request: checked and planned (a failure rejects the
    /// subscription), then run once or as a `--watch` session until its
    /// last event.
    pub(super) async fn run_session(
        &self,
        pending: PendingSubscriptionSink,
        caller: Caller,
        request: RunRequest,
    ) -> SubscriptionResult {
        let Caller {
            gone,
            stdio,
            client,
        } = caller;
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
            let plan = planner::plan_for(&loaded.config, &request.tasks, request.no_deps)
                .map_err(config_error)?;
            Ok((loaded, plan))
        });
        let client = client.unwrap_or_default();
        let prepared = prepared.and_then(|p| {
            let guard = match &request.token {
                Some(token) => Some(TokenGuard::reserve(&client, token)?),
                None => None,
            };
            Ok((p, guard))
        });
        let ((loaded, plan), token_guard) = match prepared {
            Ok(p) => p,
            Err(e) => {
                pending.reject(e).await;
                return Ok(());
            }
        };
        let sink = pending.accept().await?;
        let (run, cancel_tx) = self.start_run();
        let run_id = run.id;
        if let Some(g) = &token_guard {
            g.set_run(run_id);
        }
        let live = LiveRun::new(
            run_id,
            &loaded.config,
            client.describe(),
            request.token.clone(),
            request.watch,
        );
        self.live_runs().insert(run_id, live.clone());
        let mut ctx = RunCtx {
            sink,
            gone,
            listening: true,
            run_id,
            cancel: cancel_tx,
            stdio: stdio.filter(|_| request.inherit_stdio),
            live,
            token: request.token.clone(),
        };
        tracing::info!(run = run_id, tasks = ?request.tasks, file = %loaded.config.path.display(), watch = request.watch, "run started");
        let last = if request.watch {
            self.watch_session(&mut ctx, &request, loaded, plan).await
        } else {
            self.run_once(&mut ctx, &request, loaded, plan, None, None)
                .await
        };
        ctx.live.saw(&last);
        drop(run);
        if ctx.listening {
            send(&ctx.sink, &ctx.gone, &last, ctx.token.as_deref()).await;
        }
        drop(token_guard);
        Ok(())
    }

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
        let client = ctx.live.client.clone();
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
            args: request
                .tasks
                .last()
                .filter(|_| !request.args.is_empty())
                .map(|task| (task.clone(), request.args.clone())),
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

        self.publish(run_id, &root, &started, &client);
        ctx.send(&started).await;
        let restart = request.on_change == OnChange::Restart;
        let mut restarting = false;
        loop {
            tokio::select! {
                ev = events_rx.recv() => {
                    let Some(ev) = ev else { break };
                    self.publish(run_id, &root, &ev, &client);
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
            to_proto::with_error(finished, "the daemon was stopped")
        } else {
            finished
        };
        tracing::info!(
            run = run_id,
            "run finished: {}",
            serde_json::to_string(&finished).unwrap_or_default()
        );
        self.publish(run_id, &root, &finished, &client);
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
                    let p = planner::plan_for(&l.config, &request.tasks, request.no_deps)
                        .map_err(config_error)?;
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

    /// `dispatch`: `taskrush NAME args…` in one request. A plugin command
    /// runs here and its result is the stream's one event; anything else
    /// is a run (or, with `command_only`, refused: the client shows its
    /// usage error).
    pub(super) async fn dispatch_session(
        &self,
        pending: PendingSubscriptionSink,
        caller: Caller,
        request: RunRequest,
        args: Vec<String>,
        command_only: bool,
    ) -> SubscriptionResult {
        let owner = match self.load(&request.cwd, request.file.as_deref()).await {
            Ok(loaded) => self
                .command_of(&loaded.config, &request)
                .await
                .map(|o| o.map(|plugin| (plugin, loaded.config))),
            Err(_) if !command_only => Ok(None),
            Err(e) => Err(e),
        };
        let (plugin, config) = match owner {
            Ok(Some(found)) => found,
            Ok(None) if !command_only => {
                return self.run_session(pending, caller, request).await;
            }
            Ok(None) => {
                let name = request.tasks.first().cloned().unwrap_or_default();
                pending
                    .reject(ErrorObjectOwned::owned(
                        error::INVALID_PARAMS,
                        format!("`{name}` is not a plugin command"),
                        Some(ErrorData {
                            command: Some(name),
                            ..Default::default()
                        }),
                    ))
                    .await;
                return Ok(());
            }
            Err(e) => {
                pending.reject(e).await;
                return Ok(());
            }
        };
        let command = request.tasks[0].clone();
        tracing::info!(command = %command, plugin = %plugin, "dispatch: a plugin command");
        let result = self
            .plugins
            .command(&config, &command, args, &request.cwd, &request.env)
            .await;
        match result {
            Ok(r) => {
                let sink = pending.accept().await?;
                let ev = RunEvent::CommandFinished {
                    plugin,
                    command,
                    exit_code: r.exit_code,
                    stdout: r.stdout,
                    stderr: r.stderr,
                };
                send(&sink, &caller.gone, &ev, request.token.as_deref()).await;
            }
            Err(f) => pending.reject(super::to_proto::plugin_error(f)).await,
        }
        Ok(())
    }

    /// The plugin whose command `request.tasks[0]` is, when it is no task:
    /// the owner found as [`crate::plugin::PluginHost::command_owner`]
    /// finds it (starting only plugins whose commands are unknown).
    async fn command_of(
        &self,
        config: &crate::config::rush_file::RushFile,
        request: &RunRequest,
    ) -> Result<Option<String>, ErrorObjectOwned> {
        let Some(first) = request.tasks.first() else {
            return Ok(None);
        };
        if config.tasks.contains_key(first) || config.plugins.is_empty() {
            return Ok(None);
        }
        match self
            .plugins
            .command_owner(config, first, &request.env)
            .await
        {
            Some(plugin) => Ok(Some(plugin)),
            None => match self.plugins.ungranted_command(config, first) {
                Some(f) => Err(super::to_proto::plugin_error(f)),
                None => Ok(None),
            },
        }
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
            None => match self.plugins.ungranted_command(&config, first) {
                Some(f) => Err(super::to_proto::plugin_error(f)),
                None => Ok(config),
            },
        }
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

/// Send one event (with the run's `token`, when the client gave one);
/// false when the client is gone.
async fn send(
    sink: &SubscriptionSink,
    gone: &Option<ClientGone>,
    ev: &RunEvent,
    token: Option<&str>,
) -> bool {
    /// The event's fields in their order, then `token`.
    #[derive(serde::Serialize)]
    struct WithToken<'a> {
        #[serde(flatten)]
        ev: &'a RunEvent,
        token: &'a str,
    }
    let msg = match token {
        None => serde_json::value::to_raw_value(ev),
        Some(token) => serde_json::value::to_raw_value(&WithToken { ev, token }),
    };
    let Ok(msg) = msg else {
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
