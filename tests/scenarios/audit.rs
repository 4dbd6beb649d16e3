//! The plugin audit trail (`audit.jsonl` beside the daemon's log) and
//! secrets that never leak: a canary token given to plugins through their
//! `config` and to a task through its `env` must show up in no sink.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use taskrush_tests::{Scenario, wait_until};

use super::plugins::plugin;

const CANARY: &str = "canary-7f3a";

/// A plugin that repeats its `config.token` everywhere it can: on stderr,
/// in a `log` notification and in the veto it answers to `before_task`.
fn leaky_plugin(s: &Scenario) {
    s.write(
        ".rush-plugins/leaky/plugin.toml",
        "name = \"leaky\"\nversion = \"1.0.0\"\nentry_point = [\"python3\", \"-I\", \"-u\", \"main.py\"]\n\
         taskrush_version = \">=0.3\"\n",
    );
    s.write(
        ".rush-plugins/leaky/main.py",
        r#"import json, sys
token = ""
def send(m):
    sys.stdout.write(json.dumps(m) + "\n"); sys.stdout.flush()
for line in sys.stdin:
    m = json.loads(line); mid = m.get("id"); p = m.get("params") or {}
    if m["method"] == "initialize":
        token = (p.get("config") or {}).get("token", "")
        send({"jsonrpc": "2.0", "id": mid, "result": {"name": "leaky", "version": "1.0.0",
              "protocol": 1, "hooks": ["before_task"], "commands": []}})
    elif m["method"] == "before_task":
        sys.stderr.write("leaky: my token is %s\n" % token); sys.stderr.flush()
        send({"jsonrpc": "2.0", "method": "log", "params": {"level": "warn", "message": "token " + token}})
        send({"jsonrpc": "2.0", "id": mid, "error": {"code": -32010, "message": "refused, token " + token}})
    elif m["method"] == "shutdown":
        send({"jsonrpc": "2.0", "id": mid, "result": None}); break
    elif mid is not None:
        send({"jsonrpc": "2.0", "id": mid, "result": None})
"#,
    );
}

fn audit_path(s: &Scenario) -> PathBuf {
    s.root().join("run").join("audit.jsonl")
}

fn audit_records(s: &Scenario) -> Vec<Value> {
    std::fs::read_to_string(audit_path(s))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("an audit record is JSON"))
        .collect()
}

fn has(records: &[Value], kind: &str, plugin: &str) -> bool {
    records
        .iter()
        .any(|r| r["kind"] == kind && r["plugin"] == plugin)
}

