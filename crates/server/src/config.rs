//! Configuration: defaults, then a TOML file, then `MCP_OAUTH_…` environment variables, then
//! command-line flags. Everything is validated once at start; a bad value is reported with
//! its key and what would be valid. Components receive only the slice they need.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use url::Url;

use mcp_oauth_core::domain::{ResourceUri, ScopeSet};
use mcp_oauth_core::oauth::registration::PrivateUseSchemes;
use mcp_oauth_core::security::login_throttle::{LoginThrottle, QuickCheck, ThrottlePolicy};

/// Settings as read, before validation. Field names are the TOML keys; nested tables map to
/// `MCP_OAUTH_<TABLE>__<KEY>` environment variables.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSettings {
    /// The issuer: the public base URL clients reach us at.
    pub public_url: String,
    pub listen: String,
    pub database_url: DatabaseUrl,
    pub log_format: LogFormat,
    pub log_level: String,
    pub tokens: TokenSettings,
    pub keys: KeysSettings,
    pub sessions: SessionSettings,
    pub scopes: ScopeSettings,
    pub redirect_uris: RedirectSettings,
    pub registration: RegistrationSettings,
    pub cimd: CimdSettings,
    pub cors: CorsSettings,
    /// Peers whose `X-Forwarded-For` / `Forwarded` headers are believed (IPs or CIDRs).
    #[serde(deserialize_with = "list::deserialize")]
    pub trusted_proxies: Vec<String>,
    pub tls: Option<TlsSettings>,
    pub housekeeping: HousekeepingSettings,
    pub login: LoginSettings,
    pub mcp: McpSettings,
    pub metrics: MetricsSettings,
    pub http: HttpSettings,
    pub analytics: AnalyticsSettings,
    pub security: SecuritySettings,
    pub rate_limits: RateLimitSettings,
    /// `redis://[user:password@]host:port[/db]` (or `rediss://`): where instances share their
    /// rate-limit buckets (`rate_limits.shared`). Never serialized back out: it may hold a
    /// password.
    #[serde(skip_serializing)]
    pub redis_url: Option<SecretString>,
}

/// Where instances keep the rate-limit buckets they share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SharedLimits {
    /// Redis when `redis_url` is set; else the database when it is PostgreSQL (several
    /// instances can share it); else each instance alone (SQLite serves one machine).
    Auto,
    /// Each instance counts alone: N instances allow N times the quota.
    Local,
    /// A table in the database: one conditional upsert per limited request.
    Database,
    /// Redis (`redis_url`): one script call per limited request.
    Redis,
}

impl SharedLimits {
    /// What `auto` means for this deployment.
    pub fn resolve(self, backend: mcp_oauth_store::Backend, redis: bool) -> SharedLimits {
        match self {
            SharedLimits::Auto if redis => SharedLimits::Redis,
            SharedLimits::Auto if backend == mcp_oauth_store::Backend::Postgres => {
                SharedLimits::Database
            }
            SharedLimits::Auto => SharedLimits::Local,
            other => other,
        }
    }
}

/// Rate limits per endpoint class (requests per minute, replenished evenly, with a burst of
/// the whole minute), keyed on the client, user and address a request names, counted across
/// instances as `shared` says. `0` leaves a class unlimited. Registrations keep
/// `registration.per_ip_per_minute`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSettings {
    pub enabled: bool,
    /// `POST /login` per address (the per-account throttle is `login.*`).
    pub sign_in_per_minute: u32,
    /// `POST /token` per client and address.
    pub token_per_minute: u32,
    /// `/authorize` per client and address.
    pub authorization_per_minute: u32,
    /// MCP requests per client, user and address.
    pub mcp_per_minute: u32,
    /// Buckets held per class at most; past it, new keys share one.
    pub max_keys: usize,
    /// Where instances share their buckets (`auto`, `local`, `database`, `redis`).
    pub shared: SharedLimits,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            sign_in_per_minute: 30,
            token_per_minute: 120,
            authorization_per_minute: 120,
            mcp_per_minute: 1_200,
            max_keys: 100_000,
            shared: SharedLimits::Auto,
        }
    }
}

/// Security monitoring: the detectors' thresholds and how long events are kept. Every event
/// is also a log line; the defaults are the ones the README documents.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecuritySettings {
    /// Detect and record security events. Off, nothing is detected or stored.
    pub enabled: bool,
    /// Days security events are kept.
    pub retention_days: i64,
    /// The sign-in detectors' window, seconds.
    pub sign_in_window_seconds: i64,
    /// Failed sign-ins for one account in the window that make a brute force (then each
    /// doubling reports again).
    pub brute_force_account_failures: u64,
    /// Failed sign-ins from one address in the window that make a brute force.
    pub brute_force_ip_failures: u64,
    /// Distinct accounts failed from one address in the window that make credential stuffing.
    pub credential_stuffing_accounts: u64,
    /// Requests for paths that do not exist from one address within `scanner_window_seconds`
    /// that make a scanner (a known probe path is one at once).
    pub scanner_not_found: u64,
    pub scanner_window_seconds: i64,
    /// Addresses one access token is used from within `token_spread_window_seconds` that
    /// make a stolen-token event.
    pub token_spread_addresses: u64,
    pub token_spread_window_seconds: i64,
    /// `insufficient_scope` answers to one token within 10 minutes before they are reported.
    pub insufficient_scope_repeats: u64,
    /// Registrations of one client (same name and redirect URIs) within an hour that make
    /// registration churn.
    pub registration_churn: u64,
    /// Block an address for an event about it (brute force from it, credential stuffing,
    /// scanning, rate limits, registration floods) at `block_min_level` or above.
    pub auto_block: bool,
    pub block_min_level: String,
    /// The first automatic block's length; each further one within a day of the last is four
    /// times as long, up to `block_max_seconds`.
    pub block_seconds: i64,
    pub block_max_seconds: i64,
    /// Addresses never blocked (IPs or CIDRs), besides loopback and `trusted_proxies`.
    #[serde(deserialize_with = "list::deserialize")]
    pub allow_cidrs: Vec<String>,
    /// Where alerts go (`[[security.webhooks]]` tables).
    pub webhooks: Vec<WebhookSettings>,
    /// An alert for the same type and actor (address, user, client) is sent once within this.
    pub alert_dedup_seconds: i64,
    /// Deliveries answered with an error (or none) are retried this many times, waiting
    /// `alert_retry_base_ms`, then five times as long each time (1 s, 5 s, 25 s, …).
    pub alert_retries: u32,
    pub alert_retry_base_ms: u64,
}

/// One alert destination.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// Where the POST goes.
    pub url: String,
    /// Signs each delivery (Standard Webhooks: `webhook-signature: v1,<base64 HMAC-SHA256>`).
    /// `whsec_<base64>` is the key in base64, anything else the key's bytes. Never
    /// serialized back out.
    #[serde(default, skip_serializing)]
    pub secret: Option<SecretString>,
    /// `json` (the event) or `slack` (`{"text": …}`).
    #[serde(default = "WebhookSettings::default_format")]
    pub format: String,
    /// The lowest level sent here.
    #[serde(default = "WebhookSettings::default_min_level")]
    pub min_level: String,
}

impl WebhookSettings {
    fn default_format() -> String {
        "json".into()
    }

    fn default_min_level() -> String {
        "warning".into()
    }
}

impl Default for SecuritySettings {
    fn default() -> Self {
        Self {
            enabled: true,
            retention_days: 90,
            sign_in_window_seconds: 900,
            brute_force_account_failures: 10,
            brute_force_ip_failures: 20,
            credential_stuffing_accounts: 5,
            scanner_not_found: 20,
            scanner_window_seconds: 600,
            token_spread_addresses: 3,
            token_spread_window_seconds: 300,
            insufficient_scope_repeats: 3,
            registration_churn: 10,
            auto_block: true,
            block_min_level: "warning".into(),
            block_seconds: 300,
            block_max_seconds: 86_400,
            allow_cidrs: vec![],
            webhooks: vec![],
            alert_dedup_seconds: 300,
            alert_retries: 5,
            alert_retry_base_ms: 1_000,
        }
    }
}

