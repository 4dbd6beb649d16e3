//! Plugins: external processes that add hooks and commands to a project.
//! The plugin host keeps every plugin process of every project, started on
//! first use and kept warm across runs, called with deadlines, restarted
//! with back-off, given up on when it keeps failing.
//!
//! The room, file by file:
//! - [`host`]: the registry of slots (per project root and name), restart
//!   by hand, shutdown;
//! - [`slot`]: one plugin of one project, its state, how a failure of its
//!   process is recorded;
//! - [`start`]: locating, spawning and the `initialize` handshake;
//! - [`swap`]: hot swap of a running plugin whose files or `.rush` entry
//!   changed;
//! - [`hooks`]: the task hooks of a run ([`RunPlugins`]), and why they
//!   fail a task ([`HookFailure`]);
//! - [`commands`]: the commands plugins add, their names checked;
//! - [`permissions`]: what an update asks beyond the grant, a plugin's
//!   environment;
//! - [`grants`]: the user's grants (`grants.json`) and the effective set
//!   of a plugin (declared ∩ granted − denied), `plugin grant`/`revoke`;
//! - [`failure`]: [`PluginFailure`], its [`Phase`], crash accounting and
//!   back-off;
//! - [`status`]: `plugin list` and `plugin info`, and the live plugins
//!   of `daemon status`;
//! - [`limits`]: a plugin's resource limits (`limits:`), their levels;
//! - [`host_calls`]: the host calls plugins of every kind make (one
//!   server: grants checked, denials audited);
//! - [`process`]: one plugin process and its JSON-RPC over stdio;
//! - [`output`]: a plugin's `log` and `progress` lines: kept for
//!   `plugin logs`, shown in the run it serves, progress on the event bus;
//! - [`stderr`]: a plugin's stderr, read and logged at bounded rates, its
//!   last lines kept;
//! - [`manifest`]: finding a plugin's directory and its `plugin.toml`;
//! - [`native`]: native plugins (`type: native`): the host process
//!   (`taskrushd --native-host LIB`) and the in-daemon mode;
//! - [`conformance`]: the conformance kit behind `plugin_test`;
//! - [`proxy`]: the HTTP(S) proxy that lets a plugin with a `network`
//!   host list reach those hosts only;
//! - [`audit`]: the audit trail (`audit.jsonl`), written off the hook path;
//! - [`disabled`]: plugins disabled per project (`plugin disable`), kept
//!   in `plugins-disabled.json`;
//! - [`wasm`]: WebAssembly plugins: the engine, the module cache, one
//!   instance per plugin and project, its sandbox and host calls;
//! - [`redact`]: secrets masked as `***` before anything is logged,
//!   recorded, reported or sent as an event.
//!
//! The rest of the daemon uses only what this file re-exports.
//!
//! Architecture invariants:
//! - The host never reads a `.rush` file: it is handed the parsed,
//!   validated [`RushFile`](crate::config::rush_file::RushFile) of the run or
//!   request.
//! - One process per plugin and project root serves every task and every
//!   run; it is restarted when its `.rush` entry changes.
//! - A plugin's failure (crash, exit before the handshake, junk, hang)
//!   reaches only the calls made to that plugin: it fails a task only when
//!   the plugin is `required: true`, otherwise the task goes on with a
//!   warning. A deliberate error answered by `before_task` (a veto) always
//!   stops the task.
//! - Crashes and timeouts are retried on next use after a back-off
//!   ([`failure::BACKOFF_START`] doubling to [`failure::BACKOFF_MAX`]);
//!   three of them within five minutes mark the plugin failed. Failures
//!   that a restart cannot fix (another protocol major, junk on stdout, a
//!   command name that is taken, an entry point that cannot be executed)
//!   mark it failed at once. A failed plugin is left alone until its
//!   manifest or entry files change, its `.rush` entry changes, or
//!   `plugin_restart`.
//! - Hooks run in the order the `.rush` file declares the plugins;
//!   `on_task_failure` then `after_task` in reverse order (every
//!   `on_task_failure` before any `after_task`).
//! - A plugin is swapped, never stopped under a call: a new process takes
//!   new calls once it has shaken hands, the old one finishes its calls.
//! - The process layer ([`process`]) never restarts anything: it reports,
//!   and the host decides.
//! - Plugin processes are started only through [`crate::process::spawn`].
//! - Nothing outside this room touches a plugin process or a slot: the API
//!   goes through [`PluginHost`], a run through [`RunPlugins`].
//! - This room reports failures as [`PluginFailure`]s (with their
//!   [`Phase`]); turning one into a JSON-RPC error is the API's job.

pub(crate) mod audit;
mod command_cache;
mod commands;
mod conformance;
mod disabled;
mod enforce;
mod failure;
mod grants;
mod hooks;
mod host;
mod host_calls;
mod limits;
mod manifest;
mod native;
mod output;
mod permissions;
mod process;
mod proxy;
mod redact;
mod slot;
mod start;
mod status;
mod stderr;
mod swap;
mod wasm;

pub(crate) use audit::usage;
pub(crate) use audit::{flush as flush_audit, open as open_audit, record as audit_record};
pub(crate) use command_cache::open as open_command_cache;
pub(crate) use conformance::test as conformance_test;
pub(crate) use disabled::{is_disabled, open as open_disabled};
pub(crate) use failure::{Phase, PluginFailure, not_declared};
pub(crate) use grants::open as open_grants;
pub(crate) use hooks::{HookFailure, RunPlugins};
pub(crate) use host::PluginHost;
pub(crate) use native::run_if_asked as run_native_host_if_asked;
pub(crate) use output::{follow as follow_logs, lines as log_lines};
pub(crate) use wasm::{MAX_MEMORY as WASM_MAX_MEMORY, MAX_MODULE_SIZE as WASM_MAX_MODULE_SIZE};
