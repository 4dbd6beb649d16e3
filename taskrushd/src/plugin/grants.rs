//! Grants: what the user consented to give each plugin, and the one
//! function that yields what a plugin gets ([`effective`]): what its
//! manifest declares, ∩ what the user granted, − what the user config
//! denies. Every kind of plugin is started with that set.
//!
//! Grants live in `grants.json` beside the audit trail (the user's state
//! directory; 0600, never through a symlink, replaced atomically), one
//! record per project root and plugin, each with the sha256 of what it
//! grants (and of the `process` commands as resolved on `PATH` when
//! granted); a record whose hash does not match is ignored. The user
//! config (`config::user_config`) can grant too (for CI) and deny.
//!
//! What needs no consent (the fixed safe set): `PATH`, `HOME`, `LANG`,
//! `LC_*`, `TMPDIR`; reading the plugin's own directory, its runtime and
//! the project root; its private data and tmp dirs. A manifest that asks
//! for nothing beyond it needs no grant.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Serialize};
use taskrush_protocol::daemon::{PluginGrant, PluginPending};
use taskrush_protocol::plugin::Permissions;

use super::failure::{Phase, PluginFailure, not_declared};
use super::host::PluginHost;
use super::manifest;
use super::slot::retire;
use crate::config::rush_file::RushFile;
use crate::config::user_config;
use crate::config::whole_file::{self, ReadError};

/// The grants file, once the daemon named it (none in unit tests).
static PATH: OnceLock<PathBuf> = OnceLock::new();
/// Held while the file is read, changed and replaced.
static WRITING: Mutex<()> = Mutex::new(());
/// The most read of the grants file.
const MAX_BYTES: u64 = 4 * 1024 * 1024;

/// Keep the grants in `path`.
pub(crate) fn open(path: &Path) {
    let _ = PATH.set(path.to_owned());
}

/// One grant: plugin `plugin` of project `project` may have `permissions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Record {
    pub(super) project: String,
    pub(super) plugin: String,
    pub(super) permissions: Permissions,
    /// `process` commands resolved on `PATH` when granted.
    #[serde(default)]
    pub(super) resolved: BTreeMap<String, String>,
    pub(super) sha256: String,
    #[serde(default)]
    pub(super) granted_at: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    version: u32,
    #[serde(default)]
    grants: Vec<Record>,
}

