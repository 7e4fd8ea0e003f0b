//! Security monitoring (issue 8): where requests report what they saw, the detectors that
//! turn repeated observations into events, and where each event goes (a log line, the
//! `mcp_oauth_security_events_total` metric, and the `security_events` table through the
//! analytics writer).
//!
//! Handlers stay thin: they call one method here per thing that happened, with who asked
//! ([`Requester`]). The decisions (what an event scores, when a count becomes an attack) are
//! pure, in `mcp_oauth_core::security`; this module holds their state, one lock per
//! detector, per instance.

pub mod alerts;
pub mod blocks;
pub mod feed;
pub mod page;
pub mod rate_limit;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap};

use mcp_oauth_core::analytics::{Millis, geo};
use mcp_oauth_core::security::blocks::{block_seconds, earns_a_block};
use mcp_oauth_core::security::detectors::{
    Detection, ScannerDetector, SignInDetector, SignInThresholds, TokenSpreadDetector,
    WindowCounter, is_stage,
};
use mcp_oauth_core::security::events::{Actor, Level, SecurityEvent, SecurityEventKind};
use mcp_oauth_core::security::rate_limit::{EndpointClass, RateKey};

use mcp_oauth_store::Db;

use crate::analytics::Recorder;
use crate::analytics::geoip::GeoIp;
use crate::clock::Clock;
use crate::config::{Cidr, SecuritySettings};
use crate::http::extract::client_ip;
use crate::http::middleware::REQUEST_ID;
use crate::metrics::Metrics;
use crate::security::rate_limit::RateDecision;
use crate::state::AppState;

/// Keys each detector holds at most.
const MAX_KEYS: usize = 10_000;
/// (user, country) pairs remembered as known, so that repeat sightings cost no write.
const KNOWN_COUNTRIES: usize = 100_000;
/// New (user, country) pairs written at once; past it, a sighting is skipped, not queued.
const COUNTRY_CHECKS: usize = 32;
/// The window of counters whose setting names no window.
const TEN_MINUTES: Millis = 10 * 60_000;
const HOUR: Millis = 60 * 60_000;

/// Who sent a request: the client address (after `trusted_proxies`) and the request id.
#[derive(Debug, Clone)]
pub struct Requester {
    pub ip: IpAddr,
    pub request_id: Option<String>,
}

impl Requester {
    pub fn of(extensions: &Extensions, headers: &HeaderMap, state: &AppState) -> Self {
        let peer = extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([127, 0, 0, 1]), |c| c.0.ip());
        Self {
            ip: client_ip(peer, headers, &state.settings.trusted_proxies),
            request_id: headers
                .get(&REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        }
    }

    /// The actor of an event about this request, for `user` and `client`.
    pub fn actor(&self, user: Option<&str>, client: Option<&str>) -> Actor {
        Actor {
            ip: Some(self.ip),
            user_id: user.map(str::to_owned),
            client_id: client.map(str::to_owned),
        }
    }
}

impl<S> FromRequestParts<S> for Requester
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::of(
            &parts.extensions,
            &parts.headers,
            &AppState::from_ref(state),
        ))
    }
}

/// The detectors and where their events go. One per instance, shared.
pub struct SecurityMonitor {
    enabled: bool,
    /// Addresses blocked, shared with the middleware that refuses them.
    pub blocks: Arc<blocks::BlockList>,
    /// Where alerts go (its delivery task is started with the other background work).
    pub alerts: Arc<alerts::Alerts>,
    /// Events at or above it block their address (when `auto_block` and the event is about
    /// the address).
    block_min_level: Option<Level>,
    db: Db,
    settings: SecuritySettings,
    recorder: Arc<Recorder>,
    clock: Clock,
    metrics: Arc<Metrics>,
    sign_in: Mutex<SignInDetector>,
    scanner: Mutex<ScannerDetector>,
    token_spread: Mutex<TokenSpreadDetector>,
    /// `insufficient_scope` answers per token id.
    insufficient_scope: Mutex<WindowCounter<String>>,
    /// Registrations per client name and redirect URIs.
    registrations: Mutex<WindowCounter<String>>,
    /// Registrations refused by the per-address limit, per address.
    refused_registrations: Mutex<WindowCounter<IpAddr>>,
    /// Requests refused by a rate limit, per class and address.
    rate_limited: Mutex<WindowCounter<(EndpointClass, IpAddr)>>,
    /// For `new_country`: where addresses are; the pairs known; the writes in flight.
    geoip: Option<Arc<GeoIp>>,
    known_countries: Arc<quick_cache::sync::Cache<(String, String), ()>>,
    country_checks: Arc<tokio::sync::Semaphore>,
}

