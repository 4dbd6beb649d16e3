//! Runs in progress as every client sees them: `list_runs`, and `attach`
//! to follow one that another connection started. Observers never slow a
//! run: its events reach them through a bounded broadcast, and one that
//! falls behind loses the oldest and is told how many (`observer_lagged`).

use std::sync::{Arc, Mutex};

use jsonrpsee::PendingSubscriptionSink;
use jsonrpsee::core::SubscriptionResult;
use jsonrpsee::types::ErrorObjectOwned;
use taskrush_protocol::daemon::{RunInfo, TaskState};
use taskrush_protocol::error;
use taskrush_protocol::events::RunClient;
use taskrush_protocol::run::RunEvent;
use tokio::sync::broadcast;

use super::daemon::Daemon;

/// Events kept for an observer before it lags (each output event holds at
/// most 64 KiB: at most 8 MiB per observed run).
pub(crate) const OBSERVER_CAPACITY: usize = 128;

/// One run in progress, as observers see it.
pub(crate) struct LiveRun {
    pub(super) run_id: u64,
    pub(super) root: String,
    pub(super) file: String,
    pub(super) client: RunClient,
    pub(super) token: Option<String>,
    watch: bool,
    state: Mutex<State>,
    observers: broadcast::Sender<RunEvent>,
}

struct State {
    tasks: Vec<TaskState>,
    started_ms: u64,
    iteration: Option<u32>,
    inherit_stdio: bool,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl LiveRun {
    pub(super) fn new(
        run_id: u64,
        config: &crate::config::rush_file::RushFile,
        client: RunClient,
        token: Option<String>,
        watch: bool,
    ) -> Arc<LiveRun> {
        Arc::new(LiveRun {
            run_id,
            root: config.root.display().to_string(),
            file: config.path.display().to_string(),
            client,
            token,
            watch,
            state: Mutex::new(State {
                tasks: Vec::new(),
                started_ms: now_ms(),
                iteration: None,
                inherit_stdio: false,
            }),
            observers: broadcast::channel(OBSERVER_CAPACITY).0,
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Note an event of the run (its tasks' states) and pass it on to the
    /// observers; never waits.
    pub(super) fn saw(&self, ev: &RunEvent) {
        let mut st = self.state();
        let set = |st: &mut State, task: &str, state: &str| {
            if let Some(t) = st.tasks.iter_mut().find(|t| t.task == task) {
                t.state = state.to_owned();
            }
        };
        match ev {
            RunEvent::RunStarted {
                tasks,
                inherit_stdio,
                iteration,
                ..
            } => {
                st.tasks = tasks
                    .iter()
                    .map(|t| TaskState {
                        task: t.clone(),
                        state: "waiting".into(),
                    })
                    .collect();
                st.started_ms = now_ms();
                st.iteration = *iteration;
                st.inherit_stdio = *inherit_stdio;
            }
            RunEvent::TaskStarted { task, .. } => set(&mut st, task, "running"),
            RunEvent::TaskCached { task, .. } => set(&mut st, task, "cached"),
            RunEvent::TaskFinished { task, status, .. } => {
                let s = serde_json::to_value(status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                set(&mut st, task, &s);
            }
            _ => {}
        }
        // Under the lock: an observer attaching now gets either this
        // event or a snapshot that includes it, never both nor neither.
        if self.observers.receiver_count() > 0 {
            let _ = self.observers.send(ev.clone());
        }
    }

    pub(super) fn info(&self) -> RunInfo {
        let st = self.state();
        self.info_of(&st)
    }

    fn info_of(&self, st: &State) -> RunInfo {
        RunInfo {
            run_id: self.run_id,
            root: self.root.clone(),
            file: self.file.clone(),
            tasks: st.tasks.clone(),
            started_ms: st.started_ms,
            client: self.client.clone(),
            token: self.token.clone(),
            inherit_stdio: st.inherit_stdio,
            watch: self.watch,
            iteration: st.iteration,
        }
    }

    /// A receiver of the run's events from now on, and the run as it is now.
    fn subscribe(&self) -> (broadcast::Receiver<RunEvent>, RunInfo) {
        let st = self.state();
        (self.observers.subscribe(), self.info_of(&st))
    }
}

/// The first event of an `attach`: the run as `list_runs` shows it.
#[derive(serde::Serialize)]
struct Attached<'a> {
    event: &'static str,
    #[serde(flatten)]
    info: &'a RunInfo,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<&'static str>,
}

/// An observer fell behind and lost `missed` events.
#[derive(serde::Serialize)]
struct Lagged {
    event: &'static str,
    run_id: u64,
    missed: u64,
}

/// What an `attached` event says about a run writing to its client's
/// terminal.
const NO_OUTPUT: &str =
    "the run's tasks write to its client's terminal: there is no output to attach to, only events";

impl Daemon {
    /// `list_runs`: every run in progress, oldest first.
    pub(super) fn list_runs(&self) -> Vec<RunInfo> {
        self.live_runs().values().map(|r| r.info()).collect()
    }

    /// `attach`: follow run `run_id` from now on.
    pub(super) async fn attach_session(
        &self,
        pending: PendingSubscriptionSink,
        run_id: u64,
    ) -> SubscriptionResult {
        let run = self.live_runs().get(&run_id).cloned();
        let Some(run) = run else {
            pending
                .reject(ErrorObjectOwned::owned(
                    error::RUN_NOT_FOUND,
                    format!("no run with id {run_id} in progress"),
                    Some(error::ErrorData {
                        hint: Some("`list_runs` lists the runs in progress".into()),
                        ..Default::default()
                    }),
                ))
                .await;
            return Ok(());
        };
        let (mut rx, info) = run.subscribe();
        // Only the receiver is kept: the stream ends with the run.
        drop(run);
        let sink = pending.accept().await?;
        let attached = Attached {
            event: "attached",
            note: info.inherit_stdio.then_some(NO_OUTPUT),
            info: &info,
        };
        let Ok(msg) = serde_json::value::to_raw_value(&attached) else {
            return Ok(());
        };
        if sink.send(msg).await.is_err() {
            return Ok(());
        }
        let mut stopping = self.stopping.subscribe();
        loop {
            let r = tokio::select! {
                r = rx.recv() => r,
                _ = sink.closed() => return Ok(()),
                _ = stopping.wait_for(|s| *s) => return Ok(()),
            };
            let msg = match r {
                Ok(ev) => serde_json::value::to_raw_value(&ev),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    serde_json::value::to_raw_value(&Lagged {
                        event: "observer_lagged",
                        run_id,
                        missed,
                    })
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            };
            let Ok(msg) = msg else { continue };
            if sink.send(msg).await.is_err() {
                return Ok(());
            }
        }
    }
}
