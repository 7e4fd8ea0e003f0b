//! MCP `tools/call` (`add_numbers`) under load, each case driven by `wrk` (a separate process)
//! over keep-alive connections, beside a bare axum handler returning a fixed JSON-RPC body
//! (the floor: HTTP, JSON and wrk's own cost) in the same run. Read the figures as ratios to
//! that floor: these machines are noisy.
//!
//! Cases:
//! - the one real clients send: a stateful session (`initialize`, then
//!   `notifications/initialized`, then calls with `Mcp-Session-Id`), `Accept: application/json,
//!   text/event-stream`, answered as an SSE stream, with an access token from the token
//!   endpoint;
//! - the same call in protocol 2026-07-28 (no session; `_meta` and `Mcp-Method` headers), SSE;
//! - the plain-JSON stateless mode (`mcp.json_response`), with and without authentication, for
//!   the cost of the bearer layer alone;
//! - the stateful case again on a server with analytics off, alternated with the analytics-on
//!   server (two runs each), for the cost of recording every request and message;
//! - that analytics-off server alternated with one that also has security monitoring and rate
//!   limits off, for the cost of detection and rate limiting (quotas too high to refuse);
//! - a token past its MCP quota (every request refused with 429 by the rate limit) beside a
//!   bare axum handler answering 429, for the cost of a refusal;
//! - the stateful case with the rate-limit buckets shared by instances (`rate_limits.shared`)
//!   in the database (here SQLite) and in Redis (`BENCH_REDIS_URL`, default
//!   redis://127.0.0.1:6379), for the cost of one shared count per request.
//!
//! Streamed (SSE) responses are written in several segments: without `TCP_NODELAY` on the
//! accepted sockets each of them waited ~40 ms for the client's delayed ACK.
//!
//!     cargo bench -p mcp-oauth --bench mcp_call             # needs wrk (apt-get install wrk)
//!
//! Knobs: BENCH_SECONDS (per case, default 5), BENCH_CONNECTIONS (default 32),
//! BENCH_DEFER_WRITES=1 (the analytics-on server stores nothing while loaded: its events wait
//! in a queue large enough for the whole run, so on versus off then measures recording alone).

use std::io::Write;
use std::process::Command;

use axum::Json;
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use mcp_oauth::clock::Clock;
use mcp_oauth::config::RawSettings;
use mcp_oauth::startup::{Application, connect_db};
use mcp_oauth::state::AppState;
use mcp_oauth_core::domain::SecretHash;
use mcp_oauth_store::{ClientRow, NewAuthorization, UserRow};

const CALL: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add_numbers","arguments":{"a":2,"b":40}}}"#;
const CALL_2026: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add_numbers","arguments":{"a":2,"b":40},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"bench","version":"0"},"io.modelcontextprotocol/clientCapabilities":{}}}}"#;
const STATEFUL_VERSION: &str = "2025-11-25";
const REDIRECT: &str = "http://127.0.0.1:9/callback";
const VERIFIER: &str = "bench-verifier-bench-verifier-bench-verifier-0001";

