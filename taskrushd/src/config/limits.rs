//! `limits:` of a plugin entry in the `.rush` file: the resources one
//! plugin process (with what it starts) may use.
//!
//! ```yaml
//! plugins:
//!   - name: security-scanner
//!     limits: {memory: 512M, processes: 64, open_files: 4096}
//! ```
//!
//! Every key is optional; an absent key keeps its default. How each is
//! enforced (and reported) is the plugin host's business
//! (`plugin/limits.rs`).

use serde_json::Value;

/// The keys of `limits:`.
pub(crate) const LIMIT_KEYS: &[&str] = &["memory", "processes", "open_files"];

/// Default `open_files` (soft and hard `RLIMIT_NOFILE`).
pub(crate) const DEFAULT_OPEN_FILES: u64 = 1024;
/// Default `memory` (cgroup v2 `memory.max`): 1 GiB.
pub(crate) const DEFAULT_MEMORY: u64 = 1 << 30;
/// Default `processes` (cgroup v2 `pids.max`; threads count too).
pub(crate) const DEFAULT_PROCESSES: u64 = 256;

/// The resource limits of one plugin; `None` is `unlimited`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PluginLimits {
    /// Bytes of memory for the plugin's cgroup (`memory.max`).
    pub(crate) memory: Option<u64>,
    /// Processes and threads in the plugin's cgroup (`pids.max`).
    pub(crate) processes: Option<u64>,
    /// Open file descriptors per process (`RLIMIT_NOFILE`, soft = hard).
    pub(crate) open_files: u64,
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits {
            memory: Some(DEFAULT_MEMORY),
            processes: Some(DEFAULT_PROCESSES),
            open_files: DEFAULT_OPEN_FILES,
        }
    }
}

/// An error in `limits:`: the message and a hint.
pub(crate) type LimitError = (String, Option<String>);

impl PluginLimits {
    /// `limits:` of plugin `plugin` (a mapping; `null` keeps the defaults).
    pub(crate) fn from_json(v: &Value, plugin: &str) -> Result<PluginLimits, LimitError> {
        let mut out = PluginLimits::default();
        let map = match v {
            Value::Null => return Ok(out),
            Value::Object(m) => m,
            _ => {
                return Err((
                    format!("`limits` of plugin `{plugin}` must be a mapping"),
                    Some(
                        "write it like `limits: {memory: 512M, processes: 64, open_files: 1024}`"
                            .into(),
                    ),
                ));
            }
        };
        for (key, value) in map {
            let what = format!("`limits.{key}` of plugin `{plugin}`");
            match key.as_str() {
                "memory" => out.memory = size(value, &what)?,
                "processes" => out.processes = count(value, &what, 1, u64::MAX, true)?,
                "open_files" => {
                    out.open_files =
                        count(value, &what, 16, 1 << 20, false)?.unwrap_or(DEFAULT_OPEN_FILES)
                }
                _ => {
                    return Err((
                        format!("unknown key `{key}` in `limits` of plugin `{plugin}`"),
                        Some(format!("the keys are `{}`", LIMIT_KEYS.join("`, `"))),
                    ));
                }
            }
        }
        Ok(out)
    }
}

fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => format!("`{s}`"),
        other => format!("`{other}`"),
    }
}

/// A whole number in `min..=max`, or `unlimited` when allowed.
fn count(
    v: &Value,
    what: &str,
    min: u64,
    max: u64,
    unlimited: bool,
) -> Result<Option<u64>, LimitError> {
    if unlimited && v.as_str() == Some("unlimited") {
        return Ok(None);
    }
    match v.as_u64() {
        Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
        _ => Err((
            format!(
                "{what} must be a whole number from {min}{}, found {}",
                if max == u64::MAX {
                    String::new()
                } else {
                    format!(" to {max}")
                },
                shown(v)
            ),
            unlimited.then(|| "or `unlimited`".to_owned()),
        )),
    }
}

/// Bytes: a number, or one with `K`, `M`, `G` (powers of 1024; `KiB`,
/// `MB`… read alike), or `unlimited`. At least 1 MiB.
fn size(v: &Value, what: &str) -> Result<Option<u64>, LimitError> {
    let bad = || {
        (
            format!("{what} must be a size of at least 1M, found {}", shown(v)),
            Some("write it like `512M`, `2G`, a number of bytes, or `unlimited`".to_owned()),
        )
    };
    let bytes = match v {
        Value::Number(n) => n.as_u64().ok_or_else(bad)?,
        Value::String(s) if s.trim() == "unlimited" => return Ok(None),
        Value::String(s) => {
            let t = s.trim();
            let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
            let (num, unit) = t.split_at(split);
            let n: u64 = num.parse().map_err(|_| bad())?;
            let shift = match unit.trim().to_ascii_uppercase().as_str() {
                "" | "B" => 0,
                "K" | "KB" | "KIB" => 10,
                "M" | "MB" | "MIB" => 20,
                "G" | "GB" | "GIB" => 30,
                "T" | "TB" | "TIB" => 40,
                _ => return Err(bad()),
            };
            n.checked_mul(1u64 << shift).ok_or_else(bad)?
        }
        _ => return Err(bad()),
    };
    if bytes < 1 << 20 {
        return Err(bad());
    }
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn limits_take_sizes_counts_and_unlimited_and_keep_defaults() {
        let l = PluginLimits::from_json(&json!({"memory": "512M", "processes": 64}), "p").unwrap();
        assert_eq!(l.memory, Some(512 << 20));
        assert_eq!(l.processes, Some(64));
        assert_eq!(l.open_files, DEFAULT_OPEN_FILES);
        let l = PluginLimits::from_json(
            &json!({"memory": "unlimited", "processes": "unlimited", "open_files": 4096}),
            "p",
        )
        .unwrap();
        assert_eq!((l.memory, l.processes, l.open_files), (None, None, 4096));
        assert_eq!(
            PluginLimits::from_json(&Value::Null, "p").unwrap(),
            PluginLimits::default()
        );
        assert_eq!(
            PluginLimits::from_json(&json!({"memory": 2147483648u64}), "p")
                .unwrap()
                .memory,
            Some(2 << 30)
        );
    }

    #[test]
    fn wrong_limits_are_named() {
        let err = |v| PluginLimits::from_json(&v, "p").unwrap_err().0;
        assert_eq!(
            err(json!({"memory": "lots"})),
            "`limits.memory` of plugin `p` must be a size of at least 1M, found `lots`"
        );
        assert_eq!(
            err(json!({"open_files": 3})),
            "`limits.open_files` of plugin `p` must be a whole number from 16 to 1048576, found `3`"
        );
        assert_eq!(
            err(json!({"cpu": 1})),
            "unknown key `cpu` in `limits` of plugin `p`"
        );
        assert_eq!(err(json!([1])), "`limits` of plugin `p` must be a mapping");
    }
}
