//! Dynamic Client Registration (RFC 7591): what is accepted, what is refused and how, and the
//! shapes real MCP clients send.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Pkce, TestApp, oauth_error, spawn_app, spawn_app_with};

/// Register `metadata` and assert it is refused with `code` (RFC 7591 §3.2.2: 400 JSON).
async fn assert_refused(app: &TestApp, metadata: Value, code: &str) {
    let r = app.register(metadata.clone()).await;
    assert_eq!(
        oauth_error(r).await,
        (StatusCode::BAD_REQUEST, code.to_owned()),
        "{metadata}"
    );
}

fn public(redirect_uris: Value) -> Value {
    json!({
        "client_name": "Some Client",
        "redirect_uris": redirect_uris,
        "token_endpoint_auth_method": "none",
    })
}

#[tokio::test]
async fn a_public_client_gets_201_with_its_id_and_metadata_and_no_secret() {
    let app = spawn_app().await;
    let r = app
        .register(json!({
            "client_name": "Test Client",
            "redirect_uris": ["http://127.0.0.1:7777/callback"],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "scope": "mcp",
        }))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let body: Value = r.json().await.unwrap();
    assert!(!body["client_id"].as_str().unwrap().is_empty());
    let issued_at = body["client_id_issued_at"].as_i64().expect("issued_at");
    assert!((issued_at - app.clock.now()).abs() <= 1, "issued now");
    assert_eq!(body["client_name"], "Test Client");
    assert_eq!(
        body["redirect_uris"],
        json!(["http://127.0.0.1:7777/callback"])
    );
    assert_eq!(body["token_endpoint_auth_method"], "none");
    assert_eq!(
        body["grant_types"],
        json!(["authorization_code", "refresh_token"])
    );
    assert_eq!(body["response_types"], json!(["code"]));
    assert_eq!(body["scope"], "mcp");
    assert!(body.get("client_secret").is_none(), "no secret: {body}");
    assert!(body.get("client_secret_expires_at").is_none());
}

#[tokio::test]
async fn a_confidential_client_gets_a_secret_that_does_not_expire() {
    let app = spawn_app().await;
    let r = app
        .register(json!({
            "client_name": "Server App",
            "redirect_uris": ["https://app.example/callback"],
            "token_endpoint_auth_method": "client_secret_basic",
        }))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body: Value = r.json().await.unwrap();
    assert!(body["client_secret"].as_str().unwrap().len() >= 32);
    assert_eq!(body["client_secret_expires_at"], 0);
    assert_eq!(body["token_endpoint_auth_method"], "client_secret_basic");
}

#[tokio::test]
async fn the_issued_secret_authenticates_the_client_at_the_token_endpoint() {
    let app = spawn_app().await;
    let redirect = "https://app.example/callback";
    let (client_id, secret) = app
        .register_confidential_client(redirect, "client_secret_basic", &["authorization_code"])
        .await;
    let browser = app.signed_in_browser("alice@example.com").await;
    let pkce = Pkce::new();
    let code = app
        .get_code(&browser, &client_id, redirect, &pkce, &[])
        .await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", redirect),
        ("code_verifier", pkce.verifier.as_str()),
    ];
    let wrong = app.token_basic(&client_id, "not-the-secret", &form).await;
    assert_eq!(oauth_error(wrong).await.1, "invalid_client");
    let r = app.token_basic(&client_id, &secret, &form).await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_default_auth_method_is_client_secret_basic() {
    let app = spawn_app().await;
    let r = app
        .register(json!({"redirect_uris": ["https://app.example/callback"]}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["token_endpoint_auth_method"], "client_secret_basic");
    assert!(body["client_secret"].is_string(), "RFC 7591 §2 default");
}

#[tokio::test]
async fn registering_the_same_public_client_twice_returns_the_same_client_id() {
    let app = spawn_app().await;
    let metadata = public(json!(["http://127.0.0.1/callback"]));
    let first = app.register_client(metadata.clone()).await;
    let second = app.register_client(metadata).await;
    assert_eq!(first, second, "idempotent for identical public metadata");
}

#[tokio::test]
async fn a_public_client_with_different_metadata_gets_a_different_client_id() {
    let app = spawn_app().await;
    let first = app
        .register_client(public(json!(["http://127.0.0.1/callback"])))
        .await;
    let other = app
        .register_client(public(json!(["http://127.0.0.1/other"])))
        .await;
    assert_ne!(first, other);
}

#[tokio::test]
async fn confidential_clients_are_never_deduplicated() {
    let app = spawn_app().await;
    let metadata = json!({
        "client_name": "Server App",
        "redirect_uris": ["https://app.example/callback"],
        "token_endpoint_auth_method": "client_secret_post",
    });
    let first = app.register_client(metadata.clone()).await;
    let second = app.register_client(metadata).await;
    assert_ne!(first, second, "each registration has its own secret");
}

#[tokio::test]
async fn real_mcp_client_registrations_are_accepted() {
    let app = spawn_app().await;
    let shapes = [
        (
            "Cursor",
            json!({
                "client_name": "Cursor", "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
                "redirect_uris": ["cursor://anysphere.cursor-mcp/oauth/callback"],
            }),
        ),
        (
            "VS Code",
            json!({
                "client_name": "Visual Studio Code", "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code", "refresh_token"],
                "redirect_uris": [
                    "https://insiders.vscode.dev/redirect", "https://vscode.dev/redirect",
                    "http://127.0.0.1/", "http://127.0.0.1:33418/",
                ],
            }),
        ),
        (
            "Claude Code",
            json!({
                "client_name": "Claude Code", "token_endpoint_auth_method": "none",
                "application_type": "native",
                "grant_types": ["authorization_code", "refresh_token"],
                "redirect_uris": ["http://localhost:54545/callback"],
            }),
        ),
        (
            "ChatGPT",
            json!({
                "client_name": "ChatGPT", "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code", "refresh_token"],
                "redirect_uris": ["https://chatgpt.com/connector/oauth/abc"],
            }),
        ),
    ];
    for (who, metadata) in shapes {
        let r = app.register(metadata.clone()).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{who}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(
            body["redirect_uris"], metadata["redirect_uris"],
            "{who}: redirect URIs kept exactly as sent"
        );
    }
}

