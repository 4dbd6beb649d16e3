//! The up-to-date check of one cached task: a clean key when the watcher
//! can prove nothing changed, else the full key computation.
//!
//! The full computation (`cache::fingerprint`) lists the inputs and
//! `stat`s every one (hashing the new or changed ones): for 10,000 files
//! that is 10,000 `stat`s on every check. Once a key has been computed
//! while the watcher watched every directory that could show a change, and
//! no event arrived meanwhile (`Watcher::finish_inputs` says the ticket of
//! `Watcher::begin_inputs` is still good), it is remembered here as clean,
//! with that ticket; the next check takes it after a cookie round trip
//! (`Watcher::sync`) if the ticket is still current (`Watcher::is_current`:
//! the inputs' generation has not moved), without touching the inputs. The
//! watcher knows generations only; the keys are this file's. The rules
//! that keep this exact are in the watcher's module documentation
//! ("Inputs").

pub(crate) mod inflight;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::cache::file_hashes::{FileHashes, StopFlag};
use crate::cache::input_files::InputError;
use crate::cache::input_files::InputLimits;
use crate::cache::store::{self as cache, CacheKey, Fingerprint};
use crate::watch::{Key, Ticket, Watcher};

/// What the daemon keeps between checks: file hashes and the watcher.
pub(crate) struct UpToDate {
    hashes: FileHashes,
    /// Cached tasks in progress, daemon-wide (see [`inflight`]).
    pub(crate) inflight: Arc<inflight::Inflight>,
    /// The per-user store of task outputs (`cache/outputs.rs`).
    pub(crate) outputs: Arc<crate::cache::outputs::LocalStore>,
    watcher: Option<Arc<Watcher>>,
    clean: Mutex<CleanKeys>,
    watched: AtomicU64,
    full: AtomicU64,
}

/// What a task's key is computed from.
#[derive(Clone)]
pub(crate) struct Recipe {
    pub(crate) root: PathBuf,
    pub(crate) task: String,
    /// Everything the task runs (`before`, `cmd`, `after`).
    pub(crate) cmd: String,
    /// The task's expanded `env`.
    pub(crate) env: Vec<(String, String)>,
    /// Its `cache_files` (shared: a recipe is cloned for each step of a
    /// check, and a task may list 10,000 files).
    pub(crate) patterns: Arc<[String]>,
}

impl UpToDate {
    /// `watcher`: `None` to always compute keys in full.
    pub(crate) fn new(watcher: Option<Arc<Watcher>>) -> Arc<UpToDate> {
        Arc::new(UpToDate {
            hashes: FileHashes::new(),
            inflight: inflight::Inflight::new(),
            outputs: Arc::new(crate::cache::outputs::LocalStore::from_env()),
            watcher,
            clean: Mutex::default(),
            watched: AtomicU64::new(0),
            full: AtomicU64::new(0),
        })
    }

    /// Checks answered by the watcher so far.
    pub(crate) fn watched_checks(&self) -> u64 {
        self.watched.load(Ordering::Relaxed)
    }

    /// Checks computed in full so far.
    pub(crate) fn full_checks(&self) -> u64 {
        self.full.load(Ordering::Relaxed)
    }

