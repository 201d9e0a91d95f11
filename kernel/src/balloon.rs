//! A VM's balloon: which of its pages it gave back, and the checks every inflate and deflate
//! request passes before anything changes. A request is taken whole or not at all: a page out
//! of range, listed twice, or in the wrong state refuses the whole list. The EPT and frame work
//! that follows a valid request is the hypervisor's (`vm.rs`); this is the bookkeeping.

use alloc::vec;
use alloc::vec::Vec;

use carousel_protocol::hypercall::{Error, BALLOON_BATCH_MAX};

/// One VM's ballooned pages.
#[derive(Debug, Clone)]
pub struct Balloon {
    pages: u64,
    /// One bit per guest page: given back.
    ballooned: Vec<u64>,
    count: u64,
    /// The balloon size the host asks for.
    pub target: u64,
    /// Pages given back and taken back over the run.
    pub inflated_total: u64,
    pub deflated_total: u64,
}

impl Balloon {
    /// The balloon of a VM of `pages` pages, holding none of them.
    pub fn new(pages: u64, target: u64) -> Self {
        Self {
            pages,
            ballooned: vec![0; pages.div_ceil(64) as usize],
            count: 0,
            target: target.min(pages),
            inflated_total: 0,
            deflated_total: 0,
        }
    }

    /// Pages ballooned now.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// True when guest page `page` was given back.
    pub fn contains(&self, page: u64) -> bool {
        page < self.pages && self.ballooned[(page / 64) as usize] & (1 << (page % 64)) != 0
    }

    /// Checks an inflate request: every page in RAM, listed once, not ballooned yet.
    pub fn check_inflate(&self, list: &[u32]) -> Result<(), Error> {
        self.check(list, false)
    }

    /// Checks a deflate request: every page in RAM, listed once, ballooned.
    pub fn check_deflate(&self, list: &[u32]) -> Result<(), Error> {
        self.check(list, true)
    }

    fn check(&self, list: &[u32], ballooned: bool) -> Result<(), Error> {
        if list.is_empty() || list.len() > BALLOON_BATCH_MAX as usize {
            return Err(Error::InvalidArgument);
        }
        let mut seen: Vec<u32> = list.to_vec();
        seen.sort_unstable();
        if seen.windows(2).any(|pair| pair[0] == pair[1]) {
            return Err(Error::InvalidArgument);
        }
        for &page in list {
            if u64::from(page) >= self.pages {
                return Err(Error::BadAddress);
            }
            if self.contains(u64::from(page)) != ballooned {
                return Err(Error::InvalidArgument);
            }
        }
        Ok(())
    }

    /// Records pages as given back (after [`Self::check_inflate`] and the unmapping).
    pub fn inflated(&mut self, list: &[u32]) {
        for &page in list {
            self.set(u64::from(page), true);
        }
        self.inflated_total += list.len() as u64;
    }

    /// Records pages as taken back (after [`Self::check_deflate`] and the mapping).
    pub fn deflated(&mut self, list: &[u32]) {
        for &page in list {
            self.set(u64::from(page), false);
        }
        self.deflated_total += list.len() as u64;
    }

    fn set(&mut self, page: u64, on: bool) {
        if page >= self.pages || self.contains(page) == on {
            return;
        }
        let word = &mut self.ballooned[(page / 64) as usize];
        if on {
            *word |= 1 << (page % 64);
            self.count += 1;
        } else {
            *word &= !(1 << (page % 64));
            self.count -= 1;
        }
    }

    /// The ballooned pages as bits (page 0 in bit 0 of word 0).
    pub fn bits(&self) -> &[u64] {
        &self.ballooned
    }

    /// The ballooned pages, in order.
    pub fn pages(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.pages).filter(|&page| self.contains(page))
    }
}

/// The balloon rule of a run: when the pages the host could still back fall below
/// `free_below_pct` percent of its pool, ask a VM with idle memory for `step_pages` more.
///
/// A VM's idle memory is its backed pages outside its last working set: a VM whose memory was
/// once 90 % touched but now uses 20 % has 70 % to give back. Where compression runs, the idle
/// pages it will take by itself count as reclaimable already (the host gets them back without
/// the guest, for a pattern check or an LZ4 run rather than a balloon round trip): the rule asks
/// only when those are not enough, and then first the VM with the most idle pages that only
/// its balloon can return (those LZ4 refused), then the most idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub free_below_pct: u32,
    pub step_pages: u64,
}

