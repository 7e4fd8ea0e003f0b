//! Rollup spans that no longer change, kept in memory for a minute.
//!
//! A month of rollups is tens of thousands of rows to sum; the live dashboard asks again every
//! two seconds, and every page asks for the same days. Spans that ended more than
//! [`SETTLED_MS`] ago only change when an event arrives late (a long SSE stream is recorded
//! when it ends, at its start time; another instance flushes its queue), so their sums are
//! kept [`TTL`] and read again after that: a late event shows up within a minute. Recent
//! spans and the raw edges of a range are always read from the database.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp_oauth_core::analytics::summary::{Latencies, Row, merge_rows};
use mcp_oauth_core::analytics::{Histogram, Millis, Period, RangePlan};
use mcp_oauth_store::{Db, SeriesPoint};

/// A span is settled once it ended this long ago.
pub const SETTLED_MS: Millis = 5 * 60_000;
/// How long a settled span's sums are used before being read again.
pub const TTL: Duration = Duration::from_secs(60);
/// How often the preset ranges' settled spans are read again in the background, before they
/// expire (`TTL`): opening the dashboard then reads only its last few minutes.
pub const WARM_EVERY: Duration = Duration::from_secs(45);
/// Rows held at most, over all spans (a row is a few hundred bytes).
const CAPACITY_ROWS: u64 = 200_000;

struct SpanSums {
    rows: Vec<Row>,
    latencies: Latencies,
    read_at: Instant,
}

#[derive(Clone)]
struct ByRows;

impl quick_cache::Weighter<(Period, Millis, Millis), Arc<SpanSums>> for ByRows {
    fn weight(&self, _: &(Period, Millis, Millis), v: &Arc<SpanSums>) -> u64 {
        (v.rows.len() as u64 + v.latencies.series.len() as u64).max(1)
    }
}

/// A chart's points over a settled stretch: `(period, step, start, end)`.
type ChartKey = (Period, Millis, Millis, Millis);
type ToolLatencies = BTreeMap<(String, Millis), Histogram>;

pub struct SpanCache {
    spans: quick_cache::sync::Cache<(Period, Millis, Millis), Arc<SpanSums>, ByRows>,
    series: quick_cache::sync::Cache<ChartKey, Arc<(Vec<SeriesPoint>, Instant)>>,
    tool_latencies: quick_cache::sync::Cache<ChartKey, Arc<(ToolLatencies, Instant)>>,
}

impl Default for SpanCache {
    fn default() -> Self {
        Self {
            spans: quick_cache::sync::Cache::with_weighter(64, CAPACITY_ROWS, ByRows),
            series: quick_cache::sync::Cache::new(32),
            tool_latencies: quick_cache::sync::Cache::new(32),
        }
    }
}

/// `[from, to)` split at the end of its settled whole steps: `(settled, live)`, the first
/// starting at `from` rounded down to a step (charts show whole steps).
fn chart_split(
    step: Millis,
    from: Millis,
    to: Millis,
    now: Millis,
) -> ((Millis, Millis), (Millis, Millis)) {
    let start = from - from.rem_euclid(step);
    let horizon = (now - SETTLED_MS).min(to);
    let settled_end = (horizon - horizon.rem_euclid(step)).max(start);
    ((start, settled_end), (settled_end, to))
}

/// The settled part of a chart from `cache` when it was read less than `max_age` ago, else
/// from `fetch` (and kept).
async fn settled_chart<V, F>(
    cache: &quick_cache::sync::Cache<ChartKey, Arc<(V, Instant)>>,
    key: ChartKey,
    max_age: Duration,
    fetch: F,
) -> mcp_oauth_store::Result<Arc<(V, Instant)>>
where
    V: Send + Sync,
    F: Future<Output = mcp_oauth_store::Result<V>>,
{
    if let Some(s) = cache.get(&key).filter(|s| s.1.elapsed() < max_age) {
        return Ok(s);
    }
    let s = Arc::new((fetch.await?, Instant::now()));
    cache.insert(key, s.clone());
    Ok(s)
}

impl SpanCache {
    /// A chart's points (`Db::analytics_series`) over `[from, to)`, whole steps.
    pub async fn series(
        &self,
        db: &Db,
        period: Period,
        step: Millis,
        from: Millis,
        to: Millis,
        now: Millis,
    ) -> mcp_oauth_store::Result<Vec<SeriesPoint>> {
        let ((a, b), (c, d)) = chart_split(step, from, to, now);
        let settled = settled_chart(
            &self.series,
            (period, step, a, b),
            TTL,
            db.analytics_series(period, step, a, b),
        )
        .await?;
        let mut points = settled.0.clone();
        points.extend(db.analytics_series(period, step, c, d).await?);
        Ok(points)
    }

    /// Each tool's latency histogram per step (`Db::analytics_tool_latency_series`).
    pub async fn tool_latencies(
        &self,
        db: &Db,
        period: Period,
        step: Millis,
        from: Millis,
        to: Millis,
        now: Millis,
    ) -> mcp_oauth_store::Result<ToolLatencies> {
        let ((a, b), (c, d)) = chart_split(step, from, to, now);
        let settled = settled_chart(
            &self.tool_latencies,
            (period, step, a, b),
            TTL,
            db.analytics_tool_latency_series(period, step, a, b),
        )
        .await?;
        let mut out = settled.0.clone();
        for (k, h) in db.analytics_tool_latency_series(period, step, c, d).await? {
            out.entry(k).or_default().merge(&h);
        }
        Ok(out)
    }

