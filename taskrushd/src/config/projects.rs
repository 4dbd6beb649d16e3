//! Loaded projects: each `.rush` file parsed once and kept while it does
//! not change.
//!
//! Consistency rule: a request issued after a file was saved
//! sees that save. Every request stats the file (one syscall); a changed
//! stamp (`stamp.rs`) means a re-read. Timestamps are coarse (a save within
//! the same clock tick keeps the stamp), so a file that was not settled
//! when it was read (changed within the racy margin before the read) is
//! re-read and compared by content on the next request too.
//!
//! Reading and parsing happen without the map's lock (a parse may take a
//! while: other projects, and `daemon status`, are served meanwhile), one
//! load per file at a time: a second request for a file being parsed waits
//! for that parse and uses its result. At most [`MAX_PARSES`] files are
//! read and parsed at once, whatever the number of clients and projects: a
//! parse may take tens of MB for a moment. At most [`MAX_PROJECTS`]
//! projects are kept; loading one more forgets the least recently used.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::config::config_error::ConfigError;
use crate::config::includes;
use crate::config::rush_file::RushFile;
use crate::config::whole_file;
use crate::stamp::{RACY_MARGIN, Stamp};

/// The most projects kept loaded by default ($TASKRUSH_MAX_PROJECTS sets
/// another bound); one more forgets the least recently used (its next
/// request reads and parses its file again).
pub(crate) const MAX_PROJECTS: usize = 256;

/// The most bytes of `.rush` source whose parsed configs stay loaded (a
/// config takes about 20 times its source's size): loading more forgets
/// the least recently used projects, never the one being loaded.
pub(crate) const MAX_PROJECT_BYTES: usize = 16 * 1024 * 1024;

/// The most `.rush` files read and parsed at once (a parse of the densest
/// file allowed peaks at about 75 MB): more requests for other files wait
/// for a turn without holding a thread.
pub(crate) const MAX_PARSES: usize = 4;

/// The most `.rush` files read at once to tell whether they changed (4 MiB
/// each at most).
pub(crate) const MAX_READS: usize = 16;

/// The environment variable that sets the bound on loaded projects.
pub(crate) const ENV_MAX_PROJECTS: &str = "TASKRUSH_MAX_PROJECTS";

struct Entry {
    stamp: Stamp,
    /// The stamp was not settled when the file was read: it cannot vouch
    /// for the content.
    racy: bool,
    digest: blake3::Hash,
    /// The last valid config of the file.
    config: Arc<RushFile>,
    /// Why the file's current content is not in use (it does not parse
    /// or validate, or the file is gone): `config` serves meanwhile.
    problem: Option<Problem>,
    /// When it was last used, on [`Projects::clock`].
    used: u64,
    /// The size of the source of `config` (or what its aliases expand
    /// to, when more: [`RushFile::weight`]).
    bytes: usize,
}

/// The current, unusable state of a file that had a valid config.
struct Problem {
    error: ConfigError,
    /// The stamp and digest of the bad content (none when it cannot be
    /// read), so that an unchanged bad file is not parsed on every request.
    seen: Option<(Stamp, bool, blake3::Hash)>,
}

/// What a request (or the watcher) gets: the config to use and, when it
/// is the last valid one, why.
#[derive(Clone)]
pub(crate) struct Loaded {
    pub(crate) config: Arc<RushFile>,
    /// "using the last valid config; `FILE:L:C`: MESSAGE".
    pub(crate) warning: Option<String>,
}

/// What [`Projects::load`] noticed, for the event stream. Reported once,
/// by whoever noticed first (a request or the watcher).
pub(crate) enum Change {
    None,
    /// New content is in use (also the first load of a project).
    Reloaded(Arc<RushFile>),
    /// The file's new content (or its absence) was rejected.
    Rejected {
        error: ConfigError,
        using_last_valid: bool,
    },
}

/// The warning shown while the last valid config serves.
pub(crate) fn last_valid_warning(e: &ConfigError) -> String {
    format!(
        "using the last valid config; `{}`: {}",
        e.location(),
        e.message
    )
}

/// Every project the daemon has loaded, keyed by the path of its file.
pub(crate) struct Projects {
    /// At most this many entries in `loaded`.
    max: usize,
    loaded: Mutex<HashMap<PathBuf, Entry>>,
    /// One lock per file being loaded: one read and parse at a time.
    loading: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
    /// Turns to read and parse a file: at most [`MAX_PARSES`] at once.
    parses: Arc<tokio::sync::Semaphore>,
    /// The threads that parse.
    parsers: Parsers,
    /// Turns to read a file (to tell whether it changed): at most
    /// [`MAX_READS`] at once.
    reads: Arc<tokio::sync::Semaphore>,
    /// Files never loaded successfully: the digest of the content that
    /// failed, the error, when last used. The same content is not parsed
    /// again (a request waiting for a parse gets its error).
    rejected: Mutex<HashMap<PathBuf, (blake3::Hash, ConfigError, u64)>>,
    /// The files included (`includes:`) by the last parse of a root file
    /// that has any: read on every request besides the root (its stamp
    /// alone cannot tell), their content part of its digest.
    included: Mutex<HashMap<PathBuf, Vec<PathBuf>>>,
    /// Counts uses, for least-recently-used eviction.
    clock: AtomicU64,
    /// Files forgotten to stay within [`MAX_PROJECTS`], for the daemon to
    /// stop watching.
    evicted: Mutex<Vec<PathBuf>>,
    /// A file changed within this long before it was read is read again
    /// on the next request ([`RACY_MARGIN`]; shorter in tests).
    racy_margin: Duration,
}

