//! `taskrush run TASK…`: send one request (`dispatch`: the daemon decides
//! whether the first name is a task or a plugin's command), render its
//! events, exit with the run's (or the command's) status. Ctrl-C cancels
//! the run in the daemon (a second Ctrl-C kills it at once) and exits 130.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use taskrush_protocol::daemon::RunExplained;
use taskrush_protocol::method;
use taskrush_protocol::paths::DaemonPaths;
use taskrush_protocol::run::{EXIT_CANCELLED, OnChange, RunEvent, RunRequest};

use crate::args::RunArgs;
use crate::client::{self, Incoming, Sender};
use crate::error::CliError;
use crate::render::Renderer;

/// After the first Ctrl-C, exit at the latest this late even if the
/// daemon has not confirmed that the run stopped.
const CANCEL_DEADLINE: Duration = Duration::from_millis(1900);
/// Exit status when our stdout was closed by the reader (`| head`).
const EXIT_PIPE: i32 = 141;

/// `run --explain` / `run --dry-run`: one `explain_run` request; nothing
/// runs (no task, no hook, no plugin started). Printed on stdout.
fn explain(request: &RunRequest, no_daemon: bool, dry_run: bool) -> Result<i32, CliError> {
    use std::io::Write as _;
    let mut client = client::connect(&DaemonPaths::from_env(), false, no_daemon)?;
    let answer: RunExplained = client.call(
        method::EXPLAIN_RUN,
        serde_json::json!({ "request": request }),
    )?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let width = answer
        .tasks
        .iter()
        .map(|t| t.task.chars().count())
        .max()
        .unwrap_or(0);
    if dry_run {
        let to_run = answer.tasks.iter().filter(|t| t.would_run).count();
        let _ = writeln!(
            out,
            "plan: {} task{}, {to_run} would run (dry run: nothing was run)",
            answer.tasks.len(),
            if answer.tasks.len() == 1 { "" } else { "s" }
        );
        for (i, t) in answer.tasks.iter().enumerate() {
            let what = match (t.would_run, t.reasons.first()) {
                (true, _) => "would run",
                (false, Some(r)) if r.contains("restored") => "would restore its outputs",
                (false, Some(r)) if r.starts_with("no command") => "no command",
                (false, _) => "up to date",
            };
            let _ = writeln!(out, "{:>3}. {:<width$}  {what}", i + 1, t.task);
        }
    } else {
        for t in &answer.tasks {
            let verdict = if t.would_run {
                "would run"
            } else {
                "would not run"
            };
            let _ = writeln!(
                out,
                "{:<width$}  {verdict}: {}",
                t.task,
                t.reasons.join("; ")
            );
        }
    }
    let _ = out.flush();
    Ok(0)
}

/// The words typed after the first name, as typed (a plugin command's
/// arguments), and whether the first name must be a plugin command (the
/// words are not `run`'s: anything else is a usage error).
#[derive(Default)]
pub struct Tail {
    pub args: Vec<String>,
    pub command_only: bool,
}