/// The hash of what a record grants.
fn hash(
    project: &str,
    plugin: &str,
    permissions: &Permissions,
    resolved: &BTreeMap<String, String>,
) -> String {
    use sha2::Digest as _;
    let text = serde_json::json!([project, plugin, permissions, resolved]).to_string();
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The records of the grants file (none when it does not exist).
fn load(path: &Path) -> Result<Vec<Record>, String> {
    let bytes = match whole_file::read_at_most(path, MAX_BYTES) {
        Ok(b) => b,
        Err(ReadError::NotFound) => return Ok(Vec::new()),
        Err(e) => return Err(format!("the grants file `{}` {}", path.display(), e.what())),
    };
    let file: File = serde_json::from_slice(&bytes)
        .map_err(|e| format!("the grants file `{}` is malformed: {e}", path.display()))?;
    Ok(file
        .grants
        .into_iter()
        .filter(|r| {
            let ok = r.sha256 == hash(&r.project, &r.plugin, &r.permissions, &r.resolved);
            if !ok {
                tracing::warn!(plugin = %r.plugin, project = %r.project, "a grant in `{}` does not match its hash: ignored", path.display());
            }
            ok
        })
        .collect())
}

/// Replace the grants file with `records`: a private temp file beside it
/// (created, never followed), synced, renamed over it.
fn store(path: &Path, records: Vec<Record>) -> Result<(), String> {
    let err = |e: std::io::Error| format!("cannot write the grants file `{}`: {e}", path.display());
    let text = serde_json::to_vec_pretty(&File {
        version: 1,
        grants: records,
    })
    .map_err(|e| format!("cannot encode the grants: {e}"))?;
    whole_file::replace_private(path, &text, true).map_err(err)
}

/// The stored grant of `plugin` of project `root`, if any.
fn stored(root: &Path, plugin: &str) -> Option<Record> {
    let path = PATH.get()?;
    let project = root.display().to_string();
    match load(path) {
        Ok(records) => records
            .into_iter()
            .find(|r| r.project == project && r.plugin == plugin),
        Err(e) => {
            tracing::warn!("{e}: no stored grant is in force");
            None
        }
    }
}

/// Change the stored grant of `plugin` of `root` (`None` removes it);
/// answers the record it replaced.
fn update(root: &Path, plugin: &str, new: Option<Record>) -> Result<Option<Record>, String> {
    let Some(path) = PATH.get() else {
        return Err("this daemon keeps no grants file".into());
    };
    let _writing = WRITING.lock().unwrap_or_else(|p| p.into_inner());
    let project = root.display().to_string();
    let mut records =
        load(path).map_err(|e| format!("{e} (remove it to start afresh: its grants are lost)"))?;
    let old = records
        .iter()
        .position(|r| r.project == project && r.plugin == plugin)
        .map(|i| records.remove(i));
    records.extend(new);
    store(path, records)?;
    Ok(old)
}

/// Environment variables any program needs: given without consent.
fn safe_var(name: &str) -> bool {
    matches!(name, "PATH" | "HOME" | "LANG" | "TMPDIR") || name.starts_with("LC_")
}

/// A `filesystem` entry given without consent: reading the project root
/// (unless the user config says otherwise) or the plugin's own directory.
fn safe_path(entry: &str, reads_project: bool) -> bool {
    let Some(p) = entry.strip_prefix("read:") else {
        return false;
    };
    let p = p.trim_end_matches('/');
    let inside_plugin = (p == "@plugin" || p.starts_with("@plugin/"))
        && !Path::new(p).components().any(|c| c.as_os_str() == "..");
    inside_plugin || (reads_project && (p == "." || p.is_empty()))
}

fn path_of(entry: &str) -> &str {
    entry
        .strip_prefix("read:")
        .or_else(|| entry.strip_prefix("write:"))
        .unwrap_or(entry)
}

/// A `filesystem` entry's path, normalised for comparing: `~/` expanded
/// to `home`, `@plugin/` left as is, relative to `root`, `.` and `..`
/// resolved lexically, then the longest existing ancestor made real.
fn normal_path(entry: &str, root: &Path, home: Option<&Path>) -> PathBuf {
    use std::path::Component;
    let p = path_of(entry);
    let joined = match (p, p.strip_prefix("~/"), home) {
        ("~", _, Some(home)) => home.to_owned(),
        (_, Some(rest), Some(home)) => home.join(rest),
        _ => root.join(p),
    };
    let mut lexical = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                lexical.pop();
            }
            Component::CurDir => {}
            c => lexical.push(c),
        }
    }
    let mut rest = Vec::new();
    let mut at = lexical.as_path();
    loop {
        if let Ok(real) = at.canonicalize() {
            return rest.iter().rev().fold(real, |p, c| p.join(c));
        }
        match (at.parent(), at.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                at = parent;
            }
            _ => return lexical,
        }
    }
}

