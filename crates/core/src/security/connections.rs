//! HTTP connection admission and timeouts: how many connections one peer may hold, and when a
//! connection that is not serving a request must be closed. The listener does the I/O; these
//! decisions are pure, with time passed in as the time since the connection was accepted.
//!
//! Without them a client that opens connections and sends its request head one byte at a
//! time (slowloris), or nothing at all, holds them forever, and a few hundred such
//! connections exhaust the server's file descriptors (issue 6, item 15).
//!
//! ```text
//!   accepted ──▶ AwaitingHead ──request starts──▶ Busy ──last request ends──▶ Idle
//!                 (since)            ▲               (no deadline)              (since)
//!                                    │                                            │
//!                                    └─────────── AwaitingHead ◀──first byte──────┘
//!                                                  (since)        (HTTP/1 only)
//!
//!   deadline:  AwaitingHead: since + header_read     Idle: since + keep_alive
//! ```
//!
//! A new connection must deliver a complete request head within `header_read` of being
//! accepted. Between requests it may stay idle for `keep_alive`; once the first byte of the
//! next HTTP/1 request arrives, the rest of its head must follow within `header_read`. An
//! HTTP/2 connection multiplexes streams and its peer sends control frames (PING, SETTINGS,
//! WINDOW_UPDATE) at any time, so bytes do not start a head there: it is closed after
//! `keep_alive` without an open stream. While any request is in progress (its body being
//! read, its response being written, an SSE stream open) there is no connection deadline;
//! the request body has its own timeout.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionTimeouts {
    /// From accept (or from the first byte of a later HTTP/1 request) to a complete head.
    pub header_read: Duration,
    /// How long a connection may stay open with no request in progress.
    pub keep_alive: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitingHead { since: Duration },
    Busy { requests: usize },
    Idle { since: Duration },
}

/// One connection's state; every `now` is the time since the connection was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionState {
    phase: Phase,
    /// HTTP/2: bytes between requests are control frames, not the start of a request head.
    multiplexed: bool,
}

impl ConnectionState {
    /// A connection just accepted: its first request head is due.
    pub fn accepted(now: Duration) -> Self {
        Self {
            phase: Phase::AwaitingHead { since: now },
            multiplexed: false,
        }
    }

    /// Bytes arrived from the peer.
    pub fn bytes_received(&mut self, now: Duration) {
        if let Phase::Idle { .. } = self.phase
            && !self.multiplexed
        {
            self.phase = Phase::AwaitingHead { since: now };
        }
    }

    /// A request head was read in full and the request dispatched.
    pub fn request_started(&mut self, multiplexed: bool) {
        self.multiplexed |= multiplexed;
        self.phase = match self.phase {
            Phase::Busy { requests } => Phase::Busy {
                requests: requests + 1,
            },
            _ => Phase::Busy { requests: 1 },
        };
    }

    /// A request ended: its response was sent, or it was abandoned.
    pub fn request_finished(&mut self, now: Duration) {
        if let Phase::Busy { requests } = self.phase {
            self.phase = if requests > 1 {
                Phase::Busy {
                    requests: requests - 1,
                }
            } else {
                Phase::Idle { since: now }
            };
        }
    }

    /// When the connection must be closed if it is still waiting for its peer, or `None`
    /// while a request is in progress.
    pub fn deadline(&self, timeouts: &ConnectionTimeouts) -> Option<Duration> {
        match self.phase {
            Phase::AwaitingHead { since } => Some(since + timeouts.header_read),
            Phase::Idle { since } => Some(since + timeouts.keep_alive),
            Phase::Busy { .. } => None,
        }
    }
}

/// The address connections are counted under: an IPv4 address, or the /64 network of an
/// IPv6 one, since a single host usually holds a whole /64 and could otherwise open the limit
/// once per address. IPv4-mapped IPv6 addresses count as the IPv4 address.
pub fn peer_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let network = u128::from(v6) & (u128::MAX << 64);
            IpAddr::V6(network.into())
        }
        v4 => v4,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerAdmission {
    /// Counted under this key; call [`PerPeerConnections::release`] with it when it closes.
    Counted(IpAddr),
    /// A trusted proxy, which carries many clients' connections: not counted.
    Exempt,
    /// Over the per-peer limit: close the connection at once.
    Refused,
}

/// Open connections per peer, bounded by `limit`.
#[derive(Debug, Clone)]
pub struct PerPeerConnections {
    limit: usize,
    open: HashMap<IpAddr, usize>,
}

