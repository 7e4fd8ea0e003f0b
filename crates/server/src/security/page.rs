//! The security page at `/security` (administrators only): the events of a range, filtered by
//! level, type, address, user and client; events over time by type (SVG); the top offending
//! addresses, users and clients; the blocked addresses, each with an unblock button; and a
//! live feed (`/security/live`, Server-Sent Events pushing the panels again when they change,
//! through the dashboard's script). From it an operator acknowledges or resolves an event with
//! a note (`/security/events/{id}`), and revokes every token of a user or of a client after a
//! confirmation (`/security/revoke`).
//!
//! Every form carries the CSRF token and is checked with `csrf::verify_post`; every change is
//! a log line naming the administrator.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::CookieJar;
use serde::Deserialize;

use mcp_oauth_core::analytics::Millis;
use mcp_oauth_core::analytics::summary::rfc3339;
use mcp_oauth_core::security::events::{Level, SecurityEventKind};
use mcp_oauth_store::{GrantOwner, SecurityFilter, SecurityTop, Triage};

use crate::analytics::charts::{self, Line};
use crate::analytics::dashboard::{
    DashboardQuery, Range, admin_or_refusal, dashboard_csp, live_panels, live_permit,
};
use crate::http::error::PageError;
use crate::http::extract::PageForm;
use crate::identity::{csrf, session};
use crate::security::Requester;
use crate::state::AppState;

/// Events the feed lists.
const EVENTS_SHOWN: i64 = 100;
/// Rows in each top-offenders table.
const TOP_SHOWN: i64 = 10;
/// Types drawn as lines of their own; the rest are summed as "other".
const CHART_TYPES: usize = 4;
const PRESETS: [&str; 5] = ["1h", "6h", "24h", "7d", "30d"];

#[derive(Debug, Clone, Default, Deserialize)]
pub struct SecurityQuery {
    pub range: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    /// This level and above.
    pub level: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub ip: Option<String>,
    /// An email address or a user id.
    pub user: Option<String>,
    pub client: Option<String>,
}

impl SecurityQuery {
    /// The set fields as query parameters, in a fixed order.
    fn pairs(&self) -> Vec<(&'static str, &str)> {
        [
            ("range", &self.range),
            ("from", &self.from),
            ("to", &self.to),
            ("level", &self.level),
            ("type", &self.kind),
            ("ip", &self.ip),
            ("user", &self.user),
            ("client", &self.client),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().filter(|v| !v.is_empty()).map(|v| (k, v)))
        .collect()
    }

    fn with(&self, key: &str, value: &str) -> String {
        let mut pairs: Vec<(&str, &str)> = self
            .pairs()
            .into_iter()
            .filter(|(k, _)| *k != key)
            .collect();
        pairs.push((key, value));
        query_string(&pairs)
    }
}

