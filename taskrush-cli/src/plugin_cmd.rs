//! `taskrush plugin …` and the commands plugins add (`taskrush NAME args…`).
//!
//! A plugin command is one `dispatch` request, which carries the words
//! after `NAME` exactly as typed and lets the daemon decide whether `NAME`
//! is a task or a plugin's command: from `run.rs` when `taskrush NAME
//! args…` parses as a run, from [`dispatch`] (`command_only`) when its
//! arguments are not `run`'s (`taskrush greet --loud`). A daemon from
//! before `dispatch` is served the old way: `run` answers
//! `PLUGIN_COMMAND`, then `plugin_command` runs it.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

use serde_json::json;
use taskrush_protocol::daemon::{
    PluginDetails, PluginState, PluginStatus, PluginTestReport, TaskList,
};
use taskrush_protocol::method;
use taskrush_protocol::paths::DaemonPaths;
use taskrush_protocol::plugin::CommandResult;

use crate::args::{PluginAction, SUBCOMMANDS, TAKES_VALUE};
use crate::client::{self, Client};
use crate::error::CliError;

fn connect(no_daemon: bool) -> Result<Client, CliError> {
    client::connect(&DaemonPaths::from_env(), false, no_daemon)
}

fn file_param(file: &Option<PathBuf>) -> serde_json::Value {
    json!(file.as_ref().map(|f| f.display().to_string()))
}

