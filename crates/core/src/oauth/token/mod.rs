//! The token endpoint (OAuth 2.1 §3.2): one request type per grant, parsed from the form into
//! a tagged enum, each grant's decision in its own module.

pub mod authorization_code;
pub mod client_credentials;
pub mod refresh_token;

use serde::Serialize;

use super::error::{ErrorCode, OAuthError};

/// A token request after parsing, before any state is looked at.
#[derive(Clone, PartialEq, Eq)]
pub enum TokenRequest {
    AuthorizationCode {
        code: String,
        redirect_uri: Option<String>,
        code_verifier: Option<String>,
        resource: Vec<String>,
    },
    RefreshToken {
        refresh_token: String,
        scope: Option<String>,
        resource: Vec<String>,
    },
    ClientCredentials {
        scope: Option<String>,
        resource: Vec<String>,
    },
}

impl std::fmt::Debug for TokenRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Codes and refresh tokens are bearer secrets: never in logs.
        f.write_str(match self {
            Self::AuthorizationCode { .. } => "TokenRequest::AuthorizationCode",
            Self::RefreshToken { .. } => "TokenRequest::RefreshToken",
            Self::ClientCredentials { .. } => "TokenRequest::ClientCredentials",
        })
    }
}

/// Form parameters that are not part of the grant itself.
pub const CLIENT_AUTH_PARAMS: [&str; 2] = ["client_id", "client_secret"];

/// Parse the token request form. Parameters must not repeat (RFC 6749 §3.2), except
/// `resource`, which RFC 8707 allows more than once (and we then refuse as `invalid_target`).
pub fn parse_token_request(form: &[(String, String)]) -> Result<TokenRequest, OAuthError> {
    let mut seen: Vec<&str> = Vec::new();
    for (k, _) in form {
        if k != "resource" {
            if seen.contains(&k.as_str()) {
                return Err(OAuthError::invalid_request(format!(
                    "parameter `{k}` is repeated"
                )));
            }
            seen.push(k);
        }
    }
    let get = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    let required = |name: &'static str| {
        get(name).ok_or_else(|| OAuthError::invalid_request(format!("`{name}` is required")))
    };
    let resource: Vec<String> = form
        .iter()
        .filter(|(k, _)| k == "resource")
        .map(|(_, v)| v.clone())
        .collect();
    match get("grant_type").as_deref() {
        None => Err(OAuthError::invalid_request("`grant_type` is required")),
        Some("authorization_code") => Ok(TokenRequest::AuthorizationCode {
            code: required("code")?,
            redirect_uri: get("redirect_uri"),
            code_verifier: get("code_verifier"),
            resource,
        }),
        Some("refresh_token") => Ok(TokenRequest::RefreshToken {
            refresh_token: required("refresh_token")?,
            scope: get("scope"),
            resource,
        }),
        Some("client_credentials") => Ok(TokenRequest::ClientCredentials {
            scope: get("scope"),
            resource,
        }),
        Some(other) => Err(OAuthError::new(
            ErrorCode::UnsupportedGrantType,
            format!("grant_type `{other}` is not supported"),
        )),
    }
}

/// Successful token response (OAuth 2.1 §3.2.3).
#[derive(Clone, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    pub scope: String,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TokenResponse(scope={}, expires_in={})",
            self.scope, self.expires_in
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn dispatches_on_grant_type() {
        let r = parse_token_request(&form(&[
            ("grant_type", "authorization_code"),
            ("code", "c"),
        ]))
        .unwrap();
        assert!(matches!(r, TokenRequest::AuthorizationCode { .. }));
        let r = parse_token_request(&form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", "r"),
        ]))
        .unwrap();
        assert!(matches!(r, TokenRequest::RefreshToken { .. }));
        let r = parse_token_request(&form(&[("grant_type", "client_credentials")])).unwrap();
        assert!(matches!(r, TokenRequest::ClientCredentials { .. }));
    }

    #[test]
    fn errors_name_the_problem() {
        let e = parse_token_request(&form(&[("grant_type", "password")])).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnsupportedGrantType);
        let e = parse_token_request(&form(&[("code", "c")])).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        let e = parse_token_request(&form(&[("grant_type", "authorization_code")])).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        let e = parse_token_request(&form(&[
            ("grant_type", "authorization_code"),
            ("code", "a"),
            ("code", "b"),
        ]))
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
    }

    #[test]
    fn debug_hides_secrets() {
        let r = parse_token_request(&form(&[
            ("grant_type", "authorization_code"),
            ("code", "SECRETCODE"),
        ]))
        .unwrap();
        assert!(!format!("{r:?}").contains("SECRETCODE"));
    }
}