impl PerPeerConnections {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            open: HashMap::new(),
        }
    }

    /// Admit a new connection from `ip`; `exempt` for a trusted proxy.
    pub fn admit(&mut self, ip: IpAddr, exempt: bool) -> PeerAdmission {
        if exempt {
            return PeerAdmission::Exempt;
        }
        let key = peer_key(ip);
        let count = self.open.entry(key).or_insert(0);
        if *count >= self.limit {
            return PeerAdmission::Refused;
        }
        *count += 1;
        PeerAdmission::Counted(key)
    }

    /// A counted connection closed. Entries that reach zero are removed, so the map holds
    /// only peers with open connections (bounded by the total connection limit).
    pub fn release(&mut self, key: IpAddr) {
        if let Some(count) = self.open.get_mut(&key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.open.remove(&key);
            }
        }
    }

    /// Peers with at least one open connection.
    pub fn peers(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: ConnectionTimeouts = ConnectionTimeouts {
        header_read: Duration::from_secs(10),
        keep_alive: Duration::from_secs(60),
    };

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn a_new_connection_must_send_its_head_within_the_header_timeout() {
        let mut c = ConnectionState::accepted(s(0));
        assert_eq!(c.deadline(&T), Some(s(10)));
        c.bytes_received(s(3));
        assert_eq!(
            c.deadline(&T),
            Some(s(10)),
            "trickling bytes does not extend it"
        );
    }

    #[test]
    fn no_deadline_while_a_request_is_in_progress() {
        let mut c = ConnectionState::accepted(s(0));
        c.request_started(false);
        assert_eq!(c.deadline(&T), None);
        c.bytes_received(s(500));
        assert_eq!(c.deadline(&T), None, "a body being read");
    }

    #[test]
    fn an_idle_http1_connection_gets_the_keep_alive_timeout_then_the_header_timeout_from_its_first_byte()
     {
        let mut c = ConnectionState::accepted(s(0));
        c.request_started(false);
        c.request_finished(s(2));
        assert_eq!(c.deadline(&T), Some(s(62)), "idle: keep-alive");
        c.bytes_received(s(40));
        assert_eq!(
            c.deadline(&T),
            Some(s(50)),
            "a head started: header timeout"
        );
        c.bytes_received(s(45));
        assert_eq!(c.deadline(&T), Some(s(50)), "from the first byte");
        c.request_started(false);
        c.request_finished(s(47));
        assert_eq!(c.deadline(&T), Some(s(107)), "idle again");
    }

    #[test]
    fn an_http2_connection_is_idle_until_its_last_stream_ends_and_control_frames_do_not_start_a_head()
     {
        let mut c = ConnectionState::accepted(s(0));
        c.request_started(true);
        c.request_started(true);
        c.request_finished(s(5));
        assert_eq!(c.deadline(&T), None, "one stream still open");
        c.request_finished(s(6));
        assert_eq!(c.deadline(&T), Some(s(66)));
        c.bytes_received(s(30));
        assert_eq!(c.deadline(&T), Some(s(66)), "a PING is not a request head");
    }

    #[test]
    fn a_finish_without_a_start_changes_nothing() {
        let mut c = ConnectionState::accepted(s(0));
        c.request_finished(s(1));
        assert_eq!(c.deadline(&T), Some(s(10)));
    }

    #[test]
    fn peers_are_counted_per_ipv4_address_and_per_ipv6_64() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(peer_key(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(peer_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(
            peer_key(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            peer_key(ip("2001:db8:1:2::1")),
            peer_key(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            peer_key(ip("2001:db8:1:2::1")),
            peer_key(ip("2001:db8:1:3::1"))
        );
    }

    #[test]
    fn connections_over_the_per_peer_limit_are_refused_until_one_closes() {
        let mut p = PerPeerConnections::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(p.admit(a, false), PeerAdmission::Counted(a));
        assert_eq!(p.admit(a, false), PeerAdmission::Counted(a));
        assert_eq!(p.admit(a, false), PeerAdmission::Refused);
        assert_eq!(p.admit(b, false), PeerAdmission::Counted(b), "per peer");
        p.release(a);
        assert_eq!(p.admit(a, false), PeerAdmission::Counted(a));
    }

    #[test]
    fn trusted_proxies_are_not_counted() {
        let mut p = PerPeerConnections::new(1);
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..10 {
            assert_eq!(p.admit(proxy, true), PeerAdmission::Exempt);
        }
        assert_eq!(p.peers(), 0);
    }

    #[test]
    fn released_peers_are_forgotten() {
        let mut p = PerPeerConnections::new(5);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let PeerAdmission::Counted(key) = p.admit(a, false) else {
            panic!("admitted")
        };
        assert_eq!(p.peers(), 1);
        p.release(key);
        assert_eq!(p.peers(), 0);
        p.release(key);
        assert_eq!(p.peers(), 0, "a double release does not underflow");
    }
}
