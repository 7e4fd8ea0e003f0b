//! Detectors over sliding windows (issue 8): pure state machines fed one observation at a
//! time with the time passed in, each answering with the [`Detection`]s it makes.
//!
//! A detector reports when a count reaches its threshold and again each time the count
//! doubles (threshold, 2×, 4×, …): one event per stage of an attack, not one per request, and
//! the repeat count carried into the score ([`super::events::score`]). Every map is bounded:
//! past its key limit the key seen longest ago is forgotten, so a flood of distinct keys
//! costs memory up to the bound and no more.
//!
//! Per instance; callers hold each detector behind one lock, so parallel observations are
//! counted one at a time.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;

use super::events::SecurityEventKind;
use crate::analytics::Millis;

/// What a detector found: a kind, who it is about, and how many observations stand behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    pub kind: SecurityEventKind,
    /// The account, address, client or token hash the count is about.
    pub subject: String,
    /// Observations in the window when it was reported.
    pub repeats: u64,
}

/// Whether `count` is a stage worth reporting: the threshold, then each doubling of it.
pub fn is_stage(count: u64, threshold: u64) -> bool {
    let threshold = threshold.max(1);
    count >= threshold && count.is_multiple_of(threshold) && (count / threshold).is_power_of_two()
}

/// Slots a window is cut into: counts are exact to within one slot (1/32 of the window) at
/// the window's far edge, and a key costs at most this many counters however often it is seen.
const SLOTS: i64 = 32;

/// Observations of one key: counts per slot, oldest first, and when it was last seen.
#[derive(Debug, Default)]
struct Slots {
    counts: VecDeque<(Millis, u64)>,
    last: Millis,
}

/// Observations per key within a sliding window, at most `max_keys` keys.
#[derive(Debug)]
pub struct WindowCounter<K> {
    window_ms: Millis,
    slot_ms: Millis,
    max_keys: usize,
    seen: HashMap<K, Slots>,
    /// Keys in the order they were last touched (stale entries are skipped when evicting).
    order: VecDeque<(K, Millis)>,
}

