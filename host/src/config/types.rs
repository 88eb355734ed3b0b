//! The shape of `deploy.toml`, with defaults and validation.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A loaded deploy file and where it came from.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    /// The project root: the directory holding the deploy file (canonical).
    pub root: PathBuf,
    pub file: ConfigFile,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub project: Project,
    #[serde(default)]
    pub plugin: PluginSection,
    #[serde(default)]
    pub state: StateSection,
    #[serde(default)]
    pub databases: BTreeMap<String, Database>,
    #[serde(default)]
    pub grants: Grants,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub health: Health,
    #[serde(default)]
    pub notifications: Notifications,
    #[serde(default)]
    pub trust: Trust,
    #[serde(default)]
    pub environments: BTreeMap<String, Environment>,
}

/// Which plugin signatures this project trusts.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trust {
    /// Trusted ed25519 public keys, hex (as printed by `host plugins keygen`).
    #[serde(default)]
    pub keys: Vec<String>,
    /// Refuse any plugin without a valid signature by one of `keys`.
    #[serde(default)]
    pub require_signature: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Project {
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSection {
    /// A plugin name, looked up in the plugin directory.
    pub name: Option<String>,
    /// A path to a component, relative to the project root.
    pub path: Option<PathBuf>,
    /// Where named plugins are looked up (relative to the project root).
    pub dir: Option<PathBuf>,
    /// Stack settings handed to the plugin as JSON; environments may override keys.
    pub settings: Option<toml::Table>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSection {
    /// `sqlite://path` (relative to the project root) or `postgres://...`.
    /// Default: SQLite at `.host/state.db`. `HOST_STATE_URL` overrides.
    pub url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Database {
    /// Environment variable holding the connection URL (the URL itself never goes in the file).
    pub url_env: String,
    /// Whether plugins may write through the query capability.
    #[serde(default)]
    pub write: bool,
}

/// What the plugin may do. Anything not granted is refused with the missing grant named.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Programs by name (looked up on PATH) or path relative to the project root.
    #[serde(default)]
    pub programs: Vec<String>,
    /// Environment variables the plugin may read and its commands receive.
    #[serde(default)]
    pub env: Vec<String>,
    /// `host:port` the plugin may reach over HTTP (`host` alone means any port).
    #[serde(default)]
    pub http: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    #[serde(with = "humantime_serde")]
    pub preflight: Duration,
    #[serde(with = "humantime_serde")]
    pub backup: Duration,
    #[serde(with = "humantime_serde")]
    pub deploy: Duration,
    #[serde(with = "humantime_serde")]
    pub verify: Duration,
    #[serde(with = "humantime_serde")]
    pub rollback: Duration,
    /// Wasm execution time per plugin call (time spent in host capabilities not counted).
    #[serde(with = "humantime_serde")]
    pub call: Duration,
    /// Lock lease; renewed while the run is alive, so a crashed run frees the lock after it.
    #[serde(with = "humantime_serde")]
    pub lock_lease: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        let min = |m: u64| Duration::from_secs(60 * m);
        Timeouts {
            preflight: min(2),
            backup: min(15),
            deploy: min(15),
            verify: min(5),
            rollback: min(15),
            call: Duration::from_secs(10),
            lock_lease: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Linear memory cap per plugin instance.
    pub memory_mb: u64,
    /// Cap on captured output per command stream and on HTTP response bodies.
    pub output_kb: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { memory_mb: 64, output_kb: 1024 }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// Where the deployed app answers, e.g. `http://127.0.0.1:8000`.
    pub base_url: Option<String>,
    /// Probes; when none are given the plugin's default probes are used.
    #[serde(default)]
    pub probes: Vec<ProbeConfig>,
    /// Overall deadline for all probes of one verification.
    #[serde(default, with = "humantime_serde")]
    pub deadline: Option<Duration>,
    /// Attempts for every probe, configured or the plugin's defaults (e.g. 5 in production
    /// where the plugin's quick check makes 3).
    #[serde(default)]
    pub attempts: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    pub path: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default = "default_status")]
    pub expect_status: u16,
    #[serde(default)]
    pub body_contains: Option<String>,
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    #[serde(default = "default_probe_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_status() -> u16 {
    200
}
fn default_attempts() -> u32 {
    10
}
fn default_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_probe_timeout() -> Duration {
    Duration::from_secs(5)
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notifications {
    #[serde(default)]
    pub webhooks: Vec<Webhook>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// `slack`, `discord` or `json` (the raw event).
    pub format: WebhookFormat,
    /// Environment variable holding the URL: webhook URLs are secrets and never printed.
    pub url_env: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    Slack,
    Discord,
    Json,
}

/// What to do when preflight finds destructive migrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DestructivePolicy {
    /// Stop before any change until approved (`--approve` or a typed confirmation).
    #[default]
    RequireApproval,
    /// Warn and wait (`pause`), then go on; Ctrl-C stops with nothing changed.
    Pause,
    /// Go on.
    Allow,
}

/// An environment's own grants: each list given replaces the global one, so production can
/// grant less than staging.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantsOverride {
    pub programs: Option<Vec<String>>,
    pub env: Option<Vec<String>>,
    pub http: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    /// Overrides of `[plugin.settings]` for this environment.
    #[serde(default)]
    pub settings: Option<toml::Table>,
    #[serde(default)]
    pub grants: Option<GrantsOverride>,
    #[serde(default)]
    pub health: Option<Health>,
    #[serde(default)]
    pub timeouts: Option<toml::Table>,
    #[serde(default)]
    pub on_destructive: DestructivePolicy,
    #[serde(default, with = "humantime_serde")]
    pub pause: Option<Duration>,
    /// Every deploy needs approval, destructive or not.
    #[serde(default)]
    pub require_approval: bool,
    /// How a deploy is validated: verified before it counts (default), or `deploy-first`:
    /// live after a quick check, validated later by CI (see `[environments.NAME.ci]`).
    #[serde(default)]
    pub strategy: Strategy,
    /// Where `deploy-first` reads the CI verdict on the deployed revision.
    #[serde(default)]
    pub ci: Option<CiConfig>,
    /// A word the operator must type on a terminal (or pass as `--confirm WORD`) before
    /// every deploy, e.g. `DEPLOY` for production. Never implied, not even by CI=true.
    #[serde(default)]
    pub confirm: Option<String>,
    /// The environment this one is promoted from: its revisions are shown before the
    /// confirmation, and its last validated revision is deployed when `--rev` is not given.
    #[serde(default)]
    pub promote_from: Option<String>,
    /// What `host monitor` checks.
    #[serde(default)]
    pub monitor: Option<MonitorConfig>,
}

