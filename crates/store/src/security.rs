//! Security events (migration `0005`): written in batches by the analytics writer, listed
//! with filters for the security page and the CLI, followed live, acknowledged and resolved by
//! operators, and deleted after their retention.

// Every dynamic statement here is built from constant SQL and `$N` or `?` placeholders only
// (`AssertSqlSafe`): values are always bound.
use sqlx::{Any, AssertSqlSafe, Row as _};

use mcp_oauth_core::analytics::Millis;
use mcp_oauth_core::security::events::{Level, SecurityEvent};

use crate::analytics::placeholders;
use crate::{Db, Result};

/// Rows per multi-row `INSERT` (as the analytics events').
const CHUNK: usize = 64;

const COLUMNS: &str = "id, at_ms, kind, level, score, ip, user_id, client_id, request_id, \
                       evidence, acknowledged_at, acknowledged_by, resolved_at, resolved_by, note";

/// One stored security event, as the API, the CLI and the page show it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SecurityEventRow {
    pub id: i64,
    pub at_ms: Millis,
    pub kind: String,
    pub level: String,
    pub score: i64,
    pub ip: Option<String>,
    pub user_id: Option<String>,
    pub client_id: Option<String>,
    pub request_id: Option<String>,
    pub evidence: serde_json::Value,
    pub acknowledged_at: Option<Millis>,
    pub acknowledged_by: Option<String>,
    pub resolved_at: Option<Millis>,
    pub resolved_by: Option<String>,
    pub note: Option<String>,
}

/// Which events to list: `[from, to)`, and each field that is set must match.
#[derive(Debug, Clone, Default)]
pub struct SecurityFilter {
    pub from: Millis,
    pub to: Millis,
    pub kind: Option<String>,
    /// This level and those above it.
    pub min_level: Option<Level>,
    pub ip: Option<String>,
    pub user_id: Option<String>,
    pub client_id: Option<String>,
    /// Only events with an id above this one (following a feed).
    pub after_id: Option<i64>,
}

fn event_row(r: &sqlx::any::AnyRow) -> Result<SecurityEventRow> {
    let evidence: String = r.try_get(9)?;
    Ok(SecurityEventRow {
        id: r.try_get(0)?,
        at_ms: r.try_get(1)?,
        kind: r.try_get(2)?,
        level: r.try_get(3)?,
        score: r.try_get(4)?,
        ip: r.try_get(5)?,
        user_id: r.try_get(6)?,
        client_id: r.try_get(7)?,
        request_id: r.try_get(8)?,
        evidence: serde_json::from_str(&evidence).unwrap_or(serde_json::Value::Null),
        acknowledged_at: r.try_get(10)?,
        acknowledged_by: r.try_get(11)?,
        resolved_at: r.try_get(12)?,
        resolved_by: r.try_get(13)?,
        note: r.try_get(14)?,
    })
}

/// The columns the security page ranks offenders by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityTop {
    Ip,
    User,
    Client,
    /// Events per level (the cards).
    Level,
}

impl SecurityTop {
    fn column(self) -> &'static str {
        match self {
            SecurityTop::Ip => "ip",
            SecurityTop::User => "user_id",
            SecurityTop::Client => "client_id",
            SecurityTop::Level => "level",
        }
    }
}

/// `select` with the `WHERE` clause of `f` (`after_id` aside): `$1` and `$2` are the range,
/// then the returned values, in order.
fn filtered(select: &str, f: &SecurityFilter) -> (String, Vec<String>) {
    let mut sql = format!("{select} WHERE at_ms >= $1 AND at_ms < $2");
    let mut binds: Vec<String> = Vec::new();
    for (column, value) in [
        ("kind", &f.kind),
        ("ip", &f.ip),
        ("user_id", &f.user_id),
        ("client_id", &f.client_id),
    ] {
        if let Some(v) = value {
            binds.push(v.clone());
            sql.push_str(&format!(" AND {column} = ${}", binds.len() + 2));
        }
    }
    if let Some(min) = f.min_level {
        let levels: Vec<String> = Level::ALL
            .into_iter()
            .filter(|l| *l >= min)
            .map(|l| {
                binds.push(l.as_str().to_owned());
                format!("${}", binds.len() + 2)
            })
            .collect();
        sql.push_str(&format!(" AND level IN ({})", levels.join(", ")));
    }
    (sql, binds)
}

