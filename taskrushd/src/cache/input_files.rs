//! Expanding a task's `cache_files` patterns into its sorted input files.
//!
//! Patterns are relative to the project root and use `/`:
//!
//! - A pattern without glob metacharacters (`Cargo.toml`) names one file. It
//!   is an input whether or not it exists: its absence is part of the cache
//!   key. If it names a directory, every file below it is an input.
//! - A glob (`src/**/*.rs`, `assets/*.png`, `{a,b}/*.txt`) is matched with
//!   globset, `*`, `?` and classes never crossing `/`, `**` crossing any
//!   number of directories. Only the pattern's literal prefix directory is
//!   walked (`src/` for `src/**/*.rs`), and no deeper than the pattern can
//!   match (`*.md` reads only the root directory). Hidden files are matched
//!   like any other.
//! - A pattern starting with `!` excludes what it matches (and, if it names
//!   a directory, everything below it) from the other patterns' files, in
//!   whatever order the patterns are given (as in Turborepo's `inputs`).
//!
//! Never inputs: anything under a `.git` or `.rush-cache` directory, and
//! directories, FIFOs, sockets and devices. Symlinks are followed, to files
//! and into directories, with loops detected and skipped; a dangling symlink
//! matched by a glob is an input that is absent. When the patterns match a
//! file below a directory whatever the path to it (`src/**`, `src/**/*.rs`,
//! no other pattern starting further down: [`Shape::allows_once`]), each
//! directory (device, inode) is read once per walked prefix: reached again
//! through another symlink, it is recorded as an [`Alias`] (part of the
//! cache key) and not walked again (a "diamond" of symlinks would otherwise
//! be walked an exponential number of times). Entries are walked in name
//! order, so the path a directory is read under is always the same: the
//! first in that order. Other patterns read a directory under every path
//! to it, at most [`MAX_READ_AGAIN`] times again.
//!
//! Bounded ([`InputLimits`]): past a bound the expansion fails with an
//! error naming it; the list is never cut short, which would make the
//! cache key stale.

use std::cell::RefCell;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use walkdir::WalkDir;

use crate::cache::file_hashes::{StopFlag, is_absent};
use crate::watch::WatchDir;

/// How far one task's `cache_files` may reach. Each bound can be changed
/// with an environment variable of the daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct InputLimits {
    /// Input files (`TASKRUSH_MAX_INPUT_FILES`, default 1,000,000).
    pub(crate) files: usize,
    /// Total size of the input files (`TASKRUSH_MAX_INPUT_BYTES`, default
    /// 32 GiB).
    pub(crate) bytes: u64,
    /// Directory levels below the directory a glob walks
    /// (`TASKRUSH_MAX_INPUT_DEPTH`, default 128).
    pub(crate) depth: usize,
}

impl Default for InputLimits {
    fn default() -> Self {
        InputLimits {
            files: 1_000_000,
            bytes: 32 << 30,
            depth: 128,
        }
    }
}

impl InputLimits {
    /// The defaults, with the daemon's environment's overrides (read once).
    pub(crate) fn from_env() -> InputLimits {
        static LIMITS: std::sync::OnceLock<InputLimits> = std::sync::OnceLock::new();
        *LIMITS.get_or_init(|| {
            let var = |name: &str| {
                std::env::var(name)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok())
            };
            let d = InputLimits::default();
            InputLimits {
                files: var("TASKRUSH_MAX_INPUT_FILES").map_or(d.files, |v| v as usize),
                bytes: var("TASKRUSH_MAX_INPUT_BYTES").unwrap_or(d.bytes),
                depth: var("TASKRUSH_MAX_INPUT_DEPTH").map_or(d.depth, |v| v as usize),
            }
        })
    }

    #[cfg(test)]
    fn unlimited() -> InputLimits {
        InputLimits {
            files: usize::MAX,
            bytes: u64::MAX,
            depth: usize::MAX,
        }
    }
}

/// Directory names whose contents are never inputs.
pub(crate) const EXCLUDED_DIRS: [&str; 2] = [".git", ".rush-cache"];

/// The input files of a task: sorted by relative path, without duplicates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct InputFiles {
    root: PathBuf,
    /// Absolute (root-joined) paths, sorted by their bytes; since all share
    /// the `root` prefix this is the order of the relative paths.
    files: Vec<PathBuf>,
    /// The directories a file watcher must watch to see every change to
    /// this list or to these files' contents; `None` when no set of
    /// watched directories can (see [`InputFiles::watch_dirs`]).
    watch: Option<Vec<WatchDir>>,
    /// Directories not walked because the walk had read them already
    /// under another path (see [`InputFiles::aliases`]).
    aliases: Vec<Alias>,
}

/// A directory reached again through another path (a symbolic link), and
/// not walked again: `path` (relative to the root) is the same directory
/// as `first`, the path it was read under (or, for a link back up the
/// tree, the ancestor it leads to).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Alias {
    pub(crate) path: PathBuf,
    pub(crate) first: PathBuf,
}

