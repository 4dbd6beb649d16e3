//! Native plugins (`type: native`): a `cdylib` speaking the C ABI of
//! `protocol::host::native`. Trusted code: refused unless the user config
//! says `[native] allow = true`. Two modes (`[native] mode`):
//!
//! - `process` (the default): each plugin in a small host process of its
//!   own, `taskrushd --native-host LIB`, spawned through
//!   `process::spawn` exactly like an external plugin (sandbox, limits,
//!   audit, restart with back-off, the stdio protocol). The host process
//!   loads the library, checks its ABI version first, then relays stdio
//!   messages to its call entry and the plugin's host calls to stdout as
//!   JSON-RPC requests (answers read from stdin). A crash costs that
//!   plugin only.
//! - `in-daemon`: loaded in the daemon ([`InDaemon`]), each plugin's
//!   calls on a dedicated thread; a call past its deadline is abandoned
//!   (its thread is lost until restart); host calls served by the
//!   daemon's host-call server within the plugin's grants. A crash takes
//!   the daemon down.
//!
//! Libraries are never unloaded ([`library`]); in-daemon, a library is
//! loaded once per path for the daemon's life, so a changed file is
//! picked up at the next daemon restart (`plugin list` says so).

mod library;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use taskrush_protocol::jsonrpc::{Message, Request, Response};

use super::host_calls::Grants;
use super::process::CallError;
use crate::config::user_config::{self, NativeMode};
use crate::stamp::Stamp;
pub(crate) use library::Library;

/// The hidden mode of `taskrushd` that hosts one native plugin.
pub(crate) const FLAG: &str = "--native-host";

/// What `plugin info` says of the sandbox of an in-daemon plugin.
pub(crate) const IN_DAEMON: &str = "not sandboxed (in-daemon)";

/// The user config's `[native]`: `Err((message, hint))` when native
/// plugins are not allowed.
pub(crate) fn allowed(name: &str) -> Result<NativeMode, (String, String)> {
    let user = user_config::current().config.native;
    if user.allow {
        return Ok(user.mode);
    }
    let file = user_config::path()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "~/.config/taskrush/config.toml".into());
    Err((
        format!(
            "plugin `{name}` is a native plugin, which runs as trusted code with your rights, and the user config does not allow native plugins (add `[native]` with `allow = true` to `{file}`)"
        ),
        "native plugins run in a sandboxed host process by default; `mode = \"in-daemon\"` under `[native]` loads them in the daemon".to_owned(),
    ))
}

/// The library a native plugin's manifest names, in its directory.
pub(crate) fn library_path(dir: &Path, entry_point: &[String]) -> PathBuf {
    dir.join(entry_point.first().map(String::as_str).unwrap_or(""))
}

/// The command line of a native plugin's host process.
pub(crate) fn host_argv(library: &Path) -> Result<Vec<String>, String> {
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot find the daemon's own executable: {e}"))?;
    Ok(vec![
        exe.display().to_string(),
        FLAG.to_owned(),
        library.display().to_string(),
    ])
}

/// The level per permission kind of an in-daemon plugin: its code runs
/// unconfined; its host calls are still checked against its grants.
pub(crate) fn levels_in_daemon() -> BTreeMap<String, String> {
    [
        "filesystem",
        "network",
        "environment",
        "process",
        "daemon_socket",
    ]
    .into_iter()
    .map(|k| (k.to_owned(), IN_DAEMON.to_owned()))
    .collect()
}

// ---------------------------------------------------------------------
// The host process: `taskrushd --native-host LIB`.

/// Runs the host process when the daemon was started as one.
pub(crate) fn run_if_asked() -> Option<ExitCode> {
    let mut args = std::env::args_os().skip(1);
    if args.next()? != FLAG {
        return None;
    }
    let Some(lib) = args.next() else {
        eprintln!("error: `{FLAG}` needs the library's path");
        return Some(ExitCode::FAILURE);
    };
    let stdin = std::io::stdin().lock();
    let stdout = std::io::stdout().lock();
    Some(host_process(Path::new(&lib), stdin, stdout))
}

