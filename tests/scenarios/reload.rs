//! Hot reload of `.rush` files, the global event stream, `run --watch`.
//! The event stream is the readiness signal: no test sleeps for a watcher.

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use taskrush_tests::{Scenario, processes_matching, signal, wait_timeout, wait_until};

use super::plugins::private_plugin;

const ONE: &str = "tasks:\n  hi:\n    cmd: echo one\n";

fn is_reload(e: &serde_json::Value) -> bool {
    e["event"] == "config_reloaded"
}

/// A project loaded by the daemon, with an event subscription.
fn loaded(yaml: &str) -> (Scenario, taskrush_tests::EventStream) {
    let s = Scenario::new().rush(yaml);
    s.run(&["--list"]).success();
    let ev = s.events();
    (s, ev)
}

#[test]
fn saves_in_place_in_two_writes_and_by_rename_are_applied_once_each() {
    let (s, mut ev) = loaded(ONE);
    // In place.
    s.write(".rush", "tasks:\n  hi:\n    cmd: echo two\n");
    ev.wait_for("reload of the in-place save", is_reload);
    s.run(&["hi"]).expect_stdout("two\n").success();

    // Two partial writes of one save.
    let text = "tasks:\n  hi:\n    cmd: echo three\n  other:\n    cmd: echo x\n";
    let (a, b) = text.split_at(text.len() / 2);
    let mut f = std::fs::File::create(s.project().join(".rush")).expect("open");
    f.write_all(a.as_bytes()).expect("first half");
    f.flush().expect("flush");
    std::thread::sleep(Duration::from_millis(5));
    f.write_all(b.as_bytes()).expect("second half");
    drop(f);
    let e = ev.wait_for("reload of the two-part save", is_reload);
    assert_eq!(e["tasks"], 2, "{e}");
    s.run(&["hi"]).expect_stdout("three\n").success();

    // Editor style: write a temp file, rename it over.
    s.write(".rush.tmp", "tasks:\n  hi:\n    cmd: echo four\n");
    std::fs::rename(s.project().join(".rush.tmp"), s.project().join(".rush")).expect("rename");
    let e = ev.wait_for("reload of the renamed save", is_reload);
    assert_eq!(e["tasks"], 1, "{e}");
    s.run(&["hi"]).expect_stdout("four\n").success();
    assert!(
        !ev.seen.iter().any(|e| e["event"] == "config_rejected"),
        "a half-written file was applied: {:?}",
        ev.seen
    );
}

#[test]
fn the_next_call_after_a_save_sees_it_even_before_the_watcher() {
    let s = Scenario::new().rush(ONE);
    s.run(&["hi"]).expect_stdout("one\n").success();
    for i in 0..5 {
        s.write(".rush", format!("tasks:\n  hi:\n    cmd: echo v{i}\n"));
        s.run(&["hi"]).expect_stdout(&format!("v{i}\n")).success();
    }
}

#[test]
fn an_invalid_save_keeps_the_last_good_config_and_says_so_until_a_good_one() {
    let (s, mut ev) = loaded(ONE);
    s.write(
        ".rush",
        "tasks:\n  hi:\n    cmd: echo one\n  bad:\n    cmdd: x\n",
    );
    let e = ev.wait_kind("config_rejected");
    assert_eq!(e["using_last_valid"], true, "{e}");
    assert_eq!(e["line"], 5, "{e}");
    let warning = "warning: using the last valid config; `[TMP]/project/.rush:5:5`: unknown key `cmdd` in task `bad`\n";
    s.run(&["hi"])
        .expect_stdout("one\n")
        .expect_stderr(warning)
        .success();
    s.run(&["--list"])
        .expect_stdout("hi\n")
        .expect_stderr(warning)
        .success();
    let status = s.run(&["daemon", "status"]);
    assert!(
        status.stdout().contains("using the last valid config; `")
            && status.stdout().contains(".rush:5:5`: unknown key `cmdd`"),
        "{}",
        status.stdout()
    );
    // A good save ends it.
    s.write(".rush", "tasks:\n  hi:\n    cmd: echo fixed\n");
    ev.wait_for("reload", is_reload);
    s.run(&["hi"])
        .expect_stdout("fixed\n")
        .expect_stderr("")
        .success();
    assert!(!s.run(&["daemon", "status"]).stdout().contains("last valid"));
}

