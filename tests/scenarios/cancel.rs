//! Ctrl-C and vanishing clients: the run's processes are all stopped.

use std::process::Stdio;
use std::time::Duration;

use rustix::process::Signal;
use taskrush_tests::{Scenario, processes_matching, signal, wait_until};

/// A task that starts a grandchild (`sleep`) and waits for it; the marker
/// in the sleep's argument lets the test find it in /proc.
fn sleeper(marker: &str) -> String {
    format!("tasks:\n  long:\n    cmd: touch started; sh -c 'sleep {marker} & wait'\n")
}

/// A distinct, valid `sleep` duration per test, to find its process.
fn unique_marker() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("1{}{n:03}.25", std::process::id())
}

#[test]
fn ctrl_c_cancels_the_run_and_leaves_no_process_behind() {
    let marker = unique_marker();
    let t = Scenario::new().rush(&sleeper(&marker));
    let mut c = t.command(&["long"]);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    let pid = child.id();
    assert!(
        wait_until(Duration::from_secs(20), || t
            .project()
            .join("started")
            .exists()),
        "task started"
    );
    assert!(
        wait_until(Duration::from_secs(5), || !processes_matching(&marker)
            .is_empty()),
        "grandchild running"
    );

    let sent = std::time::Instant::now();
    signal(pid, Signal::INT);
    let out = t.finish(child, Duration::from_secs(10));
    let took = sent.elapsed();
    out.expect_code(130);
    assert!(took < Duration::from_secs(2), "exited after {took:?}");
    assert!(
        wait_until(Duration::from_secs(1), || processes_matching(&marker)
            .is_empty()),
        "processes left: {:?}",
        processes_matching(&marker)
    );
}

#[test]
fn a_killed_client_cancels_its_run() {
    let marker = unique_marker();
    let t = Scenario::new().rush(&sleeper(&marker));
    let mut c = t.command(&["long"]);
    c.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    assert!(wait_until(Duration::from_secs(20), || t
        .project()
        .join("started")
        .exists()));
    assert!(wait_until(Duration::from_secs(5), || !processes_matching(
        &marker
    )
    .is_empty()));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        wait_until(Duration::from_secs(3), || processes_matching(&marker)
            .is_empty()),
        "processes left after the client was killed: {:?}",
        processes_matching(&marker)
    );
}

#[test]
fn a_task_that_ignores_sigint_and_sigterm_is_killed() {
    let marker = unique_marker();
    let t = Scenario::new().rush(&format!(
        "tasks:\n  stubborn:\n    cmd: trap '' INT TERM; touch started; sleep {marker} & wait; wait\n"
    ));
    let mut c = t.command(&["stubborn"]);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    let pid = child.id();
    assert!(wait_until(Duration::from_secs(20), || t
        .project()
        .join("started")
        .exists()));
    signal(pid, Signal::INT);
    let out = t.finish(child, Duration::from_secs(10));
    out.expect_code(130);
    assert!(
        wait_until(Duration::from_secs(3), || processes_matching(&marker)
            .is_empty()),
        "processes left: {:?}",
        processes_matching(&marker)
    );
}

/// Start `taskrush ARGS` (its stdout and stderr on a terminal when
/// `terminal`), wait until `ready` tasks touched their `started-*` file,
/// press Ctrl-C, and return the events the daemon published for the run
/// once it finished.
fn ctrl_c_once_started(
    t: &Scenario,
    args: &[&str],
    ready: &[&str],
    terminal: bool,
) -> Vec<serde_json::Value> {
    t.start_daemon(&[]);
    let mut events = t.events();
    let pty = taskrush_tests::Pty::open();
    let mut c = t.command(args);
    if terminal {
        c.stdin(Stdio::null())
            .stdout(pty.slave.try_clone().unwrap())
            .stderr(pty.slave.try_clone().unwrap());
    } else {
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
    }
    let child = c.spawn().unwrap();
    drop(c);
    for name in ready {
        assert!(
            wait_until(Duration::from_secs(20), || t
                .project()
                .join(format!("started-{name}"))
                .exists()),
            "task `{name}` started"
        );
    }
    signal(child.id(), Signal::INT);
    t.finish(child, Duration::from_secs(10)).expect_code(130);
    events.wait_kind("run_finished");
    let log = std::fs::read_to_string(t.log()).unwrap_or_default();
    assert!(
        !log.contains("panicked") && !log.contains("resumed after completion"),
        "the daemon's runner panicked:\n{log}"
    );
    events.seen
}

