//! The user's own configuration: `$XDG_CONFIG_HOME/taskrush/config.toml`
//! (else `~/.config/taskrush/config.toml`), read by the daemon (it runs
//! as the user). It holds what a terminal prompt cannot give in CI:
//! plugin grants, permissions denied to every plugin, and stricter
//! enforcement.
//!
//! ```toml
//! enforcement = "required"      # refuse plugins whose grants cannot all be enforced
//! plugins_read_project = false  # plugins do not get read access to the project root
//!
//! [[grants]]
//! project = "/home/me/src/app"  # or "*": every project
//! plugin = "slack-notify"       # or "*": every plugin
//! environment = ["SLACK_WEBHOOK"]
//! network = ["hooks.slack.com"]
//!
//! [[grants]]
//! project = "*"
//! plugin = "git-hook"
//! all = true                    # whatever its manifest declares
//!
//! [deny]                        # for every plugin; deny beats any grant
//! environment = ["AWS_SECRET_ACCESS_KEY"]
//! filesystem = ["~/.ssh"]
//!
//! [wasm]                        # caps on what a `.rush` may set for a wasm plugin
//! max_memory = "256MiB"         # `memory` (these three are the defaults)
//! max_module_size = "64MiB"     # `module_size`
//! max_timeout = "60s"           # `timeout`
//!
//! [native]                      # native plugins are trusted code: refused unless
//! allow = true                  # allowed here (default: false)
//! mode = "process"              # or "in-daemon" (default: "process")
//! [[registries]]                # plugin registries, searched in this order
//! name = "team"
//! url = "https://plugins.example.org/taskrush"   # or file:///srv/registry
//! keys = ["RWQ…"]               # minisign public keys trusted to sign it
//! ```
//!
//! The file is checked (cheaply: one `stat`) at each plugin start and
//! re-read when it changed. A file that cannot be used is reported with
//! its path and line, and the last good one stays in force.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use taskrush_protocol::plugin::Permissions;

use super::whole_file;

/// The most read of the file.
const MAX_BYTES: u64 = 1024 * 1024;

/// One `[[grants]]` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GrantEntry {
    /// An absolute project root (symlinks resolved when compared), or `*`.
    pub(crate) project: String,
    /// A plugin name, or `*`.
    pub(crate) plugin: String,
    /// Grant whatever the manifest declares.
    #[serde(default)]
    pub(crate) all: bool,
    #[serde(default)]
    pub(crate) filesystem: Vec<String>,
    #[serde(default)]
    pub(crate) network: Vec<String>,
    #[serde(default)]
    pub(crate) environment: Vec<String>,
    #[serde(default)]
    pub(crate) process: Vec<String>,
    #[serde(default)]
    pub(crate) plugins: Vec<String>,
}

impl GrantEntry {
    fn applies(&self, root: &Path, plugin: &str) -> bool {
        (self.project == "*"
            || Path::new(&self.project) == root
            // Written through a symlink: project roots are canonical.
            || Path::new(&self.project).canonicalize().is_ok_and(|p| p == root))
            && (self.plugin == "*" || self.plugin == plugin)
    }
}

/// The user config, parsed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UserConfig {
    /// `"required"`: like a manifest's `enforcement = "required"`, for
    /// every plugin.
    #[serde(default)]
    pub(crate) enforcement: Option<String>,
    /// Whether plugins may read the project root (default: yes).
    #[serde(default = "yes")]
    pub(crate) plugins_read_project: bool,
    #[serde(default)]
    pub(crate) grants: Vec<GrantEntry>,
    /// Denied to every plugin, whatever is granted.
    #[serde(default)]
    pub(crate) deny: Permissions,
    /// The user's caps on a WebAssembly plugin's limits.
    #[serde(default)]
    pub(crate) wasm: WasmCaps,
    /// Whether native plugins may load, and where.
    #[serde(default)]
    pub(crate) native: NativeConfig,
    /// `[metrics]`: when a run warns about a slow plugin.
    #[serde(default)]
    pub(crate) metrics: MetricsConfig,
    /// Plugin registries, searched in this order (`src/registry/`).
    #[serde(default)]
    pub(crate) registries: Vec<RegistryEntry>,
}

/// One `[[registries]]` entry: a registry and the keys it is trusted with.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegistryEntry {
    /// How plugins are addressed in it: `NAME/plugin`.
    pub(crate) name: String,
    /// `https://…`, `http://…` or `file:///…`: the directory holding
    /// `snapshot.json`.
    pub(crate) url: String,
    /// The minisign public keys (`RW…`) trusted to sign its snapshot and
    /// its artifacts.
    pub(crate) keys: Vec<String>,
}

