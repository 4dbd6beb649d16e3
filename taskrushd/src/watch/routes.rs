//! Who is interested in a change: file keys, `run --watch` trees, input
//! directories, and the directories that must be watched for them.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::inputs::Inputs;
use super::trees::Tree;

/// Who is interested in a change.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    /// A project's `.rush` file.
    Config(PathBuf),
    /// A plugin of a project: (project root, plugin name).
    Plugin(PathBuf, String),
    /// A cached task's inputs: (project root, task name).
    Inputs(PathBuf, String),
}

#[derive(Default)]
pub(super) struct Routes {
    /// File keys and their files.
    pub(super) files: HashMap<Key, Vec<PathBuf>>,
    /// Exact file path → the keys watching it.
    pub(super) by_file: HashMap<PathBuf, Vec<Key>>,
    /// `run --watch` sessions.
    pub(super) trees: HashMap<u64, Tree>,
    /// Cached tasks' input directories.
    pub(super) inputs: HashMap<Key, Inputs>,
    /// Input directory → the keys watching it.
    pub(super) by_dir: HashMap<PathBuf, Vec<Key>>,
    /// The cookie directory, watched once inputs are.
    pub(super) cookie_dir: Option<PathBuf>,
    /// The last generation given out: generations only grow, so a ticket
    /// can never match a key that was forgotten and registered again.
    pub(super) generation: u64,
}

impl Routes {
    pub(super) fn reindex(&mut self) {
        self.by_file.clear();
        for (k, files) in &self.files {
            for f in files {
                self.by_file.entry(f.clone()).or_default().push(k.clone());
            }
        }
        self.by_dir.clear();
        for (k, inputs) in &self.inputs {
            for d in &inputs.dirs {
                self.by_dir.entry(d.clone()).or_default().push(k.clone());
            }
        }
    }

    pub(super) fn next_generation(&mut self) -> u64 {
        self.generation += 1;
        self.generation
    }

    /// The inputs watching `dir` get a new generation. True if any watch it.
    pub(super) fn bump_dir(&mut self, dir: &Path) -> bool {
        let Some(keys) = self.by_dir.get(dir) else {
            return false;
        };
        for k in keys {
            if let Some(i) = self.inputs.get_mut(k) {
                self.generation += 1;
                i.generation = self.generation;
            }
        }
        true
    }

    /// Something changed at `path`: the inputs watching it or its directory
    /// get a new generation. True if `path` is itself a watched input
    /// directory (it must be watched again: it may be a new inode).
    pub(super) fn input_changed(&mut self, path: &Path) -> bool {
        if let Some(parent) = path.parent() {
            self.bump_dir(parent);
        }
        self.bump_dir(path)
    }

    /// The watches of `dirs` are gone or going: the inputs relying on them
    /// get a new generation.
    pub(super) fn inputs_changed(&mut self, dirs: &[PathBuf]) {
        for d in dirs {
            self.bump_dir(d);
        }
    }

    /// Every input gets a new generation (after an overflow).
    pub(super) fn all_inputs_changed(&mut self) {
        for i in self.inputs.values_mut() {
            self.generation += 1;
            i.generation = self.generation;
        }
    }

    /// Input directories in use by keys other than `key`.
    pub(super) fn input_dirs_besides(&self, key: &Key) -> usize {
        self.inputs
            .iter()
            .filter(|(k, _)| *k != key)
            .map(|(_, i)| i.dirs.len())
            .sum()
    }

