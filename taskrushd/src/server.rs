//! The accept loop and the daemon's life: serve until asked to stop, then
//! cancel runs, let them finish (bounded) and remove the socket.
//!
//! The accept loop never waits on a client, a run or a plugin: every
//! connection is served by its own task.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use interprocess::local_socket::tokio::{Listener, Stream};
use interprocess::local_socket::traits::StreamCommon as _;
use interprocess::local_socket::traits::tokio::Listener as _;
use jsonrpsee::Methods;
use taskrush_protocol::api::TaskRushApiServer;

use crate::daemon::Daemon;
use crate::runner::Cancel;

/// How long running tasks get to stop when the daemon stops.
const STOP_GRACE: Duration = Duration::from_secs(5);

pub async fn serve(listener: Listener, daemon: Arc<Daemon>) {
    let methods: Methods = crate::daemon::Api(daemon.clone()).into_rpc().into();
    let my_uid = rustix::process::geteuid().as_raw();
    let mut stopping = daemon.stopping.subscribe();
    let mut terminate = signal(tokio::signal::unix::SignalKind::terminate());
    let mut interrupt = signal(tokio::signal::unix::SignalKind::interrupt());
    loop {
        tokio::select! {
            conn = listener.accept() => match conn {
                Ok(stream) => {
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
                    let methods = methods.clone();
                    let daemon = daemon.clone();
                    tokio::spawn(async move {
                        daemon.clients.fetch_add(1, Ordering::Relaxed);
                        crate::connection::serve(stream, methods).await;
                        daemon.clients.fetch_sub(1, Ordering::Relaxed);
                        daemon.touch();
                    });
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
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
    drop(listener); // stop accepting; the socket file goes with it
    daemon.cancel_all(Cancel::Interrupt);
    let deadline = tokio::time::Instant::now() + STOP_GRACE;
    while daemon.active_runs() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if daemon.active_runs() > 0 {
        daemon.cancel_all(Cancel::Kill);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while daemon.active_runs() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    // Plugins last: the runs' final hooks may still have called them.
    daemon.plugins.shutdown_all().await;
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

/// Serve a single connection (`taskrushd --stdio`), then cancel what is
/// left and return.
pub async fn serve_one(stream: tokio::net::UnixStream, daemon: Arc<Daemon>) {
    let methods: Methods = crate::daemon::Api(daemon.clone()).into_rpc().into();
    daemon.clients.fetch_add(1, Ordering::Relaxed);
    crate::connection::serve(stream, methods).await;
    daemon.stopping.send_replace(true);
    daemon.cancel_all(Cancel::Interrupt);
    let deadline = tokio::time::Instant::now() + STOP_GRACE;
    while daemon.active_runs() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    daemon.plugins.shutdown_all().await;
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
