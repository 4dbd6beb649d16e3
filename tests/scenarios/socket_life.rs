//! The daemon's socket, lock and log through the faults of real life: a
//! deleted socket, a runtime directory removed and recreated (logout), a
//! daemon out of file descriptors or connections, files planted in a
//! shared socket directory, a log that grows without end.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use rustix::process::Signal;
use taskrush_tests::{Scenario, signal, wait_until};

const HI: &str = "tasks:\n  hi:\n    cmd: echo hi\n";

/// Whether the process lives (a zombie does not count).
fn alive(pid: u32) -> bool {
    taskrush_tests::process_state(pid).is_some_and(|state| !matches!(state, 'Z' | 'X'))
}

/// One JSON-RPC call on a new raw connection, the connection kept open;
/// `None` when no answer comes within 5 s or the connection closes.
fn call_and_keep(socket: &Path, method: &str) -> (UnixStream, Option<serde_json::Value>) {
    let mut s = UnixStream::connect(socket).expect("connect to the daemon");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = writeln!(s, r#"{{"jsonrpc":"2.0","id":1,"method":"{method}"}}"#);
    let mut line = String::new();
    let answer = BufReader::new(&s)
        .read_line(&mut line)
        .ok()
        .and_then(|_| serde_json::from_str(&line).ok());
    (s, answer)
}

/// Whether the daemon answers a new connection's `daemon_status`.
fn serves(t: &Scenario) -> bool {
    call_and_keep(&t.socket(), "daemon_status")
        .1
        .is_some_and(|a| a["result"].is_object())
}

/// Start this scenario's daemon by hand with soft and hard open file
/// limits of `limit` (so raising the soft one does not help).
fn start_with_fd_limit(t: &Scenario, limit: u32) {
    let started = t.sh(&format!("ulimit -n {limit} && taskrushd --notify-ready &"));
    assert!(
        started.stdout().starts_with("ready"),
        "{}",
        started.stdout()
    );
}

#[test]
fn a_deleted_socket_is_bound_again_and_the_same_daemon_answers() {
    let t = Scenario::new().rush(HI);
    t.run(&["hi"]).success();
    let pid = t.daemon_pid().unwrap();
    std::fs::remove_file(t.socket()).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || t.socket().exists()),
        "the daemon did not bind its socket again"
    );
    t.run(&["hi"]).expect_stdout("hi\n").success();
    assert_eq!(t.daemon_pid(), Some(pid));
}

#[test]
fn an_old_daemon_whose_directory_was_recreated_leaves_the_new_daemons_socket_alone() {
    let t = Scenario::new().rush(HI);
    t.run(&["hi"]).success();
    let old = t.daemon_pid().unwrap();
    // A logout removes the runtime directory; the next login's first run
    // starts a new daemon there.
    std::fs::remove_dir_all(t.socket().parent().unwrap()).unwrap();
    t.run(&["hi"]).expect_stdout("hi\n").success();
    let new = t.daemon_pid().unwrap();
    assert_ne!(new, old);
    // The old daemon ends (by itself; SIGTERM if it has not yet): it must
    // not take the new daemon's socket with it.
    if !wait_until(Duration::from_secs(5), || !alive(old)) {
        signal(old, Signal::TERM);
    }
    assert!(wait_until(Duration::from_secs(10), || !alive(old)));
    assert!(
        t.socket().exists(),
        "the old daemon unlinked the new socket"
    );
    t.run(&["hi"]).expect_stdout("hi\n").success();
    assert_eq!(t.daemon_pid(), Some(new));
}

#[test]
fn daemon_status_names_a_daemon_that_holds_the_lock_but_does_not_answer() {
    let t = Scenario::new().rush(HI);
    t.run(&["hi"]).success();
    let pid = t.daemon_pid().unwrap();
    // Frozen, it cannot bind its socket again.
    signal(pid, Signal::STOP);
    std::fs::remove_file(t.socket()).unwrap();
    let status = t.run(&["daemon", "status"]);
    signal(pid, Signal::CONT);
    status.expect_code(4);
    assert!(
        status
            .stdout()
            .starts_with(&format!("a taskrushd (pid {pid}, per `")),
        "{}",
        status.stdout()
    );
    assert!(
        status
            .stdout()
            .contains("holds the lock but does not answer")
    );
    // Thawed, it sees its socket gone and binds it again.
    assert!(wait_until(Duration::from_secs(5), || t.socket().exists()));
    assert_eq!(t.daemon_pid(), Some(pid));
}

