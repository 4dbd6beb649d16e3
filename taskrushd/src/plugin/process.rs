//! One plugin process: newline-delimited JSON-RPC 2.0 over its stdin and
//! stdout, its stderr into the daemon log.
//!
//! A demultiplexer task reads stdout and routes each response by id to the
//! call waiting for it; `log` and `progress` notifications go to the daemon
//! log under the plugin's name (target `plugin`) and to [`super::output`];
//! requests from the plugin are host calls, served off the reader by
//! [`super::host_calls`] and answered on its stdin; anything else is junk: logged, and
//! after [`JUNK_LIMIT`] junk lines the process is broken (every call fails
//! and the process is killed). Lines are capped at [`MAX_LINE`].
//!
//! Its stderr goes to a [`StderrLog`] (rate limited, the last lines kept;
//! see [`super::stderr`]).
//!
//! Every call has a deadline. This module never restarts anything: it
//! reports, and the host ([`super::host`]) decides.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustix::process::Signal;
use serde_json::Value;
use taskrush_protocol::jsonrpc::{self, Message, Request};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::stderr::{StderrLog, read_stderr};
use super::{audit, host_calls, redact};
use crate::human;
use crate::process::spawn::{self, ProcessGroup};

/// Longest stdout line (one JSON-RPC message) accepted from a plugin.
pub(super) const MAX_LINE: usize = 16 * 1024 * 1024;
/// stdout lines that are not JSON-RPC tolerated before the plugin is broken.
pub(super) const JUNK_LIMIT: u32 = 3;
/// How long an orderly stop waits after `shutdown`/closing stdin, and
/// again after SIGTERM, before the next step.
pub(super) const STOP_STEP: Duration = Duration::from_secs(2);

/// Why a call did not return a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum CallError {
    /// No answer within the deadline.
    Timeout(Duration),
    /// The process exited or closed its stdout (with how it ended).
    Gone(String),
    /// It broke the protocol (junk on stdout, a malformed answer).
    Protocol(String),
    /// A WebAssembly guest trapped (its memory cap, `unreachable`, a bad
    /// access): its instance is gone.
    Trapped(String),
    /// It answered with a JSON-RPC error.
    Remote { code: i32, message: String },
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Timeout(d) => write!(f, "no answer within {}", human::duration(*d)),
            CallError::Gone(how) => write!(f, "the plugin exited ({how})"),
            CallError::Protocol(why) => f.write_str(why),
            CallError::Trapped(why) => write!(f, "it trapped: {why}"),
            CallError::Remote { message, code } => write!(f, "{message} (error {code})"),
        }
    }
}

type Reply = Result<Value, CallError>;
/// A reply and the bytes of its line.
type Answer = (Reply, u64);

/// State shared by the process handle and its reader tasks.
struct Shared {
    name: String,
    pending: Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
    /// Why no call can succeed any more (exited, broken, retired).
    dead: Mutex<Option<CallError>>,
    /// How the process ended, once it did.
    exit: watch::Sender<Option<String>>,
    junk: AtomicU32,
    unmatched: AtomicU32,
    group: Option<ProcessGroup>,
    /// Set once its stderr reached end of file.
    stderr_done: watch::Sender<bool>,
    /// CPU time (ms) and peak RSS (KiB) read from `/proc` just before the
    /// host stopped it (once a process has ended, the kernel has freed its
    /// memory map and its peak RSS with it), for its `exited` audit record.
    usage: Mutex<(Option<u64>, Option<u64>)>,
    /// The project root its audit records go under (spawned processes).
    audit_root: std::sync::OnceLock<std::path::PathBuf>,
    /// Requests it sent to the host that were refused for want of a
    /// host-call server (the first few audited).
    requests: AtomicU32,
    /// Its stdin, where answers to its host calls go too.
    stdin: Stdin,
    /// What its host calls are served with (set once it is spawned by the
    /// host; unset: every host call is refused), and how long a host call
    /// made outside any call may take.
    host_calls: std::sync::OnceLock<(Arc<host_calls::Grants>, Duration)>,
    /// The calls in progress, by id: their context and deadline (what a
    /// host call the plugin makes meanwhile is served with).
    contexts: Mutex<HashMap<u64, (host_calls::CallContext, std::time::Instant)>>,
    /// Host calls in flight, at most [`MAX_HOST_CALLS`].
    host_call_slots: Arc<tokio::sync::Semaphore>,
    /// The plugin's figures: its CPU time and peak RSS are added at its
    /// exit (set by the host after the spawn).
    metrics: std::sync::OnceLock<Arc<crate::metrics::PluginStats>>,
}

type Stdin = Arc<tokio::sync::Mutex<Option<Box<dyn AsyncWrite + Send + Unpin>>>>;

/// Requests from one plugin process audited as `denied` at most.
const DENIED_AUDITED: u32 = 10;
/// Host calls of one plugin process served at once; one more is refused
/// at once (`FAILED`), so a flood of requests costs bounded threads.
pub(super) const MAX_HOST_CALLS: usize = 16;

