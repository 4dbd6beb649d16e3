//! `taskrush plugin new` and `taskrush plugin build`: the author's commands
//! that need no daemon.
//!
//! `new` writes a working plugin from the templates in `templates/` and
//! vendors our SDK into it, so that its language's own tools find the SDK
//! without a registry: Python a package beside the entry point (`python3
//! -I` ignores site-packages), Node.js a copy in `node_modules/`, Go a
//! module in `third_party/` with a `replace`, Rust path dependencies in
//! `vendor/`. Templates and SDKs are embedded in the binary at build time
//! (`build.rs` lists the SDK files from the tree), so a clean install has
//! everything and the vendored SDK is the one this CLI speaks.
//!
//! `build` runs what a plugin needs built (`go build`, `cargo build`) with
//! its output streamed, and copies the result where `plugin.toml`'s
//! `entry_point` says.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::CliError;

mod sdk {
    include!(concat!(env!("OUT_DIR"), "/sdk_files.rs"));
}

/// The languages `plugin new --lang` knows.
pub const LANGS: &[&str] = &["python", "node", "go", "rust", "rust-wasm"];

/// One template file: (path in the plugin, text with `@NAME@`/`@IDENT@`).
type Template = (&'static str, &'static str);

const PYTHON: &[Template] = &[
    (
        "plugin.toml",
        include_str!("../templates/python/plugin.toml"),
    ),
    ("main.py", include_str!("../templates/python/main.py")),
    (
        "test_main.py",
        include_str!("../templates/python/test_main.py"),
    ),
];
const NODE: &[Template] = &[
    ("plugin.toml", include_str!("../templates/node/plugin.toml")),
    (
        "package.json",
        include_str!("../templates/node/package.json"),
    ),
    ("main.mjs", include_str!("../templates/node/main.mjs")),
    (
        "test/plugin.test.mjs",
        include_str!("../templates/node/test/plugin.test.mjs"),
    ),
];
const GO: &[Template] = &[
    ("plugin.toml", include_str!("../templates/go/plugin.toml")),
    ("go.mod", include_str!("../templates/go/go.mod")),
    ("main.go", include_str!("../templates/go/main.go")),
    ("main_test.go", include_str!("../templates/go/main_test.go")),
];
const RUST: &[Template] = &[
    ("plugin.toml", include_str!("../templates/rust/plugin.toml")),
    ("Cargo.toml", include_str!("../templates/rust/Cargo.toml")),
    ("src/lib.rs", include_str!("../templates/rust/src/lib.rs")),
    ("src/main.rs", include_str!("../templates/rust/src/main.rs")),
];
const RUST_WASM: &[Template] = &[
    (
        "plugin.toml",
        include_str!("../templates/rust-wasm/plugin.toml"),
    ),
    (
        "Cargo.toml",
        include_str!("../templates/rust-wasm/Cargo.toml"),
    ),
    // The very same plugin code as `rust`: the SDK's `export_plugin!`
    // makes it a WebAssembly plugin when built for wasm32-wasip1.
    ("src/lib.rs", include_str!("../templates/rust/src/lib.rs")),
];