#[test]
fn a_project_never_loaded_successfully_still_fails() {
    let s = Scenario::new().rush("tasks:\n  hi:\n    cmdd: x\n");
    let out = s.run(&["hi"]);
    out.expect_code(1);
    out.expect_stderr_containing("unknown key `cmdd`");
}

#[test]
fn deleting_the_file_keeps_the_last_good_config_until_it_is_back() {
    let (s, mut ev) = loaded(ONE);
    std::fs::remove_file(s.project().join(".rush")).expect("delete");
    let e = ev.wait_kind("config_rejected");
    assert!(e["message"].as_str().unwrap().contains("deleted"), "{e}");
    s.run(&["hi"])
        .expect_stdout("one\n")
        .expect_stderr(
            "warning: using the last valid config; `[TMP]/project/.rush`: the file was deleted\n",
        )
        .success();
    s.write(".rush", "tasks:\n  hi:\n    cmd: echo back\n");
    ev.wait_for("reload", is_reload);
    s.run(&["hi"])
        .expect_stdout("back\n")
        .expect_stderr("")
        .success();
}

#[test]
fn a_vcs_burst_of_two_thousand_files_causes_one_reload() {
    let (s, mut ev) = loaded(ONE);
    // Like a checkout: thousands of files, in the root and below, then
    // the `.rush` file among them.
    for i in 0..2000 {
        let rel = if i % 2 == 0 {
            format!("f{i}.txt")
        } else {
            format!("src/d{}/f{i}.rs", i % 40)
        };
        s.write(&rel, format!("{i}"));
        if i == 1000 {
            s.write(".rush", "tasks:\n  hi:\n    cmd: echo burst\n");
        }
    }
    ev.wait_for("reload", is_reload);
    // A sentinel save: every event of the burst came before its reload.
    s.write(
        ".rush",
        "tasks:\n  hi:\n    cmd: echo sentinel\n  s:\n    cmd: x\n",
    );
    ev.wait_for("sentinel reload", |e| is_reload(e) && e["tasks"] == 2);
    let reloads = ev.seen.iter().filter(|e| is_reload(e)).count() - 1;
    assert!(
        reloads <= 2,
        "{reloads} reloads for one save: {:?}",
        ev.seen
    );
    s.run(&["hi"]).expect_stdout("sentinel\n").success();
}

