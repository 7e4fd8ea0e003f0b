//! Usage analytics: raw events, their per-minute/hour/day rollups, and reading a range back.
//!
//! A batch of events is written in one transaction: the raw rows, and for each rollup bucket
//! the batch touches, `count = count + n` upserts (never read-modify-write), so any number of
//! instances can write to one PostgreSQL and the rollups always equal the raw events they
//! summarise. Rows are upserted in key order, so two instances cannot deadlock.
//! Reads go through the read pool (on SQLite, connections of their own), so a dashboard query
//! never waits behind a token grant.

use std::collections::{BTreeMap, HashMap};

// Every dynamic statement here is built from constant SQL and `$N` placeholders only
// (`AssertSqlSafe`): values are always bound.
use sqlx::{Any, AssertSqlSafe, Row as _};

use mcp_oauth_core::analytics::summary::{Latencies, Row};
use mcp_oauth_core::analytics::{
    Dimensions, Event, Histogram, Millis, Period, RangePlan, histogram,
};

use crate::{Db, Result};

/// The dimension columns, in primary-key order.
const DIMENSIONS: &str = "kind, name, detail, outcome, code, user_id, client_id, software, \
                          protocol_version, transport";

/// Rows per multi-row `INSERT`. Small on purpose: SQLite binds `$N` parameters by name, which
/// sqlx resolves in time quadratic in their number (400 rows of 16 columns took 47 ms a
/// statement, 16 rows 0.2 ms), and PostgreSQL also ran 16-row statements fastest (measured
/// with 2,000-event batches: 74,000 events/s on SQLite and 55,000 on PostgreSQL at 16 rows,
/// 8,100 and 8,400 at 400). Only full chunks are prepared once and kept (`persistent`): a
/// statement per row count of the last, partial chunk would fill each connection's statement
/// cache.
const CHUNK: usize = 16;

/// Ids per `IN (…)` list when looking up names.
const ID_CHUNK: usize = 64;

/// The ten dimension columns (in `DIMENSIONS` order) of `r`, from column `first` on.
fn dims_at(r: &sqlx::any::AnyRow, first: usize) -> Result<Dimensions> {
    Ok(Dimensions {
        kind: r.try_get(first)?,
        name: r.try_get(first + 1)?,
        detail: r.try_get(first + 2)?,
        outcome: r.try_get(first + 3)?,
        code: r.try_get(first + 4)?,
        user_id: r.try_get(first + 5)?,
        client_id: r.try_get(first + 6)?,
        software: r.try_get(first + 7)?,
        protocol_version: r.try_get(first + 8)?,
        transport: r.try_get(first + 9)?,
    })
}

fn event_row(r: &sqlx::any::AnyRow) -> Result<EventRow> {
    Ok(EventRow {
        at_ms: r.try_get(0)?,
        kind: r.try_get(1)?,
        name: r.try_get(2)?,
        detail: r.try_get(3)?,
        outcome: r.try_get(4)?,
        code: r.try_get(5)?,
        user_id: r.try_get(6)?,
        client_id: r.try_get(7)?,
        software: r.try_get(8)?,
        protocol_version: r.try_get(9)?,
        transport: r.try_get(10)?,
        latency_us: r.try_get(11)?,
        count: r.try_get(12)?,
        ip: r.try_get(13)?,
        user_agent: r.try_get(14)?,
        request_id: r.try_get(15)?,
    })
}

fn dims_values(d: &Dimensions) -> [&str; 10] {
    [
        &d.kind,
        &d.name,
        &d.detail,
        &d.outcome,
        &d.code,
        &d.user_id,
        &d.client_id,
        &d.software,
        &d.protocol_version,
        &d.transport,
    ]
}

/// `($1, $2, …), (…)` for `rows` rows of `width` parameters each.
fn placeholders(rows: usize, width: usize) -> String {
    let mut s = String::new();
    for r in 0..rows {
        if r > 0 {
            s.push_str(", ");
        }
        s.push('(');
        for c in 0..width {
            if c > 0 {
                s.push_str(", ");
            }
            s.push_str(&format!("${}", r * width + c + 1));
        }
        s.push(')');
    }
    s
}

#[derive(Default)]
struct RollupSum {
    count: i64,
    latency_sum_us: i64,
    last_at: Millis,
}

