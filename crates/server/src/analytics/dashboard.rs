//! The dashboard at `/analytics`: server-rendered pages for admins (overview, OAuth, tools,
//! users, events), charts as SVG, and `/analytics/live`, a Server-Sent Events stream that
//! pushes the page's panels again whenever they change while the page is open.
//!
//! Every page reads the same figures as the JSON API (`super::summary`), plus the charts'
//! series and what only the dashboard shows (live grants, raw events for drill-downs).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::CookieJar;
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use mcp_oauth_core::analytics::summary::{Breakdown, Summary, rfc3339, tool_breakdown};
use mcp_oauth_core::analytics::{Millis, Period, geo};
use mcp_oauth_store::{EventFilter, EventRow, StoreError};

use super::charts::{self, Line};
use crate::http::error::PageError;
use crate::identity::session;
use crate::state::AppState;

const MINUTE: Millis = 60_000;
const HOUR: Millis = 60 * MINUTE;
const DAY: Millis = 24 * HOUR;

/// The preset ranges, with the rollup period and chart step each reads.
const PRESETS: [(&str, Millis, Period, Millis); 5] = [
    ("1h", HOUR, Period::Minute, MINUTE),
    ("6h", 6 * HOUR, Period::Minute, 5 * MINUTE),
    ("24h", DAY, Period::Hour, HOUR),
    ("7d", 7 * DAY, Period::Hour, 6 * HOUR),
    ("30d", 30 * DAY, Period::Day, DAY),
];

/// How often an open page's panels are rendered again for the live stream.
const LIVE_INTERVAL: Duration = Duration::from_secs(2);
/// A live stream ends after this long; the browser's `EventSource` opens a new one.
const LIVE_MAX: Duration = Duration::from_secs(30 * 60);
/// Live streams one instance serves at once (each holds a connection and renders the page
/// every `LIVE_INTERVAL`): past it, a page simply is not live.
pub const MAX_LIVE_STREAMS: usize = 32;
/// Raw events a drill-down lists.
const EVENTS_SHOWN: i64 = 200;

#[derive(Debug, Clone, Default, Deserialize)]
pub struct DashboardQuery {
    pub range: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub user: Option<String>,
    pub client: Option<String>,
    pub tool: Option<String>,
    /// For `/analytics/live`: the page whose panels to stream.
    pub page: Option<String>,
}

/// The time range a page shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Range {
    /// A preset's name, or `custom`.
    pub key: String,
    pub from: Millis,
    pub to: Millis,
    pub period: Period,
    pub step: Millis,
}

/// `2026-12-01T10:00` (an HTML `datetime-local` value, read as UTC) or RFC 3339.
fn parse_time(s: &str) -> Option<Millis> {
    mcp_oauth_core::analytics::summary::parse_rfc3339(s)
        .or_else(|| mcp_oauth_core::analytics::summary::parse_rfc3339(&format!("{s}:00Z")))
}

/// The range a query asks for: a preset (default 24 h), or `from`/`to`.
pub fn range_of(q: &DashboardQuery, now: Millis) -> Result<Range, &'static str> {
    if q.from.as_deref().is_some_and(|s| !s.is_empty()) {
        let from = q
            .from
            .as_deref()
            .and_then(parse_time)
            .ok_or("`from` is not a time")?;
        let to = match q.to.as_deref().filter(|s| !s.is_empty()) {
            Some(s) => parse_time(s).ok_or("`to` is not a time")?,
            None => now,
        };
        if from >= to {
            return Err("`from` must be before `to`");
        }
        let len = to - from;
        if len > 400 * DAY {
            return Err("a range may span at most 400 days");
        }
        // The finest preset whose length covers it decides the chart's resolution.
        let (_, _, period, step) = PRESETS.iter().copied().find(|p| len <= p.1).unwrap_or((
            "",
            0,
            Period::Day,
            (len / 60).max(DAY) / DAY * DAY,
        ));
        return Ok(Range {
            key: "custom".into(),
            from,
            to,
            period,
            step,
        });
    }
    let key = q.range.as_deref().unwrap_or("24h");
    let (key, len, period, step) = PRESETS
        .iter()
        .copied()
        .find(|p| p.0 == key)
        .ok_or("unknown range")?;
    // `to` is exclusive: one past now, so that what happened this very millisecond is in.
    Ok(Range {
        key: key.into(),
        from: now + 1 - len,
        to: now + 1,
        period,
        step,
    })
}

