//! `dir:` per task: where it runs, what its `cache_files` are relative to.

use taskrush_tests::Scenario;

#[test]
fn a_task_with_dir_runs_in_that_directory_relative_to_the_rush_file() {
    let rush = "
tasks:
  here:
    cmd: pwd
  there:
    cmd: pwd
    dir: packages/web
";
    let t = Scenario::new()
        .rush(rush)
        .file("packages/web/x", "")
        .cwd("packages");
    let root = t.project().canonicalize().unwrap();
    t.run(&["here"])
        .expect_stdout(&format!("{}\n", root.display()))
        .success();
    t.run(&["there"])
        .expect_stdout(&format!("{}\n", root.join("packages/web").display()))
        .success();
}

#[test]
fn a_missing_dir_fails_the_task_naming_it_and_its_line() {
    let rush = "tasks:\n  a: {cmd: 'true'}\n  web:\n    cmd: pwd\n    dir: nope\n";
    let out = Scenario::new().rush(rush).run(&["web"]);
    out.expect_code(1);
    out.expect_stderr_containing("`dir` `nope` of task `web` (");
    out.expect_stderr_containing(".rush:3) is not a directory");
}

#[test]
fn a_dir_created_by_a_dependency_is_fine() {
    let rush = "
tasks:
  mk:
    cmd: mkdir -p out
  use:
    cmd: basename \"$PWD\"
    dir: out
    depends_on: [mk]
";
    Scenario::new()
        .rush(rush)
        .run(&["use"])
        .expect_stdout("out\n")
        .success();
}

const CACHED: &str = "
tasks:
  web:
    cmd: echo ran >> ../../runs.log
    dir: packages/web
    cache_files: [\"src/*.txt\", \"!src/skip.txt\"]
";

#[test]
fn cache_files_are_relative_to_dir() {
    let t = Scenario::new()
        .rush(CACHED)
        .file("packages/web/src/a.txt", "a")
        .file("packages/web/src/skip.txt", "s")
        .file("src/a.txt", "root");
    let runs = |t: &Scenario| t.read("runs.log").lines().count();
    t.run(&["web"]).success();
    t.run(&["web"])
        .expect_stderr("taskrush: `web` is up to date\n")
        .success();
    // The project root's `src/` is not the task's.
    t.write("src/a.txt", "changed");
    t.run(&["web"]).success();
    assert_eq!(runs(&t), 1);
    // Nor is an excluded file an input.
    t.write("packages/web/src/skip.txt", "changed");
    t.run(&["web"]).success();
    assert_eq!(runs(&t), 1);
    t.write("packages/web/src/a.txt", "changed");
    t.run(&["web"]).success();
    assert_eq!(runs(&t), 2);
}

#[test]
fn a_cached_task_with_a_dir_outside_the_project_is_refused_at_load() {
    let rush = "tasks:\n  t:\n    cmd: 'true'\n    dir: ../elsewhere\n    cache_files: [a]\n";
    let out = Scenario::new().rush(rush).run(&["t"]);
    out.expect_code(1);
    out.expect_stderr_containing(
        "task `t` has `cache_files` but its `dir` `../elsewhere` is outside the project",
    );
}

#[test]
fn an_uncached_task_may_run_outside_the_project() {
    let rush = "tasks:\n  t:\n    cmd: basename \"$PWD\"\n    dir: ..\n";
    let t = Scenario::new().rush(rush);
    let parent = t.project().canonicalize().unwrap();
    let name = parent
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    t.run(&["t"]).expect_stdout(&format!("{name}\n")).success();
}

#[test]
fn plugins_see_the_tasks_dir_as_working_dir() {
    let s = Scenario::new();
    super::plugins::plugin(&s, "rec", "good");
    let record = s.project().join("rec.jsonl");
    let s = s.env("REC", &record.display().to_string()).rush(
        "
plugins:
  - name: rec
    config: {record: '${REC}'}
tasks:
  web:
    cmd: 'true'
    dir: packages/web
",
    );
    s.write("packages/web/x", "");
    s.run(&["web"]).success();
    let seen: Vec<String> = s
        .read("rec.jsonl")
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON record"))
        .filter(|r| r["hook"] == "before_task")
        .map(|r| r["working_dir"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        seen,
        [s.project().join("packages/web").display().to_string()]
    );
}

#[test]
fn moving_a_cached_task_to_another_dir_runs_it_again() {
    let t = Scenario::new()
        .rush("tasks:\n  t:\n    cmd: 'true'\n    dir: a\n    cache_files: ['!x']\n")
        .file("a/f", "")
        .file("b/f", "");
    t.run(&["t"]).success();
    t.run(&["t"])
        .expect_stderr("taskrush: `t` is up to date\n")
        .success();
    t.write(
        ".rush",
        "tasks:\n  t:\n    cmd: 'true'\n    dir: ./b/\n    cache_files: ['!x']\n",
    );
    t.run(&["t"]).expect_stderr("").success();
}