/// Why the user config's `deny` entry `deny` of `kind` removes `item`, if
/// it does: the same path or one under it; the same host or a subdomain
/// of `*.domain`; the same variable or one of `PREFIX*`; the same
/// command. An item that contains a denied one (a path above it, a
/// `*.domain` over a denied host) is refused too, as it cannot be granted
/// without what is denied (Landlock cannot carve a denied path out of a
/// granted tree; the proxy sees only the granted list).
fn denies(kind: &str, deny: &str, item: &str, root: &Path, home: Option<&Path>) -> Option<String> {
    let within = |host: &str, domain: &str| host == domain || host.ends_with(&format!(".{domain}"));
    let contains = || format!("{item} (contains the denied `{deny}`)");
    match kind {
        "filesystem" => {
            let (d, i) = (normal_path(deny, root, home), normal_path(item, root, home));
            if i.starts_with(&d) {
                Some(item.to_owned())
            } else if d.starts_with(&i) {
                Some(contains())
            } else {
                None
            }
        }
        "network" => {
            let plain = match deny.strip_prefix("*.") {
                Some(domain) => within(item, domain),
                None => item == deny,
            };
            let wider = item
                .strip_prefix("*.")
                .is_some_and(|domain| within(deny.strip_prefix("*.").unwrap_or(deny), domain));
            if plain {
                Some(item.to_owned())
            } else if wider {
                Some(contains())
            } else {
                None
            }
        }
        "environment" => match deny.strip_suffix('*') {
            Some(prefix) => item.starts_with(prefix),
            None => item == deny,
        }
        .then(|| item.to_owned()),
        _ => (item == deny).then(|| item.to_owned()),
    }
}

/// Each kind of `a` filtered by `keep(kind, item)`.
fn filter(a: &Permissions, mut keep: impl FnMut(&str, &str) -> bool) -> Permissions {
    let f = |kind: &str, items: &Vec<String>, keep: &mut dyn FnMut(&str, &str) -> bool| {
        items
            .iter()
            .filter(|i| keep(kind, i))
            .cloned()
            .collect::<Vec<_>>()
    };
    Permissions {
        filesystem: f("filesystem", &a.filesystem, &mut keep),
        network: f("network", &a.network, &mut keep),
        environment: f("environment", &a.environment, &mut keep),
        process: f("process", &a.process, &mut keep),
        plugins: f("plugins", &a.plugins, &mut keep),
    }
}

fn items<'a>(p: &'a Permissions, kind: &str) -> &'a Vec<String> {
    match kind {
        "filesystem" => &p.filesystem,
        "network" => &p.network,
        "environment" => &p.environment,
        "plugins" => &p.plugins,
        _ => &p.process,
    }
}

/// What a plugin gets, and why.
#[derive(Debug, Clone, Default)]
pub(crate) struct Effective {
    /// What a grant may give it: declared − denied.
    pub(crate) requested: Permissions,
    /// What the user granted (stored grant ∪ user config), if anything.
    pub(crate) granted: Option<Permissions>,
    /// What the user config denies of what it declares.
    pub(crate) denied: Permissions,
    /// What it gets: declared ∩ (granted ∪ safe set) − denied.
    pub(crate) effective: Permissions,
    /// What it asks for that is neither granted nor in the safe set: it
    /// is not started while this is `Some`.
    pub(crate) pending: Option<Permissions>,
    /// `process` commands as resolved on `PATH` when granted.
    pub(crate) resolved: BTreeMap<String, String>,
    /// Whether it may read the project root.
    pub(crate) reads_project: bool,
    /// The user config says `enforcement = "required"`.
    pub(crate) enforcement_required: bool,
    /// The user config file.
    pub(crate) config_path: Option<PathBuf>,
}

impl Effective {
    /// The effective set with granted `process` commands as the absolute
    /// paths resolved when they were granted: what the sandbox allows.
    pub(crate) fn for_sandbox(&self) -> Permissions {
        let mut p = self.effective.clone();
        for cmd in &mut p.process {
            if let Some(abs) = self.resolved.get(cmd.as_str()) {
                *cmd = abs.clone();
            }
        }
        p
    }

    /// "`environment` `X`, `network` `y`" of what is pending.
    pub(crate) fn pending_text(&self) -> Option<String> {
        self.pending.as_ref().map(describe)
    }
}

/// "filesystem `.`, environment `TOKEN`".
pub(crate) fn describe(p: &Permissions) -> String {
    let mut out = Vec::new();
    for (kind, items) in p.kinds() {
        for i in items {
            out.push(format!("{kind} `{i}`"));
        }
    }
    out.join(", ")
}

