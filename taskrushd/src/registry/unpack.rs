//! Safe unpacking of plugin archives, packing for `plugin publish`, and
//! the canonical hash of a plugin tree.
//!
//! Entries are checked one by one before anything is written (the tar
//! advisories: zip-slip, links out of the tree, device files, bombs):
//! only regular files, directories, and symbolic links whose target stays
//! inside the tree; no absolute paths, no `..`; nothing written through a
//! link; at most [`MAX_ENTRIES`] entries and [`MAX_BYTES`] unpacked. The
//! caller unpacks into a fresh staging directory and removes it on error.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

/// The most entries an archive may hold.
pub(crate) const MAX_ENTRIES: usize = 10_000;
/// The most bytes an archive may unpack to.
pub(crate) const MAX_BYTES: u64 = 512 * 1024 * 1024;
/// The receipt's file name in an installed plugin's directory (not part
/// of the tree hash; an archive holding one is refused).
pub(crate) const RECEIPT: &str = "receipt.json";

/// Limits of one unpacking (tests lower them).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) entries: usize,
    pub(crate) bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            entries: MAX_ENTRIES,
            bytes: MAX_BYTES,
        }
    }
}

/// A relative path with only normal components, or an error naming it.
fn safe_relative(path: &Path) -> Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => {
                return Err(format!(
                    "archive entry `{}` escapes the plugin's directory",
                    path.display()
                ));
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(format!("archive entry `{}` has no name", path.display()));
    }
    Ok(out)
}

/// Whether a link at `at` (relative to the root) to `target` stays inside.
fn link_stays_inside(at: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth: i64 = at.components().count() as i64 - 1;
    for c in target.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => return false,
        }
    }
    true
}

/// Refuse to write at `rel` when one of its parents (inside `root`) is a
/// symbolic link or not a directory: nothing is written through a link.
fn check_parents(root: &Path, rel: &Path) -> Result<(), String> {
    let mut at = root.to_path_buf();
    if let Some(parent) = rel.parent() {
        for c in parent.components() {
            at.push(c);
            match std::fs::symlink_metadata(&at) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(format!(
                        "archive entry `{}` would be written through the link `{}`",
                        rel.display(),
                        c.as_os_str().to_string_lossy()
                    ));
                }
                Ok(m) if !m.is_dir() => {
                    return Err(format!(
                        "archive entry `{}`: a parent is a file",
                        rel.display()
                    ));
                }
                Ok(_) => {}
                Err(_) => std::fs::create_dir_all(&at)
                    .map_err(|e| format!("cannot create `{}`: {e}", at.display()))?,
            }
        }
    }
    Ok(())
}

