//! Plugin registries (issue 15): a registry built by `plugin publish`,
//! served by a real HTTP server or as `file://`; search, install, list,
//! remove; every tampering refused with nothing installed.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use taskrush_tests::{Scenario, wait_timeout};

const MANIFEST: &str = r#"name = "greet"
version = "VERSION"
description = "Say hello before every task"
taskrush_version = ">=0.3"
entry_point = ["python3", "-I", "main.py"]

[permissions]
environment = ["GREETING"]
"#;

/// A plugin directory `src-VERSION/` for `greet` at `version`.
fn plugin_dir(s: &Scenario, version: &str) -> PathBuf {
    let rel = format!("src-{version}");
    s.write(
        &format!("{rel}/plugin.toml"),
        MANIFEST.replace("VERSION", version),
    );
    s.write(&format!("{rel}/main.py"), "print('hello')\n");
    s.project().join(rel)
}

/// A minisign key pair made by the stock CLI: (public key line, key id,
/// secret key path). None (printed) when the CLI is missing.
fn keypair(s: &Scenario, name: &str) -> Option<(String, String, PathBuf)> {
    let pk = s.root().join(format!("{name}.pub"));
    let sk = s.root().join(format!("{name}.key"));
    let ok = Command::new("minisign")
        .args(["-G", "-W", "-p"])
        .arg(&pk)
        .arg("-s")
        .arg(&sk)
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|st| st.success());
    if !ok {
        eprintln!("skipped: the stock `minisign` CLI is not installed (scripts/test installs it)");
        return None;
    }
    let text = std::fs::read_to_string(&pk).expect("public key");
    let id = text
        .lines()
        .next()
        .and_then(|l| l.rsplit(' ').next())
        .expect("key id in the comment");
    // The CLI prints it without leading zeros; TaskRush with 16 digits.
    let id = format!("{:0>16}", id);
    let line = text.lines().nth(1).expect("key line").to_owned();
    Some((line, id, sk))
}

fn registry(s: &Scenario) -> PathBuf {
    s.root().join("registry")
}

/// Publish `greet` `version` into the scenario's registry.
fn publish(s: &Scenario, version: &str, key: &Path, extra: &[&str]) {
    let dir = plugin_dir(s, version);
    let reg = registry(s);
    let mut args = vec![
        "plugin",
        "publish",
        dir.to_str().expect("utf-8"),
        "--registry",
        reg.to_str().expect("utf-8"),
        "--key",
        key.to_str().expect("utf-8"),
    ];
    args.extend_from_slice(extra);
    s.run(&args).success();
}

fn config_for(url: &str, key: &str) -> String {
    format!("[[registries]]\nname = \"team\"\nurl = \"{url}\"\nkeys = [\"{key}\"]\n")
}

/// A scenario with `greet` 1.0.0 published to a `file://` registry.
fn published(extra: &[&str]) -> Option<(Scenario, String, PathBuf)> {
    let s = Scenario::new();
    let (pk, id, sk) = keypair(&s, "team")?;
    publish(&s, "1.0.0", &sk, extra);
    let url = format!("file://{}", registry(&s).display());
    let s = s.user_config(&config_for(&url, &pk));
    let _ = id;
    Some((s, pk, sk))
}

fn installed_dir(s: &Scenario) -> PathBuf {
    s.root().join("home/.local/share/taskrush/plugins/greet")
}

fn nothing_installed(s: &Scenario) {
    assert!(!installed_dir(s).exists(), "nothing installed");
    let plugins = s.root().join("home/.local/share/taskrush/plugins");
    if let Ok(rd) = std::fs::read_dir(&plugins) {
        let left: Vec<_> = rd.filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
        assert!(left.is_empty(), "nothing left behind: {left:?}");
    }
}

/// `python3 -m http.server` on 127.0.0.1 serving `dir`; killed and reaped on drop.
struct HttpServer {
    child: Child,
    port: u16,
}

