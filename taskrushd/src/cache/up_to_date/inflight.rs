//! Cached tasks in progress, daemon-wide: one instance of a cached task
//! (per project root and task name) runs at a time.
//!
//! The concurrency rule for tasks with `cache_files`: a run that finds the
//! task already running in another run (or in a watch session) waits for
//! that instance to end, then checks the cache again. When the inputs,
//! command and environment it would run with are those of the instance it
//! waited for, and that instance succeeded, the check finds the key stored
//! and the task is reported cached (the runs are joined); otherwise the
//! task runs. Tasks without `cache_files` are not registered: they run as
//! asked, concurrently if asked twice.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

/// A project root and a task name.
type Slot = (PathBuf, String);

/// Set to `true` when the instance ends.
type Ended = Arc<watch::Sender<bool>>;

/// The registry of running cached tasks.
#[derive(Default)]
pub(crate) struct Inflight {
    running: Mutex<HashMap<Slot, Ended>>,
}

/// What [`Inflight::claim`] found.
pub(crate) enum Claimed {
    /// The task is ours to run until the claim is dropped.
    Mine(Claim),
    /// Another instance runs it: changes to `true` when it ended.
    Running(watch::Receiver<bool>),
}

/// The right to run a cached task; released (and the waiters woken) on drop.
pub(crate) struct Claim {
    inflight: Arc<Inflight>,
    slot: Slot,
    ended: Ended,
}

impl Inflight {
    pub(crate) fn new() -> Arc<Inflight> {
        Arc::new(Inflight::default())
    }

    /// Claims `task` of the project at `root`, unless another instance of
    /// it is running.
    pub(crate) fn claim(self: &Arc<Self>, root: &Path, task: &str) -> Claimed {
        let slot = (root.to_path_buf(), task.to_owned());
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(ended) = running.get(&slot) {
            return Claimed::Running(ended.subscribe());
        }
        let ended = Arc::new(watch::channel(false).0);
        running.insert(slot.clone(), ended.clone());
        Claimed::Mine(Claim {
            inflight: self.clone(),
            slot,
            ended,
        })
    }

    /// Number of cached tasks running.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut running = self
            .inflight
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if running
            .get(&self.slot)
            .is_some_and(|e| Arc::ptr_eq(e, &self.ended))
        {
            running.remove(&self.slot);
        }
        drop(running);
        self.ended.send_replace(true);
    }
}

/// Waits until the instance behind `ended` has ended.
pub(crate) async fn wait_ended(mut ended: watch::Receiver<bool>) {
    // An error means the sender is gone: ended too.
    let _ = ended.wait_for(|done| *done).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_claim_waits_for_the_first_to_be_dropped() {
        let inflight = Inflight::new();
        let root = Path::new("/p");
        let Claimed::Mine(first) = inflight.claim(root, "build") else {
            panic!("the first claim is ours");
        };
        let Claimed::Running(ended) = inflight.claim(root, "build") else {
            panic!("the second finds the first running");
        };
        assert!(matches!(inflight.claim(root, "test"), Claimed::Mine(_)));
        assert!(matches!(
            inflight.claim(Path::new("/q"), "build"),
            Claimed::Mine(_)
        ));
        let waiter = tokio::spawn(wait_ended(ended));
        drop(first);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("joined");
        assert_eq!(inflight.len(), 0);
        assert!(matches!(inflight.claim(root, "build"), Claimed::Mine(_)));
    }
}
