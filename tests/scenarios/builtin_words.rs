//! One rule for built-in words: `taskrush NAME` runs task `NAME` unless
//! `NAME` is a built-in word, which hides the task; the task stays
//! reachable as `taskrush run NAME`, and the daemon says so at load.

use taskrush_tests::Scenario;

#[test]
fn a_task_named_like_a_built_in_word_runs_with_run_and_a_warning_naming_its_line() {
    let s = Scenario::new()
        .rush("tasks:\n  build:\n    cmd: echo built\n  events:\n    cmd: echo the events task\n");
    let out = s.run(&["run", "events"]);
    out.expect_stdout("the events task\n").success();
    out.expect_stderr_containing(
        "warning: task `events` (`[TMP]/project/.rush:4`) has the name of the built-in `taskrush events`: run it as `taskrush run events`",
    );
    // Other tasks run as before, with the same warning.
    let out = s.run(&["build"]);
    out.expect_stdout("built\n").success();
    out.expect_stderr_containing("run it as `taskrush run events`");
    let list = s.run(&["--list"]);
    list.success();
    assert!(list.stdout().contains("events"), "{}", list.stdout());
    list.expect_stderr_containing("run it as `taskrush run events`");
    // The built-in word itself is the built-in.
    s.run(&["events", "--help"]).success().expect_stderr("");
}
