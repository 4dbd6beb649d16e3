//! Finding a plugin's directory and loading its `plugin.toml`.
//!
//! Lookup, first hit wins: the entry's `path:` (relative to the `.rush`
//! file's directory), else `<project>/.rush-plugins/NAME/`, else an
//! installed version `$XDG_DATA_HOME/taskrush/plugins/NAME/VERSION/` (the
//! one locked in `.rush.lock`, else the newest matching `version:`; see
//! `registry/lock.rs`), else `$XDG_DATA_HOME/taskrush/plugins/NAME/`. A manifest is valid when it
//! parses, names the plugin as the `.rush` file does, has an entry point,
//! its `taskrush_version` requirement admits this TaskRush, and its version
//! satisfies the `.rush` entry's `version:` requirement.

use std::path::{Path, PathBuf};

use taskrush_protocol::plugin::{PluginManifest, PluginType};

use crate::config::rush_file::{PluginKind, PluginSpec};
use crate::stamp::Stamp;

/// The file names of native plugin libraries (Linux, macOS, Windows).
const NATIVE_SUFFIXES: &[&str] = &[".so", ".dylib", ".dll"];

/// The manifest's file name in a plugin directory.
pub(super) const MANIFEST: &str = "plugin.toml";

/// The most bytes of a `plugin.toml` the daemon reads: a manifest is a few
/// hundred bytes, and parsing TOML takes about 120 times the size of the
/// text (480 MB for 4 MiB), so a larger file is refused unread.
pub const MAX_MANIFEST_BYTES: u64 = 64 * 1024;

/// Why a plugin cannot be used; the message names the plugin and the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ManifestError {
    pub(super) message: String,
    pub(super) hint: Option<String>,
}

impl ManifestError {
    fn new(message: String) -> ManifestError {
        ManifestError {
            message,
            hint: None,
        }
    }

    fn hint(mut self, hint: impl Into<String>) -> ManifestError {
        self.hint = Some(hint.into());
        self
    }
}

/// A plugin directory with its validated manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Installed {
    pub(super) dir: PathBuf,
    pub(super) manifest: PluginManifest,
    pub(super) stamp: FileStamps,
    /// A bare `.wasm` without a `plugin.toml`: its manifest is made up
    /// (name from the `.rush` entry), so the handshake is not held to it.
    pub(super) bare: bool,
}

/// The stamps (`stamp.rs`) of the manifest and the entry point's files: a
/// failed plugin is tried again when they change. The racy margin is not
/// applied (a plugin that failed is not retried on every request for two
/// seconds after its files were written), so a rewrite in the clock tick
/// of the failed start that keeps the length and the inode goes unseen;
/// restarting the plugin lifts the failure.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct FileStamps(Vec<(PathBuf, Option<Stamp>)>);

impl FileStamps {
    /// The files the stamp covers (what the watcher watches).
    pub(super) fn files(&self) -> Vec<PathBuf> {
        self.0.iter().map(|(f, _)| f.clone()).collect()
    }

    /// The stamp of `dir`'s manifest and of every entry point argument
    /// that names a file in `dir`.
    pub(super) fn of(dir: &Path, entry_point: &[String]) -> FileStamps {
        let mut files = vec![dir.join(MANIFEST)];
        for arg in entry_point {
            let p = dir.join(arg);
            if !arg.starts_with('-') && p.is_file() {
                files.push(p);
            }
        }
        FileStamps(
            files
                .into_iter()
                .map(|f| {
                    let stamp = Stamp::of_path(&f).ok();
                    (f, stamp)
                })
                .collect(),
        )
    }
}

/// The plugin of `spec`, located and validated: a plugin directory with
/// its `plugin.toml`, or (`type: wasm`) a bare `path:` to a `.wasm` file.
pub(super) fn find(spec: &PluginSpec, rush_dir: &Path) -> Result<Installed, ManifestError> {
    if spec.kind == PluginKind::Wasm
        && let Some(p) = spec.path.as_deref().filter(|p| p.ends_with(".wasm"))
    {
        return bare_wasm(spec, &rush_dir.join(p));
    }
    let dir = locate(spec, rush_dir)?;
    let loaded = load(&dir, Some(&spec.name), spec.version.as_deref())?;
    let declared = match loaded.manifest.plugin_type {
        PluginType::Wasm => PluginKind::Wasm,
        PluginType::Native => PluginKind::Native,
        _ => PluginKind::External,
    };
    if declared != spec.kind {
        return Err(ManifestError::new(format!(
            "plugin `{}` is `type: {}` in the `.rush` file but `type = \"{declared}\"` in `{}`",
            spec.name,
            spec.kind,
            dir.join(MANIFEST).display()
        ))
        .hint("the two must agree"));
    }
    Ok(loaded)
}