/// `taskrush plugin new NAME --lang LANG [--dir D]`.
pub fn new(name: &str, lang: &str, dir: Option<&Path>) -> Result<i32, CliError> {
    check_name(name)?;
    let dest = match dir {
        Some(d) => d.to_path_buf(),
        None => PathBuf::from(name),
    };
    if dest.exists()
        && std::fs::read_dir(&dest)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(usage(
            format!(
                "`{}` exists and is not empty: `plugin new` writes a plugin into a new directory",
                dest.display()
            ),
            "give another name or `--dir`".into(),
        ));
    }
    let ident = name.replace('-', "_");
    let mut files: Vec<(String, String)> = Vec::new();
    let templates = match lang {
        "python" => PYTHON,
        "node" => NODE,
        "go" => GO,
        "rust" => RUST,
        "rust-wasm" => RUST_WASM,
        other => {
            return Err(usage(
                format!("unknown language `{other}`"),
                format!("`--lang` is one of {}", LANGS.join(", ")),
            ));
        }
    };
    for (path, text) in templates {
        files.push((
            (*path).to_owned(),
            text.replace("@NAME@", name).replace("@IDENT@", &ident),
        ));
    }
    let vendor = |prefix: &str, set: &[(&str, &str)], files: &mut Vec<(String, String)>| {
        for (rel, text) in set {
            files.push((format!("{prefix}/{rel}"), (*text).to_owned()));
        }
    };
    match lang {
        "python" => vendor("taskrush_plugin", sdk::PYTHON_SDK, &mut files),
        "node" => vendor("node_modules/taskrush-plugin", sdk::NODE_SDK, &mut files),
        "go" => vendor("third_party/taskrush-plugin", sdk::GO_SDK, &mut files),
        _ => {
            for (rel, text) in sdk::RUST_SDK {
                let text = if *rel == "Cargo.toml" {
                    standalone_manifest(text)
                } else {
                    (*text).to_owned()
                };
                files.push((format!("vendor/taskrush-plugin/{rel}"), text));
            }
            for (rel, text) in sdk::PROTOCOL {
                let text = if *rel == "Cargo.toml" {
                    standalone_manifest(text)
                } else {
                    (*text).to_owned()
                };
                files.push((format!("vendor/taskrush-protocol/{rel}"), text));
            }
        }
    }
    files.push(("README.md".into(), readme(name, lang)));
    files.push((".gitignore".into(), gitignore(name, lang)));
    for (rel, text) in &files {
        let path = dest.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| CliError::io(&format!("cannot create `{}`", parent.display()), e))?;
        }
        std::fs::write(&path, text)
            .map_err(|e| CliError::io(&format!("cannot write `{}`", path.display()), e))?;
    }
    println!("created plugin `{name}` ({lang}) in `{}`", dest.display());
    let shown = dest.display();
    let needs_build = matches!(lang, "go" | "rust" | "rust-wasm");
    if needs_build {
        println!("next: taskrush plugin build {shown} && taskrush plugin test {shown}");
    } else {
        println!("next: taskrush plugin test {shown}");
    }
    println!("then hook it into a .rush: see `{shown}/README.md`");
    Ok(0)
}

fn usage(message: String, hint: String) -> CliError {
    CliError::Usage {
        message,
        hint: Some(hint),
    }
}

/// A plugin name: what `.rush` files and `plugin.toml` say, and a command
/// name of its own.
fn check_name(name: &str) -> Result<(), CliError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(usage(
            format!("`{name}` is not a plugin name"),
            "lower-case letters, digits and `-`, starting with a letter (e.g. `deploy-guard`)"
                .into(),
        ))
    }
}