/// Keep the preset ranges' settled spans summed in memory (`cache::SpanCache::warm`), every
/// [`cache::WARM_EVERY`] until the server stops: with months of events, the first page to
/// ask for a range then reads only its last minutes. Costs a read of each preset range's
/// settled parts per interval (measured with 10 million events on SQLite: about 0.6 s of one
/// core every 45 s); nothing while analytics is off.
pub async fn keep_presets_warm(state: AppState) {
    if !state.settings.analytics.enabled {
        return;
    }
    let mut tick = tokio::time::interval(super::cache::WARM_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = state.clock.now_millis();
        let ranges: Vec<_> = PRESETS
            .iter()
            .map(|&(_, len, period, step)| (now + 1 - len, now + 1, period, step))
            .collect();
        if let Err(e) = state.analytics_cache.warm(&state.db, &ranges, now).await {
            // The database is down, say: pages will read for themselves.
            tracing::debug!(error = %e, "warming the analytics cache failed");
        }
    }
}

/// The pages, in the order of the navigation.
const PAGES: [(&str, &str); 5] = [
    ("overview", "Overview"),
    ("oauth", "OAuth"),
    ("tools", "MCP tools"),
    ("users", "Users"),
    ("events", "Events"),
];

pub struct NavLink {
    pub href: String,
    pub label: &'static str,
    pub current: bool,
}

pub struct ClientView {
    pub name: String,
    pub id: String,
    pub kind: String,
    pub users: u64,
    pub calls: u64,
    pub errors: u64,
    pub last_seen: String,
    pub live_tokens: u64,
    pub expiring: u64,
    pub next_expiry: String,
    pub events_href: String,
}

pub struct ToolView {
    pub name: String,
    pub calls: u64,
    pub users: u64,
    pub error_rate: String,
    pub p50: String,
    pub p90: String,
    pub p95: String,
    pub p99: String,
    pub chart: String,
    pub top_users: String,
    pub top_clients: String,
    pub events_href: String,
}

pub struct UserView {
    pub email: String,
    pub calls: u64,
    pub sessions: u64,
    pub tools: u64,
    pub clients: u64,
    pub last_seen: String,
    pub events_href: String,
}

/// A row of the geography table.
pub struct CountryView {
    pub label: String,
    pub requests: u64,
    pub share: String,
    pub errors: u64,
    pub tool_calls: u64,
    pub users: u64,
}

fn country_label(code: &str) -> String {
    match code {
        geo::PRIVATE => "Private addresses".into(),
        geo::UNKNOWN => "Not in the GeoIP database".into(),
        code => code.to_owned(),
    }
}

pub struct EventView {
    pub at: String,
    pub kind: String,
    pub name: String,
    pub detail: String,
    pub outcome: String,
    pub code: String,
    pub user: String,
    pub client: String,
    pub latency: String,
    pub ip: String,
}

pub struct BreakdownView {
    pub user: String,
    pub client: String,
    pub tool: String,
    pub calls: u64,
    pub errors: u64,
}

/// The panels of one page: rendered into the page, and again for the live stream.
#[derive(Template)]
#[template(path = "analytics/panels.html")]
pub struct Panels {
    pub base_path: String,
    pub page: &'static str,
    pub range_query: String,
    pub summary: Summary,
    pub health_class: &'static str,
    pub health_label: &'static str,
    pub error_rate: String,
    pub p50: String,
    pub p95: String,
    pub p99: String,
    pub live_tokens: u64,
    pub requests_chart: String,
    pub grant_chart: String,
    pub software_chart: String,
    pub protocol_chart: String,
    pub transport_chart: String,
    pub pkce_share: String,
    pub clients: Vec<ClientView>,
    pub tools: Vec<ToolView>,
    pub users: Vec<UserView>,
    pub events: Vec<EventView>,
    pub breakdown: Vec<BreakdownView>,
    /// Whether a GeoIP database is configured (else the geography panel says how).
    pub geoip: bool,
    pub countries: Vec<CountryView>,
    pub filter: String,
}

#[derive(Template)]
#[template(path = "analytics/page.html")]
pub struct DashboardPage<'a> {
    pub base_path: &'a str,
    pub title: &'static str,
    pub nav: Vec<NavLink>,
    pub ranges: Vec<NavLink>,
    pub page: &'static str,
    pub from_value: String,
    pub to_value: String,
    pub range_label: String,
    pub live_url: String,
    pub panels: String,
    pub email: &'a str,
}

