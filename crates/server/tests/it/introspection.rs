//! Token introspection (RFC 7662): who may ask, what an active token reveals, and every way a
//! token is inactive.

use reqwest::StatusCode;
use serde_json::{Value, json};

use mcp_oauth::config::SigningAlg;

use crate::helpers::{
    ClientAuth, TestApp, Tokens, jwt_claims, jwt_header, oauth_error, ok_json, spawn_app,
};

const REDIRECT: &str = "http://127.0.0.1:7777/callback";

/// A dynamically registered confidential client with tokens for a signed-in user.
async fn confidential_tokens(app: &TestApp) -> Tokens {
    let client = app
        .register_confidential(REDIRECT, "client_secret_basic")
        .await;
    let browser = app.signed_in_browser("ivan@example.com").await;
    app.tokens_for(&client, &browser, REDIRECT, &[]).await
}

async fn introspect(app: &TestApp, auth: &ClientAuth, token: &str) -> Value {
    ok_json(app.introspect_as(auth, token).await).await
}

/// `claims` signed as an access token by a key the server has never seen, under `kid`.
fn signed_by_a_foreign_key(claims: &Value, kid: &str) -> String {
    use mcp_oauth::keys::encryption::{KeyRing, KeySource};
    let keyring = KeyRing::new(&[1; 32], &[], KeySource::Ephemeral).unwrap();
    let key = mcp_oauth::keys::generate(SigningAlg::EdDSA, 0, &keyring).unwrap();
    let der = keyring.open(&key.kid, &key.private_key).unwrap().pkcs8;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.typ = Some("at+jwt".into());
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_ed_der(&der),
    )
    .unwrap()
}

#[tokio::test]
async fn a_public_client_may_not_introspect() {
    let app = spawn_app().await;
    let t = app.tokens_for_new_client("ivan@example.com").await;
    let r = app.introspect_as(&t.auth, &t.access_token).await;
    assert_eq!(
        oauth_error(r).await,
        (StatusCode::UNAUTHORIZED, "invalid_client".into())
    );
}

#[tokio::test]
async fn a_confidential_client_that_fails_to_authenticate_may_not_introspect() {
    let app = spawn_app().await;
    let t = confidential_tokens(&app).await;
    let r = app
        .introspect_as(&t.auth.with_secret("wrong"), &t.access_token)
        .await;
    assert_eq!(
        oauth_error(r).await,
        (StatusCode::UNAUTHORIZED, "invalid_client".into())
    );
}

#[tokio::test]
async fn a_registered_confidential_client_sees_its_own_access_token() {
    let app = spawn_app().await;
    let t = confidential_tokens(&app).await;
    let v = introspect(&app, &t.auth, &t.access_token).await;
    let claims = jwt_claims(&t.access_token);
    assert_eq!(v["active"], true);
    assert_eq!(v["scope"], "mcp");
    assert_eq!(v["client_id"], t.client_id);
    assert_eq!(v["sub"], claims["sub"]);
    assert_eq!(v["aud"], app.mcp_resource());
    assert_eq!(v["iss"], app.state.settings.issuer);
    assert_eq!(v["exp"], claims["exp"]);
    assert_eq!(v["token_type"], "Bearer");
}

#[tokio::test]
async fn a_registered_confidential_client_sees_another_clients_token_as_merely_inactive() {
    let app = spawn_app().await;
    let mine = confidential_tokens(&app).await;
    let theirs = app.tokens_for_new_client("zoe@example.com").await;
    for token in [&theirs.access_token, &theirs.refresh_token] {
        assert_eq!(
            introspect(&app, &mine.auth, token).await,
            json!({"active": false}),
            "nothing about another client's token leaks"
        );
    }
}

#[tokio::test]
async fn a_preregistered_confidential_client_sees_any_token() {
    let app = spawn_app().await;
    let t = app.tokens_for_new_client("ivan@example.com").await;
    let v = app.introspect(&t.access_token).await;
    assert_eq!(v["active"], true);
    assert_eq!(v["client_id"], t.client_id);
}

#[tokio::test]
async fn an_expired_access_token_is_inactive() {
    let app = spawn_app().await;
    let t = app.tokens_for_new_client("ivan@example.com").await;
    app.clock.advance(app.state.settings.tokens.access_ttl - 1);
    assert_eq!(app.introspect(&t.access_token).await["active"], true);
    app.clock.advance(1);
    assert_eq!(app.introspect(&t.access_token).await["active"], false);
}

#[tokio::test]
async fn a_refresh_token_is_active_until_it_is_rotated() {
    let app = spawn_app().await;
    let t = confidential_tokens(&app).await;
    let v = introspect(&app, &t.auth, &t.refresh_token).await;
    assert_eq!(v["active"], true);
    assert_eq!(v["token_type"], "refresh_token");
    assert_eq!(v["client_id"], t.client_id);
    assert_eq!(v["aud"], app.mcp_resource());
    ok_json(app.refresh_as(&t.auth, &t.refresh_token, &[]).await).await;
    assert_eq!(
        introspect(&app, &t.auth, &t.refresh_token).await,
        json!({"active": false})
    );
}

#[tokio::test]
async fn a_token_signed_by_an_unknown_key_is_inactive() {
    let app = spawn_app().await;
    let t = app.tokens_for_new_client("ivan@example.com").await;
    let claims = jwt_claims(&t.access_token);
    let forged = signed_by_a_foreign_key(&claims, "a-key-we-never-had");
    assert_eq!(app.introspect(&forged).await, json!({"active": false}));
}

#[tokio::test]
async fn a_token_naming_our_key_but_signed_by_another_is_inactive() {
    let app = spawn_app().await;
    let t = app.tokens_for_new_client("ivan@example.com").await;
    let kid = jwt_header(&t.access_token)["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    let forged = signed_by_a_foreign_key(&jwt_claims(&t.access_token), &kid);
    assert_eq!(app.introspect(&forged).await, json!({"active": false}));
}

#[tokio::test]
async fn garbage_is_inactive() {
    let app = spawn_app().await;
    for token in ["nonsense", "a.b.c"] {
        assert_eq!(
            app.introspect(token).await,
            json!({"active": false}),
            "{token}"
        );
    }
}

#[tokio::test]
async fn an_introspection_without_a_token_is_invalid_request() {
    let app = spawn_app().await;
    let (id, secret) = app.preregistered_confidential_client().await;
    let r = app
        .oauth_request("/introspect", &ClientAuth::Basic { id, secret }, &[])
        .send()
        .await
        .unwrap();
    assert_eq!(
        oauth_error(r).await,
        (StatusCode::BAD_REQUEST, "invalid_request".into())
    );
}
