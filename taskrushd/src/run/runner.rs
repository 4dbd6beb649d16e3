//! Executing a plan: starting the tasks its [`Schedule`] gives, the cache,
//! streaming output, cancelling.
//!
//! The runner owns no socket: it sends [`RunEvent`]s into a channel and
//! watches a cancel level ([`Cancel`]). A slow client slows only its own run (the
//! channel is bounded, so output is never dropped).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustix::process::Signal;
use taskrush_protocol::run::{Chunk, RunError, RunEvent, RunStatus, Stream, TaskStatus};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::cache::lookup::{Lookup, LookupError, NotStored, Pending};
use crate::cache::outputs::{self, Capture, OutputBackend as _};
use crate::cache::up_to_date::{Recipe, UpToDate};
use crate::config::rush_file::{RushFile, Task};
use crate::plugin::HookFailure;
use crate::process::spawn::{self, GRACE, TaskProcess};
use crate::run::cancel::{Cancel, cancelled};
use crate::run::failure::TaskFailure;
use crate::run::planner::Plan;
use crate::run::schedule::Schedule;
use crate::server::client_stdio::ClientStdio;

/// Everything a run needs, fixed when it starts: a run keeps the config it
/// started with even if the file changes meanwhile.
pub(crate) struct RunSpec {
    pub(crate) run_id: u64,
    pub(crate) config: Arc<RushFile>,
    pub(crate) plan: Plan,
    /// The client's environment.
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) jobs: usize,
    pub(crate) force: bool,
    /// The client's descriptors, when tasks write to them directly.
    pub(crate) stdio: Option<Arc<ClientStdio>>,
    /// The project's plugins, when it has any: their hooks run around
    /// each task.
    pub(crate) plugins: Option<crate::plugin::RunPlugins>,
    /// `taskrush TASK -- ARGS…`: the task that gets the arguments (the
    /// last one named) and the arguments, when there are any.
    pub(crate) args: Option<(String, Vec<String>)>,
}

/// Read buffer per output stream; also the largest output event.
const CHUNK: usize = 64 * 1024;

struct Outcome {
    status: TaskStatus,
    /// Exit status for the CLI when the task failed.
    exit_code: i32,
    /// It was up to date: nothing ran.
    cached: bool,
}

/// Run the plan to the end and return the `run_finished` event.
pub(crate) async fn run(
    spec: RunSpec,
    up_to_date: Arc<UpToDate>,
    events: mpsc::Sender<RunEvent>,
    mut cancel: watch::Receiver<Cancel>,
) -> RunEvent {
    let started = Instant::now();
    let spec = Arc::new(spec);
    let mut schedule = Schedule::new(&spec.plan, spec.jobs, *cancel.borrow() != Cancel::No);
    let mut running: JoinSet<(usize, Outcome)> = JoinSet::new();
    // Whether the run said that the cache cannot be written.
    let warned = Arc::new(AtomicBool::new(false));

    loop {
        while let Some(i) = schedule.next() {
            let spec = spec.clone();
            let up_to_date = up_to_date.clone();
            let events = events.clone();
            let cancel = cancel.clone();
            let warned = warned.clone();
            running.spawn(async move {
                let began = Instant::now();
                let outcome = run_task(&spec, i, &up_to_date, &events, cancel, &warned).await;
                let took = began.elapsed();
                crate::metrics::task_ended(
                    &spec.config.root,
                    &spec.plan.tasks[i].name,
                    took,
                    outcome.cached,
                    outcome.status == TaskStatus::Failed,
                );
                if let Some(plugins) = &spec.plugins {
                    plugins.task_took(took);
                }
                (i, outcome)
            });
        }
        if running.is_empty() {
            break;
        }
        tokio::select! {
            joined = running.join_next() => {
                let Some(joined) = joined else { break };
                match joined {
                    Ok((i, outcome)) => schedule.finished(i, outcome.status, outcome.exit_code),
                    Err(e) => {
                        tracing::error!(run = spec.run_id, "task runner failed: {e}");
                        schedule.lost();
                    }
                }
            }
            changed = cancel.changed(), if !schedule.is_cancelled() => {
                // Running tasks watch the level themselves.
                if changed.is_err() || *cancel.borrow() != Cancel::No {
                    schedule.cancel();
                }
            }
        }
    }

    // Plugins that added too much of the tasks' time: one line each.
    if let Some(plugins) = &spec.plugins {
        for message in plugins.slow_plugins() {
            let _ = events
                .send(RunEvent::Warning {
                    task: None,
                    message,
                })
                .await;
        }
    }
    let duration_ms = started.elapsed().as_millis() as u64;
    let (status, exit_code, failed_task) = schedule.end(&spec.plan);
    RunEvent::RunFinished {
        run_id: spec.run_id,
        status,
        exit_code,
        failed_task,
        duration_ms,
        error: None,
    }
}

