//! Discovery documents: RFC 8414 authorization server metadata, the same document as OpenID
//! Connect discovery, and the JWKS.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use mcp_oauth_core::oauth::metadata::{MetadataInput, authorization_server_metadata};

use crate::state::AppState;

fn cacheable(mut r: Response) -> Response {
    // The issuer comes from configuration, never from the Host header, so caching is safe.
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    r
}

pub async fn metadata_get(State(state): State<AppState>) -> Response {
    let doc = authorization_server_metadata(MetadataInput {
        issuer: &state.settings.issuer,
        scopes_supported: state
            .settings
            .supported_scopes
            .iter()
            .map(str::to_owned)
            .collect(),
        signing_alg: state.keys.signing_alg(),
        registration_enabled: state.settings.registration.enabled,
        cimd_enabled: state.settings.cimd.enabled,
        client_credentials_enabled: !state.settings.client_token_resources.is_empty(),
    });
    cacheable(Json(doc).into_response())
}

pub async fn jwks_get(State(state): State<AppState>) -> Response {
    let mut r = Json(state.keys.jwks()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/jwk-set+json"),
    );
    cacheable(r)
}