impl SecurityMonitor {
    pub fn new(
        settings: &SecuritySettings,
        trusted_proxies: &[Cidr],
        db: Db,
        recorder: Arc<Recorder>,
        clock: Clock,
        metrics: Arc<Metrics>,
        geoip: Option<Arc<GeoIp>>,
    ) -> Self {
        let s = settings;
        let mut allow: Vec<Cidr> = s
            .allow_cidrs
            .iter()
            .filter_map(|c| Cidr::parse(c))
            .collect();
        allow.extend_from_slice(trusted_proxies);
        Self {
            enabled: s.enabled,
            blocks: Arc::new(blocks::BlockList::new(allow)),
            alerts: Arc::new(alerts::Alerts::new(s, clock.clone())),
            block_min_level: s
                .auto_block
                .then(|| Level::parse(&s.block_min_level))
                .flatten(),
            db,
            settings: s.clone(),
            recorder,
            clock,
            metrics,
            sign_in: Mutex::new(SignInDetector::new(SignInThresholds {
                window_ms: s.sign_in_window_seconds * 1000,
                per_account: s.brute_force_account_failures,
                per_ip: s.brute_force_ip_failures,
                accounts_per_ip: s.credential_stuffing_accounts,
                max_keys: MAX_KEYS,
            })),
            scanner: Mutex::new(ScannerDetector::new(
                s.scanner_window_seconds * 1000,
                s.scanner_not_found,
                MAX_KEYS,
            )),
            token_spread: Mutex::new(TokenSpreadDetector::new(
                s.token_spread_window_seconds * 1000,
                s.token_spread_addresses,
                MAX_KEYS,
            )),
            insufficient_scope: Mutex::new(WindowCounter::new(TEN_MINUTES, MAX_KEYS)),
            registrations: Mutex::new(WindowCounter::new(HOUR, MAX_KEYS)),
            refused_registrations: Mutex::new(WindowCounter::new(HOUR, MAX_KEYS)),
            rate_limited: Mutex::new(WindowCounter::new(TEN_MINUTES, MAX_KEYS)),
            geoip,
            known_countries: Arc::new(quick_cache::sync::Cache::new(KNOWN_COUNTRIES)),
            country_checks: Arc::new(tokio::sync::Semaphore::new(COUNTRY_CHECKS)),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn now(&self) -> Millis {
        self.clock.now_millis()
    }

    /// Send `event` about `who`'s request (with its actor) to the log, the metrics and the
    /// writer.
    pub fn report(&self, who: &Requester, actor: Actor, event: SecurityEvent) {
        if !self.enabled {
            return;
        }
        let event = event.actor(actor).request_id(who.request_id.as_deref());
        if let Some(min) = self.block_min_level
            && earns_a_block(event.kind, event.level, min)
        {
            self.auto_block(who, event.kind.as_str());
        }
        self.alerts.offer(&event);
        emit(&self.recorder, &self.metrics, event);
    }

    /// Block `who`'s address for an event of `reason`: here at once for the first block's
    /// length, then in the database for as long as its earlier blocks make it (the other
    /// instances read it from there within a second).
    fn auto_block(&self, who: &Requester, reason: &'static str) {
        let ip = who.ip;
        let now = self.now();
        if self.blocks.is_allowed(ip) || self.blocks.blocked_until(ip, now).is_some() {
            return;
        }
        let (base, max) = (self.settings.block_seconds, self.settings.block_max_seconds);
        self.blocks.insert(ip, Some(now + base * 1000));
        let (db, blocks, requester) = (self.db.clone(), self.blocks.clone(), who.clone());
        let monitor_event =
            move |until| SecurityEvent::ip_blocked(now, reason, Some(until), "auto");
        let event_sink = self.recorder.clone();
        let metrics = self.metrics.clone();
        let alerts = self.alerts.clone();
        tokio::spawn(async move {
            let address = ip.to_string();
            let previous = db.ip_block_strikes(&address).await.unwrap_or(0);
            let seconds = block_seconds(u32::try_from(previous).unwrap_or(u32::MAX), base, max);
            let until = now + seconds * 1000;
            blocks.insert(ip, Some(until));
            match db
                .block_ip(&address, reason, now, Some(until), "auto", true)
                .await
            {
                Ok(()) => blocks.stored(ip),
                Err(e) => {
                    tracing::warn!(error = ?e.to_string(), "storing an address block failed; it holds on this instance only");
                }
            }
            let event = monitor_event(until)
                .actor(requester.actor(None, None))
                .request_id(requester.request_id.as_deref());
            alerts.offer(&event);
            emit(&event_sink, &metrics, event);
        });
    }

    /// `user_id` was seen at `who`'s address (signed in, got tokens, called MCP). On the first
    /// sight of a country for a user already seen from others, a `new_country` event. Needs a
    /// GeoIP database; private and unknown addresses are in no country. Known pairs are
    /// remembered here, so a repeat sighting costs a lookup in memory; a new pair is written
    /// in the background, the store deciding (so two instances report it once).
    pub fn user_seen(&self, who: &Requester, user_id: &str, client_id: Option<&str>) {
        if !self.enabled {
            return;
        }
        let Some(geoip) = &self.geoip else { return };
        let country = geoip.country_of(who.ip);
        if country == geo::PRIVATE || country == geo::UNKNOWN {
            return;
        }
        let pair = (user_id.to_owned(), country);
        if self.known_countries.get(&pair).is_some() {
            return;
        }
        let Ok(permit) = self.country_checks.clone().try_acquire_owned() else {
            return;
        };
        let now = self.now();
        let actor = who.actor(Some(user_id), client_id);
        let request_id = who.request_id.clone();
        let (db, known) = (self.db.clone(), self.known_countries.clone());
        let (sink, metrics, alerts) = (
            self.recorder.clone(),
            self.metrics.clone(),
            self.alerts.clone(),
        );
        tokio::spawn(async move {
            let _permit = permit;
            match db.note_user_country(&pair.0, &pair.1, now).await {
                Ok(Some(before)) => {
                    let event = SecurityEvent::new_country(now, &pair.1, &before)
                        .actor(actor)
                        .request_id(request_id.as_deref());
                    alerts.offer(&event);
                    emit(&sink, &metrics, event);
                }
                Ok(None) => {}
                Err(e) => {
                    // Not tried again on this instance: a sighting must not cost a write
                    // each time (a user deleted since, or a database that is down).
                    tracing::warn!(error = ?e.to_string(), "recording a user's country failed");
                }
            }
            known.insert(pair, ());
        });
    }

    /// A refused sign-in for the account typed as `account`: `user_id` when it exists, with
    /// `reason` (`wrong_password`, `unknown_account`, `locked`). Feeds the brute-force and
    /// credential-stuffing detectors.
    pub fn sign_in_failed(
        &self,
        who: &Requester,
        account: &str,
        user_id: Option<&str>,
        reason: &str,
    ) {
        if !self.enabled {
            return;
        }
        let now = self.now();
        let known = user_id.map(|_| account);
        self.report(
            who,
            who.actor(user_id, None),
            SecurityEvent::sign_in_failed(now, reason, known),
        );
        let found = lock(&self.sign_in).failed(who.ip, &account.to_lowercase(), now);
        let window = self.settings.sign_in_window_seconds * 1000;
        for d in found {
            let event = match d.kind {
                SecurityEventKind::BruteForceAccount => {
                    // Name the account only when it exists (as for one failure).
                    let named = known.unwrap_or("(unknown account)");
                    SecurityEvent::brute_force_account(now, named, d.repeats, window)
                }
                SecurityEventKind::BruteForceIp => {
                    SecurityEvent::brute_force_ip(now, d.repeats, window)
                }
                _ => SecurityEvent::credential_stuffing(now, d.repeats, window),
            };
            let user = (d.kind == SecurityEventKind::BruteForceAccount)
                .then_some(user_id)
                .flatten();
            self.report(who, who.actor(user, None), event);
        }
    }

    /// An account locked until `until` (Unix seconds) after `failures` failures.
    pub fn account_locked(
        &self,
        who: &Requester,
        account: &str,
        user_id: Option<&str>,
        failures: u64,
        until: i64,
    ) {
        let event = SecurityEvent::account_locked(self.now(), account, failures, until);
        self.report(who, who.actor(user_id, None), event);
    }

    /// A request answered 404 for `path`: scanners ask for many, or for known probe paths.
    pub fn not_found(&self, who: &Requester, path: &str) {
        if !self.enabled {
            return;
        }
        let now = self.now();
        let found = lock(&self.scanner).not_found(who.ip, path, now);
        if let Some(Detection { repeats, .. }) = found {
            self.report(
                who,
                who.actor(None, None),
                SecurityEvent::scanner(now, path, repeats),
            );
        }
    }

    /// An accepted access token `token_id` used from `who`: one token from many addresses
    /// at once is a stolen token in use.
    pub fn token_used(&self, who: &Requester, token_id: &str, user: Option<&str>, client: &str) {
        if !self.enabled {
            return;
        }
        let now = self.now();
        let found = lock(&self.token_spread).used(token_id, who.ip, now);
        if let Some(d) = found {
            let window = self.settings.token_spread_window_seconds * 1000;
            self.report(
                who,
                who.actor(user, Some(client)),
                SecurityEvent::token_from_many_ips(now, token_id, d.repeats, window),
            );
        }
    }

    /// Token `token_id` refused with `insufficient_scope`: reported once it repeats.
    pub fn insufficient_scope(
        &self,
        who: &Requester,
        token_id: &str,
        required: &str,
        user: Option<&str>,
        client: &str,
    ) {
        if !self.enabled {
            return;
        }
        let now = self.now();
        let n = lock(&self.insufficient_scope).record(&token_id.to_owned(), now);
        if is_stage(n, self.settings.insufficient_scope_repeats) {
            self.report(
                who,
                who.actor(user, Some(client)),
                SecurityEvent::insufficient_scope(now, token_id, required, n),
            );
        }
    }

    /// A client registered by `who`, by name and redirect URIs: the same client registering
    /// again and again is churn.
    pub fn registered(
        &self,
        who: &Requester,
        client_id: &str,
        client_name: &str,
        redirect_uris: &[String],
    ) {
        if !self.enabled {
            return;
        }
        let now = self.now();
        let key = format!("{client_name}\n{}", redirect_uris.join("\n"));
        let n = lock(&self.registrations).record(&key, now);
        if is_stage(n, self.settings.registration_churn) {
            self.report(
                who,
                who.actor(None, Some(client_id)),
                SecurityEvent::registration_churn(now, client_name, n),
            );
        }
    }

    /// A registration refused by the per-address limit: reported at the first refusal and
    /// each doubling after it, not once per request.
    pub fn registration_refused(&self, who: &Requester) {
        if !self.enabled {
            return;
        }
        let now = self.now();
        let n = lock(&self.refused_registrations).record(&who.ip, now);
        if is_stage(n, 1) {
            self.report(
                who,
                who.actor(None, None),
                SecurityEvent::registration_flood(now, n),
            );
        }
    }

    /// A request refused by the rate limit of `key`'s class: reported at the first refusal
    /// from an address and each doubling after it, not once per request.
    pub fn rate_limited(&self, who: &Requester, key: &RateKey) {
        if !self.enabled {
            return;
        }
        let now = self.now();
        let n = lock(&self.rate_limited).record(&(key.class, who.ip), now);
        if is_stage(n, 1) {
            self.report(
                who,
                who.actor(key.user_id.as_deref(), key.client_id.as_deref()),
                SecurityEvent::rate_limited(now, key.class.as_str(), n),
            );
        }
    }

    /// Report `event` (built by the caller from one observation) about `who`.
    pub fn observed(
        &self,
        who: &Requester,
        user: Option<&str>,
        client: Option<&str>,
        event: impl FnOnce(Millis) -> SecurityEvent,
    ) {
        if self.enabled {
            let event = event(self.now());
            self.report(who, who.actor(user, client), event);
        }
    }
}

/// Count a request against its class's rate limit (`None`: not limited); a refusal is also
/// reported as an event.
pub async fn rate_limit(state: &AppState, who: &Requester, key: &RateKey) -> Option<RateDecision> {
    let decision = state
        .rate_limits
        .check(key, state.clock.now_millis())
        .await?;
    if decision.is_refused() {
        state.security.rate_limited(who, key);
    }
    Some(decision)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A detector's state is counts; one left half-updated by a panic is still usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Where every event goes: the log, the metric, and the writer.
fn emit(recorder: &Recorder, metrics: &Metrics, event: SecurityEvent) {
    log(&event);
    metrics
        .counter_with(
            "mcp_oauth_security_events_total",
            &[
                ("type", event.kind.as_str()),
                ("level", event.level.as_str()),
            ],
        )
        .increment(1);
    recorder.security(event);
}

/// The log line of an event: never a secret (the evidence holds none).
fn log(e: &SecurityEvent) {
    let evidence = serde_json::Value::Object(e.evidence.clone()).to_string();
    let ip = e.actor.ip.map(|ip| ip.to_string());
    macro_rules! line {
        ($lvl:ident) => {
            tracing::$lvl!(
                security_event = e.kind.as_str(),
                level = e.level.as_str(),
                score = e.score,
                ip = ip.as_deref(),
                user_id = e.actor.user_id.as_deref(),
                client_id = e.actor.client_id.as_deref(),
                request_id = e.request_id.as_deref(),
                evidence = %evidence,
                "security event"
            )
        };
    }
    match e.level {
        Level::Info | Level::Notice => line!(info),
        Level::Warning | Level::Critical => line!(warn),
    }
}
