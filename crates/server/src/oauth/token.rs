//! The token endpoint (OAuth 2.1 §3.2): authenticate the client, then one function per grant.
//! Every response, success or error, carries `Cache-Control: no-store`.

use mcp_oauth_core::analytics::OAuthEvent;
use mcp_oauth_core::security::events::{SecurityEvent, SecurityEventKind};
use mcp_oauth_core::security::rate_limit::{EndpointClass, RateKey};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use mcp_oauth_core::UnixTime;
use mcp_oauth_core::domain::scope::OFFLINE_ACCESS;
use mcp_oauth_core::domain::{CodeChallenge, ResourceUri, ScopeSet, SecretHash, SecretToken};
use mcp_oauth_core::oauth::access_token::{MintAccessToken, mint_claims};
use mcp_oauth_core::oauth::client::{Client, GrantType};
use mcp_oauth_core::oauth::client_auth::{authenticate_client, parse_credentials};
use mcp_oauth_core::oauth::token::authorization_code::{
    CodeExchange, CodeRejection, StoredCode, check_code_exchange,
};
use mcp_oauth_core::oauth::token::client_credentials::check_client_credentials;
use mcp_oauth_core::oauth::token::refresh_token::{
    RefreshAction, RefreshRejection, StoredRefreshToken, check_refresh, open_successor,
    seal_successor,
};
use mcp_oauth_core::oauth::token::{TokenRequest, TokenResponse, parse_token_request};
use mcp_oauth_core::oauth::{ErrorCode, OAuthError};
use mcp_oauth_store::{NewRefreshToken, RefreshRow, RotateOutcome};

use super::clients::{self, ClientLookupError};
use crate::http::error::{ApiError, no_store};
use crate::http::extract::OAuthForm;
use crate::security::Requester;
use crate::security::rate_limit::RateDecision;
use crate::state::AppState;

/// Authenticate the client a request at the token, revocation or introspection endpoint
/// claims to be.
pub async fn authenticated_client(
    state: &AppState,
    who: &Requester,
    headers: &HeaderMap,
    form: &OAuthForm,
) -> Result<Client, ApiError> {
    if form.count("client_id") > 1 || form.count("client_secret") > 1 {
        return Err(OAuthError::invalid_request("client credentials are repeated").into());
    }
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let presented = parse_credentials(
        authorization,
        form.get("client_id"),
        form.get("client_secret"),
    )?;
    let client = match clients::resolve(state, presented.client_id(), who).await {
        Ok(c) => c,
        Err(ClientLookupError::Throttled) => {
            return Err(OAuthError::new(
                ErrorCode::SlowDown,
                "too many client metadata document fetches from this address; retry in a minute",
            )
            .into());
        }
        Err(ClientLookupError::NotFound(_)) => {
            // 401 invalid_client: clients such as Claude register again on this answer.
            return Err(OAuthError::invalid_client("unknown client").into());
        }
        Err(ClientLookupError::Internal(e)) => return Err(ApiError::Internal(e)),
    };
    if let Err(e) = authenticate_client(&presented, &client) {
        state
            .security
            .observed(who, None, Some(client.id.as_str()), |at| {
                SecurityEvent::invalid_client_credentials(at, presented.method().as_str())
            });
        return Err(e.into());
    }
    Ok(client)
}

