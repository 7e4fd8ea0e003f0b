//! Periodic cleanup: expired codes, refresh tokens and sessions are deleted; live ones, and
//! used codes still within their replay-detection retention, are kept.

use mcp_oauth_core::domain::SecretHash;

use crate::helpers::{ClientAuth, TestApp, oauth_error, ok_json, spawn_app};

const REDIRECT: &str = "http://127.0.0.1:7777/callback";
const SESSION_COOKIE: &str = "__Host-mcp_session";

fn hash(secret: &str) -> String {
    SecretHash::of(secret).as_str().to_owned()
}

async fn cleanup(app: &TestApp) {
    mcp_oauth::housekeeping::run_cleanup(&app.state)
        .await
        .unwrap();
}

#[tokio::test]
async fn cleanup_deletes_expired_codes_refresh_tokens_and_sessions_and_keeps_live_ones() {
    let app = spawn_app().await;
    let client = ClientAuth::Public(app.register_public_client(REDIRECT).await);

    // Old: a refresh token, a code never exchanged, and a session, all to expire.
    let old_browser = app.signed_in_browser("old@example.com").await;
    let old = app.tokens_for(&client, &old_browser, REDIRECT, &[]).await;
    let (old_code, _) = app.code_for(&old_browser, client.id(), REDIRECT, &[]).await;
    let old_session = old_browser
        .cookie(SESSION_COOKIE)
        .expect("a session cookie");

    let s = &app.state.settings;
    app.clock
        .advance(s.tokens.refresh_ttl.max(s.session_ttl) + 86_400 + 1);

    // New: the same things, alive.
    let new_browser = app.signed_in_browser("new@example.com").await;
    let new = app.tokens_for(&client, &new_browser, REDIRECT, &[]).await;
    let (new_code, new_pkce) = app.code_for(&new_browser, client.id(), REDIRECT, &[]).await;
    let new_session = new_browser
        .cookie(SESSION_COOKIE)
        .expect("a session cookie");

    cleanup(&app).await;

    let count = |table: &'static str, column: &'static str, value: String| {
        let app = &app;
        async move { app.count_rows(table, column, &value).await }
    };
    assert_eq!(
        count("authorization_codes", "code_hash", hash(&old_code)).await,
        0
    );
    assert_eq!(
        count("refresh_tokens", "token_hash", hash(&old.refresh_token)).await,
        0
    );
    assert_eq!(count("sessions", "id_hash", hash(&old_session)).await, 0);

    assert_eq!(
        count("authorization_codes", "code_hash", hash(&new_code)).await,
        1
    );
    assert_eq!(
        count("refresh_tokens", "token_hash", hash(&new.refresh_token)).await,
        1
    );
    assert_eq!(count("sessions", "id_hash", hash(&new_session)).await, 1);

    // And they still work through the API.
    ok_json(
        app.exchange_as(&client, &new_code, REDIRECT, &new_pkce)
            .await,
    )
    .await;
    ok_json(app.refresh_as(&client, &new.refresh_token, &[]).await).await;
    let account = new_browser.get("/account").await;
    assert_eq!(account.status(), reqwest::StatusCode::OK, "still signed in");
}

#[tokio::test]
async fn a_used_code_outlives_its_expiry_so_that_a_late_replay_still_revokes_its_grant() {
    let app = spawn_app().await;
    let client = ClientAuth::Public(app.register_public_client(REDIRECT).await);
    let browser = app.signed_in_browser("late@example.com").await;
    let (code, pkce) = app.code_for(&browser, client.id(), REDIRECT, &[]).await;
    let first = ok_json(app.exchange_as(&client, &code, REDIRECT, &pkce).await).await;
    app.clock.advance(3_600);
    cleanup(&app).await;

    let replay = app.exchange_as(&client, &code, REDIRECT, &pkce).await;
    assert_eq!(oauth_error(replay).await.1, "invalid_grant");
    let at = first["access_token"].as_str().unwrap();
    assert_eq!(
        app.introspect(at).await["active"],
        false,
        "the replay found the grant and revoked it"
    );
}

#[tokio::test]
async fn cleanup_is_idempotent() {
    let app = spawn_app().await;
    let t = app.tokens_for_new_client("idem@example.com").await;
    cleanup(&app).await;
    cleanup(&app).await;
    ok_json(app.refresh_as(&t.auth, &t.refresh_token, &[]).await).await;
}
