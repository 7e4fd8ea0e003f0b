//! How long each analytics dashboard panel takes with many events stored: 10 million by
//! default, spread over the last 30 days as real traffic would be (tool calls from a few
//! hundred users through a few dozen clients, HTTP requests, OAuth events), written through
//! the store's own batch writer in time order. Each page (overview, OAuth, tools, users,
//! events) is read and rendered for every preset range, five times: the first read (cold)
//! and the median of the others (warm: settled spans come from the in-memory cache).
//!
//!     cargo bench -p mcp-oauth --bench analytics_panels                     # SQLite
//!     MCP_OAUTH_BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!         cargo bench -p mcp-oauth --bench analytics_panels                 # PostgreSQL
//!
//! Knobs: BENCH_EVENTS (default 10000000). Loading takes a few minutes; on SQLite the loaded
//! database is kept in the temporary directory and reused when BENCH_REUSE=1.

use std::time::{Duration, Instant};

use mcp_oauth::analytics::cache::SpanCache;
use mcp_oauth::analytics::dashboard::{DashboardQuery, panels, range_of};
use mcp_oauth::clock::Clock;
use mcp_oauth::config::RawSettings;
use mcp_oauth::startup::{Application, connect_db};
use mcp_oauth_core::analytics::{Event, McpResult, OAuthEvent, Transport};

const DAY_MS: i64 = 86_400_000;
const TOOLS: [&str; 6] = [
    "add_numbers",
    "calculate_circle_area",
    "check_prime_number",
    "format_text",
    "generate_random_number",
    "whoami",
];
const ROUTES: [(&str, &str); 6] = [
    ("/mcp", "POST"),
    ("/token", "POST"),
    ("/authorize", "GET"),
    ("/.well-known/oauth-authorization-server", "GET"),
    ("/register", "POST"),
    ("/login", "POST"),
];
const SOFTWARE: [&str; 5] = [
    "claude-ai/0.1.0",
    "cursor-vscode/1.0.0",
    "mcp-inspector/0.16.0",
    "Visual Studio Code/1.105.0",
    "openai-mcp/1.0.0",
];

/// A small deterministic generator (xorshift64*), so every run loads the same events.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// A latency in µs: mostly around a millisecond, with a long tail.
    fn latency(&mut self) -> u64 {
        let base = 200 + self.below(2_000);
        if self.below(100) < 3 {
            base * (10 + self.below(200))
        } else {
            base
        }
    }
}

/// Event `i` of `n`, spread evenly over `[start, start + 30 days)`.
fn event(rng: &mut Rng, i: u64, n: u64, start: i64) -> Event {
    let at = start + (i as i64) * (30 * DAY_MS) / n as i64;
    let user = rng.below(300);
    let client = user % 40 + rng.below(2);
    let (user, client) = (format!("user-{user}"), format!("client-{client}"));
    let roll = rng.below(100);
    if roll < 65 {
        let tool = TOOLS[(rng.below(36) as usize).min(rng.below(6) as usize * 6) % 6];
        let result = match rng.below(100) {
            0..=2 => McpResult::ToolError,
            3 => McpResult::ProtocolError(-32602),
            _ => McpResult::Success,
        };
        Event::mcp(at, "tools/call", Some(tool), result, rng.latency())
            .user(Some(&user))
            .client(Some(&client))
            .mcp_context(
                Some(SOFTWARE[(user.len() + client.len()) % SOFTWARE.len()]),
                Some("2025-11-25"),
                Some(Transport::StreamableHttp),
            )
    } else if roll < 95 {
        let (route, method) = ROUTES[rng.below(ROUTES.len() as u64) as usize];
        let status = match rng.below(100) {
            0..=4 => 401,
            5 => 400,
            6 => 500,
            _ => 200,
        };
        let transport = (route == "/mcp").then_some(Transport::StreamableHttp);
        Event::http(at, route, method, status, rng.latency())
            .user(Some(&user))
            .client(Some(&client))
            .mcp_context(None, None, transport)
            .request(
                Some(format!("10.0.{}.{}", user.len(), rng.below(250))),
                Some("bench/1"),
                None,
            )
    } else {
        let e = match rng.below(6) {
            0 => OAuthEvent::CodeExchanged {
                pkce_method: "S256",
            },
            1 => OAuthEvent::TokenRefreshed,
            2 => OAuthEvent::AuthorizationGranted {
                pkce_method: "S256",
            },
            3 => OAuthEvent::SignInSucceeded,
            4 => OAuthEvent::SignInFailed {
                reason: "invalid_credentials",
            },
            _ => OAuthEvent::TokenFailed {
                grant_type: "refresh_token",
                error: "invalid_grant",
            },
        };
        Event::oauth(at, e).user(Some(&user)).client(Some(&client))
    }
}

