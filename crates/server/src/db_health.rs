//! Database health: while the database is known to be unreachable, requests that need it are
//! answered `503` with `Retry-After` at once, instead of each waiting for the pool's acquire
//! timeout and failing with a 500 (issue 6, item 19); background tasks skip their work and
//! log the outage once, not once per poll. MCP calls never touch the database and go on.
//!
//! ```text
//!          a request or task gets StoreError::Unavailable (PostgreSQL only)
//!     UP ────────────────────────────────────────────────────────────────▶ DOWN
//!      ▲   (the monitor also pings every 5 s while up)                      │
//!      └───────────── a monitor ping succeeds (one every 250 ms) ◀──────────┘
//! ```
//!
//! Only a database server can be down. SQLite is a local file: its errors ("database is
//! locked", I/O) are answered as they come and never trip the flag.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use mcp_oauth_store::{Backend, Db, StoreError};

use crate::http::error::{
    DatabaseUnavailable, database_unavailable_api, database_unavailable_page,
};
use crate::http::middleware::close_if_body_unread;

/// How often the monitor pings while the database is down, and how long each ping may take.
const DOWN_PROBE_INTERVAL: Duration = Duration::from_millis(250);
const DOWN_PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// How often it pings while the database is up (bounded by the pool's acquire timeout). The
/// revocation poller reads the database four times a second as well, and reports failures.
const UP_PROBE_INTERVAL: Duration = Duration::from_secs(5);

pub struct DbHealth {
    down: AtomicBool,
    /// Whether this backend can be down at all (a server, not a file).
    tracked: bool,
    /// Wakes the monitor when a request or task finds the database down.
    tripped: Notify,
}

impl DbHealth {
    pub fn new(backend: Backend) -> Self {
        Self {
            down: AtomicBool::new(false),
            tracked: backend == Backend::Postgres,
            tripped: Notify::new(),
        }
    }

    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    /// Note a failed database call. Returns whether it was taken as the database being
    /// down, so that the caller can stay quiet: the outage is logged here, once.
    pub fn observe(&self, e: &StoreError) -> bool {
        if self.tracked && e.is_unavailable() {
            self.report_unavailable(e);
            return true;
        }
        false
    }

    /// [`observe`](Self::observe) for an error that may carry a `StoreError` in its chain.
    pub fn observe_any(&self, e: &anyhow::Error) -> bool {
        match store_error_in(e) {
            Some(store) => self.observe(store),
            None => false,
        }
    }

    /// The database could not be reached.
    pub fn report_unavailable(&self, cause: &dyn std::fmt::Display) {
        if self.tracked && !self.down.swap(true, Ordering::AcqRel) {
            tracing::error!(
                error = %cause,
                "the database is unreachable: answering 503 to requests that need it until it is back"
            );
            self.tripped.notify_one();
        }
    }

    fn mark_up(&self) {
        if self.down.swap(false, Ordering::AcqRel) {
            tracing::info!("the database is reachable again");
        }
    }
}

/// The first `StoreError` in `e`'s chain of causes.
pub fn store_error_in(e: &anyhow::Error) -> Option<&StoreError> {
    e.chain()
        .find_map(|cause| cause.downcast_ref::<StoreError>())
}

/// Watch the database: while it is down, ping it every `DOWN_PROBE_INTERVAL` and clear the
/// flag on the first answer; while up, ping now and then so that an outage is noticed even
/// when no request needs the database. The caller aborts the task at shutdown.
pub fn spawn_monitor(health: Arc<DbHealth>, db: Db) -> JoinHandle<()> {
    tokio::spawn(async move {
        if !health.tracked {
            return;
        }
        loop {
            if health.is_down() {
                tokio::time::sleep(DOWN_PROBE_INTERVAL).await;
                if let Ok(Ok(())) = tokio::time::timeout(DOWN_PROBE_TIMEOUT, db.ping()).await {
                    health.mark_up();
                }
            } else {
                tokio::select! {
                    () = tokio::time::sleep(UP_PROBE_INTERVAL) => {
                        if let Err(e) = db.ping().await {
                            health.observe(&e);
                        }
                    }
                    () = health.tripped.notified() => {}
                }
            }
        }
    })
}

/// For the JSON endpoints that need the database: `503 temporarily_unavailable` at once
/// while it is down, and trip the flag when a response says it was unreachable.
pub async fn api_needs_database(
    State(health): State<Arc<DbHealth>>,
    request: Request,
    next: Next,
) -> Response {
    gate(&health, request, next, database_unavailable_api).await
}

/// For the browser pages that need the database: an error page, as `api_needs_database`.
pub async fn page_needs_database(
    State(health): State<Arc<DbHealth>>,
    request: Request,
    next: Next,
) -> Response {
    gate(&health, request, next, database_unavailable_page).await
}

async fn gate(
    health: &DbHealth,
    request: Request,
    next: Next,
    refuse: fn() -> Response,
) -> Response {
    if health.is_down() {
        let mut response = refuse();
        close_if_body_unread(request.headers(), &mut response);
        return response;
    }
    let response = next.run(request).await;
    if response.extensions().get::<DatabaseUnavailable>().is_some() {
        health.report_unavailable(&"a request could not reach the database");
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unavailable() -> StoreError {
        StoreError::from(sqlx::Error::PoolTimedOut)
    }

    #[test]
    fn an_unreachable_postgres_trips_the_flag_and_a_refused_query_does_not() {
        let health = DbHealth::new(Backend::Postgres);
        assert!(!health.observe(&StoreError::Conflict));
        assert!(!health.is_down());
        assert!(health.observe(&unavailable()));
        assert!(health.is_down());
        health.mark_up();
        assert!(!health.is_down());
    }

    #[test]
    fn sqlite_never_counts_as_down() {
        let health = DbHealth::new(Backend::Sqlite);
        assert!(
            !health.observe(&unavailable()),
            "the caller logs the error itself"
        );
        assert!(!health.is_down(), "a local file has no outage to wait out");
    }

    #[test]
    fn a_store_error_is_found_under_context() {
        let e = anyhow::Error::from(unavailable()).context("loading the client");
        assert!(store_error_in(&e).is_some_and(StoreError::is_unavailable));
        assert!(store_error_in(&anyhow::anyhow!("other")).is_none());
    }
}
