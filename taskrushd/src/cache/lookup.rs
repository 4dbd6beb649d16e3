//! The cache protocol of one cached task: look it up, and store its key
//! after a successful run. Of the protocol, the runner sees only [`Lookup`]
//! and [`Pending`].
//!
//! 1. Compute the key *before* running ([`UpToDate::key`]), so an edit made
//!    while the task runs is not folded into the stored key: the next
//!    check sees it.
//! 2. If the store holds that key: [`Lookup::Hit`], nothing runs.
//! 3. Otherwise claim the task (one instance at a time, daemon-wide; see
//!    `up_to_date/inflight.rs`): another instance running it is
//!    [`Lookup::Busy`] (wait for it, then look up again: it may have stored
//!    this very key).
//! 4. Invalidate the entry, so a failed or cancelled run, which may have
//!    clobbered outputs, is never "up to date", even if the inputs go back
//!    to their last successful state; take the inputs' full fingerprint;
//!    [`Lookup::Miss`] with the [`Pending`] store.
//! 5. After a successful run, [`Pending::store_if_unchanged`] stores the
//!    key unless the inputs changed while the task ran.
//!
//! Dropping a lookup (the run was cancelled, its client left) stops its
//! listing and hashing and releases the claim.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;

use crate::cache::store::{CacheStore, Fingerprint};
use crate::cache::up_to_date::inflight::{self, Claim, Claimed};
use crate::cache::up_to_date::{CheckError, Recipe, UpToDate};

/// What the cache says of a task about to run.
pub(crate) enum Lookup {
    /// Up to date: its stored key is that of its inputs now.
    Hit,
    /// Up to date, for a task with `outputs`: the output store holds a
    /// manifest for its key (from this checkout or another); restore the
    /// outputs it lists.
    Restore(Box<crate::cache::outputs::Manifest>),
    /// Another instance of the task is running: wait for it
    /// ([`Busy::ended`]), then look up again.
    Busy(Busy),
    /// To run: its entry is invalidated and the task claimed; store the
    /// key with [`Pending::store_if_unchanged`] if the run succeeds.
    Miss(Box<Pending>),
}

/// Another instance of the task is running.
pub(crate) struct Busy(watch::Receiver<bool>);

impl Busy {
    /// Resolves once that instance has ended.
    pub(crate) async fn ended(self) {
        inflight::wait_ended(self.0).await;
    }
}

/// A cached task that is running: what to store when it succeeds.
pub(crate) struct Pending {
    store: CacheStore,
    /// Of the inputs, command and environment just before the task ran,
    /// computed in full (not from the watcher).
    before: Fingerprint,
    recipe: Recipe,
    /// Other runs of this task wait while this is held.
    _claim: Claim,
}

/// Why a lookup gave no answer.
#[derive(Debug)]
pub(crate) enum LookupError {
    /// Told to stop.
    Stopped,
    /// The key cannot be known (`cannot read `src/x.rs`: Permission
    /// denied`, a bound).
    Check(String),
    /// The entry could not be cleared and is still there: it could later
    /// say "up to date" whatever this run leaves behind, so the task must
    /// not run.
    CannotClear {
        entry: PathBuf,
        dir: PathBuf,
        source: io::Error,
    },
}

impl From<CheckError> for LookupError {
    fn from(e: CheckError) -> Self {
        match e {
            CheckError::Stopped => LookupError::Stopped,
            CheckError::Failed(m) => LookupError::Check(m),
        }
    }
}

impl std::fmt::Display for LookupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LookupError::Stopped => f.write_str("stopped: the run was cancelled"),
            LookupError::Check(m) => write!(f, "cannot check the cache: {m}"),
            LookupError::CannotClear { entry, dir, source } => write!(
                f,
                "cannot clear the cache entry `{}`: {source}; the task did not run, as the \
                 entry could later say it is up to date when it is not\n\
                 hint: fix the permissions of `{}`, or delete it",
                entry.display(),
                dir.display()
            ),
        }
    }
}

