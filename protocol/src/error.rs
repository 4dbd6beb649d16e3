//! Error codes and structured error data.
//!
//! Errors that cross the socket are data: a JSON-RPC error code, a message
//! and [`ErrorData`]. Clients render them; the daemon never pre-renders.

use serde::{Deserialize, Serialize};

/// Standard JSON-RPC 2.0 codes.
pub const PARSE_ERROR: i32 = -32700;
pub const INVALID_REQUEST: i32 = -32600;
pub const METHOD_NOT_FOUND: i32 = -32601;
pub const INVALID_PARAMS: i32 = -32602;
pub const INTERNAL_ERROR: i32 = -32603;

/// The `.rush` file could not be found, read, parsed or validated.
pub const CONFIG_ERROR: i32 = -32001;
/// A requested task does not exist.
pub const TASK_NOT_FOUND: i32 = -32002;
/// The client speaks a protocol major the daemon does not.
pub const PROTOCOL_MISMATCH: i32 = -32003;
/// No run with that id.
pub const RUN_NOT_FOUND: i32 = -32004;
/// The daemon is shutting down and takes no new work.
pub const SHUTTING_DOWN: i32 = -32005;
/// A message exceeded the size limit.
pub const TOO_LARGE: i32 = -32006;
/// Too many requests in flight on this connection.
pub const BUSY: i32 = -32007;
/// The first target of a `run` is not a task but a command a plugin adds:
/// the client should send `plugin_command` instead. `data.command` names
/// it and `data.plugin` names the plugin.
pub const PLUGIN_COMMAND: i32 = -32008;
/// A plugin is not declared, could not be started, failed, or refused
/// what was asked of it. `data.plugin` names it.
pub const PLUGIN_ERROR: i32 = -32009;
/// A registry operation failed (`plugin_search`, `plugin_install`,
/// `plugin_remove`, `plugin_publish`): unreachable, not found, refused.
pub const REGISTRY_ERROR: i32 = -32030;

/// The structured `data` of an error. Every field is optional; clients
/// render what is present.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorData {
    /// The file the error is about (absolute path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// 1-based line in `path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// 1-based column in `path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    /// The task the error is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// What the user can do about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// The plugin the error is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    /// The plugin command the error is about (`PLUGIN_COMMAND`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
}

impl ErrorData {
    /// `path:line:column`, as far as known.
    pub fn location(&self) -> Option<String> {
        let path = self.path.as_deref()?;
        Some(match (self.line, self.column) {
            (Some(l), Some(c)) => format!("{path}:{l}:{c}"),
            (Some(l), None) => format!("{path}:{l}"),
            _ => path.to_owned(),
        })
    }

    pub fn is_empty(&self) -> bool {
        *self == ErrorData::default()
    }
}

/// A JSON-RPC error object as it travels, for clients that parse responses
/// themselves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    pub code: i32,
    /// Empty when a peer left it out (plugins are written by others).
    #[serde(default)]
    pub message: String,
    /// Usually an [`ErrorData`]; any JSON from other servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

impl WireError {
    /// The structured data, when it is ours.
    pub fn error_data(&self) -> ErrorData {
        self.data
            .as_ref()
            .and_then(|d| serde_json::from_value(d.clone()).ok())
            .unwrap_or_default()
    }
}
