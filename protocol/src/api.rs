//! The daemon's JSON-RPC API, declared once.
//!
//! `#[rpc(server)]` gives the daemon `TaskRushApiServer` to implement;
//! `#[rpc(client)]` gives Rust clients `TaskRushApiClient`. Parameters travel
//! by name (`"params": {"request": {...}}`) or by position (`"params": [...]`).

use jsonrpsee::core::SubscriptionResult;
use jsonrpsee::proc_macros::rpc;
use jsonrpsee::types::ErrorObjectOwned;

use crate::daemon::{
    CachePruned, CacheStatus, DaemonStatus, Hello, PluginDetails, PluginGrant, PluginPending,
    PluginStatus, PluginTestReport, ProjectsFound, RunExplained, RunInfo, TaskList,
};
use crate::plugin::CommandResult;
#[allow(unused_imports)] // used by the macro's `item = RunEvent`
use crate::run::{RunEvent, RunRequest};

#[cfg_attr(all(feature = "server", feature = "client"), rpc(server, client))]
#[cfg_attr(all(feature = "server", not(feature = "client")), rpc(server))]
#[cfg_attr(all(feature = "client", not(feature = "server")), rpc(client))]
pub trait TaskRushApi {
    /// Handshake: the client's TaskRush version and protocol major. Fails
    /// with `PROTOCOL_MISMATCH` when the daemon does not speak that major,
    /// or lacks a capability named in `required`. The answer lists the
    /// daemon's capabilities, and which of `optional` it has.
    ///
    /// `client` names the client (an editor extension's name): runs it
    /// starts say so in `list_runs` and the event stream.
    #[method(name = "hello", with_extensions)]
    fn hello(
        &self,
        version: String,
        protocol: u32,
        required: Option<Vec<String>>,
        optional: Option<Vec<String>>,
        client: Option<String>,
    ) -> Result<Hello, ErrorObjectOwned>;

    /// Start a run; its events arrive as `run_event` notifications, from
    /// `run_started` to `run_finished`. Unsubscribing cancels the run.
    #[subscription(name = "run" => "run_event", unsubscribe = "run_unsubscribe", item = RunEvent, with_extensions)]
    async fn run(&self, request: RunRequest) -> SubscriptionResult;

    /// `taskrush NAME args…` in one request, as Bazel's server dispatches
    /// argv: when `request.tasks[0]` is a command a plugin adds, the
    /// command runs with `args` (the words typed after the name, exactly
    /// as typed) and the stream is one `command_finished` event; otherwise
    /// it is a `run` of `request` (`args` unused), unless `command_only`,
    /// which answers `-32602` instead. Only the plugin owning the command
    /// is started (see `list_tasks` about the command cache).
    #[subscription(name = "dispatch" => "dispatch_event", unsubscribe = "dispatch_unsubscribe", item = RunEvent, with_extensions)]
    async fn dispatch(
        &self,
        request: RunRequest,
        args: Vec<String>,
        command_only: Option<bool>,
    ) -> SubscriptionResult;

    /// Cancel a run: its tasks get SIGINT, then SIGTERM, then SIGKILL after
    /// a grace period (`force` skips straight to SIGKILL).
    /// The run is named by `run_id`, or by the `token` this connection
    /// gave it.
    #[method(name = "cancel_run", with_extensions)]
    fn cancel_run(
        &self,
        run_id: Option<u64>,
        force: Option<bool>,
        token: Option<String>,
    ) -> Result<bool, ErrorObjectOwned>;

    /// The runs in progress, of every client, oldest first.
    #[method(name = "list_runs")]
    fn list_runs(&self) -> Result<Vec<RunInfo>, ErrorObjectOwned>;

    /// Follow a run another connection started: first an `attached` event
    /// (the run and its tasks' states now), then the run's events from
    /// then on, to its end. An observer never slows the run: one that
    /// falls behind loses events and gets `observer_lagged` instead.
    #[subscription(name = "attach" => "attach_event", unsubscribe = "attach_unsubscribe", item = serde_json::Value)]
    async fn attach(&self, run_id: u64) -> SubscriptionResult;

