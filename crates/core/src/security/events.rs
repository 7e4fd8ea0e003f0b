//! Security events (issue 8): what the detectors report, how bad each is, and the one rubric
//! that scores them.
//!
//! Every event has a [`SecurityEventKind`], a risk score from 0 to 100 and a [`Level`] that
//! follows from the score. The score is a pure function of the kind and the evidence's
//! repeat count ([`score`]): the same type with the same evidence always scores the same, and
//! an event seen again and again scores higher, up to 100.
//!

use std::fmt;
use std::net::IpAddr;

use serde_json::{Map, Value};

use crate::analytics::{Millis, clip};

/// How urgent an event is, from the score ([`Level::of_score`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Worth keeping, not worth a look on its own (an expired token).
    Info,
    /// Worth a look when it repeats (a wrong password).
    Notice,
    /// Likely an attack in progress (brute force, a token for another resource).
    Warning,
    /// A credential is being abused or a defence was probed directly (code replay, a forged
    /// token, a metadata document pointing at a private address).
    Critical,
}

impl Level {
    pub const ALL: [Level; 4] = [Level::Info, Level::Notice, Level::Warning, Level::Critical];

    /// The level of a score: critical from 80, warning from 50, notice from 20.
    pub const fn of_score(score: u8) -> Level {
        match score {
            80.. => Level::Critical,
            50..=79 => Level::Warning,
            20..=49 => Level::Notice,
            _ => Level::Info,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Notice => "notice",
            Level::Warning => "warning",
            Level::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Level> {
        Level::ALL.into_iter().find(|l| l.as_str() == s)
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every kind of security event, with the base score of a single occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SecurityEventKind {
    /// A refused password (unknown emails included).
    SignInFailed,
    /// Many failures against one account.
    BruteForceAccount,
    /// Many failures from one address.
    BruteForceIp,
    /// Failures against many accounts from one address.
    CredentialStuffing,
    /// An account was locked after repeated failures.
    AccountLocked,
    /// A bearer token that is not a token of ours at all (malformed, wrong type).
    InvalidToken,
    /// A token with a bad signature or an unknown key id.
    ForgedToken,
    ExpiredToken,
    RevokedToken,
    /// A token issued for another resource (a token passthrough attempt).
    TokenForOtherResource,
    /// A used authorization code came back (OAuth 2.1 §4.1.3).
    CodeReplay,
    /// A rotated refresh token came back after its grace period (OAuth 2.1 §4.3.1).
    RefreshReuse,
    /// A code verifier that does not match its challenge (RFC 7636 §4.6).
    PkceMismatch,
    /// An unregistered or mismatched redirect URI.
    RedirectMismatch,
    InvalidClientCredentials,
    /// A client asked for scopes it may not have.
    ScopeEscalation,
    /// Repeated `insufficient_scope` answers to one token.
    InsufficientScope,
    /// A form submission that failed the CSRF or same-origin check.
    CsrfFailure,
    /// Many registrations from one address.
    RegistrationFlood,
    /// One client registering again and again.
    RegistrationChurn,
    /// A client ID metadata document that could not be fetched or was invalid.
    MetadataDocumentFailed,
    /// A client ID metadata document URL resolving to a private address (an SSRF attempt).
    MetadataDocumentPrivateAddress,
    RateLimited,
    /// One access token used from many addresses at once.
    TokenFromManyIps,
    /// A user seen from a country not seen for them before.
    NewCountry,
    /// Requests for paths that do not exist, or known probe paths.
    Scanner,
    /// An address was blocked, automatically or by an operator.
    IpBlocked,
}

impl SecurityEventKind {
    pub const ALL: [SecurityEventKind; 27] = [
        SecurityEventKind::SignInFailed,
        SecurityEventKind::BruteForceAccount,
        SecurityEventKind::BruteForceIp,
        SecurityEventKind::CredentialStuffing,
        SecurityEventKind::AccountLocked,
        SecurityEventKind::InvalidToken,
        SecurityEventKind::ForgedToken,
        SecurityEventKind::ExpiredToken,
        SecurityEventKind::RevokedToken,
        SecurityEventKind::TokenForOtherResource,
        SecurityEventKind::CodeReplay,
        SecurityEventKind::RefreshReuse,
        SecurityEventKind::PkceMismatch,
        SecurityEventKind::RedirectMismatch,
        SecurityEventKind::InvalidClientCredentials,
        SecurityEventKind::ScopeEscalation,
        SecurityEventKind::InsufficientScope,
        SecurityEventKind::CsrfFailure,
        SecurityEventKind::RegistrationFlood,
        SecurityEventKind::RegistrationChurn,
        SecurityEventKind::MetadataDocumentFailed,
        SecurityEventKind::MetadataDocumentPrivateAddress,
        SecurityEventKind::RateLimited,
        SecurityEventKind::TokenFromManyIps,
        SecurityEventKind::NewCountry,
        SecurityEventKind::Scanner,
        SecurityEventKind::IpBlocked,
    ];

    /// The name stored, shown and sent in alerts.
    pub const fn as_str(self) -> &'static str {
        use SecurityEventKind as K;
        match self {
            K::SignInFailed => "sign_in_failed",
            K::BruteForceAccount => "brute_force_account",
            K::BruteForceIp => "brute_force_ip",
            K::CredentialStuffing => "credential_stuffing",
            K::AccountLocked => "account_locked",
            K::InvalidToken => "invalid_token",
            K::ForgedToken => "forged_token",
            K::ExpiredToken => "expired_token",
            K::RevokedToken => "revoked_token",
            K::TokenForOtherResource => "token_for_other_resource",
            K::CodeReplay => "code_replay",
            K::RefreshReuse => "refresh_reuse",
            K::PkceMismatch => "pkce_mismatch",
            K::RedirectMismatch => "redirect_mismatch",
            K::InvalidClientCredentials => "invalid_client_credentials",
            K::ScopeEscalation => "scope_escalation",
            K::InsufficientScope => "insufficient_scope",
            K::CsrfFailure => "csrf_failure",
            K::RegistrationFlood => "registration_flood",
            K::RegistrationChurn => "registration_churn",
            K::MetadataDocumentFailed => "metadata_document_failed",
            K::MetadataDocumentPrivateAddress => "metadata_document_private_address",
            K::RateLimited => "rate_limited",
            K::TokenFromManyIps => "token_from_many_ips",
            K::NewCountry => "new_country",
            K::Scanner => "scanner",
            K::IpBlocked => "ip_blocked",
        }
    }

    pub fn parse(s: &str) -> Option<SecurityEventKind> {
        SecurityEventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The score of one occurrence, before repeats (see [`score`]). Grouped by what the event
    /// means: routine failures low, patterns of abuse in the warning band, and a credential
    /// used against its own protection (replay, forgery, SSRF) critical at once.
    pub const fn base_score(self) -> u8 {
        use SecurityEventKind as K;
        match self {
            K::ExpiredToken => 5,
            K::SignInFailed
            | K::InvalidToken
            | K::InsufficientScope
            | K::MetadataDocumentFailed => 20,
            K::Scanner => 25,
            K::InvalidClientCredentials | K::RegistrationChurn | K::RateLimited | K::NewCountry => {
                30
            }
            K::CsrfFailure => 40,
            K::RevokedToken
            | K::RedirectMismatch
            | K::ScopeEscalation
            | K::AccountLocked
            | K::IpBlocked => 50,
            K::BruteForceAccount | K::BruteForceIp | K::PkceMismatch | K::RegistrationFlood => 60,
            K::TokenForOtherResource | K::TokenFromManyIps => 70,
            K::CredentialStuffing | K::MetadataDocumentPrivateAddress => 80,
            K::ForgedToken | K::CodeReplay | K::RefreshReuse => 90,
        }
    }
}

impl fmt::Display for SecurityEventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The risk score of `kind` seen `repeats` times within its detector's window (1 for a
/// single occurrence): the base score, plus 5 for each doubling of the repeats, at most 100.
/// So ten wrong passwords in a row (20 + 15) stay a notice, and a brute force that keeps
/// going for 64 attempts (60 + 30) becomes critical.
pub fn score(kind: SecurityEventKind, repeats: u64) -> u8 {
    let doublings = u64::from(repeats.max(1).ilog2());
    let score = u64::from(kind.base_score()) + 5 * doublings;
    score.min(100) as u8
}

/// The level of `kind` seen `repeats` times.
pub fn level(kind: SecurityEventKind, repeats: u64) -> Level {
    Level::of_score(score(kind, repeats))
}

/// Who an event is about, as far as the request showed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actor {
    pub ip: Option<IpAddr>,
    pub user_id: Option<String>,
    pub client_id: Option<String>,
}

/// One security event: what happened, how bad, who, and the evidence for it. Evidence holds
/// names, counts, reasons and URLs, never a token, code, password or secret, and each string
/// in it is clipped ([`clip`]), so what an attacker sends cannot grow what is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct SecurityEvent {
    pub at: Millis,
    pub kind: SecurityEventKind,
    pub score: u8,
    pub level: Level,
    pub actor: Actor,
    pub request_id: Option<String>,
    pub evidence: Map<String, Value>,
}

/// Evidence from name and value pairs.
fn evidence<const N: usize>(pairs: [(&str, Value); N]) -> Map<String, Value> {
    pairs
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => Value::String(clip(&s)),
                v => v,
            };
            (k.to_owned(), v)
        })
        .collect()
}

