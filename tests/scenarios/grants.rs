//! Grants with consent: a plugin gets what its manifest declares and the
//! user granted, less what the user config denies. Without a terminal an
//! ungranted plugin is not started (the run says how to grant it); on a
//! terminal the CLI asks; `plugin grant`, `plugin revoke`, the grants
//! file, the user config for CI.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use taskrush_tests::{Pty, Scenario, wait_timeout, wait_until};

/// The recording fixture as `.rush-plugins/NAME/`, asking to write into
/// the project and for `TOKEN` (plus `extra` environment), not granted.
fn ungranted(s: &Scenario, name: &str, version: &str, extra: &[&str]) {
    s.write(
        &format!(".rush-plugins/{name}/main.py"),
        std::fs::read(super::plugins::fixtures().join("fixture.py")).expect("fixture.py"),
    );
    let env: Vec<String> = std::iter::once("TOKEN")
        .chain(extra.iter().copied())
        .map(|e| format!("\"{e}\""))
        .collect();
    s.write(
        &format!(".rush-plugins/{name}/plugin.toml"),
        format!(
            "name = \"{name}\"\nversion = \"{version}\"\n\
             entry_point = [\"python3\", \"-I\", \"-u\", \"main.py\", \"good\", \"{version}\"]\n\
             taskrush_version = \">=0.3\"\n\n[permissions]\nfilesystem = [\".\"]\nenvironment = [{}]\n",
            env.join(", ")
        ),
    );
}

/// A project whose plugin `p` (required or not) records its calls.
fn project(required: bool) -> Scenario {
    let s = Scenario::new();
    ungranted(&s, "p", "1.0.0", &[]);
    let rec = s.project().join("rec.jsonl").display().to_string();
    s.env("REC", &rec).env("TOKEN", "t0k3n").rush(&format!(
        "plugins:\n  - {{name: p, required: {required}, config: {{record: '${{REC}}'}}}}\n\
         tasks:\n  build:\n    cmd: echo built\n  test:\n    cmd: echo tested\n    depends_on: [build]\n"
    ))
}

fn records(s: &Scenario) -> Vec<Value> {
    s.read("rec.jsonl")
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn calls(s: &Scenario) -> usize {
    records(s)
        .iter()
        .filter(|r| r["hook"] == "before_task")
        .count()
}

fn info(s: &Scenario) -> Value {
    let out = s.run(&["plugin", "info", "p", "--json"]);
    out.success();
    serde_json::from_str(&out.stdout()).expect("plugin info JSON")
}

/// The kinds of the audit records, once one of kind `want` is written
/// (the daemon writes them on a thread of their own: waited for, bounded).
fn audit_kinds(s: &Scenario, want: &str) -> Vec<String> {
    let read = || -> Vec<String> {
        let out = s.run(&["plugin", "audit", "--json"]);
        out.success();
        out.stdout()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|r| r["kind"].as_str().map(str::to_owned))
            .collect()
    };
    wait_until(Duration::from_secs(10), || read().iter().any(|k| k == want));
    read()
}

#[test]
fn without_a_terminal_an_ungranted_optional_plugin_is_skipped_with_the_grant_command_in_one_line() {
    let s = project(false);
    let out = s.run(&["test"]);
    out.expect_stdout("built\ntested\n").success();
    // One line for the whole run, naming what it asks for and the command.
    out.expect_stderr(
        "plugin `p`: was not started: it asks for permissions not granted yet \
         (filesystem `.`, environment `TOKEN`); to grant them, run `taskrush plugin grant p`; \
         its hooks are skipped (the plugin is not required)\n",
    );
    assert_eq!(calls(&s), 0, "the plugin was started");
    let i = info(&s);
    assert_eq!(i["state"], "not_started");
    assert_eq!(i["needs_grant"], true);
    let list = s.run(&["plugin", "list"]);
    assert!(
        list.stdout().contains("needs a grant")
            && list.stdout().contains(
                "`p` asks for permissions not granted yet: run `taskrush plugin grant p`"
            ),
        "{}",
        list.stdout()
    );
}

