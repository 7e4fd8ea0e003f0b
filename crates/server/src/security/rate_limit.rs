//! Rate limits per endpoint class: one GCRA limiter (`governor`) per class in each instance,
//! keyed by the request's [`RateKey`] (class, client, user, address), and, when instances
//! share their buckets (`rate_limits.shared`), the same GCRA in the database or in Redis.
//! Each answer carries the draft `RateLimit-Policy` / `RateLimit` headers; a refusal is a 429
//! with `Retry-After`.
//!
//! With shared buckets, a request is first counted locally (a client over its quota on this
//! instance alone is refused without a round trip), then in the shared bucket, which decides.
//! A shared refusal is remembered here until it ends, so a refused client that keeps sending
//! costs no further round trips. If the shared store fails or is slow, the local decision
//! stands, and for the next five seconds no request waits for the store: each instance then
//! allows the whole quota (logged, at most every ten seconds).
//!
//! Memory is bounded: keys are hashed to 64 bits with a per-process random seed (an attacker
//! cannot aim collisions), and past `rate_limits.max_keys` per class the idle ones are
//! dropped; if none are, new keys share one overflow bucket (so a flood of fresh addresses is
//! limited as one) rather than grow the map. The shared store holds one row or key per bucket
//! used in the last minute; the overflow is one bucket there too.

use std::hash::{BuildHasher, RandomState};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use governor::clock::{Clock as _, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::{DefaultKeyedRateLimiter, Quota as GcraQuota, RateLimiter};

use mcp_oauth_core::security::rate_limit::{
    EndpointClass, Gcra, Quota, RateKey, policy_header, reset_seconds, retry_after_seconds,
    state_header,
};
use mcp_oauth_store::Db;

use crate::config::{RateLimitSettings, Settings, SharedLimits};

static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

type Limiter = DefaultKeyedRateLimiter<u64, StateInformationMiddleware>;

/// The key every new key shares once a class holds `max_keys`.
const OVERFLOW: u64 = 0;

/// How long a request waits for the shared store before the local decision stands.
const SHARED_TIMEOUT: Duration = Duration::from_millis(250);

/// After the shared store fails, how long instances decide alone before trying it again, so
/// that an outage costs each request nothing rather than the timeout.
const SHARED_RETRY_AFTER_MS: i64 = 5_000;

/// Shared refusals remembered, at most (the oldest are forgotten first).
const REMEMBERED_REFUSALS: usize = 10_000;

struct ClassLimiter {
    quota: Quota,
    limiter: Limiter,
}

/// Where a request stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateDecision {
    Allowed {
        policy: String,
        state: String,
    },
    Refused {
        policy: String,
        state: String,
        retry_after: u64,
    },
}

impl RateDecision {
    /// Put the headers on a response (and `Retry-After` on a refusal).
    pub fn apply(&self, headers: &mut HeaderMap) {
        let (policy, state, retry) = match self {
            RateDecision::Allowed { policy, state } => (policy, state, None),
            RateDecision::Refused {
                policy,
                state,
                retry_after,
            } => (policy, state, Some(*retry_after)),
        };
        for (name, value) in [(&RATELIMIT_POLICY, policy), (&RATELIMIT, state)] {
            if let Ok(v) = HeaderValue::from_str(value) {
                headers.insert(name.clone(), v);
            }
        }
        if let Some(seconds) = retry {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
    }

    pub fn is_refused(&self) -> bool {
        matches!(self, RateDecision::Refused { .. })
    }
}

pub struct RateLimits {
    /// In the order of `EndpointClass::ALL` (see `index`); `None` when the class is unlimited.
    classes: [Option<ClassLimiter>; EndpointClass::ALL.len()],
    max_keys: usize,
    hasher: RandomState,
    shared: Option<SharedBuckets>,
    /// (class, local key) → the time (Unix ms) a refusal by the shared bucket ends. The class
    /// is part of it because every class's overflow bucket has the same local key.
    refusals: quick_cache::sync::Cache<(EndpointClass, u64), i64>,
    /// When the last failure of the shared store was logged (Unix ms).
    last_failure_logged: AtomicI64,
    /// Until when (Unix ms) the shared store is left alone after a failure.
    shared_down_until: AtomicI64,
}

/// Buckets every instance shares.
pub enum SharedBuckets {
    Database(Db),
    Redis(RedisBuckets),
}

impl SharedBuckets {
    /// The shared store `settings` ask for (`None`: each instance counts alone). Redis is
    /// connected here, so that a wrong `redis_url` stops the start with one line.
    pub async fn for_settings(
        settings: &crate::config::Settings,
        db: &Db,
    ) -> anyhow::Result<Option<Self>> {
        let mode = settings
            .rate_limits
            .shared
            .resolve(db.backend(), settings.redis_url.is_some());
        Ok(match (mode, &settings.redis_url) {
            (SharedLimits::Database, _) => Some(SharedBuckets::Database(db.clone())),
            (SharedLimits::Redis, Some(url)) => {
                use secrecy::ExposeSecret as _;
                Some(SharedBuckets::Redis(
                    RedisBuckets::connect(url.expose_secret()).await?,
                ))
            }
            _ => None,
        })
    }