/// One constructor per kind, each taking the evidence that kind carries. The actor and the
/// request id are added with [`SecurityEvent::actor`] and [`SecurityEvent::request_id`].
impl SecurityEvent {
    fn new<const N: usize>(
        at: Millis,
        kind: SecurityEventKind,
        repeats: u64,
        pairs: [(&str, Value); N],
    ) -> Self {
        let score = score(kind, repeats);
        Self {
            at,
            kind,
            score,
            level: Level::of_score(score),
            actor: Actor::default(),
            request_id: None,
            evidence: evidence(pairs),
        }
    }

    pub fn actor(mut self, actor: Actor) -> Self {
        self.actor = actor;
        self
    }

    pub fn request_id(mut self, request_id: Option<&str>) -> Self {
        self.request_id = request_id.map(clip);
        self
    }

    /// A refused sign-in: `reason` is `wrong_password`, `unknown_account` or `locked`.
    /// The account is named only when it exists (a mistyped email may be a password).
    pub fn sign_in_failed(at: Millis, reason: &str, account: Option<&str>) -> Self {
        let mut e = Self::new(
            at,
            SecurityEventKind::SignInFailed,
            1,
            [("reason", reason.into())],
        );
        if let Some(a) = account {
            e.evidence.insert("account".into(), clip(a).into());
        }
        e
    }