/// How much older than now analytics rows may get before cleanup deletes them.
#[derive(Debug, Clone, Copy)]
pub struct AnalyticsRetention {
    /// Raw events and per-minute rollups.
    pub raw_ms: i64,
    /// Per-hour and per-day rollups.
    pub rollups_ms: i64,
}

/// Events summed per time step (a point of a chart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesPoint {
    /// The step's start.
    pub at: Millis,
    pub kind: String,
    pub name: String,
    pub detail: String,
    pub outcome: String,
    pub count: u64,
}

/// Which raw events a drill-down lists; every given field must match.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub from: Millis,
    pub to: Millis,
    pub kind: Option<String>,
    pub user_id: Option<String>,
    pub client_id: Option<String>,
    /// The tool (MCP `tools/call` events' detail).
    pub tool: Option<String>,
}

/// One stored raw event, for drill-downs and exports.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EventRow {
    pub at_ms: Millis,
    pub kind: String,
    pub name: String,
    pub detail: String,
    pub outcome: String,
    pub code: String,
    pub user_id: String,
    pub client_id: String,
    pub software: String,
    pub protocol_version: String,
    pub transport: String,
    pub latency_us: Option<i64>,
    pub count: i64,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
}

/// Where a page of raw events ended, in `(at_ms, id)` order: the next page starts after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventCursor {
    pub at_ms: Millis,
    pub id: i64,
}

/// One stored rollup row, for exports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupRow {
    pub period: Period,
    pub bucket_start: Millis,
    pub dims: Dimensions,
    pub count: i64,
    pub latency_sum_us: i64,
}

/// Where a page of rollup rows ended, in primary-key order within one period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupCursor {
    pub bucket_start: Millis,
    pub dims: Dimensions,
}

/// A client's grants that can still mint tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveGrants {
    pub client_id: String,
    pub live: u64,
    /// Of them, those that end before the horizon asked for.
    pub expiring: u64,
    pub next_expiry: Option<i64>,
}

