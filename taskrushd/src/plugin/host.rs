//! The plugin host: every plugin process of every project, started on first
//! use and kept warm across runs, called with deadlines, restarted with
//! back-off, given up on when it keeps failing.
//!
//! Invariants:
//! - The host never reads a `.rush` file: it is handed the parsed,
//!   validated [`RushFile`] of the run or request.
//! - One process per plugin and project root serves every task and every
//!   run; it is restarted when its `.rush` entry changes.
//! - A plugin's failure (crash, exit before the handshake, junk, hang)
//!   reaches only the calls made to that plugin: it fails a task only when
//!   the plugin is `required: true`, otherwise the task goes on with a
//!   warning. A deliberate error answered by `before_task` (a veto) always
//!   stops the task.
//! - Crashes and timeouts are retried on next use after a back-off
//!   ([`BACKOFF_START`] doubling to [`BACKOFF_MAX`]); [`CRASH_LIMIT`] of
//!   them within [`CRASH_WINDOW`] mark the plugin failed. Failures that a
//!   restart cannot fix (another protocol major, junk on stdout, a command
//!   name that is taken, an entry point that cannot be executed) mark it
//!   failed at once. A failed plugin is left alone until its manifest or
//!   entry files change, its `.rush` entry changes, or `plugin_restart`.
//! - Hooks run in the order the `.rush` file declares the plugins;
//!   `after_task` and `on_task_failure` in reverse order.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use taskrush_protocol::daemon::{CommandInfo, PluginDetails, PluginState, PluginStatus};
use taskrush_protocol::events::DaemonEvent;
use taskrush_protocol::plugin::{
    self as wire, CommandParams, CommandResult, Hook, HookParams, InitializeParams,
    InitializeResult, PLUGIN_PROTOCOL_VERSION, PluginManifest, TaskContext, TaskError, TaskResult,
};
use taskrush_protocol::run::RunEvent;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::manifest::{self as plugin_manifest, Loaded, ManifestError};
use super::process::{CallError, PluginProcess, StderrLog, human};
use crate::events::Events;
use crate::rush_file::{PluginSpec, RushFile, Task};
use crate::watcher::{Key, Watcher};

/// First wait before restarting a crashed plugin.
pub const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest wait before restarting a crashed plugin.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Crashes within [`CRASH_WINDOW`] that mark a plugin failed.
pub const CRASH_LIMIT: usize = 3;
pub const CRASH_WINDOW: Duration = Duration::from_secs(5 * 60);
/// Names a plugin command may not take.
pub const BUILTINS: &[&str] = &["run", "daemon", "plugin", "help"];
/// stderr lines quoted in error messages.
const STDERR_IN_ERRORS: usize = 5;
/// How long an error waits for the last stderr lines of a dead plugin.
const STDERR_SETTLE: Duration = Duration::from_millis(300);

/// The wait before the restart that follows the `n`-th recent crash.
pub fn backoff(n: usize) -> Duration {
    let shift = n.saturating_sub(1).min(20) as u32;
    BACKOFF_START.saturating_mul(1 << shift).min(BACKOFF_MAX)
}

/// Recent crashes of one plugin.
#[derive(Debug, Default)]
pub struct Crashes(VecDeque<Instant>);

/// What to do after a crash.
#[derive(Debug, PartialEq, Eq)]
pub enum AfterCrash {
    /// Start again on next use, not before this instant.
    RetryAt(Instant),
    /// Too many crashes: failed.
    GiveUp(usize),
}

impl Crashes {
    pub fn record(&mut self, now: Instant) -> AfterCrash {
        while self
            .0
            .front()
            .is_some_and(|t| now.duration_since(*t) > CRASH_WINDOW)
        {
            self.0.pop_front();
        }
        self.0.push_back(now);
        if self.0.len() >= CRASH_LIMIT {
            AfterCrash::GiveUp(self.0.len())
        } else {
            AfterCrash::RetryAt(now + backoff(self.0.len()))
        }
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }
}

/// A plugin's failure, as reported to a task or a client.
#[derive(Debug, Clone)]
pub struct PluginFailure {
    pub plugin: String,
    /// `load`, `start`, `handshake`, `before_task`, `after_task`,
    /// `on_task_failure`, `command`.
    pub phase: String,
    pub message: String,
    pub hint: Option<String>,
    /// The last lines of its stderr.
    pub stderr: Vec<String>,
}

impl PluginFailure {
    /// Without the plugin's name: "failed in `before_task`: …".
    pub fn detail(&self) -> String {
        self.detail_with("")
    }

    /// [`detail`](Self::detail) with `note` before the stderr lines.
    pub fn detail_with(&self, note: &str) -> String {
        let mut s = format!("failed in `{}`: {}{note}", self.phase, self.message);
        if !self.stderr.is_empty() {
            s.push_str("; its last stderr lines:");
            for l in &self.stderr {
                s.push_str("\n  | ");
                s.push_str(l);
            }
        }
        s
    }

    /// "plugin `x` failed in `before_task`: …".
    pub fn render(&self) -> String {
        format!("plugin `{}` {}", self.plugin, self.detail())
    }
}

/// What a hook call came to.
enum HookOutcome {
    /// The plugin does not implement the hook.
    NotDeclared,
    Done,
    /// The plugin answered with an error (for `before_task`: a veto).
    Refused(String),
    Failed(PluginFailure),
}

struct Failed {
    message: String,
    /// The plugin's files when it failed; it is tried again when they change.
    stamp: Option<plugin_manifest::Stamp>,
}

