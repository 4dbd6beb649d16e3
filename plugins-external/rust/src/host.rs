//! The plugin's handle on the host: host calls as plain Rust methods.

use std::collections::BTreeMap;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use taskrush_protocol::host::{
    CallCommandParams, EnvGetParams, EnvGetResult, HttpRequestParams, HttpRequestResult,
    ReadFileParams, ReadFileResult, RunCommandParams, RunCommandResult, TaskGraphParams,
    TaskGraphResult, TaskResultsParams, TaskResultsResult, WriteFileParams, WriteFileResult,
    method,
};
use taskrush_protocol::jsonrpc::{Id, Message, Notification, Request};
use taskrush_protocol::plugin::CommandResult;
use taskrush_protocol::plugin::{self, LogParams, ProgressParams};

use crate::error::HostError;

/// How host-call messages reach the host: one JSON-RPC message out, the
/// response bytes back for a request, `None` for a notification (or when
/// the host answered nothing).
///
/// On `wasm32` the [`export_plugin!`](crate::export_plugin) macro binds it
/// to the `taskrush.host_call` import. Tests pass a closure:
///
/// ```
/// use taskrush_plugin::Host;
///
/// let mut host = Host::new(|msg: &[u8]| {
///     let text = String::from_utf8_lossy(msg);
///     text.contains("\"id\"").then(|| {
///         br#"{"jsonrpc":"2.0","id":1,"result":{"value":"on"}}"#.to_vec()
///     })
/// });
/// assert_eq!(host.env_get("CI").unwrap().as_deref(), Some("on"));
/// ```
pub trait Transport {
    fn call(&mut self, message: &[u8]) -> Option<Vec<u8>>;
}

impl<F: FnMut(&[u8]) -> Option<Vec<u8>>> Transport for F {
    fn call(&mut self, message: &[u8]) -> Option<Vec<u8>> {
        self(message)
    }
}

/// The handle every [`TaskRushPlugin`](crate::TaskRushPlugin) method
/// receives. Each call is checked by the host against the plugin's
/// granted permissions: a refused call returns
/// [`HostError::PermissionDenied`] (and is recorded in the audit trail),
/// it never aborts the plugin.
pub struct Host {
    transport: Box<dyn Transport>,
    next_id: u64,
    /// The host calls the host offered in `initialize` (`host_methods`);
    /// `None` before `initialize` (every call is tried).
    offered: Option<Vec<String>>,
}

/// The host calls served by hosts that predate `host_methods` (to
/// WebAssembly guests only).
pub(crate) const FIRST_METHODS: &[&str] = &[
    method::ENV_GET,
    method::READ_FILE,
    method::WRITE_FILE,
    method::HTTP_REQUEST,
    method::RUN_COMMAND,
];

impl Host {
    pub fn new(transport: impl Transport + 'static) -> Host {
        Host {
            transport: Box::new(transport),
            next_id: 1,
            offered: None,
        }
    }

    /// The host calls the host serves, from `initialize`: a call to any
    /// other fails at once (an older host would never answer it).
    pub fn offer(&mut self, methods: Vec<String>) {
        self.offered = Some(methods);
    }

    /// Whether the host offered `method` (true before `initialize`).
    pub fn offers(&self, method: &str) -> bool {
        self.offered
            .as_ref()
            .is_none_or(|m| m.iter().any(|x| x == method))
    }

    /// The project's tasks as written (unexpanded) and their dependency
    /// edges; `env` values only for variables the `environment` grant
    /// names.
    pub fn task_graph(&mut self) -> Result<TaskGraphResult, HostError> {
        self.request(method::TASK_GRAPH, &TaskGraphParams::default())
    }

    /// The results of the tasks of the current run that ended so far
    /// (the run of the hook being answered).
    pub fn task_results(&mut self) -> Result<TaskResultsResult, HostError> {
        self.request(method::TASK_RESULTS, &TaskResultsParams::default())
    }

    /// Command `command` of plugin `plugin`, run by the host: the
    /// manifest must declare `[permissions] plugins = ["<plugin>"]` and
    /// the user must have granted it.
    pub fn call_command(
        &mut self,
        plugin: &str,
        command: &str,
        args: &[&str],
    ) -> Result<CommandResult, HostError> {
        self.request(
            method::CALL_COMMAND,
            &CallCommandParams {
                plugin: plugin.into(),
                command: command.into(),
                args: args.iter().map(|a| (*a).to_owned()).collect(),
            },
        )
    }

    /// A host that answers every call with [`HostError::Failed`] and drops
    /// log lines: for unit tests of plugin logic that makes no host calls.
    pub fn detached() -> Host {
        Host::new(|_: &[u8]| None)
    }

    /// An HTTP(S) request to a host the `network` grant names. Any HTTP
    /// status is a result; unreachable hosts and timeouts are errors.
    pub fn http_request(
        &mut self,
        request: &HttpRequestParams,
    ) -> Result<HttpRequestResult, HostError> {
        self.request(method::HTTP_REQUEST, request)
    }

    /// `POST`s `body` with the given `Content-Type`.
    pub fn http_post(
        &mut self,
        url: &str,
        content_type: &str,
        body: impl Into<String>,
    ) -> Result<HttpRequestResult, HostError> {
        let headers = BTreeMap::from([("Content-Type".to_owned(), content_type.to_owned())]);
        self.http_request(&HttpRequestParams {
            method: "POST".into(),
            url: url.into(),
            headers,
            body: body.into(),
            timeout_ms: None,
        })
    }