impl Default for Projects {
    fn default() -> Self {
        Projects::new(MAX_PROJECTS)
    }
}

impl Projects {
    /// Keeping at most `max` projects (at least one).
    pub(crate) fn new(max: usize) -> Projects {
        Projects {
            max: max.max(1),
            loaded: Mutex::default(),
            loading: Mutex::default(),
            parses: Arc::new(tokio::sync::Semaphore::new(MAX_PARSES)),
            parsers: Parsers::default(),
            reads: Arc::new(tokio::sync::Semaphore::new(MAX_READS)),
            rejected: Mutex::default(),
            included: Mutex::default(),
            clock: AtomicU64::new(0),
            evicted: Mutex::default(),
            racy_margin: RACY_MARGIN,
        }
    }

    /// With another racy margin (tests: a short one).
    #[cfg(test)]
    fn with_racy_margin(mut self, margin: Duration) -> Projects {
        self.racy_margin = margin;
        self
    }

    /// Keeping at most $TASKRUSH_MAX_PROJECTS projects, else [`MAX_PROJECTS`].
    pub(crate) fn from_env() -> Projects {
        let max = match std::env::var(ENV_MAX_PROJECTS) {
            Err(_) => MAX_PROJECTS,
            Ok(text) => match text.trim().parse::<usize>() {
                Ok(n) if n > 0 => n,
                _ => {
                    tracing::warn!(
                        "`{ENV_MAX_PROJECTS}={text}` is not a positive number: keeping at most {MAX_PROJECTS} projects"
                    );
                    MAX_PROJECTS
                }
            },
        };
        Projects::new(max)
    }

    /// The `.rush` file for a client: `file` (relative to `cwd`) when
    /// given, else the nearest one from `cwd` upwards.
    /// The path is canonical, so one project has one key however it is
    /// reached (`-f ../x/.rush`, a symlinked directory). A loaded file that
    /// was deleted is still found (its last valid config serves, with a
    /// warning), unless discovery finds another file at least as close.
    /// A file that is (or became) a symlink to something unusable (a
    /// device, a FIFO, nothing) keeps the key of its own path: the error
    /// names it, and a loaded project keeps its last valid config. (A
    /// symlink to a regular file is keyed by its target, whose directory
    /// is the root, whatever was loaded before.)
    pub(crate) fn locate(&self, cwd: &Path, file: Option<&str>) -> Result<PathBuf, ConfigError> {
        match Self::find(cwd, file) {
            Ok(found) => {
                let regular = std::fs::metadata(&found).is_ok_and(|md| md.is_file());
                let found = match canonical_missing(&found) {
                    Some(own) if !regular => own,
                    _ => found.canonicalize().unwrap_or(found),
                };
                if file.is_none()
                    && let Some(gone) = self.deleted_above(cwd)
                    && gone.parent().map(|p| p.components().count())
                        > found.parent().map(|p| p.components().count())
                {
                    return Ok(gone);
                }
                Ok(found)
            }
            Err(e) => {
                let known = match file {
                    Some(f) => {
                        canonical_missing(&cwd.join(f)).filter(|p| self.lock().contains_key(p))
                    }
                    None => self.deleted_above(cwd),
                };
                known.ok_or(e)
            }
        }
    }

    /// The deepest loaded project around `cwd` whose file is gone.
    fn deleted_above(&self, cwd: &Path) -> Option<PathBuf> {
        let cwd = cwd.canonicalize().unwrap_or_else(|_| cwd.to_path_buf());
        let loaded = self.lock();
        loaded
            .iter()
            .filter(|(_, e)| cwd.starts_with(&e.config.root))
            .map(|(p, _)| p.clone())
            .filter(|p| !p.exists())
            .max_by_key(|p| p.components().count())
    }

    fn find(cwd: &Path, file: Option<&str>) -> Result<PathBuf, ConfigError> {
        match file {
            Some(f) => {
                let p = cwd.join(f);
                match std::fs::metadata(&p) {
                    Ok(md) if md.is_file() => Ok(p),
                    Ok(md) => {
                        let kind =
                            whole_file::kind_of(rustix::fs::FileType::from_raw_mode(md.mode()))
                                .unwrap_or("not a regular file");
                        let message = format!(
                            "`{}` given with `-f` is {kind}, not a regular file",
                            p.display()
                        );
                        let hint = md.is_dir().then(|| {
                            format!(
                                "name the file inside it, e.g. `-f {}`",
                                Path::new(f).join(".rush").display()
                            )
                        });
                        Err(ConfigError::new(&p, message).with_hint(hint))
                    }
                    Err(e) => {
                        let message = match whole_file::ReadError::from_io(e) {
                            whole_file::ReadError::NotFound
                                if std::fs::symlink_metadata(&p).is_ok() =>
                            {
                                format!(
                                    "`{}` given with `-f` is a symlink to `{}`, which does not exist",
                                    p.display(),
                                    std::fs::read_link(&p).unwrap_or_default().display()
                                )
                            }
                            whole_file::ReadError::NotFound => {
                                format!("the file `{}` given with `-f` does not exist", p.display())
                            }
                            why => format!("`{}` given with `-f` {}", p.display(), why.what()),
                        };
                        Err(ConfigError::new(p, message))
                    }
                }
            }
            None => crate::config::discover::discover(cwd).ok_or_else(|| {
                let message = format!(
                    "no `.rush` file in `{}` or any parent directory",
                    cwd.display()
                );
                ConfigError::new(cwd, message).with_hint(Some(
                    "create a `.rush` file, or name one with `-f FILE`".into(),
                ))
            }),
        }
    }

