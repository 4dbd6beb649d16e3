//! Permissions: what a plugin's manifest asks for, what the user granted,
//! and the environment a plugin process is given.

use std::collections::BTreeMap;
use taskrush_protocol::paths::ENV_SOCKET;

use taskrush_protocol::plugin::{self as wire, PluginManifest};

/// What `new` asks for beyond `granted`, as "`network` `x`, …".
pub(super) fn widened(granted: &wire::Permissions, new: &wire::Permissions) -> Option<String> {
    let mut more = Vec::new();
    for (kind, old, new) in [
        ("filesystem", &granted.filesystem, &new.filesystem),
        ("network", &granted.network, &new.network),
        ("environment", &granted.environment, &new.environment),
        ("process", &granted.process, &new.process),
    ] {
        for item in new {
            if !old.contains(item) {
                more.push(format!("{kind} `{item}`"));
            }
        }
    }
    (!more.is_empty()).then(|| more.join(", "))
}

pub(super) fn refused_message(name: &str, more: &str) -> String {
    format!(
        "its new version asks for more permissions ({more}) and was not started; the running version keeps serving. To grant them, run `taskrush plugin restart {name}` (the grant step); or revert the manifest's `permissions`"
    )
}

/// The environment of a plugin process: what its manifest's environment
/// permission names, from the client's environment, plus what any program
/// needs to run (`PATH`, `HOME`, `LANG`, `LC_*`, `TMPDIR`) and `TASKRUSH_*`
/// but `TASKRUSH_SOCKET` (a plugin never sees the daemon's socket).
pub(super) fn plugin_env(
    client: &BTreeMap<String, String>,
    manifest: &PluginManifest,
) -> BTreeMap<String, String> {
    client
        .iter()
        .filter(|(k, _)| {
            matches!(k.as_str(), "PATH" | "HOME" | "LANG" | "TMPDIR")
                || k.starts_with("LC_")
                // Never the daemon's socket: a plugin reaches the host
                // through its own stdio only.
                || (k.starts_with("TASKRUSH_") && k.as_str() != ENV_SOCKET)
                || manifest.permissions.environment.contains(k)
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plugin_environment_holds_only_granted_and_basic_variables() {
        let manifest: PluginManifest = toml::from_str(
            "name = \"p\"\nversion = \"1.0.0\"\nentry_point = [\"x\"]\ntaskrush_version = \"*\"\n[permissions]\nenvironment = [\"TOKEN\"]\n",
        )
        .unwrap();
        let client: BTreeMap<String, String> = [
            "PATH",
            "HOME",
            "LANG",
            "LC_ALL",
            "TMPDIR",
            "TASKRUSH_SOCKET",
            "TOKEN",
            "SECRET",
            "USER",
        ]
        .iter()
        .map(|k| (k.to_string(), "v".to_string()))
        .collect();
        let env = plugin_env(&client, &manifest);
        let keys: Vec<&str> = env.keys().map(String::as_str).collect();
        assert_eq!(keys, ["HOME", "LANG", "LC_ALL", "PATH", "TMPDIR", "TOKEN"]);
    }

    fn perms(filesystem: &[&str], network: &[&str], environment: &[&str]) -> wire::Permissions {
        let v = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect();
        wire::Permissions {
            filesystem: v(filesystem),
            network: v(network),
            environment: v(environment),
            process: Vec::new(),
        }
    }

    #[test]
    fn asking_for_less_or_the_same_widens_nothing() {
        let granted = perms(&["read:."], &["hooks.slack.com"], &["TOKEN"]);
        assert_eq!(widened(&granted, &granted), None);
        assert_eq!(widened(&granted, &perms(&[], &[], &["TOKEN"])), None);
    }

    #[test]
    fn what_is_asked_beyond_the_grant_is_named_kind_by_kind() {
        let granted = perms(&["read:."], &[], &["TOKEN"]);
        let new = perms(
            &["read:.", "write:."],
            &["example.com"],
            &["TOKEN", "SECRET"],
        );
        assert_eq!(
            widened(&granted, &new).as_deref(),
            Some("filesystem `write:.`, network `example.com`, environment `SECRET`")
        );
    }
}
