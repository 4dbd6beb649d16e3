//! The CLI's own defences: whom it talks to, how long it waits, and what
//! it lets reach the user's terminal.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use taskrush_tests::Scenario;

/// A listener on `socket` that accepts connections, records every byte it
/// receives in `got`, and (with `answer`) replies to anything with a fake
/// successful run. Returns once it listens.
fn impostor(socket: &Path, got: &Path, answer: bool, uid: Option<u32>) -> Child {
    let script = r#"
import socket, sys, threading
path, got, answer = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
s = socket.socket(socket.AF_UNIX)
s.bind(path)
s.listen(16)
print("listening", flush=True)
open(got, "wb").close()
held = []
def serve(c):
    while True:
        data = c.recv(65536)
        if not data:
            return
        with open(got, "ab") as f:
            f.write(data)
        if answer:
            c.sendall(b'{"jsonrpc":"2.0","id":1,"result":{"version":"0.3.0","protocol":1}}\n')
while True:
    c, _ = s.accept()
    held.append(c)
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;
    let mut c = Command::new("python3");
    c.arg("-c")
        .arg(script)
        .arg(socket)
        .arg(got)
        .arg(if answer { "1" } else { "0" })
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(uid) = uid {
        c.uid(uid).gid(uid);
    }
    let mut child = c.spawn().expect("python3");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().expect("piped"))
        .read_line(&mut line)
        .expect("the impostor's first line");
    assert_eq!(line.trim(), "listening", "the impostor did not start");
    child
}