    /// The config in use for `path` when its file is known not to have
    /// changed (one `stat`, no read): what most requests need, without
    /// leaving the runtime. `None`: call [`Projects::load`].
    pub(crate) fn cached(&self, path: &Path) -> Option<Loaded> {
        if self.included_lock().contains_key(path) {
            // Its included files may have changed: read them.
            return None;
        }
        let stamp = Stamp::of_path(path).ok()?;
        let mut loaded = self.lock();
        let e = loaded.get_mut(path)?;
        let unchanged = match &e.problem {
            None => e.stamp == stamp && !e.racy,
            Some(Problem {
                seen: Some((s, false, _)),
                ..
            }) => *s == stamp,
            Some(_) => false,
        };
        if !unchanged {
            return None;
        }
        e.used = self.clock.fetch_add(1, Ordering::Relaxed);
        Some(e.loaded())
    }

    /// The config to use for `path`, re-read if the file changed since it
    /// was last loaded. A file that had a valid config keeps serving it,
    /// with a warning, while its content is invalid or it is gone; a file
    /// never loaded successfully is an error.
    ///
    /// Blocking (it may read and parse the file): call it off the runtime.
    #[cfg(test)]
    pub(crate) fn load(&self, path: &Path) -> Result<(Loaded, Change), ConfigError> {
        let gate = self.gate(path);
        let _turn = gate.blocking_lock();
        self.load_now(path, true).expect("parses allowed")
    }

    /// [`Projects::load`] for the runtime: waits for the file's turn, then
    /// reads the file on a blocking thread (at most [`MAX_READS`] at once);
    /// only when its content must be parsed, waits for one of the
    /// [`MAX_PARSES`] turns and reads and parses it. Turns are waited for
    /// without holding a thread, and a loaded file that did not change
    /// never waits for a parse turn. A request that goes away meanwhile
    /// (its client left) does not end the read or parse, which keeps its
    /// turns until it is done.
    pub(crate) async fn load_async(
        self: &Arc<Self>,
        path: &Path,
    ) -> Result<(Loaded, Change), ConfigError> {
        let file_turn = Arc::new(self.gate(path).lock_owned().await);
        // The load this one waited for may serve it.
        if let Some(loaded) = self.cached(path) {
            return Ok((loaded, Change::None));
        }
        let failed = |e: tokio::task::JoinError| {
            ConfigError::new(path, format!("loading the file failed: {e}"))
        };
        let read_turn = self.reads.clone().acquire_owned().await;
        let (me, owned, turn) = (self.clone(), path.to_path_buf(), file_turn.clone());
        let read = tokio::task::spawn_blocking(move || {
            let result = me.load_now(&owned, false);
            drop((read_turn, turn));
            result
        })
        .await
        .map_err(failed)?;
        if let Some(result) = read {
            return result;
        }
        let parse_turn = self.parses.clone().acquire_owned().await;
        let (me, owned) = (self.clone(), path.to_path_buf());
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.parsers.run(Box::new(move || {
            let result = me.load_now(&owned, true);
            drop((parse_turn, file_turn));
            let _ = tx.send(result);
        }));
        match rx.await {
            Ok(result) => result.expect("parses allowed"),
            Err(_) => Err(ConfigError::new(
                path,
                "loading the file failed: its parse stopped".to_owned(),
            )),
        }
    }

    /// `check_rush`: checks `text` as the content of `path` on a parse
    /// thread, with a parse turn like a load (see [`super::check`]); the
    /// loaded projects are not touched.
    pub(crate) async fn check(
        self: &Arc<Self>,
        path: PathBuf,
        text: String,
        encoding: taskrush_protocol::editor::PositionEncoding,
    ) -> Option<taskrush_protocol::editor::RushCheck> {
        let parse_turn = self.parses.clone().acquire_owned().await;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.parsers.run(Box::new(move || {
            let result = super::check::check(&path, &text, encoding);
            drop(parse_turn);
            let _ = tx.send(result);
        }));
        rx.await.ok()
    }

    /// The lock that gives `path` one load at a time. Locks nobody holds or
    /// waits for any more are dropped on the way.
    fn gate(&self, path: &Path) -> Arc<tokio::sync::Mutex<()>> {
        let mut loading = self.loading_lock();
        loading.retain(|_, gate| Arc::strong_count(gate) > 1);
        loading.entry(path.to_path_buf()).or_default().clone()
    }

