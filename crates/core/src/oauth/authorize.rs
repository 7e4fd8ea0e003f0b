//! The authorization endpoint's request validation (OAuth 2.1 §4.1.1, RFC 7636, RFC 8707,
//! RFC 9207).
//!
//! Errors come in two kinds, and which one is decided here (OAuth 2.1 §4.1.2.1):
//!
//! ```text
//!   client_id missing/unknown ─┐
//!   redirect_uri bad/unknown ──┴─> Local: an error page; we must not redirect to a URI we
//!                                  have not matched against the client's registration
//!   anything after that ──────────> Redirect: `error=…&state=…&iss=…` to the matched URI
//! ```

use url::Url;

use super::client::{Client, ClientKind, GrantType};
use super::error::{ErrorCode, OAuthError};
use crate::domain::redirect_uri::RedirectKind;
use crate::domain::scope::OFFLINE_ACCESS;
use crate::domain::{CodeChallenge, RedirectUri, ResourceUri, ScopeSet};

/// Raw query parameters, as received.
#[derive(Debug, Clone, Default)]
pub struct AuthorizeParams {
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub response_type: Option<String>,
    pub state: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub scope: Option<String>,
    pub resource: Vec<String>,
    pub prompt: Option<String>,
}

/// What the server allows, from configuration.
#[derive(Debug, Clone)]
pub struct AuthorizePolicy {
    pub supported_scopes: ScopeSet,
    /// Granted when a client asks for no scope and registered none.
    pub default_scopes: ScopeSet,
    /// The resources we protect; the first is the default when `resource` is omitted, as
    /// 2025-03-26 clients do.
    pub resources: Vec<ResourceUri>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Prompt {
    pub none: bool,
    pub login: bool,
    pub consent: bool,
}

/// A request that passed every check: the user may now log in and consent.
#[derive(Debug, Clone)]
pub struct ValidAuthorization {
    /// The redirect URI as the client sent it (for loopback, with its run-time port).
    pub redirect_uri: RedirectUri,
    /// Whether `redirect_uri` was in the request, which makes it required at the token
    /// endpoint (OAuth 2.1 §4.1.3).
    pub redirect_uri_explicit: bool,
    pub state: Option<String>,
    pub code_challenge: CodeChallenge,
    pub scope: ScopeSet,
    pub resource: ResourceUri,
    pub prompt: Prompt,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizeError {
    /// Render an error page; never redirect.
    Local(OAuthError),
    /// Send the error back to the client's (verified) redirect URI.
    Redirect {
        redirect_uri: RedirectUri,
        state: Option<String>,
        error: OAuthError,
    },
}

/// Validate `params` for `client` (already looked up by the caller from `client_id`).
// The error carries the redirect URI it goes back to; it is built once per request, so
// boxing it would buy nothing.
#[allow(clippy::result_large_err)]
pub fn validate_authorize(
    params: &AuthorizeParams,
    client: &Client,
    policy: &AuthorizePolicy,
) -> Result<ValidAuthorization, AuthorizeError> {
    let local = |d: &'static str| AuthorizeError::Local(OAuthError::invalid_request(d));

    let (redirect_uri, explicit) = match params.redirect_uri.as_deref() {
        Some(raw) => {
            let requested = RedirectUri::parse(raw)
                .map_err(|_| local("redirect_uri is not a valid redirect URI"))?;
            if client.find_redirect_uri(&requested).is_none() {
                return Err(local("redirect_uri is not registered for this client"));
            }
            (requested, true)
        }
        // OAuth 2.1 §2.3.2: optional only when exactly one URI is registered, and loopback
        // URIs need the run-time port, so they must always be sent.
        None => match client.redirect_uris.as_slice() {
            [only] if only.kind() != crate::domain::redirect_uri::RedirectKind::Loopback => {
                (only.clone(), false)
            }
            _ => return Err(local("redirect_uri is required")),
        },
    };

    let state = params.state.clone();
    let redirect = |error: OAuthError| AuthorizeError::Redirect {
        redirect_uri: redirect_uri.clone(),
        state: state.clone(),
        error,
    };

    match params.response_type.as_deref() {
        Some("code") => {}
        None => {
            return Err(redirect(OAuthError::invalid_request(
                "response_type is required",
            )));
        }
        Some(_) => {
            return Err(redirect(OAuthError::new(
                ErrorCode::UnsupportedResponseType,
                "only response_type=code is supported",
            )));
        }
    }
    if !client.allows_grant(GrantType::AuthorizationCode) {
        return Err(redirect(OAuthError::unauthorized_client(
            "client is not registered for the authorization_code grant",
        )));
    }

    let code_challenge = CodeChallenge::parse(
        params.code_challenge.as_deref(),
        params.code_challenge_method.as_deref(),
    )
    .map_err(|e| redirect(OAuthError::invalid_request(e.to_string())))?;

    let scope = decide_scope(params.scope.as_deref(), client, policy).map_err(&redirect)?;
    let resource = decide_resource(&params.resource, &policy.resources).map_err(&redirect)?;

    let mut prompt = Prompt::default();
    for p in params.prompt.as_deref().unwrap_or("").split(' ') {
        match p {
            "none" => prompt.none = true,
            "login" => prompt.login = true,
            "consent" => prompt.consent = true,
            _ => {}
        }
    }
    if prompt.none && (prompt.login || prompt.consent) {
        return Err(redirect(OAuthError::invalid_request(
            "prompt=none cannot be combined with other prompt values",
        )));
    }

    Ok(ValidAuthorization {
        redirect_uri,
        redirect_uri_explicit: explicit,
        state,
        code_challenge,
        scope,
        resource,
        prompt,
    })
}

/// The redirect URI of `params` when it is one `client` may not use (malformed, or not
/// registered): after a refusal, whether the refusal was about the redirect URI, evidence of
/// an attempt to send the code elsewhere (RFC 9700 §4.1).
pub fn refused_redirect_uri<'p>(params: &'p AuthorizeParams, client: &Client) -> Option<&'p str> {
    let raw = params.redirect_uri.as_deref()?;
    match RedirectUri::parse(raw) {
        Ok(uri) if client.find_redirect_uri(&uri).is_some() => None,
        _ => Some(raw),
    }
}

