//! Client authentication at the token, revocation and introspection endpoints
//! (OAuth 2.1 §2.4, RFC 6749 §2.3.1).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::client::{Client, TokenEndpointAuthMethod};
use super::error::OAuthError;

/// The credentials a request carried, before we know whether they are right.
#[derive(Clone, PartialEq, Eq)]
pub enum PresentedCredentials {
    /// `Authorization: Basic` (client_secret_basic).
    Basic { client_id: String, secret: String },
    /// `client_id` and `client_secret` in the form body (client_secret_post).
    Post { client_id: String, secret: String },
    /// `client_id` alone: a public client (`none`).
    IdOnly { client_id: String },
}

impl std::fmt::Debug for PresentedCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PresentedCredentials({:?}, client_id={})",
            self.method(),
            self.client_id()
        )
    }
}

impl PresentedCredentials {
    pub fn client_id(&self) -> &str {
        match self {
            Self::Basic { client_id, .. }
            | Self::Post { client_id, .. }
            | Self::IdOnly { client_id } => client_id,
        }
    }

    pub fn method(&self) -> TokenEndpointAuthMethod {
        match self {
            Self::Basic { .. } => TokenEndpointAuthMethod::ClientSecretBasic,
            Self::Post { .. } => TokenEndpointAuthMethod::ClientSecretPost,
            Self::IdOnly { .. } => TokenEndpointAuthMethod::None,
        }
    }
}

/// Read credentials from the `Authorization` header and the form's `client_id` /
/// `client_secret`. Using two methods at once is an error (RFC 6749 §2.3).
pub fn parse_credentials(
    authorization: Option<&str>,
    form_client_id: Option<&str>,
    form_secret: Option<&str>,
) -> Result<PresentedCredentials, OAuthError> {
    let basic = match authorization {
        Some(h) => {
            let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
            if !scheme.eq_ignore_ascii_case("basic") {
                return Err(OAuthError::invalid_client(
                    "unsupported Authorization scheme",
                ));
            }
            Some(decode_basic(rest.trim())?)
        }
        None => None,
    };
    match (basic, form_client_id, form_secret) {
        (Some(_), _, Some(_)) => Err(OAuthError::invalid_request(
            "use one client authentication method, not both Basic and client_secret",
        )),
        (Some((id, secret)), form_id, None) => {
            if form_id.is_some_and(|f| f != id) {
                return Err(OAuthError::invalid_request(
                    "client_id does not match Basic credentials",
                ));
            }
            Ok(PresentedCredentials::Basic {
                client_id: id,
                secret,
            })
        }
        (None, Some(id), Some(secret)) => Ok(PresentedCredentials::Post {
            client_id: id.to_owned(),
            secret: secret.to_owned(),
        }),
        (None, Some(id), None) => Ok(PresentedCredentials::IdOnly {
            client_id: id.to_owned(),
        }),
        (None, None, _) => Err(OAuthError::invalid_client(
            "client authentication is required",
        )),
    }
}

/// RFC 6749 §2.3.1: both halves are form-urlencoded before base64.
fn decode_basic(encoded: &str) -> Result<(String, String), OAuthError> {
    let bad = || OAuthError::invalid_client("malformed Basic credentials");
    let bytes = STANDARD.decode(encoded).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (id, secret) = text.split_once(':').ok_or_else(bad)?;
    let decode = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .ok_or_else(bad)
    };
    let id = decode(id)?;
    if id.is_empty() {
        return Err(bad());
    }
    Ok((id, decode(secret)?))
}

/// Check presented credentials against the registered client. The method must be the one
/// the client registered: a confidential client that sends no secret, or a secret by another
/// method, is refused with 401 `invalid_client`.
pub fn authenticate_client(
    presented: &PresentedCredentials,
    client: &Client,
) -> Result<(), OAuthError> {
    let registered = client.auth_method();
    if presented.method() != registered {
        return Err(OAuthError::invalid_client(match registered {
            TokenEndpointAuthMethod::None => "public client must not send a client secret",
            TokenEndpointAuthMethod::ClientSecretBasic => {
                "client must authenticate with client_secret_basic"
            }
            TokenEndpointAuthMethod::ClientSecretPost => {
                "client must authenticate with client_secret_post"
            }
        }));
    }
    match presented {
        PresentedCredentials::IdOnly { .. } => Ok(()),
        PresentedCredentials::Basic { secret, .. } | PresentedCredentials::Post { secret, .. } => {
            match &client.secret_hash {
                Some(hash) if hash.verify(secret) => Ok(()),
                _ => Err(OAuthError::invalid_client("client authentication failed")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ClientId, SecretHash};
    use crate::oauth::client::{ClientKind, ClientMetadata, GrantType};

    fn client(method: TokenEndpointAuthMethod, secret: Option<&str>) -> Client {
        let metadata = ClientMetadata {
            client_name: None,
            redirect_uris: vec![],
            grant_types: vec![GrantType::AuthorizationCode],
            response_types: vec!["code".into()],
            token_endpoint_auth_method: method,
            scope: None,
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
            secret.map(SecretHash::of),
        )
    }

    fn basic(id: &str, secret: &str) -> String {
        format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
    }

    #[test]
    fn parses_each_method() {
        let b = parse_credentials(Some(&basic("c1", "s%3Ax")), None, None).unwrap();
        assert_eq!(
            b,
            PresentedCredentials::Basic {
                client_id: "c1".into(),
                secret: "s:x".into()
            }
        );
        let p = parse_credentials(None, Some("c1"), Some("s")).unwrap();
        assert_eq!(p.method(), TokenEndpointAuthMethod::ClientSecretPost);
        let n = parse_credentials(None, Some("c1"), None).unwrap();
        assert_eq!(n.method(), TokenEndpointAuthMethod::None);
    }

    #[test]
    fn refuses_ambiguous_or_missing_credentials() {
        assert!(parse_credentials(Some(&basic("c1", "s")), Some("c1"), Some("s")).is_err());
        assert!(parse_credentials(Some(&basic("c1", "s")), Some("c2"), None).is_err());
        assert!(parse_credentials(None, None, None).is_err());
        assert!(parse_credentials(Some("Basic !!!"), None, None).is_err());
        assert!(parse_credentials(Some("Bearer x"), None, None).is_err());
    }

    #[test]
    fn method_must_match_registration() {
        let conf = client(TokenEndpointAuthMethod::ClientSecretBasic, Some("s3cret"));
        let ok = PresentedCredentials::Basic {
            client_id: "c1".into(),
            secret: "s3cret".into(),
        };
        assert!(authenticate_client(&ok, &conf).is_ok());
        let wrong = PresentedCredentials::Basic {
            client_id: "c1".into(),
            secret: "nope".into(),
        };
        assert!(authenticate_client(&wrong, &conf).is_err());
        let post = PresentedCredentials::Post {
            client_id: "c1".into(),
            secret: "s3cret".into(),
        };
        assert!(
            authenticate_client(&post, &conf).is_err(),
            "registered basic, used post"
        );
        let none = PresentedCredentials::IdOnly {
            client_id: "c1".into(),
        };
        let err = authenticate_client(&none, &conf).unwrap_err();
        assert_eq!(err.status(), 401);
        let public = client(TokenEndpointAuthMethod::None, None);
        assert!(authenticate_client(&none, &public).is_ok());
        assert!(authenticate_client(&ok, &public).is_err());
    }
}
