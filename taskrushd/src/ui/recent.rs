//! The runs the page lists: the last [`KEPT`] runs seen on the event
//! stream since the page's server started (runs in progress come from
//! `list_runs`). Fed by events only: nothing is polled.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use taskrush_protocol::events::DaemonEvent;
use tokio::sync::broadcast::error::RecvError;

use super::server::Server;
use crate::api::Daemon;

/// Runs kept at most.
pub(super) const KEPT: usize = 50;

/// One run as the page shows it.
#[derive(Debug, Clone, Serialize)]
pub(super) struct RecentRun {
    run_id: u64,
    root: String,
    started_ms: u64,
    /// `running` until the run finishes, then its status.
    status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_ms: Option<u64>,
    tasks: Vec<RecentTask>,
}

#[derive(Debug, Clone, Serialize)]
struct RecentTask {
    task: String,
    state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_ms: Option<u64>,
}

#[derive(Default)]
pub(crate) struct Recent(Mutex<VecDeque<RecentRun>>);

impl Recent {
    /// Newest first.
    pub(super) fn list(&self) -> Vec<RecentRun> {
        let runs = self.0.lock().unwrap_or_else(|p| p.into_inner());
        runs.iter().rev().cloned().collect()
    }

    fn apply(&self, ev: &DaemonEvent) {
        let mut runs = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match ev {
            DaemonEvent::RunStarted {
                run_id,
                root,
                tasks,
                ..
            } => {
                runs.retain(|r| r.run_id != *run_id);
                if runs.len() >= KEPT {
                    runs.pop_front();
                }
                runs.push_back(RecentRun {
                    run_id: *run_id,
                    root: root.clone(),
                    started_ms: now_ms(),
                    status: "running".into(),
                    duration_ms: None,
                    tasks: tasks
                        .iter()
                        .map(|t| RecentTask {
                            task: t.clone(),
                            state: "waiting".into(),
                            duration_ms: None,
                        })
                        .collect(),
                });
            }
            DaemonEvent::TaskStarted { run_id, task } => {
                set(&mut runs, *run_id, task, "running", None);
            }
            DaemonEvent::TaskCached { run_id, task } => {
                set(&mut runs, *run_id, task, "cached", None);
            }
            DaemonEvent::TaskFinished {
                run_id,
                task,
                status,
                duration_ms,
                ..
            } => {
                let state = serde_json::to_value(status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_else(|| "finished".into());
                set(&mut runs, *run_id, task, &state, Some(*duration_ms));
            }
            DaemonEvent::RunFinished {
                run_id,
                status,
                duration_ms,
                ..
            } => {
                if let Some(run) = runs.iter_mut().rev().find(|r| r.run_id == *run_id) {
                    run.status = serde_json::to_value(status)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_else(|| "finished".into());
                    run.duration_ms = Some(*duration_ms);
                }
            }
            _ => {}
        }
    }
}

/// Set a task's state in a kept run (added when the plan did not name it).
fn set(
    runs: &mut VecDeque<RecentRun>,
    run_id: u64,
    task: &str,
    state: &str,
    duration_ms: Option<u64>,
) {
    let Some(run) = runs.iter_mut().rev().find(|r| r.run_id == run_id) else {
        return;
    };
    let i = match run.tasks.iter().position(|t| t.task == task) {
        Some(i) => i,
        None => {
            run.tasks.push(RecentTask {
                task: task.to_owned(),
                state: String::new(),
                duration_ms: None,
            });
            run.tasks.len() - 1
        }
    };
    let t = &mut run.tasks[i];
    t.state = state.to_owned();
    t.duration_ms = duration_ms.or(t.duration_ms);
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Follow the event stream into `server.recent` until the daemon stops.
pub(super) fn follow(server: Arc<Server>, daemon: &Daemon) {
    let mut rx = daemon.events.subscribe();
    let mut stopping = daemon.stopping.subscribe();
    tokio::spawn(async move {
        loop {
            let ev = tokio::select! {
                r = rx.recv() => r,
                _ = stopping.wait_for(|s| *s) => return,
            };
            match ev {
                Ok(ev) => server.recent.apply(&ev),
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return,
            }
        }
    });
}
