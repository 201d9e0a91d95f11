//! A credit scheduler after Xen's credit1: weights and caps through credit refilled every
//! accounting period, UNDER/OVER priorities, a boost for waking VMs and a rate limit on the
//! preemptions that boost causes.
//!
//! The rules, all on the kernel's clock (the policy never reads time: the kernel tells it the
//! time with [`Policy::advance`] and what a slice consumed with [`Policy::charge`]):
//! - **Credit.** Every cycle a VM runs costs it one cycle of credit. Every accounting period
//!   (`period` cycles, counted from construction) the cycles charged in the period that ends are
//!   handed back as credit to the *active* VMs (runnable, running, or charged for some cycles in
//!   that period) in proportion to their weights (`charged × weight / Σ active weights`, the
//!   remainders carried, so no cycle is lost to rounding). At construction each VM gets its
//!   weight's share of one period. Handing back what was charged, rather than a whole period
//!   as Xen does, keeps the sum of credit fixed whatever the kernel spends between slices (no
//!   drift that would push every VM to the bound below and make shares equal), so a VM is UNDER
//!   exactly while it has had less than its weight's share of the CPU that was used.
//!   Credit is kept within ±(2 × `period` + `n` × `quantum`) for `n` VMs, so that a VM that
//!   seldom runs cannot hoard a long burst and a VM that ran alone cannot carry a long debt. The
//!   bound is wide enough that CPU-bound VMs never reach it (a VM with credit waits at most
//!   `n − 1` slices for its turn), so their shares follow their weights exactly over time.
//! - **Priorities.** A queued VM is BOOST (woken with credit left, until its next slice ends),
//!   UNDER (credit left), OVER (no credit left) or PARKED (capped, its budget for the period
//!   used up). [`Policy::pick_next`] takes the head of the first non-empty queue of BOOST, UNDER
//!   and OVER, each in FIFO order; a PARKED VM waits for the next refill even when the CPU is
//!   otherwise idle, and [`Policy::held_until`] says when that is.
//! - **Slices** are the quantum, whatever the weight (weights act through credit, as Xen's
//!   timeslice does not scale with weight), shortened for a capped VM to what is left of its
//!   budget.
//! - **Caps.** A VM capped at `c` % gets a budget of `period × c / 100` cycles per period. A
//!   slice that overshoots what was left (the kernel ends slices an exit late) carries the excess
//!   into the next period's budget, so over `k` periods a capped VM consumes at most
//!   `k × budget` plus one slice's overshoot.
//! - **Boost and rate limit.** A VM woken with credit left (and not parked) is BOOST. While a
//!   BOOST VM waits, [`Policy::preempt_at`] names the instant the running VM's slice should end:
//!   once it has run `ratelimit` cycles since it was picked. So a VM that wakes with credit,
//!   while no other BOOST VM waits, runs within the rate limit (plus the switch).
//!
//! Cost: every call is O(1) and allocation-free except a refill, which walks every VM once per
//! period. Calls that do not fit a VM's state are ignored and counted, as in [`RoundRobin`].
//!
//! [`RoundRobin`]: crate::RoundRobin

use alloc::vec::Vec;

use crate::round_robin::{ConfigError, QueueState, MAX_VMS};
use crate::{Cycles, Policy, VmId};

/// The end of a run-queue link: no VM.
const NIL: VmId = VmId::MAX;

/// One VM's scheduling parameters under the credit policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CreditVm {
    /// Relative share of the CPU, at least 1.
    pub weight: u32,
    /// At most this percentage of the CPU over each accounting period, 1 to 100; 0: uncapped.
    pub cap_pct: u32,
}

/// A queued VM's priority, highest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    /// Woken with credit left; runs before every UNDER and OVER VM.
    Boost = 0,
    /// Credit left.
    Under = 1,
    /// No credit left: runs only when no BOOST or UNDER VM waits.
    Over = 2,
    /// Capped and its budget for the period is used up: waits for the next refill.
    Parked = 3,
}

/// The four queues, indexed by [`Priority`].
const QUEUES: usize = 4;

/// The credit policy's timing, in cycles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CreditTiming {
    /// The slice of an uncapped VM.
    pub quantum: Cycles,
    /// The accounting period: credit is refilled and cap budgets renewed once per period.
    pub period: Cycles,
    /// A running VM is not preempted by a boosted waker before it has run this long.
    pub ratelimit: Cycles,
}

/// One VM's entry in the policy's table.
#[derive(Clone, Copy, Debug)]
struct Slot {
    weight: u32,
    /// Budget per period, for a capped VM.
    budget: Option<Cycles>,
    /// Charged against the budget in this period (the last period's excess included).
    used: Cycles,
    /// Credit in cycles, within ±[`Credit::credit_bound`].
    credit: i64,
    /// Charged for some cycles since the last refill.
    charged: bool,
    /// The remainder of its last share, in 1/Σ-weights of a cycle.
    residue: u128,
    /// Woken with credit left; cleared when its next slice ends.
    boost: bool,
    state: QueueState,
    /// The queue it is in, while queued.
    queue: Priority,
    next: VmId,
    previous: VmId,
}

impl Slot {
    /// The priority it would take in the queue now.
    fn priority(&self) -> Priority {
        if self.budget.is_some_and(|budget| self.used >= budget) {
            Priority::Parked
        } else if self.boost {
            Priority::Boost
        } else if self.credit > 0 {
            Priority::Under
        } else {
            Priority::Over
        }
    }
}

