//! `dotenv:` files: which to read, and their format.
//!
//! A listed file is required unless its name ends in `?` (`.env.local?`).
//! Paths are relative to the `.rush` file's directory. The format, the
//! common subset of what dotenv tools accept:
//!
//! - one `NAME=value` per line, `export NAME=value` too; blank lines and
//!   lines starting with `#` are skipped; spaces around the name and the
//!   `=` are ignored;
//! - a value in single quotes is taken literally, and may span lines;
//! - a value in double quotes may span lines and knows the escapes `\n`,
//!   `\t`, `\r`, `\"`, `\\` and `\$`;
//! - an unquoted value ends at the end of the line or at ` #` (a comment),
//!   surrounding spaces removed;
//! - nothing is expanded: `$VAR` stays `$VAR` (use the task's `env:` with
//!   `${VAR}` for that), so a file never reads the daemon's environment.
//!
//! Errors name the file and line, never a value. No crate is used: the
//! well-known one (`dotenvy`) expands `$VAR` from the process environment,
//! which here would be the daemon's.

use std::path::Path;

/// The most bytes read of one dotenv file.
pub(crate) const MAX_BYTES: u64 = 1 << 20;

/// One entry of a `dotenv:` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DotenvRef<'a> {
    pub(crate) path: &'a str,
    pub(crate) optional: bool,
}

/// `file` or `file?` (optional).
pub(crate) fn entry(raw: &str) -> DotenvRef<'_> {
    match raw.strip_suffix('?') {
        Some(path) => DotenvRef {
            path,
            optional: true,
        },
        None => DotenvRef {
            path: raw,
            optional: false,
        },
    }
}

/// What the listed files set, later files winning, and what the cache key
/// covers: per file, `dotenv PATH` and the BLAKE3 hash of its content (or
/// `absent`).
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    pub(crate) vars: Vec<(String, String)>,
    pub(crate) key: Vec<(String, String)>,
}

/// Reads `lists` in order (the top-level list, then the task's). The error
/// is a whole message: which file, which line, why.
pub(crate) fn load(root: &Path, lists: &[(&str, &[String])]) -> Result<Loaded, String> {
    let mut loaded = Loaded::default();
    for (owner, list) in lists {
        for raw in list.iter() {
            let r = entry(raw);
            let path = root.join(r.path);
            let bytes = match crate::config::whole_file::read_at_most(&path, MAX_BYTES) {
                Ok(bytes) => bytes,
                Err(crate::config::whole_file::ReadError::NotFound) if r.optional => {
                    loaded
                        .key
                        .push((format!("dotenv {}", r.path), "absent".to_owned()));
                    continue;
                }
                Err(e) => {
                    let hint = if matches!(e, crate::config::whole_file::ReadError::NotFound) {
                        format!(
                            "\nhint: create it, or mark it optional with a `?`: `{}?`",
                            r.path
                        )
                    } else {
                        String::new()
                    };
                    return Err(format!(
                        "dotenv file `{}` (listed in {owner}) {}{hint}",
                        r.path,
                        e.what()
                    ));
                }
            };
            loaded.key.push((
                format!("dotenv {}", r.path),
                blake3::hash(&bytes).to_hex().to_string(),
            ));
            let text = String::from_utf8(bytes)
                .map_err(|_| format!("dotenv file `{}` is not valid UTF-8", r.path))?;
            let vars = parse(&text)
                .map_err(|(line, why)| format!("dotenv file `{}`, line {line}: {why}", r.path))?;
            for (name, value) in vars {
                match loaded.vars.iter_mut().find(|(n, _)| *n == name) {
                    Some(slot) => slot.1 = value,
                    None => loaded.vars.push((name, value)),
                }
            }
        }
    }
    Ok(loaded)
}

