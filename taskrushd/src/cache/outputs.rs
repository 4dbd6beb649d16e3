//! Task outputs: stored after a successful run, restored on a cache hit.
//!
//! A task with `outputs:` globs has, beside its project entry in
//! `.rush-cache/`, an entry in a per-user, content-addressed store
//! ([`LocalStore`], under the user's cache directory): one manifest per
//! cache key listing each output (path relative to the task's base
//! directory, mode, SHA-256 and size, or symlink target) and the task's
//! captured stdout/stderr, and the files' contents as blobs named by their
//! SHA-256. The key covers no absolute path, so the same project content
//! in another checkout, or after `git clean`, finds the same manifest.
//!
//! On a hit, [`restore`] compares each listed output with the manifest and
//! writes back the missing or changed ones (temporary file in the same
//! directory, then rename; modes kept, symlinks recreated as symlinks);
//! the task does not run. A path is never written through a symlink or
//! outside the base directory.
//!
//! The store is reached through [`OutputBackend`] (put and get blobs and
//! manifests) so that a remote cache (the Bazel Remote Execution API's
//! content-addressed storage and action cache) can stand behind the same
//! calls. The local store is bounded ([`LocalStore::limit`],
//! `TASKRUSH_CACHE_MAX_BYTES`): after each put, the least recently used
//! manifests are dropped, and the blobs no manifest refers to any more,
//! until the blobs fit.

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use walkdir::WalkDir;

use crate::cache::input_files::{PathMatcher, check_pattern};
use crate::cache::store::CacheKey;

/// Format of manifests; another version is a miss.
const MANIFEST_VERSION: u32 = 1;

/// Default bound of the local store (`TASKRUSH_CACHE_MAX_BYTES`).
pub(crate) const DEFAULT_LIMIT: u64 = 10 << 30;

/// At most this much of a task's output is kept for replay.
pub(crate) const MAX_LOG_BYTES: usize = 16 << 20;

/// At most this many output files per task.
const MAX_OUTPUT_FILES: usize = 1_000_000;

/// A blob's name: SHA-256 (lowercase hex) and size, as in the Remote
/// Execution API's `Digest`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct Digest {
    pub(crate) sha256: String,
    pub(crate) size: u64,
}

/// One output of a task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Output {
    File {
        path: String,
        /// Permission bits (`0o7777`).
        mode: u32,
        #[serde(flatten)]
        digest: Digest,
    },
    Symlink {
        path: String,
        target: String,
    },
}

impl Output {
    pub(crate) fn path(&self) -> &str {
        match self {
            Output::File { path, .. } | Output::Symlink { path, .. } => path,
        }
    }
}

/// What a cache key's run left: its outputs and its captured output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub(crate) version: u32,
    pub(crate) task: String,
    pub(crate) outputs: Vec<Output>,
    /// The task's stdout/stderr ([`encode_log`]), when it wrote any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) log: Option<Digest>,
}

/// Where outputs are kept. Implementations are blocking.
pub(crate) trait OutputBackend: Send + Sync {
    /// Copies the file at `src` into the store, hashing what is copied (a
    /// file changed meanwhile is stored under the hash of what was read).
    fn put_file(&self, src: &Path) -> io::Result<Digest>;
    /// Stores `bytes`.
    fn put_bytes(&self, bytes: &[u8]) -> io::Result<Digest>;
    /// Copies a blob to `dest` (a new file); `NotFound` when evicted.
    fn get_to(&self, digest: &Digest, dest: &Path) -> io::Result<()>;
    /// A blob's bytes (small blobs: logs).
    fn get_bytes(&self, digest: &Digest) -> io::Result<Vec<u8>>;
    /// Records `manifest` as the outputs of `key`.
    fn put_manifest(&self, key: &CacheKey, manifest: &Manifest) -> io::Result<()>;
    /// The blobs put for a manifest are kept (never evicted) from their
    /// put until this call, made once the manifest is written or given up
    /// (once per put).
    fn release(&self, digests: &[Digest]);
    /// The manifest of `key`, if stored (and marks it used).
    fn get_manifest(&self, key: &CacheKey) -> Option<Manifest>;
}

