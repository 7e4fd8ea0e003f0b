//! The authorization code grant, end to end: authorize, sign in, consent, exchange.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{Pkce, jwt_claims, jwt_header, oauth_error, redirect_params, spawn_app};

const REDIRECT: &str = "http://127.0.0.1:7777/callback";

#[tokio::test]
async fn code_flow_issues_an_rfc9068_access_token_bound_to_the_mcp_resource() {
    let app = spawn_app().await;
    let client_id = app.register_public_client(REDIRECT).await;
    let browser = app.signed_in_browser("alice@example.com").await;
    let pkce = Pkce::new();
    let r = app
        .authorize(
            &browser,
            &app.authorize_url(&client_id, "http://127.0.0.1:40001/callback", &pkce, &[]),
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let params = redirect_params(&r);
    assert_eq!(params["state"], "st-123");
    assert_eq!(params["iss"], app.url, "RFC 9207 iss");
    assert!(
        crate::helpers::location(&r).starts_with("http://127.0.0.1:40001/callback?"),
        "loopback redirect on the run-time port"
    );

    let t = app
        .exchange(
            &client_id,
            &params["code"],
            "http://127.0.0.1:40001/callback",
            &pkce,
        )
        .await;
    assert_eq!(t.status(), StatusCode::OK);
    assert_eq!(t.headers()["cache-control"], "no-store");
    let body: Value = t.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "mcp");
    assert!(body["refresh_token"].is_string());
    let at = body["access_token"].as_str().unwrap();
    assert_eq!(jwt_header(at)["typ"], "at+jwt");
    assert_eq!(jwt_header(at)["alg"], "EdDSA");
    let claims = jwt_claims(at);
    assert_eq!(claims["iss"], app.url);
    assert_eq!(claims["aud"], app.mcp_resource());
    assert_eq!(claims["client_id"], client_id);
    assert_eq!(claims["scope"], "mcp");
    for k in ["sub", "exp", "iat", "jti"] {
        assert!(!claims[k].is_null(), "{k}");
    }
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        body["expires_in"].as_i64().unwrap()
    );
}

#[tokio::test]
async fn a_replayed_code_is_refused_and_revokes_the_tokens_issued_from_it() {
    let app = spawn_app().await;
    let client_id = app.register_public_client(REDIRECT).await;
    let browser = app.signed_in_browser("bob@example.com").await;
    let pkce = Pkce::new();
    let code = app
        .get_code(&browser, &client_id, REDIRECT, &pkce, &[])
        .await;
    let first: Value = app
        .exchange(&client_id, &code, REDIRECT, &pkce)
        .await
        .json()
        .await
        .unwrap();
    let replay = app.exchange(&client_id, &code, REDIRECT, &pkce).await;
    assert_eq!(
        oauth_error(replay).await,
        (StatusCode::BAD_REQUEST, "invalid_grant".into())
    );

    let refresh = app
        .token(&[
            ("grant_type", "refresh_token"),
            ("client_id", &client_id),
            ("refresh_token", first["refresh_token"].as_str().unwrap()),
        ])
        .await;
    assert_eq!(
        oauth_error(refresh).await.1,
        "invalid_grant",
        "the refresh token from the replayed code is dead"
    );
    let introspection = app
        .introspect(first["access_token"].as_str().unwrap())
        .await;
    assert_eq!(
        introspection["active"], false,
        "the access token from the replayed code is dead"
    );
}
