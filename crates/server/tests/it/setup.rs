//! First-run setup: while no user exists, a one-time link creates the first administrator;
//! afterwards setup is closed.

use reqwest::StatusCode;

use crate::helpers::{
    Browser, TestApp, element_text, error_page, hidden_field, location, spawn_app,
};

const EMAIL: &str = "admin@example.com";
const GOOD_PASSWORD: &str = "a long enough passphrase";

/// Open the setup form with `token`; returns the browser and the form's CSRF token.
async fn setup_form(app: &TestApp, token: &str) -> (Browser, String) {
    let browser = Browser::new(app);
    let r = browser.get(&format!("/setup?token={token}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().await.unwrap();
    assert!(html.contains("name=\"password_confirm\""), "the setup form");
    assert_eq!(hidden_field(&html, "token").as_deref(), Some(token));
    let csrf = hidden_field(&html, "csrf").expect("a CSRF field");
    (browser, csrf)
}

async fn submit(
    browser: &Browser,
    token: &str,
    csrf: &str,
    password: &str,
    confirm: &str,
) -> reqwest::Response {
    browser
        .post_form(
            "/setup",
            &[
                ("token", token),
                ("csrf", csrf),
                ("email", EMAIL),
                ("password", password),
                ("password_confirm", confirm),
            ],
        )
        .await
}

#[tokio::test]
async fn a_wrong_setup_token_is_forbidden() {
    let app = spawn_app().await;
    app.open_setup();
    let r = Browser::new(&app).get("/setup?token=bad").await;
    error_page(r, StatusCode::FORBIDDEN).await;
}

#[tokio::test]
async fn setup_is_forbidden_before_it_is_opened() {
    let app = spawn_app().await;
    let r = Browser::new(&app).get("/setup?token=").await;
    error_page(r, StatusCode::FORBIDDEN).await;
}

#[tokio::test]
async fn the_setup_link_shows_the_form() {
    let app = spawn_app().await;
    let token = app.open_setup();
    setup_form(&app, &token).await;
}

#[tokio::test]
async fn mismatched_passwords_are_refused_with_a_message() {
    let app = spawn_app().await;
    let token = app.open_setup();
    let (browser, csrf) = setup_form(&app, &token).await;
    let r = submit(
        &browser,
        &token,
        &csrf,
        GOOD_PASSWORD,
        "a different passphrase",
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let html = r.text().await.unwrap();
    assert!(
        element_text(&html, "setup-error")
            .unwrap()
            .contains("do not match")
    );
    assert_eq!(app.state.db.count_users().await.unwrap(), 0);
}

#[tokio::test]
async fn a_short_password_is_refused_with_a_message() {
    let app = spawn_app().await;
    let token = app.open_setup();
    let (browser, csrf) = setup_form(&app, &token).await;
    let r = submit(&browser, &token, &csrf, "short", "short").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let html = r.text().await.unwrap();
    assert!(
        element_text(&html, "setup-error")
            .unwrap()
            .contains("at least 12 characters")
    );
    assert_eq!(app.state.db.count_users().await.unwrap(), 0);
}

#[tokio::test]
async fn setup_without_a_csrf_token_is_forbidden() {
    let app = spawn_app().await;
    let token = app.open_setup();
    let (browser, _) = setup_form(&app, &token).await;
    let r = submit(&browser, &token, "", GOOD_PASSWORD, GOOD_PASSWORD).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.state.db.count_users().await.unwrap(), 0);
}

#[tokio::test]
async fn a_valid_setup_creates_an_admin_signs_in_and_closes_the_link() {
    let app = spawn_app().await;
    let token = app.open_setup();
    let (browser, csrf) = setup_form(&app, &token).await;
    let r = submit(&browser, &token, &csrf, GOOD_PASSWORD, GOOD_PASSWORD).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/account");

    let user = app
        .state
        .db
        .find_user_by_email(EMAIL)
        .await
        .unwrap()
        .expect("the user exists");
    assert_eq!(user.is_admin, 1, "the first user is an administrator");
    let account = browser.get("/account").await;
    assert_eq!(account.status(), StatusCode::OK, "signed in");
    assert!(account.text().await.unwrap().contains(EMAIL));

    let again = browser.get(&format!("/setup?token={token}")).await;
    error_page(again, StatusCode::NOT_FOUND).await;
    let replay = submit(&browser, &token, &csrf, GOOD_PASSWORD, GOOD_PASSWORD).await;
    error_page(replay, StatusCode::FORBIDDEN).await; // the token is spent
    assert_eq!(app.state.db.count_users().await.unwrap(), 1);
}

#[tokio::test]
async fn setup_is_closed_once_a_user_exists() {
    let app = spawn_app().await;
    let token = app.open_setup();
    app.create_user("existing@example.com", true).await;
    let browser = Browser::new(&app);
    error_page(
        browser.get(&format!("/setup?token={token}")).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let csrf = browser.csrf_from("/login").await;
    let r = submit(&browser, &token, &csrf, GOOD_PASSWORD, GOOD_PASSWORD).await;
    error_page(r, StatusCode::NOT_FOUND).await;
    assert_eq!(app.state.db.count_users().await.unwrap(), 1);
}
