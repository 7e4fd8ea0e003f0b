//! `GET /analytics/api/export?from=&to=&format=csv|json|ndjson&data=events|rollups&period=`:
//! the raw events or the rollup rows of a range as a download, for admins.
//!
//! The body is streamed: rows are read a page of [`PAGE`] at a time (keyset pagination, see
//! `Db::analytics_events_page`) and each page is written out before the next is read, so a
//! month of events never sits in memory and each page holds a database connection only for
//! its one query. A database error after the first page cuts the response off (the
//! connection is closed mid-body), so a truncated file can never pass for a complete one.
//!
//! Formats: `json` (the default) is one JSON array of row objects; `ndjson` one object per
//! line; `csv` a header row then one record per row (RFC 4180, with cells a spreadsheet would
//! run as formulas defused: `mcp_oauth_core::analytics::export::csv_cell`). Times are RFC 3339
//! UTC with milliseconds. Rollups are those of one `period` (`minute`, `hour` (default) or
//! `day`) whose bucket starts in the range.

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::CookieJar;
use serde::{Deserialize, Serialize};
use serde_json::json;

use mcp_oauth_core::analytics::export::{csv_record, file_stamp};
use mcp_oauth_core::analytics::summary::rfc3339;
use mcp_oauth_core::analytics::{Millis, Period};
use mcp_oauth_store::{Db, EventCursor, EventRow, RollupCursor, RollupRow};

use super::api::{RangeQuery, parse_range, require_admin};
use crate::state::AppState;

/// Rows read per database query.
pub const PAGE: i64 = 5_000;

#[derive(Debug, Deserialize)]
pub struct ExportQuery {
    pub from: Option<String>,
    pub to: Option<String>,
    pub format: Option<String>,
    pub data: Option<String>,
    pub period: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Csv,
    Json,
    Ndjson,
}

impl Format {
    fn parse(s: Option<&str>) -> Option<Self> {
        match s.unwrap_or("json") {
            "csv" => Some(Self::Csv),
            "json" => Some(Self::Json),
            "ndjson" => Some(Self::Ndjson),
            _ => None,
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Self::Csv => "text/csv; charset=utf-8; header=present",
            Self::Json => "application/json",
            Self::Ndjson => "application/x-ndjson",
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::Json => "json",
            Self::Ndjson => "ndjson",
        }
    }
}

fn period_name(p: Period) -> &'static str {
    match p {
        Period::Minute => "minute",
        Period::Hour => "hour",
        Period::Day => "day",
    }
}

fn parse_period(s: Option<&str>) -> Option<Period> {
    let s = s.unwrap_or("hour");
    Period::ALL.into_iter().find(|p| period_name(*p) == s)
}

/// Which rows, and where the last page ended.
enum Source {
    Events(Option<EventCursor>),
    Rollups(Period, Option<Box<RollupCursor>>),
}

const EVENT_COLUMNS: [&str; 17] = [
    "at",
    "kind",
    "name",
    "detail",
    "outcome",
    "code",
    "user_id",
    "client_id",
    "software",
    "protocol_version",
    "transport",
    "country",
    "latency_us",
    "count",
    "ip",
    "user_agent",
    "request_id",
];

const ROLLUP_COLUMNS: [&str; 15] = [
    "period",
    "bucket_start",
    "kind",
    "name",
    "detail",
    "outcome",
    "code",
    "user_id",
    "client_id",
    "software",
    "protocol_version",
    "transport",
    "country",
    "count",
    "latency_sum_us",
];

/// A raw event as exported: the stored row with its time in RFC 3339.
#[derive(Serialize)]
struct EventOut<'a> {
    at: String,
    kind: &'a str,
    name: &'a str,
    detail: &'a str,
    outcome: &'a str,
    code: &'a str,
    user_id: &'a str,
    client_id: &'a str,
    software: &'a str,
    protocol_version: &'a str,
    transport: &'a str,
    country: &'a str,
    latency_us: Option<i64>,
    count: i64,
    ip: Option<&'a str>,
    user_agent: Option<&'a str>,
    request_id: Option<&'a str>,
}

impl<'a> EventOut<'a> {
    fn of(r: &'a EventRow) -> Self {
        Self {
            at: rfc3339(r.at_ms),
            kind: &r.kind,
            name: &r.name,
            detail: &r.detail,
            outcome: &r.outcome,
            code: &r.code,
            user_id: &r.user_id,
            client_id: &r.client_id,
            software: &r.software,
            protocol_version: &r.protocol_version,
            transport: &r.transport,
            country: &r.country,
            latency_us: r.latency_us,
            count: r.count,
            ip: r.ip.as_deref(),
            user_agent: r.user_agent.as_deref(),
            request_id: r.request_id.as_deref(),
        }
    }