impl Shared {
    /// The context a host call is served with: that of the call in
    /// progress. A process answering several calls at once (hooks of
    /// parallel tasks) cannot say which one a host call belongs to: it
    /// gets their run when they share one, and the union of their call
    /// chains (so a call that would close a cycle through any of them is
    /// refused), with the latest deadline.
    fn host_context(&self, idle: Duration) -> (host_calls::CallContext, std::time::Instant) {
        let contexts = self.contexts.lock().unwrap_or_else(|p| p.into_inner());
        let mut runs = std::collections::BTreeSet::new();
        let mut chain: Vec<String> = Vec::new();
        let mut deadline = None::<std::time::Instant>;
        let mut project = None;
        for (cx, at) in contexts.values() {
            runs.extend(cx.run_id);
            if project.is_none() {
                project = cx.project.clone();
            }
            for n in &cx.chain {
                if !chain.contains(n) {
                    chain.push(n.clone());
                }
            }
            deadline = Some(deadline.map_or(*at, |d| d.max(*at)));
        }
        let run_id = if runs.len() == 1 {
            runs.first().copied()
        } else {
            None
        };
        (
            host_calls::CallContext {
                run_id,
                chain,
                project,
            },
            deadline.unwrap_or_else(|| std::time::Instant::now() + idle),
        )
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Answer>>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// No call can succeed from now on: fail the waiting ones with `why`.
    fn kill_calls(&self, why: CallError) {
        {
            let mut dead = self.dead.lock().unwrap_or_else(|p| p.into_inner());
            if dead.is_none() {
                *dead = Some(why.clone());
            }
        }
        for (_, tx) in self.pending().drain() {
            let _ = tx.send((Err(why.clone()), 0));
        }
    }
}

/// A running plugin process.
pub(super) struct PluginProcess {
    shared: Arc<Shared>,
    stdin: Stdin,
    next_id: AtomicU64,
    in_flight: AtomicUsize,
    /// Stopped on purpose by the host (not a crash).
    retired: AtomicBool,
    pid: Option<u32>,
    /// What its sandbox and limits achieved at its start.
    achieved: std::sync::OnceLock<Achieved>,
    /// A WebAssembly plugin: calls go to its instance, not to pipes.
    wasm: Option<Arc<super::wasm::Guest>>,
    /// Where a WebAssembly instance's `exited` record goes (the project
    /// root), taken when it is written.
    wasm_audit: Mutex<Option<std::path::PathBuf>>,
    /// A native plugin loaded in the daemon: calls go to its thread.
    native: Option<Arc<super::native::InDaemon>>,
}

/// The level per permission kind and the resource limits of a process.
pub(super) type Achieved = (
    BTreeMap<String, String>,
    BTreeMap<String, taskrush_protocol::daemon::LimitStatus>,
);

impl PluginProcess {
    /// Start `argv` in `dir` with exactly `env` (see [`spawn::spawn_plugin`]).
    /// Must be called from a runtime worker thread (see `spawn.rs`).
    pub(super) fn spawn(
        name: &str,
        argv: &[String],
        dir: &Path,
        env: &BTreeMap<String, String>,
        sandbox: Option<&crate::process::sandbox::Spec>,
        stderr_log: Arc<StderrLog>,
        audit_root: Option<&Path>,
    ) -> std::io::Result<Arc<PluginProcess>> {
        let mut proc = spawn::spawn_plugin(argv, dir, env, sandbox)?;
        let stdin = proc.child.stdin.take();
        let stdout = proc.child.stdout.take();
        let stderr = proc.child.stderr.take();
        let group = proc.group();
        let pid = proc.pid();
        let p = PluginProcess::from_pipes(
            name,
            stdin.map(|s| Box::new(s) as Box<dyn AsyncWrite + Send + Unpin>),
            stdout,
            Some(group),
            pid,
        );
        let shared = p.shared.clone();
        match stderr {
            Some(err) => {
                tokio::spawn(async move {
                    read_stderr(err, stderr_log).await;
                    shared.stderr_done.send_replace(true);
                });
            }
            None => {
                p.shared.stderr_done.send_replace(true);
            }
        }
        let shared = p.shared.clone();
        let audit_root = audit_root.map(Path::to_owned);
        if let Some(root) = &audit_root {
            let _ = shared.audit_root.set(root.clone());
        }
        let cgroup = sandbox.and_then(|s| s.cgroup.clone());
        tokio::spawn(async move {
            // Before it is reaped, a process that ended (on its own, by a
            // crash or stopped by the host) still shows its CPU time.
            let cpu = match pid {
                Some(pid) if audit_root.is_some() && audit::wait_ended(pid).await => {
                    audit::cpu(pid)
                }
                _ => None,
            };
            let status = proc.child.wait().await;
            let how = match &status {
                Ok(status) => describe(*status),
                Err(e) => format!("cannot wait for it: {e}"),
            };
            tracing::debug!(target: "plugin", plugin = %shared.name, "process ended: {how}");
            // Whatever it left behind in its group goes with it.
            group.signal(Signal::KILL);
            let cgroup_peak = match &cgroup {
                Some(dir) => crate::process::cgroup::remove(dir).await,
                None => None,
            };
            if let Some(root) = &audit_root {
                let (code, signal) = match &status {
                    Ok(s) => {
                        let (code, signal, _) = spawn::exit_code(*s);
                        (code, signal)
                    }
                    Err(_) => (None, None),
                };
                let (sampled_cpu, peak_rss_kib) =
                    *shared.usage.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(m) = shared.metrics.get() {
                    m.ended(
                        cpu.map(|c| c.0).or(sampled_cpu),
                        peak_rss_kib.or(cgroup_peak),
                    );
                    if let Some(pid) = pid {
                        let _ = m.pid.compare_exchange(
                            u64::from(pid),
                            0,
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        );
                    }
                }
                audit::record(
                    "exited",
                    &shared.name,
                    root,
                    serde_json::json!({
                        "pid": pid,
                        "status": code,
                        "signal": signal,
                        "cpu_ms": cpu.map(|c| c.0).or(sampled_cpu),
                        "children_cpu_ms": cpu.map(|c| c.1),
                        "peak_rss_kib": peak_rss_kib,
                        "cgroup_memory_peak_kib": cgroup_peak,
                    }),
                );
            }
            shared.exit.send_replace(Some(how));
        });
        Ok(p)
    }

