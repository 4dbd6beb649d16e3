//! `taskrush --list --json` and `taskrush --summary TASK`: the task list
//! for scripts and editors.

use taskrush_tests::Scenario;

const RUSH: &str = "\
tasks:
  gen:
    cmd: ./gen.sh
  build:
    description: Build it
    cmd: cargo build
    depends_on: [gen]
    cache_files: [\"src/**/*.rs\"]
  all:
    depends_on: [build]
";

#[test]
fn list_json_prints_every_task_with_its_definition_site() {
    // Given a project with three tasks,
    let s = Scenario::new().rush(RUSH);
    // when I ask for the list as JSON,
    let out = s.run(&["--list", "--json"]);
    out.success();
    // I get the `list_tasks` answer: the file, and each task with its
    // command, dependencies, directory, cache globs and position.
    let list: serde_json::Value = serde_json::from_str(&out.stdout()).expect("json");
    let root = s.project().canonicalize().expect("project dir");
    let file = root.join(".rush").display().to_string();
    assert_eq!(list["file"], file.as_str(), "{list}");
    let tasks = list["tasks"].as_array().expect("tasks");
    let names: Vec<&str> = tasks
        .iter()
        .map(|t| t["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(names, ["all", "build", "gen"]);
    let build = &tasks[1];
    assert_eq!(build["description"], "Build it");
    assert_eq!(build["cmd"], "cargo build");
    assert_eq!(build["depends_on"], serde_json::json!(["gen"]));
    assert_eq!(build["cache_files"], serde_json::json!(["src/**/*.rs"]));
    assert_eq!(build["cached"], true);
    assert_eq!(build["outputs"], serde_json::json!([]));
    assert_eq!(build["dir"], root.display().to_string().as_str());
    assert_eq!(build["file"], file.as_str());
    assert_eq!(
        (build["line"].as_u64(), build["column"].as_u64()),
        (Some(4), Some(3))
    );
    // An aggregate task has no `cmd`.
    assert!(tasks[0].get("cmd").is_none(), "{}", tasks[0]);
    assert_eq!(
        (tasks[0]["line"].as_u64(), tasks[0]["column"].as_u64()),
        (Some(9), Some(3))
    );
}

#[test]
fn summary_shows_one_task_as_text_or_json() {
    // Given a project,
    let s = Scenario::new().rush(RUSH);
    let root = s.project().canonicalize().expect("project dir");
    // when I ask for the summary of `build`,
    let text = s.run(&["--summary", "build"]);
    // I see its command, dependencies, directory and where it is defined;
    text.success();
    let file = root.join(".rush").display().to_string();
    text.expect_stdout(&format!(
        "task: build\ndescription: Build it\ncmd: cargo build\ndepends on: gen\ndir: {}\ndefined at: {file}:4:3\ncache_files: src/**/*.rs\n",
        root.display()
    ));
    // with --json, the same task as the list gives it.
    let json = s.run(&["--summary", "build", "--json"]);
    json.success();
    let task: serde_json::Value = serde_json::from_str(&json.stdout()).expect("json");
    assert_eq!(task["name"], "build");
    assert_eq!(task["line"], 4);
}

#[test]
fn summary_of_an_unknown_task_says_how_to_see_the_tasks() {
    // Given a project, when I ask for a task it does not have,
    let s = Scenario::new().rush(RUSH);
    let out = s.run(&["--summary", "biuld"]);
    // I am told so, with the way to list the tasks.
    out.expect_code(2);
    out.expect_stderr_containing("unknown task `biuld`");
    out.expect_stderr_containing("hint: `taskrush --list` shows the tasks");
}
