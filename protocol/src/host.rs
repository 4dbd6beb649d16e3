//! Host calls: requests a plugin makes of the host (plugin → host), and
//! the guest ABI that carries every plugin message for WebAssembly
//! plugins.
//!
//! API boundary. These are JSON-RPC 2.0 requests with the same framing as
//! every other plugin message: a WebAssembly guest sends them through its
//! `taskrush.host_call` import, a native plugin through its host callback,
//! an external plugin as requests on its stdout (answered on its stdin). Every call is
//! checked against the plugin's *granted* permissions; a call the grants
//! do not allow is answered with [`error::PERMISSION_DENIED`] and recorded
//! in the audit trail. `log` and `progress` stay notifications (see
//! [`crate::plugin::method`]).
//!
//! Compatibility: new methods and new optional fields are compatible.
//! The host lists the methods it serves in `initialize` (`host_methods`);
//! a plugin calls no other, so a newer plugin fails at once on an older
//! host instead of waiting. A host that does not know a method answers
//! -32601 (method not found).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Method names, plugin → host (requests).
pub mod method {
    /// An HTTP(S) request to a granted `network` host.
    pub const HTTP_REQUEST: &str = "http_request";
    /// The value of a granted `environment` variable.
    pub const ENV_GET: &str = "env_get";
    /// Read a file within the granted `filesystem` paths (or the
    /// plugin's own directory, data dir or the project root).
    pub const READ_FILE: &str = "read_file";
    /// Write a file within the granted writable `filesystem` paths or the
    /// plugin's data or tmp dir.
    pub const WRITE_FILE: &str = "write_file";
    /// Run a granted `process` command (no shell) under the plugin's
    /// sandbox.
    pub const RUN_COMMAND: &str = "run_command";
    /// The project's tasks as written (unexpanded) and their edges.
    pub const TASK_GRAPH: &str = "task_graph";
    /// The results of the run the plugin is serving, so far.
    pub const TASK_RESULTS: &str = "task_results";
    /// Call another plugin's command through the host (a granted
    /// `plugins` entry).
    pub const CALL_COMMAND: &str = "call_command";

    /// Every method a host of this version serves, as it lists them in
    /// `initialize` (`host_methods`).
    pub const ALL: &[&str] = &[
        ENV_GET,
        READ_FILE,
        WRITE_FILE,
        HTTP_REQUEST,
        RUN_COMMAND,
        TASK_GRAPH,
        TASK_RESULTS,
        CALL_COMMAND,
    ];
}

/// `http_request` params.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpRequestParams {
    /// `GET`, `POST`, … (default `GET`).
    #[serde(default = "get")]
    pub method: String,
    /// `http://` or `https://` URL whose host the `network` grant names.
    pub url: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The request body as UTF-8 text (empty: none).
    #[serde(default)]
    pub body: String,
    /// Give up after this long (default and cap: the call's deadline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

fn get() -> String {
    "GET".into()
}

/// `http_request` result: any HTTP status is a result, not an error.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HttpRequestResult {
    pub status: u16,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The response body as text (invalid UTF-8 replaced), at most
    /// [`MAX_BODY_BYTES`].
    #[serde(default)]
    pub body: String,
}

/// The largest request or response body a host call carries.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// `env_get` params.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvGetParams {
    pub name: String,
}

/// `env_get` result: `value` is absent when the variable is granted but
/// not set.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EnvGetResult {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// `read_file` params. A relative path is relative to the project root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadFileParams {
    pub path: String,
}

/// `read_file` result: the file's contents as UTF-8 text (at most
/// [`MAX_BODY_BYTES`]; a file that is not UTF-8 is an error).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ReadFileResult {
    pub contents: String,
}

/// `write_file` params. A relative path is relative to the project root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteFileParams {
    pub path: String,
    pub contents: String,
    /// Append instead of replacing.
    #[serde(default)]
    pub append: bool,
}

/// `write_file` result.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WriteFileResult {
    pub bytes_written: u64,
}

/// `run_command` params: `program` is a name the `process` grant lists
/// (resolved on `PATH`) or its absolute path; no shell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunCommandParams {
    pub program: String,
    #[serde(default)]
    pub args: Vec<String>,
    /// Working directory (default: the project root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Written to the program's stdin, then closed.
    #[serde(default)]
    pub stdin: String,
    /// Give up after this long (default and cap: the call's deadline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// `run_command` result: a non-zero exit is a result, not an error.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RunCommandResult {
    /// Absent when the program was killed by a signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub stdout: String,
    #[serde(default)]
    pub stderr: String,
}