/// A run that could not start its plan, finished with this error.
pub(crate) fn finished_with_error(run_id: u64, message: String) -> RunEvent {
    RunEvent::RunFinished {
        run_id,
        status: RunStatus::Failed,
        exit_code: taskrush_protocol::run::EXIT_ERROR,
        failed_task: None,
        duration_ms: 0,
        error: Some(RunError {
            message,
            data: Default::default(),
        }),
    }
}

/// Stores the key of a cached task that succeeded (see
/// `cache/lookup.rs`), and says why not when it cannot. A cache that cannot
/// be written is said once per run (`warned`).
async fn store_if_unchanged(
    pending: Box<Pending>,
    spec: &RunSpec,
    name: &str,
    up_to_date: &Arc<UpToDate>,
    events: &mpsc::Sender<RunEvent>,
    warned: &AtomicBool,
) -> bool {
    match pending.store_if_unchanged(up_to_date).await {
        Ok(()) => return true,
        Err(NotStored::Unchecked(e)) => {
            tracing::info!(task = %name, "not cached: cannot check the inputs again: {e}");
        }
        Err(NotStored::InputsChanged { path }) => {
            tracing::info!(
                run = spec.run_id,
                task = %name,
                "not cached: its inputs changed while it ran"
            );
            // Said every time: a task that writes into its own inputs is
            // never cached, and should know why.
            let which = match &path {
                Some(path) => format!(" (`{}`)", path.display()),
                None => String::new(),
            };
            let message = format!(
                "the inputs of `{name}` changed while it ran{which}: not cached, it will run \
                 again next time\nhint: if `{name}` writes into its own `cache_files`, exclude \
                 those outputs with `!PATTERN`"
            );
            let _ = events
                .send(RunEvent::Warning {
                    task: Some(name.to_owned()),
                    message,
                })
                .await;
        }
        Err(NotStored::CannotWrite { dir, source: e }) => {
            tracing::warn!(task = %name, "cannot write the cache entry: {e}");
            if !warned.swap(true, Ordering::Relaxed) {
                let message = format!(
                    "cannot write the cache in `{}`: {e}; `{name}` will run again next time \
                     (the cache is off until it can be written)\nhint: free some space or \
                     fix the permissions of `{}`",
                    dir.display(),
                    dir.display(),
                );
                let _ = events
                    .send(RunEvent::Warning {
                        task: Some(name.to_owned()),
                        message,
                    })
                    .await;
            }
        }
    }
    false
}

/// Restores the outputs `manifest` lists (relative to the task's base
/// directory) and reads its captured output: (outputs written, log).
async fn restore_outputs(
    up_to_date: &Arc<UpToDate>,
    root: &Path,
    task: &Task,
    manifest: Box<outputs::Manifest>,
) -> Result<(u64, Vec<u8>), String> {
    let store = up_to_date.outputs.clone();
    let base = output_base(root, task);
    tokio::task::spawn_blocking(move || {
        let count = outputs::restore(&*store, &base, &manifest).map_err(|e| e.to_string())?;
        let log = match &manifest.log {
            Some(digest) => store
                .get_bytes(digest)
                .map_err(|e| format!("its captured output: {e}"))?,
            None => Vec::new(),
        };
        store.count_hit(count);
        Ok((count, log))
    })
    .await
    .map_err(|e| format!("the restore stopped: {e}"))?
}

