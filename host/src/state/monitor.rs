//! `host monitor`'s record: every check, so the next run knows the previous state and alerts
//! only when it changes (down, then recovered), and so an outage's length can be told.

use anyhow::{Context, Result};
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, now_ms};

/// A check about to be recorded.
#[derive(Debug, Clone)]
pub struct NewMonitorCheck {
    pub environment: String,
    pub url: String,
    pub ok: bool,
    pub status: u16,
    pub detail: String,
    pub duration_ms: u64,
    /// The state differs from the previous check's (or the first check is down).
    pub changed: bool,
}

/// One recorded check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MonitorCheck {
    pub id: String,
    pub environment: String,
    pub at: i64,
    pub url: String,
    pub ok: bool,
    pub status: u16,
    pub detail: String,
    pub duration_ms: u64,
    pub changed: bool,
}

const COLUMNS: &str = "id, environment, at, url, ok, status, detail, duration_ms, changed";

impl Store {
    pub async fn record_monitor_check(&self, check: &NewMonitorCheck) -> Result<MonitorCheck> {
        let record = MonitorCheck {
            id: uuid::Uuid::new_v4().simple().to_string(),
            environment: check.environment.clone(),
            at: now_ms(),
            url: check.url.clone(),
            ok: check.ok,
            status: check.status,
            detail: check.detail.clone(),
            duration_ms: check.duration_ms,
            changed: check.changed,
        };
        sqlx::query(&format!(
            "INSERT INTO monitor_checks ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        ))
        .bind(&record.id)
        .bind(&record.environment)
        .bind(record.at)
        .bind(&record.url)
        .bind(i64::from(record.ok))
        .bind(i64::from(record.status))
        .bind(&record.detail)
        .bind(i64::try_from(record.duration_ms).unwrap_or(i64::MAX))
        .bind(i64::from(record.changed))
        .execute(&self.pool)
        .await
        .with_context(|| format!("recording a monitor check of `{}`", check.environment))?;
        Ok(record)
    }

    /// The last `limit` checks of `environment`, newest first.
    pub async fn monitor_checks(&self, environment: &str, limit: u32) -> Result<Vec<MonitorCheck>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM monitor_checks WHERE environment = $1 \
             ORDER BY at DESC, id DESC LIMIT $2"
        ))
        .bind(environment)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .with_context(|| format!("reading the monitor checks of `{environment}`"))?;
        rows.iter().map(check_from_row).collect()
    }

    /// When the current outage began: the check that went down, if the latest check is down.
    pub async fn monitor_down_since(&self, environment: &str) -> Result<Option<i64>> {
        let row = sqlx::query(
            "SELECT at FROM monitor_checks WHERE environment = $1 AND changed = 1 AND ok = 0 \
             ORDER BY at DESC, id DESC LIMIT 1",
        )
        .bind(environment)
        .fetch_optional(&self.pool)
        .await
        .with_context(|| format!("reading the outage start of `{environment}`"))?;
        Ok(row.map(|r| r.try_get("at")).transpose()?)
    }
}

fn check_from_row(row: &AnyRow) -> Result<MonitorCheck> {
    Ok(MonitorCheck {
        id: row.try_get("id")?,
        environment: row.try_get("environment")?,
        at: row.try_get("at")?,
        url: row.try_get("url")?,
        ok: row.try_get::<i64, _>("ok")? != 0,
        status: u16::try_from(row.try_get::<i64, _>("status")?).unwrap_or(0),
        detail: row.try_get("detail")?,
        duration_ms: u64::try_from(row.try_get::<i64, _>("duration_ms")?).unwrap_or(0),
        changed: row.try_get::<i64, _>("changed")? != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(ok: bool, changed: bool) -> NewMonitorCheck {
        NewMonitorCheck {
            environment: "prod".into(),
            url: "http://x/".into(),
            ok,
            status: if ok { 200 } else { 502 },
            detail: String::new(),
            duration_ms: 3,
            changed,
        }
    }

    #[tokio::test]
    async fn checks_are_kept_newest_first_with_the_outage_start() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_default(dir.path()).await.unwrap();
        assert!(store.monitor_checks("prod", 5).await.unwrap().is_empty());
        let down = store
            .record_monitor_check(&check(false, true))
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        store
            .record_monitor_check(&check(false, false))
            .await
            .unwrap();
        let checks = store.monitor_checks("prod", 5).await.unwrap();
        assert_eq!(checks.len(), 2);
        assert!(!checks[0].changed && checks[1].changed);
        assert_eq!(
            store.monitor_down_since("prod").await.unwrap(),
            Some(down.at)
        );
    }
}
