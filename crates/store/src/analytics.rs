//! Usage analytics: raw events, their per-minute/hour/day rollups, and reading a range back.
//!
//! Tables (migrations `0003` and `0004`):
//! - `analytics_events`: raw events, for the edges of a range, drill-downs and exports;
//! - `analytics_dimensions`: each distinct combination of dimensions once, by id;
//! - `analytics_counts`: events per rollup bucket and dimensions id (the range summaries);
//! - `analytics_series`: events per bucket and (kind, name, detail, outcome) (the charts);
//! - `analytics_latency`: latency histogram bins per bucket and series (the percentiles).
//!
//! A batch of events is written in one transaction: the raw rows, and for each rollup bucket
//! the batch touches, `count = count + n` upserts (never read-modify-write), so any number of
//! instances can write to one PostgreSQL and the rollups always equal the raw events they
//! summarise. Rows are upserted in key order, so two instances cannot deadlock. The ids of
//! new dimensions are settled before, in a transaction of their own (see `dimension_ids`).
//! Reads go through the read pool (on SQLite, connections of their own), so a dashboard query
//! never waits behind a token grant.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

// Every dynamic statement here is built from constant SQL and `$N` or `?` placeholders only
// (`AssertSqlSafe`): values are always bound.
use sqlx::{Any, AssertSqlSafe, Row as _};

use mcp_oauth_core::analytics::summary::{Latencies, Row};
use mcp_oauth_core::analytics::{
    Dimensions, Event, Histogram, Millis, Period, RangePlan, histogram,
};

use crate::{Backend, Db, Result};

/// The dimension columns, in primary-key order.
const DIMENSIONS: &str = "kind, name, detail, outcome, code, user_id, client_id, software, \
                          protocol_version, transport, country";

/// Rows per multi-row `INSERT`, measured with `benches/analytics_writer.rs` (2,000-event
/// batches): SQLite stored 119,000 events/s at 16 rows, 147,000 at 64, 144,000 at 128;
/// PostgreSQL 59,000 at 16, 86,000 at 64, but 3,000 at 128 (and 8,400 at 400). Only full
/// chunks are prepared once and kept (`persistent`): a statement per row count of the last,
/// partial chunk would fill each connection's statement cache.
const CHUNK: usize = 64;

/// Ids per `IN (…)` list when looking up names.
const ID_CHUNK: usize = 64;

/// The eleven dimension columns (in `DIMENSIONS` order) of `r`, from column `first` on.
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
        country: r.try_get(first + 10)?,
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
        country: r.try_get(11)?,
        latency_us: r.try_get(12)?,
        count: r.try_get(13)?,
        ip: r.try_get(14)?,
        user_agent: r.try_get(15)?,
        request_id: r.try_get(16)?,
    })
}

fn dims_values(d: &Dimensions) -> [&str; 11] {
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
        &d.country,
    ]
}

/// `(?, ?, …), (…)` on SQLite, `($1, $2, …), (…)` on PostgreSQL, for `rows` rows of `width`
/// parameters each, bound in order.
///
/// SQLite gets anonymous `?`: sqlx matches each parameter to its argument by asking SQLite
/// for the parameter's name, which SQLite finds by a linear scan of all the statement's
/// names, so numbered parameters cost time quadratic in their number (a 16-row insert of
/// events, 272 parameters, spent most of its time there). Anonymous ones have no names to
/// scan.
pub(crate) fn placeholders(backend: Backend, rows: usize, width: usize) -> String {
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
            match backend {
                Backend::Sqlite => s.push('?'),
                Backend::Postgres => s.push_str(&format!("${}", r * width + c + 1)),
            }
        }
        s.push(')');
    }
    s
}

/// Dimensions this process has written or read, both ways: a batch only asks the database
/// for the ids of new ones, and a range read gets ids from SQL and names them from here, one
/// shared `Arc` per id. Bounded: past `MAX_KNOWN_DIMENSIONS` it starts again empty (an id
/// always means the same dimensions, so forgetting only costs lookups).
#[derive(Default)]
pub(crate) struct DimensionIds(std::sync::Mutex<KnownDimensions>);

#[derive(Default)]
pub(crate) struct KnownDimensions {
    ids: HashMap<Arc<Dimensions>, i64>,
    by_id: HashMap<i64, Arc<Dimensions>>,
}

