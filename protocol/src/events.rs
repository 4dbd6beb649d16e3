//! The daemon's global event stream (`events` subscription, `event`
//! notifications): what editors and scripts follow to stay in sync.
//!
//! Every event is tagged by `event`. Clients must ignore kinds they do not
//! know: new kinds are added without a protocol version change.

use serde::{Deserialize, Serialize};

use crate::run::{RunStatus, TaskStatus};

/// One event of the daemon, sent as the `result` of an `event` notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum DaemonEvent {
    /// A project's `.rush` file changed and its new content is in use.
    ConfigReloaded {
        /// The project's root (the directory of its `.rush` file).
        root: String,
        file: String,
        /// How many tasks it declares.
        tasks: usize,
    },
    /// A project's `.rush` file changed but does not parse or validate (or
    /// was deleted). With `using_last_valid`, the last good config keeps
    /// serving until a good save arrives.
    ConfigRejected {
        root: String,
        file: String,
        /// `file:line:column` of the problem (as much as is known).
        location: String,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        line: Option<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        column: Option<usize>,
        using_last_valid: bool,
    },
    /// A plugin process finished its handshake for the first time.
    PluginStarted {
        root: String,
        plugin: String,
        version: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pid: Option<u32>,
    },
    /// A new process of the plugin took over (its files, manifest or
    /// `.rush` entry changed); the old one finishes its calls and stops.
    PluginRestarted {
        root: String,
        plugin: String,
        version: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pid: Option<u32>,
        reason: String,
    },
    /// A plugin failed (crash, handshake, a new version that does not
    /// start). When a reload failed, the previous version keeps serving.
    PluginFailed {
        root: String,
        plugin: String,
        message: String,
    },
    /// A new version of a plugin was not applied because its manifest asks
    /// for more permissions than the running one had; the running version
    /// keeps serving.
    PluginReloadRefused {
        root: String,
        plugin: String,
        message: String,
    },
    /// A plugin was stopped because it left the `.rush` file.
    PluginStopped {
        root: String,
        plugin: String,
        reason: String,
    },
    /// A run started (for `run --watch`, once per re-run, with the same
    /// `run_id` and a growing `iteration`).
    RunStarted {
        run_id: u64,
        root: String,
        file: String,
        tasks: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        iteration: Option<u32>,
        /// The client that started it (absent from older daemons).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client: Option<RunClient>,
    },
    TaskStarted {
        run_id: u64,
        task: String,
    },
    TaskCached {
        run_id: u64,
        task: String,
    },
    TaskFinished {
        run_id: u64,
        task: String,
        status: TaskStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        duration_ms: u64,
    },
    RunFinished {
        run_id: u64,
        status: RunStatus,
        exit_code: i32,
        duration_ms: u64,
    },
    /// A plugin reported progress (`progress` notification). `run_id` is
    /// the run it was serving, when it was serving one.
    PluginProgress {
        root: String,
        plugin: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        run_id: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        task: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        percent: Option<f64>,
        message: String,
    },
    /// An artifact is being downloaded for `plugin_install`, `plugin_sync`
    /// or `plugin_update`: `done` of `total` bytes (`total` from the index
    /// line's `size`). At most about 10 per second per download, and a
    /// last one with `done == total`. `progress_id` is the one the
    /// request carried, so a client renders only its own.
    PluginDownload {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        progress_id: Option<String>,
        plugin: String,
        version: String,
        registry: String,
        done: u64,
        total: u64,
    },
    /// Something about file watching the user should know: the kernel's
    /// event queue overflowed (a full rescan follows), or the watch limit
    /// was reached (changes are then picked up on each request).
    WatcherProblem {
        message: String,
    },
    /// This subscriber fell behind and `missed` events were dropped for it
    /// (never for anyone else); the stream goes on.
    Lagged {
        missed: u64,
    },
}

/// The client that started a run: its connection, the name it gave in
/// `hello` (if any) and its process id (from `SO_PEERCRED`, where known).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunClient {
    /// The connection's id, unique for the daemon's life.
    pub id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}
