//! In-memory memo of file content hashes, kept warm by the long-lived daemon.
//!
//! [`FileHashes`] maps an absolute path to the BLAKE3 hash of the file's
//! content together with the *stamp* of the file when it was hashed
//! (`stamp.rs`: length, mtime and ctime, inode, device, link count, all
//! from one `stat`). A remembered hash is reused only when a fresh `stat`
//! gives exactly the same stamp; anything else re-reads the file.
//!
//! # Never stale: the "racy git" rule
//!
//! A stamp alone is not enough (see `stamp.rs`, where the rule is
//! explained): an entry is *trusted* only if the file had been left alone
//! for [`RACY_MARGIN`] before the hash began
//! ([`Stamp::settled`](crate::stamp::Stamp::settled)). Untrusted files are
//! simply re-hashed on every call until they have been quiet for the
//! margin.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

pub(crate) use crate::stamp::RACY_MARGIN;
use crate::stamp::{self, Kind, Stamp};

/// Default bound on the files the memo remembers
/// (`TASKRUSH_HASH_MEMO_FILES`): about 350 bytes each with the path and
/// the map's spare room (measured), so about 70 MB at most. A task with
/// more inputs than half of it is still checked correctly, by reading its
/// files again (a check the watcher answers reads nothing anyway).
pub(crate) const MEMO_FILES: usize = 200_000;

/// Thread-safe memo `absolute path -> (stamp, content hash)`.
///
/// Keyed by the path's bytes (hashing an `OsStr` is cheaper than hashing a
/// `Path`, which walks its components).
///
/// Bounded: it keeps two generations of at most half the bound each. New
/// entries go into the young one; a hit in the old one moves the entry to
/// the young one; when the young one is full, the old one is dropped (its
/// memory given back) and the young one becomes old. So the files used by
/// recent checks stay, and what an unusual glob once touched goes.
///
/// Share it between runs with an `Arc`; every method takes `&self`.
#[derive(Debug)]
pub(crate) struct FileHashes {
    memo: Mutex<Generations>,
    racy_margin: Duration,
    hits: AtomicU64,
    hashed: AtomicU64,
}

#[derive(Debug, Default)]
struct Generations {
    young: HashMap<OsString, Memo>,
    old: HashMap<OsString, Memo>,
    /// Most entries per generation.
    half: usize,
}

impl Generations {
    fn get(&mut self, path: &std::ffi::OsStr) -> Option<Memo> {
        if let Some(memo) = self.young.get(path) {
            return Some(*memo);
        }
        let (key, memo) = self.old.remove_entry(path)?;
        self.insert(key, memo);
        Some(memo)
    }

    fn insert(&mut self, path: OsString, memo: Memo) {
        if self.young.len() >= self.half && !self.young.contains_key(&path) {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(path, memo);
    }

    fn remove(&mut self, path: &std::ffi::OsStr) {
        self.young.remove(path);
        self.old.remove(path);
    }

    fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }
}

/// Tells a long computation to stop (its run was cancelled, its client
/// left). Cheap to clone; every clone sees the same flag.
#[derive(Clone, Debug, Default)]
pub(crate) struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    pub(crate) fn stop(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// What one key computation may still read: a stop flag and a budget of
/// bytes (the total size of the input files, memoized or not, is charged
/// before any is read).
#[derive(Debug)]
pub(crate) struct HashGuard {
    pub(crate) stop: StopFlag,
    bytes_left: AtomicU64,
    over: AtomicBool,
}

impl HashGuard {
    pub(crate) fn new(stop: StopFlag, max_bytes: u64) -> HashGuard {
        HashGuard {
            stop,
            bytes_left: AtomicU64::new(max_bytes),
            over: AtomicBool::new(false),
        }
    }

    /// No stop, no budget (tests, tools).
    #[cfg(test)]
    pub(crate) fn unlimited() -> HashGuard {
        HashGuard::new(StopFlag::default(), u64::MAX)
    }

    /// Charges a file of `len` bytes; an error once the budget is spent.
    fn charge(&self, len: u64) -> io::Result<()> {
        let spent = self
            .bytes_left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(len)
            });
        if spent.is_err() {
            self.over.store(true, Ordering::Relaxed);
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                "over the byte budget",
            ));
        }
        Ok(())
    }

    /// Whether the inputs were more bytes than the budget.
    pub(crate) fn over_budget(&self) -> bool {
        self.over.load(Ordering::Relaxed)
    }
}

/// The error of a computation that stopped because it was told to.
pub(crate) fn stopped() -> io::Error {
    io::Error::new(io::ErrorKind::Interrupted, "stopped: the run was cancelled")
}