fn ms(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 100.0 => format!("{v:.0} ms"),
        Some(v) if v >= 1.0 => format!("{v:.1} ms"),
        Some(v) => format!("{v:.2} ms"),
        None => "–".into(),
    }
}

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        "–".into()
    } else {
        format!("{:.1} %", part as f64 * 100.0 / whole as f64)
    }
}

fn query_string(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs.iter().filter(|(_, v)| !v.is_empty()))
        .finish()
}

/// The range part of a page's links, so that navigating keeps the range.
fn range_query(r: &Range) -> String {
    if r.key == "custom" {
        query_string(&[("from", &rfc3339(r.from)), ("to", &rfc3339(r.to))])
    } else {
        query_string(&[("range", &r.key)])
    }
}

/// Everything a page's panels show, read from the database (public for the panel benchmark).
pub async fn panels(
    state: &AppState,
    page: &'static str,
    range: &Range,
    q: &DashboardQuery,
) -> Result<Panels, StoreError> {
    let db = &state.db;
    let now_ms = state.clock.now_millis();
    let (summary, rows) = super::read_range(
        db,
        Some((&state.analytics_cache, now_ms)),
        range.from,
        range.to,
    )
    .await?;
    let settings = &state.settings.analytics;
    let base = state.settings.base_path().to_owned();
    let rq = range_query(range);
    let names = super::names_of(db, &rows).await?;
    let email_of = |id: &str| -> String {
        names.user_emails.get(id).cloned().unwrap_or_else(|| {
            if id.is_empty() {
                "(none)".into()
            } else {
                id.to_owned()
            }
        })
    };
    let client_of = |id: &str| -> String {
        names
            .client_names
            .get(id)
            .map(|n| format!("{n} ({id})"))
            .unwrap_or_else(|| {
                if id.is_empty() {
                    "(none)".into()
                } else {
                    id.to_owned()
                }
            })
    };
    let events_href = |key: &str, value: &str| {
        format!(
            "{base}/analytics/events?{rq}&{}",
            query_string(&[(key, value)])
        )
    };

    let r = &summary.requests;
    let error_share = if r.total == 0 {
        0.0
    } else {
        r.errors as f64 / r.total as f64
    };
    let p95 = r.p95_ms.unwrap_or(0.0);
    let (health_class, health_label) = if r.total == 0 {
        ("idle", "No traffic")
    } else if error_share >= settings.error_rate_critical || p95 >= settings.p95_critical_ms {
        ("bad", "Unhealthy")
    } else if error_share >= settings.error_rate_warning || p95 >= settings.p95_warning_ms {
        ("warn", "Degraded")
    } else {
        ("good", "Healthy")
    };

    let now_s = state.clock.now();
    let grants = db.live_grants(now_s, now_s + 86_400).await?;
    let live_tokens = grants.iter().map(|g| g.live).sum();

    let mut requests_chart = String::new();
    let mut grant_chart = String::new();
    let (mut software_chart, mut protocol_chart, mut transport_chart) =
        (String::new(), String::new(), String::new());
    let mut clients = Vec::new();
    let mut tools = Vec::new();
    let mut users = Vec::new();
    let mut events = Vec::new();
    let mut breakdown = Vec::new();
    let mut filter = String::new();

    match page {
        "overview" => {
            let series = state
                .analytics_cache
                .series(db, range.period, range.step, range.from, range.to, now_ms)
                .await?;
            let http = series.iter().filter(|p| p.kind == "http");
            requests_chart = charts::line_chart(
                "requests-chart",
                "Requests and errors per step",
                &[
                    Line {
                        label: "requests",
                        class: "s0",
                        points: http.clone().map(|p| (p.at, p.count as f64)).collect(),
                    },
                    Line {
                        label: "errors",
                        class: "err",
                        points: http
                            .filter(|p| p.outcome == "error")
                            .map(|p| (p.at, p.count as f64))
                            .collect(),
                    },
                ],
                range.from,
                range.to,
                range.step,
            );
        }
        "oauth" => {
            let o = &summary.oauth;
            grant_chart = charts::bars(
                "grant-types",
                "Tokens issued per grant type",
                &[
                    ("authorization_code".into(), o.code_exchanges),
                    ("refresh_token".into(), o.refresh_grants),
                    ("client_credentials".into(), o.client_credentials_grants),
                ],
            );
            let ids: Vec<String> = summary
                .clients
                .iter()
                .map(|c| c.client_id.clone())
                .chain(grants.iter().map(|g| g.client_id.clone()))
                .collect();
            let kinds = db.client_kinds(&ids).await?;
            let mut seen = std::collections::BTreeSet::new();
            for c in &summary.clients {
                seen.insert(c.client_id.clone());
                let g = grants.iter().find(|g| g.client_id == c.client_id);
                clients.push(ClientView {
                    name: c.client_name.clone().unwrap_or_else(|| "(unnamed)".into()),
                    id: c.client_id.clone(),
                    kind: kinds
                        .get(&c.client_id)
                        .cloned()
                        .unwrap_or_else(|| "(removed)".into()),
                    users: c.users,
                    calls: c.tool_calls,
                    errors: c.errors,
                    last_seen: c.last_seen.clone(),
                    live_tokens: g.map_or(0, |g| g.live),
                    expiring: g.map_or(0, |g| g.expiring),
                    next_expiry: g
                        .and_then(|g| g.next_expiry)
                        .map(|t| rfc3339(t * 1000))
                        .unwrap_or_default(),
                    events_href: events_href("client", &c.client_id),
                });
            }
            // Clients with live tokens but no activity in the range.
            for g in grants.iter().filter(|g| !seen.contains(&g.client_id)) {
                clients.push(ClientView {
                    name: names
                        .client_names
                        .get(&g.client_id)
                        .cloned()
                        .unwrap_or_else(|| "(unnamed)".into()),
                    id: g.client_id.clone(),
                    kind: kinds.get(&g.client_id).cloned().unwrap_or_default(),
                    users: 0,
                    calls: 0,
                    errors: 0,
                    last_seen: "–".into(),
                    live_tokens: g.live,
                    expiring: g.expiring,
                    next_expiry: g.next_expiry.map(|t| rfc3339(t * 1000)).unwrap_or_default(),
                    events_href: events_href("client", &g.client_id),
                });
            }
        }
        "tools" => {
            let cache = &state.analytics_cache;
            let latency = cache
                .tool_latencies(db, range.period, range.step, range.from, range.to, now_ms)
                .await?;
            let series = cache
                .series(db, range.period, range.step, range.from, range.to, now_ms)
                .await?;
            let all: Vec<Breakdown> = tool_breakdown(&rows);
            for (i, t) in summary.tools.iter().enumerate() {
                let calls: Vec<(Millis, f64)> = series
                    .iter()
                    .filter(|p| p.kind == "mcp" && p.name == "tools/call" && p.detail == t.name)
                    .map(|p| (p.at, p.count as f64))
                    .collect();
                let p95_points: Vec<(Millis, f64)> = latency
                    .iter()
                    .filter(|((tool, _), _)| *tool == t.name)
                    .filter_map(|((_, at), h)| h.quantile_ms(0.95).map(|v| (*at, v)))
                    .collect();
                let chart = format!(
                    "{}{}",
                    charts::line_chart(
                        &format!("tool-{i}-calls"),
                        &format!("{}: calls per step", t.name),
                        &[Line {
                            label: "calls",
                            class: "s0",
                            points: calls
                        }],
                        range.from,
                        range.to,
                        range.step,
                    ),
                    charts::line_chart(
                        &format!("tool-{i}-p95"),
                        &format!("{}: p95 latency (ms) per step", t.name),
                        &[Line {
                            label: "p95 ms",
                            class: "s1",
                            points: p95_points
                        }],
                        range.from,
                        range.to,
                        range.step,
                    )
                );
                let top = |by_user: bool| -> String {
                    let mut sums: std::collections::BTreeMap<&str, u64> = Default::default();
                    for b in all.iter().filter(|b| b.tool == t.name) {
                        *sums
                            .entry(if by_user { &b.user_id } else { &b.client_id })
                            .or_default() += b.calls;
                    }
                    let mut v: Vec<(&str, u64)> = sums.into_iter().collect();
                    v.sort_by_key(|e| std::cmp::Reverse(e.1));
                    v.iter()
                        .take(3)
                        .map(|(id, n)| {
                            let name = if by_user { email_of(id) } else { client_of(id) };
                            format!("{name} ({n})")
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                tools.push(ToolView {
                    name: t.name.clone(),
                    calls: t.calls,
                    users: t.unique_users,
                    error_rate: percent(t.tool_errors + t.protocol_errors, t.calls),
                    p50: ms(t.p50_ms),
                    p90: ms(t.p90_ms),
                    p95: ms(t.p95_ms),
                    p99: ms(t.p99_ms),
                    chart,
                    top_users: top(true),
                    top_clients: top(false),
                    events_href: events_href("tool", &t.name),
                });
            }
            let bars = |id: &str, title: &str, m: &std::collections::BTreeMap<String, u64>| {
                let mut items: Vec<(String, u64)> =
                    m.iter().map(|(k, v)| (k.clone(), *v)).collect();
                items.sort_by_key(|e| std::cmp::Reverse(e.1));
                items.truncate(12);
                charts::bars(id, title, &items)
            };
            software_chart = bars(
                "by-software",
                "MCP messages per client software",
                &summary.mcp.by_software,
            );
            protocol_chart = bars(
                "by-protocol",
                "MCP messages per protocol version",
                &summary.mcp.by_protocol_version,
            );
            transport_chart = bars(
                "by-transport",
                "MCP HTTP requests per transport",
                &summary.mcp.by_transport,
            );
        }
        "users" => {
            for u in &summary.users {
                users.push(UserView {
                    email: u.email.clone(),
                    calls: u.tool_calls,
                    sessions: u.sessions,
                    tools: u.tools_used,
                    clients: u.clients,
                    last_seen: u.last_seen.clone(),
                    events_href: events_href("user", &u.user_id),
                });
            }
        }
        "events" => {
            let f = EventFilter {
                from: range.from,
                to: range.to,
                kind: None,
                user_id: q.user.clone().filter(|s| !s.is_empty()),
                client_id: q.client.clone().filter(|s| !s.is_empty()),
                tool: q.tool.clone().filter(|s| !s.is_empty()),
            };
            let mut parts = Vec::new();
            if let Some(u) = &f.user_id {
                parts.push(format!("user {}", email_of(u)));
            }
            if let Some(c) = &f.client_id {
                parts.push(format!("client {}", client_of(c)));
            }
            if let Some(t) = &f.tool {
                parts.push(format!("tool {t}"));
            }
            filter = if parts.is_empty() {
                "all events".into()
            } else {
                parts.join(", ")
            };
            let rows_shown: Vec<EventRow> = db.analytics_events(&f, EVENTS_SHOWN).await?;
            events = rows_shown
                .into_iter()
                .map(|e| EventView {
                    at: rfc3339(e.at_ms),
                    user: if e.user_id.is_empty() {
                        String::new()
                    } else {
                        email_of(&e.user_id)
                    },
                    client: e.client_id,
                    kind: e.kind,
                    name: e.name,
                    detail: e.detail,
                    outcome: e.outcome,
                    code: e.code,
                    latency: e
                        .latency_us
                        .map(|us| ms(Some(us as f64 / 1000.0)))
                        .unwrap_or_default(),
                    ip: e.ip.unwrap_or_default(),
                })
                .collect();
            breakdown = tool_breakdown(&rows)
                .into_iter()
                .filter(|b| f.user_id.as_deref().is_none_or(|u| u == b.user_id))
                .filter(|b| f.client_id.as_deref().is_none_or(|c| c == b.client_id))
                .filter(|b| f.tool.as_deref().is_none_or(|t| t == b.tool))
                .take(100)
                .map(|b| BreakdownView {
                    user: email_of(&b.user_id),
                    client: client_of(&b.client_id),
                    tool: b.tool,
                    calls: b.calls,
                    errors: b.errors,
                })
                .collect();
        }
        _ => {}
    }

    let countries = summary
        .geography
        .iter()
        .map(|c| CountryView {
            label: country_label(&c.country),
            requests: c.requests,
            share: percent(c.requests, summary.requests.total),
            errors: c.errors,
            tool_calls: c.tool_calls,
            users: c.users,
        })
        .collect();
    Ok(Panels {
        geoip: state.geoip.is_some(),
        countries,
        page,
        range_query: rq,
        error_rate: percent(r.errors, r.total),
        p50: ms(r.p50_ms),
        p95: ms(r.p95_ms),
        p99: ms(r.p99_ms),
        pkce_share: summary
            .oauth
            .pkce_s256_share
            .map_or_else(|| "–".into(), |s| format!("{:.1} %", s * 100.0)),
        health_class,
        health_label,
        live_tokens,
        requests_chart,
        grant_chart,
        software_chart,
        protocol_chart,
        transport_chart,
        clients,
        tools,
        users,
        events,
        breakdown,
        filter,
        summary,
        base_path: base,
    })
}

fn page_of(name: &str) -> Option<&'static str> {
    PAGES.iter().map(|p| p.0).find(|p| *p == name)
}

/// The signed-in admin; the sign-in page for anonymous visitors, 403 for others (`what` names
/// the page in the refusal).
pub(crate) async fn admin_or_refusal(
    state: &AppState,
    jar: &CookieJar,
    return_to: &str,
    what: &str,
) -> Result<session::CurrentUser, Response> {
    let user = session::current_user(state, jar)
        .await
        .map_err(|e| PageError::from(e).into_response())?;
    match user {
        None => {
            let login = format!(
                "{}/login?{}",
                state.settings.base_path(),
                query_string(&[("return_to", return_to)])
            );
            Err(Redirect::to(&login).into_response())
        }
        Some(u) if !super::api::is_admin(state, &u) => {
            Err(PageError::forbidden(format!("{what} is for administrators.")).into_response())
        }
        Some(u) => Ok(u),
    }
}

/// The pages may run our script (live updates) and connect back to us; nothing else.
pub(crate) fn dashboard_csp(r: &mut Response) {
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        ),
    );
}

