//! Temporary address blocks (issue 8): which events earn an address a block, and how long
//! each block lasts. An address is blocked for an event that is about the address itself
//! (not about an account or a token it may share with others) once the event reaches the
//! configured level; each further block within a day of the last is four times as long.

use super::events::{Level, SecurityEventKind};

/// Whether an event of `kind` is evidence against the address it came from.
pub fn is_about_the_address(kind: SecurityEventKind) -> bool {
    use SecurityEventKind as K;
    matches!(
        kind,
        K::BruteForceIp
            | K::CredentialStuffing
            | K::Scanner
            | K::RateLimited
            | K::RegistrationFlood
    )
}

/// Whether an event of `kind` at `level` blocks its address, from `min_level` up.
pub fn earns_a_block(kind: SecurityEventKind, level: Level, min_level: Level) -> bool {
    is_about_the_address(kind) && level >= min_level
}

/// How long the block after `previous` recent blocks lasts: `base` seconds, four times as
/// long for each previous one, at most `max`.
pub fn block_seconds(previous: u32, base: i64, max: i64) -> i64 {
    let factor = 4i64.saturating_pow(previous.min(30));
    base.saturating_mul(factor).min(max).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_escalate_fourfold_up_to_the_cap() {
        let lengths: Vec<i64> = (0..6).map(|n| block_seconds(n, 300, 86_400)).collect();
        assert_eq!(lengths, [300, 1_200, 4_800, 19_200, 76_800, 86_400]);
        assert_eq!(block_seconds(u32::MAX, 300, 86_400), 86_400);
    }

    #[test]
    fn only_events_about_the_address_block_it() {
        use SecurityEventKind as K;
        assert!(earns_a_block(
            K::CredentialStuffing,
            Level::Critical,
            Level::Warning
        ));
        assert!(!earns_a_block(K::Scanner, Level::Notice, Level::Warning));
        // A brute force on one account may come from a victim's shared address; a replayed
        // code is the token's problem, not the address's.
        assert!(!earns_a_block(
            K::BruteForceAccount,
            Level::Critical,
            Level::Warning
        ));
        assert!(!earns_a_block(
            K::CodeReplay,
            Level::Critical,
            Level::Warning
        ));
    }
}
