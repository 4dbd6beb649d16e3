//! `duration_ms` measures the task's command, from its spawn to its exit:
//! not the plugins' hooks, not their cold start, not the cache check.

use std::time::Duration;

use taskrush_tests::Scenario;

/// A plugin that takes 1.5 s to start and records each `after_task` result.
const SLOW_START: &str = r#"
import json, os, sys, time
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results.jsonl")
time.sleep(1.5)
for line in sys.stdin:
    msg = json.loads(line)
    method, mid, params = msg.get("method"), msg.get("id"), msg.get("params") or {}
    if method == "initialize":
        result = {"name": "slow", "version": "1.0.0", "protocol": 1,
                  "hooks": ["before_task", "after_task"], "commands": []}
    elif method == "after_task":
        with open(RESULTS, "a") as f:
            f.write(json.dumps(params.get("result")) + "\n")
        result = None
    elif method == "shutdown":
        print(json.dumps({"jsonrpc": "2.0", "id": mid, "result": None}), flush=True)
        break
    else:
        result = None
    if mid is not None:
        print(json.dumps({"jsonrpc": "2.0", "id": mid, "result": result}), flush=True)
"#;

#[test]
fn a_slow_starting_plugin_is_not_counted_in_the_tasks_duration() {
    let t = Scenario::new()
        .file(".rush-plugins/slow/plugin.py", SLOW_START)
        .file(
            ".rush-plugins/slow/plugin.toml",
            "name = \"slow\"\nversion = \"1.0.0\"\n\
             entry_point = [\"python3\", \"-I\", \"-u\", \"plugin.py\"]\n\
             taskrush_version = \">=0.3\"\n[permissions]\nfilesystem = [\".\"]\n",
        )
        .grant("slow")
        .rush("plugins:\n  - {name: slow, timeout: 30s}\ntasks:\n  quick:\n    cmd: 'true'\n");
    t.start_daemon(&[]);
    let mut events = t.events();
    t.run(&["quick"]).success();
    let finished = events.wait_for("task_finished", |e| {
        e["event"] == "task_finished" && e["task"] == "quick"
    });
    let results = t.read(".rush-plugins/slow/results.jsonl");
    let result: serde_json::Value =
        serde_json::from_str(results.lines().next().expect("one result")).unwrap();
    // `true` takes a few ms; the plugin's start alone takes 1,500.
    let limit = Duration::from_millis(1000).as_millis() as u64;
    let told = result["duration_ms"].as_u64().expect("duration_ms");
    assert!(told < limit, "after_task was told {told} ms: {result}");
    let published = finished["duration_ms"].as_u64().expect("duration_ms");
    assert!(
        published < limit,
        "task_finished says {published} ms: {finished}"
    );
}
