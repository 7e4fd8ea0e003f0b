//! `grant_type=client_credentials` (OAuth 2.1 §4.2): a confidential client acting for itself.

use super::super::authorize::{AuthorizePolicy, decide_resource, decide_scope};
use super::super::client::{Client, GrantType};
use super::super::error::OAuthError;
use crate::domain::scope::OFFLINE_ACCESS;
use crate::domain::{ResourceUri, ScopeSet};

/// Decide the scope and audience of a client credentials token. No refresh token is issued
/// for this grant (OAuth 2.1 §4.2.3), so `offline_access` is dropped.
pub fn check_client_credentials(
    client: &Client,
    requested_scope: Option<&str>,
    requested_resource: &[String],
    policy: &AuthorizePolicy,
) -> Result<(ScopeSet, ResourceUri), OAuthError> {
    if client.is_public() || !client.allows_grant(GrantType::ClientCredentials) {
        return Err(OAuthError::unauthorized_client(
            "client is not registered for the client_credentials grant",
        ));
    }
    let scope = decide_scope(requested_scope, client, policy)?.without(OFFLINE_ACCESS);
    let resource = decide_resource(requested_resource, &policy.resources)?;
    Ok((scope, resource))
}
