//! A PostgreSQL outage under the running server (issue 6, item 19): requests that need the
//! database fail fast with 503 and `Retry-After`, readiness says so within a second, MCP calls
//! go on, and service resumes when the database is back, without a restart. The test runs a
//! PostgreSQL cluster of its own, so that it can stop and start it.
//!
//! PostgreSQL only: it runs whenever `MCP_OAUTH_TEST_DATABASE_URL` is set (as in CI), and then
//! fails, rather than skips, if the PostgreSQL server binaries are missing. On SQLite, a
//! locked database is an ordinary error, never an outage.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{McpReply, spawn_app, spawn_app_on_database, tool_call};

/// A throwaway PostgreSQL cluster in a temporary directory, on a free port; stopped and
/// removed on drop, also when the test fails.
struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    /// Root cannot run PostgreSQL: the tools then run as `postgres`, owning the directory.
    as_postgres: bool,
}

/// The newest `/usr/lib/postgresql/<version>/bin` with `initdb` and `pg_ctl`.
fn postgres_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").exists() && bin.join("pg_ctl").exists()).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

impl Cluster {
    fn start() -> Self {
        let bin = postgres_bin().expect(
            "MCP_OAUTH_TEST_DATABASE_URL is set, so this test must run, but the PostgreSQL \
             server binaries (initdb, pg_ctl) are not under /usr/lib/postgresql/<version>/bin: \
             install the `postgresql` package",
        );
        let dir = std::env::temp_dir().join(format!("mcp_oauth_pg_{}", mcp_oauth::random::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let as_postgres = std::fs::metadata(&dir).unwrap().uid() == 0;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // From here on, dropping `cluster` cleans up.
        let cluster = Self {
            bin,
            dir,
            port,
            as_postgres,
        };
        if as_postgres {
            let chown = Command::new("chown")
                .arg("postgres:")
                .arg(&cluster.dir)
                .status()
                .unwrap();
            assert!(chown.success(), "chown the cluster directory to postgres");
        }
        cluster.run(
            "initdb",
            &[
                "-D",
                &cluster.data(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        cluster.start_server();
        cluster
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn command(&self, tool: &str, args: &[&str]) -> Command {
        let program = self.bin.join(tool);
        let mut c = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        c.args(args).current_dir(&self.dir);
        c
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = self.command(tool, args).output().unwrap();
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn start_server(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("server.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
    }

    /// What a crash or a pulled cable looks like to the server: no orderly goodbye.
    fn stop_immediately(&self) {
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if Path::new(&self.data()).join("postmaster.pid").exists() {
            let _ = self
                .command("pg_ctl", &["-D", &self.data(), "-m", "immediate", "stop"])
                .output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Run `f` and time it.
async fn timed<T>(f: impl std::future::Future<Output = T>) -> (T, Duration) {
    let start = Instant::now();
    let out = f.await;
    (out, start.elapsed())
}

/// Assert a fast `503 temporarily_unavailable` with `Retry-After` from a JSON endpoint.
async fn assert_unavailable(r: reqwest::Response, took: Duration, within: Duration, what: &str) {
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "{what}");
    assert!(
        r.headers().contains_key("retry-after"),
        "{what}: Retry-After"
    );
    assert!(
        took < within,
        "{what} answered within {within:?}, not {took:?}"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable", "{what}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_outage_fails_fast_and_recovers_without_a_restart() {
    if std::env::var("MCP_OAUTH_TEST_DATABASE_URL").is_err() {
        eprintln!(
            "note: MCP_OAUTH_TEST_DATABASE_URL is not set; skipping the PostgreSQL outage test"
        );
        return;
    }
    let cluster = tokio::task::spawn_blocking(Cluster::start).await.unwrap();
    let app = spawn_app_on_database(&cluster.url(), |_| {}).await;
    let tokens = app.tokens_for_new_client("outage@example.com").await;
    let session = app.mcp_session(&tokens.access_token).await;
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.stop_immediately();
        cluster
    })
    .await
    .unwrap();

    // The first request that needs the database (or the revocation poller, whichever comes
    // first) discovers the outage, within the pool's acquire timeout.
    let (r, took) = timed(app.refresh_as(&tokens.auth, &tokens.refresh_token, &[])).await;
    assert_unavailable(r, took, Duration::from_secs(4), "the discovering request").await;

    // From then on, at once.
    for i in 0..5 {
        let (r, took) = timed(app.refresh_as(&tokens.auth, &tokens.refresh_token, &[])).await;
        assert_unavailable(
            r,
            took,
            Duration::from_secs(1),
            &format!("token request {i}"),
        )
        .await;
    }
    let (r, took) = timed(app.http.get(format!("{}/readyz", app.url)).send()).await;
    let r = r.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "not ready");
    assert!(
        took < Duration::from_secs(1),
        "readiness within 1 s, not {took:?}"
    );
    let (r, took) = timed(app.http.get(format!("{}/login", app.url)).send()).await;
    let r = r.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "a page");
    assert!(r.headers().contains_key("retry-after"));
    assert!(
        took < Duration::from_secs(1),
        "a page within 1 s, not {took:?}"
    );
    assert!(
        r.text().await.unwrap().contains("Temporarily unavailable"),
        "an error page"
    );
    let jwks = app
        .http
        .get(format!("{}/jwks.json", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        jwks.status(),
        StatusCode::OK,
        "the JWKS is served from memory"
    );

    // MCP calls never touch the database.
    let call = app
        .mcp_send(
            Some(&tokens.access_token),
            Some(&session),
            &tool_call(2, "add_numbers", json!({"a": 2, "b": 40})),
        )
        .await;
    let (text, is_error) = McpReply::tool_text(&call);
    assert!(!is_error && text.contains("42"), "{text}");

    // The database comes back: service resumes without restarting the app.
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.start_server();
        cluster
    })
    .await
    .unwrap();
    let back = Instant::now();
    loop {
        let r = app
            .http
            .get(format!("{}/readyz", app.url))
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::OK {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "ready again within 5 s of the database"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = app
        .refresh_as(&tokens.auth, &tokens.refresh_token, &[])
        .await;
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    drop(app);
    drop(cluster);
}

#[tokio::test]
async fn a_locked_sqlite_database_is_an_error_not_an_outage() {
    let app = spawn_app().await;
    if !app.database_url.starts_with("sqlite:") {
        return;
    }
    // Let the start-up cleanup finish; then another process holds SQLite's write lock for
    // longer than the busy timeout (5 s).
    tokio::time::sleep(Duration::from_millis(300)).await;
    sqlx::any::install_default_drivers();
    let mut holder = <sqlx::AnyConnection as sqlx::Connection>::connect(&app.database_url)
        .await
        .unwrap();
    sqlx::Executor::execute(&mut holder, "BEGIN EXCLUSIVE")
        .await
        .unwrap();
    let r = app
        .register(json!({
            "client_name": "Locked out",
            "redirect_uris": ["http://127.0.0.1:7777/callback"],
            "token_endpoint_auth_method": "none",
        }))
        .await;
    assert_eq!(
        r.status(),
        StatusCode::INTERNAL_SERVER_ERROR,
        "\"database is locked\" is an internal error"
    );
    assert!(
        !app.state.db_health.is_down(),
        "a local file has no outage to wait out"
    );
    sqlx::Executor::execute(&mut holder, "ROLLBACK")
        .await
        .unwrap();
    drop(holder);
    app.register_public_client("http://127.0.0.1:7777/callback")
        .await;
    let ready = app
        .http
        .get(format!("{}/readyz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
}