    /// `GET`s `url`.
    pub fn http_get(&mut self, url: &str) -> Result<HttpRequestResult, HostError> {
        self.http_request(&HttpRequestParams {
            method: "GET".into(),
            url: url.into(),
            headers: BTreeMap::new(),
            body: String::new(),
            timeout_ms: None,
        })
    }

    /// A variable the `environment` grant names: `None` when it is not set.
    pub fn env_get(&mut self, name: &str) -> Result<Option<String>, HostError> {
        let r: EnvGetResult = self.request(method::ENV_GET, &EnvGetParams { name: name.into() })?;
        Ok(r.value)
    }

    /// A UTF-8 file within the granted paths (relative: to the project
    /// root).
    pub fn read_file(&mut self, path: &str) -> Result<String, HostError> {
        let r: ReadFileResult =
            self.request(method::READ_FILE, &ReadFileParams { path: path.into() })?;
        Ok(r.contents)
    }

    /// Replaces a file within the granted writable paths; returns the bytes
    /// written.
    pub fn write_file(&mut self, path: &str, contents: &str) -> Result<u64, HostError> {
        self.write(path, contents, false)
    }

    /// Appends to a file within the granted writable paths.
    pub fn append_file(&mut self, path: &str, contents: &str) -> Result<u64, HostError> {
        self.write(path, contents, true)
    }

    fn write(&mut self, path: &str, contents: &str, append: bool) -> Result<u64, HostError> {
        let params = WriteFileParams {
            path: path.into(),
            contents: contents.into(),
            append,
        };
        let r: WriteFileResult = self.request(method::WRITE_FILE, &params)?;
        Ok(r.bytes_written)
    }

    /// Runs a program the `process` grant names (no shell), in the project
    /// root. A non-zero exit is a result.
    pub fn run_command(
        &mut self,
        program: &str,
        args: &[&str],
    ) -> Result<RunCommandResult, HostError> {
        self.run_command_with(&RunCommandParams {
            program: program.into(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            cwd: None,
            stdin: String::new(),
            timeout_ms: None,
        })
    }

    /// [`Host::run_command`] with every option (cwd, stdin, timeout).
    pub fn run_command_with(
        &mut self,
        params: &RunCommandParams,
    ) -> Result<RunCommandResult, HostError> {
        self.request(method::RUN_COMMAND, params)
    }

    /// A line in the daemon log under the plugin's name: `level` is
    /// `error`, `warn`, `info` or `debug`.
    pub fn log(&mut self, level: &str, message: impl Into<String>) {
        let params = LogParams {
            level: level.into(),
            message: message.into(),
            task: None,
        };
        self.notify(plugin::method::LOG, &params);
    }

    pub fn debug(&mut self, message: impl Into<String>) {
        self.log("debug", message);
    }

    pub fn info(&mut self, message: impl Into<String>) {
        self.log("info", message);
    }

    pub fn warn(&mut self, message: impl Into<String>) {
        self.log("warn", message);
    }

    pub fn error(&mut self, message: impl Into<String>) {
        self.log("error", message);
    }

    /// Progress of long work, `percent` from 0 to 100 when known.
    pub fn progress(&mut self, message: impl Into<String>, percent: Option<f64>) {
        let params = ProgressParams {
            message: message.into(),
            task: None,
            percent,
        };
        self.notify(plugin::method::PROGRESS, &params);
    }

    fn notify(&mut self, method: &str, params: &impl Serialize) {
        if let Ok(bytes) = serde_json::to_vec(&Notification::new(method, params)) {
            // A notification has no answer; a host that sends one anyway
            // is ignored.
            let _ = self.transport.call(&bytes);
        }
    }

    /// Any host-call method by name: for methods newer than this SDK.
    pub fn request<R: DeserializeOwned>(
        &mut self,
        method: &str,
        params: &impl Serialize,
    ) -> Result<R, HostError> {
        if !self.offers(method) {
            return Err(HostError::failed(format!(
                "the host does not offer `{method}`; it is older than this plugin"
            )));
        }
        let id = self.next_id;
        self.next_id += 1;
        let bytes = serde_json::to_vec(&Request::new(id, method, params))
            .map_err(|e| HostError::failed(format!("`{method}` params: {e}")))?;
        let Some(answer) = self.transport.call(&bytes) else {
            return Err(HostError::failed(format!(
                "the host did not answer `{method}` (no host, or it does not offer host calls)"
            )));
        };
        let message: Message = serde_json::from_slice(&answer)
            .map_err(|e| HostError::failed(format!("the host's answer to `{method}`: {e}")))?;
        if message.id.as_ref().and_then(Id::as_u64) != Some(id) {
            return Err(HostError::failed(format!(
                "the host's answer to `{method}` has another id (expected {id})"
            )));
        }
        match message.outcome() {
            Err(e) => Err(HostError::from_wire(e.code, e.message, e.data)),
            Ok(result) => serde_json::from_value(result.unwrap_or(Value::Null))
                .map_err(|e| HostError::failed(format!("the host's answer to `{method}`: {e}"))),
        }
    }
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("next_id", &self.next_id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_the_host_did_not_offer_fails_at_once_naming_it() {
        let mut host = Host::new(|_: &[u8]| -> Option<Vec<u8>> {
            panic!("nothing may be sent for a call the host did not offer")
        });
        host.offer(vec![method::ENV_GET.to_owned()]);
        let e = host.task_graph().unwrap_err();
        assert_eq!(
            e.to_string(),
            "the host does not offer `task_graph`; it is older than this plugin"
        );
    }
}