/// Unpack a gzip-compressed tar archive into the existing, empty `dest`.
pub(crate) fn unpack_tar_gz(bytes: &[u8], dest: &Path, limits: Limits) -> Result<(), String> {
    let gz = flate2::read::GzDecoder::new(bytes);
    let mut archive = tar::Archive::new(gz);
    let bad = |e: std::io::Error| format!("the archive is not a valid `.tar.gz`: {e}");
    let mut entries = 0usize;
    let mut total = 0u64;
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        entries += 1;
        if entries > limits.entries {
            return Err(format!(
                "the archive holds more than {} entries, the most TaskRush unpacks",
                limits.entries
            ));
        }
        let raw = entry.path().map_err(bad)?.into_owned();
        let rel = safe_relative(&raw)?;
        if rel == Path::new(RECEIPT) {
            return Err(format!(
                "the archive holds `{RECEIPT}`, a name TaskRush reserves"
            ));
        }
        check_parents(dest, &rel)?;
        let out = dest.join(&rel);
        let kind = entry.header().entry_type();
        let mode = entry.header().mode().unwrap_or(0o644);
        if kind.is_dir() {
            match std::fs::symlink_metadata(&out) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(format!("archive entry `{}` is given twice", rel.display())),
                Err(_) => std::fs::create_dir(&out)
                    .map_err(|e| format!("cannot create `{}`: {e}", out.display()))?,
            }
        } else if kind.is_file() {
            let size = entry.header().size().map_err(bad)?;
            total = total.saturating_add(size);
            if total > limits.bytes {
                return Err(format!(
                    "the archive unpacks to more than {} bytes, the most TaskRush unpacks",
                    limits.bytes
                ));
            }
            if std::fs::symlink_metadata(&out).is_ok() {
                return Err(format!("archive entry `{}` is given twice", rel.display()));
            }
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&out)
                .map_err(|e| format!("cannot create `{}`: {e}", out.display()))?;
            let copied = std::io::copy(&mut (&mut entry).take(size), &mut file)
                .map_err(|e| format!("cannot unpack `{}`: {e}", rel.display()))?;
            if copied != size {
                return Err(format!("archive entry `{}` is truncated", rel.display()));
            }
            set_mode(&out, if mode & 0o111 != 0 { 0o755 } else { 0o644 })?;
        } else if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name()
                .map_err(bad)?
                .ok_or_else(|| format!("archive link `{}` has no target", rel.display()))?
                .into_owned();
            let what = if kind.is_symlink() {
                "symbolic"
            } else {
                "hard"
            };
            if std::fs::symlink_metadata(&out).is_ok() {
                return Err(format!("archive entry `{}` is given twice", rel.display()));
            }
            if kind.is_symlink() {
                if !link_stays_inside(&rel, &target) {
                    return Err(format!(
                        "archive entry `{}` is a {what} link to `{}`, outside the plugin's directory",
                        rel.display(),
                        target.display()
                    ));
                }
                std::os::unix::fs::symlink(&target, &out)
                    .map_err(|e| format!("cannot create `{}`: {e}", out.display()))?;
            } else {
                // A hard link names another entry of the archive, from the root.
                let from = safe_relative(&target).map_err(|_| {
                    format!(
                        "archive entry `{}` is a {what} link to `{}`, outside the plugin's directory",
                        rel.display(),
                        target.display()
                    )
                })?;
                check_parents(dest, &from)?;
                let src = dest.join(&from);
                let meta = std::fs::symlink_metadata(&src).map_err(|_| {
                    format!(
                        "archive entry `{}` is a {what} link to `{}`, which is not in the archive before it",
                        rel.display(),
                        target.display()
                    )
                })?;
                if !meta.is_file() {
                    return Err(format!(
                        "archive entry `{}` is a {what} link to `{}`, not a file",
                        rel.display(),
                        target.display()
                    ));
                }
                total = total.saturating_add(meta.len());
                if total > limits.bytes {
                    return Err(format!(
                        "the archive unpacks to more than {} bytes, the most TaskRush unpacks",
                        limits.bytes
                    ));
                }
                // Copied, not linked: the installed tree is made read-only file by file.
                std::fs::copy(&src, &out)
                    .map_err(|e| format!("cannot create `{}`: {e}", out.display()))?;
            }
        } else if matches!(
            kind,
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader | tar::EntryType::GNULongName
        ) {
            continue;
        } else {
            return Err(format!(
                "archive entry `{}` is a device, fifo or other special file; plugins hold only files, directories and links inside them",
                rel.display()
            ));
        }
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot set the mode of `{}`: {e}", path.display()))
}

/// The files and directories of `root`, sorted, relative, with their kind.
fn walk(root: &Path) -> Result<Vec<(PathBuf, std::fs::Metadata)>, String> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(root)
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name()
    {
        let e = e.map_err(|e| format!("cannot read `{}`: {e}", root.display()))?;
        let rel = e
            .path()
            .strip_prefix(root)
            .map_err(|_| "a path outside the tree".to_owned())?
            .to_path_buf();
        if rel == Path::new(RECEIPT) {
            continue;
        }
        let meta = e
            .metadata()
            .map_err(|err| format!("cannot read `{}`: {err}", e.path().display()))?;
        out.push((rel, meta));
    }
    Ok(out)
}

/// The canonical hash of a plugin tree: sha256 of one line per entry in
/// path order — `d PATH`, `f PATH x|- SHA256` (executable or not),
/// `l PATH TARGET` — the receipt excluded. Modes other than the
/// executable bit and times are not part of it.
pub(crate) fn tree_hash(root: &Path) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut h = Sha256::new();
    for (rel, meta) in walk(root)? {
        let p = rel.to_string_lossy();
        let ft = meta.file_type();
        if ft.is_dir() {
            h.update(format!("d {p}\n"));
        } else if ft.is_symlink() {
            let t = std::fs::read_link(root.join(&rel))
                .map_err(|e| format!("cannot read `{}`: {e}", rel.display()))?;
            h.update(format!("l {p} {}\n", t.to_string_lossy()));
        } else if ft.is_file() {
            let x = if meta.permissions().mode() & 0o111 != 0 {
                "x"
            } else {
                "-"
            };
            let file_hash = sha256_file(&root.join(&rel))?;
            h.update(format!("f {p} {x} {file_hash}\n"));
        } else {
            return Err(format!("`{}` is a special file", rel.display()));
        }
    }
    Ok(hex(&h.finalize()))
}

