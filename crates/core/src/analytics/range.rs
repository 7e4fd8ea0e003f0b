//! Which stored rows answer a time range exactly.
//!
//! Events are kept twice: raw (30 days by default) and summed per minute, hour and day
//! (rollups, 400 days). A range `[from, to)` is answered from the coarsest rollups that fit
//! inside it, and the ragged edges (the seconds before the first whole minute and after the
//! last) from raw events, so a figure covers exactly the events whose time is in the range,
//! while a 30-day range still reads about 30 day rows per series rather than millions of
//! events.

/// Times are Unix milliseconds.
pub type Millis = i64;

/// A rollup granularity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Period {
    Minute,
    Hour,
    Day,
}

impl Period {
    pub const ALL: [Period; 3] = [Period::Minute, Period::Hour, Period::Day];

    pub const fn millis(self) -> Millis {
        match self {
            Period::Minute => 60_000,
            Period::Hour => 3_600_000,
            Period::Day => 86_400_000,
        }
    }

    /// The start of the bucket `at` falls in (UTC; days start at midnight UTC).
    pub const fn bucket_start(self, at: Millis) -> Millis {
        at - at.rem_euclid(self.millis())
    }

    /// The value stored in the `period` column: the bucket's length in seconds.
    pub const fn seconds(self) -> i64 {
        self.millis() / 1000
    }
}

/// Rollup buckets `[start, end)` of one period: every bucket whose start lies in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollupSpan {
    pub period: Period,
    pub start: Millis,
    pub end: Millis,
}

/// Where the events of a range are read from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangePlan {
    /// Spans of whole rollup buckets, coarsest first.
    pub rollups: Vec<RollupSpan>,
    /// Stretches `[start, end)` read from raw events (shorter than a minute each).
    pub raw: Vec<(Millis, Millis)>,
}

/// Cover `[from, to)` with whole days, then whole hours, then whole minutes, and raw events
/// for what remains. The parts do not overlap and together are exactly the range.
pub fn plan(from: Millis, to: Millis) -> RangePlan {
    let mut out = RangePlan::default();
    if from >= to {
        return out;
    }
    cover(from, to, &Period::ALL, &mut out);
    out.rollups.sort_by_key(|s| std::cmp::Reverse(s.period));
    out
}

/// Cover `[from, to)` with the coarsest of `periods` (finest first) that fits, recursing on
/// the edges with the finer ones.
fn cover(from: Millis, to: Millis, periods: &[Period], out: &mut RangePlan) {
    if from >= to {
        return;
    }
    let Some((&coarsest, finer)) = periods.split_last() else {
        out.raw.push((from, to));
        return;
    };
    let p = coarsest.millis();
    let first = from + (p - from.rem_euclid(p)) % p;
    let last = coarsest.bucket_start(to);
    if first >= last {
        cover(from, to, finer, out);
        return;
    }
    cover(from, first, finer, out);
    out.rollups.push(RollupSpan {
        period: coarsest,
        start: first,
        end: last,
    });
    cover(last, to, finer, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIN: Millis = 60_000;
    const HOUR: Millis = 60 * MIN;
    const DAY: Millis = 24 * HOUR;

    /// Which source answers for instant `t`, if any, in a plan.
    fn sources(plan: &RangePlan, t: Millis) -> usize {
        let in_rollups = plan
            .rollups
            .iter()
            .filter(|s| s.period.bucket_start(t) >= s.start && s.period.bucket_start(t) < s.end)
            .count();
        let in_raw = plan.raw.iter().filter(|(a, b)| *a <= t && t < *b).count();
        in_rollups + in_raw
    }

    #[test]
    fn a_range_inside_one_minute_is_read_raw() {
        let from = 10 * DAY + 5_000;
        assert_eq!(
            plan(from, from + 20_000),
            RangePlan {
                rollups: vec![],
                raw: vec![(from, from + 20_000)]
            }
        );
    }

    #[test]
    fn thirty_days_from_a_ragged_start_use_days_hours_minutes_and_raw_edges() {
        let from = 100 * DAY + 3 * HOUR + 7 * MIN + 1_500;
        let to = from + 30 * DAY;
        let p = plan(from, to);
        assert_eq!(
            p.rollups[0],
            RollupSpan {
                period: Period::Day,
                start: 101 * DAY,
                end: 130 * DAY
            }
        );
        assert_eq!(p.raw, vec![(from, from + 58_500), (to - 1_500, to)]);
        assert!(p.rollups.len() <= 5, "{p:?}");
    }

    #[test]
    fn an_empty_or_inverted_range_reads_nothing() {
        assert_eq!(plan(5, 5), RangePlan::default());
        assert_eq!(plan(9, 5), RangePlan::default());
    }

    proptest! {
        /// Every instant of the range is read from exactly one place, and nothing outside it.
        #[test]
        fn the_plan_covers_the_range_exactly_once(
            from in 0i64..(40 * DAY),
            len in 0i64..(35 * DAY),
            probes in proptest::collection::vec(0i64..(80 * DAY), 50)
        ) {
            let to = from + len;
            let p = plan(from, to);
            for t in probes.into_iter().chain([from, to - 1, to, from - 1]) {
                let expected = usize::from(from <= t && t < to);
                prop_assert_eq!(sources(&p, t), expected, "t={} plan={:?}", t, p);
            }
        }
    }
}
