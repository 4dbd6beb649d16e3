//! `taskrush plugin search | install | remove | publish | list
//! --installed`: the daemon does the work (the CLI links no HTTP or
//! crypto); this renders the answers.

use std::io::Write as _;
use std::path::PathBuf;

use serde_json::json;
use taskrush_protocol::method;
use taskrush_protocol::registry::{Published, Receipt, Removed, SearchHit};

use crate::client::Client;
use crate::error::CliError;

fn absolute(p: &std::path::Path) -> Result<String, CliError> {
    std::path::absolute(p)
        .map(|p| p.display().to_string())
        .map_err(|e| CliError::io(&format!("cannot resolve `{}`", p.display()), e))
}

fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

pub fn search(c: &mut Client, text: &str, json: bool) -> Result<i32, CliError> {
    let hits: Vec<SearchHit> = c.call(method::PLUGIN_SEARCH, json!({"text": text}))?;
    if json {
        print_json(&hits);
        return Ok(0);
    }
    let mut out = std::io::stdout().lock();
    if hits.is_empty() {
        let _ = writeln!(out, "no plugin matches `{text}`");
        return Ok(1);
    }
    for h in &hits {
        let _ = writeln!(
            out,
            "{}/{} {}  {}",
            h.registry, h.name, h.version, h.description
        );
    }
    Ok(0)
}

/// What a permission list shows: `kind: a, b` per non-empty kind.
fn permissions_lines(r: &Receipt) -> Vec<String> {
    let p = &r.permissions;
    [
        ("filesystem", &p.filesystem),
        ("network", &p.network),
        ("environment", &p.environment),
        ("process", &p.process),
    ]
    .iter()
    .filter(|(_, v)| !v.is_empty())
    .map(|(k, v)| format!("  {k}: {}", v.join(", ")))
    .collect()
}

pub fn install(
    c: &mut Client,
    spec: &str,
    allow_unsigned: bool,
    (cwd, file): (&str, Option<&str>),
    json: bool,
) -> Result<i32, CliError> {
    let local = spec.starts_with("./")
        || spec.starts_with("../")
        || spec.starts_with('/')
        || spec == "."
        || std::path::Path::new(spec).exists();
    let spec = if local {
        absolute(std::path::Path::new(spec))?
    } else {
        spec.to_owned()
    };
    let (bar, progress_id) = crate::progress::start();
    let r: Result<Receipt, _> = c.call(
        method::PLUGIN_INSTALL,
        json!({"spec": spec, "allow_unsigned": allow_unsigned, "cwd": cwd, "file": file, "progress_id": progress_id}),
    );
    if let Some(b) = bar {
        b.finish();
    }
    let r = r?;
    if json {
        print_json(&r);
        return Ok(0);
    }
    let mut out = std::io::stdout().lock();
    let signer = match &r.signer {
        Some(k) => format!("signed by {k}"),
        None => "UNSIGNED".into(),
    };
    let _ = writeln!(
        out,
        "installed {} {} from {} ({signer}) into {}",
        r.name, r.version, r.registry, r.dir
    );
    let perms = permissions_lines(&r);
    if perms.is_empty() {
        let _ = writeln!(out, "it declares no permissions");
    } else {
        let _ = writeln!(out, "it declares these permissions:");
        for l in perms {
            let _ = writeln!(out, "{l}");
        }
        let _ = writeln!(
            out,
            "a project that uses it asks you to grant them (`taskrush plugin grant {}`)",
            r.name
        );
    }
    Ok(0)
}

pub fn installed(c: &mut Client, json: bool) -> Result<i32, CliError> {
    let list: Vec<Receipt> = c.call(method::PLUGIN_INSTALLED, json!({}))?;
    if json {
        print_json(&list);
        return Ok(0);
    }
    let mut out = std::io::stdout().lock();
    if list.is_empty() {
        let _ = writeln!(
            out,
            "no plugins installed (hint: `taskrush plugin search TEXT`, `taskrush plugin install NAME`)"
        );
        return Ok(0);
    }
    let kind = |r: &Receipt| {
        serde_json::to_value(r.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    let rows: Vec<[String; 5]> = list
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                r.version.clone(),
                r.registry.clone(),
                kind(r),
                r.signer.clone().unwrap_or_else(|| "unsigned".into()),
            ]
        })
        .collect();
    let head = ["NAME", "VERSION", "REGISTRY", "KIND", "SIGNER"];
    let mut width = head.map(str::len);
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    for r in std::iter::once(head.map(str::to_owned)).chain(rows) {
        let line: Vec<String> = r
            .iter()
            .zip(width)
            .map(|(c, w)| format!("{c:w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    Ok(0)
}

pub fn remove(c: &mut Client, spec: &str) -> Result<i32, CliError> {
    let (name, version) = match spec.split_once('@') {
        Some((n, v)) => (n, Some(v)),
        None => (spec, None),
    };
    let r: Removed = c.call(
        method::PLUGIN_REMOVE,
        json!({"name": name, "version": version}),
    )?;
    println!("removed {} {}", r.name, r.versions.join(", "));
    Ok(0)
}

pub struct PublishArgs {
    pub path: PathBuf,
    pub registry: PathBuf,
    pub key: PathBuf,
    pub platform: Option<String>,
    pub expires_days: u64,
    pub revoke: Vec<String>,
}

pub fn publish(c: &mut Client, a: PublishArgs) -> Result<i32, CliError> {
    let p: Published = c.call(
        method::PLUGIN_PUBLISH,
        json!({
            "path": absolute(&a.path)?,
            "registry": absolute(&a.registry)?,
            "key": absolute(&a.key)?,
            "platform": a.platform,
            "expires_days": a.expires_days,
            "revoke": a.revoke,
        }),
    )?;
    for art in &p.artifacts {
        println!(
            "published {} {} ({}) signed by {}: {} ({} bytes, sha256 {})",
            p.name, p.version, art.platform, p.signer, art.url, art.size, art.sha256
        );
    }
    Ok(0)
}
