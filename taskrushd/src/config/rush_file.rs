//! The `.rush` file: data model, parser and validation.
//!
//! Parsing is one pass of `serde_norway` through hand-written seeds (no
//! derive), so that every error carries the position of the token it is
//! about: serde_norway stamps an error with the position of the YAML node
//! being deserialized when the error is raised, and the seeds raise each
//! error while deserializing the offending node (the key for an unknown key,
//! the value for a wrong type). The message itself is kept on the side in
//! [`Ctx`], so it reads the same whatever serde_norway would have said.
//!
//! Checks that need the whole file (a dependency on a missing task, a cycle,
//! a bad glob, an undeclared plugin) find the position of their token by
//! deserializing once more with a [`Target`]: the seed for that token fails
//! on purpose, and serde_norway reports where it was. That second pass only
//! happens on the error path.
//!
//! `Task::line` and `PluginSpec::line` are needed on the success path too;
//! they come from [`outline`], a small scanner over the source that knows
//! block and flow YAML well enough to find the keys of `tasks` and the items
//! of `plugins`. Its result is only used when it agrees with the parser on
//! every task name in order; otherwise the lines come from targeted passes.
//!
//! Compatibility with TaskRush 0.2: `deps`/`cache` (0.2's spellings) and
//! `depends_on`/`cache_files` are both accepted; scalars are read as
//! strings the way 0.2 read them (`cmd: 3` is `"3"`, `VERSION: 1.10` is
//! `"1.10"`); `tasks:` with nothing under it is zero tasks; a duplicate task
//! name silently replaces the earlier one (0.2 read tasks into a map), as
//! does a duplicate `env` variable. 0.2 ignored unknown keys; now they are
//! errors, with a suggestion.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::config::config_error::{ConfigError, ConfigErrorKind, did_you_mean};

/// A parsed and validated `.rush` file.
#[derive(Clone, Debug)]
pub(crate) struct RushFile {
    /// The file, as given to [`parse`].
    pub(crate) path: PathBuf,
    /// The directory holding the file; tasks run here.
    pub(crate) root: PathBuf,
    pub(crate) tasks: BTreeMap<String, Task>,
    /// The top-level `plugins:` list, in file order.
    pub(crate) plugins: Vec<PluginSpec>,
    /// The top-level `dotenv:` files, as written (see [`super::dotenv`]).
    pub(crate) dotenv: Vec<String>,
    /// The top-level `includes:` of this file, in file order (see
    /// `config/includes.rs`, which merges the included files' tasks).
    pub(crate) includes: Vec<Include>,
    /// Every file included, directly or not, once merged: what the daemon
    /// watches and reads besides `path` (empty without includes).
    pub(crate) included_files: Vec<PathBuf>,
    /// About how many bytes of YAML this config stands for: the file's
    /// size, or more when its aliases (`*name`) repeat what they point to
    /// (their text, and two bytes per value, as if written out). What the
    /// daemon's cache of parsed projects counts.
    pub(crate) weight: usize,
}

/// One entry of `tasks:`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Task {
    pub(crate) name: String,
    /// The shell command; `None` for an aggregate task (only dependencies).
    pub(crate) cmd: Option<String>,
    pub(crate) description: Option<String>,
    /// `depends_on` or `deps`, in file order; every name is a task of the file.
    pub(crate) depends_on: Vec<String>,
    /// `cache_files` or `cache`: globs relative to the root, all valid.
    pub(crate) cache_files: Vec<String>,
    /// `outputs`: globs of the files the task writes, relative to the
    /// root; stored after a successful run and restored on a cache hit
    /// (`cache/outputs.rs`). Non-empty: its output is captured for replay.
    pub(crate) outputs: Vec<String>,
    /// Raw (unexpanded) values, in file order, one entry per name.
    pub(crate) env: Vec<(String, String)>,
    /// `dotenv:` files, as written, read after the top-level ones.
    pub(crate) dotenv: Vec<String>,
    /// `dir`: where the task runs, relative to the root (or absolute), as
    /// written; `None` for the root. See [`super::task_dir`].
    pub(crate) dir: Option<String>,
    /// Shell hook run before `cmd`.
    pub(crate) before: Option<String>,
    /// Shell hook run after `cmd` succeeded.
    pub(crate) after: Option<String>,
    /// Per-task plugin settings, by plugin name (each declared in
    /// `RushFile::plugins`); an empty setting (`name:` or `name: ~`) is `{}`.
    pub(crate) plugins: BTreeMap<String, serde_json::Value>,
    /// 1-based line of the task's name (0 when it could not be found).
    pub(crate) line: usize,
    /// 1-based column of the task's name, in characters (0 when unknown).
    pub(crate) column: usize,
    /// The included file that defines the task; `None` for the tasks of
    /// the root `.rush` file. Its directory is the task's default working
    /// directory (the merge sets `dir` to it, or joins `dir` onto it).
    pub(crate) file: Option<std::sync::Arc<Path>>,
}

impl Task {
    /// The file that defines the task: `config.path` or an included file.
    pub(crate) fn defined_in<'a>(&'a self, config: &'a RushFile) -> &'a Path {
        self.file.as_deref().unwrap_or(&config.path)
    }
}

/// One entry of the top-level `includes:` map: `namespace: path`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Include {
    pub(crate) namespace: String,
    /// As written: a `.rush` file, or a directory holding one, relative to
    /// the including file's directory.
    pub(crate) path: String,
    /// 1-based position of the namespace key.
    pub(crate) line: usize,
    pub(crate) column: usize,
}

/// One entry of the top-level `plugins:` list.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PluginSpec {
    pub(crate) name: String,
    /// A semver requirement such as `^1.0`, kept as written.
    pub(crate) version: Option<String>,
    /// `type:`, `external` by default.
    pub(crate) kind: PluginKind,
    pub(crate) path: Option<String>,
    pub(crate) required: bool,
    /// `config:`, raw (unexpanded); `{}` when absent or null.
    pub(crate) config: serde_json::Value,
    /// `timeout:`, the deadline of every call to the plugin (handshake,
    /// each hook, each command): `5s`, `500ms`, `2m` or a number of
    /// seconds; [`DEFAULT_PLUGIN_TIMEOUT`] when absent.
    pub(crate) timeout: std::time::Duration,
    /// `limits:`, the resources its process may use (defaults when absent).
    pub(crate) limits: super::limits::PluginLimits,
    /// `memory:` (`type: wasm`), the memory cap of the plugin's instance
    /// in bytes: `64MiB`, `1GiB`, or a number of bytes.
    pub(crate) memory: Option<u64>,
    /// `module_size:` (`type: wasm`), the largest module file loaded.
    pub(crate) module_size: Option<u64>,
    /// 1-based line of the entry (0 when it could not be found).
    pub(crate) line: usize,
}

/// The deadline of a plugin call when its entry has no `timeout:`.
pub(crate) const DEFAULT_PLUGIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum PluginKind {
    #[default]
    External,
    Wasm,
    Native,
}

impl PluginKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PluginKind::External => "external",
            PluginKind::Wasm => "wasm",
            PluginKind::Native => "native",
        }
    }
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl RushFile {
    /// The task called `name`, or an error suggesting the closest name.
    pub(crate) fn task(&self, name: &str) -> Result<&Task, ConfigError> {
        self.tasks.get(name).ok_or_else(|| {
            let hint = did_you_mean(name, self.tasks.keys().map(String::as_str))
                .unwrap_or_else(|| "`taskrush --list` shows the tasks".to_owned());
            ConfigError::new(&self.path, format!("unknown task `{name}`"))
                .of_kind(ConfigErrorKind::UnknownTask)
                .with_hint(Some(hint))
        })
    }
}

const TOP_KEYS: &[&str] = &["tasks", "plugins", "dotenv", "includes"];
pub(crate) const TASK_KEYS: &[&str] = &[
    "cmd",
    "description",
    "depends_on",
    "deps",
    "cache_files",
    "cache",
    "outputs",
    "env",
    "dotenv",
    "dir",
    "before",
    "after",
    "plugins",
];
const PLUGIN_KEYS: &[&str] = &[
    "name",
    "version",
    "type",
    "path",
    "required",
    "config",
    "timeout",
    "limits",
    "memory",
    "module_size",
];
const PLUGIN_KINDS: &[&str] = &["external", "wasm", "native"];

/// Parses and validates the `.rush` file at `path` whose text is `source`.
///
/// `path` is only used in errors and to derive `root`; pass it absolute.
// The daemon loads files through `includes::load`; tests parse one file.
#[allow(dead_code)]
pub(crate) fn parse(path: &Path, source: &str) -> Result<RushFile, ConfigError> {
    parse_part(path, source, false)
}

/// [`parse`] for a file of a tree of includes. Dependencies are checked
/// here only for a file without includes that is not included (the root
/// alone): otherwise names may point into other files, and
/// `config/includes.rs` checks them on the merged tasks. An included file
/// (`included`) may configure the root's plugins in its tasks, but not
/// declare plugins itself.
pub(crate) fn parse_part(
    path: &Path,
    source: &str,
    included: bool,
) -> Result<RushFile, ConfigError> {
    match nesting::check(source) {
        Some((nesting::Exceeded::Depth, line, column)) => {
            return Err(too_deep(path).at(line, column));
        }
        Some((nesting::Exceeded::Nodes, line, column)) => {
            return Err(ConfigError::new(
                path,
                format!(
                    "the file holds more than {},{:03} YAML values",
                    MAX_NODES / 1000,
                    MAX_NODES % 1000
                ),
            )
            .with_hint(Some(
                "split the project, or generate fewer tasks".to_owned(),
            ))
            .at(line, column));
        }
        None => {}
    }
    let ctx = Ctx::new(None);
    let raw = match deserialize(&ctx, source) {
        Ok(raw) => raw,
        Err(err) => return Err(yaml_error(path, source, &ctx, &err)),
    };
    let checker = Checker {
        path,
        source,
        defer_deps: included || !raw.includes.is_empty(),
        included,
    };
    checker.check(&raw)?;

    let outline = outline::scan(source).filter(|outline| {
        outline.tasks.len() == raw.tasks.len()
            && outline.plugins.len() == raw.plugins.len()
            && outline
                .tasks
                .iter()
                .zip(&raw.tasks)
                .all(|(key, task)| key.text == task.task.name)
    });
    // Without the outline each line costs a parse of the whole file: bound
    // that. A pass costs what the file expands to when its aliases make it
    // more (300 passes over a 10 KB file of aliases took 14 s).
    let pass_cost = source.len().max(4 * ctx.values.get());
    let locate_lines =
        outline.is_none() && (raw.tasks.len() + raw.plugins.len()) * pass_cost <= 4_000_000;
    let position_of = |target: Target, from_outline: Option<(usize, usize)>| -> (usize, usize) {
        from_outline
            .or_else(|| locate_lines.then(|| locate(source, target)).flatten())
            .unwrap_or((0, 0))
    };
    let line_of = |target: Target, from_outline: Option<usize>| -> usize {
        position_of(target, from_outline.map(|line| (line, 0))).0
    };

    let mut plugins = raw.plugins;
    for (index, plugin) in plugins.iter_mut().enumerate() {
        let known = outline.as_ref().map(|o| o.plugins[index].line);
        plugin.line = line_of(Target::PluginItem(index), known);
    }
    let mut tasks = BTreeMap::new();
    for raw_task in raw.tasks {
        let mut task = raw_task.task;
        // A later definition of the same name replaces an earlier one (as in 0.2).
        if raw_task.replaced {
            continue;
        }
        let known = outline.as_ref().map(|o| {
            let pos = o.tasks[raw_task.entry].pos;
            (pos.line, pos.column)
        });
        (task.line, task.column) = position_of(Target::TaskKey(raw_task.entry), known);
        tasks.insert(task.name.clone(), task);
    }
    let root = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut includes = raw.includes;
    for (index, include) in includes.iter_mut().enumerate() {
        if let Some((line, column)) = locate(source, Target::IncludeKey(index)) {
            (include.line, include.column) = (line, column);
        }
    }
    Ok(RushFile {
        path: path.to_path_buf(),
        root,
        tasks,
        plugins,
        dotenv: raw.dotenv,
        includes,
        included_files: Vec::new(),
        weight: source
            .len()
            .max(ctx.text.get().saturating_add(2 * ctx.values.get())),
    })
}

/// How deep collections may nest in a `.rush` file: serde_norway's own
/// limit, also applied to flow collections before parsing ([`nesting`]).
pub(crate) const MAX_NESTING: usize = 128;

/// The most values (scalars, lists, mappings, entries) a `.rush` file may
/// hold: the parser keeps an event for each while it reads the file, about
/// 200 bytes, so this bounds a parse's memory to tens of MB (measured: 47 MB
/// peak for flow lists, 65 MB for 199,000 block lists opened on one line;
/// a file of 10,000 tasks with descriptions holds about 50,000 values).
pub(crate) const MAX_NODES: usize = 200_000;

/// The most values a `.rush` file may hold once its aliases (`*name`) are
/// expanded: an alias repeats what its anchor holds, so 100 KB of aliases
/// to aliases could stand for billions of values (a "billion laughs").
pub(crate) const MAX_EXPANDED_VALUES: usize = 2 * MAX_NODES;

/// The most bytes of text (strings, keys) a `.rush` file may hold once its
/// aliases are expanded: twice what the largest file may hold.
pub(crate) const MAX_EXPANDED_TEXT: usize = 2 * crate::config::whole_file::MAX_BYTES as usize;

const ALIAS_HINT: &str = "each alias (`*name`) repeats everything its anchor (`&name`) holds: repeat less, or split the project";

fn too_deep(path: &Path) -> ConfigError {
    ConfigError::new(
        path,
        format!("lists and mappings nest deeper than {MAX_NESTING} levels"),
    )
    .with_hint(Some(
        "a `.rush` file this deep is probably generated by mistake: flatten it".to_owned(),
    ))
}

/// The error for a failed deserialization pass.
fn yaml_error(path: &Path, source: &str, ctx: &Ctx, err: &serde_norway::Error) -> ConfigError {
    // libyaml hands over the events before a syntax error, so the pass may
    // have failed on what looks like a wrong type (`cmd: [a, b` is the start
    // of a list) before reaching the real problem: report a syntax error first.
    if let Err(syntax) = serde_norway::from_str::<de::IgnoredAny>(source) {
        return yaml_error_from(path, source, &Ctx::new(None), &syntax);
    }
    yaml_error_from(path, source, ctx, err)
}

fn yaml_error_from(path: &Path, source: &str, ctx: &Ctx, err: &serde_norway::Error) -> ConfigError {
    let text = err.to_string();
    // libyaml's reader says this at 1:1: say which character, and where.
    if text.starts_with("control characters are not allowed")
        && let Some((at, c)) = source.char_indices().find(|(_, c)| !yaml_printable(*c))
    {
        let before = &source[..at];
        let line = before.matches('\n').count() + 1;
        let column = before[before.rfind('\n').map_or(0, |i| i + 1)..]
            .chars()
            .count()
            + 1;
        return ConfigError::new(
            path,
            format!(
                "the file holds a control character (U+{:04X}), which YAML does not allow",
                u32::from(c)
            ),
        )
        .with_hint(Some(
            "remove it; in a double-quoted string, write it as an escape (`\\t`, `\\x1b`)"
                .to_owned(),
        ))
        .at(line, column);
    }
    let (message, hint) = match ctx.pending.borrow_mut().take() {
        Some(pending) => pending,
        None if text.starts_with("repetition limit exceeded") => (
            "aliases (`*name`) are expanded too many times".to_owned(),
            Some(ALIAS_HINT.to_owned()),
        ),
        None if text.starts_with("recursion limit exceeded") => {
            let e = too_deep(path);
            (e.message, e.hint)
        }
        None if text.contains("more than one document") => (
            "a `.rush` file must hold a single YAML document".to_owned(),
            Some(
                "remove the second `---` and everything after it, or merge the documents"
                    .to_owned(),
            ),
        ),
        None => {
            // `{ token: ${VAR} }`: the `{` of `${` opens a mapping in flow style.
            let line = err.location().map(|l| l.line());
            let flow_var = text.contains("flow")
                && line
                    .and_then(|l| source.lines().nth(l.saturating_sub(1)))
                    .is_some_and(|l| l.contains("${"));
            let hint = flow_var.then(|| {
                "inside `{ }` or `[ ]`, quote a value holding `${...}`: `{ token: \"${TOKEN}\" }`"
                    .to_owned()
            });
            // libyaml's words for a key longer than YAML allows (1024).
            let long_key = text.contains("mapping values are not allowed")
                && err.location().is_some_and(|l| l.column() > 1024);
            let hint = hint.or_else(|| {
                long_key.then(|| {
                    "a key is at most 1024 characters long (a YAML rule): shorten it".to_owned()
                })
            });
            (format!("invalid YAML: {}", strip_positions(&text)), hint)
        }
    };
    let error = ConfigError::new(path, message).with_hint(hint);
    match err.location() {
        Some(location) => error.at(location.line(), location.column()),
        None => match second_document(source) {
            Some(line) => error.at(line, 1),
            None => error,
        },
    }
}