/// Stores a successful run's outputs and captured output under `key`; the
/// error is a warning's text.
async fn save_outputs(
    up_to_date: &Arc<UpToDate>,
    root: &Path,
    task: &Task,
    key: crate::cache::store::CacheKey,
    capture: Capture,
) -> Result<(), String> {
    let store = up_to_date.outputs.clone();
    let base = output_base(root, task);
    let name = task.name.clone();
    let patterns = task.outputs.clone();
    let truncated = capture.truncated;
    tokio::task::spawn_blocking(move || {
        let log = (!truncated).then_some(capture.bytes.as_slice());
        outputs::store_outputs(&*store, &key, &name, &base, &patterns, log)
            .map(drop)
            .map_err(|e| {
                format!(
                    "cannot store the outputs of `{name}`: {e}; it will run again next time\n\
                     hint: see `taskrush daemon cache status`"
                )
            })
    })
    .await
    .map_err(|e| format!("storing the outputs stopped: {e}"))?
}

/// The directory a task's `outputs` globs are relative to: the project
/// root (the task's `dir`, once tasks have one).
pub(crate) fn output_base(root: &Path, task: &Task) -> std::path::PathBuf {
    task.working_dir(root)
}

/// Sends a task's captured output again, as it was written.
async fn replay(events: &mpsc::Sender<RunEvent>, task: &str, log: Vec<u8>) {
    for (stderr, bytes) in outputs::decode_log(&log) {
        for chunk in bytes.chunks(CHUNK) {
            let ev = RunEvent::Output {
                task: task.to_owned(),
                stream: if stderr {
                    Stream::Stderr
                } else {
                    Stream::Stdout
                },
                chunk: Chunk::from_bytes(chunk.to_vec()),
            };
            if events.send(ev).await.is_err() {
                return;
            }
        }
    }
}

/// The task was cancelled before anything ran.
async fn cancelled_before_start(events: &mpsc::Sender<RunEvent>, task: &str) -> Outcome {
    cancelled_after(events, task, 0).await
}

/// The task was cancelled after its command ran for `ran` ms.
async fn cancelled_after(events: &mpsc::Sender<RunEvent>, task: &str, ran: u64) -> Outcome {
    let _ = events
        .send(RunEvent::TaskFinished {
            task: task.to_owned(),
            status: TaskStatus::Cancelled,
            exit_code: None,
            signal: None,
            duration_ms: ran,
            message: None,
        })
        .await;
    Outcome {
        status: TaskStatus::Cancelled,
        exit_code: taskrush_protocol::run::EXIT_CANCELLED,
        cached: false,
    }
}

