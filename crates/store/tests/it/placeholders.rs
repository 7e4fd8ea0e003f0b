//! `$N` placeholders: sqlx's SQLite driver must bind them by number, like PostgreSQL does,
//! or the shared SQL would silently swap values.

use sqlx::Connection;

use crate::helpers::{NOW, TestDb};

async fn numbered_placeholders_bind_by_number_not_by_position(t: TestDb) {
    let mut conn = t.raw().await;
    // Out of order and with $1 used twice: key = 'k', failures = 7, window_start = 9,
    // locked_until = 7.
    sqlx::query(
        "INSERT INTO throttles (key, failures, window_start, locked_until) VALUES ($3, $1, $2, $1)",
    )
    .bind(7_i64)
    .bind(9_i64)
    .bind("k")
    .execute(&mut conn)
    .await
    .expect("insert with out-of-order placeholders");

    let row: Option<(i64, i64, Option<i64>)> =
        sqlx::query_as("SELECT failures, window_start, locked_until FROM throttles WHERE window_start = $2 AND key = $1")
            .bind("k")
            .bind(9_i64)
            .fetch_optional(&mut conn)
            .await
            .expect("select with out-of-order placeholders");
    conn.close().await.ok();
    assert_eq!(
        row,
        Some((7, 9, Some(7))),
        "each $N took the N-th bound value"
    );
}

async fn a_placeholder_used_twice_in_a_store_query_binds_one_value(t: TestDb) {
    // upsert_consent writes $5 into both created_at and updated_at.
    t.add_user("alice").await;
    t.add_client("app").await;
    t.db.upsert_consent("alice", "app", "https://mcp.example/mcp", "mcp:tools", NOW)
        .await
        .expect("upsert consent");

    let mut conn = t.raw().await;
    let row: (String, i64, i64) = sqlx::query_as(
        "SELECT scope, created_at, updated_at FROM consents WHERE user_id = $1 AND client_id = $2",
    )
    .bind("alice")
    .bind("app")
    .fetch_one(&mut conn)
    .await
    .expect("read consent");
    conn.close().await.ok();
    assert_eq!(
        row,
        ("mcp:tools".to_owned(), NOW, NOW),
        "both columns got the value of $5"
    );
}

backend_tests!(
    numbered_placeholders_bind_by_number_not_by_position,
    a_placeholder_used_twice_in_a_store_query_binds_one_value,
);
