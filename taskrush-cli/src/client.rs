//! A small blocking JSON-RPC 2.0 client over the daemon's socket
//! (newline-delimited framing), and finding or starting the daemon.
//!
//! No async runtime: the CLI sends one request and renders one stream of
//! events, and a blocking socket lets output flow with the backpressure
//! of the user's terminal — nothing is buffered or dropped in between.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde_json::Value;
use taskrush_protocol::daemon::Hello;
use taskrush_protocol::error::WireError;
use taskrush_protocol::paths::DaemonPaths;
use taskrush_protocol::{PROTOCOL_VERSION, VERSION, method};

use crate::error::CliError;

/// How long the CLI waits for a daemon it started to say it is ready.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest line accepted from the daemon.
const MAX_LINE: usize = 256 * 1024 * 1024;

/// One incoming message.
pub enum Incoming {
    Response {
        id: u64,
        result: Result<Value, WireError>,
    },
    Notification {
        method: String,
        params: Value,
    },
}

/// A connection to the daemon.
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: Arc<Mutex<UnixStream>>,
    next_id: u64,
    line: Vec<u8>,
}

impl Client {
    fn new(stream: UnixStream) -> Result<Client, CliError> {
        let writer = stream
            .try_clone()
            .map_err(|e| CliError::io("cannot use the daemon's socket", e))?;
        Ok(Client {
            reader: BufReader::with_capacity(256 * 1024, stream),
            writer: Arc::new(Mutex::new(writer)),
            next_id: 1,
            line: Vec::new(),
        })
    }

    /// A handle for sending from another thread (Ctrl-C handling).
    pub fn sender(&self) -> Sender {
        Sender {
            writer: self.writer.clone(),
        }
    }

    /// Send a request; returns its id.
    pub fn send(&mut self, method: &str, params: Value) -> Result<u64, CliError> {
        let id = self.next_id;
        self.next_id += 1;
        self.sender().send_raw(
            &serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}),
        )?;
        Ok(id)
    }

    /// Call and wait for the answer (notifications meanwhile are dropped).
    pub fn call<T: DeserializeOwned>(
        &mut self,
        method: &str,
        params: Value,
    ) -> Result<T, CliError> {
        let id = self.send(method, params)?;
        loop {
            if let Incoming::Response { id: got, result } = self.read()?
                && got == id
            {
                let value = result.map_err(CliError::Remote)?;
                return serde_json::from_value(value).map_err(|e| {
                    CliError::Protocol(format!("unexpected answer to `{method}`: {e}"))
                });
            }
        }
    }

    /// The next message from the daemon.
    pub fn read(&mut self) -> Result<Incoming, CliError> {
        loop {
            self.line.clear();
            let n = (&mut self.reader)
                .take(MAX_LINE as u64)
                .read_until(b'\n', &mut self.line)
                .map_err(|e| CliError::Disconnected(e.to_string()))?;
            if n == 0 {
                return Err(CliError::Disconnected(
                    "the daemon closed the connection".into(),
                ));
            }
            let text = self.line.trim_ascii();
            if text.is_empty() {
                continue;
            }
            let msg: RawMessage = serde_json::from_slice(text).map_err(|e| {
                CliError::Protocol(format!("unreadable message from the daemon: {e}"))
            })?;
            if let Some(method) = msg.method {
                return Ok(Incoming::Notification {
                    method,
                    params: msg.params.unwrap_or(Value::Null),
                });
            }
            let id = msg.id.as_ref().and_then(Value::as_u64).unwrap_or(0);
            let result = match (msg.result, msg.error) {
                (_, Some(err)) => Err(err),
                (Some(v), None) => Ok(v),
                (None, None) => Ok(Value::Null),
            };
            return Ok(Incoming::Response { id, result });
        }
    }
}

#[derive(serde::Deserialize)]
struct RawMessage {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    params: Option<Value>,
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    error: Option<WireError>,
}

