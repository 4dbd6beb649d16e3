use std::cell::RefCell;
use std::rc::Rc;

use serde_json::{Value, json};
use taskrush_plugin::{Dispatcher, Host};

use super::*;

fn policy(config: Value) -> Policy {
    Policy::from_config(&config).expect("a valid config")
}

#[test]
fn without_config_the_default_rules_veto_at_medium_and_above() {
    let p = policy(Value::Null);
    assert_eq!(p.threshold, Severity::Medium);
    let mut s = Scanner::default();
    let found = s
        .scan("curl -fsSL https://x.example/i.sh | sudo bash", &p)
        .unwrap();
    assert_eq!(found[0].rule.severity, Severity::High);
    assert!(found[0].vetoes);
    assert!(s.scan("rm -rf /", &p).unwrap()[0].vetoes);
    assert!(s.scan("rm -rf ./build", &p).unwrap().is_empty());
    let sudo = s.scan("sudo make install", &p).unwrap();
    assert_eq!(sudo.len(), 1);
    assert!(!sudo[0].vetoes, "low is below the medium threshold");
    assert!(s.scan("cargo build --release", &p).unwrap().is_empty());
}

#[test]
fn the_threshold_decides_which_matches_veto() {
    let mut s = Scanner::default();
    let critical_only = policy(json!({"severity_threshold": "critical"}));
    assert!(!s.scan("curl x | sh", &critical_only).unwrap()[0].vetoes);
    let low = policy(json!({"severity_threshold": "low"}));
    assert!(s.scan("sudo ls", &low).unwrap()[0].vetoes);
}

#[test]
fn configured_rules_replace_the_defaults_and_deny_adds_high_rules() {
    let p = policy(json!({
        "rules": [{"pattern": "kubectl\\s+delete", "severity": "critical", "description": "deletes resources"}],
        "deny": "^npm publish",
    }));
    assert_eq!(p.rules.len(), 2);
    assert_eq!(p.rules[1].severity, Severity::High);
    let mut s = Scanner::default();
    assert!(s.scan("curl x | sh", &p).unwrap().is_empty());
    assert!(s.scan("npm publish --tag next", &p).unwrap()[0].vetoes);
}

#[test]
fn a_config_that_does_not_parse_names_what_is_wrong() {
    let e = Policy::from_config(&json!({"severity_threshold": "extreme"})).unwrap_err();
    assert!(e.contains("unknown variant `extreme`"), "{e}");
    let e = Policy::from_config(&json!({"rules": [{"pattern": "x", "level": "low"}]})).unwrap_err();
    assert!(e.contains("unknown field `level`"), "{e}");
    let bad = policy(json!({"deny": ["("]}));
    let e = Scanner::default().check(&bad).unwrap_err();
    assert!(e.starts_with("invalid pattern `(`"), "{e}");
}

/// The plugin through the dispatcher, with a host that keeps log lines.
fn plugin(config: Value) -> (Dispatcher<SecurityScanner>, Rc<RefCell<Vec<String>>>, Value) {
    let logs = Rc::new(RefCell::new(Vec::new()));
    let sink = Rc::clone(&logs);
    let host = Host::new(move |msg: &[u8]| {
        let msg: Value = serde_json::from_slice(msg).unwrap();
        if msg["method"] == "log" {
            sink.borrow_mut().push(format!(
                "{}: {}",
                msg["params"]["level"].as_str().unwrap(),
                msg["params"]["message"].as_str().unwrap()
            ));
        }
        None
    });
    let mut d = Dispatcher::new(SecurityScanner::default(), host);
    let init = call(
        &mut d,
        "initialize",
        json!({"protocol_versions": [1], "taskrush_version": "0.3.0", "name": "security-scanner",
               "config": config, "project_root": "/p"}),
    );
    (d, logs, init)
}

fn call(d: &mut Dispatcher<SecurityScanner>, method: &str, params: Value) -> Value {
    let msg = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    serde_json::from_slice(&d.handle(&serde_json::to_vec(&msg).unwrap()).unwrap()).unwrap()
}

fn before_task(d: &mut Dispatcher<SecurityScanner>, command: &str, config: Value) -> Value {
    call(
        d,
        "before_task",
        json!({"context": {"task_name": "install", "command": command, "working_dir": "/p",
                           "config": config, "run_id": 1}}),
    )
}

#[test]
fn a_task_at_the_threshold_is_vetoed_with_the_rule_and_one_below_is_logged() {
    let global = json!({"severity_threshold": "medium"});
    let (mut d, logs, init) = plugin(global.clone());
    assert_eq!(init["result"]["hooks"], json!(["before_task"]));
    let vetoed = before_task(&mut d, "curl https://x.example/i.sh | sh", global.clone());
    assert_eq!(vetoed["error"]["code"], -32010);
    assert_eq!(
        vetoed["error"]["message"],
        "the command of task `install` matches the high-severity rule \
         `(curl|wget)\\s.*\\|\\s*(sudo\\s+)?(ba|z|da)?sh\\b` (pipes a download into a shell)"
    );
    assert_eq!(vetoed["error"]["data"]["severity"], "high");
    let allowed = before_task(&mut d, "sudo make install", global);
    assert_eq!(allowed["result"], Value::Null);
    assert!(
        logs.borrow()
            .iter()
            .any(|l| l
                .starts_with("warn: the command of task `install` matches the low-severity rule")),
        "{logs:?}"
    );
}

#[test]
fn a_bad_global_pattern_fails_the_start_and_a_bad_task_pattern_fails_the_task() {
    let (_, _, init) = plugin(json!({"deny": ["[unclosed"]}));
    assert_eq!(init["error"]["code"], -32603);
    let (mut d, _, _) = plugin(Value::Null);
    let answer = before_task(&mut d, "make", json!({"deny": ["[unclosed"]}));
    assert_eq!(answer["error"]["code"], -32603, "a failure, not a veto");
}

#[test]
fn the_scan_command_prints_a_verdict_per_command() {
    let (mut d, _, _) = plugin(Value::Null);
    let r = call(
        &mut d,
        "command",
        json!({"name": "scan", "args": ["make test", "sudo ls", "rm -rf /"], "cwd": "/p"}),
    );
    let out = r["result"]["stdout"].as_str().unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "ok: make test");
    assert!(lines[1].starts_with("warning: sudo ls (matches the low-severity rule"));
    assert!(lines[2].starts_with("denied: rm -rf / (matches the critical-severity rule"));
    assert_eq!(r["result"]["exit_code"], 1);
    // Without arguments it scans the task graph: a host that does not
    // offer `task_graph` fails the command at once.
    let all = call(&mut d, "command", json!({"name": "scan", "cwd": "/p"}));
    assert!(
        all["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("does not offer `task_graph`")),
        "{all}"
    );
}
