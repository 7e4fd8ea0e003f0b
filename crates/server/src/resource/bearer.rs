//! The bearer layer in front of every MCP endpoint (MCP authorization, "Access Token Usage";
//! RFC 6750 §3; RFC 8707 audience). It runs before the MCP service sees anything:
//!
//! ```text
//!   no Authorization (or another scheme) ─> 401 Bearer resource_metadata=…, scope=…
//!   token in the query / repeated header ─> 400 error="invalid_request"
//!   malformed, bad signature, wrong issuer,
//!   expired, another resource's, revoked,
//!   client-only where users are required ─> 401 error="invalid_token"
//!   lacks a scope the operation needs ───> 403 error="insufficient_scope", scope=<all needed>
//!   otherwise ───────────────────────────> Principal in the request extensions, on to MCP
//! ```
//!
//! The token is checked locally (signature against the cached keys, claims, the in-memory
//! revocation list), so no database round trip is on this path.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use mcp_oauth_core::domain::ScopeSet;
use mcp_oauth_core::oauth::access_token::{ClaimsError, validate_claims};
use mcp_oauth_core::resource::bearer::{self, BearerError, Credentials};
use mcp_oauth_core::resource::challenge::{BearerErrorCode, Challenge};
use mcp_oauth_core::security::events::SecurityEvent;
use mcp_oauth_core::security::rate_limit::{EndpointClass, RateKey};

use super::{Principal, ProtectedResource, VerifiedToken};
use crate::http::middleware::{announce_close, has_body};
use crate::keys::VerifyError;
use crate::security::Requester;
use crate::security::rate_limit::RateDecision;
use crate::state::AppState;

/// Clock skew tolerated on `exp` and `nbf`, seconds.
const LEEWAY: i64 = 5;
/// Largest JSON-RPC body inspected for per-tool scopes (the MCP service's own limit).
const MAX_BODY: usize = 4 * 1024 * 1024;

/// Scopes an MCP request needs beyond the base ones, from the JSON-RPC messages it carries.
pub type OperationScopes = Arc<dyn Fn(&Value) -> ScopeSet + Send + Sync>;

#[derive(Clone)]
pub struct BearerLayer {
    pub app: AppState,
    pub protected: Arc<ProtectedResource>,
    pub operation_scopes: Option<OperationScopes>,
}

/// Cloned for every request by axum's `State`: one reference count, not the whole app state.
pub type BearerLayerState = Arc<BearerLayer>;