/// Checks an `outputs` glob when the `.rush` file is loaded: the rules
/// of `cache_files`, and no `..` (outputs stay in the project).
pub(crate) fn check_output_pattern(pattern: &str) -> Result<(), String> {
    if pattern.split('/').any(|c| c == "..") || pattern.trim_start_matches('!').starts_with('/') {
        return Err("outputs must stay inside the project: no `..` and no absolute path".into());
    }
    check_pattern(pattern).map_err(|e| match e {
        crate::cache::input_files::InputError::Pattern { reason, .. } => reason,
        other => other.to_string(),
    })
}

/// The per-user store: `<dir>/blobs/<2 hex>/<sha256>`,
/// `<dir>/manifests/<cache key>.json`. A manifest's mtime is its last use
/// (blobs go with the manifests that use them: their times do not matter).
pub(crate) struct LocalStore {
    dir: PathBuf,
    limit: u64,
    /// Puts and evictions one at a time (this daemon is the one writer),
    /// and the blobs put for manifests not written yet (with a count):
    /// eviction leaves them alone.
    write: Mutex<HashMap<String, usize>>,
    hits: AtomicU64,
    restored_files: AtomicU64,
}

/// `daemon cache status`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct StoreStatus {
    pub(crate) entries: u64,
    pub(crate) blobs: u64,
    pub(crate) bytes: u64,
}

