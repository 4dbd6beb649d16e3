//! `taskrush TASK -- ARGS…`: arguments reach the last named task as
//! `"$@"` and `$TASKRUSH_ARGS`, verbatim, and are part of its cache key.

use taskrush_tests::Scenario;

/// Arguments a shell would mangle if they were pasted into the command.
const NASTY: &[&str] = &[
    "two words",
    "it's \"quoted\"",
    "$(touch pwned)",
    "; touch pwned2",
    "*",
    "line one\nline two",
    "",
    "back\\slash `tick` $HOME",
];

const SHOW: &str = r#"
tasks:
  show:
    cmd: for a in "$@"; do printf '<%s>\n' "$a"; done
  evaled:
    cmd: eval set -- "$TASKRUSH_ARGS"; for a in "$@"; do printf '<%s>\n' "$a"; done
"#;

fn expected() -> String {
    NASTY.iter().map(|a| format!("<{a}>\n")).collect()
}

fn with_args<'a>(task: &'a str, prefix: &[&'a str]) -> Vec<&'a str> {
    let mut v: Vec<&str> = prefix.to_vec();
    v.push(task);
    v.push("--");
    v.extend_from_slice(NASTY);
    v
}

#[test]
fn arguments_with_quotes_spaces_substitutions_and_newlines_arrive_verbatim_in_dollar_at() {
    let t = Scenario::new().rush(SHOW).file("a.txt", "");
    t.run(&with_args("show", &[]))
        .expect_stdout(&expected())
        .success();
    t.run(&with_args("show", &["run"]))
        .expect_stdout(&expected())
        .success();
    assert!(!t.project().join("pwned").exists(), "an argument ran");
    assert!(!t.project().join("pwned2").exists(), "an argument ran");
}

#[test]
fn taskrush_args_gives_the_same_arguments_back_through_eval() {
    let t = Scenario::new().rush(SHOW).file("a.txt", "");
    t.run(&with_args("evaled", &[]))
        .expect_stdout(&expected())
        .success();
    assert!(!t.project().join("pwned").exists(), "an argument ran");
}

#[test]
fn without_arguments_the_task_sees_none_and_no_taskrush_args() {
    Scenario::new()
        .rush("tasks:\n  t:\n    cmd: 'echo \"$#:${TASKRUSH_ARGS-unset}\"'\n")
        .run(&["t"])
        .expect_stdout("0:unset\n")
        .success();
}

#[test]
fn arguments_go_to_the_last_named_task_only() {
    let rush = r#"
tasks:
  dep:
    cmd: 'echo "dep $# ${TASKRUSH_ARGS-unset}"'
  first:
    cmd: 'echo "first $#"'
  last:
    cmd: 'echo "last $# $1"'
    depends_on: [dep]
"#;
    Scenario::new()
        .rush(rush)
        .run(&["first", "last", "--", "x y"])
        .expect_stdout("first 0\ndep 0 unset\nlast 1 x y\n")
        .success();
}

#[test]
fn hooks_see_the_arguments_too() {
    let rush = r#"
tasks:
  t:
    before: 'echo "before $1"'
    cmd: 'echo "cmd $1"'
    after: 'echo "after $1"'
"#;
    Scenario::new()
        .rush(rush)
        .run(&["t", "--", "a"])
        .expect_stdout("before a\ncmd a\nafter a\n")
        .success();
}

#[test]
fn changing_the_arguments_reruns_a_cached_task_and_the_same_arguments_are_cached() {
    let rush = r#"
tasks:
  t:
    cmd: 'echo "$@" >> runs.log'
    cache_files: [in.txt]
"#;
    let t = Scenario::new().rush(rush).file("in.txt", "x");
    let runs = |t: &Scenario| t.read("runs.log");
    t.run(&["t", "--", "a"]).success();
    t.run(&["t", "--", "a"])
        .expect_stderr("taskrush: `t` is up to date\n")
        .success();
    assert_eq!(runs(&t), "a\n");
    t.run(&["t", "--", "a b"]).success();
    t.run(&["t", "--", "a", "b"]).success();
    assert_eq!(runs(&t), "a\na b\na b\n");
    t.run(&["t"]).success();
    t.run(&["t"]).success();
    assert_eq!(runs(&t), "a\na b\na b\n\n");
    // The cache remembers a task's last run: going back to `a` runs again.
    t.run(&["t", "--", "a"]).success();
    assert_eq!(runs(&t), "a\na b\na b\n\na\n");
}

#[test]
fn an_editor_passes_arguments_with_the_args_field_of_the_run_request() {
    use std::io::{BufRead, BufReader, Write};
    let t = Scenario::new().rush(SHOW);
    t.run(&["--list"]).success();
    let mut s = std::os::unix::net::UnixStream::connect(t.socket()).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    let req = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "run", "params": {"request": {
        "cwd": t.project().display().to_string(), "tasks": ["show"], "args": NASTY}}});
    writeln!(s, "{req}").expect("send");
    let mut r = BufReader::new(s);
    let mut out = String::new();
    loop {
        let mut line = String::new();
        assert!(r.read_line(&mut line).expect("read") > 0, "closed early");
        let v: serde_json::Value = serde_json::from_str(&line).expect("JSON");
        let ev = &v["params"]["result"];
        if ev["event"] == "output" {
            out.push_str(ev["text"].as_str().unwrap_or_default());
        }
        if ev["event"] == "run_finished" {
            assert_eq!(ev["exit_code"], 0, "{ev}");
            break;
        }
    }
    assert_eq!(out, expected());
}
