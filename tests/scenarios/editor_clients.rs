//! What an editor extension does over the socket beyond running a task:
//! finding the projects of a workspace, following runs other clients
//! started, naming its runs with its own tokens.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde_json::{Value, json};
use taskrush_tests::Scenario;

/// A raw NDJSON connection, as an editor opens one.
struct Conn {
    w: UnixStream,
    r: BufReader<UnixStream>,
    next_id: u64,
}

impl Conn {
    fn open(t: &Scenario) -> Conn {
        let w = UnixStream::connect(t.socket()).expect("connect");
        w.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let r = BufReader::new(w.try_clone().expect("dup"));
        Conn { w, r, next_id: 1 }
    }

    fn send(&mut self, method: &str, params: Value) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let req = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        writeln!(self.w, "{req}").expect("send");
        id
    }

    /// The next message from the daemon.
    fn read(&mut self) -> Value {
        let mut line = String::new();
        let n = self.r.read_line(&mut line).expect("read a message");
        assert!(n > 0, "the daemon closed the connection");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    }

    /// Call and wait for the answer to this call (other messages are kept
    /// in `skipped`).
    fn call(&mut self, method: &str, params: Value, skipped: &mut Vec<Value>) -> Value {
        let id = self.send(method, params);
        loop {
            let m = self.read();
            if m["id"] == id {
                return m;
            }
            skipped.push(m);
        }
    }
}

fn started() -> Scenario {
    let t = Scenario::new();
    t.run(&["daemon", "start"]).success();
    t
}