impl SecuritySettings {
    fn validate(&self) -> Result<(), ConfigError> {
        for (key, v) in [
            ("security.retention_days", self.retention_days),
            (
                "security.sign_in_window_seconds",
                self.sign_in_window_seconds,
            ),
            (
                "security.scanner_window_seconds",
                self.scanner_window_seconds,
            ),
            (
                "security.token_spread_window_seconds",
                self.token_spread_window_seconds,
            ),
        ] {
            if v <= 0 {
                return Err(bad(key, "must be at least 1"));
            }
        }
        for (key, v) in [
            (
                "security.brute_force_account_failures",
                self.brute_force_account_failures,
            ),
            (
                "security.brute_force_ip_failures",
                self.brute_force_ip_failures,
            ),
            (
                "security.credential_stuffing_accounts",
                self.credential_stuffing_accounts,
            ),
            ("security.scanner_not_found", self.scanner_not_found),
            (
                "security.insufficient_scope_repeats",
                self.insufficient_scope_repeats,
            ),
            ("security.registration_churn", self.registration_churn),
        ] {
            if v == 0 {
                return Err(bad(key, "must be at least 1"));
            }
        }
        if mcp_oauth_core::security::events::Level::parse(&self.block_min_level).is_none() {
            return Err(bad(
                "security.block_min_level",
                "must be one of info, notice, warning, critical",
            ));
        }
        for (key, v) in [
            ("security.block_seconds", self.block_seconds),
            ("security.block_max_seconds", self.block_max_seconds),
        ] {
            if v <= 0 {
                return Err(bad(key, "must be at least 1"));
            }
        }
        if let Some(bad_cidr) = self.allow_cidrs.iter().find(|c| Cidr::parse(c).is_none()) {
            return Err(bad(
                "security.allow_cidrs",
                format!("{bad_cidr:?} is not an IP address or CIDR"),
            ));
        }
        for (i, w) in self.webhooks.iter().enumerate() {
            let key = |field: &str| format!("security.webhooks[{i}].{field}");
            match Url::parse(&w.url) {
                Ok(u) if matches!(u.scheme(), "https" | "http") => {}
                _ => {
                    return Err(bad(
                        &key("url"),
                        format!("{:?} is not an http(s) URL", w.url),
                    ));
                }
            }
            if mcp_oauth_core::security::alerts::AlertFormat::parse(&w.format).is_none() {
                return Err(bad(&key("format"), "must be json or slack"));
            }
            if mcp_oauth_core::security::events::Level::parse(&w.min_level).is_none() {
                return Err(bad(
                    &key("min_level"),
                    "must be one of info, notice, warning, critical",
                ));
            }
        }
        if self.alert_dedup_seconds < 0 {
            return Err(bad("security.alert_dedup_seconds", "must be 0 or more"));
        }
        if self.token_spread_addresses < 2 {
            return Err(bad(
                "security.token_spread_addresses",
                "must be at least 2 (one address is every token's normal use)",
            ));
        }
        Ok(())
    }
}

/// Usage analytics: the event pipeline, retention and the dashboard at `/analytics`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyticsSettings {
    /// Record requests, MCP messages and OAuth events. Off, nothing is recorded and the
    /// dashboard shows nothing new.
    pub enabled: bool,
    /// Events waiting for the writer at most; past it new ones are dropped and counted
    /// (`dropped_events`), never a request delayed.
    pub queue_capacity: usize,
    /// The writer stores a batch when it has this many events, or after `flush_interval_ms`.
    pub batch_size: usize,
    pub flush_interval_ms: u64,
    /// Days raw events (and per-minute rollups) are kept.
    pub raw_retention_days: i64,
    /// Days per-hour and per-day rollups are kept.
    pub rollup_retention_days: i64,
    /// Who may open the dashboard besides users with the admin role: emails, compared
    /// case-insensitively. `ADMIN_EMAIL` (comma-separated, as in the sample) is read too.
    #[serde(deserialize_with = "list::deserialize")]
    pub admin_emails: Vec<String>,
    /// The health badge: an error rate at or above these shares is degraded / unhealthy.
    pub error_rate_warning: f64,
    pub error_rate_critical: f64,
    /// The health badge: a p95 latency (ms) at or above these is degraded / unhealthy.
    pub p95_warning_ms: f64,
    pub p95_critical_ms: f64,
    /// A MaxMind-format GeoIP database (e.g. GeoLite2-Country.mmdb): when set, requests and
    /// MCP messages are counted per country of their client address. Unset, no country is
    /// recorded and the geography panel says so.
    pub geoip_database: Option<PathBuf>,
}

impl Default for AnalyticsSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            queue_capacity: 65_536,
            batch_size: 2_000,
            flush_interval_ms: 1_000,
            raw_retention_days: 30,
            rollup_retention_days: 400,
            admin_emails: Vec::new(),
            error_rate_warning: 0.05,
            error_rate_critical: 0.20,
            p95_warning_ms: 500.0,
            p95_critical_ms: 1_000.0,
            geoip_database: None,
        }
    }
}

impl AnalyticsSettings {
    fn validate(&mut self) -> Result<(), ConfigError> {
        let positive = |key: &str, v: i64| {
            if v <= 0 {
                Err(bad(key, "must be at least 1"))
            } else {
                Ok(())
            }
        };
        positive("analytics.queue_capacity", self.queue_capacity as i64)?;
        positive("analytics.batch_size", self.batch_size as i64)?;
        positive("analytics.flush_interval_ms", self.flush_interval_ms as i64)?;
        positive("analytics.raw_retention_days", self.raw_retention_days)?;
        if self.rollup_retention_days < self.raw_retention_days {
            return Err(bad(
                "analytics.rollup_retention_days",
                "must be at least analytics.raw_retention_days (rollups outlive raw events)",
            ));
        }
        for (key, v) in [
            ("analytics.error_rate_warning", self.error_rate_warning),
            ("analytics.error_rate_critical", self.error_rate_critical),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(bad(key, "must be a share between 0 and 1, e.g. 0.05"));
            }
        }
        if let Some(path) = &self.geoip_database
            && !path.is_file()
        {
            return Err(bad(
                "analytics.geoip_database",
                format!(
                    "file {} does not exist; download GeoLite2-Country.mmdb from MaxMind or \
                     remove the setting",
                    path.display()
                ),
            ));
        }
        self.admin_emails = self
            .admin_emails
            .iter()
            .map(|e| e.trim().to_lowercase())
            .filter(|e| !e.is_empty())
            .collect();
        Ok(())
    }

    /// Whether `email` is on the admin list (case-insensitive).
    pub fn is_admin_email(&self, email: &str) -> bool {
        let email = email.trim().to_lowercase();
        self.admin_emails.contains(&email)
    }
}

/// The Prometheus metrics at `/metrics`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    /// Client addresses (IPs or CIDRs, after `trusted_proxies`) that may read `/metrics`;
    /// everyone else gets 404. `[]` (and no `bearer_token`) turns the endpoint off.
    #[serde(deserialize_with = "list::deserialize")]
    pub allowed_cidrs: Vec<String>,
    /// A secret a scraper presents as `Authorization: Bearer <token>` to read `/metrics` from
    /// any address (a Prometheus outside `allowed_cidrs`). Never serialized back out.
    #[serde(skip_serializing)]
    pub bearer_token: Option<SecretString>,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self {
            allowed_cidrs: vec!["127.0.0.0/8".into(), "::1/128".into()],
            bearer_token: None,
        }
    }
}

