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

// The watcher answers repeated checks (no input is `stat`ed while nothing
// changed under the inputs' directories). A change made right before a run
// must still be seen by that run: every change below is followed at once,
// without any wait, by the run that must see it.

/// (checks answered by the watcher, checks done in full), from the daemon.
fn checks(t: &Scenario) -> (u64, u64) {
    let status = t.daemon_status().expect("daemon status");
    let n = |k: &str| {
        status[k]
            .as_u64()
            .unwrap_or_else(|| panic!("no {k} in {status}"))
    };
    (n("cache_checks_watched"), n("cache_checks_full"))
}

/// Run `build` until a check is answered by the watcher (the first check
/// after a change in the set of directories computes in full twice: once
/// to find them, once while they are watched); it must stay up to date.
fn until_answered_by_the_watcher(t: &Scenario) {
    let before = checks(t).0;
    for _ in 0..3 {
        t.run(&["build"]).success();
        if checks(t).0 > before {
            return;
        }
    }
    panic!(
        "three unchanged checks and none answered by the watcher: {:?}",
        checks(t)
    );
}

#[test]
fn unchanged_inputs_are_checked_by_the_watcher_without_reading_them() {
    let t = Scenario::new()
        .rush(CACHED)
        .file("src/a.txt", "a\n")
        .file("src/deep/er/b.txt", "b\n");
    t.run(&["build"]).success();
    until_answered_by_the_watcher(&t);
    let out = t.run(&["build"]);
    assert_eq!(out.stderr(), "taskrush: `build` is up to date\n");
    assert_eq!(runs(&t), 1);
    let status = t.run(&["daemon", "status"]);
    assert!(
        status.stdout().contains("answered by the watcher"),
        "{}",
        status.stdout()
    );
}

#[test]
fn every_kind_of_change_right_after_a_watched_check_is_seen_by_the_next_run() {
    let t = Scenario::new()
        .rush(CACHED)
        .file("src/a.txt", "a\n")
        .file("src/one/b.txt", "b\n")
        .file("src/one/two/c.txt", "c\n");
    t.run(&["build"]).success();
    let p = t.project();
    let path = |rel: &str| p.join(rel);
    type Change<'a> = (&'static str, Box<dyn Fn() + 'a>);
    let changes: Vec<Change<'_>> = vec![
        (
            "append to a file",
            Box::new(|| t.write("src/a.txt", "a2\n")),
        ),
        (
            "same-size edit keeping the mtime",
            Box::new(|| {
                let f = path("src/one/b.txt");
                let mtime = std::fs::metadata(&f).unwrap().modified().unwrap();
                std::fs::write(&f, "B\n").unwrap();
                std::fs::File::options()
                    .write(true)
                    .open(&f)
                    .unwrap()
                    .set_modified(mtime)
                    .unwrap();
            }),
        ),
        (
            "editor save: write a temp file, rename it over",
            Box::new(|| {
                std::fs::write(path("src/one/two/.c.txt.swp"), "c2\n").unwrap();
                std::fs::rename(path("src/one/two/.c.txt.swp"), path("src/one/two/c.txt")).unwrap();
            }),
        ),
        (
            "new file in a nested directory",
            Box::new(|| t.write("src/one/two/d.txt", "d\n")),
        ),
        (
            "new directory with a file",
            Box::new(|| t.write("src/new/dir/e.txt", "e\n")),
        ),
        (
            "delete a file",
            Box::new(|| std::fs::remove_file(path("src/one/two/d.txt")).unwrap()),
        ),
        (
            "rename a directory away",
            Box::new(|| std::fs::rename(path("src/one"), path("one.away")).unwrap()),
        ),
        (
            "rename it back",
            Box::new(|| std::fs::rename(path("one.away"), path("src/one")).unwrap()),
        ),
        (
            "replace a directory by a new one",
            Box::new(|| {
                std::fs::remove_dir_all(path("src/new")).unwrap();
                t.write("new.tmp/dir/e.txt", "e2\n");
                std::fs::rename(path("new.tmp"), path("src/new")).unwrap();
            }),
        ),
        (
            "edit inside the replacement",
            Box::new(|| t.write("src/new/dir/e.txt", "e3\n")),
        ),
        (
            "replace the walked directory itself",
            Box::new(|| {
                std::fs::rename(path("src"), path("src.old")).unwrap();
                t.write("src/a.txt", "fresh\n");
            }),
        ),
        (
            "edit inside the new walked directory",
            Box::new(|| t.write("src/a.txt", "fresher\n")),
        ),
        (
            "chmod only (content unchanged: must not rerun, but must not break either)",
            Box::new(|| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(path("src/a.txt"), std::fs::Permissions::from_mode(0o600))
                    .unwrap();
            }),
        ),
    ];
    for (what, change) in &changes {
        until_answered_by_the_watcher(&t);
        let before = runs(&t);
        change();
        t.run(&["build"]).success();
        let expected = if what.starts_with("chmod") {
            before
        } else {
            before + 1
        };
        assert_eq!(runs(&t), expected, "after: {what}");
    }
    until_answered_by_the_watcher(&t);
    t.write("src/a.txt", "last\n");
    t.run(&["build"]).success();
    assert_eq!(t.read("out.txt").lines().next(), Some("last"));
}

