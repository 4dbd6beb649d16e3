//! The plugin sandbox (Linux): a real Python plugin (`fixtures/probe.py`)
//! tries, from its `before_task`, what its grants do not allow, and the
//! kernel refuses. Skipped, with the reason printed, where the daemon
//! reports that Landlock is not enforced.

use std::net::TcpListener;
use std::path::PathBuf;

use serde_json::Value;
use taskrush_tests::Scenario;

pub(super) fn probe_script() -> PathBuf {
    super::plugins::fixtures().join("probe.py")
}

/// A project with the probe plugin (required) trying `attempt` (a JSON
/// object) before task `t`, its manifest's `[permissions]` being `perms`.
pub(super) fn probe(attempt: &str, perms: &str) -> Scenario {
    Scenario::new()
        .grant("probe")
        .file(
            ".rush-plugins/probe/plugin.toml",
            &format!(
                "name = \"probe\"\nversion = \"1.0.0\"\n\
                 entry_point = [\"python3\", \"-I\", \"-u\", \"{}\"]\n\
                 taskrush_version = \">=0.3\"\n\n[permissions]\n{perms}",
                probe_script().display()
            ),
        )
        .rush(&format!(
            "plugins:\n  - name: probe\n    required: true\n    config: {{try: {attempt}}}\n\
             tasks:\n  t:\n    cmd: echo ran\n"
        ))
}

pub(super) fn info(s: &Scenario) -> Value {
    let out = s.run(&["plugin", "info", "probe", "--json"]);
    out.success();
    serde_json::from_str(&out.stdout()).expect("plugin info JSON")
}

/// Whether the kernel enforces Landlock here (else say why and skip; a
/// failure under `TASKRUSH_REQUIRE_SANDBOX=1`).
pub(super) fn landlock_here(s: &Scenario) -> bool {
    landlock_here_if(s, None)
}

/// [`landlock_here`], with the switch given (`None`: from the
/// environment).
fn landlock_here_if(s: &Scenario, required: Option<bool>) -> bool {
    let level = info(s)["enforcement"]["filesystem"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if level != "enforced" {
        let reason = format!("the daemon reports filesystem `{level}` on this kernel");
        match required {
            Some(r) => taskrush_tests::skip_unenforced_if(&reason, r),
            None => taskrush_tests::skip_unenforced(&reason),
        }
        return false;
    }
    true
}

fn expect_denied(s: &Scenario) {
    let out = s.run(&["t"]);
    assert_ne!(out.code(), 0, "the task ran: {}", out.stdout());
    let err = out.stderr();
    assert!(
        err.contains("plugin `probe`") && err.contains("denied: PermissionError"),
        "the error names the plugin and the refusal: {err}"
    );
    assert!(!out.stdout().contains("ran"), "{}", out.stdout());
}

#[test]
fn a_plugin_writing_outside_its_grant_gets_eacces_and_the_task_names_the_plugin() {
    let s0 = Scenario::new();
    let outside = s0.root().join("outside.txt");
    let s = probe(&format!("{{write: '{}'}}", outside.display()), "");
    if !landlock_here(&s) {
        return;
    }
    expect_denied(&s);
    assert!(!outside.exists(), "the file was written");
    let err = s.run(&["t"]).stderr();
    assert!(err.contains("Errno 13"), "EACCES: {err}");
}

#[test]
fn a_plugin_writes_where_its_manifest_grants_it() {
    // The plugin's working directory is its own: the path is absolute.
    let s = probe("{}", "filesystem = [\"out\"]\n");
    let target = s.project().join("out/granted.txt");
    s.write(
        ".rush",
        format!(
            "plugins:\n  - name: probe\n    required: true\n    config: {{try: {{write: '{}'}}}}\n\
             tasks:\n  t:\n    cmd: echo ran\n",
            target.display()
        ),
    );
    s.write("out/.keep", "");
    if !landlock_here(&s) {
        return;
    }
    s.run(&["t"]).success().expect_stdout("ran\n");
    assert_eq!(s.read("out/granted.txt"), "written by probe\n");
}

#[test]
fn a_plugin_cannot_write_into_the_project_it_only_reads() {
    let s = probe("{write: 'src.txt'}", "");
    s.write("src.txt", "mine\n");
    if !landlock_here(&s) {
        return;
    }
    expect_denied(&s);
    assert_eq!(s.read("src.txt"), "mine\n");
}

#[test]
fn a_plugin_cannot_read_ssh_keys_under_home() {
    let s0 = Scenario::new();
    let key = s0.root().join("home/.ssh/id_ed25519");
    std::fs::create_dir_all(key.parent().expect("dir")).expect("mkdir");
    std::fs::write(&key, "PRIVATE KEY").expect("key");
    let s = probe(&format!("{{read: '{}'}}", key.display()), "");
    if !landlock_here(&s) {
        return;
    }
    expect_denied(&s);
}

#[test]
fn a_plugin_without_a_network_grant_cannot_connect_to_a_local_listener() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = listener.local_addr().expect("port").port();
    let s = probe(&format!("{{connect: ['127.0.0.1', {port}]}}"), "");
    if !landlock_here(&s) {
        return;
    }
    expect_denied(&s);
    // With a host list, only through the proxy: see `proxy.rs`.
}