pub fn plugin(file: Option<PathBuf>, action: PluginAction) -> Result<i32, CliError> {
    let cwd = crate::cwd()?;
    let mut c = connect(false)?;
    let out = std::io::stdout();
    let mut out = out.lock();
    let action_word = match &action {
        PluginAction::Disable { .. } => "disable",
        _ => "",
    };
    match action {
        PluginAction::List {
            json,
            installed: true,
        } => crate::registry_cmd::installed(&mut c, json),
        PluginAction::List { json, .. } => {
            let list: Vec<PluginStatus> = c.call(
                method::PLUGIN_LIST,
                json!({"cwd": cwd, "file": file_param(&file)}),
            )?;
            if json {
                let _ = writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&list).unwrap_or_default()
                );
                return Ok(0);
            }
            if list.is_empty() {
                let _ = writeln!(
                    out,
                    "no plugins (declare them under `plugins:` in the `.rush` file)"
                );
                return Ok(0);
            }
            let rows: Vec<[String; 8]> = list
                .iter()
                .map(|p| {
                    [
                        p.name.clone(),
                        p.version.clone().unwrap_or_else(|| "-".into()),
                        state(p),
                        p.restarts.to_string(),
                        sandbox_summary(p),
                        limits_summary(p),
                        dash(&p.hooks),
                        dash(&p.commands),
                    ]
                })
                .collect();
            let head = [
                "NAME", "VERSION", "STATE", "RESTARTS", "SANDBOX", "LIMITS", "HOOKS", "COMMANDS",
            ];
            crate::render::table(&mut out, head, &rows);
            let unsigned: Vec<String> = list
                .iter()
                .filter(|p| p.unsigned)
                .map(|p| format!("`{}`", p.name))
                .collect();
            if !unsigned.is_empty() {
                let _ = writeln!(
                    out,
                    "\nunsigned (development plugins, not verified before they start): {}",
                    unsigned.join(", ")
                );
            }
            for p in list.iter().filter(|p| p.needs_grant) {
                let _ = writeln!(
                    out,
                    "\n`{}` asks for permissions not granted yet: run `taskrush plugin grant {}`",
                    p.name, p.name
                );
            }
            for p in list.iter().filter(|p| p.error.is_some()) {
                let _ = writeln!(
                    out,
                    "\n`{}`: {}",
                    p.name,
                    p.error.as_deref().unwrap_or_default()
                );
            }
            Ok(0)
        }
        PluginAction::Info { name, json } => {
            let d: PluginDetails = c.call(
                method::PLUGIN_INFO,
                json!({"cwd": cwd, "file": file_param(&file), "name": name}),
            )?;
            if json {
                let _ = writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&d).unwrap_or_default()
                );
                return Ok(0);
            }
            let s = &d.status;
            let mut kv = |k: &str, v: String| {
                let _ = writeln!(out, "{k:<12} {v}");
            };
            kv("name", s.name.clone());
            kv("version", s.version.clone().unwrap_or_else(|| "-".into()));
            kv("kind", s.kind.clone());
            kv("state", state(s));
            kv("restarts", s.restarts.to_string());
            kv("required", d.required.to_string());
            kv("timeout", format!("{} ms", d.timeout_ms));
            kv("path", d.path.clone().unwrap_or_else(|| "-".into()));
            if let Some(m) = &d.manifest {
                kv("description", m.description.clone());
                kv("author", m.author.clone());
                kv("license", m.license.clone());
                kv("entry_point", m.entry_point.join(" "));
                kv("taskrush", m.taskrush_version.clone());
                if let Some(e) = &m.enforcement {
                    kv("enforcement", e.clone());
                }
            }
            for (kind, l) in &s.limits {
                kv(&format!("limit {kind}"), limit_text(kind, l));
            }
            kv("hooks", dash(&s.hooks));
            kv("commands", dash(&s.commands));
            if let Some(e) = &d.last_error {
                kv("last error", e.clone());
            }
            permissions_table(&mut out, &d);
            if !d.stderr.is_empty() {
                let _ = writeln!(out, "last stderr lines:");
                for l in &d.stderr {
                    let _ = writeln!(out, "  | {l}");
                }
            }
            Ok(0)
        }
        // `main.rs` answers it before connecting (read from the file, no
        // daemon needed); kept here so that this match stays exhaustive.
        PluginAction::Audit { name, since, json } => {
            crate::audit_cmd::audit(name.as_deref(), since.as_deref(), json)
        }
        PluginAction::Restart { name } => {
            let s: PluginStatus = c.call(
                method::PLUGIN_RESTART,
                json!({"cwd": cwd, "file": file_param(&file), "name": name, "env": crate::client_env()}),
            )?;
            let _ = writeln!(out, "restarted `{}`: {}", s.name, state(&s));
            Ok(0)
        }
        PluginAction::Grant { name, yes } => {
            drop(out);
            let file = file.as_ref().map(|f| f.display().to_string());
            crate::consent::grant_cmd(&mut c, &cwd, file.as_deref(), &name, yes)
        }
        PluginAction::Revoke { name } => {
            drop(out);
            let file = file.as_ref().map(|f| f.display().to_string());
            crate::consent::revoke_cmd(&mut c, &cwd, file.as_deref(), &name)
        }
        // `main.rs` answers them before connecting (no daemon needed).
        PluginAction::New { name, lang, dir } => crate::scaffold::new(&name, &lang, dir.as_deref()),
        PluginAction::Build { dir } => crate::scaffold::build(dir.as_deref()),
        PluginAction::Logs { name, follow, json } => {
            drop(out);
            logs(&mut c, &name, follow, json)
        }
        PluginAction::Stats { name, json } => {
            drop(out);
            let file = file.as_ref().map(|f| f.display().to_string());
            crate::stats_cmd::plugin_stats(&mut c, &cwd, file, name.as_deref(), json)
        }
        PluginAction::Disable { name } | PluginAction::Enable { name } => {
            let disable = matches!(action_word, "disable");
            let changed: bool = c.call(
                method::PLUGIN_DISABLE,
                json!({"cwd": cwd, "file": file_param(&file), "name": name, "disable": disable}),
            )?;
            let name = crate::render::printable(&name);
            let _ = match (disable, changed) {
                (true, true) => writeln!(
                    out,
                    "disabled `{name}` for this project: its hooks are skipped"
                ),
                (true, false) => writeln!(out, "`{name}` was already disabled for this project"),
                (false, true) => writeln!(out, "enabled `{name}` for this project"),
                (false, false) => writeln!(out, "`{name}` was not disabled"),
            };
            Ok(0)
        }
        PluginAction::Install {
            spec,
            from_rush,
            locked,
            allow_unsigned,
            json,
        } => {
            drop(out);
            let file = file.as_ref().map(|f| f.display().to_string());
            match spec {
                Some(spec) if !from_rush => crate::registry_cmd::install(
                    &mut c,
                    &spec,
                    allow_unsigned,
                    (&cwd, file.as_deref()),
                    json,
                ),
                _ => {
                    crate::lock_cmd::install_from_rush(&mut c, &cwd, file.as_deref(), locked, json)
                }
            }
        }
        PluginAction::Update { name, locked, json } => {
            drop(out);
            let file = file.as_ref().map(|f| f.display().to_string());
            crate::lock_cmd::update(&mut c, &cwd, file.as_deref(), name.as_deref(), locked, json)
        }
        PluginAction::Lock { check: _, json } => {
            drop(out);
            let file = file.as_ref().map(|f| f.display().to_string());
            crate::lock_cmd::check(&mut c, &cwd, file.as_deref(), json)
        }
        PluginAction::Test { path, json } => {
            let path = std::path::absolute(&path)
                .map_err(|e| CliError::io(&format!("cannot resolve `{}`", path.display()), e))?;
            let r: PluginTestReport = c.call(
                method::PLUGIN_TEST,
                json!({"path": path.display().to_string(), "env": crate::client_env()}),
            )?;
            let failed = r.checks.iter().filter(|c| !c.ok).count();
            if json {
                let _ = writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&r).unwrap_or_default()
                );
            } else {
                for check in &r.checks {
                    let mark = if check.ok { "✓" } else { "✗" };
                    let _ = writeln!(out, "{mark} {}: {}", check.name, check.message);
                }
                let _ = writeln!(
                    out,
                    "{} of {} checks passed",
                    r.checks.len() - failed,
                    r.checks.len()
                );
            }
            Ok(if failed == 0 { 0 } else { 1 })
        }
        PluginAction::Search { text, json } => crate::registry_cmd::search(&mut c, &text, json),
        PluginAction::Remove { spec } => crate::registry_cmd::remove(&mut c, &spec),
        PluginAction::Publish {
            path,
            registry,
            key,
            platform,
            expires_days,
            revoke,
        } => crate::registry_cmd::publish(
            &mut c,
            crate::registry_cmd::PublishArgs {
                path,
                registry,
                key,
                platform,
                expires_days,
                revoke,
            },
        ),
    }
}