fn challenge(
    protected: &ProtectedResource,
    error: Option<BearerErrorCode>,
    description: Option<&str>,
    scope: Option<ScopeSet>,
) -> Response {
    let c = Challenge {
        error,
        description: description.map(str::to_owned),
        scope,
        resource_metadata: protected.metadata_url.clone(),
    };
    let status = StatusCode::from_u16(c.status()).unwrap_or(StatusCode::UNAUTHORIZED);
    let body = match error {
        Some(e) => {
            json!({"error": e.as_str(), "error_description": description.unwrap_or_default()})
        }
        None => {
            json!({"error": "unauthorized", "error_description": "an access token is required"})
        }
    };
    let mut r = (status, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&c.header_value()) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

/// Report a refused token (`event` is only built when monitoring is on).
fn report(
    state: &AppState,
    req: &Request,
    user: Option<&str>,
    client: Option<&str>,
    event: impl FnOnce(i64) -> SecurityEvent,
) {
    if state.security.enabled() {
        let who = Requester::of(req.extensions(), req.headers(), state);
        state.security.observed(&who, user, client, event);
    }
}

pub async fn require_bearer(
    State(layer): State<BearerLayerState>,
    req: Request,
    next: Next,
) -> Response {
    let body_unread = has_body(req.headers());
    let mut response = match authenticate(&layer, req).await {
        Ok((req, rate)) => {
            let who = req
                .extensions()
                .get::<Principal>()
                .map(|p| crate::analytics::Attribution {
                    // A client-credentials token's subject is the client, not a user.
                    user_id: (p.subject != p.client_id).then(|| p.subject.clone()),
                    client_id: Some(p.client_id.clone()),
                });
            let mut response = next.run(req).await;
            if let Some(who) = who {
                response.extensions_mut().insert(who);
            }
            if let Some(rate) = rate {
                rate.apply(response.headers_mut());
            }
            return response;
        }
        Err(refusal) => refusal,
    };
    if body_unread {
        announce_close(&mut response);
    }
    response
}

/// The request with the caller's `Principal` attached and where it stands with its rate
/// limit, or the refusal to send.
async fn authenticate(
    layer: &BearerLayerState,
    req: Request,
) -> Result<(Request, Option<RateDecision>), Response> {
    let protected = &layer.protected;
    let state = &layer.app;
    let headers: Vec<&str> = req
        .headers()
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let token = match bearer::extract(&headers, req.uri().query()) {
        Ok(Credentials::Bearer(t)) => t.to_owned(),
        Ok(Credentials::None) => {
            return Err(challenge(
                protected,
                None,
                None,
                Some(protected.base_scopes.clone()),
            ));
        }
        Err(e @ (BearerError::InQuery | BearerError::Repeated)) => {
            let reason = match e {
                BearerError::InQuery => "token_in_query",
                _ => "repeated_authorization",
            };
            report(state, &req, None, None, |at| {
                SecurityEvent::invalid_token(at, reason)
            });
            return Err(challenge(
                protected,
                Some(BearerErrorCode::InvalidRequest),
                Some(&e.to_string()),
                None,
            ));
        }
        Err(e @ BearerError::Malformed) => {
            report(state, &req, None, None, |at| {
                SecurityEvent::invalid_token(at, "malformed_authorization")
            });
            return Err(challenge(
                protected,
                Some(BearerErrorCode::InvalidToken),
                Some(&e.to_string()),
                None,
            ));
        }
    };
    let invalid = |d: &str| {
        challenge(
            protected,
            Some(BearerErrorCode::InvalidToken),
            Some(d),
            None,
        )
    };
    let now = state.clock.now();
    let verified = match state.verified_tokens.get(&token) {
        Some(verified) => verified,
        // While the database is known to be down, an unknown key id cannot be looked up:
        // answer at once instead of waiting for the pool.
        None => match if state.db_health.is_down() {
            state.keys.verify(&token)
        } else {
            state.keys.verify_or_reload(&token, now).await
        } {
            Ok(claims) => {
                let verified = Arc::new(VerifiedToken::new(claims));
                state.verified_tokens.insert(&token, verified.clone());
                verified
            }
            Err(e) => {
                report(state, &req, None, None, |at| match &e {
                    VerifyError::Invalid => SecurityEvent::invalid_token(at, "not_our_jwt"),
                    VerifyError::BadSignature => {
                        SecurityEvent::forged_token(at, "bad_signature", None)
                    }
                    VerifyError::UnknownKey(kid) => {
                        SecurityEvent::forged_token(at, "unknown_key_id", Some(kid))
                    }
                });
                return Err(invalid("the access token is not one this server issued"));
            }
        },
    };
    let claims = &verified.claims;
    let user = (!claims.is_client_only()).then_some(claims.sub.as_str());
    let client = Some(claims.client_id.as_str());
    match validate_claims(
        claims,
        &state.settings.issuer,
        protected.resource.as_str(),
        now,
        LEEWAY,
    ) {
        Ok(()) => {}
        Err(e) => {
            report(state, &req, user, client, |at| match e {
                ClaimsError::WrongAudience => {
                    SecurityEvent::token_for_other_resource(at, &claims.jti, &claims.aud)
                }
                ClaimsError::Expired => SecurityEvent::expired_token(at, &claims.jti, claims.exp),
                ClaimsError::NotYetValid => SecurityEvent::invalid_token(at, "not_yet_valid"),
                ClaimsError::WrongIssuer => SecurityEvent::invalid_token(at, "wrong_issuer"),
            });
            return Err(invalid(&match e {
                ClaimsError::WrongAudience => {
                    "the access token was issued for another resource".to_owned()
                }
                e => e.to_string(),
            }));
        }
    }
    if claims.is_client_only() && !protected.accepts_client_tokens {
        report(state, &req, user, client, |at| {
            SecurityEvent::invalid_token(at, "client_credentials_token")
        });
        return Err(invalid(
            "this resource accepts only tokens issued for a user, not client credentials",
        ));
    }
    if state
        .revocations
        .is_revoked(&claims.jti, claims.gid.as_deref())
    {
        report(state, &req, user, client, |at| {
            SecurityEvent::revoked_token(at, &claims.jti)
        });
        return Err(invalid("the access token has been revoked"));
    }
    let granted = &verified.scopes;

    // What this request needs: the base scopes, plus whatever its JSON-RPC messages need.
    let (req, extra) = match &layer.operation_scopes {
        Some(scopes_for) if req.method() == Method::POST => {
            let (parts, body) = req.into_parts();
            let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
                return Err(
                    (StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response()
                );
            };
            let extra = serde_json::from_slice::<Value>(&bytes)
                .map(|v| scopes_for(&v))
                .unwrap_or_default();
            (
                Request::from_parts(parts, Body::from(bytes)),
                Some(extra).filter(|e| !e.is_empty()),
            )
        }
        _ => (req, None),
    };
    let required = match extra {
        None => std::borrow::Cow::Borrowed(&protected.base_scopes),
        Some(extra) => std::borrow::Cow::Owned(protected.base_scopes.union(&extra)),
    };
    if !state.scope_hierarchy.missing(granted, &required).is_empty() {
        if state.security.enabled() {
            let who = Requester::of(req.extensions(), req.headers(), state);
            let required = required.to_string();
            state.security.insufficient_scope(
                &who,
                &claims.jti,
                &required,
                user,
                &claims.client_id,
            );
        }
        return Err(challenge(
            protected,
            Some(BearerErrorCode::InsufficientScope),
            Some("the access token lacks a scope this operation needs"),
            Some(required.into_owned()),
        ));
    }

    let who = Requester::of(req.extensions(), req.headers(), state);
    state
        .security
        .token_used(&who, &claims.jti, user, &claims.client_id);
    if let Some(user) = user {
        state
            .security
            .user_seen(&who, user, Some(&claims.client_id));
    }
    let key = RateKey {
        class: EndpointClass::Mcp,
        client_id: Some(claims.client_id.clone()),
        user_id: user.map(str::to_owned),
        ip: who.ip,
    };
    let rate = crate::security::rate_limit(state, &who, &key).await;
    if let Some(refused @ RateDecision::Refused { retry_after, .. }) = &rate {
        let message = format!(
            "Rate limit exceeded: at most {} MCP requests a minute for this client and user \
             from this address. Retry after {retry_after} s.",
            state.settings.rate_limits.mcp_per_minute
        );
        let body = json!({
            "jsonrpc": "2.0",
            "id": null,
            "error": {"code": -32000, "message": message,
                      "data": {"reason": "rate_limited", "retry_after": retry_after}},
        });
        let mut r = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
        refused.apply(r.headers_mut());
        return Err(r);
    }
    let mut req = req;
    req.extensions_mut().insert(Principal {
        subject: claims.sub.clone(),
        client_id: claims.client_id.clone(),
        scopes: granted.clone(),
        token_id: claims.jti.clone(),
        grant_id: claims.gid.clone(),
        expires_at: claims.exp,
    });
    Ok((req, rate))
}
