//! Input hashing is bounded and can be stopped: a symlink diamond, a huge
//! file, a glob over too many files, a client that leaves.

use std::process::Stdio;
use std::time::Duration;

use rustix::process::Signal;
use taskrush_tests::{Scenario, signal, wait_until};

/// CPU time (user + system) the process has used, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of stat(5); 12 and 13 here.
    field(11) + field(12)
}

/// Whether the daemon used (almost) no CPU over half a second.
fn idle(pid: u32) -> bool {
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_millis(500));
    cpu_ticks(pid) - before < 10
}

/// A project whose one cached task's input is a sparse file of 512 GiB
/// (allowed by raising the byte bound): hashing it takes minutes.
fn huge_input() -> Scenario {
    let t = Scenario::new().rush("tasks:\n  big:\n    cmd: 'true'\n    cache_files: [big.bin]\n");
    let file = std::fs::File::create(t.project().join("big.bin")).unwrap();
    file.set_len(512 << 30).unwrap();
    t.start_daemon(&[("TASKRUSH_MAX_INPUT_BYTES", &(1u64 << 40).to_string())]);
    t
}

/// Start `taskrush big` and wait until the daemon is busy hashing.
fn hashing(t: &Scenario) -> (std::process::Child, u32) {
    let pid = t.daemon_pid().expect("the daemon runs");
    let start = cpu_ticks(pid);
    let mut c = t.command(&["big"]);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || cpu_ticks(pid) - start > 30),
        "the daemon never got busy hashing"
    );
    (child, pid)
}

#[test]
fn ctrl_c_while_a_huge_input_is_hashed_ends_the_run_and_the_hashing() {
    let t = huge_input();
    let (child, pid) = hashing(&t);
    signal(child.id(), Signal::INT);
    t.finish(child, Duration::from_secs(10)).expect_code(130);
    assert!(
        wait_until(Duration::from_secs(10), || idle(pid)),
        "the daemon keeps hashing after the run was cancelled"
    );
}

#[test]
fn a_client_that_leaves_while_a_huge_input_is_hashed_stops_the_hashing() {
    let t = huge_input();
    let (mut child, pid) = hashing(&t);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || idle(pid)),
        "the daemon keeps hashing for a client that left"
    );
}

#[test]
fn inputs_larger_than_the_byte_bound_fail_the_task_naming_the_bound() {
    let t = Scenario::new().rush("tasks:\n  big:\n    cmd: 'true'\n    cache_files: [big.bin]\n");
    let file = std::fs::File::create(t.project().join("big.bin")).unwrap();
    file.set_len(64 << 30).unwrap();
    let out = t.run(&["big"]);
    out.expect_code(1).expect_stderr_starting(
        "error: task `big` failed: cannot check the cache: the files `cache_files` match are \
         more than 34359738368 bytes (32 GiB) in all, the limit for one task\n\
         hint: narrow the patterns, or raise TASKRUSH_MAX_INPUT_BYTES",
    );
}

#[test]
fn a_glob_over_more_files_than_the_bound_fails_the_task_naming_the_bound() {
    let mut t = Scenario::new()
        .env("TASKRUSH_MAX_INPUT_FILES", "10")
        .rush("tasks:\n  gen:\n    cmd: 'true'\n    cache_files: [\"src/**\"]\n");
    for i in 0..11 {
        t = t.file(&format!("src/f{i}.txt"), "x");
    }
    t.run(&["gen"]).expect_code(1).expect_stderr_starting(
        "error: task `gen` failed: cannot check the cache: `cache_files` match more than 10 \
         files, the limit for one task\n",
    );
}

#[test]
fn inputs_deeper_than_the_bound_fail_the_task_naming_the_bound() {
    let t = Scenario::new()
        .env("TASKRUSH_MAX_INPUT_DEPTH", "3")
        .rush("tasks:\n  gen:\n    cmd: 'true'\n    cache_files: [\"src/**/*.txt\"]\n")
        .file("src/a/b/c/d/deep.txt", "x");
    t.run(&["gen"]).expect_code(1).expect_stderr_starting(
        "error: task `gen` failed: cannot check the cache: `cache_files` reach more than 3 \
         directories deep below `src` (at `src/a/b/c/d`), the limit\n",
    );
}

/// The daemon the CLI starts runs under a 4 GiB address-space limit (a
/// failure must not eat the machine): `TASKRUSHD` names a wrapper.
fn with_address_space_limit(t: Scenario) -> Scenario {
    let wrapper = t.root().join("taskrushd-limited");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nulimit -v 4194304\nexec '{}' \"$@\"\n",
            taskrush_tests::bin_dir().join("taskrushd").display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let wrapper = wrapper.display().to_string();
    t.env("TASKRUSHD", &wrapper)
}

/// l0/{x,y} -> l1, l1/{x,y} -> l2, …, up to l24: 2^24 paths to l24.
fn symlink_diamond(t: &Scenario) {
    for level in 0..=24 {
        std::fs::create_dir_all(t.project().join(format!("l{level}"))).unwrap();
    }
    for level in 0..24 {
        for name in ["x", "y"] {
            std::os::unix::fs::symlink(
                format!("../l{}", level + 1),
                t.project().join(format!("l{level}/{name}")),
            )
            .unwrap();
        }
    }
}

