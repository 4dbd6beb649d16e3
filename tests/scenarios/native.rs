//! Native plugins (`type: native`): real `cdylib`s built by
//! `scripts/build-native-examples` (the example
//! `plugins-external/examples/build-metrics-native` and the fixtures
//! `plugins-external/fixtures/native-*`), loaded by a real daemon in a host
//! process of their own (the default) or in the daemon; refused unless the
//! user config allows them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use serde_json::Value;
use std::time::Duration;

use taskrush_tests::{Scenario, wait_until};

const ALLOW: &str = "[native]\nallow = true\n";
const IN_DAEMON: &str = "[native]\nallow = true\nmode = \"in-daemon\"\n";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

fn required(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Runs `script` once per test run: `Ok` when it succeeded.
fn build_once(cell: &Mutex<Option<Result<(), String>>>, script: &str) -> Result<(), String> {
    let mut built = cell.lock().unwrap_or_else(|p| p.into_inner());
    built
        .get_or_insert_with(|| {
            match Command::new(repo().join(script))
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output()
            {
                Ok(out) if out.status.success() => Ok(()),
                Ok(out) => Err(format!(
                    "{script} failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
                Err(e) => Err(format!("{script} could not run: {e}")),
            }
        })
        .clone()
}

/// The directory of native plugin `rel` (under `plugins-external/`) with
/// its library freshly built, or `None` with a printed reason. Under `CI=1`
/// or `TASKRUSH_REQUIRE_NATIVE=1` a failed build fails the scenario.
fn native(rel: &str) -> Option<PathBuf> {
    static BUILT: Mutex<Option<Result<(), String>>> = Mutex::new(None);
    match build_once(&BUILT, "scripts/build-native-examples") {
        Ok(()) => Some(repo().join("plugins-external").join(rel)),
        Err(reason) => {
            if required("CI") || required("TASKRUSH_REQUIRE_NATIVE") {
                panic!("native plugin `{rel}` is required: {reason}");
            }
            eprintln!("skipped: native plugin `{rel}` is not built: {reason}");
            None
        }
    }
}

fn state_of(s: &Scenario, name: &str) -> Value {
    let out = s.run(&["plugin", "list", "--json"]);
    out.success();
    let list: Vec<Value> = serde_json::from_str(&out.stdout()).expect("plugin list JSON");
    list.into_iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no plugin `{name}` in the list"))
}

fn metrics_rush(kind: &str, dir: &Path) -> String {
    format!(
        "plugins:\n  - name: build-metrics\n    type: {kind}\n    path: {}\n    required: true\n    timeout: 10s\n\
         tasks:\n  compile:\n    cmd: echo compiled\n  test:\n    cmd: echo tested\n    depends_on: [compile]\n",
        dir.display()
    )
}

/// The one scenario every kind of the build-metrics plugin must pass:
/// two tasks run, then its command summarises them.
fn metrics_scenario(s: &Scenario) {
    s.run(&["test"])
        .expect_stdout("compiled\ntested\n")
        .success();
    let out = s.run(&["build-metrics"]);
    out.success();
    let text = out.stdout();
    assert!(
        text.starts_with("build metrics: 2 tasks, 0 failed, "),
        "{text}"
    );
    assert!(text.contains("compile") && text.contains("test"), "{text}");
    // From the task graph (the `task_graph` host call): each task's
    // dependencies as written, and the critical path through the run.
    assert!(text.contains("task graph: 2 tasks\n"), "{text}");
    assert!(
        text.contains("  compile              no dependencies\n"),
        "{text}"
    );
    assert!(
        text.contains("  test                 depends on compile\n"),
        "{text}"
    );
    assert!(text.contains("critical path: compile -> test ("), "{text}");
}

#[test]
fn a_native_plugin_is_refused_until_the_user_config_allows_native_plugins() {
    let Some(dir) = native("examples/build-metrics-native") else {
        return;
    };
    let s = Scenario::new().rush(&metrics_rush("native", &dir));
    let out = s.run(&["test"]);
    out.expect_code(1);
    out.expect_stderr_containing("is a native plugin");
    out.expect_stderr_containing("does not allow native plugins");
    out.expect_stderr_containing("allow = true");
    // Allowed: the same project runs, without restarting anything.
    std::fs::write(s.user_config_path(), "").ok();
    let s = s.user_config(ALLOW);
    metrics_scenario(&s);
}

#[test]
fn the_build_metrics_example_runs_as_a_native_plugin_in_a_host_process_of_its_own() {
    let Some(dir) = native("examples/build-metrics-native") else {
        return;
    };
    let s = Scenario::new()
        .user_config(ALLOW)
        .rush(&metrics_rush("native", &dir));
    metrics_scenario(&s);
    let state = state_of(&s, "build-metrics");
    assert_eq!(state["kind"], "native");
    let pid = state["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("a host process: {state}"));
    // The security issue's sandbox applies to the host process like any
    // other plugin process: under a seccomp filter, no new privileges.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    if status.contains("Seccomp:") {
        assert!(status.contains("Seccomp:\t2\n"), "{status}");
        assert!(status.contains("NoNewPrivs:\t1\n"), "{status}");
    } else {
        eprintln!("skipped the seccomp check: this kernel does not report `Seccomp` in /proc");
    }
    let info = s.run(&["plugin", "info", "build-metrics"]);
    info.success();
    assert!(
        !info.stdout().contains("not sandboxed"),
        "{}",
        info.stdout()
    );
}

#[test]
fn the_build_metrics_example_runs_in_the_daemon_and_plugin_info_says_it_is_not_sandboxed() {
    let Some(dir) = native("examples/build-metrics-native") else {
        return;
    };
    let s = Scenario::new()
        .user_config(IN_DAEMON)
        .rush(&metrics_rush("native", &dir));
    metrics_scenario(&s);
    let state = state_of(&s, "build-metrics");
    assert!(state["pid"].is_null(), "no process: {state}");
    let info = s.run(&["plugin", "info", "build-metrics"]);
    info.success();
    assert!(
        info.stdout().contains("not sandboxed (in-daemon)"),
        "{}",
        info.stdout()
    );
}

#[test]
fn one_rust_plugin_passes_the_same_scenario_as_native_wasm_and_external_process() {
    let Some(native_dir) = native("examples/build-metrics-native") else {
        return;
    };
    // Native, both modes.
    for mode in [ALLOW, IN_DAEMON] {
        let s = Scenario::new()
            .user_config(mode)
            .rush(&metrics_rush("native", &native_dir));
        metrics_scenario(&s);
    }
    // An external process: the crate's `build-metrics` binary.
    let bin = repo().join("target/debug/build-metrics");
    assert!(
        bin.is_file(),
        "scripts/build-native-examples builds {}",
        bin.display()
    );
    let s = Scenario::new();
    let ext = s.root().join("external");
    std::fs::create_dir_all(&ext).expect("dir");
    std::fs::write(
        ext.join("plugin.toml"),
        format!(
            "name = \"build-metrics\"\nversion = \"1.0.0\"\ntaskrush_version = \">=0.3\"\nentry_point = [\"{}\"]\n",
            bin.display()
        ),
    )
    .expect("manifest");
    let s = s.rush(&metrics_rush("external", &ext));
    metrics_scenario(&s);
    // WebAssembly: built by scripts/build-wasm-examples.
    static WASM: Mutex<Option<Result<(), String>>> = Mutex::new(None);
    match build_once(&WASM, "scripts/build-wasm-examples") {
        Ok(()) => {
            let s = Scenario::new();
            let w = s.root().join("wasm");
            std::fs::create_dir_all(&w).expect("dir");
            std::fs::copy(
                native_dir.join("build-metrics.wasm"),
                w.join("build-metrics.wasm"),
            )
            .expect("the module");
            std::fs::write(
                w.join("plugin.toml"),
                "name = \"build-metrics\"\nversion = \"1.0.0\"\ntaskrush_version = \">=0.3\"\ntype = \"wasm\"\nentry_point = [\"build-metrics.wasm\"]\n",
            )
            .expect("manifest");
            let s = s.rush(&metrics_rush("wasm", &w));
            metrics_scenario(&s);
        }
        Err(reason) if required("CI") || required("TASKRUSH_REQUIRE_WASM") => {
            panic!("the WebAssembly build is required: {reason}")
        }
        Err(reason) => eprintln!("skipped the WebAssembly kind: {reason}"),
    }
}

#[test]
fn a_library_built_for_another_abi_version_is_refused_naming_both_versions() {
    let Some(dir) = native("fixtures/native-abi2") else {
        return;
    };
    for mode in [ALLOW, IN_DAEMON] {
        let s = Scenario::new().user_config(mode).rush(&format!(
            "plugins:\n  - name: native-abi2\n    type: native\n    path: {}\n    required: true\n\
             tasks:\n  t:\n    cmd: echo ran\n",
            dir.display()
        ));
        let out = s.run(&["t"]);
        out.expect_code(1);
        out.expect_stderr_containing(
            "is built for native ABI version 2, this host speaks version 1",
        );
        // A restart cannot fix it: marked failed at once.
        assert_eq!(state_of(&s, "native-abi2")["state"], "failed", "{mode}");
    }
}

fn probe(s: Scenario, dir: &Path, required: bool) -> Scenario {
    s.rush(&format!(
        "plugins:\n  - name: native-probe\n    type: native\n    path: {}\n    required: {required}\n    timeout: 1s\n\
         tasks:\n  read-secret:\n    cmd: echo ran\n  segfault:\n    cmd: echo survived\n  panic:\n    cmd: echo survived\n  block:\n    cmd: echo survived\n  fine:\n    cmd: echo fine\n",
        dir.display()
    ))
}

#[test]
fn a_native_plugin_that_segfaults_costs_its_host_process_not_the_task_or_the_daemon() {
    let Some(dir) = native("fixtures/native-probe") else {
        return;
    };
    let s = probe(Scenario::new().user_config(ALLOW), &dir, false);
    s.run(&["fine"]).expect_stdout("fine\n").success();
    let daemon = s.daemon_pid();
    let out = s.run(&["segfault"]);
    out.expect_stdout("survived\n").success();
    out.expect_stderr_containing("native-probe");
    assert_eq!(s.daemon_pid(), daemon, "the daemon carries on");
    // Started again (after its back-off) for the next task.
    s.run(&["fine"]).expect_stdout("fine\n").success();
    let state = state_of(&s, "native-probe");
    assert!(state["restarts"].as_u64() >= Some(1), "{state}");
    // The back-off and the circuit breaker of any plugin apply: three
    // crashes in five minutes mark it failed, and it is not started again.
    for _ in 0..2 {
        s.run(&["segfault"]).expect_stdout("survived\n").success();
    }
    let state = state_of(&s, "native-probe");
    assert_eq!(state["state"], "failed", "{state}");
    let out = s.run(&["fine"]);
    out.expect_stdout("fine\n").success();
    assert_eq!(state_of(&s, "native-probe")["pid"], Value::Null);
    assert_eq!(s.daemon_pid(), daemon, "the daemon carries on");
}

#[test]
fn a_native_plugins_host_calls_are_held_to_its_grants_in_either_mode() {
    let Some(dir) = native("fixtures/native-probe") else {
        return;
    };
    for mode in [ALLOW, IN_DAEMON] {
        let s = probe(Scenario::new().user_config(mode), &dir, true);
        std::fs::write(s.root().join("secret.txt"), "hunter2").expect("the secret");
        let out = s.run(&["read-secret"]);
        out.expect_code(1);
        out.expect_stderr_containing(
            "the host said: permission denied: `read_file` needs a `filesystem` grant for `../secret.txt`",
        );
        assert!(
            !out.stderr().contains("hunter2"),
            "{mode}: {}",
            out.stderr()
        );
        let audit =
            std::fs::read_to_string(s.root().join("run").join("audit.jsonl")).unwrap_or_default();
        assert!(
            audit.lines().any(|l| {
                let r: Value = serde_json::from_str(l).unwrap_or(Value::Null);
                r["kind"] == "denied"
                    && r["plugin"] == "native-probe"
                    && r["call"] == "read_file"
                    && r["item"] == "../secret.txt"
            }),
            "{mode}: {audit}"
        );
    }
}

#[test]
fn a_native_plugin_that_panics_answers_an_error_and_keeps_serving() {
    let Some(dir) = native("fixtures/native-probe") else {
        return;
    };
    for mode in [ALLOW, IN_DAEMON] {
        let s = probe(Scenario::new().user_config(mode), &dir, true);
        let out = s.run(&["panic"]);
        out.expect_code(1);
        out.expect_stderr_containing(
            "the plugin panicked in `before_task`: the probe panics on purpose",
        );
        s.run(&["fine"]).expect_stdout("fine\n").success();
        assert_eq!(
            state_of(&s, "native-probe")["restarts"],
            0,
            "no crash: {mode}"
        );
    }
}

#[test]
fn a_native_plugin_that_blocks_past_its_deadline_is_given_up_on_and_the_daemon_carries_on() {
    let Some(dir) = native("fixtures/native-probe") else {
        return;
    };
    for mode in [ALLOW, IN_DAEMON] {
        let s = probe(Scenario::new().user_config(mode), &dir, false);
        let out = s.run(&["block"]);
        out.expect_stdout("survived\n").success();
        out.expect_stderr_containing("no answer within 1s");
        s.run(&["fine"]).expect_stdout("fine\n").success();
    }
}

/// A copy of the example's plugin directory in the scenario, so that its
/// library can be replaced.
fn own_copy(s: &Scenario, example: &Path) -> PathBuf {
    let d = s.root().join("build-metrics");
    std::fs::create_dir_all(&d).expect("dir");
    for f in ["plugin.toml", "libbuild_metrics.so"] {
        std::fs::copy(example.join(f), d.join(f)).expect("copy");
    }
    d
}

/// A new build of the library, renamed over the old one (a new file).
fn replace_library(d: &Path) {
    let lib = d.join("libbuild_metrics.so");
    let tmp = d.join("libbuild_metrics.so.new");
    std::fs::copy(&lib, &tmp).expect("copy");
    std::fs::rename(&tmp, &lib).expect("rename");
}

#[test]
fn a_changed_library_is_picked_up_by_a_new_host_process() {
    let Some(example) = native("examples/build-metrics-native") else {
        return;
    };
    let s = Scenario::new().user_config(ALLOW);
    let d = own_copy(&s, &example);
    let s = s.rush(&metrics_rush("native", &d));
    s.run(&["test"]).success();
    let first = state_of(&s, "build-metrics")["pid"].clone();
    assert!(first.is_u64(), "{first}");
    replace_library(&d);
    assert!(
        wait_until(Duration::from_secs(10), || {
            let pid = state_of(&s, "build-metrics")["pid"].clone();
            pid.is_u64() && pid != first
        }),
        "a new host process takes over"
    );
    s.run(&["test"])
        .expect_stdout("compiled\ntested\n")
        .success();
}

#[test]
fn an_in_daemon_library_that_changed_is_picked_up_at_the_next_daemon_restart_and_plugin_list_says_so()
 {
    let Some(example) = native("examples/build-metrics-native") else {
        return;
    };
    let s = Scenario::new().user_config(IN_DAEMON);
    let d = own_copy(&s, &example);
    let s = s.rush(&metrics_rush("native", &d));
    s.run(&["test"]).success();
    assert!(state_of(&s, "build-metrics")["error"].is_null());
    replace_library(&d);
    let state = state_of(&s, "build-metrics");
    let error = state["error"].as_str().unwrap_or_default();
    assert!(error.contains("next daemon restart"), "{state}");
    // Still serving the version it loaded.
    s.run(&["test"])
        .expect_stdout("compiled\ntested\n")
        .success();
    s.run(&["daemon", "stop"]).success();
    s.run(&["test"]).success();
    assert!(state_of(&s, "build-metrics")["error"].is_null());
}

#[test]
fn plugin_test_runs_a_native_plugin_in_a_host_process_once_the_user_config_allows_native_plugins() {
    let Some(dir) = native("examples/build-metrics-native") else {
        return;
    };
    let path = dir.to_str().expect("a UTF-8 path");
    let s = Scenario::new();
    // Trusted code: the kit honours `[native] allow` like a run does.
    let out = s.run(&["plugin", "test", path]);
    out.expect_code(1);
    let text = out.stdout();
    assert!(
        text.contains("✗ start: plugin `build-metrics` is a native plugin")
            && text.contains("does not allow native plugins"),
        "{text}"
    );
    // Allowed, even in-daemon: the kit loads the library in a host process
    // of its own, and the plugin passes every check.
    std::fs::write(s.user_config_path(), "").ok();
    let s = s.user_config(IN_DAEMON);
    let out = s.run(&["plugin", "test", path]);
    out.success();
    let text = out.stdout();
    assert!(
        text.contains(
            "✓ start: the native library `libbuild_metrics.so` runs in its host process (pid "
        ),
        "{text}"
    );
    assert!(text.contains("✓ handshake: answered in "), "{text}");
    assert!(text.contains("✓ shutdown: answered, and exited"), "{text}");
    assert!(!text.contains('✗'), "{text}");
    assert!(text.trim_end().ends_with("checks passed"), "{text}");
}

#[test]
fn a_native_plugin_not_named_by_path_must_be_signed_by_a_trusted_key() {
    let Some(dir) = native("examples/build-metrics-native") else {
        return;
    };
    // Given the library copied into the project's `.rush-plugins/` (no
    // `path:`, no signed install): trusted code nobody vouched for.
    let s = Scenario::new().user_config(ALLOW);
    for f in ["plugin.toml", "libbuild_metrics.so"] {
        let bytes = std::fs::read(dir.join(f)).expect("the built example");
        s.write(&format!(".rush-plugins/build-metrics/{f}"), bytes);
    }
    let s = s.rush(
        "plugins:\n  - name: build-metrics\n    type: native\n    required: true\n\
         tasks:\n  compile:\n    cmd: echo compiled\n",
    );
    let out = s.run(&["compile"]);
    out.expect_code(1);
    out.expect_stderr_containing("native plugin (trusted code) that no trusted key signed");
    out.expect_stderr_containing("`path:`");
    // Named by `path:` (development), the same library runs.
    let s = s.rush(&metrics_rush("native", &dir));
    metrics_scenario(&s);
}
