//! Internal types as they cross the socket.

use std::path::Path;

use jsonrpsee::types::ErrorObjectOwned;
use taskrush_protocol::error::{self, ErrorData};

use crate::config::config_error::{ConfigError, ConfigErrorKind};
use crate::plugin::{Phase, PluginFailure};

/// A config error as it crosses the socket.
pub(super) fn config_error(e: ConfigError) -> ErrorObjectOwned {
    let data = ErrorData {
        path: Some(e.path.display().to_string()),
        line: e.line,
        column: e.column,
        task: None,
        hint: e.hint.clone(),
        ..Default::default()
    };
    let code = match e.kind {
        ConfigErrorKind::UnknownTask => error::TASK_NOT_FOUND,
        ConfigErrorKind::Invalid => error::CONFIG_ERROR,
    };
    ErrorObjectOwned::owned(code, e.message, Some(data))
}

/// A plugin failure as it crosses the socket.
pub(super) fn plugin_error(f: PluginFailure) -> ErrorObjectOwned {
    let data = ErrorData {
        plugin: (!f.plugin.is_empty()).then(|| f.plugin.clone()),
        hint: f.hint.clone(),
        ..Default::default()
    };
    let message = if f.plugin.is_empty() || f.phase == Phase::Lookup {
        f.message.clone()
    } else {
        f.render()
    };
    ErrorObjectOwned::owned(error::PLUGIN_ERROR, message, Some(data))
}

pub(super) fn display(p: &Path) -> String {
    p.display().to_string()
}
