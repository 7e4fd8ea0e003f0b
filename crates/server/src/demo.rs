//! `mcp-oauth demo traffic`: realistic traffic through a running server's real endpoints, so
//! that a new installation shows a populated dashboard within a minute.
//!
//! Each demo user runs in a loop until the time is up, as an MCP client and its user would:
//!
//! ```text
//!   POST /mcp without a token ─> 401 ─> resource metadata ─> authorization server metadata
//!   POST /register (a few clients per user, as different MCP client programs)
//!   GET /authorize ─> /login (sign in; the first user mistypes once) ─> consent ─> allow
//!                                                                  (now and then: deny)
//!   POST /token (code + PKCE) ─> /mcp: initialize, notifications/initialized, tools/list,
//!   tools/call × 3..7 (now and then a tool error, an unknown tool, a bad token),
//!   POST /token (refresh) ─> more calls ─> DELETE /mcp ─> now and then POST /revoke
//! ```
//!
//! Everything the dashboard shows comes from these requests, through the same path as any
//! client's: the demo writes nothing to the analytics tables. The one thing it does write
//! directly is the demo users themselves (`demo-<n>@example.com`, with a random password kept
//! in memory only), because the server has no sign-up endpoint; `mcp-oauth user add` does the
//! same. Tokens and passwords are never printed.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use url::Url;

use mcp_oauth_store::{Db, UserRow};

use crate::clock::Clock;
use crate::identity::password;
use crate::mcp::tools::random_in;

/// What `demo traffic` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// The server's base URL (the MCP endpoint is `<url>/mcp`).
    pub url: Url,
    pub duration: Duration,
    pub users: usize,
}

/// The MCP client programs the demo pretends to be: `clientInfo` name and version, and the
/// protocol version each asks for.
const SOFTWARE: [(&str, &str, &str); 3] = [
    ("demo-desktop", "1.4.2", "2025-06-18"),
    ("demo-ide", "0.9.1", "2025-06-18"),
    ("demo-cli", "2.0.0", "2025-03-26"),
];

/// Clients one demo user registers at most.
const MAX_CLIENTS_PER_USER: usize = 3;
/// Failures in a row after which the demo gives up (the server is probably gone).
const MAX_FAILURES_IN_A_ROW: u32 = 5;

/// What happened, for the summary line.
#[derive(Default)]
struct Tally {
    registrations: AtomicU64,
    sign_ins: AtomicU64,
    failed_sign_ins: AtomicU64,
    authorizations: AtomicU64,
    denials: AtomicU64,
    code_exchanges: AtomicU64,
    refreshes: AtomicU64,
    revocations: AtomicU64,
    sessions: AtomicU64,
    tool_calls: AtomicU64,
    tool_errors: AtomicU64,
    protocol_errors: AtomicU64,
    refused_tokens: AtomicU64,
    unexpected: AtomicU64,
}

fn add(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Tally {
    fn line(&self, options: &Options, elapsed: Duration) -> String {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "demo traffic: {} s against {} as {} user(s): {} client registrations, {} sign-ins \
             ({} refused), {} authorizations ({} denied), {} code exchanges, {} refreshes, {} \
             revocations, {} MCP sessions, {} tool calls ({} tool errors, {} protocol errors), \
             {} requests with a bad token, {} unexpected answers",
            elapsed.as_secs(),
            options.url.as_str().trim_end_matches('/'),
            options.users,
            n(&self.registrations),
            n(&self.sign_ins),
            n(&self.failed_sign_ins),
            n(&self.authorizations),
            n(&self.denials),
            n(&self.code_exchanges),
            n(&self.refreshes),
            n(&self.revocations),
            n(&self.sessions),
            n(&self.tool_calls),
            n(&self.tool_errors),
            n(&self.protocol_errors),
            n(&self.refused_tokens),
            n(&self.unexpected),
        )
    }
}

/// `percent` in 100.
fn chance(percent: i64) -> bool {
    random_in(1, 100) <= percent
}

fn pick<T>(items: &[T]) -> &T {
    &items[random_in(0, items.len() as i64 - 1) as usize]
}