    async fn take(
        &self,
        bucket: &str,
        now_us: i64,
        gcra: Gcra,
    ) -> anyhow::Result<Result<i64, i64>> {
        match self {
            SharedBuckets::Database(db) => Ok(db
                .take_rate_limit(bucket, now_us, gcra.interval_us, gcra.window_us)
                .await?),
            SharedBuckets::Redis(redis) => redis.take(bucket, now_us, gcra).await,
        }
    }
}

/// [`Gcra::take`] in Redis, atomically: a script runs alone. The bucket's key expires when it
/// is full again. Times are integers of microseconds (exact in Lua's doubles until 2255), and
/// written with `%d`, since Lua would print a number that large in exponent form.
const GCRA_SCRIPT: &str = r"
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
local nxt = tat + interval
if nxt - now > window then return {0, string.format('%d', tat)} end
redis.call('SET', KEYS[1], string.format('%d', nxt), 'PX', math.floor((nxt - now) / 1000) + 1000)
return {1, string.format('%d', nxt)}
";

pub struct RedisBuckets {
    connection: redis::aio::ConnectionManager,
    script: redis::Script,
}

impl RedisBuckets {
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let shown = crate::startup::redact_url(url);
        let client = redis::Client::open(url)
            .map_err(|e| anyhow::anyhow!("redis_url: {shown} is not a Redis URL: {e}"))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(SHARED_TIMEOUT))
            .set_number_of_retries(2);
        let connection = redis::aio::ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| anyhow::anyhow!("cannot connect to Redis at {shown} (redis_url): {e}"))?;
        Ok(Self {
            connection,
            script: redis::Script::new(GCRA_SCRIPT),
        })
    }

    async fn take(
        &self,
        bucket: &str,
        now_us: i64,
        gcra: Gcra,
    ) -> anyhow::Result<Result<i64, i64>> {
        let mut connection = self.connection.clone();
        let (taken, tat): (i64, i64) = self
            .script
            .key(format!("mcp-oauth:ratelimit:{bucket}"))
            .arg(now_us)
            .arg(gcra.interval_us)
            .arg(gcra.window_us)
            .invoke_async(&mut connection)
            .await?;
        Ok(if taken == 1 { Ok(tat) } else { Err(tat) })
    }
}

