//! Login throttling, kept per account and per client IP: failures within a window first slow
//! each attempt down, then lock the key out for a while.
//!
//! ```text
//!   failures in window:  0 .. delay_after-1   delay_after ..        lockout_after
//!   next attempt:        immediate            delayed 2^k * base     LOCKED until +lockout
//!                                             (capped at max_delay)  (then a fresh window)
//! ```
//!
//! The caller stores a `ThrottleState` per key and applies the delay *before* checking the
//! password, so a slow answer tells an attacker nothing about the guess.

use crate::UnixTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottlePolicy {
    pub window_seconds: i64,
    pub delay_after: i64,
    pub base_delay_ms: u64,
    pub max_delay_ms: u64,
    pub lockout_after: i64,
    pub lockout_seconds: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleState {
    pub failures: i64,
    pub window_start: UnixTime,
    pub locked_until: Option<UnixTime>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead, after waiting this long.
    Allowed {
        delay_ms: u64,
    },
    Locked {
        until: UnixTime,
    },
}

fn live(
    state: Option<&ThrottleState>,
    now: UnixTime,
    policy: &ThrottlePolicy,
) -> Option<ThrottleState> {
    let s = *state?;
    if let Some(until) = s.locked_until {
        return (now < until).then_some(s);
    }
    (now - s.window_start < policy.window_seconds).then_some(s)
}

pub fn admit(state: Option<&ThrottleState>, now: UnixTime, policy: &ThrottlePolicy) -> Admission {
    let Some(s) = live(state, now, policy) else {
        return Admission::Allowed { delay_ms: 0 };
    };
    if let Some(until) = s.locked_until {
        return Admission::Locked { until };
    }
    if s.failures < policy.delay_after {
        return Admission::Allowed { delay_ms: 0 };
    }
    let exponent = (s.failures - policy.delay_after).min(16) as u32;
    let delay = policy.base_delay_ms.saturating_mul(1u64 << exponent);
    Admission::Allowed {
        delay_ms: delay.min(policy.max_delay_ms),
    }
}

/// The state after one more failed attempt.
pub fn record_failure(
    state: Option<&ThrottleState>,
    now: UnixTime,
    policy: &ThrottlePolicy,
) -> ThrottleState {
    let mut s = live(state, now, policy)
        .filter(|s| s.locked_until.is_none())
        .unwrap_or(ThrottleState {
            failures: 0,
            window_start: now,
            locked_until: None,
        });
    s.failures += 1;
    if s.failures >= policy.lockout_after {
        s.locked_until = Some(now + policy.lockout_seconds);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: ThrottlePolicy = ThrottlePolicy {
        window_seconds: 100,
        delay_after: 2,
        base_delay_ms: 100,
        max_delay_ms: 350,
        lockout_after: 5,
        lockout_seconds: 60,
    };

    #[test]
    fn delays_grow_then_lock() {
        let mut s: Option<ThrottleState> = None;
        let mut seen = vec![];
        for i in 0..5 {
            seen.push(admit(s.as_ref(), 10 + i, &P));
            s = Some(record_failure(s.as_ref(), 10 + i, &P));
        }
        assert_eq!(
            seen,
            vec![
                Admission::Allowed { delay_ms: 0 },
                Admission::Allowed { delay_ms: 0 },
                Admission::Allowed { delay_ms: 100 },
                Admission::Allowed { delay_ms: 200 },
                Admission::Allowed { delay_ms: 350 },
            ]
        );
        assert_eq!(admit(s.as_ref(), 15, &P), Admission::Locked { until: 74 });
        assert_eq!(
            admit(s.as_ref(), 74, &P),
            Admission::Allowed { delay_ms: 0 },
            "lock expires"
        );
        let after = record_failure(s.as_ref(), 80, &P);
        assert_eq!(after.failures, 1, "a fresh window starts after the lockout");
    }

    #[test]
    fn old_failures_fall_out_of_the_window() {
        let s = ThrottleState {
            failures: 4,
            window_start: 0,
            locked_until: None,
        };
        assert_eq!(
            admit(Some(&s), 50, &P),
            Admission::Allowed { delay_ms: 350 }
        );
        assert_eq!(admit(Some(&s), 100, &P), Admission::Allowed { delay_ms: 0 });
        assert_eq!(record_failure(Some(&s), 100, &P).failures, 1);
    }
}
