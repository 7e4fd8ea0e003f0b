//! Fetching Client ID Metadata Documents without becoming an SSRF proxy (MCP 2026-07-28
//! "SSRF Against Authorization Servers"; RFC 9728 §7.7 lists the ranges).
//!
//! - https only (loopback http only with the development setting);
//! - every address the host resolves to must be public: the resolver we give reqwest drops
//!   private, loopback, link-local and similar addresses, so the connection goes only to an
//!   address that was checked (no DNS-rebinding gap between check and use);
//! - no redirects; a size cap and a timeout.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde_json::Value;
use url::{Host, Url};

use crate::config::CimdSettings;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("the document host is not on this server's allow list")]
    HostNotAllowed,
    #[error("the document host resolves to a private or reserved address")]
    BlockedAddress,
    #[error("fetching the document failed: {0}")]
    Http(String),
    #[error("the document answered HTTP {0}")]
    Status(u16),
    #[error("the document is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the document is not JSON")]
    NotJson,
}

/// Is `ip` an address we may connect to?
pub fn is_public(ip: IpAddr, allow_loopback: bool) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    if ip.is_loopback() {
        return allow_loopback;
    }
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64.0.0/10, shared address space
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0.0/24, IETF protocol assignments
                || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18.0.0/15, benchmarking
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            !(v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // fc00::/7 unique local
                || (s[0] & 0xffc0) == 0xfe80 // fe80::/10 link local
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x64 && s[1] == 0xff9b)) // NAT64 can reach private IPv4
        }
    }
}

struct GuardedResolver {
    allow_loopback: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_loopback = self.allow_loopback;
        Box::pin(async move {
            let resolved = tokio::net::lookup_host((name.as_str(), 0)).await?;
            let allowed: Vec<SocketAddr> = resolved
                .filter(|a| is_public(a.ip(), allow_loopback))
                .collect();
            if allowed.is_empty() {
                return Err(Box::new(FetchError::BlockedAddress)
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

pub struct CimdFetcher {
    settings: CimdSettings,
    http: reqwest::Client,
}

impl CimdFetcher {
    pub fn new(settings: CimdSettings) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_millis(settings.fetch_timeout_ms))
            .connect_timeout(Duration::from_millis(settings.fetch_timeout_ms))
            .dns_resolver(Arc::new(GuardedResolver {
                allow_loopback: settings.allow_loopback,
            }))
            .user_agent(concat!("mcp-oauth/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { settings, http })
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
        if literal.is_some_and(|ip| !is_public(ip, self.settings.allow_loopback)) {
            return Err(FetchError::BlockedAddress);
        }
        let mut response = self
            .http
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| {
                if format!("{e:?}").contains("BlockedAddress") {
                    FetchError::BlockedAddress
                } else {
                    FetchError::Http(e.without_url().to_string())
                }
            })?;
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
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| FetchError::Http(e.without_url().to_string()))?
        {
            if body.len() + chunk.len() > max {
                return Err(FetchError::TooLarge(max));
            }
            body.extend_from_slice(&chunk);
        }
        let doc = serde_json::from_slice(&body).map_err(|_| FetchError::NotJson)?;
        Ok((doc, cache_control))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_reserved_addresses_are_blocked() {
        for blocked in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "127.0.0.1",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "224.0.0.1",
        ] {
            assert!(!is_public(blocked.parse().unwrap(), false), "{blocked}");
        }
        for public in [
            "93.184.216.34",
            "2606:2800:220:1:248:1893:25c8:1946",
            "8.8.8.8",
        ] {
            assert!(is_public(public.parse().unwrap(), false), "{public}");
        }
        assert!(
            is_public("127.0.0.1".parse().unwrap(), true),
            "development setting"
        );
        assert!(
            !is_public("10.0.0.1".parse().unwrap(), true),
            "loopback setting allows only loopback"
        );
    }
}
