//! `outputs:`: a cache hit brings back missing or changed outputs from the
//! per-user store instead of running the task, and replays its output;
//! `run --explain` and `run --dry-run` say what would run and why.

use std::os::unix::fs::PermissionsExt;

use taskrush_tests::Scenario;

/// `build` counts its runs in `runs.log` (outside its outputs), prints a
/// line on each stream, and writes a file, an executable and a symlink.
const BUILD: &str = r#"
tasks:
  build:
    cmd: |
      echo run >> runs.log
      echo "compiling 1 file"
      echo "warning: unused" >&2
      mkdir -p dist/bin
      cat src/main.txt > dist/app.js
      printf '#!/bin/sh\necho hi\n' > dist/bin/tool
      chmod 755 dist/bin/tool
      ln -sfn app.js dist/latest.js
    cache_files: [src/**]
    outputs: [dist/**]
"#;

fn runs(t: &Scenario) -> usize {
    t.read("runs.log").lines().count()
}

fn built() -> Scenario {
    let t = Scenario::new().rush(BUILD).file("src/main.txt", "main\n");
    t.run(&["build"]).success();
    assert_eq!(runs(&t), 1);
    t
}

#[test]
fn deleted_outputs_are_restored_from_the_store_without_running_the_task() {
    let t = built();
    std::fs::remove_dir_all(t.project().join("dist")).unwrap();
    let out = t.run(&["build"]);
    out.success();
    assert_eq!(runs(&t), 1, "not run again");
    assert_eq!(t.read("dist/app.js"), "main\n");
    let mode = std::fs::metadata(t.project().join("dist/bin/tool"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755, "the mode is kept");
    let link = std::fs::read_link(t.project().join("dist/latest.js")).unwrap();
    assert_eq!(link.to_str(), Some("app.js"), "a symlink stays a symlink");
    assert!(
        out.stderr()
            .contains("taskrush: `build` is up to date (3 outputs restored)"),
        "{}",
        out.stderr()
    );
}

#[test]
fn an_edited_output_is_put_back_on_a_hit() {
    let t = built();
    t.write("dist/app.js", "tampered\n");
    let out = t.run(&["build"]);
    out.success();
    assert_eq!(runs(&t), 1);
    assert_eq!(t.read("dist/app.js"), "main\n");
    assert!(
        out.stderr().contains("(1 output restored)"),
        "{}",
        out.stderr()
    );
}

#[test]
fn a_hit_replays_the_output_the_task_wrote() {
    let t = built();
    let out = t.run(&["build"]);
    out.success();
    assert_eq!(runs(&t), 1);
    assert_eq!(out.stdout(), "compiling 1 file\n");
    assert_eq!(
        out.stderr(),
        "taskrush: `build` is up to date\nwarning: unused\n"
    );
}

#[test]
fn outputs_come_back_in_another_checkout_of_the_same_content() {
    let t = built();
    let other = t.root().join("checkout2");
    std::fs::create_dir_all(other.join("src")).unwrap();
    std::fs::write(other.join(".rush"), BUILD).unwrap();
    std::fs::write(other.join("src/main.txt"), "main\n").unwrap();
    let rush = other.join(".rush");
    t.run(&["run", "-f", rush.to_str().unwrap(), "build"])
        .success();
    assert!(
        !other.join("runs.log").exists(),
        "not run in the new checkout"
    );
    assert_eq!(
        std::fs::read_to_string(other.join("dist/app.js")).unwrap(),
        "main\n"
    );
}

#[test]
fn after_the_store_is_pruned_the_task_runs_again() {
    let t = built();
    let status = t.run(&["daemon", "cache", "status", "--json"]);
    status.success();
    let v: serde_json::Value = serde_json::from_str(status.stdout().trim()).unwrap();
    assert_eq!(v["entries"], 1);
    assert_eq!(v["blobs"], 3, "app.js, tool and the captured output");

    let pruned = t.run(&["daemon", "cache", "prune"]);
    pruned.success();
    assert!(
        pruned.stdout().starts_with("pruned 1 entries"),
        "{}",
        pruned.stdout()
    );
    std::fs::remove_dir_all(t.project().join("dist")).unwrap();
    t.run(&["build"]).success();
    assert_eq!(runs(&t), 2, "nothing to restore from: it ran");
    assert_eq!(t.read("dist/app.js"), "main\n");
}

#[test]
fn an_entry_evicted_by_the_size_limit_makes_the_task_run_again() {
    // The limit holds one build's blobs (about 460 bytes), not two.
    let t = Scenario::new()
        .rush(BUILD)
        .file("src/main.txt", &"a".repeat(400))
        .env("TASKRUSH_CACHE_MAX_BYTES", "700");
    t.run(&["build"]).success();
    t.write("src/main.txt", "b".repeat(400));
    t.run(&["build"]).success();
    assert_eq!(runs(&t), 2);
    // Back to the first content: its entry was evicted to make room.
    t.write("src/main.txt", "a".repeat(400));
    t.run(&["build"]).success();
    assert_eq!(runs(&t), 3, "evicted: run again");
    let status = t.run(&["daemon", "cache", "status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(status.stdout().trim()).unwrap();
    assert_eq!(v["entries"], 1);
    assert!(v["bytes"].as_u64().unwrap() <= 700, "{v}");
}

#[test]
fn a_restore_refuses_to_write_through_a_symlinked_output_directory_and_the_task_runs() {
    let t = built();
    let outside = t.root().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::remove_dir_all(t.project().join("dist")).unwrap();
    std::os::unix::fs::symlink(&outside, t.project().join("dist")).unwrap();
    let out = t.run(&["build"]);
    out.success();
    assert!(
        out.stderr().contains(
            "warning: cannot restore the outputs of `build`: `dist` is not a directory (a \
             symlink or a file): outputs are never written through it; running it instead"
        ),
        "{}",
        out.stderr()
    );
    assert_eq!(runs(&t), 2, "the task ran instead");
}

#[test]
fn explain_names_the_input_file_that_changed() {
    let t = built();
    t.run(&["run", "--explain", "build"])
        .success()
        .expect_stdout("build  would not run: up to date\n");
    t.write("src/main.txt", "edited\n");
    t.run(&["run", "--explain", "build"])
        .success()
        .expect_stdout("build  would run: input `src/main.txt` changed\n");
    std::fs::remove_file(t.project().join("dist/app.js")).unwrap();
    t.write("src/main.txt", "main\n");
    t.run(&["run", "--explain", "build"]).success().expect_stdout(
        "build  would not run: output `dist/app.js` missing or changed: restored from the cache, not run\n",
    );
    assert_eq!(runs(&t), 1);
}

#[test]
fn explain_names_a_changed_environment_variable_but_never_its_value() {
    let t = Scenario::new().rush(
        "tasks:\n  gen:\n    cmd: echo gen >> runs.log\n    cache_files: [in.txt]\n    env:\n      TOKEN: \"${TOKEN}\"\n  build:\n    cmd: echo build\n    depends_on: [gen]\n",
    );
    t.write("in.txt", "x");
    t.run_with(&["gen"], |c| {
        c.env("TOKEN", "first-secret");
    })
    .success();
    let out = t.run_with(&["run", "--explain", "build"], |c| {
        c.env("TOKEN", "second-secret");
    });
    out.success().expect_stdout(
        "gen    would run: environment variable `TOKEN` changed\n\
         build  would run: no `cache_files`: not cached, it runs every time\n",
    );
    assert!(!out.stdout().contains("secret"));
    t.run(&["run", "--explain", "--force", "gen"])
        .success()
        .expect_stdout("gen  would run: forced (--force)\n");
}

#[test]
fn dry_run_prints_the_plan_and_runs_nothing() {
    let t = Scenario::new().rush(
        "tasks:\n  gen:\n    cmd: echo gen >> runs.log\n    cache_files: [in.txt]\n  build:\n    cmd: echo build >> runs.log\n    depends_on: [gen]\n    before: echo hook >> runs.log\n",
    );
    t.write("in.txt", "x");
    t.run(&["gen"]).success();
    assert_eq!(runs(&t), 1);
    t.run(&["run", "--dry-run", "build"]).success().expect_stdout(
        "plan: 2 tasks, 1 would run (dry run: nothing was run)\n  1. gen    up to date\n  2. build  would run\n",
    );
    assert_eq!(runs(&t), 1, "no task and no hook ran");
}

#[test]
fn a_task_with_outputs_is_captured_for_replay_while_one_without_keeps_the_terminal() {
    let t = Scenario::new().rush(
        "tasks:\n  plain:\n    cmd: if test -t 1; then echo plain-on-a-tty; else echo plain-not-a-tty; fi\n    cache_files: [in.txt]\n  captured:\n    cmd: if test -t 1; then echo captured-on-a-tty; else echo captured-not-a-tty; fi; mkdir -p out; echo x > out/x\n    cache_files: [in.txt]\n    outputs: [out]\n",
    );
    t.write("in.txt", "x");
    let (screen, code) = taskrush_tests::run_in_terminal(&t, &["plain"], None);
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("plain-on-a-tty"), "{screen}");
    let (screen, code) = taskrush_tests::run_in_terminal(&t, &["captured"], None);
    assert_eq!(code, 0, "{screen}");
    assert!(
        screen.contains("captured-not-a-tty"),
        "shown live: {screen}"
    );
    // On a hit, only the task with outputs has something to replay.
    let (screen, _) = taskrush_tests::run_in_terminal(&t, &["plain"], None);
    assert!(!screen.contains("plain-"), "{screen}");
    let (screen, _) = taskrush_tests::run_in_terminal(&t, &["captured"], None);
    assert!(screen.contains("captured-not-a-tty"), "replayed: {screen}");
}

#[test]
fn explain_says_the_arguments_changed_when_only_the_arguments_changed() {
    let t = Scenario::new()
        .rush("tasks:\n  t:\n    cmd: echo \"$@\" >> runs.log\n    cache_files: [in.txt]\n");
    t.write("in.txt", "x");
    t.run(&["t", "--", "one"]).success();
    t.run(&["run", "--explain", "t", "--", "one"])
        .success()
        .expect_stdout("t  would not run: up to date\n");
    let out = t.run(&["run", "--explain", "t", "--", "two"]);
    out.success()
        .expect_stdout("t  would run: the arguments changed\n");
    assert!(!out.stdout().contains("one"), "{}", out.stdout());
}

#[test]
fn explain_names_a_changed_dotenv_file_but_never_its_values() {
    let t = Scenario::new().rush(
        "tasks:\n  t:\n    cmd: echo \"$TOKEN\" >> runs.log\n    cache_files: [in.txt]\n    dotenv: [.env, .env.local]\n",
    );
    t.write("in.txt", "x");
    t.write(".env", "TOKEN=base\n");
    t.write(".env.local", "TOKEN=first-secret\n");
    t.run(&["t"]).success();
    t.write(".env.local", "TOKEN=second-secret\n");
    let out = t.run(&["run", "--explain", "t"]);
    out.success()
        .expect_stdout("t  would run: dotenv file `.env.local` changed\n");
    assert!(!out.stdout().contains("secret"), "{}", out.stdout());
}

#[test]
fn explain_says_the_tasks_dir_changed_and_not_that_the_command_changed() {
    let t = Scenario::new()
        .rush("tasks:\n  t:\n    cmd: pwd >> runs.log\n    dir: a\n    cache_files: [in.txt]\n");
    t.write("a/in.txt", "x");
    t.write("b/in.txt", "x");
    t.run(&["t"]).success();
    t.write(
        ".rush",
        "tasks:\n  t:\n    cmd: pwd >> runs.log\n    dir: b\n    cache_files: [in.txt]\n",
    );
    let out = t.run(&["run", "--explain", "t"]);
    out.success();
    assert!(
        out.stdout()
            .starts_with("t  would run: the task's dir changed"),
        "{}",
        out.stdout()
    );
    assert!(
        !out.stdout().contains("the command changed"),
        "{}",
        out.stdout()
    );
}