impl LocalStore {
    /// `$TASKRUSH_CACHE_DIR`, else `<user cache dir>/taskrush/outputs`;
    /// the limit from `TASKRUSH_CACHE_MAX_BYTES`.
    pub(crate) fn from_env() -> LocalStore {
        let dir = std::env::var_os("TASKRUSH_CACHE_DIR")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                dirs::cache_dir()
                    .unwrap_or_else(std::env::temp_dir)
                    .join("taskrush")
                    .join("outputs")
            });
        let limit = std::env::var("TASKRUSH_CACHE_MAX_BYTES")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(DEFAULT_LIMIT);
        LocalStore::new(dir, limit)
    }

    pub(crate) fn new(dir: PathBuf, limit: u64) -> LocalStore {
        LocalStore {
            dir,
            limit,
            write: Mutex::new(HashMap::new()),
            hits: AtomicU64::new(0),
            restored_files: AtomicU64::new(0),
        }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }

    /// Hits since the daemon started, and files restored.
    pub(crate) fn counters(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.restored_files.load(Ordering::Relaxed),
        )
    }

    pub(crate) fn count_hit(&self, restored: u64) {
        self.hits.fetch_add(1, Ordering::Relaxed);
        self.restored_files.fetch_add(restored, Ordering::Relaxed);
    }

    fn blob_path(&self, sha256: &str) -> PathBuf {
        self.dir.join("blobs").join(&sha256[..2]).join(sha256)
    }

    fn manifest_path(&self, key: &CacheKey) -> PathBuf {
        self.dir
            .join("manifests")
            .join(format!("{}.json", key.to_hex()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.write
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Moves a temporary file into place as blob `sha256` (or drops it
    /// when the blob is already there, marking that one used).
    fn adopt(&self, tmp: &Path, sha256: &str) -> io::Result<()> {
        let mut pins = self.lock();
        *pins.entry(sha256.to_owned()).or_default() += 1;
        let path = self.blob_path(sha256);
        if path.exists() {
            let _ = fs::remove_file(tmp);
            return Ok(());
        }
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::rename(tmp, &path).inspect_err(|_| {
            let _ = fs::remove_file(tmp);
        })
    }

    fn tmp_file(&self) -> io::Result<(PathBuf, File)> {
        let dir = self.dir.join("tmp");
        fs::create_dir_all(&dir)?;
        let tmp = unique_name(&dir, "blob");
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        Ok((tmp, file))
    }

    /// The manifest of `key`, without marking it used (`run --explain`).
    pub(crate) fn peek_manifest(&self, key: &CacheKey) -> Option<Manifest> {
        read_manifest(&self.manifest_path(key))
    }

    /// The store's size and entries.
    pub(crate) fn status(&self) -> StoreStatus {
        let mut status = StoreStatus::default();
        if let Ok(dir) = fs::read_dir(self.dir.join("manifests")) {
            status.entries = dir
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .count() as u64;
        }
        for (_, size) in self.blobs() {
            status.blobs += 1;
            status.bytes += size;
        }
        status
    }

    /// Every blob and its size.
    fn blobs(&self) -> Vec<(String, u64)> {
        WalkDir::new(self.dir.join("blobs"))
            .min_depth(2)
            .max_depth(2)
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_file())
            .filter_map(|e| {
                let size = e.metadata().ok()?.len();
                Some((e.file_name().to_str()?.to_owned(), size))
            })
            .collect()
    }

    /// Drops least recently used manifests, and the blobs left without a
    /// manifest, until the blobs take at most `limit` bytes. Returns the
    /// manifests and bytes removed.
    pub(crate) fn evict_to(&self, limit: u64) -> (u64, u64) {
        let pins = self.lock();
        self.evict_locked(limit, &pins)
    }

    fn evict_locked(&self, limit: u64, pinned: &HashMap<String, usize>) -> (u64, u64) {
        let sizes: HashMap<String, u64> = self.blobs().into_iter().collect();
        let total: u64 = sizes.values().sum();
        // Manifests, oldest use first, with the blobs each refers to.
        let mut manifests: Vec<(SystemTime, PathBuf, Vec<String>)> = Vec::new();
        if let Ok(dir) = fs::read_dir(self.dir.join("manifests")) {
            for entry in dir.flatten() {
                let path = entry.path();
                let used = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                let blobs = read_manifest(&path)
                    .map(|m| manifest_blobs(&m))
                    .unwrap_or_default();
                manifests.push((used, path, blobs));
            }
        }
        manifests.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        let mut refs: HashMap<&str, usize> = HashMap::new();
        for (_, _, blobs) in &manifests {
            for b in blobs {
                *refs.entry(b.as_str()).or_default() += 1;
            }
        }
        let mut removed = (0, 0);
        let mut live = total;
        // Blobs no manifest refers to (a put cut short, an earlier
        // eviction interrupted) go first.
        for (sha, size) in &sizes {
            if !refs.contains_key(sha.as_str())
                && !pinned.contains_key(sha)
                && fs::remove_file(self.blob_path(sha)).is_ok()
            {
                live -= size;
                removed.1 += size;
            }
        }
        for (_, path, blobs) in &manifests {
            if live <= limit {
                break;
            }
            if fs::remove_file(path).is_err() {
                continue;
            }
            removed.0 += 1;
            for b in blobs {
                let n = refs.entry(b.as_str()).or_default();
                *n = n.saturating_sub(1);
                if *n == 0
                    && !pinned.contains_key(b)
                    && let Some(size) = sizes.get(b)
                    && fs::remove_file(self.blob_path(b)).is_ok()
                {
                    live -= size;
                    removed.1 += size;
                }
            }
        }
        removed
    }
}

fn manifest_blobs(m: &Manifest) -> Vec<String> {
    let mut set = BTreeSet::new();
    for o in &m.outputs {
        if let Output::File { digest, .. } = o {
            set.insert(digest.sha256.clone());
        }
    }
    if let Some(log) = &m.log {
        set.insert(log.sha256.clone());
    }
    set.into_iter().collect()
}

fn read_manifest(path: &Path) -> Option<Manifest> {
    let text = fs::read(path).ok()?;
    let m: Manifest = serde_json::from_slice(&text).ok()?;
    (m.version == MANIFEST_VERSION).then_some(m)
}

/// Sets a file's mtime to now: its last use.
fn touch(path: &Path) {
    if let Ok(f) = File::options().append(true).open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
}

fn unique_name(dir: &Path, what: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    dir.join(format!(".tmp-{}-{n}-{nanos}-{what}", std::process::id()))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

impl OutputBackend for LocalStore {
    fn put_file(&self, src: &Path) -> io::Result<Digest> {
        let mut from = File::open(src)?;
        let (tmp, mut to) = self.tmp_file()?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut size = 0u64;
        let copied: io::Result<()> = (|| {
            loop {
                let n = from.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                to.write_all(&buf[..n])?;
                size += n as u64;
            }
            to.flush()
        })();
        drop(to);
        if let Err(e) = copied {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        let sha256 = hex(&hasher.finalize());
        self.adopt(&tmp, &sha256)?;
        Ok(Digest { sha256, size })
    }

    fn put_bytes(&self, bytes: &[u8]) -> io::Result<Digest> {
        let sha256 = hex(&Sha256::digest(bytes));
        let (tmp, mut to) = self.tmp_file()?;
        let written = to.write_all(bytes).and_then(|()| to.flush());
        drop(to);
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        self.adopt(&tmp, &sha256)?;
        Ok(Digest {
            sha256,
            size: bytes.len() as u64,
        })
    }

    fn get_to(&self, digest: &Digest, dest: &Path) -> io::Result<()> {
        let path = self.blob_path(&digest.sha256);
        // `fs::copy` uses `copy_file_range` (a reflink where the file
        // system can) and copies the permission bits, set after.
        fs::copy(&path, dest)?;
        Ok(())
    }

    fn get_bytes(&self, digest: &Digest) -> io::Result<Vec<u8>> {
        let path = self.blob_path(&digest.sha256);
        fs::read(&path)
    }

    fn release(&self, digests: &[Digest]) {
        let mut pins = self.lock();
        for d in digests {
            if let Some(n) = pins.get_mut(&d.sha256) {
                *n -= 1;
                if *n == 0 {
                    pins.remove(&d.sha256);
                }
            }
        }
    }

    fn put_manifest(&self, key: &CacheKey, manifest: &Manifest) -> io::Result<()> {
        let pins = self.lock();
        let path = self.manifest_path(key);
        let dir = self.dir.join("manifests");
        fs::create_dir_all(&dir)?;
        let tmp = unique_name(&dir, "manifest");
        fs::write(&tmp, serde_json::to_vec(manifest)?)?;
        fs::rename(&tmp, &path).inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })?;
        let (entries, bytes) = self.evict_locked(self.limit, &pins);
        if entries > 0 {
            tracing::info!(entries, bytes, "output store over its limit: evicted");
        }
        Ok(())
    }

    fn get_manifest(&self, key: &CacheKey) -> Option<Manifest> {
        let path = self.manifest_path(key);
        let m = read_manifest(&path)?;
        touch(&path);
        Some(m)
    }
}

// ---------------------------------------------------------------------------
// Collecting and restoring
// ---------------------------------------------------------------------------

/// Why outputs could not be stored or restored.
#[derive(Debug)]
pub(crate) struct OutputError(pub(crate) String);

impl std::fmt::Display for OutputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn io_error(path: &str, e: &io::Error) -> OutputError {
    OutputError(format!("`{path}`: {e}"))
}

/// The files and symlinks under `base` that `patterns` match, sorted,
/// relative to `base` with `/`. Symlinks are not followed (a symlink to a
/// directory is one output); `.git` and `.rush-cache` are never outputs.
pub(crate) fn collect(base: &Path, patterns: &[String]) -> Result<Vec<String>, OutputError> {
    let matcher = PathMatcher::new(patterns).map_err(|e| OutputError(e.to_string()))?;
    let mut found = BTreeSet::new();
    for pattern in patterns.iter().filter(|p| !p.starts_with('!')) {
        let prefix: Vec<&str> = pattern
            .split('/')
            .take_while(|c| !c.contains(['*', '?', '[', '{']))
            .filter(|c| !c.is_empty() && *c != ".")
            .collect();
        let start = prefix.iter().fold(base.to_path_buf(), |p, c| p.join(c));
        // Never through a symlinked directory on the way.
        let mut at = base.to_path_buf();
        let mut through_link = false;
        for c in prefix.iter().take(prefix.len().saturating_sub(1)) {
            at.push(c);
            if fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink()) {
                through_link = true;
            }
        }
        if through_link {
            continue;
        }
        for entry in WalkDir::new(&start)
            .follow_links(false)
            .follow_root_links(false)
        {
            let Ok(entry) = entry else { continue };
            let kind = entry.file_type();
            if !(kind.is_file() || kind.is_symlink()) {
                continue;
            }
            let Ok(rel) = entry.path().strip_prefix(base) else {
                continue;
            };
            if !matcher.is_match(rel) {
                continue;
            }
            let Some(rel) = rel.to_str() else {
                return Err(OutputError(format!(
                    "`{}`: output paths must be UTF-8",
                    rel.display()
                )));
            };
            found.insert(rel.to_owned());
            if found.len() > MAX_OUTPUT_FILES {
                return Err(OutputError(format!(
                    "the outputs match more than {MAX_OUTPUT_FILES} files"
                )));
            }
        }
    }
    Ok(found.into_iter().collect())
}

/// Stores the outputs `patterns` match under `base`, and `log`, as the
/// manifest of `key`.
pub(crate) fn store_outputs(
    backend: &dyn OutputBackend,
    key: &CacheKey,
    task: &str,
    base: &Path,
    patterns: &[String],
    log: Option<&[u8]>,
) -> Result<Manifest, OutputError> {
    let mut put = Vec::new();
    let stored = store_all(backend, key, task, base, patterns, log, &mut put);
    backend.release(&put);
    stored
}

fn store_all(
    backend: &dyn OutputBackend,
    key: &CacheKey,
    task: &str,
    base: &Path,
    patterns: &[String],
    log: Option<&[u8]>,
    put: &mut Vec<Digest>,
) -> Result<Manifest, OutputError> {
    let mut outputs = Vec::new();
    for rel in collect(base, patterns)? {
        let abs = base.join(&rel);
        let meta = fs::symlink_metadata(&abs).map_err(|e| io_error(&rel, &e))?;
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&abs).map_err(|e| io_error(&rel, &e))?;
            let Some(target) = target.to_str() else {
                return Err(OutputError(format!(
                    "`{rel}`: symlink targets must be UTF-8"
                )));
            };
            outputs.push(Output::Symlink {
                path: rel,
                target: target.to_owned(),
            });
        } else {
            let digest = backend.put_file(&abs).map_err(|e| io_error(&rel, &e))?;
            put.push(digest.clone());
            outputs.push(Output::File {
                path: rel,
                mode: meta.mode() & 0o7777,
                digest,
            });
        }
    }
    let log = match log.filter(|l| !l.is_empty()) {
        Some(bytes) => {
            let digest = backend
                .put_bytes(bytes)
                .map_err(|e| OutputError(format!("the task's output: {e}")))?;
            put.push(digest.clone());
            Some(digest)
        }
        None => None,
    };
    let manifest = Manifest {
        version: MANIFEST_VERSION,
        task: task.to_owned(),
        outputs,
        log,
    };
    backend
        .put_manifest(key, &manifest)
        .map_err(|e| OutputError(format!("the manifest: {e}")))?;
    Ok(manifest)
}

