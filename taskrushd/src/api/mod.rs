//! The API room: the daemon's state and its JSON-RPC methods.
//!
//! Owns the `Daemon` (projects, runs, plugins, watcher, events), the
//! handlers of every protocol method, run and `--watch` sessions, and the
//! mapping of internal types to wire types. The daemon's event stream, which
//! other rooms publish into, is `crate::event_bus`.
//!
//! - `daemon.rs`: the `Daemon` state and its life: `DaemonOptions`, the
//!   runs in progress and their cancel levels, idle time.
//! - `reload.rs`: the reload reactor: a `.rush` file loaded for a request or
//!   re-checked when the watcher reports it, what changed published; a
//!   plugin's changed files handed to the plugin host.
//! - `sessions.rs`: run and `run --watch` sessions, from the accepted
//!   subscription to its last event; client-chosen run tokens.
//! - `live.rs`: runs in progress as every client sees them (`list_runs`,
//!   `attach`): task states, and a bounded broadcast of each run's events
//!   to its observers, which never slows the run.
//! - `handlers.rs`: `Api`, the protocol's `#[rpc]` trait implemented for the
//!   daemon: one thin function per method.
//! - `to_proto.rs`: internal types as they cross the socket (config errors,
//!   plugin failures, run and config events for the stream, status objects).
//!
//! Only `Daemon`, `DaemonOptions` and `Api` leave the room (for `main.rs`
//! and `server/`); everything else is private to it.
//!
//! Architecture invariants:
//! - This is the only room that builds wire types from internal ones, and
//!   `to_proto.rs` is where it does; the other files build only the answers
//!   that are theirs (a request's invalid parameters, `run_started`, the
//!   `--watch` session's events).
//! - A request's failure is answered to that request; nothing here stops
//!   the daemon.
//! - Handlers hold no logic of their own: they read the parameters, call
//!   the daemon and map the result.
//! - A `.rush` file is never parsed on a runtime worker nor under the
//!   daemon's locks (`Projects::load_async`), and a file slow to parse
//!   never holds up the reloads of other files.
//! - Every run in progress is in the runs map until its session ends: idle
//!   shutdown and `cancel_all` rely on it.

mod daemon;
mod handlers;
mod live;
mod reload;
mod sessions;
mod to_proto;

pub(crate) use daemon::{Daemon, DaemonOptions};
pub(crate) use handlers::Api;