/// `plugin logs NAME [-f]`: the kept lines; with `-f` (a
/// `plugin_logs_follow` subscription: the kept lines, then each new one)
/// until Ctrl-C or the daemon stops.
fn logs(c: &mut Client, name: &str, follow: bool, json: bool) -> Result<i32, CliError> {
    use taskrush_protocol::daemon::PluginLogLine;
    let mut out = std::io::stdout();
    let mut print = |l: &PluginLogLine| -> bool {
        let line = if json {
            serde_json::to_string(l).unwrap_or_default()
        } else {
            let task = l
                .task
                .as_ref()
                .map(|t| format!(" [{t}]"))
                .unwrap_or_default();
            format!("{} {:<8}{task} {}", l.time, l.level, l.message)
        };
        writeln!(out, "{line}").and_then(|_| out.flush()).is_ok()
    };
    if !follow {
        let lines: Vec<PluginLogLine> = c.call(method::PLUGIN_LOGS, json!({"name": name}))?;
        if lines.is_empty() && !json {
            eprintln!("no log lines from plugin `{name}` since the daemon started");
        }
        for l in &lines {
            if !print(l) {
                break;
            }
        }
        return Ok(0);
    }
    let id = c.send(method::PLUGIN_LOGS_FOLLOW, json!({"name": name}))?;
    loop {
        let incoming = match c.read() {
            Ok(m) => m,
            Err(CliError::Disconnected(_)) => return Ok(0),
            Err(e) => return Err(e),
        };
        match incoming {
            client::Incoming::Response {
                id: r,
                result: Err(e),
            } if r == id => return Err(CliError::Remote(e)),
            client::Incoming::Notification { method: m, params } if m == method::PLUGIN_LOG => {
                let Some(line) = params
                    .get("result")
                    .and_then(|r| serde_json::from_value::<PluginLogLine>(r.clone()).ok())
                else {
                    continue;
                };
                if !print(&line) {
                    return Ok(0); // `| head`
                }
            }
            _ => {}
        }
    }
}

