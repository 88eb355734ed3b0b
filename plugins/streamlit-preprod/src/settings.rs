//! The plugin's settings: deploy.toml's `[plugin.settings]` merged with the environment's.
//!
//! Unknown keys are refused: a misspelt `backup_path` silently backing up nothing would only
//! be noticed the day the backup is needed.

use plugin_sdk::PluginError;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// The command that restarts the app once the checkout moved, as argv:
    /// `["docker", "compose", "-f", "docker-compose-preprod.yml", "restart", "app"]`,
    /// `["python", "bin/restart"]`, `["systemctl", "restart", "kitchen"]`.
    pub restart: Vec<String>,
    /// The remote fetched before the target is resolved; empty = never fetch. A checkout
    /// without that remote is not fetched either.
    pub remote: String,
    /// Paths (files or directories, relative to the project root) archived before a deploy;
    /// empty = no backup. Rolling back by restore extracts the archive over them.
    pub backup_paths: Vec<String>,
    /// Where archives go, relative to the project root.
    pub backup_dir: String,
    /// Kill the restart command after this long (default: the phase deadline).
    pub restart_timeout_ms: Option<u64>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            restart: Vec::new(),
            remote: "origin".into(),
            backup_paths: Vec::new(),
            backup_dir: "backups".into(),
            restart_timeout_ms: None,
        }
    }
}

impl Settings {
    /// Parse and check the context's settings JSON.
    pub fn parse(json: &str) -> Result<Settings, PluginError> {
        let json = json.trim();
        let json = if json.is_empty() || json == "null" {
            "{}"
        } else {
            json
        };
        let mut s: Settings = plugin_sdk::settings::parse(json)?;
        s.backup_dir = s.backup_dir.trim_end_matches('/').to_string();
        s.check().map_err(|m| {
            PluginError::new(format!("invalid plugin settings: {m}"))
                .with_hint("check [plugin.settings] in deploy.toml")
        })?;
        Ok(s)
    }

    fn check(&self) -> Result<(), String> {
        if self.restart.first().is_none_or(|p| p.is_empty()) {
            return Err("`restart` must name the command that restarts the app, e.g. [\"docker\", \"compose\", \"-f\", \"docker-compose.yml\", \"restart\", \"app\"]".into());
        }
        for p in &self.backup_paths {
            if p.is_empty() || p.starts_with('/') || p.split('/').any(|part| part == "..") {
                return Err(format!(
                    "backup path `{p}` must be relative to the project root, without `..`"
                ));
            }
        }
        if self.backup_dir.is_empty() || self.backup_dir.starts_with('/') {
            return Err("`backup_dir` must be a relative path".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fetch_origin_and_back_up_nothing() {
        let s = Settings::parse(r#"{"restart": ["python", "bin/restart"]}"#).unwrap();
        assert_eq!(s.remote, "origin");
        assert!(s.backup_paths.is_empty());
        assert_eq!(s.backup_dir, "backups");
    }

    #[test]
    fn a_missing_restart_an_unknown_key_or_an_escaping_path_is_refused() {
        assert!(
            Settings::parse("{}")
                .unwrap_err()
                .message
                .contains("`restart`")
        );
        assert!(
            Settings::parse(r#"{"restart": ["x"], "backup_path": ["data"]}"#)
                .unwrap_err()
                .message
                .contains("backup_path")
        );
        let e = Settings::parse(r#"{"restart": ["x"], "backup_paths": ["../etc"]}"#).unwrap_err();
        assert!(e.message.contains("without `..`"), "{}", e.message);
    }
}
