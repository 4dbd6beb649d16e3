//! The accept loop and the daemon's life: serve until asked to stop, then
//! remove the socket and stop the daemon's work (`shutdown`).
//!
//! The accept loop never waits on a client, a run or a plugin: every
//! connection is served by its own task.
//!
//! It also keeps the socket reachable: an inotify watch on the socket's
//! directory (deletions and renames only, so an idle daemon sleeps)
//! re-binds a deleted socket while the daemon still owns its lock, and
//! stops the daemon when the lock file or the directory itself is gone
//! (a logout removed the runtime directory): the next `taskrush` starts a
//! new daemon, and this one never unlinks that daemon's socket.

use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use interprocess::local_socket::tokio::{Listener, Stream};
use interprocess::local_socket::traits::StreamCommon as _;
use interprocess::local_socket::traits::tokio::Listener as _;
use jsonrpsee::Methods;
use taskrush_protocol::api::TaskRushApiServer;
use taskrush_protocol::paths::DaemonPaths;

use crate::api::{Api, Daemon};
use crate::server::listener::{self, FileId};
use crate::server::shutdown::shutdown;

/// Connections served at once (all are the same user's: others are
/// refused), unless `--max-connections` / `$TASKRUSH_MAX_CONNECTIONS`.
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Without inotify, how often the socket file is checked.
const SOCKET_POLL: Duration = Duration::from_secs(60);
/// Longest pause of the accept loop while out of file descriptors.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// The daemon's socket, as the accept loop owns it.
pub(crate) struct Socket<'a> {
    pub(crate) listener: Listener,
    /// The (device, inode) of the socket file bound.
    pub(crate) id: FileId,
    pub(crate) lock: &'a File,
    pub(crate) paths: DaemonPaths,
    pub(crate) max_connections: usize,
}

pub(crate) async fn serve(socket: Socket<'_>, daemon: Arc<Daemon>) {
    let Socket {
        mut listener,
        id: mut socket_id,
        lock,
        paths,
        max_connections,
    } = socket;
    let methods: Methods = Api(daemon.clone()).into_rpc().into();
    let my_uid = rustix::process::geteuid().as_raw();
    let mut stopping = daemon.stopping.subscribe();
    let mut terminate = signal(tokio::signal::unix::SignalKind::terminate());
    let mut interrupt = signal(tokio::signal::unix::SignalKind::interrupt());
    let mut watch = SocketWatch::new(&paths);
    let mut spare = Spare::open();
    let mut exhausted = Exhausted::default();
    loop {
        tokio::select! {
            conn = listener.accept() => match conn {
                Ok(stream) => {
                    exhausted.recovered();
                    if !peer_is(&stream, my_uid) {
                        continue;
                    }
                    let stream = match into_unix(stream) {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::warn!("cannot use an accepted connection: {e}");
                            continue;
                        }
                    };
                    if daemon.clients.load(Ordering::Relaxed) >= max_connections {
                        refuse(stream, &format!(
                            "too many connections: the daemon serves at most {max_connections} at once\n\
                             hint: close idle clients, or raise the limit with TASKRUSH_MAX_CONNECTIONS and `taskrush daemon restart`"
                        ), true);
                        continue;
                    }
                    daemon.clients.fetch_add(1, Ordering::Relaxed);
                    let methods = methods.clone();
                    let daemon = daemon.clone();
                    tokio::spawn(async move {
                        crate::server::connection::serve(stream, methods, daemon.stopping.subscribe()).await;
                        daemon.clients.fetch_sub(1, Ordering::Relaxed);
                        daemon.touch();
                        crate::memory::release_soon();
                    });
                }
                Err(e) if is_fd_exhaustion(&e) => {
                    // Free the spare descriptor to accept the waiting client
                    // and tell it why, rather than leaving it hanging. Only
                    // when no client could be taken does the loop pause
                    // (10 ms, doubling, at most 1 s) instead of spinning.
                    // Logged once per episode.
                    exhausted.failed(&e);
                    let mut refused = false;
                    if spare.release() {
                        if let Ok(Ok(stream)) =
                            tokio::time::timeout(Duration::from_millis(1), listener.accept()).await
                            && let Ok(stream) = into_unix(stream)
                        {
                            refuse(
                                stream,
                                "the daemon is out of file descriptors\n\
                                 hint: close idle clients; `taskrush daemon logs` says more",
                                false,
                            );
                            refused = true;
                        }
                        spare = Spare::open();
                    }
                    if !refused {
                        tokio::time::sleep(exhausted.backoff()).await;
                    }
                }
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = watch.changed() => {
                if !listener::lock_is_ours(&paths, lock) {
                    tracing::warn!(
                        "the lock file `{}` was removed or replaced (its directory removed?): stopping; the next `taskrush` starts a new daemon",
                        paths.lock.display()
                    );
                    break;
                }
                if listener::file_id(&paths.socket) != Some(socket_id) {
                    match listener::rebind(&paths) {
                        Ok((l, id)) => {
                            tracing::warn!("the socket `{}` was removed or replaced: listening again", paths.socket.display());
                            listener = l;
                            socket_id = id;
                        }
                        Err(e) => {
                            tracing::error!("the socket `{}` was removed and cannot be bound again, stopping: {e}", paths.socket.display());
                            break;
                        }
                    }
                }
            }
            _ = stopping.wait_for(|s| *s) => break,
            _ = idle_check(&daemon) => {
                tracing::info!("idle for {:?} with no clients and no runs: stopping", daemon.options.idle_timeout.unwrap_or_default());
                break;
            }
            _ = terminate.recv() => { tracing::info!("SIGTERM: stopping"); break }
            _ = interrupt.recv() => { tracing::info!("SIGINT: stopping"); break }
        }
    }
    daemon.stopping.send_replace(true);
    // Stop accepting; remove the socket file only if it is still ours.
    drop(listener);
    listener::unlink_own_socket(&paths, lock, socket_id);
    shutdown(&daemon).await;
    // Give the last events a moment to reach their clients.
    tokio::time::sleep(Duration::from_millis(50)).await;
    tracing::info!("stopped");
}

