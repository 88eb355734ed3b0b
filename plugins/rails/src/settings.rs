//! The plugin's settings: deploy.toml `[plugin.settings]` merged with the environment's
//! `[environments.NAME.settings]`, as JSON.
//!
//! Unknown keys are refused: a misspelt `migration_timout` silently falling back to the default
//! would let a production migration run twice as long as the operator asked.

use plugin_sdk::PluginError;
use serde::Deserialize;
use std::time::Duration;

/// Migration timeout when the settings give none: the environment named `production` gets
/// 10 minutes, every other one 5 (the figures the deploy scripts this replaces used).
pub const PRODUCTION_TIMEOUT: Duration = Duration::from_secs(10 * 60);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// How to run Rails, as argv: `["bin/rails"]`, `["bundle", "exec", "rails"]`.
    pub rails: Vec<String>,
    /// Prefix that runs Rails where the app runs, e.g. `["docker", "exec", "myapp-web"]`; empty
    /// means here, in the project root. Only Rails goes through it: git, pg_dump and the
    /// restart command run on this machine, against this checkout.
    pub runner: Vec<String>,
    /// `RAILS_ENV` for Rails commands (given to `docker exec`/`podman exec` runners as `-e`).
    pub rails_env: Option<String>,
    /// Migration files, relative to the project root.
    pub migrations_dir: String,
    /// Environment variable holding the database URL (for pg_dump, pg_restore and psql).
    pub database_env: String,
    /// A `[databases.NAME]` of deploy.toml: when set, applied versions are read from its
    /// `schema_migrations` through the host's read-only query capability (no Rails boot, so
    /// it also works when the checked-out code no longer boots); otherwise from
    /// `bin/rails db:migrate:status`, where the app runs.
    pub database: Option<String>,
    /// Command that restarts the app after a checkout.
    pub restart: Option<Vec<String>>,
    /// Where backups go, relative to the project root.
    pub backup_dir: String,
    /// Kill `db:migrate` / `db:rollback` after this long: `"90s"`, `"10m"`, or seconds.
    pub migration_timeout: Option<Timeout>,
    /// Liveness path probed after a deploy (200); empty for none.
    pub up_path: String,
    /// Readiness path probed after a deploy: 200, database connected, 0 pending migrations.
    pub health_path: String,
}

/// A duration as deploy.toml writes it: `"3s"`, `"10m"`, `"1h30m"`, or a number of seconds.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Timeout {
    Seconds(u64),
    Text(String),
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            rails: vec!["bin/rails".into()],
            runner: Vec::new(),
            rails_env: None,
            migrations_dir: "db/migrate".into(),
            database_env: "DATABASE_URL".into(),
            database: None,
            restart: None,
            backup_dir: "backups".into(),
            migration_timeout: None,
            up_path: "/up".into(),
            health_path: "/health".into(),
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
        s.check().map_err(|m| {
            PluginError::new(format!("invalid plugin settings: {m}"))
                .with_hint("check [plugin.settings] and [environments.*.settings] in deploy.toml")
        })?;
        Ok(s)
    }

    fn check(&self) -> Result<(), String> {
        if self.rails.first().is_none_or(|p| p.is_empty()) {
            return Err("`rails` must name a program, e.g. [\"bin/rails\"]".into());
        }
        if self.runner.first().is_some_and(|p| p.is_empty()) {
            return Err(
                "`runner` must start with a program, e.g. [\"docker\", \"exec\", \"web\"]".into(),
            );
        }
        if self
            .restart
            .as_ref()
            .is_some_and(|r| r.first().is_none_or(|p| p.is_empty()))
        {
            return Err("`restart` must name a program, e.g. [\"bin/restart\"]".into());
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
        for (key, path) in [
            ("up_path", &self.up_path),
            ("health_path", &self.health_path),
        ] {
            if !path.is_empty() && !path.starts_with('/') {
                return Err(format!("`{key}` must start with /, got {path:?}"));
            }
        }
        if let Some(t) = &self.migration_timeout {
            t.duration()?;
        }
        Ok(())
    }

    /// The migration timeout for an environment: the setting, else 10 minutes for
    /// `production` and 5 for the others.
    pub fn migration_timeout(&self, environment: &str) -> Duration {
        match self.migration_timeout.as_ref().map(Timeout::duration) {
            Some(Ok(d)) => d,
            _ if environment == "production" => PRODUCTION_TIMEOUT,
            _ => DEFAULT_TIMEOUT,
        }
    }
}

