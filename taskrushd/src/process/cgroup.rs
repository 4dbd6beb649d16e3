//! A cgroup v2 per plugin process (Linux), for its `memory.max` and
//! `pids.max`, where the daemon's own cgroup can hand those controllers
//! down.
//!
//! Found once ([`base`]): the daemon's cgroup (`0::PATH` in
//! `/proc/self/cgroup`, under the `cgroup2` mount of
//! `/proc/self/mountinfo`) must list `memory` and `pids` in
//! `cgroup.controllers` and be writable. A child cgroup only gets them
//! when they are in the parent's `cgroup.subtree_control`, which a cgroup
//! holding processes cannot enable (the "no internal processes" rule,
//! except at the root): when the daemon is alone in its cgroup (started in
//! a delegated cgroup of its own, e.g. `systemd-run --user --scope -p
//! Delegate=yes`), it moves itself into a `daemon` leaf and enables them;
//! when others share its cgroup, nothing is done and the reason is
//! reported. Each plugin gets `taskrush-<daemon pid>-<name>-<n>` beside
//! it ([`create`]), which the sandbox helper joins (writing `0` to
//! `cgroup.procs`) before it execs the plugin, and which is emptied
//! (`cgroup.kill`) and removed once the plugin is reaped ([`remove`]).
//!
//! Nothing here uses cgroup v1: a hybrid host (v1 `memory`/`pids`, a v2
//! hierarchy without them) reports why the limits are not enforced.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

const WANTED: [&str; 2] = ["memory", "pids"];

/// The cgroup the plugins' cgroups are made in, or why there is none.
pub(crate) fn base() -> Result<PathBuf, String> {
    static BASE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BASE.get_or_init(|| {
        let read =
            |p: &str| std::fs::read_to_string(p).map_err(|e| format!("cannot read `{p}`: {e}"));
        let cgroups = read("/proc/self/cgroup")?;
        let mounts = read("/proc/self/mountinfo")?;
        let dir = locate(&cgroups, &mounts)?;
        prepare(&dir, &cgroups, std::process::id())
    })
    .clone()
}

/// The directory of this process's cgroup v2.
fn locate(cgroups: &str, mountinfo: &str) -> Result<PathBuf, String> {
    let Some(path) = cgroups.lines().find_map(|l| l.strip_prefix("0::")) else {
        return Err("no cgroup v2 hierarchy (cgroup v1 only)".into());
    };
    let mount = mountinfo.lines().find_map(|l| {
        let (fields, fs) = l.split_once(" - ")?;
        if fs.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let f: Vec<&str> = fields.split_whitespace().collect();
        Some((f.get(3).copied()?, f.get(4).copied()?))
    });
    let Some((root, point)) = mount else {
        return Err("cgroup v2 is not mounted".into());
    };
    let rel = match path.strip_prefix(root) {
        Some(rest) if root != "/" => rest,
        _ => path,
    };
    Ok(Path::new(point).join(rel.trim_start_matches('/')))
}

fn words(dir: &Path, file: &str) -> Result<Vec<String>, String> {
    let p = dir.join(file);
    std::fs::read_to_string(&p)
        .map(|s| s.split_whitespace().map(str::to_owned).collect())
        .map_err(|e| format!("cannot read `{}`: {e}", p.display()))
}

/// Check the controllers of `dir` and enable them for its children.
fn prepare(dir: &Path, cgroups: &str, me: u32) -> Result<PathBuf, String> {
    let have = words(dir, "cgroup.controllers")?;
    let missing: Vec<&str> = WANTED
        .into_iter()
        .filter(|c| !have.iter().any(|h| h == c))
        .collect();
    if !missing.is_empty() {
        let v1 = cgroups.lines().any(|l| {
            l.split(':')
                .nth(1)
                .is_some_and(|c| c.split(',').any(|c| missing.contains(&c)))
        });
        return Err(if v1 {
            format!(
                "cgroup v2 has no `{}` controller here: it is bound to cgroup v1 (hybrid hierarchy)",
                missing.join("`/`")
            )
        } else {
            format!(
                "the daemon's cgroup `{}` has no `{}` controller (not delegated to it)",
                dir.display(),
                missing.join("`/`")
            )
        });
    }
    let writable = rustix::fs::access(dir, rustix::fs::Access::WRITE_OK).is_ok();
    if !writable {
        return Err(format!(
            "the daemon's cgroup `{}` is not writable (not delegated to it)",
            dir.display()
        ));
    }
    let enabled = words(dir, "cgroup.subtree_control")?;
    if WANTED.iter().all(|c| enabled.iter().any(|e| e == c)) {
        return Ok(dir.to_owned());
    }
    let others = words(dir, "cgroup.procs")?
        .iter()
        .any(|p| *p != me.to_string());
    if others {
        return Err(format!(
            "the daemon's cgroup `{}` holds other processes, so it cannot hand `memory`/`pids` to plugins (start the daemon in a delegated cgroup of its own)",
            dir.display()
        ));
    }
    let leaf = dir.join("daemon");
    let step = |what: &str, r: std::io::Result<()>| {
        r.map_err(|e| format!("cannot {what} in `{}`: {e}", dir.display()))
    };
    if !leaf.is_dir() {
        step("make the `daemon` leaf", std::fs::create_dir(&leaf))?;
    }
    step(
        "move the daemon into its leaf",
        std::fs::write(leaf.join("cgroup.procs"), "0"),
    )?;
    step(
        "enable `memory` and `pids`",
        std::fs::write(dir.join("cgroup.subtree_control"), "+memory +pids"),
    )?;
    Ok(dir.to_owned())
}

