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
//!   attempts in window:  1 .. delay_after     delay_after+1 ..       lockout_after, and each after
//!   this attempt:        immediate            delayed 2^k * base     checked, then LOCKED for
//!                                             (capped at max_delay)  lockout_seconds * (n / lockout_after)
//!                                                                    (capped at max_lockout_seconds)
//! ```
//!
//! Locks follow Keycloak's brute-force model ("multiple" strategy): the count outlives a lock
//! (until the window, restarted at the lock's end, passes without attempts), and every attempt
//! past `lockout_after` locks again, for `lockout_seconds` (Keycloak's wait increment) times
//! how many multiples of the limit the count has reached, at most `max_lockout_seconds`
//! (Keycloak's max wait). Keycloak's quick-login check is [`record_failure`]: a second wrong
//! password within `QuickCheck::window_ms` of the last one locks the key for
//! `QuickCheck::lockout_seconds`. It runs once the password has failed, not on the reservation,
//! so a form submitted twice with the right password locks nothing.
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
    /// The first lock's length; the n-th multiple of `lockout_after` locks n times as long.
    pub lockout_seconds: i64,
    pub max_lockout_seconds: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleState {
    /// Attempts in the window that have not been forgiven by a success.
    pub failures: i64,
    pub window_start: UnixTime,
    pub locked_until: Option<UnixTime>,
    /// When a password last failed on this key (Unix ms), for the quick-login check.
    pub last_failure_ms: Option<i64>,
}

/// Keycloak's quick-login check: two wrong passwords this close together lock the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuickCheck {
    /// `0` turns the check off.
    pub window_ms: i64,
    pub lockout_seconds: i64,
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

/// The state as it counts now: as stored while locked; once a lock has passed, its count
/// lives on for a window from the lock's end; `None` once the window has passed.
fn live(
    state: Option<&ThrottleState>,
    now: UnixTime,
    policy: &ThrottlePolicy,
) -> Option<ThrottleState> {
    let s = *state?;
    match s.locked_until {
        Some(until) if now < until => Some(s),
        Some(until) => {
            (now - until.max(s.window_start) < policy.window_seconds).then_some(ThrottleState {
                locked_until: None,
                ..s
            })
        }
        None => (now - s.window_start < policy.window_seconds).then_some(s),
    }
}

