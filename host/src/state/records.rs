//! Deployment history: one record per run, its phase journal, its recorded events and the
//! backup it took.
//!
//! The journal is what makes a crash recoverable: the engine writes a phase row before the
//! phase starts (with the inputs it will use: revision, backup id) and completes it when the
//! phase ends, so a later run can find a deployment still `running` whose lease has expired and
//! see exactly how far it got.

use std::fmt;
use std::str::FromStr;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use sqlx::Row;
use sqlx::any::{Any, AnyArguments, AnyRow};
use sqlx::query::Query;

use super::{Store, now_ms};

/// Defines a closed set of values stored as text, so the database stays readable with a plain
/// SQL client and the JSON output matches what is stored.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl FromStr for $name {
            type Err = anyhow::Error;

            fn from_str(text: &str) -> Result<Self> {
                match text {
                    $($text => Ok(Self::$variant),)+
                    other => bail!(concat!("unknown ", stringify!($name), " `{}` in the state store"), other),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum! {
    /// Whether a run moved an environment forward or back.
    DeploymentKind {
        Deploy = "deploy",
        Rollback = "rollback",
    }
}

text_enum! {
    /// How a run ended; `Running` until it does (or forever, if its process died).
    /// `deploy-first` adds `Validating` (live, waiting for CI; see the `watches` table) and
    /// `Unvalidated` (no CI verdict and kept, or replaced by a newer deployment first).
    DeploymentStatus {
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        RolledBack = "rolled_back",
        RollbackFailed = "rollback_failed",
        Aborted = "aborted",
        Validating = "validating",
        Unvalidated = "unvalidated",
    }
}

text_enum! {
    /// How one phase ended; `Running` while it runs (or if the process died during it).
    PhaseOutcome {
        Running = "running",
        Ok = "ok",
        Failed = "failed",
        Skipped = "skipped",
    }
}

/// What is known when a run starts. The id is chosen by the caller so it can appear in logs
/// and lock reasons before anything is written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewDeployment {
    pub id: String,
    pub environment: String,
    pub kind: DeploymentKind,
    pub plugin: String,
    /// Digest of the plugin component, so history shows exactly which code made decisions.
    pub plugin_digest: String,
    /// What the operator asked for, if anything (a rollback may ask for "the previous one").
    pub requested_revision: Option<String>,
    pub strategy: String,
    pub actor: String,
    pub dry_run: bool,
}

/// One run as stored, with its journal and backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeploymentRecord {
    pub id: String,
    pub environment: String,
    pub kind: DeploymentKind,
    pub plugin: String,
    pub plugin_digest: String,
    pub requested_revision: Option<String>,
    /// The resolved revision being deployed; known once preflight ran.
    pub target_revision: Option<String>,
    /// What ran before; the code a rollback goes back to.
    pub previous_revision: Option<String>,
    pub strategy: String,
    pub actor: String,
    pub dry_run: bool,
    pub status: DeploymentStatus,
    /// Preflight's verdict on what the deployment changes (code only, reversible or
    /// destructive migrations), which decides how it is rolled back.
    pub classification: Option<String>,
    pub detail: Option<String>,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub phases: Vec<PhaseRecord>,
    pub backup: Option<BackupRecord>,
}

/// One journal entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PhaseRecord {
    pub seq: i64,
    pub phase: String,
    pub inputs: serde_json::Value,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub outcome: PhaseOutcome,
    pub detail: Option<String>,
}

/// One engine event as recorded by the store subscriber.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventRecord {
    pub deployment_id: String,
    pub seq: i64,
    pub at: i64,
    pub kind: String,
    pub payload: serde_json::Value,
}

/// A backup taken (and checked) before anything changed; what a failed rollback points a
/// person to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupRecord {
    pub id: String,
    pub deployment_id: String,
    pub environment: String,
    pub path: String,
    /// The stack's format name, e.g. `pg_dump-custom`.
    pub format: String,
    pub size_bytes: u64,
    pub sha256: String,
    /// Whether the backup was read back successfully (`pg_restore --list` or equivalent).
    pub verified: bool,
    pub created_at: i64,
}

const DEPLOYMENT_COLUMNS: &str = "id, environment, kind, plugin, plugin_digest, \
    requested_revision, target_revision, previous_revision, strategy, actor, dry_run, status, \
    classification, detail, started_at, finished_at";