#[test]
fn the_connection_limit_refuses_one_more_client_with_an_error_saying_so() {
    let t = Scenario::new()
        .rush(HI)
        .env("TASKRUSH_MAX_CONNECTIONS", "3");
    t.run(&["hi"]).success();
    let held: Vec<_> = (0..3)
        .map(|_| {
            let (s, answer) = call_and_keep(&t.socket(), "daemon_status");
            assert!(answer.unwrap()["result"]["pid"].is_u64());
            s
        })
        .collect();
    let (_, refused) = call_and_keep(&t.socket(), "daemon_status");
    let refused = refused.expect("an answer, not a hang or a reset");
    assert_eq!(refused["error"]["code"], -32007, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("too many connections: the daemon serves at most 3 at once"),
        "{message}"
    );
    assert!(message.contains("TASKRUSH_MAX_CONNECTIONS"), "{message}");
    // The CLI shows the refusal as it is, instead of a lost connection.
    t.run(&["hi"])
        .expect_code(1)
        .expect_stderr_starting("error: too many connections: the daemon serves at most 3 at once");
    drop(held);
    assert!(wait_until(Duration::from_secs(5), || serves(&t)));
    t.run(&["hi"]).expect_stdout("hi\n").success();
}

#[test]
fn a_daemon_out_of_file_descriptors_answers_every_client_logs_once_and_recovers() {
    let t = Scenario::new().rush(HI);
    start_with_fd_limit(&t, 48);
    let mut served = Vec::new();
    let mut refused = 0;
    for _ in 0..80 {
        let (s, answer) = call_and_keep(&t.socket(), "daemon_status");
        let answer = answer.expect("an answer, not a hang");
        if answer["result"].is_object() {
            served.push(s);
        } else {
            assert_eq!(
                answer["error"]["message"].as_str().unwrap().lines().next(),
                Some("the daemon is out of file descriptors"),
                "{answer}"
            );
            refused += 1;
        }
    }
    assert!(refused > 0, "the limit was never reached");
    drop(served);
    assert!(wait_until(Duration::from_secs(5), || serves(&t)));
    t.run(&["hi"]).expect_stdout("hi\n").success();
    let log = std::fs::read_to_string(t.log()).unwrap();
    let failed = log.lines().filter(|l| l.contains("accept failed")).count();
    assert_eq!(failed, 1, "one line per episode:\n{log}");
    assert!(log.contains("accepting connections again after"), "{log}");
}

#[test]
fn a_symlink_planted_at_the_lock_file_is_refused_and_its_target_untouched() {
    let t = Scenario::new().rush(HI);
    let dir = t.socket().parent().unwrap().to_owned();
    std::fs::create_dir_all(&dir).unwrap();
    let victim = t.root().join("victim.txt");
    std::fs::write(&victim, "precious\n").unwrap();
    std::os::unix::fs::symlink(&victim, format!("{}.lock", t.socket().display())).unwrap();
    let out = t.run(&["hi"]);
    out.expect_stdout("hi\n").success();
    out.expect_stderr_containing("is a symbolic link");
    out.expect_stderr_containing("running without the daemon");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
}

#[test]
fn a_log_file_of_another_user_receives_nothing() {
    let t = Scenario::new().rush(HI);
    let dir = t.socket().parent().unwrap().to_owned();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(t.log(), "").unwrap();
    std::os::unix::fs::chown(t.log(), Some(65534), Some(65534)).unwrap();
    let out = t.run(&["hi"]);
    out.expect_stdout("hi\n").success();
    out.expect_stderr_containing("belongs to uid 65534");
    assert_eq!(std::fs::read_to_string(t.log()).unwrap(), "");
}

#[test]
fn a_new_explicit_socket_directory_and_the_files_in_it_are_private() {
    let t = Scenario::new().rush(HI);
    let socket = t.root().join("fresh").join("sub").join("d.sock");
    let out = t.run_with(&["hi"], |c| {
        c.env("TASKRUSH_SOCKET", &socket);
    });
    out.expect_stdout("hi\n").success();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
    let dir = socket.parent().unwrap();
    assert_eq!(mode(dir), 0o700, "socket directory");
    assert_eq!(mode(&dir.join("taskrushd.log")), 0o600, "log");
    assert_eq!(mode(&dir.join("d.sock.lock")), 0o600, "lock");
    let stop = t.run_with(&["daemon", "stop"], |c| {
        c.env("TASKRUSH_SOCKET", &socket);
    });
    stop.success();
}

