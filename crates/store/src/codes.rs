//! Authorization codes and the grants they start.
//!
//! A grant is the family of everything issued from one authorization: its code, its refresh
//! tokens, and (through the `gid` claim) its access tokens. Codes stay after use, so that a
//! replayed code still finds its grant and the whole family can be revoked.

use sqlx::FromRow;

use crate::tokens::{NewRefreshToken, insert_refresh_in};
use crate::{Db, Result};

/// Everything written when the user approves an authorization request.
#[derive(Debug, Clone)]
pub struct NewAuthorization {
    pub grant_id: String,
    pub client_id: String,
    pub user_id: String,
    pub scope: String,
    pub resource: String,
    pub code_hash: String,
    pub redirect_uri: String,
    pub redirect_uri_explicit: bool,
    pub code_challenge: String,
    pub now: i64,
    pub code_expires_at: i64,
}

#[derive(Debug, Clone, FromRow)]
pub struct CodeRow {
    pub grant_id: String,
    pub client_id: String,
    pub user_id: Option<String>,
    pub redirect_uri: String,
    pub redirect_uri_explicit: i64,
    pub code_challenge: String,
    pub scope: String,
    pub resource: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub consumed_at: Option<i64>,
    /// When the grant was revoked or its user disabled: either way nothing more may be
    /// issued from it (this also closes the race with a concurrent `disable_user`).
    pub grant_revoked_at: Option<i64>,
}

impl Db {
    /// Create the grant and its code, atomically.
    pub async fn insert_authorization(&self, a: &NewAuthorization) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO grants (id, client_id, user_id, scope, resource, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&a.grant_id)
        .bind(&a.client_id)
        .bind(&a.user_id)
        .bind(&a.scope)
        .bind(&a.resource)
        .bind(a.now)
        .bind(a.code_expires_at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO authorization_codes (code_hash, grant_id, client_id, redirect_uri, \
             redirect_uri_explicit, code_challenge, scope, resource, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&a.code_hash)
        .bind(&a.grant_id)
        .bind(&a.client_id)
        .bind(&a.redirect_uri)
        .bind(i64::from(a.redirect_uri_explicit))
        .bind(&a.code_challenge)
        .bind(&a.scope)
        .bind(&a.resource)
        .bind(a.now)
        .bind(a.code_expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Look a code up by hash without consuming it.
    pub async fn find_code(&self, code_hash: &str) -> Result<Option<CodeRow>> {
        Ok(sqlx::query_as(
            "SELECT c.grant_id, c.client_id, g.user_id, c.redirect_uri, c.redirect_uri_explicit, \
             c.code_challenge, c.scope, c.resource, c.created_at, c.expires_at, c.consumed_at, \
             COALESCE(g.revoked_at, u.disabled_at) AS grant_revoked_at \
             FROM authorization_codes c JOIN grants g ON g.id = c.grant_id LEFT JOIN users u ON u.id = g.user_id WHERE c.code_hash = $1",
        )
        .bind(code_hash)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Consume the code and store what is issued for it, in one transaction. The consume is a
    /// compare-and-set: of two concurrent redemptions exactly one returns `true`; the other
    /// writes nothing and must be treated as a replay.
    pub async fn redeem_code(
        &self,
        code_hash: &str,
        now: i64,
        refresh: Option<&NewRefreshToken>,
        grant_expires_at: i64,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let consumed = sqlx::query(
            "UPDATE authorization_codes SET consumed_at = $2 WHERE code_hash = $1 AND consumed_at IS NULL",
        )
        .bind(code_hash)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if consumed == 0 {
            return Ok(false);
        }
        let (grant_id,): (String,) =
            sqlx::query_as("SELECT grant_id FROM authorization_codes WHERE code_hash = $1")
                .bind(code_hash)
                .fetch_one(&mut *tx)
                .await?;
        if let Some(r) = refresh {
            insert_refresh_in(&mut tx, r).await?;
        }
        sqlx::query("UPDATE grants SET expires_at = $2 WHERE id = $1 AND expires_at < $2")
            .bind(&grant_id)
            .bind(grant_expires_at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }
}
