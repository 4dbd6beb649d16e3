//! One plugin of one project: its state (process, handshake, failures,
//! effective permissions) and how a failure of its process is recorded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use taskrush_protocol::events::DaemonEvent;
use taskrush_protocol::plugin::{self as wire, InitializeResult};
use tokio::time::Instant;

use super::failure::{
    AfterCrash, CRASH_WINDOW, Crashes, Fault, Phase, PluginFailure, restart_hint,
};
use super::manifest::{self, Installed};
use super::process::{CallError, PluginProcess};
use super::stderr::StderrLog;
use crate::config::rush_file::PluginSpec;
use crate::event_bus::Events;
use crate::human;

/// stderr lines quoted in error messages.
const STDERR_IN_ERRORS: usize = 5;

pub(super) struct Failed {
    pub(super) message: String,
    /// The plugin's files when it failed; it is tried again when they change.
    pub(super) stamp: Option<manifest::FileStamps>,
}

#[derive(Default)]
pub(super) struct SlotState {
    /// The `.rush` entry the process was started for.
    pub(super) spec: Option<PluginSpec>,
    pub(super) loaded: Option<Installed>,
    pub(super) process: Option<Arc<PluginProcess>>,
    pub(super) info: Option<InitializeResult>,
    pub(super) failed: Option<Failed>,
    pub(super) crashes: Crashes,
    pub(super) retry_at: Option<Instant>,
    pub(super) starts: u32,
    pub(super) last_error: Option<String>,
    /// The client environment the process was last started with: a
    /// reload (its files changed) starts the new version with it.
    pub(super) env: Option<BTreeMap<String, String>>,
    /// The effective permissions of the running process (declared ∩
    /// granted − denied when it was started): what its hooks are given.
    pub(super) effective: Option<wire::Permissions>,
    /// Why the last update of the running process was not swapped in (it
    /// asks for more permissions): said in the output of every run that
    /// uses the plugin until it is granted or reverted.
    pub(super) refused_swap: Option<String>,
}

/// One plugin of one project.
pub(super) struct Slot {
    pub(super) name: String,
    pub(super) root: PathBuf,
    pub(super) stderr: Arc<StderrLog>,
    /// Held while starting, so concurrent users wait for one start.
    pub(super) starting: tokio::sync::Mutex<()>,
    pub(super) st: Mutex<SlotState>,
    pub(super) events: Events,
    /// Its figures (`crate::metrics`), kept across restarts.
    pub(super) metrics: Arc<crate::metrics::PluginStats>,
}

impl Slot {
    pub(super) fn new(name: &str, root: &Path, events: Events) -> Slot {
        Slot {
            name: name.to_owned(),
            root: root.to_path_buf(),
            stderr: StderrLog::new(name),
            starting: tokio::sync::Mutex::new(()),
            st: Mutex::new(SlotState::default()),
            events,
            metrics: crate::metrics::plugin(root, name),
        }
    }

    pub(super) fn st(&self) -> std::sync::MutexGuard<'_, SlotState> {
        // Every update is a few assignments; a poisoned state is consistent.
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The live process and its handshake, if there is one.
    pub(super) fn live(&self) -> Option<(Arc<PluginProcess>, InitializeResult)> {
        let st = self.st();
        let p = st.process.as_ref()?;
        if p.dead().is_some() {
            return None;
        }
        Some((p.clone(), st.info.clone()?))
    }

    pub(super) fn failure(
        &self,
        phase: Phase,
        message: String,
        hint: Option<String>,
    ) -> PluginFailure {
        PluginFailure {
            plugin: self.name.clone(),
            phase,
            message: super::redact::scrub(&message),
            hint: hint.map(|h| super::redact::scrub(&h)),
            stderr: self.stderr.last(STDERR_IN_ERRORS),
        }
    }

    /// Record a failure of `process`: stop it, and either schedule a
    /// restart (a [`Fault::Crash`], counted) or mark the plugin failed.
    pub(super) fn fail(
        &self,
        process: Option<&Arc<PluginProcess>>,
        phase: Phase,
        fault: Fault,
    ) -> PluginFailure {
        let (message, permanent) = match fault {
            Fault::Crash(m) => (super::redact::scrub(&m), false),
            Fault::Broken(m) => (super::redact::scrub(&m), true),
        };
        use std::sync::atomic::Ordering::Relaxed;
        if permanent {
            self.metrics.marked_failed.fetch_add(1, Relaxed);
        } else {
            self.metrics.crashes.fetch_add(1, Relaxed);
        }
        if let Some(p) = process {
            p.kill(&message);
        }
        let mut st = self.st();
        if let (Some(p), Some(cur)) = (process, st.process.as_ref())
            && Arc::ptr_eq(p, cur)
        {
            st.process = None;
        }
        let stamp = st.loaded.as_ref().map(|l| l.stamp.clone());
        let mut hint = None;
        let full = if permanent {
            st.failed = Some(Failed {
                message: message.clone(),
                stamp,
            });
            hint = Some(restart_hint(&self.name));
            message
        } else {
            match st.crashes.record(Instant::now()) {
                AfterCrash::RetryAt(at) => {
                    st.retry_at = Some(at);
                    format!("{message}; it will be restarted on next use")
                }
                AfterCrash::GiveUp(n) => {
                    self.metrics.marked_failed.fetch_add(1, Relaxed);
                    let m = format!(
                        "{message}; it failed {n} times within {} minutes and is not restarted again",
                        CRASH_WINDOW.as_secs() / 60
                    );
                    st.failed = Some(Failed {
                        message: m.clone(),
                        stamp,
                    });
                    hint = Some(restart_hint(&self.name));
                    m
                }
            }
        };
        st.last_error = Some(format!("in `{phase}`: {full}"));
        drop(st);
        tracing::warn!(target: "plugin", plugin = %self.name, root = %self.root.display(), "failed in `{phase}`: {full}");
        self.events.send(DaemonEvent::PluginFailed {
            root: self.root.display().to_string(),
            plugin: self.name.clone(),
            message: format!("failed in `{phase}`: {full}"),
        });
        self.failure(phase, full, hint)
    }
}