fn status_of<'a>(seen: &'a [serde_json::Value], kind: &str, task: Option<&str>) -> Vec<&'a str> {
    seen.iter()
        .filter(|e| e["event"] == kind && task.is_none_or(|t| e["task"] == t))
        .filter_map(|e| e["status"].as_str())
        .collect()
}

const TWO_SLEEPERS: &str = "tasks:
  one:
    cmd: touch started-one; sleep 30
  two:
    cmd: touch started-two; sleep 30
  both:
    deps: [one, two]
";

#[test]
fn ctrl_c_during_a_serial_run_on_a_terminal_reports_the_task_and_the_run_cancelled() {
    let t = Scenario::new().rush(TWO_SLEEPERS);
    let seen = ctrl_c_once_started(&t, &["one"], &["one"], true);
    assert_eq!(
        status_of(&seen, "task_finished", Some("one")),
        ["cancelled"]
    );
    assert_eq!(status_of(&seen, "run_finished", None), ["cancelled"]);
}

#[test]
fn ctrl_c_during_a_serial_run_through_pipes_reports_the_task_and_the_run_cancelled() {
    let t = Scenario::new().rush(TWO_SLEEPERS);
    let seen = ctrl_c_once_started(&t, &["one"], &["one"], false);
    assert_eq!(
        status_of(&seen, "task_finished", Some("one")),
        ["cancelled"]
    );
    assert_eq!(status_of(&seen, "run_finished", None), ["cancelled"]);
}

#[test]
fn ctrl_c_during_a_parallel_run_reports_every_running_task_cancelled() {
    let t = Scenario::new().rush(TWO_SLEEPERS);
    let seen = ctrl_c_once_started(&t, &["--jobs", "2", "both"], &["one", "two"], true);
    assert_eq!(
        status_of(&seen, "task_finished", Some("one")),
        ["cancelled"]
    );
    assert_eq!(
        status_of(&seen, "task_finished", Some("two")),
        ["cancelled"]
    );
    assert_eq!(status_of(&seen, "run_finished", None), ["cancelled"]);
}

/// The recording fixture plugin, installed as `.rush-plugins/rec/`.
fn recording_plugin(t: &Scenario) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins-external/fixtures/fixture.py");
    t.write(
        ".rush-plugins/rec/plugin.toml",
        format!(
            "name = \"rec\"\nversion = \"1.0.0\"\n\
             entry_point = [\"python3\", \"-I\", \"-u\", \"{}\", \"good\"]\n\
             taskrush_version = \">=0.3\"\n\n[permissions]\nfilesystem = [\".\"]\n",
            script.display()
        ),
    );
    t.grant_in_config("rec");
}

/// The `result.status` of each `after_task` the plugin recorded for `task`.
fn after_task_statuses(t: &Scenario, task: &str) -> Vec<String> {
    t.read("rec.jsonl")
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["hook"] == "after_task" && r["task"] == task)
        .map(|r| r["result"]["status"].as_str().unwrap_or("?").to_owned())
        .collect()
}

fn with_recording_plugin(t: Scenario) -> Scenario {
    recording_plugin(&t);
    let rec = t.project().join("rec.jsonl").display().to_string();
    t.rush(&format!(
        "plugins:\n  - {{name: rec, config: {{record: '{rec}'}}}}\n{TWO_SLEEPERS}"
    ))
}

#[test]
fn ctrl_c_during_a_serial_run_tells_the_plugins_the_task_was_cancelled() {
    let t = with_recording_plugin(Scenario::new());
    let seen = ctrl_c_once_started(&t, &["one"], &["one"], true);
    assert_eq!(
        status_of(&seen, "task_finished", Some("one")),
        ["cancelled"]
    );
    assert_eq!(after_task_statuses(&t, "one"), ["cancelled"]);
}

#[test]
fn ctrl_c_during_a_parallel_run_tells_the_plugins_each_task_was_cancelled() {
    let t = with_recording_plugin(Scenario::new());
    let seen = ctrl_c_once_started(&t, &["--jobs", "2", "both"], &["one", "two"], false);
    assert_eq!(status_of(&seen, "run_finished", None), ["cancelled"]);
    assert_eq!(after_task_statuses(&t, "one"), ["cancelled"]);
    assert_eq!(after_task_statuses(&t, "two"), ["cancelled"]);
}
