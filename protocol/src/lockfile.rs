//! `.rush.lock`: what a project's plugins resolved to (written by `plugin
//! install --from-rush` and `plugin update`, meant to be committed), and
//! the answers of `plugin_sync`, `plugin_update` and `plugin_lock_check`.
//! `docs/plugins.md` ("The lock file") describes the format for outsiders.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::plugin::{Permissions, PluginType};

/// The lock file's name, beside the `.rush` file.
pub const LOCK_FILE: &str = ".rush.lock";
/// Format version of the lock file.
pub const LOCK_FORMAT: u32 = 1;

/// The whole `.rush.lock` (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockFile {
    /// Always [`LOCK_FORMAT`].
    pub format: u32,
    /// Says the file is generated.
    #[serde(default)]
    pub generated: String,
    /// Per plugin name.
    #[serde(default)]
    pub plugins: BTreeMap<String, LockedPlugin>,
}

/// One plugin of the lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockedPlugin {
    /// The `.rush` entry's `version:` requirement when it was locked (`*`
    /// without one).
    pub requirement: String,
    /// The version resolved.
    pub version: String,
    /// The registry's name in the user config.
    pub registry: String,
    pub kind: PluginType,
    /// The plugin protocol major it speaks.
    pub protocol: u32,
    /// Key id of the publisher's key.
    pub signer: String,
    /// sha256 of the declared permissions (canonical JSON); the grants are
    /// per user and never in the lock.
    pub permissions_sha256: String,
    /// Per platform (`any`, `linux-x86_64`, …): where the artifact is and
    /// its sha256. Adding a platform never changes another's entry.
    pub platforms: BTreeMap<String, LockedArtifact>,
}

/// One platform's artifact of a locked plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockedArtifact {
    pub url: String,
    pub sha256: String,
}

/// What `plugin_sync` / `plugin_update` did to one plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockChange {
    pub name: String,
    /// The version locked before (none: it was not in the lock).
    pub from: Option<String>,
    pub to: String,
    /// Whether it was downloaded and installed (false: already installed).
    pub installed: bool,
    /// Permissions the new version declares that the old one did not:
    /// they need consent (`taskrush plugin grant NAME`) at the next start.
    #[serde(default)]
    pub permissions_added: Permissions,
    /// Permissions the old version declared that the new one does not.
    #[serde(default)]
    pub permissions_removed: Permissions,
}

/// The answer of `plugin_sync` and `plugin_update`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockReport {
    /// The lock file (absolute).
    pub lock: String,
    /// One entry per plugin of the project resolved from a registry.
    pub changes: Vec<LockChange>,
    /// Whether the lock file was written.
    pub written: bool,
}

/// The answer of `plugin_lock_check`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockCheck {
    pub lock: String,
    /// One line per stale or missing entry; empty when the lock is fresh.
    pub stale: Vec<String>,
}
