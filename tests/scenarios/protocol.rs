//! The socket as an editor or a script sees it: JSON-RPC 2.0 in either
//! framing, with the spec's error codes.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde_json::{Value, json};
use taskrush_tests::Scenario;

fn started() -> Scenario {
    let t = Scenario::new().rush("tasks:\n  hi:\n    cmd: echo hi\n");
    t.run(&["hi"]).success();
    t
}

fn connect(t: &Scenario) -> UnixStream {
    let s = UnixStream::connect(t.socket()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Send newline-delimited lines; read `n` answer lines.
fn exchange(t: &Scenario, input: &str, n: usize) -> Vec<Value> {
    let mut s = connect(t);
    s.write_all(input.as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    (0..n)
        .map(|_| {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
        })
        .collect()
}

#[test]
fn newline_delimited_requests_get_answers() {
    let t = started();
    let got = exchange(
        &t,
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"hello\",\"params\":{\"version\":\"x\",\"protocol\":1}}\n",
        1,
    );
    assert_eq!(got[0]["id"], 1);
    assert_eq!(got[0]["result"]["protocol"], 1);
}

#[test]
fn content_length_framing_is_answered_in_kind() {
    let t = started();
    let mut s = connect(&t);
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": "daemon_status"}).to_string();
    write!(s, "Content-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    let mut r = BufReader::new(s);
    let mut header = String::new();
    r.read_line(&mut header).unwrap();
    assert!(header.starts_with("Content-Length: "), "{header:?}");
    let len: usize = header["Content-Length: ".len()..].trim().parse().unwrap();
    let mut blank = String::new();
    r.read_line(&mut blank).unwrap();
    assert_eq!(blank, "\r\n");
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["id"], 7);
    assert!(v["result"]["pid"].is_u64());
}

#[test]
fn malformed_input_gets_the_spec_error_codes() {
    let t = started();
    let got = exchange(
        &t,
        concat!(
            "this is not json\n",
            "{\"id\":2}\n",
            "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"no_such_method\"}\n",
            "{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"cancel_run\",\"params\":{\"run_id\":\"x\"}}\n",
        ),
        4,
    );
    let code = |id: Value| {
        got.iter()
            .find(|v| v["id"] == id)
            .map(|v| v["error"]["code"].as_i64().unwrap())
            .unwrap()
    };
    assert_eq!(code(Value::Null), -32700);
    assert_eq!(code(json!(2)), -32600);
    assert_eq!(code(json!(3)), -32601);
    assert_eq!(code(json!(4)), -32602);
}

#[test]
fn batches_are_answered_as_arrays_and_notifications_get_no_answer() {
    let t = started();
    let got = exchange(
        &t,
        concat!(
            "[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"daemon_status\"},",
            "{\"jsonrpc\":\"2.0\",\"method\":\"daemon_status\"},",
            "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"nope\"}]\n",
        ),
        1,
    );
    let arr = got[0].as_array().expect("an array");
    assert_eq!(arr.len(), 2);
    assert_eq!(arr[0]["id"], 1);
    assert_eq!(arr[1]["error"]["code"], -32601);
}

#[test]
fn an_oversized_message_is_refused_and_other_clients_carry_on() {
    let t = started();
    let mut s = connect(&t);
    s.write_all(b"Content-Length: 10000000000\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.contains("-32006"), "{answer}");
    t.run(&["hi"]).expect_stdout("hi\n").success();
}

#[test]
fn a_run_streams_events_from_started_to_finished() {
    let t = started();
    let mut s = connect(&t);
    let req = json!({"jsonrpc": "2.0", "id": 1, "method": "run", "params": {"request": {
        "cwd": t.project().display().to_string(), "tasks": ["hi"]}}});
    writeln!(s, "{req}").unwrap();
    let mut r = BufReader::new(s);
    let mut events = Vec::new();
    loop {
        let mut line = String::new();
        assert!(
            r.read_line(&mut line).unwrap() > 0,
            "connection closed early"
        );
        let v: Value = serde_json::from_str(&line).unwrap();
        if v["method"] == "run_event" {
            let ev = v["params"]["result"].clone();
            let kind = ev["event"].as_str().unwrap().to_owned();
            events.push(kind.clone());
            if kind == "output" {
                assert_eq!(ev["text"], "hi\n");
            }
            if kind == "run_finished" {
                assert_eq!(ev["exit_code"], 0);
                break;
            }
        }
    }
    assert_eq!(
        events,
        [
            "run_started",
            "task_started",
            "output",
            "task_finished",
            "run_finished"
        ]
    );
}

#[test]
fn a_client_sending_one_byte_at_a_time_is_cut_off_and_others_are_served() {
    let t = Scenario::new().rush("tasks:\n  hi:\n    cmd: echo hi\n");
    t.start_daemon(&[("TASKRUSH_FRAME_DEADLINE_MS", "300")]);
    let mut slow = connect(&t);
    slow.write_all(b"{\"jsonrpc\":").unwrap();
    // Meanwhile another client is served at normal speed.
    t.run(&["hi"]).expect_stdout("hi\n").success();
    let mut rest = Vec::new();
    let started = std::time::Instant::now();
    let _ = slow.read_to_end(&mut rest); // the daemon closes the connection
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_line_without_end_is_refused_at_the_size_limit() {
    let t = started();
    let mut s = connect(&t);
    let chunk = vec![b'x'; 1024 * 1024];
    let mut refused = false;
    for _ in 0..12 {
        if s.write_all(&chunk).is_err() {
            refused = true;
            break;
        }
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(refused || answer.contains("-32006"), "{answer}");
    t.run(&["hi"]).expect_stdout("hi\n").success();
}

#[test]
fn a_panic_while_handling_a_request_answers_it_and_harms_nothing_else() {
    let t = started();
    let got = exchange(
        &t,
        concat!(
            "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"debug_panic\"}\n",
            "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"daemon_status\"}\n",
        ),
        2,
    );
    let by_id = |id: i64| got.iter().find(|v| v["id"] == id).unwrap().clone();
    assert_eq!(by_id(1)["error"]["code"], -32603);
    assert!(by_id(2)["result"]["pid"].is_u64());
    t.run(&["hi"]).expect_stdout("hi\n").success();
}

/// Run `task` over a raw connection; return (stdout text, exit code).
fn run_over_socket(t: &Scenario, task: &str, env: &[(&str, &str)]) -> (String, i64) {
    let mut s = connect(t);
    let env: serde_json::Map<String, Value> =
        env.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    let req = json!({"jsonrpc": "2.0", "id": 1, "method": "run", "params": {"request": {
        "cwd": t.project().display().to_string(), "tasks": [task], "env": env}}});
    writeln!(s, "{req}").unwrap();
    let mut r = BufReader::new(s);
    let mut out = String::new();
    loop {
        let mut line = String::new();
        assert!(
            r.read_line(&mut line).unwrap() > 0,
            "connection closed early"
        );
        let v: Value = serde_json::from_str(&line).unwrap();
        let ev = &v["params"]["result"];
        match ev["event"].as_str() {
            Some("output") => out.push_str(ev["text"].as_str().unwrap_or_default()),
            Some("run_finished") => return (out, ev["exit_code"].as_i64().unwrap()),
            _ => {}
        }
    }
}

#[test]
fn fifty_clients_doing_twenty_runs_each_get_their_own_output_in_order() {
    let t = std::sync::Arc::new(Scenario::new().rush(
        "tasks:\n  echo:\n    cmd: for i in 1 2 3; do echo \"$N-$i\"; done; exit $((N % 7))\n",
    ));
    t.run(&["echo"]); // start the daemon
    let threads: Vec<_> = (0..50)
        .map(|c| {
            let t = t.clone();
            std::thread::spawn(move || {
                for r in 0..20 {
                    let n = (c * 100 + r).to_string();
                    let (out, code) = run_over_socket(&t, "echo", &[("N", &n)]);
                    assert_eq!(out, format!("{n}-1\n{n}-2\n{n}-3\n"));
                    assert_eq!(code, (c * 100 + r) as i64 % 7);
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
}

/// A raw connection speaking one framing, reading answers as raw text (to
/// compare ids byte for byte).
struct Raw {
    write: UnixStream,
    read: BufReader<UnixStream>,
    lsp: bool,
}

impl Raw {
    fn open(t: &Scenario, lsp: bool) -> Raw {
        let s = connect(t);
        Raw {
            write: s.try_clone().unwrap(),
            read: BufReader::new(s),
            lsp,
        }
    }

    fn send(&mut self, msg: &str) {
        if self.lsp {
            write!(self.write, "Content-Length: {}\r\n\r\n{msg}", msg.len()).unwrap();
        } else {
            writeln!(self.write, "{msg}").unwrap();
        }
    }

    fn recv(&mut self) -> String {
        if !self.lsp {
            let mut line = String::new();
            assert!(self.read.read_line(&mut line).unwrap() > 0, "closed");
            return line.trim_end().to_owned();
        }
        let mut header = String::new();
        self.read.read_line(&mut header).unwrap();
        let len: usize = header
            .strip_prefix("Content-Length: ")
            .unwrap_or_else(|| panic!("{header:?}"))
            .trim()
            .parse()
            .unwrap();
        let mut blank = String::new();
        self.read.read_line(&mut blank).unwrap();
        let mut body = vec![0; len];
        self.read.read_exact(&mut body).unwrap();
        String::from_utf8(body).unwrap()
    }
}

const FRAMINGS: [(&str, bool); 2] = [("newline-delimited", false), ("Content-Length", true)];

#[test]
fn every_number_or_string_id_is_answered_with_exactly_the_text_sent_in_both_framings() {
    let t = started();
    let ids = [
        "-7",
        "1.5",
        "0",
        "18446744073709551616",
        "1e3",
        "\"abc\"",
        "\"\\u00e9\"",
        "-0.25",
        "42",
        "18446744073709551615",
        "\"é\"",
        "\"\\u0000rid:5\"",
    ];
    for (name, lsp) in FRAMINGS {
        let mut c = Raw::open(&t, lsp);
        for id in ids {
            c.send(&format!(
                "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"daemon_status\"}}"
            ));
            let answer = c.recv();
            assert!(
                answer.starts_with(&format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"result\":")),
                "{name}: id {id}: {answer}"
            );
            // An error answer carries the id too.
            c.send(&format!(
                "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"nope\"}}"
            ));
            let answer = c.recv();
            assert!(
                answer.starts_with(&format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"error\":")),
                "{name}: id {id}: {answer}"
            );
        }
        // In a batch too.
        c.send(concat!(
            "[{\"jsonrpc\":\"2.0\",\"id\":-7,\"method\":\"daemon_status\"},",
            "{\"jsonrpc\":\"2.0\",\"id\":2.50,\"method\":\"nope\"}]"
        ));
        let answer = c.recv();
        assert!(
            answer.starts_with("[{\"jsonrpc\":\"2.0\",\"id\":-7,\"result\":")
                && answer.contains("{\"jsonrpc\":\"2.0\",\"id\":2.50,\"error\":"),
            "{name}: {answer}"
        );
    }
}

#[test]
fn a_run_with_a_negative_or_fractional_id_is_answered_with_that_id_in_both_framings() {
    let t = started();
    for (name, lsp) in FRAMINGS {
        for id in ["-7", "1.5"] {
            let mut c = Raw::open(&t, lsp);
            let req = json!({"jsonrpc": "2.0", "id": 0, "method": "run", "params": {"request": {
                "cwd": t.project().display().to_string(), "tasks": ["hi"]}}})
            .to_string()
            .replace("\"id\":0", &format!("\"id\":{id}"));
            c.send(&req);
            let answer = c.recv();
            assert!(
                answer.starts_with(&format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"result\":")),
                "{name}: {answer}"
            );
            loop {
                let v: Value = serde_json::from_str(&c.recv()).unwrap();
                if v["params"]["result"]["event"] == "run_finished" {
                    break;
                }
            }
        }
    }
}

#[test]
fn an_id_that_is_not_a_number_or_string_is_an_invalid_request_and_nothing_runs_in_both_framings() {
    let t = Scenario::new().rush("tasks:\n  mark:\n    cmd: touch marked\n");
    t.start_daemon(&[]);
    for (name, lsp) in FRAMINGS {
        let mut c = Raw::open(&t, lsp);
        for id in ["true", "false", "{\"a\":1}", "[1]"] {
            let req = json!({"jsonrpc": "2.0", "id": 0, "method": "run", "params": {"request": {
                "cwd": t.project().display().to_string(), "tasks": ["mark"]}}})
            .to_string()
            .replace("\"id\":0", &format!("\"id\":{id}"));
            c.send(&req);
            let v: Value = serde_json::from_str(&c.recv()).unwrap();
            assert_eq!(v["id"], Value::Null, "{name}: {v}");
            assert_eq!(v["error"]["code"], -32600, "{name}: {v}");
            let message = v["error"]["message"].as_str().unwrap();
            assert!(
                message.contains("`id` must be a number or a string"),
                "{message}"
            );
        }
        // The connection still works, and nothing ran.
        c.send("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"daemon_status\"}");
        let v: Value = serde_json::from_str(&c.recv()).unwrap();
        assert_eq!(v["id"], 1);
    }
    assert!(!t.project().join("marked").exists(), "a refused run ran");
}

#[test]
fn notifications_are_never_answered_and_subscriptions_sent_as_notifications_do_not_start_in_both_framings()
 {
    let t = Scenario::new().rush(concat!(
        "tasks:\n",
        "  mark:\n    cmd: touch marked\n",
        "  slow:\n    cmd: sleep 0.5\n"
    ));
    t.start_daemon(&[]);
    let cwd = t.project().display().to_string();
    for (name, lsp) in FRAMINGS {
        let mut c = Raw::open(&t, lsp);
        let run = json!({"jsonrpc": "2.0", "method": "run", "params": {"request": {
            "cwd": cwd, "tasks": ["mark"]}}});
        let dispatch = json!({"jsonrpc": "2.0", "method": "dispatch", "params": {
            "request": {"cwd": cwd, "tasks": []}, "args": ["mark"]}});
        for msg in [
            run.to_string(),
            dispatch.to_string(),
            "{\"jsonrpc\":\"2.0\",\"method\":\"events\"}".to_owned(),
            "{\"jsonrpc\":\"2.0\",\"method\":\"daemon_status\"}".to_owned(),
            "{\"jsonrpc\":\"2.0\",\"method\":\"no_such_method\"}".to_owned(),
            "{\"jsonrpc\":\"2.0\",\"method\":\"cancel_run\",\"params\":{}}".to_owned(),
        ] {
            c.send(&msg);
        }
        // A real run afterwards: everything on the connection until it
        // finishes belongs to it.
        let req = json!({"jsonrpc": "2.0", "id": 5, "method": "run", "params": {"request": {
            "cwd": cwd, "tasks": ["slow"]}}});
        c.send(&req.to_string());
        let answer: Value = serde_json::from_str(&c.recv()).unwrap();
        assert_eq!(answer["id"], 5, "{name}: {answer}");
        let sub = answer["result"].clone();
        loop {
            let v: Value = serde_json::from_str(&c.recv()).unwrap();
            assert_eq!(v["method"], "run_event", "{name}: {v}");
            assert_eq!(v["params"]["subscription"], sub, "{name}: {v}");
            if v["params"]["result"]["event"] == "run_finished" {
                break;
            }
        }
    }
    assert!(
        !t.project().join("marked").exists(),
        "a notification ran a task"
    );
}

#[test]
fn a_missing_or_mistyped_parameter_is_named_by_name_and_by_position_in_both_framings() {
    let t = started();
    let cases = [
        (
            json!({"method": "run", "params": {}}),
            "missing parameter `request`",
        ),
        (
            json!({"method": "run", "params": []}),
            "missing parameter `request`",
        ),
        (json!({"method": "run"}), "missing parameter `request`"),
        (
            json!({"method": "run", "params": {"request": 5}}),
            "invalid parameter `request`: invalid type: integer `5`, expected an object (RunRequest)",
        ),
        (
            json!({"method": "run", "params": {"request": {"cwd": "/"}}}),
            "invalid parameter `request`: missing field `tasks`",
        ),
        (
            json!({"method": "run", "params": [{"cwd": "/", "tasks": ["a", 5]}]}),
            "invalid parameter `request.tasks[1]`: invalid type: integer `5`, expected a string",
        ),
        (
            json!({"method": "cancel_run", "params": {"run_id": "x"}}),
            "invalid parameter `run_id`: invalid type: string \"x\", expected u64",
        ),
        (
            json!({"method": "cancel_run", "params": ["x"]}),
            "invalid parameter `run_id`: invalid type: string \"x\", expected u64",
        ),
        (
            json!({"method": "cancel_run", "params": [1, true, "t", 4]}),
            "too many parameters: `cancel_run` takes 3: `run_id`, `force`, `token`, 4 were sent",
        ),
        (
            json!({"method": "list_tasks", "params": [3]}),
            "invalid parameter `cwd`: invalid type: integer `3`, expected a string",
        ),
        (
            json!({"method": "dispatch", "params": [{"cwd": "/", "tasks": []}, "x"]}),
            "invalid parameter `args`: invalid type: string \"x\", expected a sequence",
        ),
    ];
    for (name, lsp) in FRAMINGS {
        let mut c = Raw::open(&t, lsp);
        for (i, (mut req, expected)) in cases.clone().into_iter().enumerate() {
            req["jsonrpc"] = json!("2.0");
            req["id"] = json!(i);
            c.send(&req.to_string());
            let v: Value = serde_json::from_str(&c.recv()).unwrap();
            assert_eq!(v["id"], i, "{name}: {v}");
            assert_eq!(v["error"]["code"], -32602, "{name}: {req}: {v}");
            assert_eq!(v["error"]["message"], expected, "{name}: {req}");
        }
    }
}

#[test]
fn hello_names_the_protocol_minor_and_capabilities_and_refuses_a_missing_required_one() {
    let t = started();
    let hello = |params: Value| {
        exchange(
            &t,
            &format!(
                "{}\n",
                json!({"jsonrpc": "2.0", "id": 1, "method": "hello", "params": params})
            ),
            1,
        )
        .remove(0)
    };
    let plain = hello(json!({"version": "x", "protocol": 1}));
    assert_eq!(plain["result"]["protocol"], 1);
    assert!(plain["result"]["minor"].as_u64().unwrap() >= 1, "{plain}");
    let caps = plain["result"]["capabilities"].as_array().unwrap();
    for name in [
        "dispatch",
        "explain_run",
        "outputs",
        "grants",
        "includes",
        "exact_ids",
    ] {
        assert!(caps.contains(&json!(name)), "{name} not in {caps:?}");
    }
    assert!(plain["result"].get("optional").is_none(), "{plain}");

    let asked = hello(json!({"version": "x", "protocol": 1,
        "required": ["dispatch"], "optional": ["explain_run", "teleport"]}));
    assert_eq!(
        asked["result"]["optional"],
        json!({"explain_run": true, "teleport": false})
    );

    let refused = hello(json!(["x", 1, ["dispatch", "teleport", "time_travel"]]));
    assert_eq!(refused["error"]["code"], -32003, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(
        message.ends_with("requires: `teleport`, `time_travel`"),
        "{message}"
    );
    assert!(refused["error"]["data"]["hint"].is_string(), "{refused}");
}