/// The shortest `metrics.bearer_token` accepted: guessing it must be hopeless.
const MIN_METRICS_TOKEN_LEN: usize = 32;

impl MetricsSettings {
    fn validate_token(&self) -> Result<(), ConfigError> {
        let Some(token) = &self.bearer_token else {
            return Ok(());
        };
        let token = token.expose_secret();
        // It must travel as an RFC 6750 b64token, which is what the endpoint reads back.
        let header = format!("Bearer {token}");
        let sendable = matches!(
            mcp_oauth_core::resource::bearer::extract(&[&header], None),
            Ok(mcp_oauth_core::resource::bearer::Credentials::Bearer(t)) if t == token
        );
        if token.len() < MIN_METRICS_TOKEN_LEN || !sendable {
            return Err(bad(
                "metrics.bearer_token",
                format!(
                    "must be at least {MIN_METRICS_TOKEN_LEN} characters of letters, digits and                      -._~+/ (generate one with `openssl rand -hex 32`)"
                ),
            ));
        }
        Ok(())
    }
}

/// The HTTP listener: timeouts and connection limits, so that slow or idle clients cannot
/// hold connections (and file descriptors) forever. See
/// `mcp_oauth_core::security::connections` for how the two connection timeouts interact.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Seconds a new connection has to deliver a complete request head (after its TLS
    /// handshake, which this also bounds), and an HTTP/1.1 keep-alive connection to complete
    /// the head of its next request from the request's first byte.
    pub header_read_timeout_seconds: u64,
    /// Seconds a connection may stay open with no request in progress (HTTP/1.1 keep-alive,
    /// HTTP/2 without open streams).
    pub keep_alive_timeout_seconds: u64,
    /// Seconds a request body has to arrive in full, counted from its request head; a slower
    /// one is answered 408 and its connection closed.
    pub request_body_timeout_seconds: u64,
    /// Open connections at most; at the limit the server stops accepting (new connections
    /// wait in the kernel's backlog) until one closes. Keep it under the open-file limit.
    pub max_connections: usize,
    /// Open connections at most from one client IP (IPv6: one /64); more are closed at once.
    /// Peers in `trusted_proxies` are exempt: a reverse proxy carries everyone's.
    pub max_connections_per_ip: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            header_read_timeout_seconds: 10,
            keep_alive_timeout_seconds: 60,
            request_body_timeout_seconds: 30,
            max_connections: 4096,
            max_connections_per_ip: 256,
        }
    }
}

/// A database URL. `Debug` shows it with the password replaced (in the user information or
/// a `password` parameter); the URL itself is reached through `Deref<Target = str>`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// The URL without its password, for messages and logs.
    pub fn redacted(&self) -> String {
        crate::startup::redact_url(&self.0)
    }

    /// The backend it names (validation has refused any other URL).
    pub fn backend(&self) -> mcp_oauth_store::Backend {
        mcp_oauth_store::Backend::from_url(&self.0).unwrap_or(mcp_oauth_store::Backend::Sqlite)
    }
}

impl std::ops::Deref for DatabaseUrl {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.redacted(), f)
    }
}

impl From<String> for DatabaseUrl {
    fn from(url: String) -> Self {
        Self(url)
    }
}

impl From<&str> for DatabaseUrl {
    fn from(url: &str) -> Self {
        Self(url.to_owned())
    }
}

/// Encryption of the signing keys at rest (see `keys::encryption`). The keys are secrets:
/// `Debug` redacts them and they are never serialized back out.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysSettings {
    /// Base64 of 32 random bytes (`openssl rand -base64 32`).
    #[serde(skip_serializing)]
    pub encryption_key: Option<SecretString>,
    /// A file holding such a key (instead of `encryption_key`).
    pub encryption_key_file: Option<PathBuf>,
    /// Keys the stored signing keys may still be sealed with, after the encryption key was
    /// changed and until `mcp-oauth keys rewrap` has run.
    #[serde(skip_serializing)]
    #[serde(deserialize_with = "list::deserialize_secrets")]
    pub previous_encryption_keys: Vec<SecretString>,
}

impl HttpSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        for (key, value, min, max) in [
            (
                "http.header_read_timeout_seconds",
                self.header_read_timeout_seconds,
                1,
                300,
            ),
            (
                "http.keep_alive_timeout_seconds",
                self.keep_alive_timeout_seconds,
                1,
                3_600,
            ),
            (
                "http.request_body_timeout_seconds",
                self.request_body_timeout_seconds,
                1,
                3_600,
            ),
        ] {
            if !(min..=max).contains(&value) {
                return Err(bad(
                    key,
                    format!("{value} is outside {min}..={max} seconds"),
                ));
            }
        }
        if !(1..=1_000_000).contains(&self.max_connections) {
            return Err(bad(
                "http.max_connections",
                format!(
                    "{} is outside 1..=1000000 (and must stay under the open-file limit)",
                    self.max_connections
                ),
            ));
        }
        if !(1..=1_000_000).contains(&self.max_connections_per_ip) {
            return Err(bad(
                "http.max_connections_per_ip",
                format!(
                    "{} is outside 1..=1000000 (at or above http.max_connections, there is no per-IP limit)",
                    self.max_connections_per_ip
                ),
            ));
        }
        Ok(())
    }

    pub fn header_read_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.header_read_timeout_seconds)
    }

    pub fn keep_alive_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.keep_alive_timeout_seconds)
    }

    pub fn request_body_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.request_body_timeout_seconds)
    }
}

/// The protected MCP server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct McpSettings {
    /// Sessions (`Mcp-Session-Id`) for clients older than 2026-07-28; off serves every request
    /// statelessly, which suits several instances behind a load balancer.
    pub stateful: bool,
    /// Answer plain JSON instead of an SSE stream where possible (stateless mode only).
    pub json_response: bool,
    /// Scopes every MCP request needs (advertised as the resources' `scopes_supported`).
    #[serde(deserialize_with = "list::deserialize")]
    pub base_scopes: Vec<String>,
    /// Extra scopes per tool: `{ tool_name = ["scope", …] }`. A call without them gets 403
    /// `insufficient_scope`, which makes clients ask the user for more (step-up).
    pub tool_scopes: BTreeMap<String, Vec<String>>,
    /// Serve the MCP endpoints without authentication. For conformance testing only: refused
    /// unless the server listens on a loopback address, and warned about at start.
    pub open: bool,
    /// Accept tokens issued to a client for itself (client credentials, no user) at the MCP
    /// endpoints. Off by default: every MCP call then acts for a user who signed in.
    pub accept_client_credentials: bool,
    /// Sessions one user may hold at once: Streamable HTTP sessions and legacy SSE streams
    /// together. Past it, the user's least recently used idle session is closed to make room;
    /// if every one has an open stream, the new one is refused (429).
    pub max_sessions_per_user: usize,
    /// Sessions all users together may hold (each costs memory until it is closed); past it,
    /// new ones are refused (503) and nobody else's is closed.
    pub max_sessions: usize,
    /// A session without an open stream that sees no request for this long is closed.
    pub session_idle_timeout_seconds: i64,
}

impl Default for McpSettings {
    fn default() -> Self {
        Self {
            stateful: true,
            json_response: false,
            base_scopes: vec!["mcp".into()],
            tool_scopes: BTreeMap::new(),
            open: false,
            accept_client_credentials: false,
            max_sessions_per_user: 16,
            max_sessions: 10_000,
            session_idle_timeout_seconds: 300,
        }
    }
}

