//! Attempted escapes from the plugin sandbox (Linux), one per row of the
//! table in `docs/reliability.md`: the probe plugin
//! (`fixtures/probe.py`, required) tries each from its `before_task`,
//! and the task fails naming the plugin and the refusal. Attempts stopped
//! by Landlock are skipped, with the reason printed, where the daemon
//! reports Landlock not enforced; those stopped by the seccomp filter are
//! not (it does not depend on Landlock).

use taskrush_tests::Scenario;

use super::sandbox::{info, landlock_here, probe};

/// The project of [`probe`] with its `.rush` entry rewritten: `attempt`
/// (a YAML flow mapping) and extra entry lines `more`.
fn retry(s: &Scenario, attempt: &str, more: &str) {
    s.write(
        ".rush",
        format!(
            "plugins:\n  - name: probe\n    required: true\n    config: {{try: {attempt}}}\n{more}\
             tasks:\n  t:\n    cmd: echo ran\n"
        ),
    );
}

/// Task `t` fails, naming the probe and `refusal` (e.g. `Errno 13`).
fn refused(s: &Scenario, refusal: &str) {
    let out = s.run(&["t"]);
    assert_ne!(out.code(), 0, "the task ran: {}", out.stdout());
    let err = out.stderr();
    assert!(
        err.contains("plugin `probe`") && err.contains("denied: ") && err.contains(refusal),
        "the error names the plugin and `{refusal}`: {err}"
    );
    assert!(!out.stdout().contains("ran"), "{}", out.stdout());
}

#[test]
fn a_plugin_cannot_send_udp_or_use_mptcp_even_with_a_network_grant() {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    let uport = udp.local_addr().expect("port").port();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("tcp");
    let tport = tcp.local_addr().expect("port").port();
    for perms in ["", "network = [\"127.0.0.1\"]\n"] {
        let s = probe(&format!("{{udp: ['127.0.0.1', {uport}]}}"), perms);
        refused(&s, "Errno 13");
        retry(&s, &format!("{{mptcp: ['127.0.0.1', {tport}]}}"), "");
        refused(&s, "Errno 13");
    }
    udp.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 16];
    assert!(udp.recv(&mut buf).is_err(), "a datagram arrived");
}

#[test]
fn a_plugin_cannot_open_raw_or_packet_sockets() {
    for perms in ["", "network = [\"127.0.0.1\"]\n"] {
        let s = probe("{raw: inet}", perms);
        refused(&s, "Errno 13");
        retry(&s, "{raw: packet}", "");
        refused(&s, "Errno 13");
    }
}

#[test]
fn a_plugin_cannot_reach_an_abstract_unix_socket() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("taskrush-escape-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("addr");
    let listener = std::os::unix::net::UnixListener::bind_addr(&addr).expect("abstract listener");
    listener.set_nonblocking(true).expect("nonblocking");
    let s = probe(&format!("{{abstract: '{name}'}}"), "");
    refused(&s, "Errno 13");
    assert!(listener.accept().is_err(), "the plugin connected");
}

#[test]
fn io_uring_and_x32_system_calls_are_refused() {
    // io_uring_setup(1, NULL): EFAULT if it were allowed.
    let s = probe("{syscall: [425, 1, 0]}", "");
    refused(&s, "Errno 13");
    if !cfg!(target_arch = "x86_64") {
        eprintln!("SKIPPED: x32 system calls exist on x86_64 only");
        return;
    }
    // x32 `socket(AF_INET, SOCK_STREAM, 0)`: ENOSYS without x32 support.
    retry(&s, "{syscall: [1073741865, 2, 1, 0]}", "");
    refused(&s, "Errno 13");
}

