//! `docs/rush.schema.json`, the JSON Schema of the `.rush` file for
//! editors: it names every key the hand-written parser accepts (and no
//! other), accepts the docs' examples, and rejects a misspelled key, as
//! `taskrush` does.

use std::path::{Path, PathBuf};

use taskrush_tests::Scenario;

const SCHEMA: &str = "docs/rush.schema.json";

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

fn schema() -> serde_json::Value {
    serde_json::from_str(&read(SCHEMA)).unwrap_or_else(|e| panic!("`{SCHEMA}` is not JSON: {e}"))
}

/// The string literals of `const NAME: &[&str] = &[ … ];` in `source`.
fn key_list(source: &str, file: &str, name: &str) -> Vec<String> {
    let start = source
        .find(&format!("const {name}: &[&str] = &["))
        .unwrap_or_else(|| panic!("`{file}` declares no `const {name}: &[&str] = &[…]`"));
    let body = &source[start..];
    let open = body.find("= &[").expect("a slice literal") + 4;
    let close = body[open..].find("];").expect("the slice ends with `];`") + open;
    body[open..close]
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// The property names of the object schema at `pointer`, unwrapping an
/// `anyOf` of null and an object.
fn schema_keys(schema: &serde_json::Value, pointer: &str) -> Vec<String> {
    let node = schema
        .pointer(pointer)
        .unwrap_or_else(|| panic!("`{SCHEMA}` has nothing at `{pointer}`"));
    let object = node
        .get("anyOf")
        .and_then(|any| any.as_array())
        .and_then(|any| any.iter().find(|s| s.get("properties").is_some()))
        .unwrap_or(node);
    object["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("`{SCHEMA}` at `{pointer}` has no `properties`"))
        .keys()
        .cloned()
        .collect()
}

#[test]
fn the_rush_schema_names_every_key_the_parser_accepts() {
    let rush_file = "taskrushd/src/config/rush_file.rs";
    let limits = "taskrushd/src/config/limits.rs";
    let parser = read(rush_file);
    let limits_source = read(limits);
    let schema = schema();
    // (where the parser lists the keys, the const, where the schema does)
    let places = [
        (rush_file, &parser, "TOP_KEYS", ""),
        (rush_file, &parser, "TASK_KEYS", "/$defs/task"),
        (rush_file, &parser, "PLUGIN_KEYS", "/$defs/plugin"),
        (
            limits,
            &limits_source,
            "LIMIT_KEYS",
            "/$defs/plugin/properties/limits",
        ),
    ];
    let mut problems = Vec::new();
    for (file, source, name, pointer) in places {
        let accepted = key_list(source, file, name);
        let described = schema_keys(&schema, pointer);
        for key in accepted.iter().filter(|k| !described.contains(k)) {
            problems.push(format!(
                "the parser accepts `{key}` (`{name}` in `{file}`) but `{SCHEMA}` does not: \
                 add `\"{key}\": {{ \"description\": \"…\", … }}` to the `properties` at `{}`",
                if pointer.is_empty() { "/" } else { pointer }
            ));
        }
        for key in described.iter().filter(|k| !accepted.contains(k)) {
            problems.push(format!(
                "`{SCHEMA}` describes `{key}` at `{}` but the parser rejects it: \
                 remove it there, or add `\"{key}\"` to `{name}` in `{file}` (and parse it)",
                if pointer.is_empty() { "/" } else { pointer }
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

/// A validator for `docs/rush.schema.json`.
fn validator() -> (boon::Schemas, boon::SchemaIndex) {
    let mut schemas = boon::Schemas::new();
    let mut compiler = boon::Compiler::new();
    let url = "file:///rush.schema.json";
    compiler
        .add_resource(url, schema())
        .expect("the schema is added");
    let index = compiler
        .compile(url, &mut schemas)
        .unwrap_or_else(|e| panic!("`{SCHEMA}` does not compile: {e:#}"));
    (schemas, index)
}

fn yaml_to_json(yaml: &str) -> serde_json::Value {
    serde_norway::from_str(yaml).unwrap_or_else(|e| panic!("not YAML ({e}):\n{yaml}"))
}

/// The ```yaml blocks of `doc` that hold a `tasks:` key, with their line.
fn rush_examples(doc: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut block: Option<(usize, String)> = None;
    for (i, line) in doc.lines().enumerate() {
        match &mut block {
            None if line.trim() == "```yaml" => block = Some((i + 2, String::new())),
            None => {}
            Some(_) if line.trim() == "```" => {
                let (at, text) = block.take().expect("in a block");
                if text.lines().any(|l| l.starts_with("tasks:")) {
                    out.push((at, text));
                }
            }
            Some((_, text)) => {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    out
}

#[test]
fn the_rush_schema_accepts_every_example_in_the_docs() {
    let (schemas, index) = validator();
    let mut docs: Vec<String> = std::fs::read_dir(root().join("docs"))
        .expect("docs/")
        .filter_map(|e| e.ok())
        .map(|e| format!("docs/{}", e.file_name().to_string_lossy()))
        .filter(|name| name.ends_with(".md"))
        .collect();
    docs.push("README.md".to_owned());
    docs.sort();
    let mut checked = 0;
    let mut problems = Vec::new();
    for doc in docs {
        for (line, example) in rush_examples(&read(&doc)) {
            checked += 1;
            if let Err(e) = schemas.validate(&yaml_to_json(&example), index) {
                problems.push(format!("{doc}:{line}: {e:#}\n{example}"));
            }
        }
    }
    assert!(checked >= 10, "only {checked} examples found");
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn a_misspelled_key_is_rejected_by_the_schema_as_by_taskrush() {
    // Given a task whose `cmd` is misspelled `cmdd`,
    let yaml = "tasks:\n  build:\n    cmdd: cargo build\n";
    // the schema rejects it, naming the key,
    let (schemas, index) = validator();
    let typo = yaml_to_json(yaml);
    let err = schemas
        .validate(&typo, index)
        .expect_err("`cmdd` is not a key");
    assert!(format!("{err:#}").contains("cmdd"), "{err:#}");
    // and so does `taskrush`, at the key's position.
    let s = Scenario::new().rush(yaml);
    let out = s.run(&["--list"]);
    out.expect_code(1);
    out.expect_stderr_containing("unknown key `cmdd`");
    // A correct file passes both.
    let good =
        "tasks:\n  build:\n    cmd: cargo build\n    deps: [gen]\n  gen:\n    cmd: ./gen.sh\n";
    schemas
        .validate(&yaml_to_json(good), index)
        .expect("a valid file");
}
