//! The protected-resource side: RFC 9728 metadata for each MCP endpoint, and the bearer layer
//! that authenticates every request to it before anything else runs.

pub mod bearer;
pub mod metadata;

use std::sync::Arc;

use mcp_oauth_core::domain::{ResourceUri, ScopeSet};
use mcp_oauth_core::oauth::access_token::AccessTokenClaims;

/// One protected endpoint (Streamable HTTP at `/mcp`, legacy SSE at `/sse`).
#[derive(Debug, Clone)]
pub struct ProtectedResource {
    /// Canonical URI: the PRM `resource` and the audience its tokens must carry.
    pub resource: ResourceUri,
    /// Where its metadata is served (path-inserted well-known URL).
    pub metadata_url: String,
    /// Scopes every request needs (the PRM's `scopes_supported`).
    pub base_scopes: ScopeSet,
    /// Whether tokens without a user (client credentials) are accepted.
    pub accepts_client_tokens: bool,
}

/// Who is calling, as established by the bearer layer; tools read it from the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user id (or the client id for client-credentials tokens).
    pub subject: String,
    pub client_id: String,
    pub scopes: ScopeSet,
    pub token_id: String,
    pub grant_id: Option<String>,
    pub expires_at: i64,
}

/// Access tokens whose signature has been verified, so that a client presenting the same
/// token on every request pays for the signature check once. Keyed by the token's SHA-256
/// (raw bearer tokens are not kept); an entry is only ever a token that passed verification,
/// and its claims are still checked (expiry, audience, revocation) on every request.
///
/// Bounded, with S3-FIFO eviction (`quick_cache`): a token seen once (a burst of new or
/// one-off tokens) is evicted before tokens in use, so a flood cannot flush the cache.
pub struct VerifiedTokens {
    entries: quick_cache::sync::Cache<[u8; 32], Arc<VerifiedToken>>,
    capacity: usize,
}

impl Default for VerifiedTokens {
    fn default() -> Self {
        Self::with_capacity(VERIFIED_TOKENS_CAPACITY)
    }
}

/// A token whose signature checked out, with its scopes parsed once.
#[derive(Debug)]
pub struct VerifiedToken {
    pub claims: AccessTokenClaims,
    pub scopes: ScopeSet,
}

impl VerifiedToken {
    pub fn new(claims: AccessTokenClaims) -> Self {
        let scopes = ScopeSet::parse(&claims.scope).unwrap_or_default();
        Self { claims, scopes }
    }
}

/// About 300 bytes an entry: a few MB at most.
const VERIFIED_TOKENS_CAPACITY: usize = 10_000;

impl VerifiedTokens {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            entries: quick_cache::sync::Cache::new(capacity),
            capacity,
        }
    }

    fn key(token: &str) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(token.as_bytes()).into()
    }

    pub fn get(&self, token: &str) -> Option<Arc<VerifiedToken>> {
        self.entries.get(&Self::key(token))
    }

    /// The most entries held at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `token` is held, without counting as a use.
    pub fn contains(&self, token: &str) -> bool {
        self.entries.peek(&Self::key(token)).is_some()
    }

    pub fn insert(&self, token: &str, verified: Arc<VerifiedToken>) {
        self.entries.insert(Self::key(token), verified);
    }
}