const BACKUP_COLUMNS: &str =
    "id, deployment_id, environment, path, format, size_bytes, sha256, verified, created_at";

/// How many times to retry a per-deployment sequence number taken by a concurrent writer.
/// Each lost attempt means another writer succeeded, so this bounds waiting, not correctness.
const SEQ_ATTEMPTS: usize = 10;

impl Store {
    // ---- deployments -----------------------------------------------------------------------

    /// Records the start of a run, status `running`.
    pub async fn begin_deployment(&self, new: &NewDeployment) -> Result<()> {
        sqlx::query(
            "INSERT INTO deployments (id, environment, kind, plugin, plugin_digest, \
             requested_revision, strategy, actor, dry_run, status, started_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&new.id)
        .bind(&new.environment)
        .bind(new.kind.as_str())
        .bind(&new.plugin)
        .bind(&new.plugin_digest)
        .bind(&new.requested_revision)
        .bind(&new.strategy)
        .bind(&new.actor)
        .bind(i64::from(new.dry_run))
        .bind(DeploymentStatus::Running.as_str())
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .with_context(|| format!("recording the start of deployment `{}`", new.id))?;
        Ok(())
    }

    /// Records what preflight resolved: the exact revision, what it replaces and how it must be
    /// rolled back.
    pub async fn update_deployment_target(
        &self,
        id: &str,
        target_revision: &str,
        previous_revision: Option<&str>,
        classification: &str,
    ) -> Result<()> {
        let done = sqlx::query(
            "UPDATE deployments SET target_revision = $2, previous_revision = $3, \
             classification = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(target_revision)
        .bind(previous_revision)
        .bind(classification)
        .execute(&self.pool)
        .await
        .with_context(|| format!("recording the target of deployment `{id}`"))?;
        expect_one(done.rows_affected(), id)
    }

    /// Records how a run ended.
    pub async fn finish_deployment(
        &self,
        id: &str,
        status: DeploymentStatus,
        detail: Option<&str>,
    ) -> Result<()> {
        let done = sqlx::query(
            "UPDATE deployments SET status = $2, detail = $3, finished_at = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(status.as_str())
        .bind(detail)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .with_context(|| format!("recording the end of deployment `{id}`"))?;
        expect_one(done.rows_affected(), id)
    }

    /// One run with its journal and backup, or `None` if the id is unknown.
    pub async fn deployment(&self, id: &str) -> Result<Option<DeploymentRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .with_context(|| format!("reading deployment `{id}`"))?;
        match row {
            Some(row) => Ok(Some(self.with_children(deployment_from_row(&row)?).await?)),
            None => Ok(None),
        }
    }

    /// The last `limit` runs in `environment`, newest first, each with its journal and backup.
    pub async fn history(&self, environment: &str, limit: u32) -> Result<Vec<DeploymentRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE environment = $1 \
             ORDER BY started_at DESC, id DESC LIMIT $2"
        ))
        .bind(environment)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .with_context(|| format!("reading the history of `{environment}`"))?;
        self.records_with_children(&rows).await
    }

    /// Runs in `environment` still marked `running`, oldest first: either alive (their lock
    /// lease is fresh) or crashed and waiting for recovery.
    pub async fn unfinished(&self, environment: &str) -> Result<Vec<DeploymentRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE environment = $1 AND status = $2 \
             ORDER BY started_at, id"
        ))
        .bind(environment)
        .bind(DeploymentStatus::Running.as_str())
        .fetch_all(&self.pool)
        .await
        .with_context(|| format!("looking for unfinished deployments of `{environment}`"))?;
        self.records_with_children(&rows).await
    }

    // One query per record: `history` is read by people, with small limits, and this keeps
    // the SQL free of dialect-specific array binds.
    async fn records_with_children(&self, rows: &[AnyRow]) -> Result<Vec<DeploymentRecord>> {
        let mut records = Vec::with_capacity(rows.len());
        for row in rows {
            records.push(self.with_children(deployment_from_row(row)?).await?);
        }
        Ok(records)
    }

    async fn with_children(&self, mut record: DeploymentRecord) -> Result<DeploymentRecord> {
        record.phases = self.phases(&record.id).await?;
        record.backup = self.backup_of(&record.id).await?;
        Ok(record)
    }

    // ---- the phase journal -----------------------------------------------------------------

    /// Journals the start of `phase` with the inputs it will use; returns its sequence number
    /// within the deployment, for [`Store::phase_finished`].
    pub async fn phase_started(
        &self,
        deployment_id: &str,
        phase: &str,
        inputs: &serde_json::Value,
    ) -> Result<i64> {
        let inputs = inputs.to_string();
        let started_at = now_ms();
        self.insert_with_next_seq(|| {
            sqlx::query(
                "INSERT INTO phases (deployment_id, seq, phase, inputs, started_at, outcome) \
                 SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4, $5 \
                 FROM phases WHERE deployment_id = $1 \
                 RETURNING seq",
            )
            .bind(deployment_id)
            .bind(phase)
            .bind(&inputs)
            .bind(started_at)
            .bind(PhaseOutcome::Running.as_str())
        })
        .await
        .with_context(|| format!("journaling the start of phase `{phase}` of `{deployment_id}`"))
    }

    /// Journals the end of the phase numbered `seq`.
    pub async fn phase_finished(
        &self,
        deployment_id: &str,
        seq: i64,
        outcome: PhaseOutcome,
        detail: Option<&str>,
    ) -> Result<()> {
        let done = sqlx::query(
            "UPDATE phases SET outcome = $3, detail = $4, finished_at = $5 \
             WHERE deployment_id = $1 AND seq = $2",
        )
        .bind(deployment_id)
        .bind(seq)
        .bind(outcome.as_str())
        .bind(detail)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .with_context(|| format!("journaling the end of phase {seq} of `{deployment_id}`"))?;
        if done.rows_affected() != 1 {
            bail!("deployment `{deployment_id}` has no journaled phase {seq}");
        }
        Ok(())
    }

    async fn phases(&self, deployment_id: &str) -> Result<Vec<PhaseRecord>> {
        let rows = sqlx::query(
            "SELECT seq, phase, inputs, started_at, finished_at, outcome, detail \
             FROM phases WHERE deployment_id = $1 ORDER BY seq",
        )
        .bind(deployment_id)
        .fetch_all(&self.pool)
        .await
        .with_context(|| format!("reading the journal of `{deployment_id}`"))?;
        rows.iter()
            .map(|row| {
                Ok(PhaseRecord {
                    seq: row.try_get("seq")?,
                    phase: row.try_get("phase")?,
                    inputs: json_column(row, "inputs")?,
                    started_at: row.try_get("started_at")?,
                    finished_at: row.try_get("finished_at")?,
                    outcome: row.try_get::<String, _>("outcome")?.parse()?,
                    detail: row.try_get("detail")?,
                })
            })
            .collect()
    }

    // ---- events ----------------------------------------------------------------------------

    /// Records one engine event; returns its sequence number within the deployment.
    pub async fn record_event(
        &self,
        deployment_id: &str,
        kind: &str,
        payload: &serde_json::Value,
    ) -> Result<i64> {
        let payload = payload.to_string();
        let at = now_ms();
        self.insert_with_next_seq(|| {
            sqlx::query(
                "INSERT INTO events (deployment_id, seq, at, kind, payload) \
                 SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4 \
                 FROM events WHERE deployment_id = $1 \
                 RETURNING seq",
            )
            .bind(deployment_id)
            .bind(at)
            .bind(kind)
            .bind(&payload)
        })
        .await
        .with_context(|| format!("recording event `{kind}` of `{deployment_id}`"))
    }

    /// Every recorded event of a deployment, in order.
    pub async fn events(&self, deployment_id: &str) -> Result<Vec<EventRecord>> {
        let rows = sqlx::query(
            "SELECT deployment_id, seq, at, kind, payload FROM events \
             WHERE deployment_id = $1 ORDER BY seq",
        )
        .bind(deployment_id)
        .fetch_all(&self.pool)
        .await
        .with_context(|| format!("reading the events of `{deployment_id}`"))?;
        rows.iter()
            .map(|row| {
                Ok(EventRecord {
                    deployment_id: row.try_get("deployment_id")?,
                    seq: row.try_get("seq")?,
                    at: row.try_get("at")?,
                    kind: row.try_get("kind")?,
                    payload: json_column(row, "payload")?,
                })
            })
            .collect()
    }

    /// Runs an `INSERT ... SELECT MAX(seq) + 1 ... RETURNING seq`.
    ///
    /// On SQLite the statement holds the write lock throughout, so the number is always free.
    /// On PostgreSQL two writers of the same deployment can compute the same number; the loser
    /// hits the primary key and simply tries again with the next one.
    async fn insert_with_next_seq<'q>(
        &self,
        query: impl Fn() -> Query<'q, Any, AnyArguments<'q>>,
    ) -> Result<i64> {
        let mut attempt = 1;
        loop {
            match query().fetch_one(&self.pool).await {
                Ok(row) => return Ok(row.try_get("seq")?),
                Err(sqlx::Error::Database(err))
                    if err.is_unique_violation() && attempt < SEQ_ATTEMPTS =>
                {
                    attempt += 1;
                }
                Err(err) => return Err(err.into()),
            }
        }
    }

    // ---- backups ---------------------------------------------------------------------------

    pub async fn record_backup(&self, backup: &BackupRecord) -> Result<()> {
        let size = i64::try_from(backup.size_bytes).context("backup size does not fit in i64")?;
        sqlx::query(&format!(
            "INSERT INTO backups ({BACKUP_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        ))
        .bind(&backup.id)
        .bind(&backup.deployment_id)
        .bind(&backup.environment)
        .bind(&backup.path)
        .bind(&backup.format)
        .bind(size)
        .bind(&backup.sha256)
        .bind(i64::from(backup.verified))
        .bind(backup.created_at)
        .execute(&self.pool)
        .await
        .with_context(|| {
            format!(
                "recording backup `{}` of deployment `{}`",
                backup.id, backup.deployment_id
            )
        })?;
        Ok(())
    }

    /// The backup a deployment took (the latest, should it have taken several).
    pub async fn backup_of(&self, deployment_id: &str) -> Result<Option<BackupRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {BACKUP_COLUMNS} FROM backups WHERE deployment_id = $1 \
             ORDER BY created_at DESC, id DESC LIMIT 1"
        ))
        .bind(deployment_id)
        .fetch_optional(&self.pool)
        .await
        .with_context(|| format!("reading the backup of `{deployment_id}`"))?;
        row.as_ref().map(backup_from_row).transpose()
    }

    /// The newest backup taken in `environment`.
    pub async fn latest_backup(&self, environment: &str) -> Result<Option<BackupRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {BACKUP_COLUMNS} FROM backups WHERE environment = $1 \
             ORDER BY created_at DESC, id DESC LIMIT 1"
        ))
        .bind(environment)
        .fetch_optional(&self.pool)
        .await
        .with_context(|| format!("reading the latest backup of `{environment}`"))?;
        row.as_ref().map(backup_from_row).transpose()
    }
}