/// `GET /analytics` and `GET /analytics/{page}`.
pub async fn page_get(
    State(state): State<AppState>,
    jar: CookieJar,
    path: Option<axum::extract::Path<String>>,
    Query(q): Query<DashboardQuery>,
) -> Response {
    let name = path.map_or_else(|| "overview".to_owned(), |p| p.0);
    let base = state.settings.base_path().to_owned();
    let Some(page) = page_of(&name) else {
        return PageError::not_found().into_response();
    };
    let here = format!(
        "{base}/analytics{}",
        if page == "overview" {
            String::new()
        } else {
            format!("/{page}")
        }
    );
    let user = match admin_or_refusal(&state, &jar, &here, "The analytics dashboard").await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let range = match range_of(&q, state.clock.now_millis()) {
        Ok(r) => r,
        Err(why) => return PageError::bad_request("Invalid range", why).into_response(),
    };
    let panels = match panels(&state, page, &range, &q).await {
        Ok(p) => p,
        Err(e) => return PageError::from(e).into_response(),
    };
    let panels_html = match panels.render() {
        Ok(h) => h,
        Err(e) => return PageError::Internal(e.into()).into_response(),
    };
    let rq = range_query(&range);
    let drill = query_string(&[
        ("user", q.user.as_deref().unwrap_or("")),
        ("client", q.client.as_deref().unwrap_or("")),
        ("tool", q.tool.as_deref().unwrap_or("")),
    ]);
    let nav = PAGES
        .iter()
        .map(|(p, label)| NavLink {
            href: format!(
                "{base}/analytics{}?{rq}",
                if *p == "overview" {
                    String::new()
                } else {
                    format!("/{p}")
                }
            ),
            label,
            current: *p == page,
        })
        .collect();
    let ranges = PRESETS
        .iter()
        .map(|(key, ..)| NavLink {
            href: format!(
                "{here}?{}",
                [query_string(&[("range", key)]), drill.clone()]
                    .iter()
                    .filter(|s| !s.is_empty())
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("&")
            ),
            label: key,
            current: range.key == *key,
        })
        .collect();
    let live_url = format!(
        "{base}/analytics/live?{}",
        [query_string(&[("page", page)]), rq.clone(), drill]
            .iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect::<Vec<_>>()
            .join("&")
    );
    let datetime_local = |t: Millis| rfc3339(t).get(..16).unwrap_or_default().to_owned();
    let html = DashboardPage {
        base_path: &base,
        title: PAGES
            .iter()
            .find(|p| p.0 == page)
            .map_or("Analytics", |p| p.1),
        nav,
        ranges,
        page,
        from_value: datetime_local(range.from),
        to_value: datetime_local(range.to),
        range_label: format!("{} to {} (UTC)", rfc3339(range.from), rfc3339(range.to)),
        live_url,
        panels: panels_html,
        email: &user.email,
    }
    .render();
    match html {
        Ok(h) => {
            let mut r = Html(h).into_response();
            dashboard_csp(&mut r);
            r
        }
        Err(e) => PageError::Internal(e.into()).into_response(),
    }
}

