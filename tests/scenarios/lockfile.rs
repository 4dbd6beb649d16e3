//! The lock file `.rush.lock`, `version:` resolution against installed
//! plugins and the verification of installed plugins before every start
//! (issue 15): a `file://` registry built in the test with the daemon's
//! `plugin_publish`, keys made by the stock `minisign` CLI, the fixture
//! plugin (`plugins-external/fixtures/fixture.py`) copied into each
//! published version.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use taskrush_tests::{Scenario, signal, wait_until};

use super::plugins::fixtures;

const RUSH: &str = "plugins:\n  - name: hello\n    version: \"^1.0\"\n    config: {record: '${REC}'}\ntasks:\n  t:\n    cmd: echo ran\n";

/// One request on a fresh connection.
fn call(s: &Scenario, method: &str, params: Value) -> Value {
    let mut c = UnixStream::connect(s.socket()).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(60))).ok();
    let msg = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    writeln!(c, "{msg}").expect("send");
    let mut line = String::new();
    BufReader::new(c).read_line(&mut line).expect("answer");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
}

/// A registry directory and a key; `None` (with a printed reason) when
/// the `minisign` CLI is missing.
struct Registry {
    dir: PathBuf,
    key: PathBuf,
}

fn registry(s: Scenario) -> Option<(Scenario, Registry)> {
    let dir = s.root().join("registry");
    std::fs::create_dir_all(&dir).expect("registry dir");
    let (pk, sk) = (s.root().join("k.pub"), s.root().join("k.key"));
    let made = std::process::Command::new("minisign")
        .args(["-G", "-W", "-p"])
        .arg(&pk)
        .arg("-s")
        .arg(&sk)
        .stdout(std::process::Stdio::null())
        .status();
    if !made.is_ok_and(|st| st.success()) {
        eprintln!("skipped: the `minisign` CLI is not installed (scripts/test installs it)");
        return None;
    }
    let pk = std::fs::read_to_string(&pk).expect("public key");
    let key_line = pk.lines().nth(1).expect("key line").trim().to_owned();
    let rec = s.project().join("rec.jsonl").display().to_string();
    let s = s
        .user_config(&format!(
            "[[registries]]\nname = \"team\"\nurl = \"file://{}\"\nkeys = [\"{key_line}\"]\n",
            dir.display()
        ))
        .grant("hello")
        .env("REC", &rec);
    s.start_daemon(&[]);
    Some((s, Registry { dir, key: sk }))
}

/// Publish `hello` VERSION (the fixture in `good` mode) with `network`
/// declared, and `extra` bytes of filler in the tree.
fn publish(s: &Scenario, r: &Registry, version: &str, network: &[&str], extra: usize) {
    let src = s.root().join(format!("src-{version}"));
    std::fs::create_dir_all(&src).expect("src");
    std::fs::copy(fixtures().join("fixture.py"), src.join("main.py")).expect("copy fixture");
    let hosts: Vec<String> = network.iter().map(|h| format!("\"{h}\"")).collect();
    std::fs::write(
        src.join("plugin.toml"),
        format!(
            "name = \"hello\"\nversion = \"{version}\"\ndescription = \"says hello\"\n\
             entry_point = [\"python3\", \"-I\", \"-u\", \"main.py\", \"good\", \"{version}\"]\n\
             taskrush_version = \">=0.3\"\n\n[permissions]\nfilesystem = [\".\"]\nnetwork = [{}]\n",
            hosts.join(", ")
        ),
    )
    .expect("manifest");
    if extra > 0 {
        // Incompressible: a large artifact keeps the install busy.
        let mut data = vec![0u8; extra];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for b in data.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        std::fs::write(src.join("blob.bin"), data).expect("blob");
    }
    let got = call(
        s,
        "plugin_publish",
        json!({"path": src.display().to_string(), "registry": r.dir.display().to_string(), "key": r.key.display().to_string()}),
    );
    assert!(got.get("result").is_some(), "publish failed: {got}");
}

fn lock(s: &Scenario) -> Value {
    serde_json::from_str(&s.read(".rush.lock")).expect("a JSON lock file")
}

fn plugins_dir(s: &Scenario) -> PathBuf {
    s.root().join("home/.local/share/taskrush/plugins")
}

/// The versions the fixture recorded, in order.
fn recorded_versions(s: &Scenario) -> Vec<String> {
    s.read("rec.jsonl")
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["version"].as_str().map(str::to_owned))
        .collect()
}

