//! HTTP plumbing shared by every feature: error responses, extractors, middleware.

pub mod error;
pub mod extract;
pub mod middleware;