/// The shared bucket of `key`: its class and a digest of the identities (the same on every
/// instance; the identities themselves are not stored).
fn shared_bucket(key: &RateKey, overflow: bool) -> String {
    let class = key.class.as_str();
    if overflow {
        return format!("{class}:overflow");
    }
    let mut input = Vec::with_capacity(128);
    for part in [
        key.client_id.as_deref().unwrap_or(""),
        key.user_id.as_deref().unwrap_or(""),
        &key.ip.to_string(),
    ] {
        // Length-prefixed, so that no two different keys give the same bytes.
        input.extend_from_slice(&(part.len() as u64).to_be_bytes());
        input.extend_from_slice(part.as_bytes());
    }
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &input);
    let mut bucket = format!("{class}:");
    for b in &digest.as_ref()[..16] {
        use std::fmt::Write as _;
        let _ = write!(bucket, "{b:02x}");
    }
    bucket
}

/// The position of `class` in `EndpointClass::ALL` (and in `RateLimits::classes`).
fn index(class: EndpointClass) -> usize {
    match class {
        EndpointClass::SignIn => 0,
        EndpointClass::Token => 1,
        EndpointClass::Authorization => 2,
        EndpointClass::Mcp => 3,
        EndpointClass::Registration => 4,
        EndpointClass::MetadataFetch => 5,
    }
}

impl RateLimits {
    /// The limits `settings` ask for: the four classes of `rate_limits` (all off with
    /// `rate_limits.enabled = false`, one at `0`), and registrations and metadata-document
    /// fetches per address, which keep their own settings and are always limited.
    pub fn for_settings(settings: &Settings, shared: Option<SharedBuckets>) -> Self {
        let r: &RateLimitSettings = &settings.rate_limits;
        let on =
            |per_minute: u32| (r.enabled && per_minute > 0).then(|| Quota::per_minute(per_minute));
        let registration = &settings.registration;
        Self::new(
            [
                on(r.sign_in_per_minute),
                on(r.token_per_minute),
                on(r.authorization_per_minute),
                on(r.mcp_per_minute),
                Some(Quota {
                    burst: registration.per_ip_burst.max(1),
                    ..Quota::per_minute(registration.per_ip_per_minute.max(1))
                }),
                Some(Quota::per_minute(
                    settings.cimd.fetches_per_ip_per_minute.max(1),
                )),
            ],
            r.max_keys,
            shared,
        )
    }

    /// One quota per class, in the order of `EndpointClass::ALL` (`None`: not limited).
    pub fn new(
        quotas: [Option<Quota>; EndpointClass::ALL.len()],
        max_keys: usize,
        shared: Option<SharedBuckets>,
    ) -> Self {
        let limiter = |quota: Option<Quota>| -> Option<ClassLimiter> {
            let quota = quota?;
            let per_minute = NonZeroU32::new(quota.quota)?;
            let burst = NonZeroU32::new(quota.burst).unwrap_or(per_minute);
            Some(ClassLimiter {
                quota,
                limiter: RateLimiter::keyed(GcraQuota::per_minute(per_minute).allow_burst(burst))
                    .with_middleware::<StateInformationMiddleware>(),
            })
        };
        Self {
            classes: quotas.map(limiter),
            max_keys,
            hasher: RandomState::new(),
            shared,
            refusals: quick_cache::sync::Cache::new(REMEMBERED_REFUSALS),
            last_failure_logged: AtomicI64::new(i64::MIN),
            shared_down_until: AtomicI64::new(i64::MIN),
        }
    }