    /// A plugin over any pipes (the tests use in-memory ones).
    pub(super) fn from_pipes<R: AsyncRead + Send + Unpin + 'static>(
        name: &str,
        stdin: Option<Box<dyn AsyncWrite + Send + Unpin>>,
        stdout: Option<R>,
        group: Option<ProcessGroup>,
        pid: Option<u32>,
    ) -> Arc<PluginProcess> {
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            pending: Mutex::new(HashMap::new()),
            dead: Mutex::new(None),
            exit: watch::channel(None).0,
            junk: AtomicU32::new(0),
            unmatched: AtomicU32::new(0),
            group,
            stderr_done: watch::channel(false).0,
            usage: Mutex::new((None, None)),
            audit_root: std::sync::OnceLock::new(),
            requests: AtomicU32::new(0),
            stdin: Arc::new(tokio::sync::Mutex::new(stdin)),
            host_calls: std::sync::OnceLock::new(),
            contexts: Mutex::new(HashMap::new()),
            host_call_slots: Arc::new(tokio::sync::Semaphore::new(MAX_HOST_CALLS)),
            metrics: std::sync::OnceLock::new(),
        });
        match stdout {
            Some(out) => {
                tokio::spawn(demux(
                    BufReader::with_capacity(64 * 1024, out),
                    shared.clone(),
                ));
            }
            None => shared.kill_calls(CallError::Gone("no stdout".into())),
        }
        Arc::new(PluginProcess {
            stdin: shared.stdin.clone(),
            shared,
            next_id: AtomicU64::new(1),
            in_flight: AtomicUsize::new(0),
            retired: AtomicBool::new(false),
            pid,
            achieved: std::sync::OnceLock::new(),
            wasm: None,
            wasm_audit: Mutex::new(None),
            native: None,
        })
    }

    /// A WebAssembly plugin's instance behind the same handle: the host
    /// calls, swaps, retires and kills it as it does a process.
    pub(super) fn wasm(
        name: &str,
        guest: super::wasm::Guest,
        audit_root: Option<&Path>,
    ) -> Arc<PluginProcess> {
        Self::in_memory(name, audit_root, Some(Arc::new(guest)), None)
    }

    /// A native plugin loaded in the daemon behind the same handle: the
    /// host calls, swaps, retires and kills it as it does a process
    /// (killing it abandons its thread).
    pub(super) fn native(
        name: &str,
        guest: super::native::InDaemon,
        audit_root: Option<&Path>,
    ) -> Arc<PluginProcess> {
        Self::in_memory(name, audit_root, None, Some(Arc::new(guest)))
    }

    /// A plugin that is no process (a WebAssembly instance or a native
    /// library in the daemon): no pid, no pipes, nothing to demultiplex.
    fn in_memory(
        name: &str,
        audit_root: Option<&Path>,
        wasm: Option<Arc<super::wasm::Guest>>,
        native: Option<Arc<super::native::InDaemon>>,
    ) -> Arc<PluginProcess> {
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            pending: Mutex::new(HashMap::new()),
            dead: Mutex::new(None),
            exit: watch::channel(None).0,
            junk: AtomicU32::new(0),
            unmatched: AtomicU32::new(0),
            group: None,
            stderr_done: watch::channel(true).0,
            usage: Mutex::new((None, None)),
            audit_root: std::sync::OnceLock::new(),
            requests: AtomicU32::new(0),
            stdin: Arc::new(tokio::sync::Mutex::new(None)),
            host_calls: std::sync::OnceLock::new(),
            contexts: Mutex::new(HashMap::new()),
            host_call_slots: Arc::new(tokio::sync::Semaphore::new(MAX_HOST_CALLS)),
            metrics: std::sync::OnceLock::new(),
        });
        Arc::new(PluginProcess {
            stdin: shared.stdin.clone(),
            shared,
            next_id: AtomicU64::new(1),
            in_flight: AtomicUsize::new(0),
            retired: AtomicBool::new(false),
            pid: None,
            wasm,
            wasm_audit: Mutex::new(audit_root.map(Path::to_owned)),
            achieved: std::sync::OnceLock::new(),
            native,
        })
    }

    /// A native plugin loaded in the daemon rather than a process.
    pub(super) fn is_in_daemon(&self) -> bool {
        self.native.is_some()
    }

    /// A WebAssembly instance rather than a process.
    pub(super) fn is_wasm(&self) -> bool {
        self.wasm.is_some()
    }

    pub(super) fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Record what its sandbox and limits achieved (once, at its start).
    pub(super) fn set_achieved(&self, achieved: Achieved) {
        let _ = self.achieved.set(achieved);
    }

    /// What its sandbox and limits achieved (empty when unsandboxed).
    pub(super) fn achieved(&self) -> Achieved {
        self.achieved.get().cloned().unwrap_or_default()
    }

    /// Whether a call is being answered right now.
    pub(super) fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) > 0
    }

    /// Why calls fail, if they do: it exited, broke the protocol, or was
    /// stopped.
    pub(super) fn dead(&self) -> Option<CallError> {
        self.shared
            .dead
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(super) fn retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }

    /// Responses whose id matched no waiting call.
    pub(super) fn unmatched(&self) -> u32 {
        self.shared.unmatched.load(Ordering::Relaxed)
    }

    /// Junk lines seen on stdout.
    pub(super) fn junk(&self) -> u32 {
        self.shared.junk.load(Ordering::Relaxed)
    }

    /// Serve the host calls of this process with `grants`; one made
    /// outside any call may take `idle`.
    pub(super) fn serve_host_calls(&self, grants: Arc<host_calls::Grants>, idle: Duration) {
        let _ = self.shared.host_calls.set((grants, idle));
    }

    /// Its figures: CPU time and peak RSS are added to them at its exit,
    /// and its pid is read while it lives.
    pub(super) fn set_metrics(&self, metrics: Arc<crate::metrics::PluginStats>) {
        if let Some(pid) = self.pid {
            metrics.pid.store(u64::from(pid), Ordering::Relaxed);
        }
        let _ = self.shared.metrics.set(metrics);
    }

    /// Call `method` and wait at most `limit` for the answer.
    pub(super) async fn call(&self, method: &str, params: Value, limit: Duration) -> Reply {
        self.call_in(Default::default(), method, params, limit)
            .await
    }

    /// [`Self::call`] on behalf of `cx` (a run's hook, a plugin's
    /// `call_command`): what the host calls it makes meanwhile are
    /// served with.
    pub(super) async fn call_in(
        &self,
        cx: host_calls::CallContext,
        method: &str,
        params: Value,
        limit: Duration,
    ) -> Reply {
        self.call_counted(cx, method, params, limit).await.0
    }

    /// [`Self::call_in`], with the bytes sent and received (both 0 for a
    /// WebAssembly instance or a native plugin in the daemon).
    pub(super) async fn call_counted(
        &self,
        cx: host_calls::CallContext,
        method: &str,
        params: Value,
        limit: Duration,
    ) -> (Reply, (u64, u64)) {
        if let Some(why) = self.dead() {
            return (Err(why), (0, 0));
        }
        if let Some(guest) = &self.wasm {
            self.in_flight.fetch_add(1, Ordering::Relaxed);
            let reply = guest.call(cx, method, params, limit).await;
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            if let Some(m) = self.shared.metrics.get() {
                // An instance's peak is its linear memory at its largest.
                m.ended(None, Some(guest.peak_memory() / 1024));
            }
            return (reply, (0, 0));
        }
        if let Some(guest) = &self.native {
            self.in_flight.fetch_add(1, Ordering::Relaxed);
            let reply = guest.call(cx, method, params, limit).await;
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            if let Err(CallError::Timeout(_)) = &reply {
                self.shared.kill_calls(CallError::Gone(
                    "a call past its deadline still runs in its thread (lost until the daemon restarts)".into(),
                ));
            }
            return (reply, (0, 0));
        }
        let sent = AtomicU64::new(0);
        let received = AtomicU64::new(0);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.shared.pending().insert(id, tx);
        self.shared
            .contexts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, (cx, std::time::Instant::now() + limit));
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let msg = Request::new(id, method, params);
        let exchange = async {
            let mut line = serde_json::to_vec(&msg)
                .map_err(|e| CallError::Protocol(format!("cannot encode `{method}`: {e}")))?;
            line.push(b'\n');
            sent.store(line.len() as u64, Ordering::Relaxed);
            {
                let mut stdin = self.stdin.lock().await;
                let Some(w) = stdin.as_mut() else {
                    return Err(CallError::Gone("its stdin is closed".into()));
                };
                if let Err(e) = async {
                    w.write_all(&line).await?;
                    w.flush().await
                }
                .await
                {
                    return Err(self
                        .gone_reason(format!("cannot write to its stdin: {e}"))
                        .await);
                }
            }
            match rx.await {
                Ok((reply, n)) => {
                    received.store(n, Ordering::Relaxed);
                    reply
                }
                Err(_) => Err(self.gone_reason("it stopped answering".into()).await),
            }
        };
        let reply = match tokio::time::timeout(limit, exchange).await {
            Ok(reply) => reply,
            Err(_) => Err(CallError::Timeout(limit)),
        };
        self.shared.pending().remove(&id);
        self.shared
            .contexts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        let bytes = (sent.into_inner(), received.into_inner());
        (reply, bytes)
    }

    /// The best description of why the process went away.
    async fn gone_reason(&self, fallback: String) -> CallError {
        if let Some(why) = self.dead() {
            return why;
        }
        match self.wait_exit(Duration::from_millis(500)).await {
            Some(how) => CallError::Gone(how),
            None => CallError::Gone(fallback),
        }
    }

    /// How the process ended, waiting at most `limit` for it to end.
    pub(super) async fn wait_exit(&self, limit: Duration) -> Option<String> {
        let mut rx = self.shared.exit.subscribe();
        let ended = tokio::time::timeout(limit, rx.wait_for(|e| e.is_some())).await;
        match ended {
            Ok(Ok(v)) => v.clone(),
            _ => None,
        }
    }

    /// Changes to `Some(how)` when the process ends.
    pub(super) fn exit_watch(&self) -> watch::Receiver<Option<String>> {
        self.shared.exit.subscribe()
    }

    /// Whether the process ended (always false for in-memory pipes).
    pub(super) fn exited(&self) -> Option<String> {
        self.shared.exit.borrow().clone()
    }

    /// Stop it now: no more calls, SIGTERM, SIGKILL [`STOP_STEP`] later.
    /// Returns at once; the rest happens in the background.
    pub(super) fn kill(self: &Arc<Self>, why: &str) {
        self.retired.store(true, Ordering::Relaxed);
        self.shared
            .kill_calls(CallError::Gone(format!("stopped by the host: {why}")));
        self.drop_instance();
        let me = self.clone();
        tokio::spawn(async move {
            me.stdin.lock().await.take();
            me.terminate().await;
        });
    }

    /// Wait (at most `limit`) until everything it wrote to stderr was read,
    /// so that an error message can quote its last words.
    pub(super) async fn stderr_drained(&self, limit: Duration) {
        let mut rx = self.shared.stderr_done.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|d| *d)).await;
    }

    /// Close its stdin (the polite "no more requests").
    pub(super) async fn close_stdin(&self) {
        self.stdin.lock().await.take();
        self.drop_instance();
    }

    /// A WebAssembly plugin's "exit": its instance is dropped once no
    /// call runs in it.
    fn drop_instance(&self) {
        if let Some(guest) = &self.native {
            guest.stop();
            self.shared
                .exit
                .send_replace(Some("its thread was stopped".into()));
            let root = self
                .wasm_audit
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(root) = root {
                audit::record(
                    "exited",
                    &self.shared.name,
                    &root,
                    serde_json::json!({"pid": null, "plugin_type": "native", "mode": "in-daemon", "sha256": guest.sha256}),
                );
            }
        }
        if let Some(guest) = &self.wasm {
            guest.stop();
            self.shared
                .exit
                .send_replace(Some("its instance was dropped".into()));
            let root = self
                .wasm_audit
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(root) = root {
                audit::record(
                    "exited",
                    &self.shared.name,
                    &root,
                    serde_json::json!({"pid": null, "plugin_type": "wasm", "sha256": guest.sha256}),
                );
            }
        }
    }

    /// Read its CPU time and peak RSS while it still lives.
    fn sample_usage(&self) {
        if let Some(pid) = self.pid
            && self.exited().is_none()
        {
            let u = audit::usage(pid);
            if u.0.is_some() || u.1.is_some() {
                *self.shared.usage.lock().unwrap_or_else(|p| p.into_inner()) = u;
            }
        }
    }

    /// SIGTERM, wait, SIGKILL, wait (bounded).
    async fn terminate(&self) {
        self.sample_usage();
        let Some(group) = self.shared.group else {
            return;
        };
        if self.exited().is_some() {
            return;
        }
        group.signal(Signal::TERM);
        if self.wait_exit(STOP_STEP).await.is_some() {
            return;
        }
        tracing::warn!(target: "plugin", plugin = %self.shared.name, "did not stop on SIGTERM: SIGKILL");
        group.signal(Signal::KILL);
        self.wait_exit(STOP_STEP).await;
    }

    /// The orderly stop: `shutdown`, close stdin, wait; SIGTERM after
    /// [`STOP_STEP`], SIGKILL after another. Returns once it is gone (or
    /// after about 2 × STOP_STEP).
    pub(super) async fn shutdown(&self) {
        self.retired.store(true, Ordering::Relaxed);
        self.sample_usage();
        let started = Instant::now();
        if self.dead().is_none() {
            let _ = self
                .call(
                    taskrush_protocol::plugin::method::SHUTDOWN,
                    Value::Null,
                    STOP_STEP,
                )
                .await;
        }
        self.shared
            .kill_calls(CallError::Gone("stopped by the host".into()));
        self.drop_instance();
        self.stdin.lock().await.take();
        let left = STOP_STEP.saturating_sub(started.elapsed());
        if self.shared.group.is_some() && self.wait_exit(left).await.is_none() {
            tracing::warn!(target: "plugin", plugin = %self.shared.name, "still running {} after `shutdown`: SIGTERM", human::duration(STOP_STEP));
            self.terminate().await;
        }
    }
}