/// `task_graph` params: none.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TaskGraphParams {}

/// `task_graph` result: the project's tasks as the `.rush` file writes
/// them (nothing expanded), by name.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TaskGraphResult {
    /// The project's root directory.
    pub root: String,
    pub tasks: BTreeMap<String, GraphTask>,
    /// Dependency edges `[task, dependency]`: the task runs after it.
    #[serde(default)]
    pub edges: Vec<[String; 2]>,
}

/// One task of [`TaskGraphResult`], as written.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GraphTask {
    /// The shell command, unexpanded (absent for an aggregate task).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub deps: Vec<String>,
    /// Its `env:` in file order. `value` is present only for a variable
    /// the plugin's `environment` grant names; for any other it is
    /// absent (the name is kept).
    #[serde(default)]
    pub env: Vec<GraphEnv>,
    /// `cache_files` globs.
    #[serde(default)]
    pub sources: Vec<String>,
    #[serde(default)]
    pub outputs: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    /// The plugins the task configures (`plugins:`), by name.
    #[serde(default)]
    pub plugins: Vec<String>,
}

/// One `env:` entry of a [`GraphTask`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GraphEnv {
    pub name: String,
    /// As written (unexpanded); absent when not granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// `task_results` params: the run (default: the run of the hook or
/// command the plugin is answering).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TaskResultsParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<u64>,
}

/// `task_results` result: the tasks of the run that ended so far, in
/// the order they ended.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TaskResultsResult {
    pub run_id: u64,
    pub tasks: Vec<TaskResultEntry>,
}

/// One ended task of [`TaskResultsResult`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskResultEntry {
    pub task: String,
    /// `success`, `failed` or `cancelled`.
    pub status: crate::run::TaskStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
    #[serde(default)]
    pub cached: bool,
}

/// `call_command` params: run `command` of plugin `plugin` (a name of
/// the caller's `plugins` grant) with `args`; the result is the callee's
/// [`crate::plugin::CommandResult`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallCommandParams {
    pub plugin: String,
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
}

/// JSON-RPC error codes of host calls (beside the standard ones).
pub mod error {
    /// The plugin's grants do not allow this call; `data` is a
    /// [`super::Denied`].
    pub const PERMISSION_DENIED: i32 = -32020;
    /// The call was allowed but failed (file missing, host unreachable,
    /// program not found, too large, deadline passed); the message says
    /// which.
    pub const FAILED: i32 = -32021;
}

/// `data` of a [`error::PERMISSION_DENIED`] error: which permission the
/// call needed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Denied {
    /// `filesystem`, `network`, `environment`, `process` or `plugins`.
    pub permission: String,
    /// The path, host, variable or program asked for.
    pub item: String,
}

/// The C ABI of native plugins (a `cdylib`: `.so` on Linux, `.dylib` on
/// macOS, `.dll` on Windows), version [`native::ABI_VERSION`].
/// `docs/plugins.md` ("The native ABI") is the normative text.
///
/// ```c
/// typedef int32_t (*taskrush_host_fn)(void *ctx, const uint8_t *msg, size_t len,
///                                     const uint8_t **answer, size_t *answer_len);
/// uint32_t taskrush_native_abi_version(void);
/// int32_t taskrush_native_call(const uint8_t *msg, size_t len, void *ctx,
///                              taskrush_host_fn host_call, uint8_t **out, size_t *out_len);
/// void taskrush_native_free(uint8_t *ptr, size_t len);
/// ```
pub mod native {
    /// The ABI this host speaks. A library whose
    /// `taskrush_native_abi_version` returns another number is refused,
    /// naming both, before any other symbol is used.
    pub const ABI_VERSION: u32 = 1;
    /// `() -> u32`: the ABI the library was built for; called first.
    pub const SYMBOL_ABI_VERSION: &str = "taskrush_native_abi_version";
    /// `(msg, len, ctx, host_call, out, out_len) -> i32`: one JSON-RPC
    /// message in; the answer (plugin-owned, freed with
    /// [`SYMBOL_FREE`]) written to `*out`/`*out_len` (null/0: none).
    pub const SYMBOL_CALL: &str = "taskrush_native_call";
    /// `(ptr, len)`: frees an answer `taskrush_native_call` returned.
    pub const SYMBOL_FREE: &str = "taskrush_native_free";