    /// The CSV cells, in `EVENT_COLUMNS` order.
    fn cells(&self) -> [String; 17] {
        let opt = |v: Option<&str>| v.unwrap_or_default().to_owned();
        [
            self.at.clone(),
            self.kind.to_owned(),
            self.name.to_owned(),
            self.detail.to_owned(),
            self.outcome.to_owned(),
            self.code.to_owned(),
            self.user_id.to_owned(),
            self.client_id.to_owned(),
            self.software.to_owned(),
            self.protocol_version.to_owned(),
            self.transport.to_owned(),
            self.country.to_owned(),
            self.latency_us.map(|v| v.to_string()).unwrap_or_default(),
            self.count.to_string(),
            opt(self.ip),
            opt(self.user_agent),
            opt(self.request_id),
        ]
    }
}

/// A rollup row as exported.
#[derive(Serialize)]
struct RollupOut<'a> {
    period: &'static str,
    bucket_start: String,
    kind: &'a str,
    name: &'a str,
    detail: &'a str,
    outcome: &'a str,
    code: &'a str,
    user_id: &'a str,
    client_id: &'a str,
    software: &'a str,
    protocol_version: &'a str,
    transport: &'a str,
    country: &'a str,
    count: i64,
    latency_sum_us: i64,
}

impl<'a> RollupOut<'a> {
    fn of(r: &'a RollupRow) -> Self {
        let d = &r.dims;
        Self {
            period: period_name(r.period),
            bucket_start: rfc3339(r.bucket_start),
            kind: &d.kind,
            name: &d.name,
            detail: &d.detail,
            outcome: &d.outcome,
            code: &d.code,
            user_id: &d.user_id,
            client_id: &d.client_id,
            software: &d.software,
            protocol_version: &d.protocol_version,
            transport: &d.transport,
            country: &d.country,
            count: r.count,
            latency_sum_us: r.latency_sum_us,
        }
    }

    /// The CSV cells, in `ROLLUP_COLUMNS` order.
    fn cells(&self) -> [String; 15] {
        [
            self.period.to_owned(),
            self.bucket_start.clone(),
            self.kind.to_owned(),
            self.name.to_owned(),
            self.detail.to_owned(),
            self.outcome.to_owned(),
            self.code.to_owned(),
            self.user_id.to_owned(),
            self.client_id.to_owned(),
            self.software.to_owned(),
            self.protocol_version.to_owned(),
            self.transport.to_owned(),
            self.country.to_owned(),
            self.count.to_string(),
            self.latency_sum_us.to_string(),
        ]
    }
}

/// An export in progress: the next page to read and how to write it.
struct Export {
    db: Db,
    from: Millis,
    to: Millis,
    format: Format,
    source: Source,
    rows: u64,
    started: bool,
    done: bool,
}

impl Export {
    /// Append one row, as a CSV record or a JSON object (`cells` and `value` of the same row).
    fn push<const N: usize>(
        &mut self,
        out: &mut String,
        cells: impl FnOnce() -> [String; N],
        value: impl FnOnce() -> serde_json::Result<String>,
    ) -> serde_json::Result<()> {
        match self.format {
            Format::Csv => out.push_str(&csv_record(cells().iter().map(String::as_str))),
            Format::Json => {
                out.push_str(if self.rows == 0 { "\n" } else { ",\n" });
                out.push_str(&value()?);
            }
            Format::Ndjson => {
                out.push_str(&value()?);
                out.push('\n');
            }
        }
        self.rows += 1;
        Ok(())
    }

    /// The next piece of the body: the header on the first call, then one page of rows, and
    /// the closing bracket after the last. `None` once everything was written.
    async fn next_chunk(&mut self) -> anyhow::Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        let mut out = String::new();
        if !self.started {
            self.started = true;
            match (self.format, &self.source) {
                (Format::Csv, Source::Events(_)) => out.push_str(&csv_record(EVENT_COLUMNS)),
                (Format::Csv, Source::Rollups(..)) => out.push_str(&csv_record(ROLLUP_COLUMNS)),
                (Format::Json, _) => out.push('['),
                (Format::Ndjson, _) => {}
            }
        }
        let read = match &self.source {
            Source::Events(after) => {
                let (rows, next) = self
                    .db
                    .analytics_events_page(self.from, self.to, *after, PAGE)
                    .await?;
                for r in &rows {
                    let row = EventOut::of(r);
                    self.push(&mut out, || row.cells(), || serde_json::to_string(&row))?;
                }
                if next.is_some() {
                    self.source = Source::Events(next);
                }
                rows.len()
            }
            Source::Rollups(period, after) => {
                let period = *period;
                let rows = self
                    .db
                    .analytics_rollups_page(period, self.from, self.to, after.as_deref(), PAGE)
                    .await?;
                for r in &rows {
                    let row = RollupOut::of(r);
                    self.push(&mut out, || row.cells(), || serde_json::to_string(&row))?;
                }
                if let Some(last) = rows.last() {
                    self.source = Source::Rollups(period, Some(Box::new(last.cursor.clone())));
                }
                rows.len()
            }
        };
        if (read as i64) < PAGE {
            self.done = true;
            if self.format == Format::Json {
                out.push_str(if self.rows == 0 { "]\n" } else { "\n]\n" });
            }
        }
        Ok(Some(Bytes::from(out)))
    }
}

