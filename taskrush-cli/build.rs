//! Embeds the plugin SDKs (`plugins-external/`) and the protocol crate in
//! the CLI, for `taskrush plugin new` to vendor into a new plugin: a clean
//! install has no source tree. The file lists are read from the tree at
//! build time, so a file added to an SDK is embedded without a change here.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let cli = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = cli.parent().expect("the workspace").to_path_buf();
    let sdk = root.join("plugins-external");
    let mut out = String::new();
    // (constant, directory, recurse, which files)
    let sets: [Set; 5] = [
        (
            "PYTHON_SDK",
            sdk.join("python/taskrush_plugin"),
            true,
            |p| p.extension().is_some_and(|e| e == "py" || e == "typed"),
        ),
        ("NODE_SDK", sdk.join("node"), false, |p| {
            let n = name(p);
            n.starts_with("index.") || n == "package.json"
        }),
        ("GO_SDK", sdk.join("go"), false, |p| {
            let n = name(p);
            n == "go.mod" || (n.ends_with(".go") && !n.ends_with("_test.go"))
        }),
        ("RUST_SDK", sdk.join("rust"), true, |p| {
            let n = name(p);
            n == "Cargo.toml" || n.ends_with(".rs")
        }),
        ("PROTOCOL", root.join("protocol"), true, |p| {
            let n = name(p);
            n == "Cargo.toml" || n.ends_with(".rs")
        }),
    ];
    for (constant, dir, recurse, keep) in sets {
        println!("cargo:rerun-if-changed={}", dir.display());
        let mut files = Vec::new();
        walk(&dir, recurse, &mut files);
        files.retain(|p| keep(p));
        files.sort();
        let _ = writeln!(out, "pub const {constant}: &[(&str, &str)] = &[");
        for f in files {
            let rel = f.strip_prefix(&dir).expect("below its set");
            let _ = writeln!(
                out,
                "    ({:?}, include_str!({:?})),",
                rel.display().to_string(),
                f.display().to_string()
            );
        }
        let _ = writeln!(out, "];");
    }
    let ws = root.join("Cargo.toml");
    println!("cargo:rerun-if-changed={}", ws.display());
    let _ = writeln!(
        out,
        "pub const WORKSPACE_TOML: &str = include_str!({:?});",
        ws.display().to_string()
    );
    let dest = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("sdk_files.rs");
    std::fs::write(dest, out).expect("write sdk_files.rs");
}

/// (constant, directory, recurse, which files).
type Set = (&'static str, PathBuf, bool, fn(&Path) -> bool);

fn name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn walk(dir: &Path, recurse: bool, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let Ok(t) = e.file_type() else { continue };
        if t.is_dir() {
            let n = name(&p);
            if recurse && n != "target" && n != "__pycache__" && n != "node_modules" {
                walk(&p, recurse, out);
            }
        } else if t.is_file() {
            out.push(p);
        }
    }
}