/// `GET /analytics/live?page=…&range=…`: the page's panels, pushed again whenever they
/// change. A preset range slides with the clock; a custom one stays put.
pub async fn live_get(
    State(state): State<AppState>,
    jar: CookieJar,
    Query(q): Query<DashboardQuery>,
) -> Response {
    if let Err(r) = super::api::require_admin(&state, &jar).await {
        return r;
    }
    let Some(page) = q.page.as_deref().and_then(page_of) else {
        return (StatusCode::BAD_REQUEST, "unknown page").into_response();
    };
    if let Err(why) = range_of(&q, state.clock.now_millis()) {
        return (StatusCode::BAD_REQUEST, why).into_response();
    }
    let permit = match live_permit(&state) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let shutdown = state.shutdown.clone();
    live_panels(shutdown, permit, move || {
        let (state, q) = (state.clone(), q.clone());
        async move {
            // A preset range slides with the clock, so it is read again each time.
            let range = range_of(&q, state.clock.now_millis()).ok()?;
            panels(&state, page, &range, &q).await.ok()?.render().ok()
        }
    })
}

/// A permit to serve one more live page (`live_streams`), or the 503 that makes the
/// browser's `EventSource` retry later: the page still works, it is just not live.
pub(crate) fn live_permit(state: &AppState) -> Result<OwnedSemaphorePermit, Box<Response>> {
    state.live_streams.clone().try_acquire_owned().map_err(|_| {
        Box::new(
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "30")],
                "too many live pages",
            )
                .into_response(),
        )
    })
}