#[test]
fn a_symlink_diamond_is_walked_once_per_directory() {
    // l0/{x,y} -> l1, l1/{x,y} -> l2, …: 2^24 paths to l24/leaf.txt.
    let t = with_address_space_limit(Scenario::new())
        .rush("tasks:\n  gen:\n    cmd: echo ran >> runs.log\n    cache_files: [\"l0/**\"]\n");
    symlink_diamond(&t);
    t.write("l24/leaf.txt", "leaf");
    let mut c = t.command(&["gen"]);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    t.finish(c.spawn().unwrap(), Duration::from_secs(30))
        .success();
    let pid = t.daemon_pid().expect("the daemon runs");
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max address space") && l.contains("4294967296")),
        "the daemon runs under the limit:\n{limits}"
    );
    t.run(&["gen"])
        .success()
        .expect_stderr("taskrush: `gen` is up to date\n");
    t.write("l24/leaf.txt", "changed");
    t.run(&["gen"]).success();
    assert_eq!(t.read("runs.log"), "ran\nran\n");
}

#[test]
fn a_file_matched_only_through_a_second_link_to_its_directory_is_an_input() {
    // `a/other` is read first (name order) and matches nothing there;
    // `b/gen` is the same directory, and there `*/gen/*.txt` matches.
    let t = Scenario::new()
        .rush(
            "tasks:\n  gen:\n    cmd: echo ran >> runs.log; cat b/gen/*.txt > out.txt\n    \
             cache_files: [\"*/gen/*.txt\"]\n",
        )
        .file("a/other/x.txt", "v1\n");
    std::fs::create_dir(t.project().join("b")).unwrap();
    std::os::unix::fs::symlink("../a/other", t.project().join("b/gen")).unwrap();
    t.run(&["gen"]).success();
    t.run(&["gen"])
        .success()
        .expect_stderr("taskrush: `gen` is up to date\n");
    t.write("a/other/x.txt", "v2\n");
    t.run(&["gen"]).success();
    assert_eq!(t.read("out.txt"), "v2\n", "never stale");
    assert_eq!(t.read("runs.log"), "ran\nran\n");
}

#[test]
fn removing_or_adding_a_second_link_to_an_input_directory_reruns_the_task() {
    // The task sees `src/real/x.txt` and `src/zlink/x.txt` (read second).
    let t = Scenario::new()
        .rush(
            "tasks:\n  gen:\n    cmd: echo ran >> runs.log; find -L src -name '*.txt' | sort > \
             list.txt\n    cache_files: [\"src/**\"]\n",
        )
        .file("src/real/x.txt", "x\n");
    let link = t.project().join("src/zlink");
    std::os::unix::fs::symlink("real", &link).unwrap();
    t.run(&["gen"]).success();
    assert_eq!(t.read("list.txt"), "src/real/x.txt\nsrc/zlink/x.txt\n");
    t.run(&["gen"])
        .success()
        .expect_stderr("taskrush: `gen` is up to date\n");
    std::fs::remove_file(&link).unwrap();
    t.run(&["gen"]).success();
    assert_eq!(t.read("list.txt"), "src/real/x.txt\n", "never stale");
    std::os::unix::fs::symlink("real", t.project().join("src/zz")).unwrap();
    t.run(&["gen"]).success();
    assert_eq!(t.read("list.txt"), "src/real/x.txt\nsrc/zz/x.txt\n");
    assert_eq!(t.read("runs.log"), "ran\nran\nran\n");
}

#[test]
fn a_symlink_diamond_under_patterns_that_need_every_path_fails_naming_the_bound() {
    // `!l0/x/y` matches under some paths to a directory only: each path is
    // walked, and the diamond's 2^24 paths pass the bound.
    let t = with_address_space_limit(Scenario::new()).rush(
        "tasks:\n  gen:\n    cmd: echo ran >> runs.log\n    \
         cache_files: [\"l0/**\", \"!l0/x/y\"]\n",
    );
    symlink_diamond(&t);
    let mut c = t.command(&["gen"]);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    t.finish(c.spawn().unwrap(), Duration::from_secs(60))
        .expect_code(1)
        .expect_stderr_starting(
            "error: task `gen` failed: cannot check the cache: `cache_files` read directories \
             below `l0` more than 10000 times again through other symbolic links (at `l0/",
        )
        .expect_stderr_containing(
            "hint: patterns like `l0/**` or `l0/**/*.ext`, without `!` patterns or other \
             patterns further down, read each directory once\n",
        );
}

#[test]
fn a_pseudo_file_that_reads_more_than_its_size_counts_against_the_byte_bound() {
    // `/proc/self/pagemap` says it is empty and reads hundreds of GiB; a
    // link to it can come with a repository.
    let t = Scenario::new()
        .env("TASKRUSH_MAX_INPUT_BYTES", &(64u64 << 20).to_string())
        .rush("tasks:\n  gen:\n    cmd: echo ran\n    cache_files: [\"data/**\"]\n");
    std::fs::create_dir(t.project().join("data")).unwrap();
    std::os::unix::fs::symlink("/proc/self/pagemap", t.project().join("data/pm")).unwrap();
    let mut c = t.command(&["gen"]);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    t.finish(c.spawn().unwrap(), Duration::from_secs(30))
        .expect_code(1)
        .expect_stderr_starting(
            "error: task `gen` failed: cannot check the cache: the files `cache_files` match \
             are more than 67108864 bytes (64 MiB) in all, the limit for one task\n",
        );
}
