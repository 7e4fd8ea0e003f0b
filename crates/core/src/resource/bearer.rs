//! Reading a bearer token from a request (RFC 6750 §2.1). Only the `Authorization` header is
//! accepted: MCP clients must not put tokens in the query string (MCP authorization, "Token
//! Requirements"), and a URI with a token ends up in logs and histories.

/// What the request carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials<'a> {
    /// No `Authorization` header, or one for another scheme: answer with a bare challenge
    /// (RFC 6750 §3.1).
    None,
    Bearer(&'a str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BearerError {
    #[error("the Authorization header is not a well-formed Bearer token")]
    Malformed,
    #[error("only one Authorization header is allowed")]
    Repeated,
    #[error("access tokens are accepted only in the Authorization header, not the query string")]
    InQuery,
}

/// RFC 6750 §2.1 `b64token`: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(t: &str) -> bool {
    let body = t.trim_end_matches('=');
    !body.is_empty()
        && body.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
}

/// `headers` are the values of every `Authorization` header; `query` is the raw query string.
pub fn extract<'a>(
    headers: &[&'a str],
    query: Option<&str>,
) -> Result<Credentials<'a>, BearerError> {
    let in_query = query.is_some_and(|q| {
        q.split('&')
            .any(|pair| pair.split('=').next() == Some("access_token"))
    });
    if in_query {
        return Err(BearerError::InQuery);
    }
    let value = match headers {
        [] => return Ok(Credentials::None),
        [one] => *one,
        _ => return Err(BearerError::Repeated),
    };
    let (scheme, token) = value.split_once(' ').ok_or(BearerError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        // RFC 6750 §3.1: a request "attempted using an unsupported authentication method"
        // lacks Bearer credentials, and gets the bare challenge, without an error code.
        return Ok(Credentials::None);
    }
    let token = token.trim_start_matches(' ');
    if !is_b64token(token) {
        return Err(BearerError::Malformed);
    }
    Ok(Credentials::Bearer(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_one_bearer_header() {
        assert_eq!(extract(&[], None), Ok(Credentials::None));
        assert_eq!(
            extract(&["Bearer abc.def-ghi_~+/=="], None),
            Ok(Credentials::Bearer("abc.def-ghi_~+/=="))
        );
        assert_eq!(
            extract(&["bearer abc"], None),
            Ok(Credentials::Bearer("abc")),
            "scheme is case-insensitive"
        );
    }

    #[test]
    fn another_scheme_counts_as_no_bearer_credentials() {
        assert_eq!(
            extract(&["Basic dXNlcjpwYXNz"], None),
            Ok(Credentials::None)
        );
        assert_eq!(extract(&["DPoP abc"], None), Ok(Credentials::None));
    }

    #[test]
    fn refuses_everything_else() {
        for (h, why) in [
            ("Bearer", "no token"),
            ("Bearer ", "empty token"),
            ("Bearer a b", "space in token"),
            ("Bearer a\"b", "quote in token"),
            ("Bearerabc", "no separator"),
        ] {
            assert_eq!(extract(&[h], None), Err(BearerError::Malformed), "{why}");
        }
        assert_eq!(
            extract(&["Bearer a", "Bearer b"], None),
            Err(BearerError::Repeated)
        );
        assert_eq!(
            extract(&[], Some("x=1&access_token=abc")),
            Err(BearerError::InQuery)
        );
        assert_eq!(
            extract(&["Bearer a"], Some("access_token=abc")),
            Err(BearerError::InQuery)
        );
        assert_eq!(
            extract(&[], Some("not_access_token=1")),
            Ok(Credentials::None)
        );
    }
}
