//! Plugin output a person can see: where a plugin's `log` and `progress`
//! notifications go besides the daemon log.
//!
//! - Every line (all levels, and progress) is kept in memory, the last
//!   [`PLUGIN_LOG_KEPT`] per plugin name, for `taskrush plugin logs NAME
//!   [-f]` (`plugin_logs`, `plugin_logs_follow`).
//! - While a plugin serves a run (a hook call of [`super::hooks::RunPlugins`],
//!   its start included), that run is registered here ([`serving`]):
//!   warnings and errors go to the run's event channel as `plugin_log`
//!   events (the CLI prints them on stderr as `[NAME] warning: …`) and
//!   progress as `plugin_progress` events; at most [`PLUGIN_LOG_LINES`] per
//!   plugin and run, then one line saying the rest were held back. Progress
//!   is also published on the global event stream (`taskrush events`).
//! - Lines outside a run go only to the buffer (and the daemon log).
//!
//! Nothing here waits: a run's channel that is full drops the line (it is
//! still in the buffer), a follower that lags loses the oldest lines.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};

use jsonrpsee::PendingSubscriptionSink;
use taskrush_protocol::daemon::{PLUGIN_LOG_KEPT, PluginLogLine};
use taskrush_protocol::events::DaemonEvent;
use taskrush_protocol::run::{PLUGIN_LOG_LINES, RunEvent};
use tokio::sync::{broadcast, mpsc};

use crate::event_bus::Events;

/// Lines a `plugin logs -f` follower may fall behind before it loses some.
const FOLLOW_CAPACITY: usize = 256;

/// One run a plugin is serving now.
struct Serving {
    id: u64,
    run_id: u64,
    task: String,
    tx: mpsc::Sender<RunEvent>,
    /// Lines sent to this run by this plugin so far (shared by every call
    /// of the run).
    sent: Arc<AtomicU32>,
    /// Events that did not fit in the run's channel, sent in order when the
    /// call ends ([`ServingGuard::finish`]); bounded by the budget.
    queue: Arc<Mutex<Vec<RunEvent>>>,
}

struct Log {
    lines: VecDeque<PluginLogLine>,
    tx: broadcast::Sender<PluginLogLine>,
}

#[derive(Default)]
struct Output {
    logs: Mutex<HashMap<String, Log>>,
    serving: Mutex<HashMap<(PathBuf, String), Vec<Serving>>>,
    events: OnceLock<Events>,
    next: AtomicU64,
}

static OUTPUT: LazyLock<Output> = LazyLock::new(Output::default);

/// Where `progress` is published (the plugin host's event bus).
pub(crate) fn set_events(events: Events) {
    let _ = OUTPUT.events.set(events);
}

/// Registered while plugin `name` of project `root` serves a call of a
/// run; dropping it ends the registration.
pub(crate) struct ServingGuard {
    key: (PathBuf, String),
    id: u64,
    tx: mpsc::Sender<RunEvent>,
    queue: Arc<Mutex<Vec<RunEvent>>>,
}

impl ServingGuard {
    /// End the registration, then send what did not fit in the run's
    /// channel while the call ran (waiting for room: the run goes on only
    /// once its plugins' lines are out, so none comes after its end).
    pub(crate) async fn finish(self) {
        let queue = self.queue.clone();
        let tx = self.tx.clone();
        drop(self);
        let queued = std::mem::take(&mut *queue.lock().unwrap_or_else(|p| p.into_inner()));
        for ev in queued {
            if tx.send(ev).await.is_err() {
                return;
            }
        }
    }
}

impl Drop for ServingGuard {
    fn drop(&mut self) {
        let mut map = OUTPUT.serving.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = map.get_mut(&self.key) {
            v.retain(|s| s.id != self.id);
            if v.is_empty() {
                map.remove(&self.key);
            }
        }
    }
}

/// Plugin `name` of `root` serves run `run_id` (task `task`) until the
/// guard is dropped; `sent` counts the lines this run got from it.
pub(crate) fn serving(
    root: &Path,
    name: &str,
    run_id: u64,
    task: &str,
    tx: &mpsc::Sender<RunEvent>,
    sent: Arc<AtomicU32>,
) -> ServingGuard {
    let id = OUTPUT.next.fetch_add(1, Ordering::Relaxed);
    let key = (root.to_owned(), name.to_owned());
    let queue = Arc::new(Mutex::new(Vec::new()));
    OUTPUT
        .serving
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key.clone())
        .or_default()
        .push(Serving {
            id,
            run_id,
            task: task.to_owned(),
            tx: tx.clone(),
            sent,
            queue: queue.clone(),
        });
    ServingGuard {
        key,
        id,
        tx: tx.clone(),
        queue,
    }
}