#[test]
fn a_renamed_ancestor_of_named_inputs_is_seen() {
    let t = Scenario::new()
        .rush("tasks:\n  build:\n    cmd: echo built >> runs.log\n    cache_files: [gen/out/x.txt, gen/out/y.txt]\n")
        .file("gen/out/x.txt", "x\n");
    t.run(&["build"]).success();
    until_answered_by_the_watcher(&t);
    std::fs::rename(t.project().join("gen"), t.project().join("gen.old")).unwrap();
    t.write("gen/out/x.txt", "other\n");
    t.run(&["build"]).success();
    assert_eq!(runs(&t), 2);
    until_answered_by_the_watcher(&t);
    t.write("gen/out/y.txt", "now present\n");
    t.run(&["build"]).success();
    assert_eq!(runs(&t), 3);
}

#[test]
fn inputs_that_can_change_elsewhere_are_always_checked_in_full() {
    // A symlink to a file outside the inputs' directories, and a hard link
    // whose other name is outside them: writes through those names cause
    // no event where the watcher looks.
    let t = Scenario::new()
        .rush("tasks:\n  build:\n    cmd: echo built >> runs.log\n    cache_files: [\"src/**\"]\n")
        .file("elsewhere/target.txt", "1\n")
        .file("elsewhere/linked.txt", "1\n");
    let p = t.project();
    std::fs::create_dir_all(p.join("src")).unwrap();
    std::os::unix::fs::symlink(p.join("elsewhere/target.txt"), p.join("src/sym.txt")).unwrap();
    std::fs::hard_link(p.join("elsewhere/linked.txt"), p.join("src/hard.txt")).unwrap();
    std::fs::create_dir_all(p.join("real")).unwrap();
    std::fs::write(p.join("real/in.txt"), "1\n").unwrap();
    std::os::unix::fs::symlink(p.join("real"), p.join("src/dir")).unwrap();
    t.run(&["build"]).success();
    for _ in 0..3 {
        t.run(&["build"]).success();
    }
    assert_eq!(checks(&t).0, 0, "no check may be answered by the watcher");
    t.write("elsewhere/target.txt", "2\n");
    t.run(&["build"]).success();
    assert_eq!(runs(&t), 2);
    std::fs::OpenOptions::new()
        .append(true)
        .open(p.join("elsewhere/linked.txt"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"2\n"))
        .unwrap();
    t.run(&["build"]).success();
    assert_eq!(runs(&t), 3);
    // Replace the symlinked directory's target: no event under `src`.
    std::fs::rename(p.join("real"), p.join("real.old")).unwrap();
    std::fs::create_dir_all(p.join("real")).unwrap();
    std::fs::write(p.join("real/in.txt"), "2\n").unwrap();
    t.run(&["build"]).success();
    assert_eq!(runs(&t), 4);
    assert_eq!(checks(&t).0, 0, "no check may be answered by the watcher");
}