impl<K: Clone + Eq + Hash> WindowCounter<K> {
    pub fn new(window_ms: Millis, max_keys: usize) -> Self {
        let window_ms = window_ms.max(1);
        Self {
            window_ms,
            slot_ms: (window_ms / SLOTS).max(1),
            max_keys: max_keys.max(1),
            seen: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Count one observation of `key` at `now`; returns how many fall in the window. Slots
    /// that start at or before `now - window` no longer count.
    pub fn record(&mut self, key: &K, now: Millis) -> u64 {
        let (window, slot_ms) = (self.window_ms, self.slot_ms);
        if !self.seen.contains_key(key) {
            self.make_room(now);
        }
        let entry = self.seen.entry(key.clone()).or_default();
        while entry
            .counts
            .front()
            .is_some_and(|&(t, _)| t <= now - window)
        {
            entry.counts.pop_front();
        }
        let slot = now - now.rem_euclid(slot_ms);
        match entry.counts.back_mut() {
            Some((t, n)) if *t == slot => *n += 1,
            _ => entry.counts.push_back((slot, 1)),
        }
        entry.last = now;
        let count = entry.counts.iter().map(|&(_, n)| n).sum();
        self.order.push_back((key.clone(), now));
        // The order queue holds one entry per observation; keep it from outgrowing the keys.
        if self.order.len() > 4 * self.max_keys {
            let seen = &self.seen;
            self.order
                .retain(|(k, t)| seen.get(k).map(|s| s.last) == Some(*t));
        }
        count
    }

    /// When `key` was last seen, if it is still held.
    pub fn last_seen(&self, key: &K) -> Option<Millis> {
        self.seen.get(key).map(|s| s.last)
    }

    /// How many keys are held.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Drop keys with nothing in the window; if still full, the key touched longest ago.
    fn make_room(&mut self, now: Millis) {
        if self.seen.len() < self.max_keys {
            return;
        }
        let window = self.window_ms;
        self.seen.retain(|_, s| s.last > now - window);
        while self.seen.len() >= self.max_keys {
            let Some((k, t)) = self.order.pop_front() else {
                break;
            };
            // Only the entry of its latest observation evicts a key.
            if self.seen.get(&k).map(|s| s.last) == Some(t) {
                self.seen.remove(&k);
            }
        }
    }
}

/// Thresholds of the sign-in detectors, with their defaults.
#[derive(Debug, Clone, Copy)]
pub struct SignInThresholds {
    pub window_ms: Millis,
    /// Failures against one account in the window.
    pub per_account: u64,
    /// Failures from one address in the window.
    pub per_ip: u64,
    /// Distinct accounts failed from one address in the window.
    pub accounts_per_ip: u64,
    /// Keys held per map.
    pub max_keys: usize,
}

impl Default for SignInThresholds {
    fn default() -> Self {
        Self {
            window_ms: 15 * 60_000,
            per_account: 10,
            per_ip: 20,
            accounts_per_ip: 5,
            max_keys: 10_000,
        }
    }
}

/// Brute force against an account or from an address, and credential stuffing (many accounts
/// from one address), from failed sign-ins.
#[derive(Debug)]
pub struct SignInDetector {
    limits: SignInThresholds,
    per_account: WindowCounter<String>,
    per_ip: WindowCounter<IpAddr>,
    accounts: WindowCounter<(IpAddr, String)>,
    distinct: HashMap<IpAddr, HashSet<String>>,
}

impl SignInDetector {
    pub fn new(limits: SignInThresholds) -> Self {
        Self {
            limits,
            per_account: WindowCounter::new(limits.window_ms, limits.max_keys),
            per_ip: WindowCounter::new(limits.window_ms, limits.max_keys),
            accounts: WindowCounter::new(limits.window_ms, limits.max_keys),
            distinct: HashMap::new(),
        }
    }

    /// A refused password for `account` (as typed, lower-cased by the caller) from `ip`.
    pub fn failed(&mut self, ip: IpAddr, account: &str, now: Millis) -> Vec<Detection> {
        let l = self.limits;
        let mut found = Vec::new();
        let n = self.per_account.record(&account.to_owned(), now);
        if is_stage(n, l.per_account) {
            found.push(Detection {
                kind: SecurityEventKind::BruteForceAccount,
                subject: account.to_owned(),
                repeats: n,
            });
        }
        let n = self.per_ip.record(&ip, now);
        if is_stage(n, l.per_ip) {
            found.push(Detection {
                kind: SecurityEventKind::BruteForceIp,
                subject: ip.to_string(),
                repeats: n,
            });
        }
        // Distinct accounts per address: an account counts while it has a failure from
        // there in the window.
        self.accounts.record(&(ip, account.to_owned()), now);
        if self.distinct.len() >= l.max_keys && !self.distinct.contains_key(&ip) {
            self.distinct.clear();
        }
        let accounts = self.distinct.entry(ip).or_default();
        let fresh = accounts.insert(account.to_owned());
        let window = l.window_ms;
        let live = |a: &String| {
            self.accounts
                .last_seen(&(ip, a.clone()))
                .is_some_and(|t| t > now - window)
        };
        accounts.retain(|a| live(a));
        let n = accounts.len() as u64;
        if fresh && is_stage(n, l.accounts_per_ip) {
            found.push(Detection {
                kind: SecurityEventKind::CredentialStuffing,
                subject: ip.to_string(),
                repeats: n,
            });
        }
        found
    }
}

/// Paths scanners ask for that an MCP authorization server never serves.
const PROBE_PATHS: [&str; 12] = [
    "/.env",
    "/.git/config",
    "/wp-login.php",
    "/wp-admin",
    "/xmlrpc.php",
    "/phpmyadmin",
    "/admin.php",
    "/config.json",
    "/.aws/credentials",
    "/server-status",
    "/actuator/env",
    "/cgi-bin/",
];

/// Whether `path` is a known probe path (or under one).
pub fn is_probe_path(path: &str) -> bool {
    let path = path.to_ascii_lowercase();
    PROBE_PATHS
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{}/", p.trim_end_matches('/'))))
}

/// Scanners: an address asking for known probe paths or for many paths that do not exist.
#[derive(Debug)]
pub struct ScannerDetector {
    /// Not-found answers from one address in the window before it is reported.
    not_found_threshold: u64,
    not_found: WindowCounter<IpAddr>,
    probes: WindowCounter<IpAddr>,
}

impl ScannerDetector {
    pub fn new(window_ms: Millis, not_found_threshold: u64, max_keys: usize) -> Self {
        Self {
            not_found_threshold,
            not_found: WindowCounter::new(window_ms, max_keys),
            probes: WindowCounter::new(window_ms, max_keys),
        }
    }

    /// A request for `path` from `ip` answered 404.
    pub fn not_found(&mut self, ip: IpAddr, path: &str, now: Millis) -> Option<Detection> {
        let (n, threshold) = if is_probe_path(path) {
            (self.probes.record(&ip, now), 1)
        } else {
            (self.not_found.record(&ip, now), self.not_found_threshold)
        };
        is_stage(n, threshold).then(|| Detection {
            kind: SecurityEventKind::Scanner,
            subject: ip.to_string(),
            repeats: n,
        })
    }
}

/// One access token used from many addresses at once (a stolen token in use beside its
/// owner). Keyed by the token's hash, never the token.
#[derive(Debug)]
pub struct TokenSpreadDetector {
    window_ms: Millis,
    threshold: u64,
    max_tokens: usize,
    addresses: HashMap<String, HashMap<IpAddr, Millis>>,
}

impl TokenSpreadDetector {
    pub fn new(window_ms: Millis, threshold: u64, max_tokens: usize) -> Self {
        Self {
            window_ms,
            threshold: threshold.max(2),
            max_tokens: max_tokens.max(1),
            addresses: HashMap::new(),
        }
    }

    /// `token_hash` used from `ip` at `now`.
    pub fn used(&mut self, token_hash: &str, ip: IpAddr, now: Millis) -> Option<Detection> {
        if self.addresses.len() >= self.max_tokens && !self.addresses.contains_key(token_hash) {
            let window = self.window_ms;
            self.addresses
                .retain(|_, ips| ips.values().any(|&t| t > now - window));
            if self.addresses.len() >= self.max_tokens {
                // Still full: forget all rather than grow (a flood of tokens is its own sign).
                self.addresses.clear();
            }
        }
        let ips = self.addresses.entry(token_hash.to_owned()).or_default();
        let fresh = ips
            .insert(ip, now)
            .is_none_or(|t| t <= now - self.window_ms);
        let window = self.window_ms;
        ips.retain(|_, &mut t| t > now - window);
        let n = ips.len() as u64;
        (fresh && is_stage(n, self.threshold)).then(|| Detection {
            kind: SecurityEventKind::TokenFromManyIps,
            subject: token_hash.to_owned(),
            repeats: n,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Millis = 60_000;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([203, 0, 113, last])
    }

    fn kinds(found: &[Detection]) -> Vec<SecurityEventKind> {
        found.iter().map(|d| d.kind).collect()
    }

    #[test]
    fn stages_are_the_threshold_and_its_doublings() {
        let stages: Vec<u64> = (1..=100).filter(|&n| is_stage(n, 10)).collect();
        assert_eq!(stages, [10, 20, 40, 80]);
        assert!(is_stage(1, 1) && is_stage(2, 1) && !is_stage(3, 1));
    }

    #[test]
    fn a_window_counts_only_what_is_inside_it() {
        let mut c = WindowCounter::new(10 * MIN, 100);
        assert_eq!(c.record(&"a", 0), 1);
        assert_eq!(c.record(&"a", 5 * MIN), 2);
        assert_eq!(c.record(&"a", 10 * MIN), 2, "the first fell out");
        assert_eq!(c.record(&"b", 10 * MIN), 1);
    }

    #[test]
    fn a_flood_of_keys_stays_within_the_bound() {
        let mut c = WindowCounter::new(10 * MIN, 50);
        for i in 0..10_000u32 {
            c.record(&i, Millis::from(i));
            assert!(c.len() <= 50);
        }
        // The most recent keys are the ones kept.
        assert_eq!(c.record(&9_999, 10_000), 2);
        assert!(c.order.len() <= 4 * 50 + 1);
    }

    #[test]
    fn a_key_seen_a_million_times_costs_at_most_one_counter_per_slot() {
        let mut c = WindowCounter::new(10 * MIN, 10);
        for i in 0..1_000_000i64 {
            c.record(&"hot", i * 3);
        }
        assert!(c.seen[&"hot"].counts.len() <= SLOTS as usize + 1);
        // 3 ms apart over 10 minutes: 200,000 in the window, give or take one slot.
        let n = c.record(&"hot", 3_000_000);
        let slot = (10 * MIN / SLOTS / 3) as u64;
        assert!((200_000 - slot..=200_001).contains(&n), "{n}");
    }

    #[test]
    fn ten_wrong_passwords_for_one_account_are_a_brute_force_then_twenty_again() {
        let mut d = SignInDetector::new(SignInThresholds::default());
        let mut found = Vec::new();
        for i in 0..20 {
            // From different addresses: only the account's count reaches its threshold.
            found.extend(d.failed(ip(i), "ada@example.com", Millis::from(i) * 1_000));
        }
        assert_eq!(
            found,
            [
                Detection {
                    kind: SecurityEventKind::BruteForceAccount,
                    subject: "ada@example.com".into(),
                    repeats: 10,
                },
                Detection {
                    kind: SecurityEventKind::BruteForceAccount,
                    subject: "ada@example.com".into(),
                    repeats: 20,
                },
            ]
        );
    }

    #[test]
    fn many_accounts_from_one_address_are_credential_stuffing() {
        let mut d = SignInDetector::new(SignInThresholds::default());
        let mut found = Vec::new();
        for i in 0..5 {
            found.extend(d.failed(ip(1), &format!("user{i}@example.com"), i * 1_000));
        }
        assert_eq!(kinds(&found), [SecurityEventKind::CredentialStuffing]);
        assert_eq!(found[0].repeats, 5);
        // The same accounts again add no distinct account: nothing more.
        for i in 0..5 {
            let again = d.failed(ip(1), &format!("user{i}@example.com"), 10_000 + i * 1_000);
            assert!(!kinds(&again).contains(&SecurityEventKind::CredentialStuffing));
        }
    }

    #[test]
    fn failures_spread_over_more_than_the_window_are_not_a_brute_force() {
        let mut d = SignInDetector::new(SignInThresholds::default());
        for i in 0..30 {
            let found = d.failed(ip(1), "ada@example.com", i * 16 * MIN);
            assert!(found.is_empty(), "attempt {i}: {found:?}");
        }
    }

    #[test]
    fn twenty_failures_from_one_address_are_reported_for_the_address() {
        let mut d = SignInDetector::new(SignInThresholds {
            accounts_per_ip: 1_000,
            ..SignInThresholds::default()
        });
        let found: Vec<Detection> = (0..20)
            .flat_map(|i| d.failed(ip(9), &format!("u{}@example.com", i % 3), i * 1_000))
            .collect();
        assert_eq!(kinds(&found), [SecurityEventKind::BruteForceIp]);
        assert_eq!(found[0].subject, "203.0.113.9");
    }

    #[test]
    fn probe_paths_are_scanning_at_once_and_other_misses_from_ten() {
        let mut d = ScannerDetector::new(10 * MIN, 10, 100);
        assert!(is_probe_path("/.ENV") && is_probe_path("/wp-admin/setup.php"));
        assert!(
            !is_probe_path("/mcp") && !is_probe_path("/.well-known/oauth-authorization-server")
        );
        let probe = d.not_found(ip(1), "/.git/config", 0).expect("a probe");
        assert_eq!((probe.kind, probe.repeats), (SecurityEventKind::Scanner, 1));
        let found: Vec<u64> = (0..10)
            .filter_map(|i| d.not_found(ip(2), &format!("/missing/{i}"), i))
            .map(|d| d.repeats)
            .collect();
        assert_eq!(found, [10]);
    }

    #[test]
    fn a_token_used_from_three_addresses_at_once_is_reported_once() {
        let mut d = TokenSpreadDetector::new(5 * MIN, 3, 1_000);
        assert!(d.used("h1", ip(1), 0).is_none());
        assert!(
            d.used("h1", ip(1), 1_000).is_none(),
            "the same address again"
        );
        assert!(d.used("h1", ip(2), 2_000).is_none());
        let found = d.used("h1", ip(3), 3_000).expect("three addresses");
        assert_eq!(
            (found.kind, found.repeats),
            (SecurityEventKind::TokenFromManyIps, 3)
        );
        assert!(
            d.used("h1", ip(3), 4_000).is_none(),
            "reported once per stage"
        );
        // Addresses age out of the window: a token moving between networks is not spread.
        let mut d = TokenSpreadDetector::new(5 * MIN, 3, 1_000);
        for i in 0..10u8 {
            assert!(d.used("h2", ip(i), Millis::from(i) * 6 * MIN).is_none());
        }
    }

    #[test]
    fn a_flood_of_tokens_stays_within_the_bound() {
        let mut d = TokenSpreadDetector::new(5 * MIN, 3, 100);
        for i in 0..10_000 {
            d.used(&format!("t{i}"), ip(1), i);
            assert!(d.addresses.len() <= 100);
        }
    }
}
