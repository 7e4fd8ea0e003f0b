//! The refresh token grant (OAuth 2.1 §4.3): rotation, the retry grace period, reuse
//! detection revoking the family, scope narrowing, resource binding and `offline_access`.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{ClientAuth, TestApp, Tokens, jwt_claims, oauth_error, ok_json, spawn_app};

/// Grace period plus one second: a rotated token presented now is a replay.
fn past_grace(app: &TestApp) -> i64 {
    app.state.settings.tokens.refresh_grace + 1
}

async fn refresh(app: &TestApp, t: &Tokens, refresh_token: &str) -> Value {
    ok_json(app.refresh_as(&t.auth, refresh_token, &[]).await).await
}

fn rt(body: &Value) -> &str {
    body["refresh_token"].as_str().expect("a refresh token")
}

fn at(body: &Value) -> &str {
    body["access_token"].as_str().expect("an access token")
}

async fn refused(r: reqwest::Response) -> String {
    let (status, error) = oauth_error(r).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    error
}

#[tokio::test]
async fn each_refresh_rotates_the_refresh_token() {
    let app = spawn_app().await;
    let t = app.tokens_for_new_client("rita@example.com").await;
    let first = refresh(&app, &t, &t.refresh_token).await;
    assert_ne!(rt(&first), t.refresh_token);
    assert_ne!(at(&first), t.access_token);
    let second = refresh(&app, &t, rt(&first)).await;
    assert_ne!(rt(&second), rt(&first));
    assert_eq!(app.introspect(at(&second)).await["active"], true);
    assert_eq!(
        jwt_claims(at(&second))["gid"],
        jwt_claims(&t.access_token)["gid"]
    );
}

#[tokio::test]
async fn reusing_a_rotated_token_after_the_grace_period_revokes_the_whole_family() {
    let app = spawn_app().await;
    let t = app.tokens_for_new_client("rita@example.com").await;
    let first = refresh(&app, &t, &t.refresh_token).await;
    let second = refresh(&app, &t, rt(&first)).await;
    app.clock.advance(past_grace(&app));

    let reuse = app.refresh_as(&t.auth, &t.refresh_token, &[]).await;
    assert_eq!(refused(reuse).await, "invalid_grant");

    let newest = app.refresh_as(&t.auth, rt(&second), &[]).await;
    assert_eq!(
        refused(newest).await,
        "invalid_grant",
        "the newest refresh token dies with its family"
    );
    for access in [t.access_token.as_str(), at(&first), at(&second)] {
        assert_eq!(
            app.introspect(access).await["active"],
            false,
            "every access token of the family is revoked"
        );
    }
}

#[tokio::test]
async fn a_retry_within_the_grace_period_gets_the_same_successor_and_forks_nothing() {
    // A client whose response was lost retries with the token it still has.
    let app = spawn_app().await;
    let t = app.tokens_for_new_client("rita@example.com").await;
    let first = refresh(&app, &t, &t.refresh_token).await;
    app.clock.advance(app.state.settings.tokens.refresh_grace);
    let retry = refresh(&app, &t, &t.refresh_token).await;
    assert_eq!(
        rt(&retry),
        rt(&first),
        "the retry gets the successor already issued, not a second one"
    );
    assert_eq!(app.introspect(at(&retry)).await["active"], true);
    assert_eq!(
        app.count_rows(
            "refresh_tokens",
            "grant_id",
            jwt_claims(&t.access_token)["gid"].as_str().unwrap()
        )
        .await,
        2,
        "one chain: the original and its one successor"
    );
    // The family goes on from the successor, and the rotated token is now a replay.
    let next = refresh(&app, &t, rt(&retry)).await;
    assert_eq!(app.introspect(at(&next)).await["active"], true);
    let replay = app.refresh_as(&t.auth, &t.refresh_token, &[]).await;
    assert_eq!(refused(replay).await, "invalid_grant");
    assert_eq!(
        refused(app.refresh_as(&t.auth, rt(&next), &[]).await).await,
        "invalid_grant",
        "reuse detection revoked the whole (single) chain"
    );
}