/// Why a [`Pending`] key was not stored.
#[derive(Debug)]
pub(crate) enum NotStored {
    /// The inputs could not be checked again: not stored.
    Unchecked(CheckError),
    /// The inputs changed while the task ran: not stored. `path`: the input
    /// that changed last, when its change time moved.
    InputsChanged { path: Option<PathBuf> },
    /// The entry could not be written in `dir`.
    CannotWrite { dir: PathBuf, source: io::Error },
}

impl UpToDate {
    /// Looks up the task of `recipe` (steps 1 to 4 of the module
    /// documentation). `force`: never a hit. `outputs`: the task has
    /// `outputs`, and is a hit only when the output store has its key's
    /// manifest ([`Lookup::Restore`]), whatever `.rush-cache/` says.
    pub(crate) async fn lookup(
        self: &Arc<Self>,
        recipe: Recipe,
        force: bool,
        outputs: bool,
    ) -> Result<Lookup, LookupError> {
        use crate::cache::outputs::OutputBackend as _;
        loop {
            let key = self.key(&recipe).await?;
            let task = &recipe.task;
            let store = CacheStore::new(&recipe.root);
            if !force && outputs {
                let store = self.outputs.clone();
                let found = tokio::task::spawn_blocking(move || store.get_manifest(&key))
                    .await
                    .ok()
                    .flatten();
                if let Some(manifest) = found {
                    return Ok(Lookup::Restore(Box::new(manifest)));
                }
            } else if !force && store.load(task).as_ref() == Some(&key) {
                return Ok(Lookup::Hit);
            }
            let claim = match self.inflight.claim(&recipe.root, task) {
                // The instance that held the task may have stored this
                // very key and ended between the load above and the claim:
                // check again rather than run it twice.
                Claimed::Mine(_)
                    if !force && !outputs && store.load(task).as_ref() == Some(&key) =>
                {
                    continue;
                }
                Claimed::Mine(claim) => claim,
                Claimed::Running(ended) => return Ok(Lookup::Busy(Busy(ended))),
            };
            // A run that fails may clobber the outputs of the last good
            // one: forget it first, so a failure is never "up to date".
            if let Err(source) = store.invalidate(task) {
                tracing::warn!(task = %task, "cannot clear the cache entry: {source}");
                // An entry left in place would say "up to date" once the
                // inputs are back to what it was stored for, whatever this
                // run leaves behind: do not run.
                if store.load(task).is_some() {
                    return Err(LookupError::CannotClear {
                        entry: store.entry_path(task),
                        dir: store.dir(),
                        source,
                    });
                }
            }
            // The task runs: take the inputs' full fingerprint (`key` may
            // be the watcher's), to compare with the one after the run.
            // Cheap beside running the task.
            let before = self.fingerprint(recipe.clone()).await?;
            return Ok(Lookup::Miss(Box::new(Pending {
                store,
                before,
                recipe,
                _claim: claim,
            })));
        }
    }
}

impl Pending {
    /// The key the task is run for (its inputs just before it ran).
    pub(crate) fn key(&self) -> crate::cache::store::CacheKey {
        self.before.key
    }

