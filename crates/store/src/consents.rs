//! Remembered consent, and the user's view of the clients that hold access ("connected apps").

use sqlx::FromRow;

use crate::tokens::revoke_grant_in;
use crate::{Db, Result};

#[derive(Debug, Clone, FromRow)]
pub struct ConsentRow {
    pub scope: String,
    pub updated_at: i64,
}

/// A client the user has given access: a remembered consent, a live grant, or both.
#[derive(Debug, Clone, FromRow)]
pub struct ConnectedApp {
    pub client_id: String,
    pub kind: String,
    pub metadata: String,
    pub first_authorized_at: i64,
    pub last_authorized_at: i64,
    pub grants: i64,
}

impl Db {
    pub async fn find_consent(
        &self,
        user_id: &str,
        client_id: &str,
        resource: &str,
    ) -> Result<Option<ConsentRow>> {
        Ok(sqlx::query_as(
            "SELECT scope, updated_at FROM consents WHERE user_id = $1 AND client_id = $2 AND resource = $3",
        )
        .bind(user_id)
        .bind(client_id)
        .bind(resource)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Remember consent; `scope` should already be the union with what was granted before.
    pub async fn upsert_consent(
        &self,
        user_id: &str,
        client_id: &str,
        resource: &str,
        scope: &str,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO consents (user_id, client_id, resource, scope, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $5) \
             ON CONFLICT (user_id, client_id, resource) DO UPDATE SET scope = excluded.scope, updated_at = excluded.updated_at",
        )
        .bind(user_id)
        .bind(client_id)
        .bind(resource)
        .bind(scope)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every client that holds something of `user_id`'s that is still honoured: remembered
    /// consent (which lets it get a code without asking, even once its tokens have expired)
    /// and live grants (including one whose code is not redeemed yet). Revoking one with
    /// `revoke_client_access` removes both, so nothing honoured is left unlisted.
    pub async fn connected_apps(&self, user_id: &str, now: i64) -> Result<Vec<ConnectedApp>> {
        Ok(sqlx::query_as(
            "SELECT a.client_id, c.kind, c.metadata, MIN(a.first_at) AS first_authorized_at, \
             MAX(a.last_at) AS last_authorized_at, SUM(a.live) AS grants \
             FROM (SELECT client_id, created_at AS first_at, updated_at AS last_at, 0 AS live \
                   FROM consents WHERE user_id = $1 \
                   UNION ALL \
                   SELECT client_id, created_at, created_at, 1 FROM grants \
                   WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2) a \
             JOIN clients c ON c.id = a.client_id \
             GROUP BY a.client_id, c.kind, c.metadata ORDER BY MAX(a.last_at) DESC, a.client_id",
        )
        .bind(user_id)
        .bind(now)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Revoke every grant `user_id` gave `client_id` and forget the consent, atomically, so
    /// the next authorization asks again. Returns how many grants were revoked.
    pub async fn revoke_client_access(
        &self,
        user_id: &str,
        client_id: &str,
        now: i64,
        revocation_ttl: i64,
    ) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        let grants: Vec<(String,)> = sqlx::query_as(
            "SELECT id FROM grants WHERE user_id = $1 AND client_id = $2 AND revoked_at IS NULL",
        )
        .bind(user_id)
        .bind(client_id)
        .fetch_all(&mut *tx)
        .await?;
        for (grant_id,) in &grants {
            revoke_grant_in(&mut tx, grant_id, now, "revoked_by_user", revocation_ttl).await?;
        }
        sqlx::query("DELETE FROM consents WHERE user_id = $1 AND client_id = $2")
            .bind(user_id)
            .bind(client_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(grants.len() as u64)
    }
}
