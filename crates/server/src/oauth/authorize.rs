//! The authorization endpoint: validate, make sure the user is signed in, ask for consent
//! (unless it was given before), then redirect back with a code.
//!
//! ```text
//!  GET /authorize ─ validate ─┬─ local error page (client or redirect URI not trusted)
//!                             ├─ error for the client: a redirect if the operator registered
//!                             │  the client, else our page with a link back (no open redirect)
//!                             ├─ not signed in ──> /login?return_to=/authorize?… ──┐
//!                             │                                                    │
//!                             ├─ consent remembered, and the client's identity ────┤
//!                             │  assured ──> code redirect                <────────┘
//!                             └─ consent page ── POST /authorize (CSRF) ─ same checks again
//!                                                   ├─ deny  ──> access_denied redirect
//!                                                   └─ allow ──> remember, code redirect
//! ```
//!
//! The consent form carries the original query string and the POST validates it again from
//! scratch, so nothing about a pending request needs to be stored between the two.

use mcp_oauth_core::analytics::OAuthEvent;
use mcp_oauth_core::security::events::SecurityEvent;
use mcp_oauth_core::security::rate_limit::{EndpointClass, RateKey};

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::CookieJar;
use serde::Deserialize;

use mcp_oauth_core::domain::RedirectUri;
use mcp_oauth_core::domain::redirect_uri::RedirectKind;
use mcp_oauth_core::domain::{ScopeSet, SecretHash};
use mcp_oauth_core::oauth::authorize::{
    AuthorizeError, AuthorizeParams, ValidAuthorization, consent_required,
    may_redirect_errors_silently, refused_redirect_uri, remembered_consent_applies,
    response_redirect, validate_authorize,
};
use mcp_oauth_core::oauth::client::{Client, ClientKind};
use mcp_oauth_core::oauth::{ErrorCode, OAuthError};
use mcp_oauth_store::NewAuthorization;

use super::clients::{self, ClientLookupError};
use crate::http::error::PageError;
use crate::http::extract::PageForm;
use crate::identity::session::CurrentUser;
use crate::identity::{csrf, session};
use crate::security::Requester;
use crate::security::rate_limit::RateDecision;
use crate::state::AppState;

/// How recently the user must have entered a password to satisfy `prompt=login`.
const FRESH_LOGIN_SECONDS: i64 = 120;

struct ScopeView {
    name: String,
    description: &'static str,
}

#[derive(Template)]
#[template(path = "consent.html")]
struct ConsentPage<'a> {
    base_path: &'a str,
    csrf: &'a str,
    request: &'a str,
    client_name: &'a str,
    user_email: &'a str,
    /// Where the browser goes next: a web host, a loopback listener, or an app's scheme.
    destination: String,
    destination_is_app: bool,
    document_host: Option<String>,
    resource: &'a str,
    scopes: Vec<ScopeView>,
    unverified: bool,
    loopback_only: bool,
}

fn describe_scope(scope: &str) -> &'static str {
    match scope {
        "mcp" => "use this server's MCP tools, resources and prompts as you",
        "offline_access" => "stay connected while you are away (refresh tokens)",
        _ => "a permission defined by this server",
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Allow,
    Deny,
}

#[derive(Deserialize)]
pub struct ConsentForm {
    csrf: Option<String>,
    #[serde(default)]
    request: String,
    decision: Decision,
}

pub async fn authorize_get(
    State(state): State<AppState>,
    who: Requester,
    jar: CookieJar,
    uri: Uri,
) -> Result<Response, PageError> {
    handle(&state, &who, jar, uri.query().unwrap_or(""), None).await
}

pub async fn authorize_post(
    State(state): State<AppState>,
    who: Requester,
    headers: HeaderMap,
    jar: CookieJar,
    PageForm(form): PageForm<ConsentForm>,
) -> Result<Response, PageError> {
    if !csrf::verify_post(
        &state,
        &who,
        "consent",
        &jar,
        &headers,
        form.csrf.as_deref(),
    ) {
        return Err(PageError::forbidden(
            "The consent form has expired. Start the connection again from your application.",
        ));
    }
    handle(&state, &who, jar, &form.request, Some(form.decision)).await
}

/// Parse the query: every parameter at most once (RFC 6749 §3.1), except `resource`.
fn parse_params(query: &str) -> Result<AuthorizeParams, PageError> {
    let mut p = AuthorizeParams::default();
    let mut seen: Vec<String> = Vec::new();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        if k == "resource" {
            p.resource.push(v.into_owned());
            continue;
        }
        if seen.iter().any(|s| *s == k) {
            return Err(PageError::bad_request(
                "Invalid authorization request",
                format!("The parameter `{k}` appears more than once."),
            ));
        }
        seen.push(k.to_string());
        let v = Some(v.into_owned());
        match k.as_ref() {
            "client_id" => p.client_id = v,
            "redirect_uri" => p.redirect_uri = v,
            "response_type" => p.response_type = v,
            "state" => p.state = v,
            "code_challenge" => p.code_challenge = v,
            "code_challenge_method" => p.code_challenge_method = v,
            "scope" => p.scope = v,
            "prompt" => p.prompt = v,
            _ => {}
        }
    }
    Ok(p)
}

