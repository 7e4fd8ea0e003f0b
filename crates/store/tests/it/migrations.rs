//! Migrations: one folder per dialect with the same versions, applied idempotently.

use std::path::Path;

use sqlx::Connection;

use crate::helpers::{TestDb, user};

fn migration_files(dialect: &str) -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(dialect);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| {
            entry
                .expect("directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".sql"))
        .collect();
    names.sort();
    names
}

#[test]
fn both_dialects_have_the_same_migration_files() {
    let sqlite = migration_files("sqlite");
    let postgres = migration_files("postgres");
    assert!(!sqlite.is_empty(), "there is at least one migration");
    assert_eq!(
        sqlite, postgres,
        "migrations/sqlite and migrations/postgres must list the same files"
    );
}

#[test]
fn migration_versions_are_unique_and_numeric() {
    let files = migration_files("sqlite");
    let mut versions: Vec<u64> = files
        .iter()
        .map(|name| {
            let (version, _) = name
                .split_once('_')
                .unwrap_or_else(|| panic!("{name} has no <version>_ prefix"));
            version
                .parse()
                .unwrap_or_else(|_| panic!("{name} has a non-numeric version"))
        })
        .collect();
    versions.dedup();
    assert_eq!(
        versions.len(),
        files.len(),
        "no two migrations share a version: {files:?}"
    );
}

async fn migrating_again_changes_nothing(t: TestDb) {
    t.db.insert_user(&user("alice")).await.expect("insert user");

    t.db.migrate().await.expect("a second migrate succeeds");
    t.db.migrate().await.expect("a third migrate succeeds");

    let mut conn = t.raw().await;
    let (applied,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&mut conn)
        .await
        .expect("read migrations table");
    conn.close().await.ok();
    assert_eq!(
        applied as usize,
        migration_files("sqlite").len(),
        "each migration is recorded once"
    );
    assert_eq!(
        t.db.count_users().await.expect("count"),
        1,
        "data survives re-running migrations"
    );
}

async fn ping_answers_on_a_migrated_database(t: TestDb) {
    t.db.ping().await.expect("ping");
}

backend_tests!(
    migrating_again_changes_nothing,
    ping_answers_on_a_migrated_database
);
