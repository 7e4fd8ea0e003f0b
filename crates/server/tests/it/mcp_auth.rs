//! Every way a request to `/mcp` can fail authentication or authorization, one test each
//! (MCP authorization, "Access Token Usage" and "Error Handling"; RFC 6750 §3; RFC 8707;
//! RFC 9068 §4): the status, the exact `WWW-Authenticate`, and that nothing was processed.
//! Each refused request is an `initialize`, which would open a session had it got through.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{
    McpReply, TestApp, bearer_challenge, initialize, rpc, spawn_app, spawn_app_with, tool_call,
};

const REDIRECT: &str = "http://127.0.0.1:7777/callback";

/// The 401 `invalid_token` challenge for `/mcp` with `description`.
fn invalid_token(app: &TestApp, description: &str) -> String {
    bearer_challenge(
        Some(("invalid_token", description)),
        None,
        &app.prm_url("/mcp"),
    )
}

/// The 403 `insufficient_scope` challenge for `/mcp`, listing `scope`.
fn insufficient_scope(app: &TestApp, scope: &str) -> String {
    bearer_challenge(
        Some((
            "insufficient_scope",
            "the access token lacks a scope this operation needs",
        )),
        Some(scope),
        &app.prm_url("/mcp"),
    )
}

/// `initialize` at `/mcp` with a raw `Authorization` value.
async fn with_authorization(app: &TestApp, value: &str) -> McpReply {
    let r = app
        .mcp_request(Method::POST, "/mcp", None)
        .header("authorization", value)
        .body(initialize(1).to_string())
        .send()
        .await
        .unwrap();
    McpReply::read(r).await
}

async fn initialize_with(app: &TestApp, token: &str) -> McpReply {
    app.mcp_send(Some(token), None, &initialize(1)).await
}

// --- 401 ------------------------------------------------------------------------------------

#[tokio::test]
async fn no_credentials_get_a_bare_challenge_with_scope_and_metadata() {
    // RFC 6750 §3.1: no error code when the request carried no credentials.
    let app = spawn_app().await;
    let r = app.mcp_send(None, None, &initialize(1)).await;
    r.assert_refused(
        StatusCode::UNAUTHORIZED,
        &format!(
            "Bearer scope=\"mcp\", resource_metadata=\"{}/.well-known/oauth-protected-resource/mcp\"",
            app.url
        ),
        "unauthorized",
    );
}

#[tokio::test]
async fn another_authentication_scheme_gets_the_bare_challenge() {
    // RFC 6750 §3.1: a request "attempted using an unsupported authentication method" lacks
    // Bearer credentials, so the challenge carries no error code.
    let app = spawn_app().await;
    let r = with_authorization(&app, "Basic dXNlcjpwYXNz").await;
    r.assert_refused(
        StatusCode::UNAUTHORIZED,
        &bearer_challenge(None, Some("mcp"), &app.prm_url("/mcp")),
        "unauthorized",
    );
}

#[tokio::test]
async fn a_malformed_bearer_header_is_an_invalid_token() {
    let app = spawn_app().await;
    let r = with_authorization(&app, "Bearer two words").await;
    r.assert_refused(
        StatusCode::UNAUTHORIZED,
        &invalid_token(
            &app,
            "the Authorization header is not a well-formed Bearer token",
        ),
        "invalid_token",
    );
}

#[tokio::test]
async fn an_empty_bearer_token_is_an_invalid_token() {
    let app = spawn_app().await;
    let r = with_authorization(&app, "Bearer ").await;
    r.assert_refused(
        StatusCode::UNAUTHORIZED,
        &invalid_token(
            &app,
            "the Authorization header is not a well-formed Bearer token",
        ),
        "invalid_token",
    );
}

#[tokio::test]
async fn a_token_that_is_not_a_jwt_is_an_invalid_token() {
    let app = spawn_app().await;
    let r = initialize_with(&app, "not-a-jwt").await;
    r.assert_refused(
        StatusCode::UNAUTHORIZED,
        &invalid_token(&app, "the access token is not one this server issued"),
        "invalid_token",
    );
}

