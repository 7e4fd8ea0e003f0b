//! `mcp-oauth demo traffic`: the real binary drives traffic through a running server's
//! endpoints, and the dashboard's summary then shows registrations, sign-ins and tool calls.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{Browser, PASSWORD, TestApp, spawn_app_with};

/// Run the binary with `args` against `app`'s database, off the async runtime (the server
/// it talks to runs on this test's runtime).
async fn run_binary(app: &TestApp, args: &[&str]) -> std::process::Output {
    let database_url = app.database_url.clone();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_mcp-oauth"))
            .env_clear()
            .env("MCP_OAUTH_DATABASE_URL", database_url)
            .env(
                "MCP_OAUTH_KEYS__ENCRYPTION_KEY",
                crate::helpers::TEST_ENCRYPTION_KEY,
            )
            .args(&args)
            .output()
            .expect("run mcp-oauth")
    })
    .await
    .unwrap()
}

async fn summary(app: &TestApp, admin: &Browser) -> Value {
    let now = app.clock.now();
    let fmt = |t: i64| mcp_oauth_core::analytics::summary::rfc3339(t * 1000);
    let r = admin
        .get(&format!(
            "{}/analytics/api/summary?from={}&to={}",
            app.url,
            fmt(now - 3600),
            fmt(now + 3600)
        ))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

#[tokio::test]
async fn demo_traffic_fills_the_dashboard_through_the_real_endpoints() {
    let app = spawn_app_with(|s| s.analytics.flush_interval_ms = 20).await;
    let out = run_binary(
        &app,
        &[
            "demo",
            "traffic",
            "--url",
            &app.url,
            "--duration",
            "3",
            "--users",
            "2",
        ],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("demo traffic: "), "{stdout}");
    assert!(stdout.contains("0 unexpected answers"), "{stdout}");

    // The demo users exist, made as `user add` makes them.
    for n in 1..=2 {
        assert!(
            app.state
                .db
                .find_user_by_email(&format!("demo-{n}@example.com"))
                .await
                .unwrap()
                .is_some()
        );
    }

    app.create_user("admin@example.com", true).await;
    let admin = Browser::new(&app);
    assert_eq!(
        admin.login("admin@example.com", PASSWORD).await.status(),
        StatusCode::SEE_OTHER
    );
    let mut s = Value::Null;
    for _ in 0..200 {
        s = summary(&app, &admin).await;
        // The admin's own sign-in is one; the demo users' come on top.
        if s["oauth"]["sign_ins"].as_u64() >= Some(3) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let o = &s["oauth"];
    assert!(o["registrations"].as_u64() > Some(0), "{s:#}");
    assert!(o["sign_ins"].as_u64() >= Some(3), "both demo users: {s:#}");
    assert_eq!(o["failed_sign_ins"], 1, "the first user mistypes once");
    assert!(o["code_exchanges"].as_u64() > Some(0), "{s:#}");
    assert!(s["mcp"]["sessions"].as_u64() > Some(0), "{s:#}");
    assert!(
        s["mcp"]["unauthorized"].as_u64() > Some(0),
        "discovery starts with a 401: {s:#}"
    );
    let calls: u64 = s["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["calls"].as_u64().unwrap())
        .sum();
    assert!(calls > 0, "{s:#}");
    let users: Vec<&str> = s["users"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u["email"].as_str())
        .collect();
    assert!(
        users.iter().any(|e| e.starts_with("demo-")),
        "tool calls are tied to the demo users: {users:?}"
    );
    assert_eq!(s["dropped_events"], 0);
}

#[tokio::test]
async fn demo_traffic_says_plainly_when_no_server_answers() {
    let app = spawn_app_with(|_| {}).await;
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let out = run_binary(&app, &["demo", "traffic", "--url", &url, "--duration", "1"]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is the server running?"), "{stderr}");
}
