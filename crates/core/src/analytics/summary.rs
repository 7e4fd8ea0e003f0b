//! The figures of a range, from summed rows: what `/analytics/api/summary`, the dashboard and
//! `mcp-oauth analytics summary` show. Each figure is defined here once; the README's
//! "How each figure is counted" section says the same in words.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;

use super::{Dimensions, Histogram, Millis};

/// Events with the same dimensions in a range, summed. Several rows may name the same
/// dimensions: every figure is a sum, a maximum or a count of distinct ids over the rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Shared: rows read from rollups name one `Arc` per dimensions id (the store's cache).
    pub dims: Arc<Dimensions>,
    pub count: u64,
    /// The time of the latest of them.
    pub last_at: Millis,
}

/// The latency distribution of one `(kind, name, detail)` series over the range.
#[derive(Debug, Clone, Default)]
pub struct Latencies {
    pub series: HashMap<(String, String, String), Histogram>,
}

impl Latencies {
    pub fn add(&mut self, kind: &str, name: &str, detail: &str, h: &Histogram) {
        self.series
            .entry((kind.to_owned(), name.to_owned(), detail.to_owned()))
            .or_default()
            .merge(h);
    }

    /// The merged distribution of every series `keep` accepts.
    pub fn merged(&self, keep: impl Fn(&str, &str, &str) -> bool) -> Histogram {
        let mut out = Histogram::default();
        for ((k, n, d), h) in &self.series {
            if keep(k, n, d) {
                out.merge(h);
            }
        }
        out
    }
}

/// Display names for the ids in the rows.
#[derive(Debug, Clone, Default)]
pub struct Names {
    pub user_emails: HashMap<String, String>,
    pub client_names: HashMap<String, String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub from: String,
    pub to: String,
    pub requests: Requests,
    pub mcp: Mcp,
    pub tools: Vec<Tool>,
    pub users: Vec<User>,
    pub clients: Vec<Client>,
    pub oauth: OAuth,
    /// Distinct signed-in users and OAuth clients seen in any event.
    pub active_users: u64,
    pub active_clients: u64,
    /// Events the pipeline dropped because its queue was full.
    pub dropped_events: u64,
    /// Traffic per country of the client address, most requests first; empty when no GeoIP
    /// database is configured.
    pub geography: Vec<Country>,
}

