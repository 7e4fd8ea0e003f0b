//! Application state shared by every handler: cheap to clone, built once at start.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use mcp_oauth_core::oauth::authorize::AuthorizePolicy;
use mcp_oauth_core::oauth::registration::RegistrationPolicy;
use mcp_oauth_core::resource::scopes::ScopeHierarchy;
use mcp_oauth_store::Db;

use crate::analytics::Recorder;
use crate::clock::Clock;
use crate::config::Settings;
use crate::db_health::DbHealth;
use crate::identity::setup::SetupToken;
use crate::keys::KeyStore;
use crate::mcp::sessions::McpSessions;
use crate::metrics::Metrics;
use crate::oauth::cimd::CimdFetcher;
use crate::resource::VerifiedTokens;
use crate::revocation::RevocationList;

#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub db: Db,
    pub clock: Clock,
    pub keys: Arc<KeyStore>,
    pub revocations: Arc<RevocationList>,
    pub cimd: Arc<CimdFetcher>,
    pub setup: Arc<SetupToken>,
    pub authorize_policy: Arc<AuthorizePolicy>,
    pub registration_policy: Arc<RegistrationPolicy>,
    /// Our origin (`scheme://host[:port]`), for same-origin checks on forms.
    pub origin: Arc<str>,
    pub scope_hierarchy: Arc<ScopeHierarchy>,
    pub verified_tokens: Arc<VerifiedTokens>,
    /// Whether the database is known to be unreachable (then requests needing it get 503).
    pub db_health: Arc<DbHealth>,
    /// Cancelled at shutdown, so that long-lived MCP streams end and the server can stop.
    pub shutdown: CancellationToken,
    /// This application's metrics (its own registry: see `crate::metrics`).
    pub metrics: Arc<Metrics>,
    /// MCP sessions and legacy SSE streams, bounded per user and in total.
    pub mcp_sessions: Arc<McpSessions>,
    /// Where usage events are recorded (see `crate::analytics`).
    pub analytics: Arc<Recorder>,
    /// Client countries, when `analytics.geoip_database` is set.
    pub geoip: Option<Arc<crate::analytics::geoip::GeoIp>>,
    /// Settled analytics spans, summed (see `crate::analytics::cache`).
    pub analytics_cache: Arc<crate::analytics::cache::SpanCache>,
    /// Open live dashboards (`/analytics/live`), bounded.
    pub live_streams: Arc<tokio::sync::Semaphore>,
    /// The recorder's queue, taken by the writer when the server starts.
    pub analytics_queue: Arc<std::sync::Mutex<Option<crate::analytics::pipeline::Queues>>>,
    pub security: Arc<crate::security::SecurityMonitor>,
    pub rate_limits: Arc<crate::security::rate_limit::RateLimits>,
}

impl AppState {
    pub fn new(
        settings: Settings,
        db: Db,
        clock: Clock,
        keys: KeyStore,
        shared_limits: Option<crate::security::rate_limit::SharedBuckets>,
    ) -> anyhow::Result<Self> {
        let authorize_policy = AuthorizePolicy {
            supported_scopes: settings.supported_scopes.clone(),
            default_scopes: settings.default_scopes.clone(),
            resources: settings.resources.clone(),
        };
        let registration_policy = RegistrationPolicy {
            supported_scopes: settings.supported_scopes.clone(),
            private_use_schemes: settings.private_use_schemes.clone(),
            allow_client_credentials: false,
        };
        let origin = settings.public_url.origin().ascii_serialization();
        let cimd = CimdFetcher::new(settings.cimd.clone())?;
        let settings_implications = settings.scope_implications.clone();
        let metrics = Arc::new(Metrics::default());
        let mcp_sessions = McpSessions::local(&settings.mcp, clock.clone(), &metrics);
        let db_health = Arc::new(DbHealth::new(db.backend()));
        // Metrics are only worth collecting while someone may read them.
        let metrics_readable =
            !settings.metrics_allowed.is_empty() || settings.metrics_bearer_token.is_some();
        let (analytics, analytics_queue) = Recorder::new(
            &settings.analytics,
            settings.security.enabled,
            clock.clone(),
            &metrics,
            metrics_readable,
            crate::mcp::server::McpServer::tool_names(),
        );
        let geoip = match &settings.analytics.geoip_database {
            Some(path) => Some(Arc::new(crate::analytics::geoip::GeoIp::open(path)?)),
            None => None,
        };
        let security = Arc::new(crate::security::SecurityMonitor::new(
            &settings.security,
            &settings.trusted_proxies,
            db.clone(),
            analytics.clone(),
            clock.clone(),
            metrics.clone(),
            geoip.clone(),
        ));
        let rate_limits = Arc::new(crate::security::rate_limit::RateLimits::for_settings(
            &settings,
            shared_limits,
        ));
        Ok(Self {
            rate_limits,
            security,
            geoip,
            settings: Arc::new(settings),
            db,
            clock,
            keys: Arc::new(keys),
            revocations: Arc::new(RevocationList::default()),
            cimd: Arc::new(cimd),
            setup: Arc::new(SetupToken::default()),
            authorize_policy: Arc::new(authorize_policy),
            registration_policy: Arc::new(registration_policy),
            origin: origin.into(),
            scope_hierarchy: Arc::new(ScopeHierarchy::new(settings_implications)),
            verified_tokens: Arc::default(),
            db_health,
            shutdown: CancellationToken::new(),
            metrics,
            mcp_sessions,
            analytics,
            live_streams: crate::analytics::dashboard::live_streams(),
            analytics_cache: Arc::default(),
            analytics_queue: Arc::new(std::sync::Mutex::new(analytics_queue)),
        })
    }

    /// How long a published grant revocation must be kept: the longest an access token
    /// issued before it can live, plus clock-skew slack.
    pub fn revocation_ttl(&self) -> i64 {
        self.settings.tokens.access_ttl + 120
    }
}
