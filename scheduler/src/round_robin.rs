//! Weighted round robin: one FIFO run queue, a slice of `quantum × weight` cycles per turn, and an
//! optional wake-up boost.
//!
//! A VM that used its slice or yielded goes to the tail; [`Policy::pick_next`] takes the head.
//! With every VM CPU-bound each one gets `weight / Σ weights` of the guest time, and a VM that
//! becomes runnable waits for at most the `n − 1` slices of the VMs ahead of it.
//!
//! Where a woken VM goes is the one thing the two modes do differently:
//! - plain round robin ([`RoundRobin::new`], "round-robin"): to the tail, like a VM whose slice
//!   ended;
//! - with the wake-up boost ([`RoundRobin::with_wake_boost`], "boost"): back to the place it would
//!   hold had it never slept, behind only the VMs that were already waiting when it blocked. A VM
//!   that slept at least as long as the others took to get one turn each goes to the head. This
//!   is the effect Xen's credit scheduler gets from BOOST (a waking vCPU runs before the ones
//!   that used their time), bounded so that it cannot starve anyone: every VM still waits for at
//!   most `n − 1` slices, since a VM can only get ahead of those that joined the queue after it
//!   blocked, and each of them once. The boost does not preempt the running VM.
//!
//! Both keep the order with a ticket per place in the queue: a VM that joins the tail takes the
//! next ticket; a VM that blocks takes one too, which is the place it gives up; the queue is
//! always in ticket order. Plain round robin gives a woken VM a new ticket, the boost its old one.
//!
//! The run queue is a doubly-linked list threaded through a per-VM table allocated by
//! [`RoundRobin::new`]: every call is O(1) and allocation-free, including removing a queued VM that
//! [`finished`](Policy::finished), except a boosted wake, which walks back from the tail past the
//! VMs that joined the queue after the woken one blocked (at most `n − 1`). A VM is in the queue
//! at most once, because only [`QueueState::Queued`] VMs are linked and every transition into
//! `Queued` starts from another state.
//!
//! Calls that do not fit a VM's state are ignored and counted in
//! [`RoundRobin::ignored_calls`]: an unknown id; `slice_expired`, `yielded` or `blocked` for a VM
//! that is not running; `woken` for a VM that is not blocked; `finished` for a VM that already
//! finished. None of them changes the queue. The policy does not insist that only one VM runs at a
//! time: a VM handed out by `pick_next` stays running until the kernel says how its slice ended.

use alloc::vec::Vec;
use core::fmt;

use crate::{Cycles, Policy, VmId};

/// Largest number of VMs: every id must fit [`VmId`], with one value left over for "no VM".
pub const MAX_VMS: usize = VmId::MAX as usize;

/// The end of a run-queue link: no VM.
const NIL: VmId = VmId::MAX;

/// Where a VM stands with the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueState {
    /// In the run queue, waiting for a turn.
    Queued,
    /// Handed out by `pick_next`; its slice has not ended yet.
    Running,
    /// Not runnable until woken.
    Blocked,
    /// Gone for good; never picked again.
    Finished,
}

/// Why [`RoundRobin::new`] refused a configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// The quantum is 0 cycles: every slice would be empty.
    ZeroQuantum,
    /// A VM has weight 0: it would never get CPU time.
    ZeroWeight {
        /// The VM with weight 0.
        vm: VmId,
    },
    /// More VMs than [`MAX_VMS`].
    TooManyVms {
        /// The number of weights given.
        count: usize,
    },
    /// The credit policy's accounting period is 0 cycles.
    ZeroPeriod,
    /// A VM's cap is above 100 % (0 means uncapped).
    CapOutOfRange {
        /// The VM.
        vm: VmId,
        /// Its cap, in percent.
        cap_pct: u32,
    },
    /// A change names a VM the policy does not have.
    UnknownVm {
        /// The id given.
        vm: VmId,
    },
    /// A cap asked of a policy without caps (only credit has them).
    NoCaps,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroQuantum => write!(f, "the scheduler quantum is 0 cycles"),
            Self::ZeroWeight { vm } => write!(f, "vm {vm} has scheduling weight 0"),
            Self::ZeroPeriod => write!(f, "the credit scheduler's accounting period is 0 cycles"),
            Self::CapOutOfRange { vm, cap_pct } => {
                write!(f, "vm {vm} has cap {cap_pct} %, above 100 %")
            }
            Self::UnknownVm { vm } => write!(f, "there is no vm {vm}"),
            Self::NoCaps => write!(f, "only the credit policy has caps"),
            Self::TooManyVms { count } => {
                write!(
                    f,
                    "{count} VMs configured, the scheduler takes at most {MAX_VMS}"
                )
            }
        }
    }
}