impl Drop for PluginProcess {
    fn drop(&mut self) {
        // The last handle is gone: nothing may outlive it.
        if self.exited().is_none()
            && let Some(g) = self.shared.group
        {
            g.signal(Signal::KILL);
        }
    }
}

/// `exit code 1`, `killed by signal 9`.
fn describe(status: std::process::ExitStatus) -> String {
    match spawn::exit_code(status) {
        (Some(code), _, _) => format!("exit code {code}"),
        (None, Some(sig), _) => format!("killed by signal {sig}"),
        _ => "unknown status".into(),
    }
}

/// What [`read_line`] found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Line {
    /// A line (without its `\n`) in the buffer; `true` when it was cut at
    /// the cap.
    Full(bool),
    Eof,
}

/// Read one line into `buf`, keeping at most `cap` bytes of it (the rest
/// is read and thrown away, so memory stays bounded).
pub(super) async fn read_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    cap: usize,
) -> std::io::Result<Line> {
    buf.clear();
    let mut cut = false;
    let mut any = false;
    loop {
        let avail = r.fill_buf().await?;
        if avail.is_empty() {
            return Ok(if any { Line::Full(cut) } else { Line::Eof });
        }
        any = true;
        let (chunk, used, done) = match avail.iter().position(|&b| b == b'\n') {
            Some(i) => (&avail[..i], i + 1, true),
            None => (avail, avail.len(), false),
        };
        let room = cap.saturating_sub(buf.len());
        if chunk.len() > room {
            cut = true;
        }
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        r.consume(used);
        if done {
            return Ok(Line::Full(cut));
        }
    }
}

