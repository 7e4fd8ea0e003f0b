//! The HTTP+SSE transport of MCP 2024-11-05, for clients that predate Streamable HTTP. rmcp
//! no longer ships it, so it is built here on axum, serving the same `McpServer`:
//!
//! ```text
//!   GET  /sse                  → event stream; first event `endpoint`: /message?sessionId=…
//!   POST /message?sessionId=…  → 202; the JSON-RPC response arrives on the stream as `message`
//! ```
//!
//! Each stream runs its own rmcp service over a pair of channels. Both routes sit behind the
//! bearer layer, and a session accepts messages only from the user who opened it. The
//! session ends when the client disconnects. Each open stream takes a slot from the same
//! bounds as the Streamable HTTP sessions (`super::sessions`), before anything is set up.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use rmcp::model::{ClientJsonRpcMessage, GetExtensions, ServerJsonRpcMessage};
use rmcp::service::serve_server_with_ct;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::{RwLock, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::{CancellationToken, PollSender};

use super::server::Served;
use super::sessions::{McpSessions, SessionKey, Transport};
use crate::resource::Principal;

/// Largest message accepted.
const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

struct Session {
    to_server: mpsc::Sender<ClientJsonRpcMessage>,
    owner: Option<String>,
}

#[derive(Clone)]
pub struct LegacySse {
    sessions: Arc<RwLock<HashMap<String, Session>>>,
    server: Served,
    /// Where clients POST messages, under the issuer's path.
    message_path: Arc<str>,
    shutdown: CancellationToken,
    bounds: Arc<McpSessions>,
}

pub fn router<S: Clone + Send + Sync + 'static>(
    server: Served,
    base_path: &str,
    shutdown: CancellationToken,
    bounds: Arc<McpSessions>,
) -> Router<S> {
    let state = LegacySse {
        sessions: Arc::default(),
        server,
        message_path: format!("{base_path}/message").into(),
        shutdown,
        bounds,
    };
    Router::new()
        .route("/sse", get(open_stream))
        .route("/message", post(post_message))
        .with_state(state)
}

async fn open_stream(State(state): State<LegacySse>, request: Request) -> Response {
    let owner = request
        .extensions()
        .get::<Principal>()
        .map(|p| p.subject.clone());
    let reservation = match state.bounds.admit(owner.as_deref(), Transport::Sse).await {
        Ok(r) => r,
        // No request to answer: JSON-RPC's `id: null`.
        Err(refusal) => return state.bounds.refusal_response(refusal, Value::Null),
    };
    let session_id = crate::random::id();
    let key = SessionKey::Legacy(session_id.as_str().into());
    // In use for as long as the stream is open: never idle, never evicted.
    reservation.commit(key.clone(), 1);
    let held = (
        state.bounds.slot(key),
        state.bounds.stream(Transport::Sse, None),
    );
    let (to_server, from_client) = mpsc::channel::<ClientJsonRpcMessage>(64);
    let (to_client, from_server) = mpsc::channel::<ServerJsonRpcMessage>(64);
    state
        .sessions
        .write()
        .await
        .insert(session_id.clone(), Session { to_server, owner });

    let ct = state.shutdown.child_token();
    let transport = (PollSender::new(to_client), ReceiverStream::new(from_client));
    let (sessions, id, service_ct, server) = (
        state.sessions.clone(),
        session_id.clone(),
        ct.clone(),
        state.server.clone(),
    );
    tokio::spawn(async move {
        // Waits for `initialize`, then serves until the stream goes away.
        match serve_server_with_ct(server, transport, service_ct.clone()).await {
            Ok(running) => {
                let _ = running.waiting().await;
            }
            Err(e) => {
                tracing::debug!(error = ?e.to_string(), "legacy SSE session ended before initialisation")
            }
        }
        sessions.write().await.remove(&id);
        service_ct.cancel();
    });

    let endpoint = format!("{}?sessionId={session_id}", state.message_path);
    // Dropped when the client disconnects (axum drops the body): that ends the session.
    let guard = ct.clone().drop_guard();
    let first = futures::stream::once(async move {
        Ok::<_, std::convert::Infallible>(Event::default().event("endpoint").data(endpoint))
    });
    let messages = ReceiverStream::new(from_server).filter_map(move |message| {
        let _held_while_streaming = (&guard, &held);
        let event = serde_json::to_string(&message)
            .ok()
            .map(|json| Ok(Event::default().event("message").data(json)));
        async move { event }
    });
    Sse::new(first.chain(messages).take_until(ct.cancelled_owned()))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

#[derive(Deserialize)]
struct MessageQuery {
    #[serde(rename = "sessionId")]
    session_id: String,
}

async fn post_message(
    State(state): State<LegacySse>,
    Query(MessageQuery { session_id }): Query<MessageQuery>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let caller = parts
        .extensions
        .get::<Principal>()
        .map(|p| p.subject.clone());
    let to_server = match state.sessions.read().await.get(&session_id) {
        Some(s) if s.owner == caller => s.to_server.clone(),
        // Unknown, or another user's: the same answer, so as not to reveal it exists.
        _ => {
            let mut refusal = (StatusCode::NOT_FOUND, "Session not found").into_response();
            crate::http::middleware::close_if_body_unread(&parts.headers, &mut refusal);
            return refusal;
        }
    };
    let Ok(bytes) = axum::body::to_bytes(body, MAX_MESSAGE_BYTES).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "message too large").into_response();
    };
    let mut message: ClientJsonRpcMessage = match serde_json::from_slice(&bytes) {
        Ok(m) => m,
        Err(_) => return (StatusCode::BAD_REQUEST, "not a JSON-RPC message").into_response(),
    };
    // As rmcp's Streamable HTTP service does: tools read the caller from the request parts.
    match &mut message {
        ClientJsonRpcMessage::Request(r) => {
            r.request.extensions_mut().insert(parts);
        }
        ClientJsonRpcMessage::Notification(n) => {
            n.notification.extensions_mut().insert(parts);
        }
        _ => {}
    }
    if to_server.send(message).await.is_err() {
        return (StatusCode::NOT_FOUND, "Session closed").into_response();
    }
    (StatusCode::ACCEPTED, "Accepted").into_response()
}
