//! Signed revisions: a publisher signs a plugin record with an NATS nkey (ed25519, NATS's own
//! key format and tooling), and workers that list trusted public keys load only records signed
//! by one of them.
//!
//! The signature covers what decides the code that runs: the plugin's name (its bucket key, so
//! a record cannot be replayed under another name), the kind, the code's SHA-256 (which the
//! worker checks against the code itself), the manifest and the version label. It leaves out
//! who republished it and when, so a rollback or a promotion of the same revision keeps its
//! signature.

use nkeys::KeyPair;

use super::record::{sha256_hex, PluginRecord};

/// The bytes a signature covers for `record` under the key `name`.
pub fn signed_bytes(name: &str, record: &PluginRecord) -> Vec<u8> {
    format!(
        "mofa-bus plugin record v1\nname: {name}\nkind: {}\nsha256: {}\nmanifest-sha256: {}\nversion: {}\n",
        record.kind.as_str(),
        record.sha256,
        sha256_hex(record.manifest.as_deref().unwrap_or("").as_bytes()),
        record.version
    )
    .into_bytes()
}

/// Reads a signing key: an nkey seed (`S…`), or the path of a file holding one.
pub fn signing_key(seed_or_file: &str) -> Result<KeyPair, String> {
    let text = if seed_or_file.trim_start().starts_with('S') {
        seed_or_file.to_string()
    } else {
        std::fs::read_to_string(seed_or_file)
            .map_err(|e| format!("signing key: cannot read {seed_or_file}: {e}"))?
    };
    KeyPair::from_seed(text.trim())
        .map_err(|e| format!("signing key: not an nkey seed ({e}); make one with `mofa keygen`"))
}

/// Signs `record` for the key `name` with `key`.
pub fn sign(name: &str, record: &mut PluginRecord, key: &KeyPair) -> Result<(), String> {
    let signature = key
        .sign(&signed_bytes(name, record))
        .map_err(|e| format!("cannot sign: {e}"))?;
    record.signer = Some(key.public_key());
    record.signature = Some(hex::encode(signature));
    Ok(())
}

/// Checks that `record` (under the key `name`) is signed by one of `trusted` public keys.
pub fn verify(name: &str, record: &PluginRecord, trusted: &[String]) -> Result<(), String> {
    let (Some(signer), Some(signature)) = (&record.signer, &record.signature) else {
        return Err(
            "the revision is unsigned, and this worker loads only signed revisions (reload.trusted_keys)"
                .into(),
        );
    };
    if !trusted.iter().any(|key| key == signer) {
        return Err(format!(
            "the revision is signed by {signer}, which is not in reload.trusted_keys"
        ));
    }
    let key = KeyPair::from_public_key(signer).map_err(|e| format!("signer {signer}: {e}"))?;
    let signature = hex::decode(signature).map_err(|_| "the signature is not hex".to_string())?;
    key.verify(&signed_bytes(name, record), &signature)
        .map_err(|_| format!("the signature by {signer} does not match the record (tampered, or signed for another name)"))
}

/// Checks that every entry of `keys` is an nkey public key.
pub fn check_public_keys(keys: &[String]) -> Result<(), String> {
    for key in keys {
        KeyPair::from_public_key(key)
            .map_err(|e| format!("reload.trusted_keys: {key:?} is not an nkey public key ({e})"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::PluginKind;

    fn record() -> PluginRecord {
        PluginRecord {
            kind: PluginKind::Rhai,
            source: Some("fn execute(x) { x }".into()),
            module: None,
            object: None,
            manifest: None,
            sha256: sha256_hex(b"fn execute(x) { x }"),
            version: "1".into(),
            publisher: "a@b".into(),
            published_ms: 1,
            rollback_of: None,
            signer: None,
            signature: None,
            canary: None,
            tests: None,
            promoted_from: None,
        }
    }

    #[test]
    fn signed_records_verify_and_changes_break_them() {
        let key = KeyPair::new_user();
        let trusted = vec![key.public_key()];
        let mut signed = record();
        sign("echoes", &mut signed, &key).expect("signed");
        assert_eq!(verify("echoes", &signed, &trusted), Ok(()));
        // Who republished it and when are not covered: a rollback keeps the signature.
        let mut republished = signed.clone();
        republished.publisher = "c@d".into();
        republished.rollback_of = Some(3);
        assert_eq!(verify("echoes", &republished, &trusted), Ok(()));
        // Another name, other code, an untrusted or no signer: refused.
        assert!(verify("other", &signed, &trusted).is_err());
        let mut tampered = signed.clone();
        tampered.sha256 = sha256_hex(b"evil");
        assert!(verify("echoes", &tampered, &trusted).is_err());
        assert!(verify("echoes", &signed, &[KeyPair::new_user().public_key()]).is_err());
        assert!(verify("echoes", &record(), &trusted).is_err());
    }

    #[test]
    fn keys_are_read_from_seeds_or_files() {
        let key = KeyPair::new_user();
        let seed = key.seed().expect("seed");
        assert_eq!(
            signing_key(&seed).expect("seed").public_key(),
            key.public_key()
        );
        let file = tempfile::NamedTempFile::new().expect("file");
        std::fs::write(file.path(), format!("{seed}\n")).expect("written");
        let path = file.path().to_str().expect("utf-8");
        assert_eq!(
            signing_key(path).expect("file").public_key(),
            key.public_key()
        );
        assert!(signing_key("/nonexistent/key").is_err());
        assert!(check_public_keys(&[key.public_key()]).is_ok());
        assert!(check_public_keys(&["not-a-key".into()]).is_err());
    }
}