/// Whether libyaml's reader accepts `c` (YAML 1.1's printable characters).
fn yaml_printable(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | ' '..='~' | '\u{85}' | '\u{A0}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}')
        || c >= '\u{10000}'
}

/// `text` without libyaml's " at line L column C" / " at position N" parts,
/// which [`ConfigError`] carries separately.
fn strip_positions(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(" at ") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 4..];
        let skip = position_len(after);
        if skip == 0 {
            out.push_str(" at ");
        }
        rest = &after[skip..];
    }
    out.push_str(rest);
    out
}

/// The length of a leading "line L column C" or "position N" in `s`, or 0.
fn position_len(s: &str) -> usize {
    fn number(s: &str) -> usize {
        s.bytes().take_while(u8::is_ascii_digit).count()
    }
    if let Some(rest) = s.strip_prefix("line ") {
        let line = number(rest);
        if line > 0
            && let Some(col) = rest[line..].strip_prefix(" column ")
        {
            let col_len = number(col);
            if col_len > 0 {
                return "line ".len() + line + " column ".len() + col_len;
            }
        }
    } else if let Some(rest) = s.strip_prefix("position ") {
        let n = number(rest);
        if n > 0 {
            return "position ".len() + n;
        }
    }
    0
}

/// The 1-based line of the `---` that starts a second YAML document.
fn second_document(source: &str) -> Option<usize> {
    let is_marker =
        |line: &str| line == "---" || line.starts_with("--- ") || line.starts_with("---\t");
    let mut seen_content = false;
    for (index, line) in source.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if is_marker(line) {
            if seen_content {
                return Some(index + 1);
            }
            seen_content = line.len() > 3 && !line[3..].trim_start().starts_with('#');
        } else if !line.trim().is_empty()
            && !line.trim_start().starts_with('#')
            && !line.starts_with('%')
        {
            seen_content = true;
        }
    }
    None
}

/// Checks that need the whole file, in file order.
struct Checker<'a> {
    path: &'a Path,
    source: &'a str,
    /// Names in `depends_on` may be in other files: leave them (and
    /// cycles) to the merge.
    defer_deps: bool,
    /// An included file: no `plugins:` of its own; its tasks' plugin
    /// settings are checked against the root's plugins by the merge.
    included: bool,
}

impl Checker<'_> {
    fn error(&self, target: Target, message: String, hint: Option<String>) -> ConfigError {
        let error = ConfigError::new(self.path, message).with_hint(hint);
        match locate(self.source, target) {
            Some((line, column)) => error.at(line, column),
            None => error,
        }
    }

    fn check(&self, raw: &Raw) -> Result<(), ConfigError> {
        if self.included && !raw.plugins.is_empty() {
            return Err(self.error(
                Target::PluginItem(0),
                "an included file cannot declare `plugins`".to_owned(),
                Some(
                    "declare plugins in the root `.rush` file; the included file's tasks may configure them"
                        .to_owned(),
                ),
            ));
        }
        let mut namespaces: HashMap<&str, usize> = HashMap::new();
        for (index, include) in raw.includes.iter().enumerate() {
            let ns = include.namespace.as_str();
            if ns.trim().is_empty() || ns.contains(':') || ns.chars().any(char::is_whitespace) {
                return Err(self.error(
                    Target::IncludeKey(index),
                    format!("invalid namespace `{}` in `includes`", ns.escape_debug()),
                    Some("a namespace is a word without `:` or spaces, like `web`".to_owned()),
                ));
            }
            if namespaces.insert(ns, index).is_some() {
                return Err(self.error(
                    Target::IncludeKey(index),
                    format!("namespace `{ns}` is included twice"),
                    Some("give each included file its own namespace".to_owned()),
                ));
            }
            if include.path.trim().is_empty() {
                return Err(self.error(
                    Target::IncludeKey(index),
                    format!("include `{ns}` has an empty path"),
                    Some("write it like `web: packages/web` (a directory holding a `.rush` file, or the file)".to_owned()),
                ));
            }
        }
        let mut plugin_names: HashMap<&str, usize> = HashMap::new();
        for (index, plugin) in raw.plugins.iter().enumerate() {
            if plugin.name.trim().is_empty() {
                return Err(self.error(
                    Target::PluginName(index),
                    format!("entry {} of `plugins` has an empty `name`", index + 1),
                    None,
                ));
            }
            if plugin_names.insert(&plugin.name, index).is_some() {
                return Err(self.error(
                    Target::PluginName(index),
                    format!("plugin `{}` is declared twice", plugin.name),
                    Some("remove one of the two entries".to_owned()),
                ));
            }
        }

        // Surviving definitions (the last one of each name), in file order.
        let live: Vec<&RawTask> = raw.tasks.iter().filter(|task| !task.replaced).collect();
        let index: HashMap<&str, usize> = live
            .iter()
            .enumerate()
            .map(|(i, task)| (task.task.name.as_str(), i))
            .collect();
        let names_in_order = || live.iter().map(|task| task.task.name.as_str());

        let mut edges: Vec<Vec<usize>> = Vec::with_capacity(live.len());
        for raw_task in &live {
            let task = &raw_task.task;
            let entry = raw_task.entry;
            if task.cmd.is_none() && task.depends_on.is_empty() {
                return Err(self.error(
                    Target::TaskKey(entry),
                    format!("task `{}` has no `cmd` and no `depends_on`", task.name),
                    Some(
                        "give it a `cmd:` to run, or `depends_on:` to group other tasks".to_owned(),
                    ),
                ));
            }
            let mut deps = Vec::with_capacity(task.depends_on.len());
            for (i, dep) in task.depends_on.iter().enumerate() {
                match index.get(dep.as_str()) {
                    Some(&to) => deps.push(to),
                    None if self.defer_deps => {}
                    None => {
                        return Err(self.error(
                            Target::DepItem(entry, i),
                            format!(
                                "task `{}` depends on `{dep}`, which does not exist",
                                task.name
                            ),
                            did_you_mean(dep, names_in_order()),
                        ));
                    }
                }
            }
            edges.push(deps);
            for (i, glob) in task.cache_files.iter().enumerate() {
                // The cache expands globs with these very rules.
                let reason = match crate::cache::input_files::check_pattern(glob) {
                    Ok(()) => None,
                    Err(crate::cache::input_files::InputError::Pattern { reason, .. }) => {
                        Some(reason)
                    }
                    Err(other) => Some(other.to_string()),
                };
                if let Some(reason) = reason {
                    return Err(self.error(
                        Target::CacheItem(entry, i),
                        format!(
                            "invalid glob `{glob}` in `{}` of task `{}`: {reason}",
                            raw_task.cache_key, task.name
                        ),
                        None,
                    ));
                }
            }
            if !task.cache_files.is_empty() && task.dir.is_some() && task.dir_in_root().is_none() {
                return Err(self.error(
                    Target::TaskKey(entry),
                    format!(
                        "task `{}` has `{}` but its `dir` `{}` is outside the project",
                        task.name,
                        raw_task.cache_key,
                        task.dir.as_deref().unwrap_or_default()
                    ),
                    Some("cached tasks run inside the project: use a `dir` below the `.rush` file's directory".to_owned()),
                ));
            }
            for (i, glob) in task.outputs.iter().enumerate() {
                if let Err(reason) = crate::cache::outputs::check_output_pattern(glob) {
                    return Err(self.error(
                        Target::OutputItem(entry, i),
                        format!(
                            "invalid glob `{glob}` in `outputs` of task `{}`: {reason}",
                            task.name
                        ),
                        None,
                    ));
                }
            }
            for (i, plugin) in raw_task.plugin_keys.iter().enumerate() {
                if !self.included && !plugin_names.contains_key(plugin.as_str()) {
                    let hint = did_you_mean(plugin, raw.plugins.iter().map(|p| p.name.as_str()))
                        .unwrap_or_else(|| {
                            format!(
                                "declare it in the top-level `plugins:` list: `- name: {plugin}`"
                            )
                        });
                    return Err(self.error(
                        Target::TaskPluginKey(entry, i),
                        format!(
                            "task `{}` configures plugin `{plugin}`, which is not declared under `plugins:`",
                            task.name
                        ),
                        Some(hint),
                    ));
                }
            }
        }

        if self.defer_deps {
            return Ok(());
        }
        if let Some((cycle, dep_index)) = find_cycle(&edges) {
            // Long cycles show their ends: the message stays one readable line.
            const SHOWN: usize = 8;
            let name = |i: &usize| live[*i].task.name.as_str();
            let path = if cycle.len() <= 2 * SHOWN + 1 {
                cycle.iter().map(name).collect::<Vec<_>>().join(" -> ")
            } else {
                format!(
                    "{} -> ... {} more ... -> {}",
                    cycle[..SHOWN]
                        .iter()
                        .map(name)
                        .collect::<Vec<_>>()
                        .join(" -> "),
                    cycle.len() - 2 * SHOWN,
                    cycle[cycle.len() - SHOWN..]
                        .iter()
                        .map(name)
                        .collect::<Vec<_>>()
                        .join(" -> "),
                )
            };
            return Err(self.error(
                Target::DepItem(live[cycle[0]].entry, dep_index),
                format!("dependency cycle: {path}"),
                Some("remove one of these dependencies".to_owned()),
            ));
        }
        Ok(())
    }
}

/// The first cycle found by a depth-first search from each node in order:
/// the nodes of the cycle, starting and ending with the same node, and the
/// index (in its `edges` list) of the first node's edge into the cycle.
///
/// Iterative, O(V + E): safe for long chains.
pub(crate) fn find_cycle(edges: &[Vec<usize>]) -> Option<(Vec<usize>, usize)> {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        New,
        OnStack(usize),
        Done,
    }
    let mut state = vec![State::New; edges.len()];
    // (node, index of the next edge to follow)
    let mut stack: Vec<(usize, usize)> = Vec::new();
    for start in 0..edges.len() {
        if state[start] != State::New {
            continue;
        }
        state[start] = State::OnStack(0);
        stack.push((start, 0));
        while let Some(top) = stack.last_mut() {
            let (node, next) = *top;
            let Some(&to) = edges[node].get(next) else {
                state[node] = State::Done;
                stack.pop();
                continue;
            };
            top.1 += 1;
            match state[to] {
                State::New => {
                    state[to] = State::OnStack(stack.len());
                    stack.push((to, 0));
                }
                State::OnStack(depth) => {
                    let mut cycle: Vec<usize> = stack[depth..].iter().map(|&(n, _)| n).collect();
                    cycle.push(to);
                    // The first node's frame has already moved past its edge into the cycle.
                    let dep_index = stack[depth].1 - 1;
                    return Some((cycle, dep_index));
                }
                State::Done => {}
            }
        }
    }
    None
}

// ---------------------------------------------------------------------------
// Deserialization
// ---------------------------------------------------------------------------

/// A token whose position a targeted pass is after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// The name of the n-th entry of `tasks` (counting duplicates).
    TaskKey(usize),
    /// Item i of `depends_on` of the n-th entry of `tasks`.
    DepItem(usize, usize),
    /// Item i of `cache_files` of the n-th entry of `tasks`.
    CacheItem(usize, usize),
    /// Item i of `outputs` of the n-th entry of `tasks`.
    OutputItem(usize, usize),
    /// Key i of `plugins` of the n-th entry of `tasks`.
    TaskPluginKey(usize, usize),
    /// The n-th entry of the top-level `plugins`.
    PluginItem(usize),
    /// Item i of `dotenv` of the n-th entry of `tasks` (`usize::MAX`: the
    /// top-level `dotenv`). Never looked for: it keeps the items apart.
    DotenvItem(usize, usize),
    /// The `name` value of the n-th entry of the top-level `plugins`.
    PluginName(usize),
    /// The namespace (key) of the n-th entry of `includes`.
    IncludeKey(usize),
}

/// State shared by the seeds of one pass.
struct Ctx {
    target: Option<Target>,
    /// The target was reached: the error on its way out carries its position.
    hit: Cell<bool>,
    /// Message and hint of the error on its way out, when a seed raised it.
    pending: RefCell<Option<(String, Option<String>)>>,
    /// Values and bytes of text read so far, aliases expanded: an alias
    /// (`*a`) repeats its anchor's values, so a small file may stand for
    /// billions of them ([`MAX_EXPANDED_VALUES`], [`MAX_EXPANDED_TEXT`]).
    values: Cell<usize>,
    text: Cell<usize>,
}

impl Ctx {
    fn new(target: Option<Target>) -> Self {
        Self {
            target,
            hit: Cell::new(false),
            pending: RefCell::new(None),
            values: Cell::new(0),
            text: Cell::new(0),
        }
    }

    /// Counts one value holding `text` bytes of text; fails past the
    /// bounds on what a file may expand to.
    fn count<E: de::Error>(&self, text: usize) -> Result<(), E> {
        let values = self.values.get() + 1;
        let text = self.text.get().saturating_add(text);
        self.values.set(values);
        self.text.set(text);
        let over = if values > MAX_EXPANDED_VALUES {
            format!(
                "{},{:03} values",
                MAX_EXPANDED_VALUES / 1000,
                MAX_EXPANDED_VALUES % 1000
            )
        } else if text > MAX_EXPANDED_TEXT {
            format!("{} MiB of text", MAX_EXPANDED_TEXT >> 20)
        } else {
            return Ok(());
        };
        Err(self.fail(
            format!("with its aliases (`*name`) expanded, the file holds more than {over}"),
            Some(ALIAS_HINT.to_owned()),
        ))
    }

    /// An error to return from a seed; serde_norway adds the position.
    fn fail<E: de::Error>(&self, message: String, hint: Option<String>) -> E {
        *self.pending.borrow_mut() = Some((message, hint));
        E::custom("invalid .rush file")
    }

    /// Fails (on purpose) when `me` is the target of this pass.
    fn reached<E: de::Error>(&self, me: Target) -> Result<(), E> {
        if self.target == Some(me) {
            self.hit.set(true);
            return Err(E::custom("target reached"));
        }
        Ok(())
    }

    /// Gives a clear message to serde_norway's own "invalid type" error for a
    /// value that had to be a scalar, unless a message is already set.
    fn wrong_type<E: fmt::Display>(&self, err: &E, what: &dyn Fn() -> String, expected: &str) {
        if self.hit.get() || self.pending.borrow().is_some() {
            return;
        }
        // serde_norway reads a string with `deserialize_str`, which rejects a
        // sequence or a mapping with `invalid_type(Unexpected::Seq/Map, ..)`.
        let text = err.to_string();
        let found = if text.contains("invalid type: sequence") {
            "a list"
        } else if text.contains("invalid type: map") {
            "a mapping"
        } else {
            return;
        };
        *self.pending.borrow_mut() = Some((
            format!("{} must be {expected}, found {found}", what()),
            None,
        ));
    }
}

fn deserialize(ctx: &Ctx, source: &str) -> Result<Raw, serde_norway::Error> {
    TopSeed { ctx }.deserialize(serde_norway::Deserializer::from_str(source))
}

/// The line and column of `target`, by a pass that stops there.
fn locate(source: &str, target: Target) -> Option<(usize, usize)> {
    let ctx = Ctx::new(Some(target));
    match deserialize(&ctx, source) {
        Err(err) if ctx.hit.get() => err.location().map(|l| (l.line(), l.column())),
        _ => None,
    }
}

/// What one pass read.
struct Raw {
    /// Every entry of `tasks`, in file order, duplicates included.
    tasks: Vec<RawTask>,
    plugins: Vec<PluginSpec>,
    dotenv: Vec<String>,
    includes: Vec<Include>,
}

struct RawTask {
    /// Index among the entries of `tasks`.
    entry: usize,
    task: Task,
    /// A later entry has the same name.
    replaced: bool,
    /// The spelling used for `cache_files`, for messages.
    cache_key: &'static str,
    /// The keys of the task's `plugins`, in file order.
    plugin_keys: Vec<String>,
}

/// Implements `DeserializeSeed` for a seed that is its own visitor of any
/// YAML value (`deserialize_any`), yielding its `Visitor::Value`.
macro_rules! seed_via_any {
    ($seed:ident) => {
        impl<'de> DeserializeSeed<'de> for $seed<'_> {
            type Value = <Self as Visitor<'de>>::Value;
            fn deserialize<D: Deserializer<'de>>(
                self,
                deserializer: D,
            ) -> Result<Self::Value, D::Error> {
                deserializer.deserialize_any(self)
            }
        }
    };
}

