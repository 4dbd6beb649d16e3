//! Named capabilities, announced by `hello`.
//!
//! A client learns what the daemon can do from the `hello` answer
//! (`minor` and `capabilities`) instead of calling a method and catching
//! `-32601`. As watchman's `version` command, `hello` takes `required`
//! (the daemon refuses the handshake, naming the missing ones) and
//! `optional` (the answer says which of them exist).
//!
//! Adding a feature to the protocol: add its row to [`ALL`] with
//! [`PROTOCOL_MINOR`] bumped (rows added in one release share a bump), and
//! a row to the capability table of `docs/protocol.md` (a tidy test checks
//! both directions).

/// The protocol's minor version: within one major (`PROTOCOL_VERSION`),
/// each minor adds capabilities and removes nothing.
pub const PROTOCOL_MINOR: u32 = 1;

/// A feature added after protocol 1.0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capability {
    /// The name clients ask for.
    pub name: &'static str,
    /// The minor that added it.
    pub since: u32,
}

/// `dispatch` and its `dispatch_event`s.
pub const DISPATCH: &str = "dispatch";
/// `explain_run`.
pub const EXPLAIN_RUN: &str = "explain_run";
/// Tasks' `outputs`, restored from the output store; `cache_status` and
/// `cache_prune`.
pub const OUTPUTS: &str = "outputs";
/// Plugin permissions: `plugin_pending`, `plugin_grant`, `plugin_revoke`.
pub const GRANTS: &str = "grants";
/// `.rush` files including others (`includes:`), namespaced task names.
pub const INCLUDES: &str = "includes";
/// Request ids of any JSON number or string, answered byte for byte.
pub const EXACT_IDS: &str = "exact_ids";
/// Invalid-params errors that name the parameter; params by position
/// named as [`crate::method::PARAMS`] says.
pub const NAMED_PARAM_ERRORS: &str = "named_param_errors";

/// `type: wasm` plugins (WebAssembly modules run by the daemon).
pub const WASM_PLUGINS: &str = "wasm_plugins";
/// `list_runs`, `attach` (with `attach_event`s and `observer_lagged`).
pub const LIVE_RUNS: &str = "live_runs";
/// A client-chosen `token` on `run`/`dispatch`, carried by their events
/// and accepted by `cancel_run`.
pub const RUN_TOKENS: &str = "run_tokens";
/// `find_projects`.
pub const FIND_PROJECTS: &str = "find_projects";
/// `check_rush`: diagnostics and symbols of unsaved `.rush` text.
pub const CHECK_TEXT: &str = "check_text";
/// `position_encoding` on `check_rush` and `list_tasks` (`utf-32`,
/// `utf-16`, `utf-8`).
pub const POSITION_ENCODING: &str = "position_encoding";
/// A `.rush` broken on its first load, or created later in a folder a
/// client asked about, is watched and reported by the event stream.
pub const WATCH_UNLOADED: &str = "watch_unloaded";
/// `metrics`: per plugin and per task figures since the daemon started.
pub const METRICS: &str = "metrics";
/// `plugin_disable`: plugins disabled per project.
pub const PLUGIN_DISABLE: &str = "plugin_disable";

/// `ui_open`: the plugin manager page served on 127.0.0.1.
pub const UI: &str = "ui";

/// Every capability this daemon has, in the order they were added.
pub const ALL: &[Capability] = &[
    Capability {
        name: DISPATCH,
        since: 1,
    },
    Capability {
        name: EXPLAIN_RUN,
        since: 1,
    },
    Capability {
        name: OUTPUTS,
        since: 1,
    },
    Capability {
        name: GRANTS,
        since: 1,
    },
    Capability {
        name: INCLUDES,
        since: 1,
    },
    Capability {
        name: EXACT_IDS,
        since: 1,
    },
    Capability {
        name: NAMED_PARAM_ERRORS,
        since: 1,
    },
    Capability {
        name: WASM_PLUGINS,
        since: 1,
    },
    Capability {
        name: LIVE_RUNS,
        since: 1,
    },
    Capability {
        name: RUN_TOKENS,
        since: 1,
    },
    Capability {
        name: FIND_PROJECTS,
        since: 1,
    },
    Capability {
        name: CHECK_TEXT,
        since: 1,
    },
    Capability {
        name: POSITION_ENCODING,
        since: 1,
    },
    Capability {
        name: WATCH_UNLOADED,
        since: 1,
    },
    Capability {
        name: METRICS,
        since: 1,
    },
    Capability {
        name: PLUGIN_DISABLE,
        since: 1,
    },
    Capability { name: UI, since: 1 },
];

/// Whether the daemon has capability `name`.
pub fn has(name: &str) -> bool {
    ALL.iter().any(|c| c.name == name)
}