#[test]
fn a_save_during_a_run_leaves_the_run_with_its_config_and_events_show_it_all() {
    let (s, mut ev) = loaded(
        "tasks:\n  slow:\n    cmd: touch started; while [ ! -f go ]; do sleep 0.01; done; echo old\n",
    );
    let mut c = s.command(&["slow"]);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = c.spawn().expect("spawn");
    assert!(wait_until(Duration::from_secs(20), || s
        .project()
        .join("started")
        .exists()));
    s.write(".rush", "tasks:\n  slow:\n    cmd: echo new\n");
    ev.wait_for("reload", is_reload);
    s.write("go", "");
    s.finish(child, Duration::from_secs(20))
        .expect_stdout("old\n")
        .success();
    s.run(&["slow"]).expect_stdout("new\n").success();
    // The subscriber saw the first run whole, in order.
    ev.wait_for("the second run's end", |e| {
        e["event"] == "run_finished" && e["run_id"] == 2
    });
    let kinds: Vec<&str> = ev
        .seen
        .iter()
        .filter(|e| e["run_id"] == 1)
        .map(|e| e["event"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        kinds,
        [
            "run_started",
            "task_started",
            "task_finished",
            "run_finished"
        ]
    );
}

#[test]
fn the_watch_limit_is_reported_with_how_to_raise_it_and_saves_still_apply() {
    let s = Scenario::new().rush(ONE);
    s.start_daemon(&[("TASKRUSH_TEST_MAX_WATCHES", "0")]);
    s.run(&["hi"]).expect_stdout("one\n").success();
    let status = s.run(&["daemon", "status"]);
    assert!(
        status.stdout().contains("watching: degraded")
            && status
                .stdout()
                .contains("sysctl fs.inotify.max_user_watches="),
        "{}",
        status.stdout()
    );
    s.write(".rush", "tasks:\n  hi:\n    cmd: echo two\n");
    s.run(&["hi"]).expect_stdout("two\n").success();
}

/// `taskrush run --watch` in the background, its events followed.
fn watching(s: &Scenario, args: &[&str]) -> std::process::Child {
    let mut c = s.command(args);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    c.spawn().expect("spawn taskrush --watch")
}

#[test]
fn run_watch_reruns_on_change_and_restarts_a_run_a_change_interrupts() {
    let s = Scenario::new()
        .rush(
            "tasks:\n  t:\n    cmd: cat src/in.txt; if [ -f slow ]; then touch waiting; while [ ! -f go ]; do sleep 0.01; done; fi\n    cache_files: [src/**]\n",
        )
        .file("src/in.txt", "a\n")
        .file(".gitignore", "out/\n");
    s.run(&["--list"]).success();
    let mut ev = s.events();
    let child = watching(&s, &["run", "--watch", "t"]);
    ev.wait_for("first run", |e| e["event"] == "run_finished");
    // Not an input: nothing happens (checked below, by iteration numbers).
    s.write("out/x", "ignored");
    s.write("src/in.txt", "b\n");
    let e = ev.wait_kind("run_started");
    assert_eq!(e["iteration"], 2, "{e}");
    ev.wait_kind("run_finished");
    // A change during a run cancels it and starts again.
    s.write("slow", "");
    s.write("src/in.txt", "c\n");
    ev.wait_for("third run", |e| {
        e["event"] == "run_started" && e["iteration"] == 3
    });
    assert!(wait_until(Duration::from_secs(20), || s
        .project()
        .join("waiting")
        .exists()));
    std::fs::remove_file(s.project().join("slow")).expect("rm slow");
    s.write("src/in.txt", "d\n");
    let cancelled = ev.wait_kind("run_finished");
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    let e = ev.wait_kind("run_started");
    assert_eq!(e["iteration"], 4, "{e}");
    ev.wait_kind("run_finished");
    // Ctrl-C ends the watch and leaves no process.
    signal(child.id(), rustix::process::Signal::INT);
    let out = s.finish(child, Duration::from_secs(10));
    out.expect_code(130);
    assert_eq!(out.stdout(), "a\nb\nc\nd\n", "{}", out.stderr());
    out.expect_stderr_containing("taskrush: `src/in.txt` changed: restarting");
    assert!(processes_matching(&s.project().display().to_string()).is_empty());
}

#[test]
fn run_watch_queue_lets_a_run_finish_before_running_again() {
    let s = Scenario::new()
        .rush("tasks:\n  t:\n    cmd: cat in.txt; touch waiting; while [ ! -f go ]; do sleep 0.01; done; rm go\n")
        .file("in.txt", "a\n");
    s.run(&["--list"]).success();
    let mut ev = s.events();
    let child = watching(&s, &["run", "--watch", "--on-change", "queue", "t"]);
    assert!(wait_until(Duration::from_secs(20), || s
        .project()
        .join("waiting")
        .exists()));
    std::fs::remove_file(s.project().join("waiting")).expect("rm");
    s.write("in.txt", "b\n");
    s.write("go", "");
    let first = ev.wait_kind("run_finished");
    assert_eq!(first["status"], "success", "{first}");
    let e = ev.wait_kind("run_started");
    assert_eq!(e["iteration"], 2, "{e}");
    assert!(wait_until(Duration::from_secs(20), || s
        .project()
        .join("waiting")
        .exists()));
    signal(child.id(), rustix::process::Signal::INT);
    let out = s.finish(child, Duration::from_secs(10));
    out.expect_code(130);
    assert_eq!(out.stdout(), "a\nb\n");
    assert!(processes_matching("while [ ! -f go ]").is_empty());
}

#[test]
fn the_editor_client_example_lists_runs_and_follows_events() {
    let s = Scenario::new()
        .rush("tasks:\n  build:\n    cmd: echo building\n    description: Build it\n");
    s.run(&["--list"]).success();
    let script = super::plugins::repo()
        .join("examples")
        .join("editor-client.py");
    let mut c = std::process::Command::new("python3");
    c.arg(&script).arg("build");
    // The scenario's environment (socket, cwd) without `taskrush` itself.
    let probe = s.command(&[]);
    for (k, v) in probe.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c.current_dir(s.project())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("python3");
    let status = wait_timeout(&mut child, Duration::from_secs(30)).expect("the client finishes");
    let mut out = String::new();
    use std::io::Read;
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .ok();
    assert!(status.success(), "{out}");
    for needle in [
        "build  Build it",
        "run_started",
        "task_started build",
        "building",
        "task_finished build success",
        "run_finished success",
    ] {
        assert!(out.contains(needle), "no `{needle}` in:\n{out}");
    }
}

fn plugin_records(s: &Scenario) -> Vec<serde_json::Value> {
    s.read("rec.jsonl")
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn plugin_project(mode: &str) -> Scenario {
    let s = Scenario::new();
    let rec = s.project().join("rec.jsonl").display().to_string();
    private_plugin(&s, mode, "1.0.0", &["TOKEN"]);
    let s = s.env("REC", &rec).rush(
        "plugins:\n  - name: p\n    config: {record: '${REC}'}\ntasks:\n  build:\n    cmd: echo built\n",
    );
    super::plugins::grant_yes(&s, "p");
    s
}

#[test]
fn a_plugin_update_is_swapped_in_without_dropping_the_call_in_flight() {
    let s = plugin_project("slow-after");
    // Its slow `after_task` is the point here, not a slow-plugin warning.
    let config = s.user_config_path();
    std::fs::create_dir_all(config.parent().expect("a parent")).expect("config dir");
    let text = std::fs::read_to_string(&config).unwrap_or_default();
    std::fs::write(
        &config,
        format!("{text}\n[metrics]\nslow_plugin_share = 1.0\n"),
    )
    .expect("write the user config");
    let mut ev = {
        s.run(&["--list"]).success();
        s.events()
    };
    let mut c = s.command(&["build"]);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = c.spawn().expect("spawn");
    // The slow `after_task` of version 1 is in flight…
    assert!(wait_until(Duration::from_secs(20), || plugin_records(&s)
        .iter()
        .any(|r| r["hook"] == "after_task")));
    // …when version 2 arrives.
    private_plugin(&s, "slow-after", "2.0.0", &["TOKEN"]);
    let e = ev.wait_kind("plugin_restarted");
    assert_eq!(e["version"], "2.0.0", "{e}");
    // The call in flight completed on version 1: no plugin warning (the
    // end-of-run note that the slow hook added time is not one).
    let out = s.finish(child, Duration::from_secs(20));
    out.expect_stdout("built\n").success();
    let stderr = out.stderr();
    let other: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with("warning: p added "))
        .collect();
    assert!(other.is_empty(), "{stderr}");
    let answered: Vec<_> = plugin_records(&s)
        .into_iter()
        .filter(|r| r["hook"] == "after_task_answered")
        .collect();
    assert_eq!(answered.len(), 1);
    assert_eq!(answered[0]["version"], "1.0.0");
    let old_pid = answered[0]["pid"].as_u64().expect("pid");
    // The next call goes to version 2, and version 1 is gone.
    s.run(&["build"]).expect_stdout("built\n").success();
    let before: Vec<_> = plugin_records(&s)
        .into_iter()
        .filter(|r| r["hook"] == "before_task")
        .collect();
    assert_eq!(before.last().expect("a call")["version"], "2.0.0");
    assert!(wait_until(
        Duration::from_secs(10),
        || !std::path::Path::new(&format!("/proc/{old_pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{old_pid}/stat"))
                .is_ok_and(|st| st.contains(") Z "))
    ));
}

#[test]
fn a_plugin_update_that_fails_its_handshake_leaves_the_old_version_serving() {
    let s = plugin_project("good");
    s.run(&["build"]).success();
    let mut ev = s.events();
    private_plugin(&s, "exit-early", "2.0.0", &["TOKEN"]);
    let e = ev.wait_kind("plugin_failed");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("the running one keeps serving"),
        "{e}"
    );
    s.run(&["build"]).expect_stderr("").success();
    let last = plugin_records(&s)
        .into_iter()
        .rfind(|r| r["hook"] == "before_task")
        .expect("a call");
    assert_eq!(last["version"], "1.0.0");
    let info = s.run(&["plugin", "info", "p", "--json"]);
    assert!(
        info.stdout().contains("before the handshake"),
        "{}",
        info.stdout()
    );
}