/// A new `.rush` entry for a plugin means a new process.
pub(super) fn sync_spec(slot: &Slot, spec: &PluginSpec) {
    let mut st = slot.st();
    let same = st.spec.as_ref().is_some_and(|s| same_entry(s, spec));
    if same {
        return;
    }
    let had = st.spec.replace(spec.clone()).is_some();
    if had {
        tracing::info!(target: "plugin", plugin = %slot.name, "its `.rush` entry changed: restarting it");
        if let Some(p) = st.process.take() {
            // Calls in flight (a run that started with the old entry)
            // finish; then it stops.
            retire(p, spec.timeout);
        }
        st.info = None;
        st.failed = None;
        st.crashes.clear();
        st.retry_at = None;
    }
}

/// The same `.rush` entry, wherever it sits in the file.
pub(super) fn same_entry(a: &PluginSpec, b: &PluginSpec) -> bool {
    PluginSpec {
        line: 0,
        ..a.clone()
    } == PluginSpec {
        line: 0,
        ..b.clone()
    }
}

/// Stop `process` once nobody holds it any more (its calls in flight
/// ended), or after `limit` plus a margin at the latest.
pub(super) fn retire(process: Arc<PluginProcess>, limit: Duration) {
    tokio::spawn(async move {
        let deadline = Instant::now() + limit + Duration::from_secs(1);
        // Callers hold the process for the length of a call: when only
        // this task holds it, no call is in flight and none can start.
        while Arc::strong_count(&process) > 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        process.shutdown().await;
    });
}

/// A call that failed for another reason than the plugin's own error.
pub(super) fn fail_call(
    slot: &Slot,
    process: &Arc<PluginProcess>,
    phase: Phase,
    e: CallError,
) -> PluginFailure {
    let fault = match e {
        CallError::Timeout(d) if process.is_wasm() => Fault::Crash(format!(
            "no answer within {}: the guest was stopped at its deadline (a fresh instance serves the next call)",
            human::duration(d)
        )),
        CallError::Timeout(d) => Fault::Crash(format!(
            "no answer within {} (the plugin was killed)",
            human::duration(d)
        )),
        CallError::Gone(how) => Fault::Crash(format!("it exited ({how})")),
        CallError::Trapped(why) => Fault::Crash(format!("it trapped: {why}")),
        CallError::Protocol(m) => Fault::Broken(m),
        CallError::Remote { message, .. } => Fault::Crash(message),
    };
    slot.fail(Some(process), phase, fault)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot() -> Slot {
        Slot::new("p", Path::new("/project"), Events::default())
    }

    #[tokio::test(start_paused = true)]
    async fn a_crash_schedules_a_restart_and_the_third_within_five_minutes_marks_the_plugin_failed()
    {
        let s = slot();
        let f = s.fail(None, Phase::Idle, Fault::Crash("it exited".into()));
        assert_eq!(f.plugin, "p");
        assert_eq!(f.phase, Phase::Idle);
        assert_eq!(f.message, "it exited; it will be restarted on next use");
        assert_eq!(f.hint, None);
        assert_eq!(
            s.st().retry_at,
            Some(Instant::now() + Duration::from_millis(100))
        );
        assert!(s.st().failed.is_none());
        tokio::time::advance(Duration::from_secs(10)).await;
        s.fail(None, Phase::Idle, Fault::Crash("it exited".into()));
        assert!(s.st().failed.is_none());
        let f = s.fail(
            None,
            Phase::Hook(wire::Hook::BeforeTask),
            Fault::Crash("it hung".into()),
        );
        assert_eq!(
            f.message,
            "it hung; it failed 3 times within 5 minutes and is not restarted again"
        );
        assert!(
            f.hint
                .is_some_and(|h| h.contains("taskrush plugin restart p"))
        );
        assert_eq!(
            s.st().failed.as_ref().map(|f| f.message.clone()),
            Some(f.message.clone())
        );
        assert_eq!(
            s.st().last_error.as_deref(),
            Some(
                "in `before_task`: it hung; it failed 3 times within 5 minutes and is not restarted again"
            )
        );
    }

    #[test]
    fn a_failure_a_restart_cannot_fix_marks_the_plugin_failed_at_once() {
        let s = slot();
        let f = s.fail(
            None,
            Phase::Handshake,
            Fault::Broken("it speaks plugin protocol 2".into()),
        );
        assert_eq!(f.message, "it speaks plugin protocol 2");
        assert!(f.hint.is_some());
        assert!(s.st().failed.is_some());
        assert!(s.st().retry_at.is_none());
    }

    #[test]
    fn the_same_entry_elsewhere_in_the_file_is_the_same_entry() {
        let a = PluginSpec {
            name: "p".into(),
            version: None,
            kind: crate::config::rush_file::PluginKind::External,
            path: None,
            required: false,
            config: serde_json::Value::Null,
            timeout: Duration::from_secs(1),
            limits: Default::default(),
            memory: None,
            module_size: None,
            line: 3,
        };
        let moved = PluginSpec {
            line: 9,
            ..a.clone()
        };
        let required = PluginSpec {
            required: true,
            ..a.clone()
        };
        assert!(same_entry(&a, &moved));
        assert!(!same_entry(&a, &required));
    }
}
