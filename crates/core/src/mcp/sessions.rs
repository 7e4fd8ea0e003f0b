//! What MCP clients may make the server hold: sessions per user and in total, which session
//! gives way to a new one, and when an idle session is closed.
//!
//! Each session costs memory (a service, its channels and caches) until it is closed, and
//! `initialize` costs a client nothing, so every session sits in a `SessionTable` and counts
//! against two caps from the moment it is admitted, before it exists:
//!
//! ```text
//!   admit(user) ──▶ pending ──commit(id)──▶ open ──────────────▶ removed
//!      │               │                     │  ▲ touch            ▲
//!      │ refused       └──cancel─────────────┼──┘ (each request)   │ remove (client DELETE,
//!      ▼                                     │                     │  service ended), or
//!   UserLimit: the user holds `per_user` and │ streams > 0: busy   │ take_idle (no stream and
//!     none of them is idle                   │ streams = 0: idle ──┘  no request for longer
//!   TotalLimit: `total` are held by anyone   │                        than `idle_timeout`), or
//!                                            └── evicted: the user's least recently used idle
//!                                                session, to admit that user's new one
//! ```
//!
//! A user at the cap who opens another session closes their own least recently used idle one,
//! so a client that forgets its sessions keeps working; a session with an open stream is in
//! use and never evicted. The total cap never evicts: one user must not be able to close
//! another's sessions. The caller holds the table behind one lock, which makes every decision
//! atomic (concurrent `initialize` requests of one user cannot exceed the cap together).

use std::collections::HashMap;
use std::hash::Hash;

use crate::UnixTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Sessions one user may hold (pending ones included).
    pub per_user: usize,
    /// Sessions everyone together may hold.
    pub total: usize,
    /// Seconds without a request or an open stream after which a session is closed.
    pub idle_timeout: i64,
}

/// Why a new session was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The user holds `per_user` sessions, each with an open stream or still being set up.
    UserLimit,
    /// The server holds `total` sessions.
    TotalLimit,
}

/// A new session may be created; `evicted` (removed from the table already) must be closed.
#[derive(Debug, PartialEq, Eq)]
pub struct Admission<K> {
    pub evicted: Option<K>,
}

#[derive(Debug)]
struct Entry<U> {
    owner: Option<U>,
    last_active: UnixTime,
    /// Logical time of the last use, for least-recently-used order within one second.
    last_use: u64,
    streams: usize,
}

#[derive(Debug)]
struct UserSlots<K> {
    sessions: Vec<K>,
    pending: usize,
}

impl<K> UserSlots<K> {
    fn held(&self) -> usize {
        self.sessions.len() + self.pending
    }
}

/// The sessions of one server, by session key `K`, owned by users `U`. A session without an
/// owner (an unauthenticated endpoint) counts only against the total.
#[derive(Debug)]
pub struct SessionTable<K, U> {
    limits: SessionLimits,
    entries: HashMap<K, Entry<U>>,
    users: HashMap<U, UserSlots<K>>,
    pending: usize,
    uses: u64,
}

impl<K: Eq + Hash + Clone, U: Eq + Hash + Clone> SessionTable<K, U> {
    pub fn new(limits: SessionLimits) -> Self {
        Self {
            limits,
            entries: HashMap::new(),
            users: HashMap::new(),
            pending: 0,
            uses: 0,
        }
    }

    pub fn limits(&self) -> SessionLimits {
        self.limits
    }