/// Implements the visitor methods for kinds of YAML values the visitor does
/// not accept, as `self.wrong(found)`.
macro_rules! reject {
    ($($kind:ident)*) => { $( reject!(@ $kind); )* };
    (@ bool) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Err(self.wrong("a boolean"))
        }
    };
    (@ number) => {
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Err(self.wrong("a number"))
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Err(self.wrong("a number"))
        }
        fn visit_i128<E: de::Error>(self, _: i128) -> Result<Self::Value, E> {
            Err(self.wrong("a number"))
        }
        fn visit_u128<E: de::Error>(self, _: u128) -> Result<Self::Value, E> {
            Err(self.wrong("a number"))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Err(self.wrong("a number"))
        }
    };
    (@ str) => {
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Err(self.wrong("a string"))
        }
    };
    (@ null) => {
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Err(self.wrong("null"))
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Err(self.wrong("null"))
        }
    };
    (@ seq) => {
        fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            Err(self.wrong("a list"))
        }
    };
    (@ map) => {
        fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            Err(self.wrong("a mapping"))
        }
    };
    (@ tagged) => {
        fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            Err(self.wrong("a value with a YAML tag"))
        }
    };
}

/// Whose key a [`KeySeed`] reads, for messages.
#[derive(Clone, Copy)]
enum Owner<'a> {
    Top,
    Task(&'a str),
    Plugin { index: usize, name: Option<&'a str> },
}

impl fmt::Display for Owner<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::Top => f.write_str("at the top level"),
            Owner::Task(name) => write!(f, "in task `{name}`"),
            Owner::Plugin {
                name: Some(name), ..
            } => write!(f, "in plugin `{name}`"),
            Owner::Plugin { index, name: None } => write!(f, "in entry {} of `plugins`", index + 1),
        }
    }
}

/// A key of a fixed set; rejects unknown and repeated keys. Yields the key
/// as spelled in `keys`.
struct KeySeed<'a> {
    ctx: &'a Ctx,
    keys: &'static [&'static str],
    owner: Owner<'a>,
    /// Keys read so far in this mapping.
    seen: &'a mut Vec<&'static str>,
}

/// The field a key stands for: `deps` is `depends_on`, `cache` is `cache_files`.
fn field_of(key: &'static str) -> &'static str {
    match key {
        "deps" => "depends_on",
        "cache" => "cache_files",
        key => key,
    }
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = &'static str;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        let (ctx, owner) = (self.ctx, self.owner);
        deserializer
            .deserialize_str(self)
            .inspect_err(|err| ctx.wrong_type(err, &|| format!("a key {owner}"), "a string"))
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = &'static str;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        let Some(&known) = self.keys.iter().find(|k| **k == key) else {
            let message = match self.owner {
                Owner::Top => format!("unknown top-level key `{key}`"),
                owner => format!("unknown key `{key}` {owner}"),
            };
            let hint = if key == "<<" {
                "YAML merge keys (`<<`) are not supported; write the keys out".to_owned()
            } else {
                did_you_mean(key, self.keys.iter().copied()).unwrap_or_else(|| {
                    let list: Vec<String> = self.keys.iter().map(|k| format!("`{k}`")).collect();
                    format!("the keys allowed here are {}", list.join(", "))
                })
            };
            return Err(self.ctx.fail(message, Some(hint)));
        };
        let field = field_of(known);
        if let Some(&earlier) = self.seen.iter().find(|k| field_of(k) == field) {
            return Err(if earlier == known {
                self.ctx
                    .fail(format!("duplicate key `{known}` {}", self.owner), None)
            } else {
                self.ctx.fail(
                    format!("both `{earlier}` and `{known}` given {}", self.owner),
                    Some(format!(
                        "they are two spellings of the same field: keep only `{field}`"
                    )),
                )
            });
        }
        self.seen.push(known);
        Ok(known)
    }
}

/// A scalar read as written (`1.10` stays `"1.10"`), as 0.2 read strings.
struct StrSeed<'a> {
    ctx: &'a Ctx,
    /// e.g. "`cmd` of task `build`", for messages.
    what: &'a dyn Fn() -> String,
    /// What this string is, for targeted passes.
    me: Option<Target>,
    /// A NUL byte is allowed (a key of a plugin's JSON `config`): every
    /// other string may end up in a command line or the environment.
    nul_ok: bool,
}

impl<'de> DeserializeSeed<'de> for StrSeed<'_> {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        let (ctx, what) = (self.ctx, self.what);
        deserializer
            .deserialize_str(self)
            .inspect_err(|err| ctx.wrong_type(err, what, "a string"))
    }
}

impl<'de> Visitor<'de> for StrSeed<'_> {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        if let Some(me) = self.me {
            self.ctx.reached(me)?;
        }
        self.ctx.count(v.len())?;
        if !self.nul_ok
            && let Some(at) = v.find('\0')
        {
            return Err(self.ctx.fail(
                format!(
                    "{} contains a NUL byte (character {} of the value)",
                    (self.what)(),
                    v[..at].chars().count() + 1
                ),
                Some(
                    "commands, variables and names cannot hold a NUL byte: remove the `\\0`"
                        .to_owned(),
                ),
            ));
        }
        Ok(v.to_owned())
    }
}

/// An optional string: null (`~`, `null` or nothing) is `None`.
struct OptStrSeed<'a> {
    ctx: &'a Ctx,
    what: &'a dyn Fn() -> String,
}

impl<'de> DeserializeSeed<'de> for OptStrSeed<'_> {
    type Value = Option<String>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for OptStrSeed<'_> {
    type Value = Option<String>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        let seed = StrSeed {
            ctx: self.ctx,
            what: self.what,
            me: None,
            nul_ok: false,
        };
        seed.deserialize(deserializer).map(Some)
    }
}

#[derive(Clone, Copy)]
enum ListOf {
    Deps,
    Cache,
    Dotenv,
    Outputs,
}

/// `depends_on` / `cache_files`: a list of strings, or one string.
struct ListSeed<'a> {
    ctx: &'a Ctx,
    what: &'a dyn Fn() -> String,
    list: ListOf,
    entry: usize,
}

impl ListSeed<'_> {
    fn me(&self, i: usize) -> Target {
        match self.list {
            ListOf::Deps => Target::DepItem(self.entry, i),
            ListOf::Cache => Target::CacheItem(self.entry, i),
            ListOf::Dotenv => Target::DotenvItem(self.entry, i),
            ListOf::Outputs => Target::OutputItem(self.entry, i),
        }
    }

    fn wrong<E: de::Error>(&self, found: &str) -> E {
        let expected = match self.list {
            ListOf::Deps => "a task name or a list of task names",
            ListOf::Cache | ListOf::Outputs => "a glob or a list of globs",
            ListOf::Dotenv => "a file or a list of files",
        };
        self.ctx.fail(
            format!("{} must be {expected}, found {found}", (self.what)()),
            None,
        )
    }

    fn one<E: de::Error>(self, v: String) -> Result<Vec<String>, E> {
        self.ctx.reached(self.me(0))?;
        self.ctx.count(v.len())?;
        Ok(vec![v])
    }
}

seed_via_any!(ListSeed);

impl<'de> Visitor<'de> for ListSeed<'_> {
    type Value = Vec<String>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of strings")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        self.one(v.to_owned())
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        self.one(v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        self.one(v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        self.one(v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        self.one(v.to_string())
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        let what = || format!("every item of {}", (self.what)());
        while let Some(item) = seq.next_element_seed(StrSeed {
            ctx: self.ctx,
            what: &what,
            me: Some(self.me(items.len())),
            nul_ok: false,
        })? {
            items.push(item);
        }
        Ok(items)
    }
    reject!(map tagged);
}

/// `true` or `false`.
struct BoolSeed<'a> {
    ctx: &'a Ctx,
    what: &'a dyn Fn() -> String,
}

impl BoolSeed<'_> {
    fn wrong<E: de::Error>(&self, found: &str) -> E {
        self.ctx.fail(
            format!("{} must be `true` or `false`, found {found}", (self.what)()),
            None,
        )
    }
}

seed_via_any!(BoolSeed);

impl<'de> Visitor<'de> for BoolSeed<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a boolean")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        Ok(v)
    }
    reject!(number str null seq map tagged);
}

/// Any YAML value as JSON (plugin config).
struct JsonSeed<'a> {
    ctx: &'a Ctx,
    what: &'a dyn Fn() -> String,
}

impl JsonSeed<'_> {
    fn wrong<E: de::Error>(&self, found: &str) -> E {
        self.ctx
            .fail(format!("{} cannot hold {found}", (self.what)()), None)
    }
}

seed_via_any!(JsonSeed);

impl<'de> Visitor<'de> for JsonSeed<'_> {
    type Value = serde_json::Value;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        self.ctx.count(0)?;
        Ok(v.into())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        self.ctx.count(0)?;
        Ok(v.into())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        self.ctx.count(0)?;
        Ok(v.into())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        self.ctx.count(0)?;
        serde_json::Number::from_f64(v)
            .map(serde_json::Value::Number)
            .ok_or_else(|| self.wrong("a NaN or infinite number"))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        self.ctx.count(v.len())?;
        Ok(v.into())
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.ctx.count(0)?;
        Ok(serde_json::Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.ctx.count(0)?;
        Ok(serde_json::Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        self.ctx.count(0)?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(JsonSeed {
            ctx: self.ctx,
            what: self.what,
        })? {
            items.push(item);
        }
        Ok(serde_json::Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        self.ctx.count(0)?;
        let mut object = serde_json::Map::new();
        let what = || format!("every key in {}", (self.what)());
        while let Some(key) = map.next_key_seed(StrSeed {
            ctx: self.ctx,
            what: &what,
            me: None,
            nul_ok: true,
        })? {
            let value = map.next_value_seed(JsonSeed {
                ctx: self.ctx,
                what: self.what,
            })?;
            object.insert(key, value);
        }
        Ok(serde_json::Value::Object(object))
    }
    reject!(tagged);
    fn visit_i128<E: de::Error>(self, _: i128) -> Result<Self::Value, E> {
        Err(self.wrong("a number this large"))
    }
    fn visit_u128<E: de::Error>(self, _: u128) -> Result<Self::Value, E> {
        Err(self.wrong("a number this large"))
    }
}

/// Null settings mean "no settings": `{}`.
fn object_if_null(value: serde_json::Value) -> serde_json::Value {
    if value.is_null() {
        serde_json::Value::Object(serde_json::Map::new())
    } else {
        value
    }
}

struct TopSeed<'a> {
    ctx: &'a Ctx,
}

impl TopSeed<'_> {
    fn wrong<E: de::Error>(&self, found: &str) -> E {
        self.ctx.fail(
            format!("a `.rush` file must be a mapping with a `tasks:` key, found {found}"),
            None,
        )
    }

    fn missing_tasks<E: de::Error>(&self) -> E {
        self.ctx.fail(
            "missing top-level key `tasks`".to_owned(),
            Some("a `.rush` file lists its tasks under `tasks:`; `tasks: {}` for none".to_owned()),
        )
    }
}

seed_via_any!(TopSeed);

impl<'de> Visitor<'de> for TopSeed<'_> {
    type Value = Raw;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let ctx = self.ctx;
        let mut seen = Vec::new();
        let mut tasks = None;
        let mut plugins = Vec::new();
        let mut dotenv = Vec::new();
        let mut includes = Vec::new();
        while let Some(key) = map.next_key_seed(KeySeed {
            ctx,
            keys: TOP_KEYS,
            owner: Owner::Top,
            seen: &mut seen,
        })? {
            match key {
                "tasks" => tasks = Some(map.next_value_seed(TasksSeed { ctx })?),
                "plugins" => plugins = map.next_value_seed(PluginsSeed { ctx })?,
                "dotenv" => {
                    let what = || "top-level `dotenv`".to_owned();
                    dotenv = map.next_value_seed(ListSeed {
                        ctx,
                        what: &what,
                        list: ListOf::Dotenv,
                        entry: usize::MAX,
                    })?;
                }
                "includes" => includes = map.next_value_seed(IncludesSeed { ctx })?,
                _ => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        match tasks {
            Some(tasks) => Ok(Raw {
                tasks,
                plugins,
                dotenv,
                includes,
            }),
            None => Err(self.missing_tasks()),
        }
    }
    fn visit_none<E: de::Error>(self) -> Result<Raw, E> {
        Err(self.missing_tasks())
    }
    fn visit_unit<E: de::Error>(self) -> Result<Raw, E> {
        Err(self.missing_tasks())
    }
    reject!(bool number str seq tagged);
}

/// The value of `tasks:`.
struct TasksSeed<'a> {
    ctx: &'a Ctx,
}

impl TasksSeed<'_> {
    fn wrong<E: de::Error>(&self, found: &str) -> E {
        self.ctx.fail(
            format!("`tasks` must be a mapping from task names to tasks, found {found}"),
            None,
        )
    }
}

seed_via_any!(TasksSeed);

impl<'de> Visitor<'de> for TasksSeed<'_> {
    type Value = Vec<RawTask>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping of tasks")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let ctx = self.ctx;
        let mut tasks: Vec<RawTask> = Vec::with_capacity(map.size_hint().unwrap_or(0));
        let mut by_name: HashMap<String, usize> = HashMap::new();
        let what = || "a task name".to_owned();
        loop {
            let entry = tasks.len();
            let Some(name) = map.next_key_seed(StrSeed {
                ctx,
                what: &what,
                me: Some(Target::TaskKey(entry)),
                nul_ok: false,
            })?
            else {
                break;
            };
            let task = map.next_value_seed(TaskSeed {
                ctx,
                name: &name,
                entry,
            })?;
            if let Some(earlier) = by_name.insert(name, entry) {
                tasks[earlier].replaced = true;
            }
            tasks.push(task);
        }
        Ok(tasks)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }
    reject!(bool number str seq tagged);
}

/// One task's mapping.
struct TaskSeed<'a> {
    ctx: &'a Ctx,
    name: &'a str,
    entry: usize,
}

impl TaskSeed<'_> {
    fn empty(&self) -> RawTask {
        RawTask {
            entry: self.entry,
            task: Task {
                name: self.name.to_owned(),
                cmd: None,
                description: None,
                depends_on: Vec::new(),
                cache_files: Vec::new(),
                outputs: Vec::new(),
                env: Vec::new(),
                dotenv: Vec::new(),
                dir: None,
                before: None,
                after: None,
                plugins: BTreeMap::new(),
                line: 0,
                column: 0,
                file: None,
            },
            replaced: false,
            cache_key: "cache_files",
            plugin_keys: Vec::new(),
        }
    }

    fn wrong<E: de::Error>(&self, found: &str) -> E {
        self.ctx.fail(
            format!("task `{}` must be a mapping, found {found}", self.name),
            Some(format!("write it as `{}: {{cmd: ...}}`", self.name)),
        )
    }
}

seed_via_any!(TaskSeed);

impl<'de> Visitor<'de> for TaskSeed<'_> {
    type Value = RawTask;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a task")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawTask, A::Error> {
        let (ctx, name, entry) = (self.ctx, self.name, self.entry);
        ctx.count(0)?;
        let mut raw = self.empty();
        let mut seen = Vec::new();
        while let Some(key) = map.next_key_seed(KeySeed {
            ctx,
            keys: TASK_KEYS,
            owner: Owner::Task(name),
            seen: &mut seen,
        })? {
            let what = || format!("`{key}` of task `{name}`");
            let what: &dyn Fn() -> String = &what;
            let task = &mut raw.task;
            match key {
                "cmd" => task.cmd = map.next_value_seed(OptStrSeed { ctx, what })?,
                "description" => {
                    task.description = map.next_value_seed(OptStrSeed { ctx, what })?
                }
                "before" => task.before = map.next_value_seed(OptStrSeed { ctx, what })?,
                "after" => task.after = map.next_value_seed(OptStrSeed { ctx, what })?,
                "dir" => task.dir = map.next_value_seed(OptStrSeed { ctx, what })?,
                "depends_on" | "deps" => {
                    let list = ListOf::Deps;
                    task.depends_on = map.next_value_seed(ListSeed {
                        ctx,
                        what,
                        list,
                        entry,
                    })?;
                }
                "cache_files" | "cache" => {
                    raw.cache_key = key;
                    let list = ListOf::Cache;
                    task.cache_files = map.next_value_seed(ListSeed {
                        ctx,
                        what,
                        list,
                        entry,
                    })?;
                }
                "outputs" => {
                    let list = ListOf::Outputs;
                    task.outputs = map.next_value_seed(ListSeed {
                        ctx,
                        what,
                        list,
                        entry,
                    })?;
                }
                "env" => task.env = map.next_value_seed(EnvSeed { ctx, task: name })?,
                "dotenv" => {
                    let list = ListOf::Dotenv;
                    task.dotenv = map.next_value_seed(ListSeed {
                        ctx,
                        what,
                        list,
                        entry,
                    })?;
                }
                "plugins" => {
                    let (plugins, keys) = map.next_value_seed(TaskPluginsSeed {
                        ctx,
                        task: name,
                        entry,
                    })?;
                    task.plugins = plugins;
                    raw.plugin_keys = keys;
                }
                _ => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        Ok(raw)
    }
    /// `name:` with nothing: reported by [`Checker`] as a task with no `cmd`.
    fn visit_unit<E: de::Error>(self) -> Result<RawTask, E> {
        Ok(self.empty())
    }
    fn visit_none<E: de::Error>(self) -> Result<RawTask, E> {
        Ok(self.empty())
    }
    reject!(bool number str seq tagged);
}

