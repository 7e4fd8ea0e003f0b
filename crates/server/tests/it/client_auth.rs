//! Client authentication and request parsing at the token endpoint (OAuth 2.1 §2.4, §3.2;
//! RFC 6749 §2.3, §5.2): each method as registered, and every failure in the OAuth error
//! shape with `Cache-Control: no-store`.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{ClientAuth, Pkce, TestApp, oauth_error, ok_json, spawn_app};

const REDIRECT: &str = "http://127.0.0.1:7777/callback";

/// A registered client of `method` with a code waiting to be exchanged.
struct Pending {
    app: TestApp,
    client: ClientAuth,
    code: String,
    pkce: Pkce,
}

async fn pending(method: &str) -> Pending {
    let app = spawn_app().await;
    let client = match method {
        "none" => ClientAuth::Public(app.register_public_client(REDIRECT).await),
        secret_method => app.register_confidential(REDIRECT, secret_method).await,
    };
    let browser = app.signed_in_browser("cora@example.com").await;
    let (code, pkce) = app.code_for(&browser, client.id(), REDIRECT, &[]).await;
    Pending {
        app,
        client,
        code,
        pkce,
    }
}

impl Pending {
    async fn exchange(&self, auth: &ClientAuth) -> reqwest::Response {
        self.app
            .exchange_as(auth, &self.code, REDIRECT, &self.pkce)
            .await
    }

    /// The code was not consumed by a failed attempt: its own client can still use it.
    async fn code_still_works(&self) {
        ok_json(self.exchange(&self.client).await).await;
    }
}

async fn unauthorized(r: reqwest::Response) {
    assert!(
        r.headers().contains_key("www-authenticate"),
        "RFC 6749 §5.2: a 401 names the scheme"
    );
    assert_eq!(
        oauth_error(r).await,
        (StatusCode::UNAUTHORIZED, "invalid_client".to_owned())
    );
}

#[tokio::test]
async fn a_client_secret_basic_client_exchanges_a_code_with_basic_credentials() {
    let p = pending("client_secret_basic").await;
    assert!(matches!(p.client, ClientAuth::Basic { .. }));
    let body = ok_json(p.exchange(&p.client).await).await;
    assert!(body["refresh_token"].is_string());
}

#[tokio::test]
async fn a_client_secret_post_client_exchanges_a_code_with_credentials_in_the_body() {
    let p = pending("client_secret_post").await;
    assert!(matches!(p.client, ClientAuth::Post { .. }));
    ok_json(p.exchange(&p.client).await).await;
}

#[tokio::test]
async fn a_basic_client_sending_its_secret_in_the_body_is_invalid_client() {
    // CFW conformance: "mismatched client auth method rejected".
    let p = pending("client_secret_basic").await;
    unauthorized(p.exchange(&p.client.by_other_method()).await).await;
    p.code_still_works().await;
}

#[tokio::test]
async fn a_post_client_sending_basic_credentials_is_invalid_client() {
    let p = pending("client_secret_post").await;
    unauthorized(p.exchange(&p.client.by_other_method()).await).await;
    p.code_still_works().await;
}

#[tokio::test]
async fn a_confidential_client_sending_no_secret_is_challenged_with_401() {
    let p = pending("client_secret_basic").await;
    let r = p.exchange(&p.client.without_secret()).await;
    assert_eq!(
        r.headers()["www-authenticate"].to_str().unwrap(),
        "Basic realm=\"mcp-oauth\""
    );
    unauthorized(r).await;
    p.code_still_works().await;
}

#[tokio::test]
async fn a_wrong_secret_is_invalid_client_and_does_not_consume_the_code() {
    // CFW conformance: "invalid confidential creds challenged without consuming code".
    let p = pending("client_secret_basic").await;
    unauthorized(p.exchange(&p.client.with_secret("wrong-secret")).await).await;
    p.code_still_works().await;
}

#[tokio::test]
async fn a_wrong_secret_sent_in_the_body_is_invalid_client_and_does_not_consume_the_code() {
    let p = pending("client_secret_post").await;
    unauthorized(p.exchange(&p.client.with_secret("wrong-secret")).await).await;
    p.code_still_works().await;
}

#[tokio::test]
async fn an_unknown_client_id_is_invalid_client() {
    // Claude registers again on 401 invalid_client.
    let p = pending("none").await;
    unauthorized(
        p.exchange(&ClientAuth::Public("no-such-client".into()))
            .await,
    )
    .await;
    let basic = ClientAuth::Basic {
        id: "no-such-client".into(),
        secret: "whatever".into(),
    };
    unauthorized(p.exchange(&basic).await).await;
    p.code_still_works().await;
}

