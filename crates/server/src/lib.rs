//! mcp-oauth: an OAuth 2.1 authorization server for MCP clients, in one binary.
//!
//! Layout: `oauth` (authorization server endpoints), `identity` (accounts, sessions, login),
//! `http` (errors, extractors, middleware), `keys` and `revocation` (token signing and the
//! in-memory revocation list), `startup` (building and running the app), `cli` (commands).
//! Protocol decisions live in `mcp_oauth_core`, storage in `mcp_oauth_store`.
// One audited exception, allowed where it is: `memory::release` (a glibc call).
#![deny(unsafe_code)]

pub mod analytics;
pub mod cli;
pub mod clock;
pub mod config;
pub mod db_health;
pub mod demo;
pub mod housekeeping;
pub mod http;
pub mod identity;
pub mod keys;
pub mod mcp;
pub mod memory;
pub mod metrics;
pub mod oauth;
pub mod random;
pub mod resource;
pub mod revocation;
pub mod security;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod web;
