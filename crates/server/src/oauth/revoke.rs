//! Token revocation (RFC 7009). The client authenticates like at the token endpoint; a token
//! that is unknown, already dead, or another client's is answered with 200 all the same
//! (§2.2), and revoked only when it is the caller's own.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use mcp_oauth_core::analytics::OAuthEvent;

use mcp_oauth_core::domain::SecretHash;

use super::token::authenticated_client;
use crate::http::error::{ApiError, no_store};
use crate::http::extract::OAuthForm;
use crate::security::Requester;
use crate::state::AppState;

/// JWTs have three dot-separated parts; our refresh tokens have none.
pub fn looks_like_jwt(token: &str) -> bool {
    token.bytes().filter(|b| *b == b'.').count() == 2
}

pub async fn revoke_post(
    State(state): State<AppState>,
    who: Requester,
    headers: HeaderMap,
    form: OAuthForm,
) -> Result<Response, ApiError> {
    let token = form.single("token")?.to_owned();
    let client = authenticated_client(&state, &who, &headers, &form).await?;
    let now = state.clock.now();

    if looks_like_jwt(&token) {
        // An access token: revoke just it (its refresh token stays valid, RFC 7009 §2.1).
        if let Ok(claims) = state.keys.verify_or_reload(&token, now).await
            && claims.client_id == client.id.as_str()
            && claims.exp > now
        {
            state
                .db
                .revoke_access_token(&claims.jti, now, claims.exp)
                .await?;
            state.revocations.revoke_token(&claims.jti, claims.exp);
            tracing::info!(client_id = ?client.id.as_str(), "access token revoked");
            state.analytics.oauth(
                OAuthEvent::TokenRevoked,
                Some(claims.sub.as_str()).filter(|s| *s != client.id.as_str()),
                Some(client.id.as_str()),
            );
        }
    } else if let Some(row) = state
        .db
        .find_refresh_token(SecretHash::of(&token).as_str())
        .await?
        && row.client_id == client.id.as_str()
    {
        // A refresh token: revoke its grant, which takes the access tokens with it (§2.1).
        state
            .db
            .revoke_grant(
                &row.grant_id,
                now,
                "revoked_by_client",
                state.revocation_ttl(),
            )
            .await?;
        state
            .revocations
            .revoke_grant(&row.grant_id, now + state.revocation_ttl());
        tracing::info!(client_id = ?client.id.as_str(), grant_id = ?row.grant_id, "grant revoked through its refresh token");
        state.analytics.oauth(
            OAuthEvent::TokenRevoked,
            row.user_id.as_deref(),
            Some(client.id.as_str()),
        );
    }
    let mut r = StatusCode::OK.into_response();
    no_store(&mut r);
    Ok(r)
}
