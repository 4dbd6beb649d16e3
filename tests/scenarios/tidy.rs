//! Tidy checks: the docs keep up with the code, and no debugging leftovers
//! are committed.
//!
//! They read the sources as text (this crate does not depend on
//! `taskrush-protocol`), so they need no binaries and no daemon.

use std::path::{Path, PathBuf};

/// The workspace root (this crate lives in `tests/`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn read(rel: &str) -> String {
    let path = root().join(rel);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read `{}`: {e}", path.display()))
}

/// The text of the first `"…"` string literal in `line`, if any.
fn string_literal(line: &str) -> Option<&str> {
    let start = line.find('"')? + 1;
    let len = line[start..].find('"')?;
    Some(&line[start..start + len])
}

/// `pub const NAME: &str = "value";` lines of `source`, as (NAME, value).
fn str_consts(source: &str) -> Vec<(String, String)> {
    source
        .lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix("pub const ")?;
            let (name, rest) = rest.split_once(':')?;
            if !rest.trim_start().starts_with("&str") {
                return None;
            }
            Some((name.trim().to_owned(), string_literal(rest)?.to_owned()))
        })
        .collect()
}

/// The identifiers listed in `pub const ALL: &[&str] = &[ … ];`.
fn all_list(source: &str) -> Vec<String> {
    let start = source
        .find("pub const ALL")
        .expect("method.rs declares `pub const ALL`");
    let body = &source[start..];
    let open = body.find("= &[").expect("`ALL` is a slice literal") + 4;
    let close = body[open..].find("];").expect("`ALL` ends with `];`") + open;
    body[open..close]
        .split(',')
        .map(|item| item.trim().to_owned())
        .filter(|item| !item.is_empty() && !item.starts_with("//"))
        .collect()
}

/// `pub const NAME: i32 = -NNNNN;` lines of `source`, as (NAME, number).
fn error_codes(source: &str) -> Vec<(String, i32)> {
    source
        .lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix("pub const ")?;
            let (name, rest) = rest.split_once(": i32 =")?;
            let value = rest.trim().strip_suffix(';')?.trim().parse().ok()?;
            Some((name.trim().to_owned(), value))
        })
        .collect()
}

