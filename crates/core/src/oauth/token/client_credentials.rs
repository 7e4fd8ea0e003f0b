//! `grant_type=client_credentials` (OAuth 2.1 §4.2): a confidential client acting for itself.
//!
//! A token from this grant carries no user, so it is only for machines the operator vouches
//! for: the client must have been registered by the operator (dynamic registration and
//! metadata documents are anonymous), and the resource must be one that accepts tokens
//! without a user at all (none of the MCP endpoints do by default).

use super::super::authorize::{AuthorizePolicy, decide_resource, decide_scope};
use super::super::client::{Client, ClientKind, GrantType};
use super::super::error::OAuthError;
use crate::domain::scope::OFFLINE_ACCESS;
use crate::domain::{ResourceUri, ScopeSet};

/// Decide the scope and audience of a client credentials token. No refresh token is issued
/// for this grant (OAuth 2.1 §4.2.3), so `offline_access` is dropped. `client_token_resources`
/// are the resources that accept tokens without a user; the first is the default.
pub fn check_client_credentials(
    client: &Client,
    requested_scope: Option<&str>,
    requested_resource: &[String],
    policy: &AuthorizePolicy,
    client_token_resources: &[ResourceUri],
) -> Result<(ScopeSet, ResourceUri), OAuthError> {
    if client.is_public()
        || client.kind != ClientKind::Preregistered
        || !client.allows_grant(GrantType::ClientCredentials)
    {
        return Err(OAuthError::unauthorized_client(
            "client is not registered for the client_credentials grant \
             (only clients the operator registers with --client-credentials are)",
        ));
    }
    let scope = decide_scope(requested_scope, client, policy)?.without(OFFLINE_ACCESS);
    if client_token_resources.is_empty() {
        return Err(OAuthError::invalid_target(
            "no resource on this server accepts tokens issued without a user \
             (see mcp.accept_client_credentials)",
        ));
    }
    let resource = decide_resource(requested_resource, client_token_resources)?;
    Ok((scope, resource))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ClientId;
    use crate::oauth::ErrorCode;
    use crate::oauth::client::{ClientMetadata, TokenEndpointAuthMethod};

    fn client(kind: ClientKind, method: TokenEndpointAuthMethod) -> Client {
        let metadata = ClientMetadata {
            client_name: None,
            redirect_uris: vec![],
            grant_types: vec![GrantType::ClientCredentials],
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
        Client::from_metadata(ClientId::parse("svc").unwrap(), kind, metadata, None)
    }

    fn policy() -> AuthorizePolicy {
        AuthorizePolicy {
            supported_scopes: ScopeSet::parse("mcp offline_access").unwrap(),
            default_scopes: ScopeSet::parse("mcp").unwrap(),
            resources: vec![ResourceUri::parse("https://as.example/mcp").unwrap()],
        }
    }

    #[test]
    fn an_operator_registered_client_gets_a_token_for_a_resource_that_accepts_it() {
        let c = client(
            ClientKind::Preregistered,
            TokenEndpointAuthMethod::ClientSecretBasic,
        );
        let (scope, resource) = check_client_credentials(
            &c,
            Some("mcp offline_access"),
            &[],
            &policy(),
            &policy().resources,
        )
        .unwrap();
        assert_eq!(scope.to_string(), "mcp");
        assert_eq!(resource.as_str(), "https://as.example/mcp");
    }

    #[test]
    fn anonymously_registered_clients_never_get_a_token_without_a_user() {
        for kind in [ClientKind::Dynamic, ClientKind::MetadataDocument] {
            let c = client(kind, TokenEndpointAuthMethod::ClientSecretBasic);
            let e = check_client_credentials(&c, None, &[], &policy(), &policy().resources)
                .unwrap_err();
            assert_eq!(e.code, ErrorCode::UnauthorizedClient, "{kind:?}");
        }
        let public = client(ClientKind::Preregistered, TokenEndpointAuthMethod::None);
        let e = check_client_credentials(&public, None, &[], &policy(), &policy().resources)
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::UnauthorizedClient);
    }

    #[test]
    fn a_resource_that_refuses_client_tokens_is_invalid_target() {
        let c = client(
            ClientKind::Preregistered,
            TokenEndpointAuthMethod::ClientSecretBasic,
        );
        let e = check_client_credentials(&c, None, &[], &policy(), &[]).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidTarget);
        let mcp = ["https://as.example/mcp".to_owned()];
        let e = check_client_credentials(&c, None, &mcp, &policy(), &[]).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidTarget);
    }
}
