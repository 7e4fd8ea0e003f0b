//! Signing key rotation: the new key signs, the old one stays published and trusted until
//! every token it signed has expired, and other instances pick the new key up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use serde_json::{Value, json};

use mcp_oauth::resource::VerifiedToken;
use mcp_oauth_core::oauth::access_token::AccessTokenClaims;

use crate::helpers::{TestApp, initialize, jwt_header, spawn_app, spawn_second_instance};

/// Rotate as `mcp-oauth keys rotate` does, then reload this instance's key set.
async fn rotate(app: &TestApp) -> String {
    let now = app.clock.now();
    let settings = &app.state.settings.tokens;
    let kid = mcp_oauth::keys::rotate(
        &app.state.db,
        settings.signing_alg,
        now,
        settings.access_ttl,
    )
    .await
    .unwrap();
    app.state.keys.reload(now).await.unwrap();
    kid
}

async fn jwks_kids(app: &TestApp) -> Vec<String> {
    let jwks: Value = app
        .http
        .get(format!("{}/jwks.json", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

fn kid(token: &str) -> String {
    jwt_header(token)["kid"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn after_rotation_the_jwks_lists_the_new_and_the_old_key() {
    let app = spawn_app().await;
    let old = jwks_kids(&app).await;
    assert_eq!(old.len(), 1);
    let new = rotate(&app).await;
    let kids = jwks_kids(&app).await;
    assert_eq!(kids.len(), 2, "{kids:?}");
    assert!(kids.contains(&new) && kids.contains(&old[0]));
}

#[tokio::test]
async fn a_token_signed_before_rotation_stays_valid_and_new_tokens_use_the_new_key() {
    let app = spawn_app().await;
    let before = app.tokens_for_new_client("kim@example.com").await;
    let new = rotate(&app).await;
    assert_ne!(kid(&before.access_token), new);
    assert_eq!(app.introspect(&before.access_token).await["active"], true);

    let after = app
        .refresh_as(&before.auth, &before.refresh_token, &[])
        .await;
    let after: Value = crate::helpers::ok_json(after).await;
    let token = after["access_token"].as_str().unwrap();
    assert_eq!(kid(token), new, "the new key signs");
    assert_eq!(app.introspect(token).await["active"], true);
}

#[tokio::test]
async fn the_old_key_is_dropped_once_its_tokens_have_expired() {
    let app = spawn_app().await;
    let old = jwks_kids(&app).await;
    rotate(&app).await;
    // Published for access_ttl plus 300 s of slack after the rotation.
    app.clock
        .advance(app.state.settings.tokens.access_ttl + 301);
    app.state.keys.reload(app.clock.now()).await.unwrap();
    let kids = jwks_kids(&app).await;
    assert_eq!(kids.len(), 1);
    assert!(!kids.contains(&old[0]));
}

#[tokio::test]
async fn an_instance_that_has_not_reloaded_verifies_tokens_signed_with_a_key_rotated_elsewhere() {
    let a = spawn_app().await;
    let b = spawn_second_instance(&a).await;
    let new = rotate(&a).await;
    let t = a.tokens_for_new_client("kim@example.com").await;
    assert_eq!(kid(&t.access_token), new);
    // B last loaded its keys before the rotation; an unknown kid makes it reload once.
    assert_eq!(b.introspect(&t.access_token).await["active"], true);
}

/// A JWT that names `kid` in a well-formed `at+jwt` header, with a meaningless signature:
/// what anyone can send without knowing a key.
fn forged_token(kid: &str) -> String {
    let part = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.{}",
        part(json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid})),
        part(json!({"sub": "mallory", "exp": 4_000_000_000_i64})),
        URL_SAFE_NO_PAD.encode([7u8; 64])
    )
}

async fn refused_as_invalid_token(app: &TestApp, token: &str) {
    let r = app.mcp_send(Some(token), None, &initialize(1)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    assert!(
        r.header("www-authenticate")
            .is_some_and(|c| c.contains("error=\"invalid_token\"")),
        "{:?}",
        r.header("www-authenticate")
    );
}

#[tokio::test]
async fn forged_tokens_naming_unknown_keys_reload_the_keys_at_most_once_a_second() {
    let a = spawn_app().await;
    let b = spawn_second_instance(&a).await;
    let before = b.state.keys.reloads();
    let started = Instant::now();

    for _ in 0..150 {
        refused_as_invalid_token(&b, &forged_token(&mcp_oauth::random::id())).await;
    }
    let concurrent = (0..150).map(|_| {
        let token = forged_token(&mcp_oauth::random::id());
        let b = &b;
        async move { refused_as_invalid_token(b, &token).await }
    });
    futures::future::join_all(concurrent).await;

    let reloads = b.state.keys.reloads() - before;
    let bound = started.elapsed().as_secs() + 1;
    assert!(
        reloads <= bound,
        "300 forged tokens in {:?} caused {reloads} reloads (at most {bound})",
        started.elapsed()
    );

    // A key rotated elsewhere is still found, once the interval since the last reload is over.
    let new = rotate(&a).await;
    let t = a.tokens_for_new_client("kim@example.com").await;
    assert_eq!(kid(&t.access_token), new);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    b.mcp_send(Some(&t.access_token), None, &initialize(1))
        .await
        .result();
}

#[tokio::test]
async fn the_verified_token_cache_stays_bounded_and_keeps_a_token_in_use() {
    let app = spawn_app().await;
    let hot = app
        .tokens_for_new_client("kim@example.com")
        .await
        .access_token;
    app.mcp_send(Some(&hot), None, &initialize(1))
        .await
        .result();
    let cache = &app.state.verified_tokens;
    assert!(cache.contains(&hot));

    // Other tokens verified once each, many more than fit, while the hot one keeps being used.
    let capacity = cache.capacity();
    let one_off = Arc::new(VerifiedToken::new(jwt_claims_of(&app)));
    let batch = capacity / 4;
    for round in 0..12 {
        for i in 0..batch {
            cache.insert(&format!("one-off-{round}-{i}"), one_off.clone());
        }
        assert!(
            cache.len() <= capacity,
            "round {round}: {} entries, capacity {capacity}",
            cache.len()
        );
        assert!(
            cache.contains(&hot),
            "round {round}: the token in use was evicted"
        );
        app.mcp_send(Some(&hot), None, &initialize(1))
            .await
            .result();
    }
}

/// Claims for cache entries that are never presented over HTTP.
fn jwt_claims_of(app: &TestApp) -> AccessTokenClaims {
    let now = app.clock.now();
    AccessTokenClaims {
        iss: app.state.settings.issuer.clone(),
        sub: "someone".into(),
        aud: app.mcp_resource(),
        client_id: "some-client".into(),
        scope: "mcp".into(),
        exp: now + 900,
        iat: now,
        nbf: now,
        jti: mcp_oauth::random::id(),
        gid: None,
        auth_time: None,
    }
}
