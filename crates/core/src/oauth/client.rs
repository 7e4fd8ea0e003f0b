//! A registered OAuth client, whichever way it was registered.

use serde::{Deserialize, Serialize};

use crate::domain::{ClientId, RedirectUri, ScopeSet, SecretHash};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientKind {
    /// Registered through RFC 7591 dynamic registration.
    Dynamic,
    /// Registered by an operator with `mcp-oauth client add`.
    Preregistered,
    /// Identified by the URL of its Client ID Metadata Document.
    MetadataDocument,
}

impl ClientKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dynamic => "dynamic",
            Self::Preregistered => "preregistered",
            Self::MetadataDocument => "metadata_document",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "dynamic" => Some(Self::Dynamic),
            "preregistered" => Some(Self::Preregistered),
            "metadata_document" => Some(Self::MetadataDocument),
            _ => None,
        }
    }
}

/// Token endpoint authentication methods we implement (RFC 7591 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenEndpointAuthMethod {
    None,
    ClientSecretBasic,
    ClientSecretPost,
}

impl TokenEndpointAuthMethod {
    pub const ALL: [&'static str; 3] = ["none", "client_secret_basic", "client_secret_post"];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "none" => Some(Self::None),
            "client_secret_basic" => Some(Self::ClientSecretBasic),
            "client_secret_post" => Some(Self::ClientSecretPost),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
        }
    }

    pub fn is_confidential(self) -> bool {
        self != Self::None
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantType {
    AuthorizationCode,
    RefreshToken,
    ClientCredentials,
}

impl GrantType {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "authorization_code" => Some(Self::AuthorizationCode),
            "refresh_token" => Some(Self::RefreshToken),
            "client_credentials" => Some(Self::ClientCredentials),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::AuthorizationCode => "authorization_code",
            Self::RefreshToken => "refresh_token",
            Self::ClientCredentials => "client_credentials",
        }
    }
}

/// OpenID Connect Registration `application_type`; MCP 2026-07-28 asks clients to send it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplicationType {
    Web,
    Native,
}

/// Client metadata as we keep it (the RFC 7591 §2 fields we honour). This is what is stored
/// as JSON and returned from registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientMetadata {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<GrantType>,
    pub response_types: Vec<String>,
    pub token_endpoint_auth_method: TokenEndpointAuthMethod,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application_type: Option<ApplicationType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logo_uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tos_uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contacts: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub software_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub software_version: Option<String>,
}

/// A client ready for protocol decisions.
#[derive(Debug, Clone)]
pub struct Client {
    pub id: ClientId,
    pub kind: ClientKind,
    pub metadata: ClientMetadata,
    pub redirect_uris: Vec<RedirectUri>,
    pub secret_hash: Option<SecretHash>,
    /// Scopes this client may ask for; `None` means any scope the server supports.
    pub allowed_scopes: Option<ScopeSet>,
}

impl Client {
    /// Build from stored metadata. Metadata was validated when it was registered, so a URI
    /// that no longer parses (rules tightened since) is dropped rather than trusted.
    pub fn from_metadata(
        id: ClientId,
        kind: ClientKind,
        metadata: ClientMetadata,
        secret_hash: Option<SecretHash>,
    ) -> Self {
        let redirect_uris = metadata
            .redirect_uris
            .iter()
            .filter_map(|u| RedirectUri::parse(u).ok())
            .collect();
        let allowed_scopes = metadata
            .scope
            .as_deref()
            .and_then(|s| ScopeSet::parse(s).ok())
            .filter(|s| !s.is_empty());
        Self {
            id,
            kind,
            metadata,
            redirect_uris,
            secret_hash,
            allowed_scopes,
        }
    }

    pub fn auth_method(&self) -> TokenEndpointAuthMethod {
        self.metadata.token_endpoint_auth_method
    }

    pub fn is_public(&self) -> bool {
        !self.auth_method().is_confidential()
    }

    pub fn allows_grant(&self, grant: GrantType) -> bool {
        self.metadata.grant_types.contains(&grant)
    }

    pub fn display_name(&self) -> &str {
        self.metadata
            .client_name
            .as_deref()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or(self.id.as_str())
    }

    /// The registered redirect URI that a requested one matches, if any.
    pub fn find_redirect_uri(&self, requested: &RedirectUri) -> Option<&RedirectUri> {
        self.redirect_uris.iter().find(|r| r.matches(requested))
    }
}
