//! Load benchmark of the token endpoint: the `authorization_code` and `refresh_token` grants
//! against the running server over real HTTP, beside a bare axum handler that returns a fixed
//! token response (the floor: HTTP, JSON and the client's own cost). Figures are meant to be
//! read as ratios to that floor, measured in the same run, since these machines are noisy.
//!
//!     cargo bench -p mcp-oauth --bench token_endpoint                       # SQLite
//!     MCP_OAUTH_BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!         cargo bench -p mcp-oauth --bench token_endpoint                   # PostgreSQL
//!
//! Knobs: BENCH_CONCURRENCY (default 16), BENCH_REQUESTS (per scenario, default 4000),
//! BENCH_ANALYTICS=off (record nothing: no analytics events, no metrics).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use mcp_oauth::clock::Clock;
use mcp_oauth::config::RawSettings;
use mcp_oauth::startup::{Application, connect_db};
use mcp_oauth_core::domain::SecretHash;
use mcp_oauth_store::{ClientRow, NewAuthorization, UserRow};

const REDIRECT: &str = "http://127.0.0.1:9/callback";
const VERIFIER: &str = "bench-verifier-bench-verifier-bench-verifier-0001";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Stats {
    name: String,
    requests: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Stats {
    fn throughput(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
    fn percentile(&self, p: f64) -> Duration {
        let mut l = self.latencies.clone();
        l.sort();
        l[((l.len() as f64 - 1.0) * p).round() as usize]
    }
}

/// Run `total` requests over `concurrency` workers; `make` builds request `i`.
async fn load<F, Fut>(name: &str, concurrency: usize, total: usize, make: F) -> Stats
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let make = Arc::new(make);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (make, next) = (make.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let t = Instant::now();
                assert!(make(i).await, "request {i} failed");
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    for w in workers {
        latencies.extend(w.await.expect("worker"));
    }
    Stats {
        name: name.to_owned(),
        requests: total,
        elapsed: start.elapsed(),
        latencies,
    }
}

async fn bare_axum() -> String {
    let app = axum::Router::new().route(
        "/token",
        post(|| async {
            Json(
                json!({"access_token": "x".repeat(400), "token_type": "Bearer", "expires_in": 900,
                        "refresh_token": "y".repeat(43), "scope": "mcp"}),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

async fn create_database(base: Option<&str>) -> String {
    let name = format!("mcp_oauth_bench_{}", std::process::id());
    match base {
        Some(base) => {
            sqlx::any::install_default_drivers();
            let admin = sqlx::AnyPool::connect(base)
                .await
                .expect("connect to PostgreSQL");
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&admin)
            .await;
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&admin)
                .await
                .unwrap();
            let mut url = url::Url::parse(base).unwrap();
            url.set_path(&name);
            url.to_string()
        }
        None => {
            let path = std::env::temp_dir().join(format!("{name}.db"));
            for s in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{s}", path.display()));
            }
            format!("sqlite://{}?mode=rwc", path.display())
        }
    }
}

/// A fixed signing-key encryption key: PostgreSQL needs one, and SQLite then writes no key
/// file beside the benchmark's database.
fn bench_keys() -> mcp_oauth::config::KeysSettings {
    mcp_oauth::config::KeysSettings {
        encryption_key: Some("QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=".into()),
        ..Default::default()
    }
}

#[tokio::main]
async fn main() {
    let concurrency = env_usize("BENCH_CONCURRENCY", 16);
    let total = env_usize("BENCH_REQUESTS", 4000);
    let pg = std::env::var("MCP_OAUTH_BENCH_DATABASE_URL").ok();
    let database_url = create_database(pg.as_deref()).await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut raw = RawSettings {
        public_url: format!("http://{addr}"),
        listen: addr.to_string(),
        database_url: database_url.clone().into(),
        keys: bench_keys(),
        ..RawSettings::default()
    };
    // BENCH_ANALYTICS=off: nothing recorded (no analytics, no metrics), for comparison.
    let analytics = std::env::var("BENCH_ANALYTICS").map_or(true, |v| v != "off");
    if !analytics {
        raw.analytics.enabled = false;
        raw.metrics.allowed_cidrs = vec![];
    }
    // These figures are of the work itself; rate limits would refuse most of a load test.
    raw.rate_limits.enabled = false;
    let settings = raw.validate().unwrap();
    let db = connect_db(&settings.database_url).await.unwrap();
    let app = Application::build_on(settings, Clock::system(), db.clone(), listener)
        .await
        .unwrap();
    let issuer = format!("http://{addr}");
    tokio::spawn(app.run_until_stopped(std::future::pending()));

    // A user and a public client, straight into the database.
    let now = Clock::system().now();
    db.insert_user(&UserRow {
        id: "bench-user".into(),
        email: "bench@example.com".into(),
        password_hash: None,
        is_admin: 0,
        created_at: now,
        disabled_at: None,
    })
    .await
    .unwrap();
    let metadata = json!({"client_name": "bench", "redirect_uris": [REDIRECT], "grant_types": ["authorization_code", "refresh_token"],
                          "response_types": ["code"], "token_endpoint_auth_method": "none"});
    db.insert_client(&ClientRow {
        id: "bench-client".into(),
        kind: "preregistered".into(),
        metadata: metadata.to_string(),
        secret_hash: None,
        metadata_hash: None,
        created_at: now,
        last_used_at: None,
        refresh_after: None,
    })
    .await
    .unwrap();
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(VERIFIER.as_bytes()));
    let codes: Vec<String> = (0..total)
        .map(|i| format!("bench-code-{i:08}-{}", "c".repeat(20)))
        .collect();
    for (i, code) in codes.iter().enumerate() {
        db.insert_authorization(&NewAuthorization {
            grant_id: format!("bench-grant-{i}"),
            client_id: "bench-client".into(),
            user_id: "bench-user".into(),
            scope: "mcp".into(),
            resource: format!("{issuer}/mcp"),
            code_hash: SecretHash::of(code).as_str().to_owned(),
            redirect_uri: REDIRECT.into(),
            redirect_uri_explicit: true,
            code_challenge: challenge.clone(),
            now,
            code_expires_at: now + 3600,
        })
        .await
        .unwrap();
    }

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let bare = bare_axum().await;
    let mut results = Vec::new();

    // Warm-up of both servers, then the floor.
    {
        let (http, bare) = (http.clone(), bare.clone());
        load("warm-up", concurrency, 200, move |_| {
            let (http, bare) = (http.clone(), bare.clone());
            async move {
                http.post(format!("{bare}/token"))
                    .form(&[("grant_type", "x")])
                    .send()
                    .await
                    .is_ok()
            }
        })
        .await;
    }
    {
        let (http, bare) = (http.clone(), bare.clone());
        results.push(
            load(
                "bare axum handler (fixed JSON)",
                concurrency,
                total,
                move |_| {
                    let (http, bare) = (http.clone(), bare.clone());
                    async move {
                        let r = http
                            .post(format!("{bare}/token"))
                            .form(&[("grant_type", "authorization_code")])
                            .send()
                            .await
                            .unwrap();
                        r.status().is_success() && r.bytes().await.is_ok()
                    }
                },
            )
            .await,
        );
    }

    // authorization_code: each request redeems its own code.
    let refresh_tokens: Arc<Vec<Mutex<String>>> = Arc::new(
        (0..concurrency)
            .map(|_| Mutex::new(String::new()))
            .collect(),
    );
    {
        let (http, issuer, codes, rts) = (
            http.clone(),
            issuer.clone(),
            Arc::new(codes),
            refresh_tokens.clone(),
        );
        results.push(
            load("authorization_code grant", concurrency, total, move |i| {
                let (http, issuer, codes, rts) =
                    (http.clone(), issuer.clone(), codes.clone(), rts.clone());
                async move {
                    let r = http
                        .post(format!("{issuer}/token"))
                        .form(&[
                            ("grant_type", "authorization_code"),
                            ("client_id", "bench-client"),
                            ("code", &codes[i]),
                            ("redirect_uri", REDIRECT),
                            ("code_verifier", VERIFIER),
                        ])
                        .send()
                        .await
                        .unwrap();
                    let ok = r.status().is_success();
                    let body: Value = r.json().await.unwrap();
                    // Keep a refresh token per worker slot for the next scenario.
                    *rts[i % rts.len()].lock().await = body["refresh_token"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    ok
                }
            })
            .await,
        );
    }

    // refresh_token: each slot rotates its own chain, one request at a time per chain.
    {
        let (http, issuer, rts) = (http.clone(), issuer.clone(), refresh_tokens.clone());
        results.push(
            load(
                "refresh_token grant (rotating)",
                concurrency,
                total,
                move |i| {
                    let (http, issuer, rts) = (http.clone(), issuer.clone(), rts.clone());
                    async move {
                        let mut slot = rts[i % rts.len()].lock().await;
                        let r = http
                            .post(format!("{issuer}/token"))
                            .form(&[
                                ("grant_type", "refresh_token"),
                                ("client_id", "bench-client"),
                                ("refresh_token", slot.as_str()),
                            ])
                            .send()
                            .await
                            .unwrap();
                        let ok = r.status().is_success();
                        let body: Value = r.json().await.unwrap();
                        *slot = body["refresh_token"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned();
                        ok
                    }
                },
            )
            .await,
        );
    }

    let backend = if pg.is_some() { "PostgreSQL" } else { "SQLite" };
    println!(
        "\ntoken endpoint on {backend} (analytics {}): {total} requests per scenario, {concurrency} concurrent connections",
        if analytics { "on" } else { "off" }
    );
    println!(
        "{:<34} {:>10} {:>9} {:>9} {:>9}",
        "scenario", "req/s", "p50 ms", "p99 ms", "vs floor"
    );
    let floor = results[0].throughput();
    for s in &results {
        println!(
            "{:<34} {:>10.0} {:>9.2} {:>9.2} {:>8.1}%",
            s.name,
            s.throughput(),
            s.percentile(0.50).as_secs_f64() * 1000.0,
            s.percentile(0.99).as_secs_f64() * 1000.0,
            100.0 * s.throughput() / floor
        );
    }

    db.close().await;
    if let Some(base) = pg {
        let admin = sqlx::AnyPool::connect(&base).await.unwrap();
        let name = url::Url::parse(&database_url)
            .unwrap()
            .path()
            .trim_start_matches('/')
            .to_owned();
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&admin)
        .await;
    }
}
