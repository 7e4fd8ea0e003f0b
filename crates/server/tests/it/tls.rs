//! The server terminating TLS itself, from PEM files named in the configuration.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::spawn_app_with;

#[tokio::test]
async fn serves_https_with_the_configured_certificate() {
    let dir = std::env::temp_dir().join(format!("mcp-oauth-tls-{}", mcp_oauth::random::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_file, cert.cert.pem()).unwrap();
    std::fs::write(&key_file, cert.key_pair.serialize_pem()).unwrap();

    let app = spawn_app_with(|raw| {
        raw.public_url = raw.public_url.replace("http://", "https://");
        raw.tls = Some(mcp_oauth::config::TlsSettings {
            cert_file: cert_file.clone(),
            key_file: key_file.clone(),
        });
    })
    .await;
    let https = app.url.replace("http://", "https://");
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let r = client
        .get(format!("{https}/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers().get("strict-transport-security").is_some(),
        "HSTS on https"
    );
    let m: Value = r.json().await.unwrap();
    assert_eq!(m["issuer"], https);

    let plain = app.http.get(format!("{}/healthz", app.url)).send().await;
    assert!(
        plain.is_err() || !plain.unwrap().status().is_success(),
        "plain http is not served on the TLS port"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_missing_certificate_is_reported_with_its_key() {
    let raw = mcp_oauth::config::RawSettings {
        tls: Some(mcp_oauth::config::TlsSettings {
            cert_file: "/nonexistent/cert.pem".into(),
            key_file: "/nonexistent/key.pem".into(),
        }),
        ..Default::default()
    };
    let e = raw.validate().unwrap_err();
    assert_eq!(e.key, "tls.cert_file");
}