#[test]
fn without_a_terminal_an_ungranted_required_plugin_fails_its_tasks_with_the_grant_command() {
    let s = project(true);
    let out = s.run(&["build"]);
    out.expect_stdout("").expect_code(1);
    out.expect_stderr_starting(
        "error: task `build` failed: plugin `p` was not started: it asks for permissions not granted yet \
         (filesystem `.`, environment `TOKEN`); to grant them, run `taskrush plugin grant p`",
    );
    assert_eq!(calls(&s), 0, "the plugin was started");
}

#[test]
fn plugin_grant_needs_yes_without_a_terminal_and_then_the_plugin_runs() {
    let s = project(true);
    let out = s.run(&["plugin", "grant", "p"]);
    out.expect_code(2);
    out.expect_stderr(
        "error: plugin `p` asks for filesystem `.`, environment `TOKEN`; without a terminal nothing can be asked\n\
         hint: to grant it, run `taskrush plugin grant p --yes`\n",
    );
    let out = s.run(&["plugin", "grant", "p", "--yes"]);
    out.success();
    assert!(
        out.stdout()
            .starts_with("granting `p`:\n  filesystem: .\n  environment: TOKEN\ngranted `p` for `"),
        "{}",
        out.stdout()
    );
    s.run(&["build"])
        .expect_stdout("built\n")
        .expect_stderr("")
        .success();
    let before = records(&s)
        .into_iter()
        .find(|r| r["hook"] == "before_task")
        .expect("a before_task call");
    assert_eq!(before["env_vars"], serde_json::json!({"TOKEN": "t0k3n"}));
    // Granting again: nothing to grant.
    s.run(&["plugin", "grant", "p"])
        .expect_stdout("plugin `p` has what it asks for: nothing to grant\n")
        .success();
    let kinds = audit_kinds(&s, "grant_given");
    assert!(kinds.contains(&"grant_given".to_owned()), "{kinds:?}");
}

#[test]
fn grants_survive_a_daemon_restart_in_a_private_file() {
    let s = project(true);
    s.run(&["plugin", "grant", "p", "--yes"]).success();
    let file = s.root().join("run").join("grants.json");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&file)
        .expect("the grants file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    let stored: Value =
        serde_json::from_slice(&std::fs::read(&file).expect("read grants")).expect("JSON");
    let g = &stored["grants"][0];
    assert_eq!(g["plugin"], "p");
    assert_eq!(
        g["permissions"]["environment"],
        serde_json::json!(["TOKEN"])
    );
    assert_eq!(g["sha256"].as_str().map(str::len), Some(64));

    s.run(&["daemon", "stop"]).success();
    s.run(&["build"])
        .expect_stdout("built\n")
        .expect_stderr("")
        .success();
    assert_eq!(calls(&s), 1);

    // A grant edited by hand no longer matches its hash: ignored.
    let text = std::fs::read_to_string(&file)
        .expect("read grants")
        .replace("\"TOKEN\"", "\"OTHER\"");
    std::fs::write(&file, text).expect("tamper");
    s.run(&["daemon", "stop"]).success();
    let out = s.run(&["build"]);
    out.expect_code(1);
    out.expect_stderr_containing("run `taskrush plugin grant p`");
}

#[test]
fn revoking_a_grant_stops_the_plugin_and_it_is_not_started_again() {
    let s = project(false);
    s.run(&["plugin", "grant", "p", "--yes"]).success();
    s.run(&["build"]).expect_stderr("").success();
    let pid = info(&s)["pid"].as_u64().expect("a running plugin");
    s.run(&["plugin", "revoke", "p"])
        .expect_stdout("revoked the grant of `p` for this project; it is stopped\n")
        .success();
    assert!(
        wait_until(Duration::from_secs(10), || taskrush_tests::process_state(
            pid as u32
        )
        .is_none_or(|st| st == 'Z' || st == 'X')),
        "the plugin process {pid} still runs"
    );
    let out = s.run(&["build"]);
    out.expect_stdout("built\n").success();
    out.expect_stderr_containing("run `taskrush plugin grant p`");
    assert_eq!(calls(&s), 1);
    let kinds = audit_kinds(&s, "grant_revoked");
    assert!(kinds.contains(&"grant_revoked".to_owned()), "{kinds:?}");
}

