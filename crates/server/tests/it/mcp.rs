//! The protected MCP endpoint over Streamable HTTP: RFC 9728 metadata, sessions bound to
//! their user, protocol versions, the tools, DNS-rebinding protection, CORS and open mode.
//! The 401/403 cases are in `mcp_auth`, the legacy SSE transport in `mcp_sse`.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{
    McpReply, TestApp, bearer_challenge, initialize, initialize_with_version, initialized,
    mcp_post, rpc, spawn_app, spawn_app_with, tool_call,
};

async fn get_json(app: &TestApp, url: &str) -> Value {
    let r = app.http.get(url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "GET {url}");
    r.json().await.unwrap()
}

/// The AS metadata's `issuer`, as a client reads it before comparing.
async fn as_issuer(app: &TestApp) -> Value {
    let url = format!(
        "{}/.well-known/oauth-authorization-server{}",
        app.url,
        app.state.settings.base_path()
    );
    get_json(app, &url).await["issuer"].clone()
}

/// A user's session and token.
async fn user_session(app: &TestApp, email: &str) -> (String, String) {
    let t = app.tokens_for_new_client(email).await;
    let session = app.mcp_session(&t.access_token).await;
    (t.access_token, session)
}

/// A user in a session, calling tools.
struct Caller<'a> {
    app: &'a TestApp,
    token: String,
    session: String,
}

impl<'a> Caller<'a> {
    async fn new(app: &'a TestApp) -> Self {
        let (token, session) = user_session(app, "caller@example.com").await;
        Self {
            app,
            token,
            session,
        }
    }

    async fn call(&self, name: &str, arguments: Value) -> McpReply {
        self.app
            .mcp_send(
                Some(&self.token),
                Some(&self.session),
                &tool_call(7, name, arguments),
            )
            .await
    }
}

// --- RFC 9728 Protected Resource Metadata -----------------------------------------------------

#[tokio::test]
async fn the_mcp_metadata_names_the_endpoint_our_issuer_and_the_minimal_scopes() {
    let app = spawn_app().await;
    let prm = get_json(&app, &app.prm_url("/mcp")).await;
    assert_eq!(prm["resource"], format!("{}/mcp", app.url));
    assert_eq!(prm["authorization_servers"], json!([as_issuer(&app).await]));
    assert_eq!(prm["scopes_supported"], json!(["mcp"]));
    assert_eq!(prm["bearer_methods_supported"], json!(["header"]));
}

#[tokio::test]
async fn the_sse_endpoint_has_its_own_metadata() {
    let app = spawn_app().await;
    let prm = get_json(&app, &app.prm_url("/sse")).await;
    assert_eq!(prm["resource"], format!("{}/sse", app.url));
    assert_eq!(prm["authorization_servers"], json!([as_issuer(&app).await]));
    assert_eq!(prm["scopes_supported"], json!(["mcp"]));
    assert_eq!(prm["bearer_methods_supported"], json!(["header"]));
}

#[tokio::test]
async fn the_root_metadata_is_the_mcp_endpoints() {
    let app = spawn_app().await;
    let root = get_json(
        &app,
        &format!("{}/.well-known/oauth-protected-resource", app.url),
    )
    .await;
    assert_eq!(root, get_json(&app, &app.prm_url("/mcp")).await);
}

#[tokio::test]
async fn the_metadata_never_lists_offline_access_or_per_tool_scopes() {
    // MCP 2026-07-28 (SEP-2207): offline_access is not a resource scope; per-tool scopes are
    // asked for by step-up, not advertised as the minimal set.
    let app = spawn_app_with(|r| {
        r.scopes.supported.push("tools:format".into());
        r.mcp.tool_scopes = [("format_text".to_owned(), vec!["tools:format".to_owned()])].into();
    })
    .await;
    for path in ["/mcp", "/sse"] {
        let prm = get_json(&app, &app.prm_url(path)).await;
        assert_eq!(prm["scopes_supported"], json!(["mcp"]), "{path}");
    }
}

