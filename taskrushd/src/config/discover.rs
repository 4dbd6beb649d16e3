//! Finding the `.rush` file: the start directory, then each ancestor.

use std::path::{Path, PathBuf};

/// The names a TaskRush file may have, in order of preference.
pub(crate) const FILE_NAMES: [&str; 3] = [".rush", ".rush.yml", ".rush.yaml"];

/// The first file named one of [`FILE_NAMES`] (in that order) in `start` or
/// its nearest ancestor, or `None` when there is none up to the root.
///
/// `start` should be absolute (the client's working directory); a relative
/// path is only searched up to its first component. Directories with those
/// names are skipped; anything else is found, even when it cannot be read
/// (a FIFO, a dangling symlink, a symlink loop), so that loading it says
/// what is wrong instead of quietly using a file further up.
pub(crate) fn discover(start: &Path) -> Option<PathBuf> {
    start.ancestors().find_map(|dir| {
        FILE_NAMES
            .iter()
            .map(|name| dir.join(name))
            .find(|candidate| {
                std::fs::symlink_metadata(candidate).is_ok()
                    && !std::fs::metadata(candidate).is_ok_and(|md| md.is_dir())
            })
    })
}

/// At most this many directory entries are looked at by [`find_under`],
/// whatever its `max_count`.
pub(crate) const MAX_VISITED: usize = 200_000;

/// The TaskRush files under `folder` (one per directory, the one
/// [`discover`] would prefer), at most `max_depth` directories down and
/// `max_count` files, skipping `.git` and what `.gitignore` (and `.ignore`,
/// `.git/info/exclude`) files ignore, as git would; symlinked directories
/// are not followed. Sorted; true when the walk stopped at a limit.
pub(crate) fn find_under(
    folder: &Path,
    max_depth: usize,
    max_count: usize,
) -> (Vec<PathBuf>, bool) {
    let walk = ignore::WalkBuilder::new(folder)
        .hidden(false)
        .require_git(false)
        .git_global(false)
        .follow_links(false)
        .max_depth(Some(max_depth))
        .filter_entry(|e| e.file_name() != ".git")
        .build();
    let mut found: std::collections::BTreeMap<PathBuf, PathBuf> = Default::default();
    let mut truncated = false;
    for (visited, entry) in walk.enumerate() {
        if visited >= MAX_VISITED {
            truncated = true;
            break;
        }
        let Ok(entry) = entry else { continue };
        let Some(rank) = FILE_NAMES.iter().position(|n| entry.file_name() == *n) else {
            continue;
        };
        if entry.file_type().is_some_and(|t| t.is_dir()) {
            continue;
        }
        let Some(dir) = entry.path().parent() else {
            continue;
        };
        match found.get(dir) {
            Some(have)
                if FILE_NAMES
                    .iter()
                    .position(|n| have.file_name() == Some(n.as_ref()))
                    <= Some(rank) => {}
            Some(_) => {
                found.insert(dir.to_path_buf(), entry.path().to_path_buf());
            }
            None if found.len() >= max_count => truncated = true,
            None => {
                found.insert(dir.to_path_buf(), entry.path().to_path_buf());
            }
        }
    }
    let mut files: Vec<PathBuf> = found
        .into_values()
        .map(|f| f.canonicalize().unwrap_or(f))
        .collect();
    files.sort();
    (files, truncated)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn touch(path: &Path) {
        fs::create_dir_all(path.parent().expect("file has a parent")).expect("create dirs");
        fs::write(path, "tasks: {}\n").expect("write file");
    }

    #[test]
    fn find_under_keeps_the_preferred_file_of_each_directory_and_stops_at_the_count() {
        let tmp = tempfile::tempdir().expect("create temp dir");
        touch(&tmp.path().join("a/.rush.yaml"));
        touch(&tmp.path().join("a/.rush"));
        touch(&tmp.path().join("b/.rush.yml"));
        touch(&tmp.path().join("c/.rush"));
        let root = tmp.path().canonicalize().expect("canonical");
        let (found, truncated) = find_under(&root, 8, 10);
        assert_eq!(
            found,
            vec![
                root.join("a/.rush"),
                root.join("b/.rush.yml"),
                root.join("c/.rush")
            ]
        );
        assert!(!truncated);
        let (found, truncated) = find_under(&root, 8, 2);
        assert_eq!(found.len(), 2);
        assert!(truncated);
    }

    #[test]
    fn finds_the_file_in_the_start_directory() {
        let tmp = tempfile::tempdir().expect("create temp dir");
        touch(&tmp.path().join(".rush.yml"));
        assert_eq!(discover(tmp.path()), Some(tmp.path().join(".rush.yml")));
    }

    #[test]
    fn prefers_dot_rush_then_yml_then_yaml() {
        let tmp = tempfile::tempdir().expect("create temp dir");
        touch(&tmp.path().join(".rush.yaml"));
        assert_eq!(discover(tmp.path()), Some(tmp.path().join(".rush.yaml")));
        touch(&tmp.path().join(".rush.yml"));
        assert_eq!(discover(tmp.path()), Some(tmp.path().join(".rush.yml")));
        touch(&tmp.path().join(".rush"));
        assert_eq!(discover(tmp.path()), Some(tmp.path().join(".rush")));
    }

    #[test]
    fn walks_up_to_the_nearest_ancestor_with_a_file() {
        let tmp = tempfile::tempdir().expect("create temp dir");
        touch(&tmp.path().join(".rush"));
        touch(&tmp.path().join("a/.rush.yaml"));
        let deep = tmp.path().join("a/b/c");
        fs::create_dir_all(&deep).expect("create dirs");
        assert_eq!(discover(&deep), Some(tmp.path().join("a/.rush.yaml")));
        assert_eq!(
            discover(&tmp.path().join("a")),
            Some(tmp.path().join("a/.rush.yaml"))
        );
    }

    #[test]
    fn a_directory_named_dot_rush_is_not_a_rush_file() {
        let tmp = tempfile::tempdir().expect("create temp dir");
        fs::create_dir_all(tmp.path().join("sub/.rush")).expect("create dirs");
        touch(&tmp.path().join(".rush.yml"));
        assert_eq!(
            discover(&tmp.path().join("sub")),
            Some(tmp.path().join(".rush.yml"))
        );
    }

    #[test]
    fn a_fifo_or_a_dangling_symlink_is_found_to_be_reported() {
        let tmp = tempfile::tempdir().expect("create temp dir");
        touch(&tmp.path().join(".rush"));
        let sub = tmp.path().join("sub");
        fs::create_dir_all(&sub).expect("create dirs");
        std::os::unix::fs::symlink("nowhere", sub.join(".rush.yml")).expect("symlink");
        assert_eq!(discover(&sub), Some(sub.join(".rush.yml")));
    }

    #[test]
    fn finds_nothing_when_no_ancestor_has_a_file() {
        let tmp = tempfile::tempdir().expect("create temp dir");
        let deep = tmp.path().join("x/y");
        fs::create_dir_all(&deep).expect("create dirs");
        // The temp dir's own ancestors (e.g. /tmp, /) could hold a stray
        // `.rush`; only assert when they do not.
        let outside = tmp.path().parent().and_then(discover);
        assert_eq!(discover(&deep), outside);
    }
}
