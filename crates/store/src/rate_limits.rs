//! Rate-limit buckets shared by every instance: one GCRA step per request, decided and
//! written in one statement, so that parallel requests on several instances are counted
//! one after another (see `mcp_oauth_core::security::rate_limit::Gcra`).

use crate::{Db, Result};

impl Db {
    /// Take one request from `bucket` at `now_us` (GCRA: each request moves the bucket's
    /// theoretical arrival time `interval_us` on, from now at the earliest; a request that
    /// would move it more than `window_us` past now is refused). `Ok(tat)`: allowed, the
    /// bucket's new time; `Err(tat)`: refused, its time as it stands.
    pub async fn take_rate_limit(
        &self,
        bucket: &str,
        now_us: i64,
        interval_us: i64,
        window_us: i64,
    ) -> Result<std::result::Result<i64, i64>> {
        // The conditional upsert is the compare-and-set: the row lock (PostgreSQL) or the
        // write lock (SQLite) orders concurrent takers, each deciding on the last one's time.
        let taken: Option<i64> = sqlx::query_scalar(
            "INSERT INTO rate_limit_buckets (bucket, tat_us) VALUES ($1, $2 + $3) \
             ON CONFLICT (bucket) DO UPDATE SET tat_us = \
               (CASE WHEN rate_limit_buckets.tat_us > $2 THEN rate_limit_buckets.tat_us ELSE $2 END) + $3 \
             WHERE (CASE WHEN rate_limit_buckets.tat_us > $2 THEN rate_limit_buckets.tat_us ELSE $2 END) \
               + $3 - $2 <= $4 \
             RETURNING tat_us",
        )
        .bind(bucket)
        .bind(now_us)
        .bind(interval_us)
        .bind(window_us)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(tat) = taken {
            return Ok(Ok(tat));
        }
        let tat: Option<i64> =
            sqlx::query_scalar("SELECT tat_us FROM rate_limit_buckets WHERE bucket = $1")
                .bind(bucket)
                .fetch_optional(&self.pool)
                .await?;
        // Gone between the two statements (housekeeping found it full): as good as full.
        Ok(Err(tat.unwrap_or(now_us)))
    }

    /// Forget buckets that are full again at `now_us` (their time has passed).
    pub async fn delete_full_rate_limits(&self, now_us: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM rate_limit_buckets WHERE tat_us < $1")
            .bind(now_us)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
