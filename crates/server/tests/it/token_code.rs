//! The authorization code grant, end to end: authorize, sign in, consent, exchange; every
//! way an exchange fails, each leaving the code usable (OAuth 2.1 §4.1.3, RFC 7636, RFC 8707).

use reqwest::StatusCode;
use serde_json::Value;

use reqwest::Response;

use crate::helpers::{
    ClientAuth, Pkce, TestApp, jwt_claims, jwt_header, oauth_error, ok_json, redirect_params,
    spawn_app,
};

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
async fn a_database_failure_after_tokens_are_issued_does_not_lose_them() {
    // Recording the client's last use fails (injected): the code redirect and the token
    // response must still go out, or the client's retry would look like a replay.
    let app = spawn_app().await;
    let client_id = app.register_public_client(REDIRECT).await;
    let browser = app.signed_in_browser("alice@example.com").await;
    app.fail_updates_of("clients").await;
    let pkce = Pkce::new();
    let r = app
        .authorize(
            &browser,
            &app.authorize_url(&client_id, REDIRECT, &pkce, &[]),
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "the code is delivered");
    let code = redirect_params(&r)["code"].clone();
    let body = ok_json(app.exchange(&client_id, &code, REDIRECT, &pkce).await).await;
    let access = body["access_token"].as_str().unwrap();
    assert_eq!(app.introspect(access).await["active"], true);
    assert_eq!(
        app.count_rows("clients", "id", &client_id).await,
        1,
        "the client is untouched"
    );
    let refreshed = app
        .refresh_as(
            &ClientAuth::Public(client_id.clone()),
            body["refresh_token"].as_str().unwrap(),
            &[],
        )
        .await;
    ok_json(refreshed).await;
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

/// A public client, a signed-in user and a fresh code waiting to be exchanged at `REDIRECT`.
struct Pending {
    app: TestApp,
    client: ClientAuth,
    code: String,
    pkce: Pkce,
}

/// Form parameters as owned pairs, so that tests can build values from the app's URL.
type Form = Vec<(&'static str, String)>;

async fn pending_code() -> Pending {
    pending_code_with(|_| vec![]).await
}

/// Like `pending_code`, with extra authorization parameters made from the running app.
async fn pending_code_with(extra: impl FnOnce(&TestApp) -> Form) -> Pending {
    let app = spawn_app().await;
    let client = ClientAuth::Public(app.register_public_client(REDIRECT).await);
    let browser = app.signed_in_browser("carol@example.com").await;
    let extra = extra(&app);
    let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (code, pkce) = app.code_for(&browser, client.id(), REDIRECT, &extra).await;
    Pending {
        app,
        client,
        code,
        pkce,
    }
}

impl Pending {
    /// The correct exchange form, with `drop` removed and `add` appended.
    fn form(&self, drop: &[&str], add: Form) -> Form {
        let mut form: Form = vec![
            ("grant_type", "authorization_code".into()),
            ("code", self.code.clone()),
            ("redirect_uri", REDIRECT.into()),
            ("code_verifier", self.pkce.verifier.clone()),
        ];
        form.retain(|(k, _)| !drop.contains(k));
        form.extend(add);
        form
    }

    /// The correct form with one parameter's value replaced.
    fn with(&self, name: &'static str, value: impl Into<String>) -> Form {
        self.form(&[name], vec![(name, value.into())])
    }

    async fn send(&self, auth: &ClientAuth, form: &Form) -> Response {
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.app.token_as(auth, &form).await
    }

    /// The request fails with 400 `expected`, and the code survives it: the correct exchange
    /// still succeeds afterwards.
    async fn refused_without_consuming(&self, auth: &ClientAuth, form: &Form, expected: &str) {
        let r = self.send(auth, form).await;
        assert_eq!(
            oauth_error(r).await,
            (StatusCode::BAD_REQUEST, expected.to_owned())
        );
        self.exchange_succeeds().await;
    }

    async fn exchange_succeeds(&self) -> Value {
        ok_json(
            self.app
                .exchange_as(&self.client, &self.code, REDIRECT, &self.pkce)
                .await,
        )
        .await
    }
}

#[tokio::test]
async fn a_wrong_code_verifier_is_invalid_grant_and_leaves_the_code_usable() {
    let p = pending_code().await;
    let form = p.with("code_verifier", Pkce::new().verifier);
    p.refused_without_consuming(&p.client, &form, "invalid_grant")
        .await;
}

#[tokio::test]
async fn a_missing_code_verifier_is_invalid_request_and_leaves_the_code_usable() {
    let p = pending_code().await;
    let form = p.form(&["code_verifier"], vec![]);
    p.refused_without_consuming(&p.client, &form, "invalid_request")
        .await;
}

#[tokio::test]
async fn a_too_short_code_verifier_is_invalid_grant_and_leaves_the_code_usable() {
    // RFC 7636 §4.1: 43 to 128 characters.
    let p = pending_code().await;
    let form = p.with("code_verifier", "too-short");
    p.refused_without_consuming(&p.client, &form, "invalid_grant")
        .await;
}

#[tokio::test]
async fn a_code_verifier_with_characters_outside_the_unreserved_set_is_invalid_grant() {
    // RFC 7636 §4.1: [A-Z] / [a-z] / [0-9] / "-" / "." / "_" / "~" only.
    let p = pending_code().await;
    let form = p.with("code_verifier", "a!b+".repeat(12));
    p.refused_without_consuming(&p.client, &form, "invalid_grant")
        .await;
}

#[tokio::test]
async fn a_different_redirect_uri_is_invalid_grant_and_leaves_the_code_usable() {
    let p = pending_code().await;
    let form = p.with("redirect_uri", "http://127.0.0.1:7777/other");
    p.refused_without_consuming(&p.client, &form, "invalid_grant")
        .await;
}

#[tokio::test]
async fn a_missing_redirect_uri_that_was_sent_at_authorize_is_invalid_request_and_leaves_the_code_usable()
 {
    // OAuth 2.1 §4.1.3: required when it was included in the authorization request.
    let p = pending_code().await;
    let form = p.form(&["redirect_uri"], vec![]);
    p.refused_without_consuming(&p.client, &form, "invalid_request")
        .await;
}

#[tokio::test]
async fn a_code_presented_by_another_client_is_invalid_grant_and_leaves_the_code_usable() {
    let p = pending_code().await;
    // Identical public registrations share a client; another redirect makes another one.
    let other = ClientAuth::Public(
        p.app
            .register_public_client("http://127.0.0.1:8888/callback")
            .await,
    );
    assert_ne!(other.id(), p.client.id());
    let form = p.form(&[], vec![]);
    p.refused_without_consuming(&other, &form, "invalid_grant")
        .await;
}

#[tokio::test]
async fn an_expired_code_is_invalid_grant() {
    let p = pending_code().await;
    p.app
        .clock
        .advance(p.app.state.settings.tokens.code_ttl + 1);
    let r = p.send(&p.client, &p.form(&[], vec![])).await;
    assert_eq!(
        oauth_error(r).await,
        (StatusCode::BAD_REQUEST, "invalid_grant".into())
    );
}

#[tokio::test]
async fn a_code_is_still_good_just_before_it_expires() {
    let p = pending_code().await;
    p.app
        .clock
        .advance(p.app.state.settings.tokens.code_ttl - 1);
    p.exchange_succeeds().await;
}

#[tokio::test]
async fn an_unknown_code_is_invalid_grant() {
    let p = pending_code().await;
    let form = p.with("code", "not-a-code-we-issued");
    p.refused_without_consuming(&p.client, &form, "invalid_grant")
        .await;
}

#[tokio::test]
async fn a_resource_other_than_the_authorized_one_is_invalid_target_and_leaves_the_code_usable() {
    // RFC 8707 §2.2; CFW conformance: "reject resource expansion without consuming the code".
    let p = pending_code().await;
    let form = p.form(&[], vec![("resource", format!("{}/elsewhere", p.app.url))]);
    p.refused_without_consuming(&p.client, &form, "invalid_target")
        .await;
}

#[tokio::test]
async fn two_resources_at_the_token_endpoint_are_invalid_target_and_leave_the_code_usable() {
    let p = pending_code().await;
    let mcp = p.app.mcp_resource();
    let form = p.form(&[], vec![("resource", mcp.clone()), ("resource", mcp)]);
    p.refused_without_consuming(&p.client, &form, "invalid_target")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_redemptions_of_one_code_yield_exactly_one_token_response() {
    let p = pending_code().await;
    let form = p.form(&[], vec![]);
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let racers: Vec<_> = (0..2)
        .map(|_| p.app.spawn_token_as(&p.client, &form))
        .collect();
    let mut ok = Vec::new();
    let mut refused = Vec::new();
    for racer in racers {
        let r = racer.await.unwrap();
        if r.status() == StatusCode::OK {
            ok.push(r.json::<Value>().await.unwrap());
        } else {
            refused.push(oauth_error(r).await);
        }
    }
    assert_eq!(ok.len(), 1, "exactly one redemption wins");
    assert_eq!(
        refused,
        vec![(StatusCode::BAD_REQUEST, "invalid_grant".to_owned())]
    );
    // The loser is a replay, so the winner's grant is revoked too (OAuth 2.1 §4.1.2).
    let at = ok[0]["access_token"].as_str().unwrap();
    assert_eq!(p.app.introspect(at).await["active"], false);
}

#[tokio::test]
async fn a_resource_omitted_at_authorize_and_token_defaults_to_the_mcp_endpoint() {
    let p = pending_code().await;
    let body = p.exchange_succeeds().await;
    let claims = jwt_claims(body["access_token"].as_str().unwrap());
    assert_eq!(claims["aud"], format!("{}/mcp", p.app.url));
}

#[tokio::test]
async fn an_explicit_resource_equal_to_the_mcp_endpoint_is_the_audience() {
    let p = pending_code_with(|app| vec![("resource", app.mcp_resource())]).await;
    let body = p.exchange_succeeds().await;
    let claims = jwt_claims(body["access_token"].as_str().unwrap());
    assert_eq!(claims["aud"], p.app.mcp_resource());
}

#[tokio::test]
async fn an_explicit_resource_with_a_trailing_slash_is_the_same_resource() {
    // Clients that serialise with `new URL(x).href` add the slash (MCP TS SDK #1968).
    let p = pending_code_with(|app| vec![("resource", format!("{}/", app.mcp_resource()))]).await;
    let body = p.exchange_succeeds().await;
    let claims = jwt_claims(body["access_token"].as_str().unwrap());
    assert_eq!(claims["aud"], p.app.mcp_resource(), "canonical, no slash");
}

#[tokio::test]
async fn a_token_request_may_repeat_the_authorized_resource() {
    // MCP: clients send `resource` in both requests (RFC 8707 §2.2).
    let p = pending_code_with(|app| vec![("resource", app.mcp_resource())]).await;
    let form = p.form(&[], vec![("resource", p.app.mcp_resource())]);
    let body = ok_json(p.send(&p.client, &form).await).await;
    let claims = jwt_claims(body["access_token"].as_str().unwrap());
    assert_eq!(claims["aud"], p.app.mcp_resource());
}

#[tokio::test]
async fn a_token_request_may_repeat_the_defaulted_resource_with_a_trailing_slash() {
    let p = pending_code().await;
    let form = p.form(
        &[],
        vec![("resource", format!("{}/", p.app.mcp_resource()))],
    );
    ok_json(p.send(&p.client, &form).await).await;
}
