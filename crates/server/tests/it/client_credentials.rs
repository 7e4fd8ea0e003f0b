//! The client credentials grant (OAuth 2.1 §4.2): a confidential client acting for itself.
//! Only for clients the operator registers, and only at resources that accept tokens without
//! a user (`mcp.accept_client_credentials`; none by default).

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{
    ClientAuth, TestApp, initialize, jwt_claims, oauth_error, ok_json, spawn_app, spawn_app_with,
};

const GRANT: (&str, &str) = ("grant_type", "client_credentials");

/// A server whose MCP endpoints accept client-credentials tokens.
async fn spawn_accepting_app() -> TestApp {
    spawn_app_with(|s| s.mcp.accept_client_credentials = true).await
}

#[tokio::test]
async fn dynamic_registration_never_yields_a_client_credentials_client() {
    let app = spawn_accepting_app().await;
    for grants in [
        json!(["client_credentials"]),
        json!(["authorization_code", "client_credentials"]),
    ] {
        let r = app
            .register(json!({
                "client_name": "Anonymous service",
                "redirect_uris": ["https://app.example/cb"],
                "token_endpoint_auth_method": "client_secret_basic",
                "grant_types": grants,
            }))
            .await;
        assert_eq!(
            oauth_error(r).await,
            (StatusCode::BAD_REQUEST, "invalid_client_metadata".into()),
            "{grants}"
        );
    }
}

#[tokio::test]
async fn a_dynamically_registered_client_holding_the_grant_from_before_cannot_use_it() {
    // A registration stored before dynamic registration stopped granting client_credentials.
    let app = spawn_accepting_app().await;
    let secret = mcp_oauth::random::secret();
    let id = mcp_oauth::random::id();
    app.state
        .db
        .insert_client(&mcp_oauth_store::ClientRow {
            id: id.clone(),
            kind: "dynamic".into(),
            metadata: json!({
                "redirect_uris": [], "grant_types": ["client_credentials"],
                "response_types": ["code"], "token_endpoint_auth_method": "client_secret_basic",
            })
            .to_string(),
            secret_hash: Some(secret.hash().as_str().to_owned()),
            metadata_hash: None,
            created_at: app.clock.now(),
            last_used_at: None,
            refresh_after: None,
        })
        .await
        .unwrap();
    let client = ClientAuth::Basic {
        id,
        secret: secret.expose().to_owned(),
    };
    assert_eq!(
        oauth_error(app.token_as(&client, &[GRANT]).await).await,
        (StatusCode::BAD_REQUEST, "unauthorized_client".into())
    );
}

#[tokio::test]
async fn by_default_no_resource_accepts_client_credentials_so_none_are_issued_or_advertised() {
    let app = spawn_app().await;
    let client = app.register_service_client(None).await;
    assert_eq!(
        oauth_error(app.token_as(&client, &[GRANT]).await).await,
        (StatusCode::BAD_REQUEST, "invalid_target".into())
    );
    let metadata = app.as_metadata().await;
    assert!(
        !metadata["grant_types_supported"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g == "client_credentials"),
        "{metadata}"
    );
}

