//! Resource limits of an external plugin (the `.rush` entry's `limits:`)
//! and the level achieved per limit, reported beside the permission kinds
//! but never counted by `enforcement = "required"` (see
//! [`super::enforce::refusal`]): most hosts cannot enforce `memory` and
//! `processes`, and a required plugin must not be refused for that.
//!
//! - `open_files`: `RLIMIT_NOFILE` (soft and hard), set by the sandbox
//!   helper (Linux).
//! - `memory`, `processes`: cgroup v2 `memory.max` and `pids.max` of a
//!   cgroup per plugin process, where one can be made
//!   ([`crate::process::cgroup`]); else `not enforced: why`.
//!
//! `RLIMIT_NPROC` is not used: it counts every process of the user (the
//! daemon's tasks too) and does not apply to root. `RLIMIT_AS` is not
//! used: it breaks runtimes that reserve large address ranges (Node's
//! `fetch`, WebAssembly engines, Go).

use std::collections::BTreeMap;

use taskrush_protocol::daemon::LimitStatus;

use super::enforce::ENFORCED;
use crate::config::limits::PluginLimits;
use crate::process::{cgroup, sandbox::Spec};

/// What would be achieved for `limits` on this host (no cgroup is made).
pub(super) fn levels(limits: &PluginLimits) -> BTreeMap<String, LimitStatus> {
    if super::enforce::off() {
        return switched_off(limits);
    }
    let cg = cgroup::base().map(|_| ());
    report(limits, &cg, &cg)
}

/// Every limit `not enforced` (the sandbox is switched off).
fn switched_off(limits: &PluginLimits) -> BTreeMap<String, LimitStatus> {
    let mut r = report(limits, &Err(String::new()), &Err(String::new()));
    for l in r.values_mut() {
        l.level = super::enforce::off_level();
    }
    r
}

fn report(
    limits: &PluginLimits,
    memory: &Result<(), String>,
    processes: &Result<(), String>,
) -> BTreeMap<String, LimitStatus> {
    let level = |value: Option<u64>, got: &Result<(), String>, key: &str| LimitStatus {
        value,
        level: match (value, got) {
            (None, _) => format!("not enforced: `{key}: unlimited` in the `.rush` entry"),
            (Some(_), Ok(())) => ENFORCED.to_owned(),
            (Some(_), Err(why)) => format!("not enforced: {why}"),
        },
    };
    let files = LimitStatus {
        value: Some(limits.open_files),
        level: if cfg!(target_os = "linux") {
            ENFORCED.to_owned()
        } else {
            "not enforced: no sandbox helper on this operating system (Linux only)".to_owned()
        },
    };
    [
        ("memory", level(limits.memory, memory, "memory")),
        ("processes", level(limits.processes, processes, "processes")),
        ("open_files", files),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Put `limits` into the sandbox `spec` of plugin `name`: the open-file
/// limit, and a cgroup with `memory.max`/`pids.max` when one can be made.
/// The levels achieved.
pub(super) fn apply(
    name: &str,
    limits: &PluginLimits,
    spec: &mut Spec,
) -> BTreeMap<String, LimitStatus> {
    if super::enforce::off() {
        return switched_off(limits);
    }
    spec.open_files = Some(limits.open_files);
    let got = if limits.memory.is_none() && limits.processes.is_none() {
        Ok(())
    } else {
        cgroup::create(name, limits.memory, limits.processes).map(|dir| {
            spec.cgroup = Some(dir);
        })
    };
    report(limits, &got, &got)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_says_why_it_is_not_enforced() {
        let l = PluginLimits {
            processes: None,
            ..PluginLimits::default()
        };
        let r = report(&l, &Err("no cgroup v2".into()), &Err("no cgroup v2".into()));
        assert_eq!(r["memory"].level, "not enforced: no cgroup v2");
        assert_eq!(r["memory"].value, Some(1 << 30));
        assert_eq!(
            r["processes"].level,
            "not enforced: `processes: unlimited` in the `.rush` entry"
        );
        assert_eq!(r["open_files"].value, Some(1024));
    }
}