/// A crate's `Cargo.toml` from the workspace made standalone: what it
/// inherits from the workspace written out, the protocol as a path
/// dependency beside it, the daemon's and CLI's optional halves (jsonrpsee)
/// left out, lints not inherited.
fn standalone_manifest(text: &str) -> String {
    let ws = workspace_values();
    let mut out = String::new();
    let mut section = String::new();
    let mut skip_section = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            section = trimmed.to_owned();
            skip_section = section == "[lints]";
            if skip_section {
                continue;
            }
        }
        if skip_section {
            continue;
        }
        let Some((key, value)) = trimmed.split_once('=') else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        if section == "[features]" && value.contains("dep:") {
            out.push_str(&format!("{key} = []\n"));
            continue;
        }
        if value.contains("workspace = true") && value.contains("optional = true") {
            continue;
        }
        if let Some(name) = key.strip_suffix(".workspace") {
            if name == "taskrush-protocol" {
                out.push_str("taskrush-protocol = { path = \"../taskrush-protocol\" }\n");
                continue;
            }
            let table = if section == "[package]" {
                "package"
            } else {
                "dependencies"
            };
            match ws.iter().find(|(t, k, _)| t == table && k == name) {
                Some((_, _, v)) => out.push_str(&format!("{name} = {v}\n")),
                None if table == "package" => {}
                None => out.push_str(&format!("{name} = \"*\"\n")),
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.push_str("\n# Vendored by `taskrush plugin new`: not a workspace member.\n");
    out
}

/// `[workspace.package]` and `[workspace.dependencies]` of our workspace:
/// (table, key, value as written).
fn workspace_values() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut table = "";
    for line in sdk::WORKSPACE_TOML.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            table = match t {
                "[workspace.package]" => "package",
                "[workspace.dependencies]" => "dependencies",
                _ => "",
            };
            continue;
        }
        if table.is_empty() {
            continue;
        }
        if let Some((k, v)) = t.split_once('=') {
            out.push((table.to_owned(), k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    out
}

fn gitignore(name: &str, lang: &str) -> String {
    match lang {
        "go" => format!("/{name}\n"),
        "rust" => format!("/target\n/Cargo.lock\n/{name}\n"),
        "rust-wasm" => format!("/target\n/Cargo.lock\n/{name}.wasm\n"),
        _ => "__pycache__/\n".into(),
    }
}

fn readme(name: &str, lang: &str) -> String {
    let (what, build, test) = match lang {
        "python" => (
            "Python 3.9+, standard library only. `main.py` is the plugin; the SDK is vendored in `taskrush_plugin/` (the entry point runs `python3 -I`, which ignores site-packages, so the copy beside `main.py` is the one used).",
            "Nothing to build.",
            "python3 -m unittest -v",
        ),
        "node" => (
            "Node.js 18+, no dependencies to install. `main.mjs` is the plugin; the SDK is vendored as a package in `node_modules/taskrush-plugin/` (a copy, not a link).",
            "Nothing to build.",
            "node --test",
        ),
        "go" => (
            "Go 1.19+. `main.go` is the plugin; the SDK is vendored in `third_party/taskrush-plugin/`, which `go.mod` points at with a `replace` (no module proxy serves it).",
            "`taskrush plugin build` runs `go build -o NAME .` (the `entry_point` of `plugin.toml`).",
            "go test ./...",
        ),
        "rust" => (
            "Rust. `src/lib.rs` is the plugin, exported with `taskrush_plugin::export_plugin!`; `src/main.rs` is its program. The SDK and the protocol crate are vendored in `vendor/` as path dependencies.",
            "`taskrush plugin build` runs `cargo build --release` and copies the program beside `plugin.toml` (its `entry_point`).",
            "cargo test",
        ),
        _ => (
            "Rust, built for WebAssembly (`wasm32-wasip1`; the daemon runs it in its sandbox). `src/lib.rs` is the plugin, exported with `taskrush_plugin::export_plugin!`. The SDK and the protocol crate are vendored in `vendor/` as path dependencies.",
            "`taskrush plugin build` runs `cargo build --target wasm32-wasip1 --profile plugin` and copies the module beside `plugin.toml` (its `entry_point`). The target: `rustup target add wasm32-wasip1`.",
            "cargo test",
        ),
    };
    let build = build.replace("NAME", name);
    // The `.rush` entry of a WebAssembly plugin says its type too.
    let kind = if lang == "rust-wasm" {
        "    type: wasm\n"
    } else {
        ""
    };
    format!(
        "# {name}\n\n\
         A TaskRush plugin, made by `taskrush plugin new`. {what}\n\n\
         What it does, as an example to change:\n\n\
         - `before_task`: refuses (vetoes) the tasks its config's `block` list names, and logs the others;\n\
         - `after_task`: logs how each task ended (a warning when it failed: shown in the run's output);\n\
         - a command, `taskrush {name} [ARGS]`, that says hello.\n\n\
         ## Build and test\n\n\
         {build}\n\n\
         ```sh\n\
         taskrush plugin build .   # where there is something to build\n\
         taskrush plugin test .    # the conformance kit: the daemon drives it through the protocol\n\
         {test}  # its own tests\n\
         ```\n\n\
         ## Use it in a project\n\n\
         In the project's `.rush`, with `path:` relative to the `.rush` file:\n\n\
         ```yaml\n\
         plugins:\n  \
           - name: {name}\n    \
             path: ./{name}\n{kind}    \
             config:\n      \
               block: [deploy]\n\n\
         tasks:\n  \
           build:\n    \
             cmd: echo building\n  \
           deploy:\n    \
             cmd: echo deploying\n\
         ```\n\n\
         Then `taskrush build` runs (the plugin logs it), `taskrush deploy` is refused with\n\
         ``vetoed by plugin `{name}` ``, and `taskrush {name} there` prints `hello from {name} there`.\n\
         Warnings and errors it logs during a run are shown in that run's output as\n\
         `[{name}] warning: …`; `taskrush plugin logs {name}` shows every line (`-f` follows).\n\n\
         The daemon picks up changes to the plugin's files by itself (a new process or\n\
         instance takes the next call). What the plugin may use is in `plugin.toml`'s\n\
         `[permissions]`; the user grants it on first use.\n"
    )
}

/// `taskrush plugin build [DIR]`.
pub fn build(dir: Option<&Path>) -> Result<i32, CliError> {
    let dir = dir.unwrap_or(Path::new("."));
    let manifest_path = dir.join("plugin.toml");
    let manifest = std::fs::read_to_string(&manifest_path).map_err(|e| {
        CliError::io(
            &format!(
                "cannot read `{}` (is `{}` a plugin's directory?)",
                manifest_path.display(),
                dir.display()
            ),
            e,
        )
    })?;
    let entry = entry_point(&manifest).ok_or_else(|| {
        usage(
            format!("`{}` has no `entry_point` list", manifest_path.display()),
            "see `docs/plugins.md`, \"The manifest\"".into(),
        )
    })?;
    let target = entry.trim_start_matches("./").to_owned();
    if dir.join("go.mod").is_file() {
        run_tool(dir, "go", &["build", "-o", &target, "."], GO_HINT)?;
        println!("built `{}`", dir.join(&target).display());
        return Ok(0);
    }
    let cargo_toml = dir.join("Cargo.toml");
    if cargo_toml.is_file() {
        let cargo = std::fs::read_to_string(&cargo_toml)
            .map_err(|e| CliError::io(&format!("cannot read `{}`", cargo_toml.display()), e))?;
        let wasm = manifest
            .lines()
            .any(|l| l.split_whitespace().collect::<String>() == "type=\"wasm\"");
        // Where cargo puts what it builds: `$CARGO_TARGET_DIR` when set
        // (relative to the plugin's directory, as cargo reads it), else
        // `target/` beside `Cargo.toml`.
        let target_dir = std::env::var_os("CARGO_TARGET_DIR")
            .filter(|v| !v.is_empty())
            .map(|v| dir.join(v))
            .unwrap_or_else(|| dir.join("target"));
        let built = if wasm {
            wasm_target_installed()?;
            let profile = if cargo.contains("[profile.plugin]") {
                "plugin"
            } else {
                "release"
            };
            run_tool(
                dir,
                "cargo",
                &["build", "--target", "wasm32-wasip1", "--profile", profile],
                CARGO_HINT,
            )?;
            let lib = lib_name(&cargo)
                .unwrap_or_else(|| target.trim_end_matches(".wasm").replace('-', "_"));
            target_dir
                .join("wasm32-wasip1")
                .join(profile)
                .join(format!("{lib}.wasm"))
        } else {
            run_tool(dir, "cargo", &["build", "--release"], CARGO_HINT)?;
            target_dir.join("release").join(&target)
        };
        let dest = dir.join(&target);
        std::fs::copy(&built, &dest).map_err(|e| {
            CliError::io(
                &format!("cannot copy `{}` to `{}`", built.display(), dest.display()),
                e,
            )
        })?;
        println!("built `{}`", dest.display());
        return Ok(0);
    }
    println!(
        "nothing to build in `{}`: `{}` runs as it is",
        dir.display(),
        entry
    );
    Ok(0)
}

const GO_HINT: &str =
    "install Go (Debian, Ubuntu: `apt-get install golang-go`; else https://go.dev/dl/)";
const CARGO_HINT: &str = "install Rust with rustup: https://rustup.rs";

/// The first element of `entry_point = [...]` (TOML basic strings read as
/// JSON ones; enough for what `plugin new` writes and most manifests).
fn entry_point(manifest: &str) -> Option<String> {
    let line = manifest
        .lines()
        .find(|l| l.trim_start().starts_with("entry_point"))?;
    let (_, value) = line.split_once('=')?;
    let list: Vec<String> = serde_json::from_str(value.trim()).ok()?;
    list.into_iter().next()
}

/// `name = "…"` of the `[lib]` table.
fn lib_name(cargo: &str) -> Option<String> {
    let mut in_lib = false;
    for line in cargo.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            in_lib = t == "[lib]";
            continue;
        }
        if in_lib
            && let Some((k, v)) = t.split_once('=')
            && k.trim() == "name"
        {
            return Some(v.trim().trim_matches('"').to_owned());
        }
    }
    None
}

