//! `.rush` files: 0.2 compatibility and the errors users see.

use taskrush_tests::Scenario;

#[test]
fn a_02_file_with_both_spellings_mixed_works() {
    Scenario::new()
        .rush(
            "
tasks:
  lint:
    cmd: echo lint
    cache: [src/a.txt]
  build:
    cmd: echo build
    depends_on: [lint]
    cache_files: [src/a.txt]
  test:
    cmd: echo test
    deps: [build]
",
        )
        .file("src/a.txt", "a")
        .run(&["test"])
        .expect_stdout("lint\nbuild\ntest\n")
        .success();
}

/// Run `t` in a project with this `.rush` and return stderr (normalized).
fn error_for(rush: &str) -> String {
    let out = Scenario::new().rush(rush).run(&["t"]);
    out.expect_code(1);
    out.stderr()
}

#[test]
fn a_yaml_syntax_error_names_file_line_and_column() {
    let err = error_for("tasks:\n  t:\n    cmd: [unclosed\n");
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains("  --> [TMP]/project/.rush:"), "{err}");
}

#[test]
fn an_unknown_key_suggests_the_closest_one() {
    let err = error_for("tasks:\n  t:\n    cmd: 'true'\n    dependson: [x]\n");
    assert_eq!(
        err,
        "error: unknown key `dependson` in task `t`\n  --> [TMP]/project/.rush:4:5\nhint: did you mean `depends_on`?\n"
    );
}

#[test]
fn a_missing_dependency_suggests_the_closest_task() {
    let err =
        error_for("tasks:\n  build:\n    cmd: 'true'\n  t:\n    cmd: 'true'\n    deps: [biuld]\n");
    assert_eq!(
        err,
        "error: task `t` depends on `biuld`, which does not exist\n  --> [TMP]/project/.rush:6:12\nhint: did you mean `build`?\n"
    );
}

#[test]
fn a_dependency_cycle_is_printed_as_a_path() {
    let err = error_for("tasks:\n  t:\n    deps: [u]\n  u:\n    deps: [t]\n");
    assert!(
        err.contains("dependency cycle: t -> u -> t")
            || err.contains("dependency cycle: u -> t -> u"),
        "{err}"
    );
    assert!(err.contains("  --> [TMP]/project/.rush:"), "{err}");
}

#[test]
fn a_bad_glob_names_the_glob() {
    let err = error_for("tasks:\n  t:\n    cmd: 'true'\n    cache_files: [\"src/[\"]\n");
    assert!(err.contains("`src/[`"), "{err}");
    assert!(err.contains("  --> [TMP]/project/.rush:4:"), "{err}");
}

#[test]
fn a_missing_file_says_where_it_looked() {
    let out = Scenario::new().run(&["t"]);
    out.expect_code(1);
    out.expect_stderr_starting("error: no `.rush` file in `[TMP]/project` or any parent directory");
}

#[test]
fn a_fixed_file_is_picked_up_by_the_next_run() {
    let t = Scenario::new().rush("tasks:\n  t:\n    cmd: [oops\n");
    t.run(&["t"]).expect_code(1);
    t.write(".rush", "tasks:\n  t:\n    cmd: echo fixed\n");
    t.run(&["t"]).expect_stdout("fixed\n").success();
}

#[test]
fn every_save_is_seen_by_the_next_request() {
    let t = Scenario::new().rush("tasks:\n  t:\n    cmd: echo v0\n");
    for i in 1..=20 {
        // Same length each time, written immediately: only content differs.
        t.write(
            ".rush",
            format!("tasks:\n  t:\n    cmd: echo v{}\n", i % 10),
        );
        t.run(&["t"])
            .expect_stdout(&format!("v{}\n", i % 10))
            .success();
    }
}