#[tokio::test]
async fn with_an_issuer_path_the_metadata_moves_under_it() {
    let app = spawn_app_with(|r| r.public_url = format!("{}/tenant", r.public_url)).await;
    let issuer = format!("{}/tenant", app.url);
    assert_eq!(as_issuer(&app).await, json!(issuer));
    for path in ["/mcp", "/sse"] {
        let url = format!(
            "{}/.well-known/oauth-protected-resource/tenant{path}",
            app.url
        );
        let prm = get_json(&app, &url).await;
        assert_eq!(prm["resource"], format!("{issuer}{path}"));
        assert_eq!(prm["authorization_servers"], json!([issuer]));
        let gone = app
            .http
            .get(format!(
                "{}/.well-known/oauth-protected-resource{path}",
                app.url
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(
            gone.status(),
            StatusCode::NOT_FOUND,
            "{path} without the tenant"
        );
    }
    let root = get_json(
        &app,
        &format!("{}/.well-known/oauth-protected-resource", app.url),
    )
    .await;
    assert_eq!(root["resource"], format!("{issuer}/mcp"));

    // The challenge at the endpoint points at the moved document.
    let r = app.mcp_send(None, None, &initialize(1)).await;
    assert_eq!(
        r.header("www-authenticate"),
        Some(
            bearer_challenge(
                None,
                Some("mcp"),
                &format!(
                    "{}/.well-known/oauth-protected-resource/tenant/mcp",
                    app.url
                )
            )
            .as_str()
        )
    );
}

#[tokio::test]
async fn the_metadata_documents_allow_cross_origin_reads() {
    let app = spawn_app().await;
    for url in [
        app.prm_url("/mcp"),
        app.prm_url("/sse"),
        format!("{}/.well-known/oauth-protected-resource", app.url),
    ] {
        let r = app
            .http
            .get(&url)
            .header("origin", "https://inspector.example")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.headers()
                .get("access-control-allow-origin")
                .map(|v| v.to_str().unwrap()),
            Some("*"),
            "{url}"
        );
    }
}

#[tokio::test]
async fn the_challenge_points_at_a_served_metadata_document() {
    let app = spawn_app().await;
    let r = app.mcp_send(None, None, &initialize(1)).await;
    let challenge = r.header("www-authenticate").unwrap();
    let url = challenge
        .split("resource_metadata=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap();
    let prm = get_json(&app, url).await;
    assert_eq!(prm["resource"], app.mcp_resource());
}

// --- The happy path --------------------------------------------------------------------------

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

// --- Sessions (MCP security best practices, "Session Hijacking") ----------------------------

#[tokio::test]
async fn another_users_token_cannot_use_a_session_and_learns_nothing_from_trying() {
    let app = spawn_app().await;
    let (_, a_session) = user_session(&app, "a@example.com").await;
    let b = app.tokens_for_new_client("b@example.com").await;
    let list = rpc(2, "tools/list", json!({}));

    let hijack = app
        .mcp_send(Some(&b.access_token), Some(&a_session), &list)
        .await;
    let unknown = app
        .mcp_send(Some(&b.access_token), Some("no-such-session"), &list)
        .await;
    assert_eq!(hijack.status, StatusCode::NOT_FOUND, "{}", hijack.body);
    assert!(hijack.messages.is_empty(), "no JSON-RPC answer");
    assert_eq!(
        (hijack.status, &hijack.body, hijack.header("content-type")),
        (
            unknown.status,
            &unknown.body,
            unknown.header("content-type")
        ),
        "the same answer as for a session that does not exist"
    );
}

#[tokio::test]
async fn the_owner_keeps_using_a_session_another_user_tried_to_use() {
    let app = spawn_app().await;
    let (a_token, a_session) = user_session(&app, "a@example.com").await;
    let b = app.tokens_for_new_client("b@example.com").await;
    for method in [Method::POST, Method::GET, Method::DELETE] {
        let r = app
            .mcp_request(method.clone(), "/mcp", Some(&b.access_token))
            .header("mcp-session-id", &a_session)
            .body(rpc(2, "tools/list", json!({})).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::NOT_FOUND,
            "{method} by another user"
        );
    }
    let r = app
        .mcp_send(
            Some(&a_token),
            Some(&a_session),
            &tool_call(3, "whoami", json!({})),
        )
        .await;
    let (text, is_error) = r.tool_text();
    assert!(
        !is_error && text.contains("\"authenticated\":true"),
        "{text}"
    );
}

#[tokio::test]
async fn a_session_is_refused_to_another_token_of_the_same_client_for_another_user() {
    // Two users of one client: the binding is to the user, not the client.
    let app = spawn_app().await;
    let a = app.tokens_for_new_client("a@example.com").await;
    let b_browser = app.signed_in_browser("b@example.com").await;
    let b = app
        .tokens_for(&a.auth, &b_browser, "http://127.0.0.1:7777/callback", &[])
        .await;
    assert_eq!(a.client_id, b.client_id);
    let session = app.mcp_session(&a.access_token).await;
    let r = app
        .mcp_send(
            Some(&b.access_token),
            Some(&session),
            &rpc(2, "tools/list", json!({})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_new_token_of_the_same_user_keeps_the_session() {
    // Refreshing mid-session is normal: the session belongs to the user, not to one token.
    let app = spawn_app().await;
    let t = app.tokens_for_new_client("a@example.com").await;
    let session = app.mcp_session(&t.access_token).await;
    let refreshed =
        crate::helpers::ok_json(app.refresh_as(&t.auth, &t.refresh_token, &[]).await).await;
    let token = refreshed["access_token"].as_str().unwrap();
    assert_ne!(token, t.access_token);
    let r = app
        .mcp_send(
            Some(token),
            Some(&session),
            &rpc(2, "tools/list", json!({})),
        )
        .await;
    r.result();
}

#[tokio::test]
async fn delete_ends_a_session() {
    let app = spawn_app().await;
    let (token, session) = user_session(&app, "a@example.com").await;
    let r = app
        .mcp_request(Method::DELETE, "/mcp", Some(&token))
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let after = app
        .mcp_send(
            Some(&token),
            Some(&session),
            &rpc(2, "tools/list", json!({})),
        )
        .await;
    assert_eq!(after.status, StatusCode::NOT_FOUND, "{}", after.body);
}

#[tokio::test]
async fn a_stateless_server_answers_tools_call_without_a_session() {
    let app = spawn_app_with(|r| {
        r.mcp.stateful = false;
        r.mcp.json_response = true;
    })
    .await;
    let t = app.tokens_for_new_client("a@example.com").await;
    let r = app
        .mcp_request(Method::POST, "/mcp", Some(&t.access_token))
        .header("mcp-protocol-version", "2025-11-25")
        .body(tool_call(1, "add_numbers", json!({"a": 1, "b": 2})).to_string())
        .send()
        .await
        .unwrap();
    let r = McpReply::read(r).await;
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/json"),
        "json_response answers plain JSON"
    );
    assert_eq!(r.tool_text(), ("The sum of 1 and 2 is 3.", false));
    assert!(r.session_id().is_none(), "no session in stateless mode");
}

#[tokio::test]
async fn a_stateless_server_issues_no_session_on_initialize() {
    let app = spawn_app_with(|r| r.mcp.stateful = false).await;
    let t = app.tokens_for_new_client("a@example.com").await;
    let r = app
        .mcp_send(Some(&t.access_token), None, &initialize(1))
        .await;
    assert_eq!(r.result()["protocolVersion"], "2025-06-18");
    assert!(r.session_id().is_none());
}

#[tokio::test]
async fn a_stateless_server_still_authenticates_every_request() {
    let app = spawn_app_with(|r| r.mcp.stateful = false).await;
    let r = app
        .mcp_send(None, None, &tool_call(1, "whoami", json!({})))
        .await;
    r.assert_refused(
        StatusCode::UNAUTHORIZED,
        &bearer_challenge(None, Some("mcp"), &app.prm_url("/mcp")),
        "unauthorized",
    );
}

// --- Protocol versions ----------------------------------------------------------------------

#[tokio::test]
async fn initialize_negotiates_every_version_with_a_handshake() {
    let app = spawn_app().await;
    let t = app.tokens_for_new_client("a@example.com").await;
    for version in ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"] {
        let r = app
            .mcp_send(
                Some(&t.access_token),
                None,
                &initialize_with_version(1, version),
            )
            .await;
        assert_eq!(r.result()["protocolVersion"], version, "{version}");
        assert!(r.session_id().is_some(), "{version}: a session");
    }
}

/// `_meta` of a 2026-07-28 request, which has no handshake: each request says who it is.
fn meta_2026() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "it", "version": "0"},
        "io.modelcontextprotocol/clientCapabilities": {}
    })
}

