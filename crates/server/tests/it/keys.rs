//! Signing key rotation: the new key signs, the old one stays published and trusted until
//! every token it signed has expired, and other instances pick the new key up.

use serde_json::Value;

use crate::helpers::{TestApp, jwt_header, spawn_app, spawn_second_instance};

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
