//! Orphans and inherited limits: what the daemon starts ends with it, even
//! when it is killed by SIGKILL (its watchdog), except what a task left
//! running on purpose; children see the limits their shell would.

use std::io::Write as _;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use rustix::process::Signal;
use taskrush_tests::{Scenario, process_state, processes_matching, signal, wait_until};

/// A distinct, valid `sleep` duration per test, to find its process.
fn unique_marker() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("2{}{n:03}.25", std::process::id())
}

/// Wait (bounded) for `n` `task_started` events on an editor's connection.
/// A task is registered with the watchdog before the daemon says it
/// started; its processes can run before that, so seeing them is no sign
/// that the daemon has registered them.
fn await_started(editor: &UnixStream, n: usize) {
    let reader = editor.try_clone().expect("clone the connection");
    reader
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("a read timeout");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(reader));
    let mut started = 0;
    while started < n {
        let line = lines
            .next()
            .expect("the daemon's events until the tasks started")
            .expect("read an event");
        if line.contains("\"task_started\"") {
            started += 1;
        }
    }
}

/// Kill whatever still matches `marker` (cleanup after a failed check).
fn reap_leftovers(marker: &str) {
    for pid in processes_matching(marker) {
        signal(pid, Signal::KILL);
    }
}

/// An editor's run: a client speaking the protocol itself, with no
/// terminal and no process group of its own to clean up. `request` holds
/// the run's fields besides `cwd`; returns once `started` tasks started.
fn editor_run(s: &Scenario, request: serde_json::Value, started: usize) -> UnixStream {
    let mut request = request;
    request["cwd"] = s.project().display().to_string().into();
    let mut editor = UnixStream::connect(s.socket()).expect("connect");
    let req = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "run", "params": {"request": request}});
    writeln!(editor, "{req}").expect("send the run");
    await_started(&editor, started);
    editor
}

/// SIGKILL `daemon`, then wait (bounded) until nothing matches `marker`;
/// whatever is left is killed. True if all of it ended with the daemon.
fn kill_and_await_end(daemon: u32, marker: &str) -> bool {
    signal(daemon, Signal::KILL);
    let ended = wait_until(Duration::from_secs(5), || {
        processes_matching(marker).is_empty()
    });
    reap_leftovers(marker);
    ended
}

#[test]
fn a_daemon_killed_by_sigkill_during_an_editor_run_ends_the_task() {
    let marker = unique_marker();
    let s = Scenario::new().rush(&format!(
        "tasks:\n  hi:\n    cmd: echo hi\n  long:\n    cmd: sh -c 'sleep {marker} & wait'\n"
    ));
    s.run(&["hi"]).success();
    let editor = editor_run(&s, serde_json::json!({"tasks": ["long"]}), 1);
    assert!(
        wait_until(Duration::from_secs(20), || !processes_matching(&marker)
            .is_empty()),
        "the task did not start"
    );
    let daemon = s.daemon_pid().expect("a daemon");
    let ended = kill_and_await_end(daemon, &marker);
    drop(editor);
    assert!(ended, "the task outlived its daemon");
}

#[test]
fn a_plugins_helper_process_ends_with_a_daemon_killed_by_sigkill() {
    let marker = unique_marker();
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .join("plugins-external/fixtures/fixture.py");
    let s = Scenario::new();
    s.write(
        ".rush-plugins/helped/plugin.toml",
        format!(
            "name = \"helped\"\nversion = \"1.0.0\"\n\
             entry_point = [\"python3\", \"-I\", \"-u\", \"{}\", \"good\"]\n\
             taskrush_version = \">=0.3\"\n\n[permissions]\nfilesystem = [\".\"]\nprocess = [\"sleep\"]\n",
            fixture.display()
        ),
    );
    let s = s.grant("helped").rush(&format!(
        "plugins:\n  - {{name: helped, config: {{helper: '{marker}'}}}}\ntasks:\n  t:\n    cmd: 'true'\n"
    ));
    s.run(&["t"]).success();
    assert!(
        wait_until(Duration::from_secs(10), || !processes_matching(&marker)
            .is_empty()),
        "the plugin's helper did not start"
    );
    let daemon = s.daemon_pid().expect("a daemon");
    let ended = kill_and_await_end(daemon, &marker);
    assert!(ended, "the plugin's helper outlived the daemon");
}

