//! Enforcement of an external plugin's permissions (Linux): the sandbox
//! spec its process is started under, and the level achieved per kind.
//!
//! [`plan`] and [`levels`] take the effective set (declared ∩ granted −
//! denied, from [`super::grants::effective`]).
//!
//! - File system: read-only the runtime (`/usr`, `/lib*`, `/usr/local`,
//!   the essentials of `/etc`), the interpreter's prefix, the plugin's
//!   directory, the files its entry point names and the project root;
//!   read-write the granted `filesystem` paths, a private data dir and a
//!   private tmp dir (`TMPDIR`).
//! - Process: execute rights only for the entry point's program (the real
//!   interpreter behind a shim), the ELF loader and granted `process`
//!   commands resolved on `PATH`.
//! - Network: `socket(AF_UNIX)` always refused (the daemon's socket),
//!   internet sockets refused without a `network` grant; with a host list,
//!   TCP only, and with Landlock TCP rules only to the plugin's proxy
//!   ([`super::proxy`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use taskrush_protocol::plugin::{Permissions, PluginManifest};

use crate::process::sandbox::{self, Spec};

pub(super) const ENFORCED: &str = "enforced";

/// Benchmark switch: with `TASKRUSH_SANDBOX_OFF=1` in the daemon's
/// environment, plugins start without the sandbox helper (no Landlock,
/// seccomp, capability drop or limits), and every kind says so. For
/// measuring what enforcement costs (`benches/plugin_sandbox.py`); never
/// for use.
pub(super) const ENV_OFF: &str = "TASKRUSH_SANDBOX_OFF";

/// Whether [`ENV_OFF`] is set to `1`.
pub(super) fn off() -> bool {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OFF.get_or_init(|| std::env::var_os(ENV_OFF).is_some_and(|v| v == "1"))
}

/// The level of a kind with the sandbox switched off.
pub(super) fn off_level() -> String {
    format!("not enforced: sandbox switched off (`{ENV_OFF}=1`)")
}