fn query_string(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

fn blank(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// The range and the store's filter `q` asks for; `Err` says what is wrong with it.
async fn filter_of(
    state: &AppState,
    q: &SecurityQuery,
) -> Result<Result<(Range, SecurityFilter), String>, PageError> {
    let dq = DashboardQuery {
        range: q.range.clone(),
        from: q.from.clone(),
        to: q.to.clone(),
        ..DashboardQuery::default()
    };
    let range = match crate::analytics::dashboard::range_of(&dq, state.clock.now_millis()) {
        Ok(r) => r,
        Err(why) => return Ok(Err(why.to_owned())),
    };
    let kind = match blank(&q.kind) {
        Some(k) if SecurityEventKind::parse(k).is_none() => {
            return Ok(Err(format!("{k:?} is not an event type")));
        }
        other => other.map(str::to_owned),
    };
    let min_level = match blank(&q.level) {
        Some(l) => match Level::parse(l) {
            Some(l) => Some(l),
            None => return Ok(Err(format!("{l:?} is not a level"))),
        },
        None => None,
    };
    let ip = match blank(&q.ip) {
        Some(ip) => match ip.parse::<std::net::IpAddr>() {
            Ok(ip) => Some(ip.to_string()),
            Err(_) => return Ok(Err(format!("{ip:?} is not an IP address"))),
        },
        None => None,
    };
    let user_id = match blank(&q.user) {
        Some(u) if u.contains('@') => {
            let email = crate::identity::normalize_email(u).unwrap_or_default();
            match state.db.find_user_by_email(&email).await? {
                Some(user) => Some(user.id),
                None => return Ok(Err(format!("no user has the email {u:?}"))),
            }
        }
        other => other.map(str::to_owned),
    };
    Ok(Ok((
        range.clone(),
        SecurityFilter {
            from: range.from,
            to: range.to,
            kind,
            min_level,
            ip,
            user_id,
            client_id: blank(&q.client).map(str::to_owned),
            after_id: None,
        },
    )))
}

struct TopRow {
    label: String,
    filter_href: String,
    events: i64,
    max_score: i64,
    /// The revoke confirmation for a user or client.
    revoke_href: Option<String>,
}

struct BlockView {
    ip: String,
    until: String,
    reason: String,
    by: String,
    strikes: i64,
}

struct EventView {
    href: String,
    time: String,
    kind: String,
    level: String,
    score: i64,
    ip: String,
    user: String,
    client: String,
    evidence: String,
    status: &'static str,
}

#[derive(Template)]
#[template(path = "security/panels.html")]
struct Panels {
    base_path: String,
    csrf: String,
    total: usize,
    critical: usize,
    warning: usize,
    chart: String,
    top_ips: Vec<TopRow>,
    top_users: Vec<TopRow>,
    top_clients: Vec<TopRow>,
    blocks: Vec<BlockView>,
    events: Vec<EventView>,
}

/// Emails of user ids, looked up once per render.
struct Emails<'a> {
    state: &'a AppState,
    known: HashMap<String, String>,
}

impl Emails<'_> {
    async fn of(&mut self, user_id: &str) -> Result<String, PageError> {
        if let Some(e) = self.known.get(user_id) {
            return Ok(e.clone());
        }
        let email = self
            .state
            .db
            .find_user(user_id)
            .await?
            .map_or_else(|| user_id.to_owned(), |u| u.email);
        self.known.insert(user_id.to_owned(), email.clone());
        Ok(email)
    }
}

async fn panels(
    state: &AppState,
    q: &SecurityQuery,
    range: &Range,
    filter: &SecurityFilter,
    csrf: String,
) -> Result<Panels, PageError> {
    let base = state.settings.base_path().to_owned();
    let db = &state.db;
    let rows = db.security_events(filter, EVENTS_SHOWN).await?;
    let counts = db.security_event_counts(filter, range.step).await?;

    // The chart: the most frequent types as lines, the rest as one.
    let mut per_type: HashMap<&str, i64> = HashMap::new();
    for (kind, _, n) in &counts {
        *per_type.entry(kind.as_str()).or_default() += n;
    }
    let mut ranked: Vec<(&str, i64)> = per_type.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let drawn: Vec<&str> = ranked.iter().take(CHART_TYPES).map(|t| t.0).collect();
    let classes = ["s0", "s1", "s2", "s3"];
    let mut lines: Vec<Line<'_>> = drawn
        .iter()
        .zip(classes)
        .map(|(kind, class)| Line {
            label: kind,
            class,
            points: counts
                .iter()
                .filter(|(k, ..)| k == kind)
                .map(|(_, at, n)| (*at, *n as f64))
                .collect(),
        })
        .collect();
    if ranked.len() > CHART_TYPES {
        lines.push(Line {
            label: "other",
            class: "err",
            points: counts
                .iter()
                .filter(|(k, ..)| !drawn.contains(&k.as_str()))
                .map(|(_, at, n)| (*at, *n as f64))
                .collect(),
        });
    }
    let chart = charts::line_chart(
        "security-chart",
        "Security events over time, by type",
        &lines,
        range.from,
        range.to,
        range.step,
    );

    let total: i64 = ranked.iter().map(|t| t.1).sum();
    let levels = db.security_top(filter, SecurityTop::Level, 4).await?;
    let at_level = |level: Level| {
        levels
            .iter()
            .find(|(l, ..)| l == level.as_str())
            .map_or(0, |(_, n, _)| usize::try_from(*n).unwrap_or(0))
    };
    let (critical, warning) = (at_level(Level::Critical), at_level(Level::Warning));

    let mut emails = Emails {
        state,
        known: HashMap::new(),
    };
    let here = format!("{base}/security");
    let top = |by: SecurityTop| {
        let f = filter.clone();
        async move { db.security_top(&f, by, TOP_SHOWN).await }
    };
    let top_ips = top(SecurityTop::Ip)
        .await?
        .into_iter()
        .map(|(ip, events, max_score)| TopRow {
            filter_href: format!("{here}?{}", q.with("ip", &ip)),
            label: ip,
            events,
            max_score,
            revoke_href: None,
        })
        .collect();
    let mut top_users = Vec::new();
    for (user_id, events, max_score) in top(SecurityTop::User).await? {
        top_users.push(TopRow {
            filter_href: format!("{here}?{}", q.with("user", &user_id)),
            revoke_href: Some(format!(
                "{here}/revoke?{}",
                query_string(&[("user", &user_id)])
            )),
            label: emails.of(&user_id).await?,
            events,
            max_score,
        });
    }
    let top_clients = top(SecurityTop::Client)
        .await?
        .into_iter()
        .map(|(client, events, max_score)| TopRow {
            filter_href: format!("{here}?{}", q.with("client", &client)),
            revoke_href: Some(format!(
                "{here}/revoke?{}",
                query_string(&[("client", &client)])
            )),
            label: client,
            events,
            max_score,
        })
        .collect();

    let blocks = db
        .active_ip_blocks(state.clock.now_millis(), 500)
        .await?
        .into_iter()
        .map(|b| BlockView {
            until: b
                .expires_at
                .map_or_else(|| "until unblocked".to_owned(), rfc3339),
            ip: b.ip,
            reason: b.reason,
            by: b.created_by,
            strikes: b.strikes,
        })
        .collect();

    let mut events = Vec::with_capacity(rows.len());
    for r in rows {
        let user = match &r.user_id {
            Some(id) => emails.of(id).await?,
            None => String::new(),
        };
        events.push(EventView {
            href: format!("{here}/events/{}", r.id),
            time: rfc3339(r.at_ms),
            status: match (r.resolved_at, r.acknowledged_at) {
                (Some(_), _) => "resolved",
                (None, Some(_)) => "acknowledged",
                _ => "open",
            },
            kind: r.kind,
            level: r.level,
            score: r.score,
            ip: r.ip.unwrap_or_default(),
            user,
            client: r.client_id.unwrap_or_default(),
            evidence: r.evidence.to_string(),
        });
    }
    Ok(Panels {
        base_path: base,
        csrf,
        total: usize::try_from(total).unwrap_or(0),
        critical,
        warning,
        chart,
        top_ips,
        top_users,
        top_clients,
        blocks,
        events,
    })
}