/// How an environment's deploys are validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Deploy, verify, and only then count the revision as validated.
    #[default]
    DeployThenVerify,
    /// Deploy, quick-verify, return; a detached `host watch` waits for CI on that exact
    /// revision and validates it, or rolls back to the last validated revision.
    DeployFirst,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::DeployThenVerify => "deploy-then-verify",
            Strategy::DeployFirst => "deploy-first",
        }
    }
}

/// Where the CI verdict comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CiSourceKind {
    /// GitHub Actions: workflow runs and check runs for the revision (REST API).
    Github,
    /// A program printing `pending|running|success|failure [details]` (see `host::ci::command`).
    Command,
}

/// What to do when CI gives no verdict in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnTimeout {
    /// Treat it as a failure: roll back to the last validated revision.
    #[default]
    Rollback,
    /// Leave the revision running, not validated; the rollback point stays where it was.
    Keep,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CiConfig {
    pub source: CiSourceKind,
    /// GitHub: `owner/name`.
    #[serde(default)]
    pub repo: Option<String>,
    /// GitHub's REST API root (GitHub Enterprise: `https://HOST/api/v3`).
    #[serde(default = "default_github_api")]
    pub api: String,
    /// Environment variable holding the GitHub token (never printed).
    #[serde(default = "default_token_env")]
    pub token_env: String,
    /// GitHub: only these workflows count (by name); default all workflows and checks.
    #[serde(default)]
    pub workflows: Vec<String>,
    /// Command source: argv; `{sha}` in an argument is replaced by the revision.
    #[serde(default)]
    pub command: Vec<String>,
    /// How long CI may take to show up for the revision before it counts as absent.
    #[serde(default = "default_ci_start", with = "humantime_serde")]
    pub start_timeout: Duration,
    /// Time between two looks at CI.
    #[serde(default = "default_ci_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Longest wait for a verdict, from the end of the deploy.
    #[serde(default = "default_ci_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default)]
    pub on_timeout: OnTimeout,
}