    /// Check `text`, the content of the `.rush` file `path` in a client's
    /// unsaved buffer: the error a load would answer (parse errors,
    /// unknown keys, unknown dependencies, cycles, includes, read relative
    /// to `path`), its warnings, and the symbols it defines. Loads nothing
    /// into the project. Columns in `position_encoding` (`utf-32`, the
    /// default; `utf-16`; `utf-8`), said in the answer.
    #[method(name = "check_rush")]
    async fn check_rush(
        &self,
        path: String,
        text: String,
        position_encoding: Option<String>,
    ) -> Result<crate::editor::RushCheck, ErrorObjectOwned>;

    /// The tasks of the project found from `cwd` (or `file`), sorted by name.
    #[method(name = "list_tasks")]
    /// With `env` (the client's environment), the project's plugins are
    /// started to list their commands; without, only running ones are.
    /// `position_encoding` (`utf-32`, the default; `utf-16`; `utf-8`)
    /// counts the tasks' columns and a config error's column.
    async fn list_tasks(
        &self,
        cwd: String,
        file: Option<String>,
        env: Option<std::collections::BTreeMap<String, String>>,
        position_encoding: Option<String>,
    ) -> Result<TaskList, ErrorObjectOwned>;

    /// The plugins of the project found from `cwd` (or `file`), in the
    /// order the `.rush` file declares them. Starts nothing.
    #[method(name = "plugin_list")]
    async fn plugin_list(
        &self,
        cwd: String,
        file: Option<String>,
    ) -> Result<Vec<PluginStatus>, ErrorObjectOwned>;

    /// One plugin of the project: manifest, state, last stderr lines.
    #[method(name = "plugin_info")]
    async fn plugin_info(
        &self,
        cwd: String,
        file: Option<String>,
        name: String,
    ) -> Result<PluginDetails, ErrorObjectOwned>;

    /// Stop a plugin's process if it runs, forget its failures and start
    /// it again with the client's environment `env`; answers its new status.
    #[method(name = "plugin_restart")]
    async fn plugin_restart(
        &self,
        cwd: String,
        file: Option<String>,
        name: String,
        env: Option<std::collections::BTreeMap<String, String>>,
    ) -> Result<PluginStatus, ErrorObjectOwned>;

    /// The plugins of the project that ask for permissions the user has
    /// not granted (first use, or a widening update), in declared order.
    /// The CLI asks the user about each on a terminal. Starts nothing.
    #[method(name = "plugin_pending")]
    async fn plugin_pending(
        &self,
        cwd: String,
        file: Option<String>,
    ) -> Result<Vec<PluginPending>, ErrorObjectOwned>;

    /// Grant plugin `name` what it asks for (its manifest's permissions
    /// less what the user config denies), `process` commands resolved on
    /// the `PATH` of `env`; stored in the user's grants file. With
    /// `refuse: true`, records that the user said no (nothing stored).
    #[method(name = "plugin_grant")]
    async fn plugin_grant(
        &self,
        cwd: String,
        file: Option<String>,
        name: String,
        refuse: Option<bool>,
        env: Option<std::collections::BTreeMap<String, String>>,
    ) -> Result<PluginGrant, ErrorObjectOwned>;

    /// Withdraw plugin `name`'s grant for this project; its process is
    /// stopped. Answers whether a grant was stored.
    #[method(name = "plugin_revoke")]
    async fn plugin_revoke(
        &self,
        cwd: String,
        file: Option<String>,
        name: String,
    ) -> Result<bool, ErrorObjectOwned>;

    /// Run a command a plugin adds (`taskrush NAME args…`). `env` is the
    /// client's environment (for `${VAR}` in the plugin's config).
    #[method(name = "plugin_command")]
    async fn plugin_command(
        &self,
        cwd: String,
        file: Option<String>,
        name: String,
        args: Vec<String>,
        env: Option<std::collections::BTreeMap<String, String>>,
    ) -> Result<CommandResult, ErrorObjectOwned>;

