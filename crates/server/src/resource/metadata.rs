//! RFC 9728 Protected Resource Metadata documents.

use std::sync::Arc;

use axum::Json;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use mcp_oauth_core::resource::metadata::ProtectedResourceMetadata;

use super::ProtectedResource;

pub fn document(protected: &ProtectedResource, issuer: &str) -> ProtectedResourceMetadata {
    ProtectedResourceMetadata {
        resource: protected.resource.as_str().to_owned(),
        authorization_servers: vec![issuer.to_owned()],
        scopes_supported: protected
            .base_scopes
            .iter()
            .filter(|s| *s != mcp_oauth_core::domain::scope::OFFLINE_ACCESS)
            .map(str::to_owned)
            .collect(),
        bearer_methods_supported: ["header"],
        resource_name: Some("mcp-oauth MCP server".to_owned()),
    }
}

pub fn response(protected: &Arc<ProtectedResource>, issuer: &str) -> Response {
    let mut r = Json(document(protected, issuer)).into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    r
}