/// One input file, as seen from the project root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct InputFile<'a> {
    /// Relative to the project root, e.g. `src/main.rs` (`/`-separated on
    /// Unix; on Windows the native separator, see [`InputFile::rel_bytes`]).
    pub(crate) rel: &'a Path,
    /// The root joined with `rel`.
    pub(crate) abs: &'a Path,
}

impl InputFile<'_> {
    /// The relative path as bytes with `/` separators on every platform,
    /// the form that goes into cache keys.
    pub(crate) fn rel_bytes(&self) -> std::borrow::Cow<'_, [u8]> {
        let bytes = self.rel.as_os_str().as_encoded_bytes();
        if std::path::MAIN_SEPARATOR == '/' {
            bytes.into()
        } else {
            bytes
                .iter()
                .map(|&b| if b == b'\\' { b'/' } else { b })
                .collect::<Vec<u8>>()
                .into()
        }
    }
}

impl InputFiles {
    pub(crate) fn len(&self) -> usize {
        self.files.len()
    }

    #[allow(dead_code, reason = "clippy wants `is_empty` beside `len`")]
    pub(crate) fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The directories whose events cover every change to these inputs:
    /// each directory the expansion read, the parent of each named file (or
    /// the nearest existing ancestor of an absent one), and all their
    /// ancestors up to the project root (so that renaming or replacing any
    /// of them shows too). Sorted, without duplicates.
    ///
    /// `None` when watching directories cannot see every change: an input
    /// reached through a symlink (to a file or a directory: its target may
    /// change elsewhere, and one inode watched under two paths reports
    /// under one), a dangling symlink, a pattern reaching outside the root,
    /// or a directory on another device than the root (a mount).
    pub(crate) fn watch_dirs(&self) -> Option<&[WatchDir]> {
        self.watch.as_deref()
    }

    /// The directories reached again through another path and not walked
    /// again, sorted by path: part of the cache key, since the files below
    /// them are inputs under their paths too (adding, removing or
    /// retargeting such a link changes what the task sees).
    pub(crate) fn aliases(&self) -> &[Alias] {
        &self.aliases
    }

    pub(crate) fn iter(&self) -> impl ExactSizeIterator<Item = InputFile<'_>> {
        self.files.iter().map(|abs| InputFile {
            rel: relative(&self.root, abs),
            abs,
        })
    }
}

/// Why the inputs, and so a task's cache key, could not be determined: a
/// pattern that cannot be used, a directory or file that could not be read
/// while expanding the patterns or hashing the files, a bound reached. The
/// task should then run uncached.
#[derive(Debug)]
pub(crate) enum InputError {
    /// A `cache_files` pattern is invalid.
    Pattern { pattern: String, reason: String },
    /// A file or directory could not be read; `path` is relative to the
    /// project root, e.g. `cannot read `src/x.rs`: Permission denied`.
    Io { path: PathBuf, source: io::Error },
    /// A bound of [`InputLimits`] was reached; says which.
    Limit(String),
    /// Told to stop (the run was cancelled, its client left).
    Stopped,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputError::Pattern { pattern, reason } => {
                write!(f, "invalid cache_files pattern `{pattern}`: {reason}")
            }
            InputError::Io { path, source } => {
                write!(f, "cannot read `{}`: {source}", path.display())
            }
            InputError::Limit(what) => f.write_str(what),
            InputError::Stopped => f.write_str("stopped: the run was cancelled"),
        }
    }
}

impl std::error::Error for InputError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            InputError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A pattern taken apart.
struct Parsed<'p> {
    /// `/`-joined without empty or `.` components.
    normalized: String,
    /// The leading components without glob metacharacters.
    prefix: Vec<&'p str>,
    /// How many directory levels below the prefix a match can be; `None`
    /// for unlimited (`**`). `Some(0)` for a literal.
    depth: Option<usize>,
    negated: bool,
}

fn has_meta(s: &str) -> bool {
    s.contains(['*', '?', '[', ']', '{', '}', '\\'])
}

fn parse(pattern: &str) -> Result<Parsed<'_>, InputError> {
    let bad = |reason: &str| InputError::Pattern {
        pattern: pattern.to_owned(),
        reason: reason.to_owned(),
    };
    let (negated, body) = match pattern.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, pattern),
    };
    if body.starts_with('/') || Path::new(body).is_absolute() {
        return Err(bad("must be relative to the project root"));
    }
    let components: Vec<&str> = body
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if components.is_empty() {
        return Err(bad("names the whole project; use `**` for every file"));
    }
    let literal = components.iter().take_while(|c| !has_meta(c)).count();
    let rest = &components[literal..];
    let depth = if rest.iter().any(|c| c.contains("**")) {
        None
    } else {
        Some(rest.len())
    };
    let parsed = Parsed {
        normalized: components.join("/"),
        prefix: components[..literal].to_vec(),
        depth,
        negated,
    };
    if !rest.is_empty() {
        compile(pattern, &parsed.normalized)?;
    }
    Ok(parsed)
}

