//! Running tasks: order, dependencies, status, output.

use taskrush_tests::Scenario;

const CHAIN: &str = "
tasks:
  a:
    cmd: echo a
    description: first
  b:
    cmd: echo b
    deps: [a]
  c:
    cmd: echo c
    depends_on: [a, b]
    description: last
";

#[test]
fn no_deps_runs_only_the_named_tasks_in_their_order() {
    // Given a chain a <- b <- c, `--no-deps c` runs c alone, and
    // `--no-deps c b` runs b then c (the order between named tasks stays).
    let s = Scenario::new().rush(CHAIN);
    s.run(&["run", "--no-deps", "c"])
        .expect_stdout("c\n")
        .success();
    s.run(&["run", "--no-deps", "c", "b"])
        .expect_stdout("b\nc\n")
        .success();
}

#[test]
fn dependencies_run_first_and_each_task_runs_once() {
    Scenario::new()
        .rush(CHAIN)
        .run(&["run", "c"])
        .expect_stdout("a\nb\nc\n")
        .success();
}

#[test]
fn the_02_form_without_run_works() {
    Scenario::new()
        .rush(CHAIN)
        .run(&["b"])
        .expect_stdout("a\nb\n")
        .success();
}

#[test]
fn several_tasks_run_in_the_order_given_and_share_dependencies() {
    Scenario::new()
        .rush(CHAIN)
        .run(&["run", "b", "c"])
        .expect_stdout("a\nb\nc\n")
        .success();
}

#[test]
fn list_shows_tasks_sorted_with_descriptions_and_dependencies() {
    let t = Scenario::new().rush(CHAIN);
    let expected = "a  first\nb  [depends on: a]\nc  last [depends on: a, b]\n";
    t.run(&["--list"]).expect_stdout(expected).success();
    t.run(&["-l"]).expect_stdout(expected).success();
}

#[test]
fn a_long_list_is_aligned_to_its_longest_name_and_survives_a_closed_pipe() {
    // 3,000 tasks (the answer is read as a stream, never held whole), one
    // with a long name and descriptions with characters JSON escapes.
    let mut rush = String::from("tasks:\n");
    for i in 0..3000 {
        rush.push_str(&format!(
            "  t{i:04}:\n    cmd: 'true'\n    description: \"say \\\"{i}\\\" \\\\ done\"\n"
        ));
    }
    rush.push_str("  a-much-longer-task-name:\n    cmd: 'true'\n    depends_on: [t0001]\n");
    let t = Scenario::new().rush(&rush);
    let out = t.run(&["--list"]);
    out.success();
    let stdout = out.stdout();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3001);
    assert_eq!(lines[0], "a-much-longer-task-name  [depends on: t0001]");
    assert_eq!(
        lines[1],
        format!("t0000{}say \"0\" \\ done", " ".repeat(20))
    );
    assert_eq!(
        lines[3000],
        format!("t2999{}say \"2999\" \\ done", " ".repeat(20))
    );
    t.sh("taskrush --list | head -n 1 > first.txt").success();
    assert_eq!(
        t.read("first.txt"),
        "a-much-longer-task-name  [depends on: t0001]\n"
    );
}

#[test]
fn a_failing_task_gives_its_exit_status_and_stops_what_depends_on_it() {
    let t = Scenario::new().rush(
        "
tasks:
  bad:
    cmd: echo before; exit 7
  after:
    cmd: echo never
    deps: [bad]
",
    );
    let out = t.run(&["after"]);
    out.expect_stdout("before\n").expect_code(7);
    out.expect_stderr_containing("error: task `bad` failed: exit code 7");
}

#[test]
fn a_task_killed_by_a_signal_exits_128_plus_the_signal() {
    Scenario::new()
        .rush("tasks:\n  k:\n    cmd: kill -TERM $$\n")
        .run(&["k"])
        .expect_code(128 + 15);
}

#[test]
fn after_a_failure_no_new_task_starts_but_running_ones_finish() {
    let t = Scenario::new().rush(
        "
tasks:
  slow:
    cmd: sleep 0.3; echo slow-done > slow.txt
  fail:
    cmd: exit 3
  later:
    cmd: echo later > later.txt
    deps: [fail]
  all:
    deps: [slow, fail, later]
",
    );
    t.run(&["--jobs", "2", "all"]).expect_code(3);
    assert_eq!(
        t.read("slow.txt"),
        "slow-done\n",
        "the running task finished"
    );
    assert_eq!(
        t.read("later.txt"),
        "",
        "no new task started after the failure"
    );
}

#[test]
fn stdout_and_stderr_stay_apart() {
    let out = Scenario::new()
        .rush("tasks:\n  both:\n    cmd: echo out; echo err >&2\n")
        .run(&["both"]);
    out.expect_stdout("out\n").success();
    assert_eq!(out.stderr(), "err\n");
}

#[test]
fn binary_output_passes_through_byte_exact() {
    let t = Scenario::new()
        .rush("tasks:\n  bin:\n    cmd: head -c 1000000 /dev/urandom | tee data.bin\n");
    let out = t.run(&["bin"]);
    out.success();
    let direct = std::fs::read(t.project().join("data.bin")).unwrap();
    assert_eq!(out.stdout_bytes.len(), 1_000_000);
    assert_eq!(blake3::hash(&out.stdout_bytes), blake3::hash(&direct));
}

