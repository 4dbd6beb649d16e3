//! Plugin registries: search, install, remove and publish (issue 15).
//!
//! A registry is static files (`protocol/src/registry.rs`), fetched from
//! `http(s)://` or `file://` (the CLI links no HTTP). Nothing is trusted
//! before it is verified: the snapshot's minisign signature against the
//! keys pinned in the user config (`[[registries]]`), its expiry and
//! revoked keys; each index file and `search.jsonl` against the
//! snapshot's sha256; each artifact against its line's sha256, and its
//! publisher signature, whose trusted comment must name this plugin,
//! version, platform, sha256 and tree hash. Archives are unpacked
//! ([`unpack`]) into a staging directory beside the target, checked
//! against the tree hash, made read-only and renamed into
//! `…/taskrush/plugins/NAME/VERSION/` with a `receipt.json`.
//!
//! Every function here blocks (file and network I/O): the API runs them
//! on blocking threads.

pub(crate) mod lock;
pub(crate) mod sign;
pub(crate) mod unpack;
pub(crate) mod verify;

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use taskrush_protocol::plugin::{PLUGIN_PROTOCOL_VERSION, PluginManifest, PluginType};
use taskrush_protocol::registry::{
    ANY_PLATFORM, Artifact, FORMAT, IndexLine, Published, Receipt, Removed, SEARCH, SNAPSHOT,
    SearchEntry, SearchHit, Snapshot, index_path, trusted_comment, valid_name,
};

use crate::config::user_config::RegistryEntry;
use crate::plugin::audit;

/// The most bytes fetched for a snapshot, index file or search list.
const MAX_META_BYTES: u64 = 64 * 1024 * 1024;
/// The most bytes of one artifact.
const MAX_ARTIFACT_BYTES: u64 = 512 * 1024 * 1024;
/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(120);

/// This machine's platform, as artifacts name it: `linux-x86_64`.
pub(crate) fn platform() -> String {
    format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH)
}

/// Where installed plugins live: `$XDG_DATA_HOME/taskrush/plugins`.
pub(crate) fn plugins_dir() -> Result<PathBuf, String> {
    dirs::data_dir()
        .map(|d| d.join("taskrush").join("plugins"))
        .ok_or_else(|| "no data directory: set `HOME` or `XDG_DATA_HOME`".to_owned())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Where download progress goes: `plugin_download` events on the event
/// bus, tagged with the request's `progress_id`. The default reports
/// nothing.
#[derive(Clone, Default)]
pub(crate) struct Progress {
    pub(crate) events: Option<crate::event_bus::Events>,
    pub(crate) id: Option<String>,
}

/// The least time between two `plugin_download` events of one download.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

impl Progress {
    fn report(&self, line: &IndexLine, registry: &str, done: u64, total: u64) {
        if let Some(events) = self.events.as_ref().filter(|e| e.has_subscribers()) {
            events.send(taskrush_protocol::events::DaemonEvent::PluginDownload {
                progress_id: self.id.clone(),
                plugin: line.name.clone(),
                version: line.vers.clone(),
                registry: registry.to_owned(),
                done,
                total,
            });
        }
    }
}

/// Read `url` (`file://`, `http://`, `https://`), at most `max` bytes.
pub(crate) fn fetch(url: &str, max: u64) -> Result<Vec<u8>, String> {
    fetch_with(url, max, &mut |_| {})
}

/// Read all of `r` (at most `max` bytes) in chunks, telling `on` the bytes
/// read so far after each.
fn read_counted(
    r: &mut dyn std::io::Read,
    url: &str,
    max: u64,
    on: &mut dyn FnMut(u64),
) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("cannot read `{url}`: {e}")),
        };
        out.extend_from_slice(&buf[..n]);
        if out.len() as u64 > max {
            return Err(format!("`{url}` is larger than {max} bytes"));
        }
        on(out.len() as u64);
    }
    Ok(out)
}

/// [`fetch`], telling `on` the bytes read so far as they arrive.
fn fetch_with(url: &str, max: u64, on: &mut dyn FnMut(u64)) -> Result<Vec<u8>, String> {
    if let Some(path) = url.strip_prefix("file://") {
        let mut f = std::fs::File::open(path).map_err(|e| format!("cannot read `{url}`: {e}"))?;
        return read_counted(&mut f, url, max, on);
    }
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!(
            "`{url}`: a registry URL starts with `https://`, `http://` or `file://`"
        ));
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(FETCH_TIMEOUT))
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent
        .get(url)
        .call()
        .map_err(|e| format!("cannot reach `{url}`: {e}"))?;
    let status = resp.status().as_u16();
    if status != 200 {
        return Err(format!("`{url}` answered HTTP {status}"));
    }
    read_counted(&mut resp.body_mut().as_reader().take(max + 1), url, max, on)
}