    /// Count one request against `key` at `now_ms`: `None` when its class is not limited.
    pub async fn check(&self, key: &RateKey, now_ms: i64) -> Option<RateDecision> {
        let class = self.classes[index(key.class)].as_ref()?;
        let (hashed, local) = self.check_locally(class, key);
        let Some(shared) = &self.shared else {
            return Some(local);
        };
        if local.is_refused() || now_ms < self.shared_down_until.load(Ordering::Relaxed) {
            return Some(local);
        }
        let policy = policy_header(key.class, class.quota, key);
        let refused = |wait_ms: u64| {
            let retry_after = retry_after_seconds(wait_ms);
            RateDecision::Refused {
                policy: policy.clone(),
                state: state_header(key.class, 0, retry_after),
                retry_after,
            }
        };
        if let Some(until) = self.refusals.get(&(key.class, hashed))
            && until > now_ms
        {
            return Some(refused((until - now_ms) as u64));
        }
        let bucket = shared_bucket(key, hashed == OVERFLOW);
        let gcra = Gcra::new(class.quota);
        let now_us = now_ms.saturating_mul(1_000);
        match tokio::time::timeout(SHARED_TIMEOUT, shared.take(&bucket, now_us, gcra)).await {
            Ok(Ok(Ok(tat))) => {
                let remaining = gcra.remaining(tat, now_us);
                Some(RateDecision::Allowed {
                    policy,
                    state: state_header(key.class, remaining, gcra.reset_seconds(tat, now_us)),
                })
            }
            Ok(Ok(Err(tat))) => {
                let wait_ms = gcra.wait_ms(tat, now_us);
                self.refusals
                    .insert((key.class, hashed), now_ms.saturating_add(wait_ms as i64));
                Some(refused(wait_ms))
            }
            Ok(Err(e)) => {
                self.shared_failed(now_ms, &e.to_string());
                Some(local)
            }
            Err(_) => {
                self.shared_failed(now_ms, "no answer in 250 ms");
                Some(local)
            }
        }
    }