/// The variables of a dotenv file, in order (a repeated name: the last
/// value). The error: 1-based line and why, without the value.
pub(crate) fn parse(text: &str) -> Result<Vec<(String, String)>, (usize, String)> {
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut pos = 0usize;
    let mut line = 1usize;
    let line_end = |from: usize| text[from..].find('\n').map_or(text.len(), |i| from + i);
    while pos < text.len() {
        let end = line_end(pos);
        let current = &text[pos..end];
        let trimmed = current.trim_start();
        if trimmed.trim_end().is_empty() || trimmed.starts_with('#') {
            pos = end + 1;
            line += 1;
            continue;
        }
        let body = trimmed
            .strip_prefix("export ")
            .or_else(|| trimmed.strip_prefix("export\t"))
            .map(str::trim_start)
            .unwrap_or(trimmed);
        let Some((name, value)) = body.split_once('=') else {
            return Err((line, "expected `NAME=value`".to_owned()));
        };
        let name = name.trim_end();
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
        if !valid {
            return Err((
                line,
                format!("`{name}` is not a variable name (letters, digits, `_`, `.`)"),
            ));
        }
        let value = value.trim_start();
        // `value` ends where the line does.
        let value_at = end - value.len();
        let parsed = match value.chars().next() {
            Some(q @ ('\'' | '"')) => {
                let (v, used) = quoted_value(&text[value_at + 1..], q)
                    .ok_or_else(|| (line, format!("`{name}`: the value's {q} is not closed")))?;
                let close = value_at + 1 + used;
                let tail_end = line_end(close);
                let tail = text[close..tail_end].trim();
                if !tail.is_empty() && !tail.starts_with('#') {
                    return Err((
                        line,
                        format!("`{name}`: unexpected text after the closing {q}"),
                    ));
                }
                line += text[pos..tail_end].matches('\n').count() + 1;
                pos = tail_end + 1;
                v
            }
            _ => {
                let v = match value.find(" #").or_else(|| value.find("\t#")) {
                    Some(i) => &value[..i],
                    None => value,
                };
                line += 1;
                pos = end + 1;
                v.trim_end().to_owned()
            }
        };
        match vars.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = parsed,
            None => vars.push((name.to_owned(), parsed)),
        }
    }
    Ok(vars)
}

/// The value after its opening quote `q`: the value, and how many bytes
/// up to and including the closing quote; `None` when it never closes.
fn quoted_value(s: &str, q: char) -> Option<(String, usize)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        if c == q {
            return Some((out, i + 1));
        }
        if c == '\\' && q == '"' {
            let (_, e) = chars.next()?;
            match e {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                '"' | '\\' | '$' => out.push(e),
                other => {
                    out.push('\\');
                    out.push(other);
                }
            }
            continue;
        }
        out.push(c);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(text: &str) -> Vec<(String, String)> {
        parse(text).expect("parses")
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_common_forms_are_read() {
        let text = "# comment\n\nA=1\nexport B = two words \nC='lit $X \\n'\nD=\"a\\nb \\\"q\\\" \\$X\" # c\nE=x #c\nF=\nG=a#b\r\nA=last\n";
        assert_eq!(
            vars(text),
            pairs(&[
                ("A", "last"),
                ("B", "two words"),
                ("C", "lit $X \\n"),
                ("D", "a\nb \"q\" $X"),
                ("E", "x"),
                ("F", ""),
                ("G", "a#b"),
            ])
        );
    }

    #[test]
    fn quoted_values_may_span_lines_and_lines_are_counted() {
        let text = "K=\"-----BEGIN\nx\n-----END\"\nL='a\nb'\nbad line\n";
        assert_eq!(
            parse(text).unwrap_err(),
            (6, "expected `NAME=value`".to_owned())
        );
        let text = "K=\"-----BEGIN\nx\n-----END\"\nL='a\nb'\n";
        assert_eq!(
            vars(text),
            pairs(&[("K", "-----BEGIN\nx\n-----END"), ("L", "a\nb")])
        );
    }

    #[test]
    fn errors_name_the_line_never_the_value() {
        assert_eq!(
            parse("A=1\nB=\"secret").unwrap_err(),
            (2, "`B`: the value's \" is not closed".to_owned())
        );
        assert_eq!(
            parse("1X=secret").unwrap_err().1,
            "`1X` is not a variable name (letters, digits, `_`, `.`)"
        );
        assert_eq!(
            parse("A='x' secret").unwrap_err().1,
            "`A`: unexpected text after the closing '"
        );
    }

    #[test]
    fn a_question_mark_marks_a_file_optional() {
        assert_eq!(
            entry(".env.local?"),
            DotenvRef {
                path: ".env.local",
                optional: true
            }
        );
        assert!(!entry(".env").optional);
    }
}
