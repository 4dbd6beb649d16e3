//! What a plugin's failure is and what it costs it: the failure as a task
//! or a client sees it, and the crash accounting that decides between a
//! restart after a back-off and the failed state.
//!
//! Pure bookkeeping: nothing here touches a process.

use std::collections::VecDeque;
use std::time::Duration;

use taskrush_protocol::plugin::Hook;
use tokio::time::Instant;

use crate::config::rush_file::RushFile;

/// First wait before restarting a crashed plugin.
pub(super) const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest wait before restarting a crashed plugin.
pub(super) const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Crashes within [`CRASH_WINDOW`] that mark a plugin failed.
const CRASH_LIMIT: usize = 3;
pub(super) const CRASH_WINDOW: Duration = Duration::from_secs(5 * 60);

/// The wait before the restart that follows the `n`-th recent crash.
fn backoff(n: usize) -> Duration {
    let shift = n.saturating_sub(1).min(20) as u32;
    BACKOFF_START.saturating_mul(1 << shift).min(BACKOFF_MAX)
}

/// Recent crashes of one plugin.
#[derive(Debug, Default)]
pub(super) struct Crashes(VecDeque<Instant>);

/// What to do after a crash.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum AfterCrash {
    /// Start again on next use, not before this instant.
    RetryAt(Instant),
    /// Too many crashes: failed.
    GiveUp(usize),
}

impl Crashes {
    pub(super) fn record(&mut self, now: Instant) -> AfterCrash {
        while self
            .0
            .front()
            .is_some_and(|t| now.duration_since(*t) > CRASH_WINDOW)
        {
            self.0.pop_front();
        }
        self.0.push_back(now);
        if self.0.len() >= CRASH_LIMIT {
            AfterCrash::GiveUp(self.0.len())
        } else {
            AfterCrash::RetryAt(now + backoff(self.0.len()))
        }
    }

    pub(super) fn clear(&mut self) {
        self.0.clear();
    }
}

/// A failure of a plugin's process, by what a restart can do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Fault {
    /// A crash, an exit or a hang: restarted on next use after a back-off,
    /// marked failed after [`CRASH_LIMIT`] within [`CRASH_WINDOW`].
    Crash(String),
    /// What a restart cannot fix (another protocol major, junk on stdout,
    /// a command name that is taken, an entry point that cannot be
    /// executed): marked failed at once.
    Broken(String),
}

impl Fault {
    pub(super) fn into_message(self) -> String {
        match self {
            Fault::Crash(m) | Fault::Broken(m) => m,
        }
    }
}

/// Where a plugin failed, as messages name it ("failed in `start`").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// No plugin of that name is declared.
    Lookup,
    /// Its `.rush` entry, manifest or config cannot be used.
    Load,
    /// Its process cannot be started (or is not, for now).
    Start,
    /// Its answer to `initialize`.
    Handshake,
    /// Its process ended while nobody called it.
    Idle,
    /// A task hook.
    Hook(Hook),
    /// A plugin command.
    Command,
    /// It asks for permissions the user has not granted: not started.
    Consent,
}

impl Phase {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Phase::Lookup => "lookup",
            Phase::Load => "load",
            Phase::Start => "start",
            Phase::Handshake => "handshake",
            Phase::Idle => "idle",
            Phase::Hook(hook) => hook.method(),
            Phase::Command => "command",
            Phase::Consent => "consent",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A plugin's failure, as reported to a task or a client.
#[derive(Debug, Clone)]
pub(crate) struct PluginFailure {
    pub(crate) plugin: String,
    /// Where it failed.
    pub(crate) phase: Phase,
    pub(crate) message: String,
    pub(crate) hint: Option<String>,
    /// The last lines of its stderr.
    pub(crate) stderr: Vec<String>,
}

impl PluginFailure {
    /// Without the plugin's name: "failed in `before_task`: …".
    pub(crate) fn detail(&self) -> String {
        self.detail_with("")
    }

    /// [`detail`](Self::detail) with `note` before the stderr lines.
    pub(crate) fn detail_with(&self, note: &str) -> String {
        if self.phase == Phase::Consent {
            // "was not started: it asks for …": one line, the command in it.
            return format!("{}{note}", self.message);
        }
        let mut s = format!("failed in `{}`: {}{note}", self.phase, self.message);
        if !self.stderr.is_empty() {
            s.push_str("; its last stderr lines:");
            for l in &self.stderr {
                s.push_str("\n  | ");
                s.push_str(l);
            }
        }
        s
    }

    /// "plugin `x` failed in `before_task`: …".
    pub(crate) fn render(&self) -> String {
        format!("plugin `{}` {}", self.plugin, self.detail())
    }
}

pub(super) fn restart_hint(name: &str) -> String {
    format!(
        "fix the plugin and run `taskrush plugin restart {name}` (it is also retried when its files change)"
    )
}

/// An unknown plugin name, as a failure.
pub(crate) fn not_declared(config: &RushFile, name: &str) -> PluginFailure {
    let names: Vec<String> = config
        .plugins
        .iter()
        .map(|p| format!("`{}`", p.name))
        .collect();
    PluginFailure {
        plugin: name.to_owned(),
        phase: Phase::Lookup,
        message: format!("no plugin named `{name}` in `{}`", config.path.display()),
        hint: Some(if names.is_empty() {
            "declare it under `plugins:` in the `.rush` file".into()
        } else {
            format!("the plugins are {}", names.join(", "))
        }),
        stderr: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_100ms_up_to_30s() {
        let ms: Vec<u128> = (1..=12).map(|n| backoff(n).as_millis()).collect();
        assert_eq!(
            ms,
            [
                100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000, 30000
            ]
        );
        assert_eq!(backoff(1000), BACKOFF_MAX);
    }

    #[tokio::test(start_paused = true)]
    async fn three_crashes_within_five_minutes_give_up_but_spread_ones_do_not() {
        let mut c = Crashes::default();
        let t0 = Instant::now();
        assert_eq!(
            c.record(t0),
            AfterCrash::RetryAt(t0 + Duration::from_millis(100))
        );
        tokio::time::advance(Duration::from_secs(60)).await;
        let t1 = Instant::now();
        assert_eq!(
            c.record(t1),
            AfterCrash::RetryAt(t1 + Duration::from_millis(200))
        );
        // The first crash leaves the window: still only two recent ones.
        tokio::time::advance(Duration::from_secs(250)).await;
        let t2 = Instant::now();
        assert_eq!(
            c.record(t2),
            AfterCrash::RetryAt(t2 + Duration::from_millis(200))
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(c.record(Instant::now()), AfterCrash::GiveUp(3));
    }

    #[test]
    fn a_failure_reads_with_its_phase_and_its_last_stderr_lines() {
        let f = PluginFailure {
            plugin: "slack".into(),
            phase: Phase::Hook(Hook::BeforeTask),
            message: "it exited (exit code 3)".into(),
            hint: None,
            stderr: vec!["boom".into(), "bye".into()],
        };
        assert_eq!(
            f.render(),
            "plugin `slack` failed in `before_task`: it exited (exit code 3); its last stderr lines:\n  | boom\n  | bye"
        );
        let quiet = PluginFailure {
            stderr: Vec::new(),
            phase: Phase::Start,
            ..f
        };
        assert_eq!(
            quiet.detail_with("; the task goes on"),
            "failed in `start`: it exited (exit code 3); the task goes on"
        );
    }
}
