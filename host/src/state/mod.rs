//! The state store: environment revisions, deployment history, the phase journal, recorded
//! events, backups, lock leases and plugin key/value state, in one SQL database.
//!
//! SQLite (a file under the project, no server) by default; PostgreSQL when given a
//! `postgres://` URL, so several CI runners can share one store. Both go through sqlx's `Any`
//! driver with the same SQL and the same migrations, so every query in this module stays within
//! what both dialects accept: `$n` placeholders, TEXT and BIGINT columns, JSON as text,
//! timestamps as unix milliseconds taken from this process's clock ([`now_ms`]).
//!
//! Several host processes may use one store at once (a deploy and a concurrent attempt), so
//! every write that must be atomic is a single statement; nothing reads, decides and then
//! writes in separate steps.
//!
//! Migrations live in `migrations/` and are compiled in. A released migration must never be
//! edited (sqlx checks their checksums on every open); change the schema with a new file.

mod locks;
mod monitor;
mod records;
mod watch;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::path::Path;
use std::pin::Pin;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Executor, Row};

pub use locks::{HELD_UNTIL_RELEASED, LockInfo, LockOutcome};
pub use monitor::{MonitorCheck, NewMonitorCheck};
pub use watch::{NewWatch, WatchRecord, WatchStatus, Watcher};
pub use records::{
    BackupRecord, DeploymentKind, DeploymentRecord, DeploymentStatus, EventRecord, NewDeployment,
    PhaseOutcome, PhaseRecord,
};

/// Where `open_default` keeps the store, relative to the project root.
pub const DEFAULT_STATE_FILE: &str = ".host/state.db";

/// How long a SQLite writer waits for another process's write to finish before failing.
/// Writes here are single small statements, so anything longer than this is a stuck process.
const SQLITE_BUSY_TIMEOUT_MS: u64 = 10_000;

/// The schema, oldest first. Versions are the file name prefixes.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "initial", include_str!("migrations/0001_initial.sql")),
    (2, "watches and monitor", include_str!("migrations/0002_watches_and_monitor.sql")),
];

/// The database behind a [`Store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A handle on the state store. Cheap to clone: clones share one connection pool.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

/// What is known about one environment. Unknown environments have every field empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnvironmentState {
    pub name: String,
    pub current_revision: Option<String>,
    pub last_validated_revision: Option<String>,
    pub updated_at: Option<i64>,
}

impl Store {
    /// Opens (creating if needed) the store at `url` and brings its schema up to date.
    ///
    /// `sqlite:path/to/file.db` or `sqlite:///abs/path.db` for a file (parent folders are
    /// created), `postgres://user:pass@host/db` for PostgreSQL.
    pub async fn open(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();

        let (backend, connect_url) = if url.starts_with("sqlite:") {
            (Backend::Sqlite, prepare_sqlite_url(url)?)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_string())
        } else {
            bail!(
                "unsupported state store URL `{}`: use `sqlite:<path>` or `postgres://...`",
                redact(url)
            );
        };

        let mut options = AnyPoolOptions::new().max_connections(4);
        if backend == Backend::Sqlite {
            options = options.after_connect(|conn, _meta| {
                Box::pin(async move {
                    conn.execute(&*format!("PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}"))
                        .await?;
                    Ok(())
                })
            });
        }
        let pool = options
            .connect(&connect_url)
            .await
            .with_context(|| format!("opening the state store at {}", redact(url)))?;