/// One VM's entry in the policy's table.
#[derive(Clone, Copy, Debug)]
struct Slot {
    /// Length of this VM's slice: quantum × weight, saturated at `u64::MAX`.
    slice: Cycles,
    /// Its weight (the slice is recomputed from it when the quantum changes).
    weight: u32,
    /// Where the VM stands.
    state: QueueState,
    /// The VM behind this one in the run queue, or [`NIL`]; meaningful only while queued.
    next: VmId,
    /// The VM ahead of this one in the run queue, or [`NIL`]; meaningful only while queued.
    previous: VmId,
    /// This VM's place in the queue order: while queued, where it stands; while blocked, the
    /// place it gave up (see the module documentation).
    ticket: u64,
}

/// Weighted FIFO round robin.
#[derive(Clone, Debug)]
pub struct RoundRobin {
    /// One slot per VM, indexed by [`VmId`].
    slots: Vec<Slot>,
    /// First VM in the run queue, or [`NIL`].
    head: VmId,
    /// Last VM in the run queue, or [`NIL`].
    tail: VmId,
    /// The quantum slices are cut from.
    quantum: Cycles,
    /// VMs in the run queue.
    queued: usize,
    /// Calls that did not fit a VM's state and were ignored.
    ignored: u64,
    /// The ticket the next VM to join the tail (or to block) takes.
    next_ticket: u64,
    /// Woken VMs take back their place in the queue instead of going to the tail.
    wake_boost: bool,
}

impl RoundRobin {
    /// A policy for `weights.len()` VMs, all runnable and queued in id order; VM `i` gets slices of
    /// `quantum × weights[i]` cycles.
    pub fn new(quantum: Cycles, weights: &[u32]) -> Result<Self, ConfigError> {
        if quantum == 0 {
            return Err(ConfigError::ZeroQuantum);
        }
        if weights.len() > MAX_VMS {
            return Err(ConfigError::TooManyVms {
                count: weights.len(),
            });
        }
        if let Some(vm) = weights.iter().position(|&weight| weight == 0) {
            return Err(ConfigError::ZeroWeight { vm: vm as VmId });
        }
        let mut policy = Self {
            slots: Vec::with_capacity(weights.len()),
            head: NIL,
            tail: NIL,
            quantum,
            queued: 0,
            ignored: 0,
            next_ticket: 0,
            wake_boost: false,
        };
        for &weight in weights {
            policy.slots.push(Slot {
                slice: quantum.saturating_mul(Cycles::from(weight)),
                weight,
                state: QueueState::Blocked,
                next: NIL,
                previous: NIL,
                ticket: 0,
            });
        }
        for vm in 0..weights.len() {
            policy.enqueue(vm as VmId);
        }
        Ok(policy)
    }

    /// The same policy with the wake-up boost: a woken VM goes back to the place in the queue it
    /// would hold had it never slept (see the module documentation).
    pub fn with_wake_boost(mut self) -> Self {
        self.wake_boost = true;
        self
    }

    /// Whether woken VMs are boosted ([`RoundRobin::with_wake_boost`]).
    pub fn wake_boost(&self) -> bool {
        self.wake_boost
    }

    /// Number of VMs the policy was built for.
    pub fn vm_count(&self) -> usize {
        self.slots.len()
    }