impl HttpServer {
    fn start(dir: &Path) -> HttpServer {
        let mut child = Command::new("python3")
            .args([
                "-u",
                "-m",
                "http.server",
                "0",
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m http.server");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        // Ready once it prints `Serving HTTP on 127.0.0.1 port N`.
        let line = rx.recv_timeout(Duration::from_secs(20));
        let port = line.ok().and_then(|l| {
            l.split(" port ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        });
        let Some(port) = port else {
            let _ = child.kill();
            let _ = wait_timeout(&mut child, Duration::from_secs(5));
            panic!("http.server did not report its port");
        };
        HttpServer { child, port }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = wait_timeout(&mut self.child, Duration::from_secs(5));
    }
}

#[test]
fn a_plugin_published_and_served_over_http_is_searched_installed_listed_and_removed() {
    let s = Scenario::new();
    let Some((pk, id, sk)) = keypair(&s, "team") else {
        return;
    };
    publish(&s, "1.0.0", &sk, &[]);
    publish(&s, "1.2.0", &sk, &[]);
    publish(&s, "2.0.0", &sk, &[]);
    let server = HttpServer::start(&registry(&s));
    let url = format!("http://127.0.0.1:{}", server.port);
    let s = s.user_config(&config_for(&url, &pk));

    let out = s.run(&["plugin", "search", "hello"]);
    out.success();
    assert_eq!(
        out.stdout(),
        "team/greet 2.0.0  Say hello before every task\n"
    );

    let out = s.run(&["plugin", "install", "greet@^1.0"]);
    out.success();
    assert!(
        out.stdout().contains("installed greet 1.2.0 from team"),
        "{}",
        out.stdout()
    );
    assert!(
        out.stdout().contains(&format!("signed by {id}")),
        "{id}: {}",
        out.stdout()
    );
    assert!(
        out.stdout().contains("environment: GREETING"),
        "{}",
        out.stdout()
    );
    let dir = installed_dir(&s).join("1.2.0");
    assert_eq!(
        std::fs::read_to_string(dir.join("main.py")).expect("installed"),
        "print('hello')\n"
    );
    let receipt: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("receipt.json")).expect("receipt"))
            .expect("json");
    assert_eq!(receipt["registry"], "team");
    assert_eq!(receipt["signer"], id.as_str());
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(dir.join("main.py"))
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o222, 0, "installed files are read-only");

    s.run(&["plugin", "install", "team/greet@>=2, <3"])
        .success();
    let out = s.run(&["plugin", "list", "--installed"]);
    out.success();
    assert!(
        out.stdout()
            .contains(&format!("greet  1.2.0    team      external  {id}")),
        "{}",
        out.stdout()
    );
    assert!(out.stdout().contains("greet  2.0.0"), "{}", out.stdout());

    s.run(&["plugin", "remove", "greet@1.2.0"])
        .success()
        .expect_stdout("removed greet 1.2.0\n");
    assert!(!dir.exists());
    s.run(&["plugin", "remove", "greet"]).success();
    nothing_installed(&s);

    let audit = s.socket().with_file_name("audit.jsonl");
    let recorded = taskrush_tests::wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&audit).is_ok_and(|a| {
            a.contains("\"kind\":\"installed\"") && a.contains("\"kind\":\"removed\"")
        })
    });
    assert!(recorded, "installs and removals are in the audit trail");
}

#[test]
fn a_missing_plugin_a_version_that_does_not_match_and_an_unreachable_registry_are_explained() {
    let Some((s, pk, _)) = published(&[]) else {
        return;
    };
    s.run(&["plugin", "install", "gret"])
        .expect_code(1)
        .expect_stderr_containing(
            "plugin `gret` not found in registry `team` (hint: did you mean `greet`?)",
        );
    s.run(&["plugin", "install", "greet@^3"])
        .expect_code(1)
        .expect_stderr_containing(
            "no version of `greet` in registry `team` matches `^3` (hint: published: 1.0.0)",
        );
    let s = s.user_config(&config_for("http://127.0.0.1:9/nowhere", &pk));
    s.run(&["plugin", "install", "greet"])
        .expect_code(1)
        .expect_stderr_containing("registry `team` is unreachable");
    nothing_installed(&s);
}

fn artifact(s: &Scenario, version: &str) -> PathBuf {
    registry(s).join(format!(
        "artifacts/greet/{version}/greet-{version}-any.tar.gz"
    ))
}

#[test]
fn a_tampered_artifact_is_refused_and_nothing_is_installed() {
    let Some((s, _, _)) = published(&[]) else {
        return;
    };
    let path = artifact(&s, "1.0.0");
    let mut bytes = std::fs::read(&path).expect("artifact");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, bytes).expect("tamper");
    s.run(&["plugin", "install", "greet"])
        .expect_code(1)
        .expect_stderr_containing("the artifact's sha256 is");
    nothing_installed(&s);
}