/// Server-Sent Events that push `render`'s HTML as a `panels` event every `LIVE_INTERVAL`
/// when it has changed (`None`: nothing to show this time), until `LIVE_MAX` has passed (the
/// browser then opens a new stream) or the server stops, holding `permit` meanwhile.
pub(crate) fn live_panels<R, F>(
    shutdown: tokio_util::sync::CancellationToken,
    permit: OwnedSemaphorePermit,
    render: R,
) -> Response
where
    R: Fn() -> F + Send + Sync + 'static,
    F: Future<Output = Option<String>> + Send + 'static,
{
    let deadline = tokio::time::Instant::now() + LIVE_MAX;
    let stream = futures::stream::unfold(
        (render, None::<String>, permit),
        move |(render, last, permit)| {
            let shutdown = shutdown.clone();
            async move {
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => return None,
                        () = tokio::time::sleep(LIVE_INTERVAL) => {}
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return None;
                    }
                    let Some(html) = render().await else { continue };
                    if last.as_deref() == Some(html.as_str()) {
                        continue;
                    }
                    let event = SseEvent::default().event("panels").data(html.clone());
                    return Some((Ok::<_, Infallible>(event), (render, Some(html), permit)));
                }
            }
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// The live-stream bound, shared by the instance.
pub fn live_streams() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(MAX_LIVE_STREAMS))
}