impl KnownDimensions {
    fn insert(&mut self, id: i64, dims: Arc<Dimensions>) {
        if self.by_id.len() >= MAX_KNOWN_DIMENSIONS {
            self.ids.clear();
            self.by_id.clear();
        }
        self.ids.insert(dims.clone(), id);
        self.by_id.insert(id, dims);
    }
}

impl DimensionIds {
    fn known(&self) -> std::sync::MutexGuard<'_, KnownDimensions> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

const MAX_KNOWN_DIMENSIONS: usize = 50_000;

/// Ids further apart than this are fetched by separate range queries when naming them.
const ID_GAP: i64 = 256;

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
    pub country: String,
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
    /// Where this row is in a page: the next page starts after it.
    pub cursor: RollupCursor,
}

/// Where a page of rollup rows ended, in primary-key order within one period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupCursor {
    pub bucket_start: Millis,
    pub dimensions_id: i64,
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
        let ids = self.dimension_ids(&summed).await?;
        let mut rollups: BTreeMap<(i64, Millis, i64), RollupSum> = BTreeMap::new();
        let mut series: BTreeMap<(i64, Millis, [&str; 4]), i64> = BTreeMap::new();
        let mut bins: BTreeMap<(i64, Millis, [&str; 3], u16), i64> = BTreeMap::new();
        for (e, dims) in events.iter().zip(&summed) {
            let id = ids[dims];
            let d = &e.dims;
            for p in Period::ALL {
                let start = p.bucket_start(e.at);
                let sum = rollups.entry((p.seconds(), start, id)).or_default();
                sum.count += e.count as i64;
                sum.latency_sum_us += e.latency_us.unwrap_or(0) as i64;
                sum.last_at = sum.last_at.max(e.at);
                let key = [&*d.kind, &*d.name, &*d.detail, &*d.outcome];
                *series.entry((p.seconds(), start, key)).or_default() += e.count as i64;
                if let Some(us) = e.latency_us {
                    let key = [&*d.kind, &*d.name, &*d.detail];
                    *bins
                        .entry((p.seconds(), start, key, histogram::bucket_of(us)))
                        .or_default() += 1;
                }
            }
        }

        let mut tx = self.begin_write().await?;
        for chunk in events.chunks(CHUNK) {
            let sql = format!(
                "INSERT INTO analytics_events (at_ms, {DIMENSIONS}, latency_us, count, ip, \
                 user_agent, request_id) VALUES {}",
                placeholders(self.backend, chunk.len(), 17)
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
                "INSERT INTO analytics_counts (period, bucket_start, dimensions_id, count, \
                 latency_sum_us, last_at_ms) VALUES {} \
                 ON CONFLICT (period, bucket_start, dimensions_id) DO UPDATE SET \
                 count = analytics_counts.count + excluded.count, \
                 latency_sum_us = analytics_counts.latency_sum_us + excluded.latency_sum_us, \
                 last_at_ms = CASE WHEN excluded.last_at_ms > analytics_counts.last_at_ms \
                 THEN excluded.last_at_ms ELSE analytics_counts.last_at_ms END",
                placeholders(self.backend, chunk.len(), 6)
            );
            let mut q = sqlx::query::<Any>(AssertSqlSafe(sql)).persistent(chunk.len() == CHUNK);
            for ((period, start, id), sum) in chunk {
                q = q
                    .bind(*period)
                    .bind(*start)
                    .bind(*id)
                    .bind(sum.count)
                    .bind(sum.latency_sum_us)
                    .bind(sum.last_at);
            }
            q.execute(&mut *tx).await?;
        }

        let series: Vec<_> = series.into_iter().collect();
        for chunk in series.chunks(CHUNK) {
            let sql = format!(
                "INSERT INTO analytics_series (period, bucket_start, kind, name, detail, \
                 outcome, count) VALUES {} \
                 ON CONFLICT (period, bucket_start, kind, name, detail, outcome) DO UPDATE SET \
                 count = analytics_series.count + excluded.count",
                placeholders(self.backend, chunk.len(), 7)
            );
            let mut q = sqlx::query::<Any>(AssertSqlSafe(sql)).persistent(chunk.len() == CHUNK);
            for ((period, start, [kind, name, detail, outcome]), n) in chunk {
                q = q
                    .bind(*period)
                    .bind(*start)
                    .bind(*kind)
                    .bind(*name)
                    .bind(*detail)
                    .bind(*outcome)
                    .bind(*n);
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
                placeholders(self.backend, chunk.len(), 7)
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

    /// The id of each of `dims` in `analytics_dimensions`, adding those not there yet.
    ///
    /// New ones are added in a transaction of their own, committed before the batch's: ids
    /// are then final whatever happens to the batch, and two instances adding the same
    /// dimensions (in the same sorted order) wait for each other instead of deadlocking
    /// inside the batch's transaction.
    async fn dimension_ids<'a>(
        &self,
        dims: &'a [Dimensions],
    ) -> Result<HashMap<&'a Dimensions, i64>> {
        let mut ids = HashMap::with_capacity(dims.len());
        let mut missing = std::collections::BTreeSet::new();
        {
            let known = self.dimension_ids.known();
            for d in dims {
                match known.ids.get(d) {
                    Some(&id) => {
                        ids.insert(d, id);
                    }
                    None => {
                        missing.insert(d);
                    }
                }
            }
        }
        if missing.is_empty() {
            return Ok(ids);
        }
        let sql = format!(
            "INSERT INTO analytics_dimensions ({DIMENSIONS}) VALUES {} \
             ON CONFLICT ({DIMENSIONS}) DO UPDATE SET kind = excluded.kind RETURNING id",
            placeholders(self.backend, 1, 11)
        );
        let mut found = Vec::with_capacity(missing.len());
        let mut tx = self.begin_write().await?;
        for d in missing {
            let mut q = sqlx::query::<Any>(AssertSqlSafe(sql.as_str()));
            for v in dims_values(d) {
                q = q.bind(v);
            }
            let id: i64 = q.fetch_one(&mut *tx).await?.try_get(0)?;
            found.push((d, id));
        }
        tx.commit().await?;
        let mut known = self.dimension_ids.known();
        for (d, id) in found {
            known.insert(id, Arc::new(d.clone()));
            ids.insert(d, id);
        }
        Ok(ids)
    }

    /// The dimensions of each of `ids`, from the cache or else the database (ids missing
    /// from both are left out: dimensions are never deleted, so there are none).
    async fn dimensions_named(&self, ids: &[i64]) -> Result<HashMap<i64, Arc<Dimensions>>> {
        let mut named = HashMap::with_capacity(ids.len());
        let mut missing = Vec::new();
        {
            let known = self.dimension_ids.known();
            for &id in ids {
                match known.by_id.get(&id) {
                    Some(d) => {
                        named.insert(id, d.clone());
                    }
                    None => missing.push(id),
                }
            }
        }
        missing.sort_unstable();
        missing.dedup();
        // Ids are mostly dense (each instance's sequence), so runs of them are read by range:
        // a few queries even when nothing is cached yet.
        let mut runs: Vec<(i64, i64)> = Vec::new();
        for id in missing {
            match runs.last_mut() {
                Some((_, last)) if id - *last <= ID_GAP => *last = id,
                _ => runs.push((id, id)),
            }
        }
        for (first, last) in runs {
            let sql = format!(
                "SELECT {DIMENSIONS}, id FROM analytics_dimensions WHERE id BETWEEN $1 AND $2"
            );
            let rows = sqlx::query(AssertSqlSafe(sql))
                .bind(first)
                .bind(last)
                .fetch_all(&self.reader)
                .await?;
            let mut known = self.dimension_ids.known();
            for r in rows {
                let id: i64 = r.try_get(11)?;
                let dims = Arc::new(dims_at(&r, 0)?);
                known.insert(id, dims.clone());
                named.insert(id, dims);
            }
        }
        Ok(named)
    }

    /// Every event of the planned range, summed per distinct dimensions (rows of different
    /// spans may repeat dimensions; see `Row`).
    pub async fn analytics_rows(&self, plan: &RangePlan) -> Result<Vec<Row>> {
        let mut rows = Vec::new();
        for span in &plan.rollups {
            // Summed per id in SQL (one integer to group by), named from the cache.
            let summed = sqlx::query(
                "SELECT dimensions_id, CAST(SUM(count) AS BIGINT), MAX(last_at_ms) \
                 FROM analytics_counts WHERE period = $1 AND bucket_start >= $2 \
                 AND bucket_start < $3 GROUP BY dimensions_id",
            )
            .bind(span.period.seconds())
            .bind(span.start)
            .bind(span.end)
            .fetch_all(&self.reader)
            .await?
            .iter()
            .map(|r| {
                Ok((
                    r.try_get::<i64, _>(0)?,
                    r.try_get::<i64, _>(1)?,
                    r.try_get(2)?,
                ))
            })
            .collect::<Result<Vec<(i64, i64, i64)>>>()?;
            let ids: Vec<i64> = summed.iter().map(|s| s.0).collect();
            let named = self.dimensions_named(&ids).await?;
            rows.extend(summed.into_iter().filter_map(|(id, count, last_at)| {
                Some(Row {
                    dims: named.get(&id)?.clone(),
                    count: count.max(0) as u64,
                    last_at,
                })
            }));
        }
        // The raw edges: at most a minute at each end of the range.
        let mut raw: HashMap<Dimensions, (u64, Millis)> = HashMap::new();
        for &(from, to) in &plan.raw {
            let sql = format!(
                "SELECT {DIMENSIONS}, CAST(SUM(count) AS BIGINT), MAX(at_ms) \
                 FROM analytics_events WHERE at_ms >= $1 AND at_ms < $2 GROUP BY {DIMENSIONS}"
            );
            let found = sqlx::query(AssertSqlSafe(sql))
                .bind(from)
                .bind(to)
                .fetch_all(&self.reader)
                .await?;
            for r in found {
                // Summed as the rollups are (HTTP requests without user and client).
                let dims = dims_at(&r, 0)?.for_rollup();
                let count: i64 = r.try_get(11)?;
                let last: i64 = r.try_get(12)?;
                let entry = raw.entry(dims).or_default();
                entry.0 += count.max(0) as u64;
                entry.1 = entry.1.max(last);
            }
        }
        let known = self.dimension_ids.known();
        rows.extend(raw.into_iter().map(|(dims, (count, last_at))| {
            Row {
                // The cached `Arc` where there is one, so that merging finds it.
                dims: known
                    .ids
                    .get_key_value(&dims)
                    .map_or_else(|| Arc::new(dims), |(d, _)| d.clone()),
                count,
                last_at,
            }
        }));
        Ok(rows)
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
             CAST(SUM(count) AS BIGINT) FROM analytics_series \
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
                id: r.try_get(17)?,
            }),
            None => None,
        };
        Ok((rows.iter().map(event_row).collect::<Result<_>>()?, last))
    }

    /// Rollup rows of `period` whose bucket starts in `[from, to)`, in primary-key order
    /// (bucket, dimensions id), at most `limit`, after `after` (keyset pagination, as
    /// `analytics_events_page`).
    pub async fn analytics_rollups_page(
        &self,
        period: Period,
        from: Millis,
        to: Millis,
        after: Option<&RollupCursor>,
        limit: i64,
    ) -> Result<Vec<RollupRow>> {
        // A row value comparison (SQLite 3.15+, PostgreSQL) over the key after `period`,
        // which the primary key serves in order.
        let after = after.cloned().unwrap_or(RollupCursor {
            bucket_start: from,
            dimensions_id: i64::MIN,
        });
        let sql = format!(
            "SELECT r.bucket_start, {DIMENSIONS}, r.count, r.latency_sum_us, r.dimensions_id \
             FROM analytics_counts r JOIN analytics_dimensions d ON d.id = r.dimensions_id \
             WHERE r.period = $1 AND r.bucket_start >= $2 AND r.bucket_start < $3 \
             AND (r.bucket_start, r.dimensions_id) > ($4, $5) \
             ORDER BY r.bucket_start, r.dimensions_id LIMIT $6"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(period.seconds())
            .bind(from)
            .bind(to)
            .bind(after.bucket_start)
            .bind(after.dimensions_id)
            .bind(limit)
            .fetch_all(&self.reader)
            .await?;
        rows.into_iter()
            .map(|r| {
                Ok(RollupRow {
                    period,
                    bucket_start: r.try_get(0)?,
                    dims: dims_at(&r, 1)?,
                    count: r.try_get(12)?,
                    latency_sum_us: r.try_get(13)?,
                    cursor: RollupCursor {
                        bucket_start: r.try_get(0)?,
                        dimensions_id: r.try_get(14)?,
                    },
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
        // Dimensions are kept: a row per distinct combination ever seen, reused by new events.
        for table in ["analytics_counts", "analytics_series", "analytics_latency"] {
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