#[derive(Default)]
struct SlotState {
    /// The `.rush` entry the process was started for.
    spec: Option<PluginSpec>,
    loaded: Option<Loaded>,
    process: Option<Arc<PluginProcess>>,
    info: Option<InitializeResult>,
    failed: Option<Failed>,
    crashes: Crashes,
    retry_at: Option<Instant>,
    starts: u32,
    last_error: Option<String>,
    /// The client environment the process was last started with: a
    /// reload (its files changed) starts the new version with it.
    env: Option<BTreeMap<String, String>>,
    /// The permissions the user accepted (the first start, or
    /// `plugin_restart`): a new version asking for more is not started
    /// until the user restarts it by hand.
    granted: Option<wire::Permissions>,
    /// Why the last update of the running process was not swapped in (it
    /// asks for more permissions): said in the output of every run that
    /// uses the plugin until it is granted or reverted.
    refused_swap: Option<String>,
}

/// One plugin of one project.
struct Slot {
    name: String,
    root: PathBuf,
    stderr: Arc<StderrLog>,
    /// Held while starting, so concurrent users wait for one start.
    starting: tokio::sync::Mutex<()>,
    st: Mutex<SlotState>,
    events: Events,
}

impl Slot {
    /// What `new` asks beyond the permissions granted so far, if anything.
    /// (Returns with the lock released: callers lock again.)
    fn widened_by(&self, new: &wire::Permissions) -> Option<String> {
        let st = self.st();
        st.granted.as_ref().and_then(|g| widened(g, new))
    }

    fn st(&self) -> std::sync::MutexGuard<'_, SlotState> {
        // Every update is a few assignments; a poisoned state is consistent.
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The live process and its handshake, if there is one.
    fn live(&self) -> Option<(Arc<PluginProcess>, InitializeResult)> {
        let st = self.st();
        let p = st.process.as_ref()?;
        if p.dead().is_some() {
            return None;
        }
        Some((p.clone(), st.info.clone()?))
    }

    fn failure(&self, phase: &str, message: String, hint: Option<String>) -> PluginFailure {
        PluginFailure {
            plugin: self.name.clone(),
            phase: phase.to_owned(),
            message,
            hint,
            stderr: self.stderr.last(STDERR_IN_ERRORS),
        }
    }

    /// Record a failure of `process`: stop it, and either schedule a
    /// restart (`permanent == false`, counted as a crash) or mark the
    /// plugin failed.
    fn fail(
        &self,
        process: Option<&Arc<PluginProcess>>,
        phase: &str,
        message: String,
        permanent: bool,
    ) -> PluginFailure {
        if let Some(p) = process {
            p.kill(&message);
        }
        let mut st = self.st();
        if let (Some(p), Some(cur)) = (process, st.process.as_ref())
            && Arc::ptr_eq(p, cur)
        {
            st.process = None;
        }
        let stamp = st.loaded.as_ref().map(|l| l.stamp.clone());
        let mut hint = None;
        let full = if permanent {
            st.failed = Some(Failed {
                message: message.clone(),
                stamp,
            });
            hint = Some(restart_hint(&self.name));
            message
        } else {
            match st.crashes.record(Instant::now()) {
                AfterCrash::RetryAt(at) => {
                    st.retry_at = Some(at);
                    format!("{message}; it will be restarted on next use")
                }
                AfterCrash::GiveUp(n) => {
                    let m = format!(
                        "{message}; it failed {n} times within {} minutes and is not restarted again",
                        CRASH_WINDOW.as_secs() / 60
                    );
                    st.failed = Some(Failed {
                        message: m.clone(),
                        stamp,
                    });
                    hint = Some(restart_hint(&self.name));
                    m
                }
            }
        };
        st.last_error = Some(format!("in `{phase}`: {full}"));
        drop(st);
        tracing::warn!(target: "plugin", plugin = %self.name, root = %self.root.display(), "failed in `{phase}`: {full}");
        self.events.send(DaemonEvent::PluginFailed {
            root: self.root.display().to_string(),
            plugin: self.name.clone(),
            message: format!("failed in `{phase}`: {full}"),
        });
        self.failure(phase, full, hint)
    }
}

fn restart_hint(name: &str) -> String {
    format!(
        "fix the plugin and run `taskrush plugin restart {name}` (it is also retried when its files change)"
    )
}

/// Every plugin process of the daemon.
#[derive(Default)]
pub struct PluginHost {
    slots: Mutex<HashMap<(PathBuf, String), Arc<Slot>>>,
    stopping: AtomicBool,
    events: Events,
    /// Where the files of running plugins are registered, so that a change
    /// reloads them (none in unit tests).
    watcher: std::sync::OnceLock<Arc<Watcher>>,
}

/// What starting a plugin needs from the request: the project and the
/// client's environment.
struct Ctx<'a> {
    config: &'a RushFile,
    env: &'a BTreeMap<String, String>,
}

impl PluginHost {
    pub fn new(events: Events) -> Arc<PluginHost> {
        Arc::new(PluginHost {
            events,
            ..PluginHost::default()
        })
    }

    /// Watch the files of running plugins with `watcher`.
    pub fn set_watcher(&self, watcher: Arc<Watcher>) {
        let _ = self.watcher.set(watcher);
    }

