//! `grant_type=refresh_token` (OAuth 2.1 §4.3) with rotation and reuse detection.
//!
//! Every refresh token belongs to a grant (the family of tokens issued from one
//! authorization). Each use rotates it: the presented token is marked used and exactly one
//! child (its successor) is issued. Presenting a used token again is what a thief would do, so
//! it revokes the family (OAuth 2.1 §4.3.1 / Security BCP §4.14.2) — except within a short
//! grace period, while the successor has not been used, which is what a client retrying a
//! request whose response was lost looks like. Such a retry gets the *same* successor again,
//! never a second one: the family stays one chain, so reuse detection keeps working.
//!
//! ```text
//!            use (CAS used_at: NULL -> now)
//!   ACTIVE ───────────────────────────────> USED ──(successor issued, sealed beside it)
//!     │                                      │
//!     │ expires / revoked                    ├─ presented again, grace > 0,
//!     v                                      │  now - used_at <= grace, successor unused
//!   DEAD (invalid_grant)                     │    ──> the same successor, unsealed again
//!                                            │
//!                                            └─ presented again otherwise ──> REUSE:
//!                                               revoke the whole family, invalid_grant
//! ```
//!
//! The caller makes the `ACTIVE -> USED` step a compare-and-set, so two concurrent requests
//! with the same token cannot both rotate it: the loser sees USED and takes the grace branch,
//! which returns the winner's successor.
//!
//! The successor is stored only as a hash, like every token; to hand it out again it is also
//! kept *sealed* with a one-time pad derived from the presented token
//! (`successor XOR SHA-256(domain ‖ presented)`), so only a holder of the presented token can
//! open it, and a database copy alone reveals nothing. The seal is deleted once the successor
//! is used, so an old token plus a database copy cannot walk the chain either.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use super::super::error::OAuthError;
use super::authorization_code::check_bound_resource;
use crate::UnixTime;
use crate::domain::{ResourceUri, ScopeSet, SecretToken};

