//! Blocked addresses: refused before anything else runs, on every instance. Blocks live in
//! the database (`ip_blocks`); each instance keeps the ones in force in memory, reloaded
//! every second, so a block made anywhere (automatically, or `mcp-oauth security block`)
//! holds everywhere within a second, and at once on the instance that made it.
//!
//! Never blocked, not even by an operator: loopback, the `trusted_proxies` (behind a proxy,
//! blocking it would block everyone) and `security.allow_cidrs`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::RwLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use mcp_oauth_core::analytics::Millis;
use mcp_oauth_store::Db;

use super::Requester;
use crate::config::Cidr;
use crate::state::AppState;

/// How often each instance reloads the blocks in force.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Blocks held in memory at most (the newest).
const MAX_ACTIVE: i64 = 100_000;

pub struct BlockList {
    allow: Vec<Cidr>,
    /// Blocked addresses and until when (`None`: until unblocked).
    active: RwLock<HashMap<IpAddr, Option<Millis>>>,
    /// Blocks made here and not (yet) in the database: kept over each reload, so that a
    /// block holds here while it is being stored, or if storing it failed.
    pending: std::sync::Mutex<HashMap<IpAddr, Option<Millis>>>,
    /// `active.len()`, read without the lock: with nothing blocked, a request costs one load.
    count: AtomicUsize,
}

impl BlockList {
    pub fn new(allow: Vec<Cidr>) -> Self {
        Self {
            allow,
            active: RwLock::default(),
            pending: std::sync::Mutex::default(),
            count: AtomicUsize::new(0),
        }
    }

    /// Whether `ip` may never be blocked.
    pub fn is_allowed(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        ip.is_loopback() || self.allow.iter().any(|c| c.contains(ip))
    }

    /// Until when `ip` is blocked at `now`: `None` when it is not, `Some(None)` until
    /// unblocked.
    pub fn blocked_until(&self, ip: IpAddr, now: Millis) -> Option<Option<Millis>> {
        if self.count.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let active = self.active.read().unwrap_or_else(|e| e.into_inner());
        let until = *active.get(&ip)?;
        until.is_none_or(|t| t > now).then_some(until)
    }

    /// Block `ip` here at once; it stays blocked here until it ends or [`Self::stored`]
    /// says the database has it (the caller writes it there).
    pub fn insert(&self, ip: IpAddr, until: Option<Millis>) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(ip, until);
        let mut active = self.active.write().unwrap_or_else(|e| e.into_inner());
        active.insert(ip, until);
        self.count.store(active.len(), Ordering::Relaxed);
    }

    /// The block of `ip` is in the database: from now on, reloads decide it.
    pub fn stored(&self, ip: IpAddr) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ip);
    }

    pub fn remove(&self, ip: IpAddr) {
        let mut active = self.active.write().unwrap_or_else(|e| e.into_inner());
        active.remove(&ip);
        self.count.store(active.len(), Ordering::Relaxed);
    }

    /// Replace what is held with the blocks in force in the database.
    pub async fn poll(&self, db: &Db, now: Millis) -> mcp_oauth_store::Result<()> {
        let rows = db.active_ip_blocks(now, MAX_ACTIVE).await?;
        let mut fresh: HashMap<IpAddr, Option<Millis>> = rows
            .into_iter()
            .filter_map(|r| Some((r.ip.parse().ok()?, r.expires_at)))
            .collect();
        {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.retain(|_, until| until.is_none_or(|t| t > now));
            for (ip, until) in pending.iter() {
                fresh.entry(*ip).or_insert(*until);
            }
        }
        let mut active = self.active.write().unwrap_or_else(|e| e.into_inner());
        *active = fresh;
        self.count.store(active.len(), Ordering::Relaxed);
        Ok(())
    }
}

/// The middleware: a blocked address gets 403 and nothing else runs.
pub async fn refuse_blocked(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let blocks = &state.security.blocks;
    if blocks.count.load(Ordering::Relaxed) == 0 {
        return next.run(req).await;
    }
    let who = Requester::of(req.extensions(), req.headers(), &state);
    let now = state.clock.now_millis();
    let Some(until) = blocks
        .blocked_until(who.ip, now)
        .filter(|_| !blocks.is_allowed(who.ip))
    else {
        return next.run(req).await;
    };
    let mut r = (
        StatusCode::FORBIDDEN,
        Json(json!({
            "error": "access_denied",
            "error_description": "requests from this address are blocked",
        })),
    )
        .into_response();
    if let Some(until) = until {
        let seconds = (until - now).max(1000) / 1000;
        if let Ok(v) = HeaderValue::from_str(&seconds.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_allowed_networks_are_never_blocked() {
        let list = BlockList::new(vec![Cidr::parse("10.0.0.0/8").unwrap()]);
        assert!(list.is_allowed("127.0.0.1".parse().unwrap()));
        assert!(list.is_allowed("::1".parse().unwrap()));
        assert!(list.is_allowed("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!list.is_allowed("203.0.113.1".parse().unwrap()));
    }

    #[test]
    fn a_block_holds_until_it_ends() {
        let list = BlockList::new(vec![]);
        let ip: IpAddr = "203.0.113.1".parse().unwrap();
        assert_eq!(list.blocked_until(ip, 0), None);
        list.insert(ip, Some(1_000));
        assert_eq!(list.blocked_until(ip, 999), Some(Some(1_000)));
        assert_eq!(list.blocked_until(ip, 1_000), None);
        list.insert(ip, None);
        assert_eq!(list.blocked_until(ip, i64::MAX), Some(None));
        list.remove(ip);
        assert_eq!(list.blocked_until(ip, 0), None);
    }
}