/// A pause between two steps, as a person or a model would take.
async fn think(min_ms: i64, max_ms: i64) {
    tokio::time::sleep(Duration::from_millis(random_in(min_ms, max_ms) as u64)).await;
}

/// Create the demo users, or give existing ones a new password. Returns `(email, password)`.
async fn demo_users(db: &Db, count: usize) -> anyhow::Result<Vec<(String, String)>> {
    let mut users = Vec::with_capacity(count);
    for n in 1..=count {
        let email = format!("demo-{n}@example.com");
        let secret = format!("{}{}", crate::random::id(), crate::random::id());
        let hash = password::hash(secret.clone()).await?;
        // There is no sign-up endpoint: users are made in the database, as `user add` does.
        match db.find_user_by_email(&email).await? {
            Some(u) if u.is_disabled() => bail!("the demo user {email} is disabled"),
            Some(u) => {
                db.set_password_hash(&u.id, &hash).await?;
            }
            None => {
                db.insert_user(&UserRow {
                    id: crate::random::id(),
                    email: email.clone(),
                    password_hash: Some(hash),
                    is_admin: 0,
                    created_at: Clock::system().now(),
                    disabled_at: None,
                })
                .await?;
            }
        }
        users.push((email, secret));
    }
    Ok(users)
}

/// Where things are, as a client finds out from the server itself.
#[derive(Debug, Clone)]
struct Endpoints {
    mcp: Url,
    resource: String,
    authorization: Url,
    token: Url,
    registration: Url,
    revocation: Option<Url>,
}

fn url_field(doc: &Value, key: &str) -> anyhow::Result<Url> {
    let s = doc[key]
        .as_str()
        .ok_or_else(|| anyhow!("the metadata has no {key}"))?;
    Url::parse(s).with_context(|| format!("{key} is not a URL"))
}

