//! Reading security events back for operators: the lines `mcp-oauth security events` prints,
//! one JSON object per event with `--json`, and following new ones (`--follow`) across every
//! instance writing to the database.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::Duration;

use serde_json::{Value, json};

use mcp_oauth_core::analytics::Millis;
use mcp_oauth_core::analytics::summary::rfc3339;
use mcp_oauth_store::{Db, SecurityEventRow, SecurityFilter};

use crate::clock::Clock;

/// How often `--follow` asks the database for new events.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);
/// How far back each poll of `--follow` looks again. On PostgreSQL, ids are handed out when
/// a row is inserted and become visible when its transaction commits, so two instances can
/// commit out of id order: an event can appear below an id already printed. Looking again
/// at the last minute (and remembering what was printed) catches it.
const FOLLOW_LOOKBACK_MS: Millis = 60_000;
/// Events read per poll at most.
const PAGE: i64 = 1_000;

/// The JSON form of an event: what `--json` prints per line and the API returns.
pub fn event_json(row: &SecurityEventRow, emails: &HashMap<String, String>) -> Value {
    let user = row
        .user_id
        .as_ref()
        .map(|id| emails.get(id).cloned().unwrap_or_else(|| id.clone()));
    json!({
        "id": row.id,
        "time": rfc3339(row.at_ms),
        "type": row.kind,
        "level": row.level,
        "score": row.score,
        "ip": row.ip,
        "user": user,
        "user_id": row.user_id,
        "client_id": row.client_id,
        "request_id": row.request_id,
        "evidence": row.evidence,
        "acknowledged_at": row.acknowledged_at.map(rfc3339),
        "acknowledged_by": row.acknowledged_by,
        "resolved_at": row.resolved_at.map(rfc3339),
        "resolved_by": row.resolved_by,
        "note": row.note,
    })
}

/// One line for a person: time, level, score, type, who, evidence.
pub fn event_line(row: &SecurityEventRow, emails: &HashMap<String, String>) -> String {
    let mut line = format!(
        "{} {:<8} {:>3} {}",
        rfc3339(row.at_ms),
        row.level,
        row.score,
        row.kind
    );
    if let Some(ip) = &row.ip {
        line.push_str(&format!(" ip={ip}"));
    }
    if let Some(id) = &row.user_id {
        line.push_str(&format!(" user={}", emails.get(id).unwrap_or(id)));
    }
    if let Some(c) = &row.client_id {
        line.push_str(&format!(" client={c}"));
    }
    line.push_str(&format!(" {}", row.evidence));
    line
}

/// Emails of the users `rows` name.
pub async fn emails_of(
    db: &Db,
    rows: &[SecurityEventRow],
) -> anyhow::Result<HashMap<String, String>> {
    let mut ids: Vec<&str> = rows.iter().filter_map(|r| r.user_id.as_deref()).collect();
    ids.sort_unstable();
    ids.dedup();
    Ok(db.user_emails(&ids).await?)
}

async fn print(
    db: &Db,
    rows: &[SecurityEventRow],
    json: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let emails = emails_of(db, rows).await?;
    for row in rows {
        if json {
            writeln!(out, "{}", event_json(row, &emails))?;
        } else {
            writeln!(out, "{}", event_line(row, &emails))?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Print the events matching `filter` (oldest first, at most `limit`), then, when `follow`,
/// each new one as it is stored, until the process is stopped.
pub async fn print_events(
    db: &Db,
    clock: &Clock,
    filter: SecurityFilter,
    limit: i64,
    json: bool,
    follow: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut rows = db.security_events(&filter, limit).await?;
    rows.reverse();
    print(db, &rows, json, out).await?;
    if !follow {
        return Ok(());
    }
    // Printed ids with their times, forgotten once outside the lookback.
    let mut printed: BTreeMap<i64, Millis> = rows.iter().map(|r| (r.id, r.at_ms)).collect();
    let mut last_id = rows.iter().map(|r| r.id).max().unwrap_or(0);
    loop {
        tokio::time::sleep(FOLLOW_EVERY).await;
        let now = clock.now_millis();
        let newer = SecurityFilter {
            from: 0,
            to: Millis::MAX,
            after_id: Some(last_id),
            ..filter.clone()
        };
        let recent = SecurityFilter {
            from: now - FOLLOW_LOOKBACK_MS,
            to: Millis::MAX,
            after_id: None,
            ..filter.clone()
        };
        let mut fresh: Vec<SecurityEventRow> = db.security_events(&newer, PAGE).await?;
        fresh.extend(db.security_events(&recent, PAGE).await?);
        fresh.retain(|r| !printed.contains_key(&r.id));
        fresh.sort_by_key(|r| r.id);
        fresh.dedup_by_key(|r| r.id);
        print(db, &fresh, json, out).await?;
        for r in &fresh {
            printed.insert(r.id, r.at_ms);
            last_id = last_id.max(r.id);
        }
        printed.retain(|_, at| *at >= now - 2 * FOLLOW_LOOKBACK_MS);
    }
}