/// Resolves once the daemon has been idle (no clients, no runs) for its
/// idle timeout; never when it has none. Checks a few times per timeout,
/// at most every 30 s: idle shutdown need not be punctual.
async fn idle_check(daemon: &Daemon) {
    let Some(limit) = daemon.options.idle_timeout else {
        return std::future::pending().await;
    };
    let tick = (limit / 4).clamp(Duration::from_millis(10), Duration::from_secs(30));
    loop {
        tokio::time::sleep(tick).await;
        if daemon.idle_for().is_some_and(|idle| idle >= limit) {
            return;
        }
    }
}

/// The accepted local socket as a tokio `UnixStream`, for `recvmsg` (the
/// daemon is Unix-only: process groups, signals, descriptor passing).
fn into_unix(stream: Stream) -> std::io::Result<tokio::net::UnixStream> {
    match stream {
        Stream::UdSocket(s) => {
            let fd = std::os::fd::OwnedFd::try_from(s)?;
            let std = std::os::unix::net::UnixStream::from(fd);
            std.set_nonblocking(true)?;
            tokio::net::UnixStream::from_std(std)
        }
    }
}

/// Answer a connection that will not be served with one JSON-RPC error
/// (`id: null`) in the client's framing, so its client can say why. With
/// `linger`, the client's first bytes are awaited for a moment (they tell
/// its framing) and what it sent is read and dropped for a moment after
/// the answer (closing with unread data would reset the connection and
/// lose the answer); without, the framing is told from what already
/// arrived and the descriptor is given back at once.
fn refuse(stream: tokio::net::UnixStream, message: &str, linger: bool) {
    let body = crate::server::connection::error_json(
        jsonrpsee::types::Id::Null,
        taskrush_protocol::error::BUSY,
        message,
    );
    // The socket buffer of a new connection is empty: this short write
    // completes at once (the reactor has not seen it writable yet, so
    // `try_write` would not even try).
    let send = move |stream: &tokio::net::UnixStream| {
        let framed = peeked_framing(stream).encode(body.get().as_bytes());
        let _ = rustix::net::send(stream, &framed, rustix::net::SendFlags::NOSIGNAL);
    };
    if !linger {
        send(&stream);
        return;
    }
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt as _;
        let mut stream = stream;
        let _ = tokio::time::timeout(Duration::from_millis(200), stream.readable()).await;
        send(&stream);
        let _ = rustix::net::shutdown(&stream, rustix::net::Shutdown::Write);
        let mut sink = [0u8; 1024];
        let drain = async {
            let mut total = 0usize;
            while let Ok(n) = stream.read(&mut sink).await {
                total += n;
                if n == 0 || total > 64 * 1024 {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_millis(500), drain).await;
    });
}

