//! Client metadata validation for Dynamic Client Registration (RFC 7591 §2, §3.2.2) and for
//! Client ID Metadata Documents, which carry the same fields.

use serde_json::{Map, Value};
use url::Url;

use super::client::{ApplicationType, ClientMetadata, GrantType, TokenEndpointAuthMethod};
use super::error::{ErrorCode, OAuthError};
use crate::domain::redirect_uri::RedirectKind;
use crate::domain::{RedirectUri, ScopeSet};

/// Which private-use redirect schemes (RFC 8252 §7.1) public clients may register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrivateUseSchemes {
    /// Any scheme except the dangerous ones `RedirectUri` always refuses.
    Any,
    /// Only these (lower-case) schemes.
    Only(Vec<String>),
    None,
}

impl PrivateUseSchemes {
    fn allows(&self, scheme: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Only(list) => list.iter().any(|s| s == scheme),
            Self::None => false,
        }
    }
}

/// What the server allows, from configuration.
#[derive(Debug, Clone)]
pub struct RegistrationPolicy {
    pub supported_scopes: ScopeSet,
    pub private_use_schemes: PrivateUseSchemes,
    /// Whether this registration channel may grant `client_credentials`. Only the operator's
    /// (`mcp-oauth client add`): a client that needs no user is one the operator vouches for,
    /// so anonymous dynamic registration must never yield one.
    pub allow_client_credentials: bool,
}

fn metadata_error(d: impl Into<std::borrow::Cow<'static, str>>) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidClientMetadata, d)
}

fn redirect_error(d: impl Into<std::borrow::Cow<'static, str>>) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidRedirectUri, d)
}

fn opt_string(obj: &Map<String, Value>, key: &'static str) -> Result<Option<String>, OAuthError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(metadata_error(format!("{key} must be a string"))),
    }
}

fn opt_string_array(
    obj: &Map<String, Value>,
    key: &'static str,
) -> Result<Option<Vec<String>>, OAuthError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(metadata_error(format!("{key} must be an array of strings"))),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(metadata_error(format!("{key} must be an array of strings"))),
    }
}

/// Characters a name shown to users must not contain: controls, and the invisible ones that
/// change how the rest reads (Unicode format characters such as bidirectional overrides and
/// zero-width joiners; line and paragraph separators; private-use and unassigned code points).
/// "Claude\u{202E}edoc" would otherwise display as someone else's name.
fn is_deceptive(c: char) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    matches!(
        c.general_category(),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
            | GeneralCategory::PrivateUse
            | GeneralCategory::Unassigned
            | GeneralCategory::Surrogate
    )
}

/// A human-readable value shown on the consent page: bounded, and free of control and
/// invisible formatting characters.
fn display_string(value: Option<String>, key: &'static str) -> Result<Option<String>, OAuthError> {
    match value {
        Some(s) if s.chars().count() > 200 => Err(metadata_error(format!(
            "{key} is longer than 200 characters"
        ))),
        Some(s) if s.chars().any(is_deceptive) => Err(metadata_error(format!(
            "{key} contains control or invisible formatting characters \
             (such as bidirectional overrides or zero-width characters)"
        ))),
        other => Ok(other),
    }
}

/// `client_uri`, `logo_uri` and friends are shown or linked to users: https only.
fn web_url(value: Option<String>, key: &'static str) -> Result<Option<String>, OAuthError> {
    let Some(raw) = value else { return Ok(None) };
    match Url::parse(&raw) {
        Ok(u) if u.scheme() == "https" && u.host().is_some() && raw.len() <= 2000 => Ok(Some(raw)),
        _ => Err(metadata_error(format!("{key} must be an https URL"))),
    }
}

