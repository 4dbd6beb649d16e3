//! Hooks: `before_task`, `after_task` and `on_task_failure` of a run's
//! plugins, in the order the `.rush` file declares them (the last two in
//! reverse order), with each task's plugin config.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use taskrush_protocol::plugin::{
    Hook, HookParams, Permissions, TaskContext, TaskError, TaskResult,
};
use taskrush_protocol::run::RunEvent;
use tokio::sync::mpsc;

use super::failure::{Phase, PluginFailure};
use super::host::{Ctx, PluginHost};
use super::host_calls::{CallContext, RunView};
use super::process::CallError;
use super::slot::fail_call;
use super::start::STDERR_SETTLE;
use crate::config::rush_file::{PluginSpec, RushFile, Task};
use crate::metrics::{self, PluginStats};
use taskrush_protocol::host::TaskResultEntry;

/// Why a task fails because of its plugins' hooks.
#[derive(Debug, Clone)]
pub(crate) enum HookFailure {
    /// A plugin's `before_task` answered with an error: the task must not
    /// run.
    Vetoed { plugin: String, message: String },
    /// A plugin marked `required: true` failed in a hook.
    Required(PluginFailure),
    /// A plugin marked `required: true` is disabled for the project.
    Disabled { plugin: String },
}

impl std::fmt::Display for HookFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HookFailure::Vetoed { plugin, message } => {
                write!(f, "vetoed by plugin `{plugin}`: {message}")
            }
            HookFailure::Required(failure) => f.write_str(&failure.render()),
            HookFailure::Disabled { plugin } => write!(
                f,
                "the required plugin `{plugin}` is disabled for this project\nhint: enable it with `taskrush plugin enable {plugin}`"
            ),
        }
    }
}

impl std::error::Error for HookFailure {}

/// What a hook call came to.
enum HookOutcome {
    /// The plugin does not implement the hook.
    NotDeclared,
    Done,
    /// The plugin answered with an error (for `before_task`: a veto).
    Refused(String),
    Failed(PluginFailure),
}

impl PluginHost {
    /// Call `hook` on one plugin, if it implements it; with the time the
    /// call took (zero when none was made: its start is not counted).
    async fn call_hook(
        &self,
        spec: &PluginSpec,
        ctx: &Ctx<'_>,
        run_id: u64,
        hook: Hook,
        params: impl FnOnce(&Permissions) -> Result<Value, String>,
    ) -> (HookOutcome, Duration) {
        let mut took = Duration::ZERO;
        let outcome = self
            .call_hook_timed(spec, ctx, (run_id, hook), params, &mut took)
            .await;
        (outcome, took)
    }

    async fn call_hook_timed(
        &self,
        spec: &PluginSpec,
        ctx: &Ctx<'_>,
        (run_id, hook): (u64, Hook),
        params: impl FnOnce(&Permissions) -> Result<Value, String>,
        took: &mut Duration,
    ) -> HookOutcome {
        let slot = self.slot(&ctx.config.root, &spec.name);
        let phase = Phase::Hook(hook);
        let (process, info) = match self.ensure(&slot, spec, ctx).await {
            Ok(p) => p,
            // Not a call (nothing was sent): the start's failure is counted
            // as a crash or a failed mark by the slot.
            Err(f) => return HookOutcome::Failed(f),
        };
        if !info.hooks.contains(&hook) {
            return HookOutcome::NotDeclared;
        }
        // Built under the slot's lock, from the effective permissions of
        // the running process.
        let params = match slot.st().effective.as_ref() {
            Some(p) => params(p),
            None => return HookOutcome::NotDeclared,
        };
        let params = match params {
            Ok(p) => p,
            Err(m) => return HookOutcome::Failed(slot.failure(phase, m, None)),
        };
        let began = Instant::now();
        let (reply, bytes) = process
            .call_counted(
                CallContext::run(run_id),
                hook.method(),
                params,
                super::wasm::deadline_of(spec),
            )
            .await;
        if let Some(calls) = slot.metrics.hook(hook) {
            let end = match &reply {
                Ok(_) => metrics::End::Ok,
                Err(CallError::Remote { .. }) if hook == Hook::BeforeTask => metrics::End::Veto,
                Err(CallError::Timeout(_)) => metrics::End::Timeout,
                Err(_) => metrics::End::Error,
            };
            calls.record(began.elapsed(), end, bytes);
        }
        *took = began.elapsed();
        match reply {
            Ok(_) => HookOutcome::Done,
            Err(CallError::Remote { message, .. }) => {
                HookOutcome::Refused(super::redact::scrub(&message))
            }
            Err(e) => {
                if matches!(e, CallError::Gone(_)) {
                    process.stderr_drained(STDERR_SETTLE).await;
                }
                HookOutcome::Failed(fail_call(&slot, &process, phase, e))
            }
        }
    }
}

