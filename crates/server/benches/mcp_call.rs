//! Cost of authentication on the MCP endpoint: `tools/call` of a trivial tool through the
//! bearer layer, the same call with authentication off (`mcp.open`) in the same binary, and
//! a bare axum handler returning a fixed JSON-RPC body, each loaded by `wrk` (a separate
//! process) at 32 connections. Requires `wrk` (`apt-get install wrk`).
//!
//!     cargo bench -p mcp-oauth --bench mcp_call
//!
//! Knobs: BENCH_SECONDS (per scenario, default 10), BENCH_CONNECTIONS (default 32).

use std::io::Write;
use std::process::Command;

use axum::Json;
use axum::routing::post;
use serde_json::json;

use mcp_oauth::clock::Clock;
use mcp_oauth::config::RawSettings;
use mcp_oauth::startup::{Application, connect_db};
use mcp_oauth_core::domain::{ResourceUri, ScopeSet};
use mcp_oauth_core::oauth::access_token::{MintAccessToken, mint_claims};

const CALL: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add_numbers","arguments":{"a":2,"b":40}}}"#;

const WRK_SCRIPT: &str = r#"
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["MCP-Protocol-Version"] = "2025-11-25"
local token = os.getenv("BENCH_TOKEN")
if token ~= nil and #token > 0 then wrk.headers["Authorization"] = "Bearer " .. token end
response = function(status, headers, body)
  if status ~= 200 then error("unexpected status " .. status .. ": " .. body) end
end
"#;

async fn spawn(open: bool) -> (Application, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let db_path = std::env::temp_dir().join(format!(
        "mcp_oauth_bench_mcp_{}_{open}.db",
        std::process::id()
    ));
    let mut raw = RawSettings {
        public_url: format!("http://{addr}"),
        listen: addr.to_string(),
        database_url: format!("sqlite://{}?mode=rwc", db_path.display()).into(),
        ..RawSettings::default()
    };
    raw.mcp.open = open;
    raw.mcp.stateful = false;
    raw.mcp.json_response = true;
    raw.log_level = "warn".into();
    let settings = raw.validate().unwrap();
    let db = connect_db(&settings.database_url).await.unwrap();
    let app = Application::build_on(settings, Clock::system(), db, listener)
        .await
        .unwrap();
    (app, format!("http://{addr}"))
}

struct Result {
    name: &'static str,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn parse_ms(s: &str) -> f64 {
    let s = s.trim();
    if let Some(v) = s.strip_suffix("us") {
        v.parse::<f64>().unwrap_or(f64::NAN) / 1000.0
    } else if let Some(v) = s.strip_suffix("ms") {
        v.parse().unwrap_or(f64::NAN)
    } else if let Some(v) = s.strip_suffix('s') {
        v.parse::<f64>().unwrap_or(f64::NAN) * 1000.0
    } else {
        f64::NAN
    }
}

fn wrk(
    name: &'static str,
    url: &str,
    token: &str,
    script: &std::path::Path,
    seconds: u64,
    connections: u64,
) -> Result {
    let out = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
            "-s",
        ])
        .arg(script)
        .arg(url)
        .env("BENCH_BODY", CALL)
        .env("BENCH_TOKEN", token)
        .output()
        .expect("wrk is installed (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !text.contains("Non-2xx"),
        "wrk failed for {name}:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(str::to_owned))
            .unwrap_or_default()
    };
    Result {
        name,
        rps: field("Requests/sec:").trim().parse().unwrap_or(f64::NAN),
        p50_ms: parse_ms(&field("50%")),
        p99_ms: parse_ms(&field("99%")),
    }
}

#[tokio::main]
async fn main() {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let connections: u64 = std::env::var("BENCH_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);

    let (auth_app, auth_url) = spawn(false).await;
    let token = {
        let resource = ResourceUri::parse(&format!("{auth_url}/mcp")).unwrap();
        let claims = mint_claims(MintAccessToken {
            issuer: &auth_url,
            subject: "bench-user",
            resource: &resource,
            client_id: "bench-client",
            scope: &ScopeSet::parse("mcp").unwrap(),
            grant_id: Some("bench-grant"),
            auth_time: None,
            now: Clock::system().now(),
            lifetime: 3600,
            jti: "bench-jti".into(),
        });
        auth_app.state().keys.sign(&claims).unwrap()
    };
    let (open_app, open_url) = spawn(true).await;
    tokio::spawn(auth_app.run_until_stopped(std::future::pending()));
    tokio::spawn(open_app.run_until_stopped(std::future::pending()));

    let bare = {
        let body = json!({"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": "The sum of 2 and 40 is 42."}], "isError": false}});
        let app = axum::Router::new().route(
            "/mcp",
            post(move || {
                let body = body.clone();
                async move { Json(body) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    };

    let script = tempfile_path("mcp_call.lua");
    std::fs::File::create(&script)
        .unwrap()
        .write_all(WRK_SCRIPT.as_bytes())
        .unwrap();
    // Warm both servers up.
    let _ = wrk(
        "warm-up",
        &format!("{auth_url}/mcp"),
        &token,
        &script,
        2,
        connections,
    );
    let _ = wrk(
        "warm-up",
        &format!("{open_url}/mcp"),
        "",
        &script,
        2,
        connections,
    );

    let results = [
        wrk(
            "bare axum handler (fixed body)",
            &format!("{bare}/mcp"),
            "",
            &script,
            seconds,
            connections,
        ),
        wrk(
            "tools/call, authentication off",
            &format!("{open_url}/mcp"),
            "",
            &script,
            seconds,
            connections,
        ),
        wrk(
            "tools/call, authenticated",
            &format!("{auth_url}/mcp"),
            &token,
            &script,
            seconds,
            connections,
        ),
    ];
    println!(
        "\nMCP tools/call (add_numbers), {connections} connections, {seconds} s per scenario, wrk -t2"
    );
    println!(
        "{:<34} {:>10} {:>9} {:>9}",
        "scenario", "req/s", "p50 ms", "p99 ms"
    );
    for r in &results {
        println!(
            "{:<34} {:>10.0} {:>9.2} {:>9.2}",
            r.name, r.rps, r.p50_ms, r.p99_ms
        );
    }
    let cost = 100.0 * (1.0 - results[2].rps / results[1].rps);
    println!("authentication costs {cost:.1}% of throughput (target: under 15%)");
    let _ = std::fs::remove_file(script);
}

fn tempfile_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("{}-{name}", std::process::id()))
}