fn expect_one(rows_affected: u64, id: &str) -> Result<()> {
    if rows_affected != 1 {
        bail!("no deployment `{id}` in the state store");
    }
    Ok(())
}

fn deployment_from_row(row: &AnyRow) -> Result<DeploymentRecord> {
    Ok(DeploymentRecord {
        id: row.try_get("id")?,
        environment: row.try_get("environment")?,
        kind: row.try_get::<String, _>("kind")?.parse()?,
        plugin: row.try_get("plugin")?,
        plugin_digest: row.try_get("plugin_digest")?,
        requested_revision: row.try_get("requested_revision")?,
        target_revision: row.try_get("target_revision")?,
        previous_revision: row.try_get("previous_revision")?,
        strategy: row.try_get("strategy")?,
        actor: row.try_get("actor")?,
        dry_run: row.try_get::<i64, _>("dry_run")? != 0,
        status: row.try_get::<String, _>("status")?.parse()?,
        classification: row.try_get("classification")?,
        detail: row.try_get("detail")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        phases: Vec::new(),
        backup: None,
    })
}

fn backup_from_row(row: &AnyRow) -> Result<BackupRecord> {
    Ok(BackupRecord {
        id: row.try_get("id")?,
        deployment_id: row.try_get("deployment_id")?,
        environment: row.try_get("environment")?,
        path: row.try_get("path")?,
        format: row.try_get("format")?,
        size_bytes: u64::try_from(row.try_get::<i64, _>("size_bytes")?)?,
        sha256: row.try_get("sha256")?,
        verified: row.try_get::<i64, _>("verified")? != 0,
        created_at: row.try_get("created_at")?,
    })
}

fn json_column(row: &AnyRow, column: &str) -> Result<serde_json::Value> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text).with_context(|| format!("column `{column}` holds invalid JSON"))
}