/// The level achieved per kind, e.g. `filesystem` → `enforced`.
pub(super) fn levels(granted: &Permissions) -> BTreeMap<String, String> {
    if off() {
        return ["filesystem", "process", "network", "daemon_socket"]
            .into_iter()
            .map(|k| (k.to_owned(), off_level()))
            .chain([("environment".to_owned(), ENFORCED.to_owned())])
            .collect();
    }
    let landlock = match sandbox::landlock_level() {
        Ok(true) => ENFORCED.to_owned(),
        Ok(false) => "partial: older Landlock ABI (some rights not governed)".to_owned(),
        Err(why) => format!("not enforced: {why}"),
    };
    let network = if granted.network.is_empty() {
        ENFORCED.to_owned()
    } else {
        match sandbox::landlock_tcp() {
            // A client that ignores the proxy cannot connect anywhere else.
            Ok(()) => ENFORCED.to_owned(),
            Err(why) => format!(
                "partial: proxy-aware clients only ({why}): a client that ignores the proxy can connect to any TCP host"
            ),
        }
    };
    [
        ("filesystem", landlock.clone()),
        ("process", landlock),
        ("network", network),
        ("environment", ENFORCED.to_owned()),
        ("daemon_socket", ENFORCED.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// With `enforcement = "required"`: why the plugin must not start. Only
/// the permission kinds count, never the resource limits
/// ([`super::limits`]), which most hosts cannot all enforce.
pub(super) fn refusal(
    manifest: &PluginManifest,
    levels: &BTreeMap<String, String>,
) -> Option<String> {
    if manifest.enforcement.as_deref() != Some("required") {
        return None;
    }
    let short: Vec<String> = levels
        .iter()
        .filter(|(_, v)| v.as_str() != ENFORCED)
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    (!short.is_empty()).then(|| {
        format!(
            "its manifest says `enforcement = \"required\"` but its permissions cannot all be enforced here ({})",
            short.join("; ")
        )
    })
}

/// How a plugin process is started: the argv (the real interpreter in
/// place of a shim), the sandbox, and its private dirs.
pub(super) struct Plan {
    pub(super) argv: Vec<String>,
    pub(super) spec: Spec,
    pub(super) data_dir: PathBuf,
    pub(super) tmp_dir: PathBuf,
}

/// The private dirs of plugin `name` of project `root`, created (0700).
fn private_dirs(root: &Path, name: &str) -> std::io::Result<(PathBuf, PathBuf)> {
    use std::os::unix::fs::DirBuilderExt;
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .or_else(dirs::state_dir)
        .or_else(dirs::cache_dir)
        .unwrap_or_else(std::env::temp_dir);
    let key = blake3::hash(root.as_os_str().as_encoded_bytes()).to_hex();
    let base = state
        .join("taskrush")
        .join("plugins")
        .join(&key.as_str()[..16])
        .join(name);
    let (data, tmp) = (base.join("data"), base.join("tmp"));
    for d in [&data, &tmp] {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(d)?;
    }
    Ok((data, tmp))
}

/// A granted `filesystem` entry: `PATH`, `write:PATH` (read-write) or
/// `read:PATH` (read-only); relative to the project root, `~/` to `HOME`,
/// `@plugin/` to the plugin's own directory.
pub(super) fn granted_path(
    entry: &str,
    root: &Path,
    plugin: &Path,
    home: Option<&str>,
) -> (bool, PathBuf) {
    let (write, path) = match entry.split_once(':') {
        Some(("read", p)) => (false, p),
        Some(("write", p)) => (true, p),
        _ => (true, entry),
    };
    let path = match (path.strip_prefix("~/"), home, path.strip_prefix("@plugin/")) {
        (Some(rest), Some(home), _) => Path::new(home).join(rest),
        (_, _, Some(rest)) => plugin.join(rest),
        _ => root.join(path),
    };
    (write, path)
}

/// `name` on `path` (a `:`-list), as a real path.
fn which(name: &str, path: Option<&str>) -> Option<PathBuf> {
    which_entry(name, path).map(|(p, _)| p)
}

/// `name` on `path` (a `:`-list), as a real path, and whether the `PATH`
/// entry it was found through is relative (taken from the plugin's
/// directory at spawn: the plugin's own file).
fn which_entry(name: &str, path: Option<&str>) -> Option<(PathBuf, bool)> {
    path?
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| (Path::new(d).join(name), !d.starts_with('/')))
        .find(|(p, _)| p.is_file())
        .and_then(|(p, rel)| p.canonicalize().ok().map(|p| (p, rel)))
}

/// A python's real executable and its prefix.
type Python = (PathBuf, PathBuf);

/// A python's real executable and `sys.prefix`, asked once per program
/// (a pyenv shim is a bash script running others, so the program is run).
///
/// Only ever asked of a program outside the plugin's directory and the
/// project root, found through an absolute `PATH` entry ([`plan`] never
/// probes the plugin's own files), and the probe itself runs in the
/// sandbox helper with [`probe_spec`]: read-only, no network, no Unix
/// socket, so a hostile `python3` learns nothing it can keep or send.
fn python(program: &Path, env: &BTreeMap<String, String>) -> Option<Python> {
    static CACHE: Mutex<Option<HashMap<PathBuf, Option<Python>>>> = Mutex::new(None);
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    let cache = cache.get_or_insert_with(HashMap::new);
    cache
        .entry(program.to_owned())
        .or_insert_with(|| {
            let spec = serde_json::to_string(&probe_spec()).ok()?;
            let out = std::process::Command::new("/proc/self/exe")
                .arg(sandbox::FLAG)
                .arg(spec)
                .arg("--")
                .arg(program)
                .args([
                    "-c",
                    "import sys,os;print(os.path.realpath(sys.executable));print(sys.prefix)",
                ])
                .env_clear()
                .envs(env)
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .output()
                .ok()?;
            let text = String::from_utf8(out.stdout).ok()?;
            let mut lines = text.lines();
            Some((lines.next()?.into(), lines.next()?.into()))
        })
        .clone()
}

/// The sandbox of the interpreter probe ([`python`]): everything
/// read-only (a pyenv shim runs bash, `pyenv` and the real python, reading
/// `~/.pyenv`), nothing writable but `/dev/null`, no internet or Unix
/// socket (the seccomp filter, always applied).
fn probe_spec() -> Spec {
    Spec {
        read: vec!["/".into()],
        exec: vec!["/".into()],
        write: vec!["/dev/null".into()],
        network: false,
        landlock: !off() && sandbox::landlock_level().is_ok(),
        parent: std::process::id(),
        ..Spec::default()
    }
}

/// The interpreter a `#!` line names (`/usr/bin/env X` resolved on PATH).
fn shebang(file: &Path, path: Option<&str>) -> Vec<PathBuf> {
    use std::io::Read;
    let mut head = [0u8; 256];
    let n = std::fs::File::open(file)
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    let Some(line) = head[..n].strip_prefix(b"#!") else {
        return Vec::new();
    };
    let line = String::from_utf8_lossy(line);
    let line = line.lines().next().unwrap_or("");
    let mut words = line.split_whitespace();
    let Some(first) = words.next() else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = Path::new(first).canonicalize().into_iter().collect();
    if first.ends_with("/env")
        && let Some(prog) = words.find(|w| !w.starts_with('-'))
    {
        out.extend(which(prog, path));
    }
    out
}

/// Whether `path` (a real path) is `dir` or beneath it (also beneath the
/// real path of `dir`).
fn inside(path: &Path, dir: &Path) -> bool {
    path.starts_with(dir) || dir.canonicalize().is_ok_and(|d| path.starts_with(d))
}

/// The sandbox for a plugin of `manifest` in `dir`, for project `root`,
/// with `granted` permissions and environment `env` (which gets `TMPDIR`).
pub(super) fn plan(
    name: &str,
    manifest: &PluginManifest,
    granted: &Permissions,
    dir: &Path,
    root: &Path,
    env: &mut BTreeMap<String, String>,
) -> Result<Plan, String> {
    let (data_dir, tmp_dir) = private_dirs(root, name)
        .map_err(|e| format!("cannot create its private directories: {e}"))?;
    env.insert("TMPDIR".into(), tmp_dir.display().to_string());
    let path = env.get("PATH").cloned();
    let home = env.get("HOME").cloned();
    let mut argv = manifest.entry_point.clone();
    let mut spec = Spec {
        network: !granted.network.is_empty(),
        landlock: sandbox::landlock_level().is_ok(),
        parent: std::process::id(),
        ..Spec::default()
    };
    let runtime = [
        "/usr",
        "/lib",
        "/lib64",
        "/lib32",
        "/bin",
        "/sbin",
        "/opt",
        "/etc/ld.so.cache",
        "/etc/ld.so.conf",
        "/etc/ld.so.conf.d",
        "/etc/localtime",
        "/etc/passwd",
        "/etc/group",
        "/etc/nsswitch.conf",
        "/etc/hosts",
        "/etc/resolv.conf",
        "/etc/host.conf",
        "/etc/gai.conf",
        "/etc/ssl",
        "/etc/ca-certificates",
        "/etc/pki",
        "/etc/gitconfig",
        "/etc/mime.types",
        "/dev/urandom",
        "/dev/random",
        "/dev/zero",
        "/proc/self",
        "/sys/kernel/mm/transparent_hugepage",
    ];
    spec.read.extend(runtime.iter().map(PathBuf::from));
    spec.read.push(dir.to_owned());
    spec.read.push(root.to_owned());
    spec.write.push("/dev/null".into());
    spec.write.push(data_dir.clone());
    spec.write.push(tmp_dir.clone());
    // The ELF loader: without its execute right, no dynamic program runs.
    spec.exec.extend(
        ["/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1"]
            .iter()
            .filter_map(|p| Path::new(p).canonicalize().ok()),
    );
    // The entry point's program, behind shims.
    let Some(first) = argv.first().cloned() else {
        return Err("its `entry_point` is empty".into());
    };
    // A relative program, or one found through a relative `PATH` entry, is
    // the plugin's own file: never probed, it runs as-is in the sandbox.
    let (program, relative) = match if first.contains('/') {
        let relative = !first.starts_with('/');
        dir.join(&first).canonicalize().ok().map(|p| (p, relative))
    } else {
        which_entry(&first, path.as_deref())
    } {
        Some((p, relative)) => (Some(p), relative),
        None => (None, true),
    };
    if let Some(program) = program {
        let base = Path::new(&first)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("");
        let own = relative || inside(&program, dir) || inside(&program, root);
        if base.starts_with("python")
            && !own
            && let Some((exe, prefix)) = python(&program, env)
        {
            spec.exec.push(exe.clone());
            spec.read.push(prefix);
            argv[0] = exe.display().to_string();
        } else {
            spec.exec.extend(shebang(&program, path.as_deref()));
            spec.exec.push(program);
        }
    }
    // Files the entry point names (a script outside the plugin's dir):
    // their directory, read-only.
    for arg in &argv[1..] {
        let p = dir.join(arg);
        if p.is_file()
            && let Some(parent) = p
                .canonicalize()
                .ok()
                .and_then(|p| p.parent().map(Path::to_owned))
        {
            spec.read.push(parent);
        }
    }
    for cmd in &granted.process {
        if let Some(p) = which(cmd, path.as_deref()) {
            spec.exec.extend(shebang(&p, path.as_deref()));
            spec.exec.push(p);
        }
        // git runs its helpers from its exec path. The user's git
        // configuration is not given with it: a plugin running git
        // declares `read:~/.gitconfig` and `read:~/.config/git`, so the
        // user consents to it (and can deny it).
        // (`cmd` may be the absolute path resolved when it was granted.)
        if cmd == "git" || cmd.ends_with("/git") {
            spec.exec.push("/usr/lib/git-core".into());
            spec.exec.push("/usr/libexec/git-core".into());
            spec.exec.push("/usr/local/libexec/git-core".into());
        }
    }
    for entry in &granted.filesystem {
        let (write, p) = granted_path(entry, root, dir, home.as_deref());
        if write {
            spec.write.push(p);
        } else {
            spec.read.push(p);
        }
    }
    Ok(Plan {
        argv,
        spec,
        data_dir,
        tmp_dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_granted_path_is_relative_to_the_project_root_or_home() {
        let (root, plugin) = (Path::new("/p"), Path::new("/q"));
        let at = |e| granted_path(e, root, plugin, Some("/h"));
        assert_eq!(at("out"), (true, "/p/out".into()));
        assert_eq!(at("read:docs"), (false, "/p/docs".into()));
        assert_eq!(at("write:/abs"), (true, "/abs".into()));
        assert_eq!(at("~/.cache/x"), (true, "/h/.cache/x".into()));
        assert_eq!(at("read:@plugin/../sdk"), (false, "/q/../sdk".into()));
    }
}
