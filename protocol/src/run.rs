//! Runs: what a client asks for and the events it receives.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::error::ErrorData;

/// Parameters of the `run` subscription. Sent by name:
/// `{"cwd": "/p", "tasks": ["build"], "jobs": 2}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunRequest {
    /// The client's working directory; the `.rush` file is searched from here.
    pub cwd: String,
    /// Tasks to run, in the order given (their dependencies run first).
    pub tasks: Vec<String>,
    /// An explicit `.rush` file (`-f`), absolute or relative to `cwd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The client's environment: `${VAR}` expands from it and tasks run with
    /// it (plus their `env`). Never the daemon's environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// How many tasks may run at once (1 = one after another).
    #[serde(default = "one")]
    pub jobs: usize,
    /// Ignore the cache: run tasks even when they are up to date.
    #[serde(default)]
    pub force: bool,
    /// Let tasks use the client's own stdin, stdout and stderr, passed
    /// with `SCM_RIGHTS` alongside the first message of the connection
    /// (see docs/protocol.md, "Passing the terminal"). Honoured when the
    /// tasks run one at a time; their output then goes straight to the
    /// client's descriptors and no `output` events are sent.
    #[serde(default)]
    pub inherit_stdio: bool,
    /// Keep going: after the run, run again whenever an input changes
    /// (the tasks' `cache_files`, else any file of the project that is not
    /// ignored) until cancelled. Every re-run sends `run_started` …
    /// `run_finished` again; `watch_ended` closes the stream.
    #[serde(default)]
    pub watch: bool,
    /// With `watch`: what a change during a run does.
    #[serde(default)]
    pub on_change: OnChange,
    /// Arguments for the last task of `tasks` (`taskrush TASK -- ARGS…`):
    /// its command sees them as `"$@"` and, shell-quoted, as the
    /// environment variable `TASKRUSH_ARGS`; they are part of its cache
    /// key. Never interpolated into the command text. Absent: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// A name the client gives this run (as LSP's work-done tokens): every
    /// event of the run carries it as `token`, so events that arrive
    /// before the answer need no buffering, and `cancel_run` accepts it.
    /// Unique among the connection's runs in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Run only the named tasks, not what they depend on (an editor's
    /// "Run this task only"; `taskrush run --no-deps`). Named tasks that
    /// depend on each other still run in order.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_deps: bool,
}

/// What a change during a watched run does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnChange {
    /// Cancel the run and start it again.
    #[default]
    Restart,
    /// Let the run finish, then run again.
    Queue,
}

fn one() -> usize {
    1
}

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// How a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Exit status 0.
    Success,
    /// Non-zero exit status, killed by a signal, or failed to start.
    Failed,
    /// Stopped because the run was cancelled.
    Cancelled,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Success,
    Failed,
    Cancelled,
}

/// A chunk of a task's output. Bytes that are valid UTF-8 travel as `text`,
/// anything else as `base64`; exactly one of the two is present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base64: Option<String>,
}

impl Chunk {
    /// Encode bytes, as text when they are UTF-8 and JSON does not blow
    /// them up: control characters other than `\n`, `\r`, `\t` take six
    /// bytes each in JSON (`\u0000`), so output made mostly of them (NUL
    /// padding, binary that happens to be valid UTF-8) goes as base64,
    /// which takes at most 4/3.
    pub fn from_bytes(bytes: Vec<u8>) -> Chunk {
        let escaped: usize = bytes
            .iter()
            .map(|&b| match b {
                b'\n' | b'\r' | b'\t' | b'"' | b'\\' => 1,
                0..0x20 => 5,
                _ => 0,
            })
            .sum();
        if escaped > bytes.len() / 2 {
            return Chunk {
                text: None,
                base64: Some(base64::engine::general_purpose::STANDARD.encode(&bytes)),
            };
        }
        match String::from_utf8(bytes) {
            Ok(text) => Chunk {
                text: Some(text),
                base64: None,
            },
            Err(e) => Chunk {
                text: None,
                base64: Some(base64::engine::general_purpose::STANDARD.encode(e.as_bytes())),
            },
        }
    }

    /// The original bytes. Invalid base64 decodes to nothing rather than
    /// failing the whole stream.
    pub fn into_bytes(self) -> Vec<u8> {
        match (self.text, self.base64) {
            (Some(t), _) => t.into_bytes(),
            (None, Some(b)) => base64::engine::general_purpose::STANDARD
                .decode(b.as_bytes())
                .unwrap_or_default(),
            (None, None) => Vec::new(),
        }
    }
}