pub(crate) fn sha256_file(path: &Path) -> Result<String, String> {
    let mut f =
        std::fs::File::open(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    Ok(hex(&h.finalize()))
}

pub(crate) fn sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Pack directory `dir` as a reproducible `.tar.gz` (sorted, times and
/// owners zeroed, modes 0644/0755). `.git` is left out; links pointing
/// out of the tree are refused.
pub(crate) fn pack_dir(dir: &Path) -> Result<Vec<u8>, String> {
    use std::os::unix::fs::PermissionsExt as _;
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut b = tar::Builder::new(gz);
    let io = |e: std::io::Error| format!("cannot pack `{}`: {e}", dir.display());
    for (rel, meta) in walk(dir)? {
        if rel
            .components()
            .next()
            .is_some_and(|c| c.as_os_str() == ".git")
        {
            continue;
        }
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        let ft = meta.file_type();
        if ft.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            b.append_data(&mut header, &rel, std::io::empty())
                .map_err(io)?;
        } else if ft.is_symlink() {
            let t = std::fs::read_link(dir.join(&rel)).map_err(io)?;
            if !link_stays_inside(&rel, &t) {
                return Err(format!(
                    "`{}` is a link to `{}`, outside the plugin's directory",
                    dir.join(&rel).display(),
                    t.display()
                ));
            }
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_mode(0o777);
            header.set_size(0);
            b.append_link(&mut header, &rel, &t).map_err(io)?;
        } else if ft.is_file() {
            let exec = meta.permissions().mode() & 0o111 != 0;
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(if exec { 0o755 } else { 0o644 });
            header.set_size(meta.len());
            let f = std::fs::File::open(dir.join(&rel)).map_err(io)?;
            b.append_data(&mut header, &rel, f).map_err(io)?;
        } else {
            return Err(format!("`{}` is a special file", dir.join(&rel).display()));
        }
    }
    b.into_inner().and_then(|gz| gz.finish()).map_err(io)
}

/// Make `root` read-only (files 0444/0555, directories 0555), or
/// writable again before removal.
pub(crate) fn set_read_only(root: &Path, read_only: bool) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut all = walk_all(root)?;
    if read_only {
        // Children first, the root last.
        all.reverse();
    }
    for (p, meta) in all {
        let ft = meta.file_type();
        if ft.is_symlink() {
            continue;
        }
        let exec = meta.permissions().mode() & 0o111 != 0;
        let mode = match (ft.is_dir() || exec, read_only) {
            (true, true) => 0o555,
            (false, true) => 0o444,
            (true, false) => 0o755,
            (false, false) => 0o644,
        };
        set_mode(&p, mode)?;
    }
    Ok(())
}

fn walk_all(root: &Path) -> Result<Vec<(PathBuf, std::fs::Metadata)>, String> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
    {
        let e = e.map_err(|e| format!("cannot read `{}`: {e}", root.display()))?;
        let meta = e
            .metadata()
            .map_err(|err| format!("cannot read `{}`: {err}", e.path().display()))?;
        out.push((e.path().to_path_buf(), meta));
    }
    Ok(out)
}