#[test]
fn a_deleted_cookie_directory_costs_speed_not_correctness() {
    let t = Scenario::new().rush(CACHED).file("src/a.txt", "a\n");
    t.run(&["build"]).success();
    until_answered_by_the_watcher(&t);
    let dir = t.socket().parent().unwrap().to_path_buf();
    let cookies: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("cookies."))
        .collect();
    assert_eq!(
        cookies.len(),
        1,
        "one cookie directory in {}",
        dir.display()
    );
    std::fs::remove_dir_all(cookies[0].path()).unwrap();
    t.write("src/a.txt", "b\n");
    t.run(&["build"]).success();
    assert_eq!(runs(&t), 2);
    // It recovers: checks are answered by the watcher again.
    until_answered_by_the_watcher(&t);
    assert_eq!(runs(&t), 2);
    t.run(&["daemon", "stop"]).success();
    assert!(
        !cookies[0].path().exists(),
        "the daemon removes its cookies"
    );
}

// Overlapping runs of one cached task (the concurrency rule).

/// A cached task that waits for the file `go` before it reads `in.txt`,
/// and then for `go2` before it exits; `WHO` (from the client) names each
/// run's marker files.
const GATED: &str = "
tasks:
  gen:
    cmd: |
      echo \"$WHO\" >> runs.log
      touch \"started-$WHO\"
      until [ -e go ]; do sleep 0.01; done
      cat in.txt > out.txt
      touch \"read-$WHO\"
      until [ -e go2 ]; do sleep 0.01; done
    cache_files: [in.txt]
";

/// Start `taskrush gen` as `who`, in the background.
fn start_gen(t: &Scenario, who: &str) -> std::process::Child {
    let mut c = t.command(&["gen"]);
    c.env("WHO", who)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    c.spawn().unwrap()
}

fn wait_for_file(t: &Scenario, rel: &str) {
    assert!(
        taskrush_tests::wait_until(std::time::Duration::from_secs(20), || t
            .project()
            .join(rel)
            .exists()),
        "`{rel}` never appeared"
    );
}

/// The readiness signal of a run that found the task running elsewhere.
fn wait_for_waiters(t: &Scenario, n: usize) {
    let waiting = || {
        std::fs::read_to_string(t.log())
            .unwrap_or_default()
            .matches("waiting for the instance of the task already running")
            .count()
    };
    assert!(
        taskrush_tests::wait_until(std::time::Duration::from_secs(20), || waiting() >= n),
        "{} of {n} runs waited for the running instance; runs: {:?}",
        waiting(),
        std::fs::read_to_string(t.project().join("runs.log")).unwrap_or_default()
    );
}

#[test]
fn eight_overlapping_runs_of_a_cached_task_run_it_once_and_the_others_report_it_cached() {
    let t = Scenario::new().rush(GATED).file("in.txt", "v1\n");
    t.start_daemon(&[]);
    let first = start_gen(&t, "first");
    wait_for_file(&t, "started-first");
    let others: Vec<_> = (0..7)
        .map(|i| start_gen(&t, &format!("other{i}")))
        .collect();
    wait_for_waiters(&t, 7);
    t.write("go", "");
    t.write("go2", "");
    t.finish(first, std::time::Duration::from_secs(30))
        .success();
    for other in others {
        let out = t.finish(other, std::time::Duration::from_secs(30));
        out.success();
        assert_eq!(
            out.stderr(),
            "taskrush: `gen` is running in another run; waiting for it\n\
             taskrush: `gen` is up to date\n"
        );
    }
    assert_eq!(t.read("runs.log"), "first\n");
    assert_eq!(t.read("out.txt"), "v1\n");
}