/// Run `taskrush ARGS` in a directory outside any project.
fn run_outside(s: &Scenario, args: &[&str]) {
    let away = s.root().join("elsewhere");
    std::fs::create_dir_all(&away).expect("elsewhere");
    s.run_with(args, |c| {
        c.current_dir(&away);
    })
    .success();
}

fn make_writable(p: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = if p.is_dir() { 0o755 } else { 0o644 };
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

#[test]
fn a_version_requirement_with_nothing_installed_says_which_install_command_fixes_it_and_dev_plugins_are_listed_unsigned()
 {
    let rush = RUSH.replace("plugins:\n", "plugins:\n  - name: dev\n");
    let s = Scenario::new().rush(&rush).env("REC", "/dev/null");
    super::plugins::plugin(&s, "dev", "good");
    let out = s.run(&["t"]);
    out.expect_stdout("ran\n").success();
    let err = out.stderr();
    assert!(
        err.contains("`taskrush plugin install 'hello@^1.0'`")
            && err.contains("`taskrush plugin install --from-rush`"),
        "{err}"
    );
    let list = s.run(&["plugin", "list"]);
    list.success();
    assert!(
        list.stdout()
            .contains("unsigned (development plugins, not verified before they start): `dev`"),
        "{}",
        list.stdout()
    );
}

#[test]
fn install_from_rush_writes_the_lock_and_runs_use_the_locked_version_while_a_newer_one_is_installed_until_update()
 {
    let Some((s, r)) = registry(Scenario::new().rush(RUSH)) else {
        return;
    };
    publish(&s, &r, "1.0.0", &[], 0);
    let out = s.run(&["plugin", "install", "--from-rush"]);
    out.success();
    assert!(
        out.stdout()
            .contains("hello: 1.0.0 (new in the lock), installed"),
        "{}",
        out.stdout()
    );
    let l = lock(&s);
    let h = &l["plugins"]["hello"];
    assert_eq!(l["format"], 1, "{l}");
    assert_eq!(h["requirement"], "^1.0", "{l}");
    assert_eq!(h["version"], "1.0.0", "{l}");
    assert_eq!(h["registry"], "team", "{l}");
    assert_eq!(h["kind"], "external", "{l}");
    assert_eq!(h["protocol"], 1, "{l}");
    assert_eq!(h["signer"].as_str().map(str::len), Some(16), "{l}");
    assert_eq!(
        h["permissions_sha256"].as_str().map(str::len),
        Some(64),
        "{l}"
    );
    let any = &h["platforms"]["any"];
    assert!(
        any["url"].as_str().unwrap_or("").starts_with("file://"),
        "{l}"
    );
    assert_eq!(any["sha256"].as_str().map(str::len), Some(64), "{l}");
    s.run(&["plugin", "lock", "--check"]).success();
    let list = s.run(&["plugin", "list", "--json"]);
    list.success();
    let list: Value = serde_json::from_str(&list.stdout()).expect("list JSON");
    assert_eq!(list[0]["signer"], h["signer"], "{list}");
    assert_eq!(list[0].get("unsigned"), None, "{list}");

    // 1.1.0 is published and installed too (outside the project, so its
    // lock is not touched), but the lock says 1.0.0.
    publish(&s, &r, "1.1.0", &["example.org"], 0);
    run_outside(&s, &["plugin", "install", "hello@=1.1.0"]);
    assert!(plugins_dir(&s).join("hello/1.1.0/receipt.json").is_file());
    s.run(&["t"]).expect_stdout("ran\n").success();
    assert_eq!(
        recorded_versions(&s).last().map(String::as_str),
        Some("1.0.0")
    );

    // `update` moves to the newest 1.x, rewrites the lock and shows the
    // permission the new version adds.
    let out = s.run(&["plugin", "update"]);
    out.success();
    let text = out.stdout();
    assert!(text.contains("hello: 1.0.0 -> 1.1.0"), "{text}");
    assert!(
        text.contains("asks for more permissions:") && text.contains("example.org"),
        "{text}"
    );
    assert_eq!(lock(&s)["plugins"]["hello"]["version"], "1.1.0");
    s.run(&["plugin", "restart", "hello"]).success();
    s.run(&["t"]).expect_stdout("ran\n").success();
    assert_eq!(
        recorded_versions(&s).last().map(String::as_str),
        Some("1.1.0")
    );
}

#[test]
fn a_tampered_installed_file_is_refused_at_start_a_task_goes_on_unless_the_plugin_is_required_and_the_audit_says_so()
 {
    let Some((s, r)) = registry(Scenario::new().rush(RUSH)) else {
        return;
    };
    publish(&s, &r, "1.2.0", &[], 0);
    s.run(&["plugin", "install", "--from-rush"]).success();
    s.run(&["t"]).expect_stdout("ran\n").success();
    s.run(&["daemon", "stop"]).success();
    let main = plugins_dir(&s).join("hello/1.2.0/main.py");
    make_writable(&main);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&main)
        .expect("open");
    f.write_all(b"#").expect("tamper");
    drop(f);
    let out = s.run(&["t"]);
    out.expect_stdout("ran\n").success();
    assert!(
        out.stderr()
            .contains("plugin `hello` 1.2.0 failed verification: `main.py` changed since install")
            && out
                .stderr()
                .contains("hint: reinstall it with `taskrush plugin install hello@=1.2.0`"),
        "{}",
        out.stderr()
    );
    s.write(
        ".rush",
        RUSH.replace("    version:", "    required: true\n    version:"),
    );
    let out = s.run(&["t"]);
    assert_ne!(out.code(), 0, "{}", out.stderr());
    assert!(
        out.stderr().contains("failed verification"),
        "{}",
        out.stderr()
    );
    let audit = s.run(&["plugin", "audit", "hello", "--json"]);
    audit.success();
    assert!(
        audit
            .stdout()
            .lines()
            .any(|l| l.contains("\"verify_failed\"") && l.contains("main.py")),
        "{}",
        audit.stdout()
    );
}

