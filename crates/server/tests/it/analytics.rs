//! Analytics over real HTTP: a known workload (sign-ins, registrations, authorizations, code
//! exchanges, refreshes, a replay, MCP sessions with successful, failing and refused tool
//! calls, unauthenticated MCP requests) and the summary API's figures, asserted exactly.
//! Runs on SQLite and, in CI, PostgreSQL; the last test has two instances share a database.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    Browser, ClientAuth, PASSWORD, TestApp, initialize, initialized, ok_json, spawn_app_with,
    spawn_second_instance, tool_call,
};

const ADMIN: &str = "admin@example.com";

async fn spawn() -> TestApp {
    spawn_app_with(|s| s.analytics.flush_interval_ms = 20).await
}

/// The summary of the last hour (and the next), read as `browser`.
async fn summary_as(app: &TestApp, browser: &Browser) -> (StatusCode, Value) {
    let now = app.clock.now();
    let fmt = |t: i64| mcp_oauth_core::analytics::summary::rfc3339(t * 1000);
    let url = format!(
        "{}/analytics/api/summary?from={}&to={}",
        app.url,
        fmt(now - 3600),
        fmt(now + 3600)
    );
    let r = browser.get(&url).await;
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Poll the summary until `done` holds for it (events reach the database a few
/// milliseconds after their response), then return it.
async fn settled_summary(app: &TestApp, admin: &Browser, done: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..200 {
        let (status, s) = summary_as(app, admin).await;
        assert_eq!(status, StatusCode::OK, "{s}");
        if done(&s) {
            return s;
        }
        last = s;
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("the summary never settled: {last:#}");
}

async fn admin_browser(app: &TestApp) -> Browser {
    app.create_user(ADMIN, true).await;
    let b = Browser::new(app);
    assert_eq!(
        b.login(ADMIN, PASSWORD).await.status(),
        StatusCode::SEE_OTHER
    );
    b
}

/// An MCP session for `token`, as the SDKs open one.
async fn session(app: &TestApp, token: &str) -> String {
    let init = app.mcp_send(Some(token), None, &initialize(1)).await;
    init.result();
    let id = init.session_id().expect("a session");
    let ack = app.mcp_send(Some(token), Some(&id), &initialized()).await;
    assert_eq!(ack.status, StatusCode::ACCEPTED);
    id
}

fn tool<'a>(s: &'a Value, name: &str) -> &'a Value {
    s["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no tool {name} in {s:#}"))
}

fn by_key<'a>(s: &'a Value, list: &str, key: &str, value: &str) -> &'a Value {
    s[list]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e[key] == value)
        .unwrap_or_else(|| panic!("no {list} entry with {key} = {value} in {s:#}"))
}

