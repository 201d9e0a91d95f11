//! Guest time by address space: every MOV to CR3 exits (CR3-load exiting), so the hypervisor
//! knows exactly which page-table root each guest cycle ran under. The reports list the top
//! address spaces per VM; idle detection uses the one a guest returns to most often.
//!
//! For xv6 that is `kpgdir`: the scheduler loads it after every process (`switchkvm`) and
//! spins in it when nothing is runnable, because xv6 never executes HLT. It is recognised as
//! the address space entered from the most *different* address spaces: every process returns
//! to it, while a process's tables are entered from it alone. Counting plain loads would not
//! do: `sbrk` reloads the current process's CR3 thousands of times (`growproc` calls
//! `switchuvm`), and reloading the current CR3 is no switch at all.

use alloc::vec::Vec;

use carousel_protocol::record::AddressSpace;

/// Distinct address spaces tracked per VM; beyond that the least-used share one entry.
const TRACKED: usize = 32;
/// CR3 value standing for "all the address spaces that did not fit".
pub const OTHER: u64 = u64::MAX;
/// Distinct address spaces an idle one must have been entered from: a guest that never switches
/// (Carousel's own guests), or one that only goes back and forth between two, has none.
const IDLE_MIN_PREDECESSORS: usize = 3;
/// Distinct predecessors remembered per address space (enough to tell the idle one).
const PREDECESSORS: usize = 4;

/// One VM's address spaces and the time spent in each.
#[derive(Debug)]
pub struct AddressSpaces {
    entries: Vec<AddressSpace>,
    /// Per entry: distinct CR3 values it was switched to from (at most [`PREDECESSORS`]).
    predecessors: Vec<Vec<u64>>,
    /// Index of the loaded address space in `entries`.
    current: usize,
    /// Guest cycles since the last CR3 load (or wake-up).
    since_load: u64,
    /// Index of the address space loaded most often, once it has been loaded enough.
    idle: Option<usize>,
}

impl AddressSpaces {
    /// Starts with CR3 = 0 (paging off at entry).
    pub fn new() -> Self {
        let mut entries = Vec::with_capacity(TRACKED);
        entries.push(AddressSpace {
            cr3: 0,
            cycles: 0,
            loads: 0,
        });
        Self {
            entries,
            predecessors: alloc::vec![Vec::new()],
            current: 0,
            since_load: 0,
            idle: None,
        }
    }

    /// The guest ran `cycles` in the current address space.
    pub fn charge(&mut self, cycles: u64) {
        self.entries[self.current].cycles += cycles;
        self.since_load += cycles;
    }

    /// The guest loaded `cr3`.
    pub fn load(&mut self, cr3: u64) {
        let from = self.entries[self.current].cr3;
        let index = match self.entries.iter().position(|entry| entry.cr3 == cr3) {
            Some(index) => index,
            None if self.entries.len() < TRACKED => {
                self.entries.push(AddressSpace {
                    cr3,
                    cycles: 0,
                    loads: 0,
                });
                self.predecessors.push(Vec::new());
                self.entries.len() - 1
            }
            None => self.other(),
        };
        self.entries[index].loads += 1;
        self.since_load = 0;
        if index == self.current {
            // A reload (a TLB flush), not a switch.
            return;
        }
        self.current = index;
        let seen = &mut self.predecessors[index];
        if seen.len() < PREDECESSORS && !seen.contains(&from) {
            seen.push(from);
        }
        let count = seen.len();
        let best = self.idle.map_or(0, |idle| self.predecessors[idle].len());
        if count >= IDLE_MIN_PREDECESSORS && count > best && self.entries[index].cr3 != OTHER {
            self.idle = Some(index);
        }
    }

    /// The shared entry for untracked address spaces (made from the least-used one).
    fn other(&mut self) -> usize {
        if let Some(index) = self.entries.iter().position(|entry| entry.cr3 == OTHER) {
            return index;
        }
        let (index, _) = self
            .entries
            .iter()
            .enumerate()
            .filter(|&(index, _)| index != self.current && Some(index) != self.idle)
            .min_by_key(|(_, entry)| entry.cycles)
            .expect("more than two tracked entries");
        self.entries[index].cr3 = OTHER;
        self.predecessors[index].clear();
        index
    }

