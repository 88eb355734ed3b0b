//! `deploy.toml`: the deploy configuration that lives in the app's repository.
//!
//! Parsing is strict (unknown keys are errors) and every error names the file, the line and
//! the key, because a typo in a deploy file should never silently change what a deploy does.

mod locate;
mod types;

pub use types::*;

use std::path::{Path, PathBuf};

/// A configuration problem, located in the file.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}:{column}: {key}: {message}")]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    /// Dotted key path, e.g. `environments.staging.probes[0].path`.
    pub key: String,
    pub message: String,
}

/// Errors that are not about the file's content.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Invalid(#[from] ConfigError),
}

/// Load and validate a deploy file. The project root is the directory holding it.
pub fn load(path: &Path) -> Result<Config, LoadError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| LoadError::Read { path: path.to_path_buf(), source })?;
    Ok(parse(path, &text)?)
}

/// Parse deploy-file text; `path` is only used for messages and the project root.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let error_at = |key: String, span: Option<std::ops::Range<usize>>, message: String| {
        let offset = span
            .map(|s| s.start)
            .or_else(|| locate::key_offset(text, &key))
            .unwrap_or(0);
        let (line, column) = locate::line_column(text, offset);
        ConfigError { file: path.to_path_buf(), line, column, key, message }
    };

    let deserializer = toml::Deserializer::parse(text).map_err(|e| {
        error_at(String::from("(syntax)"), e.span(), e.message().to_string())
    })?;
    let mut file: ConfigFile = serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key = e.path().to_string();
        let span = e.inner().span();
        error_at(key, span, e.inner().message().to_string())
    })?;

    let root = path
        .parent()
        .map(|p| if p.as_os_str().is_empty() { Path::new(".") } else { p })
        .unwrap_or(Path::new("."));
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());

    if let Err((key, message)) = file.validate() {
        return Err(error_at(key, None, message));
    }
    file.plugin.settings = file.plugin.settings.take().or(Some(toml::Table::new()));
    Ok(Config { path: path.to_path_buf(), root, file })
}

#[cfg(test)]
mod tests;