#[test]
fn a_user_config_grant_lets_ci_run_without_prompting() {
    let s = project(true);
    let root = s.project().canonicalize().expect("project");
    let s = s.user_config(&format!(
        "[[grants]]\nproject = \"{}\"\nplugin = \"p\"\nfilesystem = [\".\"]\nenvironment = [\"TOKEN\"]\n",
        root.display()
    ));
    s.run(&["build"])
        .expect_stdout("built\n")
        .expect_stderr("")
        .success();
    assert_eq!(calls(&s), 1);
    let i = info(&s);
    assert_eq!(i["granted"]["environment"], serde_json::json!(["TOKEN"]));
    assert!(i.get("pending").is_none(), "{i}");
}

#[test]
fn a_user_config_deny_removes_a_variable_even_when_granted() {
    let s = project(true).user_config("[deny]\nenvironment = [\"TOKEN\"]\n");
    s.run(&["plugin", "grant", "p", "--yes"]).success();
    s.run(&["build"])
        .expect_stdout("built\n")
        .expect_stderr("")
        .success();
    let before = records(&s)
        .into_iter()
        .find(|r| r["hook"] == "before_task")
        .expect("a before_task call");
    let env: Vec<&str> = before["env"]
        .as_array()
        .expect("env")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(!env.contains(&"TOKEN"), "{env:?}");
    assert_eq!(before["env_vars"], serde_json::json!({}));
    let i = info(&s);
    assert_eq!(i["denied"]["environment"], serde_json::json!(["TOKEN"]));
    assert_eq!(i["effective"]["environment"], serde_json::json!([]));
    let text = s.run(&["plugin", "info", "p"]);
    assert!(
        text.stdout().contains("    denied     TOKEN\n"),
        "{}",
        text.stdout()
    );
}

#[test]
fn a_bad_user_config_is_reported_with_its_file_and_line_and_the_last_good_one_stays() {
    let s = project(true).user_config("[[grants]]\nproject = \"*\"\nplugin = \"p\"\nall = true\n");
    s.run(&["build"]).expect_stderr("").success();
    let path = s.user_config_path();
    std::fs::write(
        &path,
        "[[grants]]\nproject = \"*\"\nplugin = \"p\"\nall = yes\n",
    )
    .expect("write");
    let out = s.run(&["build"]);
    out.expect_stdout("built\n").success();
    out.expect_stderr_containing(&format!(
        "warning: in the user config `{}`, line 4: ",
        path.display()
            .to_string()
            .replace(&s.root().display().to_string(), "[TMP]")
    ));
    out.expect_stderr_containing("the last good user config stays in force");
}

#[test]
fn user_config_enforcement_required_refuses_a_plugin_that_cannot_be_sandboxed() {
    let s = project(true).grant("p").user_config(
        "enforcement = \"required\"\n[[grants]]\nproject = \"*\"\nplugin = \"p\"\nall = true\n",
    );
    s.start_daemon(&[("TASKRUSH_SANDBOX_NO_LANDLOCK", "1")]);
    let out = s.run(&["build"]);
    out.expect_code(1);
    out.expect_stderr_containing("the user config `");
    out.expect_stderr_containing("says `enforcement = \"required\"`");
    out.expect_stderr_containing("filesystem: not enforced");
}

