//! The revocation list every instance keeps in memory, so that access tokens are checked
//! without a database round trip and a revocation still takes effect within a second.
//!
//! Revocations are published in the database (`revocations` table); a poller reads rows
//! created since its last look (minus an overlap, so a transaction that committed late is not
//! missed) every `POLL_INTERVAL`. A revocation made on this instance is applied immediately.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use mcp_oauth_store::{Db, RevocationKind, RevocationRow};

pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Re-read this many seconds before the last poll: longer than any write transaction.
const OVERLAP_SECONDS: i64 = 5;

#[derive(Default)]
struct Lists {
    grants: HashMap<String, i64>,
    tokens: HashMap<String, i64>,
    last_poll: Option<i64>,
}

#[derive(Default)]
pub struct RevocationList {
    lists: RwLock<Lists>,
}

impl RevocationList {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Lists> {
        self.lists.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_revoked(&self, jti: &str, grant_id: Option<&str>) -> bool {
        let l = self.lists.read().unwrap_or_else(|p| p.into_inner());
        l.tokens.contains_key(jti) || grant_id.is_some_and(|g| l.grants.contains_key(g))
    }

    pub fn revoke_token(&self, jti: &str, expires_at: i64) {
        self.write().tokens.insert(jti.to_owned(), expires_at);
    }

    pub fn revoke_grant(&self, grant_id: &str, expires_at: i64) {
        self.write().grants.insert(grant_id.to_owned(), expires_at);
    }

    fn apply(&self, rows: Vec<RevocationRow>, polled_at: i64) {
        let mut l = self.write();
        for row in rows {
            match row.kind() {
                Some(RevocationKind::Grant) => l.grants.insert(row.subject, row.expires_at),
                Some(RevocationKind::Token) => l.tokens.insert(row.subject, row.expires_at),
                None => None,
            };
        }
        l.grants.retain(|_, exp| *exp > polled_at);
        l.tokens.retain(|_, exp| *exp > polled_at);
        l.last_poll = Some(polled_at);
    }

    /// Read what was published since the last poll (everything still live, the first time).
    pub async fn poll(&self, db: &Db, now: i64) -> mcp_oauth_store::Result<()> {
        let since = self
            .lists
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .last_poll
            .map_or(0, |t| t - OVERLAP_SECONDS);
        let rows = db.revocations_since(since, now).await?;
        self.apply(rows, now);
        Ok(())
    }
}
