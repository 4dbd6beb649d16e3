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
use serde_json::value::RawValue;
use taskrush_protocol::daemon::{DaemonStatus, Hello};
use taskrush_protocol::error::WireError;
use taskrush_protocol::jsonrpc::{Id, Message, Notification, Request};
use taskrush_protocol::paths::DaemonPaths;
use taskrush_protocol::{PROTOCOL_VERSION, VERSION, method};

use crate::error::CliError;

/// How long the CLI waits for a daemon it started to say it is ready.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connected daemon may take to answer `hello` (a daemon that
/// accepts and never answers must not hang the CLI).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for a live daemon (it holds the lock) whose socket
/// file was removed to bind it again.
const REBIND_WAIT: Duration = Duration::from_secs(3);
/// Longest path a Unix socket address holds (`sun_path` less its NUL).
const MAX_SOCKET_PATH: usize = 107;
/// Longest line accepted from the daemon.
const MAX_LINE: usize = 256 * 1024 * 1024;

/// One incoming message.
pub enum Incoming {
    Response {
        id: u64,
        /// The raw `result`, deserialized by the caller straight into its
        /// type (no intermediate `Value`: a 10,000-task list stays small).
        result: Result<Box<RawValue>, WireError>,
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
    /// The id of a `hello` already sent (with our descriptors).
    hello_sent: Option<u64>,
    /// A private daemon (`--no-daemon`), waited for when we are done.
    private: Option<std::process::Child>,
}

impl Drop for Client {
    fn drop(&mut self) {
        let Some(mut child) = self.private.take() else {
            return;
        };
        // Closing our end tells the private daemon to finish.
        let _ = self.reader.get_ref().shutdown(std::net::Shutdown::Both);
        let exited = || matches!(child.try_wait(), Ok(Some(_)));
        if poll_until(Duration::from_secs(5), Duration::from_millis(2), exited) {
            return;
        }
        let _ = child.kill();
        let _ = child.wait();
    }
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
            hello_sent: None,
            private: None,
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
        self.sender().send_raw(&Request::new(id, method, params))?;
        Ok(id)
    }

    /// Send `hello` with our stdin, stdout and stderr attached
    /// (`SCM_RIGHTS`). If they cannot be passed (one is closed), `hello`
    /// goes alone and the daemon streams output as events instead.
    fn send_hello_with_stdio(&mut self) -> Result<(), CliError> {
        use std::mem::MaybeUninit;
        use std::os::fd::AsFd;

        use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
        let id = self.next_id;
        self.next_id += 1;
        let msg = Request::new(id, method::HELLO, hello_params());
        let mut line = serde_json::to_vec(&msg).map_err(|e| CliError::Protocol(e.to_string()))?;
        line.push(b'\n');
        let (stdin, stdout, stderr) = (std::io::stdin(), std::io::stdout(), std::io::stderr());
        let fds = [stdin.as_fd(), stdout.as_fd(), stderr.as_fd()];
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(3))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        control.push(SendAncillaryMessage::ScmRights(&fds));
        let w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let sent = rustix::net::sendmsg(
            &*w,
            &[std::io::IoSlice::new(&line)],
            &mut control,
            SendFlags::empty(),
        );
        drop(w);
        match sent {
            Ok(n) if n == line.len() => {}
            Ok(n) => {
                // A short write of a small message on a fresh local socket
                // does not happen in practice; finish it without descriptors.
                self.sender().write_bytes(&line[n..])?;
            }
            Err(_) => {
                self.sender().write_bytes(&line)?;
            }
        }
        self.hello_sent = Some(id);
        Ok(())
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
                return serde_json::from_str(value.get()).map_err(|e| {
                    CliError::Protocol(format!("unexpected answer to `{method}`: {e}"))
                });
            }
        }
    }

    /// Call and deserialize the answer's `result` with `seed` *while it is
    /// read from the socket*: the answer is never held whole (a 10,000-task
    /// list would take a megabyte). For a connection with no other request
    /// in flight: any answer is taken as this one's; notifications before
    /// it are skipped.
    pub fn call_streaming<S>(
        &mut self,
        method: &str,
        params: Value,
        seed: S,
    ) -> Result<S::Value, CliError>
    where
        // Nothing is borrowed from a socket: any lifetime serves.
        S: serde::de::DeserializeSeed<'static>,
    {
        self.send(method, params)?;
        let mut seed = Some(seed);
        loop {
            // serde_json reads a byte at a time; a `BufReader` makes that
            // cheap (std reads its bytes straight from the buffer).
            let mut de = serde_json::Deserializer::from_reader(BufReader::with_capacity(
                16 * 1024,
                OneLine {
                    inner: &mut self.reader,
                    left: MAX_LINE,
                    done: false,
                },
            ));
            let message = serde::de::Deserializer::deserialize_map(
                &mut de,
                streaming::Message { seed: &mut seed },
            );
            let message = message.map_err(|e| {
                if e.is_io() || e.is_eof() {
                    CliError::Disconnected(format!("while reading the answer to `{method}`: {e}"))
                } else {
                    CliError::Protocol(format!("unexpected answer to `{method}`: {e}"))
                }
            })?;
            // Only whitespace (the line's end) may follow.
            de.end().map_err(|e| CliError::Protocol(e.to_string()))?;
            match message {
                streaming::Got::Result(value) => return Ok(value),
                streaming::Got::Error(err) => return Err(CliError::Remote(err)),
                streaming::Got::Other => continue,
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
                .map_err(disconnected)?;
            if n == 0 {
                return Err(CliError::Disconnected(
                    "the daemon closed the connection".into(),
                ));
            }
            let text = self.line.trim_ascii();
            if text.is_empty() {
                continue;
            }
            let msg: Message<Box<RawValue>> = serde_json::from_slice(text).map_err(|e| {
                CliError::Protocol(format!("unreadable message from the daemon: {e}"))
            })?;
            if let Some(method) = msg.method {
                return Ok(Incoming::Notification {
                    method,
                    params: msg.params.unwrap_or(Value::Null),
                });
            }
            let id = msg.id.as_ref().and_then(Id::as_u64).unwrap_or(0);
            let result = msg.outcome().map(|r| r.unwrap_or_else(null));
            return Ok(Incoming::Response { id, result });
        }
    }
}

