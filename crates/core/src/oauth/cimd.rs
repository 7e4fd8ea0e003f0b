//! Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document; MCP
//! 2025-11-25 and later prefer them to dynamic registration): the client id is an https URL
//! and the client's metadata is the JSON document served there.

use serde_json::Value;
use url::Url;

use super::client::{ClientMetadata, TokenEndpointAuthMethod};
use super::error::{ErrorCode, OAuthError};
use super::registration::{RegistrationPolicy, validate_client_metadata};
use crate::UnixTime;

fn invalid_client(d: impl Into<std::borrow::Cow<'static, str>>) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidClient, d)
}

/// CIMD §3: an https URL with a path, no fragment, no user information, no dot segments.
///
/// `allow_http_loopback` is a development setting: it also accepts `http://` URLs on
/// loopback hosts, so that a local test can serve documents without a certificate.
pub fn validate_document_url(
    client_id: &str,
    allow_http_loopback: bool,
) -> Result<Url, OAuthError> {
    let url = Url::parse(client_id)
        .map_err(|_| invalid_client("client_id is not a valid metadata document URL"))?;
    let loopback_dev = allow_http_loopback && url.scheme() == "http" && is_loopback(&url);
    if url.scheme() != "https" && !loopback_dev {
        return Err(invalid_client(
            "a metadata document client_id must use https",
        ));
    }
    if url.host().is_none() || !url.username().is_empty() || url.password().is_some() {
        return Err(invalid_client(
            "a metadata document client_id needs a host and no user info",
        ));
    }
    if url.fragment().is_some() || client_id.contains('#') {
        return Err(invalid_client(
            "a metadata document client_id must not have a fragment",
        ));
    }
    if url.path() == "/" || url.path().is_empty() {
        return Err(invalid_client(
            "a metadata document client_id must have a path",
        ));
    }
    let raw_path = client_id
        .split_once("://")
        .map(|(_, rest)| rest.split_once('/').map_or("", |(_, p)| p))
        .unwrap_or("");
    if raw_path
        .split(['/', '?'])
        .any(|seg| seg == "." || seg == "..")
    {
        return Err(invalid_client(
            "a metadata document client_id must not have dot segments",
        ));
    }
    Ok(url)
}

/// Does this client id name a metadata document (as opposed to an id we issued)?
pub fn is_document_url(client_id: &str, allow_http_loopback: bool) -> bool {
    client_id.starts_with("https://")
        || (allow_http_loopback
            && client_id.starts_with("http://")
            && Url::parse(client_id).is_ok_and(|u| is_loopback(&u)))
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Validate a fetched document for `client_id` (CIMD §4.1, MCP AS-8).
///
/// The document's `client_id` must equal the URL exactly. It may not carry a secret, since
/// it is public. Our token endpoint supports `none` for such clients; when the document
/// prefers another method but lists `none` among `token_endpoint_auth_methods_supported`
/// (OpenID "RP Metadata Choices", as ChatGPT's does), we pick `none`.
pub fn validate_document(
    client_id: &str,
    doc: &Value,
    policy: &RegistrationPolicy,
) -> Result<ClientMetadata, OAuthError> {
    let obj = doc
        .as_object()
        .ok_or_else(|| invalid_client("client metadata document is not a JSON object"))?;
    match obj.get("client_id") {
        Some(Value::String(id)) if id == client_id => {}
        _ => {
            return Err(invalid_client(
                "client metadata document's client_id does not equal its URL",
            ));
        }
    }
    if obj.contains_key("client_secret") || obj.contains_key("client_secret_expires_at") {
        return Err(invalid_client(
            "client metadata document must not contain a client secret",
        ));
    }
    let name_ok = matches!(obj.get("client_name"), Some(Value::String(s)) if !s.trim().is_empty());
    if !name_ok {
        return Err(invalid_client(
            "client metadata document needs a client_name",
        ));
    }
    let declared = obj
        .get("token_endpoint_auth_method")
        .and_then(Value::as_str);
    let choices: Vec<&str> = obj
        .get("token_endpoint_auth_methods_supported")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let none_ok = matches!(declared, None | Some("none")) || choices.contains(&"none");
    if !none_ok {
        return Err(invalid_client(format!(
            "client metadata document requires token endpoint authentication `{}`; this \
             server supports only `none` for metadata document clients",
            declared.unwrap_or("?")
        )));
    }
    validate_client_metadata(obj, policy, Some(TokenEndpointAuthMethod::None)).map_err(|e| {
        invalid_client(format!(
            "client metadata document is invalid: {}",
            e.description
        ))
    })
}

/// How long a fetched document may be reused, from its `Cache-Control` header (CIMD §4.3:
/// SHOULD respect HTTP caching), clamped to `[min, max]` seconds.
pub fn cache_lifetime(cache_control: Option<&str>, min: i64, max: i64) -> i64 {
    let Some(header) = cache_control else {
        return min;
    };
    let mut lifetime = None;
    for directive in header.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return min;
        }
        if let Some(v) = lower.strip_prefix("max-age=") {
            lifetime = v.trim_matches('"').parse::<i64>().ok();
        }
    }
    lifetime.unwrap_or(min).clamp(min, max)
}