    /// Directory → recursive, without directories a recursive watch covers.
    pub(super) fn desired(&self) -> BTreeMap<PathBuf, bool> {
        let mut dirs: BTreeMap<PathBuf, bool> = BTreeMap::new();
        for t in self.trees.values() {
            dirs.insert(t.root.clone(), true);
        }
        for files in self.files.values() {
            for f in files {
                if let Some(d) = f.parent() {
                    dirs.entry(d.to_path_buf()).or_insert(false);
                }
            }
        }
        for inputs in self.inputs.values() {
            for d in &inputs.dirs {
                dirs.entry(d.clone()).or_insert(false);
            }
        }
        if let Some(d) = &self.cookie_dir
            && !self.inputs.is_empty()
        {
            dirs.entry(d.clone()).or_insert(false);
        }
        let trees: Vec<PathBuf> = dirs
            .iter()
            .filter(|(_, r)| **r)
            .map(|(p, _)| p.clone())
            .collect();
        dirs.retain(|p, rec| *rec || !trees.iter().any(|t| p.starts_with(t)));
        // Nested recursive trees: the outer one covers the inner.
        let outer: Vec<PathBuf> = trees.clone();
        dirs.retain(|p, rec| !*rec || !outer.iter().any(|t| t != p && p.starts_with(t)));
        dirs
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::mpsc;

    use super::*;

    fn tree(root: &str) -> Tree {
        Tree {
            root: root.into(),
            filter: Arc::new(|_| true),
            tx: mpsc::unbounded_channel().0,
        }
    }

    #[test]
    fn files_are_watched_through_their_directory_and_trees_cover_them() {
        let mut r = Routes::default();
        r.files.insert(
            Key::Config("/p/.rush".into()),
            vec![PathBuf::from("/p/.rush")],
        );
        r.files.insert(
            Key::Plugin("/p".into(), "x".into()),
            vec![
                PathBuf::from("/p/.rush-plugins/x/plugin.toml"),
                PathBuf::from("/elsewhere/x.py"),
            ],
        );
        let got: Vec<(String, bool)> = r
            .desired()
            .into_iter()
            .map(|(p, rec)| (p.display().to_string(), rec))
            .collect();
        assert_eq!(
            got,
            [
                ("/elsewhere".to_owned(), false),
                ("/p".to_owned(), false),
                ("/p/.rush-plugins/x".to_owned(), false)
            ]
        );
        r.trees.insert(1, tree("/p"));
        r.trees.insert(2, tree("/p/sub"));
        let got: Vec<(String, bool)> = r
            .desired()
            .into_iter()
            .map(|(p, rec)| (p.display().to_string(), rec))
            .collect();
        assert_eq!(
            got,
            [("/elsewhere".to_owned(), false), ("/p".to_owned(), true)]
        );
    }

    fn desired(r: &Routes) -> Vec<(String, bool)> {
        r.desired()
            .into_iter()
            .map(|(p, rec)| (p.display().to_string(), rec))
            .collect()
    }

    /// Routes with the inputs of `task` watched in `dirs`.
    fn with_inputs(r: &mut Routes, task: &str, dirs: &[&str]) -> Key {
        let key = Key::Inputs("/p".into(), task.into());
        let generation = r.next_generation();
        r.inputs.insert(
            key.clone(),
            Inputs {
                dirs: dirs.iter().map(PathBuf::from).collect(),
                generation,
            },
        );
        r.reindex();
        key
    }

    #[test]
    fn a_change_in_an_input_directory_bumps_its_generation_and_no_other() {
        let mut r = Routes::default();
        let build = with_inputs(&mut r, "build", &["/p/src", "/p/src/util"]);
        let docs = with_inputs(&mut r, "docs", &["/p/docs"]);
        let (b0, d0) = (r.inputs[&build].generation, r.inputs[&docs].generation);

        assert!(!r.input_changed(Path::new("/p/src/util/x.rs")));
        assert!(r.inputs[&build].generation > b0);
        assert_eq!(r.inputs[&docs].generation, d0, "another task's inputs");

        // Outside every input directory (a subdirectory not listed, too).
        let b1 = r.inputs[&build].generation;
        assert!(!r.input_changed(Path::new("/p/target/out")));
        assert!(!r.input_changed(Path::new("/p/docs/api/x.md")));
        assert_eq!(r.inputs[&build].generation, b1);
        assert_eq!(r.inputs[&docs].generation, d0);
    }

    #[test]
    fn an_event_on_an_input_directory_itself_asks_for_it_to_be_watched_again() {
        let mut r = Routes::default();
        let build = with_inputs(&mut r, "build", &["/p/src", "/p/src/util"]);
        let g = r.inputs[&build].generation;
        assert!(r.input_changed(Path::new("/p/src/util")));
        assert!(r.inputs[&build].generation > g);
    }

    #[test]
    fn generations_only_grow_so_inputs_registered_again_never_match_an_old_ticket() {
        let mut r = Routes::default();
        let build = with_inputs(&mut r, "build", &["/p/src"]);
        let ticket = r.inputs[&build].generation;
        r.inputs.remove(&build);
        r.reindex();
        with_inputs(&mut r, "build", &["/p/src"]);
        assert!(r.inputs[&build].generation > ticket);
        let g = r.inputs[&build].generation;
        r.all_inputs_changed();
        assert!(r.inputs[&build].generation > g);
    }

    #[test]
    fn the_cookie_directory_is_watched_only_while_inputs_are() {
        let mut r = Routes {
            cookie_dir: Some("/run/cookies.1".into()),
            ..Routes::default()
        };
        assert_eq!(desired(&r), []);
        with_inputs(&mut r, "build", &["/p/src"]);
        assert_eq!(
            desired(&r),
            [
                ("/p/src".to_owned(), false),
                ("/run/cookies.1".to_owned(), false)
            ]
        );
    }

    #[test]
    fn input_directories_are_counted_for_the_budget_besides_the_task_checked() {
        let mut r = Routes::default();
        let build = with_inputs(&mut r, "build", &["/p/src", "/p/src/util"]);
        let docs = with_inputs(&mut r, "docs", &["/p/docs"]);
        assert_eq!(r.input_dirs_besides(&build), 1);
        assert_eq!(r.input_dirs_besides(&docs), 2);
        assert_eq!(r.input_dirs_besides(&Key::Config("/p/.rush".into())), 3);
    }

    #[test]
    fn a_session_tree_covers_the_input_directories_under_it() {
        let mut r = Routes::default();
        with_inputs(&mut r, "build", &["/p/src", "/q/src"]);
        r.trees.insert(1, tree("/p"));
        assert_eq!(
            desired(&r),
            [("/p".to_owned(), true), ("/q/src".to_owned(), false)]
        );
    }
}
