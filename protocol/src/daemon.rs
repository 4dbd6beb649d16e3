//! Handshake, status and listing types.

use serde::{Deserialize, Serialize};

/// The answer to `hello`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The daemon's TaskRush version.
    pub version: String,
    /// The protocol major the daemon speaks.
    pub protocol: u32,
    /// The protocol minor: which capabilities exist (see `capabilities`).
    #[serde(default)]
    pub minor: u32,
    pub pid: u32,
    /// Every capability of the daemon (see [`crate::capability`]).
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// For each name the client sent in `optional`: whether the daemon
    /// has it. Absent when the client sent no `optional`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<std::collections::BTreeMap<String, bool>>,
}

/// The answer to `daemon_status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub pid: u32,
    pub version: String,
    pub protocol: u32,
    pub uptime_ms: u64,
    pub socket: String,
    pub log: String,
    /// Roots of the projects whose configuration is loaded.
    pub projects: Vec<String>,
    /// Runs in progress.
    pub runs: usize,
    /// Connected clients (including the one asking).
    pub clients: usize,
    /// Resident memory of the daemon, in bytes.
    #[serde(default)]
    pub rss_bytes: u64,
    /// Why this daemon was started (e.g. "started by `taskrush run`",
    /// "replaced taskrushd 0.2.9").
    #[serde(default)]
    pub started_because: String,
    /// Seconds without clients and runs after which the daemon exits
    /// (0: never).
    #[serde(default)]
    pub idle_timeout_s: u64,
    /// Projects serving their last valid config because their `.rush`
    /// file is broken or gone: "`FILE`: using the last valid config; …".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_warnings: Vec<String>,
    /// Directories the daemon's file watcher watches.
    #[serde(default)]
    pub watched_dirs: usize,
    /// Why file watching is degraded (watch limit reached, no inotify),
    /// with what to do; changes are then picked up on each request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watcher_error: Option<String>,
    /// Up-to-date checks of cached tasks answered from the watcher: nothing
    /// changed under the inputs' directories, so no input was `stat`ed.
    #[serde(default)]
    pub cache_checks_watched: u64,
    /// Up-to-date checks that listed and `stat`ed every input.
    #[serde(default)]
    pub cache_checks_full: u64,
    /// Live plugin processes (external), by project root and name.
    #[serde(default)]
    pub plugins: Vec<LivePlugin>,
}

/// One task, as `list_tasks` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskInfo {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// Whether the task has `cache_files`.
    #[serde(default)]
    pub cached: bool,
    /// The shell command; absent for an aggregate task (only dependencies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    /// The directory the task runs in (absolute).
    #[serde(default)]
    pub dir: String,
    /// The `.rush` file that defines the task (absolute; an included file
    /// for a namespaced task).
    #[serde(default)]
    pub file: String,
    /// 1-based line and column of the task's name in `file` (0 when
    /// unknown).
    #[serde(default)]
    pub line: usize,
    #[serde(default)]
    pub column: usize,
    /// The task's `cache_files` globs, as written.
    #[serde(default)]
    pub cache_files: Vec<String>,
    /// The task's `outputs` globs, as written.
    #[serde(default)]
    pub outputs: Vec<String>,
}

/// The answer to `list_tasks`: tasks sorted by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
///
/// Fields are sent in this order, so that a client can print the tasks as
/// it reads them: `name_width` comes before `tasks`.
pub struct TaskList {
    /// The `.rush` file listed.
    pub file: String,
    /// How `tasks[].column` is counted: characters (`utf-32`) unless the
    /// request asked for `utf-16` or `utf-8`.
    #[serde(default)]
    pub position_encoding: crate::editor::PositionEncoding,
    /// Set when the `.rush` file is broken or gone and its last valid
    /// content is listed: "using the last valid config; `FILE:L:C`: …".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// The length of the longest task name, in characters (to align a
    /// list printed while it is read).
    #[serde(default)]
    pub name_width: usize,
    pub tasks: Vec<TaskInfo>,
    /// Commands added by the project's plugins (`taskrush NAME args…`),
    /// sorted by name; plugins that could not be started add none.
    #[serde(default)]
    pub commands: Vec<CommandInfo>,
}

/// A command a plugin adds, as `list_tasks` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandInfo {
    pub plugin: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
}

/// The life of a plugin process, as `plugin_list` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PluginState {
    /// Its process is answering a call.
    Running,
    /// Its process is up and waiting for work.
    Idle,
    /// Given up on until its files change or `plugin_restart`.
    Failed,
    /// No process (never used yet, or waiting to be restarted).
    NotStarted,
}

