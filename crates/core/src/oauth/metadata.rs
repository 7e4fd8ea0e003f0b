//! Authorization server metadata (RFC 8414 §2), also served as OpenID Connect discovery.

use serde::Serialize;

use super::client::TokenEndpointAuthMethod;

#[derive(Debug, Clone, Serialize)]
pub struct AuthorizationServerMetadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    /// Absent when dynamic registration is disabled: MCP clients register whenever it is
    /// present, instead of falling back to a pre-registered client id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registration_endpoint: Option<String>,
    pub revocation_endpoint: String,
    pub introspection_endpoint: String,
    pub scopes_supported: Vec<String>,
    pub response_types_supported: [&'static str; 1],
    pub response_modes_supported: [&'static str; 1],
    pub grant_types_supported: Vec<&'static str>,
    pub token_endpoint_auth_methods_supported: [&'static str; 3],
    pub revocation_endpoint_auth_methods_supported: [&'static str; 3],
    pub introspection_endpoint_auth_methods_supported: [&'static str; 2],
    /// MCP: clients MUST refuse to proceed when this is absent.
    pub code_challenge_methods_supported: [&'static str; 1],
    pub client_id_metadata_document_supported: bool,
    /// RFC 9207 §3.
    pub authorization_response_iss_parameter_supported: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_documentation: Option<String>,
    // OpenID Connect Discovery 1.0 §3 REQUIRED members, so that clients probing
    // `openid-configuration` (MCP 2025-11-25 and later) accept the document.
    pub subject_types_supported: [&'static str; 1],
    pub id_token_signing_alg_values_supported: Vec<String>,
}

pub struct MetadataInput<'a> {
    pub issuer: &'a str,
    pub scopes_supported: Vec<String>,
    pub signing_alg: &'a str,
    /// Dynamic client registration (RFC 7591) is enabled.
    pub registration_enabled: bool,
    /// Client ID Metadata Documents are accepted.
    pub cimd_enabled: bool,
    /// Some resource accepts tokens without a user, so `client_credentials` can be used.
    pub client_credentials_enabled: bool,
}

/// Build the document. Endpoint URLs hang off the issuer, which has no trailing slash.
pub fn authorization_server_metadata(input: MetadataInput<'_>) -> AuthorizationServerMetadata {
    let at = |path: &str| format!("{}{path}", input.issuer);
    let secret_methods = [
        TokenEndpointAuthMethod::ClientSecretBasic.as_str(),
        TokenEndpointAuthMethod::ClientSecretPost.as_str(),
    ];
    AuthorizationServerMetadata {
        issuer: input.issuer.to_owned(),
        authorization_endpoint: at("/authorize"),
        token_endpoint: at("/token"),
        jwks_uri: at("/jwks.json"),
        registration_endpoint: input.registration_enabled.then(|| at("/register")),
        revocation_endpoint: at("/revoke"),
        introspection_endpoint: at("/introspect"),
        scopes_supported: input.scopes_supported,
        response_types_supported: ["code"],
        response_modes_supported: ["query"],
        grant_types_supported: {
            let mut grants = vec!["authorization_code", "refresh_token"];
            if input.client_credentials_enabled {
                grants.push("client_credentials");
            }
            grants
        },
        token_endpoint_auth_methods_supported: TokenEndpointAuthMethod::ALL,
        revocation_endpoint_auth_methods_supported: TokenEndpointAuthMethod::ALL,
        introspection_endpoint_auth_methods_supported: secret_methods,
        code_challenge_methods_supported: ["S256"],
        client_id_metadata_document_supported: input.cimd_enabled,
        authorization_response_iss_parameter_supported: true,
        service_documentation: None,
        subject_types_supported: ["public"],
        id_token_signing_alg_values_supported: vec![input.signing_alg.to_owned()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(registration_enabled: bool, cimd_enabled: bool) -> MetadataInput<'static> {
        MetadataInput {
            issuer: "https://as.example",
            scopes_supported: vec!["mcp".into()],
            signing_alg: "EdDSA",
            registration_enabled,
            cimd_enabled,
            client_credentials_enabled: false,
        }
    }

    #[test]
    fn advertises_only_the_registration_methods_that_are_enabled() {
        let on = serde_json::to_value(authorization_server_metadata(input(true, true))).unwrap();
        assert_eq!(on["registration_endpoint"], "https://as.example/register");
        assert_eq!(on["client_id_metadata_document_supported"], true);
        let off = serde_json::to_value(authorization_server_metadata(input(false, false))).unwrap();
        assert!(off.get("registration_endpoint").is_none());
        assert_eq!(off["client_id_metadata_document_supported"], false);
    }

    #[test]
    fn advertises_client_credentials_only_when_a_resource_accepts_its_tokens() {
        let off = serde_json::to_value(authorization_server_metadata(input(true, true))).unwrap();
        assert_eq!(
            off["grant_types_supported"],
            serde_json::json!(["authorization_code", "refresh_token"])
        );
        let on = serde_json::to_value(authorization_server_metadata(MetadataInput {
            client_credentials_enabled: true,
            ..input(true, true)
        }))
        .unwrap();
        assert_eq!(
            on["grant_types_supported"],
            serde_json::json!(["authorization_code", "refresh_token", "client_credentials"])
        );
    }
}