fn default_github_api() -> String {
    "https://api.github.com".into()
}
fn default_token_env() -> String {
    "GITHUB_TOKEN".into()
}
fn default_ci_start() -> Duration {
    Duration::from_secs(30)
}
fn default_ci_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_ci_timeout() -> Duration {
    Duration::from_secs(5 * 60)
}

/// `host monitor`: one GET, a status, a text in the body, a timeout.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    /// Full URL; default: `health.base_url` + `path`.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default = "default_monitor_path")]
    pub path: String,
    #[serde(default = "default_status")]
    pub expect_status: u16,
    /// Text the page must contain, e.g. the app's name.
    #[serde(default)]
    pub body_contains: Option<String>,
    #[serde(default = "default_monitor_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_monitor_path() -> String {
    "/".into()
}
fn default_monitor_timeout() -> Duration {
    Duration::from_secs(10)
}

fn check_environment_strategy(file: &ConfigFile, name: &str, env: &Environment) -> Result<(), (String, String)> {
    let key = format!("environments.{name}");
    if env.strategy == Strategy::DeployFirst && env.ci.is_none() {
        return Err((format!("{key}.strategy"), "`deploy-first` needs a [environments.NAME.ci] table saying where CI verdicts come from".into()));
    }
    if let Some(ci) = &env.ci {
        match ci.source {
            CiSourceKind::Github => {
                let ok = ci.repo.as_deref().is_some_and(|r| {
                    let parts: Vec<&str> = r.split('/').collect();
                    parts.len() == 2 && parts.iter().all(|p| !p.is_empty())
                });
                if !ok {
                    return Err((format!("{key}.ci.repo"), "the GitHub source needs `repo = \"owner/name\"`".into()));
                }
                if !(ci.api.starts_with("http://") || ci.api.starts_with("https://") || ci.api.starts_with("${")) {
                    return Err((format!("{key}.ci.api"), format!("`{}` must start with http:// or https://", ci.api)));
                }
            }
            CiSourceKind::Command => {
                if ci.command.first().is_none_or(|p| p.is_empty()) {
                    return Err((format!("{key}.ci.command"), "the command source needs `command = [\"program\", \"arg\", ...]`".into()));
                }
            }
        }
        if ci.interval.is_zero() {
            return Err((format!("{key}.ci.interval"), "must be more than 0s".into()));
        }
        if ci.timeout < ci.interval {
            return Err((format!("{key}.ci.timeout"), "must be at least one interval".into()));
        }
    }
    if env.confirm.as_deref().is_some_and(|w| w.trim().is_empty()) {
        return Err((format!("{key}.confirm"), "give the word to type, e.g. \"DEPLOY\"".into()));
    }
    if let Some(from) = &env.promote_from
        && (from == name || !file.environments.contains_key(from))
    {
        return Err((format!("{key}.promote_from"), format!("`{from}` is not another environment of this file")));
    }
    if let Some(m) = &env.monitor {
        if !m.path.starts_with('/') {
            return Err((format!("{key}.monitor.path"), format!("`{}` must start with /", m.path)));
        }
        if let Some(url) = &m.url
            && !(url.starts_with("http://") || url.starts_with("https://") || url.starts_with("${"))
        {
            return Err((format!("{key}.monitor.url"), format!("`{url}` must start with http:// or https://")));
        }
    }
    Ok(())
}

