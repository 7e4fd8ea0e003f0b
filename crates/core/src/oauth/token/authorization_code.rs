//! `grant_type=authorization_code` (OAuth 2.1 §4.1.3).
//!
//! Storage contract (the caller's side of it): the code row is looked up by hash and kept
//! after use, so that a replayed code still finds its grant and every token issued from it
//! can be revoked (OAuth 2.1 §4.1.2: "SHOULD revoke all tokens previously issued based on
//! that authorization code"). The code is consumed only once this check has passed, so a
//! request that fails here leaves the code usable.

use super::super::error::OAuthError;
use crate::UnixTime;
use crate::domain::{CodeChallenge, CodeVerifier, ResourceUri, ScopeSet};
use crate::security::events::SecurityEventKind;

/// An authorization code as stored.
#[derive(Debug, Clone)]
pub struct StoredCode {
    pub client_id: String,
    pub redirect_uri: String,
    pub redirect_uri_explicit: bool,
    pub code_challenge: CodeChallenge,
    pub scope: ScopeSet,
    pub resource: ResourceUri,
    pub expires_at: UnixTime,
    pub consumed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeRejection {
    /// The code was already used: revoke its grant, then answer `invalid_grant`.
    Replayed,
    Rejected(OAuthError),
    /// Refused, and a sign of an attack worth a security event: a redirect URI other than
    /// the one authorized, or a verifier that does not match the challenge (RFC 7636 §4.6).
    Suspicious(SecurityEventKind, OAuthError),
}

impl From<OAuthError> for CodeRejection {
    fn from(e: OAuthError) -> Self {
        Self::Rejected(e)
    }
}

pub struct CodeExchange<'a> {
    pub client_id: &'a str,
    pub redirect_uri: Option<&'a str>,
    pub code_verifier: Option<&'a str>,
    pub resource: &'a [String],
}

/// Decide whether `code` may be exchanged by this request.
pub fn check_code_exchange(
    code: &StoredCode,
    req: &CodeExchange<'_>,
    now: UnixTime,
) -> Result<(), CodeRejection> {
    if code.consumed {
        return Err(CodeRejection::Replayed);
    }
    if code.client_id != req.client_id {
        return Err(
            OAuthError::invalid_grant("authorization code was issued to another client").into(),
        );
    }
    if now >= code.expires_at {
        return Err(OAuthError::invalid_grant("authorization code has expired").into());
    }
    match req.redirect_uri {
        Some(r) if r != code.redirect_uri => {
            return Err(CodeRejection::Suspicious(
                SecurityEventKind::RedirectMismatch,
                OAuthError::invalid_grant("redirect_uri does not match the authorization request"),
            ));
        }
        None if code.redirect_uri_explicit => {
            return Err(OAuthError::invalid_request("redirect_uri is required").into());
        }
        _ => {}
    }
    let verifier = req
        .code_verifier
        .ok_or_else(|| OAuthError::invalid_request("code_verifier is required (PKCE)"))?;
    let verifier =
        CodeVerifier::parse(verifier).map_err(|e| OAuthError::invalid_grant(e.to_string()))?;
    if !code.code_challenge.is_satisfied_by(&verifier) {
        return Err(CodeRejection::Suspicious(
            SecurityEventKind::PkceMismatch,
            OAuthError::invalid_grant("code_verifier does not match the code_challenge"),
        ));
    }
    check_bound_resource(req.resource, &code.resource)?;
    Ok(())
}

