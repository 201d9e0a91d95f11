//! The shared disk: one device in front of which every VM's requests queue, a timing model of its
//! service, and the policy that picks the next request (FIFO or weighted fair queueing), with an
//! optional throughput cap per VM.
//!
//! What is modelled:
//! - **One device, one request at a time.** A request is `sectors` sectors (512 bytes each) read
//!   or written by one VM. The device serves one request at a time, from start to completion,
//!   without preemption.
//! - **One outstanding request per VM.** A VM's virtual IDE channel runs one command at a time, so
//!   a VM has at most one request submitted and not completed; a second [`DiskQueue::submit`] is
//!   refused with [`DiskQueueError::Outstanding`] and counted.
//! - **Service time** ([`DiskTiming`]): `latency + sectors × cycles_per_sector` TSC cycles, the
//!   same for reads and writes. With both 0 the device is instant: a request completes at the
//!   moment it starts. The caller converts microseconds and MiB/s with the TSC frequency, so a run
//!   on an emulator with a fixed TSC repeats.
//! - **The queue's policy** ([`DiskPolicy`]): [`Fifo`](DiskPolicy::Fifo) serves in arrival order;
//!   [`Wfq`](DiskPolicy::Wfq) is start-time fair queueing (Goyal, Vin and Cheng, 1996), which gives
//!   backlogged VMs device time in proportion to their weights (below).
//! - **Caps** (`DiskShare::cap_cycles_per_sector`, after cgroup blkio throttling): a capped VM's
//!   request may start no earlier than its previous request's start plus that request's sectors ×
//!   the cap (below).
//! - **Anticipation** (WFQ only, off unless [`DiskQueue::with_anticipation`] gives a window):
//!   when a VM's request completes and that VM would come first, the device may wait a short
//!   window for its next request rather than serve another VM's at once (below).
//! - **Work conservation.** Anticipation aside, the device never idles while a request that its
//!   VM's cap allows to start waits; when only requests held back by caps wait, it idles until
//!   the earliest of them may start, and [`DiskQueue::next_event`] says when that is.
//!
//! What is not: no seek or rotation model (the service time does not depend on the sector
//! address or on the request before), no read/write asymmetry, no caching or write-back, no
//! queueing inside the device (no NCQ: one request at a time), no merging of adjacent requests,
//! no errors (a request always completes), and no data: this decides *when*, the hypervisor
//! moves the sectors. It never reads a clock: every call says what time it is.
//!
//! # Time
//!
//! The queue is an exact discrete-event model on the caller's clock. Every call that takes `now`
//! first brings the model to `now`: each completion due by then happens at exactly `start +
//! service`, and the next request starts at that same instant (back-to-back), or when it was
//! submitted, or when its cap allows, whichever is latest. So a caller that comes late (its `now`
//! jumps past several completions) gets the same completions, with the same times, waits and
//! service times, as one that called at every [`next_event`](DiskQueue::next_event): only the
//! moment it hears of them differs. Completions found by [`submit`](DiskQueue::submit) or
//! [`forget`](DiskQueue::forget) are kept for the next [`advance`](DiskQueue::advance).
//!
//! All the requests that arrive at one instant compete for the device at that instant, whatever
//! the order of the calls: a request that started at instant `t` (no time served yet) goes back
//! to the queue when a request submitted at `t` comes first under the policy. This is what lets
//! a VM that resubmits the moment its request completes keep its place (a VM with one
//! outstanding request could otherwise never be served twice in a row, nor get more than half of
//! a contended device whatever its weight). Requests that complete at the instant they start
//! (an instant device) have already completed and are not taken back.
//!
//! A `now` before the latest time told is read as the latest time and counted in
//! [`ignored_calls`](DiskQueue::ignored_calls). All arithmetic saturates: a completion past the
//! end of the `u64` clock happens at `Cycles::MAX`.
//!
//! # Weighted fair queueing (start-time fair queueing)
//!
//! Each request gets two tags when it is submitted, in virtual time (cycles of service per unit
//! of weight):
//! - start tag `S = max(V, F_prev)`, where `F_prev` is the finish tag of the VM's previous request
//!   (0 for its first);
//! - finish tag `F = S + cost / weight`, where `cost` is the request's service time in cycles (at
//!   least 1, so that an instant device still shares by request count).
//!
//! The device serves the waiting request (that its cap allows) with the smallest start tag, ties
//! in arrival order. `V`, the virtual time at an arrival, is the largest start tag of the requests
//! that started before that instant: while the device is busy that is the tag of the request in
//! service, as in SFQ. SFQ proper moves `V` to the largest finish tag when the device idles; here
//! it stays, which matters only to a VM that comes back after an idle device, and by at most one
//! request's `cost / weight`. Requests started at the arrival's own instant do not count, so
//! that `V` does not depend on the order of the calls at one instant. A VM that was idle gets no
//! credit for the time it was away (its `S` is at least `V`); a VM that is always backlogged gets
//! `weight / Σ weights` (over the backlogged VMs) of the device time, within a few requests' cost,
//! over any long run.
//! Tags are kept in 1/2³² cycle, in `u128`, saturating.
//!
//! # Caps
//!
//! A VM capped at `c` cycles per sector: its request `k + 1` may start no earlier than `start_k +
//! sectors_k × c`, nor before it was submitted. That is a token bucket with a burst of one
//! request: over any window `[t₁, t₂]`, the sectors of the requests the VM starts in it, all but
//! the last, are at most `(t₂ − t₁) / c`. A VM that was idle starts at once. A request that waits
//! for its cap does not hold the device: others are served meanwhile, in policy order. Under WFQ
//! a capped VM keeps its tags like any other; while held back it falls behind `V` and earns no
//! credit for it.
//!
//! # Anticipation
//!
//! A VM has one request outstanding at a time, and a real guest takes some time after a
//! completion (the interrupt, then its next command) before it submits again. A work-conserving
//! device has started another VM's request by then, so while others are backlogged a VM gets at
//! most one request in two: about half the device whatever its weight (with weights 1:2:4:8 the
//! heaviest VM cannot have its 8/15; with 1:4 two VMs alternate). So, after the Linux CFQ/BFQ
//! `slice_idle` and the anticipatory scheduler, a queue built with
//! [`with_anticipation`](DiskQueue::with_anticipation) and a window `A > 0` cycles, under WFQ, may
//! wait for the VM whose request just completed:
//!
//! - When VM X's request completes at `c` (reported, not one X was forgotten with), X has no
//!   request waiting and its cap allows its next request to start at `c`, the device
//!   *anticipates* X during `[c, c + A)`: it serves no other request unless one comes before X's
//!   next would. X's next request would get the start tag `S = max(V, F_X)` (`V` as any arrival
//!   would see it then: the largest start tag started so far; `F_X` the finish tag of the request
//!   that completed). A waiting request comes before it when its start tag is at most `S` (a tie
//!   goes to the waiting request, by arrival order: X's would arrive after it). So the device idles
//!   only while X would be served next, had it been waiting.
//! - If X submits during the window, its request starts at once (its wait counts from its
//!   submission, and is 0 but for a request submitted at the same instant that comes first).
//! - If a request comes before X's (an arrival during the window with a small start tag, or a
//!   request whose cap allows it during the window), it starts as soon as it is allowed, and the
//!   window is over.
//! - If the window expires, the device serves the best request waiting at `c + A`, as if the
//!   window had not been; [`next_event`](DiskQueue::next_event) says `c + A` so that the caller
//!   advances then. A VM that stops submitting thus costs the others at most one window per
//!   completion of its.
//! - [`forget`](DiskQueue::forget) of X ends the window at once.
//! - A capped X whose cap would hold its next request back at `c` is not waited for (a request
//!   that waits for its cap does not hold the device).
//!
//! [`anticipating`](DiskQueue::anticipating) says whom the device waits for, and until when.
//! With every VM back within the window, the device serves in the order it would serve
//! always-backlogged VMs, and weights hold again (1:2:4:8 within 5 %), at the cost of the idle
//! device while the VM it waits for thinks. A VM that submits again at the very instant its
//! request completes is waiting when the device picks (see "Time"): for it the window changes
//! nothing. The window should be longer than a guest's time from a completion to its next
//! command, and short next to a request's service time. FIFO never anticipates (serving X
//! first would break arrival order): the window is ignored there. With a window of 0 (what
//! [`new`](DiskQueue::new) builds) the device is work-conserving as above, exactly as before
//! anticipation existed.
//!
//! # Forgetting a VM
//!
//! [`forget`](DiskQueue::forget) drops a stopped VM's request. A request still waiting is
//! removed; one in service that started at this very instant is dropped too (the device had spent
//! nothing on it); one in service that started earlier is finished silently: the device stays
//! busy with it until its completion (the drive is mid-transfer), which is never reported.
//! Completions that happened before the call are still reported. The VM may submit again later
//! (a restarted VM); its tags and cap are not reset.
//!
//! Cost: memory is allocated at construction (a slot per VM and room for one completion per VM);
//! the completion list grows only for a caller that submits again before it collected the
//! previous completion with [`advance`](DiskQueue::advance). Each start scans the VMs once: O(n)
//! for n VMs, which is up to 64 in a lab.

use alloc::vec::Vec;
use core::fmt;

use crate::round_robin::MAX_VMS;
use crate::{Cycles, VmId};

/// The largest weight a VM may have on the disk (the smallest is 1).
pub const MAX_DISK_WEIGHT: u32 = 64;

/// Fractional bits of the WFQ tags: a tag counts cycles of service per unit of weight in units of
/// 2⁻³² cycle, so `cost / weight` rounds away less than 2⁻³² cycle per request.
const TAG_FRACTION_BITS: u32 = 32;

/// How the device picks the next request among those waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskPolicy {
    /// First in, first out: the request submitted first is served first.
    Fifo,
    /// Weighted fair queueing (start-time fair queueing, see the module documentation): device
    /// time in proportion to the VMs' weights when contended.
    Wfq,
}

impl DiskPolicy {
    /// Short name for reports and lab files ("fifo", "wfq").
    pub fn name(self) -> &'static str {
        match self {
            Self::Fifo => "fifo",
            Self::Wfq => "wfq",
        }
    }
}

/// The device's service time, in TSC cycles.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskTiming {
    /// Cycles every request takes, whatever its size.
    pub latency: Cycles,
    /// Cycles each 512-byte sector adds.
    pub cycles_per_sector: Cycles,
}

impl DiskTiming {
    /// A device that answers at once: every request completes the moment it starts.
    pub const INSTANT: Self = Self {
        latency: 0,
        cycles_per_sector: 0,
    };

    /// The service time of a request of `sectors` sectors: `latency + sectors ×
    /// cycles_per_sector`, saturated at `Cycles::MAX`.
    pub fn service(&self, sectors: u32) -> Cycles {
        self.latency
            .saturating_add(self.cycles_per_sector.saturating_mul(Cycles::from(sectors)))
    }
}

/// One VM's share of the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskShare {
    /// Relative share of the device time under [`DiskPolicy::Wfq`], 1 to [`MAX_DISK_WEIGHT`]
    /// (checked under FIFO too, where it has no effect).
    pub weight: u32,
    /// At most one sector per this many cycles (see "Caps" in the module documentation); `None`:
    /// uncapped. The caller converts the lab's MiB/s with the TSC frequency.
    pub cap_cycles_per_sector: Option<Cycles>,
}

