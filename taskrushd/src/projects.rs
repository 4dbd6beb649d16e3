//! Loaded projects: each `.rush` file parsed once and kept while it does
//! not change.
//!
//! Consistency rule (design.md): a request issued after a file was saved
//! sees that save. Every request stats the file (one syscall); a changed
//! stamp means a re-read. Timestamps are coarse (a save within the same
//! clock tick keeps the mtime), so a file whose mtime was recent when it
//! was loaded is re-read and compared by content on the next request too.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::config_error::ConfigError;
use crate::rush_file::{self, RushFile};

/// Files modified this recently when loaded are verified by content on the
/// next request (mtime granularity is a clock tick, not a nanosecond).
const RACY: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    ino: u64,
    dev: u64,
}

impl Stamp {
    fn of(md: &std::fs::Metadata) -> Stamp {
        Stamp {
            len: md.len(),
            mtime: (md.mtime(), md.mtime_nsec()),
            ctime: (md.ctime(), md.ctime_nsec()),
            ino: md.ino(),
            dev: md.dev(),
        }
    }

    fn is_recent(&self) -> bool {
        let mtime =
            SystemTime::UNIX_EPOCH + Duration::new(self.mtime.0.max(0) as u64, self.mtime.1 as u32);
        match SystemTime::now().duration_since(mtime) {
            Ok(age) => age < RACY,
            Err(_) => true, // mtime in the future: trust nothing
        }
    }
}

struct Entry {
    stamp: Stamp,
    racy: bool,
    digest: blake3::Hash,
    /// The last valid config of the file.
    config: Arc<RushFile>,
    /// Why the file's current content is not in use (it does not parse
    /// or validate, or the file is gone): `config` serves meanwhile.
    problem: Option<Problem>,
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
pub struct Loaded {
    pub config: Arc<RushFile>,
    /// "using the last valid config; `FILE:L:C`: MESSAGE".
    pub warning: Option<String>,
}

/// What [`Projects::load`] noticed, for the event stream. Reported once,
/// by whoever noticed first (a request or the watcher).
pub enum Change {
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
pub fn last_valid_warning(e: &ConfigError) -> String {
    format!(
        "using the last valid config; `{}`: {}",
        e.location(),
        e.message
    )
}

/// Every project the daemon has loaded, keyed by the path of its file.
#[derive(Default)]
pub struct Projects {
    loaded: Mutex<HashMap<PathBuf, Entry>>,
}

impl Projects {
    /// The `.rush` file for a client: `file` (relative to `cwd`) when
    /// given, else the nearest one from `cwd` upwards.
    /// The path is canonical, so one project has one key however it is
    /// reached (`-f ../x/.rush`, a symlinked directory). A loaded file that
    /// was deleted is still found (its last valid config serves, with a
    /// warning), unless discovery finds another file at least as close.
    pub fn locate(&self, cwd: &Path, file: Option<&str>) -> Result<PathBuf, ConfigError> {
        match Self::find(cwd, file) {
            Ok(found) => {
                let found = found.canonicalize().unwrap_or(found);
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
                if p.is_file() {
                    Ok(p)
                } else {
                    let message =
                        format!("the file `{}` given with `-f` does not exist", p.display());
                    Err(ConfigError::new(p, message))
                }
            }
            None => crate::discover::discover(cwd).ok_or_else(|| {
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

    /// The config to use for `path`, re-read if the file changed since it
    /// was last loaded. A file that had a valid config keeps serving it,
    /// with a warning, while its content is invalid or it is gone; a file
    /// never loaded successfully is an error.
    pub fn load(&self, path: &Path) -> Result<(Loaded, Change), ConfigError> {
        let io_err = |e: std::io::Error| {
            let message = if e.kind() == std::io::ErrorKind::NotFound {
                "the file was deleted".to_owned()
            } else {
                format!("cannot read the file: {e}")
            };
            ConfigError::new(path, message)
        };
        let md = match std::fs::metadata(path) {
            Ok(md) => md,
            Err(e) => return self.unusable(path, io_err(e), None),
        };
        let stamp = Stamp::of(&md);
        {
            let loaded = self.lock();
            if let Some(e) = loaded.get(path) {
                match &e.problem {
                    None if e.stamp == stamp && !e.racy => {
                        return Ok((e.loaded(), Change::None));
                    }
                    Some(Problem {
                        seen: Some((s, false, _)),
                        ..
                    }) if *s == stamp => return Ok((e.loaded(), Change::None)),
                    _ => {}
                }
            }
        }
        let source = match std::fs::read(path) {
            Ok(s) => s,
            Err(e) => return self.unusable(path, io_err(e), None),
        };
        // Stat again after reading: a stamp taken before the read cannot
        // vouch for content written during it.
        let stamp = std::fs::metadata(path)
            .map(|m| Stamp::of(&m))
            .unwrap_or(stamp);
        let digest = blake3::hash(&source);
        let mut loaded = self.lock();
        if let Some(e) = loaded.get_mut(path) {
            if e.digest == digest {
                // Unchanged, or back to the last valid content.
                e.stamp = stamp;
                e.racy = stamp.is_recent();
                let change = match e.problem.take() {
                    Some(_) => Change::Reloaded(e.config.clone()),
                    None => Change::None,
                };
                return Ok((e.loaded(), change));
            }
            if let Some(p) = &mut e.problem
                && p.seen.is_some_and(|(_, _, d)| d == digest)
            {
                p.seen = Some((stamp, stamp.is_recent(), digest));
                return Ok((e.loaded(), Change::None));
            }
        }
        let parsed = match String::from_utf8(source) {
            Ok(text) => rush_file::parse(path, &text),
            Err(_) => Err(ConfigError::new(path, "the file is not valid UTF-8")),
        };
        let config = match parsed {
            Ok(c) => Arc::new(c),
            Err(error) => {
                tracing::info!("rejected `{}`: {error}", error.location());
                drop(loaded);
                return self.unusable(path, error, Some((stamp, stamp.is_recent(), digest)));
            }
        };
        tracing::info!(file = %path.display(), tasks = config.tasks.len(), "loaded");
        loaded.insert(
            path.to_path_buf(),
            Entry {
                stamp,
                racy: stamp.is_recent(),
                digest,
                config: config.clone(),
                problem: None,
            },
        );
        Ok((
            Loaded {
                config: config.clone(),
                warning: None,
            },
            Change::Reloaded(config),
        ))
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
    pub fn warnings(&self) -> Vec<String> {
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
    pub fn config_of(&self, root: &Path) -> Option<Arc<RushFile>> {
        self.lock()
            .values()
            .find(|e| e.config.root == root)
            .map(|e| e.config.clone())
    }

    /// Roots of the loaded projects.
    pub fn roots(&self) -> Vec<String> {
        let mut roots: Vec<String> = self
            .lock()
            .values()
            .map(|e| e.config.root.display().to_string())
            .collect();
        roots.sort();
        roots.dedup();
        roots
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
            warning: self.problem.as_ref().map(|p| last_valid_warning(&p.error)),
        }
    }
}

/// `path` with its directory canonical, for a file that may not exist.
fn canonical_missing(path: &Path) -> Option<PathBuf> {
    let dir = path.parent()?.canonicalize().ok()?;
    Some(dir.join(path.file_name()?))
}
