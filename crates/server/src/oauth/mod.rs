//! The authorization server's endpoints. Handlers are thin: they parse, load, call the pure
//! decision in `mcp_oauth_core::oauth`, persist, and answer.

pub mod authorize;
pub mod cimd;
pub mod clients;
pub mod introspect;
pub mod metadata;
pub mod register;
pub mod revoke;
pub mod token;

use axum::Router;
use axum::http::{HeaderValue, Method};
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

use crate::state::AppState;

/// CORS for browser-based clients such as MCP Inspector: any origin (or the configured ones),
/// no credentials. Preflights are answered by the layer.
pub fn cors(origins: &[String]) -> CorsLayer {
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers(Any)
        .expose_headers(Any)
        .max_age(std::time::Duration::from_secs(600))
}

/// Endpoints under the issuer's path. Those that need the database answer 503 at once
/// while it is known to be unreachable; the JWKS is served from memory and stays up.
pub fn router(state: &AppState) -> Router<AppState> {
    let health = state.db_health.clone();
    let api = Router::new()
        .route("/token", post(token::token_post))
        .route("/register", post(register::register_post))
        .route("/revoke", post(revoke::revoke_post))
        .route("/introspect", post(introspect::introspect_post))
        .route_layer(from_fn_with_state(
            health.clone(),
            crate::db_health::api_needs_database,
        ))
        .route("/jwks.json", get(metadata::jwks_get))
        .layer(cors(&state.settings.cors_origins));
    Router::new()
        .route(
            "/authorize",
            get(authorize::authorize_get).post(authorize::authorize_post),
        )
        .route_layer(from_fn_with_state(
            health,
            crate::db_health::page_needs_database,
        ))
        .merge(api)
}

/// Discovery documents at the origin's root, with the issuer's path inserted (RFC 8414 §3.1,
/// OpenID Connect Discovery as MCP 2025-11-25 probes it).
pub fn well_known_router(state: &AppState) -> Router<AppState> {
    let base = state.settings.base_path();
    let mut router = Router::new()
        .route(
            &format!("/.well-known/oauth-authorization-server{base}"),
            get(metadata::metadata_get),
        )
        .route(
            &format!("/.well-known/openid-configuration{base}"),
            get(metadata::metadata_get),
        );
    if !base.is_empty() {
        // The OpenID Connect form appends instead of inserting.
        router = router.route(
            &format!("{base}/.well-known/openid-configuration"),
            get(metadata::metadata_get),
        );
    }
    router.layer(cors(&state.settings.cors_origins))
}
