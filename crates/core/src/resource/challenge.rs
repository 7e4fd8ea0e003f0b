//! `WWW-Authenticate: Bearer …` challenges (RFC 6750 §3, RFC 9728 §5.1), as MCP clients
//! parse them to discover the authorization server and the scopes to ask for.

use crate::domain::ScopeSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerErrorCode {
    /// 400: the request itself is malformed (RFC 6750 §3.1).
    InvalidRequest,
    /// 401: the token is missing the mark: malformed, expired, revoked, wrong audience.
    InvalidToken,
    /// 403: the token is fine but does not carry the scopes this operation needs.
    InsufficientScope,
}

impl BearerErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidToken => "invalid_token",
            Self::InsufficientScope => "insufficient_scope",
        }
    }

    pub fn status(self) -> u16 {
        match self {
            Self::InvalidRequest => 400,
            Self::InvalidToken => 401,
            Self::InsufficientScope => 403,
        }
    }
}

/// A challenge. With no `error`, it is the bare 401 sent when no credentials were presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub error: Option<BearerErrorCode>,
    pub description: Option<String>,
    /// Scopes the client should obtain: the minimal set on a bare 401, every scope the
    /// operation needs on a 403 (one challenge, not one scope at a time: MCP 2026-07-28).
    pub scope: Option<ScopeSet>,
    pub resource_metadata: String,
}

impl Challenge {
    pub fn status(&self) -> u16 {
        self.error.map_or(401, BearerErrorCode::status)
    }

    /// The header value, with every parameter as a quoted-string.
    pub fn header_value(&self) -> String {
        let mut params: Vec<String> = Vec::new();
        if let Some(e) = self.error {
            params.push(format!("error=\"{}\"", e.as_str()));
        }
        if let Some(d) = &self.description {
            params.push(format!("error_description=\"{}\"", quote(d)));
        }
        if let Some(s) = self.scope.as_ref().filter(|s| !s.is_empty()) {
            params.push(format!("scope=\"{}\"", quote(&s.to_string())));
        }
        params.push(format!(
            "resource_metadata=\"{}\"",
            quote(&self.resource_metadata)
        ));
        format!("Bearer {}", params.join(", "))
    }
}

/// Escape for an RFC 9110 quoted-string, dropping characters it cannot carry.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c == '\t' || (' '..='~').contains(&c) => out.push(c),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRM: &str = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp";

    #[test]
    fn bare_challenge_without_credentials() {
        let c = Challenge {
            error: None,
            description: None,
            scope: Some(ScopeSet::parse("mcp").unwrap()),
            resource_metadata: PRM.into(),
        };
        assert_eq!(c.status(), 401);
        assert_eq!(
            c.header_value(),
            format!("Bearer scope=\"mcp\", resource_metadata=\"{PRM}\"")
        );
    }

    #[test]
    fn error_challenges() {
        let c = Challenge {
            error: Some(BearerErrorCode::InsufficientScope),
            description: Some("needs \"more\"".into()),
            scope: Some(ScopeSet::parse("mcp tools:admin").unwrap()),
            resource_metadata: PRM.into(),
        };
        assert_eq!(c.status(), 403);
        assert_eq!(
            c.header_value(),
            format!(
                "Bearer error=\"insufficient_scope\", error_description=\"needs \\\"more\\\"\", scope=\"mcp tools:admin\", resource_metadata=\"{PRM}\""
            )
        );
        let c = Challenge {
            error: Some(BearerErrorCode::InvalidToken),
            description: None,
            scope: None,
            resource_metadata: PRM.into(),
        };
        assert_eq!(c.status(), 401);
        assert!(
            c.header_value()
                .starts_with("Bearer error=\"invalid_token\", resource_metadata=")
        );
    }
}
