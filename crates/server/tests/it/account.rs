//! The account page: the applications holding access to the account, and revoking one,
//! which ends its tokens and forgets the consent.

use reqwest::StatusCode;

use crate::helpers::{Browser, Pkce, Tokens, location, oauth_error, spawn_app};

const REDIRECT: &str = "http://127.0.0.1:7777/callback";

/// The `client_id` and CSRF token of the account page's first Revoke form.
async fn revoke_form(browser: &Browser) -> (String, String) {
    let html = browser.get("/account").await.text().await.unwrap();
    let csrf = crate::helpers::hidden_field(&html, "csrf").expect("a CSRF field");
    let client_id = crate::helpers::hidden_field(&html, "client_id").expect("a Revoke form");
    (client_id, csrf)
}

async fn account_page(browser: &Browser) -> String {
    let r = browser.get("/account").await;
    assert_eq!(r.status(), StatusCode::OK);
    r.text().await.unwrap()
}

#[tokio::test]
async fn the_account_page_lists_an_authorized_application() {
    let app = spawn_app().await;
    let before = app.signed_in_browser("bob@example.com").await;
    assert!(account_page(&before).await.contains("id=\"no-apps\""));

    let Tokens {
        client_id, browser, ..
    } = app.tokens_for_new_client("alice@example.com").await;
    let page = account_page(&browser).await;
    assert!(page.contains("class=\"app-name\">Test Client"), "{page}");
    assert!(page.contains(&client_id));
}

#[tokio::test]
async fn revoking_an_application_ends_its_tokens_and_forgets_the_consent() {
    let app = spawn_app().await;
    let tokens = app.tokens_for_new_client("alice@example.com").await;
    let browser = &tokens.browser;
    let (client_id, csrf) = revoke_form(browser).await;
    assert_eq!(client_id, tokens.client_id);

    let r = browser
        .post_form(
            "/account/revoke",
            &[("csrf", &csrf), ("client_id", &client_id)],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/account");

    let page = account_page(browser).await;
    assert!(!page.contains("Test Client"), "the app is gone: {page}");
    assert!(page.contains("id=\"no-apps\""));

    let refresh = app
        .token(&[
            ("grant_type", "refresh_token"),
            ("client_id", &client_id),
            ("refresh_token", &tokens.refresh_token),
        ])
        .await;
    assert_eq!(oauth_error(refresh).await.1, "invalid_grant");
    assert_eq!(app.introspect(&tokens.access_token).await["active"], false);

    let url = app.authorize_url(&client_id, REDIRECT, &Pkce::new(), &[]);
    browser.consent_page(&url).await;
}

#[tokio::test]
async fn revoking_without_a_csrf_token_is_forbidden_and_revokes_nothing() {
    let app = spawn_app().await;
    let tokens = app.tokens_for_new_client("alice@example.com").await;
    let r = tokens
        .browser
        .post_form("/account/revoke", &[("client_id", &tokens.client_id)])
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.introspect(&tokens.access_token).await["active"], true);
    assert!(
        account_page(&tokens.browser)
            .await
            .contains("class=\"app-name\">Test Client")
    );
}

#[tokio::test]
async fn revoking_from_a_cross_site_origin_is_forbidden() {
    let app = spawn_app().await;
    let tokens = app.tokens_for_new_client("alice@example.com").await;
    let (client_id, csrf) = revoke_form(&tokens.browser).await;
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::ORIGIN,
        reqwest::header::HeaderValue::from_static("https://evil.example"),
    );
    let r = tokens
        .browser
        .post_form_with(
            "/account/revoke",
            &[("csrf", &csrf), ("client_id", &client_id)],
            headers,
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.introspect(&tokens.access_token).await["active"], true);
}

#[tokio::test]
async fn the_account_page_sends_a_visitor_who_is_not_signed_in_to_login() {
    let app = spawn_app().await;
    let r = Browser::new(&app).get("/account").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/login?return_to=/account");
}