#[test]
fn a_tampered_index_line_is_refused_and_nothing_is_installed() {
    let Some((s, _, _)) = published(&[]) else {
        return;
    };
    let index = registry(&s).join("index/gr/ee/greet");
    let text = std::fs::read_to_string(&index).expect("index");
    std::fs::write(
        &index,
        text.replace("\"yanked\":false", "\"yanked\":false "),
    )
    .expect("tamper");
    s.run(&["plugin", "install", "greet"])
        .expect_code(1)
        .expect_stderr_containing("does not match the signed snapshot");
    nothing_installed(&s);
}

#[test]
fn an_expired_snapshot_is_refused() {
    let Some((s, _, _)) = published(&["--expires-days", "0"]) else {
        return;
    };
    s.run(&["plugin", "install", "greet"])
        .expect_code(1)
        .expect_stderr_containing("the snapshot is refused: it expired at");
    s.run(&["plugin", "search", "greet"]).expect_code(1);
    nothing_installed(&s);
}

#[test]
fn a_key_the_snapshot_revokes_is_refused() {
    let s = Scenario::new();
    let Some((pk, id, sk)) = keypair(&s, "team") else {
        return;
    };
    publish(&s, "1.0.0", &sk, &["--revoke", &id]);
    let url = format!("file://{}", registry(&s).display());
    let s = s.user_config(&config_for(&url, &pk));
    s.run(&["plugin", "install", "greet"])
        .expect_code(1)
        .expect_stderr_containing(&format!("its key `{id}` is revoked"));
    nothing_installed(&s);
}

#[test]
fn a_valid_signature_of_another_version_is_refused() {
    let s = Scenario::new();
    let Some((pk, _, sk)) = keypair(&s, "team") else {
        return;
    };
    publish(&s, "1.0.0", &sk, &[]);
    publish(&s, "1.1.0", &sk, &[]);
    // A registry that serves 1.1.0 with the artifact and signature of 1.0.0,
    // hashes updated and snapshot re-signed (as a compromised index would).
    let index = registry(&s).join("index/gr/ee/greet");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&index)
        .expect("index")
        .lines()
        .map(|l| serde_json::from_str(l).expect("line"))
        .collect();
    let mut newer = lines[1].clone();
    newer["artifacts"] = lines[0]["artifacts"].clone();
    let text = format!("{}\n{}\n", lines[0], newer);
    std::fs::write(&index, text).expect("rewrite");
    // Re-publishing 1.0.0 re-signs a snapshot over the rewritten index.
    let dir = plugin_dir(&s, "1.0.0");
    let reg = registry(&s);
    s.run(&[
        "plugin",
        "publish",
        dir.to_str().expect("utf-8"),
        "--registry",
        reg.to_str().expect("utf-8"),
        "--key",
        sk.to_str().expect("utf-8"),
    ])
    .success();
    let url = format!("file://{}", reg.display());
    let s = s.user_config(&config_for(&url, &pk));
    s.run(&["plugin", "install", "greet@=1.1.0"])
        .expect_code(1)
        .expect_stderr_containing("trusted comment is `taskrush-artifact name=greet version=1.0.0");
    nothing_installed(&s);
}

#[test]
fn an_archive_signed_by_the_stock_minisign_cli_installs_and_a_wrong_trusted_comment_is_refused() {
    let Some((s, _, sk)) = published(&[]) else {
        return;
    };
    let archive = s.root().join("greet.tar.gz");
    std::fs::copy(artifact(&s, "1.0.0"), &archive).expect("copy");
    let sign = |comment: &str| {
        let ok = Command::new("minisign")
            .arg("-S")
            .arg("-s")
            .arg(&sk)
            .arg("-m")
            .arg(&archive)
            .args(["-t", comment])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|st| st.success());
        assert!(ok, "minisign -S");
    };
    sign("taskrush-artifact name=greet version=9.9.9");
    let spec = archive.to_str().expect("utf-8");
    let out = s.run(&["plugin", "install", spec]);
    out.expect_code(1)
        .expect_stderr_containing("trusted comment is `taskrush-artifact name=greet version=9.9.9`, expected `taskrush-artifact name=greet version=1.0.0 platform=any sha256=");
    nothing_installed(&s);
    let err = out.stderr();
    let expected = err
        .split("expected `")
        .nth(1)
        .and_then(|r| r.split('`').next())
        .expect("the expected comment")
        .to_owned();
    sign(&expected);
    let out = s.run(&["plugin", "install", spec]);
    out.success();
    assert!(
        out.stdout()
            .contains("installed greet 1.0.0 from local (signed by"),
        "{}",
        out.stdout()
    );
}

