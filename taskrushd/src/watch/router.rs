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

/// The pending bursts of file keys: a key is due [`DEBOUNCE`] after its
/// last event, at most [`MAX_DELAY`] after its first.
#[derive(Default)]
pub(super) struct Debounce {
    /// Key → (first event, last event) of the pending burst.
    due: HashMap<Key, (Instant, Instant)>,
}

impl Debounce {
    /// An event for `key` at `now`.
    pub(super) fn mark(&mut self, key: Key, now: Instant) {
        self.due
            .entry(key)
            .and_modify(|e| e.1 = now)
            .or_insert((now, now));
    }

    /// When the next key is due, if any is pending.
    pub(super) fn next(&self) -> Option<Instant> {
        self.due.values().map(|b| Self::due_at(*b)).min()
    }

    /// The keys due at `now`, no longer pending.
    pub(super) fn take_ready(&mut self, now: Instant) -> Vec<Key> {
        let ready: Vec<Key> = self
            .due
            .iter()
            .filter(|(_, b)| Self::due_at(**b) <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &ready {
            self.due.remove(k);
        }
        ready
    }

    fn due_at((first, last): (Instant, Instant)) -> Instant {
        (last + DEBOUNCE).min(first + MAX_DELAY)
    }
}

/// The router: raw events in, debounced keys and session paths out.
pub(super) async fn route(
    w: Arc<Watcher>,
    mut raw: mpsc::Receiver<notify::Result<Event>>,
    out: mpsc::UnboundedSender<Key>,
) {
    let mut due = Debounce::default();
    loop {
        let ev = tokio::select! {
            ev = raw.recv() => ev,
            _ = sleep_until(due.next()) => {
                for k in due.take_ready(Instant::now()) {
                    let _ = out.send(k);
                }
                continue;
            }
        };
        let Some(ev) = ev else { return };
        let now = Instant::now();
        let mut mark = |k: Key| due.mark(k, now);
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
                // Drop the watches first, then bump the generations: a check
                // in between must not get a ticket on the old watches.
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use notify::event::{AccessKind, AccessMode, DataChange, Flag, ModifyKind};

    use super::*;
    use crate::event_bus::Events;
    use crate::watch::inputs::Inputs;
    use crate::watch::trees::Tree;

    /// A watcher without notify, its router fed by hand.
    fn router(
        cookie_dir: Option<&str>,
    ) -> (
        Arc<Watcher>,
        mpsc::Sender<notify::Result<Event>>,
        mpsc::UnboundedReceiver<Key>,
    ) {
        let w = Watcher::new(None, None, Events::default(), cookie_dir.map(PathBuf::from));
        let (raw_tx, raw_rx) = mpsc::channel(64);
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        tokio::spawn(route(w.clone(), raw_rx, out_tx));
        (w, raw_tx, out_rx)
    }

    fn register(w: &Watcher, key: &Key, file: &str) {
        let mut r = w.routes();
        r.files.insert(key.clone(), vec![PathBuf::from(file)]);
        r.reindex();
    }

    fn written(path: &str) -> notify::Result<Event> {
        Ok(
            Event::new(EventKind::Modify(ModifyKind::Data(DataChange::Content)))
                .add_path(path.into()),
        )
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    async fn send(raw: &mpsc::Sender<notify::Result<Event>>, ev: notify::Result<Event>) {
        raw.send(ev).await.expect("the router is running");
    }

    /// Nothing more is reported, however long one waits.
    async fn assert_quiet(out: &mut mpsc::UnboundedReceiver<Key>) {
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(out.try_recv().ok(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_saves_is_reported_once_the_quiet_time_after_the_last() {
        let (w, raw, mut out) = router(None);
        let key = Key::Config("/p/.rush".into());
        register(&w, &key, "/p/.rush");
        let t0 = Instant::now();
        for _ in 0..3 {
            send(&raw, written("/p/.rush")).await;
            tokio::time::sleep(ms(30)).await;
        }
        assert_eq!(out.recv().await, Some(key));
        assert_eq!(Instant::now() - t0, ms(60) + DEBOUNCE);
        assert_quiet(&mut out).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_constant_stream_of_saves_is_reported_at_most_the_longest_delay_after_the_first() {
        let (w, raw, mut out) = router(None);
        let key = Key::Config("/p/.rush".into());
        register(&w, &key, "/p/.rush");
        let t0 = Instant::now();
        let stream_raw = raw.clone();
        let stream = tokio::spawn(async move {
            for _ in 0..50 {
                send(&stream_raw, written("/p/.rush")).await;
                tokio::time::sleep(ms(30)).await;
            }
        });
        assert_eq!(out.recv().await, Some(key.clone()));
        assert_eq!(Instant::now() - t0, MAX_DELAY);
        // The rest of the stream is the next burst.
        assert_eq!(out.recv().await, Some(key));
        stream.await.expect("the stream ends");
        drop(raw);
    }

    #[tokio::test(start_paused = true)]
    async fn each_key_is_debounced_on_its_own() {
        let (w, raw, mut out) = router(None);
        let a = Key::Config("/a/.rush".into());
        let b = Key::Plugin("/b".into(), "x".into());
        register(&w, &a, "/a/.rush");
        register(&w, &b, "/b/.rush-plugins/x/plugin.toml");
        let t0 = Instant::now();
        send(&raw, written("/a/.rush")).await;
        tokio::time::sleep(ms(30)).await;
        send(&raw, written("/b/.rush-plugins/x/plugin.toml")).await;
        assert_eq!(out.recv().await, Some(a));
        assert_eq!(Instant::now() - t0, DEBOUNCE);
        assert_eq!(out.recv().await, Some(b));
        assert_eq!(Instant::now() - t0, ms(30) + DEBOUNCE);
    }

    #[tokio::test(start_paused = true)]
    async fn other_files_of_the_directory_and_reads_are_not_reported() {
        let (w, raw, mut out) = router(None);
        let key = Key::Config("/p/.rush".into());
        register(&w, &key, "/p/.rush");
        send(&raw, written("/p/.rush.swp")).await;
        send(&raw, written("/p/sub/.rush")).await;
        for access in [
            AccessKind::Open(AccessMode::Any),
            AccessKind::Close(AccessMode::Read),
        ] {
            send(
                &raw,
                Ok(Event::new(EventKind::Access(access)).add_path("/p/.rush".into())),
            )
            .await;
        }
        assert_quiet(&mut out).await;
        // Closing after writing is a change.
        send(
            &raw,
            Ok(
                Event::new(EventKind::Access(AccessKind::Close(AccessMode::Write)))
                    .add_path("/p/.rush".into()),
            ),
        )
        .await;
        assert_eq!(out.recv().await, Some(key));
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_tree_gets_every_path_its_filter_accepts_at_once() {
        let (w, raw, mut out) = router(None);
        let (tx, mut paths) = mpsc::unbounded_channel();
        w.routes().trees.insert(
            1,
            Tree {
                root: "/p".into(),
                filter: Arc::new(|p| p.extension().is_some_and(|e| e == "rs")),
                tx,
            },
        );
        let t0 = Instant::now();
        send(&raw, written("/p/src/main.rs")).await;
        send(&raw, written("/p/README.md")).await;
        send(&raw, written("/elsewhere/lib.rs")).await;
        assert_eq!(paths.recv().await, Some(PathBuf::from("/p/src/main.rs")));
        assert_eq!(Instant::now(), t0, "sessions debounce themselves");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(paths.try_recv().ok(), None);
        assert_quiet(&mut out).await;
    }

    #[tokio::test(start_paused = true)]
    async fn an_overflow_reports_every_key_every_tree_root_and_bumps_every_input_generation() {
        let (w, raw, mut out) = router(None);
        let a = Key::Config("/a/.rush".into());
        let b = Key::Config("/b/.rush".into());
        register(&w, &a, "/a/.rush");
        register(&w, &b, "/b/.rush");
        let (tx, mut paths) = mpsc::unbounded_channel();
        let inputs = Key::Inputs("/c".into(), "build".into());
        {
            let mut r = w.routes();
            r.trees.insert(
                1,
                Tree {
                    root: "/t".into(),
                    filter: Arc::new(|_| false),
                    tx,
                },
            );
            let generation = r.next_generation();
            r.inputs.insert(
                inputs.clone(),
                Inputs {
                    dirs: vec!["/c/src".into()],
                    generation,
                },
            );
            r.reindex();
        }
        let before = w.routes().inputs[&inputs].generation;
        send(
            &raw,
            Ok(Event::new(EventKind::Other).set_flag(Flag::Rescan)),
        )
        .await;
        let mut got = vec![out.recv().await, out.recv().await];
        got.sort_by_key(|k| format!("{k:?}"));
        assert_eq!(got, [Some(a), Some(b)]);
        assert_eq!(paths.recv().await, Some(PathBuf::from("/t")));
        let r = w.routes();
        assert!(r.inputs[&inputs].generation > before);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cookie_event_is_counted_and_reaches_no_key() {
        let (w, raw, mut out) = router(Some("/run/cookies.1"));
        let seen = w
            .cookies
            .as_ref()
            .expect("cookies configured")
            .seen
            .subscribe();
        let key = Key::Config("/run/cookies.1/3".into());
        register(&w, &key, "/run/cookies.1/3");
        send(&raw, written("/run/cookies.1/3")).await;
        send(&raw, written("/run/cookies.1/2")).await;
        send(&raw, written("/run/cookies.1/junk")).await;
        assert_quiet(&mut out).await;
        assert_eq!(*seen.borrow(), 3, "the highest cookie routed, never lower");
    }

    #[test]
    fn a_key_is_due_the_quiet_time_after_its_last_event_at_most_the_longest_delay_after_its_first()
    {
        let t0 = Instant::now();
        let key = Key::Config("/p/.rush".into());
        let mut d = Debounce::default();
        assert_eq!(d.next(), None);
        d.mark(key.clone(), t0);
        assert_eq!(d.next(), Some(t0 + DEBOUNCE));
        d.mark(key.clone(), t0 + ms(40));
        assert_eq!(d.next(), Some(t0 + ms(40) + DEBOUNCE));
        assert_eq!(d.take_ready(t0 + ms(89)), []);
        d.mark(key.clone(), t0 + MAX_DELAY - ms(10));
        assert_eq!(d.next(), Some(t0 + MAX_DELAY));
        assert_eq!(d.take_ready(t0 + MAX_DELAY), [key]);
        assert_eq!(d.next(), None);
    }
}
