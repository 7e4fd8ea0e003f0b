//! `client_id` (RFC 6749 §2.2): an opaque string we issued, or an https URL naming a
//! Client ID Metadata Document (draft-ietf-oauth-client-id-metadata-document).

use std::fmt;

/// Longest client id we accept; a metadata document URL is the long case.
const MAX_LEN: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientIdError {
    #[error("client_id is empty")]
    Empty,
    #[error("client_id is longer than {MAX_LEN} characters")]
    TooLong,
    #[error("client_id contains characters outside VSCHAR (RFC 6749 Appendix A)")]
    BadCharacter,
}

impl ClientId {
    pub fn parse(raw: &str) -> Result<Self, ClientIdError> {
        if raw.is_empty() {
            return Err(ClientIdError::Empty);
        }
        if raw.len() > MAX_LEN {
            return Err(ClientIdError::TooLong);
        }
        // RFC 6749 Appendix A.1: client-id = *VSCHAR (%x20-7E).
        if !raw.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
            return Err(ClientIdError::BadCharacter);
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_opaque_and_url_ids() {
        assert!(ClientId::parse("abc-123").is_ok());
        assert!(ClientId::parse("https://app.example.com/client.json").is_ok());
    }

    #[test]
    fn rejects_empty_long_and_control_characters() {
        assert_eq!(ClientId::parse(""), Err(ClientIdError::Empty));
        assert_eq!(
            ClientId::parse(&"a".repeat(3000)),
            Err(ClientIdError::TooLong)
        );
        assert_eq!(ClientId::parse("a\nb"), Err(ClientIdError::BadCharacter));
        assert_eq!(ClientId::parse("é"), Err(ClientIdError::BadCharacter));
    }
}