    /// The summed rows and latency histograms of `plan`, at `now`.
    pub async fn read(
        &self,
        db: &Db,
        plan: &RangePlan,
        now: Millis,
    ) -> mcp_oauth_store::Result<(Vec<Row>, Latencies)> {
        let (settled, live) = self.settled_spans(db, plan, now, TTL).await?;
        let live_rows = db.analytics_rows(&live).await?;
        let mut latencies = db.analytics_latencies(&live).await?;
        for s in &settled {
            for ((kind, name, detail), h) in &s.latencies.series {
                latencies.add(kind, name, detail, h);
            }
        }
        let rows = merge_rows(
            settled
                .iter()
                .map(|s| s.rows.as_slice())
                .chain([live_rows.as_slice()]),
        );
        Ok((rows, latencies))
    }

    /// Read again the settled parts of `ranges` (each `(from, to, period, step)`, as the
    /// dashboard's preset ranges read them at `now`), so that the next page to ask finds
    /// them here: keeps the preset ranges warm (see [`WARM_EVERY`]). The live parts are
    /// left to the pages.
    pub async fn warm(
        &self,
        db: &Db,
        ranges: &[(Millis, Millis, Period, Millis)],
        now: Millis,
    ) -> mcp_oauth_store::Result<()> {
        let again = Duration::ZERO;
        for &(from, to, period, step) in ranges {
            let plan = mcp_oauth_core::analytics::plan(from, to);
            self.settled_spans(db, &plan, now, again).await?;
            let ((a, b), _) = chart_split(step, from, to, now);
            let key = (period, step, a, b);
            let series = db.analytics_series(period, step, a, b);
            settled_chart(&self.series, key, again, series).await?;
            let tools = db.analytics_tool_latency_series(period, step, a, b);
            settled_chart(&self.tool_latencies, key, again, tools).await?;
        }
        Ok(())
    }

    /// The sums of `plan`'s settled spans (from memory when read less than `max_age` ago),
    /// and what is left of `plan` to read from the database: its recent spans and raw edges.
    async fn settled_spans(
        &self,
        db: &Db,
        plan: &RangePlan,
        now: Millis,
        max_age: Duration,
    ) -> mcp_oauth_store::Result<(Vec<Arc<SpanSums>>, RangePlan)> {
        let mut live = RangePlan {
            rollups: Vec::new(),
            raw: plan.raw.clone(),
        };
        let mut settled = Vec::new();
        for span in &plan.rollups {
            if span.end > now - SETTLED_MS {
                live.rollups.push(*span);
                continue;
            }
            let key = (span.period, span.start, span.end);
            let cached = self
                .spans
                .get(&key)
                .filter(|s| s.read_at.elapsed() < max_age);
            let sums = match cached {
                Some(s) => s,
                None => {
                    let one = RangePlan {
                        rollups: vec![*span],
                        raw: Vec::new(),
                    };
                    let s = Arc::new(SpanSums {
                        rows: db.analytics_rows(&one).await?,
                        latencies: db.analytics_latencies(&one).await?,
                        read_at: Instant::now(),
                    });
                    self.spans.insert(key, s.clone());
                    s
                }
            };
            settled.push(sums);
        }
        Ok((settled, live))
    }
}

#[cfg(test)]
mod tests {
    use mcp_oauth_core::analytics::{Event, plan};
    use mcp_oauth_store::{AnalyticsRetention, ConnectOptions};

    use super::*;

    const HOUR: Millis = 3_600_000;

    #[tokio::test]
    async fn warmed_spans_are_read_from_memory_not_the_database() {
        let db = Db::connect("sqlite::memory:", &ConnectOptions::default())
            .await
            .unwrap();
        db.migrate().await.unwrap();
        // Half past an hour, so that the range's whole hours are settled.
        let now: Millis = 1_800_000_000_000 + HOUR / 2;
        db.record_events(&[Event::http(now - 2 * HOUR, "/token", "POST", 200, 1_000)])
            .await
            .unwrap();
        let (from, to) = (now + 1 - 6 * HOUR, now + 1);
        let step = 5 * 60_000;
        let cache = SpanCache::default();
        cache
            .warm(&db, &[(from, to, Period::Minute, step)], now)
            .await
            .unwrap();

        // Everything stored goes: what is read now comes from the warmed cache.
        let everything = AnalyticsRetention {
            raw_ms: 0,
            rollups_ms: 0,
        };
        db.delete_old_analytics(now + HOUR, everything)
            .await
            .unwrap();
        let (rows, latencies) = cache.read(&db, &plan(from, to), now).await.unwrap();
        assert_eq!(rows.iter().map(|r| r.count).sum::<u64>(), 1);
        assert_eq!(latencies.merged(|k, _, _| k == "http").count(), 1);
        let points = cache
            .series(&db, Period::Minute, step, from, to, now)
            .await
            .unwrap();
        assert_eq!(points.iter().map(|p| p.count).sum::<u64>(), 1);
        // A cache nobody warmed reads the (now empty) database.
        let (rows, _) = SpanCache::default()
            .read(&db, &plan(from, to), now)
            .await
            .unwrap();
        assert!(rows.is_empty());
    }
}