    /// Disable plugin `name` for this project (`disable: true`) or enable
    /// it again: a disabled plugin is stopped and not started, its hooks
    /// are skipped with a warning, a `required` one fails its tasks. Kept
    /// across daemon restarts. Answers whether anything changed.
    #[method(name = "plugin_disable")]
    async fn plugin_disable(
        &self,
        cwd: String,
        file: Option<String>,
        name: String,
        disable: bool,
    ) -> Result<bool, ErrorObjectOwned>;

    /// The daemon's metrics since it started: per plugin and per task, of
    /// the project found from `cwd` (or `file`), or of every project when
    /// `cwd` is absent. Live plugin processes' CPU time and peak RSS are
    /// read when asked.
    #[method(name = "metrics")]
    async fn metrics(
        &self,
        cwd: Option<String>,
        file: Option<String>,
    ) -> Result<crate::metrics::Metrics, ErrorObjectOwned>;

    /// The conformance kit: start the plugin in directory `path`, drive it
    /// through the whole protocol and report each check.
    #[method(name = "plugin_test")]
    async fn plugin_test(
        &self,
        path: String,
        env: Option<std::collections::BTreeMap<String, String>>,
    ) -> Result<PluginTestReport, ErrorObjectOwned>;

    /// The last lines plugin `name` logged (every project's instance of
    /// it, oldest first; all levels), as the daemon keeps them in memory.
    #[method(name = "plugin_logs")]
    fn plugin_logs(
        &self,
        name: String,
    ) -> Result<Vec<crate::daemon::PluginLogLine>, ErrorObjectOwned>;

    /// Follow plugin `name`'s log: the kept lines first, then each new one,
    /// as `plugin_log` notifications, until the client unsubscribes or
    /// leaves.
    #[subscription(name = "plugin_logs_follow" => "plugin_log", unsubscribe = "plugin_logs_unsubscribe", item = crate::daemon::PluginLogLine)]
    async fn plugin_logs_follow(&self, name: String) -> SubscriptionResult;
    /// Search every configured registry for `text` in plugin names and
    /// descriptions (one signed `search.jsonl` fetch per registry).
    #[method(name = "plugin_search")]
    async fn plugin_search(
        &self,
        text: String,
    ) -> Result<Vec<crate::registry::SearchHit>, ErrorObjectOwned>;

    /// Install `spec` (`NAME[@REQ]`, `REGISTRY/NAME[@REQ]`, or an absolute
    /// path to a directory, `.tar.gz`, `.wasm` or `.so`) into the user's
    /// plugins directory, verified; `allow_unsigned` only for local paths.
    /// With `cwd` (and `file`), a registry install whose version satisfies
    /// that project's `.rush` entry for the plugin is written to its
    /// `.rush.lock` (no `.rush` found: nothing is written).
    #[method(name = "plugin_install")]
    async fn plugin_install(
        &self,
        spec: String,
        allow_unsigned: Option<bool>,
        cwd: Option<String>,
        file: Option<String>,
        progress_id: Option<String>,
    ) -> Result<crate::registry::Receipt, ErrorObjectOwned>;

    /// The installed plugins: their receipts.
    #[method(name = "plugin_installed")]
    async fn plugin_installed(&self) -> Result<Vec<crate::registry::Receipt>, ErrorObjectOwned>;

    /// Remove an installed plugin (every version, or `version`).
    #[method(name = "plugin_remove")]
    async fn plugin_remove(
        &self,
        name: String,
        version: Option<String>,
    ) -> Result<crate::registry::Removed, ErrorObjectOwned>;

    /// Pack the plugin directory `path`, sign it with the minisign secret
    /// key `key` and add it to the registry directory `registry` (index
    /// line, `search.jsonl`, signed snapshot). Paths are absolute.
    #[method(name = "plugin_publish")]
    async fn plugin_publish(
        &self,
        path: String,
        registry: String,
        key: String,
        platform: Option<String>,
        expires_days: Option<u64>,
        revoke: Option<Vec<String>>,
    ) -> Result<crate::registry::Published, ErrorObjectOwned>;

