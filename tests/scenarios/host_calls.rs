//! Host calls answered for every plugin kind: external Python, Node and
//! Go plugins (requests on stdout, answers on stdin), the calls a host
//! does not offer, the task graph with ungranted values hidden, the
//! results of the current run, and plugins calling plugins through the
//! host (declared, granted, audited, cycles refused).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use taskrush_tests::{Scenario, wait_until};

use super::plugins::repo;

fn sdk(lang: &str) -> PathBuf {
    repo().join("plugins-external").join(lang)
}

fn have(tool: &str) -> bool {
    std::process::Command::new(tool)
        .arg(if tool == "go" { "version" } else { "--version" })
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A Python plugin `name` in `.rush-plugins/NAME/` using the SDK, with
/// `permissions` (TOML lines of `[permissions]`) and `body` (Python code
/// registering handlers on `plugin`), granted in the user config.
fn python_plugin(s: &Scenario, name: &str, permissions: &str, body: &str) {
    s.write(
        &format!(".rush-plugins/{name}/plugin.toml"),
        format!(
            "name = \"{name}\"\nversion = \"1.0.0\"\n\
             entry_point = [\"python3\", \"-I\", \"-u\", \"main.py\"]\n\
             taskrush_version = \">=0.3\"\n\n[permissions]\nfilesystem = [\"read:{}\"]\n{permissions}\n",
            sdk("python").display()
        ),
    );
    s.write(
        &format!(".rush-plugins/{name}/main.py"),
        format!(
            "import json, os, sys\nsys.path.insert(0, {:?})\n\
             from taskrush_plugin import CommandResult, HostError, PermissionDenied, Plugin\n\
             plugin = Plugin({name:?}, \"1.0.0\")\n{body}\nsys.exit(plugin.run())\n",
            sdk("python").display().to_string()
        ),
    );
    s.grant_in_config(name);
}

fn audit_records(s: &Scenario) -> Vec<Value> {
    std::fs::read_to_string(s.root().join("run").join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("an audit record is JSON"))
        .collect()
}

#[test]
fn a_python_plugin_reads_the_task_graph_as_written_with_ungranted_env_values_hidden() {
    let s = Scenario::new();
    python_plugin(
        &s,
        "grapher",
        "environment = [\"PUBLIC\"]",
        r#"
@plugin.command("graph")
def graph(args, cwd):
    g = plugin.host.task_graph()
    lines = []
    for name in sorted(g.tasks):
        t = g.tasks[name]
        env = ",".join(e.name + ("=" + e.value if "value" in e else "(hidden)") for e in t.env)
        lines.append(f"{name}: {t.get('command')} deps={t.deps} env={env}")
    lines.append(f"edges: {g.edges}")
    return "\n".join(lines)
"#,
    );
    let s = s.rush(
        "plugins:\n  - name: grapher\n\
         tasks:\n  build:\n    cmd: make all\n    env:\n      PUBLIC: p1\n      SECRET: s1\n\
         \x20 test:\n    cmd: echo test\n    deps: [build]\n",
    );
    s.run(&["graph"]).success().expect_stdout(
        "build: make all deps=[] env=PUBLIC=p1,SECRET(hidden)\n\
         test: echo test deps=['build'] env=\n\
         edges: [['test', 'build']]\n",
    ); // The file changes, the plugin's entry does not (it keeps running):
    // the graph is the one the request sees.
    let pid = s
        .daemon_status()
        .and_then(|st| st["plugins"][0]["pid"].as_u64());
    assert!(pid.is_some(), "grapher runs");
    s.write(
        ".rush",
        "plugins:\n  - name: grapher\ntasks:\n  lint:\n    cmd: ${LINTER} .\n",
    );
    s.run(&["graph"])
        .success()
        .expect_stdout("lint: ${LINTER} . deps=[] env=\nedges: []\n");
    assert_eq!(
        s.daemon_status()
            .and_then(|st| st["plugins"][0]["pid"].as_u64()),
        pid,
        "the plugin was not restarted"
    );
}

#[test]
fn a_host_call_the_host_does_not_offer_fails_at_once_in_the_plugin() {
    let s = Scenario::new();
    python_plugin(
        &s,
        "newer",
        "",
        r#"
@plugin.command("future")
def future(args, cwd):
    offered = "task_graph" in plugin.init_params.host_methods
    try:
        plugin.host_call("cache_stats", {})
    except HostError as e:
        return f"task_graph offered: {offered}; {e}"
    return "sent"
"#,
    );
    let s = s.rush("plugins:\n  - name: newer\ntasks:\n  t:\n    cmd: echo t\n");
    s.run(&["future"]).success().expect_stdout(
        "task_graph offered: True; the host does not offer `cache_stats`; it is older than this plugin\n",
    );
}

#[test]
fn task_results_list_the_tasks_of_the_current_run_that_ended_so_far() {
    let s = Scenario::new();
    python_plugin(
        &s,
        "results",
        "",
        r#"
@plugin.after_task
def after(ctx, result):
    if ctx.task_name != "last":
        return
    r = plugin.host.task_results()
    lines = [f"same run: {r.run_id == ctx.run_id}"]
    lines += [f"{t.task} {t.status} {t.get('exit_code')} cached={t.cached}" for t in r.tasks]
    plugin.log("info", "task_results: " + " | ".join(lines))
"#,
    );
    let s = s.rush(
        "plugins:\n  - name: results\n\
         tasks:\n  a:\n    cmd: echo a\n  b:\n    cmd: echo b\n    deps: [a]\n  last:\n    cmd: echo last\n    deps: [b]\n",
    );
    s.run(&["last"]).success();
    s.run(&["daemon", "stop"]).success();
    let log = std::fs::read_to_string(s.log()).unwrap_or_default();
    assert!(
        log.contains(
            "task_results: same run: True | a success 0 cached=False | b success 0 cached=False | last success 0 cached=False"
        ),
        "{log}"
    );
}

#[test]
fn a_node_and_a_go_plugin_have_their_host_calls_answered() {
    let s = Scenario::new().env("GREETING", "hello");
    let mut rush = String::from("plugins:\n");
    let node = have("node");
    if node {
        s.write(
            ".rush-plugins/node-env/plugin.toml",
            format!(
                "name = \"node-env\"\nversion = \"1.0.0\"\nentry_point = [\"node\", \"main.cjs\"]\n\
                 taskrush_version = \">=0.3\"\n\n[permissions]\nfilesystem = [\"read:{}\"]\nenvironment = [\"GREETING\"]\n",
                sdk("node").display()
            ),
        );
        s.write(
            ".rush-plugins/node-env/main.cjs",
            format!(
                "const {{ Plugin }} = require({:?});\n\
                 const plugin = new Plugin('node-env', '1.0.0');\n\
                 plugin.command('node-greet', async () => {{\n\
                 \x20 const greeting = await plugin.host.envGet('GREETING');\n\
                 \x20 let home;\n\
                 \x20 try {{ await plugin.host.envGet('HOME'); home = 'read'; }} catch (e) {{ home = `denied (${{e.permissionDenied}})`; }}\n\
                 \x20 return `node: ${{greeting}}, HOME ${{home}}`;\n\
                 }});\n\
                 plugin.run();\n",
                sdk("node").join("index.cjs").display().to_string()
            ),
        );
        s.grant_in_config("node-env");
        rush.push_str("  - name: node-env\n");
    } else {
        eprintln!("skipped the Node.js half: `node` is not installed");
    }
    let go = have("go");
    if go {
        let dir = s.project().join(".rush-plugins/go-env");
        std::fs::create_dir_all(&dir).unwrap();
        s.write(
            ".rush-plugins/go-env/go.mod",
            format!(
                "module example.test/goenv\n\ngo 1.19\n\nrequire taskrush.dev/plugin v0.0.0\n\n\
                 replace taskrush.dev/plugin => {}\n",
                sdk("go").display()
            ),
        );
        s.write(
            ".rush-plugins/go-env/main.go",
            r#"package main

import (
	"fmt"
	"log"

	plugin "taskrush.dev/plugin"
)

func main() {
	p := plugin.New("go-env", "1.0.0")
	p.Command("go-greet", "", func([]string, string) (plugin.CommandResult, error) {
		greeting, _, err := p.EnvGet("GREETING")
		if err != nil {
			return plugin.CommandResult{}, err
		}
		_, _, err = p.EnvGet("HOME")
		return plugin.CommandResult{Stdout: fmt.Sprintf("go: %s, HOME denied: %v\n", greeting, plugin.IsPermissionDenied(err))}, nil
	})
	if err := p.Run(); err != nil {
		log.Fatal(err)
	}
}
"#,
        );
        let built = std::process::Command::new("go")
            .args(["build", "-o", "go-env", "."])
            .current_dir(&dir)
            .env("GOFLAGS", "-mod=mod")
            .env("GOPROXY", "off")
            .env("GOTOOLCHAIN", "local")
            .output()
            .expect("run go build");
        assert!(
            built.status.success(),
            "go build failed: {}",
            String::from_utf8_lossy(&built.stderr)
        );
        s.write(
            ".rush-plugins/go-env/plugin.toml",
            "name = \"go-env\"\nversion = \"1.0.0\"\nentry_point = [\"./go-env\"]\n\
             taskrush_version = \">=0.3\"\n\n[permissions]\nenvironment = [\"GREETING\"]\n",
        );
        s.grant_in_config("go-env");
        rush.push_str("  - name: go-env\n");
    } else {
        eprintln!("skipped the Go half: `go` is not installed");
    }
    if !node && !go {
        return;
    }
    let s = s.rush(&(rush + "tasks:\n  t:\n    cmd: echo t\n"));
    if node {
        s.run(&["node-greet"])
            .success()
            .expect_stdout("node: hello, HOME denied (true)\n");
    }
    if go {
        s.run(&["go-greet"])
            .success()
            .expect_stdout("go: hello, HOME denied: true\n");
    }
    let records = audit_records(&s);
    assert!(
        records
            .iter()
            .any(|r| r["kind"] == "denied" && r["call"] == "env_get" && r["item"] == "HOME"),
        "{records:?}"
    );
}

/// `notifier` adds `notify`; `caller` calls it through the host, declaring
/// `plugins = [..declared]`.
fn caller_and_notifier(declared: &str) -> Scenario {
    let s = Scenario::new();
    python_plugin(
        &s,
        "notifier",
        "",
        r#"
@plugin.command("notify")
def notify(args, cwd):
    return "notified: " + " ".join(args)
"#,
    );
    python_plugin(
        &s,
        "caller",
        &format!("plugins = [{declared}]"),
        r#"
@plugin.command("announce")
def announce(args, cwd):
    try:
        r = plugin.host.call_command("notifier", "notify", ["build", "done"])
    except PermissionDenied as e:
        return CommandResult(1, "", f"{e}\n")
    return f"notifier said: {r.stdout}"
"#,
    );
    s.rush("plugins:\n  - name: notifier\n  - name: caller\ntasks:\n  t:\n    cmd: echo t\n")
}

#[test]
fn a_plugin_calls_a_declared_and_granted_plugins_command_through_the_host_and_it_is_audited() {
    let s = caller_and_notifier("\"notifier\"");
    s.run(&["announce"])
        .success()
        .expect_stdout("notifier said: notified: build done\n");
    let records = audit_records(&s);
    let call = records
        .iter()
        .find(|r| r["kind"] == "call_command")
        .unwrap_or_else(|| panic!("no call_command record: {records:?}"));
    assert_eq!(call["plugin"], "caller");
    assert_eq!(call["callee"], "notifier");
    assert_eq!(call["command"], "notify");
    assert_eq!(call["chain"], serde_json::json!(["caller", "notifier"]));
    let audit = s.run(&["plugin", "audit", "caller"]);
    audit.success();
    assert!(
        audit
            .stdout()
            .contains("called `notify` of `notifier` (caller → notifier)"),
        "{}",
        audit.stdout()
    );
    let info = s.run(&["plugin", "info", "caller"]);
    info.success();
    assert!(
        info.stdout()
            .contains("  plugins\n    declared   notifier\n    granted    notifier\n"),
        "{}",
        info.stdout()
    );
}

#[test]
fn a_call_to_an_undeclared_plugin_is_refused_and_audited() {
    let s = caller_and_notifier("");
    s.run(&["announce"]).expect_code(1).expect_stderr(
        "permission denied: `call_command` needs a `plugins` grant for `notifier`\n",
    );
    let records = audit_records(&s);
    assert!(
        records.iter().any(|r| r["kind"] == "denied"
            && r["plugin"] == "caller"
            && r["call"] == "call_command"
            && r["permission"] == "plugins"
            && r["item"] == "notifier"),
        "{records:?}"
    );
    assert!(!records.iter().any(|r| r["kind"] == "call_command"));
}

#[test]
fn a_call_cycle_is_refused_with_the_chain_named() {
    let s = Scenario::new();
    python_plugin(
        &s,
        "ping",
        "plugins = [\"pong\", \"ping\"]",
        r#"
@plugin.command("ping")
def ping(args, cwd):
    r = plugin.host.call_command("pong", "pong")
    return "pong said: " + r.stdout

@plugin.command("self-call")
def self_call(args, cwd):
    try:
        plugin.host.call_command("ping", "ping")
    except HostError as e:
        return str(e)
    return "called"
"#,
    );
    python_plugin(
        &s,
        "pong",
        "plugins = [\"ping\"]",
        r#"
@plugin.command("pong")
def pong(args, cwd):
    try:
        plugin.host.call_command("ping", "ping")
    except HostError as e:
        return str(e)
    return "called back"
"#,
    );
    let s = s.rush("plugins:\n  - name: ping\n  - name: pong\ntasks:\n  t:\n    cmd: echo t\n");
    s.run(&["ping"]).success().expect_stdout(
        "pong said: call cycle refused: `ping` → `pong` → `ping` (a plugin cannot be called again by a call it made)\n",
    );
    s.run(&["self-call"]).success().expect_stdout(
        "call cycle refused: `ping` → `ping` (a plugin cannot be called again by a call it made)\n",
    );
    assert!(wait_until(Duration::from_secs(5), || audit_records(&s)
        .iter()
        .any(|r| r["kind"] == "denied" && r["why"] == "cycle")));
}

/// A fake Slack webhook on 127.0.0.1: the body of the first request.
fn fake_slack() -> (u16, std::sync::mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = listener.local_addr().expect("port").port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((mut conn, _)) = listener.accept() {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
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
    (port, rx)
}

#[test]
fn the_task_auditor_example_announces_its_findings_through_slack_notify() {
    let (port, rx) = fake_slack();
    let examples = repo().join("plugins-external/examples");
    let s = Scenario::new()
        .env("SLACK_WEBHOOK", &format!("http://127.0.0.1:{port}/hook"))
        .rush(&format!(
            "plugins:\n  - name: slack-notify\n    path: {}\n  - name: task-auditor\n    path: {}\n\
             tasks:\n  build:\n    cmd: echo built\n    description: Build it\n  lint:\n    cmd: echo lint\n  deploy:\n    cmd: echo deploy\n",
            examples.join("slack-notify").display(),
            examples.join("task-auditor").display()
        ))
        .grant("slack-notify")
        .grant("task-auditor");
    s.run(&["audit-tasks"]).success().expect_stdout(
        "task-auditor: 2 task(s) without a description: deploy, lint\nannounced through slack-notify\n",
    );
    let request = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the webhook was called");
    assert!(
        request.contains("task-auditor: 2 task(s) without a description: deploy, lint"),
        "{request}"
    );
}

#[test]
fn a_wasm_plugin_scans_every_task_of_the_project_read_through_task_graph() {
    let Some(dir) = super::wasm::example("security-scanner-wasm", "security-scanner.wasm") else {
        return;
    };
    let s = Scenario::new().rush(&format!(
        "plugins:\n  - name: security-scanner\n    type: wasm\n    path: {}\n    timeout: 10s\n\
         tasks:\n  safe:\n    cmd: echo fine\n  risky:\n    cmd: chmod 777 no-such-file\n  all:\n    deps: [safe]\n",
        dir.display()
    ));
    let out = s.run(&["scan"]);
    out.expect_code(1);
    let stdout = out.stdout();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        2,
        "the aggregate task has no command: {stdout}"
    );
    assert!(
        lines[0].starts_with("denied: task `risky`: chmod 777 no-such-file (matches "),
        "{stdout}"
    );
    assert_eq!(lines[1], "ok: task `safe`: echo fine");
}

#[test]
fn a_called_command_gets_no_more_time_than_its_caller_has_left() {
    let s = Scenario::new();
    python_plugin(
        &s,
        "sleeper",
        "",
        r#"
import time

@plugin.command("nap")
def nap(args, cwd):
    time.sleep(60)
    return "woke up"
"#,
    );
    python_plugin(
        &s,
        "hurried",
        "plugins = [\"sleeper\"]",
        r#"
@plugin.command("hurry")
def hurry(args, cwd):
    r = plugin.host.call_command("sleeper", "nap")
    return "sleeper said: " + r.stdout
"#,
    );
    // The caller has 2 s; the callee's own deadline would be 60 s.
    let s = s.rush(
        "plugins:\n  - name: sleeper\n    timeout: 60s\n  - name: hurried\n    timeout: 2s\n\
         tasks:\n  t:\n    cmd: echo t\n",
    );
    let began = std::time::Instant::now();
    let out = s.run(&["hurry"]);
    let took = began.elapsed();
    out.expect_code(1);
    out.expect_stderr_containing("plugin `hurried` failed in `command`: no answer within 2s");
    assert!(!out.stdout().contains("woke up"), "{}", out.stdout());
    // Far sooner than the callee's sleep (a generous bound, not a speed
    // assertion).
    assert!(took < Duration::from_secs(30), "took {took:?}");
    // The callee's call ended at the caller's deadline too: the sleeper
    // was given up on (killed: a crash, and its `nap` a timeout, in its
    // figures), not left to sleep its own 60 s.
    let sleeper = || {
        let out = s.run(&["plugin", "stats", "sleeper", "--json"]);
        let v: Value = serde_json::from_str(&out.stdout()).unwrap_or(Value::Null);
        let p = v
            .as_array()
            .and_then(|a| a.iter().find(|p| p["name"] == "sleeper").cloned())
            .unwrap_or(Value::Null);
        // Its `nap`, called through the host, counted as a timeout.
        let naps: u64 = p["commands"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["name"] == "nap")
            .map(|c| c["timeouts"].as_u64().unwrap_or(0))
            .sum();
        (p["crashes"].as_u64().unwrap_or(0), naps)
    };
    assert!(
        wait_until(Duration::from_secs(10), || sleeper() == (1, 1)),
        "the callee's `nap` was not stopped with its caller: {}",
        s.run(&["plugin", "stats", "sleeper", "--json"]).stdout()
    );
    let records = audit_records(&s);
    assert!(
        records.iter().any(|r| r["kind"] == "call_command"
            && r["plugin"] == "hurried"
            && r["callee"] == "sleeper"
            && r["command"] == "nap"),
        "{records:?}"
    );
    let audit = s.run(&["plugin", "audit", "hurried"]);
    audit.success();
    assert!(
        audit
            .stdout()
            .contains("called `nap` of `sleeper` (hurried → sleeper)"),
        "{}",
        audit.stdout()
    );
}