#[tokio::test]
async fn server_discover_answers_statelessly_for_2026_07_28() {
    let app = spawn_app().await;
    let t = app.tokens_for_new_client("a@example.com").await;
    let r = app
        .mcp_request(Method::POST, "/mcp", Some(&t.access_token))
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "server/discover")
        .body(rpc(1, "server/discover", json!({"_meta": meta_2026()})).to_string())
        .send()
        .await
        .unwrap();
    let r = McpReply::read(r).await;
    let result = r.result();
    assert!(
        result["supportedVersions"]
            .as_array()
            .unwrap()
            .contains(&json!("2026-07-28")),
        "{result}"
    );
    assert!(result["capabilities"]["tools"].is_object(), "{result}");
    assert!(r.session_id().is_none(), "2026-07-28 has no sessions");
}

#[tokio::test]
async fn a_2026_07_28_tool_call_sees_the_caller() {
    let app = spawn_app().await;
    let t = app.tokens_for_new_client("a@example.com").await;
    let mut call = tool_call(1, "whoami", json!({}));
    call["params"]["_meta"] = meta_2026();
    let r = app
        .mcp_request(Method::POST, "/mcp", Some(&t.access_token))
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "whoami")
        .body(call.to_string())
        .send()
        .await
        .unwrap();
    let r = McpReply::read(r).await;
    let (text, is_error) = r.tool_text();
    let who: Value = serde_json::from_str(text).unwrap();
    assert!(!is_error);
    assert_eq!(who["client_id"], t.client_id);
    assert!(r.session_id().is_none());
}