#[test]
fn the_canary_secret_appears_in_no_sink_but_reaches_the_plugin_and_the_task() {
    let s = Scenario::new();
    plugin(&s, "rec", "good");
    plugin(&s, "early", "exit-early");
    leaky_plugin(&s);
    let rec = s.project().join("rec.jsonl").display().to_string();
    let s = s.env("TOKEN", CANARY).env("REC", &rec).rush(
        "
plugins:
  - name: rec
    config: {record: '${REC}', token: '${TOKEN}', commands: [greet]}
  - name: early
  - name: leaky
    config: {token: '${TOKEN}'}
tasks:
  build:
    cmd: test \"$API\" = canary-7f3a && echo built
    env: {API: '${TOKEN}'}
  guarded:
    cmd: echo guarded
",
    );
    s.start_daemon(&[]);
    let mut events = s.events();
    let mut follower = s.command(&["events", "--json"]);
    follower
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let follower = follower.spawn().expect("start `taskrush events --json`");
    // Subscribed: the raw stream, the follower and this status call.
    assert!(wait_until(Duration::from_secs(10), || {
        s.daemon_status().is_some_and(|st| st["clients"] == 3)
    }));
    let mut outputs = Vec::new();

    // `leaky` vetoes every task: its veto is shown with the token masked.
    let out = s.run(&["build"]);
    out.expect_code(1);
    assert!(
        out.stderr()
            .contains("vetoed by plugin `leaky`: refused, token ***"),
        "{}",
        out.stderr()
    );
    outputs.push(out.stderr());
    outputs.push(out.stdout());
    // Its stderr, kept for `plugin info`, is masked too.
    let info = s.run(&["plugin", "info", "leaky", "--json"]);
    info.success();
    assert!(
        info.stdout().contains("my token is ***"),
        "{}",
        info.stdout()
    );
    outputs.push(info.stdout());

    // Without the vetoer the task sees its secret (`test` passes).
    s.write(
        ".rush",
        s.read(".rush")
            .replace("  - name: leaky\n    config: {token: '${TOKEN}'}\n", ""),
    );
    let out = s.run(&["build"]);
    out.expect_stdout("built\n").success();
    outputs.push(out.stderr());

    for args in [
        &["greet", "--token", CANARY][..],
        &["greet", &format!("--token={CANARY}")],
        &["greet", CANARY],
    ] {
        let out = s.run(args);
        out.success();
        // The plugin's own stdout may repeat what it was given: only what
        // the host says is checked.
        outputs.push(out.stderr());
    }
    for args in [
        &["daemon", "status", "--json"][..],
        &["plugin", "list", "--json"],
        &["plugin", "info", "rec", "--json"],
        &["plugin", "info", "early", "--json"],
    ] {
        let out = s.run(args);
        out.success();
        outputs.push(out.stdout());
        outputs.push(out.stderr());
    }
    // The plugin itself got the token, in its `config`.
    assert!(s.read("rec.jsonl").contains(CANARY));

    s.run(&["daemon", "stop"]).success();
    while events.next(Duration::from_millis(500)).is_some() {}
    assert!(!events.seen.is_empty());
    let followed = s.finish(follower, Duration::from_secs(20));
    assert!(
        followed.stdout().contains("\"plugin_failed\""),
        "{}",
        followed.stdout()
    );
    outputs.push(followed.stdout());
    outputs.push(followed.stderr());

    let audit = std::fs::read_to_string(audit_path(&s)).expect("the audit trail");
    let log = std::fs::read_to_string(s.log()).expect("the daemon log");
    assert!(log.contains("my token is ***"), "{log}");
    for (sink, text) in [
        ("the audit trail", audit.clone()),
        ("the daemon log", log),
        (
            "the event stream",
            serde_json::to_string(&events.seen).unwrap_or_default(),
        ),
        ("the CLI", outputs.join("\n")),
    ] {
        assert!(
            !text.contains(CANARY),
            "the canary leaked into {sink}:\n{text}"
        );
    }
    let records = audit_records(&s);
    let commands: Vec<&Value> = records.iter().filter(|r| r["kind"] == "command").collect();
    assert_eq!(commands.len(), 3, "{audit}");
    assert_eq!(commands[0]["args"], serde_json::json!(["--token", "***"]));
    assert_eq!(commands[1]["args"], serde_json::json!(["--token=***"]));
    assert_eq!(commands[2]["args"], serde_json::json!(["***"]));
    let mode = std::fs::metadata(audit_path(&s))
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .expect("stat the audit trail");
    assert_eq!(mode, 0o600);
}