/// A registry whose snapshot is verified.
struct Opened<'a> {
    entry: &'a RegistryEntry,
    snapshot: Snapshot,
}

impl<'a> Opened<'a> {
    fn open(entry: &'a RegistryEntry) -> Result<Opened<'a>, String> {
        let name = &entry.name;
        let url = join(&entry.url, SNAPSHOT);
        let bytes = fetch(&url, MAX_META_BYTES)
            .map_err(|e| format!("registry `{name}` is unreachable: {e}"))?;
        let sig = fetch(&format!("{url}.minisig"), 64 * 1024)
            .map_err(|e| format!("registry `{name}` has no snapshot signature: {e}"))?;
        let sig = String::from_utf8_lossy(&sig);
        let refused = |why: String| format!("registry `{name}`: the snapshot is refused: {why}");
        sign::verify(&bytes, &sig, &entry.keys, &[], None).map_err(refused)?;
        let snapshot: Snapshot =
            serde_json::from_slice(&bytes).map_err(|e| refused(format!("invalid JSON: {e}")))?;
        // The snapshot's own revocations apply to its own signature too.
        let signer = sign::signature_key_id(&sig).map_err(refused)?;
        if snapshot.revoked.iter().any(|r| sign::same_id(r, &signer)) {
            return Err(refused(format!("its key `{signer}` is revoked")));
        }
        if snapshot.format != FORMAT {
            return Err(refused(format!(
                "format {} is not {FORMAT}",
                snapshot.format
            )));
        }
        if snapshot.expires <= now() {
            return Err(refused(format!(
                "it expired at {} (hint: the registry's publisher must re-publish it)",
                taskrush_protocol::audit::rfc3339(snapshot.expires as i64, 0)
            )));
        }
        Ok(Opened { entry, snapshot })
    }

    /// A file the snapshot lists, checked against its hash; `None` when it
    /// is not listed.
    fn listed(&self, rel: &str) -> Result<Option<Vec<u8>>, String> {
        let Some(want) = self.snapshot.files.get(rel) else {
            return Ok(None);
        };
        let url = join(&self.entry.url, rel);
        let bytes = fetch(&url, MAX_META_BYTES)?;
        let got = unpack::sha256(&bytes);
        if &got != want {
            return Err(format!(
                "registry `{}`: `{rel}` does not match the signed snapshot (sha256 {got}, expected {want}): refused",
                self.entry.name
            ));
        }
        Ok(Some(bytes))
    }

    fn search_entries(&self) -> Result<Vec<SearchEntry>, String> {
        let Some(bytes) = self.listed(SEARCH)? else {
            return Ok(Vec::new());
        };
        Ok(String::from_utf8_lossy(&bytes)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }

    fn lines(&self, name: &str) -> Result<Option<Vec<IndexLine>>, String> {
        let Some(bytes) = self.listed(&index_path(name))? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&bytes);
        let mut out = Vec::new();
        for (i, l) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let line: IndexLine = serde_json::from_str(l).map_err(|e| {
                format!(
                    "registry `{}`: `{}` line {}: {e}",
                    self.entry.name,
                    index_path(name),
                    i + 1
                )
            })?;
            if line.name == name {
                out.push(line);
            }
        }
        Ok(Some(out))
    }
}

fn join(base: &str, rel: &str) -> String {
    if rel.contains("://") {
        return rel.to_owned();
    }
    format!("{}/{}", base.trim_end_matches('/'), rel)
}

fn registries() -> Vec<RegistryEntry> {
    crate::config::user_config::current().config.registries
}

fn no_registries() -> String {
    "no plugin registries are configured (hint: add a `[[registries]]` entry with `name`, `url` and `keys` to the user config, see docs/plugins.md \"Registries\")".into()
}

/// `plugin search TEXT`: plugins whose name or description contains
/// `text` (case-insensitive), from every registry.
pub(crate) fn search(text: &str) -> Result<Vec<SearchHit>, String> {
    let regs = registries();
    if regs.is_empty() {
        return Err(no_registries());
    }
    let needle = text.to_lowercase();
    let mut hits = Vec::new();
    for r in &regs {
        let opened = Opened::open(r)?;
        for e in opened.search_entries()? {
            if e.name.to_lowercase().contains(&needle)
                || e.description.to_lowercase().contains(&needle)
            {
                hits.push(SearchHit {
                    registry: r.name.clone(),
                    name: e.name,
                    version: e.version,
                    description: e.description,
                });
            }
        }
    }
    Ok(hits)
}