/// Scopes to grant: every requested scope must be one we support and, when the client
/// registered a scope list, one it registered (`offline_access` is allowed to any client that
/// may refresh). No scope requested means the client's registered scopes, else our defaults.
pub fn decide_scope(
    requested: Option<&str>,
    client: &Client,
    policy: &AuthorizePolicy,
) -> Result<ScopeSet, OAuthError> {
    let requested = ScopeSet::parse(requested.unwrap_or(""))
        .map_err(|_| OAuthError::invalid_scope("scope is malformed"))?;
    if requested.is_empty() {
        let registered = client
            .allowed_scopes
            .as_ref()
            .map(|s| s.intersection(&policy.supported_scopes))
            .filter(|s| !s.is_empty());
        return Ok(registered.unwrap_or_else(|| policy.default_scopes.clone()));
    }
    let unknown = requested.difference(&policy.supported_scopes);
    if !unknown.is_empty() {
        return Err(OAuthError::invalid_scope(format!(
            "unknown scope: {unknown}"
        )));
    }
    if let Some(allowed) = &client.allowed_scopes {
        let mut allowed = allowed.clone();
        if client.allows_grant(GrantType::RefreshToken) {
            allowed = allowed.union(&ScopeSet::parse(OFFLINE_ACCESS).unwrap_or_default());
        }
        let extra = requested.difference(&allowed);
        if !extra.is_empty() {
            return Err(OAuthError::invalid_scope(format!(
                "client is not registered for scope: {extra}"
            )));
        }
    }
    Ok(requested)
}

/// RFC 8707 §2: one resource we protect, or the default when omitted.
pub fn decide_resource(
    requested: &[String],
    resources: &[ResourceUri],
) -> Result<ResourceUri, OAuthError> {
    match requested {
        [] => resources
            .first()
            .cloned()
            .ok_or_else(|| OAuthError::invalid_target("no resource is configured")),
        [one] => {
            let parsed =
                ResourceUri::parse(one).map_err(|e| OAuthError::invalid_target(e.to_string()))?;
            if resources.contains(&parsed) {
                Ok(parsed)
            } else {
                Err(OAuthError::invalid_target(format!(
                    "this server does not issue tokens for resource {one}"
                )))
            }
        }
        _ => Err(OAuthError::invalid_target(
            "only one resource may be requested",
        )),
    }
}

