//! Plugin status objects: `plugin list` and `plugin info`, from the
//! slots' state and the manifests on disk.

use taskrush_protocol::daemon::{LivePlugin, PluginDetails, PluginState, PluginStatus};
use taskrush_protocol::plugin::Hook;

use super::host::PluginHost;
use super::manifest::{self, Installed};
use crate::config::rush_file::{PluginSpec, RushFile};

impl PluginHost {
    /// The status of every plugin of the project, in declared order.
    pub(crate) fn list(&self, config: &RushFile) -> Vec<PluginStatus> {
        config
            .plugins
            .iter()
            .map(|spec| self.status(config, spec).0)
            .collect()
    }

    pub(super) fn status(
        &self,
        config: &RushFile,
        spec: &PluginSpec,
    ) -> (PluginStatus, Option<Installed>) {
        let loaded = manifest::find(spec, &config.root);
        let slot = self.existing(&config.root, &spec.name);
        let mut status = PluginStatus {
            name: spec.name.clone(),
            version: None,
            kind: spec.kind.as_str().to_owned(),
            state: PluginState::NotStarted,
            restarts: 0,
            pid: None,
            hooks: Vec::new(),
            commands: Vec::new(),
            error: None,
            enforcement: Default::default(),
            needs_grant: false,
            limits: Default::default(),
            disabled: super::disabled::is_disabled(&config.root, &spec.name),
            signer: None,
            unsigned: false,
        };
        if let Ok(l) = &loaded {
            // Installed plugins carry a receipt (`registry/verify.rs`).
            let receipt = spec
                .path
                .is_none()
                .then(|| crate::registry::verify::receipt_of(&l.dir))
                .flatten()
                .and_then(Result::ok);
            status.signer = receipt.as_ref().and_then(|r| r.signer.clone());
            status.unsigned = status.signer.is_none();
        }
        if let Some(slot) = &slot {
            let st = slot.st();
            status.restarts = st.starts.saturating_sub(1);
            if let Some(info) = &st.info {
                status.version = Some(info.version.clone());
                status.hooks = info
                    .hooks
                    .iter()
                    .filter(|h| **h != Hook::Unknown)
                    .map(|h| h.method().to_owned())
                    .collect();
                status.commands = info.commands.iter().map(|c| c.name.clone()).collect();
            }
            let live = st.process.as_ref().filter(|p| p.dead().is_none());
            if let Some(f) = &st.failed {
                status.state = PluginState::Failed;
                status.error = Some(f.message.clone());
            } else if let Some(p) = live {
                status.state = if p.busy() {
                    PluginState::Running
                } else {
                    PluginState::Idle
                };
                status.pid = p.pid();
            }
        }
        match &loaded {
            Ok(l) => {
                status
                    .version
                    .get_or_insert_with(|| l.manifest.version.clone());
                let eff =
                    super::grants::effective(&config.root, &spec.name, &l.manifest.permissions);
                if spec.kind.as_str() == "external" {
                    status.enforcement = super::enforce::levels(&eff.for_sandbox());
                    status.limits = super::limits::levels(&spec.limits);
                } else if spec.kind.as_str() == "wasm" {
                    status.enforcement = super::wasm::levels(&eff.for_sandbox());
                    status.limits = super::wasm::limit_statuses(
                        &super::wasm::limits_of(spec),
                        super::wasm::deadline_of(spec),
                    );
                } else if spec.kind.as_str() == "native" {
                    let in_daemon = super::native::allowed(&spec.name)
                        == Ok(crate::config::user_config::NativeMode::InDaemon);
                    if in_daemon {
                        status.enforcement = super::native::levels_in_daemon();
                        let lib = super::native::library_path(&l.dir, &l.manifest.entry_point);
                        if super::native::changed_since_loaded(&lib) {
                            status
                                .error
                                .get_or_insert_with(|| super::native::CHANGED.into());
                        }
                    } else {
                        status.enforcement = super::enforce::levels(&eff.for_sandbox());
                        status.limits = super::limits::levels(&spec.limits);
                    }
                }
                status.needs_grant = eff.pending.is_some();
            }
            Err(e) => {
                status.state = PluginState::Failed;
                status.error = Some(e.message.clone());
            }
        }
        (status, loaded.ok())
    }

    /// One plugin in detail.
    pub(crate) fn info(&self, config: &RushFile, name: &str) -> Option<PluginDetails> {
        let spec = config.plugins.iter().find(|p| p.name == name)?;
        let (status, loaded) = self.status(config, spec);
        let eff = loaded
            .as_ref()
            .map(|l| super::grants::effective(&config.root, name, &l.manifest.permissions));
        let slot = self.existing(&config.root, name);
        let (stderr, last_error) = match &slot {
            Some(s) => (
                s.stderr.last(super::stderr::STDERR_KEEP),
                s.st().last_error.clone(),
            ),
            None => (Vec::new(), None),
        };
        Some(PluginDetails {
            path: loaded.as_ref().map(|l| l.dir.display().to_string()),
            manifest: loaded.map(|l| l.manifest),
            required: spec.required,
            timeout_ms: super::wasm::deadline_of(spec).as_millis() as u64,
            stderr,
            last_error: last_error.or_else(|| status.error.clone()),
            status,
            granted: eff.as_ref().and_then(|e| e.granted.clone()),
            denied: eff
                .as_ref()
                .map(|e| e.denied.clone())
                .filter(|d| !d.is_empty()),
            pending: eff.as_ref().and_then(|e| e.pending.clone()),
            effective: eff.map(|e| e.effective),
        })
    }
}

impl PluginHost {
    /// Every live plugin process (external), with what its sandbox and
    /// limits achieved when it was started, for `daemon status`.
    pub(crate) fn live(&self) -> Vec<LivePlugin> {
        let slots: Vec<_> = self.slots().values().cloned().collect();
        let mut out: Vec<LivePlugin> = slots
            .iter()
            .filter_map(|slot| {
                let p = slot.st().process.clone()?;
                if p.dead().is_some() {
                    return None;
                }
                let (enforcement, limits) = p.achieved();
                Some(LivePlugin {
                    root: slot.root.display().to_string(),
                    name: slot.name.clone(),
                    pid: p.pid(),
                    enforcement,
                    limits,
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.root, &a.name).cmp(&(&b.root, &b.name)));
        out
    }
}
