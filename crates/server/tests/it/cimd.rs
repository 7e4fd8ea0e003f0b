//! Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document; MCP AS-8,
//! AS-9): a client whose id is the URL of its metadata, fetched by the server, validated,
//! cached per `Cache-Control`, and fetched only from hosts the SSRF guard and the allow list
//! permit. The documents are served by a small server on loopback, which
//! `cimd.allow_loopback` permits in development.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    ConsentForm, DocResponse, DocServer, Pkce, TestApp, element_text, error_page, redirect_params,
    spawn_app_with,
};

const REDIRECT: &str = "http://127.0.0.1:7777/callback";

/// A valid document for `client_id`.
fn document(client_id: &str) -> Value {
    json!({
        "client_id": client_id,
        "client_name": "Doc Client",
        "redirect_uris": [REDIRECT],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    })
}

fn serve(doc: Value) -> DocResponse {
    DocResponse {
        body: doc.to_string(),
        ..DocResponse::default()
    }
}

async fn app_allowing_loopback() -> TestApp {
    spawn_app_with(|raw| raw.cimd.allow_loopback = true).await
}

/// Authorize as a signed-in user with the document at `client_id`; returns the response.
async fn authorize(app: &TestApp, client_id: &str, redirect_uri: &str) -> reqwest::Response {
    let browser = app.signed_in_browser("alice@example.com").await;
    let url = app.authorize_url(client_id, redirect_uri, &Pkce::new(), &[]);
    browser.get(&url).await
}

#[tokio::test]
async fn a_metadata_document_client_completes_the_code_flow_as_a_public_client() {
    let docs = DocServer::start(|url| serve(document(url))).await;
    let app = app_allowing_loopback().await;
    let browser = app.signed_in_browser("alice@example.com").await;
    let pkce = Pkce::new();
    let url = app.authorize_url(&docs.url, REDIRECT, &pkce, &[]);

    let page = browser.consent_page(&url).await;
    assert_eq!(element_text(&page, "client-name").unwrap(), "Doc Client");
    assert!(
        element_text(&page, "document-host")
            .unwrap()
            .contains("127.0.0.1"),
        "the document host is shown"
    );
    assert!(
        !page.contains("id=\"warning-unverified\""),
        "the document's host vouches for it, unlike a self-registration"
    );
    let r = browser
        .decide(&ConsentForm::from_page(&page), "allow")
        .await;
    let params = redirect_params(&r);
    assert_eq!(params["iss"], app.url);

    // Token endpoint auth method `none`: the client id and the PKCE verifier, no secret.
    let t = app
        .exchange(&docs.url, &params["code"], REDIRECT, &pkce)
        .await;
    assert_eq!(t.status(), StatusCode::OK);
    let body: Value = t.json().await.unwrap();
    let introspection = app.introspect(body["access_token"].as_str().unwrap()).await;
    assert_eq!(introspection["active"], true);
    assert_eq!(introspection["client_id"], docs.url);
}

