//! Streamable HTTP sessions (and legacy SSE streams) bound to the user who created them, and
//! bounded in number and in idle time.
//!
//! Bound to their user (MCP security best practices, "Session Hijacking"): a session id is not
//! a credential, and must not be usable with another user's token. `OwnedSessions` wraps
//! rmcp's session manager and records the owner when the session is initialised (the
//! `initialize` message carries the HTTP request parts, hence our `Principal`); `session_guard`
//! is the check itself, as axum middleware inside the bearer layer: GET and DELETE never reach
//! the session manager with their request parts.
//!
//! Bounded: every session costs memory until it is closed, and opening one costs a client a
//! single request, so each sits in a `SessionTable` (`mcp_oauth_core::mcp::sessions`, where the
//! rules are) from the moment `session_guard` admits its `initialize`, before rmcp creates it:
//! a refusal leaves nothing half-made behind. Every request and open stream counts as
//! activity; `reap`, run periodically, closes sessions idle longer than
//! `mcp.session_idle_timeout_seconds` through rmcp's `close_session`, which is what drops its
//! session handle (its idle `keep_alive` only stops the session's worker), so the memory is
//! given back. rmcp's own `keep_alive` stays as a safety net, set above ours.
//!
//! Legacy SSE streams take their slots from the same table: each is a session with a stream
//! open for as long as it lives, so it counts against the same caps and is never evicted.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use metrics::{Counter, Gauge};
use rmcp::model::{ClientJsonRpcMessage, GetExtensions, ServerJsonRpcMessage};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::session::{EventStore, ServerSseMessage};
use rmcp::transport::streamable_http_server::{RestoreOutcome, SessionId, SessionManager};
use serde::Deserialize;
use serde_json::{Value, json};

use mcp_oauth_core::mcp::sessions::{Refusal, SessionLimits, SessionTable};

use crate::clock::Clock;
use crate::config::McpSettings;
use crate::metrics::Metrics;
use crate::resource::Principal;

/// Largest body read to tell an `initialize` apart (rmcp's own request limit).
const MAX_BODY: usize = 4 * 1024 * 1024;

/// Sessions closed (about 50 KB each) before `reap` asks the allocator to give memory back.
const RELEASE_AFTER: usize = 32;

/// The session manager behind `/mcp`.
pub type McpSessions = OwnedSessions<LocalSessionManager>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    StreamableHttp,
    Sse,
}

impl Transport {
    const ALL: [Self; 2] = [Self::StreamableHttp, Self::Sse];

    fn label(self) -> &'static str {
        match self {
            Self::StreamableHttp => "streamable_http",
            Self::Sse => "sse",
        }
    }
}

/// A session in the table: a Streamable HTTP session, or a legacy SSE stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SessionKey {
    Streamable(SessionId),
    Legacy(Arc<str>),
}

impl SessionKey {
    fn transport(&self) -> Transport {
        match self {
            Self::Streamable(_) => Transport::StreamableHttp,
            Self::Legacy(_) => Transport::Sse,
        }
    }
}

struct SessionMetrics {
    sessions_open: [Gauge; 2],
    streams_open: [Gauge; 2],
    /// By transport, then user limit / total limit.
    refused: [[Counter; 2]; 2],
    evicted: Counter,
    idle_closed: Counter,
}

impl SessionMetrics {
    fn new(metrics: &Metrics) -> Self {
        let per_transport = |f: &dyn Fn(Transport) -> Gauge| Transport::ALL.map(f);
        Self {
            sessions_open: per_transport(&|t| {
                metrics.gauge(
                    "mcp_sessions_open",
                    &[("transport", t.label())],
                    "MCP sessions held: Streamable HTTP sessions, and legacy SSE streams",
                )
            }),
            streams_open: per_transport(&|t| {
                metrics.gauge(
                    "mcp_streams_open",
                    &[("transport", t.label())],
                    "Open MCP event streams (Streamable HTTP GET and POST responses, legacy SSE)",
                )
            }),
            refused: Transport::ALL.map(|t| {
                ["user_limit", "total_limit"].map(|reason| {
                    metrics.counter(
                        "mcp_sessions_refused_total",
                        &[("transport", t.label()), ("reason", reason)],
                        "New MCP sessions refused at mcp.max_sessions_per_user or mcp.max_sessions",
                    )
                })
            }),
            evicted: metrics.counter(
                "mcp_sessions_evicted_total",
                &[],
                "Idle MCP sessions closed to make room for a new session of the same user",
            ),
            idle_closed: metrics.counter(
                "mcp_sessions_idle_closed_total",
                &[],
                "MCP sessions closed after mcp.session_idle_timeout_seconds without activity",
            ),
        }
    }
}

