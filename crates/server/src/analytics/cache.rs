//! Rollup spans that no longer change, kept in memory for a minute.
//!
//! A month of rollups is tens of thousands of rows to sum; the live dashboard asks again every
//! two seconds, and every page asks for the same days. Spans that ended more than
//! [`SETTLED_MS`] ago only change when an event arrives late (a long SSE stream is recorded
//! when it ends, at its start time; another instance flushes its queue), so their sums are
//! kept [`TTL`] and read again after that: a late event shows up within a minute. Recent
//! spans and the raw edges of a range are always read from the database.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp_oauth_core::analytics::summary::{Latencies, Row, merge_rows};
use mcp_oauth_core::analytics::{Millis, Period, RangePlan};
use mcp_oauth_store::Db;

/// A span is settled once it ended this long ago.
pub const SETTLED_MS: Millis = 5 * 60_000;
/// How long a settled span's sums are used before being read again.
pub const TTL: Duration = Duration::from_secs(60);
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

pub struct SpanCache {
    spans: quick_cache::sync::Cache<(Period, Millis, Millis), Arc<SpanSums>, ByRows>,
}

impl Default for SpanCache {
    fn default() -> Self {
        Self {
            spans: quick_cache::sync::Cache::with_weighter(64, CAPACITY_ROWS, ByRows),
        }
    }
}

impl SpanCache {
    /// The summed rows and latency histograms of `plan`, at `now`.
    pub async fn read(
        &self,
        db: &Db,
        plan: &RangePlan,
        now: Millis,
    ) -> mcp_oauth_store::Result<(Vec<Row>, Latencies)> {
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
            let cached = self.spans.get(&key).filter(|s| s.read_at.elapsed() < TTL);
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
}
