//! Every type and method on TaskRush's wire.
//!
//! This crate is an API boundary: the daemon (`taskrushd`), the CLI
//! (`taskrush`), editor integrations and plugin SDKs all speak what is
//! declared here, and `docs/protocol.md` documents it for outsiders.
//!
//! It does no I/O and needs no tokio. The JSON-RPC API is declared once as a
//! jsonrpsee `#[rpc]` trait in [`api`]; the `server` feature generates the
//! daemon's half, the `client` feature a typed Rust client. Neither is needed
//! to use the serde types, which is how the thin CLI uses this crate.
//!
//! Compatibility contract: [`PROTOCOL_VERSION`] is an integer major version,
//! independent of TaskRush's own version. Adding optional fields or new event
//! kinds is compatible; clients ignore unknown fields and unknown events.

#[cfg(any(feature = "server", feature = "client"))]
pub mod api;
pub mod audit;
pub mod capability;
pub mod daemon;
pub mod editor;
pub mod error;
pub mod events;
pub mod host;
pub mod jsonrpc;
pub mod lockfile;
pub mod method;
pub mod metrics;
pub mod paths;
pub mod plugin;
pub mod registry;
pub mod run;

/// The wire protocol's major version, exchanged by `hello` on every connection.
pub const PROTOCOL_VERSION: u32 = 1;

/// TaskRush's own version, as the daemon and the CLI were built.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The built-in words of `taskrush`: `taskrush NAME` runs task `NAME`
/// unless `NAME` is one of these (TaskRush 0.2's form), so each hides a
/// task of that name. The daemon warns when a `.rush` file has such a
/// task (it stays reachable as `taskrush run NAME`) and refuses plugin
/// commands so named; the CLI's top-level subcommands are exactly these
/// (a tidy test checks both). New commands go under these words or under
/// flags; see "Built-in words" in `docs/architecture.md` before adding one.
pub const RESERVED_WORDS: &[&str] = &["run", "daemon", "events", "plugin", "lsp", "help"];