/// RFC 9728 and RFC 8414 discovery, starting from a request without a token.
async fn discover(http: &Client, base: &Url) -> anyhow::Result<Endpoints> {
    let mcp = Url::parse(&format!("{}/mcp", base.as_str().trim_end_matches('/')))?;
    let r = http
        .post(mcp.clone())
        .header(header::ACCEPT, "application/json, text/event-stream")
        .header(header::CONTENT_TYPE, "application/json")
        .body(initialize_body(SOFTWARE[0]).to_string())
        .send()
        .await
        .with_context(|| format!("cannot reach {mcp}: is the server running?"))?;
    if r.status() != StatusCode::UNAUTHORIZED {
        bail!(
            "{mcp} answered {} without a token; the demo needs a protected MCP endpoint",
            r.status()
        );
    }
    let challenge = r
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let prm_url = challenge
        .split("resource_metadata=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .ok_or_else(|| anyhow!("the 401 from {mcp} names no resource_metadata"))?;
    let prm: Value = http
        .get(prm_url)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let resource = prm["resource"]
        .as_str()
        .ok_or_else(|| anyhow!("the resource metadata has no resource"))?
        .to_owned();
    let issuer = prm["authorization_servers"][0]
        .as_str()
        .ok_or_else(|| anyhow!("the resource metadata names no authorization server"))
        .and_then(|s| Url::parse(s).context("the authorization server is not a URL"))?;
    // RFC 8414 §3.1: the well-known segment goes between the host and the issuer's path.
    let mut metadata_url = issuer.clone();
    metadata_url.set_path(&format!(
        "/.well-known/oauth-authorization-server{}",
        issuer.path().trim_end_matches('/')
    ));
    let asm: Value = http
        .get(metadata_url)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(Endpoints {
        mcp,
        resource,
        authorization: url_field(&asm, "authorization_endpoint")?,
        token: url_field(&asm, "token_endpoint")?,
        registration: url_field(&asm, "registration_endpoint")?,
        revocation: url_field(&asm, "revocation_endpoint").ok(),
    })
}

/// A browser: its own cookies, no automatic redirects.
struct Browser {
    http: Client,
    cookies: HashMap<String, String>,
}

impl Browser {
    fn cookie_header(&self) -> Option<HeaderValue> {
        if self.cookies.is_empty() {
            return None;
        }
        let s: Vec<String> = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        HeaderValue::from_str(&s.join("; ")).ok()
    }

    fn keep_cookies(&mut self, headers: &HeaderMap) {
        for v in headers.get_all(header::SET_COOKIE) {
            let Ok(s) = v.to_str() else { continue };
            let Some((name, value)) = s.split(';').next().and_then(|p| p.split_once('=')) else {
                continue;
            };
            if value.is_empty() || s.to_ascii_lowercase().contains("max-age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> anyhow::Result<Page> {
        let req = match self.cookie_header() {
            Some(c) => req.header(header::COOKIE, c),
            None => req,
        };
        let r = req.send().await?;
        self.keep_cookies(r.headers());
        let status = r.status();
        let url = r.url().clone();
        let location = r
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|l| url.join(l).ok());
        let html = r.text().await?;
        Ok(Page {
            status,
            url,
            location,
            html,
        })
    }

    async fn get(&mut self, url: Url) -> anyhow::Result<Page> {
        let req = self.http.get(url);
        self.send(req).await
    }

    async fn post_form(&mut self, url: Url, form: &[(&str, &str)]) -> anyhow::Result<Page> {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let req = self
            .http
            .post(url)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body);
        self.send(req).await
    }
}

struct Page {
    status: StatusCode,
    url: Url,
    location: Option<Url>,
    html: String,
}

impl Page {
    /// The value of the form field `name` (a hidden input), HTML entities decoded.
    fn field(&self, name: &str) -> Option<String> {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self.html.find(&marker)? + marker.len();
        let end = self.html[start..].find('"')? + start;
        Some(unescape(&self.html[start..end]))
    }

    /// Where the page's form posts to.
    fn form_action(&self) -> Option<Url> {
        let form = self.html.find("<form")?;
        let rest = &self.html[form..];
        let start = rest.find("action=\"")? + "action=\"".len();
        let end = rest[start..].find('"')? + start;
        self.url.join(&unescape(&rest[start..end])).ok()
    }
}

/// Decode the entities an HTML template escapes (`&amp;`, `&#38;`, `&#x27;` …).
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let decoded = rest.find(';').and_then(|end| {
            let entity = &rest[1..end];
            let c = match entity {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                e if e.starts_with("#x") || e.starts_with("#X") => u32::from_str_radix(&e[2..], 16)
                    .ok()
                    .and_then(char::from_u32),
                e if e.starts_with('#') => e[1..].parse().ok().and_then(char::from_u32),
                _ => None,
            };
            c.map(|c| (c, end))
        });
        match decoded {
            Some((c, end)) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// A PKCE pair (RFC 7636, S256).
struct Pkce {
    verifier: String,
    challenge: String,
}

impl Pkce {
    fn new() -> Self {
        let verifier = format!("{}{}", crate::random::id(), crate::random::id());
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        Self {
            verifier,
            challenge,
        }
    }
}

fn initialize_body((name, version, protocol): (&str, &str, &str)) -> Value {
    json!({
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {
            "protocolVersion": protocol,
            "capabilities": {},
            "clientInfo": {"name": name, "version": version}
        }
    })
}

/// A dynamically registered client, as one MCP client program.
struct DemoClient {
    id: String,
    redirect_uri: String,
    software: (&'static str, &'static str, &'static str),
}

/// How an authorization ended.
enum Authorized {
    Code(String),
    Denied,
}

/// The tokens of one authorization.
struct Tokens {
    access: String,
    refresh: Option<String>,
}

/// What an MCP request came back with.
enum Reply {
    Result(Value),
    /// A JSON-RPC error, with its code.
    Error(i64),
    /// Refused before MCP saw it.
    Http(StatusCode),
}

/// An MCP session over Streamable HTTP.
struct Session<'a> {
    http: &'a Client,
    url: &'a Url,
    token: String,
    id: Option<String>,
    protocol: &'static str,
    next_id: i64,
}

impl Session<'_> {
    fn request(&self, method: reqwest::Method, token: &str) -> reqwest::RequestBuilder {
        let mut req = self
            .http
            .request(method, self.url.clone())
            .bearer_auth(token)
            .header(header::ACCEPT, "application/json, text/event-stream")
            .header(header::CONTENT_TYPE, "application/json")
            .header("mcp-protocol-version", self.protocol);
        if let Some(id) = &self.id {
            req = req.header("mcp-session-id", id);
        }
        req
    }

    /// Send one JSON-RPC message with `token`; a request's reply, or `None` for a
    /// notification.
    async fn send_as(&mut self, token: &str, message: Value) -> anyhow::Result<Reply> {
        let r = self
            .request(reqwest::Method::POST, token)
            .body(message.to_string())
            .send()
            .await?;
        let status = r.status();
        if let Some(id) = r
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
        {
            self.id = Some(id.to_owned());
        }
        let is_sse = r
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("text/event-stream"));
        let body = r.text().await?;
        if status == StatusCode::ACCEPTED {
            return Ok(Reply::Result(Value::Null));
        }
        if status != StatusCode::OK {
            return Ok(Reply::Http(status));
        }
        let messages: Vec<Value> = if is_sse {
            body.lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .filter_map(|d| serde_json::from_str(d.trim()).ok())
                .collect()
        } else {
            serde_json::from_str(&body).into_iter().collect()
        };
        let reply = messages
            .into_iter()
            .find(|m| {
                m.get("id").is_some() && (m.get("result").is_some() || m.get("error").is_some())
            })
            .ok_or_else(|| anyhow!("no JSON-RPC response in the answer"))?;
        Ok(match reply.get("error") {
            Some(e) => Reply::Error(e["code"].as_i64().unwrap_or_default()),
            None => Reply::Result(reply["result"].clone()),
        })
    }

    async fn send(&mut self, message: Value) -> anyhow::Result<Reply> {
        let token = self.token.clone();
        self.send_as(&token, message).await
    }

    async fn call(&mut self, method: &str, params: Value) -> anyhow::Result<Reply> {
        self.next_id += 1;
        let message =
            json!({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params});
        self.send(message).await
    }

    async fn close(&mut self) {
        if self.id.is_some() {
            let req = self.request(reqwest::Method::DELETE, &self.token);
            let _ = req.send().await;
        }
    }
}