    /// `failures` refused sign-ins for one account in `window_ms`.
    pub fn brute_force_account(
        at: Millis,
        account: &str,
        failures: u64,
        window_ms: Millis,
    ) -> Self {
        Self::new(
            at,
            SecurityEventKind::BruteForceAccount,
            failures,
            [
                ("account", account.into()),
                ("failures", failures.into()),
                ("window_seconds", (window_ms / 1000).into()),
            ],
        )
    }

    /// `failures` refused sign-ins from one address in `window_ms`.
    pub fn brute_force_ip(at: Millis, failures: u64, window_ms: Millis) -> Self {
        Self::new(
            at,
            SecurityEventKind::BruteForceIp,
            failures,
            [
                ("failures", failures.into()),
                ("window_seconds", (window_ms / 1000).into()),
            ],
        )
    }

    /// Refused sign-ins for `accounts` distinct accounts from one address in `window_ms`.
    pub fn credential_stuffing(at: Millis, accounts: u64, window_ms: Millis) -> Self {
        Self::new(
            at,
            SecurityEventKind::CredentialStuffing,
            accounts,
            [
                ("accounts", accounts.into()),
                ("window_seconds", (window_ms / 1000).into()),
            ],
        )
    }

    /// Sign-ins to `account` refused until `until` (Unix seconds) after `failures` failures.
    pub fn account_locked(at: Millis, account: &str, failures: u64, until: i64) -> Self {
        Self::new(
            at,
            SecurityEventKind::AccountLocked,
            1,
            [
                ("account", account.into()),
                ("failures", failures.into()),
                ("locked_until", until.into()),
            ],
        )
    }

    /// A bearer token that is not a token of ours at all; `reason` says how.
    pub fn invalid_token(at: Millis, reason: &str) -> Self {
        Self::new(
            at,
            SecurityEventKind::InvalidToken,
            1,
            [("reason", reason.into())],
        )
    }

    /// A token in our format with a bad signature (`bad_signature`) or a key id we never
    /// had (`unknown_key_id`, with the id).
    pub fn forged_token(at: Millis, reason: &str, key_id: Option<&str>) -> Self {
        let mut e = Self::new(
            at,
            SecurityEventKind::ForgedToken,
            1,
            [("reason", reason.into())],
        );
        if let Some(kid) = key_id {
            e.evidence.insert("key_id".into(), clip(kid).into());
        }
        e
    }

