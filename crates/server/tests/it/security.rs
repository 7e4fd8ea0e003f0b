//! Security monitoring (issue 8): each detector driven by real HTTP traffic, with the event,
//! its level and score, and the answer the attacker got.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use serde_json::{Value, json};

use mcp_oauth_store::{SecurityEventRow, SecurityFilter};

use crate::helpers::{Browser, PASSWORD, Pkce, TestApp, initialize, spawn_app_with};

const EMAIL: &str = "alice@example.com";
const REDIRECT: &str = "http://127.0.0.1:7777/callback";

/// A server behind a trusted proxy on loopback (so browsers can come from other addresses),
/// storing events every 50 ms, with millisecond sign-in delays, no sign-in rate limit and no
/// automatic blocks.
async fn app() -> TestApp {
    spawn_app_with(|raw| {
        raw.trusted_proxies = vec!["127.0.0.1/32".into()];
        raw.analytics.flush_interval_ms = 50;
        raw.login.base_delay_ms = 1;
        raw.login.max_delay_ms = 5;
        // The detectors' tests send more sign-ins from one address than its rate limit lets
        // through, and count every checked guess (the limit and the quick-login check have
        // their own tests).
        raw.rate_limits.sign_in_per_minute = 0;
        raw.login.quick_login_check_ms = 0;
        // Nor do they want the attacking addresses blocked (blocks have their own tests).
        raw.security.auto_block = false;
    })
    .await
}

/// Every stored event, oldest first.
async fn all_events(app: &TestApp) -> Vec<SecurityEventRow> {
    let filter = SecurityFilter {
        from: 0,
        to: i64::MAX,
        ..SecurityFilter::default()
    };
    let mut rows = app
        .state
        .db
        .security_events(&filter, 100_000)
        .await
        .unwrap();
    rows.reverse();
    rows
}

/// The stored events once `done` holds for them (the writer stores in the background).
async fn events_when(
    app: &TestApp,
    done: impl Fn(&[SecurityEventRow]) -> bool,
) -> Vec<SecurityEventRow> {
    for _ in 0..200 {
        let rows = all_events(app).await;
        if done(&rows) {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("events never matched: {:#?}", all_events(app).await);
}

fn of_kind<'a>(rows: &'a [SecurityEventRow], kind: &str) -> Vec<&'a SecurityEventRow> {
    rows.iter().filter(|r| r.kind == kind).collect()
}

fn count(rows: &[SecurityEventRow], kind: &str) -> usize {
    of_kind(rows, kind).len()
}

/// Events written so far settle: after `quiet`, nothing new arrives.
async fn settled(app: &TestApp) -> Vec<SecurityEventRow> {
    let mut last = all_events(app).await.len();
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let rows = all_events(app).await;
        if rows.len() == last {
            return rows;
        }
        last = rows.len();
    }
}

