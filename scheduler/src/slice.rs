//! One slice of CPU time, measured on the clock the run chose.
//!
//! - [`QuantumClock::Wall`] (the default): a slice is its length of TSC time from its VM entry.
//!   Root-mode cycles spent on the VM's own exits count against it, so a VM that makes the
//!   hypervisor work (port I/O, hypercalls, MMIO) pays for that work out of its own share.
//!   Work the hypervisor does for itself during the slice (feeding its serial lines, say) is
//!   [excluded](Slice::exclude): the slice's end moves out by that much.
//! - [`QuantumClock::Guest`]: a slice is its length of guest-mode time (the VMX-preemption
//!   timer's own measure); root time comes on top. Kept for comparison with earlier runs.
//!
//! **Invariant** (property-tested below): on the wall clock, a slice that the run loop checks
//! after every exit ([`Slice::timer`] returns `None` once it is over) ends at most one exit's
//! handling after [`Slice::end`]: the loop never enters the guest past the end, and it sees the
//! end at the first exit after it. On the guest clock, the guest runs at most the slice's length
//! (plus the timer's rounding) in guest mode.

use crate::Cycles;

/// What a quantum measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QuantumClock {
    /// TSC time from the VM entry, root-mode work on the VM's exits included.
    #[default]
    Wall,
    /// Guest-mode time only.
    Guest,
}

/// A slice in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slice {
    clock: QuantumClock,
    length: Cycles,
    start: Cycles,
    /// Hypervisor work done during the slice that is not the VM's (it moves the end out).
    excluded: Cycles,
    /// Guest-mode cycles used so far.
    guest: Cycles,
}

impl Slice {
    /// A slice of `length` cycles (at least 1) starting at `start` on `clock`.
    pub fn new(clock: QuantumClock, start: Cycles, length: Cycles) -> Self {
        Self {
            clock,
            length: length.max(1),
            start,
            excluded: 0,
            guest: 0,
        }
    }

    /// The clock the slice is measured on.
    pub fn clock(&self) -> QuantumClock {
        self.clock
    }

    /// The slice's length as configured.
    pub fn length(&self) -> Cycles {
        self.length
    }

    /// The instant the slice ends on the wall clock (its start, its length and the excluded
    /// work). Meaningful for [`QuantumClock::Wall`] only.
    pub fn end(&self) -> Cycles {
        self.start
            .saturating_add(self.length)
            .saturating_add(self.excluded)
    }

    /// The guest ran `cycles` in guest mode (by the slice timer's count).
    pub fn guest_ran(&mut self, cycles: Cycles) {
        self.guest = self.guest.saturating_add(cycles);
    }

    /// The hypervisor spent `cycles` of the slice on work of its own, not the VM's.
    pub fn exclude(&mut self, cycles: Cycles) {
        self.excluded = self.excluded.saturating_add(cycles);
    }

    /// Cycles left at `now`, on the slice's clock: None when the slice is over.
    pub fn left(&self, now: Cycles) -> Option<Cycles> {
        let left = match self.clock {
            QuantumClock::Wall => self.end().saturating_sub(now),
            QuantumClock::Guest => self.length.saturating_sub(self.guest),
        };
        (left > 0).then_some(left)
    }

    /// The slice timer to arm at `now`, the nearer of what is left of the slice and
    /// `deadline` (the next instant the hypervisor must act: another VM's wake-up, an interrupt
    /// this VM can take), at least 1. None when the slice is over. A deadline already past
    /// arms the timer for 1 cycle, so the loop sees it at once.
    pub fn timer(&self, now: Cycles, deadline: Option<Cycles>) -> Option<Cycles> {
        let left = self.left(now)?;
        let until_deadline = deadline.map_or(Cycles::MAX, |deadline| deadline.saturating_sub(now));
        Some(left.min(until_deadline).max(1))
    }