/// Traffic from one country ([`super::geo::country_of`]: a country code, `private` or
/// `unknown`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Country {
    pub country: String,
    /// HTTP requests to the OAuth and MCP endpoints.
    pub requests: u64,
    /// Of them, answered with a status of 400 or more.
    pub errors: u64,
    /// MCP `tools/call` messages.
    pub tool_calls: u64,
    /// Distinct users whose MCP messages came from there.
    pub users: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct Requests {
    pub total: u64,
    /// Responses with status 400 or more.
    pub errors: u64,
    pub by_status: BTreeMap<String, u64>,
    pub by_route: BTreeMap<String, u64>,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct Mcp {
    /// `initialize` requests answered with success.
    pub sessions: u64,
    /// MCP requests answered 401.
    pub unauthorized: u64,
    /// Messages per JSON-RPC method (requests and notifications).
    pub methods: BTreeMap<String, u64>,
    /// Messages per client software (`clientInfo` name/version).
    pub by_software: BTreeMap<String, u64>,
    pub by_protocol_version: BTreeMap<String, u64>,
    /// HTTP requests per MCP transport.
    pub by_transport: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Tool {
    pub name: String,
    pub calls: u64,
    pub successes: u64,
    pub tool_errors: u64,
    pub protocol_errors: u64,
    pub unique_users: u64,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct User {
    pub user_id: String,
    /// The account's email; the id when the account is gone.
    pub email: String,
    pub tool_calls: u64,
    pub sessions: u64,
    pub tools_used: u64,
    pub clients: u64,
    pub last_seen: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Client {
    pub client_id: String,
    pub client_name: Option<String>,
    pub users: u64,
    pub tool_calls: u64,
    pub errors: u64,
    pub last_seen: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct OAuth {
    pub registrations: u64,
    pub metadata_documents_fetched: u64,
    pub authorizations_granted: u64,
    pub authorizations_denied: u64,
    pub authorizations_failed: u64,
    pub code_exchanges: u64,
    pub refresh_grants: u64,
    pub client_credentials_grants: u64,
    pub token_failures: BTreeMap<String, u64>,
    pub refresh_reuse_detected: u64,
    pub code_replay_detected: u64,
    pub tokens_revoked: u64,
    pub sign_ins: u64,
    pub failed_sign_ins: u64,
    /// Of the authorization codes exchanged, the share bound with PKCE S256; `None` when none
    /// were. Counted over authorization-code grants only (refreshes and client-credentials
    /// grants have no PKCE and would dilute it).
    pub pkce_s256_share: Option<f64>,
}

/// RFC 3339 (UTC, milliseconds) for a Unix-millisecond time.
pub fn rfc3339(at: Millis) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(at) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&format).unwrap_or_default()
}

/// Parse an RFC 3339 time into Unix milliseconds.
pub fn parse_rfc3339(s: &str) -> Option<Millis> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

// The per-id sums below borrow their keys from the rows: summing a month of rows then
// allocates per distinct id, not per row.

#[derive(Default)]
struct PerTool<'a> {
    calls: u64,
    successes: u64,
    tool_errors: u64,
    protocol_errors: u64,
    users: HashSet<&'a str>,
}

#[derive(Default)]
struct PerUser<'a> {
    tool_calls: u64,
    sessions: u64,
    tools: HashSet<&'a str>,
    clients: HashSet<&'a str>,
    last_at: Millis,
}

#[derive(Default)]
struct PerCountry<'a> {
    requests: u64,
    errors: u64,
    tool_calls: u64,
    users: HashSet<&'a str>,
}

#[derive(Default)]
struct PerClient<'a> {
    users: HashSet<&'a str>,
    tool_calls: u64,
    errors: u64,
    last_at: Millis,
}

/// Add `n` to `key`'s count, allocating the key only the first time.
fn add(map: &mut BTreeMap<String, u64>, key: &str, n: u64) {
    match map.get_mut(key) {
        Some(v) => *v += n,
        None => {
            map.insert(key.to_owned(), n);
        }
    }
}