/// `includes:`: namespace -> path, in file order.
struct IncludesSeed<'a> {
    ctx: &'a Ctx,
}

impl IncludesSeed<'_> {
    fn wrong<E: de::Error>(&self, found: &str) -> E {
        self.ctx.fail(
            format!("`includes` must be a mapping from namespaces to paths, found {found}"),
            Some(
                "write it like `includes: {web: packages/web, api: packages/api/.rush}`".to_owned(),
            ),
        )
    }
}

seed_via_any!(IncludesSeed);

impl<'de> Visitor<'de> for IncludesSeed<'_> {
    type Value = Vec<Include>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let ctx = self.ctx;
        let mut includes = Vec::new();
        loop {
            let index = includes.len();
            let key_what = || "a namespace in `includes`".to_owned();
            let Some(namespace) = map.next_key_seed(StrSeed {
                ctx,
                what: &key_what,
                me: Some(Target::IncludeKey(index)),
                nul_ok: false,
            })?
            else {
                break;
            };
            let what = || format!("the path of include `{namespace}`");
            let path = map.next_value_seed(StrSeed {
                ctx,
                what: &what,
                me: None,
                nul_ok: false,
            })?;
            includes.push(Include {
                namespace,
                path,
                line: 0,
                column: 0,
            });
        }
        Ok(includes)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }
    reject!(bool number str seq tagged);
}

/// The 1-based position of item `dep` of `depends_on` of the task `name`
/// (its last definition) in `source`, for errors found on merged tasks.
pub(crate) fn locate_dep(source: &str, name: &str, dep: usize) -> Option<(usize, usize)> {
    let ctx = Ctx::new(None);
    let raw = deserialize(&ctx, source).ok()?;
    let entry = raw.tasks.iter().rev().find(|t| t.task.name == name)?.entry;
    locate(source, Target::DepItem(entry, dep))
}

/// `env:` of a task: variable name -> raw value, in file order.
struct EnvSeed<'a> {
    ctx: &'a Ctx,
    task: &'a str,
}

impl EnvSeed<'_> {
    fn wrong<E: de::Error>(&self, found: &str) -> E {
        self.ctx.fail(
            format!(
                "`env` of task `{}` must be a mapping from variable names to values, found {found}",
                self.task
            ),
            Some("write it as `env: {NAME: value}`".to_owned()),
        )
    }
}

seed_via_any!(EnvSeed);

impl<'de> Visitor<'de> for EnvSeed<'_> {
    type Value = Vec<(String, String)>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (ctx, task) = (self.ctx, self.task);
        let mut env: Vec<(String, String)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        while let Some(name) = map.next_key_seed(EnvNameSeed { ctx, task })? {
            let what = || format!("`env.{name}` of task `{task}`");
            let value = map.next_value_seed(StrSeed {
                ctx,
                what: &what,
                me: None,
                nul_ok: false,
            })?;
            // A repeated name replaces the earlier value (0.2 read env into a map).
            match index.get(&name) {
                Some(&i) => env[i].1 = value,
                None => {
                    index.insert(name.clone(), env.len());
                    env.push((name, value));
                }
            }
        }
        Ok(env)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }
    reject!(bool number str seq tagged);
}

/// An environment variable name: not empty, no `=`, no NUL.
struct EnvNameSeed<'a> {
    ctx: &'a Ctx,
    task: &'a str,
}

impl<'de> DeserializeSeed<'de> for EnvNameSeed<'_> {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        let (ctx, task) = (self.ctx, self.task);
        deserializer.deserialize_str(self).inspect_err(|err| {
            ctx.wrong_type(
                err,
                &|| format!("a variable name in `env` of task `{task}`"),
                "a string",
            )
        })
    }
}

impl<'de> Visitor<'de> for EnvNameSeed<'_> {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a variable name")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        self.ctx.count(v.len())?;
        if v.is_empty() || v.contains(['=', '\0']) {
            return Err(self.ctx.fail(
                format!(
                    "invalid variable name `{}` in `env` of task `{}`",
                    v.escape_debug(),
                    self.task
                ),
                Some("a variable name cannot be empty or contain `=` or a NUL byte".to_owned()),
            ));
        }
        Ok(v.to_owned())
    }
}

/// `plugins:` of a task: plugin name -> settings.
struct TaskPluginsSeed<'a> {
    ctx: &'a Ctx,
    task: &'a str,
    entry: usize,
}

impl TaskPluginsSeed<'_> {
    fn wrong<E: de::Error>(&self, found: &str) -> E {
        self.ctx.fail(
            format!(
                "`plugins` of task `{}` must be a mapping from plugin names to settings, found {found}",
                self.task
            ),
            Some("write it as `plugins: {plugin-name: {setting: value}}`".to_owned()),
        )
    }
}

seed_via_any!(TaskPluginsSeed);

impl<'de> Visitor<'de> for TaskPluginsSeed<'_> {
    type Value = (BTreeMap<String, serde_json::Value>, Vec<String>);
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (ctx, task, entry) = (self.ctx, self.task, self.entry);
        let mut plugins = BTreeMap::new();
        let mut keys: Vec<String> = Vec::new();
        loop {
            let Some(name) = map.next_key_seed(TaskPluginNameSeed {
                ctx,
                task,
                me: Target::TaskPluginKey(entry, keys.len()),
                taken: &plugins,
            })?
            else {
                break;
            };
            let settings_of = || format!("the settings of plugin `{name}` in task `{task}`");
            let settings = map.next_value_seed(JsonSeed {
                ctx,
                what: &settings_of,
            })?;
            plugins.insert(name.clone(), object_if_null(settings));
            keys.push(name);
        }
        Ok((plugins, keys))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Default::default())
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Default::default())
    }
    reject!(bool number str seq tagged);
}

/// A key of a task's `plugins`: a plugin name, not repeated.
struct TaskPluginNameSeed<'a> {
    ctx: &'a Ctx,
    task: &'a str,
    me: Target,
    taken: &'a BTreeMap<String, serde_json::Value>,
}

impl<'de> DeserializeSeed<'de> for TaskPluginNameSeed<'_> {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        let (ctx, task) = (self.ctx, self.task);
        deserializer.deserialize_str(self).inspect_err(|err| {
            ctx.wrong_type(
                err,
                &|| format!("a plugin name in `plugins` of task `{task}`"),
                "a string",
            )
        })
    }
}

impl<'de> Visitor<'de> for TaskPluginNameSeed<'_> {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a plugin name")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        self.ctx.reached(self.me)?;
        if self.taken.contains_key(v) {
            return Err(self.ctx.fail(
                format!("plugin `{v}` is configured twice in task `{}`", self.task),
                Some("merge the two settings into one".to_owned()),
            ));
        }
        Ok(v.to_owned())
    }
}

/// The top-level `plugins:` list.
struct PluginsSeed<'a> {
    ctx: &'a Ctx,
}

impl PluginsSeed<'_> {
    fn wrong<E: de::Error>(&self, found: &str) -> E {
        self.ctx.fail(
            format!("`plugins` must be a list of plugins, found {found}"),
            Some("write each plugin as a list item: `- name: slack-notify`".to_owned()),
        )
    }
}

seed_via_any!(PluginsSeed);

impl<'de> Visitor<'de> for PluginsSeed<'_> {
    type Value = Vec<PluginSpec>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut plugins = Vec::new();
        while let Some(plugin) = seq.next_element_seed(PluginSeed {
            ctx: self.ctx,
            index: plugins.len(),
        })? {
            plugins.push(plugin);
        }
        Ok(plugins)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }
    reject!(bool number str map tagged);
}

/// One entry of the top-level `plugins:` list.
struct PluginSeed<'a> {
    ctx: &'a Ctx,
    index: usize,
}

impl PluginSeed<'_> {
    fn wrong<E: de::Error>(&self, found: &str) -> E {
        self.ctx.fail(
            format!(
                "entry {} of `plugins` must be a mapping, found {found}",
                self.index + 1
            ),
            Some(
                "write it as `- name: slack-notify`, with `version:`, `config:` etc. below"
                    .to_owned(),
            ),
        )
    }
}

seed_via_any!(PluginSeed);

impl<'de> Visitor<'de> for PluginSeed<'_> {
    type Value = PluginSpec;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a plugin")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PluginSpec, A::Error> {
        let (ctx, index) = (self.ctx, self.index);
        ctx.reached(Target::PluginItem(index))?;
        let mut name: Option<String> = None;
        let mut spec = PluginSpec {
            name: String::new(),
            version: None,
            kind: PluginKind::External,
            path: None,
            required: false,
            config: serde_json::Value::Object(serde_json::Map::new()),
            timeout: DEFAULT_PLUGIN_TIMEOUT,
            limits: Default::default(),
            memory: None,
            module_size: None,
            line: 0,
        };
        let mut seen = Vec::new();
        loop {
            let owner = Owner::Plugin {
                index,
                name: name.as_deref(),
            };
            let Some(key) = map.next_key_seed(KeySeed {
                ctx,
                keys: PLUGIN_KEYS,
                owner,
                seen: &mut seen,
            })?
            else {
                break;
            };
            let what = || match owner {
                Owner::Plugin {
                    name: Some(name), ..
                } => format!("`{key}` of plugin `{name}`"),
                _ => format!("`{key}` of entry {} of `plugins`", index + 1),
            };
            let what: &dyn Fn() -> String = &what;
            match key {
                "name" => {
                    let me = Some(Target::PluginName(index));
                    let value = map.next_value_seed(StrSeed {
                        ctx,
                        what,
                        me,
                        nul_ok: false,
                    })?;
                    name = Some(value);
                }
                "version" => spec.version = map.next_value_seed(OptStrSeed { ctx, what })?,
                "path" => spec.path = map.next_value_seed(OptStrSeed { ctx, what })?,
                "type" => spec.kind = map.next_value_seed(KindSeed { ctx, owner })?,
                "required" => spec.required = map.next_value_seed(BoolSeed { ctx, what })?,
                "config" => {
                    spec.config = object_if_null(map.next_value_seed(JsonSeed { ctx, what })?)
                }
                "timeout" => spec.timeout = map.next_value_seed(DurationSeed { ctx, what })?,
                "limits" => {
                    let v = map.next_value_seed(JsonSeed { ctx, what })?;
                    let plugin = name.as_deref().unwrap_or("?");
                    spec.limits = super::limits::PluginLimits::from_json(&v, plugin)
                        .map_err(|(m, hint)| ctx.fail(m, hint))?;
                }
                "memory" => {
                    let max = crate::plugin::WASM_MAX_MEMORY;
                    spec.memory = Some(map.next_value_seed(SizeSeed { ctx, what, max })?)
                }
                "module_size" => {
                    let max = crate::plugin::WASM_MAX_MODULE_SIZE;
                    spec.module_size = Some(map.next_value_seed(SizeSeed { ctx, what, max })?)
                }
                _ => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        match name {
            Some(name) => {
                spec.name = name;
                Ok(spec)
            }
            None => Err(ctx.fail(
                format!("entry {} of `plugins` has no `name`", index + 1),
                Some("add `name: <plugin name>`".to_owned()),
            )),
        }
    }
    reject!(bool number str null seq tagged);
}

/// A size: `64MiB`, `512KiB`, `1GiB` (or `M`, `K`, `G`, `MB`…, all
/// powers of 1024), or a number of bytes; more than 0 and at most `max`.
struct SizeSeed<'a> {
    ctx: &'a Ctx,
    what: &'a dyn Fn() -> String,
    max: u64,
}

impl SizeSeed<'_> {
    fn wrong<E: de::Error>(&self, found: &str) -> E {
        self.ctx.fail(
            format!("{} must be a size, found {found}", (self.what)()),
            Some("write it like `64MiB`, `512KiB`, `1GiB`, or a number of bytes".to_owned()),
        )
    }

    fn bytes<E: de::Error>(&self, n: f64, written: &str) -> Result<u64, E> {
        if n.is_nan() || n < 1.0 || n > self.max as f64 {
            return Err(self.ctx.fail(
                format!(
                    "{} must be more than 0 and at most {} MiB, found `{written}`",
                    (self.what)(),
                    self.max >> 20
                ),
                None,
            ));
        }
        Ok(n as u64)
    }
}

seed_via_any!(SizeSeed);

impl<'de> Visitor<'de> for SizeSeed<'_> {
    type Value = u64;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a size")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        self.bytes(v as f64, &v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        self.bytes(v as f64, &v.to_string())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        let t = v.trim();
        let (number, unit) = match t.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
            Some(i) => t.split_at(i),
            None => (t, ""),
        };
        let scale = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1.0,
            "k" | "kb" | "kib" => 1024.0,
            "m" | "mb" | "mib" => 1024.0 * 1024.0,
            "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
            _ => return Err(self.wrong(&format!("`{v}`"))),
        };
        match number.parse::<f64>() {
            Ok(n) if !number.is_empty() => self.bytes(n * scale, v),
            _ => Err(self.wrong(&format!("`{v}`"))),
        }
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        self.bytes(v, &v.to_string())
    }
    reject!(bool null seq map tagged);
}

/// A duration: `5s`, `500ms`, `2m`, or a number of seconds (`5`, `0.5`).
struct DurationSeed<'a> {
    ctx: &'a Ctx,
    what: &'a dyn Fn() -> String,
}

impl DurationSeed<'_> {
    fn wrong<E: de::Error>(&self, found: &str) -> E {
        self.ctx.fail(
            format!("{} must be a duration, found {found}", (self.what)()),
            Some("write it like `5s`, `500ms`, `2m`, or a number of seconds".to_owned()),
        )
    }

    fn seconds<E: de::Error>(&self, secs: f64, written: &str) -> Result<std::time::Duration, E> {
        if secs.is_nan() || secs <= 0.0 || secs > 86_400.0 {
            return Err(self.ctx.fail(
                format!(
                    "{} must be more than 0 and at most a day, found `{written}`",
                    (self.what)()
                ),
                None,
            ));
        }
        Ok(std::time::Duration::from_secs_f64(secs))
    }
}

seed_via_any!(DurationSeed);

impl<'de> Visitor<'de> for DurationSeed<'_> {
    type Value = std::time::Duration;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        self.seconds(v as f64, &v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        self.seconds(v as f64, &v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        self.seconds(v, &v.to_string())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        let t = v.trim();
        let (number, unit) = match t.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
            Some(i) => t.split_at(i),
            None => (t, "s"),
        };
        let scale = match unit.trim() {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            _ => return Err(self.wrong(&format!("`{v}`"))),
        };
        match number.parse::<f64>() {
            Ok(n) if !number.is_empty() => self.seconds(n * scale, v),
            _ => Err(self.wrong(&format!("`{v}`"))),
        }
    }
    reject!(bool null seq map tagged);
}

/// `type:` of a plugin.
struct KindSeed<'a> {
    ctx: &'a Ctx,
    owner: Owner<'a>,
}

impl<'de> DeserializeSeed<'de> for KindSeed<'_> {
    type Value = PluginKind;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<PluginKind, D::Error> {
        let (ctx, owner) = (self.ctx, self.owner);
        deserializer
            .deserialize_str(self)
            .inspect_err(|err| ctx.wrong_type(err, &|| format!("`type` {owner}"), "a string"))
    }
}

impl<'de> Visitor<'de> for KindSeed<'_> {
    type Value = PluginKind;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a plugin type")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<PluginKind, E> {
        match v {
            "external" => Ok(PluginKind::External),
            "wasm" => Ok(PluginKind::Wasm),
            "native" => Ok(PluginKind::Native),
            _ => Err(self.ctx.fail(
                format!("unknown plugin type `{v}` {}", self.owner),
                Some(
                    did_you_mean(v, PLUGIN_KINDS.iter().copied()).unwrap_or_else(|| {
                        "the types are `external`, `wasm` and `native`".to_owned()
                    }),
                ),
            )),
        }
    }
}

// ---------------------------------------------------------------------------
// Outline
// ---------------------------------------------------------------------------

/// Where the task names and plugin entries are, found by scanning the source.
///
/// A deliberately small YAML structure scanner: block mappings and
/// sequences by indentation, flow collections by brackets, quoted scalars
/// (spanning lines), block scalars, comments, anchors and tags. It gives up
/// (`None`) on what it does not know (explicit `?` keys, complex keys), and
/// its answer is only trusted when it matches the parser's task names.
mod outline {
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(super) struct Pos {
        pub(crate) offset: usize,
        /// 1-based.
        pub(crate) line: usize,
        /// 1-based, in characters.
        pub(crate) column: usize,
    }

    #[derive(Debug)]
    pub(super) struct Key {
        pub(crate) text: String,
        pub(crate) pos: Pos,
    }

    #[derive(Debug)]
    pub(super) struct Outline {
        /// The keys of `tasks`, in file order.
        pub(crate) tasks: Vec<Key>,
        /// The items of `plugins`, in file order.
        pub(crate) plugins: Vec<Pos>,
    }

