//! One plugin, three kinds: the example `build-metrics-native` (one crate
//! using this SDK) built by `scripts/build-native-examples` as a `cdylib`
//! and as a binary, and by `scripts/build-wasm-examples` for
//! `wasm32-wasip1`, driven through the same conversation: as a native
//! library through the C ABI (loaded here with `libloading`, as the daemon
//! loads it), as an external process over stdio, and as a WebAssembly
//! module under Node's engine (`tests/wasm-stdio.mjs`: this SDK links no
//! engine; the daemon's scenario
//! `one_rust_plugin_passes_the_same_scenario_as_native_wasm_and_external_process`
//! runs all three under the daemon, wasmtime included).
#![allow(unsafe_code)] // loading and calling the library under test

use std::ffi::c_void;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use taskrush_plugin::native::HostFn;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the workspace")
}

/// Built, or `None` with a printed reason (a failure under `CI` or
/// `TASKRUSH_REQUIRE_NATIVE`).
fn built() -> Option<PathBuf> {
    let out = Command::new(repo().join("scripts/build-native-examples"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    let reason = match out {
        Ok(o) if o.status.success() => return Some(repo().join("target/debug")),
        Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
        Err(e) => e.to_string(),
    };
    let required = |v: &str| std::env::var(v).is_ok_and(|v| !v.is_empty() && v != "0");
    if required("CI") || required("TASKRUSH_REQUIRE_NATIVE") {
        panic!("scripts/build-native-examples failed: {reason}");
    }
    eprintln!("skipped: scripts/build-native-examples failed: {reason}");
    None
}

/// The conversation every kind must answer alike: `initialize`, two
/// `after_task` hooks, the `build-metrics` command.
fn scenario(call: &mut dyn FnMut(Value) -> Value) {
    let init = call(
        json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
        "protocol_versions":[1],"taskrush_version":"0.3.0","name":"build-metrics",
        "config":{},"project_root":"/p","permissions":[]}}),
    );
    assert_eq!(init["result"]["name"], "build-metrics", "{init}");
    assert_eq!(init["result"]["hooks"], json!(["after_task"]), "{init}");
    for (id, task, ms) in [(2, "compile", 30), (3, "test", 12)] {
        let r = call(
            json!({"jsonrpc":"2.0","id":id,"method":"after_task","params":{
            "context":{"task_name":task,"command":"","working_dir":"/p","run_id":1},
            "result":{"status":"success","duration_ms":ms}}}),
        );
        assert_eq!(r, json!({"jsonrpc":"2.0","id":id,"result":null}));
    }
    let r = call(json!({"jsonrpc":"2.0","id":4,"method":"command","params":{
        "name":"build-metrics","args":[],"cwd":"/p"}}));
    let stdout = r["result"]["stdout"].as_str().unwrap_or_default();
    assert!(
        stdout.starts_with("build metrics: 2 tasks, 0 failed, 42 ms in all\n"),
        "{r}"
    );
    assert!(stdout.find("compile") < stdout.find("test"), "{stdout}");
}

type CallFn = unsafe extern "C" fn(
    *const u8,
    usize,
    *mut c_void,
    Option<HostFn>,
    *mut *mut u8,
    *mut usize,
) -> i32;
type FreeFn = unsafe extern "C" fn(*mut u8, usize);

/// Answers no host call (the example makes none but a log line).
unsafe extern "C" fn no_host(
    _ctx: *mut c_void,
    _msg: *const u8,
    _len: usize,
    _answer: *mut *const u8,
    _answer_len: *mut usize,
) -> i32 {
    taskrush_plugin::protocol::host::native::HOST_NO_ANSWER
}

#[test]
fn the_example_answers_the_same_conversation_as_a_native_library_and_as_a_process() {
    let Some(dir) = built() else {
        return;
    };
    // Native: the C ABI, as the daemon calls it.
    let lib_path = dir.join(taskrush_plugin::protocol::host::native::library_file(
        "build_metrics",
    ));
    // SAFETY: the library under test, built from this workspace.
    let lib = unsafe { libloading::Library::new(&lib_path) }.expect("the cdylib loads");
    // SAFETY: the ABI's types of these symbols.
    let (version, call, free) = unsafe {
        (
            *lib.get::<unsafe extern "C" fn() -> u32>(b"taskrush_native_abi_version")
                .expect("version symbol"),
            *lib.get::<CallFn>(b"taskrush_native_call")
                .expect("call symbol"),
            *lib.get::<FreeFn>(b"taskrush_native_free")
                .expect("free symbol"),
        )
    };
    // SAFETY: takes nothing, returns a number.
    assert_eq!(unsafe { version() }, 1);
    scenario(&mut |msg| {
        let bytes = serde_json::to_vec(&msg).unwrap();
        let (mut out, mut out_len) = (std::ptr::null_mut(), 0usize);
        // SAFETY: the message lives across the call; local out-pointers.
        let rc = unsafe {
            call(
                bytes.as_ptr(),
                bytes.len(),
                std::ptr::null_mut(),
                Some(no_host),
                &mut out,
                &mut out_len,
            )
        };
        assert_eq!(rc, 0);
        // SAFETY: the plugin's answer, freed once with its length below.
        let answer = unsafe { std::slice::from_raw_parts(out, out_len) }.to_vec();
        // SAFETY: as above.
        unsafe { free(out, out_len) };
        serde_json::from_slice(&answer).expect("a JSON answer")
    });

    // An external process: the crate's binary on stdio.
    over_stdio(Command::new(dir.join("build-metrics")));
}

#[test]
fn the_example_built_for_wasm_answers_the_same_conversation() {
    let wasm = repo().join("plugins-external/examples/build-metrics-native/build-metrics.wasm");
    let required = |v: &str| std::env::var(v).is_ok_and(|v| !v.is_empty() && v != "0");
    let node = Command::new("node").arg("--version").output();
    let missing = if !wasm.is_file() {
        Some(format!(
            "`{}` is not built (scripts/build-wasm-examples)",
            wasm.display()
        ))
    } else if !node.is_ok_and(|o| o.status.success()) {
        Some("`node` is not installed".to_owned())
    } else {
        None
    };
    if let Some(why) = missing {
        if required("TASKRUSH_REQUIRE_WASM") {
            panic!("{why}");
        }
        eprintln!("skipped: {why}");
        return;
    }
    let mut node = Command::new("node");
    node.arg(repo().join("plugins-external/rust/tests/wasm-stdio.mjs"))
        .arg(&wasm);
    over_stdio(node);
}

/// Runs [`scenario`] against a plugin speaking JSON-RPC lines on stdio.
fn over_stdio(mut command: Command) {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    scenario(&mut |msg| {
        writeln!(stdin, "{msg}").expect("write");
        loop {
            let mut line = String::new();
            assert!(stdout.read_line(&mut line).expect("read") > 0, "it exited");
            let v: Value = serde_json::from_str(&line).expect("a JSON line");
            // Its log line is a notification (a host call): skipped.
            if v.get("method").is_none() {
                return v;
            }
        }
    });
    drop(stdin);
    assert!(child.wait().expect("it exits").success());
}