    /// Where `vm` stands; `None` for an unknown id.
    pub fn state(&self, vm: VmId) -> Option<QueueState> {
        self.slots.get(usize::from(vm)).map(|slot| slot.state)
    }

    /// `vm`'s slice length in cycles; `None` for an unknown id.
    pub fn slice(&self, vm: VmId) -> Option<Cycles> {
        self.slots.get(usize::from(vm)).map(|slot| slot.slice)
    }

    /// The quantum slices are cut from.
    pub fn quantum(&self) -> Cycles {
        self.quantum
    }

    /// Number of VMs waiting in the run queue.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// The run queue from head to tail.
    pub fn run_queue(&self) -> impl Iterator<Item = VmId> + '_ {
        let mut cursor = self.head;
        core::iter::from_fn(move || {
            let vm = cursor;
            let slot = self.slots.get(usize::from(vm))?;
            cursor = slot.next;
            Some(vm)
        })
    }

    /// Calls ignored because they did not fit the VM's state (see the module documentation).
    pub fn ignored_calls(&self) -> u64 {
        self.ignored
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

    /// A fresh ticket, behind every place handed out so far.
    fn take_ticket(&mut self) -> u64 {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        ticket
    }

    /// Links `vm` (known, not queued) at the tail with a fresh ticket and marks it queued.
    fn enqueue(&mut self, vm: VmId) {
        let ticket = self.take_ticket();
        self.slots[usize::from(vm)].ticket = ticket;
        self.link_after(self.tail, vm);
    }

    /// Links `vm` (known, not queued) behind `after` ([`NIL`]: at the head) and marks it queued.
    fn link_after(&mut self, after: VmId, vm: VmId) {
        let next = match self.slots.get(usize::from(after)) {
            Some(slot) => slot.next,
            None => self.head,
        };
        let index = usize::from(vm);
        self.slots[index].state = QueueState::Queued;
        self.slots[index].next = next;
        self.slots[index].previous = after;
        match self.slots.get_mut(usize::from(after)) {
            Some(slot) => slot.next = vm,
            None => self.head = vm,
        }
        match self.slots.get_mut(usize::from(next)) {
            Some(slot) => slot.previous = vm,
            None => self.tail = vm,
        }
        self.queued += 1;
    }

    /// Links `vm` (known, not queued, its ticket set) in ticket order: behind the last queued VM
    /// with a smaller ticket, walking from the tail.
    fn link_in_ticket_order(&mut self, vm: VmId) {
        let ticket = self.slots[usize::from(vm)].ticket;
        let mut after = self.tail;
        while let Some(slot) = self.slots.get(usize::from(after)) {
            if slot.ticket < ticket {
                break;
            }
            after = slot.previous;
        }
        self.link_after(after, vm);
    }

    /// Unlinks `vm` (known, queued) from wherever it is in the run queue.
    fn unlink(&mut self, vm: VmId) {
        let Slot { next, previous, .. } = self.slots[usize::from(vm)];
        match self.slots.get_mut(usize::from(previous)) {
            Some(slot) => slot.next = next,
            None => self.head = next,
        }
        match self.slots.get_mut(usize::from(next)) {
            Some(slot) => slot.previous = previous,
            None => self.tail = previous,
        }
        self.queued -= 1;
    }

    /// Ends `vm`'s slice with it still runnable: back to the tail.
    fn requeue_running(&mut self, vm: VmId) {
        if self.slot_in(vm, QueueState::Running).is_some() {
            self.enqueue(vm);
        }
    }
}

impl Policy for RoundRobin {
    fn pick_next(&mut self) -> Option<(VmId, Cycles)> {
        let vm = self.head;
        let slice = self.slots.get(usize::from(vm))?.slice;
        self.unlink(vm);
        self.slots[usize::from(vm)].state = QueueState::Running;
        Some((vm, slice))
    }

    fn slice_expired(&mut self, vm: VmId) {
        self.requeue_running(vm);
    }

    fn set_quantum(&mut self, quantum: Cycles) -> Result<(), ConfigError> {
        if quantum == 0 {
            return Err(ConfigError::ZeroQuantum);
        }
        self.quantum = quantum;
        for slot in &mut self.slots {
            slot.slice = quantum.saturating_mul(Cycles::from(slot.weight));
        }
        Ok(())
    }