/// `plugin info`'s permissions, kind by kind: declared, granted, denied
/// (when the user config denies any), what it gets, and the level the
/// sandbox achieves.
fn permissions_table(out: &mut impl Write, d: &PluginDetails) {
    let Some(m) = &d.manifest else { return };
    let _ = writeln!(out, "permissions:");
    let empty = taskrush_protocol::plugin::Permissions::default();
    let granted = d.granted.as_ref();
    let kinds = m.permissions.kinds();
    for (i, (kind, declared)) in kinds.iter().enumerate() {
        let pick = |p: &taskrush_protocol::plugin::Permissions| p.kinds()[i].1.clone();
        if *kind == "plugins" && declared.is_empty() {
            // Calling other plugins is rare: shown only when declared.
            continue;
        }
        let _ = writeln!(out, "  {kind}");
        let _ = writeln!(out, "    declared   {}", dash(declared));
        let _ = writeln!(
            out,
            "    granted    {}",
            granted
                .map(|g| dash(&pick(g)))
                .unwrap_or_else(|| "(no grant)".into())
        );
        if let Some(denied) = d.denied.as_ref().map(&pick).filter(|v| !v.is_empty()) {
            let _ = writeln!(out, "    denied     {}", dash(&denied));
        }
        let _ = writeln!(
            out,
            "    effective  {}",
            dash(&pick(d.effective.as_ref().unwrap_or(&empty)))
        );
        if let Some(level) = d.status.enforcement.get(*kind) {
            let _ = writeln!(out, "    enforced   {level}");
        } else if *kind == "plugins" {
            let _ = writeln!(
                out,
                "    enforced   enforced (calls go through the host, audited)"
            );
        }
    }
    for (kind, level) in d
        .status
        .enforcement
        .iter()
        .filter(|(k, _)| !kinds.iter().any(|(n, _)| n == k))
    {
        let _ = writeln!(out, "  {kind}");
        let _ = writeln!(out, "    enforced   {level}");
    }
    if let Some(p) = &d.pending {
        let _ = writeln!(
            out,
            "not granted yet: {}\nhint: run `taskrush plugin grant {}`",
            crate::consent::describe(p),
            d.status.name
        );
    }
}

fn state(p: &PluginStatus) -> String {
    if p.disabled {
        return "disabled".into();
    }
    if p.needs_grant && p.state == PluginState::NotStarted {
        return "needs a grant".into();
    }
    match (p.state, p.pid) {
        (PluginState::Running, Some(pid)) => format!("running (pid {pid})"),
        (PluginState::Idle, Some(pid)) => format!("idle (pid {pid})"),
        (PluginState::Running, None) => "running".into(),
        (PluginState::Idle, None) => "idle".into(),
        (PluginState::Failed, _) => "failed".into(),
        (PluginState::NotStarted, _) => "not started".into(),
    }
}

fn dash(items: &[String]) -> String {
    if items.is_empty() {
        "-".into()
    } else {
        items.join(", ")
    }
}

/// `taskrush [-f FILE] [--no-daemon] NAME args…`, split.
pub struct CommandLine {
    pub file: Option<PathBuf>,
    pub no_daemon: bool,
    pub name: String,
    pub args: Vec<String>,
}