/// The variant names of `pub enum NAME { … }` in `source`.
fn enum_variants(source: &str, name: &str) -> Vec<String> {
    let header = format!("pub enum {name} {{");
    let start = source
        .find(&header)
        .unwrap_or_else(|| panic!("no `{header}` found"));
    let mut variants = Vec::new();
    let mut depth = 0usize;
    for line in source[start..].lines() {
        // Braces in comments (`///` docs) do not count.
        let code = line.split("//").next().unwrap_or("");
        if depth == 1 {
            let ident: String = code
                .trim_start()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if ident.starts_with(|c: char| c.is_ascii_uppercase()) {
                variants.push(ident);
            }
        }
        for c in code.chars() {
            match c {
                '{' => depth += 1,
                '}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        if depth == 0 && !variants.is_empty() {
            break;
        }
    }
    variants
}

/// `RunStarted` -> `run_started` (serde's `rename_all = "snake_case"`).
fn snake_case(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Fails listing every `missing` item, so one run shows them all.
fn assert_none_missing(doc: &str, what: &str, missing: &[String]) {
    assert!(
        missing.is_empty(),
        "{doc} does not mention these {what}: {}",
        missing.join(", ")
    );
}

#[test]
fn the_protocol_doc_mentions_every_method_name() {
    let source = read("protocol/src/method.rs");
    let consts = str_consts(&source);
    let all = all_list(&source);
    assert!(!all.is_empty(), "`method::ALL` lists no method");
    for ident in &all {
        assert!(
            consts.iter().any(|(name, _)| name == ident),
            "`{ident}` in `method::ALL` is not a `pub const {ident}: &str` of method.rs"
        );
    }
    // Every name on the wire: the methods of `ALL`, and notifications
    // such as `run_event`.
    let doc = read("docs/protocol.md");
    let missing: Vec<String> = consts
        .into_iter()
        .map(|(_, name)| name)
        .filter(|name| !doc.contains(&format!("`{name}`")))
        .collect();
    assert_none_missing("docs/protocol.md", "methods", &missing);
}

#[test]
fn the_protocol_doc_mentions_every_error_code() {
    let codes = error_codes(&read("protocol/src/error.rs"));
    assert!(
        codes.iter().any(|(name, _)| name == "PARSE_ERROR"),
        "no `pub const …: i32 = …;` found in protocol/src/error.rs: {codes:?}"
    );
    let doc = read("docs/protocol.md");
    let missing: Vec<String> = codes
        .iter()
        .filter(|(_, code)| !doc.contains(&code.to_string()))
        .map(|(name, code)| format!("{code} ({name})"))
        .collect();
    assert_none_missing("docs/protocol.md", "error codes", &missing);
}

#[test]
fn the_protocol_doc_mentions_every_run_event_kind() {
    let variants = enum_variants(&read("protocol/src/run.rs"), "RunEvent");
    assert!(
        variants.iter().any(|v| v == "RunStarted") && variants.iter().any(|v| v == "RunFinished"),
        "could not read the variants of `RunEvent`: {variants:?}"
    );
    let doc = read("docs/protocol.md");
    let missing: Vec<String> = variants
        .iter()
        .map(|v| snake_case(v))
        .filter(|kind| !doc.contains(&format!("`{kind}`")))
        .collect();
    assert_none_missing("docs/protocol.md", "run event kinds", &missing);
}

#[test]
fn the_rush_file_doc_mentions_every_task_field() {
    let source = read("taskrushd/src/config/rush_file.rs");
    let start = source
        .find("const TASK_KEYS")
        .expect("rush_file.rs declares `TASK_KEYS`");
    let end = source[start..].find("];").expect("`TASK_KEYS` ends") + start;
    let mut fields: Vec<String> = source[start..end]
        .lines()
        .skip(1)
        .filter_map(string_literal)
        .map(str::to_owned)
        .collect();
    // The fields of the format, both spellings, even if TASK_KEYS moves.
    for field in [
        "cmd",
        "description",
        "depends_on",
        "deps",
        "cache_files",
        "cache",
        "env",
        "before",
        "after",
        "plugins",
    ] {
        if !fields.iter().any(|f| f == field) {
            fields.push(field.to_owned());
        }
    }
    let doc = read("docs/rush-file.md");
    let missing: Vec<String> = fields
        .into_iter()
        .filter(|field| !doc.contains(&format!("`{field}`")))
        .collect();
    assert_none_missing("docs/rush-file.md", "task fields", &missing);
}

/// Every `.rs` file under `dir`, skipping build output.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot read `{}`: {e}", dir.display()));
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| panic!("cannot read `{}`: {e}", dir.display()));
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            let name = entry.file_name();
            if name != "target" && name != "node_modules" && name != ".git" {
                rust_files(&path, out);
            }
        } else if kind.is_file() && path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_dbg_or_todo_macros_are_left_in_the_sources() {
    let root = root();
    // Built from pieces so that this file does not match itself.
    let needles = [format!("{}!(", "dbg"), format!("{}!(", "todo")];
    let mut files = Vec::new();
    for dir in ["protocol", "taskrushd", "taskrush-cli", "tests"] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(
        !files.is_empty(),
        "no .rs files found under {}",
        root.display()
    );
    let mut found = Vec::new();
    for file in files {
        if file.ends_with("tests/scenarios/tidy.rs") {
            continue; // this file names the macros it looks for
        }
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for (i, line) in text.lines().enumerate() {
            for needle in &needles {
                if line.contains(needle.as_str()) {
                    let rel = file.strip_prefix(&root).unwrap_or(&file);
                    found.push(format!("{}:{}: {}", rel.display(), i + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "leftover debugging macros:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_tidy_helpers_read_declarations_as_written() {
    assert_eq!(snake_case("RunStarted"), "run_started");
    assert_eq!(snake_case("Output"), "output");
    assert_eq!(
        error_codes("/// doc\npub const BUSY: i32 = -32007;\npub const X: u32 = 1;\n"),
        [("BUSY".to_owned(), -32007)]
    );
    assert_eq!(
        str_consts("pub const HELLO: &str = \"hello\";\npub const N: usize = 1;\n"),
        [("HELLO".to_owned(), "hello".to_owned())]
    );
    assert_eq!(
        all_list("pub const ALL: &[&str] = &[\n    HELLO,\n    RUN,\n];\n"),
        ["HELLO", "RUN"]
    );
    let source = "pub enum E {\n    /// `{x}` in a doc\n    A { x: u8 },\n    B {\n        y: u8,\n    },\n    C,\n}\n";
    assert_eq!(enum_variants(source, "E"), ["A", "B", "C"]);
}

/// The daemon's code map in `docs/architecture.md`: the text between its
/// heading and the next one.
fn daemon_code_map() -> String {
    let doc = read("docs/architecture.md");
    let start = doc
        .find("### `taskrushd/`")
        .expect("docs/architecture.md has a `taskrushd/` section");
    let rest = &doc[start + 4..];
    let end = rest.find("\n### ").unwrap_or(rest.len());
    rest[..end].to_owned()
}

#[test]
fn the_code_map_names_every_module_of_the_daemon() {
    let src = root().join("taskrushd/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let map = daemon_code_map();
    let mut missing = Vec::new();
    for file in files {
        let rel = file
            .strip_prefix(&src)
            .expect("under taskrushd/src")
            .to_string_lossy()
            .into_owned();
        // A room's `mod.rs` is named by its folder.
        let name = match rel.strip_suffix("/mod.rs") {
            Some(room) => format!("`{room}/`"),
            None => format!("`{rel}`"),
        };
        if rel != "main.rs" && !map.contains(&name) {
            missing.push(name);
        }
    }
    missing.sort();
    assert!(
        missing.is_empty(),
        "docs/architecture.md's code map does not name: {}",
        missing.join(", ")
    );
}

#[test]
fn every_daemon_file_the_docs_name_exists() {
    let mut named: Vec<(String, String)> = Vec::new();
    for doc in [
        "README.md",
        "docs/architecture.md",
        "docs/reliability.md",
        "docs/performance.md",
        "docs/plugins.md",
        "docs/protocol.md",
        "docs/rush-file.md",
    ] {
        let text = read(doc);
        for (i, _) in text.match_indices("taskrushd/src/") {
            let path: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '.' | '-'))
                .collect();
            named.push((doc.to_owned(), path.trim_end_matches('.').to_owned()));
        }
    }
    // The code map's first column names files relative to `taskrushd/src/`.
    let map = daemon_code_map();
    for row in map.lines().filter(|l| l.starts_with("| `")) {
        let cell = row[1..].split(" |").next().unwrap_or_default();
        for part in cell.split('`').skip(1).step_by(2) {
            named.push((
                "docs/architecture.md (code map)".into(),
                format!("taskrushd/src/{part}"),
            ));
        }
    }
    let missing: Vec<String> = named
        .into_iter()
        .filter(|(_, path)| !root().join(path).exists())
        .map(|(doc, path)| format!("{doc}: {path}"))
        .collect();
    assert!(
        missing.is_empty(),
        "named but missing:\n{}",
        missing.join("\n")
    );
}

/// The methods of the `api` trait: wire name and parameter names, in order.
fn api_signatures(source: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let mut rest = source;
    while let Some(at) = rest.find("(name = \"") {
        let after = &rest[at + "(name = \"".len()..];
        let name = after[..after.find('"').unwrap_or(0)].to_owned();
        let Some(fn_at) = after.find("fn ") else {
            break;
        };
        let sig = &after[fn_at..];
        let open = sig.find('(').expect("a signature has parameters") + 1;
        let mut depth = 1usize;
        let mut close = open;
        for (i, c) in sig[open..].char_indices() {
            match c {
                '(' | '<' => depth += 1,
                ')' | '>' => depth -= 1,
                _ => {}
            }
            if depth == 0 {
                close = open + i;
                break;
            }
        }
        let mut params = Vec::new();
        let mut depth = 0usize;
        let mut item = String::new();
        for c in sig[open..close].chars().chain([',']) {
            match c {
                '<' | '(' => depth += 1,
                '>' | ')' => depth -= 1,
                ',' if depth == 0 => {
                    let p = std::mem::take(&mut item);
                    if let Some((n, _)) = p.split_once(':') {
                        params.push(n.trim().to_owned());
                    }
                    continue;
                }
                _ => {}
            }
            item.push(c);
        }
        out.push((name, params));
        rest = &after[fn_at..];
    }
    out
}

/// `method::PARAMS`: wire name and parameter names.
fn params_table(source: &str) -> Vec<(String, Vec<String>)> {
    let consts = str_consts(source);
    let start = source
        .find("pub const PARAMS")
        .expect("method.rs declares `pub const PARAMS`");
    let body = &source[start..];
    let body = &body[..body.find("\n];").expect("`PARAMS` ends with `];`")];
    // One row per `(NAME, &[...]),`, however rustfmt wrapped it.
    let body = body.split_whitespace().collect::<Vec<_>>().join(" ");
    let body = body.split_once("= &[").map_or("", |(_, rows)| rows);
    body.split("),")
        .filter_map(|row| {
            let row = row.trim().strip_prefix('(')?;
            let (ident, names) = row.split_once(',')?;
            let wire = consts.iter().find(|(n, _)| n == ident.trim())?.1.clone();
            let names = names
                .split('"')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect();
            Some((wire, names))
        })
        .collect()
}

#[test]
fn the_parameter_names_table_matches_the_api_trait() {
    let api = api_signatures(&read("protocol/src/api.rs"));
    assert!(
        api.iter().any(|(n, p)| n == "run" && p == &["request"]),
        "could not read the `api` trait: {api:?}"
    );
    let table = params_table(&read("protocol/src/method.rs"));
    let mut wrong = Vec::new();
    for (name, params) in &api {
        match table.iter().find(|(n, _)| n == name) {
            Some((_, p)) if p == params => {}
            Some((_, p)) => wrong.push(format!("`{name}`: api {params:?}, PARAMS {p:?}")),
            None => wrong.push(format!("`{name}`: not in PARAMS (api {params:?})")),
        }
    }
    for (name, _) in &table {
        if !api.iter().any(|(n, _)| n == name) {
            wrong.push(format!(
                "`{name}`: in PARAMS but not a method of the api trait"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "protocol/src/method.rs `PARAMS` disagrees with protocol/src/api.rs:\n{}",
        wrong.join("\n")
    );
}

/// The first cells (backticks removed) of the table rows of `doc` after
/// `start`, up to the first line that is not a table row.
fn first_cells(doc: &str, start: &str) -> Vec<String> {
    let at = doc
        .find(start)
        .unwrap_or_else(|| panic!("docs/protocol.md has no `{start}`"));
    doc[at + start.len()..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2) // the header and its `| --- |` line
        .filter_map(|l| l.split('|').nth(1))
        .map(|cell| cell.trim().trim_matches('`').to_owned())
        .collect()
}

/// Fails listing what is only on one side.
fn assert_same(what: &str, doc: &[String], code: &[String], code_place: &str) {
    let only_doc: Vec<&String> = doc.iter().filter(|d| !code.contains(d)).collect();
    let only_code: Vec<&String> = code.iter().filter(|c| !doc.contains(c)).collect();
    assert!(
        only_doc.is_empty() && only_code.is_empty(),
        "docs/protocol.md's {what} and {code_place} disagree: only in the doc {only_doc:?}, only in the code {only_code:?}"
    );
}

#[test]
fn the_protocol_doc_lists_exactly_the_methods_and_notifications_of_the_code() {
    let doc = read("docs/protocol.md");
    let listed = first_cells(&doc, "<!-- methods: begin -->");
    let source = read("protocol/src/method.rs");
    let consts = str_consts(&source);
    let names: Vec<String> = consts.iter().map(|(_, v)| v.clone()).collect();
    assert_same("method list", &listed, &names, "protocol/src/method.rs");
    // Methods (`ALL`) are not listed as notifications, and the other way.
    let all = all_list(&source);
    let at = doc.find("<!-- methods: begin -->").unwrap_or(0);
    for line in doc[at..]
        .lines()
        .take_while(|l| !l.contains("methods: end"))
    {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 3 || !cells[1].starts_with('`') {
            continue;
        }
        let name = cells[1].trim_matches('`');
        let ident = consts.iter().find(|(_, v)| v == name).map(|(n, _)| n);
        let is_method = ident.is_some_and(|i| all.contains(i));
        assert_eq!(
            !cells[2].starts_with("notification"),
            is_method,
            "docs/protocol.md lists `{name}` as a {}, but method.rs {} it in `ALL`",
            cells[2],
            if is_method { "has" } else { "does not have" }
        );
    }
}

#[test]
fn the_protocol_doc_code_table_has_exactly_the_error_codes_of_the_code() {
    let doc = read("docs/protocol.md");
    let listed = first_cells(&doc, "### Codes");
    let codes: Vec<String> = error_codes(&read("protocol/src/error.rs"))
        .into_iter()
        .map(|(_, c)| c.to_string())
        .collect();
    assert!(
        codes.len() >= 10,
        "could not read the error codes: {codes:?}"
    );
    assert_same("table of codes", &listed, &codes, "protocol/src/error.rs");
}

#[test]
fn the_protocol_doc_capability_table_has_exactly_the_capabilities_of_the_code() {
    let doc = read("docs/protocol.md");
    let listed = first_cells(&doc, "<!-- capabilities: begin -->");
    let source = read("protocol/src/capability.rs");
    // The names of the rows of `ALL` (consts not in `ALL` are not sent).
    let all_at = source
        .find("pub const ALL")
        .expect("capability.rs has `ALL`");
    let consts = str_consts(&source);
    let names: Vec<String> = consts
        .iter()
        .filter(|(ident, _)| source[all_at..].contains(&format!("name: {ident},")))
        .map(|(_, v)| v.clone())
        .collect();
    assert!(
        names.iter().any(|n| n == "dispatch"),
        "could not read capability.rs: {names:?}"
    );
    assert_same(
        "capability table",
        &listed,
        &names,
        "protocol/src/capability.rs",
    );
}

#[test]
fn the_protocol_doc_daemon_event_table_has_exactly_the_daemon_events() {
    let doc = read("docs/protocol.md");
    let listed = first_cells(&doc, "### Daemon events");
    let kinds: Vec<String> = enum_variants(&read("protocol/src/events.rs"), "DaemonEvent")
        .iter()
        .map(|v| snake_case(v))
        .collect();
    assert!(kinds.len() > 5, "could not read `DaemonEvent`: {kinds:?}");
    assert_same(
        "daemon event table",
        &listed,
        &kinds,
        "protocol/src/events.rs",
    );
}

/// The `Option` fields of each variant of `pub enum NAME` in `source`, as
/// (variant, fields): the fields a client may not get.
fn optional_fields(source: &str, name: &str) -> Vec<(String, Vec<String>)> {
    let header = format!("pub enum {name} {{");
    let start = source
        .find(&header)
        .unwrap_or_else(|| panic!("no `{header}` found"));
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    let mut depth = 0usize;
    for line in source[start..].lines() {
        let code = line.split("//").next().unwrap_or("");
        let trimmed = code.trim_start();
        if depth == 1 {
            let ident: String = trimmed
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if ident.starts_with(|c: char| c.is_ascii_uppercase()) {
                out.push((ident, Vec::new()));
            }
        } else if depth == 2
            && let Some((field, ty)) = trimmed.split_once(':')
            && ty.trim_start().starts_with("Option<")
            && let Some((_, fields)) = out.last_mut()
        {
            fields.push(field.trim().trim_start_matches("pub ").to_owned());
        }
        for c in code.chars() {
            match c {
                '{' => depth += 1,
                '}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        if depth == 0 && !out.is_empty() {
            break;
        }
    }
    out
}

#[test]
fn the_protocol_doc_daemon_event_table_marks_the_optional_fields_optional() {
    let doc = read("docs/protocol.md");
    let at = doc
        .find("### Daemon events")
        .expect("a daemon events table");
    let table = &doc[at..];
    let variants = optional_fields(&read("protocol/src/events.rs"), "DaemonEvent");
    let rejected = variants
        .iter()
        .find(|(v, _)| v == "ConfigRejected")
        .map(|(_, f)| f.clone())
        .unwrap_or_default();
    assert_eq!(rejected, ["line", "column"], "could not read `DaemonEvent`");
    let mut unmarked = Vec::new();
    for (variant, fields) in &variants {
        let kind = snake_case(variant);
        let row_start = format!("| `{kind}` |");
        let Some(row) = table.lines().find(|l| l.starts_with(&row_start)) else {
            continue; // the table tidy test reports missing rows
        };
        let cell = row.split('|').nth(2).unwrap_or_default();
        for f in fields {
            if !cell.contains(&format!("`{f}`?")) {
                unmarked.push(format!("{kind}.{f}"));
            }
        }
    }
    assert!(
        unmarked.is_empty(),
        "docs/protocol.md's daemon event table does not mark these optional (`name`?) fields: {unmarked:?}"
    );
}