#[test]
fn plugin_install_name_in_a_project_whose_rush_asks_for_it_writes_its_lock_entry_and_outside_any_project_writes_nothing()
 {
    let Some((s, r)) = registry(Scenario::new().rush(RUSH)) else {
        return;
    };
    publish(&s, &r, "1.0.0", &[], 0);
    // Outside any project: installed, nothing locked anywhere.
    run_outside(&s, &["plugin", "install", "hello"]);
    assert!(plugins_dir(&s).join("hello/1.0.0/receipt.json").is_file());
    assert!(!s.project().join(".rush.lock").exists());
    assert!(!s.root().join("elsewhere/.rush.lock").exists());
    // A version the `.rush` requirement does not admit is not locked.
    publish(&s, &r, "2.0.0", &[], 0);
    s.run(&["plugin", "install", "hello@=2.0.0"]).success();
    assert!(!s.project().join(".rush.lock").exists());
    // In the project: the entry is locked as `install --from-rush` would.
    s.run(&["plugin", "install", "hello@^1"]).success();
    let l = lock(&s);
    let h = &l["plugins"]["hello"];
    assert_eq!(h["requirement"], "^1.0", "{l}");
    assert_eq!(h["version"], "1.0.0", "{l}");
    assert_eq!(h["registry"], "team", "{l}");
    assert_eq!(
        h["platforms"]["any"]["sha256"].as_str().map(str::len),
        Some(64),
        "{l}"
    );
    s.run(&["plugin", "lock", "--check"]).success();
    // `install` never edits `.rush`.
    assert_eq!(s.read(".rush"), RUSH);
}

#[test]
fn a_stale_lock_fails_locked_installs_and_lock_check_until_update_rewrites_it() {
    let Some((s, r)) = registry(Scenario::new().rush(RUSH)) else {
        return;
    };
    publish(&s, &r, "1.0.0", &[], 0);
    publish(&s, &r, "1.1.0", &[], 0);
    // No lock yet: `lock --check` says so.
    let out = s.run(&["plugin", "lock", "--check"]);
    out.expect_code(1);
    assert!(out.stderr().contains("is stale"), "{}", out.stderr());
    run_outside(&s, &["plugin", "install", "hello@=1.0.0"]);
    s.run(&["plugin", "install", "--from-rush"]).success();
    // The newest 1.x is locked (resolved against the registry).
    assert_eq!(lock(&s)["plugins"]["hello"]["version"], "1.1.0");
    s.run(&["plugin", "lock", "--check"]).success();
    // The `.rush` file now asks for what the lock does not satisfy.
    s.write(".rush", RUSH.replace("^1.0", ">=1.0, <1.1"));
    let out = s.run(&["plugin", "lock", "--check"]);
    out.expect_code(1);
    assert!(
        out.stderr().contains(
            "plugin `hello`: the `.rush` file asks for `>=1.0, <1.1`, the lock has 1.1.0"
        ),
        "{}",
        out.stderr()
    );
    let out = s.run(&["plugin", "install", "--from-rush", "--locked"]);
    assert_ne!(out.code(), 0);
    assert!(
        out.stderr()
            .contains("is stale and `--locked` never re-resolves"),
        "{}",
        out.stderr()
    );
    assert_eq!(lock(&s)["plugins"]["hello"]["version"], "1.1.0");
    let out = s.run(&["plugin", "update", "--locked"]);
    assert_ne!(out.code(), 0, "{}", out.stdout());
    let out = s.run(&["plugin", "update"]);
    out.success();
    assert!(
        out.stdout().contains("hello: 1.1.0 -> 1.0.0"),
        "{}",
        out.stdout()
    );
    s.run(&["plugin", "lock", "--check"]).success();
}