    /// Watch the files of `loaded` for the plugin of `slot` (in place
    /// when this returns: a change right after a start is seen).
    async fn watch_files(&self, slot: &Slot, loaded: &Loaded) {
        if let Some(w) = self.watcher.get() {
            let key = Key::Plugin(slot.root.clone(), slot.name.clone());
            w.watch_files(key, loaded.stamp.files()).await;
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<(PathBuf, String), Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn slot(&self, root: &Path, name: &str) -> Arc<Slot> {
        self.slots()
            .entry((root.to_path_buf(), name.to_owned()))
            .or_insert_with(|| {
                Arc::new(Slot {
                    name: name.to_owned(),
                    root: root.to_path_buf(),
                    stderr: StderrLog::new(name),
                    starting: tokio::sync::Mutex::new(()),
                    st: Mutex::new(SlotState::default()),
                    events: self.events.clone(),
                })
            })
            .clone()
    }

    fn existing(&self, root: &Path, name: &str) -> Option<Arc<Slot>> {
        self.slots()
            .get(&(root.to_path_buf(), name.to_owned()))
            .cloned()
    }

    /// The live process of `spec`, started (with its handshake) if needed.
    async fn ensure(
        &self,
        slot: &Arc<Slot>,
        spec: &PluginSpec,
        ctx: &Ctx<'_>,
    ) -> Result<(Arc<PluginProcess>, InitializeResult), PluginFailure> {
        plugin_manifest::check_kind(spec).map_err(|e| slot.failure("load", e.message, e.hint))?;
        sync_spec(slot, spec);
        if let Some(live) = self.live_or_reap(slot) {
            return Ok(live);
        }
        let _starting = slot.starting.lock().await;
        if let Some(live) = self.live_or_reap(slot) {
            return Ok(live);
        }
        if self.stopping.load(Ordering::Relaxed) {
            return Err(slot.failure("start", "the daemon is stopping".into(), None));
        }
        let rush_dir = ctx.config.root.clone();
        let loaded = plugin_manifest::locate(spec, &rush_dir)
            .and_then(|dir| plugin_manifest::load(&dir, Some(&spec.name), spec.version.as_deref()))
            .map_err(|e: ManifestError| {
                slot.st().last_error = Some(e.message.clone());
                slot.failure("load", e.message, e.hint)
            })?;
        // Failed before? Only its files changing (or a restart) lifts it.
        let wait = {
            let mut st = slot.st();
            if let Some(f) = &st.failed {
                let changed = f.stamp.as_ref() != Some(&loaded.stamp);
                if !changed {
                    let m = f.message.clone();
                    drop(st);
                    return Err(slot.failure(
                        "start",
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
                    "start",
                    format!("it crashed recently and is restarted in {}", human(wait)),
                    None,
                ));
            }
            tokio::time::sleep(wait).await;
        }
        let more = slot.widened_by(&loaded.manifest.permissions);
        if let Some(more) = more {
            let m = refused_message(&slot.name, &more);
            slot.st().last_error = Some(m.clone());
            return Err(slot.failure("load", m, Some(restart_hint(&slot.name))));
        }
        let launched = self.launch(slot, spec, ctx, &loaded).await;
        if !matches!(launched, Err(Launch::Spawn(_) | Launch::Config(_))) {
            slot.st().starts += 1;
        }
        let (process, info) = match launched {
            Ok(p) => p,
            Err(Launch::Config(m)) => return Err(slot.failure("load", m, None)),
            Err(Launch::Spawn(m)) => return Err(slot.fail(None, "start", m, true)),
            Err(Launch::Handshake {
                process,
                message,
                permanent,
            }) => return Err(slot.fail(Some(&process), "handshake", message, permanent)),
        };
        {
            let mut st = slot.st();
            if let Some(old) = st.process.replace(process.clone()) {
                retire(old, spec.timeout);
            }
            st.info = Some(info.clone());
            st.retry_at = None;
            st.env = Some(ctx.env.clone());
            st.granted
                .get_or_insert_with(|| loaded.manifest.permissions.clone());
            st.refused_swap = None;
        }
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
    async fn launch(
        &self,
        slot: &Arc<Slot>,
        spec: &PluginSpec,
        ctx: &Ctx<'_>,
        loaded: &Loaded,
    ) -> Result<(Arc<PluginProcess>, InitializeResult), Launch> {
        let init_config = crate::expand::expand_json(&spec.config, |k| ctx.env.get(k).cloned())
            .map_err(|e| Launch::Config(format!("in its `config`: {e}")))?;
        let env = plugin_env(ctx.env, &loaded.manifest);
        let process = PluginProcess::spawn(
            &slot.name,
            &loaded.manifest.entry_point,
            &loaded.dir,
            &env,
            slot.stderr.clone(),
        )
        .map_err(|e| {
            Launch::Spawn(format!(
                "cannot start `{}` in `{}`: {e}",
                loaded.manifest.entry_point.join(" "),
                loaded.dir.display()
            ))
        })?;
        tracing::info!(target: "plugin", plugin = %slot.name, pid = ?process.pid(), dir = %loaded.dir.display(), "started");
        let params = InitializeParams {
            protocol_versions: vec![PLUGIN_PROTOCOL_VERSION],
            taskrush_version: taskrush_protocol::VERSION.to_owned(),
            name: spec.name.clone(),
            config: init_config,
            project_root: ctx.config.root.display().to_string(),
            permissions: loaded.manifest.permissions.to_list(),
        };
        let info = match handshake(&process, &params, spec.timeout).await {
            Ok(info) => info,
            Err((message, permanent)) => {
                process.stderr_drained(STDERR_SETTLE).await;
                return Err(Launch::Handshake {
                    process,
                    message,
                    permanent,
                });
            }
        };
        if let Some(m) = manifest_mismatch(&info, loaded) {
            process.stderr_drained(STDERR_SETTLE).await;
            return Err(Launch::Handshake {
                process,
                message: m,
                permanent: true,
            });
        }
        if let Some(m) = self.collision(slot, &info, ctx.config) {
            return Err(Launch::Handshake {
                process,
                message: m,
                permanent: true,
            });
        }
        tracing::info!(target: "plugin", plugin = %slot.name, version = %info.version, hooks = ?info.hooks, commands = ?info.commands.iter().map(|c| &c.name).collect::<Vec<_>>(), "ready");
        Ok((process, info))
    }

    /// Swap in a new process of a running plugin whose files, manifest or
    /// `.rush` entry changed: the new one gets new calls once it has
    /// shaken hands, the old one finishes its calls and stops. A new
    /// version that cannot start, or that asks for more permissions, is
    /// reported and the old one keeps serving. A plugin that is not
    /// running is left alone: its next use starts the new version.
    pub async fn reload(&self, config: &RushFile, spec: &PluginSpec, reason: &str) {
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
        let loaded = match plugin_manifest::check_kind(spec)
            .and_then(|_| plugin_manifest::locate(spec, &config.root))
            .and_then(|dir| plugin_manifest::load(&dir, Some(&spec.name), spec.version.as_deref()))
        {
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
        let more = slot.widened_by(&loaded.manifest.permissions);
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
                    Launch::Handshake {
                        process, message, ..
                    } => {
                        process.kill("its handshake failed");
                        message
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
    pub async fn config_changed(self: &Arc<Self>, config: Arc<RushFile>) {
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
    pub async fn files_changed(&self, config: &RushFile, name: &str) {
        if let Some(spec) = config.plugins.iter().find(|p| p.name == name) {
            self.reload(config, spec, "its files changed").await;
        }
    }

    /// Why the running version of `name` was kept over an update that
    /// asks for more permissions, if it was.
    fn refused_swap(&self, root: &Path, name: &str) -> Option<String> {
        let slot = self.existing(root, name)?;
        let st = slot.st();
        st.refused_swap.clone()
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
                "idle",
                format!("it exited while idle: {how}"),
                false,
            );
        }
        None
    }

    /// A command name of `info` that is taken already, as an error message.
    fn collision(&self, slot: &Slot, info: &InitializeResult, config: &RushFile) -> Option<String> {
        let others: Vec<(String, Vec<String>)> = self
            .slots()
            .values()
            .filter(|s| s.root == slot.root && s.name != slot.name)
            .filter_map(|s| {
                let st = s.st();
                let live = st.process.as_ref().is_some_and(|p| p.dead().is_none());
                let cmds = st.info.as_ref().filter(|_| live)?.commands.iter();
                Some((s.name.clone(), cmds.map(|c| c.name.clone()).collect()))
            })
            .collect();
        for c in &info.commands {
            if BUILTINS.contains(&c.name.as_str()) {
                return Some(format!(
                    "its command `{}` has the name of a built-in `taskrush` command",
                    c.name
                ));
            }
            if config.tasks.contains_key(&c.name) {
                return Some(format!(
                    "its command `{}` has the name of a task of `{}`",
                    c.name,
                    config.path.display()
                ));
            }
            if let Some((other, _)) = others.iter().find(|(_, cmds)| cmds.contains(&c.name)) {
                return Some(format!(
                    "its command `{}` is also a command of plugin `{other}`",
                    c.name
                ));
            }
            if c.name.is_empty() || c.name.starts_with('-') || c.name.contains(char::is_whitespace)
            {
                return Some(format!("its command name `{}` is not usable", c.name));
            }
        }
        None
    }

    /// Call `hook` on one plugin, if it implements it.
    async fn call_hook(
        &self,
        spec: &PluginSpec,
        ctx: &Ctx<'_>,
        hook: Hook,
        params: impl FnOnce(&PluginManifest) -> Result<Value, String>,
    ) -> HookOutcome {
        let slot = self.slot(&ctx.config.root, &spec.name);
        let phase = hook.method();
        let (process, info) = match self.ensure(&slot, spec, ctx).await {
            Ok(p) => p,
            Err(f) => return HookOutcome::Failed(f),
        };
        if !info.hooks.contains(&hook) {
            return HookOutcome::NotDeclared;
        }
        let manifest = match slot.st().loaded.as_ref() {
            Some(l) => l.manifest.clone(),
            None => return HookOutcome::NotDeclared,
        };
        let params = match params(&manifest) {
            Ok(p) => p,
            Err(m) => return HookOutcome::Failed(slot.failure(phase, m, None)),
        };
        match process.call(phase, params, spec.timeout).await {
            Ok(_) => HookOutcome::Done,
            Err(CallError::Remote { message, .. }) => HookOutcome::Refused(message),
            Err(e) => {
                if matches!(e, CallError::Gone(_)) {
                    process.stderr_drained(STDERR_SETTLE).await;
                }
                HookOutcome::Failed(fail_call(&slot, &process, phase, e))
            }
        }
    }

    /// The commands of the project's plugins. With `env`, plugins not
    /// running yet are started (in declared order); without, only running
    /// ones are asked.
    pub async fn commands(
        &self,
        config: &RushFile,
        env: Option<&BTreeMap<String, String>>,
    ) -> Vec<CommandInfo> {
        let mut out = Vec::new();
        for spec in &config.plugins {
            let info = match env {
                Some(env) => {
                    let slot = self.slot(&config.root, &spec.name);
                    self.ensure(&slot, spec, &Ctx { config, env })
                        .await
                        .ok()
                        .map(|(_, i)| i)
                }
                None => self
                    .existing(&config.root, &spec.name)
                    .and_then(|s| s.live())
                    .map(|(_, i)| i),
            };
            for c in info.map(|i| i.commands).unwrap_or_default() {
                out.push(CommandInfo {
                    plugin: spec.name.clone(),
                    name: c.name,
                    description: c.description,
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The plugin adding command `name`, if any (plugins are started).
    pub async fn command_owner(
        &self,
        config: &RushFile,
        name: &str,
        env: &BTreeMap<String, String>,
    ) -> Option<String> {
        if config.plugins.is_empty() {
            return None;
        }
        self.commands(config, Some(env))
            .await
            .into_iter()
            .find(|c| c.name == name)
            .map(|c| c.plugin)
    }

    /// Run plugin command `name`.
    pub async fn command(
        &self,
        config: &RushFile,
        name: &str,
        args: Vec<String>,
        cwd: &str,
        env: &BTreeMap<String, String>,
    ) -> Result<CommandResult, PluginFailure> {
        let Some(owner) = self.command_owner(config, name, env).await else {
            let known: Vec<String> = self
                .commands(config, None)
                .await
                .into_iter()
                .map(|c| format!("`{}`", c.name))
                .collect();
            return Err(PluginFailure {
                plugin: String::new(),
                phase: "command".into(),
                message: format!("no plugin adds a command named `{name}`"),
                hint: Some(if known.is_empty() {
                    "`taskrush plugin list` shows the plugins and their state".into()
                } else {
                    format!("the plugin commands are {}", known.join(", "))
                }),
                stderr: Vec::new(),
            });
        };
        let Some(spec) = config.plugins.iter().find(|p| p.name == owner) else {
            return Err(PluginFailure {
                plugin: owner,
                phase: "command".into(),
                message: "the plugin vanished from the `.rush` file".into(),
                hint: None,
                stderr: Vec::new(),
            });
        };
        let ctx = Ctx { config, env };
        let slot = self.slot(&config.root, &spec.name);
        let (process, _) = self.ensure(&slot, spec, &ctx).await?;
        let params = CommandParams {
            name: name.to_owned(),
            args,
            cwd: cwd.to_owned(),
        };
        let params = serde_json::to_value(&params).unwrap_or(Value::Null);
        match process
            .call(wire::method::COMMAND, params, spec.timeout)
            .await
        {
            Ok(v) => serde_json::from_value::<CommandResult>(v).map_err(|e| {
                fail_call(
                    &slot,
                    &process,
                    "command",
                    CallError::Protocol(format!("its answer to `command` is malformed: {e}")),
                )
            }),
            Err(CallError::Remote { message, .. }) => {
                Err(slot.failure("command", format!("it refused: {message}"), None))
            }
            Err(e) => Err(fail_call(&slot, &process, "command", e)),
        }
    }

    /// The status of every plugin of the project, in declared order.
    pub fn list(&self, config: &RushFile) -> Vec<PluginStatus> {
        config
            .plugins
            .iter()
            .map(|spec| self.status(config, spec).0)
            .collect()
    }

    fn status(&self, config: &RushFile, spec: &PluginSpec) -> (PluginStatus, Option<Loaded>) {
        let loaded = plugin_manifest::check_kind(spec)
            .and_then(|_| plugin_manifest::locate(spec, &config.root))
            .and_then(|dir| plugin_manifest::load(&dir, Some(&spec.name), spec.version.as_deref()));
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
        };
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
            }
            Err(e) => {
                status.state = PluginState::Failed;
                status.error = Some(e.message.clone());
            }
        }
        (status, loaded.ok())
    }

    /// One plugin in detail.
    pub fn info(&self, config: &RushFile, name: &str) -> Option<PluginDetails> {
        let spec = config.plugins.iter().find(|p| p.name == name)?;
        let (status, loaded) = self.status(config, spec);
        let slot = self.existing(&config.root, name);
        let (stderr, last_error) = match &slot {
            Some(s) => (
                s.stderr.last(super::process::STDERR_KEEP),
                s.st().last_error.clone(),
            ),
            None => (Vec::new(), None),
        };
        Some(PluginDetails {
            path: loaded.as_ref().map(|l| l.dir.display().to_string()),
            manifest: loaded.map(|l| l.manifest),
            required: spec.required,
            timeout_ms: spec.timeout.as_millis() as u64,
            stderr,
            last_error: last_error.or_else(|| status.error.clone()),
            status,
        })
    }

    /// Stop the plugin, forget its failures, start it again.
    pub async fn restart(
        &self,
        config: &RushFile,
        name: &str,
        env: &BTreeMap<String, String>,
    ) -> Result<PluginStatus, PluginFailure> {
        let Some(spec) = config.plugins.iter().find(|p| p.name == name) else {
            return Err(not_declared(config, name));
        };
        let slot = self.slot(&config.root, name);
        let old = {
            let _starting = slot.starting.lock().await;
            let mut st = slot.st();
            st.failed = None;
            st.crashes.clear();
            st.retry_at = None;
            st.info = None;
            // Restarting by hand accepts the manifest's permissions.
            st.granted = None;
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
    pub async fn shutdown_all(&self) {
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

/// An unknown plugin name, as a failure.
pub fn not_declared(config: &RushFile, name: &str) -> PluginFailure {
    let names: Vec<String> = config
        .plugins
        .iter()
        .map(|p| format!("`{}`", p.name))
        .collect();
    PluginFailure {
        plugin: name.to_owned(),
        phase: "lookup".into(),
        message: format!("no plugin named `{name}` in `{}`", config.path.display()),
        hint: Some(if names.is_empty() {
            "declare it under `plugins:` in the `.rush` file".into()
        } else {
            format!("the plugins are {}", names.join(", "))
        }),
        stderr: Vec::new(),
    }
}

/// A new `.rush` entry for a plugin means a new process.
fn sync_spec(slot: &Slot, spec: &PluginSpec) {
    let mut st = slot.st();
    let same = st.spec.as_ref().is_some_and(|s| same_entry(s, spec));
    if same {
        return;
    }
    let had = st.spec.replace(spec.clone()).is_some();
    if had {
        tracing::info!(target: "plugin", plugin = %slot.name, "its `.rush` entry changed: restarting it");
        if let Some(p) = st.process.take() {
            // Calls in flight (a run that started with the old entry)
            // finish; then it stops.
            retire(p, spec.timeout);
        }
        st.info = None;
        st.failed = None;
        st.crashes.clear();
        st.retry_at = None;
    }
}

/// Why [`PluginHost::launch`] failed.
enum Launch {
    /// Its `config` cannot be expanded.
    Config(String),
    /// It could not be started at all.
    Spawn(String),
    /// It started but its handshake failed (`permanent`: a restart cannot
    /// fix it).
    Handshake {
        process: Arc<PluginProcess>,
        message: String,
        permanent: bool,
    },
}

/// The same `.rush` entry, wherever it sits in the file.
fn same_entry(a: &PluginSpec, b: &PluginSpec) -> bool {
    PluginSpec {
        line: 0,
        ..a.clone()
    } == PluginSpec {
        line: 0,
        ..b.clone()
    }
}

/// Stop `process` once nobody holds it any more (its calls in flight
/// ended), or after `limit` plus a margin at the latest.
fn retire(process: Arc<PluginProcess>, limit: Duration) {
    tokio::spawn(async move {
        let deadline = Instant::now() + limit + Duration::from_secs(1);
        // Callers hold the process for the length of a call: when only
        // this task holds it, no call is in flight and none can start.
        while Arc::strong_count(&process) > 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        process.shutdown().await;
    });
}

/// What `new` asks for beyond `granted`, as "`network` `x`, …".
pub fn widened(granted: &wire::Permissions, new: &wire::Permissions) -> Option<String> {
    let mut more = Vec::new();
    for (kind, old, new) in [
        ("filesystem", &granted.filesystem, &new.filesystem),
        ("network", &granted.network, &new.network),
        ("environment", &granted.environment, &new.environment),
        ("process", &granted.process, &new.process),
    ] {
        for item in new {
            if !old.contains(item) {
                more.push(format!("{kind} `{item}`"));
            }
        }
    }
    (!more.is_empty()).then(|| more.join(", "))
}

fn refused_message(name: &str, more: &str) -> String {
    format!(
        "its new version asks for more permissions ({more}) and was not started; the running version keeps serving. To grant them, run `taskrush plugin restart {name}` (the grant step); or revert the manifest's `permissions`"
    )
}

/// A call that failed for another reason than the plugin's own error.
fn fail_call(
    slot: &Slot,
    process: &Arc<PluginProcess>,
    phase: &str,
    e: CallError,
) -> PluginFailure {
    let (message, permanent) = match e {
        CallError::Timeout(d) => (
            format!("no answer within {} (the plugin was killed)", human(d)),
            false,
        ),
        CallError::Gone(how) => (format!("it exited ({how})"), false),
        CallError::Protocol(m) => (m, true),
        CallError::Remote { message, .. } => (message, false),
    };
    slot.fail(Some(process), phase, message, permanent)
}

/// `initialize`; on failure the message and whether a restart cannot help.
async fn handshake(
    process: &PluginProcess,
    params: &InitializeParams,
    limit: Duration,
) -> Result<InitializeResult, (String, bool)> {
    let params = serde_json::to_value(params).unwrap_or(Value::Null);
    match process.call(wire::method::INITIALIZE, params, limit).await {
        Ok(v) => {
            let info: InitializeResult = serde_json::from_value(v).map_err(|e| {
                (
                    format!("its answer to `initialize` is malformed: {e}"),
                    true,
                )
            })?;
            if info.protocol != PLUGIN_PROTOCOL_VERSION {
                return Err((
                    format!(
                        "it speaks plugin protocol {}, this host speaks {PLUGIN_PROTOCOL_VERSION}",
                        info.protocol
                    ),
                    true,
                ));
            }
            Ok(info)
        }
        Err(CallError::Remote { code, message }) if code == wire::error::UNSUPPORTED_PROTOCOL => {
            Err((
                format!(
                    "it speaks none of the protocol versions this host offers ({PLUGIN_PROTOCOL_VERSION}): {message}"
                ),
                true,
            ))
        }
        Err(CallError::Remote { message, .. }) => {
            Err((format!("it refused to initialize: {message}"), true))
        }
        Err(CallError::Gone(how)) => {
            Err((format!("it exited before the handshake ({how})"), false))
        }
        Err(CallError::Timeout(d)) => Err((
            format!(
                "no answer to `initialize` within {} (the plugin was killed)",
                human(d)
            ),
            false,
        )),
        Err(CallError::Protocol(m)) => Err((m, true)),
    }
}

/// Where the answer to `initialize` names another plugin or version than
/// the manifest (the `.rush` entry's `version` requirement was checked
/// against the manifest, so the process must be what the manifest says).
fn manifest_mismatch(info: &InitializeResult, loaded: &Loaded) -> Option<String> {
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

/// The environment of a plugin process: what its manifest's environment
/// permission names, from the client's environment, plus what any program
/// needs to run (`PATH`, `HOME`, `LANG`, `LC_*`, `TMPDIR`) and `TASKRUSH_*`.
pub fn plugin_env(
    client: &BTreeMap<String, String>,
    manifest: &PluginManifest,
) -> BTreeMap<String, String> {
    client
        .iter()
        .filter(|(k, _)| {
            matches!(k.as_str(), "PATH" | "HOME" | "LANG" | "TMPDIR")
                || k.starts_with("LC_")
                || k.starts_with("TASKRUSH_")
                || manifest.permissions.environment.contains(k)
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The plugin's config for one task: its global `config` with the task's
/// `plugins.<name>` keys on top (a shallow merge: a task key replaces the
/// global value whole), `${VAR}` expanded from the client's environment.
pub fn task_config(
    spec: &PluginSpec,
    task: &Task,
    env: &BTreeMap<String, String>,
) -> Result<Value, String> {
    let merged = match (spec.config.clone(), task.plugins.get(&spec.name)) {
        (Value::Object(mut global), Some(Value::Object(local))) => {
            global.extend(local.clone());
            Value::Object(global)
        }
        (global, None) => global,
        (_, Some(local)) => local.clone(),
    };
    crate::expand::expand_json(&merged, |k| env.get(k).cloned()).map_err(|e| {
        format!(
            "in the config of plugin `{}` for task `{}`: {e}",
            spec.name, task.name
        )
    })
}

/// The plugins of one run: the host, the run's config snapshot and the
/// client's environment.
pub struct RunPlugins {
    host: Arc<PluginHost>,
    config: Arc<RushFile>,
    env: BTreeMap<String, String>,
    run_id: u64,
    /// (task, plugin) pairs where the plugin failed: it is not called
    /// again for that task (no restart in the middle of one task).
    failed: Mutex<std::collections::HashSet<(String, String)>>,
    /// Plugins whose refused update this run has reported already.
    refusals_told: Mutex<std::collections::HashSet<String>>,
}

impl RunPlugins {
    pub fn new(
        host: Arc<PluginHost>,
        config: Arc<RushFile>,
        env: BTreeMap<String, String>,
        run_id: u64,
    ) -> RunPlugins {
        RunPlugins {
            host,
            config,
            env,
            run_id,
            failed: Mutex::new(Default::default()),
            refusals_told: Mutex::new(Default::default()),
        }
    }

    fn failed_for(&self, task: &Task, spec: &PluginSpec) -> bool {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&(task.name.clone(), spec.name.clone()))
    }

    fn mark_failed(&self, task: &Task, spec: &PluginSpec) {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((task.name.clone(), spec.name.clone()));
    }

    /// Say once per run, in its output, that a plugin's update was not
    /// swapped in for asking more permissions (the log, the event stream
    /// and `plugin info` say it too, but nobody watches those).
    async fn tell_refused_swap(
        &self,
        spec: &PluginSpec,
        task: &Task,
        events: &mpsc::Sender<RunEvent>,
    ) {
        let Some(m) = self.host.refused_swap(&self.config.root, &spec.name) else {
            return;
        };
        let first = self
            .refusals_told
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(spec.name.clone());
        if first {
            message(events, spec, task, "warn", m).await;
        }
    }

    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            config: &self.config,
            env: &self.env,
        }
    }

    fn context(
        &self,
        spec: &PluginSpec,
        task: &Task,
        task_env: &BTreeMap<String, String>,
        manifest: &PluginManifest,
    ) -> Result<TaskContext, String> {
        Ok(TaskContext {
            task_name: task.name.clone(),
            command: task.cmd.clone().unwrap_or_default(),
            working_dir: self.config.root.display().to_string(),
            env_vars: task_env
                .iter()
                .filter(|(k, _)| manifest.permissions.environment.contains(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            config: task_config(spec, task, &self.env)?,
            run_id: self.run_id,
        })
    }

    /// `before_task` of every plugin, in declared order. `Err` is why the
    /// task must not run: a veto, or a required plugin that failed.
    pub async fn before_task(
        &self,
        task: &Task,
        task_env: &BTreeMap<String, String>,
        events: &mpsc::Sender<RunEvent>,
    ) -> Result<(), String> {
        for spec in &self.config.plugins {
            let outcome = self
                .host
                .call_hook(spec, &self.ctx(), Hook::BeforeTask, |m| {
                    let context = self.context(spec, task, task_env, m)?;
                    params(HookParams {
                        context,
                        result: None,
                        error: None,
                    })
                })
                .await;
            self.tell_refused_swap(spec, task, events).await;
            match outcome {
                HookOutcome::NotDeclared | HookOutcome::Done => {}
                HookOutcome::Refused(m) => {
                    return Err(format!("vetoed by plugin `{}`: {m}", spec.name));
                }
                HookOutcome::Failed(f) if spec.required => {
                    self.mark_failed(task, spec);
                    return Err(f.render());
                }
                HookOutcome::Failed(f) => {
                    self.mark_failed(task, spec);
                    skipped(events, spec, task, &f).await;
                }
            }
        }
        Ok(())
    }

    /// `on_task_failure` (when `error` is given) then `after_task`, each in
    /// reverse declared order. Errors answered by a plugin are reported as
    /// warnings; `Some` is why the task must count as failed: a required
    /// plugin that failed.
    pub async fn after_task(
        &self,
        task: &Task,
        task_env: &BTreeMap<String, String>,
        result: TaskResult,
        error: Option<TaskError>,
        events: &mpsc::Sender<RunEvent>,
    ) -> Option<String> {
        let mut fatal = None;
        let mut phases = Vec::new();
        if error.is_some() {
            phases.push(Hook::OnTaskFailure);
        }
        phases.push(Hook::AfterTask);
        for hook in phases {
            for spec in self.config.plugins.iter().rev() {
                if self.failed_for(task, spec) {
                    continue;
                }
                let outcome = self
                    .host
                    .call_hook(spec, &self.ctx(), hook, |m| {
                        let context = self.context(spec, task, task_env, m)?;
                        let (result, error) = match hook {
                            Hook::OnTaskFailure => (None, error.clone()),
                            _ => (Some(result.clone()), None),
                        };
                        params(HookParams {
                            context,
                            result,
                            error,
                        })
                    })
                    .await;
                self.tell_refused_swap(spec, task, events).await;
                match outcome {
                    HookOutcome::NotDeclared | HookOutcome::Done => {}
                    HookOutcome::Refused(m) => {
                        message(
                            events,
                            spec,
                            task,
                            "warn",
                            format!("`{}` failed: {m}", hook.method()),
                        )
                        .await;
                    }
                    HookOutcome::Failed(f) if spec.required => {
                        self.mark_failed(task, spec);
                        fatal.get_or_insert(f.render());
                    }
                    HookOutcome::Failed(f) => {
                        self.mark_failed(task, spec);
                        skipped(events, spec, task, &f).await;
                    }
                }
            }
        }
        fatal
    }
}

fn params(p: HookParams) -> Result<Value, String> {
    serde_json::to_value(p).map_err(|e| format!("cannot encode the hook's params: {e}"))
}

async fn skipped(
    events: &mpsc::Sender<RunEvent>,
    spec: &PluginSpec,
    task: &Task,
    f: &PluginFailure,
) {
    message(
        events,
        spec,
        task,
        "warn",
        f.detail_with("; the task goes on without it (the plugin is not required)"),
    )
    .await;
}

async fn message(
    events: &mpsc::Sender<RunEvent>,
    spec: &PluginSpec,
    task: &Task,
    level: &str,
    message: String,
) {
    let _ = events
        .send(RunEvent::PluginMessage {
            plugin: spec.name.clone(),
            task: task.name.clone(),
            level: level.to_owned(),
            message,
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_100ms_up_to_30s() {
        let ms: Vec<u128> = (1..=12).map(|n| backoff(n).as_millis()).collect();
        assert_eq!(
            ms,
            [
                100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000, 30000
            ]
        );
        assert_eq!(backoff(1000), BACKOFF_MAX);
    }

    #[tokio::test(start_paused = true)]
    async fn three_crashes_within_five_minutes_give_up_but_spread_ones_do_not() {
        let mut c = Crashes::default();
        let t0 = Instant::now();
        assert_eq!(
            c.record(t0),
            AfterCrash::RetryAt(t0 + Duration::from_millis(100))
        );
        tokio::time::advance(Duration::from_secs(60)).await;
        let t1 = Instant::now();
        assert_eq!(
            c.record(t1),
            AfterCrash::RetryAt(t1 + Duration::from_millis(200))
        );
        // The first crash leaves the window: still only two recent ones.
        tokio::time::advance(Duration::from_secs(250)).await;
        let t2 = Instant::now();
        assert_eq!(
            c.record(t2),
            AfterCrash::RetryAt(t2 + Duration::from_millis(200))
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(c.record(Instant::now()), AfterCrash::GiveUp(3));
    }

    fn spec(config: Value) -> PluginSpec {
        PluginSpec {
            name: "p".into(),
            version: None,
            kind: crate::rush_file::PluginKind::External,
            path: None,
            required: false,
            config,
            timeout: Duration::from_secs(1),
            line: 1,
        }
    }

    #[test]
    fn task_config_merges_shallowly_and_expands_from_the_client() {
        let mut task = Task {
            name: "t".into(),
            cmd: None,
            description: None,
            depends_on: vec![],
            cache_files: vec![],
            env: vec![],
            before: None,
            after: None,
            plugins: BTreeMap::new(),
            line: 1,
        };
        task.plugins.insert(
            "p".into(),
            serde_json::json!({"b": {"x": 1}, "c": "${WHO}"}),
        );
        let env = BTreeMap::from([("WHO".to_owned(), "me".to_owned())]);
        let s = spec(serde_json::json!({"a": 1, "b": {"y": 2}}));
        assert_eq!(
            task_config(&s, &task, &env).unwrap(),
            serde_json::json!({"a": 1, "b": {"x": 1}, "c": "me"})
        );
        task.plugins.clear();
        assert_eq!(
            task_config(&s, &task, &env).unwrap(),
            serde_json::json!({"a": 1, "b": {"y": 2}})
        );
    }

    #[test]
    fn the_plugin_environment_holds_only_granted_and_basic_variables() {
        let manifest: PluginManifest = toml::from_str(
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
        let env = plugin_env(&client, &manifest);
        let keys: Vec<&str> = env.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "HOME",
                "LANG",
                "LC_ALL",
                "PATH",
                "TASKRUSH_SOCKET",
                "TMPDIR",
                "TOKEN"
            ]
        );
    }
}
