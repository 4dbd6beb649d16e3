//! The content-based cache: cache keys, and the on-disk store `.rush-cache/`.
//!
//! A task with `cache_files` is up to date when its key equals the key
//! stored after its last successful run. The key covers the task's name,
//! its `cmd`, its expanded `env`, the list of its input files (relative
//! paths) and the content of each (or its absence).
//!
//! How a run uses it (the protocol, in `cache/lookup.rs`): compute the key
//! *before* running; if the store holds it, the task is cached; otherwise
//! [`CacheStore::invalidate`], run, and only if the run succeeded (and its
//! inputs did not change meanwhile) [`CacheStore::store`].
//!
//! An [`InputError`] while computing the key means "unknown": run the task.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::cache::file_hashes::{FileHashes, HashGuard, Hashed, StopFlag};
use crate::cache::input_files::{self, InputError, InputFile, InputLimits};

/// Name of the cache directory in the project root.
pub(crate) const CACHE_DIR: &str = ".rush-cache";

/// Version of the key derivation and of the entry format. Changing either
/// turns every existing entry into a miss.
const VERSION: u32 = 1;

/// BLAKE3 key-derivation context: keys of this scheme can never equal a
/// plain hash of some file or another scheme's key.
const KEY_CONTEXT: &str = "taskrush 2025-01 task cache key v1";

/// Entries are tiny; anything bigger is not ours.
const MAX_ENTRY_BYTES: u64 = 64 * 1024;

/// A task's cache key: 32 bytes of BLAKE3, shown as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct CacheKey(pub [u8; 32]);

impl CacheKey {
    pub(crate) fn to_hex(self) -> String {
        use fmt::Write as _;
        let mut hex = String::with_capacity(64);
        for b in self.0 {
            // Writing to a String cannot fail.
            let _ = write!(hex, "{b:02x}");
        }
        hex
    }

    /// Parses exactly 64 hex digits (either case).
    pub(crate) fn from_hex(hex: &str) -> Option<CacheKey> {
        let hex = hex.as_bytes();
        if hex.len() != 64 {
            return None;
        }
        let mut key = [0u8; 32];
        for (byte, pair) in key.iter_mut().zip(hex.chunks_exact(2)) {
            let digit = |c: u8| (c as char).to_digit(16);
            *byte = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
        }
        Some(CacheKey(key))
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({})", self.to_hex())
    }
}

/// A key and what went into it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    pub(crate) key: CacheKey,
    /// Number of input files (including named files that are absent).
    pub(crate) input_files: usize,
    /// The directories whose events would show any change to the inputs
    /// ([`InputFiles::watch_dirs`](input_files::InputFiles::watch_dirs));
    /// `None` when watching cannot see every change (symlinked or
    /// hard-linked inputs, patterns leaving the root).
    pub(crate) watch_dirs: Option<Vec<crate::watch::WatchDir>>,
    /// When the most recently changed input last changed (its ctime),
    /// (seconds, nanoseconds) since the epoch, and which one it is
    /// (relative to the root).
    pub(crate) last_change: (i64, i64),
    pub(crate) last_changed: Option<PathBuf>,
}

/// Everything in a task's key except its input files: equal recipes and
/// equal input files give equal keys. Cheap (no file system access).
pub(crate) fn recipe(
    task: &str,
    cmd: &str,
    env: &[(String, String)],
    patterns: &[String],
) -> CacheKey {
    let mut key = KeyWriter(blake3::Hasher::new_derive_key(KEY_CONTEXT));
    key.bytes(task.as_bytes());
    key.bytes(cmd.as_bytes());
    key.count(env.len());
    for (name, value) in env {
        key.bytes(name.as_bytes());
        key.bytes(value.as_bytes());
    }
    key.count(patterns.len());
    for p in patterns {
        key.bytes(p.as_bytes());
    }
    CacheKey(*key.0.finalize().as_bytes())
}

/// The cache key of a task; see [`fingerprint`] for the input count.
#[cfg(test)]
pub(crate) fn cache_key(
    root: &Path,
    task: &str,
    cmd: &str,
    env: &[(String, String)],
    patterns: &[String],
    hashes: &FileHashes,
) -> Result<CacheKey, InputError> {
    fingerprint(root, task, cmd, env, patterns, hashes).map(|f| f.key)
}

