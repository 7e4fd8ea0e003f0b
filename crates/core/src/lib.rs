//! Pure protocol decisions for mcp-oauth.
//!
//! Everything here is a function of its inputs: the current time and any random values are
//! passed in, and nothing does I/O. The server crate loads state, calls these functions and
//! persists what they decide; the tests here pin every rule without a database or a socket.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod analytics;
pub mod domain;
pub mod mcp;
pub mod oauth;
pub mod resource;
pub mod security;

/// Seconds since the Unix epoch. Every decision takes `now` explicitly.
pub type UnixTime = i64;
