//! Sign-in throttle counters, shared by every instance, updated atomically.

use sqlx::FromRow;

use crate::{Db, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, FromRow)]
pub struct ThrottleRow {
    pub failures: i64,
    pub window_start: i64,
    pub locked_until: Option<i64>,
    pub last_failure_ms: Option<i64>,
}

/// What to do with one key's row after deciding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThrottleWrite {
    Keep,
    Put(ThrottleRow),
    Delete,
}

impl Db {
    pub async fn get_throttle(&self, key: &str) -> Result<Option<ThrottleRow>> {
        Ok(sqlx::query_as(
            "SELECT failures, window_start, locked_until, last_failure_ms FROM throttles WHERE key = $1",
        )
        .bind(key)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Read the rows of `keys`, let `decide` turn them into writes (one per key, in order)
    /// and a result, and apply the writes, in one transaction that holds every row's lock
    /// from the read to the commit. Concurrent callers on a shared key therefore decide one
    /// after another, each on what the previous one wrote (the compare-and-set a counter needs
    /// when attackers send in parallel). Keys are locked in sorted order, so two callers with
    /// overlapping keys cannot deadlock.
    pub async fn update_throttles<T>(
        &self,
        keys: &[String],
        now: i64,
        decide: impl FnOnce(&[Option<ThrottleRow>]) -> (Vec<ThrottleWrite>, T),
    ) -> Result<T> {
        let mut tx = self.begin_write().await?;
        let mut order: Vec<&String> = keys.iter().collect();
        order.sort();
        order.dedup();
        for key in &order {
            // Takes the row lock on PostgreSQL (creating the row if need be); SQLite's
            // `BEGIN IMMEDIATE` already holds the database's write lock.
            sqlx::query(
                "INSERT INTO throttles (key, failures, window_start, locked_until) \
                 VALUES ($1, 0, $2, NULL) \
                 ON CONFLICT (key) DO UPDATE SET failures = throttles.failures",
            )
            .bind(*key)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        let mut rows = Vec::with_capacity(keys.len());
        for key in keys {
            let row: Option<ThrottleRow> = sqlx::query_as(
                "SELECT failures, window_start, locked_until, last_failure_ms FROM throttles WHERE key = $1",
            )
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
            // A row created just now by the lock above is no history.
            rows.push(row.filter(|r| r.failures > 0 || r.locked_until.is_some()));
        }
        let (writes, result) = decide(&rows);
        for (key, write) in keys.iter().zip(writes) {
            match write {
                ThrottleWrite::Keep => {}
                ThrottleWrite::Put(row) => {
                    sqlx::query(
                        "UPDATE throttles SET failures = $2, window_start = $3, locked_until = $4, \
                         last_failure_ms = $5 WHERE key = $1",
                    )
                    .bind(key)
                    .bind(row.failures)
                    .bind(row.window_start)
                    .bind(row.locked_until)
                    .bind(row.last_failure_ms)
                    .execute(&mut *tx)
                    .await?;
                }
                ThrottleWrite::Delete => {
                    sqlx::query("DELETE FROM throttles WHERE key = $1")
                        .bind(key)
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(result)
    }
}
