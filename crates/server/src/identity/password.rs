//! Password hashing: argon2id with the OWASP-recommended parameters (19 MiB memory, 2
//! iterations, 1 lane), run on the blocking pool so that it never stalls the async runtime.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};

/// argon2id, m = 19456 KiB, t = 2, p = 1 (OWASP Password Storage Cheat Sheet).
fn hasher() -> anyhow::Result<Argon2<'static>> {
    let params =
        Params::new(19 * 1024, 2, 1, None).map_err(|e| anyhow!("argon2 parameters: {e}"))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

pub const MIN_LENGTH: usize = 12;
pub const MAX_LENGTH: usize = 1024;

/// Why a new password is refused, in words for the user.
pub fn check_new_password(password: &str) -> Result<(), String> {
    let n = password.chars().count();
    if n < MIN_LENGTH {
        return Err(format!(
            "The password must have at least {MIN_LENGTH} characters."
        ));
    }
    if n > MAX_LENGTH {
        return Err(format!(
            "The password must have at most {MAX_LENGTH} characters."
        ));
    }
    Ok(())
}

pub async fn hash(password: String) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || {
        let h = hasher()?;
        h.hash_password(password.as_bytes())
            .map(|p| p.to_string())
            .map_err(|e| anyhow!("hashing the password failed: {e}"))
    })
    .await?
}

/// A hash of a random password, verified against when the account does not exist, so that
/// unknown emails and wrong passwords take the same time.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let random: [u8; 16] = crate::random::bytes();
        hasher()
            .ok()
            .and_then(|h| h.hash_password(&random).ok())
            .map(|p| p.to_string())
            .unwrap_or_default()
    })
}

/// How long a verification takes on this machine, in microseconds: a moving average of the
/// last ones (0 until the first).
static TYPICAL_VERIFY_US: AtomicU64 = AtomicU64::new(0);

/// Wait as long as checking a password takes, without checking one: for an answer that must
/// not be told apart from a wrong password by its timing (a locked account), and must not
/// cost a hash either, since attackers send such attempts by the thousand.
pub async fn wait_as_long_as_a_check() {
    let typical = TYPICAL_VERIFY_US.load(Ordering::Relaxed);
    if typical == 0 {
        // Nothing measured yet: measure, by doing the work once.
        let _ = verify(String::new(), None).await;
    } else {
        tokio::time::sleep(Duration::from_micros(typical)).await;
    }
}

/// Check `password` against `stored`; with no stored hash, do the same work and fail.
pub async fn verify(password: String, stored: Option<String>) -> bool {
    let started = Instant::now();
    let ok = check(password, stored).await;
    // An exponential moving average (1/8 weight): races between requests only blur it.
    let sample = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let typical = TYPICAL_VERIFY_US.load(Ordering::Relaxed);
    let next = match typical {
        0 => sample,
        t => t - t / 8 + sample / 8,
    };
    TYPICAL_VERIFY_US.store(next, Ordering::Relaxed);
    ok
}

async fn check(password: String, stored: Option<String>) -> bool {
    tokio::task::spawn_blocking(move || {
        let Ok(h) = hasher() else { return false };
        match stored {
            Some(hash) => h
                .verify_password(password.as_bytes(), hash.as_str())
                .is_ok(),
            None => {
                let _ = h.verify_password(password.as_bytes(), dummy_hash());
                false
            }
        }
    })
    .await
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_then_verify() {
        let h = hash("correct horse battery".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(verify("correct horse battery".into(), Some(h.clone())).await);
        assert!(!verify("wrong".into(), Some(h)).await);
        assert!(!verify("anything".into(), None).await);
    }

    #[test]
    fn new_password_length_rules() {
        assert!(check_new_password("short").is_err());
        assert!(check_new_password("twelve chars").is_ok());
    }
}
