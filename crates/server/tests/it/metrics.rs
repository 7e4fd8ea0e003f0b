//! Prometheus metrics over real HTTP: after a known workload, `/metrics` shows the request
//! counters, the MCP operation histogram per tool and error type, tokens issued per grant and
//! security events, with exact values and without any user, client or address in a label;
//! and who may read it (allowed addresses, or the bearer token from anywhere).

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Browser, TestApp, spawn_app_with, tool_call};

/// The value of the sample `series` (name and labels, exactly as rendered).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn scrape(app: &TestApp) -> String {
    let r = app
        .http
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.text().await.unwrap()
}

/// Scrape until every `(series, value)` holds (a request's metrics are taken when its last
/// byte is sent, a moment after a client may have read it), then return the text.
async fn settled(app: &TestApp, expected: &[(String, f64)]) -> String {
    let mut text = String::new();
    for _ in 0..100 {
        text = scrape(app).await;
        if expected
            .iter()
            .all(|(series, value)| sample(&text, series) == Some(*value))
        {
            return text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for (series, value) in expected {
        assert_eq!(sample(&text, series), Some(*value), "{series} in\n{text}");
    }
    text
}

fn operation(tool: &str, error_type: &str) -> String {
    format!(
        "mcp_server_operation_duration_seconds_count{{mcp_method_name=\"tools/call\",\
         gen_ai_tool_name=\"{tool}\",error_type=\"{error_type}\"}}"
    )
}

#[tokio::test]
async fn metrics_count_requests_mcp_operations_tokens_and_security_events() {
    let app = spawn_app_with(|_| {}).await;
    let tokens = app.tokens_for_new_client("alice@example.com").await;
    let token = tokens.access_token.clone();

    // A replayed code (a second authorization of the same client), a refresh, and two refused
    // password submissions.
    let redirect = "http://127.0.0.1:7777/callback";
    let (code, pkce) = app
        .code_for(&tokens.browser, &tokens.client_id, redirect, &[])
        .await;
    assert_eq!(
        app.exchange_as(&tokens.auth, &code, redirect, &pkce)
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        app.exchange_as(&tokens.auth, &code, redirect, &pkce)
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );
    let r = app
        .refresh_as(&tokens.auth, &tokens.refresh_token, &[])
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let stranger = Browser::new(&app);
    for password in ["wrong", "wrong again"] {
        let r = stranger.login("alice@example.com", password).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }

    // Four sums, one tool error, one tool the server does not have.
    let s = app.mcp_session(&token).await;
    for i in 0..4 {
        app.mcp_send(
            Some(&token),
            Some(&s),
            &tool_call(10 + i, "add_numbers", json!({"a": i, "b": 1})),
        )
        .await
        .result();
    }
    let area = app
        .mcp_send(
            Some(&token),
            Some(&s),
            &tool_call(20, "calculate_circle_area", json!({"radius": -1})),
        )
        .await;
    assert!(area.tool_text().1, "a tool error");
    let unknown = app
        .mcp_send(
            Some(&token),
            Some(&s),
            &tool_call(21, "x-made-up-tool-name", json!({})),
        )
        .await;
    let code = unknown.messages[0]["error"]["code"]
        .as_i64()
        .expect("a JSON-RPC error");
    // Two requests without a token.
    for _ in 0..2 {
        let r = app
            .mcp_send(None, None, &crate::helpers::initialize(1))
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }

    let expected: Vec<(String, f64)> = vec![
        (operation("add_numbers", ""), 4.0),
        (operation("calculate_circle_area", "tool_error"), 1.0),
        (operation("_OTHER", &code.to_string()), 1.0),
        (
            "mcp_server_operation_duration_seconds_count{mcp_method_name=\"initialize\",\
             gen_ai_tool_name=\"\",error_type=\"\"}"
                .into(),
            1.0,
        ),
        (
            "mcp_oauth_tokens_issued_total{grant_type=\"authorization_code\"}".into(),
            2.0,
        ),
        (
            "mcp_oauth_tokens_issued_total{grant_type=\"refresh_token\"}".into(),
            1.0,
        ),
        (
            "mcp_oauth_security_events_total{type=\"code_replay_detected\"}".into(),
            1.0,
        ),
        (
            "mcp_oauth_security_events_total{type=\"sign_in_failed\"}".into(),
            2.0,
        ),
        (
            "mcp_oauth_http_requests_total{route=\"/register\",method=\"POST\",status=\"201\"}"
                .into(),
            1.0,
        ),
        (
            "mcp_oauth_http_requests_total{route=\"/token\",method=\"POST\",status=\"200\"}".into(),
            3.0,
        ),
        (
            "mcp_oauth_http_requests_total{route=\"/token\",method=\"POST\",status=\"400\"}".into(),
            1.0,
        ),
        (
            "mcp_oauth_http_requests_total{route=\"/mcp\",method=\"POST\",status=\"401\"}".into(),
            2.0,
        ),
        (
            "mcp_oauth_http_requests_total{route=\"/login\",method=\"POST\",status=\"401\"}".into(),
            2.0,
        ),
        (
            "mcp_oauth_http_request_duration_seconds_count{route=\"/token\",method=\"POST\"}"
                .into(),
            4.0,
        ),
        ("mcp_oauth_analytics_events_dropped_total".into(), 0.0),
    ];
    let text = settled(&app, &expected).await;

    // Histograms, with buckets from 1 ms to 30 s rather than summaries.
    let bucket = "mcp_server_operation_duration_seconds_bucket{mcp_method_name=\"tools/call\",\
                  gen_ai_tool_name=\"add_numbers\",error_type=\"\",le=";
    for le in ["\"0.001\"}", "\"30\"}", "\"+Inf\"}"] {
        assert!(
            text.contains(&format!("{bucket}{le}")),
            "{bucket}{le} in\n{text}"
        );
    }
    assert_eq!(sample(&text, &format!("{bucket}\"+Inf\"}}")), Some(4.0));
    assert!(!text.contains("quantile="), "no summaries:\n{text}");
    assert!(
        text.contains("# HELP mcp_server_operation_duration_seconds"),
        "{text}"
    );
    // Bounded labels only: no user, client, address or made-up tool name.
    let user = crate::helpers::jwt_claims(&token)["sub"]
        .as_str()
        .unwrap()
        .to_owned();
    for unwanted in [
        user.as_str(),
        tokens.client_id.as_str(),
        "127.0.0.1",
        "x-made-up-tool-name",
        "alice",
    ] {
        assert!(!text.contains(unwanted), "{unwanted} in\n{text}");
    }
}

#[tokio::test]
async fn request_metrics_are_kept_with_analytics_off() {
    let app = spawn_app_with(|s| s.analytics.enabled = false).await;
    for _ in 0..3 {
        let r = app.token(&[("grant_type", "password")]).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    }
    settled(
        &app,
        &[(
            "mcp_oauth_http_requests_total{route=\"/token\",method=\"POST\",status=\"400\"}".into(),
            3.0,
        )],
    )
    .await;
}

const METRICS_TOKEN: &str = "prometheus-scrape-token-0123456789abcdef";

#[tokio::test]
async fn a_bearer_token_opens_the_metrics_from_any_address_and_a_wrong_one_gets_404() {
    let app = spawn_app_with(|s| {
        s.trusted_proxies = vec!["127.0.0.1".into()];
        s.metrics.bearer_token = Some(METRICS_TOKEN.into());
    })
    .await;
    let scrape_from = |address: &'static str, authorization: Option<String>| {
        let mut req = app
            .http
            .get(format!("{}/metrics", app.url))
            .header("x-forwarded-for", address);
        if let Some(a) = authorization {
            req = req.header("authorization", a);
        }
        req.send()
    };
    let outside = "203.0.113.7";
    let r = scrape_from(outside, Some(format!("Bearer {METRICS_TOKEN}")))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().contains("# HELP"));
    for (authorization, why) in [
        (None, "no token"),
        (Some(format!("Bearer {METRICS_TOKEN}x")), "a longer token"),
        (Some("Bearer prometheus".to_owned()), "a prefix"),
        (Some(format!("Basic {METRICS_TOKEN}")), "another scheme"),
    ] {
        let r = scrape_from(outside, authorization).await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{why}");
    }
    // The allowed addresses still need no token.
    let r = scrape_from("127.0.0.1", None).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // The token never appears in what is served.
    let text = scrape_from("127.0.0.1", None)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!text.contains(METRICS_TOKEN));
}

