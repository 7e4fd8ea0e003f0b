//! Trusted devices: browsers that signed in to an account before, known by the hash of the
//! device cookie they were given.

use crate::{Db, Result};

impl Db {
    /// Remember a device for `user_id`, keeping only that user's `keep` newest devices (each
    /// sign-in from a new browser adds one, so the table stays bounded per account).
    pub async fn insert_trusted_device(
        &self,
        id_hash: &str,
        user_id: &str,
        now: i64,
        expires_at: i64,
        keep: i64,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO trusted_devices (id_hash, user_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(id_hash)
        .bind(user_id)
        .bind(now)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM trusted_devices WHERE user_id = $1 AND id_hash NOT IN \
             (SELECT id_hash FROM trusted_devices WHERE user_id = $1 \
              ORDER BY created_at DESC, id_hash LIMIT $2)",
        )
        .bind(user_id)
        .bind(keep)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The user a live device cookie (by hash) belongs to.
    pub async fn trusted_device_user(&self, id_hash: &str, now: i64) -> Result<Option<String>> {
        let row: Option<(String,)> = sqlx::query_as(
            "SELECT user_id FROM trusted_devices WHERE id_hash = $1 AND expires_at > $2",
        )
        .bind(id_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(u,)| u))
    }
}