/// Sign-in throttling (see `mcp_oauth_core::security::login_throttle` for the model, which
/// follows Keycloak's). Every count is per `window_seconds` (restarted when a lock ends); the
/// first lock lasts `lockout_seconds`, each further multiple of the limit as many times
/// longer, at most `max_lockout_seconds`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginSettings {
    /// Attempts on one account (from browsers without its device cookie) before each further
    /// attempt is delayed.
    pub delay_after: i64,
    /// First delay, doubled per further attempt up to `max_delay_ms`.
    pub base_delay_ms: u64,
    pub max_delay_ms: u64,
    /// Attempts on one account from browsers without its device cookie, from anywhere, that
    /// lock the account for such browsers. A browser that signed in before is not affected,
    /// so strangers cannot lock the owner out.
    pub account_lockout_after: i64,
    /// Attempts on one account from one client IP that lock that IP out of the account.
    pub account_ip_lockout_after: i64,
    /// Attempts from one client IP, whatever the account, that lock the IP out.
    pub ip_lockout_after: i64,
    /// Wrong passwords from one trusted browser (device cookie) that lock that cookie; the
    /// browser is then treated like any other.
    pub device_lockout_after: i64,
    /// How long a browser stays trusted after signing in, days.
    pub device_ttl_days: i64,
    /// The first lock's length (Keycloak's wait increment).
    pub lockout_seconds: i64,
    /// The longest lock (Keycloak's max wait).
    pub max_lockout_seconds: i64,
    pub window_seconds: i64,
    /// Two wrong passwords for one account from one address (or trusted browser) this close
    /// together lock it out for `quick_lockout_seconds` (Keycloak's quick-login check). `0`
    /// turns the check off.
    pub quick_login_check_ms: i64,
    pub quick_lockout_seconds: i64,
}

impl Default for LoginSettings {
    fn default() -> Self {
        Self {
            delay_after: 3,
            base_delay_ms: 500,
            max_delay_ms: 8_000,
            account_lockout_after: 20,
            account_ip_lockout_after: 10,
            ip_lockout_after: 100,
            device_lockout_after: 10,
            device_ttl_days: 90,
            lockout_seconds: 900,
            max_lockout_seconds: 3_600,
            window_seconds: 900,
            quick_login_check_ms: 1_000,
            quick_lockout_seconds: 60,
        }
    }
}

impl LoginSettings {
    pub fn quick_check(&self) -> QuickCheck {
        QuickCheck {
            window_ms: self.quick_login_check_ms,
            lockout_seconds: self.quick_lockout_seconds,
        }
    }

