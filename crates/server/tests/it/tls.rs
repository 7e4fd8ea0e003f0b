//! The server terminating TLS itself, from PEM files named in the configuration.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tokio::net::TcpStream;

use crate::connections::{accepted_sockets_nodelay, addr, closed_within};
use crate::helpers::{TestApp, spawn_app_with};

/// A self-signed certificate for 127.0.0.1 in a temporary directory, removed on drop.
struct Certificate {
    dir: PathBuf,
    pem: String,
    der: Vec<u8>,
}

impl Certificate {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("mcp-oauth-tls-{}", mcp_oauth::random::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
            .unwrap();
        std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), cert.key_pair.serialize_pem()).unwrap();
        Self {
            dir,
            pem: cert.cert.pem(),
            der: cert.cert.der().to_vec(),
        }
    }

    fn settings(&self) -> mcp_oauth::config::TlsSettings {
        mcp_oauth::config::TlsSettings {
            cert_file: self.dir.join("cert.pem"),
            key_file: self.dir.join("key.pem"),
        }
    }

    fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(self.pem.as_bytes()).unwrap())
            .build()
            .unwrap()
    }
}

impl Drop for Certificate {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn spawn_tls_app(cert: &Certificate, header_read_timeout_seconds: u64) -> TestApp {
    spawn_app_with(|raw| {
        raw.public_url = raw.public_url.replace("http://", "https://");
        raw.tls = Some(cert.settings());
        raw.http.header_read_timeout_seconds = header_read_timeout_seconds;
    })
    .await
}

#[tokio::test]
async fn tls_connections_have_tcp_nodelay_and_offer_http2() {
    let cert = Certificate::new();
    let app = spawn_tls_app(&cert, 10).await;
    let https = app.url.replace("http://", "https://");
    let r = cert
        .client()
        .get(format!("{https}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let sockets = accepted_sockets_nodelay(addr(&app));
    assert!(!sockets.is_empty(), "found the accepted socket");
    assert!(
        sockets.iter().all(|&nodelay| nodelay),
        "TCP_NODELAY on TLS connections too: {sockets:?}"
    );

    // ALPN: a client offering HTTP/2 gets it.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der.clone().into()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(addr(&app)).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("127.0.0.1".try_into().unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
}

#[tokio::test]
async fn a_client_that_stalls_in_the_tls_handshake_is_disconnected() {
    let cert = Certificate::new();
    let app = spawn_tls_app(&cert, 1).await;
    let mut silent = TcpStream::connect(addr(&app)).await.unwrap();
    let closed = closed_within(&mut silent, Duration::from_secs(5))
        .await
        .expect("the connection is closed");
    assert!(
        closed >= Duration::from_millis(800) && closed < Duration::from_millis(2_500),
        "closed at the 1 s header (and handshake) timeout, not {closed:?}"
    );
}

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