/// May an authorization error be sent to the client's redirect URI without the user taking
/// part? Only when the operator registered that URI. Anyone can register a client (dynamic
/// registration, a metadata document on their own site) with their own redirect URI, and an
/// error redirect needs no sign-in: sending it silently would make us an open redirector
/// (RFC 9700 §4.11.2). Otherwise the error is shown on our page, with a link the user may
/// follow back to the client.
pub fn may_redirect_errors_silently(client: &Client) -> bool {
    client.kind == ClientKind::Preregistered
}

/// May consent remembered from an earlier authorization be honoured without showing the page
/// again? Only when the client's identity is assured: registered by the operator, a metadata
/// document served over https (its host vouches for it), or a redirect to an https URL that
/// only that site can receive. A dynamically registered public client that redirects to a
/// loopback port or a private-use scheme can be impersonated by any program on the device,
/// and identical public registrations share one client id, so such a client is asked again
/// every time (RFC 8252 §8.6).
pub fn remembered_consent_applies(client: &Client, redirect_uri: &RedirectUri) -> bool {
    match client.kind {
        ClientKind::Preregistered => true,
        ClientKind::MetadataDocument => client.id.as_str().starts_with("https://"),
        ClientKind::Dynamic => redirect_uri.kind() == RedirectKind::Https,
    }
}

/// Should the consent page be shown? Not when the user already granted every requested
/// scope to this client for this resource and that memory applies to this client
/// (`remembered_consent_applies`), unless the client asks with `prompt=consent`.
pub fn consent_required(
    previously_granted: Option<&ScopeSet>,
    requested: &ScopeSet,
    prompt: Prompt,
    remembered_applies: bool,
) -> bool {
    if prompt.consent || !remembered_applies {
        return true;
    }
    match previously_granted {
        Some(granted) => !requested.is_subset(granted),
        None => true,
    }
}