async fn demux<R: AsyncBufRead + Unpin>(mut out: R, shared: Arc<Shared>) {
    let mut buf = Vec::new();
    loop {
        match read_line(&mut out, &mut buf, MAX_LINE).await {
            Ok(Line::Full(false)) => {}
            Ok(Line::Full(true)) => {
                junk(&shared, &format!("a line over {} MiB", MAX_LINE >> 20));
                continue;
            }
            Ok(Line::Eof) | Err(_) => break,
        }
        let text = buf.trim_ascii();
        if text.is_empty() {
            continue;
        }
        let mut msg: Message = match serde_json::from_slice(text) {
            Ok(m) => m,
            Err(_) => {
                junk(&shared, &String::from_utf8_lossy(text));
                continue;
            }
        };
        if msg.jsonrpc.as_deref() != Some(jsonrpc::VERSION) {
            junk(&shared, &String::from_utf8_lossy(text));
            continue;
        }
        match (msg.method.take(), msg.id.take()) {
            (Some(method), None) => notification(
                &shared.name,
                shared.audit_root.get().map(|p| p.as_path()),
                &method,
                msg.params,
            ),
            (Some(method), Some(id)) => host_call(&shared, method, id, text),
            (None, Some(id)) => {
                let reply = match msg.outcome() {
                    Err(e) => Err(CallError::Remote {
                        code: e.code,
                        message: e.message,
                    }),
                    Ok(v) => Ok(v.unwrap_or(Value::Null)),
                };
                let waiter = id.as_u64().and_then(|id| shared.pending().remove(&id));
                match waiter {
                    Some(tx) => {
                        let _ = tx.send((reply, buf.len() as u64 + 1));
                    }
                    None => {
                        shared.unmatched.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(target: "plugin", plugin = %shared.name, "answered id {id}, which no call is waiting for");
                    }
                }
            }
            (None, None) => junk(&shared, &String::from_utf8_lossy(text)),
        }
    }
    // stdout closed: the process is ending (or closed it, which is the same
    // to us). Wait a moment for its exit status to say how.
    let mut rx = shared.exit.subscribe();
    let how = if shared.group.is_some() {
        match tokio::time::timeout(Duration::from_millis(500), rx.wait_for(|e| e.is_some())).await {
            Ok(Ok(v)) => v.clone().unwrap_or_default(),
            _ => "it closed its stdout".into(),
        }
    } else {
        "it closed its stdout".into()
    };
    shared.kill_calls(CallError::Gone(how));
}

