//! WebAssembly plugins: real modules (WAT test guests compiled in the
//! test, see `tests/src/wasm_guest.rs`) run by a real daemon, through the
//! same hooks, commands, deadlines, audit trail and hot swap as external
//! plugins; and the Rust examples (`plugins-external/examples/*-wasm`,
//! built by `scripts/build-wasm-examples`).

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;
use taskrush_tests::wasm_guest::{Action, Guest};
use taskrush_tests::{Scenario, wait_until};

/// A guest that appends `HOOK\n` to `hooks.log` in the project (a
/// `write_file` host call) on every hook, and adds command `hello`.
fn recording_guest(version: &str) -> Guest {
    let hooks = ["before_task", "after_task", "on_task_failure"];
    let init = format!(
        r#"{{"name":"rec","version":"{version}","protocol":1,"hooks":["before_task","after_task","on_task_failure"],"commands":[{{"name":"hello","description":"says hello"}}]}}"#
    );
    let mut g = Guest::plugin("rec", version, &hooks).on("initialize", Action::Result(init));
    for h in hooks {
        let write = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"write_file","params":{{"path":"hooks.log","contents":"{h} {version}\n","append":true}}}}"#
        );
        g = g.on(h, Action::CallThen(write, "{}".into()));
    }
    g.on(
        "command",
        Action::Result(format!(
            r#"{{"exit_code":0,"stdout":"hello from wasm {version}\n","stderr":""}}"#
        )),
    )
}

/// Install `guest` as `.rush-plugins/NAME/` (`plugin.toml` with
/// `type = "wasm"`) with `permissions` (TOML lines).
fn install(s: &Scenario, name: &str, version: &str, guest: &Guest, permissions: &str) {
    // Not scenarios about consent: the user config grants what it declares.
    s.grant_in_config(name);
    s.write(&format!(".rush-plugins/{name}/plugin.wasm"), guest.wasm());
    s.write(
        &format!(".rush-plugins/{name}/plugin.toml"),
        format!(
            "name = \"{name}\"\nversion = \"{version}\"\ntype = \"wasm\"\n\
             entry_point = [\"plugin.wasm\"]\ntaskrush_version = \">=0.3\"\n\n[permissions]\n{permissions}"
        ),
    );
}

