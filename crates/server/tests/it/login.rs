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
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        message.as_deref(),
        Some("Invalid email or password."),
        "a lock answers as a wrong password does"
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
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the IP is locked");
    assert_eq!(message.as_deref(), Some("Invalid email or password."));
}

/// A server behind a trusted proxy on loopback, so browsers can appear to come from
/// different addresses (`Browser::from_ip`).
async fn spawn_behind_proxy(
    configure: impl FnOnce(&mut mcp_oauth::config::RawSettings),
) -> TestApp {
    spawn_app_with(|raw| {
        raw.trusted_proxies = vec!["127.0.0.1/32".into()];
        // These tests are about the throttle: the attacking address must not be blocked
        // before it is done (blocks are tested in `security`).
        raw.security.auto_block = false;
        configure(raw);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_parallel_wrong_passwords_are_counted_atomically_and_lock_the_account() {
    let app = spawn_behind_proxy(|raw| {
        raw.login.base_delay_ms = 1;
        raw.login.max_delay_ms = 5;
        // The address's rate limit (429) and the quick-login check have their own tests;
        // this one is about counting.
        raw.rate_limits.sign_in_per_minute = 0;
        raw.login.quick_login_check_ms = 0;
    })
    .await;
    app.create_user(EMAIL, false).await;
    let browser = Browser::from_ip(&app, "198.51.100.7");
    let page = browser.get("/login").await.text().await.unwrap();
    let csrf = crate::helpers::hidden_field(&page, "csrf").unwrap();
    let guesses: Vec<_> = (0..60)
        .map(|i| {
            let (browser, csrf) = (browser.clone(), csrf.clone());
            tokio::spawn(async move {
                let password = format!("wrong guess {i}");
                let r = browser
                    .post_form(
                        "/login",
                        &[("email", EMAIL), ("password", &password), ("csrf", &csrf)],
                    )
                    .await;
                r.status()
            })
        })
        .collect();
    for guess in guesses {
        assert_eq!(
            guess.await.unwrap(),
            StatusCode::UNAUTHORIZED,
            "checked or locked, the same answer"
        );
    }
    // Which were checked shows only in the security events.
    let limit = app.state.settings.login.account_ip_lockout_after as usize;
    let reasons = sign_in_failures(&app, 60).await;
    assert_eq!(
        reasons.iter().filter(|r| *r == "wrong_password").count(),
        limit,
        "exactly as many passwords are checked as the limit allows"
    );
    assert_eq!(
        reasons.iter().filter(|r| *r == "locked").count(),
        60 - limit
    );
    let (status, _) = attempt(&browser, EMAIL, PASSWORD).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the right password after the burst is refused too"
    );
}

#[tokio::test]
async fn strangers_wrong_passwords_do_not_lock_out_the_owners_browser() {
    let app = spawn_behind_proxy(|raw| {
        small_limits(raw);
        raw.login.account_ip_lockout_after = 2;
        raw.login.account_lockout_after = 4;
    })
    .await;
    app.create_user(EMAIL, false).await;
    // The owner has signed in from this browser before.
    let owner = Browser::from_ip(&app, "203.0.113.10");
    assert_eq!(
        attempt(&owner, EMAIL, PASSWORD).await.0,
        StatusCode::SEE_OTHER
    );
    assert!(
        owner.cookie("__Host-mcp_device").is_some(),
        "a device cookie"
    );

    // An attacker tries from one address: that address is locked out of the account...
    let attacker = Browser::from_ip(&app, "198.51.100.1");
    for _ in 0..2 {
        assert_eq!(
            attempt(&attacker, EMAIL, "guess").await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        attempt(&attacker, EMAIL, PASSWORD).await.0,
        StatusCode::UNAUTHORIZED,
        "locked per account and address"
    );
    // ...but the owner signs in from a new browser elsewhere, before the account-wide limit.
    let owner_elsewhere = Browser::from_ip(&app, "203.0.113.77");
    assert_eq!(
        attempt(&owner_elsewhere, EMAIL, PASSWORD).await.0,
        StatusCode::SEE_OTHER
    );

    // A distributed attacker reaches the account-wide limit: browsers without the device
    // cookie are locked out of the account, the owner's trusted browser is not.
    for i in 0..4 {
        let ip = format!("198.51.100.{}", 20 + i);
        let (status, _) = attempt(&Browser::from_ip(&app, &ip), EMAIL, "guess").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "guess from {ip}");
    }
    let stranger = Browser::from_ip(&app, "198.51.100.99");
    assert_eq!(
        attempt(&stranger, EMAIL, PASSWORD).await.0,
        StatusCode::UNAUTHORIZED,
        "an untrusted browser is locked out account-wide"
    );
    let r = owner.login(EMAIL, PASSWORD).await;
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "the owner's browser is not"
    );
}

#[tokio::test]
async fn a_device_cookie_for_another_account_or_with_too_many_failures_is_not_trusted() {
    let app = spawn_behind_proxy(|raw| {
        small_limits(raw);
        raw.login.account_lockout_after = 3;
        raw.login.device_lockout_after = 2;
    })
    .await;
    app.create_user(EMAIL, false).await;
    app.create_user("mallory@example.com", false).await;
    // Mallory's own device cookie does not make her browser trusted for Alice's account.
    let mallory = Browser::from_ip(&app, "198.51.100.5");
    assert_eq!(
        attempt(&mallory, "mallory@example.com", PASSWORD).await.0,
        StatusCode::SEE_OTHER
    );
    for _ in 0..3 {
        assert_eq!(
            attempt(&mallory.fresh(), EMAIL, "guess").await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    let mallory_status = attempt(&mallory, EMAIL, PASSWORD).await.0;
    assert_eq!(
        mallory_status,
        StatusCode::UNAUTHORIZED,
        "counted as untrusted"
    );

    // Alice's own trusted browser, once it has failed too often itself, is untrusted again.
    app.clock.advance(61);
    let alice = Browser::from_ip(&app, "203.0.113.10");
    assert_eq!(
        attempt(&alice, EMAIL, PASSWORD).await.0,
        StatusCode::SEE_OTHER
    );
    for _ in 0..2 {
        assert_eq!(
            attempt(&alice, EMAIL, "typo").await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    for _ in 0..3 {
        assert_eq!(
            attempt(&alice.fresh(), EMAIL, "guess").await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        attempt(&alice, EMAIL, PASSWORD).await.0,
        StatusCode::UNAUTHORIZED,
        "the device's own lock sends it to the untrusted counts, which are locked"
    );
}

/// Keycloak's "multiple" wait: once the limit is reached, every further wrong password locks
/// again, for the increment times the multiples of the limit reached, up to the maximum.
#[tokio::test]
async fn each_lock_after_the_limit_lasts_longer_up_to_the_maximum() {
    let app = spawn_app_with(|raw| {
        small_limits(raw);
        raw.login.max_lockout_seconds = 90;
        raw.login.quick_login_check_ms = 0;
    })
    .await;
    app.create_user(EMAIL, false).await;
    let browser = Browser::new(&app);
    let signs_in = async |advance: i64| {
        app.clock.advance(advance);
        browser.login(EMAIL, PASSWORD).await.status() == StatusCode::SEE_OTHER
    };
    // Failures 1..3 (the third locks for 60 s), then 4 and 5 after each lock: 60 s each.
    for _ in 0..3 {
        attempt(&browser, EMAIL, "wrong").await;
    }
    for _ in 0..2 {
        app.clock.advance(61);
        attempt(&browser, EMAIL, "wrong").await;
    }
    // The sixth is twice the limit: 120 s, capped at 90.
    app.clock.advance(61);
    attempt(&browser, EMAIL, "wrong").await;
    assert!(!signs_in(61).await, "still locked after 61 s");
    assert!(signs_in(30).await, "free after 91 s");
}

/// Keycloak's quick-login check: a second wrong password right after the first locks this
/// address out of the account for a minute; another address is not affected.
#[tokio::test]
async fn two_quick_wrong_passwords_lock_the_address_out_of_the_account_for_a_minute() {
    let app = spawn_app_with(|raw| {
        raw.trusted_proxies = vec!["127.0.0.1/32".into()];
        raw.security.auto_block = false;
        raw.login.base_delay_ms = 1;
        raw.login.max_delay_ms = 5;
    })
    .await;
    app.create_user(EMAIL, false).await;
    let guesser = Browser::from_ip(&app, "198.51.100.3");
    for _ in 0..2 {
        attempt(&guesser, EMAIL, "wrong").await;
    }
    let (status, message) = attempt(&guesser, EMAIL, PASSWORD).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "locked, with the usual answer"
    );
    assert_eq!(message.as_deref(), Some("Invalid email or password."));
    let elsewhere = Browser::from_ip(&app, "203.0.113.3");
    assert_eq!(
        attempt(&elsewhere, EMAIL, PASSWORD).await.0,
        StatusCode::SEE_OTHER
    );
    app.clock.advance(61);
    assert_eq!(
        attempt(&guesser, EMAIL, PASSWORD).await.0,
        StatusCode::SEE_OTHER
    );

    // A form sent twice with the right password locks nothing.
    let twice = Browser::from_ip(&app, "198.51.100.4");
    let (a, b) = tokio::join!(twice.login(EMAIL, PASSWORD), twice.login(EMAIL, PASSWORD));
    assert_eq!(
        (a.status(), b.status()),
        (StatusCode::SEE_OTHER, StatusCode::SEE_OTHER)
    );
}

/// Keycloak's rule: nothing in the answer tells a lock from a wrong password or an unknown
/// account (no 429, no `Retry-After`, the same page).
#[tokio::test]
async fn a_locked_account_answers_exactly_as_a_wrong_password_or_an_unknown_account() {
    let app = spawn_app_with(small_limits).await;
    app.create_user(EMAIL, false).await;
    let browser = Browser::new(&app);
    let wrong = attempt(&browser, EMAIL, "wrong").await;
    for _ in 0..2 {
        attempt(&browser, EMAIL, "wrong").await;
    }
    let r = browser.login(EMAIL, PASSWORD).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(!r.headers().contains_key("retry-after"));
    let locked = attempt(&browser, EMAIL, PASSWORD).await;
    assert_eq!(locked, wrong);
    assert_eq!(
        locked,
        attempt(&browser, "nobody@example.com", PASSWORD).await
    );
}

/// The reasons of the first `n` `sign_in_failed` security events, once stored.
async fn sign_in_failures(app: &TestApp, n: usize) -> Vec<String> {
    let filter = mcp_oauth_store::SecurityFilter {
        from: 0,
        to: i64::MAX,
        kind: Some("sign_in_failed".into()),
        ..Default::default()
    };
    for _ in 0..400 {
        let rows = app.state.db.security_events(&filter, 1_000).await.unwrap();
        if rows.len() >= n {
            return rows
                .iter()
                .map(|r| r.evidence["reason"].as_str().unwrap_or("").to_owned())
                .collect();
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("fewer than {n} sign-in failures were stored");
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