/// The cache key of a task and the number of its input files.
///
/// `root` is the project root, `patterns` the task's `cache_files`, `env`
/// the task's expanded `env` in any order (sorted here by name; for a name
/// given twice the order given is kept, as the last one wins when run).
///
/// Blocking (file system calls, and a few scoped threads for large input
/// sets): from async code call it inside `tokio::task::spawn_blocking`.
#[cfg(test)]
pub(crate) fn fingerprint(
    root: &Path,
    task: &str,
    cmd: &str,
    env: &[(String, String)],
    patterns: &[String],
    hashes: &FileHashes,
) -> Result<Fingerprint, InputError> {
    let recipe = Recipe {
        task,
        cmd,
        env,
        patterns,
    };
    let limits = InputLimits::default();
    fingerprint_until(root, &recipe, hashes, &limits, &StopFlag::default())
}

/// What a key covers besides the input files.
pub(crate) struct Recipe<'a> {
    pub(crate) task: &'a str,
    pub(crate) cmd: &'a str,
    pub(crate) env: &'a [(String, String)],
    pub(crate) patterns: &'a [String],
}

/// [`fingerprint`] within `limits` (an error names the bound passed: the
/// input list is never cut short), giving up with [`InputError::Stopped`]
/// soon after `stop` is set, between files and within large ones.
pub(crate) fn fingerprint_until(
    root: &Path,
    recipe: &Recipe<'_>,
    hashes: &FileHashes,
    limits: &InputLimits,
    stop: &StopFlag,
) -> Result<Fingerprint, InputError> {
    let Recipe {
        task,
        cmd,
        env,
        patterns,
    } = *recipe;
    let inputs = input_files::expand_until(root, patterns, limits, stop)?;
    let mut key = KeyWriter(blake3::Hasher::new_derive_key(KEY_CONTEXT));
    key.bytes(task.as_bytes());
    key.bytes(cmd.as_bytes());

    let mut env_sorted: Vec<&(String, String)> = env.iter().collect();
    env_sorted.sort_by(|a, b| a.0.cmp(&b.0));
    key.count(env_sorted.len());
    for (name, value) in env_sorted {
        key.bytes(name.as_bytes());
        key.bytes(value.as_bytes());
    }

    let files: Vec<InputFile<'_>> = inputs.iter().collect();
    let guard = HashGuard::new(stop.clone(), limits.bytes);
    let file_hashes = hash_all(&files, hashes, &guard);
    if stop.is_stopped() {
        return Err(InputError::Stopped);
    }
    if guard.over_budget() {
        let unit = match limits.bytes {
            b if b >= 1 << 30 => format!(" ({} GiB)", b >> 30),
            b if b >= 1 << 20 => format!(" ({} MiB)", b >> 20),
            _ => String::new(),
        };
        return Err(InputError::Limit(format!(
            "the files `cache_files` match are more than {} bytes{unit} in all, the limit \
             for one task\nhint: narrow the patterns, or raise TASKRUSH_MAX_INPUT_BYTES in the \
             daemon's environment",
            limits.bytes,
        )));
    }
    let mut linked = false;
    let mut last_change = (i64::MIN, 0);
    let mut last_changed = None;
    key.count(files.len());
    // An error ends its thread's share early; the entries before it are
    // in line with `files`, so the first error is met before any
    // misalignment.
    for (file, hash) in files.iter().zip(file_hashes) {
        let hash = hash.map_err(|source| InputError::Io {
            path: file.rel.to_path_buf(),
            source,
        })?;
        key.bytes(&file.rel_bytes());
        match hash {
            Some(hashed) => {
                linked |= hashed.linked;
                if hashed.changed > last_change {
                    last_change = hashed.changed;
                    last_changed = Some(file.rel);
                }
                key.0.update(&[1]);
                key.0.update(&hashed.hash);
            }
            None => {
                key.0.update(&[0]);
            }
        }
    }
    // Directories reached again through a link, not walked again: the
    // files below them are inputs under those paths too. (Absent when
    // there are none, so other keys are as before.)
    let aliases = inputs.aliases();
    if !aliases.is_empty() {
        key.bytes(b"aliases");
        key.count(aliases.len());
        for alias in aliases {
            key.bytes(alias.path.as_os_str().as_encoded_bytes());
            key.bytes(alias.first.as_os_str().as_encoded_bytes());
        }
    }
    Ok(Fingerprint {
        key: CacheKey(*key.0.finalize().as_bytes()),
        input_files: inputs.len(),
        watch_dirs: inputs
            .watch_dirs()
            .filter(|_| !linked)
            .map(<[crate::watch::WatchDir]>::to_vec),
        last_change,
        last_changed: last_changed.map(Path::to_path_buf),
    })
}

