//! Signing in and out: the session cookie's attributes, one answer for every bad credential,
//! throttling per account and per IP, CSRF, and `return_to` staying on this server.

use reqwest::StatusCode;

use crate::helpers::{
    Browser, PASSWORD, TestApp, element_text, location, spawn_app, spawn_app_with,
};

const EMAIL: &str = "alice@example.com";

/// Small limits: the second failure is delayed by a millisecond, the third locks for a minute.
fn small_limits(raw: &mut mcp_oauth::config::RawSettings) {
    raw.login.delay_after = 1;
    raw.login.base_delay_ms = 1;
    raw.login.max_delay_ms = 5;
    raw.login.account_lockout_after = 3;
    raw.login.lockout_seconds = 60;
}

/// Post the login form and return the status and the page's error message.
async fn attempt(browser: &Browser, email: &str, password: &str) -> (StatusCode, Option<String>) {
    let r = browser.login(email, password).await;
    let status = r.status();
    let html = r.text().await.unwrap();
    (status, element_text(&html, "login-error"))
}

#[tokio::test]
async fn signing_in_sets_a_host_only_secure_httponly_lax_session_cookie() {
    let app = spawn_app().await;
    app.create_user(EMAIL, false).await;
    let browser = Browser::new(&app);
    let r = browser.login(EMAIL, PASSWORD).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/account");
    let cookie = Browser::set_cookie_header(&r, "__Host-mcp_session").expect("a session cookie");
    let attributes: Vec<String> = cookie
        .split(';')
        .skip(1)
        .map(|a| a.trim().to_ascii_lowercase())
        .collect();
    for required in ["secure", "httponly", "samesite=lax", "path=/"] {
        assert!(
            attributes.iter().any(|a| a == required),
            "{required} in {cookie}"
        );
    }
    assert!(
        !attributes.iter().any(|a| a.starts_with("domain")),
        "__Host- cookies have no Domain: {cookie}"
    );
    let account = browser.get("/account").await;
    assert_eq!(account.status(), StatusCode::OK);
    assert!(account.text().await.unwrap().contains(EMAIL));
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_email_get_the_same_answer() {
    let app = spawn_app().await;
    app.create_user(EMAIL, false).await;
    let browser = Browser::new(&app);
    let wrong_password = attempt(&browser, EMAIL, "not the password").await;
    let unknown_email = attempt(&browser, "nobody@example.com", PASSWORD).await;
    assert_eq!(wrong_password.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        wrong_password, unknown_email,
        "no hint whether the account exists"
    );
    assert!(wrong_password.1.is_some(), "a message is shown");
    assert!(browser.cookie("__Host-mcp_session").is_none());
}

#[tokio::test]
async fn a_disabled_user_cannot_sign_in() {
    let app = spawn_app().await;
    let id = app.create_user(EMAIL, false).await;
    app.disable_user(&id).await;
    let browser = Browser::new(&app);
    let (status, message) = attempt(&browser, EMAIL, PASSWORD).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        (status, message),
        attempt(&browser, "nobody@example.com", PASSWORD).await,
        "same answer as for an unknown account"
    );
    assert!(browser.cookie("__Host-mcp_session").is_none());
}

#[tokio::test]
async fn a_locked_account_is_refused_even_with_the_right_password_until_the_lockout_ends() {
    let app = spawn_app_with(small_limits).await;
    app.create_user(EMAIL, false).await;
    let browser = Browser::new(&app);
    for i in 0..3 {
        let (status, _) = attempt(&browser, EMAIL, "wrong password").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "failure {i}");
    }
    let (status, message) = attempt(&browser, EMAIL, PASSWORD).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let message = message.expect("a message");
    assert!(
        message.contains("Too many failed sign-in attempts"),
        "{message}"
    );
    assert!(browser.cookie("__Host-mcp_session").is_none());

    app.clock.advance(61);
    let r = browser.login(EMAIL, PASSWORD).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "the lockout is over");
}