/// Split the raw command line into a plugin command and its arguments:
/// the first word that is not an option (or an option's value) and not a
/// built-in subcommand is the command; every word after it is its own.
pub fn split(raw: &[OsString]) -> Option<CommandLine> {
    let mut file = None;
    let mut no_daemon = false;
    let mut seen_run = false;
    let mut words = raw.iter().skip(1).map(|a| a.to_string_lossy().into_owned());
    while let Some(w) = words.next() {
        if w == "--" {
            return None;
        }
        if let Some(f) = w.strip_prefix("--file=") {
            file = Some(PathBuf::from(f));
            continue;
        }
        if w.starts_with('-') && w.len() > 1 {
            if w == "--no-daemon" {
                no_daemon = true;
            }
            if TAKES_VALUE.contains(&w.as_str()) {
                let v = words.next()?;
                if w == "-f" || w == "--file" {
                    file = Some(PathBuf::from(v));
                }
            }
            continue;
        }
        if w == "run" && !seen_run {
            // `taskrush run NAME`: a run whose first target is a command.
            seen_run = true;
            continue;
        }
        if SUBCOMMANDS.contains(&w.as_str()) {
            return None;
        }
        return Some(CommandLine {
            file,
            no_daemon,
            name: w,
            args: words.collect(),
        });
    }
    None
}

/// `taskrush NAME args…` whose words are not `run`'s: one `dispatch` with
/// `command_only` runs plugin command `NAME`, or is refused (`-32602`)
/// when `NAME` is none (a usage error, which starts no plugin whose
/// commands are known). A daemon from before `dispatch` is asked the old
/// way (`list_tasks`, then `plugin_command`).
pub fn dispatch(cmd: CommandLine) -> Result<i32, CliError> {
    let args = crate::args::RunArgs {
        tasks: vec![cmd.name.clone()],
        file: cmd.file.clone(),
        no_daemon: cmd.no_daemon,
        ..Default::default()
    };
    let tail = crate::run::Tail {
        args: cmd.args.clone(),
        command_only: true,
    };
    match crate::run::run(args, tail) {
        Err(CliError::Remote(e)) if e.code == taskrush_protocol::error::METHOD_NOT_FOUND => {
            if is_command(&cmd) {
                command(cmd)
            } else {
                Err(CliError::Remote(e))
            }
        }
        other => other,
    }
}

/// Run plugin command `cmd`: its stdout and stderr are printed, its exit
/// code is ours.
pub fn command(cmd: CommandLine) -> Result<i32, CliError> {
    let mut c = connect(cmd.no_daemon)?;
    let file = cmd.file.as_ref().map(|f| f.display().to_string());
    crate::consent::ask_pending(&mut c, &crate::cwd()?, file.as_deref())?;
    let r: CommandResult = c.call(
        method::PLUGIN_COMMAND,
        json!({
            "cwd": crate::cwd()?,
            "file": file_param(&cmd.file),
            "name": cmd.name,
            "args": cmd.args,
            "env": crate::client_env(),
        }),
    )?;
    let _ = std::io::stderr().write_all(r.stderr.as_bytes());
    let mut out = std::io::stdout();
    let _ = out.write_all(r.stdout.as_bytes());
    let _ = out.flush();
    Ok(r.exit_code)
}

/// The project's plugin commands, or nothing when there is no daemon, no
/// project or no plugin command. With `ask` (a daemon from before
/// `dispatch`), its plugins are started and, on a terminal, plugins
/// waiting for consent are asked about first (their commands are unknown
/// until they start); without, nothing is started: the daemon answers
/// from running plugins and its cache of their last handshakes.
pub fn commands(no_daemon: bool, ask: bool, file: Option<&str>) -> Vec<(String, String)> {
    let Ok(cwd) = crate::cwd() else {
        return Vec::new();
    };
    let Ok(mut c) = connect(no_daemon) else {
        return Vec::new();
    };
    if ask && crate::consent::ask_pending(&mut c, &cwd, file).is_err() {
        return Vec::new();
    }
    let params = if ask {
        json!({"cwd": cwd, "file": file, "env": crate::client_env()})
    } else {
        json!({"cwd": cwd, "file": file})
    };
    let list: Result<TaskList, _> = c.call(method::LIST_TASKS, params);
    list.map(|l| {
        l.commands
            .into_iter()
            .map(|c| (c.name, format!("{} (plugin `{}`)", c.description, c.plugin)))
            .collect()
    })
    .unwrap_or_default()
}

