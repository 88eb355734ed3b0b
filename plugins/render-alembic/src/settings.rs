//! The plugin's settings: deploy.toml `[plugin.settings]` (merged with the environment's), as JSON.
//!
//! Unknown keys are refused: a misspelt `migration_dir` silently falling back to the default
//! would point every check at the wrong folder.

use plugin_sdk::PluginError;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Check the code out, migrate and restart on this machine.
    #[default]
    Local,
    /// Trigger a deploy through Render's API (Render runs the migrations) and follow it.
    Render,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub mode: Mode,
    /// How to run Alembic: `["alembic"]`, `["python", "-m", "alembic", "-c", "app/alembic.ini"]`.
    pub alembic: Vec<String>,
    /// Migration scripts, relative to the project root.
    pub migrations_dir: String,
    /// Name of the environment variable holding the database URL; empty = no database access.
    pub database_env: String,
    /// Command that restarts the app after a checkout (local mode).
    pub restart: Option<Vec<String>>,
    /// Where backups go, relative to the project root.
    pub backup_dir: String,
    /// Kill `alembic upgrade`/`downgrade` after this long (default: the phase deadline).
    pub migration_timeout_ms: Option<u64>,
    pub render_api: String,
    pub render_service_id: Option<String>,
    /// Name of the environment variable holding the Render API key.
    pub render_api_key_env: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            mode: Mode::Local,
            alembic: vec!["alembic".into()],
            migrations_dir: "migrations/versions".into(),
            database_env: "DATABASE_URL".into(),
            restart: None,
            backup_dir: "backups".into(),
            migration_timeout_ms: None,
            render_api: "https://api.render.com/v1".into(),
            render_service_id: None,
            render_api_key_env: "RENDER_API_KEY".into(),
        }
    }
}

impl Settings {
    /// Parse and check the context's settings JSON (empty means all defaults).
    pub fn parse(json: &str) -> Result<Settings, PluginError> {
        let json = json.trim();
        let json = if json.is_empty() || json == "null" {
            "{}"
        } else {
            json
        };
        let mut s: Settings = plugin_sdk::settings::parse(json)?;
        s.migrations_dir = s.migrations_dir.trim_end_matches('/').to_string();
        s.backup_dir = s.backup_dir.trim_end_matches('/').to_string();
        s.render_api = s.render_api.trim_end_matches('/').to_string();
        s.check().map_err(|m| {
            PluginError::new(format!("invalid plugin settings: {m}"))
                .with_hint("check [plugin.settings] in deploy.toml")
        })?;
        Ok(s)
    }

    fn check(&self) -> Result<(), String> {
        if self.alembic.first().is_none_or(|p| p.is_empty()) {
            return Err("`alembic` must name a program, e.g. [\"alembic\"]".into());
        }
        if self
            .restart
            .as_ref()
            .is_some_and(|r| r.first().is_none_or(|p| p.is_empty()))
        {
            return Err("`restart` must name a program, e.g. [\"python\", \"bin/restart\"]".into());
        }
        for (key, path) in [
            ("migrations_dir", &self.migrations_dir),
            ("backup_dir", &self.backup_dir),
        ] {
            if path.is_empty() || path.starts_with('/') || path.split('/').any(|p| p == "..") {
                return Err(format!(
                    "`{key}` must be a path inside the project, got {path:?}"
                ));
            }
        }
        if self.mode == Mode::Render {
            let id = self.render_service_id.as_deref().unwrap_or("");
            if id.is_empty() {
                return Err("mode \"render\" needs `render_service_id` (srv-...)".into());
            }
            if !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(format!("`render_service_id` {id:?} is not a Render id"));
            }
            if !(self.render_api.starts_with("https://") || self.render_api.starts_with("http://"))
            {
                return Err(format!(
                    "`render_api` must be an http(s) URL, got {:?}",
                    self.render_api
                ));
            }
        }
        Ok(())
    }

    /// The Render service id (checked present in render mode).
    pub fn service_id(&self) -> &str {
        self.render_service_id.as_deref().unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let s = Settings::parse("{}").unwrap();
        assert_eq!(s, Settings::default());
        assert_eq!(Settings::parse("").unwrap(), Settings::default());
        assert_eq!(s.alembic, vec!["alembic"]);
        assert_eq!(s.migrations_dir, "migrations/versions");
        assert_eq!(s.render_api, "https://api.render.com/v1");
    }

    #[test]
    fn full_render_settings() {
        let s = Settings::parse(
            r#"{"mode":"render","alembic":["python","-m","alembic"],"migrations_dir":"backend/migrations/versions/",
                "restart":["python","bin/restart"],"migration_timeout_ms":600000,"render_service_id":"srv-d0abc123",
                "render_api":"https://api.render.com/v1/"}"#,
        )
        .unwrap();
        assert_eq!(s.mode, Mode::Render);
        assert_eq!(s.migrations_dir, "backend/migrations/versions");
        assert_eq!(s.render_api, "https://api.render.com/v1");
        assert_eq!(s.migration_timeout_ms, Some(600_000));
        assert_eq!(s.service_id(), "srv-d0abc123");
    }

    #[test]
    fn refusals() {
        let err = |json: &str| Settings::parse(json).unwrap_err().message;
        assert!(err(r#"{"migration_dir":"x"}"#).contains("unknown field `migration_dir`"));
        assert!(err(r#"{"mode":"render"}"#).contains("render_service_id"));
        assert!(err(r#"{"mode":"heroku"}"#).contains("unknown variant"));
        assert!(err(r#"{"alembic":[]}"#).contains("`alembic`"));
        assert!(err(r#"{"backup_dir":"../elsewhere"}"#).contains("`backup_dir`"));
        assert!(err(r#"{"backup_dir":"/var/backups"}"#).contains("`backup_dir`"));
        assert!(err(r#"{"restart":[]}"#).contains("`restart`"));
    }
}