    /// Sessions held, pending ones included.
    pub fn len(&self) -> usize {
        self.entries.len() + self.pending
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sessions `owner` holds, pending ones included.
    pub fn held_by(&self, owner: &U) -> usize {
        self.users.get(owner).map_or(0, UserSlots::held)
    }

    /// The owner of an open session: `None` if there is no such session, `Some(None)` if it
    /// has no owner.
    pub fn owner(&self, key: &K) -> Option<Option<&U>> {
        self.entries.get(key).map(|e| e.owner.as_ref())
    }

    /// Open sessions with their number of open streams.
    pub fn iter(&self) -> impl Iterator<Item = (&K, usize)> {
        self.entries.iter().map(|(k, e)| (k, e.streams))
    }

    /// Reserve a slot for a new session of `owner`, evicting the owner's least recently used
    /// idle session if they are at the cap. Nothing changes when it is refused.
    pub fn admit(&mut self, owner: Option<&U>) -> Result<Admission<K>, Refusal> {
        let victim = match owner.and_then(|u| self.users.get(u)) {
            Some(slots) if slots.held() >= self.limits.per_user => Some(
                slots
                    .sessions
                    .iter()
                    .filter_map(|k| self.entries.get(k).map(|e| (k, e)))
                    .filter(|(_, e)| e.streams == 0)
                    .min_by_key(|(_, e)| e.last_use)
                    .map(|(k, _)| k.clone())
                    .ok_or(Refusal::UserLimit)?,
            ),
            _ => None,
        };
        // An eviction frees the slot the new session takes, so it passes the total cap too.
        if victim.is_none() && self.len() >= self.limits.total {
            return Err(Refusal::TotalLimit);
        }
        if let Some(k) = &victim {
            self.remove(k);
        }
        self.pending += 1;
        if let Some(u) = owner {
            self.users
                .entry(u.clone())
                .or_insert_with(|| UserSlots {
                    sessions: Vec::new(),
                    pending: 0,
                })
                .pending += 1;
        }
        Ok(Admission { evicted: victim })
    }

    /// Give back a slot reserved by `admit` for a session that was not created.
    pub fn cancel(&mut self, owner: Option<&U>) {
        self.pending = self.pending.saturating_sub(1);
        if let Some(u) = owner
            && let Some(slots) = self.users.get_mut(u)
        {
            slots.pending = slots.pending.saturating_sub(1);
            if slots.held() == 0 {
                self.users.remove(u);
            }
        }
    }

    /// The session reserved by `admit` for `owner` now exists as `key`, with `streams` open.
    pub fn commit(&mut self, key: K, owner: Option<U>, now: UnixTime, streams: usize) {
        if let Some(u) = &owner
            && let Some(slots) = self.users.get_mut(u)
        {
            slots.pending = slots.pending.saturating_sub(1);
        }
        self.pending = self.pending.saturating_sub(1);
        // A key committed twice keeps one entry and one slot.
        self.remove(&key);
        if let Some(u) = &owner {
            self.users
                .entry(u.clone())
                .or_insert_with(|| UserSlots {
                    sessions: Vec::new(),
                    pending: 0,
                })
                .sessions
                .push(key.clone());
        }
        self.uses += 1;
        self.entries.insert(
            key,
            Entry {
                owner,
                last_active: now,
                last_use: self.uses,
                streams,
            },
        );
    }

    /// A request in the session: it is not idle from `now`. False if there is no such session.
    pub fn touch(&mut self, key: &K, now: UnixTime) -> bool {
        let Some(e) = self.entries.get_mut(key) else {
            return false;
        };
        self.uses += 1;
        e.last_active = now;
        e.last_use = self.uses;
        true
    }

    pub fn stream_opened(&mut self, key: &K, now: UnixTime) {
        if self.touch(key, now)
            && let Some(e) = self.entries.get_mut(key)
        {
            e.streams += 1;
        }
    }

    /// The idle time of a session starts when its last stream closes.
    pub fn stream_closed(&mut self, key: &K, now: UnixTime) {
        if self.touch(key, now)
            && let Some(e) = self.entries.get_mut(key)
        {
            e.streams = e.streams.saturating_sub(1);
        }
    }

    /// Forget a session; false if it was not there.
    pub fn remove(&mut self, key: &K) -> bool {
        let Some(entry) = self.entries.remove(key) else {
            return false;
        };
        if let Some(u) = &entry.owner
            && let Some(slots) = self.users.get_mut(u)
        {
            slots.sessions.retain(|k| k != key);
            if slots.held() == 0 {
                self.users.remove(u);
            }
        }
        true
    }

    /// Remove and return the sessions idle for longer than `idle_timeout` at `now`: no open
    /// stream, and no request for more than that many seconds.
    pub fn take_idle(&mut self, now: UnixTime) -> Vec<K> {
        let timeout = self.limits.idle_timeout;
        let idle: Vec<K> = self
            .entries
            .iter()
            .filter(|(_, e)| e.streams == 0 && now - e.last_active > timeout)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &idle {
            self.remove(k);
        }
        idle
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T0: UnixTime = 1_700_000_000;

    fn table(per_user: usize, total: usize) -> SessionTable<u32, &'static str> {
        SessionTable::new(SessionLimits {
            per_user,
            total,
            idle_timeout: 60,
        })
    }

    /// Admit and commit `key` for `owner` at `now`; returns what was evicted.
    fn open(
        t: &mut SessionTable<u32, &'static str>,
        key: u32,
        owner: &'static str,
        now: UnixTime,
    ) -> Result<Option<u32>, Refusal> {
        let admission = t.admit(Some(&owner))?;
        t.commit(key, Some(owner), now, 0);
        Ok(admission.evicted)
    }

    #[test]
    fn a_user_below_the_cap_is_admitted_without_eviction() {
        let mut t = table(2, 10);
        assert_eq!(open(&mut t, 1, "a", T0), Ok(None));
        assert_eq!(open(&mut t, 2, "a", T0), Ok(None));
        assert_eq!(t.held_by(&"a"), 2);
    }

    #[test]
    fn a_user_at_the_cap_gives_up_their_least_recently_used_idle_session() {
        let mut t = table(3, 10);
        for k in 1..=3 {
            open(&mut t, k, "a", T0).unwrap();
        }
        // 1 is the oldest, but used since: 2 is now the least recently used.
        t.touch(&1, T0);
        assert_eq!(open(&mut t, 4, "a", T0), Ok(Some(2)));
        assert_eq!(t.owner(&2), None, "the evicted session is gone");
        assert_eq!(t.held_by(&"a"), 3);
        assert_eq!(open(&mut t, 5, "a", T0), Ok(Some(3)));
        assert_eq!(open(&mut t, 6, "a", T0), Ok(Some(1)));
    }

    #[test]
    fn a_session_with_an_open_stream_is_never_evicted() {
        let mut t = table(2, 10);
        open(&mut t, 1, "a", T0).unwrap();
        open(&mut t, 2, "a", T0).unwrap();
        t.stream_opened(&1, T0);
        assert_eq!(open(&mut t, 3, "a", T0), Ok(Some(2)), "1 streams; 2 goes");
        t.stream_opened(&3, T0);
        assert_eq!(t.admit(Some(&"a")), Err(Refusal::UserLimit));
        assert_eq!(t.held_by(&"a"), 2, "a refusal changes nothing");
        t.stream_closed(&3, T0 + 1);
        assert_eq!(open(&mut t, 4, "a", T0 + 1), Ok(Some(3)));
    }

    #[test]
    fn pending_sessions_count_against_both_caps_and_are_not_evicted() {
        let mut t = table(2, 3);
        t.admit(Some(&"a")).unwrap();
        t.admit(Some(&"a")).unwrap();
        assert_eq!(
            t.admit(Some(&"a")),
            Err(Refusal::UserLimit),
            "two initializes in flight"
        );
        t.admit(Some(&"b")).unwrap();
        assert_eq!(t.admit(Some(&"c")), Err(Refusal::TotalLimit));
        t.cancel(Some(&"a"));
        assert_eq!(t.held_by(&"a"), 1);
        assert!(t.admit(Some(&"c")).is_ok());
    }

    #[test]
    fn the_total_cap_refuses_and_never_evicts_another_users_session() {
        let mut t = table(5, 3);
        for k in 1..=3 {
            open(&mut t, k, "a", T0).unwrap();
        }
        assert_eq!(t.admit(Some(&"b")), Err(Refusal::TotalLimit));
        assert_eq!(t.len(), 3);
        assert!(t.owner(&1).is_some(), "a's sessions are untouched");
    }

    #[test]
    fn at_the_total_cap_a_user_at_their_own_cap_still_replaces_an_idle_session() {
        let mut t = table(2, 2);
        open(&mut t, 1, "a", T0).unwrap();
        open(&mut t, 2, "a", T0).unwrap();
        assert_eq!(open(&mut t, 3, "a", T0), Ok(Some(1)));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn sessions_without_an_owner_count_only_against_the_total() {
        let mut t = table(1, 3);
        for k in 1..=3 {
            t.admit(None).unwrap();
            t.commit(k, None, T0, 0);
        }
        assert_eq!(t.admit(None), Err(Refusal::TotalLimit));
        assert_eq!(t.owner(&1), Some(None));
    }

    #[test]
    fn idle_sessions_are_taken_after_the_timeout_and_busy_ones_stay() {
        let mut t = table(5, 10);
        open(&mut t, 1, "a", T0).unwrap();
        open(&mut t, 2, "a", T0).unwrap();
        open(&mut t, 3, "b", T0).unwrap();
        t.stream_opened(&2, T0);
        t.touch(&3, T0 + 30);
        assert!(
            t.take_idle(T0 + 60).is_empty(),
            "not idle longer than 60 s yet"
        );
        assert_eq!(t.take_idle(T0 + 61), vec![1]);
        assert_eq!(t.take_idle(T0 + 91), vec![3]);
        assert!(t.take_idle(T0 + 10_000).is_empty(), "2 has an open stream");
        t.stream_closed(&2, T0 + 10_000);
        assert_eq!(t.take_idle(T0 + 10_061), vec![2]);
        assert!(t.is_empty());
        assert_eq!(t.held_by(&"a"), 0);
    }

    #[test]
    fn removing_frees_the_slot_and_unknown_keys_are_ignored() {
        let mut t = table(1, 10);
        open(&mut t, 1, "a", T0).unwrap();
        t.stream_opened(&1, T0);
        assert_eq!(t.admit(Some(&"a")), Err(Refusal::UserLimit));
        assert!(t.remove(&1));
        assert!(!t.remove(&1));
        assert!(!t.touch(&1, T0));
        assert_eq!(open(&mut t, 2, "a", T0), Ok(None));
    }

    #[test]
    fn committing_a_key_twice_keeps_one_slot() {
        let mut t = table(3, 10);
        open(&mut t, 1, "a", T0).unwrap();
        open(&mut t, 1, "a", T0).unwrap();
        assert_eq!(t.held_by(&"a"), 1);
        assert_eq!(t.len(), 1);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Open(usize),
        Reserve(usize),
        Cancel(usize),
        Stream(u32),
        EndStream(u32),
        Close(u32),
        Idle(i64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..3usize).prop_map(Op::Open),
            1 => (0..3usize).prop_map(Op::Reserve),
            1 => (0..3usize).prop_map(Op::Cancel),
            1 => (0..40u32).prop_map(Op::Stream),
            1 => (0..40u32).prop_map(Op::EndStream),
            1 => (0..40u32).prop_map(Op::Close),
            1 => (0..100i64).prop_map(Op::Idle),
        ]
    }

    proptest! {
        #[test]
        fn no_sequence_of_operations_exceeds_either_cap(ops in proptest::collection::vec(op(), 1..200)) {
            const USERS: [&str; 3] = ["a", "b", "c"];
            let mut t = table(3, 7);
            let mut next = 0u32;
            let mut now = T0;
            let mut reserved = [0usize; 3];
            for op in ops {
                match op {
                    Op::Open(u) => {
                        next += 1;
                        let _ = open(&mut t, next % 40, USERS[u], now);
                    }
                    Op::Reserve(u) => {
                        if t.admit(Some(&USERS[u])).is_ok() {
                            reserved[u] += 1;
                        }
                    }
                    Op::Cancel(u) => {
                        if reserved[u] > 0 {
                            reserved[u] -= 1;
                            t.cancel(Some(&USERS[u]));
                        }
                    }
                    Op::Stream(k) => t.stream_opened(&k, now),
                    Op::EndStream(k) => t.stream_closed(&k, now),
                    Op::Close(k) => { t.remove(&k); }
                    Op::Idle(dt) => {
                        now += dt;
                        t.take_idle(now);
                    }
                }
                prop_assert!(t.len() <= 7, "total {}", t.len());
                for (i, u) in USERS.iter().enumerate() {
                    prop_assert!(t.held_by(u) <= 3, "{u} holds {}", t.held_by(u));
                    prop_assert!(t.held_by(u) >= reserved[i]);
                }
                let owned: usize = USERS.iter().map(|u| t.held_by(u)).sum();
                prop_assert_eq!(owned, t.len(), "every slot belongs to a user");
            }
        }
    }
}
