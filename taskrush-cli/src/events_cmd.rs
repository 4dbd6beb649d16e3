//! `taskrush events`: the daemon's global event stream, one line per
//! event — for humans, or (`--json`) one JSON object per line for scripts.
//! Runs until Ctrl-C or until the daemon stops.

use std::io::Write;

use taskrush_protocol::events::DaemonEvent;
use taskrush_protocol::method;
use taskrush_protocol::paths::DaemonPaths;
use taskrush_protocol::run::{RunStatus, TaskStatus};

use crate::client::{self, Incoming};
use crate::error::CliError;

pub fn events(json: bool) -> Result<i32, CliError> {
    let mut client = client::connect(&DaemonPaths::from_env(), false, false)?;
    let id = client.send(method::EVENTS, serde_json::json!([]))?;
    let mut out = std::io::stdout();
    loop {
        let incoming = match client.read() {
            Ok(m) => m,
            // The daemon stopped: the stream is over.
            Err(CliError::Disconnected(_)) => return Ok(0),
            Err(e) => return Err(e),
        };
        let line = match incoming {
            Incoming::Response { id: r, result } if r == id => match result {
                Ok(_) => continue,
                Err(e) => return Err(CliError::Remote(e)),
            },
            Incoming::Notification { method: m, params } if m == method::EVENT => {
                let Some(result) = params.get("result") else {
                    continue;
                };
                if json {
                    result.to_string()
                } else {
                    match serde_json::from_value::<DaemonEvent>(result.clone()) {
                        Ok(ev) => human(&ev),
                        // A kind this CLI does not know yet.
                        Err(_) => format!("{result}"),
                    }
                }
            }
            _ => continue,
        };
        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
            return Ok(0); // `| head`
        }
    }
}

/// One line for a human.
fn human(ev: &DaemonEvent) -> String {
    match ev {
        DaemonEvent::ConfigReloaded { file, tasks, .. } => {
            format!("config reloaded: `{file}` ({tasks} tasks)")
        }
        DaemonEvent::ConfigRejected {
            location,
            message,
            using_last_valid,
            ..
        } => format!(
            "config rejected: `{location}`: {message}{}",
            if *using_last_valid {
                " (using the last valid config)"
            } else {
                ""
            }
        ),
        DaemonEvent::PluginStarted {
            plugin,
            version,
            pid,
            ..
        } => format!("plugin `{plugin}` {version} started{}", pid_of(*pid)),
        DaemonEvent::PluginRestarted {
            plugin,
            version,
            pid,
            reason,
            ..
        } => format!(
            "plugin `{plugin}` restarted as {version}{} ({reason})",
            pid_of(*pid)
        ),
        DaemonEvent::PluginDownload {
            plugin,
            version,
            registry,
            done,
            total,
            ..
        } => format!(
            "plugin `{plugin}` {version} from `{registry}`: downloaded {done}/{total} bytes"
        ),
        DaemonEvent::PluginProgress {
            plugin,
            task,
            percent,
            message,
            ..
        } => {
            let task = task
                .as_ref()
                .map(|t| format!(" (task `{t}`)"))
                .unwrap_or_default();
            let percent = percent.map(|p| format!("{p:.0}% ")).unwrap_or_default();
            format!("plugin `{plugin}` progress{task}: {percent}{message}")
        }
        DaemonEvent::PluginFailed {
            plugin, message, ..
        } => format!("plugin `{plugin}` failed: {message}"),
        DaemonEvent::PluginReloadRefused {
            plugin, message, ..
        } => format!("plugin `{plugin}` not reloaded: {message}"),
        DaemonEvent::PluginStopped { plugin, reason, .. } => {
            format!("plugin `{plugin}` stopped: {reason}")
        }
        DaemonEvent::RunStarted {
            run_id,
            root,
            tasks,
            iteration,
            client,
            ..
        } => format!(
            "run {run_id} started in `{root}`: {}{}{}",
            tasks.join(", "),
            iteration
                .filter(|i| *i > 1)
                .map(|i| format!(" (re-run {})", i - 1))
                .unwrap_or_default(),
            client
                .as_ref()
                .map(|c| {
                    let who = c
                        .name
                        .as_deref()
                        .map_or(String::new(), |n| format!(" `{n}`"));
                    let pid = c.pid.map_or(String::new(), |p| format!(", pid {p}"));
                    format!(" (by client {}{who}{pid})", c.id)
                })
                .unwrap_or_default()
        ),
        DaemonEvent::TaskStarted { run_id, task } => format!("run {run_id}: `{task}` started"),
        DaemonEvent::TaskCached { run_id, task } => {
            format!("run {run_id}: `{task}` is up to date")
        }
        DaemonEvent::TaskFinished {
            run_id,
            task,
            status,
            exit_code,
            duration_ms,
        } => {
            let how = match (status, exit_code) {
                (TaskStatus::Success, _) => "succeeded".to_owned(),
                (TaskStatus::Failed, Some(c)) => format!("failed (exit code {c})"),
                (TaskStatus::Failed, None) => "failed".to_owned(),
                (TaskStatus::Cancelled, _) => "was cancelled".to_owned(),
            };
            format!("run {run_id}: `{task}` {how} in {duration_ms} ms")
        }
        DaemonEvent::RunFinished {
            run_id,
            status,
            exit_code,
            duration_ms,
        } => {
            let how = match status {
                RunStatus::Success => "succeeded",
                RunStatus::Failed => "failed",
                RunStatus::Cancelled => "was cancelled",
            };
            format!("run {run_id} {how} (exit code {exit_code}) in {duration_ms} ms")
        }
        DaemonEvent::WatcherProblem { message } => format!("watcher: {message}"),
        DaemonEvent::Lagged { missed } => {
            format!("(fell behind: {missed} events were dropped for this client)")
        }
    }
}

fn pid_of(pid: Option<u32>) -> String {
    pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
}