/// A read or write on the daemon's socket failed: a timeout (only set
/// during the handshake) or a broken connection.
fn disconnected(e: std::io::Error) -> CliError {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => CliError::TimedOut,
        _ => CliError::Disconnected(e.to_string()),
    }
}

/// Reads one newline-terminated message (JSON strings cannot hold a raw
/// newline, so the first one ends it) and then reports the end.
struct OneLine<'a, R: BufRead> {
    inner: &'a mut R,
    left: usize,
    done: bool,
}

impl<R: BufRead> Read for OneLine<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        let available = self.inner.fill_buf()?;
        if available.is_empty() {
            return Ok(0);
        }
        let available = &available[..available.len().min(buf.len())];
        let (n, end) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        if n > self.left {
            return Err(std::io::Error::other("message too long"));
        }
        buf[..n].copy_from_slice(&available[..n]);
        self.inner.consume(n);
        self.left -= n;
        self.done = end;
        Ok(n)
    }
}

/// The envelope of a message read by [`Client::call_streaming`].
mod streaming {
    use std::fmt;

    use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
    use taskrush_protocol::error::WireError;

    pub enum Got<T> {
        Result(T),
        Error(WireError),
        /// A notification, or an answer without `result` or `error`.
        Other,
    }

    pub struct Message<'s, S> {
        pub seed: &'s mut Option<S>,
    }

    impl<'de, S: DeserializeSeed<'de>> Visitor<'de> for Message<'_, S> {
        type Value = Got<S::Value>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON-RPC message")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut got = Got::Other;
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                match key.as_ref() {
                    "result" => match self.seed.take() {
                        Some(seed) => got = Got::Result(map.next_value_seed(seed)?),
                        None => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    },
                    "error" => got = Got::Error(map.next_value()?),
                    _ => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(got)
        }
    }
}

fn null() -> Box<RawValue> {
    // `null` is valid JSON: this cannot fail.
    RawValue::from_string("null".to_owned()).unwrap_or_else(|_| unreachable!())
}

/// Sends on a client's connection from any thread.
#[derive(Clone)]
pub struct Sender {
    writer: Arc<Mutex<UnixStream>>,
}

impl Sender {
    pub fn send_raw(&self, msg: &impl serde::Serialize) -> Result<(), CliError> {
        let mut line = serde_json::to_vec(msg).map_err(|e| CliError::Protocol(e.to_string()))?;
        line.push(b'\n');
        self.write_bytes(&line)
    }

