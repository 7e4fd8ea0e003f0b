//! Scopes (RFC 6749 §3.3): a space-delimited set of case-sensitive tokens.

use std::collections::BTreeSet;
use std::fmt;

/// One scope token: `1*( %x21 / %x23-5B / %x5D-7E )`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Scope(String);

impl Scope {
    pub fn parse(raw: &str) -> Result<Self, ScopeError> {
        if raw.is_empty() || raw.len() > 200 {
            return Err(ScopeError::Malformed);
        }
        let ok = raw
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ScopeError::Malformed)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Scope used to ask for a refresh token (OpenID Connect Core §11; MCP 2026-07-28 SEP-2207).
pub const OFFLINE_ACCESS: &str = "offline_access";

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("scope is malformed (RFC 6749 §3.3)")]
    Malformed,
    #[error("too many scopes")]
    TooMany,
}

/// A set of scopes. Order never matters (RFC 6749 §3.3), so it is kept sorted, which also
/// makes the rendered string stable for storage and comparison.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeSet(BTreeSet<Scope>);

impl ScopeSet {
    pub fn parse(raw: &str) -> Result<Self, ScopeError> {
        let mut set = BTreeSet::new();
        for token in raw.split(' ').filter(|t| !t.is_empty()) {
            set.insert(Scope::parse(token)?);
            if set.len() > 64 {
                return Err(ScopeError::TooMany);
            }
        }
        Ok(Self(set))
    }

    pub fn from_strs<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<Self, ScopeError> {
        let mut set = BTreeSet::new();
        for s in items {
            set.insert(Scope::parse(s)?);
        }
        Ok(Self(set))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, scope: &str) -> bool {
        self.0.iter().any(|s| s.0 == scope)
    }

    pub fn is_subset(&self, other: &ScopeSet) -> bool {
        self.0.is_subset(&other.0)
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|s| s.as_str())
    }

    pub fn union(&self, other: &ScopeSet) -> ScopeSet {
        Self(self.0.union(&other.0).cloned().collect())
    }

    pub fn intersection(&self, other: &ScopeSet) -> ScopeSet {
        Self(self.0.intersection(&other.0).cloned().collect())
    }

    /// Scopes in `self` that `other` lacks.
    pub fn difference(&self, other: &ScopeSet) -> ScopeSet {
        Self(self.0.difference(&other.0).cloned().collect())
    }

    pub fn without(&self, scope: &str) -> ScopeSet {
        Self(self.0.iter().filter(|s| s.0 != scope).cloned().collect())
    }
}

impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for s in &self.0 {
            if !first {
                f.write_str(" ")?;
            }
            f.write_str(&s.0)?;
            first = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_space_delimited_sets_in_any_order() {
        let a = ScopeSet::parse("mcp offline_access").unwrap();
        let b = ScopeSet::parse("offline_access  mcp mcp").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "mcp offline_access");
        assert!(ScopeSet::parse("").unwrap().is_empty());
    }

    #[test]
    fn rejects_characters_outside_nqchar() {
        for raw in ["a\"b", "a\\b", "tab\there", "é"] {
            assert_eq!(ScopeSet::parse(raw), Err(ScopeError::Malformed), "{raw:?}");
        }
    }

    #[test]
    fn subset_and_difference() {
        let granted = ScopeSet::parse("a b c").unwrap();
        assert!(ScopeSet::parse("a c").unwrap().is_subset(&granted));
        assert!(!ScopeSet::parse("a d").unwrap().is_subset(&granted));
        assert_eq!(
            ScopeSet::parse("a d")
                .unwrap()
                .difference(&granted)
                .to_string(),
            "d"
        );
    }

    proptest! {
        #[test]
        fn rendering_then_parsing_is_identity(tokens in proptest::collection::vec("[!#-\\[\\]-~]{1,12}", 0..8)) {
            let set = ScopeSet::from_strs(tokens.iter().map(String::as_str)).unwrap();
            prop_assert_eq!(ScopeSet::parse(&set.to_string()).unwrap(), set);
        }
    }
}
