//! Reading files under the project root, and nothing outside it.

use super::CapabilityContext;
use crate::runtime::CapabilityError;
use std::path::{Component, Path, PathBuf};

/// Largest file a plugin may read in one call.
const MAX_FILE: u64 = 8 << 20;

/// Why a path was not resolved.
#[derive(Debug)]
pub enum PathError {
    /// It points outside the project root: a refusal.
    Escapes(String),
    /// It is fine but cannot be read (missing, permissions).
    Io(String),
}

/// Resolve `rel` under `root`: relative, no `..`, and still under the root once symlinks are
/// followed.
pub fn resolve_under_root(root: &Path, rel: &str) -> Result<PathBuf, PathError> {
    let path = Path::new(rel);
    if path.is_absolute() {
        return Err(PathError::Escapes("it is absolute (paths are relative to the project root)".into()));
    }
    if path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(PathError::Escapes("it leaves the project root (`..`)".into()));
    }
    let real = root.join(path).canonicalize().map_err(|e| PathError::Io(format!("`{rel}`: {e}")))?;
    if !real.starts_with(root) {
        return Err(PathError::Escapes(format!("it resolves outside the project root (a symlink to {})", real.display())));
    }
    Ok(real)
}

/// The capability error for a path: an escape is a denial naming the plugin and the call.
pub fn path_error(ctx: &CapabilityContext, call: &str, rel: &str, e: PathError) -> CapabilityError {
    match e {
        PathError::Escapes(why) => CapabilityError::Denied(format!("plugin `{}` may not {call} `{rel}`: {why}", ctx.plugin)),
        PathError::Io(m) => CapabilityError::Failed(m),
    }
}

pub fn read_file(ctx: &CapabilityContext, rel: &str) -> Result<String, CapabilityError> {
    let path = resolve_under_root(&ctx.root, rel).map_err(|e| path_error(ctx, "read", rel, e))?;
    let meta = std::fs::metadata(&path).map_err(|e| CapabilityError::Failed(format!("{rel}: {e}")))?;
    if meta.len() > MAX_FILE {
        return Err(CapabilityError::Failed(format!("{rel}: {} bytes is over the {MAX_FILE} byte limit", meta.len())));
    }
    std::fs::read_to_string(&path).map_err(|e| CapabilityError::Failed(format!("{rel}: {e}")))
}

pub fn list_dir(ctx: &CapabilityContext, rel: &str) -> Result<Vec<String>, CapabilityError> {
    let rel = if rel.is_empty() { "." } else { rel };
    let path = resolve_under_root(&ctx.root, rel).map_err(|e| path_error(ctx, "list", rel, e))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_under_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::write(root.join("a.txt"), "x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("escape")).unwrap();
        let why = |rel: &str| match resolve_under_root(&root, rel) {
            Err(PathError::Escapes(w)) => w,
            other => panic!("{rel}: {other:?}"),
        };
        assert!(resolve_under_root(&root, "a.txt").is_ok());
        assert_eq!(why("../../etc/passwd"), "it leaves the project root (`..`)");
        assert!(why("/etc/passwd").starts_with("it is absolute"));
        assert_eq!(why("escape"), "it resolves outside the project root (a symlink to /etc/passwd)");
        assert!(matches!(resolve_under_root(&root, "missing"), Err(PathError::Io(_))));
    }
}