/// What plugin `name` of project `root`, whose manifest declares
/// `declared`, gets: THE function every kind of plugin is started with.
pub(crate) fn effective(root: &Path, name: &str, declared: &Permissions) -> Effective {
    let user = user_config::current();
    let config = &user.config;
    let reads_project = config.plugins_read_project;
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let why = |kind: &str, item: &str| {
        items(&config.deny, kind)
            .iter()
            .find_map(|d| denies(kind, d, item, root, home.as_deref()))
    };
    let mut denied = filter(declared, |kind, item| why(kind, item).is_some());
    for kind in ["filesystem", "network"] {
        let list = match kind {
            "filesystem" => &mut denied.filesystem,
            _ => &mut denied.network,
        };
        for item in list.iter_mut() {
            if let Some(text) = why(kind, item) {
                *item = text;
            }
        }
    }
    let requested = filter(declared, |kind, item| why(kind, item).is_none());
    let record = stored(root, name);
    let from_config = config.granted(root, name, declared);
    let granted = match (&record, from_config) {
        (None, None) => None,
        (r, c) => {
            let mut g = r
                .as_ref()
                .map(|r| r.permissions.clone())
                .unwrap_or_default();
            for (kind, add) in c.unwrap_or_default().kinds() {
                let to = match kind {
                    "filesystem" => &mut g.filesystem,
                    "network" => &mut g.network,
                    "environment" => &mut g.environment,
                    "plugins" => &mut g.plugins,
                    _ => &mut g.process,
                };
                for i in add {
                    if !to.contains(i) {
                        to.push(i.clone());
                    }
                }
            }
            Some(g)
        }
    };
    let safe = |kind: &str, item: &str| match kind {
        "environment" => safe_var(item),
        "filesystem" => safe_path(item, reads_project),
        _ => false,
    };
    let is_granted = |kind: &str, item: &str| {
        granted
            .as_ref()
            .is_some_and(|g| items(g, kind).iter().any(|i| i == item))
    };
    let effective = filter(&requested, |kind, item| {
        safe(kind, item) || is_granted(kind, item)
    });
    let pending = filter(&requested, |kind, item| {
        !safe(kind, item) && !is_granted(kind, item)
    });
    Effective {
        requested,
        granted,
        denied,
        effective,
        pending: (!pending.is_empty()).then_some(pending),
        resolved: record.map(|r| r.resolved).unwrap_or_default(),
        reads_project,
        enforcement_required: config.requires_enforcement(),
        config_path: user_config::path(),
    }
}

/// The message of a plugin not started for want of consent.
pub(crate) fn not_granted(name: &str, more: &str) -> String {
    format!(
        "was not started: it asks for permissions not granted yet ({more}); to grant them, run `taskrush plugin grant {name}`"
    )
}

/// `name` on the `PATH` of `env` (or a path), as a real path.
fn resolve(cmd: &str, env: &BTreeMap<String, String>) -> Option<String> {
    let found = if cmd.contains('/') {
        Some(PathBuf::from(cmd))
    } else {
        env.get("PATH")?
            .split(':')
            .filter(|d| !d.is_empty())
            .map(|d| Path::new(d).join(cmd))
            .find(|p| p.is_file())
    };
    found
        .and_then(|p| p.canonicalize().ok())
        .map(|p| p.display().to_string())
}

fn failure(name: &str, message: String, hint: Option<String>) -> PluginFailure {
    PluginFailure {
        plugin: name.to_owned(),
        phase: Phase::Consent,
        message,
        hint,
        stderr: Vec::new(),
    }
}

impl PluginHost {
    /// The plugins of the project that ask for more than is granted.
    pub(crate) fn pending(&self, config: &RushFile) -> Vec<PluginPending> {
        config
            .plugins
            .iter()
            .filter_map(|spec| {
                let loaded = manifest::locate(spec, &config.root)
                    .and_then(|dir| manifest::load(&dir, Some(&spec.name), spec.version.as_deref()))
                    .ok()?;
                let eff = effective(&config.root, &spec.name, &loaded.manifest.permissions);
                Some(PluginPending {
                    name: spec.name.clone(),
                    required: spec.required,
                    more: eff.pending?,
                    requested: eff.requested,
                    granted: eff.granted,
                    reads_project_root: eff.reads_project,
                })
            })
            .collect()
    }

