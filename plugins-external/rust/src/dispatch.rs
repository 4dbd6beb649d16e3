//! One JSON-RPC message in, its response out: the part of a plugin that
//! is the same whatever carries the bytes (the WebAssembly guest ABI, the
//! native C ABI, the stdio protocol).

use std::panic::{AssertUnwindSafe, catch_unwind};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use taskrush_protocol::error::{
    INTERNAL_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR, WireError,
};
use taskrush_protocol::jsonrpc::{Id, Response};
use taskrush_protocol::plugin::{
    CommandParams, HookParams, InitializeParams, InitializeResult, error, method,
};

use crate::{Error, Host, TaskRushPlugin};

/// The protocol majors this SDK speaks.
pub const PROTOCOL_VERSIONS: &[u32] = &[1];

/// Serves one plugin: feed it each message the host sends, send back what
/// it returns.
///
/// ```
/// use taskrush_plugin::{Dispatcher, Host, TaskRushPlugin};
///
/// #[derive(Default)]
/// struct Quiet;
/// impl TaskRushPlugin for Quiet {
///     fn name(&self) -> &str { "quiet" }
///     fn version(&self) -> &str { "1.0.0" }
/// }
///
/// let mut d = Dispatcher::new(Quiet, Host::detached());
/// let out = d.handle(br#"{"jsonrpc":"2.0","id":1,"method":"shutdown","params":{}}"#);
/// assert_eq!(out.unwrap(), br#"{"jsonrpc":"2.0","id":1,"result":null}"#);
/// ```
pub struct Dispatcher<P> {
    plugin: P,
    host: Host,
    protocol: Option<u32>,
}

impl<P: TaskRushPlugin> Dispatcher<P> {
    pub fn new(plugin: P, host: Host) -> Self {
        Dispatcher {
            plugin,
            host,
            protocol: None,
        }
    }

    pub fn plugin(&self) -> &P {
        &self.plugin
    }

    pub fn plugin_mut(&mut self) -> &mut P {
        &mut self.plugin
    }

    /// The protocol major agreed on by `initialize`.
    pub fn protocol(&self) -> Option<u32> {
        self.protocol
    }