/// A tool call with arguments: mostly good ones, now and then one that fails.
fn tool_call() -> (&'static str, Value) {
    let texts = [
        "hello from the demo",
        "Model Context Protocol",
        "OAuth 2.1 for MCP",
    ];
    match random_in(0, 19) {
        0 => ("calculate_circle_area", json!({"radius": -1})),
        1 => ("get_weather", json!({"city": "Lisbon"})),
        2..=4 => (
            "add_numbers",
            json!({"a": random_in(-500, 500), "b": random_in(-500, 500)}),
        ),
        5..=7 => ("calculate_circle_area", json!({"radius": random_in(1, 50)})),
        8..=10 => (
            "check_prime_number",
            json!({"number": random_in(2, 100_000)}),
        ),
        11..=13 => (
            "format_text",
            json!({"text": pick(&texts), "format": pick(&["uppercase", "lowercase", "titlecase", "reverse"])}),
        ),
        14..=16 => (
            "generate_random_number",
            json!({"min": 1, "max": random_in(2, 1_000)}),
        ),
        _ => ("whoami", json!({})),
    }
}

/// One demo user's traffic.
struct Actor {
    http: Client,
    endpoints: Arc<Endpoints>,
    tally: Arc<Tally>,
    email: String,
    password: String,
    /// Index of the user (0-based): port numbers and names differ per user.
    index: usize,
    /// The first user mistypes the password once.
    mistype: bool,
    deadline: Instant,
}

impl Actor {
    fn time_left(&self) -> bool {
        Instant::now() < self.deadline
    }