struct Link {
    href: String,
    label: &'static str,
    current: bool,
}

#[derive(Template)]
#[template(path = "security/page.html")]
struct SecurityPage<'a> {
    base_path: &'a str,
    email: &'a str,
    ranges: Vec<Link>,
    levels: Vec<(&'static str, bool)>,
    kinds: Vec<(&'static str, bool)>,
    q: &'a SecurityQuery,
    range_label: String,
    /// What is wrong with the filters, shown instead of the panels.
    problem: Option<String>,
    live_url: String,
    panels: String,
}

/// An HTML page for administrators: the dashboard's policy (our script, no framing).
fn page_response(jar: CookieJar, html: String) -> Response {
    let mut r = (jar, Html(html)).into_response();
    dashboard_csp(&mut r);
    r
}

fn render_panels(p: &Panels) -> Result<String, PageError> {
    p.render().map_err(|e| PageError::Internal(e.into()))
}

/// `GET /security`.
pub async fn page_get(
    State(state): State<AppState>,
    jar: CookieJar,
    Query(q): Query<SecurityQuery>,
) -> Response {
    match page(&state, jar, q).await {
        Ok(r) | Err(r) => r,
    }
}

async fn page(state: &AppState, jar: CookieJar, q: SecurityQuery) -> Result<Response, Response> {
    let base = state.settings.base_path().to_owned();
    let here = format!("{base}/security");
    let return_to = match q.pairs().is_empty() {
        true => here.clone(),
        false => format!("{here}?{}", query_string(&q.pairs())),
    };
    let user = admin_or_refusal(state, &jar, &return_to, "The security page").await?;
    let (token, jar) = csrf::token(jar);
    let fail = |e: PageError| e.into_response();
    let (range_label, problem, panels) = match filter_of(state, &q).await.map_err(fail)? {
        Ok((range, filter)) => {
            let p = panels(state, &q, &range, &filter, token)
                .await
                .map_err(fail)?;
            let label = format!("{} to {} (UTC)", rfc3339(range.from), rfc3339(range.to));
            (label, None, render_panels(&p).map_err(fail)?)
        }
        Err(why) => (String::new(), Some(why), String::new()),
    };
    let current_range = q.range.as_deref().unwrap_or("24h");
    let custom = blank(&q.from).is_some();
    let ranges = PRESETS
        .iter()
        .map(|key| {
            let mut rq = q.clone();
            rq.from = None;
            rq.to = None;
            Link {
                href: format!("{here}?{}", rq.with("range", key)),
                label: key,
                current: !custom && *key == current_range,
            }
        })
        .collect();
    let chosen_level = blank(&q.level);
    let chosen_kind = blank(&q.kind);
    let html = SecurityPage {
        base_path: &base,
        email: &user.email,
        ranges,
        levels: Level::ALL
            .iter()
            .map(|l| (l.as_str(), chosen_level == Some(l.as_str())))
            .collect(),
        kinds: SecurityEventKind::ALL
            .iter()
            .map(|k| (k.as_str(), chosen_kind == Some(k.as_str())))
            .collect(),
        q: &q,
        range_label,
        live_url: format!("{here}/live?{}", query_string(&q.pairs())),
        problem,
        panels,
    }
    .render()
    .map_err(|e| PageError::Internal(e.into()).into_response())?;
    Ok(page_response(jar, html))
}

/// `GET /security/live?…`: the page's panels, pushed again whenever they change. Shares the
/// dashboard's bound on live streams.
pub async fn live_get(
    State(state): State<AppState>,
    jar: CookieJar,
    Query(q): Query<SecurityQuery>,
) -> Response {
    if let Err(r) = crate::analytics::api::require_admin(&state, &jar).await {
        return r;
    }
    match filter_of(&state, &q).await {
        Ok(Ok(_)) => {}
        Ok(Err(why)) => return (StatusCode::BAD_REQUEST, why).into_response(),
        Err(e) => return e.into_response(),
    }
    let permit = match live_permit(&state) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let (token, _) = csrf::token(jar);
    let shutdown = state.shutdown.clone();
    live_panels(shutdown, permit, move || {
        let (state, q, token) = (state.clone(), q.clone(), token.clone());
        async move {
            // A preset range slides with the clock, so it is read again each time.
            let (range, filter) = filter_of(&state, &q).await.ok()?.ok()?;
            let panels = panels(&state, &q, &range, &filter, token).await.ok()?;
            panels.render().ok()
        }
    })
}

/// An error as the page a browser gets.
fn refusal(e: impl Into<PageError>) -> Response {
    e.into().into_response()
}

/// The administrator behind a form post, once its CSRF token and origin are checked.
async fn admin_posting(
    state: &AppState,
    who: &Requester,
    form_name: &'static str,
    jar: &CookieJar,
    headers: &HeaderMap,
    csrf_token: Option<&str>,
) -> Result<session::CurrentUser, Response> {
    let here = format!("{}/security", state.settings.base_path());
    let user = admin_or_refusal(state, jar, &here, "The security page").await?;
    if !csrf::verify_post(state, who, form_name, jar, headers, csrf_token) {
        return Err(PageError::forbidden(
            "The form has expired. Go back, reload the page and try again.",
        )
        .into_response());
    }
    Ok(user)
}

#[derive(Deserialize)]
pub struct UnblockForm {
    csrf: Option<String>,
    ip: String,
}

/// `POST /security/unblock`: end an address's block (on every instance within a second).
pub async fn unblock_post(
    State(state): State<AppState>,
    who: Requester,
    headers: HeaderMap,
    jar: CookieJar,
    PageForm(form): PageForm<UnblockForm>,
) -> Result<Response, Response> {
    let csrf = form.csrf.as_deref();
    let admin = admin_posting(&state, &who, "unblock", &jar, &headers, csrf).await?;
    let Ok(ip) = form.ip.trim().parse::<std::net::IpAddr>() else {
        return Err(refusal(PageError::bad_request(
            "Invalid address",
            "That is not an IP address.",
        )));
    };
    let was_blocked = state
        .db
        .unblock_ip(&ip.to_string(), state.clock.now_millis())
        .await
        .map_err(refusal)?;
    tracing::info!(admin = %admin.id, %ip, was_blocked, "administrator unblocked an address");
    Ok(Redirect::to(&format!("{}/security", state.settings.base_path())).into_response())
}

#[derive(Template)]
#[template(path = "security/event.html")]
struct EventPage<'a> {
    base_path: &'a str,
    csrf: &'a str,
    id: i64,
    time: String,
    kind: &'a str,
    level: &'a str,
    score: i64,
    ip: &'a str,
    user: String,
    client: &'a str,
    request_id: &'a str,
    evidence: String,
    acknowledged: Option<String>,
    resolved: Option<String>,
    note: &'a str,
}

