//! The daemon's log file: private (0600, never through a symlink, only a
//! file of this user's) and rotated by size.
//!
//! Past [`MAX_LOG_BYTES`] the file is renamed `taskrushd.log.1` (the
//! previous `.1` becomes `.2`, and so on up to [`KEPT_LOGS`]; the oldest
//! is deleted) and a new one is started, so the log never takes more than
//! `(1 + KEPT_LOGS) × MAX_LOG_BYTES` on disk. Several processes may append
//! to the same log (a daemon and `--no-daemon` private daemons): one that
//! finds its file already rotated by another just reopens the path.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use crate::server::listener::{BindError, open_private};

/// Size at which the log is rotated.
pub(crate) const MAX_LOG_BYTES: u64 = 10 * 1024 * 1024;
/// Rotated logs kept beside the current one (`.1` is the most recent).
pub(crate) const KEPT_LOGS: usize = 2;

/// A `$TASKRUSH_LOG_MAX_BYTES` that is not a number of bytes above 0.
#[derive(Debug)]
pub(crate) struct InvalidLimit {
    pub(crate) value: String,
}

impl std::fmt::Display for InvalidLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "invalid `TASKRUSH_LOG_MAX_BYTES` value `{}`: expected a number of bytes above 0; the log is rotated at {} MiB",
            self.value,
            MAX_LOG_BYTES >> 20
        )
    }
}

/// The size limit: `$TASKRUSH_LOG_MAX_BYTES`, else [`MAX_LOG_BYTES`].
pub(crate) fn max_bytes() -> Result<u64, InvalidLimit> {
    match std::env::var("TASKRUSH_LOG_MAX_BYTES") {
        Err(_) => Ok(MAX_LOG_BYTES),
        Ok(value) => value
            .trim()
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .ok_or(InvalidLimit { value }),
    }
}

pub(crate) struct RotatingLog {
    path: PathBuf,
    file: File,
    /// Bytes in the file, as far as this process knows.
    size: u64,
    max: u64,
}

impl RotatingLog {
    /// Open (create) the log; the size limit is [`MAX_LOG_BYTES`], or
    /// `$TASKRUSH_LOG_MAX_BYTES`.
    pub(crate) fn open(path: &Path) -> Result<RotatingLog, BindError> {
        Self::with_limit(path, max_bytes().unwrap_or(MAX_LOG_BYTES))
    }

    fn with_limit(path: &Path, max: u64) -> Result<RotatingLog, BindError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.exists()
        {
            use std::os::unix::fs::DirBuilderExt as _;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .recursive(true)
                .create(dir)
                .map_err(|e| BindError::Io(dir.into(), e))?;
        }
        let file = open_private(path, true)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(RotatingLog {
            path: path.to_owned(),
            file,
            size,
            max,
        })
    }

    fn rotate(&mut self) {
        // Another process may have rotated (or the user removed) the file:
        // then only reopen the path.
        let ours = self.file.metadata().ok().map(|m| (m.dev(), m.ino()));
        if crate::server::listener::file_id(&self.path) == ours {
            let name = |n: usize| {
                let mut p = self.path.clone().into_os_string();
                p.push(format!(".{n}"));
                PathBuf::from(p)
            };
            for n in (1..KEPT_LOGS).rev() {
                let _ = std::fs::rename(name(n), name(n + 1));
            }
            let moved = if KEPT_LOGS == 0 {
                std::fs::remove_file(&self.path)
            } else {
                std::fs::rename(&self.path, name(1))
            };
            if moved.is_err() && self.file.set_len(0).is_ok() {
                // The directory does not let us rename (read-only, or
                // its mode changed): start the file over rather than let
                // it grow past its limit.
                self.size = 0;
                return;
            }
        }
        if let Ok(file) = open_private(&self.path, true) {
            self.size = file.metadata().map(|m| m.len()).unwrap_or(0);
            self.file = file;
        }
    }
}

impl Write for RotatingLog {
    /// Whole writes only: a log line is never split across two files.
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if self.size + buf.len() as u64 > self.max {
            // The real size, other writers included.
            self.size = self.file.metadata().map(|m| m.len()).unwrap_or(self.size);
            if self.size + buf.len() as u64 > self.max {
                self.rotate();
            }
            if self.size > 0 && self.size + buf.len() as u64 > self.max {
                // Still full: the path could not be opened again (something
                // else was put there). Drop the line rather than grow the
                // old file without bound; the next line tries again.
                return Ok(());
            }
        }
        self.file.write_all(buf)?;
        self.size += buf.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_log_is_rotated_and_only_two_old_ones_are_kept() {
        let tmp = tempfile::tempdir().expect("create temp dir");
        let dir = tmp.path().join("log");
        let path = dir.join("taskrushd.log");
        let mut log = RotatingLog::with_limit(&path, 100).expect("open the log");
        for i in 0..50 {
            writeln!(log, "line {i:02} of the log").expect("write");
        }
        let size = |p: &str| std::fs::metadata(dir.join(p)).map(|m| m.len()).ok();
        assert!(size("taskrushd.log").is_some_and(|s| s <= 100));
        assert!(size("taskrushd.log.1").is_some_and(|s| s <= 100));
        assert!(size("taskrushd.log.2").is_some_and(|s| s <= 100));
        assert_eq!(size("taskrushd.log.3"), None);
        let last = std::fs::read_to_string(&path).expect("read the log");
        assert!(last.ends_with("line 49 of the log\n"), "{last}");
        let mode = std::fs::metadata(&path).expect("stat").mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
