//! The client credentials grant (OAuth 2.1 §4.2): a confidential client acting for itself.

use reqwest::StatusCode;

use crate::helpers::{ClientAuth, jwt_claims, oauth_error, ok_json, spawn_app, spawn_app_with};

const GRANT: (&str, &str) = ("grant_type", "client_credentials");

#[tokio::test]
async fn a_client_registered_for_client_credentials_gets_an_access_token_for_itself() {
    let app = spawn_app().await;
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
    let app = spawn_app().await;
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
    let app = spawn_app().await;
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
    let app = spawn_app().await;
    let client = app.register_service_client(None).await;
    let r = app.token_as(&client, &[GRANT, ("scope", "mcp root")]).await;
    assert_eq!(oauth_error(r).await.1, "invalid_scope");
}

#[tokio::test]
async fn client_credentials_with_a_wrong_secret_is_invalid_client() {
    let app = spawn_app().await;
    let client = app.register_service_client(None).await;
    let r = app.token_as(&client.with_secret("nope"), &[GRANT]).await;
    assert_eq!(
        oauth_error(r).await,
        (StatusCode::UNAUTHORIZED, "invalid_client".into())
    );
}