#[test]
fn a_widening_edit_keeps_the_old_version_serving_until_plugin_grant_shows_and_accepts_the_difference()
 {
    let s = project(false);
    s.run(&["plugin", "grant", "p", "--yes"]).success();
    s.run(&["build"]).expect_stderr("").success();
    let mut events = s.events();
    ungranted(&s, "p", "2.0.0", &["AWS_SECRET_ACCESS_KEY"]);
    events.wait_kind("plugin_reload_refused");

    // Served by version 1; the run says why in one line.
    let out = s.run(&["build"]);
    out.expect_stdout("built\n").success();
    out.expect_stderr(
        "plugin `p`: its new version asks for more permissions (environment `AWS_SECRET_ACCESS_KEY`) \
         and was not started; the running version keeps serving. To grant them, run \
         `taskrush plugin grant p`; or revert the manifest's `permissions`\n",
    );
    let version = |s: &Scenario| {
        records(s)
            .into_iter()
            .rfind(|r| r["hook"] == "before_task")
            .map(|r| r["version"].clone())
    };
    assert_eq!(version(&s), Some("1.0.0".into()));
    // `plugin restart` grants nothing, and keeps version 1 serving.
    let out = s.run(&["plugin", "restart", "p"]);
    out.expect_code(1);
    out.expect_stderr_starting(
        "error: plugin `p` was not started: it asks for permissions not granted yet \
         (environment `AWS_SECRET_ACCESS_KEY`); to grant them, run `taskrush plugin grant p`; it was not restarted\n",
    );
    s.run(&["build"]).expect_stdout("built\n").success();
    assert_eq!(version(&s), Some("1.0.0".into()));
    let i = info(&s);
    assert_eq!(
        i["pending"]["environment"],
        serde_json::json!(["AWS_SECRET_ACCESS_KEY"])
    );

    // `plugin grant` shows only the difference, and swaps version 2 in.
    let out = s.run(&["plugin", "grant", "p", "--yes"]);
    out.success();
    assert!(
        out.stdout()
            .starts_with("granting `p`:\n  environment: AWS_SECRET_ACCESS_KEY\ngranted"),
        "{}",
        out.stdout()
    );
    s.run(&["build"])
        .expect_stdout("built\n")
        .expect_stderr("")
        .success();
    assert_eq!(version(&s), Some("2.0.0".into()));

    // Narrowing needs no consent.
    ungranted(&s, "p", "3.0.0", &[]);
    events.wait_for("the narrowed version", |e| {
        e["event"] == "plugin_restarted" && e["version"] == "3.0.0"
    });
    s.run(&["build"]).expect_stderr("").success();
    assert_eq!(version(&s), Some("3.0.0".into()));
}

#[test]
fn plugin_info_shows_declared_granted_and_enforced_permissions() {
    let s = project(false);
    let i = info(&s);
    assert_eq!(
        i["manifest"]["permissions"]["environment"],
        serde_json::json!(["TOKEN"])
    );
    assert!(i.get("granted").is_none(), "{i}");
    assert_eq!(i["pending"]["filesystem"], serde_json::json!(["."]));
    s.run(&["plugin", "grant", "p", "--yes"]).success();
    let i = info(&s);
    assert_eq!(i["granted"]["filesystem"], serde_json::json!(["."]));
    assert_eq!(i["effective"]["environment"], serde_json::json!(["TOKEN"]));
    assert!(i["enforcement"]["filesystem"].is_string(), "{i}");
    let text = s.run(&["plugin", "info", "p"]);
    text.success();
    assert!(
        text.stdout().contains(
            "  environment\n    declared   TOKEN\n    granted    TOKEN\n    effective  TOKEN\n    enforced   "
        ),
        "{}",
        text.stdout()
    );
}

/// Run `taskrush ARGS` on a terminal, typing `answer` once `prompt` shows.
/// Returns what the terminal showed and the exit code.
fn answer_in_terminal(s: &Scenario, args: &[&str], prompt: &str, answer: &[u8]) -> (String, i32) {
    let pty = Pty::open();
    let mut c = s.command(args);
    c.stdin(pty.slave.try_clone().expect("dup"))
        .stdout(pty.slave.try_clone().expect("dup"))
        .stderr(pty.slave.try_clone().expect("dup"));
    let mut child = c.spawn().expect("spawn taskrush");
    drop(c);
    drop(pty.slave);
    let shown = Arc::new(Mutex::new(Vec::new()));
    let mut master_r = pty.master.try_clone().expect("dup master");
    let sink = shown.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = master_r.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().expect("lock").extend_from_slice(&buf[..n]);
        }
    });
    let text = |shown: &Arc<Mutex<Vec<u8>>>| {
        String::from_utf8_lossy(&shown.lock().expect("lock")).into_owned()
    };
    assert!(
        wait_until(Duration::from_secs(20), || text(&shown).contains(prompt)),
        "no prompt; the terminal showed:\n{}",
        text(&shown)
    );
    let mut m = pty.master.try_clone().expect("dup master");
    m.write_all(answer).expect("type");
    let status = wait_timeout(&mut child, Duration::from_secs(30)).unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "taskrush did not finish; the terminal showed:\n{}",
            text(&shown)
        )
    });
    assert!(
        wait_until(Duration::from_secs(10), || reader.is_finished()),
        "the terminal was never released"
    );
    (
        text(&shown).replace("\r\n", "\n"),
        status.code().unwrap_or(-1),
    )
}