async fn run_task(
    spec: &RunSpec,
    i: usize,
    up_to_date: &Arc<UpToDate>,
    events: &mpsc::Sender<RunEvent>,
    mut cancel: watch::Receiver<Cancel>,
    warned: &AtomicBool,
) -> Outcome {
    let name = spec.plan.tasks[i].name.clone();
    let Some(task) = spec.config.tasks.get(&name) else {
        return fail(events, &name, TaskFailure::Vanished { task: name.clone() }).await;
    };
    let args: &[String] = match &spec.args {
        Some((to, args)) if *to == name => args,
        _ => &[],
    };
    let dotenv = match read_dotenv(&spec.config, task).await {
        Ok(loaded) => loaded,
        Err(failure) => return fail(events, &name, failure).await,
    };
    let mut env = match task_env(task, &spec.env, &dotenv.vars) {
        Ok(env) => env,
        Err(failure) => return fail(events, &name, failure).await,
    };
    if !args.is_empty() {
        env.insert(ARGS_VAR.to_owned(), shell_quote(args));
    }
    let root = spec.config.root.clone();
    // `dir:` is checked when the task starts, not when the file is loaded:
    // a dependency may create it.
    let workdir = task.working_dir(&root);
    if task.dir.is_some() && !workdir.is_dir() {
        let failure = TaskFailure::NoDir {
            task: name.clone(),
            dir: task.dir.clone().unwrap_or_default(),
            file: spec.config.path.clone(),
            line: task.line,
        };
        return fail(events, &name, failure).await;
    }

    // Up to date? A cached task runs in one instance at a time, daemon-wide
    // (see `up_to_date::inflight`): the claim is held until the task ends.
    let mut cached: Option<Box<Pending>> = None;
    // Outputs matter only to a cached task: only it can have a hit.
    let has_outputs = !task.outputs.is_empty() && !task.cache_files.is_empty();
    // A restore that failed: run the task instead.
    let mut force = spec.force;
    if !task.cache_files.is_empty() {
        // Globs are relative to `dir`; the key's paths to the root.
        let (cache_root, patterns) = task.cache_root_and_patterns(&root, &task.cache_files);
        let recipe = Recipe {
            root: cache_root,
            task: task.name.clone(),
            cmd: task_command_line(task, args),
            env: env_pairs(task, &env, dotenv.key),
            patterns: patterns.into(),
        };
        loop {
            let lookup = tokio::select! {
                l = up_to_date.lookup(recipe.clone(), force, has_outputs) => l,
                () = cancelled(&mut cancel) => return cancelled_before_start(events, &name).await,
            };
            match lookup {
                Ok(Lookup::Hit) => {
                    let _ = events
                        .send(RunEvent::TaskCached {
                            task: name.clone(),
                            restored: 0,
                        })
                        .await;
                    // Plugins hear of cached tasks too (`after_task` with
                    // `cached: true`); `before_task` is not called, as
                    // nothing runs.
                    let hooks = after_hooks(spec, task, &env, events, Ended::Cached);
                    if let Some(failure) = hooks.await {
                        return fail(events, &name, TaskFailure::Plugin(failure)).await;
                    }
                    return Outcome {
                        status: TaskStatus::Success,
                        exit_code: 0,
                        cached: true,
                    };
                }
                Ok(Lookup::Restore(manifest)) => {
                    let restored = tokio::select! {
                        r = restore_outputs(up_to_date, &root, task, manifest) => r,
                        () = cancelled(&mut cancel) => return cancelled_before_start(events, &name).await,
                    };
                    let (count, log) = match restored {
                        Ok(done) => done,
                        Err(e) => {
                            let message = format!(
                                "cannot restore the outputs of `{name}`: {e}; running it instead"
                            );
                            let _ = events
                                .send(RunEvent::Warning {
                                    task: Some(name.clone()),
                                    message,
                                })
                                .await;
                            force = true;
                            continue;
                        }
                    };
                    let _ = events
                        .send(RunEvent::TaskCached {
                            task: name.clone(),
                            restored: count,
                        })
                        .await;
                    replay(events, &name, log).await;
                    let hooks = after_hooks(spec, task, &env, events, Ended::Cached);
                    if let Some(failure) = hooks.await {
                        return fail(events, &name, TaskFailure::Plugin(failure)).await;
                    }
                    return Outcome {
                        status: TaskStatus::Success,
                        exit_code: 0,
                        cached: true,
                    };
                }
                Ok(Lookup::Busy(busy)) => {
                    // Another run is running this task: wait for it, then
                    // check again (it may have stored this very key).
                    tracing::info!(
                        run = spec.run_id,
                        task = %name,
                        "waiting for the instance of the task already running"
                    );
                    let _ = events
                        .send(RunEvent::TaskWaiting { task: name.clone() })
                        .await;
                    tokio::select! {
                        () = busy.ended() => {}
                        () = cancelled(&mut cancel) => {
                            return cancelled_before_start(events, &name).await;
                        }
                    }
                }
                Ok(Lookup::Miss(pending)) => {
                    cached = Some(pending);
                    break;
                }
                Err(LookupError::Stopped) => {
                    return cancelled_before_start(events, &name).await;
                }
                Err(e) => return fail(events, &name, TaskFailure::Cache(e)).await,
            }
        }
    }

    if let Some(plugins) = &spec.plugins
        && let Err(failure) = plugins.before_task(task, &env, events).await
    {
        return fail_after_hooks(spec, task, &env, events, TaskFailure::Plugin(failure)).await;
    }

    let capture = std::sync::Mutex::new(Capture::default());
    let last = match task_script(task) {
        None => {
            // An aggregate task: nothing to run but its dependencies.
            let _ = events
                .send(RunEvent::TaskStarted {
                    task: name.clone(),
                    pgid: None,
                })
                .await;
            (Some(0), None, 0, 0)
        }
        Some(script) => {
            // A task with `outputs` runs with its output captured (and
            // streamed as events, shown live) so that a hit can replay it;
            // others keep the client's terminal when they have it.
            let io = TaskIo {
                task: &name,
                stdio: spec.stdio.as_deref().filter(|_| !has_outputs),
                events,
                capture: has_outputs.then_some(&capture),
            };
            match run_step(&io, &script, args, &workdir, &env, &mut cancel).await {
                Step::Exited(code, signal, shell_code, ran) => (code, signal, shell_code, ran),
                Step::Cancelled(ran) => {
                    let hooks = after_hooks(spec, task, &env, events, Ended::Cancelled(ran));
                    let _ = hooks.await;
                    return cancelled_after(events, &name, ran).await;
                }
                Step::SpawnFailed(failure) => {
                    return fail_after_hooks(spec, task, &env, events, failure).await;
                }
            }
        }
    };
    let (code, signal, shell_code, ran) = last;
    let mut status = if shell_code == 0 {
        TaskStatus::Success
    } else {
        TaskStatus::Failed
    };
    let ended = Ended::Ran {
        code,
        shell_code,
        ran,
    };
    let hooks = after_hooks(spec, task, &env, events, ended);
    let plugin_failure = hooks.await.map(|f| f.to_string());
    let mut shell_code = shell_code;
    if plugin_failure.is_some() && status == TaskStatus::Success {
        status = TaskStatus::Failed;
        shell_code = taskrush_protocol::run::EXIT_ERROR;
    }
    if status == TaskStatus::Success
        && let Some(run) = cached
    {
        let key = run.key();
        let stored = tokio::select! {
            s = store_if_unchanged(run, spec, &name, up_to_date, events, warned) => s,
            // Not stored: the next run checks again.
            () = cancelled(&mut cancel) => false,
        };
        if stored && has_outputs {
            let capture = capture
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Err(message) = save_outputs(up_to_date, &root, task, key, capture).await {
                let _ = events
                    .send(RunEvent::Warning {
                        task: Some(name.clone()),
                        message,
                    })
                    .await;
            }
        }
    }
    let _ = events
        .send(RunEvent::TaskFinished {
            task: name,
            status,
            exit_code: code,
            signal,
            duration_ms: ran,
            message: plugin_failure,
        })
        .await;
    Outcome {
        status,
        exit_code: shell_code,
        cached: false,
    }
}

