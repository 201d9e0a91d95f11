//! What each kind of VM exit cost one VM: per basic exit reason, the number of exits and the
//! root-mode cycles they took (VM exit to the next VM entry), with minimum, maximum and a
//! log2 histogram. The run loop records every exit and, once per interval, takes the figures
//! out as an `ExitInterval` record and starts afresh.
//!
//! Recording is a few additions on an array indexed by reason: it sits on the exit path.

use alloc::vec::Vec;

use carousel_protocol::record::ExitStat;

/// Basic exit reasons tracked (SDM Appendix C numbers them below 80); others share the last.
const REASONS: usize = 80;
/// Log2 buckets: exits up to 2^32 cycles; longer ones land in the last bucket.
const BUCKETS: usize = 33;

#[derive(Debug, Clone, Copy)]
struct Slot {
    count: u64,
    cycles: u64,
    min: u64,
    max: u64,
    log2: [u32; BUCKETS],
}

const EMPTY: Slot = Slot {
    count: 0,
    cycles: 0,
    min: u64::MAX,
    max: 0,
    log2: [0; BUCKETS],
};

/// One VM's exit statistics for the current interval. The slots (13 KiB) live on the heap: a
/// VM is assembled on the hypervisor's stack, which must not carry them.
#[derive(Debug, Clone)]
pub struct ExitStats {
    slots: Vec<Slot>,
    /// One bit per reason recorded since the last take: the interval's flush looks at these
    /// slots only (it runs between slices, where every cycle delays the next VM).
    used: u128,
}

impl Default for ExitStats {
    fn default() -> Self {
        Self::new()
    }
}

impl ExitStats {
    pub fn new() -> Self {
        Self {
            slots: alloc::vec![EMPTY; REASONS],
            used: 0,
        }
    }

    /// An exit for `reason` took `cycles` of root-mode time.
    pub fn record(&mut self, reason: u16, cycles: u64) {
        let index = usize::from(reason).min(REASONS - 1);
        self.used |= 1 << index;
        let slot = &mut self.slots[index];
        slot.count += 1;
        slot.cycles = slot.cycles.saturating_add(cycles);
        slot.min = slot.min.min(cycles);
        slot.max = slot.max.max(cycles);
        let bucket = (u64::BITS - cycles.leading_zeros()).saturating_sub(1) as usize;
        slot.log2[bucket.min(BUCKETS - 1)] += 1;
    }

    /// True when no exit was recorded since the last [`Self::take`].
    pub fn is_empty(&self) -> bool {
        self.used == 0
    }

    /// The figures of every reason that occurred, and a fresh start (only the slots used are
    /// cleared: this runs between slices, where every cycle is switch cost).
    pub fn take(&mut self) -> Vec<ExitStat> {
        let mut stats = Vec::new();
        self.take_into(&mut stats);
        stats
    }

    /// [`Self::take`] into `stats`, whose entries (and their histograms' vectors) are reused:
    /// once the vectors have grown, a take allocates nothing.
    pub fn take_into(&mut self, stats: &mut Vec<ExitStat>) {
        let mut used = core::mem::take(&mut self.used);
        let mut filled = 0;
        while used != 0 {
            let reason = used.trailing_zeros() as usize;
            used &= used - 1;
            let slot = &mut self.slots[reason];
            if filled == stats.len() {
                stats.push(ExitStat {
                    reason: 0,
                    count: 0,
                    cycles: 0,
                    min: 0,
                    max: 0,
                    log2: Vec::new(),
                });
            }
            let stat = &mut stats[filled];
            filled += 1;
            stat.reason = reason as u16;
            stat.count = slot.count;
            stat.cycles = slot.cycles;
            stat.min = slot.min;
            stat.max = slot.max;
            stat.log2.clear();
            stat.log2.extend(
                slot.log2
                    .iter()
                    .enumerate()
                    .filter(|(_, &count)| count > 0)
                    .map(|(bucket, &count)| (bucket as u8, count)),
            );
            *slot = EMPTY;
        }
        stats.truncate(filled);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn take_into_reuses_its_vector_and_gives_what_take_gives() {
        let fill = |stats: &mut ExitStats, round: u64| {
            for reason in [10u16, 30, 48] {
                for cycles in [round, 900 + round, 70_000] {
                    stats.record(reason, cycles);
                }
            }
        };
        let (mut a, mut b) = (ExitStats::new(), ExitStats::new());
        let mut reused = Vec::new();
        fill(&mut a, 1);
        a.take_into(&mut reused);
        let capacity = reused.capacity();
        for round in 2..6 {
            fill(&mut a, round);
            fill(&mut b, round);
            a.take_into(&mut reused);
            assert_eq!(reused, b.take());
            assert_eq!(reused.capacity(), capacity);
        }
        // Fewer reasons than last time: the extra entries go.
        a.record(30, 5);
        a.take_into(&mut reused);
        assert_eq!(reused.len(), 1);
        assert!(a.is_empty());
    }

    #[test]
    fn counts_cycles_extremes_and_buckets_per_reason() {
        let mut stats = ExitStats::new();
        stats.record(30, 900);
        stats.record(30, 100);
        stats.record(52, 0);
        stats.record(52, 1);
        stats.record(999, 5);
        let taken = stats.take();
        assert_eq!(taken.len(), 3);
        let io = &taken[0];
        assert_eq!(
            (io.reason, io.count, io.cycles, io.min, io.max),
            (30, 2, 1000, 100, 900)
        );
        assert_eq!(io.log2, [(6, 1), (9, 1)]);
        assert_eq!(taken[1].log2, [(0, 2)]);
        assert_eq!(taken[2].reason, 79);
        assert!(stats.is_empty());
        assert!(stats.take().is_empty());
    }

    proptest! {
        #[test]
        fn totals_survive_take(exits in proptest::collection::vec((0u16..100, any::<u32>()), 0..300)) {
            let mut stats = ExitStats::new();
            for &(reason, cycles) in &exits {
                stats.record(reason, u64::from(cycles));
            }
            let taken = stats.take();
            prop_assert_eq!(taken.iter().map(|s| s.count).sum::<u64>(), exits.len() as u64);
            let total: u64 = exits.iter().map(|&(_, c)| u64::from(c)).sum();
            prop_assert_eq!(taken.iter().map(|s| s.cycles).sum::<u64>(), total);
            for stat in &taken {
                prop_assert!(stat.min <= stat.max);
                prop_assert_eq!(stat.log2.iter().map(|&(_, n)| u64::from(n)).sum::<u64>(), stat.count);
            }
        }
    }
}
