//! Detached ed25519 signatures of plugins: `<plugin>.wasm.sig` next to the component.
//!
//! The signed message is a domain tag and the component's sha256, so a signature can never
//! be mistaken for one over something else, and one changed byte of the file breaks it.

use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

const DOMAIN: &[u8] = b"host plugin signature v1\0";

fn message(bytes: &[u8]) -> Vec<u8> {
    let mut m = DOMAIN.to_vec();
    m.extend_from_slice(&Sha256::digest(bytes));
    m
}

pub fn signature_path(plugin: &Path) -> PathBuf {
    let mut name = plugin.as_os_str().to_owned();
    name.push(".sig");
    PathBuf::from(name)
}

/// A signing key; its file holds the 32-byte secret as hex.
pub struct KeyPair {
    key: SigningKey,
}

impl KeyPair {
    pub fn generate() -> std::io::Result<KeyPair> {
        let mut secret = [0u8; 32];
        use std::io::Read;
        std::fs::File::open("/dev/urandom")?.read_exact(&mut secret)?;
        Ok(KeyPair { key: SigningKey::from_bytes(&secret) })
    }

    pub fn read(path: &Path) -> Result<KeyPair, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let bytes: [u8; 32] = hex::decode(text.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| format!("{}: not an ed25519 secret key (64 hex digits)", path.display()))?;
        Ok(KeyPair { key: SigningKey::from_bytes(&bytes) })
    }

    /// Write the secret (readable by its owner only).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
        use std::io::Write;
        writeln!(f, "{}", hex::encode(self.key.to_bytes()))
    }

    pub fn public_hex(&self) -> String {
        hex::encode(self.key.verifying_key().to_bytes())
    }
}

/// A signature file: `ed25519 <public key hex> <signature hex>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub public_key: String,
    pub signature: String,
}

pub fn sign(key: &KeyPair, bytes: &[u8]) -> Signature {
    Signature { public_key: key.public_hex(), signature: hex::encode(key.key.sign(&message(bytes)).to_bytes()) }
}

impl Signature {
    pub fn read(path: &Path) -> Result<Signature, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let parts: Vec<&str> = text.split_whitespace().collect();
        match parts.as_slice() {
            ["ed25519", public_key, signature] => {
                Ok(Signature { public_key: public_key.to_string(), signature: signature.to_string() })
            }
            _ => Err(format!("{}: not a plugin signature (expected `ed25519 <key> <signature>`)", path.display())),
        }
    }

    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, format!("ed25519 {} {}\n", self.public_key, self.signature))
    }

    pub fn verify(&self, bytes: &[u8]) -> Result<(), String> {
        let key: [u8; 32] = hex::decode(&self.public_key).ok().and_then(|b| b.try_into().ok()).ok_or("malformed public key")?;
        let key = VerifyingKey::from_bytes(&key).map_err(|e| e.to_string())?;
        let sig: [u8; 64] = hex::decode(&self.signature).ok().and_then(|b| b.try_into().ok()).ok_or("malformed signature")?;
        key.verify(&message(bytes), &ed25519_dalek::Signature::from_bytes(&sig))
            .map_err(|_| "the signature does not match the file".to_string())
    }
}