/// The table and what reports on it, shared by the session manager, the middleware, the
/// legacy SSE routes and the streams they hand out.
pub struct LiveSessions {
    table: Mutex<SessionTable<SessionKey, String>>,
    clock: Clock,
    metrics: SessionMetrics,
    /// Sessions closed since the allocator last gave memory back.
    closed: AtomicUsize,
}

impl LiveSessions {
    fn table(&self) -> std::sync::MutexGuard<'_, SessionTable<SessionKey, String>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remove(&self, key: &SessionKey) {
        if self.table().remove(key) {
            self.closed.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn owner(&self, key: &SessionKey) -> Option<Option<String>> {
        self.table().owner(key).map(|o| o.cloned())
    }

    fn publish(&self) {
        let mut open = [0.0f64; 2];
        for (key, _) in self.table().iter() {
            open[key.transport() as usize] += 1.0;
        }
        for (gauge, n) in self.metrics.sessions_open.iter().zip(open) {
            gauge.set(n);
        }
    }
}

/// A slot admitted for a new session: committed once the session exists, given back when
/// dropped otherwise (the `initialize` failed, or the client went away).
pub struct Reservation {
    live: Arc<LiveSessions>,
    owner: Option<String>,
    committed: bool,
}

impl Reservation {
    /// The session exists as `key`, with `streams` open.
    pub fn commit(mut self, key: SessionKey, streams: usize) {
        self.committed = true;
        let now = self.live.clock.now();
        self.live
            .table()
            .commit(key, self.owner.take(), now, streams);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.committed {
            self.live.table().cancel(self.owner.as_ref());
        }
    }
}

/// A reservation travelling with an `initialize` request, through rmcp, to
/// `initialize_session` (request extensions must be `Clone`).
#[derive(Clone)]
struct PendingSession(Arc<Mutex<Option<Reservation>>>);

impl PendingSession {
    fn take(&self) -> Option<Reservation> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Held by an open event stream: the stream gauge, and the session's activity.
pub struct StreamGuard {
    live: Arc<LiveSessions>,
    key: Option<SessionKey>,
    gauge: Gauge,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.gauge.decrement(1.0);
        if let Some(key) = &self.key {
            let now = self.live.clock.now();
            self.live.table().stream_closed(key, now);
        }
    }
}

/// Held by a legacy SSE stream: its slot, given back when the stream goes away.
pub struct SlotGuard {
    live: Arc<LiveSessions>,
    key: SessionKey,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.live.remove(&self.key);
    }
}

pub struct OwnedSessions<M> {
    inner: M,
    live: Arc<LiveSessions>,
}

impl McpSessions {
    /// rmcp's in-memory manager under our bounds; its gauges are published on `metrics`.
    pub fn local(settings: &McpSettings, clock: Clock, metrics: &Metrics) -> Arc<Self> {
        let idle = Duration::from_secs(settings.session_idle_timeout_seconds.unsigned_abs());
        let mut inner = LocalSessionManager::default();
        // The safety net: rmcp stops a session's worker after this long without a JSON-RPC
        // message (and then closes the session), even with a stream open; ours is first.
        inner.session_config.keep_alive = Some(idle + (idle / 2).max(Duration::from_secs(30)));
        let limits = SessionLimits {
            per_user: settings.max_sessions_per_user,
            total: settings.max_sessions,
            idle_timeout: settings.session_idle_timeout_seconds,
        };
        let sessions = Arc::new(Self {
            inner,
            live: Arc::new(LiveSessions {
                table: Mutex::new(SessionTable::new(limits)),
                clock,
                metrics: SessionMetrics::new(metrics),
                closed: AtomicUsize::new(0),
            }),
        });
        let live = Arc::downgrade(&sessions.live);
        metrics.on_render(move || {
            if let Some(live) = Weak::upgrade(&live) {
                live.publish();
            }
        });
        sessions
    }