/// What a task's last successful run saw, for `run --explain`: hashes of
/// its command, of its `dir` and of its arguments (apart, so the reasons
/// tell them apart), of each `env` value and dotenv file (by name), its
/// patterns, and each input file's content hash (`None`: absent). Stored
/// beside its entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct InputsRecord {
    pub(crate) cmd: String,
    /// Hash of the task's `dir` (records older than this field: empty).
    #[serde(default)]
    pub(crate) dir: String,
    /// Hash of the arguments (records older than this field: empty).
    #[serde(default)]
    pub(crate) args: String,
    pub(crate) env: std::collections::BTreeMap<String, String>,
    pub(crate) patterns: Vec<String>,
    pub(crate) files: std::collections::BTreeMap<String, Option<String>>,
}

/// The [`InputsRecord`] of a recipe as of now (blocking, as
/// [`fingerprint_until`]).
pub(crate) fn inputs_record(
    root: &Path,
    recipe: &Recipe<'_>,
    hashes: &FileHashes,
    limits: &InputLimits,
    stop: &StopFlag,
) -> Result<InputsRecord, InputError> {
    let short = |bytes: &[u8]| CacheKey(*blake3::hash(bytes).as_bytes()).to_hex()[..32].to_owned();
    let inputs = input_files::expand_until(root, recipe.patterns, limits, stop)?;
    let files: Vec<InputFile<'_>> = inputs.iter().collect();
    let guard = HashGuard::new(stop.clone(), limits.bytes);
    let (cmd, dir, args) = split_command_line(recipe.cmd);
    let mut record = InputsRecord {
        cmd: short(cmd.as_bytes()),
        dir: short(dir.as_bytes()),
        args: short(args.as_bytes()),
        env: recipe
            .env
            .iter()
            .map(|(k, v)| (k.clone(), short(v.as_bytes())))
            .collect(),
        patterns: recipe.patterns.to_vec(),
        files: Default::default(),
    };
    for (file, hash) in files.iter().zip(hash_all(&files, hashes, &guard)) {
        let hash = hash.map_err(|source| InputError::Io {
            path: file.rel.to_path_buf(),
            source,
        })?;
        let rel = String::from_utf8_lossy(&file.rel_bytes()).into_owned();
        record.files.insert(
            rel,
            hash.map(|h| CacheKey(h.hash).to_hex()[..32].to_owned()),
        );
    }
    Ok(record)
}

/// The command line of a cache key (`before\0cmd\0after`, then
/// `\0dir\0DIR` with a `dir`, then `\0args\0N:ARG…` with arguments; see
/// `run::runner::task_command_line`) as (command, dir, arguments), so that
/// `run --explain` tells a changed command from changed arguments or `dir`.
/// A line of another shape (a NUL in a command) stays whole in the command.
fn split_command_line(line: &str) -> (&str, &str, &str) {
    // The three hooks and commands: the first three NUL-separated parts.
    let mut ends = line.match_indices('\0').map(|(i, _)| i);
    let (Some(_), Some(second)) = (ends.next(), ends.next()) else {
        return (line, "", "");
    };
    let cmd_end = line[second + 1..]
        .find('\0')
        .map_or(line.len(), |i| second + 1 + i);
    let (cmd, mut rest) = line.split_at(cmd_end);
    let mut dir = "";
    if let Some(after) = rest.strip_prefix("\0dir\0") {
        let end = after.find('\0').unwrap_or(after.len());
        dir = &after[..end];
        rest = &after[end..];
    }
    match rest {
        "" => (cmd, dir, ""),
        args if args.starts_with("\0args\0") => (cmd, dir, args),
        _ => (line, "", ""),
    }
}

/// Below this many files per thread, hashing stays on the calling thread.
const FILES_PER_THREAD: usize = 1024;

/// At most this many threads hash one task's inputs.
const MAX_THREADS: usize = 8;

