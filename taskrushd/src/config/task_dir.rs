//! A task's `dir:`: where it runs, and how its `cache_files` (relative to
//! that directory) become patterns relative to the project root, so that
//! the paths in its cache key are the project's.

use std::path::{Path, PathBuf};

use crate::config::rush_file::Task;

impl Task {
    /// The directory the task runs in: its `dir` joined onto `root`
    /// (normalised when it stays inside the root: `./a/../b` is `root/b`;
    /// an absolute `dir` stays as it is), else `root`.
    pub(crate) fn working_dir(&self, root: &Path) -> PathBuf {
        match (self.dir.as_deref(), self.dir_in_root()) {
            (None, _) => root.to_path_buf(),
            (Some(_), Some(rel)) if rel.is_empty() => root.to_path_buf(),
            (Some(_), Some(rel)) => root.join(rel),
            (Some(dir), None) => root.join(dir),
        }
    }

    /// `dir` relative to the root, `/`-separated, lexically normalised
    /// (`./a/../b` is `b`, the root itself is `""`); `None` when it is
    /// absolute or leaves the root (`../x`).
    pub(crate) fn dir_in_root(&self) -> Option<String> {
        let Some(dir) = self.dir.as_deref() else {
            return Some(String::new());
        };
        if dir.starts_with('/') {
            return None;
        }
        let mut parts: Vec<&str> = Vec::new();
        for part in dir.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    parts.pop()?;
                }
                p => parts.push(p),
            }
        }
        Some(parts.join("/"))
    }

    /// Where the task's cache patterns are expanded and the patterns to
    /// expand there: `root` and `patterns` (relative to `dir`) prefixed
    /// with `dir` when `dir` is inside the root, so the cache key holds
    /// paths relative to the project root; the task's directory and
    /// `patterns` as written when `dir` is outside it.
    pub(crate) fn cache_root_and_patterns(
        &self,
        root: &Path,
        patterns: &[String],
    ) -> (PathBuf, Vec<String>) {
        match self.dir_in_root() {
            Some(prefix) => (root.to_path_buf(), in_dir(&prefix, patterns)),
            None => (self.working_dir(root), patterns.to_vec()),
        }
    }
}

/// `patterns` relative to `prefix` made relative to its parent: `!x`
/// becomes `!prefix/x`.
pub(crate) fn in_dir(prefix: &str, patterns: &[String]) -> Vec<String> {
    if prefix.is_empty() {
        return patterns.to_vec();
    }
    patterns
        .iter()
        .map(|p| match p.strip_prefix('!') {
            Some(rest) => format!("!{prefix}/{}", rest.trim_start_matches("./")),
            None => format!("{prefix}/{}", p.trim_start_matches("./")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(dir: Option<&str>) -> Task {
        let src = match dir {
            Some(d) => format!("tasks:\n  t: {{cmd: x, dir: '{d}'}}\n"),
            None => "tasks:\n  t: {cmd: x}\n".to_owned(),
        };
        let file = crate::config::rush_file::parse(Path::new("/p/.rush"), &src).expect("parses");
        file.tasks["t"].clone()
    }

    #[test]
    fn dir_is_normalised_relative_to_the_root_or_none_outside_it() {
        assert_eq!(task(None).dir_in_root().as_deref(), Some(""));
        assert_eq!(task(Some(".")).dir_in_root().as_deref(), Some(""));
        assert_eq!(
            task(Some("./a/../b/c/")).dir_in_root().as_deref(),
            Some("b/c")
        );
        assert_eq!(task(Some("../x")).dir_in_root(), None);
        assert_eq!(task(Some("/abs")).dir_in_root(), None);
    }

    #[test]
    fn patterns_are_prefixed_with_dir_and_negations_keep_their_bang() {
        let t = task(Some("web"));
        let (root, patterns) =
            t.cache_root_and_patterns(Path::new("/p"), &["src/**".into(), "!./dist".into()]);
        assert_eq!(root, Path::new("/p"));
        assert_eq!(patterns, ["web/src/**", "!web/dist"]);
        let (root, patterns) =
            task(Some("../o")).cache_root_and_patterns(Path::new("/p"), &["a".into()]);
        assert_eq!(root, Path::new("/p/../o"));
        assert_eq!(patterns, ["a"]);
    }
}
