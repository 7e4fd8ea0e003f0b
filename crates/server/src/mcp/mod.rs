//! The protected MCP server: Streamable HTTP at `/mcp` (rmcp), the legacy HTTP+SSE transport
//! at `/sse` + `/message`, their RFC 9728 metadata, and the layers in front of them.
//!
//! Request path, outermost first: CORS → bearer (authenticate, check scopes, attach the
//! `Principal`) → session owner check and session bounds (`sessions`) → rmcp (which also
//! checks `Host` and `Origin` against DNS rebinding; `rebinding_guard` does the same for the
//! legacy routes) → the tool.

pub mod legacy_sse;
pub mod server;
pub mod sessions;
pub mod tools;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::Value;
use tower_http::cors::{AllowOrigin, CorsLayer};

use mcp_oauth_core::domain::ScopeSet;
use mcp_oauth_core::resource::metadata::metadata_url;

use crate::http::middleware::close_if_body_unread;
use crate::resource::bearer::{BearerLayer, BearerLayerState, OperationScopes, require_bearer};
use crate::resource::{ProtectedResource, metadata};
use crate::state::AppState;
use server::{McpServer, Served};
use sessions::{SessionGuard, session_guard};

/// The protected endpoints: Streamable HTTP first (the default resource), then legacy SSE.
pub fn protected_resources(state: &AppState) -> (Arc<ProtectedResource>, Arc<ProtectedResource>) {
    let make = |i: usize| {
        let resource = state.settings.resources[i].clone();
        Arc::new(ProtectedResource {
            metadata_url: metadata_url(resource.as_str()),
            accepts_client_tokens: state.settings.client_token_resources.contains(&resource),
            resource,
            base_scopes: state.settings.mcp_base_scopes.clone(),
        })
    };
    (make(0), make(1))
}

/// Scopes a request's `tools/call` messages need, from `[mcp.tool_scopes]`.
fn operation_scopes(state: &AppState) -> Option<OperationScopes> {
    let table = state.settings.mcp_tool_scopes.clone();
    if table.is_empty() {
        return None;
    }
    Some(Arc::new(move |body: &Value| {
        let messages: Vec<&Value> = match body {
            Value::Array(batch) => batch.iter().collect(),
            single => vec![single],
        };
        messages
            .into_iter()
            .filter(|m| m["method"] == "tools/call")
            .filter_map(|m| {
                m["params"]["name"]
                    .as_str()
                    .and_then(|name| table.get(name))
            })
            .fold(ScopeSet::default(), |acc, s| acc.union(s))
    }))
}

fn cors(origins: &[String]) -> CorsLayer {
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    let h = HeaderName::from_static;
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            h("mcp-session-id"),
            h("mcp-protocol-version"),
            h("mcp-method"),
            h("mcp-name"),
            h("last-event-id"),
        ])
        .expose_headers([
            header::WWW_AUTHENTICATE,
            h("mcp-session-id"),
            h("mcp-protocol-version"),
        ])
        .max_age(std::time::Duration::from_secs(600))
}

/// What the legacy routes accept against DNS rebinding, as rmcp is configured for `/mcp`.
#[derive(Clone)]
struct RebindingGuard {
    /// Our public host name (any port).
    host: Arc<str>,
    /// The origins allowed to call us, when the configuration lists them; `None` for `*`.
    origins: Option<Arc<[String]>>,
}

/// DNS-rebinding protection for the routes rmcp does not serve (MCP transports, "Security
/// Warning": validate `Origin`, answer 403 when it is invalid): the `Host` must be ours, and
/// an `Origin`, when present, one of those allowed.
async fn rebinding_guard(
    State(guard): State<RebindingGuard>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let name = presented
        .rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map_or(presented, |(h, _)| h);
    if !name
        .trim_matches(['[', ']'])
        .eq_ignore_ascii_case(guard.host.trim_matches(['[', ']']))
    {
        let mut refusal = (
            StatusCode::FORBIDDEN,
            "Forbidden: Host header is not allowed",
        )
            .into_response();
        close_if_body_unread(request.headers(), &mut refusal);
        return refusal;
    }
    if let (Some(allowed), Some(origin)) = (&guard.origins, request.headers().get(header::ORIGIN))
        && !origin
            .to_str()
            .is_ok_and(|o| allowed.iter().any(|a| a.eq_ignore_ascii_case(o)))
    {
        return (
            StatusCode::FORBIDDEN,
            "Forbidden: Origin header is not allowed",
        )
            .into_response();
    }
    next.run(request).await
}