#[tokio::test]
async fn the_mcp_endpoints_refuse_a_token_without_a_user_unless_configured_to_accept_one() {
    let refusing = spawn_app().await;
    // What a client credentials token looks like: its subject is the client (RFC 9068 §2.2).
    let client_only = refusing.mint_access_token(|c| c.sub = c.client_id.clone());
    for path in ["/mcp", "/sse"] {
        let req = match path {
            "/mcp" => refusing
                .mcp_request(reqwest::Method::POST, path, Some(&client_only))
                .body(initialize(1).to_string()),
            _ => refusing.mcp_request(reqwest::Method::GET, path, Some(&client_only)),
        };
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
        let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
        assert!(
            challenge.contains("error=\"invalid_token\""),
            "{path}: {challenge}"
        );
    }
    let user_token = refusing.mint_access_token(|_| {});
    let r = refusing
        .mcp_send(Some(&user_token), None, &initialize(1))
        .await;
    assert_eq!(r.status, StatusCode::OK, "a user's token still works");

    let accepting = spawn_accepting_app().await;
    let client = accepting.register_service_client(None).await;
    let body = ok_json(accepting.token_as(&client, &[GRANT]).await).await;
    let r = accepting
        .mcp_send(body["access_token"].as_str(), None, &initialize(1))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

#[tokio::test]
async fn a_client_registered_for_client_credentials_gets_an_access_token_for_itself() {
    let app = spawn_accepting_app().await;
    let client = app.register_service_client(None).await;
    let body = ok_json(app.token_as(&client, &[GRANT]).await).await;
    assert!(
        body.get("refresh_token").is_none(),
        "OAuth 2.1 §4.2.3: no refresh token"
    );
    assert_eq!(body["token_type"], "Bearer");
    let claims = jwt_claims(body["access_token"].as_str().unwrap());
    assert_eq!(
        claims["sub"],
        client.id(),
        "RFC 9068 §2.2: sub is the client"
    );
    assert_eq!(claims["client_id"], client.id());
    assert_eq!(claims["aud"], app.mcp_resource());
    let introspection = app.introspect(body["access_token"].as_str().unwrap()).await;
    assert_eq!(introspection["active"], true);
}

#[tokio::test]
async fn client_credentials_drops_offline_access_from_the_requested_scope() {
    let app = spawn_accepting_app().await;
    let client = app.register_service_client(None).await;
    let body = ok_json(
        app.token_as(&client, &[GRANT, ("scope", "mcp offline_access")])
            .await,
    )
    .await;
    assert_eq!(body["scope"], "mcp");
    assert_eq!(
        jwt_claims(body["access_token"].as_str().unwrap())["scope"],
        "mcp"
    );
}

#[tokio::test]
async fn client_credentials_accepts_the_mcp_resource_and_refuses_another() {
    let app = spawn_accepting_app().await;
    let client = app.register_service_client(None).await;
    ok_json(
        app.token_as(&client, &[GRANT, ("resource", &app.mcp_resource())])
            .await,
    )
    .await;
    let elsewhere = format!("{}/elsewhere", app.url);
    let r = app
        .token_as(&client, &[GRANT, ("resource", &elsewhere)])
        .await;
    assert_eq!(
        oauth_error(r).await,
        (StatusCode::BAD_REQUEST, "invalid_target".into())
    );
}

#[tokio::test]
async fn a_confidential_client_without_the_client_credentials_grant_is_unauthorized_client() {
    let app = spawn_app().await;
    let client = app
        .register_confidential("http://127.0.0.1:7777/callback", "client_secret_basic")
        .await;
    let r = app.token_as(&client, &[GRANT]).await;
    assert_eq!(
        oauth_error(r).await,
        (StatusCode::BAD_REQUEST, "unauthorized_client".into())
    );
}

#[tokio::test]
async fn a_public_client_is_unauthorized_client_for_client_credentials() {
    let app = spawn_app().await;
    let client = ClientAuth::Public(
        app.register_public_client("http://127.0.0.1:7777/callback")
            .await,
    );
    let r = app.token_as(&client, &[GRANT]).await;
    assert_eq!(
        oauth_error(r).await,
        (StatusCode::BAD_REQUEST, "unauthorized_client".into())
    );
}

#[tokio::test]
async fn a_scope_outside_the_clients_registered_scope_is_invalid_scope() {
    let app = spawn_app_with(|s| {
        s.scopes.supported = vec!["mcp".into(), "admin".into(), "offline_access".into()];
        s.mcp.accept_client_credentials = true;
    })
    .await;
    let client = app.register_service_client(Some("mcp")).await;
    let r = app.token_as(&client, &[GRANT, ("scope", "admin")]).await;
    assert_eq!(
        oauth_error(r).await,
        (StatusCode::BAD_REQUEST, "invalid_scope".into())
    );
    let body = ok_json(app.token_as(&client, &[GRANT, ("scope", "mcp")]).await).await;
    assert_eq!(body["scope"], "mcp");
}

#[tokio::test]
async fn an_unknown_scope_is_invalid_scope() {
    let app = spawn_accepting_app().await;
    let client = app.register_service_client(None).await;
    let r = app.token_as(&client, &[GRANT, ("scope", "mcp root")]).await;
    assert_eq!(oauth_error(r).await.1, "invalid_scope");
}

#[tokio::test]
async fn client_credentials_with_a_wrong_secret_is_invalid_client() {
    let app = spawn_accepting_app().await;
    let client = app.register_service_client(None).await;
    let r = app.token_as(&client.with_secret("nope"), &[GRANT]).await;
    assert_eq!(
        oauth_error(r).await,
        (StatusCode::UNAUTHORIZED, "invalid_client".into())
    );
}