/// A VM the rule may ask: one whose guest has a balloon driver (it has made a balloon call).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub vm: u16,
    /// Backed pages outside its working set (from the last working-set sample).
    pub idle_pages: u64,
    /// Of those, the ones compression will take by itself (0 when it is off).
    pub compressible_pages: u64,
    pub target: u64,
    /// The largest balloon the host asks of it.
    pub max_target: u64,
}

impl Candidate {
    /// Idle pages only the balloon can give back.
    pub fn balloon_only(&self) -> u64 {
        self.idle_pages.saturating_sub(self.compressible_pages)
    }
}

impl Rule {
    /// The VM to ask and its new target, when `available` of `pool` pages is too little and
    /// some VM with idle memory can give more.
    pub fn decide(
        &self,
        available: u64,
        pool: u64,
        candidates: &[Candidate],
    ) -> Option<(u16, u64)> {
        let soon = candidates
            .iter()
            .map(|candidate| candidate.compressible_pages.min(candidate.idle_pages))
            .fold(0u64, u64::saturating_add);
        let reclaimable = available.saturating_add(soon);
        if pool == 0
            || reclaimable.saturating_mul(100)
                >= pool.saturating_mul(u64::from(self.free_below_pct))
        {
            return None;
        }
        candidates
            .iter()
            .filter(|candidate| candidate.target < candidate.max_target && candidate.idle_pages > 0)
            .max_by_key(|candidate| {
                (
                    candidate.balloon_only(),
                    candidate.idle_pages,
                    core::cmp::Reverse(candidate.vm),
                )
            })
            .map(|candidate| {
                let step = self.step_pages.min(candidate.idle_pages);
                (
                    candidate.vm,
                    (candidate.target + step).min(candidate.max_target),
                )
            })
    }
}

/// The host's side: how many guest pages it backs over all VMs, against an optional budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub limit: Option<u64>,
    pub backed: u64,
    /// The most `backed` has been.
    pub peak: u64,
}