/// How long the attempt that brings the count to `failures` locks the key (`None`: it does
/// not): `lockout_seconds` per multiple of `lockout_after` reached, at most the maximum.
fn lock_seconds(failures: i64, policy: &ThrottlePolicy) -> Option<i64> {
    (failures >= policy.lockout_after).then(|| {
        let multiples = failures / policy.lockout_after.max(1);
        policy
            .lockout_seconds
            .saturating_mul(multiples)
            .min(policy.max_lockout_seconds.max(policy.lockout_seconds))
    })
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
        last_failure_ms: None,
    });
    let delay = delay_ms(next.failures, policy);
    next.failures += 1;
    if let Some(seconds) = lock_seconds(next.failures, policy) {
        next.locked_until = Some(now + seconds);
        // The window restarts when the lock ends (see `live`).
        next.window_start = now;
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
/// people signing in correctly behind one address do not add up to a lockout; a lock that
/// this very reservation set is lifted with it.
pub fn forgive_attempt(
    state: Option<&ThrottleState>,
    policy: &ThrottlePolicy,
) -> Option<ThrottleState> {
    let mut s = *state?;
    s.failures = (s.failures - 1).max(0);
    if s.failures < policy.lockout_after {
        s.locked_until = None;
    }
    Some(s)
}

/// A password failed on a key at `now_ms` (Unix ms): remember when, and apply the quick-login
/// check. `None`: the key has no state (nothing to do).
pub fn record_failure(
    state: Option<&ThrottleState>,
    now_ms: i64,
    quick: QuickCheck,
) -> Option<ThrottleState> {
    let mut s = *state?;
    if quick.window_ms > 0
        && let Some(last) = s.last_failure_ms
        && now_ms - last < quick.window_ms
    {
        let until = now_ms.div_euclid(1000) + quick.lockout_seconds;
        s.locked_until = Some(s.locked_until.map_or(until, |u| u.max(until)));
    }
    s.last_failure_ms = Some(now_ms);
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

    /// Subject to the quick-login check: the keys of one account from one place (an address,
    /// or a trusted browser). Not the account-wide key, which would let anyone lock the
    /// account for everybody with two quick guesses; not the address alone, which people
    /// share.
    pub fn quick_checked(&self) -> bool {
        matches!(self, Self::AccountIp(..) | Self::Device(_))
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
        max_lockout_seconds: 150,
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
        // Once the lock has passed, the count lives on: the next attempt is checked, and
        // locks again (Keycloak's model).
        let (d, after) = register_attempt(s.as_ref(), 74, &P).unwrap();
        assert_eq!((d, after.failures, after.locked_until), (350, 6, Some(134)));
        // A window after the lock's end without attempts, the count starts over.
        let (d, fresh) = register_attempt(Some(&after), 134 + 100, &P).unwrap();
        assert_eq!((d, fresh.failures, fresh.locked_until), (0, 1, None));
    }

    #[test]
    fn each_multiple_of_the_limit_locks_longer_up_to_the_maximum() {
        let mut s: Option<ThrottleState> = None;
        let mut now = 0;
        let mut locks = vec![];
        for _ in 0..20 {
            match register_attempt(s.as_ref(), now, &P) {
                Ok((_, next)) => {
                    if let Some(until) = next.locked_until {
                        locks.push((next.failures, until - now));
                        now = until;
                    }
                    s = Some(next);
                }
                Err(until) => now = until,
            }
        }
        // 5..9: one increment; 10..14: two; 15 and on: three, capped at 150.
        assert_eq!(
            locks[..7],
            [
                (5, 60),
                (6, 60),
                (7, 60),
                (8, 60),
                (9, 60),
                (10, 120),
                (11, 120)
            ]
        );
        assert_eq!(locks.last(), Some(&(20, 150)), "{locks:?}");
    }

    #[test]
    fn a_second_wrong_password_within_the_quick_check_locks_the_key() {
        let quick = QuickCheck {
            window_ms: 1_000,
            lockout_seconds: 60,
        };
        let (_, s) = register_attempt(None, 10, &P).unwrap();
        let s = record_failure(Some(&s), 10_000, quick).unwrap();
        assert_eq!((s.locked_until, s.last_failure_ms), (None, Some(10_000)));
        let slow = record_failure(Some(&s), 11_000, quick).unwrap();
        assert_eq!(slow.locked_until, None, "a second later is not quick");
        let fast = record_failure(Some(&s), 10_999, quick).unwrap();
        assert_eq!(fast.locked_until, Some(70));
        assert_eq!(register_attempt(Some(&fast), 11, &P), Err(70));
        let off = QuickCheck {
            window_ms: 0,
            ..quick
        };
        assert_eq!(
            record_failure(Some(&s), 10_001, off).unwrap().locked_until,
            None
        );
        assert_eq!(record_failure(None, 10_001, quick), None);
    }

    #[test]
    fn old_attempts_fall_out_of_the_window() {
        let s = ThrottleState {
            failures: 4,
            window_start: 0,
            locked_until: None,
            last_failure_ms: None,
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
                    last_failure_ms: None,
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
            last_failure_ms: None,
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
                        last_failure_ms: None,
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
            last_failure_ms: None,
        };
        assert_eq!(forgive_attempt(Some(&s), &P).unwrap().failures, 0);
        assert_eq!(forgive_attempt(None, &P), None);
        // A success that reached the limit lifts the lock its own reservation set.
        let locked = ThrottleState {
            failures: 5,
            window_start: 0,
            locked_until: Some(60),
            last_failure_ms: None,
        };
        let s = forgive_attempt(Some(&locked), &P).unwrap();
        assert_eq!((s.failures, s.locked_until), (4, None));
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
