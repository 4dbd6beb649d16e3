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

#[test]
fn a_nul_byte_in_an_env_value_or_a_command_names_the_field_and_its_position() {
    let err = error_for("tasks:\n  t:\n    cmd: echo $FOO\n    env:\n      FOO: \"a\\0b\"\n");
    assert_eq!(
        err,
        "error: `env.FOO` of task `t` contains a NUL byte (character 2 of the value)\n  --> [TMP]/project/.rush:5:12\nhint: commands, variables and names cannot hold a NUL byte: remove the `\\0`\n"
    );
    let err = error_for("tasks:\n  t:\n    cmd: \"echo \\0\"\n");
    assert!(
        err.starts_with(
            "error: `cmd` of task `t` contains a NUL byte (character 6 of the value)\n  --> [TMP]/project/.rush:3:10\n"
        ),
        "{err}"
    );
}

#[test]
fn invalid_utf8_is_reported_at_its_line_and_column() {
    let s = Scenario::new();
    s.write(".rush", b"tasks:\n  t:\n    cmd: echo h\xe9llo\n");
    let out = s.run(&["t"]);
    out.expect_code(1).expect_stderr(
        "error: the file is not valid UTF-8: byte 0xe9 at offset 27\n  --> [TMP]/project/.rush:3:16\nhint: save the file as UTF-8\n",
    );
}

#[test]
fn dash_f_on_a_directory_a_fifo_or_a_symlink_loop_says_what_it_is() {
    let s = Scenario::new().rush("tasks:\n  t:\n    cmd: echo ran\n");
    s.sh("mkdir dir && mkfifo fifo && ln -s loop1 loop2 && ln -s loop2 loop1 && ln -s nowhere dangling")
        .success();
    s.run(&["-f", "dir", "t"]).expect_code(1).expect_stderr(
        "error: `[TMP]/project/dir` given with `-f` is a directory, not a regular file\n  --> [TMP]/project/dir\nhint: name the file inside it, e.g. `-f dir/.rush`\n",
    );
    s.run(&["-f", "fifo", "t"]).expect_code(1).expect_stderr(
        "error: `[TMP]/project/fifo` given with `-f` is a FIFO, not a regular file\n  --> [TMP]/project/fifo\n",
    );
    s.run(&["-f", "loop1", "t"]).expect_code(1).expect_stderr(
        "error: `[TMP]/project/loop1` given with `-f` is a symlink loop (too many levels of symlinks)\n  --> [TMP]/project/loop1\n",
    );
    s.run(&["-f", "dangling", "t"]).expect_code(1).expect_stderr(
        "error: `[TMP]/project/dangling` given with `-f` is a symlink to `nowhere`, which does not exist\n  --> [TMP]/project/dangling\n",
    );
    s.run(&["-f", "missing", "t"]).expect_code(1).expect_stderr(
        "error: the file `[TMP]/project/missing` given with `-f` does not exist\n  --> [TMP]/project/missing\n",
    );
}

#[test]
fn a_rush_file_that_is_a_dangling_symlink_is_reported_not_skipped() {
    let s = Scenario::new().cwd("sub");
    s.write(".rush", "tasks:\n  t:\n    cmd: echo outer\n");
    std::os::unix::fs::symlink("gone.yml", s.project().join("sub/.rush")).expect("symlink");
    s.run(&["t"]).expect_code(1).expect_stderr(
        "error: the file is a symlink to `gone.yml`, which does not exist\n  --> [TMP]/project/sub/.rush\n",
    );
}

#[test]
fn an_unquoted_variable_in_flow_style_is_a_syntax_error_with_a_hint_to_quote_it() {
    let err = error_for("tasks:\n  t:\n    cmd: echo $T\n    env: { T: ${HOME}x }\n");
    assert_eq!(
        err,
        "error: invalid YAML: did not find expected ',' or '}', while parsing a flow mapping\n  --> [TMP]/project/.rush:4:16\nhint: inside `{ }` or `[ ]`, quote a value holding `${...}`: `{ token: \"${TOKEN}\" }`\n"
    );
    Scenario::new()
        .rush("tasks:\n  t:\n    cmd: echo $T\n    env: { T: \"${HOME}x\" }\n")
        .env("HOME", "/h")
        .run(&["t"])
        .expect_stdout("/hx\n")
        .success();
}