/// One event of a run, sent as the `result` of a `run_event` notification.
/// Tagged by `event`. Clients must ignore events they do not know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RunEvent {
    /// Always first: the run's id (for `cancel_run`) and its plan.
    RunStarted {
        run_id: u64,
        /// The `.rush` file in use.
        file: String,
        /// Every task of the run, in a valid execution order.
        tasks: Vec<String>,
        jobs: usize,
        /// Whether tasks write to the client's own descriptors (no
        /// `output` events follow).
        #[serde(default)]
        inherit_stdio: bool,
        /// Set when the `.rush` file is broken or gone and the run uses
        /// its last valid content: "using the last valid config;
        /// `FILE:L:C`: …". Clients show it on stderr as `warning: …`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        warning: Option<String>,
        /// With `watch`: 1 for the first run, 2 for the first re-run, …
        #[serde(default, skip_serializing_if = "Option::is_none")]
        iteration: Option<u32>,
    },
    /// A task's command (or hook) started.
    TaskStarted {
        task: String,
        /// The process group of the task's command: a client that loses
        /// the daemon mid-run stops it with this.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pgid: Option<u32>,
    },
    /// A chunk of output, in order within its task and stream.
    Output {
        task: String,
        stream: Stream,
        #[serde(flatten)]
        chunk: Chunk,
    },
    /// The task was up to date; its command did not run. For a task with
    /// `outputs`, `restored` outputs were missing or changed and were
    /// written back from the output store, and its captured output is
    /// replayed as `output` events after this one.
    TaskCached {
        task: String,
        #[serde(default, skip_serializing_if = "is_zero")]
        restored: u64,
    },
    /// The task (it has `cache_files`) is running in another run: this run
    /// waits for that instance to end, then checks the cache again (see
    /// "The same task in two runs at once" in `docs/rush-file.md`).
    TaskWaiting { task: String },
    /// A task's command ended.
    TaskFinished {
        task: String,
        status: TaskStatus,
        /// The exit code, when it exited.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        /// The signal that killed it, when one did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signal: Option<i32>,
        duration_ms: u64,
        /// Why it failed when it did not get to exit (e.g. could not start).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// A plugin has something to say about a task: a hook that failed or
    /// reported an error without changing the task's status, or a plugin
    /// that was skipped. Clients show it on stderr as
    /// ``plugin `NAME`: MESSAGE``.
    PluginMessage {
        plugin: String,
        task: String,
        /// `error`, `warn` or `info`.
        level: String,
        message: String,
    },
    /// A plugin logged a warning or an error (`log` notification) while it
    /// served this run. Clients show it on stderr as `[NAME] LEVEL: MESSAGE`
    /// (`warning` for `warn`). At most [`PLUGIN_LOG_LINES`] per plugin and
    /// run are sent; the last one says the rest were held back (they are in
    /// `taskrush plugin logs NAME`).
    PluginLog {
        plugin: String,
        /// The task the plugin was serving (or that it named), if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        task: Option<String>,
        /// `warn` or `error`.
        level: String,
        message: String,
    },
    /// A plugin reported progress (`progress` notification) while it
    /// served this run: for a live status line. Rate limited like
    /// [`RunEvent::PluginLog`].
    PluginProgress {
        plugin: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        task: Option<String>,
        /// 0 to 100, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        percent: Option<f64>,
        message: String,
    },
    /// Something the user should know about the run that does not change
    /// its outcome: the cache cannot be written (a full disk; once per
    /// run), a task is not cached because its inputs changed while it ran.
    /// Clients show it on stderr as `warning: MESSAGE`.
    Warning {
        /// The task it concerns, when it concerns one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        task: Option<String>,
        message: String,
    },
    /// Always last: the outcome. `exit_code` is what a CLI should exit with:
    /// the failing task's exit status, `128 + signal` for a signal, 130 for
    /// a cancelled run, 0 for success.
    RunFinished {
        run_id: u64,
        status: RunStatus,
        exit_code: i32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failed_task: Option<String>,
        duration_ms: u64,
        /// An error that ended the run early (e.g. a cache directory that
        /// cannot be written), rendered like any protocol error.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<RunError>,
    },
    /// `dispatch` only: the first name was a plugin's command, which ran;
    /// the only event of such a stream. The client prints `stderr` and
    /// `stdout` and exits with `exit_code`.
    CommandFinished {
        plugin: String,
        command: String,
        exit_code: i32,
        #[serde(default)]
        stdout: String,
        #[serde(default)]
        stderr: String,
    },
    /// Watch mode: the run finished and the daemon waits for a change.
    WatchWaiting {
        run_id: u64,
        /// What is watched, in words (e.g. "`src/**/*.rs`").
        watching: String,
    },
    /// Watch mode: files changed; a run starts now (`restart`: the run
    /// in progress was cancelled; `queue`: it runs once the current
    /// one finished; `run`: nothing was running).
    WatchTriggered {
        run_id: u64,
        /// Some of the changed paths (at most 10), relative to the project.
        paths: Vec<String>,
        action: String,
    },
    /// Watch mode: always last; the watch ended (cancelled, or the client
    /// left). `exit_code` is what a CLI should exit with.
    WatchEnded { run_id: u64, exit_code: i32 },
}

/// An error that ended a run after it started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunError {
    pub message: String,
    #[serde(default, flatten)]
    pub data: ErrorData,
}

/// Exit code for TaskRush's own errors (bad `.rush`, unknown task, daemon
/// unreachable, bad usage).
pub const EXIT_ERROR: i32 = 1;

/// [`RunEvent::PluginLog`] and [`RunEvent::PluginProgress`] events sent at
/// most per plugin and run: a chatty plugin cannot flood a run's output.
pub const PLUGIN_LOG_LINES: u32 = 20;

/// Exit code of a run cancelled by Ctrl-C.
pub const EXIT_CANCELLED: i32 = 130;

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_chunks_round_trip_through_json() {
        let bytes: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let ev = RunEvent::Output {
            task: "t".into(),
            stream: Stream::Stdout,
            chunk: Chunk::from_bytes(bytes.clone()),
        };
        let json = serde_json::to_string(&ev).unwrap();
        assert!(json.contains("\"base64\""));
        let back: RunEvent = serde_json::from_str(&json).unwrap();
        let RunEvent::Output { chunk, .. } = back else {
            panic!("not output")
        };
        assert_eq!(chunk.into_bytes(), bytes);
    }

    #[test]
    fn text_chunks_stay_readable() {
        let ev = RunEvent::Output {
            task: "build".into(),
            stream: Stream::Stderr,
            chunk: Chunk::from_bytes(b"hello\n".to_vec()),
        };
        assert_eq!(
            serde_json::to_string(&ev).unwrap(),
            r#"{"event":"output","task":"build","stream":"stderr","text":"hello\n"}"#
        );
    }
}
