//! Who the user is: local accounts, browser sessions, login and logout, first-run setup, and
//! the account page.

pub mod account;
pub mod csrf;
pub mod device;
pub mod login;
pub mod password;
pub mod session;
pub mod setup;

/// Normalise an email address for lookup: trimmed and lower-cased. `None` if it cannot be
/// one.
pub fn normalize_email(raw: &str) -> Option<String> {
    let e = raw.trim().to_lowercase();
    let (local, domain) = e.split_once('@')?;
    let ok = !local.is_empty()
        && !domain.is_empty()
        && e.len() <= 254
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    ok.then_some(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_lowercased_and_checked() {
        assert_eq!(
            normalize_email("  Alice@Example.COM ").as_deref(),
            Some("alice@example.com")
        );
        assert_eq!(normalize_email("nobody"), None);
        assert_eq!(normalize_email("a b@c.d"), None);
        assert_eq!(normalize_email("@c.d"), None);
    }
}
