//! Plugins: real plugin processes (the Python fixture in
//! `plugins-external/fixtures/`, the Node and Go examples) driven by a real
//! daemon. The fixture misbehaves on purpose in every way a plugin can.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use taskrush_tests::{Scenario, signal, wait_until};

/// The workspace.
pub(super) fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

/// `plugins-external/fixtures/`.
pub(super) fn fixtures() -> PathBuf {
    repo().join("plugins-external").join("fixtures")
}

/// Install the fixture in `mode` as `.rush-plugins/NAME/`, granted `TOKEN`
/// and writing into the project (where it records what it was given).
pub(super) fn plugin(s: &Scenario, name: &str, mode: &str) {
    let script = fixtures().join("fixture.py");
    s.write(
        &format!(".rush-plugins/{name}/plugin.toml"),
        format!(
            "name = \"{name}\"\nversion = \"1.0.0\"\n\
             entry_point = [\"python3\", \"-I\", \"-u\", \"{}\", \"{mode}\"]\n\
             taskrush_version = \">=0.3\"\n\n[permissions]\nfilesystem = [\".\"]\nenvironment = [\"TOKEN\"]\n",
            script.display()
        ),
    );
    s.grant_in_config(name);
}

/// The records the fixture appended to `rec.jsonl`.
fn records(s: &Scenario) -> Vec<Value> {
    s.read("rec.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON record"))
        .collect()
}

/// `REC` names the record file, for `config: {record: '${REC}'}`.
fn recording(s: Scenario) -> Scenario {
    let path = record_path(&s);
    s.env("REC", &path)
}

fn record_path(s: &Scenario) -> String {
    s.project().join("rec.jsonl").display().to_string()
}

/// `plugin list --json`, by name.
fn state_of(s: &Scenario, name: &str) -> Value {
    let out = s.run(&["plugin", "list", "--json"]);
    out.success();
    let list: Vec<Value> = serde_json::from_str(&out.stdout()).expect("plugin list JSON");
    list.into_iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no plugin `{name}` in the list"))
}

fn alive(pid: u64) -> bool {
    // A zombie is as good as gone: it runs nothing.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|st| !st.contains(") Z "))
        .unwrap_or(false)
}

fn pids_of(s: &Scenario, plugin: &str) -> Vec<u64> {
    let mut pids: Vec<u64> = records(s)
        .iter()
        .filter(|r| r["plugin"] == plugin)
        .filter_map(|r| r["pid"].as_u64())
        .collect();
    pids.dedup();
    pids
}