#[test]
fn what_a_task_leaves_running_after_it_exits_normally_survives_a_killed_daemon() {
    let marker = unique_marker();
    // Like `pg_ctl start`: start a server in the background and exit 0.
    let s = Scenario::new().rush(&format!(
        "tasks:\n  start:\n    cmd: sleep {marker} >/dev/null 2>&1 &\n"
    ));
    s.run(&["start"]).success();
    assert!(
        wait_until(Duration::from_secs(5), || !processes_matching(&marker)
            .is_empty()),
        "the background process did not start"
    );
    let daemon = s.daemon_pid().expect("a daemon");
    assert!(
        wait_until(Duration::from_secs(5), || watchdogs_of(daemon).len() == 1),
        "no watchdog"
    );
    signal(daemon, Signal::KILL);
    // The watchdog has done all it would do once it exited.
    assert!(
        wait_until(Duration::from_secs(5), || watchdogs_of(daemon).is_empty()),
        "the watchdog outlived its daemon"
    );
    let kept = !processes_matching(&marker).is_empty();
    reap_leftovers(&marker);
    assert!(
        kept,
        "the task's background process was killed with the daemon"
    );
}

#[test]
fn the_daemon_raises_its_open_file_limit_and_tasks_see_their_shells() {
    let s = Scenario::new().rush("tasks:\n  limit:\n    cmd: ulimit -n; echo $0\n");
    // The scenario lowers the soft limit itself; the daemon started by
    // this `taskrush` inherits it.
    let out = s.sh("ulimit -Sn 512 && taskrush limit");
    out.expect_stdout("512\n/bin/sh\n").success();
    let daemon = s.daemon_pid().expect("a daemon");
    let limits = std::fs::read_to_string(format!("/proc/{daemon}/limits")).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a `Max open files` line");
    let fields: Vec<&str> = line.split_whitespace().collect();
    // `Max open files  SOFT  HARD  files`
    assert_eq!(fields[3], fields[4], "soft limit not raised: {line}");
    assert_ne!(fields[3], "512", "{line}");
}

/// The watchdog of daemon `daemon` (its command line names the daemon's pid).
fn watchdogs_of(daemon: u32) -> Vec<u32> {
    // Command lines have their NULs as spaces: the trailing one makes
    // daemon 12 not match the watchdog of daemon 123.
    processes_matching(&format!("--watchdog {daemon} "))
        .into_iter()
        // A zombie has no command line left; count live ones only.
        .filter(|&pid| process_state(pid).is_some_and(|state| state != 'Z'))
        .collect()
}

/// Whether `pid` is a zombie (ended, never reaped by its parent).
fn is_zombie(pid: u32) -> bool {
    process_state(pid) == Some('Z')
}

#[test]
fn a_watchdog_killed_by_sigkill_is_replaced_and_tasks_still_end_with_a_killed_daemon() {
    let marker = unique_marker();
    let s = Scenario::new().rush(&format!(
        "tasks:\n  hi:\n    cmd: echo hi\n  long:\n    cmd: sh -c 'sleep {marker} & wait'\n"
    ));
    s.run(&["hi"]).success();
    let daemon = s.daemon_pid().expect("a daemon");
    assert!(
        wait_until(Duration::from_secs(5), || watchdogs_of(daemon).len() == 1),
        "no watchdog: {:?}",
        watchdogs_of(daemon)
    );
    let old = watchdogs_of(daemon)[0];
    signal(old, Signal::KILL);
    // The daemon carries on, reaps the old watchdog and starts a new one.
    assert!(
        wait_until(Duration::from_secs(5), || {
            let now = watchdogs_of(daemon);
            now.len() == 1 && now[0] != old
        }),
        "the watchdog was not replaced: {:?}",
        watchdogs_of(daemon)
    );
    assert!(
        wait_until(Duration::from_secs(5), || !is_zombie(old)),
        "the killed watchdog is left a zombie"
    );
    s.run(&["hi"]).expect_stdout("hi\n").success();
    // An editor's run, then a killed daemon: the new watchdog ends it.
    let editor = editor_run(&s, serde_json::json!({"tasks": ["long"]}), 1);
    assert!(
        wait_until(Duration::from_secs(20), || !processes_matching(&marker)
            .is_empty()),
        "the task did not start"
    );
    let ended = kill_and_await_end(daemon, &marker);
    drop(editor);
    assert!(ended, "the task outlived its daemon");
    assert!(
        wait_until(Duration::from_secs(5), || watchdogs_of(daemon).is_empty()),
        "a watchdog outlived its daemon"
    );
}

