//! `includes:`: a `.rush` file that includes others (a monorepo's
//! packages), merged into one set of tasks.
//!
//! `includes: {web: packages/web}` reads `packages/web/.rush` (a directory
//! means the `.rush`, `.rush.yml` or `.rush.yaml` in it; a file is read as
//! named), relative to the including file's directory, and adds its tasks
//! as `web:NAME`. Included files may include others (`web:ui:NAME`).
//!
//! Rules, checked here on the merged tasks (the parser leaves names in
//! `depends_on` unchecked in a tree of includes):
//! - A name in `depends_on` of an included file's task is looked up in
//!   that file first (`web:NAME`), then among all tasks (`api:build`,
//!   or a root task `gen`).
//! - A task of the root named like a namespaced one (`web:build` in the
//!   root, `build` in `web`'s file) is an error naming both definitions.
//! - A file that includes itself, directly or not, is an error showing the
//!   chain of includes with their positions.
//! - Every included file is under the root file's directory, counts toward
//!   [`MAX_INCLUDED_FILES`], and has the limits of any `.rush` file (size,
//!   nesting, values); all files together hold at most [`MAX_TREE_BYTES`].
//! - Only the root file declares `plugins:`; tasks of included files may
//!   configure those plugins.
//! - An included task runs in its file's directory: the merge sets its
//!   `dir` to that directory (or joins its own `dir:` onto it), so its
//!   `cache_files` and `outputs` globs are relative to it (its `dotenv:`
//!   files to its file's directory), and the cache
//!   key's paths to the root, as for any task with `dir`
//!   ([`Task::working_dir`]).
//!
//! [`Task::working_dir`]: crate::config::rush_file::Task::working_dir

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::config_error::{ConfigError, did_you_mean};
use crate::config::rush_file::{self, RushFile, Task};
use crate::config::whole_file;

/// The most files a tree of includes may hold, the root's included.
pub(crate) const MAX_INCLUDED_FILES: usize = 256;

/// The most bytes of `.rush` source a tree of includes may hold, all files
/// together: what one file may hold ([`whole_file::MAX_BYTES`]), so that a
/// project with includes costs no more memory than one without.
pub(crate) const MAX_TREE_BYTES: u64 = whole_file::MAX_BYTES;

/// The names a directory given to `includes:` is searched for, in order.
const FILE_NAMES: &[&str] = &[".rush", ".rush.yml", ".rush.yaml"];

/// What [`load`] read: the merged config, or the error; and the included
/// files it read (or tried to) either way, for change detection.
pub(crate) struct Loaded {
    pub(crate) result: Result<RushFile, ConfigError>,
    /// Every included file, with its content's digest (`None`: unreadable).
    pub(crate) files: Vec<(PathBuf, Option<blake3::Hash>)>,
}

/// Parses the root `.rush` file `path` (text `source`) and merges the
/// files it includes.
pub(crate) fn load(path: &Path, source: &str) -> Loaded {
    let mut files = Vec::new();
    let result = load_into(path, source, &mut files);
    Loaded { result, files }
}

/// One parsed file of the tree.
struct Part {
    config: RushFile,
    source: String,
    /// `web:` for the file included as `web` (`""` for the root).
    prefix: String,
    /// `None` for the root.
    file: Option<Arc<Path>>,
    /// The file's directory relative to the root's (`""` for the root).
    rel_dir: String,
}

fn load_into(
    path: &Path,
    source: &str,
    files: &mut Vec<(PathBuf, Option<blake3::Hash>)>,
) -> Result<RushFile, ConfigError> {
    let root = rush_file::parse_part(path, source, false)?;
    if root.includes.is_empty() {
        return Ok(root);
    }
    let project = std::fs::canonicalize(&root.root).unwrap_or_else(|_| root.root.clone());
    let mut parts = vec![Part {
        config: root,
        source: source.to_owned(),
        prefix: String::new(),
        file: None,
        rel_dir: String::new(),
    }];
    // The chain of includes from the root to the part being read:
    // (file, "FILE:L:C includes `NS`") links.
    let mut chain: Vec<(PathBuf, String)> = Vec::new();
    visit(0, &project, &mut parts, &mut chain, files)?;
    merge(parts)
}

