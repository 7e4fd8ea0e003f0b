//! Sign-in throttling: what each attempt costs, decided atomically per key before the
//! password is checked.
//!
//! Every attempt is counted *before* the password is checked (a reservation), and the
//! admission is decided from the count that includes it, in the same transaction as the
//! write. So parallel guesses cannot all slip in under the limit: of sixty concurrent wrong
//! passwords at a lockout threshold of ten, exactly ten are checked. A successful sign-in then
//! gives its reservation back.
//!
//! ```text
//!   attempts in window:  1 .. delay_after     delay_after+1 ..       lockout_after
//!   this attempt:        immediate            delayed 2^k * base     checked, then LOCKED
//!                                             (capped at max_delay)  until +lockout_seconds
//! ```
//!
//! Which keys an attempt is counted against decides who a lockout can hurt (OWASP "Slow
//! down online guessing attacks with device cookies"). Counting only per account would let
//! anyone lock the owner out with ten wrong passwords; so a browser that signed in to the
//! account before presents a device cookie, and is counted only against that cookie:
//!
//! ```text
//!   valid device cookie for this account ─> device:<cookie>         (lockout: this browser only;
//!                                                                     then it counts as untrusted)
//!   otherwise ────────────────────────────> ip:<ip>                   (delay, then lockout of the IP)
//!                                           account-ip:<email>|<ip>   (lockout of this IP for it)
//!                                           account:<email>           (every untrusted browser)
//! ```

use std::net::IpAddr;

use crate::UnixTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottlePolicy {
    pub window_seconds: i64,
    /// Attempts within the window before each further one is delayed (`i64::MAX`: never).
    pub delay_after: i64,
    pub base_delay_ms: u64,
    pub max_delay_ms: u64,
    /// The attempt that reaches this count is still checked, and locks the key.
    pub lockout_after: i64,
    pub lockout_seconds: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleState {
    /// Attempts in the window that have not been forgiven by a success.
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

/// The state as it counts now: `None` once its window (or its lock) has passed.
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

fn delay_ms(prior_attempts: i64, policy: &ThrottlePolicy) -> u64 {
    if prior_attempts < policy.delay_after {
        return 0;
    }
    let exponent = (prior_attempts - policy.delay_after).min(16) as u32;
    policy
        .base_delay_ms
        .saturating_mul(1u64 << exponent)
        .min(policy.max_delay_ms)
}

/// Count one attempt against one key. `Err` when the key is locked (nothing to write);
/// otherwise the delay to apply and the state to store.
pub fn register_attempt(
    state: Option<&ThrottleState>,
    now: UnixTime,
    policy: &ThrottlePolicy,
) -> Result<(u64, ThrottleState), UnixTime> {
    let current = live(state, now, policy);
    if let Some(until) = current.and_then(|s| s.locked_until) {
        return Err(until);
    }
    let mut next = current.unwrap_or(ThrottleState {
        failures: 0,
        window_start: now,
        locked_until: None,
    });
    let delay = delay_ms(next.failures, policy);
    next.failures += 1;
    if next.failures >= policy.lockout_after {
        next.locked_until = Some(now + policy.lockout_seconds);
    }
    Ok((delay, next))
}

/// Count one attempt against every key it concerns, all or nothing: if any key is locked,
/// the attempt is refused and counted nowhere (no password was checked). Otherwise the
/// attempt goes ahead after the longest of the delays, with every key's new state to store.
pub fn register_attempts(
    keys: &[(Option<ThrottleState>, ThrottlePolicy)],
    now: UnixTime,
) -> (Admission, Vec<ThrottleState>) {
    let mut next = Vec::with_capacity(keys.len());
    let mut delay = 0;
    let mut locked_until = None;
    for (state, policy) in keys {
        match register_attempt(state.as_ref(), now, policy) {
            Ok((d, s)) => {
                delay = delay.max(d);
                next.push(s);
            }
            Err(until) => locked_until = locked_until.max(Some(until)),
        }
    }
    match locked_until {
        Some(until) => (Admission::Locked { until }, vec![]),
        None => (Admission::Allowed { delay_ms: delay }, next),
    }
}

/// Give back a successful attempt's reservation on a shared key (the client IP), so that
/// people signing in correctly behind one address do not add up to a lockout.
pub fn forgive_attempt(state: Option<&ThrottleState>) -> Option<ThrottleState> {
    let mut s = *state?;
    s.failures = (s.failures - 1).max(0);
    Some(s)
}

/// What a key stands for; its `as_key` is what is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThrottleKey {
    /// Every attempt from one client IP, whatever the account.
    Ip(IpAddr),
    /// Attempts on one account from one client IP.
    AccountIp(String, IpAddr),
    /// Attempts on one account from browsers without its device cookie.
    Account(String),
    /// Attempts from one browser that holds the account's device cookie (by the cookie's hash).
    Device(String),
}

impl ThrottleKey {
    pub fn as_key(&self) -> String {
        match self {
            Self::Ip(ip) => format!("ip:{ip}"),
            Self::AccountIp(email, ip) => format!("account-ip:{email}|{ip}"),
            Self::Account(email) => format!("account:{email}"),
            Self::Device(hash) => format!("device:{hash}"),
        }
    }

    /// Cleared by a successful sign-in (the IP key is only forgiven one attempt).
    pub fn clears_on_success(&self) -> bool {
        !matches!(self, Self::Ip(_))
    }
}

/// The throttle settings, one policy per kind of key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginThrottle {
    pub ip: ThrottlePolicy,
    pub account_ip: ThrottlePolicy,
    pub account: ThrottlePolicy,
    pub device: ThrottlePolicy,
}

