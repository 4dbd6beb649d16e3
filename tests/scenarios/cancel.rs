//! Ctrl-C and vanishing clients: the run's processes are all stopped.

use std::process::Stdio;
use std::time::Duration;

use rustix::process::Signal;
use taskrush_tests::{Scenario, processes_matching, signal, wait_until};

/// A task that starts a grandchild (`sleep`) and waits for it; the marker
/// in the sleep's argument lets the test find it in /proc.
fn sleeper(marker: &str) -> String {
    format!("tasks:\n  long:\n    cmd: touch started; sh -c 'sleep {marker} & wait'\n")
}

/// A distinct, valid `sleep` duration per test, to find its process.
fn unique_marker() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("1{}{n:03}.25", std::process::id())
}

#[test]
fn ctrl_c_cancels_the_run_and_leaves_no_process_behind() {
    let marker = unique_marker();
    let t = Scenario::new().rush(&sleeper(&marker));
    let mut c = t.command(&["long"]);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    let pid = child.id();
    assert!(
        wait_until(Duration::from_secs(20), || t
            .project()
            .join("started")
            .exists()),
        "task started"
    );
    assert!(
        wait_until(Duration::from_secs(5), || !processes_matching(&marker)
            .is_empty()),
        "grandchild running"
    );

    let sent = std::time::Instant::now();
    signal(pid, Signal::INT);
    let out = t.finish(child, Duration::from_secs(10));
    let took = sent.elapsed();
    out.expect_code(130);
    assert!(took < Duration::from_secs(2), "exited after {took:?}");
    assert!(
        wait_until(Duration::from_secs(1), || processes_matching(&marker)
            .is_empty()),
        "processes left: {:?}",
        processes_matching(&marker)
    );
}

#[test]
fn a_killed_client_cancels_its_run() {
    let marker = unique_marker();
    let t = Scenario::new().rush(&sleeper(&marker));
    let mut c = t.command(&["long"]);
    c.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    assert!(wait_until(Duration::from_secs(20), || t
        .project()
        .join("started")
        .exists()));
    assert!(wait_until(Duration::from_secs(5), || !processes_matching(
        &marker
    )
    .is_empty()));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        wait_until(Duration::from_secs(3), || processes_matching(&marker)
            .is_empty()),
        "processes left after the client was killed: {:?}",
        processes_matching(&marker)
    );
}

#[test]
fn a_task_that_ignores_sigint_and_sigterm_is_killed() {
    let marker = unique_marker();
    let t = Scenario::new().rush(&format!(
        "tasks:\n  stubborn:\n    cmd: trap '' INT TERM; touch started; sleep {marker} & wait; wait\n"
    ));
    let mut c = t.command(&["stubborn"]);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    let pid = child.id();
    assert!(wait_until(Duration::from_secs(20), || t
        .project()
        .join("started")
        .exists()));
    signal(pid, Signal::INT);
    let out = t.finish(child, Duration::from_secs(10));
    out.expect_code(130);
    assert!(
        wait_until(Duration::from_secs(3), || processes_matching(&marker)
            .is_empty()),
        "processes left: {:?}",
        processes_matching(&marker)
    );
}
