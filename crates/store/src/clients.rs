//! OAuth clients: dynamically registered, pre-registered, and cached metadata documents.

use sqlx::FromRow;

use crate::{Db, Result, conflict_aware};

#[derive(Debug, Clone, FromRow)]
pub struct ClientRow {
    pub id: String,
    /// `ClientKind::as_str`.
    pub kind: String,
    /// `ClientMetadata` as JSON.
    pub metadata: String,
    pub secret_hash: Option<String>,
    /// Hash of a public client's registration request, so that an identical registration
    /// returns the existing client instead of adding another.
    pub metadata_hash: Option<String>,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    /// For metadata documents: when the cached document must be fetched again.
    pub refresh_after: Option<i64>,
}

macro_rules! client_columns {
    () => {
        "id, kind, metadata, secret_hash, metadata_hash, created_at, last_used_at, refresh_after"
    };
}

impl Db {
    /// Insert a client. `StoreError::Conflict` when the id or the metadata hash exists.
    pub async fn insert_client(&self, c: &ClientRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO clients (id, kind, metadata, secret_hash, metadata_hash, created_at, last_used_at, refresh_after) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&c.id)
        .bind(&c.kind)
        .bind(&c.metadata)
        .bind(&c.secret_hash)
        .bind(&c.metadata_hash)
        .bind(c.created_at)
        .bind(c.last_used_at)
        .bind(c.refresh_after)
        .execute(&self.pool)
        .await
        .map_err(conflict_aware)?;
        Ok(())
    }

    /// Insert or refresh a metadata document client (its id is the document URL).
    pub async fn upsert_document_client(&self, c: &ClientRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO clients (id, kind, metadata, secret_hash, metadata_hash, created_at, last_used_at, refresh_after) \
             VALUES ($1, $2, $3, NULL, NULL, $4, NULL, $5) \
             ON CONFLICT (id) DO UPDATE SET metadata = excluded.metadata, refresh_after = excluded.refresh_after",
        )
        .bind(&c.id)
        .bind(&c.kind)
        .bind(&c.metadata)
        .bind(c.created_at)
        .bind(c.refresh_after)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn find_client(&self, id: &str) -> Result<Option<ClientRow>> {
        Ok(sqlx::query_as(concat!(
            "SELECT ",
            client_columns!(),
            " FROM clients WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn find_client_by_metadata_hash(&self, hash: &str) -> Result<Option<ClientRow>> {
        Ok(sqlx::query_as(concat!(
            "SELECT ",
            client_columns!(),
            " FROM clients WHERE metadata_hash = $1"
        ))
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn list_clients(&self) -> Result<Vec<ClientRow>> {
        Ok(sqlx::query_as(concat!(
            "SELECT ",
            client_columns!(),
            " FROM clients ORDER BY created_at, id"
        ))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Delete a client; its grants, codes, tokens and consents go with it (foreign keys),
    /// and its grants are published as revoked first so that live access tokens stop working.
    pub async fn delete_client(&self, id: &str, now: i64, revocation_ttl: i64) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let grants: Vec<(String,)> =
            sqlx::query_as("SELECT id FROM grants WHERE client_id = $1 AND revoked_at IS NULL")
                .bind(id)
                .fetch_all(&mut *tx)
                .await?;
        for (grant_id,) in grants {
            crate::tokens::revoke_grant_in(
                &mut tx,
                &grant_id,
                now,
                "client_removed",
                revocation_ttl,
            )
            .await?;
        }
        let n = sqlx::query("DELETE FROM clients WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(n > 0)
    }

    /// Record use, which keeps a dynamic registration from expiring. At most one write an
    /// hour per client: this runs on every token request.
    pub async fn touch_client(&self, id: &str, now: i64) -> Result<()> {
        sqlx::query(
            "UPDATE clients SET last_used_at = $2 WHERE id = $1 \
             AND (last_used_at IS NULL OR last_used_at < $2 - 3600)",
        )
        .bind(id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
