//! Finding the client a request names: a registered one from the database, or a metadata
//! document client fetched (and cached in the database, so every instance shares it).

use mcp_oauth_core::analytics::OAuthEvent;
use mcp_oauth_core::security::events::SecurityEvent;

use mcp_oauth_core::domain::{ClientId, SecretHash};
use mcp_oauth_core::oauth::client::{Client, ClientKind, ClientMetadata};
use mcp_oauth_core::oauth::{ErrorCode, OAuthError, cimd};
use mcp_oauth_store::ClientRow;

use crate::oauth::cimd::FetchError;
use crate::security::Requester;
use crate::state::AppState;
use mcp_oauth_core::security::rate_limit::{EndpointClass, RateKey};

#[derive(Debug)]
pub enum ClientLookupError {
    /// No such client, or a document that could not be used: the message says which.
    NotFound(OAuthError),
    /// The caller's address has made us fetch too many metadata documents lately.
    Throttled,
    Internal(anyhow::Error),
}

impl From<mcp_oauth_store::StoreError> for ClientLookupError {
    fn from(e: mcp_oauth_store::StoreError) -> Self {
        Self::Internal(e.into())
    }
}

pub fn client_from_row(row: ClientRow) -> Result<Client, ClientLookupError> {
    let corrupt = |what: &str| {
        ClientLookupError::Internal(anyhow::anyhow!(
            "client {}: stored {what} is invalid",
            row.id
        ))
    };
    let id = ClientId::parse(&row.id).map_err(|_| corrupt("id"))?;
    let kind = ClientKind::parse(&row.kind).ok_or_else(|| corrupt("kind"))?;
    let metadata: ClientMetadata =
        serde_json::from_str(&row.metadata).map_err(|_| corrupt("metadata"))?;
    Ok(Client::from_metadata(
        id,
        kind,
        metadata,
        row.secret_hash.map(SecretHash::from_stored),
    ))
}

fn unknown(d: impl Into<std::borrow::Cow<'static, str>>) -> ClientLookupError {
    ClientLookupError::NotFound(OAuthError::new(ErrorCode::InvalidClient, d))
}

/// Resolve `client_id` to a client, for a request from `who` (metadata document
/// fetches are limited per address).
pub async fn resolve(
    state: &AppState,
    client_id: &str,
    who: &Requester,
) -> Result<Client, ClientLookupError> {
    let cimd_settings = state.cimd.settings();
    if cimd_settings.enabled && cimd::is_document_url(client_id, cimd_settings.allow_loopback) {
        return resolve_document(state, client_id, who).await;
    }
    match state.db.find_client(client_id).await? {
        Some(row) => client_from_row(row),
        None => Err(unknown("unknown client_id")),
    }
}

async fn resolve_document(
    state: &AppState,
    client_id: &str,
    who: &Requester,
) -> Result<Client, ClientLookupError> {
    let settings = state.cimd.settings();
    let url = cimd::validate_document_url(client_id, settings.allow_loopback)
        .map_err(ClientLookupError::NotFound)?;
    let now = state.clock.now();
    let cached = state.db.find_client(client_id).await?;
    if let Some(row) = &cached
        && row.refresh_after.is_some_and(|t| t > now)
    {
        return client_from_row(row.clone());
    }
    // The allow list needs no fetch: answered before the throttle and the failure cache.
    if !state.cimd.host_allowed(&url) {
        return Err(unknown(format!(
            "client metadata document could not be used: {}",
            crate::oauth::cimd::FetchError::HostNotAllowed
        )));
    }
    if let Some(description) = state.cimd.remembered_failure(client_id, now) {
        return Err(unknown(description));
    }
    let key = RateKey::address(EndpointClass::MetadataFetch, who.ip);
    let rate = state
        .rate_limits
        .check(&key, state.clock.now_millis())
        .await;
    if rate.is_some_and(|d| d.is_refused()) {
        tracing::warn!(client_ip = ?who.ip, "client metadata document fetches throttled");
        return Err(ClientLookupError::Throttled);
    }
    let fetched = state.cimd.fetch(&url).await;
    let failed = |description: String| {
        state.cimd.remember_failure(client_id, &description, now);
        unknown(description)
    };
    let (doc, cache_control) = match fetched {
        Ok(f) => f,
        Err(e) => {
            // The cause (which address, which DNS or TLS error) stays in the log.
            tracing::warn!(client_id = ?client_id, error = ?e, "client metadata document fetch failed");
            state
                .security
                .observed(who, None, Some(client_id), |at| match &e {
                    FetchError::PrivateAddress { addresses } => {
                        SecurityEvent::metadata_document_private_address(at, client_id, addresses)
                    }
                    e => SecurityEvent::metadata_document_failed(at, client_id, &e.to_string()),
                });
            return Err(failed(format!(
                "client metadata document could not be used: {e}"
            )));
        }
    };
    let metadata = match cimd::validate_document(client_id, &doc, &state.registration_policy) {
        Ok(m) => m,
        Err(e) => {
            state.security.observed(who, None, Some(client_id), |at| {
                SecurityEvent::metadata_document_failed(at, client_id, &e.description)
            });
            return Err(failed(e.description.into_owned()));
        }
    };
    let row = ClientRow {
        id: client_id.to_owned(),
        kind: ClientKind::MetadataDocument.as_str().to_owned(),
        metadata: serde_json::to_string(&metadata)
            .map_err(|e| ClientLookupError::Internal(e.into()))?,
        secret_hash: None,
        metadata_hash: None,
        created_at: now,
        last_used_at: None,
        refresh_after: Some(cimd::cache_expiry(
            now,
            cache_control.as_deref(),
            settings.cache_min_seconds,
            settings.cache_max_seconds,
        )),
    };
    state.db.upsert_document_client(&row).await?;
    state
        .analytics
        .oauth(OAuthEvent::MetadataDocumentFetched, None, Some(&row.id));
    client_from_row(row)
}