/// `[metrics]`: a plugin whose hooks added more than `slow_plugin_share`
/// of a run's task time, and at least `slow_plugin_min_ms`, is named in a
/// warning at the end of the run.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MetricsConfig {
    /// A share of the tasks' time, from 0 to 1 (default 0.2).
    #[serde(default = "default_slow_share", deserialize_with = "de_share")]
    pub(crate) slow_plugin_share: f64,
    /// Milliseconds (default 100).
    #[serde(
        default = "default_slow_min",
        rename = "slow_plugin_min_ms",
        deserialize_with = "de_millis"
    )]
    pub(crate) slow_plugin_min: Duration,
}

// The share is checked to be a number from 0 to 1 (never NaN).
impl Eq for MetricsConfig {}

/// Default share of a run's task time above which a plugin is named.
pub(crate) const DEFAULT_SLOW_SHARE: f64 = 0.2;
/// Default least time a plugin must add to be named.
pub(crate) const DEFAULT_SLOW_MIN: Duration = Duration::from_millis(100);

fn default_slow_share() -> f64 {
    DEFAULT_SLOW_SHARE
}
fn default_slow_min() -> Duration {
    DEFAULT_SLOW_MIN
}

fn de_share<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = f64::deserialize(d)?;
    if !(0.0..=1.0).contains(&v) {
        return Err(serde::de::Error::custom(format!(
            "`slow_plugin_share` must be a number from 0 to 1 (a share of the tasks' time), not {v}"
        )));
    }
    Ok(v)
}

fn de_millis<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    Ok(Duration::from_millis(u64::deserialize(d)?))
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            slow_plugin_share: DEFAULT_SLOW_SHARE,
            slow_plugin_min: DEFAULT_SLOW_MIN,
        }
    }
}

/// `[native]`: native plugins are trusted code (a library run with the
/// user's rights): refused unless `allow = true`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NativeConfig {
    #[serde(default)]
    pub(crate) allow: bool,
    #[serde(default)]
    pub(crate) mode: NativeMode,
}

/// Where a native plugin's library is loaded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub(crate) enum NativeMode {
    /// In a host process of its own (`taskrushd --native-host LIB`),
    /// sandboxed like an external plugin: a crash costs that plugin.
    #[default]
    #[serde(rename = "process")]
    Process,
    /// In the daemon, on a thread of its own: the lowest latency; a crash
    /// takes the daemon down.
    #[serde(rename = "in-daemon")]
    InDaemon,
}

/// `[wasm]`: the most a `.rush` entry may set a WebAssembly plugin's
/// `memory`, `module_size` and `timeout` to; above, the value is lowered
/// to the cap (with a warning).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WasmCaps {
    #[serde(default = "default_max_memory", deserialize_with = "de_size")]
    pub(crate) max_memory: u64,
    #[serde(default = "default_max_module_size", deserialize_with = "de_size")]
    pub(crate) max_module_size: u64,
    #[serde(default = "default_max_timeout", deserialize_with = "de_duration")]
    pub(crate) max_timeout: Duration,
}

/// Default cap on a wasm plugin's `memory`.
pub(crate) const DEFAULT_MAX_MEMORY: u64 = 256 * 1024 * 1024;
/// Default cap on a wasm plugin's `module_size`.
pub(crate) const DEFAULT_MAX_MODULE_SIZE: u64 = 64 * 1024 * 1024;
/// Default cap on a wasm plugin's `timeout`.
pub(crate) const DEFAULT_MAX_TIMEOUT: Duration = Duration::from_secs(60);

fn default_max_memory() -> u64 {
    DEFAULT_MAX_MEMORY
}
fn default_max_module_size() -> u64 {
    DEFAULT_MAX_MODULE_SIZE
}
fn default_max_timeout() -> Duration {
    DEFAULT_MAX_TIMEOUT
}

impl Default for WasmCaps {
    fn default() -> Self {
        WasmCaps {
            max_memory: DEFAULT_MAX_MEMORY,
            max_module_size: DEFAULT_MAX_MODULE_SIZE,
            max_timeout: DEFAULT_MAX_TIMEOUT,
        }
    }
}

/// A number, or a string with a unit.
#[derive(Deserialize)]
#[serde(untagged)]
enum Written {
    Number(u64),
    Text(String),
}