/// One load case: what wrk sends.
struct Case {
    name: &'static str,
    url: String,
    body: &'static str,
    headers: Vec<(&'static str, String)>,
    /// Session ids to spread the requests over (one per connection, as clients have).
    sessions: Vec<String>,
    /// Every answer is a refusal (a 429), by design.
    refused: bool,
}

struct Outcome {
    name: &'static str,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// CPU time this process (every server here) spent per request served, µs: less noisy
    /// than throughput on a machine wrk shares.
    cpu_us: f64,
}

/// CPU time (user and system) this process has used, in seconds (Linux: /proc/self/stat,
/// in clock ticks of 1/100 s).
fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// A wrk script for `case`: POST its body with its headers, rotate over its sessions, and
/// fail on anything but a 200 whose body carries the sum (a 429, for a case of refusals).
fn script(case: &Case) -> String {
    let lua_string = |s: &str| format!("{s:?}");
    let mut lua = String::from("wrk.method = \"POST\"\nwrk.body = os.getenv(\"BENCH_BODY\")\n");
    lua.push_str("wrk.headers[\"Content-Type\"] = \"application/json\"\n");
    lua.push_str("wrk.headers[\"Accept\"] = \"application/json, text/event-stream\"\n");
    for (name, value) in &case.headers {
        lua.push_str(&format!(
            "wrk.headers[{}] = {}\n",
            lua_string(name),
            lua_string(value)
        ));
    }
    if !case.sessions.is_empty() {
        let list: Vec<String> = case.sessions.iter().map(|s| lua_string(s)).collect();
        lua.push_str(&format!(
            "local sessions = {{{}}}\nlocal n = 0\n\
             request = function()\n  n = n + 1\n  \
             wrk.headers[\"Mcp-Session-Id\"] = sessions[(n % #sessions) + 1]\n  \
             return wrk.format()\nend\n",
            list.join(", ")
        ));
    }
    if case.refused {
        // The quota gives one request back a minute: a rare 200 among the refusals.
        lua.push_str(
            "response = function(status, headers, body)\n  \
             if status ~= 429 and status ~= 200 then\n    \
             error(\"unexpected answer \" .. status .. \": \" .. body)\n  end\nend\n",
        );
    } else {
        lua.push_str(
            "response = function(status, headers, body)\n  \
             if status ~= 200 or not string.find(body, \"42\", 1, true) then\n    \
             error(\"unexpected answer \" .. status .. \": \" .. body)\n  end\nend\n",
        );
    }
    lua
}

fn parse_ms(s: &str) -> f64 {
    let s = s.trim();
    if let Some(v) = s.strip_suffix("us") {
        v.parse::<f64>().unwrap_or(f64::NAN) / 1000.0
    } else if let Some(v) = s.strip_suffix("ms") {
        v.parse().unwrap_or(f64::NAN)
    } else if let Some(v) = s.strip_suffix('s') {
        v.parse::<f64>().unwrap_or(f64::NAN) * 1000.0
    } else {
        f64::NAN
    }
}

fn wrk(case: &Case, seconds: u64, connections: u64) -> Outcome {
    let path = std::env::temp_dir().join(format!("mcp_call-{}.lua", std::process::id()));
    std::fs::File::create(&path)
        .unwrap()
        .write_all(script(case).as_bytes())
        .unwrap();
    let cpu_start = process_cpu_seconds();
    let out = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
            "-s",
        ])
        .arg(&path)
        .arg(&case.url)
        .env("BENCH_BODY", case.body)
        .output()
        .expect("wrk is installed (apt-get install wrk)");
    // What the load left queued (analytics events) is stored within a flush interval: counted
    // here, not in the next case.
    std::thread::sleep(std::time::Duration::from_millis(1_500));
    let cpu = process_cpu_seconds() - cpu_start;
    let _ = std::fs::remove_file(&path);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && (case.refused || !text.contains("Non-2xx")),
        "wrk failed for {}:\n{text}\n{}",
        case.name,
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(str::to_owned))
            .unwrap_or_default()
    };
    let requests: f64 = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.trim().parse().ok())
        .unwrap_or(f64::NAN);
    Outcome {
        name: case.name,
        cpu_us: cpu * 1e6 / requests,
        rps: field("Requests/sec:").trim().parse().unwrap_or(f64::NAN),
        p50_ms: parse_ms(&field("50%")),
        p99_ms: parse_ms(&field("99%")),
    }
}

/// Start a server; its state (for the database) and URL.
async fn spawn(name: &str, edit: impl FnOnce(&mut RawSettings)) -> (AppState, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let db_path = std::env::temp_dir().join(format!(
        "mcp_oauth_bench_mcp_{}_{name}.db",
        std::process::id()
    ));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db_path.display()));
    }
    let mut raw = RawSettings {
        public_url: format!("http://{addr}"),
        listen: addr.to_string(),
        database_url: format!("sqlite://{}?mode=rwc", db_path.display()).into(),
        ..RawSettings::default()
    };
    raw.log_level = "warn".into();
    // One user holds a session per connection here, more than the default cap of 16.
    raw.mcp.max_sessions_per_user = 1000;
    // Rate limits on, as deployed, with quotas no load test reaches (the `limited` case sets
    // its own): their cost is in every figure, their refusals in none but that one.
    raw.rate_limits.mcp_per_minute = u32::MAX;
    raw.rate_limits.token_per_minute = u32::MAX;
    edit(&mut raw);
    let settings = raw.validate().unwrap();
    let db = connect_db(&settings.database_url).await.unwrap();
    let app = Application::build_on(settings, Clock::system(), db, listener)
        .await
        .unwrap();
    let state = app.state().clone();
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    (state, format!("http://{addr}"))
}

