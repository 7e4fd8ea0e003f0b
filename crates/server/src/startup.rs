//! Building and running the application. `Application::build` does everything up to binding
//! the port (port 0 in tests), so a test gets a real server on a real socket.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::http::StatusCode;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};

use mcp_oauth_store::{ConnectOptions, Db};

use crate::clock::Clock;
use crate::config::Settings;
use crate::http::middleware::{self, REQUEST_ID, RandomRequestId};
use crate::http::serve::{ServeOptions, load_tls, serve};
use crate::identity::{account, login, setup};
use crate::keys::KeyStore;
use crate::keys::encryption::KeyRing;
use crate::state::AppState;

pub struct Application {
    listener: TcpListener,
    router: Router,
    state: AppState,
    /// Certificate and key when the server terminates TLS itself.
    tls: Option<Arc<rustls::ServerConfig>>,
}

/// Connect and migrate, with errors that say what to fix.
pub async fn connect_db(database_url: &str) -> anyhow::Result<Db> {
    if let Some(path) = database_url
        .strip_prefix("sqlite://")
        .map(|p| p.split('?').next().unwrap_or(p))
        && let Some(dir) = std::path::Path::new(path).parent()
        && !dir.as_os_str().is_empty()
        && !path.contains(":memory:")
    {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the database directory {}", dir.display()))?;
    }
    let db = Db::connect(database_url, &ConnectOptions::default())
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot open the database at {}: {e}",
                redact_url(database_url)
            )
        })?;
    // A command run beside a busy server can find SQLite's lock taken mid-check; try again.
    let mut attempt = 0;
    loop {
        match db.migrate().await {
            Ok(()) => return Ok(db),
            Err(e) if e.is_busy() && attempt < 20 => {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e).context("applying database migrations failed"),
        }
    }
}

/// A database URL without its password (in the user information or a `password` query
/// parameter, which PostgreSQL URLs accept), for messages.
pub fn redact_url(url: &str) -> String {
    let Ok(mut u) = url::Url::parse(url) else {
        return if url.contains('@') || url.contains("password") {
            "<a database URL that does not parse>".to_owned()
        } else {
            url.to_owned()
        };
    };
    let in_query = u.query_pairs().any(|(k, _)| k == "password");
    if u.password().is_none() && !in_query {
        return url.to_owned();
    }
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    if in_query {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == "password" { "***".into() } else { v };
                (k.into_owned(), v.into_owned())
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

async fn healthz() -> impl IntoResponse {
    "ok"
}

/// How long readiness waits for the database: a probe must get an answer within a second.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(800);

async fn readyz(axum::extract::State(state): axum::extract::State<AppState>) -> impl IntoResponse {
    let not_ready = |why: &'static str| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(axum::http::header::RETRY_AFTER, "1")],
            why,
        )
            .into_response()
    };
    if state.db_health.is_down() {
        return not_ready("database unreachable");
    }
    match tokio::time::timeout(READY_TIMEOUT, state.db.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready").into_response(),
        Ok(Err(e)) => {
            if !state.db_health.observe(&e) {
                tracing::warn!(error = ?e.to_string(), "readiness check failed");
            }
            not_ready("database unreachable")
        }
        Err(_) => not_ready("database did not answer in time"),
    }
}

/// A path no route serves. Scanners ask for many, and for known probe paths.
async fn not_found(
    axum::extract::State(state): axum::extract::State<AppState>,
    who: crate::security::Requester,
    uri: axum::http::Uri,
) -> impl IntoResponse {
    state.security.not_found(&who, uri.path());
    (StatusCode::NOT_FOUND, "not found")
}

async fn home(axum::extract::State(state): axum::extract::State<AppState>) -> impl IntoResponse {
    axum::response::Redirect::to(&format!("{}/account", state.settings.base_path()))
}

pub fn router(state: AppState) -> Router {
    let base = state.settings.base_path().to_owned();
    // Pages backed by the database (sessions, accounts): an error page at once while it is
    // known to be unreachable.
    use crate::security::page as security_page;
    let pages = Router::new()
        .route("/login", get(login::login_get).post(login::login_post))
        .route("/logout", axum::routing::post(login::logout_post))
        .route("/setup", get(setup::setup_get).post(setup::setup_post))
        .route("/account", get(account::account_get))
        .route(
            "/account/revoke",
            axum::routing::post(account::account_revoke_post),
        )
        .route(
            "/analytics/api/summary",
            get(crate::analytics::api::summary_get),
        )
        .route(
            "/analytics/api/export",
            get(crate::analytics::export::export_get),
        )
        .route("/analytics", get(crate::analytics::dashboard::page_get))
        .route(
            "/analytics/live",
            get(crate::analytics::dashboard::live_get),
        )
        .route(
            "/analytics/{page}",
            get(crate::analytics::dashboard::page_get),
        )
        .route("/security", get(security_page::page_get))
        .route("/security/live", get(security_page::live_get))
        .route(
            "/security/unblock",
            axum::routing::post(security_page::unblock_post),
        )
        .route(
            "/security/events/{id}",
            get(security_page::event_get).post(security_page::event_post),
        )
        .route(
            "/security/revoke",
            get(security_page::revoke_get).post(security_page::revoke_post),
        )
        .route_layer(from_fn_with_state(
            state.db_health.clone(),
            crate::db_health::page_needs_database,
        ));
    let app = Router::new()
        .route("/", get(home))
        .merge(pages)
        .route("/static/app.css", get(crate::web::stylesheet))
        .route(
            "/static/analytics.js",
            get(crate::analytics::dashboard::script),
        )
        .merge(crate::oauth::router(&state))
        .merge(crate::mcp::router(&state));
    let app = if base.is_empty() {
        app
    } else {
        Router::new().nest(&base, app)
    };
    let mut router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(crate::metrics::metrics_get))
        .merge(crate::oauth::well_known_router(&state))
        .merge(crate::mcp::well_known_router(&state))
        .merge(app)
        .fallback(not_found)
        .layer(from_fn_with_state(
            state.settings.http.request_body_timeout(),
            middleware::request_body_deadline,
        ))
        .layer(from_fn_with_state(state.clone(), middleware::error_pages))
        .layer(from_fn(middleware::security_headers))
        .layer(from_fn(middleware::log_errors))
        // Inside the recording: refused requests from blocked addresses still count.
        .layer(from_fn_with_state(
            state.clone(),
            crate::security::blocks::refuse_blocked,
        ))
        .layer(from_fn_with_state(
            state.clone(),
            crate::analytics::http::record_requests,
        ));
    if state.settings.is_https() {
        router = router.layer(from_fn(middleware::hsts));
    }
    router
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(middleware::request_span)
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
        .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), RandomRequestId))
        .with_state(state)
}

