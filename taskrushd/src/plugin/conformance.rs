//! The conformance kit (`plugin_test`): start a plugin from its directory,
//! drive it through the whole protocol and say, in plain words, what it
//! got wrong.
//!
//! Checks, in order: the manifest; the handshake (answered in time,
//! well-formed, protocol major, name and version as in the manifest);
//! every hook it declares, with sample contexts (`before_task`,
//! `after_task` after a success and after a failure, `on_task_failure`);
//! its first command, if it declares any; answers carrying the ids of
//! their requests; nothing but protocol messages on stdout; `shutdown`
//! answered and the process gone within 2 s of it; then the permissions:
//! what it was denied during the test (a host call or a proxied
//! connection its manifest's `[permissions]` do not cover: their `denied`
//! audit records), each with the manifest line that would cover it.
//!
//! A native plugin is started only where `[native] allow` says so, and
//! always in a host process of its own (`taskrushd --native-host LIB`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use taskrush_protocol::daemon::{PluginCheck, PluginTestReport};
use taskrush_protocol::plugin::{
    CommandParams, CommandResult, Hook, HookParams, InitializeParams, InitializeResult,
    PLUGIN_PROTOCOL_VERSION, TaskContext, TaskError, TaskResult, method,
};
use taskrush_protocol::run::TaskStatus;
use tokio::time::Instant;

use super::process::{CallError, PluginProcess, STOP_STEP};
use super::stderr::StderrLog;
use crate::human;

/// The deadline of each call made by the kit (the host's default).
const DEADLINE: Duration = crate::config::rush_file::DEFAULT_PLUGIN_TIMEOUT;

struct Report {
    checks: Vec<PluginCheck>,
}

impl Report {
    fn check(&mut self, name: &str, ok: bool, message: impl Into<String>) {
        self.checks.push(PluginCheck {
            name: name.to_owned(),
            ok,
            message: message.into(),
        });
    }
}

/// Test the plugin in `dir` with the client's environment `env`.
pub(crate) async fn test(dir: &Path, env: &BTreeMap<String, String>) -> PluginTestReport {
    let mut r = Report { checks: Vec::new() };
    run(dir, env, &mut r).await;
    PluginTestReport {
        path: dir.display().to_string(),
        checks: r.checks,
    }
}