#[test]
fn a_plugin_cannot_run_a_program_it_was_not_granted() {
    let s = probe("{exec: ['/bin/sh', '-c', 'true']}", "");
    if !landlock_here(&s) {
        return;
    }
    expect_denied(&s);
    // Granted `sh`: it runs.
    let s = probe("{exec: ['sh', '-c', 'true']}", "process = [\"sh\"]\n");
    s.run(&["t"]).success().expect_stdout("ran\n");
}

#[test]
fn a_plugin_cannot_connect_to_the_daemons_socket() {
    // The socket's path is known before the scenario is built: every
    // scenario's socket is `ROOT/…`; write the config once the path is.
    let s = probe("{}", "");
    let sock = s.socket();
    s.write(
        ".rush",
        format!(
            "plugins:\n  - name: probe\n    required: true\n    config: {{try: {{unix: '{}'}}}}\n\
             tasks:\n  t:\n    cmd: echo ran\n",
            sock.display()
        ),
    );
    // The filter on `socket(AF_UNIX)` does not depend on Landlock.
    expect_denied(&s);
}

#[test]
fn plugin_info_and_list_show_the_enforcement_achieved_per_kind() {
    let s = probe("{}", "environment = [\"TOKEN\"]\n");
    let i = info(&s);
    let e = &i["enforcement"];
    for kind in [
        "filesystem",
        "process",
        "network",
        "environment",
        "daemon_socket",
    ] {
        assert!(e[kind].is_string(), "{kind} missing: {e}");
    }
    assert_eq!(e["network"], "enforced");
    assert_eq!(e["environment"], "enforced");
    let text = s.run(&["plugin", "info", "probe"]);
    text.success();
    assert!(
        text.stdout()
            .contains("permissions:\n  filesystem\n    declared   -\n")
            && text.stdout().contains("\n    enforced   "),
        "{}",
        text.stdout()
    );
    let list = s.run(&["plugin", "list"]);
    assert!(list.stdout().contains("SANDBOX"), "{}", list.stdout());
}

#[test]
fn enforcement_required_refuses_a_plugin_when_landlock_is_unavailable() {
    let s = probe("{}", "");
    s.write(
        ".rush-plugins/probe/plugin.toml",
        format!(
            "name = \"probe\"\nversion = \"1.0.0\"\n\
             entry_point = [\"python3\", \"-I\", \"-u\", \"{}\"]\n\
             taskrush_version = \">=0.3\"\nenforcement = \"required\"\n",
            probe_script().display()
        ),
    );
    s.start_daemon(&[("TASKRUSH_SANDBOX_NO_LANDLOCK", "1")]);
    let level = info(&s)["enforcement"]["filesystem"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        level.starts_with("not enforced: Landlock switched off"),
        "{level}"
    );
    let out = s.run(&["t"]);
    assert_ne!(out.code(), 0, "{}", out.stdout());
    assert!(
        out.stderr().contains("`enforcement = \"required\"`")
            && out.stderr().contains("filesystem: not enforced"),
        "{}",
        out.stderr()
    );
}

#[test]
fn the_slack_notify_example_posts_under_its_declared_permissions() {
    use std::io::{Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = listener.local_addr().expect("port").port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((mut conn, _)) = listener.accept() {
            let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(10)));
            let mut buf = vec![0u8; 65536];
            let mut got = Vec::new();
            while let Ok(n) = conn.read(&mut buf) {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
                if String::from_utf8_lossy(&got).contains("\"text\"") {
                    break;
                }
            }
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            let _ = tx.send(String::from_utf8_lossy(&got).into_owned());
        }
    });
    let dir = super::plugins::repo().join("plugins-external/examples/slack-notify");
    let s = Scenario::new()
        .env("SLACK_WEBHOOK", &format!("http://127.0.0.1:{port}/hook"))
        .rush(&format!(
            "plugins:\n  - name: slack-notify\n    path: {}\n    required: true\n\
             tasks:\n  build:\n    cmd: echo built\n",
            dir.display()
        ));
    super::plugins::grant_yes(&s, "slack-notify");
    s.run(&["build"]).success().expect_stdout("built\n");
    let request = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("the webhook was called");
    assert!(request.contains("build"), "{request}");
}

