//! The run room: from requested tasks to finished processes.
//!
//! Owns the plan (`planner`: the requested tasks and their dependencies,
//! each once, dependencies first), scheduling it (`schedule`: which task
//! may start now, under `-j`, until a failure or a cancel; pure, tested
//! without processes), executing it (`runner`: starting what the schedule
//! gives, the cache check, output streaming, cancelling), a run's cancel level
//! (`cancel`: only ever raised), why a task failed when it has no exit
//! status to say it (`failure`: one enum, its messages rendered in one
//! place) and which changes re-run a `--watch` run (`watch_run`).
//!
//! Architecture invariants:
//! - The runner owns no socket: it sends run events into a bounded
//!   channel and watches a cancel level.
//! - Processes are started only through `process::spawn`.
//! - The schedule knows nothing of processes, the cache or plugins: the
//!   runner tells it how each task ended.

pub(crate) mod cancel;
pub(crate) mod explain;
pub(crate) mod failure;
pub(crate) mod planner;
pub(crate) mod runner;
pub(crate) mod schedule;
pub(crate) mod watch_run;
