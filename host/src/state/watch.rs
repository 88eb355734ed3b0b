//! The `deploy-first` watch journal: one row per deployment that went live before CI said
//! anything, holding what is watched, where a failure rolls back to and how far the watch got.
//!
//! Progress lives here rather than in the watcher's memory, so `host status` can show it and a
//! killed watcher is resumed by running `host watch` again. A watcher claims a watch with a
//! lease (`heartbeat_at`), renewed on every poll, exactly like environment locks: one statement
//! decides who holds it, so two watchers never act on the same deployment.

use anyhow::{Context, Result};
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;
use std::time::Duration;

use super::{Store, now_ms};

/// Where a watch stands. `Validating` until a verdict; every other value is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchStatus {
    Validating,
    Validated,
    RolledBack,
    RollbackFailed,
    /// No verdict in time and `on_timeout = "keep"`: still running, not validated.
    Unvalidated,
    /// A newer deployment replaced the revision before CI answered.
    Superseded,
}

impl WatchStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            WatchStatus::Validating => "validating",
            WatchStatus::Validated => "validated",
            WatchStatus::RolledBack => "rolled_back",
            WatchStatus::RollbackFailed => "rollback_failed",
            WatchStatus::Unvalidated => "unvalidated",
            WatchStatus::Superseded => "superseded",
        }
    }

    fn parse(text: &str) -> Result<WatchStatus> {
        [
            WatchStatus::Validating,
            WatchStatus::Validated,
            WatchStatus::RolledBack,
            WatchStatus::RollbackFailed,
            WatchStatus::Unvalidated,
            WatchStatus::Superseded,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
        .with_context(|| format!("unknown watch status `{text}` in the state store"))
    }
}

/// What `host deploy` records when it hands a deployment over to a watcher.
#[derive(Debug, Clone)]
pub struct NewWatch {
    pub deployment_id: String,
    pub environment: String,
    pub revision: String,
    pub rollback_to: Option<String>,
    /// What is asked of CI (source, repo, deadlines), as JSON.
    pub ci: serde_json::Value,
}

/// One watch as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WatchRecord {
    pub deployment_id: String,
    pub environment: String,
    pub revision: String,
    pub rollback_to: Option<String>,
    pub status: WatchStatus,
    pub ci: serde_json::Value,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub watcher: Option<String>,
    pub watcher_pid: Option<i64>,
    pub watcher_host: Option<String>,
    pub heartbeat_at: Option<i64>,
    pub ci_seen_at: Option<i64>,
    pub polls: i64,
    pub last_poll_at: Option<i64>,
    pub last_ci_state: Option<String>,
    pub last_ci_detail: Option<String>,
    pub verdict: Option<String>,
}

/// Who may act on a watch.
#[derive(Debug, Clone)]
pub struct Watcher<'a> {
    pub holder: &'a str,
    pub pid: u32,
    pub host: &'a str,
}

const COLUMNS: &str = "deployment_id, environment, revision, rollback_to, status, ci, started_at, \
    finished_at, watcher, watcher_pid, watcher_host, heartbeat_at, ci_seen_at, polls, last_poll_at, \
    last_ci_state, last_ci_detail, verdict";

impl Store {
    /// Records a deployment awaiting CI, and marks any older watch of the environment
    /// superseded: only the revision now running can still be validated.
    pub async fn begin_watch(&self, new: &NewWatch) -> Result<()> {
        let now = now_ms();
        sqlx::query(
            "UPDATE watches SET status = $2, finished_at = $3, \
             verdict = 'superseded: a newer deployment replaced it before CI answered' \
             WHERE environment = $1 AND status = $4",
        )
        .bind(&new.environment)
        .bind(WatchStatus::Superseded.as_str())
        .bind(now)
        .bind(WatchStatus::Validating.as_str())
        .execute(&self.pool)
        .await
        .with_context(|| format!("superseding older watches of `{}`", new.environment))?;
        sqlx::query(
            "INSERT INTO watches (deployment_id, environment, revision, rollback_to, status, ci, \
             started_at, polls) VALUES ($1, $2, $3, $4, $5, $6, $7, 0)",
        )
        .bind(&new.deployment_id)
        .bind(&new.environment)
        .bind(&new.revision)
        .bind(&new.rollback_to)
        .bind(WatchStatus::Validating.as_str())
        .bind(new.ci.to_string())
        .bind(now)
        .execute(&self.pool)
        .await
        .with_context(|| format!("recording the watch of deployment `{}`", new.deployment_id))?;
        Ok(())
    }

