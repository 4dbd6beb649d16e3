//! The up-to-date check of one cached task: the watcher's clean key when it
//! can prove nothing changed, else the full key computation.
//!
//! The full computation (`cache::fingerprint`) lists the inputs and
//! `stat`s every one (hashing the new or changed ones): for 10,000 files
//! that is 10,000 `stat`s on every check. Once a key has been computed
//! while the watcher watched every directory that could show a change, and
//! no event arrived meanwhile, the watcher remembers it as clean; the next
//! check takes it after a cookie round trip (`Watcher::sync`), without
//! touching the inputs. The rules that keep this exact are in the watcher's
//! module documentation ("Inputs").

pub(crate) mod inflight;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::cache::file_hashes::{FileHashes, StopFlag};
use crate::cache::input_files::InputLimits;
use crate::cache::store::{self as cache, CacheError, CacheKey, Fingerprint};
use crate::watch::{CleanKey, Key, Watcher};

/// What the daemon keeps between checks: file hashes and the watcher.
pub(crate) struct UpToDate {
    hashes: FileHashes,
    /// Cached tasks in progress, daemon-wide (see [`inflight`]).
    pub(crate) inflight: Arc<inflight::Inflight>,
    watcher: Option<Arc<Watcher>>,
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
    /// Its `cache_files`.
    pub(crate) patterns: Vec<String>,
}

impl UpToDate {
    /// `watcher`: `None` to always compute keys in full.
    pub(crate) fn new(watcher: Option<Arc<Watcher>>) -> Arc<UpToDate> {
        Arc::new(UpToDate {
            hashes: FileHashes::new(),
            inflight: inflight::Inflight::new(),
            watcher,
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
    pub(crate) async fn key(self: &Arc<Self>, recipe: Recipe) -> Result<CacheKey, CheckError> {
        let signature = cache::recipe(&recipe.task, &recipe.cmd, &recipe.env, &recipe.patterns);
        let inputs = Key::Inputs(recipe.root.clone(), recipe.task.clone());
        let root_id = local_dir_id(&recipe.root);
        let watcher = self.watcher.as_ref().filter(|_| root_id.is_some());
        if let (Some(w), Some(id)) = (watcher, root_id)
            && w.clean_key(&inputs, &signature, id).is_some()
            && w.sync().await
            && let Some(key) = w.clean_key(&inputs, &signature, id)
        {
            self.watched.fetch_add(1, Ordering::Relaxed);
            return Ok(key);
        }
        self.full.fetch_add(1, Ordering::Relaxed);
        let ticket = watcher.and_then(|w| w.begin_inputs(&inputs));
        let fingerprint = self.fingerprint(recipe).await?;
        if let (Some(w), Some(root_id)) = (watcher, root_id) {
            let clean = CleanKey {
                recipe: signature,
                key: fingerprint.key,
                root_id,
            };
            w.finish_inputs(inputs, ticket, fingerprint.watch_dirs, clean)
                .await;
        }
        Ok(fingerprint.key)
    }

    /// The task's full fingerprint as of now, always computed from the
    /// files (not the watcher): for the check after a run. Dropping the
    /// future stops it, as for [`UpToDate::key`].
    pub(crate) async fn fingerprint(
        self: &Arc<Self>,
        recipe: Recipe,
    ) -> Result<Fingerprint, CheckError> {
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
            cache::fingerprint_until(
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
            CacheError::Stopped => CheckError::Stopped,
            e => CheckError::Failed(e.to_string()),
        })
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
    crate::cache::input_files::path_id(dir)
}