#[tokio::test]
async fn a_javascript_redirect_uri_is_refused() {
    let app = spawn_app().await;
    assert_refused(
        &app,
        public(json!(["javascript:alert(1)"])),
        "invalid_redirect_uri",
    )
    .await;
}

#[tokio::test]
async fn a_data_redirect_uri_is_refused() {
    let app = spawn_app().await;
    assert_refused(
        &app,
        public(json!(["data:text/html,<script>alert(1)</script>"])),
        "invalid_redirect_uri",
    )
    .await;
}

#[tokio::test]
async fn a_file_redirect_uri_is_refused() {
    let app = spawn_app().await;
    assert_refused(
        &app,
        public(json!(["file:///etc/passwd"])),
        "invalid_redirect_uri",
    )
    .await;
}

#[tokio::test]
async fn a_redirect_uri_with_a_fragment_is_refused() {
    let app = spawn_app().await;
    assert_refused(
        &app,
        public(json!(["https://app.example/callback#frag"])),
        "invalid_redirect_uri",
    )
    .await;
}

#[tokio::test]
async fn a_plain_http_redirect_uri_off_loopback_is_refused() {
    let app = spawn_app().await;
    assert_refused(
        &app,
        public(json!(["http://app.example/callback"])),
        "invalid_redirect_uri",
    )
    .await;
}

#[tokio::test]
async fn missing_redirect_uris_are_refused() {
    let app = spawn_app().await;
    assert_refused(
        &app,
        json!({"client_name": "No Redirects", "token_endpoint_auth_method": "none"}),
        "invalid_redirect_uri",
    )
    .await;
}

#[tokio::test]
async fn a_private_use_scheme_for_a_confidential_client_is_refused() {
    let app = spawn_app().await;
    assert_refused(
        &app,
        json!({
            "redirect_uris": ["cursor://anysphere.cursor-mcp/oauth/callback"],
            "token_endpoint_auth_method": "client_secret_basic",
        }),
        "invalid_redirect_uri",
    )
    .await;
}

#[tokio::test]
async fn a_private_use_scheme_for_a_web_application_is_refused() {
    let app = spawn_app().await;
    assert_refused(
        &app,
        json!({
            "redirect_uris": ["cursor://anysphere.cursor-mcp/oauth/callback"],
            "token_endpoint_auth_method": "none",
            "application_type": "web",
        }),
        "invalid_redirect_uri",
    )
    .await;
}

#[tokio::test]
async fn an_unsupported_auth_method_is_refused() {
    let app = spawn_app().await;
    assert_refused(
        &app,
        json!({
            "redirect_uris": ["https://app.example/callback"],
            "token_endpoint_auth_method": "private_key_jwt",
        }),
        "invalid_client_metadata",
    )
    .await;
}