/// A token request may repeat the bound resource, never change it (RFC 8707 §2.2).
pub fn check_bound_resource(requested: &[String], bound: &ResourceUri) -> Result<(), OAuthError> {
    match requested {
        [] => Ok(()),
        [one] => match ResourceUri::parse(one) {
            Ok(r) if &r == bound => Ok(()),
            Ok(_) => Err(OAuthError::invalid_target(
                "resource differs from the one authorized",
            )),
            Err(e) => Err(OAuthError::invalid_target(e.to_string())),
        },
        _ => Err(OAuthError::invalid_target(
            "only one resource may be requested",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::error::ErrorCode;

    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    fn code() -> StoredCode {
        StoredCode {
            client_id: "c1".into(),
            redirect_uri: "http://127.0.0.1:5000/cb".into(),
            redirect_uri_explicit: true,
            code_challenge: CodeChallenge::parse(Some(CHALLENGE), Some("S256")).unwrap(),
            scope: ScopeSet::parse("mcp").unwrap(),
            resource: ResourceUri::parse("https://as.example/mcp").unwrap(),
            expires_at: 1_000,
            consumed: false,
        }
    }

    fn req() -> CodeExchange<'static> {
        CodeExchange {
            client_id: "c1",
            redirect_uri: Some("http://127.0.0.1:5000/cb"),
            code_verifier: Some(VERIFIER),
            resource: &[],
        }
    }

    fn code_of(r: Result<(), CodeRejection>) -> ErrorCode {
        match r {
            Err(CodeRejection::Rejected(e) | CodeRejection::Suspicious(_, e)) => e.code,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn valid_exchange_passes() {
        assert_eq!(check_code_exchange(&code(), &req(), 999), Ok(()));
    }

    #[test]
    fn consumed_code_is_a_replay_whoever_presents_it() {
        let mut c = code();
        c.consumed = true;
        assert_eq!(
            check_code_exchange(&c, &req(), 10),
            Err(CodeRejection::Replayed)
        );
        let other = CodeExchange {
            client_id: "c2",
            ..req()
        };
        assert_eq!(
            check_code_exchange(&c, &other, 10),
            Err(CodeRejection::Replayed)
        );
    }

    #[test]
    fn each_mismatch_is_refused() {
        let c = code();
        let table: Vec<(CodeExchange<'static>, UnixTime, ErrorCode, &str)> = vec![
            (
                CodeExchange {
                    client_id: "c2",
                    ..req()
                },
                10,
                ErrorCode::InvalidGrant,
                "other client",
            ),
            (req(), 1_000, ErrorCode::InvalidGrant, "expired"),
            (
                CodeExchange {
                    redirect_uri: Some("http://127.0.0.1:5001/cb"),
                    ..req()
                },
                10,
                ErrorCode::InvalidGrant,
                "redirect differs",
            ),
            (
                CodeExchange {
                    redirect_uri: None,
                    ..req()
                },
                10,
                ErrorCode::InvalidRequest,
                "redirect missing",
            ),
            (
                CodeExchange {
                    code_verifier: None,
                    ..req()
                },
                10,
                ErrorCode::InvalidRequest,
                "verifier missing",
            ),
            (
                CodeExchange {
                    code_verifier: Some("x"),
                    ..req()
                },
                10,
                ErrorCode::InvalidGrant,
                "verifier malformed",
            ),
            (
                CodeExchange {
                    code_verifier: Some("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
                    ..req()
                },
                10,
                ErrorCode::InvalidGrant,
                "verifier wrong",
            ),
        ];
        for (r, now, expected, why) in table {
            assert_eq!(code_of(check_code_exchange(&c, &r, now)), expected, "{why}");
        }
    }

    #[test]
    fn a_wrong_redirect_or_verifier_is_suspicious_and_other_mistakes_are_not() {
        let c = code();
        let kind = |r: CodeExchange<'static>| match check_code_exchange(&c, &r, 10) {
            Err(CodeRejection::Suspicious(kind, _)) => Some(kind),
            _ => None,
        };
        assert_eq!(
            kind(CodeExchange {
                redirect_uri: Some("https://evil.example/cb"),
                ..req()
            }),
            Some(SecurityEventKind::RedirectMismatch)
        );
        assert_eq!(
            kind(CodeExchange {
                code_verifier: Some("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
                ..req()
            }),
            Some(SecurityEventKind::PkceMismatch)
        );
        assert_eq!(
            kind(CodeExchange {
                code_verifier: None,
                ..req()
            }),
            None,
            "a client that forgot PKCE is a bug, not an attack"
        );
    }

    #[test]
    fn resource_may_repeat_but_not_change() {
        let c = code();
        let same = ["https://as.example/mcp/".to_string()];
        assert_eq!(
            check_code_exchange(
                &c,
                &CodeExchange {
                    resource: &same,
                    ..req()
                },
                10
            ),
            Ok(())
        );
        let other = ["https://as.example/other".to_string()];
        assert_eq!(
            code_of(check_code_exchange(
                &c,
                &CodeExchange {
                    resource: &other,
                    ..req()
                },
                10
            )),
            ErrorCode::InvalidTarget
        );
    }
}
