//! How many analytics events per second the batch writer stores (`Db::record_events`), as the
//! pipeline hands them over under load: batches of 2,000, half MCP tool calls and half the
//! HTTP requests that carried them, all from one user and client (the dense case, where the
//! raw rows dominate; `analytics_panels` loads the sparse case).
//!
//!     cargo bench -p mcp-oauth --bench analytics_writer                     # SQLite
//!     MCP_OAUTH_BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!         cargo bench -p mcp-oauth --bench analytics_writer                 # PostgreSQL

use std::time::Instant;

use mcp_oauth_core::analytics::{Event, McpResult, Transport};
use mcp_oauth_store::{ConnectOptions, Db};

const BATCH: usize = 2_000;
const BATCHES: i64 = 20;

fn batch(start: i64) -> Vec<Event> {
    (0..BATCH)
        .map(|i| {
            let at = start + i as i64 / 20;
            if i % 2 == 0 {
                Event::mcp(
                    at,
                    "tools/call",
                    Some("add_numbers"),
                    McpResult::Success,
                    50 + (i as u64 % 97),
                )
                .user(Some("user-1"))
                .client(Some("client-1"))
                .mcp_context(
                    Some("bench/0"),
                    Some("2025-11-25"),
                    Some(Transport::StreamableHttp),
                )
            } else {
                Event::http(at, "/mcp", "POST", 200, 300 + (i as u64 % 500))
                    .user(Some("user-1"))
                    .client(Some("client-1"))
                    .mcp_context(None, Some("2025-11-25"), Some(Transport::StreamableHttp))
                    .request(
                        Some("127.0.0.1".into()),
                        Some("wrk"),
                        Some("0123456789abcdef"),
                    )
            }
        })
        .collect()
}

#[tokio::main]
async fn main() {
    let url = match std::env::var("MCP_OAUTH_BENCH_DATABASE_URL") {
        Ok(base) => {
            sqlx::any::install_default_drivers();
            let admin = sqlx::AnyPool::connect(&base)
                .await
                .expect("connect to PostgreSQL");
            let name = "mcp_oauth_bench_writer";
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&admin)
            .await;
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&admin)
                .await
                .unwrap();
            let mut url = url::Url::parse(&base).unwrap();
            url.set_path(name);
            url.to_string()
        }
        Err(_) => {
            let path = std::env::temp_dir()
                .join(format!("mcp_oauth_bench_writer_{}.db", std::process::id()));
            format!("sqlite://{}?mode=rwc", path.display())
        }
    };
    let db = Db::connect(&url, &ConnectOptions::default()).await.unwrap();
    db.migrate().await.unwrap();
    let now = 1_764_600_000_000i64;
    for round in 0..3 {
        let t = Instant::now();
        for b in 0..BATCHES {
            db.record_events(&batch(now + (round * BATCHES + b) * 100))
                .await
                .unwrap();
        }
        let n = BATCH as f64 * BATCHES as f64;
        println!(
            "round {round}: {n} events in {:.2} s: {:.0} events/s, {:.1} ms per batch of {BATCH}",
            t.elapsed().as_secs_f64(),
            n / t.elapsed().as_secs_f64(),
            t.elapsed().as_secs_f64() * 1000.0 / BATCHES as f64
        );
    }
}