/// `256MiB`, `64M`, `1GiB` (powers of 1024) or a number of bytes, above 0.
fn de_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let bad = |w: &str| {
        serde::de::Error::custom(format!(
            "expected a size such as `256MiB`, `64M` or a number of bytes, found `{w}`"
        ))
    };
    let n = match Written::deserialize(d)? {
        Written::Number(n) => n,
        Written::Text(t) => {
            let t = t.trim();
            let i = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
            let (number, unit) = t.split_at(i);
            let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
                "" | "b" => 1,
                "k" | "kb" | "kib" => 1 << 10,
                "m" | "mb" | "mib" => 1 << 20,
                "g" | "gb" | "gib" => 1 << 30,
                _ => return Err(bad(t)),
            };
            number
                .parse::<u64>()
                .ok()
                .and_then(|n| n.checked_mul(scale))
                .ok_or_else(|| bad(t))?
        }
    };
    if n == 0 {
        return Err(bad("0"));
    }
    Ok(n)
}

/// `60s`, `500ms`, `2m`, `1h` or a number of seconds, above 0.
fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let bad = |w: &str| {
        serde::de::Error::custom(format!(
            "expected a duration such as `60s`, `500ms`, `2m` or a number of seconds, found `{w}`"
        ))
    };
    let ms = match Written::deserialize(d)? {
        Written::Number(n) => n.checked_mul(1000),
        Written::Text(t) => {
            let t = t.trim();
            let i = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
            let (number, unit) = t.split_at(i);
            let scale: u64 = match unit.trim() {
                "ms" => 1,
                "" | "s" => 1000,
                "m" => 60_000,
                "h" => 3_600_000,
                _ => return Err(bad(t)),
            };
            number
                .parse::<u64>()
                .ok()
                .and_then(|n| n.checked_mul(scale))
        }
    };
    match ms {
        Some(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
        _ => Err(bad("0")),
    }
}

fn yes() -> bool {
    true
}

impl Default for UserConfig {
    fn default() -> Self {
        UserConfig {
            enforcement: None,
            plugins_read_project: true,
            grants: Vec::new(),
            deny: Permissions::default(),
            wasm: WasmCaps::default(),
            native: NativeConfig::default(),
            metrics: MetricsConfig::default(),
            registries: Vec::new(),
        }
    }
}

impl UserConfig {
    /// What the config grants plugin `plugin` of project `root` whose
    /// manifest declares `declared`; `None` when no entry applies.
    pub(crate) fn granted(
        &self,
        root: &Path,
        plugin: &str,
        declared: &Permissions,
    ) -> Option<Permissions> {
        let mut out: Option<Permissions> = None;
        for g in self.grants.iter().filter(|g| g.applies(root, plugin)) {
            let add = if g.all {
                declared.clone()
            } else {
                Permissions {
                    filesystem: g.filesystem.clone(),
                    network: g.network.clone(),
                    environment: g.environment.clone(),
                    process: g.process.clone(),
                    plugins: g.plugins.clone(),
                }
            };
            let acc = out.get_or_insert_with(Permissions::default);
            for (to, from) in [
                (&mut acc.filesystem, add.filesystem),
                (&mut acc.network, add.network),
                (&mut acc.environment, add.environment),
                (&mut acc.process, add.process),
                (&mut acc.plugins, add.plugins),
            ] {
                for item in from {
                    if !to.contains(&item) {
                        to.push(item);
                    }
                }
            }
        }
        out
    }

    /// Whether it says `enforcement = "required"`.
    pub(crate) fn requires_enforcement(&self) -> bool {
        self.enforcement.as_deref() == Some("required")
    }
}

/// The user config file's path, from the daemon's environment.
pub(crate) fn path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|s| !s.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        })?;
    Some(base.join("taskrush").join("config.toml"))
}

/// The config in force, and why the file on disk is not (when it cannot
/// be used: the last good one is in force).
#[derive(Debug, Clone, Default)]
pub(crate) struct Loaded {
    pub(crate) config: UserConfig,
    pub(crate) error: Option<String>,
}

#[derive(Default)]
struct Cache {
    /// What the file was when last read: path, modification time, size.
    stamp: Option<(PathBuf, Option<SystemTime>, u64)>,
    loaded: Loaded,
}

static CACHE: Mutex<Option<Cache>> = Mutex::new(None);

/// The user config in force, re-read when its file changed.
pub(crate) fn current() -> Loaded {
    let Some(path) = path() else {
        return Loaded::default();
    };
    let meta = std::fs::metadata(&path).ok();
    let stamp = meta
        .as_ref()
        .map(|m| (path.clone(), m.modified().ok(), m.len()));
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    let cache = cache.get_or_insert_with(Cache::default);
    if cache.stamp == stamp && (stamp.is_some() || cache.loaded.error.is_none()) {
        return cache.loaded.clone();
    }
    cache.stamp = stamp.clone();
    if stamp.is_none() {
        // No file (any more): nothing configured.
        cache.loaded = Loaded::default();
        return cache.loaded.clone();
    }
    match read(&path) {
        Ok(config) => {
            cache.loaded = Loaded {
                config,
                error: None,
            };
        }
        Err(e) => {
            tracing::warn!("{e}; the last good user config stays in force");
            cache.loaded.error = Some(e);
        }
    }
    cache.loaded.clone()
}