/// A new cgroup for plugin `name` under [`base`], with its limits
/// (`None`: `max`).
pub(crate) fn create(
    name: &str,
    memory: Option<u64>,
    pids: Option<u64>,
) -> Result<PathBuf, String> {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let base = base()?;
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let dir = base.join(format!(
        "taskrush-{}-{safe}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let max = |v: Option<u64>| v.map_or_else(|| "max".to_owned(), |v| v.to_string());
    let made = std::fs::create_dir(&dir)
        .and_then(|()| std::fs::write(dir.join("memory.max"), max(memory)))
        .and_then(|()| std::fs::write(dir.join("pids.max"), max(pids)));
    if let Err(e) = made {
        let _ = std::fs::remove_dir(&dir);
        return Err(format!("cannot set up the cgroup `{}`: {e}", dir.display()));
    }
    // No swapping around `memory.max` (absent without swap accounting).
    if memory.is_some() {
        let _ = std::fs::write(dir.join("memory.swap.max"), "0");
    }
    Ok(dir)
}

/// Empty and remove a plugin's cgroup (its process was reaped); its peak
/// memory (`memory.peak`, KiB) when the kernel keeps one.
pub(crate) async fn remove(dir: &Path) -> Option<u64> {
    let _ = std::fs::write(dir.join("cgroup.kill"), "1");
    let peak = std::fs::read_to_string(dir.join("memory.peak"))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(|b| b / 1024);
    // Killed processes leave the cgroup as they exit: a bounded wait.
    for _ in 0..50 {
        match std::fs::remove_dir(dir) {
            Ok(()) => return peak,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return peak,
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
    tracing::warn!("cannot remove the plugin cgroup `{}`", dir.display());
    peak
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_CGROUP: &str =
        "12:pids:/process_api/x\n4:memory:/process_api/x\n1:name=systemd:/\n0::/\n";
    const MOUNTS: &str = "35 25 0:30 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw\n\
                          36 25 0:31 / /sys/fs/cgroup/memory rw shared:11 - cgroup cgroup rw,memory\n";

    fn fake(dir: &Path, controllers: &str, subtree: &str, procs: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("cgroup.controllers"), controllers).unwrap();
        std::fs::write(dir.join("cgroup.subtree_control"), subtree).unwrap();
        std::fs::write(dir.join("cgroup.procs"), procs).unwrap();
    }

    #[test]
    fn the_cgroup_v2_directory_comes_from_the_mount_and_the_path() {
        assert_eq!(
            locate("0::/user.slice/a.scope\n", MOUNTS).unwrap(),
            Path::new("/sys/fs/cgroup/unified/user.slice/a.scope")
        );
        assert_eq!(
            locate("4:memory:/x\n", MOUNTS).unwrap_err(),
            "no cgroup v2 hierarchy (cgroup v1 only)"
        );
        assert_eq!(
            locate("0::/\n", "1 2 0:1 / /proc rw - proc proc rw\n").unwrap_err(),
            "cgroup v2 is not mounted"
        );
    }

    #[test]
    fn a_hybrid_host_says_its_controllers_are_bound_to_v1() {
        let t = tempfile::tempdir().unwrap();
        fake(t.path(), "hugetlb\n", "", "1\n");
        assert_eq!(
            prepare(t.path(), HYBRID_CGROUP, 1).unwrap_err(),
            "cgroup v2 has no `memory`/`pids` controller here: it is bound to cgroup v1 (hybrid hierarchy)"
        );
    }

    #[test]
    fn a_shared_cgroup_is_left_alone_and_an_enabled_one_is_used() {
        let t = tempfile::tempdir().unwrap();
        fake(t.path(), "cpu memory pids\n", "cpu\n", "7\n8\n");
        let e = prepare(t.path(), "0::/x\n", 7).unwrap_err();
        assert!(e.contains("holds other processes"), "{e}");
        fake(t.path(), "cpu memory pids\n", "memory pids\n", "7\n8\n");
        assert_eq!(prepare(t.path(), "0::/x\n", 7).unwrap(), t.path());
    }
}