/// Sum `rows` (every event of `[from, to)`, grouped) into the figures of the range.
pub fn summarize(
    from: Millis,
    to: Millis,
    rows: &[Row],
    latencies: &Latencies,
    names: &Names,
) -> Summary {
    let mut requests = Requests::default();
    let mut mcp = Mcp::default();
    let mut oauth = OAuth::default();
    let mut tools: HashMap<&str, PerTool> = HashMap::new();
    let mut users: HashMap<&str, PerUser> = HashMap::new();
    let mut clients: HashMap<&str, PerClient> = HashMap::new();
    let mut countries: HashMap<&str, PerCountry> = HashMap::new();
    let mut dropped = 0;
    let mut pkce_s256 = 0;

    for Row {
        dims: d,
        count: n,
        last_at,
    } in rows
    {
        let n = *n;
        let ok = d.outcome == "ok";
        if !d.country.is_empty() && matches!(d.kind.as_str(), "http" | "mcp") {
            let c = countries.entry(&d.country).or_default();
            if d.kind == "http" {
                c.requests += n;
                if d.outcome == "error" {
                    c.errors += n;
                }
            } else {
                if d.name == "tools/call" {
                    c.tool_calls += n;
                }
                if !d.user_id.is_empty() {
                    c.users.insert(&d.user_id);
                }
            }
        }
        match d.kind.as_str() {
            "http" => {
                requests.total += n;
                if d.outcome == "error" {
                    requests.errors += n;
                }
                add(&mut requests.by_status, &d.code, n);
                add(&mut requests.by_route, &d.name, n);
                if !d.transport.is_empty() {
                    add(&mut mcp.by_transport, &d.transport, n);
                    if d.code == "401" {
                        mcp.unauthorized += n;
                    }
                }
            }
            "mcp" => {
                add(&mut mcp.methods, &d.name, n);
                if !d.software.is_empty() {
                    add(&mut mcp.by_software, &d.software, n);
                }
                if !d.protocol_version.is_empty() {
                    add(&mut mcp.by_protocol_version, &d.protocol_version, n);
                }
                let is_session = d.name == "initialize" && ok;
                if is_session {
                    mcp.sessions += n;
                }
                if d.name == "tools/call" {
                    let t = tools.entry(&d.detail).or_default();
                    t.calls += n;
                    match d.outcome.as_str() {
                        "ok" => t.successes += n,
                        "tool_error" => t.tool_errors += n,
                        _ => t.protocol_errors += n,
                    }
                    if !d.user_id.is_empty() {
                        t.users.insert(&d.user_id);
                    }
                }
                if !d.user_id.is_empty() {
                    let u = users.entry(&d.user_id).or_default();
                    if d.name == "tools/call" {
                        u.tool_calls += n;
                        u.tools.insert(&d.detail);
                    }
                    if is_session {
                        u.sessions += n;
                    }
                }
                if !d.client_id.is_empty() && d.name == "tools/call" {
                    let c = clients.entry(&d.client_id).or_default();
                    c.tool_calls += n;
                    if !ok {
                        c.errors += n;
                    }
                }
            }
            "oauth" => {
                let field = match d.name.as_str() {
                    "client_registered" => &mut oauth.registrations,
                    "metadata_document_fetched" => &mut oauth.metadata_documents_fetched,
                    "authorization_granted" => &mut oauth.authorizations_granted,
                    "authorization_denied" => &mut oauth.authorizations_denied,
                    "authorization_failed" => &mut oauth.authorizations_failed,
                    "code_exchanged" => {
                        if d.detail == "S256" {
                            pkce_s256 += n;
                        }
                        &mut oauth.code_exchanges
                    }
                    "token_refreshed" => &mut oauth.refresh_grants,
                    "client_credentials_granted" => &mut oauth.client_credentials_grants,
                    "token_failed" => {
                        add(&mut oauth.token_failures, &d.code, n);
                        note_actor(d, *last_at, &mut users, &mut clients);
                        continue;
                    }
                    "refresh_reuse_detected" => &mut oauth.refresh_reuse_detected,
                    "code_replay_detected" => &mut oauth.code_replay_detected,
                    "token_revoked" => &mut oauth.tokens_revoked,
                    "sign_in_succeeded" => &mut oauth.sign_ins,
                    "sign_in_failed" => &mut oauth.failed_sign_ins,
                    _ => {
                        note_actor(d, *last_at, &mut users, &mut clients);
                        continue;
                    }
                };
                *field += n;
            }
            "pipeline" => {
                dropped += n;
                continue;
            }
            _ => {}
        }
        note_actor(d, *last_at, &mut users, &mut clients);
    }

    oauth.pkce_s256_share =
        (oauth.code_exchanges > 0).then(|| pkce_s256 as f64 / oauth.code_exchanges as f64);

    let all_requests = latencies.merged(|k, _, _| k == "http");
    requests.p50_ms = all_requests.quantile_ms(0.50);
    requests.p95_ms = all_requests.quantile_ms(0.95);
    requests.p99_ms = all_requests.quantile_ms(0.99);

    let mut tools: Vec<Tool> = tools
        .into_iter()
        .map(|(name, t)| {
            let h = latencies.merged(|k, n, d| k == "mcp" && n == "tools/call" && d == name);
            Tool {
                calls: t.calls,
                successes: t.successes,
                tool_errors: t.tool_errors,
                protocol_errors: t.protocol_errors,
                unique_users: t.users.len() as u64,
                p50_ms: h.quantile_ms(0.50),
                p90_ms: h.quantile_ms(0.90),
                p95_ms: h.quantile_ms(0.95),
                p99_ms: h.quantile_ms(0.99),
                name: name.to_owned(),
            }
        })
        .collect();
    tools.sort_by(|a, b| b.calls.cmp(&a.calls).then_with(|| a.name.cmp(&b.name)));

    let active_users = users.len() as u64;
    let mut users: Vec<User> = users
        .into_iter()
        .map(|(id, u)| User {
            email: names
                .user_emails
                .get(id)
                .cloned()
                .unwrap_or_else(|| id.to_owned()),
            user_id: id.to_owned(),
            tool_calls: u.tool_calls,
            sessions: u.sessions,
            tools_used: u.tools.len() as u64,
            clients: u.clients.len() as u64,
            last_seen: rfc3339(u.last_at),
        })
        .collect();
    users.sort_by(|a, b| {
        b.tool_calls
            .cmp(&a.tool_calls)
            .then_with(|| a.email.cmp(&b.email))
            .then_with(|| a.user_id.cmp(&b.user_id))
    });

    let active_clients = clients.len() as u64;
    let mut clients: Vec<Client> = clients
        .into_iter()
        .map(|(id, c)| Client {
            client_name: names.client_names.get(id).cloned(),
            client_id: id.to_owned(),
            users: c.users.len() as u64,
            tool_calls: c.tool_calls,
            errors: c.errors,
            last_seen: rfc3339(c.last_at),
        })
        .collect();
    clients.sort_by(|a, b| {
        b.tool_calls
            .cmp(&a.tool_calls)
            .then_with(|| a.client_id.cmp(&b.client_id))
    });

    let mut geography: Vec<Country> = countries
        .into_iter()
        .map(|(country, c)| Country {
            country: country.to_owned(),
            requests: c.requests,
            errors: c.errors,
            tool_calls: c.tool_calls,
            users: c.users.len() as u64,
        })
        .collect();
    geography.sort_by(|a, b| {
        b.requests
            .cmp(&a.requests)
            .then_with(|| a.country.cmp(&b.country))
    });

    Summary {
        from: rfc3339(from),
        to: rfc3339(to),
        requests,
        mcp,
        tools,
        users,
        clients,
        oauth,
        active_users,
        active_clients,
        dropped_events: dropped,
        geography,
    }
}

