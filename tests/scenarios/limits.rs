//! Resource limits of a plugin (`limits:` in its `.rush` entry): the
//! open-file limit set by the sandbox helper, cgroup v2 `memory.max` and
//! `pids.max` where the host allows them, and each limit's level in
//! `plugin info`, `plugin list` and `daemon status`.

use serde_json::Value;
use taskrush_tests::Scenario;

use super::sandbox::{info, landlock_here, probe, probe_script};

/// The probe (required) trying `attempt` before task `t`, with `limits`.
fn limited(attempt: &str, limits: &str) -> Scenario {
    let s = probe(attempt, "");
    s.write(
        ".rush",
        format!(
            "plugins:\n  - name: probe\n    required: true\n    config: {{try: {attempt}}}\n\
             \x20   limits: {limits}\ntasks:\n  t:\n    cmd: echo ran\n"
        ),
    );
    s
}

fn level(v: &Value) -> String {
    v["level"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn plugin_info_list_and_daemon_status_show_each_limit_and_its_level() {
    let s = limited("{}", "{memory: 256M, open_files: 512}");
    let i = info(&s);
    let limits = &i["limits"];
    assert_eq!(limits["memory"]["value"], 256 << 20);
    assert_eq!(limits["processes"]["value"], 256, "the default");
    assert_eq!(limits["open_files"]["value"], 512);
    assert_eq!(level(&limits["open_files"]), "enforced");
    for kind in ["memory", "processes"] {
        let l = level(&limits[kind]);
        assert!(
            l == "enforced" || l.starts_with("not enforced: "),
            "{kind}: {l}"
        );
        if l != "enforced" {
            eprintln!("{kind} on this host: {l}");
        }
    }
    let text = s.run(&["plugin", "info", "probe"]);
    text.success();
    assert!(
        text.stdout().contains("limit open_files 512: enforced")
            && text.stdout().contains("limit memory 256 MiB: "),
        "{}",
        text.stdout()
    );
    let list = s.run(&["plugin", "list"]);
    assert!(list.stdout().contains("LIMITS"), "{}", list.stdout());

    // Live: `daemon status` says what its sandbox and limits achieved.
    s.run(&["t"]).success().expect_stdout("ran\n");
    let status = s.daemon_status().expect("daemon status");
    let live = status["plugins"].as_array().expect("plugins").clone();
    assert_eq!(live.len(), 1, "{status}");
    assert_eq!(live[0]["name"], "probe");
    assert!(live[0]["pid"].as_u64().is_some());
    assert!(live[0]["enforcement"]["filesystem"].is_string(), "{status}");
    assert_eq!(live[0]["limits"]["open_files"]["level"], "enforced");
    let text = s.run(&["daemon", "status"]);
    assert!(
        text.stdout().contains("plugins:  1 running;"),
        "{}",
        text.stdout()
    );
}

#[test]
fn a_plugin_cannot_hold_more_open_files_than_its_limit() {
    let s = limited("{fds: 100}", "{open_files: 64}");
    let out = s.run(&["t"]);
    assert_ne!(out.code(), 0, "{}", out.stdout());
    assert!(
        out.stderr().contains("plugin `probe`") && out.stderr().contains("Errno 24"),
        "EMFILE: {}",
        out.stderr()
    );
    // Under the limit it runs.
    let s = limited("{fds: 30}", "{open_files: 64}");
    s.run(&["t"]).success().expect_stdout("ran\n");
}

#[test]
fn a_fork_bomb_is_stopped_by_the_processes_limit_where_cgroup_v2_allows() {
    let s = limited("{fork: 40}", "{processes: 16}");
    let l = level(&info(&s)["limits"]["processes"]);
    if l != "enforced" {
        eprintln!("SKIPPED: `processes` is {l}");
        return;
    }
    let out = s.run(&["t"]);
    assert_ne!(out.code(), 0, "{}", out.stdout());
    assert!(
        out.stderr().contains("Errno 11"),
        "EAGAIN: {}",
        out.stderr()
    );
}

#[test]
fn enforcement_required_does_not_count_resource_limits() {
    // `unlimited` reports both cgroup limits `not enforced` on any host.
    let s = limited("{}", "{memory: unlimited, processes: unlimited}");
    s.write(
        ".rush-plugins/probe/plugin.toml",
        format!(
            "name = \"probe\"\nversion = \"1.0.0\"\n\
             entry_point = [\"python3\", \"-I\", \"-u\", \"{}\"]\n\
             taskrush_version = \">=0.3\"\nenforcement = \"required\"\n",
            probe_script().display()
        ),
    );
    if !landlock_here(&s) {
        return;
    }
    let i = info(&s);
    assert!(
        level(&i["limits"]["memory"]).starts_with("not enforced: `memory: unlimited`"),
        "{i}"
    );
    s.run(&["t"]).success().expect_stdout("ran\n");
}

#[test]
fn a_wrong_limit_is_named_with_its_entry() {
    let s = limited("{}", "{memory: lots}");
    s.run(&["t"])
        .expect_code(1)
        .expect_stderr_containing(
            "`limits.memory` of plugin `probe` must be a size of at least 1M, found `lots`",
        )
        .expect_stderr_containing(".rush:2:5")
        .expect_stderr_containing("hint: write it like `512M`");
}

#[test]
fn the_benchmark_switch_turns_the_sandbox_off_and_says_so() {
    let s = limited("{exec: ['/bin/sh', '-c', 'true']}", "{open_files: 64}");
    s.start_daemon(&[("TASKRUSH_SANDBOX_OFF", "1")]);
    // Unsandboxed, the probe runs the shell it was not granted.
    s.run(&["t"]).success().expect_stdout("ran\n");
    let i = info(&s);
    for kind in ["filesystem", "process", "network", "daemon_socket"] {
        assert_eq!(
            i["enforcement"][kind],
            "not enforced: sandbox switched off (`TASKRUSH_SANDBOX_OFF=1`)"
        );
    }
    assert_eq!(i["enforcement"]["environment"], "enforced");
    assert!(level(&i["limits"]["open_files"]).contains("sandbox switched off"));
}
