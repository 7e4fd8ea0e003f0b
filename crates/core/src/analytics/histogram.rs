//! Latency distributions that can be added together.
//!
//! Percentiles of different periods cannot be combined (the p95 of a day is not any average
//! of its hours' p95s), but counts per fixed bucket can: a rollup stores, per bucket of a
//! fixed log-scale grid, how many latencies fell in it, and the distribution of any range is
//! the sum of its rollups' buckets. A percentile read from it is within one bucket of the
//! exact value.
//!
//! The grid: bucket `i` holds latencies in `(2^((i-1)/8), 2^(i/8)]` microseconds, so each
//! bucket is 9.05 % wider than the one before, and a value read from a bucket (its geometric
//! middle) is within ±4.4 % of every latency in it. Bucket 0 holds everything up to 1 µs;
//! the last bucket everything above 2^(MAX_BUCKET/8) µs (about 71 minutes).

use std::collections::BTreeMap;

/// Buckets per doubling of the latency.
const PER_DOUBLING: f64 = 8.0;

/// The last bucket: 2^(256/8) µs = 2^32 µs, a little over 71 minutes.
pub const MAX_BUCKET: u16 = 256;

/// The bucket a latency of `micros` falls in.
pub fn bucket_of(micros: u64) -> u16 {
    if micros <= 1 {
        return 0;
    }
    let exact = (micros as f64).log2() * PER_DOUBLING;
    // `ceil` puts a value on a bucket's upper edge in that bucket; the nudge keeps an exact
    // power of two (where `log2` is exact) from rounding up through floating-point noise.
    let bucket = (exact - 1e-9).ceil();
    (bucket.max(0.0) as u64).min(u64::from(MAX_BUCKET)) as u16
}

/// The latencies bucket `i` holds, in microseconds: `(lower, upper]`.
pub fn bucket_bounds(i: u16) -> (f64, f64) {
    let upper = 2f64.powf(f64::from(i) / PER_DOUBLING);
    if i == 0 {
        (0.0, upper)
    } else {
        (2f64.powf(f64::from(i - 1) / PER_DOUBLING), upper)
    }
}

/// Counts of latencies per bucket. Sparse: most series use a few dozen buckets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    counts: BTreeMap<u16, u64>,
}

impl Histogram {
    pub fn record(&mut self, micros: u64) {
        self.add_to_bucket(bucket_of(micros), 1);
    }

    /// Add `count` latencies to bucket `i` (reading stored rollups back).
    pub fn add_to_bucket(&mut self, i: u16, count: u64) {
        if count > 0 {
            *self.counts.entry(i.min(MAX_BUCKET)).or_default() += count;
        }
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (&i, &n) in &other.counts {
            self.add_to_bucket(i, n);
        }
    }

    pub fn count(&self) -> u64 {
        self.counts.values().sum()
    }

    /// Non-empty buckets, lowest first.
    pub fn buckets(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        self.counts.iter().map(|(&i, &n)| (i, n))
    }

    /// The `q`-quantile (0 < q ≤ 1) in milliseconds, by nearest rank: the bucket holding the
    /// ⌈q·n⌉-th smallest latency, read as its geometric middle. `None` when empty.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * n as f64).ceil() as u64).clamp(1, n);
        let mut seen = 0;
        for (&i, &c) in &self.counts {
            seen += c;
            if seen >= rank {
                let (lower, upper) = bucket_bounds(i);
                let middle = if lower == 0.0 {
                    upper
                } else {
                    (lower * upper).sqrt()
                };
                return Some(middle / 1000.0);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exact nearest-rank quantile of `values`.
    fn exact(values: &mut [u64], q: f64) -> u64 {
        values.sort_unstable();
        let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
        values[rank - 1]
    }

    #[test]
    fn every_latency_lies_in_its_buckets_bounds() {
        for micros in [2, 3, 7, 100, 1000, 1024, 1025, 65_536, 999_999, 10_000_000] {
            let (lower, upper) = bucket_bounds(bucket_of(micros));
            assert!(
                lower < micros as f64 && micros as f64 <= upper * (1.0 + 1e-12),
                "{micros}: ({lower}, {upper}]"
            );
        }
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(1), 0);
        assert_eq!(bucket_of(u64::MAX), MAX_BUCKET);
    }

    #[test]
    fn buckets_are_about_nine_percent_wide() {
        for i in 1..MAX_BUCKET {
            let (lower, upper) = bucket_bounds(i);
            assert!((upper / lower - 1.0905).abs() < 0.001, "bucket {i}");
        }
    }

    #[test]
    fn a_quantile_is_within_one_bucket_of_the_exact_value() {
        // A skewed workload: most calls fast, a slow tail.
        let mut values: Vec<u64> = (0..10_000u64)
            .map(|i| {
                if i % 50 == 0 {
                    200_000 + i * 37
                } else {
                    800 + (i * 7919) % 5_000
                }
            })
            .collect();
        let mut h = Histogram::default();
        for &v in &values {
            h.record(v);
        }
        for q in [0.5, 0.9, 0.95, 0.99, 1.0] {
            let truth = exact(&mut values, q);
            let (lower, upper) = bucket_bounds(bucket_of(truth));
            let got = h.quantile_ms(q).unwrap() * 1000.0;
            assert!(
                lower <= got && got <= upper,
                "q={q}: {got} µs outside ({lower}, {upper}] holding {truth} µs"
            );
        }
    }

    #[test]
    fn merged_histograms_give_the_quantiles_of_all_values() {
        let (mut a, mut b, mut all) = (
            Histogram::default(),
            Histogram::default(),
            Histogram::default(),
        );
        for v in 1..=1000u64 {
            let target = if v % 3 == 0 { &mut a } else { &mut b };
            target.record(v * 100);
            all.record(v * 100);
        }
        a.merge(&b);
        assert_eq!(a, all);
        assert_eq!(a.count(), 1000);
        assert_eq!(a.quantile_ms(0.5), all.quantile_ms(0.5));
    }

    #[test]
    fn an_empty_histogram_has_no_quantiles() {
        assert_eq!(Histogram::default().quantile_ms(0.5), None);
    }
}
