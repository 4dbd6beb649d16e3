//! What editors need beyond running tasks: checking unsaved `.rush` text
//! (`check_rush`) and positions in the encoding the client counts in.

use serde::{Deserialize, Serialize};

/// How columns are counted. TaskRush counts characters (Unicode scalar
/// values, LSP's `utf-32`) unless a client asks for UTF-16 code units
/// (LSP's default) or UTF-8 bytes; answers say which they use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PositionEncoding {
    /// Characters (Unicode scalar values): the default.
    #[default]
    #[serde(rename = "utf-32", alias = "characters")]
    Utf32,
    /// UTF-16 code units (LSP's default, JavaScript's string indices).
    #[serde(rename = "utf-16")]
    Utf16,
    /// UTF-8 bytes.
    #[serde(rename = "utf-8")]
    Utf8,
}

impl PositionEncoding {
    /// The encoding named `name` (`utf-32`, `characters`, `utf-16`,
    /// `utf-8`), as LSP's `positionEncoding` names them.
    pub fn from_name(name: &str) -> Option<PositionEncoding> {
        match name {
            "utf-32" | "characters" => Some(PositionEncoding::Utf32),
            "utf-16" => Some(PositionEncoding::Utf16),
            "utf-8" => Some(PositionEncoding::Utf8),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            PositionEncoding::Utf32 => "utf-32",
            PositionEncoding::Utf16 => "utf-16",
            PositionEncoding::Utf8 => "utf-8",
        }
    }

    /// The 1-based column, in this encoding, of the 1-based character
    /// column `column` on `line_text` (a column past the end counts the
    /// missing characters as one unit each; 0 stays 0).
    pub fn column(self, line_text: &str, column: usize) -> usize {
        if column == 0 || self == PositionEncoding::Utf32 {
            return column;
        }
        let mut units = 0;
        let mut chars = line_text.chars();
        for _ in 1..column {
            units += match (chars.next(), self) {
                (Some(c), PositionEncoding::Utf16) => c.len_utf16(),
                (Some(c), _) => c.len_utf8(),
                (None, _) => 1,
            };
        }
        units + 1
    }

    /// The 1-based character column of the 1-based column `column` counted
    /// in this encoding on `line_text` (the inverse of
    /// [`PositionEncoding::column`]; inside a character: that character).
    pub fn to_chars(self, line_text: &str, column: usize) -> usize {
        if column == 0 || self == PositionEncoding::Utf32 {
            return column;
        }
        let mut units = 0;
        let mut chars = 0;
        let mut it = line_text.chars();
        while units + 1 < column {
            units += match (it.next(), self) {
                (Some(c), PositionEncoding::Utf16) => c.len_utf16(),
                (Some(c), _) => c.len_utf8(),
                (None, _) => 1,
            };
            chars += 1;
        }
        chars + 1
    }
}

/// The answer to `check_rush`: what loading the text would say, and the
/// symbols it defines (for completion, hover, definitions, references).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RushCheck {
    /// The file checked, as given.
    pub file: String,
    /// How the columns of this answer are counted.
    pub position_encoding: PositionEncoding,
    /// Errors and warnings, first the error a load would fail with (a
    /// load stops at the first), then warnings. Empty: the text loads.
    pub diagnostics: Vec<RushDiagnostic>,
    /// The tasks of the checked text and of the files it includes, sorted
    /// by name (empty when the text does not load).
    #[serde(default)]
    pub tasks: Vec<TaskSymbol>,
    /// The plugins the text declares, in order.
    #[serde(default)]
    pub plugins: Vec<String>,
}

/// One problem with checked text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RushDiagnostic {
    /// `error` (the text would not load) or `warning`.
    pub severity: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// The file it is about: the checked one or a file it includes.
    pub path: String,
    /// 1-based line and column, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
}

/// A task as the checked text defines it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSymbol {
    pub name: String,
    /// The file that defines it (the checked one or an included file).
    pub file: String,
    /// 1-based position of its name (0 when unknown).
    pub line: usize,
    pub column: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    /// Whether it has `cache_files`.
    #[serde(default)]
    pub cached: bool,
    /// Its `depends_on`, each with where it is written (in `file`).
    #[serde(default)]
    pub depends_on: Vec<TaskReference>,
}

/// One item of a `depends_on` list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskReference {
    /// The task it names (as merged: `web:build` for an included one).
    pub name: String,
    /// 1-based position of the item in its task's file (0 when unknown).
    pub line: usize,
    pub column: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_after_an_emoji_count_two_utf16_units_and_four_bytes() {
        let line = "  🚀build: x";
        // `b` is the 4th character.
        assert_eq!(PositionEncoding::Utf32.column(line, 4), 4);
        assert_eq!(PositionEncoding::Utf16.column(line, 4), 5);
        assert_eq!(PositionEncoding::Utf8.column(line, 4), 7);
        assert_eq!(PositionEncoding::Utf16.to_chars(line, 5), 4);
        assert_eq!(PositionEncoding::Utf8.to_chars(line, 7), 4);
    }
}
