//! Refresh tokens (rotated, in families) and grant revocation.

use sqlx::{Any, AssertSqlSafe, FromRow, Transaction};

use crate::revocations::{RevocationKind, insert_revocation_in};
use crate::{Db, Result};

#[derive(Debug, Clone)]
pub struct NewRefreshToken {
    pub id: String,
    pub token_hash: String,
    pub grant_id: String,
    pub parent_id: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
}

/// A refresh token with its grant's state.
#[derive(Debug, Clone, FromRow)]
pub struct RefreshRow {
    pub id: String,
    pub grant_id: String,
    pub parent_id: Option<String>,
    pub expires_at: i64,
    pub used_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub client_id: String,
    pub user_id: Option<String>,
    pub scope: String,
    pub resource: String,
    /// When the grant was revoked or its user disabled: either way nothing more may be
    /// issued from it (this also closes the race with a concurrent `disable_user`).
    pub grant_revoked_at: Option<i64>,
    /// How many children of this token have been used themselves.
    pub used_children: i64,
    /// Once rotated: its successor, sealed for the holder of this token (cleared once the
    /// successor is used).
    pub sealed_successor: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotateOutcome {
    Rotated,
    /// Another request marked the token used first; nothing was written.
    LostRace,
}

pub(crate) async fn insert_refresh_in(
    tx: &mut Transaction<'static, Any>,
    r: &NewRefreshToken,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO refresh_tokens (id, token_hash, grant_id, parent_id, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&r.id)
    .bind(&r.token_hash)
    .bind(&r.grant_id)
    .bind(&r.parent_id)
    .bind(r.created_at)
    .bind(r.expires_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Serialise rotations within one grant: on PostgreSQL this takes the grant's row lock until
/// commit, so the rotations of a token and of its successor (and a revocation of the family)
/// apply one after the other (SQLite's `BEGIN IMMEDIATE` already serialises all writers).
async fn lock_grant_in(tx: &mut Transaction<'static, Any>, grant_id: &str) -> Result<()> {
    sqlx::query("UPDATE grants SET expires_at = expires_at WHERE id = $1")
        .bind(grant_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn extend_grant_in(
    tx: &mut Transaction<'static, Any>,
    grant_id: &str,
    expires_at: i64,
) -> Result<()> {
    sqlx::query("UPDATE grants SET expires_at = $2 WHERE id = $1 AND expires_at < $2")
        .bind(grant_id)
        .bind(expires_at)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Revoke a grant inside `tx`: the grant, all its refresh tokens, and (through a published
/// revocation that every instance polls) all its access tokens, which stay revoked for
/// `revocation_ttl` seconds, the longest an access token can live.
pub(crate) async fn revoke_grant_in(
    tx: &mut Transaction<'static, Any>,
    grant_id: &str,
    now: i64,
    reason: &str,
    revocation_ttl: i64,
) -> Result<()> {
    sqlx::query("UPDATE grants SET revoked_at = $2, revoke_reason = $3 WHERE id = $1 AND revoked_at IS NULL")
        .bind(grant_id)
        .bind(now)
        .bind(reason)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = $2 WHERE grant_id = $1 AND revoked_at IS NULL",
    )
    .bind(grant_id)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    insert_revocation_in(
        tx,
        RevocationKind::Grant,
        grant_id,
        now,
        now + revocation_ttl,
    )
    .await
}

/// Whose grants an operator revokes at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantOwner<'a> {
    User(&'a str),
    Client(&'a str),
}

impl GrantOwner<'_> {
    fn column(self) -> &'static str {
        match self {
            GrantOwner::User(_) => "user_id",
            GrantOwner::Client(_) => "client_id",
        }
    }

    fn id(self) -> String {
        match self {
            GrantOwner::User(id) | GrantOwner::Client(id) => id.to_owned(),
        }
    }
}

impl Db {
    pub async fn find_refresh_token(&self, token_hash: &str) -> Result<Option<RefreshRow>> {
        Ok(sqlx::query_as(
            "SELECT r.id, r.grant_id, r.parent_id, r.expires_at, r.used_at, r.revoked_at, g.client_id, g.user_id, \
             g.scope, g.resource, COALESCE(g.revoked_at, u.disabled_at) AS grant_revoked_at, \
             (SELECT COUNT(*) FROM refresh_tokens c WHERE c.parent_id = r.id AND c.used_at IS NOT NULL) AS used_children, \
             r.sealed_successor \
             FROM refresh_tokens r JOIN grants g ON g.id = r.grant_id LEFT JOIN users u ON u.id = g.user_id WHERE r.token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Mark `id` used, keep its successor `child` sealed beside it (`sealed_successor`), and
    /// insert the child, atomically. The mark is a compare-and-set on `used_at IS NULL`, so of
    /// two concurrent rotations exactly one wins; the loser writes nothing and gets `LostRace`.
    /// Using `id` also drops the seal on `id`'s own parent: once a successor is used, the
    /// token before it can no longer be retried, so its seal has no use left.
    pub async fn rotate_refresh_token(
        &self,
        id: &str,
        now: i64,
        child: &NewRefreshToken,
        sealed_successor: &str,
    ) -> Result<RotateOutcome> {
        let mut tx = self.begin_write().await?;
        lock_grant_in(&mut tx, &child.grant_id).await?;
        let marked = sqlx::query(
            "UPDATE refresh_tokens SET used_at = $2, sealed_successor = $3 \
             WHERE id = $1 AND used_at IS NULL AND revoked_at IS NULL",
        )
        .bind(id)
        .bind(now)
        .bind(sealed_successor)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if marked == 0 {
            return Ok(RotateOutcome::LostRace);
        }
        sqlx::query(
            "UPDATE refresh_tokens SET sealed_successor = NULL \
             WHERE id = (SELECT parent_id FROM refresh_tokens WHERE id = $1)",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        insert_refresh_in(&mut tx, child).await?;
        extend_grant_in(&mut tx, &child.grant_id, child.expires_at).await?;
        tx.commit().await?;
        Ok(RotateOutcome::Rotated)
    }

    /// Revoke a whole grant (reuse detected, code replayed, user or client revoked it).
    pub async fn revoke_grant(
        &self,
        grant_id: &str,
        now: i64,
        reason: &str,
        revocation_ttl: i64,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        revoke_grant_in(&mut tx, grant_id, now, reason, revocation_ttl).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Grants of `owner` not revoked and not expired at `now`.
    pub async fn live_grants_of(&self, owner: GrantOwner<'_>, now: i64) -> Result<i64> {
        let (n,): (i64,) = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM grants WHERE {} = $1 \
             AND revoked_at IS NULL AND expires_at > $2",
            owner.column()
        )))
        .bind(owner.id())
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(n)
    }

    /// Revoke every grant of `owner` (an operator's response to an incident), publishing each
    /// so that its access tokens stop working on every instance; in one transaction. Returns
    /// how many were revoked.
    pub async fn revoke_grants_of(
        &self,
        owner: GrantOwner<'_>,
        now: i64,
        reason: &str,
        revocation_ttl: i64,
    ) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        let grants: Vec<(String,)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT id FROM grants WHERE {} = $1 AND revoked_at IS NULL",
            owner.column()
        )))
        .bind(owner.id())
        .fetch_all(&mut *tx)
        .await?;
        for (grant_id,) in &grants {
            revoke_grant_in(&mut tx, grant_id, now, reason, revocation_ttl).await?;
        }
        tx.commit().await?;
        Ok(grants.len() as u64)
    }

    /// Is the grant revoked (or gone)? Used by introspection.
    pub async fn grant_is_active(&self, grant_id: &str, now: i64) -> Result<bool> {
        let row: Option<(Option<i64>, i64)> =
            sqlx::query_as("SELECT revoked_at, expires_at FROM grants WHERE id = $1")
                .bind(grant_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(matches!(row, Some((None, exp)) if exp > now))
    }

    /// Create a grant with no code and no refresh token (client credentials), so that its
    /// access tokens can be revoked as a family like any other.
    pub async fn insert_bare_grant(
        &self,
        grant_id: &str,
        client_id: &str,
        scope: &str,
        resource: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO grants (id, client_id, user_id, scope, resource, created_at, expires_at) \
             VALUES ($1, $2, NULL, $3, $4, $5, $6)",
        )
        .bind(grant_id)
        .bind(client_id)
        .bind(scope)
        .bind(resource)
        .bind(now)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