/// Cache entry expiry.
pub fn cache_expiry(now: UnixTime, cache_control: Option<&str>, min: i64, max: i64) -> UnixTime {
    now + cache_lifetime(cache_control, min, max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ScopeSet;
    use crate::oauth::registration::PrivateUseSchemes;
    use serde_json::json;

    fn policy() -> RegistrationPolicy {
        RegistrationPolicy {
            supported_scopes: ScopeSet::parse("mcp").unwrap(),
            private_use_schemes: PrivateUseSchemes::Any,
            allow_client_credentials: false,
        }
    }

    const URL: &str = "https://chatgpt.com/oauth/abc/client.json";

    #[test]
    fn url_rules() {
        assert!(validate_document_url(URL, false).is_ok());
        assert!(validate_document_url("http://127.0.0.1:9/c.json", true).is_ok());
        assert!(validate_document_url("http://127.0.0.1:9/c.json", false).is_err());
        assert!(validate_document_url("http://example.com/c.json", true).is_err());
        assert!(is_document_url(URL, false) && !is_document_url("abc", true));
        for bad in [
            "http://app.example/client.json",
            "https://app.example",
            "https://app.example/",
            "https://app.example/a#b",
            "https://u:p@app.example/c.json",
            "https://app.example/a/../c.json",
            "https://app.example/./c.json",
        ] {
            assert!(validate_document_url(bad, false).is_err(), "{bad}");
        }
    }

    #[test]
    fn chatgpt_shaped_document_negotiates_none() {
        let doc = json!({
            "client_id": URL, "client_name": "ChatGPT",
            "redirect_uris": ["https://chatgpt.com/connector/oauth/abc"],
            "grant_types": ["authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:jwt-bearer"],
            "response_types": ["code", "id_token"],
            "token_endpoint_auth_method": "private_key_jwt",
            "token_endpoint_auth_methods_supported": ["none", "private_key_jwt"],
            "jwks_uri": "https://chatgpt.com/oauth/abc/jwks.json"
        });
        let m = validate_document(URL, &doc, &policy()).unwrap();
        assert_eq!(m.token_endpoint_auth_method, TokenEndpointAuthMethod::None);
        assert_eq!(
            m.redirect_uris,
            vec!["https://chatgpt.com/connector/oauth/abc"]
        );
    }

    #[test]
    fn refuses_mismatched_id_secrets_and_private_key_jwt_only() {
        let base = json!({"client_id": URL, "client_name": "x", "redirect_uris": ["https://a.example/cb"]});
        assert!(validate_document(URL, &base, &policy()).is_ok());
        let mut other = base.clone();
        other["client_id"] = json!("https://chatgpt.com/oauth/abc/client.json/");
        assert!(
            validate_document(URL, &other, &policy()).is_err(),
            "client_id must match exactly"
        );
        let mut secret = base.clone();
        secret["client_secret"] = json!("s");
        assert!(validate_document(URL, &secret, &policy()).is_err());
        let mut jwt = base.clone();
        jwt["token_endpoint_auth_method"] = json!("private_key_jwt");
        assert!(validate_document(URL, &jwt, &policy()).is_err());
        let mut no_name = base.clone();
        no_name.as_object_mut().unwrap().remove("client_name");
        assert!(validate_document(URL, &no_name, &policy()).is_err());
        assert!(validate_document(URL, &json!([1]), &policy()).is_err());
    }

    #[test]
    fn cache_lifetime_honours_max_age_within_bounds() {
        assert_eq!(cache_lifetime(None, 300, 86400), 300);
        assert_eq!(
            cache_lifetime(Some("public, max-age=3600"), 300, 86400),
            3600
        );
        assert_eq!(cache_lifetime(Some("max-age=5"), 300, 86400), 300);
        assert_eq!(cache_lifetime(Some("max-age=99999999"), 300, 86400), 86400);
        assert_eq!(cache_lifetime(Some("no-store"), 300, 86400), 300);
        assert_eq!(cache_expiry(1000, Some("max-age=600"), 300, 86400), 1600);
    }
}