/// Whether a plugin adds command `name` in this project.
pub fn is_command(cmd: &CommandLine) -> bool {
    let file = cmd.file.as_ref().map(|f| f.display().to_string());
    commands(cmd.no_daemon, true, file.as_deref())
        .iter()
        .any(|(n, _)| *n == cmd.name)
}

/// The "Plugin commands:" section of `taskrush --help`, if there are any.
pub fn help_section() -> Option<String> {
    let cmds = commands(false, false, None);
    if cmds.is_empty() {
        return None;
    }
    let width = cmds
        .iter()
        .map(|(n, _)| n.chars().count())
        .max()
        .unwrap_or(0);
    let mut s = String::from("Plugin commands (this project):\n");
    for (name, desc) in cmds {
        s.push_str(&format!("  {name:<width$}  {}\n", desc.trim()));
    }
    Some(s.trim_end().to_owned())
}

/// One word for `plugin list`: `enforced` when every kind is, `partial`
/// when some kind is not fully, `-` when nothing is reported.
fn sandbox_summary(p: &PluginStatus) -> String {
    if p.enforcement.is_empty() {
        "-".into()
    } else if p.enforcement.values().all(|v| v == "enforced") {
        "enforced".into()
    } else if p
        .enforcement
        .values()
        .any(|v| v == "enforced" || v.starts_with("partial"))
    {
        "partial".into()
    } else {
        "not enforced".into()
    }
}

/// One word for the `LIMITS` column of `plugin list`, as for `SANDBOX`.
fn limits_summary(p: &PluginStatus) -> String {
    if p.limits.is_empty() {
        "-".into()
    } else if p.limits.values().all(|l| l.level == "enforced") {
        "enforced".into()
    } else if p.limits.values().any(|l| l.level == "enforced") {
        "partial".into()
    } else {
        "not enforced".into()
    }
}

/// `1 GiB: enforced`, `1024: not enforced: why`, `unlimited`.
fn limit_text(kind: &str, l: &taskrush_protocol::daemon::LimitStatus) -> String {
    let value = match (l.value, kind) {
        (None, _) => "unlimited".to_owned(),
        (Some(b), "memory" | "module_size") if b % (1 << 30) == 0 => format!("{} GiB", b >> 30),
        (Some(b), "memory" | "module_size") if b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        (Some(b), "memory" | "module_size") => format!("{b} bytes"),
        (Some(ms), "deadline") => format!("{ms}ms"),
        (Some(n), _) => n.to_string(),
    };
    format!("{value}: {}", l.level)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(args: &[&str]) -> Option<(Option<String>, String, Vec<String>)> {
        let raw: Vec<OsString> = std::iter::once("taskrush")
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect();
        split(&raw).map(|c| (c.file.map(|f| f.display().to_string()), c.name, c.args))
    }

    #[test]
    fn the_command_is_the_first_word_and_the_rest_is_its_own() {
        assert_eq!(
            sp(&["greet", "--loud", "-f", "x"]),
            Some((
                None,
                "greet".into(),
                vec!["--loud".into(), "-f".into(), "x".into()]
            ))
        );
        assert_eq!(
            sp(&["-f", "a/.rush", "greet"]),
            Some((Some("a/.rush".into()), "greet".into(), vec![]))
        );
        assert_eq!(sp(&["plugin", "list"]), None);
        assert_eq!(sp(&["--list"]), None);
    }
}