fn hooks_log(s: &Scenario) -> Vec<String> {
    std::fs::read_to_string(s.project().join("hooks.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn audit_records(s: &Scenario) -> Vec<Value> {
    std::fs::read_to_string(s.root().join("run").join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("an audit record is JSON"))
        .collect()
}

fn state_of(s: &Scenario, name: &str) -> Value {
    let out = s.run(&["plugin", "list", "--json"]);
    out.success();
    let list: Vec<Value> = serde_json::from_str(&out.stdout()).expect("plugin list JSON");
    list.into_iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no plugin `{name}` in the list"))
}

#[test]
fn a_wasm_plugin_gets_every_hook_and_adds_its_command() {
    let s = Scenario::new();
    install(
        &s,
        "rec",
        "1.0.0",
        &recording_guest("1.0.0"),
        "filesystem = [\"write:.\"]\n",
    );
    let s = s.rush(
        "plugins:\n  - {name: rec, type: wasm}\ntasks:\n  ok:\n    cmd: echo ok\n  bad:\n    cmd: 'exit 3'\n",
    );
    s.run(&["ok"])
        .expect_stdout("ok\n")
        .expect_stderr("")
        .success();
    s.run(&["bad"]).expect_code(3);
    assert_eq!(
        hooks_log(&s),
        [
            "before_task 1.0.0",
            "after_task 1.0.0",
            "before_task 1.0.0",
            "on_task_failure 1.0.0",
            "after_task 1.0.0"
        ]
    );
    s.run(&["hello"])
        .expect_stdout("hello from wasm 1.0.0\n")
        .success();
    let help = s.run(&["--help"]);
    assert!(
        help.stdout().contains("  hello  says hello (plugin `rec`)"),
        "{}",
        help.stdout()
    );
    let st = state_of(&s, "rec");
    assert_eq!(st["kind"], "wasm");
    assert_eq!(st["version"], "1.0.0");
    assert_eq!(st["enforcement"]["filesystem"], "enforced");
    assert_eq!(st["enforcement"]["network"], "enforced");
    // Its figures: the hooks' calls, the instance's time and memory.
    let out = s.run(&["plugin", "stats", "rec", "--json"]);
    let stats: Value = serde_json::from_str(&out.success().stdout()).expect("plugin stats --json");
    let rec = &stats[0];
    assert_eq!(rec["name"], "rec", "{stats}");
    assert!(
        rec["peak_rss_kib"].as_u64().is_some_and(|k| k > 0),
        "{stats}"
    );
    assert!(rec.get("cpu_ms").is_none(), "{stats}");
    let before = rec["hooks"]
        .as_array()
        .and_then(|h| h.iter().find(|h| h["name"] == "before_task"))
        .expect("before_task figures");
    assert_eq!(before["calls"], 2, "{stats}");
    // The audit trail names the module by its hash.
    s.run(&["daemon", "stop"]).success();
    let spawned = audit_records(&s)
        .into_iter()
        .find(|r| r["kind"] == "spawned" && r["plugin"] == "rec")
        .expect("a spawned record");
    assert_eq!(spawned["kind"], "spawned");
    assert_eq!(
        spawned["entry_sha256"].as_str().map(str::len),
        Some(64),
        "{spawned}"
    );
    assert_eq!(spawned["granted"]["filesystem"][0], "write:.");
    assert!(
        audit_records(&s).iter().any(|r| r["kind"] == "exited"
            && r["plugin"] == "rec"
            && r["sha256"] == spawned["entry_sha256"]),
        "the instance's end is recorded"
    );
}

#[test]
fn the_conformance_kit_tests_a_wasm_plugin() {
    let s = Scenario::new();
    // It writes `hooks.log`: its manifest must say so (the kit checks).
    install(
        &s,
        "rec",
        "1.0.0",
        &recording_guest("1.0.0"),
        "filesystem = [\"write:.\"]\n",
    );
    let dir = s.project().join(".rush-plugins/rec");
    let out = s.run(&["plugin", "test", dir.to_str().unwrap()]);
    assert!(
        out.stdout().contains("✓ handshake: answered in "),
        "{}",
        out.stdout()
    );
    out.success();
}

#[test]
fn the_conformance_kit_fails_a_wasm_plugin_that_writes_a_file_its_manifest_does_not_declare() {
    let s = Scenario::new();
    install(&s, "rec", "1.0.0", &recording_guest("1.0.0"), "");
    let dir = s.project().join(".rush-plugins/rec");
    let out = s.run(&["plugin", "test", dir.to_str().unwrap()]);
    out.expect_code(1);
    assert!(
        out.stdout().contains(
            "✗ permissions: it did what its manifest's `[permissions]` do not cover:\n  \
             - `write_file`: no `filesystem` permission for `hooks.log` (4 times); \
             hint: add `filesystem = [\"hooks.log\"]` under `[permissions]` in `plugin.toml`\n"
        ),
        "{}",
        out.stdout()
    );
    assert!(!dir.join("hooks.log").exists(), "the write was refused");
}

#[test]
fn a_looping_wasm_guest_is_stopped_at_its_deadline_and_the_next_call_works() {
    let s = Scenario::new();
    let guest = recording_guest("1.0.0").on("before_task", Action::Loop);
    install(&s, "rec", "1.0.0", &guest, "filesystem = [\"write:.\"]\n");
    let s = s.rush(
        "plugins:\n  - {name: rec, type: wasm, timeout: 500ms}\ntasks:\n  t:\n    cmd: echo ran\n",
    );
    let t0 = std::time::Instant::now();
    let out = s.run(&["t"]);
    out.expect_stdout("ran\n").success();
    out.expect_stderr_starting(
        "plugin `rec`: failed in `before_task`: no answer within 500ms: the guest was stopped at its deadline (a fresh instance serves the next call); it will be restarted on next use; the task goes on without it",
    );
    assert!(t0.elapsed() < Duration::from_secs(20));
    // The daemon is fine, and a fresh instance serves the next call.
    s.run(&["hello"])
        .expect_stdout("hello from wasm 1.0.0\n")
        .success();
    assert_eq!(state_of(&s, "rec")["restarts"], 1);
}

#[test]
fn wasm_limits_above_the_users_caps_are_lowered_to_them_with_a_warning() {
    let s = Scenario::new();
    install(
        &s,
        "rec",
        "1.0.0",
        &recording_guest("1.0.0"),
        "filesystem = [\"write:.\"]\n",
    );
    let grants = std::fs::read_to_string(s.user_config_path()).unwrap_or_default();
    let s = s
        .user_config(&format!(
            "{grants}\n[wasm]\nmax_memory = \"16MiB\"\nmax_module_size = \"1MiB\"\nmax_timeout = \"2s\"\n"
        ))
        .rush(
            "plugins:\n  - {name: rec, type: wasm, memory: 1GiB, module_size: 128MiB, timeout: 10m}\ntasks:\n  t:\n    cmd: echo ran\n",
        );
    let out = s.run(&["t"]);
    out.expect_stdout("ran\n").success();
    for line in [
        "plugin `rec`: `memory: 1024 MiB` is above your cap `[wasm] max_memory = 16 MiB` in the user config; using 16 MiB",
        "plugin `rec`: `module_size: 128 MiB` is above your cap `[wasm] max_module_size = 1 MiB` in the user config; using 1 MiB",
        "plugin `rec`: `timeout: 600s` is above your cap `[wasm] max_timeout = 2s` in the user config; using 2s",
    ] {
        assert!(out.stderr().contains(line), "{line}\n{}", out.stderr());
    }
    let limits = &state_of(&s, "rec")["limits"];
    assert_eq!(limits["memory"]["value"], 16 * 1024 * 1024, "{limits}");
    assert_eq!(limits["module_size"]["value"], 1024 * 1024, "{limits}");
    assert_eq!(limits["deadline"]["value"], 2000, "{limits}");
    // Under the caps, the `.rush` values stand and nothing is said.
    let s = s.rush(
        "plugins:\n  - {name: rec, type: wasm, memory: 8MiB, timeout: 1s}\ntasks:\n  t:\n    cmd: echo ran\n",
    );
    s.run(&["t"])
        .expect_stdout("ran\n")
        .expect_stderr("")
        .success();
    let limits = &state_of(&s, "rec")["limits"];
    assert_eq!(limits["memory"]["value"], 8 * 1024 * 1024, "{limits}");
    assert_eq!(limits["deadline"]["value"], 1000, "{limits}");
}

#[test]
fn a_wasm_guest_trapping_three_times_is_failed_until_restarted() {
    let s = Scenario::new();
    let guest = recording_guest("1.0.0").on("before_task", Action::Trap);
    install(&s, "rec", "1.0.0", &guest, "filesystem = [\"write:.\"]\n");
    let s = s.rush("plugins:\n  - {name: rec, type: wasm}\ntasks:\n  t:\n    cmd: echo ran\n");
    // Each trap drops the instance; the task goes on (not required).
    for i in 1..=3 {
        let out = s.run(&["t"]);
        out.expect_stdout("ran\n").success();
        assert!(
            out.stderr()
                .contains("plugin `rec`: failed in `before_task`: it trapped: "),
            "run {i}: {}",
            out.stderr()
        );
    }
    let st = state_of(&s, "rec");
    assert_eq!(st["state"], "failed", "{st}");
    assert_eq!(st["restarts"], 2, "{st}");
    assert!(
        st["error"]
            .as_str()
            .unwrap_or_default()
            .contains("it failed 3 times within 5 minutes"),
        "{st}"
    );
    // Marked failed: its hooks are skipped with a warning, the task runs.
    let out = s.run(&["t"]);
    out.expect_stdout("ran\n").success();
    out.expect_stderr_containing("it is marked failed");
    out.expect_stderr_containing("is not restarted again");
    // No fresh instance while failed.
    let st = state_of(&s, "rec");
    assert_eq!(
        (&st["state"], &st["restarts"]),
        (&"failed".into(), &2.into()),
        "{st}"
    );
    // `plugin restart` brings it back: a fresh instance, idle.
    let out = s.run(&["plugin", "restart", "rec"]);
    out.success();
    assert!(
        out.stdout().starts_with("restarted `rec`: idle"),
        "{}",
        out.stdout()
    );
    assert_eq!(state_of(&s, "rec")["state"], "idle");
    s.run(&["hello"])
        .expect_stdout("hello from wasm 1.0.0\n")
        .success();
}

#[test]
fn a_wasm_guest_that_allocates_without_bound_traps_at_its_memory_cap() {
    let s = Scenario::new();
    let guest = recording_guest("1.0.0").on("before_task", Action::Grow);
    install(&s, "rec", "1.0.0", &guest, "filesystem = [\"write:.\"]\n");
    let s = s.rush(
        "plugins:\n  - {name: rec, type: wasm, memory: 8MiB}\ntasks:\n  t:\n    cmd: echo ran\n",
    );
    // Live, its limits are reported as an external plugin's are.
    s.run(&["hello"]).success();
    let limits = &state_of(&s, "rec")["limits"];
    assert_eq!(limits["memory"]["value"], 8 * 1024 * 1024, "{limits}");
    assert_eq!(limits["memory"]["level"], "enforced", "{limits}");
    assert_eq!(limits["module_size"]["value"], 32 * 1024 * 1024, "{limits}");
    assert_eq!(limits["module_size"]["level"], "enforced", "{limits}");
    assert_eq!(limits["deadline"]["level"], "enforced", "{limits}");
    let info = s.run(&["plugin", "info", "rec"]);
    info.success();
    for line in [
        "limit memory 8 MiB: enforced",
        "limit module_size 32 MiB: enforced",
        "limit deadline ",
    ] {
        assert!(info.stdout().contains(line), "{line}: {}", info.stdout());
    }
    let spawned = audit_records(&s)
        .into_iter()
        .find(|r| r["kind"] == "spawned" && r["plugin"] == "rec")
        .expect("a spawned record");
    assert_eq!(
        spawned["limits"], *limits,
        "the audit trail has the same limits"
    );
    let list = s.run(&["plugin", "list"]);
    assert!(
        list.stdout()
            .lines()
            .any(|l| l.starts_with("rec") && l.contains("enforced")),
        "{}",
        list.stdout()
    );
    let out = s.run(&["t"]);
    out.expect_stdout("ran\n").success();
    out.expect_stderr_starting(
        "plugin `rec`: failed in `before_task`: it trapped: it grew its memory past its cap of 8 MiB",
    );
    // Required, the same trap fails the task.
    let s = s.rush(
        "plugins:\n  - {name: rec, type: wasm, memory: 8MiB, required: true}\ntasks:\n  t:\n    cmd: echo ran\n",
    );
    let out = s.run(&["t"]);
    out.expect_code(1);
    out.expect_stderr_containing("it grew its memory past its cap of 8 MiB");
}

#[test]
fn host_calls_outside_the_grants_are_denied_to_the_guest_and_audited() {
    let s = Scenario::new();
    let read = r#"{"jsonrpc":"2.0","id":1,"method":"read_file","params":{"path":"/etc/passwd"}}"#;
    let http = r#"{"jsonrpc":"2.0","id":2,"method":"http_request","params":{"url":"http://127.0.0.1:9/x"}}"#;
    let guest = Guest::plugin("nosy", "1.0.0", &["before_task", "after_task"])
        .on("before_task", Action::CallThen(read.into(), "{}".into()))
        .on("after_task", Action::CallThen(http.into(), "{}".into()))
        .on("command", Action::HostCall(read.into()));
    install(
        &s,
        "nosy",
        "1.0.0",
        &guest,
        "network = [\"hooks.slack.com\"]\n",
    );
    let s = s.rush("plugins:\n  - {name: nosy, type: wasm}\ntasks:\n  t:\n    cmd: echo ran\n");
    s.run(&["t"])
        .expect_stdout("ran\n")
        .expect_stderr("")
        .success();
    s.run(&["daemon", "stop"]).success();
    let denied: Vec<(String, String)> = audit_records(&s)
        .into_iter()
        .filter(|r| r["kind"] == "denied" && r["plugin"] == "nosy")
        .map(|r| {
            (
                r["permission"].as_str().unwrap_or("").to_owned(),
                r["item"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        denied,
        [
            ("filesystem".to_owned(), "/etc/passwd".to_owned()),
            ("network".to_owned(), "127.0.0.1".to_owned())
        ]
    );
    let table = s.run(&["plugin", "audit", "nosy"]);
    table.success();
    assert!(
        table
            .stdout()
            .contains("`read_file`: no `filesystem` grant for `/etc/passwd`"),
        "{}",
        table.stdout()
    );
}

#[test]
fn a_changed_wasm_module_is_swapped_in_between_calls() {
    let s = Scenario::new();
    install(
        &s,
        "rec",
        "1.0.0",
        &recording_guest("1.0.0"),
        "filesystem = [\"write:.\"]\n",
    );
    let s = s.rush("plugins:\n  - {name: rec, type: wasm}\ntasks:\n  t:\n    cmd: echo ran\n");
    s.run(&["t"]).success();
    let mut events = s.events();
    install(
        &s,
        "rec",
        "2.0.0",
        &recording_guest("2.0.0"),
        "filesystem = [\"write:.\"]\n",
    );
    let e = events.wait_kind("plugin_restarted");
    assert_eq!(e["version"], "2.0.0");
    s.run(&["t"]).success();
    assert_eq!(
        hooks_log(&s),
        [
            "before_task 1.0.0",
            "after_task 1.0.0",
            "before_task 2.0.0",
            "after_task 2.0.0"
        ]
    );
}

#[test]
fn a_wasm_module_built_for_another_abi_version_is_refused_naming_both() {
    let s = Scenario::new();
    install(
        &s,
        "old",
        "1.0.0",
        &Guest::plugin("old", "1.0.0", &[]).abi(2),
        "",
    );
    let s = s.rush(
        "plugins:\n  - {name: old, type: wasm, required: true}\ntasks:\n  t:\n    cmd: echo ran\n",
    );
    let out = s.run(&["t"]);
    out.expect_code(1);
    out.expect_stderr_containing(
        "plugin.wasm` is built for guest ABI version 2, this host speaks version 1",
    );
    assert_eq!(state_of(&s, "old")["state"], "failed");
}

#[test]
fn a_bare_wasm_path_takes_its_version_from_the_module_and_is_granted_nothing() {
    let s = Scenario::new();
    let read = r#"{"jsonrpc":"2.0","id":1,"method":"env_get","params":{"name":"HOME"}}"#;
    // It calls itself `scanner`: a bare module is named by its `.rush` entry.
    let guest = Guest::plugin("scanner", "2.5.0", &["before_task"])
        .on("before_task", Action::CallThen(read.into(), "{}".into()))
        .version_section("2.5.0");
    s.write("plugins/scan.wasm", guest.wasm());
    let s = s.rush(
        "plugins:\n  - {name: scan, type: wasm, path: ./plugins/scan.wasm}\ntasks:\n  t:\n    cmd: echo ran\n",
    );
    s.run(&["t"])
        .expect_stdout("ran\n")
        .expect_stderr("")
        .success();
    let info = s.run(&["plugin", "info", "scan"]);
    info.success();
    assert!(info.stdout().contains("2.5.0"), "{}", info.stdout());
    assert!(
        info.stdout()
            .contains("a bare WebAssembly module (no `plugin.toml`): it is granted nothing beyond the safe set"),
        "{}",
        info.stdout()
    );
    s.run(&["daemon", "stop"]).success();
    assert!(
        audit_records(&s)
            .iter()
            .any(|r| r["kind"] == "denied" && r["item"] == "HOME"),
        "a bare module gets no environment"
    );
}

#[test]
fn a_warm_daemon_restart_loads_compiled_modules_from_the_disk_cache() {
    let s = Scenario::new();
    install(
        &s,
        "rec",
        "1.0.0",
        &recording_guest("1.0.0"),
        "filesystem = [\"write:.\"]\n",
    );
    let s = s.rush("plugins:\n  - {name: rec, type: wasm}\ntasks:\n  t:\n    cmd: echo ran\n");
    s.run(&["t"]).success();
    let cache = s.root().join("home/cache/taskrush/wasm");
    let files = || std::fs::read_dir(&cache).map(|d| d.count()).unwrap_or(0);
    assert_eq!(files(), 1, "one compiled module cached");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&cache).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    s.run(&["daemon", "stop"]).success();
    s.run(&["t"]).success();
    assert!(wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(s.log())
            .unwrap_or_default()
            .contains("module=Disk")
    }));
}

/// The workspace.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

/// The directory of Rust example plugin `name` with its module freshly built
/// by `scripts/build-wasm-examples` (once per test run), or `None` with a
/// printed reason when the build fails here. The build's exit status
/// decides, not whether a module file exists: a stale `.wasm` left in the
/// example directory is never tested. Under `CI=1` or
/// `TASKRUSH_REQUIRE_WASM=1` (which `scripts/test` sets once the build
/// succeeded) a failed build fails the scenario instead of skipping it.
pub(super) fn example(name: &str, file: &str) -> Option<PathBuf> {
    static BUILT: Mutex<Option<Result<(), String>>> = Mutex::new(None);
    let dir = repo().join("plugins-external/examples").join(name);
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    let result = built.get_or_insert_with(|| {
        match Command::new(repo().join("scripts/build-wasm-examples"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
        {
            Ok(out) if out.status.success() => Ok(()),
            Ok(out) => Err(format!(
                "scripts/build-wasm-examples failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => Err(format!("scripts/build-wasm-examples could not run: {e}")),
        }
    });
    let reason = match result {
        Ok(()) if dir.join(file).is_file() => return Some(dir),
        Ok(()) => format!(
            "scripts/build-wasm-examples succeeded but left no `{file}` in {}",
            dir.display()
        ),
        Err(e) => e.clone(),
    };
    let required = |var: &str| std::env::var(var).is_ok_and(|v| !v.is_empty() && v != "0");
    if required("CI") || required("TASKRUSH_REQUIRE_WASM") {
        panic!("the `{name}` example is required (CI or TASKRUSH_REQUIRE_WASM is set): {reason}");
    }
    eprintln!(
        "skipped: the `{name}` example is not built: {reason} (it needs the wasm32-wasip1 target; set TASKRUSH_REQUIRE_WASM=1 to fail instead)"
    );
    None
}

#[test]
fn the_rust_security_scanner_example_vetoes_a_risky_task_as_a_wasm_plugin() {
    let Some(dir) = example("security-scanner-wasm", "security-scanner.wasm") else {
        return;
    };
    let s = Scenario::new().rush(&format!(
        "plugins:\n  - name: security-scanner\n    type: wasm\n    path: {}\n    required: true\n    timeout: 10s\n\
         tasks:\n  safe:\n    cmd: echo fine\n  risky:\n    cmd: chmod 777 no-such-file\n",
        dir.display()
    ));
    s.run(&["safe"])
        .expect_stdout("fine\n")
        .expect_stderr("")
        .success();
    let out = s.run(&["risky"]);
    out.expect_code(1);
    out.expect_stderr_containing("security-scanner");
    out.expect_stderr_containing("chmod");
    assert_eq!(state_of(&s, "security-scanner")["kind"], "wasm");
}

#[test]
fn the_rust_slack_notify_example_posts_through_the_http_host_call() {
    let Some(dir) = example("slack-notify-wasm", "slack-notify.wasm") else {
        return;
    };
    let listener = TcpListener::bind("127.0.0.1:0").expect("a local port");
    let port = listener.local_addr().expect("its address").port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((mut conn, _)) = listener.accept() {
            conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            // Headers, then as much body as Content-Length says.
            while let Ok(n) = conn.read(&mut buf) {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text[..end]
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if got.len() >= end + 4 + len {
                        break;
                    }
                }
            }
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
            let _ = tx.send(String::from_utf8_lossy(&got).to_string());
        }
    });
    let s = Scenario::new()
        .grant("slack-notify").rush(&format!(
        "plugins:\n  - name: slack-notify\n    type: wasm\n    path: {}\n    timeout: 10s\n    config:\n      webhook_url: http://127.0.0.1:{port}/hook\n\
         tasks:\n  deploy:\n    cmd: echo deployed\n",
        dir.display()
    ));
    s.run(&["deploy"]).expect_stdout("deployed\n").success();
    let request = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the plugin posted to the local receiver");
    assert!(request.starts_with("POST /hook "), "{request}");
    assert!(request.contains("deploy"), "{request}");
}

#[test]
fn a_call_in_flight_during_a_hot_reload_finishes_on_the_old_instance() {
    // A receiver on 127.0.0.1 that holds version 1's `before_task` (an
    // `http_request` host call) until the new module is swapped in.
    let listener = TcpListener::bind("127.0.0.1:0").expect("a local port");
    let port = listener.local_addr().expect("its address").port();
    let (got_tx, got_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Ok((mut conn, _)) = listener.accept() {
            conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = got_tx.send(());
            let _ = go_rx.recv_timeout(Duration::from_secs(30));
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    let s = Scenario::new();
    let slow = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"http_request","params":{{"url":"http://127.0.0.1:{port}/slow"}}}}"#
    );
    let v1 = recording_guest("1.0.0").on("before_task", Action::CallThen(slow, "{}".into()));
    let grants = "filesystem = [\"write:.\"]\nnetwork = [\"127.0.0.1\"]\n";
    install(&s, "rec", "1.0.0", &v1, grants);
    let s = s.rush(
        "plugins:\n  - {name: rec, type: wasm, timeout: 20s}\ntasks:\n  t:\n    cmd: echo ran\n",
    );
    let mut c = s.command(&["t"]);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let run = c.spawn().expect("taskrush runs");
    got_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("version 1 is in its before_task");
    let mut events = s.events();
    install(&s, "rec", "2.0.0", &recording_guest("2.0.0"), grants);
    let e = events.wait_kind("plugin_restarted");
    assert_eq!(e["version"], "2.0.0");
    let _ = go_tx.send(());
    // The call in flight was not cut: the run is as if nothing happened.
    s.finish(run, Duration::from_secs(30))
        .expect_stdout("ran\n")
        .expect_stderr("")
        .success();
    s.run(&["t"]).success();
    assert!(
        hooks_log(&s).contains(&"before_task 2.0.0".to_owned()),
        "{:?}",
        hooks_log(&s)
    );
}

#[test]
fn a_granted_program_runs_through_run_command_under_the_plugins_sandbox() {
    let s = Scenario::new();
    let run = r#"{"jsonrpc":"2.0","id":1,"method":"run_command","params":{"program":"sh","args":["-c","echo from-guest > made-by-sh.txt; cat /etc/hostname > /dev/null; echo x > ../outside.txt"]}}"#;
    let curl = r#"{"jsonrpc":"2.0","id":2,"method":"run_command","params":{"program":"curl","args":["http://127.0.0.1:9/"]}}"#;
    let guest = Guest::plugin("runner", "1.0.0", &["before_task", "after_task"])
        .on("before_task", Action::CallThen(run.into(), "{}".into()))
        .on("after_task", Action::CallThen(curl.into(), "{}".into()));
    install(
        &s,
        "runner",
        "1.0.0",
        &guest,
        "filesystem = [\"write:.\"]\nprocess = [\"sh\"]\n",
    );
    let s = s.rush("plugins:\n  - {name: runner, type: wasm}\ntasks:\n  t:\n    cmd: echo ran\n");
    s.run(&["t"])
        .expect_stdout("ran\n")
        .expect_stderr("")
        .success();
    assert_eq!(s.read("made-by-sh.txt"), "from-guest\n");
    // The program has the plugin's grants, not more.
    let level = state_of(&s, "runner")["enforcement"]["process"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if level == "enforced" {
        assert!(
            !s.root().join("outside.txt").exists(),
            "a write outside the grants is refused by the sandbox"
        );
    } else {
        taskrush_tests::skip_unenforced(&format!(
            "the sandbox part: the daemon reports process `{level}` on this kernel"
        ));
    }
    s.run(&["daemon", "stop"]).success();
    assert!(
        audit_records(&s)
            .iter()
            .any(|r| r["kind"] == "denied" && r["permission"] == "process" && r["item"] == "curl"),
        "an ungranted program is denied and audited"
    );
}
