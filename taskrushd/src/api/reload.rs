//! The reload reactor: `.rush` files loaded for requests and re-checked
//! when the watcher reports a change, and what changed published.

use std::collections::HashMap;
use std::path::Path;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};

use jsonrpsee::types::ErrorObjectOwned;
use taskrush_protocol::error;
use tokio::sync::mpsc;

use crate::config::projects::{Change, Loaded};
use crate::watch::Key;

use super::daemon::Daemon;
use super::to_proto::{self, config_error};

/// How many `.rush` files that no loaded project comes from are watched
/// (broken on their first load, or awaited in a folder a client asked
/// about).
pub(super) const MAX_AWAITED: usize = 256;

impl Daemon {
    pub(super) async fn load(
        &self,
        cwd: &str,
        file: Option<&str>,
    ) -> Result<Loaded, ErrorObjectOwned> {
        let cwd = Path::new(cwd);
        if !cwd.is_absolute() {
            return Err(ErrorObjectOwned::owned(
                error::INVALID_PARAMS,
                format!("`cwd` must be an absolute path, got `{}`", cwd.display()),
                None::<()>,
            ));
        }
        let path = match self.projects.locate(cwd, file) {
            Ok(path) => path,
            Err(e) => {
                // No file yet: one created in this folder is reported
                // (`config_reloaded`) without another request.
                if file.is_none()
                    && let Ok(dir) = cwd.canonicalize()
                {
                    for name in crate::config::discover::FILE_NAMES {
                        self.await_file(dir.join(name)).await;
                    }
                }
                return Err(config_error(e));
            }
        };
        let loaded = match self.load_path(&path).await {
            Ok(loaded) => loaded,
            Err(e) => {
                // Broken on its first load: its fix is reported
                // (`config_reloaded`), and so is each broken save
                // (`config_rejected`), without another request.
                self.await_file(path).await;
                return Err(config_error(e));
            }
        };
        // Watch it from now on (at once, so that a save right after this
        // request is seen by the watcher too).
        // Included files too: a change to one reloads the project.
        let key = Key::Config(path.clone());
        let mut files = vec![path];
        files.extend(loaded.config.included_files.iter().cloned());
        if !self.watcher.has(&key, &files) {
            self.watcher.watch_files(key, files).await;
        }
        Ok(loaded)
    }

    /// Watch `path`, a `.rush` file no loaded project comes from (yet):
    /// the watcher re-checks it on each change. At most [`MAX_AWAITED`]
    /// such files are watched; the oldest is forgotten first.
    async fn await_file(&self, path: PathBuf) {
        let key = Key::Config(path.clone());
        if self.watcher.has(&key, std::slice::from_ref(&path)) {
            return;
        }
        let dropped = {
            let mut awaited = self.awaited.lock().unwrap_or_else(|p| p.into_inner());
            awaited.retain(|p| p != &path);
            awaited.push_back(path.clone());
            if awaited.len() > MAX_AWAITED {
                awaited.pop_front()
            } else {
                None
            }
        };
        if let Some(old) = dropped
            && !self.projects.is_loaded(&old)
        {
            self.watcher.forget(&Key::Config(old));
        }
        self.watcher.watch_files(key, vec![path]).await;
    }

    /// Load (or re-check) one `.rush` file and publish what changed: a
    /// request and the watcher both come here, and whichever notices a
    /// change first reports it.
    ///
    /// Reading and parsing happen on a blocking thread, without the
    /// daemon's locks: a file that takes long to parse stalls only the
    /// requests for that file.
    pub(super) async fn load_path(
        &self,
        path: &Path,
    ) -> Result<Loaded, crate::config::config_error::ConfigError> {
        if let Some(loaded) = self.projects.cached(path) {
            return Ok(loaded);
        }
        let (loaded, change) = self.projects.load_async(path).await?;
        for gone in self.projects.take_evicted() {
            self.watcher.forget(&Key::Config(gone.clone()));
            if let Some(root) = gone.parent() {
                self.watcher.retain_inputs(root, |_| false);
            }
        }
        match change {
            Change::None => {}
            Change::Reloaded(config) => {
                // The included files may have changed: watch the new set.
                let key = Key::Config(path.to_path_buf());
                let mut files = vec![path.to_path_buf()];
                files.extend(config.included_files.iter().cloned());
                if self.watcher.has(&key, std::slice::from_ref(&files[0])) || files.len() > 1 {
                    self.watcher.watch_files(key, files).await;
                }
                // Tasks that are gone (or lost their cache) need no watches.
                self.watcher.retain_inputs(&config.root, |task| {
                    config
                        .tasks
                        .get(task)
                        .is_some_and(|t| !t.cache_files.is_empty())
                });
                self.events.send(to_proto::config_reloaded(&config));
                let host = self.plugins.clone();
                tokio::spawn(async move { host.config_changed(config).await });
            }
            Change::Rejected {
                error,
                using_last_valid,
            } => {
                self.events
                    .send(to_proto::config_rejected(path, &error, using_last_valid));
            }
        }
        Ok(loaded)
    }
}

/// What the watcher reports, applied: a `.rush` file is re-checked (and
/// reloaded or rejected), a plugin's new files are swapped in.
pub(super) async fn apply_changes(daemon: Weak<Daemon>, mut changes: mpsc::UnboundedReceiver<Key>) {
    // Files being reloaded, and whether they changed again meanwhile: one
    // reload task per file, however often it is saved.
    let reloading: Arc<Mutex<HashMap<PathBuf, bool>>> = Arc::default();
    while let Some(key) = changes.recv().await {
        let Some(d) = daemon.upgrade() else { return };
        match key {
            Key::Config(path) => {
                {
                    let mut r = reloading.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(again) = r.get_mut(&path) {
                        *again = true;
                        continue;
                    }
                    r.insert(path.clone(), false);
                }
                // Not awaited here: a file slow to parse must not hold up
                // the changes of other projects.
                let reloading = reloading.clone();
                tokio::spawn(async move {
                    loop {
                        if let Err(error) = d.load_path(&path).await
                            && std::fs::symlink_metadata(&path).is_ok()
                        {
                            // No valid config ever loaded from it (else
                            // the last valid one would serve): say why.
                            d.events
                                .send(to_proto::config_rejected(&path, &error, false));
                        }
                        let mut r = reloading.lock().unwrap_or_else(|p| p.into_inner());
                        match r.get_mut(&path) {
                            Some(again) if *again => *again = false,
                            _ => {
                                r.remove(&path);
                                return;
                            }
                        }
                    }
                });
            }
            Key::Plugin(root, name) => {
                let Some(config) = d.projects.config_of(&root) else {
                    continue;
                };
                let host = d.plugins.clone();
                tokio::spawn(async move { host.files_changed(&config, &name).await });
            }
            // Inputs are not reported: their events only clear clean keys.
            Key::Inputs(..) => {}
        }
    }
}