    /// One policy per kind of key.
    pub fn throttle(&self) -> LoginThrottle {
        let policy = |delay_after: i64, lockout_after: i64| ThrottlePolicy {
            window_seconds: self.window_seconds,
            delay_after,
            base_delay_ms: self.base_delay_ms,
            max_delay_ms: self.max_delay_ms,
            lockout_after,
            lockout_seconds: self.lockout_seconds,
            max_lockout_seconds: self.max_lockout_seconds,
        };
        LoginThrottle {
            // Many people can share an address, so the IP starts delaying late.
            ip: policy(self.ip_lockout_after / 5, self.ip_lockout_after),
            // The account-wide count already delays; this one only locks.
            account_ip: policy(i64::MAX, self.account_ip_lockout_after),
            account: policy(self.delay_after, self.account_lockout_after),
            device: policy(self.delay_after, self.device_lockout_after),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SigningAlg {
    EdDSA,
    ES256,
}

impl SigningAlg {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EdDSA => "EdDSA",
            Self::ES256 => "ES256",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenSettings {
    /// Access token lifetime, seconds.
    pub access_ttl: i64,
    /// Refresh token lifetime, seconds (each rotation starts a new one).
    pub refresh_ttl: i64,
    /// Authorization code lifetime, seconds.
    pub code_ttl: i64,
    /// How long a rotated refresh token may be presented again by a client retrying a lost
    /// response, seconds.
    pub refresh_grace: i64,
    pub signing_alg: SigningAlg,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionSettings {
    /// Browser login session lifetime, seconds.
    pub ttl: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScopeSettings {
    /// Every scope a client may ask for.
    #[serde(deserialize_with = "list::deserialize")]
    pub supported: Vec<String>,
    /// Granted when a client asks for none.
    #[serde(deserialize_with = "list::deserialize")]
    pub default: Vec<String>,
    /// Scope hierarchy: `{ broader = ["narrower", …] }`; a token with the broader scope may do
    /// what the narrower ones allow.
    pub implies: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedirectSettings {
    /// Private-use schemes (RFC 8252 §7.1) public clients may register; `["*"]` for any
    /// (except script, data and file schemes, which are always refused), `[]` for none.
    #[serde(deserialize_with = "list::deserialize")]
    pub private_use_schemes: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationSettings {
    /// Dynamic client registration (RFC 7591).
    pub enabled: bool,
    /// Registrations per minute per client IP, sustained. Hosted clients (Claude, ChatGPT)
    /// share egress addresses, so keep it generous; identical public registrations are
    /// de-duplicated anyway.
    pub per_ip_per_minute: u32,
    pub per_ip_burst: u32,
    /// Registrations unused this many days, with no grants, are deleted.
    pub stale_after_days: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CimdSettings {
    /// Accept https URLs as client ids (Client ID Metadata Documents).
    pub enabled: bool,
    /// Host names whose documents are trusted; empty means any https host. A leading `*.`
    /// matches subdomains.
    #[serde(deserialize_with = "list::deserialize")]
    pub allowed_hosts: Vec<String>,
    /// Development only: fetch documents from loopback addresses (and over plain http from
    /// them). Never enable in production.
    pub allow_loopback: bool,
    pub fetch_timeout_ms: u64,
    pub max_document_bytes: usize,
    pub cache_min_seconds: i64,
    pub cache_max_seconds: i64,
    /// How long a failed fetch is remembered per document URL, seconds, so that repeated
    /// requests naming it do not fetch it again.
    pub failure_cache_seconds: i64,
    /// Document fetches per minute per client IP (those answered from a cache do not count).
    /// Hosted clients share egress addresses, so keep it generous.
    pub fetches_per_ip_per_minute: u32,
    /// An explicit forward proxy for document fetches (`http://…`); none by default, and the
    /// proxy environment variables are never used. Through a proxy, the proxy resolves names
    /// and connects, so this server's address checks cannot apply: the proxy must enforce the
    /// egress policy itself.
    pub proxy_url: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsSettings {
    /// Origins allowed to call the OAuth endpoints from a browser; `["*"]` for any.
    #[serde(deserialize_with = "list::deserialize")]
    pub allowed_origins: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HousekeepingSettings {
    /// Seconds between cleanup runs.
    pub interval_seconds: u64,
}

impl Default for RawSettings {
    fn default() -> Self {
        Self {
            public_url: "http://127.0.0.1:8080".into(),
            listen: "127.0.0.1:8080".into(),
            database_url: "sqlite://data/mcp-oauth.db?mode=rwc".into(),
            log_format: LogFormat::Text,
            log_level: "info".into(),
            tokens: TokenSettings::default(),
            keys: KeysSettings::default(),
            sessions: SessionSettings::default(),
            scopes: ScopeSettings::default(),
            redirect_uris: RedirectSettings::default(),
            registration: RegistrationSettings::default(),
            cimd: CimdSettings::default(),
            cors: CorsSettings::default(),
            trusted_proxies: vec![],
            tls: None,
            housekeeping: HousekeepingSettings::default(),
            login: LoginSettings::default(),
            mcp: McpSettings::default(),
            metrics: MetricsSettings::default(),
            http: HttpSettings::default(),
            analytics: AnalyticsSettings::default(),
            security: SecuritySettings::default(),
            rate_limits: RateLimitSettings::default(),
            redis_url: None,
        }
    }
}

impl Default for TokenSettings {
    fn default() -> Self {
        Self {
            access_ttl: 900,
            refresh_ttl: 30 * 86_400,
            code_ttl: 300,
            refresh_grace: 10,
            signing_alg: SigningAlg::EdDSA,
        }
    }
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self { ttl: 7 * 86_400 }
    }
}

impl Default for ScopeSettings {
    fn default() -> Self {
        Self {
            supported: vec!["mcp".into(), "offline_access".into()],
            default: vec!["mcp".into()],
            implies: BTreeMap::new(),
        }
    }
}

impl Default for RedirectSettings {
    fn default() -> Self {
        Self {
            private_use_schemes: vec!["*".into()],
        }
    }
}

impl Default for RegistrationSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            per_ip_per_minute: 30,
            per_ip_burst: 60,
            stale_after_days: 30,
        }
    }
}

impl Default for CimdSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            allowed_hosts: vec![],
            allow_loopback: false,
            fetch_timeout_ms: 5_000,
            max_document_bytes: 16 * 1024,
            cache_min_seconds: 300,
            cache_max_seconds: 86_400,
            failure_cache_seconds: 60,
            fetches_per_ip_per_minute: 60,
            proxy_url: None,
        }
    }
}

impl Default for CorsSettings {
    fn default() -> Self {
        Self {
            allowed_origins: vec!["*".into()],
        }
    }
}

impl Default for HousekeepingSettings {
    fn default() -> Self {
        Self {
            interval_seconds: 300,
        }
    }
}

/// List settings, given either as a TOML array or, as environment variables naturally are,
/// as one string of items separated by commas and/or whitespace:
/// `MCP_OAUTH_TRUSTED_PROXIES=10.0.0.0/8,192.168.0.0/16`, `MCP_OAUTH_SCOPES__SUPPORTED="mcp
/// offline_access"`. No item of any list setting (scopes, schemes, hosts, origins, CIDRs)
/// can contain a comma or whitespace, so the split is unambiguous.
mod list {
    use serde::de::{Deserializer, SeqAccess, Visitor};

    pub fn split(s: &str) -> Vec<String> {
        s.split(|c: char| c == ',' || c.is_whitespace())
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect()
    }

    struct ListVisitor;

    impl<'de> Visitor<'de> for ListVisitor {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list, or a string of items separated by commas or spaces")
        }

        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Self::Value, E> {
            Ok(split(s))
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element::<String>()? {
                items.push(item);
            }
            Ok(items)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        d.deserialize_any(ListVisitor)
    }

    pub fn deserialize_secrets<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<secrecy::SecretString>, D::Error> {
        Ok(deserialize(d)?.into_iter().map(Into::into).collect())
    }
}

/// A configuration problem, naming the key and the fix.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: `{key}`: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

fn bad(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.to_owned(),
        message: message.into(),
    }
}

/// Command-line overrides (highest precedence).
#[derive(Debug, Default, Clone, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
}

/// Layer the sources. `config_file` comes from `--config` or `MCP_OAUTH_CONFIG`.
pub fn load(config_file: Option<&Path>, overrides: &Overrides) -> Result<RawSettings, ConfigError> {
    let mut figment = Figment::from(Serialized::defaults(RawSettings::default()));
    if let Some(path) = config_file {
        if !path.exists() {
            return Err(bad(
                "config",
                format!("file {} does not exist", path.display()),
            ));
        }
        figment = figment.merge(Toml::file(path));
    }
    figment = figment
        // `DATABASE_URL` is the common convention; ours takes precedence over it.
        .merge(
            Env::raw()
                .only(&["DATABASE_URL"])
                .map(|_| "database_url".into()),
        )
        // The sample's `ADMIN_EMAIL` (comma-separated); ours takes precedence over it.
        .merge(
            Env::raw()
                .only(&["ADMIN_EMAIL"])
                .map(|_| "analytics.admin_emails".into()),
        )
        .merge(
            Env::prefixed("MCP_OAUTH_")
                .ignore(&["CONFIG", "TEST_DATABASE_URL"])
                .split("__"),
        )
        .merge(Serialized::defaults(overrides));
    figment.extract().map_err(|e| {
        let key = e.path.join(".");
        let key = if key.is_empty() {
            "settings".to_owned()
        } else {
            key
        };
        let mut message = e.kind.to_string();
        if let Some(source) = &e.metadata {
            message.push_str(&format!(" (from {})", source.name));
        }
        ConfigError { key, message }
    })
}

/// Validated settings: what the rest of the program uses.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The issuer, without a trailing slash, byte for byte what every document says.
    pub issuer: String,
    pub public_url: Url,
    pub listen: SocketAddr,
    pub database_url: DatabaseUrl,
    pub log_format: LogFormat,
    pub log_level: String,
    pub tokens: TokenSettings,
    pub keys: KeysSettings,
    pub session_ttl: i64,
    pub supported_scopes: ScopeSet,
    pub default_scopes: ScopeSet,
    pub private_use_schemes: PrivateUseSchemes,
    pub registration: RegistrationSettings,
    pub cimd: CimdSettings,
    pub cors_origins: Vec<String>,
    pub trusted_proxies: Vec<Cidr>,
    pub tls: Option<TlsSettings>,
    pub housekeeping_interval: std::time::Duration,
    pub login: LoginSettings,
    pub mcp: McpSettings,
    pub mcp_base_scopes: ScopeSet,
    pub mcp_tool_scopes: BTreeMap<String, ScopeSet>,
    /// Who may read `/metrics`: these addresses, and whoever presents the bearer token.
    pub metrics_allowed: Vec<Cidr>,
    pub metrics_bearer_token: Option<SecretString>,
    pub scope_implications: BTreeMap<String, Vec<String>>,
    /// The MCP resources we issue tokens for; the first is the default.
    pub resources: Vec<ResourceUri>,
    /// The resources that accept client-credentials tokens (none unless
    /// `mcp.accept_client_credentials`).
    pub client_token_resources: Vec<ResourceUri>,
    pub http: HttpSettings,
    pub analytics: AnalyticsSettings,
    pub security: SecuritySettings,
    pub rate_limits: RateLimitSettings,
    pub redis_url: Option<SecretString>,
}

impl Settings {
    /// The path the app is mounted under (the public URL's path), `""` at the root.
    pub fn base_path(&self) -> &str {
        self.public_url.path().trim_end_matches('/')
    }