impl Timeout {
    pub fn duration(&self) -> Result<Duration, String> {
        let d = match self {
            Timeout::Seconds(s) => Duration::from_secs(*s),
            Timeout::Text(t) => parse_duration(t).ok_or_else(|| {
                format!(
                    "`migration_timeout` = {t:?} is not a duration (e.g. \"90s\", \"10m\", \"1h\")"
                )
            })?,
        };
        if d.is_zero() {
            return Err("`migration_timeout` must be more than 0".into());
        }
        Ok(d)
    }
}

/// `"3s"`, `"500ms"`, `"10m"`, `"10min"`, `"1h30m"`, `"90"` (seconds).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = rest[digits..].trim_start();
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = rest[unit_len..].trim_start();
        total += match unit {
            "ms" => Duration::from_millis(n),
            "s" | "sec" | "secs" => Duration::from_secs(n),
            "m" | "min" | "mins" => Duration::from_secs(n * 60),
            "h" | "hr" | "hour" | "hours" => Duration::from_secs(n * 3600),
            _ => return None,
        };
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let s = Settings::parse("{}").unwrap();
        assert_eq!(s, Settings::default());
        assert_eq!(Settings::parse("").unwrap(), Settings::default());
        assert_eq!(s.rails, vec!["bin/rails"]);
        assert_eq!(s.migrations_dir, "db/migrate");
        assert!(s.runner.is_empty() && s.database.is_none());
    }

    #[test]
    fn timeout_defaults_by_environment_and_overrides() {
        let s = Settings::default();
        assert_eq!(s.migration_timeout("production"), Duration::from_secs(600));
        assert_eq!(s.migration_timeout("staging"), Duration::from_secs(300));
        assert_eq!(s.migration_timeout("qa"), Duration::from_secs(300));
        let s = Settings::parse(r#"{"migration_timeout":"3s"}"#).unwrap();
        assert_eq!(s.migration_timeout("production"), Duration::from_secs(3));
        let s = Settings::parse(r#"{"migration_timeout":45}"#).unwrap();
        assert_eq!(s.migration_timeout("staging"), Duration::from_secs(45));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("10m"), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration("10min"), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("ten minutes"), None);
        assert_eq!(parse_duration("5 fortnights"), None);
    }

    #[test]
    fn full_settings() {
        let s = Settings::parse(
            r#"{"rails":["bundle","exec","rails"],"runner":["docker","exec","myapp-web"],"rails_env":"production",
                "migrations_dir":"db/migrate/","database":"main","restart":["docker","restart","myapp-web"],
                "migration_timeout":"10m","health_path":"/health"}"#,
        )
        .unwrap();
        assert_eq!(s.runner, vec!["docker", "exec", "myapp-web"]);
        assert_eq!(s.migrations_dir, "db/migrate");
        assert_eq!(s.database.as_deref(), Some("main"));
    }

    #[test]
    fn refusals() {
        let err = |json: &str| Settings::parse(json).unwrap_err().message;
        assert!(err(r#"{"migration_timout":"3s"}"#).contains("unknown field `migration_timout`"));
        assert!(err(r#"{"migration_timeout":"soon"}"#).contains("not a duration"));
        assert!(err(r#"{"migration_timeout":0}"#).contains("more than 0"));
        assert!(err(r#"{"rails":[]}"#).contains("`rails`"));
        assert!(err(r#"{"runner":[""]}"#).contains("`runner`"));
        assert!(err(r#"{"backup_dir":"../elsewhere"}"#).contains("`backup_dir`"));
        assert!(err(r#"{"restart":[]}"#).contains("`restart`"));
        assert!(err(r#"{"health_path":"health"}"#).contains("`health_path`"));
    }
}