    fn set_weight(&mut self, vm: VmId, weight: u32) -> Result<(), ConfigError> {
        if weight == 0 {
            return Err(ConfigError::ZeroWeight { vm });
        }
        let quantum = self.quantum;
        let slot = self
            .slots
            .get_mut(usize::from(vm))
            .ok_or(ConfigError::UnknownVm { vm })?;
        slot.weight = weight;
        slot.slice = quantum.saturating_mul(Cycles::from(weight));
        Ok(())
    }

    fn yielded(&mut self, vm: VmId) {
        self.requeue_running(vm);
    }

    fn blocked(&mut self, vm: VmId) {
        if self.slot_in(vm, QueueState::Running).is_some() {
            // The place it would have taken at the tail, had it stayed runnable.
            let ticket = self.take_ticket();
            let slot = &mut self.slots[usize::from(vm)];
            slot.state = QueueState::Blocked;
            slot.ticket = ticket;
        }
    }

    fn woken(&mut self, vm: VmId) {
        if self.slot_in(vm, QueueState::Blocked).is_some() {
            if self.wake_boost {
                self.link_in_ticket_order(vm);
            } else {
                self.enqueue(vm);
            }
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
                self.slots[usize::from(vm)].state = QueueState::Finished;
            }
        }
    }

    fn ignored_calls(&self) -> u64 {
        self.ignored
    }

    fn name(&self) -> &'static str {
        if self.wake_boost {
            "boost"
        } else {
            "round-robin"
        }
    }
}

#[cfg(test)]
mod tests {
    use alloc::collections::VecDeque;
    use alloc::vec;

    use proptest::prelude::*;

    use super::*;

    /// Quantum used by the unit tests.
    const QUANTUM: Cycles = 1_000;

    fn queue(policy: &RoundRobin) -> Vec<VmId> {
        policy.run_queue().collect()
    }

    #[test]
    fn slice_is_quantum_times_weight() {
        let mut policy = RoundRobin::new(QUANTUM, &[1, 3, 8]).unwrap();
        assert_eq!(policy.pick_next(), Some((0, 1_000)));
        assert_eq!(policy.pick_next(), Some((1, 3_000)));
        assert_eq!(policy.pick_next(), Some((2, 8_000)));
        assert_eq!(policy.pick_next(), None);
        assert_eq!(policy.name(), "round-robin");
    }

    #[test]
    fn quantum_and_weights_change_mid_run() {
        let mut policy = RoundRobin::new(QUANTUM, &[1, 2]).unwrap();
        assert_eq!(policy.pick_next(), Some((0, 1_000)));
        policy.set_quantum(300).unwrap();
        assert_eq!(policy.quantum(), 300);
        policy.slice_expired(0);
        assert_eq!(policy.pick_next(), Some((1, 600)));
        policy.set_weight(1, 5).unwrap();
        policy.slice_expired(1);
        assert_eq!(policy.pick_next(), Some((0, 300)));
        assert_eq!(policy.pick_next(), Some((1, 1_500)));
        // Refused values change nothing.
        assert_eq!(policy.set_quantum(0), Err(ConfigError::ZeroQuantum));
        assert_eq!(
            policy.set_weight(0, 0),
            Err(ConfigError::ZeroWeight { vm: 0 })
        );
        assert_eq!(
            policy.set_weight(2, 1),
            Err(ConfigError::UnknownVm { vm: 2 })
        );
        assert_eq!(policy.set_cap(0, 50), Err(ConfigError::NoCaps));
        assert_eq!((policy.slice(0), policy.slice(1)), (Some(300), Some(1_500)));
        assert_eq!(policy.ignored_calls(), 0);
    }

    #[test]
    fn huge_slices_saturate() {
        let policy = RoundRobin::new(u64::MAX / 2, &[u32::MAX]).unwrap();
        assert_eq!(policy.slice(0), Some(u64::MAX));
    }