    async fn run(mut self) -> anyhow::Result<()> {
        let mut browser = Browser {
            http: self.http.clone(),
            cookies: HashMap::new(),
        };
        let mut clients: Vec<DemoClient> = Vec::new();
        let mut failures = 0;
        let mut first = true;
        while self.time_left() {
            match self.round(&mut browser, &mut clients, first).await {
                Ok(()) => failures = 0,
                Err(e) => {
                    add(&self.tally.unexpected);
                    failures += 1;
                    eprintln!("demo: {}: {e:#}", self.email);
                    if failures >= MAX_FAILURES_IN_A_ROW {
                        return Err(
                            e.context(format!("{}: too many failures in a row", self.email))
                        );
                    }
                    think(500, 1_000).await;
                }
            }
            first = false;
            think(200, 800).await;
        }
        Ok(())
    }

    async fn register(&self, clients: &mut Vec<DemoClient>) -> anyhow::Result<()> {
        let software = SOFTWARE[(self.index + clients.len()) % SOFTWARE.len()];
        // Loopback redirect URIs (RFC 8252 §7.3); a distinct port per client, so that the
        // registrations are distinct clients.
        let port = 40_000 + self.index * 10 + clients.len();
        let redirect_uri = format!("http://127.0.0.1:{port}/callback");
        let r = self
            .http
            .post(self.endpoints.registration.clone())
            .json(&json!({
                "client_name": format!("{} (demo user {})", software.0, self.index + 1),
                "redirect_uris": [redirect_uri],
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "none",
            }))
            .send()
            .await?;
        if r.status() != StatusCode::CREATED {
            bail!("registration answered {}", r.status());
        }
        let doc: Value = r.json().await?;
        let id = doc["client_id"]
            .as_str()
            .ok_or_else(|| anyhow!("registration returned no client_id"))?
            .to_owned();
        add(&self.tally.registrations);
        clients.push(DemoClient {
            id,
            redirect_uri,
            software,
        });
        Ok(())
    }

    /// The browser side of an authorization: follow redirects, sign in when asked, answer the
    /// consent page.
    async fn authorize(
        &mut self,
        browser: &mut Browser,
        client: &DemoClient,
        pkce: &Pkce,
        allow: bool,
    ) -> anyhow::Result<Authorized> {
        let mut url = self.endpoints.authorization.clone();
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &client.id)
            .append_pair("redirect_uri", &client.redirect_uri)
            .append_pair("code_challenge", &pkce.challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("resource", &self.endpoints.resource)
            .append_pair("scope", "mcp")
            .append_pair("state", &crate::random::id());
        let mut page = browser.get(url).await?;
        for _ in 0..8 {
            if page.status.is_redirection() {
                let to = page
                    .location
                    .clone()
                    .ok_or_else(|| anyhow!("a redirect without a location"))?;
                if to.as_str().starts_with(&client.redirect_uri) {
                    let params: HashMap<String, String> = to.query_pairs().into_owned().collect();
                    if let Some(code) = params.get("code") {
                        add(&self.tally.authorizations);
                        return Ok(Authorized::Code(code.clone()));
                    }
                    if params.get("error").map(String::as_str) == Some("access_denied") {
                        add(&self.tally.denials);
                        return Ok(Authorized::Denied);
                    }
                    bail!("the authorization ended with {:?}", params.get("error"));
                }
                page = browser.get(to).await?;
            } else if page.html.contains("name=\"password\"") {
                page = self.sign_in(browser, &page).await?;
            } else if page.html.contains("name=\"decision\"") {
                let action = page
                    .form_action()
                    .ok_or_else(|| anyhow!("the consent page has no form"))?;
                let csrf = page.field("csrf").unwrap_or_default();
                let request = page.field("request").unwrap_or_default();
                think(300, 900).await;
                let decision = if allow { "allow" } else { "deny" };
                page = browser
                    .post_form(
                        action,
                        &[
                            ("csrf", &csrf),
                            ("request", &request),
                            ("decision", decision),
                        ],
                    )
                    .await?;
            } else {
                bail!(
                    "the authorization stopped at {} ({})",
                    page.url.path(),
                    page.status
                );
            }
        }
        bail!("the authorization did not come back to the client")
    }

