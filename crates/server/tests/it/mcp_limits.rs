//! What one client can make the MCP server hold (issue 6, item 22): sessions per user and in
//! total, the idle timeout, the same bounds on legacy SSE streams, and the metrics that count
//! them. Counts are read from the app's own state (each test app has its own registry).

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{McpReply, TestApp, initialize, initialized, rpc, spawn_app_with};

/// A token for user `sub` at `/mcp`.
fn token_for(app: &TestApp, sub: &str) -> String {
    app.mint_access_token(|c| c.sub = sub.into())
}

/// A token for user `sub` at `/sse`.
fn sse_token_for(app: &TestApp, sub: &str) -> String {
    app.mint_access_token(|c| {
        c.sub = sub.into();
        c.aud = app.sse_resource();
    })
}

/// `initialize` alone (what a client that leaks sessions sends).
async fn init(app: &TestApp, token: &str) -> McpReply {
    app.mcp_send(Some(token), None, &initialize(1)).await
}

/// A usable session: `initialize` and `notifications/initialized`.
async fn session(app: &TestApp, token: &str) -> String {
    app.mcp_session(token).await
}

async fn list_tools(app: &TestApp, token: &str, session: &str) -> McpReply {
    app.mcp_send(Some(token), Some(session), &rpc(2, "tools/list", json!({})))
        .await
}

/// The session's standalone event stream (GET), held open until dropped.
async fn open_stream(app: &TestApp, token: &str, session: &str) -> reqwest::Response {
    let r = app
        .mcp_request(Method::GET, "/mcp", Some(token))
        .header("accept", "text/event-stream")
        .header("mcp-session-id", session)
        .header("mcp-protocol-version", crate::helpers::MCP_VERSION)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r
}

/// A legacy SSE stream, held open until dropped; or the refusal.
async fn open_sse(app: &TestApp, token: &str) -> reqwest::Response {
    app.http
        .get(app.mcp_url("/sse"))
        .bearer_auth(token)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap()
}

/// Wait (up to 5 s) for `done`.
async fn eventually(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !done().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Assert a refusal: `status`, `Retry-After`, and a JSON-RPC error answering `id` that says why.
async fn assert_refused(r: reqwest::Response, status: StatusCode, id: Value, reason: &str) {
    assert_eq!(r.status(), status);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert!(r.headers().get("mcp-session-id").is_none(), "no session");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["jsonrpc"], "2.0", "{body}");
    assert_eq!(body["id"], id, "{body}");
    assert_eq!(body["error"]["code"], -32000, "{body}");
    assert_eq!(body["error"]["data"]["reason"], reason, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("MCP sessions")),
        "{body}"
    );
}