#[test]
fn a_plugin_cannot_signal_or_look_into_the_daemon() {
    let s = probe("{}", "");
    s.start_daemon(&[]);
    let daemon = s.daemon_pid().expect("the daemon's pid");
    if !landlock_here(&s) {
        return;
    }
    retry(&s, &format!("{{kill: {daemon}}}"), "");
    refused(&s, "Errno 1");
    if cfg!(target_arch = "x86_64") {
        // ptrace(PTRACE_SEIZE, daemon): does not stop the daemon even if
        // it were allowed.
        retry(
            &s,
            &format!("{{syscall: [101, 16902, {daemon}, 0, 0]}}"),
            "",
        );
        refused(&s, "Errno 1");
    } else {
        eprintln!("(ptrace attempt skipped: its syscall number is x86_64's)");
    }
    for file in ["environ", "root/etc/hostname"] {
        retry(&s, &format!("{{read: '/proc/{daemon}/{file}'}}"), "");
        refused(&s, "Errno 13");
    }
}

#[test]
fn a_plugin_holds_no_capabilities_even_when_the_daemon_is_root() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("(not root: a plugin has no capabilities to begin with)");
    }
    let s = probe("{caps: true}", "");
    s.run(&["t"]).success().expect_stdout("ran\n");
}

#[test]
fn the_daemon_socket_variable_and_ungranted_variables_are_absent() {
    let s = probe("{env: TASKRUSH_SOCKET}", "environment = [\"GRANTED_X\"]\n")
        .env("GRANTED_X", "yes")
        .env("OTHER_X", "no");
    refused(&s, "TASKRUSH_SOCKET is not set");
    retry(&s, "{env: OTHER_X}", "");
    refused(&s, "OTHER_X is not set");
    retry(&s, "{env: GRANTED_X}", "");
    s.run(&["t"]).success().expect_stdout("ran\n");
}

#[test]
fn a_plugin_cannot_run_git_it_was_not_granted() {
    let s = probe("{exec: ['git', '--version']}", "");
    if !landlock_here(&s) {
        return;
    }
    refused(&s, "Errno 13");
    let s = probe("{exec: ['git', '--version']}", "process = [\"git\"]\n");
    s.run(&["t"]).success().expect_stdout("ran\n");
    assert_eq!(info(&s)["enforcement"]["process"], "enforced");
}

#[test]
fn a_plugin_shipping_its_own_python3_runs_it_only_in_the_sandbox() {
    use std::os::unix::fs::PermissionsExt;
    // The plugin's `./python3` tries to write outside and to steal a key
    // under the fake HOME, however it is run (the daemon once ran it
    // unsandboxed to find "the real interpreter").
    let s = Scenario::new().grant("probe");
    let home = s.root().join("home");
    std::fs::create_dir_all(home.join(".ssh")).expect("mkdir");
    std::fs::write(home.join(".ssh/id_ed25519"), "PRIVATE KEY").expect("key");
    let (escaped, stolen) = (s.root().join("escaped.txt"), s.root().join("stolen.txt"));
    s.write(
        ".rush-plugins/probe/plugin.toml",
        "name = \"probe\"\nversion = \"1.0.0\"\nentry_point = [\"./python3\", \"x.py\"]\n\
         taskrush_version = \">=0.3\"\n",
    );
    s.write(".rush-plugins/probe/x.py", "print('hi')\n");
    let shim = s.project().join(".rush-plugins/probe/python3");
    std::fs::write(
        &shim,
        format!(
            "#!/bin/sh\necho escaped > '{}'\ncat \"$HOME/.ssh/id_ed25519\" > '{}'\nexit 1\n",
            escaped.display(),
            stolen.display()
        ),
    )
    .expect("shim");
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    s.write(
        ".rush",
        "plugins:\n  - name: probe\ntasks:\n  t:\n    cmd: echo ran\n",
    );
    if !landlock_here(&s) {
        return;
    }
    let out = s.run(&["t"]);
    assert!(out.stdout().contains("ran"), "{}", out.stderr());
    assert!(!escaped.exists(), "the plugin's python3 wrote outside");
    assert!(
        std::fs::read_to_string(&stolen)
            .unwrap_or_default()
            .is_empty(),
        "the plugin's python3 read the key"
    );
    assert!(!stolen.exists(), "the plugin's python3 wrote outside");
}
