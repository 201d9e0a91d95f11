//! A log-linear histogram of cycle counts (HDR-style) for latency percentiles.
//!
//! Values below [`EXACT_LIMIT`] each get a bucket of their own. Above it every power of two
//! `[2^e, 2^(e+1))` is cut into [`SUB_BUCKETS`] equal buckets, so a bucket is never wider than
//! 1/32 of its lower bound. A percentile is reported as the upper bound of the bucket holding the
//! sample of that rank, clamped to the largest value recorded: it is never below the exact
//! percentile and at most 1/32 (3.125 %) above it. The whole `u64` range is covered; nothing
//! saturates.
//!
//! The counters are one allocation of [`BUCKETS`] words made by [`LatencyHistogram::new`] (15 KiB;
//! on the heap rather than inline so that building one never puts 15 KiB on the hypervisor's 64 KiB
//! stack). [`LatencyHistogram::record`] and every query are allocation-free; `record` is O(1), a
//! percentile query walks the buckets once.

use alloc::boxed::Box;
use alloc::vec;
use core::fmt;

/// Values below this are counted exactly, one bucket each.
pub const EXACT_LIMIT: u64 = 64;
/// Buckets per power of two at and above [`EXACT_LIMIT`].
pub const SUB_BUCKETS: u64 = 32;
/// log2 of [`SUB_BUCKETS`].
const SUB_BUCKET_BITS: u32 = 5;
/// log2 of [`EXACT_LIMIT`]: the first power of two that is cut into sub-buckets.
const FIRST_CUT_EXPONENT: u32 = 6;
/// Total number of buckets: the exact ones, then 32 for each of the powers 2^6 .. 2^63.
pub const BUCKETS: usize =
    EXACT_LIMIT as usize + (64 - FIRST_CUT_EXPONENT as usize) * SUB_BUCKETS as usize;

/// Counts of cycle values in log-linear buckets, with the exact count, minimum and maximum.
#[derive(Clone, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// Samples per bucket; `counts.len() == BUCKETS`.
    counts: Box<[u64]>,
    /// Samples recorded.
    count: u64,
    /// Smallest sample (meaningless while `count == 0`).
    min: u64,
    /// Largest sample (meaningless while `count == 0`).
    max: u64,
}

impl LatencyHistogram {
    /// An empty histogram. This is the only allocation it ever makes.
    pub fn new() -> Self {
        Self {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            count: 0,
            min: u64::MAX,
            max: 0,
        }
    }

    /// Counts one sample. O(1), no allocation.
    pub fn record(&mut self, value: u64) {
        let index = bucket_index(value);
        self.counts[index] = self.counts[index].saturating_add(1);
        self.count = self.count.saturating_add(1);
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }

    /// Number of samples recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The largest sample, exact; `None` when empty.
    pub fn max(&self) -> Option<u64> {
        (self.count > 0).then_some(self.max)
    }

    /// The smallest sample, exact; `None` when empty.
    pub fn min(&self) -> Option<u64> {
        (self.count > 0).then_some(self.min)
    }

    /// The value at `per_mille` (0 ..= 1000; larger values count as 1000): the upper bound of the
    /// bucket holding the sample of rank `ceil(count × per_mille / 1000)` (at least rank 1),
    /// clamped to [`max`](Self::max). Never below the exact percentile, at most 1/32 above it.
    /// `None` when empty.
    pub fn percentile(&self, per_mille: u16) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let per_mille = u128::from(per_mille.min(1000));
        let rank = (u128::from(self.count) * per_mille).div_ceil(1000) as u64;
        self.value_at_rank(rank.max(1))
    }

    /// The sample of 1-based `rank` in ascending order, reported as its bucket's upper bound
    /// clamped to the exact minimum and maximum; `None` when `rank` is 0 or past the count.
    pub fn value_at_rank(&self, rank: u64) -> Option<u64> {
        if rank == 0 || rank > self.count {
            return None;
        }
        let mut seen = 0u64;
        for (index, &bucket) in self.counts.iter().enumerate() {
            seen = seen.saturating_add(bucket);
            if seen >= rank {
                return Some(bucket_upper_bound(index).clamp(self.min, self.max));
            }
        }
        // Unreachable while the bucket counts add up to `count`, which `record` maintains (a
        // bucket saturates only after 2^64 samples, when `count` has saturated too).
        Some(self.max)
    }
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LatencyHistogram")
            .field("count", &self.count)
            .field("min", &self.min())
            .field("max", &self.max())
            .finish_non_exhaustive()
    }
}

