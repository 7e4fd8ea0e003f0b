//! What an operation needs, and whether a token's scopes cover it, honouring a scope
//! hierarchy (MCP 2026-07-28: a broader scope implies the narrower ones it contains).

use std::collections::BTreeMap;

use crate::domain::ScopeSet;

/// `broader → narrower` implications, from configuration, applied transitively.
#[derive(Debug, Clone, Default)]
pub struct ScopeHierarchy {
    implies: BTreeMap<String, Vec<String>>,
}

impl ScopeHierarchy {
    pub fn new(implies: BTreeMap<String, Vec<String>>) -> Self {
        Self { implies }
    }

    /// Every scope `granted` stands for, implications included.
    pub fn expand(&self, granted: &ScopeSet) -> ScopeSet {
        let mut all: Vec<String> = granted.iter().map(str::to_owned).collect();
        let mut i = 0;
        while i < all.len() {
            if let Some(narrower) = self.implies.get(&all[i]) {
                for n in narrower {
                    if !all.contains(n) {
                        all.push(n.clone());
                    }
                }
            }
            i += 1;
        }
        ScopeSet::from_strs(all.iter().map(String::as_str)).unwrap_or_default()
    }

    /// The required scopes `granted` does not cover (empty when access is allowed).
    pub fn missing(&self, granted: &ScopeSet, required: &ScopeSet) -> ScopeSet {
        if required.is_subset(granted) {
            // The common case, on every request: nothing to expand.
            return ScopeSet::default();
        }
        required.difference(&self.expand(granted))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(s: &str) -> ScopeSet {
        ScopeSet::parse(s).unwrap()
    }

    #[test]
    fn implications_are_transitive() {
        let h = ScopeHierarchy::new(BTreeMap::from([
            ("admin".to_owned(), vec!["write".to_owned()]),
            ("write".to_owned(), vec!["read".to_owned()]),
        ]));
        assert!(h.missing(&set("admin"), &set("read write")).is_empty());
        assert_eq!(
            h.missing(&set("read"), &set("read write")).to_string(),
            "write"
        );
        assert_eq!(h.missing(&set(""), &set("mcp")).to_string(), "mcp");
    }

    #[test]
    fn cycles_terminate() {
        let h = ScopeHierarchy::new(BTreeMap::from([
            ("a".to_owned(), vec!["b".to_owned()]),
            ("b".to_owned(), vec!["a".to_owned()]),
        ]));
        assert_eq!(h.expand(&set("a")).to_string(), "a b");
    }
}
