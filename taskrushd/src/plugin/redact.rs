//! Secrets kept out of every sink (audit trail, daemon log, errors,
//! events, `daemon status`): one helper, used at the source.
//!
//! A value is secret when it comes from an environment variable or a
//! plugin `config` key whose name looks secret ([`DEFAULT_PATTERNS`], or
//! the comma-separated list in `$TASKRUSH_SECRET_NAMES`, which adds to
//! them), or from a `${VAR}` expansion in a plugin's `config`. Secret
//! values are remembered for the daemon's life and replaced by `***`
//! wherever [`scrub`] is applied; values shorter than [`MIN_SECRET`]
//! bytes are not remembered (they would blank out ordinary words).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, OnceLock};

/// What a secret is shown as.
pub(crate) const MASK: &str = "***";
/// Name fragments (case-insensitive) that make a variable or key secret.
pub(crate) const DEFAULT_PATTERNS: &[&str] = &["TOKEN", "SECRET", "PASSWORD", "KEY", "WEBHOOK"];
/// The environment variable adding name fragments.
pub(crate) const ENV_PATTERNS: &str = "TASKRUSH_SECRET_NAMES";
/// Shorter values are not remembered as secrets.
pub(crate) const MIN_SECRET: usize = 4;
/// Secrets remembered at most (for the daemon's life); past it new ones
/// are not masked, and the log says so once.
pub(crate) const MAX_SECRETS: usize = 4096;

fn patterns() -> &'static Vec<String> {
    static P: OnceLock<Vec<String>> = OnceLock::new();
    P.get_or_init(|| {
        let mut p: Vec<String> = DEFAULT_PATTERNS.iter().map(|s| (*s).to_owned()).collect();
        if let Ok(extra) = std::env::var(ENV_PATTERNS) {
            p.extend(
                extra
                    .split(',')
                    .map(|s| s.trim().to_ascii_uppercase())
                    .filter(|s| !s.is_empty()),
            );
        }
        p
    })
}

fn known() -> std::sync::MutexGuard<'static, BTreeSet<String>> {
    static K: OnceLock<Mutex<BTreeSet<String>>> = OnceLock::new();
    K.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// Whether a variable or `config` key of this name holds a secret.
pub(crate) fn is_secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    patterns().iter().any(|p| upper.contains(p.as_str()))
}

/// Remember `value` as a secret (from now on [`scrub`] masks it).
pub(crate) fn remember(value: &str) {
    if value.len() < MIN_SECRET {
        return;
    }
    let mut known = known();
    if known.len() < MAX_SECRETS {
        known.insert(value.to_owned());
    } else if !known.contains(value) {
        static TOLD: std::sync::Once = std::sync::Once::new();
        TOLD.call_once(|| {
            tracing::warn!("{MAX_SECRETS} secret values remembered: new ones are not masked (`taskrush daemon restart` forgets them)");
        });
    }
}

/// Remember the values of the secret-looking variables of `env`.
pub(crate) fn remember_env(env: &BTreeMap<String, String>) {
    for (k, v) in env {
        if is_secret_name(k) {
            remember(v);
        }
    }
}

/// Remember the string values under secret-looking keys of a plugin's
/// `config` (at any depth).
pub(crate) fn remember_config(value: &serde_json::Value) {
    fn walk(v: &serde_json::Value, secret: bool) {
        match v {
            serde_json::Value::String(s) if secret => remember(s),
            serde_json::Value::Array(items) => items.iter().for_each(|i| walk(i, secret)),
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    walk(v, secret || is_secret_name(k));
                }
            }
            _ => {}
        }
    }
    walk(value, false);
}

/// A plugin's `config` with `${VAR}` expanded from `env`, every expanded
/// value, every secret-looking variable of `env` and every value under a
/// secret-looking key remembered as a secret.
pub(crate) fn expand_config(
    value: &serde_json::Value,
    env: &BTreeMap<String, String>,
) -> Result<serde_json::Value, crate::config::expand::ExpandError> {
    remember_env(env);
    expand_config_in(value, env)
}

/// [`expand_config`] for an `env` whose secret-looking variables are
/// remembered already ([`remember_env`], once per run): only the expanded
/// values and the values under secret-looking keys are remembered.
pub(crate) fn expand_config_in(
    value: &serde_json::Value,
    env: &BTreeMap<String, String>,
) -> Result<serde_json::Value, crate::config::expand::ExpandError> {
    let expanded = crate::config::expand::expand_json(value, |k| {
        let v = env.get(k).cloned();
        if let Some(v) = &v {
            remember(v);
        }
        v
    })?;
    remember_config(&expanded);
    Ok(expanded)
}

/// `text` with every remembered secret replaced by [`MASK`].
pub(crate) fn scrub(text: &str) -> String {
    let known = known();
    let mut out = text.to_owned();
    // Longest first: a secret containing another is masked whole.
    let mut secrets: Vec<&String> = known.iter().filter(|s| out.contains(s.as_str())).collect();
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for s in secrets {
        out = out.replace(s.as_str(), MASK);
    }
    out
}

/// Command-line arguments as they may be shown: remembered secrets masked,
/// and the value of a flag whose name looks secret (`--token X`,
/// `--token=X`) masked whatever it is.
pub(crate) fn args(args: &[String]) -> Vec<String> {
    let flag = |a: &str| a.starts_with('-') && is_secret_name(a.trim_start_matches('-'));
    let mut out = Vec::with_capacity(args.len());
    let mut mask_next = false;
    for a in args {
        if mask_next {
            out.push(MASK.to_owned());
            mask_next = false;
        } else if let Some((name, _)) = a.split_once('=').filter(|(n, _)| flag(n)) {
            out.push(format!("{name}={MASK}"));
        } else {
            mask_next = flag(a);
            out.push(scrub(a));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_look_secret_are_recognised_whatever_their_case() {
        assert!(is_secret_name("GITHUB_TOKEN"));
        assert!(is_secret_name("slack_webhook_url"));
        assert!(is_secret_name("apiKey"));
        assert!(!is_secret_name("HOME"));
    }

    #[test]
    fn remembered_values_and_secret_flags_are_masked() {
        remember("hunter2-redact-test");
        assert_eq!(scrub("pw is hunter2-redact-test."), "pw is ***.");
        let shown = args(&[
            "--token".into(),
            "x1".into(),
            "--api-key=abc".into(),
            "plain".into(),
            "hunter2-redact-test".into(),
        ]);
        assert_eq!(shown, ["--token", "***", "--api-key=***", "plain", "***"]);
    }
}