/// The plugin's config for one task: its global `config` with the task's
/// `plugins.<name>` keys on top (a shallow merge: a task key replaces the
/// global value whole), `${VAR}` expanded from the client's environment
/// (whose secrets [`RunPlugins::new`] remembered).
fn task_config(
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
    super::redact::expand_config_in(&merged, env).map_err(|e| {
        format!(
            "in the config of plugin `{}` for task `{}`: {e}",
            spec.name, task.name
        )
    })
}

/// The plugins of one run: the host, the run's config snapshot and the
/// client's environment.
pub(crate) struct RunPlugins {
    host: Arc<PluginHost>,
    config: Arc<RushFile>,
    env: BTreeMap<String, String>,
    run_id: u64,
    /// (task, plugin) pairs where the plugin failed: it is not called
    /// again for that task (no restart in the middle of one task).
    failed: Mutex<std::collections::HashSet<(String, String)>>,
    /// Plugins whose refused update this run has reported already.
    refusals_told: Mutex<std::collections::HashSet<String>>,
    /// The run as host calls see it (`task_graph`, `task_results`).
    view: Arc<RunView>,
    /// Per plugin, the `log`/`progress` lines this run was shown (bounded
    /// by [`super::output`]).
    shown: Mutex<BTreeMap<String, Arc<std::sync::atomic::AtomicU32>>>,
    /// Per plugin (in declared order): disabled for the project when the
    /// run started (`taskrush plugin disable`).
    disabled: Vec<bool>,
    /// Per plugin: its figures (the ones its slot records into).
    stats: Vec<Arc<PluginStats>>,
    /// Per task in progress: the time each plugin's hooks took so far.
    task_hooks: Mutex<HashMap<String, Vec<Duration>>>,
    /// Per plugin: the time its hooks added to this run's tasks, and to
    /// how many.
    added: Mutex<Vec<(Duration, u32)>>,
    /// The tasks' time in this run (hooks included), in microseconds.
    tasks_us: AtomicU64,
}

impl Drop for RunPlugins {
    fn drop(&mut self) {
        super::host_calls::run_ended(self.run_id, &self.view);
    }
}

impl RunPlugins {
    pub(crate) fn new(
        host: Arc<PluginHost>,
        config: Arc<RushFile>,
        env: BTreeMap<String, String>,
        run_id: u64,
    ) -> RunPlugins {
        super::redact::remember_env(&env);
        let view = Arc::new(RunView {
            config: config.clone(),
            env: Arc::new(env.clone()),
            results: Mutex::new(Vec::new()),
        });
        super::host_calls::run_started(run_id, view.clone());
        let disabled = config
            .plugins
            .iter()
            .map(|p| super::disabled::is_disabled(&config.root, &p.name))
            .collect();
        let stats = config
            .plugins
            .iter()
            .map(|p| metrics::plugin(&config.root, &p.name))
            .collect();
        let added = Mutex::new(vec![(Duration::ZERO, 0); config.plugins.len()]);
        RunPlugins {
            view,
            host,
            config,
            env,
            run_id,
            failed: Mutex::new(Default::default()),
            refusals_told: Mutex::new(Default::default()),
            shown: Mutex::new(Default::default()),
            disabled,
            stats,
            task_hooks: Mutex::new(HashMap::new()),
            added,
            tasks_us: AtomicU64::new(0),
        }
    }