/// `GET /security/events/{id}`: one event, with its triage.
pub async fn event_get(
    State(state): State<AppState>,
    jar: CookieJar,
    Path(id): Path<i64>,
) -> Response {
    let here = format!("{}/security/events/{id}", state.settings.base_path());
    if let Err(r) = admin_or_refusal(&state, &jar, &here, "The security page").await {
        return r;
    }
    match event_page(&state, jar, id).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn event_page(state: &AppState, jar: CookieJar, id: i64) -> Result<Response, PageError> {
    let Some(e) = state.db.security_event(id).await? else {
        return Err(PageError::not_found());
    };
    let mut emails = Emails {
        state,
        known: HashMap::new(),
    };
    let user = match &e.user_id {
        Some(u) => emails.of(u).await?,
        None => String::new(),
    };
    let by = |at: Option<Millis>, by: &Option<String>| {
        at.map(|t| format!("{} by {}", rfc3339(t), by.as_deref().unwrap_or("?")))
    };
    let acknowledged = match (&e.acknowledged_at, &e.acknowledged_by) {
        (Some(t), Some(u)) => Some(format!("{} by {}", rfc3339(*t), emails.of(u).await?)),
        _ => by(e.acknowledged_at, &e.acknowledged_by),
    };
    let resolved = match (&e.resolved_at, &e.resolved_by) {
        (Some(t), Some(u)) => Some(format!("{} by {}", rfc3339(*t), emails.of(u).await?)),
        _ => by(e.resolved_at, &e.resolved_by),
    };
    let (token, jar) = csrf::token(jar);
    let html = crate::web::render(&EventPage {
        base_path: state.settings.base_path(),
        csrf: &token,
        id: e.id,
        time: rfc3339(e.at_ms),
        kind: &e.kind,
        level: &e.level,
        score: e.score,
        ip: e.ip.as_deref().unwrap_or(""),
        user,
        client: e.client_id.as_deref().unwrap_or(""),
        request_id: e.request_id.as_deref().unwrap_or(""),
        evidence: serde_json::to_string_pretty(&e.evidence).unwrap_or_default(),
        acknowledged,
        resolved,
        note: e.note.as_deref().unwrap_or(""),
    })?;
    Ok(page_response(jar, html))
}

#[derive(Deserialize)]
pub struct TriageForm {
    csrf: Option<String>,
    action: String,
    note: Option<String>,
}

/// Notes are for people: a paragraph, not a document.
const NOTE_MAX_CHARS: usize = 2_000;

/// `POST /security/events/{id}`: acknowledge or resolve it, with an optional note.
pub async fn event_post(
    State(state): State<AppState>,
    who: Requester,
    headers: HeaderMap,
    jar: CookieJar,
    Path(id): Path<i64>,
    PageForm(form): PageForm<TriageForm>,
) -> Result<Response, Response> {
    let csrf = form.csrf.as_deref();
    let admin = admin_posting(&state, &who, "triage", &jar, &headers, csrf).await?;
    let action = match form.action.as_str() {
        "acknowledge" => Triage::Acknowledge,
        "resolve" => Triage::Resolve,
        _ => {
            return Err(refusal(PageError::bad_request(
                "Invalid action",
                "Acknowledge or resolve.",
            )));
        }
    };
    let note = form
        .note
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty());
    if note.is_some_and(|n| n.chars().count() > NOTE_MAX_CHARS) {
        return Err(refusal(PageError::bad_request(
            "Note too long",
            format!("A note is at most {NOTE_MAX_CHARS} characters."),
        )));
    }
    let found = state
        .db
        .triage_security_event(id, action, &admin.id, state.clock.now_millis(), note)
        .await
        .map_err(refusal)?;
    if !found {
        return Err(refusal(PageError::not_found()));
    }
    tracing::info!(admin = %admin.id, event = id, action = form.action, "administrator triaged a security event");
    let here = format!("{}/security/events/{id}", state.settings.base_path());
    Ok(Redirect::to(&here).into_response())
}