impl LoginThrottle {
    /// The keys an attempt on `email` from `ip` is counted against: only the device cookie's
    /// when the browser presents one that is valid for this account (and not itself locked,
    /// which the caller finds out by trying it first), otherwise the untrusted keys.
    pub fn keys(
        &self,
        email: &str,
        ip: IpAddr,
        device: Option<&str>,
    ) -> Vec<(ThrottleKey, ThrottlePolicy)> {
        match device {
            Some(hash) => vec![(ThrottleKey::Device(hash.to_owned()), self.device)],
            None => vec![
                (ThrottleKey::Ip(ip), self.ip),
                (
                    ThrottleKey::AccountIp(email.to_owned(), ip),
                    self.account_ip,
                ),
                (ThrottleKey::Account(email.to_owned()), self.account),
            ],
        }
    }
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
    fn delays_grow_then_the_attempt_reaching_the_limit_locks() {
        let mut s: Option<ThrottleState> = None;
        let mut delays = vec![];
        for i in 0..5 {
            let (d, next) = register_attempt(s.as_ref(), 10 + i, &P).unwrap();
            delays.push(d);
            s = Some(next);
        }
        assert_eq!(delays, vec![0, 0, 100, 200, 350]);
        assert_eq!(s.unwrap().locked_until, Some(74), "the fifth attempt locks");
        assert_eq!(register_attempt(s.as_ref(), 15, &P), Err(74));
        let (d, after) = register_attempt(s.as_ref(), 74, &P).unwrap();
        assert_eq!((d, after.failures), (0, 1), "a fresh window after the lock");
    }

    #[test]
    fn old_attempts_fall_out_of_the_window() {
        let s = ThrottleState {
            failures: 4,
            window_start: 0,
            locked_until: None,
        };
        assert_eq!(register_attempt(Some(&s), 50, &P).unwrap().0, 350);
        assert_eq!(
            register_attempt(Some(&s), 100, &P).unwrap(),
            (
                0,
                ThrottleState {
                    failures: 1,
                    window_start: 100,
                    locked_until: None,
                }
            )
        );
    }

    #[test]
    fn concurrent_attempts_applied_one_after_another_admit_exactly_the_limit() {
        // What the store's transaction does with sixty parallel attempts: each sees the
        // state the previous one wrote.
        let mut s: Option<ThrottleState> = None;
        let mut admitted = 0;
        for _ in 0..60 {
            if let Ok((_, next)) = register_attempt(s.as_ref(), 10, &P) {
                admitted += 1;
                s = Some(next);
            }
        }
        assert_eq!(admitted, P.lockout_after);
    }

    #[test]
    fn one_locked_key_refuses_the_attempt_and_counts_it_nowhere() {
        let locked = ThrottleState {
            failures: 5,
            window_start: 0,
            locked_until: Some(50),
        };
        let (admission, writes) = register_attempts(&[(None, P), (Some(locked), P)], 10);
        assert_eq!(admission, Admission::Locked { until: 50 });
        assert!(writes.is_empty());
        let (admission, writes) = register_attempts(
            &[
                (None, P),
                (
                    Some(ThrottleState {
                        failures: 3,
                        window_start: 0,
                        locked_until: None,
                    }),
                    P,
                ),
            ],
            10,
        );
        assert_eq!(
            admission,
            Admission::Allowed { delay_ms: 200 },
            "the longest delay"
        );
        assert_eq!(
            writes.iter().map(|s| s.failures).collect::<Vec<_>>(),
            vec![1, 4]
        );
    }

    #[test]
    fn a_success_gives_its_reservation_back() {
        let s = ThrottleState {
            failures: 1,
            window_start: 0,
            locked_until: None,
        };
        assert_eq!(forgive_attempt(Some(&s)).unwrap().failures, 0);
        assert_eq!(forgive_attempt(None), None);
    }

    #[test]
    fn a_trusted_browser_is_counted_only_against_its_device_cookie() {
        let t = LoginThrottle {
            ip: P,
            account_ip: P,
            account: P,
            device: P,
        };
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let trusted = t.keys("a@example.com", ip, Some("h1"));
        assert_eq!(
            trusted.iter().map(|(k, _)| k.as_key()).collect::<Vec<_>>(),
            vec!["device:h1"]
        );
        let untrusted = t.keys("a@example.com", ip, None);
        assert_eq!(
            untrusted
                .iter()
                .map(|(k, _)| k.as_key())
                .collect::<Vec<_>>(),
            vec![
                "ip:192.0.2.1",
                "account-ip:a@example.com|192.0.2.1",
                "account:a@example.com"
            ]
        );
        assert!(!ThrottleKey::Ip(ip).clears_on_success());
        assert!(ThrottleKey::Account("a@example.com".into()).clears_on_success());
    }
}