/// A request from the plugin (`text`): a host call, served off the
/// reader (a slow `http_request` must not hold up the answers to the
/// host's own calls) and answered on its stdin. Without a server (a
/// process the host did not start) it is refused at once.
fn host_call(shared: &Arc<Shared>, method: String, id: jsonrpc::Id, text: &[u8]) {
    let Some((grants, idle)) = shared.host_calls.get() else {
        tracing::warn!(target: "plugin", plugin = %shared.name, "sent a request (`{method}`), which this host does not serve to it");
        let n = shared.requests.fetch_add(1, Ordering::Relaxed);
        if n < DENIED_AUDITED
            && let Some(root) = shared.audit_root.get()
        {
            audit::record(
                "denied",
                &shared.name,
                root,
                serde_json::json!({
                    "method": method,
                    "why": "no host calls are served to this plugin",
                }),
            );
        }
        refuse(
            shared,
            id,
            -32601,
            format!("method not found: `{method}` (no host calls are served)"),
        );
        return;
    };
    let Ok(slot) = shared.host_call_slots.clone().try_acquire_owned() else {
        tracing::warn!(target: "plugin", plugin = %shared.name, "refused `{method}`: {MAX_HOST_CALLS} host calls in flight");
        refuse(
            shared,
            id,
            taskrush_protocol::host::error::FAILED,
            format!("`{method}` refused: {MAX_HOST_CALLS} host calls are in flight already"),
        );
        return;
    };
    let (cx, deadline) = shared.host_context(*idle);
    let (grants, bytes, shared) = (grants.clone(), text.to_vec(), shared.clone());
    tokio::spawn(async move {
        if let Some(line) = host_calls::serve(grants, cx, bytes, deadline).await {
            answer_line(&shared, line).await;
        }
        drop(slot);
    });
}

