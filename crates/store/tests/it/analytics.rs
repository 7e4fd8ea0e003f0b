//! Analytics storage: a range read from rollups and raw edges equals the events in it, writes
//! from several writers add up, and retention deletes only what is old enough.

use mcp_oauth_core::analytics::Period;
use mcp_oauth_core::analytics::summary::Row;
use mcp_oauth_core::analytics::{Event, McpResult, OAuthEvent, plan};
use mcp_oauth_store::{AnalyticsRetention, EventCursor, EventFilter, RollupCursor};

use crate::helpers::TestDb;

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;
/// A day boundary, in milliseconds.
const T0: i64 = 19_700 * DAY;

fn call(at: i64, tool: &str, user: &str, result: McpResult, us: u64) -> Event {
    Event::mcp(at, "tools/call", Some(tool), result, us)
        .user(Some(user))
        .client(Some("c1"))
}

/// Events spread over three days, at ragged times.
fn workload() -> Vec<Event> {
    let mut events = Vec::new();
    for i in 0..300i64 {
        let at = T0 + i * 17 * MIN + i * 1_337;
        let result = match i % 10 {
            0 => McpResult::ToolError,
            1 => McpResult::ProtocolError(-32602),
            _ => McpResult::Success,
        };
        let tool = if i % 3 == 0 { "add" } else { "prime" };
        let user = if i % 2 == 0 { "u1" } else { "u2" };
        events.push(call(at, tool, user, result, 500 + (i as u64) * 97));
    }
    events
}

fn total(rows: &[Row], keep: impl Fn(&Row) -> bool) -> u64 {
    rows.iter().filter(|r| keep(r)).map(|r| r.count).sum()
}

async fn any_range_counts_exactly_the_events_in_it(t: TestDb) {
    let events = workload();
    t.db.record_events(&events).await.expect("record");
    for (from, to) in [
        (T0, T0 + 3 * DAY),
        (T0 + 5 * MIN + 301, T0 + 2 * DAY + 7 * HOUR + 13_001),
        (T0 + DAY + 59_999, T0 + DAY + 60_001),
        (T0 + 3 * HOUR, T0 + 3 * HOUR),
    ] {
        let rows = t.db.analytics_rows(&plan(from, to)).await.expect("rows");
        let expected = events.iter().filter(|e| from <= e.at && e.at < to).count() as u64;
        assert_eq!(total(&rows, |_| true), expected, "[{from}, {to})");
        let tool_errors = events
            .iter()
            .filter(|e| from <= e.at && e.at < to && e.dims.outcome == "tool_error")
            .count() as u64;
        assert_eq!(
            total(&rows, |r| r.dims.outcome == "tool_error"),
            tool_errors
        );
        let latencies =
            t.db.analytics_latencies(&plan(from, to))
                .await
                .expect("latencies");
        let h = latencies.merged(|_, _, _| true);
        assert_eq!(h.count(), expected, "one latency per event");
    }
}

async fn batches_from_concurrent_writers_add_up(t: TestDb) {
    let at = T0 + 90 * MIN;
    let batch = |n: usize| -> Vec<Event> {
        (0..n)
            .map(|i| call(at + i as i64, "add", "u1", McpResult::Success, 1_000))
            .collect()
    };
    let writers: Vec<_> = (0..8)
        .map(|_| {
            let db = t.db.clone();
            let events = batch(50);
            tokio::spawn(async move { db.record_events(&events).await })
        })
        .collect();
    for w in writers {
        w.await.expect("join").expect("record");
    }
    let rows =
        t.db.analytics_rows(&plan(T0, T0 + DAY))
            .await
            .expect("rows");
    assert_eq!(total(&rows, |_| true), 400);
    assert_eq!(rows.len(), 1, "one series: {rows:?}");
    assert_eq!(rows[0].last_at, at + 49);
}