pub async fn token_post(
    State(state): State<AppState>,
    who: Requester,
    headers: HeaderMap,
    form: OAuthForm,
) -> Result<Response, ApiError> {
    // Counted against the client the request claims to be (a wrong claim only spends the
    // claimer's own bucket: the address is part of the key).
    let claimed = parse_credentials(
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
        form.get("client_id"),
        form.get("client_secret"),
    )
    .ok()
    .map(|c| c.client_id().to_owned());
    let key = RateKey {
        class: EndpointClass::Token,
        client_id: claimed,
        user_id: None,
        ip: who.ip,
    };
    let rate = crate::security::rate_limit(&state, &who, &key).await;
    if let Some(refused @ RateDecision::Refused { retry_after, .. }) = &rate {
        let mut r = (
            StatusCode::TOO_MANY_REQUESTS,
            Json(serde_json::json!({
                "error": "slow_down",
                "error_description": format!(
                    "too many token requests from this client and address; retry after {retry_after} s"
                ),
            })),
        )
            .into_response();
        no_store(&mut r);
        refused.apply(r.headers_mut());
        return Ok(r);
    }
    let mut authenticated = None;
    let result = grant(&state, &who, &headers, &form, &mut authenticated).await;
    match &result {
        Err(ApiError::OAuth(e)) => state.analytics.oauth(
            OAuthEvent::TokenFailed {
                grant_type: grant_type_name(form.get("grant_type")),
                error: e.code.as_str(),
            },
            None,
            authenticated.as_deref(),
        ),
        Err(ApiError::Internal(_)) | Ok(_) => {}
    }
    result.map(|mut r| {
        if let Some(rate) = &rate {
            rate.apply(r.headers_mut());
        }
        r.extensions_mut().insert(crate::analytics::Attribution {
            user_id: None,
            client_id: authenticated,
        });
        r
    })
}

/// A grant type as recorded: one of ours, or `other` (so that junk cannot add rows).
fn grant_type_name(presented: Option<&str>) -> &'static str {
    match presented {
        Some("authorization_code") => "authorization_code",
        Some("refresh_token") => "refresh_token",
        Some("client_credentials") => "client_credentials",
        Some(_) => "other",
        None => "none",
    }
}

/// The token endpoint's work; `authenticated` is set to the client id once the client has
/// authenticated.
async fn grant(
    state: &AppState,
    who: &Requester,
    headers: &HeaderMap,
    form: &OAuthForm,
    authenticated: &mut Option<String>,
) -> Result<Response, ApiError> {
    let request = parse_token_request(&form.0)?;
    let client = authenticated_client(state, who, headers, form).await?;
    *authenticated = Some(client.id.as_str().to_owned());
    let response = match request {
        TokenRequest::AuthorizationCode {
            code,
            redirect_uri,
            code_verifier,
            resource,
        } => {
            authorization_code(
                state,
                who,
                &client,
                &code,
                redirect_uri.as_deref(),
                code_verifier.as_deref(),
                &resource,
            )
            .await?
        }
        TokenRequest::RefreshToken {
            refresh_token,
            scope,
            resource,
        } => {
            refresh(
                state,
                who,
                &client,
                &refresh_token,
                scope.as_deref(),
                &resource,
            )
            .await?
        }
        TokenRequest::ClientCredentials { scope, resource } => {
            client_credentials(state, &client, scope.as_deref(), &resource).await?
        }
    };
    // Tokens have been issued (a code consumed, a refresh token rotated): a failure now must
    // not turn into an error response, or the client's retry would look like a replay.
    if let Err(e) = state
        .db
        .touch_client(client.id.as_str(), state.clock.now())
        .await
    {
        tracing::warn!(client_id = ?client.id.as_str(), error = ?e.to_string(), "recording the client's last use failed");
    }
    let mut r = Json(response).into_response();
    no_store(&mut r);
    Ok(r)
}

/// The grant a code or refresh token belongs to.
struct GrantOf<'a> {
    id: &'a str,
    user_id: Option<&'a str>,
}

struct Issue<'a> {
    subject: &'a str,
    client: &'a Client,
    scope: &'a ScopeSet,
    resource: &'a ResourceUri,
    grant_id: &'a str,
    now: UnixTime,
}

fn access_token(state: &AppState, i: &Issue<'_>) -> Result<String, ApiError> {
    let claims = mint_claims(MintAccessToken {
        issuer: &state.settings.issuer,
        subject: i.subject,
        resource: i.resource,
        client_id: i.client.id.as_str(),
        scope: i.scope,
        grant_id: Some(i.grant_id),
        auth_time: None,
        now: i.now,
        lifetime: state.settings.tokens.access_ttl,
        jti: crate::random::id(),
    });
    state.keys.sign(&claims).map_err(ApiError::Internal)
}