/// The MCP routes, under the issuer's path.
pub fn router(state: &AppState) -> Router<AppState> {
    let settings = &state.settings;
    let server = Served {
        inner: McpServer::new(&settings.issuer),
        recorder: state.analytics.clone(),
    };
    let host: Arc<str> = settings.public_url.host_str().unwrap_or("localhost").into();
    let mut config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(settings.mcp.stateful)
        .with_json_response(settings.mcp.json_response)
        .with_allowed_hosts([host.to_string()])
        .with_cancellation_token(state.shutdown.child_token());
    let origins = (!settings.cors_origins.iter().any(|o| o == "*")).then(|| {
        let mut origins = settings.cors_origins.clone();
        origins.push(state.origin.to_string());
        origins
    });
    if let Some(origins) = &origins {
        config = config
            .with_allowed_origins(origins.clone())
            .enforce_origin_validation();
    }
    let factory = {
        let server = server.clone();
        move || Ok(server.clone())
    };
    let streamable = if settings.mcp.stateful {
        Router::new().nest_service(
            "/mcp",
            StreamableHttpService::new(factory, state.mcp_sessions.clone(), config),
        )
    } else {
        Router::new().nest_service(
            "/mcp",
            StreamableHttpService::new(factory, Arc::new(NeverSessionManager::default()), config),
        )
    }
    .layer(from_fn_with_state(
        SessionGuard {
            sessions: state.mcp_sessions.clone(),
            stateful: settings.mcp.stateful,
        },
        session_guard,
    ));
    let legacy = legacy_sse::router(
        server,
        settings.base_path(),
        state.shutdown.child_token(),
        state.mcp_sessions.clone(),
    )
    .layer(from_fn_with_state(
        RebindingGuard {
            host,
            origins: origins.map(Into::into),
        },
        rebinding_guard,
    ));

    let (mcp, sse) = protected_resources(state);
    let (streamable, legacy) = if settings.mcp.open {
        (streamable, legacy)
    } else {
        let bearer = |protected: Arc<ProtectedResource>| -> BearerLayerState {
            Arc::new(BearerLayer {
                app: state.clone(),
                protected,
                operation_scopes: operation_scopes(state),
            })
        };
        (
            streamable.layer(from_fn_with_state(bearer(mcp), require_bearer)),
            legacy.layer(from_fn_with_state(bearer(sse), require_bearer)),
        )
    };
    Router::new()
        .merge(streamable)
        .merge(legacy)
        .layer(cors(&settings.cors_origins))
}

/// RFC 9728 documents at the origin's root: path-inserted for each endpoint, and the root
/// one (for the Streamable HTTP endpoint), which clients probe last.
pub fn well_known_router(state: &AppState) -> Router<AppState> {
    let (mcp, sse) = protected_resources(state);
    let issuer: Arc<str> = state.settings.issuer.clone().into();
    let doc = |p: Arc<ProtectedResource>| {
        let issuer = issuer.clone();
        get(move || {
            let (p, issuer) = (p.clone(), issuer.clone());
            async move { metadata::response(&p, &issuer) }
        })
    };
    let path_of = |p: &ProtectedResource| {
        p.metadata_url
            .split_once("/.well-known/")
            .map(|(_, rest)| format!("/.well-known/{rest}"))
            .unwrap_or_default()
    };
    Router::new()
        .route(&path_of(&mcp), doc(mcp.clone()))
        .route(&path_of(&sse), doc(sse))
        .route("/.well-known/oauth-protected-resource", doc(mcp))
        .layer(crate::oauth::cors(&state.settings.cors_origins))
}