pub fn run(args: RunArgs, tail: Tail) -> Result<i32, CliError> {
    let mut tasks = args.tasks.clone();
    if tasks.is_empty() {
        let list = crate::list::fetch(&args)?;
        if list.tasks.iter().any(|t| t.name == "default") {
            tasks.push("default".into());
        } else {
            let names: Vec<&str> = list.tasks.iter().take(8).map(|t| t.name.as_str()).collect();
            return Err(CliError::Usage {
                message: "no task given".into(),
                hint: Some(format!(
                    "name one ({}{}), see them all with `taskrush --list`, or add a task named `default`",
                    names.join(", "),
                    if list.tasks.len() > names.len() {
                        ", …"
                    } else {
                        ""
                    }
                )),
            });
        }
    }
    let jobs = match (args.jobs, args.parallel) {
        (Some(n), _) => n.max(1),
        (None, true) => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2),
        (None, false) => 1,
    };
    let request = RunRequest {
        cwd: crate::cwd()?,
        tasks,
        file: args.file.as_ref().map(|f| f.display().to_string()),
        env: crate::client_env(),
        jobs,
        force: args.force,
        inherit_stdio: true,
        watch: args.watch,
        on_change: if args.on_change == "queue" {
            OnChange::Queue
        } else {
            OnChange::Restart
        },
        args: args.args.clone(),
        no_deps: args.no_deps,
        token: None,
    };

    if args.explain || args.dry_run {
        return explain(&request, args.no_daemon, args.dry_run);
    }
    let mut client = client::connect(&DaemonPaths::from_env(), true, args.no_daemon)?;
    crate::consent::ask_pending(&mut client, &request.cwd, request.file.as_deref())?;
    let dispatch = serde_json::json!({
        "request": request,
        "args": tail.args,
        "command_only": tail.command_only,
    });
    let mut sub_id = client.send(method::DISPATCH, dispatch)?;
    let state = Arc::new(State {
        run_id: AtomicU64::new(0),
        interrupts: AtomicU32::new(0),
    });
    watch_signals(state.clone(), client.sender());

    let mut renderer = Renderer::new(args.quiet);
    let mut groups: Vec<u32> = Vec::new();
    loop {
        let incoming = match client.read() {
            Ok(m) => m,
            Err(e @ CliError::Disconnected(_)) => {
                // The daemon died mid-run: stop what it started for us.
                stop_groups(&groups);
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        match incoming {
            Incoming::Response { id, result: Err(e) }
                if id == sub_id
                    && e.code == taskrush_protocol::error::METHOD_NOT_FOUND
                    && !tail.command_only =>
            {
                // A daemon from before `dispatch`: a plain run (a plugin
                // command then takes `PLUGIN_COMMAND` and a second request).
                sub_id = client.send(method::RUN, serde_json::json!({ "request": request }))?;
                continue;
            }
            Incoming::Response { id, result: Err(e) } if id == sub_id => {
                return Err(CliError::Remote(e));
            }
            Incoming::Response { .. } => continue,
            Incoming::Notification { method: m, params }
                if m == method::RUN_EVENT || m == method::DISPATCH_EVENT =>
            {
                let Some(result) = params.get("result") else {
                    continue;
                };
                // Events of a kind this CLI does not know are skipped.
                let Ok(ev) = serde_json::from_value::<RunEvent>(result.clone()) else {
                    continue;
                };
                match &ev {
                    RunEvent::CommandFinished {
                        exit_code,
                        stdout,
                        stderr,
                        ..
                    } => {
                        use std::io::Write as _;
                        let _ = std::io::stderr().write_all(stderr.as_bytes());
                        let mut out = std::io::stdout();
                        let _ = out.write_all(stdout.as_bytes());
                        let _ = out.flush();
                        return Ok(*exit_code);
                    }
                    RunEvent::TaskStarted {
                        pgid: Some(pgid), ..
                    } => groups.push(*pgid),
                    RunEvent::RunStarted { run_id, .. } => {
                        state.run_id.store(*run_id, Ordering::SeqCst);
                        // A Ctrl-C that came before we knew the id.
                        if state.interrupts.load(Ordering::SeqCst) > 0 {
                            cancel(&client.sender(), *run_id, false);
                        }
                    }
                    RunEvent::RunFinished { exit_code, .. }
                    | RunEvent::WatchEnded { exit_code, .. }
                        if !args.watch || matches!(ev, RunEvent::WatchEnded { .. }) =>
                    {
                        let code = if state.interrupts.load(Ordering::SeqCst) > 0 {
                            EXIT_CANCELLED
                        } else {
                            *exit_code
                        };
                        let _ = renderer.event(ev);
                        return Ok(code);
                    }
                    RunEvent::RunFinished { .. } => {
                        // Watching: the process groups of this run are done.
                        groups.clear();
                    }
                    _ => {}
                }
                if renderer.event(ev).is_err() {
                    // Nobody reads our output any more: stop the run, quietly.
                    let id = state.run_id.load(Ordering::SeqCst);
                    if id != 0 {
                        cancel(&client.sender(), id, false);
                    }
                    return Ok(EXIT_PIPE);
                }
            }
            Incoming::Notification { .. } => continue,
        }
    }
}

/// SIGTERM, then SIGKILL, to the process groups of our tasks. Only used
/// when the daemon is gone; they are ours (same user), and a group id is
/// not reused while any process of the group lives.
fn stop_groups(groups: &[u32]) {
    use rustix::process::{Pid, Signal, kill_process_group, test_kill_process_group};
    let pids: Vec<Pid> = groups
        .iter()
        .filter_map(|&g| Pid::from_raw(g as i32))
        .collect();
    for &p in &pids {
        let _ = kill_process_group(p, Signal::TERM);
    }
    let deadline = std::time::Instant::now() + Duration::from_millis(300);
    while pids.iter().any(|&p| test_kill_process_group(p).is_ok())
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    for &p in &pids {
        let _ = kill_process_group(p, Signal::KILL);
    }
}

struct State {
    run_id: AtomicU64,
    interrupts: AtomicU32,
}

fn cancel(sender: &Sender, run_id: u64, force: bool) {
    let _ = sender.notify(
        method::CANCEL_RUN,
        serde_json::json!({"run_id": run_id, "force": force}),
    );
}

/// Ctrl-C (and SIGTERM, SIGHUP): cancel the run; the second one kills it.
/// The main thread exits once the daemon reports the run finished; a
/// watchdog makes sure we exit within [`CANCEL_DEADLINE`] regardless.
fn watch_signals(state: Arc<State>, sender: Sender) {
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
        return;
    };
    std::thread::spawn(move || {
        for _ in signals.forever() {
            let n = state.interrupts.fetch_add(1, Ordering::SeqCst) + 1;
            let id = state.run_id.load(Ordering::SeqCst);
            if id != 0 {
                cancel(&sender, id, n >= 2);
            }
            if n == 1 {
                std::thread::spawn(|| {
                    std::thread::sleep(CANCEL_DEADLINE);
                    eprintln!("taskrush: cancelled (the daemon did not confirm in time)");
                    std::process::exit(EXIT_CANCELLED);
                });
            }
        }
    });
}
