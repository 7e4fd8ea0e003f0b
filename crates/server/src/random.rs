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

/// A new unguessable id (128 bits, base64url).
pub fn id() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes::<16>())
}