/// One plugin of a project, as `plugin_list` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginStatus {
    pub name: String,
    /// The manifest's version, when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `external`, `wasm` or `native`.
    pub kind: String,
    pub state: PluginState,
    /// How many times its process was started after the first time.
    pub restarts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The hooks it declared at its last handshake.
    #[serde(default)]
    pub hooks: Vec<String>,
    /// The commands it declared at its last handshake.
    #[serde(default)]
    pub commands: Vec<String>,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The level achieved per permission kind (`filesystem`, `process`,
    /// `network`, `environment`, `daemon_socket`): `enforced`,
    /// `partial: why` or `not enforced: why`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub enforcement: std::collections::BTreeMap<String, String>,
    /// It asks for permissions the user has not granted: it is not
    /// started (a new version of a running one is not swapped in) until
    /// `taskrush plugin grant NAME`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub needs_grant: bool,
    /// The resource limits per kind (`memory`, `processes`, `open_files`):
    /// the value and the level achieved. Not considered by
    /// `enforcement = "required"`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub limits: std::collections::BTreeMap<String, LimitStatus>,
    /// Disabled for this project (`taskrush plugin disable NAME`): not
    /// started, its hooks skipped.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    /// The key id that signed the installed plugin (verified before each
    /// start); none for an unsigned one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// Not signed: a development plugin (`path:`, `.rush-plugins/`, a
    /// directory copied by hand) or one installed with `--allow-unsigned`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unsigned: bool,
}

/// One resource limit of a plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitStatus {
    /// Bytes (`memory`, `module_size`), milliseconds (`deadline`) or a
    /// count; absent when `unlimited`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<u64>,
    /// `enforced`, `partial: why` or `not enforced: why`.
    pub level: String,
}

/// A live plugin process, as `daemon_status` lists it: what its sandbox
/// and limits achieved when it was started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LivePlugin {
    /// The project root.
    pub root: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The level achieved per permission kind (as [`PluginStatus::enforcement`]).
    #[serde(default)]
    pub enforcement: std::collections::BTreeMap<String, String>,
    /// The resource limits (as [`PluginStatus::limits`]).
    #[serde(default)]
    pub limits: std::collections::BTreeMap<String, LimitStatus>,
}

/// The answer to `plugin_info`: the status plus the manifest and recent
/// stderr.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginDetails {
    #[serde(flatten)]
    pub status: PluginStatus,
    /// The plugin's directory, when it was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `plugin.toml`, when it could be read and validated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<crate::plugin::PluginManifest>,
    /// Whether the `.rush` entry says `required: true`.
    #[serde(default)]
    pub required: bool,
    /// The deadline of each call, in milliseconds.
    pub timeout_ms: u64,
    /// The last lines the plugin wrote to stderr (at most 20).
    #[serde(default)]
    pub stderr: Vec<String>,
    /// The last error, even if it has recovered since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// What the user granted it (the grants file and the user config
    /// together); `None` when nothing is granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granted: Option<crate::plugin::Permissions>,
    /// What the user config denies of what it declares, if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denied: Option<crate::plugin::Permissions>,
    /// What it gets: declared ∩ granted − denied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective: Option<crate::plugin::Permissions>,
    /// What it asks for that the user has not granted yet (it is not
    /// started until `taskrush plugin grant NAME`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<crate::plugin::Permissions>,
}

/// A plugin of a project that asks for permissions the user has not
/// granted (the answer to `plugin_pending`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginPending {
    pub name: String,
    /// Whether the `.rush` entry says `required: true`.
    #[serde(default)]
    pub required: bool,
    /// What a grant gives it now: what its manifest declares, less what
    /// the user config denies.
    pub requested: crate::plugin::Permissions,
    /// What was granted before (a widening), if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granted: Option<crate::plugin::Permissions>,
    /// What it asks for beyond the current grant (all of `requested` on
    /// first use).
    pub more: crate::plugin::Permissions,
    /// Whether it may read the project root (files such as `.env`
    /// included); the user config can turn this off.
    pub reads_project_root: bool,
}

/// The answer to `plugin_grant`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginGrant {
    pub name: String,
    /// The project root the grant is for.
    pub project: String,
    /// What was granted (empty when the grant was refused).
    pub granted: crate::plugin::Permissions,
    /// `process` commands as resolved on `PATH` when granted.
    #[serde(default)]
    pub resolved: std::collections::BTreeMap<String, String>,
    /// The sha256 of the granted set (with what was resolved).
    #[serde(default)]
    pub sha256: String,
}

