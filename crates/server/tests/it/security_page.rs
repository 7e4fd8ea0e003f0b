//! The security page (issue 8): administrators only; events filtered, charted and ranked;
//! blocks lifted; events acknowledged and resolved; every token of a user or client revoked
//! after a confirmation; the panels pushed live over Server-Sent Events.

use std::time::Duration;

use reqwest::StatusCode;

use mcp_oauth_store::{SecurityEventRow, SecurityFilter};

use crate::helpers::{Browser, PASSWORD, TestApp, hidden_field, initialize, spawn_app_with};

const ADMIN: &str = "admin@example.com";
const ALICE: &str = "alice@example.com";

/// Behind a trusted proxy on loopback, events stored every 50 ms, nobody blocked automatically.
async fn app() -> TestApp {
    spawn_app_with(|raw| {
        raw.trusted_proxies = vec!["127.0.0.1/32".into()];
        raw.analytics.flush_interval_ms = 50;
        raw.login.base_delay_ms = 1;
        raw.login.max_delay_ms = 5;
        raw.security.auto_block = false;
        // Three quick wrong passwords are three events here, not a lock too.
        raw.login.quick_login_check_ms = 0;
    })
    .await
}

async fn stored_events(app: &TestApp, n: usize) -> Vec<SecurityEventRow> {
    let filter = SecurityFilter {
        from: 0,
        to: i64::MAX,
        ..SecurityFilter::default()
    };
    for _ in 0..200 {
        let rows = app.state.db.security_events(&filter, 1_000).await.unwrap();
        if rows.len() >= n {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("fewer than {n} events were stored");
}

async fn signed_in(app: &TestApp, email: &str, admin: bool) -> (String, Browser) {
    let id = app.create_user(email, admin).await;
    let b = Browser::new(app);
    assert_eq!(
        b.login(email, PASSWORD).await.status(),
        StatusCode::SEE_OTHER
    );
    (id, b)
}

async fn probe(app: &TestApp, ip: &str, path: &str) {
    let r = app
        .http
        .get(format!("{}{path}", app.url))
        .header("x-forwarded-for", ip)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

async fn page(browser: &Browser, url: &str) -> (StatusCode, String) {
    let r = browser.get(url).await;
    (r.status(), r.text().await.unwrap())
}

/// Rows of the events table.
fn event_rows(html: &str) -> usize {
    html.matches("<tr class=\"level-").count()
}

#[tokio::test]
async fn the_page_is_for_administrators_and_shows_filtered_events_charts_offenders_and_blocks() {
    let app = app().await;
    let (_, alice) = signed_in(&app, ALICE, false).await;
    let (_, admin) = signed_in(&app, ADMIN, true).await;
    let attacker = Browser::from_ip(&app, "198.51.100.7");
    for _ in 0..3 {
        attacker.login(ALICE, "wrong").await;
    }
    probe(&app, "203.0.113.5", "/.env").await;
    stored_events(&app, 4).await;

    let anonymous = Browser::new(&app).get("/security").await;
    assert_eq!(anonymous.status(), StatusCode::SEE_OTHER);
    assert!(crate::helpers::location(&anonymous).contains("/login?return_to="));
    assert_eq!(alice.get("/security").await.status(), StatusCode::FORBIDDEN);

    let r = admin.get("/security?range=1h").await;
    assert_eq!(r.status(), StatusCode::OK);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    let html = r.text().await.unwrap();
    assert!(html.contains("<dd id=\"events-total\">4</dd>"), "{html}");
    assert!(html.contains("id=\"security-chart\""));
    assert!(html.contains("sign_in_failed") && html.contains("scanner"));
    assert_eq!(event_rows(&html), 4);
    let top_ips = &html[html.find("id=\"top-ips\"").unwrap()..];
    assert!(
        top_ips.contains(">198.51.100.7</a></td><td>3</td>"),
        "{top_ips}"
    );
    let top_users = &html[html.find("id=\"top-users\"").unwrap()..];
    assert!(top_users.contains(ALICE) && top_users.contains("Revoke all tokens"));

    let (_, scanners) = page(&admin, "/security?range=1h&type=scanner").await;
    assert_eq!(event_rows(&scanners), 1);
    assert!(scanners.contains("203.0.113.5"));
    let (_, by_user) = page(&admin, &format!("/security?range=1h&user={ALICE}")).await;
    assert_eq!(event_rows(&by_user), 3);
    let (_, by_ip) = page(&admin, "/security?range=1h&ip=203.0.113.5").await;
    assert_eq!(event_rows(&by_ip), 1);
    let (_, critical) = page(&admin, "/security?range=1h&level=critical").await;
    assert!(critical.contains("No security event matches."));
    let (status, wrong) = page(&admin, "/security?type=nope").await;
    assert_eq!(status, StatusCode::OK);
    assert!(wrong.contains("id=\"filter-problem\"") && wrong.contains("not an event type"));

    // An operator's block, lifted from the page (only with the form's CSRF token).
    let now = app.clock.now_millis();
    app.state
        .db
        .block_ip("203.0.113.9", "abuse report", now, None, "cli", false)
        .await
        .unwrap();
    let (_, html) = page(&admin, "/security?range=1h").await;
    let blocks = &html[html.find("id=\"blocks\"").unwrap()..];
    assert!(blocks.contains("203.0.113.9") && blocks.contains("until unblocked"));
    let csrf = hidden_field(&html, "csrf").unwrap();
    let r = admin
        .post_form("/security/unblock", &[("ip", "203.0.113.9")])
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "no CSRF token");
    assert_eq!(
        app.state.db.active_ip_blocks(now, 10).await.unwrap().len(),
        1
    );
    let r = alice
        .post_form(
            "/security/unblock",
            &[("ip", "203.0.113.9"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "not an administrator");
    let r = admin
        .post_form(
            "/security/unblock",
            &[("ip", "203.0.113.9"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(
        app.state
            .db
            .active_ip_blocks(now, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let (_, html) = page(&admin, "/security?range=1h").await;
    assert!(html.contains("No address is blocked."));
}

#[tokio::test]
async fn an_administrator_acknowledges_then_resolves_an_event_with_a_note() {
    let app = app().await;
    let (admin_id, admin) = signed_in(&app, ADMIN, true).await;
    let (_, alice) = signed_in(&app, ALICE, false).await;
    probe(&app, "203.0.113.5", "/wp-login.php").await;
    let id = stored_events(&app, 1).await[0].id;
    let url = format!("/security/events/{id}");

    assert_eq!(alice.get(&url).await.status(), StatusCode::FORBIDDEN);
    let (status, html) = page(&admin, &url).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("<dd id=\"event-type\">scanner</dd>"));
    assert!(html.contains("<dd id=\"acknowledged\">no</dd>"));
    let csrf = hidden_field(&html, "csrf").unwrap();

    let r = admin
        .post_form(
            &url,
            &[("action", "acknowledge"), ("note", "looking <now>")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "no CSRF token");
    let r = admin
        .post_form(
            &url,
            &[
                ("csrf", &csrf),
                ("action", "acknowledge"),
                ("note", "looking <now>"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (_, html) = page(&admin, &url).await;
    assert!(html.contains(&format!("by {ADMIN}</dd>")), "{html}");
    assert!(
        html.contains("<dd id=\"note\">looking &#60;now&#62;</dd>")
            || html.contains("<dd id=\"note\">looking &lt;now&gt;</dd>"),
        "the note is escaped: {html}"
    );
    assert!(html.contains("<dd id=\"resolved\">no</dd>"));

    let r = admin
        .post_form(
            &url,
            &[("csrf", &csrf), ("action", "resolve"), ("note", "")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let row = app.state.db.security_event(id).await.unwrap().unwrap();
    assert_eq!(row.acknowledged_by.as_deref(), Some(admin_id.as_str()));
    assert_eq!(row.resolved_by.as_deref(), Some(admin_id.as_str()));
    assert!(row.resolved_at.unwrap() >= row.acknowledged_at.unwrap());
    assert_eq!(
        row.note.as_deref(),
        Some("looking <now>"),
        "an empty note keeps the last"
    );
    let (_, list) = page(&admin, "/security?range=1h").await;
    assert!(list.contains("<td>resolved</td>"));

    for (form, status) in [
        (
            vec![("csrf", csrf.as_str()), ("action", "delete")],
            StatusCode::BAD_REQUEST,
        ),
        (
            vec![
                ("csrf", csrf.as_str()),
                ("action", "resolve"),
                ("note", &"x".repeat(2_001)),
            ],
            StatusCode::BAD_REQUEST,
        ),
    ] {
        assert_eq!(admin.post_form(&url, &form).await.status(), status);
    }
    let r = admin
        .post_form(
            "/security/events/999999",
            &[("csrf", &csrf), ("action", "resolve")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn revoking_every_token_of_a_user_or_client_asks_first_then_ends_them() {
    let app = app().await;
    let (_, admin) = signed_in(&app, ADMIN, true).await;
    let tokens = app.tokens_for_new_client(ALICE).await;
    let alice_id = app
        .state
        .db
        .find_user_by_email(ALICE)
        .await
        .unwrap()
        .unwrap()
        .id;
    let works = |token: String| {
        let app = &app;
        async move {
            app.mcp_send(Some(&token), None, &initialize(1))
                .await
                .status
        }
    };
    assert_eq!(works(tokens.access_token.clone()).await, StatusCode::OK);

    let url = format!("/security/revoke?user={alice_id}");
    let (status, html) = page(&admin, &url).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("holds 1 live grant(s)"), "{html}");
    assert!(html.contains(ALICE));
    let csrf = hidden_field(&html, "csrf").unwrap();
    let r = admin
        .post_form("/security/revoke", &[("csrf", &csrf), ("user", &alice_id)])
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "not confirmed");
    assert_eq!(works(tokens.access_token.clone()).await, StatusCode::OK);

    let r = admin
        .post_form(
            "/security/revoke",
            &[("csrf", &csrf), ("user", &alice_id), ("confirm", "yes")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().contains("Revoked 1 grant(s)"));
    assert_eq!(
        works(tokens.access_token.clone()).await,
        StatusCode::UNAUTHORIZED
    );
    let refreshed = app
        .refresh_as(&tokens.auth, &tokens.refresh_token, &[])
        .await;
    assert_eq!(refreshed.status(), StatusCode::BAD_REQUEST, "invalid_grant");

    // By client: every user's tokens for it.
    let bob = app.tokens_for_new_client("bob@example.com").await;
    assert_eq!(works(bob.access_token.clone()).await, StatusCode::OK);
    let (_, html) = page(
        &admin,
        &format!("/security/revoke?client={}", bob.client_id),
    )
    .await;
    assert!(html.contains("holds 1 live grant(s)"), "{html}");
    let r = admin
        .post_form(
            "/security/revoke",
            &[
                ("csrf", &csrf),
                ("client", &bob.client_id),
                ("confirm", "yes"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        works(bob.access_token.clone()).await,
        StatusCode::UNAUTHORIZED
    );

    assert_eq!(
        admin.get("/security/revoke?user=nobody").await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        admin.get("/security/revoke").await.status(),
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn the_live_feed_pushes_the_panels_again_when_an_event_arrives() {
    let app = app().await;
    let (_, admin) = signed_in(&app, ADMIN, true).await;
    probe(&app, "203.0.113.5", "/.git/config").await;
    stored_events(&app, 1).await;
    let mut live = admin.get("/security/live?range=1h").await;
    assert_eq!(live.status(), StatusCode::OK);
    assert!(
        live.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut seen = String::new();
    let mut next_panels = async |seen: &mut String, wanted: &str| {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while !seen.contains(wanted) {
            let chunk = tokio::time::timeout_at(deadline, live.chunk())
                .await
                .unwrap_or_else(|_| panic!("no panels with {wanted:?}: {seen}"))
                .unwrap()
                .expect("the stream stays open");
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    next_panels(&mut seen, "203.0.113.5").await;
    assert!(seen.contains("event: panels"));
    probe(&app, "203.0.113.77", "/.env").await;
    next_panels(&mut seen, "203.0.113.77").await;
}