/// How a task ended, for the plugins' `after_task`/`on_task_failure`.
/// Durations are of the task's command alone (spawn to exit), in ms.
enum Ended {
    Cached,
    Cancelled(u64),
    Ran {
        code: Option<i32>,
        shell_code: i32,
        ran: u64,
    },
    /// Did not get to run, or could not: vetoed, could not start.
    Failed(String),
}

/// The plugins' `on_task_failure` (on failure) and `after_task` hooks;
/// `Some` is why the task fails after all (a required plugin failed).
async fn after_hooks(
    spec: &RunSpec,
    task: &Task,
    env: &BTreeMap<String, String>,
    events: &mpsc::Sender<RunEvent>,
    ended: Ended,
) -> Option<HookFailure> {
    use taskrush_protocol::plugin::{TaskError, TaskResult};
    let plugins = spec.plugins.as_ref()?;
    let (status, exit_code, cached, failure, duration_ms) = match ended {
        Ended::Cached => (TaskStatus::Success, Some(0), true, None, 0),
        Ended::Cancelled(ran) => (TaskStatus::Cancelled, None, false, None, ran),
        Ended::Ran {
            code,
            shell_code: 0,
            ran,
        } => (TaskStatus::Success, code, false, None, ran),
        Ended::Ran {
            code,
            shell_code,
            ran,
        } => (
            TaskStatus::Failed,
            code,
            false,
            Some(match code {
                Some(c) => format!("exit code {c}"),
                None => format!("killed by signal {}", shell_code - 128),
            }),
            ran,
        ),
        Ended::Failed(m) => (TaskStatus::Failed, None, false, Some(m), 0),
    };
    let result = TaskResult {
        status,
        exit_code,
        duration_ms,
        cached,
    };
    let error = failure.map(|message| TaskError { message, exit_code });
    plugins.after_task(task, env, result, error, events).await
}