/// Answer request `id` of the plugin with an error, off the reader.
fn refuse(shared: &Arc<Shared>, id: jsonrpc::Id, code: i32, message: String) {
    let answer = jsonrpc::Response::<Value>::new(
        id,
        Err(taskrush_protocol::error::WireError {
            code,
            message,
            data: None,
        }),
    );
    let shared = shared.clone();
    tokio::spawn(async move {
        if let Ok(line) = serde_json::to_vec(&answer) {
            answer_line(&shared, line).await;
        }
    });
}

/// Write one answer to the plugin's stdin (dropped when it is closed).
async fn answer_line(shared: &Shared, mut line: Vec<u8>) {
    line.push(b'\n');
    let mut stdin = shared.stdin.lock().await;
    if let Some(w) = stdin.as_mut() {
        let written = async {
            w.write_all(&line).await?;
            w.flush().await
        }
        .await;
        if let Err(e) = written {
            tracing::debug!(target: "plugin", plugin = %shared.name, "cannot answer a host call: {e}");
        }
    }
}

fn junk(shared: &Shared, line: &str) {
    let n = shared.junk.fetch_add(1, Ordering::Relaxed) + 1;
    let shown: String = line.chars().take(200).collect();
    tracing::warn!(target: "plugin", plugin = %shared.name, "wrote a line to stdout that is not JSON-RPC: {shown}");
    if n >= JUNK_LIMIT {
        shared.kill_calls(CallError::Protocol(format!(
            "it wrote {n} lines to stdout that are not JSON-RPC messages (the last: `{shown}`); \
             stdout carries only protocol messages, logs go to stderr"
        )));
        if let Some(g) = shared.group {
            g.signal(Signal::KILL);
        }
    }
}

