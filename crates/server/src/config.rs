//! Configuration: defaults, then a TOML file, then `MCP_OAUTH_…` environment variables, then
//! command-line flags. Everything is validated once at start; a bad value is reported with
//! its key and what would be valid. Components receive only the slice they need.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use url::Url;

use mcp_oauth_core::domain::{ResourceUri, ScopeSet};
use mcp_oauth_core::oauth::registration::PrivateUseSchemes;
use mcp_oauth_core::security::login_throttle::ThrottlePolicy;

/// Settings as read, before validation. Field names are the TOML keys; nested tables map to
/// `MCP_OAUTH_<TABLE>__<KEY>` environment variables.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSettings {
    /// The issuer: the public base URL clients reach us at.
    pub public_url: String,
    pub listen: String,
    pub database_url: String,
    pub log_format: LogFormat,
    pub log_level: String,
    pub tokens: TokenSettings,
    pub sessions: SessionSettings,
    pub scopes: ScopeSettings,
    pub redirect_uris: RedirectSettings,
    pub registration: RegistrationSettings,
    pub cimd: CimdSettings,
    pub cors: CorsSettings,
    /// Peers whose `X-Forwarded-For` / `Forwarded` headers are believed (IPs or CIDRs).
    pub trusted_proxies: Vec<String>,
    pub tls: Option<TlsSettings>,
    pub housekeeping: HousekeepingSettings,
    pub login: LoginSettings,
    pub mcp: McpSettings,
    pub http: HttpSettings,
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
    pub base_scopes: Vec<String>,
    /// Extra scopes per tool: `{ tool_name = ["scope", …] }`. A call without them gets 403
    /// `insufficient_scope`, which makes clients ask the user for more (step-up).
    pub tool_scopes: BTreeMap<String, Vec<String>>,
    /// Serve the MCP endpoints without authentication. For conformance testing only: refused
    /// unless the server listens on a loopback address, and warned about at start.
    pub open: bool,
}

impl Default for McpSettings {
    fn default() -> Self {
        Self {
            stateful: true,
            json_response: false,
            base_scopes: vec!["mcp".into()],
            tool_scopes: BTreeMap::new(),
            open: false,
        }
    }
}

/// Sign-in throttling (see `mcp_oauth_core::security::login_throttle`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginSettings {
    /// Failures per account within `window_seconds` before each attempt is delayed.
    pub delay_after: i64,
    /// First delay, doubled per further failure up to `max_delay_ms`.
    pub base_delay_ms: u64,
    pub max_delay_ms: u64,
    /// Failures per account within the window that lock it for `lockout_seconds`.
    pub account_lockout_after: i64,
    /// Failures per client IP within the window that lock that IP out.
    pub ip_lockout_after: i64,
    pub lockout_seconds: i64,
    pub window_seconds: i64,
}

impl Default for LoginSettings {
    fn default() -> Self {
        Self {
            delay_after: 3,
            base_delay_ms: 500,
            max_delay_ms: 8_000,
            account_lockout_after: 10,
            ip_lockout_after: 100,
            lockout_seconds: 900,
            window_seconds: 900,
        }
    }
}

impl LoginSettings {
    pub fn account_policy(&self) -> ThrottlePolicy {
        ThrottlePolicy {
            window_seconds: self.window_seconds,
            delay_after: self.delay_after,
            base_delay_ms: self.base_delay_ms,
            max_delay_ms: self.max_delay_ms,
            lockout_after: self.account_lockout_after,
            lockout_seconds: self.lockout_seconds,
        }
    }

    /// Many people can share an address, so the IP policy starts delaying later.
    pub fn ip_policy(&self) -> ThrottlePolicy {
        ThrottlePolicy {
            delay_after: self.ip_lockout_after / 5,
            lockout_after: self.ip_lockout_after,
            ..self.account_policy()
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
    pub supported: Vec<String>,
    /// Granted when a client asks for none.
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
    pub allowed_hosts: Vec<String>,
    /// Development only: fetch documents from loopback addresses (and over plain http from
    /// them). Never enable in production.
    pub allow_loopback: bool,
    pub fetch_timeout_ms: u64,
    pub max_document_bytes: usize,
    pub cache_min_seconds: i64,
    pub cache_max_seconds: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsSettings {
    /// Origins allowed to call the OAuth endpoints from a browser; `["*"]` for any.
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
            http: HttpSettings::default(),
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
    pub database_url: String,
    pub log_format: LogFormat,
    pub log_level: String,
    pub tokens: TokenSettings,
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
    pub scope_implications: BTreeMap<String, Vec<String>>,
    /// The MCP resources we issue tokens for; the first is the default.
    pub resources: Vec<ResourceUri>,
    pub http: HttpSettings,
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

        if mcp_oauth_store::Backend::from_url(&self.database_url).is_none() {
            return Err(bad(
                "database_url",
                "must start with sqlite: (e.g. sqlite://data/mcp-oauth.db?mode=rwc) or postgres: (e.g. postgres://user@host/db)",
            ));
        }

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

        let trusted_proxies = self
            .trusted_proxies
            .iter()
            .map(|p| {
                Cidr::parse(p).ok_or_else(|| {
                    bad(
                        "trusted_proxies",
                        format!("{p:?} is not an IP address or CIDR"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;

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
        let l = &self.login;
        if l.delay_after < 1 || l.account_lockout_after <= l.delay_after || l.ip_lockout_after < 5 {
            return Err(bad(
                "login",
                "need delay_after >= 1, account_lockout_after > delay_after and ip_lockout_after >= 5",
            ));
        }
        if l.window_seconds < 1 || l.lockout_seconds < 1 || l.max_delay_ms > 60_000 {
            return Err(bad(
                "login",
                "window_seconds and lockout_seconds must be positive, max_delay_ms at most 60000",
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
        if self.mcp.open && !listen.ip().is_loopback() {
            return Err(bad(
                "mcp.open",
                "an unauthenticated MCP endpoint is allowed only when listening on a loopback address",
            ));
        }

        Ok(Settings {
            issuer,
            public_url,
            listen,
            database_url: self.database_url,
            log_format: self.log_format,
            log_level: self.log_level,
            tokens: self.tokens,
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
            scope_implications: self.scopes.implies,
            resources,
            http: self.http,
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
