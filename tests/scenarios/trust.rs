//! A daemon people can trust: one instance, found and replaced safely,
//! recovering by itself, and a way to run without it.

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::Duration;

use rustix::process::Signal;
use taskrush_tests::{Scenario, daemons_for, processes_matching, signal, wait_until};

const HI: &str = "tasks:\n  hi:\n    cmd: echo hi\n";

#[test]
fn twenty_runs_started_at_once_leave_exactly_one_daemon() {
    let t = Scenario::new().rush(HI);
    let children: Vec<_> = (0..20)
        .map(|_| {
            let mut c = t.command(&["hi"]);
            c.stdout(Stdio::piped()).stderr(Stdio::piped());
            c.spawn().unwrap()
        })
        .collect();
    for child in children {
        t.finish(child, Duration::from_secs(30))
            .expect_stdout("hi\n")
            .success();
    }
    assert_eq!(
        daemons_for(&t.socket()).len(),
        1,
        "daemons: {:?}",
        daemons_for(&t.socket())
    );
}

#[test]
fn after_kill_9_of_the_daemon_the_next_run_recovers_by_itself() {
    let t = Scenario::new().rush(HI);
    t.run(&["hi"]).success();
    let pid = t.daemon_pid().unwrap();
    signal(pid, Signal::KILL);
    assert!(wait_until(Duration::from_secs(5), || daemons_for(
        &t.socket()
    )
    .is_empty()));
    assert!(t.socket().exists(), "the stale socket file is still there");
    t.run(&["hi"]).expect_stdout("hi\n").success();
    assert_ne!(t.daemon_pid().unwrap(), pid);
}

#[test]
fn a_client_whose_daemon_dies_mid_run_exits_quickly_and_its_tasks_are_gone() {
    static MARK: &str = "1777333.25";
    let t = Scenario::new().rush(&format!(
        "tasks:\n  long:\n    cmd: touch started; sleep {MARK}\n"
    ));
    let mut c = t.command(&["long"]);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    assert!(wait_until(Duration::from_secs(20), || t
        .project()
        .join("started")
        .exists()));
    let pid = daemons_for(&t.socket())[0];
    let killed = std::time::Instant::now();
    signal(pid, Signal::KILL);
    let out = t.finish(child, Duration::from_secs(10));
    assert!(
        killed.elapsed() < Duration::from_secs(1),
        "took {:?}",
        killed.elapsed()
    );
    out.expect_code(1);
    out.expect_stderr_starting("error: lost the connection to the daemon");
    assert!(
        wait_until(Duration::from_secs(2), || processes_matching(MARK)
            .is_empty()),
        "the task is gone"
    );
}

#[test]
fn an_idle_daemon_of_another_version_is_replaced() {
    let t = Scenario::new().rush(HI);
    t.start_daemon(&[("TASKRUSH_TEST_DAEMON_VERSION", "0.0.1")]);
    let old = t.daemon_pid().unwrap();
    t.run(&["hi"]).expect_stdout("hi\n").success();
    let v = t.daemon_status().expect("daemon status");
    assert_ne!(v["pid"].as_u64().unwrap() as u32, old);
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        v["started_because"],
        format!(
            "replaced taskrushd 0.0.1 (this taskrush is {})",
            env!("CARGO_PKG_VERSION")
        )
    );
}

#[test]
fn a_busy_daemon_of_another_version_is_left_alone_and_the_run_goes_without_it() {
    use std::io::{BufRead, Write};
    let t = Scenario::new()
        .rush("tasks:\n  hi:\n    cmd: echo hi\n  long:\n    cmd: touch started; sleep 30\n");
    t.start_daemon(&[("TASKRUSH_TEST_DAEMON_VERSION", "0.0.1")]);
    let old = t.daemon_pid().unwrap();
    // An editor keeps the old daemon busy with a run.
    let mut editor = std::os::unix::net::UnixStream::connect(t.socket()).unwrap();
    let req = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "run",
        "params": {"request": {"cwd": t.project().display().to_string(), "tasks": ["long"]}}});
    writeln!(editor, "{req}").unwrap();
    let mut first = String::new();
    std::io::BufReader::new(editor.try_clone().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(wait_until(Duration::from_secs(20), || t
        .project()
        .join("started")
        .exists()));

    let out = t.run(&["hi"]);
    out.expect_stdout("hi\n").success();
    out.expect_stderr_containing("warning: the daemon is TaskRush 0.0.1");
    assert_eq!(
        t.daemon_pid().unwrap(),
        old,
        "the busy daemon was not replaced"
    );
    drop(editor);
}

#[test]
fn an_idle_daemon_exits_after_its_idle_timeout() {
    let t = Scenario::new()
        .rush(HI)
        .env("TASKRUSH_IDLE_TIMEOUT", "300ms");
    t.run(&["hi"]).success();
    assert!(
        wait_until(Duration::from_secs(10), || daemons_for(&t.socket())
            .is_empty()),
        "the daemon stopped"
    );
}

#[test]
fn an_idle_timeout_never_stops_a_run_in_progress() {
    let t = Scenario::new()
        .rush("tasks:\n  slow:\n    cmd: sleep 1; echo done\n")
        .env("TASKRUSH_IDLE_TIMEOUT", "100ms");
    t.run(&["slow"]).expect_stdout("done\n").success();
}

