//! The page's live feed: the daemon's event stream as server-sent events
//! (`GET /api/events`, guarded like every request). An open stream counts
//! as a client for idle shutdown; it ends when the page goes or the
//! daemon stops. A comment line every [`KEEPALIVE`] finds a page that
//! went away without closing.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::Frame;
use hyper::header;
use hyper::{Response, StatusCode};
use taskrush_protocol::events::DaemonEvent;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use super::server::Body;
use crate::api::Daemon;

/// A comment is sent this often on a quiet stream.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// One open page, as a client of the daemon while it lives.
struct OpenPage(Arc<Daemon>);

impl OpenPage {
    fn new(daemon: &Arc<Daemon>) -> OpenPage {
        daemon.clients.fetch_add(1, Ordering::Relaxed);
        OpenPage(daemon.clone())
    }
}

impl Drop for OpenPage {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// A body fed by a channel: the stream's frames as they come.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.get_mut()
            .0
            .poll_recv(cx)
            .map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

/// `GET /api/events`: `data: EVENT-JSON` per daemon event.
pub(super) fn stream(daemon: &Arc<Daemon>) -> Response<Body> {
    // Subscribed before answering: nothing after the answer is missed.
    let mut events = daemon.events.subscribe();
    let mut stopping = daemon.stopping.subscribe();
    let page = OpenPage::new(daemon);
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let _page = page;
        let mut keepalive = tokio::time::interval(KEEPALIVE);
        keepalive.tick().await;
        if tx.send(Bytes::from_static(b": open\n\n")).await.is_err() {
            return;
        }
        loop {
            let frame = tokio::select! {
                r = events.recv() => match r {
                    Ok(ev) => data(&ev),
                    Err(RecvError::Lagged(missed)) => data(&DaemonEvent::Lagged { missed }),
                    Err(RecvError::Closed) => return,
                },
                _ = keepalive.tick() => Bytes::from_static(b": keepalive\n\n"),
                _ = tx.closed() => return,
                _ = stopping.wait_for(|s| *s) => return,
            };
            if tx.send(frame).await.is_err() {
                return;
            }
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(ChannelBody(rx).boxed())
        .unwrap_or_else(|_| Response::new(super::server::empty()))
}

fn data(ev: &DaemonEvent) -> Bytes {
    let json = serde_json::to_string(ev).unwrap_or_else(|_| "{}".into());
    Bytes::from(format!("data: {json}\n\n"))
}
