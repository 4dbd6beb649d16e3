//! Verification of an installed plugin before every start (issue 15): what
//! is hashed is what is executed. The installed tree
//! (`…/plugins/NAME/VERSION/`) is hashed again with the canonical tree
//! hash ([`super::unpack::tree_hash`]) and compared with its receipt; the
//! receipt's signature (a minisign `.minisig` text) must carry the trusted
//! comment that binds this name, version, platform, artifact sha256 and
//! tree hash, and minisign's global signature over that comment must verify
//! with a key the user config trusts. The archive itself is not kept, so
//! the signature over the archive's bytes was checked at install; the
//! global signature is what ties the tree hash to the publisher now.
//!
//! Plugins found through a `.rush` `path:` or in `.rush-plugins/` are
//! development plugins: not verified (`plugin list` marks them unsigned).

use std::path::Path;

use base64::Engine as _;
use taskrush_protocol::registry::{Receipt, trusted_comment};

use super::unpack;

/// Why an installed plugin failed verification: `file` names what changed
/// when it can be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused {
    pub(crate) why: String,
}

/// The receipt of the installed plugin in `dir`, if `dir` is an installed
/// plugin (it holds a `receipt.json`).
pub(crate) fn receipt_of(dir: &Path) -> Option<Result<Receipt, String>> {
    let path = dir.join(unpack::RECEIPT);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => return Some(Err(format!("cannot read `{}`: {e}", path.display()))),
    };
    Some(
        serde_json::from_str(&text)
            .map_err(|e| format!("`{}` is not a valid receipt: {e}", path.display())),
    )
}

/// Before a start (process spawn, WebAssembly or native load): verify the
/// plugin in `dir` when it is an installed one (a `receipt.json`, not a
/// `path:` entry). A refusal is audited (`verify_failed`) and answered
/// with the message the start fails with.
///
/// A native plugin (trusted code: a library run with the user's rights)
/// must, besides, be an installed one signed by a trusted key; only a
/// `path:` entry (development) is exempt.
pub(crate) async fn before_start(
    name: &str,
    root: &Path,
    (dev, native): (bool, bool),
    dir: &Path,
) -> Result<(), String> {
    if dev {
        return Ok(());
    }
    let owned = dir.to_path_buf();
    // (version, why) of a refusal; nothing for a plugin that is not an
    // installed one.
    let checked = tokio::task::spawn_blocking(move || -> Result<(), (String, String)> {
        const UNSIGNED_NATIVE: &str = "it is a native plugin (trusted code) that no trusted key signed: an installed native plugin must come signed from a registry; hint: for a library you build yourself, name its directory with `path:` in the `.rush` file";
        let Some(receipt) = receipt_of(&owned) else {
            return if native {
                Err((String::new(), UNSIGNED_NATIVE.to_owned()))
            } else {
                Ok(())
            };
        };
        let r = receipt.map_err(|why| (String::new(), why))?;
        if native && r.signature.is_none() {
            return Err((String::new(), UNSIGNED_NATIVE.to_owned()));
        }
        let started = std::time::Instant::now();
        let out = verify_installed(&owned, &r).map_err(|e| (r.version.clone(), e.why));
        tracing::debug!(target: "plugin", dir = %owned.display(), ms = started.elapsed().as_secs_f64() * 1e3, "verified");
        out
    })
    .await
    .map_err(|e| format!("the verification of plugin `{name}` failed: {e}"))?;
    let Err((version, why)) = checked else {
        return Ok(());
    };
    crate::plugin::audit::record(
        "verify_failed",
        name,
        root,
        serde_json::json!({"version": version, "dir": dir.display().to_string(), "why": why}),
    );
    Err(if version.is_empty() {
        format!("plugin `{name}` failed verification: {why}")
    } else {
        format!(
            "plugin `{name}` {version} failed verification: {why}; hint: reinstall it with `taskrush plugin install {name}@={version}`"
        )
    })
}

/// The keys trusted to sign plugins: every registry's in the user config.
fn trusted_keys() -> Vec<String> {
    crate::config::user_config::current()
        .config
        .registries
        .into_iter()
        .flat_map(|r| r.keys)
        .collect()
}

/// Check the installed plugin in `dir` against its receipt and signature.
/// Blocking (hashes every file): run it off the async runtime.
pub(crate) fn verify_installed(dir: &Path, receipt: &Receipt) -> Result<(), Refused> {
    verify_with_keys(dir, receipt, &trusted_keys())
}

