//! The run summary: after a run of several tasks, on a terminal, one line
//! per task; never in a pipe, never with `--quiet`; colours as the
//! `NO_COLOR` and `CLICOLOR_FORCE` conventions say.

use taskrush_tests::{Scenario, run_in_terminal};

const RUSH: &str = "
tasks:
  gen:
    cmd: echo gen
    cache_files: [in.txt]
  build:
    cmd: echo build
    depends_on: [gen]
  broken:
    cmd: exit 3
    depends_on: [gen]
  after:
    cmd: echo after
    depends_on: [broken]
";

fn project() -> Scenario {
    Scenario::new().rush(RUSH).file("in.txt", "x")
}

/// What the terminal showed, with the pty's `\r\n` as `\n`.
fn terminal(t: &Scenario, args: &[&str]) -> (String, i32) {
    let (out, code) = run_in_terminal(t, args, None);
    (out.replace("\r\n", "\n"), code)
}

#[test]
fn on_a_terminal_each_task_of_the_run_gets_a_line_with_how_it_ended() {
    let t = project().env("NO_COLOR", "1");
    let (out, code) = terminal(&t, &["build"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("gen\nbuild\n"), "{out}");
    let summary: Vec<&str> = out.lines().skip(2).collect();
    assert_eq!(summary.len(), 2, "{out}");
    assert!(summary[0].starts_with("  ran         gen    "), "{out}");
    assert!(
        summary[0].ends_with("ms") || summary[0].ends_with('s'),
        "{out}"
    );
    assert!(summary[1].starts_with("  ran         build  "), "{out}");

    let (out, _) = terminal(&t, &["build"]);
    assert!(out.contains("\n  up to date  gen\n"), "{out}");
    assert!(!out.contains('\x1b'), "NO_COLOR is honoured: {out:?}");
}

#[test]
fn a_failed_run_shows_the_failed_task_and_those_that_did_not_run() {
    let t = project().env("NO_COLOR", "1");
    let (out, code) = terminal(&t, &["after"]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("\n  failed      broken  "), "{out}");
    assert!(out.contains("\n  not run     after\n"), "{out}");
}

#[test]
fn the_summary_is_coloured_on_a_terminal() {
    // Scenarios set `NO_COLOR=1`; empty counts as unset.
    let t = project().env("NO_COLOR", "");
    let (out, _) = terminal(&t, &["build"]);
    assert!(out.contains("  \x1b[32mran       \x1b[0m  gen"), "{out:?}");
}

#[test]
fn quiet_turns_the_summary_off() {
    let t = project();
    let (out, code) = terminal(&t, &["--quiet", "build"]);
    assert_eq!(code, 0);
    assert_eq!(out, "gen\nbuild\n");
    let (out, _) = terminal(&t, &["run", "-q", "build"]);
    assert_eq!(out, "build\n", "no up to date note either");
}

#[test]
fn a_single_task_gets_no_summary() {
    let t = project();
    let (out, _) = terminal(&t, &["gen"]);
    assert_eq!(out, "gen\n");
}

#[test]
fn without_a_terminal_there_is_no_summary() {
    project()
        .run(&["build"])
        .expect_stdout("gen\nbuild\n")
        .expect_stderr("")
        .success();
}

#[test]
fn clicolor_force_colours_output_that_is_not_a_terminal_and_no_color_wins() {
    let rush = "tasks:\n  a: {cmd: echo a}\n  b: {cmd: echo b}\n  all: {depends_on: [a, b]}\n";
    let t = Scenario::new()
        .rush(rush)
        .env("NO_COLOR", "")
        .env("CLICOLOR_FORCE", "1");
    let out = t.run(&["-j", "all"]);
    out.success();
    // Colours go by order of first output: `a` or `b` may come first.
    assert!(
        out.stdout().contains("m[a]\x1b[0m a\n"),
        "{:?}",
        out.stdout()
    );
    let out = t.env("NO_COLOR", "1").run(&["-j", "all"]);
    assert!(out.stdout().contains("[a] a\n"), "{:?}", out.stdout());
    assert!(!out.stdout().contains('\x1b'), "{:?}", out.stdout());
}