/// The run plugin `name` of `root` serves now (the latest call's).
struct Current {
    run_id: u64,
    task: String,
    tx: mpsc::Sender<RunEvent>,
    sent: Arc<AtomicU32>,
    queue: Arc<Mutex<Vec<RunEvent>>>,
}

fn current(root: Option<&Path>, name: &str) -> Option<Current> {
    let root = root?;
    let map = OUTPUT.serving.lock().unwrap_or_else(|p| p.into_inner());
    let s = map.get(&(root.to_owned(), name.to_owned()))?.last()?;
    Some(Current {
        run_id: s.run_id,
        task: s.task.clone(),
        tx: s.tx.clone(),
        sent: s.sent.clone(),
        queue: s.queue.clone(),
    })
}

/// Send `ev` to a run unless its budget for this plugin is spent; the
/// first line over the budget says so instead. Never waits: what does not
/// fit in the run's channel now is queued, in order, for the end of the
/// call.
fn to_run(name: &str, cur: &Current, ev: RunEvent) {
    let (sent, task) = (&cur.sent, &cur.task);
    let n = sent.fetch_add(1, Ordering::Relaxed);
    let ev = match n {
        n if n < PLUGIN_LOG_LINES => ev,
        n if n == PLUGIN_LOG_LINES => RunEvent::PluginLog {
            plugin: name.to_owned(),
            task: Some(task.to_owned()),
            level: "warn".into(),
            message: format!("more output held back; see `taskrush plugin logs {name}`"),
        },
        _ => return,
    };
    let mut queue = cur.queue.lock().unwrap_or_else(|p| p.into_inner());
    if queue.is_empty() {
        if let Err(mpsc::error::TrySendError::Full(ev)) = cur.tx.try_send(ev) {
            queue.push(ev);
        }
    } else {
        queue.push(ev);
    }
}

fn keep(line: PluginLogLine) {
    let mut logs = OUTPUT.logs.lock().unwrap_or_else(|p| p.into_inner());
    let log = logs.entry(line.plugin.clone()).or_insert_with(|| Log {
        lines: VecDeque::new(),
        tx: broadcast::channel(FOLLOW_CAPACITY).0,
    });
    if log.lines.len() >= PLUGIN_LOG_KEPT {
        log.lines.pop_front();
    }
    let _ = log.tx.send(line.clone());
    log.lines.push_back(line);
}

/// A `log` line of plugin `name` (of project `root`, when it has one);
/// `message` is already scrubbed of secrets.
pub(crate) fn log(
    name: &str,
    root: Option<&Path>,
    level: &str,
    message: &str,
    task: Option<String>,
) {
    let level = match level {
        "warning" => "warn",
        "error" | "warn" | "info" | "debug" => level,
        "trace" => "debug",
        _ => "info",
    };
    let serving = current(root, name);
    let task = task.or_else(|| serving.as_ref().map(|s| s.task.clone()));
    if let Some(cur) = &serving
        && matches!(level, "warn" | "error")
    {
        let ev = RunEvent::PluginLog {
            plugin: name.to_owned(),
            task: task.clone(),
            level: level.to_owned(),
            message: message.to_owned(),
        };
        to_run(name, cur, ev);
    }
    keep(PluginLogLine {
        time: taskrush_protocol::audit::now(),
        plugin: name.to_owned(),
        root: root.map(|r| r.display().to_string()),
        run_id: serving.as_ref().map(|s| s.run_id),
        task,
        level: level.to_owned(),
        message: message.to_owned(),
    });
}