/// Remove `dir` (an installed or staged tree, maybe read-only).
pub(crate) fn remove_tree(dir: &Path) {
    if std::fs::symlink_metadata(dir).is_err() {
        return;
    }
    let _ = set_read_only(dir, false);
    if let Err(e) = std::fs::remove_dir_all(dir) {
        tracing::warn!("cannot remove `{}`: {e}", dir.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An archive built entry by entry, as an attacker would.
    fn archive(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        let raw = b.into_inner().expect("tar");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &raw).expect("gz");
        gz.finish().expect("gz")
    }

    fn header(kind: tar::EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o644);
        h
    }

    /// Write `name` into the header raw (the builder refuses `..`).
    fn raw_name(h: &mut tar::Header, name: &str) {
        let gnu = h.as_gnu_mut().expect("gnu");
        gnu.name = [0; 100];
        gnu.name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
        let mut h = header(tar::EntryType::Regular, data.len() as u64);
        raw_name(&mut h, name);
        b.append(&h, data).expect("append");
    }

    fn link(b: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, name: &str, target: &str) {
        let mut h = header(kind, 0);
        raw_name(&mut h, name);
        h.set_link_name(target).expect("link name");
        h.set_cksum();
        b.append(&h, std::io::empty()).expect("append");
    }

    /// Unpack into a fresh directory inside a sandbox dir; the error, and
    /// what exists outside the destination afterwards.
    fn unpack(bytes: &[u8], limits: Limits) -> (Result<(), String>, tempfile::TempDir) {
        let sandbox = tempfile::tempdir().expect("tempdir");
        let dest = sandbox.path().join("dest");
        std::fs::create_dir(&dest).expect("dest");
        let r = unpack_tar_gz(bytes, &dest, limits);
        (r, sandbox)
    }

    fn only_dest(sandbox: &tempfile::TempDir) {
        let names: Vec<_> = std::fs::read_dir(sandbox.path())
            .expect("read")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("dest")],
            "nothing written outside"
        );
    }

    #[test]
    fn a_zip_slip_entry_is_refused() {
        let a = archive(|b| file(b, "../evil", b"x"));
        let (r, s) = unpack(&a, Limits::default());
        assert!(r.expect_err("refused").contains("escapes"));
        only_dest(&s);
        let a = archive(|b| file(b, "/tmp/evil-abs", b"x"));
        let (r, s) = unpack(&a, Limits::default());
        assert!(r.expect_err("refused").contains("escapes"));
        only_dest(&s);
    }

    #[test]
    fn a_symlink_out_of_the_tree_is_refused_and_nothing_is_written_through_links() {
        let a = archive(|b| link(b, tar::EntryType::Symlink, "out", "../../etc"));
        let (r, s) = unpack(&a, Limits::default());
        assert!(r.expect_err("refused").contains("outside"));
        only_dest(&s);
        let a = archive(|b| link(b, tar::EntryType::Symlink, "out", "/etc"));
        assert!(unpack(&a, Limits::default()).0.is_err());
        // A link inside the tree is fine, writing through it is not.
        let a = archive(|b| {
            link(b, tar::EntryType::Symlink, "inner", ".");
            file(b, "inner/x", b"x");
        });
        let (r, s) = unpack(&a, Limits::default());
        assert!(r.expect_err("refused").contains("through the link"));
        only_dest(&s);
    }

    #[test]
    fn a_hard_link_out_of_the_tree_is_refused() {
        let a = archive(|b| link(b, tar::EntryType::Link, "h", "../../etc/passwd"));
        let (r, s) = unpack(&a, Limits::default());
        assert!(r.expect_err("refused").contains("outside"));
        only_dest(&s);
        let a = archive(|b| link(b, tar::EntryType::Link, "h", "/etc/passwd"));
        assert!(unpack(&a, Limits::default()).0.is_err());
    }

    #[test]
    fn a_device_file_is_refused() {
        let a = archive(|b| {
            let mut h = header(tar::EntryType::Char, 0);
            raw_name(&mut h, "tty");
            b.append(&h, std::io::empty()).expect("append");
        });
        assert!(
            unpack(&a, Limits::default())
                .0
                .expect_err("refused")
                .contains("device")
        );
    }

    #[test]
    fn size_and_entry_count_bombs_are_refused() {
        let a = archive(|b| file(b, "big", &vec![0u8; 4096]));
        let small = Limits {
            entries: 10,
            bytes: 1024,
        };
        assert!(
            unpack(&a, small)
                .0
                .expect_err("refused")
                .contains("more than 1024 bytes")
        );
        let a = archive(|b| {
            for i in 0..20 {
                file(b, &format!("f{i}"), b"x");
            }
        });
        assert!(
            unpack(&a, small)
                .0
                .expect_err("refused")
                .contains("more than 10 entries")
        );
    }

    #[test]
    fn a_packed_tree_unpacks_to_the_same_tree_hash() {
        let src = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(src.path().join("lib")).expect("mkdir");
        std::fs::write(src.path().join("lib/a.py"), "print(1)\n").expect("write");
        std::fs::write(src.path().join("run"), "#!/bin/sh\n").expect("write");
        set_mode(&src.path().join("run"), 0o755).expect("mode");
        std::os::unix::fs::symlink("lib/a.py", src.path().join("main.py")).expect("link");
        let packed = pack_dir(src.path()).expect("pack");
        let (r, s) = unpack(&packed, Limits::default());
        r.expect("unpacks");
        let dest = s.path().join("dest");
        assert_eq!(
            tree_hash(src.path()).expect("hash"),
            tree_hash(&dest).expect("hash")
        );
        std::fs::write(dest.join("lib/a.py"), "print(2)\n").expect("write");
        assert_ne!(
            tree_hash(src.path()).expect("hash"),
            tree_hash(&dest).expect("hash")
        );
    }
}
