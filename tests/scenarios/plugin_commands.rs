//! The CLI starts only what it needs: a plugin command is one `dispatch`
//! request (the daemon decides "task or plugin command"), and `--help`,
//! completions and usage errors show plugin commands from their last
//! handshake (the command cache, kept on disk) without starting a plugin.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde_json::{Value, json};
use taskrush_tests::Scenario;

use crate::plugins::plugin;

/// A project whose plugin `hello` adds `greet` and writes one
/// `initialize` record per start into `rec.jsonl`.
fn counting() -> Scenario {
    let s = Scenario::new();
    plugin(&s, "hello", "good");
    let rec = s.project().join("rec.jsonl").display().to_string();
    s.env("REC", &rec).rush(
        "plugins:\n  - {name: hello, config: {commands: [greet], record: '${REC}'}}\ntasks:\n  t:\n    cmd: echo task t\n",
    )
}

/// How many times the plugin was started.
fn starts(s: &Scenario) -> usize {
    s.read("rec.jsonl")
        .lines()
        .filter(|l| l.contains("\"hook\": \"initialize\""))
        .count()
}

#[test]
fn help_shows_plugin_commands_from_their_last_handshake_without_starting_the_plugin() {
    let s = counting();
    s.run(&["greet", "a"])
        .expect_stdout("hello from greet: a\n")
        .success();
    assert_eq!(starts(&s), 1);
    // A fresh daemon still knows the commands: they are on disk.
    s.run(&["daemon", "stop"]).success();
    let help = s.run(&["--help"]);
    help.success();
    assert!(
        help.stdout()
            .contains("Plugin commands (this project):\n  greet  says hello (plugin `hello`)"),
        "{}",
        help.stdout()
    );
    // Usage errors start nothing either: a task given options `run` does
    // not know, and a name that is neither task nor command.
    assert_eq!(starts(&s), 1, "--help");
    s.run(&["t", "--bogus"])
        .expect_code(2)
        .expect_stderr_containing("unexpected argument '--bogus'");
    assert_eq!(starts(&s), 1, "t --bogus");
    s.run(&["nosuch", "--bogus"]).expect_code(2);
    assert_eq!(starts(&s), 1, "nosuch --bogus");
    s.run(&["nosuch"])
        .expect_code(1)
        .expect_stderr_containing("nosuch");
    assert_eq!(
        starts(&s),
        1,
        "a usage error or `--help` started the plugin"
    );
    // The command itself starts it, once.
    s.run(&["greet", "--loud"])
        .expect_stdout("hello from greet: --loud\n")
        .success();
    assert_eq!(starts(&s), 2);
}

#[test]
fn a_plugin_command_is_one_dispatch_request_and_a_task_is_a_run() {
    let s = counting();
    s.run(&["t"]).expect_stdout("task t\n").success();
    let path = std::env::var("PATH").unwrap_or_default();
    let rec = s.project().join("rec.jsonl").display().to_string();
    let request = |id: u64, tasks: &[&str], args: &[&str]| {
        json!({"jsonrpc": "2.0", "id": id, "method": "dispatch", "params": {
            "request": {"cwd": s.project().display().to_string(), "tasks": tasks,
                        "env": {"PATH": path, "REC": rec}},
            "args": args,
        }})
        .to_string()
            + "\n"
    };
    let mut sock = UnixStream::connect(s.socket()).expect("connect");
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    sock.write_all(request(1, &["greet"], &["x", "--y", "$(no)"]).as_bytes())
        .expect("send");
    let mut lines = BufReader::new(sock.try_clone().expect("dup")).lines();
    let mut next = || -> Value {
        let line = lines.next().expect("a line").expect("read");
        serde_json::from_str(&line).expect("JSON")
    };
    let answer = next();
    assert!(answer["result"].is_u64(), "{answer}");
    let ev = next();
    assert_eq!(ev["method"], "dispatch_event", "{ev}");
    let r = &ev["params"]["result"];
    assert_eq!(r["event"], "command_finished", "{r}");
    assert_eq!(r["plugin"], "hello");
    assert_eq!(r["command"], "greet");
    assert_eq!(r["exit_code"], 0);
    assert_eq!(r["stdout"], "hello from greet: x --y $(no)\n");
    assert_eq!(r["stderr"], "command ran\n");
    // A task: the same request is a run, with the run's events.
    sock.write_all(request(2, &["t"], &[]).as_bytes())
        .expect("send");
    let mut kinds = Vec::new();
    loop {
        let v = next();
        if let Some(kind) = v["params"]["result"]["event"].as_str() {
            kinds.push(kind.to_owned());
            if kind == "run_finished" {
                break;
            }
        }
    }
    assert_eq!(
        kinds.first().map(String::as_str),
        Some("run_started"),
        "{kinds:?}"
    );
    // Protocol-1 clients keep the older exchange: `run` of a command is
    // refused with `-32008`, and they send `plugin_command`.
    let run = json!({"jsonrpc": "2.0", "id": 3, "method": "run", "params": {"request": {
        "cwd": s.project().display().to_string(), "tasks": ["greet"], "env": {"PATH": path, "REC": rec}}}});
    sock.write_all(format!("{run}\n").as_bytes()).expect("send");
    let refused = loop {
        let v = next();
        if v["id"] == 3 {
            break v;
        }
    };
    assert_eq!(refused["error"]["code"], -32008, "{refused}");
    assert_eq!(refused["error"]["data"]["plugin"], "hello");
    // The CLI sends exactly that one request for `taskrush greet …`: the
    // daemon logs one dispatch, and no run.
    let before = std::fs::read_to_string(s.log()).unwrap_or_default();
    s.run(&["greet", "b"])
        .expect_stdout("hello from greet: b\n")
        .success();
    let log = std::fs::read_to_string(s.log()).unwrap_or_default();
    let new = &log[before.len()..];
    assert_eq!(
        new.matches("dispatch: a plugin command").count(),
        1,
        "{new}"
    );
    assert!(!new.contains("run started"), "{new}");
}