    /// Sessions in rmcp's own map (what `reap` and `close_session` empty).
    pub async fn rmcp_sessions(&self) -> usize {
        self.inner.sessions.read().await.len()
    }
}

impl<M> OwnedSessions<M> {
    /// Sessions held, pending ones included.
    pub fn open(&self) -> usize {
        self.live.table().len()
    }

    /// Sessions `owner` holds, pending ones included.
    pub fn held_by(&self, owner: &str) -> usize {
        self.live.table().held_by(&owner.to_owned())
    }

    /// Open sessions of `transport`, and their open streams.
    pub fn count(&self, transport: Transport) -> (usize, usize) {
        self.live
            .table()
            .iter()
            .filter(|(k, _)| k.transport() == transport)
            .fold((0, 0), |(n, s), (_, streams)| (n + 1, s + streams))
    }

    pub fn limits(&self) -> SessionLimits {
        self.live.table().limits()
    }

    /// Activity in a session.
    fn touch(&self, key: &SessionKey) {
        let now = self.live.clock.now();
        self.live.table().touch(key, now);
    }

    /// Count an event stream of `transport` as open until the guard is dropped; with `key`,
    /// the session is in use (not idle) meanwhile.
    pub fn stream(&self, transport: Transport, key: Option<SessionKey>) -> StreamGuard {
        let gauge = self.live.metrics.streams_open[transport as usize].clone();
        gauge.increment(1.0);
        if let Some(key) = &key {
            let now = self.live.clock.now();
            self.live.table().stream_opened(key, now);
        }
        StreamGuard {
            live: self.live.clone(),
            key,
            gauge,
        }
    }

    /// Hold `key`'s slot until the guard is dropped.
    pub fn slot(&self, key: SessionKey) -> SlotGuard {
        SlotGuard {
            live: self.live.clone(),
            key,
        }
    }

    /// The refusal of a new session: 429 when the user's own sessions are all in use (they
    /// can close one), 503 when the server is full; with `Retry-After`, and a JSON-RPC error
    /// answering `id` that says what happened and what to do.
    pub fn refusal_response(&self, refusal: Refusal, id: Value) -> Response {
        let limits = self.limits();
        let (status, reason, message) = match refusal {
            Refusal::UserLimit => (
                StatusCode::TOO_MANY_REQUESTS,
                "user_session_limit",
                format!(
                    "Too many MCP sessions: this user already has {} open, each with a stream \
                     open or still initialising. Close one (DELETE it with its Mcp-Session-Id, \
                     or end its stream) and retry.",
                    limits.per_user
                ),
            ),
            Refusal::TotalLimit => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_session_limit",
                format!(
                    "The server holds its maximum of {} MCP sessions. Retry later.",
                    limits.total
                ),
            ),
        };
        let body = json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": {"code": -32000, "message": message, "data": {"reason": reason}},
        });
        let mut r = (status, axum::Json(body)).into_response();
        // Idle sessions are closed within this long of their last use.
        let retry = limits.idle_timeout.clamp(1, 60);
        if let Ok(v) = HeaderValue::from_str(&retry.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    }
}