    /// A token of ours that expired at `expired_at` (Unix seconds).
    pub fn expired_token(at: Millis, token_id: &str, expired_at: i64) -> Self {
        Self::new(
            at,
            SecurityEventKind::ExpiredToken,
            1,
            [
                ("token_id", token_id.into()),
                ("expired_at", expired_at.into()),
            ],
        )
    }

    pub fn revoked_token(at: Millis, token_id: &str) -> Self {
        Self::new(
            at,
            SecurityEventKind::RevokedToken,
            1,
            [("token_id", token_id.into())],
        )
    }

    /// A token of ours whose audience is `audience`, not this resource (RFC 8707; the MCP
    /// specification forbids token passthrough).
    pub fn token_for_other_resource(at: Millis, token_id: &str, audience: &str) -> Self {
        Self::new(
            at,
            SecurityEventKind::TokenForOtherResource,
            1,
            [("token_id", token_id.into()), ("audience", audience.into())],
        )
    }

    /// A used authorization code presented again; the grant it issued is revoked.
    pub fn code_replay(at: Millis, grant_revoked: bool) -> Self {
        Self::new(
            at,
            SecurityEventKind::CodeReplay,
            1,
            [("grant_revoked", grant_revoked.into())],
        )
    }

    /// A rotated refresh token presented again; the grant is revoked.
    pub fn refresh_reuse(at: Millis, grant_revoked: bool) -> Self {
        Self::new(
            at,
            SecurityEventKind::RefreshReuse,
            1,
            [("grant_revoked", grant_revoked.into())],
        )
    }

    pub fn pkce_mismatch(at: Millis, method: &str) -> Self {
        Self::new(
            at,
            SecurityEventKind::PkceMismatch,
            1,
            [("method", method.into())],
        )
    }

    /// A redirect URI that is not registered for the client; `step` is `authorize` or
    /// `token`.
    pub fn redirect_mismatch(at: Millis, step: &str, redirect_uri: &str) -> Self {
        Self::new(
            at,
            SecurityEventKind::RedirectMismatch,
            1,
            [("step", step.into()), ("redirect_uri", redirect_uri.into())],
        )
    }

    /// Client authentication failed with `method` (RFC 6749 §5.2 `invalid_client`).
    pub fn invalid_client_credentials(at: Millis, method: &str) -> Self {
        Self::new(
            at,
            SecurityEventKind::InvalidClientCredentials,
            1,
            [("auth_method", method.into())],
        )
    }

    /// Scopes asked for beyond what the client may have.
    pub fn scope_escalation(at: Millis, requested: &str, refused: &str) -> Self {
        Self::new(
            at,
            SecurityEventKind::ScopeEscalation,
            1,
            [("requested", requested.into()), ("refused", refused.into())],
        )
    }

    /// `repeats` `insufficient_scope` answers to one token; `required` is what was needed.
    pub fn insufficient_scope(at: Millis, token_id: &str, required: &str, repeats: u64) -> Self {
        Self::new(
            at,
            SecurityEventKind::InsufficientScope,
            repeats,
            [
                ("token_id", token_id.into()),
                ("required", required.into()),
                ("repeats", repeats.into()),
            ],
        )
    }

    /// A form post that failed its CSRF token or same-origin check.
    pub fn csrf_failure(at: Millis, form: &str, check: &str) -> Self {
        Self::new(
            at,
            SecurityEventKind::CsrfFailure,
            1,
            [("form", form.into()), ("check", check.into())],
        )
    }

    /// `registrations` dynamic registrations from one address, past its limit.
    pub fn registration_flood(at: Millis, registrations: u64) -> Self {
        Self::new(
            at,
            SecurityEventKind::RegistrationFlood,
            registrations,
            [("registrations", registrations.into())],
        )
    }

    /// The same client (by name and redirect URIs) registered `registrations` times.
    pub fn registration_churn(at: Millis, client_name: &str, registrations: u64) -> Self {
        Self::new(
            at,
            SecurityEventKind::RegistrationChurn,
            registrations,
            [
                ("client_name", client_name.into()),
                ("registrations", registrations.into()),
            ],
        )
    }

    /// A client ID metadata document at `url` that could not be used; `reason` says why.
    pub fn metadata_document_failed(at: Millis, url: &str, reason: &str) -> Self {
        Self::new(
            at,
            SecurityEventKind::MetadataDocumentFailed,
            1,
            [("url", url.into()), ("reason", reason.into())],
        )
    }