/// An access token from the token endpoint: a user, a public client and an authorization
/// put straight into the database, and the code exchanged as a client would.
async fn access_token(app: &AppState, issuer: &str) -> String {
    let db = &app.db;
    let now = Clock::system().now();
    db.insert_user(&UserRow {
        id: "bench-user".into(),
        email: "bench@example.com".into(),
        password_hash: None,
        is_admin: 0,
        created_at: now,
        disabled_at: None,
    })
    .await
    .unwrap();
    let metadata = json!({"client_name": "bench", "redirect_uris": [REDIRECT], "grant_types": ["authorization_code"],
                          "response_types": ["code"], "token_endpoint_auth_method": "none"});
    db.insert_client(&ClientRow {
        id: "bench-client".into(),
        kind: "preregistered".into(),
        metadata: metadata.to_string(),
        secret_hash: None,
        metadata_hash: None,
        created_at: now,
        last_used_at: None,
        refresh_after: None,
    })
    .await
    .unwrap();
    let code = format!("bench-code-{}", "c".repeat(32));
    db.insert_authorization(&NewAuthorization {
        grant_id: "bench-grant".into(),
        client_id: "bench-client".into(),
        user_id: "bench-user".into(),
        scope: "mcp".into(),
        resource: format!("{issuer}/mcp"),
        code_hash: SecretHash::of(&code).as_str().to_owned(),
        redirect_uri: REDIRECT.into(),
        redirect_uri_explicit: true,
        code_challenge: URL_SAFE_NO_PAD.encode(Sha256::digest(VERIFIER.as_bytes())),
        now,
        code_expires_at: now + 3600,
    })
    .await
    .unwrap();
    let r: Value = reqwest::Client::new()
        .post(format!("{issuer}/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", "bench-client"),
            ("code_verifier", VERIFIER),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("a token: {r}"))
        .to_owned()
}

/// Open a stateful MCP session as a client does; its id.
async fn session(http: &reqwest::Client, url: &str, token: &str) -> String {
    let post = |body: Value, session: Option<&str>| {
        let mut r = http
            .post(url)
            .bearer_auth(token)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(s) = session {
            r = r
                .header("mcp-session-id", s)
                .header("mcp-protocol-version", STATEFUL_VERSION);
        }
        r.send()
    };
    let init = post(
        json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": STATEFUL_VERSION, "capabilities": {},
            "clientInfo": {"name": "bench", "version": "0"}}}),
        None,
    )
    .await
    .unwrap();
    assert!(init.status().is_success(), "initialize: {}", init.status());
    let id = init
        .headers()
        .get("mcp-session-id")
        .expect("a session id")
        .to_str()
        .unwrap()
        .to_owned();
    let _ = init.bytes().await;
    let ack = post(
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        Some(&id),
    )
    .await
    .unwrap();
    assert_eq!(ack.status().as_u16(), 202, "notifications/initialized");
    id
}

