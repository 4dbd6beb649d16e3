//! Starting a plugin: its manifest located and checked, its process
//! spawned, the `initialize` handshake, and a process that died while idle
//! counted as a crash.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::Value;
use taskrush_protocol::events::DaemonEvent;
use taskrush_protocol::plugin::{
    self as wire, InitializeParams, InitializeResult, PLUGIN_PROTOCOL_VERSION,
};
use tokio::time::Instant;

use super::enforce;
use super::failure::{Fault, Phase, PluginFailure, restart_hint};
use super::grants;
use super::host::{Ctx, PluginHost};
use super::manifest::{self, Installed, ManifestError};
use super::permissions::plugin_env;
use super::process::{CallError, PluginProcess};
use super::proxy::Proxy;
use super::slot::{Slot, retire, sync_spec};
use crate::config::rush_file::PluginSpec;
use crate::human;

/// How long an error waits for the last stderr lines of a dead plugin.
pub(super) const STDERR_SETTLE: Duration = Duration::from_millis(300);

impl PluginHost {
    /// The live process of `spec`, started (with its handshake) if needed.
    pub(super) async fn ensure(
        &self,
        slot: &Arc<Slot>,
        spec: &PluginSpec,
        ctx: &Ctx<'_>,
    ) -> Result<(Arc<PluginProcess>, InitializeResult), PluginFailure> {
        sync_spec(slot, spec);
        if let Some(live) = self.live_or_reap(slot) {
            return Ok(live);
        }
        let _starting = slot.starting.lock().await;
        if let Some(live) = self.live_or_reap(slot) {
            return Ok(live);
        }
        if self.stopping.load(Ordering::Relaxed) {
            return Err(slot.failure(Phase::Start, "the daemon is stopping".into(), None));
        }
        if super::disabled::is_disabled(&slot.root, &slot.name) {
            return Err(slot.failure(
                Phase::Start,
                "it is disabled for this project".into(),
                Some(format!(
                    "enable it with `taskrush plugin enable {}`",
                    slot.name
                )),
            ));
        }
        let rush_dir = ctx.config.root.clone();
        let loaded = manifest::find(spec, &rush_dir).map_err(|e: ManifestError| {
            slot.st().last_error = Some(e.message.clone());
            slot.failure(Phase::Load, e.message, e.hint)
        })?;
        // Native plugins are trusted code: only where the user allows them.
        if loaded.manifest.plugin_type == wire::PluginType::Native
            && let Err((m, hint)) = super::native::allowed(&slot.name)
        {
            slot.st().last_error = Some(m.clone());
            return Err(slot.failure(Phase::Load, m, Some(hint)));
        }
        // Failed before? Only its files changing (or a restart) lifts it.
        let wait = {
            let mut st = slot.st();
            if let Some(f) = &st.failed {
                let changed = f.stamp.as_ref() != Some(&loaded.stamp);
                if !changed {
                    let m = f.message.clone();
                    drop(st);
                    return Err(slot.failure(
                        Phase::Start,
                        format!("it is marked failed: {m}"),
                        Some(restart_hint(&slot.name)),
                    ));
                }
                tracing::info!(target: "plugin", plugin = %slot.name, "its files changed: trying it again");
                st.failed = None;
                st.crashes.clear();
                st.retry_at = None;
            }
            st.loaded = Some(loaded.clone());
            st.retry_at
                .map(|at| at.saturating_duration_since(Instant::now()))
        };
        if let Some(wait) = wait.filter(|w| !w.is_zero()) {
            if wait > spec.timeout {
                return Err(slot.failure(
                    Phase::Start,
                    format!(
                        "it crashed recently and is restarted in {}",
                        human::duration(wait)
                    ),
                    None,
                ));
            }
            tokio::time::sleep(wait).await;
        }
        // Not started without the user's consent (never asked here: the
        // CLI asks on a terminal, `plugin grant` otherwise).
        let eff = grants::effective(&slot.root, &slot.name, &loaded.manifest.permissions);
        if let Some(more) = eff.pending_text() {
            let m = grants::not_granted(&slot.name, &more);
            slot.st().last_error = Some(m.clone());
            return Err(slot.failure(Phase::Consent, m, None));
        }
        let launched = self.launch(slot, spec, ctx, &loaded).await;
        if !matches!(launched, Err(Launch::Spawn(_) | Launch::Config(_))) {
            let mut st = slot.st();
            if st.starts > 0 {
                slot.metrics
                    .restarts
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            st.starts += 1;
        }
        let (process, info) = match launched {
            Ok(p) => p,
            Err(Launch::Config(m)) => return Err(slot.failure(Phase::Load, m, None)),
            Err(Launch::Spawn(m)) => return Err(slot.fail(None, Phase::Start, Fault::Broken(m))),
            Err(Launch::Handshake { process, fault }) => {
                return Err(slot.fail(Some(&process), Phase::Handshake, fault));
            }
        };
        {
            let mut st = slot.st();
            if let Some(old) = st.process.replace(process.clone()) {
                retire(old, spec.timeout);
            }
            st.info = Some(info.clone());
            st.retry_at = None;
            st.env = Some(ctx.env.clone());
            st.refused_swap = None;
        }
        super::command_cache::remember(&slot.root, &slot.name, &info.commands);
        self.watch_files(slot, &loaded).await;
        self.events.send(DaemonEvent::PluginStarted {
            root: slot.root.display().to_string(),
            plugin: slot.name.clone(),
            version: info.version.clone(),
            pid: process.pid(),
        });
        Ok((process, info))
    }

    /// Start the plugin of `loaded` and shake hands with it. Touches no
    /// state of the slot: the caller decides what the new process replaces.
    pub(super) async fn launch(
        &self,
        slot: &Arc<Slot>,
        spec: &PluginSpec,
        ctx: &Ctx<'_>,
        loaded: &Installed,
    ) -> Result<(Arc<PluginProcess>, InitializeResult), Launch> {
        let init_config = super::redact::expand_config(&spec.config, ctx.env)
            .map_err(|e| Launch::Config(format!("in its `config`: {e}")))?;
        // What it gets: declared ∩ granted − denied (the safe set needs no
        // grant); `process` commands as resolved when granted.
        let eff = grants::effective(&slot.root, &slot.name, &loaded.manifest.permissions);
        let granted = &eff.for_sandbox();
        let mut env = plugin_env(ctx.env, &eff.effective);
        let wasm = loaded.manifest.plugin_type == wire::PluginType::Wasm;
        let native = loaded.manifest.plugin_type == wire::PluginType::Native;
        let in_daemon = native
            && super::native::allowed(&slot.name).map_err(|(m, _)| Launch::Config(m))?
                == crate::config::user_config::NativeMode::InDaemon;
        let levels = if wasm {
            super::wasm::levels(granted)
        } else if in_daemon {
            super::native::levels_in_daemon()
        } else {
            enforce::levels(granted)
        };
        // A native plugin in its host process: `taskrushd --native-host
        // LIB`, sandboxed and run like an external plugin.
        let library = super::native::library_path(&loaded.dir, &loaded.manifest.entry_point);
        let host_manifest;
        let manifest = if native {
            host_manifest = wire::PluginManifest {
                entry_point: super::native::host_argv(&library).map_err(Launch::Spawn)?,
                ..loaded.manifest.clone()
            };
            &host_manifest
        } else {
            &loaded.manifest
        };
        if let Some(m) = refusal(&loaded.manifest, &levels, &eff) {
            super::audit::record(
                "start_refused",
                &slot.name,
                &slot.root,
                serde_json::json!({"why": m, "enforcement": levels}),
            );
            return Err(Launch::Config(m));
        }
        // An installed plugin: what is hashed is what is executed.
        crate::registry::verify::before_start(
            &slot.name,
            &slot.root,
            (spec.path.is_some(), native),
            &loaded.dir,
        )
        .await
        .map_err(Launch::Config)?;
        // Spawn to handshake done, logged with `ready` (benches read it).
        let started = std::time::Instant::now();
        let mut plan = enforce::plan(
            &slot.name,
            manifest,
            granted,
            &loaded.dir,
            &ctx.config.root,
            &mut env,
        )
        .map_err(Launch::Spawn)?;
        if !eff.reads_project {
            // The user config keeps plugins out of the project root.
            plan.spec.read.retain(|p| p != &ctx.config.root);
        }
        // A host list: an external plugin's own proxy, its only way out
        // (a WebAssembly guest's `http_request` checks its hosts itself).
        let mut proxy = None;
        let limits;
        let links = self.me.get().map(|me| super::host_calls::Links {
            host: me.clone(),
            config: Arc::new(ctx.config.clone()),
            env: Arc::new(ctx.env.clone()),
        });
        let (process, entry_sha256) = if wasm {
            let setup = super::wasm::setup(
                &slot.name,
                spec,
                loaded,
                granted,
                (&ctx.config.root, &plan.data_dir, &plan.tmp_dir),
                ctx.env,
                &env,
                slot.stderr.clone(),
                links,
            );
            limits = super::wasm::limit_statuses(&setup.limits, super::wasm::deadline_of(spec));
            let guest = super::wasm::start(setup).await.map_err(Launch::Spawn)?;
            let sha = Some(guest.sha256.clone());
            (
                PluginProcess::wasm(&slot.name, guest, Some(&slot.root)),
                sha,
            )
        } else if in_daemon {
            // Loaded in the daemon: its host calls are checked against
            // its grants like a WebAssembly guest's.
            limits = Default::default();
            let setup = super::wasm::setup(
                &slot.name,
                spec,
                loaded,
                granted,
                (&ctx.config.root, &plan.data_dir, &plan.tmp_dir),
                ctx.env,
                &env,
                slot.stderr.clone(),
                links,
            );
            let (name, lib) = (slot.name.clone(), library.clone());
            let guest = tokio::task::spawn_blocking(move || {
                super::native::InDaemon::start(&name, &lib, setup.grants)
            })
            .await
            .map_err(|e| Launch::Spawn(format!("loading its library failed: {e}")))?
            .map_err(Launch::Spawn)?;
            let sha = guest.sha256.clone();
            (
                PluginProcess::native(&slot.name, guest, Some(&slot.root)),
                sha,
            )
        } else {
            limits = super::limits::apply(&slot.name, &spec.limits, &mut plan.spec);
            if !granted.network.is_empty() {
                let p = Proxy::start(&slot.name, &slot.root, &granted.network)
                    .await
                    .map_err(Launch::Config)?;
                plan.spec.proxy_port = Some(p.port());
                p.set_env(&mut env);
                proxy = Some(p);
            }
            let process = PluginProcess::spawn(
                &slot.name,
                &plan.argv,
                &loaded.dir,
                &env,
                (!enforce::off()).then_some(&plan.spec),
                slot.stderr.clone(),
                Some(&slot.root),
            )
            .map_err(|e| {
                if let Some(dir) = &plan.spec.cgroup {
                    let _ = std::fs::remove_dir(dir);
                }
                Launch::Spawn(format!(
                    "cannot start `{}` in `{}`: {e}",
                    loaded.manifest.entry_point.join(" "),
                    loaded.dir.display()
                ))
            })?;
            // Its host calls: served as a WebAssembly guest's are.
            let grants = super::host_calls::resolve(
                &slot.name,
                &loaded.dir,
                granted,
                (&ctx.config.root, &plan.data_dir, &plan.tmp_dir),
                ctx.env,
                &env,
                links,
            );
            process.serve_host_calls(Arc::new(grants), super::wasm::deadline_of(spec));
            let sha = if native {
                super::audit::sha256_file(&library)
            } else {
                entry_file(loaded).and_then(|f| super::audit::sha256_file(&f))
            };
            (process, sha)
        };
        process.set_achieved((levels.clone(), limits.clone()));
        slot.metrics
            .spawns
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        crate::metrics::set_wasm(&slot.root, &slot.name, wasm);
        process.set_metrics(slot.metrics.clone());
        tracing::info!(target: "plugin", plugin = %slot.name, pid = ?process.pid(), dir = %loaded.dir.display(), "started");
        slot.st().effective = Some(eff.effective.clone());
        if let Some(proxy) = proxy {
            // Closed, with its connections, when the process ends.
            let mut exit = process.exit_watch();
            tokio::spawn(async move {
                let _ = exit.wait_for(|e| e.is_some()).await;
                drop(proxy);
            });
        }
        super::audit::record(
            "spawned",
            &slot.name,
            &slot.root,
            serde_json::json!({
                "pid": process.pid(),
                "entry_point": loaded.manifest.entry_point,
                "dir": loaded.dir.display().to_string(),
                "entry_sha256": entry_sha256,
                "plugin_type": if wasm { "wasm" } else if native { "native" } else { "external" },
                "native_mode": native.then_some(if in_daemon { "in-daemon" } else { "process" }),
                "manifest_sha256": super::audit::sha256_file(&loaded.dir.join("plugin.toml")),
                "declared": loaded.manifest.permissions,
                "granted": eff.granted,
                "denied": eff.denied,
                "effective": eff.effective,
                // What the sandbox achieved, per kind of permission.
                "enforcement": levels,
                // Resource limits: value and level achieved.
                "limits": limits,
            }),
        );
        let params = InitializeParams {
            protocol_versions: vec![PLUGIN_PROTOCOL_VERSION],
            taskrush_version: taskrush_protocol::VERSION.to_owned(),
            name: spec.name.clone(),
            config: init_config,
            project_root: ctx.config.root.display().to_string(),
            permissions: eff.effective.to_list(),
            data_dir: Some(plan.data_dir.display().to_string()),
            tmp_dir: Some(plan.tmp_dir.display().to_string()),
            host_methods: super::host_calls::methods(),
        };
        let info = match handshake(&process, &params, super::wasm::deadline_of(spec)).await {
            Ok(info) => info,
            Err(fault) => {
                process.stderr_drained(STDERR_SETTLE).await;
                return Err(Launch::Handshake { process, fault });
            }
        };
        if let Some(m) = manifest_mismatch(&info, loaded).filter(|_| !loaded.bare) {
            process.stderr_drained(STDERR_SETTLE).await;
            return Err(Launch::Handshake {
                process,
                fault: Fault::Broken(m),
            });
        }
        if let Some(m) = self.collision(slot, &info, ctx.config) {
            return Err(Launch::Handshake {
                process,
                fault: Fault::Broken(m),
            });
        }
        slot.metrics.handshake.record(started.elapsed());
        let start_ms = started.elapsed().as_secs_f64() * 1000.0;
        tracing::info!(target: "plugin", plugin = %slot.name, version = %info.version, hooks = ?info.hooks, commands = ?info.commands.iter().map(|c| &c.name).collect::<Vec<_>>(), start_ms, "ready");
        Ok((process, info))
    }

    /// The live process, or `None`; a process that died on its own while
    /// nobody was calling it is counted as a crash here.
    fn live_or_reap(&self, slot: &Arc<Slot>) -> Option<(Arc<PluginProcess>, InitializeResult)> {
        if let Some(live) = slot.live() {
            return Some(live);
        }
        let dead = {
            let st = slot.st();
            st.process
                .clone()
                .filter(|p| !p.retired() && st.info.is_some())
        };
        if let Some(p) = dead {
            let how = p.dead().map(|d| d.to_string()).unwrap_or_default();
            slot.fail(
                Some(&p),
                Phase::Idle,
                Fault::Crash(format!("it exited while idle: {how}")),
            );
        }
        None
    }
}

/// With `enforcement = "required"` in the manifest or the user config:
/// why the plugin must not start.
fn refusal(
    manifest: &wire::PluginManifest,
    levels: &std::collections::BTreeMap<String, String>,
    eff: &grants::Effective,
) -> Option<String> {
    if let Some(m) = enforce::refusal(manifest, levels) {
        return Some(m);
    }
    if !eff.enforcement_required {
        return None;
    }
    let required = wire::PluginManifest {
        enforcement: Some("required".into()),
        ..manifest.clone()
    };
    let file = eff
        .config_path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    enforce::refusal(&required, levels).map(|m| {
        m.replacen(
            "its manifest says",
            &format!("the user config `{file}` says"),
            1,
        )
    })
}

/// Why [`PluginHost::launch`] failed.
pub(super) enum Launch {
    /// Its `config` cannot be expanded.
    Config(String),
    /// It could not be started at all.
    Spawn(String),
    /// It started but its handshake failed.
    Handshake {
        process: Arc<PluginProcess>,
        fault: Fault,
    },
}

/// The file an entry point runs: its first word that names a file in the
/// plugin's directory (`main.py` of `python3 main.py`), else its program
/// as found on `PATH`.
fn entry_file(loaded: &Installed) -> Option<std::path::PathBuf> {
    let argv = &loaded.manifest.entry_point;
    if let Some(f) = argv
        .iter()
        .map(|a| loaded.dir.join(a))
        .find(|p| p.is_file())
    {
        return Some(f);
    }
    let program = argv.first()?;
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

/// `initialize`, its answer checked.
async fn handshake(
    process: &PluginProcess,
    params: &InitializeParams,
    limit: Duration,
) -> Result<InitializeResult, Fault> {
    let params = serde_json::to_value(params).unwrap_or(Value::Null);
    match process.call(wire::method::INITIALIZE, params, limit).await {
        Ok(v) => {
            let info: InitializeResult = serde_json::from_value(v).map_err(|e| {
                Fault::Broken(format!("its answer to `initialize` is malformed: {e}"))
            })?;
            if info.protocol != PLUGIN_PROTOCOL_VERSION {
                return Err(Fault::Broken(format!(
                    "it speaks plugin protocol {}, this host speaks {PLUGIN_PROTOCOL_VERSION}",
                    info.protocol
                )));
            }
            Ok(info)
        }
        Err(CallError::Remote { code, message }) if code == wire::error::UNSUPPORTED_PROTOCOL => {
            Err(Fault::Broken(format!(
                "it speaks none of the protocol versions this host offers ({PLUGIN_PROTOCOL_VERSION}): {message}"
            )))
        }
        Err(CallError::Remote { message, .. }) => Err(Fault::Broken(format!(
            "it refused to initialize: {message}"
        ))),
        Err(CallError::Gone(how)) => Err(Fault::Crash(format!(
            "it exited before the handshake ({how})"
        ))),
        Err(CallError::Timeout(d)) if process.is_in_daemon() => Err(Fault::Crash(format!(
            "no answer to `initialize` within {}: the call was abandoned (its thread is lost until the daemon restarts)",
            human::duration(d)
        ))),
        Err(CallError::Timeout(d)) if process.is_wasm() => Err(Fault::Crash(format!(
            "no answer to `initialize` within {}: the guest was stopped at its deadline (a fresh instance serves the next call)",
            human::duration(d)
        ))),
        Err(CallError::Timeout(d)) => Err(Fault::Crash(format!(
            "no answer to `initialize` within {} (the plugin was killed)",
            human::duration(d)
        ))),
        Err(CallError::Protocol(m)) => Err(Fault::Broken(m)),
        Err(CallError::Trapped(why)) => {
            Err(Fault::Crash(format!("it trapped in `initialize`: {why}")))
        }
    }
}

/// Where the answer to `initialize` names another plugin or version than
/// the manifest (the `.rush` entry's `version` requirement was checked
/// against the manifest, so the process must be what the manifest says).
fn manifest_mismatch(info: &InitializeResult, loaded: &Installed) -> Option<String> {
    let m = &loaded.manifest;
    let path = loaded.dir.join("plugin.toml");
    let mut wrong = Vec::new();
    if info.name != m.name {
        wrong.push(format!(
            "it calls itself `{}` where its manifest says `{}`",
            info.name, m.name
        ));
    }
    if info.version != m.version {
        wrong.push(format!(
            "it says version `{}` where its manifest says `{}`",
            info.version, m.version
        ));
    }
    (!wrong.is_empty()).then(|| {
        format!(
            "its answer to `initialize` does not match `{}`: {} (the two must be equal)",
            path.display(),
            wrong.join(", ")
        )
    })
}