/// Counters for logs and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(dead_code, reason = "for the file watcher and status (issues 5, 6)")]
pub(crate) struct FileHashStats {
    /// Hashes answered from the memo (one `stat`, no read).
    pub(crate) hits: u64,
    /// Files read and hashed.
    pub(crate) hashed: u64,
    /// Entries currently remembered.
    pub(crate) entries: usize,
}

#[derive(Clone, Copy, Debug)]
struct Memo {
    stamp: Stamp,
    hash: [u8; 32],
}

/// A file's content hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Hashed {
    pub(crate) hash: [u8; 32],
    /// The file has more than one hard link, so it can change without any
    /// event in its own directory.
    pub(crate) linked: bool,
    /// Its ctime, (seconds, nanoseconds) since the epoch: when it last
    /// changed (unlike mtime, it cannot be set, to the past or the future).
    pub(crate) changed: (i64, i64),
}

impl Hashed {
    fn new(hash: [u8; 32], stamp: &Stamp) -> Hashed {
        Hashed {
            hash,
            linked: stamp.nlink > 1,
            changed: stamp.ctime,
        }
    }
}

impl Default for FileHashes {
    fn default() -> Self {
        Self::new()
    }
}

impl FileHashes {
    /// An empty memo with the default [`RACY_MARGIN`].
    pub(crate) fn new() -> Self {
        Self::with_racy_margin(RACY_MARGIN)
    }

    /// An empty memo trusting files only once they are older than `margin`.
    /// Tests use a short margin; the daemon uses [`FileHashes::new`].
    pub(crate) fn with_racy_margin(margin: Duration) -> Self {
        let bound = std::env::var("TASKRUSH_HASH_MEMO_FILES")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(MEMO_FILES);
        Self::bounded(margin, bound)
    }

    /// An empty memo remembering at most `bound` files (at least 2).
    pub(crate) fn bounded(margin: Duration, bound: usize) -> Self {
        FileHashes {
            memo: Mutex::new(Generations {
                half: (bound / 2).max(1),
                ..Generations::default()
            }),
            racy_margin: margin,
            hits: AtomicU64::new(0),
            hashed: AtomicU64::new(0),
        }
    }

    /// BLAKE3 hash of the content of the file at `abs_path` (symlinks are
    /// followed), or `None` if there is no file there (missing, dangling or
    /// looping symlink, or a path component that is not a directory).
    ///
    /// A directory gives an `IsADirectory` error, any other non-regular file
    /// (FIFO, socket, device) an `InvalidInput` error; such files are never
    /// opened for reading.
    ///
    /// Also tells whether the file has other hard links.
    #[cfg(test)]
    pub(crate) fn hash(&self, abs_path: &Path) -> io::Result<Option<Hashed>> {
        self.hash_until(abs_path, &HashGuard::unlimited())
    }

    /// [`FileHashes::hash`], giving up with [`stopped`] (`Interrupted`)
    /// soon after the guard's flag is set, also within a large file, and
    /// with an error before reading anything once the guard's byte budget
    /// is spent.
    pub(crate) fn hash_until(
        &self,
        abs_path: &Path,
        guard: &HashGuard,
    ) -> io::Result<Option<Hashed>> {
        let stop = &guard.stop;
        if stop.is_stopped() {
            return Err(stopped());
        }
        let (stamp, kind) = match stamp::stat_path(abs_path) {
            Ok(found) => found,
            Err(err) if is_absent(&err) => {
                self.forget(abs_path);
                return Ok(None);
            }
            Err(err) => return Err(err),
        };
        check_regular(kind)?;
        guard.charge(stamp.len)?;
        let remembered = self.lock().get(abs_path.as_os_str());
        if let Some(memo) = remembered
            && memo.stamp == stamp
        {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(Hashed::new(memo.hash, &stamp)));
        }