impl ConfigFile {
    /// Checks serde cannot express. Returns the dotted key and the message.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.plugin.name.is_some() && self.plugin.path.is_some() {
            return Err(("plugin.path".into(), "give `name` or `path`, not both".into()));
        }
        if let Some(name) = &self.plugin.name
            && (name.is_empty() || name.contains('/'))
        {
            return Err(("plugin.name".into(), format!("`{name}` is not a plugin name")));
        }
        check_health(&self.health, "health")?;
        for (name, env) in &self.environments {
            if let Some(h) = &env.health {
                check_health(h, &format!("environments.{name}.health"))?;
            }
            check_environment_strategy(self, name, env)?;
            if let Some(t) = &env.timeouts {
                // Same keys and formats as [timeouts]; checked now so a typo fails early.
                let merged = merge_tables(&to_table(&Timeouts::default()), t);
                let parsed: Result<Timeouts, _> = toml::Value::Table(merged).try_into();
                if let Err(e) = parsed {
                    return Err((format!("environments.{name}.timeouts"), e.message().to_string()));
                }
            }
        }
        check_http_grants(&self.grants.http, "grants.http")?;
        for (name, env) in &self.environments {
            if let Some(http) = env.grants.as_ref().and_then(|g| g.http.as_ref()) {
                check_http_grants(http, &format!("environments.{name}.grants.http"))?;
            }
        }
        for (i, key) in self.trust.keys.iter().enumerate() {
            if key.len() != 64 || !key.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err((format!("trust.keys[{i}]"), "an ed25519 public key is 64 hex digits (see `host plugins keygen`)".into()));
            }
        }
        if let Some(url) = &self.state.url
            && !(url.starts_with("sqlite:") || url.starts_with("postgres"))
        {
            return Err(("state.url".into(), "must start with sqlite: or postgres://".into()));
        }
        Ok(())
    }
}

fn check_http_grants(grants: &[String], key: &str) -> Result<(), (String, String)> {
    for (i, grant) in grants.iter().enumerate() {
        if grant.contains("://") || grant.contains('/') {
            return Err((
                format!("{key}[{i}]"),
                format!("`{grant}` should be `host:port` or `host`, without scheme or path"),
            ));
        }
    }
    Ok(())
}

fn check_health(h: &Health, key: &str) -> Result<(), (String, String)> {
    if let Some(url) = &h.base_url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        return Err((format!("{key}.base_url"), format!("`{url}` must start with http:// or https://")));
    }
    for (i, p) in h.probes.iter().enumerate() {
        if !p.path.starts_with('/') {
            return Err((format!("{key}.probes[{i}].path"), format!("`{}` must start with /", p.path)));
        }
        if p.attempts == 0 {
            return Err((format!("{key}.probes[{i}].attempts"), "must be at least 1".into()));
        }
    }
    if h.attempts == Some(0) {
        return Err((format!("{key}.attempts"), "must be at least 1".into()));
    }
    Ok(())
}

fn to_table(t: &Timeouts) -> toml::Table {
    let mut table = toml::Table::new();
    for (k, d) in [
        ("preflight", t.preflight),
        ("backup", t.backup),
        ("deploy", t.deploy),
        ("verify", t.verify),
        ("rollback", t.rollback),
        ("call", t.call),
        ("lock_lease", t.lock_lease),
    ] {
        table.insert(k.into(), humantime::format_duration(d).to_string().into());
    }
    table
}