#[tokio::test]
async fn a_known_workload_gives_exact_figures() {
    let app = spawn().await;
    let admin = admin_browser(&app).await;

    // Two users, two dynamically registered clients.
    let alice = app.signed_in_browser("alice@example.com").await;
    let bob = app.signed_in_browser("bob@example.com").await;
    let (r1, r2) = ("http://127.0.0.1:7001/cb", "http://127.0.0.1:7002/cb");
    let c1 = ClientAuth::Public(app.register_public_client(r1).await);
    let c2 = ClientAuth::Public(app.register_public_client(r2).await);

    // Three authorizations that are used, and one whose code is replayed.
    let alice_c1 = app.tokens_for(&c1, &alice, r1, &[]).await;
    let bob_c2 = app.tokens_for(&c2, &bob, r2, &[]).await;
    let _alice_c2 = app.tokens_for(&c2, &alice, r2, &[]).await;
    let (code, pkce) = app.code_for(&bob, c1.id(), r1, &[]).await;
    ok_json(app.exchange_as(&c1, &code, r1, &pkce).await).await;
    let replay = app.exchange_as(&c1, &code, r1, &pkce).await;
    assert_eq!(replay.status(), StatusCode::BAD_REQUEST);

    // Two refreshes, each with the token the previous one returned.
    assert!(!alice_c1.refresh_token.is_empty(), "a refresh token");
    let first = ok_json(app.refresh_as(&c1, &alice_c1.refresh_token, &[]).await).await;
    let second = first["refresh_token"].as_str().unwrap();
    let refreshed = ok_json(app.refresh_as(&c1, second, &[]).await).await;
    let alice_token = refreshed["access_token"].as_str().unwrap().to_owned();

    // Three refused password submissions, one for an email nobody has.
    let stranger = Browser::new(&app);
    for (email, password) in [
        ("alice@example.com", "wrong"),
        ("alice@example.com", "wrong again"),
        ("nobody@example.com", PASSWORD),
    ] {
        let r = stranger.login(email, password).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }

    // Alice: three sums, one overflowing sum (a tool error), one unknown tool (a JSON-RPC
    // error). Bob: two sums and a tools/list.
    let s = session(&app, &alice_token).await;
    for i in 0..3 {
        app.mcp_send(
            Some(&alice_token),
            Some(&s),
            &tool_call(10 + i, "add_numbers", json!({"a": i, "b": 2})),
        )
        .await
        .result();
    }
    let overflow = app
        .mcp_send(
            Some(&alice_token),
            Some(&s),
            &tool_call(20, "add_numbers", json!({"a": 1e308, "b": 1e308})),
        )
        .await;
    assert!(overflow.tool_text().1, "a tool error");
    let unknown = app
        .mcp_send(
            Some(&alice_token),
            Some(&s),
            &tool_call(21, "no_such_tool", json!({})),
        )
        .await;
    assert!(
        unknown.messages[0]["error"]["code"].is_i64(),
        "a JSON-RPC error: {}",
        unknown.body
    );
    let s = session(&app, &bob_c2.access_token).await;
    for i in 0..2 {
        app.mcp_send(
            Some(&bob_c2.access_token),
            Some(&s),
            &tool_call(30 + i, "add_numbers", json!({"a": 1, "b": i})),
        )
        .await
        .result();
    }
    app.mcp_send(
        Some(&bob_c2.access_token),
        Some(&s),
        &crate::helpers::rpc(40, "tools/list", json!({})),
    )
    .await
    .result();

    // Two MCP requests without a token.
    for _ in 0..2 {
        let r = app.mcp_send(None, None, &initialize(1)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }

    let s = settled_summary(&app, &admin, |s| {
        s["mcp"]["methods"]["tools/list"] == 1
            && s["mcp"]["unauthorized"] == 2
            && s["oauth"]["failed_sign_ins"] == 3
            && s["requests"]["by_route"]["/mcp"] == 14
    })
    .await;

    assert_eq!(s["mcp"]["sessions"], 2, "{s:#}");
    assert_eq!(s["mcp"]["unauthorized"], 2);
    assert_eq!(
        s["mcp"]["methods"],
        json!({"initialize": 2, "notifications/initialized": 2, "tools/call": 7, "tools/list": 1})
    );
    assert_eq!(
        s["mcp"]["by_software"]["it/0"], 12,
        "every message of both sessions"
    );
    assert_eq!(s["mcp"]["by_transport"]["streamable_http"], 14);
    assert_eq!(
        s["mcp"]["by_protocol_version"][crate::helpers::MCP_VERSION],
        12
    );

    let add = tool(&s, "add_numbers");
    assert_eq!(
        [
            &add["calls"],
            &add["successes"],
            &add["tool_errors"],
            &add["protocol_errors"],
            &add["unique_users"]
        ],
        [&json!(6), &json!(5), &json!(1), &json!(0), &json!(2)],
        "{add}"
    );
    for p in ["p50_ms", "p95_ms", "p99_ms"] {
        assert!(add[p].as_f64().is_some_and(|v| v > 0.0), "{p}: {add}");
    }
    let unknown = tool(&s, "no_such_tool");
    assert_eq!(
        (&unknown["calls"], &unknown["protocol_errors"]),
        (&json!(1), &json!(1))
    );

    let alice = by_key(&s, "users", "email", "alice@example.com");
    assert_eq!(
        (&alice["tool_calls"], &alice["sessions"]),
        (&json!(5), &json!(1))
    );
    let bob = by_key(&s, "users", "email", "bob@example.com");
    assert_eq!(
        (&bob["tool_calls"], &bob["sessions"]),
        (&json!(2), &json!(1))
    );

    let c1_row = by_key(&s, "clients", "client_id", c1.id());
    assert_eq!(
        (&c1_row["users"], &c1_row["tool_calls"]),
        (&json!(2), &json!(5))
    );
    let c2_row = by_key(&s, "clients", "client_id", c2.id());
    assert_eq!(
        (&c2_row["users"], &c2_row["tool_calls"]),
        (&json!(2), &json!(2))
    );

    let o = &s["oauth"];
    assert_eq!(o["registrations"], 2, "{o:#}");
    assert_eq!(o["authorizations_granted"], 4);
    assert_eq!(o["authorizations_denied"], 0);
    assert_eq!(o["code_exchanges"], 4);
    assert_eq!(o["refresh_grants"], 2);
    assert_eq!(o["client_credentials_grants"], 0);
    assert_eq!(o["code_replay_detected"], 1);
    assert_eq!(o["refresh_reuse_detected"], 0);
    assert_eq!(o["token_failures"], json!({"invalid_grant": 1}));
    // The admin, alice and bob signed in; three submissions were refused.
    assert_eq!(o["sign_ins"], 3);
    assert_eq!(o["failed_sign_ins"], 3);
    assert_eq!(o["pkce_s256_share"], 1.0);

    // Seven token requests: four exchanges, one replay, two refreshes.
    assert_eq!(s["requests"]["by_route"]["/token"], 7);
    assert_eq!(s["requests"]["by_route"]["/register"], 2);
    assert!(s["requests"]["by_status"]["401"].as_u64().unwrap() >= 5);
    assert_eq!(s["dropped_events"], 0);
}

#[tokio::test]
async fn the_summary_is_for_admins_only() {
    let app = spawn_app_with(|s| {
        s.analytics.admin_emails = vec!["Ops@Example.com".into()];
    })
    .await;
    let anonymous = Browser::new(&app);
    assert_eq!(
        summary_as(&app, &anonymous).await.0,
        StatusCode::UNAUTHORIZED
    );
    let user = app.signed_in_browser("someone@example.com").await;
    assert_eq!(summary_as(&app, &user).await.0, StatusCode::FORBIDDEN);
    // On the list, compared without regard to case.
    let ops = app.signed_in_browser("ops@example.com").await;
    assert_eq!(summary_as(&app, &ops).await.0, StatusCode::OK);
    let admin = admin_browser(&app).await;
    assert_eq!(summary_as(&app, &admin).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_bad_range_is_an_invalid_request() {
    let app = spawn().await;
    let admin = admin_browser(&app).await;
    for query in [
        "from=yesterday",
        "from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
        "from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z",
    ] {
        let r = admin
            .get(&format!("{}/analytics/api/summary?{query}", app.url))
            .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{query}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "invalid_request");
    }
}

#[tokio::test]
async fn events_outside_the_range_are_not_counted() {
    let app = spawn().await;
    let admin = admin_browser(&app).await;
    let s = settled_summary(&app, &admin, |s| s["oauth"]["sign_ins"] == 1).await;
    assert_eq!(s["oauth"]["sign_ins"], 1);
    // A range that ends before the admin signed in.
    let now = app.clock.now();
    let fmt = |t: i64| mcp_oauth_core::analytics::summary::rfc3339(t * 1000);
    let r = admin
        .get(&format!(
            "{}/analytics/api/summary?from={}&to={}",
            app.url,
            fmt(now - 7200),
            fmt(now - 60)
        ))
        .await;
    let s: Value = r.json().await.unwrap();
    assert_eq!(s["oauth"]["sign_ins"], 0, "{s:#}");
    assert_eq!(s["requests"]["total"], 0);
}

#[tokio::test]
async fn two_instances_on_one_database_add_up() {
    let app = spawn().await;
    let second = spawn_second_instance(&app).await;
    let admin = admin_browser(&app).await;
    // Three unauthenticated MCP requests to each instance.
    for instance in [&app, &second] {
        for _ in 0..3 {
            let r = instance.mcp_send(None, None, &initialize(1)).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        }
    }
    let s = settled_summary(&app, &admin, |s| s["mcp"]["unauthorized"] == 6).await;
    assert_eq!(s["mcp"]["unauthorized"], 6);
    assert_eq!(s["requests"]["by_route"]["/mcp"], 6);
}

#[tokio::test]
async fn the_command_line_prints_the_same_summary() {
    let app = spawn().await;
    let admin = admin_browser(&app).await;
    let api = settled_summary(&app, &admin, |s| s["oauth"]["sign_ins"] == 1).await;
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_mcp-oauth"));
    command
        .env_clear()
        .env("MCP_OAUTH_DATABASE_URL", &app.database_url)
        .env(
            "MCP_OAUTH_KEYS__ENCRYPTION_KEY",
            crate::helpers::TEST_ENCRYPTION_KEY,
        )
        .args([
            "analytics",
            "summary",
            "--from",
            api["from"].as_str().unwrap(),
            "--to",
            api["to"].as_str().unwrap(),
        ]);
    let out = crate::helpers::output_of(command).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(cli, api);
}

/// The dashboard's pages, as an admin sees them after some traffic.
#[tokio::test]
async fn every_dashboard_page_renders_for_an_admin() {
    let app = spawn().await;
    let admin = admin_browser(&app).await;
    // A client whose name is markup must be shown as text.
    let client = app
        .register_client(json!({
            "client_name": "<script>alert(1)</script>",
            "redirect_uris": ["http://127.0.0.1:7009/cb"],
            "token_endpoint_auth_method": "none"
        }))
        .await;
    let user = app.signed_in_browser("carol@example.com").await;
    let tokens = app
        .tokens_for(
            &ClientAuth::Public(client.clone()),
            &user,
            "http://127.0.0.1:7009/cb",
            &[],
        )
        .await;
    let s = session(&app, &tokens.access_token).await;
    app.mcp_send(
        Some(&tokens.access_token),
        Some(&s),
        &tool_call(2, "add_numbers", json!({"a": 1, "b": 2})),
    )
    .await
    .result();
    settled_summary(&app, &admin, |s| s["mcp"]["methods"]["tools/call"] == 1).await;

    for (path, marker) in [
        ("/analytics", "id=\"requests-chart\""),
        // No GeoIP database here: the panel says how to get one, and shows no country.
        ("/analytics", "id=\"geography-off\""),
        ("/analytics/oauth", "id=\"clients\""),
        ("/analytics/tools", "id=\"tool-0-calls\""),
        ("/analytics/users", "carol@example.com"),
        ("/analytics/events?tool=add_numbers", "id=\"breakdown\""),
    ] {
        for range in ["1h", "6h", "24h", "7d", "30d"] {
            let r = admin
                .get(&format!(
                    "{}{path}{}range={range}",
                    app.url,
                    if path.contains('?') { "&" } else { "?" }
                ))
                .await;
            assert_eq!(r.status(), StatusCode::OK, "{path} {range}");
            let csp = r.headers()["content-security-policy"]
                .to_str()
                .unwrap()
                .to_owned();
            assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
            let html = r.text().await.unwrap();
            assert!(html.contains(marker), "{path} {range} lacks {marker}");
            assert!(!html.contains("<script>alert"), "{path}: markup escaped");
        }
    }
    let oauth = admin
        .get(&format!("{}/analytics/oauth", app.url))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        oauth.contains("alert(1)") && !oauth.contains("<script>"),
        "the name is shown as text"
    );
    assert!(oauth.contains(&client), "the client is listed");

    // A custom range, and one that is not.
    let r = admin
        .get(&format!(
            "{}/analytics?from=2026-01-01T00:00&to=2026-01-02T00:00",
            app.url
        ))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = admin
        .get(&format!(
            "{}/analytics?from=2026-01-02T00:00&to=2026-01-01T00:00",
            app.url
        ))
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_dashboard_sends_strangers_to_sign_in_and_refuses_non_admins() {
    let app = spawn().await;
    let anonymous = Browser::new(&app);
    let r = anonymous.get(&format!("{}/analytics/tools", app.url)).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to = crate::helpers::location(&r);
    assert!(to.contains("/login?return_to=%2Fanalytics%2Ftools"), "{to}");
    let user = app.signed_in_browser("dave@example.com").await;
    for path in [
        "/analytics",
        "/analytics/users",
        "/analytics/live?page=overview",
    ] {
        let r = user.get(&format!("{}{path}", app.url)).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{path}");
    }
    assert_eq!(
        anonymous
            .get(&format!("{}/analytics/nothing", app.url))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
}

/// Read `r`'s body until `needle` has arrived (within 20 s); returns what was read.
async fn read_until(r: &mut reqwest::Response, needle: &str) -> String {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut seen = String::new();
    while !seen.contains(needle) {
        let chunk = tokio::time::timeout_at(deadline, r.chunk())
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} in time; read: {seen}"))
            .expect("the stream stays open")
            .expect("more data");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    seen
}

/// The live stream pushes the overview's panels again when a tool call lands.
#[tokio::test]
async fn the_live_stream_pushes_new_figures() {
    let app = spawn().await;
    let admin = admin_browser(&app).await;
    let tokens = app.tokens_for_new_client("erin@example.com").await;
    let mut r = admin
        .get(&format!(
            "{}/analytics/live?page=overview&range=1h",
            app.url
        ))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    read_until(&mut r, "event: panels").await;
    let s = session(&app, &tokens.access_token).await;
    app.mcp_send(
        Some(&tokens.access_token),
        Some(&s),
        &tool_call(2, "add_numbers", json!({"a": 1, "b": 2})),
    )
    .await
    .result();
    read_until(&mut r, "<dd id=\"tool-calls\">1</dd>").await;
}

/// SIGTERM: the writer stores what is queued before the process exits. The flush interval is
/// longer than the test, so only the drain at shutdown can have stored these events.
#[tokio::test]
async fn events_queued_at_sigterm_are_stored_before_exit() {
    let mut server = crate::helpers::ServerProcess::start(&[(
        "MCP_OAUTH_ANALYTICS__FLUSH_INTERVAL_MS",
        "600000",
    )])
    .await;
    let http = reqwest::Client::new();
    for _ in 0..5 {
        assert_eq!(
            server.initialize_without_token(&http).await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert!(
        server.terminate().await,
        "a clean exit: {}",
        server.stderr()
    );
    let out = server.admin(&["analytics", "summary"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["mcp"]["unauthorized"], 5, "{s:#}");
}

/// Sends `body` to `/mcp` as if from `ip` (the app trusts 127.0.0.1 as a proxy).
async fn mcp_from(
    app: &TestApp,
    ip: Option<&str>,
    token: Option<&str>,
    session: Option<&str>,
    body: &Value,
) -> StatusCode {
    let mut req = app
        .mcp_request(reqwest::Method::POST, "/mcp", token)
        .body(body.to_string());
    if let Some(ip) = ip {
        req = req.header("x-forwarded-for", ip);
    }
    if let Some(s) = session {
        req = req.header("mcp-session-id", s);
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    r.bytes().await.unwrap();
    status
}

#[tokio::test]
async fn geography_counts_traffic_per_country_and_private_addresses_as_private() {
    let geoip =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/test-country.mmdb");
    let app = spawn_app_with(move |s| {
        s.analytics.flush_interval_ms = 20;
        s.analytics.geoip_database = Some(geoip);
        s.trusted_proxies = vec!["127.0.0.1".into()];
    })
    .await;
    let admin = admin_browser(&app).await;
    let tokens = app.tokens_for_new_client("dora@example.com").await;
    let token = Some(tokens.access_token.as_str());

    // A session opened from the loopback address and acknowledged from Great Britain, two
    // tool calls from there, one from Sweden, one from an address the database does not
    // know, one from the loopback address (private), and an unauthenticated request from
    // Norway over IPv6.
    let gb = Some("81.2.69.160");
    let init = app.mcp_send(token, None, &initialize(1)).await;
    let id = init.session_id().expect("a session");
    assert_eq!(
        mcp_from(&app, gb, token, Some(&id), &initialized()).await,
        StatusCode::ACCEPTED
    );
    let call = tool_call(2, "add_numbers", json!({"a": 1, "b": 2}));
    for ip in [gb, gb, Some("89.160.20.112"), Some("8.8.8.8"), None] {
        assert_eq!(
            mcp_from(&app, ip, token, Some(&id), &call).await,
            StatusCode::OK
        );
    }
    assert_eq!(
        mcp_from(&app, Some("2a02:cf40::7"), None, None, &call).await,
        StatusCode::UNAUTHORIZED
    );

    let s = settled_summary(&app, &admin, |s| {
        s["mcp"]["methods"]["tools/call"] == 5 && s["mcp"]["unauthorized"] == 1
    })
    .await;
    let country = |code: &str| -> (u64, u64, u64, u64) {
        let c = by_key(&s, "geography", "country", code);
        let n = |k: &str| c[k].as_u64().unwrap();
        (n("requests"), n("errors"), n("tool_calls"), n("users"))
    };
    assert_eq!(country("GB"), (3, 0, 2, 1), "{s:#}");
    assert_eq!(country("SE"), (1, 0, 1, 1));
    assert_eq!(country("unknown"), (1, 0, 1, 1));
    assert_eq!(country("NO"), (1, 1, 0, 0));
    // Everything else (the sign-ins, the authorization, the token request, the initialize
    // above) came from 127.0.0.1, which has no country.
    let private = by_key(&s, "geography", "country", "private");
    assert_eq!(private["tool_calls"], 1);
    let all: u64 = s["geography"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(all, s["requests"]["total"].as_u64().unwrap(), "{s:#}");
    assert_eq!(s["geography"].as_array().unwrap().len(), 5);

    // The raw events carry the country too (drill-downs and exports).
    let page = admin
        .get(&format!("{}/analytics?range=1h", app.url))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("id=\"countries\""), "the geography table");
    assert!(page.contains("<td>GB</td>") && page.contains("Private addresses"));
    let fmt = |t: i64| mcp_oauth_core::analytics::summary::rfc3339(t * 1000);
    let now = app.clock.now();
    let export = admin
        .get(&format!(
            "{}/analytics/api/export?from={}&to={}&format=csv",
            app.url,
            fmt(now - 3600),
            fmt(now + 3600)
        ))
        .await;
    assert_eq!(export.status(), StatusCode::OK);
    let csv = export.text().await.unwrap();
    assert!(csv.lines().next().unwrap().contains(",country,"), "{csv}");
    assert!(csv.contains(",SE,"), "{csv}");
}

/// Two real server processes on one database (in CI, one PostgreSQL), as behind a load
/// balancer: each records its own traffic, and the figures read back are their sum.
#[tokio::test]
async fn two_server_processes_on_one_database_add_up() {
    let app = spawn().await;
    let mut env = vec![
        ("MCP_OAUTH_DATABASE_URL", app.database_url.as_str()),
        ("MCP_OAUTH_ANALYTICS__FLUSH_INTERVAL_MS", "50"),
    ];
    if std::env::var("MCP_OAUTH_TEST_DATABASE_URL").is_ok() {
        env.push((
            "MCP_OAUTH_KEYS__ENCRYPTION_KEY",
            crate::helpers::TEST_ENCRYPTION_KEY,
        ));
    }
    let (mut first, mut second) = tokio::join!(
        crate::helpers::ServerProcess::start(&env),
        crate::helpers::ServerProcess::start(&env)
    );
    let http = reqwest::Client::new();
    // Unauthenticated MCP requests in parallel to both (3 and 4), and a metadata request each.
    let mcp = [(&first, 3), (&second, 4)]
        .into_iter()
        .flat_map(|(server, n)| (0..n).map(move |_| server))
        .map(|server| server.initialize_without_token(&http));
    for status in futures::future::join_all(mcp).await {
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    for server in [&first, &second] {
        let url = format!("{}/.well-known/oauth-authorization-server", server.url);
        assert_eq!(http.get(url).send().await.unwrap().status(), StatusCode::OK);
    }
    for server in [&mut first, &mut second] {
        assert!(
            server.terminate().await,
            "a clean exit: {}",
            server.stderr()
        );
    }
    let now = app.clock.now_millis();
    let s = mcp_oauth::analytics::summary(&app.state.db, now - 3_600_000, now + 3_600_000)
        .await
        .unwrap();
    assert_eq!(s.mcp.unauthorized, 7, "{s:#?}");
    assert_eq!(s.requests.by_route["/mcp"], 7);
    assert_eq!(
        s.requests.by_route["/.well-known/oauth-authorization-server"],
        2
    );
    assert_eq!(s.requests.by_status["401"], 7);
}