#[test]
fn no_daemon_runs_the_same_and_leaves_no_process_or_socket() {
    let t = Scenario::new().rush("tasks:\n  hi:\n    cmd: echo hi; exit 3\n");
    t.run(&["--no-daemon", "hi"])
        .expect_stdout("hi\n")
        .expect_code(3);
    t.run_with(&["hi"], |c| {
        c.env("TASKRUSH_DAEMON", "0");
    })
    .expect_stdout("hi\n")
    .expect_code(3);
    assert!(!t.socket().exists());
    assert!(daemons_for(&t.socket()).is_empty());
}

#[test]
fn an_unsafe_socket_directory_is_refused_and_the_run_goes_without_a_daemon() {
    let t = Scenario::new().rush(HI);
    let runtime = t.root().join("home/runtime");
    let dir = runtime.join("taskrush");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = t.run_with(&["hi"], |c| {
        c.env_remove("TASKRUSH_SOCKET");
    });
    out.expect_stdout("hi\n").success();
    out.expect_stderr_containing("is accessible to other users (mode 755)");
    out.expect_stderr_containing("running without the daemon");
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "nothing was created inside it"
    );
}

#[test]
fn a_symlink_in_place_of_the_socket_directory_is_refused() {
    let t = Scenario::new().rush(HI);
    let runtime = t.root().join("home/runtime");
    std::fs::create_dir_all(&runtime).unwrap();
    std::os::unix::fs::symlink(t.root(), runtime.join("taskrush")).unwrap();
    let out = t.run_with(&["hi"], |c| {
        c.env_remove("TASKRUSH_SOCKET");
    });
    out.expect_stdout("hi\n").success();
    out.expect_stderr_containing("is a symbolic link");
}

#[test]
fn a_socket_path_too_long_suggests_taskrush_socket() {
    let t = Scenario::new().rush(HI);
    let long = t.root().join("x".repeat(120)).join("d.sock");
    let out = t.run_with(&["hi"], |c| {
        c.env("TASKRUSH_SOCKET", &long);
    });
    out.expect_stdout("hi\n").success();
    out.expect_stderr_containing("is longer than 107 bytes");
}

#[test]
fn ctrl_c_never_stops_the_daemon() {
    let t = Scenario::new().rush("tasks:\n  long:\n    cmd: touch started; sleep 30\n");
    let mut c = t.command(&["long"]);
    c.stdout(Stdio::null()).stderr(Stdio::null());
    let child = c.spawn().unwrap();
    assert!(wait_until(Duration::from_secs(20), || t
        .project()
        .join("started")
        .exists()));
    let daemon = t.daemon_pid().unwrap();
    signal(child.id(), Signal::INT);
    t.finish(child, Duration::from_secs(10)).expect_code(130);
    assert_eq!(t.daemon_pid(), Some(daemon));
}

#[test]
fn a_peer_of_another_user_is_refused_even_if_the_socket_is_opened_up() {
    use std::os::unix::process::CommandExt;
    let t = Scenario::new().rush(HI);
    t.run(&["hi"]).success();
    // Loosen what protects the socket, so that only the peer check is left.
    std::fs::set_permissions(
        t.socket().parent().unwrap(),
        std::fs::Permissions::from_mode(0o777),
    )
    .unwrap();
    std::fs::set_permissions(t.socket(), std::fs::Permissions::from_mode(0o777)).unwrap();
    // The daemon may close the connection before the request is even
    // written (EPIPE) or while it is read (ECONNRESET): both mean refused.
    let script = "import socket,sys\n\
s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.settimeout(5)\n\
try:\n    s.sendall(b'{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"daemon_status\"}\\n')\n    print(repr(s.recv(4096)))\n\
except (ConnectionResetError, BrokenPipeError):\n    print(repr(b''))\n";
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(t.socket())
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "b''",
        "no answer, connection closed"
    );
    t.run(&["hi"]).expect_stdout("hi\n").success();
}

#[test]
fn stopping_the_daemon_stops_running_tasks_and_tells_their_clients() {
    let t = Scenario::new().rush("tasks:\n  long:\n    cmd: touch started; sleep 1888111.25\n");
    let mut c = t.command(&["long"]);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    assert!(wait_until(Duration::from_secs(20), || t
        .project()
        .join("started")
        .exists()));
    t.run(&["daemon", "stop"]).success();
    let out = t.finish(child, Duration::from_secs(10));
    out.expect_code(130);
    out.expect_stderr_containing("error: the daemon was stopped");
    assert!(processes_matching("1888111.25").is_empty());
}

#[test]
fn a_lock_file_naming_an_unrelated_process_is_ignored() {
    let t = Scenario::new().rush(HI);
    std::fs::create_dir_all(t.socket().parent().unwrap()).unwrap();
    // pid 1 is alive and not ours: nothing may signal it or wait for it.
    std::fs::write(format!("{}.lock", t.socket().display()), "1\n").unwrap();
    t.run(&["hi"]).expect_stdout("hi\n").success();
}