#[tokio::test]
async fn one_user_opening_hundreds_of_sessions_never_holds_more_than_the_cap() {
    let app = spawn_app_with(|r| r.mcp.max_sessions_per_user = 4).await;
    let token = token_for(&app, "leaky");
    let sessions = &app.state.mcp_sessions;
    let mut last = String::new();
    for i in 0..300 {
        let r = init(&app, &token).await;
        r.result();
        last = r.session_id().unwrap();
        assert!(sessions.held_by("leaky") <= 4, "after {i} initializes");
    }
    assert_eq!(sessions.held_by("leaky"), 4);
    assert_eq!(sessions.rmcp_sessions().await, 4, "rmcp holds only those");
    // Concurrent bursts: initializes in flight hold their slots, so a burst larger than the
    // cap gets some 429s, and never more than the cap at once.
    let mut ok = 0;
    for _ in 0..10 {
        let burst = futures::future::join_all((0..25).map(|_| init(&app, &token))).await;
        for r in burst {
            match r.status {
                StatusCode::OK => ok += 1,
                StatusCode::TOO_MANY_REQUESTS => {}
                other => panic!("{other}: {}", r.body),
            }
        }
        assert!(sessions.held_by("leaky") <= 4);
        assert!(sessions.rmcp_sessions().await <= 4);
    }
    assert!(ok >= 10, "each burst opens sessions ({ok})");
    // The client keeps working with its newest session.
    let newest = session(&app, &token).await;
    list_tools(&app, &token, &newest).await.result();
    assert!(list_tools(&app, &token, &last).await.status == StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_user_at_the_cap_loses_their_least_recently_used_idle_session() {
    let app = spawn_app_with(|r| r.mcp.max_sessions_per_user = 3).await;
    let token = token_for(&app, "a");
    let s1 = session(&app, &token).await;
    let s2 = session(&app, &token).await;
    let s3 = session(&app, &token).await;
    // s1 is the oldest, but used since: s2 is the least recently used.
    list_tools(&app, &token, &s1).await.result();
    let s4 = session(&app, &token).await;
    let gone = list_tools(&app, &token, &s2).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND, "{}", gone.body);
    for s in [&s1, &s3, &s4] {
        list_tools(&app, &token, s).await.result();
    }
    assert_eq!(app.state.mcp_sessions.rmcp_sessions().await, 3);
}

#[tokio::test]
async fn sessions_with_an_open_stream_are_kept_and_a_user_whose_sessions_all_stream_is_refused() {
    let app = spawn_app_with(|r| r.mcp.max_sessions_per_user = 2).await;
    let token = token_for(&app, "a");
    let s1 = session(&app, &token).await;
    let s2 = session(&app, &token).await;
    let stream1 = open_stream(&app, &token, &s1).await;
    let stream2 = open_stream(&app, &token, &s2).await;
    assert_eq!(
        app.state
            .mcp_sessions
            .count(mcp_oauth::mcp::sessions::Transport::StreamableHttp),
        (2, 2)
    );
    let refused = app
        .mcp_request(Method::POST, "/mcp", Some(&token))
        .body(initialize(41).to_string())
        .send()
        .await
        .unwrap();
    assert_refused(
        refused,
        StatusCode::TOO_MANY_REQUESTS,
        json!(41),
        "user_session_limit",
    )
    .await;
    assert_eq!(
        app.state.mcp_sessions.rmcp_sessions().await,
        2,
        "nothing half-made"
    );
    for s in [&s1, &s2] {
        list_tools(&app, &token, s).await.result();
    }
    // Once s2's stream ends, s2 is idle and gives way.
    drop(stream2);
    eventually("s2's stream closes", async || {
        app.state
            .mcp_sessions
            .count(mcp_oauth::mcp::sessions::Transport::StreamableHttp)
            .1
            == 1
    })
    .await;
    let s3 = session(&app, &token).await;
    assert_eq!(
        list_tools(&app, &token, &s2).await.status,
        StatusCode::NOT_FOUND
    );
    list_tools(&app, &token, &s1).await.result();
    list_tools(&app, &token, &s3).await.result();
    drop(stream1);
}

#[tokio::test]
async fn another_user_is_unaffected_by_a_user_at_the_cap() {
    let app = spawn_app_with(|r| r.mcp.max_sessions_per_user = 2).await;
    let (a, b) = (token_for(&app, "a"), token_for(&app, "b"));
    let b_session = session(&app, &b).await;
    for _ in 0..20 {
        init(&app, &a).await.result();
    }
    list_tools(&app, &b, &b_session).await.result();
    session(&app, &b).await;
    assert_eq!(app.state.mcp_sessions.held_by("a"), 2);
    assert_eq!(app.state.mcp_sessions.held_by("b"), 2);
    list_tools(&app, &b, &b_session).await.result();
}

#[tokio::test]
async fn past_the_total_cap_new_sessions_are_refused_and_nobody_elses_is_closed() {
    let app = spawn_app_with(|r| {
        r.mcp.max_sessions = 3;
        r.mcp.max_sessions_per_user = 2;
    })
    .await;
    let (a, b, c) = (
        token_for(&app, "a"),
        token_for(&app, "b"),
        token_for(&app, "c"),
    );
    let a1 = session(&app, &a).await;
    let a2 = session(&app, &a).await;
    let b1 = session(&app, &b).await;
    for token in [&b, &c] {
        let refused = app
            .mcp_request(Method::POST, "/mcp", Some(token))
            .body(initialize(5).to_string())
            .send()
            .await
            .unwrap();
        assert_refused(
            refused,
            StatusCode::SERVICE_UNAVAILABLE,
            json!(5),
            "server_session_limit",
        )
        .await;
    }
    for (t, s) in [(&a, &a1), (&a, &a2), (&b, &b1)] {
        list_tools(&app, t, s).await.result();
    }
    // A user at their own cap still replaces one of their own idle sessions.
    let a3 = session(&app, &a).await;
    list_tools(&app, &a, &a3).await.result();
    assert_eq!(app.state.mcp_sessions.open(), 3);
    // A closed session frees its slot.
    let r = app
        .mcp_request(Method::DELETE, "/mcp", Some(&b))
        .header("mcp-session-id", &b1)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    session(&app, &c).await;
}

#[tokio::test]
async fn idle_sessions_are_closed_after_the_timeout_and_their_memory_released() {
    let app = spawn_app_with(|r| r.mcp.session_idle_timeout_seconds = 2).await;
    let token = token_for(&app, "a");
    let sessions = &app.state.mcp_sessions;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(session(&app, &token).await);
    }
    let streaming = session(&app, &token).await;
    let stream = open_stream(&app, &token, &streaming).await;
    assert_eq!(sessions.open(), 6);
    assert_eq!(sessions.rmcp_sessions().await, 6);

    app.clock.advance(3);
    eventually("the idle sessions are closed", async || {
        sessions.open() == 1
    })
    .await;
    // rmcp's own map is emptied too: its handles (and workers) are gone, not just ours.
    assert_eq!(sessions.rmcp_sessions().await, 1);
    for id in &ids {
        assert_eq!(
            list_tools(&app, &token, id).await.status,
            StatusCode::NOT_FOUND
        );
    }
    // The session with an open stream stays, and works.
    list_tools(&app, &token, &streaming).await.result();
    // Its idle time starts when its stream ends.
    drop(stream);
    eventually("the stream ends", async || {
        sessions
            .count(mcp_oauth::mcp::sessions::Transport::StreamableHttp)
            .1
            == 0
    })
    .await;
    app.clock.advance(3);
    eventually("the last session is closed", async || sessions.open() == 0).await;
    assert_eq!(sessions.rmcp_sessions().await, 0);
}

