//! Hot swap: a running plugin whose files or `.rush` entry changed gets a
//! new process; the old one finishes its calls and stops. Plugins that
//! left the `.rush` file are stopped, ones that joined it are started.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use taskrush_protocol::events::DaemonEvent;

use super::host::{Ctx, PluginHost};
use super::manifest;
use super::permissions::refused_message;
use super::slot::{Slot, retire, same_entry};
use super::start::Launch;
use crate::config::rush_file::{PluginSpec, RushFile};
use crate::watch::Key;

impl PluginHost {
    /// Swap in a new process of a running plugin whose files, manifest or
    /// `.rush` entry changed: the new one gets new calls once it has
    /// shaken hands, the old one finishes its calls and stops. A new
    /// version that cannot start, or that asks for more permissions, is
    /// reported and the old one keeps serving. A plugin that is not
    /// running is left alone: its next use starts the new version.
    pub(super) async fn reload(&self, config: &RushFile, spec: &PluginSpec, reason: &str) {
        let Some(slot) = self.existing(&config.root, &spec.name) else {
            return;
        };
        let _starting = slot.starting.lock().await;
        if self.stopping.load(Ordering::Relaxed) {
            return;
        }
        let (old, env, old_loaded, old_spec) = {
            let st = slot.st();
            let old = st
                .process
                .clone()
                .filter(|p| p.dead().is_none() && st.info.is_some());
            (old, st.env.clone(), st.loaded.clone(), st.spec.clone())
        };
        let (Some(old), Some(env)) = (old, env) else {
            return;
        };
        let root = slot.root.display().to_string();
        let report_failure = |m: String| {
            tracing::warn!(target: "plugin", plugin = %slot.name, "{m}");
            slot.st().last_error = Some(m.clone());
            self.events.send(DaemonEvent::PluginFailed {
                root: root.clone(),
                plugin: slot.name.clone(),
                message: m,
            });
        };
        let loaded = match manifest::find(spec, &config.root) {
            Ok(l) => l,
            Err(e) => {
                report_failure(format!(
                    "its new version cannot be used, the running one keeps serving: {}",
                    e.message
                ));
                return;
            }
        };
        let same_spec = old_spec.as_ref().is_some_and(|s| same_entry(s, spec));
        if old_loaded.as_ref() == Some(&loaded) && same_spec {
            return; // touched, not changed
        }
        let more = super::grants::effective(&slot.root, &slot.name, &loaded.manifest.permissions)
            .pending_text();
        if let Some(more) = more {
            let m = refused_message(&slot.name, &more);
            tracing::warn!(target: "plugin", plugin = %slot.name, "{m}");
            {
                let mut st = slot.st();
                st.last_error = Some(m.clone());
                st.refused_swap = Some(m.clone());
            }
            self.events.send(DaemonEvent::PluginReloadRefused {
                root,
                plugin: slot.name.clone(),
                message: m,
            });
            return;
        }
        let ctx = Ctx { config, env: &env };
        match self.launch(&slot, spec, &ctx, &loaded).await {
            Ok((process, info)) => {
                {
                    let mut st = slot.st();
                    st.starts += 1;
                    st.process = Some(process.clone());
                    st.info = Some(info.clone());
                    st.loaded = Some(loaded.clone());
                    st.spec = Some(spec.clone());
                    st.failed = None;
                    st.crashes.clear();
                    st.retry_at = None;
                    st.refused_swap = None;
                }
                super::command_cache::remember(&slot.root, &slot.name, &info.commands);
                retire(old, spec.timeout);
                self.watch_files(&slot, &loaded).await;
                tracing::info!(target: "plugin", plugin = %slot.name, version = %info.version, "reloaded ({reason})");
                self.events.send(DaemonEvent::PluginRestarted {
                    root,
                    plugin: slot.name.clone(),
                    version: info.version,
                    pid: process.pid(),
                    reason: reason.to_owned(),
                });
            }
            Err(e) => {
                let m = match e {
                    Launch::Spawn(m) | Launch::Config(m) => m,
                    Launch::Handshake { process, fault } => {
                        process.kill("its handshake failed");
                        fault.into_message()
                    }
                };
                report_failure(format!(
                    "its new version failed to start, the running one keeps serving: {m}"
                ));
            }
        }
    }

    /// A project's config changed: reload plugins whose entry changed,
    /// stop those that left it, start those that joined it (when the
    /// project's plugins were used before, with the same environment).
    pub(crate) async fn config_changed(self: &Arc<Self>, config: Arc<RushFile>) {
        let slots: Vec<Arc<Slot>> = self
            .slots()
            .values()
            .filter(|s| s.root == config.root)
            .cloned()
            .collect();
        let env = slots.iter().find_map(|s| s.st().env.clone());
        for slot in &slots {
            if config.plugins.iter().any(|p| p.name == slot.name) {
                continue;
            }
            self.slots().remove(&(slot.root.clone(), slot.name.clone()));
            if let Some(w) = self.watcher.get() {
                w.forget(&Key::Plugin(slot.root.clone(), slot.name.clone()));
            }
            let process = slot.st().process.take();
            if let Some(p) = process {
                tracing::info!(target: "plugin", plugin = %slot.name, "removed from the `.rush` file: stopping it");
                retire(p, Duration::from_secs(5));
                self.events.send(DaemonEvent::PluginStopped {
                    root: slot.root.display().to_string(),
                    plugin: slot.name.clone(),
                    reason: "removed from the `.rush` file".into(),
                });
            }
        }
        for spec in &config.plugins {
            let slot = self.existing(&config.root, &spec.name);
            let running = slot.as_ref().is_some_and(|s| s.live().is_some());
            if running {
                let changed = slot
                    .as_ref()
                    .and_then(|s| s.st().spec.clone())
                    .is_some_and(|old| !same_entry(&old, spec));
                if changed {
                    self.reload(&config, spec, "its `.rush` entry changed")
                        .await;
                }
            } else if slot.is_none()
                && let Some(env) = &env
            {
                let host = self.clone();
                let (config, spec, env) = (config.clone(), spec.clone(), env.clone());
                tokio::spawn(async move {
                    let slot = host.slot(&config.root, &spec.name);
                    let ctx = Ctx {
                        config: &config,
                        env: &env,
                    };
                    let _ = host.ensure(&slot, &spec, &ctx).await;
                });
            }
        }
    }

    /// The files of a plugin changed (from the watcher).
    pub(crate) async fn files_changed(&self, config: &RushFile, name: &str) {
        if let Some(spec) = config.plugins.iter().find(|p| p.name == name) {
            self.reload(config, spec, "its files changed").await;
        }
    }
}
