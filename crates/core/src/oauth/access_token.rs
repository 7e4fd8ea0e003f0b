//! Access token claims: the JWT profile of RFC 9068.

use serde::{Deserialize, Serialize};

use crate::UnixTime;
use crate::domain::{ResourceUri, ScopeSet};

/// JOSE `typ` for access tokens (RFC 9068 §2.1), so that an ID token or any other JWT signed
/// with the same key can never be accepted as one.
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessTokenClaims {
    pub iss: String,
    /// The user's id, or the client's for client_credentials (RFC 9068 §2.2).
    pub sub: String,
    /// The one resource this token is for (RFC 8707, RFC 9068 §3).
    pub aud: String,
    pub client_id: String,
    pub scope: String,
    pub exp: UnixTime,
    pub iat: UnixTime,
    pub nbf: UnixTime,
    pub jti: String,
    /// The grant this token belongs to: revoking the grant revokes the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<UnixTime>,
}

impl AccessTokenClaims {
    /// Issued to a client for itself (client credentials) rather than for a user. RFC 9068 §2.2
    /// makes `sub` the client id for such tokens; user ids and client ids are both random, so a
    /// user token never has `sub == client_id`.
    pub fn is_client_only(&self) -> bool {
        self.sub == self.client_id
    }
}

pub struct MintAccessToken<'a> {
    pub issuer: &'a str,
    pub subject: &'a str,
    pub resource: &'a ResourceUri,
    pub client_id: &'a str,
    pub scope: &'a ScopeSet,
    pub grant_id: Option<&'a str>,
    pub auth_time: Option<UnixTime>,
    pub now: UnixTime,
    pub lifetime: i64,
    /// Random, from the caller.
    pub jti: String,
}

pub fn mint_claims(m: MintAccessToken<'_>) -> AccessTokenClaims {
    AccessTokenClaims {
        iss: m.issuer.to_owned(),
        sub: m.subject.to_owned(),
        aud: m.resource.as_str().to_owned(),
        client_id: m.client_id.to_owned(),
        scope: m.scope.to_string(),
        exp: m.now + m.lifetime,
        iat: m.now,
        nbf: m.now,
        jti: m.jti,
        gid: m.grant_id.map(str::to_owned),
        auth_time: m.auth_time,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClaimsError {
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token was issued by another issuer")]
    WrongIssuer,
    #[error("token was issued for another resource")]
    WrongAudience,
}

/// Checks a signature-verified token's claims (RFC 9068 §4), with `leeway` seconds of clock
/// skew allowed.
pub fn validate_claims(
    claims: &AccessTokenClaims,
    issuer: &str,
    audience: &str,
    now: UnixTime,
    leeway: i64,
) -> Result<(), ClaimsError> {
    if claims.iss != issuer {
        return Err(ClaimsError::WrongIssuer);
    }
    if claims.aud != audience {
        return Err(ClaimsError::WrongAudience);
    }
    if now >= claims.exp + leeway {
        return Err(ClaimsError::Expired);
    }
    if now + leeway < claims.nbf {
        return Err(ClaimsError::NotYetValid);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> AccessTokenClaims {
        mint_claims(MintAccessToken {
            issuer: "https://as.example",
            subject: "u1",
            resource: &ResourceUri::parse("https://as.example/mcp").unwrap(),
            client_id: "c1",
            scope: &ScopeSet::parse("mcp").unwrap(),
            grant_id: Some("g1"),
            auth_time: None,
            now: 1000,
            lifetime: 60,
            jti: "j1".into(),
        })
    }

    #[test]
    fn minted_claims_follow_rfc9068() {
        let c = claims();
        assert_eq!(
            (c.iat, c.exp, c.aud.as_str()),
            (1000, 1060, "https://as.example/mcp")
        );
        let json = serde_json::to_value(&c).unwrap();
        for k in [
            "iss",
            "sub",
            "aud",
            "client_id",
            "scope",
            "exp",
            "iat",
            "jti",
        ] {
            assert!(json.get(k).is_some(), "{k}");
        }
    }

    #[test]
    fn a_token_whose_subject_is_its_client_has_no_user() {
        let mut c = claims();
        assert!(!c.is_client_only());
        c.sub = c.client_id.clone();
        assert!(c.is_client_only());
    }

    #[test]
    fn validation_checks_issuer_audience_and_time() {
        let c = claims();
        let (iss, aud) = ("https://as.example", "https://as.example/mcp");
        assert_eq!(validate_claims(&c, iss, aud, 1030, 0), Ok(()));
        assert_eq!(
            validate_claims(&c, "https://other", aud, 1030, 0),
            Err(ClaimsError::WrongIssuer)
        );
        assert_eq!(
            validate_claims(&c, iss, "https://as.example/other", 1030, 0),
            Err(ClaimsError::WrongAudience)
        );
        assert_eq!(
            validate_claims(&c, iss, aud, 1060, 0),
            Err(ClaimsError::Expired)
        );
        assert_eq!(validate_claims(&c, iss, aud, 1060, 5), Ok(()));
        assert_eq!(
            validate_claims(&c, iss, aud, 990, 0),
            Err(ClaimsError::NotYetValid)
        );
    }
}
