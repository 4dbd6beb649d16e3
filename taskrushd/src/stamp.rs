//! "Has this file changed?", answered one way for the whole daemon: the
//! *stamp* of a file is its length, mtime and ctime (both with
//! nanoseconds), inode, device and link count, all from one `stat`. An equal
//! stamp means the same file, unchanged, provided the stamp was
//! [`Stamp::settled`] when its content was read.
//!
//! Used by the hash memo of cached tasks' inputs (`cache/file_hashes.rs`),
//! the loaded `.rush` files (`config/projects.rs`) and the files of a
//! failed plugin (`plugin/manifest.rs`). A leaf module at the top, not in
//! `cache/`: the config and plugin rooms need it without depending on the
//! cache room.
//!
//! # Never stale: the "racy git" rule
//!
//! A stamp alone is not enough. File systems take timestamps from a coarse
//! clock (Linux: the kernel tick, a few ms; ext3/HFS+: 1 s; FAT/exFAT: 2 s),
//! so a file rewritten with the same length shortly after we read it can
//! keep an identical stamp. Like git's index ("racy git"), a stamp vouches
//! for the content read with it only if the file's newest timestamp (the
//! later of mtime and ctime) is older than the moment the read began minus
//! [`RACY_MARGIN`]. Any write after that moment sets ctime to "now", which
//! then necessarily differs from the remembered ctime. Whoever holds a
//! stamp that is not settled reads the file again next time. ctime matters
//! because mtime can be set back by anyone (`touch -d`,
//! `File::set_modified`, archive extraction) while ctime cannot.
//!
//! The margin is 2 s: it covers the coarsest timestamp granularity in common
//! use (FAT's 2 s) and the lag of the kernel's coarse clock behind the
//! wall clock, and costs almost nothing (only files touched in the last two
//! seconds are re-read). It does not protect against the wall clock being
//! stepped back by more than the margin, nor against a network file server
//! whose clock lags ours by more than the margin *and* a rewrite that keeps
//! the length and lands in the same timestamp tick.

use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a file must have been left alone before its stamp vouches for
/// its content (see the module documentation).
pub(crate) const RACY_MARGIN: Duration = Duration::from_secs(2);

/// Everything one `stat` tells us about a file's identity and version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub(crate) len: u64,
    /// (seconds, nanoseconds) since the Unix epoch; may be negative.
    pub(crate) mtime: (i64, i64),
    /// When the file last changed, in the same units: unlike mtime, it
    /// cannot be set, to the past or the future.
    pub(crate) ctime: (i64, i64),
    pub(crate) ino: u64,
    pub(crate) dev: u64,
    /// Number of hard links: a file with more than one can be changed
    /// through a path in another directory.
    pub(crate) nlink: u64,
}

impl Stamp {
    /// The stamp of what `path` names (symlinks followed).
    pub(crate) fn of_path(path: &Path) -> io::Result<Stamp> {
        stat_path(path).map(|(stamp, _)| stamp)
    }

    /// The newest of the file's timestamps.
    fn newest(&self) -> (i64, i64) {
        self.mtime.max(self.ctime)
    }

    /// Whether the file had been left alone for `margin` before `started`
    /// (taken before its content was read): then any later write gives
    /// another stamp, and an equal stamp means the same content. False for
    /// timestamps in the future.
    pub(crate) fn settled(&self, started: SystemTime, margin: Duration) -> bool {
        started
            .checked_sub(margin)
            .is_some_and(|limit| self.newest() < epoch_parts(limit))
    }
}

/// What kind of file a stamp is of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Dir,
    Other,
}

/// `stat`/`fstat` through rustix: one syscall, no allocation for paths up to
/// 255 bytes (std's `metadata` uses the slower `statx` on Linux).
#[cfg(unix)]
mod sys {
    use super::{Kind, Stamp};
    use std::fs::File;
    use std::io;
    use std::path::Path;

    pub(crate) fn stat_path(path: &Path) -> io::Result<(Stamp, Kind)> {
        Ok(from_stat(&rustix::fs::stat(path)?))
    }

    pub(crate) fn stat_open(file: &File) -> io::Result<(Stamp, Kind)> {
        Ok(from_stat(&rustix::fs::fstat(file)?))
    }

