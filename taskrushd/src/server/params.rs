//! Parameters as a client sent them, and errors that name them.
//!
//! jsonrpsee parses a method's parameters itself, and its errors say
//! `Invalid params` with serde's text in `data` (`No more params` for a
//! missing parameter sent by position). This module gives parameters sent
//! by position their names ([`taskrush_protocol::method::PARAMS`]), so that
//! both forms are parsed alike, and rewrites those errors into a message
//! naming the parameter: ``missing parameter `request` ``, ``invalid
//! parameter `run_id`: invalid type: string "x", expected u64``.

use std::collections::HashMap;

use serde_json::value::RawValue;
use taskrush_protocol::error::INVALID_PARAMS;
use taskrush_protocol::method::params_of;

/// The params of a call to `method` as an object, when they were sent by
/// position (or left out) and the method's parameter names are known;
/// `Ok(None)` to pass them on as they are; `Err` for too many.
pub(crate) fn by_name(method: &str, params: Option<&str>) -> Result<Option<String>, String> {
    let Some(names) = params_of(method) else {
        return Ok(None);
    };
    let text = params.map(str::trim_start).unwrap_or("");
    if text.is_empty() || text == "null" {
        return Ok((!names.is_empty()).then(|| "{}".to_owned()));
    }
    if !text.starts_with('[') {
        return Ok(None);
    }
    let Ok(values) = serde_json::from_str::<Vec<&RawValue>>(text) else {
        return Ok(None);
    };
    if values.len() > names.len() {
        let list = names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(format!(
            "too many parameters: `{method}` takes {}{}{list}, {} were sent",
            names.len(),
            if names.is_empty() { "" } else { ": " },
            values.len()
        ));
    }
    let mut object = String::from("{");
    for (i, (name, value)) in names.iter().zip(values).enumerate() {
        if i > 0 {
            object.push(',');
        }
        object.push_str(&format!("\"{name}\":{}", value.get()));
    }
    object.push('}');
    Ok(Some(object))
}

/// `answer`, with jsonrpsee's `Invalid params` error replaced by one that
/// names the parameter; other answers unchanged.
pub(crate) fn name_error(
    method: &str,
    params: Option<&str>,
    answer: Box<RawValue>,
) -> Box<RawValue> {
    #[derive(serde::Deserialize)]
    struct Answer<'a> {
        #[serde(borrow)]
        id: &'a RawValue,
        error: Option<Error>,
    }
    #[derive(serde::Deserialize)]
    struct Error {
        code: i32,
        message: String,
        data: Option<String>,
    }
    let Ok(parsed) = serde_json::from_str::<Answer<'_>>(answer.get()) else {
        return answer;
    };
    let Some(Error {
        code: INVALID_PARAMS,
        message,
        data: Some(data),
    }) = parsed.error
    else {
        return answer;
    };
    if message != "Invalid params" {
        return answer;
    }
    let text = describe(method, params, &data);
    let rewritten = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":{},\"error\":{{\"code\":{INVALID_PARAMS},\"message\":{}}}}}",
        parsed.id.get(),
        serde_json::Value::String(text)
    );
    RawValue::from_string(rewritten).unwrap_or(answer)
}

/// A message naming the parameter serde's error `data` is about.
fn describe(method: &str, params: Option<&str>, data: &str) -> String {
    let (core, position) = split_position(data);
    let core = expected_object(core);
    let params = params.unwrap_or("{}");
    let names = params_of(method).unwrap_or(&[]);
    let spans = top_level_spans(params);
    if let Some(field) = core
        .strip_prefix("missing field `")
        .and_then(|r| r.strip_suffix('`'))
        && (names.contains(&field) || names.is_empty())
        && !spans.iter().any(|(name, _, _)| name == field)
    {
        return format!("missing parameter `{field}`");
    }
    if core == "No more params" {
        return format!("missing parameter: `{method}` takes {}", names.join(", "));
    }
    if let Some((line, column)) = position {
        let offset = params
            .split_inclusive('\n')
            .take(line.saturating_sub(1))
            .map(str::len)
            .sum::<usize>()
            + column.saturating_sub(1);
        // serde places a missing field at the closing brace of its object,
        // other errors right after the value (or, for an array or object
        // of the wrong type, right before it).
        let strict = core.starts_with("missing field");
        let holds = |start: usize, end: usize| {
            if strict {
                start <= offset && offset < end
            } else {
                start <= offset + 1 && offset <= end
            }
        };
        if let Some((name, start, _)) = spans.iter().find(|(_, start, end)| holds(*start, *end)) {
            let mut path = name.clone();
            let mut at = *start;
            // Down into the member the position is in, as deep as it goes.
            while let Some((key, child)) = member_at(params, at, offset, strict) {
                path.push_str(&key);
                at = child;
            }
            return format!("invalid parameter `{path}`: {core}");
        }
    }
    format!("invalid parameters: {core}")
}