/// What `plugin install` was given.
enum Spec {
    Local(PathBuf),
    Remote {
        registry: Option<String>,
        name: String,
        req: semver::VersionReq,
        req_text: String,
    },
}

fn parse_spec(spec: &str) -> Result<Spec, String> {
    if spec.starts_with('/') {
        return Ok(Spec::Local(PathBuf::from(spec)));
    }
    let (target, req_text) = match spec.split_once('@') {
        Some((t, r)) => (t, r.trim().to_owned()),
        None => (spec, "*".to_owned()),
    };
    let (registry, name) = match target.split_once('/') {
        Some((r, n)) => (Some(r.to_owned()), n.to_owned()),
        None => (None, target.to_owned()),
    };
    if !valid_name(&name) {
        return Err(format!(
            "`{name}` is not a plugin name (hint: letters, digits, `-` and `_`; a local path starts with `./` or `/`)"
        ));
    }
    let req = semver::VersionReq::parse(&req_text).map_err(|e| {
        format!("`{req_text}` is not a version requirement: {e} (hint: `^1.0`, `~1.2`, `>=1, <3`)")
    })?;
    Ok(Spec::Remote {
        registry,
        name,
        req,
        req_text,
    })
}

/// `plugin install SPEC`: `NAME[@REQ]`, `REGISTRY/NAME[@REQ]`, or an
/// absolute path (a directory, `.tar.gz`, `.wasm` or `.so`). A registry
/// install run in `project` is also written to its `.rush.lock` when its
/// `.rush` asks for that plugin ([`lock::record`]).
pub(crate) fn install(
    spec: &str,
    allow_unsigned: bool,
    project: Option<&crate::config::rush_file::RushFile>,
    progress: &Progress,
) -> Result<Receipt, String> {
    match parse_spec(spec)? {
        Spec::Local(path) => install_local(&path, allow_unsigned),
        Spec::Remote {
            registry,
            name,
            req,
            req_text,
        } => install_remote(
            registry.as_deref(),
            &name,
            &req,
            &req_text,
            project,
            progress,
        ),
    }
}

