//! The server room: the daemon's socket and its life.
//!
//! Owns binding the socket safely (`listener`), the accept loop (`accept`),
//! the one stop sequence both `serve` and `serve_one` end with
//! (`shutdown`), one client connection's JSON-RPC dispatch
//! (`connection`), parameters named in their errors (`params`), framing with its size caps (`transport`), the client's
//! standard descriptors passed over the socket (`client_stdio`) and the
//! daemon's own log file (`log_file`).
//!
//! Architecture invariants:
//! - The accept loop never waits on a client, a run or a plugin: every
//!   connection is served by its own task.
//! - Nothing here knows what a method does: requests are handed to the
//!   method table that `api` builds.
//! - Every per-connection buffer and queue is bounded.
//! - There is one way to stop (`shutdown`), and it awaits the runs' end
//!   as a signal (the runs map emptying), never by polling a count.

pub(crate) mod accept;
pub(crate) mod client_stdio;
pub(crate) mod connection;
pub(crate) mod listener;
pub(crate) mod log_file;
pub(crate) mod params;
pub(crate) mod shutdown;
pub(crate) mod transport;