/// A new refresh token: the secret for the client, its 32 random bytes (to seal it for a
/// retry, see `refresh`), and the row to store.
fn new_refresh(
    state: &AppState,
    grant_id: &str,
    parent: Option<&str>,
    now: UnixTime,
) -> (SecretToken, [u8; 32], NewRefreshToken) {
    let random = crate::random::bytes::<32>();
    let secret = SecretToken::from_random(random);
    let row = NewRefreshToken {
        id: crate::random::id(),
        token_hash: secret.hash().as_str().to_owned(),
        grant_id: grant_id.to_owned(),
        parent_id: parent.map(str::to_owned),
        created_at: now,
        expires_at: now + state.settings.tokens.refresh_ttl,
    };
    (secret, random, row)
}

/// Revoke a grant because of a replay, publish it at once, and log it as a security event.
async fn revoke_for_replay(
    state: &AppState,
    who: &Requester,
    grant: &GrantOf<'_>,
    reason: &str,
    client: &Client,
) -> Result<(), ApiError> {
    let refresh = reason == "refresh_token_reused";
    let event = if refresh {
        OAuthEvent::RefreshReuseDetected
    } else {
        OAuthEvent::CodeReplayDetected
    };
    let grant_id = grant.id;
    state.analytics.oauth(event, None, Some(client.id.as_str()));
    let now = state.clock.now();
    let revoked = state
        .db
        .revoke_grant(grant_id, now, reason, state.revocation_ttl())
        .await;
    state
        .security
        .observed(who, grant.user_id, Some(client.id.as_str()), |at| {
            if refresh {
                SecurityEvent::refresh_reuse(at, revoked.is_ok())
            } else {
                SecurityEvent::code_replay(at, revoked.is_ok())
            }
        });
    revoked?;
    state
        .revocations
        .revoke_grant(grant_id, now + state.revocation_ttl());
    tracing::warn!(security_event = reason, client_id = ?client.id.as_str(), grant_id, "replay detected; grant revoked");
    Ok(())
}

async fn authorization_code(
    state: &AppState,
    who: &Requester,
    client: &Client,
    code: &str,
    redirect_uri: Option<&str>,
    code_verifier: Option<&str>,
    resource: &[String],
) -> Result<TokenResponse, ApiError> {
    let code_hash = SecretHash::of(code);
    let row = state
        .db
        .find_code(code_hash.as_str())
        .await?
        .ok_or_else(|| OAuthError::invalid_grant("authorization code is invalid"))?;
    if row.grant_revoked_at.is_some() {
        return Err(OAuthError::invalid_grant("authorization code has been revoked").into());
    }
    let stored = StoredCode {
        client_id: row.client_id.clone(),
        redirect_uri: row.redirect_uri.clone(),
        redirect_uri_explicit: row.redirect_uri_explicit != 0,
        code_challenge: CodeChallenge::from_stored(row.code_challenge.clone()),
        scope: ScopeSet::parse(&row.scope)
            .map_err(|_| ApiError::internal(anyhow::anyhow!("stored scope is invalid")))?,
        resource: ResourceUri::parse(&row.resource)
            .map_err(|_| ApiError::internal(anyhow::anyhow!("stored resource is invalid")))?,
        expires_at: row.expires_at,
        consumed: row.consumed_at.is_some(),
    };
    let now = state.clock.now();
    let exchange = CodeExchange {
        client_id: client.id.as_str(),
        redirect_uri,
        code_verifier,
        resource,
    };
    let grant = GrantOf {
        id: &row.grant_id,
        user_id: row.user_id.as_deref(),
    };
    match check_code_exchange(&stored, &exchange, now) {
        Ok(()) => {}
        Err(CodeRejection::Replayed) => {
            revoke_for_replay(state, who, &grant, "authorization_code_replayed", client).await?;
            return Err(OAuthError::invalid_grant("authorization code was already used").into());
        }
        Err(CodeRejection::Rejected(e)) => return Err(e.into()),
        Err(CodeRejection::Suspicious(kind, e)) => {
            state
                .security
                .observed(who, grant.user_id, Some(client.id.as_str()), |at| {
                    if kind == SecurityEventKind::PkceMismatch {
                        SecurityEvent::pkce_mismatch(at, "S256")
                    } else {
                        SecurityEvent::redirect_mismatch(at, "token", redirect_uri.unwrap_or(""))
                    }
                });
            return Err(e.into());
        }
    }

    // Refresh tokens for clients registered for the grant, or that asked for offline_access.
    let wants_refresh =
        client.allows_grant(GrantType::RefreshToken) || stored.scope.contains(OFFLINE_ACCESS);
    let refresh = wants_refresh.then(|| new_refresh(state, &row.grant_id, None, now));
    // Signed before the code is consumed: once it is, the response must go out.
    let subject = row.user_id.as_deref().unwrap_or(client.id.as_str());
    let access = access_token(
        state,
        &Issue {
            subject,
            client,
            scope: &stored.scope,
            resource: &stored.resource,
            grant_id: &row.grant_id,
            now,
        },
    )?;
    let grant_expires_at = now
        + refresh
            .as_ref()
            .map_or(state.settings.tokens.access_ttl, |_| {
                state.settings.tokens.refresh_ttl
            });
    if !state
        .db
        .redeem_code(
            code_hash.as_str(),
            now,
            refresh.as_ref().map(|r| &r.2),
            grant_expires_at,
        )
        .await?
    {
        // A concurrent request consumed it between our read and our write.
        revoke_for_replay(state, who, &grant, "authorization_code_replayed", client).await?;
        return Err(OAuthError::invalid_grant("authorization code was already used").into());
    }
    tracing::info!(client_id = ?client.id.as_str(), grant_id = ?row.grant_id, "tokens issued for an authorization code");
    // Only S256 challenges are accepted (pkce.rs), so a stored one is S256.
    let pkce_method = if stored.code_challenge.as_str().is_empty() {
        "none"
    } else {
        "S256"
    };
    state.analytics.oauth(
        OAuthEvent::CodeExchanged { pkce_method },
        row.user_id.as_deref(),
        Some(client.id.as_str()),
    );
    if let Some(user) = row.user_id.as_deref() {
        state
            .security
            .user_seen(who, user, Some(client.id.as_str()));
    }
    Ok(TokenResponse {
        access_token: access,
        token_type: "Bearer",
        expires_in: state.settings.tokens.access_ttl,
        refresh_token: refresh.map(|r| r.0.expose().to_owned()),
        scope: stored.scope.to_string(),
    })
}