fn install_remote(
    registry: Option<&str>,
    name: &str,
    req: &semver::VersionReq,
    req_text: &str,
    project: Option<&crate::config::rush_file::RushFile>,
    progress: &Progress,
) -> Result<Receipt, String> {
    let regs = registries();
    if regs.is_empty() {
        return Err(no_registries());
    }
    let chosen: Vec<&RegistryEntry> = match registry {
        Some(r) => {
            let e = regs.iter().find(|e| e.name == r).ok_or_else(|| {
                let names: Vec<_> = regs.iter().map(|e| format!("`{}`", e.name)).collect();
                format!(
                    "no registry `{r}` in the user config (hint: configured: {})",
                    names.join(", ")
                )
            })?;
            vec![e]
        }
        None => regs.iter().collect(),
    };
    let mut known = Vec::new();
    for entry in chosen.iter().copied() {
        let opened = Opened::open(entry)?;
        let Some(lines) = opened.lines(name)? else {
            known.extend(
                opened
                    .search_entries()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|e| e.name),
            );
            continue;
        };
        let line = select(name, &lines, req, req_text, &entry.name)?;
        let receipt = install_line(&opened, line, progress)?;
        if let Some(rush) = project {
            lock::record(rush, &opened, line).map_err(|e| {
                format!(
                    "`{name}` {} is installed, but the lock was not written: {e}",
                    line.vers
                )
            })?;
        }
        return Ok(receipt);
    }
    let mut msg = format!(
        "plugin `{name}` not found in {}",
        chosen
            .iter()
            .map(|e| format!("registry `{}`", e.name))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let best = known
        .iter()
        .map(|k| (strsim::jaro_winkler(k, name), k))
        .filter(|(s, _)| *s > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    if let Some((_, k)) = best {
        msg.push_str(&format!(" (hint: did you mean `{k}`?)"));
    }
    Err(msg)
}

/// The newest version matching `req`, not yanked, that speaks our
/// protocol.
fn select<'l>(
    name: &str,
    lines: &'l [IndexLine],
    req: &semver::VersionReq,
    req_text: &str,
    registry: &str,
) -> Result<&'l IndexLine, String> {
    let mut matching: Vec<(semver::Version, &IndexLine)> = lines
        .iter()
        .filter_map(|l| Some((semver::Version::parse(&l.vers).ok()?, l)))
        .filter(|(v, _)| req.matches(v))
        .collect();
    matching.sort_by(|a, b| b.0.cmp(&a.0));
    if matching.is_empty() {
        let mut all: Vec<&str> = lines.iter().map(|l| l.vers.as_str()).collect();
        all.sort();
        return Err(format!(
            "no version of `{name}` in registry `{registry}` matches `{req_text}` (hint: published: {})",
            all.join(", ")
        ));
    }
    let usable: Vec<_> = matching.iter().filter(|(_, l)| !l.yanked).collect();
    let Some((_, line)) = usable.first() else {
        return Err(format!(
            "every version of `{name}` matching `{req_text}` is yanked ({}): refused",
            matching
                .iter()
                .map(|(v, _)| v.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    if !line.protocols.is_empty() && !line.protocols.contains(&PLUGIN_PROTOCOL_VERSION) {
        return Err(format!(
            "`{name}` {} speaks plugin protocol {:?}, this TaskRush speaks {PLUGIN_PROTOCOL_VERSION}",
            line.vers, line.protocols
        ));
    }
    Ok(line)
}

fn install_line(
    opened: &Opened<'_>,
    line: &IndexLine,
    progress: &Progress,
) -> Result<Receipt, String> {
    let here = platform();
    let artifact = line
        .artifacts
        .iter()
        .find(|a| a.platform == here)
        .or_else(|| line.artifacts.iter().find(|a| a.platform == ANY_PLATFORM))
        .ok_or_else(|| {
            format!(
                "`{}` {} has no artifact for this platform `{here}` (published for: {})",
                line.name,
                line.vers,
                line.artifacts
                    .iter()
                    .map(|a| format!("`{}`", a.platform))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
    let url = join(&opened.entry.url, &artifact.url);
    let max = artifact.size.min(MAX_ARTIFACT_BYTES);
    let registry = &opened.entry.name;
    let mut last: Option<std::time::Instant> = None;
    let bytes = fetch_with(&url, max, &mut |done| {
        if last.is_none_or(|t| t.elapsed() >= PROGRESS_EVERY) {
            last = Some(std::time::Instant::now());
            progress.report(line, registry, done, artifact.size);
        }
    })?;
    // The last one: `done == total` when the size is the index line's.
    progress.report(line, registry, bytes.len() as u64, artifact.size);
    let what = format!("`{}` {} ({})", line.name, line.vers, artifact.platform);
    let got = unpack::sha256(&bytes);
    if got != artifact.sha256 {
        return Err(format!(
            "{what}: the artifact's sha256 is {got}, the signed index says {}: refused",
            artifact.sha256
        ));
    }
    let expected = trusted_comment(
        &line.name,
        &line.vers,
        &artifact.platform,
        &artifact.sha256,
        &artifact.tree,
    );
    let signer = sign::verify(
        &bytes,
        &artifact.signature,
        &opened.entry.keys,
        &opened.snapshot.revoked,
        Some(&expected),
    )
    .map_err(|e| format!("{what}: {e}: refused"))?;
    if !sign::same_id(&signer, &line.signer) {
        return Err(format!(
            "{what}: signed by `{signer}`, the index names `{}`: refused",
            line.signer
        ));
    }
    let single = single_file_name(&artifact.url);
    place(Placing {
        name: &line.name,
        version: &line.vers,
        registry: &opened.entry.name,
        kind: line.kind,
        platform: &artifact.platform,
        bytes: &bytes,
        single,
        tree: Some(&artifact.tree),
        signer: Some(signer),
        signature: Some(artifact.signature.clone()),
    })
}

/// The file name of a plain `.wasm` / `.so` artifact.
fn single_file_name(url: &str) -> Option<String> {
    let base = url.rsplit('/').next().unwrap_or(url);
    (base.ends_with(".wasm") || base.ends_with(".so")).then(|| base.to_owned())
}

struct Placing<'a> {
    name: &'a str,
    version: &'a str,
    registry: &'a str,
    kind: PluginType,
    platform: &'a str,
    bytes: &'a [u8],
    /// A plain `.wasm`/`.so`: installed under this name.
    single: Option<String>,
    /// The tree hash the signature covers, checked after unpacking.
    tree: Option<&'a str>,
    signer: Option<String>,
    signature: Option<String>,
}

/// Removes a staging directory unless disarmed.
struct Staging(Option<PathBuf>);

impl Drop for Staging {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            unpack::remove_tree(&p);
        }
    }
}

fn staging_dir(root: &Path) -> Result<Staging, String> {
    std::fs::create_dir_all(root)
        .map_err(|e| format!("cannot create `{}`: {e}", root.display()))?;
    for i in 0..100u32 {
        let p = root.join(format!(".staging-{}-{}-{i}", std::process::id(), now()));
        match std::fs::create_dir(&p) {
            Ok(()) => return Ok(Staging(Some(p))),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("cannot create `{}`: {e}", p.display())),
        }
    }
    Err(format!(
        "cannot create a staging directory in `{}`",
        root.display()
    ))
}

/// Unpack, check, write the receipt and move into place.
fn place(p: Placing<'_>) -> Result<Receipt, String> {
    if !valid_name(p.name) || semver::Version::parse(p.version).is_err() {
        return Err(format!(
            "`{}` {} is not a valid plugin name and version",
            p.name, p.version
        ));
    }
    let root = plugins_dir()?;
    let staging = staging_dir(&root)?;
    let stage = staging.0.clone().unwrap_or_default();
    match &p.single {
        Some(file) => std::fs::write(stage.join(file), p.bytes)
            .map_err(|e| format!("cannot write `{}`: {e}", stage.display()))?,
        None => unpack::unpack_tar_gz(p.bytes, &stage, unpack::Limits::default())
            .map_err(|e| format!("`{}` {}: {e}: refused", p.name, p.version))?,
    }
    let tree = unpack::tree_hash(&stage)?;
    if let Some(want) = p.tree
        && want != tree
    {
        return Err(format!(
            "`{}` {}: the unpacked tree hashes to {tree}, the signature says {want}: refused",
            p.name, p.version
        ));
    }
    let mut permissions = Default::default();
    let manifest_path = stage.join("plugin.toml");
    if manifest_path.is_file() {
        let text = std::fs::read_to_string(&manifest_path)
            .map_err(|e| format!("cannot read `plugin.toml`: {e}"))?;
        let m: PluginManifest = toml::from_str(&text).map_err(|e| {
            format!(
                "`{}` {}: invalid `plugin.toml`: {}",
                p.name,
                p.version,
                e.message()
            )
        })?;
        if m.name != p.name || m.version != p.version {
            return Err(format!(
                "`{}` {}: its `plugin.toml` says `{}` {}: refused",
                p.name, p.version, m.name, m.version
            ));
        }
        permissions = m.permissions;
    }
    let dest = root.join(p.name).join(p.version);
    let receipt = Receipt {
        name: p.name.to_owned(),
        version: p.version.to_owned(),
        registry: p.registry.to_owned(),
        kind: p.kind,
        platform: p.platform.to_owned(),
        signer: p.signer,
        sha256: unpack::sha256(p.bytes),
        tree,
        signature: p.signature,
        permissions_sha256: unpack::sha256(
            serde_json::to_string(&permissions)
                .unwrap_or_default()
                .as_bytes(),
        ),
        permissions,
        dir: dest.display().to_string(),
        installed_at: taskrush_protocol::audit::now(),
    };
    let json = serde_json::to_string_pretty(&receipt).map_err(|e| e.to_string())?;
    std::fs::write(stage.join(unpack::RECEIPT), json + "\n")
        .map_err(|e| format!("cannot write the receipt: {e}"))?;
    unpack::set_read_only(&stage, true)?;
    let parent = root.join(p.name);
    std::fs::create_dir_all(&parent)
        .map_err(|e| format!("cannot create `{}`: {e}", parent.display()))?;
    // Another copy of this very version: moved aside first, removed after.
    let mut aside = None;
    if std::fs::symlink_metadata(&dest).is_ok() {
        let a = root.join(format!(
            ".old-{}-{}-{}",
            p.name,
            p.version,
            std::process::id()
        ));
        unpack::remove_tree(&a);
        std::fs::rename(&dest, &a)
            .map_err(|e| format!("cannot replace `{}`: {e}", dest.display()))?;
        aside = Some(a);
    }
    if let Err(e) = std::fs::rename(&stage, &dest) {
        if let Some(a) = &aside {
            let _ = std::fs::rename(a, &dest);
        }
        return Err(format!(
            "cannot move the plugin into `{}`: {e}",
            dest.display()
        ));
    }
    let mut staging = staging;
    staging.0 = None;
    if let Some(a) = aside {
        unpack::remove_tree(&a);
    }
    audit::record(
        "installed",
        p.name,
        &dest,
        serde_json::json!({
            "version": receipt.version,
            "registry": receipt.registry,
            "signer": receipt.signer,
            "sha256": receipt.sha256,
            "tree": receipt.tree,
        }),
    );
    Ok(receipt)
}

fn install_local(path: &Path, allow_unsigned: bool) -> Result<Receipt, String> {
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read `{shown}`: {e}"))?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (bytes, single) = if meta.is_dir() {
        (unpack::pack_dir(path)?, None)
    } else if file_name.ends_with(".tar.gz") || file_name.ends_with(".tgz") {
        (fetch(&format!("file://{shown}"), MAX_ARTIFACT_BYTES)?, None)
    } else if file_name.ends_with(".wasm") || file_name.ends_with(".so") {
        (
            fetch(&format!("file://{shown}"), MAX_ARTIFACT_BYTES)?,
            Some(file_name.clone()),
        )
    } else {
        return Err(format!(
            "`{shown}` is not a plugin: give a directory, a `.tar.gz`, a `.wasm` or a `.so`"
        ));
    };
    // Name, version and kind: from the manifest (unpacked once to read it),
    // or from the file name of a bare module.
    let probe_root = plugins_dir()?;
    let probe = staging_dir(&probe_root)?;
    let probe_dir = probe.0.clone().unwrap_or_default();
    let (name, version, kind) = match &single {
        Some(f) => {
            let stem = f
                .trim_end_matches(".wasm")
                .trim_end_matches(".so")
                .to_owned();
            let kind = if f.ends_with(".wasm") {
                PluginType::Wasm
            } else {
                PluginType::Native
            };
            (stem, "0.0.0".to_owned(), kind)
        }
        None => {
            unpack::unpack_tar_gz(&bytes, &probe_dir, unpack::Limits::default())
                .map_err(|e| format!("`{shown}`: {e}: refused"))?;
            let text = std::fs::read_to_string(probe_dir.join("plugin.toml")).map_err(|_| {
                format!("`{shown}` holds no `plugin.toml` (hint: a plugin directory or archive has its manifest at the top)")
            })?;
            let m: PluginManifest = toml::from_str(&text)
                .map_err(|e| format!("`{shown}`: invalid `plugin.toml`: {}", e.message()))?;
            (m.name, m.version, m.plugin_type)
        }
    };
    let tree = match &single {
        Some(_) => single_tree(&single, &bytes),
        None => unpack::tree_hash(&probe_dir)?,
    };
    drop(probe);
    let sig_path = PathBuf::from(format!("{shown}.minisig"));
    let (signer, signature, platform) = if !meta.is_dir() && sig_path.is_file() {
        let sig = std::fs::read_to_string(&sig_path)
            .map_err(|e| format!("cannot read `{}`: {e}", sig_path.display()))?;
        let keys: Vec<String> = registries().into_iter().flat_map(|r| r.keys).collect();
        let sha = unpack::sha256(&bytes);
        let here = platform();
        let mut last = String::new();
        let mut ok = None;
        for plat in [ANY_PLATFORM, here.as_str()] {
            let expected = trusted_comment(&name, &version, plat, &sha, &tree);
            match sign::verify(&bytes, &sig, &keys, &[], Some(&expected)) {
                Ok(id) => {
                    ok = Some((id, plat.to_owned()));
                    break;
                }
                // The `any` platform's reason is the one shown.
                Err(e) if last.is_empty() => last = e,
                Err(_) => {}
            }
        }
        let (id, plat) = ok.ok_or_else(|| format!("`{shown}`: {last}: refused"))?;
        (Some(id), Some(sig), plat)
    } else if allow_unsigned {
        (None, None, ANY_PLATFORM.to_owned())
    } else {
        return Err(format!(
            "`{shown}` is not signed (no `{}`): refused (hint: pass `--allow-unsigned` to install a plugin you built yourself)",
            sig_path.display()
        ));
    };
    place(Placing {
        name: &name,
        version: &version,
        registry: "local",
        kind,
        platform: &platform,
        bytes: &bytes,
        single,
        tree: None,
        signer,
        signature,
    })
}

/// The tree hash of a tree holding only `single`'s bytes.
fn single_tree(single: &Option<String>, bytes: &[u8]) -> String {
    use sha2::Digest as _;
    let name = single.as_deref().unwrap_or("");
    let line = format!("f {name} - {}\n", unpack::sha256(bytes));
    sha2::Sha256::digest(line.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `plugin list --installed`: every receipt under the plugins directory.
pub(crate) fn installed() -> Result<Vec<Receipt>, String> {
    let root = plugins_dir()?;
    let mut out = Vec::new();
    let Ok(names) = std::fs::read_dir(&root) else {
        return Ok(out);
    };
    let mut names: Vec<_> = names.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    names.sort();
    for n in names {
        let Ok(versions) = std::fs::read_dir(&n) else {
            continue;
        };
        let mut versions: Vec<_> = versions.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        versions.sort();
        for v in versions {
            if let Ok(text) = std::fs::read_to_string(v.join(unpack::RECEIPT))
                && let Ok(r) = serde_json::from_str::<Receipt>(&text)
            {
                out.push(r);
            }
        }
    }
    Ok(out)
}

/// `plugin remove NAME[@VERSION]`.
pub(crate) fn remove(name: &str, version: Option<&str>) -> Result<Removed, String> {
    if !valid_name(name) {
        return Err(format!("`{name}` is not a plugin name"));
    }
    let dir = plugins_dir()?.join(name);
    let mut removed = Vec::new();
    for r in installed()?.into_iter().filter(|r| r.name == name) {
        if version.is_some_and(|v| v != r.version) {
            continue;
        }
        unpack::remove_tree(&dir.join(&r.version));
        audit::record(
            "removed",
            name,
            &dir.join(&r.version),
            serde_json::json!({"version": r.version}),
        );
        removed.push(r.version);
    }
    if removed.is_empty() {
        return Err(match version {
            Some(v) => {
                format!("`{name}` {v} is not installed (hint: `taskrush plugin list --installed`)")
            }
            None => format!("`{name}` is not installed (hint: `taskrush plugin list --installed`)"),
        });
    }
    let _ = std::fs::remove_dir(&dir);
    Ok(Removed {
        name: name.to_owned(),
        versions: removed,
    })
}

/// What `plugin publish` is asked.
pub(crate) struct Publish<'a> {
    pub(crate) path: &'a Path,
    pub(crate) registry: &'a Path,
    pub(crate) key: &'a Path,
    pub(crate) platform: Option<&'a str>,
    pub(crate) expires_days: u64,
    pub(crate) revoke: &'a [String],
}

/// `plugin publish`: pack, hash, sign, write the index line, the search
/// list and the signed snapshot.
pub(crate) fn publish(p: Publish<'_>) -> Result<Published, String> {
    let key = sign::SigningKey::from_file(p.key)?;
    let shown = p.path.display().to_string();
    let meta = std::fs::metadata(p.path).map_err(|e| format!("cannot read `{shown}`: {e}"))?;
    if !meta.is_dir() {
        return Err(format!("`{shown}` is not a plugin directory"));
    }
    let text = std::fs::read_to_string(p.path.join("plugin.toml"))
        .map_err(|e| format!("cannot read `{shown}/plugin.toml`: {e}"))?;
    let m: PluginManifest = toml::from_str(&text)
        .map_err(|e| format!("invalid `{shown}/plugin.toml`: {}", e.message()))?;
    if !valid_name(&m.name) {
        return Err(format!(
            "`{}` is not a valid plugin name for a registry",
            m.name
        ));
    }
    semver::Version::parse(&m.version).map_err(|e| {
        format!(
            "`version = \"{}\"` in `{shown}/plugin.toml`: {e}",
            m.version
        )
    })?;
    let platform = p.platform.unwrap_or(ANY_PLATFORM).to_owned();
    let bytes = unpack::pack_dir(p.path)?;
    let tree = unpack::tree_hash(p.path)?;
    let sha = unpack::sha256(&bytes);
    let rel = format!(
        "artifacts/{}/{}/{}-{}-{platform}.tar.gz",
        m.name, m.version, m.name, m.version
    );
    let write = |rel: &str, data: &[u8]| -> Result<(), String> {
        let path = p.registry.join(rel);
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)
                .map_err(|e| format!("cannot create `{}`: {e}", d.display()))?;
        }
        std::fs::write(&path, data).map_err(|e| format!("cannot write `{}`: {e}", path.display()))
    };
    write(&rel, &bytes)?;
    let signature = key.sign(
        &bytes,
        &trusted_comment(&m.name, &m.version, &platform, &sha, &tree),
    )?;
    let artifact = Artifact {
        platform: platform.clone(),
        url: rel,
        sha256: sha,
        size: bytes.len() as u64,
        tree,
        signature,
    };
    let index = index_path(&m.name);
    let mut lines: Vec<IndexLine> = std::fs::read_to_string(p.registry.join(&index))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let line = match lines.iter_mut().find(|l| l.vers == m.version) {
        Some(l) => l,
        None => {
            lines.push(IndexLine {
                name: m.name.clone(),
                vers: m.version.clone(),
                kind: m.plugin_type,
                protocols: vec![PLUGIN_PROTOCOL_VERSION],
                artifacts: Vec::new(),
                permissions: m.permissions.clone(),
                signer: key.id.clone(),
                yanked: false,
                description: m.description.clone(),
            });
            lines.last_mut().ok_or("no line")?
        }
    };
    line.signer = key.id.clone();
    line.permissions = m.permissions.clone();
    line.description = m.description.clone();
    line.artifacts.retain(|a| a.platform != platform);
    line.artifacts.push(artifact.clone());
    line.artifacts.sort_by(|a, b| a.platform.cmp(&b.platform));
    let mut text = String::new();
    for l in &lines {
        text.push_str(&serde_json::to_string(l).map_err(|e| e.to_string())?);
        text.push('\n');
    }
    write(&index, text.as_bytes())?;
    write_snapshot(p.registry, &key, p.expires_days, p.revoke)?;
    Ok(Published {
        name: m.name,
        version: m.version,
        index,
        artifacts: vec![artifact],
        signer: key.id,
    })
}