#[test]
fn a_plugin_update_asking_for_more_permissions_is_refused_and_explained() {
    let s = plugin_project("good");
    s.run(&["build"]).success();
    let mut ev = s.events();
    private_plugin(&s, "good", "2.0.0", &["TOKEN", "AWS_SECRET_ACCESS_KEY"]);
    let e = ev.wait_kind("plugin_reload_refused");
    let m = e["message"].as_str().unwrap();
    assert!(
        m.contains("environment `AWS_SECRET_ACCESS_KEY`")
            && m.contains("`taskrush plugin grant p`"),
        "{m}"
    );
    s.run(&["build"]).success();
    let last = plugin_records(&s)
        .into_iter()
        .rfind(|r| r["hook"] == "before_task")
        .expect("a call");
    assert_eq!(last["version"], "1.0.0");
    let info = s.run(&["plugin", "info", "p", "--json"]);
    assert!(
        info.stdout().contains("taskrush plugin grant p"),
        "{}",
        info.stdout()
    );
}

#[test]
fn plugins_removed_from_the_rush_file_are_stopped() {
    let s = plugin_project("good");
    s.run(&["build"]).success();
    let mut ev = s.events();
    s.write(".rush", "tasks:\n  build:\n    cmd: echo built\n");
    let e = ev.wait_kind("plugin_stopped");
    assert_eq!(e["plugin"], "p");
    assert!(wait_until(Duration::from_secs(10), || plugin_records(&s)
        .iter()
        .any(|r| r["hook"] == "shutdown")));
}