/// serde's `... at line L column C`, split.
fn split_position(data: &str) -> (&str, Option<(usize, usize)>) {
    let Some((core, at)) = data.rsplit_once(" at line ") else {
        return (data, None);
    };
    let Some((line, column)) = at.split_once(" column ") else {
        return (data, None);
    };
    match (line.parse(), column.parse()) {
        (Ok(l), Ok(c)) => (core, Some((l, c))),
        _ => (data, None),
    }
}

/// serde says `expected struct RunRequest`: a client sees an object.
fn expected_object(core: &str) -> String {
    match core.split_once("expected struct ") {
        Some((head, name)) => format!("{head}expected an object ({name})"),
        None => core.to_owned(),
    }
}

/// The member of the JSON object or array at byte `at` of `params` whose
/// value holds byte `offset` (or, unless `strict`, ends right before it or
/// starts right after it): `.key` or `[i]`, and where its value starts in
/// `params`.
fn member_at(params: &str, at: usize, offset: usize, strict: bool) -> Option<(String, usize)> {
    let value = params.get(at..)?;
    let base = params.as_ptr() as usize;
    let within = |raw: &RawValue| {
        // `raw` borrows from `params`: its start is at or after `base`.
        let start = (raw.get().as_ptr() as usize).checked_sub(base)?;
        let end = start + raw.get().len();
        let holds = if strict {
            start <= offset && offset < end
        } else {
            start <= offset + 1 && offset <= end
        };
        holds.then_some(start)
    };
    let mut de = serde_json::Deserializer::from_str(value);
    if value.starts_with('{') {
        let map: HashMap<String, &RawValue> = serde::Deserialize::deserialize(&mut de).ok()?;
        map.into_iter()
            .find_map(|(k, v)| within(v).map(|start| (format!(".{k}"), start)))
    } else if value.starts_with('[') {
        let items: Vec<&RawValue> = serde::Deserialize::deserialize(&mut de).ok()?;
        items
            .into_iter()
            .enumerate()
            .find_map(|(i, v)| within(v).map(|start| (format!("[{i}]"), start)))
    } else {
        None
    }
}

/// The top-level members of a params object: name, and the byte span of
/// its value in `params`.
fn top_level_spans(params: &str) -> Vec<(String, usize, usize)> {
    let Ok(map) = serde_json::from_str::<HashMap<String, &RawValue>>(params) else {
        return Vec::new();
    };
    let base = params.as_ptr() as usize;
    map.into_iter()
        .map(|(name, value)| {
            let start = (value.get().as_ptr() as usize).saturating_sub(base);
            (name, start, start + value.get().len())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_by_position_are_given_their_names() {
        assert_eq!(
            by_name("cancel_run", Some("[5, true]")).unwrap().as_deref(),
            Some("{\"run_id\":5,\"force\":true}")
        );
        assert_eq!(by_name("run", None).unwrap().as_deref(), Some("{}"));
        assert_eq!(by_name("run", Some("{\"request\":1}")).unwrap(), None);
        assert_eq!(by_name("no_such", Some("[1]")).unwrap(), None);
        let err = by_name("cancel_run", Some("[1, true, \"t\", 4]")).unwrap_err();
        assert_eq!(
            err,
            "too many parameters: `cancel_run` takes 3: `run_id`, `force`, `token`, 4 were sent"
        );
    }

    #[test]
    fn serde_errors_are_told_with_the_parameter_name() {
        assert_eq!(
            describe(
                "run",
                Some("{}"),
                "missing field `request` at line 1 column 2"
            ),
            "missing parameter `request`"
        );
        assert_eq!(
            describe(
                "cancel_run",
                Some("{\"run_id\": \"x\"}"),
                "invalid type: string \"x\", expected u64 at line 1 column 14"
            ),
            "invalid parameter `run_id`: invalid type: string \"x\", expected u64"
        );
        assert_eq!(
            describe(
                "run",
                Some("{\"request\":5}"),
                "invalid type: integer `5`, expected struct RunRequest at line 1 column 13"
            ),
            "invalid parameter `request`: invalid type: integer `5`, expected an object (RunRequest)"
        );
        assert_eq!(
            describe(
                "run",
                Some("{\"request\": {\"cwd\": \"/tmp\"}}"),
                "missing field `tasks` at line 1 column 27"
            ),
            "invalid parameter `request`: missing field `tasks`"
        );
        assert_eq!(
            describe(
                "run",
                Some("{\"request\": {\"cwd\": \"/tmp\", \"tasks\": [\"a\", 5]}}"),
                "invalid type: integer `5`, expected a string at line 1 column 45"
            ),
            "invalid parameter `request.tasks[1]`: invalid type: integer `5`, expected a string"
        );
    }

    #[test]
    fn any_position_serde_reports_is_safe() {
        let params = "{\"request\": {\"env\": {\"A\": [1, {}]}}, \"x\": [[]]}";
        for line in 0..3 {
            for column in 0..params.len() + 3 {
                for core in ["missing field `q`", "invalid type: map, expected a string"] {
                    let data = format!("{core} at line {line} column {column}");
                    let text = describe("run", Some(params), &data);
                    assert!(text.contains(core), "{text}");
                }
            }
        }
    }
}
