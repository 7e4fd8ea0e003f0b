//! Resource server decisions (the protected MCP endpoints): RFC 9728 metadata, RFC 6750
//! bearer extraction and challenges, scope checks with a hierarchy.

pub mod bearer;
pub mod challenge;
pub mod metadata;
pub mod scopes;