/// A `log` or `progress` notification of plugin `name` (of project `root`,
/// when it has one): into the daemon log, and to [`super::output`] (kept for
/// `plugin logs`, shown in the run it serves).
pub(super) fn notification(name: &str, root: Option<&Path>, method: &str, params: Option<Value>) {
    use taskrush_protocol::plugin::{LogParams, ProgressParams, method as m};
    let params = params.unwrap_or(Value::Null);
    match method {
        m::LOG => match serde_json::from_value::<LogParams>(params) {
            Ok(p) => {
                let message = redact::scrub(&p.message);
                match p.level.as_str() {
                    "error" => {
                        tracing::error!(target: "plugin", plugin = %name, "{message}")
                    }
                    "warn" | "warning" => {
                        tracing::warn!(target: "plugin", plugin = %name, "{message}")
                    }
                    "debug" | "trace" => {
                        tracing::debug!(target: "plugin", plugin = %name, "{message}")
                    }
                    _ => {
                        tracing::info!(target: "plugin", plugin = %name, "{message}")
                    }
                }
                super::output::log(name, root, &p.level, &message, p.task);
            }
            Err(e) => {
                tracing::warn!(target: "plugin", plugin = %name, "malformed `log`: {e}")
            }
        },
        m::PROGRESS => match serde_json::from_value::<ProgressParams>(params) {
            Ok(p) => {
                let message = redact::scrub(&p.message);
                tracing::info!(target: "plugin", plugin = %name, task = ?p.task, percent = ?p.percent, "progress: {message}");
                super::output::progress(name, root, p.task, p.percent, &message);
            }
            Err(e) => {
                tracing::warn!(target: "plugin", plugin = %name, "malformed `progress`: {e}")
            }
        },
        other => {
            tracing::debug!(target: "plugin", plugin = %name, "ignored notification `{other}`")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use taskrush_protocol::jsonrpc::Response;
    use tokio::io::{AsyncReadExt, DuplexStream};

    /// A plugin over in-memory pipes; the test plays the plugin.
    fn fake() -> (Arc<PluginProcess>, DuplexStream, DuplexStream) {
        let (host_in, plugin_in) = tokio::io::duplex(1 << 20);
        let (plugin_out, host_out) = tokio::io::duplex(1 << 20);
        let p = PluginProcess::from_pipes(
            "fake",
            Some(Box::new(host_in) as Box<dyn AsyncWrite + Send + Unpin>),
            Some(host_out),
            None,
            None,
        );
        (p, plugin_in, plugin_out)
    }

    async fn request(from_host: &mut DuplexStream) -> Value {
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        loop {
            from_host.read_exact(&mut b).await.unwrap();
            if b[0] == b'\n' {
                break;
            }
            line.push(b[0]);
        }
        serde_json::from_slice(&line).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_fails_exactly_at_its_deadline() {
        let (p, _plugin_in, _plugin_out) = fake();
        let t0 = Instant::now();
        let r = p
            .call("before_task", Value::Null, Duration::from_secs(5))
            .await;
        assert_eq!(r, Err(CallError::Timeout(Duration::from_secs(5))));
        assert_eq!(t0.elapsed(), Duration::from_secs(5));
        assert!(!p.busy());
    }

    #[tokio::test(start_paused = true)]
    async fn answers_are_routed_by_id_whatever_their_order() {
        let (p, mut plugin_in, mut plugin_out) = fake();
        let (p1, p2) = (p.clone(), p.clone());
        let a =
            tokio::spawn(async move { p1.call("a", Value::Null, Duration::from_secs(5)).await });
        let r1 = request(&mut plugin_in).await;
        let b =
            tokio::spawn(async move { p2.call("b", Value::Null, Duration::from_secs(5)).await });
        let r2 = request(&mut plugin_in).await;
        let reply = |r: &Value, v: &str| {
            format!(
                "{}\n",
                serde_json::to_string(&Response::new(
                    r["id"].as_u64().unwrap(),
                    Ok(r["method"].as_str().unwrap().to_owned() + v)
                ))
                .unwrap()
            )
        };
        plugin_out
            .write_all(reply(&r2, "!").as_bytes())
            .await
            .unwrap();
        plugin_out
            .write_all(
                b"{\"jsonrpc\":\"2.0\",\"method\":\"log\",\"params\":{\"message\":\"hi\"}}\n",
            )
            .await
            .unwrap();
        plugin_out
            .write_all(reply(&r1, "?").as_bytes())
            .await
            .unwrap();
        assert_eq!(a.await.unwrap(), Ok(Value::from("a?")));
        assert_eq!(b.await.unwrap(), Ok(Value::from("b!")));
        plugin_out
            .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":99,\"result\":1}\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(p.unmatched(), 1);
        assert_eq!(p.junk(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn junk_on_stdout_breaks_the_plugin_after_the_limit() {
        let (p, _plugin_in, mut plugin_out) = fake();
        let p1 = p.clone();
        let waiting =
            tokio::spawn(async move { p1.call("x", Value::Null, Duration::from_secs(60)).await });
        plugin_out.write_all(b"hello\n[1,2]\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(p.dead().is_none(), "two junk lines are tolerated");
        plugin_out.write_all(b"{\"no\":\"rpc\"}\n").await.unwrap();
        let r = waiting.await.unwrap();
        assert!(
            matches!(&r, Err(CallError::Protocol(m)) if m.starts_with("it wrote 3 lines to stdout")),
            "{r:?}"
        );
        assert!(p.dead().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_stdout_fails_the_waiting_calls_at_once() {
        let (p, _plugin_in, plugin_out) = fake();
        let p1 = p.clone();
        let waiting =
            tokio::spawn(async move { p1.call("x", Value::Null, Duration::from_secs(60)).await });
        tokio::time::sleep(Duration::from_millis(1)).await;
        drop(plugin_out);
        let t0 = Instant::now();
        let r = waiting.await.unwrap();
        assert_eq!(r, Err(CallError::Gone("it closed its stdout".into())));
        assert!(t0.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_plugins_host_call_is_answered_on_its_stdin_while_its_call_waits() {
        let (p, mut plugin_in, mut plugin_out) = fake();
        let d = tempfile::tempdir().unwrap();
        let granted = taskrush_protocol::plugin::Permissions {
            environment: vec!["TOKEN".into()],
            ..Default::default()
        };
        let client = BTreeMap::from([("TOKEN".to_owned(), "t0k".to_owned())]);
        let grants = host_calls::resolve(
            "fake",
            d.path(),
            &granted,
            (d.path(), d.path(), d.path()),
            &client,
            &BTreeMap::new(),
            None,
        );
        p.serve_host_calls(Arc::new(grants), Duration::from_secs(5));
        let p1 = p.clone();
        let waiting = tokio::spawn(async move {
            p1.call_in(
                host_calls::CallContext::run(9),
                "before_task",
                Value::Null,
                Duration::from_secs(5),
            )
            .await
        });
        let hook = request(&mut plugin_in).await;
        // While the host waits for its answer, the plugin asks the host.
        plugin_out
            .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":\"h1\",\"method\":\"env_get\",\"params\":{\"name\":\"TOKEN\"}}\n")
            .await
            .unwrap();
        let answer = request(&mut plugin_in).await;
        assert_eq!(answer["id"], "h1");
        assert_eq!(answer["result"]["value"], "t0k");
        assert_eq!(p.shared.host_context(Duration::ZERO).0.run_id, Some(9));
        let reply = serde_json::to_string(&Response::new(hook["id"].as_u64().unwrap(), Ok(1)))
            .unwrap()
            + "\n";
        plugin_out.write_all(reply.as_bytes()).await.unwrap();
        assert_eq!(waiting.await.unwrap(), Ok(Value::from(1)));
        assert!(p.shared.host_context(Duration::ZERO).0.run_id.is_none());
    }

    #[tokio::test]
    async fn a_host_call_from_a_process_without_a_server_is_answered_method_not_found() {
        let (_p, mut plugin_in, mut plugin_out) = fake();
        plugin_out
            .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"task_graph\"}\n")
            .await
            .unwrap();
        let answer = request(&mut plugin_in).await;
        assert_eq!(answer["id"], 5);
        assert_eq!(answer["error"]["code"], -32601);
    }

    #[tokio::test]
    async fn long_lines_are_cut_not_buffered() {
        let data = format!("{}\nshort\n", "x".repeat(10_000));
        let mut r = BufReader::with_capacity(64, data.as_bytes());
        let mut buf = Vec::new();
        assert_eq!(
            read_line(&mut r, &mut buf, 100).await.unwrap(),
            Line::Full(true)
        );
        assert_eq!(buf.len(), 100);
        assert_eq!(
            read_line(&mut r, &mut buf, 100).await.unwrap(),
            Line::Full(false)
        );
        assert_eq!(buf, b"short");
        assert_eq!(read_line(&mut r, &mut buf, 100).await.unwrap(), Line::Eof);
    }
}