/// [`fail`], after telling the plugins.
async fn fail_after_hooks(
    spec: &RunSpec,
    task: &Task,
    env: &BTreeMap<String, String>,
    events: &mpsc::Sender<RunEvent>,
    failure: TaskFailure,
) -> Outcome {
    let hooks = after_hooks(spec, task, env, events, Ended::Failed(failure.to_string()));
    let failure = match hooks.await {
        Some(also) => TaskFailure::Also(Box::new(failure), also),
        None => failure,
    };
    fail(events, &task.name, failure).await
}

/// The task fails without having run: its duration is 0.
async fn fail(events: &mpsc::Sender<RunEvent>, task: &str, failure: TaskFailure) -> Outcome {
    let _ = events
        .send(RunEvent::TaskFinished {
            task: task.to_owned(),
            status: TaskStatus::Failed,
            exit_code: None,
            signal: None,
            duration_ms: 0,
            message: Some(failure.to_string()),
        })
        .await;
    Outcome {
        status: TaskStatus::Failed,
        exit_code: taskrush_protocol::run::EXIT_ERROR,
        cached: false,
    }
}

/// What the cache key covers as "the command": hooks included, the
/// task's `dir` when it has one, and the arguments of `taskrush TASK --
/// ARGS…` when there are any (without either, the key is what it was
/// before they existed).
pub(crate) fn task_command_line(task: &Task, args: &[String]) -> String {
    let mut line = format!(
        "{}\0{}\0{}",
        task.before.as_deref().unwrap_or(""),
        task.cmd.as_deref().unwrap_or(""),
        task.after.as_deref().unwrap_or("")
    );
    // Where it runs (without a `dir`, the key is what it was before `dir`).
    if task.dir.is_some() {
        let dir = task.dir_in_root();
        line.push_str("\0dir\0");
        line.push_str(dir.as_deref().or(task.dir.as_deref()).unwrap_or(""));
    }
    if !args.is_empty() {
        line.push_str("\0args");
        for arg in args {
            // Length-prefixed: `["a b"]` and `["a", "b"]` differ.
            line.push_str(&format!("\0{}:{arg}", arg.len()));
        }
    }
    line
}

/// The environment variable holding a task's arguments, shell-quoted.
pub(crate) const ARGS_VAR: &str = "TASKRUSH_ARGS";

