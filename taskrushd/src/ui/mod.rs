//! The plugin manager page (`taskrush daemon ui`): an HTTP server on
//! 127.0.0.1, started by the first `ui_open` and kept until the daemon
//! stops, serving static assets embedded in the binary, a small JSON API
//! over the daemon's own method handlers, and the event stream as
//! server-sent events.
//!
//! Invariants:
//! - Nothing listens beyond loopback: the listener is bound to
//!   `127.0.0.1` only, on a port the kernel picks.
//! - Every request passes [`guard`] (token or cookie, `Host`, `Origin`,
//!   `Sec-Fetch-Site`) before any route sees it; actions are POSTs with a
//!   matching `Origin`.
//! - The page's routes call the same handlers as the socket's methods
//!   ([`crate::api::Api`]): no second implementation of any daemon
//!   behaviour lives here. Each action is written to the audit trail as a
//!   `ui_action` record (grants and revokes also write their own).
//! - The daemon never polls for the page: figures are computed when the
//!   page asks, and the event stream only forwards what is published.
//! - An open event stream counts as a client for idle shutdown.
//! - Everything stops when the daemon stops (the listener, connections,
//!   event streams).

mod assets;
pub(crate) mod guard;
mod recent;
mod routes;
mod server;
mod sse;

use std::sync::Arc;

use taskrush_protocol::daemon::UiOpened;

use crate::api::Daemon;

/// The page's server, once started.
#[derive(Default)]
pub(crate) struct Ui {
    /// Held across a start, so that two first calls start one server.
    running: tokio::sync::Mutex<Option<Arc<server::Server>>>,
}

/// `ui_open`: start the server unless it runs, and answer its address
/// with a fresh one-time token.
pub(crate) async fn open(daemon: &Arc<Daemon>) -> std::io::Result<UiOpened> {
    let mut running = daemon.ui.running.lock().await;
    let started = running.is_none();
    let server = match running.as_ref() {
        Some(server) => server.clone(),
        None => {
            let server = server::Server::start(daemon).await?;
            *running = Some(server.clone());
            server
        }
    };
    drop(running);
    let token = server.keys.new_token()?;
    Ok(UiOpened {
        url: format!("http://127.0.0.1:{}/?token={token}", server.port),
        port: server.port,
        started,
    })
}