/// Why [`DiskQueue::new`] refused a configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskConfigError {
    /// A VM has weight 0: it would never be served when the device is contended.
    ZeroWeight {
        /// The VM.
        vm: VmId,
    },
    /// A VM's weight is above [`MAX_DISK_WEIGHT`].
    WeightTooLarge {
        /// The VM.
        vm: VmId,
        /// Its weight.
        weight: u32,
    },
    /// A VM is capped at 0 cycles per sector, which is no cap: say `None`.
    ZeroCap {
        /// The VM.
        vm: VmId,
    },
    /// More VMs than [`MAX_VMS`].
    TooManyVms {
        /// The number of shares given.
        count: usize,
    },
}

impl fmt::Display for DiskConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroWeight { vm } => write!(f, "vm {vm} has disk weight 0"),
            Self::WeightTooLarge { vm, weight } => write!(
                f,
                "vm {vm} has disk weight {weight}, above {MAX_DISK_WEIGHT}"
            ),
            Self::ZeroCap { vm } => write!(
                f,
                "vm {vm} has a disk cap of 0 cycles per sector (uncapped is no cap)"
            ),
            Self::TooManyVms { count } => write!(
                f,
                "{count} VMs configured, the disk queue takes at most {MAX_VMS}"
            ),
        }
    }
}

/// Why [`DiskQueue::submit`] refused a request. A refused request changes nothing but the count
/// in [`DiskQueue::refused_submits`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskQueueError {
    /// The queue has no such VM.
    UnknownVm {
        /// The id given.
        vm: VmId,
    },
    /// The VM already has a request waiting or in service (its IDE channel runs one command at
    /// a time).
    Outstanding {
        /// The VM.
        vm: VmId,
    },
}

impl fmt::Display for DiskQueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownVm { vm } => write!(f, "the disk queue has no vm {vm}"),
            Self::Outstanding { vm } => {
                write!(f, "vm {vm} already has a disk request outstanding")
            }
        }
    }
}

/// A request the device completed (or, from [`DiskQueue::in_service`], will complete), with its
/// times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskCompletion {
    /// The VM that submitted it.
    pub vm: VmId,
    /// Its size in 512-byte sectors.
    pub sectors: u32,
    /// A write (else a read).
    pub write: bool,
    /// When it was submitted.
    pub submitted: Cycles,
    /// When the device started serving it.
    pub started: Cycles,
    /// When it completed: `started + service time`, saturated.
    pub completed: Cycles,
}

impl DiskCompletion {
    /// Cycles it waited in the queue: from submission to the start of its service.
    pub fn wait(&self) -> Cycles {
        self.started - self.submitted
    }

    /// Cycles the device served it: from its start to its completion.
    pub fn service(&self) -> Cycles {
        self.completed - self.started
    }
}

/// A request waiting for the device.
#[derive(Clone, Copy, Debug)]
struct Request {
    sectors: u32,
    write: bool,
    submitted: Cycles,
    /// The earliest start its VM's cap allows (when it was submitted, for an uncapped VM).
    eligible: Cycles,
    /// Its WFQ start tag.
    start_tag: u128,
    /// Its place in arrival order.
    sequence: u64,
}

/// The request in service.
#[derive(Clone, Copy, Debug)]
struct Service {
    vm: VmId,
    request: Request,
    started: Cycles,
    completes: Cycles,
    /// Its VM was forgotten: finished silently, never reported.
    forgotten: bool,
}

impl Service {
    fn completion(&self) -> DiskCompletion {
        DiskCompletion {
            vm: self.vm,
            sectors: self.request.sectors,
            write: self.request.write,
            submitted: self.request.submitted,
            started: self.started,
            completed: self.completes,
        }
    }
}

/// One VM's entry in the queue's table.
#[derive(Clone, Copy, Debug)]
struct Slot {
    share: DiskShare,
    /// Its request waiting for the device (not the one in service).
    waiting: Option<Request>,
    /// The WFQ finish tag of its latest request.
    finish_tag: u128,
    /// The earliest start its cap allows for its next request (0 for an uncapped VM).
    cap_free_at: Cycles,
}

/// The shared disk's queue and timing model (see the module documentation).
#[derive(Clone, Debug)]
pub struct DiskQueue {
    policy: DiskPolicy,
    timing: DiskTiming,
    /// The anticipation window in cycles (0: none; ignored under FIFO).
    anticipate: Cycles,
    /// One slot per VM, indexed by [`VmId`].
    slots: Vec<Slot>,
    in_service: Option<Service>,
    /// When the device completed its latest request (0 before the first), or, once an
    /// anticipation a call ended (the VM submitted or was forgotten), when that call came: the
    /// device idled until then, and may start nothing before.
    free_at: Cycles,
    /// The VM of that request, unless it was a forgotten VM's or the VM was forgotten since: the
    /// one the device may anticipate.
    last_completed: Option<VmId>,
    /// The latest time told; the model has run every event due by then.
    clock: Cycles,
    /// The largest start tag of the requests that started before `clock` and are no longer in
    /// service (the one in service is looked at apart: it may have started at `clock`).
    virtual_time: u128,
    /// The largest start tag of the requests that started and completed at `clock` itself: they
    /// count towards `virtual_time` once the clock has moved on.
    virtual_time_at_clock: u128,
    /// The next arrival's place in arrival order.
    next_sequence: u64,
    /// Requests waiting (the one in service not included).
    waiting: usize,
    /// Completions not yet handed out by `advance`.
    done: Vec<DiskCompletion>,
    refused: u64,
    ignored: u64,
}

impl DiskQueue {
    /// A queue for `vms.len()` VMs (VM `i` has share `vms[i]`) in front of a device with service
    /// time `timing`, idle at time 0, work-conserving (no anticipation).
    pub fn new(
        policy: DiskPolicy,
        timing: DiskTiming,
        vms: &[DiskShare],
    ) -> Result<Self, DiskConfigError> {
        Self::with_anticipation(policy, timing, 0, vms)
    }

    /// As [`new`](Self::new), with an anticipation window of `anticipate` cycles under WFQ (see
    /// "Anticipation" in the module documentation): 0 is none, exactly [`new`](Self::new); FIFO
    /// ignores it.
    pub fn with_anticipation(
        policy: DiskPolicy,
        timing: DiskTiming,
        anticipate: Cycles,
        vms: &[DiskShare],
    ) -> Result<Self, DiskConfigError> {
        if vms.len() > MAX_VMS {
            return Err(DiskConfigError::TooManyVms { count: vms.len() });
        }
        for (vm, share) in vms.iter().enumerate() {
            let vm = vm as VmId;
            match share.weight {
                0 => return Err(DiskConfigError::ZeroWeight { vm }),
                weight if weight > MAX_DISK_WEIGHT => {
                    return Err(DiskConfigError::WeightTooLarge { vm, weight })
                }
                _ => {}
            }
            if share.cap_cycles_per_sector == Some(0) {
                return Err(DiskConfigError::ZeroCap { vm });
            }
        }
        Ok(Self {
            policy,
            timing,
            anticipate,
            slots: vms
                .iter()
                .map(|&share| Slot {
                    share,
                    waiting: None,
                    finish_tag: 0,
                    cap_free_at: 0,
                })
                .collect(),
            in_service: None,
            free_at: 0,
            last_completed: None,
            clock: 0,
            virtual_time: 0,
            virtual_time_at_clock: 0,
            next_sequence: 0,
            waiting: 0,
            done: Vec::with_capacity(vms.len()),
            refused: 0,
            ignored: 0,
        })
    }

    /// The queue's policy.
    pub fn policy(&self) -> DiskPolicy {
        self.policy
    }

    /// The device's service time.
    pub fn timing(&self) -> DiskTiming {
        self.timing
    }

    /// The anticipation window in cycles, as configured (0: none; it has no effect under FIFO).
    pub fn anticipation(&self) -> Cycles {
        self.anticipate
    }

    /// The VM the idle device is waiting for at the latest time told, and the end of the window
    /// (see "Anticipation" in the module documentation): `None` when it is not anticipating.
    pub fn anticipating(&self) -> Option<(VmId, Cycles)> {
        self.anticipation_window()
            .filter(|&(_, _, until)| self.clock < until)
            .map(|(vm, _, until)| (vm, until))
    }

    /// Number of VMs the queue was built for.
    pub fn vm_count(&self) -> usize {
        self.slots.len()
    }

    /// `vm`'s share; `None` for an unknown id.
    pub fn share(&self, vm: VmId) -> Option<DiskShare> {
        self.slots.get(usize::from(vm)).map(|slot| slot.share)
    }

    /// The latest time told.
    pub fn now(&self) -> Cycles {
        self.clock
    }

    /// VM `vm` asks for `sectors` sectors (a write if `write`) at `now`. Refused, and counted, for
    /// an unknown VM or one that already has a request outstanding (waiting or in service). On an
    /// idle device an allowed request starts at `now`; on an instant device it has then completed
    /// too, and the next [`advance`](Self::advance) reports it.
    pub fn submit(
        &mut self,
        now: Cycles,
        vm: VmId,
        sectors: u32,
        write: bool,
    ) -> Result<(), DiskQueueError> {
        self.run_until(now);
        if usize::from(vm) >= self.slots.len() {
            self.refused += 1;
            return Err(DiskQueueError::UnknownVm { vm });
        }
        if self.outstanding(vm) {
            self.refused += 1;
            return Err(DiskQueueError::Outstanding { vm });
        }
        self.end_anticipation(vm);
        let clock = self.clock;
        // V: the largest start tag of the requests that started before this instant.
        let virtual_time = match self.in_service {
            Some(service) if service.started < clock => {
                self.virtual_time.max(service.request.start_tag)
            }
            _ => self.virtual_time,
        };
        let cost = self.timing.service(sectors).max(1);
        let slot = &mut self.slots[usize::from(vm)];
        let start_tag = virtual_time.max(slot.finish_tag);
        let increment = (u128::from(cost) << TAG_FRACTION_BITS) / u128::from(slot.share.weight);
        slot.finish_tag = start_tag.saturating_add(increment);
        let request = Request {
            sectors,
            write,
            submitted: clock,
            eligible: clock.max(slot.cap_free_at),
            start_tag,
            sequence: self.next_sequence,
        };
        slot.waiting = Some(request);
        self.next_sequence += 1;
        self.waiting += 1;
        // A request that started at this very instant was picked before this one arrived: if
        // this one comes first, the device takes the other back (it has served it for no time).
        if let Some(service) = self.in_service {
            if service.started == clock
                && !service.forgotten
                && request.eligible <= clock
                && self.key(&request) < self.key(&service.request)
            {
                self.in_service = None;
                self.slots[usize::from(service.vm)].waiting = Some(service.request);
                self.waiting += 1;
            }
        }
        self.run_until(clock);
        Ok(())
    }

    /// When the caller must next call [`advance`](Self::advance): the completion of the request
    /// in service; when the device idles with requests held back by caps, the instant the first
    /// of them may start; when it anticipates a VM while others wait, the end of the window (or
    /// the instant a request that comes first may start, if sooner); when completions are
    /// waiting to be collected, the first one's time (in the past: call at once). `None` when the
    /// device is idle and nothing waits.
    pub fn next_event(&self) -> Option<Cycles> {
        if let Some(first) = self.done.first() {
            return Some(first.completed);
        }
        if let Some(service) = self.in_service {
            return Some(service.completes);
        }
        self.next_start().map(|(_, at)| at)
    }