/// `GET /static/analytics.js`: applies pushed panels to the open page.
pub async fn script() -> Response {
    let mut r = include_str!("../../static/analytics.js").into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(range: Option<&str>, from: Option<&str>, to: Option<&str>) -> DashboardQuery {
        DashboardQuery {
            range: range.map(Into::into),
            from: from.map(Into::into),
            to: to.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn presets_slide_with_now_and_custom_ranges_are_read_as_utc() {
        let now = 1_700_000_000_000;
        let r = range_of(&q(None, None, None), now).unwrap();
        assert_eq!(
            (r.key.as_str(), r.from, r.to),
            ("24h", now + 1 - DAY, now + 1)
        );
        let r = range_of(&q(Some("1h"), None, None), now).unwrap();
        assert_eq!((r.period, r.step), (Period::Minute, MINUTE));
        let r = range_of(
            &q(None, Some("2023-11-14T10:00"), Some("2023-11-14T12:00")),
            now,
        )
        .unwrap();
        assert_eq!(r.key, "custom");
        assert_eq!(r.to - r.from, 2 * HOUR);
        assert_eq!(r.step, 5 * MINUTE, "two hours read like the 6 h preset");
        assert!(range_of(&q(Some("2y"), None, None), now).is_err());
        assert!(
            range_of(
                &q(None, Some("2023-11-14T12:00"), Some("2023-11-14T10:00")),
                now
            )
            .is_err()
        );
    }
}
