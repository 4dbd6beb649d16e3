//! Method and notification names, for clients that do not use the generated
//! jsonrpsee client (the CLI, scripts). The `api` trait uses the same names;
//! a test in the daemon checks that the two lists agree.

/// Handshake: the first call on every connection.
pub const HELLO: &str = "hello";
/// Subscription: start a run and stream its [`crate::run::RunEvent`]s.
pub const RUN: &str = "run";
/// Notification carrying one run event.
pub const RUN_EVENT: &str = "run_event";
/// Stop receiving a run's events (this cancels the run).
pub const RUN_UNSUBSCRIBE: &str = "run_unsubscribe";
/// Subscription: `taskrush NAME args…` in one request: the daemon decides
/// whether `NAME` is a plugin command (run it, one `command_finished`
/// event) or a task (a `run`, same events).
pub const DISPATCH: &str = "dispatch";
/// Notification carrying one event of a `dispatch` (a [`crate::run::RunEvent`],
/// as `run_event` carries them for `run`).
pub const DISPATCH_EVENT: &str = "dispatch_event";
/// Stop receiving a dispatch's events (this cancels its run).
pub const DISPATCH_UNSUBSCRIBE: &str = "dispatch_unsubscribe";
/// Cancel a run by id.
pub const CANCEL_RUN: &str = "cancel_run";
/// The runs in progress, of every client.
pub const LIST_RUNS: &str = "list_runs";
/// Subscription: follow a run in progress (its events from now on).
pub const ATTACH: &str = "attach";
/// Notification carrying one event of an `attach`.
pub const ATTACH_EVENT: &str = "attach_event";
/// Stop following a run (the run goes on).
pub const ATTACH_UNSUBSCRIBE: &str = "attach_unsubscribe";
/// Check `.rush` text a client sends (an unsaved buffer): its positioned
/// errors and warnings, and the symbols it defines.
pub const CHECK_RUSH: &str = "check_rush";
/// List the tasks of a project.
pub const LIST_TASKS: &str = "list_tasks";
/// The plugins of a project.
pub const PLUGIN_LIST: &str = "plugin_list";
/// One plugin of a project, in detail.
pub const PLUGIN_INFO: &str = "plugin_info";
/// Restart a plugin (also clears its failed state).
pub const PLUGIN_RESTART: &str = "plugin_restart";
/// The plugins of a project that ask for permissions not granted yet.
pub const PLUGIN_PENDING: &str = "plugin_pending";
/// Grant a plugin what it asks for (or record a refusal).
pub const PLUGIN_GRANT: &str = "plugin_grant";
/// Withdraw a plugin's grant.
pub const PLUGIN_REVOKE: &str = "plugin_revoke";
/// Run a command a plugin adds.
pub const PLUGIN_COMMAND: &str = "plugin_command";
/// Drive a plugin directory through the protocol (conformance kit).
pub const PLUGIN_TEST: &str = "plugin_test";
/// The last lines a plugin logged.
pub const PLUGIN_LOGS: &str = "plugin_logs";
/// Subscription: a plugin's log, the kept lines then each new one.
pub const PLUGIN_LOGS_FOLLOW: &str = "plugin_logs_follow";
/// Notification carrying one line of a `plugin_logs_follow`.
pub const PLUGIN_LOG: &str = "plugin_log";
/// Stop following a plugin's log.
pub const PLUGIN_LOGS_UNSUBSCRIBE: &str = "plugin_logs_unsubscribe";
/// Disable a plugin for a project, or enable it again.
pub const PLUGIN_DISABLE: &str = "plugin_disable";
/// The daemon's metrics: per plugin and per task.
pub const METRICS: &str = "metrics";
/// Search the configured plugin registries.
pub const PLUGIN_SEARCH: &str = "plugin_search";
/// Install a plugin from a registry or a local path.
pub const PLUGIN_INSTALL: &str = "plugin_install";
/// The installed plugins (their receipts).
pub const PLUGIN_INSTALLED: &str = "plugin_installed";
/// Remove an installed plugin.
pub const PLUGIN_REMOVE: &str = "plugin_remove";
/// Add a plugin directory to a registry directory, signed.
pub const PLUGIN_PUBLISH: &str = "plugin_publish";
/// Install what the project's `.rush` needs, honouring `.rush.lock`.
pub const PLUGIN_SYNC: &str = "plugin_sync";
/// Update the project's plugins within their requirements, and the lock.
pub const PLUGIN_UPDATE: &str = "plugin_update";
/// What is stale in the project's `.rush.lock`.
pub const PLUGIN_LOCK_CHECK: &str = "plugin_lock_check";
/// Subscription: the daemon's global event stream
/// ([`crate::events::DaemonEvent`]).
pub const EVENTS: &str = "events";
/// Notification carrying one daemon event.
pub const EVENT: &str = "event";
/// Stop receiving the daemon's events.
pub const EVENTS_UNSUBSCRIBE: &str = "events_unsubscribe";
/// The daemon's status.
pub const DAEMON_STATUS: &str = "daemon_status";
/// Ask the daemon to stop.
pub const DAEMON_STOP: &str = "daemon_stop";
/// The output store: size, entries, hits and restores.
pub const CACHE_STATUS: &str = "cache_status";
/// Empty the output store (or shrink it to a size).
pub const CACHE_PRUNE: &str = "cache_prune";
/// Every project under a workspace folder.
pub const FIND_PROJECTS: &str = "find_projects";
/// Per task of a plan: would it run, and why (`run --explain`, `--dry-run`).
pub const EXPLAIN_RUN: &str = "explain_run";

