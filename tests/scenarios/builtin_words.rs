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
        "warning: task `events` (`[TMP]/project/.rush:4:3`) has the name of the built-in `taskrush events`: run it as `taskrush run events`",
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

#[test]
fn two_tasks_named_like_built_in_words_get_one_warning_line_each_with_line_and_column() {
    let s = Scenario::new()
        .rush("tasks:\n  lsp:\n    cmd: echo the lsp task\n  help:\n    cmd: echo the help task\n");
    let out = s.run(&["run", "lsp"]);
    out.expect_stdout("the lsp task\n").success();
    let stderr = out.stderr();
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("has the name of the built-in"))
        .collect();
    assert_eq!(warnings.len(), 2, "one line per task: {stderr}");
    out.expect_stderr_containing(
        "warning: task `help` (`[TMP]/project/.rush:4:3`) has the name of the built-in `taskrush help`: run it as `taskrush run help`\n",
    );
    out.expect_stderr_containing(
        "warning: task `lsp` (`[TMP]/project/.rush:2:3`) has the name of the built-in `taskrush lsp`: run it as `taskrush run lsp`\n",
    );
}