    // The field types differ between targets; on some the casts are no-ops.
    #[allow(clippy::unnecessary_cast)]
    fn from_stat(st: &rustix::fs::Stat) -> (Stamp, Kind) {
        use rustix::fs::FileType;
        let kind = match FileType::from_raw_mode(st.st_mode as _) {
            FileType::RegularFile => Kind::File,
            FileType::Directory => Kind::Dir,
            _ => Kind::Other,
        };
        let stamp = Stamp {
            len: st.st_size as u64,
            mtime: (st.st_mtime as i64, st.st_mtime_nsec as i64),
            ctime: (st.st_ctime as i64, st.st_ctime_nsec as i64),
            ino: st.st_ino as u64,
            dev: st.st_dev as u64,
            nlink: st.st_nlink as u64,
        };
        (stamp, kind)
    }
}

/// Without inode/ctime the stamp is weaker: mtime and creation time stand in
/// (creation time changes when a file is replaced by a rename).
#[cfg(not(unix))]
mod sys {
    use super::{Kind, Stamp, epoch_parts};
    use std::fs::{self, File, Metadata};
    use std::io;
    use std::path::Path;
    use std::time::SystemTime;

    pub(crate) fn stat_path(path: &Path) -> io::Result<(Stamp, Kind)> {
        Ok(from_meta(&fs::metadata(path)?))
    }

    pub(crate) fn stat_open(file: &File) -> io::Result<(Stamp, Kind)> {
        Ok(from_meta(&file.metadata()?))
    }

    fn from_meta(meta: &Metadata) -> (Stamp, Kind) {
        let split = |t: io::Result<SystemTime>| t.ok().map_or((0, 0), epoch_parts);
        let mtime = split(meta.modified());
        let kind = if meta.is_file() {
            Kind::File
        } else if meta.is_dir() {
            Kind::Dir
        } else {
            Kind::Other
        };
        let stamp = Stamp {
            len: meta.len(),
            mtime,
            // Stands in for ctime in the racy check.
            ctime: mtime.max(split(meta.created())),
            ino: 0,
            dev: 0,
            nlink: 1,
        };
        (stamp, kind)
    }
}

/// (seconds, nanoseconds) since the epoch, negative seconds before it.
fn epoch_parts(t: SystemTime) -> (i64, i64) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (secs_i64(d), i64::from(d.subsec_nanos())),
        Err(before) => {
            let d = before.duration();
            let (s, n) = (secs_i64(d), i64::from(d.subsec_nanos()));
            if n == 0 {
                (-s, 0)
            } else {
                (-s - 1, 1_000_000_000 - n)
            }
        }
    }
}

fn secs_i64(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

pub(crate) use sys::{stat_open, stat_path};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_just_written_is_not_settled_and_one_left_alone_is() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("f");
        std::fs::write(&path, "one").expect("write");
        let stamp = Stamp::of_path(&path).expect("stamp");
        assert!(!stamp.settled(SystemTime::now(), RACY_MARGIN));
        let later = SystemTime::now() + RACY_MARGIN + Duration::from_secs(1);
        assert!(stamp.settled(later, RACY_MARGIN));
        assert_eq!(Stamp::of_path(&path).expect("stamp"), stamp, "unchanged");
    }

    #[test]
    fn setting_the_mtime_back_changes_the_stamp_and_does_not_settle_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("f");
        std::fs::write(&path, "one").expect("write");
        let before = Stamp::of_path(&path).expect("stamp");
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(SystemTime::now() - Duration::from_secs(3600)))
            .expect("set mtime");
        let after = Stamp::of_path(&path).expect("stamp");
        assert_ne!(after, before);
        assert!(
            !after.settled(SystemTime::now(), RACY_MARGIN),
            "its ctime moved to now"
        );
    }

    #[test]
    fn a_file_replaced_by_a_rename_has_another_stamp_even_with_the_same_length_and_mtime() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("f");
        std::fs::write(&path, "one").expect("write");
        let before = Stamp::of_path(&path).expect("stamp");
        let tmp = dir.path().join("f.tmp");
        std::fs::write(&tmp, "two").expect("write");
        let mtime = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .expect("mtime");
        std::fs::File::options()
            .write(true)
            .open(&tmp)
            .and_then(|f| f.set_modified(mtime))
            .expect("set mtime");
        std::fs::rename(&tmp, &path).expect("rename");
        assert_ne!(Stamp::of_path(&path).expect("stamp"), before);
    }
}