/// A FIFO run queue's ends.
#[derive(Clone, Copy, Debug)]
struct Ends {
    head: VmId,
    tail: VmId,
}

const EMPTY: Ends = Ends {
    head: NIL,
    tail: NIL,
};

/// Xen-style credit scheduling (see the module documentation).
#[derive(Clone, Debug)]
pub struct Credit {
    slots: Vec<Slot>,
    queues: [Ends; QUEUES],
    timing: CreditTiming,
    /// The latest time the kernel told.
    now: Cycles,
    /// When the next refill is due.
    next_refill: Cycles,
    /// The running VM and when it was picked.
    running: Option<(VmId, Cycles)>,
    ignored: u64,
    refills: u64,
    /// Cycles charged since the last refill: the next refill's credit.
    pending: Cycles,
}

impl Credit {
    /// A policy for `vms.len()` VMs, all runnable and queued in id order, whose first
    /// accounting period starts at `now` (each VM gets its first credit then).
    pub fn new(timing: CreditTiming, vms: &[CreditVm], now: Cycles) -> Result<Self, ConfigError> {
        if timing.quantum == 0 {
            return Err(ConfigError::ZeroQuantum);
        }
        if timing.period == 0 {
            return Err(ConfigError::ZeroPeriod);
        }
        if vms.len() > MAX_VMS {
            return Err(ConfigError::TooManyVms { count: vms.len() });
        }
        if let Some(vm) = vms.iter().position(|vm| vm.weight == 0) {
            return Err(ConfigError::ZeroWeight { vm: vm as VmId });
        }
        if let Some(vm) = vms.iter().position(|vm| vm.cap_pct > 100) {
            return Err(ConfigError::CapOutOfRange {
                vm: vm as VmId,
                cap_pct: vms[vm].cap_pct,
            });
        }
        let mut policy = Self {
            slots: Vec::with_capacity(vms.len()),
            queues: [EMPTY; QUEUES],
            timing,
            now,
            next_refill: now,
            running: None,
            ignored: 0,
            refills: 0,
            pending: timing.period,
        };
        for vm in vms {
            let budget = (vm.cap_pct > 0).then(|| {
                (u128::from(timing.period) * u128::from(vm.cap_pct) / 100).max(1) as Cycles
            });
            policy.slots.push(Slot {
                weight: vm.weight,
                budget,
                used: 0,
                credit: 0,
                charged: false,
                residue: 0,
                boost: false,
                state: QueueState::Blocked,
                queue: Priority::Over,
                next: NIL,
                previous: NIL,
            });
        }
        for vm in 0..vms.len() {
            policy.enqueue(vm as VmId);
        }
        policy.advance(now);
        Ok(policy)
    }

    /// The policy's timing.
    pub fn timing(&self) -> CreditTiming {
        self.timing
    }

    /// Number of VMs the policy was built for.
    pub fn vm_count(&self) -> usize {
        self.slots.len()
    }

    /// Where `vm` stands; `None` for an unknown id.
    pub fn state(&self, vm: VmId) -> Option<QueueState> {
        self.slot(vm).map(|slot| slot.state)
    }

    /// The queue `vm` waits in; `None` unless it is queued.
    pub fn priority(&self, vm: VmId) -> Option<Priority> {
        self.slot(vm)
            .filter(|slot| slot.state == QueueState::Queued)
            .map(|slot| slot.queue)
    }

    /// `vm`'s credit in cycles; `None` for an unknown id.
    pub fn credit(&self, vm: VmId) -> Option<i64> {
        self.slot(vm).map(|slot| slot.credit)
    }

    /// `vm`'s budget per period, if it is capped.
    pub fn budget(&self, vm: VmId) -> Option<Cycles> {
        self.slot(vm).and_then(|slot| slot.budget)
    }

    /// When the next refill is due.
    pub fn next_refill(&self) -> Cycles {
        self.next_refill
    }

    /// Refills so far (the one at construction included).
    pub fn refills(&self) -> u64 {
        self.refills
    }

    /// Calls ignored because they did not fit the VM's state.
    pub fn ignored_calls(&self) -> u64 {
        self.ignored
    }