/// A world-writable sticky directory (like `/tmp`) `name` in the
/// scenario's root, which other users can reach.
fn shared_dir(t: &Scenario, name: &str) -> PathBuf {
    let shared = t.root().join(name);
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(t.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    shared
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn the_cli_sends_nothing_to_a_socket_another_user_listens_on() {
    // Given TASKRUSH_SOCKET in a shared directory where another user
    // (uid 65534) already listens,
    let t = Scenario::new().rush("tasks:\n  hi:\n    cmd: echo hi\n");
    let shared = shared_dir(&t, "shared");
    let socket = shared.join("d.sock");
    let got = shared.join("got");
    let listener = impostor(&socket, &got, true, Some(65534));
    // when I run a task with a secret in my environment,
    let out = t.run_with(&["hi"], |c| {
        c.env("TASKRUSH_SOCKET", &socket)
            .env("MY_SECRET", "hunter2");
    });
    let received = std::fs::read(&got).unwrap_or_default();
    stop(listener);
    // the CLI refuses, names the owner, and the listener got nothing.
    out.expect_code(1)
        .expect_stderr_containing("belongs to another user (uid 65534); nothing was sent to it");
    assert!(
        received.is_empty(),
        "the impostor received {:?}",
        String::from_utf8_lossy(&received)
    );
}

#[test]
fn a_daemon_that_accepts_and_never_answers_does_not_hang_the_cli() {
    // Given a listener of ours that accepts connections and never answers,
    let t = Scenario::new()
        .rush("tasks:\n  hi:\n    cmd: echo hi\n")
        .env("TASKRUSH_CONNECT_TIMEOUT", "0.5");
    std::fs::create_dir_all(t.socket().parent().unwrap()).unwrap();
    std::fs::set_permissions(
        t.socket().parent().unwrap(),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    let got = t.root().join("got");
    let listener = impostor(&t.socket(), &got, false, None);
    // when I run a task or ask for the daemon's status,
    let run = t.run(&["hi"]);
    let status = t.run(&["daemon", "status"]);
    stop(listener);
    // each gives up after the configured wait with a clear error.
    for out in [&run, &status] {
        out.expect_code(1).expect_stderr_containing(
            "error: the daemon at `[TMP]/run/taskrushd.sock` did not answer within 0.5 s",
        );
        assert!(
            out.elapsed >= Duration::from_millis(400) && out.elapsed < Duration::from_secs(8),
            "gave up after {:?}",
            out.elapsed
        );
    }
    run.expect_stderr_containing("hint: `taskrush daemon restart` replaces it");
}

#[test]
fn task_names_and_descriptions_cannot_drive_the_terminal() {
    // Given task names and descriptions holding terminal escape sequences,
    let t = Scenario::new().rush(concat!(
        "tasks:\n",
        "  \"evil\\e[2J\":\n",
        "    cmd: echo ok\n",
        "    description: \"set the title\\e]0;pwned\\a and bell\"\n",
        "  plain:\n",
        "    cmd: echo ok\n",
        "    depends_on: [\"evil\\e[2J\"]\n",
    ));
    // when I list them, and run one,
    let list = t.run(&["--list"]);
    let run = t.run(&["-j", "plain", "evil\u{1b}[2J"]);
    // I see them escaped, and no escape byte reaches my terminal.
    list.success();
    assert!(
        !list.stdout_bytes.contains(&0x1b) && !list.stdout_bytes.contains(&0x07),
        "raw control bytes in {:?}",
        list.stdout()
    );
    assert!(
        list.stdout()
            .contains("evil\\u{1b}[2J  set the title\\u{1b}]0;pwned\\u{7} and bell"),
        "{}",
        list.stdout()
    );
    assert!(
        list.stdout().contains("[depends on: evil\\u{1b}[2J]"),
        "{}",
        list.stdout()
    );
    run.success();
    assert!(
        run.stdout().contains("[evil\\u{1b}[2J] ok\n"),
        "{}",
        run.stdout()
    );
    assert!(!run.stdout_bytes.contains(&0x1b), "{:?}", run.stdout());
}

#[test]
fn the_cli_sends_nothing_to_another_users_socket_at_the_default_path() {
    // Given a shared XDG_RUNTIME_DIR where another user (uid 65534) made
    // `taskrush/` and listens at the default socket path,
    let t = Scenario::new().rush("tasks:\n  hi:\n    cmd: echo hi\n");
    let shared = shared_dir(&t, "shared-runtime");
    let dir = shared.join("taskrush");
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
    let got = t.root().join("got");
    std::fs::write(&got, "").unwrap();
    std::os::unix::fs::chown(&got, Some(65534), Some(65534)).unwrap();
    let listener = impostor(&dir.join("taskrushd.sock"), &got, true, Some(65534));
    // when I run a task without TASKRUSH_SOCKET,
    let out = t.run_with(&["hi"], |c| {
        c.env_remove("TASKRUSH_SOCKET")
            .env("XDG_RUNTIME_DIR", &shared);
    });
    let received = std::fs::read(&got).unwrap_or_default();
    stop(listener);
    // the CLI refuses, names the owner and what to change, and sent nothing.
    out.expect_code(1)
        .expect_stderr_containing("belongs to another user (uid 65534); nothing was sent to it")
        .expect_stderr_containing("hint: XDG_RUNTIME_DIR is not private to you");
    assert!(received.is_empty(), "the impostor received {received:?}");
}

#[test]
fn an_invalid_connect_timeout_is_named_and_the_default_used() {
    for value in ["soon", "0", "-3"] {
        let t = Scenario::new()
            .rush("tasks:\n  hi:\n    cmd: echo hi\n")
            .env("TASKRUSH_CONNECT_TIMEOUT", value);
        let out = t.run(&["hi"]);
        out.expect_stdout("hi\n").success();
        out.expect_stderr(&format!(
            "taskrush: warning: invalid `TASKRUSH_CONNECT_TIMEOUT` value `{value}`: expected seconds above 0; waiting 10 s\n"
        ));
    }
}

#[test]
fn a_daemon_that_never_accepts_does_not_hang_the_cli() {
    // Given a listener of ours that never accepts, its backlog full (a
    // frozen daemon that many clients tried),
    let t = Scenario::new()
        .rush("tasks:\n  hi:\n    cmd: echo hi\n")
        .env("TASKRUSH_CONNECT_TIMEOUT", "0.5");
    let dir = t.socket().parent().unwrap().to_owned();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let script = r#"
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen(0)
held = []
while True:
    c = socket.socket(socket.AF_UNIX)
    c.setblocking(False)
    try:
        c.connect(sys.argv[1])
        held.append(c)
    except BlockingIOError:
        break
print("full", flush=True)
time.sleep(600)
"#;
    let mut listener = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(t.socket())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    BufReader::new(listener.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "full");
    // when I run a task or ask for the daemon's status,
    let run = t.run(&["hi"]);
    let status = t.run(&["daemon", "status"]);
    stop(listener);
    // each gives up after the configured wait with a clear error.
    for out in [&run, &status] {
        out.expect_code(1).expect_stderr_containing(
            "error: the daemon at `[TMP]/run/taskrushd.sock` did not answer within 0.5 s",
        );
        assert!(
            out.elapsed < Duration::from_secs(8),
            "gave up after {:?}",
            out.elapsed
        );
    }
}