/// What an operator did to an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Triage {
    Acknowledge,
    Resolve,
}

impl Db {
    /// Store `events` in one transaction.
    pub async fn record_security_events(&self, events: &[SecurityEvent]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        for chunk in events.chunks(CHUNK) {
            let sql = format!(
                "INSERT INTO security_events (at_ms, kind, level, score, ip, user_id, \
                 client_id, request_id, evidence) VALUES {}",
                placeholders(self.backend, chunk.len(), 9)
            );
            let mut q = sqlx::query::<Any>(AssertSqlSafe(sql)).persistent(chunk.len() == CHUNK);
            for e in chunk {
                q = q
                    .bind(e.at)
                    .bind(e.kind.as_str())
                    .bind(e.level.as_str())
                    .bind(i64::from(e.score))
                    .bind(e.actor.ip.map(|ip| ip.to_string()))
                    .bind(e.actor.user_id.clone())
                    .bind(e.actor.client_id.clone())
                    .bind(e.request_id.clone())
                    .bind(serde_json::Value::Object(e.evidence.clone()).to_string());
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Events matching `f`, at most `limit`: the newest first, or with `after_id` set, the
    /// oldest after it first (a feed reads on from where it was).
    pub async fn security_events(
        &self,
        f: &SecurityFilter,
        limit: i64,
    ) -> Result<Vec<SecurityEventRow>> {
        let (mut sql, binds) = filtered(&format!("SELECT {COLUMNS} FROM security_events"), f);
        let n = binds.len();
        match f.after_id {
            Some(_) => sql.push_str(&format!(
                " AND id > ${} ORDER BY id LIMIT ${}",
                n + 3,
                n + 4
            )),
            None => sql.push_str(&format!(" ORDER BY at_ms DESC, id DESC LIMIT ${}", n + 3)),
        }
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(f.from).bind(f.to);
        for b in binds {
            q = q.bind(b);
        }
        if let Some(after) = f.after_id {
            q = q.bind(after);
        }
        let rows = q.bind(limit).fetch_all(&self.reader).await?;
        rows.iter().map(event_row).collect()
    }

    /// Events matching `f` (`after_id` aside) per type and per step of `step_ms` from
    /// `f.from`: `(type, step start, count)`.
    pub async fn security_event_counts(
        &self,
        f: &SecurityFilter,
        step_ms: Millis,
    ) -> Result<Vec<(String, Millis, i64)>> {
        let step_ms = step_ms.max(1);
        let (mut sql, binds) = filtered(
            &format!(
                "SELECT kind, $1 + ((at_ms - $1) / {step_ms}) * {step_ms} AS step, \
                 CAST(COUNT(*) AS BIGINT) FROM security_events"
            ),
            &SecurityFilter {
                after_id: None,
                ..f.clone()
            },
        );
        sql.push_str(" GROUP BY kind, step ORDER BY step, kind");
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(f.from).bind(f.to);
        for b in binds {
            q = q.bind(b);
        }
        let rows = q.fetch_all(&self.reader).await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect()
    }

    /// The `limit` values of `by` with the most events matching `f`: `(value, events, the
    /// highest score)`, the most first.
    pub async fn security_top(
        &self,
        f: &SecurityFilter,
        by: SecurityTop,
        limit: i64,
    ) -> Result<Vec<(String, i64, i64)>> {
        let column = by.column();
        let (mut sql, binds) = filtered(
            &format!(
                "SELECT {column}, CAST(COUNT(*) AS BIGINT), CAST(MAX(score) AS BIGINT) \
                 FROM security_events"
            ),
            &SecurityFilter {
                after_id: None,
                ..f.clone()
            },
        );
        sql.push_str(&format!(
            " AND {column} IS NOT NULL GROUP BY {column} ORDER BY 2 DESC, 3 DESC, 1 LIMIT ${}",
            binds.len() + 3
        ));
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(f.from).bind(f.to);
        for b in binds {
            q = q.bind(b);
        }
        let rows = q.bind(limit).fetch_all(&self.reader).await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect()
    }

    /// One event by id.
    pub async fn security_event(&self, id: i64) -> Result<Option<SecurityEventRow>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM security_events WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(event_row).transpose()
    }

    /// Acknowledge or resolve event `id` as `by` at `at`, with an optional note (it replaces
    /// an earlier one). Resolving an event nobody acknowledged acknowledges it too. Returns
    /// whether the event exists.
    pub async fn triage_security_event(
        &self,
        id: i64,
        action: Triage,
        by: &str,
        at: Millis,
        note: Option<&str>,
    ) -> Result<bool> {
        let sql = match action {
            Triage::Acknowledge => {
                "UPDATE security_events SET acknowledged_at = $1, acknowledged_by = $2, \
                 note = COALESCE($3, note) WHERE id = $4"
            }
            Triage::Resolve => {
                "UPDATE security_events SET resolved_at = $1, resolved_by = $2, \
                 note = COALESCE($3, note), \
                 acknowledged_at = COALESCE(acknowledged_at, $1), \
                 acknowledged_by = COALESCE(acknowledged_by, $2) WHERE id = $4"
            }
        };
        let done = sqlx::query(sql)
            .bind(at)
            .bind(by)
            .bind(note)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Delete events from before `before`; returns how many.
    pub async fn delete_old_security_events(&self, before: Millis) -> Result<u64> {
        let done = sqlx::query("DELETE FROM security_events WHERE at_ms < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}

/// A blocked address.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IpBlockRow {
    pub ip: String,
    pub reason: String,
    pub created_at: Millis,
    /// `None`: until unblocked.
    pub expires_at: Option<Millis>,
    pub created_by: String,
    pub strikes: i64,
}

impl Db {
    /// Block `ip` from `at` until `expires_at` (`None`: until unblocked), replacing any block
    /// it has; `strike` counts it towards the next automatic block's length.
    pub async fn block_ip(
        &self,
        ip: &str,
        reason: &str,
        at: Millis,
        expires_at: Option<Millis>,
        by: &str,
        strike: bool,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO ip_blocks (ip, reason, created_at, expires_at, created_by, strikes) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (ip) DO UPDATE SET \
             reason = excluded.reason, created_at = excluded.created_at, \
             expires_at = excluded.expires_at, created_by = excluded.created_by, \
             strikes = ip_blocks.strikes + excluded.strikes",
        )
        .bind(ip)
        .bind(reason)
        .bind(at)
        .bind(expires_at)
        .bind(by)
        .bind(i64::from(strike))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Automatic blocks of `ip` still remembered (see `delete_stale_ip_blocks`).
    pub async fn ip_block_strikes(&self, ip: &str) -> Result<i64> {
        let n: Option<i64> = sqlx::query_scalar("SELECT strikes FROM ip_blocks WHERE ip = $1")
            .bind(ip)
            .fetch_optional(&self.pool)
            .await?;
        Ok(n.unwrap_or(0))
    }

    /// End `ip`'s block (it was in force at `at`); whether it was blocked. The block is
    /// made to end at time 0, so that it has ended for every instance whatever its clock
    /// says; its strikes are forgotten a day after it began (`delete_stale_ip_blocks`).
    pub async fn unblock_ip(&self, ip: &str, at: Millis) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE ip_blocks SET expires_at = 0 WHERE ip = $1 \
             AND (expires_at IS NULL OR expires_at > $2)",
        )
        .bind(ip)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Blocks in force at `now`, at most `limit`, the newest first.
    pub async fn active_ip_blocks(&self, now: Millis, limit: i64) -> Result<Vec<IpBlockRow>> {
        let rows = sqlx::query(
            "SELECT ip, reason, created_at, expires_at, created_by, strikes FROM ip_blocks \
             WHERE expires_at IS NULL OR expires_at > $1 ORDER BY created_at DESC LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(IpBlockRow {
                    ip: r.try_get(0)?,
                    reason: r.try_get(1)?,
                    created_at: r.try_get(2)?,
                    expires_at: r.try_get(3)?,
                    created_by: r.try_get(4)?,
                    strikes: r.try_get::<i64, _>(5)?,
                })
            })
            .collect()
    }

    /// Forget blocks that began and ended before `before` (and with them, their strikes).
    pub async fn delete_stale_ip_blocks(&self, before: Millis) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM ip_blocks WHERE expires_at IS NOT NULL \
             AND (CASE WHEN expires_at > created_at THEN expires_at ELSE created_at END) < $1",
        )
        .bind(before)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