#[tokio::test]
async fn a_refresh_token_is_not_an_access_token() {
    let app = spawn_app().await;
    let t = app.tokens_for_new_client("a@example.com").await;
    let r = initialize_with(&app, &t.refresh_token).await;
    r.assert_refused(
        StatusCode::UNAUTHORIZED,
        &invalid_token(&app, "the access token is not one this server issued"),
        "invalid_token",
    );
}

#[tokio::test]
async fn a_tampered_signature_is_an_invalid_token() {
    let app = spawn_app().await;
    let t = app.tokens_for_new_client("a@example.com").await;
    let (signed, signature) = t.access_token.rsplit_once('.').unwrap();
    // Change a character in the middle, where every bit counts.
    let mut sig: Vec<char> = signature.chars().collect();
    let i = sig.len() / 2;
    sig[i] = if sig[i] == 'A' { 'B' } else { 'A' };
    let tampered = format!("{signed}.{}", sig.into_iter().collect::<String>());
    let r = initialize_with(&app, &tampered).await;
    r.assert_refused(
        StatusCode::UNAUTHORIZED,
        &invalid_token(&app, "the access token is not one this server issued"),
        "invalid_token",
    );
}

#[tokio::test]
async fn tampered_claims_are_an_invalid_token() {
    // A token whose payload is swapped for one with more scope keeps its old signature.
    let app = spawn_app().await;
    let t = app.tokens_for_new_client("a@example.com").await;
    let parts: Vec<&str> = t.access_token.split('.').collect();
    let mut claims = crate::helpers::jwt_claims(&t.access_token);
    claims["sub"] = json!("someone-else");
    use base64::Engine as _;
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string());
    let forged = format!("{}.{payload}.{}", parts[0], parts[2]);
    let r = initialize_with(&app, &forged).await;
    r.assert_refused(
        StatusCode::UNAUTHORIZED,
        &invalid_token(&app, "the access token is not one this server issued"),
        "invalid_token",
    );
}

#[tokio::test]
async fn a_token_signed_by_an_unknown_key_is_an_invalid_token() {
    // Another deployment's key: right claims, a `kid` we never published.
    let app = spawn_app().await;
    let other = spawn_app().await;
    let now = app.clock.now();
    let claims = mcp_oauth_core::oauth::access_token::AccessTokenClaims {
        iss: app.state.settings.issuer.clone(),
        sub: "u".into(),
        aud: app.mcp_resource(),
        client_id: "c".into(),
        scope: "mcp".into(),
        exp: now + 600,
        iat: now,
        nbf: now,
        jti: mcp_oauth::random::id(),
        gid: None,
        auth_time: None,
    };
    let token = other.state.keys.sign(&claims).unwrap();
    let r = initialize_with(&app, &token).await;
    r.assert_refused(
        StatusCode::UNAUTHORIZED,
        &invalid_token(&app, "the access token is not one this server issued"),
        "invalid_token",
    );
}

#[tokio::test]
async fn a_token_from_another_issuer_is_an_invalid_token() {
    let app = spawn_app().await;
    let token = app.mint_access_token(|c| c.iss = "https://evil.example".into());
    let r = initialize_with(&app, &token).await;
    r.assert_refused(
        StatusCode::UNAUTHORIZED,
        &invalid_token(&app, "token was issued by another issuer"),
        "invalid_token",
    );
}

#[tokio::test]
async fn a_token_for_the_sse_resource_is_refused_at_mcp() {
    // RFC 8707 / MCP "Token Audience Binding": a token is good for the one resource it names.
    let app = spawn_app().await;
    let t = app.tokens_for_new_client("a@example.com").await;
    let sse = app
        .tokens_for(
            &t.auth,
            &t.browser,
            REDIRECT,
            &[("resource", &app.sse_resource())],
        )
        .await;
    assert_eq!(
        crate::helpers::jwt_claims(&sse.access_token)["aud"],
        app.sse_resource()
    );
    let r = initialize_with(&app, &sse.access_token).await;
    r.assert_refused(
        StatusCode::UNAUTHORIZED,
        &invalid_token(&app, "the access token was issued for another resource"),
        "invalid_token",
    );
}