/// Hashes (or finds in the memo) every file, in order; large input sets are
/// split over a few scoped threads (the `stat` calls dominate a warm check,
/// and they run in parallel on separate cores).
fn hash_all(
    files: &[InputFile<'_>],
    hashes: &FileHashes,
    guard: &HashGuard,
) -> Vec<io::Result<Option<Hashed>>> {
    // Stops at the first error (it fails the key anyway): told to stop,
    // over budget, unreadable.
    let hash_chunk = |chunk: &[InputFile<'_>]| -> Vec<_> {
        let mut out = Vec::with_capacity(chunk.len());
        for f in chunk {
            let hashed = hashes.hash_until(f.abs, guard);
            let failed = hashed.is_err();
            out.push(hashed);
            if failed {
                break;
            }
        }
        out
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cores
        .min(MAX_THREADS)
        .min(files.len() / FILES_PER_THREAD)
        .max(1);
    if threads == 1 {
        return hash_chunk(files);
    }
    let chunk_len = files.len().div_ceil(threads);
    let mut chunks = files.chunks(chunk_len);
    let first = chunks.next().unwrap_or_default();
    std::thread::scope(|scope| {
        let others: Vec<_> = chunks
            .map(|chunk| scope.spawn(move || hash_chunk(chunk)))
            .collect();
        let mut all = hash_chunk(first);
        for handle in others {
            match handle.join() {
                Ok(part) => all.extend(part),
                // hash_file does not panic; if it did, pass it on.
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        all
    })
}

/// Unambiguous encoding: every variable-length field is length-prefixed,
/// so ("ab", "c") and ("a", "bc") give different keys.
struct KeyWriter(blake3::Hasher);

impl KeyWriter {
    fn count(&mut self, n: usize) {
        self.0.update(&(n as u64).to_le_bytes());
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.count(bytes.len());
        self.0.update(bytes);
    }
}

/// The key of each task's last successful run, in `<root>/.rush-cache/`:
/// one small JSON file per task, `{"version":1,"task":"…","key":"<hex>"}`.
#[derive(Clone, Debug)]
pub(crate) struct CacheStore {
    root: PathBuf,
}

#[derive(Serialize)]
struct EntryOut<'a> {
    version: u32,
    task: &'a str,
    key: String,
}

#[derive(Deserialize)]
struct EntryIn {
    version: u32,
    task: String,
    key: String,
}

impl CacheStore {
    /// The store of the project at `project_root`. Nothing is created until
    /// the first [`CacheStore::store`].
    pub(crate) fn new(project_root: impl Into<PathBuf>) -> CacheStore {
        CacheStore {
            root: project_root.into(),
        }
    }

    /// `<root>/.rush-cache`.
    pub(crate) fn dir(&self) -> PathBuf {
        self.root.join(CACHE_DIR)
    }

    /// Where the entry of `task` lives.
    pub(crate) fn entry_path(&self, task: &str) -> PathBuf {
        self.dir().join(entry_file_name(task))
    }

    /// The key stored for `task`. Missing, unreadable, corrupt, truncated,
    /// foreign or wrong-version entries are all a miss.
    pub(crate) fn load(&self, task: &str) -> Option<CacheKey> {
        // A `.rush-cache/` can come with a repository: an entry that is a
        // symlink to a FIFO or a device must neither block nor be read.
        use std::os::unix::fs::OpenOptionsExt;
        let nonblock = i32::try_from(rustix::fs::OFlags::NONBLOCK.bits()).unwrap_or(0);
        let file = File::options()
            .read(true)
            .custom_flags(nonblock)
            .open(self.entry_path(task))
            .ok()?;
        if !file.metadata().ok()?.is_file() {
            return None;
        }
        let mut text = Vec::new();
        file.take(MAX_ENTRY_BYTES + 1).read_to_end(&mut text).ok()?;
        if text.len() as u64 > MAX_ENTRY_BYTES {
            return None;
        }
        let entry: EntryIn = serde_json::from_slice(&text).ok()?;
        if entry.version != VERSION || entry.task != task {
            return None;
        }
        CacheKey::from_hex(&entry.key)
    }

    /// Records `key` as the key of `task`'s last successful run. Atomic: a
    /// reader sees the old entry or the new one, never a mix, and
    /// concurrent writers each write their own temporary file (the last
    /// rename wins).
    pub(crate) fn store(&self, task: &str, key: &CacheKey) -> io::Result<()> {
        let dir = self.dir();
        self.ensure_dir(&dir)?;
        let name = entry_file_name(task);
        let json = serde_json::to_vec(&EntryOut {
            version: VERSION,
            task,
            key: key.to_hex(),
        })?;
        write_atomically(&dir, &name, &json)
    }

    /// Records what `task`'s last successful run saw (`run --explain`).
    pub(crate) fn store_inputs(&self, task: &str, record: &InputsRecord) -> io::Result<()> {
        let dir = self.dir();
        self.ensure_dir(&dir)?;
        let name = entry_file_name(task).replacen("t-", "x-", 1);
        write_atomically(&dir, &name, &serde_json::to_vec(record)?)
    }

    /// What `task`'s last successful run saw, if recorded.
    pub(crate) fn load_inputs(&self, task: &str) -> Option<InputsRecord> {
        let name = entry_file_name(task).replacen("t-", "x-", 1);
        let path = self.dir().join(name);
        if !fs::symlink_metadata(&path).ok()?.is_file() {
            return None;
        }
        serde_json::from_slice(&fs::read(path).ok()?).ok()
    }

    /// Forgets `task`'s entry (absent already is fine).
    pub(crate) fn invalidate(&self, task: &str) -> io::Result<()> {
        match fs::remove_file(self.entry_path(task)) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        }
    }

    /// Creates `.rush-cache/` with a `.gitignore` of `*` (so it is never
    /// committed) and a `CACHEDIR.TAG` (so backup tools skip it).
    fn ensure_dir(&self, dir: &Path) -> io::Result<()> {
        match fs::create_dir(dir) {
            Ok(()) => {
                write_atomically(dir, ".gitignore", b"# Created by TaskRush.\n*\n")?;
                write_atomically(
                    dir,
                    "CACHEDIR.TAG",
                    b"Signature: 8a477f597d28d172789f06886806bc55\n\
                      # This file is a cache directory tag created by TaskRush.\n\
                      # For information about cache directory tags see https://bford.info/cachedir/\n",
                )
            }
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("`{CACHE_DIR}` is not a directory"),
            )),
            Err(err) => Err(err),
        }
    }
}