#[tokio::test]
async fn legacy_sse_streams_count_against_the_same_bounds() {
    let app = spawn_app_with(|r| {
        r.mcp.max_sessions_per_user = 2;
        r.mcp.max_sessions = 3;
    })
    .await;
    let a = sse_token_for(&app, "a");
    let sse = mcp_oauth::mcp::sessions::Transport::Sse;
    let first = open_sse(&app, &a).await;
    let second = open_sse(&app, &a).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(second.status(), StatusCode::OK);
    assert_eq!(app.state.mcp_sessions.count(sse), (2, 2));
    // An open stream is in use: a third is refused, not traded for one of them.
    assert_refused(
        open_sse(&app, &a).await,
        StatusCode::TOO_MANY_REQUESTS,
        Value::Null,
        "user_session_limit",
    )
    .await;
    // The total counts both transports.
    let b = token_for(&app, "b");
    session(&app, &b).await;
    assert_refused(
        open_sse(&app, &sse_token_for(&app, "c")).await,
        StatusCode::SERVICE_UNAVAILABLE,
        Value::Null,
        "server_session_limit",
    )
    .await;
    // A stream that ends gives its slot back.
    drop(second);
    eventually("the stream's slot is given back", async || {
        app.state.mcp_sessions.count(sse).0 == 1
    })
    .await;
    assert_eq!(open_sse(&app, &a).await.status(), StatusCode::OK);
    drop(first);
}

#[tokio::test]
async fn a_legacy_stream_takes_the_place_of_an_idle_streamable_session_of_the_same_user() {
    let app = spawn_app_with(|r| r.mcp.max_sessions_per_user = 1).await;
    let idle = session(&app, &token_for(&app, "a")).await;
    let stream = open_sse(&app, &sse_token_for(&app, "a")).await;
    assert_eq!(stream.status(), StatusCode::OK);
    assert_eq!(
        list_tools(&app, &token_for(&app, "a"), &idle).await.status,
        StatusCode::NOT_FOUND
    );
}

