//! Discovery: RFC 8414 metadata, OpenID Connect discovery, JWKS, health, 404s, CORS.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::spawn_app;

#[tokio::test]
async fn authorization_server_metadata_advertises_what_mcp_clients_need() {
    let app = spawn_app().await;
    let r = app
        .http
        .get(format!(
            "{}/.well-known/oauth-authorization-server",
            app.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let m: Value = r.json().await.unwrap();
    assert_eq!(
        m["issuer"], app.url,
        "issuer identical to the URL the document was built from"
    );
    assert_eq!(
        m["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(m["response_types_supported"], serde_json::json!(["code"]));
    assert_eq!(m["client_id_metadata_document_supported"], true);
    assert_eq!(m["authorization_response_iss_parameter_supported"], true);
    for grant in ["authorization_code", "refresh_token"] {
        assert!(
            m["grant_types_supported"]
                .as_array()
                .unwrap()
                .iter()
                .any(|g| g == grant),
            "{grant}"
        );
    }
    for method in ["none", "client_secret_basic", "client_secret_post"] {
        assert!(
            m["token_endpoint_auth_methods_supported"]
                .as_array()
                .unwrap()
                .iter()
                .any(|g| g == method),
            "{method}"
        );
    }
    assert!(
        m["scopes_supported"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "offline_access")
    );
    for (key, path) in [
        ("authorization_endpoint", "/authorize"),
        ("token_endpoint", "/token"),
        ("registration_endpoint", "/register"),
        ("revocation_endpoint", "/revoke"),
        ("introspection_endpoint", "/introspect"),
        ("jwks_uri", "/jwks.json"),
    ] {
        assert_eq!(m[key], format!("{}{path}", app.url), "{key}");
    }
}

#[tokio::test]
async fn openid_configuration_serves_the_same_document() {
    let app = spawn_app().await;
    let a = app.as_metadata().await;
    let b: Value = app
        .http
        .get(format!("{}/.well-known/openid-configuration", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(a, b);
    assert!(
        b["subject_types_supported"].is_array()
            && b["id_token_signing_alg_values_supported"].is_array()
    );
}

#[tokio::test]
async fn issuer_with_a_path_is_served_at_every_probed_location() {
    let app =
        crate::helpers::spawn_app_with(|s| s.public_url = format!("{}/tenant1", s.public_url))
            .await;
    let issuer = format!("{}/tenant1", app.url);
    for path in [
        "/.well-known/oauth-authorization-server/tenant1",
        "/.well-known/openid-configuration/tenant1",
        "/tenant1/.well-known/openid-configuration",
    ] {
        let r = app
            .http
            .get(format!("{}{path}", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let m: Value = r.json().await.unwrap();
        assert_eq!(m["issuer"], issuer, "{path}");
        assert_eq!(m["token_endpoint"], format!("{issuer}/token"));
    }
    let root = app
        .http
        .get(format!(
            "{}/.well-known/oauth-authorization-server",
            app.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        root.status(),
        StatusCode::NOT_FOUND,
        "the root document belongs to an issuer without a path"
    );
    let token = app
        .http
        .post(format!("{issuer}/token"))
        .form(&[("grant_type", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        token.status(),
        StatusCode::BAD_REQUEST,
        "endpoints live under the issuer's path"
    );
}

#[tokio::test]
async fn unknown_well_known_paths_are_plain_404s() {
    let app = spawn_app().await;
    for path in [
        "/.well-known/nothing",
        "/.well-known/oauth-authorization-server/other",
        "/nope",
    ] {
        let r = app
            .http
            .get(format!("{}{path}", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
    }
}

#[tokio::test]
async fn jwks_publishes_the_signing_key() {
    let app = spawn_app().await;
    let r = app
        .http
        .get(format!("{}/jwks.json", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let jwks: Value = r.json().await.unwrap();
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    assert_eq!(key["alg"], "EdDSA");
    assert!(key["kid"].is_string() && key["x"].is_string());
    assert!(key.get("d").is_none(), "no private key material");
}

#[tokio::test]
async fn health_and_readiness() {
    let app = spawn_app().await;
    assert_eq!(
        app.http
            .get(format!("{}/healthz", app.url))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        app.http
            .get(format!("{}/readyz", app.url))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn browser_clients_get_cors_on_metadata_token_registration_revocation_and_jwks() {
    let app = spawn_app().await;
    for (method, path) in [
        ("GET", "/.well-known/oauth-authorization-server"),
        ("GET", "/.well-known/openid-configuration"),
        ("GET", "/jwks.json"),
        ("POST", "/token"),
        ("POST", "/register"),
        ("POST", "/revoke"),
    ] {
        let preflight = app
            .http
            .request(reqwest::Method::OPTIONS, format!("{}{path}", app.url))
            .header("Origin", "http://localhost:6274")
            .header("Access-Control-Request-Method", method)
            .header(
                "Access-Control-Request-Headers",
                "content-type, mcp-protocol-version",
            )
            .send()
            .await
            .unwrap();
        assert!(
            preflight.status().is_success(),
            "{path}: preflight {}",
            preflight.status()
        );
        assert_eq!(
            preflight.headers()["access-control-allow-origin"],
            "*",
            "{path}"
        );
        assert!(
            preflight
                .headers()
                .get("access-control-allow-credentials")
                .is_none(),
            "{path}: no credentials"
        );
    }
    let r = app
        .http
        .get(format!(
            "{}/.well-known/oauth-authorization-server",
            app.url
        ))
        .header("Origin", "http://localhost:6274")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn every_response_forbids_framing() {
    let app = spawn_app().await;
    let r = app
        .http
        .get(format!("{}/login", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    assert!(
        r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
}

#[tokio::test]
async fn es256_keys_sign_tokens_when_configured() {
    let app = crate::helpers::spawn_app_with(|raw| {
        raw.tokens.signing_alg = mcp_oauth::config::SigningAlg::ES256
    })
    .await;
    let jwks: Value = app
        .http
        .get(format!("{}/jwks.json", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = &jwks["keys"][0];
    assert_eq!(
        (
            key["kty"].as_str(),
            key["crv"].as_str(),
            key["alg"].as_str()
        ),
        (Some("EC"), Some("P-256"), Some("ES256"))
    );
    assert!(key["x"].is_string() && key["y"].is_string() && key.get("d").is_none());
    let tokens = app.tokens_for_new_client("es@example.com").await;
    assert_eq!(
        crate::helpers::jwt_header(&tokens.access_token)["alg"],
        "ES256"
    );
    assert_eq!(
        app.introspect(&tokens.access_token).await["active"],
        true,
        "the ES256 signature verifies"
    );
}