/// `<readable prefix>-<hash of the name>.json`: the prefix keeps only
/// `[A-Za-z0-9_.-]` (others become `_`, at most 40 characters) so listings
/// stay readable; the hash makes the name unique for any task name,
/// including ones with `/`, `:`, unicode or differing only in case.
fn entry_file_name(task: &str) -> String {
    let prefix: String = task
        .chars()
        .take(40)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let hash = blake3::hash(task.as_bytes());
    let hex = CacheKey(*hash.as_bytes()).to_hex();
    // 128 bits of the name's hash: collisions are not a concern, and the
    // entry also records the full name, which `load` checks.
    format!("t-{prefix}-{}.json", &hex[..32])
}

/// Writes `dir/name` by writing a uniquely named temporary file in `dir`
/// and renaming it over `name`.
fn write_atomically(dir: &Path, name: &str, content: &[u8]) -> io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let pid = std::process::id();
    let mut attempt = 0;
    let (tmp, mut file) = loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".tmp-{pid}-{n}-{name}"));
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(file) => break (tmp, file),
            // Left over by a crashed process that had our pid: next name.
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists && attempt < 100 => {
                attempt += 1;
            }
            Err(err) => return Err(err),
        }
    };
    let written = file
        .write_all(content)
        .and_then(|()| file.flush())
        .and_then(|()| {
            drop(file);
            fs::rename(&tmp, dir.join(name))
        });
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_splits_into_command_dir_and_arguments() {
        assert_eq!(split_command_line("b\0c\0a"), ("b\0c\0a", "", ""));
        assert_eq!(
            split_command_line("b\0c\0a\0dir\0web"),
            ("b\0c\0a", "web", "")
        );
        assert_eq!(
            split_command_line("\0c\0\0dir\0args\0args\x004:one"),
            ("\0c\0", "args", "\0args\x004:one")
        );
        assert_eq!(
            split_command_line("\0c\0\0args\x003:two"),
            ("\0c\0", "", "\0args\x003:two")
        );
        assert_eq!(split_command_line("odd\0x\0y\0z"), ("odd\0x\0y\0z", "", ""));
    }

    use super::*;
    use std::time::{Duration, SystemTime};

    use tempfile::TempDir;

    /// Write `rel` under `dir`, creating its directories.
    fn put(dir: &TempDir, rel: &str, content: &str) {
        let path = dir.path().join(rel);
        fs::create_dir_all(path.parent().expect("has parent")).expect("mkdir");
        fs::write(path, content).expect("write");
    }

    /// A task as the cache sees it.
    #[derive(Clone)]
    struct Task {
        name: &'static str,
        cmd: &'static str,
        env: Vec<(String, String)>,
        patterns: Vec<String>,
    }

    fn build() -> Task {
        Task {
            name: "build",
            cmd: "cargo build",
            env: vec![("MODE".into(), "debug".into())],
            patterns: vec!["src/**/*.rs".into(), "Cargo.toml".into()],
        }
    }

    fn fingerprint_of(
        dir: &TempDir,
        task: &Task,
        hashes: &FileHashes,
    ) -> Result<Fingerprint, InputError> {
        fingerprint(
            dir.path(),
            task.name,
            task.cmd,
            &task.env,
            &task.patterns,
            hashes,
        )
    }

    fn key(dir: &TempDir, task: &Task, hashes: &FileHashes) -> CacheKey {
        fingerprint_of(dir, task, hashes).expect("cache key").key
    }

    fn project() -> TempDir {
        let dir = TempDir::new().expect("create temp dir");
        put(&dir, "Cargo.toml", "[package]");
        put(&dir, "src/main.rs", "fn main() {}");
        put(&dir, "src/util/mod.rs", "pub fn f() {}");
        put(&dir, "README.md", "hi");
        dir
    }

    #[test]
    fn unchanged_files_give_the_same_key_cold_and_warm() {
        let dir = project();
        let hashes = FileHashes::new();
        let first = key(&dir, &build(), &hashes);
        assert_eq!(key(&dir, &build(), &hashes), first);
        assert_eq!(key(&dir, &build(), &FileHashes::new()), first);
    }

    #[test]
    fn each_kind_of_change_gives_a_different_key() {
        type Change = fn(&TempDir, &mut Task);
        let changes: &[(&str, Change)] = &[
            ("content of an input changes", |d, _| {
                put(d, "src/main.rs", "fn main() {1}")
            }),
            ("a file matching a glob is added", |d, _| {
                put(d, "src/util/new.rs", "")
            }),
            ("an input is renamed", |d, _| {
                fs::rename(d.path().join("src/main.rs"), d.path().join("src/main2.rs"))
                    .expect("rename")
            }),
            ("an input is deleted", |d, _| {
                fs::remove_file(d.path().join("src/util/mod.rs")).expect("rm")
            }),
            ("a literal input is deleted", |d, _| {
                fs::remove_file(d.path().join("Cargo.toml")).expect("rm")
            }),
            ("the command changes", |_, t| {
                t.cmd = "cargo build --release"
            }),
            ("an env value changes", |_, t| t.env[0].1 = "release".into()),
            ("an env var is added", |_, t| {
                t.env.push(("RUSTFLAGS".into(), "".into()))
            }),
            ("the task name changes", |_, t| t.name = "build2"),
            ("a pattern is added", |_, t| t.patterns.push("*.md".into())),
        ];
        for (what, change) in changes {
            let dir = project();
            let hashes = FileHashes::new();
            let mut task = build();
            let before = key(&dir, &task, &hashes);
            change(&dir, &mut task);
            assert_ne!(key(&dir, &task, &hashes), before, "when {what}");
        }
    }

    #[test]
    fn files_outside_the_patterns_do_not_change_the_key() {
        let dir = project();
        let hashes = FileHashes::new();
        let before = key(&dir, &build(), &hashes);
        put(&dir, "README.md", "changed");
        put(&dir, "src/notes.txt", "not rust");
        put(&dir, ".git/src/x.rs", "");
        fs::create_dir_all(dir.path().join("src/empty_dir.rs")).expect("mkdir");
        assert_eq!(key(&dir, &build(), &hashes), before);
    }

    #[test]
    fn same_size_rewrite_with_mtime_set_back_gives_a_different_key() {
        let dir = project();
        let path = dir.path().join("src/main.rs");
        let old = SystemTime::now() - Duration::from_secs(3600);
        let set_old = || {
            File::options()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_modified(old))
                .expect("set mtime")
        };
        set_old();
        // Default margin, and a margin the file is already past: both see it.
        for hashes in [
            FileHashes::new(),
            FileHashes::with_racy_margin(Duration::ZERO),
        ] {
            put(&dir, "src/main.rs", "fn main() {}");
            set_old();
            std::thread::sleep(Duration::from_millis(30));
            let before = key(&dir, &build(), &hashes);
            assert_eq!(key(&dir, &build(), &hashes), before);
            put(&dir, "src/main.rs", "fn main(){2}"); // same length
            set_old();
            assert_ne!(key(&dir, &build(), &hashes), before);
        }
    }

    #[test]
    fn env_order_does_not_matter_but_its_content_does() {
        let dir = project();
        let hashes = FileHashes::new();
        let mut task = build();
        task.env = vec![("A".into(), "1".into()), ("B".into(), "2".into())];
        let before = key(&dir, &task, &hashes);
        task.env.reverse();
        assert_eq!(key(&dir, &task, &hashes), before);
        task.env = vec![("A".into(), "12".into()), ("B".into(), "".into())];
        assert_ne!(key(&dir, &task, &hashes), before);
    }

    #[test]
    fn fields_are_domain_separated() {
        let dir = TempDir::new().expect("create temp dir");
        let hashes = FileHashes::new();
        let k = |name, cmd| cache_key(dir.path(), name, cmd, &[], &[], &hashes).expect("key");
        assert_ne!(k("ab", "c"), k("a", "bc"));
        let env = |pairs: &[(&str, &str)]| {
            let env: Vec<(String, String)> = pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
            cache_key(dir.path(), "t", "c", &env, &[], &hashes).expect("key")
        };
        assert_ne!(env(&[("AB", "C")]), env(&[("A", "BC")]));
    }

    #[test]
    fn a_task_matching_no_file_is_cacheable() {
        let dir = TempDir::new().expect("create temp dir");
        let hashes = FileHashes::new();
        let patterns = vec!["gen/**/*.proto".to_string()];
        let f = fingerprint(dir.path(), "t", "c", &[], &patterns, &hashes).expect("key");
        assert_eq!(f.input_files, 0);
        let again = fingerprint(dir.path(), "t", "c", &[], &patterns, &hashes).expect("key");
        assert_eq!(again, f);
    }

    #[test]
    fn a_literal_file_missing_then_created_changes_the_key() {
        let dir = TempDir::new().expect("create temp dir");
        let hashes = FileHashes::new();
        let patterns = vec!["config.json".to_string()];
        let f = |h: &FileHashes| fingerprint(dir.path(), "t", "c", &[], &patterns, h).expect("key");
        let missing = f(&hashes);
        assert_eq!(missing.input_files, 1);
        assert_eq!(f(&hashes), missing);
        put(&dir, "config.json", "");
        assert_ne!(
            f(&hashes).key,
            missing.key,
            "an empty file is not an absent one"
        );
    }

    #[test]
    fn fingerprint_counts_input_files() {
        let dir = project();
        let t = build();
        let f = fingerprint_of(&dir, &t, &FileHashes::new()).expect("key");
        assert_eq!(f.input_files, 3);
    }

    #[cfg(unix)]
    #[test]
    fn an_unreadable_input_is_an_error_naming_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = project();
        let path = dir.path().join("src/main.rs");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o000)).expect("chmod");
        if File::open(&path).is_ok() {
            return; // running as root: permissions are not enforced
        }
        let t = build();
        let err = fingerprint_of(&dir, &t, &FileHashes::new()).expect_err("unreadable");
        assert!(err.to_string().contains("`src/main.rs`"), "{err}");
    }

    #[test]
    fn store_then_load_round_trips() {
        let dir = TempDir::new().expect("create temp dir");
        let store = CacheStore::new(dir.path());
        let key = CacheKey([7; 32]);
        assert_eq!(store.load("build"), None);
        store.store("build", &key).expect("store");
        assert_eq!(store.load("build"), Some(key));
        let other = CacheKey([9; 32]);
        store.store("build", &other).expect("store again");
        assert_eq!(store.load("build"), Some(other));
        store.invalidate("build").expect("invalidate");
        assert_eq!(store.load("build"), None);
        store.invalidate("build").expect("invalidate twice");
    }

    #[test]
    fn the_cache_dir_is_created_with_a_gitignore() {
        let dir = TempDir::new().expect("create temp dir");
        let store = CacheStore::new(dir.path());
        assert!(!store.dir().exists(), "created lazily");
        store.store("t", &CacheKey([0; 32])).expect("store");
        let gitignore = fs::read_to_string(store.dir().join(".gitignore")).expect("gitignore");
        assert!(gitignore.lines().any(|l| l == "*"));
        assert!(store.dir().join("CACHEDIR.TAG").is_file());
        let names: Vec<String> = fs::read_dir(store.dir())
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!names.iter().any(|n| n.starts_with(".tmp")), "{names:?}");
    }

    #[test]
    fn task_names_with_slashes_colons_and_unicode_have_their_own_entries() {
        let dir = TempDir::new().expect("create temp dir");
        let store = CacheStore::new(dir.path());
        let names = [
            "build",
            "Build",
            "web/build",
            "web:build",
            "web_build",
            "../../etc/passwd",
            "déploiement 🚀",
            "",
            ".",
            "..",
            &"x".repeat(300),
        ];
        for (i, name) in names.iter().enumerate() {
            store.store(name, &CacheKey([i as u8; 32])).expect(name);
            let file = store.entry_path(name);
            assert_eq!(file.parent(), Some(store.dir().as_path()), "{name:?}");
        }
        for (i, name) in names.iter().enumerate() {
            assert_eq!(store.load(name), Some(CacheKey([i as u8; 32])), "{name:?}");
        }
        assert_eq!(
            fs::read_dir(store.dir()).expect("read dir").count(),
            names.len() + 2
        );
    }

    #[test]
    fn damaged_entries_are_misses() {
        let dir = TempDir::new().expect("create temp dir");
        let store = CacheStore::new(dir.path());
        let key = CacheKey([1; 32]);
        store.store("t", &key).expect("store");
        let good = fs::read_to_string(store.entry_path("t")).expect("read");
        let hex = key.to_hex();
        let damaged: Vec<(&str, String)> = vec![
            ("empty", String::new()),
            ("truncated", good[..good.len() / 2].to_string()),
            ("not json", "garbage".into()),
            (
                "wrong version",
                good.replace("\"version\":1", "\"version\":2"),
            ),
            (
                "another task's entry",
                good.replace("\"task\":\"t\"", "\"task\":\"u\""),
            ),
            ("short key", good.replace(&hex, &hex[..62])),
            ("non-hex key", good.replace(&hex, &"zz".repeat(32))),
            (
                "key of wrong type",
                r#"{"version":1,"task":"t","key":5}"#.to_string(),
            ),
            ("huge", format!("{}{}", " ".repeat(100_000), good)),
        ];
        for (what, content) in damaged {
            fs::write(store.entry_path("t"), content).expect("write");
            assert_eq!(store.load("t"), None, "{what}");
        }
        fs::remove_file(store.entry_path("t")).expect("rm");
        fs::create_dir(store.entry_path("t")).expect("a directory in its place");
        assert_eq!(store.load("t"), None, "a directory");
    }

    #[test]
    fn concurrent_writers_leave_a_valid_entry() {
        let dir = TempDir::new().expect("create temp dir");
        let store = CacheStore::new(dir.path());
        std::thread::scope(|s| {
            for i in 0..8u8 {
                let store = &store;
                s.spawn(move || {
                    for _ in 0..50 {
                        store.store("t", &CacheKey([i; 32])).expect("store");
                        let loaded = store.load("t").expect("never a torn entry");
                        assert!(loaded.0.iter().all(|&b| b == loaded.0[0]));
                    }
                });
            }
        });
        assert!(store.load("t").is_some());
        let count = fs::read_dir(store.dir()).expect("read dir").count();
        assert_eq!(count, 3, "entry, .gitignore, CACHEDIR.TAG; no temp files");
    }

    #[test]
    fn hex_round_trips() {
        let key = CacheKey(*blake3::hash(b"x").as_bytes());
        assert_eq!(CacheKey::from_hex(&key.to_hex()), Some(key));
        assert_eq!(CacheKey::from_hex(&key.to_hex().to_uppercase()), Some(key));
        assert_eq!(CacheKey::from_hex("00"), None);
        assert_eq!(CacheKey::from_hex(&"é".repeat(32)), None);
    }
}