impl Budget {
    /// Pages that may still be backed within the budget (`free` is what the frame allocator
    /// has).
    pub fn available(&self, free: u64) -> u64 {
        match self.limit {
            Some(limit) => limit.saturating_sub(self.backed).min(free),
            None => free,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn inflate_then_deflate() {
        let mut balloon = Balloon::new(100, 10);
        assert_eq!(balloon.check_inflate(&[5, 6, 99]), Ok(()));
        balloon.inflated(&[5, 6, 99]);
        assert_eq!(balloon.count(), 3);
        assert!(balloon.contains(99) && !balloon.contains(7));
        assert_eq!(balloon.pages().collect::<Vec<_>>(), vec![5, 6, 99]);
        // Already ballooned: refused whole.
        assert_eq!(balloon.check_inflate(&[7, 5]), Err(Error::InvalidArgument));
        assert_eq!(balloon.check_deflate(&[5, 7]), Err(Error::InvalidArgument));
        assert_eq!(balloon.check_deflate(&[6, 5]), Ok(()));
        balloon.deflated(&[6, 5]);
        assert_eq!(balloon.count(), 1);
        assert_eq!((balloon.inflated_total, balloon.deflated_total), (3, 2));
    }

    #[test]
    fn bad_lists_are_refused() {
        let balloon = Balloon::new(100, 0);
        assert_eq!(balloon.check_inflate(&[]), Err(Error::InvalidArgument));
        assert_eq!(balloon.check_inflate(&[100]), Err(Error::BadAddress));
        assert_eq!(balloon.check_inflate(&[u32::MAX]), Err(Error::BadAddress));
        assert_eq!(
            balloon.check_inflate(&[3, 4, 3]),
            Err(Error::InvalidArgument)
        );
        let too_many: Vec<u32> = (0..=BALLOON_BATCH_MAX).collect();
        assert_eq!(
            Balloon::new(1 << 20, 0).check_inflate(&too_many),
            Err(Error::InvalidArgument)
        );
    }

    #[test]
    fn targets_are_clamped_to_the_ram() {
        assert_eq!(Balloon::new(10, 50).target, 10);
    }

    /// The rule of these tests: below 10 % free, ask for 100 pages.
    const RULE: Rule = Rule {
        free_below_pct: 10,
        step_pages: 100,
    };

    /// A VM of target maximum 1,000 pages.
    fn candidate_of(vm: u16, idle_pages: u64, compressible_pages: u64, target: u64) -> Candidate {
        Candidate {
            vm,
            idle_pages,
            compressible_pages,
            target,
            max_target: 1000,
        }
    }

    #[test]
    fn the_rule_asks_the_vm_with_the_most_idle_memory_when_the_pool_runs_low() {
        let rule = RULE;
        let candidate = |vm, idle_pages, target| candidate_of(vm, idle_pages, 0, target);
        let vms = [
            candidate(0, 50, 0),
            candidate(1, 500, 0),
            candidate(2, 400, 990),
        ];
        // 10% of 1,000 is 100: 100 free is enough, 99 is not.
        assert_eq!(rule.decide(100, 1000, &vms), None);
        assert_eq!(rule.decide(99, 1000, &vms), Some((1, 100)));
        // The step never exceeds the idle memory, nor the target its maximum.
        assert_eq!(rule.decide(0, 1000, &[candidate(0, 30, 0)]), Some((0, 30)));
        assert_eq!(rule.decide(0, 1000, &[vms[2]]), Some((2, 1000)));
        // Nobody to ask: a VM at its maximum, or without idle memory.
        assert_eq!(
            rule.decide(0, 1000, &[candidate(0, 0, 0), candidate(1, 9, 1000)]),
            None
        );
        assert_eq!(rule.decide(0, 0, &vms), None);
    }

    #[test]
    fn pages_compression_will_take_count_as_reclaimable_and_the_balloon_asks_for_the_rest() {
        let rule = RULE;
        let candidate =
            |vm, idle_pages, compressible| candidate_of(vm, idle_pages, compressible, 0);
        // 50 free of 1,000, and 60 idle pages compression is about to take: no balloon.
        assert_eq!(rule.decide(50, 1000, &[candidate(0, 60, 60)]), None);
        assert_eq!(
            rule.decide(50, 1000, &[candidate(0, 60, 49)]),
            Some((0, 60))
        );
        // Short even so: the VM whose idle pages only its balloon returns is asked first,
        // though another has more idle pages (compressible ones).
        let vms = [candidate(0, 500, 500), candidate(1, 40, 10)];
        assert_eq!(rule.decide(0, 10_000, &vms), Some((1, 40)));
        // Every idle page compressible and still short: the most idle.
        let vms = [candidate(0, 500, 500), candidate(1, 40, 40)];
        assert_eq!(rule.decide(0, 10_000, &vms), Some((0, 100)));
    }

    #[test]
    fn the_budget_caps_what_may_be_backed() {
        let budget = Budget {
            limit: Some(100),
            backed: 90,
            peak: 90,
        };
        assert_eq!(budget.available(1000), 10);
        assert_eq!(budget.available(4), 4);
        let unlimited = Budget {
            limit: None,
            backed: 90,
            peak: 90,
        };
        assert_eq!(unlimited.available(1000), 1000);
    }

    proptest! {
        /// Whatever the requests, the count equals the pages marked, and a refused request
        /// changes nothing.
        #[test]
        fn the_count_stays_true(requests in proptest::collection::vec((any::<bool>(), proptest::collection::vec(0u32..80, 0..8)), 0..40)) {
            let mut balloon = Balloon::new(64, 0);
            for (inflate, list) in requests {
                let before = balloon.count();
                let checked = if inflate { balloon.check_inflate(&list) } else { balloon.check_deflate(&list) };
                match checked {
                    Ok(()) if inflate => balloon.inflated(&list),
                    Ok(()) => balloon.deflated(&list),
                    Err(_) => prop_assert_eq!(balloon.count(), before),
                }
                prop_assert_eq!(balloon.count(), balloon.pages().count() as u64);
            }
        }
    }
}