/// Load `lib` and relay messages between stdio and it until stdin ends.
/// A library that cannot be used is said on stderr and in the answer to
/// every request (so the daemon's handshake fails with the reason, a
/// failure a restart cannot fix).
fn host_process(lib: &Path, input: impl BufRead, output: impl Write) -> ExitCode {
    let mut io = Stdio {
        input,
        output,
        queued: VecDeque::new(),
    };
    let library = match Library::open(lib) {
        Ok(l) => Ok(l),
        Err(m) => {
            eprintln!("error: {m}");
            Err(m)
        }
    };
    while let Some(message) = io.next_message() {
        let answer = match &library {
            Err(m) => error_answer(&message, m),
            Ok(library) => {
                let mut host = |m: &[u8]| io.host_call(m);
                // The host callback borrows `io`; answers go out after.
                match library.call(&message, &mut host) {
                    Ok(a) => a,
                    Err(e) => error_answer(&message, &failed_text(&e)),
                }
            }
        };
        if let Some(answer) = answer
            && io.write(&answer).is_err()
        {
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

fn failed_text(e: &library::CallFailed) -> String {
    match e {
        library::CallFailed::Panicked => "the plugin panicked (outside its handlers)".into(),
        library::CallFailed::Code(c) => format!("the plugin's call entry returned {c}"),
    }
}

/// An error answer to `message` (none for a notification).
fn error_answer(message: &[u8], text: &str) -> Option<Vec<u8>> {
    let msg: Message = serde_json::from_slice(message).ok()?;
    msg.method.as_ref()?;
    let id = msg.id?;
    let r = Response::<Value>::new(
        id,
        Err(taskrush_protocol::error::WireError {
            code: taskrush_protocol::error::INTERNAL_ERROR,
            message: text.to_owned(),
            data: None,
        }),
    );
    serde_json::to_vec(&r).ok()
}

/// The host process's stdin and stdout, and host requests read early.
struct Stdio<R, W> {
    input: R,
    output: W,
    queued: VecDeque<Vec<u8>>,
}

impl<R: BufRead, W: Write> Stdio<R, W> {
    fn read_line(&mut self) -> Option<Vec<u8>> {
        loop {
            let mut line = Vec::new();
            match self.input.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
            while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                line.pop();
            }
            if !line.is_empty() {
                return Some(line);
            }
        }
    }

    fn next_message(&mut self) -> Option<Vec<u8>> {
        self.queued.pop_front().or_else(|| self.read_line())
    }

    fn write(&mut self, message: &[u8]) -> std::io::Result<()> {
        self.output.write_all(message)?;
        self.output.write_all(b"\n")?;
        self.output.flush()
    }

    /// A host call of the plugin: out on stdout as it is; for a request,
    /// stdin read until its answer (the daemon's requests met meanwhile
    /// are queued).
    fn host_call(&mut self, message: &[u8]) -> Option<Vec<u8>> {
        let id = serde_json::from_slice::<Value>(message)
            .ok()
            .and_then(|v| v.get("id").cloned());
        self.write(message).ok()?;
        let id = id?;
        loop {
            let line = self.read_line()?;
            let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(&line) else {
                self.queued.push_back(line);
                continue;
            };
            if m.contains_key("method") {
                self.queued.push_back(line);
            } else if m.get("id") == Some(&id) {
                return Some(line);
            }
        }
    }
}

// ---------------------------------------------------------------------
// In the daemon.

/// Libraries loaded in the daemon, by path, with the file's stamp when it
/// was loaded: loaded once, kept for the daemon's life.
static LOADED: Mutex<Option<HashMap<PathBuf, Loaded>>> = Mutex::new(None);

/// A library loaded in the daemon and its file's stamp then.
type Loaded = (Library, Option<Stamp>);

fn load_once(path: &Path) -> Result<Library, String> {
    let mut loaded = LOADED.lock().unwrap_or_else(|p| p.into_inner());
    let loaded = loaded.get_or_insert_with(HashMap::new);
    if let Some((lib, _)) = loaded.get(path) {
        return Ok(*lib);
    }
    let stamp = Stamp::of_path(path).ok();
    let lib = Library::open(path)?;
    loaded.insert(path.to_owned(), (lib, stamp));
    Ok(lib)
}

/// Whether `path` was loaded in the daemon and its file changed since:
/// the daemon runs the version it loaded until it restarts.
pub(crate) fn changed_since_loaded(path: &Path) -> bool {
    let loaded = LOADED.lock().unwrap_or_else(|p| p.into_inner());
    loaded
        .as_ref()
        .and_then(|l| l.get(path))
        .is_some_and(|(_, stamp)| Stamp::of_path(path).ok() != *stamp)
}

/// What `plugin list` says of an in-daemon plugin whose library changed.
pub(crate) const CHANGED: &str = "its library changed on disk: an in-daemon native plugin is loaded once, the new version runs from the next daemon restart (`taskrush daemon stop`)";

/// One job for a plugin's thread.
struct Job {
    message: Vec<u8>,
    /// On whose behalf (a run's hook, a plugin's `call_command`): what
    /// its host calls are served with.
    cx: super::host_calls::CallContext,
    deadline: Instant,
    reply: tokio::sync::oneshot::Sender<Result<Option<Vec<u8>>, String>>,
}

/// A native plugin loaded in the daemon: its calls run one at a time on a
/// thread of its own.
pub(crate) struct InDaemon {
    name: String,
    jobs: Mutex<Option<std::sync::mpsc::Sender<Job>>>,
    /// A call overran its deadline: its thread is lost, no call goes there.
    lost: AtomicBool,
    next_id: AtomicU64,
    pub(crate) sha256: Option<String>,
}

impl InDaemon {
    /// Load (once per path) and start the plugin's thread.
    pub(crate) fn start(name: &str, path: &Path, grants: Grants) -> Result<InDaemon, String> {
        let library = load_once(path)?;
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let grants = Arc::new(grants);
        std::thread::Builder::new()
            .name(format!("native-{name}"))
            .spawn(move || {
                for job in rx {
                    let deadline = job.deadline;
                    let cx = job.cx;
                    let mut host =
                        |m: &[u8]| super::host_calls::serve_blocking(&grants, &cx, m, deadline);
                    let r = library
                        .call(&job.message, &mut host)
                        .map_err(|e| failed_text(&e));
                    let _ = job.reply.send(r);
                }
            })
            .map_err(|e| format!("cannot start its thread: {e}"))?;
        Ok(InDaemon {
            name: name.to_owned(),
            jobs: Mutex::new(Some(tx)),
            lost: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            sha256: super::audit::sha256_file(path),
        })
    }

    /// No call after this one: the thread ends once its queue is done.
    pub(crate) fn stop(&self) {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// Call `method` within `limit`; past it the call is abandoned (the
    /// thread cannot be stopped) and the plugin takes no more calls.
    pub(crate) async fn call(
        &self,
        cx: super::host_calls::CallContext,
        method: &str,
        params: Value,
        limit: Duration,
    ) -> Result<Value, CallError> {
        if self.lost.load(Ordering::Relaxed) {
            return Err(CallError::Gone(
                "a call past its deadline still runs in its thread".into(),
            ));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let message = serde_json::to_vec(&Request::new(id, method, params))
            .map_err(|e| CallError::Protocol(format!("cannot encode `{method}`: {e}")))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sent = {
            let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
            jobs.as_ref().map(|j| {
                j.send(Job {
                    message,
                    cx,
                    deadline: Instant::now() + limit,
                    reply: tx,
                })
            })
        };
        if !matches!(sent, Some(Ok(()))) {
            return Err(CallError::Gone("it was stopped".into()));
        }
        let bytes = match tokio::time::timeout(limit, rx).await {
            Ok(Ok(Ok(bytes))) => bytes,
            Ok(Ok(Err(m))) => return Err(CallError::Trapped(m)),
            Ok(Err(_)) => return Err(CallError::Gone("its thread ended".into())),
            Err(_) => {
                self.lost.store(true, Ordering::Relaxed);
                self.stop();
                tracing::warn!(target: "plugin", plugin = %self.name, "a call past its deadline was abandoned: its thread is lost until the daemon restarts");
                return Err(CallError::Timeout(limit));
            }
        };
        let Some(bytes) = bytes else {
            return Err(CallError::Protocol(format!(
                "it answered `{method}` with no response"
            )));
        };
        let msg: Message = serde_json::from_slice(&bytes).map_err(|e| {
            CallError::Protocol(format!("its answer to `{method}` is not JSON-RPC: {e}"))
        })?;
        match msg.outcome() {
            Err(e) => Err(CallError::Remote {
                code: e.code,
                message: e.message,
            }),
            Ok(v) => Ok(v.unwrap_or(Value::Null)),
        }
    }
}