/// Read and parse the file at `path`.
pub(crate) fn read(path: &Path) -> Result<UserConfig, String> {
    let bytes = whole_file::read_at_most(path, MAX_BYTES)
        .map_err(|e| format!("the user config `{}` {}", path.display(), e.what()))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| format!("the user config `{}` is not UTF-8", path.display()))?;
    parse(&text).map_err(|(line, m)| match line {
        Some(line) => format!("in the user config `{}`, line {line}: {m}", path.display()),
        None => format!("in the user config `{}`: {m}", path.display()),
    })
}

/// Parse the text of a user config; an error carries its line.
fn parse(text: &str) -> Result<UserConfig, (Option<usize>, String)> {
    let config: UserConfig = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        (line, e.message().trim_end_matches('.').to_owned())
    })?;
    if let Some(e) = config.enforcement.as_deref().filter(|e| *e != "required") {
        return Err((
            line_of(text, "enforcement"),
            format!("`enforcement` must be \"required\" (or left out), not `{e}`"),
        ));
    }
    for g in &config.grants {
        if g.project != "*" && !Path::new(&g.project).is_absolute() {
            return Err((
                line_of(text, &g.project),
                format!(
                    "a grant's `project` must be an absolute path or \"*\", not `{}`",
                    g.project
                ),
            ));
        }
    }
    Ok(config)
}

/// The first line holding `needle`.
fn line_of(text: &str, needle: &str) -> Option<usize> {
    text.lines().position(|l| l.contains(needle)).map(|n| n + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perms(env: &[&str]) -> Permissions {
        Permissions {
            environment: env.iter().map(|s| s.to_string()).collect(),
            ..Permissions::default()
        }
    }

    #[test]
    fn grants_apply_by_project_and_plugin_and_all_grants_the_declared_set() {
        let c = parse(
            "[[grants]]\nproject = \"/p\"\nplugin = \"a\"\nenvironment = [\"X\"]\n\
             [[grants]]\nproject = \"*\"\nplugin = \"b\"\nall = true\n",
        )
        .unwrap();
        let declared = perms(&["Y", "Z"]);
        assert_eq!(
            c.granted(Path::new("/p"), "a", &declared),
            Some(perms(&["X"]))
        );
        assert_eq!(c.granted(Path::new("/q"), "a", &declared), None);
        assert_eq!(
            c.granted(Path::new("/q"), "b", &declared),
            Some(declared.clone())
        );
        assert!(c.plugins_read_project);
    }

    #[test]
    fn native_plugins_are_refused_unless_allowed_and_run_in_a_process_by_default() {
        assert_eq!(parse("").unwrap().native, NativeConfig::default());
        assert!(!NativeConfig::default().allow);
        let c = parse("[native]\nallow = true\nmode = \"in-daemon\"\n").unwrap();
        assert!(c.native.allow);
        assert_eq!(c.native.mode, NativeMode::InDaemon);
        assert!(parse("[native]\nmode = \"thread\"\n").is_err());
    }

    #[test]
    fn wasm_caps_read_sizes_and_durations_and_default_when_absent() {
        let c = parse("[wasm]\nmax_memory = \"128MiB\"\nmax_timeout = \"90s\"\n").unwrap();
        assert_eq!(c.wasm.max_memory, 128 << 20);
        assert_eq!(c.wasm.max_module_size, DEFAULT_MAX_MODULE_SIZE);
        assert_eq!(c.wasm.max_timeout, Duration::from_secs(90));
        assert_eq!(parse("").unwrap().wasm, WasmCaps::default());
        let (_, m) = parse("[wasm]\nmax_memory = \"lots\"\n").unwrap_err();
        assert!(m.contains("`lots`"), "{m}");
    }

    #[test]
    fn a_bad_file_is_reported_with_its_line() {
        let (line, m) = parse("[deny]\nenvironment = [\"A\"]\nnetwork = 3\n").unwrap_err();
        assert_eq!(line, Some(3));
        assert!(m.contains("invalid type"), "{m}");
        let (line, m) = parse("enforcement = \"maybe\"\n").unwrap_err();
        assert_eq!(line, Some(1));
        assert!(m.contains("\"required\""), "{m}");
        let (line, _) =
            parse("x = 1\n[[grants]]\nproject = \"rel\"\nplugin = \"a\"\n").unwrap_err();
        assert_eq!(line, Some(1));
        let (line, m) = parse("[[grants]]\nproject = \"rel\"\nplugin = \"a\"\n").unwrap_err();
        assert_eq!(line, Some(2));
        assert!(m.contains("absolute"), "{m}");
    }
}