#[test]
fn a_task_run_with_no_daemon_holds_no_descriptor_of_the_clients_connection() {
    let s = Scenario::new().rush("tasks:\n  fds:\n    cmd: ls -l /proc/self/fd/\n");
    let out = s.run(&["--no-daemon", "fds"]);
    out.success();
    assert!(
        !out.stdout().contains("socket:"),
        "the task inherited a socket:\n{}",
        out.stdout()
    );
}

#[test]
fn a_stopped_watchdog_does_not_stall_the_daemon_and_is_replaced() {
    // Enough spawns to fill the watchdog's pipe (64 KiB) many times over
    // were it not read: two short lines per task.
    let mut rush = String::from("tasks:\n  hi:\n    cmd: echo hi\n");
    let names: Vec<String> = (0..6000).map(|i| format!("t{i}")).collect();
    for n in &names {
        rush.push_str(&format!("  {n}:\n    cmd: 'true'\n"));
    }
    rush.push_str(&format!(
        "  all:\n    deps: [{}]\n    cmd: 'true'\n",
        names.join(", ")
    ));
    let s = Scenario::new().rush(&rush);
    s.run(&["hi"]).success();
    let daemon = s.daemon_pid().expect("a daemon");
    assert!(
        wait_until(Duration::from_secs(5), || watchdogs_of(daemon).len() == 1),
        "no watchdog"
    );
    let old = watchdogs_of(daemon)[0];
    signal(old, Signal::STOP);
    let out = s.run(&["--jobs", "8", "all"]);
    let replaced = wait_until(Duration::from_secs(5), || {
        watchdogs_of(daemon).iter().any(|&w| w != old)
    });
    let old_gone = wait_until(Duration::from_secs(5), || {
        !std::path::Path::new(&format!("/proc/{old}")).exists()
    });
    if !old_gone {
        signal(old, Signal::KILL);
    }
    out.success();
    assert!(replaced, "no new watchdog: {:?}", watchdogs_of(daemon));
    assert!(old_gone, "the stopped watchdog was left behind");
    s.run(&["hi"]).expect_stdout("hi\n").success();
}

#[test]
fn every_task_of_a_parallel_editor_run_ends_with_a_daemon_killed_by_sigkill() {
    let marker = unique_marker();
    let mut rush = String::from("tasks:\n  hi:\n    cmd: echo hi\n");
    let names: Vec<String> = (0..16).map(|i| format!("t{i}")).collect();
    for n in &names {
        // Each task has a child of its own in its group.
        rush.push_str(&format!(
            "  {n}:\n    cmd: sh -c 'sleep {marker} & sleep {marker}; wait'\n"
        ));
    }
    rush.push_str(&format!(
        "  all:\n    deps: [{}]\n    cmd: 'true'\n",
        names.join(", ")
    ));
    let s = Scenario::new().rush(&rush);
    s.run(&["hi"]).success();
    let editor = editor_run(
        &s,
        serde_json::json!({"tasks": ["all"], "jobs": 16}),
        names.len(),
    );
    // Per task its shell and two sleeps (dash execs the lone inner `sh`).
    assert!(
        wait_until(Duration::from_secs(30), || processes_matching(&format!(
            "sleep {marker}"
        ))
        .len()
            >= 48),
        "the tasks did not all start: {}",
        processes_matching(&format!("sleep {marker}")).len()
    );
    let daemon = s.daemon_pid().expect("a daemon");
    signal(daemon, Signal::KILL);
    let ended = wait_until(Duration::from_secs(5), || {
        processes_matching(&marker).is_empty()
    });
    let left = processes_matching(&marker).len();
    reap_leftovers(&marker);
    drop(editor);
    assert!(ended, "{left} processes outlived their daemon");
}