    /// The newest watch of `environment`, whatever its status.
    pub async fn latest_watch(&self, environment: &str) -> Result<Option<WatchRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM watches WHERE environment = $1 \
             ORDER BY started_at DESC, deployment_id DESC LIMIT 1"
        ))
        .bind(environment)
        .fetch_optional(&self.pool)
        .await
        .with_context(|| format!("reading the latest watch of `{environment}`"))?;
        row.as_ref().map(watch_from_row).transpose()
    }

    pub async fn watch(&self, deployment_id: &str) -> Result<Option<WatchRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM watches WHERE deployment_id = $1"
        ))
        .bind(deployment_id)
        .fetch_optional(&self.pool)
        .await
        .with_context(|| format!("reading the watch of `{deployment_id}`"))?;
        row.as_ref().map(watch_from_row).transpose()
    }

    /// Takes the watch for `watcher` if nobody holds it, its holder's lease ran out, or its
    /// holder is `replacing` (a watcher known dead). `false`: someone else watches it.
    pub async fn claim_watch(
        &self,
        deployment_id: &str,
        watcher: &Watcher<'_>,
        lease: Duration,
        replacing: Option<&str>,
    ) -> Result<bool> {
        let now = now_ms();
        let expired_before = now - i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2);
        let done = sqlx::query(
            "UPDATE watches SET watcher = $2, watcher_pid = $3, watcher_host = $4, heartbeat_at = $5 \
             WHERE deployment_id = $1 AND status = $6 \
             AND (watcher IS NULL OR watcher = $2 OR heartbeat_at < $7 OR watcher = $8)",
        )
        .bind(deployment_id)
        .bind(watcher.holder)
        .bind(i64::from(watcher.pid))
        .bind(watcher.host)
        .bind(now)
        .bind(WatchStatus::Validating.as_str())
        .bind(expired_before)
        .bind(replacing.unwrap_or(""))
        .execute(&self.pool)
        .await
        .with_context(|| format!("claiming the watch of `{deployment_id}`"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives the watch back (the watcher stops without a verdict, e.g. it could not lock).
    pub async fn release_watch(&self, deployment_id: &str, holder: &str) -> Result<()> {
        sqlx::query(
            "UPDATE watches SET watcher = NULL, heartbeat_at = NULL \
             WHERE deployment_id = $1 AND watcher = $2",
        )
        .bind(deployment_id)
        .bind(holder)
        .execute(&self.pool)
        .await
        .with_context(|| format!("releasing the watch of `{deployment_id}`"))?;
        Ok(())
    }

    /// Records one look at CI (and renews the watcher's lease). `false` when the watch is no
    /// longer this watcher's or no longer validating: stop.
    pub async fn record_poll(
        &self,
        deployment_id: &str,
        holder: &str,
        state: &str,
        detail: &str,
        ci_seen: bool,
    ) -> Result<bool> {
        let now = now_ms();
        let done = sqlx::query(
            "UPDATE watches SET polls = polls + 1, last_poll_at = $3, heartbeat_at = $3, \
             last_ci_state = $4, last_ci_detail = $5, \
             ci_seen_at = CASE WHEN ci_seen_at IS NULL AND $6 = 1 THEN $3 ELSE ci_seen_at END \
             WHERE deployment_id = $1 AND watcher = $2 AND status = $7",
        )
        .bind(deployment_id)
        .bind(holder)
        .bind(now)
        .bind(state)
        .bind(detail)
        .bind(i64::from(ci_seen))
        .bind(WatchStatus::Validating.as_str())
        .execute(&self.pool)
        .await
        .with_context(|| format!("recording a CI poll of `{deployment_id}`"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Renews the watcher's lease between polls. `false`: the watch is not ours any more.
    pub async fn renew_watch(&self, deployment_id: &str, holder: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE watches SET heartbeat_at = $3 WHERE deployment_id = $1 AND watcher = $2 AND status = $4",
        )
        .bind(deployment_id)
        .bind(holder)
        .bind(now_ms())
        .bind(WatchStatus::Validating.as_str())
        .execute(&self.pool)
        .await
        .with_context(|| format!("renewing the watch of `{deployment_id}`"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Records the verdict. Only a watch still `validating` changes, so a late watcher
    /// cannot overwrite a verdict (or a supersession) already recorded.
    pub async fn finish_watch(
        &self,
        deployment_id: &str,
        status: WatchStatus,
        verdict: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE watches SET status = $2, verdict = $3, finished_at = $4, heartbeat_at = NULL \
             WHERE deployment_id = $1 AND status = $5",
        )
        .bind(deployment_id)
        .bind(status.as_str())
        .bind(verdict)
        .bind(now_ms())
        .bind(WatchStatus::Validating.as_str())
        .execute(&self.pool)
        .await
        .with_context(|| format!("recording the verdict on `{deployment_id}`"))?;
        Ok(done.rows_affected() == 1)
    }
}

fn watch_from_row(row: &AnyRow) -> Result<WatchRecord> {
    let ci: String = row.try_get("ci")?;
    Ok(WatchRecord {
        deployment_id: row.try_get("deployment_id")?,
        environment: row.try_get("environment")?,
        revision: row.try_get("revision")?,
        rollback_to: row.try_get("rollback_to")?,
        status: WatchStatus::parse(&row.try_get::<String, _>("status")?)?,
        ci: serde_json::from_str(&ci).context("column `ci` holds invalid JSON")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        watcher: row.try_get("watcher")?,
        watcher_pid: row.try_get("watcher_pid")?,
        watcher_host: row.try_get("watcher_host")?,
        heartbeat_at: row.try_get("heartbeat_at")?,
        ci_seen_at: row.try_get("ci_seen_at")?,
        polls: row.try_get("polls")?,
        last_poll_at: row.try_get("last_poll_at")?,
        last_ci_state: row.try_get("last_ci_state")?,
        last_ci_detail: row.try_get("last_ci_detail")?,
        verdict: row.try_get("verdict")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_default(dir.path()).await.unwrap();
        (dir, store)
    }

    async fn deployment(store: &Store, id: &str) {
        store
            .begin_deployment(&super::super::NewDeployment {
                id: id.into(),
                environment: "preprod".into(),
                kind: super::super::DeploymentKind::Deploy,
                plugin: "p".into(),
                plugin_digest: "d".into(),
                requested_revision: None,
                strategy: "deploy-first".into(),
                actor: "a".into(),
                dry_run: false,
            })
            .await
            .unwrap();
    }

    fn new(id: &str, rev: &str) -> NewWatch {
        NewWatch {
            deployment_id: id.into(),
            environment: "preprod".into(),
            revision: rev.into(),
            rollback_to: Some("old".into()),
            ci: serde_json::json!({ "source": "command" }),
        }
    }

    #[tokio::test]
    async fn one_watcher_at_a_time_a_dead_one_is_replaced_and_verdicts_are_final() {
        let (_dir, store) = store().await;
        deployment(&store, "d1").await;
        store.begin_watch(&new("d1", "aaa")).await.unwrap();
        let lease = Duration::from_secs(60);
        let w1 = Watcher {
            holder: "w1",
            pid: 1,
            host: "h",
        };
        let w2 = Watcher {
            holder: "w2",
            pid: 2,
            host: "h",
        };
        assert!(store.claim_watch("d1", &w1, lease, None).await.unwrap());
        assert!(
            !store.claim_watch("d1", &w2, lease, None).await.unwrap(),
            "w1's lease is live"
        );
        assert!(
            store
                .claim_watch("d1", &w2, lease, Some("w1"))
                .await
                .unwrap(),
            "w1 is known dead"
        );
        assert!(
            !store
                .record_poll("d1", "w1", "running", "", true)
                .await
                .unwrap(),
            "w1 lost it"
        );
        assert!(
            store
                .record_poll("d1", "w2", "running", "1 of 2", true)
                .await
                .unwrap()
        );
        let w = store.latest_watch("preprod").await.unwrap().unwrap();
        assert_eq!(
            (w.polls, w.last_ci_state.as_deref(), w.watcher_pid),
            (1, Some("running"), Some(2))
        );
        assert!(w.ci_seen_at.is_some());

        assert!(
            store
                .finish_watch("d1", WatchStatus::Validated, "CI passed")
                .await
                .unwrap()
        );
        assert!(
            !store
                .finish_watch("d1", WatchStatus::RolledBack, "late")
                .await
                .unwrap()
        );
        assert_eq!(
            store.watch("d1").await.unwrap().unwrap().status,
            WatchStatus::Validated
        );
    }

    #[tokio::test]
    async fn a_new_watch_supersedes_the_older_one() {
        let (_dir, store) = store().await;
        deployment(&store, "d1").await;
        deployment(&store, "d2").await;
        store.begin_watch(&new("d1", "aaa")).await.unwrap();
        store.begin_watch(&new("d2", "bbb")).await.unwrap();
        assert_eq!(
            store.watch("d1").await.unwrap().unwrap().status,
            WatchStatus::Superseded
        );
        let latest = store.latest_watch("preprod").await.unwrap().unwrap();
        assert_eq!(
            (latest.deployment_id.as_str(), latest.status),
            ("d2", WatchStatus::Validating)
        );
    }
}
