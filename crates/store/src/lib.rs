//! Storage for mcp-oauth: one [`Db`] over SQLite (the embedded default) or PostgreSQL,
//! chosen by the database URL.
//!
//! Both backends run the same SQL through sqlx's `Any` driver: `$N` placeholders, Unix-second
//! `BIGINT` times, text ids, `ON CONFLICT` and `RETURNING`, which SQLite (3.35+) and
//! PostgreSQL share. Only the migrations differ, one folder per dialect with the same
//! versions. Each method's doc comment states its contract: what must be atomic, and what a
//! concurrent caller sees.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod analytics;
mod clients;
mod codes;
mod consents;
mod devices;
mod housekeeping;
mod keys;
mod rate_limits;
mod revocations;
mod security;
mod sessions;
mod throttles;
mod tokens;
mod users;

pub use analytics::{
    AnalyticsRetention, EventCursor, EventFilter, EventRow, LiveGrants, RollupCursor, RollupRow,
    SeriesPoint,
};
pub use clients::ClientRow;
pub use codes::{CodeRow, NewAuthorization};
pub use consents::{ConnectedApp, ConsentRow};
pub use housekeeping::{CleanupPolicy, CleanupReport};
pub use keys::{SigningKeyRow, StoredPrivateKey};
pub use revocations::{RevocationKind, RevocationRow};
pub use security::{IpBlockRow, SecurityEventRow, SecurityFilter, SecurityTop, Triage};
pub use sessions::SessionRow;
pub use throttles::{ThrottleRow, ThrottleWrite};
pub use tokens::{GrantOwner, NewRefreshToken, RefreshRow, RotateOutcome};
pub use users::UserRow;

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint refused the write (the row exists already).
    #[error("a row with this key already exists")]
    Conflict,
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    /// The database cannot be reached right now (see [`is_unavailable`]): worth retrying
    /// later, unlike a query it refused.
    #[error("the database is unreachable: {0}")]
    Unavailable(sqlx::Error),
    #[error(transparent)]
    Database(sqlx::Error),
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl StoreError {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }

    /// SQLite answered `SQLITE_BUSY` where its busy timeout does not apply (a transaction
    /// that read, then had to write after another process wrote): worth trying again.
    pub fn is_busy(&self) -> bool {
        let sqlx_error = match self {
            Self::Database(e) | Self::Unavailable(e) => e,
            Self::Migrate(sqlx::migrate::MigrateError::Execute(e)) => e,
            _ => return false,
        };
        matches!(sqlx_error, sqlx::Error::Database(d) if d.code().as_deref() == Some("5"))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if is_unavailable(&e) {
            Self::Unavailable(e)
        } else {
            Self::Database(e)
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Map a unique-constraint violation to [`StoreError::Conflict`].
fn conflict_aware(e: sqlx::Error) -> StoreError {
    match e.as_database_error() {
        Some(db) if db.is_unique_violation() => StoreError::Conflict,
        _ => StoreError::from(e),
    }
}

/// Whether `e` says the database cannot be reached, rather than that it refused a query:
/// the connection failed (I/O, TLS), no connection could be had in time (the pool retries a
/// refused connect until its acquire timeout), the pool is closed, or PostgreSQL reported a
/// connection exception (SQLSTATE class 08) or is shutting down or starting up (57P01
/// admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now, 57P04 database_dropped,
/// 57P05 idle_session_timeout).
///
/// SQLite's errors, "database is locked" and I/O errors included, arrive as database errors
/// with numeric result codes and are not classified here: the file is local, and there is no
/// outage to wait out.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| is_unavailable_sqlstate(&code)),
        _ => false,
    }
}

fn is_unavailable_sqlstate(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "57P04" | "57P05")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn from_url(url: &str) -> Option<Self> {
        if url.starts_with("sqlite:") {
            Some(Self::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Some(Self::Postgres)
        } else {
            None
        }
    }
}

/// The database handle: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
    /// For reads that may take a while (analytics): on a SQLite file, read-only connections
    /// of their own, so they never hold the one write connection; otherwise `pool`.
    reader: AnyPool,
    backend: Backend,
    /// Ids of the analytics dimensions this process has written (see `analytics`).
    dimension_ids: std::sync::Arc<analytics::DimensionIds>,
}

/// Read connections beside the writer on a SQLite file (WAL lets them read while it writes).
const READERS: u32 = 4;