#[tokio::test]
async fn an_ip_trying_many_accounts_is_locked_out() {
    let app = spawn_app_with(|raw| {
        small_limits(raw);
        raw.login.account_lockout_after = 100;
        raw.login.ip_lockout_after = 5;
    })
    .await;
    app.create_user(EMAIL, false).await;
    let browser = Browser::new(&app);
    for i in 0..5 {
        let victim = format!("victim{i}@example.com");
        let (status, _) = attempt(&browser, &victim, "guess").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{victim}");
    }
    let (status, message) = attempt(&browser, EMAIL, PASSWORD).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "the IP is locked");
    assert!(
        message
            .unwrap()
            .contains("Too many failed sign-in attempts")
    );
}

async fn post_login(browser: &Browser, csrf: Option<&str>) -> reqwest::Response {
    let mut form = vec![
        ("email", EMAIL),
        ("password", PASSWORD),
        ("return_to", "/account"),
    ];
    if let Some(c) = csrf {
        form.push(("csrf", c));
    }
    browser.post_form("/login", &form).await
}

#[tokio::test]
async fn signing_in_without_a_csrf_token_is_forbidden() {
    let app = spawn_app().await;
    app.create_user(EMAIL, false).await;
    let browser = Browser::new(&app);
    browser.csrf_from("/login").await;
    let r = post_login(&browser, None).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(browser.cookie("__Host-mcp_session").is_none());
}

#[tokio::test]
async fn signing_in_with_a_wrong_csrf_token_is_forbidden() {
    let app = spawn_app().await;
    app.create_user(EMAIL, false).await;
    let browser = Browser::new(&app);
    let csrf = browser.csrf_from("/login").await;
    let r = post_login(&browser, Some(&"x".repeat(csrf.len()))).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(browser.cookie("__Host-mcp_session").is_none());
}

async fn return_to_after_login(app: &TestApp, return_to: &str) -> String {
    let browser = Browser::new(app);
    let r = browser.login_to(EMAIL, PASSWORD, return_to).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    location(&r)
}

#[tokio::test]
async fn a_return_to_on_another_origin_is_replaced_by_the_account_page() {
    let app = spawn_app().await;
    app.create_user(EMAIL, false).await;
    assert_eq!(
        return_to_after_login(&app, "https://evil.example/").await,
        "/account"
    );
}

#[tokio::test]
async fn a_scheme_relative_return_to_is_replaced_by_the_account_page() {
    let app = spawn_app().await;
    app.create_user(EMAIL, false).await;
    assert_eq!(
        return_to_after_login(&app, "//evil.example").await,
        "/account"
    );
}

#[tokio::test]
async fn the_login_page_does_not_carry_a_foreign_return_to() {
    let app = spawn_app().await;
    let browser = Browser::new(&app);
    let html = browser
        .get("/login?return_to=https%3A%2F%2Fevil.example%2F")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(
        crate::helpers::hidden_field(&html, "return_to").as_deref(),
        Some("/account")
    );
}

#[tokio::test]
async fn signing_out_ends_the_session() {
    let app = spawn_app().await;
    let browser = app.signed_in_browser(EMAIL).await;
    let session = browser.cookie("__Host-mcp_session").unwrap();
    let csrf = browser.csrf_from("/account").await;
    let r = browser.post_form("/logout", &[("csrf", &csrf)]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/login");
    let r = browser.get("/account").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(location(&r).starts_with("/login"));

    // The session is ended on the server too, not just forgotten by the browser.
    let replay = Browser::new(&app);
    replay.set_cookie("__Host-mcp_session", &session);
    let r = replay.get("/account").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "the old cookie is dead");
}

#[tokio::test]
async fn signing_out_without_a_csrf_token_is_forbidden_and_keeps_the_session() {
    let app = spawn_app().await;
    let browser = app.signed_in_browser(EMAIL).await;
    let r = browser.post_form("/logout", &[]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = browser.get("/account").await;
    assert_eq!(r.status(), StatusCode::OK, "still signed in");
}