/// `args` as one line of POSIX shell words: each in single quotes (a `'`
/// inside becomes `'\''`), separated by spaces, so that
/// `eval set -- "$TASKRUSH_ARGS"` gives back exactly `args`.
pub(crate) fn shell_quote(args: &[String]) -> String {
    args.iter()
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The shell script of a task: its `cmd`, wrapped by its `before` and
/// `after` hooks when it has them. One script means one process group per
/// task, so cancelling reaches hooks and command alike. Each part runs in
/// a subshell, so an `exit` in a hook ends that part only, with its status.
fn task_script(task: &Task) -> Option<String> {
    let parts: Vec<&str> = [
        task.before.as_deref(),
        task.cmd.as_deref(),
        task.after.as_deref(),
    ]
    .into_iter()
    .flatten()
    .collect();
    match parts.as_slice() {
        [] => None,
        [only] if task.before.is_none() && task.after.is_none() => Some((*only).to_owned()),
        _ => Some(
            parts
                .iter()
                .map(|p| format!("(\n{p}\n)"))
                .collect::<Vec<_>>()
                .join(" && "),
        ),
    }
}

/// The variables of the `dotenv:` files (top-level, then the task's),
/// read on a blocking thread, and their part of the cache key.
pub(crate) async fn read_dotenv(
    config: &RushFile,
    task: &Task,
) -> Result<crate::config::dotenv::Loaded, TaskFailure> {
    if config.dotenv.is_empty() && task.dotenv.is_empty() {
        return Ok(Default::default());
    }
    let root = config.root.clone();
    let top = config.dotenv.clone();
    let own = task.dotenv.clone();
    let owner = format!("`dotenv` of task `{}`", task.name);
    let read = tokio::task::spawn_blocking(move || {
        crate::config::dotenv::load(&root, &[("the top-level `dotenv`", &top), (&owner, &own)])
    })
    .await;
    match read {
        Ok(Ok(loaded)) => Ok(loaded),
        Ok(Err(message)) => Err(TaskFailure::Dotenv(message)),
        Err(e) => Err(TaskFailure::Dotenv(format!(
            "cannot read the dotenv files: {e}"
        ))),
    }
}

/// The task process's environment: the `dotenv` files' variables, then
/// the client's (which win over them), plus the task's `env` with `${VAR}`
/// expanded from those and from the task's earlier entries.
pub(crate) fn task_env(
    task: &Task,
    client: &BTreeMap<String, String>,
    dotenv: &[(String, String)],
) -> Result<BTreeMap<String, String>, TaskFailure> {
    let mut env: BTreeMap<String, String> = dotenv.iter().cloned().collect();
    env.extend(client.iter().map(|(k, v)| (k.clone(), v.clone())));
    for (k, v) in &task.env {
        let value =
            crate::config::expand::expand(v, |name| env.get(name).cloned()).map_err(|error| {
                TaskFailure::Env {
                    task: task.name.clone(),
                    key: k.clone(),
                    error,
                }
            })?;
        env.insert(k.clone(), value);
    }
    Ok(env)
}

/// The task's own `env` entries, expanded: what the cache key covers
/// (not the whole client environment, which changes all the time), and
/// `dotenv`: each `dotenv` file's content hash.
pub(crate) fn env_pairs(
    task: &Task,
    env: &BTreeMap<String, String>,
    dotenv: Vec<(String, String)>,
) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = task
        .env
        .iter()
        .map(|(k, _)| (k.clone(), env.get(k).cloned().unwrap_or_default()))
        .collect();
    // `dotenv PATH` cannot be a variable name: no clash with `env`.
    pairs.extend(dotenv);
    pairs.sort();
    pairs.dedup();
    pairs
}

enum Step {
    /// (exit code, signal, shell-style status, run time in ms)
    Exited(Option<i32>, Option<i32>, i32, u64),
    /// Stopped; how long it ran, in ms.
    Cancelled(u64),
    /// Could not start, or could not be waited for.
    SpawnFailed(TaskFailure),
}

/// Where a task's output goes.
struct TaskIo<'a> {
    task: &'a str,
    /// The client's own descriptors, when the run inherits them.
    stdio: Option<&'a ClientStdio>,
    events: &'a mpsc::Sender<RunEvent>,
    /// Where its output is also kept for replay (tasks with `outputs`).
    capture: Option<&'a std::sync::Mutex<Capture>>,
}