    /// Grant plugin `name` what it asks for now (or record a refusal);
    /// a running plugin whose update was held back is swapped.
    pub(crate) async fn grant(
        &self,
        config: &RushFile,
        name: &str,
        refuse: bool,
        env: &BTreeMap<String, String>,
    ) -> Result<PluginGrant, PluginFailure> {
        let Some(spec) = config.plugins.iter().find(|p| p.name == name) else {
            return Err(not_declared(config, name));
        };
        let loaded = manifest::locate(spec, &config.root)
            .and_then(|dir| manifest::load(&dir, Some(&spec.name), spec.version.as_deref()))
            .map_err(|e| failure(name, e.message, e.hint))?;
        let eff = effective(&config.root, name, &loaded.manifest.permissions);
        let project = config.root.display().to_string();
        if refuse {
            super::audit::record(
                "grant_refused",
                name,
                &config.root,
                serde_json::json!({"requested": eff.requested, "more": eff.pending}),
            );
            return Ok(PluginGrant {
                name: name.to_owned(),
                project,
                granted: Permissions::default(),
                resolved: BTreeMap::new(),
                sha256: String::new(),
            });
        }
        let permissions = eff.requested.clone();
        let resolved: BTreeMap<String, String> = permissions
            .process
            .iter()
            .filter_map(|c| Some((c.clone(), resolve(c, env)?)))
            .collect();
        let sha256 = hash(&project, name, &permissions, &resolved);
        let record = Record {
            project: project.clone(),
            plugin: name.to_owned(),
            permissions: permissions.clone(),
            resolved: resolved.clone(),
            sha256: sha256.clone(),
            granted_at: taskrush_protocol::audit::now(),
        };
        let old = update(&config.root, name, Some(record))
            .map_err(|m| failure(name, format!("cannot store the grant: {m}"), None))?;
        super::audit::record(
            "grant_given",
            name,
            &config.root,
            serde_json::json!({
                "granted": permissions,
                "resolved": resolved,
                "previous": old.map(|r| r.permissions),
                "sha256": sha256,
            }),
        );
        tracing::info!(target: "plugin", plugin = %name, root = %config.root.display(), "granted: {}", describe(&permissions));
        // An update held back for want of this grant: swap it in now.
        let held = self.existing(&config.root, name).is_some_and(|s| {
            let mut st = s.st();
            if st
                .last_error
                .as_deref()
                .is_some_and(|e| e.starts_with("was not started: it asks for permissions"))
            {
                st.last_error = None;
            }
            st.refused_swap.is_some()
        });
        if held {
            self.reload(config, spec, "its permissions were granted")
                .await;
        }
        Ok(PluginGrant {
            name: name.to_owned(),
            project,
            granted: permissions,
            resolved,
            sha256,
        })
    }

