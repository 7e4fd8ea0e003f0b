//! Token revocation (RFC 7009), on one instance and across instances sharing a database.

use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::helpers::{
    ClientAuth, TestApp, jwt_claims, oauth_error, spawn_app, spawn_second_instance,
};

async fn revoked_ok(r: reqwest::Response) {
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "RFC 7009 §2.2: 200 in every case"
    );
    assert_eq!(r.headers()["cache-control"], "no-store");
}

#[tokio::test]
async fn revoking_an_access_token_deactivates_it_but_keeps_its_refresh_token() {
    // RFC 7009 §2.1: revoking an access token need not touch the grant.
    let app = spawn_app().await;
    let t = app.tokens_for_new_client("rhea@example.com").await;
    revoked_ok(app.revoke_as(&t.auth, &t.access_token).await).await;
    assert_eq!(app.introspect(&t.access_token).await["active"], false);
    let r = app.refresh_as(&t.auth, &t.refresh_token, &[]).await;
    assert_eq!(r.status(), StatusCode::OK, "the refresh token still works");
}

#[tokio::test]
async fn revoking_a_refresh_token_revokes_its_grant() {
    let app = spawn_app().await;
    let t = app.tokens_for_new_client("rhea@example.com").await;
    revoked_ok(app.revoke_as(&t.auth, &t.refresh_token).await).await;
    let r = app.refresh_as(&t.auth, &t.refresh_token, &[]).await;
    assert_eq!(oauth_error(r).await.1, "invalid_grant");
    assert_eq!(
        app.introspect(&t.access_token).await["active"],
        false,
        "the grant's access tokens go with it"
    );
}

#[tokio::test]
async fn a_confidential_client_revokes_its_own_tokens() {
    let app = spawn_app().await;
    let redirect = "http://127.0.0.1:7777/callback";
    let client = app
        .register_confidential(redirect, "client_secret_post")
        .await;
    let browser = app.signed_in_browser("rhea@example.com").await;
    let t = app.tokens_for(&client, &browser, redirect, &[]).await;
    revoked_ok(app.revoke_as(&client, &t.refresh_token).await).await;
    assert_eq!(app.introspect(&t.access_token).await["active"], false);
}

#[tokio::test]
async fn another_client_cannot_revoke_your_tokens_though_it_is_told_200() {
    let app = spawn_app().await;
    let t = app.tokens_for_new_client("rhea@example.com").await;
    let other = ClientAuth::Public(
        app.register_public_client("http://127.0.0.1:8888/callback")
            .await,
    );
    assert_ne!(other.id(), t.client_id);
    revoked_ok(app.revoke_as(&other, &t.access_token).await).await;
    revoked_ok(app.revoke_as(&other, &t.refresh_token).await).await;
    assert_eq!(app.introspect(&t.access_token).await["active"], true);
    assert_eq!(app.introspect(&t.refresh_token).await["active"], true);
}

#[tokio::test]
async fn unknown_or_garbage_tokens_are_answered_with_200() {
    let app = spawn_app().await;
    let t = app.tokens_for_new_client("rhea@example.com").await;
    for token in ["no-such-token", "a.b.c", "eyJhbGciOiJub25lIn0.e30.", "%%%"] {
        revoked_ok(app.revoke_as(&t.auth, token).await).await;
    }
    assert_eq!(app.introspect(&t.access_token).await["active"], true);
}

#[tokio::test]
async fn a_revocation_without_a_token_is_invalid_request() {
    let app = spawn_app().await;
    let t = app.tokens_for_new_client("rhea@example.com").await;
    let r = app
        .oauth_request("/revoke", &t.auth, &[("token_type_hint", "access_token")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        oauth_error(r).await,
        (StatusCode::BAD_REQUEST, "invalid_request".into())
    );
}

#[tokio::test]
async fn a_confidential_client_that_does_not_authenticate_cannot_revoke() {
    let app = spawn_app().await;
    let redirect = "http://127.0.0.1:7777/callback";
    let client = app
        .register_confidential(redirect, "client_secret_basic")
        .await;
    let browser = app.signed_in_browser("rhea@example.com").await;
    let t = app.tokens_for(&client, &browser, redirect, &[]).await;
    let r = app
        .revoke_as(&client.without_secret(), &t.refresh_token)
        .await;
    assert_eq!(
        oauth_error(r).await,
        (StatusCode::UNAUTHORIZED, "invalid_client".into())
    );
    let r = app
        .revoke_as(&client.with_secret("wrong"), &t.refresh_token)
        .await;
    assert_eq!(oauth_error(r).await.1, "invalid_client");
    assert_eq!(app.introspect(&t.refresh_token).await["active"], true);
}

/// Wait until `b`'s in-memory revocation list knows `access_token` is revoked. It must within
/// a second: that is the promise of the revocation poller.
async fn revoked_on(b: &TestApp, access_token: &str) {
    let claims = jwt_claims(access_token);
    let jti = claims["jti"].as_str().unwrap();
    let gid = claims["gid"].as_str();
    let deadline = Instant::now() + Duration::from_secs(1);
    while !b.state.revocations.is_revoked(jti, gid) {
        assert!(
            Instant::now() < deadline,
            "instance B did not learn of the revocation within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_access_token_revoked_on_one_instance_is_revoked_on_another_within_a_second() {
    let a = spawn_app().await;
    let b = spawn_second_instance(&a).await;
    let t = a.tokens_for_new_client("rhea@example.com").await;
    assert_eq!(
        b.introspect(&t.access_token).await["active"],
        true,
        "B accepts A's tokens: same issuer, keys from the shared database"
    );
    revoked_ok(a.revoke_as(&t.auth, &t.access_token).await).await;
    revoked_on(&b, &t.access_token).await;
    assert_eq!(b.introspect(&t.access_token).await["active"], false);
}

#[tokio::test]
async fn a_grant_revoked_on_one_instance_is_revoked_on_another_within_a_second() {
    let a = spawn_app().await;
    let b = spawn_second_instance(&a).await;
    let t = a.tokens_for_new_client("rhea@example.com").await;
    revoked_ok(a.revoke_as(&t.auth, &t.refresh_token).await).await;
    revoked_on(&b, &t.access_token).await;
    assert_eq!(b.introspect(&t.access_token).await["active"], false);
    let r = b.refresh_as(&t.auth, &t.refresh_token, &[]).await;
    assert_eq!(oauth_error(r).await.1, "invalid_grant");
}