    /// The VMs in queue `priority`, head first.
    pub fn queue(&self, priority: Priority) -> impl Iterator<Item = VmId> + '_ {
        let mut cursor = self.queues[priority as usize].head;
        core::iter::from_fn(move || {
            let vm = cursor;
            let slot = self.slot(vm)?;
            cursor = slot.next;
            Some(vm)
        })
    }

    fn slot(&self, vm: VmId) -> Option<&Slot> {
        self.slots.get(usize::from(vm))
    }

    /// The slot of `vm` if the id is known and the VM is in `state`; otherwise counts an ignored
    /// call.
    fn slot_in(&mut self, vm: VmId, state: QueueState) -> Option<&mut Slot> {
        match self.slots.get_mut(usize::from(vm)) {
            Some(slot) if slot.state == state => Some(slot),
            _ => {
                self.ignored += 1;
                None
            }
        }
    }

    /// Links `vm` (known, not queued) at the tail of the queue of its priority.
    fn enqueue(&mut self, vm: VmId) {
        let index = usize::from(vm);
        let queue = self.slots[index].priority();
        let ends = &mut self.queues[queue as usize];
        let tail = ends.tail;
        if tail == NIL {
            ends.head = vm;
        }
        ends.tail = vm;
        if let Some(slot) = self.slots.get_mut(usize::from(tail)) {
            slot.next = vm;
        }
        let slot = &mut self.slots[index];
        slot.state = QueueState::Queued;
        slot.queue = queue;
        slot.previous = tail;
        slot.next = NIL;
    }

    /// Unlinks `vm` (known, queued) from its queue; its state is left to the caller.
    fn unlink(&mut self, vm: VmId) {
        let Slot {
            previous,
            next,
            queue,
            ..
        } = self.slots[usize::from(vm)];
        let ends = &mut self.queues[queue as usize];
        match self.slots.get_mut(usize::from(previous)) {
            Some(slot) => slot.next = next,
            None => ends.head = next,
        }
        match self.slots.get_mut(usize::from(next)) {
            Some(slot) => slot.previous = previous,
            None => ends.tail = previous,
        }
    }

    /// The most credit a VM may hold or owe: two periods and a slice per VM.
    pub fn credit_bound(&self) -> i64 {
        let bound = u128::from(self.timing.period) * 2
            + u128::from(self.timing.quantum) * self.slots.len() as u128;
        i64::try_from(bound).unwrap_or(i64::MAX)
    }

    /// Ends the running VM's slice: it loses its boost, and the policy forgets it ran.
    fn deschedule(&mut self, vm: VmId) -> bool {
        let Some(slot) = self.slot_in(vm, QueueState::Running) else {
            return false;
        };
        slot.boost = false;
        if self.running.is_some_and(|(running, _)| running == vm) {
            self.running = None;
        }
        true
    }

    /// The refill of `periods` accounting periods at once (more than one when the kernel told
    /// no time for a while): the charged cycles back as credit by weight to the active VMs,
    /// budgets renewed, and every
    /// queued VM requeued by its new priority, in its old order (BOOST first, then UNDER, OVER,
    /// PARKED).
    fn refill(&mut self, periods: u64) {
        self.refills += 1;
        let bound = self.credit_bound();
        let active = |slot: &Slot| {
            matches!(slot.state, QueueState::Queued | QueueState::Running)
                || (slot.charged && slot.state != QueueState::Finished)
        };
        let total: u128 = self
            .slots
            .iter()
            .filter(|slot| active(slot))
            .map(|slot| u128::from(slot.weight))
            .sum();
        let credit = u128::from(core::mem::take(&mut self.pending));
        for slot in &mut self.slots {
            if total > 0 && active(slot) {
                let owed = credit * u128::from(slot.weight) + slot.residue;
                slot.residue = owed % total;
                let share = i64::try_from(owed / total).unwrap_or(i64::MAX);
                slot.credit = slot.credit.saturating_add(share).clamp(-bound, bound);
            }
            if let Some(budget) = slot.budget {
                slot.used = slot
                    .used
                    .saturating_sub(budget.saturating_mul(periods))
                    .min(budget);
            }
            slot.charged = false;
        }
        // Every queue, in priority order, chained into one list, then each VM requeued.
        let mut first = NIL;
        let mut last = NIL;
        for ends in core::mem::replace(&mut self.queues, [EMPTY; QUEUES]) {
            if ends.head == NIL {
                continue;
            }
            match self.slots.get_mut(usize::from(last)) {
                Some(slot) => slot.next = ends.head,
                None => first = ends.head,
            }
            last = ends.tail;
        }
        let mut cursor = first;
        while let Some(slot) = self.slots.get(usize::from(cursor)) {
            let next = if cursor == last { NIL } else { slot.next };
            self.enqueue(cursor);
            cursor = next;
        }
    }
}

impl Policy for Credit {
    fn pick_next(&mut self) -> Option<(VmId, Cycles)> {
        let vm = self.queues[..Priority::Parked as usize]
            .iter()
            .map(|ends| ends.head)
            .find(|&head| head != NIL)?;
        self.unlink(vm);
        let slot = &mut self.slots[usize::from(vm)];
        slot.state = QueueState::Running;
        let left = slot
            .budget
            .map_or(Cycles::MAX, |budget| budget.saturating_sub(slot.used));
        self.running = Some((vm, self.now));
        Some((vm, self.timing.quantum.min(left).max(1)))
    }

    fn slice_expired(&mut self, vm: VmId) {
        if self.deschedule(vm) {
            self.enqueue(vm);
        }
    }

    fn yielded(&mut self, vm: VmId) {
        if self.deschedule(vm) {
            self.enqueue(vm);
        }
    }

    fn blocked(&mut self, vm: VmId) {
        if self.deschedule(vm) {
            self.slots[usize::from(vm)].state = QueueState::Blocked;
        }
    }

    fn woken(&mut self, vm: VmId) {
        if let Some(slot) = self.slot_in(vm, QueueState::Blocked) {
            slot.boost = slot.credit > 0;
            self.enqueue(vm);
        }
    }

    fn finished(&mut self, vm: VmId) {
        let Some(slot) = self.slots.get(usize::from(vm)) else {
            self.ignored += 1;
            return;
        };
        match slot.state {
            QueueState::Finished => self.ignored += 1,
            QueueState::Queued => {
                self.unlink(vm);
                self.slots[usize::from(vm)].state = QueueState::Finished;
            }
            QueueState::Running | QueueState::Blocked => {
                self.deschedule(vm);
                self.slots[usize::from(vm)].state = QueueState::Finished;
            }
        }
    }

    fn ignored_calls(&self) -> u64 {
        self.ignored
    }

