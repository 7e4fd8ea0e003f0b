//! Alert delivery: each event at or above a destination's level, once per type and actor
//! within `security.alert_dedup_seconds`, POSTed to the destination's webhook, signed
//! (Standard Webhooks headers, see `mcp_oauth_core::security::alerts`), retried with
//! backoff. Bounded: a queue of `QUEUE` events (past it, alerts are dropped and logged, the
//! events themselves are still stored) and at most `CONCURRENT` deliveries at once.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use secrecy::ExposeSecret;
use tokio::sync::{Semaphore, mpsc};

use mcp_oauth_core::security::alerts::{AlertFormat, Deduplicator, body, signed_content, wanted};
use mcp_oauth_core::security::events::{Level, SecurityEvent, SecurityEventKind};

use crate::clock::Clock;
use crate::config::SecuritySettings;

/// Alerts waiting for delivery at most.
const QUEUE: usize = 1_024;
/// Deliveries in flight at most (each may be waiting to retry).
const CONCURRENT: usize = 16;
/// One delivery attempt's limit.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Type-and-actor keys remembered for de-duplication at most.
const DEDUP_KEYS: usize = 10_000;

type DedupKey = (
    SecurityEventKind,
    Option<IpAddr>,
    Option<String>,
    Option<String>,
);

struct Destination {
    url: String,
    key: Option<aws_lc_rs::hmac::Key>,
    format: AlertFormat,
    min_level: Level,
}

/// The key of a secret: `whsec_<base64>` is base64, anything else its bytes.
fn signing_key(secret: &str) -> aws_lc_rs::hmac::Key {
    let bytes = secret
        .strip_prefix("whsec_")
        .and_then(|b64| STANDARD.decode(b64).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec());
    aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &bytes)
}

pub struct Alerts {
    destinations: Arc<Vec<Destination>>,
    /// The lowest level any destination takes (`None`: no destinations).
    lowest: Option<Level>,
    dedup: Mutex<Deduplicator<DedupKey>>,
    queue: mpsc::Sender<SecurityEvent>,
    receiver: Mutex<Option<mpsc::Receiver<SecurityEvent>>>,
    retries: u32,
    retry_base: Duration,
    clock: Clock,
}

impl Alerts {
    pub fn new(settings: &SecuritySettings, clock: Clock) -> Self {
        let destinations: Vec<Destination> = settings
            .webhooks
            .iter()
            .map(|w| Destination {
                url: w.url.clone(),
                key: w.secret.as_ref().map(|s| signing_key(s.expose_secret())),
                format: AlertFormat::parse(&w.format).unwrap_or(AlertFormat::Json),
                min_level: Level::parse(&w.min_level).unwrap_or(Level::Warning),
            })
            .collect();
        let (queue, receiver) = mpsc::channel(QUEUE);
        Self {
            lowest: destinations.iter().map(|d| d.min_level).min(),
            destinations: Arc::new(destinations),
            dedup: Mutex::new(Deduplicator::new(
                settings.alert_dedup_seconds * 1000,
                DEDUP_KEYS,
            )),
            queue,
            receiver: Mutex::new(Some(receiver)),
            retries: settings.alert_retries,
            retry_base: Duration::from_millis(settings.alert_retry_base_ms),
            clock,
        }
    }

    /// Queue `event` for the destinations that take its level, unless the same type and
    /// actor was alerted within the window.
    pub fn offer(&self, event: &SecurityEvent) {
        if self
            .lowest
            .is_none_or(|lowest| !wanted(event.level, lowest))
        {
            return;
        }
        let key = (
            event.kind,
            event.actor.ip,
            event.actor.user_id.clone(),
            event.actor.client_id.clone(),
        );
        let admitted = self
            .dedup
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(key, self.clock.now_millis());
        if admitted && self.queue.try_send(event.clone()).is_err() {
            tracing::warn!(
                security_event = event.kind.as_str(),
                "alert queue full; alert dropped"
            );
        }
    }

    /// Deliver queued alerts until the queue closes (once per process; later calls return at
    /// once).
    pub async fn deliver(self: Arc<Self>) {
        let Some(mut receiver) = self
            .receiver
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return;
        };
        let http = match reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
        {
            Ok(http) => http,
            Err(e) => {
                tracing::error!(error = %e, "no HTTP client for alerts; none will be sent");
                return;
            }
        };
        let slots = Arc::new(Semaphore::new(CONCURRENT));
        while let Some(event) = receiver.recv().await {
            for index in 0..self.destinations.len() {
                if !wanted(event.level, self.destinations[index].min_level) {
                    continue;
                }
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (alerts, http, event) = (self.clone(), http.clone(), event.clone());
                tokio::spawn(async move {
                    alerts.send(&http, index, &event).await;
                    drop(slot);
                });
            }
        }
    }

    /// POST `event` to destination `index`, retrying with backoff; `410 Gone` stops.
    async fn send(&self, http: &reqwest::Client, index: usize, event: &SecurityEvent) {
        let d = &self.destinations[index];
        let id = format!("msg_{}", crate::random::id());
        let payload = body(event, &id, d.format).to_string();
        let mut wait = self.retry_base;
        for attempt in 0..=self.retries {
            let timestamp = self.clock.now();
            let mut request = http
                .post(&d.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header("webhook-id", &id)
                .header("webhook-timestamp", timestamp.to_string());
            if let Some(key) = &d.key {
                let content = signed_content(&id, timestamp, &payload);
                let tag = aws_lc_rs::hmac::sign(key, content.as_bytes());
                request = request.header(
                    "webhook-signature",
                    format!("v1,{}", STANDARD.encode(tag.as_ref())),
                );
            }
            let outcome = request.body(payload.clone()).send().await;
            match outcome {
                Ok(r) if r.status().is_success() => return,
                Ok(r) if r.status() == reqwest::StatusCode::GONE => {
                    tracing::warn!(url = %d.url, "alert destination answered 410 Gone; alert not sent");
                    return;
                }
                Ok(r) => {
                    tracing::warn!(url = %d.url, status = r.status().as_u16(), attempt, "alert delivery refused");
                }
                Err(e) => {
                    tracing::warn!(url = %d.url, error = %e.without_url(), attempt, "alert delivery failed");
                }
            }
            if attempt < self.retries {
                tokio::time::sleep(wait).await;
                wait = wait.saturating_mul(5);
            }
        }
        tracing::error!(url = %d.url, security_event = event.kind.as_str(), "alert not delivered after every retry");
    }
}