#[tokio::test]
async fn the_bearer_token_alone_opens_metrics_closed_to_every_address() {
    let app = spawn_app_with(|s| {
        s.metrics.allowed_cidrs = vec![];
        s.metrics.bearer_token = Some(METRICS_TOKEN.into());
    })
    .await;
    let get = |authorization: Option<&str>| {
        let mut req = app.http.get(format!("{}/metrics", app.url));
        if let Some(a) = authorization {
            req = req.header("authorization", a.to_owned());
        }
        req.send()
    };
    assert_eq!(get(None).await.unwrap().status(), StatusCode::NOT_FOUND);
    assert_eq!(
        get(Some(&format!("Bearer {METRICS_TOKEN}")))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

#[test]
fn check_config_says_a_metrics_token_is_set_without_printing_it() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mcp-oauth"))
        .env_clear()
        .env("MCP_OAUTH_DATABASE_URL", "sqlite::memory:")
        .env("MCP_OAUTH_METRICS__BEARER_TOKEN", METRICS_TOKEN)
        .arg("check-config")
        .output()
        .expect("run mcp-oauth");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{printed}");
    assert!(!printed.contains(METRICS_TOKEN), "{printed}");
    assert!(
        printed.contains("\"metrics_bearer_token\": \"set, not shown\""),
        "{printed}"
    );
    let short = std::process::Command::new(env!("CARGO_BIN_EXE_mcp-oauth"))
        .env_clear()
        .env("MCP_OAUTH_DATABASE_URL", "sqlite::memory:")
        .env("MCP_OAUTH_METRICS__BEARER_TOKEN", "too-short")
        .arg("check-config")
        .output()
        .expect("run mcp-oauth");
    assert!(!short.status.success());
    let stderr = String::from_utf8_lossy(&short.stderr);
    assert!(stderr.contains("metrics.bearer_token"), "{stderr}");
    assert!(!stderr.contains("too-short"), "{stderr}");
}
