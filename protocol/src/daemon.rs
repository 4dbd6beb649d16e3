//! Handshake, status and listing types.

use serde::{Deserialize, Serialize};

/// The answer to `hello`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The daemon's TaskRush version.
    pub version: String,
    /// The protocol major the daemon speaks.
    pub protocol: u32,
    pub pid: u32,
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
}

/// The answer to `list_tasks`: tasks sorted by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskList {
    /// The `.rush` file listed.
    pub file: String,
    pub tasks: Vec<TaskInfo>,
}
