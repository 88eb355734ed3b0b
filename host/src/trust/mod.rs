//! Which plugins may run: pinned by digest in `host.lock`, and signed by a trusted key.
//!
//! A plugin is untrusted code; CI must load only vetted ones. Vetting happens on the file's
//! bytes before anything is compiled or called, so a refused plugin never runs.

mod lockfile;
mod signature;

pub use lockfile::{LOCK_FILE, LockEntry, LockFile};
pub use signature::{KeyPair, Signature, sign, signature_path};

use sha2::{Digest, Sha256};
use std::path::Path;

/// What the operator requires of a plugin before it runs.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// `--locked` (the default under CI=true): the plugin must be in `host.lock` with this digest.
    pub locked: Option<LockFile>,
    /// Trusted public keys (hex).
    pub trusted_keys: Vec<String>,
    /// Refuse plugins without a valid signature by a trusted key.
    pub require_signature: bool,
}

/// What vetting established about a plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vetted {
    pub digest: String,
    pub pinned: bool,
    /// The trusted key that signed it, if it is signed.
    pub signed_by: Option<String>,
}

pub fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Check a plugin's bytes against the policy. The error says what is wrong and what to do.
pub fn vet(name: &str, path: &Path, bytes: &[u8], policy: &Policy) -> Result<Vetted, String> {
    let digest = digest(bytes);
    let mut pinned = false;
    if let Some(lock) = &policy.locked {
        match lock.plugins.get(name) {
            None => {
                return Err(format!(
                    "plugin `{name}` is not pinned in {}: run `host plugins lock {name}` after vetting it (--locked is on{})",
                    lock.path.display(),
                    if ci() { " because CI=true" } else { "" }
                ));
            }
            Some(entry) if entry.sha256 != digest => {
                return Err(format!(
                    "plugin `{name}` ({}) has sha256 {digest}, but {} pins {}: refusing to run a plugin that changed since it was vetted",
                    path.display(),
                    lock.path.display(),
                    entry.sha256
                ));
            }
            Some(_) => pinned = true,
        }
    }
    let sig_path = signature_path(path);
    let signed_by = if sig_path.exists() {
        let sig = Signature::read(&sig_path)?;
        if !policy.trusted_keys.iter().any(|k| k == &sig.public_key) {
            if policy.require_signature {
                return Err(format!(
                    "plugin `{name}` is signed by {}, which is not among the trusted keys ([trust] keys in deploy.toml)",
                    sig.public_key
                ));
            }
            None
        } else {
            sig.verify(bytes).map_err(|e| {
                format!("plugin `{name}` ({}): bad signature: {e}; the file changed after it was signed, refusing it", path.display())
            })?;
            Some(sig.public_key)
        }
    } else {
        None
    };
    if policy.require_signature && signed_by.is_none() {
        return Err(format!(
            "plugin `{name}` has no signature ({} is missing) and [trust] require_signature is on: sign it with `host plugins sign --key KEY {}`",
            sig_path.display(),
            path.display()
        ));
    }
    Ok(Vetted { digest, pinned, signed_by })
}

/// CI=true (or 1): the environment CI systems set.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

#[cfg(test)]
mod tests;