#[test]
fn a_run_with_other_inputs_waits_for_the_running_instance_and_then_runs() {
    let t = Scenario::new().rush(GATED).file("in.txt", "v1\n");
    t.start_daemon(&[]);
    let first = start_gen(&t, "first");
    wait_for_file(&t, "started-first");
    t.write("in.txt", "v2\n");
    let second = start_gen(&t, "second");
    wait_for_waiters(&t, 1);
    assert!(!t.project().join("started-second").exists());
    t.write("go", "");
    t.write("go2", "");
    t.finish(first, std::time::Duration::from_secs(30))
        .success();
    t.finish(second, std::time::Duration::from_secs(30))
        .success();
    assert_eq!(t.read("runs.log"), "first\nsecond\n");
    t.run(&["gen"])
        .success()
        .expect_stderr("taskrush: `gen` is up to date\n");
    assert_eq!(t.read("out.txt"), "v2\n");
}

#[test]
fn an_input_changed_and_changed_back_during_the_run_is_not_stored_as_up_to_date() {
    let t = Scenario::new().rush(GATED).file("in.txt", "v1\n");
    t.start_daemon(&[]);
    let run = start_gen(&t, "first");
    wait_for_file(&t, "started-first");
    // The task reads v2 ...
    t.write("in.txt", "v2\n");
    t.write("go", "");
    wait_for_file(&t, "read-first");
    // ... and v1 is back before it ends: same content as when it started.
    t.write("in.txt", "v1\n");
    t.write("go2", "");
    let first = t.finish(run, std::time::Duration::from_secs(30));
    first.success().expect_stderr(
        "warning: the inputs of `gen` changed while it ran (`in.txt`): not cached, it will \
         run again next time\nhint: if `gen` writes into its own `cache_files`, exclude those \
         outputs with `!PATTERN`\n",
    );
    assert_eq!(t.read("out.txt"), "v2\n");
    let again = t.run_with(&["gen"], |c| {
        c.env("WHO", "again");
    });
    again.success();
    assert_eq!(t.read("runs.log"), "first\nagain\n");
    assert_eq!(t.read("out.txt"), "v1\n", "never stale");
}

#[test]
fn a_task_that_writes_into_its_own_inputs_is_told_why_it_is_not_cached() {
    let t = Scenario::new()
        .rush(
            "tasks:\n  gen:\n    cmd: echo ran >> runs.log; date +%N > src/stamp.txt\n    \
             cache_files: [\"src/**\"]\n",
        )
        .file("src/a.txt", "a\n");
    for _ in 0..2 {
        t.run(&["gen"]).success().expect_stderr_containing(
            "warning: the inputs of `gen` changed while it ran (`src/stamp.txt`): not cached",
        );
    }
    assert_eq!(t.read("runs.log"), "ran\nran\n");
}

#[test]
fn a_task_without_cache_files_runs_as_often_as_asked_even_at_once() {
    let t = Scenario::new().rush(
        "tasks:\n  serve:\n    cmd: touch \"started-$WHO\"; until [ -e go ]; do sleep 0.01; done\n",
    );
    t.start_daemon(&[]);
    let a = start_serve(&t, "a");
    let b = start_serve(&t, "b");
    wait_for_file(&t, "started-a");
    wait_for_file(&t, "started-b");
    t.write("go", "");
    t.finish(a, std::time::Duration::from_secs(30)).success();
    t.finish(b, std::time::Duration::from_secs(30)).success();
}

fn start_serve(t: &Scenario, who: &str) -> std::process::Child {
    let mut c = t.command(&["serve"]);
    c.env("WHO", who)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    c.spawn().unwrap()
}

