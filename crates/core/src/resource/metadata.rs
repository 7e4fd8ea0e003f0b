//! OAuth 2.0 Protected Resource Metadata (RFC 9728 §2).

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct ProtectedResourceMetadata {
    /// The resource's canonical URI, which is also the tokens' audience.
    pub resource: String,
    /// Our issuer, byte for byte (MCP 2026-07-28: clients compare it with the AS metadata).
    pub authorization_servers: Vec<String>,
    /// The minimal scopes for basic use; never `offline_access` (MCP 2026-07-28, SEP-2207).
    pub scopes_supported: Vec<String>,
    pub bearer_methods_supported: [&'static str; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_name: Option<String>,
}

/// Where the metadata of `resource` lives: the path-inserted well-known URL (RFC 9728 §3.1).
pub fn metadata_url(resource: &str) -> String {
    match resource.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
            let path = path.trim_end_matches('/');
            if path.is_empty() {
                format!("{scheme}://{authority}/.well-known/oauth-protected-resource")
            } else {
                format!("{scheme}://{authority}/.well-known/oauth-protected-resource/{path}")
            }
        }
        None => resource.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_url_inserts_the_well_known_segment() {
        assert_eq!(
            metadata_url("https://a.example/mcp"),
            "https://a.example/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(
            metadata_url("https://a.example/auth/mcp"),
            "https://a.example/.well-known/oauth-protected-resource/auth/mcp"
        );
        assert_eq!(
            metadata_url("http://127.0.0.1:8080"),
            "http://127.0.0.1:8080/.well-known/oauth-protected-resource"
        );
    }
}