// --- Tools, resources, prompts --------------------------------------------------------------

#[tokio::test]
async fn tools_list_carries_titles_schemas_and_annotations() {
    let app = spawn_app().await;
    let (token, session) = user_session(&app, "a@example.com").await;
    let r = app
        .mcp_send(
            Some(&token),
            Some(&session),
            &rpc(2, "tools/list", json!({})),
        )
        .await;
    let tools = r.result()["tools"].as_array().unwrap().clone();
    let required = |name: &str| -> Vec<&'static str> {
        match name {
            "add_numbers" => vec!["a", "b"],
            "calculate_circle_area" => vec!["radius"],
            "generate_random_number" => vec!["min", "max"],
            "format_text" => vec!["text", "format"],
            "check_prime_number" => vec!["number"],
            _ => vec![],
        }
    };
    assert_eq!(tools.len(), 6, "{tools:?}");
    for tool in &tools {
        let name = tool["name"].as_str().unwrap();
        assert!(
            tool["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{name}: title"
        );
        assert!(tool["description"].is_string(), "{name}: description");
        let schema = &tool["inputSchema"];
        assert_eq!(schema["type"], "object", "{name}: {schema}");
        for field in required(name) {
            assert!(
                schema["properties"][field].is_object(),
                "{name}.{field}: {schema}"
            );
            assert!(
                schema["required"]
                    .as_array()
                    .unwrap()
                    .contains(&json!(field)),
                "{name}.{field} required: {schema}"
            );
        }
        let a = &tool["annotations"];
        assert_eq!(a["readOnlyHint"], true, "{name}: {a}");
        assert_eq!(a["destructiveHint"], false, "{name}: {a}");
        assert_eq!(a["openWorldHint"], false, "{name}: {a}");
        assert!(a["idempotentHint"].is_boolean(), "{name}: {a}");
    }
    let format = tools.iter().find(|t| t["name"] == "format_text").unwrap();
    let schema = format["inputSchema"].to_string();
    for value in ["uppercase", "lowercase", "titlecase", "reverse"] {
        assert!(
            schema.contains(&format!("\"{value}\"")),
            "{value} in {schema}"
        );
    }
}

#[tokio::test]
async fn add_numbers_adds() {
    let app = spawn_app().await;
    let caller = Caller::new(&app).await;
    let r = caller
        .call("add_numbers", json!({"a": 1.5, "b": -0.25}))
        .await;
    assert_eq!(r.tool_text(), ("The sum of 1.5 and -0.25 is 1.25.", false));
}

#[tokio::test]
async fn add_numbers_reports_an_overflowing_sum_as_a_tool_error() {
    let app = spawn_app().await;
    let caller = Caller::new(&app).await;
    let r = caller
        .call("add_numbers", json!({"a": 1e308, "b": 1e308}))
        .await;
    assert!(r.tool_text().1, "isError: {}", r.body);
}

#[tokio::test]
async fn circle_area_is_pi_r_squared() {
    let app = spawn_app().await;
    let caller = Caller::new(&app).await;
    let r = caller
        .call("calculate_circle_area", json!({"radius": 2}))
        .await;
    assert_eq!(
        r.tool_text(),
        ("The area of a circle with radius 2 is 12.57.", false)
    );
}

