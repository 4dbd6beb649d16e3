//! Reading a file whole (`.rush`, `plugin.toml`, `.gitignore`): regular
//! files only, at most [`MAX_BYTES`].
//!
//! Those files come from a project, which may be anybody's repository: a
//! `.rush` that is a symlink to `/proc/self/pagemap` or `/dev/zero` must
//! not make the daemon read until the kernel kills it, and one that is a
//! FIFO must not block a thread forever. So the file is opened without
//! blocking (`O_NONBLOCK`: opening a FIFO does not wait for a writer),
//! symlinks are followed and what they lead to must be a regular file (it
//! is not even opened otherwise), and reading stops past the limit
//! (`/proc` files say size 0).
//!
//! And the other way: [`replace_private`] writes a small private file of
//! the daemon's own (grants, the command cache) whole, atomically.

use std::io::Read;
use std::path::Path;

use rustix::fs::{FileType, Mode, OFlags};

/// The most the daemon reads of a file it reads whole: 4 MiB, five times
/// a `.rush` file with 10,000 tasks with descriptions.
pub(crate) const MAX_BYTES: u64 = 4 * 1024 * 1024;

/// Why a file could not be read whole.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// It does not exist (a dangling symlink included).
    NotFound,
    /// Following its symlinks loops (`ELOOP`).
    SymlinkLoop,
    /// It is not a regular file: "a directory", "a FIFO", …
    NotRegular(&'static str),
    /// It holds more than this many bytes ([`MAX_BYTES`], or the limit
    /// given to [`read_at_most`]).
    TooLarge(u64),
    /// Any other failure (permission denied, I/O error).
    Io(std::io::Error),
}

impl ReadError {
    /// What the file is, as a phrase following its name: "`X` is a
    /// directory, not a regular file".
    pub(crate) fn what(&self) -> String {
        match self {
            ReadError::NotFound => "does not exist".to_owned(),
            ReadError::SymlinkLoop => "is a symlink loop (too many levels of symlinks)".to_owned(),
            ReadError::NotRegular(kind) => format!("is {kind}, not a regular file"),
            ReadError::TooLarge(limit) => format!(
                "is larger than {}, the most TaskRush reads of such a file",
                shown_size(*limit)
            ),
            ReadError::Io(e) => format!("cannot be read: {}", io_reason(e)),
        }
    }

    pub(crate) fn from_io(e: std::io::Error) -> ReadError {
        match e.kind() {
            std::io::ErrorKind::NotFound => ReadError::NotFound,
            _ if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
                ReadError::SymlinkLoop
            }
            _ => ReadError::Io(e),
        }
    }
}

/// "4 MiB", "64 KiB".
fn shown_size(bytes: u64) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes.is_multiple_of(1 << 10) {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} bytes")
    }
}

/// An I/O error without Rust's " (os error N)" suffix.
fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(at) => text[..at].to_lowercase(),
        None => text,
    }
}

/// The kind of a file that is not a regular file, for messages.
pub(crate) fn kind_of(file_type: FileType) -> Option<&'static str> {
    match file_type {
        FileType::RegularFile => None,
        FileType::Directory => Some("a directory"),
        FileType::Fifo => Some("a FIFO"),
        FileType::Socket => Some("a socket"),
        FileType::CharacterDevice => Some("a character device"),
        FileType::BlockDevice => Some("a block device"),
        FileType::Symlink => Some("a symlink"),
        FileType::Unknown => Some("not a file of a known kind"),
    }
}

/// The content of the regular file at `path` (symlinks followed), at most
/// [`MAX_BYTES`]. Never blocks on a FIFO, never reads past the limit.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, ReadError> {
    read_at_most(path, MAX_BYTES)
}

/// [`read`] with another limit than [`MAX_BYTES`].
pub(crate) fn read_at_most(path: &Path, max: u64) -> Result<Vec<u8>, ReadError> {
    // Not even opened when it is not a regular file (opening some devices
    // has effects); checked again on the open file, which cannot change.
    let stat = rustix::fs::stat(path).map_err(|e| ReadError::from_io(e.into()))?;
    if let Some(kind) = kind_of(FileType::from_raw_mode(stat.st_mode)) {
        return Err(ReadError::NotRegular(kind));
    }
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )
    .map_err(|e| ReadError::from_io(e.into()))?;
    let stat = rustix::fs::fstat(&fd).map_err(|e| ReadError::Io(e.into()))?;
    if let Some(kind) = kind_of(FileType::from_raw_mode(stat.st_mode)) {
        return Err(ReadError::NotRegular(kind));
    }
    if stat.st_size as u64 > max {
        return Err(ReadError::TooLarge(max));
    }
    let mut bytes = Vec::with_capacity((stat.st_size as u64).min(max) as usize);
    let mut file = std::fs::File::from(fd);
    // Whole 64 KiB reads: some endless files (`/proc/self/pagemap`) refuse
    // reads of sizes that are not a multiple of their record size.
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match file.read(&mut chunk) {
            Ok(0) => return Ok(bytes),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ReadError::Io(e)),
        };
        if (bytes.len() + n) as u64 > max {
            return Err(ReadError::TooLarge(max));
        }
        bytes.extend_from_slice(&chunk[..n]);
    }
}

/// Replace `path` with `bytes`: a private (0600) temp file beside it,
/// created (never followed, never an existing file), written, flushed to
/// disk when `sync`, then renamed over it; its directory is made (0700)
/// when missing. A failure leaves the old file as it was.
pub(crate) fn replace_private(path: &Path, bytes: &[u8], sync: bool) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = std::path::PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(OFlags::NOFOLLOW.bits() as i32)
        .open(&tmp)?;
    let written = f
        .write_all(bytes)
        .and_then(|()| if sync { f.sync_all() } else { Ok(()) });
    drop(f);
    let renamed = written.and_then(|()| std::fs::rename(&tmp, path));
    if renamed.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    renamed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endless_file_is_read_to_the_limit_only() {
        match read(Path::new("/dev/zero")) {
            Err(ReadError::NotRegular("a character device")) => {}
            other => panic!("unexpected: {other:?}"),
        }
        // A regular file (for fstat) of size 0 that never ends.
        let pagemap = Path::new("/proc/self/pagemap");
        if pagemap.exists() {
            match read(pagemap) {
                Err(ReadError::TooLarge(MAX_BYTES)) => {}
                other => panic!("unexpected: {:?}", other.map(|b| b.len())),
            }
        }
    }

    #[test]
    fn a_directory_is_not_read() {
        let e = read(Path::new("/")).expect_err("a directory");
        assert_eq!(e.what(), "is a directory, not a regular file");
    }

    #[test]
    fn a_missing_file_does_not_exist() {
        let e = read(Path::new("/nonexistent/taskrush/x")).expect_err("missing");
        assert_eq!(e.what(), "does not exist");
    }
}