    #[test]
    fn bad_configurations_are_refused() {
        assert_eq!(
            RoundRobin::new(0, &[1]).unwrap_err(),
            ConfigError::ZeroQuantum
        );
        assert_eq!(
            RoundRobin::new(QUANTUM, &[1, 0]).unwrap_err(),
            ConfigError::ZeroWeight { vm: 1 }
        );
        let too_many = vec![1; MAX_VMS + 1];
        assert_eq!(
            RoundRobin::new(QUANTUM, &too_many).unwrap_err(),
            ConfigError::TooManyVms { count: MAX_VMS + 1 }
        );
        assert_eq!(
            ConfigError::ZeroWeight { vm: 3 }.to_string(),
            "vm 3 has scheduling weight 0"
        );
    }

    #[test]
    fn no_vms_means_nothing_to_pick() {
        let mut policy = RoundRobin::new(QUANTUM, &[]).unwrap();
        assert_eq!(policy.pick_next(), None);
        policy.woken(0);
        assert_eq!(policy.ignored_calls(), 1);
    }

    #[test]
    fn turns_go_in_fifo_order() {
        let mut policy = RoundRobin::new(QUANTUM, &[1, 1, 1]).unwrap();
        assert_eq!(queue(&policy), [0, 1, 2]);
        let mut order = Vec::new();
        for _ in 0..6 {
            let (vm, _) = policy.pick_next().unwrap();
            order.push(vm);
            if vm == 1 {
                policy.yielded(vm);
            } else {
                policy.slice_expired(vm);
            }
        }
        assert_eq!(order, [0, 1, 2, 0, 1, 2]);
        assert_eq!(policy.ignored_calls(), 0);
    }

    #[test]
    fn woken_vm_goes_to_the_tail() {
        let mut policy = RoundRobin::new(QUANTUM, &[1, 1, 1]).unwrap();
        let (vm, _) = policy.pick_next().unwrap();
        policy.blocked(vm);
        assert_eq!(queue(&policy), [1, 2]);
        assert_eq!(policy.state(0), Some(QueueState::Blocked));
        let (vm, _) = policy.pick_next().unwrap();
        policy.slice_expired(vm);
        assert_eq!(queue(&policy), [2, 1]);
        policy.woken(0);
        assert_eq!(queue(&policy), [2, 1, 0]);
    }

    #[test]
    fn boosted_wake_takes_back_the_place_it_gave_up() {
        let mut policy = RoundRobin::new(QUANTUM, &[1, 1, 1, 1])
            .unwrap()
            .with_wake_boost();
        assert!(policy.wake_boost());
        assert_eq!(policy.name(), "boost");
        // 0 blocks while 1, 2, 3 wait: its place is behind them.
        let (vm, _) = policy.pick_next().unwrap();
        policy.blocked(vm);
        // It wakes at once: it goes behind 1, 2 and 3 (as if it had stayed), but ahead of 1
        // once 1 has had its turn.
        let (vm, _) = policy.pick_next().unwrap();
        assert_eq!(vm, 1);
        policy.slice_expired(vm);
        assert_eq!(queue(&policy), [2, 3, 1]);
        policy.woken(0);
        assert_eq!(queue(&policy), [2, 3, 0, 1]);
        // A VM that slept through everyone's turn goes to the head.
        let (vm, _) = policy.pick_next().unwrap();
        assert_eq!(vm, 2);
        policy.blocked(vm);
        for _ in 0..3 {
            let (vm, _) = policy.pick_next().unwrap();
            policy.slice_expired(vm);
        }
        assert_eq!(queue(&policy), [3, 0, 1]);
        policy.woken(2);
        assert_eq!(queue(&policy), [2, 3, 0, 1]);
        assert_eq!(policy.ignored_calls(), 0);
    }