#[tokio::test]
async fn the_implicit_grant_is_refused() {
    let app = spawn_app().await;
    assert_refused(
        &app,
        json!({
            "redirect_uris": ["https://app.example/callback"],
            "token_endpoint_auth_method": "none",
            "grant_types": ["implicit"],
        }),
        "invalid_client_metadata",
    )
    .await;
}

#[tokio::test]
async fn a_body_that_is_not_declared_json_is_refused() {
    let app = spawn_app().await;
    let body = public(json!(["https://app.example/callback"])).to_string();
    let r = app
        .register_raw("application/x-www-form-urlencoded", body)
        .await;
    assert_eq!(
        oauth_error(r).await,
        (StatusCode::BAD_REQUEST, "invalid_client_metadata".into())
    );
}

#[tokio::test]
async fn a_body_that_is_not_valid_json_is_refused() {
    let app = spawn_app().await;
    let r = app
        .register_raw("application/json", r#"{"redirect_uris": ["#)
        .await;
    assert_eq!(
        oauth_error(r).await,
        (StatusCode::BAD_REQUEST, "invalid_client_metadata".into())
    );
}

#[tokio::test]
async fn a_json_body_that_is_not_an_object_is_refused() {
    let app = spawn_app().await;
    let r = app
        .register_raw("application/json", r#"["https://app.example/callback"]"#)
        .await;
    assert_eq!(
        oauth_error(r).await,
        (StatusCode::BAD_REQUEST, "invalid_client_metadata".into())
    );
}

#[tokio::test]
async fn a_body_over_16_kib_is_refused_with_an_oauth_error() {
    let app = spawn_app().await;
    let mut metadata = public(json!(["https://app.example/callback"]));
    metadata["software_statement"] = json!("x".repeat(17 * 1024));
    let r = app
        .register_raw("application/json", metadata.to_string())
        .await;
    assert_eq!(
        oauth_error(r).await,
        (StatusCode::BAD_REQUEST, "invalid_client_metadata".into()),
        "a JSON OAuth error, not a plain-text rejection"
    );
}

#[tokio::test]
async fn registrations_beyond_the_per_ip_burst_get_429_slow_down() {
    let app = spawn_app_with(|raw| {
        raw.registration.per_ip_burst = 2;
        raw.registration.per_ip_per_minute = 1;
    })
    .await;
    for i in 0..2 {
        let r = app
            .register(public(json!([format!("http://127.0.0.1/cb{i}")])))
            .await;
        assert_eq!(r.status(), StatusCode::CREATED, "within the burst: {i}");
    }
    let r = app.register(public(json!(["http://127.0.0.1/cb2"]))).await;
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "one a minute: {retry}");
    assert_eq!(
        r.headers()["ratelimit-policy"],
        "\"registration\";q=1;w=60;pk=\"ip\""
    );
    assert_eq!(
        oauth_error(r).await,
        (StatusCode::TOO_MANY_REQUESTS, "slow_down".into())
    );
}

#[tokio::test]
async fn registration_disabled_by_configuration_is_refused() {
    let app = spawn_app_with(|raw| raw.registration.enabled = false).await;
    let r = app
        .register(public(json!(["https://app.example/callback"])))
        .await;
    let (status, code) = oauth_error(r).await;
    assert!(status.is_client_error(), "{status}");
    assert_eq!(code, "access_denied");
}

#[tokio::test]
async fn registration_disabled_by_configuration_is_not_advertised() {
    // MCP clients register dynamically whenever the metadata names a registration endpoint
    // (MCP 2025-11-25 "Client Registration Approaches"); advertising one that refuses every
    // request stops them from falling back to a pre-registered client id.
    let app = spawn_app_with(|raw| raw.registration.enabled = false).await;
    let m = app.as_metadata().await;
    assert!(m.get("registration_endpoint").is_none(), "{m}");
}

#[tokio::test]
async fn a_client_name_with_bidirectional_overrides_or_zero_width_characters_is_refused() {
    let app = spawn_app().await;
    for name in [
        "Claude\u{202E}edoC",
        "Cla\u{200B}ude",
        "\u{2067}Cursor\u{2069}",
    ] {
        let r = app
            .register(json!({
                "client_name": name, "token_endpoint_auth_method": "none",
                "redirect_uris": ["http://127.0.0.1:7777/callback"],
            }))
            .await;
        assert_eq!(
            oauth_error(r).await,
            (StatusCode::BAD_REQUEST, "invalid_client_metadata".into()),
            "{name:?}"
        );
    }
}
