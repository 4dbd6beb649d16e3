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

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn touch(path: &Path) {
        fs::create_dir_all(path.parent().expect("file has a parent")).expect("create dirs");
        fs::write(path, "tasks: {}\n").expect("write file");
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