/// The framing of a client, told from the bytes it already sent (left
/// unread); newline-delimited when it sent nothing yet.
fn peeked_framing(stream: &tokio::net::UnixStream) -> crate::server::transport::Framing {
    use rustix::net::RecvFlags;
    let mut first = [0u8; 64];
    let got = rustix::net::recv(stream, &mut first, RecvFlags::PEEK | RecvFlags::DONTWAIT)
        .map(|(n, _)| n)
        .unwrap_or(0);
    crate::server::transport::framing_of(&first[..got])
        .unwrap_or(crate::server::transport::Framing::Lines)
}

/// EMFILE, ENFILE (and ENOBUFS/ENOMEM): the process or the system is out
/// of descriptors or memory for sockets.
fn is_fd_exhaustion(e: &std::io::Error) -> bool {
    use rustix::io::Errno;
    let code = e.raw_os_error();
    [Errno::MFILE, Errno::NFILE, Errno::NOBUFS, Errno::NOMEM]
        .iter()
        .any(|errno| code == Some(errno.raw_os_error()))
}

/// One descriptor kept in reserve, released to accept (and refuse) a
/// client when the process is out of descriptors.
struct Spare(Option<File>);

impl Spare {
    fn open() -> Spare {
        Spare(File::open("/dev/null").ok())
    }

    /// Close the spare descriptor; false if there was none.
    fn release(&mut self) -> bool {
        self.0.take().is_some()
    }
}

/// Failed accepts, logged when an episode starts and when it ends (with
/// how many failed), each at most once a minute: a daemon at its limit,
/// where a closing descriptor lets one accept through now and then, logs
/// two lines a minute, not one per failure.
#[derive(Default)]
struct Exhausted {
    /// Failures not yet reported, since `since`.
    failures: u64,
    since: Option<std::time::Instant>,
    in_episode: bool,
    /// The latest episode's first failure, backing off from it.
    streak: u32,
    logged_start: Option<std::time::Instant>,
    logged_end: Option<std::time::Instant>,
}

const EXHAUSTED_LOG_EVERY: Duration = Duration::from_secs(60);

fn due(last: Option<std::time::Instant>) -> bool {
    last.is_none_or(|t| t.elapsed() >= EXHAUSTED_LOG_EVERY)
}

impl Exhausted {
    fn failed(&mut self, e: &std::io::Error) {
        if !self.in_episode {
            self.in_episode = true;
            self.streak = 0;
            self.since.get_or_insert_with(std::time::Instant::now);
            if due(self.logged_start) {
                tracing::warn!(
                    "accept failed: {e}; refusing new connections until some close (logged at most once a minute; the count follows)"
                );
                self.logged_start = Some(std::time::Instant::now());
            }
        }
        self.failures += 1;
        self.streak = self.streak.saturating_add(1);
    }

    /// Pause after a failed accept that took no client.
    fn backoff(&self) -> Duration {
        let exp = self.streak.saturating_sub(1).min(7);
        (Duration::from_millis(10) * 2u32.pow(exp)).min(MAX_ACCEPT_BACKOFF)
    }

    fn recovered(&mut self) {
        if !self.in_episode {
            return;
        }
        self.in_episode = false;
        if due(self.logged_end) {
            tracing::warn!(
                failures = self.failures,
                "accepting connections again after {} failed accepts over {:?}",
                self.failures,
                self.since.map(|s| s.elapsed()).unwrap_or_default()
            );
            self.logged_end = Some(std::time::Instant::now());
            self.failures = 0;
            self.since = None;
        }
    }
}

/// Wakes the accept loop when the socket's directory loses or replaces
/// an entry named like the socket or the lock, or is itself removed or
/// moved. Creations and writes are not watched, so the log beside an
/// explicit socket does not wake the daemon. Without inotify, a rare poll.
struct SocketWatch {
    fd: Option<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>>,
    names: [std::ffi::OsString; 2],
}