/// A `progress` notification of plugin `name`; `message` already scrubbed.
pub(crate) fn progress(
    name: &str,
    root: Option<&Path>,
    task: Option<String>,
    percent: Option<f64>,
    message: &str,
) {
    let percent = percent
        .filter(|p| p.is_finite())
        .map(|p| p.clamp(0.0, 100.0));
    let serving = current(root, name);
    let task = task.or_else(|| serving.as_ref().map(|s| s.task.clone()));
    if let Some(cur) = &serving {
        let ev = RunEvent::PluginProgress {
            plugin: name.to_owned(),
            task: task.clone(),
            percent,
            message: message.to_owned(),
        };
        to_run(name, cur, ev);
    }
    if let (Some(events), Some(root)) = (OUTPUT.events.get(), root) {
        events.send(DaemonEvent::PluginProgress {
            root: root.display().to_string(),
            plugin: name.to_owned(),
            run_id: serving.as_ref().map(|s| s.run_id),
            task: task.clone(),
            percent,
            message: message.to_owned(),
        });
    }
    let shown = match percent {
        Some(p) => format!("{p:.0}% {message}"),
        None => message.to_owned(),
    };
    keep(PluginLogLine {
        time: taskrush_protocol::audit::now(),
        plugin: name.to_owned(),
        root: root.map(|r| r.display().to_string()),
        run_id: serving.as_ref().map(|s| s.run_id),
        task,
        level: "progress".into(),
        message: shown,
    });
}

/// The kept lines of plugin `name`, oldest first.
pub(crate) fn lines(name: &str) -> Vec<PluginLogLine> {
    let logs = OUTPUT.logs.lock().unwrap_or_else(|p| p.into_inner());
    logs.get(name)
        .map(|l| l.lines.iter().cloned().collect())
        .unwrap_or_default()
}

/// Serve one `plugin_logs_follow` subscription: the kept lines, then each
/// new one, until the client leaves or the daemon stops. The kept lines and
/// the receiver are taken under one lock, so nothing is missed or doubled.
pub(crate) async fn follow(
    name: String,
    pending: PendingSubscriptionSink,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    let (kept, mut rx) = {
        let mut logs = OUTPUT.logs.lock().unwrap_or_else(|p| p.into_inner());
        let log = logs.entry(name.clone()).or_insert_with(|| Log {
            lines: VecDeque::new(),
            tx: broadcast::channel(FOLLOW_CAPACITY).0,
        });
        (
            log.lines.iter().cloned().collect::<Vec<_>>(),
            log.tx.subscribe(),
        )
    };
    let Ok(sink) = pending.accept().await else {
        return;
    };
    for line in kept {
        let Ok(msg) = serde_json::value::to_raw_value(&line) else {
            continue;
        };
        if sink.send(msg).await.is_err() {
            return;
        }
    }
    loop {
        let line = tokio::select! {
            r = rx.recv() => r,
            _ = sink.closed() => return,
            _ = stopping.wait_for(|s| *s) => return,
        };
        let line = match line {
            Ok(l) => l,
            Err(broadcast::error::RecvError::Lagged(missed)) => PluginLogLine {
                time: taskrush_protocol::audit::now(),
                plugin: name.clone(),
                root: None,
                run_id: None,
                task: None,
                level: "warn".into(),
                message: format!("{missed} lines skipped: this follower fell behind"),
            },
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let Ok(msg) = serde_json::value::to_raw_value(&line) else {
            continue;
        };
        if sink.send(msg).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_reach_the_run_it_serves_and_stop_at_the_budget() {
        let (tx, mut rx) = mpsc::channel(100);
        let root = Path::new("/tmp/output-test-root");
        let sent = Arc::new(AtomicU32::new(0));
        {
            let _g = serving(root, "chatty", 7, "build", &tx, sent.clone());
            for i in 0..(PLUGIN_LOG_LINES + 10) {
                log("chatty", Some(root), "warning", &format!("line {i}"), None);
            }
            log("chatty", Some(root), "info", "quiet", None);
        }
        log("chatty", Some(root), "error", "outside any run", None);
        let mut got = Vec::new();
        while let Ok(ev) = rx.try_recv() {
            got.push(ev);
        }
        assert_eq!(got.len() as u32, PLUGIN_LOG_LINES + 1);
        match got.last() {
            Some(RunEvent::PluginLog { message, .. }) => {
                assert!(message.contains("held back"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        let kept = lines("chatty");
        assert_eq!(kept.len() as u32, PLUGIN_LOG_LINES + 12);
        assert_eq!(kept.last().map(|l| l.run_id), Some(None));
        assert_eq!(kept[0].run_id, Some(7));
        assert_eq!(kept[0].task.as_deref(), Some("build"));
    }

    #[test]
    fn the_buffer_keeps_the_last_lines() {
        for i in 0..(PLUGIN_LOG_KEPT + 5) {
            log("many", None, "debug", &format!("{i}"), None);
        }
        let kept = lines("many");
        assert_eq!(kept.len(), PLUGIN_LOG_KEPT);
        assert_eq!(kept[0].message, "5");
    }
}