fn invalid(description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"error": "invalid_request", "error_description": description})),
    )
        .into_response()
}

pub async fn export_get(
    State(state): State<AppState>,
    jar: CookieJar,
    Query(q): Query<ExportQuery>,
) -> Response {
    if let Err(refusal) = require_admin(&state, &jar).await {
        return refusal;
    }
    let range = RangeQuery {
        from: q.from,
        to: q.to,
    };
    let (from, to) = match parse_range(&range, state.clock.now_millis()) {
        Ok(r) => r,
        Err(why) => return invalid(why),
    };
    let Some(format) = Format::parse(q.format.as_deref()) else {
        return invalid("`format` must be csv, json or ndjson");
    };
    let (source, what) = match q.data.as_deref().unwrap_or("events") {
        "events" => (Source::Events(None), "events".to_owned()),
        "rollups" => match parse_period(q.period.as_deref()) {
            Some(p) => (
                Source::Rollups(p, None),
                format!("rollups-{}", period_name(p)),
            ),
            None => return invalid("`period` must be minute, hour or day"),
        },
        _ => return invalid("`data` must be events or rollups"),
    };
    let filename = format!(
        "mcp-oauth-{what}-{}-{}.{}",
        file_stamp(&rfc3339(from)),
        file_stamp(&rfc3339(to)),
        format.extension()
    );
    let export = Export {
        db: state.db.clone(),
        from,
        to,
        format,
        source,
        rows: 0,
        started: false,
        done: false,
    };
    let db_health = state.db_health.clone();
    let body = futures::stream::unfold(export, move |mut export| {
        let db_health = db_health.clone();
        async move {
            match export.next_chunk().await {
                Ok(Some(chunk)) => Some((Ok(chunk), export)),
                Ok(None) => None,
                Err(e) => {
                    export.done = true;
                    if !db_health.observe_any(&e) {
                        tracing::error!(error = ?format!("{e:#}"), rows = export.rows, "analytics export failed");
                    }
                    Some((
                        Err(std::io::Error::other("analytics export failed")),
                        export,
                    ))
                }
            }
        }
    });
    let mut r = Body::from_stream(body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_periods_parse_with_their_defaults() {
        assert_eq!(Format::parse(None), Some(Format::Json));
        assert_eq!(Format::parse(Some("csv")), Some(Format::Csv));
        assert_eq!(Format::parse(Some("ndjson")), Some(Format::Ndjson));
        assert_eq!(Format::parse(Some("xml")), None);
        assert_eq!(parse_period(None), Some(Period::Hour));
        assert_eq!(parse_period(Some("minute")), Some(Period::Minute));
        assert_eq!(parse_period(Some("day")), Some(Period::Day));
        assert_eq!(parse_period(Some("week")), None);
    }

    #[test]
    fn csv_and_json_columns_agree() {
        let row = EventRow {
            at_ms: 0,
            kind: "http".into(),
            name: "/token".into(),
            detail: "POST".into(),
            outcome: "ok".into(),
            code: "200".into(),
            user_id: String::new(),
            client_id: "c".into(),
            software: String::new(),
            protocol_version: String::new(),
            transport: String::new(),
            country: "GB".into(),
            latency_us: Some(5),
            count: 1,
            ip: Some("127.0.0.1".into()),
            user_agent: None,
            request_id: Some("r".into()),
        };
        let out = EventOut::of(&row);
        let value = serde_json::to_value(&out).unwrap();
        let keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut columns = EVENT_COLUMNS.to_vec();
        columns.sort_unstable();
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(keys, columns);
        assert_eq!(out.cells()[0], "1970-01-01T00:00:00.000Z");
        assert_eq!(out.cells()[11], "GB");
        assert_eq!(out.cells()[12], "5");
    }
}