/// The value of the sample `name{labels}` in a Prometheus text exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn metrics_count_open_sessions_streams_and_refusals() {
    let app = spawn_app_with(|r| r.mcp.max_sessions_per_user = 2).await;
    let token = token_for(&app, "a");
    let s1 = session(&app, &token).await;
    session(&app, &token).await;
    let stream = open_stream(&app, &token, &s1).await;
    let sse = open_sse(&app, &sse_token_for(&app, "b")).await;
    init(&app, &token).await.result(); // evicts the idle one
    let s4 = init(&app, &token).await.session_id().unwrap(); // the previous new one goes
    let stream4 = open_stream(&app, &token, &s4).await;
    assert_eq!(
        init(&app, &token).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    let r = app
        .http
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = r.text().await.unwrap();
    for (series, value) in [
        ("mcp_sessions_open{transport=\"streamable_http\"}", 2.0),
        ("mcp_sessions_open{transport=\"sse\"}", 1.0),
        ("mcp_streams_open{transport=\"streamable_http\"}", 2.0),
        ("mcp_streams_open{transport=\"sse\"}", 1.0),
        ("mcp_sessions_evicted_total", 2.0),
        (
            "mcp_sessions_refused_total{transport=\"streamable_http\",reason=\"user_limit\"}",
            1.0,
        ),
    ] {
        assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
    }
    assert!(text.contains("# HELP mcp_sessions_open"), "{text}");
    drop((stream, stream4, sse));
}

#[tokio::test]
async fn metrics_are_not_found_from_an_address_off_the_allowed_list() {
    let app = spawn_app_with(|r| r.trusted_proxies = vec!["127.0.0.1".into()]).await;
    let get = |forwarded_for: &'static str| {
        app.http
            .get(format!("{}/metrics", app.url))
            .header("x-forwarded-for", forwarded_for)
            .send()
    };
    let outside = get("203.0.113.7").await.unwrap();
    assert_eq!(outside.status(), StatusCode::NOT_FOUND);
    let unknown = app
        .http
        .get(format!("{}/no-such-page", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        outside.text().await.unwrap(),
        unknown.text().await.unwrap(),
        "the same answer as for a path we do not serve"
    );
    assert_eq!(get("127.0.0.1").await.unwrap().status(), StatusCode::OK);
    assert_eq!(get("::1").await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn metrics_can_be_opened_to_a_monitoring_network_or_closed() {
    let app = spawn_app_with(|r| {
        r.trusted_proxies = vec!["127.0.0.1".into()];
        r.metrics.allowed_cidrs = vec!["10.1.0.0/16".into()];
    })
    .await;
    let get = |forwarded_for: &'static str| {
        app.http
            .get(format!("{}/metrics", app.url))
            .header("x-forwarded-for", forwarded_for)
            .send()
    };
    assert_eq!(get("10.1.2.3").await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        get("127.0.0.1").await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    let closed = spawn_app_with(|r| r.metrics.allowed_cidrs = vec![]).await;
    let r = closed
        .http
        .get(format!("{}/metrics", closed.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn stateless_requests_and_notifications_take_no_slot_and_a_disguised_initialize_does() {
    let app = spawn_app_with(|r| r.mcp.max_sessions_per_user = 1).await;
    let token = token_for(&app, "a");
    let s = session(&app, &token).await;
    let stream = open_stream(&app, &token, &s).await;
    // A 2026-07-28 request is stateless: no session, so no slot, even for a user at the cap.
    let discover = app
        .mcp_request(Method::POST, "/mcp", Some(&token))
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "server/discover")
        .body(
            rpc(
                9,
                "server/discover",
                json!({"_meta": {
                    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                    "io.modelcontextprotocol/clientInfo": {"name": "it", "version": "0"},
                    "io.modelcontextprotocol/clientCapabilities": {}
                }}),
            )
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(discover.status(), StatusCode::OK);
    // An `initialize` under another method's `Mcp-Method` header is still an `initialize`
    // (rmcp makes a session of it): it gets no way past the bounds.
    let disguised = app
        .mcp_request(Method::POST, "/mcp", Some(&token))
        .header("mcp-method", "tools/list")
        .body(initialize(3).to_string())
        .send()
        .await
        .unwrap();
    assert_refused(
        disguised,
        StatusCode::TOO_MANY_REQUESTS,
        json!(3),
        "user_session_limit",
    )
    .await;
    assert_eq!(app.state.mcp_sessions.rmcp_sessions().await, 1);
    let ack = app.mcp_send(Some(&token), Some(&s), &initialized()).await;
    assert_eq!(ack.status, StatusCode::ACCEPTED);
    assert_eq!(app.state.mcp_sessions.open(), 1);
    drop(stream);
}