#[tokio::test]
async fn circle_area_refuses_a_radius_that_is_not_positive() {
    let app = spawn_app().await;
    let caller = Caller::new(&app).await;
    for radius in [0.0, -1.0] {
        let r = caller
            .call("calculate_circle_area", json!({"radius": radius}))
            .await;
        let (text, is_error) = r.tool_text();
        assert!(is_error, "radius {radius}: {text}");
        assert!(text.contains("radius"), "{text}");
    }
}

#[tokio::test]
async fn random_number_stays_within_its_bounds() {
    let app = spawn_app().await;
    let caller = Caller::new(&app).await;
    let r = caller
        .call("generate_random_number", json!({"min": 5, "max": 5}))
        .await;
    assert_eq!(r.tool_text(), ("5", false));
    let r = caller
        .call("generate_random_number", json!({"min": -3, "max": 3}))
        .await;
    let n: i64 = r.tool_text().0.parse().unwrap();
    assert!((-3..=3).contains(&n), "{n}");
}

#[tokio::test]
async fn random_number_refuses_min_above_max() {
    let app = spawn_app().await;
    let caller = Caller::new(&app).await;
    let r = caller
        .call("generate_random_number", json!({"min": 10, "max": 1}))
        .await;
    let (text, is_error) = r.tool_text();
    assert!(is_error, "{text}");
    assert!(text.contains("min"), "{text}");
}

#[tokio::test]
async fn format_text_applies_each_format() {
    let app = spawn_app().await;
    let (token, session) = user_session(&app, "a@example.com").await;
    for (format, expected) in [
        ("uppercase", "HELLO WORLD"),
        ("lowercase", "hello world"),
        ("titlecase", "Hello World"),
        ("reverse", "dlroW olleH"),
    ] {
        let r = app
            .mcp_send(
                Some(&token),
                Some(&session),
                &tool_call(
                    2,
                    "format_text",
                    json!({"text": "Hello World", "format": format}),
                ),
            )
            .await;
        assert_eq!(r.tool_text(), (expected, false), "{format}");
    }
}

#[tokio::test]
async fn format_text_reports_an_unknown_format_as_an_argument_error() {
    // MCP 2025-11-25 (SEP-1303): input validation failures are tool execution errors
    // (`isError`), which the model can read and correct, not JSON-RPC protocol errors.
    let app = spawn_app().await;
    let caller = Caller::new(&app).await;
    let r = caller
        .call("format_text", json!({"text": "x", "format": "shout"}))
        .await;
    let (text, is_error) = r.tool_text();
    assert!(is_error, "{text}");
    assert!(
        text.contains("shout") && text.contains("uppercase"),
        "{text}"
    );
}

#[tokio::test]
async fn check_prime_tells_primes_from_composites() {
    let app = spawn_app().await;
    let caller = Caller::new(&app).await;
    let r = caller
        .call("check_prime_number", json!({"number": 97}))
        .await;
    assert_eq!(r.tool_text(), ("97 is a prime number.", false));
    let r = caller
        .call("check_prime_number", json!({"number": 91}))
        .await;
    assert_eq!(r.tool_text(), ("91 is not a prime number.", false));
}

#[tokio::test]
async fn check_prime_refuses_zero() {
    let app = spawn_app().await;
    let caller = Caller::new(&app).await;
    let r = caller
        .call("check_prime_number", json!({"number": 0}))
        .await;
    let (text, is_error) = r.tool_text();
    assert!(is_error, "{text}");
}

#[tokio::test]
async fn whoami_reports_the_user_the_client_and_the_scopes() {
    let app = spawn_app().await;
    let t = app.tokens_for_new_client("who@example.com").await;
    let user = app
        .state
        .db
        .find_user_by_email("who@example.com")
        .await
        .unwrap()
        .unwrap();
    let session = app.mcp_session(&t.access_token).await;
    let r = app
        .mcp_send(
            Some(&t.access_token),
            Some(&session),
            &tool_call(2, "whoami", json!({})),
        )
        .await;
    let who: Value = serde_json::from_str(r.tool_text().0).unwrap();
    assert_eq!(who["authenticated"], true);
    assert_eq!(who["subject"], user.id, "the subject is the user id");
    assert_eq!(who["client_id"], t.client_id);
    assert_eq!(who["scopes"], json!(["mcp"]));
}