#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            max_connections: 10,
            // When PostgreSQL is down, the pool retries refused connects until this runs out,
            // so it bounds how long the request that discovers an outage waits (the ones
            // after it are answered at once; see the server's database health).
            acquire_timeout: Duration::from_secs(2),
        }
    }
}

impl Db {
    /// Connect to `url` (`sqlite://path?mode=rwc`, `sqlite::memory:`, `postgres://…`).
    pub async fn connect(url: &str, opts: &ConnectOptions) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url).ok_or_else(|| {
            StoreError::Database(sqlx::Error::Configuration(
                "database URL must start with sqlite: or postgres:".into(),
            ))
        })?;
        let connect = AnyConnectOptions::from_str(url)?;
        let mut pool = AnyPoolOptions::new()
            .max_connections(opts.max_connections)
            .acquire_timeout(opts.acquire_timeout);
        if backend == Backend::Sqlite {
            // SQLite has one writer at a time, and a writer that finds the lock taken sleeps in
            // SQLite's busy handler (up to 100 ms a step), which made the tail latency of write
            // requests climb to hundreds of milliseconds. One connection queues them in the
            // pool instead, where each waits only as long as the statements ahead of it.
            pool = pool.max_connections(1);
            // An in-memory database exists per connection, so it must be exactly one.
            if url.contains(":memory:") || url.contains("mode=memory") {
                pool = pool
                    .max_connections(1)
                    .min_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None);
            }
            pool = pool.after_connect(|conn, _meta| {
                Box::pin(async move {
                    // WAL lets readers run beside the writer; busy_timeout makes a second
                    // writer wait instead of failing; foreign keys are off by default.
                    // busy_timeout first: switching to WAL takes a lock too, and another
                    // process (the CLI beside a running server) may hold it.
                    conn.execute("PRAGMA busy_timeout = 5000").await?;
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA synchronous = NORMAL").await?;
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    Ok(())
                })
            });
        }
        let pool = pool.connect_with(connect.clone()).await?;
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let reader = if backend == Backend::Sqlite && !in_memory {
            AnyPoolOptions::new()
                .max_connections(READERS)
                .acquire_timeout(opts.acquire_timeout)
                .after_connect(|conn, _meta| {
                    Box::pin(async move {
                        conn.execute("PRAGMA busy_timeout = 5000").await?;
                        conn.execute("PRAGMA query_only = ON").await?;
                        Ok(())
                    })
                })
                .connect_lazy_with(connect)
        } else {
            pool.clone()
        };
        Ok(Self {
            pool,
            reader,
            backend,
            dimension_ids: std::sync::Arc::default(),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Apply pending migrations for this backend.
    pub async fn migrate(&self) -> Result<()> {
        match self.backend {
            Backend::Sqlite => {
                sqlx::migrate!("./migrations/sqlite")
                    .run(&self.pool)
                    .await?
            }
            Backend::Postgres => {
                sqlx::migrate!("./migrations/postgres")
                    .run(&self.pool)
                    .await?
            }
        }
        Ok(())
    }

    /// Round trip to the database, for readiness checks and the health monitor.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.reader.close().await;
        self.pool.close().await;
    }

    /// Begin a write transaction. On SQLite it takes the write lock up front (`BEGIN
    /// IMMEDIATE`): a deferred transaction that reads and then writes can fail with "database
    /// is locked" when another writer got in between, and busy_timeout cannot help then.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        let tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        Ok(tx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_failures_are_unavailable_and_query_errors_are_not() {
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        for (e, unavailable) in [
            (io, true),
            (sqlx::Error::PoolTimedOut, true),
            (sqlx::Error::PoolClosed, true),
            (sqlx::Error::RowNotFound, false),
            (sqlx::Error::Protocol("bad message".into()), false),
        ] {
            let text = e.to_string();
            assert_eq!(StoreError::from(e).is_unavailable(), unavailable, "{text}");
        }
    }

    #[test]
    fn postgres_connection_and_shutdown_sqlstates_are_unavailable() {
        for code in [
            "08000", "08003", "08006", "08001", "08004", "57P01", "57P02", "57P03",
        ] {
            assert!(is_unavailable_sqlstate(code), "{code}");
        }
        // Constraint violations, syntax errors, serialization failures, query cancellation,
        // and SQLite's numeric codes (5 = busy, 10 = I/O error, 13 = full, 14 = cannot open).
        for code in [
            "23505", "42601", "40001", "57014", "5", "10", "13", "14", "517",
        ] {
            assert!(!is_unavailable_sqlstate(code), "{code}");
        }
    }
}