async fn run_step(
    io: &TaskIo<'_>,
    cmd: &str,
    args: &[String],
    root: &Path,
    env: &BTreeMap<String, String>,
    cancel: &mut watch::Receiver<Cancel>,
) -> Step {
    if *cancel.borrow() != Cancel::No {
        return Step::Cancelled(0);
    }
    let mut proc = match spawn::spawn_shell(cmd, args, root, env, io.stdio) {
        Ok(p) => p,
        Err(e) => {
            return Step::SpawnFailed(TaskFailure::CannotStart {
                root: root.to_owned(),
                error: e,
            });
        }
    };
    // The task's duration: from its spawn to its exit, plugins' hooks and
    // the cache check excluded.
    let spawned = Instant::now();
    let ms = || spawned.elapsed().as_millis() as u64;
    let _ = io
        .events
        .send(RunEvent::TaskStarted {
            task: io.task.to_owned(),
            pgid: proc.pgid(),
        })
        .await;
    let stdout = proc.child.stdout.take();
    let stderr = proc.child.stderr.take();
    let pumps = async {
        tokio::join!(
            pump(stdout, io.task, Stream::Stdout, io.events, io.capture),
            pump(stderr, io.task, Stream::Stderr, io.events, io.capture)
        )
    };
    tokio::pin!(pumps);
    let mut pumped = false;
    loop {
        tokio::select! {
            _ = &mut pumps, if !pumped => pumped = true,
            status = proc.child.wait(), if pumped => {
                return match status {
                    Ok(s) => { let (c, sig, code) = spawn::exit_code(s); Step::Exited(c, sig, code, ms()) }
                    Err(e) => Step::SpawnFailed(TaskFailure::CannotWait(e)),
                };
            }
            changed = cancel.changed() => {
                let level = if changed.is_err() { Cancel::Interrupt } else { *cancel.borrow() };
                if level == Cancel::No {
                    continue;
                }
                stop(&mut proc, level, cancel).await;
                let ran = ms();
                // Drain what the pipes still hold so nothing is lost (a
                // finished `join!` must not be polled again: it panics).
                if !pumped {
                    let _ = tokio::time::timeout(Duration::from_secs(1), &mut pumps).await;
                }
                return Step::Cancelled(ran);
            }
        }
    }
}

/// Stop a task's process group: SIGINT, SIGTERM, SIGKILL, a grace period
/// apart (or SIGKILL at once when forced), until no process is left.
async fn stop(proc: &mut TaskProcess, mut level: Cancel, cancel: &mut watch::Receiver<Cancel>) {
    for sig in [Signal::INT, Signal::TERM] {
        if level == Cancel::Kill {
            break;
        }
        proc.signal_group(sig);
        let deadline = tokio::time::Instant::now() + GRACE;
        loop {
            if proc.wait_group_empty(Duration::from_millis(20)).await {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            if cancel.has_changed().unwrap_or(false) {
                level = level.max(*cancel.borrow_and_update());
                if level == Cancel::Kill {
                    break;
                }
            }
        }
    }
    proc.signal_group(Signal::KILL);
    proc.wait_group_empty(Duration::from_secs(2)).await;
}

/// Forward one output stream as events, in order. UTF-8 sequences cut by
/// a read boundary are carried to the next chunk so text stays text.
async fn pump<R: AsyncRead + Unpin>(
    reader: Option<R>,
    task: &str,
    stream: Stream,
    events: &mpsc::Sender<RunEvent>,
    capture: Option<&std::sync::Mutex<Capture>>,
) {
    let Some(mut reader) = reader else { return };
    let keep = |bytes: &[u8]| {
        if let Some(c) = capture {
            c.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(stream == Stream::Stderr, bytes);
        }
    };
    let mut carry: Vec<u8> = Vec::new();
    // Capacity, not zeroed memory: `read_buf` fills the spare capacity.
    // (A zeroed 64 KiB buffer per stream per task was a third of the
    // daemon's CPU time in a run of 1,000 no-op tasks.)
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK);
    loop {
        buf.clear();
        let n = match reader.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut bytes = std::mem::take(&mut carry);
        bytes.extend_from_slice(&buf[..n]);
        if let Err(e) = std::str::from_utf8(&bytes)
            && e.error_len().is_none()
            && bytes.len() - e.valid_up_to() < 4
            && e.valid_up_to() > 0
        {
            carry = bytes.split_off(e.valid_up_to());
        }
        keep(&bytes);
        let ev = RunEvent::Output {
            task: task.to_owned(),
            stream,
            chunk: Chunk::from_bytes(bytes),
        };
        if events.send(ev).await.is_err() {
            break;
        }
    }
    if !carry.is_empty() {
        keep(&carry);
        let ev = RunEvent::Output {
            task: task.to_owned(),
            stream,
            chunk: Chunk::from_bytes(carry),
        };
        let _ = events.send(ev).await;
    }
}