/// `over` wins key by key, recursively for nested tables.
pub fn merge_tables(base: &toml::Table, over: &toml::Table) -> toml::Table {
    let mut out = base.clone();
    for (k, v) in over {
        match (out.get(k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => {
                let merged = merge_tables(b, o);
                out.insert(k.clone(), toml::Value::Table(merged));
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out
}

/// The configuration as it applies to one environment.
#[derive(Debug, Clone)]
pub struct EnvironmentConfig {
    pub name: String,
    pub settings: serde_json::Value,
    pub health: Health,
    pub timeouts: Timeouts,
    pub on_destructive: DestructivePolicy,
    pub pause: Duration,
    pub require_approval: bool,
    /// Global grants with this environment's replacements applied.
    pub grants: Grants,
    pub strategy: Strategy,
    pub ci: Option<CiConfig>,
    pub confirm: Option<String>,
    pub promote_from: Option<String>,
    pub monitor: Option<MonitorConfig>,
}

impl Config {
    pub fn project_name(&self) -> String {
        self.file.project.name.clone().unwrap_or_else(|| {
            self.root.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
        })
    }

    pub fn environment_names(&self) -> Vec<String> {
        self.file.environments.keys().cloned().collect()
    }

    /// Resolve an environment: its overrides applied on the global sections.
    pub fn environment(&self, name: &str) -> Result<EnvironmentConfig, String> {
        let env = match self.file.environments.get(name) {
            Some(env) => env.clone(),
            None if self.file.environments.is_empty() => Environment::default(),
            None => {
                return Err(format!(
                    "{}: no environment `{name}` (known: {})",
                    self.path.display(),
                    self.environment_names().join(", ")
                ));
            }
        };
        let base = self.file.plugin.settings.clone().unwrap_or_default();
        let settings = match &env.settings {
            Some(over) => merge_tables(&base, over),
            None => base,
        };
        let settings = serde_json::to_value(settings).map_err(|e| e.to_string())?;
        let mut health = self.file.health.clone();
        if let Some(h) = &env.health {
            if h.base_url.is_some() {
                health.base_url = h.base_url.clone();
            }
            if !h.probes.is_empty() {
                health.probes = h.probes.clone();
            }
            if h.deadline.is_some() {
                health.deadline = h.deadline;
            }
            if h.attempts.is_some() {
                health.attempts = h.attempts;
            }
        }
        health.base_url = health.base_url.map(|u| expand_env(&u));
        let timeouts = match &env.timeouts {
            Some(over) => {
                let merged = merge_tables(&to_table(&self.file.timeouts), over);
                toml::Value::Table(merged).try_into().map_err(|e: toml::de::Error| e.to_string())?
            }
            None => self.file.timeouts.clone(),
        };
        let mut grants = self.file.grants.clone();
        if let Some(over) = &env.grants {
            grants.programs = over.programs.clone().unwrap_or(grants.programs);
            grants.env = over.env.clone().unwrap_or(grants.env);
            grants.http = over.http.clone().unwrap_or(grants.http);
        }
        Ok(EnvironmentConfig {
            grants,
            name: name.to_string(),
            settings,
            health,
            timeouts,
            on_destructive: env.on_destructive,
            pause: env.pause.unwrap_or(Duration::from_secs(10)),
            require_approval: env.require_approval,
            strategy: env.strategy,
            ci: env.ci.clone(),
            confirm: env.confirm.clone(),
            promote_from: env.promote_from.clone(),
            monitor: env.monitor.clone(),
        })
    }

    /// Resolve a path relative to the project root.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() { p.to_path_buf() } else { self.root.join(p) }
    }
}

/// Expand `${VAR}` and `${VAR:-default}` from the host's environment, so one deploy file
/// serves machines where the app listens on different ports.
pub fn expand_env(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let Some(len) = rest[start..].find('}') else { break };
        let inner = &rest[start + 2..start + len];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, d),
            None => (inner, ""),
        };
        out.push_str(&std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_string()));
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    out
}