/// What a bare module's `plugin info` says about it.
pub(super) const BARE_WASM: &str = "a bare WebAssembly module (no `plugin.toml`): it is granted nothing beyond the safe set (no file system paths, network, environment or programs)";

/// A `.wasm` file without a manifest: named by the `.rush` entry, its
/// version from its `taskrush_version` custom section (else `0.0.0`),
/// granted nothing.
fn bare_wasm(spec: &PluginSpec, file: &Path) -> Result<Installed, ManifestError> {
    let shown = file.display();
    if !file.is_file() {
        return Err(ManifestError::new(format!(
            "plugin `{}` not found: `{shown}` is not a file",
            spec.name
        ))
        .hint("`path:` is relative to the `.rush` file's directory"));
    }
    let max = spec.module_size.unwrap_or(super::wasm::DEFAULT_MODULE_SIZE);
    let version = super::wasm::version_section(file, max)
        .map_err(|e| ManifestError::new(e.0))?
        .unwrap_or_else(|| "0.0.0".into());
    let parsed = semver::Version::parse(&version).map_err(|e| {
        ManifestError::new(format!(
            "the `taskrush_version` section of `{shown}` is not a semver version (`{version}`): {e}"
        ))
    })?;
    if let Some(wanted) = spec.version.as_deref() {
        let req = semver::VersionReq::parse(wanted).map_err(|e| {
            ManifestError::new(format!(
                "`version` of plugin `{}` in the `.rush` file is not a version requirement (`{wanted}`): {e}",
                spec.name
            ))
        })?;
        if !req.matches(&parsed) {
            return Err(ManifestError::new(format!(
                "plugin `{}` is version {parsed} (`{shown}`), but the `.rush` file asks for `{wanted}`",
                spec.name
            )));
        }
    }
    let dir = file.parent().unwrap_or(Path::new(".")).to_path_buf();
    let entry = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let manifest = PluginManifest {
        name: spec.name.clone(),
        version,
        description: BARE_WASM.into(),
        author: String::new(),
        license: String::new(),
        homepage: None,
        repository: None,
        taskrush_version: "*".into(),
        plugin_type: PluginType::Wasm,
        entry_point: vec![entry],
        permissions: Default::default(),
        enforcement: None,
    };
    let stamp = FileStamps::of(&dir, &manifest.entry_point);
    Ok(Installed {
        dir,
        manifest,
        stamp,
        bare: true,
    })
}

/// Where the plugin's directory is, or an error naming every place looked.
pub(super) fn locate(spec: &PluginSpec, rush_dir: &Path) -> Result<PathBuf, ManifestError> {
    if spec.path.is_none() {
        let local = rush_dir.join(".rush-plugins").join(&spec.name);
        if local.join(MANIFEST).is_file() {
            return Ok(local);
        }
        // Installed from a registry: `…/plugins/NAME/VERSION/`, the locked
        // version or the newest matching (`registry/lock.rs`).
        match crate::registry::lock::resolve_installed(
            &spec.name,
            spec.version.as_deref(),
            rush_dir,
        ) {
            Ok(Some(dir)) => return Ok(dir),
            Ok(None) => {}
            Err((message, hint)) => return Err(ManifestError::new(format!("{message}; {hint}"))),
        }
    }
    let candidates: Vec<PathBuf> = match &spec.path {
        Some(p) => vec![rush_dir.join(p)],
        None => {
            let mut c = vec![rush_dir.join(".rush-plugins").join(&spec.name)];
            if let Some(data) = dirs::data_dir() {
                let dir = data.join("taskrush").join("plugins").join(&spec.name);
                c.push(dir.clone());
                // Installed by `plugin install`: `NAME/VERSION/`, the newest
                // that meets the entry's `version:` requirement.
                if let Some(v) = newest_installed(&dir, spec.version.as_deref()) {
                    c.push(v);
                }
            }
            c
        }
    };
    for c in &candidates {
        if c.join(MANIFEST).is_file() {
            return Ok(c.clone());
        }
    }
    let looked: Vec<String> = candidates
        .iter()
        .map(|c| format!("`{}`", c.join(MANIFEST).display()))
        .collect();
    let install = match &spec.path {
        Some(_) => String::new(),
        None => format!(
            "; {}",
            crate::registry::lock::install_hint(&spec.name, spec.version.as_deref())
        ),
    };
    Err(ManifestError::new(format!(
        "plugin `{}` not found: looked for {}{install}",
        spec.name,
        looked.join(", ")
    ))
    .hint(match &spec.path {
        Some(_) => "`path:` is relative to the `.rush` file's directory and names the plugin's directory (the one holding `plugin.toml`)".to_owned(),
        None => format!(
            "put the plugin in `.rush-plugins/{}/`, or give its directory with `path:`",
            spec.name
        ),
    }))
}