/// Send the outcome back to the client. An error goes by redirect only when the user took
/// part in this request (`interacted`) or the operator registered the client; otherwise it
/// is shown on our page, with a link the user may follow back (RFC 9700 §4.11.2).
fn respond(
    state: &AppState,
    client: &Client,
    redirect_uri: &RedirectUri,
    client_state: Option<&str>,
    outcome: Result<&str, &OAuthError>,
    interacted: bool,
) -> Result<Response, PageError> {
    let url = response_redirect(redirect_uri, &state.settings.issuer, client_state, outcome);
    // A refusal by the user is recorded where it is decided, with who refused.
    if let Err(error) = outcome
        && error.code != ErrorCode::AccessDenied
    {
        state.analytics.oauth(
            OAuthEvent::AuthorizationFailed {
                error: error.code.as_str(),
            },
            None,
            Some(client.id.as_str()),
        );
    }
    match outcome {
        Err(error) if !interacted && !may_redirect_errors_silently(client) => {
            Err(PageError::bad_request(
                "Authorization request refused",
                format!(
                    "{} asked for something this server cannot grant: {}.",
                    client.display_name(),
                    error.description
                ),
            )
            .with_link(
                url.as_str(),
                format!("Return to the application ({})", redirect_uri.destination()),
            ))
        }
        // 303 so that a POSTed consent is not re-POSTed to the client.
        _ => Ok(Redirect::to(url.as_str()).into_response()),
    }
}

fn respond_valid(
    state: &AppState,
    client: &Client,
    v: &ValidAuthorization,
    outcome: Result<&str, &OAuthError>,
    interacted: bool,
) -> Result<Response, PageError> {
    respond(
        state,
        client,
        &v.redirect_uri,
        v.state.as_deref(),
        outcome,
        interacted,
    )
}

async fn handle(
    state: &AppState,
    who: &Requester,
    jar: CookieJar,
    query: &str,
    decision: Option<Decision>,
) -> Result<Response, PageError> {
    let params = parse_params(query)?;
    let client_id = params.client_id.as_deref().ok_or_else(|| {
        PageError::bad_request(
            "Invalid authorization request",
            "The request has no client_id.",
        )
    })?;
    let key = RateKey {
        class: EndpointClass::Authorization,
        client_id: Some(client_id.to_owned()),
        user_id: None,
        ip: who.ip,
    };
    if let Some(refused @ RateDecision::Refused { retry_after, .. }) =
        crate::security::rate_limit(state, who, &key).await
    {
        let mut r = PageError::Status {
            status: StatusCode::TOO_MANY_REQUESTS,
            title: "Too many requests",
            detail: format!(
                "Too many authorization requests for this application from your address. Try \
                 again in {retry_after} second(s)."
            ),
            link: None,
        }
        .into_response();
        refused.apply(r.headers_mut());
        return Ok(r);
    }
    let client = match clients::resolve(state, client_id, who).await {
        Ok(c) => c,
        Err(ClientLookupError::Throttled) => {
            return Err(PageError::Status {
                status: StatusCode::TOO_MANY_REQUESTS,
                title: "Too many requests",
                detail:
                    "Too many applications were looked up from your address. Try again in a minute."
                        .into(),
                link: None,
            });
        }
        Err(ClientLookupError::NotFound(e)) => {
            return Err(PageError::bad_request(
                "Unknown application",
                e.description.into_owned(),
            ));
        }
        Err(ClientLookupError::Internal(e)) => return Err(PageError::Internal(e)),
    };
    let valid = match validate_authorize(&params, &client, &state.authorize_policy) {
        Ok(v) => v,
        Err(AuthorizeError::Local(e)) => {
            if let Some(uri) = refused_redirect_uri(&params, &client) {
                state
                    .security
                    .observed(who, None, Some(client.id.as_str()), |at| {
                        SecurityEvent::redirect_mismatch(at, "authorize", uri)
                    });
            }
            state.analytics.oauth(
                OAuthEvent::AuthorizationFailed {
                    error: e.code.as_str(),
                },
                None,
                Some(client.id.as_str()),
            );
            return Err(PageError::bad_request(
                "Invalid authorization request",
                e.description.into_owned(),
            ));
        }
        Err(AuthorizeError::Redirect {
            redirect_uri,
            state: st,
            error,
        }) => {
            if error.code == ErrorCode::InvalidScope {
                state
                    .security
                    .observed(who, None, Some(client.id.as_str()), |at| {
                        SecurityEvent::scope_escalation(
                            at,
                            params.scope.as_deref().unwrap_or(""),
                            &error.description,
                        )
                    });
            }
            return respond(
                state,
                &client,
                &redirect_uri,
                st.as_deref(),
                Err(&error),
                decision.is_some(),
            );
        }
    };
    let interacted = decision.is_some();

    let now = state.clock.now();
    let user = session::current_user(state, &jar).await?;
    let user = match user {
        Some(u)
            if !(valid.prompt.login
                && decision.is_none()
                && now - u.signed_in_at > FRESH_LOGIN_SECONDS) =>
        {
            u
        }
        _ if valid.prompt.none => {
            return respond_valid(
                state,
                &client,
                &valid,
                Err(&OAuthError::new(
                    ErrorCode::LoginRequired,
                    "the user is not signed in",
                )),
                interacted,
            );
        }
        Some(_) | None => {
            let base = state.settings.base_path();
            let return_to = format!("{base}/authorize?{query}");
            let login = format!(
                "{base}/login?{}",
                url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("return_to", &return_to)
                    .finish()
            );
            return Ok(Redirect::to(&login).into_response());
        }
    };

    let granted = state
        .db
        .find_consent(&user.id, client.id.as_str(), valid.resource.as_str())
        .await?
        .and_then(|c| ScopeSet::parse(&c.scope).ok());
    match decision {
        Some(Decision::Deny) => {
            tracing::info!(user_id = ?user.id, client_id = ?client.id.as_str(), "authorization denied by the user");
            state.analytics.oauth(
                OAuthEvent::AuthorizationDenied,
                Some(&user.id),
                Some(client.id.as_str()),
            );
            respond_valid(
                state,
                &client,
                &valid,
                Err(&OAuthError::new(
                    ErrorCode::AccessDenied,
                    "the user denied the request",
                )),
                interacted,
            )
        }
        Some(Decision::Allow) => {
            let remembered = granted.map_or_else(|| valid.scope.clone(), |g| g.union(&valid.scope));
            state
                .db
                .upsert_consent(
                    &user.id,
                    client.id.as_str(),
                    valid.resource.as_str(),
                    &remembered.to_string(),
                    now,
                )
                .await?;
            issue_code(state, &client, &user, &valid).await
        }
        None if !consent_required(
            granted.as_ref(),
            &valid.scope,
            valid.prompt,
            remembered_consent_applies(&client, &valid.redirect_uri),
        ) =>
        {
            issue_code(state, &client, &user, &valid).await
        }
        None if valid.prompt.none => respond_valid(
            state,
            &client,
            &valid,
            Err(&OAuthError::new(
                ErrorCode::ConsentRequired,
                "the user has not approved this client",
            )),
            interacted,
        ),
        None => consent_page(state, jar, query, &client, &user, &valid),
    }
}