#[test]
fn spawns_exits_vetoes_and_required_failures_are_audited_and_listed_by_plugin() {
    let s = Scenario::new();
    plugin(&s, "guard", "good");
    plugin(&s, "crashy", "crash");
    let s = s.rush(
        "
plugins:
  - name: guard
    config: {veto: [deploy]}
tasks:
  deploy:
    cmd: echo deployed
  test:
    cmd: echo tested
",
    );
    s.run(&["deploy"]).expect_code(1);
    s.run(&["test"]).expect_stdout("tested\n").success();
    s.write(
        ".rush",
        "plugins:\n  - name: crashy\n    required: true\ntasks:\n  t:\n    cmd: echo ran\n",
    );
    s.run(&["t"]).expect_code(1);
    s.run(&["daemon", "stop"]).success();
    // The `exited` record is written when the process is reaped.
    assert!(wait_until(Duration::from_secs(10), || {
        let r = audit_records(&s);
        has(&r, "exited", "guard") && has(&r, "exited", "crashy")
    }));
    let records = audit_records(&s);
    let spawned = records
        .iter()
        .find(|r| r["kind"] == "spawned" && r["plugin"] == "guard")
        .expect("a spawned record");
    let root = s.project().canonicalize().expect("the project root");
    assert_eq!(spawned["root"], root.display().to_string());
    assert!(spawned["pid"].as_u64().is_some());
    assert_eq!(spawned["entry_sha256"].as_str().map(str::len), Some(64));
    assert_eq!(spawned["manifest_sha256"].as_str().map(str::len), Some(64));
    assert_eq!(
        spawned["granted"]["environment"],
        serde_json::json!(["TOKEN"])
    );
    // What the sandbox achieved, per kind (all of it on a Linux kernel with
    // Landlock; a level says why otherwise).
    for kind in [
        "filesystem",
        "process",
        "network",
        "environment",
        "daemon_socket",
    ] {
        assert!(
            spawned["enforcement"][kind].is_string(),
            "no level for `{kind}`: {}",
            spawned["enforcement"]
        );
    }
    assert!(spawned["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    let veto = records
        .iter()
        .find(|r| r["kind"] == "veto")
        .expect("a veto record");
    assert_eq!(veto["plugin"], "guard");
    assert_eq!(veto["task"], "deploy");
    assert_eq!(veto["message"], "task `deploy` is not allowed today");
    let failed = records
        .iter()
        .find(|r| r["kind"] == "required_failed")
        .expect("a required_failed record");
    assert_eq!(failed["plugin"], "crashy");
    assert_eq!(failed["task"], "t");
    let crashed = records
        .iter()
        .find(|r| r["kind"] == "exited" && r["plugin"] == "crashy")
        .expect("an exited record");
    assert_eq!(crashed["status"], 1);

    // The CLI reads the file itself: no daemon runs now.
    let out = s.run(&["plugin", "audit", "guard", "--json"]);
    out.success();
    let lines: Vec<Value> = out
        .stdout()
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON Lines"))
        .collect();
    assert!(!lines.is_empty() && lines.iter().all(|r| r["plugin"] == "guard"));
    let table = s.run(&["plugin", "audit", "--since", "1h"]);
    table.success();
    let text = table.stdout();
    assert!(text.starts_with("TIME"), "{text}");
    assert!(
        text.contains("veto") && text.contains("task `deploy`: task `deploy` is not allowed today"),
        "{text}"
    );
    assert!(
        text.contains("crashy") && text.contains("exit code 1"),
        "{text}"
    );
    assert!(s.daemon_pid().is_none(), "`plugin audit` started a daemon");
    s.run(&["plugin", "audit", "--since", "2w"])
        .expect_code(2)
        .expect_stderr_containing("invalid duration `2w`");
}

/// A plugin (`main.py` in `.rush-plugins/NAME/`) that runs `on_hook`
/// (Python statements) in `before_task`, after answering it.
fn scripted_plugin(s: &Scenario, name: &str, on_hook: &str) {
    s.write(
        &format!(".rush-plugins/{name}/plugin.toml"),
        format!(
            "name = \"{name}\"\nversion = \"1.0.0\"\nentry_point = [\"python3\", \"-I\", \"-u\", \"main.py\"]\n\
             taskrush_version = \">=0.3\"\n"
        ),
    );
    s.write(
        &format!(".rush-plugins/{name}/main.py"),
        format!(
            r#"import json, os, sys, time
def send(m):
    sys.stdout.write(json.dumps(m) + "\n"); sys.stdout.flush()
for line in sys.stdin:
    m = json.loads(line); mid = m.get("id")
    if m["method"] == "initialize":
        send({{"jsonrpc": "2.0", "id": mid, "result": {{"name": "{name}", "version": "1.0.0",
              "protocol": 1, "hooks": ["before_task"], "commands": []}}}})
    elif m["method"] == "before_task":
        send({{"jsonrpc": "2.0", "id": mid, "result": None}})
{on_hook}
    elif mid is not None:
        send({{"jsonrpc": "2.0", "id": mid, "result": None}})
"#
        ),
    );
}

fn record<'a>(records: &'a [Value], kind: &str, plugin: &str) -> &'a Value {
    records
        .iter()
        .find(|r| r["kind"] == kind && r["plugin"] == plugin)
        .unwrap_or_else(|| panic!("no `{kind}` record of `{plugin}`: {records:?}"))
}