/// The newest `dir/VERSION/` (a semver name) holding a `plugin.toml`
/// and meeting `req` (when given and valid).
fn newest_installed(dir: &Path, req: Option<&str>) -> Option<PathBuf> {
    let req = req.and_then(|r| semver::VersionReq::parse(r).ok());
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = semver::Version::parse(&e.file_name().to_string_lossy()).ok()?;
            let ok =
                req.as_ref().is_none_or(|r| r.matches(&v)) && e.path().join(MANIFEST).is_file();
            ok.then(|| (v, e.path()))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, p)| p)
}

/// Read and validate `dir/plugin.toml`. `expected` is the name the `.rush`
/// file uses (none for the conformance kit), `version_req` its `version:`.
pub(super) fn load(
    dir: &Path,
    expected: Option<&str>,
    version_req: Option<&str>,
) -> Result<Installed, ManifestError> {
    let file = dir.join(MANIFEST);
    let shown = file.display().to_string();
    let bytes = crate::config::whole_file::read_at_most(&file, MAX_MANIFEST_BYTES)
        .map_err(|e| ManifestError::new(format!("cannot read `{shown}`: it {}", e.what())))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        ManifestError::new(format!(
            "invalid plugin manifest `{shown}`: not valid UTF-8 at byte offset {}",
            e.utf8_error().valid_up_to()
        ))
    })?;
    let manifest: PluginManifest = toml::from_str(&text).map_err(|e| {
        let at = e
            .span()
            .map(|s| {
                let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                format!(":{line}")
            })
            .unwrap_or_default();
        ManifestError::new(format!(
            "invalid plugin manifest `{shown}{at}`: {}",
            e.message().trim()
        ))
    })?;
    let bad = |field: &str, why: String| {
        ManifestError::new(format!(
            "invalid plugin manifest `{shown}`: `{field}` {why}"
        ))
    };
    if manifest.name.trim().is_empty() {
        return Err(bad("name", "is empty".into()));
    }
    if let Some(expected) = expected
        && manifest.name != expected
    {
        return Err(bad(
            "name",
            format!(
                "is `{}`, but the `.rush` file calls the plugin `{expected}`",
                manifest.name
            ),
        ));
    }
    if manifest.entry_point.first().is_none_or(|p| p.is_empty()) {
        return Err(bad(
            "entry_point",
            "is empty".into(),
        )
        .hint("name the command that starts the plugin, e.g. `entry_point = [\"python3\", \"-I\", \"main.py\"]`"));
    }
    if let Some(e) = manifest
        .enforcement
        .as_deref()
        .filter(|e| !matches!(*e, "required" | "best_effort"))
    {
        return Err(bad("enforcement", format!("is `{e}`"))
            .hint("write `enforcement = \"required\"` or `\"best_effort\"` (the default)"));
    }
    if manifest.plugin_type == PluginType::Native
        && (manifest.entry_point.len() != 1
            || !NATIVE_SUFFIXES
                .iter()
                .any(|s| manifest.entry_point[0].ends_with(s)))
    {
        return Err(bad(
            "entry_point",
            format!(
                "is `{:?}`, which is not one library (`.so`, `.dylib` or `.dll`)",
                manifest.entry_point
            ),
        )
        .hint(
            "a `type = \"native\"` plugin names its library: `entry_point = [\"libmy_plugin.so\"]`",
        ));
    }
    if manifest.plugin_type == PluginType::Wasm
        && (manifest.entry_point.len() != 1 || !manifest.entry_point[0].ends_with(".wasm"))
    {
        return Err(bad(
            "entry_point",
            format!(
                "is `{:?}`, which is not one `.wasm` file",
                manifest.entry_point
            ),
        )
        .hint("a `type = \"wasm\"` plugin names its module: `entry_point = [\"plugin.wasm\"]`"));
    }
    let req = semver::VersionReq::parse(&manifest.taskrush_version).map_err(|e| {
        bad(
            "taskrush_version",
            format!(
                "is not a version requirement (`{}`): {e}",
                manifest.taskrush_version
            ),
        )
    })?;
    let ours = semver::Version::parse(taskrush_protocol::VERSION)
        .map_err(|e| ManifestError::new(format!("TaskRush's own version is not semver: {e}")))?;
    if !req.matches(&ours) {
        return Err(bad(
            "taskrush_version",
            format!(
                "is `{}`, which this TaskRush ({ours}) does not satisfy",
                manifest.taskrush_version
            ),
        ));
    }
    let version = semver::Version::parse(&manifest.version).map_err(|e| {
        bad(
            "version",
            format!("is not a semver version (`{}`): {e}", manifest.version),
        )
    })?;
    if let Some(wanted) = version_req {
        let req = semver::VersionReq::parse(wanted).map_err(|e| {
            ManifestError::new(format!(
                "`version` of plugin `{}` in the `.rush` file is not a version requirement (`{wanted}`): {e}",
                manifest.name
            ))
        })?;
        if !req.matches(&version) {
            return Err(ManifestError::new(format!(
                "plugin `{}` is version {version} (`{shown}`), but the `.rush` file asks for `{wanted}`",
                manifest.name
            )));
        }
    }
    let stamp = FileStamps::of(dir, &manifest.entry_point);
    Ok(Installed {
        dir: dir.to_path_buf(),
        manifest,
        stamp,
        bare: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(toml: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(MANIFEST), toml).unwrap();
        d
    }

    const GOOD: &str = "name = \"x\"\nversion = \"1.2.0\"\nentry_point = [\"python3\", \"main.py\"]\ntaskrush_version = \">=0.3\"\n";

    /// `load` fails with a message that, after the directory, reads `expected`.
    #[track_caller]
    fn check(toml: &str, name: Option<&str>, req: Option<&str>, expected: &str) {
        let d = dir_with(toml);
        let got = match load(d.path(), name, req) {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.message.replace(&d.path().display().to_string(), "DIR"),
        };
        assert_eq!(got, expected);
    }

    #[test]
    fn manifests_are_validated_field_by_field() {
        check(GOOD, Some("x"), Some("^1.0"), "ok");
        check(
            GOOD,
            Some("y"),
            None,
            "invalid plugin manifest `DIR/plugin.toml`: `name` is `x`, but the `.rush` file calls the plugin `y`",
        );
        check(
            GOOD,
            Some("x"),
            Some("^2"),
            "plugin `x` is version 1.2.0 (`DIR/plugin.toml`), but the `.rush` file asks for `^2`",
        );
        check(
            &GOOD.replace(">=0.3", ">=99"),
            None,
            None,
            &format!(
                "invalid plugin manifest `DIR/plugin.toml`: `taskrush_version` is `>=99`, which this TaskRush ({}) does not satisfy",
                taskrush_protocol::VERSION
            ),
        );
        check(
            &GOOD.replace(">=0.3", "soon"),
            None,
            None,
            "invalid plugin manifest `DIR/plugin.toml`: `taskrush_version` is not a version requirement (`soon`): unexpected character 's' while parsing major version number",
        );
        check(
            &GOOD.replace("[\"python3\", \"main.py\"]", "[]"),
            None,
            None,
            "invalid plugin manifest `DIR/plugin.toml`: `entry_point` is empty",
        );
        check(
            &format!("{GOOD}enforcement = \"strict\"\n"),
            None,
            None,
            "invalid plugin manifest `DIR/plugin.toml`: `enforcement` is `strict`",
        );
        check(
            "name = \"x\"\n",
            None,
            None,
            "invalid plugin manifest `DIR/plugin.toml:1`: missing field `version`",
        );
        check(
            &format!("{GOOD}colour = 1\n"),
            None,
            None,
            "invalid plugin manifest `DIR/plugin.toml:5`: unknown field `colour`, expected one of `name`, `version`, `description`, `author`, `license`, `homepage`, `repository`, `taskrush_version`, `type`, `entry_point`, `permissions`, `enforcement`",
        );
    }

    #[test]
    fn a_missing_plugin_names_every_place_looked() {
        let spec = PluginSpec {
            name: "nope".into(),
            version: None,
            kind: PluginKind::External,
            path: None,
            required: false,
            config: serde_json::json!({}),
            timeout: crate::config::rush_file::DEFAULT_PLUGIN_TIMEOUT,
            limits: Default::default(),
            memory: None,
            module_size: None,
            line: 1,
        };
        let e = locate(&spec, Path::new("/p")).unwrap_err();
        assert!(
            e.message.starts_with(
                "plugin `nope` not found: looked for `/p/.rush-plugins/nope/plugin.toml`, `"
            ),
            "{}",
            e.message
        );
        assert!(e.message.contains("taskrush/plugins/nope/plugin.toml`"));
    }
}
