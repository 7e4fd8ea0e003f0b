//! Authorization server decisions (OAuth 2.1 draft 13 and the RFCs MCP authorization names).

pub mod access_token;
pub mod authorize;
pub mod cimd;
pub mod client;
pub mod client_auth;
pub mod error;
pub mod metadata;
pub mod registration;
pub mod token;

pub use client::{ApplicationType, Client, ClientKind, GrantType, TokenEndpointAuthMethod};
pub use error::{ErrorCode, OAuthError};
