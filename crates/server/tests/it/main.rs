//! Integration tests: the real server over real HTTP, on SQLite, and on PostgreSQL when
//! `MCP_OAUTH_TEST_DATABASE_URL` is set. One module per area.

// Shared by every module; not every module set uses every helper.
#[allow(dead_code)]
mod helpers;

mod account;
mod authorize;
mod cimd;
mod login;
mod metadata;
mod registration;
mod setup;
mod token_code;