        let store = Store { pool, backend };
        store
            .initialise()
            .await
            .with_context(|| format!("preparing the state store at {}", redact(url)))?;
        Ok(store)
    }

    /// Opens the SQLite store of a project: `<project_root>/.host/state.db`.
    pub async fn open_default(project_root: &Path) -> Result<Store> {
        let path = project_root.join(DEFAULT_STATE_FILE);
        // Built through sqlx's own options so paths with spaces, `?` or `#` survive the URL.
        let url = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .to_url_lossy();
        Store::open(url.as_str()).await
    }

    /// `"sqlite"` or `"postgres"`, for messages and `host status`.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Switches SQLite to WAL and runs the migrations.
    ///
    /// Two processes opening a fresh file at once can collide here in ways sqlx's busy timeout
    /// does not cover: switching to WAL needs an exclusive lock it will not wait for, and on
    /// SQLite the migrator has no cross-process lock, so both may try to apply migration 1 and
    /// the loser fails. Both are transient: a second attempt sees WAL set and the migration
    /// applied. PostgreSQL serialises migrations with an advisory lock and never needs a retry.
    async fn initialise(&self) -> Result<()> {
        let mut delay = Duration::from_millis(25);
        let mut attempt = 1;
        loop {
            match self.try_initialise().await {
                Ok(()) => return Ok(()),
                Err(err) if self.backend == Backend::Sqlite && attempt < 6 => {
                    tracing::debug!(attempt, error = %err, "state store initialisation retried");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                }
                Err(err) => return Err(err),
            }
        }
    }

    async fn try_initialise(&self) -> Result<()> {
        if self.backend == Backend::Sqlite {
            // WAL lets readers (`host status`, `host history`) run while a deploy writes, and
            // it is a property of the file, so setting it once covers every connection.
            let mode: String = sqlx::query("PRAGMA journal_mode = WAL")
                .fetch_one(&self.pool)
                .await
                .context("switching SQLite to WAL")?
                .try_get(0)?;
            if !mode.eq_ignore_ascii_case("wal") {
                bail!("SQLite refused WAL journal mode (still `{mode}`)");
            }
        }
        migrator()
            .await?
            .run(&self.pool)
            .await
            .context("running state store migrations")?;
        Ok(())
    }

    // ---- environments ----------------------------------------------------------------------

    /// What runs in `environment`; all fields empty if nothing was ever recorded for it.
    pub async fn environment(&self, environment: &str) -> Result<EnvironmentState> {
        let row = sqlx::query(
            "SELECT current_revision, last_validated_revision, updated_at \
             FROM environments WHERE name = $1",
        )
        .bind(environment)
        .fetch_optional(&self.pool)
        .await
        .with_context(|| format!("reading environment `{environment}`"))?;
        Ok(match row {
            Some(row) => EnvironmentState {
                name: environment.to_string(),
                current_revision: row.try_get("current_revision")?,
                last_validated_revision: row.try_get("last_validated_revision")?,
                updated_at: Some(row.try_get("updated_at")?),
            },
            None => EnvironmentState {
                name: environment.to_string(),
                current_revision: None,
                last_validated_revision: None,
                updated_at: None,
            },
        })
    }

    /// Records that `revision` now runs in `environment` (deployed, not yet validated).
    pub async fn set_current_revision(&self, environment: &str, revision: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO environments (name, current_revision, last_validated_revision, updated_at) \
             VALUES ($1, $2, NULL, $3) \
             ON CONFLICT (name) DO UPDATE SET \
             current_revision = excluded.current_revision, updated_at = excluded.updated_at",
        )
        .bind(environment)
        .bind(revision)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .with_context(|| format!("recording current revision of `{environment}`"))?;
        Ok(())
    }

    /// Records that `revision` passed verification in `environment`; it is also what runs now.
    pub async fn set_validated_revision(&self, environment: &str, revision: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO environments (name, current_revision, last_validated_revision, updated_at) \
             VALUES ($1, $2, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET \
             current_revision = excluded.current_revision, \
             last_validated_revision = excluded.last_validated_revision, \
             updated_at = excluded.updated_at",
        )
        .bind(environment)
        .bind(revision)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .with_context(|| format!("recording validated revision of `{environment}`"))?;
        Ok(())
    }

    // ---- plugin key/value state ------------------------------------------------------------

    pub async fn kv_get(
        &self,
        plugin: &str,
        environment: &str,
        key: &str,
    ) -> Result<Option<String>> {
        let row =
            sqlx::query("SELECT value FROM kv WHERE plugin = $1 AND environment = $2 AND key = $3")
                .bind(plugin)
                .bind(environment)
                .bind(key)
                .fetch_optional(&self.pool)
                .await
                .with_context(|| {
                    format!("reading key `{key}` of plugin `{plugin}` in `{environment}`")
                })?;
        Ok(row.map(|row| row.try_get("value")).transpose()?)
    }

    pub async fn kv_set(
        &self,
        plugin: &str,
        environment: &str,
        key: &str,
        value: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO kv (plugin, environment, key, value) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (plugin, environment, key) DO UPDATE SET value = excluded.value",
        )
        .bind(plugin)
        .bind(environment)
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await
        .with_context(|| format!("writing key `{key}` of plugin `{plugin}` in `{environment}`"))?;
        Ok(())
    }
}

/// Milliseconds since the unix epoch: the unit of every timestamp in the store.
pub fn now_ms() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

/// Makes a user's SQLite URL safe to open: creates the file and its parent folders unless the
/// URL chose another mode itself (`mode=ro` must not create anything).
fn prepare_sqlite_url(url: &str) -> Result<String> {
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    let other_mode = url.contains("mode=") && !url.contains("mode=rwc");
    if in_memory || other_mode {
        return Ok(url.to_string());
    }
    let options = SqliteConnectOptions::from_str(url)
        .with_context(|| format!("invalid SQLite URL `{url}`"))?
        .create_if_missing(true);
    if let Some(parent) = options.get_filename().parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating the state store folder {}", parent.display()))?;
    }
    Ok(options.to_url_lossy().to_string())
}

/// The URL without its password, for error messages.
fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((credentials, host)) => {
                let user = credentials.split(':').next().unwrap_or_default();
                format!("{scheme}://{user}:***@{host}")
            }
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// The compiled-in migrations. Built by hand because sqlx's `migrate!` macro needs the
/// `macros` feature, which would also pull in compile-time query checking.
async fn migrator() -> Result<Migrator> {
    Migrator::new(EmbeddedMigrations)
        .await
        .context("loading the built-in state store migrations")
}

#[derive(Debug)]
struct EmbeddedMigrations;

impl MigrationSource<'static> for EmbeddedMigrations {
    // The trait's return type is `futures_core::future::BoxFuture`, spelled out here to
    // avoid a direct dependency on futures-core.
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 'static>> {
        Box::pin(async {
            Ok(MIGRATIONS
                .iter()
                .map(|&(version, description, sql)| {
                    Migration::new(
                        version,
                        Cow::Borrowed(description),
                        MigrationType::Simple,
                        Cow::Borrowed(sql),
                        false,
                    )
                })
                .collect())
        })
    }
}
