//! The daemon's one way to stop its work, for the accept loop (`serve`)
//! and for `taskrushd --stdio` (`serve_one`) alike.
//!
//! As in mini-redis's `shutdown.rs`, the stop is a signal and the end is
//! awaited, not polled: `Daemon::stopping` tells every connection and
//! session to wind down; each run's session holds a `RunEntry` guard in
//! the runs map (a `watch`), and when the last guard is dropped the map's
//! emptying (`Daemon::runs_ended`) says that every run has ended.

use std::time::Duration;

use crate::api::Daemon;
use crate::run::cancel::Cancel;

/// How long running tasks get to stop when the daemon stops.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long killed tasks get to be reaped after the grace.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// Mark the daemon as stopping, interrupt every run and wait for the runs
/// to end (at most `STOP_GRACE`), then kill what is left (waiting at most
/// `KILL_GRACE`), and stop the plugins last: the runs' final hooks may
/// still have called them.
pub(crate) async fn shutdown(daemon: &Daemon) {
    daemon.stopping.send_replace(true);
    daemon.cancel_all(Cancel::Interrupt);
    if tokio::time::timeout(STOP_GRACE, daemon.runs_ended())
        .await
        .is_err()
    {
        daemon.cancel_all(Cancel::Kill);
        let _ = tokio::time::timeout(KILL_GRACE, daemon.runs_ended()).await;
    }
    daemon.plugins.shutdown_all().await;
}