    /// Add the time the hooks of plugin `i` took to task `task`.
    fn hook_took(&self, task: &Task, i: usize, d: Duration) {
        let mut per_task = self.task_hooks.lock().unwrap_or_else(|p| p.into_inner());
        let times = match per_task.get_mut(&task.name) {
            Some(t) => t,
            None => per_task
                .entry(task.name.clone())
                .or_insert_with(|| vec![Duration::ZERO; self.config.plugins.len()]),
        };
        if let Some(t) = times.get_mut(i) {
            *t += d;
        }
    }

    /// Task `task`'s hooks are done: the time each plugin added to it is
    /// counted.
    fn task_hooks_done(&self, task: &Task) {
        let times = self
            .task_hooks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&task.name);
        let Some(times) = times else { return };
        let mut added = self.added.lock().unwrap_or_else(|p| p.into_inner());
        for (i, d) in times.into_iter().enumerate() {
            if d.is_zero() {
                continue;
            }
            self.stats[i].added(d);
            if let Some(a) = added.get_mut(i) {
                a.0 += d;
                a.1 += 1;
            }
        }
    }

    /// A task of the run ended after `d` (hooks included).
    pub(crate) fn task_took(&self, d: Duration) {
        self.tasks_us.fetch_add(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// The run's end: one line per plugin whose hooks added more than the
    /// user config's share of the tasks' time (and at least its minimum),
    /// e.g. ``slack-notify added 840 ms to 3 tasks (p95 310 ms per
    /// after_task)``.
    pub(crate) fn slow_plugins(&self) -> Vec<String> {
        let slow = crate::config::user_config::current().config.metrics;
        let tasks = Duration::from_micros(self.tasks_us.load(Ordering::Relaxed));
        let added = self.added.lock().unwrap_or_else(|p| p.into_inner());
        let mut lines = Vec::new();
        for (i, (d, n)) in added.iter().enumerate() {
            if *n == 0
                || *d < slow.slow_plugin_min
                || d.as_secs_f64() <= slow.slow_plugin_share * tasks.as_secs_f64()
            {
                continue;
            }
            let name = &self.config.plugins[i].name;
            let per = match self.stats[i].slowest_hook() {
                Some((hook, p95)) => format!(" (p95 {} per {hook})", ms(p95)),
                None => String::new(),
            };
            let share = if tasks.is_zero() {
                String::new()
            } else {
                format!(
                    ", {:.0}% of their time",
                    100.0 * d.as_secs_f64() / tasks.as_secs_f64()
                )
            };
            let tasks_word = if *n == 1 { "task" } else { "tasks" };
            lines.push(format!(
                "{name} added {} to {n} {tasks_word}{per}{share}",
                ms(*d)
            ));
        }
        lines
    }

    /// Say once per run that a disabled plugin's hooks are skipped.
    async fn tell_disabled(&self, spec: &PluginSpec, task: &Task, events: &mpsc::Sender<RunEvent>) {
        let first = self
            .refusals_told
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(format!("disabled {}", spec.name));
        if first {
            message(
                events,
                spec,
                task,
                "warn",
                format!(
                    "plugin `{}` is disabled for this project: its hooks are skipped (`taskrush plugin enable {}` enables it)",
                    spec.name, spec.name
                ),
            )
            .await;
        }
    }

    /// Route what plugin `spec` logs to this run's output while the guard
    /// lives (one hook call, its start included).
    fn serving(
        &self,
        spec: &PluginSpec,
        task: &Task,
        events: &mpsc::Sender<RunEvent>,
    ) -> super::output::ServingGuard {
        let shown = self
            .shown
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(spec.name.clone())
            .or_default()
            .clone();
        super::output::serving(
            &self.config.root,
            &spec.name,
            self.run_id,
            &task.name,
            events,
            shown,
        )
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

    /// Say once per run, in its output, that the user config cannot be
    /// used (the last good one is in force).
    async fn tell_config_error(&self, events: &mpsc::Sender<RunEvent>) {
        if self.config.plugins.is_empty() {
            return;
        }
        let Some(e) = crate::config::user_config::current().error else {
            return;
        };
        let first = self
            .refusals_told
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert("user config".into());
        if first {
            let _ = events
                .send(RunEvent::Warning {
                    task: None,
                    message: format!("{e}; the last good user config stays in force"),
                })
                .await;
        }
    }

    /// Say once per run, in its output, which WebAssembly plugin values
    /// of the `.rush` are above the user's caps (and lowered to them).
    async fn tell_over_caps(&self, events: &mpsc::Sender<RunEvent>) {
        for spec in &self.config.plugins {
            for line in super::wasm::over_caps(spec) {
                let first = self
                    .refusals_told
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(line.clone());
                if first {
                    tracing::warn!(target: "plugin", "{line}");
                    let _ = events
                        .send(RunEvent::Warning {
                            task: None,
                            message: line,
                        })
                        .await;
                }
            }
        }
    }

    /// Whether to warn about failure `f`: a plugin not started for want
    /// of consent is told once per run (every other failure each time).
    fn first_consent_warning(&self, spec: &PluginSpec, f: &PluginFailure) -> bool {
        f.phase != Phase::Consent
            || self
                .refusals_told
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(format!("consent {}", spec.name))
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
        effective: &Permissions,
    ) -> Result<TaskContext, String> {
        Ok(TaskContext {
            task_name: task.name.clone(),
            command: task.cmd.clone().unwrap_or_default(),
            working_dir: task.working_dir(&self.config.root).display().to_string(),
            env_vars: task_env
                .iter()
                .filter(|(k, _)| effective.environment.contains(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            config: task_config(spec, task, &self.env)?,
            run_id: self.run_id,
        })
    }

    /// `before_task` of every plugin, in declared order. `Err` is why the
    /// task must not run: a veto, or a required plugin that failed.
    pub(crate) async fn before_task(
        &self,
        task: &Task,
        task_env: &BTreeMap<String, String>,
        events: &mpsc::Sender<RunEvent>,
    ) -> Result<(), HookFailure> {
        self.tell_config_error(events).await;
        self.tell_over_caps(events).await;
        for (i, spec) in self.config.plugins.iter().enumerate() {
            if self.disabled[i] {
                if spec.required {
                    return Err(HookFailure::Disabled {
                        plugin: spec.name.clone(),
                    });
                }
                self.tell_disabled(spec, task, events).await;
                continue;
            }
            let serving = self.serving(spec, task, events);
            let (outcome, took) = self
                .host
                .call_hook(spec, &self.ctx(), self.run_id, Hook::BeforeTask, |m| {
                    let context = self.context(spec, task, task_env, m)?;
                    params(HookParams {
                        context,
                        result: None,
                        error: None,
                    })
                })
                .await;
            serving.finish().await;
            self.hook_took(task, i, took);
            self.tell_refused_swap(spec, task, events).await;
            match outcome {
                HookOutcome::NotDeclared | HookOutcome::Done => {}
                HookOutcome::Refused(m) => {
                    super::audit::record(
                        "veto",
                        &spec.name,
                        &self.config.root,
                        serde_json::json!({"task": task.name, "message": m}),
                    );
                    return Err(HookFailure::Vetoed {
                        plugin: spec.name.clone(),
                        message: m,
                    });
                }
                HookOutcome::Failed(f) if spec.required => {
                    self.mark_failed(task, spec);
                    required_failed(&self.config.root, task, &f);
                    return Err(HookFailure::Required(f));
                }
                HookOutcome::Failed(f) => {
                    self.mark_failed(task, spec);
                    if self.first_consent_warning(spec, &f) {
                        skipped(events, spec, task, &f).await;
                    }
                }
            }
        }
        Ok(())
    }

    /// `on_task_failure` (when `error` is given) then `after_task`, each in
    /// reverse declared order. Errors answered by a plugin are reported as
    /// warnings; `Some` is why the task must count as failed: a required
    /// plugin that failed.
    pub(crate) async fn after_task(
        &self,
        task: &Task,
        task_env: &BTreeMap<String, String>,
        result: TaskResult,
        error: Option<TaskError>,
        events: &mpsc::Sender<RunEvent>,
    ) -> Option<HookFailure> {
        self.view
            .results
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(TaskResultEntry {
                task: task.name.clone(),
                status: result.status,
                exit_code: result.exit_code,
                duration_ms: result.duration_ms,
                cached: result.cached,
            });
        let mut fatal = None;
        for (hook, (i, spec)) in after_calls(&self.config.plugins, error.is_some()) {
            if self.disabled[i] {
                if spec.required {
                    fatal.get_or_insert(HookFailure::Disabled {
                        plugin: spec.name.clone(),
                    });
                } else {
                    self.tell_disabled(spec, task, events).await;
                }
                continue;
            }
            if self.failed_for(task, spec) {
                continue;
            }
            let serving = self.serving(spec, task, events);
            let (outcome, took) = self
                .host
                .call_hook(spec, &self.ctx(), self.run_id, hook, |m| {
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
            serving.finish().await;
            self.hook_took(task, i, took);
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
                    required_failed(&self.config.root, task, &f);
                    fatal.get_or_insert(HookFailure::Required(f));
                }
                HookOutcome::Failed(f) => {
                    self.mark_failed(task, spec);
                    if self.first_consent_warning(spec, &f) {
                        skipped(events, spec, task, &f).await;
                    }
                }
            }
        }
        self.task_hooks_done(task);
        fatal
    }
}

/// The audit record of a required plugin whose failure fails `task`.
fn required_failed(root: &std::path::Path, task: &Task, f: &PluginFailure) {
    super::audit::record(
        "required_failed",
        &f.plugin,
        root,
        serde_json::json!({"task": task.name, "phase": f.phase.to_string(), "message": f.message}),
    );
}

/// The hook calls after a task, in order: `on_task_failure` (when it
/// failed) then `after_task`, each over the plugins in reverse declared
/// order.
fn after_calls(
    plugins: &[PluginSpec],
    failed: bool,
) -> impl Iterator<Item = (Hook, (usize, &PluginSpec))> {
    let hooks: &[Hook] = if failed {
        &[Hook::OnTaskFailure, Hook::AfterTask]
    } else {
        &[Hook::AfterTask]
    };
    hooks.iter().flat_map(move |&hook| {
        plugins
            .iter()
            .enumerate()
            .rev()
            .map(move |spec| (hook, spec))
    })
}

/// `840 ms`, `2.5 ms`: durations of the slow-plugin warning.
fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
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
    if f.phase == Phase::Consent {
        message(
            events,
            spec,
            task,
            "warn",
            f.detail_with("; its hooks are skipped (the plugin is not required)"),
        )
        .await;
        return;
    }
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
    use std::time::Duration;

    use super::*;

    fn spec(config: Value) -> PluginSpec {
        named("p", config)
    }

    fn named(name: &str, config: Value) -> PluginSpec {
        PluginSpec {
            name: name.into(),
            version: None,
            kind: crate::config::rush_file::PluginKind::External,
            path: None,
            required: false,
            config,
            timeout: Duration::from_secs(1),
            limits: Default::default(),
            memory: None,
            module_size: None,
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
            outputs: vec![],
            env: vec![],
            dotenv: vec![],
            dir: None,
            before: None,
            after: None,
            plugins: BTreeMap::new(),
            line: 1,
            column: 1,
            file: None,
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
    fn a_hook_failure_reads_as_the_veto_or_the_plugin_failure() {
        let veto = HookFailure::Vetoed {
            plugin: "guard".into(),
            message: "not on Fridays".into(),
        };
        assert_eq!(veto.to_string(), "vetoed by plugin `guard`: not on Fridays");
        let failure = PluginFailure {
            plugin: "lint".into(),
            phase: Phase::Hook(Hook::BeforeTask),
            message: "it exited".into(),
            hint: None,
            stderr: vec!["boom".into()],
        };
        assert_eq!(
            HookFailure::Required(failure.clone()).to_string(),
            failure.render()
        );
    }

    #[test]
    fn after_a_failure_every_on_task_failure_runs_before_any_after_task_each_in_reverse_order() {
        let plugins: Vec<PluginSpec> = ["a", "b", "c"]
            .iter()
            .map(|n| named(n, Value::Null))
            .collect();
        let calls = |failed| -> Vec<String> {
            after_calls(&plugins, failed)
                .map(|(hook, (_, spec))| format!("{} {}", hook.method(), spec.name))
                .collect()
        };
        assert_eq!(
            calls(true),
            [
                "on_task_failure c",
                "on_task_failure b",
                "on_task_failure a",
                "after_task c",
                "after_task b",
                "after_task a"
            ]
        );
        assert_eq!(
            calls(false),
            ["after_task c", "after_task b", "after_task a"]
        );
    }
}
