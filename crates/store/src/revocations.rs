//! Published revocations: how a revoked access token stops working on every instance.
//!
//! Access tokens are JWTs checked without a database round trip, so revoking one (or its
//! grant) writes a row here; each instance polls for rows newer than its last look, with an
//! overlap so that a row committed late is still seen, and keeps them in memory until the
//! tokens they name have expired.

use sqlx::{Any, FromRow, Transaction};

use crate::{Db, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationKind {
    /// Every token of a grant (the `gid` claim).
    Grant,
    /// One access token (its `jti`).
    Token,
}

impl RevocationKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Grant => "grant",
            Self::Token => "token",
        }
    }
}

#[derive(Debug, Clone, FromRow)]
pub struct RevocationRow {
    pub kind: String,
    pub subject: String,
    pub created_at: i64,
    pub expires_at: i64,
}

impl RevocationRow {
    pub fn kind(&self) -> Option<RevocationKind> {
        match self.kind.as_str() {
            "grant" => Some(RevocationKind::Grant),
            "token" => Some(RevocationKind::Token),
            _ => None,
        }
    }
}

pub(crate) async fn insert_revocation_in(
    tx: &mut Transaction<'static, Any>,
    kind: RevocationKind,
    subject: &str,
    now: i64,
    expires_at: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO revocations (id, kind, subject, created_at, expires_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(format!("{}:{subject}", kind.as_str()))
    .bind(kind.as_str())
    .bind(subject)
    .bind(now)
    .bind(expires_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Db {
    /// Publish the revocation of one access token until its expiry.
    pub async fn revoke_access_token(&self, jti: &str, now: i64, expires_at: i64) -> Result<()> {
        let mut tx = self.begin_write().await?;
        insert_revocation_in(&mut tx, RevocationKind::Token, jti, now, expires_at).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Revocations created at or after `since` that still matter at `now`.
    pub async fn revocations_since(&self, since: i64, now: i64) -> Result<Vec<RevocationRow>> {
        Ok(sqlx::query_as(
            "SELECT kind, subject, created_at, expires_at FROM revocations \
             WHERE created_at >= $1 AND expires_at > $2",
        )
        .bind(since)
        .bind(now)
        .fetch_all(&self.pool)
        .await?)
    }
}