/// Rows of several parts of a range (rollup spans, raw edges) summed per dimensions, where
/// they share them: rows naming the same `Arc` are merged (by pointer, without hashing eleven
/// strings a row). Others stay apart, which changes no figure (see [`Row`]).
pub fn merge_rows<'a>(parts: impl IntoIterator<Item = &'a [Row]>) -> Vec<Row> {
    let mut at: HashMap<*const Dimensions, usize> = HashMap::new();
    let mut out: Vec<Row> = Vec::new();
    for part in parts {
        for r in part {
            match at.entry(Arc::as_ptr(&r.dims)) {
                std::collections::hash_map::Entry::Occupied(e) => {
                    let m = &mut out[*e.get()];
                    m.count += r.count;
                    m.last_at = m.last_at.max(r.last_at);
                }
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(out.len());
                    out.push(r.clone());
                }
            }
        }
    }
    out
}

/// Tool calls per user, client and tool: who uses which tool through which application.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Breakdown {
    pub user_id: String,
    pub client_id: String,
    pub tool: String,
    pub calls: u64,
    /// Tool errors and JSON-RPC errors.
    pub errors: u64,
}

/// The user × client × tool breakdown of the `tools/call` rows, most calls first.
pub fn tool_breakdown(rows: &[Row]) -> Vec<Breakdown> {
    let mut sums: BTreeMap<(&str, &str, &str), (u64, u64)> = BTreeMap::new();
    for r in rows
        .iter()
        .filter(|r| r.dims.kind == "mcp" && r.dims.name == "tools/call")
    {
        let e = sums
            .entry((&r.dims.user_id, &r.dims.client_id, &r.dims.detail))
            .or_default();
        e.0 += r.count;
        if r.dims.outcome != "ok" {
            e.1 += r.count;
        }
    }
    let mut out: Vec<Breakdown> = sums
        .into_iter()
        .map(|((u, c, t), (calls, errors))| Breakdown {
            user_id: u.to_owned(),
            client_id: c.to_owned(),
            tool: t.to_owned(),
            calls,
            errors,
        })
        .collect();
    out.sort_by_key(|b| std::cmp::Reverse(b.calls));
    out
}