    pub(super) fn scan(source: &str) -> Option<Outline> {
        let mut cur = Cursor {
            s: source.as_bytes(),
            i: 0,
            line: 1,
            col: 1,
            depth: 0,
        };
        if source.starts_with('\u{feff}') {
            cur.i = 3;
        }
        let root = cur.block(-1, false, 2)?;
        let mut outline = Outline {
            tasks: Vec::new(),
            plugins: Vec::new(),
        };
        if let Node::Map(entries) = root {
            for (key, value) in entries {
                match (key.text.as_str(), value) {
                    ("tasks", Node::Map(tasks)) => {
                        outline.tasks = tasks.into_iter().map(|(k, _)| k).collect()
                    }
                    ("tasks", _) => outline.tasks.clear(),
                    ("plugins", Node::Seq(items)) => outline.plugins = items,
                    ("plugins", _) => outline.plugins.clear(),
                    _ => {}
                }
            }
        }
        Some(outline)
    }

    /// The structure of a node, kept `keep` levels deep.
    #[derive(Debug)]
    enum Node {
        Map(Vec<(Key, Node)>),
        Seq(Vec<Pos>),
        Other,
    }

    /// Nesting beyond this gives up (serde_norway stops at 128 anyway).
    const MAX_DEPTH: usize = 256;

    /// A scalar's byte range in the source, quotes included, and its style.
    type Span = (usize, usize, Style);

    #[derive(Clone, Copy)]
    enum Style {
        Plain,
        Single,
        Double,
    }