    /// Brings the model to `now`: completes every request due by then and starts the next ones,
    /// each at its exact time. Returns every completion not yet reported, in completion order,
    /// forgotten VMs' in-service requests excepted; dropping the iterator unread drops them.
    pub fn advance(&mut self, now: Cycles) -> impl Iterator<Item = DiskCompletion> + '_ {
        self.run_until(now);
        self.done.drain(..)
    }

    /// Requests in the device: waiting plus the one in service (a forgotten VM's that the device
    /// is finishing included), for a queue-length metric.
    pub fn queued(&self) -> usize {
        self.waiting + usize::from(self.in_service.is_some())
    }

    /// `vm` has a request waiting or in service (not counting one it was forgotten with).
    pub fn outstanding(&self, vm: VmId) -> bool {
        let waiting = self
            .slots
            .get(usize::from(vm))
            .is_some_and(|slot| slot.waiting.is_some());
        let serving = self
            .in_service
            .is_some_and(|service| service.vm == vm && !service.forgotten);
        waiting || serving
    }

    /// The request in service as it will complete (the device may still take it back if it
    /// started at the latest time told: see the module documentation).
    pub fn in_service(&self) -> Option<DiskCompletion> {
        self.in_service.map(|service| service.completion())
    }

    /// `vm` stopped at `now`: its request is dropped (see "Forgetting a VM" in the module
    /// documentation). An unknown id is ignored and counted.
    pub fn forget(&mut self, now: Cycles, vm: VmId) {
        self.run_until(now);
        let Some(slot) = self.slots.get_mut(usize::from(vm)) else {
            self.ignored += 1;
            return;
        };
        if slot.waiting.take().is_some() {
            self.waiting -= 1;
        }
        // The device no longer waits for it.
        self.end_anticipation(vm);
        if self.last_completed == Some(vm) {
            self.last_completed = None;
        }
        if let Some(service) = &mut self.in_service {
            if service.vm == vm {
                if service.started == self.clock {
                    self.in_service = None;
                } else {
                    // Served all the same: it counts against the cap of a VM that comes back
                    // before the device has finished it.
                    service.forgotten = true;
                    let service = *service;
                    self.charge_cap(&service);
                }
            }
        }
        self.run_until(self.clock);
    }

    /// Submissions refused (unknown VM, or one already outstanding).
    pub fn refused_submits(&self) -> u64 {
        self.refused
    }

    /// Calls whose time went back before the latest time told (read as that time), and
    /// [`forget`](Self::forget) calls for an unknown VM.
    pub fn ignored_calls(&self) -> u64 {
        self.ignored
    }

    /// The order the policy serves in: the smallest key first.
    fn key(&self, request: &Request) -> (u128, u64) {
        match self.policy {
            DiskPolicy::Fifo => (0, request.sequence),
            DiskPolicy::Wfq => (request.start_tag, request.sequence),
        }
    }

    /// When the idle device may anticipate a VM: the VM, the start tag its next request would
    /// get, and the end of the window. `None` when it may not (no window, FIFO, the device busy,
    /// the last completion a forgotten VM's, the VM already waiting or held back by its cap).
    fn anticipation_window(&self) -> Option<(VmId, u128, Cycles)> {
        if self.anticipate == 0 || self.policy != DiskPolicy::Wfq || self.in_service.is_some() {
            return None;
        }
        let vm = self.last_completed?;
        let slot = &self.slots[usize::from(vm)];
        if slot.waiting.is_some() || slot.cap_free_at > self.free_at {
            return None;
        }
        // V as an arrival during the window sees it: nothing has started since the completion.
        let start_tag = slot
            .finish_tag
            .max(self.virtual_time)
            .max(self.virtual_time_at_clock);
        Some((vm, start_tag, self.free_at.saturating_add(self.anticipate)))
    }

    /// A call about `vm` at the latest time told: if the device was anticipating it, it idled
    /// until now, and may start requests from now on (not back from the completion).
    fn end_anticipation(&mut self, vm: VmId) {
        if self
            .anticipating()
            .is_some_and(|(anticipated, _)| anticipated == vm)
        {
            self.free_at = self.clock;
        }
    }

    /// The request the idle device serves next and when: at the latest of its completing the
    /// last one and the first instant some waiting request's cap allows, the first under the
    /// policy of the requests allowed by then. While it anticipates a VM, not before the end of
    /// the window unless a request that comes before that VM's next is allowed sooner. `None`
    /// when nothing waits.
    fn next_start(&self) -> Option<(VmId, Cycles)> {
        let earliest = self
            .slots
            .iter()
            .filter_map(|slot| slot.waiting.map(|request| request.eligible))
            .min()?;
        let mut at = earliest.max(self.free_at);
        if let Some((_, start_tag, until)) = self.anticipation_window() {
            // The first instant a request that comes before the anticipated one is allowed.
            let first = self
                .slots
                .iter()
                .filter_map(|slot| slot.waiting)
                .filter(|request| request.start_tag <= start_tag)
                .map(|request| request.eligible.max(self.free_at))
                .min();
            at = at.max(until);
            if let Some(first) = first {
                at = at.min(first);
            }
        }
        let vm = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(vm, slot)| Some((vm, slot.waiting?)))
            .filter(|(_, request)| request.eligible <= at)
            .min_by_key(|(_, request)| self.key(request))
            .map(|(vm, _)| vm as VmId)?;
        Some((vm, at))
    }

    /// Runs the model to `now` (or to the latest time told, if `now` is before it): every
    /// completion due and every start due, in time order.
    fn run_until(&mut self, now: Cycles) {
        if now < self.clock {
            self.ignored += 1;
        } else if now > self.clock {
            self.virtual_time = self.virtual_time.max(self.virtual_time_at_clock);
            self.virtual_time_at_clock = 0;
            self.clock = now;
        }
        loop {
            if let Some(service) = self.in_service {
                if service.completes > self.clock {
                    return;
                }
                self.complete(service);
                continue;
            }
            match self.next_start() {
                Some((vm, at)) if at <= self.clock => self.start(vm, at),
                _ => return,
            }
        }
    }

    /// The device starts serving `vm`'s waiting request at `at`.
    fn start(&mut self, vm: VmId, at: Cycles) {
        let slot = &mut self.slots[usize::from(vm)];
        let Some(request) = slot.waiting.take() else {
            unreachable!("vm {vm} was picked without a waiting request");
        };
        self.waiting -= 1;
        self.in_service = Some(Service {
            vm,
            request,
            started: at,
            completes: at.saturating_add(self.timing.service(request.sectors)),
            forgotten: false,
        });
    }

    /// The request in service completes (at its time, which is due).
    fn complete(&mut self, service: Service) {
        self.in_service = None;
        self.free_at = service.completes;
        self.last_completed = (!service.forgotten).then_some(service.vm);
        let tag = service.request.start_tag;
        if service.started < self.clock {
            self.virtual_time = self.virtual_time.max(tag);
        } else {
            self.virtual_time_at_clock = self.virtual_time_at_clock.max(tag);
        }
        self.charge_cap(&service);
        if !service.forgotten {
            self.done.push(service.completion());
        }
    }

    /// A capped VM's next request may start `sectors × cap` after this one started.
    fn charge_cap(&mut self, service: &Service) {
        let slot = &mut self.slots[usize::from(service.vm)];
        if let Some(cap) = slot.share.cap_cycles_per_sector {
            let interval = cap.saturating_mul(Cycles::from(service.request.sectors));
            slot.cap_free_at = service.started.saturating_add(interval);
        }
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec;

    use proptest::prelude::*;

    use super::*;

    /// A device of the unit tests: 1,000 cycles a request and 10 a sector.
    const TIMING: DiskTiming = DiskTiming {
        latency: 1_000,
        cycles_per_sector: 10,
    };

    fn uncapped(weights: &[u32]) -> Vec<DiskShare> {
        weights
            .iter()
            .map(|&weight| DiskShare {
                weight,
                cap_cycles_per_sector: None,
            })
            .collect()
    }

    fn advance(queue: &mut DiskQueue, now: Cycles) -> Vec<DiskCompletion> {
        queue.advance(now).collect()
    }

    fn completion(
        vm: VmId,
        sectors: u32,
        (submitted, started, completed): (Cycles, Cycles, Cycles),
    ) -> DiskCompletion {
        DiskCompletion {
            vm,
            sectors,
            write: false,
            submitted,
            started,
            completed,
        }
    }

    #[test]
    fn an_instant_device_completes_at_the_moment_of_submission() {
        let mut queue =
            DiskQueue::new(DiskPolicy::Fifo, DiskTiming::INSTANT, &uncapped(&[1, 1])).unwrap();
        assert_eq!(queue.next_event(), None);
        queue.submit(500, 0, 8, true).unwrap();
        queue.submit(500, 1, 256, false).unwrap();
        assert_eq!(queue.queued(), 0);
        assert!(!queue.outstanding(0));
        assert_eq!(queue.next_event(), Some(500));
        let done = advance(&mut queue, 500);
        assert_eq!(
            done,
            [
                DiskCompletion {
                    write: true,
                    ..completion(0, 8, (500, 500, 500))
                },
                completion(1, 256, (500, 500, 500)),
            ]
        );
        assert_eq!((done[0].wait(), done[0].service()), (0, 0));
        assert_eq!(queue.next_event(), None);
        assert_eq!(queue.refused_submits() + queue.ignored_calls(), 0);
    }

    #[test]
    fn service_is_latency_plus_sectors_back_to_back() {
        let mut queue = DiskQueue::new(DiskPolicy::Fifo, TIMING, &uncapped(&[1, 1])).unwrap();
        assert_eq!(TIMING.service(8), 1_080);
        queue.submit(100, 0, 8, false).unwrap();
        queue.submit(200, 1, 16, false).unwrap();
        assert_eq!(queue.queued(), 2);
        assert_eq!(queue.in_service().map(|service| service.vm), Some(0));
        assert_eq!(queue.next_event(), Some(1_180));
        assert_eq!(advance(&mut queue, 1_179), []);
        assert_eq!(
            advance(&mut queue, 1_180),
            [completion(0, 8, (100, 100, 1_180))]
        );
        assert_eq!(queue.next_event(), Some(2_340));
        let done = advance(&mut queue, 2_340);
        assert_eq!(done, [completion(1, 16, (200, 1_180, 2_340))]);
        assert_eq!((done[0].wait(), done[0].service()), (980, 1_160));
        assert_eq!((queue.queued(), queue.next_event()), (0, None));
    }

    #[test]
    fn a_late_advance_reports_each_completion_at_its_own_time() {
        let mut queue = DiskQueue::new(DiskPolicy::Fifo, TIMING, &uncapped(&[1, 1, 1])).unwrap();
        for vm in 0..3 {
            queue.submit(0, vm, 0, false).unwrap();
        }
        // Called long after all three: they were served back to back all the same.
        assert_eq!(
            advance(&mut queue, 1_000_000),
            [
                completion(0, 0, (0, 0, 1_000)),
                completion(1, 0, (0, 1_000, 2_000)),
                completion(2, 0, (0, 2_000, 3_000)),
            ]
        );
        // An idle device starts a request when it comes, not when it last completed one.
        queue.submit(1_000_000, 0, 1, false).unwrap();
        assert_eq!(queue.next_event(), Some(1_001_010));
    }

    #[test]
    fn completions_found_by_submit_wait_for_the_next_advance() {
        let mut queue = DiskQueue::new(DiskPolicy::Fifo, TIMING, &uncapped(&[1, 1])).unwrap();
        queue.submit(0, 0, 0, false).unwrap();
        // VM 1 submits after VM 0's completion, which no advance has reported yet.
        queue.submit(5_000, 1, 0, false).unwrap();
        assert_eq!(queue.next_event(), Some(1_000));
        assert_eq!(
            advance(&mut queue, 5_000),
            [completion(0, 0, (0, 0, 1_000))]
        );
        assert_eq!(queue.next_event(), Some(6_000));
    }

    #[test]
    fn a_second_request_from_a_vm_is_refused_and_counted() {
        let mut queue = DiskQueue::new(DiskPolicy::Wfq, TIMING, &uncapped(&[1, 1])).unwrap();
        queue.submit(0, 0, 1, false).unwrap();
        queue.submit(0, 1, 1, false).unwrap();
        // One in service, one waiting: both refused.
        assert_eq!(
            queue.submit(10, 0, 1, false),
            Err(DiskQueueError::Outstanding { vm: 0 })
        );
        assert_eq!(
            queue.submit(10, 1, 1, false),
            Err(DiskQueueError::Outstanding { vm: 1 })
        );
        assert_eq!(
            queue.submit(10, 2, 1, false),
            Err(DiskQueueError::UnknownVm { vm: 2 })
        );
        assert_eq!(queue.refused_submits(), 3);
        assert_eq!(queue.queued(), 2);
        // Once its request completed, the VM may submit again.
        assert_eq!(advance(&mut queue, 1_010).len(), 1);
        queue.submit(1_010, 0, 1, false).unwrap();
        assert_eq!(
            DiskQueueError::Outstanding { vm: 3 }.to_string(),
            "vm 3 already has a disk request outstanding"
        );
        assert_eq!(
            DiskQueueError::UnknownVm { vm: 9 }.to_string(),
            "the disk queue has no vm 9"
        );
    }

    #[test]
    fn bad_configurations_are_refused() {
        let new = |shares: &[DiskShare]| DiskQueue::new(DiskPolicy::Wfq, TIMING, shares);
        assert_eq!(
            new(&uncapped(&[1, 0])).unwrap_err(),
            DiskConfigError::ZeroWeight { vm: 1 }
        );
        assert_eq!(
            new(&uncapped(&[MAX_DISK_WEIGHT, MAX_DISK_WEIGHT + 1])).unwrap_err(),
            DiskConfigError::WeightTooLarge { vm: 1, weight: 65 }
        );
        let zero_cap = DiskShare {
            weight: 1,
            cap_cycles_per_sector: Some(0),
        };
        assert_eq!(
            new(&[zero_cap]).unwrap_err(),
            DiskConfigError::ZeroCap { vm: 0 }
        );
        assert_eq!(
            new(&uncapped(&vec![1; MAX_VMS + 1])).unwrap_err(),
            DiskConfigError::TooManyVms { count: MAX_VMS + 1 }
        );
        let queue = new(&uncapped(&[3])).unwrap();
        assert_eq!((queue.vm_count(), queue.policy().name()), (1, "wfq"));
        assert_eq!(queue.share(0).map(|share| share.weight), Some(3));
        assert_eq!((queue.share(1), queue.timing()), (None, TIMING));
        assert_eq!(DiskPolicy::Fifo.name(), "fifo");
        assert_eq!(
            DiskConfigError::WeightTooLarge { vm: 2, weight: 99 }.to_string(),
            "vm 2 has disk weight 99, above 64"
        );
    }

    #[test]
    fn huge_values_saturate() {
        let timing = DiskTiming {
            latency: Cycles::MAX / 2,
            cycles_per_sector: Cycles::MAX / 3,
        };
        assert_eq!(timing.service(256), Cycles::MAX);
        let shares = [
            DiskShare {
                weight: 1,
                cap_cycles_per_sector: Some(Cycles::MAX),
            },
            DiskShare {
                weight: MAX_DISK_WEIGHT,
                cap_cycles_per_sector: None,
            },
        ];
        let mut queue = DiskQueue::new(DiskPolicy::Wfq, timing, &shares).unwrap();
        queue.submit(Cycles::MAX - 10, 0, 256, true).unwrap();
        queue.submit(Cycles::MAX - 5, 1, u32::MAX, false).unwrap();
        assert_eq!(queue.next_event(), Some(Cycles::MAX));
        let done = advance(&mut queue, Cycles::MAX);
        assert_eq!(done.len(), 2);
        assert_eq!(done[1].started, Cycles::MAX);
        // At the end of time the capped VM may still go, and completes at once.
        queue.submit(Cycles::MAX, 0, 256, false).unwrap();
        queue.submit(Cycles::MAX, 1, 256, false).unwrap();
        assert_eq!(advance(&mut queue, Cycles::MAX).len(), 2);
        assert_eq!(queue.next_event(), None);
    }

    #[test]
    fn a_resubmission_at_the_completion_instant_competes_for_the_device() {
        // VM 1 (weight 8) resubmits the moment its request completes; VM 0's request had
        // started at that instant. Under WFQ VM 1 comes first and takes the device back; under
        // FIFO VM 0 keeps it.
        for (policy, next) in [(DiskPolicy::Wfq, 1), (DiskPolicy::Fifo, 0)] {
            let mut queue = DiskQueue::new(policy, TIMING, &uncapped(&[1, 8])).unwrap();
            queue.submit(0, 0, 0, false).unwrap();
            queue.submit(0, 1, 0, false).unwrap();
            // VM 0 (start tag 0, finish tag 1,000) goes first and resubmits at once (start tag
            // 1,000); VM 1 (start tag 0) is served next.
            assert_eq!(advance(&mut queue, 1_000).len(), 1);
            queue.submit(1_000, 0, 0, false).unwrap();
            assert_eq!(queue.in_service().map(|service| service.vm), Some(1));
            // VM 1's request completes at 2,000 and VM 0's starts; VM 1 resubmits at once, with
            // start tag 1,000 / 8.
            let done = advance(&mut queue, 2_000);
            assert_eq!(done, [completion(1, 0, (0, 1_000, 2_000))]);
            assert_eq!(queue.in_service().map(|service| service.vm), Some(0));
            queue.submit(2_000, 1, 0, false).unwrap();
            let service = queue.in_service().unwrap();
            assert_eq!((service.vm, service.started), (next, 2_000), "{policy:?}");
            assert_eq!(queue.queued(), 2);
        }
    }

    #[test]
    fn wfq_virtual_time_is_the_largest_start_tag_before_the_instant() {
        // One unit of tag: a request of cost 1 (the least) at weight 1.
        let unit = 1u128 << TAG_FRACTION_BITS;
        let mut queue =
            DiskQueue::new(DiskPolicy::Wfq, DiskTiming::INSTANT, &uncapped(&[1, 1, 1])).unwrap();
        // VM 0 asks three times at 0, each served at once: start tags 0, 1 and 2.
        for _ in 0..3 {
            queue.submit(0, 0, 8, false).unwrap();
            assert_eq!(advance(&mut queue, 0).len(), 1);
        }
        assert_eq!(queue.slots[0].finish_tag, 3 * unit);
        // At 0 itself those starts do not count: V is 0 for VM 1.
        queue.submit(0, 1, 8, false).unwrap();
        assert_eq!(queue.slots[1].finish_tag, unit);
        // Later they do: V is 2 (the largest start tag so far) for VM 2.
        queue.submit(10, 2, 8, false).unwrap();
        assert_eq!(queue.slots[2].finish_tag, 3 * unit);
        // While the device is busy, V is the start tag of the request in service.
        let mut queue = DiskQueue::new(DiskPolicy::Wfq, TIMING, &uncapped(&[1, 1, 1])).unwrap();
        queue.submit(0, 0, 0, false).unwrap();
        assert_eq!(advance(&mut queue, 1_000).len(), 1);
        queue.submit(1_000, 0, 0, false).unwrap(); // start tag 1,000
        queue.submit(1_000, 1, 0, false).unwrap(); // start tag 0: goes first
        assert_eq!(queue.in_service().map(|service| service.vm), Some(1));
        assert_eq!(advance(&mut queue, 2_000).len(), 1);
        assert_eq!(queue.in_service().map(|service| service.vm), Some(0));
        queue.submit(2_500, 2, 0, false).unwrap();
        let waiting = queue.slots[2].waiting.unwrap();
        assert_eq!(waiting.start_tag, 1_000 * unit);
    }

    #[test]
    fn a_capped_vm_waits_for_its_rate_while_others_are_served() {
        let timing = DiskTiming {
            latency: 0,
            cycles_per_sector: 10,
        };
        let shares = [
            DiskShare {
                weight: 1,
                cap_cycles_per_sector: Some(100),
            },
            DiskShare {
                weight: 1,
                cap_cycles_per_sector: None,
            },
        ];
        let mut queue = DiskQueue::new(DiskPolicy::Fifo, timing, &shares).unwrap();
        queue.submit(0, 0, 10, false).unwrap();
        assert_eq!(advance(&mut queue, 100).len(), 1);
        // Its next request may start at 0 + 10 × 100; the device idles until then.
        queue.submit(100, 0, 10, false).unwrap();
        assert_eq!(queue.in_service(), None);
        assert_eq!(queue.next_event(), Some(1_000));
        // An uncapped VM is served at once meanwhile.
        queue.submit(200, 1, 10, false).unwrap();
        assert_eq!(queue.in_service().map(|service| service.started), Some(200));
        assert_eq!(queue.next_event(), Some(300));
        let done = advance(&mut queue, 5_000);
        assert_eq!(
            done,
            [
                completion(1, 10, (200, 200, 300)),
                completion(0, 10, (100, 1_000, 1_100)),
            ]
        );
        // After an idle spell the capped VM starts at once (a burst of one request).
        queue.submit(5_000, 0, 10, false).unwrap();
        assert_eq!(
            queue.in_service().map(|service| service.started),
            Some(5_000)
        );
    }

    #[test]
    fn a_forgotten_vm_leaves_the_queue_and_its_request_in_service_finishes_silently() {
        let mut queue = DiskQueue::new(DiskPolicy::Fifo, TIMING, &uncapped(&[1, 1, 1])).unwrap();
        queue.submit(0, 0, 0, false).unwrap();
        queue.submit(0, 1, 0, false).unwrap();
        // Waiting: dropped.
        queue.forget(10, 1);
        assert_eq!(queue.queued(), 1);
        // In service since before the call: the device finishes it, and nobody hears of it.
        queue.forget(20, 0);
        assert!(!queue.outstanding(0));
        assert_eq!(queue.queued(), 1);
        queue.submit(30, 2, 0, false).unwrap();
        assert_eq!(queue.next_event(), Some(1_000));
        assert_eq!(advance(&mut queue, 1_000), []);
        // A VM that comes back queues like any other.
        queue.submit(1_500, 0, 0, false).unwrap();
        assert_eq!(
            advance(&mut queue, 3_000),
            [
                completion(2, 0, (30, 1_000, 2_000)),
                completion(0, 0, (1_500, 2_000, 3_000)),
            ]
        );
        // Started at this very instant: dropped, and the device goes on with the next one.
        queue.submit(3_000, 1, 0, false).unwrap();
        queue.submit(3_000, 2, 0, false).unwrap();
        queue.forget(3_000, 1);
        let service = queue.in_service().unwrap();
        assert_eq!((service.vm, service.started), (2, 3_000));
        queue.forget(3_000, 7);
        assert_eq!(queue.ignored_calls(), 1);
    }

    #[test]
    fn time_going_back_is_read_as_the_latest_time_and_counted() {
        let mut queue = DiskQueue::new(DiskPolicy::Fifo, TIMING, &uncapped(&[1, 1])).unwrap();
        assert_eq!(advance(&mut queue, 5_000), []);
        queue.submit(4_000, 0, 0, false).unwrap();
        assert_eq!(queue.now(), 5_000);
        assert_eq!(
            queue.in_service().map(|service| service.started),
            Some(5_000)
        );
        assert_eq!(advance(&mut queue, 1), []);
        assert_eq!(queue.ignored_calls(), 2);
    }

    /// Weights 1 (VM 0) and 4 (VM 1), requests of 1,000 cycles, up to VM 1's completion at 3,000
    /// with VM 0 waiting (start tag 1,000): VM 1's next request would get start tag 500, so it
    /// comes first. `extra` more VMs of weight 1 stay silent.
    fn vm_1_just_completed(policy: DiskPolicy, window: Cycles, extra: usize) -> DiskQueue {
        let mut weights = vec![1, 4];
        weights.extend(core::iter::repeat_n(1, extra));
        let mut queue =
            DiskQueue::with_anticipation(policy, TIMING, window, &uncapped(&weights)).unwrap();
        // VM 1 (start tag 0, finish tag 250) starts, VM 0 (0, 1,000) waits and goes next.
        queue.submit(0, 1, 0, false).unwrap();
        queue.submit(0, 0, 0, false).unwrap();
        assert_eq!(advance(&mut queue, 1_000).len(), 1);
        assert_eq!(queue.in_service().map(|service| service.vm), Some(0));
        assert_eq!(queue.anticipating(), None);
        queue.submit(1_100, 1, 0, false).unwrap(); // start tag 250
        assert_eq!(advance(&mut queue, 2_000).len(), 1);
        assert_eq!(queue.in_service().map(|service| service.vm), Some(1));
        queue.submit(2_100, 0, 0, false).unwrap(); // start tag 1,000
        assert_eq!(
            advance(&mut queue, 3_000),
            [completion(1, 0, (1_100, 2_000, 3_000))]
        );
        queue
    }

    #[test]
    fn the_device_anticipates_the_vm_that_comes_next_for_one_window() {
        let mut queue = vm_1_just_completed(DiskPolicy::Wfq, 5_000, 0);
        assert_eq!(queue.anticipation(), 5_000);
        assert_eq!(queue.in_service(), None);
        assert_eq!(queue.anticipating(), Some((1, 8_000)));
        assert_eq!(queue.next_event(), Some(8_000));
        // VM 1 comes back within the window: served at once.
        queue.submit(3_200, 1, 0, false).unwrap();
        assert_eq!(queue.anticipating(), None);
        let done = advance(&mut queue, 4_200);
        assert_eq!(done, [completion(1, 0, (3_200, 3_200, 4_200))]);
        assert_eq!(done[0].wait(), 0);
        // Its next would get start tag 750: anticipated again, but it does not come back, and
        // VM 0 starts when the window ends.
        assert_eq!(queue.anticipating(), Some((1, 9_200)));
        assert_eq!(queue.next_event(), Some(9_200));
        assert_eq!(advance(&mut queue, 9_199), []);
        assert_eq!(queue.in_service(), None);
        assert_eq!(advance(&mut queue, 9_200), []);
        assert_eq!(queue.anticipating(), None);
        assert_eq!(
            queue.in_service(),
            Some(completion(0, 0, (2_100, 9_200, 10_200)))
        );
        // Without a window (and under FIFO, whatever the window) VM 0 starts at 3,000.
        for (policy, window) in [(DiskPolicy::Wfq, 0), (DiskPolicy::Fifo, 5_000)] {
            let queue = vm_1_just_completed(policy, window, 0);
            assert_eq!(queue.anticipating(), None, "{policy:?}");
            assert_eq!(
                queue.in_service(),
                Some(completion(0, 0, (2_100, 3_000, 4_000))),
                "{policy:?}"
            );
        }
    }

    #[test]
    fn a_request_that_comes_first_ends_the_window() {
        // VM 2 (weight 1) was idle: it comes with start tag V = 250, before VM 1's 500.
        let mut queue = vm_1_just_completed(DiskPolicy::Wfq, 5_000, 1);
        assert_eq!(queue.anticipating(), Some((1, 8_000)));
        queue.submit(3_100, 2, 0, false).unwrap();
        assert_eq!(queue.anticipating(), None);
        assert_eq!(
            queue.in_service(),
            Some(completion(2, 0, (3_100, 3_100, 4_100)))
        );
        // A request that comes first but is held back by its cap starts when its cap allows,
        // before the window ends. VM 1 (weight 64, 10 sectors: 1,100 cycles) is capped at 400
        // cycles a sector: its second request may start at 4,000.
        let shares = [
            DiskShare {
                weight: 1,
                cap_cycles_per_sector: None,
            },
            DiskShare {
                weight: 64,
                cap_cycles_per_sector: Some(400),
            },
        ];
        let mut queue =
            DiskQueue::with_anticipation(DiskPolicy::Wfq, TIMING, 5_000, &shares).unwrap();
        queue.submit(0, 1, 10, false).unwrap();
        queue.submit(0, 0, 0, false).unwrap();
        assert_eq!(advance(&mut queue, 1_100).len(), 1);
        // Start tag 1,100 / 64.
        queue.submit(1_200, 1, 10, false).unwrap();
        // VM 0's request completes at 2,100; its next would get start tag 1,000.
        assert_eq!(advance(&mut queue, 2_100).len(), 1);
        assert_eq!(queue.anticipating(), Some((0, 7_100)));
        assert_eq!(queue.next_event(), Some(4_000));
        assert_eq!(advance(&mut queue, 4_000), []);
        assert_eq!(
            queue
                .in_service()
                .map(|service| (service.vm, service.started)),
            Some((1, 4_000))
        );
    }

    #[test]
    fn the_anticipated_request_would_start_no_earlier_than_virtual_time() {
        // An instant device (each request costs one unit of tag): VM 0 is served three times
        // at 0 (start tags 0, 1, 2), then VM 1 once (start tag 0, finish tag 1). VM 1's next
        // request would get start tag V = 2, not 1: VM 2, which comes at 10 with start tag 2,
        // comes first (by arrival), and the device does not wait for VM 1.
        let mut queue = DiskQueue::with_anticipation(
            DiskPolicy::Wfq,
            DiskTiming::INSTANT,
            100,
            &uncapped(&[1, 1, 1]),
        )
        .unwrap();
        for vm in [0, 0, 0, 1] {
            queue.submit(0, vm, 1, false).unwrap();
        }
        assert_eq!(advance(&mut queue, 0).len(), 4);
        assert_eq!(queue.anticipating(), Some((1, 100)));
        queue.submit(10, 2, 1, false).unwrap();
        assert_eq!(advance(&mut queue, 10), [completion(2, 1, (10, 10, 10))]);
    }

    #[test]
    fn a_vm_its_cap_holds_back_is_not_anticipated() {
        // VM 0 (weight 8, 10 sectors: 1,100 cycles) capped at `cap` cycles a sector, VM 1
        // (weight 1) uncapped. At 3,200 VM 0's request (start tag 137.5) completes and VM 1's
        // (start tag 1,000) waits: VM 0 comes first (start tag 275) if its cap allows it then.
        for (cap, anticipated) in [(100, true), (200, false)] {
            let shares = [
                DiskShare {
                    weight: 8,
                    cap_cycles_per_sector: Some(cap),
                },
                DiskShare {
                    weight: 1,
                    cap_cycles_per_sector: None,
                },
            ];
            let mut queue =
                DiskQueue::with_anticipation(DiskPolicy::Wfq, TIMING, 5_000, &shares).unwrap();
            queue.submit(0, 0, 10, false).unwrap();
            queue.submit(0, 1, 0, false).unwrap();
            assert_eq!(advance(&mut queue, 1_100).len(), 1);
            queue.submit(1_200, 0, 10, false).unwrap();
            assert_eq!(advance(&mut queue, 2_100).len(), 1);
            queue.submit(2_200, 1, 0, false).unwrap();
            // VM 0's cap allows its next request at 2,100 + 10 × cap.
            assert_eq!(advance(&mut queue, 3_200).len(), 1);
            if anticipated {
                assert_eq!(queue.anticipating(), Some((0, 8_200)));
                assert_eq!(queue.in_service(), None);
            } else {
                assert_eq!(queue.anticipating(), None);
                assert_eq!(
                    queue
                        .in_service()
                        .map(|service| (service.vm, service.started)),
                    Some((1, 3_200))
                );
            }
        }
    }

    #[test]
    fn forgetting_the_anticipated_vm_ends_the_window_at_once() {
        let mut queue = vm_1_just_completed(DiskPolicy::Wfq, 5_000, 1);
        // Forgetting another VM changes nothing.
        queue.forget(3_300, 2);
        assert_eq!(queue.anticipating(), Some((1, 8_000)));
        assert_eq!(queue.in_service(), None);
        queue.forget(3_500, 1);
        assert_eq!(queue.anticipating(), None);
        assert_eq!(
            queue.in_service(),
            Some(completion(0, 0, (2_100, 3_500, 4_500)))
        );
        // Forgotten at the completion instant: never anticipated.
        let mut queue = vm_1_just_completed(DiskPolicy::Wfq, 5_000, 0);
        queue.forget(3_000, 1);
        assert_eq!(
            queue.in_service().map(|service| service.started),
            Some(3_000)
        );
        // Forgotten in service: the device finishes its request silently and does not wait for
        // it then.
        let mut queue = vm_1_just_completed(DiskPolicy::Wfq, 5_000, 0);
        queue.submit(3_200, 1, 0, false).unwrap();
        queue.forget(3_500, 1);
        assert_eq!(advance(&mut queue, 4_200), []);
        assert_eq!(queue.anticipating(), None);
        assert_eq!(
            queue.in_service(),
            Some(completion(0, 0, (2_100, 4_200, 5_200)))
        );
    }

    #[test]
    fn two_vms_of_weights_1_and_4_with_think_time_need_anticipation() {
        // As measured with real guests: 100,000 cycles a request, 1 to 5,000 cycles to submit
        // again. Without a window the VMs alternate whatever their weights; with a window of
        // 10,000 cycles they get 1/5 and 4/5.
        let timing = DiskTiming {
            latency: 100_000,
            cycles_per_sector: 0,
        };
        for (window, expected) in [(0, [0.5, 0.5]), (10_000, [0.2, 0.8])] {
            let queue =
                DiskQueue::with_anticipation(DiskPolicy::Wfq, timing, window, &uncapped(&[1, 4]))
                    .unwrap();
            let mut thinker = Thinker::new(14);
            let done = thinking(queue, &[8, 8], |_| Some(thinker.next(5_000)), 100_000_000);
            let shares = sector_shares(&done, 2);
            for vm in 0..2 {
                assert!(
                    near(shares[vm], expected[vm], 0.01),
                    "window {window}: {shares:?}"
                );
            }
        }
    }

    /// One call of a script, at the time its step gives.
    #[derive(Clone, Copy, Debug)]
    enum Action {
        Submit { vm: VmId, sectors: u32, write: bool },
        Forget(VmId),
    }

    /// An action `gap` cycles after the one before.
    #[derive(Clone, Copy, Debug)]
    struct Step {
        gap: Cycles,
        action: Action,
    }

    /// What a driver saw, in order.
    #[derive(Clone, Debug, PartialEq, Eq)]
    enum Seen {
        Submitted {
            vm: VmId,
            sectors: u32,
            write: bool,
            at: Cycles,
        },
        Refused(DiskQueueError),
        /// `silent`: its request in service, which the device finishes without reporting it.
        Forgot {
            vm: VmId,
            at: Cycles,
            silent: Option<DiskCompletion>,
        },
        Completed(DiskCompletion),
    }

    fn submit(queue: &mut DiskQueue, seen: &mut Vec<Seen>, at: Cycles, action: Action) {
        match action {
            Action::Submit { vm, sectors, write } => {
                seen.push(match queue.submit(at, vm, sectors, write) {
                    Ok(()) => Seen::Submitted {
                        vm,
                        sectors,
                        write,
                        at,
                    },
                    Err(error) => Seen::Refused(error),
                });
            }
            Action::Forget(vm) => {
                // Its request in service (not one it was forgotten with before), as the device
                // will finish it, if it started before this instant.
                let silent = queue
                    .in_service
                    .filter(|service| service.vm == vm && !service.forgotten)
                    .map(|service| service.completion())
                    .filter(|service| service.started < at.max(queue.now()));
                queue.forget(at, vm);
                seen.push(Seen::Forgot { vm, at, silent });
            }
        }
    }

    /// Runs `script` calling `advance` at every event, as a caller that is always on time.
    fn on_time(queue: &mut DiskQueue, script: &[Step]) -> Vec<Seen> {
        on_time_watched(queue, script).0
    }

    /// As [`on_time`], with what the caller saw in service (`in_service`) at each time it
    /// called, after the call.
    fn on_time_watched(
        queue: &mut DiskQueue,
        script: &[Step],
    ) -> (Vec<Seen>, Vec<(Cycles, Option<DiskCompletion>)>) {
        let mut seen = Vec::new();
        let mut watched = Vec::new();
        let mut now: Cycles = 0;
        for step in script {
            now = now.saturating_add(step.gap);
            while let Some(event) = queue.next_event().filter(|&event| event <= now) {
                seen.extend(queue.advance(event).map(Seen::Completed));
                watched.push((event, queue.in_service()));
            }
            seen.extend(queue.advance(now).map(Seen::Completed));
            submit(queue, &mut seen, now, step.action);
            watched.push((now, queue.in_service()));
        }
        while let Some(event) = queue.next_event() {
            seen.extend(queue.advance(event).map(Seen::Completed));
            watched.push((event, queue.in_service()));
        }
        (seen, watched)
    }

    /// Runs `script` calling `advance` only before the steps `calls` says, and once at the end.
    fn late(queue: &mut DiskQueue, script: &[Step], calls: &[bool]) -> Vec<Seen> {
        let mut seen = Vec::new();
        let mut now: Cycles = 0;
        for (step, &call) in script
            .iter()
            .zip(calls.iter().chain([false].iter().cycle()))
        {
            now = now.saturating_add(step.gap);
            if call {
                seen.extend(queue.advance(now).map(Seen::Completed));
            }
            submit(queue, &mut seen, now, step.action);
        }
        seen.extend(queue.advance(Cycles::MAX).map(Seen::Completed));
        seen
    }

    /// Only the completions, in order.
    fn completions(seen: &[Seen]) -> Vec<DiskCompletion> {
        seen.iter()
            .filter_map(|seen| match seen {
                Seen::Completed(completion) => Some(*completion),
                _ => None,
            })
            .collect()
    }

    fn timing() -> impl Strategy<Value = DiskTiming> {
        prop_oneof![
            1 => Just(DiskTiming::INSTANT),
            6 => (0u64..=5_000, 0u64..=100).prop_map(|(latency, cycles_per_sector)| DiskTiming {
                latency,
                cycles_per_sector,
            }),
            1 => (any::<u64>(), any::<u64>(), 0u32..64).prop_map(|(latency, rate, shift)| {
                DiskTiming {
                    latency: latency >> shift,
                    cycles_per_sector: rate >> shift,
                }
            }),
        ]
    }

    fn share(capped: bool) -> impl Strategy<Value = DiskShare> {
        let cap = if capped {
            prop_oneof![
                2 => Just(None),
                2 => (1u64..=500).prop_map(Some),
                1 => (1u64..=Cycles::MAX).prop_map(Some),
            ]
            .boxed()
        } else {
            Just(None).boxed()
        };
        (1..=MAX_DISK_WEIGHT, cap).prop_map(|(weight, cap_cycles_per_sector)| DiskShare {
            weight,
            cap_cycles_per_sector,
        })
    }

    /// A script for `n` VMs: ids past the end exercise the unknown-id path; `forgets` adds
    /// `forget` calls.
    fn script(n: VmId, forgets: bool) -> impl Strategy<Value = Vec<Step>> {
        let gap = prop_oneof![
            3 => Just(0u64),
            6 => 0u64..=3_000,
            2 => 0u64..=300_000,
            1 => any::<u64>().prop_map(|gap| gap >> 2),
        ];
        let sectors = prop_oneof![4 => 0u32..=16, 2 => 0u32..=256, 1 => Just(u32::MAX)];
        let submit = (0..=n, sectors, any::<bool>())
            .prop_map(|(vm, sectors, write)| Action::Submit { vm, sectors, write });
        let action = if forgets {
            prop_oneof![8 => submit, 1 => (0..=n).prop_map(Action::Forget)].boxed()
        } else {
            submit.boxed()
        };
        prop::collection::vec(
            (gap, action).prop_map(|(gap, action)| Step { gap, action }),
            0..150,
        )
    }

    /// An anticipation window: none (a third of the time), short or long next to the scripts'
    /// gaps, or any size.
    fn window() -> impl Strategy<Value = Cycles> {
        prop_oneof![
            3 => Just(0u64),
            3 => 1u64..=5_000,
            2 => 1u64..=300_000,
            1 => (any::<u64>(), 0u32..64).prop_map(|(window, shift)| (window >> shift).max(1)),
        ]
    }

    /// A queue with 1 to 6 VMs (capped or not), an anticipation window or none, and a script
    /// for them.
    fn scenario(capped: bool, forgets: bool) -> impl Strategy<Value = (DiskQueue, Vec<Step>)> {
        (
            prop_oneof![Just(DiskPolicy::Fifo), Just(DiskPolicy::Wfq)],
            timing(),
            window(),
            prop::collection::vec(share(capped), 1..=6),
        )
            .prop_flat_map(move |(policy, timing, window, shares)| {
                let queue = DiskQueue::with_anticipation(policy, timing, window, &shares).unwrap();
                (Just(queue), script(shares.len() as VmId, forgets))
            })
    }

    /// The union of busy intervals `[started, completed)`, merged where they touch.
    fn busy_runs(mut busy: Vec<(Cycles, Cycles)>) -> Vec<(Cycles, Cycles)> {
        busy.sort_unstable();
        let mut runs: Vec<(Cycles, Cycles)> = Vec::new();
        for (start, end) in busy {
            match runs.last_mut() {
                Some(run) if run.1 >= start => run.1 = run.1.max(end),
                _ => runs.push((start, end)),
            }
        }
        runs
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// Any script (unknown ids, second submits, forgets, huge sizes, times, timings and
        /// anticipation windows): every accepted request completes exactly once unless
        /// forgotten, in order per VM, after it was submitted and after its cap allowed, with
        /// service time `latency + sectors × cycles_per_sector` exactly (saturated); a submit is
        /// refused exactly when the VM has one outstanding; the device never serves two at
        /// once, and it never idles while a request its cap allows waits, but to anticipate:
        /// under WFQ with a window, right after a (reported) completion of VM X, until the
        /// window ends, X submits again or X is forgotten, whichever is first.
        #[test]
        fn every_request_completes_once_on_a_work_conserving_device(
            (queue, script) in scenario(true, true),
        ) {
            let mut queue = queue;
            let timing = queue.timing();
            let shares: Vec<DiskShare> =
                (0..queue.vm_count()).map(|vm| queue.share(vm as VmId).unwrap()).collect();
            let window = match queue.policy() {
                DiskPolicy::Fifo => 0,
                DiskPolicy::Wfq => queue.anticipation(),
            };
            let (seen, watched) = on_time_watched(&mut queue, &script);
            // Per VM: its outstanding request (sectors, write, submitted, cap allows from), and
            // its latest request's start and sectors.
            let mut pending: Vec<Option<(u32, bool, Cycles, Cycles)>> = vec![None; shares.len()];
            let mut latest: Vec<Option<(Cycles, u32)>> = vec![None; shares.len()];
            let allowed = |latest: Option<(Cycles, u32)>, share: &DiskShare, at: Cycles| {
                match (latest, share.cap_cycles_per_sector) {
                    (Some((start, sectors)), Some(cap)) => {
                        at.max(start.saturating_add(cap.saturating_mul(Cycles::from(sectors))))
                    }
                    _ => at,
                }
            };
            // The device's busy spells `[started, completed)`, each with its VM and the place of
            // its completion in `seen` if the completion was reported (a forgotten VM's is not
            // anticipated).
            let mut busy = Vec::new();
            // Spells during which a request its cap allowed was waiting.
            let mut waits = Vec::new();
            // The calls (accepted submits and forgets) that end a VM's anticipation: VM, time,
            // place in `seen`.
            let mut back: Vec<(VmId, Cycles, usize)> = Vec::new();
            for (place, event) in seen.iter().enumerate() {
                match *event {
                    Seen::Submitted { vm, sectors, write, at } => {
                        let index = usize::from(vm);
                        prop_assert!(pending[index].is_none(), "vm {} has two outstanding", vm);
                        let from = allowed(latest[index], &shares[index], at);
                        pending[index] = Some((sectors, write, at, from));
                        back.push((vm, at, place));
                    }
                    Seen::Refused(DiskQueueError::UnknownVm { vm }) => {
                        prop_assert!(usize::from(vm) >= shares.len());
                    }
                    Seen::Refused(DiskQueueError::Outstanding { vm }) => {
                        prop_assert!(pending[usize::from(vm)].is_some());
                    }
                    Seen::Forgot { vm, at, silent } => {
                        back.push((vm, at, place));
                        let Some(slot) = pending.get_mut(usize::from(vm)) else { continue };
                        if let Some((_, _, _, from)) = slot.take() {
                            match silent {
                                Some(service) => {
                                    busy.push((service.started, service.completed, None));
                                    waits.push((from, service.started));
                                    latest[usize::from(vm)] =
                                        Some((service.started, service.sectors));
                                }
                                None => waits.push((from, at)),
                            }
                        } else {
                            prop_assert!(silent.is_none());
                        }
                    }
                    Seen::Completed(done) => {
                        let index = usize::from(done.vm);
                        let Some((sectors, write, submitted, from)) = pending[index].take() else {
                            return Err(TestCaseError::fail(format!("{done:?} was not pending")));
                        };
                        prop_assert_eq!((done.sectors, done.write), (sectors, write));
                        prop_assert_eq!(done.submitted, submitted);
                        prop_assert!(done.started >= from, "{:?} started before {}", done, from);
                        prop_assert_eq!(
                            done.completed,
                            done.started.saturating_add(timing.service(sectors))
                        );
                        busy.push((done.started, done.completed, Some((done.vm, place))));
                        waits.push((from, done.started));
                        latest[index] = Some((done.started, sectors));
                    }
                }
            }
            prop_assert!(pending.iter().all(Option::is_none), "left over: {:?}", pending);
            prop_assert_eq!(queue.queued(), 0);
            // What the caller saw held: a request in service since before the call was served
            // so, and an idle device was idle (nothing starts in the past).
            for &(at, service) in &watched {
                match service {
                    Some(service) if service.started < at => prop_assert!(
                        busy.iter().any(|&(started, completed, _)| {
                            (started, completed) == (service.started, service.completed)
                        }),
                        "{:?} seen in service at {} was not served so", service, at
                    ),
                    Some(_) => {}
                    None => prop_assert!(
                        !busy.iter().any(|&(started, completed, _)| started < at && at < completed),
                        "the device was seen idle at {}, in {:?}", at, busy
                    ),
                }
            }
            let mut sorted = busy.clone();
            sorted.sort_unstable();
            for pair in sorted.windows(2) {
                prop_assert!(pair[1].0 >= pair[0].1, "served at once: {:?}", pair);
            }
            // How long from `end` on the device may idle while requests wait: not at all, but
            // when it anticipates the VM whose request completed at `end`, until its next call.
            let idle_until = |end: Cycles| -> Cycles {
                busy.iter()
                    .filter_map(|&(_, completed, done)| done.filter(|_| completed == end))
                    .map(|(vm, done)| {
                        let back = back
                            .iter()
                            .filter(|&&(other, _, place)| other == vm && place > done)
                            .map(|&(_, at, _)| at)
                            .min()
                            .unwrap_or(Cycles::MAX);
                        end.saturating_add(window).min(back)
                    })
                    .max()
                    .unwrap_or(end)
            };
            let runs = busy_runs(busy.iter().map(|&(start, end, _)| (start, end)).collect());
            // The idle spells `[from, to)` and until when each may hold a waiting request.
            let mut idle = Vec::new();
            let mut from = 0;
            let mut until = 0;
            for &(start, end) in &runs {
                idle.push((from, start, until));
                (from, until) = (end, idle_until(end));
            }
            idle.push((from, Cycles::MAX, until));
            for &(wait_from, wait_to) in waits.iter().filter(|(from, to)| from < to) {
                for &(from, to, until) in &idle {
                    let (from, to) = (from.max(wait_from), to.min(wait_to));
                    prop_assert!(
                        from >= to || to <= until,
                        "idle while a request waited in [{}, {}), anticipating until {}",
                        from, to, until
                    );
                }
            }
        }

        /// Without caps, FIFO serves in the order of submission, whatever the timing.
        #[test]
        fn fifo_serves_in_arrival_order(
            (queue, script) in scenario(false, false),
        ) {
            let mut queue = queue;
            queue.policy = DiskPolicy::Fifo;
            let seen = on_time(&mut queue, &script);
            let submitted: Vec<(VmId, Cycles)> = seen
                .iter()
                .filter_map(|seen| match *seen {
                    Seen::Submitted { vm, at, .. } => Some((vm, at)),
                    _ => None,
                })
                .collect();
            let served: Vec<(VmId, Cycles)> = completions(&seen)
                .iter()
                .map(|done| (done.vm, done.submitted))
                .collect();
            prop_assert_eq!(served, submitted);
        }

        /// A caller that calls `advance` late (or never, before the end) gets the same
        /// completions, times, waits and refusals as one that calls at every event.
        #[test]
        fn late_advance_calls_change_nothing(
            (queue, script) in scenario(true, true),
            calls in prop::collection::vec(any::<bool>(), 0..150),
        ) {
            let mut punctual = queue.clone();
            let mut tardy = queue;
            let expected = on_time(&mut punctual, &script);
            let got = late(&mut tardy, &script, &calls);
            let decisions = |seen: &[Seen]| -> Vec<Seen> {
                seen.iter()
                    .filter(|seen| !matches!(seen, Seen::Completed(_)))
                    .map(|seen| match *seen {
                        // What the on-time driver saw in service is beside the point here.
                        Seen::Forgot { vm, at, .. } => Seen::Forgot { vm, at, silent: None },
                        ref other => other.clone(),
                    })
                    .collect()
            };
            prop_assert_eq!(completions(&got), completions(&expected));
            prop_assert_eq!(decisions(&got), decisions(&expected));
            prop_assert_eq!(tardy.refused_submits(), punctual.refused_submits());
        }
    }

    /// Always-backlogged VMs: each submits a request of `sectors[vm]` at 0 and again the moment
    /// each completes, until `horizon`. Returns every completion by then.
    fn backlogged(
        policy: DiskPolicy,
        timing: DiskTiming,
        shares: &[DiskShare],
        sectors: &[u32],
        horizon: Cycles,
    ) -> Vec<DiskCompletion> {
        let queue = DiskQueue::new(policy, timing, shares).unwrap();
        backlogged_on(queue, sectors, horizon)
    }

    /// As [`backlogged`], on `queue`.
    fn backlogged_on(
        mut queue: DiskQueue,
        sectors: &[u32],
        horizon: Cycles,
    ) -> Vec<DiskCompletion> {
        for (vm, &size) in sectors.iter().enumerate() {
            queue.submit(0, vm as VmId, size, false).unwrap();
        }
        let mut done = Vec::new();
        while let Some(event) = queue.next_event().filter(|&event| event <= horizon) {
            let completed: Vec<DiskCompletion> = queue.advance(event).collect();
            for completion in completed {
                let vm = completion.vm;
                queue
                    .submit(event, vm, sectors[usize::from(vm)], false)
                    .unwrap();
                done.push(completion);
            }
        }
        assert_eq!(queue.refused_submits(), 0);
        done
    }

    /// VMs that each submit a request of `sectors[vm]` at 0 and, after each completion, again
    /// `think(vm)` cycles later (`None`: never again), until `horizon`: guests that take time to
    /// issue their next command. Returns every completion by then.
    fn thinking(
        mut queue: DiskQueue,
        sectors: &[u32],
        mut think: impl FnMut(VmId) -> Option<Cycles>,
        horizon: Cycles,
    ) -> Vec<DiskCompletion> {
        let mut due: Vec<Option<Cycles>> = vec![Some(0); sectors.len()];
        let mut done = Vec::new();
        loop {
            let submit = due.iter().flatten().copied().min();
            let Some(now) = [queue.next_event(), submit].into_iter().flatten().min() else {
                break;
            };
            if now > horizon {
                break;
            }
            let completed: Vec<DiskCompletion> = queue.advance(now).collect();
            for completion in completed {
                let vm = completion.vm;
                assert_eq!(completion.completed, now, "the driver is on time");
                due[usize::from(vm)] = think(vm).map(|think| now.saturating_add(think));
                done.push(completion);
            }
            for (vm, at) in due.iter_mut().enumerate() {
                if *at == Some(now) {
                    queue.submit(now, vm as VmId, sectors[vm], false).unwrap();
                    *at = None;
                }
            }
        }
        assert_eq!(queue.refused_submits(), 0);
        done
    }

    /// Think times in `1..=most`, from a small deterministic generator (xorshift64*).
    struct Thinker(u64);

    impl Thinker {
        fn new(seed: u64) -> Self {
            Self(seed | 1)
        }

        fn next(&mut self, most: Cycles) -> Cycles {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            1 + self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % most.max(1)
        }
    }

    /// The device's idle spells while a request waited, from `done` in completion order: each
    /// as the completion it followed (`None`: none before it), the request that started at its
    /// end, and its length.
    fn idle_waits(
        done: &[DiskCompletion],
    ) -> Vec<(Option<DiskCompletion>, DiskCompletion, Cycles)> {
        // The earliest submission among the requests started from each place on.
        let mut first_submitted = vec![Cycles::MAX; done.len() + 1];
        for (place, completion) in done.iter().enumerate().rev() {
            first_submitted[place] = first_submitted[place + 1].min(completion.submitted);
        }
        (0..done.len())
            .filter_map(|place| {
                let previous = place.checked_sub(1).map(|before| done[before]);
                let free = previous.map_or(0, |previous| previous.completed);
                let started = done[place].started;
                let waited = started.saturating_sub(free.max(first_submitted[place]));
                (waited > 0).then_some((previous, done[place], waited))
            })
            .collect()
    }

    /// Per VM, the sectors and the device time of `done`.
    fn totals(done: &[DiskCompletion], n: usize) -> (Vec<u64>, Vec<u64>) {
        let mut sectors = vec![0u64; n];
        let mut time = vec![0u64; n];
        for completion in done {
            sectors[usize::from(completion.vm)] += u64::from(completion.sectors);
            time[usize::from(completion.vm)] += completion.service();
        }
        (sectors, time)
    }

    /// A device that takes at least a cycle per request (an instant device is never contended).
    fn slow_timing() -> impl Strategy<Value = DiskTiming> {
        (0u64..=20_000, 1u64..=2_000).prop_map(|(latency, cycles_per_sector)| DiskTiming {
            latency,
            cycles_per_sector,
        })
    }

    /// `got` is within `tolerance` (a fraction of it) of `expected`.
    fn near(got: f64, expected: f64, tolerance: f64) -> bool {
        (got - expected).abs() <= tolerance * expected
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Four always-backlogged VMs of weights 1:2:4:8 with equal requests get 1/15, 2/15,
        /// 4/15 and 8/15 of the sectors within 5 % over 3,000 requests' time, whatever the
        /// timing and the order they first come in.
        #[test]
        fn wfq_shares_follow_weights_1_2_4_8(
            timing in slow_timing(),
            size in 1u32..=256,
            order in Just(vec![0usize, 1, 2, 3]).prop_shuffle(),
        ) {
            let weights: Vec<u32> = order.iter().map(|&index| [1, 2, 4, 8][index]).collect();
            let horizon = 3_000 * timing.service(size);
            let done = backlogged(DiskPolicy::Wfq, timing, &uncapped(&weights), &[size; 4], horizon);
            let (sectors, _) = totals(&done, 4);
            let total: u64 = sectors.iter().sum();
            for (vm, &weight) in weights.iter().enumerate() {
                let share = sectors[vm] as f64 / total as f64;
                prop_assert!(
                    near(share, f64::from(weight) / 15.0, 0.05),
                    "vm {} (weight {}) got {} of {} sectors", vm, weight, sectors[vm], total
                );
            }
        }

        /// Always-backlogged VMs of equal weight with equal requests get equal sectors within
        /// 1 %.
        #[test]
        fn wfq_equal_weights_share_within_one_percent(
            timing in slow_timing(),
            size in 1u32..=256,
            n in 2usize..=6,
            weight in 1..=MAX_DISK_WEIGHT,
        ) {
            let horizon = 500 * n as u64 * timing.service(size);
            let done = backlogged(
                DiskPolicy::Wfq, timing, &uncapped(&vec![weight; n]), &vec![size; n], horizon,
            );
            let (sectors, _) = totals(&done, n);
            let total: u64 = sectors.iter().sum();
            for (vm, &got) in sectors.iter().enumerate() {
                prop_assert!(
                    near(got as f64, total as f64 / n as f64, 0.01),
                    "vm {} got {} of {} sectors", vm, got, total
                );
            }
        }

        /// With requests of different sizes, WFQ shares the device *time* by weight (within
        /// 5 %): a VM does not get more of the device by asking for more per request.
        #[test]
        fn wfq_shares_device_time_whatever_the_request_sizes(
            timing in slow_timing(),
            vms in prop::collection::vec((1u32..=4, 16u32..=256), 2..=4),
        ) {
            let weights: Vec<u32> = vms.iter().map(|&(weight, _)| weight).collect();
            let sizes: Vec<u32> = vms.iter().map(|&(_, size)| size).collect();
            let total_weight: u32 = weights.iter().sum();
            let lightest = *weights.iter().min().unwrap();
            let longest = sizes.iter().map(|&size| timing.service(size)).max().unwrap();
            let horizon = 300 * longest * u64::from(total_weight / lightest);
            let done = backlogged(DiskPolicy::Wfq, timing, &uncapped(&weights), &sizes, horizon);
            let (_, time) = totals(&done, vms.len());
            let total: u64 = time.iter().sum();
            for (vm, &weight) in weights.iter().enumerate() {
                let expected = total as f64 * f64::from(weight) / f64::from(total_weight);
                prop_assert!(
                    near(time[vm] as f64, expected, 0.05),
                    "vm {} (weight {} of {}) got {} of {} cycles", vm, weight, total_weight,
                    time[vm], total
                );
            }
        }

        /// A capped VM beside an uncapped one, both always backlogged: over any window the
        /// capped VM starts no more sectors than the window at its rate allows, plus one
        /// request; the device never idles, so the uncapped VM gets all the rest; under FIFO
        /// the capped VM waits for its rate plus at most one of the other's requests.
        #[test]
        fn a_capped_vm_keeps_its_rate_and_the_other_gets_the_rest(
            policy in prop_oneof![Just(DiskPolicy::Fifo), Just(DiskPolicy::Wfq)],
            timing in slow_timing(),
            cap in 1u64..=20_000,
            (capped_size, other_size) in (1u32..=256, 1u32..=256),
            (capped_weight, other_weight) in (1..=MAX_DISK_WEIGHT, 1..=MAX_DISK_WEIGHT),
        ) {
            let shares = [
                DiskShare { weight: capped_weight, cap_cycles_per_sector: Some(cap) },
                DiskShare { weight: other_weight, cap_cycles_per_sector: None },
            ];
            let sizes = [capped_size, other_size];
            let (capped_service, other_service) =
                (timing.service(capped_size), timing.service(other_size));
            let period = (cap * u64::from(capped_size)).max(capped_service) + other_service;
            let done = backlogged(policy, timing, &shares, &sizes, 200 * period);
            let starts: Vec<(Cycles, u64)> = done
                .iter()
                .filter(|done| done.vm == 0)
                .map(|done| (done.started, u64::from(done.sectors)))
                .collect();
            for (i, &(first, _)) in starts.iter().enumerate() {
                let mut sectors = 0;
                for &(start, size) in &starts[i..] {
                    // Sectors started in [first, start], less the last request.
                    prop_assert!(
                        sectors * cap <= start - first,
                        "{} sectors started in [{}, {}] at {} cycles per sector",
                        sectors + size, first, start, cap
                    );
                    sectors += size;
                }
            }
            for pair in done.windows(2) {
                prop_assert_eq!(pair[1].started, pair[0].completed, "the device idled");
            }
            if policy == DiskPolicy::Fifo {
                for pair in starts.windows(2) {
                    prop_assert!(pair[1].0 - pair[0].0 <= period, "{:?}", pair);
                }
            }
            // Under FIFO the bound on its waits gives it at least one request per period.
            let least = if policy == DiskPolicy::Fifo { 100 } else { 1 };
            prop_assert!(starts.len() >= least, "the capped VM started {} requests", starts.len());
        }
    }

    /// A device much slower than the guests' think times (up to `window / 2`, with `window` up
    /// to 20,000 cycles): at least 10 windows a request.
    fn slow_timing_and_window() -> impl Strategy<Value = (DiskTiming, Cycles)> {
        (2u64..=20_000, 10u64..=100, 0u64..=200).prop_map(|(window, latency, cycles_per_sector)| {
            let timing = DiskTiming {
                latency: latency * window,
                cycles_per_sector,
            };
            (timing, window)
        })
    }

    /// Per VM, its share of all the sectors in `done`.
    fn sector_shares(done: &[DiskCompletion], n: usize) -> Vec<f64> {
        let (sectors, _) = totals(done, n);
        let total: u64 = sectors.iter().sum();
        sectors
            .iter()
            .map(|&got| got as f64 / total as f64)
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Why anticipation exists. Four VMs of weights 1:2:4:8 whose guests take 1 to
        /// `window / 2` cycles after each completion to submit again, on a work-conserving
        /// device (no window): at every completion of a VM another VM's request waits and
        /// starts, so a VM gets at most one request in two and the heaviest at most half the
        /// sectors, out of 5 % of its 8/15.
        #[test]
        fn without_anticipation_think_time_caps_a_vm_at_half_the_device(
            (timing, window) in slow_timing_and_window(),
            size in 1u32..=256,
            order in Just(vec![0usize, 1, 2, 3]).prop_shuffle(),
            seed in any::<u64>(),
        ) {
            let weights: Vec<u32> = order.iter().map(|&index| [1, 2, 4, 8][index]).collect();
            let queue = DiskQueue::new(DiskPolicy::Wfq, timing, &uncapped(&weights)).unwrap();
            let mut thinker = Thinker::new(seed);
            let horizon = 3_000 * timing.service(size);
            let done = thinking(queue, &[size; 4], |_| Some(thinker.next(window / 2)), horizon);
            let heaviest = order.iter().position(|&index| index == 3).unwrap();
            let share = sector_shares(&done, 4)[heaviest];
            prop_assert!(share <= 0.505, "the heaviest VM got {} of the sectors", share);
            prop_assert!(!near(share, 8.0 / 15.0, 0.05));
            for pair in done.windows(2).filter(|pair| pair[0].vm == heaviest as VmId) {
                prop_assert!(pair[1].vm != pair[0].vm, "served twice in a row: {:?}", pair);
            }
        }

        /// The same VMs with an anticipation window longer than their think time get 1/15,
        /// 2/15, 4/15 and 8/15 of the sectors within 5 %, and the device idles only for them
        /// to think: at most `window / 2` after a completion.
        #[test]
        fn anticipation_restores_weights_1_2_4_8_with_think_time(
            (timing, window) in slow_timing_and_window(),
            size in 1u32..=256,
            order in Just(vec![0usize, 1, 2, 3]).prop_shuffle(),
            seed in any::<u64>(),
        ) {
            let weights: Vec<u32> = order.iter().map(|&index| [1, 2, 4, 8][index]).collect();
            let queue =
                DiskQueue::with_anticipation(DiskPolicy::Wfq, timing, window, &uncapped(&weights))
                    .unwrap();
            let mut thinker = Thinker::new(seed);
            let horizon = 3_000 * timing.service(size);
            let done = thinking(queue, &[size; 4], |_| Some(thinker.next(window / 2)), horizon);
            let shares = sector_shares(&done, 4);
            for (vm, &weight) in weights.iter().enumerate() {
                prop_assert!(
                    near(shares[vm], f64::from(weight) / 15.0, 0.05),
                    "vm {} (weight {}) got {} of the sectors", vm, weight, shares[vm]
                );
            }
            // Only for the VM that comes first, and not in vain.
            for (after, next, idle) in idle_waits(&done) {
                prop_assert!(
                    after.is_some_and(|after| after.vm == next.vm) && idle <= window / 2,
                    "idled {} after {:?}, then served {:?}", idle, after, next
                );
            }
        }

        /// VMs of equal weight with think time and a window get equal sectors within 1 %.
        #[test]
        fn anticipation_keeps_equal_weights_within_one_percent_with_think_time(
            (timing, window) in slow_timing_and_window(),
            size in 1u32..=256,
            n in 2usize..=6,
            weight in 1..=MAX_DISK_WEIGHT,
            seed in any::<u64>(),
        ) {
            let shares = uncapped(&vec![weight; n]);
            let queue =
                DiskQueue::with_anticipation(DiskPolicy::Wfq, timing, window, &shares).unwrap();
            let mut thinker = Thinker::new(seed);
            let horizon = 500 * n as u64 * timing.service(size);
            let done = thinking(queue, &vec![size; n], |_| Some(thinker.next(window / 2)), horizon);
            let shares = sector_shares(&done, n);
            for (vm, &share) in shares.iter().enumerate() {
                prop_assert!(
                    near(share, 1.0 / n as f64, 0.01),
                    "vm {} got {} of the sectors", vm, share
                );
            }
            for (after, next, idle) in idle_waits(&done) {
                prop_assert!(
                    after.is_some_and(|after| after.vm == next.vm) && idle <= window / 2,
                    "idled {} after {:?}, then served {:?}", idle, after, next
                );
            }
        }

        /// One VM pauses longer than the window after each of its requests, then stops
        /// submitting: each of its completions costs the others at most one window of idle
        /// device, and the thinking VMs' at most their think time.
        #[test]
        fn a_vm_that_stops_submitting_costs_at_most_a_window_per_completion(
            (timing, window) in slow_timing_and_window(),
            weights in prop::collection::vec(1u32..=8, 2..=4),
            stopper in any::<prop::sample::Index>(),
            requests in 1u32..=30,
            seed in any::<u64>(),
        ) {
            let n = weights.len();
            let stopper = stopper.index(n) as VmId;
            let queue =
                DiskQueue::with_anticipation(DiskPolicy::Wfq, timing, window, &uncapped(&weights))
                    .unwrap();
            let mut thinker = Thinker::new(seed);
            let mut left = requests;
            let think = |vm: VmId| {
                if vm != stopper {
                    return Some(thinker.next(window / 2));
                }
                left -= 1;
                // A pause in (window, 4 × window].
                (left > 0).then(|| window + thinker.next(3 * window))
            };
            let horizon = 1_000 * n as u64 * timing.service(128);
            let done = thinking(queue, &vec![128; n], think, horizon);
            let stopped = done.iter().filter(|done| done.vm == stopper).count() as u64;
            prop_assert!(
                stopped >= u64::from(requests.min(2)),
                "vm {} completed {}", stopper, stopped
            );
            let mut lost = 0;
            for (after, next, idle) in idle_waits(&done) {
                let Some(after) = after else {
                    return Err(TestCaseError::fail(format!("idled {idle} before any request")));
                };
                if after.vm == stopper {
                    prop_assert!(idle <= window, "idled {} after {:?}", idle, after);
                    lost += idle;
                } else {
                    prop_assert!(
                        idle <= window / 2 && next.vm == after.vm,
                        "idled {} after {:?}, then served {:?}", idle, after, next
                    );
                }
            }
            prop_assert!(lost <= stopped * window, "lost {} over {} completions", lost, stopped);
            // Once it has stopped, the others have the device to themselves.
            let last = done.iter().rposition(|done| done.vm == stopper).unwrap();
            prop_assert!(done.len() - last > 50 * n, "{} requests after its last", done.len() - last);
        }

        /// VMs that submit again at the instant their request completes are always waiting
        /// when the device picks: a window changes nothing for them.
        #[test]
        fn anticipation_changes_nothing_for_vms_back_at_the_completion_instant(
            timing in slow_timing(),
            window in 1u64..=1_000_000,
            vms in prop::collection::vec((1..=MAX_DISK_WEIGHT, 1u32..=256), 1..=4),
        ) {
            let weights: Vec<u32> = vms.iter().map(|&(weight, _)| weight).collect();
            let sizes: Vec<u32> = vms.iter().map(|&(_, size)| size).collect();
            let horizon = 200 * vms.len() as u64 * timing.service(256);
            let plain = DiskQueue::new(DiskPolicy::Wfq, timing, &uncapped(&weights)).unwrap();
            let anticipating =
                DiskQueue::with_anticipation(DiskPolicy::Wfq, timing, window, &uncapped(&weights))
                    .unwrap();
            prop_assert_eq!(
                backlogged_on(anticipating, &sizes, horizon),
                backlogged_on(plain, &sizes, horizon)
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// FIFO ignores the window: any script runs as without one.
        #[test]
        fn fifo_never_anticipates(
            (queue, script) in scenario(true, true),
            window in 1u64..=Cycles::MAX,
        ) {
            let shares: Vec<DiskShare> =
                (0..queue.vm_count()).map(|vm| queue.share(vm as VmId).unwrap()).collect();
            let fifo = |window| {
                DiskQueue::with_anticipation(DiskPolicy::Fifo, queue.timing(), window, &shares)
                    .unwrap()
            };
            let (mut plain, mut anticipating) = (fifo(0), fifo(window));
            let seen = on_time(&mut anticipating, &script);
            prop_assert_eq!(&seen, &on_time(&mut plain, &script));
            prop_assert_eq!(anticipating.anticipating(), None);
        }
    }
}