    /// Stores the key, unless the inputs changed since it was computed: the
    /// stored key must be that of the inputs the run saw. Checked again in
    /// full: same key, and the same latest ctime among the inputs, so an
    /// edit undone during the run (A, B, A) is seen too (ctime cannot be
    /// set back, and any write moves it to "now"). Dropping the future
    /// stores nothing.
    pub(crate) async fn store_if_unchanged(
        self,
        up_to_date: &Arc<UpToDate>,
    ) -> Result<(), NotStored> {
        let task = self.recipe.task.clone();
        let recipe = self.recipe.clone();
        let after = match up_to_date.fingerprint(self.recipe).await {
            Ok(after) => after,
            Err(e) => return Err(NotStored::Unchecked(e)),
        };
        let touched = after.last_change != self.before.last_change;
        if after.key != self.before.key || touched {
            return Err(NotStored::InputsChanged {
                path: after.last_changed.filter(|_| touched),
            });
        }
        self.store
            .store(&task, &self.before.key)
            .map_err(|source| NotStored::CannotWrite {
                dir: self.store.dir(),
                source,
            })?;
        // What this run saw, file by file, for `run --explain` (the hashes
        // are in the memo by now: `stat`s only).
        match up_to_date.inputs_record(recipe).await {
            Ok(record) => {
                if let Err(e) = self.store.store_inputs(&task, &record) {
                    tracing::info!(task = %task, "cannot record the inputs: {e}");
                }
            }
            Err(e) => tracing::info!(task = %task, "cannot record the inputs: {e}"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe(root: &std::path::Path, cmd: &str) -> Recipe {
        Recipe {
            root: root.to_path_buf(),
            task: "build".into(),
            cmd: cmd.into(),
            env: Vec::new(),
            patterns: vec!["src/**".to_owned()].into(),
        }
    }

    fn project() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("src")).expect("src");
        std::fs::write(dir.path().join("src/main.rs"), "fn main() {}").expect("input");
        dir
    }

    async fn miss(u: &Arc<UpToDate>, r: Recipe) -> Box<Pending> {
        match u.lookup(r, false, false).await {
            Ok(Lookup::Miss(p)) => p,
            Ok(Lookup::Hit | Lookup::Restore(_)) => panic!("a hit"),
            Ok(Lookup::Busy(_)) => panic!("busy"),
            Err(e) => panic!("{e}"),
        }
    }

    #[tokio::test]
    async fn a_task_stored_after_a_successful_run_is_a_hit_until_its_inputs_or_recipe_change() {
        let dir = project();
        let u = UpToDate::new(None);
        let pending = miss(&u, recipe(dir.path(), "make")).await;
        pending.store_if_unchanged(&u).await.expect("stored");
        assert!(matches!(
            u.lookup(recipe(dir.path(), "make"), false, false).await,
            Ok(Lookup::Hit)
        ));
        assert!(
            matches!(
                u.lookup(recipe(dir.path(), "make"), true, false).await,
                Ok(Lookup::Miss(_))
            ),
            "--force"
        );
        // The forced lookup invalidated the entry, as a run would.
        drop(miss(&u, recipe(dir.path(), "make")).await);
        miss(&u, recipe(dir.path(), "make"))
            .await
            .store_if_unchanged(&u)
            .await
            .expect("stored");
        drop(miss(&u, recipe(dir.path(), "make all")).await);
        assert!(
            !CacheStore::new(dir.path()).entry_path("build").exists(),
            "a miss invalidates the entry before the task runs"
        );
    }

    #[tokio::test]
    async fn a_second_lookup_of_a_task_in_progress_is_busy_until_the_first_ends() {
        let dir = project();
        let u = UpToDate::new(None);
        let first = miss(&u, recipe(dir.path(), "make")).await;
        let Ok(Lookup::Busy(busy)) = u.lookup(recipe(dir.path(), "make"), false, false).await
        else {
            panic!("the first holds the task");
        };
        first.store_if_unchanged(&u).await.expect("stored");
        busy.ended().await;
        assert!(
            matches!(
                u.lookup(recipe(dir.path(), "make"), false, false).await,
                Ok(Lookup::Hit)
            ),
            "the waiter finds the key the first one stored"
        );
    }

    #[tokio::test]
    async fn inputs_changed_while_the_task_ran_are_not_stored() {
        let dir = project();
        let u = UpToDate::new(None);
        let pending = miss(&u, recipe(dir.path(), "make")).await;
        std::fs::write(dir.path().join("src/main.rs"), "fn main() { edited() }").expect("edit");
        // The key differs; the change time may not have moved yet (it is
        // as coarse as the kernel's clock tick), so the path is not asked.
        let got = pending.store_if_unchanged(&u).await;
        assert!(
            matches!(&got, Err(NotStored::InputsChanged { .. })),
            "{got:?}"
        );
        assert!(matches!(
            u.lookup(recipe(dir.path(), "make"), false, false).await,
            Ok(Lookup::Miss(_))
        ));
    }
}
