//! Bearer secrets we issue (authorization codes, refresh tokens, client secrets, session ids)
//! and the only form in which we store them: a SHA-256 hash.
//!
//! The values are 256-bit random strings, so a fast hash is enough: there is nothing to
//! brute-force, and lookups by hash stay cheap. Passwords are different and use argon2.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A freshly minted secret, in the clear: it exists only on its way to the client.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretToken(String);

/// Hash of a secret, as stored: lower-case hex SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SecretHash(String);

impl SecretToken {
    /// Encode 32 random bytes (supplied by the caller, from the OS RNG) as base64url.
    pub fn from_random(bytes: [u8; 32]) -> Self {
        Self(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// A secret presented by a client, to be hashed and looked up.
    pub fn presented(raw: &str) -> Self {
        Self(raw.to_owned())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> SecretHash {
        SecretHash::of(&self.0)
    }
}

impl std::fmt::Debug for SecretToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretToken(<redacted>)")
    }
}

impl SecretHash {
    pub fn of(secret: &str) -> Self {
        let digest = Sha256::digest(secret.as_bytes());
        let mut hex = String::with_capacity(64);
        for b in digest {
            hex.push_str(&format!("{b:02x}"));
        }
        Self(hex)
    }

    pub fn from_stored(s: String) -> Self {
        Self(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Constant-time check of a presented secret against this hash.
    pub fn verify(&self, presented: &str) -> bool {
        SecretHash::of(presented)
            .0
            .as_bytes()
            .ct_eq(self.0.as_bytes())
            .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_hex_sha256() {
        assert_eq!(
            SecretHash::of("abc").as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn verify_accepts_only_the_secret() {
        let t = SecretToken::from_random([7; 32]);
        let h = t.hash();
        assert!(h.verify(t.expose()));
        assert!(!h.verify("nope"));
        assert_eq!(t.expose().len(), 43);
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let t = SecretToken::from_random([1; 32]);
        assert!(!format!("{t:?}").contains(t.expose()));
    }
}
