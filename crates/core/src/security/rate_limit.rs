//! Rate limits per endpoint class (issue 8): what a request is counted against, and the
//! headers that tell a client where it stands (draft-ietf-httpapi-ratelimit-headers-09:
//! `RateLimit-Policy` for the policy, `RateLimit` for the state, `Retry-After` with a 429).
//!
//! A request is counted against its class and every identity known for it: the client and
//! user when the request names them, always the address. Hosted MCP clients (Claude,
//! ChatGPT) reach us from a few shared egress addresses, so a limit on the address alone
//! would let one busy user starve everyone behind the same provider.

use std::fmt::Write as _;
use std::net::IpAddr;

/// The endpoints limited together, each with its own quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EndpointClass {
    /// `POST /login` (besides the per-account throttle).
    SignIn,
    /// `POST /token`.
    Token,
    /// `GET` and `POST /authorize`.
    Authorization,
    /// MCP requests (Streamable HTTP and legacy SSE), once the bearer token is accepted.
    Mcp,
}

impl EndpointClass {
    pub const ALL: [EndpointClass; 4] = [
        EndpointClass::SignIn,
        EndpointClass::Token,
        EndpointClass::Authorization,
        EndpointClass::Mcp,
    ];

    /// The policy id in the headers, and the name in events and settings.
    pub const fn as_str(self) -> &'static str {
        match self {
            EndpointClass::SignIn => "sign_in",
            EndpointClass::Token => "token",
            EndpointClass::Authorization => "authorization",
            EndpointClass::Mcp => "mcp",
        }
    }
}

/// What one request is counted against: its class, and the identities known for it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RateKey {
    pub class: EndpointClass,
    pub client_id: Option<String>,
    pub user_id: Option<String>,
    pub ip: IpAddr,
}

impl RateKey {
    /// The partition key named in the `pk` parameter: which identities this bucket is for.
    pub fn partition(&self) -> &'static str {
        match (&self.client_id, &self.user_id) {
            (Some(_), Some(_)) => "client+user+ip",
            (Some(_), None) => "client+ip",
            (None, Some(_)) => "user+ip",
            (None, None) => "ip",
        }
    }
}

/// A quota: `quota` requests per `window_seconds`, replenished evenly (GCRA), with a burst
/// of the whole quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub quota: u32,
    pub window_seconds: u32,
}

/// `RateLimit-Policy: "<class>";q=<quota>;w=<window>;pk="<partition>"`. The partition key
/// names which identities the bucket is for (`ip`, `client+ip`, …), never the identities.
pub fn policy_header(class: EndpointClass, quota: Quota, key: &RateKey) -> String {
    format!(
        "\"{}\";q={};w={};pk=\"{}\"",
        class.as_str(),
        quota.quota,
        quota.window_seconds,
        key.partition()
    )
}

/// `RateLimit: "<class>";r=<remaining>;t=<seconds until the quota is whole again>`.
pub fn state_header(class: EndpointClass, remaining: u32, reset_seconds: u64) -> String {
    let mut s = String::with_capacity(32);
    let _ = write!(
        s,
        "\"{}\";r={};t={}",
        class.as_str(),
        remaining,
        reset_seconds
    );
    s
}

/// Whole seconds to wait for `wait_ms`, at least 1 (`Retry-After` has no fractions, and 0
/// would invite an immediate retry).
pub fn retry_after_seconds(wait_ms: u64) -> u64 {
    wait_ms.div_ceil(1000).max(1)
}

/// Seconds until a bucket with `remaining` of `quota` left is whole again, replenished one
/// request per `window / quota`.
pub fn reset_seconds(quota: Quota, remaining: u32) -> u64 {
    let missing = u64::from(quota.quota.saturating_sub(remaining));
    let per_request_ms = u64::from(quota.window_seconds) * 1000 / u64::from(quota.quota.max(1));
    (missing * per_request_ms).div_ceil(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(client: Option<&str>, user: Option<&str>) -> RateKey {
        RateKey {
            class: EndpointClass::Mcp,
            client_id: client.map(str::to_owned),
            user_id: user.map(str::to_owned),
            ip: IpAddr::from([203, 0, 113, 1]),
        }
    }

    #[test]
    fn headers_follow_the_draft() {
        let q = Quota {
            quota: 600,
            window_seconds: 60,
        };
        assert_eq!(
            policy_header(EndpointClass::Mcp, q, &key(Some("c"), Some("u"))),
            "\"mcp\";q=600;w=60;pk=\"client+user+ip\""
        );
        assert_eq!(
            state_header(EndpointClass::Token, 0, 7),
            "\"token\";r=0;t=7"
        );
    }

    #[test]
    fn the_partition_names_what_is_known() {
        assert_eq!(key(None, None).partition(), "ip");
        assert_eq!(key(Some("c"), None).partition(), "client+ip");
        assert_eq!(key(None, Some("u")).partition(), "user+ip");
    }

    #[test]
    fn waits_round_up_to_whole_seconds_and_never_zero() {
        assert_eq!(retry_after_seconds(0), 1);
        assert_eq!(retry_after_seconds(1), 1);
        assert_eq!(retry_after_seconds(1_000), 1);
        assert_eq!(retry_after_seconds(1_001), 2);
        let q = Quota {
            quota: 60,
            window_seconds: 60,
        };
        assert_eq!(reset_seconds(q, 60), 0, "a whole bucket is reset");
        assert_eq!(reset_seconds(q, 0), 60);
        assert_eq!(reset_seconds(q, 59), 1);
    }
}