fn verify_with_keys(dir: &Path, receipt: &Receipt, keys: &[String]) -> Result<(), Refused> {
    let refused = |why: String| Refused { why };
    let tree = unpack::tree_hash(dir).map_err(refused)?;
    if tree != receipt.tree {
        return Err(refused(changed_files(dir, receipt)));
    }
    let Some(signature) = &receipt.signature else {
        // An unsigned local install (`--allow-unsigned`): the tree is
        // checked against its receipt, there is no signature to check.
        return Ok(());
    };
    let expected = trusted_comment(
        &receipt.name,
        &receipt.version,
        &receipt.platform,
        &receipt.sha256,
        &receipt.tree,
    );
    let id = check_trusted_comment(signature, &expected, keys).map_err(refused)?;
    if let Some(signer) = &receipt.signer
        && !signer.eq_ignore_ascii_case(&id)
    {
        return Err(refused(format!(
            "its receipt names signer `{signer}` but the signature is by `{id}`"
        )));
    }
    Ok(())
}

/// Which file differs from what was installed, as well as can be told
/// without the archive (the receipt keeps one hash for the whole tree):
/// the most recently modified file, when it is newer than the receipt.
fn changed_files(dir: &Path, receipt: &Receipt) -> String {
    let newest = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file() && e.file_name() != unpack::RECEIPT)
        .filter_map(|e| {
            let m = e.metadata().ok()?.modified().ok()?;
            Some((m, e.path().to_path_buf()))
        })
        .max_by_key(|(m, _)| *m)
        .and_then(|(m, p)| {
            let installed = std::fs::metadata(dir.join(unpack::RECEIPT))
                .ok()?
                .modified()
                .ok()?;
            (m > installed).then(|| {
                p.strip_prefix(dir)
                    .unwrap_or(&p)
                    .to_string_lossy()
                    .into_owned()
            })
        });
    match newest {
        Some(f) => format!(
            "`{f}` changed since install (its tree hashes to something else than the receipt's {})",
            short(&receipt.tree)
        ),
        None => format!(
            "its files changed since install (the tree no longer hashes to the receipt's {})",
            short(&receipt.tree)
        ),
    }
}

fn short(h: &str) -> &str {
    &h[..h.len().min(12)]
}

/// Check minisign's global signature of `signature` (a `.minisig` text)
/// — Ed25519 over the signature bytes and the trusted comment — with one
/// of `keys`, and that the trusted comment is `expected`. Returns the key
/// id. The signature over the signed file itself is not checked here.
pub(crate) fn check_trusted_comment(
    signature: &str,
    expected: &str,
    keys: &[String],
) -> Result<String, String> {
    let engine = base64::engine::general_purpose::STANDARD;
    let mut lines = signature
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("untrusted comment:"));
    let bad = || "the signature is not in minisign's format".to_owned();
    let sig = engine
        .decode(lines.next().ok_or_else(bad)?)
        .map_err(|_| bad())?;
    let comment = lines
        .next()
        .and_then(|l| l.strip_prefix("trusted comment: "))
        .ok_or_else(bad)?;
    let global = engine
        .decode(lines.next().ok_or_else(bad)?)
        .map_err(|_| bad())?;
    if sig.len() != 74 || global.len() != 64 {
        return Err(bad());
    }
    let id = super::sign::signature_key_id(signature)?;
    let key = keys
        .iter()
        .find(|k| super::sign::public_key_id(k).is_ok_and(|k| k == id))
        .ok_or_else(|| {
            format!("signed by key `{id}`, which is not among the trusted keys of the user config")
        })?;
    let key_line = key
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("untrusted comment:"))
        .unwrap_or("");
    let pk = engine
        .decode(key_line)
        .map_err(|_| format!("trusted key `{id}` is not a minisign public key"))?;
    if pk.len() != 42 {
        return Err(format!("trusted key `{id}` is not a minisign public key"));
    }
    let mut message = sig[10..74].to_vec();
    message.extend_from_slice(comment.as_bytes());
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &pk[10..42])
        .verify(&message, &global)
        .map_err(|_| format!("the signature's trusted comment does not verify with key `{id}`"))?;
    if comment != expected {
        return Err(format!(
            "the signature's trusted comment is `{comment}`, its receipt says `{expected}`"
        ));
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path) -> Option<(String, super::super::sign::SigningKey)> {
        std::fs::create_dir_all(dir).expect("dir");
        let (pk, sk) = (dir.join("k.pub"), dir.join("k.key"));
        let made = std::process::Command::new("minisign")
            .args(["-G", "-W", "-p"])
            .arg(&pk)
            .arg("-s")
            .arg(&sk)
            .stdout(std::process::Stdio::null())
            .status();
        if !made.is_ok_and(|s| s.success()) {
            eprintln!("skipped: the `minisign` CLI is not installed (scripts/test installs it)");
            return None;
        }
        let pk = std::fs::read_to_string(pk).expect("pub");
        Some((
            pk,
            super::super::sign::SigningKey::from_file(&sk).expect("key"),
        ))
    }

    fn installed(
        root: &Path,
        key: &super::super::sign::SigningKey,
    ) -> (std::path::PathBuf, Receipt) {
        let dir = root.join("p");
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("plugin.toml"), "name = \"p\"\n").expect("write");
        std::fs::write(dir.join("main.py"), "print(1)\n").expect("write");
        let tree = unpack::tree_hash(&dir).expect("tree");
        let sha = "ab".repeat(32);
        let sig = key
            .sign(
                b"archive",
                &trusted_comment("p", "1.2.0", "any", &sha, &tree),
            )
            .expect("sign");
        let receipt = Receipt {
            name: "p".into(),
            version: "1.2.0".into(),
            registry: "team".into(),
            kind: taskrush_protocol::plugin::PluginType::External,
            platform: "any".into(),
            signer: Some(key.id.clone()),
            sha256: sha,
            tree,
            signature: Some(sig),
            permissions_sha256: String::new(),
            permissions: Default::default(),
            dir: dir.display().to_string(),
            installed_at: String::new(),
        };
        (dir, receipt)
    }

    #[test]
    fn an_untouched_tree_verifies_and_a_changed_byte_is_refused_naming_the_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let Some((pk, sk)) = pair(tmp.path()) else {
            return;
        };
        let (dir, receipt) = installed(tmp.path(), &sk);
        let keys = [pk];
        verify_with_keys(&dir, &receipt, &keys).expect("verifies");
        // Receipt written after the files: a later change is named.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(dir.join(unpack::RECEIPT), "{}").expect("receipt");
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(dir.join("main.py"), "print(2)\n").expect("write");
        let e = verify_with_keys(&dir, &receipt, &keys).expect_err("refused");
        assert!(
            e.why.starts_with("`main.py` changed since install"),
            "{}",
            e.why
        );
    }

    #[test]
    fn a_receipt_edited_to_match_a_changed_tree_fails_the_signature() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let Some((pk, sk)) = pair(tmp.path()) else {
            return;
        };
        let (dir, mut receipt) = installed(tmp.path(), &sk);
        std::fs::write(dir.join("main.py"), "evil\n").expect("write");
        receipt.tree = unpack::tree_hash(&dir).expect("tree");
        let e = verify_with_keys(&dir, &receipt, std::slice::from_ref(&pk)).expect_err("refused");
        assert!(e.why.contains("trusted comment is"), "{}", e.why);
        // And an untrusted key is refused whatever the comment says.
        let Some((other, _)) = pair(&tmp.path().join("o")) else {
            return;
        };
        let (_, good) = installed(&tmp.path().join("q"), &sk);
        let e = verify_with_keys(Path::new(&good.dir), &good, &[other]).expect_err("refused");
        assert!(e.why.contains("not among the trusted keys"), "{}", e.why);
    }
}