fn consent_page(
    state: &AppState,
    jar: CookieJar,
    query: &str,
    client: &Client,
    user: &CurrentUser,
    valid: &ValidAuthorization,
) -> Result<Response, PageError> {
    let (token, jar) = csrf::token(jar);
    let document_host = (client.kind == ClientKind::MetadataDocument)
        .then(|| {
            url::Url::parse(client.id.as_str())
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
        })
        .flatten();
    let html = crate::web::render(&ConsentPage {
        base_path: state.settings.base_path(),
        csrf: &token,
        request: query,
        client_name: client.display_name(),
        user_email: &user.email,
        destination: valid.redirect_uri.destination(),
        destination_is_app: valid.redirect_uri.kind() == RedirectKind::PrivateUse,
        document_host,
        resource: valid.resource.as_str(),
        scopes: valid
            .scope
            .iter()
            .map(|s| ScopeView {
                name: s.to_owned(),
                description: describe_scope(s),
            })
            .collect(),
        unverified: client.kind == ClientKind::Dynamic,
        loopback_only: valid.redirect_uri.kind() == RedirectKind::Loopback,
    })?;
    Ok((StatusCode::OK, jar, Html(html)).into_response())
}

async fn issue_code(
    state: &AppState,
    client: &Client,
    user: &CurrentUser,
    valid: &ValidAuthorization,
) -> Result<Response, PageError> {
    let code = crate::random::secret();
    let now = state.clock.now();
    state
        .db
        .insert_authorization(&NewAuthorization {
            grant_id: crate::random::id(),
            client_id: client.id.as_str().to_owned(),
            user_id: user.id.clone(),
            scope: valid.scope.to_string(),
            resource: valid.resource.as_str().to_owned(),
            code_hash: SecretHash::of(code.expose()).as_str().to_owned(),
            redirect_uri: valid.redirect_uri.as_str().to_owned(),
            redirect_uri_explicit: valid.redirect_uri_explicit,
            code_challenge: valid.code_challenge.as_str().to_owned(),
            now,
            code_expires_at: now + state.settings.tokens.code_ttl,
        })
        .await?;
    // The code exists now: a failure to record the client's use must not lose it.
    if let Err(e) = state.db.touch_client(client.id.as_str(), now).await {
        tracing::warn!(client_id = ?client.id.as_str(), error = ?e.to_string(), "recording the client's last use failed");
    }
    tracing::info!(user_id = ?user.id, client_id = ?client.id.as_str(), scope = ?valid.scope.to_string(), "authorization code issued");
    state.analytics.oauth(
        // Validation accepts S256 challenges only.
        OAuthEvent::AuthorizationGranted {
            pkce_method: "S256",
        },
        Some(&user.id),
        Some(client.id.as_str()),
    );
    respond_valid(state, client, valid, Ok(code.expose()), true)
}
