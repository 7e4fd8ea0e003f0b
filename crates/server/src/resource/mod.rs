//! The protected-resource side: RFC 9728 metadata for each MCP endpoint, and the bearer layer
//! that authenticates every request to it before anything else runs.

pub mod bearer;
pub mod metadata;

use mcp_oauth_core::domain::{ResourceUri, ScopeSet};

/// One protected endpoint (Streamable HTTP at `/mcp`, legacy SSE at `/sse`).
#[derive(Debug, Clone)]
pub struct ProtectedResource {
    /// Canonical URI: the PRM `resource` and the audience its tokens must carry.
    pub resource: ResourceUri,
    /// Where its metadata is served (path-inserted well-known URL).
    pub metadata_url: String,
    /// Scopes every request needs (the PRM's `scopes_supported`).
    pub base_scopes: ScopeSet,
}

/// Who is calling, as established by the bearer layer; tools read it from the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user id (or the client id for client-credentials tokens).
    pub subject: String,
    pub client_id: String,
    pub scopes: ScopeSet,
    pub token_id: String,
    pub grant_id: Option<String>,
    pub expires_at: i64,
}
