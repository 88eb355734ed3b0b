//! Environment locks as leases.
//!
//! A run holds its environment's lock for a short lease and renews it while it is alive, so a
//! crashed run never locks an environment forever: once its lease expires the next run takes
//! the lock over and recovers the crashed deployment. Every operation is one statement, so two
//! processes (or two CI runners on one PostgreSQL) can race for a lock and exactly one wins.
//!
//! Holder names must be unique per run (for example `alice@laptop pid 4242 deploy 01J...`):
//! the lock is not re-entrant, and release and renewal only act on the holder's own lease.

use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, now_ms};

/// The expiry of a lock kept by [`Store::hold_lock_with_reason`]: only a person releases it.
pub const HELD_UNTIL_RELEASED: i64 = i64::MAX;

/// Who holds a lock and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LockInfo {
    pub holder: String,
    pub reason: String,
    pub acquired_at: i64,
    /// Unix milliseconds; [`HELD_UNTIL_RELEASED`] when only `host unlock` ends it.
    pub expires_at: i64,
}

impl LockInfo {
    /// Whether the lease ran out at `now` (unix milliseconds), so the lock may be taken over.
    pub fn is_expired(&self, now: i64) -> bool {
        self.expires_at < now
    }

    /// Whether the lock was kept for a person to act (a rollback failed).
    pub fn is_held_until_released(&self) -> bool {
        self.expires_at == HELD_UNTIL_RELEASED
    }
}

/// The answer to [`Store::acquire_lock`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum LockOutcome {
    Acquired,
    /// Someone else holds a live lease.
    Held(LockInfo),
}

impl Store {
    /// Takes the lock of `environment` for `lease`, if it is free or its lease has expired.
    ///
    /// Lease expiry is compared against this process's clock; hosts sharing a PostgreSQL store
    /// should keep their clocks in sync to well within a lease.
    pub async fn acquire_lock(
        &self,
        environment: &str,
        holder: &str,
        reason: &str,
        lease: Duration,
    ) -> Result<LockOutcome> {
        // Loops only when the lock is released between our attempt and our look at it.
        loop {
            let now = now_ms();
            // Insert, or take over an expired lease, in one statement: the WHERE on the
            // conflict branch makes a live lease win, and rows_affected says whether we got it.
            let done = sqlx::query(
                "INSERT INTO locks (environment, holder, reason, acquired_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (environment) DO UPDATE SET \
                 holder = excluded.holder, reason = excluded.reason, \
                 acquired_at = excluded.acquired_at, expires_at = excluded.expires_at \
                 WHERE locks.expires_at < $4",
            )
            .bind(environment)
            .bind(holder)
            .bind(reason)
            .bind(now)
            .bind(lease_end(now, lease))
            .execute(&self.pool)
            .await
            .with_context(|| format!("taking the lock of `{environment}`"))?;
            if done.rows_affected() == 1 {
                return Ok(LockOutcome::Acquired);
            }
            if let Some(info) = self.lock_info(environment).await? {
                return Ok(LockOutcome::Held(info));
            }
        }
    }

    /// Extends our lease to `lease` from now. `false` means the lock is no longer ours (it
    /// expired and someone took it over, or an operator released it): stop changing things.
    pub async fn renew_lock(
        &self,
        environment: &str,
        holder: &str,
        lease: Duration,
    ) -> Result<bool> {
        let new_end = lease_end(now_ms(), lease);
        // Never shortens a lease, so a late renewal cannot undo `hold_lock_with_reason`.
        let done = sqlx::query(
            "UPDATE locks SET expires_at = CASE WHEN expires_at < $3 THEN $3 ELSE expires_at END \
             WHERE environment = $1 AND holder = $2",
        )
        .bind(environment)
        .bind(holder)
        .bind(new_end)
        .execute(&self.pool)
        .await
        .with_context(|| format!("renewing the lock of `{environment}`"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Releases our lock. `false` if it was not ours (any more).
    pub async fn release_lock(&self, environment: &str, holder: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM locks WHERE environment = $1 AND holder = $2")
            .bind(environment)
            .bind(holder)
            .execute(&self.pool)
            .await
            .with_context(|| format!("releasing the lock of `{environment}`"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Who holds the lock of `environment`, including a holder whose lease has expired but
    /// who was not taken over yet (see [`LockInfo::is_expired`]). `None` when it is free.
    pub async fn lock_info(&self, environment: &str) -> Result<Option<LockInfo>> {
        let row = sqlx::query(
            "SELECT holder, reason, acquired_at, expires_at FROM locks WHERE environment = $1",
        )
        .bind(environment)
        .fetch_optional(&self.pool)
        .await
        .with_context(|| format!("reading the lock of `{environment}`"))?;
        row.as_ref().map(lock_from_row).transpose()
    }

    /// Keeps our lock until a person releases it, with `reason` saying what they must do.
    /// Used when a rollback failed: nobody may deploy over a half-restored environment.
    ///
    /// Also takes the lock if it is free or expired, since the reason matters more than who
    /// held it; `false` only if another holder has a live lease.
    pub async fn hold_lock_with_reason(
        &self,
        environment: &str,
        holder: &str,
        reason: &str,
    ) -> Result<bool> {
        let now = now_ms();
        let done = sqlx::query(
            "INSERT INTO locks (environment, holder, reason, acquired_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (environment) DO UPDATE SET \
             acquired_at = CASE WHEN locks.holder = $2 THEN locks.acquired_at ELSE $4 END, \
             holder = excluded.holder, reason = excluded.reason, expires_at = excluded.expires_at \
             WHERE locks.holder = $2 OR locks.expires_at < $4",
        )
        .bind(environment)
        .bind(holder)
        .bind(reason)
        .bind(now)
        .bind(HELD_UNTIL_RELEASED)
        .execute(&self.pool)
        .await
        .with_context(|| format!("keeping the lock of `{environment}`"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Removes the lock whoever holds it (`host unlock`); returns what was removed.
    pub async fn force_release(&self, environment: &str) -> Result<Option<LockInfo>> {
        let row = sqlx::query(
            "DELETE FROM locks WHERE environment = $1 \
             RETURNING holder, reason, acquired_at, expires_at",
        )
        .bind(environment)
        .fetch_optional(&self.pool)
        .await
        .with_context(|| format!("removing the lock of `{environment}`"))?;
        row.as_ref().map(lock_from_row).transpose()
    }
}

fn lease_end(now: i64, lease: Duration) -> i64 {
    let lease = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    // Saturates below HELD_UNTIL_RELEASED so an absurd lease is still a lease.
    now.saturating_add(lease).min(HELD_UNTIL_RELEASED - 1)
}

fn lock_from_row(row: &AnyRow) -> Result<LockInfo> {
    Ok(LockInfo {
        holder: row.try_get("holder")?,
        reason: row.try_get("reason")?,
        acquired_at: row.try_get("acquired_at")?,
        expires_at: row.try_get("expires_at")?,
    })
}
