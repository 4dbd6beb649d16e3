//! `${VAR}` and `${VAR:-default}` expansion for `env` values and plugin config.
//!
//! The variables come from the *calling client's* environment, so the caller
//! passes the lookup; this module never reads the daemon's own environment.
//!
//! - `${VAR}`: the value of `VAR`, or the empty string when it is unset.
//! - `${VAR:-default}`: `default` when `VAR` is unset *or empty* (as in `sh`);
//!   the default may itself contain `${...}`, e.g. `${A:-${B:-b}}`.
//! - `$$` is a literal `$`; a `$` not followed by `{` or `$` is kept as is.
//! - An unterminated `${`, an empty or invalid name, and any other operator
//!   (`${A:=x}`, `${A-x}`, ...) is an error.

use std::fmt;

/// Nesting deeper than this is surely a mistake, and bounds the recursion.
const MAX_NESTING: usize = 32;

/// Why a string could not be expanded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ExpandError {
    /// e.g. "unterminated `${` in `${HOME`"
    pub(crate) message: String,
}

impl fmt::Display for ExpandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ExpandError {}

/// Expands every `${...}` in `input`, looking variables up with `lookup`.
pub(crate) fn expand(
    input: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, ExpandError> {
    let mut parser = Parser {
        input,
        pos: 0,
        lookup: &lookup,
    };
    let out = parser.text(false, 0)?;
    debug_assert_eq!(parser.pos, input.len());
    Ok(out)
}

/// Expands every string inside `value` (array items and object values,
/// recursively; object keys are left alone).
#[allow(
    dead_code,
    reason = "plugin configs are expanded by the plugin host (issue 4)"
)]
pub(crate) fn expand_json(
    value: &serde_json::Value,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<serde_json::Value, ExpandError> {
    fn walk(
        value: &serde_json::Value,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<serde_json::Value, ExpandError> {
        use serde_json::Value;
        Ok(match value {
            Value::String(s) => Value::String(expand(s, lookup)?),
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|item| walk(item, lookup))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), walk(v, lookup)?)))
                    .collect::<Result<_, ExpandError>>()?,
            ),
            other => other.clone(),
        })
    }
    walk(value, &lookup)
}

