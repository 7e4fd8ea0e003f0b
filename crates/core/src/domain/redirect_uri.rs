//! Redirect URIs (OAuth 2.1 §2.3.1, §7.12; RFC 8252 §7).
//!
//! A redirect URI is kept as the exact string the client registered: OAuth 2.1 requires an
//! exact string comparison, and normalising it (as `Url` does) would let `https://a.example`
//! match `https://a.example/`. Parsing only decides which of three kinds it is.

use std::fmt;

use url::{Host, Url};

/// Schemes a browser can be sent to that would run code or read local data.
const DANGEROUS_SCHEMES: &[&str] = &[
    "javascript",
    "data",
    "file",
    "vbscript",
    "about",
    "blob",
    "filesystem",
    "ftp",
    "ws",
    "wss",
    "view-source",
    "chrome",
    "mailto",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectKind {
    /// `https://…`: a web client, or a native app's claimed https URL.
    Https,
    /// `http://127.0.0.1`, `http://[::1]` or `http://localhost`: a native app's loopback
    /// listener, whose port is chosen at run time (RFC 8252 §7.3).
    Loopback,
    /// A private-use scheme such as `cursor://anysphere.cursor-mcp/oauth/callback`
    /// (RFC 8252 §7.1), for native public clients only.
    PrivateUse,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectUri {
    raw: String,
    url: Url,
    kind: RedirectKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedirectUriError {
    #[error("redirect URI is not an absolute URI")]
    NotAbsolute,
    #[error("redirect URI must not contain a fragment (OAuth 2.1 §2.3.1)")]
    Fragment,
    #[error("redirect URI must not contain user information")]
    UserInfo,
    #[error("redirect URI scheme `{0}` is not allowed")]
    DangerousScheme(String),
    #[error("http redirect URIs are allowed only on loopback hosts (127.0.0.1, [::1], localhost)")]
    PlainHttp,
    #[error("redirect URI is longer than 2000 characters")]
    TooLong,
}

impl RedirectUri {
    pub fn parse(raw: &str) -> Result<Self, RedirectUriError> {
        if raw.len() > 2000 {
            return Err(RedirectUriError::TooLong);
        }
        let url = Url::parse(raw).map_err(|_| RedirectUriError::NotAbsolute)?;
        // `Url` drops an empty fragment, so look at the raw string too.
        if url.fragment().is_some() || raw.contains('#') {
            return Err(RedirectUriError::Fragment);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(RedirectUriError::UserInfo);
        }
        let scheme = url.scheme();
        let kind = match scheme {
            "https" => {
                if url.host().is_none() {
                    return Err(RedirectUriError::NotAbsolute);
                }
                RedirectKind::Https
            }
            "http" if is_loopback_host(&url) => RedirectKind::Loopback,
            "http" => return Err(RedirectUriError::PlainHttp),
            s if DANGEROUS_SCHEMES.contains(&s) => {
                return Err(RedirectUriError::DangerousScheme(s.to_owned()));
            }
            _ => RedirectKind::PrivateUse,
        };
        Ok(Self {
            raw: raw.to_owned(),
            url,
            kind,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    pub fn kind(&self) -> RedirectKind {
        self.kind
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    /// Where the browser goes, for the consent page: the web host, the loopback listener
    /// (`localhost:port`), or for a private-use scheme the scheme itself (`cursor:`). The part
    /// after a private-use scheme is chosen by whoever registered it, so it names nothing the
    /// browser will visit: `claude-desktop://claude.ai/cb` goes to whichever app on this device
    /// handles `claude-desktop:`, not to claude.ai.
    pub fn destination(&self) -> String {
        match self.kind {
            RedirectKind::Https => self.url.host_str().unwrap_or_default().to_owned(),
            RedirectKind::Loopback => match self.url.port() {
                Some(port) => format!("{}:{port}", self.url.host_str().unwrap_or_default()),
                None => self.url.host_str().unwrap_or_default().to_owned(),
            },
            RedirectKind::PrivateUse => format!("{}:", self.url.scheme()),
        }
    }

    /// Does an authorization request's `redirect_uri` match this registered one?
    ///
    /// Exact string comparison (OAuth 2.1 §4.1.1), except that a loopback URI matches on any
    /// port (RFC 8252 §7.3): the port of a native app's listener is picked at run time.
    pub fn matches(&self, requested: &RedirectUri) -> bool {
        if self.raw == requested.raw {
            return true;
        }
        if self.kind != RedirectKind::Loopback || requested.kind != RedirectKind::Loopback {
            return false;
        }
        let (a, b) = (&self.url, &requested.url);
        a.scheme() == b.scheme()
            && a.host_str() == b.host_str()
            && a.path() == b.path()
            && a.query() == b.query()
    }
}

fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

impl fmt::Display for RedirectUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> RedirectUri {
        RedirectUri::parse(s).unwrap()
    }

    #[test]
    fn classifies_the_three_kinds() {
        assert_eq!(
            uri("https://claude.ai/api/mcp/auth_callback").kind(),
            RedirectKind::Https
        );
        assert_eq!(
            uri("http://127.0.0.1:33418/").kind(),
            RedirectKind::Loopback
        );
        assert_eq!(uri("http://[::1]:9/cb").kind(), RedirectKind::Loopback);
        assert_eq!(
            uri("http://localhost:5173/callback").kind(),
            RedirectKind::Loopback
        );
        assert_eq!(
            uri("cursor://anysphere.cursor-mcp/oauth/callback").kind(),
            RedirectKind::PrivateUse
        );
        assert_eq!(
            uri("com.example.app:/oauth2redirect").kind(),
            RedirectKind::PrivateUse
        );
    }

    #[test]
    fn rejects_unsafe_uris() {
        let cases = [
            ("javascript:alert(1)", "script scheme"),
            ("data:text/html,hi", "data scheme"),
            ("file:///etc/passwd", "file scheme"),
            ("https://a.example/cb#frag", "fragment"),
            ("https://a.example/cb#", "empty fragment"),
            ("http://a.example/cb", "plain http off loopback"),
            ("http://10.0.0.1/cb", "plain http on a private address"),
            ("https://user:pw@a.example/cb", "user info"),
            ("/relative", "relative"),
        ];
        for (raw, why) in cases {
            assert!(
                RedirectUri::parse(raw).is_err(),
                "{raw} should be refused: {why}"
            );
        }
    }

    #[test]
    fn matches_exactly_off_loopback() {
        let reg = uri("https://app.example/cb");
        assert!(reg.matches(&uri("https://app.example/cb")));
        assert!(!reg.matches(&uri("https://app.example/cb/")));
        assert!(!reg.matches(&uri("https://app.example/cb?x=1")));
        assert!(
            !reg.matches(&uri("https://APP.example/cb")),
            "string comparison, not URL equality"
        );
        assert!(!uri("https://a.example").matches(&uri("https://a.example/")));
    }

    #[test]
    fn loopback_matches_on_any_port_but_nothing_else() {
        let reg = uri("http://127.0.0.1:33418/");
        assert!(reg.matches(&uri("http://127.0.0.1:51000/")));
        assert!(reg.matches(&uri("http://127.0.0.1/")));
        assert!(!reg.matches(&uri("http://127.0.0.1:51000/other")));
        assert!(
            !reg.matches(&uri("http://localhost:33418/")),
            "host must be the same"
        );
        let reg = uri("http://localhost:3000/callback");
        assert!(reg.matches(&uri("http://localhost:49152/callback")));
        assert!(!reg.matches(&uri("http://localhost:49152/callback?x=1")));
    }

    #[test]
    fn destination_names_where_the_browser_goes() {
        assert_eq!(
            uri("https://chatgpt.com/connector/oauth/x").destination(),
            "chatgpt.com"
        );
        assert_eq!(
            uri("cursor://anysphere.cursor-mcp/oauth/callback").destination(),
            "cursor:",
            "an app on this device, not a host"
        );
        assert_eq!(
            uri("claude-desktop://claude.ai/cb").destination(),
            "claude-desktop:"
        );
        assert_eq!(uri("com.example.app:/cb").destination(), "com.example.app:");
        assert_eq!(
            uri("http://127.0.0.1:33418/cb").destination(),
            "127.0.0.1:33418"
        );
    }
}