/// Validate client metadata. `auth_method_override` lets a metadata document's negotiated
/// method (see `cimd`) take the place of `token_endpoint_auth_method`.
pub fn validate_client_metadata(
    obj: &Map<String, Value>,
    policy: &RegistrationPolicy,
    auth_method_override: Option<TokenEndpointAuthMethod>,
) -> Result<ClientMetadata, OAuthError> {
    let application_type = match opt_string(obj, "application_type")?.as_deref() {
        None => None,
        Some("web") => Some(ApplicationType::Web),
        Some("native") => Some(ApplicationType::Native),
        Some(other) => {
            return Err(metadata_error(format!(
                "application_type `{other}` is not one of web, native"
            )));
        }
    };

    // RFC 7591 §2: the default method is client_secret_basic.
    let auth_method = match auth_method_override {
        Some(m) => m,
        None => match opt_string(obj, "token_endpoint_auth_method")?.as_deref() {
            None => TokenEndpointAuthMethod::ClientSecretBasic,
            Some(m) => TokenEndpointAuthMethod::parse(m).ok_or_else(|| {
                metadata_error(format!(
                    "token_endpoint_auth_method `{m}` is not supported; use one of none, \
                     client_secret_basic, client_secret_post"
                ))
            })?,
        },
    };

    let grant_types = match opt_string_array(obj, "grant_types")? {
        None => vec![GrantType::AuthorizationCode],
        Some(list) if list.is_empty() => vec![GrantType::AuthorizationCode],
        Some(list) => {
            let mut grants = Vec::new();
            for g in &list {
                match GrantType::parse(g) {
                    Some(grant) if !grants.contains(&grant) => grants.push(grant),
                    Some(_) => {}
                    // Metadata documents in the wild list grants we do not offer (ChatGPT's
                    // lists jwt-bearer); ignoring them is what RFC 7591 §2 permits.
                    None if auth_method_override.is_some() => {}
                    None => {
                        return Err(metadata_error(format!("grant type `{g}` is not supported")));
                    }
                }
            }
            grants
        }
    };
    if grant_types.contains(&GrantType::ClientCredentials) && !policy.allow_client_credentials {
        return Err(metadata_error(
            "the client_credentials grant is only for clients the operator registers \
             (mcp-oauth client add --client-credentials)",
        ));
    }
    if grant_types.contains(&GrantType::ClientCredentials) && !auth_method.is_confidential() {
        return Err(metadata_error(
            "client_credentials requires a confidential client (a secret-based auth method)",
        ));
    }

    let response_types = match opt_string_array(obj, "response_types")? {
        None => vec!["code".to_owned()],
        Some(list) if list.is_empty() => vec!["code".to_owned()],
        Some(list) => {
            if list.iter().any(|r| r != "code") && auth_method_override.is_none() {
                return Err(metadata_error("only the `code` response type is supported"));
            }
            vec!["code".to_owned()]
        }
    };
    let uses_redirects = grant_types.contains(&GrantType::AuthorizationCode);

    let raw_redirects = opt_string_array(obj, "redirect_uris")?.unwrap_or_default();
    if uses_redirects && raw_redirects.is_empty() {
        return Err(redirect_error(
            "redirect_uris is required for the authorization_code grant",
        ));
    }
    if raw_redirects.len() > 20 {
        return Err(redirect_error("at most 20 redirect_uris may be registered"));
    }
    for raw in &raw_redirects {
        let uri = RedirectUri::parse(raw).map_err(|e| redirect_error(format!("{raw}: {e}")))?;
        if uri.kind() == RedirectKind::PrivateUse {
            if auth_method.is_confidential() {
                return Err(redirect_error(format!(
                    "{raw}: private-use schemes are for native public clients only"
                )));
            }
            if application_type == Some(ApplicationType::Web) {
                return Err(redirect_error(format!(
                    "{raw}: a web application must use https redirect URIs"
                )));
            }
            if !policy.private_use_schemes.allows(uri.url().scheme()) {
                return Err(redirect_error(format!(
                    "{raw}: the scheme `{}` is not allowed on this server",
                    uri.url().scheme()
                )));
            }
        }
    }

    // Unknown scopes are dropped rather than refused (RFC 7591 §3.2.1 lets the server
    // replace requested metadata); the response tells the client what it got.
    let scope = match opt_string(obj, "scope")? {
        None => None,
        Some(raw) => {
            let requested = ScopeSet::parse(&raw)
                .map_err(|_| metadata_error("scope is not a valid space-delimited scope list"))?;
            let kept = requested.intersection(&policy.supported_scopes);
            (!kept.is_empty()).then(|| kept.to_string())
        }
    };

    let contacts = opt_string_array(obj, "contacts")?.unwrap_or_default();
    if contacts.len() > 10 || contacts.iter().any(|c| c.len() > 200) {
        return Err(metadata_error("contacts is too long"));
    }

    Ok(ClientMetadata {
        client_name: display_string(opt_string(obj, "client_name")?, "client_name")?,
        redirect_uris: raw_redirects,
        grant_types,
        response_types,
        token_endpoint_auth_method: auth_method,
        scope,
        application_type,
        client_uri: web_url(opt_string(obj, "client_uri")?, "client_uri")?,
        logo_uri: web_url(opt_string(obj, "logo_uri")?, "logo_uri")?,
        tos_uri: web_url(opt_string(obj, "tos_uri")?, "tos_uri")?,
        policy_uri: web_url(opt_string(obj, "policy_uri")?, "policy_uri")?,
        contacts,
        software_id: display_string(opt_string(obj, "software_id")?, "software_id")?,
        software_version: display_string(opt_string(obj, "software_version")?, "software_version")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy() -> RegistrationPolicy {
        RegistrationPolicy {
            supported_scopes: ScopeSet::parse("mcp offline_access").unwrap(),
            private_use_schemes: PrivateUseSchemes::Any,
            allow_client_credentials: false,
        }
    }

    fn validate(v: Value) -> Result<ClientMetadata, OAuthError> {
        validate_client_metadata(v.as_object().unwrap(), &policy(), None)
    }

    #[test]
    fn applies_rfc7591_defaults() {
        let m = validate(json!({"redirect_uris": ["https://app.example/cb"]})).unwrap();
        assert_eq!(
            m.token_endpoint_auth_method,
            TokenEndpointAuthMethod::ClientSecretBasic
        );
        assert_eq!(m.grant_types, vec![GrantType::AuthorizationCode]);
        assert_eq!(m.response_types, vec!["code"]);
    }

    #[test]
    fn accepts_real_client_shapes() {
        let cursor = json!({
            "client_name": "Cursor", "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
            "redirect_uris": ["cursor://anysphere.cursor-mcp/oauth/callback"]
        });
        assert!(validate(cursor).is_ok());
        let vscode = json!({
            "client_name": "Visual Studio Code", "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "redirect_uris": ["https://vscode.dev/redirect", "http://127.0.0.1:33418/", "http://127.0.0.1/"]
        });
        assert!(validate(vscode).is_ok());
        let claude_code = json!({
            "client_name": "Claude Code", "token_endpoint_auth_method": "none",
            "application_type": "native",
            "redirect_uris": ["http://localhost:54545/callback"]
        });
        assert!(validate(claude_code).is_ok());
    }

    #[test]
    fn refuses_bad_redirects_with_invalid_redirect_uri() {
        let cases = [
            (
                json!({"redirect_uris": ["javascript:alert(1)"], "token_endpoint_auth_method": "none"}),
                "script",
            ),
            (
                json!({"redirect_uris": ["http://evil.example/cb"]}),
                "plain http",
            ),
            (
                json!({"redirect_uris": ["https://a.example/cb#x"]}),
                "fragment",
            ),
            (json!({"redirect_uris": []}), "none registered"),
            (json!({}), "missing"),
            (
                json!({"redirect_uris": ["cursor://x/cb"]}),
                "private-use for a confidential client",
            ),
            (
                json!({"redirect_uris": ["cursor://x/cb"], "token_endpoint_auth_method": "none",
                    "application_type": "web"}),
                "private-use for a web app",
            ),
        ];
        for (body, why) in cases {
            let err = validate(body).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidRedirectUri, "{why}: {err}");
        }
    }

    #[test]
    fn refuses_bad_metadata_with_invalid_client_metadata() {
        let base = |extra: Value| {
            let mut v = json!({"redirect_uris": ["https://a.example/cb"]});
            v.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            v
        };
        let cases = [
            (
                json!({"token_endpoint_auth_method": "private_key_jwt"}),
                "unsupported auth method",
            ),
            (json!({"grant_types": ["implicit"]}), "implicit grant"),
            (json!({"response_types": ["token"]}), "token response type"),
            (
                json!({"grant_types": ["client_credentials"], "token_endpoint_auth_method": "none"}),
                "public client_credentials",
            ),
            (
                json!({"grant_types": ["authorization_code", "client_credentials"]}),
                "client_credentials through an anonymous channel",
            ),
            (json!({"client_name": 7}), "wrong type"),
            (json!({"client_name": "a\u{7}b"}), "control character"),
            (json!({"logo_uri": "javascript:x"}), "script logo"),
            (
                json!({"application_type": "desktop"}),
                "unknown application type",
            ),
            (
                json!({"redirect_uris": "https://a.example/cb"}),
                "string instead of array",
            ),
        ];
        for (extra, why) in cases {
            let err = validate(base(extra)).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidClientMetadata, "{why}: {err}");
        }
    }

    #[test]
    fn names_with_invisible_or_bidirectional_formatting_are_refused() {
        for name in [
            "Claude\u{202E}edoC",     // right-to-left override
            "Cla\u{200B}ude",         // zero-width space
            "Cla\u{200D}ude",         // zero-width joiner
            "\u{2066}Claude\u{2069}", // isolates
            "Claude\u{FEFF}",         // byte order mark
            "Cla\u{00AD}ude",         // soft hyphen
            "Claude\u{2028}Code",     // line separator
            "Claude\u{E000}",         // private use
            "Claude\u{061C}",         // Arabic letter mark
        ] {
            let err =
                validate(json!({"redirect_uris": ["https://a.example/cb"], "client_name": name}))
                    .unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidClientMetadata, "{name:?}");
        }
        for name in [
            "Claude Code",
            "Visual Studio Code",
            "Zoë's Bücher",
            "日本語クライアント",
            "مرحبا",
            "🤖 Bot",
        ] {
            assert!(
                validate(json!({"redirect_uris": ["https://a.example/cb"], "client_name": name}))
                    .is_ok(),
                "{name:?}"
            );
        }
    }

    #[test]
    fn keeps_only_supported_scopes() {
        let m = validate(json!({"redirect_uris": ["https://a.example/cb"], "scope": "mcp admin"}))
            .unwrap();
        assert_eq!(m.scope.as_deref(), Some("mcp"));
        let m =
            validate(json!({"redirect_uris": ["https://a.example/cb"], "scope": "admin"})).unwrap();
        assert_eq!(m.scope, None);
    }

    #[test]
    fn only_the_operator_may_grant_client_credentials() {
        let operator = RegistrationPolicy {
            allow_client_credentials: true,
            ..policy()
        };
        let service = json!({"grant_types": ["client_credentials"], "token_endpoint_auth_method": "client_secret_basic"});
        let m = validate_client_metadata(service.as_object().unwrap(), &operator, None).unwrap();
        assert_eq!(m.grant_types, vec![GrantType::ClientCredentials]);
        let e = validate(service).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidClientMetadata);
        assert!(e.description.contains("operator"), "{e}");
    }

    #[test]
    fn private_use_scheme_policy_is_honoured() {
        let p = RegistrationPolicy {
            private_use_schemes: PrivateUseSchemes::Only(vec!["cursor".into()]),
            ..policy()
        };
        let ok = json!({"redirect_uris": ["cursor://a/cb"], "token_endpoint_auth_method": "none"});
        let bad = json!({"redirect_uris": ["other://a/cb"], "token_endpoint_auth_method": "none"});
        assert!(validate_client_metadata(ok.as_object().unwrap(), &p, None).is_ok());
        assert!(validate_client_metadata(bad.as_object().unwrap(), &p, None).is_err());
    }
}