#[derive(Debug, Deserialize)]
pub struct RevokeQuery {
    user: Option<String>,
    client: Option<String>,
}

#[derive(Template)]
#[template(path = "security/revoke.html")]
struct RevokePage<'a> {
    base_path: &'a str,
    csrf: &'a str,
    /// `user` or `client`.
    kind: &'a str,
    id: &'a str,
    /// What the operator recognises: the email, or the client's id.
    label: String,
    live_grants: i64,
    /// After the revocation: how many grants it revoked.
    revoked: Option<u64>,
}

/// Whose grants a revoke request names, and how to show them.
async fn owner_of<'a>(
    state: &AppState,
    q: &'a RevokeQuery,
) -> Result<(&'static str, &'a str, String), PageError> {
    match (blank(&q.user), blank(&q.client)) {
        (Some(user_id), None) => {
            let user = state
                .db
                .find_user(user_id)
                .await?
                .ok_or_else(PageError::not_found)?;
            Ok(("user", user_id, user.email))
        }
        (None, Some(client_id)) => {
            state
                .db
                .find_client(client_id)
                .await?
                .ok_or_else(PageError::not_found)?;
            Ok(("client", client_id, client_id.to_owned()))
        }
        _ => Err(PageError::bad_request(
            "Invalid request",
            "Name one user or one client.",
        )),
    }
}