#[test]
fn with_plugins_read_project_off_in_the_user_config_a_plugin_cannot_read_the_projects_env_file() {
    let s = probe("{}", "");
    let dotenv = s.project().join(".env");
    s.write(".env", "SECRET=1\n");
    s.write(
        ".rush",
        format!(
            "plugins:\n  - name: probe\n    required: true\n    config: {{try: {{read: '{}'}}}}\n\
             tasks:\n  t:\n    cmd: echo ran\n",
            dotenv.display()
        ),
    );
    if !landlock_here(&s) {
        return;
    }
    // Reading the project root is in the safe set by default.
    s.run(&["t"]).success().expect_stdout("ran\n");
    // The switch applies from the plugin's next start.
    let s = s
        .user_config("plugins_read_project = false\n")
        .grant("probe");
    s.run(&["plugin", "restart", "probe"]).success();
    expect_denied(&s);
}

#[test]
fn a_denied_home_ssh_beats_a_grant_of_home_of_a_path_through_dotdot_and_of_its_absolute_path() {
    for grant in ["read:~", "read:~/x/../.ssh", "read:HOME/.ssh"] {
        let s = probe("{}", &format!("filesystem = [\"{grant}\"]\n"));
        let home = s.root().join("home");
        let grant = grant.replace("HOME", &home.display().to_string());
        let manifest = s.read(".rush-plugins/probe/plugin.toml");
        s.write(
            ".rush-plugins/probe/plugin.toml",
            manifest.replace("read:HOME", &format!("read:{}", home.display())),
        );
        let key = home.join(".ssh/id_ed25519");
        std::fs::create_dir_all(key.parent().expect("dir")).expect("mkdir");
        std::fs::write(&key, "PRIVATE KEY").expect("key");
        s.write(
            ".rush",
            format!(
                "plugins:\n  - name: probe\n    required: true\n    config: {{try: {{read: '{}'}}}}\n\
                 tasks:\n  t:\n    cmd: echo ran\n",
                key.display()
            ),
        );
        let config = s.user_config_path();
        let mut text = std::fs::read_to_string(&config).expect("config");
        text.push_str("\n[deny]\nfilesystem = [\"~/.ssh\"]\n");
        std::fs::write(&config, text).expect("config");
        let i = info(&s);
        let denied = i["denied"]["filesystem"][0].as_str().unwrap_or_default();
        assert!(denied.starts_with(&grant), "`{grant}` is denied: {i}");
        assert_eq!(i["effective"]["filesystem"], serde_json::json!([]), "{i}");
        if grant == "read:~" {
            assert!(denied.contains("contains the denied `~/.ssh`"), "{denied}");
        }
        if !landlock_here(&s) {
            return;
        }
        expect_denied(&s);
    }
}

#[test]
fn a_denied_host_refuses_a_wildcard_grant_over_it() {
    let s = probe("{}", "network = [\"*.example.com\", \"ok.test\"]\n");
    let config = s.user_config_path();
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str("\n[deny]\nnetwork = [\"evil.example.com\"]\n");
    std::fs::write(&config, text).expect("config");
    let i = info(&s);
    assert_eq!(
        i["denied"]["network"],
        serde_json::json!(["*.example.com (contains the denied `evil.example.com`)"]),
        "{i}"
    );
    assert_eq!(
        i["effective"]["network"],
        serde_json::json!(["ok.test"]),
        "{i}"
    );
}

#[test]
fn with_require_sandbox_a_skip_for_want_of_landlock_fails_instead() {
    let s = probe("{}", "");
    s.start_daemon(&[("TASKRUSH_SANDBOX_NO_LANDLOCK", "1")]);
    // As without the switch: a printed skip.
    assert!(!landlock_here_if(&s, Some(false)));
    let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        landlock_here_if(&s, Some(true))
    }));
    let why = failed.expect_err("the skip did not fail");
    let text = why.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(text.contains("TASKRUSH_REQUIRE_SANDBOX=1"), "{text}");
}