#[test]
fn an_update_interrupted_by_kill_9_of_the_daemon_leaves_the_old_version_locked_and_working() {
    let Some((s, r)) = registry(Scenario::new().rush(RUSH)) else {
        return;
    };
    publish(&s, &r, "1.0.0", &[], 0);
    s.run(&["plugin", "install", "--from-rush"]).success();
    // A large 1.1.0 keeps the install busy long enough to be interrupted.
    publish(&s, &r, "1.1.0", &[], 48 * 1024 * 1024);
    let pid = s.daemon_pid().expect("a daemon");
    let mut update = s.command(&["plugin", "update"]);
    update
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = update.spawn().expect("spawn update");
    let root = plugins_dir(&s);
    let staging = || {
        std::fs::read_dir(&root)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .any(|e| e.file_name().to_string_lossy().starts_with(".staging-"))
            })
            .unwrap_or(false)
    };
    let caught = wait_until(Duration::from_secs(30), staging);
    signal(pid, rustix::process::Signal::KILL);
    let _ = taskrush_tests::wait_timeout(&mut child, Duration::from_secs(30));
    if !caught {
        eprintln!(
            "skipped: the install finished before its staging directory was seen (a machine too fast for a 48 MiB artifact)"
        );
        return;
    }
    // Nothing half installed: 1.1.0 is either absent or whole (it was
    // renamed into place with its receipt).
    let new = root.join("hello/1.1.0");
    assert!(!new.exists() || new.join("receipt.json").is_file());
    // The old version is still locked, installed and verified.
    assert_eq!(lock(&s)["plugins"]["hello"]["version"], "1.0.0");
    assert!(root.join("hello/1.0.0/receipt.json").is_file());
    let out = s.run(&["t"]);
    out.expect_stdout("ran\n").success();
    assert!(!out.stderr().contains("failed"), "{}", out.stderr());
    assert_eq!(
        recorded_versions(&s).last().map(String::as_str),
        Some("1.0.0")
    );
}

#[test]
fn downloading_a_multi_megabyte_plugin_publishes_plugin_download_events_up_to_its_size_and_a_terminal_shows_a_bar_a_pipe_does_not()
 {
    let Some((s, r)) = registry(Scenario::new().rush(RUSH)) else {
        return;
    };
    publish(&s, &r, "1.0.0", &[], 5_000_000);
    let mut events = s.events();
    // Not a terminal: nothing drawn on stderr.
    let out = s.run(&["plugin", "install", "hello"]);
    out.success();
    assert!(!out.stderr().contains("downloading"), "{}", out.stderr());
    let mut done = Vec::new();
    let last = events.wait_for("plugin_download", |e| {
        e["event"] == "plugin_download" && e["done"] == e["total"]
    });
    for e in events
        .seen
        .iter()
        .filter(|e| e["event"] == "plugin_download")
    {
        assert_eq!(e["plugin"], "hello", "{e}");
        assert_eq!(e["version"], "1.0.0", "{e}");
        assert_eq!(e["registry"], "team", "{e}");
        done.push(e["done"].as_u64().unwrap_or(0));
    }
    let total = last["total"].as_u64().unwrap_or(0);
    assert!(total > 4_000_000, "{last}");
    assert!(done.len() >= 2, "{done:?}");
    assert!(done.windows(2).all(|w| w[0] < w[1]), "{done:?}");
    assert_eq!(done.last(), Some(&total));

    // In a terminal: one line redrawn with `\r`, cleared at the end.
    publish(&s, &r, "1.1.0", &[], 5_000_000);
    let (screen, code) = taskrush_tests::run_in_terminal(&s, &["plugin", "update"], None);
    assert_eq!(code, 0, "{screen}");
    assert!(
        screen.contains("\rdownloading hello 1.1.0  [") && screen.contains(" MB"),
        "{screen:?}"
    );
    assert!(screen.contains("hello: 1.0.0 -> 1.1.0"), "{screen}");
}