#[test]
fn an_unsigned_local_directory_needs_allow_unsigned_and_is_listed_as_unsigned() {
    let s = Scenario::new();
    let dir = plugin_dir(&s, "0.1.0");
    let spec = dir.to_str().expect("utf-8");
    s.run(&["plugin", "install", spec])
        .expect_code(1)
        .expect_stderr_containing("is not signed");
    nothing_installed(&s);
    s.run(&["plugin", "install", spec, "--allow-unsigned"])
        .success();
    let out = s.run(&["plugin", "list", "--installed"]);
    assert!(
        out.stdout()
            .contains("greet  0.1.0    local     external  unsigned"),
        "{}",
        out.stdout()
    );
}

#[test]
fn a_plugin_published_only_for_another_platform_is_refused_with_the_platforms_it_has() {
    let Some((s, _, _)) = published_for("plan9-mips") else {
        return;
    };
    s.run(&["plugin", "install", "greet"])
        .expect_code(1)
        .expect_stderr_containing("`greet` 1.0.0 has no artifact for this platform")
        .expect_stderr_containing("(published for: `plan9-mips`)");
    nothing_installed(&s);
}

fn published_for(platform: &str) -> Option<(Scenario, String, PathBuf)> {
    published(&["--platform", platform])
}

#[test]
fn a_yanked_version_is_not_installed() {
    let s = Scenario::new();
    let Some((pk, _, sk)) = keypair(&s, "team") else {
        return;
    };
    publish(&s, "1.0.0", &sk, &[]);
    let index = registry(&s).join("index/gr/ee/greet");
    let text = std::fs::read_to_string(&index).expect("index");
    std::fs::write(&index, text.replace("\"yanked\":false", "\"yanked\":true")).expect("yank");
    // Publishing another plugin re-signs the snapshot over the yanked line.
    s.write(
        "other/plugin.toml",
        "name = \"other\"\nversion = \"0.1.0\"\ntaskrush_version = \">=0.3\"\nentry_point = [\"python3\", \"main.py\"]\n",
    );
    let reg = registry(&s);
    let other = s.project().join("other");
    s.run(&[
        "plugin",
        "publish",
        other.to_str().expect("utf-8"),
        "--registry",
        reg.to_str().expect("utf-8"),
        "--key",
        sk.to_str().expect("utf-8"),
    ])
    .success();
    let url = format!("file://{}", reg.display());
    let s = s.user_config(&config_for(&url, &pk));
    s.run(&["plugin", "install", "greet@^1"])
        .expect_code(1)
        .expect_stderr_containing(
            "every version of `greet` matching `^1` is yanked (1.0.0): refused",
        );
    nothing_installed(&s);
}

#[test]
fn a_rush_version_requirement_finds_the_newest_installed_version_that_meets_it() {
    let s = Scenario::new();
    let Some((pk, _, sk)) = keypair(&s, "team") else {
        return;
    };
    publish(&s, "1.0.0", &sk, &[]);
    publish(&s, "1.2.0", &sk, &[]);
    publish(&s, "2.0.0", &sk, &[]);
    let url = format!("file://{}", registry(&s).display());
    let s = s
        .user_config(&config_for(&url, &pk))
        .rush("plugins:\n  - name: greet\n    version: \"^1\"\ntasks:\n  t:\n    cmd: \"true\"\n");
    for v in ["=1.0.0", "=1.2.0", "=2.0.0"] {
        s.run(&["plugin", "install", &format!("greet@{v}")])
            .success();
    }
    let out = s.run(&["plugin", "info", "greet", "--json"]);
    out.success();
    let info: serde_json::Value = serde_json::from_str(&out.stdout()).expect("json");
    let path = info["path"].as_str().unwrap_or_default().to_owned();
    assert!(path.ends_with("plugins/greet/1.2.0"), "{}", out.stdout());
}

#[test]
fn a_rush_entry_with_no_installed_version_says_which_install_command_fixes_it() {
    let s = Scenario::new()
        .rush("plugins:\n  - name: greet\n    version: \"^1\"\n    required: true\ntasks:\n  t:\n    cmd: \"true\"\n");
    s.run(&["t"])
        .expect_stderr_containing("install it with `taskrush plugin install 'greet@^1'`");
}