    #[test]
    fn plain_wake_goes_to_the_tail_where_boost_goes_ahead() {
        let run = |policy: RoundRobin| {
            let mut policy = policy;
            let (sleeper, _) = policy.pick_next().unwrap();
            policy.blocked(sleeper);
            for _ in 0..3 {
                let (vm, _) = policy.pick_next().unwrap();
                policy.slice_expired(vm);
            }
            policy.woken(sleeper);
            queue(&policy)
        };
        let plain = RoundRobin::new(QUANTUM, &[1, 1, 1, 1]).unwrap();
        assert_eq!(run(plain.clone()), [1, 2, 3, 0]);
        assert_eq!(run(plain.with_wake_boost()), [0, 1, 2, 3]);
    }

    #[test]
    fn blocked_vm_is_not_picked() {
        let mut policy = RoundRobin::new(QUANTUM, &[1, 2]).unwrap();
        let (vm, _) = policy.pick_next().unwrap();
        policy.blocked(vm);
        for _ in 0..3 {
            let (vm, _) = policy.pick_next().unwrap();
            assert_eq!(vm, 1);
            policy.slice_expired(vm);
        }
        let (vm, _) = policy.pick_next().unwrap();
        policy.blocked(vm);
        assert_eq!(policy.pick_next(), None);
        policy.woken(1);
        assert_eq!(policy.pick_next(), Some((1, 2 * QUANTUM)));
    }

    #[test]
    fn finished_vm_is_never_picked_again() {
        let mut policy = RoundRobin::new(QUANTUM, &[1, 1, 1, 1]).unwrap();
        // Finished while running, while queued in the middle, while blocked.
        let (running, _) = policy.pick_next().unwrap();
        policy.finished(running);
        policy.finished(2);
        let (vm, _) = policy.pick_next().unwrap();
        assert_eq!(vm, 1);
        policy.blocked(vm);
        policy.finished(1);
        policy.woken(1);
        policy.finished(2);
        assert_eq!(policy.ignored_calls(), 2);
        for _ in 0..4 {
            let (vm, _) = policy.pick_next().unwrap();
            assert_eq!(vm, 3);
            policy.slice_expired(vm);
        }
        policy.finished(3);
        assert_eq!(policy.pick_next(), None);
        assert_eq!(policy.queued(), 0);
    }

    #[test]
    fn calls_that_do_not_fit_are_ignored() {
        let mut policy = RoundRobin::new(QUANTUM, &[1, 1]).unwrap();
        policy.woken(0); // queued, not blocked
        policy.blocked(0); // queued, not running
        policy.slice_expired(1); // queued, not running
        policy.yielded(7); // unknown
        policy.finished(7); // unknown
        policy.woken(NIL); // the sentinel is not a VM
        assert_eq!(policy.ignored_calls(), 6);
        assert_eq!(queue(&policy), [0, 1]);
    }

    /// One random call to the policy.
    #[derive(Clone, Debug)]
    enum Call {
        Pick,
        SliceExpired(VmId),
        Yielded(VmId),
        Blocked(VmId),
        Woken(VmId),
        Finished(VmId),
    }

    fn call(vm_count: VmId) -> impl Strategy<Value = Call> {
        // Ids past the end (and the sentinel) exercise the unknown-id paths.
        let vm = prop_oneof![4 => 0..vm_count + 2, 1 => Just(NIL)];
        prop_oneof![
            3 => Just(Call::Pick),
            1 => vm.clone().prop_map(Call::SliceExpired),
            1 => vm.clone().prop_map(Call::Yielded),
            1 => vm.clone().prop_map(Call::Blocked),
            1 => vm.clone().prop_map(Call::Woken),
            1 => vm.prop_map(Call::Finished),
        ]
    }

    /// A naive model of the documented behaviour: a `VecDeque`, a state and a ticket per VM.
    struct Model {
        queue: VecDeque<VmId>,
        states: Vec<QueueState>,
        tickets: Vec<u64>,
        next_ticket: u64,
        boost: bool,
        ignored: u64,
    }