/// Reads the files part `index` includes, depth first.
fn visit(
    index: usize,
    project: &Path,
    parts: &mut Vec<Part>,
    chain: &mut Vec<(PathBuf, String)>,
    files: &mut Vec<(PathBuf, Option<blake3::Hash>)>,
) -> Result<(), ConfigError> {
    let including = parts[index].config.path.clone();
    let including_canonical = std::fs::canonicalize(&including).unwrap_or(including.clone());
    let base = including
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    for include in parts[index].config.includes.clone() {
        let at = |message: String, hint: Option<String>| {
            ConfigError::new(&including, message)
                .with_hint(hint)
                .at(include.line, include.column)
        };
        let ns = &include.namespace;
        let target = base.join(&include.path);
        let file = if target.is_dir() {
            match FILE_NAMES
                .iter()
                .map(|n| target.join(n))
                .find(|f| f.is_file())
            {
                Some(f) => f,
                None => {
                    return Err(at(
                        format!(
                            "include `{ns}`: `{}` holds no `.rush` file",
                            target.display()
                        ),
                        Some(format!(
                            "create `{}`, or point `{ns}:` at the file to include",
                            target.join(".rush").display()
                        )),
                    ));
                }
            }
        } else {
            target
        };
        let canonical = match std::fs::canonicalize(&file) {
            Ok(c) => c,
            Err(_) => {
                files.push((file.clone(), None));
                return Err(at(
                    format!("include `{ns}`: `{}` does not exist", file.display()),
                    Some(
                        "paths in `includes` are relative to the including file's directory"
                            .to_owned(),
                    ),
                ));
            }
        };
        if !canonical.starts_with(project) {
            return Err(at(
                format!(
                    "include `{ns}`: `{}` is outside the project (`{}`)",
                    canonical.display(),
                    project.display()
                ),
                Some("include files under the root `.rush` file's directory".to_owned()),
            ));
        }
        let link = format!(
            "`{}:{}:{}` includes `{ns}`",
            including.display(),
            include.line,
            include.column
        );
        let in_chain = canonical == including_canonical
            || chain.iter().any(|(f, _)| *f == canonical)
            || std::fs::canonicalize(&parts[0].config.path).is_ok_and(|r| r == canonical);
        if in_chain {
            let mut links: Vec<&str> = chain.iter().map(|(_, l)| l.as_str()).collect();
            links.push(&link);
            return Err(at(
                format!(
                    "include cycle: {}, which is `{}` again",
                    links.join(", then "),
                    canonical.display()
                ),
                Some("remove one of these includes".to_owned()),
            ));
        }
        if parts.len() >= MAX_INCLUDED_FILES {
            return Err(at(
                format!("more than {MAX_INCLUDED_FILES} files included"),
                Some("include fewer files, or split the project".to_owned()),
            ));
        }
        let bytes = match whole_file::read(&canonical) {
            Ok(b) => b,
            Err(e) => {
                files.push((canonical.clone(), None));
                return Err(
                    ConfigError::new(&canonical, format!("the file {}", e.what()))
                        .with_hint(Some(format!("it is included as `{ns}` by {link}"))),
                );
            }
        };
        files.push((canonical.clone(), Some(blake3::hash(&bytes))));
        let total: u64 =
            parts.iter().map(|p| p.source.len() as u64).sum::<u64>() + bytes.len() as u64;
        if total > MAX_TREE_BYTES {
            return Err(at(
                format!(
                    "include `{ns}`: the project's `.rush` files hold more than {} MiB together",
                    MAX_TREE_BYTES >> 20
                ),
                Some("include fewer or smaller files, or split the project".to_owned()),
            ));
        }
        let text = String::from_utf8(bytes)
            .map_err(|_| ConfigError::new(&canonical, "the file is not valid UTF-8".to_owned()))?;
        let config = rush_file::parse_part(&canonical, &text, true)?;
        let rel_dir = canonical
            .parent()
            .and_then(|d| d.strip_prefix(project).ok())
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        parts.push(Part {
            config,
            source: text,
            prefix: format!("{}{ns}:", parts[index].prefix),
            file: Some(Arc::from(canonical.as_path())),
            rel_dir,
        });
        let child = parts.len() - 1;
        chain.push((canonical, link));
        visit(child, project, parts, chain, files)?;
        chain.pop();
    }
    Ok(())
}

fn position(path: &Path, line: usize, column: usize) -> String {
    format!("{}:{line}:{column}", path.display())
}