/// Rebuild `search.jsonl` from every index file and sign a new snapshot.
fn write_snapshot(
    registry: &Path,
    key: &sign::SigningKey,
    expires_days: u64,
    revoke: &[String],
) -> Result<(), String> {
    let mut files = BTreeMap::new();
    let mut search = Vec::new();
    let index_root = registry.join("index");
    for e in walkdir::WalkDir::new(&index_root).sort_by_file_name() {
        let e = e.map_err(|e| format!("cannot read `{}`: {e}", index_root.display()))?;
        if !e.file_type().is_file() {
            continue;
        }
        let rel = e
            .path()
            .strip_prefix(registry)
            .map_err(|_| "a path outside the registry".to_owned())?
            .to_string_lossy()
            .into_owned();
        let bytes = std::fs::read(e.path()).map_err(|err| format!("cannot read `{rel}`: {err}"))?;
        files.insert(rel, unpack::sha256(&bytes));
        let lines: Vec<IndexLine> = String::from_utf8_lossy(&bytes)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let newest = lines
            .iter()
            .filter(|l| !l.yanked)
            .filter_map(|l| Some((semver::Version::parse(&l.vers).ok()?, l)))
            .max_by(|a, b| a.0.cmp(&b.0));
        if let Some((v, l)) = newest {
            search.push(SearchEntry {
                name: l.name.clone(),
                description: l.description.clone(),
                version: v.to_string(),
            });
        }
    }
    search.sort_by(|a, b| a.name.cmp(&b.name));
    let mut text = String::new();
    for s in &search {
        text.push_str(&serde_json::to_string(s).map_err(|e| e.to_string())?);
        text.push('\n');
    }
    std::fs::write(registry.join(SEARCH), &text)
        .map_err(|e| format!("cannot write `{SEARCH}`: {e}"))?;
    files.insert(SEARCH.to_owned(), unpack::sha256(text.as_bytes()));
    let mut revoked: Vec<String> = std::fs::read(registry.join(SNAPSHOT))
        .ok()
        .and_then(|b| serde_json::from_slice::<Snapshot>(&b).ok())
        .map(|s| s.revoked)
        .unwrap_or_default();
    for r in revoke {
        let id = u64::from_str_radix(r.trim(), 16)
            .map(|n| format!("{n:016X}"))
            .map_err(|_| {
                format!("`{r}` is not a key id (hint: 16 hex digits, as minisign prints them)")
            })?;
        if !revoked.iter().any(|x| sign::same_id(x, &id)) {
            revoked.push(id);
        }
    }
    let snapshot = Snapshot {
        format: FORMAT,
        expires: now() + expires_days * 86_400,
        files,
        revoked,
    };
    let json = serde_json::to_string_pretty(&snapshot).map_err(|e| e.to_string())? + "\n";
    let sig = key.sign(
        json.as_bytes(),
        &format!("taskrush-snapshot expires={}", snapshot.expires),
    )?;
    std::fs::write(registry.join(SNAPSHOT), &json)
        .map_err(|e| format!("cannot write `{SNAPSHOT}`: {e}"))?;
    std::fs::write(registry.join(format!("{SNAPSHOT}.minisig")), sig)
        .map_err(|e| format!("cannot write `{SNAPSHOT}.minisig`: {e}"))?;
    Ok(())
}
