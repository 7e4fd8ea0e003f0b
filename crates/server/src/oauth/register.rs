//! Dynamic Client Registration (RFC 7591). Deprecated by MCP 2026-07-28 in favour of
//! metadata documents, but still what Cursor, Claude Code and VS Code use.
//!
//! Registering the same public client twice returns the first registration (keyed by a hash
//! of its validated metadata), so clients that register on every start do not multiply.
//! Confidential clients always get a new registration, since each gets its own secret.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mcp_oauth_core::analytics::OAuthEvent;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use mcp_oauth_core::oauth::client::{ClientKind, ClientMetadata};
use mcp_oauth_core::oauth::registration::validate_client_metadata;
use mcp_oauth_core::oauth::{ErrorCode, OAuthError};
use mcp_oauth_store::{ClientRow, StoreError};

use crate::http::error::{ApiError, no_store};
use crate::security::Requester;
use crate::security::rate_limit::RateDecision;
use crate::state::AppState;
use mcp_oauth_core::security::rate_limit::{EndpointClass, RateKey};

/// Largest registration request accepted.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

fn metadata_error(d: &'static str) -> ApiError {
    OAuthError::new(ErrorCode::InvalidClientMetadata, d).into()
}

/// The RFC 7591 §3.2.1 response: the stored metadata plus the issued credentials.
fn registration_response(
    metadata: &ClientMetadata,
    client_id: &str,
    issued_at: i64,
    secret: Option<&str>,
) -> Result<Value, ApiError> {
    let mut body = serde_json::to_value(metadata).map_err(ApiError::internal)?;
    body["client_id"] = json!(client_id);
    body["client_id_issued_at"] = json!(issued_at);
    if let Some(s) = secret {
        body["client_secret"] = json!(s);
        // 0: the secret does not expire (RFC 7591 §3.2.1).
        body["client_secret_expires_at"] = json!(0);
    }
    Ok(body)
}

pub async fn register_post(
    State(state): State<AppState>,
    who: Requester,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if !state.settings.registration.enabled {
        return Err(OAuthError::new(
            ErrorCode::AccessDenied,
            "dynamic client registration is disabled on this server",
        )
        .into());
    }
    let key = RateKey::address(EndpointClass::Registration, who.ip);
    let rate = state
        .rate_limits
        .check(&key, state.clock.now_millis())
        .await;
    if let Some(refused @ RateDecision::Refused { .. }) = &rate {
        tracing::warn!(ip = %who.ip, "registration throttled");
        // Reported as a registration flood (first refusal, then doublings), not as a
        // generic rate-limit event.
        state.security.registration_refused(&who);
        let mut r = ApiError::from(OAuthError::new(
            ErrorCode::SlowDown,
            "too many registrations from this address; retry later",
        ))
        .into_response();
        refused.apply(r.headers_mut());
        return Ok(r);
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
    if !is_json {
        return Err(metadata_error("the request body must be application/json"));
    }
    // Read the body ourselves rather than through axum's `Bytes` extractor, whose rejection of
    // an oversized body is a plain-text 413: RFC 7591 §3.2.2 errors are JSON.
    let body = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| metadata_error("the request body is too large or unreadable"))?;
    let value: Value = serde_json::from_slice(&body)
        .map_err(|_| metadata_error("the request body is not valid JSON"))?;
    let obj = value
        .as_object()
        .ok_or_else(|| metadata_error("the request body must be a JSON object"))?;
    let metadata = validate_client_metadata(obj, &state.registration_policy, None)?;
    let stored = serde_json::to_string(&metadata).map_err(ApiError::internal)?;
    let now = state.clock.now();

    let public = !metadata.token_endpoint_auth_method.is_confidential();
    let metadata_hash = public.then(|| {
        let digest = Sha256::digest(stored.as_bytes());
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    });
    if let Some(hash) = &metadata_hash
        && let Some(existing) = state.db.find_client_by_metadata_hash(hash).await?
    {
        state.db.touch_client(&existing.id, now).await?;
        report_registration(&state, &who, &metadata, &existing.id);
        return created(registration_response(
            &metadata,
            &existing.id,
            existing.created_at,
            None,
        )?);
    }

    let secret = (!public).then(crate::random::secret);
    let row = ClientRow {
        id: crate::random::id(),
        kind: ClientKind::Dynamic.as_str().to_owned(),
        metadata: stored,
        secret_hash: secret.as_ref().map(|s| s.hash().as_str().to_owned()),
        metadata_hash: metadata_hash.clone(),
        created_at: now,
        last_used_at: None,
        refresh_after: None,
    };
    match state.db.insert_client(&row).await {
        Ok(()) => {}
        // Two identical registrations raced: answer with the one that won.
        Err(StoreError::Conflict) if metadata_hash.is_some() => {
            let hash = metadata_hash.as_deref().unwrap_or_default();
            let existing = state
                .db
                .find_client_by_metadata_hash(hash)
                .await?
                .ok_or_else(|| {
                    ApiError::internal(anyhow::anyhow!("registration conflict without a row"))
                })?;
            return created(registration_response(
                &metadata,
                &existing.id,
                existing.created_at,
                None,
            )?);
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(client_id = ?row.id, name = ?metadata.client_name.as_deref().unwrap_or("-"), ip = %who.ip, "client registered");
    state
        .analytics
        .oauth(OAuthEvent::ClientRegistered, None, Some(&row.id));
    report_registration(&state, &who, &metadata, &row.id);
    created(registration_response(
        &metadata,
        &row.id,
        now,
        secret.as_ref().map(|s| s.expose()),
    )?)
}

fn created(body: Value) -> Result<Response, ApiError> {
    let mut r = (StatusCode::CREATED, Json(body)).into_response();
    no_store(&mut r);
    Ok(r)
}

/// Count a registration for the churn detector, by client name and redirect URIs.
fn report_registration(state: &AppState, who: &Requester, metadata: &ClientMetadata, id: &str) {
    state.security.registered(
        who,
        id,
        metadata.client_name.as_deref().unwrap_or(""),
        &metadata.redirect_uris,
    );
}
