//! Plugin commands: the names plugins add to `taskrush`, who owns which,
//! and calling one.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use taskrush_protocol::daemon::CommandInfo;
use taskrush_protocol::plugin::{self as wire, CommandParams, CommandResult, InitializeResult};

use super::failure::{Phase, PluginFailure};
use super::host::{Ctx, PluginHost};
use super::host_calls::CallContext;
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
    /// running yet are started (in declared order); without, nothing is
    /// started: running plugins are asked, and for the others the commands
    /// of their last handshake are given (the command cache, which
    /// survives the daemon).
    pub(crate) async fn commands(
        &self,
        config: &RushFile,
        env: Option<&BTreeMap<String, String>>,
    ) -> Vec<CommandInfo> {
        let mut out = Vec::new();
        for spec in &config.plugins {
            let cmds = match env {
                Some(env) => {
                    let slot = self.slot(&config.root, &spec.name);
                    self.ensure(&slot, spec, &Ctx { config, env })
                        .await
                        .ok()
                        .map(|(_, i)| i.commands)
                }
                // A plugin marked failed adds nothing until restarted.
                None if self
                    .existing(&config.root, &spec.name)
                    .is_some_and(|s| s.st().failed.is_some()) =>
                {
                    None
                }
                None => self.known_commands(config, &spec.name),
            };
            for c in cmds.unwrap_or_default() {
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

    /// The commands of plugin `name` without starting it: a running
    /// process's, else its last handshake's (`None`: never shook hands).
    fn known_commands(&self, config: &RushFile, name: &str) -> Option<Vec<wire::PluginCommand>> {
        if let Some((_, info)) = self.existing(&config.root, name).and_then(|s| s.live()) {
            return Some(info.commands);
        }
        super::command_cache::get(&config.root, name)
    }

    /// The plugin adding command `name`, if any. Only what is needed is
    /// started: the owner is looked up in what running plugins and the
    /// command cache say, and only plugins whose commands are unknown
    /// (never started with this daemon or an earlier one) are started to
    /// find it. So a name that is no command (a typo, a usage error)
    /// starts no plugin once every plugin has shaken hands once.
    pub(crate) async fn command_owner(
        &self,
        config: &RushFile,
        name: &str,
        env: &BTreeMap<String, String>,
    ) -> Option<String> {
        let mut unknown = Vec::new();
        for spec in &config.plugins {
            match self.known_commands(config, &spec.name) {
                Some(cmds) if cmds.iter().any(|c| c.name == name) => {
                    return Some(spec.name.clone());
                }
                Some(_) => {}
                None => unknown.push(spec),
            }
        }
        for spec in unknown {
            let slot = self.slot(&config.root, &spec.name);
            let Ok((_, info)) = self.ensure(&slot, spec, &Ctx { config, env }).await else {
                continue;
            };
            if info.commands.iter().any(|c| c.name == name) {
                return Some(spec.name.clone());
            }
        }
        None
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
        let (process, info) = self.ensure(&slot, spec, &ctx).await?;
        if !info.commands.iter().any(|c| c.name == name) {
            // The cache named it, the plugin as it runs now does not.
            return Err(PluginFailure {
                plugin: owner,
                phase: Phase::Command,
                message: format!("the plugin no longer adds a command named `{name}`"),
                hint: Some("`taskrush --help` lists the plugin commands".into()),
                stderr: Vec::new(),
            });
        }
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
        let began = std::time::Instant::now();
        let (reply, bytes) = process
            .call_counted(
                CallContext::request(config, env),
                wire::method::COMMAND,
                params,
                super::wasm::deadline_of(spec),
            )
            .await;
        if let Some(calls) = slot.metrics.command(name) {
            let end = match &reply {
                Ok(_) => crate::metrics::End::Ok,
                Err(CallError::Timeout(_)) => crate::metrics::End::Timeout,
                Err(_) => crate::metrics::End::Error,
            };
            calls.record(began.elapsed(), end, bytes);
        }
        match reply {
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

    /// Command `command` of plugin `callee`, called by plugin `caller`
    /// through the host (`call_command`): the callee started or kept
    /// warm as for any call, its deadline capped by what is left of the
    /// caller's (`left`), the call audited. The caller's grant and the
    /// cycle were checked by the host call; `cx` carries the chain on.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn plugin_command(
        &self,
        caller: &str,
        config: &RushFile,
        env: &BTreeMap<String, String>,
        (callee, command): (&str, &str),
        args: Vec<String>,
        cx: CallContext,
        left: Duration,
    ) -> Result<CommandResult, String> {
        let Some(spec) = config.plugins.iter().find(|p| p.name == callee) else {
            return Err(format!(
                "plugin `{callee}` is not in `{}`",
                config.path.display()
            ));
        };
        let ctx = Ctx { config, env };
        let slot = self.slot(&config.root, &spec.name);
        let (process, info) = self
            .ensure(&slot, spec, &ctx)
            .await
            .map_err(|f| f.render())?;
        if !info.commands.iter().any(|c| c.name == command) {
            let known: Vec<String> = info
                .commands
                .iter()
                .map(|c| format!("`{}`", c.name))
                .collect();
            return Err(format!(
                "plugin `{callee}` adds no command named `{command}` (it adds {})",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ));
        }
        super::audit::record(
            "call_command",
            caller,
            &config.root,
            serde_json::json!({
                "callee": callee,
                "command": command,
                "args": super::redact::args(&args),
                "chain": cx.chain,
            }),
        );
        let limit = super::wasm::deadline_of(spec).min(left);
        let params = CommandParams {
            name: command.to_owned(),
            args,
            cwd: config.root.display().to_string(),
        };
        let params = serde_json::to_value(&params).unwrap_or(Value::Null);
        let began = std::time::Instant::now();
        let (reply, bytes) = process
            .call_counted(cx, wire::method::COMMAND, params, limit)
            .await;
        // Counted in the callee's figures like a command run from the CLI.
        if let Some(calls) = slot.metrics.command(command) {
            let end = match &reply {
                Ok(_) => crate::metrics::End::Ok,
                Err(CallError::Timeout(_)) => crate::metrics::End::Timeout,
                Err(_) => crate::metrics::End::Error,
            };
            calls.record(began.elapsed(), end, bytes);
        }
        match reply {
            Ok(v) => serde_json::from_value::<CommandResult>(v)
                .map_err(|e| format!("the answer of `{callee}` to `{command}` is malformed: {e}")),
            Err(CallError::Remote { message, .. }) => {
                Err(format!("plugin `{callee}` refused `{command}`: {message}"))
            }
            Err(e) => Err(fail_call(&slot, &process, Phase::Command, e).render()),
        }
    }
}
