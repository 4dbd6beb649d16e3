//! The author's commands: `taskrush plugin new NAME --lang L` writes a
//! plugin that `plugin build` builds (where needed), that passes `plugin
//! test` at once, and whose hooks take effect in a real run once a `.rush`
//! names it by `path:`; its own test passes with its language's tool.
//!
//! The toolchains are the real ones (python3, node, go, cargo with the
//! `wasm32-wasip1` target); a missing one skips its scenario with the
//! reason printed. Builds get the user's tool caches (`CARGO_HOME`,
//! `RUSTUP_HOME`, `GOCACHE`, `GOPATH`), not the scenario's empty home.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use taskrush_tests::{Outcome, Scenario};

fn have(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The user's real home (the scenario's commands get a private one).
fn real_home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
}

/// The tool caches of the user, for builds run with the scenario's home.
fn tool_env() -> Vec<(String, String)> {
    let home = real_home();
    let var = |k: &str, default: PathBuf| {
        (
            k.to_owned(),
            std::env::var(k).unwrap_or_else(|_| default.display().to_string()),
        )
    };
    let mut env = vec![
        var("CARGO_HOME", home.join(".cargo")),
        var("RUSTUP_HOME", home.join(".rustup")),
        var("GOPATH", home.join("go")),
    ];
    let gocache = Command::new("go")
        .args(["env", "GOCACHE"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|s| !s.is_empty());
    if let Some(c) = gocache {
        env.push(("GOCACHE".into(), c));
    }
    // Rust plugins of every scenario share one target directory (each
    // builds the SDK once, not once per scenario).
    let target = super::plugins::repo()
        .join("target")
        .join("scenario-plugins");
    env.push(("CARGO_TARGET_DIR".into(), target.display().to_string()));
    env
}

/// `taskrush ARGS` with the tool caches, bounded by `limit`.
fn run_long(s: &Scenario, args: &[&str], limit: Duration) -> Outcome {
    let mut c = s.command(args);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in tool_env() {
        c.env(k, v);
    }
    let child = c.spawn().expect("spawn taskrush");
    s.finish(child, limit)
}

/// From `plugin new` to a run: new, build (`build`), test, then a `.rush`
/// that uses it by `path:` and blocks `deploy`.
fn new_to_run(lang: &str, build: bool) -> Scenario {
    let s = Scenario::new();
    let dir = s.project().join("demo");
    let dir = dir.display().to_string();
    let out = s.run(&["plugin", "new", "demo", "--lang", lang, "--dir", &dir]);
    out.success();
    assert!(
        out.stdout().contains("created plugin `demo`"),
        "{}",
        out.stdout()
    );
    for f in ["plugin.toml", "README.md"] {
        assert!(s.project().join("demo").join(f).is_file(), "no {f}");
    }
    if build {
        let out = run_long(&s, &["plugin", "build", &dir], Duration::from_secs(600));
        out.success();
        assert!(out.stdout().contains("built `"), "{}", out.stdout());
    }
    let out = s.run(&["plugin", "test", &dir]);
    out.success();
    assert!(out.stdout().contains("checks passed"), "{}", out.stdout());
    assert!(!out.stdout().contains('✗'), "{}", out.stdout());
    // A WebAssembly plugin says so in its `.rush` entry too.
    let kind = if lang == "rust-wasm" {
        "    type: wasm\n"
    } else {
        ""
    };
    s.write(
        ".rush",
        format!(
            "plugins:\n  - name: demo\n    path: ./demo\n{kind}    config:\n      block: [deploy]\n\
             tasks:\n  build:\n    cmd: echo building\n  deploy:\n    cmd: echo deploying\n  \
             broken:\n    cmd: exit 3\n"
        ),
    );
    // `before_task` let `build` run…
    s.run(&["build"]).success().expect_stdout("building\n");
    // …and refused `deploy`, as its config says.
    let out = s.run(&["deploy"]);
    assert_ne!(out.code(), 0, "deploy ran: {}", out.stdout());
    assert!(!out.stdout().contains("deploying"), "{}", out.stdout());
    out.expect_stderr_containing(
        "vetoed by plugin `demo`: `deploy` is blocked by demo (its `block` config)",
    );
    // A warning it logs in `after_task` shows in the run, with its name.
    let out = s.run(&["broken"]);
    out.expect_code(3);
    out.expect_stderr_containing("[demo] warning: broken failed with exit code 3\n");
    // Its command, and the lines it logged.
    s.run(&["demo", "there"])
        .success()
        .expect_stdout("hello from demo there\n");
    let logs = s.run(&["plugin", "logs", "demo"]);
    assert!(
        logs.stdout().contains("starting build"),
        "{}",
        logs.stdout()
    );
    s
}

/// The plugin's own test, with its language's tool, in its directory.
fn own_test(s: &Scenario, program: &str, args: &[&str]) {
    let mut c = Command::new(program);
    c.args(args)
        .current_dir(s.project().join("demo"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = c.output().expect("run the plugin's own test");
    assert!(
        out.status.success(),
        "`{program} {}` failed:\n{}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_new_python_plugin_passes_plugin_test_and_hooks_a_real_run() {
    let s = new_to_run("python", false);
    own_test(&s, "python3", &["-m", "unittest"]);
}

#[test]
fn a_new_node_plugin_passes_plugin_test_and_hooks_a_real_run() {
    if !have("node", "--version") {
        eprintln!("SKIPPED: `node` is not installed");
        return;
    }
    let s = new_to_run("node", false);
    own_test(&s, "node", &["--test"]);
}

#[test]
fn a_new_go_plugin_builds_passes_plugin_test_and_hooks_a_real_run() {
    if !have("go", "version") {
        eprintln!("SKIPPED: `go` is not installed");
        return;
    }
    let s = new_to_run("go", true);
    own_test(&s, "go", &["test", "./..."]);
}

/// The Rust standard library for `wasm32-wasip1` is installed.
fn wasm_target() -> bool {
    Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .is_some_and(|root| root.join("lib/rustlib/wasm32-wasip1").is_dir())
}

#[test]
fn a_new_rust_wasm_plugin_builds_passes_plugin_test_and_hooks_a_real_run() {
    if !wasm_target() {
        eprintln!(
            "SKIPPED: the Rust target `wasm32-wasip1` is not installed (rustup target add wasm32-wasip1)"
        );
        return;
    }
    new_to_run("rust-wasm", true);
}

/// Needs `export_plugin!` to emit `taskrush_plugin_main` off wasm32 (the
/// native-plugin work): until the SDK has it, the template cannot build and
/// this scenario says so and skips; from then on it runs.
#[test]
fn a_new_native_rust_plugin_builds_passes_plugin_test_and_hooks_a_real_run() {
    let sdk = super::plugins::repo().join("plugins-external/rust/src/lib.rs");
    let has_main = std::fs::read_to_string(&sdk).is_ok_and(|t| t.contains("taskrush_plugin_main"));
    if !has_main {
        eprintln!(
            "SKIPPED: the Rust SDK's `export_plugin!` does not emit `taskrush_plugin_main` yet \
             (native plugins): `plugin new --lang rust` writes a plugin that needs it"
        );
        return;
    }
    new_to_run("rust", true);
}

#[test]
fn plugin_new_refuses_a_bad_name_an_unknown_language_and_a_directory_in_use() {
    let s = Scenario::new();
    s.run(&["plugin", "new", "Bad_Name", "--lang", "python"])
        .expect_code(2)
        .expect_stderr_containing("`Bad_Name` is not a plugin name");
    let out = s.run(&["plugin", "new", "ok", "--lang", "cobol"]);
    assert_ne!(out.code(), 0);
    s.write("taken/file", "x");
    let dir = s.project().join("taken").display().to_string();
    s.run(&["plugin", "new", "ok", "--lang", "python", "--dir", &dir])
        .expect_stderr_containing("exists and is not empty");
}

#[test]
fn plugin_build_says_which_tool_is_missing_and_how_to_install_it() {
    let s = Scenario::new();
    let dir = s.project().join("demo").display().to_string();
    s.run(&["plugin", "new", "demo", "--lang", "go", "--dir", &dir])
        .success();
    let out = s.run_with(&["plugin", "build", &dir], |c| {
        c.env("PATH", "/nonexistent");
    });
    assert_ne!(out.code(), 0);
    out.expect_stderr_containing("`go` is not installed");
    out.expect_stderr_containing("hint: install Go");
}

#[test]
fn plugin_build_of_a_script_plugin_has_nothing_to_do() {
    let s = Scenario::new();
    let dir = s.project().join("demo").display().to_string();
    s.run(&["plugin", "new", "demo", "--lang", "python", "--dir", &dir])
        .success();
    let out = s.run(&["plugin", "build", &dir]);
    out.success();
    assert!(
        out.stdout().contains("nothing to build"),
        "{}",
        out.stdout()
    );
}

/// A plugin `fetcher` whose `before_task` fetches `http://blocked.test/x`
/// with the SDK's `http_request`, declaring `network` = `network`.
fn fetcher(s: &Scenario, network: &str) -> String {
    let sdk = super::plugins::repo().join("plugins-external/python");
    s.write(
        "fetcher/plugin.toml",
        format!(
            "name = \"fetcher\"\nversion = \"1.0.0\"\n\
             entry_point = [\"python3\", \"-I\", \"-u\", \"main.py\"]\n\
             taskrush_version = \">=0.3\"\n\n[permissions]\nnetwork = {network}\n"
        ),
    );
    s.write(
        "fetcher/main.py",
        format!(
            "import sys\nsys.path.insert(0, {:?})\n\
             from taskrush_plugin import Plugin, http_request\n\
             plugin = Plugin(\"fetcher\", \"1.0.0\")\n\
             @plugin.before_task\n\
             def fetch(ctx):\n    \
                 try:\n        \
                     http_request(\"GET\", \"http://blocked.test/x\", timeout=5)\n    \
                 except Exception as e:\n        \
                     plugin.warn(f\"fetch failed: {{e}}\")\n\
             sys.exit(plugin.run())\n",
            sdk.display().to_string()
        ),
    );
    s.project().join("fetcher").display().to_string()
}

#[test]
fn plugin_test_fails_a_plugin_that_reaches_a_host_its_manifest_does_not_declare() {
    let s = Scenario::new();
    let dir = fetcher(&s, "[]");
    let out = s.run(&["plugin", "test", &dir]);
    assert_eq!(out.code(), 1, "{}", out.stdout());
    let text = out.stdout();
    assert!(
        text.contains("✗ permissions: it did what its manifest's `[permissions]` do not cover"),
        "{text}"
    );
    assert!(
        text.contains("network: a connection to `blocked.test:80`"),
        "{text}"
    );
    assert!(
        text.contains("hint: add `network = [\"blocked.test\"]` (or `\"blocked.test:80\"`) under `[permissions]` in `plugin.toml`"),
        "{text}"
    );
    // Declared: the check passes (whether the host answers is not its
    // business).
    let dir = fetcher(&s, "[\"blocked.test\"]");
    let out = s.run(&["plugin", "test", &dir]);
    let text = out.stdout();
    assert!(
        text.contains(
            "✓ permissions: it used nothing beyond what its manifest's `[permissions]` declare"
        ),
        "{text}"
    );
    out.success();
}
