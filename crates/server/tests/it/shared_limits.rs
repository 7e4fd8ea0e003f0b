//! Rate limits and address blocks across instances: two real server processes, as behind a
//! load balancer, share their rate-limit buckets through the database (one SQLite file, or in
//! CI one PostgreSQL) or through Redis, and their blocks through the database.

use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::helpers::{ServerProcess, TEST_ENCRYPTION_KEY, TestApp, spawn_app};

/// Redis for the tests: `MCP_OAUTH_TEST_REDIS_URL`, by default the one on this machine.
fn redis_url() -> String {
    std::env::var("MCP_OAUTH_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Two `serve` processes on `app`'s database with three token requests a minute per client
/// and address, loopback as their trusted proxy, and `extra` settings.
async fn two_processes(app: &TestApp, extra: &[(&str, &str)]) -> (ServerProcess, ServerProcess) {
    let mut env = vec![
        ("MCP_OAUTH_DATABASE_URL", app.database_url.as_str()),
        ("MCP_OAUTH_RATE_LIMITS__TOKEN_PER_MINUTE", "3"),
        ("MCP_OAUTH_TRUSTED_PROXIES", "127.0.0.1/32"),
    ];
    // The test app stored its signing keys encrypted on PostgreSQL only.
    if std::env::var("MCP_OAUTH_TEST_DATABASE_URL").is_ok() {
        env.push(("MCP_OAUTH_KEYS__ENCRYPTION_KEY", TEST_ENCRYPTION_KEY));
    }
    env.extend_from_slice(extra);
    tokio::join!(ServerProcess::start(&env), ServerProcess::start(&env))
}

/// A refresh grant for `client` (unknown: 401, but counted) at `server`; status, Retry-After.
async fn token_request(
    http: &reqwest::Client,
    server: &ServerProcess,
    client: &str,
) -> (StatusCode, Option<String>) {
    let r = http
        .post(format!("{}/token", server.url))
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", client),
            ("refresh_token", "x"),
        ])
        .send()
        .await
        .unwrap();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (r.status(), retry)
}

/// The quota is one for both processes, and a block made by an operator holds on both.
async fn limits_and_blocks_hold_on_both(
    app: &TestApp,
    first: &ServerProcess,
    second: &ServerProcess,
) {
    let http = reqwest::Client::new();
    // A client id of its own, so that runs sharing one Redis do not share its bucket.
    let client = format!("shared-{}", mcp_oauth::random::id());
    for server in [first, second, first] {
        let (status, _) = token_request(&http, server, &client).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{}", server.stderr());
    }
    for server in [second, first] {
        let (status, retry) = token_request(&http, server, &client).await;
        assert_eq!(
            status,
            StatusCode::TOO_MANY_REQUESTS,
            "the quota of 3 is shared"
        );
        let retry: u64 = retry.expect("Retry-After").parse().unwrap();
        assert!((1..=20).contains(&retry), "one request every 20 s: {retry}");
    }
    let (status, _) = token_request(&http, second, "another-client").await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "another client has its own"
    );

    let mut block = std::process::Command::new(env!("CARGO_BIN_EXE_mcp-oauth"));
    block
        .env_clear()
        .env("MCP_OAUTH_DATABASE_URL", &app.database_url)
        .env("MCP_OAUTH_KEYS__ENCRYPTION_KEY", TEST_ENCRYPTION_KEY)
        .args(["security", "block", "203.0.113.80", "--minutes", "5"]);
    let out = crate::helpers::output_of(block).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for server in [first, second] {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = http
                .get(format!(
                    "{}/.well-known/oauth-authorization-server",
                    server.url
                ))
                .header("x-forwarded-for", "203.0.113.80")
                .send()
                .await
                .unwrap();
            if r.status() == StatusCode::FORBIDDEN {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the block did not reach {}",
                server.url
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test]
async fn two_processes_share_rate_limits_and_blocks_through_the_database() {
    let app = spawn_app().await;
    let (mut first, mut second) =
        two_processes(&app, &[("MCP_OAUTH_RATE_LIMITS__SHARED", "database")]).await;
    limits_and_blocks_hold_on_both(&app, &first, &second).await;
    for server in [&mut first, &mut second] {
        assert!(server.terminate().await, "{}", server.stderr());
    }
}

#[tokio::test]
async fn two_processes_share_rate_limits_through_redis_and_blocks_through_the_database() {
    let app = spawn_app().await;
    let redis = redis_url();
    let (mut first, mut second) = two_processes(&app, &[("MCP_OAUTH_REDIS_URL", &redis)]).await;
    limits_and_blocks_hold_on_both(&app, &first, &second).await;
    for server in [&mut first, &mut second] {
        assert!(server.terminate().await, "{}", server.stderr());
    }
    // The buckets were in Redis (not the database), each expiring once it is full again.
    let client = redis::Client::open(redis.as_str()).unwrap();
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis on MCP_OAUTH_TEST_REDIS_URL (start redis-server, or set it)");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("mcp-oauth:ratelimit:token:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!keys.is_empty(), "no token bucket in Redis");
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        ttl > 0 && ttl <= 61_000,
        "a bucket expires when full: {ttl} ms"
    );
    assert_eq!(
        app.count_rows("rate_limit_buckets", "'all'", "all").await,
        0,
        "nothing in the database"
    );
}

