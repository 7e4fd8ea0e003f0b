//! HTTP plumbing shared by every feature: error responses, extractors, middleware, and the
//! accept loop with its per-connection timeouts and limits.

pub mod connection;
pub mod error;
pub mod extract;
pub mod middleware;
pub mod serve;