struct Parser<'a> {
    input: &'a str,
    /// Byte offset of the next unread character.
    pos: usize,
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl Parser<'_> {
    /// Literal text with expansions, up to the end of the input or, inside a
    /// default (`in_default`), up to the `}` that closes it (left unread).
    fn text(&mut self, in_default: bool, depth: usize) -> Result<String, ExpandError> {
        let bytes = self.input.as_bytes();
        let mut out = String::new();
        let mut literal_start = self.pos;
        while self.pos < bytes.len() {
            match bytes[self.pos] {
                b'}' if in_default => break,
                b'$' => match bytes.get(self.pos + 1) {
                    Some(b'$') => {
                        out.push_str(&self.input[literal_start..self.pos]);
                        out.push('$');
                        self.pos += 2;
                        literal_start = self.pos;
                    }
                    Some(b'{') => {
                        out.push_str(&self.input[literal_start..self.pos]);
                        out.push_str(&self.reference(depth)?);
                        literal_start = self.pos;
                    }
                    // A lone `$` (end of input, `$HOME`, `$1`...) is literal.
                    _ => self.pos += 1,
                },
                _ => self.pos += 1,
            }
        }
        out.push_str(&self.input[literal_start..self.pos]);
        Ok(out)
    }

    /// One `${...}`, with `pos` at its `$`; leaves `pos` after its `}`.
    fn reference(&mut self, depth: usize) -> Result<String, ExpandError> {
        let start = self.pos;
        if depth >= MAX_NESTING {
            return Err(self.error(start, "is nested too deeply"));
        }
        let bytes = self.input.as_bytes();
        self.pos += 2; // `${`
        let name_start = self.pos;
        while self.pos < bytes.len()
            && (bytes[self.pos] == b'_' || bytes[self.pos].is_ascii_alphanumeric())
        {
            self.pos += 1;
        }
        let name = &self.input[name_start..self.pos];
        match bytes.get(self.pos) {
            None => Err(self.unterminated(start)),
            Some(_) if name.is_empty() => Err(self.error(start, "has no variable name")),
            Some(_) if name.as_bytes()[0].is_ascii_digit() => {
                Err(self.error(start, "has an invalid variable name"))
            }
            Some(b'}') => {
                self.pos += 1;
                Ok((self.lookup)(name).unwrap_or_default())
            }
            Some(b':') if bytes.get(self.pos + 1) == Some(&b'-') => {
                self.pos += 2;
                let default = self.text(true, depth + 1)?;
                if self.pos >= bytes.len() {
                    return Err(self.unterminated(start));
                }
                self.pos += 1; // `}`
                match (self.lookup)(name) {
                    Some(value) if !value.is_empty() => Ok(value),
                    _ => Ok(default),
                }
            }
            Some(_) => {
                Err(self.error(start, "is not supported: use `${VAR}` or `${VAR:-default}`"))
            }
        }
    }

    fn unterminated(&self, start: usize) -> ExpandError {
        ExpandError {
            message: format!("unterminated `${{` in `{}`", self.snippet(start)),
        }
    }

    fn error(&self, start: usize, what: &str) -> ExpandError {
        ExpandError {
            message: format!("`{}` {what}", self.snippet(start)),
        }
    }

    /// The reference starting at `start`, up to its first `}` (or 40 bytes).
    fn snippet(&self, start: usize) -> &str {
        let rest = &self.input[start..];
        let end = rest.find('}').map_or(rest.len(), |i| i + 1);
        let mut cut = end.min(40);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        &rest[..cut]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOME" => Some("/home/me".into()),
            "EMPTY" => Some(String::new()),
            "B" => Some("bee".into()),
            "DEPLOY_ENV" => Some("prod".into()),
            _ => None,
        }
    }

    /// `input` expands to `expected`, or to `error: message` when it fails.
    fn check(input: &str, expected: &str) {
        let actual = match expand(input, env) {
            Ok(s) => s,
            Err(e) => format!("error: {e}"),
        };
        assert_eq!(actual, expected, "expanding {input:?}");
    }

    #[test]
    fn set_variables_expand_and_unset_ones_are_empty() {
        check("${HOME}/bin", "/home/me/bin");
        check("a${UNSET}b", "ab");
        check("${EMPTY}", "");
        check("${HOME}${B}", "/home/mebee");
        check("no references", "no references");
        check("", "");
        check("ünï${B}çødé", "ünïbeeçødé");
    }

    #[test]
    fn defaults_apply_when_unset_or_empty_like_sh() {
        check("${UNSET:-info}", "info");
        check("${EMPTY:-info}", "info");
        check("${DEPLOY_ENV:-staging}", "prod");
        check("${UNSET:-}", "");
        check("${UNSET:-a b:c-d}", "a b:c-d");
        check("${UNSET:-$HOME}", "$HOME");
    }

    #[test]
    fn defaults_nest() {
        check("${UNSET:-${B}}", "bee");
        check("${UNSET:-${ALSO_UNSET:-deep}}", "deep");
        check("${UNSET:-x${B}y}z", "xbeeyz");
        check("${HOME:-${B}}", "/home/me");
    }

    #[test]
    fn dollar_escapes_and_lone_dollars_are_literal() {
        check("$${HOME}", "${HOME}");
        check("cost: $$5", "cost: $5");
        check("$HOME and $", "$HOME and $");
        check("a$", "a$");
        check("${UNSET:-$$}", "$");
    }

    #[test]
    fn malformed_references_are_errors() {
        check("${HOME", "error: unterminated `${` in `${HOME`");
        check("x ${", "error: unterminated `${` in `${`");
        check("${UNSET:-abc", "error: unterminated `${` in `${UNSET:-abc`");
        check(
            "${UNSET:-${B}",
            "error: unterminated `${` in `${UNSET:-${B}`",
        );
        check("${}", "error: `${}` has no variable name");
        check("${1X}", "error: `${1X}` has an invalid variable name");
        check(
            "${A:=x}",
            "error: `${A:=x}` is not supported: use `${VAR}` or `${VAR:-default}`",
        );
        check(
            "${A B}",
            "error: `${A B}` is not supported: use `${VAR}` or `${VAR:-default}`",
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = "${A:-".repeat(10_000) + &"}".repeat(10_000);
        let err = expand(&deep, env).unwrap_err(); // the test is that this fails
        assert!(err.message.ends_with("is nested too deeply"), "{err}");
    }

    #[test]
    fn expand_json_expands_every_string_value() {
        let value = serde_json::json!({
            "url": "${HOME}/hook",
            "${B}": ["${B}", 1, true, null, {"x": "${UNSET:-d}"}]
        });
        let expanded = expand_json(&value, env).unwrap(); // no malformed references above
        assert_eq!(
            expanded,
            serde_json::json!({
                "url": "/home/me/hook",
                "${B}": ["bee", 1, true, null, {"x": "d"}]
            })
        );
        let bad = serde_json::json!({"a": ["${oops"]});
        assert_eq!(
            expand_json(&bad, env).unwrap_err().message, // malformed on purpose
            "unterminated `${` in `${oops`"
        );
    }
}