    fn write_bytes(&self, bytes: &[u8]) -> Result<(), CliError> {
        // Writes are whole lines under the lock; a poisoned lock only means
        // another thread panicked mid-write, and the daemon will say so.
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        w.write_all(bytes).map_err(disconnected)
    }

    /// A notification (no answer expected).
    pub fn notify(&self, method: &str, params: Value) -> Result<(), CliError> {
        self.send_raw(&Notification::new(method, params))
    }
}

/// Connect to a running daemon, if one answers.
/// Connect to a running daemon, if one answers.
pub fn connect_existing(paths: &DaemonPaths) -> Result<Option<Client>, CliError> {
    Ok(connect_with(paths, false)?.map(|(client, _)| client))
}

/// Connect, optionally passing our stdin, stdout and stderr to the daemon
/// with the first message, so that tasks can use them directly.
fn connect_with(
    paths: &DaemonPaths,
    pass_stdio: bool,
) -> Result<Option<(Client, Hello)>, CliError> {
    match connect_socket(&paths.socket) {
        Ok(stream) => {
            // Before anything is sent (our environment, our terminal):
            // the listener must be ourselves.
            check_peer(&stream, &paths.socket)?;
            let waited = connect_timeout();
            // Socket options: set through any of the connection's
            // descriptors, they hold for all of them.
            let limit = |stream: &UnixStream, t: Option<Duration>| {
                stream
                    .set_read_timeout(t)
                    .and_then(|()| stream.set_write_timeout(t))
                    .map_err(|e| CliError::io("cannot use the daemon's socket", e))
            };
            limit(&stream, Some(waited))?;
            let mut client = Client::new(stream)?;
            let hello = (|| {
                if pass_stdio {
                    client.send_hello_with_stdio()?;
                }
                handshake(&mut client)
            })();
            let hello = match hello {
                // A daemon refusing this connection (out of descriptors, at
                // its connection limit) may have answered and closed before
                // our `hello` went out: its answer says why.
                Err(CliError::Disconnected(e)) => Err(refusal(&mut client)
                    .map(CliError::Remote)
                    .unwrap_or(CliError::Disconnected(e))),
                Err(CliError::TimedOut) => Err(CliError::NoAnswer {
                    socket: paths.socket.clone(),
                    waited,
                }),
                other => other,
            };
            if hello.is_ok() {
                // The handshake proved a live daemon: from here on a run
                // may be silent for as long as its tasks are.
                limit(client.reader.get_ref(), None)?;
            }
            match hello {
                Ok(hello) => Ok(Some((client, hello))),
                // A daemon killed a moment ago still had its socket open
                // and took our connection while dying: it is stale.
                Err(CliError::Disconnected(_)) if !lock_held(paths) => Ok(None),
                Err(e) => Err(e),
            }
        }
        Err(e) if is_not_there(&e) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Err(CliError::NoAnswer {
            socket: paths.socket.clone(),
            waited: connect_timeout(),
        }),
        Err(e) => Err(CliError::io(
            &format!("cannot connect to `{}`", paths.socket.display()),
            e,
        )),
    }
}

