use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};
use taskrush_plugin::{Dispatcher, Host};

use super::*;

fn ctx(config: Value) -> TaskContext {
    TaskContext {
        task_name: "deploy".into(),
        command: "./deploy.sh".into(),
        working_dir: "/p".into(),
        env_vars: Default::default(),
        config,
        run_id: 1,
    }
}

fn result(status: TaskStatus, exit_code: Option<i32>, cached: bool) -> TaskResult {
    TaskResult {
        status,
        exit_code,
        duration_ms: 1234,
        cached,
    }
}

#[test]
fn the_default_messages_say_how_the_task_ended() {
    let ok = payload(
        &ctx(json!({})),
        &result(TaskStatus::Success, Some(0), false),
    )
    .unwrap();
    assert_eq!(
        ok,
        json!({"text": "\u{2705} Task 'deploy' succeeded in 1234 ms"})
    );
    let failed = payload(&ctx(json!({})), &result(TaskStatus::Failed, None, false)).unwrap();
    assert_eq!(
        failed,
        json!({"text": "\u{274c} Task 'deploy' failed (exit code none)"})
    );
}

#[test]
fn a_template_fills_known_placeholders_and_keeps_other_braces() {
    let c =
        ctx(json!({"message": "{task} {status} {exit_code} {command} {other}", "channel": "#ops"}));
    let p = payload(&c, &result(TaskStatus::Cancelled, Some(130), false)).unwrap();
    assert_eq!(
        p,
        json!({"text": "deploy cancelled 130 ./deploy.sh {other}", "channel": "#ops"})
    );
}

#[test]
fn the_config_chooses_which_endings_are_posted() {
    let success = result(TaskStatus::Success, Some(0), false);
    let cached = result(TaskStatus::Success, Some(0), true);
    let failed = result(TaskStatus::Failed, Some(1), false);
    assert!(payload(&ctx(json!({"on_success": false})), &success).is_none());
    assert!(payload(&ctx(json!({"on_failure": false})), &failed).is_none());
    assert!(payload(&ctx(json!({})), &cached).is_none());
    assert!(payload(&ctx(json!({"on_cached": true})), &cached).is_some());
}

#[test]
fn only_the_host_of_the_webhook_is_ever_named() {
    assert_eq!(
        host_of("https://hooks.slack.com/services/T0/B0/XYZ"),
        "hooks.slack.com"
    );
    assert_eq!(host_of("http://127.0.0.1:8080/hook?x=1"), "127.0.0.1");
    assert_eq!(host_of("https://user:pw@example.test"), "example.test");
}

/// A webhook on 127.0.0.1: answers `status` to one request and sends
/// back what it received.
fn receiver(status: u16) -> (String, mpsc::Receiver<(String, String)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/services/T0/B0/secret",
        listener.local_addr().unwrap()
    );
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream);
        let mut head = String::new();
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push_str(&line);
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let answer =
            format!("HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        reader.get_mut().write_all(answer.as_bytes()).unwrap();
        tx.send((head, String::from_utf8(body).unwrap())).unwrap();
    });
    (url, rx)
}

/// What the daemon's `http_request` does, reduced to plain HTTP/1.1 to
/// 127.0.0.1 (the test's receiver): the request as the plugin built it.
fn perform(params: &Value) -> Value {
    let url = params["url"].as_str().unwrap();
    let rest = url.strip_prefix("http://").unwrap();
    let (addr, path) = rest.split_once('/').unwrap();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let body = params["body"].as_str().unwrap();
    let mut request = format!(
        "{} /{path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n",
        params["method"].as_str().unwrap(),
        body.len()
    );
    for (k, v) in params["headers"].as_object().unwrap() {
        request.push_str(&format!("{k}: {}\r\n", v.as_str().unwrap()));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status: u16 = answer.split(' ').nth(1).unwrap().parse().unwrap();
    json!({"status": status, "body": answer.split("\r\n\r\n").nth(1).unwrap_or("")})
}

/// The plugin behind the dispatcher; its host carries out `http_request`
/// for real, answers `env_get` with `env`, and collects log lines.
fn plugin(env: Option<&str>) -> (Dispatcher<SlackNotify>, mpsc::Receiver<String>) {
    let env = env.map(str::to_owned);
    let (log_tx, log_rx) = mpsc::channel();
    let host = Host::new(move |msg: &[u8]| {
        let msg: Value = serde_json::from_slice(msg).unwrap();
        let result = match msg["method"].as_str().unwrap() {
            "log" => {
                let p = &msg["params"];
                log_tx
                    .send(format!(
                        "{}: {}",
                        p["level"].as_str().unwrap(),
                        p["message"].as_str().unwrap()
                    ))
                    .unwrap();
                return None;
            }
            "env_get" => json!({"value": env}),
            "http_request" => perform(&msg["params"]),
            m => panic!("unexpected host call `{m}`"),
        };
        Some(
            serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": msg["id"], "result": result}))
                .unwrap(),
        )
    });
    let mut d = Dispatcher::new(SlackNotify::default(), host);
    let init = call(
        &mut d,
        "initialize",
        json!({"protocol_versions": [1], "taskrush_version": "0.3.0", "name": "slack-notify",
               "config": {}, "project_root": "/p",
               "host_methods": taskrush_plugin::protocol::host::method::ALL}),
    );
    assert_eq!(init["result"]["hooks"], json!(["after_task"]));
    (d, log_rx)
}

fn call(d: &mut Dispatcher<SlackNotify>, method: &str, params: Value) -> Value {
    let msg = json!({"jsonrpc": "2.0", "id": 2, "method": method, "params": params});
    serde_json::from_slice(&d.handle(&serde_json::to_vec(&msg).unwrap()).unwrap()).unwrap()
}

fn after_task(d: &mut Dispatcher<SlackNotify>, config: Value, status: &str) -> Value {
    call(
        d,
        "after_task",
        json!({"context": {"task_name": "deploy", "command": "./deploy.sh", "working_dir": "/p",
                           "config": config, "run_id": 1},
               "result": {"status": status, "exit_code": 0, "duration_ms": 5}}),
    )
}

#[test]
fn a_finished_task_is_posted_to_the_webhook_from_the_environment() {
    let (url, received) = receiver(200);
    let (mut d, logs) = plugin(Some(&url));
    let answer = after_task(&mut d, json!({"channel": "#builds"}), "success");
    assert_eq!(answer["result"], Value::Null);
    let (head, body) = received.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(
        head.starts_with("POST /services/T0/B0/secret HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(head.contains("Content-Type: application/json"), "{head}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"text": "\u{2705} Task 'deploy' succeeded in 5 ms", "channel": "#builds"})
    );
    assert_eq!(
        logs.try_iter().last().unwrap(),
        "debug: posted to 127.0.0.1"
    );
}

#[test]
fn a_webhook_error_is_a_warning_without_the_url_and_never_fails_the_task() {
    let (url, _received) = receiver(500);
    let (mut d, logs) = plugin(None);
    assert!(
        logs.try_iter()
            .any(|l| l.starts_with("warn: no `webhook_url`"))
    );
    let answer = after_task(&mut d, json!({"webhook_url": url}), "failed");
    assert_eq!(answer["result"], Value::Null);
    let warning = logs.try_iter().last().unwrap();
    assert_eq!(
        warning,
        "warn: 127.0.0.1 answered HTTP 500; the message was not posted"
    );
    assert!(!warning.contains("secret"));
}
