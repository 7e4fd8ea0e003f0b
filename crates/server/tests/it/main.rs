//! Integration tests: the real server over real HTTP, on SQLite, and on PostgreSQL when
//! `MCP_OAUTH_TEST_DATABASE_URL` is set. One module per area.

// Shared by every module; a filtered or partial build need not use each helper.
#[allow(dead_code)]
mod helpers;

mod account;
mod analytics;
mod analytics_export;
mod authorize;
mod cimd;
mod cli;
mod client_auth;
mod client_credentials;
mod connections;
mod database_outage;
mod demo;
mod housekeeping;
mod introspection;
mod keys;
mod login;
mod logs;
mod mcp;
mod mcp_auth;
mod mcp_limits;
mod mcp_memory;
mod mcp_sse;
mod metadata;
mod metrics;
mod registration;
mod revocation;
mod security;
mod security_page;
mod setup;
mod shared_limits;
mod tls;
mod token_code;
mod token_refresh;