impl Db {
    /// Write `events` and add them to their rollups, in one transaction.
    pub async fn record_events(&self, events: &[Event]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let summed: Vec<Dimensions> = events.iter().map(|e| e.dims.for_rollup()).collect();
        let mut rollups: BTreeMap<(i64, Millis, &Dimensions), RollupSum> = BTreeMap::new();
        let mut bins: BTreeMap<(i64, Millis, [&str; 3], u16), i64> = BTreeMap::new();
        for (e, dims) in events.iter().zip(&summed) {
            for p in Period::ALL {
                let start = p.bucket_start(e.at);
                let sum = rollups.entry((p.seconds(), start, dims)).or_default();
                sum.count += e.count as i64;
                sum.latency_sum_us += e.latency_us.unwrap_or(0) as i64;
                sum.last_at = sum.last_at.max(e.at);
                if let Some(us) = e.latency_us {
                    let series = [
                        e.dims.kind.as_str(),
                        e.dims.name.as_str(),
                        e.dims.detail.as_str(),
                    ];
                    *bins
                        .entry((p.seconds(), start, series, histogram::bucket_of(us)))
                        .or_default() += 1;
                }
            }
        }

        let mut tx = self.begin_write().await?;
        for chunk in events.chunks(CHUNK) {
            let sql = format!(
                "INSERT INTO analytics_events (at_ms, {DIMENSIONS}, latency_us, count, ip, \
                 user_agent, request_id) VALUES {}",
                placeholders(chunk.len(), 16)
            );
            let mut q = sqlx::query::<Any>(AssertSqlSafe(sql)).persistent(chunk.len() == CHUNK);
            for e in chunk {
                q = q.bind(e.at);
                for v in dims_values(&e.dims) {
                    q = q.bind(v);
                }
                q = q
                    .bind(e.latency_us.map(|v| v as i64))
                    .bind(e.count as i64)
                    .bind(e.ip.as_deref())
                    .bind(e.user_agent.as_deref())
                    .bind(e.request_id.as_deref());
            }
            q.execute(&mut *tx).await?;
        }

        let rollups: Vec<_> = rollups.into_iter().collect();
        for chunk in rollups.chunks(CHUNK) {
            let sql = format!(
                "INSERT INTO analytics_rollups (period, bucket_start, {DIMENSIONS}, count, \
                 latency_sum_us, last_at_ms) VALUES {} \
                 ON CONFLICT (period, bucket_start, {DIMENSIONS}) DO UPDATE SET \
                 count = analytics_rollups.count + excluded.count, \
                 latency_sum_us = analytics_rollups.latency_sum_us + excluded.latency_sum_us, \
                 last_at_ms = CASE WHEN excluded.last_at_ms > analytics_rollups.last_at_ms \
                 THEN excluded.last_at_ms ELSE analytics_rollups.last_at_ms END",
                placeholders(chunk.len(), 15)
            );
            let mut q = sqlx::query::<Any>(AssertSqlSafe(sql)).persistent(chunk.len() == CHUNK);
            for ((period, start, dims), sum) in chunk {
                q = q.bind(*period).bind(*start);
                for v in dims_values(dims) {
                    q = q.bind(v);
                }
                q = q.bind(sum.count).bind(sum.latency_sum_us).bind(sum.last_at);
            }
            q.execute(&mut *tx).await?;
        }

        let bins: Vec<_> = bins.into_iter().collect();
        for chunk in bins.chunks(CHUNK) {
            let sql = format!(
                "INSERT INTO analytics_latency (period, bucket_start, kind, name, detail, bin, \
                 count) VALUES {} \
                 ON CONFLICT (period, bucket_start, kind, name, detail, bin) DO UPDATE SET \
                 count = analytics_latency.count + excluded.count",
                placeholders(chunk.len(), 7)
            );
            let mut q = sqlx::query::<Any>(AssertSqlSafe(sql)).persistent(chunk.len() == CHUNK);
            for ((period, start, [kind, name, detail], bin), n) in chunk {
                q = q
                    .bind(*period)
                    .bind(*start)
                    .bind(*kind)
                    .bind(*name)
                    .bind(*detail)
                    .bind(i64::from(*bin))
                    .bind(*n);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Every event of the planned range, summed per distinct dimensions.
    pub async fn analytics_rows(&self, plan: &RangePlan) -> Result<Vec<Row>> {
        let mut merged: HashMap<Dimensions, (u64, Millis)> = HashMap::new();
        let mut add = |rows: Vec<sqlx::any::AnyRow>| -> Result<()> {
            for r in rows {
                // Raw rows (the range's edges) are summed as the rollups are.
                let dims = dims_at(&r, 0)?.for_rollup();
                let count: i64 = r.try_get(10)?;
                let last: i64 = r.try_get(11)?;
                let entry = merged.entry(dims).or_default();
                entry.0 += count.max(0) as u64;
                entry.1 = entry.1.max(last);
            }
            Ok(())
        };
        for span in &plan.rollups {
            let sql = format!(
                "SELECT {DIMENSIONS}, CAST(SUM(count) AS BIGINT), MAX(last_at_ms) \
                 FROM analytics_rollups WHERE period = $1 AND bucket_start >= $2 \
                 AND bucket_start < $3 GROUP BY {DIMENSIONS}"
            );
            let rows = sqlx::query(AssertSqlSafe(sql))
                .bind(span.period.seconds())
                .bind(span.start)
                .bind(span.end)
                .fetch_all(&self.reader)
                .await?;
            add(rows)?;
        }
        for &(from, to) in &plan.raw {
            let sql = format!(
                "SELECT {DIMENSIONS}, CAST(SUM(count) AS BIGINT), MAX(at_ms) \
                 FROM analytics_events WHERE at_ms >= $1 AND at_ms < $2 GROUP BY {DIMENSIONS}"
            );
            let rows = sqlx::query(AssertSqlSafe(sql))
                .bind(from)
                .bind(to)
                .fetch_all(&self.reader)
                .await?;
            add(rows)?;
        }
        Ok(merged
            .into_iter()
            .map(|(dims, (count, last_at))| Row {
                dims,
                count,
                last_at,
            })
            .collect())
    }

    /// The latency histograms of every series over the planned range.
    pub async fn analytics_latencies(&self, plan: &RangePlan) -> Result<Latencies> {
        let mut out = Latencies::default();
        for span in &plan.rollups {
            let rows = sqlx::query(
                "SELECT kind, name, detail, bin, CAST(SUM(count) AS BIGINT) \
                 FROM analytics_latency WHERE period = $1 AND bucket_start >= $2 \
                 AND bucket_start < $3 GROUP BY kind, name, detail, bin",
            )
            .bind(span.period.seconds())
            .bind(span.start)
            .bind(span.end)
            .fetch_all(&self.reader)
            .await?;
            for r in rows {
                let mut h = Histogram::default();
                let bin: i64 = r.try_get(3)?;
                let n: i64 = r.try_get(4)?;
                h.add_to_bucket(
                    u16::try_from(bin).unwrap_or(histogram::MAX_BUCKET),
                    n.max(0) as u64,
                );
                out.add(
                    r.try_get::<String, _>(0)?.as_str(),
                    r.try_get::<String, _>(1)?.as_str(),
                    r.try_get::<String, _>(2)?.as_str(),
                    &h,
                );
            }
        }
        for &(from, to) in &plan.raw {
            let rows = sqlx::query(
                "SELECT kind, name, detail, latency_us FROM analytics_events \
                 WHERE at_ms >= $1 AND at_ms < $2 AND latency_us IS NOT NULL",
            )
            .bind(from)
            .bind(to)
            .fetch_all(&self.reader)
            .await?;
            for r in rows {
                let mut h = Histogram::default();
                let us: i64 = r.try_get(3)?;
                h.record(us.max(0) as u64);
                out.add(
                    r.try_get::<String, _>(0)?.as_str(),
                    r.try_get::<String, _>(1)?.as_str(),
                    r.try_get::<String, _>(2)?.as_str(),
                    &h,
                );
            }
        }
        Ok(out)
    }

    /// Events of `[from, to)` summed per `step_ms` (a multiple of `period`), from the
    /// rollups of `period`: the points of the dashboard's charts.
    pub async fn analytics_series(
        &self,
        period: Period,
        step_ms: i64,
        from: Millis,
        to: Millis,
    ) -> Result<Vec<SeriesPoint>> {
        let rows = sqlx::query(
            "SELECT (bucket_start / $1) * $1, kind, name, detail, outcome, \
             CAST(SUM(count) AS BIGINT) FROM analytics_rollups \
             WHERE period = $2 AND bucket_start >= $3 AND bucket_start < $4 \
             GROUP BY 1, 2, 3, 4, 5 ORDER BY 1",
        )
        .bind(step_ms.max(1))
        .bind(period.seconds())
        .bind(from)
        .bind(to)
        .fetch_all(&self.reader)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(SeriesPoint {
                    at: r.try_get(0)?,
                    kind: r.try_get(1)?,
                    name: r.try_get(2)?,
                    detail: r.try_get(3)?,
                    outcome: r.try_get(4)?,
                    count: r.try_get::<i64, _>(5)?.max(0) as u64,
                })
            })
            .collect()
    }

    /// Latency histograms of each tool per `step_ms`, from the rollups of `period`.
    pub async fn analytics_tool_latency_series(
        &self,
        period: Period,
        step_ms: i64,
        from: Millis,
        to: Millis,
    ) -> Result<BTreeMap<(String, Millis), Histogram>> {
        let rows = sqlx::query(
            "SELECT (bucket_start / $1) * $1, detail, bin, CAST(SUM(count) AS BIGINT) \
             FROM analytics_latency WHERE period = $2 AND bucket_start >= $3 \
             AND bucket_start < $4 AND kind = 'mcp' AND name = 'tools/call' \
             GROUP BY 1, 2, 3",
        )
        .bind(step_ms.max(1))
        .bind(period.seconds())
        .bind(from)
        .bind(to)
        .fetch_all(&self.reader)
        .await?;
        let mut out: BTreeMap<(String, Millis), Histogram> = BTreeMap::new();
        for r in rows {
            let at: i64 = r.try_get(0)?;
            let tool: String = r.try_get(1)?;
            let bin: i64 = r.try_get(2)?;
            let n: i64 = r.try_get(3)?;
            out.entry((tool, at)).or_default().add_to_bucket(
                u16::try_from(bin).unwrap_or(histogram::MAX_BUCKET),
                n.max(0) as u64,
            );
        }
        Ok(out)
    }

    /// The newest raw events matching `filter`, at most `limit`.
    pub async fn analytics_events(&self, f: &EventFilter, limit: i64) -> Result<Vec<EventRow>> {
        let mut sql = format!(
            "SELECT at_ms, {DIMENSIONS}, latency_us, count, ip, user_agent, request_id \
             FROM analytics_events WHERE at_ms >= $1 AND at_ms < $2"
        );
        let mut binds: Vec<&str> = Vec::new();
        for (column, value) in [
            ("kind", &f.kind),
            ("user_id", &f.user_id),
            ("client_id", &f.client_id),
        ] {
            if let Some(v) = value {
                binds.push(v);
                sql.push_str(&format!(" AND {column} = ${}", binds.len() + 2));
            }
        }
        if let Some(tool) = &f.tool {
            binds.push(tool);
            sql.push_str(&format!(
                " AND kind = 'mcp' AND name = 'tools/call' AND detail = ${}",
                binds.len() + 2
            ));
        }
        sql.push_str(&format!(
            " ORDER BY at_ms DESC, id DESC LIMIT ${}",
            binds.len() + 3
        ));
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(f.from).bind(f.to);
        for b in binds {
            q = q.bind(b);
        }
        let rows = q.bind(limit).fetch_all(&self.reader).await?;
        rows.iter().map(event_row).collect()
    }

    /// Raw events of `[from, to)` in `(at_ms, id)` order, at most `limit`, starting after
    /// `after` (keyset pagination: each page costs the same however deep into the range it
    /// is, and rows written meanwhile never shift a page). Returns the rows and where the
    /// page ended.
    pub async fn analytics_events_page(
        &self,
        from: Millis,
        to: Millis,
        after: Option<EventCursor>,
        limit: i64,
    ) -> Result<(Vec<EventRow>, Option<EventCursor>)> {
        // Ids are positive on both databases, so "after (from, 0)" is the whole range.
        let after = after.unwrap_or(EventCursor { at_ms: from, id: 0 });
        let sql = format!(
            "SELECT at_ms, {DIMENSIONS}, latency_us, count, ip, user_agent, request_id, id \
             FROM analytics_events WHERE at_ms >= $1 AND at_ms < $2 \
             AND (at_ms > $3 OR (at_ms = $3 AND id > $4)) ORDER BY at_ms, id LIMIT $5"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(from)
            .bind(to)
            .bind(after.at_ms)
            .bind(after.id)
            .bind(limit)
            .fetch_all(&self.reader)
            .await?;
        let last = match rows.last() {
            Some(r) => Some(EventCursor {
                at_ms: r.try_get(0)?,
                id: r.try_get(16)?,
            }),
            None => None,
        };
        Ok((rows.iter().map(event_row).collect::<Result<_>>()?, last))
    }

    /// Rollup rows of `period` whose bucket starts in `[from, to)`, in primary-key order, at
    /// most `limit`, after `after` (keyset pagination, as `analytics_events_page`).
    pub async fn analytics_rollups_page(
        &self,
        period: Period,
        from: Millis,
        to: Millis,
        after: Option<&RollupCursor>,
        limit: i64,
    ) -> Result<Vec<RollupRow>> {
        // A row value comparison (SQLite 3.15+, PostgreSQL) over the key after `period`,
        // which the primary-key index serves in order.
        let (after_clause, limit_at) = match after {
            Some(_) => (
                format!(
                    " AND (bucket_start, {DIMENSIONS}) > ($4, $5, $6, $7, $8, $9, $10, $11, $12, \
                     $13, $14)"
                ),
                15,
            ),
            None => (String::new(), 4),
        };
        let sql = format!(
            "SELECT bucket_start, {DIMENSIONS}, count, latency_sum_us FROM analytics_rollups \
             WHERE period = $1 AND bucket_start >= $2 AND bucket_start < $3{after_clause} \
             ORDER BY bucket_start, {DIMENSIONS} LIMIT ${limit_at}"
        );
        let mut q = sqlx::query(AssertSqlSafe(sql))
            .bind(period.seconds())
            .bind(from)
            .bind(to);
        if let Some(c) = after {
            q = q.bind(c.bucket_start);
            for v in dims_values(&c.dims) {
                q = q.bind(v);
            }
        }
        let rows = q.bind(limit).fetch_all(&self.reader).await?;
        rows.into_iter()
            .map(|r| {
                Ok(RollupRow {
                    period,
                    bucket_start: r.try_get(0)?,
                    dims: dims_at(&r, 1)?,
                    count: r.try_get(11)?,
                    latency_sum_us: r.try_get(12)?,
                })
            })
            .collect()
    }

    /// Live grants per client at `now`, and how many end before `horizon`.
    pub async fn live_grants(&self, now: i64, horizon: i64) -> Result<Vec<LiveGrants>> {
        let rows = sqlx::query(
            "SELECT client_id, CAST(COUNT(*) AS BIGINT), \
             CAST(SUM(CASE WHEN expires_at < $2 THEN 1 ELSE 0 END) AS BIGINT), MIN(expires_at) \
             FROM grants WHERE revoked_at IS NULL AND expires_at > $1 GROUP BY client_id",
        )
        .bind(now)
        .bind(horizon)
        .fetch_all(&self.reader)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(LiveGrants {
                    client_id: r.try_get(0)?,
                    live: r.try_get::<i64, _>(1)?.max(0) as u64,
                    expiring: r.try_get::<i64, _>(2)?.max(0) as u64,
                    next_expiry: r.try_get(3)?,
                })
            })
            .collect()
    }

