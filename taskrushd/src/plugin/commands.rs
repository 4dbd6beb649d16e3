//! Plugin commands: the names plugins add to `taskrush`, who owns which,
//! and calling one.

use std::collections::BTreeMap;

use serde_json::Value;
use taskrush_protocol::daemon::CommandInfo;
use taskrush_protocol::plugin::{self as wire, CommandParams, CommandResult, InitializeResult};

use super::failure::{Phase, PluginFailure};
use super::host::{Ctx, PluginHost};
use super::process::CallError;
use super::slot::{Slot, fail_call};
use crate::config::rush_file::RushFile;

/// Names a plugin command may not take.
const BUILTINS: &[&str] = taskrush_protocol::RESERVED_WORDS;

impl PluginHost {
    /// A command name of `info` that is taken already, as an error message.
    pub(super) fn collision(
        &self,
        slot: &Slot,
        info: &InitializeResult,
        config: &RushFile,
    ) -> Option<String> {
        let others: Vec<(String, Vec<String>)> = self
            .slots()
            .values()
            .filter(|s| s.root == slot.root && s.name != slot.name)
            .filter_map(|s| {
                let st = s.st();
                let live = st.process.as_ref().is_some_and(|p| p.dead().is_none());
                let cmds = st.info.as_ref().filter(|_| live)?.commands.iter();
                Some((s.name.clone(), cmds.map(|c| c.name.clone()).collect()))
            })
            .collect();
        for c in &info.commands {
            if BUILTINS.contains(&c.name.as_str()) {
                return Some(format!(
                    "its command `{}` has the name of a built-in `taskrush` command",
                    c.name
                ));
            }
            if config.tasks.contains_key(&c.name) {
                return Some(format!(
                    "its command `{}` has the name of a task of `{}`",
                    c.name,
                    config.path.display()
                ));
            }
            if let Some((other, _)) = others.iter().find(|(_, cmds)| cmds.contains(&c.name)) {
                return Some(format!(
                    "its command `{}` is also a command of plugin `{other}`",
                    c.name
                ));
            }
            if c.name.is_empty() || c.name.starts_with('-') || c.name.contains(char::is_whitespace)
            {
                return Some(format!("its command name `{}` is not usable", c.name));
            }
        }
        None
    }

    /// The commands of the project's plugins. With `env`, plugins not
    /// running yet are started (in declared order); without, only running
    /// ones are asked.
    pub(crate) async fn commands(
        &self,
        config: &RushFile,
        env: Option<&BTreeMap<String, String>>,
    ) -> Vec<CommandInfo> {
        let mut out = Vec::new();
        for spec in &config.plugins {
            let info = match env {
                Some(env) => {
                    let slot = self.slot(&config.root, &spec.name);
                    self.ensure(&slot, spec, &Ctx { config, env })
                        .await
                        .ok()
                        .map(|(_, i)| i)
                }
                None => self
                    .existing(&config.root, &spec.name)
                    .and_then(|s| s.live())
                    .map(|(_, i)| i),
            };
            for c in info.map(|i| i.commands).unwrap_or_default() {
                out.push(CommandInfo {
                    plugin: spec.name.clone(),
                    name: c.name,
                    description: c.description,
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The plugin adding command `name`, if any (plugins are started).
    pub(crate) async fn command_owner(
        &self,
        config: &RushFile,
        name: &str,
        env: &BTreeMap<String, String>,
    ) -> Option<String> {
        if config.plugins.is_empty() {
            return None;
        }
        self.commands(config, Some(env))
            .await
            .into_iter()
            .find(|c| c.name == name)
            .map(|c| c.plugin)
    }

    /// Why no plugin adds command `name` when some plugins are not
    /// started for want of a grant (their commands are unknown until they
    /// shake hands): the error names them and the grant command.
    pub(crate) fn ungranted_command(&self, config: &RushFile, name: &str) -> Option<PluginFailure> {
        let waiting: Vec<String> = self.pending(config).into_iter().map(|p| p.name).collect();
        if waiting.is_empty() {
            return None;
        }
        let cmds: Vec<String> = waiting
            .iter()
            .map(|n| format!("`taskrush plugin grant {n}`"))
            .collect();
        let names: Vec<String> = waiting.iter().map(|n| format!("`{n}`")).collect();
        Some(PluginFailure {
            plugin: String::new(),
            phase: Phase::Command,
            message: format!(
                "`{name}` is no task, and no running plugin adds a command named `{name}`; {} not started: {} {} for permissions not granted yet",
                if waiting.len() == 1 {
                    "a plugin is"
                } else {
                    "some plugins are"
                },
                names.join(", "),
                if waiting.len() == 1 { "asks" } else { "ask" },
            ),
            hint: Some(format!("to grant them, run {}", cmds.join(", "))),
            stderr: Vec::new(),
        })
    }

    /// Run plugin command `name`.
    pub(crate) async fn command(
        &self,
        config: &RushFile,
        name: &str,
        args: Vec<String>,
        cwd: &str,
        env: &BTreeMap<String, String>,
    ) -> Result<CommandResult, PluginFailure> {
        let Some(owner) = self.command_owner(config, name, env).await else {
            if let Some(f) = self.ungranted_command(config, name) {
                return Err(f);
            }
            let known: Vec<String> = self
                .commands(config, None)
                .await
                .into_iter()
                .map(|c| format!("`{}`", c.name))
                .collect();
            return Err(PluginFailure {
                plugin: String::new(),
                phase: Phase::Command,
                message: format!("no plugin adds a command named `{name}`"),
                hint: Some(if known.is_empty() {
                    "`taskrush plugin list` shows the plugins and their state".into()
                } else {
                    format!("the plugin commands are {}", known.join(", "))
                }),
                stderr: Vec::new(),
            });
        };
        let Some(spec) = config.plugins.iter().find(|p| p.name == owner) else {
            return Err(PluginFailure {
                plugin: owner,
                phase: Phase::Command,
                message: "the plugin vanished from the `.rush` file".into(),
                hint: None,
                stderr: Vec::new(),
            });
        };
        let ctx = Ctx { config, env };
        let slot = self.slot(&config.root, &spec.name);
        let (process, _) = self.ensure(&slot, spec, &ctx).await?;
        super::audit::record(
            "command",
            &spec.name,
            &config.root,
            serde_json::json!({"command": name, "args": super::redact::args(&args), "cwd": cwd}),
        );
        let params = CommandParams {
            name: name.to_owned(),
            args,
            cwd: cwd.to_owned(),
        };
        let params = serde_json::to_value(&params).unwrap_or(Value::Null);
        match process
            .call(wire::method::COMMAND, params, spec.timeout)
            .await
        {
            Ok(v) => serde_json::from_value::<CommandResult>(v).map_err(|e| {
                fail_call(
                    &slot,
                    &process,
                    Phase::Command,
                    CallError::Protocol(format!("its answer to `command` is malformed: {e}")),
                )
            }),
            Err(CallError::Remote { message, .. }) => {
                Err(slot.failure(Phase::Command, format!("it refused: {message}"), None))
            }
            Err(e) => Err(fail_call(&slot, &process, Phase::Command, e)),
        }
    }
}
