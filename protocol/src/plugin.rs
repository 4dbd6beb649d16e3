//! The plugin protocol: messages between the daemon (host) and a plugin.
//!
//! API boundary. One message set for every plugin kind: external plugins
//! carry it as newline-delimited JSON-RPC 2.0 over their stdin/stdout;
//! WebAssembly and native plugins (later) carry the very same JSON
//! messages through another channel. `docs/plugins.md` is the normative
//! description for plugin authors.
//!
//! Compatibility: [`PLUGIN_PROTOCOL_VERSION`] is an integer major,
//! independent of TaskRush's version, negotiated by `initialize`. Both
//! sides ignore fields they do not know; new optional fields are
//! compatible, anything else is a new major.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The plugin protocol major this host speaks.
pub const PLUGIN_PROTOCOL_VERSION: u32 = 1;

/// Method names, host → plugin (requests).
pub mod method {
    pub const INITIALIZE: &str = "initialize";
    pub const BEFORE_TASK: &str = "before_task";
    pub const AFTER_TASK: &str = "after_task";
    pub const ON_TASK_FAILURE: &str = "on_task_failure";
    pub const COMMAND: &str = "command";
    pub const SHUTDOWN: &str = "shutdown";
    /// Plugin → host notification: a log line.
    pub const LOG: &str = "log";
    /// Plugin → host notification: progress of long work.
    pub const PROGRESS: &str = "progress";
}

/// A lifecycle hook a plugin may implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hook {
    /// Before a task's command runs. An error stops the task (a veto).
    BeforeTask,
    /// After a task ended (success, failure, cancelled, or cached).
    AfterTask,
    /// After a task failed, with the failure.
    OnTaskFailure,
    /// A hook name from a newer protocol: ignored by this host.
    #[serde(other)]
    Unknown,
}

impl Hook {
    pub fn method(self) -> &'static str {
        match self {
            Hook::BeforeTask => method::BEFORE_TASK,
            Hook::AfterTask => method::AFTER_TASK,
            Hook::OnTaskFailure => method::ON_TASK_FAILURE,
            Hook::Unknown => "unknown",
        }
    }
}

/// `initialize` params (host → plugin), always the first message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InitializeParams {
    /// The protocol majors the host speaks; the plugin picks one.
    pub protocol_versions: Vec<u32>,
    /// TaskRush's version.
    pub taskrush_version: String,
    /// The plugin's name as the `.rush` file names it.
    pub name: String,
    /// The global `config` of the plugin's `.rush` entry, with `${VAR}`
    /// expanded from the environment of the client that first used it.
    #[serde(default)]
    pub config: Value,
    /// The project's root directory (where its `.rush` file is).
    pub project_root: String,
    /// The permissions granted to the plugin.
    #[serde(default)]
    pub permissions: Vec<Permission>,
    /// A private directory the plugin may write, kept across runs (Linux
    /// sandbox); absent when the host has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<String>,
    /// A private temporary directory the plugin may write (also its
    /// `TMPDIR`); absent when the host has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmp_dir: Option<String>,
    /// Every host call this host serves (`protocol/src/host.rs`
    /// `method`); a plugin calls no other. Empty from a host older than
    /// host calls, which answers none.
    #[serde(default)]
    pub host_methods: Vec<String>,
}

/// `initialize` result (plugin → host).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InitializeResult {
    pub name: String,
    pub version: String,
    /// The protocol major the plugin chose from `protocol_versions`.
    pub protocol: u32,
    /// The hooks the plugin implements; the host calls no other hook.
    #[serde(default)]
    pub hooks: Vec<Hook>,
    /// Commands the plugin adds: `taskrush <name> args…`.
    #[serde(default)]
    pub commands: Vec<PluginCommand>,
}

/// A command a plugin adds to `taskrush` (the RFC's `PluginCommand`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginCommand {
    pub name: String,
    #[serde(default)]
    pub description: String,
}

/// What a hook learns about a task (the RFC's `TaskContext`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskContext {
    pub task_name: String,
    /// The task's `cmd` (empty for an aggregate task).
    pub command: String,
    /// Where the task runs: the project root.
    pub working_dir: String,
    /// The task's environment, limited to the variables the plugin's
    /// Environment permission names.
    #[serde(default)]
    pub env_vars: BTreeMap<String, String>,
    /// The plugin's configuration for this task: its global `config`
    /// merged with the task's `plugins.<name>` entry (task keys win).
    #[serde(default)]
    pub config: Value,
    /// The run this task belongs to.
    pub run_id: u64,
}

/// `before_task` and `on_task_failure` and `after_task` params share the
/// context; `after_task` adds the result, `on_task_failure` the error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HookParams {
    pub context: TaskContext,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<TaskResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<TaskError>,
}

/// How a task ended (the RFC's `TaskResult`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskResult {
    /// `success`, `failed` or `cancelled`.
    pub status: crate::run::TaskStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
    /// The task was up to date and did not run.
    #[serde(default)]
    pub cached: bool,
}

/// Why a task failed (the RFC's `TaskError`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskError {
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

/// `command` params: `taskrush <name> args…`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandParams {
    pub name: String,
    #[serde(default)]
    pub args: Vec<String>,
    /// The client's working directory.
    pub cwd: String,
}

/// `command` result: what the CLI prints and exits with.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CommandResult {
    #[serde(default)]
    pub exit_code: i32,
    #[serde(default)]
    pub stdout: String,
    #[serde(default)]
    pub stderr: String,
}

