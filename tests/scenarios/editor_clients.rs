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
