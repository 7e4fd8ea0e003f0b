//! Our own extractors, so that even a rejected request is answered in the endpoint's error
//! format (an OAuth JSON error, not axum's plain-text rejection).

use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRef, FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;

use mcp_oauth_core::oauth::OAuthError;

use super::error::ApiError;
use crate::config::Cidr;
use crate::state::AppState;

/// Largest form body accepted at the token, revocation and introspection endpoints.
const MAX_FORM_BYTES: usize = 16 * 1024;

/// An `application/x-www-form-urlencoded` body as ordered pairs (repeats kept, so that the
/// endpoint can refuse them).
pub struct OAuthForm(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequest<S> for OAuthForm {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_form = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| {
                ct.split(';').next().is_some_and(|m| {
                    m.trim()
                        .eq_ignore_ascii_case("application/x-www-form-urlencoded")
                })
            });
        if !is_form {
            return Err(OAuthError::invalid_request(
                "the body must be application/x-www-form-urlencoded",
            )
            .into());
        }
        let body = axum::body::to_bytes(req.into_body(), MAX_FORM_BYTES)
            .await
            .map_err(|_| OAuthError::invalid_request("the body is too large or unreadable"))?;
        let _ = state;
        Ok(Self(parse_pairs(&body)))
    }
}

pub fn parse_pairs(body: &Bytes) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

impl OAuthForm {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// A required parameter that must appear exactly once (RFC 6749 §3.2).
    pub fn single(&self, name: &str) -> Result<&str, OAuthError> {
        if self.count(name) > 1 {
            return Err(OAuthError::invalid_request(format!("`{name}` is repeated")));
        }
        self.get(name)
            .ok_or_else(|| OAuthError::invalid_request(format!("`{name}` is required")))
    }

    pub fn count(&self, name: &str) -> usize {
        self.0.iter().filter(|(k, _)| k == name).count()
    }
}

/// The client's IP: the TCP peer, or, when the peer is a trusted proxy, the nearest address
/// in `X-Forwarded-For` that is not itself a trusted proxy.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl<S> FromRequestParts<S> for ClientIp
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        Ok(Self(client_ip(
            peer,
            &parts.headers,
            &state.settings.trusted_proxies,
        )))
    }
}

pub fn client_ip(peer: IpAddr, headers: &axum::http::HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    // Right to left: each trusted hop appended the address it received from.
    let mut hops: Vec<IpAddr> = Vec::new();
    for v in headers.get_all("x-forwarded-for") {
        if let Ok(s) = v.to_str() {
            hops.extend(s.split(',').filter_map(|h| h.trim().parse::<IpAddr>().ok()));
        }
    }
    if hops.is_empty() {
        for v in headers.get_all(header::FORWARDED) {
            if let Ok(s) = v.to_str() {
                for element in s.split(',') {
                    for pair in element.split(';') {
                        if let Some((k, val)) = pair.trim().split_once('=')
                            && k.trim().eq_ignore_ascii_case("for")
                        {
                            let val = val.trim().trim_matches('"');
                            let val = val
                                .strip_prefix('[')
                                .map_or(val, |v| v.split(']').next().unwrap_or(v));
                            let val = if val.matches(':').count() == 1 {
                                val.split(':').next().unwrap_or(val)
                            } else {
                                val
                            };
                            if let Ok(ip) = val.parse() {
                                hops.push(ip);
                            }
                        }
                    }
                }
            }
        }
    }
    hops.into_iter()
        .rev()
        .find(|ip| !is_trusted(*ip))
        .unwrap_or(peer)
}

/// A browser form body; a malformed one gets an error page rather than axum's plain text.
pub struct PageForm<T>(pub T);

impl<S, T> FromRequest<S> for PageForm<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = super::error::PageError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        axum::Form::<T>::from_request(req, state)
            .await
            .map(|f| Self(f.0))
            .map_err(|_| {
                super::error::PageError::bad_request("Bad request", "The form could not be read.")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};

    #[test]
    fn forwarded_headers_count_only_from_trusted_peers() {
        let trusted = vec![Cidr::parse("10.0.0.0/8").unwrap()];
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.9, 10.0.0.7"),
        );
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let stranger: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(
            client_ip(proxy, &h, &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip(stranger, &h, &trusted),
            stranger,
            "spoofed header from an untrusted peer"
        );
        let mut f = HeaderMap::new();
        f.insert(
            header::FORWARDED,
            HeaderValue::from_static("for=\"[2001:db8::1]:443\";proto=https"),
        );
        assert_eq!(
            client_ip(proxy, &f, &trusted),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
        let mut f = HeaderMap::new();
        f.insert(
            header::FORWARDED,
            HeaderValue::from_static("for=192.0.2.60:1234"),
        );
        assert_eq!(
            client_ip(proxy, &f, &trusted),
            "192.0.2.60".parse::<IpAddr>().unwrap()
        );
    }
}
