//! The router: raw events in, debounced file keys, session paths and
//! input generations out.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use notify::{Event, EventKind};
use taskrush_protocol::events::DaemonEvent;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::routes::Key;
use super::watcher::Watcher;

/// Quiet time after the last event before a file key is reported.
pub(super) const DEBOUNCE: Duration = Duration::from_millis(50);
/// Longest a file key waits under a constant stream of events.
pub(super) const MAX_DELAY: Duration = Duration::from_millis(1000);

/// The router: raw events in, debounced keys and session paths out.
pub(super) async fn route(
    w: Arc<Watcher>,
    mut raw: mpsc::Receiver<notify::Result<Event>>,
    out: mpsc::UnboundedSender<Key>,
) {
    // Key → (first event, last event) of the pending burst.
    let mut due: HashMap<Key, (Instant, Instant)> = HashMap::new();
    loop {
        let next = due
            .values()
            .map(|(first, last)| (*last + DEBOUNCE).min(*first + MAX_DELAY))
            .min();
        let ev = tokio::select! {
            ev = raw.recv() => ev,
            _ = sleep_until(next) => {
                let now = Instant::now();
                let ready: Vec<Key> = due
                    .iter()
                    .filter(|(_, (first, last))| (*last + DEBOUNCE).min(*first + MAX_DELAY) <= now)
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in ready {
                    due.remove(&k);
                    let _ = out.send(k);
                }
                continue;
            }
        };
        let Some(ev) = ev else { return };
        let now = Instant::now();
        let mut mark = |k: Key| {
            due.entry(k).and_modify(|e| e.1 = now).or_insert((now, now));
        };
        match ev {
            Ok(ev) if ev.need_rescan() => {
                tracing::warn!("the file watcher's event queue overflowed: rescanning everything");
                w.events.send(DaemonEvent::WatcherProblem {
                    message: "the file watcher's event queue overflowed: everything is rescanned"
                        .into(),
                });
                for k in w.all_keys() {
                    mark(k);
                }
                // Drop the watches first, then the clean keys: a check in
                // between must not get a ticket on the old watches.
                w.rewatch_all();
                w.routes().all_inputs_changed();
                for t in w.routes().trees.values() {
                    let _ = t.tx.send(t.root.clone());
                }
            }
            Ok(ev) if is_change(&ev.kind) => {
                let mut routes = w.routes();
                let mut rewatch = Vec::new();
                for p in &ev.paths {
                    if let Some(c) = &w.cookies
                        && p.parent() == Some(c.dir.as_path())
                    {
                        if let Some(n) = p.file_name().and_then(|n| n.to_str()?.parse::<u64>().ok())
                        {
                            c.seen.send_if_modified(|seen| {
                                let newer = n > *seen;
                                *seen = (*seen).max(n);
                                newer
                            });
                        }
                        continue;
                    }
                    // A watched directory replaced, or anything removed or
                    // renamed away (notify drops watches below it).
                    if routes.input_changed(p) || is_removal(&ev.kind) {
                        rewatch.push(p.clone());
                    }
                    if let Some(keys) = routes.by_file.get(p) {
                        for k in keys {
                            mark(k.clone());
                        }
                    }
                    for t in routes.trees.values() {
                        if p.starts_with(&t.root) && (t.filter)(p) {
                            let _ = t.tx.send(p.clone());
                        }
                    }
                }
                drop(routes);
                if !rewatch.is_empty() {
                    w.rewatch(&rewatch);
                }
            }
            Ok(_) => {}
            Err(e) if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) => {
                let dir = e.paths.first().cloned().unwrap_or_default();
                w.limit_reached(&dir);
            }
            Err(e) => tracing::debug!("file watcher: {e}"),
        }
    }
}

impl Watcher {
    /// Every file key, for a full rescan.
    pub(super) fn all_keys(&self) -> Vec<Key> {
        self.routes().files.keys().cloned().collect()
    }
}

/// Whether an event removes or renames away its path.
fn is_removal(kind: &EventKind) -> bool {
    use notify::event::{ModifyKind, RenameMode};
    matches!(
        kind,
        EventKind::Remove(_)
            | EventKind::Modify(ModifyKind::Name(
                RenameMode::From | RenameMode::Both | RenameMode::Any
            ))
    )
}

/// Whether an event can mean new content (opening or reading cannot).
fn is_change(kind: &EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