#[tokio::main]
async fn main() {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let connections: u64 = std::env::var("BENCH_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);

    // The default configuration (stateful sessions, SSE) serves the first two cases.
    let (app, url) = spawn("stateful", |raw| {
        // Diagnosis: queue every event and store none during the runs (memory grows by ~1 KB
        // per request), to tell the cost of recording from the cost of storing.
        if std::env::var("BENCH_DEFER_WRITES").is_ok_and(|v| v == "1") {
            raw.analytics.flush_interval_ms = 600_000;
            raw.analytics.batch_size = 10_000_000;
            raw.analytics.queue_capacity = 10_000_000;
        }
    })
    .await;
    let token = access_token(&app, &url).await;
    let json_mode = |open: bool| {
        move |raw: &mut RawSettings| {
            raw.mcp.stateful = false;
            raw.mcp.json_response = true;
            raw.mcp.open = open;
        }
    };
    let (json_app, json_url) = spawn("json", json_mode(false)).await;
    let json_token = access_token(&json_app, &json_url).await;
    let (_open_app, open_url) = spawn("open", json_mode(true)).await;
    // Nothing recorded at all: no analytics, and no metrics (which would still build events).
    let (quiet_app, quiet_url) = spawn("quiet", |raw| {
        raw.analytics.enabled = false;
        raw.metrics.allowed_cidrs = vec![];
    })
    .await;
    let quiet_token = access_token(&quiet_app, &quiet_url).await;
    // Nor any security monitoring or rate limit.
    let (unguarded_app, unguarded_url) = spawn("unguarded", |raw| {
        raw.analytics.enabled = false;
        raw.metrics.allowed_cidrs = vec![];
        raw.security.enabled = false;
        raw.rate_limits.enabled = false;
    })
    .await;
    let unguarded_token = access_token(&unguarded_app, &unguarded_url).await;
    // One MCP request a minute: past the first, every request is a 429.
    let (limited_app, limited_url) = spawn("limited", |raw| {
        raw.analytics.enabled = false;
        raw.metrics.allowed_cidrs = vec![];
        raw.rate_limits.mcp_per_minute = 1;
        raw.mcp.stateful = false;
        raw.mcp.json_response = true;
    })
    .await;
    let limited_token = access_token(&limited_app, &limited_url).await;
    // Spend the minute's one request, so that every request of the case is refused.
    let spent = reqwest::Client::new()
        .post(format!("{limited_url}/mcp"))
        .bearer_auth(&limited_token)
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream")
        .header("MCP-Protocol-Version", STATEFUL_VERSION)
        .body(CALL)
        .send()
        .await
        .unwrap();
    assert_eq!(spent.status().as_u16(), 200, "the quota's one request");
    let bare_429 = {
        let app = axum::Router::new().route(
            "/mcp",
            post(|| async {
                let body = json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32000, "message": "rate limited"}});
                (
                    axum::http::StatusCode::TOO_MANY_REQUESTS,
                    [("retry-after", "60")],
                    Json(body),
                )
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    };

    let bare = {
        let body = json!({"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": "The sum of 2 and 40 is 42."}], "isError": false}});
        let app = axum::Router::new().route(
            "/mcp",
            post(move || {
                let body = body.clone();
                async move { Json(body) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    };

    let http = reqwest::Client::new();
    let mut sessions = Vec::new();
    for _ in 0..connections {
        sessions.push(session(&http, &format!("{url}/mcp"), &token).await);
    }
    let mut quiet_sessions = Vec::new();
    for _ in 0..connections {
        quiet_sessions.push(session(&http, &format!("{quiet_url}/mcp"), &quiet_token).await);
    }
    let mut unguarded_sessions = Vec::new();
    for _ in 0..connections {
        unguarded_sessions
            .push(session(&http, &format!("{unguarded_url}/mcp"), &unguarded_token).await);
    }
    // Buckets shared by instances: one upsert, or one Redis script call, per request.
    let (shared_db_app, shared_db_url) = spawn("shared-db", |raw| {
        raw.rate_limits.shared = mcp_oauth::config::SharedLimits::Database;
    })
    .await;
    let shared_db_token = access_token(&shared_db_app, &shared_db_url).await;
    let redis_url =
        std::env::var("BENCH_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let (shared_redis_app, shared_redis_url) = spawn("shared-redis", |raw| {
        raw.redis_url = Some(secrecy::SecretString::from(redis_url));
        raw.rate_limits.shared = mcp_oauth::config::SharedLimits::Redis;
    })
    .await;
    let shared_redis_token = access_token(&shared_redis_app, &shared_redis_url).await;
    let mut shared_db_sessions = Vec::new();
    let mut shared_redis_sessions = Vec::new();
    for _ in 0..connections {
        shared_db_sessions
            .push(session(&http, &format!("{shared_db_url}/mcp"), &shared_db_token).await);
        shared_redis_sessions.push(
            session(
                &http,
                &format!("{shared_redis_url}/mcp"),
                &shared_redis_token,
            )
            .await,
        );
    }
    let bearer = |t: &str| ("Authorization", format!("Bearer {t}"));
    let cases = [
        Case {
            name: "bare axum handler (floor)",
            url: format!("{bare}/mcp"),
            body: CALL,
            headers: vec![],
            sessions: vec![],
            refused: false,
        },
        Case {
            name: "stateful session, SSE",
            url: format!("{url}/mcp"),
            body: CALL,
            headers: vec![
                bearer(&token),
                ("MCP-Protocol-Version", STATEFUL_VERSION.into()),
            ],
            sessions: sessions.clone(),
            refused: false,
        },
        Case {
            name: "stateful, SSE, buckets shared in the database",
            url: format!("{shared_db_url}/mcp"),
            body: CALL,
            headers: vec![
                bearer(&shared_db_token),
                ("MCP-Protocol-Version", STATEFUL_VERSION.into()),
            ],
            sessions: shared_db_sessions,
            refused: false,
        },
        Case {
            name: "stateful, SSE, buckets shared in Redis",
            url: format!("{shared_redis_url}/mcp"),
            body: CALL,
            headers: vec![
                bearer(&shared_redis_token),
                ("MCP-Protocol-Version", STATEFUL_VERSION.into()),
            ],
            sessions: shared_redis_sessions,
            refused: false,
        },
        Case {
            name: "2026-07-28 stateless, SSE",
            url: format!("{url}/mcp"),
            body: CALL_2026,
            headers: vec![
                bearer(&token),
                ("MCP-Protocol-Version", "2026-07-28".into()),
                ("Mcp-Method", "tools/call".into()),
                ("Mcp-Name", "add_numbers".into()),
            ],
            sessions: vec![],
            refused: false,
        },
        Case {
            name: "stateless JSON, authenticated",
            url: format!("{json_url}/mcp"),
            body: CALL,
            headers: vec![
                bearer(&json_token),
                ("MCP-Protocol-Version", STATEFUL_VERSION.into()),
            ],
            sessions: vec![],
            refused: false,
        },
        Case {
            name: "stateless JSON, authentication off",
            url: format!("{open_url}/mcp"),
            body: CALL,
            headers: vec![("MCP-Protocol-Version", STATEFUL_VERSION.into())],
            sessions: vec![],
            refused: false,
        },
        Case {
            name: "bare axum handler, 429",
            url: format!("{bare_429}/mcp"),
            body: CALL,
            headers: vec![],
            sessions: vec![],
            refused: true,
        },
        Case {
            name: "past the MCP quota (429)",
            url: format!("{limited_url}/mcp"),
            body: CALL,
            headers: vec![
                bearer(&limited_token),
                ("MCP-Protocol-Version", STATEFUL_VERSION.into()),
            ],
            sessions: vec![],
            refused: true,
        },
    ];

    for case in &cases {
        let _ = wrk(case, 1, connections);
    }
    let outcomes: Vec<Outcome> = cases
        .iter()
        .map(|case| wrk(case, seconds, connections))
        .collect();

    // Analytics on and off, alternated so that drift on the machine hits both alike.
    let stateful = |name: &'static str, url: &str, token: &str, sessions: &[String]| Case {
        name,
        url: format!("{url}/mcp"),
        body: CALL,
        headers: vec![
            bearer(token),
            ("MCP-Protocol-Version", STATEFUL_VERSION.into()),
        ],
        sessions: sessions.to_vec(),
        refused: false,
    };
    let on = stateful("stateful SSE, analytics on", &url, &token, &sessions);
    let off = stateful(
        "stateful SSE, analytics off",
        &quiet_url,
        &quiet_token,
        &quiet_sessions,
    );
    let _ = wrk(&off, 1, connections);
    let mut on_runs = Vec::new();
    let mut off_runs = Vec::new();
    for _ in 0..2 {
        on_runs.push(wrk(&on, seconds, connections));
        off_runs.push(wrk(&off, seconds, connections));
    }
    // Security monitoring and rate limits on and off (analytics off in both), alternated.
    let guarded = stateful(
        "stateful SSE, security on",
        &quiet_url,
        &quiet_token,
        &quiet_sessions,
    );
    let unguarded = stateful(
        "stateful SSE, security off",
        &unguarded_url,
        &unguarded_token,
        &unguarded_sessions,
    );
    let _ = wrk(&unguarded, 1, connections);
    let mut guarded_runs = Vec::new();
    let mut unguarded_runs = Vec::new();
    for _ in 0..2 {
        guarded_runs.push(wrk(&guarded, seconds, connections));
        unguarded_runs.push(wrk(&unguarded, seconds, connections));
    }
    // Let the writer store what the last runs queued before counting drops.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;

    println!(
        "\nMCP tools/call (add_numbers), {connections} keep-alive connections, {seconds} s per case, wrk -t2"
    );
    println!(
        "{:<36} {:>10} {:>9} {:>9} {:>9} {:>12}",
        "case", "req/s", "p50 ms", "p99 ms", "of floor", "CPU µs/req"
    );
    let floor = outcomes[0].rps;
    for o in &outcomes {
        println!(
            "{:<36} {:>10.0} {:>9.2} {:>9.2} {:>8.0}% {:>12.1}",
            o.name,
            o.rps,
            o.p50_ms,
            o.p99_ms,
            100.0 * o.rps / floor,
            o.cpu_us
        );
    }
    let rps = |name: &str| {
        outcomes
            .iter()
            .find(|o| o.name == name)
            .map_or(f64::NAN, |o| o.rps)
    };
    let cost = 100.0
        * (1.0 - rps("stateless JSON, authenticated") / rps("stateless JSON, authentication off"));
    println!("authentication costs {cost:.1}% of stateless JSON throughput (target: under 15%)");
    println!(
        "a rate-limited request is answered at {:.0}% of a bare 429's rate (target: at least 100%)",
        100.0 * rps("past the MCP quota (429)") / rps("bare axum handler, 429")
    );
    let stateful = rps("stateful session, SSE");
    println!(
        "shared buckets: database {:.0}%, Redis {:.0}% of the stateful rate with local ones",
        100.0 * rps("stateful, SSE, buckets shared in the database") / stateful,
        100.0 * rps("stateful, SSE, buckets shared in Redis") / stateful
    );
    for o in on_runs
        .iter()
        .chain(&off_runs)
        .chain(&guarded_runs)
        .chain(&unguarded_runs)
    {
        println!(
            "{:<36} {:>10.0} {:>9.2} {:>9.2} {:>8.0}% {:>12.1}",
            o.name,
            o.rps,
            o.p50_ms,
            o.p99_ms,
            100.0 * o.rps / floor,
            o.cpu_us
        );
    }
    let mean = |runs: &[Outcome], f: fn(&Outcome) -> f64| {
        runs.iter().map(f).sum::<f64>() / runs.len() as f64
    };
    let (on_rps, off_rps) = (mean(&on_runs, |o| o.rps), mean(&off_runs, |o| o.rps));
    let (on_cpu, off_cpu) = (mean(&on_runs, |o| o.cpu_us), mean(&off_runs, |o| o.cpu_us));
    println!(
        "analytics on: {on_rps:.0} req/s, off: {off_rps:.0} req/s, {:.1}% apart (target: under 5%); \
         CPU per request {on_cpu:.1} µs on, {off_cpu:.1} µs off ({:+.1}%); events dropped: {} \
         (target: 0)",
        100.0 * (off_rps - on_rps).abs() / off_rps,
        100.0 * (on_cpu - off_cpu) / off_cpu,
        app.analytics.dropped()
    );
    let (g_rps, u_rps) = (
        mean(&guarded_runs, |o| o.rps),
        mean(&unguarded_runs, |o| o.rps),
    );
    let (g_cpu, u_cpu) = (
        mean(&guarded_runs, |o| o.cpu_us),
        mean(&unguarded_runs, |o| o.cpu_us),
    );
    println!(
        "detection and rate limiting on: {g_rps:.0} req/s, off: {u_rps:.0} req/s, {:.1}% apart \
         (target: under 5%); CPU per request {g_cpu:.1} µs on, {u_cpu:.1} µs off ({:+.1}%)",
        100.0 * (u_rps - g_rps).abs() / u_rps,
        100.0 * (g_cpu - u_cpu) / u_cpu,
    );
}
