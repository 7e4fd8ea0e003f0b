//! Fresh databases per test, fixtures, and the macro that runs a test on every backend.

use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use mcp_oauth_store::{ClientRow, ConnectOptions, Db, NewAuthorization, NewRefreshToken, UserRow};
use sqlx::{AnyConnection, AssertSqlSafe, Connection, Executor};

/// The fixed "now" of every test; the store takes time as an argument.
pub const NOW: i64 = 1_700_000_000;
/// How long a published revocation lives (the longest access-token lifetime).
pub const REVOCATION_TTL: i64 = 3_600;
pub const CODE_TTL: i64 = 60;
pub const REFRESH_TTL: i64 = 30 * 86_400;

/// The server the PostgreSQL variants run against; absent means they pass with a note.
pub const DATABASE_URL_VAR: &str = "MCP_OAUTH_TEST_DATABASE_URL";

/// Generate a `sqlite` and a `postgres` test module, each with one `#[tokio::test]` per name,
/// calling the `async fn(TestDb)` of that name in the enclosing module.
macro_rules! backend_tests {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    $crate::helpers::run($crate::helpers::TestBackend::Sqlite, super::$name).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    $crate::helpers::run($crate::helpers::TestBackend::Postgres, super::$name).await;
                }
            )+
        }
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestBackend {
    Sqlite,
    Postgres,
}

/// A migrated database of its own, removed when the test ends.
pub struct TestDb {
    pub db: Db,
    /// The URL `db` was opened with, for tests that need a raw connection.
    pub url: String,
    cleanup: Cleanup,
}

#[derive(Clone)]
enum Cleanup {
    SqliteFile(PathBuf),
    PostgresDatabase { admin_url: String, name: String },
}

/// Run `test` on a fresh database of `backend`, then drop the database, even when the test
/// panics (the panic is re-raised afterwards).
pub async fn run<F, Fut>(backend: TestBackend, test: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(t) = TestDb::create(backend).await else {
        eprintln!("note: {DATABASE_URL_VAR} is not set; skipping the PostgreSQL variant");
        return;
    };
    let db = t.db.clone();
    let cleanup = t.cleanup.clone();
    let outcome = tokio::spawn(test(t)).await;
    db.close().await;
    cleanup.run().await;
    if let Err(e) = outcome {
        match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("test task failed: {e}"),
        }
    }
}

/// A name no other test (or earlier run) uses.
pub fn unique_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let random = RandomState::new().hash_one((std::process::id(), n));
    format!("{:x}_{n}", random)
}

impl TestDb {
    async fn create(backend: TestBackend) -> Option<Self> {
        let (url, cleanup) = match backend {
            TestBackend::Sqlite => {
                let path = std::env::temp_dir().join(format!("mcp_oauth_t_{}.db", unique_name()));
                (
                    format!("sqlite://{}?mode=rwc", path.display()),
                    Cleanup::SqliteFile(path),
                )
            }
            TestBackend::Postgres => {
                let admin_url = std::env::var(DATABASE_URL_VAR)
                    .ok()
                    .filter(|u| !u.is_empty())?;
                let name = format!("mcp_oauth_t_{}", unique_name());
                let mut admin = raw_connection(&admin_url).await;
                admin
                    .execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .await
                    .unwrap_or_else(|e| panic!("creating test database {name}: {e}"));
                admin.close().await.ok();
                (
                    with_database(&admin_url, &name),
                    Cleanup::PostgresDatabase { admin_url, name },
                )
            }
        };
        let db = Db::connect(&url, &ConnectOptions::default())
            .await
            .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
        db.migrate()
            .await
            .expect("migrations apply to a fresh database");
        Some(Self { db, url, cleanup })
    }

    /// A raw connection to this test's database, beside the store's pool.
    pub async fn raw(&self) -> AnyConnection {
        raw_connection(&self.url).await
    }

    /// `SELECT COUNT(*) FROM <table> WHERE <column> = $1`, read beside the store. The table and
    /// column names come from the tests themselves, never from data.
    pub async fn count(&self, table: &str, column: &str, value: &str) -> i64 {
        let mut conn = self.raw().await;
        let sql = format!("SELECT COUNT(*) FROM {table} WHERE {column} = $1");
        let (n,): (i64,) = sqlx::query_as(AssertSqlSafe(sql))
            .bind(value)
            .fetch_one(&mut conn)
            .await
            .expect("count query");
        conn.close().await.ok();
        n
    }

    pub async fn add_user(&self, id: &str) -> UserRow {
        let u = user(id);
        self.db.insert_user(&u).await.expect("insert user");
        u
    }