/// A refresh token as stored, with the state of its grant.
#[derive(Debug, Clone)]
pub struct StoredRefreshToken {
    pub client_id: String,
    /// The grant's scope; a rotated token keeps it (RFC 6749 §6) even if the access token
    /// from this request is narrowed.
    pub scope: ScopeSet,
    pub resource: ResourceUri,
    pub expires_at: UnixTime,
    pub used_at: Option<UnixTime>,
    /// The token, or its whole grant, was revoked.
    pub revoked: bool,
    /// A child of this token has itself been used.
    pub child_used: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshAction {
    /// First use: mark used, issue the successor.
    Rotate,
    /// A retry within the grace period: answer with the successor already issued.
    ReturnSuccessor,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshRejection {
    /// Replay of a rotated token: revoke the family, then answer `invalid_grant`.
    Reused,
    Rejected(OAuthError),
}

impl From<OAuthError> for RefreshRejection {
    fn from(e: OAuthError) -> Self {
        Self::Rejected(e)
    }
}

/// Decide a refresh request. Returns the action and the scope of the new access token.
pub fn check_refresh(
    token: &StoredRefreshToken,
    client_id: &str,
    requested_scope: Option<&str>,
    requested_resource: &[String],
    now: UnixTime,
    grace_seconds: i64,
) -> Result<(RefreshAction, ScopeSet), RefreshRejection> {
    if token.revoked {
        return Err(OAuthError::invalid_grant("refresh token has been revoked").into());
    }
    if token.client_id != client_id {
        return Err(OAuthError::invalid_grant("refresh token was issued to another client").into());
    }
    if now >= token.expires_at {
        return Err(OAuthError::invalid_grant("refresh token has expired").into());
    }
    let action = match token.used_at {
        None => RefreshAction::Rotate,
        // A grace of 0 means no retry at all, not "within the same second".
        Some(used) if grace_seconds > 0 && now - used <= grace_seconds && !token.child_used => {
            RefreshAction::ReturnSuccessor
        }
        Some(_) => return Err(RefreshRejection::Reused),
    };
    let scope = match requested_scope {
        None => token.scope.clone(),
        Some(raw) => {
            let requested = ScopeSet::parse(raw)
                .map_err(|_| OAuthError::invalid_scope("scope is malformed"))?;
            if !requested.is_subset(&token.scope) {
                return Err(OAuthError::invalid_scope(
                    "a refresh may narrow the granted scope, never widen it",
                )
                .into());
            }
            if requested.is_empty() {
                token.scope.clone()
            } else {
                requested
            }
        }
    };
    check_bound_resource(requested_resource, &token.resource)?;
    Ok((action, scope))
}

/// Domain separation for the pad, so it is never the hash of anything else we compute.
const SEAL_DOMAIN: &[u8] = b"mcp-oauth/refresh-successor/v1\0";

fn pad(presented: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(SEAL_DOMAIN);
    h.update(presented.as_bytes());
    h.finalize().into()
}

/// Seal the 32 random bytes of a successor token for the holder of `presented`.
pub fn seal_successor(presented: &str, successor: &[u8; 32]) -> String {
    let pad = pad(presented);
    let sealed: Vec<u8> = successor.iter().zip(pad).map(|(a, b)| a ^ b).collect();
    URL_SAFE_NO_PAD.encode(sealed)
}

/// Open a sealed successor with the token presented again. `None` for a seal that is not one
/// of ours; the caller checks the result against the successor's stored hash anyway.
pub fn open_successor(presented: &str, sealed: &str) -> Option<SecretToken> {
    let bytes = URL_SAFE_NO_PAD.decode(sealed).ok()?;
    let bytes: [u8; 32] = bytes.try_into().ok()?;
    let pad = pad(presented);
    let mut successor = [0u8; 32];
    for (i, b) in successor.iter_mut().enumerate() {
        *b = bytes[i] ^ pad[i];
    }
    Some(SecretToken::from_random(successor))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::error::ErrorCode;

    fn token() -> StoredRefreshToken {
        StoredRefreshToken {
            client_id: "c1".into(),
            scope: ScopeSet::parse("mcp offline_access").unwrap(),
            resource: ResourceUri::parse("https://as.example/mcp").unwrap(),
            expires_at: 10_000,
            used_at: None,
            revoked: false,
            child_used: false,
        }
    }

    fn rejected_code(r: Result<(RefreshAction, ScopeSet), RefreshRejection>) -> ErrorCode {
        match r {
            Err(RefreshRejection::Rejected(e)) => e.code,
            other => panic!("expected rejection, got {other:?}"),
        }
    }

    #[test]
    fn first_use_rotates_with_the_grant_scope() {
        let (action, scope) = check_refresh(&token(), "c1", None, &[], 100, 5).unwrap();
        assert_eq!(action, RefreshAction::Rotate);
        assert_eq!(scope.to_string(), "mcp offline_access");
    }

    #[test]
    fn retry_within_grace_returns_the_successor_and_later_replay_is_reuse() {
        let mut t = token();
        t.used_at = Some(100);
        assert_eq!(
            check_refresh(&t, "c1", None, &[], 105, 5).unwrap().0,
            RefreshAction::ReturnSuccessor
        );
        assert_eq!(
            check_refresh(&t, "c1", None, &[], 106, 5),
            Err(RefreshRejection::Reused)
        );
        t.child_used = true;
        assert_eq!(
            check_refresh(&t, "c1", None, &[], 101, 5),
            Err(RefreshRejection::Reused),
            "child already used"
        );
    }

    #[test]
    fn a_grace_of_zero_allows_no_retry_even_within_the_same_second() {
        let mut t = token();
        t.used_at = Some(100);
        assert_eq!(
            check_refresh(&t, "c1", None, &[], 100, 0),
            Err(RefreshRejection::Reused)
        );
    }

    #[test]
    fn only_the_presented_token_opens_its_sealed_successor() {
        let successor = [7u8; 32];
        let sealed = seal_successor("parent-token", &successor);
        assert_eq!(
            open_successor("parent-token", &sealed).unwrap(),
            SecretToken::from_random(successor)
        );
        assert_ne!(
            open_successor("another-token", &sealed).unwrap(),
            SecretToken::from_random(successor)
        );
        assert!(
            !sealed.contains(SecretToken::from_random(successor).expose()),
            "the seal is not the token"
        );
        assert_eq!(open_successor("parent-token", "not base64!"), None);
        assert_eq!(open_successor("parent-token", "AAAA"), None);
    }

    #[test]
    fn scope_may_narrow_but_not_widen() {
        let (_, s) = check_refresh(&token(), "c1", Some("mcp"), &[], 100, 5).unwrap();
        assert_eq!(s.to_string(), "mcp");
        assert_eq!(
            rejected_code(check_refresh(
                &token(),
                "c1",
                Some("mcp admin"),
                &[],
                100,
                5
            )),
            ErrorCode::InvalidScope
        );
    }

    #[test]
    fn resource_stays_bound() {
        let same = ["https://as.example/mcp".to_string()];
        assert!(check_refresh(&token(), "c1", None, &same, 100, 5).is_ok());
        let other = ["https://evil.example/mcp".to_string()];
        assert_eq!(
            rejected_code(check_refresh(&token(), "c1", None, &other, 100, 5)),
            ErrorCode::InvalidTarget
        );
    }

    #[test]
    fn dead_tokens_are_invalid_grant() {
        let mut revoked = token();
        revoked.revoked = true;
        assert_eq!(
            rejected_code(check_refresh(&revoked, "c1", None, &[], 100, 5)),
            ErrorCode::InvalidGrant
        );
        assert_eq!(
            rejected_code(check_refresh(&token(), "c2", None, &[], 100, 5)),
            ErrorCode::InvalidGrant
        );
        assert_eq!(
            rejected_code(check_refresh(&token(), "c1", None, &[], 10_000, 5)),
            ErrorCode::InvalidGrant
        );
    }
}
