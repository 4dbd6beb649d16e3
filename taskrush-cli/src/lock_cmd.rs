//! `taskrush plugin install --from-rush`, `plugin update [NAME]` and
//! `plugin lock --check`: the project's lock file `.rush.lock` (the daemon
//! resolves, installs and writes it; `registry/lock.rs`).

use std::io::Write;

use serde_json::json;
use taskrush_protocol::lockfile::{LockCheck, LockReport};
use taskrush_protocol::method;

use crate::client::Client;
use crate::error::CliError;

/// `plugin install --from-rush [--locked]`.
pub fn install_from_rush(
    c: &mut Client,
    cwd: &str,
    file: Option<&str>,
    locked: bool,
    json: bool,
) -> Result<i32, CliError> {
    let (bar, progress_id) = crate::progress::start();
    let r: Result<LockReport, _> = c.call(
        method::PLUGIN_SYNC,
        json!({"cwd": cwd, "file": file, "locked": locked, "progress_id": progress_id}),
    );
    if let Some(b) = bar {
        b.finish();
    }
    let r = r?;
    print_report(&r, json);
    Ok(0)
}

/// `plugin update [NAME] [--locked]`.
pub fn update(
    c: &mut Client,
    cwd: &str,
    file: Option<&str>,
    name: Option<&str>,
    locked: bool,
    json: bool,
) -> Result<i32, CliError> {
    let (bar, progress_id) = crate::progress::start();
    let r: Result<LockReport, _> = c.call(
        method::PLUGIN_UPDATE,
        json!({"cwd": cwd, "file": file, "name": name, "locked": locked, "progress_id": progress_id}),
    );
    if let Some(b) = bar {
        b.finish();
    }
    let r = r?;
    print_report(&r, json);
    Ok(0)
}

/// `plugin lock --check`: exit 1 with what is stale.
pub fn check(c: &mut Client, cwd: &str, file: Option<&str>, json: bool) -> Result<i32, CliError> {
    let r: LockCheck = c.call(method::PLUGIN_LOCK_CHECK, json!({"cwd": cwd, "file": file}))?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if json {
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&r).unwrap_or_default()
        );
    } else if r.stale.is_empty() {
        let _ = writeln!(out, "`{}` is up to date", r.lock);
    } else {
        drop(out);
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "error: `{}` is stale:", r.lock);
        for s in &r.stale {
            let _ = writeln!(err, "  {s}");
        }
        let _ = writeln!(
            err,
            "hint: run `taskrush plugin update` (or `taskrush plugin install --from-rush`) and commit `.rush.lock`"
        );
    }
    Ok(if r.stale.is_empty() { 0 } else { 1 })
}

fn print_report(r: &LockReport, json: bool) {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if json {
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(r).unwrap_or_default()
        );
        return;
    }
    for ch in &r.changes {
        let what = match &ch.from {
            Some(from) if from == &ch.to => format!("{} (unchanged)", ch.to),
            Some(from) => format!("{from} -> {}", ch.to),
            None => format!("{} (new in the lock)", ch.to),
        };
        let done = if ch.installed { ", installed" } else { "" };
        let _ = writeln!(out, "{}: {what}{done}", ch.name);
        if !ch.permissions_added.is_empty() {
            let _ = writeln!(
                out,
                "  asks for more permissions: {}; they need your consent at its next start (hint: `taskrush plugin grant {}`)",
                crate::consent::describe(&ch.permissions_added),
                ch.name
            );
        }
        if !ch.permissions_removed.is_empty() {
            let _ = writeln!(
                out,
                "  no longer asks for: {}",
                crate::consent::describe(&ch.permissions_removed)
            );
        }
    }
    let _ = writeln!(
        out,
        "{} `{}`",
        if r.written { "wrote" } else { "unchanged:" },
        r.lock
    );
}