#[test]
fn a_cache_that_cannot_be_written_is_said_once_per_run_with_its_path() {
    let t = Scenario::new()
        .rush(
            "tasks:\n  a:\n    cmd: 'true'\n    cache_files: [in.txt]\n  \
             b:\n    cmd: 'true'\n    cache_files: [in.txt]\n  \
             both:\n    deps: [a, b]\n",
        )
        .file("in.txt", "x\n")
        // In the way of the cache directory, as a full disk would be.
        .file(".rush-cache", "not a directory\n");
    let out = t.run(&["both"]);
    out.success();
    let warning = "warning: cannot write the cache in `[TMP]/project/.rush-cache`: \
                   `.rush-cache` is not a directory; `a` will run again next time";
    assert_eq!(out.stderr().matches(warning).count(), 1, "{}", out.stderr());
    // Still correct: not cached, so it runs again.
    let again = t.run(&["both"]);
    again.success();
    assert!(!again.stderr().contains("up to date"), "{}", again.stderr());
}

#[test]
fn an_entry_that_cannot_be_cleared_keeps_the_task_from_running_instead_of_going_stale() {
    use std::os::unix::fs::PermissionsExt;
    let t = Scenario::new()
        .rush("tasks:\n  gen:\n    cmd: cat in.txt > out.txt\n    cache_files: [in.txt]\n")
        .file("in.txt", "v1\n");
    t.run(&["gen"]).success();
    let cache = t.project().join(".rush-cache");
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o555)).unwrap();
    if std::fs::write(cache.join("probe"), "").is_ok() {
        // Running as root: permissions are not enforced.
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o755)).unwrap();
        return;
    }
    t.write("in.txt", "v2\n");
    t.run(&["gen"])
        .expect_code(1)
        .expect_stderr_containing("the task did not run")
        .expect_stderr_containing("hint: fix the permissions of `");
    // Back to the inputs the entry was stored for: up to date, and true.
    t.write("in.txt", "v1\n");
    t.run(&["gen"]).success();
    assert_eq!(t.read("out.txt"), "v1\n", "never stale");
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn when_the_running_instance_is_cancelled_one_waiter_runs_the_task_and_the_others_report_it_cached()
{
    let t = Scenario::new().rush(GATED).file("in.txt", "v1\n");
    t.start_daemon(&[]);
    let first = start_gen(&t, "first");
    wait_for_file(&t, "started-first");
    let others: Vec<_> = (0..3)
        .map(|i| start_gen(&t, &format!("other{i}")))
        .collect();
    wait_for_waiters(&t, 3);
    taskrush_tests::signal(first.id(), rustix::process::Signal::INT);
    t.finish(first, std::time::Duration::from_secs(30))
        .expect_code(130);
    // One waiter takes the task over; the others wait for it in turn.
    assert!(
        taskrush_tests::wait_until(std::time::Duration::from_secs(20), || {
            t.read("runs.log").lines().count() == 2
        }),
        "runs: {:?}",
        t.read("runs.log")
    );
    t.write("go", "");
    t.write("go2", "");
    let mut cached = 0;
    for other in others {
        let out = t.finish(other, std::time::Duration::from_secs(30));
        out.success();
        cached += usize::from(out.stderr().contains("`gen` is up to date"));
    }
    assert_eq!(cached, 2);
    assert_eq!(
        t.read("runs.log").lines().count(),
        2,
        "{}",
        t.read("runs.log")
    );
    assert_eq!(t.read("out.txt"), "v1\n");
}

#[test]
fn a_waiting_run_whose_client_leaves_holds_nothing_back() {
    let t = Scenario::new().rush(GATED).file("in.txt", "v1\n");
    t.start_daemon(&[]);
    let first = start_gen(&t, "first");
    wait_for_file(&t, "started-first");
    let mut waiter = start_gen(&t, "waiter");
    wait_for_waiters(&t, 1);
    waiter.kill().unwrap();
    waiter.wait().unwrap();
    t.write("go", "");
    t.write("go2", "");
    t.finish(first, std::time::Duration::from_secs(30))
        .success();
    t.run(&["gen"])
        .success()
        .expect_stderr("taskrush: `gen` is up to date\n");
    t.write("in.txt", "v2\n");
    t.run(&["gen"]).success();
    assert_eq!(t.read("runs.log"), "first\n\n");
    assert_eq!(t.read("out.txt"), "v2\n");
}