#[test]
fn hooks_run_in_declared_order_and_after_task_in_reverse() {
    let s = Scenario::new();
    plugin(&s, "first", "good");
    plugin(&s, "second", "good");
    let s = recording(s).rush(
        "
plugins:
  - name: first
    config: {record: '${REC}'}
  - name: second
    config: {record: '${REC}'}
tasks:
  build:
    cmd: echo built
",
    );
    s.run(&["build"]).expect_stdout("built\n").success();
    let order: Vec<String> = records(&s)
        .iter()
        .filter(|r| r["hook"] != "initialize")
        .map(|r| {
            format!(
                "{}:{}",
                r["plugin"].as_str().unwrap(),
                r["hook"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        order,
        [
            "first:before_task",
            "second:before_task",
            "second:after_task",
            "first:after_task"
        ]
    );
    // Kept warm: a second run reuses the same processes.
    let before = pids_of(&s, "first");
    s.run(&["build"]).success();
    assert_eq!(pids_of(&s, "first"), before);
    let after: Vec<Value> = records(&s)
        .iter()
        .filter(|r| r["hook"] == "after_task")
        .map(|r| r["result"]["status"].clone())
        .collect();
    assert!(after.iter().all(|s| *s == "success"), "{after:?}");
}

#[test]
fn task_config_is_merged_over_the_global_config_and_expanded_from_the_client() {
    let s = Scenario::new();
    plugin(&s, "rec", "good");
    let s = recording(s).env("WHO", "client").rush(
        "
plugins:
  - name: rec
    config: {record: '${REC}', who: global, keep: {a: 1}}
tasks:
  mine:
    cmd: 'true'
    plugins:
      rec: {who: '${WHO}', keep: {b: 2}}
  plain:
    cmd: 'true'
",
    );
    s.run(&["mine", "plain"]).success();
    let config_of = |task: &str| {
        records(&s)
            .into_iter()
            .find(|r| r["hook"] == "before_task" && r["task"] == task)
            .map(|r| r["config"].clone())
            .unwrap()
    };
    let rec = record_path(&s);
    assert_eq!(
        config_of("mine"),
        serde_json::json!({"record": rec, "who": "client", "keep": {"b": 2}})
    );
    assert_eq!(
        config_of("plain"),
        serde_json::json!({"record": rec, "who": "global", "keep": {"a": 1}})
    );
}

#[test]
fn a_plugin_sees_only_the_variables_it_was_granted() {
    let s = Scenario::new();
    plugin(&s, "rec", "good");
    let s = recording(s)
        .env("TOKEN", "granted")
        .env("SECRET", "not for plugins")
        .rush(
            "
plugins:
  - {name: rec, config: {record: '${REC}'}}
tasks:
  t:
    cmd: 'true'
    env: {TASK_ONLY: x}
",
        );
    s.run(&["t"]).success();
    let recs = records(&s);
    let before = recs.iter().find(|r| r["hook"] == "before_task").unwrap();
    let env: Vec<&str> = before["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(env.contains(&"TOKEN"), "{env:?}");
    assert!(env.contains(&"PATH"), "{env:?}");
    assert!(!env.contains(&"SECRET"), "{env:?}");
    assert!(!env.contains(&"REC"), "{env:?}");
    assert_eq!(before["env_vars"], serde_json::json!({"TOKEN": "granted"}));
}

#[test]
fn a_before_task_veto_fails_the_task_with_the_plugins_message() {
    let vetoer = fixtures().join("vetoer");
    let s = Scenario::new().rush(&format!(
        "
plugins:
  - name: vetoer
    path: {}
    config: {{veto: [deploy]}}
tasks:
  deploy:
    cmd: echo deployed
  test:
    cmd: echo tested
",
        vetoer.display()
    ));
    let out = s.run(&["deploy"]);
    out.expect_stdout("").expect_code(1);
    assert_eq!(
        out.stderr(),
        "error: task `deploy` failed: vetoed by plugin `vetoer`: task `deploy` is not allowed today\n"
    );
    s.run(&["test"]).expect_stdout("tested\n").success();
}

#[test]
fn a_plugin_that_exits_before_the_handshake_is_skipped_unless_required() {
    let s = Scenario::new();
    plugin(&s, "early", "exit-early");
    let s = s.rush("plugins:\n  - name: early\ntasks:\n  t:\n    cmd: echo ran\n");
    let out = s.run(&["t"]);
    out.expect_stdout("ran\n").success();
    out.expect_stderr_starting("plugin `early`: failed in `handshake`: it exited before the handshake (exit code 3); it will be restarted on next use; the task goes on without it (the plugin is not required); its last stderr lines:\n  | fixture: giving up before the handshake\n");

    s.write(
        ".rush",
        "plugins:\n  - name: early\n    required: true\ntasks:\n  t:\n    cmd: echo ran\n",
    );
    let out = s.run(&["t"]);
    out.expect_stdout("").expect_code(1);
    out.expect_stderr_starting("error: task `t` failed: plugin `early` failed in `handshake`: it exited before the handshake (exit code 3)");
}

#[test]
fn a_plugin_speaking_another_protocol_major_is_marked_failed_at_once() {
    let s = Scenario::new();
    plugin(&s, "future", "wrong-protocol");
    let s = s.rush("plugins:\n  - name: future\ntasks:\n  t:\n    cmd: echo ran\n");
    let out = s.run(&["t"]);
    out.expect_stdout("ran\n").success();
    out.expect_stderr_containing(
        "plugin `future`: failed in `handshake`: it speaks plugin protocol 99, this host speaks 1",
    );
    let st = state_of(&s, "future");
    assert_eq!(st["state"], "failed", "{st}");
    // Not restarted: the next run says it is failed, without a new process.
    let out = s.run(&["t"]);
    out.success();
    out.expect_stderr_containing("it is marked failed");
    let table = s.run(&["plugin", "list"]);
    assert!(
        table.stdout().contains("future  1.0.0    failed"),
        "{}",
        table.stdout()
    );
}

#[test]
fn junk_on_stdout_fails_the_plugin_not_the_daemon_or_the_task() {
    let s = Scenario::new();
    plugin(&s, "noisy", "junk");
    plugin(&s, "fine", "good");
    let s = s.rush("plugins:\n  - name: noisy\n  - name: fine\ntasks:\n  t:\n    cmd: echo ran\n");
    let out = s.run(&["t"]);
    out.expect_stdout("ran\n").success();
    out.expect_stderr_containing("plugin `noisy`: failed in `handshake`: it wrote 3 lines to stdout that are not JSON-RPC messages");
    assert_eq!(state_of(&s, "noisy")["state"], "failed");
    assert_eq!(state_of(&s, "fine")["state"], "idle");
}

/// CPU time (user + system) of `pid` so far, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the daemon's stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat(5), counted from `state` (field 3).
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn a_plugin_flooding_stderr_grows_the_log_by_a_bounded_amount_and_blocks_instead() {
    let s = Scenario::new();
    plugin(&s, "flood", "flood");
    let s = s.rush("plugins:\n  - name: flood\ntasks:\n  t:\n    cmd: echo ran\n");
    let t0 = std::time::Instant::now();
    s.run(&["t"])
        .expect_stdout("ran\n")
        .expect_stderr("")
        .success();
    let daemon = s.daemon_pid().expect("a daemon");
    let cpu0 = cpu_ticks(daemon);
    let w0 = std::time::Instant::now();
    // A window of flooding: the plugin writes 4 KiB lines without end.
    std::thread::sleep(Duration::from_secs(3));
    let cpu = cpu_ticks(daemon) - cpu0;
    let window = w0.elapsed();
    let log = std::fs::read_to_string(s.log()).unwrap();
    // 64 KiB of burst, then 8 KiB/s, plus the log's own words.
    let bound = 64.0 * 1024.0 + 8.0 * 1024.0 * t0.elapsed().as_secs_f64() * 1.1 + 16.0 * 1024.0;
    assert!(
        (log.len() as f64) < bound,
        "the log took the flood: {} bytes after {:?} (bound {bound:.0})",
        log.len(),
        t0.elapsed()
    );
    assert_eq!(
        log.matches("stderr over 8 KiB/s (bursts of 64 KiB): stopped reading it")
            .count(),
        1,
        "one counter line per minute"
    );
    // The idle daemon does not burn CPU on it (100 ticks a second).
    assert!(
        (cpu as f64) < window.as_secs_f64() * 100.0 * 0.3,
        "the daemon used {cpu} ticks of CPU in {window:?}"
    );
    // The plugin, blocked on its stderr, still answers its hooks.
    s.run(&["t"])
        .expect_stdout("ran\n")
        .expect_stderr("")
        .success();
    let info = s.run(&["plugin", "info", "flood", "--json"]);
    let info: Value = serde_json::from_str(&info.stdout()).unwrap();
    let lines = info["stderr"].as_array().unwrap();
    assert!(
        lines
            .last()
            .and_then(|l| l.as_str())
            .is_some_and(|l| l.starts_with("flood line ")),
        "{lines:?}"
    );
}

#[test]
fn before_task_timeout_does_not_fail_an_optional_plugin_and_kills_it() {
    let s = Scenario::new();
    plugin(&s, "slow", "hang");
    let s = recording(s).rush(
        "plugins:\n  - {name: slow, timeout: 500ms, config: {record: '${REC}'}}\ntasks:\n  t:\n    cmd: echo ran\n",
    );
    let out = s.run(&["t"]);
    out.expect_stdout("ran\n").success();
    out.expect_stderr_starting("plugin `slow`: failed in `before_task`: no answer within 500ms (the plugin was killed); it will be restarted on next use; the task goes on without it (the plugin is not required); its last stderr lines:\n");
    out.expect_stderr_containing("  | fixture: hanging in before_task\n");
    assert!(
        out.elapsed >= Duration::from_millis(500),
        "{:?}",
        out.elapsed
    );
    assert!(out.elapsed < Duration::from_secs(5), "{:?}", out.elapsed);
    let pid = pids_of(&s, "slow")[0];
    assert!(
        wait_until(Duration::from_secs(5), || !alive(pid)),
        "the hung plugin {pid} is still running"
    );
}

#[test]
fn before_task_timeout_fails_a_task_that_requires_the_plugin() {
    let s = Scenario::new();
    plugin(&s, "slow", "hang");
    let s = s.rush(
        "plugins:\n  - {name: slow, timeout: 300ms, required: true}\ntasks:\n  t:\n    cmd: echo ran\n",
    );
    let out = s.run(&["t"]);
    out.expect_stdout("").expect_code(1);
    out.expect_stderr_starting("error: task `t` failed: plugin `slow` failed in `before_task`: no answer within 300ms (the plugin was killed)");
}

#[test]
fn a_plugin_crashing_three_times_is_failed_until_restarted() {
    let s = Scenario::new();
    plugin(&s, "crashy", "crash");
    let s = s.rush("plugins:\n  - name: crashy\ntasks:\n  t:\n    cmd: echo ran\n");
    for i in 1..=3 {
        let out = s.run(&["t"]);
        out.expect_stdout("ran\n").success();
        assert!(
            out.stderr()
                .contains("plugin `crashy`: failed in `before_task`: it exited (exit code 1)"),
            "run {i}: {}",
            out.stderr()
        );
    }
    let st = state_of(&s, "crashy");
    assert_eq!(st["state"], "failed", "{st}");
    assert_eq!(st["restarts"], 2, "{st}");
    assert!(
        st["error"]
            .as_str()
            .unwrap()
            .contains("it failed 3 times within 5 minutes"),
        "{st}"
    );
    let out = s.run(&["t"]);
    out.success();
    out.expect_stderr_containing("it is marked failed");
    assert!(
        out.stderr().contains("`taskrush plugin restart crashy`")
            || state_of(&s, "crashy")["restarts"] == 2
    );

    let out = s.run(&["plugin", "restart", "crashy"]);
    out.success();
    assert!(
        out.stdout().starts_with("restarted `crashy`: idle (pid "),
        "{}",
        out.stdout()
    );
    assert_eq!(state_of(&s, "crashy")["state"], "idle");
}

#[test]
fn a_plugin_that_ignores_sigterm_does_not_hold_up_daemon_stop_or_outlive_it() {
    let s = Scenario::new();
    plugin(&s, "stubborn", "ignore-term");
    let s = recording(s)
        .rush("plugins:\n  - {name: stubborn, config: {record: '${REC}'}}\ntasks:\n  t:\n    cmd: 'true'\n");
    s.run(&["t"]).success();
    let pid = pids_of(&s, "stubborn")[0];
    assert!(alive(pid));
    let out = s.run(&["daemon", "stop"]);
    out.success();
    assert!(
        wait_until(Duration::from_secs(8), || !alive(pid)),
        "plugin {pid} outlived the daemon"
    );
    assert!(
        records(&s).iter().any(|r| r["hook"] == "shutdown"),
        "no `shutdown` was sent"
    );
}

#[test]
fn plugins_die_with_a_daemon_killed_by_sigkill() {
    let s = Scenario::new();
    plugin(&s, "orphan", "good");
    let s = recording(s).rush(
        "plugins:\n  - {name: orphan, config: {record: '${REC}'}}\ntasks:\n  t:\n    cmd: 'true'\n",
    );
    s.run(&["t"]).success();
    let pid = pids_of(&s, "orphan")[0];
    let daemon = s.daemon_pid().expect("a daemon");
    signal(daemon, rustix::process::Signal::KILL);
    assert!(
        wait_until(Duration::from_secs(5), || !alive(pid)),
        "plugin {pid} outlived its daemon"
    );
}

#[test]
fn a_missing_plugin_names_every_place_it_looked() {
    let s = Scenario::new().rush(
        "plugins:\n  - name: ghost\n  - {name: shade, path: nowhere}\ntasks:\n  t:\n    cmd: echo ran\n",
    );
    let out = s.run(&["t"]);
    out.expect_stdout("ran\n").success();
    let err = out.stderr();
    assert!(
        err.contains(
            "plugin `ghost`: failed in `load`: plugin `ghost` not found: looked for `[TMP]/project/.rush-plugins/ghost/plugin.toml`, `[TMP]/home/"
        ),
        "{err}"
    );
    assert!(
        err.contains("/taskrush/plugins/ghost/plugin.toml`"),
        "{err}"
    );
    assert!(
        err.contains("plugin `shade`: failed in `load`: plugin `shade` not found: looked for `[TMP]/project/nowhere/plugin.toml`"),
        "{err}"
    );
    assert_eq!(state_of(&s, "ghost")["state"], "failed");
}

#[test]
fn an_invalid_manifest_is_an_error_naming_the_file_and_field() {
    let s = Scenario::new()
        .file(
            ".rush-plugins/bad/plugin.toml",
            "name = \"other\"\nversion = \"1.0.0\"\nentry_point = [\"x\"]\ntaskrush_version = \">=0.3\"\n",
        )
        .rush("plugins:\n  - {name: bad, required: true}\ntasks:\n  t:\n    cmd: echo ran\n");
    let out = s.run(&["t"]);
    out.expect_code(1);
    out.expect_stderr_containing("invalid plugin manifest `[TMP]/project/.rush-plugins/bad/plugin.toml`: `name` is `other`, but the `.rush` file calls the plugin `bad`");
}

#[test]
fn plugin_commands_run_as_taskrush_subcommands_and_show_in_help() {
    let s = Scenario::new();
    plugin(&s, "hello", "good");
    let s = s.rush(
        "plugins:\n  - {name: hello, config: {commands: [greet]}}\ntasks:\n  t:\n    cmd: 'true'\n",
    );
    s.run(&["greet", "a", "b"])
        .expect_stdout("hello from greet: a b\n")
        .expect_stderr("command ran\n")
        .success();
    // Options that `run` does not know are the command's own.
    s.run(&["greet", "--loud", "--fail"])
        .expect_stdout("hello from greet: --loud --fail\n")
        .expect_code(4);
    let help = s.run(&["--help"]);
    help.success();
    assert!(
        help.stdout()
            .contains("Plugin commands (this project):\n  greet  says hello (plugin `hello`)"),
        "{}",
        help.stdout()
    );
    let list = s.run(&["plugin", "list", "--json"]);
    assert!(list.stdout().contains("\"greet\""), "{}", list.stdout());
}

#[test]
fn a_plugin_command_named_like_a_task_or_builtin_fails_the_plugin() {
    let s = Scenario::new();
    plugin(&s, "greedy", "good");
    let s = s.rush(
        "plugins:\n  - {name: greedy, config: {commands: [t]}}\ntasks:\n  t:\n    cmd: echo task\n",
    );
    let out = s.run(&["t"]);
    out.expect_stdout("task\n").success();
    out.expect_stderr_containing("its command `t` has the name of a task of");
    assert_eq!(state_of(&s, "greedy")["state"], "failed");
    s.write(
        ".rush",
        "plugins:\n  - {name: greedy, config: {commands: [daemon]}}\ntasks:\n  t:\n    cmd: echo task\n",
    );
    let out = s.run(&["t"]);
    out.expect_stderr_containing(
        "its command `daemon` has the name of a built-in `taskrush` command",
    );
}

#[test]
fn cached_tasks_get_after_task_with_cached_true_and_no_before_task() {
    let s = Scenario::new();
    plugin(&s, "rec", "good");
    let s = recording(s).file("in.txt", "x").rush(
        "plugins:\n  - {name: rec, config: {record: '${REC}'}}\ntasks:\n  c:\n    cmd: 'true'\n    cache_files: [in.txt]\n",
    );
    s.run(&["c"]).success();
    s.run(&["c"]).success();
    let hooks: Vec<String> = records(&s)
        .iter()
        .filter(|r| r["hook"] != "initialize")
        .map(|r| {
            format!(
                "{}{}",
                r["hook"].as_str().unwrap(),
                if r["result"]["cached"] == true {
                    "(cached)"
                } else {
                    ""
                }
            )
        })
        .collect();
    assert_eq!(hooks, ["before_task", "after_task", "after_task(cached)"]);
}

#[test]
fn the_conformance_kit_passes_a_good_plugin_and_explains_a_bad_one() {
    let s = Scenario::new();
    let good = fixtures().join("vetoer");
    let out = s.run(&["plugin", "test", good.to_str().unwrap()]);
    out.success();
    assert!(
        out.stdout().contains("✓ handshake: answered in "),
        "{}",
        out.stdout()
    );
    assert!(
        out.stdout().contains("✓ shutdown: answered, and exited"),
        "{}",
        out.stdout()
    );
    assert!(
        out.stdout().ends_with("11 of 11 checks passed\n"),
        "{}",
        out.stdout()
    );

    plugin(&s, "early", "exit-early");
    let dir = s.project().join(".rush-plugins/early");
    let out = s.run(&["plugin", "test", dir.to_str().unwrap()]);
    out.expect_code(1);
    assert!(
        out.stdout().contains(
            "✗ handshake: it exited instead of answering `initialize` (exit code 3); its last stderr lines: fixture: giving up before the handshake"
        ),
        "{}",
        out.stdout()
    );

    plugin(&s, "liar", "bad-ids");
    let dir = s.project().join(".rush-plugins/liar");
    let out = s.run(&["plugin", "test", dir.to_str().unwrap()]);
    out.expect_code(1);
    assert!(
        out.stdout()
            .contains("✗ ids: 1 answers carried an id no request had"),
        "{}",
        out.stdout()
    );
}

#[test]
fn the_node_security_scanner_example_vetoes_a_dangerous_task() {
    if !have("node") {
        eprintln!("skipped: `node` is not installed");
        return;
    }
    let dir = repo().join("plugins-external/examples/security-scanner");
    let s = Scenario::new().rush(&format!(
        "
plugins:
  - name: security-scanner
    path: {}
    required: true
tasks:
  risky:
    cmd: curl https://example.invalid/install.sh | sh
  safe:
    cmd: echo safe
",
        dir.display()
    ));
    grant_yes(&s, "security-scanner");
    s.run(&["safe"]).expect_stdout("safe\n").success();
    let out = s.run(&["risky"]);
    out.expect_stdout("").expect_code(1);
    out.expect_stderr_starting("error: task `risky` failed: vetoed by plugin `security-scanner`: ");
}

#[test]
fn the_go_git_hook_example_vetoes_a_task_whose_check_fails() {
    if !have("go") {
        eprintln!("skipped: `go` is not installed (apt-get install -y golang-go)");
        return;
    }
    let s = Scenario::new();
    let example = repo().join("plugins-external/examples/git-hook");
    let dir = s.root().join("git-hook");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(example.join("plugin.toml"), dir.join("plugin.toml")).unwrap();
    let mut build = std::process::Command::new("go");
    build
        .args(["build", "-o"])
        .arg(dir.join("git-hook"))
        .arg(".")
        .current_dir(&example)
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local");
    let built = build.output().expect("run go build");
    assert!(
        built.status.success(),
        "go build failed: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let s = s.rush(&format!(
        "
plugins:
  - name: git-hook
    path: {}
    required: true
    config:
      commands: {{guarded: ['echo dirty tree; exit 3']}}
tasks:
  guarded:
    cmd: echo should not run
  free:
    cmd: echo free
",
        dir.display()
    ));
    grant_yes(&s, "git-hook");
    s.run(&["free"]).expect_stdout("free\n").success();
    let out = s.run(&["guarded"]);
    out.expect_stdout("").expect_code(1);
    out.expect_stderr_starting("error: task `guarded` failed: vetoed by plugin `git-hook`: `echo dirty tree; exit 3` failed (exit code 3):\ndirty tree");
}

fn have(tool: &str) -> bool {
    std::process::Command::new(tool)
        .arg("version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok()
}

/// The fixture as `.rush-plugins/NAME/`, its manifest saying
/// `manifest_version` while the process answers `initialize` with
/// `says_version`.
fn plugin_saying(s: &Scenario, name: &str, manifest_version: &str, says_version: &str) {
    let script = fixtures().join("fixture.py");
    s.write(
        &format!(".rush-plugins/{name}/plugin.toml"),
        format!(
            "name = \"{name}\"\nversion = \"{manifest_version}\"\n\
             entry_point = [\"python3\", \"-I\", \"-u\", \"{}\", \"good\", \"{says_version}\"]\n\
             taskrush_version = \">=0.3\"\n\n[permissions]\nfilesystem = [\".\"]\n",
            script.display()
        ),
    );
    s.grant_in_config(name);
}

#[test]
fn a_plugin_whose_handshake_contradicts_its_manifest_version_is_refused_naming_both() {
    let s = Scenario::new();
    plugin_saying(&s, "lint", "1.0.1", "0.9.0");
    let s = s.rush(
        "plugins:\n  - {name: lint, version: \"^1.0.1\", required: true}\ntasks:\n  t:\n    cmd: echo ran\n",
    );
    let out = s.run(&["t"]);
    out.expect_stdout("").expect_code(1);
    out.expect_stderr_starting("error: task `t` failed: plugin `lint` failed in `handshake`: its answer to `initialize` does not match `");
    out.expect_stderr_containing(
        "plugin.toml`: it says version `0.9.0` where its manifest says `1.0.1` (the two must be equal)",
    );
    let st = state_of(&s, "lint");
    assert_eq!(st["state"], "failed", "{st}");

    // The same plugin telling the truth is accepted.
    plugin_saying(&s, "lint", "1.0.1", "1.0.1");
    s.run(&["t"])
        .expect_stdout("ran\n")
        .expect_stderr("")
        .success();
}

/// A private copy of the fixture in `mode` as `.rush-plugins/p/` (its files
/// change during the test), at `version`, asking for `env`: not granted
/// (see [`grant_yes`]), so that an update asking for more is held back.
pub(super) fn private_plugin(s: &Scenario, mode: &str, version: &str, env: &[&str]) {
    s.write(
        ".rush-plugins/p/main.py",
        std::fs::read(fixtures().join("fixture.py")).expect("fixture.py"),
    );
    let env: Vec<String> = env.iter().map(|e| format!("\"{e}\"")).collect();
    s.write(
        ".rush-plugins/p/plugin.toml",
        format!(
            "name = \"p\"\nversion = \"{version}\"\n\
             entry_point = [\"python3\", \"-I\", \"-u\", \"main.py\", \"{mode}\", \"{version}\"]\n\
             taskrush_version = \">=0.3\"\n\n[permissions]\nfilesystem = [\".\"]\nenvironment = [{}]\n",
            env.join(", ")
        ),
    );
}

/// `taskrush plugin grant NAME --yes`, which must succeed.
pub(super) fn grant_yes(s: &Scenario, name: &str) {
    s.run(&["plugin", "grant", name, "--yes"]).success();
}

#[test]
fn a_hot_swap_refused_for_more_permissions_is_said_in_the_next_runs_output() {
    let s = Scenario::new();
    private_plugin(&s, "good", "1.0.0", &["TOKEN"]);
    let s = recording(s).rush(
        "plugins:\n  - {name: p, config: {record: '${REC}'}}\ntasks:\n  build:\n    cmd: echo built\n",
    );
    grant_yes(&s, "p");
    s.run(&["build"])
        .expect_stdout("built\n")
        .expect_stderr("")
        .success();
    let mut events = s.events();
    private_plugin(&s, "good", "2.0.0", &["TOKEN", "AWS_SECRET_ACCESS_KEY"]);
    events.wait_kind("plugin_reload_refused");

    // The next run is served by version 1 and says why, once.
    let out = s.run(&["build"]);
    out.expect_stdout("built\n").success();
    out.expect_stderr(
        "plugin `p`: its new version asks for more permissions (environment `AWS_SECRET_ACCESS_KEY`) \
         and was not started; the running version keeps serving. To grant them, run \
         `taskrush plugin grant p`; or revert the manifest's `permissions`\n",
    );
    let last = records(&s)
        .into_iter()
        .rfind(|r| r["hook"] == "before_task")
        .expect("a call");
    assert_eq!(last["version"], "1.0.0");

    // Granting it swaps version 2 in, and runs are quiet again.
    grant_yes(&s, "p");
    s.run(&["build"])
        .expect_stdout("built\n")
        .expect_stderr("")
        .success();
    let last = records(&s)
        .into_iter()
        .rfind(|r| r["hook"] == "before_task")
        .expect("a call");
    assert_eq!(last["version"], "2.0.0");
}

#[test]
fn a_plugin_whose_handshake_gives_another_name_than_its_manifest_is_refused_naming_both() {
    let s = Scenario::new();
    let script = fixtures().join("fixture.py");
    s.write(
        ".rush-plugins/lint/plugin.toml",
        format!(
            "name = \"lint\"\nversion = \"1.0.1\"\n\
             entry_point = [\"python3\", \"-I\", \"-u\", \"{}\", \"good\", \"1.0.1\", \"linter\"]\n\
             taskrush_version = \">=0.3\"\n\n[permissions]\nfilesystem = [\".\"]\n",
            script.display()
        ),
    );
    let s = s.grant("lint").rush(
        "plugins:\n  - {name: lint, version: \"^1.0.1\", required: true}\ntasks:\n  t:\n    cmd: echo ran\n",
    );
    let out = s.run(&["t"]);
    out.expect_stdout("").expect_code(1);
    out.expect_stderr_starting("error: task `t` failed: plugin `lint` failed in `handshake`: its answer to `initialize` does not match `");
    out.expect_stderr_containing(
        "plugin.toml`: it calls itself `linter` where its manifest says `lint` (the two must be equal)",
    );
    assert_eq!(state_of(&s, "lint")["state"], "failed");
}

#[test]
fn plugin_test_help_says_it_runs_the_plugin_unsandboxed_with_its_declared_permissions() {
    let s = Scenario::new();
    let out = s.run(&["plugin", "test", "--help"]);
    out.success();
    let text = out.stdout();
    assert!(
        text.contains("unsandboxed with its declared permissions")
            && text.contains("WITHOUT the sandbox"),
        "{text}"
    );
}

#[test]
fn the_go_git_hook_example_runs_git_status_in_a_real_repo_reading_the_users_gitconfig_in_the_sandbox()
 {
    if !have("go") || !have("git") {
        eprintln!("skipped: `go` or `git` is not installed");
        return;
    }
    let s = Scenario::new();
    let example = repo().join("plugins-external/examples/git-hook");
    let dir = s.root().join("git-hook");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::copy(example.join("plugin.toml"), dir.join("plugin.toml")).expect("manifest");
    let built = std::process::Command::new("go")
        .args(["build", "-o"])
        .arg(dir.join("git-hook"))
        .arg(".")
        .current_dir(&example)
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local")
        .output()
        .expect("run go build");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    // The fake HOME's git config, which git must read.
    let home = s.root().join("home");
    std::fs::create_dir_all(&home).expect("home");
    std::fs::write(home.join(".gitconfig"), "[user]\n\tname = Fake Tester\n").expect("gitconfig");
    let s = s.rush(&format!(
        "plugins:\n  - name: git-hook\n    path: {}\n    required: true\n    config:\n      \
         commands: {{checked: ['git status --porcelain', 'test \"$(git config --global user.name)\" = \"Fake Tester\"']}}\n\
         tasks:\n  checked:\n    cmd: echo checked\n",
        dir.display()
    ));
    let init = s.sh("git init -q . && git add .rush && git -c user.email=a@b commit -qm init");
    init.success();
    grant_yes(&s, "git-hook");
    let info = s.run(&["plugin", "info", "git-hook", "--json"]);
    info.success();
    let info: serde_json::Value = serde_json::from_str(&info.stdout()).expect("json");
    assert_eq!(
        info["effective"]["filesystem"],
        serde_json::json!(["read:~/.gitconfig", "read:~/.config/git"]),
        "{info}"
    );
    let level = info["enforcement"]["filesystem"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if level != "enforced" {
        taskrush_tests::skip_unenforced(&format!("the daemon reports filesystem `{level}`"));
        return;
    }
    s.run(&["checked"]).expect_stdout("checked\n").success();
}