#[tokio::test]
async fn a_document_whose_client_id_differs_from_its_url_gets_an_error_page() {
    let docs = DocServer::start(|url| {
        serve(document(&format!("{url}?other"))) // not byte-for-byte the URL
    })
    .await;
    let app = app_allowing_loopback().await;
    let detail = error_page(
        authorize(&app, &docs.url, REDIRECT).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(detail.contains("client_id"), "{detail}");
}

#[tokio::test]
async fn a_document_without_redirect_uris_gets_an_error_page() {
    let docs = DocServer::start(|url| {
        let mut doc = document(url);
        doc.as_object_mut().unwrap().remove("redirect_uris");
        serve(doc)
    })
    .await;
    let app = app_allowing_loopback().await;
    error_page(
        authorize(&app, &docs.url, REDIRECT).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
}

#[tokio::test]
async fn a_document_without_client_name_gets_an_error_page() {
    let docs = DocServer::start(|url| {
        let mut doc = document(url);
        doc.as_object_mut().unwrap().remove("client_name");
        serve(doc)
    })
    .await;
    let app = app_allowing_loopback().await;
    let detail = error_page(
        authorize(&app, &docs.url, REDIRECT).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(detail.contains("client_name"), "{detail}");
}

#[tokio::test]
async fn a_redirect_uri_not_in_the_document_gets_an_error_page() {
    let docs = DocServer::start(|url| serve(document(url))).await;
    let app = app_allowing_loopback().await;
    error_page(
        authorize(&app, &docs.url, "https://evil.example/callback").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
}

#[tokio::test]
async fn a_document_served_through_a_redirect_is_refused() {
    let target = DocServer::start(|url| serve(document(url))).await;
    let docs = DocServer::start(|_| DocResponse {
        redirect_to: Some(target.url.clone()),
        ..DocResponse::default()
    })
    .await;
    let app = app_allowing_loopback().await;
    error_page(
        authorize(&app, &docs.url, REDIRECT).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(docs.fetches(), 1);
    assert_eq!(target.fetches(), 0, "the redirect is not followed");
}

#[tokio::test]
async fn a_document_larger_than_the_limit_is_refused() {
    let docs = DocServer::start(|url| {
        let mut doc = document(url);
        doc["client_uri"] = json!(format!("https://app.example/{}", "x".repeat(20 * 1024)));
        serve(doc)
    })
    .await;
    let app = app_allowing_loopback().await;
    let detail = error_page(
        authorize(&app, &docs.url, REDIRECT).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(detail.contains("larger than"), "{detail}");
}

#[tokio::test]
async fn a_document_on_a_loopback_address_is_not_fetched_without_the_development_setting() {
    let docs = DocServer::start(|url| serve(document(url))).await;
    let app = spawn_app_with(|raw| raw.cimd.allow_loopback = false).await;
    let browser = app.signed_in_browser("alice@example.com").await;
    // The https forms of the same host pass the URL rules and meet the SSRF guard.
    for client_id in [
        format!("https://127.0.0.1:{}/client.json", docs.port()),
        format!("https://localhost:{}/client.json", docs.port()),
        format!("https://[::1]:{}/client.json", docs.port()),
        docs.url.clone(),
    ] {
        let url = app.authorize_url(&client_id, REDIRECT, &Pkce::new(), &[]);
        let detail = error_page(browser.get(&url).await, StatusCode::BAD_REQUEST).await;
        assert!(
            detail.contains("could not be fetched") || client_id.starts_with("http:"),
            "{client_id}: {detail}"
        );
    }
    assert_eq!(docs.fetches(), 0, "no request reached the loopback server");
}

#[tokio::test]
async fn a_documents_max_age_is_honoured_before_fetching_it_again() {
    let docs = DocServer::start(|url| DocResponse {
        cache_control: Some("public, max-age=600".into()),
        ..serve(document(url))
    })
    .await;
    let app = app_allowing_loopback().await;
    let browser = app.signed_in_browser("alice@example.com").await;
    let url = app.authorize_url(&docs.url, REDIRECT, &Pkce::new(), &[]);

    browser.consent_page(&url).await;
    assert_eq!(docs.fetches(), 1);
    app.clock.advance(599);
    browser.consent_page(&url).await;
    assert_eq!(
        docs.fetches(),
        1,
        "within max-age the cached document is used"
    );
    app.clock.advance(2);
    browser.consent_page(&url).await;
    assert_eq!(
        docs.fetches(),
        2,
        "after max-age the document is fetched again"
    );
}

#[tokio::test]
async fn a_host_outside_the_allow_list_is_refused() {
    let docs = DocServer::start(|url| serve(document(url))).await;
    let app = spawn_app_with(|raw| {
        raw.cimd.allow_loopback = true;
        raw.cimd.allowed_hosts = vec!["clients.example.com".into(), "*.trusted.example".into()];
    })
    .await;
    let detail = error_page(
        authorize(&app, &docs.url, REDIRECT).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(detail.contains("allow list"), "{detail}");
    assert_eq!(docs.fetches(), 0);
}

#[tokio::test]
async fn with_metadata_documents_disabled_they_are_neither_advertised_nor_fetched() {
    let docs = DocServer::start(|url| serve(document(url))).await;
    let app = spawn_app_with(|raw| {
        raw.cimd.enabled = false;
        raw.cimd.allow_loopback = true;
    })
    .await;
    let m = app.as_metadata().await;
    assert_eq!(m["client_id_metadata_document_supported"], false);
    error_page(
        authorize(&app, &docs.url, REDIRECT).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(docs.fetches(), 0);
}

#[tokio::test]
async fn a_document_whose_name_carries_invisible_formatting_characters_is_refused() {
    // "Claude" followed by a right-to-left override and reversed text would read as another
    // name on the consent page.
    let docs = DocServer::start(|url| {
        let mut doc = document(url);
        doc["client_name"] = json!("Claude\u{202E}edoC\u{200B}");
        serve(doc)
    })
    .await;
    let app = app_allowing_loopback().await;
    let detail = error_page(
        authorize(&app, &docs.url, REDIRECT).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(detail.contains("client_name"), "{detail}");
}

/// The error page for `client_id`: its status and detail.
async fn refusal(app: &TestApp, client_id: &str) -> (StatusCode, String) {
    let url = app.authorize_url(client_id, REDIRECT, &Pkce::new(), &[]);
    let r = app.http.get(&url).send().await.unwrap();
    let status = r.status();
    (status, error_page(r, status).await)
}

#[tokio::test]
async fn unresolvable_refused_and_unreachable_document_hosts_all_get_the_same_answer() {
    let docs = DocServer::start(|url| serve(document(url))).await;
    let strict = spawn_app_with(|raw| raw.cimd.allow_loopback = false).await;
    // A listener that accepts and never answers, for a timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let loopback = spawn_app_with(|raw| {
        raw.cimd.allow_loopback = true;
        raw.cimd.fetch_timeout_ms = 300;
    })
    .await;

    let mut answers = vec![];
    for client_id in [
        "https://no-such-host.invalid/client.json".to_owned(),
        format!("https://localhost:{}/client.json", docs.port()),
        format!("https://[::ffff:127.0.0.1]:{}/client.json", docs.port()),
        format!("https://[::127.0.0.1]:{}/client.json", docs.port()),
        "https://[64:ff9b::a9fe:a9fe]/client.json".to_owned(),
        "https://[2002:7f00:1::]/client.json".to_owned(),
        "https://10.0.0.1/client.json".to_owned(),
    ] {
        answers.push((client_id.clone(), refusal(&strict, &client_id).await));
    }
    for client_id in [
        format!("http://127.0.0.1:{closed_port}/client.json"),
        format!("http://127.0.0.1:{silent_port}/client.json"),
    ] {
        answers.push((client_id.clone(), refusal(&loopback, &client_id).await));
    }
    let (first_id, first) = &answers[0];
    assert_eq!(first.0, StatusCode::BAD_REQUEST);
    for (client_id, answer) in &answers {
        assert_eq!(
            answer, first,
            "{client_id} is answered differently from {first_id}"
        );
    }
    for word in ["resolve", "private", "reserved", "refused", "timed out"] {
        assert!(!first.1.contains(word), "{word:?} in {:?}", first.1);
    }
    assert_eq!(docs.fetches(), 0);
    drop(silent);
}

#[tokio::test]
async fn a_failed_fetch_is_remembered_briefly_instead_of_fetched_again() {
    let docs = DocServer::start(|_| DocResponse {
        body: "not a JSON document".into(),
        ..DocResponse::default()
    })
    .await;
    let app = app_allowing_loopback().await;

    let first = refusal(&app, &docs.url).await;
    assert_eq!(first.0, StatusCode::BAD_REQUEST);
    assert!(first.1.contains("not JSON"), "{}", first.1);
    assert_eq!(docs.fetches(), 1);

    app.clock.advance(59);
    assert_eq!(refusal(&app, &docs.url).await, first, "the same answer");
    assert_eq!(
        docs.fetches(),
        1,
        "within a minute the failure is remembered"
    );

    app.clock.advance(2);
    refusal(&app, &docs.url).await;
    assert_eq!(
        docs.fetches(),
        2,
        "after a minute the document is fetched again"
    );
}

#[tokio::test]
async fn document_fetches_are_limited_per_client_ip_without_fetching() {
    let docs = DocServer::start(|url| serve(document(url))).await;
    let app = spawn_app_with(|raw| {
        raw.cimd.allow_loopback = true;
        raw.cimd.fetches_per_ip_per_minute = 2;
    })
    .await;
    // Distinct documents, so that no cache answers for them.
    for n in 0..2 {
        refusal(&app, &format!("{}?n={n}", docs.url)).await;
    }
    assert_eq!(docs.fetches(), 2);
    let (status, detail) = refusal(&app, &format!("{}?n=2", docs.url)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{detail}");
    assert_eq!(docs.fetches(), 2, "the limit is applied before fetching");
}

#[tokio::test]
async fn an_explicitly_configured_proxy_is_used_for_document_fetches() {
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
    let app = spawn_app_with(|raw| raw.cimd.proxy_url = Some(proxy_url)).await;
    let connections = tokio::spawn(async move {
        let (_conn, _) = proxy.accept().await.unwrap();
    });
    refusal(&app, "https://client-metadata.example.com/client.json").await;
    tokio::time::timeout(std::time::Duration::from_secs(5), connections)
        .await
        .expect("the fetch went to the configured proxy")
        .unwrap();
}
