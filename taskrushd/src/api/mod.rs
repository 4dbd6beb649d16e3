//! The API room: the daemon's state and its JSON-RPC methods.
//!
//! Owns the `Daemon` (projects, runs, plugins, watcher, events), the
//! handlers of every protocol method, run and `--watch` sessions, and the
//! mapping of internal types to wire types. The daemon's event stream, which
//! other rooms publish into, is `crate::event_bus`.
//!
//! Architecture invariants:
//! - This is the only room that builds wire types from internal ones.
//! - A request's failure is answered to that request; nothing here stops
//!   the daemon.

mod daemon;
mod handlers;
mod reload;
mod sessions;
mod to_proto;

pub(crate) use daemon::{Daemon, DaemonOptions};
pub(crate) use handlers::Api;