impl Application {
    pub async fn build(settings: Settings, clock: Clock) -> anyhow::Result<Self> {
        let db = connect_db(&settings.database_url).await?;
        Self::build_with_db(settings, clock, db).await
    }

    pub async fn build_with_db(settings: Settings, clock: Clock, db: Db) -> anyhow::Result<Self> {
        let listen = settings.listen;
        let listener = TcpListener::bind(listen).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                anyhow::anyhow!(
                    "cannot listen on {listen}: the port is already in use (set MCP_OAUTH_LISTEN or --listen)"
                )
            } else {
                anyhow::anyhow!("cannot listen on {listen}: {e}")
            }
        })?;
        Self::build_on(settings, clock, db, listener).await
    }

    /// Build on a listener bound by the caller (tests bind port 0 first, to know the public
    /// URL before the settings are made).
    pub async fn build_on(
        settings: Settings,
        clock: Clock,
        db: Db,
        listener: TcpListener,
    ) -> anyhow::Result<Self> {
        let keyring = KeyRing::load(&settings.keys, &settings.database_url)?;
        let keys = KeyStore::load(
            db.clone(),
            Arc::new(keyring),
            settings.tokens.signing_alg,
            clock.now(),
        )
        .await
        .context("loading signing keys failed")?;
        let tls = match &settings.tls {
            Some(t) => Some(load_tls(&t.cert_file, &t.key_file).with_context(|| {
                format!(
                    "`tls`: cannot load the certificate {} and key {} (PEM files expected)",
                    t.cert_file.display(),
                    t.key_file.display()
                )
            })?),
            None => None,
        };
        let shared_limits =
            crate::security::rate_limit::SharedBuckets::for_settings(&settings, &db).await?;
        let state = AppState::new(settings, db, clock, keys, shared_limits)?;
        state.revocations.poll(&state.db, state.clock.now()).await?;
        let router = router(state.clone());
        Ok(Self {
            listener,
            router,
            state,
            tls,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// If no user exists yet, open first-run setup and return the URL to print.
    pub async fn setup_url(&self) -> anyhow::Result<Option<String>> {
        if self.state.db.count_users().await? > 0 {
            return Ok(None);
        }
        let token = self.state.setup.open();
        Ok(Some(format!(
            "{}/setup?token={token}",
            self.state.settings.issuer
        )))
    }

    /// Serve until `shutdown` completes, then finish in-flight requests and stop.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let mut tasks = crate::housekeeping::spawn(&self.state);
        tasks.push(tokio::spawn(
            crate::analytics::dashboard::keep_presets_warm(self.state.clone()),
        ));
        let writer_stop = tokio_util::sync::CancellationToken::new();
        let writer = self.spawn_analytics_writer(writer_stop.clone());
        // Open MCP streams would hold graceful shutdown forever: end them when it starts.
        let streams = self.state.shutdown.clone();
        let shutdown = async move {
            shutdown.await;
            streams.cancel();
        };
        let options = ServeOptions::new(&self.state.settings, self.tls);
        serve(self.listener, self.router, options, shutdown).await;
        for t in tasks {
            t.abort();
        }
        // Every request has finished: store what they recorded, then close the database.
        writer_stop.cancel();
        if let Some(writer) = writer
            && tokio::time::timeout(WRITER_DRAIN_TIMEOUT, writer)
                .await
                .is_err()
        {
            tracing::warn!("analytics writer did not finish in time; its last events are lost");
        }
        self.state.db.close().await;
        Ok(())
    }
}

/// How long shutdown waits for the analytics writer to store what is queued.
const WRITER_DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl Application {
    /// The writer that stores recorded events, when analytics or security monitoring is on
    /// (once per application).
    fn spawn_analytics_writer(
        &self,
        stop: tokio_util::sync::CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let queues = self
            .state
            .analytics_queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()?;
        let settings = &self.state.settings.analytics;
        let writer = crate::analytics::pipeline::Writer {
            db: self.state.db.clone(),
            recorder: self.state.analytics.clone(),
            queues,
            batch_size: settings.batch_size,
            flush_interval: std::time::Duration::from_millis(settings.flush_interval_ms),
            max_pending: settings.queue_capacity,
            db_health: self.state.db_health.clone(),
        };
        Some(writer.spawn(stop))
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