    impl Model {
        fn apply(&mut self, call: &Call) -> Option<VmId> {
            let expect = |model: &mut Self, vm: VmId, state: QueueState| {
                let fits = model.states.get(usize::from(vm)) == Some(&state);
                if !fits {
                    model.ignored += 1;
                }
                fits
            };
            match *call {
                Call::Pick => {
                    let vm = self.queue.pop_front()?;
                    self.states[usize::from(vm)] = QueueState::Running;
                    return Some(vm);
                }
                Call::SliceExpired(vm) | Call::Yielded(vm) => {
                    if expect(self, vm, QueueState::Running) {
                        self.states[usize::from(vm)] = QueueState::Queued;
                        self.tickets[usize::from(vm)] = self.ticket();
                        self.queue.push_back(vm);
                    }
                }
                Call::Blocked(vm) => {
                    if expect(self, vm, QueueState::Running) {
                        self.states[usize::from(vm)] = QueueState::Blocked;
                        self.tickets[usize::from(vm)] = self.ticket();
                    }
                }
                Call::Woken(vm) => {
                    if expect(self, vm, QueueState::Blocked) {
                        self.states[usize::from(vm)] = QueueState::Queued;
                        if self.boost {
                            let ticket = self.tickets[usize::from(vm)];
                            let place = self
                                .queue
                                .iter()
                                .position(|&queued| self.tickets[usize::from(queued)] > ticket)
                                .unwrap_or(self.queue.len());
                            self.queue.insert(place, vm);
                        } else {
                            self.tickets[usize::from(vm)] = self.ticket();
                            self.queue.push_back(vm);
                        }
                    }
                }
                Call::Finished(vm) => match self.states.get(usize::from(vm)) {
                    None | Some(QueueState::Finished) => self.ignored += 1,
                    Some(_) => {
                        self.states[usize::from(vm)] = QueueState::Finished;
                        self.queue.retain(|&queued| queued != vm);
                    }
                },
            }
            None
        }

        fn ticket(&mut self) -> u64 {
            self.next_ticket += 1;
            self.next_ticket - 1
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Any sequence of calls, sensible or not, never panics, keeps every VM in the queue at
        /// most once, and matches the naive model call for call, with and without the boost.
        #[test]
        fn random_calls_match_a_naive_model(
            (weights, calls) in (1usize..=16).prop_flat_map(|n| (
                prop::collection::vec(1u32..=8, n),
                prop::collection::vec(call(n as VmId), 0..200),
            )),
            boost in any::<bool>(),
        ) {
            let mut policy = RoundRobin::new(QUANTUM, &weights).unwrap();
            if boost {
                policy = policy.with_wake_boost();
            }
            let mut model = Model {
                queue: (0..weights.len() as VmId).collect(),
                states: vec![QueueState::Queued; weights.len()],
                tickets: (0..weights.len() as u64).collect(),
                next_ticket: weights.len() as u64,
                boost,
                ignored: 0,
            };
            for call in &calls {
                let expected = model.apply(call);
                match call {
                    Call::Pick => {
                        let picked = policy.pick_next();
                        prop_assert_eq!(picked.map(|(vm, _)| vm), expected);
                        if let Some((vm, slice)) = picked {
                            let weight = weights[usize::from(vm)];
                            prop_assert_eq!(slice, QUANTUM * Cycles::from(weight));
                        }
                    }
                    Call::SliceExpired(vm) => policy.slice_expired(*vm),
                    Call::Yielded(vm) => policy.yielded(*vm),
                    Call::Blocked(vm) => policy.blocked(*vm),
                    Call::Woken(vm) => policy.woken(*vm),
                    Call::Finished(vm) => policy.finished(*vm),
                }
                let queue = queue(&policy);
                prop_assert_eq!(&queue, &model.queue.iter().copied().collect::<Vec<_>>());
                prop_assert_eq!(policy.queued(), queue.len());
                let mut seen = vec![false; weights.len()];
                for &vm in &queue {
                    prop_assert!(!seen[usize::from(vm)], "vm {} queued twice", vm);
                    seen[usize::from(vm)] = true;
                }
                for (vm, &state) in model.states.iter().enumerate() {
                    prop_assert_eq!(policy.state(vm as VmId), Some(state));
                }
                prop_assert_eq!(policy.ignored_calls(), model.ignored);
            }
        }
    }
}
