//! Randomness from the operating system, for every secret and id we mint.

use mcp_oauth_core::domain::SecretToken;

/// `N` random bytes. The OS RNG failing is not something to recover from.
pub fn bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    #[allow(clippy::expect_used)]
    getrandom::fill(&mut buf).expect("the operating system's random number generator failed");
    buf
}

/// A new 256-bit bearer secret (code, refresh token, client secret, session id).
pub fn secret() -> SecretToken {
    SecretToken::from_random(bytes())
}

/// A new unguessable id (128 bits, base64url) that starts with a letter or
/// digit: ids are typed into shells and command lines, where a leading `-`
/// reads as an option. Redrawing (1 draw in 32) costs 0.05 of the 128 bits.
pub fn id() -> String {
    use base64::Engine as _;
    loop {
        let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes::<16>());
        if id.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_never_start_with_a_dash_or_underscore() {
        for _ in 0..10_000 {
            let id = super::id();
            assert_eq!(id.len(), 22);
            assert!(id.starts_with(|c: char| c.is_ascii_alphanumeric()), "{id}");
        }
    }
}