#[tokio::test]
async fn a_token_for_a_foreign_resource_is_refused() {
    // No token passthrough: a token minted for another server is never accepted here.
    let app = spawn_app().await;
    let token = app.mint_access_token(|c| c.aud = "https://api.example/mcp".into());
    let r = initialize_with(&app, &token).await;
    r.assert_refused(
        StatusCode::UNAUTHORIZED,
        &invalid_token(&app, "the access token was issued for another resource"),
        "invalid_token",
    );
}

#[tokio::test]
async fn an_expired_token_is_an_invalid_token() {
    let app = spawn_app().await;
    let t = app.tokens_for_new_client("a@example.com").await;
    // Expiry plus the 5 s of tolerated clock skew.
    app.clock.advance(app.state.settings.tokens.access_ttl + 5);
    let r = initialize_with(&app, &t.access_token).await;
    r.assert_refused(
        StatusCode::UNAUTHORIZED,
        &invalid_token(&app, "token has expired"),
        "invalid_token",
    );
}

#[tokio::test]
async fn a_token_just_inside_the_clock_skew_leeway_still_works() {
    let app = spawn_app().await;
    let t = app.tokens_for_new_client("a@example.com").await;
    app.clock.advance(app.state.settings.tokens.access_ttl + 4);
    initialize_with(&app, &t.access_token).await.result();
}

#[tokio::test]
async fn a_token_not_valid_yet_is_an_invalid_token() {
    let app = spawn_app().await;
    let token = app.mint_access_token(|c| c.nbf += 60);
    let r = initialize_with(&app, &token).await;
    r.assert_refused(
        StatusCode::UNAUTHORIZED,
        &invalid_token(&app, "token is not valid yet"),
        "invalid_token",
    );
}

