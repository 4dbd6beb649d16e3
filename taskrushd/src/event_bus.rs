//! The daemon's global event stream: a broadcast channel that runs, the
//! config loader, the plugin host and the watcher publish into, and the
//! `events` subscription that streams it to editors and scripts.
//!
//! Publishing never waits: a subscriber that falls more than [`CAPACITY`]
//! events behind loses the oldest ones and is told so with a `lagged`
//! event; runs and other subscribers are not slowed down.

use jsonrpsee::PendingSubscriptionSink;
use taskrush_protocol::events::DaemonEvent;
use tokio::sync::broadcast;

/// Events kept for a slow subscriber before it lags.
pub(crate) const CAPACITY: usize = 1024;

/// The sending side, cheap to clone.
#[derive(Clone)]
pub(crate) struct Events(broadcast::Sender<DaemonEvent>);

impl Default for Events {
    fn default() -> Self {
        Events(broadcast::channel(CAPACITY).0)
    }
}

impl Events {
    /// Publish an event; nobody listening is fine.
    pub(crate) fn send(&self, ev: DaemonEvent) {
        let _ = self.0.send(ev);
    }

    /// A receiver of every event published from now on (the page's
    /// server-sent events and its list of recent runs).
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<DaemonEvent> {
        self.0.subscribe()
    }

    /// Whether anyone listens (to skip building events nobody reads).
    pub(crate) fn has_subscribers(&self) -> bool {
        self.0.receiver_count() > 0
    }

    /// Serve one `events` subscription until the client leaves or the
    /// daemon stops. The receiver exists before the subscription is
    /// answered, so a client that has its subscription id misses nothing
    /// that happens afterwards.
    pub(crate) async fn serve(
        &self,
        pending: PendingSubscriptionSink,
        mut stopping: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut rx = self.0.subscribe();
        let Ok(sink) = pending.accept().await else {
            return;
        };
        loop {
            let ev = tokio::select! {
                r = rx.recv() => r,
                _ = sink.closed() => return,
                _ = stopping.wait_for(|s| *s) => return,
            };
            let ev = match ev {
                Ok(ev) => ev,
                Err(broadcast::error::RecvError::Lagged(missed)) => DaemonEvent::Lagged { missed },
                Err(broadcast::error::RecvError::Closed) => return,
            };
            let Ok(msg) = serde_json::value::to_raw_value(&ev) else {
                continue;
            };
            if sink.send(msg).await.is_err() {
                return;
            }
        }
    }
}