/// Connect to the socket, bounded by the connect timeout: a listener that
/// does not accept (a frozen daemon whose backlog is full) would block a
/// plain `connect` forever. Retried every 10 ms while the backlog is full.
fn connect_socket(path: &std::path::Path) -> std::io::Result<UnixStream> {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let addr = SocketAddrUnix::new(path)?;
    let deadline = Instant::now() + connect_timeout();
    loop {
        let fd = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )?;
        match rustix::net::connect(&fd, &addr) {
            Ok(()) => {
                let stream = UnixStream::from(fd);
                stream.set_nonblocking(false)?;
                return Ok(stream);
            }
            Err(rustix::io::Errno::AGAIN) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(rustix::io::Errno::AGAIN) => {
                return Err(std::io::ErrorKind::TimedOut.into());
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// `--no-daemon` or `TASKRUSH_DAEMON=0`.
pub fn no_daemon_requested(flag: bool) -> bool {
    flag || matches!(
        std::env::var("TASKRUSH_DAEMON").as_deref(),
        Ok("0" | "false" | "no" | "off")
    )
}

/// Connect to the daemon, starting it when none answers, replacing an
/// idle daemon of another version. With `pass_stdio`, our standard
/// descriptors travel with the first message. When no daemon can be
/// started, or one of another version is busy, fall back to a private
/// daemon for this invocation only (`--no-daemon`), with a warning.
pub fn connect(paths: &DaemonPaths, pass_stdio: bool, no_daemon: bool) -> Result<Client, CliError> {
    if no_daemon_requested(no_daemon) {
        return spawn_private(pass_stdio);
    }
    if paths.socket.as_os_str().len() > MAX_SOCKET_PATH {
        eprintln!(
            "taskrush: warning: the socket path `{}` is longer than {MAX_SOCKET_PATH} bytes; running without the daemon\n\
             hint: set TASKRUSH_SOCKET to a shorter path",
            paths.socket.display()
        );
        return spawn_private(pass_stdio);
    }
    let reason = match connect_with(paths, pass_stdio) {
        Ok(Some((client, hello))) if hello.version == VERSION => return Ok(client),
        // A daemon dying at this very moment (killed, or stopping) can
        // accept and then drop the connection: treat it as gone.
        Err(CliError::Disconnected(_)) => {
            wait_stopped(paths, Duration::from_secs(5));
            "started by `taskrush` (the previous daemon had just exited)".to_owned()
        }
        Ok(Some((mut client, hello))) => {
            let status: DaemonStatus = client.call(method::DAEMON_STATUS, serde_json::json!({}))?;
            if status.runs > 0 {
                eprintln!(
                    "taskrush: warning: the daemon is TaskRush {} (this is {VERSION}) and has {} run(s) in progress; \
                     running without it this time (it is replaced once idle)",
                    hello.version, status.runs
                );
                return spawn_private(pass_stdio);
            }
            let _: bool = client.call(method::DAEMON_STOP, serde_json::json!({}))?;
            drop(client);
            wait_stopped(paths, Duration::from_secs(10));
            format!(
                "replaced taskrushd {} (this taskrush is {VERSION})",
                hello.version
            )
        }
        Ok(None) => "started by `taskrush`".to_owned(),
        Err(CliError::Remote(e)) if e.code == taskrush_protocol::error::PROTOCOL_MISMATCH => {
            eprintln!(
                "taskrush: warning: the daemon speaks another protocol ({}); running without it this time\n\
                 hint: `taskrush daemon restart` replaces it",
                e.message
            );
            return spawn_private(pass_stdio);
        }
        Err(e) => return Err(e),
    };
    if let Err(e) = start_daemon(paths, &reason) {
        let first = e
            .render()
            .lines()
            .next()
            .unwrap_or_default()
            .trim_start_matches("error: ")
            .to_owned();
        // Say it once: as a warning when running without the daemon
        // works, as the error when that fails too.
        let private = spawn_private(pass_stdio).map_err(|_| e)?;
        eprintln!("taskrush: warning: {first}; running without the daemon");
        return Ok(private);
    }
    let deadline = Instant::now() + REBIND_WAIT;
    loop {
        match connect_with(paths, pass_stdio) {
            Ok(Some((c, _))) => return Ok(c),
            // The daemon that said "already running" was on its way out:
            // once its lock is free, start one again.
            Ok(None) if !lock_held(paths) && Instant::now() < deadline => {
                let _ = start_daemon(paths, &reason);
            }
            Err(CliError::Disconnected(_)) | Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
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

/// Whether a daemon still holds its lifetime lock (it is still running,
/// perhaps finishing its shutdown).
pub fn lock_held(paths: &DaemonPaths) -> bool {
    let Ok(f) = open_regular(&paths.lock) else {
        return false;
    };
    match f.try_lock_shared() {
        Ok(()) => {
            let _ = f.unlock();
            false
        }
        Err(std::fs::TryLockError::WouldBlock) => true,
        Err(std::fs::TryLockError::Error(_)) => false,
    }
}

/// Open the daemon's lock or log for reading: only a regular file, never
/// through a symlink, and never waiting (a FIFO planted in a shared
/// socket directory would block the open until someone writes to it).
pub fn open_regular(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits() as i32)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other(format!(
            "`{}` is not a regular file",
            path.display()
        )));
    }
    Ok(file)
}

/// Wait (bounded) until no daemon holds the lock. True if it was released.
pub fn wait_stopped(paths: &DaemonPaths, limit: Duration) -> bool {
    poll_until(limit, Duration::from_millis(10), || !lock_held(paths))
}

/// Check `done` every `every` until it holds (true) or `limit` passes.
fn poll_until(limit: Duration, every: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
    true
}

/// A daemon for this invocation only: `taskrushd --stdio` on one end of a
/// socket pair. Same code, same output and exit codes; it exits when we
/// close our end, and we wait for it, so no process is left behind.
fn spawn_private(pass_stdio: bool) -> Result<Client, CliError> {
    let (ours, theirs) =
        UnixStream::pair().map_err(|e| CliError::io("cannot create a socket pair", e))?;
    let exe = daemon_executable();
    let child = Command::new(&exe)
        .arg("--stdio")
        .arg("--started-because=for one `taskrush --no-daemon` invocation")
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| CliError::DaemonStart {
            reason: format!("cannot execute `{}`: {e}", exe.display()),
            log: DaemonPaths::from_env().log,
        })?;
    let mut client = Client::new(ours)?;
    client.private = Some(child);
    if pass_stdio {
        client.send_hello_with_stdio()?;
    }
    handshake(&mut client)?;
    Ok(client)
}

/// How long the CLI waits for a connected daemon to answer `hello`
/// (`TASKRUSH_CONNECT_TIMEOUT`, in seconds; default 10).
/// A value that is not a number of seconds above 0 is said once, and the
/// default used.
fn connect_timeout() -> Duration {
    static TIMEOUT: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *TIMEOUT.get_or_init(|| {
        let Ok(v) = std::env::var("TASKRUSH_CONNECT_TIMEOUT") else {
            return HANDSHAKE_TIMEOUT;
        };
        match v.trim().parse::<f64>() {
            Ok(s) if s.is_finite() && s > 0.0 => Duration::from_secs_f64(s.min(86_400.0)),
            _ => {
                eprintln!(
                    "taskrush: warning: invalid `TASKRUSH_CONNECT_TIMEOUT` value `{}`: expected seconds above 0; waiting {} s",
                    v.escape_debug(),
                    HANDSHAKE_TIMEOUT.as_secs()
                );
                HANDSHAKE_TIMEOUT
            }
        }
    })
}

/// Refuse a listener of another user (SO_PEERCRED gives the uid of the
/// process that bound the socket): with `TASKRUSH_SOCKET` in a shared
/// directory, someone else's listener would otherwise receive our
/// environment and our terminal.
fn check_peer(stream: &UnixStream, socket: &std::path::Path) -> Result<(), CliError> {
    let creds = rustix::net::sockopt::socket_peercred(stream).map_err(|e| {
        CliError::io(
            &format!("cannot check who owns the socket `{}`", socket.display()),
            e.into(),
        )
    })?;
    let ours = rustix::process::geteuid();
    if creds.uid != ours {
        return Err(CliError::ForeignSocket {
            socket: socket.to_path_buf(),
            uid: creds.uid.as_raw(),
        });
    }
    Ok(())
}

fn is_not_there(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
    )
}

fn hello_params() -> Value {
    serde_json::json!({"version": VERSION, "protocol": PROTOCOL_VERSION})
}

/// Say hello, unless `send_hello_with_stdio` already did, and check the
/// answer.
fn handshake(client: &mut Client) -> Result<Hello, CliError> {
    let id = match client.hello_sent.take() {
        Some(id) => id,
        None => client.send(method::HELLO, hello_params())?,
    };
    loop {
        // An error with a null id (read as 0; ours start at 1) is about
        // the connection itself, e.g. a daemon refusing one connection
        // too many: it answers `hello` too.
        if let Incoming::Response { id: got, result } = client.read()?
            && (got == id || (got == 0 && result.is_err()))
        {
            let value = result.map_err(CliError::Remote)?;
            return serde_json::from_str(value.get())
                .map_err(|e| CliError::Protocol(format!("unexpected answer to `hello`: {e}")));
        }
    }
}

/// An error with a null id already received: a daemon's refusal of the
/// whole connection, sent as soon as it accepted it.
fn refusal(client: &mut Client) -> Option<WireError> {
    match client.read() {
        Ok(Incoming::Response {
            id: 0,
            result: Err(e),
        }) => Some(e),
        _ => None,
    }
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
pub fn start_daemon(paths: &DaemonPaths, reason: &str) -> Result<(), CliError> {
    let exe = daemon_executable();
    let mut child = Command::new(&exe)
        .arg("--notify-ready")
        .arg("--started-because")
        .arg(reason)
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
