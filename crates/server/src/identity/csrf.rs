//! CSRF protection for every form: a double-submit token in a `__Host-` cookie (which a
//! sibling subdomain cannot set) that the form must echo, plus a same-origin check on the
//! `Origin` and `Sec-Fetch-Site` headers when the browser sends them.

use axum::http::HeaderMap;
use axum::http::header;
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use subtle::ConstantTimeEq;

use mcp_oauth_core::security::events::SecurityEvent;

use crate::security::Requester;
use crate::state::AppState;

pub const COOKIE: &str = "__Host-mcp_csrf";

/// The token for a form, and the jar with the cookie set if it was missing.
pub fn token(jar: CookieJar) -> (String, CookieJar) {
    if let Some(c) = jar.get(COOKIE)
        && c.value().len() >= 32
    {
        return (c.value().to_owned(), jar);
    }
    let value = crate::random::id() + &crate::random::id();
    let cookie = Cookie::build((COOKIE, value.clone()))
        .path("/")
        .secure(true)
        .http_only(true)
        .same_site(SameSite::Lax)
        .build();
    (value, jar.add(cookie))
}

/// Is this form submission ours? `origin` is our public origin (`scheme://host[:port]`).
/// [`verify`] for the post of `form` by `who`; a failure is a security event.
pub fn verify_post(
    state: &AppState,
    who: &Requester,
    form: &'static str,
    jar: &CookieJar,
    headers: &HeaderMap,
    submitted: Option<&str>,
) -> bool {
    let ok = verify(jar, headers, submitted, &state.origin);
    if !ok {
        let check = if submitted.is_none() {
            "missing_token"
        } else {
            "token_or_origin"
        };
        state.security.observed(who, None, None, |at| {
            SecurityEvent::csrf_failure(at, form, check)
        });
    }
    ok
}

pub fn verify(jar: &CookieJar, headers: &HeaderMap, submitted: Option<&str>, origin: &str) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return false;
    }
    if let Some(o) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok())
        && o != origin
    {
        return false;
    }
    match (jar.get(COOKIE), submitted) {
        (Some(c), Some(s)) if c.value().len() >= 32 => {
            c.value().as_bytes().ct_eq(s.as_bytes()).into()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn token_must_match_the_cookie_and_origin_must_be_ours() {
        let (t, jar) = token(CookieJar::new());
        let mut h = HeaderMap::new();
        assert!(verify(&jar, &h, Some(&t), "https://as.example"));
        assert!(!verify(&jar, &h, Some("x"), "https://as.example"));
        assert!(!verify(&jar, &h, None, "https://as.example"));
        assert!(!verify(
            &CookieJar::new(),
            &h,
            Some(&t),
            "https://as.example"
        ));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!verify(&jar, &h, Some(&t), "https://as.example"));
        let mut h = HeaderMap::new();
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!verify(&jar, &h, Some(&t), "https://as.example"));
    }
}