#[test]
fn a_rush_file_broken_on_its_first_load_is_reported_when_saved_again_and_when_fixed() {
    let s = Scenario::new().rush("tasks:\n  hi: [\n");
    s.run(&["daemon", "start"]).success();
    let mut ev = s.events();
    s.run(&["--list"]).expect_code(1);
    // Still broken: said without another request.
    s.write(".rush", "tasks:\n  hi:\n    cmd: 3\n    nope: 1\n");
    let file = s.project().canonicalize().expect("canonical").join(".rush");
    let e = ev.wait_kind("config_rejected");
    assert_eq!(e["file"], file.display().to_string(), "{e}");
    assert_eq!(e["using_last_valid"], false, "{e}");
    // Fixed: the project is loaded and said so, no request needed.
    s.write(".rush", ONE);
    let e = ev.wait_for("reload of the fixed file", is_reload);
    assert_eq!(e["file"], file.display().to_string(), "{e}");
    assert_eq!(e["tasks"], 1, "{e}");
    s.run(&["hi"]).expect_stdout("one\n").success();
}

#[test]
fn a_rush_file_created_in_a_folder_a_client_asked_about_is_reported() {
    let s = Scenario::new();
    s.run(&["daemon", "start"]).success();
    let mut ev = s.events();
    // No `.rush` here (nor above): an error, and the folder is watched.
    s.run(&["--list"]).expect_code(1);
    s.write(".rush.yml", ONE);
    let e = ev.wait_for("the new file", is_reload);
    let file = s
        .project()
        .canonicalize()
        .expect("canonical")
        .join(".rush.yml");
    assert_eq!(e["file"], file.display().to_string(), "{e}");
    s.run(&["hi"]).expect_stdout("one\n").success();
}