    /// `None` when the content must be parsed and `may_parse` is false.
    fn load_now(
        &self,
        path: &Path,
        may_parse: bool,
    ) -> Option<Result<(Loaded, Change), ConfigError>> {
        let read_err = |e: whole_file::ReadError| {
            let message = match e {
                whole_file::ReadError::NotFound => match std::fs::read_link(path) {
                    Ok(to) => format!(
                        "the file is a symlink to `{}`, which does not exist",
                        to.display()
                    ),
                    Err(_) => "the file was deleted".to_owned(),
                },
                e => format!("the file {}", e.what()),
            };
            ConfigError::new(path, message)
        };
        if let Some(loaded) = self.cached(path) {
            return Some(Ok((loaded, Change::None)));
        }
        let stamp = match Stamp::of_path(path) {
            Ok(stamp) => stamp,
            Err(e) => {
                return Some(self.unusable(
                    path,
                    read_err(whole_file::ReadError::from_io(e)),
                    None,
                ));
            }
        };
        // Taken before the content is read: every write we might miss
        // happens after this instant.
        let started = SystemTime::now();
        let source = match whole_file::read(path) {
            Ok(s) => s,
            Err(e) => return Some(self.unusable(path, read_err(e), None)),
        };
        // Stat again after reading: a stamp taken before the read cannot
        // vouch for content written during it (one taken after can, when
        // it is settled).
        let stamp = Stamp::of_path(path).unwrap_or(stamp);
        let racy = !stamp.settled(started, self.racy_margin);
        let known: Vec<PathBuf> = self.included_lock().get(path).cloned().unwrap_or_default();
        let included_now: Vec<(PathBuf, Option<blake3::Hash>)> = known
            .into_iter()
            .map(|f| {
                let hash = whole_file::read(&f).ok().map(|b| blake3::hash(&b));
                (f, hash)
            })
            .collect();
        let digest = tree_digest(&source, &included_now);
        let bytes = source.len();
        {
            let mut loaded = self.lock();
            if !loaded.contains_key(path)
                && let Some((d, error, used)) = self.rejected_lock().get_mut(path)
                && *d == digest
            {
                *used = self.clock.fetch_add(1, Ordering::Relaxed);
                return Some(Err(error.clone()));
            }
            if let Some(e) = loaded.get_mut(path) {
                e.used = self.clock.fetch_add(1, Ordering::Relaxed);
                if e.digest == digest {
                    // Unchanged, or back to the last valid content.
                    e.stamp = stamp;
                    e.racy = racy;
                    let change = match e.problem.take() {
                        Some(_) => Change::Reloaded(e.config.clone()),
                        None => Change::None,
                    };
                    return Some(Ok((e.loaded(), change)));
                }
                if let Some(p) = &mut e.problem
                    && p.seen.is_some_and(|(_, _, d)| d == digest)
                {
                    p.seen = Some((stamp, racy, digest));
                    return Some(Ok((e.loaded(), Change::None)));
                }
            }
        }
        if !may_parse {
            return None;
        }
        // Parsed without the map's lock: other projects are served meanwhile.
        tracing::debug!(file = %path.display(), bytes = source.len(), "parsing");
        test_parse_gate(path);
        let (parsed, digest) = match String::from_utf8(source) {
            Ok(text) => {
                let tree = includes::load(path, &text);
                // The digest of what was parsed (the includes may differ
                // from those known before).
                let digest = tree_digest(text.as_bytes(), &tree.files);
                let mut included = self.included_lock();
                if tree.files.is_empty() {
                    included.remove(path);
                } else {
                    included.insert(
                        path.to_path_buf(),
                        tree.files.into_iter().map(|(f, _)| f).collect(),
                    );
                }
                (tree.result, digest)
            }
            Err(e) => (Err(not_utf8(path, e.as_bytes(), e.utf8_error())), digest),
        };
        let config = match parsed {
            Ok(c) => Arc::new(c),
            Err(error) => {
                tracing::info!("rejected `{}`: {error}", error.location());
                if !self.lock().contains_key(path) {
                    let mut rejected = self.rejected_lock();
                    if !rejected.contains_key(path) && rejected.len() >= self.max {
                        let oldest = rejected
                            .iter()
                            .min_by_key(|(_, r)| r.2)
                            .map(|(p, _)| p.clone());
                        if let Some(oldest) = oldest {
                            rejected.remove(&oldest);
                        }
                    }
                    let used = self.clock.fetch_add(1, Ordering::Relaxed);
                    rejected.insert(path.to_path_buf(), (digest, error.clone(), used));
                }
                return Some(self.unusable(path, error, Some((stamp, racy, digest))));
            }
        };
        tracing::info!(file = %path.display(), tasks = config.tasks.len(), "loaded");
        // What aliases expand to counts, not only the file's size.
        let bytes = bytes.max(config.weight);
        self.rejected_lock().remove(path);
        let mut loaded = self.lock();
        // Room for this one: forget the least recently used others. Not a
        // project in use (a run or `run --watch` holds its config: it keeps
        // its last valid config), and a project whose file is broken (it
        // would lose its last valid config) only when no other can go.
        loop {
            let others = loaded.iter().filter(|(p, _)| p.as_path() != path);
            let (count, total) = others
                .clone()
                .fold((0, 0), |(n, b), (_, e)| (n + 1, b + e.bytes));
            if count < self.max && total + bytes <= MAX_PROJECT_BYTES {
                break;
            }
            let Some(oldest) = others
                .filter(|(_, e)| Arc::strong_count(&e.config) == 1)
                .min_by_key(|(_, e)| (e.problem.is_some(), e.used))
                .map(|(p, _)| p.clone())
            else {
                break;
            };
            tracing::info!(
                file = %oldest.display(),
                "forgotten: at most {} projects and {} MiB of `.rush` files stay loaded",
                self.max,
                MAX_PROJECT_BYTES >> 20
            );
            loaded.remove(&oldest);
            self.evicted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(oldest);
        }
        loaded.insert(
            path.to_path_buf(),
            Entry {
                stamp,
                racy,
                digest,
                config: config.clone(),
                problem: None,
                used: self.clock.fetch_add(1, Ordering::Relaxed),
                bytes,
            },
        );
        let hidden = hidden_tasks_warning(&config);
        if let Some(w) = &hidden {
            tracing::warn!(file = %path.display(), "{w}");
        }
        Some(Ok((
            Loaded {
                config: config.clone(),
                warning: hidden,
            },
            Change::Reloaded(config),
        )))
    }