#[tokio::test]
async fn revoking_when_not_signed_in_sends_the_visitor_to_login() {
    let app = spawn_app().await;
    let tokens = app.tokens_for_new_client("alice@example.com").await;
    let (client_id, csrf) = revoke_form(&tokens.browser).await;
    let stranger = Browser::new(&app);
    stranger.set_cookie(
        "__Host-mcp_csrf",
        &tokens.browser.cookie("__Host-mcp_csrf").unwrap(),
    );
    let r = stranger
        .post_form(
            "/account/revoke",
            &[("csrf", &csrf), ("client_id", &client_id)],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(location(&r).starts_with("/login"));
    assert_eq!(app.introspect(&tokens.access_token).await["active"], true);
}

#[tokio::test]
async fn the_account_page_escapes_a_hostile_client_name() {
    let app = spawn_app().await;
    let client_id = app
        .register_client(serde_json::json!({
            "client_name": "<img src=x onerror=alert(1)>", "token_endpoint_auth_method": "none",
            "redirect_uris": [REDIRECT],
        }))
        .await;
    let browser = app.signed_in_browser("alice@example.com").await;
    let pkce = Pkce::new();
    let code = app
        .get_code(&browser, &client_id, REDIRECT, &pkce, &[])
        .await;
    assert_eq!(
        app.exchange(&client_id, &code, REDIRECT, &pkce)
            .await
            .status(),
        StatusCode::OK
    );
    let page = account_page(&browser).await;
    assert!(!page.contains("<img src=x"), "{page}");
}

#[tokio::test]
async fn everything_honoured_is_listed_a_pending_code_and_a_consent_whose_tokens_expired() {
    let app = spawn_app().await;
    let client_id = app
        .preregistered_public_client("Remembered App", REDIRECT)
        .await;
    let browser = app.signed_in_browser("alice@example.com").await;
    // Consent given, a code issued and never redeemed.
    let pkce = Pkce::new();
    app.get_code(&browser, &client_id, REDIRECT, &pkce, &[])
        .await;
    let page = account_page(&browser).await;
    assert!(page.contains("Remembered App"), "a pending code: {page}");

    // Once the code (and the grant it started) has expired, the consent is still honoured...
    app.clock.advance(3600);
    let url = app.authorize_url(&client_id, REDIRECT, &Pkce::new(), &[]);
    let r = browser.get(&url).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(
        crate::helpers::redirect_params(&r).contains_key("code"),
        "remembered: straight back with a code"
    );
    // ...so it is listed, and revoking it makes the next authorization ask again.
    let page = account_page(&browser).await;
    assert!(
        page.contains("Remembered App"),
        "remembered consent: {page}"
    );
    let (listed, csrf) = revoke_form(&browser).await;
    assert_eq!(listed, client_id);
    browser
        .post_form(
            "/account/revoke",
            &[("csrf", &csrf), ("client_id", &client_id)],
        )
        .await;
    assert!(account_page(&browser).await.contains("id=\"no-apps\""));
    let r = browser.get(&url).await;
    assert_eq!(r.status(), StatusCode::OK, "consent is asked again");
}

#[tokio::test]
async fn pages_are_never_cached() {
    let app = spawn_app().await;
    let browser = app.signed_in_browser("alice@example.com").await;
    let client_id = app.register_public_client(REDIRECT).await;
    let consent = app.authorize_url(&client_id, REDIRECT, &Pkce::new(), &[]);
    let fresh = spawn_app().await;
    let setup = format!("/setup?token={}", fresh.open_setup());
    for (who, path) in [
        (Browser::new(&app), "/login".to_owned()),
        (browser.clone(), "/account".to_owned()),
        (browser.clone(), consent),
        (Browser::new(&fresh), setup),
    ] {
        let r = who.get(&path).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert_eq!(
            r.headers()
                .get("cache-control")
                .map(|v| v.to_str().unwrap()),
            Some("no-store"),
            "{path}"
        );
    }
}
