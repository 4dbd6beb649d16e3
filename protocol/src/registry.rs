//! Plugin registries: the static files a registry is made of (read by the
//! daemon, written by `plugin publish`) and the answers of the
//! `plugin_search`, `plugin_install`, `plugin_installed`, `plugin_remove`
//! and `plugin_publish` methods. `docs/plugins.md` ("Registries")
//! describes the formats for outsiders.
//!
//! A registry is a directory served as it is (any HTTP(S) server, or
//! `file://`):
//!
//! ```text
//! snapshot.json            every file below with its sha256, an expiry, revoked key ids
//! snapshot.json.minisig    the registry key's minisign signature of snapshot.json
//! search.jsonl             one SearchEntry per plugin (name, description, latest version)
//! index/3/g/git            one IndexLine per published version (cargo's sparse-index paths)
//! artifacts/NAME/VERSION/… the archives (`.tar.gz`), `.wasm` or `.so` files
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::plugin::{Permissions, PluginType};

/// The prefix of an artifact signature's trusted comment.
pub const TRUSTED_COMMENT_PREFIX: &str = "taskrush-artifact";
/// The platform of an artifact that runs everywhere (WebAssembly, scripts).
pub const ANY_PLATFORM: &str = "any";
/// The snapshot's file name at the registry's root.
pub const SNAPSHOT: &str = "snapshot.json";
/// The search list's file name at the registry's root.
pub const SEARCH: &str = "search.jsonl";
/// Format version of the snapshot.
pub const FORMAT: u32 = 1;

/// One published version of a plugin: one JSON line of its index file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexLine {
    pub name: String,
    pub vers: String,
    pub kind: PluginType,
    /// The plugin protocol majors the plugin speaks.
    #[serde(default)]
    pub protocols: Vec<u32>,
    pub artifacts: Vec<Artifact>,
    /// The permissions its manifest declares (shown at install, diffed at
    /// update).
    #[serde(default)]
    pub permissions: Permissions,
    /// Key id (16 hex digits, as minisign prints it) of the publisher's key.
    pub signer: String,
    #[serde(default)]
    pub yanked: bool,
    #[serde(default)]
    pub description: String,
}

/// One file of a published version, for one platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// `any`, or `OS-ARCH` as Rust names them (`linux-x86_64`).
    pub platform: String,
    /// Relative to the registry's root, or absolute (`https://…`).
    pub url: String,
    pub sha256: String,
    pub size: u64,
    /// Canonical hash of the unpacked tree (see [`trusted_comment`]).
    pub tree: String,
    /// The publisher's minisign signature of the artifact (the whole
    /// `.minisig` text), its trusted comment being [`trusted_comment`].
    pub signature: String,
}

/// The trusted comment an artifact's signature must carry, exactly.
pub fn trusted_comment(
    name: &str,
    version: &str,
    platform: &str,
    sha256: &str,
    tree: &str,
) -> String {
    format!(
        "{TRUSTED_COMMENT_PREFIX} name={name} version={version} platform={platform} sha256={sha256} tree={tree}"
    )
}

/// `snapshot.json`: signed by the registry key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub format: u32,
    /// Seconds since the Unix epoch after which the snapshot is refused.
    pub expires: u64,
    /// Every index file (path relative to the registry root, e.g.
    /// `index/3/g/git`) and `search.jsonl`, with its sha256.
    pub files: BTreeMap<String, String>,
    /// Key ids refused for any signature, whatever the user config pins.
    #[serde(default)]
    pub revoked: Vec<String>,
}

/// One line of `search.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchEntry {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The newest version not yanked.
    pub version: String,
}

/// The path of a plugin's index file, cargo's sparse-index layout:
/// `index/1/a`, `index/2/ab`, `index/3/a/abc`, `index/ab/cd/abcd…`.
pub fn index_path(name: &str) -> String {
    let n = name.to_ascii_lowercase();
    match n.len() {
        1 => format!("index/1/{n}"),
        2 => format!("index/2/{n}"),
        3 => format!("index/3/{}/{n}", &n[..1]),
        _ => format!("index/{}/{}/{n}", &n[..2], &n[2..4]),
    }
}

/// Whether `name` may be a plugin name in a registry: ASCII letters,
/// digits, `-` and `_`, at most 64 characters (so it is also a safe path
/// component).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A `plugin_search` hit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchHit {
    pub registry: String,
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub description: String,
}

/// `receipt.json` in an installed plugin's directory, and the answer of
/// `plugin_install` / an entry of `plugin_installed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub name: String,
    pub version: String,
    /// The registry's name from the user config, or `local`.
    pub registry: String,
    pub kind: PluginType,
    pub platform: String,
    /// Key id of the signature checked, or none for an unsigned local install.
    pub signer: Option<String>,
    /// sha256 of the artifact as downloaded.
    pub sha256: String,
    /// Canonical hash of the installed tree.
    pub tree: String,
    /// The signature checked (the `.minisig` text).
    pub signature: Option<String>,
    /// sha256 of the declared permissions (canonical JSON).
    pub permissions_sha256: String,
    #[serde(default)]
    pub permissions: Permissions,
    /// The installed directory.
    pub dir: String,
    /// When it was installed, RFC 3339.
    pub installed_at: String,
}

/// The answer of `plugin_remove`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removed {
    pub name: String,
    pub versions: Vec<String>,
}

/// The answer of `plugin_publish`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    pub name: String,
    pub version: String,
    /// The index file written, relative to the registry.
    pub index: String,
    pub artifacts: Vec<Artifact>,
    /// The key id that signed.
    pub signer: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_paths_follow_cargos_sparse_index() {
        assert_eq!(index_path("a"), "index/1/a");
        assert_eq!(index_path("ab"), "index/2/ab");
        assert_eq!(index_path("abc"), "index/3/a/abc");
        assert_eq!(index_path("Git-Hook"), "index/gi/t-/git-hook");
    }

    #[test]
    fn names_are_safe_path_components() {
        assert!(valid_name("git-hook_2"));
        assert!(!valid_name("../x"));
        assert!(!valid_name(""));
        assert!(!valid_name("a/b"));
    }
}
