//! Token signing keys. Every instance signs with the newest active key and publishes every key
//! whose tokens may still be alive.

use sqlx::FromRow;

use crate::{Db, Result};

#[derive(Clone, FromRow)]
pub struct SigningKeyRow {
    pub kid: String,
    pub alg: String,
    /// The private key as the server sealed it (opaque here; see the server's
    /// `keys::encryption`). Rows from before encryption at rest hold base64 PKCS#8 DER until
    /// the server seals them at start.
    pub private_key: String,
    pub public_jwk: String,
    pub created_at: i64,
    pub retired_at: Option<i64>,
    pub expires_at: Option<i64>,
}

impl std::fmt::Debug for SigningKeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyRow")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

/// A stored private key and the key id it belongs to.
#[derive(Clone, FromRow)]
pub struct StoredPrivateKey {
    pub kid: String,
    pub private_key: String,
}

impl std::fmt::Debug for StoredPrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredPrivateKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

async fn insert_key_with<'e>(
    executor: impl sqlx::Executor<'e, Database = sqlx::Any>,
    key: &SigningKeyRow,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO signing_keys (kid, alg, private_key, public_jwk, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&key.kid)
    .bind(&key.alg)
    .bind(&key.private_key)
    .bind(&key.public_jwk)
    .bind(key.created_at)
    .execute(executor)
    .await?;
    Ok(())
}

impl Db {
    /// Keys still published at `now`, newest first.
    pub async fn published_keys(&self, now: i64) -> Result<Vec<SigningKeyRow>> {
        Ok(sqlx::query_as(
            "SELECT kid, alg, private_key, public_jwk, created_at, retired_at, expires_at FROM signing_keys \
             WHERE expires_at IS NULL OR expires_at > $1 ORDER BY created_at DESC, kid DESC",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Make `key` the signing key: retire every other active key, keeping it published until
    /// `old_expires_at` so that tokens it signed still verify.
    pub async fn rotate_signing_key(
        &self,
        key: &SigningKeyRow,
        now: i64,
        old_expires_at: i64,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE signing_keys SET retired_at = $2, expires_at = $3 WHERE kid <> $1 AND retired_at IS NULL",
        )
        .bind(&key.kid)
        .bind(now)
        .bind(old_expires_at)
        .execute(&mut *tx)
        .await?;
        insert_key_with(&mut *tx, key).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Insert a first key unless an active one exists (several instances may start at once;
    /// if two race, both keys are valid and the newest signs).
    pub async fn ensure_signing_key(&self, key: &SigningKeyRow) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let (active,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM signing_keys WHERE retired_at IS NULL")
                .fetch_one(&mut *tx)
                .await?;
        if active == 0 {
            insert_key_with(&mut *tx, key).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Every stored private key, retired and expired ones included, oldest first.
    pub async fn signing_key_secrets(&self) -> Result<Vec<StoredPrivateKey>> {
        Ok(
            sqlx::query_as("SELECT kid, private_key FROM signing_keys ORDER BY created_at, kid")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Replace the stored private key of `kid` if it still is `current` (compare-and-set, so
    /// that instances sealing or rewrapping at the same time do not overwrite each other).
    /// Returns whether it was replaced.
    pub async fn replace_signing_key_secret(
        &self,
        kid: &str,
        current: &str,
        replacement: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE signing_keys SET private_key = $3 WHERE kid = $1 AND private_key = $2",
        )
        .bind(kid)
        .bind(current)
        .bind(replacement)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