    /// The shared store did not decide: leave it alone a while, and say so, at most every ten
    /// seconds.
    fn shared_failed(&self, now_ms: i64, why: &str) {
        self.shared_down_until.store(
            now_ms.saturating_add(SHARED_RETRY_AFTER_MS),
            Ordering::Relaxed,
        );
        let last = self.last_failure_logged.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last) >= 10_000
            && self
                .last_failure_logged
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                error = why,
                "shared rate limits unavailable: each instance limits on its own meanwhile"
            );
        }
    }

    /// The local limiter's key for `key` (`OVERFLOW` past `max_keys`) and its decision.
    fn check_locally(&self, class: &ClassLimiter, key: &RateKey) -> (u64, RateDecision) {
        let mut hashed = self.hasher.hash_one(key).max(1);
        if class.limiter.len() >= self.max_keys {
            class.limiter.retain_recent();
            if class.limiter.len() >= self.max_keys {
                hashed = OVERFLOW;
            }
        }
        let policy = policy_header(key.class, class.quota, key);
        let decision = match class.limiter.check_key(&hashed) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                RateDecision::Allowed {
                    policy,
                    state: state_header(
                        key.class,
                        remaining,
                        reset_seconds(class.quota, remaining),
                    ),
                }
            }
            Err(not_until) => {
                let wait: Duration = not_until.wait_time_from(DefaultClock::default().now());
                let retry_after = retry_after_seconds(wait.as_millis() as u64);
                RateDecision::Refused {
                    policy,
                    state: state_header(key.class, 0, retry_after),
                    retry_after,
                }
            }
        };
        (hashed, decision)
    }

    /// Forget buckets that are whole again at `now_ms` (housekeeping).
    pub async fn retain_recent(&self, now_ms: i64) -> mcp_oauth_store::Result<()> {
        for class in self.classes.iter().flatten() {
            class.limiter.retain_recent();
        }
        if let Some(SharedBuckets::Database(db)) = &self.shared {
            db.delete_full_rate_limits(now_ms.saturating_mul(1_000))
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    /// Only MCP requests limited, to `mcp_per_minute`.
    fn mcp_limits(mcp_per_minute: u32, max_keys: usize) -> RateLimits {
        let mut quotas = [None; EndpointClass::ALL.len()];
        quotas[index(EndpointClass::Mcp)] = Some(Quota::per_minute(mcp_per_minute));
        RateLimits::new(quotas, max_keys, None)
    }

    #[test]
    fn every_class_has_its_place() {
        for (i, class) in EndpointClass::ALL.iter().enumerate() {
            assert_eq!(index(*class), i, "{class:?}");
        }
    }

    /// Local limits never wait: no runtime is needed to drive them.
    fn check(limits: &RateLimits, key: &RateKey) -> Option<RateDecision> {
        futures::executor::block_on(limits.check(key, 0))
    }

    #[test]
    fn shared_buckets_are_the_same_everywhere_and_name_no_identity() {
        let a = shared_bucket(&key(1, "alice"), false);
        assert_eq!(a, shared_bucket(&key(1, "alice"), false));
        assert!(a.starts_with("mcp:") && a.len() == 4 + 32, "{a}");
        assert!(!a.contains("alice") && !a.contains("203.0.113"));
        assert_ne!(a, shared_bucket(&key(1, "bob"), false));
        assert_ne!(a, shared_bucket(&key(2, "alice"), false));
        // Boundaries between the parts count: ("ab", "c") is not ("a", "bc").
        let mut k = key(1, "c");
        k.client_id = Some("ab".into());
        let mut other = key(1, "bc");
        other.client_id = Some("a".into());
        assert_ne!(shared_bucket(&k, false), shared_bucket(&other, false));
        assert_eq!(shared_bucket(&k, true), "mcp:overflow");
    }

    fn key(ip: u8, user: &str) -> RateKey {
        RateKey {
            class: EndpointClass::Mcp,
            client_id: Some("c".into()),
            user_id: Some(user.into()),
            ip: IpAddr::from([203, 0, 113, ip]),
        }
    }

    #[test]
    fn a_quota_is_allowed_then_refused_with_a_wait() {
        let limits = mcp_limits(5, 100);
        for left in (0..5).rev() {
            match check(&limits, &key(1, "u")).unwrap() {
                RateDecision::Allowed { state, policy } => {
                    assert!(state.starts_with(&format!("\"mcp\";r={left};")), "{state}");
                    assert_eq!(policy, "\"mcp\";q=5;w=60;pk=\"client+user+ip\"");
                }
                other => panic!("{other:?}"),
            }
        }
        match check(&limits, &key(1, "u")).unwrap() {
            RateDecision::Refused { retry_after, .. } => assert!((1..=12).contains(&retry_after)),
            other => panic!("{other:?}"),
        }
        // Another user behind the same address has a bucket of their own.
        assert!(!check(&limits, &key(1, "v")).unwrap().is_refused());
    }

    #[test]
    fn past_the_key_bound_new_keys_share_one_bucket() {
        let limits = mcp_limits(3, 10);
        for ip in 0..10 {
            assert!(!check(&limits, &key(ip, "u")).unwrap().is_refused());
        }
        let refused = (10..40)
            .filter(|ip| check(&limits, &key(*ip, "u")).unwrap().is_refused())
            .count();
        assert_eq!(refused, 27, "thirty fresh keys share one bucket of three");
        assert!(limits.classes[3].as_ref().unwrap().limiter.len() <= 11);
    }

    #[test]
    fn zero_or_disabled_means_unlimited_but_registrations_and_fetches_stay_limited() {
        let limits = |edit: fn(&mut crate::config::RawSettings)| {
            let mut raw = crate::config::RawSettings::default();
            edit(&mut raw);
            RateLimits::for_settings(&raw.validate().unwrap(), None)
        };
        let zero = limits(|raw| raw.rate_limits.mcp_per_minute = 0);
        assert!(check(&zero, &key(1, "u")).is_none());
        let off = limits(|raw| raw.rate_limits.enabled = false);
        assert!(check(&off, &key(1, "u")).is_none());
        let from = |class| RateKey::address(class, IpAddr::from([203, 0, 113, 1]));
        for class in [EndpointClass::Registration, EndpointClass::MetadataFetch] {
            assert!(check(&off, &from(class)).is_some(), "{class:?}");
        }
        // Registrations keep their burst above the rate: 60 at once, then 30 a minute.
        let on = limits(|_| {});
        for _ in 0..60 {
            assert!(
                !check(&on, &from(EndpointClass::Registration))
                    .unwrap()
                    .is_refused()
            );
        }
        assert!(
            check(&on, &from(EndpointClass::Registration))
                .unwrap()
                .is_refused()
        );
    }
}