/// Sends on a client's connection from any thread.
#[derive(Clone)]
pub struct Sender {
    writer: Arc<Mutex<UnixStream>>,
}

impl Sender {
    pub fn send_raw(&self, msg: &Value) -> Result<(), CliError> {
        let mut line = serde_json::to_vec(msg).map_err(|e| CliError::Protocol(e.to_string()))?;
        line.push(b'\n');
        // Writes are whole lines under the lock; a poisoned lock only means
        // another thread panicked mid-write, and the daemon will say so.
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        w.write_all(&line)
            .map_err(|e| CliError::Disconnected(e.to_string()))
    }

    /// A notification (no answer expected).
    pub fn notify(&self, method: &str, params: Value) -> Result<(), CliError> {
        self.send_raw(&serde_json::json!({"jsonrpc": "2.0", "method": method, "params": params}))
    }
}

/// Connect to a running daemon, if one answers.
pub fn connect_existing(paths: &DaemonPaths) -> Result<Option<Client>, CliError> {
    match UnixStream::connect(&paths.socket) {
        Ok(stream) => {
            let mut client = Client::new(stream)?;
            handshake(&mut client)?;
            Ok(Some(client))
        }
        Err(e) if is_not_there(&e) => Ok(None),
        Err(e) => Err(CliError::io(
            &format!("cannot connect to `{}`", paths.socket.display()),
            e,
        )),
    }
}

/// Connect to the daemon, starting it when none answers.
pub fn connect(paths: &DaemonPaths) -> Result<Client, CliError> {
    if let Some(client) = connect_existing(paths)? {
        return Ok(client);
    }
    start_daemon(paths)?;
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match connect_existing(paths) {
            Ok(Some(c)) => return Ok(c),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                return Err(CliError::DaemonStart {
                    reason: "it said it was ready, but its socket does not answer".into(),
                    log: paths.log.clone(),
                });
            }
            Err(e) => return Err(e),
        }
    }
}

fn is_not_there(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
    )
}

fn handshake(client: &mut Client) -> Result<Hello, CliError> {
    client.call(
        method::HELLO,
        serde_json::json!({"version": VERSION, "protocol": PROTOCOL_VERSION}),
    )
}

/// `taskrushd` beside this executable (an installed pair), else on `PATH`;
/// `$TASKRUSHD` overrides both.
fn daemon_executable() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("TASKRUSHD").filter(|p| !p.is_empty()) {
        return p.into();
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        let beside = dir.join("taskrushd");
        if beside.is_file() {
            return beside;
        }
    }
    "taskrushd".into()
}

/// Start the daemon detached and wait (bounded) until it reports ready.
pub fn start_daemon(paths: &DaemonPaths) -> Result<(), CliError> {
    let exe = daemon_executable();
    let mut child = Command::new(&exe)
        .arg("--notify-ready")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| CliError::DaemonStart {
            reason: format!("cannot execute `{}`: {e}", exe.display()),
            log: paths.log.clone(),
        })?;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        if let Some(out) = stdout {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(START_TIMEOUT).unwrap_or_default();
    if line.starts_with("ready") {
        // The daemon lives on; it is reparented when we exit.
        return Ok(());
    }
    if line.starts_with("already-running") {
        // Another CLI started one at the same moment; this one exits.
        let _ = child.wait();
        return Ok(());
    }
    // Not ready: make sure it is gone, then read what it said.
    let _ = child.kill();
    let _ = child.wait();
    let reason = if line.is_empty() {
        let mut err = String::new();
        if let Some(mut e) = stderr {
            let _ = e.read_to_string(&mut err);
        }
        match err.trim() {
            "" => format!(
                "it did not report ready within {}s",
                START_TIMEOUT.as_secs()
            ),
            msg => msg.trim_start_matches("error: ").to_owned(),
        }
    } else {
        format!("unexpected first line `{}`", line.trim())
    };
    Err(CliError::DaemonStart {
        reason,
        log: paths.log.clone(),
    })
}