#[tokio::test]
async fn resources_can_be_listed_and_read() {
    let app = spawn_app().await;
    let (token, session) = user_session(&app, "a@example.com").await;
    let r = app
        .mcp_send(
            Some(&token),
            Some(&session),
            &rpc(2, "resources/list", json!({})),
        )
        .await;
    let resources = r.result()["resources"].as_array().unwrap().clone();
    assert_eq!(resources.len(), 1, "{resources:?}");
    let uri = resources[0]["uri"].as_str().unwrap();
    let r = app
        .mcp_send(
            Some(&token),
            Some(&session),
            &rpc(3, "resources/read", json!({"uri": uri})),
        )
        .await;
    let text = r.result()["contents"][0]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(text.contains(&app.state.settings.issuer), "{text}");

    let r = app
        .mcp_send(
            Some(&token),
            Some(&session),
            &rpc(4, "resources/read", json!({"uri": "mcp-oauth://nope"})),
        )
        .await;
    assert!(r.messages[0]["error"].is_object(), "{}", r.body);
}

#[tokio::test]
async fn prompts_can_be_listed_and_fetched() {
    let app = spawn_app().await;
    let (token, session) = user_session(&app, "a@example.com").await;
    let r = app
        .mcp_send(
            Some(&token),
            Some(&session),
            &rpc(2, "prompts/list", json!({})),
        )
        .await;
    let prompts = r.result()["prompts"].as_array().unwrap().clone();
    assert_eq!(prompts[0]["name"], "solve_math", "{prompts:?}");
    assert_eq!(prompts[0]["arguments"][0]["name"], "question");
    let r = app
        .mcp_send(
            Some(&token),
            Some(&session),
            &rpc(
                3,
                "prompts/get",
                json!({"name": "solve_math", "arguments": {"question": "what is 6 * 7?"}}),
            ),
        )
        .await;
    let text = r.result()["messages"][0]["content"]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(text.contains("what is 6 * 7?"), "{text}");
}

// --- Every method is authenticated -----------------------------------------------------------

#[tokio::test]
async fn get_without_a_token_is_challenged() {
    let app = spawn_app().await;
    let (_, session) = user_session(&app, "a@example.com").await;
    let r = app
        .mcp_request(Method::GET, "/mcp", None)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    McpReply::read(r).await.assert_refused(
        StatusCode::UNAUTHORIZED,
        &bearer_challenge(None, Some("mcp"), &app.prm_url("/mcp")),
        "unauthorized",
    );
}

#[tokio::test]
async fn delete_without_a_token_is_challenged_and_keeps_the_session() {
    let app = spawn_app().await;
    let (token, session) = user_session(&app, "a@example.com").await;
    let r = app
        .mcp_request(Method::DELETE, "/mcp", None)
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    McpReply::read(r).await.assert_refused(
        StatusCode::UNAUTHORIZED,
        &bearer_challenge(None, Some("mcp"), &app.prm_url("/mcp")),
        "unauthorized",
    );
    app.mcp_send(
        Some(&token),
        Some(&session),
        &rpc(2, "tools/list", json!({})),
    )
    .await
    .result();
}

// --- DNS rebinding (Streamable HTTP transport: validate Host and Origin) ---------------------

#[tokio::test]
async fn a_foreign_host_is_forbidden_even_with_a_valid_token() {
    let app = spawn_app().await;
    let t = app.tokens_for_new_client("a@example.com").await;
    let r = app
        .mcp_request(Method::POST, "/mcp", Some(&t.access_token))
        .header("host", "evil.example")
        .body(initialize(1).to_string())
        .send()
        .await
        .unwrap();
    let r = McpReply::read(r).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(r.session_id().is_none() && r.messages.is_empty());
}

#[tokio::test]
async fn a_foreign_host_without_a_token_is_challenged_first() {
    // The bearer layer runs before rmcp's Host check: an unauthenticated request learns only
    // the public challenge, and nothing is processed either way.
    let app = spawn_app().await;
    let r = app
        .mcp_request(Method::POST, "/mcp", None)
        .header("host", "evil.example")
        .body(initialize(1).to_string())
        .send()
        .await
        .unwrap();
    McpReply::read(r).await.assert_refused(
        StatusCode::UNAUTHORIZED,
        &bearer_challenge(None, Some("mcp"), &app.prm_url("/mcp")),
        "unauthorized",
    );
}