/// The redirect carrying the result back to the client, with RFC 9207 `iss` on successes and
/// errors alike.
pub fn response_redirect(
    redirect_uri: &RedirectUri,
    issuer: &str,
    state: Option<&str>,
    outcome: Result<&str, &OAuthError>,
) -> Url {
    let mut url = redirect_uri.url().clone();
    {
        let mut q = url.query_pairs_mut();
        match outcome {
            Ok(code) => {
                q.append_pair("code", code);
            }
            Err(e) => {
                q.append_pair("error", e.code.as_str());
                q.append_pair("error_description", &e.description);
            }
        }
        if let Some(s) = state {
            q.append_pair("state", s);
        }
        q.append_pair("iss", issuer);
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ClientId;
    use crate::oauth::client::{ClientKind, ClientMetadata, TokenEndpointAuthMethod};

    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    fn client(redirects: &[&str], scope: Option<&str>) -> Client {
        let metadata = ClientMetadata {
            client_name: Some("Test".into()),
            redirect_uris: redirects.iter().map(|s| s.to_string()).collect(),
            grant_types: vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
            response_types: vec!["code".into()],
            token_endpoint_auth_method: TokenEndpointAuthMethod::None,
            scope: scope.map(str::to_owned),
            application_type: None,
            client_uri: None,
            logo_uri: None,
            tos_uri: None,
            policy_uri: None,
            contacts: vec![],
            software_id: None,
            software_version: None,
        };
        Client::from_metadata(
            ClientId::parse("c1").unwrap(),
            ClientKind::Dynamic,
            metadata,
            None,
        )
    }

    fn policy() -> AuthorizePolicy {
        AuthorizePolicy {
            supported_scopes: ScopeSet::parse("mcp tools:write offline_access").unwrap(),
            default_scopes: ScopeSet::parse("mcp").unwrap(),
            resources: vec![ResourceUri::parse("https://as.example/mcp").unwrap()],
        }
    }

    fn params() -> AuthorizeParams {
        AuthorizeParams {
            client_id: Some("c1".into()),
            redirect_uri: Some("http://127.0.0.1:5555/cb".into()),
            response_type: Some("code".into()),
            state: Some("xyz".into()),
            code_challenge: Some(CHALLENGE.into()),
            code_challenge_method: Some("S256".into()),
            ..Default::default()
        }
    }

    fn is_redirect_with(r: Result<ValidAuthorization, AuthorizeError>, code: ErrorCode) -> bool {
        matches!(r, Err(AuthorizeError::Redirect { error, state: Some(s), .. }) if error.code == code && s == "xyz")
    }

    #[test]
    fn valid_request_defaults_scope_and_resource() {
        let v = validate_authorize(
            &params(),
            &client(&["http://127.0.0.1/cb"], None),
            &policy(),
        )
        .unwrap();
        assert_eq!(v.scope.to_string(), "mcp");
        assert_eq!(v.resource.as_str(), "https://as.example/mcp");
        assert_eq!(
            v.redirect_uri.as_str(),
            "http://127.0.0.1:5555/cb",
            "keeps the run-time port"
        );
        assert!(v.redirect_uri_explicit);
    }

    #[test]
    fn untrusted_redirects_get_a_local_error_page() {
        let c = client(&["https://app.example/cb"], None);
        let cases = [
            Some("https://evil.example/cb"),
            Some("https://app.example/cb/extra"),
            Some("not a uri"),
            None,
        ];
        for redirect in cases {
            let mut p = params();
            p.redirect_uri = redirect.map(str::to_owned);
            p.code_challenge = None; // would be a redirect error, but the URI comes first
            let r = validate_authorize(
                &p,
                &client(&["https://app.example/cb", "https://app.example/2"], None),
                &policy(),
            );
            assert!(matches!(r, Err(AuthorizeError::Local(_))), "{redirect:?}");
            assert_eq!(
                refused_redirect_uri(
                    &p,
                    &client(&["https://app.example/cb", "https://app.example/2"], None)
                ),
                redirect,
                "a refused redirect URI is named as such"
            );
        }
        let mut registered = params();
        registered.redirect_uri = Some("https://app.example/cb".into());
        assert_eq!(
            refused_redirect_uri(&registered, &c),
            None,
            "a registered one is not"
        );
        let mut p = params();
        p.redirect_uri = None;
        assert!(
            validate_authorize(&p, &c, &policy()).is_ok(),
            "single registered URI may be omitted"
        );
        assert!(
            matches!(
                validate_authorize(&p, &client(&["http://127.0.0.1/cb"], None), &policy()),
                Err(AuthorizeError::Local(_))
            ),
            "loopback needs the run-time port, so it must be sent"
        );
    }

    #[test]
    fn pkce_is_required_and_s256_only() {
        let c = client(&["http://127.0.0.1/cb"], None);
        let mut p = params();
        p.code_challenge = None;
        assert!(is_redirect_with(
            validate_authorize(&p, &c, &policy()),
            ErrorCode::InvalidRequest
        ));
        let mut p = params();
        p.code_challenge_method = Some("plain".into());
        assert!(is_redirect_with(
            validate_authorize(&p, &c, &policy()),
            ErrorCode::InvalidRequest
        ));
        let mut p = params();
        p.code_challenge_method = None;
        assert!(is_redirect_with(
            validate_authorize(&p, &c, &policy()),
            ErrorCode::InvalidRequest
        ));
    }

    #[test]
    fn response_type_scope_and_resource_errors_redirect() {
        let c = client(&["http://127.0.0.1/cb"], Some("mcp"));
        let mut p = params();
        p.response_type = Some("token".into());
        assert!(is_redirect_with(
            validate_authorize(&p, &c, &policy()),
            ErrorCode::UnsupportedResponseType
        ));
        let mut p = params();
        p.scope = Some("mcp admin".into());
        assert!(is_redirect_with(
            validate_authorize(&p, &c, &policy()),
            ErrorCode::InvalidScope
        ));
        let mut p = params();
        p.scope = Some("tools:write".into());
        assert!(
            is_redirect_with(
                validate_authorize(&p, &c, &policy()),
                ErrorCode::InvalidScope
            ),
            "not registered"
        );
        let mut p = params();
        p.scope = Some("mcp offline_access".into());
        assert!(
            validate_authorize(&p, &c, &policy()).is_ok(),
            "offline_access for a refreshing client"
        );
        let mut p = params();
        p.resource = vec!["https://other.example/mcp".into()];
        assert!(is_redirect_with(
            validate_authorize(&p, &c, &policy()),
            ErrorCode::InvalidTarget
        ));
        let mut p = params();
        p.resource = vec!["https://as.example/mcp#frag".into()];
        assert!(is_redirect_with(
            validate_authorize(&p, &c, &policy()),
            ErrorCode::InvalidTarget
        ));
        let mut p = params();
        p.resource = vec!["https://AS.example/mcp/".into()];
        assert!(
            validate_authorize(&p, &c, &policy()).is_ok(),
            "canonical spelling differences"
        );
    }

    #[test]
    fn consent_is_remembered_per_scope_set() {
        let granted = ScopeSet::parse("mcp offline_access").unwrap();
        let p = Prompt::default();
        let mcp = ScopeSet::parse("mcp").unwrap();
        assert!(!consent_required(Some(&granted), &mcp, p, true));
        assert!(consent_required(
            Some(&granted),
            &ScopeSet::parse("mcp tools:write").unwrap(),
            p,
            true
        ));
        assert!(consent_required(None, &mcp, p, true));
        let forced = Prompt { consent: true, ..p };
        assert!(consent_required(Some(&granted), &mcp, forced, true));
        assert!(
            consent_required(Some(&granted), &mcp, p, false),
            "remembered consent that does not apply to this client"
        );
    }

    fn client_of(kind: ClientKind, id: &str, redirects: &[&str]) -> Client {
        let c = client(redirects, None);
        Client::from_metadata(ClientId::parse(id).unwrap(), kind, c.metadata, None)
    }

    #[test]
    fn remembered_consent_applies_only_to_clients_whose_identity_is_assured() {
        let uri = |u: &str| RedirectUri::parse(u).unwrap();
        let cases = [
            (ClientKind::Preregistered, "c1", "http://127.0.0.1/cb", true),
            (ClientKind::Preregistered, "c1", "cursor://x/cb", true),
            (
                ClientKind::MetadataDocument,
                "https://app.example/client.json",
                "http://127.0.0.1/cb",
                true,
            ),
            (
                ClientKind::MetadataDocument,
                "http://127.0.0.1:9/client.json",
                "http://127.0.0.1/cb",
                false,
            ),
            (ClientKind::Dynamic, "c1", "https://app.example/cb", true),
            (ClientKind::Dynamic, "c1", "http://127.0.0.1/cb", false),
            (ClientKind::Dynamic, "c1", "cursor://x/cb", false),
        ];
        for (kind, id, redirect, applies) in cases {
            let c = client_of(kind, id, &[redirect]);
            assert_eq!(
                remembered_consent_applies(&c, &uri(redirect)),
                applies,
                "{kind:?} {id} {redirect}"
            );
        }
    }

    #[test]
    fn only_operator_registered_redirect_uris_receive_errors_without_the_user() {
        for (kind, silent) in [
            (ClientKind::Preregistered, true),
            (ClientKind::Dynamic, false),
            (ClientKind::MetadataDocument, false),
        ] {
            let c = client_of(
                kind,
                "https://app.example/client.json",
                &["https://app.example/cb"],
            );
            assert_eq!(may_redirect_errors_silently(&c), silent, "{kind:?}");
        }
    }

    #[test]
    fn redirects_carry_state_and_iss() {
        let uri = RedirectUri::parse("cursor://anysphere.cursor-mcp/oauth/callback").unwrap();
        let ok = response_redirect(&uri, "https://as.example", Some("s1"), Ok("abc"));
        assert_eq!(
            ok.as_str(),
            "cursor://anysphere.cursor-mcp/oauth/callback?code=abc&state=s1&iss=https%3A%2F%2Fas.example"
        );
        let uri = RedirectUri::parse("https://app.example/cb?x=1").unwrap();
        let err = OAuthError::new(ErrorCode::AccessDenied, "no");
        let e = response_redirect(&uri, "https://as.example", None, Err(&err));
        assert_eq!(
            e.as_str(),
            "https://app.example/cb?x=1&error=access_denied&error_description=no&iss=https%3A%2F%2Fas.example"
        );
    }
}