#[tokio::test]
async fn a_wrong_or_unreachable_redis_stops_the_start_with_one_line_naming_redis_url() {
    for (url, says) in [
        ("http://127.0.0.1:6379", "redis_url"),
        (
            "redis://127.0.0.1:1",
            "cannot connect to Redis at redis://127.0.0.1:1 (redis_url)",
        ),
    ] {
        let mut serve = std::process::Command::new(env!("CARGO_BIN_EXE_mcp-oauth"));
        serve
            .env_clear()
            .env("MCP_OAUTH_DATABASE_URL", "sqlite::memory:")
            .env("MCP_OAUTH_LISTEN", "127.0.0.1:0")
            .env("MCP_OAUTH_REDIS_URL", url)
            .arg("serve");
        let out = crate::helpers::output_of(serve).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(err.contains(says), "{url}: {err}");
    }
}

/// A Redis of the test's own on a free port, killed when dropped.
struct PrivateRedis {
    child: std::process::Child,
    url: String,
}

impl PrivateRedis {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server on PATH (apt-get install redis-server)");
        let url = format!("redis://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { child, url }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Redis dies mid-run: requests are still answered at once, each instance limiting alone.
#[tokio::test]
async fn when_redis_dies_each_instance_limits_alone_without_stalling_requests() {
    let mut redis = PrivateRedis::start().await;
    let url = redis.url.clone();
    let app = crate::helpers::spawn_app_with(move |raw| {
        raw.redis_url = Some(secrecy::SecretString::from(url));
        raw.rate_limits.token_per_minute = 3;
    })
    .await;
    let token = || async {
        app.http
            .post(format!("{}/token", app.url))
            .form(&[
                ("grant_type", "refresh_token"),
                ("client_id", "redis-outage"),
                ("refresh_token", "x"),
            ])
            .send()
            .await
            .unwrap()
            .status()
    };
    for _ in 0..2 {
        assert_eq!(token().await, StatusCode::UNAUTHORIZED);
    }
    redis.child.kill().unwrap();
    redis.child.wait().unwrap();
    let started = Instant::now();
    assert_eq!(
        token().await,
        StatusCode::UNAUTHORIZED,
        "the third, decided here"
    );
    assert_eq!(
        token().await,
        StatusCode::TOO_MANY_REQUESTS,
        "this instance's own count still holds"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "no request waits out the outage: {:?}",
        started.elapsed()
    );
}