fn stored_refresh(row: &RefreshRow) -> Result<StoredRefreshToken, ApiError> {
    Ok(StoredRefreshToken {
        client_id: row.client_id.clone(),
        scope: ScopeSet::parse(&row.scope)
            .map_err(|_| ApiError::internal(anyhow::anyhow!("stored scope is invalid")))?,
        resource: ResourceUri::parse(&row.resource)
            .map_err(|_| ApiError::internal(anyhow::anyhow!("stored resource is invalid")))?,
        expires_at: row.expires_at,
        used_at: row.used_at,
        revoked: row.revoked_at.is_some() || row.grant_revoked_at.is_some(),
        child_used: row.used_children > 0,
    })
}

async fn refresh(
    state: &AppState,
    who: &Requester,
    client: &Client,
    token: &str,
    scope: Option<&str>,
    resource: &[String],
) -> Result<TokenResponse, ApiError> {
    let hash = SecretHash::of(token);
    // Two passes at most: a rotation lost to a concurrent request is decided again with the
    // token now marked used, which lands in the grace branch.
    for _ in 0..2 {
        let row = state
            .db
            .find_refresh_token(hash.as_str())
            .await?
            .ok_or_else(|| OAuthError::invalid_grant("refresh token is invalid"))?;
        let stored = stored_refresh(&row)?;
        let now = state.clock.now();
        let (action, access_scope) = match check_refresh(
            &stored,
            client.id.as_str(),
            scope,
            resource,
            now,
            state.settings.tokens.refresh_grace,
        ) {
            Ok(ok) => ok,
            Err(RefreshRejection::Reused) => {
                let grant = GrantOf {
                    id: &row.grant_id,
                    user_id: row.user_id.as_deref(),
                };
                revoke_for_replay(state, who, &grant, "refresh_token_reused", client).await?;
                return Err(OAuthError::invalid_grant("refresh token was already used").into());
            }
            Err(RefreshRejection::Rejected(e)) => {
                if e.code == ErrorCode::InvalidScope {
                    // More than the grant holds: a refresh cannot widen a grant.
                    state.security.observed(
                        who,
                        row.user_id.as_deref(),
                        Some(client.id.as_str()),
                        |at| {
                            SecurityEvent::scope_escalation(
                                at,
                                scope.unwrap_or(""),
                                &stored.scope.to_string(),
                            )
                        },
                    );
                }
                return Err(e.into());
            }
        };
        // Signed before anything is written: nothing after the point of issue may fail.
        let subject = row.user_id.as_deref().unwrap_or(client.id.as_str());
        let access = access_token(
            state,
            &Issue {
                subject,
                client,
                scope: &access_scope,
                resource: &stored.resource,
                grant_id: &row.grant_id,
                now,
            },
        )?;
        let successor = match action {
            RefreshAction::Rotate => {
                let (secret, random, child) = new_refresh(state, &row.grant_id, Some(&row.id), now);
                let sealed = seal_successor(token, &random);
                match state
                    .db
                    .rotate_refresh_token(&row.id, now, &child, &sealed)
                    .await?
                {
                    RotateOutcome::Rotated => secret,
                    // A concurrent request rotated it first: decide again, as a retry.
                    RotateOutcome::LostRace => continue,
                }
            }
            RefreshAction::ReturnSuccessor => {
                let Some(successor) = issued_successor(state, &row, token).await? else {
                    // Rotated before seals were kept, or the successor is gone: nothing to
                    // hand out again, but nothing suggests theft either.
                    return Err(OAuthError::invalid_grant("refresh token was already used").into());
                };
                tracing::info!(client_id = ?client.id.as_str(), grant_id = ?row.grant_id, "refresh token retried within the grace period; successor returned again");
                successor
            }
        };
        state.analytics.oauth(
            OAuthEvent::TokenRefreshed,
            row.user_id.as_deref(),
            Some(client.id.as_str()),
        );
        if let Some(user) = row.user_id.as_deref() {
            state
                .security
                .user_seen(who, user, Some(client.id.as_str()));
        }
        return Ok(TokenResponse {
            access_token: access,
            token_type: "Bearer",
            expires_in: state.settings.tokens.access_ttl,
            refresh_token: Some(successor.expose().to_owned()),
            scope: access_scope.to_string(),
        });
    }
    Err(OAuthError::invalid_grant("refresh token is being used concurrently").into())
}