    /// Handles one JSON-RPC message: the response to a request, `None` for
    /// a notification or a response (the host sends neither to plugins
    /// today). A panic in the plugin becomes an internal error where the
    /// target unwinds (on `wasm32` a panic aborts: the guest traps).
    pub fn handle(&mut self, message: &[u8]) -> Option<Vec<u8>> {
        let message: Value = match serde_json::from_slice(message) {
            Ok(v) => v,
            Err(e) => return encode_error(Id::Null, PARSE_ERROR, format!("invalid JSON: {e}")),
        };
        let Value::Object(mut message) = message else {
            return encode_error(
                Id::Null,
                INVALID_REQUEST,
                "a message must be a JSON object".into(),
            );
        };
        let id = match message.remove("id") {
            None => return None, // a notification
            Some(id) => match serde_json::from_value::<Id>(id) {
                Ok(id) => id,
                Err(_) => {
                    return encode_error(
                        Id::Null,
                        INVALID_REQUEST,
                        "`id` must be a number, a string or null".into(),
                    );
                }
            },
        };
        let method = match message.remove("method") {
            None => return None, // a response: this side sends requests only to the host
            Some(Value::String(m)) => m,
            Some(_) => {
                return encode_error(id, INVALID_REQUEST, "`method` must be a string".into());
            }
        };
        let params = message.remove("params").unwrap_or(Value::Null);
        let outcome = catch_unwind(AssertUnwindSafe(|| self.dispatch(&method, params)))
            .unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into());
                Err(Error::failed(format!(
                    "the plugin panicked in `{method}`: {what}"
                )))
            });
        encode(id, outcome)
    }

    fn dispatch(&mut self, method: &str, params: Value) -> Result<Value, Error> {
        match method {
            method::INITIALIZE => self.initialize(params),
            method::BEFORE_TASK => {
                let p: HookParams = parse(method, params)?;
                self.plugin.before_task(&p.context, &mut self.host)?;
                Ok(Value::Null)
            }
            method::AFTER_TASK => {
                let p: HookParams = parse(method, params)?;
                let result = p.result.ok_or_else(|| {
                    Error::invalid_params("params of `after_task` need a `result`")
                })?;
                self.plugin
                    .after_task(&p.context, &result, &mut self.host)?;
                Ok(Value::Null)
            }
            method::ON_TASK_FAILURE => {
                let p: HookParams = parse(method, params)?;
                let err = p.error.ok_or_else(|| {
                    Error::invalid_params("params of `on_task_failure` need an `error`")
                })?;
                self.plugin
                    .on_task_failure(&p.context, &err, &mut self.host)?;
                Ok(Value::Null)
            }
            method::COMMAND => {
                let p: CommandParams = parse(method, params)?;
                if !self.plugin.commands().iter().any(|c| c.name == p.name) {
                    return Err(Error::invalid_params(format!(
                        "unknown command `{}`",
                        p.name
                    )));
                }
                let r = self
                    .plugin
                    .command(&p.name, &p.args, &p.cwd, &mut self.host)?;
                to_value(&r)
            }
            method::SHUTDOWN => {
                if let Err(e) = self.plugin.shutdown(&mut self.host) {
                    // Shutting down anyway: say why in the log.
                    self.host.warn(format!("shutdown: {e}"));
                }
                Ok(Value::Null)
            }
            other => Err(Error::with_code(
                METHOD_NOT_FOUND,
                format!("method `{other}` not found"),
            )),
        }
    }

    fn initialize(&mut self, params: Value) -> Result<Value, Error> {
        // A host before `host_methods` served the first five host calls
        // to WebAssembly guests only.
        let listed = params.get("host_methods").is_some();
        let p: InitializeParams = parse(method::INITIALIZE, params)?;
        self.host.offer(if listed {
            p.host_methods.clone()
        } else if cfg!(target_arch = "wasm32") {
            crate::host::FIRST_METHODS
                .iter()
                .map(|m| (*m).to_owned())
                .collect()
        } else {
            Vec::new()
        });
        let Some(protocol) = PROTOCOL_VERSIONS
            .iter()
            .copied()
            .filter(|v| p.protocol_versions.contains(v))
            .max()
        else {
            return Err(Error::with_code(
                error::UNSUPPORTED_PROTOCOL,
                format!(
                    "unsupported protocol versions {:?}; this plugin speaks {PROTOCOL_VERSIONS:?}",
                    p.protocol_versions
                ),
            )
            .with_data(json!({ "supported": PROTOCOL_VERSIONS })));
        };
        self.plugin.initialize(&p, &mut self.host)?;
        self.protocol = Some(protocol);
        to_value(&InitializeResult {
            name: self.plugin.name().to_owned(),
            version: self.plugin.version().to_owned(),
            protocol,
            hooks: self.plugin.hooks(),
            commands: self.plugin.commands(),
        })
    }
}

fn parse<T: DeserializeOwned>(method: &str, params: Value) -> Result<T, Error> {
    serde_json::from_value(params)
        .map_err(|e| Error::invalid_params(format!("params of `{method}`: {e}")))
}

fn to_value(v: &impl Serialize) -> Result<Value, Error> {
    serde_json::to_value(v).map_err(|e| Error::with_code(INTERNAL_ERROR, e.to_string()))
}

fn encode(id: Id, outcome: Result<Value, Error>) -> Option<Vec<u8>> {
    let outcome = outcome.map_err(|e| WireError {
        code: e.code(),
        message: e.message().to_owned(),
        data: e.data().cloned(),
    });
    serde_json::to_vec(&Response::new(id, outcome)).ok()
}

fn encode_error(id: Id, code: i32, message: String) -> Option<Vec<u8>> {
    encode(id, Err(Error::with_code(code, message)))
}

#[cfg(test)]
mod tests;