/// Run `program args` in `dir`, its output streamed to ours.
fn run_tool(dir: &Path, program: &str, args: &[&str], hint: &str) -> Result<(), CliError> {
    eprintln!(
        "taskrush: running `{program} {}` in `{}`",
        args.join(" "),
        dir.display()
    );
    let status = match Command::new(program).args(args).current_dir(dir).status() {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(usage(
                format!(
                    "`{program}` is not installed (not found on `PATH`): it builds this plugin"
                ),
                hint.into(),
            ));
        }
        Err(e) => return Err(CliError::io(&format!("cannot run `{program}`"), e)),
    };
    if status.success() {
        Ok(())
    } else {
        Err(usage(
            format!("`{program} {}` failed ({status})", args.join(" ")),
            "its output is above".into(),
        ))
    }
}

/// The Rust standard library for `wasm32-wasip1` is there.
fn wasm_target_installed() -> Result<(), CliError> {
    let sysroot = match Command::new("rustc").args(["--print", "sysroot"]).output() {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        Ok(_) | Err(_) => {
            return Err(usage(
                "`rustc` is not installed (not found on `PATH`): it builds this plugin".into(),
                CARGO_HINT.into(),
            ));
        }
    };
    if Path::new(&sysroot)
        .join("lib/rustlib/wasm32-wasip1")
        .is_dir()
    {
        Ok(())
    } else {
        Err(usage(
            "the Rust target `wasm32-wasip1` is not installed: it builds WebAssembly plugins"
                .into(),
            "rustup target add wasm32-wasip1".into(),
        ))
    }
}