/// The bucket that counts `value`.
fn bucket_index(value: u64) -> usize {
    if value < EXACT_LIMIT {
        return value as usize;
    }
    let exponent = 63 - value.leading_zeros();
    let shift = exponent - SUB_BUCKET_BITS;
    let sub = (value >> shift) - SUB_BUCKETS;
    EXACT_LIMIT as usize
        + (exponent - FIRST_CUT_EXPONENT) as usize * SUB_BUCKETS as usize
        + sub as usize
}

/// The largest value counted by bucket `index`.
fn bucket_upper_bound(index: usize) -> u64 {
    let index = index as u64;
    if index < EXACT_LIMIT {
        return index;
    }
    let cut = index - EXACT_LIMIT;
    let exponent = (cut / SUB_BUCKETS) as u32 + FIRST_CUT_EXPONENT;
    let sub = cut % SUB_BUCKETS;
    let shift = exponent - SUB_BUCKET_BITS;
    // Written as lower bound + (width − 1) so the top bucket ends at u64::MAX without overflow.
    ((SUB_BUCKETS + sub) << shift) + ((1u64 << shift) - 1)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn small_values_are_exact() {
        let mut histogram = LatencyHistogram::new();
        for value in 0..EXACT_LIMIT {
            histogram.record(value);
        }
        for value in 0..EXACT_LIMIT {
            assert_eq!(histogram.value_at_rank(value + 1), Some(value));
        }
    }

    #[test]
    fn buckets_tile_the_whole_range() {
        assert_eq!(bucket_upper_bound(0), 0);
        for index in 1..BUCKETS {
            assert_eq!(
                bucket_upper_bound(index - 1) + 1,
                lower_bound(index),
                "bucket {index}"
            );
            assert_eq!(bucket_index(lower_bound(index)), index);
            assert_eq!(bucket_index(bucket_upper_bound(index)), index);
        }
        assert_eq!(bucket_upper_bound(BUCKETS - 1), u64::MAX);
        assert_eq!(bucket_index(u64::MAX), BUCKETS - 1);
    }

    fn lower_bound(index: usize) -> u64 {
        if index == 0 {
            0
        } else {
            bucket_upper_bound(index - 1) + 1
        }
    }

    #[test]
    fn empty_histogram_has_no_percentiles() {
        let histogram = LatencyHistogram::new();
        assert_eq!(histogram.count(), 0);
        assert_eq!(histogram.percentile(500), None);
        assert_eq!(histogram.max(), None);
        assert_eq!(histogram.min(), None);
        assert_eq!(histogram.value_at_rank(1), None);
    }

    #[test]
    fn percentile_is_clamped_to_the_exact_maximum() {
        let mut histogram = LatencyHistogram::new();
        histogram.record(1_000_001);
        assert_eq!(histogram.percentile(990), Some(1_000_001));
        assert_eq!(histogram.percentile(0), Some(1_000_001));
        histogram.record(u64::MAX);
        assert_eq!(histogram.percentile(1000), Some(u64::MAX));
        assert_eq!(histogram.percentile(u16::MAX), Some(u64::MAX));
    }

    /// The exact value of rank `ceil(n × p / 1000)` (at least 1) in `sorted`.
    fn exact_percentile(sorted: &[u64], per_mille: u16) -> u64 {
        let rank = (sorted.len() as u128 * u128::from(per_mille)).div_ceil(1000) as usize;
        sorted[rank.max(1) - 1]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Every percentile is at or above the exact one and within 1/32 of it.
        #[test]
        fn percentiles_are_within_the_stated_error(
            values in prop::collection::vec(
                prop_oneof![
                    0u64..200,
                    0u64..100_000,
                    any::<u64>(),
                    (0u32..64).prop_map(|shift| 1u64 << shift),
                ],
                1..300,
            ),
            per_mille in 0u16..=1000,
        ) {
            let mut histogram = LatencyHistogram::new();
            for &value in &values {
                histogram.record(value);
            }
            let mut sorted = values.clone();
            sorted.sort_unstable();
            for p in [per_mille, 500, 950, 990, 1000] {
                let exact = exact_percentile(&sorted, p);
                let reported = histogram.percentile(p).unwrap();
                prop_assert!(reported >= exact, "p{p}: {reported} < exact {exact}");
                prop_assert!(
                    reported - exact <= exact / SUB_BUCKETS,
                    "p{p}: {reported} vs exact {exact}"
                );
            }
            prop_assert_eq!(histogram.max(), sorted.last().copied());
            prop_assert_eq!(histogram.min(), sorted.first().copied());
            prop_assert_eq!(histogram.count(), values.len() as u64);
        }
    }
}
