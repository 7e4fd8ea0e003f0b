//! Resource indicators (RFC 8707): the protected resource a token is for, which becomes its
//! audience (`aud`, RFC 9068 §3).

use std::fmt;

use url::Url;

/// A resource URI in canonical form (MCP authorization, "Canonical Server URI"): lower-case
/// scheme and host, no default port, no fragment, and no trailing slash. Clients disagree on
/// trailing slashes (`new URL(x).href` adds one to a bare origin), so both spellings of the
/// same resource compare equal here.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResourceUri(String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    #[error("resource is not an absolute http(s) URI (RFC 8707 §2)")]
    NotAbsolute,
    #[error("resource must not contain a fragment (RFC 8707 §2)")]
    Fragment,
}

impl ResourceUri {
    pub fn parse(raw: &str) -> Result<Self, ResourceError> {
        if raw.contains('#') {
            return Err(ResourceError::Fragment);
        }
        let url = Url::parse(raw).map_err(|_| ResourceError::NotAbsolute)?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(ResourceError::NotAbsolute);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ResourceError::NotAbsolute);
        }
        let mut canonical = url.to_string();
        while canonical.ends_with('/') && url.query().is_none() {
            canonical.pop();
        }
        Ok(Self(canonical))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ResourceUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonicalises_case_port_and_trailing_slash() {
        let canon = ResourceUri::parse("https://mcp.example.com/mcp").unwrap();
        for raw in [
            "https://mcp.example.com/mcp/",
            "HTTPS://MCP.EXAMPLE.COM/mcp",
            "https://mcp.example.com:443/mcp",
        ] {
            assert_eq!(ResourceUri::parse(raw).unwrap(), canon, "{raw}");
        }
        assert_eq!(
            ResourceUri::parse("https://example.com/").unwrap().as_str(),
            "https://example.com"
        );
        assert_ne!(
            ResourceUri::parse("https://example.com/MCP").unwrap(),
            canon
        );
    }

    #[test]
    fn rejects_fragments_and_relative_uris() {
        assert_eq!(
            ResourceUri::parse("https://a.example/mcp#x"),
            Err(ResourceError::Fragment)
        );
        assert_eq!(ResourceUri::parse("/mcp"), Err(ResourceError::NotAbsolute));
        assert_eq!(
            ResourceUri::parse("urn:x:y"),
            Err(ResourceError::NotAbsolute)
        );
    }
}