#[tokio::test]
async fn a_grace_of_zero_allows_no_retry_even_within_the_same_second() {
    let app = crate::helpers::spawn_app_with(|s| s.tokens.refresh_grace = 0).await;
    let t = app.tokens_for_new_client("rita@example.com").await;
    let first = refresh(&app, &t, &t.refresh_token).await;
    let replay = app.refresh_as(&t.auth, &t.refresh_token, &[]).await;
    assert_eq!(refused(replay).await, "invalid_grant");
    assert_eq!(
        refused(app.refresh_as(&t.auth, rt(&first), &[]).await).await,
        "invalid_grant",
        "the replay revoked the family"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_concurrent_refreshes_of_one_token_leave_one_chain() {
    let app = spawn_app().await;
    let t = app.tokens_for_new_client("rita@example.com").await;
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", t.refresh_token.as_str()),
    ];
    let racers: Vec<_> = (0..10)
        .map(|_| app.spawn_token_as(&t.auth, &form))
        .collect();
    let mut successors = std::collections::HashSet::new();
    for racer in racers {
        let r = racer.await.unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert_eq!(status, StatusCode::OK, "every retry is answered: {body}");
        successors.insert(rt(&body).to_owned());
    }
    assert_eq!(successors.len(), 1, "all ten got the same successor");
    let gid = jwt_claims(&t.access_token)["gid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.count_rows("refresh_tokens", "grant_id", &gid).await, 2);
    let successor = successors.into_iter().next().unwrap();
    let next = refresh(&app, &t, &successor).await;
    assert_eq!(app.introspect(at(&next)).await["active"], true);
}

#[tokio::test]
async fn a_replay_after_the_grace_period_is_invalid_grant_and_revokes_the_family() {
    let app = spawn_app().await;
    let t = app.tokens_for_new_client("rita@example.com").await;
    let first = refresh(&app, &t, &t.refresh_token).await;
    app.clock.advance(past_grace(&app));
    let replay = app.refresh_as(&t.auth, &t.refresh_token, &[]).await;
    assert_eq!(refused(replay).await, "invalid_grant");
    let child = app.refresh_as(&t.auth, rt(&first), &[]).await;
    assert_eq!(
        refused(child).await,
        "invalid_grant",
        "the child is revoked"
    );
    assert_eq!(app.introspect(at(&first)).await["active"], false);
}

#[tokio::test]
async fn a_retry_within_the_grace_period_is_a_replay_once_a_child_has_been_used() {
    let app = spawn_app().await;
    let t = app.tokens_for_new_client("rita@example.com").await;
    let first = refresh(&app, &t, &t.refresh_token).await;
    let second = refresh(&app, &t, rt(&first)).await;
    let replay = app.refresh_as(&t.auth, &t.refresh_token, &[]).await;
    assert_eq!(refused(replay).await, "invalid_grant");
    assert_eq!(app.introspect(at(&second)).await["active"], false);
}

/// A public client authorized for `mcp offline_access`.
async fn tokens_with_offline_access(app: &TestApp) -> Tokens {
    let t = app
        .tokens_for_client_at(
            "olga@example.com",
            "http://127.0.0.1:7777/callback",
            &[("scope", "mcp offline_access")],
        )
        .await;
    assert_eq!(t.scope, "mcp offline_access");
    t
}

#[tokio::test]
async fn a_refresh_may_narrow_the_scope_of_the_access_token_while_the_grant_keeps_its_scope() {
    let app = spawn_app().await;
    let t = tokens_with_offline_access(&app).await;
    let narrow = ok_json(
        app.refresh_as(&t.auth, &t.refresh_token, &[("scope", "mcp")])
            .await,
    )
    .await;
    assert_eq!(narrow["scope"], "mcp");
    assert_eq!(jwt_claims(at(&narrow))["scope"], "mcp");
    // RFC 6749 §6: the new refresh token keeps the grant's full scope.
    assert_eq!(
        app.introspect(rt(&narrow)).await["scope"],
        "mcp offline_access"
    );
    let full = refresh(&app, &t, rt(&narrow)).await;
    assert_eq!(full["scope"], "mcp offline_access");
}

#[tokio::test]
async fn a_refresh_may_not_widen_the_scope_and_leaves_the_token_usable() {
    let app = spawn_app().await;
    let t = app.tokens_for_new_client("rita@example.com").await;
    assert_eq!(t.scope, "mcp");
    let wider = app
        .refresh_as(
            &t.auth,
            &t.refresh_token,
            &[("scope", "mcp offline_access")],
        )
        .await;
    assert_eq!(refused(wider).await, "invalid_scope");
    refresh(&app, &t, &t.refresh_token).await;
}

#[tokio::test]
async fn a_refresh_for_another_resource_is_invalid_target_and_leaves_the_token_usable() {
    let app = spawn_app().await;
    let t = app.tokens_for_new_client("rita@example.com").await;
    let elsewhere = format!("{}/elsewhere", app.url);
    let r = app
        .refresh_as(&t.auth, &t.refresh_token, &[("resource", &elsewhere)])
        .await;
    assert_eq!(refused(r).await, "invalid_target");
    let same = ok_json(
        app.refresh_as(
            &t.auth,
            &t.refresh_token,
            &[("resource", &app.mcp_resource())],
        )
        .await,
    )
    .await;
    assert_eq!(jwt_claims(at(&same))["aud"], app.mcp_resource());
}

#[tokio::test]
async fn an_expired_refresh_token_is_invalid_grant() {
    let app = spawn_app().await;
    let t = app.tokens_for_new_client("rita@example.com").await;
    app.clock.advance(app.state.settings.tokens.refresh_ttl);
    let r = app.refresh_as(&t.auth, &t.refresh_token, &[]).await;
    assert_eq!(refused(r).await, "invalid_grant");
}

#[tokio::test]
async fn a_refresh_token_presented_by_another_client_is_invalid_grant_and_stays_usable() {
    let app = spawn_app().await;
    let t = app.tokens_for_new_client("rita@example.com").await;
    let other = ClientAuth::Public(
        app.register_public_client("http://127.0.0.1:8888/callback")
            .await,
    );
    assert_ne!(other.id(), t.client_id);
    let r = app.refresh_as(&other, &t.refresh_token, &[]).await;
    assert_eq!(refused(r).await, "invalid_grant");
    refresh(&app, &t, &t.refresh_token).await;
}

#[tokio::test]
async fn an_unknown_refresh_token_is_invalid_grant() {
    let app = spawn_app().await;
    let t = app.tokens_for_new_client("rita@example.com").await;
    let r = app.refresh_as(&t.auth, "not-a-refresh-token", &[]).await;
    assert_eq!(refused(r).await, "invalid_grant");
}

#[tokio::test]
async fn an_access_token_is_not_a_refresh_token() {
    let app = spawn_app().await;
    let t = app.tokens_for_new_client("rita@example.com").await;
    let r = app.refresh_as(&t.auth, &t.access_token, &[]).await;
    assert_eq!(refused(r).await, "invalid_grant");
}

/// A public client registered for the authorization code grant only.
async fn code_only_client(app: &TestApp) -> ClientAuth {
    let r = app
        .register(serde_json::json!({
            "client_name": "No Refresh",
            "redirect_uris": ["http://127.0.0.1:9999/callback"],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code"],
        }))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    ClientAuth::Public(
        r.json::<Value>().await.unwrap()["client_id"]
            .as_str()
            .unwrap()
            .to_owned(),
    )
}

#[tokio::test]
async fn a_client_without_the_refresh_grant_gets_no_refresh_token_unless_it_asks_for_offline_access()
 {
    let app = spawn_app().await;
    let client = code_only_client(&app).await;
    let browser = app.signed_in_browser("otto@example.com").await;
    let redirect = "http://127.0.0.1:9999/callback";
    let plain = app.tokens_for(&client, &browser, redirect, &[]).await;
    assert!(plain.refresh_token.is_empty(), "no refresh token for `mcp`");
    let offline = app
        .tokens_for(
            &client,
            &browser,
            redirect,
            &[("scope", "mcp offline_access")],
        )
        .await;
    assert!(
        !offline.refresh_token.is_empty(),
        "offline_access asks for one"
    );
    let refreshed = refresh(&app, &offline, &offline.refresh_token).await;
    assert_eq!(refreshed["scope"], "mcp offline_access");
}

#[tokio::test]
async fn a_client_registered_for_the_refresh_grant_gets_a_refresh_token_without_offline_access() {
    let app = spawn_app().await;
    let t = app.tokens_for_new_client("rita@example.com").await;
    assert_eq!(t.scope, "mcp");
    assert!(!t.refresh_token.is_empty());
}
