//! Token introspection (RFC 7662), for confidential clients and resource servers. A client
//! may introspect its own tokens; an operator-registered (pre-registered) confidential client,
//! such as a resource server, may introspect any. Anything else is `{"active": false}`.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use mcp_oauth_core::domain::SecretHash;
use mcp_oauth_core::oauth::OAuthError;
use mcp_oauth_core::oauth::access_token::validate_claims;
use mcp_oauth_core::oauth::client::{Client, ClientKind};

use super::revoke::looks_like_jwt;
use super::token::authenticated_client;
use crate::http::error::{ApiError, no_store};
use crate::http::extract::OAuthForm;
use crate::security::Requester;
use crate::state::AppState;

fn may_see(caller: &Client, token_client: &str) -> bool {
    caller.kind == ClientKind::Preregistered || caller.id.as_str() == token_client
}

async fn introspect(state: &AppState, caller: &Client, token: &str) -> Result<Value, ApiError> {
    let inactive = json!({"active": false});
    let now = state.clock.now();
    if looks_like_jwt(token) {
        let Ok(claims) = state.keys.verify_or_reload(token, now).await else {
            return Ok(inactive);
        };
        let audience_ok = state
            .settings
            .resources
            .iter()
            .any(|r| r.as_str() == claims.aud);
        if !audience_ok
            || validate_claims(&claims, &state.settings.issuer, &claims.aud, now, 0).is_err()
        {
            return Ok(inactive);
        }
        if state
            .revocations
            .is_revoked(&claims.jti, claims.gid.as_deref())
            || !may_see(caller, &claims.client_id)
        {
            return Ok(inactive);
        }
        // Authoritative check of the grant: the in-memory list may lag a poll behind.
        if let Some(gid) = &claims.gid
            && !state.db.grant_is_active(gid, now).await?
        {
            return Ok(inactive);
        }
        return Ok(json!({
            "active": true, "token_type": "Bearer", "scope": claims.scope, "client_id": claims.client_id,
            "sub": claims.sub, "aud": claims.aud, "iss": claims.iss, "exp": claims.exp, "iat": claims.iat,
            "nbf": claims.nbf, "jti": claims.jti,
        }));
    }
    let Some(row) = state
        .db
        .find_refresh_token(SecretHash::of(token).as_str())
        .await?
    else {
        return Ok(inactive);
    };
    let live = row.revoked_at.is_none()
        && row.grant_revoked_at.is_none()
        && row.used_at.is_none()
        && row.expires_at > now;
    if !live || !may_see(caller, &row.client_id) {
        return Ok(inactive);
    }
    Ok(json!({
        "active": true, "token_type": "refresh_token", "scope": row.scope, "client_id": row.client_id,
        "sub": row.user_id.unwrap_or_else(|| row.client_id.clone()), "aud": row.resource,
        "iss": state.settings.issuer, "exp": row.expires_at,
    }))
}

pub async fn introspect_post(
    State(state): State<AppState>,
    who: Requester,
    headers: HeaderMap,
    form: OAuthForm,
) -> Result<Response, ApiError> {
    let token = form.single("token")?.to_owned();
    let caller = authenticated_client(&state, &who, &headers, &form).await?;
    if caller.is_public() {
        return Err(
            OAuthError::invalid_client("introspection requires a confidential client").into(),
        );
    }
    let body = introspect(&state, &caller, &token).await?;
    let mut r = Json(body).into_response();
    no_store(&mut r);
    Ok(r)
}