/// Send `tools/list` in `session` until it is refused, for at most one second.
async fn refused_within_a_second(app: &TestApp, token: &str, session: &str) -> McpReply {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let r = app
            .mcp_send(Some(token), Some(session), &rpc(9, "tools/list", json!({})))
            .await;
        if r.status != StatusCode::OK {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "still accepted a second after revocation"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_token_revoked_at_the_revocation_endpoint_is_refused_within_a_second() {
    let app = spawn_app().await;
    let t = app.tokens_for_new_client("a@example.com").await;
    let session = app.mcp_session(&t.access_token).await;
    let revoked = app.revoke_as(&t.auth, &t.access_token).await;
    assert_eq!(revoked.status(), StatusCode::OK);
    let r = refused_within_a_second(&app, &t.access_token, &session).await;
    r.assert_refused(
        StatusCode::UNAUTHORIZED,
        &invalid_token(&app, "the access token has been revoked"),
        "invalid_token",
    );
}

#[tokio::test]
async fn a_token_revoked_on_the_account_page_is_refused_within_a_second() {
    let app = spawn_app().await;
    let t = app.tokens_for_new_client("a@example.com").await;
    let session = app.mcp_session(&t.access_token).await;
    let html = t.browser.get("/account").await.text().await.unwrap();
    let csrf = crate::helpers::hidden_field(&html, "csrf").unwrap();
    let r = t
        .browser
        .post_form(
            "/account/revoke",
            &[("csrf", &csrf), ("client_id", &t.client_id)],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = refused_within_a_second(&app, &t.access_token, &session).await;
    r.assert_refused(
        StatusCode::UNAUTHORIZED,
        &invalid_token(&app, "the access token has been revoked"),
        "invalid_token",
    );
}

#[tokio::test]
async fn a_refresh_token_replay_revokes_the_familys_access_tokens_at_mcp() {
    // OAuth 2.1 §4.3.1: a replayed rotated refresh token revokes its grant, and with it the
    // access token issued from the rotation.
    let app = spawn_app().await;
    let t = app.tokens_for_new_client("a@example.com").await;
    let rotated =
        crate::helpers::ok_json(app.refresh_as(&t.auth, &t.refresh_token, &[]).await).await;
    let token = rotated["access_token"].as_str().unwrap().to_owned();
    let session = app.mcp_session(&token).await;
    app.clock
        .advance(app.state.settings.tokens.refresh_grace + 1);
    let replay = app.refresh_as(&t.auth, &t.refresh_token, &[]).await;
    assert_eq!(replay.status(), StatusCode::BAD_REQUEST);
    let r = refused_within_a_second(&app, &token, &session).await;
    r.assert_refused(
        StatusCode::UNAUTHORIZED,
        &invalid_token(&app, "the access token has been revoked"),
        "invalid_token",
    );
}

// --- 400 ------------------------------------------------------------------------------------

#[tokio::test]
async fn a_token_in_the_query_string_is_an_invalid_request() {
    // OAuth 2.1 §5.1.1 / MCP: tokens only in the Authorization header.
    let app = spawn_app().await;
    let t = app.tokens_for_new_client("a@example.com").await;
    let r = app
        .http
        .post(format!(
            "{}?access_token={}",
            app.mcp_url("/mcp"),
            t.access_token
        ))
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(initialize(1).to_string())
        .send()
        .await
        .unwrap();
    McpReply::read(r).await.assert_refused(
        StatusCode::BAD_REQUEST,
        &bearer_challenge(
            Some((
                "invalid_request",
                "access tokens are accepted only in the Authorization header, not the query string",
            )),
            None,
            &app.prm_url("/mcp"),
        ),
        "invalid_request",
    );
}

#[tokio::test]
async fn a_token_in_the_query_string_is_refused_even_beside_a_header() {
    let app = spawn_app().await;
    let t = app.tokens_for_new_client("a@example.com").await;
    let r = app
        .http
        .post(format!(
            "{}?access_token={}",
            app.mcp_url("/mcp"),
            t.access_token
        ))
        .bearer_auth(&t.access_token)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(initialize(1).to_string())
        .send()
        .await
        .unwrap();
    let r = McpReply::read(r).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(r.session_id().is_none());
}

#[tokio::test]
async fn two_authorization_headers_are_an_invalid_request() {
    let app = spawn_app().await;
    let t = app.tokens_for_new_client("a@example.com").await;
    let r = app
        .mcp_request(Method::POST, "/mcp", Some(&t.access_token))
        .header("authorization", format!("Bearer {}", t.access_token))
        .body(initialize(1).to_string())
        .send()
        .await
        .unwrap();
    McpReply::read(r).await.assert_refused(
        StatusCode::BAD_REQUEST,
        &bearer_challenge(
            Some((
                "invalid_request",
                "only one Authorization header is allowed",
            )),
            None,
            &app.prm_url("/mcp"),
        ),
        "invalid_request",
    );
}

// --- 403: scopes ----------------------------------------------------------------------------

#[tokio::test]
async fn a_token_without_the_base_scope_gets_insufficient_scope() {
    let app = spawn_app().await;
    let token = app.mint_access_token(|c| c.scope = "offline_access".into());
    let r = initialize_with(&app, &token).await;
    r.assert_refused(
        StatusCode::FORBIDDEN,
        &insufficient_scope(&app, "mcp"),
        "insufficient_scope",
    );
}

#[tokio::test]
async fn a_token_authorized_for_offline_access_only_gets_insufficient_scope() {
    let app = spawn_app().await;
    let t = app
        .tokens_for_client_at("a@example.com", REDIRECT, &[("scope", "offline_access")])
        .await;
    assert!(
        !t.scope.split(' ').any(|s| s == "mcp"),
        "the grant lacks mcp: {}",
        t.scope
    );
    let r = initialize_with(&app, &t.access_token).await;
    r.assert_refused(
        StatusCode::FORBIDDEN,
        &insufficient_scope(&app, "mcp"),
        "insufficient_scope",
    );
}

/// An app where `format_text` needs `tools:format` (and, with `random`, where
/// `generate_random_number` needs `tools:random`).
async fn app_with_tool_scopes(random: bool) -> TestApp {
    spawn_app_with(|r| {
        r.scopes.supported.push("tools:format".into());
        r.mcp.tool_scopes = [("format_text".to_owned(), vec!["tools:format".to_owned()])].into();
        if random {
            r.scopes.supported.push("tools:random".into());
            r.mcp.tool_scopes.insert(
                "generate_random_number".to_owned(),
                vec!["tools:random".to_owned()],
            );
        }
    })
    .await
}

fn format_call() -> serde_json::Value {
    tool_call(
        5,
        "format_text",
        json!({"text": "hi", "format": "uppercase"}),
    )
}

#[tokio::test]
async fn a_tool_needing_more_scope_is_refused_with_every_scope_it_needs() {
    // MCP 2026-07-28: every scope the operation needs, in one challenge (step-up).
    let app = app_with_tool_scopes(false).await;
    let t = app.tokens_for_new_client("a@example.com").await;
    let session = app.mcp_session(&t.access_token).await;
    let r = app
        .mcp_send(Some(&t.access_token), Some(&session), &format_call())
        .await;
    assert_eq!(
        r.header("www-authenticate")
            .map(|h| h.matches("Bearer").count()),
        Some(1),
        "one challenge"
    );
    r.assert_refused(
        StatusCode::FORBIDDEN,
        &insufficient_scope(&app, "mcp tools:format"),
        "insufficient_scope",
    );
}

#[tokio::test]
async fn other_tools_still_work_without_a_tool_scope() {
    let app = app_with_tool_scopes(false).await;
    let t = app.tokens_for_new_client("a@example.com").await;
    let session = app.mcp_session(&t.access_token).await;
    let r = app
        .mcp_send(
            Some(&t.access_token),
            Some(&session),
            &tool_call(5, "add_numbers", json!({"a": 1, "b": 1})),
        )
        .await;
    assert_eq!(r.tool_text(), ("The sum of 1 and 1 is 2.", false));
    let r = app
        .mcp_send(
            Some(&t.access_token),
            Some(&session),
            &rpc(6, "tools/list", json!({})),
        )
        .await;
    r.result();
}

#[tokio::test]
async fn a_token_with_the_tool_scope_may_call_the_tool() {
    let app = app_with_tool_scopes(false).await;
    let t = app
        .tokens_for_client_at("a@example.com", REDIRECT, &[("scope", "mcp tools:format")])
        .await;
    let session = app.mcp_session(&t.access_token).await;
    let r = app
        .mcp_send(Some(&t.access_token), Some(&session), &format_call())
        .await;
    assert_eq!(r.tool_text(), ("HI", false));
}

#[tokio::test]
async fn a_broader_scope_implies_the_tool_scope() {
    // MCP 2026-07-28: scope hierarchies are honoured.
    let app = spawn_app_with(|r| {
        r.scopes
            .supported
            .extend(["tools:format".into(), "tools:all".into()]);
        r.scopes.implies = [("tools:all".to_owned(), vec!["tools:format".to_owned()])].into();
        r.mcp.tool_scopes = [("format_text".to_owned(), vec!["tools:format".to_owned()])].into();
    })
    .await;
    let t = app
        .tokens_for_client_at("a@example.com", REDIRECT, &[("scope", "mcp tools:all")])
        .await;
    let session = app.mcp_session(&t.access_token).await;
    let r = app
        .mcp_send(Some(&t.access_token), Some(&session), &format_call())
        .await;
    assert_eq!(r.tool_text(), ("HI", false));
}

#[tokio::test]
async fn a_batch_with_a_restricted_tool_call_is_refused_whole() {
    let app = app_with_tool_scopes(false).await;
    let t = app.tokens_for_new_client("a@example.com").await;
    let session = app.mcp_session(&t.access_token).await;
    let batch = json!([rpc(4, "tools/list", json!({})), format_call()]);
    let r = app
        .mcp_send(Some(&t.access_token), Some(&session), &batch)
        .await;
    r.assert_refused(
        StatusCode::FORBIDDEN,
        &insufficient_scope(&app, "mcp tools:format"),
        "insufficient_scope",
    );
}

#[tokio::test]
async fn a_batch_needing_two_tool_scopes_lists_both_in_one_challenge() {
    let app = app_with_tool_scopes(true).await;
    let t = app.tokens_for_new_client("a@example.com").await;
    let session = app.mcp_session(&t.access_token).await;
    let batch = json!([
        format_call(),
        tool_call(6, "generate_random_number", json!({"min": 1, "max": 2})),
    ]);
    let r = app
        .mcp_send(Some(&t.access_token), Some(&session), &batch)
        .await;
    r.assert_refused(
        StatusCode::FORBIDDEN,
        &insufficient_scope(&app, "mcp tools:format tools:random"),
        "insufficient_scope",
    );
}