impl<M: SessionManager> OwnedSessions<M> {
    /// Admit a new session of `owner` on `transport`, closing the owner's least recently used
    /// idle session if they are at `mcp.max_sessions_per_user`.
    pub async fn admit(
        &self,
        owner: Option<&str>,
        transport: Transport,
    ) -> Result<Reservation, Refusal> {
        let owner = owner.map(str::to_owned);
        let admitted = self.live.table().admit(owner.as_ref());
        let admission = match admitted {
            Ok(a) => a,
            Err(refusal) => {
                let (i, key) = match refusal {
                    Refusal::UserLimit => (0, "mcp.max_sessions_per_user"),
                    Refusal::TotalLimit => (1, "mcp.max_sessions"),
                };
                self.live.metrics.refused[transport as usize][i].increment(1);
                tracing::warn!(
                    security_event = "mcp_session_refused",
                    reason = ?refusal,
                    subject = ?owner,
                    limit = key,
                    "new MCP session refused"
                );
                return Err(refusal);
            }
        };
        let reservation = Reservation {
            live: self.live.clone(),
            owner,
            committed: false,
        };
        if let Some(evicted) = admission.evicted {
            self.live.metrics.evicted.increment(1);
            self.live.closed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                subject = ?reservation.owner,
                "closing the user's least recently used idle MCP session for a new one"
            );
            self.close_inner(&evicted).await;
        }
        Ok(reservation)
    }

    /// Close the sessions idle longer than the timeout. First, if enough sessions have been
    /// closed (by any path) before this run, have the allocator give their memory back: by
    /// now their rmcp workers have ended and freed it.
    pub async fn reap(&self) {
        if self.live.closed.load(Ordering::Relaxed) >= RELEASE_AFTER {
            self.live.closed.store(0, Ordering::Relaxed);
            // It walks the whole heap: off the async workers.
            let _ = tokio::task::spawn_blocking(crate::memory::release).await;
        }
        let idle = {
            let now = self.live.clock.now();
            self.live.table().take_idle(now)
        };
        if idle.is_empty() {
            return;
        }
        self.live.metrics.idle_closed.increment(idle.len() as u64);
        self.live.closed.fetch_add(idle.len(), Ordering::Relaxed);
        tracing::debug!(count = idle.len(), "closing idle MCP sessions");
        for key in &idle {
            self.close_inner(key).await;
        }
    }

    async fn close_inner(&self, key: &SessionKey) {
        // Legacy streams always have a stream open, so they are never evicted or idle.
        if let SessionKey::Streamable(id) = key
            && let Err(e) = self.inner.close_session(id).await
        {
            tracing::warn!(error = %e, "closing an MCP session failed");
        }
    }
}

#[derive(Debug)]
pub enum OwnedError<E> {
    Inner(E),
    NotOwner,
    Refused(Refusal),
}

impl<E: std::fmt::Display> std::fmt::Display for OwnedError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Inner(e) => e.fmt(f),
            Self::NotOwner => f.write_str("the session belongs to another user"),
            Self::Refused(r) => write!(f, "no room for another session ({r:?})"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for OwnedError<E> {}

fn parts_of(message: &ClientJsonRpcMessage) -> Option<&Parts> {
    match message {
        ClientJsonRpcMessage::Request(r) => r.request.extensions().get::<Parts>(),
        ClientJsonRpcMessage::Notification(n) => n.notification.extensions().get::<Parts>(),
        _ => None,
    }
}

fn subject_of(message: &ClientJsonRpcMessage) -> Option<String> {
    parts_of(message)?
        .extensions
        .get::<Principal>()
        .map(|p| p.subject.clone())
}

impl<M: SessionManager> OwnedSessions<M> {
    /// Second line of defence behind `session_guard`. Client responses (to server requests)
    /// carry no request parts and pass.
    fn check(
        &self,
        id: &SessionId,
        message: &ClientJsonRpcMessage,
    ) -> Result<(), OwnedError<M::Error>> {
        let owner = self
            .live
            .owner(&SessionKey::Streamable(id.clone()))
            .flatten();
        match (subject_of(message), owner) {
            (Some(caller), Some(owner)) if caller != owner => Err(OwnedError::NotOwner),
            _ => Ok(()),
        }
    }
}

impl<M: SessionManager> SessionManager for OwnedSessions<M> {
    type Error = OwnedError<M::Error>;
    type Transport = M::Transport;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        self.inner.create_session().await.map_err(OwnedError::Inner)
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        let subject = subject_of(&message);
        let pending = parts_of(&message)
            .and_then(|p| p.extensions.get::<PendingSession>())
            .and_then(PendingSession::take);
        let reservation = match pending {
            Some(r) => r,
            // `session_guard` admits every `initialize` it sees; this is for any it did not
            // recognise, so that the bounds hold whatever reaches rmcp.
            None => match self
                .admit(subject.as_deref(), Transport::StreamableHttp)
                .await
            {
                Ok(r) => r,
                Err(refusal) => {
                    let _ = self.inner.close_session(id).await;
                    return Err(OwnedError::Refused(refusal));
                }
            },
        };
        reservation.commit(SessionKey::Streamable(id.clone()), 0);
        self.inner
            .initialize_session(id, message)
            .await
            .map_err(OwnedError::Inner)
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        self.inner.has_session(id).await.map_err(OwnedError::Inner)
    }

    /// Called for a client's DELETE, and by rmcp when a session's service ends.
    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        self.live.remove(&SessionKey::Streamable(id.clone()));
        self.inner
            .close_session(id)
            .await
            .map_err(OwnedError::Inner)
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.check(id, &message)?;
        self.inner
            .create_stream(id, message)
            .await
            .map_err(OwnedError::Inner)
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        self.check(id, &message)?;
        self.inner
            .accept_message(id, message)
            .await
            .map_err(OwnedError::Inner)
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.inner
            .create_standalone_stream(id)
            .await
            .map_err(OwnedError::Inner)
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.inner
            .resume(id, last_event_id)
            .await
            .map_err(OwnedError::Inner)
    }

    async fn restore_session(
        &self,
        id: SessionId,
    ) -> Result<RestoreOutcome<Self::Transport>, Self::Error> {
        self.inner
            .restore_session(id)
            .await
            .map_err(OwnedError::Inner)
    }

    fn event_store(&self) -> Option<Arc<dyn EventStore>> {
        self.inner.event_store()
    }
}

