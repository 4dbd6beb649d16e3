//! Minisign signatures: key ids, verification (`minisign-verify`, never
//! legacy mode) and signing for `plugin publish` (the `minisign` crate).
//! Both read and write the stock `minisign` CLI's files.

use base64::Engine as _;

/// The key id of a public key (`RW…` base64, or a whole `.pub` file),
/// as minisign prints it: 16 upper-case hex digits.
pub(crate) fn public_key_id(key: &str) -> Result<String, String> {
    let b64 = key_line(key);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| format!("`{b64}` is not a minisign public key"))?;
    if bytes.len() != 42 {
        return Err(format!("`{b64}` is not a minisign public key"));
    }
    Ok(key_id(&bytes[2..10]))
}

/// The key id of the key that made `signature` (a `.minisig` text).
pub(crate) fn signature_key_id(signature: &str) -> Result<String, String> {
    let line = signature
        .lines()
        .find(|l| !l.starts_with("untrusted comment:") && !l.trim().is_empty())
        .ok_or("the signature is empty")?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(line.trim())
        .map_err(|_| "the signature is not in minisign's format".to_owned())?;
    if bytes.len() != 74 {
        return Err("the signature is not in minisign's format".into());
    }
    Ok(key_id(&bytes[2..10]))
}

/// Whether two key ids name the same key: the stock CLI prints them
/// without leading zeros in its comments, we print 16 digits.
pub(crate) fn same_id(a: &str, b: &str) -> bool {
    match (
        u64::from_str_radix(a.trim(), 16),
        u64::from_str_radix(b.trim(), 16),
    ) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

fn key_id(le: &[u8]) -> String {
    let mut b = [0u8; 8];
    b.copy_from_slice(le);
    format!("{:016X}", u64::from_le_bytes(b))
}

/// The base64 line of a key given as the line itself or a whole file.
fn key_line(key: &str) -> &str {
    key.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("untrusted comment:"))
        .unwrap_or("")
}

/// Check that `signature` signs `data` with one of `keys` (not revoked)
/// and carries exactly `expected_comment` as its trusted comment (when
/// given). Returns the signer's key id.
pub(crate) fn verify(
    data: &[u8],
    signature: &str,
    keys: &[String],
    revoked: &[String],
    expected_comment: Option<&str>,
) -> Result<String, String> {
    let id = signature_key_id(signature)?;
    if revoked.iter().any(|r| same_id(r, &id)) {
        return Err(format!("the signing key `{id}` is revoked by the registry"));
    }
    let key = keys
        .iter()
        .find(|k| public_key_id(k).is_ok_and(|k| k == id))
        .ok_or_else(|| format!("signed by key `{id}`, which is not among the trusted keys"))?;
    let pk = minisign_verify::PublicKey::from_base64(key_line(key))
        .map_err(|e| format!("trusted key `{id}` cannot be used: {e}"))?;
    let sig = minisign_verify::Signature::decode(signature)
        .map_err(|e| format!("the signature is not in minisign's format: {e}"))?;
    pk.verify(data, &sig, false)
        .map_err(|e| format!("the signature does not verify with key `{id}`: {e}"))?;
    if let Some(expected) = expected_comment
        && sig.trusted_comment() != expected
    {
        return Err(format!(
            "the signature's trusted comment is `{}`, expected `{expected}`",
            sig.trusted_comment()
        ));
    }
    Ok(id)
}

/// A secret key read from a file (unencrypted, as `minisign -G -W`
/// writes it).
pub(crate) struct SigningKey {
    sk: minisign::SecretKey,
    pub(crate) id: String,
}

impl SigningKey {
    pub(crate) fn from_file(path: &std::path::Path) -> Result<SigningKey, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read key `{}`: {e}", path.display()))?;
        let text = with_checksum(&text);
        let sk = minisign::SecretKeyBox::from_string(&text)
            .and_then(|b| b.into_unencrypted_secret_key())
            .map_err(|e| {
                format!(
                    "cannot use key `{}`: {e} (hint: an unencrypted minisign secret key, `minisign -G -W`)",
                    path.display()
                )
            })?;
        let id = key_id(&sk.keynum()[..8]);
        Ok(SigningKey { sk, id })
    }

    /// A `.minisig` text for `data` with `trusted_comment`.
    pub(crate) fn sign(&self, data: &[u8], trusted_comment: &str) -> Result<String, String> {
        let untrusted = format!("signature from taskrush secret key {}", self.id);
        minisign::sign(
            None,
            &self.sk,
            data,
            Some(trusted_comment),
            Some(&untrusted),
        )
        .map(|b| b.into_string())
        .map_err(|e| format!("cannot sign: {e}"))
    }
}

/// An unencrypted secret key as the stock `minisign -G -W` writes it has
/// an all-zero checksum; the crate wants BLAKE2b-256(sig_alg ‖ keynum ‖
/// sk) there. Fill it in; anything else is returned as it is.
fn with_checksum(text: &str) -> String {
    use blake2::Digest as _;
    let mut lines: Vec<&str> = text.lines().collect();
    let Some(idx) = lines
        .iter()
        .position(|l| !l.starts_with("untrusted comment:") && !l.trim().is_empty())
    else {
        return text.to_owned();
    };
    let engine = base64::engine::general_purpose::STANDARD;
    let Ok(mut b) = engine.decode(lines[idx].trim()) else {
        return text.to_owned();
    };
    // sig_alg 2, kdf_alg 2, chk_alg 2, salt 32, ops 8, mem 8, keynum 8, sk 64, chk 32
    if b.len() != 158 || b[2..4] != [0, 0] || b[126..].iter().any(|x| *x != 0) {
        return text.to_owned();
    }
    let mut h = blake2::Blake2b::<blake2::digest::consts::U32>::new();
    h.update(&b[0..2]);
    h.update(&b[54..62]);
    h.update(&b[62..126]);
    b[126..].copy_from_slice(&h.finalize());
    let fixed = engine.encode(&b);
    lines[idx] = &fixed;
    lines.join("\n") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key pair made by the stock `minisign` CLI (`scripts/test`
    /// installs it): its files are what users have.
    fn pair() -> Option<(String, SigningKey)> {
        let dir = tempfile::tempdir().expect("tempdir");
        let (pk, sk) = (dir.path().join("k.pub"), dir.path().join("k.key"));
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
        Some((pk, SigningKey::from_file(&sk).expect("key")))
    }

    #[test]
    fn a_signature_verifies_with_its_key_and_comment_only() {
        let Some((pk, sk)) = pair() else { return };
        let sig = sk.sign(b"data", "c1").expect("sign");
        let keys = [pk];
        let id = verify(b"data", &sig, &keys, &[], Some("c1")).expect("verifies");
        assert_eq!(id, sk.id);
        assert_eq!(public_key_id(&keys[0]).expect("id"), sk.id);
        assert!(verify(b"datA", &sig, &keys, &[], Some("c1")).is_err());
        assert!(verify(b"data", &sig, &keys, &[], Some("c2")).is_err());
        assert!(
            verify(
                b"data",
                &sig,
                &keys,
                std::slice::from_ref(&sk.id),
                Some("c1")
            )
            .is_err()
        );
        let Some((other, _)) = pair() else { return };
        assert!(verify(b"data", &sig, &[other], &[], Some("c1")).is_err());
    }
}
