//! Internal types as they cross the socket.

use std::path::Path;
use std::sync::atomic::Ordering;

use jsonrpsee::types::ErrorObjectOwned;
use taskrush_protocol::PROTOCOL_VERSION;
use taskrush_protocol::daemon::{CommandInfo, DaemonStatus, TaskInfo, TaskList};
use taskrush_protocol::error::{self, ErrorData};
use taskrush_protocol::events::DaemonEvent;
use taskrush_protocol::run::RunEvent;

use crate::config::config_error::{ConfigError, ConfigErrorKind};
use crate::config::rush_file::RushFile;
use crate::plugin::{Phase, PluginFailure};

use super::daemon::{Daemon, rss_bytes};

/// A config error as it crosses the socket.
pub(super) fn config_error(e: ConfigError) -> ErrorObjectOwned {
    let data = ErrorData {
        path: Some(e.path.display().to_string()),
        line: e.line,
        column: e.column,
        task: None,
        hint: e.hint.clone(),
        ..Default::default()
    };
    let code = match e.kind {
        ConfigErrorKind::UnknownTask => error::TASK_NOT_FOUND,
        ConfigErrorKind::Invalid => error::CONFIG_ERROR,
    };
    ErrorObjectOwned::owned(code, e.message, Some(data))
}

/// A plugin failure as it crosses the socket.
pub(super) fn plugin_error(f: PluginFailure) -> ErrorObjectOwned {
    let data = ErrorData {
        plugin: (!f.plugin.is_empty()).then(|| f.plugin.clone()),
        hint: f.hint.clone(),
        ..Default::default()
    };
    let message = if f.plugin.is_empty() || f.phase == Phase::Lookup {
        f.message.clone()
    } else {
        f.render()
    };
    ErrorObjectOwned::owned(error::PLUGIN_ERROR, message, Some(data))
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

/// A run event as the global event stream tells it (`None`: not told).
pub(super) fn daemon_event(run_id: u64, root: &Path, ev: &RunEvent) -> Option<DaemonEvent> {
    let g = match ev {
        RunEvent::RunStarted {
            file,
            tasks,
            iteration,
            ..
        } => DaemonEvent::RunStarted {
            run_id,
            root: display(root),
            file: file.clone(),
            tasks: tasks.clone(),
            iteration: *iteration,
            client: None,
        },
        RunEvent::TaskStarted { task, .. } => DaemonEvent::TaskStarted {
            run_id,
            task: task.clone(),
        },
        RunEvent::TaskCached { task, .. } => DaemonEvent::TaskCached {
            run_id,
            task: task.clone(),
        },
        RunEvent::TaskFinished {
            task,
            status,
            exit_code,
            duration_ms,
            ..
        } => DaemonEvent::TaskFinished {
            run_id,
            task: task.clone(),
            status: *status,
            exit_code: *exit_code,
            duration_ms: *duration_ms,
        },
        RunEvent::RunFinished {
            status,
            exit_code,
            duration_ms,
            ..
        } => DaemonEvent::RunFinished {
            run_id,
            status: *status,
            exit_code: *exit_code,
            duration_ms: *duration_ms,
        },
        _ => return None,
    };
    Some(g)
}

/// A `.rush` file (re)loaded, for the event stream.
pub(super) fn config_reloaded(config: &RushFile) -> DaemonEvent {
    DaemonEvent::ConfigReloaded {
        root: display(&config.root),
        file: display(&config.path),
        tasks: config.tasks.len(),
    }
}

/// A `.rush` file rejected, for the event stream.
pub(super) fn config_rejected(
    path: &Path,
    error: &ConfigError,
    using_last_valid: bool,
) -> DaemonEvent {
    DaemonEvent::ConfigRejected {
        root: display(path.parent().unwrap_or(path)),
        file: display(path),
        location: error.location(),
        message: error.message.clone(),
        line: error.line,
        column: error.column,
        using_last_valid,
    }
}

/// A run's `run_finished` with the daemon's reason added (when it has none).
pub(super) fn with_error(ev: RunEvent, message: &str) -> RunEvent {
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

/// The tasks of a `.rush` file and its plugins' commands, for `list_tasks`.
pub(super) fn task_list(
    config: &RushFile,
    commands: Vec<CommandInfo>,
    warning: Option<String>,
) -> TaskList {
    let tasks: Vec<TaskInfo> = config
        .tasks
        .values()
        .map(|t| TaskInfo {
            name: t.name.clone(),
            description: t.description.clone(),
            depends_on: t.depends_on.clone(),
            cached: !t.cache_files.is_empty(),
            cmd: t.cmd.clone(),
            dir: t.working_dir(&config.root).display().to_string(),
            file: t.defined_in(config).display().to_string(),
            line: t.line,
            column: t.column,
            cache_files: t.cache_files.clone(),
            outputs: t.outputs.clone(),
        })
        .collect();
    TaskList {
        file: config.path.display().to_string(),
        position_encoding: Default::default(),
        name_width: tasks
            .iter()
            .map(|t| t.name.chars().count())
            .max()
            .unwrap_or(0),
        tasks,
        commands,
        warning,
    }
}

/// The daemon as `daemon status` shows it.
pub(super) fn daemon_status(d: &Daemon) -> DaemonStatus {
    DaemonStatus {
        pid: std::process::id(),
        version: d.options.version.clone(),
        protocol: PROTOCOL_VERSION,
        uptime_ms: d.started.elapsed().as_millis() as u64,
        socket: display(&d.paths.socket),
        log: display(&d.paths.log),
        projects: d.projects.roots(),
        runs: d.active_runs(),
        clients: d.clients.load(Ordering::Relaxed),
        rss_bytes: rss_bytes(),
        started_because: d.options.started_because.clone(),
        idle_timeout_s: d.options.idle_timeout.map(|d| d.as_secs()).unwrap_or(0),
        config_warnings: d.projects.warnings(),
        watched_dirs: d.watcher.watched(),
        watcher_error: d.watcher.problem(),
        cache_checks_watched: d.up_to_date.watched_checks(),
        cache_checks_full: d.up_to_date.full_checks(),
        plugins: d.plugins.live(),
    }
}