    /// A client ID metadata document URL whose host resolved to a private address.
    pub fn metadata_document_private_address(at: Millis, url: &str, address: &str) -> Self {
        Self::new(
            at,
            SecurityEventKind::MetadataDocumentPrivateAddress,
            1,
            [("url", url.into()), ("address", address.into())],
        )
    }

    /// Requests to `endpoint` refused by a rate limit, `repeats` of them so far.
    pub fn rate_limited(at: Millis, endpoint: &str, repeats: u64) -> Self {
        Self::new(
            at,
            SecurityEventKind::RateLimited,
            repeats,
            [("endpoint", endpoint.into()), ("repeats", repeats.into())],
        )
    }

    /// One access token used from `addresses` addresses within `window_ms`.
    pub fn token_from_many_ips(
        at: Millis,
        token_id: &str,
        addresses: u64,
        window_ms: Millis,
    ) -> Self {
        Self::new(
            at,
            SecurityEventKind::TokenFromManyIps,
            addresses,
            [
                ("token_id", token_id.into()),
                ("addresses", addresses.into()),
                ("window_seconds", (window_ms / 1000).into()),
            ],
        )
    }

    /// A user seen from `country`, not one of the countries seen for them before.
    pub fn new_country(at: Millis, country: &str, known: &[String]) -> Self {
        Self::new(
            at,
            SecurityEventKind::NewCountry,
            1,
            [
                ("country", country.into()),
                ("known_countries", known.join(",").into()),
            ],
        )
    }

    /// The address was blocked until `until` (Unix ms; `None`: until unblocked) by `by`
    /// (`auto` or an operator) for `reason`.
    pub fn ip_blocked(at: Millis, reason: &str, until: Option<Millis>, by: &str) -> Self {
        Self::new(
            at,
            SecurityEventKind::IpBlocked,
            1,
            [
                ("reason", reason.into()),
                ("until", until.into()),
                ("by", by.into()),
            ],
        )
    }

    /// An address asking for `path`, a probe path or one of `repeats` that do not exist.
    pub fn scanner(at: Millis, path: &str, repeats: u64) -> Self {
        Self::new(
            at,
            SecurityEventKind::Scanner,
            repeats,
            [("path", path.into()), ("repeats", repeats.into())],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_parse_back() {
        let mut names: Vec<&str> = SecurityEventKind::ALL.iter().map(|k| k.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), SecurityEventKind::ALL.len());
        for k in SecurityEventKind::ALL {
            assert_eq!(SecurityEventKind::parse(k.as_str()), Some(k));
        }
        for l in Level::ALL {
            assert_eq!(Level::parse(l.as_str()), Some(l));
        }
        assert_eq!(SecurityEventKind::parse("nope"), None);
    }

    #[test]
    fn repeats_raise_the_score_monotonically_up_to_100() {
        for k in SecurityEventKind::ALL {
            let mut last = score(k, 1);
            assert_eq!(last, k.base_score(), "{k}: one occurrence scores its base");
            for repeats in 2..5_000 {
                let s = score(k, repeats);
                assert!(s >= last && s <= 100, "{k} at {repeats}");
                last = s;
            }
            assert_eq!(score(k, 0), score(k, 1), "{k}: no repeats counts as one");
        }
        assert_eq!(score(SecurityEventKind::CodeReplay, u64::MAX), 100);
    }

    #[test]
    fn levels_follow_the_documented_bands() {
        use SecurityEventKind as K;
        assert_eq!(level(K::ExpiredToken, 1), Level::Info);
        assert_eq!(level(K::SignInFailed, 1), Level::Notice);
        assert_eq!(level(K::SignInFailed, 10), Level::Notice);
        assert_eq!(level(K::BruteForceAccount, 1), Level::Warning);
        assert_eq!(level(K::BruteForceAccount, 64), Level::Critical);
        for k in [K::CodeReplay, K::RefreshReuse, K::ForgedToken] {
            assert_eq!(level(k, 1), Level::Critical, "{k}");
        }
        assert_eq!(Level::of_score(19), Level::Info);
        assert_eq!(Level::of_score(20), Level::Notice);
        assert_eq!(Level::of_score(50), Level::Warning);
        assert_eq!(Level::of_score(80), Level::Critical);
    }
}
