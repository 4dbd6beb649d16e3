//! The terminal is the user's: a task run from a terminal sees one.

use taskrush_tests::{Scenario, run_in_terminal};

#[test]
fn a_task_run_from_a_terminal_sees_a_terminal() {
    let t = Scenario::new().rush(
        "tasks:\n  tty:\n    cmd: if test -t 1; then echo on-a-tty; else echo not-a-tty; fi\n",
    );
    let (screen, code) = run_in_terminal(&t, &["tty"], None);
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("on-a-tty"), "{screen}");
}

#[test]
fn a_task_run_through_a_pipe_sees_the_pipe() {
    Scenario::new()
        .rush(
            "tasks:\n  tty:\n    cmd: if test -t 1; then echo on-a-tty; else echo not-a-tty; fi\n",
        )
        .run(&["tty"])
        .expect_stdout("not-a-tty\n")
        .success();
}

#[test]
fn an_interactive_task_reads_the_keyboard() {
    let t = Scenario::new().rush(
        "tasks:\n  ask:\n    cmd: printf 'name? '; touch asked; read name; echo \"hello $name\"\n",
    );
    let (screen, code) = run_in_terminal(&t, &["ask"], Some(("asked", b"world\n")));
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("hello world"), "{screen}");
}

#[test]
fn colours_pass_through_untouched() {
    let t = Scenario::new().rush("tasks:\n  red:\n    cmd: printf '\\033[31mred\\033[0m\\n'\n");
    let (screen, code) = run_in_terminal(&t, &["red"], None);
    assert_eq!(code, 0);
    assert!(screen.contains("\x1b[31mred\x1b[0m"), "{screen:?}");
}

#[test]
fn a_pipe_closed_early_ends_the_run_quietly() {
    let t = Scenario::new().rush("tasks:\n  spam:\n    cmd: yes spam\n");
    let out = t.sh("taskrush spam | head -1");
    out.expect_stdout("spam\n").success();
    assert_eq!(out.stderr(), "", "nothing said about the closed pipe");
}