    /// Emails of the users with these ids (those that still exist).
    pub async fn user_emails(&self, ids: &[&str]) -> Result<HashMap<String, String>> {
        self.names_of("SELECT id, email FROM users WHERE id IN", ids)
            .await
    }

    /// Names of the clients with these ids (those that still exist and have one), from their
    /// registered metadata.
    pub async fn client_names(&self, ids: &[&str]) -> Result<HashMap<String, String>> {
        let metadata = self
            .names_of("SELECT id, metadata FROM clients WHERE id IN", ids)
            .await?;
        Ok(metadata
            .into_iter()
            .filter_map(|(id, json)| {
                let doc: serde_json::Value = serde_json::from_str(&json).ok()?;
                Some((id, doc.get("client_name")?.as_str()?.to_owned()))
            })
            .collect())
    }

    /// Registration kinds (`dynamic`, `preregistered`, `metadata_document`) of these clients.
    pub async fn client_kinds(&self, ids: &[String]) -> Result<HashMap<String, String>> {
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        self.names_of("SELECT id, kind FROM clients WHERE id IN", &ids)
            .await
    }

    async fn names_of(&self, select: &str, ids: &[&str]) -> Result<HashMap<String, String>> {
        let mut out = HashMap::new();
        for chunk in ids.chunks(ID_CHUNK) {
            let list: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!("{select} ({})", list.join(", "));
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(*id);
            }
            for r in q.fetch_all(&self.reader).await? {
                out.insert(r.try_get(0)?, r.try_get(1)?);
            }
        }
        Ok(out)
    }

    /// Delete raw events and minute rollups older than `retention.raw_ms`, hour and day
    /// rollups older than `retention.rollups_ms`, a few thousand rows per transaction so the
    /// write lock is never held for long. Returns how many rows went.
    pub async fn delete_old_analytics(
        &self,
        now: Millis,
        retention: AnalyticsRetention,
    ) -> Result<u64> {
        let raw_cutoff = now - retention.raw_ms;
        let rollup_cutoff = now - retention.rollups_ms;
        let mut deleted = 0;
        loop {
            let n = sqlx::query(
                "DELETE FROM analytics_events WHERE id IN \
                 (SELECT id FROM analytics_events WHERE at_ms < $1 LIMIT 5000)",
            )
            .bind(raw_cutoff)
            .execute(&self.pool)
            .await?
            .rows_affected();
            deleted += n;
            if n < 5000 {
                break;
            }
        }
        for table in ["analytics_rollups", "analytics_latency"] {
            // Bucket starts are aligned, so a bucket is dropped once all of it is too old.
            let sql = format!(
                "DELETE FROM {table} WHERE (period = $1 AND bucket_start < $2) \
                 OR (period > $1 AND bucket_start < $3)"
            );
            deleted += sqlx::query(AssertSqlSafe(sql))
                .bind(Period::Minute.seconds())
                .bind(raw_cutoff)
                .bind(rollup_cutoff)
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        Ok(deleted)
    }
}
