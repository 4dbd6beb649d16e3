//! What one connection may cost the daemon: bounded batches, output that
//! a client does not read blocks its task instead of piling up, and idle
//! or slow connections cost little memory. The daemon runs under an
//! address-space limit here, so that a regression fails the scenario
//! instead of eating the machine.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use taskrush_tests::{Scenario, processes_matching, wait_until};

/// Start this scenario's daemon by hand, its address space limited to
/// 4 GiB; its pid.
fn start_limited_daemon(t: &Scenario) -> u32 {
    let started = t.sh("ulimit -v 4194304 && taskrushd --notify-ready &");
    let out = started.stdout();
    let pid = out
        .trim()
        .strip_prefix("ready ")
        .and_then(|p| p.parse().ok());
    pid.unwrap_or_else(|| panic!("the daemon did not start: {out:?}"))
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib / 1024.0
}

fn connect(t: &Scenario) -> UnixStream {
    let s = UnixStream::connect(t.socket()).expect("connect to the daemon");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

fn read_line(s: &UnixStream) -> serde_json::Value {
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).expect("an answer");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:.200}"))
}

const STATUS: &str = r#"{"jsonrpc":"2.0","id":1,"method":"daemon_status"}"#;

#[test]
fn a_batch_above_the_request_limit_is_refused_with_one_error() {
    let t = Scenario::new();
    start_limited_daemon(&t);
    let mut s = connect(&t);
    let batch = format!("[{}]\n", vec![STATUS; 1001].join(","));
    s.write_all(batch.as_bytes()).unwrap();
    let answer = read_line(&s);
    let shown: String = answer.to_string().chars().take(300).collect();
    assert_eq!(answer["error"]["code"], -32006, "{shown}");
    assert_eq!(
        answer["error"]["message"],
        "batch of 1001 requests is above the limit of 1000; send them in smaller batches"
    );
    // A batch within the limit is answered in full.
    let batch = format!("[{}]\n", vec![STATUS; 1000].join(","));
    s.write_all(batch.as_bytes()).unwrap();
    let answer = read_line(&s);
    assert_eq!(answer.as_array().map(Vec::len), Some(1000));
}

#[test]
fn a_client_that_never_reads_its_run_output_makes_the_task_wait_not_the_daemon_grow() {
    let t = Scenario::new()
        .rush("tasks:\n  zeros:\n    cmd: head -c 3000000000 /dev/zero; touch finished\n");
    let pid = start_limited_daemon(&t);
    let before = rss_mib(pid);
    let mut s = connect(&t);
    let run = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "run", "params": {"request": {
        "cwd": t.project().display().to_string(), "tasks": ["zeros"], "env": {"PATH": std::env::var("PATH").unwrap()}}}});
    writeln!(s, "{run}").unwrap();
    // Nothing is read. The daemon's memory must level off while the task
    // still has output to write.
    assert!(wait_until(Duration::from_secs(20), || !processes_matching(
        "head -c 3000000000"
    )
    .is_empty()));
    let mut peak: f64 = 0.0;
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        peak = peak.max(rss_mib(pid));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !t.project().join("finished").exists(),
        "the task ran on as if its output were read"
    );
    assert!(
        peak - before < 32.0,
        "the daemon grew by {:.1} MiB",
        peak - before
    );
    // The client leaves: its run is cancelled and the task ends.
    drop(s);
    assert!(wait_until(Duration::from_secs(10), || processes_matching(
        "head -c 3000000000"
    )
    .is_empty()));
}

#[test]
fn two_thousand_idle_connections_cost_little_memory() {
    let t = Scenario::new().env("TASKRUSH_MAX_CONNECTIONS", "4096");
    let pid = start_limited_daemon(&t);
    let before = rss_mib(pid);
    let conns: Vec<_> = (0..2000)
        .map(|_| {
            let mut s = connect(&t);
            writeln!(s, "{STATUS}").unwrap();
            assert!(read_line(&s)["result"].is_object());
            s
        })
        .collect();
    let grown = rss_mib(pid) - before;
    drop(conns);
    assert!(grown < 24.0, "2,000 idle connections cost {grown:.1} MiB");
}

#[test]
fn a_thousand_slowloris_connections_cost_little_memory() {
    let t = Scenario::new().env("TASKRUSH_MAX_CONNECTIONS", "4096");
    let pid = start_limited_daemon(&t);
    let before = rss_mib(pid);
    let mut conns: Vec<_> = (0..1000).map(|_| connect(&t)).collect();
    let mut peak: f64 = 0.0;
    for byte in [b"{", b" ", b" "] {
        for s in &mut conns {
            let _ = s.write_all(byte);
        }
        peak = peak.max(rss_mib(pid));
        std::thread::sleep(Duration::from_millis(300));
    }
    peak = peak.max(rss_mib(pid));
    drop(conns);
    let grown = peak - before;
    assert!(grown < 16.0, "1,000 slow connections cost {grown:.1} MiB");
}

#[test]
fn the_requests_of_a_batch_past_its_answer_limit_are_not_run_and_say_why() {
    // 100 tasks with 1 KiB descriptions: each `list_tasks` answer is over
    // 100 KiB, so 1,000 of them pass the 4 MiB limit after about 40.
    let mut rush = String::from("tasks:\n");
    let description = "d".repeat(1024);
    for i in 0..100 {
        rush.push_str(&format!(
            "  t{i}:\n    cmd: \"true\"\n    description: {description}\n"
        ));
    }
    let t = Scenario::new().rush(&rush);
    start_limited_daemon(&t);
    let mut s = connect(&t);
    let list = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "list_tasks",
        "params": {"cwd": t.project().display().to_string()}})
    .to_string();
    let batch = format!("[{}]\n", vec![list.as_str(); 1000].join(","));
    s.write_all(batch.as_bytes()).unwrap();
    let answer = read_line(&s);
    let items = answer.as_array().expect("a batch answer");
    assert_eq!(items.len(), 1000);
    let run = items.iter().filter(|i| i["result"].is_object()).count();
    assert!((30..50).contains(&run), "{run} requests run");
    let last = &items[999]["error"];
    assert_eq!(last["code"], -32006);
    assert_eq!(
        last["message"],
        "not run: the answers to this batch passed 4 MiB; send smaller batches"
    );
}

#[test]
fn clients_that_never_read_their_run_output_do_not_hold_up_daemon_stop() {
    // Given two clients whose runs write without end and who never read,
    let t = Scenario::new().rush("tasks:\n  spam:\n    cmd: yes never-read-spam\n");
    t.start_daemon(&[]);
    let run = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "run", "params": {"request": {
        "cwd": t.project().display().to_string(), "tasks": ["spam"], "env": {"PATH": std::env::var("PATH").unwrap()}}}});
    let held: Vec<_> = (0..2)
        .map(|_| {
            let mut s = connect(&t);
            writeln!(s, "{run}").unwrap();
            s
        })
        .collect();
    assert!(wait_until(Duration::from_secs(20), || processes_matching(
        "yes never-read-spam"
    )
    .len()
        >= 2));
    // when I stop the daemon, it stops within a short grace for their
    // last events (it waited 5 s for the runs, then 2 s more, before),
    let out = t.run(&["daemon", "stop"]);
    out.success();
    assert!(
        out.elapsed < Duration::from_secs(4),
        "took {:?}",
        out.elapsed
    );
    // and the tasks are gone.
    assert!(processes_matching("yes never-read-spam").is_empty());
    drop(held);
}