    /// The task's cache key as of now: every change made before this call
    /// is in it. The error says why it cannot be known (e.g. `cannot read
    /// `src/x.rs`: Permission denied`).
    ///
    /// Dropping the future (the run was cancelled, its client left) stops
    /// the listing and hashing within a file or so.
    pub(crate) async fn key(self: &Arc<Self>, recipe: &Recipe) -> Result<CacheKey, CheckError> {
        // No watcher, or a root it cannot fully see: always in full.
        let watched = self
            .watcher
            .as_ref()
            .and_then(|w| Some((w, local_dir_id(&recipe.root)?)));
        let Some((w, root_id)) = watched else {
            self.full.fetch_add(1, Ordering::Relaxed);
            return Ok(self.fingerprint(recipe.clone()).await?.key);
        };
        let signature = cache::recipe(&recipe.task, &recipe.cmd, &recipe.env, &recipe.patterns);
        let inputs = Key::Inputs(recipe.root.clone(), recipe.task.clone());
        if self.clean_key(w, &inputs, &signature, root_id).is_some()
            && w.sync().await
            && let Some(key) = self.clean_key(w, &inputs, &signature, root_id)
        {
            self.watched.fetch_add(1, Ordering::Relaxed);
            return Ok(key);
        }
        self.full.fetch_add(1, Ordering::Relaxed);
        let ticket = w.begin_inputs(&inputs);
        let fingerprint = self.fingerprint(recipe.clone()).await?;
        let clean = CleanKey {
            recipe: signature,
            key: fingerprint.key,
            root_id,
        };
        let good = w
            .finish_inputs(inputs.clone(), ticket, fingerprint.watch_dirs)
            .await;
        let mut keys = self.clean_keys();
        match ticket.filter(|_| good) {
            Some(ticket) => keys.remember(inputs, ticket, clean, |k, t| w.is_current(k, t)),
            None => keys.forget(&inputs),
        }
        Ok(fingerprint.key)
    }

    /// The clean key of `inputs` for this recipe and root, if its ticket is
    /// still current.
    fn clean_key(
        &self,
        w: &Watcher,
        inputs: &Key,
        recipe: &CacheKey,
        root_id: (u64, u64),
    ) -> Option<CacheKey> {
        self.clean_keys()
            .get(inputs, recipe, root_id, |k, t| w.is_current(k, t))
    }

    fn clean_keys(&self) -> std::sync::MutexGuard<'_, CleanKeys> {
        // A panic while held leaves a map that is still consistent.
        self.clean
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What the task's inputs are as of now, file by file (`run --explain`).
    pub(crate) async fn inputs_record(
        self: &Arc<Self>,
        recipe: Recipe,
    ) -> Result<cache::InputsRecord, CheckError> {
        self.from_files(recipe, cache::inputs_record).await
    }

    /// The task's full fingerprint as of now, always computed from the
    /// files (not the watcher): for the check after a run. Dropping the
    /// future stops it, as for [`UpToDate::key`].
    pub(crate) async fn fingerprint(
        self: &Arc<Self>,
        recipe: Recipe,
    ) -> Result<Fingerprint, CheckError> {
        self.from_files(recipe, cache::fingerprint_until).await
    }

    /// `read` of the task's input files, on a blocking thread, stopped
    /// when the future is dropped.
    async fn from_files<T: Send + 'static>(
        self: &Arc<Self>,
        recipe: Recipe,
        read: fn(
            &Path,
            &cache::Recipe<'_>,
            &FileHashes,
            &InputLimits,
            &StopFlag,
        ) -> Result<T, InputError>,
    ) -> Result<T, CheckError> {
        let stop = StopOnDrop(StopFlag::default());
        let flag = stop.0.clone();
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let r = cache::Recipe {
                task: &recipe.task,
                cmd: &recipe.cmd,
                env: &recipe.env,
                patterns: &recipe.patterns,
            };
            read(
                &recipe.root,
                &r,
                &me.hashes,
                &InputLimits::from_env(),
                &flag,
            )
        })
        .await
        .map_err(|e| CheckError::Failed(format!("the check stopped: {e}")))?
        .map_err(|e| match e {
            InputError::Stopped => CheckError::Stopped,
            e => CheckError::Failed(e.to_string()),
        })
    }
}

/// A key computed while nothing changed under its watched directories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CleanKey {
    /// What the key was computed for, besides the input files
    /// (`cache::recipe`).
    recipe: CacheKey,
    /// The task's cache key.
    key: CacheKey,
    /// (device, inode) of the project root then: a different directory at
    /// the same path (an ancestor was renamed) is not the same project.
    root_id: (u64, u64),
}

/// The clean keys, each with the ticket it is good for: (project root,
/// task) → (ticket, key). An entry is trusted only while the watcher says
/// its ticket is current (`is_current`); stale ones are dropped when met
/// and whenever a key is remembered, so the map holds no more than the
/// watcher's inputs.
#[derive(Default)]
struct CleanKeys(HashMap<Key, (Ticket, CleanKey)>);