    /// Fill in the sign-in form on `page` (mistyping once, for the first user).
    async fn sign_in(&mut self, browser: &mut Browser, page: &Page) -> anyhow::Result<Page> {
        let action = page
            .form_action()
            .ok_or_else(|| anyhow!("the sign-in page has no form"))?;
        let csrf = page.field("csrf").unwrap_or_default();
        let return_to = page.field("return_to").unwrap_or_default();
        let wrong = format!("{}-typo", self.password);
        let password = if self.mistype { &wrong } else { &self.password };
        think(300, 900).await;
        let answer = browser
            .post_form(
                action,
                &[
                    ("csrf", &csrf),
                    ("return_to", &return_to),
                    ("email", &self.email),
                    ("password", password),
                ],
            )
            .await?;
        match answer.status {
            StatusCode::UNAUTHORIZED if self.mistype => {
                self.mistype = false;
                add(&self.tally.failed_sign_ins);
            }
            s if s.is_redirection() => add(&self.tally.sign_ins),
            s => bail!("signing in answered {s}"),
        }
        Ok(answer)
    }

    async fn token(&self, form: &[(&str, &str)]) -> anyhow::Result<Tokens> {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let r = self
            .http
            .post(self.endpoints.token.clone())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await?;
        let status = r.status();
        let doc: Value = r.json().await.unwrap_or_default();
        if status != StatusCode::OK {
            bail!("the token endpoint answered {status} {}", doc["error"]);
        }
        Ok(Tokens {
            access: doc["access_token"]
                .as_str()
                .ok_or_else(|| anyhow!("no access_token"))?
                .to_owned(),
            refresh: doc["refresh_token"].as_str().map(str::to_owned),
        })
    }

    /// Tool calls in `session`, while there is time.
    async fn use_tools(&self, session: &mut Session<'_>, calls: i64) -> anyhow::Result<()> {
        for _ in 0..calls {
            if !self.time_left() {
                break;
            }
            let (name, arguments) = tool_call();
            let reply = session
                .call("tools/call", json!({"name": name, "arguments": arguments}))
                .await?;
            add(&self.tally.tool_calls);
            match reply {
                Reply::Result(r) if r["isError"] == true => add(&self.tally.tool_errors),
                Reply::Result(_) => {}
                Reply::Error(_) => add(&self.tally.protocol_errors),
                Reply::Http(s) => bail!("tools/call answered {s}"),
            }
            think(100, 400).await;
        }
        Ok(())
    }

    /// One connection of one client: authorize, exchange, use the tools, refresh, finish.
    async fn round(
        &mut self,
        browser: &mut Browser,
        clients: &mut Vec<DemoClient>,
        first: bool,
    ) -> anyhow::Result<()> {
        if clients.is_empty() || (clients.len() < MAX_CLIENTS_PER_USER && chance(25)) {
            self.register(clients).await?;
        }
        let client = pick(clients);
        let pkce = Pkce::new();
        let allow = first || !chance(8);
        let code = match self.authorize(browser, client, &pkce, allow).await? {
            Authorized::Code(code) => code,
            Authorized::Denied => return Ok(()),
        };
        let tokens = self
            .token(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", &client.redirect_uri),
                ("code_verifier", &pkce.verifier),
                ("client_id", &client.id),
                ("resource", &self.endpoints.resource),
            ])
            .await?;
        add(&self.tally.code_exchanges);

        let mut session = Session {
            http: &self.http,
            url: &self.endpoints.mcp,
            token: tokens.access,
            id: None,
            protocol: client.software.2,
            next_id: 0,
        };
        match session.send(initialize_body(client.software)).await? {
            Reply::Result(_) => add(&self.tally.sessions),
            Reply::Error(code) => bail!("initialize failed with {code}"),
            Reply::Http(s) => bail!("initialize answered {s}"),
        }
        session
            .send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await?;
        session.call("tools/list", json!({})).await?;
        self.use_tools(&mut session, random_in(3, 7)).await?;

        // Now and then a request with a token that is not one (expired, mangled, another
        // server's): refused with 401 before MCP sees it.
        if chance(30) {
            let call = json!({"jsonrpc": "2.0", "id": 999, "method": "tools/list", "params": {}});
            if let Reply::Http(StatusCode::UNAUTHORIZED) = session
                .send_as("eyJhbGciOiJFZERTQSJ9.e30.bm90LWEtc2lnbmF0dXJl", call)
                .await?
            {
                add(&self.tally.refused_tokens);
            }
        }

