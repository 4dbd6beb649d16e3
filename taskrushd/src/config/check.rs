//! `check_rush`: what loading unsaved `.rush` text would say, without
//! loading it into the project (an editor's buffer, checked as it is
//! typed), and the symbols it defines, for a language server's
//! completion, hover, definitions and references.
//!
//! The text is parsed by the same code as a load (`includes::load`: the
//! files it includes are read from disk, relative to its path), on a parse
//! thread and with a parse turn like a load (see `projects.rs`); the
//! project's loaded config is not touched.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use taskrush_protocol::editor::{
    PositionEncoding, RushCheck, RushDiagnostic, TaskReference, TaskSymbol,
};

use super::config_error::ConfigError;
use super::rush_file::{self, RushFile};
use super::{includes, projects, whole_file};

/// The most whole-file passes spent finding where `depends_on` items are
/// written, counted in bytes parsed (as `rush_file` bounds its own passes):
/// past it, references have no position.
const MAX_LOCATE_BYTES: usize = 8_000_000;

/// Checks `text` as the content of `path` (absolute). Blocking: run it on
/// a parse thread.
pub(crate) fn check(path: &Path, text: &str, encoding: PositionEncoding) -> RushCheck {
    let mut sources = Sources::new(path, text);
    let mut diagnostics = Vec::new();
    let (tasks, plugins) = match includes::load(path, text).result {
        Ok(config) => {
            let warnings = projects::hidden_tasks_warnings(&config);
            for (line, task) in warnings.iter().zip(hidden_tasks(&config)) {
                let column = sources.column(&config.path, task.line, task.column, encoding);
                diagnostics.push(RushDiagnostic {
                    severity: "warning".into(),
                    message: line.to_owned(),
                    hint: None,
                    path: config.path.display().to_string(),
                    line: Some(task.line).filter(|l| *l > 0),
                    column: Some(column).filter(|c| *c > 0),
                });
            }
            (
                symbols(&config, &mut sources, encoding),
                config.plugins.iter().map(|p| p.name.clone()).collect(),
            )
        }
        Err(error) => {
            diagnostics.push(diagnostic(&error, &mut sources, encoding));
            (Vec::new(), Vec::new())
        }
    };
    RushCheck {
        file: path.display().to_string(),
        position_encoding: encoding,
        diagnostics,
        tasks,
        plugins,
    }
}

fn hidden_tasks(config: &RushFile) -> Vec<&rush_file::Task> {
    config
        .tasks
        .values()
        .filter(|t| taskrush_protocol::RESERVED_WORDS.contains(&t.name.as_str()))
        .collect()
}

fn diagnostic(
    e: &ConfigError,
    sources: &mut Sources,
    encoding: PositionEncoding,
) -> RushDiagnostic {
    let column = match (e.line, e.column) {
        (Some(line), Some(column)) => Some(sources.column(&e.path, line, column, encoding)),
        (_, column) => column,
    };
    RushDiagnostic {
        severity: "error".into(),
        message: e.message.clone(),
        hint: e.hint.clone(),
        path: e.path.display().to_string(),
        line: e.line,
        column,
    }
}

fn symbols(
    config: &RushFile,
    sources: &mut Sources,
    encoding: PositionEncoding,
) -> Vec<TaskSymbol> {
    let mut budget = MAX_LOCATE_BYTES;
    config
        .tasks
        .values()
        .map(|task| {
            let file = task.defined_in(config);
            let depends_on = task
                .depends_on
                .iter()
                .enumerate()
                .map(|(i, dep)| {
                    let (line, column) = sources
                        .locate_dep(file, &task.name, i, &mut budget)
                        .map(|(l, c)| (l, sources.column(file, l, c, encoding)))
                        .unwrap_or((0, 0));
                    TaskReference {
                        name: dep.clone(),
                        line,
                        column,
                    }
                })
                .collect();
            TaskSymbol {
                name: task.name.clone(),
                file: file.display().to_string(),
                line: task.line,
                column: sources.column(file, task.line, task.column, encoding),
                description: task.description.clone(),
                cmd: task.cmd.clone(),
                cached: !task.cache_files.is_empty(),
                depends_on,
            }
        })
        .collect()
}

