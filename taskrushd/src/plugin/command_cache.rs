//! The commands each plugin added at its last handshake, per project root
//! and plugin name: in memory, and in `plugin-commands.json` beside the
//! grants file (the user's state directory) so that a fresh daemon still
//! knows them. `taskrush --help`, completions, usage errors and finding
//! which plugin owns a command read this instead of starting plugins.
//!
//! It is a cache: a plugin updated since its last handshake may add other
//! commands; its next start (which a command of it causes) refreshes the
//! entry. Entries of plugins no longer declared are ignored by readers
//! (they only ask about declared plugins) and dropped oldest first beyond
//! [`MAX_PROJECTS`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Serialize};
use taskrush_protocol::plugin::PluginCommand;

use crate::config::whole_file::{self, ReadError};

/// The file, once the daemon named it (none in unit tests: memory only).
static PATH: OnceLock<PathBuf> = OnceLock::new();
/// The cache, read from the file on first use.
static CACHE: Mutex<Option<File>> = Mutex::new(None);
/// The most read of the file.
const MAX_BYTES: u64 = 4 * 1024 * 1024;
/// Projects kept; beyond, the least recently refreshed are dropped.
const MAX_PROJECTS: usize = 500;
/// Commands kept per plugin (a plugin's handshake is not trusted to be small).
const MAX_COMMANDS: usize = 200;

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct File {
    version: u32,
    /// Project root → its plugins.
    #[serde(default)]
    projects: BTreeMap<String, Project>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Project {
    /// Seconds since the epoch of the last refresh (for eviction).
    #[serde(default)]
    seen: u64,
    /// Plugin name → its commands at its last handshake.
    #[serde(default)]
    plugins: BTreeMap<String, Vec<PluginCommand>>,
}

/// Keep the cache in `path`.
pub(crate) fn open(path: &Path) {
    let _ = PATH.set(path.to_owned());
}

fn with<T>(f: impl FnOnce(&mut File) -> T) -> T {
    let mut guard = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    let file = guard.get_or_insert_with(|| PATH.get().map(|p| load(p)).unwrap_or_default());
    f(file)
}

/// The commands plugin `plugin` of project `root` added at its last
/// handshake; `None` when it never shook hands (as far as we know).
pub(super) fn get(root: &Path, plugin: &str) -> Option<Vec<PluginCommand>> {
    let root = root.display().to_string();
    with(|f| f.projects.get(&root)?.plugins.get(plugin).cloned())
}

/// Remember what plugin `plugin` of project `root` said at a handshake;
/// the file is rewritten when that changed.
pub(super) fn remember(root: &Path, plugin: &str, commands: &[PluginCommand]) {
    let root = root.display().to_string();
    let commands: Vec<PluginCommand> = commands.iter().take(MAX_COMMANDS).cloned().collect();
    let changed = with(|f| {
        let project = f.projects.entry(root).or_default();
        if project.plugins.get(plugin) == Some(&commands) {
            return None;
        }
        project.plugins.insert(plugin.to_owned(), commands);
        project.seen = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        bound(f);
        f.version = 1;
        Some(f.clone())
    });
    if let (Some(file), Some(path)) = (changed, PATH.get())
        && let Err(e) = store(path, &file)
    {
        tracing::warn!(
            "cannot write the plugin command cache `{}`: {e}",
            path.display()
        );
    }
}

/// Drop the least recently refreshed projects beyond [`MAX_PROJECTS`].
fn bound(f: &mut File) {
    while f.projects.len() > MAX_PROJECTS {
        let oldest = f
            .projects
            .iter()
            .min_by_key(|(_, p)| p.seen)
            .map(|(k, _)| k.clone());
        match oldest {
            Some(k) => f.projects.remove(&k),
            None => break,
        };
    }
}

fn load(path: &Path) -> File {
    let bytes = match whole_file::read_at_most(path, MAX_BYTES) {
        Ok(b) => b,
        Err(ReadError::NotFound) => return File::default(),
        Err(e) => {
            tracing::warn!(
                "the plugin command cache `{}` {}: ignored",
                path.display(),
                e.what()
            );
            return File::default();
        }
    };
    serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        tracing::warn!(
            "the plugin command cache `{}` is malformed ({e}): ignored",
            path.display()
        );
        File::default()
    })
}

/// Replace the file (private, atomic; not synced: it is a cache).
fn store(path: &Path, file: &File) -> std::io::Result<()> {
    let text = serde_json::to_vec_pretty(file).map_err(std::io::Error::other)?;
    whole_file::replace_private(path, &text, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(name: &str) -> PluginCommand {
        PluginCommand {
            name: name.into(),
            description: format!("does {name}"),
        }
    }

    #[test]
    fn what_a_handshake_said_is_remembered_per_project_and_plugin() {
        let root = Path::new("/tmp/command-cache-test/project");
        assert_eq!(get(root, "p"), None);
        remember(root, "p", &[cmd("greet")]);
        assert_eq!(get(root, "p"), Some(vec![cmd("greet")]));
        assert_eq!(get(root, "q"), None);
        assert_eq!(get(Path::new("/tmp/command-cache-test/other"), "p"), None);
        remember(root, "p", &[]);
        assert_eq!(get(root, "p"), Some(vec![]), "no commands is known too");
    }

    #[test]
    fn projects_and_commands_are_bounded() {
        let mut f = File::default();
        for i in 0..MAX_PROJECTS + 20 {
            f.projects.insert(
                format!("/p/{i}"),
                Project {
                    seen: i as u64,
                    plugins: BTreeMap::new(),
                },
            );
        }
        bound(&mut f);
        assert_eq!(f.projects.len(), MAX_PROJECTS);
        assert!(!f.projects.contains_key("/p/19"), "the oldest go first");
        assert!(f.projects.contains_key("/p/20"));
        let many: Vec<PluginCommand> = (0..MAX_COMMANDS + 5)
            .map(|i| cmd(&format!("c{i}")))
            .collect();
        let root = Path::new("/tmp/command-cache-bound/many");
        remember(root, "p", &many);
        assert_eq!(get(root, "p").map(|c| c.len()), Some(MAX_COMMANDS));
    }

    #[test]
    fn the_file_round_trips_and_a_malformed_one_is_ignored() {
        let dir = std::env::temp_dir().join(format!("tr-cmd-cache-{}", std::process::id()));
        let path = dir.join("plugin-commands.json");
        let mut file = File {
            version: 1,
            ..File::default()
        };
        file.projects.insert(
            "/p".into(),
            Project {
                seen: 1,
                plugins: [("hello".to_owned(), vec![cmd("greet")])].into(),
            },
        );
        store(&path, &file).expect("store");
        let back = load(&path);
        assert_eq!(back.projects["/p"].plugins["hello"], vec![cmd("greet")]);
        std::fs::write(&path, "{not json").expect("write");
        assert!(load(&path).projects.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