impl CleanKeys {
    /// The key remembered for `inputs`, if its ticket is still current and
    /// it was computed for the same recipe and root.
    fn get(
        &mut self,
        inputs: &Key,
        recipe: &CacheKey,
        root_id: (u64, u64),
        is_current: impl Fn(&Key, Ticket) -> bool,
    ) -> Option<CacheKey> {
        let (ticket, clean) = *self.0.get(inputs)?;
        if !is_current(inputs, ticket) {
            self.0.remove(inputs);
            return None;
        }
        (clean.recipe == *recipe && clean.root_id == root_id).then_some(clean.key)
    }

    /// Remember `clean` for `inputs` while `ticket` is current; drop the
    /// entries that are not any more.
    fn remember(
        &mut self,
        inputs: Key,
        ticket: Ticket,
        clean: CleanKey,
        is_current: impl Fn(&Key, Ticket) -> bool,
    ) {
        self.0.retain(|k, (t, _)| is_current(k, *t));
        self.0.insert(inputs, (ticket, clean));
    }

    fn forget(&mut self, inputs: &Key) {
        self.0.remove(inputs);
    }
}

/// Why a key is not known.
#[derive(Debug)]
pub(crate) enum CheckError {
    /// Told to stop.
    Stopped,
    /// Says why (`cannot read `src/x.rs`: Permission denied`, a bound).
    Failed(String),
}

impl std::fmt::Display for CheckError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckError::Stopped => f.write_str("stopped: the run was cancelled"),
            CheckError::Failed(m) => f.write_str(m),
        }
    }
}