    /// Withdraw plugin `name`'s stored grant; its process is stopped.
    pub(crate) fn revoke(
        self: &Arc<Self>,
        config: &RushFile,
        name: &str,
    ) -> Result<bool, PluginFailure> {
        if !config.plugins.iter().any(|p| p.name == name) {
            return Err(not_declared(config, name));
        }
        let old = update(&config.root, name, None)
            .map_err(|m| failure(name, format!("cannot change the grants: {m}"), None))?;
        // Nothing was revoked without a stored grant: no record.
        if let Some(old) = &old {
            super::audit::record(
                "grant_revoked",
                name,
                &config.root,
                serde_json::json!({"revoked": &old.permissions}),
            );
        }
        if let Some(slot) = self.existing(&config.root, name) {
            let (process, timeout) = {
                let mut st = slot.st();
                st.info = None;
                st.refused_swap = None;
                let timeout = st.spec.as_ref().map(|s| s.timeout);
                (st.process.take(), timeout)
            };
            if let Some(p) = process {
                tracing::info!(target: "plugin", plugin = %name, "its grant was revoked: stopping it");
                retire(p, timeout.unwrap_or(std::time::Duration::from_secs(5)));
            }
        }
        Ok(old.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(fs: &[&str], net: &[&str], env: &[&str], process: &[&str]) -> Permissions {
        let v = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect();
        Permissions {
            filesystem: v(fs),
            network: v(net),
            environment: v(env),
            process: v(process),
            plugins: Vec::new(),
        }
    }

    #[test]
    fn deny_matches_paths_below_subdomains_prefixes_and_names() {
        let denies = |k, d, i| denies(k, d, i, Path::new("/p"), Some(Path::new("/h"))).is_some();
        assert!(denies("filesystem", "~/.ssh", "read:~/.ssh/id_rsa"));
        assert!(denies("filesystem", "read:~/.ssh", "~/.ssh"));
        assert!(!denies("filesystem", "~/.ssh", "~/.sshx"));
        assert!(denies("network", "*.example.com", "api.example.com"));
        assert!(!denies("network", "example.com", "api.example.com"));
        assert!(denies("environment", "AWS_*", "AWS_SECRET"));
        assert!(!denies("environment", "AWS", "AWS_SECRET"));
        assert!(denies("process", "curl", "curl"));
    }

    #[test]
    fn deny_compares_normalised_paths_and_refuses_what_contains_a_denied_item() {
        let why = |k, d, i| denies(k, d, i, Path::new("/p"), Some(Path::new("/h")));
        assert_eq!(
            why("filesystem", "~/.ssh", "read:~/x/../.ssh").as_deref(),
            Some("read:~/x/../.ssh")
        );
        assert!(why("filesystem", "~/.ssh", "read:/h/.ssh/k").is_some());
        assert!(why("filesystem", "~/.ssh", "read:../h/.ssh").is_some());
        let wide = why("filesystem", "~/.ssh", "read:~").expect("refused");
        assert!(wide.contains("contains the denied `~/.ssh`"), "{wide}");
        assert!(why("filesystem", "~/.ssh", "read:~/src").is_none());
        assert!(why("network", "evil.example.com", "*.example.com").is_some());
        assert!(why("network", "*.a.example.com", "*.example.com").is_some());
        assert!(why("network", "evil.example.com", "*.other.com").is_none());
    }

    #[test]
    fn the_safe_set_needs_no_consent() {
        assert!(safe_path("read:.", true));
        assert!(!safe_path("read:.", false));
        assert!(!safe_path(".", true));
        assert!(safe_path("read:@plugin/lib", true));
        assert!(!safe_path("read:@plugin/../../sdk", true));
        assert!(safe_var("LC_ALL") && safe_var("PATH") && !safe_var("TOKEN"));
    }

    #[test]
    fn without_a_grant_only_the_safe_set_is_effective_and_the_rest_is_pending() {
        let declared = p(&["read:.", "out"], &["h"], &["PATH", "TOKEN"], &["git"]);
        let eff = effective(Path::new("/nonexistent-project"), "x", &declared);
        assert_eq!(eff.effective, p(&["read:."], &[], &["PATH"], &[]));
        assert_eq!(eff.pending, Some(p(&["out"], &["h"], &["TOKEN"], &["git"])));
        let nothing = effective(
            Path::new("/nonexistent-project"),
            "x",
            &p(&[], &[], &["HOME"], &[]),
        );
        assert_eq!(nothing.pending, None);
    }

    #[test]
    fn a_stored_grant_survives_the_round_trip_and_a_tampered_one_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grants.json");
        let perms = p(&[], &[], &["TOKEN"], &[]);
        let r = Record {
            project: "/p".into(),
            plugin: "x".into(),
            permissions: perms.clone(),
            resolved: BTreeMap::new(),
            sha256: hash("/p", "x", &perms, &BTreeMap::new()),
            granted_at: String::new(),
        };
        let mut bad = r.clone();
        bad.plugin = "y".into();
        store(&path, vec![r.clone(), bad]).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load(&path).unwrap(), vec![r]);
    }
}
