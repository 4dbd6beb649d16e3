//! `run --watch` sessions: a recursive watch of a project's tree, every
//! matching changed path sent to the session; a polling watcher when no
//! native watch can be had.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{Event, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

use super::watcher::Watcher;

/// Poll interval of the fallback watcher of a `--watch` session.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Decides whether a changed path is of interest to a session.
pub(crate) type PathFilter = Arc<dyn Fn(&Path) -> bool + Send + Sync>;

pub(super) struct Tree {
    pub(super) root: PathBuf,
    pub(super) filter: PathFilter,
    pub(super) tx: mpsc::UnboundedSender<PathBuf>,
}

impl Watcher {
    /// Watch the tree under `root` for a `run --watch` session: every
    /// changed path that `filter` accepts is sent on the receiver (the
    /// root itself after an overflow: "anything may have changed"). The
    /// watch ends when the returned guard is dropped.
    pub(crate) async fn watch_tree(
        self: &Arc<Self>,
        root: PathBuf,
        filter: PathFilter,
    ) -> (TreeGuard, mpsc::UnboundedReceiver<PathBuf>) {
        let id = self
            .next_session
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        self.routes().trees.insert(
            id,
            Tree {
                root: root.clone(),
                filter: filter.clone(),
                tx: tx.clone(),
            },
        );
        let me = self.clone();
        let applied = tokio::task::spawn_blocking(move || me.apply())
            .await
            .unwrap_or(false);
        let covered = self
            .applied()
            .iter()
            .any(|(p, a)| a.recursive && root.starts_with(p));
        let mut guard = TreeGuard {
            watcher: self.clone(),
            id,
            _poll: None,
        };
        if !applied || !covered {
            tracing::warn!(root = %root.display(), "no native watch for `run --watch`: polling every {:?}", POLL_INTERVAL);
            guard._poll = poll_tree(&root, filter, tx);
        }
        (guard, rx)
    }
}

/// Ends a `run --watch` session's watch when dropped.
pub(crate) struct TreeGuard {
    watcher: Arc<Watcher>,
    id: u64,
    _poll: Option<notify::PollWatcher>,
}

impl Drop for TreeGuard {
    fn drop(&mut self) {
        self.watcher.routes().trees.remove(&self.id);
        if tokio::runtime::Handle::try_current().is_ok() {
            self.watcher.apply_soon();
        }
    }
}

/// The fallback for a session without a native watch.
fn poll_tree(
    root: &Path,
    filter: PathFilter,
    tx: mpsc::UnboundedSender<PathBuf>,
) -> Option<notify::PollWatcher> {
    let config = notify::Config::default().with_poll_interval(POLL_INTERVAL);
    let mut w = notify::PollWatcher::new(
        move |ev: notify::Result<Event>| {
            if let Ok(ev) = ev {
                for p in ev.paths {
                    if filter(&p) {
                        let _ = tx.send(p);
                    }
                }
            }
        },
        config,
    )
    .ok()?;
    w.watch(root, RecursiveMode::Recursive).ok()?;
    Some(w)
}