#[tokio::test]
async fn basic_credentials_plus_a_client_secret_in_the_body_is_invalid_request() {
    // RFC 6749 §2.3: one authentication method per request.
    let p = pending("client_secret_basic").await;
    let ClientAuth::Basic { id, secret } = &p.client else {
        unreachable!()
    };
    let r = p
        .app
        .token_as(
            &p.client,
            &[
                ("grant_type", "authorization_code"),
                ("code", &p.code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", &p.pkce.verifier),
                ("client_id", id),
                ("client_secret", secret),
            ],
        )
        .await;
    assert_eq!(
        oauth_error(r).await,
        (StatusCode::BAD_REQUEST, "invalid_request".into())
    );
    p.code_still_works().await;
}

#[tokio::test]
async fn basic_credentials_for_one_client_with_another_client_id_in_the_body_is_invalid_request() {
    let p = pending("client_secret_basic").await;
    let r = p
        .app
        .token_as(
            &p.client,
            &[
                ("grant_type", "authorization_code"),
                ("code", &p.code),
                ("client_id", "someone-else"),
            ],
        )
        .await;
    assert_eq!(oauth_error(r).await.1, "invalid_request");
}

#[tokio::test]
async fn a_public_client_sending_a_secret_is_invalid_client() {
    let p = pending("none").await;
    unauthorized(p.exchange(&p.client.with_secret("made-up")).await).await;
    let basic = ClientAuth::Basic {
        id: p.client.id().to_owned(),
        secret: "made-up".into(),
    };
    unauthorized(p.exchange(&basic).await).await;
    p.code_still_works().await;
}

#[tokio::test]
async fn a_request_without_any_client_identification_is_invalid_client() {
    let p = pending("none").await;
    let r = p
        .app
        .http
        .post(format!("{}/token", p.app.url))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", p.code.as_str()),
            ("redirect_uri", REDIRECT),
            ("code_verifier", p.pkce.verifier.as_str()),
        ])
        .send()
        .await
        .unwrap();
    unauthorized(r).await;
    p.code_still_works().await;
}

#[tokio::test]
async fn a_repeated_grant_parameter_is_invalid_request() {
    // RFC 6749 §3.2: request parameters must not be included more than once.
    let p = pending("none").await;
    let r = p
        .app
        .token_as(
            &p.client,
            &[
                ("grant_type", "authorization_code"),
                ("code", &p.code),
                ("code", &p.code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", &p.pkce.verifier),
            ],
        )
        .await;
    assert_eq!(
        oauth_error(r).await,
        (StatusCode::BAD_REQUEST, "invalid_request".into())
    );
    p.code_still_works().await;
}

#[tokio::test]
async fn a_repeated_client_id_is_invalid_request() {
    let p = pending("none").await;
    let r = p
        .app
        .token_as(
            &p.client,
            &[
                ("grant_type", "authorization_code"),
                ("code", &p.code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", &p.pkce.verifier),
                ("client_id", p.client.id()),
            ],
        )
        .await;
    assert_eq!(
        oauth_error(r).await,
        (StatusCode::BAD_REQUEST, "invalid_request".into())
    );
    p.code_still_works().await;
}

#[tokio::test]
async fn an_unsupported_grant_type_is_unsupported_grant_type() {
    let app = spawn_app().await;
    let client = ClientAuth::Public(app.register_public_client(REDIRECT).await);
    for grant in [
        "password",
        "implicit",
        "urn:ietf:params:oauth:grant-type:device_code",
    ] {
        let r = app
            .token_as(&client, &[("grant_type", grant), ("username", "u")])
            .await;
        assert_eq!(
            oauth_error(r).await,
            (StatusCode::BAD_REQUEST, "unsupported_grant_type".into()),
            "{grant}"
        );
    }
}

#[tokio::test]
async fn a_missing_grant_type_is_invalid_request() {
    let app = spawn_app().await;
    let client = ClientAuth::Public(app.register_public_client(REDIRECT).await);
    let r = app.token_as(&client, &[("code", "abc")]).await;
    assert_eq!(
        oauth_error(r).await,
        (StatusCode::BAD_REQUEST, "invalid_request".into())
    );
}

#[tokio::test]
async fn a_json_body_is_an_oauth_invalid_request_not_a_framework_rejection() {
    let app = spawn_app().await;
    let client_id = app.register_public_client(REDIRECT).await;
    let r = app
        .http
        .post(format!("{}/token", app.url))
        .json(&serde_json::json!({"grant_type": "authorization_code", "client_id": client_id, "code": "x"}))
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"),
        "JSON, not axum's text/plain"
    );
    assert_eq!(
        oauth_error(r).await,
        (StatusCode::BAD_REQUEST, "invalid_request".into())
    );
}

#[tokio::test]
async fn a_body_without_a_content_type_is_invalid_request() {
    let app = spawn_app().await;
    let r = app
        .http
        .post(format!("{}/token", app.url))
        .body("grant_type=client_credentials")
        .send()
        .await
        .unwrap();
    assert_eq!(
        oauth_error(r).await,
        (StatusCode::BAD_REQUEST, "invalid_request".into())
    );
}

#[tokio::test]
async fn successful_token_responses_are_not_cached() {
    let p = pending("client_secret_post").await;
    let r = p.exchange(&p.client).await;
    assert_eq!(r.headers()["pragma"], "no-cache");
    let body: Value = ok_json(r).await;
    assert_eq!(body["token_type"], "Bearer");
}