/// A relative path of normal components only.
fn safe_rel(rel: &str) -> Option<PathBuf> {
    let path = Path::new(rel);
    let ok = !rel.is_empty() && path.components().all(|c| matches!(c, Component::Normal(_)));
    ok.then(|| path.to_path_buf())
}

/// Creates the directories of `rel` under `base`, refusing to go through
/// a symlink or anything not a directory.
fn make_parents(base: &Path, rel: &Path) -> Result<(), OutputError> {
    let mut at = base.to_path_buf();
    let Some(parent) = rel.parent() else {
        return Ok(());
    };
    for c in parent.components() {
        at.push(c);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(OutputError(format!(
                    "`{}` is not a directory (a symlink or a file): outputs are never written \
                     through it",
                    at.strip_prefix(base).unwrap_or(&at).display()
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&at).map_err(|e| io_error(&at.display().to_string(), &e))?;
            }
            Err(e) => return Err(io_error(&at.display().to_string(), &e)),
        }
    }
    Ok(())
}

/// Whether the file at `abs` holds `digest`.
fn same_content(abs: &Path, digest: &Digest) -> bool {
    let Ok(mut file) = File::open(abs) else {
        return false;
    };
    let mut hasher = Sha256::new();
    if io::copy(&mut file, &mut hasher).is_err() {
        return false;
    }
    hex(&hasher.finalize()) == digest.sha256
}