#[test]
fn on_a_terminal_the_cli_asks_and_yes_grants_the_plugin_which_then_runs() {
    let s = project(true);
    let (shown, code) = answer_in_terminal(&s, &["build"], "[y/N] ", b"y\n");
    assert!(
        shown.contains(
            "plugin `p` asks for these permissions:\n  filesystem: .\n  environment: TOKEN\n\
             it can also read the project's files, files such as `.env` included\n\
             grant them to `p` for this project? [y/N] "
        ),
        "{shown}"
    );
    assert_eq!(code, 0, "{shown}");
    assert!(shown.contains("built\n"), "{shown}");
    assert_eq!(calls(&s), 1);
    // Granted for good: no question the next time.
    s.run(&["build"]).expect_stderr("").success();
}

#[test]
fn on_a_terminal_no_records_a_refusal_and_the_run_goes_on_without_the_plugin() {
    let s = project(false);
    let (shown, code) = answer_in_terminal(&s, &["build"], "[y/N] ", b"n\n");
    assert_eq!(code, 0, "{shown}");
    assert!(
        shown.contains("not granted: `p` is not started, its hooks are skipped; grant it later with `taskrush plugin grant p`"),
        "{shown}"
    );
    assert!(shown.contains("built\n"), "{shown}");
    assert_eq!(calls(&s), 0);
    let kinds = audit_kinds(&s, "grant_refused");
    assert!(kinds.contains(&"grant_refused".to_owned()), "{kinds:?}");
}

#[test]
fn a_plugin_command_of_an_ungranted_plugin_says_how_to_grant_it() {
    let s = project(false);
    let out = s.run(&["greet"]);
    out.expect_code(1);
    out.expect_stderr_containing("`p` asks for permissions not granted yet");
    out.expect_stderr_containing("`taskrush plugin grant p`");
}

#[test]
fn a_granted_command_is_stored_as_the_program_it_resolved_to_on_the_path() {
    let s = project(false);
    s.write(
        ".rush-plugins/p/plugin.toml",
        "name = \"p\"\nversion = \"1.0.0\"\n\
         entry_point = [\"python3\", \"-I\", \"-u\", \"main.py\", \"good\", \"1.0.0\"]\n\
         taskrush_version = \">=0.3\"\n\n[permissions]\nprocess = [\"sh\"]\n",
    );
    s.run(&["plugin", "grant", "p", "--yes"]).success();
    let file = s.root().join("run").join("grants.json");
    let stored: Value =
        serde_json::from_slice(&std::fs::read(&file).expect("read grants")).expect("JSON");
    let sh = stored["grants"][0]["resolved"]["sh"]
        .as_str()
        .expect("`sh` resolved")
        .to_owned();
    assert!(
        std::path::Path::new(&sh).is_absolute() && std::path::Path::new(&sh).is_file(),
        "{sh}"
    );
    assert_eq!(info(&s)["effective"]["process"], serde_json::json!(["sh"]));
    audit_kinds(&s, "grant_given");
    let audit = s.run(&["plugin", "audit", "p"]);
    assert!(
        audit.stdout().contains("granted process `sh`"),
        "{}",
        audit.stdout()
    );
}

#[test]
fn plugin_grant_of_an_invalid_manifest_names_the_error_and_fails() {
    let s = project(false);
    s.write(
        ".rush-plugins/p/plugin.toml",
        "name = \"p\"\nversion = \"1.0.0\"\nentry_point = \"not a list\"\n",
    );
    let out = s.run(&["plugin", "grant", "p", "--yes"]);
    assert_eq!(out.code(), 1, "{}{}", out.stdout(), out.stderr());
    let err = out.stderr();
    assert!(
        err.contains("plugin `p` cannot be granted: invalid plugin manifest")
            && err.contains("plugin.toml:3`"),
        "the error names the file and line: {err}"
    );
    assert!(
        !out.stdout().contains("nothing to grant"),
        "{}",
        out.stdout()
    );
}

#[test]
fn plugin_revoke_without_a_stored_grant_says_so_and_audits_nothing() {
    let s = project(false);
    let out = s.run(&["plugin", "revoke", "p"]);
    out.success();
    assert!(
        out.stdout().contains("had no grant stored"),
        "{}",
        out.stdout()
    );
    let audit = s.run(&["plugin", "audit", "--json"]);
    audit.success();
    assert!(
        !audit.stdout().contains("grant_revoked"),
        "{}",
        audit.stdout()
    );
}