async fn database_url(events: u64) -> (String, bool) {
    match std::env::var("MCP_OAUTH_BENCH_DATABASE_URL") {
        Ok(base) => {
            let name = "mcp_oauth_bench_panels";
            sqlx::any::install_default_drivers();
            let admin = sqlx::AnyPool::connect(&base)
                .await
                .expect("connect to PostgreSQL");
            let reuse = std::env::var("BENCH_REUSE").is_ok_and(|v| v == "1");
            let exists = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT 1 FROM pg_database WHERE datname = '{name}'"
            )))
            .fetch_optional(&admin)
            .await
            .unwrap()
            .is_some();
            if !(reuse && exists) {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&admin)
                .await;
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&admin)
                    .await
                    .unwrap();
            }
            let mut url = url::Url::parse(&base).unwrap();
            url.set_path(name);
            (url.to_string(), reuse && exists)
        }
        Err(_) => {
            let path = std::env::temp_dir().join(format!("mcp_oauth_bench_panels_{events}.db"));
            let reuse = std::env::var("BENCH_REUSE").is_ok_and(|v| v == "1") && path.exists();
            if !reuse {
                for s in ["", "-wal", "-shm", ".key"] {
                    let _ = std::fs::remove_file(format!("{}{s}", path.display()));
                }
            }
            (format!("sqlite://{}?mode=rwc", path.display()), reuse)
        }
    }
}

#[tokio::main]
async fn main() {
    let n: u64 = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let (url, reuse) = database_url(n).await;
    let clock = Clock::system();
    let now = clock.now_millis();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut raw = RawSettings {
        public_url: format!("http://{addr}"),
        listen: addr.to_string(),
        database_url: url.clone().into(),
        ..RawSettings::default()
    };
    raw.keys.encryption_key = Some("QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=".into());
    raw.log_level = "warn".into();
    let settings = raw.validate().unwrap();
    let db = connect_db(&settings.database_url).await.unwrap();
    let app = Application::build_on(settings, clock, db.clone(), listener)
        .await
        .unwrap();
    let state = app.state().clone();

    if reuse {
        println!(
            "reusing the loaded database {}",
            mcp_oauth::startup::redact_url(&url)
        );
    } else {
        // Events end a minute before now, so that the ranges below read all of them.
        let start = now - 30 * DAY_MS - 60_000;
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let t = Instant::now();
        let batch = 20_000;
        let mut i = 0;
        while i < n {
            let events: Vec<Event> = (i..(i + batch).min(n))
                .map(|k| event(&mut rng, k, n, start))
                .collect();
            db.record_events(&events).await.unwrap();
            i += batch;
            if i % 1_000_000 == 0 {
                println!("  loaded {i} events in {:.0} s", t.elapsed().as_secs_f64());
            }
        }
        println!(
            "loaded {n} events in {:.0} s ({:.0} events/s through record_events)",
            t.elapsed().as_secs_f64(),
            n as f64 / t.elapsed().as_secs_f64()
        );
    }

    println!(
        "\nDashboard panels with {n} events over 30 days ({}), ms: cold (first read) / warm \
         (median of 4 more; settled spans cached), target under 200",
        if url.starts_with("sqlite") {
            "SQLite"
        } else {
            "PostgreSQL"
        }
    );
    print!("{:<10}", "page");
    let ranges = ["1h", "6h", "24h", "7d", "30d"];
    for r in ranges {
        print!("{r:>16}");
    }
    println!();
    let (mut worst_cold, mut worst_warm) = (Duration::ZERO, Duration::ZERO);
    for page in ["overview", "oauth", "tools", "users", "events"] {
        print!("{page:<10}");
        for r in ranges {
            let q = DashboardQuery {
                range: Some(r.into()),
                user: (page == "events").then(|| "user-7".into()),
                ..DashboardQuery::default()
            };
            let mut times = Vec::new();
            for _ in 0..5 {
                let range = range_of(&q, state.clock.now_millis()).unwrap();
                let t = Instant::now();
                let p = panels(&state, page_name(page), &range, &q).await.unwrap();
                let html = askama::Template::render(&p).unwrap();
                std::hint::black_box(html);
                times.push(t.elapsed());
            }
            let cold = times[0];
            let mut warm = times[1..].to_vec();
            warm.sort();
            let warm = warm[warm.len() / 2];
            worst_cold = worst_cold.max(cold);
            worst_warm = worst_warm.max(warm);
            print!(
                "{:>16}",
                format!(
                    "{:.0} / {:.0}",
                    cold.as_secs_f64() * 1000.0,
                    warm.as_secs_f64() * 1000.0
                )
            );
        }
        println!();
    }
    println!(
        "slowest panel: {:.0} ms cold, {:.0} ms warm",
        worst_cold.as_secs_f64() * 1000.0,
        worst_warm.as_secs_f64() * 1000.0
    );

    // What keeping the presets warm costs (`dashboard::keep_presets_warm`, every 45 s): one
    // read of every preset's settled parts (each tick reads them all again), twice.
    let presets: Vec<_> = ["1h", "6h", "24h", "7d", "30d"]
        .iter()
        .map(|r| {
            let q = DashboardQuery {
                range: Some((*r).into()),
                ..DashboardQuery::default()
            };
            let range = range_of(&q, state.clock.now_millis()).unwrap();
            (range.from, range.to, range.period, range.step)
        })
        .collect();
    for cache in [SpanCache::default(), SpanCache::default()] {
        let t = Instant::now();
        cache
            .warm(&state.db, &presets, state.clock.now_millis())
            .await
            .unwrap();
        println!(
            "warming the five presets: {:.0} ms",
            t.elapsed().as_secs_f64() * 1000.0
        );
    }
}

fn page_name(p: &str) -> &'static str {
    match p {
        "overview" => "overview",
        "oauth" => "oauth",
        "tools" => "tools",
        "users" => "users",
        _ => "events",
    }
}