/// The text of each file positions are in: the checked text for its path,
/// the included files as read from disk (once).
struct Sources {
    texts: HashMap<PathBuf, Option<String>>,
}

impl Sources {
    fn new(path: &Path, text: &str) -> Sources {
        let mut texts = HashMap::new();
        texts.insert(path.to_path_buf(), Some(text.to_owned()));
        Sources { texts }
    }

    fn text(&mut self, path: &Path) -> Option<&str> {
        self.texts
            .entry(path.to_path_buf())
            .or_insert_with(|| {
                whole_file::read(path)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
            })
            .as_deref()
    }

    /// `column` (characters) on 1-based `line` of `path`, in `encoding`.
    fn column(
        &mut self,
        path: &Path,
        line: usize,
        column: usize,
        encoding: PositionEncoding,
    ) -> usize {
        if encoding == PositionEncoding::Utf32 || line == 0 {
            return column;
        }
        match self.text(path).and_then(|t| t.lines().nth(line - 1)) {
            Some(text) => encoding.column(text, column),
            None => column,
        }
    }

    /// Where item `dep` of `depends_on` of task `name` (as merged: an
    /// included task's name has its namespace) is written in `path`.
    fn locate_dep(
        &mut self,
        path: &Path,
        name: &str,
        dep: usize,
        budget: &mut usize,
    ) -> Option<(usize, usize)> {
        let text = self.text(path)?.to_owned();
        // The name in its own file: the merged name less namespaces.
        let mut local = name;
        loop {
            if *budget < text.len() {
                return None;
            }
            *budget -= text.len();
            if let Some(found) = rush_file::locate_dep(&text, local, dep) {
                return Some(found);
            }
            local = local.split_once(':')?.1;
        }
    }
}

/// `list_tasks` with `position_encoding`: each task's column counted in
/// `encoding` on its file as it is now (blocking: reads the files).
pub(crate) fn recount_tasks(
    list: &mut taskrush_protocol::daemon::TaskList,
    encoding: PositionEncoding,
) {
    let mut sources = Sources {
        texts: HashMap::new(),
    };
    for task in &mut list.tasks {
        task.column = sources.column(Path::new(&task.file), task.line, task.column, encoding);
    }
    list.position_encoding = encoding;
}

/// Column `column` (characters) of 1-based `line` of the file `path`,
/// counted in `encoding` (blocking: reads the file).
pub(crate) fn recount(
    path: &Path,
    line: usize,
    column: usize,
    encoding: PositionEncoding,
) -> usize {
    let mut sources = Sources {
        texts: HashMap::new(),
    };
    sources.column(path, line, column, encoding)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_dependency_in_unsaved_text_is_an_error_at_its_item() {
        let dir = std::env::temp_dir();
        let path = dir.join("check-test.rush");
        let text = "tasks:\n  build:\n    cmd: make\n    depends_on: [lint]\n";
        let check = check(&path, text, PositionEncoding::Utf32);
        assert_eq!(check.diagnostics.len(), 1, "{check:?}");
        let d = &check.diagnostics[0];
        assert_eq!(d.severity, "error");
        assert!(d.message.contains("`lint`"), "{}", d.message);
        assert_eq!((d.line, d.column), (Some(4), Some(18)));
    }

    #[test]
    fn symbols_give_tasks_and_utf16_positions_of_dependencies_after_an_emoji() {
        let path = std::env::temp_dir().join("check-test.rush");
        let text =
            "tasks:\n  lint:\n    cmd: x\n  build: {description: \"🚀\", depends_on: [lint]}\n";
        let chars = check(&path, text, PositionEncoding::Utf32);
        let utf16 = check(&path, text, PositionEncoding::Utf16);
        assert!(utf16.diagnostics.is_empty(), "{utf16:?}");
        let dep = |c: &RushCheck| {
            let build = c.tasks.iter().find(|t| t.name == "build").expect("build");
            assert_eq!((build.line, build.column), (4, 3));
            let d = &build.depends_on[0];
            assert_eq!(d.name, "lint");
            (d.line, d.column)
        };
        assert_eq!(dep(&chars), (4, 42));
        assert_eq!(dep(&utf16), (4, 43));
    }
}
