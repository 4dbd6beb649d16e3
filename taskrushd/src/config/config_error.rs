//! The error type of the `.rush` parser: what went wrong, where, and what to do.
//!
//! The CLI renders it as
//!
//! ```text
//! error: {message}
//!   --> {location}
//! hint: {hint}
//! ```
//!
//! so the message is one lower-case line with names in backticks, no
//! position inside it and no trailing period (`docs/protocol.md`, "Errors").

use std::fmt;
use std::path::{Path, PathBuf};

/// A problem with a `.rush` file, with the position of the offending token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ConfigError {
    /// The file the problem is in.
    pub(crate) path: PathBuf,
    /// 1-based line of the offending token, when known.
    pub(crate) line: Option<usize>,
    /// 1-based column (in characters) of the offending token, when known.
    pub(crate) column: Option<usize>,
    /// What is wrong, e.g. "unknown key `dependson` in task `build`".
    pub(crate) message: String,
    /// What to do about it, e.g. "did you mean `depends_on`?".
    pub(crate) hint: Option<String>,
    /// What kind of problem it is (the daemon answers each kind with its
    /// own error code).
    pub(crate) kind: ConfigErrorKind,
}

/// The kinds of [`ConfigError`] that callers tell apart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum ConfigErrorKind {
    /// The file cannot be found or read, or is not a valid `.rush`.
    #[default]
    Invalid,
    /// A named task does not exist in a valid file.
    UnknownTask,
}

/// The most characters shown of a name quoted in a message (`` `…` ``):
/// a file may hold a key of megabytes, which every request, the log and
/// the daemon's memory would otherwise carry whole.
const MAX_QUOTED_CHARS: usize = 200;

/// The most characters of a whole message.
const MAX_MESSAGE_CHARS: usize = 4_000;

/// `text` with each backtick-quoted part longer than [`MAX_QUOTED_CHARS`]
/// cut short (`` `KKK…` (3000000 characters) ``), and at most
/// [`MAX_MESSAGE_CHARS`] long.
fn shortened(text: String) -> String {
    if text.len() <= MAX_QUOTED_CHARS {
        return text;
    }
    let mut out = String::new();
    // The length of the quoted part just cut, said after its closing backtick.
    let mut cut: Option<usize> = None;
    for (i, part) in text.split('`').enumerate() {
        if i > 0 {
            out.push('`');
        }
        if let Some(chars) = cut.take() {
            out.push_str(&format!(" ({chars} characters)"));
        }
        let chars = part.chars().count();
        if i % 2 == 1 && chars > MAX_QUOTED_CHARS {
            out.extend(part.chars().take(MAX_QUOTED_CHARS));
            out.push('…');
            cut = Some(chars);
        } else {
            out.push_str(part);
        }
    }
    if out.chars().count() > MAX_MESSAGE_CHARS {
        out = out.chars().take(MAX_MESSAGE_CHARS).collect();
        out.push('…');
    }
    out
}

impl ConfigError {
    /// An error about `path` with no position and no hint.
    pub(crate) fn new(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            line: None,
            column: None,
            message: shortened(message.into()),
            hint: None,
            kind: ConfigErrorKind::Invalid,
        }
    }

    /// The same error, of `kind`.
    pub(crate) fn of_kind(mut self, kind: ConfigErrorKind) -> Self {
        self.kind = kind;
        self
    }

    /// The same error at `line`:`column` (both 1-based).
    pub(crate) fn at(mut self, line: usize, column: usize) -> Self {
        self.line = Some(line);
        self.column = Some(column);
        self
    }

    /// The same error with a hint; `None` leaves it without one.
    pub(crate) fn with_hint(mut self, hint: Option<String>) -> Self {
        self.hint = hint.map(shortened);
        self
    }

    /// `path:line:column`, `path:line`, or just `path` when the position is unknown.
    pub(crate) fn location(&self) -> String {
        location(&self.path, self.line, self.column)
    }
}

fn location(path: &Path, line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!("{}:{line}:{column}", path.display()),
        (Some(line), None) => format!("{}:{line}", path.display()),
        _ => path.display().to_string(),
    }
}

impl fmt::Display for ConfigError {
    /// Only the message: the location and the hint are separate fields that
    /// the renderer lays out on their own lines.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// The hint "did you mean `x`?" for the candidate closest to `wrong`, if any
/// is close enough to be a plausible typo.
pub(crate) fn did_you_mean<'a>(
    wrong: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    closest(wrong, candidates).map(|name| format!("did you mean `{name}`?"))
}

/// The candidate closest to `wrong` by Jaro-Winkler similarity, if it scores
/// at least 0.8 (the first one wins a tie, so callers control the order).
pub(crate) fn closest<'a>(
    wrong: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    const THRESHOLD: f64 = 0.8;
    let mut best: Option<(f64, &'a str)> = None;
    for candidate in candidates {
        if candidate == wrong {
            continue;
        }
        let score = strsim::jaro_winkler(wrong, candidate);
        if score >= THRESHOLD && best.is_none_or(|(best_score, _)| score > best_score) {
            best = Some((score, candidate));
        }
    }
    best.map(|(_, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_has_line_and_column_when_known() {
        let err = ConfigError::new("/p/.rush", "m").at(3, 7);
        assert_eq!(err.location(), "/p/.rush:3:7");
        assert_eq!(ConfigError::new("/p/.rush", "m").location(), "/p/.rush");
    }

    #[test]
    fn errors_are_invalid_files_unless_told_otherwise() {
        let err = ConfigError::new("/p/.rush", "m");
        assert_eq!(err.kind, ConfigErrorKind::Invalid);
        let err = err.of_kind(ConfigErrorKind::UnknownTask);
        assert_eq!(err.kind, ConfigErrorKind::UnknownTask);
    }

    #[test]
    fn display_is_the_message_alone() {
        let err = ConfigError::new(".rush", "unknown key `dependson` in task `build`")
            .at(4, 5)
            .with_hint(Some("did you mean `depends_on`?".into()));
        assert_eq!(err.to_string(), "unknown key `dependson` in task `build`");
    }

    #[test]
    fn closest_suggests_typos_but_not_unrelated_names() {
        let keys = crate::config::rush_file::TASK_KEYS.iter().copied();
        assert_eq!(closest("dependson", keys.clone()), Some("depends_on"));
        assert_eq!(closest("descripton", keys.clone()), Some("description"));
        assert_eq!(closest("cahce", keys.clone()), Some("cache"));
        assert_eq!(closest("zzz", keys), None);
        assert_eq!(closest("biuld", ["build", "test", "lint"]), Some("build"));
        assert_eq!(
            did_you_mean("tset", ["build", "test"]).as_deref(),
            Some("did you mean `test`?")
        );
    }

    #[test]
    fn a_long_name_in_a_message_is_cut_short() {
        let key = "K".repeat(3_000_000);
        let e = ConfigError::new(".rush", format!("unknown top-level key `{key}`"));
        assert_eq!(
            e.message,
            format!(
                "unknown top-level key `{}…` (3000000 characters)",
                "K".repeat(200)
            )
        );
        let short = ConfigError::new(".rush", "unknown key `cmdd` in task `t`");
        assert_eq!(short.message, "unknown key `cmdd` in task `t`");
    }
}
