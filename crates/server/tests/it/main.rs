//! Integration tests: the real server over real HTTP, on SQLite, and on PostgreSQL when
//! `MCP_OAUTH_TEST_DATABASE_URL` is set. One module per area.

mod helpers;

mod metadata;
mod tls;
mod token_code;