#[test]
fn parallel_tasks_prefix_each_line_with_their_name() {
    let t = Scenario::new().rush(
        "
tasks:
  one:
    cmd: printf 'x1\\nx2\\n'
  two:
    cmd: printf 'y1\\ny2'
  all:
    deps: [one, two]
",
    );
    let out = t.run(&["-j", "all"]);
    out.success();
    let mut lines: Vec<String> = out.stdout().lines().map(String::from).collect();
    lines.sort();
    assert_eq!(lines, ["[one] x1", "[one] x2", "[two] y1", "[two] y2"]);
}

#[test]
fn independent_tasks_run_at_the_same_time_under_jobs() {
    // Each task waits (bounded) for the other to have started: only
    // parallel execution lets both finish quickly.
    let t = Scenario::new().rush(
        "
tasks:
  left:
    cmd: touch left.started; i=0; while [ ! -e right.started ] && [ $i -lt 200 ]; do sleep 0.01; i=$((i+1)); done; test -e right.started
  right:
    cmd: touch right.started; i=0; while [ ! -e left.started ] && [ $i -lt 200 ]; do sleep 0.01; i=$((i+1)); done; test -e left.started
  both:
    deps: [left, right]
",
    );
    t.run(&["--jobs", "2", "both"]).success();
}

#[test]
fn without_jobs_tasks_run_one_at_a_time() {
    let t = Scenario::new().rush(
        "
tasks:
  left:
    cmd: test ! -e running; touch running; sleep 0.1; rm running
  right:
    cmd: test ! -e running; touch running; sleep 0.1; rm running
  both:
    deps: [left, right]
",
    );
    t.run(&["both"]).success();
}

#[test]
fn tasks_see_the_clients_environment_not_the_daemons() {
    let t = Scenario::new().rush(
        "
tasks:
  show-foo:
    cmd: echo \"$FOO $BAR\"
    env:
      BAR: \"${FOO}-${MISSING:-dflt}\"
",
    );
    t.start_daemon(&[("FOO", "old")]);
    t.run_with(&["run", "show-foo"], |c| {
        c.env("FOO", "new");
    })
    .expect_stdout("new new-dflt\n")
    .success();
}

#[test]
fn tasks_run_in_the_directory_of_the_rush_file_found_upwards() {
    let t = Scenario::new()
        .rush("tasks:\n  where:\n    cmd: pwd\n")
        .cwd("sub/deeper");
    let out = t.run(&["where"]);
    out.success();
    assert_eq!(
        out.stdout().trim(),
        t.project().canonicalize().unwrap().display().to_string()
    );
}

#[test]
fn the_yml_spellings_of_the_file_are_found() {
    Scenario::new()
        .file(".rush.yml", "tasks:\n  hi:\n    cmd: echo yml\n")
        .run(&["hi"])
        .expect_stdout("yml\n");
    Scenario::new()
        .file(".rush.yaml", "tasks:\n  hi:\n    cmd: echo yaml\n")
        .run(&["hi"])
        .expect_stdout("yaml\n");
}

#[test]
fn dash_f_names_the_file() {
    Scenario::new()
        .file(
            "other/tasks.yml",
            "tasks:\n  hi:\n    cmd: echo other; pwd\n",
        )
        .run(&["-f", "other/tasks.yml", "hi"])
        .success();
}

#[test]
fn before_and_after_hooks_wrap_the_command() {
    Scenario::new()
        .rush("tasks:\n  t:\n    before: echo before\n    cmd: echo main\n    after: echo after\n")
        .run(&["t"])
        .expect_stdout("before\nmain\nafter\n")
        .success();
}

#[test]
fn a_failing_before_hook_stops_the_task() {
    Scenario::new()
        .rush("tasks:\n  t:\n    before: exit 4\n    cmd: echo main\n")
        .run(&["t"])
        .expect_stdout("")
        .expect_code(4);
}

#[test]
fn an_unknown_task_is_an_error_with_the_closest_name() {
    let out = Scenario::new().rush(CHAIN).run(&["bb"]);
    out.expect_code(1);
    out.expect_stderr_containing("`bb`");
    out.expect_stderr_containing("hint:");
}

#[test]
fn no_task_given_runs_the_default_task() {
    Scenario::new()
        .rush("tasks:\n  default:\n    cmd: echo dflt\n")
        .run(&[])
        .expect_stdout("dflt\n")
        .success();
}

#[test]
fn many_clients_and_projects_at_once_each_get_their_own_output() {
    let t = Scenario::new();
    for i in 0..8 {
        t.write(
            &format!("p{i}/.rush"),
            format!("tasks:\n  t:\n    cmd: for j in 1 2 3; do echo p{i}-$j; done; exit {i}\n"),
        );
    }
    // No daemon yet: eight CLIs race to start one; all eight runs succeed.
    let children: Vec<_> = (0..8)
        .map(|i| {
            let mut c = t.command(&["t"]);
            c.current_dir(t.project().join(format!("p{i}")));
            c.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            c.spawn().unwrap()
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let out = t.finish(child, std::time::Duration::from_secs(30));
        out.expect_stdout(&format!("p{i}-1\np{i}-2\np{i}-3\n"))
            .expect_code(i as i32);
    }
}

#[test]
fn the_bundled_demo_project_runs_and_caches_its_build() {
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/demo");
    let mut t = Scenario::new();
    for rel in [".rush", "src/a.txt", "src/b.txt"] {
        t = t.file(rel, &std::fs::read_to_string(demo.join(rel)).unwrap());
    }
    t.run(&["test"])
        .expect_stdout("fmt: ok\nbuild: hello, 2 lines\ntest: ok\n")
        .success();
    let again = t.run(&["test"]);
    again.expect_stdout("fmt: ok\ntest: ok\n").success();
    assert_eq!(again.stderr(), "taskrush: `build` is up to date\n");
    t.run(&["-j", "all"]).success();
}
