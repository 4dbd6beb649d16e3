//! @NAME@: a TaskRush plugin (see README.md).

use taskrush_plugin::{
    CommandResult, Error, Hook, Host, PluginCommand, Result, TaskContext, TaskResult,
    TaskRushPlugin, TaskStatus, export_plugin,
};

#[derive(Default)]
pub struct Plugin;

impl TaskRushPlugin for Plugin {
    fn name(&self) -> &str {
        "@NAME@"
    }

    fn version(&self) -> &str {
        env!("CARGO_PKG_VERSION")
    }

    fn hooks(&self) -> Vec<Hook> {
        vec![Hook::BeforeTask, Hook::AfterTask]
    }

    /// Refuse the tasks the config's `block` list names; log the others.
    fn before_task(&mut self, ctx: &TaskContext, host: &mut Host) -> Result {
        let blocked = ctx
            .config
            .get("block")
            .and_then(|b| b.as_array())
            .is_some_and(|b| b.iter().any(|t| t.as_str() == Some(&ctx.task_name)));
        if blocked {
            return Err(Error::veto(format!(
                "`{}` is blocked by @NAME@ (its `block` config)",
                ctx.task_name
            )));
        }
        host.info(format!("starting {}", ctx.task_name));
        Ok(())
    }

    fn after_task(&mut self, ctx: &TaskContext, result: &TaskResult, host: &mut Host) -> Result {
        host.info(format!(
            "{} finished: {:?} in {} ms",
            ctx.task_name, result.status, result.duration_ms
        ));
        if let (TaskStatus::Failed, Some(code)) = (result.status, result.exit_code) {
            host.warn(format!("{} failed with exit code {code}", ctx.task_name));
        }
        Ok(())
    }

    fn commands(&self) -> Vec<PluginCommand> {
        vec![PluginCommand {
            name: "@NAME@".into(),
            description: "Say hello (an example command of @NAME@)".into(),
        }]
    }

    fn command(
        &mut self,
        _name: &str,
        args: &[String],
        _cwd: &str,
        _host: &mut Host,
    ) -> Result<CommandResult> {
        let words: String = args.iter().map(|a| format!(" {a}")).collect();
        Ok(CommandResult {
            exit_code: 0,
            stdout: format!("hello from @NAME@{words}\n"),
            stderr: String::new(),
        })
    }
}

export_plugin!(Plugin);

#[cfg(test)]
mod tests {
    use serde_json::json;
    use taskrush_plugin::Dispatcher;

    use super::*;

    /// Send `calls` (method, params) to the plugin; its answers in order.
    fn serve(calls: &[(&str, serde_json::Value)]) -> Vec<serde_json::Value> {
        let mut d = Dispatcher::new(Plugin, Host::detached());
        calls
            .iter()
            .enumerate()
            .filter_map(|(i, (method, params))| {
                let msg = json!({"jsonrpc": "2.0", "id": i + 1, "method": method, "params": params});
                let answer = d.handle(msg.to_string().as_bytes())?;
                serde_json::from_slice(&answer).ok()
            })
            .collect()
    }

    fn init() -> (&'static str, serde_json::Value) {
        (
            "initialize",
            json!({"protocol_versions": [1], "taskrush_version": "0.3.0", "name": "@NAME@",
                   "config": {}, "project_root": ".", "permissions": []}),
        )
    }

    fn context(task: &str, config: serde_json::Value) -> serde_json::Value {
        json!({"context": {"task_name": task, "command": "true", "working_dir": ".",
                           "env_vars": {}, "config": config, "run_id": 1}})
    }

    #[test]
    fn a_blocked_task_is_vetoed() {
        let got = serve(&[init(), ("before_task", context("deploy", json!({"block": ["deploy"]})))]);
        let message = got[1]["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("blocked by @NAME@"), "{}", got[1]);
    }

    #[test]
    fn the_command_says_hello() {
        let got = serve(&[init(), ("command", json!({"name": "@NAME@", "args": ["there"], "cwd": "."}))]);
        assert_eq!(got[1]["result"]["stdout"], "hello from @NAME@ there\n");
    }
}