    /// What the slice used, on its own clock, at `now`: the sample its quantum error is taken
    /// from (wall: time since the start less the excluded work; guest: guest cycles).
    pub fn used(&self, now: Cycles) -> Cycles {
        match self.clock {
            QuantumClock::Wall => now.saturating_sub(self.start).saturating_sub(self.excluded),
            QuantumClock::Guest => self.guest,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn root_time_counts_against_a_wall_slice() {
        let mut slice = Slice::new(QuantumClock::Wall, 1_000, 10_000);
        // 4,000 guest cycles, then an exit handled for 5,000 root cycles.
        slice.guest_ran(4_000);
        assert_eq!(slice.timer(10_000, None), Some(1_000));
        // The hypervisor fed its serial lines for 500 cycles: the end moves out.
        slice.exclude(500);
        assert_eq!(slice.timer(10_000, None), Some(1_500));
        assert_eq!(slice.timer(11_500, None), None);
        assert_eq!(slice.used(11_500), 10_000);
    }

    #[test]
    fn a_guest_slice_ignores_root_time() {
        let mut slice = Slice::new(QuantumClock::Guest, 0, 10_000);
        slice.guest_ran(4_000);
        assert_eq!(slice.timer(1_000_000, None), Some(6_000));
        slice.guest_ran(6_000);
        assert_eq!(slice.timer(1_000_000, None), None);
        assert_eq!(slice.used(5), 10_000);
    }

    #[test]
    fn a_deadline_shortens_the_timer_but_not_the_slice() {
        let slice = Slice::new(QuantumClock::Wall, 0, 10_000);
        assert_eq!(slice.timer(100, Some(600)), Some(500));
        assert_eq!(slice.timer(100, Some(50)), Some(1));
        assert_eq!(slice.timer(100, Some(1_000_000)), Some(9_900));
    }

    proptest! {
        /// The run loop's use of a wall slice: enter with the timer, the guest runs at most that
        /// long (an exit may come earlier), the exit costs some root cycles; the loop stops
        /// when the timer says the slice is over. The slice never ends more than one exit's
        /// handling past its end, and never before it.
        #[test]
        fn a_wall_slice_overruns_by_at_most_one_exit(
            length in 1u64..1_000_000,
            steps in proptest::collection::vec((0u64..200_000, 0u64..50_000, 0u64..2_000, any::<bool>()), 1..200),
        ) {
            let start = 7;
            let mut slice = Slice::new(QuantumClock::Wall, start, length);
            let mut now = start;
            let mut longest_exit = 0;
            let mut over = false;
            for (run, handling, own_work, deadline_soon) in steps {
                let deadline = deadline_soon.then_some(now + run / 2);
                let Some(timer) = slice.timer(now, deadline) else {
                    over = true;
                    break;
                };
                prop_assert!(now < slice.end());
                // The guest runs until the timer or an earlier exit.
                now += run.min(timer);
                slice.guest_ran(run.min(timer));
                // Root-mode handling of the exit (the VM's), then the hypervisor's own work.
                now += handling;
                longest_exit = longest_exit.max(handling);
                slice.exclude(own_work);
                now += own_work;
            }
            if over {
                prop_assert!(now >= slice.end());
                prop_assert!(now - slice.end() <= longest_exit + 2_000);
            }
        }

        /// On the guest clock the guest gets exactly its length in guest mode.
        #[test]
        fn a_guest_slice_gives_exactly_its_length(
            length in 1u64..1_000_000,
            runs in proptest::collection::vec(1u64..200_000, 1..200),
        ) {
            let mut slice = Slice::new(QuantumClock::Guest, 0, length);
            let mut given = 0;
            for run in runs {
                let Some(timer) = slice.timer(0, None) else { break };
                let ran = run.min(timer);
                given += ran;
                slice.guest_ran(ran);
            }
            prop_assert!(given <= length);
            if slice.timer(0, None).is_none() {
                prop_assert_eq!(given, length);
            }
        }
    }
}