#[test]
fn plugins_that_exit_by_themselves_or_crash_are_audited_with_status_signal_and_cpu_time() {
    let s = Scenario::new();
    // Each burns about 0.3 s of CPU, then ends on its own.
    let burn =
        "        t = time.process_time()\n        while time.process_time() - t < 0.3: pass\n";
    scripted_plugin(&s, "quitter", &format!("{burn}        sys.exit(3)"));
    scripted_plugin(
        &s,
        "crasher",
        &format!("{burn}        os.kill(os.getpid(), 11)"),
    );
    plugin(&s, "steady", "good");
    let s = s.rush(
        "plugins:\n  - name: quitter\n  - name: crasher\n  - name: steady\ntasks:\n  t:\n    cmd: echo ran\n",
    );
    s.run(&["t"]).success().expect_stdout("ran\n");
    assert!(wait_until(Duration::from_secs(10), || {
        let r = audit_records(&s);
        has(&r, "exited", "quitter") && has(&r, "exited", "crasher")
    }));
    s.run(&["daemon", "stop"]).success();
    let records = audit_records(&s);
    let quitter = record(&records, "exited", "quitter");
    assert_eq!(quitter["status"], 3, "{quitter}");
    let crasher = record(&records, "exited", "crasher");
    assert_eq!(crasher["signal"], 11, "{crasher}");
    for r in [quitter, crasher] {
        // Read from its zombie, before it was reaped (no timing claim:
        // only that the CPU it burnt shows).
        assert!(r["cpu_ms"].as_u64().is_some_and(|ms| ms >= 100), "{r}");
        assert!(r["children_cpu_ms"].as_u64().is_some(), "{r}");
    }
    // Stopped by the host: its peak RSS was read before the stop.
    let steady = record(&records, "exited", "steady");
    assert!(
        steady["peak_rss_kib"].as_u64().is_some_and(|k| k > 0),
        "{steady}"
    );
    assert!(steady["cpu_ms"].as_u64().is_some(), "{steady}");
    let spawned = record(&records, "spawned", "steady");
    assert_eq!(
        spawned["limits"]["open_files"]["level"], "enforced",
        "{spawned}"
    );
}

#[test]
fn a_request_to_the_host_and_a_refused_start_are_audited() {
    let s = Scenario::new();
    scripted_plugin(
        &s,
        "asker",
        "        send({\"jsonrpc\": \"2.0\", \"id\": \"h1\", \"method\": \"env_get\", \"params\": {\"name\": \"HOME\"}})",
    );
    let s = s.rush("plugins:\n  - name: asker\ntasks:\n  t:\n    cmd: echo ran\n");
    s.run(&["t"]).success().expect_stdout("ran\n");
    assert!(wait_until(Duration::from_secs(10), || has(
        &audit_records(&s),
        "denied",
        "asker"
    )));
    let records = audit_records(&s);
    // Served and refused by the host-call server: no `environment`
    // grant for `HOME`.
    let denied = record(&records, "denied", "asker");
    assert_eq!(denied["call"], "env_get");
    assert_eq!(denied["permission"], "environment");
    assert_eq!(denied["item"], "HOME");

    // `enforcement = "required"` where Landlock is switched off.
    s.run(&["daemon", "stop"]).success();
    s.write(
        ".rush-plugins/asker/plugin.toml",
        s.read(".rush-plugins/asker/plugin.toml") + "enforcement = \"required\"\n",
    );
    s.start_daemon(&[("TASKRUSH_SANDBOX_NO_LANDLOCK", "1")]);
    let out = s.run(&["t"]);
    out.expect_stdout("ran\n");
    s.run(&["daemon", "stop"]).success();
    let records = audit_records(&s);
    let refused = record(&records, "start_refused", "asker");
    assert!(
        refused["why"]
            .as_str()
            .is_some_and(|w| w.contains("filesystem: not enforced")),
        "{refused}"
    );
}