/// The successor `row` was rotated to, opened with the token presented again, if it is still
/// the live child of `row` (not revoked: revocation of the grant is checked by the caller).
async fn issued_successor(
    state: &AppState,
    row: &RefreshRow,
    presented: &str,
) -> Result<Option<SecretToken>, ApiError> {
    let Some(successor) = row
        .sealed_successor
        .as_deref()
        .and_then(|sealed| open_successor(presented, sealed))
    else {
        return Ok(None);
    };
    let child = state
        .db
        .find_refresh_token(successor.hash().as_str())
        .await?;
    Ok(child
        .filter(|c| c.parent_id.as_deref() == Some(row.id.as_str()) && c.revoked_at.is_none())
        .map(|_| successor))
}

async fn client_credentials(
    state: &AppState,
    client: &Client,
    scope: Option<&str>,
    resource: &[String],
) -> Result<TokenResponse, ApiError> {
    let (scope, resource) = check_client_credentials(
        client,
        scope,
        resource,
        &state.authorize_policy,
        &state.settings.client_token_resources,
    )?;
    let now = state.clock.now();
    let grant_id = crate::random::id();
    let ttl = state.settings.tokens.access_ttl;
    state
        .db
        .insert_bare_grant(
            &grant_id,
            client.id.as_str(),
            &scope.to_string(),
            resource.as_str(),
            now,
            now + ttl,
        )
        .await?;
    let access = access_token(
        state,
        &Issue {
            subject: client.id.as_str(),
            client,
            scope: &scope,
            resource: &resource,
            grant_id: &grant_id,
            now,
        },
    )?;
    state.analytics.oauth(
        OAuthEvent::ClientCredentialsGranted,
        None,
        Some(client.id.as_str()),
    );
    Ok(TokenResponse {
        access_token: access,
        token_type: "Bearer",
        expires_in: ttl,
        refresh_token: None,
        scope: scope.to_string(),
    })
}