#[tokio::test]
async fn twenty_wrong_passwords_are_a_brute_force_and_lock_the_account() {
    let app = app().await;
    let user_id = app.create_user(EMAIL, false).await;
    let attacker = Browser::from_ip(&app, "198.51.100.7");
    let mut statuses = Vec::new();
    for i in 0..20 {
        let r = attacker.login(EMAIL, &format!("guess {i}")).await;
        statuses.push(r.status());
    }
    // Ten checked (the tenth locks this address out of the account), ten refused unchecked,
    // all with the same answer; which is which shows in the events' reasons below.
    let limit = app.state.settings.login.account_ip_lockout_after as usize;
    assert_eq!(limit, 10);
    assert!(
        statuses.iter().all(|s| *s == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );

    let rows = events_when(&app, |r| {
        count(r, "sign_in_failed") == 20 && count(r, "brute_force_ip") == 1
    })
    .await;
    let failed = of_kind(&rows, "sign_in_failed");
    assert!(failed.iter().all(|e| e.level == "notice" && e.score == 20));
    assert!(
        failed
            .iter()
            .all(|e| e.ip.as_deref() == Some("198.51.100.7"))
    );
    assert!(
        failed
            .iter()
            .all(|e| e.user_id.as_deref() == Some(user_id.as_str()))
    );
    let reasons: Vec<&str> = failed
        .iter()
        .map(|e| e.evidence["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons[..limit], ["wrong_password"; 10]);
    assert_eq!(reasons[limit..], ["locked"; 10]);
    assert_eq!(failed[0].evidence["account"], EMAIL);

    // Reported at the threshold and at its doubling, scored by the rubric.
    let brute: Vec<(i64, &str, i64)> = of_kind(&rows, "brute_force_account")
        .iter()
        .map(|e| {
            (
                e.evidence["failures"].as_i64().unwrap(),
                e.level.as_str(),
                e.score,
            )
        })
        .collect();
    assert_eq!(brute, [(10, "warning", 75), (20, "critical", 80)]);
    let by_ip = of_kind(&rows, "brute_force_ip");
    assert_eq!((by_ip[0].score, by_ip[0].level.as_str()), (80, "critical"));

    let locked = of_kind(&rows, "account_locked");
    assert_eq!(locked.len(), 1, "one lock, reported once");
    assert_eq!((locked[0].level.as_str(), locked[0].score), ("warning", 50));
    assert_eq!(locked[0].user_id.as_deref(), Some(user_id.as_str()));
    assert_eq!(locked[0].evidence["failures"], 10);
    // No secret is kept: not one of the guessed passwords appears anywhere.
    let stored =
        serde_json::to_string(&rows.iter().map(|r| &r.evidence).collect::<Vec<_>>()).unwrap();
    assert!(!stored.contains("guess"), "{stored}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_parallel_wrong_passwords_lock_and_report_exactly_as_sequential_ones() {
    let app = app().await;
    app.create_user(EMAIL, false).await;
    let attacker = Browser::from_ip(&app, "198.51.100.8");
    let page = attacker.get("/login").await.text().await.unwrap();
    let csrf = crate::helpers::hidden_field(&page, "csrf").unwrap();
    let guesses: Vec<_> = (0..50)
        .map(|i| {
            let (browser, csrf) = (attacker.clone(), csrf.clone());
            tokio::spawn(async move {
                let password = format!("parallel guess {i}");
                browser
                    .post_form(
                        "/login",
                        &[("email", EMAIL), ("password", &password), ("csrf", &csrf)],
                    )
                    .await
                    .status()
            })
        })
        .collect();
    for g in guesses {
        assert_eq!(g.await.unwrap(), StatusCode::UNAUTHORIZED, "one answer");
    }
    let rows = events_when(&app, |r| count(r, "sign_in_failed") == 50).await;
    let checked = of_kind(&rows, "sign_in_failed")
        .iter()
        .filter(|e| e.evidence["reason"] == "wrong_password")
        .count();
    assert_eq!(checked, 10, "exactly the limit is checked");
    let rows = {
        let _ = rows;
        settled(&app).await
    };
    assert_eq!(
        count(&rows, "account_locked"),
        1,
        "one lock, whatever the interleaving"
    );
    let stages: Vec<i64> = of_kind(&rows, "brute_force_account")
        .iter()
        .map(|e| e.evidence["failures"].as_i64().unwrap())
        .collect();
    assert_eq!(stages, [10, 20, 40]);
    assert_eq!(
        of_kind(&rows, "sign_in_failed")
            .iter()
            .filter(|e| e.evidence["reason"] == "wrong_password")
            .count(),
        10
    );
}

#[tokio::test]
async fn failures_on_many_accounts_from_one_address_are_credential_stuffing() {
    let app = app().await;
    let stuffer = Browser::from_ip(&app, "198.51.100.9");
    for i in 0..5 {
        stuffer
            .login(&format!("victim{i}@example.com"), "hunter2")
            .await;
    }
    let rows = events_when(&app, |r| count(r, "credential_stuffing") == 1).await;
    let e = of_kind(&rows, "credential_stuffing")[0];
    assert_eq!(
        (e.level.as_str(), e.score, e.evidence["accounts"].as_i64()),
        ("critical", 90, Some(5))
    );
    // Unknown accounts are not named: a mistyped email may be someone's password.
    let failed = of_kind(&rows, "sign_in_failed");
    assert!(
        failed
            .iter()
            .all(|e| e.evidence["reason"] == "unknown_account")
    );
    assert!(failed.iter().all(|e| e.evidence.get("account").is_none()));
}

#[tokio::test]
async fn a_replayed_code_is_a_critical_event_and_its_tokens_stop_working() {
    let app = app().await;
    let client_id = app.register_public_client(REDIRECT).await;
    let browser = app.signed_in_browser("bob@example.com").await;
    let pkce = Pkce::new();
    let code = app
        .get_code(&browser, &client_id, REDIRECT, &pkce, &[])
        .await;
    let first: Value = app
        .exchange(&client_id, &code, REDIRECT, &pkce)
        .await
        .json()
        .await
        .unwrap();
    let access = first["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        app.mcp_send(Some(&access), None, &initialize(1))
            .await
            .status,
        StatusCode::OK
    );

    let replay = app.exchange(&client_id, &code, REDIRECT, &pkce).await;
    assert_eq!(replay.status(), StatusCode::BAD_REQUEST);
    let after = app.mcp_send(Some(&access), None, &initialize(2)).await;
    assert_eq!(
        after.status,
        StatusCode::UNAUTHORIZED,
        "the token from the replayed code is dead"
    );

    let rows = events_when(&app, |r| {
        count(r, "code_replay") == 1 && count(r, "revoked_token") == 1
    })
    .await;
    let e = of_kind(&rows, "code_replay")[0];
    assert_eq!((e.level.as_str(), e.score), ("critical", 90));
    assert_eq!(e.client_id.as_deref(), Some(client_id.as_str()));
    assert!(e.user_id.is_some(), "the grant's user is named");
    assert_eq!(e.evidence["grant_revoked"], true);
    assert!(e.request_id.is_some());
    let revoked = of_kind(&rows, "revoked_token")[0];
    assert_eq!((revoked.level.as_str(), revoked.score), ("warning", 50));
    assert_eq!(
        revoked.evidence["token_id"],
        crate::helpers::jwt_claims(&access)["jti"]
    );
    assert!(
        !serde_json::to_string(&rows.iter().map(|r| &r.evidence).collect::<Vec<_>>())
            .unwrap()
            .contains(&code),
        "the code itself is never stored"
    );
}

#[tokio::test]
async fn a_wrong_verifier_and_a_wrong_redirect_at_the_token_endpoint_are_reported() {
    let app = app().await;
    let client_id = app.register_public_client(REDIRECT).await;
    let browser = app.signed_in_browser("carol@example.com").await;
    let pkce = Pkce::new();
    let code = app
        .get_code(&browser, &client_id, REDIRECT, &pkce, &[])
        .await;
    let wrong = Pkce::new();
    assert_eq!(
        app.exchange(&client_id, &code, REDIRECT, &wrong)
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );
    let elsewhere = "http://127.0.0.1:7777/elsewhere";
    assert_eq!(
        app.exchange(&client_id, &code, elsewhere, &pkce)
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );
    let rows = events_when(&app, |r| {
        count(r, "pkce_mismatch") == 1 && count(r, "redirect_mismatch") == 1
    })
    .await;
    assert_eq!(of_kind(&rows, "pkce_mismatch")[0].score, 60);
    let r = of_kind(&rows, "redirect_mismatch")[0];
    assert_eq!(
        (
            r.evidence["step"].as_str(),
            r.evidence["redirect_uri"].as_str()
        ),
        (Some("token"), Some(elsewhere))
    );

    // At /authorize, an unregistered redirect URI is refused on our page and reported.
    let url = app.authorize_url(&client_id, "https://evil.example/cb", &Pkce::new(), &[]);
    assert_eq!(
        app.authorize(&browser, &url).await.status(),
        StatusCode::BAD_REQUEST
    );
    let rows = events_when(&app, |r| count(r, "redirect_mismatch") == 2).await;
    assert_eq!(
        of_kind(&rows, "redirect_mismatch")[1].evidence["redirect_uri"],
        "https://evil.example/cb"
    );
}

/// A JWT with our header shape, `kid`, and a signature that is not ours.
fn forged(kid: &str, claims: &Value) -> String {
    let header = json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid});
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.{}",
        b64(&header),
        b64(claims),
        URL_SAFE_NO_PAD.encode([7u8; 64])
    )
}

#[tokio::test]
async fn forged_expired_and_foreign_tokens_are_each_their_own_event() {
    let app = app().await;
    // A first request without a token is discovery, not an attack: no event.
    assert_eq!(
        app.mcp_send(None, None, &initialize(1)).await.status,
        StatusCode::UNAUTHORIZED
    );

    let claims = json!({"iss": app.url, "sub": "x", "aud": app.mcp_resource(), "client_id": "c",
        "scope": "mcp", "exp": app.clock.now() + 600, "iat": app.clock.now(), "jti": "j1"});
    let unknown_kid = forged("not-a-key-of-ours", &claims);
    assert_eq!(
        app.mcp_send(Some(&unknown_kid), None, &initialize(1))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );

    // One of our tokens with its signature replaced.
    let real = app.mint_access_token(|_| {});
    let mut parts: Vec<&str> = real.split('.').collect();
    let bad_sig = URL_SAFE_NO_PAD.encode([9u8; 64]);
    parts[2] = &bad_sig;
    let tampered = parts.join(".");
    assert_eq!(
        app.mcp_send(Some(&tampered), None, &initialize(1))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );

    let foreign = app.mint_access_token(|c| c.aud = "https://other.example/mcp".into());
    assert_eq!(
        app.mcp_send(Some(&foreign), None, &initialize(1))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let expired = app.mint_access_token(|c| c.exp = c.iat - 60);
    assert_eq!(
        app.mcp_send(Some(&expired), None, &initialize(1))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.mcp_send(Some("garbage"), None, &initialize(1))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );

    let rows = events_when(&app, |r| r.len() >= 5).await;
    let rows = {
        let _ = rows;
        settled(&app).await
    };
    let summary: Vec<(&str, &str, i64, Option<&str>)> = rows
        .iter()
        .map(|e| {
            let reason = e.evidence.get("reason").and_then(Value::as_str);
            (e.kind.as_str(), e.level.as_str(), e.score, reason)
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("forged_token", "critical", 90, Some("unknown_key_id")),
            ("forged_token", "critical", 90, Some("bad_signature")),
            ("token_for_other_resource", "warning", 70, None),
            ("expired_token", "info", 5, None),
            ("invalid_token", "notice", 20, Some("not_our_jwt")),
        ]
    );
    assert_eq!(rows[0].evidence["key_id"], "not-a-key-of-ours");
    assert_eq!(rows[2].evidence["audience"], "https://other.example/mcp");
    assert_eq!(rows[2].client_id.as_deref(), Some("minted-client"));
}

#[tokio::test]
async fn a_metadata_document_url_resolving_to_loopback_is_refused_and_recorded() {
    let app = app().await; // `cimd.allow_loopback` is off, as in production
    let client_id = "https://localhost:9/client.json";
    let browser = app.signed_in_browser("dave@example.com").await;
    let url = app.authorize_url(client_id, REDIRECT, &Pkce::new(), &[]);
    let r = app.authorize(&browser, &url).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let page = r.text().await.unwrap();
    assert!(
        page.contains("could not be fetched"),
        "the answer names no address: {page}"
    );
    assert!(!page.contains("127.0.0.1"));

    let rows = events_when(&app, |r| count(r, "metadata_document_private_address") == 1).await;
    let e = of_kind(&rows, "metadata_document_private_address")[0];
    assert_eq!((e.level.as_str(), e.score), ("critical", 80));
    assert_eq!(e.evidence["url"], client_id);
    assert!(
        e.evidence["address"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1"),
        "{:?}",
        e.evidence
    );
}

#[tokio::test]
async fn probe_paths_and_many_missing_paths_are_a_scanner() {
    let app = app().await;
    let get = |path: &'static str| {
        let http = app.http.clone();
        let url = format!("{}{path}", app.url);
        async move {
            http.get(url)
                .header("x-forwarded-for", "203.0.113.50")
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(get("/.env").await, StatusCode::NOT_FOUND);
    let rows = events_when(&app, |r| count(r, "scanner") == 1).await;
    let e = of_kind(&rows, "scanner")[0];
    assert_eq!(
        (e.level.as_str(), e.score, e.ip.as_deref()),
        ("notice", 25, Some("203.0.113.50"))
    );
    assert_eq!(e.evidence["path"], "/.env");
    for _ in 0..20 {
        assert_eq!(get("/no-such-page").await, StatusCode::NOT_FOUND);
    }
    let rows = events_when(&app, |r| count(r, "scanner") == 2).await;
    assert_eq!(of_kind(&rows, "scanner")[1].evidence["repeats"], 20);
}

#[tokio::test]
async fn a_form_posted_without_its_csrf_token_is_reported() {
    let app = app().await;
    let browser = Browser::new(&app);
    browser.get("/login").await;
    let r = browser
        .post_form("/login", &[("email", EMAIL), ("password", PASSWORD)])
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let rows = events_when(&app, |r| count(r, "csrf_failure") == 1).await;
    let e = of_kind(&rows, "csrf_failure")[0];
    assert_eq!(
        (e.evidence["form"].as_str(), e.evidence["check"].as_str()),
        (Some("sign_in"), Some("missing_token"))
    );
    assert_eq!(count(&rows, "sign_in_failed"), 0, "no password was checked");
}

#[tokio::test]
async fn security_events_can_be_turned_off() {
    let app = spawn_app_with(|raw| {
        raw.security.enabled = false;
        raw.analytics.flush_interval_ms = 50;
    })
    .await;
    app.http
        .get(format!("{}/.env", app.url))
        .send()
        .await
        .unwrap();
    Browser::new(&app).login("nobody@example.com", "x").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(all_events(&app).await.is_empty());
}

/// `mcp-oauth security events` on `app`'s database with `args`; its standard output.
async fn cli(app: &TestApp, args: &[&str]) -> String {
    let mut command = security_command(app);
    command.arg("events").args(args);
    let out = crate::helpers::output_of(command).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The binary on `app`'s database with a clean environment, at `mcp-oauth security`.
fn security_command(app: &TestApp) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_mcp-oauth"));
    c.env_clear()
        .env("MCP_OAUTH_DATABASE_URL", &app.database_url)
        .env(
            "MCP_OAUTH_KEYS__ENCRYPTION_KEY",
            crate::helpers::TEST_ENCRYPTION_KEY,
        )
        .arg("security");
    c
}

#[tokio::test]
async fn the_command_line_prints_one_json_object_per_event_with_filters() {
    let app = app().await;
    let user_id = app.create_user(EMAIL, false).await;
    Browser::from_ip(&app, "198.51.100.20")
        .login(EMAIL, "wrong")
        .await;
    app.http
        .get(format!("{}/.git/config", app.url))
        .header("x-forwarded-for", "203.0.113.60")
        .send()
        .await
        .unwrap();
    events_when(&app, |r| r.len() == 2).await;
    // The app's clock is a manual one: give the range around it.
    let at = |offset: i64| {
        mcp_oauth_core::analytics::summary::rfc3339((app.clock.now() + offset) * 1000)
    };
    let (from, to) = (at(-3600), at(3600));
    let range = ["--from", from.as_str(), "--to", to.as_str()];

    let all = cli(&app, &[&range[..], &["--json"]].concat()).await;
    let lines: Vec<Value> = all
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{all}");
    let signin = &lines[0];
    assert_eq!(signin["type"], "sign_in_failed");
    assert_eq!(signin["level"], "notice");
    assert_eq!(signin["score"], 20);
    assert_eq!(signin["ip"], "198.51.100.20");
    assert_eq!(signin["user"], EMAIL);
    assert_eq!(signin["user_id"], user_id.as_str());
    assert_eq!(signin["evidence"]["reason"], "wrong_password");
    assert!(signin["time"].as_str().unwrap().ends_with('Z'));
    assert!(signin.get("client_id").is_some());
    assert_eq!(lines[1]["type"], "scanner");

    let scanners = cli(
        &app,
        &[&range[..], &["--json", "--type", "scanner"]].concat(),
    )
    .await;
    assert_eq!(scanners.lines().count(), 1);
    let by_user = cli(&app, &[&range[..], &["--json", "--user", EMAIL]].concat()).await;
    assert_eq!(by_user.lines().count(), 1);
    let by_ip = cli(&app, &[&range[..], &["--ip", "203.0.113.60"]].concat()).await;
    assert!(
        by_ip.contains("scanner") && by_ip.contains("ip=203.0.113.60"),
        "{by_ip}"
    );
    assert!(
        cli(&app, &[&range[..], &["--level", "warning"]].concat())
            .await
            .is_empty()
    );

    let (ok, said) = security_cli(&app, &["events", "--type", "nope"]).await;
    assert!(!ok);
    assert!(said.contains("code_replay"), "the error lists the types");
}

fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header in {headers:?}"))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn mcp_requests_past_the_quota_get_429_with_ratelimit_headers_per_client_user_and_address() {
    let app = spawn_app_with(|raw| {
        raw.analytics.flush_interval_ms = 50;
        raw.rate_limits.mcp_per_minute = 5;
    })
    .await;
    let alice = app.mint_access_token(|c| c.sub = "alice".into());
    let bob = app.mint_access_token(|c| c.sub = "bob".into());
    for left in (0..5).rev() {
        let r = app.mcp_send(Some(&alice), None, &initialize(1)).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(
            header(&r.headers, "ratelimit-policy"),
            "\"mcp\";q=5;w=60;pk=\"client+user+ip\""
        );
        assert!(
            header(&r.headers, "ratelimit").starts_with(&format!("\"mcp\";r={left};t=")),
            "{:?}",
            r.headers
        );
    }
    let refused = app.mcp_send(Some(&alice), None, &initialize(2)).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = header(&refused.headers, "retry-after").parse().unwrap();
    assert!(
        (1..=12).contains(&retry),
        "one request comes back every 12 s: {retry}"
    );
    assert_eq!(
        header(&refused.headers, "ratelimit"),
        format!("\"mcp\";r=0;t={retry}")
    );
    let body: Value = serde_json::from_str(&refused.body).unwrap();
    assert_eq!(body["error"]["data"]["reason"], "rate_limited");
    assert_eq!(body["error"]["code"], -32000);

    // Another user of the same client, from the same address, has a quota of their own.
    let r = app.mcp_send(Some(&bob), None, &initialize(1)).await;
    assert_eq!(r.status, StatusCode::OK);

    // Reported at the first refusal and at each doubling, not per request.
    for _ in 0..3 {
        app.mcp_send(Some(&alice), None, &initialize(3)).await;
    }
    let rows = events_when(&app, |r| count(r, "rate_limited") == 3).await;
    let repeats: Vec<i64> = of_kind(&rows, "rate_limited")
        .iter()
        .map(|e| e.evidence["repeats"].as_i64().unwrap())
        .collect();
    assert_eq!(repeats, [1, 2, 4]);
    let first = of_kind(&rows, "rate_limited")[0];
    assert_eq!(first.evidence["endpoint"], "mcp");
    assert_eq!(first.user_id.as_deref(), Some("alice"));
    assert_eq!(first.client_id.as_deref(), Some("minted-client"));
    assert_eq!((first.level.as_str(), first.score), ("notice", 30));
}

#[tokio::test]
async fn the_token_endpoint_and_the_sign_in_form_are_limited_per_client_and_address() {
    let app = spawn_app_with(|raw| {
        raw.trusted_proxies = vec!["127.0.0.1/32".into()];
        raw.rate_limits.token_per_minute = 3;
        raw.rate_limits.sign_in_per_minute = 2;
    })
    .await;
    let token = |client: &'static str| {
        let http = app.http.clone();
        let url = format!("{}/token", app.url);
        async move {
            http.post(url)
                .form(&[
                    ("grant_type", "refresh_token"),
                    ("client_id", client),
                    ("refresh_token", "x"),
                ])
                .send()
                .await
                .unwrap()
        }
    };
    for _ in 0..3 {
        let r = token("one").await;
        assert_eq!(
            r.status(),
            StatusCode::UNAUTHORIZED,
            "an unknown client, but counted"
        );
    }
    let r = token("one").await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(
        header(r.headers(), "ratelimit-policy"),
        "\"token\";q=3;w=60;pk=\"client+ip\""
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "slow_down");
    assert_eq!(
        token("two").await.status(),
        StatusCode::UNAUTHORIZED,
        "another client is not held back"
    );

    let browser = Browser::from_ip(&app, "198.51.100.30");
    for _ in 0..2 {
        assert_eq!(
            browser.login(EMAIL, "x").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let r = browser.login(EMAIL, "x").await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
    let elsewhere = Browser::from_ip(&app, "198.51.100.31");
    assert_eq!(
        elsewhere.login(EMAIL, "x").await.status(),
        StatusCode::UNAUTHORIZED
    );
}

/// `mcp-oauth security <args>` on `app`'s database: whether it succeeded, and its output.
async fn security_cli(app: &TestApp, args: &[&str]) -> (bool, String) {
    let mut command = security_command(app);
    command.args(args);
    let out = crate::helpers::output_of(command).await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `GET /healthz`-like probe of `/.well-known/oauth-authorization-server` from `ip`.
async fn status_from(app: &TestApp, ip: &str) -> (StatusCode, Option<String>) {
    let r = app
        .http
        .get(format!(
            "{}/.well-known/oauth-authorization-server",
            app.url
        ))
        .header("x-forwarded-for", ip)
        .send()
        .await
        .unwrap();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (r.status(), retry)
}

/// Wait until `ip`'s requests to `app` get `status`.
async fn until_status(app: &TestApp, ip: &str, status: StatusCode) -> Option<String> {
    for _ in 0..100 {
        let (s, retry) = status_from(app, ip).await;
        if s == status {
            return retry;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{ip} never got {status} from {}", app.url);
}

async fn blocking_app() -> TestApp {
    spawn_app_with(|raw| {
        raw.trusted_proxies = vec!["127.0.0.1/32".into()];
        raw.analytics.flush_interval_ms = 50;
        raw.login.base_delay_ms = 1;
        raw.login.max_delay_ms = 5;
        raw.security.allow_cidrs = vec!["192.0.2.0/24".into()];
    })
    .await
}

#[tokio::test]
async fn credential_stuffing_blocks_the_address_on_every_instance_longer_each_time() {
    let app = blocking_app().await;
    let second = crate::helpers::try_second_instance_with(&app, |raw| {
        raw.trusted_proxies = vec!["127.0.0.1/32".into()];
    })
    .await
    .unwrap();
    let stuffer = "198.51.100.40";
    let browser = Browser::from_ip(&app, stuffer);
    for i in 0..5 {
        browser
            .login(&format!("victim{i}@example.com"), "hunter2")
            .await;
    }
    // Refused at once here, for the first block's five minutes, and on the other instance
    // once it has read the block from the database.
    let retry = until_status(&app, stuffer, StatusCode::FORBIDDEN).await;
    assert_eq!(retry.as_deref(), Some("300"));
    until_status(&second, stuffer, StatusCode::FORBIDDEN).await;
    assert_eq!(
        status_from(&app, "198.51.100.41").await.0,
        StatusCode::OK,
        "others pass"
    );
    let rows = events_when(&app, |r| count(r, "ip_blocked") == 1).await;
    let e = of_kind(&rows, "ip_blocked")[0];
    assert_eq!((e.level.as_str(), e.score), ("warning", 50));
    assert_eq!(e.ip.as_deref(), Some(stuffer));
    assert_eq!(
        (e.evidence["reason"].as_str(), e.evidence["by"].as_str()),
        (Some("credential_stuffing"), Some("auto"))
    );

    let (ok, listed) = security_cli(&app, &["blocks", "--json"]).await;
    assert!(ok, "{listed}");
    let block: Value = serde_json::from_str(listed.lines().next().unwrap()).unwrap();
    assert_eq!(
        (block["ip"].as_str(), block["strikes"].as_i64()),
        (Some(stuffer), Some(1))
    );

    let (ok, said) = security_cli(&app, &["unblock", stuffer]).await;
    assert!(ok, "{said}");
    until_status(&app, stuffer, StatusCode::OK).await;
    until_status(&second, stuffer, StatusCode::OK).await;
    assert!(
        !security_cli(&app, &["unblock", stuffer]).await.0,
        "not blocked any more"
    );

    // Again within the day: four times as long.
    let browser = Browser::from_ip(&app, stuffer);
    for i in 5..10 {
        browser
            .login(&format!("victim{i}@example.com"), "hunter2")
            .await;
    }
    // The block holds at once for the first length; once its strikes are read from the
    // database (the second `ip_blocked` event), for four times as long.
    until_status(&app, stuffer, StatusCode::FORBIDDEN).await;
    let rows = events_when(&app, |r| count(r, "ip_blocked") == 2).await;
    let until = of_kind(&rows, "ip_blocked")[1].evidence["until"]
        .as_i64()
        .unwrap();
    assert_eq!(until - app.clock.now_millis(), 1_200_000);
    let (status, retry) = status_from(&app, stuffer).await;
    assert_eq!(
        (status, retry.as_deref()),
        (StatusCode::FORBIDDEN, Some("1200"))
    );
}

#[tokio::test]
async fn operators_block_and_unblock_addresses_but_never_loopback_proxies_or_the_allow_list() {
    let app = blocking_app().await;
    let (ok, said) =
        security_cli(&app, &["block", "203.0.113.70", "--reason", "abuse report"]).await;
    assert!(ok && said.contains("until unblocked"), "{said}");
    let retry = until_status(&app, "203.0.113.70", StatusCode::FORBIDDEN).await;
    assert_eq!(retry, None, "no end to announce");
    let rows = events_when(&app, |r| count(r, "ip_blocked") == 1).await;
    let blocked = of_kind(&rows, "ip_blocked")[0];
    assert_eq!(blocked.ip.as_deref(), Some("203.0.113.70"));
    assert_eq!(blocked.evidence["by"], "operator");
    assert_eq!(blocked.evidence["reason"], "abuse report");
    assert!(blocked.evidence["until"].is_null());
    assert_eq!(blocked.level, "warning");

    for allowed in ["192.0.2.9", "127.0.0.1"] {
        let (ok, said) = security_cli(&app, &["block", allowed, "--minutes", "5"]).await;
        assert!(ok, "{said}");
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        status_from(&app, "192.0.2.9").await.0,
        StatusCode::OK,
        "allow list wins"
    );
    let direct = app
        .http
        .get(format!(
            "{}/.well-known/oauth-authorization-server",
            app.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        direct.status(),
        StatusCode::OK,
        "loopback (and the proxy) are never blocked"
    );

    let (ok, said) = security_cli(&app, &["block", "not-an-ip"]).await;
    assert!(!ok && said.contains("not an IP address"), "{said}");
    let (ok, said) = security_cli(&app, &["unblock", "203.0.113.70"]).await;
    assert!(ok, "{said}");
    until_status(&app, "203.0.113.70", StatusCode::OK).await;
}

/// What a webhook receiver on loopback got: each request's headers and body. The first
/// request to `/flaky` is answered 500.
#[derive(Clone, Default)]
struct Received(
    std::sync::Arc<std::sync::Mutex<Vec<(String, reqwest::header::HeaderMap, String)>>>,
);

async fn webhook_receiver() -> (String, Received) {
    use axum::extract::{Path, State};
    let received = Received::default();
    let app = axum::Router::new()
        .route(
            "/{name}",
            axum::routing::post(
                |State(r): State<Received>,
                 Path(name): Path<String>,
                 headers: axum::http::HeaderMap,
                 body: String| async move {
                    let mut seen = r.0.lock().unwrap();
                    let first = !seen.iter().any(|(n, ..)| *n == name);
                    let mut copied = reqwest::header::HeaderMap::new();
                    for (k, v) in &headers {
                        copied.insert(k.clone(), v.clone());
                    }
                    seen.push((name.clone(), copied, body));
                    if name == "flaky" && first {
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        axum::http::StatusCode::NO_CONTENT
                    }
                },
            ),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), received)
}

#[tokio::test]
async fn alerts_are_signed_retried_after_a_500_and_sent_once_per_repeat_window() {
    let (receiver, received) = webhook_receiver().await;
    let key = b"a webhook secret of 32 bytes....";
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    );
    let app = spawn_app_with(|raw| {
        raw.security.alert_retry_base_ms = 50;
        raw.security.webhooks = vec![
            mcp_oauth::config::WebhookSettings {
                url: format!("{receiver}/flaky"),
                secret: Some(secret.into()),
                format: "json".into(),
                min_level: "warning".into(),
            },
            mcp_oauth::config::WebhookSettings {
                url: format!("{receiver}/slack"),
                secret: None,
                format: "slack".into(),
                min_level: "critical".into(),
            },
        ];
    })
    .await;
    let claims = json!({"iss": app.url, "sub": "x", "aud": app.mcp_resource(), "client_id": "c",
        "scope": "mcp", "exp": app.clock.now() + 600, "iat": app.clock.now(), "jti": "j1"});
    // A critical event, the same again (held back), and a notice (below both levels).
    for _ in 0..2 {
        let forged_token = forged("no-such-key", &claims);
        app.mcp_send(Some(&forged_token), None, &initialize(1))
            .await;
    }
    app.http
        .get(format!("{}/.env", app.url))
        .send()
        .await
        .unwrap();

    let deliveries = || received.0.lock().unwrap().clone();
    for _ in 0..200 {
        if deliveries().len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = deliveries();
    let flaky: Vec<_> = got.iter().filter(|(n, ..)| n == "flaky").collect();
    let slack: Vec<_> = got.iter().filter(|(n, ..)| n == "slack").collect();
    assert_eq!(
        flaky.len(),
        2,
        "one alert, retried once after the 500: {got:#?}"
    );
    assert_eq!(slack.len(), 1, "the repeat is held back");

    let (_, first, _) = flaky[0];
    let (_, retry, body) = flaky[1];
    assert_eq!(
        first["webhook-id"], retry["webhook-id"],
        "a retry is the same message"
    );
    let alert: Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        (alert["type"].as_str(), alert["level"].as_str()),
        (Some("forged_token"), Some("critical"))
    );
    assert_eq!(alert["evidence"]["key_id"], "no-such-key");
    assert_eq!(alert["id"], retry["webhook-id"].to_str().unwrap());

    // The receiver's check (Standard Webhooks): HMAC-SHA256 of "{id}.{timestamp}.{body}".
    let id = retry["webhook-id"].to_str().unwrap();
    let timestamp = retry["webhook-timestamp"].to_str().unwrap();
    let signature = retry["webhook-signature"].to_str().unwrap();
    let signing = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
    let expected = aws_lc_rs::hmac::sign(&signing, format!("{id}.{timestamp}.{body}").as_bytes());
    assert_eq!(
        signature,
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(expected.as_ref())
        )
    );
    assert!(
        aws_lc_rs::hmac::verify(
            &signing,
            format!("{id}.{timestamp}.{body}x").as_bytes(),
            expected.as_ref()
        )
        .is_err(),
        "a changed body does not verify"
    );
    let (_, _, text) = slack[0];
    let text: Value = serde_json::from_str(text).unwrap();
    assert!(
        text["text"]
            .as_str()
            .unwrap()
            .starts_with("[critical] forged_token (score 90)"),
        "{text}"
    );
    assert!(
        got.iter().all(|(_, _, b)| !b.contains("scanner")),
        "a notice goes to neither destination"
    );
}

#[tokio::test]
async fn the_command_line_follows_new_events_as_any_instance_stores_them() {
    use std::io::{BufRead, BufReader};
    let app = app().await;
    let second = crate::helpers::spawn_second_instance(&app).await;
    let mut follower = security_command(&app)
        .args(["events", "--follow", "--json", "--type", "scanner"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run mcp-oauth");
    let stdout = follower.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Give the follower time to print the (empty) backlog and start polling.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    for (instance, path) in [(&app, "/.env"), (&second, "/.git/config")] {
        instance
            .http
            .get(format!("{}{path}", instance.url))
            .send()
            .await
            .unwrap();
    }
    events_when(&app, |r| count(r, "scanner") == 2).await;
    let mut paths = Vec::new();
    for _ in 0..2 {
        let Ok(line) = rx.recv_timeout(Duration::from_secs(10)) else {
            let _ = follower.kill();
            let out = follower.wait_with_output().unwrap();
            panic!(
                "no followed event; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let event: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(event["type"], "scanner");
        paths.push(event["evidence"]["path"].as_str().unwrap().to_owned());
    }
    paths.sort();
    assert_eq!(paths, ["/.env", "/.git/config"], "from both instances");
    assert!(
        rx.recv_timeout(Duration::from_millis(1_500)).is_err(),
        "each event is printed once"
    );
    let _ = follower.kill();
    let _ = follower.wait();
}

/// An MCP `initialize` with `token` from `ip`; the status.
async fn mcp_from(app: &TestApp, token: &str, ip: &str) -> StatusCode {
    app.http
        .post(format!("{}/mcp", app.url))
        .bearer_auth(token)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .header("x-forwarded-for", ip)
        .body(initialize(1).to_string())
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn a_user_seen_from_a_new_country_is_reported_once_per_country() {
    let geoip =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/test-country.mmdb");
    let app = spawn_app_with(move |raw| {
        raw.trusted_proxies = vec!["127.0.0.1/32".into()];
        raw.analytics.flush_interval_ms = 50;
        raw.analytics.geoip_database = Some(geoip);
        raw.security.auto_block = false;
    })
    .await;
    let user_id = app.create_user(EMAIL, false).await;
    // Signed in from Great Britain: the first country is no change.
    let gb = Browser::from_ip(&app, "81.2.69.160");
    assert_eq!(
        gb.login(EMAIL, PASSWORD).await.status(),
        StatusCode::SEE_OTHER
    );
    let client = app.register_public_client(REDIRECT).await;
    let auth = crate::helpers::ClientAuth::Public(client.clone());
    let tokens = app.tokens_for(&auth, &gb, REDIRECT, &[]).await;
    let token = tokens.access_token.as_str();
    assert_eq!(mcp_from(&app, token, "81.2.69.160").await, StatusCode::OK);
    assert_eq!(mcp_from(&app, token, "10.1.2.3").await, StatusCode::OK);

    // The token in Sweden: reported, with where the user was seen before.
    assert_eq!(mcp_from(&app, token, "89.160.20.112").await, StatusCode::OK);
    let rows = events_when(&app, |r| count(r, "new_country") == 1).await;
    let event = of_kind(&rows, "new_country")[0];
    assert_eq!(event.evidence["country"], "SE");
    assert_eq!(event.evidence["known_countries"], "GB");
    assert_eq!(event.user_id.as_deref(), Some(user_id.as_str()));
    assert_eq!(event.client_id.as_deref(), Some(client.as_str()));
    assert_eq!(event.ip.as_deref(), Some("89.160.20.112"));
    assert_eq!((event.level.as_str(), event.score), ("notice", 30));

    // Sweden again is known; a refresh from the United States is new.
    assert_eq!(mcp_from(&app, token, "89.160.20.112").await, StatusCode::OK);
    let refreshed = app
        .http
        .post(format!("{}/token", app.url))
        .header("x-forwarded-for", "216.160.83.56")
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", client.as_str()),
            ("refresh_token", tokens.refresh_token.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(refreshed.status(), StatusCode::OK);
    let rows = events_when(&app, |r| count(r, "new_country") == 2).await;
    let us = of_kind(&rows, "new_country")[1];
    assert_eq!(us.evidence["country"], "US");
    assert_eq!(us.evidence["known_countries"], "GB,SE");
    let rows = settled(&app).await;
    assert_eq!(count(&rows, "new_country"), 2, "Sweden was reported once");
}