impl SocketWatch {
    fn new(paths: &DaemonPaths) -> SocketWatch {
        use rustix::fs::inotify;
        let names = [&paths.socket, &paths.lock]
            .map(|p| p.file_name().map(|n| n.to_owned()).unwrap_or_default());
        let fd = (|| {
            let fd = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)?;
            inotify::add_watch(
                &fd,
                &paths.dir,
                inotify::WatchFlags::DELETE
                    | inotify::WatchFlags::MOVED_FROM
                    | inotify::WatchFlags::MOVED_TO
                    | inotify::WatchFlags::DELETE_SELF
                    | inotify::WatchFlags::MOVE_SELF
                    | inotify::WatchFlags::ONLYDIR,
            )?;
            Ok::<_, rustix::io::Errno>(fd)
        })();
        // `AsyncFd::new` is deprecated for descriptors it does not own; this
        // one is an `OwnedFd` that moves into it, which is the sound case
        // (`register`, the replacement, is `unsafe`, denied here).
        #[allow(deprecated)]
        let registered = fd
            .map_err(std::io::Error::from)
            .and_then(tokio::io::unix::AsyncFd::new);
        let fd = match registered {
            Ok(fd) => Some(fd),
            Err(e) => {
                tracing::warn!(
                    "cannot watch the socket directory `{}` ({e}): checking the socket every {}s",
                    paths.dir.display(),
                    SOCKET_POLL.as_secs()
                );
                None
            }
        };
        SocketWatch { fd, names }
    }

    /// Resolves when the socket or the lock may have gone.
    async fn changed(&mut self) {
        use std::os::unix::ffi::OsStrExt as _;
        let Some(fd) = &self.fd else {
            return tokio::time::sleep(SOCKET_POLL).await;
        };
        loop {
            let Ok(mut guard) = fd.readable().await else {
                return std::future::pending().await;
            };
            let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
            let mut reader = rustix::fs::inotify::Reader::new(guard.get_inner(), &mut buf);
            let mut relevant = false;
            let broken = loop {
                match reader.next() {
                    Ok(ev) => {
                        relevant |= match ev.file_name() {
                            Some(name) => {
                                self.names.iter().any(|n| n.as_bytes() == name.to_bytes())
                            }
                            // Events on the directory itself (removed, moved).
                            None => true,
                        };
                    }
                    Err(rustix::io::Errno::AGAIN) => {
                        guard.clear_ready();
                        break false;
                    }
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(_) => break true,
                }
            };
            if broken {
                // Unreadable: check now, then fall back to the rare poll.
                self.fd = None;
                return;
            }
            if relevant {
                return;
            }
        }
    }
}

/// Serve a single connection (`taskrushd --stdio`), then cancel what is
/// left and return.
pub(crate) async fn serve_one(stream: tokio::net::UnixStream, daemon: Arc<Daemon>) {
    let methods: Methods = Api(daemon.clone()).into_rpc().into();
    daemon.clients.fetch_add(1, Ordering::Relaxed);
    crate::server::connection::serve(stream, methods, daemon.stopping.subscribe()).await;
    shutdown(&daemon).await;
}

fn signal(kind: tokio::signal::unix::SignalKind) -> tokio::signal::unix::Signal {
    match tokio::signal::unix::signal(kind) {
        Ok(s) => s,
        // Only fails if the signal driver cannot be set up at all, which
        // makes the runtime unusable anyway.
        Err(e) => panic!("cannot install a signal handler: {e}"),
    }
}

/// Refuse peers of another user (SO_PEERCRED). The socket is 0600 in a
/// 0700 directory already; this holds even if someone loosens those.
fn peer_is(stream: &Stream, uid: u32) -> bool {
    match stream.peer_creds() {
        Ok(creds) => match creds.euid() {
            Some(peer) if peer == uid => true,
            Some(peer) => {
                tracing::warn!(peer_uid = peer, "refused a connection from another user");
                false
            }
            None => true,
        },
        Err(e) => {
            tracing::warn!("cannot read the peer's credentials, refusing: {e}");
            false
        }
    }
}
