//! `dotenv:` files, top-level and per task: later files win, your
//! environment wins over them, the task's `env:` over everything; their
//! content is part of the cache key; values never appear in messages.

use taskrush_tests::Scenario;

const RUSH: &str = r#"
dotenv: [.env, .env.local?]
tasks:
  show:
    cmd: 'echo "$A $B $C $D"'
  own:
    dotenv: [task.env]
    cmd: 'echo "$A $B $C $D"'
    env:
      D: "task ${B}"
"#;

#[test]
fn dotenv_files_set_variables_later_files_winning() {
    let t = Scenario::new()
        .rush(RUSH)
        .file(
            ".env",
            "A=from-env\nB=from-env\n# c\nexport C='lit $HOME'\n",
        )
        .file(".env.local", "B=\"from local\"\n");
    t.run(&["show"])
        .expect_stdout("from-env from local lit $HOME \n")
        .success();
}

#[test]
fn an_optional_file_may_be_missing_and_task_files_come_after_the_top_level_ones() {
    let t = Scenario::new()
        .rush(RUSH)
        .file(".env", "A=top\nB=top\nC=top\n")
        .file("task.env", "B=task\n");
    t.run(&["own"])
        .expect_stdout("top task top task task\n")
        .success();
}

#[test]
fn your_environment_wins_over_dotenv_files_and_the_tasks_env_over_both() {
    let t = Scenario::new()
        .rush(RUSH)
        .file(".env", "A=file\nB=file\nD=file\n")
        .file("task.env", "")
        .env("A", "shell")
        .env("D", "shell");
    t.run(&["show"])
        .expect_stdout("shell file  shell\n")
        .success();
    t.run(&["own"])
        .expect_stdout("shell file  task file\n")
        .success();
}

#[test]
fn a_missing_file_is_an_error_naming_it_and_a_bad_line_never_shows_its_value() {
    let t = Scenario::new().rush(RUSH);
    let out = t.run(&["show"]);
    out.expect_code(1);
    out.expect_stderr(
        "error: task `show` failed: dotenv file `.env` (listed in the top-level `dotenv`) does not exist\n\
         hint: create it, or mark it optional with a `?`: `.env?`\n",
    );
    t.write(".env", "A=1\nTOKEN=\"hunter2\n");
    let out = t.run(&["show"]);
    out.expect_code(1);
    out.expect_stderr(
        "error: task `show` failed: dotenv file `.env`, line 2: `TOKEN`: the value's \" is not closed\n",
    );
    assert!(!out.stderr().contains("hunter2"));
}

#[test]
fn editing_a_dotenv_file_reruns_a_cached_task() {
    let rush = "
dotenv: [.env]
tasks:
  t:
    cmd: echo \"$GREETING\" >> runs.log
    cache_files: [in.txt]
";
    let t = Scenario::new()
        .rush(rush)
        .file("in.txt", "x")
        .file(".env", "GREETING=hello\n");
    t.run(&["t"]).success();
    t.run(&["t"])
        .expect_stderr("taskrush: `t` is up to date\n")
        .success();
    t.write(".env", "GREETING=bye\n");
    t.run(&["t"]).success();
    t.run(&["t"])
        .expect_stderr("taskrush: `t` is up to date\n")
        .success();
    assert_eq!(t.read("runs.log"), "hello\nbye\n");
}

#[test]
fn a_dotenv_key_in_a_wrong_shape_is_reported_where_it_is() {
    let out = Scenario::new()
        .rush("dotenv: {a: 1}\ntasks: {}\n")
        .run(&["--list"]);
    out.expect_code(1);
    out.expect_stderr_containing(
        "top-level `dotenv` must be a file or a list of files, found a mapping",
    );
}

#[test]
fn run_watch_reruns_when_an_ignored_dotenv_file_changes() {
    use std::time::Duration;
    let s = Scenario::new()
        .rush("dotenv: [.env]\ntasks:\n  t:\n    cmd: echo \"$V\"\n    cache_files: [src/**]\n")
        .file("src/in.txt", "a\n")
        .file(".env", "V=one\n")
        .file(".gitignore", ".env\n");
    s.run(&["--list"]).success();
    let mut ev = s.events();
    let mut c = s.command(&["run", "--watch", "t"]);
    c.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = c.spawn().expect("spawn taskrush --watch");
    ev.wait_for("first run", |e| e["event"] == "run_finished");
    s.write(".env", "V=two\n");
    let e = ev.wait_kind("run_started");
    assert_eq!(e["iteration"], 2, "{e}");
    ev.wait_kind("run_finished");
    taskrush_tests::signal(child.id(), rustix::process::Signal::INT);
    let out = s.finish(child, Duration::from_secs(10));
    out.expect_code(130);
    assert_eq!(out.stdout(), "one\ntwo\n", "{}", out.stderr());
    out.expect_stderr_containing("taskrush: `.env` changed");
}

#[test]
fn a_dotenv_file_written_by_a_dependency_is_read_when_the_task_starts() {
    let rush = "
tasks:
  gen:
    cmd: echo 'TOKEN_NAME=generated' > gen.env
  use:
    dotenv: [gen.env]
    cmd: echo \"$TOKEN_NAME\"
    depends_on: [gen]
";
    Scenario::new()
        .rush(rush)
        .run(&["use"])
        .expect_stdout("generated\n")
        .success();
}
