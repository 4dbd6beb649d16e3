//! `taskrush plugin audit [NAME] [--since DURATION] [--json]`.
//!
//! The CLI reads the audit trail itself, from the file the daemon writes
//! (`DaemonPaths::audit` and its rotated copies): the trail is for review
//! after the fact, so it must be readable when no daemon runs (after a
//! crash, on a machine where the daemon was stopped), and reading it
//! needs no daemon work and no new protocol method. The file is the
//! user's own (0600); it is opened without following a symlink.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;
use taskrush_protocol::audit;
use taskrush_protocol::paths::DaemonPaths;

use crate::error::CliError;

pub fn audit(name: Option<&str>, since: Option<&str>, json: bool) -> Result<i32, CliError> {
    let cutoff = since
        .map(audit::since)
        .transpose()
        .map_err(|message| CliError::Usage {
            message,
            hint: None,
        })?;
    let path = DaemonPaths::from_env().audit;
    let mut records = Vec::new();
    // Oldest first: `.2`, `.1`, then the current file.
    let mut files: Vec<PathBuf> = (1..=audit::KEPT)
        .rev()
        .map(|n| {
            let mut p = path.clone().into_os_string();
            p.push(format!(".{n}"));
            PathBuf::from(p)
        })
        .collect();
    files.push(path.clone());
    for f in &files {
        read(f, &mut records)?;
    }
    let records: Vec<(String, Value)> = records
        .into_iter()
        .filter(|(_, r)| name.is_none_or(|n| r["plugin"].as_str() == Some(n)))
        .filter(|(_, r)| {
            cutoff
                .as_deref()
                .is_none_or(|c| r["time"].as_str().is_some_and(|t| t >= c))
        })
        .collect();
    let out = std::io::stdout();
    let mut out = out.lock();
    if json {
        for (line, _) in &records {
            let _ = writeln!(out, "{line}");
        }
        return Ok(0);
    }
    if records.is_empty() {
        let _ = writeln!(out, "no audit records in `{}`", path.display());
        return Ok(0);
    }
    let rows: Vec<[String; 5]> = records.iter().map(|(_, r)| row(r)).collect();
    crate::render::table(
        &mut out,
        ["TIME", "PLUGIN", "KIND", "PROJECT", "DETAIL"],
        &rows,
    );
    Ok(0)
}

/// The records of one file, each with its line; a missing file has none,
/// a line that is not a JSON object (one being written) is skipped.
fn read(path: &Path, into: &mut Vec<(String, Value)>) -> Result<(), CliError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(CliError::io(
                &format!("cannot read the audit trail `{}`", path.display()),
                e,
            ));
        }
    };
    for line in std::io::BufReader::new(file).lines() {
        let Ok(line) = line else { break };
        if let Ok(v @ Value::Object(_)) = serde_json::from_str::<Value>(&line) {
            into.push((line, v));
        }
    }
    Ok(())
}

fn row(r: &Value) -> [String; 5] {
    let s = |k: &str| r[k].as_str().unwrap_or("-").to_owned();
    let n = |k: &str| match &r[k] {
        Value::Null => "-".to_owned(),
        v => v.to_string(),
    };
    let time = s("time").replace('T', " ");
    let time = time.split('.').next().unwrap_or_default().to_owned();
    let detail = match r["kind"].as_str().unwrap_or_default() {
        "spawned" => format!(
            "pid {}, `{}`, sha256 {}",
            n("pid"),
            r["entry_point"]
                .as_array()
                .map(|a| a
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" "))
                .unwrap_or_default(),
            r["entry_sha256"]
                .as_str()
                .map(|h| &h[..h.len().min(12)])
                .unwrap_or("-")
        ),
        "exited" => {
            let how = match (&r["status"], &r["signal"]) {
                (Value::Number(c), _) => format!("exit code {c}"),
                (_, Value::Number(sig)) => format!("killed by signal {sig}"),
                _ => "ended".to_owned(),
            };
            let mut d = format!("pid {}, {how}", n("pid"));
            if let Some(ms) = r["cpu_ms"].as_u64() {
                d.push_str(&format!(", cpu {ms} ms"));
            }
            if let Some(kib) = r["peak_rss_kib"].as_u64() {
                d.push_str(&format!(", peak rss {kib} KiB"));
            }
            d
        }
        "veto" | "required_failed" => format!("task `{}`: {}", s("task"), s("message")),
        // The proxy refused a host; a host call was refused (a call cycle
        // named by its chain); a process the host serves no host calls to
        // sent it a request.
        "denied" if r.get("host").is_some() => {
            format!("network `{}:{}`: {}", s("host"), n("port"), s("why"))
        }
        "denied" if r["why"] == "cycle" => format!(
            "`{}` of `{}`: call cycle {}",
            s("call"),
            s("item"),
            chain(&r["chain"])
        ),
        "denied" if r.get("call").is_some() => format!(
            "`{}`: no `{}` grant for `{}`",
            s("call"),
            s("permission"),
            s("item")
        ),
        "denied" => format!("request `{}`: {}", s("method"), s("why")),
        "command" => {
            let args: Vec<&str> = r["args"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            format!("`{}` {}", s("command"), args.join(" "))
                .trim_end()
                .to_owned()
        }
        "call_command" => format!(
            "called `{}` of `{}` ({})",
            s("command"),
            s("callee"),
            chain(&r["chain"])
        ),
        "dropped" => format!("{} records dropped (the writer fell behind)", n("count")),
        "grant_given" => format!("granted {}", perms(&r["granted"])),
        "grant_revoked" => format!("revoked {}", perms(&r["revoked"])),
        "grant_refused" => format!("refused {}", perms(&r["more"])),
        _ => String::new(),
    };
    [time, s("plugin"), s("kind"), s("root"), detail]
}

/// "a → b → a" of a call chain.
fn chain(v: &Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" → ")
        })
        .unwrap_or_default()
}

/// "environment `X`, network `y`" of a permissions object, or `-`.
fn perms(v: &Value) -> String {
    let mut out = Vec::new();
    for kind in ["filesystem", "network", "environment", "process", "plugins"] {
        for item in v[kind].as_array().into_iter().flatten() {
            if let Some(i) = item.as_str() {
                out.push(format!("{kind} `{i}`"));
            }
        }
    }
    if out.is_empty() {
        "-".into()
    } else {
        out.join(", ")
    }
}
