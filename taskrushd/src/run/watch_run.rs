//! `run --watch`: which changed paths re-run a watched run, and how a
//! burst of changes becomes one re-run.
//!
//! A watched run re-runs when one of the `cache_files` of its tasks (the
//! requested ones and their dependencies) changes, or, when none of them
//! has any, when any file of the project changes that is not ignored:
//! `.gitignore` at the project root (git's own rules, through the `ignore`
//! crate), `.git/` and `.rush-cache/`. Saving the `.rush` file re-runs too.
//! A task that writes into what it watches re-runs forever: outputs belong
//! in ignored directories.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use tokio::sync::mpsc;

use crate::cache::input_files::{EXCLUDED_DIRS, PathMatcher};
use crate::config::rush_file::RushFile;
use crate::run::planner::Plan;

/// Quiet time that ends a burst of changes.
pub(crate) const SETTLE: Duration = Duration::from_millis(50);
/// Longest a burst is collected before the re-run starts anyway.
const SETTLE_MAX: Duration = Duration::from_secs(1);
/// Changed paths reported per re-run.
pub(crate) const SHOWN: usize = 10;

/// What one watched run reacts to.
pub(crate) struct WatchFilter {
    root: PathBuf,
    rush_file: PathBuf,
    /// The `dotenv:` files of the run's tasks: a change re-runs, ignored
    /// or not (`.env` files usually are).
    dotenv: HashSet<PathBuf>,
    /// `None`: any file that is not ignored.
    inputs: Option<PathMatcher>,
    patterns: Vec<String>,
    gitignore: Gitignore,
}

/// The most bytes of a project's `.gitignore` that `run --watch` reads
/// (about 3,000 lines); a larger one is not used (logged), so more changes
/// trigger a run, never fewer.
pub(crate) const MAX_GITIGNORE_BYTES: u64 = 64 * 1024;

impl WatchFilter {
    pub(crate) fn new(config: &RushFile, plan: &Plan) -> WatchFilter {
        // Each pattern once, in order (a hash set: a task may list 10,000).
        let mut seen: HashSet<String> = HashSet::new();
        let mut patterns: Vec<String> = Vec::new();
        let dotenv_path = |raw: &String| config.root.join(crate::config::dotenv::entry(raw).path);
        let mut dotenv: HashSet<PathBuf> = config.dotenv.iter().map(dotenv_path).collect();
        for t in &plan.tasks {
            if let Some(task) = config.tasks.get(&t.name) {
                dotenv.extend(task.dotenv.iter().map(dotenv_path));
                // Relative to the task's `dir`; a `dir` outside the project
                // is not watched for them.
                let Some(prefix) = task.dir_in_root() else {
                    continue;
                };
                for p in crate::config::task_dir::in_dir(&prefix, &task.cache_files) {
                    if seen.insert(p.clone()) {
                        patterns.push(p);
                    }
                }
            }
        }
        // Patterns were validated when the file was loaded.
        let inputs = (!patterns.is_empty())
            .then(|| PathMatcher::new(&patterns).ok())
            .flatten();
        let mut builder = GitignoreBuilder::new(&config.root);
        // Read with the daemon's limits: a `.gitignore` that is a FIFO or
        // an endless file must not hang or bloat the daemon, nor one of
        // many patterns (each may cost kilobytes once compiled: 1.7 GB for
        // 180,000 patterns in 3.9 MB).
        match crate::config::whole_file::read_at_most(
            &config.root.join(".gitignore"),
            MAX_GITIGNORE_BYTES,
        ) {
            Ok(bytes) => {
                let from = Some(config.root.join(".gitignore"));
                let mut bad = 0usize;
                for line in String::from_utf8_lossy(&bytes).lines() {
                    if let Err(e) = builder.add_line(from.clone(), line) {
                        bad += 1;
                        if bad == 1 {
                            tracing::warn!(root = %config.root.display(), "`.gitignore` partly unreadable: {e}");
                        }
                    }
                }
                if bad > 1 {
                    tracing::warn!(root = %config.root.display(), "`.gitignore`: {bad} lines unreadable in all");
                }
            }
            Err(crate::config::whole_file::ReadError::NotFound) => {}
            Err(e) => {
                tracing::warn!(root = %config.root.display(), "`.gitignore` not used: it {}", e.what());
            }
        }
        let gitignore = builder.build().unwrap_or_else(|_| Gitignore::empty());
        WatchFilter {
            root: config.root.clone(),
            rush_file: config.path.clone(),
            dotenv,
            inputs,
            patterns,
            gitignore,
        }
    }

    /// Whether a change of `path` re-runs.
    pub(crate) fn matches(&self, path: &Path) -> bool {
        if path == self.rush_file || self.dotenv.contains(path) {
            return true;
        }
        let Ok(rel) = path.strip_prefix(&self.root) else {
            return false;
        };
        if rel.as_os_str().is_empty()
            || rel.components().any(|c| {
                c.as_os_str()
                    .to_str()
                    .is_some_and(|c| EXCLUDED_DIRS.contains(&c))
            })
        {
            return false;
        }
        if self
            .gitignore
            .matched_path_or_any_parents(path, path.is_dir())
            .is_ignore()
        {
            return false;
        }
        match &self.inputs {
            Some(m) => m.is_match(rel),
            None => !path.is_dir(),
        }
    }

    /// In words, for `watch_waiting`.
    pub(crate) fn describe(&self) -> String {
        if self.patterns.is_empty() {
            format!(
                "files under `{}` (except ignored ones)",
                self.root.display()
            )
        } else {
            let shown: Vec<String> = self.patterns.iter().map(|p| format!("`{p}`")).collect();
            shown.join(", ")
        }
    }
}

/// The filter of a session, replaced when a re-run plans anew.
#[derive(Clone)]
pub(crate) struct SharedFilter(Arc<Mutex<Arc<WatchFilter>>>);

impl SharedFilter {
    pub(crate) fn new(f: WatchFilter) -> SharedFilter {
        SharedFilter(Arc::new(Mutex::new(Arc::new(f))))
    }

    pub(crate) fn set(&self, f: WatchFilter) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(f);
    }

    pub(crate) fn get(&self) -> Arc<WatchFilter> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// As the watcher's filter (checked for every changed path).
    pub(crate) fn as_fn(&self) -> crate::watch::PathFilter {
        let me = self.clone();
        Arc::new(move |p: &Path| me.get().matches(p))
    }
}

/// Collect the rest of a burst that started with `first`: until nothing
/// changed for [`SETTLE`], at most [`SETTLE_MAX`].
pub(crate) async fn burst(
    first: Vec<PathBuf>,
    rx: &mut mpsc::UnboundedReceiver<PathBuf>,
) -> Vec<PathBuf> {
    let mut paths = first;
    let deadline = tokio::time::Instant::now() + SETTLE_MAX;
    loop {
        let wait = SETTLE.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        match tokio::time::timeout(wait, rx.recv()).await {
            Ok(Some(p)) => {
                if !paths.contains(&p) {
                    paths.push(p);
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    paths
}

/// `paths` relative to `root`, at most [`SHOWN`] of them.
pub(crate) fn shown(root: &Path, paths: &[PathBuf]) -> Vec<String> {
    paths
        .iter()
        .take(SHOWN)
        .map(|p| p.strip_prefix(root).unwrap_or(p).display().to_string())
        .collect()
}