fn compile(pattern: &str, glob: &str) -> Result<globset::Glob, InputError> {
    GlobBuilder::new(glob)
        .literal_separator(true)
        .build()
        .map_err(|err| InputError::Pattern {
            pattern: pattern.to_owned(),
            reason: err.kind().to_string(),
        })
}

/// Checks one pattern without touching the file system (for validating a
/// `.rush` file when it is loaded).
pub(crate) fn check_pattern(pattern: &str) -> Result<(), InputError> {
    parse(pattern).map(drop)
}

/// `abs` relative to `root`, for paths built by joining onto `root`.
fn relative<'a>(root: &Path, abs: &'a Path) -> &'a Path {
    // Fast path on Unix: slice the bytes instead of comparing components.
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let root_bytes = root.as_os_str().as_bytes();
        if let Some(rest) = abs.as_os_str().as_bytes().strip_prefix(root_bytes)
            && (root_bytes.is_empty() || root_bytes.ends_with(b"/") || rest.starts_with(b"/"))
        {
            let start = rest.iter().take_while(|&&b| b == b'/').count();
            let rest = &rest[start..];
            // `root/./x` (root ending in `.`) still needs the slow path.
            if rest != b"." && !rest.starts_with(b"./") {
                return Path::new(std::ffi::OsStr::from_bytes(rest));
            }
        }
    }
    // Every path was built by joining onto `root`, so the prefix is there;
    // the fallback to `abs` is unreachable.
    abs.strip_prefix(root).unwrap_or(abs)
}

fn is_excluded(component: &str) -> bool {
    EXCLUDED_DIRS.contains(&component)
}

/// Whether the last component of `path` is an excluded name (compares
/// bytes: this runs for every walked entry).
fn names_excluded(path: &Path) -> bool {
    let bytes = path.as_os_str().as_encoded_bytes();
    EXCLUDED_DIRS.iter().any(|name| {
        bytes.strip_suffix(name.as_bytes()).is_some_and(|head| {
            head.last()
                .is_some_and(|&b| std::path::is_separator(char::from(b)))
        })
    })
}

fn join_all(root: &Path, components: &[&str]) -> PathBuf {
    let mut path = root.to_path_buf();
    for c in components {
        path.push(c);
    }
    path
}

/// A directory to walk and how deep.
struct Walk<'p> {
    prefix: Vec<&'p str>,
    depth: Option<usize>,
}

/// Decides, without touching the file system, whether a changed path
/// (relative to the project root) is one of the inputs `patterns` name:
/// what `run --watch` re-runs on. A literal also covers everything below
/// it, in case it names a directory.
pub(crate) struct PathMatcher {
    include: GlobSet,
    exclude: GlobSet,
}

impl PathMatcher {
    pub(crate) fn new(patterns: &[String]) -> Result<PathMatcher, InputError> {
        let mut include = GlobSetBuilder::new();
        let mut exclude = GlobSetBuilder::new();
        for pattern in patterns {
            let parsed = parse(pattern)?;
            let set = if parsed.negated {
                &mut exclude
            } else {
                &mut include
            };
            set.add(compile(pattern, &parsed.normalized)?);
            if parsed.depth == Some(0) {
                set.add(compile(pattern, &format!("{}/**", parsed.normalized))?);
            }
        }
        let build = |set: GlobSetBuilder| {
            set.build().map_err(|err| InputError::Pattern {
                pattern: patterns.join(", "),
                reason: err.to_string(),
            })
        };
        Ok(PathMatcher {
            include: build(include)?,
            exclude: build(exclude)?,
        })
    }

    /// Whether `rel` is an input.
    pub(crate) fn is_match(&self, rel: &Path) -> bool {
        !rel.components()
            .any(|c| c.as_os_str().to_str().is_some_and(is_excluded))
            && self.include.is_match(rel)
            && !self.exclude.is_match(rel)
    }
}

/// Expands `patterns` (relative to `root`) into the task's input files.
#[cfg(test)]
pub(crate) fn expand(root: &Path, patterns: &[String]) -> Result<InputFiles, InputError> {
    expand_until(
        root,
        patterns,
        &InputLimits::unlimited(),
        &StopFlag::default(),
    )
}

