//! Rate limits per endpoint class, per instance: one GCRA limiter (`governor`) per class,
//! keyed by the request's [`RateKey`] (class, client, user, address). Each answer carries the
//! draft `RateLimit-Policy` / `RateLimit` headers; a refusal is a 429 with `Retry-After`.
//!
//! Memory is bounded: keys are hashed to 64 bits with a per-process random seed (an attacker
//! cannot aim collisions), and past `rate_limits.max_keys` per class the idle ones are
//! dropped; if none are, new keys share one overflow bucket (so a flood of fresh addresses is
//! limited as one) rather than grow the map.

use std::hash::{BuildHasher, RandomState};
use std::num::NonZeroU32;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use governor::clock::{Clock as _, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::{DefaultKeyedRateLimiter, Quota as GcraQuota, RateLimiter};

use mcp_oauth_core::security::rate_limit::{
    EndpointClass, Quota, RateKey, policy_header, reset_seconds, retry_after_seconds, state_header,
};

use crate::config::RateLimitSettings;

static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

type Limiter = DefaultKeyedRateLimiter<u64, StateInformationMiddleware>;

/// The key every new key shares once a class holds `max_keys`.
const OVERFLOW: u64 = 0;

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
    /// Indexed by `EndpointClass as usize`; `None` when the class is unlimited.
    classes: [Option<ClassLimiter>; 4],
    max_keys: usize,
    hasher: RandomState,
}

fn index(class: EndpointClass) -> usize {
    match class {
        EndpointClass::SignIn => 0,
        EndpointClass::Token => 1,
        EndpointClass::Authorization => 2,
        EndpointClass::Mcp => 3,
    }
}

impl RateLimits {
    pub fn new(settings: &RateLimitSettings) -> Self {
        let limiter = |per_minute: u32| -> Option<ClassLimiter> {
            let quota = NonZeroU32::new(per_minute).filter(|_| settings.enabled)?;
            Some(ClassLimiter {
                quota: Quota {
                    quota: quota.get(),
                    window_seconds: 60,
                },
                limiter: RateLimiter::keyed(GcraQuota::per_minute(quota))
                    .with_middleware::<StateInformationMiddleware>(),
            })
        };
        Self {
            classes: [
                limiter(settings.sign_in_per_minute),
                limiter(settings.token_per_minute),
                limiter(settings.authorization_per_minute),
                limiter(settings.mcp_per_minute),
            ],
            max_keys: settings.max_keys,
            hasher: RandomState::new(),
        }
    }

    /// Count one request against `key`: `None` when its class is not limited.
    pub fn check(&self, key: &RateKey) -> Option<RateDecision> {
        let class = self.classes[index(key.class)].as_ref()?;
        let mut hashed = self.hasher.hash_one(key).max(1);
        if class.limiter.len() >= self.max_keys {
            class.limiter.retain_recent();
            if class.limiter.len() >= self.max_keys {
                hashed = OVERFLOW;
            }
        }
        let policy = policy_header(key.class, class.quota, key);
        Some(match class.limiter.check_key(&hashed) {
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
        })
    }

    /// Forget buckets that are whole again (housekeeping).
    pub fn retain_recent(&self) {
        for class in self.classes.iter().flatten() {
            class.limiter.retain_recent();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn settings(mcp_per_minute: u32, max_keys: usize) -> RateLimitSettings {
        RateLimitSettings {
            mcp_per_minute,
            max_keys,
            ..RateLimitSettings::default()
        }
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
        let limits = RateLimits::new(&settings(5, 100));
        for left in (0..5).rev() {
            match limits.check(&key(1, "u")).unwrap() {
                RateDecision::Allowed { state, policy } => {
                    assert!(state.starts_with(&format!("\"mcp\";r={left};")), "{state}");
                    assert_eq!(policy, "\"mcp\";q=5;w=60;pk=\"client+user+ip\"");
                }
                other => panic!("{other:?}"),
            }
        }
        match limits.check(&key(1, "u")).unwrap() {
            RateDecision::Refused { retry_after, .. } => assert!((1..=12).contains(&retry_after)),
            other => panic!("{other:?}"),
        }
        // Another user behind the same address has a bucket of their own.
        assert!(!limits.check(&key(1, "v")).unwrap().is_refused());
    }

    #[test]
    fn past_the_key_bound_new_keys_share_one_bucket() {
        let limits = RateLimits::new(&settings(3, 10));
        for ip in 0..10 {
            assert!(!limits.check(&key(ip, "u")).unwrap().is_refused());
        }
        let refused = (10..40)
            .filter(|ip| limits.check(&key(*ip, "u")).unwrap().is_refused())
            .count();
        assert_eq!(refused, 27, "thirty fresh keys share one bucket of three");
        assert!(limits.classes[3].as_ref().unwrap().limiter.len() <= 11);
    }

    #[test]
    fn zero_or_disabled_means_unlimited() {
        assert!(
            RateLimits::new(&settings(0, 10))
                .check(&key(1, "u"))
                .is_none()
        );
        let off = RateLimitSettings {
            enabled: false,
            ..RateLimitSettings::default()
        };
        assert!(RateLimits::new(&off).check(&key(1, "u")).is_none());
    }
}