/// The tasks of every part under one name space, dependencies resolved.
fn merge(parts: Vec<Part>) -> Result<RushFile, ConfigError> {
    let mut tasks: BTreeMap<String, Task> = BTreeMap::new();
    // Full name -> (part, name in its file).
    let mut origin: HashMap<String, (usize, String)> = HashMap::new();
    for (p, part) in parts.iter().enumerate() {
        for task in part.config.tasks.values() {
            let full = format!("{}{}", part.prefix, task.name);
            if let Some((q, name)) = origin.get(&full) {
                let other = &parts[*q];
                let theirs = &other.config.tasks[name];
                let describe = |part: &Part, t: &Task| {
                    let pos = position(&part.config.path, t.line, t.column);
                    match part.prefix.strip_suffix(':') {
                        Some(ns) => format!("`{}` of `{ns}` at `{pos}`", t.name),
                        None => format!("`{}` at `{pos}`", t.name),
                    }
                };
                // Reported at the root's (or the shallower) definition.
                return Err(ConfigError::new(
                    &other.config.path,
                    format!(
                        "task `{full}` is defined twice: {} and {}",
                        describe(other, theirs),
                        describe(part, task)
                    ),
                )
                .with_hint(Some(
                    "rename one of them, or change the namespace in `includes`".to_owned(),
                ))
                .at(theirs.line, theirs.column));
            }
            let mut merged = task.clone();
            merged.name = full.clone();
            merged.file = part.file.clone();
            // It runs in its file's directory (or its `dir:`, relative to
            // that file): its `cache_files` and `outputs` follow `dir`.
            if !part.rel_dir.is_empty() {
                // Its `dotenv:` files are relative to its own file too.
                merged.dotenv = task
                    .dotenv
                    .iter()
                    .map(|f| {
                        if f.starts_with('/') {
                            f.clone()
                        } else {
                            format!("{}/{f}", part.rel_dir)
                        }
                    })
                    .collect();
                merged.dir = Some(match task.dir.as_deref() {
                    None => part.rel_dir.clone(),
                    Some(d) if d.starts_with('/') => d.to_owned(),
                    Some(d) => format!("{}/{d}", part.rel_dir),
                });
            }
            origin.insert(full.clone(), (p, task.name.clone()));
            tasks.insert(full, merged);
        }
    }
    let root_plugins: Vec<&str> = parts[0]
        .config
        .plugins
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    // Resolve `depends_on`: the task's own file first, then every task.
    let mut resolved: Vec<(String, Vec<String>)> = Vec::new();
    for (full, task) in &tasks {
        let (p, name) = &origin[full];
        let part = &parts[*p];
        let mut deps = Vec::with_capacity(task.depends_on.len());
        for (i, dep) in task.depends_on.iter().enumerate() {
            let local = format!("{}{dep}", part.prefix);
            if tasks.contains_key(&local) {
                deps.push(local);
            } else if tasks.contains_key(dep) {
                deps.push(dep.clone());
            } else {
                let looked = if part.prefix.is_empty() {
                    String::new()
                } else {
                    format!(" (looked for `{local}`, then `{dep}`)")
                };
                let mut error = ConfigError::new(
                    &part.config.path,
                    format!("task `{full}` depends on `{dep}`, which does not exist{looked}"),
                )
                .with_hint(did_you_mean(dep, tasks.keys().map(String::as_str)));
                if let Some((line, column)) = rush_file::locate_dep(&part.source, name, i) {
                    error = error.at(line, column);
                }
                return Err(error);
            }
        }
        if part.file.is_some()
            && let Some(plugin) = task
                .plugins
                .keys()
                .find(|k| !root_plugins.contains(&k.as_str()))
        {
            return Err(ConfigError::new(
                &part.config.path,
                format!(
                    "task `{full}` configures plugin `{plugin}`, which the root `.rush` file does not declare under `plugins:`"
                ),
            )
            .with_hint(Some(format!(
                "declare it in `{}`: `- name: {plugin}`",
                parts[0].config.path.display()
            )))
            .at(task.line, task.column));
        }
        resolved.push((full.clone(), deps));
    }
    for (full, deps) in resolved {
        if let Some(task) = tasks.get_mut(&full) {
            task.depends_on = deps;
        }
    }
    // Cycles, across files.
    let index: HashMap<&str, usize> = tasks
        .keys()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let names: Vec<&String> = tasks.keys().collect();
    let edges: Vec<Vec<usize>> = tasks
        .values()
        .map(|t| t.depends_on.iter().map(|d| index[d.as_str()]).collect())
        .collect();
    if let Some((cycle, dep_index)) = rush_file::find_cycle(&edges) {
        let shown: Vec<&str> = cycle.iter().map(|&i| names[i].as_str()).collect();
        let first = names[cycle[0]];
        let (p, name) = &origin[first];
        let part = &parts[*p];
        let mut error = ConfigError::new(
            &part.config.path,
            format!("dependency cycle: {}", shown.join(" -> ")),
        )
        .with_hint(Some("remove one of these dependencies".to_owned()));
        if let Some((line, column)) = rush_file::locate_dep(&part.source, name, dep_index) {
            error = error.at(line, column);
        }
        return Err(error);
    }
    let weight = parts.iter().map(|p| p.config.weight).sum();
    let mut parts = parts.into_iter();
    let Some(root) = parts.next() else {
        unreachable!("the root is the first part")
    };
    let included_files = parts
        .filter_map(|p| p.file.map(|f| f.to_path_buf()))
        .collect();
    Ok(RushFile {
        tasks,
        included_files,
        weight,
        ..root.config
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, text: &str) -> PathBuf {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(&path, text).expect("write");
        path
    }

    fn load_root(dir: &Path) -> Result<RushFile, ConfigError> {
        let root = std::fs::canonicalize(dir).expect("dir").join(".rush");
        let text = std::fs::read_to_string(&root).expect("root");
        load(&root, &text).result
    }

    #[test]
    fn included_tasks_are_namespaced_and_resolve_local_names_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            ".rush",
            "includes:\n  web: packages/web\n  api: packages/api/.rush\ntasks:\n  gen:\n    cmd: echo gen\n  all:\n    deps: [web:build, api:build]\n",
        );
        write(
            dir.path(),
            "packages/web/.rush",
            "tasks:\n  build:\n    cmd: echo web\n    deps: [gen, api:build]\n    cache_files: [src/**]\n  gen:\n    cmd: echo web-gen\n",
        );
        write(
            dir.path(),
            "packages/api/.rush",
            "tasks:\n  build:\n    cmd: echo api\n    deps: [gen]\n",
        );
        let config = load_root(dir.path()).expect("loads");
        let names: Vec<&str> = config.tasks.keys().map(String::as_str).collect();
        assert_eq!(names, ["all", "api:build", "gen", "web:build", "web:gen"]);
        let web = &config.tasks["web:build"];
        assert_eq!(web.depends_on, ["web:gen", "api:build"]);
        assert_eq!(web.cache_files, ["src/**"]);
        assert_eq!(web.dir.as_deref(), Some("packages/web"));
        assert!(web.working_dir(&config.root).ends_with("packages/web"));
        assert_eq!(config.tasks["api:build"].depends_on, ["gen"]);
        assert_eq!(config.included_files.len(), 2);
    }

    #[test]
    fn a_root_task_named_like_a_namespaced_one_is_an_error_naming_both() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            ".rush",
            "includes:\n  web: web\ntasks:\n  web:build:\n    cmd: echo root\n",
        );
        write(
            dir.path(),
            "web/.rush",
            "tasks:\n  build:\n    cmd: echo web\n",
        );
        let err = load_root(dir.path()).expect_err("a clash");
        assert!(
            err.message.contains("task `web:build` is defined twice")
                && err.message.contains("/.rush:4:3`")
                && err.message.contains("`build` of `web` at `")
                && err.message.contains("web/.rush:2:3`"),
            "{}",
            err.message
        );
        assert_eq!((err.line, err.column), (Some(4), Some(3)));
    }

    #[test]
    fn an_include_cycle_is_an_error_showing_the_chain() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), ".rush", "includes:\n  a: a\ntasks: {}\n");
        write(dir.path(), "a/.rush", "includes:\n  b: ../b\ntasks: {}\n");
        write(dir.path(), "b/.rush", "includes:\n  a: ../a\ntasks: {}\n");
        let err = load_root(dir.path()).expect_err("a cycle");
        assert!(
            err.message.starts_with("include cycle: `"),
            "{}",
            err.message
        );
        assert!(
            err.message.contains(".rush:2:3` includes `a`, then `"),
            "{}",
            err.message
        );
        assert!(
            err.message.contains("b/.rush:2:3` includes `a`"),
            "{}",
            err.message
        );
        assert!(err.path.ends_with("b/.rush"));
    }

    #[test]
    fn a_missing_dependency_in_an_included_file_is_reported_there() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), ".rush", "includes:\n  web: web\ntasks: {}\n");
        write(
            dir.path(),
            "web/.rush",
            "tasks:\n  build:\n    cmd: x\n    deps: [lint]\n",
        );
        let err = load_root(dir.path()).expect_err("missing");
        assert_eq!(
            err.message,
            "task `web:build` depends on `lint`, which does not exist (looked for `web:lint`, then `lint`)"
        );
        assert!(err.path.ends_with("web/.rush"));
        assert_eq!((err.line, err.column), (Some(4), Some(12)));
    }

    #[test]
    fn a_cycle_across_files_is_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            ".rush",
            "includes:\n  web: web\ntasks:\n  all:\n    deps: [web:build]\n",
        );
        write(
            dir.path(),
            "web/.rush",
            "tasks:\n  build:\n    cmd: x\n    deps: [all]\n",
        );
        let err = load_root(dir.path()).expect_err("a cycle");
        assert_eq!(err.message, "dependency cycle: all -> web:build -> all");
    }

    #[test]
    fn an_included_file_cannot_declare_plugins() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), ".rush", "includes:\n  web: web\ntasks: {}\n");
        write(
            dir.path(),
            "web/.rush",
            "plugins:\n  - name: p\ntasks: {}\n",
        );
        let err = load_root(dir.path()).expect_err("plugins");
        assert_eq!(err.message, "an included file cannot declare `plugins`");
    }
}