    /// The files forgotten (to stay within [`MAX_PROJECTS`]) since the last call.
    pub(crate) fn take_evicted(&self) -> Vec<PathBuf> {
        std::mem::take(&mut *self.evicted.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The file cannot be used: keep serving its last valid config if it
    /// had one (reporting the problem once), else fail.
    fn unusable(
        &self,
        path: &Path,
        error: ConfigError,
        seen: Option<(Stamp, bool, blake3::Hash)>,
    ) -> Result<(Loaded, Change), ConfigError> {
        let mut loaded = self.lock();
        let Some(e) = loaded.get_mut(path) else {
            return Err(error);
        };
        let same = e
            .problem
            .as_ref()
            .is_some_and(|p| p.error == error && p.seen.map(|s| s.2) == seen.map(|s| s.2));
        e.problem = Some(Problem {
            error: error.clone(),
            seen,
        });
        let change = if same {
            Change::None
        } else {
            tracing::warn!(file = %path.display(), "{}", last_valid_warning(&error));
            Change::Rejected {
                error,
                using_last_valid: true,
            }
        };
        Ok((e.loaded(), change))
    }

    /// "`FILE`: using the last valid config; …" for every project whose
    /// file is broken or gone.
    pub(crate) fn warnings(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .lock()
            .iter()
            .filter_map(|(path, e)| {
                let p = e.problem.as_ref()?;
                Some(format!(
                    "`{}`: {}",
                    path.display(),
                    last_valid_warning(&p.error)
                ))
            })
            .collect();
        out.sort();
        out
    }

    /// The config in use for the project at `root`.
    pub(crate) fn config_of(&self, root: &Path) -> Option<Arc<RushFile>> {
        self.lock()
            .values()
            .find(|e| e.config.root == root)
            .map(|e| e.config.clone())
    }

    /// Whether a project is loaded from `path` (valid or not now).
    pub(crate) fn is_loaded(&self, path: &Path) -> bool {
        self.lock().contains_key(path)
    }

    /// Roots of the loaded projects.
    pub(crate) fn roots(&self) -> Vec<String> {
        let mut roots: Vec<String> = self
            .lock()
            .values()
            .map(|e| e.config.root.display().to_string())
            .collect();
        roots.sort();
        roots.dedup();
        roots
    }

    fn rejected_lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<PathBuf, (blake3::Hash, ConfigError, u64)>> {
        // Single inserts and removes: a poisoned map is still consistent.
        self.rejected.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn loading_lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>> {
        // Single inserts and removes: a poisoned map is still consistent.
        self.loading.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn included_lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Vec<PathBuf>>> {
        self.included.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Entry>> {
        // A panic while holding this lock cannot leave the map half-updated
        // (single inserts), so a poisoned lock is still usable.
        self.loaded.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Entry {
    fn loaded(&self) -> Loaded {
        Loaded {
            config: self.config.clone(),
            warning: self
                .problem
                .as_ref()
                .map(|p| last_valid_warning(&p.error))
                .or_else(|| hidden_tasks_warning(&self.config)),
        }
    }
}

/// Tasks named like a built-in word of `taskrush` (`daemon`, `events`, …):
/// `taskrush NAME` runs the built-in, so they are reachable only as
/// `taskrush run NAME`. Said at every load that serves them: one line per
/// task, each after a `warning: ` (clients print the first line's).
pub(crate) fn hidden_tasks_warning(config: &RushFile) -> Option<String> {
    let hidden = hidden_tasks_warnings(config);
    (!hidden.is_empty()).then(|| hidden.join("\nwarning: "))
}

/// The warning of [`hidden_tasks_warning`], one message per hidden task,
/// in task order, without the `warning: `.
pub(crate) fn hidden_tasks_warnings(config: &RushFile) -> Vec<String> {
    config
        .tasks
        .values()
        .filter(|t| taskrush_protocol::RESERVED_WORDS.contains(&t.name.as_str()))
        .map(|t| {
            format!(
                "task `{}` (`{}:{}:{}`) has the name of the built-in `taskrush {}`: run it as `taskrush run {}`",
                t.name,
                t.defined_in(config).display(),
                t.line,
                t.column,
                t.name,
                t.name
            )
        })
        .collect()
}

/// A job for a parse thread.
type Job = Box<dyn FnOnce() + Send>;

/// The [`MAX_PARSES`] threads that parse `.rush` files, started on first
/// use and kept. Kept threads keep their malloc arenas: the memory a parse
/// takes for a moment (tens of MB) is reused by the next parse on the same
/// thread, instead of staying in the arena of each new blocking thread
/// (200 parses of distinct files on `spawn_blocking` threads left 450 MB).
#[derive(Default)]
struct Parsers {
    jobs: Mutex<Option<std::sync::mpsc::Sender<Job>>>,
}

impl Parsers {
    /// Runs `job` on a parse thread (callers hold a parse turn: one is free).
    fn run(&self, job: Job) {
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        let sender = jobs.get_or_insert_with(|| {
            let (sender, receiver) = std::sync::mpsc::channel::<Job>();
            let receiver = Arc::new(Mutex::new(receiver));
            for n in 0..MAX_PARSES {
                let receiver = receiver.clone();
                let started = std::thread::Builder::new()
                    .name(format!("parse-{n}"))
                    .spawn(move || {
                        loop {
                            let job = receiver.lock().unwrap_or_else(|p| p.into_inner()).recv();
                            let Ok(job) = job else { return };
                            // A panicking parse drops its answer (the request
                            // fails), not the thread.
                            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                        }
                    });
                if let Err(e) = started {
                    tracing::error!("cannot start a parse thread: {e}");
                }
            }
            sender
        });
        if let Err(std::sync::mpsc::SendError(job)) = sender.send(job) {
            // No parse thread at all: parse on this one.
            job();
        }
    }
}

/// For tests, a parse as slow as a test wants: with
/// `TASKRUSH_TEST_PARSE_GATE=1`, the parse of a `.rush` file waits (up to
/// 60 s) while a file named `parse-gate` is beside it.
fn test_parse_gate(path: &Path) {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if !*ON.get_or_init(|| std::env::var_os("TASKRUSH_TEST_PARSE_GATE").is_some()) {
        return;
    }
    let gate = path.with_file_name("parse-gate");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while gate.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// "the file is not valid UTF-8" at the first invalid byte of `bytes`.
/// The digest of a root file's content and of the files it includes
/// (their path and content's digest, or that they cannot be read): a
/// change to any of them is a change of the project. Without includes,
/// the digest of the content.
fn tree_digest(source: &[u8], included: &[(PathBuf, Option<blake3::Hash>)]) -> blake3::Hash {
    if included.is_empty() {
        return blake3::hash(source);
    }
    let mut hasher = blake3::Hasher::new();
    hasher.update(blake3::hash(source).as_bytes());
    for (file, hash) in included {
        hasher.update(file.as_os_str().as_encoded_bytes());
        hasher.update(&[0]);
        match hash {
            Some(h) => hasher.update(&[1]).update(h.as_bytes()),
            None => hasher.update(&[0]),
        };
    }
    hasher.finalize()
}

fn not_utf8(path: &Path, bytes: &[u8], e: std::str::Utf8Error) -> ConfigError {
    let valid = &bytes[..e.valid_up_to()];
    // The valid prefix is UTF-8: count lines and characters in it.
    let text = std::str::from_utf8(valid).unwrap_or_default();
    let line = text.matches('\n').count() + 1;
    let line_start = text.rfind('\n').map_or(0, |i| i + 1);
    let column = text[line_start..].chars().count() + 1;
    let byte = bytes.get(e.valid_up_to()).copied().unwrap_or(0);
    ConfigError::new(
        path,
        format!(
            "the file is not valid UTF-8: byte 0x{byte:02x} at offset {}",
            e.valid_up_to()
        ),
    )
    .at(line, column)
    .with_hint(Some("save the file as UTF-8".to_owned()))
}

/// `path` with its directory canonical, for a file that may not exist.
fn canonical_missing(path: &Path) -> Option<PathBuf> {
    let dir = path.parent()?.canonicalize().ok()?;
    Some(dir.join(path.file_name()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid `.rush` of about `bytes` bytes (a long comment) in `dir/name`.
    fn project(dir: &Path, name: &str, bytes: usize) -> PathBuf {
        let path = dir.join(name).join(".rush");
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        let comment = "#".repeat(bytes);
        std::fs::write(
            &path,
            format!("{comment}\ntasks:\n  t:\n    cmd: echo {name}\n"),
        )
        .expect("write");
        path
    }

    #[test]
    fn loaded_projects_stay_within_their_byte_budget_least_recently_used_first() {
        let tmp = tempfile::tempdir().expect("create temp dir");
        let projects = Projects::new(MAX_PROJECTS);
        let big = 3 * 1024 * 1024;
        let paths: Vec<PathBuf> = ["a", "b", "c", "d", "e", "f"]
            .iter()
            .map(|n| project(tmp.path(), n, big))
            .collect();
        for p in &paths[..5] {
            projects.load(p).expect("loads");
        }
        // Five of 3 MiB fit in 16 MiB; `a` is used again, so `b` goes first.
        projects.load(&paths[0]).expect("loads");
        projects.load(&paths[5]).expect("loads");
        assert_eq!(projects.take_evicted(), vec![paths[1].clone()]);
        assert_eq!(projects.lock().len(), 5);
    }

    #[test]
    fn loaded_projects_weigh_what_their_aliases_expand_to() {
        let tmp = tempfile::tempdir().expect("create temp dir");
        let projects = Projects::new(MAX_PROJECTS);
        // 2 MiB of text, repeated twice more by aliases: 6 MiB each.
        let paths: Vec<PathBuf> = ["a", "b", "c"]
            .iter()
            .map(|name| {
                let path = tmp.path().join(name).join(".rush");
                std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
                let text = "x".repeat(2 << 20);
                std::fs::write(
                    &path,
                    format!("tasks:\n  t:\n    cmd: &c '{text}'\n    env: {{A: *c, B: *c}}\n"),
                )
                .expect("write");
                path
            })
            .collect();
        for p in &paths {
            projects.load(p).expect("loads");
        }
        assert_eq!(projects.take_evicted(), vec![paths[0].clone()]);
    }

    #[test]
    fn a_file_that_does_not_parse_is_parsed_once_per_content() {
        let tmp = tempfile::tempdir().expect("create temp dir");
        let path = tmp.path().join(".rush");
        std::fs::write(&path, "tasks:\n  t:\n    cmdd: x\n").expect("write");
        let projects = Projects::default();
        let first = projects.load(&path).err().expect("an error");
        assert_eq!(projects.rejected_lock().len(), 1);
        let again = projects.load(&path).err().expect("an error");
        assert_eq!(first, again);
        std::fs::write(&path, "tasks:\n  t:\n    cmd: x\n").expect("write");
        projects.load(&path).expect("loads");
        assert!(projects.rejected_lock().is_empty());
    }

    const VALID: &str = "tasks:\n  t:\n    cmd: echo t\n";

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    /// The racy margin of [`quick`] projects.
    const SHORT: Duration = Duration::from_millis(50);

    /// Projects with a short racy margin, for tests that wait past it.
    fn quick() -> Projects {
        Projects::default().with_racy_margin(SHORT)
    }

    fn task_names(l: &Loaded) -> Vec<String> {
        l.config.tasks.keys().cloned().collect()
    }

    #[test]
    fn the_first_load_is_a_reload_and_an_unchanged_file_is_not_parsed_again() {
        let tmp = tempfile::tempdir().expect("create temp dir");
        let path = tmp.path().join(".rush");
        write(&path, VALID);
        let projects = Projects::default();
        let (first, change) = projects.load(&path).expect("loads");
        assert!(matches!(change, Change::Reloaded(_)));
        assert_eq!(first.warning, None);
        let (again, change) = projects.load(&path).expect("loads");
        assert!(matches!(change, Change::None));
        assert!(Arc::ptr_eq(&first.config, &again.config));
    }

    #[test]
    fn an_old_unchanged_file_is_served_from_one_stat_and_a_recent_one_is_not() {
        let tmp = tempfile::tempdir().expect("create temp dir");
        let path = tmp.path().join(".rush");
        write(&path, VALID);
        let projects = quick();
        assert!(projects.cached(&path).is_none(), "never loaded");
        projects.load(&path).expect("loads");
        assert!(
            projects.cached(&path).is_none(),
            "saved just now: a save in the same clock tick would keep its stamp"
        );
        // Setting the mtime back does not settle it: the change time moved.
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(SystemTime::now() - Duration::from_secs(3600)))
            .expect("set mtime");
        projects.load(&path).expect("loads");
        assert!(
            projects.cached(&path).is_none(),
            "its ctime is recent, whatever its mtime says"
        );
        // Left alone past the margin (the time passing is what is tested).
        std::thread::sleep(SHORT * 3);
        projects.load(&path).expect("loads");
        assert!(projects.cached(&path).is_some());
    }

    #[test]
    fn a_changed_file_is_read_again() {
        let tmp = tempfile::tempdir().expect("create temp dir");
        let path = tmp.path().join(".rush");
        write(&path, VALID);
        let projects = Projects::default();
        projects.load(&path).expect("loads");
        write(
            &path,
            "tasks:\n  t:\n    cmd: echo t\n  u:\n    cmd: echo u\n",
        );
        let (loaded, change) = projects.load(&path).expect("loads");
        assert!(matches!(change, Change::Reloaded(_)));
        assert_eq!(task_names(&loaded), ["t", "u"]);
    }

    #[test]
    fn a_broken_file_keeps_its_last_valid_config_with_a_warning_reported_once() {
        let tmp = tempfile::tempdir().expect("create temp dir");
        let path = tmp.path().join(".rush");
        write(&path, VALID);
        let projects = Projects::default();
        projects.load(&path).expect("loads");
        write(&path, "tasks:\n  t:\n    cmdd: echo t\n");
        let (loaded, change) = projects.load(&path).expect("the last valid config");
        assert!(matches!(
            change,
            Change::Rejected {
                using_last_valid: true,
                ..
            }
        ));
        assert_eq!(task_names(&loaded), ["t"]);
        let warning = loaded.warning.expect("a warning");
        assert!(
            warning.starts_with("using the last valid config; `"),
            "{warning}"
        );
        assert!(warning.contains("unknown key `cmdd`"), "{warning}");
        let (_, change) = projects.load(&path).expect("the last valid config");
        assert!(matches!(change, Change::None), "reported once");
        assert_eq!(projects.warnings().len(), 1);
        write(&path, VALID);
        let (loaded, change) = projects.load(&path).expect("loads");
        assert!(matches!(change, Change::Reloaded(_)), "back to valid");
        assert_eq!(loaded.warning, None);
        assert!(projects.warnings().is_empty());
    }

    #[test]
    fn a_deleted_file_keeps_serving_and_is_still_found_from_its_directory() {
        let tmp = tempfile::tempdir().expect("create temp dir");
        let root = tmp.path().canonicalize().expect("canonical");
        let path = root.join(".rush");
        write(&path, VALID);
        let projects = Projects::default();
        assert_eq!(projects.locate(&root, None).expect("found"), path);
        projects.load(&path).expect("loads");
        std::fs::remove_file(&path).expect("delete");
        assert_eq!(
            projects.locate(&root.join("sub"), None).expect("found"),
            path
        );
        let (loaded, _) = projects.load(&path).expect("the last valid config");
        assert_eq!(task_names(&loaded), ["t"]);
        let warning = loaded.warning.expect("a warning");
        assert!(warning.ends_with(": the file was deleted"), "{warning}");
    }

    #[test]
    fn a_file_never_loaded_is_an_error() {
        let tmp = tempfile::tempdir().expect("create temp dir");
        let path = tmp.path().join(".rush");
        let projects = Projects::default();
        let err = projects.load(&path).err().expect("an error");
        assert_eq!(err.message, "the file was deleted");
        std::fs::write(&path, b"tasks:\n  t:\n    cmd: \xff\n").expect("write");
        let err = projects.load(&path).err().expect("an error");
        assert_eq!(
            (err.message.as_str(), err.line, err.column),
            (
                "the file is not valid UTF-8: byte 0xff at offset 21",
                Some(3),
                Some(10)
            )
        );
    }

    #[test]
    fn at_most_max_projects_stay_loaded_least_recently_used_first() {
        let tmp = tempfile::tempdir().expect("create temp dir");
        let projects = Projects::new(2);
        let paths: Vec<PathBuf> = ["a", "b", "c"]
            .iter()
            .map(|n| project(tmp.path(), n, 0))
            .collect();
        projects.load(&paths[0]).expect("loads");
        projects.load(&paths[1]).expect("loads");
        projects.load(&paths[0]).expect("loads");
        projects.load(&paths[2]).expect("loads");
        assert_eq!(projects.take_evicted(), vec![paths[1].clone()]);
        assert!(projects.take_evicted().is_empty(), "taken once");
        let mut roots = projects.roots();
        roots.sort();
        let expected: Vec<String> = [&paths[0], &paths[2]]
            .iter()
            .map(|p| p.parent().expect("root").display().to_string())
            .collect();
        assert_eq!(roots, expected);
        let root_c = paths[2].parent().expect("root");
        assert!(projects.config_of(root_c).is_some());
        assert!(
            projects
                .config_of(paths[1].parent().expect("root"))
                .is_none()
        );
    }

    #[test]
    fn locate_finds_the_nearest_file_or_says_what_is_wrong_with_dash_f() {
        let tmp = tempfile::tempdir().expect("create temp dir");
        let root = tmp.path().canonicalize().expect("canonical");
        write(&root.join(".rush"), VALID);
        std::fs::create_dir_all(root.join("a/b")).expect("mkdir");
        let projects = Projects::default();
        assert_eq!(
            projects.locate(&root.join("a/b"), None).expect("found"),
            root.join(".rush")
        );
        let err = projects
            .locate(&root, Some("nope.rush"))
            .expect_err("missing");
        assert_eq!(
            err.message,
            format!(
                "the file `{}` given with `-f` does not exist",
                root.join("nope.rush").display()
            )
        );
        let err = projects.locate(&root, Some("a")).expect_err("a directory");
        assert_eq!(
            err.message,
            format!(
                "`{}` given with `-f` is a directory, not a regular file",
                root.join("a").display()
            )
        );
        assert_eq!(
            err.hint.as_deref(),
            Some("name the file inside it, e.g. `-f a/.rush`")
        );
        let empty = tempfile::tempdir().expect("create temp dir");
        if crate::config::discover::discover(empty.path()).is_none() {
            let err = projects.locate(empty.path(), None).expect_err("no file");
            assert!(
                err.message.starts_with("no `.rush` file in `"),
                "{}",
                err.message
            );
            assert_eq!(
                err.hint.as_deref(),
                Some("create a `.rush` file, or name one with `-f FILE`")
            );
        }
    }
}
