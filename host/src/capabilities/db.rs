//! Database queries for plugins: databases named in deploy.toml only, read-only unless the
//! operator granted writes. Values come back as text, so plugins need no driver.

use super::CapabilityContext;
use crate::runtime::{CapabilityError, QueryResult};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Executor, Row};
use std::collections::HashMap;
use std::time::Duration;

/// One small pool per database, opened on first use.
#[derive(Default)]
pub struct Pools(tokio::sync::Mutex<HashMap<String, PgPool>>);

pub async fn query(
    ctx: &CapabilityContext,
    database: &str,
    sql: &str,
    params: &[String],
) -> Result<QueryResult, CapabilityError> {
    let Some(db) = ctx.databases.get(database) else {
        return Err(ctx.denied("query database", database, "[databases]"));
    };
    let Ok(url) = std::env::var(&db.url_env) else {
        return Err(CapabilityError::Failed(format!(
            "database `{database}`: environment variable {} is not set",
            db.url_env
        )));
    };
    let pool = {
        let mut pools = ctx.pools.0.lock().await;
        match pools.get(database) {
            Some(p) => p.clone(),
            None => {
                let p = PgPoolOptions::new()
                    .max_connections(2)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect(&url)
                    .await
                    .map_err(|e| CapabilityError::Failed(format!("database `{database}`: {e}")))?;
                pools.insert(database.to_string(), p.clone());
                p
            }
        }
    };
    let failed = |e: sqlx::Error| CapabilityError::Failed(format!("database `{database}`: {e}"));
    let mut tx = pool.begin().await.map_err(failed)?;
    if !db.write {
        // Enforced by the server, not by parsing SQL: a write in any form is refused.
        tx.execute("SET TRANSACTION READ ONLY").await.map_err(failed)?;
    }
    let trimmed = sql.trim_start().to_ascii_lowercase();
    let returns_rows = ["select", "with", "values", "table"].iter().any(|k| trimmed.starts_with(k));
    let result = if returns_rows {
        // Let the server render every value as JSON text, whatever its type.
        let wrapped = format!("SELECT row_to_json(q)::text FROM ({sql}) AS q");
        let mut query = sqlx::query(&wrapped);
        for p in params {
            query = query.bind(p);
        }
        let rows = query.fetch_all(&mut *tx).await.map_err(failed)?;
        let mut columns: Vec<String> = Vec::new();
        let mut out = Vec::new();
        for row in rows {
            let text: String = row.try_get(0).map_err(failed)?;
            let object: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&text).map_err(|e| CapabilityError::Failed(e.to_string()))?;
            if columns.is_empty() {
                columns = object.keys().cloned().collect();
            }
            out.push(
                object
                    .values()
                    .map(|v| match v {
                        serde_json::Value::Null => None,
                        serde_json::Value::String(s) => Some(s.clone()),
                        other => Some(other.to_string()),
                    })
                    .collect(),
            );
        }
        QueryResult { columns, rows: out }
    } else {
        if ctx.dry_run {
            return Err(CapabilityError::Failed(
                "a writing query cannot run under --dry-run".into(),
            ));
        }
        let mut query = sqlx::query(sql);
        for p in params {
            query = query.bind(p);
        }
        let done = query.execute(&mut *tx).await.map_err(failed)?;
        QueryResult {
            columns: vec!["rows_affected".into()],
            rows: vec![vec![Some(done.rows_affected().to_string())]],
        }
    };
    tx.commit().await.map_err(failed)?;
    Ok(result)
}