/// Sets its flag when dropped: a computation on another thread stops when
/// the future waiting for it is dropped.
struct StopOnDrop(StopFlag);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// (device, inode) of `dir`, if it is on a local file system that inotify
/// fully covers: it sees only changes made through this kernel, so network,
/// FUSE and VM-shared file systems (whose files can change on another
/// machine or behind the kernel's back) always get the full check. An
/// allow-list: an unknown file system is not trusted.
fn local_dir_id(dir: &Path) -> Option<(u64, u64)> {
    // statfs(2) magic numbers.
    const LOCAL: [u64; 12] = [
        0xef53,      // ext2/3/4
        0x5846_5342, // XFS
        0x9123_683e, // Btrfs
        0x0102_1994, // tmpfs
        0x8584_58f6, // ramfs
        0x794c_7630, // overlayfs (containers)
        0x2fc1_2fc1, // ZFS
        0xf2f5_2010, // F2FS
        0xca45_1a4e, // bcachefs
        0x5265_4973, // ReiserFS
        0x3153_464a, // JFS
        0x3434,      // NILFS
    ];
    let fs = rustix::fs::statfs(dir).ok()?;
    #[allow(clippy::unnecessary_cast, reason = "the field's type varies by target")]
    if !LOCAL.contains(&((fs.f_type as u64) & 0xffff_ffff)) {
        return None;
    }
    crate::watch::path_id(dir)
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::HashMap;

    use super::*;

    /// The watcher's side, without a watcher: the current generation of
    /// each task's inputs (none: not watched).
    #[derive(Default)]
    struct Generations(RefCell<HashMap<Key, u64>>);

    impl Generations {
        fn set(&self, task: &str, generation: u64) -> Ticket {
            self.0.borrow_mut().insert(inputs(task), generation);
            Ticket::for_test(generation)
        }

        fn forget(&self, task: &str) {
            self.0.borrow_mut().remove(&inputs(task));
        }

        fn is_current(&self) -> impl Fn(&Key, Ticket) -> bool + '_ {
            |k, t| {
                self.0
                    .borrow()
                    .get(k)
                    .is_some_and(|g| Ticket::for_test(*g) == t)
            }
        }
    }

    fn inputs(task: &str) -> Key {
        Key::Inputs("/p".into(), task.into())
    }

    fn clean(recipe: u8, key: u8) -> CleanKey {
        CleanKey {
            recipe: CacheKey([recipe; 32]),
            key: CacheKey([key; 32]),
            root_id: (1, 2),
        }
    }

    #[test]
    fn a_clean_key_is_taken_while_its_ticket_is_current() {
        let g = Generations::default();
        let mut keys = CleanKeys::default();
        let ticket = g.set("build", 7);
        keys.remember(inputs("build"), ticket, clean(1, 2), g.is_current());
        let got = keys.get(&inputs("build"), &CacheKey([1; 32]), (1, 2), g.is_current());
        assert_eq!(got, Some(CacheKey([2; 32])));
        assert_eq!(
            keys.get(&inputs("build"), &CacheKey([1; 32]), (1, 2), g.is_current()),
            Some(CacheKey([2; 32])),
            "taking it does not use it up"
        );
    }

    #[test]
    fn a_moved_generation_falls_back_to_the_full_check_and_drops_the_key() {
        let g = Generations::default();
        let mut keys = CleanKeys::default();
        let ticket = g.set("build", 7);
        keys.remember(inputs("build"), ticket, clean(1, 2), g.is_current());
        g.set("build", 8);
        assert_eq!(
            keys.get(&inputs("build"), &CacheKey([1; 32]), (1, 2), g.is_current()),
            None
        );
        assert!(keys.0.is_empty(), "a stale key is dropped when met");
        // Generations only grow, so the old ticket can never be good again.
        g.set("build", 9);
        assert_eq!(
            keys.get(&inputs("build"), &CacheKey([1; 32]), (1, 2), g.is_current()),
            None
        );
    }

    #[test]
    fn inputs_the_watcher_forgot_have_no_clean_key() {
        let g = Generations::default();
        let mut keys = CleanKeys::default();
        let ticket = g.set("build", 3);
        keys.remember(inputs("build"), ticket, clean(1, 2), g.is_current());
        g.forget("build");
        assert_eq!(
            keys.get(&inputs("build"), &CacheKey([1; 32]), (1, 2), g.is_current()),
            None
        );
    }

    #[test]
    fn another_recipe_or_another_root_at_the_same_path_needs_the_full_check() {
        let g = Generations::default();
        let mut keys = CleanKeys::default();
        let ticket = g.set("build", 3);
        keys.remember(inputs("build"), ticket, clean(1, 2), g.is_current());
        let other_recipe = keys.get(&inputs("build"), &CacheKey([9; 32]), (1, 2), g.is_current());
        assert_eq!(other_recipe, None, "the command or env changed");
        let other_root = keys.get(&inputs("build"), &CacheKey([1; 32]), (1, 3), g.is_current());
        assert_eq!(other_root, None, "an ancestor was renamed");
        assert_eq!(
            keys.get(&inputs("build"), &CacheKey([1; 32]), (1, 2), g.is_current()),
            Some(CacheKey([2; 32])),
            "still good for the recipe it was computed for"
        );
    }

    #[test]
    fn each_task_has_its_own_key_and_stale_ones_go_when_a_key_is_remembered() {
        let g = Generations::default();
        let mut keys = CleanKeys::default();
        let build = g.set("build", 1);
        let docs = g.set("docs", 2);
        keys.remember(inputs("build"), build, clean(1, 2), g.is_current());
        keys.remember(inputs("docs"), docs, clean(3, 4), g.is_current());
        assert_eq!(
            keys.get(&inputs("docs"), &CacheKey([3; 32]), (1, 2), g.is_current()),
            Some(CacheKey([4; 32]))
        );
        g.forget("build");
        let lint = g.set("lint", 5);
        keys.remember(inputs("lint"), lint, clean(5, 6), g.is_current());
        let mut left: Vec<String> = keys.0.keys().map(|k| format!("{k:?}")).collect();
        left.sort();
        assert_eq!(
            left,
            [
                format!("{:?}", inputs("docs")),
                format!("{:?}", inputs("lint"))
            ]
        );
    }

    #[test]
    fn a_key_whose_ticket_was_not_good_is_forgotten() {
        let g = Generations::default();
        let mut keys = CleanKeys::default();
        let ticket = g.set("build", 1);
        keys.remember(inputs("build"), ticket, clean(1, 2), g.is_current());
        keys.forget(&inputs("build"));
        assert_eq!(
            keys.get(&inputs("build"), &CacheKey([1; 32]), (1, 2), g.is_current()),
            None
        );
    }
}