async fn dropped_counts_and_oauth_events_are_kept(t: TestDb) {
    t.db.record_events(&[
        Event::dropped(T0 + 1, 42),
        Event::oauth(
            T0 + 2,
            OAuthEvent::TokenFailed {
                grant_type: "refresh_token",
                error: "invalid_grant",
            },
        )
        .client(Some("c1")),
    ])
    .await
    .expect("record");
    let rows =
        t.db.analytics_rows(&plan(T0, T0 + HOUR))
            .await
            .expect("rows");
    assert_eq!(total(&rows, |r| r.dims.kind == "pipeline"), 42);
    let failed = rows
        .iter()
        .find(|r| r.dims.name == "token_failed")
        .expect("the failure");
    assert_eq!(
        (failed.dims.detail.as_str(), failed.dims.code.as_str()),
        ("refresh_token", "invalid_grant")
    );
}

async fn retention_deletes_old_raw_events_and_rollups_only(t: TestDb) {
    let now = T0 + 500 * DAY;
    t.db.record_events(&[
        call(now - 450 * DAY, "add", "u1", McpResult::Success, 1),
        call(now - 40 * DAY, "add", "u1", McpResult::Success, 1),
        call(now - DAY, "add", "u1", McpResult::Success, 1),
    ])
    .await
    .expect("record");
    let retention = AnalyticsRetention {
        raw_ms: 30 * DAY,
        rollups_ms: 400 * DAY,
    };
    assert!(
        t.db.delete_old_analytics(now, retention)
            .await
            .expect("delete")
            > 0
    );
    // The day-old event: raw and every rollup. The 40-day-old one: its hour and day rollups.
    // The 450-day-old one: nothing.
    let day_rows =
        t.db.analytics_rows(&plan(now - 500 * DAY, now))
            .await
            .expect("rows");
    assert_eq!(total(&day_rows, |_| true), 2);
    let raw_left =
        t.db.analytics_rows(&plan(now - 40 * DAY - MIN / 2, now - 40 * DAY + MIN / 2))
            .await
            .expect("rows");
    assert_eq!(total(&raw_left, |_| true), 0, "old raw events are gone");
    assert_eq!(
        t.db.delete_old_analytics(now, retention)
            .await
            .expect("again"),
        0
    );
}

async fn series_sum_rollups_per_step(t: TestDb) {
    let events = workload();
    t.db.record_events(&events).await.expect("record");
    let step = 6 * HOUR;
    let points =
        t.db.analytics_series(Period::Hour, step, T0, T0 + 4 * DAY)
            .await
            .expect("series");
    assert_eq!(points.iter().map(|p| p.count).sum::<u64>(), 300);
    for p in &points {
        assert_eq!(p.at % step, 0, "aligned to the step");
        let expected = events
            .iter()
            .filter(|e| e.at >= p.at && e.at < p.at + step)
            .filter(|e| e.dims.detail == p.detail && e.dims.outcome == p.outcome)
            .count() as u64;
        assert_eq!(p.count, expected, "{p:?}");
    }
    let latencies =
        t.db.analytics_tool_latency_series(Period::Hour, step, T0, T0 + 4 * DAY)
            .await
            .expect("latency series");
    assert_eq!(latencies.values().map(|h| h.count()).sum::<u64>(), 300);
}

async fn drill_down_lists_the_newest_matching_events(t: TestDb) {
    t.db.record_events(&workload()).await.expect("record");
    let filter = EventFilter {
        from: T0,
        to: T0 + 3 * DAY,
        user_id: Some("u1".into()),
        tool: Some("add".into()),
        ..EventFilter::default()
    };
    let rows = t.db.analytics_events(&filter, 10).await.expect("events");
    assert_eq!(rows.len(), 10);
    assert!(
        rows.windows(2).all(|w| w[0].at_ms >= w[1].at_ms),
        "newest first"
    );
    assert!(rows.iter().all(|r| r.user_id == "u1" && r.detail == "add"));
    let none = EventFilter {
        client_id: Some("nobody".into()),
        ..filter
    };
    assert!(
        t.db.analytics_events(&none, 10)
            .await
            .expect("events")
            .is_empty()
    );
}