    /// Cookies are `Secure`; browsers accept that on https and on loopback http.
    pub fn is_https(&self) -> bool {
        self.public_url.scheme() == "https"
    }
}

fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

fn scope_list(key: &str, list: &[String]) -> Result<ScopeSet, ConfigError> {
    ScopeSet::from_strs(list.iter().map(String::as_str)).map_err(|_| {
        bad(
            key,
            "scopes must be non-empty tokens without spaces, quotes or backslashes",
        )
    })
}

fn validate_keys(
    keys: &KeysSettings,
    backend: mcp_oauth_store::Backend,
) -> Result<(), ConfigError> {
    use crate::keys::encryption::decode_key;
    let generate = "generate one with `openssl rand -base64 32`";
    if keys.encryption_key.is_some() && keys.encryption_key_file.is_some() {
        return Err(bad(
            "keys.encryption_key",
            "set keys.encryption_key or keys.encryption_key_file, not both",
        ));
    }
    if let Some(key) = &keys.encryption_key
        && decode_key(key.expose_secret()).is_none()
    {
        return Err(bad(
            "keys.encryption_key",
            format!("must be base64 of 32 random bytes; {generate}"),
        ));
    }
    if let Some(path) = &keys.encryption_key_file
        && !path.exists()
    {
        return Err(bad(
            "keys.encryption_key_file",
            format!(
                "file {} does not exist; {generate} into it (mode 0600)",
                path.display()
            ),
        ));
    }
    if keys
        .previous_encryption_keys
        .iter()
        .any(|k| decode_key(k.expose_secret()).is_none())
    {
        return Err(bad(
            "keys.previous_encryption_keys",
            "each must be base64 of 32 bytes, as keys.encryption_key",
        ));
    }
    if backend == mcp_oauth_store::Backend::Postgres
        && keys.encryption_key.is_none()
        && keys.encryption_key_file.is_none()
    {
        return Err(bad(
            "keys.encryption_key",
            format!(
                "PostgreSQL needs a key to encrypt the signing keys at rest: {generate} and set \
                 it as keys.encryption_key (MCP_OAUTH_KEYS__ENCRYPTION_KEY) or in a file named by \
                 keys.encryption_key_file"
            ),
        ));
    }
    Ok(())
}

impl RawSettings {
    pub fn validate(self) -> Result<Settings, ConfigError> {
        let raw_url = self.public_url.trim_end_matches('/');
        let public_url = Url::parse(raw_url).map_err(|e| {
            bad(
                "public_url",
                format!("{raw_url:?} is not a URL ({e}); set it to e.g. https://mcp.example.com"),
            )
        })?;
        match public_url.scheme() {
            "https" => {}
            "http" if is_loopback_host(&public_url) => {}
            "http" => {
                return Err(bad(
                    "public_url",
                    format!(
                        "{raw_url} uses plain http on a non-loopback host; OAuth 2.1 §1.5 requires https. \
                         Use an https URL (TLS at a proxy or via [tls]), or a loopback host for local use"
                    ),
                ));
            }
            other => {
                return Err(bad(
                    "public_url",
                    format!("scheme {other:?} is not http or https"),
                ));
            }
        }
        if public_url.query().is_some()
            || public_url.fragment().is_some()
            || !public_url.username().is_empty()
        {
            return Err(bad(
                "public_url",
                "must not contain a query, fragment or user info",
            ));
        }
        // The issuer string is what every document, token and redirect carries, identical
        // byte for byte (RFC 8414 §3.3); `Url` normalises case and default ports.
        let issuer = public_url.as_str().trim_end_matches('/').to_owned();

        let listen: SocketAddr = self.listen.parse().map_err(|_| {
            bad(
                "listen",
                format!(
                    "{:?} is not an address like 127.0.0.1:8080 or [::]:8080",
                    self.listen
                ),
            )
        })?;

        let Some(backend) = mcp_oauth_store::Backend::from_url(&self.database_url) else {
            return Err(bad(
                "database_url",
                "must start with sqlite: (e.g. sqlite://data/mcp-oauth.db?mode=rwc) or postgres: (e.g. postgres://user@host/db)",
            ));
        };
        validate_keys(&self.keys, backend)?;

        let t = &self.tokens;
        for (key, value, min, max) in [
            ("tokens.access_ttl", t.access_ttl, 1, 86_400),
            ("tokens.refresh_ttl", t.refresh_ttl, 60, 365 * 86_400),
            ("tokens.code_ttl", t.code_ttl, 1, 600),
            ("tokens.refresh_grace", t.refresh_grace, 0, 300),
            ("sessions.ttl", self.sessions.ttl, 60, 90 * 86_400),
        ] {
            if !(min..=max).contains(&value) {
                return Err(bad(
                    key,
                    format!("{value} is outside {min}..={max} seconds"),
                ));
            }
        }

        let supported_scopes = scope_list("scopes.supported", &self.scopes.supported)?;
        let default_scopes = scope_list("scopes.default", &self.scopes.default)?;
        if !default_scopes.is_subset(&supported_scopes) {
            return Err(bad(
                "scopes.default",
                "every default scope must also be in scopes.supported",
            ));
        }

        let schemes = &self.redirect_uris.private_use_schemes;
        let private_use_schemes = if schemes.iter().any(|s| s == "*") {
            PrivateUseSchemes::Any
        } else if schemes.is_empty() {
            PrivateUseSchemes::None
        } else {
            for s in schemes {
                let ok = s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
                if !ok || ["http", "https", "javascript", "data", "file"].contains(&s.as_str()) {
                    return Err(bad(
                        "redirect_uris.private_use_schemes",
                        format!("{s:?} is not a private-use scheme"),
                    ));
                }
            }
            PrivateUseSchemes::Only(schemes.iter().map(|s| s.to_ascii_lowercase()).collect())
        };

        let cidrs = |key: &str, list: &[String]| {
            list.iter()
                .map(|p| {
                    Cidr::parse(p)
                        .ok_or_else(|| bad(key, format!("{p:?} is not an IP address or CIDR")))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let trusted_proxies = cidrs("trusted_proxies", &self.trusted_proxies)?;
        let metrics_allowed = cidrs("metrics.allowed_cidrs", &self.metrics.allowed_cidrs)?;
        self.metrics.validate_token()?;
        let mut analytics = self.analytics;
        analytics.validate()?;
        self.security.validate()?;
        if self.rate_limits.max_keys == 0 {
            return Err(bad("rate_limits.max_keys", "must be at least 1"));
        }
        if let Some(url) = &self.redis_url {
            let url = url.expose_secret();
            if !(url.starts_with("redis://") || url.starts_with("rediss://"))
                || redis::Client::open(url).is_err()
            {
                return Err(bad(
                    "redis_url",
                    "must be a URL like redis://127.0.0.1:6379 or rediss://user:password@host:6380/0",
                ));
            }
        } else if self.rate_limits.shared == SharedLimits::Redis {
            return Err(bad(
                "rate_limits.shared",
                "\"redis\" needs redis_url (for example redis://127.0.0.1:6379)",
            ));
        }

        if let Some(tls) = &self.tls {
            for (key, path) in [
                ("tls.cert_file", &tls.cert_file),
                ("tls.key_file", &tls.key_file),
            ] {
                if !path.exists() {
                    return Err(bad(key, format!("file {} does not exist", path.display())));
                }
            }
        }
        if self.cimd.cache_min_seconds > self.cimd.cache_max_seconds
            || self.cimd.cache_min_seconds < 0
        {
            return Err(bad(
                "cimd.cache_min_seconds",
                "must be between 0 and cimd.cache_max_seconds",
            ));
        }
        if self.cimd.failure_cache_seconds < 0 || self.cimd.failure_cache_seconds > 3_600 {
            return Err(bad(
                "cimd.failure_cache_seconds",
                "must be between 0 and 3600 seconds",
            ));
        }
        if let Some(proxy) = &self.cimd.proxy_url
            && !Url::parse(proxy).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
        {
            return Err(bad(
                "cimd.proxy_url",
                format!("{proxy:?} is not an http:// or https:// proxy URL"),
            ));
        }
        let l = &self.login;
        if l.delay_after < 1
            || l.account_lockout_after <= l.delay_after
            || l.account_ip_lockout_after < 1
            || l.device_lockout_after <= l.delay_after
            || l.ip_lockout_after < 5
        {
            return Err(bad(
                "login",
                "need delay_after >= 1, account_lockout_after and device_lockout_after > delay_after, \
                 account_ip_lockout_after >= 1 and ip_lockout_after >= 5",
            ));
        }
        if l.window_seconds < 1 || l.lockout_seconds < 1 || l.max_delay_ms > 60_000 {
            return Err(bad(
                "login",
                "window_seconds and lockout_seconds must be positive, max_delay_ms at most 60000",
            ));
        }
        if !(1..=400).contains(&l.device_ttl_days) {
            return Err(bad("login.device_ttl_days", "must be between 1 and 400"));
        }
        if l.max_lockout_seconds < l.lockout_seconds {
            return Err(bad(
                "login.max_lockout_seconds",
                "must be at least login.lockout_seconds",
            ));
        }
        if !(0..=60_000).contains(&l.quick_login_check_ms) || l.quick_lockout_seconds < 1 {
            return Err(bad(
                "login.quick_login_check_ms",
                "must be between 0 (off) and 60000, with quick_lockout_seconds at least 1",
            ));
        }
        self.http.validate()?;
        if self.housekeeping.interval_seconds == 0 {
            return Err(bad("housekeeping.interval_seconds", "must be at least 1"));
        }

        let resource = |path: &str| {
            ResourceUri::parse(&format!("{issuer}{path}")).map_err(|e| {
                bad(
                    "public_url",
                    format!("cannot derive the MCP resource URI: {e}"),
                )
            })
        };
        let resources = vec![resource("/mcp")?, resource("/sse")?];

        let mcp_base_scopes = scope_list("mcp.base_scopes", &self.mcp.base_scopes)?;
        if !mcp_base_scopes.is_subset(&supported_scopes)
            || mcp_base_scopes.contains("offline_access")
        {
            return Err(bad(
                "mcp.base_scopes",
                "every base scope must be in scopes.supported, and offline_access is not a resource scope",
            ));
        }
        let mut mcp_tool_scopes = BTreeMap::new();
        for (tool, scopes) in &self.mcp.tool_scopes {
            let key = format!("mcp.tool_scopes.{tool}");
            let set = scope_list(&key, scopes)?;
            if !set.is_subset(&supported_scopes) {
                return Err(bad(
                    &key,
                    "every tool scope must also be in scopes.supported",
                ));
            }
            mcp_tool_scopes.insert(tool.clone(), set);
        }
        for (broader, narrower) in &self.scopes.implies {
            let key = format!("scopes.implies.{broader}");
            scope_list(&key, std::slice::from_ref(broader))?;
            scope_list(&key, narrower)?;
        }
        let m = &self.mcp;
        if !(1..=1_000_000).contains(&m.max_sessions) {
            return Err(bad(
                "mcp.max_sessions",
                format!("{} is outside 1..=1000000", m.max_sessions),
            ));
        }
        if !(1..=m.max_sessions.min(1_000)).contains(&m.max_sessions_per_user) {
            return Err(bad(
                "mcp.max_sessions_per_user",
                format!(
                    "{} is outside 1..=1000, or above mcp.max_sessions ({})",
                    m.max_sessions_per_user, m.max_sessions
                ),
            ));
        }
        if !(1..=86_400).contains(&m.session_idle_timeout_seconds) {
            return Err(bad(
                "mcp.session_idle_timeout_seconds",
                format!(
                    "{} is outside 1..=86400 seconds",
                    m.session_idle_timeout_seconds
                ),
            ));
        }
        if self.mcp.open && !listen.ip().is_loopback() {
            return Err(bad(
                "mcp.open",
                "an unauthenticated MCP endpoint is allowed only when listening on a loopback address",
            ));
        }

        let client_token_resources = if self.mcp.accept_client_credentials {
            resources.clone()
        } else {
            vec![]
        };

        Ok(Settings {
            issuer,
            public_url,
            listen,
            database_url: self.database_url,
            log_format: self.log_format,
            log_level: self.log_level,
            tokens: self.tokens,
            keys: self.keys,
            session_ttl: self.sessions.ttl,
            supported_scopes,
            default_scopes,
            private_use_schemes,
            registration: self.registration,
            cimd: self.cimd,
            cors_origins: self.cors.allowed_origins,
            trusted_proxies,
            tls: self.tls,
            housekeeping_interval: std::time::Duration::from_secs(
                self.housekeeping.interval_seconds,
            ),
            login: self.login,
            mcp: self.mcp,
            mcp_base_scopes,
            mcp_tool_scopes,
            metrics_allowed,
            metrics_bearer_token: self.metrics.bearer_token,
            scope_implications: self.scopes.implies,
            client_token_resources,
            resources,
            http: self.http,
            analytics,
            security: self.security,
            rate_limits: self.rate_limits,
            redis_url: self.redis_url,
        })
    }
}

/// An IP network, for `trusted_proxies`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Self> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, p.parse::<u8>().ok()?),
            None => {
                let a = s.parse::<IpAddr>().ok()?;
                (a, if a.is_ipv4() { 32 } else { 128 })
            }
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Self { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawSettings {
        RawSettings::default()
    }

    #[test]
    fn defaults_validate_and_derive_the_mcp_resource() {
        let s = raw().validate().unwrap();
        assert_eq!(s.issuer, "http://127.0.0.1:8080");
        assert_eq!(s.resources[0].as_str(), "http://127.0.0.1:8080/mcp");
    }

    #[test]
    fn issuer_has_no_trailing_slash_and_keeps_its_path() {
        let mut r = raw();
        r.public_url = "https://example.com/auth/".into();
        let s = r.validate().unwrap();
        assert_eq!(s.issuer, "https://example.com/auth");
        assert_eq!(s.base_path(), "/auth");
    }

    #[test]
    fn plain_http_is_refused_off_loopback_naming_the_key() {
        let mut r = raw();
        r.public_url = "http://mcp.example.com".into();
        let e = r.validate().unwrap_err();
        assert_eq!(e.key, "public_url");
        assert!(e.to_string().contains("https"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let mut r = raw();
        r.listen = "nope".into();
        assert_eq!(r.validate().unwrap_err().key, "listen");
        let mut r = raw();
        r.tokens.access_ttl = 0;
        assert_eq!(r.validate().unwrap_err().key, "tokens.access_ttl");
        let mut r = raw();
        r.database_url = "mysql://x".into();
        assert_eq!(r.validate().unwrap_err().key, "database_url");
        let mut r = raw();
        r.scopes.default = vec!["nope".into()];
        assert_eq!(r.validate().unwrap_err().key, "scopes.default");
        let mut r = raw();
        r.trusted_proxies = vec!["10.0.0.0/33".into()];
        assert_eq!(r.validate().unwrap_err().key, "trusted_proxies");
        let mut r = raw();
        r.metrics.allowed_cidrs = vec!["localhost".into()];
        assert_eq!(r.validate().unwrap_err().key, "metrics.allowed_cidrs");
    }

    #[test]
    fn a_metrics_bearer_token_must_be_long_and_sendable_in_a_header() {
        for (token, ok, why) in [
            ("short", false, "too short to be secret"),
            (
                "0123456789abcdef0123456789abcdef has spaces",
                false,
                "not a b64token",
            ),
            ("0123456789abcdef0123456789abcdef", true, "32 hex digits"),
            (
                "c2VjcmV0LXRva2VuLWZvci1wcm9tZXRoZXVzLTAxMjM0NQ==",
                true,
                "base64",
            ),
        ] {
            let mut r = raw();
            r.metrics.bearer_token = Some(token.into());
            match r.validate() {
                Ok(s) => assert!(ok && s.metrics_bearer_token.is_some(), "{why}"),
                Err(e) => assert!(!ok && e.key == "metrics.bearer_token", "{why}: {e}"),
            }
        }
    }

    #[test]
    fn session_bounds_are_validated_naming_their_key() {
        for (edit, key) in [
            (
                (|m: &mut McpSettings| m.max_sessions = 0) as fn(&mut McpSettings),
                "mcp.max_sessions",
            ),
            (|m| m.max_sessions_per_user = 0, "mcp.max_sessions_per_user"),
            (
                |m| {
                    m.max_sessions = 10;
                    m.max_sessions_per_user = 11;
                },
                "mcp.max_sessions_per_user",
            ),
            (
                |m| m.session_idle_timeout_seconds = 0,
                "mcp.session_idle_timeout_seconds",
            ),
            (
                |m| m.session_idle_timeout_seconds = 86_401,
                "mcp.session_idle_timeout_seconds",
            ),
        ] {
            let mut r = raw();
            edit(&mut r.mcp);
            assert_eq!(r.validate().unwrap_err().key, key);
        }
    }

    #[test]
    fn http_limits_are_range_checked_naming_their_key() {
        type Edit = fn(&mut HttpSettings);
        let cases: [(Edit, &str); 5] = [
            (
                |h| h.header_read_timeout_seconds = 0,
                "http.header_read_timeout_seconds",
            ),
            (
                |h| h.keep_alive_timeout_seconds = 0,
                "http.keep_alive_timeout_seconds",
            ),
            (
                |h| h.request_body_timeout_seconds = 7_200,
                "http.request_body_timeout_seconds",
            ),
            (|h| h.max_connections = 0, "http.max_connections"),
            (
                |h| h.max_connections_per_ip = 0,
                "http.max_connections_per_ip",
            ),
        ];
        for (edit, key) in cases {
            let mut r = raw();
            edit(&mut r.http);
            assert_eq!(r.validate().unwrap_err().key, key);
        }
    }

    #[test]
    fn an_open_mcp_endpoint_is_refused_unless_listening_on_loopback() {
        for listen in ["0.0.0.0:8080", "[::]:8080", "192.0.2.10:8080"] {
            let mut r = raw();
            r.mcp.open = true;
            r.listen = listen.into();
            let e = r.validate().unwrap_err();
            assert_eq!(e.key, "mcp.open", "{listen}");
        }
        for listen in ["127.0.0.1:8080", "[::1]:8080"] {
            let mut r = raw();
            r.mcp.open = true;
            r.listen = listen.into();
            assert!(r.validate().is_ok(), "{listen}");
        }
        let mut r = raw();
        r.listen = "0.0.0.0:8080".into();
        assert!(
            r.validate().is_ok(),
            "a protected endpoint may listen anywhere"
        );
    }

    /// Load with `vars` as the environment (figment's jail keeps tests apart).
    // figment's own error type is what its jail closures return.
    #[allow(clippy::result_large_err)]
    fn load_env(vars: &[(&str, &str)]) -> Result<RawSettings, ConfigError> {
        let mut result = None;
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            for (k, v) in vars {
                jail.set_env(k, v);
            }
            result = Some(load(None, &Overrides::default()));
            Ok(())
        });
        result.unwrap()
    }

    #[test]
    fn list_settings_accept_plain_environment_values() {
        let raw = load_env(&[
            ("MCP_OAUTH_TRUSTED_PROXIES", "127.0.0.1/32"),
            (
                "MCP_OAUTH_SCOPES__SUPPORTED",
                "mcp offline_access tools:write",
            ),
            (
                "MCP_OAUTH_CORS__ALLOWED_ORIGINS",
                "https://a.example, https://b.example",
            ),
            ("MCP_OAUTH_CIMD__ALLOWED_HOSTS", "claude.ai,*.example.com"),
            ("MCP_OAUTH_MCP__BASE_SCOPES", "mcp"),
            ("MCP_OAUTH_REDIRECT_URIS__PRIVATE_USE_SCHEMES", ""),
            ("MCP_OAUTH_METRICS__ALLOWED_CIDRS", "10.0.0.0/8 127.0.0.1"),
        ])
        .unwrap();
        assert_eq!(raw.metrics.allowed_cidrs, ["10.0.0.0/8", "127.0.0.1"]);
        assert_eq!(raw.trusted_proxies, ["127.0.0.1/32"]);
        assert_eq!(
            raw.scopes.supported,
            ["mcp", "offline_access", "tools:write"]
        );
        assert_eq!(
            raw.cors.allowed_origins,
            ["https://a.example", "https://b.example"]
        );
        assert_eq!(raw.cimd.allowed_hosts, ["claude.ai", "*.example.com"]);
        assert_eq!(raw.mcp.base_scopes, ["mcp"]);
        assert!(raw.redirect_uris.private_use_schemes.is_empty());
        assert!(raw.validate().is_ok());
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn list_settings_still_accept_toml_arrays() {
        let raw = load_env(&[
            (
                "MCP_OAUTH_TRUSTED_PROXIES",
                "[\"10.0.0.0/8\", \"192.168.0.0/16\"]",
            ),
            ("MCP_OAUTH_SCOPES__DEFAULT", "[\"mcp\"]"),
        ])
        .unwrap();
        assert_eq!(raw.trusted_proxies, ["10.0.0.0/8", "192.168.0.0/16"]);
        assert_eq!(raw.scopes.default, ["mcp"]);
        let mut from_file = None;
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file("c.toml", "trusted_proxies = [\"10.0.0.1\"]\n[scopes]\nsupported = [\"mcp\", \"offline_access\"]")?;
            from_file = Some(load(
                Some(std::path::Path::new("c.toml")),
                &Overrides::default(),
            ));
            Ok(())
        });
        let raw = from_file.unwrap().unwrap();
        assert_eq!(raw.trusted_proxies, ["10.0.0.1"]);
        assert_eq!(raw.scopes.supported, ["mcp", "offline_access"]);
    }

    const KEY: &str = "MTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTE=";
    const OLD_KEY: &str = "MjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjI=";
    const METRICS_TOKEN: &str = "metrics-token-0123456789abcdef0123456789";

    #[test]
    fn debug_output_shows_neither_the_database_password_nor_the_encryption_keys() {
        for url in [
            "postgres://mcp:hunter2@db.example.com/mcp",
            "postgres://mcp@db.example.com/mcp?sslmode=require&password=hunter2",
        ] {
            let mut r = raw();
            r.database_url = url.into();
            r.keys.encryption_key = Some(KEY.into());
            r.keys.previous_encryption_keys = vec![OLD_KEY.into()];
            r.metrics.bearer_token = Some(METRICS_TOKEN.into());
            let before = format!("{r:?}");
            let after = format!("{:?}", r.validate().unwrap());
            for debug in [before, after] {
                for secret in ["hunter2", KEY, OLD_KEY, METRICS_TOKEN] {
                    assert!(!debug.contains(secret), "{secret} in {debug}");
                }
                assert!(debug.contains("db.example.com"), "the rest is shown");
            }
        }
    }

    #[test]
    fn postgresql_needs_an_encryption_key_and_sqlite_does_not() {
        let mut r = raw();
        r.database_url = "postgres://mcp@db.example.com/mcp".into();
        let e = r.validate().unwrap_err();
        assert_eq!(e.key, "keys.encryption_key");
        assert!(e.message.contains("openssl rand -base64 32"), "{e}");
        let mut r = raw();
        r.database_url = "postgres://mcp@db.example.com/mcp".into();
        r.keys.encryption_key = Some(KEY.into());
        assert!(r.validate().is_ok());
        assert!(raw().validate().is_ok(), "SQLite generates its key");
    }

    #[test]
    fn encryption_keys_must_be_32_bytes_of_base64_and_given_once() {
        for (edit, key) in [
            (
                (|r: &mut RawSettings| r.keys.encryption_key = Some("c2hvcnQ=".into()))
                    as fn(&mut RawSettings),
                "keys.encryption_key",
            ),
            (
                |r| r.keys.previous_encryption_keys = vec!["not base64".into()],
                "keys.previous_encryption_keys",
            ),
            (
                |r| {
                    r.keys.encryption_key = Some(KEY.into());
                    r.keys.encryption_key_file = Some("/etc/hostname".into());
                },
                "keys.encryption_key",
            ),
            (
                |r| r.keys.encryption_key_file = Some("/nonexistent/key".into()),
                "keys.encryption_key_file",
            ),
            (
                |r| r.cimd.proxy_url = Some("socks5://proxy".into()),
                "cimd.proxy_url",
            ),
        ] {
            let mut r = raw();
            edit(&mut r);
            assert_eq!(r.validate().unwrap_err().key, key);
        }
    }

    #[test]
    fn cidr_matching() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(!c.contains("11.1.2.3".parse().unwrap()));
        assert!(c.contains("::ffff:10.0.0.1".parse().unwrap()));
        assert!(Cidr::parse("::1").unwrap().contains("::1".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("1.2.3.4".parse().unwrap())
        );
    }
}