/// [`expand`] within `limits`, giving up soon after `stop` is set.
pub(crate) fn expand_until(
    root: &Path,
    patterns: &[String],
    limits: &InputLimits,
    stop: &StopFlag,
) -> Result<InputFiles, InputError> {
    let mut files: Vec<PathBuf> = Vec::new();
    let mut globs = GlobSetBuilder::new();
    let mut excludes = GlobSetBuilder::new();
    let mut any_exclude = false;
    let mut walks: Vec<Walk<'_>> = Vec::new();
    let mut watch = WatchDirs::new(root);
    // Every glob's literal prefix, and whether what follows it matches a
    // path below that prefix whatever the directories between (`**`,
    // `**/*.rs`): then a directory's files match under every path to it.
    let mut shapes: Vec<Shape<'_>> = Vec::new();

    for pattern in patterns {
        let parsed = parse(pattern)?;
        // A literal naming a file is an input by its path alone; one naming
        // a directory is added below, once known.
        if parsed.negated || parsed.depth != Some(0) {
            shapes.push(Shape {
                prefix: parsed.prefix.clone(),
                anywhere: matches_anywhere_below(&parsed),
            });
        }
        if parsed.negated {
            excludes.add(compile(pattern, &parsed.normalized)?);
            if parsed.depth == Some(0) {
                // `!dir` excludes everything below `dir` too.
                excludes.add(compile(pattern, &format!("{}/**", parsed.normalized))?);
            }
            any_exclude = true;
            continue;
        }
        if parsed.prefix.iter().any(|c| is_excluded(c)) {
            continue;
        }
        if parsed.depth == Some(0) {
            let abs = join_all(root, &parsed.prefix);
            match fs::metadata(&abs) {
                Ok(meta) if meta.is_dir() => {
                    // A directory names everything below it.
                    shapes.push(Shape {
                        prefix: parsed.prefix.clone(),
                        anywhere: true,
                    });
                    let all = format!("{}/**", parsed.normalized);
                    globs.add(compile(pattern, &all)?);
                    walks.push(Walk {
                        prefix: parsed.prefix,
                        depth: None,
                    });
                }
                Ok(meta) if !meta.is_file() => watch.file(&abs), // FIFO, socket, device
                Ok(_) => {
                    watch.file(&abs);
                    files.push(abs);
                }
                Err(err) if is_absent(&err) => {
                    watch.file(&abs);
                    files.push(abs);
                }
                Err(err) => {
                    return Err(InputError::Io {
                        path: PathBuf::from(parsed.normalized),
                        source: err,
                    });
                }
            }
        } else {
            globs.add(compile(pattern, &parsed.normalized)?);
            walks.push(Walk {
                prefix: parsed.prefix,
                depth: parsed.depth,
            });
        }
    }

    let build = |set: GlobSetBuilder| {
        set.build().map_err(|err| InputError::Pattern {
            pattern: patterns.join(", "),
            reason: err.to_string(),
        })
    };
    let globs = build(globs)?;
    let mut aliases: Vec<Alias> = Vec::new();
    for walk in merge_walks(walks) {
        let bounds = Bounds { limits, stop };
        let found = Found {
            files: &mut files,
            aliases: &mut aliases,
            watch: &mut watch,
        };
        let once = walk.depth.is_none() && shapes.iter().all(|s| s.allows_once(&walk.prefix));
        walk_one(root, &walk, &globs, once, found, bounds)?;
    }
    if files.len() + aliases.len() > limits.files {
        return Err(too_many_files(limits));
    }
    if !aliases.is_empty() {
        // Symbolic links to directories: their targets may change
        // anywhere.
        watch.possible = false;
    }
    aliases.sort_unstable_by(|a, b| a.path.cmp(&b.path));
    aliases.dedup();

    files.sort_unstable_by(|a, b| {
        a.as_os_str()
            .as_encoded_bytes()
            .cmp(b.as_os_str().as_encoded_bytes())
    });
    files.dedup_by(|a, b| a.as_os_str() == b.as_os_str());
    if any_exclude {
        let excludes = build(excludes)?;
        files.retain(|abs| !excludes.is_match(relative(root, abs)));
    }
    Ok(InputFiles {
        root: root.to_path_buf(),
        files,
        watch: watch.finish(),
        aliases,
    })
}

/// (device, inode) of a directory.
#[cfg(unix)]
fn dir_id(meta: &fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

#[cfg(not(unix))]
fn dir_id(_meta: &fs::Metadata) -> (u64, u64) {
    (0, 0)
}

/// Collects [`InputFiles::watch_dirs`] during an expansion.
struct WatchDirs<'r> {
    root: &'r Path,
    dirs: Vec<WatchDir>,
    /// Directories from which the chain of ancestors up to the root is
    /// added at the end.
    anchors: Vec<PathBuf>,
    possible: bool,
}

impl<'r> WatchDirs<'r> {
    fn new(root: &'r Path) -> Self {
        WatchDirs {
            root,
            dirs: Vec::new(),
            anchors: Vec::new(),
            possible: true,
        }
    }

    /// A named file (present or not): its directory, or the nearest
    /// existing ancestor, where its creation would show. A symlink's target
    /// may change anywhere: not watchable.
    fn file(&mut self, abs: &Path) {
        match fs::symlink_metadata(abs) {
            Ok(meta) if meta.file_type().is_symlink() => self.possible = false,
            _ => match abs.parent() {
                Some(parent) => self.existing_ancestor(parent),
                None => self.possible = false,
            },
        }
    }

    /// A walk's directory that does not exist: its creation shows in the
    /// nearest existing ancestor.
    fn existing_ancestor(&mut self, dir: &Path) {
        let found = dir
            .ancestors()
            .take_while(|d| d.starts_with(self.root))
            .find(|d| d.is_dir());
        match found {
            Some(d) => self.anchors.push(d.to_path_buf()),
            None => self.possible = false,
        }
    }