/// Which outputs of `manifest` are missing or differ under `base` (by
/// size, kind and content): what [`restore`] would write.
pub(crate) fn stale_outputs<'m>(base: &Path, manifest: &'m Manifest) -> Vec<&'m Output> {
    manifest
        .outputs
        .iter()
        .filter(|o| {
            let Some(rel) = safe_rel(o.path()) else {
                return false;
            };
            let abs = base.join(rel);
            let Ok(meta) = fs::symlink_metadata(&abs) else {
                return true;
            };
            match o {
                Output::Symlink { target, .. } => {
                    !meta.file_type().is_symlink()
                        || fs::read_link(&abs).map_or(true, |t| t != Path::new(target))
                }
                Output::File { mode, digest, .. } => {
                    !meta.is_file()
                        || meta.len() != digest.size
                        || meta.mode() & 0o7777 != *mode
                        || !same_content(&abs, digest)
                }
            }
        })
        .collect()
}

/// Below this many outputs to write, a restore stays on one thread.
const RESTORES_PER_THREAD: usize = 64;

/// Writes back the outputs of `manifest` that are missing or changed
/// under `base`; returns how many were written. Each is written to a
/// temporary file beside it, then renamed over it. Directories are
/// checked (and made) first, once each; the files are then written by a
/// few threads.
pub(crate) fn restore(
    backend: &dyn OutputBackend,
    base: &Path,
    manifest: &Manifest,
) -> Result<u64, OutputError> {
    let stale = stale_outputs(base, manifest);
    let mut made = std::collections::HashSet::new();
    let mut todo = Vec::with_capacity(stale.len());
    for output in stale {
        let rel = output.path();
        let Some(relp) = safe_rel(rel) else {
            return Err(OutputError(format!(
                "`{rel}`: not a relative path inside the project"
            )));
        };
        if let Some(parent) = relp.parent()
            && made.insert(parent.to_path_buf())
        {
            make_parents(base, &relp)?;
        }
        todo.push((output, base.join(&relp)));
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cores.min(8).min(todo.len() / RESTORES_PER_THREAD).max(1);
    let chunk_len = todo.len().div_ceil(threads).max(1);
    let results: Vec<Result<(), OutputError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = todo
            .chunks(chunk_len)
            .map(|chunk| {
                scope.spawn(move || {
                    for (output, abs) in chunk {
                        write_one(backend, base, output, abs)?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(OutputError("a restore thread panicked".into())))
            })
            .collect()
    });
    for r in results {
        r?;
    }
    Ok(todo.len() as u64)
}

/// Writes one output: a temporary file beside it, then a rename.
fn write_one(
    backend: &dyn OutputBackend,
    base: &Path,
    output: &Output,
    abs: &Path,
) -> Result<(), OutputError> {
    let dir = abs.parent().unwrap_or(base);
    let tmp = unique_name(dir, "restore");
    let made = match output {
        Output::File { mode, digest, .. } => backend
            .get_to(digest, &tmp)
            .and_then(|()| fs::set_permissions(&tmp, fs::Permissions::from_mode(*mode))),
        Output::Symlink { target, .. } => std::os::unix::fs::symlink(target, &tmp),
    };
    let made = made.and_then(|()| {
        if fs::symlink_metadata(abs).is_ok_and(|m| m.is_dir()) {
            return Err(io::Error::other("a directory is in the way"));
        }
        fs::rename(&tmp, abs)
    });
    if let Err(e) = made {
        let _ = fs::remove_file(&tmp);
        return Err(io_error(output.path(), &e));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Captured output
// ---------------------------------------------------------------------------

/// A task's output as written, for replay: records of (stream, bytes),
/// each `[1 = stdout | 2 = stderr][length: u32 LE][bytes]`. Bounded by
/// [`MAX_LOG_BYTES`]: past it, `truncated`.
#[derive(Default)]
pub(crate) struct Capture {
    pub(crate) bytes: Vec<u8>,
    pub(crate) truncated: bool,
}

impl Capture {
    pub(crate) fn push(&mut self, stderr: bool, chunk: &[u8]) {
        if self.bytes.len() + chunk.len() + 5 > MAX_LOG_BYTES {
            self.truncated = true;
            return;
        }
        self.bytes.push(if stderr { 2 } else { 1 });
        self.bytes
            .extend_from_slice(&(chunk.len() as u32).to_le_bytes());
        self.bytes.extend_from_slice(chunk);
    }
}

/// The records of a captured log: (is stderr, bytes).
pub(crate) fn decode_log(mut bytes: &[u8]) -> Vec<(bool, &[u8])> {
    let mut out = Vec::new();
    while bytes.len() >= 5 {
        let stderr = bytes[0] == 2;
        let len = u32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        let Some(chunk) = bytes.get(5..5 + len) else {
            break;
        };
        out.push((stderr, chunk));
        bytes = &bytes[5 + len..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> CacheKey {
        CacheKey([n; 32])
    }

    #[test]
    fn outputs_are_restored_with_their_modes_and_symlinks_and_unchanged_ones_are_left() {
        let project = tempfile::tempdir().expect("temp");
        let store_dir = tempfile::tempdir().expect("temp");
        let store = LocalStore::new(store_dir.path().to_path_buf(), DEFAULT_LIMIT);
        let base = project.path();
        fs::create_dir_all(base.join("dist/bin")).expect("mkdir");
        fs::write(base.join("dist/app.js"), "app").expect("write");
        fs::write(base.join("dist/bin/run"), "#!/bin/sh\n").expect("write");
        fs::set_permissions(base.join("dist/bin/run"), fs::Permissions::from_mode(0o755))
            .expect("chmod");
        std::os::unix::fs::symlink("app.js", base.join("dist/latest.js")).expect("link");
        let m = store_outputs(&store, &key(1), "build", base, &["dist/**".into()], None)
            .expect("stored");
        assert_eq!(m.outputs.len(), 3);
        assert!(stale_outputs(base, &m).is_empty());

        fs::remove_dir_all(base.join("dist")).expect("rm");
        let m = store.get_manifest(&key(1)).expect("manifest");
        assert_eq!(restore(&store, base, &m).expect("restored"), 3);
        assert_eq!(
            fs::read_to_string(base.join("dist/app.js")).expect("read"),
            "app"
        );
        let mode = fs::metadata(base.join("dist/bin/run"))
            .expect("meta")
            .mode()
            & 0o777;
        assert_eq!(mode, 0o755);
        assert_eq!(
            fs::read_link(base.join("dist/latest.js")).expect("link"),
            Path::new("app.js")
        );
        fs::write(base.join("dist/app.js"), "edited").expect("edit");
        assert_eq!(restore(&store, base, &m).expect("restored"), 1);
        assert_eq!(
            fs::read_to_string(base.join("dist/app.js")).expect("read"),
            "app"
        );
    }

    #[test]
    fn a_restore_never_writes_through_a_symlinked_directory() {
        let project = tempfile::tempdir().expect("temp");
        let outside = tempfile::tempdir().expect("temp");
        let store_dir = tempfile::tempdir().expect("temp");
        let store = LocalStore::new(store_dir.path().to_path_buf(), DEFAULT_LIMIT);
        let base = project.path();
        fs::create_dir(base.join("dist")).expect("mkdir");
        fs::write(base.join("dist/a"), "a").expect("write");
        let m =
            store_outputs(&store, &key(2), "t", base, &["dist/**".into()], None).expect("stored");
        fs::remove_dir_all(base.join("dist")).expect("rm");
        std::os::unix::fs::symlink(outside.path(), base.join("dist")).expect("link");
        let err = restore(&store, base, &m).expect_err("refused");
        assert!(err.0.contains("`dist` is not a directory"), "{err}");
        assert!(!outside.path().join("a").exists());
    }

    #[test]
    fn the_least_recently_used_entries_are_evicted_past_the_limit() {
        let project = tempfile::tempdir().expect("temp");
        let store_dir = tempfile::tempdir().expect("temp");
        let store = LocalStore::new(store_dir.path().to_path_buf(), 150);
        let base = project.path();
        for n in 1..=3u8 {
            fs::write(base.join("out"), vec![n; 100]).expect("write");
            store_outputs(&store, &key(n), "t", base, &["out".into()], None).expect("stored");
        }
        // Only the last fits.
        assert!(store.get_manifest(&key(1)).is_none());
        assert!(store.get_manifest(&key(2)).is_none());
        assert!(store.get_manifest(&key(3)).is_some());
        let status = store.status();
        assert_eq!((status.entries, status.blobs, status.bytes), (1, 1, 100));
        assert_eq!(store.evict_to(0), (1, 100));
        assert_eq!(store.status(), StoreStatus::default());
    }

    #[test]
    fn a_log_round_trips() {
        let mut c = Capture::default();
        c.push(false, b"out");
        c.push(true, b"err");
        assert_eq!(
            decode_log(&c.bytes),
            vec![(false, &b"out"[..]), (true, &b"err"[..])]
        );
    }
}
