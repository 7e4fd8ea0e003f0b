//! The storage suite: every behaviour the store promises, run against SQLite always and
//! against PostgreSQL when `MCP_OAUTH_TEST_DATABASE_URL` names a server (CI always does).
//!
//! Each test is an `async fn(TestDb)` in its area's module; `backend_tests!` at the end of the
//! module turns it into `<area>::sqlite::<name>` and `<area>::postgres::<name>`, each on a
//! fresh, migrated database of its own.

#[macro_use]
mod helpers;

mod analytics;
mod availability;
mod clients;
mod codes;
mod consents;
mod housekeeping;
mod keys;
mod migrations;
mod placeholders;
mod refresh;
mod revocations;
mod throttles;
mod users;