    #[derive(Clone)]
    struct Cursor<'a> {
        s: &'a [u8],
        i: usize,
        line: usize,
        col: usize,
        depth: usize,
    }

    fn blank(b: Option<u8>) -> bool {
        matches!(b, None | Some(b' ' | b'\t' | b'\n' | b'\r'))
    }

    fn flow_indicator(b: u8) -> bool {
        matches!(b, b',' | b'[' | b']' | b'{' | b'}')
    }

    impl Cursor<'_> {
        fn peek(&self) -> Option<u8> {
            self.s.get(self.i).copied()
        }

        fn peek_at(&self, n: usize) -> Option<u8> {
            self.s.get(self.i + n).copied()
        }

        fn pos(&self) -> Pos {
            Pos {
                offset: self.i,
                line: self.line,
                column: self.col,
            }
        }

        fn indent(&self) -> isize {
            self.col as isize - 1
        }

        fn bump(&mut self) {
            if let Some(b) = self.peek() {
                self.i += 1;
                if b == b'\n' {
                    self.line += 1;
                    self.col = 1;
                } else if b & 0xC0 != 0x80 {
                    self.col += 1;
                }
            }
        }

        fn at_line_end(&self) -> bool {
            matches!(self.peek(), None | Some(b'\n' | b'#')) || (self.peek() == Some(b'\r'))
        }

        fn skip_inline_space(&mut self) {
            while matches!(self.peek(), Some(b' ' | b'\t')) {
                self.bump();
            }
        }

        fn skip_to_line_end(&mut self) {
            while !matches!(self.peek(), None | Some(b'\n')) {
                self.bump();
            }
        }

        /// Skips spaces, comments, line breaks, document markers and directives.
        fn skip_blank(&mut self) {
            loop {
                match self.peek() {
                    Some(b' ' | b'\t' | b'\r' | b'\n') => self.bump(),
                    Some(b'#') => self.skip_to_line_end(),
                    Some(b'%') if self.col == 1 => self.skip_to_line_end(),
                    Some(b'-' | b'.') if self.col == 1 && self.at_document_marker() => {
                        for _ in 0..3 {
                            self.bump();
                        }
                    }
                    _ => return,
                }
            }
        }

        /// Skips the rest of the line (only a comment may be left) and the break.
        fn finish_line(&mut self) -> Option<()> {
            self.skip_inline_space();
            if !self.at_line_end() {
                return None;
            }
            self.skip_to_line_end();
            self.bump();
            Some(())
        }

        /// Skips the following lines that are blank or indented more than `parent`.
        fn skip_more_indented(&mut self, parent: isize) {
            loop {
                let save = self.clone();
                self.skip_inline_space();
                let blank_line = matches!(self.peek(), Some(b'\n' | b'\r'));
                if self.peek().is_none() {
                    return;
                }
                if blank_line || self.indent() > parent {
                    self.skip_to_line_end();
                    self.bump();
                } else {
                    *self = save;
                    return;
                }
            }
        }

        fn at_document_marker(&self) -> bool {
            let rest = &self.s[self.i..];
            (rest.starts_with(b"---") || rest.starts_with(b"...")) && blank(self.peek_at(3))
        }

        fn is_seq_entry(&self) -> bool {
            self.peek() == Some(b'-') && blank(self.peek_at(1))
        }

        /// A block node whose parent is indented `parent`; starts at the next
        /// non-blank token. `seq_here`: a sequence may sit at `parent`'s indent
        /// (the value of a mapping key).
        fn block(&mut self, parent: isize, seq_here: bool, keep: u8) -> Option<Node> {
            self.skip_blank();
            if self.peek().is_none() {
                return Some(Node::Other);
            }
            let indent = self.indent();
            if indent < parent || (indent == parent && !(seq_here && self.is_seq_entry())) {
                return Some(Node::Other);
            }
            self.node(parent, keep)
        }

        /// The node at the cursor (not blank), in block context.
        fn node(&mut self, parent: isize, keep: u8) -> Option<Node> {
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return None;
            }
            let node = self.node_inner(parent, keep);
            self.depth -= 1;
            node
        }

        fn node_inner(&mut self, parent: isize, keep: u8) -> Option<Node> {
            // Anchors and tags: skip them; the node may start on the next line.
            while matches!(self.peek(), Some(b'&' | b'!')) {
                while !blank(self.peek()) {
                    self.bump();
                }
                self.skip_inline_space();
                if self.at_line_end() {
                    self.finish_line()?;
                    return self.block(parent, false, keep);
                }
            }
            let indent = self.indent();
            match self.peek()? {
                b'-' if blank(self.peek_at(1)) => self.block_seq(indent, keep),
                b'[' | b'{' => {
                    let node = self.flow(keep)?;
                    self.skip_inline_space();
                    if self.peek() == Some(b':') {
                        return None; // a flow collection as a key
                    }
                    self.finish_line()?;
                    Some(node)
                }
                b'|' | b'>' => {
                    self.skip_to_line_end();
                    self.skip_more_indented(parent);
                    Some(Node::Other)
                }
                b'?' if blank(self.peek_at(1)) => None,
                _ => {
                    let start = self.pos();
                    let style = self.scalar_in_line()?;
                    let end = self.i;
                    self.skip_inline_space();
                    if self.peek() == Some(b':') && blank(self.peek_at(1)) {
                        let key = Key {
                            text: if keep > 0 {
                                self.text(start.offset, end, style)
                            } else {
                                String::new()
                            },
                            pos: start,
                        };
                        return self.block_map(indent, key, keep);
                    }
                    match style {
                        Style::Plain => {
                            self.skip_to_line_end();
                            self.bump();
                            self.skip_more_indented(parent);
                        }
                        Style::Single | Style::Double => self.finish_line()?,
                    }
                    Some(Node::Other)
                }
            }
        }

        /// A block mapping at `indent`; the cursor is on the `:` after `first`.
        fn block_map(&mut self, indent: isize, first: Key, keep: u8) -> Option<Node> {
            let mut entries = Vec::new();
            let mut key = first;
            loop {
                self.bump(); // `:`
                self.skip_inline_space();
                let value = if self.at_line_end() {
                    self.finish_line()?;
                    self.block(indent, true, keep.saturating_sub(1))?
                } else {
                    self.node(indent, keep.saturating_sub(1))?
                };
                if keep > 0 {
                    entries.push((key, value));
                }
                self.skip_blank();
                if self.peek().is_none() || self.indent() < indent {
                    break;
                }
                if self.indent() > indent || self.is_seq_entry() {
                    return None;
                }
                let start = self.pos();
                let style = self.scalar_in_line()?;
                let end = self.i;
                self.skip_inline_space();
                if !(self.peek() == Some(b':') && blank(self.peek_at(1))) {
                    return None;
                }
                key = Key {
                    text: if keep > 0 {
                        self.text(start.offset, end, style)
                    } else {
                        String::new()
                    },
                    pos: start,
                };
            }
            Some(if keep > 0 {
                Node::Map(entries)
            } else {
                Node::Other
            })
        }

        /// A block sequence at `indent`; the cursor is on the first `-`.
        fn block_seq(&mut self, indent: isize, keep: u8) -> Option<Node> {
            let mut items = Vec::new();
            loop {
                if keep > 0 {
                    items.push(self.pos());
                }
                self.bump(); // `-`
                self.skip_inline_space();
                if self.at_line_end() {
                    self.finish_line()?;
                    self.block(indent, false, keep.saturating_sub(1))?;
                } else {
                    self.node(indent, keep.saturating_sub(1))?;
                }
                self.skip_blank();
                if self.peek().is_none() || self.indent() < indent {
                    break;
                }
                if self.indent() > indent {
                    return None;
                }
                if !self.is_seq_entry() {
                    break; // the parent mapping's next key
                }
            }
            Some(if keep > 0 {
                Node::Seq(items)
            } else {
                Node::Other
            })
        }

        /// A scalar in block context: quoted (may span lines) or plain (up to
        /// `: `, ` #` or the end of the line). Leaves the cursor after it.
        fn scalar_in_line(&mut self) -> Option<Style> {
            match self.peek()? {
                b'"' | b'\'' => self.quoted(),
                _ => {
                    while let Some(b) = self.peek() {
                        let comment =
                            b == b'#' && self.i > 0 && matches!(self.s[self.i - 1], b' ' | b'\t');
                        if b == b'\n'
                            || b == b'\r'
                            || comment
                            || (b == b':' && blank(self.peek_at(1)))
                        {
                            break;
                        }
                        self.bump();
                    }
                    Some(Style::Plain)
                }
            }
        }

        /// A quoted scalar at the cursor; leaves the cursor after the closing quote.
        fn quoted(&mut self) -> Option<Style> {
            let quote = self.peek()?;
            self.bump();
            loop {
                match self.peek()? {
                    b'\\' if quote == b'"' => {
                        self.bump();
                        self.bump();
                    }
                    b'\'' if quote == b'\'' && self.peek_at(1) == Some(b'\'') => {
                        self.bump();
                        self.bump();
                    }
                    b if b == quote => {
                        self.bump();
                        return Some(if quote == b'"' {
                            Style::Double
                        } else {
                            Style::Single
                        });
                    }
                    _ => self.bump(),
                }
            }
        }

        /// Skips spaces, line breaks and comments inside a flow collection.
        fn skip_flow_blank(&mut self) {
            loop {
                match self.peek() {
                    Some(b' ' | b'\t' | b'\r' | b'\n') => self.bump(),
                    Some(b'#') => self.skip_to_line_end(),
                    _ => return,
                }
            }
        }

        /// A flow collection at the cursor (`[` or `{`).
        fn flow(&mut self, keep: u8) -> Option<Node> {
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return None;
            }
            let is_map = self.peek()? == b'{';
            let close = if is_map { b'}' } else { b']' };
            self.bump();
            let mut entries = Vec::new();
            let mut items = Vec::new();
            loop {
                self.skip_flow_blank();
                match self.peek()? {
                    b if b == close => {
                        self.bump();
                        break;
                    }
                    b',' => {
                        self.bump();
                        continue;
                    }
                    _ => {}
                }
                let start = self.pos();
                while matches!(self.peek(), Some(b'&' | b'!')) {
                    while !blank(self.peek()) && !flow_indicator(self.peek()?) {
                        self.bump();
                    }
                    self.skip_flow_blank();
                }
                let key_start = self.pos();
                let (_, span) = self.flow_node(keep.saturating_sub(1))?;
                self.skip_flow_blank();
                let value = if self.peek() == Some(b':') {
                    self.bump();
                    self.skip_flow_blank();
                    if matches!(self.peek(), Some(b',')) || self.peek() == Some(close) {
                        Node::Other
                    } else {
                        self.flow_node(keep.saturating_sub(1))?.0
                    }
                } else {
                    Node::Other
                };
                if keep > 0 {
                    if is_map {
                        let (from, to, style) = span?;
                        let text = self.text(from, to, style);
                        entries.push((
                            Key {
                                text,
                                pos: key_start,
                            },
                            value,
                        ));
                    } else {
                        items.push(start);
                    }
                }
            }
            self.depth -= 1;
            Some(match (keep, is_map) {
                (0, _) => Node::Other,
                (_, true) => Node::Map(entries),
                (_, false) => Node::Seq(items),
            })
        }

        /// A node inside a flow collection, with the span of a scalar.
        fn flow_node(&mut self, keep: u8) -> Option<(Node, Option<Span>)> {
            let start = self.i;
            match self.peek()? {
                b'[' | b'{' => Some((self.flow(keep)?, None)),
                b'"' | b'\'' => {
                    let style = self.quoted()?;
                    Some((Node::Other, Some((start, self.i, style))))
                }
                _ => {
                    let mut end = self.i;
                    while let Some(b) = self.peek() {
                        if flow_indicator(b) {
                            break;
                        }
                        if b == b':'
                            && (blank(self.peek_at(1))
                                || self.peek_at(1).is_some_and(flow_indicator))
                        {
                            break;
                        }
                        if b == b'#'
                            && self.i > start
                            && matches!(self.s[self.i - 1], b' ' | b'\t' | b'\n')
                        {
                            break;
                        }
                        self.bump();
                        if !blank(Some(b)) {
                            end = self.i;
                        }
                    }
                    Some((Node::Other, Some((start, end, Style::Plain))))
                }
            }
        }

        /// The value of the scalar `s[from..to]`, for comparing with a task name.
        fn text(&self, from: usize, to: usize, style: Style) -> String {
            let raw = String::from_utf8_lossy(&self.s[from..to]);
            match style {
                Style::Plain => raw.trim_end().to_owned(),
                Style::Single => raw[1..raw.len() - 1].replace("''", "'"),
                Style::Double => {
                    let inner = &raw[1..raw.len() - 1];
                    let mut out = String::with_capacity(inner.len());
                    let mut chars = inner.chars();
                    while let Some(c) = chars.next() {
                        if c != '\\' {
                            out.push(c);
                            continue;
                        }
                        // Only the common escapes; others make the name
                        // differ from the parser's, and the outline unused.
                        match chars.next() {
                            Some('n') => out.push('\n'),
                            Some('t') => out.push('\t'),
                            Some(c @ ('"' | '\\' | '/' | ' ')) => out.push(c),
                            Some(c) => {
                                out.push('\\');
                                out.push(c);
                            }
                            None => out.push('\\'),
                        }
                    }
                    out
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse_ok(src: &str) -> RushFile {
        match parse(Path::new("/p/.rush"), src) {
            Ok(file) => file,
            Err(e) => panic!(
                "unexpected error: {} | {} | {:?}\n{src}",
                e.message,
                e.location(),
                e.hint
            ),
        }
    }

    /// `src` fails to parse with "message | location | hint" (`-` for no hint).
    #[track_caller]
    #[test]
    fn a_key_longer_than_yaml_allows_gets_a_hint() {
        let key = "K".repeat(2000);
        check_err(
            &format!("tasks:\n  t:\n    cmd: x\n    env:\n      {key}: 1\n"),
            "invalid YAML: mapping values are not allowed in this context | .rush:5:2007 | a key is at most 1024 characters long (a YAML rule): shorten it",
        );
    }

    #[test]
    fn lines_are_not_located_by_passes_that_would_expand_aliases_again() {
        // Escaped task names defeat the outline: each line would cost a
        // pass, each pass expanding 400,000 values.
        let anchor = vec!["1"; 630].join(",");
        let aliases = vec!["*a"; 630].join(",");
        let tasks: String = (0..300)
            .map(|i| format!("  \"t\\x3{}{i}\":\n    cmd: x\n", i % 10))
            .collect();
        let src = format!(
            "plugins:\n  - name: p\n    config:\n      a: &a [{anchor}]\n      b: [{aliases}]\ntasks:\n{tasks}"
        );
        let file = parse_ok(&src);
        assert_eq!(task(&file, "t00").line, 0);
        // Without aliases, the same file has its lines.
        let file = parse_ok(&format!("tasks:\n{tasks}"));
        assert_eq!(task(&file, "t00").line, 2);
    }

    #[test]
    fn a_control_character_is_named_at_its_position() {
        check_err(
            "tasks:\n  t:\n    cmd: echo \u{1}a\0b\n",
            "the file holds a control character (U+0001), which YAML does not allow | .rush:3:15 | remove it; in a double-quoted string, write it as an escape (`\\t`, `\\x1b`)",
        );
    }

    #[test]
    fn aliases_that_expand_without_end_are_refused() {
        // Ten levels of ten aliases each: 10 billion values.
        let mut src = String::from(
            "plugins:\n  - name: p\n    config:\n      a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n",
        );
        for i in 1..10 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            src.push_str(&format!("      a{i}: &a{i} [{refs}]\n"));
        }
        src.push_str("tasks:\n  t:\n    cmd: x\n");
        let hint = "each alias (`*name`) repeats everything its anchor (`&name`) holds: repeat less, or split the project";
        check_err(
            &src,
            &format!("aliases (`*name`) are expanded too many times | .rush | {hint}"),
        );
        let src = format!(
            "tasks:\n  t:\n    cmd: &c '{}'\n    env: {{A: *c, B: *c, C: *c}}\n",
            "x".repeat(3 << 20)
        );
        check_err(
            &src,
            &format!(
                "with its aliases (`*name`) expanded, the file holds more than 8 MiB of text | .rush:3:10 | {hint}"
            ),
        );
    }

    fn check_err(src: &str, expected: &str) {
        let actual = match parse(Path::new(".rush"), src) {
            Ok(_) => "parsed without error".to_owned(),
            Err(e) => format!(
                "{} | {} | {}",
                e.message,
                e.location(),
                e.hint.as_deref().unwrap_or("-")
            ),
        };
        assert_eq!(actual, expected, "\n--- source ---\n{src}");
    }

    fn task<'a>(file: &'a RushFile, name: &str) -> &'a Task {
        file.task(name).expect("task exists")
    }

    #[test]
    fn every_task_field_is_read() {
        let file = parse_ok(
            "tasks:
  lint:
    cmd: cargo clippy
  build:
    cmd: cargo build
    description: Build it
    depends_on: [lint]
    cache_files: [\"src/**/*.rs\", Cargo.toml]
    env: {RUST_LOG: \"${LOG:-info}\", B: x}
    before: ./scripts/pre.sh
    after: ./scripts/post.sh
",
        );
        assert_eq!(file.path, Path::new("/p/.rush"));
        assert_eq!(file.root, Path::new("/p"));
        assert_eq!(
            *task(&file, "build"),
            Task {
                name: "build".into(),
                cmd: Some("cargo build".into()),
                description: Some("Build it".into()),
                depends_on: vec!["lint".into()],
                cache_files: vec!["src/**/*.rs".into(), "Cargo.toml".into()],
                outputs: vec![],
                env: vec![
                    ("RUST_LOG".into(), "${LOG:-info}".into()),
                    ("B".into(), "x".into())
                ],
                dotenv: vec![],
                dir: None,
                before: Some("./scripts/pre.sh".into()),
                after: Some("./scripts/post.sh".into()),
                plugins: BTreeMap::new(),
                line: 4,
                column: 3,
                file: None,
            }
        );
        assert_eq!(task(&file, "lint").line, 2);
        assert_eq!(task(&file, "lint").depends_on, Vec::<String>::new());
    }

    #[test]
    fn both_spellings_are_accepted_and_mixed_across_a_file() {
        let file = parse_ok(
            "tasks:
  a: {cmd: a, deps: [b], cache: [x]}
  b: {cmd: b, depends_on: [c], cache_files: [y]}
  c: {cmd: c}
",
        );
        assert_eq!(task(&file, "a").depends_on, ["b"]);
        assert_eq!(task(&file, "a").cache_files, ["x"]);
        assert_eq!(task(&file, "b").depends_on, ["c"]);
        assert_eq!(task(&file, "b").cache_files, ["y"]);
    }

    #[test]
    fn a_single_string_is_a_one_item_list() {
        let file = parse_ok("tasks:\n  a: {cmd: a, deps: b, cache: '*.rs'}\n  b: {cmd: b}\n");
        assert_eq!(task(&file, "a").depends_on, ["b"]);
        assert_eq!(task(&file, "a").cache_files, ["*.rs"]);
    }

    #[test]
    fn block_and_flow_lists_and_quoted_items_are_read_alike() {
        let block = parse_ok(
            "tasks:
  a:
    cmd: a
    deps:
      - b
      - \"c\"
    cache:
    - 'src/**'
  b: {cmd: b}
  c: {cmd: c}
",
        );
        let flow = parse_ok(
            "tasks: {a: {cmd: a, deps: [b, \"c\"], cache: ['src/**']}, b: {cmd: b}, c: {cmd: c}}",
        );
        for file in [&block, &flow] {
            assert_eq!(task(file, "a").depends_on, ["b", "c"]);
            assert_eq!(task(file, "a").cache_files, ["src/**"]);
        }
        assert_eq!(task(&flow, "c").line, 1);
        assert_eq!(task(&block, "c").line, 10);
    }

    #[test]
    fn scalars_are_read_as_written_like_0_2() {
        let file = parse_ok(
            "tasks:
  a:
    cmd: 3
    description: true
    env:
      INT: 1
      BOOL: true
      FLOAT: 1.10
      HEX: 0x10
      EMPTY: ''
      NOTHING:
      TILDE: ~
      QUOTED: \"two words\"
      1: numeric name
",
        );
        let a = task(&file, "a");
        assert_eq!(a.cmd.as_deref(), Some("3"));
        assert_eq!(a.description.as_deref(), Some("true"));
        let env: Vec<(&str, &str)> = a
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            env,
            [
                ("INT", "1"),
                ("BOOL", "true"),
                ("FLOAT", "1.10"),
                ("HEX", "0x10"),
                ("EMPTY", ""),
                ("NOTHING", ""),
                ("TILDE", "~"),
                ("QUOTED", "two words"),
                ("1", "numeric name"),
            ]
        );
    }

    #[test]
    fn a_repeated_env_name_keeps_its_place_and_the_last_value() {
        let file = parse_ok("tasks:\n  a:\n    cmd: a\n    env: {A: 1, B: 2, A: 3}\n");
        assert_eq!(
            task(&file, "a").env,
            [("A".into(), "3".into()), ("B".into(), "2".into())]
        );
    }

    #[test]
    fn null_optional_fields_are_absent() {
        let file = parse_ok(
            "tasks:\n  a:\n    cmd: ~\n    deps: b\n    description:\n    env: ~\n    before: null\n  b: {cmd: b, deps: ~, cache: , plugins: ~}\n",
        );
        let a = task(&file, "a");
        assert_eq!(
            (
                a.cmd.as_deref(),
                a.description.as_deref(),
                a.before.as_deref()
            ),
            (None, None, None)
        );
        assert!(a.env.is_empty());
        assert!(task(&file, "b").depends_on.is_empty());
        assert!(task(&file, "b").cache_files.is_empty());
    }

    #[test]
    fn a_task_with_only_dependencies_is_an_aggregate() {
        let file = parse_ok("tasks:\n  ci:\n    deps: [a]\n  a:\n    cmd: a\n");
        assert_eq!(task(&file, "ci").cmd, None);
    }

    #[test]
    fn an_empty_tasks_section_is_zero_tasks() {
        assert!(parse_ok("tasks:\n").tasks.is_empty());
        assert!(parse_ok("tasks: {}\n").tasks.is_empty());
        assert!(
            parse_ok("# comment\ntasks: ~\nplugins: []\n")
                .tasks
                .is_empty()
        );
    }

    #[test]
    fn a_duplicate_task_name_replaces_the_earlier_one_like_0_2() {
        let file = parse_ok(
            "tasks:\n  a:\n    cmd: one\n  b: {cmd: b}\n  a:\n    cmd: two\n    deps: [b]\n",
        );
        assert_eq!(task(&file, "a").cmd.as_deref(), Some("two"));
        assert_eq!(task(&file, "a").line, 5);
        // Errors in the surviving definition point into it, not the first one.
        check_err(
            "tasks:\n  a:\n    cmd: one\n    deps: [b]\n  b: {cmd: b}\n  a:\n    cmd: two\n    deps: [c]\n",
            "task `a` depends on `c`, which does not exist | .rush:8:12 | -",
        );
    }

    #[test]
    fn the_0_2_example_files_parse() {
        let file = parse_ok(
            r#"tasks:
  build:
    cmd: cargo build
    description: "Build the project"
    deps: [check]
    
  check:
    cmd: cargo check
    description: "Check code for compilation errors"
    cache: [Cargo.toml, Cargo.lock]

  deploy:
    cmd: echo "Deploying to ${DEPLOY_ENV:-development}..."
    description: "Deploy application to environment"
    env:
      DEPLOY_ENV: "${DEPLOY_ENV:-staging}"
  web:
    cmd: echo "🏗️ Building project (webpack)"
    cache: [src/, package.json, webpack.config.js]
"#,
        );
        assert_eq!(file.tasks.len(), 4);
        assert_eq!(
            task(&file, "deploy").env,
            [("DEPLOY_ENV".into(), "${DEPLOY_ENV:-staging}".into())]
        );
        assert_eq!(task(&file, "deploy").line, 12);
        assert_eq!(task(&file, "web").line, 17);
    }

    #[test]
    fn wasm_plugin_limits_take_sizes_in_bytes_or_binary_units() {
        let file = parse_ok(
            "plugins:
  - {name: a, type: wasm, memory: 1G, module_size: 128MiB}
  - {name: b, type: wasm, memory: 65536, module_size: 512k}
  - {name: c, type: wasm}
tasks: {}
",
        );
        let got: Vec<(Option<u64>, Option<u64>)> = file
            .plugins
            .iter()
            .map(|p| (p.memory, p.module_size))
            .collect();
        assert_eq!(
            got,
            [
                (Some(1 << 30), Some(128 << 20)),
                (Some(65536), Some(512 << 10)),
                (None, None)
            ]
        );
        check_err(
            "plugins:\n  - name: a\n    memory: lots\ntasks: {}\n",
            "`memory` of plugin `a` must be a size, found `lots` | .rush:3:13 | write it like `64MiB`, `512KiB`, `1GiB`, or a number of bytes",
        );
        check_err(
            "plugins:\n  - name: a\n    module_size: 1GiB\ntasks: {}\n",
            "`module_size` of plugin `a` must be more than 0 and at most 256 MiB, found `1GiB` | .rush:3:18 | -",
        );
    }

    #[test]
    fn plugin_timeouts_take_units_or_seconds() {
        let file = parse_ok(
            "plugins:
  - {name: a, timeout: 500ms}
  - {name: b, timeout: 2s}
  - {name: c, timeout: 3}
  - {name: d, timeout: 0.25}
  - {name: e, timeout: 1m}
tasks: {}
",
        );
        let ms: Vec<u128> = file.plugins.iter().map(|p| p.timeout.as_millis()).collect();
        assert_eq!(ms, [500, 2000, 3000, 250, 60_000]);
        check_err(
            "plugins:\n  - name: a\n    timeout: soon\ntasks: {}\n",
            "`timeout` of plugin `a` must be a duration, found `soon` | .rush:3:14 | write it like `5s`, `500ms`, `2m`, or a number of seconds",
        );
        check_err(
            "plugins:\n  - name: a\n    timeout: 0s\ntasks: {}\n",
            "`timeout` of plugin `a` must be more than 0 and at most a day, found `0s` | .rush:3:14 | -",
        );
        check_err(
            "plugins:\n  - name: a\n    timout: 1s\ntasks: {}\n",
            "unknown key `timout` in plugin `a` | .rush:3:5 | did you mean `timeout`?",
        );
    }

    #[test]
    fn plugins_are_read_with_defaults() {
        let file = parse_ok(
            "plugins:
  # Global plugins
  - name: slack-notify
    version: \"^1.0\"
    config:
      webhook_url: ${SLACK_WEBHOOK}
      channels: [\"#builds\", \"#deployments\"]
      retries: 3
  - name: security-scanner
    type: wasm
    path: ./plugins/security-scanner.wasm
    required: true
  - {name: n, type: native, version: 1.10, config: ~}
tasks:
  deploy:
    cmd: kubectl apply -f deployment.yaml
    plugins:
      slack-notify:
        message: \"Deployed ${VERSION} to production\"
        on_success: true
      security-scanner:
",
        );
        assert_eq!(
            file.plugins,
            [
                PluginSpec {
                    name: "slack-notify".into(),
                    version: Some("^1.0".into()),
                    kind: PluginKind::External,
                    path: None,
                    required: false,
                    config: json!({
                        "webhook_url": "${SLACK_WEBHOOK}",
                        "channels": ["#builds", "#deployments"],
                        "retries": 3
                    }),
                    timeout: DEFAULT_PLUGIN_TIMEOUT,
                    limits: Default::default(),
                    memory: None,
                    module_size: None,
                    line: 3,
                },
                PluginSpec {
                    name: "security-scanner".into(),
                    version: None,
                    kind: PluginKind::Wasm,
                    path: Some("./plugins/security-scanner.wasm".into()),
                    required: true,
                    config: json!({}),
                    timeout: DEFAULT_PLUGIN_TIMEOUT,
                    limits: Default::default(),
                    memory: None,
                    module_size: None,
                    line: 9,
                },
                PluginSpec {
                    name: "n".into(),
                    version: Some("1.10".into()),
                    kind: PluginKind::Native,
                    path: None,
                    required: false,
                    config: json!({}),
                    timeout: DEFAULT_PLUGIN_TIMEOUT,
                    limits: Default::default(),
                    memory: None,
                    module_size: None,
                    line: 13,
                },
            ]
        );
        let deploy = task(&file, "deploy");
        assert_eq!(
            deploy.plugins["slack-notify"],
            json!({"message": "Deployed ${VERSION} to production", "on_success": true})
        );
        assert_eq!(deploy.plugins["security-scanner"], json!({}));
        assert_eq!(deploy.line, 15);
    }

    #[test]
    fn unknown_task_lookup_suggests_the_closest_name() {
        let file = parse_ok("tasks:\n  build: {cmd: b}\n  test: {cmd: t}\n");
        let err = file.task("biuld").unwrap_err(); // no such task on purpose
        assert_eq!(
            format!("{} | {} | {:?}", err.message, err.location(), err.hint),
            "unknown task `biuld` | /p/.rush | Some(\"did you mean `build`?\")"
        );
        assert_eq!(err.kind, ConfigErrorKind::UnknownTask);
        let err = file.task("zzz").unwrap_err(); // no such task on purpose
        assert_eq!(
            err.hint.as_deref(),
            Some("`taskrush --list` shows the tasks")
        );
    }

    #[test]
    fn yaml_syntax_errors_have_a_position_and_no_position_in_the_message() {
        check_err(
            "tasks:\n  a:\n    cmd: [a, b\n  b: {cmd: b}\n",
            "invalid YAML: did not find expected ',' or ']', while parsing a flow sequence | .rush:4:4 | -",
        );
        check_err(
            "tasks:\n  a:\n    cmd: x\n   bad: y\n",
            "invalid YAML: did not find expected key, while parsing a block mapping | .rush:4:4 | -",
        );
        check_err(
            "tasks:\n  a: {cmd: \"x}\n",
            "invalid YAML: found unexpected end of stream, while scanning a quoted scalar | .rush:3:1 | -",
        );
        check_err(
            "tasks:\n  a: {cmd: a}\n---\ntasks: {}\n",
            "a `.rush` file must hold a single YAML document | .rush:3:1 | remove the second `---` and everything after it, or merge the documents",
        );
    }

    #[test]
    fn unknown_keys_are_reported_where_they_are_with_a_suggestion() {
        check_err(
            "tasks:\n  build:\n    cmd: cargo build\n    dependson: [lint]\n",
            "unknown key `dependson` in task `build` | .rush:4:5 | did you mean `depends_on`?",
        );
        check_err(
            "tasks: {build: {cmd: b, descripton: x}}",
            "unknown key `descripton` in task `build` | .rush:1:25 | did you mean `description`?",
        );
        check_err(
            "tasks:\n  build:\n    cmd: b\n    \"zzz\": 1\n",
            "unknown key `zzz` in task `build` | .rush:4:5 | the keys allowed here are `cmd`, `description`, `depends_on`, `deps`, `cache_files`, `cache`, `outputs`, `env`, `dotenv`, `dir`, `before`, `after`, `plugins`",
        );
        check_err(
            "taks:\n  a: {cmd: a}\n",
            "unknown top-level key `taks` | .rush:1:1 | did you mean `tasks`?",
        );
        check_err(
            "tasks: {}\nplugins:\n  - name: x\n    verison: 1\n",
            "unknown key `verison` in plugin `x` | .rush:4:5 | did you mean `version`?",
        );
        check_err(
            "tasks: {}\nplugins:\n  - confg: {}\n    name: x\n",
            "unknown key `confg` in entry 1 of `plugins` | .rush:3:5 | did you mean `config`?",
        );
        check_err(
            "x: &d {cmd: a}\ntasks:\n  a:\n    <<: *d\n",
            "unknown top-level key `x` | .rush:1:1 | the keys allowed here are `tasks`, `plugins`, `dotenv`, `includes`",
        );
        check_err(
            "tasks:\n  a:\n    <<: {cmd: a}\n",
            "unknown key `<<` in task `a` | .rush:3:5 | YAML merge keys (`<<`) are not supported; write the keys out",
        );
    }

    #[test]
    fn repeated_keys_and_both_spellings_are_errors() {
        check_err(
            "tasks:\n  a:\n    deps: [b]\n    cmd: a\n    depends_on: [b]\n  b: {cmd: b}\n",
            "both `deps` and `depends_on` given in task `a` | .rush:5:5 | they are two spellings of the same field: keep only `depends_on`",
        );
        check_err(
            "tasks:\n  a: {cmd: a, cache_files: [x], cache: y}\n",
            "both `cache_files` and `cache` given in task `a` | .rush:2:33 | they are two spellings of the same field: keep only `cache_files`",
        );
        check_err(
            "tasks:\n  a:\n    cmd: a\n    cmd: b\n",
            "duplicate key `cmd` in task `a` | .rush:4:5 | -",
        );
        check_err(
            "tasks: {}\ntasks: {}\n",
            "duplicate key `tasks` at the top level | .rush:2:1 | -",
        );
        check_err(
            "plugins: [{name: p}]\ntasks:\n  a:\n    cmd: a\n    plugins: {p: {}, p: {x: 1}}\n",
            "plugin `p` is configured twice in task `a` | .rush:5:22 | merge the two settings into one",
        );
    }

    #[test]
    fn wrong_types_are_reported_at_the_value() {
        check_err(
            "tasks:\n  a:\n    cmd: [1, 2]\n",
            "`cmd` of task `a` must be a string, found a list | .rush:3:10 | -",
        );
        check_err(
            "tasks:\n  a:\n    cmd: {x: 1}\n",
            "`cmd` of task `a` must be a string, found a mapping | .rush:3:10 | -",
        );
        check_err(
            "tasks:\n  a:\n    cmd: a\n    env: 3\n",
            "`env` of task `a` must be a mapping from variable names to values, found a number | .rush:4:10 | write it as `env: {NAME: value}`",
        );
        check_err(
            "tasks:\n  a:\n    cmd: a\n    env:\n      - A=1\n",
            "`env` of task `a` must be a mapping from variable names to values, found a list | .rush:5:7 | write it as `env: {NAME: value}`",
        );
        check_err(
            "tasks:\n  a:\n    cmd: a\n    env: {A: [1]}\n",
            "`env.A` of task `a` must be a string, found a list | .rush:4:14 | -",
        );
        check_err(
            "tasks:\n  a:\n    cmd: a\n    env: {\"A=B\": 1}\n",
            "invalid variable name `A=B` in `env` of task `a` | .rush:4:11 | a variable name cannot be empty or contain `=` or a NUL byte",
        );
        check_err(
            "tasks:\n  a:\n    cmd: a\n    env: {\"A\\0B\": 1}\n",
            "invalid variable name `A\\0B` in `env` of task `a` | .rush:4:11 | a variable name cannot be empty or contain `=` or a NUL byte",
        );
        check_err(
            "tasks:\n  a:\n    cmd: a\n    before: \"x\\0\"\n",
            "`before` of task `a` contains a NUL byte (character 2 of the value) | .rush:4:13 | commands, variables and names cannot hold a NUL byte: remove the `\\0`",
        );
        check_err(
            "tasks:\n  a:\n    cmd: a\n    deps: {b: 1}\n",
            "`deps` of task `a` must be a task name or a list of task names, found a mapping | .rush:4:11 | -",
        );
        check_err(
            "tasks:\n  a:\n    cmd: a\n    deps: [b, [c]]\n",
            "every item of `deps` of task `a` must be a string, found a list | .rush:4:15 | -",
        );
        check_err(
            "tasks:\n  a:\n    cmd: a\n    cache_files: {x: 1}\n",
            "`cache_files` of task `a` must be a glob or a list of globs, found a mapping | .rush:4:18 | -",
        );
        check_err(
            "tasks:\n  a: cargo build\n",
            "task `a` must be a mapping, found a string | .rush:2:6 | write it as `a: {cmd: ...}`",
        );
        check_err(
            "tasks: [a, b]\n",
            "`tasks` must be a mapping from task names to tasks, found a list | .rush:1:8 | -",
        );
        check_err(
            "tasks:\n  [a]: {cmd: a}\n",
            "a task name must be a string, found a list | .rush:2:3 | -",
        );
        check_err(
            "tasks:\n  a:\n    cmd: a\n    plugins: [x]\n",
            "`plugins` of task `a` must be a mapping from plugin names to settings, found a list | .rush:4:14 | write it as `plugins: {plugin-name: {setting: value}}`",
        );
    }

    #[test]
    fn a_file_that_is_not_a_mapping_with_tasks_is_an_error() {
        let hint = "a `.rush` file lists its tasks under `tasks:`; `tasks: {}` for none";
        check_err(
            "",
            &format!("missing top-level key `tasks` | .rush:1:1 | {hint}"),
        );
        check_err(
            "# only a comment\n",
            &format!("missing top-level key `tasks` | .rush:2:1 | {hint}"),
        );
        check_err(
            "plugins: []\n",
            &format!("missing top-level key `tasks` | .rush:1:1 | {hint}"),
        );
        check_err(
            "- a\n- b\n",
            "a `.rush` file must be a mapping with a `tasks:` key, found a list | .rush:1:1 | -",
        );
        check_err(
            "just text\n",
            "a `.rush` file must be a mapping with a `tasks:` key, found a string | .rush:1:1 | -",
        );
    }

    #[test]
    fn plugin_entries_are_checked() {
        check_err(
            "tasks: {}\nplugins:\n  - version: 1\n",
            "entry 1 of `plugins` has no `name` | .rush:3:5 | add `name: <plugin name>`",
        );
        check_err(
            "tasks: {}\nplugins:\n  - name: x\n    type: wsam\n",
            "unknown plugin type `wsam` in plugin `x` | .rush:4:11 | did you mean `wasm`?",
        );
        check_err(
            "tasks: {}\nplugins:\n  - name: x\n    type: python\n",
            "unknown plugin type `python` in plugin `x` | .rush:4:11 | the types are `external`, `wasm` and `native`",
        );
        check_err(
            "tasks: {}\nplugins:\n  - name: x\n    required: yes\n",
            "`required` of plugin `x` must be `true` or `false`, found a string | .rush:4:15 | -",
        );
        check_err(
            "tasks: {}\nplugins:\n  - slack-notify\n",
            "entry 1 of `plugins` must be a mapping, found a string | .rush:3:5 | write it as `- name: slack-notify`, with `version:`, `config:` etc. below",
        );
        check_err(
            "tasks: {}\nplugins:\n  slack: {}\n",
            "`plugins` must be a list of plugins, found a mapping | .rush:3:3 | write each plugin as a list item: `- name: slack-notify`",
        );
        check_err(
            "tasks: {}\nplugins:\n  - name: x\n  - name: y\n  - name: \"x\"\n",
            "plugin `x` is declared twice | .rush:5:11 | remove one of the two entries",
        );
        check_err(
            "tasks: {}\nplugins:\n  - name: x\n    config: {a: !custom 1}\n",
            "`config` of plugin `x` cannot hold a value with a YAML tag | .rush:4:17 | -",
        );
        check_err(
            "plugins:\n  - name: slack-notify\ntasks:\n  a:\n    cmd: a\n    plugins:\n      slak-notify: {}\n",
            "task `a` configures plugin `slak-notify`, which is not declared under `plugins:` | .rush:7:7 | did you mean `slack-notify`?",
        );
        check_err(
            "tasks:\n  a:\n    cmd: a\n    plugins: {lint: {}}\n",
            "task `a` configures plugin `lint`, which is not declared under `plugins:` | .rush:4:15 | declare it in the top-level `plugins:` list: `- name: lint`",
        );
    }

    #[test]
    fn a_missing_dependency_is_reported_at_its_name_in_any_style() {
        let expected = "task `test` depends on `biuld`, which does not exist | .rush:{} | did you mean `build`?";
        for (src, at) in [
            (
                "tasks:\n  build: {cmd: b}\n  test:\n    cmd: t\n    deps: [lint, biuld]\n  lint: {cmd: l}\n",
                "5:18",
            ),
            (
                "tasks:\n  build: {cmd: b}\n  test:\n    cmd: t\n    deps:\n      - lint\n      - biuld\n  lint: {cmd: l}\n",
                "7:9",
            ),
            (
                "tasks:\n  build: {cmd: b}\n  test:\n    cmd: t\n    deps: biuld\n",
                "5:11",
            ),
            (
                "tasks:\n  build: {cmd: b}\n  test:\n    cmd: t\n    deps: [\"biuld\"]\n",
                "5:12",
            ),
            (
                "tasks: {build: {cmd: b}, test: {cmd: t, depends_on: ['biuld']}}\n",
                "1:54",
            ),
            (
                "tasks:\n  build: {cmd: b}\n  test:\n    cmd: t\n    deps: [\n      biuld\n    ]\n",
                "6:7",
            ),
        ] {
            check_err(src, &expected.replace("{}", at));
        }
        check_err(
            "tasks:\n  a:\n    cmd: a\n    deps: [zzz]\n",
            "task `a` depends on `zzz`, which does not exist | .rush:4:12 | -",
        );
    }

    #[test]
    fn dependency_cycles_name_the_cycle_and_point_at_its_first_edge() {
        check_err(
            "tasks:\n  a:\n    cmd: a\n    deps: [b]\n  b:\n    cmd: b\n    deps: [a]\n",
            "dependency cycle: a -> b -> a | .rush:4:12 | remove one of these dependencies",
        );
        check_err(
            "tasks:\n  a:\n    cmd: a\n    deps: [a]\n",
            "dependency cycle: a -> a | .rush:4:12 | remove one of these dependencies",
        );
        check_err(
            "tasks:\n  top: {deps: [x]}\n  x: {cmd: x, deps: [ok, y]}\n  ok: {cmd: ok}\n  y: {cmd: y, deps: [z]}\n  z: {cmd: z, deps: [x]}\n",
            "dependency cycle: x -> y -> z -> x | .rush:3:26 | remove one of these dependencies",
        );
    }

    #[test]
    fn bad_globs_are_reported_with_globsets_reason() {
        check_err(
            "tasks:\n  a:\n    cmd: a\n    cache_files: [ok/**, \"src/[a.rs\"]\n",
            "invalid glob `src/[a.rs` in `cache_files` of task `a`: unclosed character class; missing ']' | .rush:4:26 | -",
        );
        check_err(
            "tasks:\n  a:\n    cmd: a\n    cache:\n      - '{a,b'\n",
            "invalid glob `{a,b` in `cache` of task `a`: unclosed alternate group; missing '}' (maybe escape '{' with '[{]'?) | .rush:5:9 | -",
        );
    }

    #[test]
    fn outputs_are_globs_that_stay_in_the_project() {
        let file = parse_ok("tasks:\n  a:\n    cmd: a\n    cache_files: [x]\n    outputs: dist\n");
        assert_eq!(task(&file, "a").outputs, ["dist"]);
        check_err(
            "tasks:\n  a:\n    cmd: a\n    outputs: [dist/**, \"../elsewhere/**\"]\n",
            "invalid glob `../elsewhere/**` in `outputs` of task `a`: outputs must stay inside the project: no `..` and no absolute path | .rush:4:24 | -",
        );
        check_err(
            "tasks:\n  a:\n    cmd: a\n    outputs: [\"out/[x\"]\n",
            "invalid glob `out/[x` in `outputs` of task `a`: unclosed character class; missing ']' | .rush:4:15 | -",
        );
    }

    #[test]
    fn a_task_that_does_nothing_is_an_error() {
        let hint = "give it a `cmd:` to run, or `depends_on:` to group other tasks";
        check_err(
            "tasks:\n  a:\n",
            &format!("task `a` has no `cmd` and no `depends_on` | .rush:2:3 | {hint}"),
        );
        check_err(
            "tasks:\n  b: {cmd: b}\n  \"a\": {description: x}\n",
            &format!("task `a` has no `cmd` and no `depends_on` | .rush:3:3 | {hint}"),
        );
    }

    /// `n` tasks `t0`..: each with a command, a description and a dependency
    /// on the one before; `t0` depends on the last one when `cycle`.
    fn chain(n: usize, cycle: bool) -> String {
        let mut src = String::from("tasks:\n");
        for i in 0..n {
            src.push_str(&format!(
                "  t{i}:\n    cmd: echo {i}\n    description: task number {i}\n"
            ));
            match i {
                0 if cycle => src.push_str(&format!("    deps: [t{}]\n", n - 1)),
                0 => {}
                _ => src.push_str(&format!("    deps: [t{}]\n", i - 1)),
            }
        }
        src
    }

    #[test]
    fn ten_thousand_tasks_in_a_chain_parse() {
        let file = parse_ok(&chain(10_000, false));
        assert_eq!(file.tasks.len(), 10_000);
        assert_eq!(task(&file, "t9999").depends_on, ["t9998"]);
        assert_eq!(task(&file, "t0").line, 2);
        assert_eq!(task(&file, "t1").line, 5);
        assert_eq!(task(&file, "t9999").line, 2 + 3 + 4 * 9_998);
    }

    #[test]
    fn a_cycle_through_ten_thousand_tasks_is_found_without_overflowing_the_stack() {
        check_err(
            &chain(10_000, true),
            "dependency cycle: t0 -> t9999 -> t9998 -> t9997 -> t9996 -> t9995 -> t9994 -> t9993 \
             -> ... 9985 more ... -> t7 -> t6 -> t5 -> t4 -> t3 -> t2 -> t1 -> t0 \
             | .rush:5:12 | remove one of these dependencies",
        );
    }

    /// Sources in many layouts, to compare the outline with the parser.
    const LAYOUTS: &[&str] = &[
        "tasks:\n  a: {cmd: a}\n  b:\n    cmd: b\n",
        "%YAML 1.2\n---\n# c\ntasks:   # comment\n\n  a:   # c\n    cmd: \"multi\n      line\"\n    env:\n      X: |\n        a: b\n\n         - c\n      Y: >-\n        folded\n  'b''s': {cmd: b}\n  \"c\\\"d\": {cmd: c}\n...\n",
        "{tasks: {a: {cmd: a}, b: {cmd: b, deps: [a]}}, plugins: [{name: p}, {name: q}]}",
        "plugins:\n- name: p\n  config:\n    k: |\n      - name: fake\n- name: q\ntasks:\n  a:\n    cmd: plain\n      continued\n  b: &anchor\n    cmd: b\n  c: *anchor\n",
        "tasks:\n    x:\n        cmd: a\n        deps:\n        - y\n    y:\n        cmd: 'it''s: fine # not a comment'\n    z: !!map\n        cmd: z\n",
        "tasks: {\n  a: {cmd: a},\n  # comment\n  b: {\n    cmd: \"}\",\n  },\n}\nplugins:\n  - {name: p}\n  -   name: q\n",
        "tasks:\n  ünï: {cmd: ü}\n  ascii: {cmd: a}\n",
        "---\ntasks:\n  a:\n    cmd: a\n  plugins:\n    cmd: p\n  tasks:\n    cmd: t\n",
        "tasks:\r\n  a:\r\n    cmd: |\r\n      x\r\n  b:\t\r\n    cmd: 'b'\r\nplugins:\r\n  - name: p\r\n",
        "\u{feff}tasks:\n  a: {cmd: a}\n  b: {cmd: b}\n",
        "tasks:\n  a:\n    cmd: >\n      folded\n\n      text: with colon\n  b:\n    env: {X: \"}\"}\n    cmd: b # trailing: comment\n",
    ];

    #[test]
    fn the_outline_agrees_with_the_parser_on_every_layout() {
        for src in LAYOUTS {
            let ctx = Ctx::new(None);
            let raw = match deserialize(&ctx, src) {
                Ok(raw) => raw,
                Err(e) => panic!("{e}\n{src}"),
            };
            let outline = outline::scan(src).unwrap_or_else(|| panic!("outline gave up on\n{src}"));
            let names: Vec<&str> = outline.tasks.iter().map(|k| k.text.as_str()).collect();
            let expected: Vec<&str> = raw.tasks.iter().map(|t| t.task.name.as_str()).collect();
            assert_eq!(names, expected, "\n{src}");
            for (key, task) in outline.tasks.iter().zip(&raw.tasks) {
                let located = locate(src, Target::TaskKey(task.entry));
                assert_eq!(
                    Some((key.pos.line, key.pos.column)),
                    located,
                    "task `{}` in\n{src}",
                    task.task.name
                );
            }
            assert_eq!(outline.plugins.len(), raw.plugins.len(), "\n{src}");
            for (index, pos) in outline.plugins.iter().enumerate() {
                let located = locate(src, Target::PluginItem(index));
                assert_eq!(
                    Some(pos.line),
                    located.map(|(line, _)| line),
                    "plugin {index} in\n{src}"
                );
            }
        }
    }

    #[test]
    fn lines_come_from_targeted_passes_when_the_outline_gives_up() {
        // An explicit key (`? `) is beyond the outline scanner.
        let src = "tasks:\n  ? a\n  : cmd: a\n  b:\n    cmd: b\n";
        assert!(outline::scan(src).is_none());
        let file = parse_ok(src);
        assert_eq!(task(&file, "a").line, 2);
        assert_eq!(task(&file, "b").line, 4);
    }

    #[test]
    fn strip_positions_removes_only_positions() {
        assert_eq!(
            strip_positions(
                "did not find expected key at line 4 column 4, while parsing a block mapping at line 2 column 3"
            ),
            "did not find expected key, while parsing a block mapping"
        );
        assert_eq!(
            strip_positions("look at this at position 12"),
            "look at this"
        );
        assert_eq!(strip_positions("at line x"), "at line x");
    }
}

/// A bound on nesting, checked before the YAML parser sees the source.
///
/// libyaml's scanner costs O(depth) per token inside flow collections
/// (`[`, `{`), so a file nesting them 40,000 deep takes seconds to parse:
/// [`check`] refuses flow collections deeper than [`MAX_NESTING`] in one
/// linear pass. Block nesting costs libyaml nothing extra; serde_norway
/// stops it at the same depth (its recursion limit, 128), reworded in
/// [`yaml_error_from`].
///
/// The scan knows YAML well enough to count the flow collections libyaml
/// would open: it skips comments, quoted scalars and block scalars (`|`,
/// `>`), and in block context counts a `[` or `{` only where a node
/// starts (not in `cmd: test [ -f x ]`).
mod nesting {
    use super::{MAX_NESTING, MAX_NODES};

    /// 1-based line and column of the flow collection that opens level
    /// `MAX_NESTING + 1`, if any.
    ///
    /// Where the scan cannot tell what libyaml will do, it counts: a wrong
    /// guess may refuse a pathological file (128 brackets opened in a
    /// string), never let a deep one through.
    #[cfg(test)]
    pub(super) fn too_deep(source: &str) -> Option<(usize, usize)> {
        deeper_than(source, MAX_NESTING)
    }

    /// [`too_deep`] with another limit.
    #[cfg(test)]
    fn deeper_than(source: &str, limit: usize) -> Option<(usize, usize)> {
        scan(source, limit, usize::MAX).map(|(_, line, column)| (line, column))
    }

    /// Which bound a file exceeds.
    #[derive(Debug, PartialEq, Eq)]
    pub(super) enum Exceeded {
        /// Flow collections nest deeper than [`MAX_NESTING`].
        Depth,
        /// More than [`MAX_NODES`] nodes.
        Nodes,
    }

    /// The first bound `source` exceeds, with the 1-based line and column
    /// of the token that exceeds it.
    pub(super) fn check(source: &str) -> Option<(Exceeded, usize, usize)> {
        scan(source, MAX_NESTING, MAX_NODES)
    }

    /// `source` with every line break libyaml knows (`\r\n`, `\r`, NEL,
    /// LS, PS) made a `\n`: the scan must see the lines libyaml sees, or a
    /// comment ended by a `\r` would hide what follows it.
    fn unix_breaks(source: &str) -> std::borrow::Cow<'_, str> {
        const BREAKS: [char; 4] = ['\r', '\u{85}', '\u{2028}', '\u{2029}'];
        if !source.contains(BREAKS) {
            return std::borrow::Cow::Borrowed(source);
        }
        std::borrow::Cow::Owned(source.replace("\r\n", "\n").replace(BREAKS, "\n"))
    }

    fn scan(source: &str, limit: usize, max_nodes: usize) -> Option<(Exceeded, usize, usize)> {
        let source = &*unix_breaks(source);
        let b = source.as_bytes();
        // Nodes (scalars, collections, entries) seen: the parser holds an
        // event for each, all at once.
        let mut nodes = 0usize;
        let blank = |i: usize| matches!(b.get(i), None | Some(b' ' | b'\t' | b'\r' | b'\n'));
        let flow_indicator = |i: usize| matches!(b.get(i), Some(b',' | b'[' | b']' | b'{' | b'}'));
        let mut depth = 0usize;
        let mut i = 0usize;
        let mut line = 1usize;
        let mut line_start = 0usize;
        // A token (not the middle of a plain scalar) may start here.
        let mut node_start = true;
        // Block context: a plain scalar is open (it may go on next line).
        let mut plain_open = false;
        // Block context, columns (0-based, in bytes): of the last `-`, `?`
        // or scalar that started a token on this line (a block scalar's
        // parent), of the last scalar that started a token, and of the
        // innermost block collection seen (a key or an entry).
        let mut entry_col: Option<usize> = None;
        let mut scalar_col: Option<usize> = None;
        let mut collection_col: Option<usize> = None;
        // In a block scalar: (its parent's indent, its content's indent).
        let mut block_scalar: Option<(usize, Option<usize>)> = None;
        let mut at_line_start = true;
        // The first token of a line, in block context.
        let mut line_first = false;
        // In characters, for the error only.
        let col = |i: usize, line_start: usize| {
            source[line_start..i]
                .bytes()
                .filter(|c| c & 0xC0 != 0x80)
                .count()
        };
        let skip_line = |i: &mut usize| {
            while *i < b.len() && b[*i] != b'\n' {
                *i += 1;
            }
        };
        macro_rules! node {
            ($i:expr, $line:expr, $line_start:expr) => {
                nodes += 1;
                if nodes > max_nodes {
                    return Some((Exceeded::Nodes, $line, col($i, $line_start) + 1));
                }
            };
        }
        while i < b.len() {
            if at_line_start {
                at_line_start = false;
                let mut j = i;
                while b.get(j) == Some(&b' ') {
                    j += 1;
                }
                let indent = j - i;
                let empty = matches!(b.get(j), None | Some(b'\n' | b'\r'));
                if let Some((parent, content)) = block_scalar {
                    let inside = match content {
                        _ if empty => true,
                        Some(content) => indent >= content,
                        None if indent > parent => {
                            block_scalar = Some((parent, Some(indent)));
                            true
                        }
                        None => false,
                    };
                    if inside {
                        skip_line(&mut i);
                        at_line_start = true;
                        if i < b.len() {
                            i += 1;
                            line += 1;
                            line_start = i;
                        }
                        continue;
                    }
                    block_scalar = None;
                }
                i = j;
                if depth > 0 || empty {
                    continue;
                }
                entry_col = None;
                let continues = plain_open && collection_col.is_none_or(|c| indent > c);
                node_start = !continues;
                plain_open = continues;
                line_first = true;
                let rest = &b[i..];
                if indent == 0
                    && (rest.starts_with(b"---") || rest.starts_with(b"..."))
                    && blank(i + 3)
                {
                    i += 3;
                    node_start = true;
                    plain_open = false;
                    collection_col = None;
                }
                continue;
            }
            let c = b[i];
            let first = std::mem::take(&mut line_first);
            let after_blank = i == line_start || matches!(b[i - 1], b' ' | b'\t');
            match c {
                b'\n' => {
                    i += 1;
                    line += 1;
                    line_start = i;
                    at_line_start = true;
                }
                b' ' | b'\t' | b'\r' => {
                    line_first = first;
                    i += 1;
                }
                b'#' if after_blank => {
                    skip_line(&mut i);
                    plain_open = false;
                    if depth > 0 {
                        node_start = true;
                    }
                }
                b'[' | b'{' if depth > 0 || node_start || first => {
                    depth += 1;
                    if depth > limit {
                        return Some((Exceeded::Depth, line, col(i, line_start) + 1));
                    }
                    node!(i, line, line_start);
                    node_start = true;
                    plain_open = false;
                    i += 1;
                }
                b']' | b'}' if depth > 0 => {
                    depth -= 1;
                    node_start = true;
                    i += 1;
                }
                b',' if depth > 0 => {
                    node_start = true;
                    i += 1;
                }
                b'\'' | b'"' if node_start => {
                    node!(i, line, line_start);
                    if depth == 0 {
                        entry_col = Some(i - line_start);
                        scalar_col = entry_col;
                    }
                    i += 1;
                    while i < b.len() {
                        match b[i] {
                            b'\\' if c == b'"' => {
                                i += 1;
                                if b.get(i) == Some(&b'\n') {
                                    line += 1;
                                    line_start = i + 1;
                                }
                            }
                            b'\'' if c == b'\'' && b.get(i + 1) == Some(&b'\'') => i += 1,
                            q if q == c => break,
                            b'\n' => {
                                line += 1;
                                line_start = i + 1;
                            }
                            _ => {}
                        }
                        i += 1;
                    }
                    i += 1;
                    node_start = true;
                    plain_open = false;
                }
                b'|' | b'>' if depth == 0 && node_start => {
                    node!(i, line, line_start);
                    let parent = entry_col.unwrap_or(i - line_start);
                    block_scalar = Some((parent, None));
                    // An explicit indentation indicator fixes the content's indent.
                    let header_end = source[i..].find('\n').map_or(b.len(), |n| i + n);
                    if let Some(d) = source[i + 1..header_end]
                        .bytes()
                        .take_while(|c| !matches!(c, b' ' | b'\t' | b'#'))
                        .find(u8::is_ascii_digit)
                    {
                        block_scalar = Some((parent, Some(parent + usize::from(d - b'0'))));
                    }
                    i = header_end;
                }
                b'-' | b'?' if depth == 0 && node_start && blank(i + 1) => {
                    node!(i, line, line_start);
                    entry_col = Some(i - line_start);
                    collection_col = entry_col;
                    i += 1;
                }
                b'?' if depth > 0 && node_start && blank(i + 1) => i += 1,
                b':' if depth == 0 && blank(i + 1) => {
                    node_start = true;
                    plain_open = false;
                    if scalar_col.is_some() {
                        collection_col = scalar_col;
                    }
                    i += 1;
                }
                b':' if depth > 0 && (node_start || blank(i + 1) || flow_indicator(i + 1)) => {
                    node_start = true;
                    i += 1;
                }
                b'&' | b'!' | b'*' if node_start => {
                    while !(blank(i) || (depth > 0 && flow_indicator(i))) {
                        i += 1;
                    }
                }
                _ => {
                    if node_start {
                        node!(i, line, line_start);
                    }
                    if depth == 0 {
                        if node_start {
                            entry_col = Some(i - line_start);
                            scalar_col = entry_col;
                        }
                        plain_open = true;
                    }
                    node_start = false;
                    i += 1;
                }
            }
        }
        None
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn flow(n: usize) -> String {
            format!("x: {}1{}\n", "[".repeat(n), "]".repeat(n))
        }

        #[test]
        fn flow_collections_deeper_than_the_limit_are_found() {
            assert_eq!(too_deep(&flow(MAX_NESTING)), None);
            assert_eq!(too_deep(&flow(MAX_NESTING + 1)), Some((1, 4 + MAX_NESTING)));
            let mapping = format!("a:\n  b: {}1{}\n", "{k: ".repeat(200), "}".repeat(200));
            assert_eq!(too_deep(&mapping), Some((2, 6 + 4 * MAX_NESTING)));
        }

        #[test]
        fn brackets_in_scalars_comments_and_block_scalars_are_not_counted() {
            let deep = "[".repeat(MAX_NESTING + 5);
            for source in [
                format!("cmd: echo {deep}\n"),
                format!("cmd: '{deep}'\n"),
                format!("cmd: \"a\\\"{deep}\"\n"),
                format!("# {deep}\ncmd: x # {deep}\n"),
                format!("cmd: |\n  {deep}\n\n  {deep}\nnext: 1\n"),
                format!("- key: >-\n    {deep}\n  other: 1\n"),
                format!("x: [a, '{deep}', \"{deep}\"]\n"),
            ] {
                assert_eq!(too_deep(&source), None, "{source}");
            }
        }

        #[test]
        fn what_only_looks_like_a_string_or_a_comment_hides_nothing() {
            let deep = "[".repeat(200);
            // After a document marker, a node starts.
            assert!(too_deep(&format!("--- {deep}\n")).is_some());
            // In flow context a quote inside a plain scalar is a character.
            assert!(too_deep(&format!("x: [a \"{deep}\n")).is_some());
            assert!(too_deep(&format!("x: [a:'{deep}\n")).is_some());
            // A quote on a line continuing a plain scalar is a character.
            assert!(too_deep(&format!("key: a\n  \"x\ny: {deep}\n")).is_some());
            // A line less indented than the plain scalar's collection starts anew.
            assert!(too_deep(&format!("a:\n  key: x\n- {deep}\n")).is_some());
            // JSON-style flow mappings still skip their strings.
            let json = format!("x: {{\"a\":\"{deep}\", \"b\": [\"{deep}\"]}}\n");
            assert_eq!(too_deep(&json), None);
        }

        /// How deep the flow collections of a parsed value nest (a
        /// one-pair mapping in a list counts for nothing: `[a: b]` has it
        /// without a `{`).
        fn value_depth(v: &serde_norway::Value) -> usize {
            match v {
                serde_norway::Value::Sequence(items) => {
                    1 + items
                        .iter()
                        .map(|item| match item {
                            serde_norway::Value::Mapping(m) if m.len() == 1 => m
                                .iter()
                                .map(|(k, v)| value_depth(k).max(value_depth(v)))
                                .max()
                                .unwrap_or(0),
                            item => value_depth(item),
                        })
                        .max()
                        .unwrap_or(0)
                }
                serde_norway::Value::Mapping(m) => {
                    1 + m
                        .iter()
                        .map(|(k, v)| value_depth(k).max(value_depth(v)))
                        .max()
                        .unwrap_or(0)
                }
                serde_norway::Value::Tagged(t) => value_depth(&t.value),
                _ => 0,
            }
        }

        /// Random YAML-ish text after `x: ` on one line (so that every
        /// collection is a flow collection): whenever libyaml parses it,
        /// the scan counts at least as deep as the value nests.
        #[test]
        fn the_scan_never_counts_less_than_the_parser_nests() {
            const ALPHABET: &[&str] = &[
                "[", "]", "{", "}", "\"", "'", ":", " ", "-", "#", "a", "|", ">", ",", "&a ", "*a",
                "!t ", "? ", "\\", ": ", "- ", "---", "''",
            ];
            // Every line break libyaml knows, for texts that span lines.
            const BREAKS: &[&str] = &["\n", "\r", "\r\n", "\u{85}", "\u{2028}", "\u{2029}"];
            let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
            let mut next = || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state
            };
            let mut parsed = 0;
            for round in 0..300_000 {
                let len = (next() % 24) as usize;
                // A third of the texts span lines, inside a flow collection
                // (where every collection is a flow one).
                let multi_line = round % 3 == 0;
                let mut text = String::from(if multi_line { "x: [" } else { "x: " });
                for _ in 0..len {
                    let pick = next() % (ALPHABET.len() as u64 + 2);
                    text.push_str(match pick as usize {
                        n if n < ALPHABET.len() => ALPHABET[n],
                        n if multi_line && n == ALPHABET.len() => "\n    ",
                        _ if multi_line => BREAKS[(next() % BREAKS.len() as u64) as usize],
                        _ => " ",
                    });
                }
                text.push('\n');
                let Ok(value) = serde_norway::from_str::<serde_norway::Value>(&text) else {
                    continue;
                };
                parsed += 1;
                // The root mapping is block style: one level is not flow.
                let depth = value_depth(&value).saturating_sub(1);
                for limit in 0..depth {
                    assert!(
                        deeper_than(&text, limit).is_some(),
                        "{text:?} nests {depth} deep, scan says not deeper than {limit}"
                    );
                }
            }
            assert!(parsed > 1000, "{parsed}");
        }

        #[test]
        fn more_values_than_the_limit_are_found_and_ten_thousand_tasks_are_far_below() {
            let list = format!("x: [{}]\n", vec!["1"; MAX_NODES].join(","));
            let (exceeded, line, _) = check(&list).expect("too many");
            assert_eq!((exceeded, line), (Exceeded::Nodes, 1));
            let tasks: String = (0..10_000)
                .map(|i| format!("  t{i}:\n    cmd: 'true'\n    description: task number {i}\n"))
                .collect();
            assert_eq!(check(&format!("tasks:\n{tasks}")), None);
        }

        #[test]
        fn a_line_break_other_than_newline_hides_nothing() {
            let deep = "[".repeat(200);
            for br in ["\r", "\r\n", "\u{85}", "\u{2028}", "\u{2029}"] {
                for source in [
                    format!("# c{br}x: {deep}\n"),
                    format!("y: |{br}  text{br}x: {deep}\n"),
                    format!("y: 'a{br}'{br}x: {deep}\n"),
                ] {
                    let found = too_deep(&source);
                    assert!(found.is_some(), "{source:?}");
                }
            }
            assert_eq!(too_deep("# c\rx: [[1]]\r"), None);
        }

        #[test]
        fn a_block_scalar_does_not_hide_what_follows_it() {
            let source = format!("- key: |\n    text\n  other: {}\n", "[".repeat(200));
            assert_eq!(too_deep(&source), Some((3, 10 + MAX_NESTING)));
            let source = format!("a: &x {}\n", "[".repeat(200));
            assert_eq!(too_deep(&source), Some((1, 7 + MAX_NESTING)));
        }
    }
}
