//! The registry of plugin slots (per project root and name) and what acts
//! on all of them: a restart by hand, the daemon's shutdown.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use taskrush_protocol::daemon::PluginStatus;

use super::failure::{PluginFailure, not_declared};
use super::manifest::Installed;
use super::slot::Slot;
use crate::config::rush_file::RushFile;
use crate::event_bus::Events;
use crate::watch::{Key, Watcher};

/// Every plugin process of the daemon.
#[derive(Default)]
pub(crate) struct PluginHost {
    pub(super) slots: Mutex<HashMap<(PathBuf, String), Arc<Slot>>>,
    pub(super) stopping: AtomicBool,
    pub(super) events: Events,
    /// Where the files of running plugins are registered, so that a change
    /// reloads them (none in unit tests).
    pub(super) watcher: std::sync::OnceLock<Arc<Watcher>>,
    /// Itself, for host calls that call another plugin (`call_command`).
    pub(super) me: std::sync::OnceLock<std::sync::Weak<PluginHost>>,
}

/// What starting a plugin needs from the request: the project and the
/// client's environment.
pub(super) struct Ctx<'a> {
    pub(super) config: &'a RushFile,
    pub(super) env: &'a BTreeMap<String, String>,
}

impl PluginHost {
    pub(crate) fn new(events: Events) -> Arc<PluginHost> {
        super::output::set_events(events.clone());
        let host = Arc::new(PluginHost {
            events,
            ..PluginHost::default()
        });
        let _ = host.me.set(Arc::downgrade(&host));
        host
    }

    /// Watch the files of running plugins with `watcher`.
    pub(crate) fn set_watcher(&self, watcher: Arc<Watcher>) {
        let _ = self.watcher.set(watcher);
    }

    /// Watch the files of `loaded` for the plugin of `slot` (in place
    /// when this returns: a change right after a start is seen).
    pub(super) async fn watch_files(&self, slot: &Slot, loaded: &Installed) {
        if let Some(w) = self.watcher.get() {
            let key = Key::Plugin(slot.root.clone(), slot.name.clone());
            w.watch_files(key, loaded.stamp.files()).await;
        }
    }

    pub(super) fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<(PathBuf, String), Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn slot(&self, root: &Path, name: &str) -> Arc<Slot> {
        self.slots()
            .entry((root.to_path_buf(), name.to_owned()))
            .or_insert_with(|| Arc::new(Slot::new(name, root, self.events.clone())))
            .clone()
    }

    pub(super) fn existing(&self, root: &Path, name: &str) -> Option<Arc<Slot>> {
        self.slots()
            .get(&(root.to_path_buf(), name.to_owned()))
            .cloned()
    }

    /// Why the running version of `name` was kept over an update that
    /// asks for more permissions, if it was.
    pub(super) fn refused_swap(&self, root: &Path, name: &str) -> Option<String> {
        let slot = self.existing(root, name)?;
        let st = slot.st();
        st.refused_swap.clone()
    }

    /// Stop the plugin, forget its failures, start it again. It grants
    /// nothing: a plugin whose files ask for what is not granted is left
    /// as it is (running or not) and the error says how to grant it.
    pub(crate) async fn restart(
        &self,
        config: &RushFile,
        name: &str,
        env: &BTreeMap<String, String>,
    ) -> Result<PluginStatus, PluginFailure> {
        let Some(spec) = config.plugins.iter().find(|p| p.name == name) else {
            return Err(not_declared(config, name));
        };
        let slot = self.slot(&config.root, name);
        // A version waiting for consent would not start: the running one
        // is kept rather than stopped for nothing.
        if let Ok(loaded) = super::manifest::locate(spec, &config.root)
            .and_then(|dir| super::manifest::load(&dir, Some(name), spec.version.as_deref()))
            && let Some(more) =
                super::grants::effective(&config.root, name, &loaded.manifest.permissions)
                    .pending_text()
        {
            return Err(slot.failure(
                super::failure::Phase::Consent,
                format!(
                    "{}; it was not restarted",
                    super::grants::not_granted(name, &more)
                ),
                None,
            ));
        }
        let old = {
            let _starting = slot.starting.lock().await;
            let mut st = slot.st();
            st.failed = None;
            st.crashes.clear();
            st.retry_at = None;
            st.info = None;
            // Granting is `plugin grant`'s job: a restart only restarts.
            st.refused_swap = None;
            st.process.take()
        };
        if let Some(p) = old {
            p.shutdown().await;
        }
        tracing::info!(target: "plugin", plugin = %name, "restart requested");
        self.ensure(&slot, spec, &Ctx { config, env }).await?;
        Ok(self.status(config, spec).0)
    }

    /// Stop every plugin (daemon shutdown), all at once, bounded by about
    /// 2 × [`super::process::STOP_STEP`].
    pub(crate) async fn shutdown_all(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        let slots: Vec<Arc<Slot>> = self.slots().values().cloned().collect();
        let mut set = tokio::task::JoinSet::new();
        for slot in slots {
            if let Some(p) = slot.st().process.take() {
                set.spawn(async move { p.shutdown().await });
            }
        }
        while set.join_next().await.is_some() {}
    }
}