/// The cost of the check before a start, for `docs/performance.md`:
/// `cargo test -p taskrush-daemon --release -- --ignored --nocapture
/// verification_cost`.
#[cfg(test)]
mod cost {
    use super::*;

    fn measure(what: &str, dir: &Path) {
        let tree = unpack::tree_hash(dir).expect("tree");
        let receipt = Receipt {
            name: "p".into(),
            version: "1.0.0".into(),
            registry: "local".into(),
            kind: taskrush_protocol::plugin::PluginType::External,
            platform: "any".into(),
            signer: None,
            sha256: String::new(),
            tree,
            signature: None,
            permissions_sha256: String::new(),
            permissions: Default::default(),
            dir: String::new(),
            installed_at: String::new(),
        };
        let n = 50;
        let mut times: Vec<f64> = (0..n)
            .map(|_| {
                let t = std::time::Instant::now();
                verify_with_keys(dir, &receipt, &[]).expect("verifies");
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        times.sort_by(f64::total_cmp);
        eprintln!(
            "{what}: median {:.3} ms, p95 {:.3} ms ({n} runs, warm page cache)",
            times[n / 2],
            times[n * 95 / 100]
        );
    }

    #[test]
    #[ignore = "a measurement, not a test"]
    fn verification_cost() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for ex in [
            "slack-notify",
            "security-scanner",
            "git-hook",
            "slack-notify-wasm",
        ] {
            measure(ex, &repo.join("plugins-external/examples").join(ex));
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(tmp.path().join("plugin.toml"), "name = \"p\"\n").expect("write");
        std::fs::write(tmp.path().join("blob.bin"), vec![7u8; 5 * 1024 * 1024]).expect("write");
        measure("a 5 MiB tree (one file)", tmp.path());
        let many = tempfile::tempdir().expect("tempdir");
        for i in 0..500 {
            std::fs::write(many.path().join(format!("f{i}.py")), vec![b'#'; 4096]).expect("write");
        }
        measure("500 files of 4 KiB", many.path());
    }
}