/// One check of `plugin_test`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginCheck {
    pub name: String,
    pub ok: bool,
    /// What was found, in plain words (what went wrong when `ok` is false).
    #[serde(default)]
    pub message: String,
}

/// The answer to `plugin_test`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginTestReport {
    /// The plugin directory tested.
    pub path: String,
    pub checks: Vec<PluginCheck>,
}

/// The answer to `cache_status`: the per-user store of task outputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheStatus {
    /// The store's directory.
    pub dir: String,
    /// Bytes of stored blobs (file contents and captured output).
    pub bytes: u64,
    /// The bound: past it, least recently used entries are evicted
    /// (`TASKRUSH_CACHE_MAX_BYTES` in the daemon's environment).
    pub limit_bytes: u64,
    /// Manifests: one per cache key of a task with `outputs`.
    pub entries: u64,
    pub blobs: u64,
    /// Cache hits of tasks with `outputs` since the daemon started.
    pub hits: u64,
    /// Output files written back by those hits.
    pub restored_files: u64,
}

/// The answer to `cache_prune`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachePruned {
    /// Manifests removed.
    pub entries: u64,
    /// Bytes of blobs removed.
    pub bytes: u64,
}

/// One task of a plan, as `explain_run` sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskExplained {
    pub task: String,
    /// Whether `run` would run its command now.
    pub would_run: bool,
    /// Why, one short sentence each: "no `cache_files`: not cached",
    /// "forced (--force)", "input `src/a.c` changed", "the command changed",
    /// "environment variable `MODE` changed" (names only, never values),
    /// "2 outputs missing or changed: restored from the cache", "up to
    /// date". A task whose dependency would run may still be up to date
    /// now and be found otherwise after that dependency ran.
    pub reasons: Vec<String>,
}

/// The answer to `explain_run`: the plan in run order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunExplained {
    pub file: String,
    pub tasks: Vec<TaskExplained>,
}

/// The answer to `find_projects`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectsFound {
    /// Sorted by `file`.
    pub projects: Vec<ProjectFound>,
    /// The walk stopped at `max_count` projects or at its limit of
    /// entries visited: there may be more.
    pub truncated: bool,
}

/// One project found under a workspace folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectFound {
    /// The project's directory (canonical).
    pub root: String,
    /// Its `.rush` file (canonical: `.rush`, else `.rush.yml`, else
    /// `.rush.yaml`, as discovery prefers them).
    pub file: String,
    /// With `parse`: whether it loads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<bool>,
    /// With `parse`, when it loads: how many tasks it declares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<usize>,
    /// With `parse`, when it does not load: the error a request would get.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<crate::error::WireError>,
}

/// One run in progress, as `list_runs` answers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub run_id: u64,
    /// The project's root and `.rush` file.
    pub root: String,
    pub file: String,
    /// The run's plan, in run order, each with its state now.
    pub tasks: Vec<TaskState>,
    /// When the run started (for a watch session: its current re-run),
    /// in milliseconds since the Unix epoch.
    pub started_ms: u64,
    pub client: crate::events::RunClient,
    /// The token the client named the run with, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Its tasks write to the client's terminal: `attach` gets their
    /// state, but no output.
    pub inherit_stdio: bool,
    /// A `run --watch` session (its `iteration` counts re-runs).
    pub watch: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iteration: Option<u32>,
}

/// A task of a run in progress and its state: `waiting`, `running`,
/// `cached`, `success`, `failed` or `cancelled`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskState {
    pub task: String,
    pub state: String,
}

/// One line a plugin logged (`log` notification), as `plugin_logs` and
/// `plugin_logs_follow` give them: the daemon keeps the last
/// [`PLUGIN_LOG_KEPT`] of every plugin, all levels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginLogLine {
    /// When the daemon received it (RFC 3339 UTC, to the millisecond).
    pub time: String,
    pub plugin: String,
    /// The project root of the plugin's instance, when it has one (not for
    /// `plugin test`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    /// The run it was serving, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<u64>,
    /// The task it was serving or named, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// `error`, `warn`, `info`, `debug`, or `progress` for a `progress`
    /// notification.
    pub level: String,
    /// Secrets masked (`***`).
    pub message: String,
}

/// Log lines kept per plugin name by the daemon.
pub const PLUGIN_LOG_KEPT: usize = 500;
/// The answer to `ui_open`: where the plugin manager page is served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UiOpened {
    /// `http://127.0.0.1:PORT/?token=…`: open it once; the token is
    /// exchanged for a cookie and dropped from the address.
    pub url: String,
    /// The server's port on 127.0.0.1.
    pub port: u16,
    /// Whether this call started the server (false: it was running).
    pub started: bool,
}
