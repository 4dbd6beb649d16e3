//! Consent to plugin permissions: on a terminal, before a run or a plugin
//! command, the plugins of the project that ask for permissions not
//! granted yet are shown and the user is asked, plugin by plugin (the
//! daemon never reads a terminal: it answers `plugin_pending` and is
//! told `plugin_grant`). Without a terminal nothing is asked: the daemon
//! does not start an ungranted plugin and the run says how to grant it.
//! Also `taskrush plugin grant` and `taskrush plugin revoke`.

use std::io::{BufRead, IsTerminal, Write};

use serde_json::json;
use taskrush_protocol::daemon::{PluginDetails, PluginGrant, PluginPending};
use taskrush_protocol::method;
use taskrush_protocol::plugin::Permissions;

use crate::client::Client;
use crate::error::CliError;

/// Whether we can ask the user: stdin and stderr are a terminal.
pub fn on_terminal() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// On a terminal: ask about every plugin of the project waiting for
/// consent, and tell the daemon each answer. Quietly does nothing when
/// not on a terminal or when the daemon cannot say (no project: the run
/// reports that itself).
pub fn ask_pending(c: &mut Client, cwd: &str, file: Option<&str>) -> Result<(), CliError> {
    if !on_terminal() {
        return Ok(());
    }
    let Ok(pending) =
        c.call::<Vec<PluginPending>>(method::PLUGIN_PENDING, json!({"cwd": cwd, "file": file}))
    else {
        return Ok(());
    };
    for p in pending {
        let yes = ask(&p.name, &p.more, p.granted.as_ref(), p.reads_project_root)?;
        grant(c, cwd, file, &p.name, !yes)?;
        if !yes {
            let _ = writeln!(
                std::io::stderr(),
                "not granted: `{}` is not started{}; grant it later with `taskrush plugin grant {}`",
                p.name,
                if p.required {
                    " and the tasks that need it fail"
                } else {
                    ", its hooks are skipped"
                },
                p.name
            );
        }
    }
    Ok(())
}

fn lines(p: &Permissions, mark: &str) -> String {
    let mut s = String::new();
    for (kind, items) in p.kinds() {
        if !items.is_empty() {
            s.push_str(&format!("  {mark}{kind}: {}\n", items.join(", ")));
        }
    }
    s
}

/// Show what `name` asks for (`more`, beyond `granted`) and ask y/N.
fn ask(
    name: &str,
    more: &Permissions,
    granted: Option<&Permissions>,
    reads_project: bool,
) -> Result<bool, CliError> {
    let mut err = std::io::stderr().lock();
    let widening = granted.is_some_and(|g| !g.is_empty());
    let mut text = if widening {
        format!("plugin `{name}` asks for more permissions than it was granted:\n")
    } else {
        format!("plugin `{name}` asks for these permissions:\n")
    };
    text.push_str(&lines(more, if widening { "+ " } else { "" }));
    if let Some(g) = granted.filter(|_| widening) {
        text.push_str("granted already:\n");
        text.push_str(&lines(g, ""));
    }
    if reads_project {
        text.push_str("it can also read the project's files, files such as `.env` included\n");
    }
    text.push_str(&format!("grant them to `{name}` for this project? [y/N] "));
    let _ = err.write_all(text.as_bytes());
    let _ = err.flush();
    drop(err);
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| CliError::io("cannot read the answer", e))?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "Yes" | "YES"))
}

fn grant(
    c: &mut Client,
    cwd: &str,
    file: Option<&str>,
    name: &str,
    refuse: bool,
) -> Result<PluginGrant, CliError> {
    c.call(
        method::PLUGIN_GRANT,
        json!({"cwd": cwd, "file": file, "name": name, "refuse": refuse, "env": crate::client_env()}),
    )
}

/// `taskrush plugin grant NAME [--yes]`.
pub fn grant_cmd(
    c: &mut Client,
    cwd: &str,
    file: Option<&str>,
    name: &str,
    yes: bool,
) -> Result<i32, CliError> {
    let d: PluginDetails = c.call(
        method::PLUGIN_INFO,
        json!({"cwd": cwd, "file": file, "name": name}),
    )?;
    if d.manifest.is_none() {
        // An invalid manifest: nothing can be granted until it loads.
        let why = d
            .last_error
            .clone()
            .unwrap_or_else(|| "its manifest could not be read".into());
        eprintln!("error: plugin `{name}` cannot be granted: {why}");
        if let Some(path) = &d.path {
            eprintln!("  --> {path}/plugin.toml");
        }
        return Ok(taskrush_protocol::run::EXIT_ERROR);
    }
    let mut out = std::io::stdout().lock();
    let Some(more) = d.pending.clone() else {
        let _ = writeln!(
            out,
            "plugin `{name}` has what it asks for: nothing to grant{}",
            if d.granted.is_some() {
                ""
            } else {
                " (it asks for nothing beyond the safe set)"
            }
        );
        return Ok(0);
    };
    let reads_project = c
        .call::<Vec<PluginPending>>(method::PLUGIN_PENDING, json!({"cwd": cwd, "file": file}))
        .ok()
        .and_then(|l| l.into_iter().find(|p| p.name == name))
        .is_none_or(|p| p.reads_project_root);
    let answer = if yes {
        let _ = write!(out, "granting `{name}`:\n{}", lines(&more, ""));
        true
    } else if on_terminal() {
        ask(name, &more, d.granted.as_ref(), reads_project)?
    } else {
        return Err(CliError::Usage {
            message: format!(
                "plugin `{name}` asks for {}; without a terminal nothing can be asked",
                describe(&more)
            ),
            hint: Some(format!(
                "to grant it, run `taskrush plugin grant {name} --yes`"
            )),
        });
    };
    let g = grant(c, cwd, file, name, !answer)?;
    if answer {
        let _ = writeln!(
            out,
            "granted `{name}` for `{}`; it starts on next use",
            g.project
        );
        Ok(0)
    } else {
        if d.granted.as_ref().is_some_and(|g| !g.is_empty()) {
            let _ = writeln!(
                out,
                "not granted: the new version of `{name}` is not started (a running version keeps serving)"
            );
        } else {
            let _ = writeln!(out, "not granted: `{name}` is not started");
        }
        Ok(1)
    }
}

/// `taskrush plugin revoke NAME`.
pub fn revoke_cmd(
    c: &mut Client,
    cwd: &str,
    file: Option<&str>,
    name: &str,
) -> Result<i32, CliError> {
    let had: bool = c.call(
        method::PLUGIN_REVOKE,
        json!({"cwd": cwd, "file": file, "name": name}),
    )?;
    let d: Option<PluginDetails> = c
        .call(
            method::PLUGIN_INFO,
            json!({"cwd": cwd, "file": file, "name": name}),
        )
        .ok();
    let mut out = std::io::stdout().lock();
    if had {
        let _ = writeln!(
            out,
            "revoked the grant of `{name}` for this project; it is stopped"
        );
    } else {
        let _ = writeln!(out, "plugin `{name}` had no grant stored for this project");
    }
    if d.as_ref().is_some_and(|d| d.granted.is_some()) {
        let _ = writeln!(
            out,
            "note: the user config still grants `{name}` something (see `taskrush plugin info {name}`)"
        );
    }
    Ok(0)
}

/// "environment `X`, network `y`".
pub fn describe(p: &Permissions) -> String {
    let mut out = Vec::new();
    for (kind, items) in p.kinds() {
        for i in items {
            out.push(format!("{kind} `{i}`"));
        }
    }
    out.join(", ")
}
