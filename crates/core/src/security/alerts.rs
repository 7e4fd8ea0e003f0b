//! Alerts (issue 8): which events go to a destination, which repeats are held back, and the
//! bodies and signature base a webhook receives. Delivery (HTTP, retries) is the server's.
//!
//! Signing follows Standard Webhooks 1.0: three headers, `webhook-id`, `webhook-timestamp`
//! (Unix seconds) and `webhook-signature: v1,<base64 HMAC-SHA256>`, where the HMAC is over
//! [`signed_content`], `{id}.{timestamp}.{body}`. A receiver recomputes it with the shared
//! secret, compares in constant time, rejects timestamps far from now and de-duplicates on
//! the id.

use std::collections::HashMap;
use std::hash::Hash;

use serde_json::{Value, json};

use super::events::{Level, SecurityEvent};
use crate::analytics::Millis;
use crate::analytics::summary::rfc3339;

/// How a destination wants its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertFormat {
    /// The event as JSON (the fields of `mcp-oauth security events --json`).
    Json,
    /// `{"text": …}`, what Slack (and Mattermost, Rocket.Chat, …) incoming webhooks take.
    Slack,
}

impl AlertFormat {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "json" => Some(Self::Json),
            "slack" => Some(Self::Slack),
            _ => None,
        }
    }
}

/// The body of `event` (with the delivery id `id`) for a destination of `format`.
pub fn body(event: &SecurityEvent, id: &str, format: AlertFormat) -> Value {
    match format {
        AlertFormat::Json => json!({
            "id": id,
            "time": rfc3339(event.at),
            "type": event.kind.as_str(),
            "level": event.level.as_str(),
            "score": event.score,
            "ip": event.actor.ip.map(|ip| ip.to_string()),
            "user_id": event.actor.user_id,
            "client_id": event.actor.client_id,
            "request_id": event.request_id,
            "evidence": Value::Object(event.evidence.clone()),
        }),
        AlertFormat::Slack => {
            let mut text = format!(
                "[{}] {} (score {})",
                event.level.as_str(),
                event.kind.as_str(),
                event.score
            );
            if let Some(ip) = event.actor.ip {
                text.push_str(&format!(" from {ip}"));
            }
            if let Some(user) = &event.actor.user_id {
                text.push_str(&format!(", user {user}"));
            }
            if let Some(client) = &event.actor.client_id {
                text.push_str(&format!(", client {client}"));
            }
            text.push_str(&format!(": {}", Value::Object(event.evidence.clone())));
            json!({ "text": text })
        }
    }
}

/// What is signed: `{id}.{timestamp}.{body}` (Standard Webhooks).
pub fn signed_content(id: &str, timestamp: i64, body: &str) -> String {
    format!("{id}.{timestamp}.{body}")
}

/// Whether an event at `level` goes to a destination taking `min_level` and up.
pub fn wanted(level: Level, min_level: Level) -> bool {
    level >= min_level
}

/// Holds back repeats: an alert for a key (type and actor) already sent within the window is
/// not sent again. Bounded: past `max_keys` the keys whose window has passed are dropped, and
/// if none has, all are (a flood of distinct keys then costs repeats, never memory).
#[derive(Debug)]
pub struct Deduplicator<K> {
    window_ms: Millis,
    max_keys: usize,
    sent: HashMap<K, Millis>,
}

impl<K: Eq + Hash> Deduplicator<K> {
    pub fn new(window_ms: Millis, max_keys: usize) -> Self {
        Self {
            window_ms,
            max_keys: max_keys.max(1),
            sent: HashMap::new(),
        }
    }

    /// Whether to send `key` now; if so, it is held back for the window from `now`.
    pub fn admit(&mut self, key: K, now: Millis) -> bool {
        if self
            .sent
            .get(&key)
            .is_some_and(|&at| now - at < self.window_ms)
        {
            return false;
        }
        if self.sent.len() >= self.max_keys {
            let window = self.window_ms;
            self.sent.retain(|_, at| now - *at < window);
            if self.sent.len() >= self.max_keys {
                self.sent.clear();
            }
        }
        self.sent.insert(key, now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::events::{Actor, SecurityEvent};

    #[test]
    fn a_repeat_within_the_window_is_held_back_and_sent_after_it() {
        let mut d = Deduplicator::new(300_000, 100);
        assert!(d.admit("scanner|203.0.113.1", 0));
        assert!(!d.admit("scanner|203.0.113.1", 299_999));
        assert!(
            d.admit("scanner|203.0.113.2", 1),
            "another actor is another alert"
        );
        assert!(d.admit("scanner|203.0.113.1", 300_000));
    }

    #[test]
    fn the_deduplicator_stays_within_its_bound() {
        let mut d = Deduplicator::new(300_000, 10);
        for i in 0..1_000 {
            d.admit(i, i64::from(i));
            assert!(d.sent.len() <= 10);
        }
    }

    #[test]
    fn bodies_carry_the_event_and_the_signature_covers_id_time_and_body() {
        let e = SecurityEvent::code_replay(1_796_000_000_000, true).actor(Actor {
            ip: Some("203.0.113.9".parse().unwrap()),
            user_id: Some("u1".into()),
            client_id: Some("c1".into()),
        });
        let json = body(&e, "msg_1", AlertFormat::Json);
        assert_eq!(json["type"], "code_replay");
        assert_eq!(json["level"], "critical");
        assert_eq!(json["score"], 90);
        assert_eq!(json["ip"], "203.0.113.9");
        assert_eq!(json["evidence"]["grant_revoked"], true);
        let slack = body(&e, "msg_1", AlertFormat::Slack);
        assert_eq!(
            slack["text"],
            "[critical] code_replay (score 90) from 203.0.113.9, user u1, client c1: {\"grant_revoked\":true}"
        );
        assert_eq!(signed_content("msg_1", 17, "{}"), "msg_1.17.{}");
        assert!(wanted(Level::Critical, Level::Warning) && !wanted(Level::Notice, Level::Warning));
    }
}