async fn run(dir: &Path, env: &BTreeMap<String, String>, r: &mut Report) {
    let loaded = match super::manifest::load(dir, None, None) {
        Ok(l) => {
            r.check(
                "manifest",
                true,
                format!("`{}` {}", l.manifest.name, l.manifest.version),
            );
            l
        }
        Err(e) => {
            r.check("manifest", false, e.message);
            return;
        }
    };
    let m = &loaded.manifest;
    // What the plugin is denied during the test (host calls, the proxy),
    // for the permission check at the end. The plugin's directory stands
    // for the project root in its audit records.
    let watch = super::audit::Watch::new(&m.name, dir);
    let stderr = StderrLog::new(&m.name);
    let with_stderr = |msg: String| {
        let last = stderr.last(5);
        if last.is_empty() {
            msg
        } else {
            format!("{msg}; its last stderr lines: {}", last.join(" | "))
        }
    };
    let mut proxy = None;
    // A native plugin is trusted code: tested only where the user config
    // allows native plugins, and always in a host process of its own
    // (`taskrushd --native-host LIB`, like the default mode), so that a
    // crash costs the test, not the daemon.
    let native = m.plugin_type == taskrush_protocol::plugin::PluginType::Native;
    let argv = if native {
        if let Err((message, hint)) = super::native::allowed(&m.name) {
            r.check("start", false, format!("{message}; hint: {hint}"));
            return;
        }
        let library = super::native::library_path(dir, &m.entry_point);
        match super::native::host_argv(&library) {
            Ok(argv) => argv,
            Err(e) => {
                r.check("start", false, e);
                return;
            }
        }
    } else {
        m.entry_point.clone()
    };
    let shown = if native {
        format!("the native library `{}`", m.entry_point.join(" "))
    } else {
        format!("`{}`", m.entry_point.join(" "))
    };
    let started = if m.plugin_type == taskrush_protocol::plugin::PluginType::Wasm {
        // Its grants, but no private dirs: nothing beyond them is opened.
        let none = dir.join(".taskrush-test-no-dir");
        let spec = crate::config::rush_file::PluginSpec {
            name: m.name.clone(),
            version: None,
            kind: crate::config::rush_file::PluginKind::Wasm,
            path: None,
            required: false,
            config: Value::Null,
            timeout: DEADLINE,
            limits: Default::default(),
            memory: None,
            module_size: None,
            line: 0,
        };
        let setup = super::wasm::setup(
            &m.name,
            &spec,
            &loaded,
            &m.permissions,
            (dir, &none, &none),
            env,
            &super::permissions::plugin_env(env, &m.permissions),
            stderr.clone(),
            None,
        );
        super::wasm::start(setup)
            .await
            .map(|g| PluginProcess::wasm(&m.name, g, None))
            .map_err(std::io::Error::other)
    } else {
        // Its HTTP goes through a proxy that allows the declared hosts only,
        // so that a request to another host is seen (and denied).
        let mut plugin_env = super::permissions::plugin_env(env, &m.permissions);
        match super::proxy::Proxy::start(&m.name, dir, &m.permissions.network).await {
            Ok(p) => {
                p.set_env(&mut plugin_env);
                proxy = Some(p);
            }
            Err(e) => {
                r.check("permissions", false, e);
                return;
            }
        }
        PluginProcess::spawn(
            &m.name,
            &argv,
            dir,
            &plugin_env,
            None,
            stderr.clone(),
            Some(dir),
        )
    };
    let process = match started {
        Ok(p) => p,
        Err(e) => {
            r.check("start", false, format!("cannot run {shown}: {e}"));
            return;
        }
    };

    r.check(
        "start",
        true,
        match (process.pid(), native) {
            (Some(pid), true) => format!("{shown} runs in its host process (pid {pid})"),
            (Some(pid), false) => format!("{shown} runs (pid {pid})"),
            (None, _) => format!("{shown} runs"),
        },
    );

    // Handshake.
    let params = InitializeParams {
        protocol_versions: vec![PLUGIN_PROTOCOL_VERSION],
        taskrush_version: taskrush_protocol::VERSION.to_owned(),
        name: m.name.clone(),
        config: Value::Object(Default::default()),
        project_root: dir.display().to_string(),
        permissions: m.permissions.to_list(),
        data_dir: None,
        tmp_dir: None,
        // The kit serves no host calls.
        host_methods: Vec::new(),
    };
    let t0 = Instant::now();
    let answer = process
        .call(
            method::INITIALIZE,
            serde_json::to_value(&params).unwrap_or(Value::Null),
            DEADLINE,
        )
        .await;
    let took = t0.elapsed();
    let info = match answer.map(serde_json::from_value::<InitializeResult>) {
        Ok(Ok(info)) => {
            let mut wrong = Vec::new();
            if info.protocol != PLUGIN_PROTOCOL_VERSION {
                wrong.push(format!(
                    "it chose protocol {}, which was not offered (offered: {PLUGIN_PROTOCOL_VERSION})",
                    info.protocol
                ));
            }
            if info.name != m.name {
                wrong.push(format!(
                    "it calls itself `{}`, its manifest `{}`",
                    info.name, m.name
                ));
            }
            if info.version != m.version {
                wrong.push(format!(
                    "it says version {}, its manifest {}",
                    info.version, m.version
                ));
            }
            if info.hooks.contains(&Hook::Unknown) {
                wrong.push("it declares a hook this host does not know".into());
            }
            if wrong.is_empty() {
                let hooks: Vec<&str> = info.hooks.iter().map(|h| h.method()).collect();
                r.check(
                    "handshake",
                    true,
                    format!(
                        "answered in {} ms; hooks: {}; commands: {}",
                        took.as_millis(),
                        if hooks.is_empty() {
                            "none".into()
                        } else {
                            hooks.join(", ")
                        },
                        if info.commands.is_empty() {
                            "none".into()
                        } else {
                            info.commands
                                .iter()
                                .map(|c| c.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        }
                    ),
                );
            } else {
                r.check("handshake", false, wrong.join("; "));
            }
            info
        }
        Ok(Err(e)) => {
            r.check(
                "handshake",
                false,
                format!("its answer to `initialize` is not an InitializeResult: {e}"),
            );
            process.kill("conformance kit: bad handshake");
            return;
        }
        Err(e) => {
            r.check("handshake", false, with_stderr(describe("initialize", &e)));
            process.kill("conformance kit: no handshake");
            return;
        }
    };

    // Hooks, with sample contexts.
    let context = TaskContext {
        task_name: "conformance-check".into(),
        command: "true".into(),
        working_dir: dir.display().to_string(),
        env_vars: env
            .iter()
            .filter(|(k, _)| m.permissions.environment.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        config: Value::Object(Default::default()),
        run_id: 0,
    };
    let ok_result = TaskResult {
        status: TaskStatus::Success,
        exit_code: Some(0),
        duration_ms: 12,
        cached: false,
    };
    let failed_result = TaskResult {
        status: TaskStatus::Failed,
        exit_code: Some(2),
        duration_ms: 34,
        cached: false,
    };
    let error = TaskError {
        message: "exit code 2".into(),
        exit_code: Some(2),
    };
    let mut calls: Vec<(&str, Hook, HookParams)> = Vec::new();
    let hp = |result: Option<TaskResult>, error: Option<TaskError>| HookParams {
        context: context.clone(),
        result,
        error,
    };
    if info.hooks.contains(&Hook::BeforeTask) {
        calls.push(("before_task", Hook::BeforeTask, hp(None, None)));
    }
    if info.hooks.contains(&Hook::AfterTask) {
        calls.push((
            "after_task (success)",
            Hook::AfterTask,
            hp(Some(ok_result), None),
        ));
        calls.push((
            "after_task (failure)",
            Hook::AfterTask,
            hp(Some(failed_result), None),
        ));
    }
    if info.hooks.contains(&Hook::OnTaskFailure) {
        calls.push((
            "on_task_failure",
            Hook::OnTaskFailure,
            hp(None, Some(error)),
        ));
    }
    for (name, hook, params) in calls {
        if let Some(why) = process.dead() {
            r.check(name, false, with_stderr(format!("not run: {why}")));
            continue;
        }
        let t0 = Instant::now();
        let answer = process
            .call(
                hook.method(),
                serde_json::to_value(&params).unwrap_or(Value::Null),
                DEADLINE,
            )
            .await;
        let ms = t0.elapsed().as_millis();
        match answer {
            Ok(_) => r.check(name, true, format!("answered in {ms} ms")),
            Err(CallError::Remote { code, message }) if hook == Hook::BeforeTask => r.check(
                name,
                true,
                format!("answered in {ms} ms with an error (a veto, code {code}): {message}"),
            ),
            Err(CallError::Remote { code, message }) => r.check(
                name,
                true,
                format!("answered in {ms} ms with an error (code {code}): {message}; the host reports it as a warning"),
            ),
            Err(e) => r.check(name, false, with_stderr(describe(hook.method(), &e))),
        }
    }

    // One command.
    if let Some(cmd) = info.commands.first()
        && process.dead().is_none()
    {
        let params = CommandParams {
            name: cmd.name.clone(),
            args: Vec::new(),
            cwd: dir.display().to_string(),
        };
        let answer = process
            .call(
                method::COMMAND,
                serde_json::to_value(&params).unwrap_or(Value::Null),
                DEADLINE,
            )
            .await;
        match answer.map(serde_json::from_value::<CommandResult>) {
            Ok(Ok(res)) => r.check(
                &format!("command `{}`", cmd.name),
                true,
                format!("exit code {}", res.exit_code),
            ),
            Ok(Err(e)) => r.check(
                &format!("command `{}`", cmd.name),
                false,
                format!("its answer is not a CommandResult: {e}"),
            ),
            Err(CallError::Remote { code, message }) => r.check(
                &format!("command `{}`", cmd.name),
                true,
                format!("refused (code {code}): {message}"),
            ),
            Err(e) => r.check(
                &format!("command `{}`", cmd.name),
                false,
                with_stderr(describe("command", &e)),
            ),
        }
    }

    // The wire, as seen so far.
    let unmatched = process.unmatched();
    r.check(
        "ids",
        unmatched == 0,
        if unmatched == 0 {
            "every answer carried the id of its request".to_owned()
        } else {
            format!("{unmatched} answers carried an id no request had")
        },
    );
    let junk = process.junk();
    r.check(
        "stdout",
        junk == 0,
        if junk == 0 {
            "only protocol messages on stdout".to_owned()
        } else {
            format!("{junk} lines on stdout were not JSON-RPC messages (logs belong on stderr)")
        },
    );

    // Shutdown.
    shutdown(&process, r).await;
    drop(proxy);

    // Permissions: what it was denied during the test.
    let denied = watch.denied();
    if denied.is_empty() {
        r.check(
            "permissions",
            true,
            "it used nothing beyond what its manifest's `[permissions]` declare",
        );
    } else {
        // Each distinct refusal once, with how many times it happened.
        let mut items: Vec<(String, usize)> = Vec::new();
        for line in denied.iter().map(uncovered) {
            match items.iter_mut().find(|(l, _)| *l == line) {
                Some((_, n)) => *n += 1,
                None => items.push((line, 1)),
            }
        }
        let items: Vec<String> = items
            .into_iter()
            .map(|(l, n)| match (n, l.split_once("; hint: ")) {
                (1, _) => l,
                (n, Some((what, hint))) => format!("{what} ({n} times); hint: {hint}"),
                (n, None) => format!("{l} ({n} times)"),
            })
            .collect();
        r.check(
            "permissions",
            false,
            format!(
                "it did what its manifest's `[permissions]` do not cover:\n  - {}",
                items.join("\n  - ")
            ),
        );
    }
}

/// One `denied` audit record as a line of the permission check: what was
/// refused and the manifest line that would cover it.
fn uncovered(rec: &Value) -> String {
    let s = |k: &str| {
        rec.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let permission = s("permission");
    match permission.as_str() {
        "network" => {
            let host = s("host");
            let port = rec.get("port").and_then(Value::as_u64).unwrap_or_default();
            format!(
                "network: a connection to `{host}:{port}` ({}); hint: add `network = [\"{host}\"]` (or `\"{host}:{port}\"`) under `[permissions]` in `plugin.toml`",
                s("why")
            )
        }
        "" => format!(
            "`{}`: {}; hint: nothing in `plugin.toml` allows it: an external plugin does not call the host",
            s("method"),
            s("why")
        ),
        kind => {
            let item = s("item");
            let value = if kind == "filesystem" && s("call") == "read_file" {
                format!("read:{item}")
            } else {
                item.clone()
            };
            format!(
                "`{}`: no `{kind}` permission for `{item}`; hint: add `{kind} = [\"{value}\"]` under `[permissions]` in `plugin.toml`",
                s("call")
            )
        }
    }
}

async fn shutdown(process: &Arc<PluginProcess>, r: &mut Report) {
    if let Some(why) = process.dead() {
        r.check("shutdown", false, format!("not run: {why}"));
        return;
    }
    let answer = process.call(method::SHUTDOWN, Value::Null, STOP_STEP).await;
    process.close_stdin().await;
    let t0 = Instant::now();
    let exited = process.wait_exit(STOP_STEP).await;
    match (answer, exited) {
        (Ok(_), Some(_)) => r.check(
            "shutdown",
            true,
            format!("answered, and exited {} ms after", t0.elapsed().as_millis()),
        ),
        (Err(CallError::Gone(_)), Some(_)) => r.check(
            "shutdown",
            true,
            "exited without answering `shutdown` (allowed, but answering first is better)",
        ),
        (Err(e), _) => {
            r.check("shutdown", false, describe("shutdown", &e));
            process.kill("conformance kit");
        }
        (Ok(_), None) => {
            r.check(
                "shutdown",
                false,
                format!(
                    "answered `shutdown` but was still running {} after it and after its stdin was closed (it was killed)",
                    human::duration(STOP_STEP)
                ),
            );
            process.kill("conformance kit");
        }
    }
}

fn describe(call: &str, e: &CallError) -> String {
    match e {
        CallError::Timeout(d) => format!("no answer to `{call}` within {}", human::duration(*d)),
        CallError::Gone(how) => format!("it exited instead of answering `{call}` ({how})"),
        CallError::Protocol(m) => m.clone(),
        CallError::Trapped(why) => format!("it trapped in `{call}`: {why}"),
        CallError::Remote { code, message } => {
            format!("it answered `{call}` with error {code}: {message}")
        }
    }
}
