//! The daemon's lifecycle as the CLI sees it.

use std::os::unix::fs::PermissionsExt;

use taskrush_tests::Scenario;

#[test]
fn the_first_run_starts_the_daemon_and_status_reports_it() {
    let t = Scenario::new().rush("tasks:\n  t:\n    cmd: 'true'\n");
    t.run(&["daemon", "status"]).expect_code(3);
    t.run(&["t"]).success();
    let out = t.run(&["daemon", "status"]);
    out.success();
    let s = out.stdout();
    assert!(s.starts_with("taskrushd "), "{s}");
    assert!(
        s.contains(&format!("socket:   {}", t.socket().display())),
        "{s}"
    );
    assert!(
        s.contains(&t.project().display().to_string()),
        "the project is listed: {s}"
    );
}

#[test]
fn status_json_has_the_fields_scripts_need() {
    let t = Scenario::new().rush("tasks:\n  t:\n    cmd: 'true'\n");
    t.run(&["t"]).success();
    let v = t.daemon_status().expect("daemon status");
    for field in [
        "pid",
        "version",
        "protocol",
        "uptime_ms",
        "socket",
        "log",
        "projects",
        "runs",
    ] {
        assert!(v.get(field).is_some(), "missing `{field}` in {v}");
    }
}

#[test]
fn stop_stops_the_daemon_and_removes_the_socket() {
    let t = Scenario::new().rush("tasks:\n  t:\n    cmd: 'true'\n");
    t.run(&["t"]).success();
    let pid = t.daemon_pid().expect("a daemon");
    t.run(&["daemon", "stop"]).success();
    assert!(!t.socket().exists());
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid));
    t.run(&["daemon", "status"]).expect_code(3);
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.contains(") Z "))
        .unwrap_or(true)
}

#[test]
fn the_socket_is_private() {
    let t = Scenario::new().rush("tasks:\n  t:\n    cmd: 'true'\n");
    t.run(&["t"]).success();
    let mode = std::fs::metadata(t.socket()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn the_default_socket_directory_is_created_private() {
    let t = Scenario::new().rush("tasks:\n  t:\n    cmd: 'true'\n");
    let runtime = t.root().join("home/runtime");
    t.run_with(&["t"], |c| {
        c.env_remove("TASKRUSH_SOCKET");
    })
    .success();
    let dir = runtime.join("taskrush");
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert!(dir.join("taskrushd.sock").exists());
    t.run_with(&["daemon", "stop"], |c| {
        c.env_remove("TASKRUSH_SOCKET");
    })
    .success();
}

#[test]
fn a_stale_socket_file_from_a_dead_daemon_is_replaced() {
    let t = Scenario::new().rush("tasks:\n  t:\n    cmd: echo ok\n");
    std::fs::create_dir_all(t.socket().parent().unwrap()).unwrap();
    // A socket file nobody listens on (as after `kill -9`).
    let l = std::os::unix::net::UnixListener::bind(t.socket()).unwrap();
    drop(l);
    assert!(t.socket().exists());
    t.run(&["t"]).expect_stdout("ok\n").success();
}

#[test]
fn a_daemon_that_cannot_start_is_reported_with_its_log() {
    let t = Scenario::new().rush("tasks:\n  t:\n    cmd: 'true'\n");
    let out = t.run_with(&["t"], |c| {
        c.env("TASKRUSHD", "/nonexistent/taskrushd");
    });
    out.expect_code(1);
    out.expect_stderr_starting(
        "error: the daemon `taskrushd` did not start: cannot execute `/nonexistent/taskrushd`",
    );
    out.expect_stderr_containing("hint: its log is `[TMP]/run/taskrushd.log`");
}

#[test]
fn the_daemon_writes_its_log_and_logs_shows_it() {
    let t = Scenario::new().rush("tasks:\n  t:\n    cmd: 'true'\n");
    t.run(&["t"]).success();
    let out = t.run(&["daemon", "logs"]);
    out.success();
    assert!(out.stdout().contains("listening"), "{}", out.stdout());
}

#[test]
fn daemon_start_twice_returns_once_ready_and_the_second_finds_the_first() {
    let t = Scenario::new();
    // `run` reads stdout and stderr to their end, as `execFile` does: the
    // daemon must not hold them open.
    let first = t.run(&["daemon", "start", "--json"]);
    first.success();
    let v: serde_json::Value = serde_json::from_str(first.stdout().trim()).expect("json");
    assert_eq!(v["started"], true, "{v}");
    assert_eq!(v["socket"], t.socket().display().to_string(), "{v}");
    let pid = v["pid"].as_u64().expect("a pid");
    assert!(t.socket().exists(), "the socket is there once it returns");
    let second = t.run(&["daemon", "start"]);
    second.success();
    assert_eq!(
        second.stdout(),
        format!(
            "taskrushd already running, pid {pid}, socket `{}`\n",
            t.socket().display()
        )
    );
    assert_eq!(t.daemon_pid(), Some(pid as u32), "still the first daemon");
}
