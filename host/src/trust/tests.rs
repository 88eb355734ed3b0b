//! Vetting: pins and signatures, with the exact refusals.

use super::*;

fn setup() -> (tempfile::TempDir, std::path::PathBuf, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.wasm");
    let bytes = b"\0asm pretend component bytes".to_vec();
    std::fs::write(&path, &bytes).unwrap();
    (dir, path, bytes)
}

#[test]
fn locked_plugins_must_be_pinned_with_their_digest() {
    let (dir, path, bytes) = setup();
    let mut lock = LockFile::read_or_new(dir.path()).unwrap();
    let policy = |lock: &LockFile| Policy { locked: Some(lock.clone()), ..Policy::default() };
    let err = vet("p", &path, &bytes, &policy(&lock)).unwrap_err();
    assert!(err.contains("plugin `p` is not pinned in") && err.contains("host plugins lock p"), "{err}");

    lock.plugins.insert("p".into(), LockEntry { sha256: digest(&bytes), contract: "1.0.0".into() });
    lock.write().unwrap();
    let lock = LockFile::read(dir.path()).unwrap();
    assert!(vet("p", &path, &bytes, &policy(&lock)).unwrap().pinned);

    let mut tampered = bytes.clone();
    tampered[5] ^= 1;
    let err = vet("p", &path, &tampered, &policy(&lock)).unwrap_err();
    assert!(err.contains(&format!("has sha256 {}", digest(&tampered))) && err.contains(&format!("pins {}", digest(&bytes))), "{err}");
}

#[test]
fn one_changed_byte_breaks_the_signature() {
    let (dir, path, bytes) = setup();
    let key = KeyPair::generate().unwrap();
    key.write(&dir.path().join("key")).unwrap();
    let key = KeyPair::read(&dir.path().join("key")).unwrap();
    sign(&key, &bytes).write(&signature_path(&path)).unwrap();
    let policy = Policy { trusted_keys: vec![key.public_hex()], require_signature: true, ..Policy::default() };
    assert_eq!(vet("p", &path, &bytes, &policy).unwrap().signed_by, Some(key.public_hex()));

    let mut tampered = bytes.clone();
    tampered[3] ^= 0x20;
    let err = vet("p", &path, &tampered, &policy).unwrap_err();
    assert!(err.contains("bad signature: the signature does not match the file"), "{err}");
}

#[test]
fn unsigned_or_untrusted_plugins_are_refused_when_signatures_are_required() {
    let (_dir, path, bytes) = setup();
    let policy = Policy { require_signature: true, ..Policy::default() };
    assert!(vet("p", &path, &bytes, &policy).unwrap_err().contains("has no signature"));

    let stranger = KeyPair::generate().unwrap();
    sign(&stranger, &bytes).write(&signature_path(&path)).unwrap();
    let trusted = KeyPair::generate().unwrap();
    let policy = Policy { trusted_keys: vec![trusted.public_hex()], require_signature: true, ..Policy::default() };
    let err = vet("p", &path, &bytes, &policy).unwrap_err();
    assert!(err.contains("not among the trusted keys"), "{err}");
    // Without the requirement an untrusted signature is simply not counted.
    let lax = Policy { trusted_keys: vec![trusted.public_hex()], ..Policy::default() };
    assert_eq!(vet("p", &path, &bytes, &lax).unwrap().signed_by, None);
}