    /// A directory the walk read.
    fn read(&mut self, entry: &walkdir::DirEntry) {
        if entry.path_is_symlink() {
            self.possible = false;
            return;
        }
        match entry.metadata() {
            Ok(meta) => self.dirs.push(WatchDir {
                path: entry.path().to_path_buf(),
                id: dir_id(&meta),
            }),
            Err(_) => self.possible = false,
        }
    }

    fn finish(mut self) -> Option<Vec<WatchDir>> {
        if !self.possible {
            return None;
        }
        let root_dev = fs::metadata(self.root).ok().map(|m| dir_id(&m).0)?;
        for anchor in std::mem::take(&mut self.anchors) {
            // `..` would leave the root: its ancestors are not ours to watch.
            if anchor
                .components()
                .any(|c| c == std::path::Component::ParentDir)
            {
                return None;
            }
            for d in anchor.ancestors() {
                if !d.starts_with(self.root) {
                    break;
                }
                // Below the root, a symlinked directory is not watchable
                // (the root itself is the project's own path).
                let meta = if d == self.root {
                    fs::metadata(d)
                } else {
                    fs::symlink_metadata(d)
                };
                match meta {
                    Ok(m) if m.is_dir() => self.dirs.push(WatchDir {
                        path: d.to_path_buf(),
                        id: dir_id(&m),
                    }),
                    _ => return None,
                }
            }
        }
        if self.dirs.iter().any(|d| d.id.0 != root_dev) {
            return None; // another file system mounted inside the project
        }
        self.dirs.sort_unstable_by(|a, b| a.path.cmp(&b.path));
        self.dirs.dedup_by(|a, b| a.path == b.path);
        Some(self.dirs)
    }
}

/// Walks that lie inside another walk's directory are folded into it (with
/// the depth needed to reach their matches), so no directory is read twice.
fn merge_walks(mut walks: Vec<Walk<'_>>) -> Vec<Walk<'_>> {
    // Sorted, a directory comes right before everything below it.
    walks.sort_by(|a, b| a.prefix.cmp(&b.prefix));
    let mut merged: Vec<Walk<'_>> = Vec::with_capacity(walks.len());
    for walk in walks {
        if let Some(outer) = merged.last_mut()
            && walk.prefix.starts_with(&outer.prefix)
        {
            let extra = walk.prefix.len() - outer.prefix.len();
            outer.depth = match (outer.depth, walk.depth) {
                (Some(a), Some(b)) => Some(a.max(extra + b)),
                _ => None,
            };
        } else {
            merged.push(walk);
        }
    }
    merged
}

/// A glob's literal prefix, and whether the rest matches anything below
/// it (see [`matches_anywhere_below`]).
struct Shape<'p> {
    prefix: Vec<&'p str>,
    anywhere: bool,
}

impl Shape<'_> {
    /// Whether, as far as this pattern is concerned, the walk of the
    /// directory `walk` may read each directory once: a file below it then
    /// matches under one path to its directory iff under every other.
    fn allows_once(&self, walk: &[&str]) -> bool {
        if walk.starts_with(&self.prefix) {
            self.anywhere
        } else {
            // A pattern starting below the walk's directory matches under
            // some paths only; one beside it matches nothing in it.
            !self.prefix.starts_with(walk)
        }
    }
}

/// Whether the pattern, below its literal prefix, matches a path whatever
/// the directories between: nothing (a literal: the directory and all
/// below it), `**`, or `**/NAME` with `NAME` one component.
fn matches_anywhere_below(parsed: &Parsed<'_>) -> bool {
    let rest: Vec<&str> = parsed
        .normalized
        .split('/')
        .skip(parsed.prefix.len())
        .collect();
    match rest.as_slice() {
        [] | ["**"] => true,
        ["**", name] => !name.contains("**"),
        _ => false,
    }
}

/// How many times a walk that cannot read each directory once (see
/// [`Shape::allows_once`]) may read directories again under other paths:
/// a "diamond" of symbolic links would otherwise be walked an exponential
/// number of times (about 3 s per 10,000 directories read on a loaded
/// machine).
const MAX_READ_AGAIN: usize = 10_000;

/// What a walk adds to.
struct Found<'a, 'r> {
    files: &'a mut Vec<PathBuf>,
    aliases: &'a mut Vec<Alias>,
    watch: &'a mut WatchDirs<'r>,
}

/// The bounds of one expansion.
struct Bounds<'a> {
    limits: &'a InputLimits,
    stop: &'a StopFlag,
}

fn too_many_files(limits: &InputLimits) -> InputError {
    InputError::Limit(format!(
        "`cache_files` match more than {} files, the limit for one task\n\
         hint: narrow the patterns (exclude a directory with `!dir`), or raise \
         TASKRUSH_MAX_INPUT_FILES in the daemon's environment",
        limits.files
    ))
}