    /// `taskrush_native_call`: the answer (or none, for a notification)
    /// is in `*out`.
    pub const CALL_OK: i32 = 0;
    /// `taskrush_native_call`: the plugin panicked outside its dispatcher
    /// (nothing was written to `*out`); the host answers an error.
    pub const CALL_PANICKED: i32 = 1;
    /// `taskrush_native_call`: a null pointer where one is needed.
    pub const CALL_BAD_ARGUMENTS: i32 = 2;

    /// The host callback: an answer is in `*answer`/`*answer_len`
    /// (host-owned, valid until the next callback on the same `ctx` or
    /// until `taskrush_native_call` returns).
    pub const HOST_ANSWERED: i32 = 0;
    /// The host callback: no answer (the message was a notification).
    pub const HOST_NO_ANSWER: i32 = 1;
    /// The host callback: the host could not serve the message.
    pub const HOST_FAILED: i32 = 2;

    /// The file name of library `name` on this platform: `libNAME.so`,
    /// `libNAME.dylib` or `NAME.dll`.
    pub fn library_file(name: &str) -> String {
        if cfg!(target_os = "windows") {
            format!("{name}.dll")
        } else if cfg!(target_os = "macos") {
            format!("lib{name}.dylib")
        } else {
            format!("lib{name}.so")
        }
    }
}

/// The guest ABI of WebAssembly plugins (core modules for
/// `wasm32-wasip1`), version [`wasm::ABI_VERSION`]. `docs/plugins.md`
/// ("WebAssembly plugins: the guest ABI") is the normative text.
pub mod wasm {
    /// The ABI this host speaks. A module whose `taskrush_abi_version`
    /// export returns another number is refused, naming both.
    pub const ABI_VERSION: i32 = 1;
    /// `() -> i32`: the ABI the guest was built for; called first.
    pub const EXPORT_ABI_VERSION: &str = "taskrush_abi_version";
    /// `(len: i32) -> i32`: allocate `len` bytes in guest memory.
    pub const EXPORT_ALLOC: &str = "taskrush_alloc";
    /// `(ptr: i32, len: i32)`: free what `taskrush_alloc` returned.
    pub const EXPORT_FREE: &str = "taskrush_free";
    /// `(ptr: i32, len: i32) -> i64`: one JSON-RPC message in, its
    /// response out as `(ptr << 32) | len` (0: no response, for a
    /// notification).
    pub const EXPORT_HANDLE: &str = "taskrush_handle";
    /// The exported linear memory.
    pub const EXPORT_MEMORY: &str = "memory";
    /// Import module of the host functions.
    pub const IMPORT_MODULE: &str = "taskrush";
    /// `(ptr: i32, len: i32) -> i64`: one JSON-RPC message (a host call
    /// request or a `log`/`progress` notification) out, the response in
    /// as `(ptr << 32) | len` in memory the host got from
    /// `taskrush_alloc` (the guest frees it); 0 for a notification.
    pub const IMPORT_HOST_CALL: &str = "host_call";
    /// Optional custom section: the plugin's version as UTF-8 text, used
    /// when the plugin has no `plugin.toml`.
    pub const SECTION_VERSION: &str = "taskrush_version";

    /// Packs a guest pointer and length into the `i64` `taskrush_handle`
    /// and `host_call` return.
    pub fn pack(ptr: u32, len: u32) -> i64 {
        ((u64::from(ptr) << 32) | u64::from(len)) as i64
    }

    /// The inverse of [`pack`].
    pub fn unpack(packed: i64) -> (u32, u32) {
        let p = packed as u64;
        ((p >> 32) as u32, p as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_pointers_round_trip_including_high_addresses() {
        for (ptr, len) in [(0, 0), (8, 3), (u32::MAX, u32::MAX), (0x8000_0000, 1)] {
            assert_eq!(wasm::unpack(wasm::pack(ptr, len)), (ptr, len));
        }
    }

    #[test]
    fn an_http_request_needs_only_a_url() {
        let p: HttpRequestParams = serde_json::from_str(r#"{"url":"https://x.test/"}"#).unwrap();
        assert_eq!(p.method, "GET");
        assert!(p.headers.is_empty() && p.body.is_empty() && p.timeout_ms.is_none());
    }
}