    fn name(&self) -> &'static str {
        "credit"
    }

    fn advance(&mut self, now: Cycles) {
        // The kernel's clock only goes forward; an earlier time is ignored, not trusted.
        if now < self.now {
            self.ignored += 1;
            return;
        }
        self.now = now;
        if now >= self.next_refill {
            let periods = (now - self.next_refill) / self.timing.period + 1;
            self.refill(periods);
            self.next_refill = self
                .next_refill
                .saturating_add(periods.saturating_mul(self.timing.period));
        }
    }

    fn charge(&mut self, vm: VmId, cycles: Cycles) {
        let bound = self.credit_bound();
        let Some(slot) = self.slot_in(vm, QueueState::Running) else {
            return;
        };
        let cost = i64::try_from(cycles).unwrap_or(i64::MAX);
        slot.credit = slot.credit.saturating_sub(cost).max(-bound);
        slot.used = slot.used.saturating_add(cycles);
        slot.charged = true;
        self.pending = self.pending.saturating_add(cycles);
    }

    fn set_quantum(&mut self, quantum: Cycles) -> Result<(), ConfigError> {
        if quantum == 0 {
            return Err(ConfigError::ZeroQuantum);
        }
        self.timing.quantum = quantum;
        Ok(())
    }

    fn set_weight(&mut self, vm: VmId, weight: u32) -> Result<(), ConfigError> {
        if weight == 0 {
            return Err(ConfigError::ZeroWeight { vm });
        }
        let slot = self
            .slots
            .get_mut(usize::from(vm))
            .ok_or(ConfigError::UnknownVm { vm })?;
        // Acts at the next refill, which shares out by weight; the remainder carried in units
        // of the old sum of weights is dropped (less than a cycle).
        slot.weight = weight;
        for slot in &mut self.slots {
            slot.residue = 0;
        }
        Ok(())
    }

    fn set_cap(&mut self, vm: VmId, cap_pct: u32) -> Result<(), ConfigError> {
        if cap_pct > 100 {
            return Err(ConfigError::CapOutOfRange { vm, cap_pct });
        }
        let period = self.timing.period;
        let slot = self
            .slots
            .get_mut(usize::from(vm))
            .ok_or(ConfigError::UnknownVm { vm })?;
        // What it used in this period counts against the new budget too.
        slot.budget = (cap_pct > 0)
            .then(|| (u128::from(period) * u128::from(cap_pct) / 100).max(1) as Cycles);
        // A queued VM whose priority changed (parked or no longer) moves to its new queue.
        if slot.state == QueueState::Queued && slot.priority() != slot.queue {
            self.unlink(vm);
            self.enqueue(vm);
        }
        Ok(())
    }

    fn held_until(&self) -> Option<Cycles> {
        (self.queues[Priority::Parked as usize].head != NIL).then_some(self.next_refill)
    }

    fn preempt_at(&self) -> Option<Cycles> {
        if self.queues[Priority::Boost as usize].head == NIL {
            return None;
        }
        let (_, since) = self.running?;
        Some(since.saturating_add(self.timing.ratelimit))
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec;

    use proptest::prelude::*;

    use super::*;

    const TIMING: CreditTiming = CreditTiming {
        quantum: 1_000,
        period: 3_000,
        ratelimit: 200,
    };

    fn vms(weights: &[u32]) -> Vec<CreditVm> {
        weights
            .iter()
            .map(|&weight| CreditVm { weight, cap_pct: 0 })
            .collect()
    }

    /// Runs the picked VM for `cycles` at `now`, then ends its slice.
    fn run(policy: &mut Credit, now: &mut Cycles, cycles: Cycles) -> VmId {
        policy.advance(*now);
        let (vm, _) = policy.pick_next().unwrap();
        *now += cycles;
        policy.advance(*now);
        policy.charge(vm, cycles);
        policy.slice_expired(vm);
        vm
    }

    #[test]
    fn bad_configurations_are_refused() {
        let zero = |timing| Credit::new(timing, &vms(&[1]), 0).unwrap_err();
        assert_eq!(
            zero(CreditTiming {
                quantum: 0,
                ..TIMING
            }),
            ConfigError::ZeroQuantum
        );
        assert_eq!(
            zero(CreditTiming {
                period: 0,
                ..TIMING
            }),
            ConfigError::ZeroPeriod
        );
        assert_eq!(
            Credit::new(TIMING, &vms(&[1, 0]), 0).unwrap_err(),
            ConfigError::ZeroWeight { vm: 1 }
        );
        let capped = [
            CreditVm {
                weight: 1,
                cap_pct: 100,
            },
            CreditVm {
                weight: 1,
                cap_pct: 101,
            },
        ];
        assert_eq!(
            Credit::new(TIMING, &capped, 0).unwrap_err(),
            ConfigError::CapOutOfRange {
                vm: 1,
                cap_pct: 101
            }
        );
        assert!(Credit::new(TIMING, &capped[..1], 0).is_ok());
        assert_eq!(
            Credit::new(TIMING, &vms(&vec![1; MAX_VMS + 1]), 0).unwrap_err(),
            ConfigError::TooManyVms { count: MAX_VMS + 1 }
        );
        assert_eq!(
            ConfigError::CapOutOfRange {
                vm: 2,
                cap_pct: 150
            }
            .to_string(),
            "vm 2 has cap 150 %, above 100 %"
        );
        assert_eq!(
            ConfigError::ZeroPeriod.to_string(),
            "the credit scheduler's accounting period is 0 cycles"
        );
    }

    #[test]
    fn credit_is_shared_by_weight_and_slices_are_the_quantum() {
        let mut policy = Credit::new(TIMING, &vms(&[1, 2]), 0).unwrap();
        assert_eq!(policy.name(), "credit");
        assert_eq!(policy.refills(), 1);
        assert_eq!(policy.credit(0), Some(1_000));
        assert_eq!(policy.credit(1), Some(2_000));
        assert_eq!(policy.next_refill(), 3_000);
        assert_eq!(policy.budget(0), None);
        assert_eq!(policy.pick_next(), Some((0, 1_000)));
        assert_eq!(policy.pick_next(), Some((1, 1_000)));
        assert_eq!(policy.pick_next(), None);
        assert_eq!(policy.held_until(), None);
    }

    #[test]
    fn under_runs_before_over() {
        let mut policy = Credit::new(TIMING, &vms(&[1, 1, 1]), 0).unwrap();
        let mut now = 0;
        // VM 0 uses all its credit (1,000) and more: OVER, behind 1 and 2.
        assert_eq!(run(&mut policy, &mut now, 1_200), 0);
        assert_eq!(policy.credit(0), Some(-200));
        assert_eq!(policy.priority(0), Some(Priority::Over));
        assert_eq!(policy.queue(Priority::Under).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(run(&mut policy, &mut now, 500), 1);
        // 1 still has credit: it goes behind 2 but ahead of 0.
        assert_eq!(run(&mut policy, &mut now, 500), 2);
        assert_eq!(run(&mut policy, &mut now, 500), 1);
        // 1 is at 0 (OVER) too now: FIFO among OVER, behind 0.
        assert_eq!(policy.queue(Priority::Over).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(policy.queue(Priority::Under).collect::<Vec<_>>(), [2]);
        // 2 runs into the refill at 3,000, which hands the 2,700 cycles charged so far back,
        // 900 each, before 2's charge: 0 is at 700 and 1 at 900, both UNDER again, in their old
        // order, and 2 behind them.
        assert_eq!(run(&mut policy, &mut now, 300), 2);
        assert_eq!(policy.refills(), 2);
        assert_eq!(policy.credit(2), Some(500 + 900 - 300));
        assert_eq!(policy.queue(Priority::Under).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(run(&mut policy, &mut now, 100), 0);
        assert_eq!(policy.credit(0), Some(600));
        assert_eq!(policy.ignored_calls(), 0);
    }

    #[test]
    fn credit_stays_within_its_bound_and_goes_to_active_vms() {
        let mut policy = Credit::new(TIMING, &vms(&[1, 1]), 0).unwrap();
        let bound = policy.credit_bound();
        assert_eq!(bound, 2 * 3_000 + 2 * 1_000);
        let (first, _) = policy.pick_next().unwrap();
        let (other, _) = policy.pick_next().unwrap();
        policy.advance(1);
        policy.charge(other, 1);
        policy.blocked(other);
        // 0 runs 100 periods in one slice: its debt stops at the bound.
        policy.advance(300_000);
        policy.charge(first, 300_000);
        assert_eq!(policy.credit(0), Some(-bound));
        policy.slice_expired(first);
        assert_eq!(policy.next_refill(), 303_000);
        // 1 has been blocked and uncharged since the last refill: inactive, it gets none of the
        // 300,000 cycles handed back; 0 gets them all, up to the bound.
        let sleeping = policy.credit(1);
        policy.advance(303_000);
        assert_eq!(policy.credit(1), sleeping);
        assert_eq!(policy.credit(0), Some(bound));
        // Long idle: one refill for many periods, and nothing charged, nothing handed out.
        policy.advance(3_000_000);
        assert_eq!(policy.credit(0), Some(bound));
        assert_eq!(policy.next_refill(), 3_003_000);
    }

    #[test]
    fn a_cap_parks_the_vm_until_the_refill() {
        let capped = [CreditVm {
            weight: 1,
            cap_pct: 25,
        }];
        let mut policy = Credit::new(TIMING, &capped, 0).unwrap();
        assert_eq!(policy.budget(0), Some(750));
        // The slice is what is left of the budget.
        assert_eq!(policy.pick_next(), Some((0, 750)));
        policy.advance(800); // one exit late
        policy.charge(0, 800);
        policy.slice_expired(0);
        assert_eq!(policy.priority(0), Some(Priority::Parked));
        assert_eq!(policy.pick_next(), None);
        assert_eq!(policy.held_until(), Some(3_000));
        // The CPU is otherwise idle, and still the VM waits.
        policy.advance(2_999);
        assert_eq!(policy.pick_next(), None);
        policy.advance(3_000);
        // The 50 cycles of excess come off the new budget.
        assert_eq!(policy.pick_next(), Some((0, 700)));
        assert_eq!(policy.held_until(), None);
    }

    #[test]
    fn settings_change_mid_run() {
        let mut policy = Credit::new(TIMING, &vms(&[1, 1]), 0).unwrap();
        assert_eq!(policy.pick_next(), Some((0, 1_000)));
        // The slice handed out keeps its length; the next one has the new quantum.
        policy.set_quantum(400).unwrap();
        assert_eq!(policy.set_quantum(0), Err(ConfigError::ZeroQuantum));
        assert_eq!(policy.timing().quantum, 400);
        policy.advance(1_000);
        policy.charge(0, 1_000);
        policy.slice_expired(0);
        assert_eq!(policy.pick_next(), Some((1, 400)));
        // A cap on a queued VM that has used its budget parks it at once; lifting it unparks.
        policy.set_cap(0, 10).unwrap();
        assert_eq!(policy.budget(0), Some(300));
        assert_eq!(policy.priority(0), Some(Priority::Parked));
        policy.set_cap(0, 0).unwrap();
        assert_eq!(policy.budget(0), None);
        assert_ne!(policy.priority(0), Some(Priority::Parked));
        // Refused values change nothing.
        assert_eq!(
            policy.set_cap(0, 101),
            Err(ConfigError::CapOutOfRange {
                vm: 0,
                cap_pct: 101
            })
        );
        assert_eq!(policy.set_cap(7, 5), Err(ConfigError::UnknownVm { vm: 7 }));
        assert_eq!(
            policy.set_weight(1, 0),
            Err(ConfigError::ZeroWeight { vm: 1 })
        );
        assert_eq!(
            policy.set_weight(9, 2),
            Err(ConfigError::UnknownVm { vm: 9 })
        );
        assert_eq!(policy.budget(0), None);
        assert_eq!(policy.ignored_calls(), 0);
    }

    #[test]
    fn a_weight_change_acts_at_the_next_refill() {
        // Two CPU-bound VMs of weight 1; VM 1 goes to weight 3 after a while: from then on it
        // gets three quarters of the CPU.
        let mut policy = Credit::new(TIMING, &vms(&[1, 1]), 0).unwrap();
        let mut now = 0;
        for _ in 0..30 {
            run(&mut policy, &mut now, 500);
        }
        policy.set_weight(1, 3).unwrap();
        let mut got = [0u64; 2];
        for _ in 0..4_000 {
            let vm = run(&mut policy, &mut now, 100);
            got[usize::from(vm)] += 100;
        }
        let share = got[1] as f64 / (got[0] + got[1]) as f64;
        assert!((share - 0.75).abs() < 0.01, "{got:?}");
    }

    #[test]
    fn a_waker_with_credit_is_boosted_and_preempts_after_the_rate_limit() {
        let mut policy = Credit::new(TIMING, &vms(&[1, 1]), 0).unwrap();
        let (sleeper, _) = policy.pick_next().unwrap();
        policy.advance(10);
        policy.charge(sleeper, 10);
        policy.blocked(sleeper);
        let (busy, _) = policy.pick_next().unwrap();
        assert_eq!(policy.preempt_at(), None);
        policy.advance(50);
        policy.woken(sleeper);
        assert_eq!(policy.priority(sleeper), Some(Priority::Boost));
        // The busy VM was picked at 10: it may run to 210.
        assert_eq!(policy.preempt_at(), Some(210));
        policy.advance(210);
        policy.charge(busy, 200);
        policy.slice_expired(busy);
        assert_eq!(policy.preempt_at(), None);
        assert_eq!(policy.pick_next().map(|(vm, _)| vm), Some(sleeper));
        // Its boost ends with that slice.
        policy.advance(300);
        policy.charge(sleeper, 90);
        policy.slice_expired(sleeper);
        assert_eq!(policy.priority(sleeper), Some(Priority::Under));
    }

    #[test]
    fn a_waker_without_credit_is_not_boosted() {
        let mut policy = Credit::new(TIMING, &vms(&[1, 1]), 0).unwrap();
        let (vm, _) = policy.pick_next().unwrap();
        policy.advance(2_000);
        policy.charge(vm, 2_000);
        policy.blocked(vm);
        policy.woken(vm);
        assert_eq!(policy.priority(vm), Some(Priority::Over));
        assert_eq!(policy.preempt_at(), None);
    }

    #[test]
    fn calls_that_do_not_fit_are_ignored() {
        let mut policy = Credit::new(TIMING, &vms(&[1, 1]), 100).unwrap();
        policy.woken(0); // queued, not blocked
        policy.blocked(0); // queued, not running
        policy.charge(1, 5); // queued, not running
        policy.slice_expired(7); // unknown
        policy.finished(7); // unknown
        policy.advance(99); // the clock went back
        assert_eq!(policy.ignored_calls(), 6);
        assert_eq!(policy.credit(1), Some(1_500));
        policy.finished(0);
        policy.finished(0);
        assert_eq!(policy.ignored_calls(), 7);
        assert_eq!(policy.pick_next().map(|(vm, _)| vm), Some(1));
        policy.finished(1);
        assert_eq!(policy.pick_next(), None);
        policy.advance(u64::MAX);
        assert_eq!(policy.pick_next(), None);
    }

    /// What a fake VM does with the CPU.
    #[derive(Clone, Copy, Debug)]
    enum Kind {
        /// Always runnable.
        Busy,
        /// Runs up to `burst` cycles, then sleeps up to `sleep` cycles.
        Sleeper { burst: Cycles, sleep: Cycles },
    }

    /// A wake of a VM with credit while no other VM was boosted, and when it next ran.
    #[derive(Clone, Copy, Debug)]
    struct Wake {
        vm: VmId,
        at: Cycles,
        ran: Option<Cycles>,
    }

    /// A fake kernel over a fake clock: it runs the picked VM for its slice plus up to
    /// `overshoot` cycles (the exit that ends a slice comes late), wakes sleepers on time (in
    /// the middle of other VMs' slices too), ends a slice at the policy's `preempt_at` (plus
    /// up to `overshoot`), and idles until `held_until` or the next wake when nothing is picked.
    struct Sim {
        policy: Credit,
        kinds: Vec<Kind>,
        now: Cycles,
        rng: u64,
        overshoot: Cycles,
        runs: Vec<Vec<(Cycles, Cycles)>>,
        wake_at: Vec<Option<Cycles>>,
        burst_left: Vec<Cycles>,
        wakes: Vec<Wake>,
    }

    impl Sim {
        fn new(timing: CreditTiming, vms: &[CreditVm], kinds: Vec<Kind>, seed: u64) -> Self {
            let n = vms.len();
            Self {
                policy: Credit::new(timing, vms, 0).unwrap(),
                kinds,
                now: 0,
                rng: seed | 1,
                overshoot: 0,
                runs: vec![Vec::new(); n],
                wake_at: vec![None; n],
                burst_left: vec![0; n],
                wakes: Vec::new(),
            }
        }

        /// A pseudo-random number in 0..=max (xorshift64).
        fn random(&mut self, max: Cycles) -> Cycles {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            self.rng % (max + 1)
        }

        fn wake(&mut self, vm: VmId, at: Cycles) {
            self.wake_at[usize::from(vm)] = None;
            self.policy.advance(at);
            self.policy.woken(vm);
            let alone = self.policy.queue(Priority::Boost).collect::<Vec<_>>() == [vm];
            if alone {
                self.wakes.push(Wake { vm, at, ran: None });
            }
        }

        /// The earliest pending wake in [from, before).
        fn next_wake(&self, from: Cycles, before: Cycles) -> Option<(VmId, Cycles)> {
            (0..self.kinds.len())
                .filter_map(|vm| Some((vm as VmId, self.wake_at[vm]?)))
                .filter(|&(_, at)| at >= from && at < before)
                .min_by_key(|&(_, at)| at)
        }

        fn run(&mut self, until: Cycles) {
            while self.now < until {
                self.policy.advance(self.now);
                while let Some((vm, at)) = self.next_wake(0, self.now + 1) {
                    self.wake(vm, at.max(self.now));
                }
                let Some((vm, slice)) = self.policy.pick_next() else {
                    let wake = self.next_wake(0, Cycles::MAX).map(|(_, at)| at);
                    match [self.policy.held_until(), wake].into_iter().flatten().min() {
                        Some(next) => self.now = next.max(self.now),
                        None => break,
                    }
                    continue;
                };
                let start = self.now;
                for wake in self.wakes.iter_mut().filter(|wake| wake.vm == vm) {
                    wake.ran.get_or_insert(start);
                }
                let index = usize::from(vm);
                let overshoot = self.overshoot;
                let mut length = slice + self.random(overshoot);
                if let Kind::Sleeper { burst, .. } = self.kinds[index] {
                    if self.burst_left[index] == 0 {
                        self.burst_left[index] = 1 + self.random(burst);
                    }
                    length = length.min(self.burst_left[index]);
                }
                let mut end = start + length;
                while let Some((sleeper, at)) = self.next_wake(start + 1, end) {
                    self.wake(sleeper, at);
                    if let Some(preempt) = self.policy.preempt_at() {
                        let late = self.random(overshoot);
                        end = end.min(preempt.max(at) + late);
                    }
                }
                self.now = end;
                self.runs[index].push((start, end));
                self.policy.advance(end);
                self.policy.charge(vm, end - start);
                match self.kinds[index] {
                    Kind::Sleeper { sleep, .. } => {
                        self.burst_left[index] -= (end - start).min(self.burst_left[index]);
                        if self.burst_left[index] == 0 {
                            self.policy.blocked(vm);
                            self.wake_at[index] = Some(end + 1 + self.random(sleep));
                        } else {
                            self.policy.slice_expired(vm);
                        }
                    }
                    Kind::Busy => self.policy.slice_expired(vm),
                }
            }
        }

        /// Cycles `vm` ran within [from, to).
        fn ran_within(&self, vm: usize, from: Cycles, to: Cycles) -> Cycles {
            self.runs[vm]
                .iter()
                .map(|&(start, end)| end.min(to).saturating_sub(start.max(from)))
                .sum()
        }
    }

    fn timing() -> impl Strategy<Value = (CreditTiming, Cycles)> {
        (1_000u64..=20_000, 1u64..=10, 0u64..=1_000, 0u64..=100).prop_map(
            |(quantum, periods, extra, overshoot_pct)| {
                let timing = CreditTiming {
                    quantum,
                    period: quantum * periods + extra,
                    ratelimit: quantum * (periods % 3) / 4,
                };
                (timing, quantum * overshoot_pct / 1_000)
            },
        )
    }

    fn kind() -> impl Strategy<Value = Kind> {
        prop_oneof![
            Just(Kind::Busy),
            (1u64..=30_000, 1u64..=100_000)
                .prop_map(|(burst, sleep)| Kind::Sleeper { burst, sleep }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Over every accounting period [kP, (k+1)P) of the fake clock, a VM capped at c % runs
        /// at most its budget P × c / 100 plus one slice's overshoot (the exit that ends a
        /// slice comes up to `overshoot` late: that excess comes off the next period's budget),
        /// whatever runs beside it: busy VMs, sleepers whose wakes preempt, or nothing.
        #[test]
        fn caps_are_never_exceeded_over_a_period(
            (timing, overshoot) in timing(),
            vms in prop::collection::vec(
                (1u32..=8, prop_oneof![Just(0u32), 1u32..=100], kind()), 1..=6),
            seed in any::<u64>(),
        ) {
            let configs: Vec<CreditVm> = vms
                .iter()
                .map(|&(weight, cap_pct, _)| CreditVm { weight, cap_pct })
                .collect();
            let kinds = vms.iter().map(|&(_, _, kind)| kind).collect();
            let mut sim = Sim::new(timing, &configs, kinds, seed);
            sim.overshoot = overshoot;
            let periods = 40;
            sim.run(timing.period * periods);
            for (vm, config) in configs.iter().enumerate() {
                let Some(budget) = sim.policy.budget(vm as VmId) else { continue };
                prop_assert_eq!(budget, timing.period * u64::from(config.cap_pct) / 100);
                for k in 0..periods {
                    let ran = sim.ran_within(vm, k * timing.period, (k + 1) * timing.period);
                    prop_assert!(
                        ran <= budget + overshoot,
                        "vm {} capped at {} % ran {} in period {} (budget {}, overshoot {})",
                        vm, config.cap_pct, ran, k, budget, overshoot
                    );
                }
            }
            prop_assert_eq!(sim.policy.ignored_calls(), 0);
        }

        /// With every VM CPU-bound and uncapped, each gets its weight's share of the CPU within
        /// 1 % (of that share), over a run long enough that the credit a VM may hold or owe
        /// (at most a period either way) and one slice are under 1 % of its share.
        #[test]
        fn weights_hold_within_one_percent(
            (timing, overshoot) in timing(),
            weights in prop::collection::vec(1u32..=4, 2..=6),
            seed in any::<u64>(),
        ) {
            let configs = vms(&weights);
            let mut sim = Sim::new(timing, &configs, vec![Kind::Busy; weights.len()], seed);
            sim.overshoot = overshoot;
            let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
            let lightest = u64::from(*weights.iter().min().unwrap());
            let bound = sim.policy.credit_bound() as u64;
            let slack = 2 * bound + timing.period + timing.quantum + overshoot;
            let length = 100 * slack * total / lightest;
            sim.run(length);
            let elapsed = sim.now;
            for (vm, &weight) in weights.iter().enumerate() {
                let ran = sim.ran_within(vm, 0, elapsed) as f64;
                let expected = elapsed as f64 * f64::from(weight) / total as f64;
                prop_assert!(
                    (ran - expected).abs() <= 0.01 * expected,
                    "vm {} (weight {} of {}) ran {} of {}, expected {}",
                    vm, weight, total, ran, elapsed, expected
                );
            }
        }

        /// A VM that wakes with credit while no other VM is boosted runs within the rate limit
        /// of its wake, plus one switch (here: the exit that ends the running slice, up to
        /// `overshoot` late), whoever runs when it wakes.
        #[test]
        fn a_waking_vm_with_credit_runs_within_the_rate_limit(
            (timing, overshoot) in timing(),
            vms in prop::collection::vec((1u32..=8, kind()), 1..=6),
            seed in any::<u64>(),
        ) {
            let configs: Vec<CreditVm> = vms
                .iter()
                .map(|&(weight, _)| CreditVm { weight, cap_pct: 0 })
                .collect();
            let kinds = vms.iter().map(|&(_, kind)| kind).collect();
            let mut sim = Sim::new(timing, &configs, kinds, seed);
            sim.overshoot = overshoot;
            sim.run(timing.period * 40);
            for wake in &sim.wakes {
                let Some(ran) = wake.ran else {
                    // Woken too near the end of the run to have run: the run must have ended
                    // within the bound.
                    prop_assert!(sim.now < wake.at + timing.ratelimit + overshoot + 1);
                    continue;
                };
                prop_assert!(
                    ran - wake.at <= timing.ratelimit + overshoot,
                    "vm {} woke at {} and ran at {} (rate limit {}, overshoot {})",
                    wake.vm, wake.at, ran, timing.ratelimit, overshoot
                );
            }
        }

        /// Any sequence of calls, sensible or not (unknown ids, calls in the wrong state, time
        /// going back, huge charges), never panics, and every queued VM is in exactly one
        /// queue, the one of its priority, once.
        #[test]
        fn random_calls_keep_the_queues_sound(
            vms in prop::collection::vec((1u32..=8, prop_oneof![Just(0u32), 1u32..=100]), 1..=8),
            calls in prop::collection::vec((0u8..8, 0u16..10, any::<u64>()), 0..300),
        ) {
            let configs: Vec<CreditVm> = vms
                .iter()
                .map(|&(weight, cap_pct)| CreditVm { weight, cap_pct })
                .collect();
            let mut policy = Credit::new(TIMING, &configs, 0).unwrap();
            let mut now = 0u64;
            for (call, vm, value) in calls {
                match call {
                    0 => { policy.pick_next(); }
                    1 => policy.slice_expired(vm),
                    2 => policy.yielded(vm),
                    3 => policy.blocked(vm),
                    4 => policy.woken(vm),
                    5 => policy.finished(vm),
                    6 => policy.charge(vm, value >> (value % 64)),
                    _ => {
                        // Mostly forward, by up to a few periods; sometimes anywhere.
                        now = if value % 8 == 0 { value } else { now.saturating_add(value % 10_000) };
                        policy.advance(now);
                    }
                }
                let mut seen = vec![false; configs.len()];
                for priority in [Priority::Boost, Priority::Under, Priority::Over, Priority::Parked] {
                    for queued in policy.queue(priority).take(configs.len() + 1) {
                        prop_assert!(!seen[usize::from(queued)], "vm {} queued twice", queued);
                        seen[usize::from(queued)] = true;
                        prop_assert_eq!(policy.priority(queued), Some(priority));
                    }
                }
                for (id, &queued) in seen.iter().enumerate() {
                    prop_assert_eq!(queued, policy.state(id as VmId) == Some(QueueState::Queued));
                    let credit = policy.credit(id as VmId).unwrap();
                    prop_assert!(credit.abs() <= policy.credit_bound());
                }
                if policy.preempt_at().is_some() {
                    prop_assert!(policy.queue(Priority::Boost).next().is_some());
                }
            }
        }
    }
}
