//! The process room: starting, signalling and outliving processes.
//!
//! Owns the one place where task and plugin processes are started and
//! stopped (`spawn`: working directory, environment from scratch, process
//! group, kill on drop, the open-file limit) and the watchdog process that
//! ends registered process groups when the daemon dies (`watchdog`).
//!
//! Architecture invariants:
//! - No other module spawns a process.
//! - A task's environment never includes the daemon's own.

pub(crate) mod spawn;
pub(crate) mod watchdog;
