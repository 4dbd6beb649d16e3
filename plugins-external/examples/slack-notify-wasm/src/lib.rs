//! slack-notify: posts a summary of each task to a Slack incoming webhook
//! through the `http_request` host call (`after_task`).
//!
//! Config (the global `config` merged with the task's
//! `plugins.slack-notify`), as the Python example's:
//!
//! | key | default | |
//! | --- | --- | --- |
//! | `webhook_url` | `$SLACK_WEBHOOK` | where to post `{"text": …}` |
//! | `message` | see [`DEFAULT_SUCCESS`], [`DEFAULT_FAILURE`] | placeholders `{task}` `{status}` `{exit_code}` `{duration_ms}` `{command}` |
//! | `on_success` | `true` | post when a task succeeded |
//! | `on_failure` | `true` | post when a task failed or was cancelled |
//! | `on_cached` | `false` | post for up-to-date tasks that did not run |
//! | `channel` | — | sent along as `channel` |
//! | `timeout` | `3` | seconds to wait for the webhook |
//!
//! The webhook's host must be granted (`plugin.toml` `network`). Network
//! errors and refusals are logged as warnings (naming the host, never the
//! URL, which is a secret) and never fail a task.

use serde_json::{Value, json};
use taskrush_plugin::protocol::host::HttpRequestParams;
use taskrush_plugin::{
    Hook, Host, HostError, InitializeParams, Result, TaskContext, TaskResult, TaskRushPlugin,
    TaskStatus, export_plugin,
};

pub const DEFAULT_SUCCESS: &str = "\u{2705} Task '{task}' succeeded in {duration_ms} ms";
pub const DEFAULT_FAILURE: &str = "\u{274c} Task '{task}' {status} (exit code {exit_code})";

/// Replaces the known placeholders only: other braces stay as written.
pub fn render(template: &str, values: &[(&str, String)]) -> String {
    let mut out = template.to_owned();
    for (key, value) in values {
        out = out.replace(&format!("{{{key}}}"), value);
    }
    out
}

fn status_text(status: TaskStatus) -> &'static str {
    match status {
        TaskStatus::Success => "success",
        TaskStatus::Failed => "failed",
        TaskStatus::Cancelled => "cancelled",
    }
}

fn flag(config: &Value, key: &str, default: bool) -> bool {
    config.get(key).and_then(Value::as_bool).unwrap_or(default)
}

fn text(config: &Value, key: &str) -> Option<String> {
    config
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// The JSON body to post for this task, or `None` when the config says
/// not to post.
pub fn payload(ctx: &TaskContext, result: &TaskResult) -> Option<Value> {
    let config = &ctx.config;
    let succeeded = result.status == TaskStatus::Success;
    if result.cached && !flag(config, "on_cached", false) {
        return None;
    }
    if !flag(
        config,
        if succeeded {
            "on_success"
        } else {
            "on_failure"
        },
        true,
    ) {
        return None;
    }
    let template = text(config, "message").unwrap_or_else(|| {
        if succeeded {
            DEFAULT_SUCCESS
        } else {
            DEFAULT_FAILURE
        }
        .to_owned()
    });
    let exit_code = result
        .exit_code
        .map_or_else(|| "none".to_owned(), |c| c.to_string());
    let text_ = render(
        &template,
        &[
            ("task", ctx.task_name.clone()),
            ("status", status_text(result.status).to_owned()),
            ("exit_code", exit_code),
            ("duration_ms", result.duration_ms.to_string()),
            ("command", ctx.command.clone()),
        ],
    );
    let mut body = json!({ "text": text_ });
    if let Some(channel) = text(config, "channel") {
        body["channel"] = Value::String(channel);
    }
    Some(body)
}

/// The host part of a URL, for messages (the URL itself is a secret).
pub fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    match host_port.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host_port,
    }
}

#[derive(Default)]
pub struct SlackNotify {
    /// `$SLACK_WEBHOOK`, read once at `initialize`.
    env_webhook: Option<String>,
}

impl SlackNotify {
    fn webhook(&self, config: &Value) -> Option<String> {
        text(config, "webhook_url").or_else(|| self.env_webhook.clone())
    }
}

impl TaskRushPlugin for SlackNotify {
    fn name(&self) -> &str {
        "slack-notify"
    }

    fn version(&self) -> &str {
        env!("CARGO_PKG_VERSION")
    }

    fn hooks(&self) -> Vec<Hook> {
        vec![Hook::AfterTask]
    }

    fn initialize(&mut self, params: &InitializeParams, host: &mut Host) -> Result {
        self.env_webhook = match host.env_get("SLACK_WEBHOOK") {
            Ok(v) => v.filter(|v| !v.is_empty()),
            Err(e) => {
                host.debug(format!("`SLACK_WEBHOOK` not read: {e}"));
                None
            }
        };
        if self.webhook(&params.config).is_none() {
            host.warn(
                "no `webhook_url` in the config and SLACK_WEBHOOK is not set: nothing will be posted",
            );
        }
        Ok(())
    }

    fn after_task(&mut self, ctx: &TaskContext, result: &TaskResult, host: &mut Host) -> Result {
        let Some(body) = payload(ctx, result) else {
            return Ok(());
        };
        let Some(url) = self.webhook(&ctx.config) else {
            return Ok(());
        };
        let timeout_s = ctx
            .config
            .get("timeout")
            .and_then(Value::as_f64)
            .unwrap_or(3.0);
        let request = HttpRequestParams {
            method: "POST".into(),
            url: url.clone(),
            headers: [("Content-Type".to_owned(), "application/json".to_owned())].into(),
            body: body.to_string(),
            timeout_ms: Some((timeout_s.max(0.0) * 1000.0) as u64),
        };
        let host_name = host_of(&url).to_owned();
        match host.http_request(&request) {
            Ok(r) if (200..300).contains(&r.status) => {
                host.debug(format!("posted to {host_name}"));
            }
            Ok(r) => host.warn(format!(
                "{host_name} answered HTTP {}; the message was not posted",
                r.status
            )),
            Err(HostError::PermissionDenied { .. }) => host.warn(format!(
                "posting to {host_name} is not granted; hint: add it to `network` in plugin.toml"
            )),
            Err(e) => host.warn(format!("could not post to {host_name}: {e}")),
        }
        Ok(())
    }
}

export_plugin!(SlackNotify);

#[cfg(test)]
mod tests;
