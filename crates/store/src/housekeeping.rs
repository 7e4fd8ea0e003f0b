//! Deleting what has expired. Run on a schedule by the server; idempotent and safe to run on
//! several instances at once.

use crate::{Db, Result};

#[derive(Debug, Clone, Copy)]
pub struct CleanupPolicy {
    /// Keep used and expired codes this long, so that a late replay is still recognised.
    pub code_retention: i64,
    /// Keep revoked grants and tokens this long (for the account page and audits).
    pub revoked_retention: i64,
    /// Dynamic registrations and metadata documents unused this long, with no grants left,
    /// are deleted.
    pub stale_client_after: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanupReport {
    pub codes: u64,
    pub refresh_tokens: u64,
    pub grants: u64,
    pub sessions: u64,
    pub devices: u64,
    pub revocations: u64,
    pub throttles: u64,
    pub clients: u64,
    pub keys: u64,
}

impl CleanupReport {
    pub fn total(&self) -> u64 {
        self.codes
            + self.refresh_tokens
            + self.grants
            + self.sessions
            + self.devices
            + self.revocations
            + self.throttles
            + self.clients
            + self.keys
    }
}

impl Db {
    pub async fn delete_expired(&self, now: i64, p: &CleanupPolicy) -> Result<CleanupReport> {
        let run = |sql: &'static str, a: i64, b: Option<i64>| {
            let pool = self.pool.clone();
            async move {
                let mut q = sqlx::query(sql).bind(a);
                if let Some(b) = b {
                    q = q.bind(b);
                }
                Ok::<u64, crate::StoreError>(q.execute(&pool).await?.rows_affected())
            }
        };
        let mut r = CleanupReport {
            codes: run(
                "DELETE FROM authorization_codes WHERE expires_at < $1",
                now - p.code_retention,
                None,
            )
            .await?,
            refresh_tokens: run(
                "DELETE FROM refresh_tokens WHERE expires_at < $1 OR revoked_at < $2",
                now,
                Some(now - p.revoked_retention),
            )
            .await?,
            ..Default::default()
        };
        // A grant outlives its code by `code_retention`, so a replay can still revoke it.
        r.grants = run(
            "DELETE FROM grants WHERE (expires_at < $1 OR revoked_at < $2) \
             AND NOT EXISTS (SELECT 1 FROM authorization_codes c WHERE c.grant_id = grants.id)",
            now,
            Some(now - p.revoked_retention),
        )
        .await?;
        r.sessions = run("DELETE FROM sessions WHERE expires_at < $1", now, None).await?;
        r.devices = run(
            "DELETE FROM trusted_devices WHERE expires_at < $1",
            now,
            None,
        )
        .await?;
        r.revocations = run("DELETE FROM revocations WHERE expires_at < $1", now, None).await?;
        r.throttles = run(
            "DELETE FROM throttles WHERE window_start < $1 AND (locked_until IS NULL OR locked_until < $2)",
            now - 86_400,
            Some(now),
        )
        .await?;
        r.clients = run(
            "DELETE FROM clients WHERE kind IN ('dynamic', 'metadata_document') \
             AND COALESCE(last_used_at, created_at) < $1 \
             AND NOT EXISTS (SELECT 1 FROM grants g WHERE g.client_id = clients.id)",
            now - p.stale_client_after,
            None,
        )
        .await?;
        r.keys = run("DELETE FROM signing_keys WHERE expires_at < $1", now, None).await?;
        Ok(r)
    }
}