    /// Guest cycles the VM has spent in its idle address space since it last loaded it, or
    /// None when it is elsewhere (or has no idle address space).
    pub fn idle_for(&self) -> Option<u64> {
        (self.idle == Some(self.current)).then_some(self.since_load)
    }

    /// Restarts the idle clock (the VM was woken: give it time to react).
    pub fn restart_idle_clock(&mut self) {
        self.since_load = 0;
    }

    /// The `count` address spaces with the most guest time, largest first.
    pub fn top(&self, count: usize) -> Vec<AddressSpace> {
        let mut entries = self.entries.clone();
        entries.sort_by_key(|entry| core::cmp::Reverse(entry.cycles));
        entries.truncate(count);
        entries
    }
}

impl Default for AddressSpaces {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// xv6's pattern: boot tables, kernel tables, then every process switch returns to them.
    fn xv6_like() -> AddressSpaces {
        let mut spaces = AddressSpaces::new();
        spaces.load(0x109000); // entrypgdir
        spaces.load(0x3ff000); // kpgdir
        for process in [0xdf76000u64, 0xdf70000, 0xdf76000] {
            spaces.charge(500);
            spaces.load(process);
            spaces.charge(20_000);
            spaces.load(0x3ff000);
        }
        spaces
    }

    #[test]
    fn the_space_entered_from_most_others_is_idle_and_its_clock_runs() {
        let mut spaces = xv6_like();
        spaces.charge(700);
        assert_eq!(spaces.idle_for(), Some(700));
        spaces.load(0xdf70000);
        assert_eq!(spaces.idle_for(), None);
        spaces.load(0x3ff000);
        assert_eq!(spaces.idle_for(), Some(0));
        spaces.charge(10);
        spaces.restart_idle_clock();
        assert_eq!(spaces.idle_for(), Some(0));
    }

    #[test]
    fn reloading_a_process_does_not_make_it_idle() {
        let mut spaces = xv6_like();
        // sbrk(1) five thousand times: growproc reloads the process's own page table.
        spaces.load(0xdf76000);
        for _ in 0..5_000 {
            spaces.charge(10);
            spaces.load(0xdf76000);
        }
        spaces.charge(1_000_000);
        assert_eq!(spaces.idle_for(), None);
        spaces.load(0x3ff000);
        assert_eq!(spaces.idle_for(), Some(0));
    }

    #[test]
    fn two_spaces_back_and_forth_have_no_idle_one() {
        let mut spaces = AddressSpaces::new();
        for _ in 0..100 {
            spaces.load(0x1000);
            spaces.load(0x2000);
        }
        spaces.charge(1_000_000);
        assert_eq!(spaces.idle_for(), None);
    }

    #[test]
    fn a_guest_that_never_switches_has_no_idle_space() {
        let mut spaces = AddressSpaces::new();
        spaces.load(0x108000);
        spaces.charge(1_000_000);
        assert_eq!(spaces.idle_for(), None);
    }

    #[test]
    fn time_goes_to_the_loaded_space_and_top_sorts_it() {
        let spaces = xv6_like();
        let top = spaces.top(2);
        assert_eq!(top[0].cr3, 0xdf76000);
        assert_eq!(top[0].cycles, 40_000);
        assert_eq!(top[0].loads, 2);
        assert_eq!(top[1].cr3, 0xdf70000);
    }

    proptest! {
        #[test]
        fn cycles_are_conserved_and_entries_bounded(
            steps in proptest::collection::vec((0u64..100, 0u64..1000), 1..400)
        ) {
            let mut spaces = AddressSpaces::new();
            let mut total = 0;
            for (cr3, cycles) in steps {
                spaces.load(cr3 * 0x1000);
                spaces.charge(cycles);
                total += cycles;
            }
            let all = spaces.top(usize::MAX);
            prop_assert!(all.len() <= TRACKED);
            prop_assert_eq!(all.iter().map(|entry| entry.cycles).sum::<u64>(), total);
        }
    }
}
