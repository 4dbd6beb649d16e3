//! Plugins disabled per project (`taskrush plugin disable|enable NAME`):
//! in memory, and in `plugins-disabled.json` beside the grants file
//! (private, replaced atomically) so that a fresh daemon keeps them
//! disabled. A disabled plugin is not started: its hooks are skipped with
//! a warning (a `required` one fails its tasks), its commands say it is
//! disabled.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Serialize};

use crate::config::whole_file::{self, ReadError};

/// The file, once the daemon named it (none in unit tests: memory only).
static PATH: OnceLock<PathBuf> = OnceLock::new();
static STATE: Mutex<Option<File>> = Mutex::new(None);
/// The most read of the file.
const MAX_BYTES: u64 = 1024 * 1024;

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct File {
    version: u32,
    /// Project root → the names of its disabled plugins.
    #[serde(default)]
    projects: BTreeMap<String, BTreeSet<String>>,
}

/// Keep the state in `path`.
pub(crate) fn open(path: &Path) {
    let _ = PATH.set(path.to_owned());
}

fn with<T>(f: impl FnOnce(&mut File) -> T) -> T {
    let mut guard = STATE.lock().unwrap_or_else(|p| p.into_inner());
    let file = guard.get_or_insert_with(|| PATH.get().map(|p| load(p)).unwrap_or_default());
    f(file)
}

/// Whether plugin `name` of project `root` is disabled.
pub(crate) fn is_disabled(root: &Path, name: &str) -> bool {
    let root = root.display().to_string();
    with(|f| f.projects.get(&root).is_some_and(|s| s.contains(name)))
}

/// Disable (or enable) plugin `name` of `root`; answers whether that
/// changed anything. The file is rewritten before this returns.
pub(super) fn set(root: &Path, name: &str, disabled: bool) -> Result<bool, String> {
    let key = root.display().to_string();
    let (changed, file) = with(|f| {
        let set = f.projects.entry(key.clone()).or_default();
        let changed = if disabled {
            set.insert(name.to_owned())
        } else {
            set.remove(name)
        };
        if set.is_empty() {
            f.projects.remove(&key);
        }
        f.version = 1;
        (changed, f.clone())
    });
    if changed && let Some(path) = PATH.get() {
        let text = serde_json::to_vec_pretty(&file).map_err(|e| e.to_string())?;
        whole_file::replace_private(path, &text, true)
            .map_err(|e| format!("cannot write `{}`: {e}", path.display()))?;
    }
    Ok(changed)
}

fn load(path: &Path) -> File {
    let bytes = match whole_file::read_at_most(path, MAX_BYTES) {
        Ok(b) => b,
        Err(ReadError::NotFound) => return File::default(),
        Err(e) => {
            tracing::warn!(
                "the disabled plugins file `{}` {}: ignored",
                path.display(),
                e.what()
            );
            return File::default();
        }
    };
    serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        tracing::warn!(
            "the disabled plugins file `{}` is malformed ({e}): ignored",
            path.display()
        );
        File::default()
    })
}

impl super::PluginHost {
    /// `plugin disable|enable NAME`: store it, audit it; a disabled
    /// plugin's process is stopped once its calls in flight end.
    pub(crate) fn set_disabled(
        &self,
        config: &crate::config::rush_file::RushFile,
        name: &str,
        disable: bool,
    ) -> Result<bool, super::PluginFailure> {
        if !config.plugins.iter().any(|p| p.name == name) {
            return Err(super::not_declared(config, name));
        }
        let changed = set(&config.root, name, disable).map_err(|m| super::PluginFailure {
            plugin: name.to_owned(),
            phase: super::Phase::Lookup,
            message: format!("cannot change the disabled plugins: {m}"),
            hint: None,
            stderr: Vec::new(),
        })?;
        if changed {
            super::audit::record(
                if disable { "disabled" } else { "enabled" },
                name,
                &config.root,
                serde_json::json!({}),
            );
            tracing::info!(target: "plugin", plugin = %name, root = %config.root.display(), "{}", if disable { "disabled" } else { "enabled" });
        }
        if disable && let Some(slot) = self.existing(&config.root, name) {
            let (process, timeout) = {
                let mut st = slot.st();
                st.info = None;
                let timeout = st.spec.as_ref().map(|s| s.timeout);
                (st.process.take(), timeout)
            };
            if let Some(p) = process {
                super::slot::retire(p, timeout.unwrap_or(std::time::Duration::from_secs(5)));
            }
        }
        Ok(changed)
    }
}
