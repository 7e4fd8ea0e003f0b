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
    /// `POST /register` (RFC 7591), per address.
    Registration,
    /// Client ID metadata documents fetched on a client's behalf, per address.
    MetadataFetch,
}

impl EndpointClass {
    pub const ALL: [EndpointClass; 6] = [
        EndpointClass::SignIn,
        EndpointClass::Token,
        EndpointClass::Authorization,
        EndpointClass::Mcp,
        EndpointClass::Registration,
        EndpointClass::MetadataFetch,
    ];

    /// The policy id in the headers, and the name in events and settings.
    pub const fn as_str(self) -> &'static str {
        match self {
            EndpointClass::SignIn => "sign_in",
            EndpointClass::Token => "token",
            EndpointClass::Authorization => "authorization",
            EndpointClass::Mcp => "mcp",
            EndpointClass::Registration => "registration",
            EndpointClass::MetadataFetch => "metadata_fetch",
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
    /// A request counted against its address alone (it names no client or user yet).
    pub fn address(class: EndpointClass, ip: IpAddr) -> Self {
        RateKey {
            class,
            client_id: None,
            user_id: None,
            ip,
        }
    }

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
/// of `burst` at once (usually the whole quota).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub quota: u32,
    pub window_seconds: u32,
    pub burst: u32,
}

impl Quota {
    /// `quota` a minute, with a burst of the whole minute.
    pub const fn per_minute(quota: u32) -> Self {
        Quota {
            quota,
            window_seconds: 60,
            burst: quota,
        }
    }
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

/// Seconds until a bucket with `remaining` of its burst left is whole again, replenished one
/// request per `window / quota`.
pub fn reset_seconds(quota: Quota, remaining: u32) -> u64 {
    let missing = u64::from(quota.burst.saturating_sub(remaining));
    let per_request_ms = u64::from(quota.window_seconds) * 1000 / u64::from(quota.quota.max(1));
    (missing * per_request_ms).div_ceil(1000)
}

/// GCRA (the generic cell rate algorithm), as buckets shared by instances keep it: one
/// number per bucket, its theoretical arrival time (TAT) in microseconds. Each request moves
/// the TAT one `interval` on, starting from now at the earliest; a request that would move it
/// more than `burst` intervals past now is refused. So a full bucket allows a burst of
/// `burst` requests, then one per `window / quota`. The database statement and the Redis
/// script apply [`Gcra::take`] atomically; the helpers read the headers from its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    pub interval_us: i64,
    pub window_us: i64,
}

impl Gcra {
    pub fn new(quota: Quota) -> Self {
        let window_us = i64::from(quota.window_seconds) * 1_000_000;
        let interval_us = (window_us / i64::from(quota.quota.max(1))).max(1);
        // How far the bucket may run ahead of now: whole intervals, so that a fresh bucket
        // allows exactly `burst` requests even when the window does not divide evenly.
        Gcra {
            interval_us,
            window_us: interval_us.saturating_mul(i64::from(quota.burst.max(1))),
        }
    }

    /// One request at `now_us` on a bucket at `tat_us` (`None`: full). `Ok`: allowed, the new
    /// TAT; `Err`: refused, the TAT unchanged.
    pub fn take(&self, tat_us: Option<i64>, now_us: i64) -> Result<i64, i64> {
        let from = tat_us.map_or(now_us, |t| t.max(now_us));
        let next = from + self.interval_us;
        if next - now_us <= self.window_us {
            Ok(next)
        } else {
            Err(from)
        }
    }

    /// Requests left after one that moved the bucket to `tat_us`.
    pub fn remaining(&self, tat_us: i64, now_us: i64) -> u32 {
        let left = (self.window_us - (tat_us - now_us)) / self.interval_us;
        u32::try_from(left.max(0)).unwrap_or(u32::MAX)
    }

    /// Whole seconds until a bucket at `tat_us` is full again.
    pub fn reset_seconds(&self, tat_us: i64, now_us: i64) -> u64 {
        u64::try_from((tat_us - now_us).max(0))
            .unwrap_or(0)
            .div_ceil(1_000_000)
    }

    /// Milliseconds until a bucket at `tat_us` takes a request again.
    pub fn wait_ms(&self, tat_us: i64, now_us: i64) -> u64 {
        let wait_us = tat_us + self.interval_us - self.window_us - now_us;
        u64::try_from(wait_us.max(0)).unwrap_or(0).div_ceil(1_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_allows_a_burst_of_the_quota_then_one_per_interval() {
        let gcra = Gcra::new(Quota::per_minute(3));
        assert_eq!(gcra.interval_us, 20_000_000);
        let now = 1_000_000_000_000;
        let mut tat = None;
        for left in (0..3).rev() {
            let next = gcra.take(tat, now).expect("within the burst");
            assert_eq!(gcra.remaining(next, now), left);
            tat = Some(next);
        }
        let refused = gcra.take(tat, now).unwrap_err();
        assert_eq!(refused, now + 60_000_000);
        assert_eq!(gcra.wait_ms(refused, now), 20_000, "one interval");
        assert_eq!(gcra.reset_seconds(refused, now), 60);
        // One interval later exactly one more is allowed.
        let later = now + 20_000_000;
        let next = gcra.take(tat, later).expect("one interval later");
        assert_eq!(gcra.remaining(next, later), 0);
        assert!(gcra.take(Some(next), later).is_err());
        // A bucket whose time has long passed is full.
        let much_later = now + 3_600_000_000;
        let fresh = gcra.take(Some(next), much_later).unwrap();
        assert_eq!(gcra.remaining(fresh, much_later), 2);
    }

    #[test]
    fn gcra_burst_may_exceed_the_quota() {
        let gcra = Gcra::new(Quota {
            burst: 6,
            ..Quota::per_minute(3)
        });
        let mut tat = None;
        for _ in 0..6 {
            tat = Some(gcra.take(tat, 0).expect("within the burst"));
        }
        assert!(gcra.take(tat, 0).is_err());
        assert_eq!(gcra.wait_ms(tat.unwrap(), 0), 20_000, "then one every 20 s");
    }

    #[test]
    fn gcra_quota_that_does_not_divide_the_window_still_allows_the_whole_quota() {
        let gcra = Gcra::new(Quota {
            quota: 7,
            window_seconds: 1,
            burst: 7,
        });
        let mut tat = None;
        for _ in 0..7 {
            tat = Some(gcra.take(tat, 0).expect("within the burst"));
        }
        assert!(gcra.take(tat, 0).is_err());
    }

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
        let q = Quota::per_minute(600);
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
        let q = Quota::per_minute(60);
        assert_eq!(reset_seconds(q, 60), 0, "a whole bucket is reset");
        assert_eq!(reset_seconds(q, 0), 60);
        assert_eq!(reset_seconds(q, 59), 1);
    }
}