/// Start (or reuse) the plugin manager page's server on 127.0.0.1 and
/// answer its address with a fresh one-time token (`taskrush daemon ui`).
pub const UI_OPEN: &str = "ui_open";

/// Every method the daemon serves, in documentation order.
pub const ALL: &[&str] = &[
    HELLO,
    RUN,
    RUN_UNSUBSCRIBE,
    DISPATCH,
    DISPATCH_UNSUBSCRIBE,
    CANCEL_RUN,
    LIST_RUNS,
    ATTACH,
    ATTACH_UNSUBSCRIBE,
    CHECK_RUSH,
    LIST_TASKS,
    PLUGIN_LIST,
    PLUGIN_INFO,
    PLUGIN_RESTART,
    PLUGIN_PENDING,
    PLUGIN_GRANT,
    PLUGIN_REVOKE,
    PLUGIN_COMMAND,
    PLUGIN_TEST,
    PLUGIN_LOGS,
    PLUGIN_LOGS_FOLLOW,
    PLUGIN_LOGS_UNSUBSCRIBE,
    PLUGIN_DISABLE,
    METRICS,
    PLUGIN_SEARCH,
    PLUGIN_INSTALL,
    PLUGIN_INSTALLED,
    PLUGIN_REMOVE,
    PLUGIN_PUBLISH,
    PLUGIN_SYNC,
    PLUGIN_UPDATE,
    PLUGIN_LOCK_CHECK,
    EVENTS,
    EVENTS_UNSUBSCRIBE,
    DAEMON_STATUS,
    DAEMON_STOP,
    CACHE_STATUS,
    CACHE_PRUNE,
    EXPLAIN_RUN,
    FIND_PROJECTS,
    UI_OPEN,
];

/// The parameters of each method, in order: params sent by position are
/// given these names, and a missing or mistyped parameter is named in the
/// error. A tidy test checks this table against the `api` trait. (The
/// `*_unsubscribe` methods take the subscription id, by position.)
pub const PARAMS: &[(&str, &[&str])] = &[
    (
        HELLO,
        &["version", "protocol", "required", "optional", "client"],
    ),
    (RUN, &["request"]),
    (DISPATCH, &["request", "args", "command_only"]),
    (CANCEL_RUN, &["run_id", "force", "token"]),
    (LIST_RUNS, &[]),
    (ATTACH, &["run_id"]),
    (LIST_TASKS, &["cwd", "file", "env", "position_encoding"]),
    (CHECK_RUSH, &["path", "text", "position_encoding"]),
    (PLUGIN_LIST, &["cwd", "file"]),
    (PLUGIN_INFO, &["cwd", "file", "name"]),
    (PLUGIN_RESTART, &["cwd", "file", "name", "env"]),
    (PLUGIN_PENDING, &["cwd", "file"]),
    (PLUGIN_GRANT, &["cwd", "file", "name", "refuse", "env"]),
    (PLUGIN_REVOKE, &["cwd", "file", "name"]),
    (PLUGIN_COMMAND, &["cwd", "file", "name", "args", "env"]),
    (PLUGIN_TEST, &["path", "env"]),
    (PLUGIN_LOGS, &["name"]),
    (PLUGIN_LOGS_FOLLOW, &["name"]),
    (PLUGIN_DISABLE, &["cwd", "file", "name", "disable"]),
    (METRICS, &["cwd", "file"]),
    (PLUGIN_SEARCH, &["text"]),
    (
        PLUGIN_INSTALL,
        &["spec", "allow_unsigned", "cwd", "file", "progress_id"],
    ),
    (PLUGIN_INSTALLED, &[]),
    (PLUGIN_REMOVE, &["name", "version"]),
    (
        PLUGIN_PUBLISH,
        &[
            "path",
            "registry",
            "key",
            "platform",
            "expires_days",
            "revoke",
        ],
    ),
    (PLUGIN_SYNC, &["cwd", "file", "locked", "progress_id"]),
    (
        PLUGIN_UPDATE,
        &["cwd", "file", "name", "locked", "progress_id"],
    ),
    (PLUGIN_LOCK_CHECK, &["cwd", "file"]),
    (EVENTS, &[]),
    (DAEMON_STATUS, &[]),
    (DAEMON_STOP, &[]),
    (CACHE_STATUS, &[]),
    (CACHE_PRUNE, &["max_bytes"]),
    (EXPLAIN_RUN, &["request"]),
    (
        FIND_PROJECTS,
        &["folder", "max_depth", "max_count", "parse"],
    ),
    (UI_OPEN, &[]),
];

/// The parameter names of `method`, when it is in [`PARAMS`].
pub fn params_of(method: &str) -> Option<&'static [&'static str]> {
    PARAMS.iter().find(|(m, _)| *m == method).map(|(_, p)| *p)
}