async fn event_pages_list_every_event_of_the_range_once_in_time_order(t: TestDb) {
    let mut events = workload();
    // Many events in the same millisecond: the id orders them, across a page boundary.
    let tie = T0 + 2 * HOUR;
    for i in 0..25 {
        events.push(call(tie, "tie", &format!("u{i}"), McpResult::Success, 1));
    }
    t.db.record_events(&events).await.expect("record");
    let (from, to) = (T0 + 5 * MIN + 301, T0 + 2 * DAY);
    let expected = events.iter().filter(|e| from <= e.at && e.at < to).count();
    let mut seen = Vec::new();
    let mut cursor: Option<EventCursor> = None;
    let mut pages = 0;
    loop {
        let (rows, next) =
            t.db.analytics_events_page(from, to, cursor, 7)
                .await
                .expect("page");
        pages += 1;
        assert!(rows.len() <= 7);
        if rows.is_empty() {
            assert_eq!(next, None, "an empty page has no cursor");
            break;
        }
        assert_eq!(next.map(|c| c.at_ms), rows.last().map(|r| r.at_ms));
        seen.extend(rows);
        cursor = next;
    }
    assert_eq!(seen.len(), expected, "every event once, in {pages} pages");
    assert!(
        seen.windows(2).all(|w| w[0].at_ms <= w[1].at_ms),
        "time order"
    );
    assert!(seen.iter().all(|r| from <= r.at_ms && r.at_ms < to));
    let mut ties: Vec<&str> = seen
        .iter()
        .filter(|r| r.detail == "tie")
        .map(|r| r.user_id.as_str())
        .collect();
    assert_eq!(ties.len(), 25, "no tie lost or repeated at a page boundary");
    ties.sort_unstable();
    ties.dedup();
    assert_eq!(ties.len(), 25);
}

async fn rollup_pages_list_every_bucket_row_of_a_period_once(t: TestDb) {
    let events = workload();
    t.db.record_events(&events).await.expect("record");
    let (from, to) = (T0 + 3 * HOUR, T0 + 2 * DAY);
    let mut rows = Vec::new();
    let mut cursor: Option<RollupCursor> = None;
    loop {
        let page =
            t.db.analytics_rollups_page(Period::Hour, from, to, cursor.as_ref(), 5)
                .await
                .expect("page");
        let Some(last) = page.last() else { break };
        cursor = Some(last.cursor.clone());
        rows.extend(page);
    }
    let expected = events
        .iter()
        .filter(|e| {
            let start = Period::Hour.bucket_start(e.at);
            from <= start && start < to
        })
        .count() as i64;
    assert_eq!(rows.iter().map(|r| r.count).sum::<i64>(), expected);
    assert!(rows.iter().all(|r| r.period == Period::Hour));
    let mut keys: Vec<_> = rows.iter().map(|r| (r.bucket_start, &r.dims)).collect();
    let n = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), n, "no row twice");
    assert!(
        rows.windows(2)
            .all(|w| w[0].bucket_start <= w[1].bucket_start),
        "bucket order"
    );
    let latency: i64 = events
        .iter()
        .filter(|e| {
            let start = Period::Hour.bucket_start(e.at);
            from <= start && start < to
        })
        .map(|e| e.latency_us.unwrap_or(0) as i64)
        .sum();
    assert_eq!(rows.iter().map(|r| r.latency_sum_us).sum::<i64>(), latency);
}

backend_tests!(
    event_pages_list_every_event_of_the_range_once_in_time_order,
    rollup_pages_list_every_bucket_row_of_a_period_once,
    series_sum_rollups_per_step,
    drill_down_lists_the_newest_matching_events,
    any_range_counts_exactly_the_events_in_it,
    batches_from_concurrent_writers_add_up,
    dropped_counts_and_oauth_events_are_kept,
    retention_deletes_old_raw_events_and_rollups_only,
);