fn grant_owner<'a>(kind: &str, id: &'a str) -> GrantOwner<'a> {
    if kind == "user" {
        GrantOwner::User(id)
    } else {
        GrantOwner::Client(id)
    }
}

/// `GET /security/revoke?user=…` or `?client=…`: what revoking would do, and the button.
pub async fn revoke_get(
    State(state): State<AppState>,
    jar: CookieJar,
    Query(q): Query<RevokeQuery>,
) -> Response {
    let here = format!("{}/security", state.settings.base_path());
    if let Err(r) = admin_or_refusal(&state, &jar, &here, "The security page").await {
        return r;
    }
    let page = async {
        let (kind, id, label) = owner_of(&state, &q).await?;
        let live_grants = state
            .db
            .live_grants_of(grant_owner(kind, id), state.clock.now())
            .await?;
        let (token, jar) = csrf::token(jar);
        let html = crate::web::render(&RevokePage {
            base_path: state.settings.base_path(),
            csrf: &token,
            kind,
            id,
            label,
            live_grants,
            revoked: None,
        })?;
        Ok::<_, PageError>(page_response(jar, html))
    };
    page.await.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Deserialize)]
pub struct RevokeForm {
    csrf: Option<String>,
    user: Option<String>,
    client: Option<String>,
    /// The confirmation: the form's button sends `yes`.
    confirm: Option<String>,
}

/// `POST /security/revoke`: revoke every grant of the user or client, once confirmed. Their
/// access tokens stop working here at once and on every other instance within a second.
pub async fn revoke_post(
    State(state): State<AppState>,
    who: Requester,
    headers: HeaderMap,
    jar: CookieJar,
    PageForm(form): PageForm<RevokeForm>,
) -> Result<Response, Response> {
    let csrf = form.csrf.as_deref();
    let admin = admin_posting(&state, &who, "revoke_all", &jar, &headers, csrf).await?;
    let q = RevokeQuery {
        user: form.user,
        client: form.client,
    };
    let (kind, id, label) = owner_of(&state, &q).await.map_err(refusal)?;
    if form.confirm.as_deref() != Some("yes") {
        return Err(refusal(PageError::bad_request(
            "Not confirmed",
            "Confirm the revocation with its button.",
        )));
    }
    let now = state.clock.now();
    let revoked = state
        .db
        .revoke_grants_of(
            grant_owner(kind, id),
            now,
            "revoked_by_administrator",
            state.revocation_ttl(),
        )
        .await
        .map_err(refusal)?;
    state
        .revocations
        .poll(&state.db, now)
        .await
        .map_err(refusal)?;
    tracing::warn!(admin = %admin.id, owner = kind, id, grants = revoked, "administrator revoked every grant");
    let (token, jar) = csrf::token(jar);
    let html = crate::web::render(&RevokePage {
        base_path: state.settings.base_path(),
        csrf: &token,
        kind,
        id,
        label,
        live_grants: 0,
        revoked: Some(revoked),
    })
    .map_err(refusal)?;
    Ok(page_response(jar, html))
}