    pub async fn add_client(&self, id: &str) -> ClientRow {
        let c = client(id);
        self.db.insert_client(&c).await.expect("insert client");
        c
    }

    /// A user, a client, and an approved (not yet redeemed) authorization between them.
    pub async fn add_authorization(
        &self,
        grant_id: &str,
        client_id: &str,
        user_id: &str,
    ) -> NewAuthorization {
        let a = authorization(grant_id, client_id, user_id);
        self.db
            .insert_authorization(&a)
            .await
            .expect("insert authorization");
        a
    }

    /// An authorization whose code has been redeemed for the refresh token returned.
    pub async fn add_redeemed_grant(
        &self,
        grant_id: &str,
        client_id: &str,
        user_id: &str,
    ) -> NewRefreshToken {
        let a = self.add_authorization(grant_id, client_id, user_id).await;
        let rt = refresh_token(&format!("rt-{grant_id}"), grant_id, None);
        let redeemed = self
            .db
            .redeem_code(&a.code_hash, NOW + 1, Some(&rt), rt.expires_at)
            .await
            .expect("redeem code");
        assert!(redeemed, "a fresh code redeems");
        rt
    }
}

impl Cleanup {
    /// Best effort: a leftover temp file or database must not fail the test.
    async fn run(self) {
        match self {
            Cleanup::SqliteFile(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let mut p = path.clone().into_os_string();
                    p.push(suffix);
                    let _ = std::fs::remove_file(p);
                }
            }
            Cleanup::PostgresDatabase { admin_url, name } => {
                let Ok(mut admin) = AnyConnection::connect(&admin_url).await else {
                    return;
                };
                if let Err(e) = admin
                    .execute(AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .await
                {
                    eprintln!("note: could not drop test database {name}: {e}");
                }
                admin.close().await.ok();
            }
        }
    }
}

pub async fn raw_connection(url: &str) -> AnyConnection {
    sqlx::any::install_default_drivers();
    AnyConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"))
}

/// `url` with its database name replaced by `name` (query string kept).
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

pub fn user(id: &str) -> UserRow {
    UserRow {
        id: id.to_owned(),
        email: format!("{id}@example.test"),
        password_hash: Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned()),
        is_admin: 0,
        created_at: NOW,
        disabled_at: None,
    }
}

/// A dynamically registered public client.
pub fn client(id: &str) -> ClientRow {
    ClientRow {
        id: id.to_owned(),
        kind: "dynamic".to_owned(),
        metadata: format!(
            r#"{{"client_name":"{id}","redirect_uris":["https://{id}.example/cb"]}}"#
        ),
        secret_hash: None,
        metadata_hash: None,
        created_at: NOW,
        last_used_at: None,
        refresh_after: None,
    }
}

pub fn code_hash(grant_id: &str) -> String {
    format!("code-hash-{grant_id}")
}

pub fn authorization(grant_id: &str, client_id: &str, user_id: &str) -> NewAuthorization {
    NewAuthorization {
        grant_id: grant_id.to_owned(),
        client_id: client_id.to_owned(),
        user_id: user_id.to_owned(),
        scope: "mcp:tools".to_owned(),
        resource: "https://mcp.example/mcp".to_owned(),
        code_hash: code_hash(grant_id),
        redirect_uri: format!("https://{client_id}.example/cb"),
        redirect_uri_explicit: true,
        code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".to_owned(),
        now: NOW,
        code_expires_at: NOW + CODE_TTL,
    }
}

pub fn token_hash(id: &str) -> String {
    format!("token-hash-{id}")
}

pub fn refresh_token(id: &str, grant_id: &str, parent_id: Option<&str>) -> NewRefreshToken {
    NewRefreshToken {
        id: id.to_owned(),
        token_hash: token_hash(id),
        grant_id: grant_id.to_owned(),
        parent_id: parent_id.map(str::to_owned),
        created_at: NOW,
        expires_at: NOW + REFRESH_TTL,
    }
}

#[test]
fn with_database_replaces_only_the_database_name() {
    let cases = [
        (
            "postgres://postgres@127.0.0.1:5432/test",
            "postgres://postgres@127.0.0.1:5432/x",
        ),
        (
            "postgres://u:p@h/test?sslmode=disable",
            "postgres://u:p@h/x?sslmode=disable",
        ),
        ("postgresql://h:5432", "postgresql://h:5432/x"),
    ];
    for (url, expected) in cases {
        assert_eq!(with_database(url, "x"), expected, "database of {url}");
    }
}
