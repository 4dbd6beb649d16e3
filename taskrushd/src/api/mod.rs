//! The API room: the daemon's state and its JSON-RPC methods.
//!
//! Owns the `Daemon` (projects, runs, plugins, watcher, events), the
//! handlers of every protocol method, run and `--watch` sessions, and the
//! mapping of internal types to wire types; `events` is the daemon's
//! global event stream.
//!
//! Architecture invariants:
//! - This is the only room that builds wire types from internal ones.
//! - A request's failure is answered to that request; nothing here stops
//!   the daemon.

pub(crate) mod daemon;
pub(crate) mod events;
