//! The protected MCP endpoint over Streamable HTTP: metadata, challenges, tools.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::spawn_app;

/// POST one JSON-RPC message to `/mcp`; returns the status, headers and the JSON-RPC
/// messages in the body (plain JSON or an SSE stream).
pub async fn mcp_post(
    app: &crate::helpers::TestApp,
    token: Option<&str>,
    session: Option<&str>,
    body: Value,
) -> (StatusCode, reqwest::header::HeaderMap, Vec<Value>) {
    let mut req = app
        .http
        .post(format!("{}/mcp", app.url))
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(s) = session {
        req = req.header("mcp-session-id", s);
    }
    let r = req.send().await.unwrap();
    let (status, headers) = (r.status(), r.headers().clone());
    let text = r.text().await.unwrap();
    let messages = if headers
        .get("content-type")
        .is_some_and(|c| c.to_str().unwrap().starts_with("text/event-stream"))
    {
        text.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str(d.trim()).ok())
            .collect()
    } else {
        serde_json::from_str(&text)
            .map(|v| vec![v])
            .unwrap_or_default()
    };
    (status, headers, messages)
}

pub fn initialize(id: i64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "it", "version": "0"}}})
}

#[tokio::test]
async fn an_authorized_client_lists_and_calls_tools() {
    let app = spawn_app().await;
    let tokens = app.tokens_for_new_client("mcp@example.com").await;
    let (status, headers, messages) =
        mcp_post(&app, Some(&tokens.access_token), None, initialize(1)).await;
    assert_eq!(status, StatusCode::OK, "{messages:?}");
    let session = headers
        .get("mcp-session-id")
        .expect("a session")
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(messages[0]["result"]["serverInfo"]["name"], "mcp-oauth");
    let (status, _, _) = mcp_post(
        &app,
        Some(&tokens.access_token),
        Some(&session),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (_, _, messages) = mcp_post(
        &app,
        Some(&tokens.access_token),
        Some(&session),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
    )
    .await;
    let names: Vec<&str> = messages[0]["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    for tool in [
        "add_numbers",
        "calculate_circle_area",
        "generate_random_number",
        "format_text",
        "check_prime_number",
        "whoami",
    ] {
        assert!(names.contains(&tool), "{tool} in {names:?}");
    }
    let (_, _, messages) = mcp_post(&app, Some(&tokens.access_token), Some(&session),
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "add_numbers", "arguments": {"a": 2, "b": 40}}})).await;
    assert_eq!(
        messages[0]["result"]["content"][0]["text"],
        "The sum of 2 and 40 is 42."
    );
    let (_, _, messages) = mcp_post(&app, Some(&tokens.access_token), Some(&session),
        json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "whoami", "arguments": {}}})).await;
    let who: Value = serde_json::from_str(
        messages[0]["result"]["content"][0]["text"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(who["client_id"], tokens.client_id);
    assert_eq!(who["authenticated"], true);
}

#[tokio::test]
async fn no_credentials_get_a_bare_challenge_pointing_at_the_metadata() {
    let app = spawn_app().await;
    let (status, headers, _) = mcp_post(&app, None, None, initialize(1)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let challenge = headers["www-authenticate"].to_str().unwrap();
    assert_eq!(
        challenge,
        format!(
            "Bearer scope=\"mcp\", resource_metadata=\"{}/.well-known/oauth-protected-resource/mcp\"",
            app.url
        )
    );
    let prm: Value = app
        .http
        .get(format!(
            "{}/.well-known/oauth-protected-resource/mcp",
            app.url
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(prm["resource"], format!("{}/mcp", app.url));
    assert_eq!(prm["authorization_servers"], json!([app.url]));
    assert_eq!(prm["scopes_supported"], json!(["mcp"]));
    assert_eq!(prm["bearer_methods_supported"], json!(["header"]));
}
