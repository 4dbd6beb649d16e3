//! Permissions: what an update asks for beyond what is granted, and the
//! environment a plugin process is given (from its effective set, see
//! [`super::grants::effective`]).

use std::collections::BTreeMap;
use taskrush_protocol::paths::ENV_SOCKET;

use taskrush_protocol::plugin as wire;

pub(super) fn refused_message(name: &str, more: &str) -> String {
    format!(
        "its new version asks for more permissions ({more}) and was not started; the running version keeps serving. To grant them, run `taskrush plugin grant {name}`; or revert the manifest's `permissions`"
    )
}

/// The environment of a plugin process: what its effective environment
/// permission names, from the client's environment, plus what any program
/// needs to run (`PATH`, `HOME`, `LANG`, `LC_*`, `TMPDIR`) and `TASKRUSH_*`
/// but `TASKRUSH_SOCKET` (a plugin never sees the daemon's socket).
pub(super) fn plugin_env(
    client: &BTreeMap<String, String>,
    effective: &wire::Permissions,
) -> BTreeMap<String, String> {
    client
        .iter()
        .filter(|(k, _)| {
            matches!(k.as_str(), "PATH" | "HOME" | "LANG" | "TMPDIR")
                || k.starts_with("LC_")
                // Never the daemon's socket: a plugin reaches the host
                // through its own stdio only.
                || (k.starts_with("TASKRUSH_") && k.as_str() != ENV_SOCKET)
                || effective.environment.contains(k)
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plugin_environment_holds_only_granted_and_basic_variables() {
        let manifest: wire::PluginManifest = toml::from_str(
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
        let env = plugin_env(&client, &manifest.permissions);
        let keys: Vec<&str> = env.keys().map(String::as_str).collect();
        assert_eq!(keys, ["HOME", "LANG", "LC_ALL", "PATH", "TMPDIR", "TOKEN"]);
    }
}