#[test]
fn the_daemon_log_is_rotated_by_size_keeping_two_old_files() {
    let t = Scenario::new()
        .rush(HI)
        .env("TASKRUSH_LOG_MAX_BYTES", "1500")
        .env("TASKRUSH_LOG_LEVEL", "debug");
    for _ in 0..12 {
        t.run(&["hi"]).expect_stdout("hi\n").success();
    }
    let log = t.log();
    let rotated = |n: u32| std::path::PathBuf::from(format!("{}.{n}", log.display()));
    assert!(rotated(1).exists() && rotated(2).exists(), "no rotation");
    assert!(!rotated(3).exists(), "more than two old logs kept");
    for p in [log.clone(), rotated(1), rotated(2)] {
        let size = std::fs::metadata(&p).unwrap().len();
        // One line may straddle the limit.
        assert!(size < 1500 + 1024, "`{}` is {size} bytes", p.display());
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}

#[test]
fn a_fifo_planted_at_the_log_or_the_lock_hangs_neither_the_daemon_nor_the_cli() {
    for planted in ["taskrushd.log", "taskrushd.sock.lock"] {
        // Given a FIFO (which nobody reads) planted in the socket directory,
        let t = Scenario::new().rush(HI);
        let dir = t.socket().parent().unwrap().to_owned();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let fifo = dir.join(planted);
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        // when I run a task,
        let mut c = t.command(&["hi"]);
        c.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let out = t.finish(c.spawn().unwrap(), Duration::from_secs(20));
        // it runs (without the daemon when the lock is the FIFO), and the
        // FIFO is named as not a regular file.
        out.expect_stdout("hi\n").success();
        out.expect_stderr_containing("is not a regular file");
        assert!(
            out.elapsed < Duration::from_secs(9),
            "waited {:?}",
            out.elapsed
        );
    }
}

#[test]
fn the_cli_refused_by_a_daemon_out_of_descriptors_says_so_without_starting_another() {
    let t = Scenario::new().rush(HI);
    start_with_fd_limit(&t, 40);
    // Given a daemon whose every descriptor is taken by idle clients,
    let mut served = Vec::new();
    for _ in 0..60 {
        let (s, answer) = call_and_keep(&t.socket(), "daemon_status");
        if answer.is_some_and(|a| a["result"].is_object()) {
            served.push(s);
        } else {
            break;
        }
    }
    // when I run a task, the CLI shows the daemon's refusal at once,
    let out = t.run(&["hi"]);
    out.expect_code(1)
        .expect_stderr_starting("error: the daemon is out of file descriptors");
    assert!(
        out.elapsed < Duration::from_secs(4),
        "took {:?}",
        out.elapsed
    );
    drop(served);
    // and never took the refused connection for a dying daemon to replace.
    let log = std::fs::read_to_string(t.log()).unwrap();
    assert!(!log.contains("another daemon serves"), "{log}");
}

#[test]
fn a_content_length_client_over_the_connection_limit_gets_the_refusal_in_its_framing() {
    let t = Scenario::new()
        .rush(HI)
        .env("TASKRUSH_MAX_CONNECTIONS", "1");
    t.run(&["hi"]).success();
    let (_held, answer) = call_and_keep(&t.socket(), "daemon_status");
    assert!(answer.unwrap()["result"].is_object());
    // Given the daemon at its limit, when an editor's stock client
    // (Content-Length framing) connects and asks,
    let mut s = UnixStream::connect(t.socket()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let body = r#"{"jsonrpc":"2.0","id":3,"method":"daemon_status"}"#;
    write!(s, "Content-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    // it reads a Content-Length framed refusal.
    let mut reader = BufReader::new(&s);
    let mut header = String::new();
    reader.read_line(&mut header).unwrap();
    assert!(header.starts_with("Content-Length: "), "{header:?}");
    let len: usize = header["Content-Length: ".len()..].trim().parse().unwrap();
    let mut blank = String::new();
    reader.read_line(&mut blank).unwrap();
    assert_eq!(blank, "\r\n");
    let mut msg = vec![0; len];
    std::io::Read::read_exact(&mut reader, &mut msg).unwrap();
    let msg: serde_json::Value = serde_json::from_slice(&msg).unwrap();
    assert_eq!(msg["error"]["code"], -32007, "{msg}");
}

#[test]
fn a_log_whose_directory_forbids_renaming_stays_within_its_size_limit() {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    // Given a daemon of another user (uid 65534) whose socket directory
    // becomes read-only (r-x) once it runs, so its log cannot be renamed,
    let t = Scenario::new().rush(HI);
    std::fs::set_permissions(t.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = t.root().join("nobody");
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let socket = dir.join("d.sock");
    let mut daemon = t
        .daemon_command()
        .arg("--notify-ready")
        .env("TASKRUSH_SOCKET", &socket)
        .env("TASKRUSH_LOG_MAX_BYTES", "2000")
        .uid(65534)
        .gid(65534)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut ready = [0u8; 64];
    let n = daemon.stdout.take().unwrap().read(&mut ready).unwrap();
    assert!(ready[..n].starts_with(b"ready"), "{:?}", &ready[..n]);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o500)).unwrap();
    // when it logs far more than the limit (each of our connections, as
    // root, is refused with a log line),
    for _ in 0..200 {
        let mut s = UnixStream::connect(&socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = writeln!(s, r#"{{"jsonrpc":"2.0","id":1,"method":"daemon_status"}}"#);
        let _ = s.read_to_end(&mut Vec::new());
    }
    signal(daemon.id(), Signal::TERM);
    let _ = taskrush_tests::wait_timeout(&mut daemon, Duration::from_secs(10));
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    // the log stays within its limit and holds the latest lines.
    let log = std::fs::read_to_string(dir.join("taskrushd.log")).unwrap();
    assert!(log.len() < 2000 + 1024, "{} bytes", log.len());
    assert!(log.contains("stopping"), "{log}");
}

#[test]
fn an_invalid_log_size_limit_is_named_in_the_log_and_the_default_used() {
    for value in ["10MB", "0"] {
        let t = Scenario::new().rush(HI);
        t.start_daemon(&[("TASKRUSH_LOG_MAX_BYTES", value)]);
        t.run(&["hi"]).expect_stdout("hi\n").success();
        let log = std::fs::read_to_string(t.log()).unwrap();
        assert!(
            log.contains(&format!(
                "invalid `TASKRUSH_LOG_MAX_BYTES` value `{value}`: expected a number of bytes above 0; the log is rotated at 10 MiB"
            )),
            "{log}"
        );
    }
}

#[test]
fn a_hard_link_planted_at_the_lock_or_the_log_is_refused_and_its_target_untouched() {
    for planted in ["taskrushd.sock.lock", "taskrushd.log"] {
        // Given a hard link to one of my files planted in the socket
        // directory (kernels with fs.protected_hardlinks=0 let anyone
        // make one),
        let t = Scenario::new().rush(HI);
        let dir = t.socket().parent().unwrap().to_owned();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let victim = t.root().join("victim.txt");
        std::fs::write(&victim, "precious\n").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::hard_link(&victim, dir.join(planted)).unwrap();
        // when I run a task, it runs without the daemon, saying why,
        let out = t.run(&["hi"]);
        out.expect_stdout("hi\n").success();
        out.expect_stderr_containing("has other hard links");
        // and my file is untouched.
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    }
}

#[test]
fn a_daemon_at_its_connection_limit_can_still_be_restarted_as_its_refusal_says() {
    // Given a daemon at its connection limit (TASKRUSH_MAX_CONNECTIONS=2),
    let t = Scenario::new().rush(HI);
    t.start_daemon(&[("TASKRUSH_MAX_CONNECTIONS", "2")]);
    let held: Vec<_> = (0..2)
        .map(|_| call_and_keep(&t.socket(), "daemon_status").0)
        .collect();
    t.run(&["hi"])
        .expect_code(1)
        .expect_stderr_containing("`taskrush daemon restart`");
    // when I follow the hint and restart it, the connections still held,
    let out = t.run(&["daemon", "restart"]);
    // a new daemon answers, with the limit of the environment (the default).
    out.success();
    assert!(
        out.stdout()
            .contains("restarted by `taskrush daemon restart`"),
        "{}",
        out.stdout()
    );
    t.run(&["hi"]).expect_stdout("hi\n").success();
    drop(held);
    t.run(&["daemon", "stop"]).success();
    assert_eq!(t.run(&["daemon", "status"]).code(), 3);
}

#[test]
fn an_invalid_connection_limit_is_named_and_the_run_goes_without_the_daemon() {
    for value in ["abc", "0"] {
        let t = Scenario::new()
            .rush(HI)
            .env("TASKRUSH_MAX_CONNECTIONS", value);
        let out = t.run(&["hi"]);
        out.expect_stdout("hi\n").success();
        out.expect_stderr(&format!(
            "taskrush: warning: the daemon `taskrushd` did not start: invalid `TASKRUSH_MAX_CONNECTIONS` value `{value}`: expected a number of connections above 0; running without the daemon\n"
        ));
    }
}