/// Note who acted: the user and the client, their pairing and when they were last seen.
fn note_actor<'a>(
    d: &'a Dimensions,
    last_at: Millis,
    users: &mut HashMap<&'a str, PerUser<'a>>,
    clients: &mut HashMap<&'a str, PerClient<'a>>,
) {
    if !d.user_id.is_empty() {
        let u = users.entry(&d.user_id).or_default();
        u.last_at = u.last_at.max(last_at);
        if !d.client_id.is_empty() {
            u.clients.insert(&d.client_id);
        }
    }
    if !d.client_id.is_empty() {
        let c = clients.entry(&d.client_id).or_default();
        c.last_at = c.last_at.max(last_at);
        if !d.user_id.is_empty() {
            c.users.insert(&d.user_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Event, McpResult, OAuthEvent};
    use super::*;

    fn row(e: Event) -> Row {
        Row {
            count: e.count,
            last_at: e.at,
            dims: Arc::new(e.dims),
        }
    }

    fn summary_of(events: Vec<Event>) -> Summary {
        let mut latencies = Latencies::default();
        for e in &events {
            if let Some(us) = e.latency_us {
                let mut h = Histogram::default();
                h.record(us);
                latencies.add(&e.dims.kind, &e.dims.name, &e.dims.detail, &h);
            }
        }
        let rows: Vec<Row> = events.into_iter().map(row).collect();
        let names = Names {
            user_emails: [("u1".to_owned(), "ada@example.com".to_owned())].into(),
            client_names: [("c1".to_owned(), "Claude".to_owned())].into(),
        };
        summarize(0, 3_600_000, &rows, &latencies, &names)
    }

    fn call(user: &str, client: &str, tool: &str, result: McpResult, us: u64) -> Event {
        Event::mcp(1_000, "tools/call", Some(tool), result, us)
            .user(Some(user))
            .client(Some(client))
    }

    #[test]
    fn tools_count_calls_outcomes_and_distinct_users() {
        let s = summary_of(vec![
            call("u1", "c1", "add", McpResult::Success, 1_000),
            call("u1", "c1", "add", McpResult::Success, 2_000),
            call("u2", "c1", "add", McpResult::ToolError, 3_000),
            call("u2", "c2", "add", McpResult::ProtocolError(-32602), 4_000),
            call("u2", "c2", "prime", McpResult::Success, 500),
        ]);
        let add = &s.tools[0];
        assert_eq!(
            (
                add.name.as_str(),
                add.calls,
                add.successes,
                add.tool_errors,
                add.protocol_errors,
                add.unique_users
            ),
            ("add", 4, 2, 1, 1, 2)
        );
        assert_eq!(s.tools[1].name, "prime");
        let users: Vec<(&str, u64, u64, u64)> = s
            .users
            .iter()
            .map(|u| (u.email.as_str(), u.tool_calls, u.tools_used, u.clients))
            .collect();
        assert_eq!(users, [("u2", 3, 2, 2), ("ada@example.com", 2, 1, 1)]);
        let c1 = s.clients.iter().find(|c| c.client_id == "c1").unwrap();
        assert_eq!(
            (
                c1.client_name.as_deref(),
                c1.users,
                c1.tool_calls,
                c1.errors
            ),
            (Some("Claude"), 2, 3, 1)
        );
        assert_eq!((s.active_users, s.active_clients), (2, 2));
    }

    #[test]
    fn geography_counts_requests_errors_tool_calls_and_users_per_country() {
        let http = |status, country| {
            Event::http(1_000, "/mcp", "POST", status, 100).country(Some(country))
        };
        let s = summary_of(vec![
            http(200, "GB"),
            http(200, "GB"),
            http(401, "GB"),
            http(200, "private"),
            call("u1", "c1", "add", McpResult::Success, 10).country(Some("GB")),
            call("u2", "c1", "add", McpResult::Success, 10).country(Some("GB")),
            call("u2", "c1", "add", McpResult::Success, 10).country(Some("GB")),
            call("u1", "c1", "add", McpResult::Success, 10).country(Some("private")),
            // Without a GeoIP database events carry no country and count nowhere here.
            call("u3", "c1", "add", McpResult::Success, 10),
            Event::http(1_000, "/token", "POST", 200, 100),
        ]);
        let rows: Vec<(&str, u64, u64, u64, u64)> = s
            .geography
            .iter()
            .map(|c| {
                (
                    c.country.as_str(),
                    c.requests,
                    c.errors,
                    c.tool_calls,
                    c.users,
                )
            })
            .collect();
        assert_eq!(rows, [("GB", 3, 1, 3, 2), ("private", 1, 0, 1, 1)]);
        assert!(summary_of(vec![http(200, "")]).geography.is_empty());
    }

    #[test]
    fn one_client_with_many_tokens_is_one_client_not_a_product_of_rows() {
        // The sample joined tokens and requests to clients in one statement and multiplied
        // the counts; here a client's figures are sums of its own rows.
        let mut events: Vec<Event> = (0..3)
            .map(|_| Event::oauth(5, OAuthEvent::TokenRefreshed).client(Some("c1")))
            .collect();
        events.push(call("u1", "c1", "add", McpResult::Success, 10));
        let s = summary_of(events);
        assert_eq!(s.clients.len(), 1);
        assert_eq!(s.clients[0].tool_calls, 1);
        assert_eq!(s.oauth.refresh_grants, 3);
    }

    #[test]
    fn requests_sessions_and_unauthorized_mcp_calls() {
        let mcp = |status| {
            Event::http(1, "/mcp", "POST", status, 100).mcp_context(
                None,
                None,
                Some(super::super::Transport::StreamableHttp),
            )
        };
        let s = summary_of(vec![
            mcp(200),
            mcp(401),
            mcp(401),
            Event::http(1, "/token", "POST", 400, 100),
            Event::http(1, "/token", "POST", 200, 100),
            Event::mcp(1, "initialize", None, McpResult::Success, 10).user(Some("u1")),
            Event::mcp(1, "initialize", None, McpResult::ProtocolError(-32600), 10),
        ]);
        assert_eq!((s.requests.total, s.requests.errors), (5, 3));
        assert_eq!(s.requests.by_status["401"], 2);
        assert_eq!(s.mcp.unauthorized, 2);
        assert_eq!(s.mcp.sessions, 1);
        assert_eq!(s.mcp.methods["initialize"], 2);
        assert_eq!(s.users[0].sessions, 1);
    }

    #[test]
    fn pkce_share_counts_code_exchanges_only() {
        let ex = |m| Event::oauth(1, OAuthEvent::CodeExchanged { pkce_method: m });
        let s = summary_of(vec![
            ex("S256"),
            ex("S256"),
            ex("S256"),
            ex("plain"),
            Event::oauth(1, OAuthEvent::TokenRefreshed),
            Event::oauth(1, OAuthEvent::ClientRegistered),
        ]);
        assert_eq!(s.oauth.code_exchanges, 4);
        assert_eq!(s.oauth.pkce_s256_share, Some(0.75));
        assert_eq!(summary_of(vec![]).oauth.pkce_s256_share, None);
    }

    #[test]
    fn failures_and_drops_are_counted() {
        let s = summary_of(vec![
            Event::oauth(
                1,
                OAuthEvent::SignInFailed {
                    reason: "invalid_credentials",
                },
            ),
            Event::oauth(
                1,
                OAuthEvent::SignInFailed {
                    reason: "throttled",
                },
            ),
            Event::oauth(
                1,
                OAuthEvent::TokenFailed {
                    grant_type: "authorization_code",
                    error: "invalid_grant",
                },
            ),
            Event::dropped(1, 7),
        ]);
        assert_eq!(s.oauth.failed_sign_ins, 2);
        assert_eq!(s.oauth.token_failures["invalid_grant"], 1);
        assert_eq!(s.dropped_events, 7);
    }

    #[test]
    fn merged_parts_add_counts_and_keep_the_latest_time() {
        let a = [row(call("u1", "c1", "add", McpResult::Success, 1))];
        // The same dimensions (as the store's cache shares them) in another part.
        let later = Row {
            dims: a[0].dims.clone(),
            count: 2,
            last_at: 9_000,
        };
        let b = [later, row(call("u2", "c1", "add", McpResult::Success, 1))];
        let mut m = merge_rows([&a[..], &b[..]]);
        m.sort_by(|x, y| x.dims.user_id.cmp(&y.dims.user_id));
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].count, m[0].last_at), (3, 9_000));
        assert_eq!(m[1].count, 1);
    }

    #[test]
    fn rows_that_repeat_dimensions_give_the_figures_of_their_sum() {
        let events = vec![
            call("u1", "c1", "add", McpResult::Success, 1),
            call("u1", "c1", "add", McpResult::Success, 1),
            call("u2", "c1", "add", McpResult::ToolError, 1),
        ];
        // The same events as three rows, and with the repeated ones summed in one.
        let apart = summary_of(events.clone());
        let mut summed = row(events[0].clone());
        summed.count = 2;
        let rows = [summed, row(events[2].clone())];
        let together = summarize(
            0,
            3_600_000,
            &rows,
            &Latencies::default(),
            &Names::default(),
        );
        assert_eq!(apart.tools[0].calls, together.tools[0].calls);
        assert_eq!(apart.tools[0].unique_users, together.tools[0].unique_users);
        assert_eq!(apart.clients[0].users, together.clients[0].users);
        assert_eq!(apart.active_users, together.active_users);
        assert_eq!(
            tool_breakdown(&events.into_iter().map(row).collect::<Vec<_>>()),
            tool_breakdown(&rows)
        );
    }

    #[test]
    fn the_breakdown_sums_calls_per_user_client_and_tool() {
        let rows: Vec<Row> = [
            call("u1", "c1", "add", McpResult::Success, 1),
            call("u1", "c1", "add", McpResult::ToolError, 1),
            call("u1", "c2", "add", McpResult::Success, 1),
            call("u2", "c1", "prime", McpResult::Success, 1),
        ]
        .into_iter()
        .map(row)
        .collect();
        let b = tool_breakdown(&rows);
        assert_eq!(b.len(), 3);
        assert_eq!(
            (
                b[0].user_id.as_str(),
                b[0].client_id.as_str(),
                b[0].tool.as_str(),
                b[0].calls,
                b[0].errors
            ),
            ("u1", "c1", "add", 2, 1)
        );
    }

    #[test]
    fn times_are_rfc3339_and_read_back() {
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(
            parse_rfc3339("2023-11-14T22:13:20.123Z"),
            Some(1_700_000_000_123)
        );
        assert_eq!(
            parse_rfc3339("2023-11-14T23:13:20+01:00"),
            Some(1_700_000_000_000)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