        let mut refresh = tokens.refresh;
        if let Some(rt) = refresh.clone().filter(|_| self.time_left() && chance(60)) {
            let renewed = self
                .token(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", &rt),
                    ("client_id", &client.id),
                    ("resource", &self.endpoints.resource),
                ])
                .await?;
            add(&self.tally.refreshes);
            session.token = renewed.access;
            refresh = renewed.refresh;
            self.use_tools(&mut session, random_in(1, 3)).await?;
        }
        session.close().await;

        if let (Some(rt), Some(endpoint)) = (refresh, &self.endpoints.revocation)
            && chance(30)
        {
            let body = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs([
                    ("token", rt.as_str()),
                    ("token_type_hint", "refresh_token"),
                    ("client_id", client.id.as_str()),
                ])
                .finish();
            let r = self
                .http
                .post(endpoint.clone())
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await?;
            if r.status() == StatusCode::OK {
                add(&self.tally.revocations);
            }
        }
        Ok(())
    }
}

/// Run the demo; returns the summary line.
pub async fn traffic(db: &Db, options: &Options) -> anyhow::Result<String> {
    if !(1..=50).contains(&options.users) {
        bail!("--users must be between 1 and 50");
    }
    let http = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .user_agent(concat!("mcp-oauth-demo/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let endpoints = Arc::new(discover(&http, &options.url).await?);
    let users = demo_users(db, options.users).await?;
    let tally = Arc::new(Tally::default());
    let start = Instant::now();
    let deadline = start + options.duration;
    let actors: Vec<_> = users
        .into_iter()
        .enumerate()
        .map(|(index, (email, password))| {
            let actor = Actor {
                http: http.clone(),
                endpoints: endpoints.clone(),
                tally: tally.clone(),
                email,
                password,
                index,
                mistype: index == 0,
                deadline,
            };
            tokio::spawn(actor.run())
        })
        .collect();
    let mut failed = None;
    for a in actors {
        match a.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed = Some(e),
            Err(e) => failed = Some(anyhow!("a demo user's task failed: {e}")),
        }
    }
    let line = tally.line(options, start.elapsed());
    match failed {
        Some(e) => Err(e.context(line)),
        None => Ok(line),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_fields_are_read_back_with_entities_decoded() {
        let page = Page {
            status: StatusCode::OK,
            url: Url::parse("http://127.0.0.1:8080/login?return_to=%2Fauthorize").unwrap(),
            location: None,
            html: r#"<form method="post" action="/base/login"><input type="hidden" name="return_to" value="/authorize?a=1&#38;b=&#x27;2&#x27;&amp;c"></form>"#.into(),
        };
        assert_eq!(
            page.field("return_to").as_deref(),
            Some("/authorize?a=1&b='2'&c")
        );
        assert_eq!(page.field("csrf"), None);
        assert_eq!(
            page.form_action().map(|u| u.to_string()).as_deref(),
            Some("http://127.0.0.1:8080/base/login")
        );
        assert_eq!(unescape("a & b &unknown; c"), "a & b &unknown; c");
    }

    #[test]
    fn pkce_challenges_are_s256_of_the_verifier() {
        let p = Pkce::new();
        assert!(p.verifier.len() >= 43, "RFC 7636 §4.1");
        assert_eq!(
            p.challenge,
            URL_SAFE_NO_PAD.encode(Sha256::digest(p.verifier.as_bytes()))
        );
    }

    #[test]
    fn the_tool_mix_uses_the_demo_tools_and_some_failures() {
        let names: std::collections::HashSet<&str> = (0..2_000).map(|_| tool_call().0).collect();
        for name in [
            "add_numbers",
            "calculate_circle_area",
            "check_prime_number",
            "format_text",
            "generate_random_number",
            "whoami",
            "get_weather",
        ] {
            assert!(names.contains(name), "{name}");
        }
    }
}
