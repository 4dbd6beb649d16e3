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
    config: Arc<RushFile>,
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
    /// reached (`-f ../x/.rush`, a symlinked directory).
    pub fn locate(cwd: &Path, file: Option<&str>) -> Result<PathBuf, ConfigError> {
        let found = Self::find(cwd, file)?;
        Ok(found.canonicalize().unwrap_or(found))
    }

    fn find(cwd: &Path, file: Option<&str>) -> Result<PathBuf, ConfigError> {
        match file {
            Some(f) => {
                let p = cwd.join(f);
                if p.is_file() {
                    Ok(p)
                } else {
                    Err(ConfigError {
                        message: format!(
                            "the file `{}` given with `-f` does not exist",
                            p.display()
                        ),
                        path: p,
                        line: None,
                        column: None,
                        hint: None,
                    })
                }
            }
            None => crate::discover::discover(cwd).ok_or_else(|| ConfigError {
                path: cwd.to_path_buf(),
                line: None,
                column: None,
                message: format!(
                    "no `.rush` file in `{}` or any parent directory",
                    cwd.display()
                ),
                hint: Some("create a `.rush` file, or name one with `-f FILE`".into()),
            }),
        }
    }

    /// The parsed file, re-read if it changed since it was last loaded.
    pub fn load(&self, path: &Path) -> Result<Arc<RushFile>, ConfigError> {
        let io_err = |e: std::io::Error| ConfigError {
            path: path.to_path_buf(),
            line: None,
            column: None,
            message: format!("cannot read the file: {e}"),
            hint: None,
        };
        let md = std::fs::metadata(path).map_err(io_err)?;
        let stamp = Stamp::of(&md);
        {
            let loaded = self.lock();
            if let Some(e) = loaded.get(path)
                && e.stamp == stamp
                && !e.racy
            {
                return Ok(e.config.clone());
            }
        }
        let source = std::fs::read(path).map_err(io_err)?;
        // Stat again after reading: a stamp taken before the read cannot
        // vouch for content written during it.
        let stamp = std::fs::metadata(path)
            .map(|m| Stamp::of(&m))
            .unwrap_or(stamp);
        let digest = blake3::hash(&source);
        let mut loaded = self.lock();
        if let Some(e) = loaded.get_mut(path)
            && e.digest == digest
        {
            e.stamp = stamp;
            e.racy = stamp.is_recent();
            return Ok(e.config.clone());
        }
        let text = String::from_utf8(source).map_err(|_| ConfigError {
            path: path.to_path_buf(),
            line: None,
            column: None,
            message: "the file is not valid UTF-8".into(),
            hint: None,
        })?;
        let config = Arc::new(rush_file::parse(path, &text).inspect_err(|e| {
            tracing::info!("rejected `{}`: {e}", e.location());
        })?);
        tracing::info!(file = %path.display(), tasks = config.tasks.len(), "loaded");
        loaded.insert(
            path.to_path_buf(),
            Entry {
                stamp,
                racy: stamp.is_recent(),
                digest,
                config: config.clone(),
            },
        );
        Ok(config)
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
