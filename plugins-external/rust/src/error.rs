//! What a plugin method returns when it does not succeed, and what a host
//! call returns when the host refused or failed it.

use std::fmt;

use serde_json::Value;
use taskrush_protocol::error::{INTERNAL_ERROR, INVALID_PARAMS};
use taskrush_protocol::host::{self, Denied};
use taskrush_protocol::plugin;

/// The result of every [`TaskRushPlugin`](crate::TaskRushPlugin) method.
pub type Result<T = (), E = Error> = std::result::Result<T, E>;

/// An error a plugin method answers the host with.
///
/// `before_task` stops the task on *any* error; [`Error::veto`] says it
/// was deliberate (JSON-RPC code -32010, shown to the user as the reason),
/// [`Error::failed`] that the plugin could not do its work (-32603). Host
/// call errors, I/O and JSON errors convert with `?` into failures.
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    code: i32,
    message: String,
    data: Option<Value>,
}

impl Error {
    /// A deliberate refusal: from `before_task` the task does not run and
    /// `reason` is what the user sees.
    pub fn veto(reason: impl Into<String>) -> Error {
        Error::with_code(plugin::error::VETO, reason)
    }

    /// The plugin could not do what was asked.
    pub fn failed(message: impl Into<String>) -> Error {
        Error::with_code(INTERNAL_ERROR, message)
    }

    /// The request's params were not what the method needs (-32602).
    pub fn invalid_params(message: impl Into<String>) -> Error {
        Error::with_code(INVALID_PARAMS, message)
    }

    /// Any JSON-RPC error code.
    pub fn with_code(code: i32, message: impl Into<String>) -> Error {
        Error {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// Adds structured `data` to the answer (e.g. the pattern that matched).
    pub fn with_data(mut self, data: Value) -> Error {
        self.data = Some(data);
        self
    }

    pub fn code(&self) -> i32 {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn data(&self) -> Option<&Value> {
        self.data.as_ref()
    }

    /// A veto, as opposed to a failure.
    pub fn is_veto(&self) -> bool {
        self.code == plugin::error::VETO
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<HostError> for Error {
    fn from(e: HostError) -> Error {
        Error::failed(e.to_string())
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Error {
        Error::failed(e.to_string())
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error::failed(e.to_string())
    }
}

impl From<String> for Error {
    fn from(message: String) -> Error {
        Error::failed(message)
    }
}

impl From<&str> for Error {
    fn from(message: &str) -> Error {
        Error::failed(message)
    }
}

/// Why a host call did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostError {
    /// The plugin's grants do not allow the call (JSON-RPC -32020); the
    /// host recorded the refusal in the audit trail.
    PermissionDenied {
        /// `filesystem`, `network`, `environment` or `process`.
        permission: String,
        /// The path, host, variable or program asked for.
        item: String,
        message: String,
    },
    /// The call was allowed but did not work (file missing, host
    /// unreachable, deadline passed), the host does not offer the method,
    /// or there is no host (a plugin run outside TaskRush).
    Failed { code: i32, message: String },
}

impl HostError {
    pub(crate) fn from_wire(code: i32, message: String, data: Option<Value>) -> HostError {
        if code == host::error::PERMISSION_DENIED {
            let denied = data.and_then(|d| serde_json::from_value::<Denied>(d).ok());
            let (permission, item) = denied.map(|d| (d.permission, d.item)).unwrap_or_default();
            return HostError::PermissionDenied {
                permission,
                item,
                message,
            };
        }
        HostError::Failed { code, message }
    }

    pub(crate) fn failed(message: impl Into<String>) -> HostError {
        HostError::Failed {
            code: host::error::FAILED,
            message: message.into(),
        }
    }

    /// The grants did not allow the call.
    pub fn is_permission_denied(&self) -> bool {
        matches!(self, HostError::PermissionDenied { .. })
    }
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostError::PermissionDenied { message, .. } | HostError::Failed { message, .. } => {
                f.write_str(message)
            }
        }
    }
}

impl std::error::Error for HostError {}