        // Taken before the content is read: every write we might miss
        // happens after this instant.
        let started = SystemTime::now();
        let (stamp, hash) = match read_and_hash(abs_path, stamp.len, guard) {
            Ok(found) => found,
            Err(err) => {
                self.forget(abs_path);
                return if is_absent(&err) { Ok(None) } else { Err(err) };
            }
        };
        self.hashed.fetch_add(1, Ordering::Relaxed);
        let settled = stamp.settled(started, self.racy_margin);
        let mut memo = self.lock();
        if settled {
            memo.insert(abs_path.as_os_str().to_owned(), Memo { stamp, hash });
        } else {
            // Possibly racy: do not trust it next time, read it again.
            memo.remove(abs_path.as_os_str());
        }
        Ok(Some(Hashed::new(hash, &stamp)))
    }

    /// Drops what is remembered about `abs_path` (e.g. on a watcher event).
    pub(crate) fn forget(&self, abs_path: &Path) {
        self.lock().remove(abs_path.as_os_str());
    }

    /// Drops everything remembered about files under the directory `dir`
    /// (e.g. when a project is unloaded).
    #[allow(dead_code, reason = "for the file watcher and status (issues 5, 6)")]
    pub(crate) fn forget_under(&self, dir: &Path) {
        let mut memo = self.lock();
        memo.young
            .retain(|path, _| !Path::new(path).starts_with(dir));
        memo.old.retain(|path, _| !Path::new(path).starts_with(dir));
    }

    /// Drops everything.
    #[allow(dead_code, reason = "for the file watcher and status (issues 5, 6)")]
    pub(crate) fn clear(&self) {
        let mut memo = self.lock();
        memo.young = HashMap::new();
        memo.old = HashMap::new();
    }

    /// Counters since creation, and the current number of entries.
    #[allow(dead_code, reason = "for the file watcher and status (issues 5, 6)")]
    pub(crate) fn stats(&self) -> FileHashStats {
        FileHashStats {
            hits: self.hits.load(Ordering::Relaxed),
            hashed: self.hashed.load(Ordering::Relaxed),
            entries: self.lock().len(),
        }
    }

    /// Just the hash of [`FileHashes::hash`].
    #[cfg(test)]
    pub(crate) fn hash_file(&self, abs_path: &Path) -> io::Result<Option<[u8; 32]>> {
        Ok(self.hash(abs_path)?.map(|h| h.hash))
    }

    fn lock(&self) -> MutexGuard<'_, Generations> {
        // Every critical section is a single map operation, so the map is
        // consistent even if a holder panicked: recover from poisoning.
        self.memo.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Opens, checks and hashes the file; the stamp comes from the open file
/// (`fstat`), so it describes the file that was actually read.
///
/// `charged` bytes were charged to the guard's budget for it (its size);
/// what it gives beyond that (a file growing while it is read, a
/// pseudo-file such as `/proc/self/pagemap` that says it is empty and
/// reads hundreds of GiB) is charged as it is read.
fn read_and_hash(
    abs_path: &Path,
    charged: u64,
    guard: &HashGuard,
) -> io::Result<(Stamp, [u8; 32])> {
    use std::io::Read;
    let stop = &guard.stop;
    let mut file = open_for_hashing(abs_path)?;
    let (stamp, kind) = stamp::stat_open(&file)?;
    check_regular(kind)?;
    let mut unpaid = charged;
    let mut hasher = blake3::Hasher::new();
    // Streams through a 64 KiB buffer (as blake3's `update_reader` does):
    // memory stays flat for files of any size, and `stop` is looked at
    // every MiB.
    let mut buf = vec![0u8; 64 * 1024];
    let mut chunks = 0u32;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let n64 = n as u64;
        if n64 > unpaid {
            guard.charge(n64 - unpaid)?;
        }
        unpaid = unpaid.saturating_sub(n64);
        hasher.update(&buf[..n]);
        chunks = chunks.wrapping_add(1);
        if chunks.is_multiple_of(16) && stop.is_stopped() {
            return Err(stopped());
        }
    }
    Ok((stamp, *hasher.finalize().as_bytes()))
}

#[cfg(unix)]
fn open_for_hashing(abs_path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    // O_NONBLOCK: should the path have been replaced by a FIFO since the
    // `stat`, opening it must not hang (fstat then rejects it). It has no
    // effect on reading regular files.
    let nonblock = rustix::fs::OFlags::NONBLOCK.bits();
    File::options()
        .read(true)
        .custom_flags(i32::try_from(nonblock).unwrap_or(0))
        .open(abs_path)
}

#[cfg(not(unix))]
fn open_for_hashing(abs_path: &Path) -> io::Result<File> {
    File::open(abs_path)
}

fn check_regular(kind: Kind) -> io::Result<()> {
    match kind {
        Kind::File => Ok(()),
        Kind::Dir => Err(io::Error::new(
            io::ErrorKind::IsADirectory,
            "is a directory",
        )),
        Kind::Other => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file (FIFO, socket or device)",
        )),
    }
}

