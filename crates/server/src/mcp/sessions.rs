//! Streamable HTTP sessions bound to the user who created them (MCP security best practices,
//! "Session Hijacking": a session id is not a credential, and must not be usable with another
//! user's token).
//!
//! `OwnedSessions` wraps rmcp's session manager and records the owner when the session is
//! initialised (the `initialize` message carries the HTTP request parts, hence our
//! `Principal`), forgetting it when rmcp closes the session (DELETE or idle timeout).
//! `session_guard` is the check itself, as axum middleware inside the bearer layer: GET and
//! DELETE never reach the session manager with their request parts.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use futures::Stream;
use rmcp::model::{ClientJsonRpcMessage, GetExtensions, ServerJsonRpcMessage};
use rmcp::transport::streamable_http_server::session::{EventStore, ServerSseMessage};
use rmcp::transport::streamable_http_server::{RestoreOutcome, SessionId, SessionManager};

use crate::resource::Principal;

/// Session id → owning subject.
#[derive(Clone, Default)]
pub struct SessionOwners(Arc<RwLock<HashMap<SessionId, String>>>);

impl SessionOwners {
    pub fn owner(&self, id: &str) -> Option<String> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    fn set(&self, id: &SessionId, owner: String) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), owner);
    }

    fn remove(&self, id: &SessionId) {
        self.0.write().unwrap_or_else(|p| p.into_inner()).remove(id);
    }
}

pub struct OwnedSessions<M> {
    inner: M,
    owners: SessionOwners,
}

impl<M> OwnedSessions<M> {
    pub fn new(inner: M, owners: SessionOwners) -> Self {
        Self { inner, owners }
    }
}

#[derive(Debug)]
pub enum OwnedError<E> {
    Inner(E),
    NotOwner,
}

impl<E: fmt::Display> fmt::Display for OwnedError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inner(e) => e.fmt(f),
            Self::NotOwner => f.write_str("the session belongs to another user"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for OwnedError<E> {}

fn subject_of(message: &ClientJsonRpcMessage) -> Option<String> {
    let extensions = match message {
        ClientJsonRpcMessage::Request(r) => r.request.extensions(),
        ClientJsonRpcMessage::Notification(n) => n.notification.extensions(),
        _ => return None,
    };
    extensions
        .get::<Parts>()?
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
        match (subject_of(message), self.owners.owner(id)) {
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
        if let Some(subject) = subject_of(&message) {
            self.owners.set(id, subject);
        }
        self.inner
            .initialize_session(id, message)
            .await
            .map_err(OwnedError::Inner)
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        self.inner.has_session(id).await.map_err(OwnedError::Inner)
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        self.owners.remove(id);
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

/// Refuse a session id presented by anyone but its owner, with the same answer as for an
/// unknown session, so as not to reveal that it exists.
pub async fn session_guard(
    State(owners): State<SessionOwners>,
    request: Request,
    next: Next,
) -> Response {
    let caller = request
        .extensions()
        .get::<Principal>()
        .map(|p| p.subject.as_str());
    let foreign = request
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|id| owners.owner(id))
        .is_some_and(|owner| Some(owner.as_str()) != caller);
    if foreign {
        tracing::warn!(
            security_event = "session_owner_mismatch",
            "session id presented by another user"
        );
        // Byte for byte rmcp's answer for an unknown session, headers included. rmcp reads the
        // body before answering, so do the same: an unread body would make hyper close the
        // connection, which would both break keep-alive and tell the two cases apart.
        let _ = axum::body::to_bytes(request.into_body(), 4 * 1024 * 1024).await;
        let mut r = Response::new(Body::from("Not Found: Session not found"));
        *r.status_mut() = StatusCode::NOT_FOUND;
        return r;
    }
    next.run(request).await
}