/// What `session_guard` needs.
#[derive(Clone)]
pub struct SessionGuard {
    pub sessions: Arc<McpSessions>,
    /// Whether `/mcp` has sessions at all (`mcp.stateful`).
    pub stateful: bool,
}

/// Just enough of a JSON-RPC message to recognise an `initialize`.
#[derive(Deserialize)]
struct Peek {
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    id: Value,
}

/// In front of rmcp: refuse a session id presented by anyone but its owner (with the same
/// answer as for an unknown session, so as not to reveal that it exists), admit each new
/// session against the bounds before rmcp creates it, and record activity and open streams.
pub async fn session_guard(
    State(guard): State<SessionGuard>,
    request: Request,
    next: Next,
) -> Response {
    let sessions = &guard.sessions;
    let caller = request
        .extensions()
        .get::<Principal>()
        .map(|p| p.subject.clone());
    let presented = request
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(|id| SessionKey::Streamable(id.into()));
    let request = match &presented {
        Some(key) => {
            match sessions.live.owner(key) {
                Some(Some(owner)) if Some(&owner) != caller.as_ref() => {
                    return foreign_session(request).await;
                }
                Some(_) => sessions.touch(key),
                None => {}
            }
            request
        }
        // Read the body, not the `Mcp-Method` header: rmcp creates a session for an
        // `initialize` whatever that header says (for versions before 2026-07-28).
        None if guard.stateful && request.method() == Method::POST => {
            match admit_initialize(sessions, caller.as_deref(), request).await {
                Ok(request) => request,
                Err(refusal) => return refusal,
            }
        }
        None => request,
    };
    let response = next.run(request).await;
    let is_stream = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("text/event-stream"));
    if !is_stream {
        return response;
    }
    // The session a stream belongs to: the one presented, or the one `initialize` created.
    let key = presented.or_else(|| {
        response
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(|id| SessionKey::Streamable(id.into()))
    });
    let held = sessions.stream(Transport::StreamableHttp, key);
    let (parts, body) = response.into_parts();
    let body = Body::from_stream(body.into_data_stream().map(move |chunk| {
        let _held_while_streaming = &held;
        chunk
    }));
    Response::from_parts(parts, body)
}

/// The request, with its admitted slot attached if it is an `initialize`; or the refusal.
async fn admit_initialize(
    sessions: &McpSessions,
    caller: Option<&str>,
    request: Request,
) -> Result<Request, Response> {
    let (mut parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return Err((StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response());
    };
    if let Ok(Peek {
        method: Some(method),
        id,
    }) = serde_json::from_slice::<Peek>(&bytes)
        && method == "initialize"
    {
        match sessions.admit(caller, Transport::StreamableHttp).await {
            Ok(reservation) => {
                parts
                    .extensions
                    .insert(PendingSession(Arc::new(Mutex::new(Some(reservation)))));
            }
            Err(refusal) => return Err(sessions.refusal_response(refusal, id)),
        }
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

async fn foreign_session(request: Request) -> Response {
    tracing::warn!(
        security_event = "session_owner_mismatch",
        "session id presented by another user"
    );
    // Byte for byte rmcp's answer for an unknown session, headers included. rmcp reads the
    // body before answering, so do the same: an unread body would make hyper close the
    // connection, which would both break keep-alive and tell the two cases apart.
    let _ = axum::body::to_bytes(request.into_body(), MAX_BODY).await;
    let mut r = Response::new(Body::from("Not Found: Session not found"));
    *r.status_mut() = StatusCode::NOT_FOUND;
    r
}