/// `log` notification (plugin → host): goes to the daemon log under the
/// plugin's name (`taskrush daemon logs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogParams {
    /// `error`, `warn`, `info` or `debug`.
    #[serde(default = "info")]
    pub level: String,
    pub message: String,
    /// The task the line is about, when the plugin knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
}

fn info() -> String {
    "info".into()
}

/// `progress` notification (plugin → host).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgressParams {
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// 0 to 100, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
}

/// A permission a plugin requests in its manifest (the RFC's `Permission`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Permission {
    /// Spelled `filesystem` on the wire, as in `plugin.toml`.
    #[serde(rename = "filesystem")]
    FileSystem {
        paths: Vec<String>,
    },
    Network {
        hosts: Vec<String>,
    },
    Environment {
        vars: Vec<String>,
    },
    Process {
        commands: Vec<String>,
    },
    /// Plugins whose commands it may call through the host.
    Plugins {
        names: Vec<String>,
    },
}

/// The `[permissions]` table of `plugin.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Permissions {
    #[serde(default)]
    pub filesystem: Vec<String>,
    #[serde(default)]
    pub network: Vec<String>,
    #[serde(default)]
    pub environment: Vec<String>,
    #[serde(default)]
    pub process: Vec<String>,
    /// Other plugins whose commands this one calls through the host
    /// (`call_command`), by their `.rush` name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<String>,
}

impl Permissions {
    /// Whether it asks for nothing.
    pub fn is_empty(&self) -> bool {
        self.filesystem.is_empty()
            && self.network.is_empty()
            && self.environment.is_empty()
            && self.process.is_empty()
            && self.plugins.is_empty()
    }

    /// The kinds with their entries, in documentation order.
    pub fn kinds(&self) -> [(&'static str, &Vec<String>); 5] {
        [
            ("filesystem", &self.filesystem),
            ("network", &self.network),
            ("environment", &self.environment),
            ("process", &self.process),
            ("plugins", &self.plugins),
        ]
    }

    /// As the list of the RFC's `Permission`s (empty kinds left out).
    pub fn to_list(&self) -> Vec<Permission> {
        let mut out = Vec::new();
        if !self.filesystem.is_empty() {
            out.push(Permission::FileSystem {
                paths: self.filesystem.clone(),
            });
        }
        if !self.network.is_empty() {
            out.push(Permission::Network {
                hosts: self.network.clone(),
            });
        }
        if !self.environment.is_empty() {
            out.push(Permission::Environment {
                vars: self.environment.clone(),
            });
        }
        if !self.process.is_empty() {
            out.push(Permission::Process {
                commands: self.process.clone(),
            });
        }
        if !self.plugins.is_empty() {
            out.push(Permission::Plugins {
                names: self.plugins.clone(),
            });
        }
        out
    }
}

/// The kind of a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PluginType {
    #[default]
    External,
    Wasm,
    Native,
}

/// `plugin.toml`: the manifest in a plugin's directory (the RFC's
/// `PluginManifest`).
///
/// ```toml
/// name = "slack-notify"
/// version = "1.0.0"
/// description = "Post task results to a Slack webhook"
/// author = "TaskRush developers"
/// license = "MIT"
/// entry_point = ["python3", "-I", "main.py"]
/// taskrush_version = ">=0.3"
///
/// [permissions]
/// environment = ["SLACK_WEBHOOK"]
/// network = ["hooks.slack.com"]
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginManifest {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub author: String,
    #[serde(default)]
    pub license: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub homepage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// A semver requirement on TaskRush's version, e.g. `">=0.3, <2"`.
    pub taskrush_version: String,
    #[serde(default, rename = "type")]
    pub plugin_type: PluginType,
    /// The command that starts the plugin, run in the plugin's directory:
    /// an argument list (`["node", "index.mjs"]`) — no shell.
    pub entry_point: Vec<String>,
    #[serde(default)]
    pub permissions: Permissions,
    /// `"required"`: refuse to start the plugin when its permissions
    /// cannot all be enforced on this system; else best effort.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforcement: Option<String>,
}

/// JSON-RPC error codes in the plugin protocol.
pub mod error {
    /// A hook refused (e.g. `before_task` vetoing a task). Any error from
    /// `before_task` stops the task; this code says it was deliberate.
    pub const VETO: i32 = -32010;
    /// The plugin does not speak any of the offered protocol majors.
    pub const UNSUPPORTED_PROTOCOL: i32 = -32011;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_params_serialize_without_absent_parts() {
        let p = HookParams {
            context: TaskContext {
                task_name: "build".into(),
                command: "make".into(),
                working_dir: "/p".into(),
                env_vars: BTreeMap::new(),
                config: serde_json::json!({"a": 1}),
                run_id: 3,
            },
            result: None,
            error: None,
        };
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"context":{"task_name":"build","command":"make","working_dir":"/p","env_vars":{},"config":{"a":1},"run_id":3}}"#
        );
    }

    #[test]
    fn unknown_fields_from_a_newer_plugin_are_ignored() {
        let r: InitializeResult = serde_json::from_str(
            r#"{"name":"x","version":"1","protocol":1,"hooks":["after_task"],"future":true}"#,
        )
        .unwrap();
        assert_eq!(r.hooks, [Hook::AfterTask]);
    }
}
