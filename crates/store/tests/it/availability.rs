//! Which errors mean "the database cannot be reached" (`StoreError::Unavailable`, answered
//! 503 and retried) and which are ordinary failures, with real errors from each backend.

use std::time::Duration;

use mcp_oauth_store::{Backend, ConnectOptions, Db, StoreError};
use sqlx::{Connection, Executor};

use crate::helpers::TestDb;

async fn a_refused_query_is_not_an_outage_but_a_dropped_connection_is(t: TestDb) {
    let mut conn = t.raw().await;
    let e = conn
        .execute("SELECT no_such_column FROM users")
        .await
        .expect_err("an invalid query fails");
    assert!(!StoreError::from(e).is_unavailable(), "a refused query");

    match t.db.backend() {
        Backend::Sqlite => {
            // "database is locked": another connection holds the write lock and this one
            // does not wait. SQLite is a local file; this is not an outage.
            let mut holder = t.raw().await;
            holder.execute("BEGIN EXCLUSIVE").await.unwrap();
            conn.execute("PRAGMA busy_timeout = 0").await.unwrap();
            let e = conn
                .execute("INSERT INTO throttles (key, failures, window_start) VALUES ('k', 1, 1)")
                .await
                .expect_err("the write lock is taken");
            let text = e.to_string();
            assert!(text.contains("locked"), "{text}");
            assert!(
                !StoreError::from(e).is_unavailable(),
                "SQLite busy is not an outage"
            );
            holder.execute("ROLLBACK").await.unwrap();
            holder.close().await.ok();
        }
        Backend::Postgres => {
            // What a server shutdown does to an open connection (SQLSTATE 57P01).
            let e = conn
                .execute("SELECT pg_terminate_backend(pg_backend_pid())")
                .await
                .expect_err("the backend is terminated");
            let text = e.to_string();
            assert!(
                StoreError::from(e).is_unavailable(),
                "a terminated connection: {text}"
            );
        }
    }
    drop(conn);
}

async fn a_database_server_that_refuses_connections_is_unavailable_within_the_acquire_timeout(
    t: TestDb,
) {
    if t.db.backend() != Backend::Postgres {
        return;
    }
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let options = ConnectOptions {
        acquire_timeout: Duration::from_millis(500),
        ..ConnectOptions::default()
    };
    let started = std::time::Instant::now();
    let e = Db::connect(&format!("postgres://postgres@127.0.0.1:{port}/x"), &options)
        .await
        .err()
        .expect("nothing listens there");
    assert!(e.is_unavailable(), "{e}");
    assert!(started.elapsed() < Duration::from_secs(3), "bounded");
}

backend_tests!(
    a_refused_query_is_not_an_outage_but_a_dropped_connection_is,
    a_database_server_that_refuses_connections_is_unavailable_within_the_acquire_timeout,
);
