//! Fetching Client ID Metadata Documents without becoming an SSRF proxy (MCP 2026-07-28
//! "SSRF Against Authorization Servers"; RFC 9728 §7.7 lists the ranges).
//!
//! - https only (loopback http only with the development setting);
//! - every address the host resolves to must be globally reachable
//!   (`mcp_oauth_core::security::address`): the resolver we give reqwest drops the others, so
//!   the connection goes only to an address that was checked (no DNS-rebinding gap between
//!   check and use);
//! - never through a proxy from the environment (`HTTPS_PROXY`, `ALL_PROXY`, …): a proxy
//!   resolves the name itself and the check above would never see it. An operator may name
//!   one explicitly (`cimd.proxy_url`), which then has to enforce the egress policy;
//! - no redirects; a size cap and a timeout;
//! - one answer for every address we refuse or cannot reach (blocked, unresolvable, refused,
//!   timed out), so that the answer does not tell which internal names exist; the cause is
//!   logged;
//! - failures remembered briefly per URL, and fetches limited per client IP, so that
//!   anonymous requests cannot make the server fetch on every request.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde_json::Value;
use url::{Host, Url};

use mcp_oauth_core::UnixTime;
use mcp_oauth_core::security::address;

use crate::config::CimdSettings;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("the document host is not on this server's allow list")]
    HostNotAllowed,
    /// Refused or unreachable, whatever the reason; the reason is for the log only.
    #[error("the document could not be fetched")]
    Unreachable { cause: String },
    /// The host is, or resolves only to, addresses we never connect to (loopback, private,
    /// link-local, metadata services): an SSRF attempt. Answered as `Unreachable` is, so
    /// the answer tells nothing about the network behind us.
    #[error("the document could not be fetched")]
    PrivateAddress { addresses: String },
    #[error("the document answered HTTP {0}")]
    Status(u16),
    #[error("the document is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the document is not JSON")]
    NotJson,
}

/// What the resolver answers when every address of a name is refused.
#[derive(Debug, thiserror::Error)]
#[error("every address of the host is refused: {0}")]
struct BlockedAddresses(String);

/// Is `ip` an address we may connect to? (Kept for callers; the policy lives in core.)
pub fn is_public(ip: IpAddr, allow_loopback: bool) -> bool {
    address::may_connect(ip, allow_loopback)
}

struct GuardedResolver {
    allow_loopback: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_loopback = self.allow_loopback;
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let (allowed, refused): (Vec<SocketAddr>, Vec<SocketAddr>) = resolved
                .into_iter()
                .partition(|a| address::may_connect(a.ip(), allow_loopback));
            if allowed.is_empty() {
                let refused: Vec<String> = refused
                    .iter()
                    .map(|a| format!("{} ({:?})", a.ip(), address::classify(a.ip())))
                    .collect();
                return Err(Box::new(BlockedAddresses(refused.join(", ")))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// Recently failed document URLs (by SHA-256, so a long URL costs no more than a short one)
/// with the answer given and until when it stands. Bounded; the oldest unused go first.
const FAILURE_CACHE_CAPACITY: usize = 4_096;

#[derive(Clone)]
struct RememberedFailure {
    until: UnixTime,
    description: String,
}

pub struct CimdFetcher {
    settings: CimdSettings,
    http: reqwest::Client,
    failures: quick_cache::sync::Cache<[u8; 32], RememberedFailure>,
}

impl CimdFetcher {
    pub fn new(settings: CimdSettings) -> anyhow::Result<Self> {
        let mut http = reqwest::Client::builder()
            // Never a proxy from the environment: see the module documentation.
            .no_proxy();
        if let Some(proxy) = &settings.proxy_url {
            let proxy = reqwest::Proxy::all(proxy.as_str()).map_err(|e| {
                anyhow::anyhow!("`cimd.proxy_url`: {proxy:?} is not a proxy URL ({e})")
            })?;
            http = http.proxy(proxy);
            tracing::warn!(
                "cimd.proxy_url is set: metadata documents are fetched through that proxy, which \
                 resolves their hosts itself, so this server cannot check their addresses; the \
                 proxy must refuse private and internal destinations"
            );
        }
        let http = http
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_millis(settings.fetch_timeout_ms))
            .connect_timeout(Duration::from_millis(settings.fetch_timeout_ms))
            .dns_resolver(Arc::new(GuardedResolver {
                allow_loopback: settings.allow_loopback,
            }))
            .user_agent(concat!("mcp-oauth/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            settings,
            http,
            failures: quick_cache::sync::Cache::new(FAILURE_CACHE_CAPACITY),
        })
    }

    fn url_key(url: &str) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(url.as_bytes()).into()
    }

    /// The answer given for `url` if fetching it failed less than
    /// `cimd.failure_cache_seconds` ago.
    pub fn remembered_failure(&self, url: &str, now: UnixTime) -> Option<String> {
        self.failures
            .get(&Self::url_key(url))
            .filter(|f| f.until > now)
            .map(|f| f.description)
    }

    pub fn remember_failure(&self, url: &str, description: &str, now: UnixTime) {
        self.failures.insert(
            Self::url_key(url),
            RememberedFailure {
                until: now + self.settings.failure_cache_seconds,
                description: description.to_owned(),
            },
        );
    }

    pub fn settings(&self) -> &CimdSettings {
        &self.settings
    }

    /// The domain trust policy: an allow list of hosts (`*.example.com` for subdomains), or
    /// any host when the list is empty.
    pub fn host_allowed(&self, url: &Url) -> bool {
        let Some(host) = url.host_str() else {
            return false;
        };
        let host = host.to_ascii_lowercase();
        self.settings.allowed_hosts.is_empty()
            || self.settings.allowed_hosts.iter().any(|pattern| {
                let pattern = pattern.to_ascii_lowercase();
                match pattern.strip_prefix("*.") {
                    Some(suffix) => host.ends_with(&format!(".{suffix}")),
                    None => host == pattern,
                }
            })
    }

    /// Fetch the document. Returns it with its `Cache-Control` header.
    pub async fn fetch(&self, url: &Url) -> Result<(Value, Option<String>), FetchError> {
        if !self.host_allowed(url) {
            return Err(FetchError::HostNotAllowed);
        }
        // reqwest does not consult the resolver for IP literals: check them here.
        let literal = match url.host() {
            Some(Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        if let Some(ip) = literal {
            let class = address::classify(ip);
            if !address::may_connect(ip, self.settings.allow_loopback) {
                return Err(FetchError::PrivateAddress {
                    addresses: format!("{ip} ({class:?})"),
                });
            }
        }
        // `{:?}` keeps the whole chain (resolver, connection, TLS, timeout) for the log.
        let unreachable = |e: reqwest::Error| {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(err) = source {
                if let Some(BlockedAddresses(addresses)) = err.downcast_ref::<BlockedAddresses>() {
                    return FetchError::PrivateAddress {
                        addresses: addresses.clone(),
                    };
                }
                source = err.source();
            }
            FetchError::Unreachable {
                cause: format!("{:?}", e.without_url()),
            }
        };
        let mut response = self
            .http
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(unreachable)?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(FetchError::Status(response.status().as_u16()));
        }
        let max = self.settings.max_document_bytes;
        if response.content_length().is_some_and(|n| n as usize > max) {
            return Err(FetchError::TooLarge(max));
        }
        let cache_control = response
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            if body.len() + chunk.len() > max {
                return Err(FetchError::TooLarge(max));
            }
            body.extend_from_slice(&chunk);
        }
        let doc = serde_json::from_slice(&body).map_err(|_| FetchError::NotJson)?;
        Ok((doc, cache_control))
    }
}
