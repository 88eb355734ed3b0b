//! Reading files under the project root, and nothing outside it.

use super::CapabilityContext;
use crate::runtime::CapabilityError;
use std::path::{Component, Path, PathBuf};

/// Largest file a plugin may read in one call.
const MAX_FILE: u64 = 8 << 20;

/// Resolve `rel` under `root`: relative, no `..`, and still under the root once symlinks are
/// followed. Returns the message for a refusal.
pub fn resolve_under_root(root: &Path, rel: &str) -> Result<PathBuf, String> {
    let path = Path::new(rel);
    if path.is_absolute() {
        return Err(format!("`{rel}` is absolute; paths are relative to the project root"));
    }
    if path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!("`{rel}` leaves the project root (`..`)"));
    }
    let joined = root.join(path);
    let real = joined.canonicalize().map_err(|e| format!("`{rel}`: {e}"))?;
    if !real.starts_with(root) {
        return Err(format!("`{rel}` resolves outside the project root (symlink to {})", real.display()));
    }
    Ok(real)
}

pub fn read_file(ctx: &CapabilityContext, rel: &str) -> Result<String, CapabilityError> {
    let path = resolve_under_root(&ctx.root, rel).map_err(|m| deny_or_fail(ctx, m))?;
    let meta = std::fs::metadata(&path).map_err(|e| CapabilityError::Failed(format!("{rel}: {e}")))?;
    if meta.len() > MAX_FILE {
        return Err(CapabilityError::Failed(format!("{rel}: {} bytes is over the {MAX_FILE} byte limit", meta.len())));
    }
    std::fs::read_to_string(&path).map_err(|e| CapabilityError::Failed(format!("{rel}: {e}")))
}

pub fn list_dir(ctx: &CapabilityContext, rel: &str) -> Result<Vec<String>, CapabilityError> {
    let rel = if rel.is_empty() { "." } else { rel };
    let path = resolve_under_root(&ctx.root, rel).map_err(|m| deny_or_fail(ctx, m))?;
    let mut names = Vec::new();
    let entries = std::fs::read_dir(&path).map_err(|e| CapabilityError::Failed(format!("{rel}: {e}")))?;
    for entry in entries.flatten() {
        let mut name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            name.push('/');
        }
        names.push(name);
    }
    names.sort();
    Ok(names)
}

/// A missing file is a failure; an escape attempt is a denial.
fn deny_or_fail(ctx: &CapabilityContext, message: String) -> CapabilityError {
    if message.contains("leaves the project root") || message.contains("outside the project root") || message.contains("is absolute") {
        CapabilityError::Denied(format!("plugin `{}` may not read {message}", ctx.plugin))
    } else {
        CapabilityError::Failed(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_under_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::write(root.join("a.txt"), "x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("escape")).unwrap();
        assert!(resolve_under_root(&root, "a.txt").is_ok());
        assert!(resolve_under_root(&root, "../../etc/passwd").unwrap_err().contains("leaves the project root"));
        assert!(resolve_under_root(&root, "/etc/passwd").unwrap_err().contains("absolute"));
        assert!(resolve_under_root(&root, "escape").unwrap_err().contains("outside the project root"));
    }
}
