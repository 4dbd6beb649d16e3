//! The content cache: skip what is up to date, never what changed.

use taskrush_tests::Scenario;

const CACHED: &str = "
tasks:
  build:
    cmd: echo built >> runs.log; cat src/*.txt > out.txt
    cache_files: [\"src/**/*.txt\"]
    env:
      MODE: \"${MODE:-dev}\"
";

fn runs(t: &Scenario) -> usize {
    t.read("runs.log").lines().count()
}

#[test]
fn an_unchanged_task_is_cached_the_second_time() {
    let t = Scenario::new().rush(CACHED).file("src/a.txt", "a\n");
    t.run(&["build"]).success();
    let out = t.run(&["build"]);
    out.success();
    assert_eq!(runs(&t), 1);
    assert_eq!(out.stderr(), "taskrush: `build` is up to date\n");
}

#[test]
fn changing_an_input_file_reruns_the_task() {
    let t = Scenario::new().rush(CACHED).file("src/a.txt", "a\n");
    t.run(&["build"]).success();
    t.write("src/a.txt", "b\n");
    t.run(&["build"]).success();
    assert_eq!(runs(&t), 2);
    assert_eq!(t.read("out.txt"), "b\n");
}

#[test]
fn a_same_size_edit_that_keeps_the_mtime_is_still_seen() {
    let t = Scenario::new().rush(CACHED).file("src/a.txt", "a\n");
    let path = t.project().join("src/a.txt");
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    t.run(&["build"]).success();
    std::fs::write(&path, "z\n").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    t.run(&["build"]).success();
    assert_eq!(runs(&t), 2);
}

#[test]
fn a_new_file_matching_the_glob_reruns_the_task() {
    let t = Scenario::new().rush(CACHED).file("src/a.txt", "a\n");
    t.run(&["build"]).success();
    t.write("src/deep/b.txt", "b\n");
    t.run(&["build"]).success();
    assert_eq!(runs(&t), 2);
}

#[test]
fn a_changed_env_value_reruns_the_task() {
    let t = Scenario::new().rush(CACHED).file("src/a.txt", "a\n");
    t.run(&["build"]).success();
    t.run_with(&["build"], |c| {
        c.env("MODE", "release");
    })
    .success();
    assert_eq!(runs(&t), 2);
}

#[test]
fn force_ignores_the_cache() {
    let t = Scenario::new().rush(CACHED).file("src/a.txt", "a\n");
    t.run(&["build"]).success();
    t.run(&["run", "--force", "build"]).success();
    assert_eq!(runs(&t), 2);
}

#[test]
fn a_failed_run_is_not_cached() {
    let t = Scenario::new()
        .rush("tasks:\n  t:\n    cmd: echo x >> runs.log; exit 1\n    cache: [in.txt]\n")
        .file("in.txt", "1");
    t.run(&["t"]).expect_code(1);
    t.run(&["t"]).expect_code(1);
    assert_eq!(runs(&t), 2);
}

#[test]
fn a_corrupt_cache_entry_is_a_miss_not_a_crash() {
    let t = Scenario::new().rush(CACHED).file("src/a.txt", "a\n");
    t.run(&["build"]).success();
    let dir = t.project().join(".rush-cache");
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        if e.file_name() != ".gitignore" {
            std::fs::write(e.path(), "{not json").unwrap();
        }
    }
    t.run(&["build"]).success();
    assert_eq!(runs(&t), 2);
    t.run(&["build"]).success();
    assert_eq!(runs(&t), 2, "the entry was rewritten");
}

#[test]
fn a_change_of_the_command_reruns_the_task() {
    let t = Scenario::new().rush(CACHED).file("src/a.txt", "a\n");
    t.run(&["build"]).success();
    t.write(".rush", CACHED.replace("echo built", "echo  built"));
    t.run(&["build"]).success();
    assert_eq!(runs(&t), 2);
}