/// Walks one directory. With `once`, each directory (device, inode) is read
/// once: reached again through another path, it is recorded as an
/// [`Alias`] and not walked again (its files match under every path to it,
/// see [`Shape::allows_once`]). Without, it is walked under every path,
/// each counting towards the bound on files.
fn walk_one(
    root: &Path,
    walk: &Walk<'_>,
    globs: &GlobSet,
    once: bool,
    found: Found<'_, '_>,
    bounds: Bounds<'_>,
) -> Result<(), InputError> {
    let Found {
        files,
        aliases,
        watch,
    } = found;
    let Bounds { limits, stop } = bounds;
    let dir = join_all(root, &walk.prefix);
    watch.existing_ancestor(&dir);
    // (device, inode) of every directory read so far, and its first path.
    let mut seen: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let skipped: RefCell<Vec<Alias>> = RefCell::new(Vec::new());
    // Directories read again under another path (without `once`).
    let read_again = std::cell::Cell::new(0usize);
    let mut walker = WalkDir::new(&dir).follow_links(true).sort_by_file_name();
    // One level past the bound, to see that it is passed.
    let max_depth = limits.depth.saturating_add(1);
    walker = walker.max_depth(walk.depth.map_or(max_depth, |d| d.min(max_depth)));
    let entries = walker.into_iter().filter_entry(|e| {
        if e.depth() > 0 && names_excluded(e.path()) {
            return false;
        }
        // Each directory once, however many symlinks lead to it.
        if e.file_type().is_dir() {
            return match e.metadata() {
                Ok(meta) => match seen.entry(dir_id(&meta)) {
                    Entry::Vacant(v) => {
                        v.insert(e.path().to_path_buf());
                        true
                    }
                    Entry::Occupied(first) if once => {
                        skipped.borrow_mut().push(Alias {
                            path: relative(root, e.path()).to_path_buf(),
                            first: relative(root, first.get()).to_path_buf(),
                        });
                        false
                    }
                    Entry::Occupied(_) => {
                        read_again.set(read_again.get() + 1);
                        true
                    }
                },
                Err(_) => true, // reported by the walk itself
            };
        }
        true
    });
    for entry in entries {
        if stop.is_stopped() {
            return Err(InputError::Stopped);
        }
        if let Ok(e) = &entry
            && e.depth() > limits.depth
        {
            return Err(InputError::Limit(format!(
                "`cache_files` reach more than {} directories deep below `{}` (at `{}`), \
                 the limit\nhint: narrow the patterns, or raise TASKRUSH_MAX_INPUT_DEPTH \
                 in the daemon's environment",
                limits.depth,
                relative(root, &dir).display(),
                relative(root, e.path()).display()
            )));
        }
        if files.len() + skipped.borrow().len() + aliases.len() > limits.files {
            return Err(too_many_files(limits));
        }
        if read_again.get() > MAX_READ_AGAIN {
            let rel = relative(root, &dir).display().to_string();
            let (below, glob) = if rel.is_empty() {
                ("the project root".to_owned(), String::new())
            } else {
                (format!("`{rel}`"), format!("{rel}/"))
            };
            let at = entry
                .as_ref()
                .map_or(Path::new(""), |e| relative(root, e.path()));
            return Err(InputError::Limit(format!(
                "`cache_files` read directories below {below} more than {MAX_READ_AGAIN} \
                 times again through other symbolic links (at `{}`), the limit for one task\n\
                 hint: patterns like `{glob}**` or `{glob}**/*.ext`, without `!` patterns or \
                 other patterns further down, read each directory once",
                at.display(),
            )));
        }
        let entry = match entry {
            Ok(entry) => entry,
            Err(err) => {
                if let (Some(ancestor), Some(path)) = (err.loop_ancestor(), err.path()) {
                    // A symlink back up the tree: already walked.
                    skipped.borrow_mut().push(Alias {
                        path: relative(root, path).to_path_buf(),
                        first: relative(root, ancestor).to_path_buf(),
                    });
                    continue;
                }
                let absent = err.io_error().is_some_and(is_absent);
                match err.path() {
                    // A dangling symlink (or a file deleted during the walk)
                    // is an absent input if the glob wants it; a missing
                    // walk root simply has no files.
                    Some(path) if absent => {
                        if err.depth() > 0 && globs.is_match(relative(root, path)) {
                            // Dangling: its target may appear anywhere.
                            watch.possible = false;
                            files.push(path.to_path_buf());
                        }
                        continue;
                    }
                    _ => {}
                }
                let path = err
                    .path()
                    .map(|p| relative(root, p).to_path_buf())
                    .unwrap_or_else(|| relative(root, &dir).to_path_buf());
                return Err(InputError::Io {
                    path,
                    source: err.into(),
                });
            }
        };
        if entry.file_type().is_dir() {
            // Read unless the depth limit stops the walk here.
            if walk.depth.is_none_or(|max| entry.depth() < max) {
                watch.read(&entry);
            }
            continue;
        }
        if !entry.file_type().is_file() {
            continue;
        }
        if globs.is_match(relative(root, entry.path())) {
            if entry.path_is_symlink() {
                // The target may live, and change, outside the watched dirs.
                watch.possible = false;
            }
            files.push(entry.into_path());
        }
    }
    aliases.append(&mut skipped.borrow_mut());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tempfile::TempDir;

    /// A fresh temp dir with each file (and its directories) created;
    /// content = its path.
    fn tree(files: &[&str]) -> TempDir {
        let dir = TempDir::new().expect("create temp dir");
        for f in files {
            let path = dir.path().join(f);
            fs::create_dir_all(path.parent().expect("has parent")).expect("mkdir");
            fs::write(&path, f).expect("write");
        }
        dir
    }

    fn rels(root: &Path, patterns: &[&str]) -> Vec<String> {
        let patterns: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
        let inputs = expand(root, &patterns).expect("expand");
        inputs
            .iter()
            .map(|f| String::from_utf8_lossy(&f.rel_bytes()).into_owned())
            .collect()
    }

    const TREE: &[&str] = &[
        "Cargo.toml",
        "README.md",
        "src/main.rs",
        "src/lib.rs",
        "src/.hidden.rs",
        "src/cache/mod.rs",
        "src/cache/deep/x.rs",
        "src/notes.txt",
        "assets/a.png",
        "assets/sub/b.png",
        ".git/config",
        ".git/hooks/x.rs",
        "sub/.git/x.rs",
        ".rush-cache/build.json",
        "docs/guide.md",
    ];

    #[test]
    fn patterns_expand_to_sorted_relative_paths() {
        let dir = tree(TREE);
        let cases: &[(&[&str], &[&str])] = &[
            (
                &["src/*.rs"],
                &["src/.hidden.rs", "src/lib.rs", "src/main.rs"],
            ),
            (
                &["src/**/*.rs"],
                &[
                    "src/.hidden.rs",
                    "src/cache/deep/x.rs",
                    "src/cache/mod.rs",
                    "src/lib.rs",
                    "src/main.rs",
                ],
            ),
            (&["src/*/*.rs"], &["src/cache/mod.rs"]),
            (&["assets/*.png"], &["assets/a.png"]),
            (&["assets/**/*.png"], &["assets/a.png", "assets/sub/b.png"]),
            (&["*.md"], &["README.md"]),
            (&["**/*.md"], &["README.md", "docs/guide.md"]),
            (&["{docs,assets}/*"], &["assets/a.png", "docs/guide.md"]),
            (&["Cargo.toml", "./Cargo.toml", "Cargo.*"], &["Cargo.toml"]),
            (&["src/cache"], &["src/cache/deep/x.rs", "src/cache/mod.rs"]),
            (&["nothing/**/*.rs", "*.nope"], &[]),
            (&["missing.txt"], &["missing.txt"]),
            (
                &["src/**/*.rs", "!src/cache", "!**/.hidden.rs"],
                &["src/lib.rs", "src/main.rs"],
            ),
        ];
        for (patterns, want) in cases {
            assert_eq!(rels(dir.path(), patterns), *want, "patterns {patterns:?}");
        }
    }

    #[test]
    fn git_and_rush_cache_are_never_inputs() {
        let dir = tree(TREE);
        let all = rels(dir.path(), &["**"]);
        assert!(
            all.iter()
                .all(|p| !p.contains(".git/") && !p.contains(".rush-cache/")),
            "{all:?}"
        );
        assert!(all.contains(&"src/main.rs".to_string()));
        assert_eq!(
            rels(dir.path(), &[".git/config", ".git/**", ".rush-cache/*"]),
            Vec::<String>::new()
        );
    }

    #[test]
    fn bad_patterns_are_errors_naming_the_pattern() {
        for pattern in ["/etc/passwd", "", "./", "src/[a.rs", "src/{a,b"] {
            let err = check_pattern(pattern).expect_err(pattern);
            assert!(err.to_string().contains(&format!("`{pattern}`")), "{err}");
        }
        assert!(check_pattern("src/**/*.rs").is_ok());
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_are_followed_without_looping() {
        use std::os::unix::fs::symlink;
        let dir = tree(&["real/a.rs", "src/b.rs"]);
        symlink("../real", dir.path().join("src/linked")).expect("symlink");
        // A link to an ancestor of the walk would loop: it is skipped.
        symlink("..", dir.path().join("src/up")).expect("symlink");
        symlink("../real/a.rs", dir.path().join("src/c.rs")).expect("symlink");
        symlink("nowhere.rs", dir.path().join("src/dangling.rs")).expect("symlink");
        assert_eq!(
            rels(dir.path(), &["src/**/*.rs"]),
            ["src/b.rs", "src/c.rs", "src/dangling.rs", "src/linked/a.rs",]
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_directory_is_read_once_only_where_its_files_match_under_every_path() {
        use std::os::unix::fs::symlink;
        let dir = tree(&["src/real/a.rs", "src/real/b.txt", "Cargo.toml"]);
        symlink("real", dir.path().join("src/zlink")).expect("symlink");
        let expand = |patterns: &[&str]| {
            let patterns: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
            expand(dir.path(), &patterns).expect("expand")
        };
        let alias = vec![Alias {
            path: "src/zlink".into(),
            first: "src/real".into(),
        }];
        for once in [
            &["src/**"][..],
            &["src/**/*.rs"],
            &["src"],
            &["**/*.rs", "Cargo.toml"],
            &["src/**", "!src/**/*.txt"],
        ] {
            assert_eq!(expand(once).aliases(), alias, "{once:?}");
        }
        for every_path in [
            &["*/zlink/*.rs"][..],
            &["src/**", "!src/real"],
            &["**/*.rs", "src/real"],
            &["src/**", "src/zlink/*.txt"],
        ] {
            let found = expand(every_path);
            assert!(found.aliases().is_empty(), "{every_path:?}");
        }
        let linked: Vec<String> = expand(&["*/zlink/*.rs"])
            .iter()
            .map(|f| f.rel.display().to_string())
            .collect();
        assert_eq!(linked, ["src/zlink/a.rs"]);
    }

    #[cfg(unix)]
    #[test]
    fn fifos_and_sockets_are_not_inputs() {
        use rustix::fs::{CWD, FileType, Mode, mknodat};
        let dir = tree(&["run/a.txt"]);
        let fifo = dir.path().join("run/fifo");
        mknodat(CWD, &fifo, FileType::Fifo, Mode::from(0o644), 0).expect("mkfifo");
        let _socket = std::os::unix::net::UnixListener::bind(dir.path().join("run/sock"));
        assert_eq!(rels(dir.path(), &["run/*", "run/fifo"]), ["run/a.txt"]);
    }

    #[cfg(unix)]
    #[test]
    fn an_unreadable_directory_is_an_error_naming_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tree(&["src/locked/a.rs"]);
        let locked = dir.path().join("src/locked");
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).expect("chmod");
        let readable = fs::read_dir(&locked).is_ok(); // true when run as root
        let result = expand(dir.path(), &["src/**/*.rs".to_string()]);
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o755)).expect("chmod");
        if !readable {
            let err = result.expect_err("unreadable");
            assert!(err.to_string().contains("src/locked"), "{err}");
        }
    }

    /// The watched directories of `patterns`, relative (`.` for the root);
    /// `None` when watching cannot cover them.
    fn watched(root: &Path, patterns: &[&str]) -> Option<Vec<String>> {
        let patterns: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
        let inputs = expand(root, &patterns).expect("expand");
        let dirs = inputs.watch_dirs()?;
        Some(
            dirs.iter()
                .map(|d| match relative(root, &d.path).to_str().expect("utf-8") {
                    "" => ".".to_owned(),
                    r => r.to_owned(),
                })
                .collect(),
        )
    }

    #[test]
    fn a_walk_watches_every_directory_it_reads_and_their_ancestors() {
        let dir = tree(&["src/a/x.rs", "src/a/b/y.rs", "docs/z.md", ".git/HEAD"]);
        assert_eq!(
            watched(dir.path(), &["src/**/*.rs"]).unwrap(),
            [".", "src", "src/a", "src/a/b"]
        );
        // `*.md` reads the root only; `docs/*.md` reads `docs`, not below.
        assert_eq!(watched(dir.path(), &["*.md"]).unwrap(), ["."]);
        assert_eq!(watched(dir.path(), &["docs/*.md"]).unwrap(), [".", "docs"]);
    }

    #[test]
    fn a_named_file_is_watched_through_its_nearest_existing_directory() {
        let dir = tree(&["gen/keep"]);
        assert_eq!(
            watched(dir.path(), &["gen/out/x.txt", "top.txt"]).unwrap(),
            [".", "gen"]
        );
    }

    #[cfg(unix)]
    #[test]
    fn symlinked_and_dangling_inputs_cannot_be_covered_by_watching() {
        let dir = tree(&["src/a.txt", "elsewhere/t.txt"]);
        assert!(watched(dir.path(), &["src/*.txt"]).is_some());
        std::os::unix::fs::symlink(
            dir.path().join("elsewhere/t.txt"),
            dir.path().join("src/l.txt"),
        )
        .expect("symlink");
        assert_eq!(watched(dir.path(), &["src/*.txt"]), None);
        assert_eq!(watched(dir.path(), &["src/l.txt"]), None);
        fs::remove_file(dir.path().join("src/l.txt")).expect("rm");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), dir.path().join("src/d.txt"))
            .expect("symlink");
        assert_eq!(watched(dir.path(), &["src/*.txt"]), None);
        fs::remove_file(dir.path().join("src/d.txt")).expect("rm");
        // A symlinked directory, walked into or named.
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), dir.path().join("src/linked"))
            .expect("symlink");
        assert_eq!(watched(dir.path(), &["src/**"]), None);
        assert_eq!(watched(dir.path(), &["src/linked/t.txt"]), None);
        assert!(watched(dir.path(), &["src/a.txt"]).is_some());
    }
}