/// Errors meaning "there is no file at this path".
pub(crate) fn is_absent(err: &io::Error) -> bool {
    match err.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => true,
        #[cfg(unix)]
        _ => err.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()),
        #[cfg(not(unix))]
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Write;
    use std::path::PathBuf;
    use std::thread::sleep;
    use tempfile::TempDir;

    fn write(path: &Path, content: &[u8]) {
        let mut f = File::create(path).expect("create file");
        f.write_all(content).expect("write file");
    }

    fn expected(content: &[u8]) -> Option<[u8; 32]> {
        Some(*blake3::hash(content).as_bytes())
    }

    /// A memo that trusts files quiet for 50 ms, and a pause long enough to
    /// get past it (and past any coarse timestamp tick).
    const SHORT: Duration = Duration::from_millis(50);
    fn settle() {
        sleep(Duration::from_millis(120));
    }

    /// A temp dir holding `a.txt` with `content`, settled, and a memo that
    /// trusts it.
    fn settled_file(content: &[u8]) -> (TempDir, PathBuf, FileHashes) {
        let dir = TempDir::new().expect("create temp dir");
        let path = dir.path().join("a.txt");
        write(&path, content);
        settle();
        (dir, path, FileHashes::with_racy_margin(SHORT))
    }

    #[test]
    fn a_missing_file_hashes_to_none() {
        let dir = TempDir::new().expect("create temp dir");
        let hashes = FileHashes::new();
        assert_eq!(hashes.hash_file(&dir.path().join("nope")).ok(), Some(None));
        let below_a_file = dir.path().join("file/below");
        write(&dir.path().join("file"), b"x");
        assert_eq!(hashes.hash_file(&below_a_file).ok(), Some(None));
    }

    #[test]
    fn the_hash_is_the_blake3_of_the_content() {
        let dir = TempDir::new().expect("create temp dir");
        let path = dir.path().join("a.txt");
        for content in [&b""[..], b"hello", &vec![7u8; 300_000]] {
            write(&path, content);
            let hashes = FileHashes::new();
            assert_eq!(hashes.hash_file(&path).ok(), Some(expected(content)));
        }
    }

    #[test]
    fn an_unchanged_settled_file_is_answered_from_the_memo() {
        let (_dir, path, hashes) = settled_file(b"hello");
        for _ in 0..3 {
            assert_eq!(hashes.hash_file(&path).ok(), Some(expected(b"hello")));
        }
        let stats = hashes.stats();
        assert_eq!((stats.hashed, stats.hits, stats.entries), (1, 2, 1));
    }

    #[test]
    fn a_freshly_written_file_is_rehashed_every_time() {
        let dir = TempDir::new().expect("create temp dir");
        let path = dir.path().join("a.txt");
        write(&path, b"hello");
        let hashes = FileHashes::new(); // 2 s margin: the file is racy
        for _ in 0..3 {
            assert_eq!(hashes.hash_file(&path).ok(), Some(expected(b"hello")));
        }
        let stats = hashes.stats();
        assert_eq!((stats.hashed, stats.hits, stats.entries), (3, 0, 0));
    }

    #[test]
    fn same_size_rewrite_with_mtime_set_back_is_seen_even_when_trusted() {
        let dir = TempDir::new().expect("create temp dir");
        let path = dir.path().join("a.txt");
        write(&path, b"hello");
        let old = SystemTime::now() - Duration::from_secs(3600);
        File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(old))
            .expect("set mtime");
        settle();
        let hashes = FileHashes::with_racy_margin(SHORT);
        assert_eq!(hashes.hash_file(&path).ok(), Some(expected(b"hello")));
        assert_eq!(hashes.stats().entries, 1, "settled file is trusted");

        // Same length, same mtime; only ctime (and the content) differ.
        let mut f = File::options().write(true).open(&path).expect("open");
        f.write_all(b"jello").expect("rewrite");
        f.set_modified(old).expect("set mtime back");
        drop(f);
        assert_eq!(hashes.hash_file(&path).ok(), Some(expected(b"jello")));
    }

    #[test]
    fn a_file_replaced_by_rename_is_rehashed() {
        let (dir, path, hashes) = settled_file(b"one");
        assert_eq!(hashes.hash_file(&path).ok(), Some(expected(b"one")));
        let tmp = dir.path().join("a.tmp");
        write(&tmp, b"two");
        fs::rename(&tmp, &path).expect("rename");
        assert_eq!(hashes.hash_file(&path).ok(), Some(expected(b"two")));
    }

    #[test]
    fn a_deleted_file_is_forgotten() {
        let (_dir, path, hashes) = settled_file(b"one");
        assert_eq!(hashes.hash_file(&path).ok(), Some(expected(b"one")));
        fs::remove_file(&path).expect("remove");
        assert_eq!(hashes.hash_file(&path).ok(), Some(None));
        assert_eq!(hashes.stats().entries, 0);
    }

    #[test]
    fn forget_and_clear_drop_entries() {
        let dir = TempDir::new().expect("create temp dir");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        write(&a, b"a");
        write(&b, b"b");
        settle();
        let hashes = FileHashes::with_racy_margin(SHORT);
        for p in [&a, &b] {
            hashes.hash_file(p).expect("hash");
        }
        hashes.forget(&a);
        assert_eq!(hashes.stats().entries, 1);
        hashes.clear();
        assert_eq!(hashes.stats().entries, 0);
        hashes.hash_file(&a).expect("hash");
        hashes.forget_under(dir.path());
        assert_eq!(hashes.stats().entries, 0);
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_is_an_error_and_is_never_opened() {
        use rustix::fs::{CWD, FileType, Mode, mknodat};
        let dir = TempDir::new().expect("create temp dir");
        let fifo = dir.path().join("fifo");
        mknodat(CWD, &fifo, FileType::Fifo, Mode::from(0o644), 0).expect("mkfifo");
        let err = FileHashes::new().hash_file(&fifo).expect_err("fifo");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn a_directory_is_an_error() {
        let dir = TempDir::new().expect("create temp dir");
        let err = FileHashes::new().hash_file(dir.path()).expect_err("dir");
        assert_eq!(err.kind(), io::ErrorKind::IsADirectory);
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_are_followed_and_loops_are_absent() {
        use std::os::unix::fs::symlink;
        let dir = TempDir::new().expect("create temp dir");
        write(&dir.path().join("target"), b"content");
        symlink("target", dir.path().join("link")).expect("symlink");
        symlink("loop2", dir.path().join("loop1")).expect("symlink");
        symlink("loop1", dir.path().join("loop2")).expect("symlink");
        symlink("nowhere", dir.path().join("dangling")).expect("symlink");
        let hashes = FileHashes::new();
        let hash = |name: &str| hashes.hash_file(&dir.path().join(name)).ok();
        assert_eq!(hash("link"), Some(expected(b"content")));
        assert_eq!(hash("loop1"), Some(None));
        assert_eq!(hash("dangling"), Some(None));
    }

    #[test]
    fn the_memo_keeps_at_most_its_bound_and_the_recently_used_files() {
        let dir = TempDir::new().expect("create temp dir");
        let paths: Vec<PathBuf> = (0..10).map(|i| dir.path().join(format!("f{i}"))).collect();
        for (i, p) in paths.iter().enumerate() {
            write(p, format!("file {i}").as_bytes());
        }
        settle();
        let hashes = FileHashes::bounded(SHORT, 4);
        for p in &paths {
            assert!(hashes.hash_file(p).is_ok());
            assert!(hashes.stats().entries <= 4, "{:?}", hashes.stats());
        }
        // The last two are remembered: answered without reading.
        let read = hashes.stats().hashed;
        for p in &paths[8..] {
            assert!(hashes.hash_file(p).is_ok());
        }
        assert_eq!(hashes.stats().hashed, read);
        // A file used again moves to the young generation and stays.
        for p in paths[8..].iter().chain(&paths[..3]) {
            assert!(hashes.hash_file(p).is_ok());
        }
        assert!(hashes.hash_file(&paths[8]).is_ok());
        assert!(hashes.stats().entries <= 4);
    }

    #[test]
    fn hashing_stops_when_told_to() {
        let dir = TempDir::new().expect("create temp dir");
        let path = dir.path().join("big");
        File::create(&path)
            .and_then(|f| f.set_len(1 << 30))
            .expect("sparse file");
        let guard = HashGuard::new(StopFlag::default(), u64::MAX);
        guard.stop.stop();
        let err = FileHashes::new()
            .hash_until(&path, &guard)
            .expect_err("stopped");
        assert_eq!(err.kind(), io::ErrorKind::Interrupted);
        let small = HashGuard::new(StopFlag::default(), 1 << 20);
        assert!(FileHashes::new().hash_until(&path, &small).is_err());
        assert!(small.over_budget());
    }

    #[test]
    fn concurrent_use_from_several_threads_agrees() {
        let dir = TempDir::new().expect("create temp dir");
        let paths: Vec<PathBuf> = (0..20).map(|i| dir.path().join(format!("f{i}"))).collect();
        for (i, p) in paths.iter().enumerate() {
            write(p, format!("file {i}").as_bytes());
        }
        settle();
        let hashes = FileHashes::with_racy_margin(SHORT);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for (i, p) in paths.iter().enumerate() {
                        let want = expected(format!("file {i}").as_bytes());
                        assert_eq!(hashes.hash_file(p).ok(), Some(want));
                    }
                });
            }
        });
        assert_eq!(hashes.stats().entries, 20);
    }
}