#[tokio::test]
async fn an_origin_off_the_allowed_list_is_forbidden() {
    let app = spawn_app_with(|r| r.cors.allowed_origins = vec!["https://app.example".into()]).await;
    let t = app.tokens_for_new_client("a@example.com").await;
    let send = |origin: &'static str| {
        app.mcp_request(Method::POST, "/mcp", Some(&t.access_token))
            .header("origin", origin)
            .body(initialize(1).to_string())
            .send()
    };
    let r = McpReply::read(send("https://evil.example").await.unwrap()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(r.session_id().is_none());
    let r = McpReply::read(send("https://app.example").await.unwrap()).await;
    r.result();
}

#[tokio::test]
async fn our_own_origin_is_allowed_when_origins_are_listed() {
    let app = spawn_app_with(|r| r.cors.allowed_origins = vec!["https://app.example".into()]).await;
    let t = app.tokens_for_new_client("a@example.com").await;
    let r = app
        .mcp_request(Method::POST, "/mcp", Some(&t.access_token))
        .header("origin", &app.url)
        .body(initialize(1).to_string())
        .send()
        .await
        .unwrap();
    McpReply::read(r).await.result();
}

// --- CORS -----------------------------------------------------------------------------------

fn header_list(r: &reqwest::Response, name: &str) -> Vec<String> {
    r.headers()
        .get_all(name)
        .iter()
        .flat_map(|v| v.to_str().unwrap().split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .collect()
}

#[tokio::test]
async fn a_preflight_allows_the_mcp_request_headers() {
    let app = spawn_app().await;
    let r = app
        .http
        .request(Method::OPTIONS, app.mcp_url("/mcp"))
        .header("origin", "https://inspector.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type, mcp-session-id, mcp-protocol-version",
        )
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert!(
        r.headers().get("www-authenticate").is_none(),
        "a preflight is not challenged"
    );
    let allowed = header_list(&r, "access-control-allow-headers");
    for h in [
        "authorization",
        "content-type",
        "mcp-session-id",
        "mcp-protocol-version",
    ] {
        assert!(allowed.contains(&h.to_owned()), "{h} in {allowed:?}");
    }
    let methods = header_list(&r, "access-control-allow-methods");
    for m in ["get", "post", "delete"] {
        assert!(methods.contains(&m.to_owned()), "{m} in {methods:?}");
    }
}

#[tokio::test]
async fn a_challenge_exposes_www_authenticate_to_browsers() {
    let app = spawn_app().await;
    let r = app
        .mcp_request(Method::POST, "/mcp", None)
        .header("origin", "https://inspector.example")
        .body(initialize(1).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().get("access-control-allow-origin").is_some());
    let exposed = header_list(&r, "access-control-expose-headers");
    for h in ["www-authenticate", "mcp-session-id", "mcp-protocol-version"] {
        assert!(exposed.contains(&h.to_owned()), "{h} in {exposed:?}");
    }
}

#[tokio::test]
async fn a_successful_response_exposes_the_session_id_to_browsers() {
    let app = spawn_app().await;
    let t = app.tokens_for_new_client("a@example.com").await;
    let r = app
        .mcp_request(Method::POST, "/mcp", Some(&t.access_token))
        .header("origin", "https://inspector.example")
        .body(initialize(1).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().get("mcp-session-id").is_some());
    let exposed = header_list(&r, "access-control-expose-headers");
    for h in ["www-authenticate", "mcp-session-id", "mcp-protocol-version"] {
        assert!(exposed.contains(&h.to_owned()), "{h} in {exposed:?}");
    }
}

// --- Open mode (conformance testing) --------------------------------------------------------

#[tokio::test]
async fn open_mode_serves_without_a_token_and_says_so() {
    let app = spawn_app_with(|r| r.mcp.open = true).await;
    let init = app.mcp_send(None, None, &initialize(1)).await;
    init.result();
    let session = init.session_id().expect("a session");
    let ack = app.mcp_send(None, Some(&session), &initialized()).await;
    assert_eq!(ack.status, StatusCode::ACCEPTED);
    let r = app
        .mcp_send(None, Some(&session), &tool_call(2, "whoami", json!({})))
        .await;
    let who: Value = serde_json::from_str(r.tool_text().0).unwrap();
    assert_eq!(who, json!({"authenticated": false}));
}
