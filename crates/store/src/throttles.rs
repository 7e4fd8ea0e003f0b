//! Login throttle state, shared by every instance.

use sqlx::FromRow;

use crate::{Db, Result};

#[derive(Debug, Clone, Copy, FromRow)]
pub struct ThrottleRow {
    pub failures: i64,
    pub window_start: i64,
    pub locked_until: Option<i64>,
}

impl Db {
    pub async fn get_throttle(&self, key: &str) -> Result<Option<ThrottleRow>> {
        Ok(sqlx::query_as(
            "SELECT failures, window_start, locked_until FROM throttles WHERE key = $1",
        )
        .bind(key)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn put_throttle(&self, key: &str, row: ThrottleRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO throttles (key, failures, window_start, locked_until) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (key) DO UPDATE SET failures = excluded.failures, \
             window_start = excluded.window_start, locked_until = excluded.locked_until",
        )
        .bind(key)
        .bind(row.failures)
        .bind(row.window_start)
        .bind(row.locked_until)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn clear_throttle(&self, key: &str) -> Result<()> {
        sqlx::query("DELETE FROM throttles WHERE key = $1")
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