    /// `plugin install --from-rush`: install every plugin the project's
    /// `.rush` file needs from the registries, the versions locked in its
    /// `.rush.lock` when the lock is fresh, and write the lock; `locked`
    /// fails on a stale lock instead of re-resolving.
    #[method(name = "plugin_sync")]
    async fn plugin_sync(
        &self,
        cwd: String,
        file: Option<String>,
        locked: Option<bool>,
        progress_id: Option<String>,
    ) -> Result<crate::lockfile::LockReport, ErrorObjectOwned>;

    /// `plugin update [NAME]`: the newest version within each `.rush`
    /// requirement (or `name`'s only), installed and locked.
    #[method(name = "plugin_update")]
    async fn plugin_update(
        &self,
        cwd: String,
        file: Option<String>,
        name: Option<String>,
        locked: Option<bool>,
        progress_id: Option<String>,
    ) -> Result<crate::lockfile::LockReport, ErrorObjectOwned>;

    /// `plugin lock --check`: what is stale or missing in `.rush.lock`.
    #[method(name = "plugin_lock_check")]
    async fn plugin_lock_check(
        &self,
        cwd: String,
        file: Option<String>,
    ) -> Result<crate::lockfile::LockCheck, ErrorObjectOwned>;

    /// The daemon's global event stream: config reloads, plugin life,
    /// runs and tasks of every client. Events arrive as `event`
    /// notifications; the subscription is live once its id is answered.
    #[subscription(name = "events" => "event", unsubscribe = "events_unsubscribe", item = crate::events::DaemonEvent)]
    async fn events(&self) -> SubscriptionResult;

    #[method(name = "daemon_status")]
    fn daemon_status(&self) -> Result<DaemonStatus, ErrorObjectOwned>;

    /// Stop the daemon: running tasks are cancelled, clients get a final
    /// error, the socket is removed.
    #[method(name = "daemon_stop")]
    fn daemon_stop(&self) -> Result<bool, ErrorObjectOwned>;

    /// The per-user output store: size, limit, entries, hits and restores.
    #[method(name = "cache_status")]
    async fn cache_status(&self) -> Result<CacheStatus, ErrorObjectOwned>;

    /// Removes least recently used entries of the output store until its
    /// blobs take at most `max_bytes` (0, the default: empty it).
    #[method(name = "cache_prune")]
    async fn cache_prune(&self, max_bytes: Option<u64>) -> Result<CachePruned, ErrorObjectOwned>;

    /// Every project (`.rush` file) under the absolute `folder`, at most
    /// `max_depth` directories down (default 8) and `max_count` projects
    /// (default 1000), skipping what `.gitignore` files ignore and `.git`.
    /// With `parse`, each is loaded as `list_tasks` would load it.
    #[method(name = "find_projects")]
    async fn find_projects(
        &self,
        folder: String,
        max_depth: Option<usize>,
        max_count: Option<usize>,
        parse: Option<bool>,
    ) -> Result<ProjectsFound, ErrorObjectOwned>;

    /// What `run` would do for the plan of `request` (its `tasks`, `file`,
    /// `cwd`, `env`, `force`): per task, in run order, whether it would run
    /// and why. Runs nothing: no task, no hook, no plugin started.
    #[method(name = "explain_run")]
    async fn explain_run(&self, request: RunRequest) -> Result<RunExplained, ErrorObjectOwned>;

    /// Start the plugin manager page's HTTP server on 127.0.0.1 (a free
    /// port; reused while it runs) and answer its address with a fresh
    /// token, exchanged once for a cookie by the browser.
    #[method(name = "ui_open")]
    async fn ui_open(&self) -> Result<crate::daemon::UiOpened, ErrorObjectOwned>;
}