#[test]
fn find_projects_lists_every_rush_file_under_a_folder_except_ignored_and_too_deep_ones() {
    let t = started();
    let ok = "tasks:\n  hi:\n    cmd: echo hi\n";
    t.write("ws/.rush", ok);
    t.write("ws/.gitignore", "build/\n");
    t.write("ws/app/.rush.yml", ok);
    t.write("ws/lib/.rush", "tasks:\n  x: [\n");
    t.write("ws/build/.rush", ok);
    t.write("ws/.git/sub/.rush", ok);
    t.write("ws/a/b/c/d/.rush", ok);
    let ws = t.project().join("ws");
    let canon = ws.canonicalize().expect("canonical");
    let mut c = Conn::open(&t);
    let mut skipped = Vec::new();
    let got = c.call(
        "find_projects",
        json!({"folder": ws.display().to_string(), "max_depth": 3}),
        &mut skipped,
    );
    let r = &got["result"];
    let files: Vec<&str> = r["projects"]
        .as_array()
        .unwrap_or_else(|| panic!("{got}"))
        .iter()
        .map(|p| p["file"].as_str().expect("file"))
        .collect();
    let want = [".rush", "app/.rush.yml", "lib/.rush"].map(|f| canon.join(f).display().to_string());
    assert_eq!(files, want, "{got}");
    assert_eq!(r["truncated"], false);
    assert!(
        r["projects"][0].get("ok").is_none(),
        "not parsed unasked: {got}"
    );

    // Parsed, and bounded by count.
    let got = c.call(
        "find_projects",
        json!({"folder": ws.display().to_string(), "max_depth": 3, "parse": true}),
        &mut skipped,
    );
    let p = &got["result"]["projects"];
    assert_eq!(p[0]["ok"], true, "{got}");
    assert_eq!(p[0]["tasks"], 1, "{got}");
    assert_eq!(p[2]["ok"], false, "{got}");
    assert_eq!(p[2]["error"]["code"], -32001, "{got}");
    assert!(p[2]["error"]["data"]["line"].is_u64(), "positioned: {got}");
    let got = c.call(
        "find_projects",
        json!({"folder": ws.display().to_string(), "max_count": 2}),
        &mut skipped,
    );
    assert_eq!(
        got["result"]["projects"].as_array().map(Vec::len),
        Some(2),
        "{got}"
    );
    assert_eq!(got["result"]["truncated"], true, "{got}");

    let got = c.call("find_projects", json!({"folder": "ws"}), &mut skipped);
    assert_eq!(got["error"]["code"], -32602, "{got}");
    assert!(
        got["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("`folder`")),
        "{got}"
    );
}

/// A task that prints `first`, waits (at most 60 s) for the file `go` in
/// the project, then prints `second`.
const GATED: &str = "tasks:\n  gated:\n    cmd: echo first; i=0; while [ ! -e go ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; echo second\n";

fn run_params(t: &Scenario, task: &str, token: Option<&str>) -> Value {
    let mut req = json!({"cwd": t.project().display().to_string(), "tasks": [task]});
    if let Some(token) = token {
        req["token"] = token.into();
    }
    json!({ "request": req })
}

/// Read until a notification of `method` whose event `pred` accepts.
fn until(c: &mut Conn, method: &str, pred: impl Fn(&Value) -> bool) -> Value {
    loop {
        let m = c.read();
        if m["method"] == method && pred(&m["params"]["result"]) {
            return m["params"]["result"].clone();
        }
    }
}

#[test]
fn a_second_connection_sees_a_run_mid_way_and_follows_its_later_output_to_its_end() {
    let t = started();
    t.write(".rush", GATED);
    let mut stream = t.events();
    let mut a = Conn::open(&t);
    let mut skipped = Vec::new();
    let hello = a.call(
        "hello",
        json!({"version": "test", "protocol": 1, "client": "editor-a"}),
        &mut skipped,
    );
    assert!(hello.get("result").is_some(), "{hello}");
    a.send("run", run_params(&t, "gated", None));
    until(&mut a, "run_event", |e| {
        e["event"] == "output" && e["text"] == "first\n"
    });

    // Another window opens mid-run.
    let mut b = Conn::open(&t);
    let runs = b.call("list_runs", json!({}), &mut skipped);
    let runs = runs["result"].as_array().cloned().unwrap_or_default();
    assert_eq!(runs.len(), 1, "{runs:?}");
    let run = &runs[0];
    assert_eq!(run["client"]["name"], "editor-a", "{run}");
    assert_eq!(run["client"]["pid"], std::process::id(), "{run}");
    assert_eq!(
        run["tasks"],
        json!([{"task": "gated", "state": "running"}]),
        "{run}"
    );
    assert_eq!(run["inherit_stdio"], false, "{run}");
    assert!(run["started_ms"].as_u64().is_some_and(|ms| ms > 0), "{run}");
    let run_id = run["run_id"].as_u64().expect("a run id");

    let answer = b.call("attach", json!({ "run_id": run_id }), &mut skipped);
    assert!(answer.get("result").is_some(), "{answer}");
    let attached = until(&mut b, "attach_event", |_| true);
    assert_eq!(attached["event"], "attached", "{attached}");
    assert_eq!(attached["tasks"][0]["state"], "running", "{attached}");
    assert!(attached.get("note").is_none(), "{attached}");

    t.write("go", "");
    let mut seen = Vec::new();
    loop {
        let e = until(&mut b, "attach_event", |_| true);
        seen.push(e.clone());
        if e["event"] == "run_finished" {
            assert_eq!(e["status"], "success", "{e}");
            break;
        }
    }
    let outputs: Vec<&Value> = seen.iter().filter(|e| e["event"] == "output").collect();
    assert_eq!(
        outputs.len(),
        1,
        "only the output after attaching: {seen:?}"
    );
    assert_eq!(outputs[0]["text"], "second\n");
    assert!(
        seen.iter().any(|e| e["event"] == "task_finished"),
        "{seen:?}"
    );

    // The event stream said who started it.
    let started = stream.wait_kind("run_started");
    assert_eq!(started["client"]["name"], "editor-a", "{started}");
    assert_eq!(started["run_id"], run_id, "{started}");
    // Over: nothing to list, nothing to attach to.
    let runs = b.call("list_runs", json!({}), &mut skipped);
    assert_eq!(runs["result"], json!([]), "{runs}");
    let gone = b.call("attach", json!({ "run_id": run_id }), &mut skipped);
    assert_eq!(gone["error"]["code"], -32004, "{gone}");
}

#[test]
fn a_stalled_observer_does_not_slow_the_run_and_is_told_what_it_lost() {
    let t = started();
    // 16 MiB of output after `go`: far more than an observer is kept.
    t.write(
        ".rush",
        "tasks:\n  big:\n    cmd: echo first; i=0; while [ ! -e go ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; head -c 16777216 /dev/zero | tr '\\0' a\n",
    );
    let mut a = Conn::open(&t);
    a.send("run", run_params(&t, "big", None));
    let started = until(&mut a, "run_event", |e| e["event"] == "run_started");
    let run_id = started["run_id"].as_u64().expect("run id");
    until(&mut a, "run_event", |e| e["event"] == "output");

    let mut b = Conn::open(&t);
    let mut skipped = Vec::new();
    let answer = b.call("attach", json!({ "run_id": run_id }), &mut skipped);
    assert!(answer.get("result").is_some(), "{answer}");
    // `b` reads nothing from now on; the run goes on to its end.
    t.write("go", "");
    let mut bytes = 0usize;
    let finished = loop {
        let m = a.read();
        let e = &m["params"]["result"];
        if e["event"] == "output" {
            bytes += e["text"].as_str().map_or(0, str::len);
        }
        if e["event"] == "run_finished" {
            break e.clone();
        }
    };
    assert_eq!(finished["status"], "success", "{finished}");
    assert_eq!(
        bytes,
        16 * 1024 * 1024,
        "the run's own client got everything"
    );

    // The observer reads at last: some output, a marker, and the end.
    let mut lagged = None;
    loop {
        let e = until(&mut b, "attach_event", |_| true);
        if e["event"] == "observer_lagged" {
            lagged = Some(e.clone());
        }
        if e["event"] == "run_finished" {
            break;
        }
    }
    let lagged = lagged.expect("an `observer_lagged` marker");
    assert_eq!(lagged["run_id"], run_id, "{lagged}");
    assert!(lagged["missed"].as_u64().is_some_and(|n| n > 0), "{lagged}");
}

#[test]
fn a_window_that_reconnects_attaches_again_and_a_run_on_a_terminal_has_no_output_to_attach_to() {
    let t = started();
    t.write(".rush", GATED);
    // `taskrush gated` passes its terminal (here: pipes): tasks write there.
    let mut cli = t.command(&["gated"]);
    cli.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cli.spawn().expect("spawn taskrush");
    let mut skipped = Vec::new();
    let mut run = None;
    assert!(
        taskrush_tests::wait_until(Duration::from_secs(20), || {
            let mut c = Conn::open(&t);
            let runs = c.call("list_runs", json!({}), &mut Vec::new());
            run = runs["result"]
                .as_array()
                .and_then(|r| r.first().cloned())
                .filter(|r| r["tasks"][0]["state"] == "running");
            run.is_some()
        }),
        "the CLI's run is listed"
    );
    let run = run.expect("a run");
    assert_eq!(run["inherit_stdio"], true, "{run}");
    let run_id = run["run_id"].as_u64().expect("run id");

    let mut b = Conn::open(&t);
    b.call("attach", json!({ "run_id": run_id }), &mut skipped);
    let attached = until(&mut b, "attach_event", |_| true);
    assert_eq!(attached["event"], "attached");
    assert!(
        attached["note"]
            .as_str()
            .is_some_and(|n| n.contains("no output to attach to")),
        "{attached}"
    );
    drop(b);

    // The window reconnects and attaches again.
    let mut c = Conn::open(&t);
    c.call("attach", json!({ "run_id": run_id }), &mut skipped);
    let attached = until(&mut c, "attach_event", |_| true);
    assert_eq!(attached["tasks"][0]["state"], "running", "{attached}");
    t.write("go", "");
    let mut seen = Vec::new();
    loop {
        let e = until(&mut c, "attach_event", |_| true);
        seen.push(e["event"].as_str().unwrap_or_default().to_owned());
        if e["event"] == "run_finished" {
            break;
        }
    }
    assert!(!seen.contains(&"output".to_owned()), "{seen:?}");
    assert!(seen.contains(&"task_finished".to_owned()), "{seen:?}");
    let out = t.finish(child, Duration::from_secs(30));
    out.success();
    assert_eq!(out.stdout(), "first\nsecond\n");
}

#[test]
fn a_run_named_by_its_clients_token_carries_it_and_is_cancelled_by_it() {
    let t = started();
    t.write(".rush", GATED);
    let mut a = Conn::open(&t);
    let mut skipped = Vec::new();
    a.send("run", run_params(&t, "gated", Some("build-1")));
    let first = until(&mut a, "run_event", |_| true);
    assert_eq!(first["event"], "run_started", "{first}");
    assert_eq!(first["token"], "build-1", "every event carries it: {first}");
    let out = until(&mut a, "run_event", |e| e["event"] == "output");
    assert_eq!(out["token"], "build-1", "{out}");

    // The same token again on this connection, while the run goes on.
    let clash = a.call(
        "run",
        run_params(&t, "gated", Some("build-1")),
        &mut skipped,
    );
    assert_eq!(clash["error"]["code"], -32602, "{clash}");
    assert!(
        clash["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("`build-1` is already used by run")),
        "{clash}"
    );
    // Another connection has its own tokens.
    let mut b = Conn::open(&t);
    let listed = b.call("list_runs", json!({}), &mut skipped);
    assert_eq!(listed["result"][0]["token"], "build-1", "{listed}");
    let not_mine = b.call("cancel_run", json!({"token": "build-1"}), &mut skipped);
    assert_eq!(not_mine["error"]["code"], -32004, "{not_mine}");

    let cancelled = a.call("cancel_run", json!({"token": "build-1"}), &mut skipped);
    assert_eq!(cancelled["result"], true, "{cancelled}");
    let end = skipped
        .iter()
        .map(|m| m["params"]["result"].clone())
        .find(|e| e["event"] == "run_finished")
        .unwrap_or_else(|| until(&mut a, "run_event", |e| e["event"] == "run_finished"));
    assert_eq!(end["status"], "cancelled", "{end}");
    assert_eq!(end["token"], "build-1", "{end}");
    // Free again once the run ended (its `run_finished` may reach us a
    // moment before the run is forgotten: a refusal then is retried,
    // within a bound).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answer = a.call(
            "run",
            run_params(&t, "gated", Some("build-1")),
            &mut skipped,
        );
        if answer.get("error").is_none() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline
                && answer["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("already used")),
            "{answer}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let again = skipped
        .drain(..)
        .map(|m| m["params"]["result"].clone())
        .find(|e| e["event"] == "run_started" && e["token"] == "build-1")
        .unwrap_or_else(|| until(&mut a, "run_event", |e| e["event"] == "run_started"));
    assert_eq!(again["event"], "run_started", "{again}");
    t.write("go", "");
    until(&mut a, "run_event", |e| e["event"] == "run_finished");
}
