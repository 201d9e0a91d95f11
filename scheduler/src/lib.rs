//! Carousel's scheduler: which VM runs next and for how long, and where every cycle went.
//!
//! What is here (pure logic the kernel calls at each decision point, STYLE §7):
//! - [`Policy`]: the seam between the run loop and a scheduling policy, and [`RoundRobin`], a FIFO
//!   round robin whose slice is the quantum times a per-VM weight, with an optional wake-up boost
//!   (a woken VM takes back its place in the queue instead of going to the tail).
//! - [`Accounting`]: per-VM runstates (Running, Runnable, Blocked, Stopped, after Xen's xenalyze),
//!   guest and root cycles, slice / preemption / yield / wake counts, wake-to-run latency and
//!   quantum error, summarised by [`Accounting::summary`] into a [`Summary`] that checks the
//!   conservation rule "guest + root + idle = elapsed" and computes Jain's fairness index.
//! - [`Credit`]: a credit scheduler after Xen's credit1, with per-VM weights and caps, credit
//!   refilled every accounting period, BOOST/UNDER/OVER priorities and a rate limit on boost
//!   preemptions. It keeps time from what the kernel tells it ([`Policy::advance`],
//!   [`Policy::charge`]).
//! - [`DiskQueue`]: the shared disk, one device in front of which every VM's requests queue: a
//!   timing model (latency plus cycles per sector), FIFO or weighted fair queueing
//!   ([`DiskPolicy`]), per-VM weights and throughput caps ([`DiskShare`]), an optional
//!   anticipation window for guests that think between requests, exact on the caller's clock
//!   however late the caller comes.
//! - [`LatencyHistogram`]: an allocation-free (after construction) log-linear histogram.
//! - [`Slice`]: one slice on the run's [`QuantumClock`] (wall time with the VM's root work
//!   charged to it, or guest time), and the invariant that bounds its overrun.
//!
//! What is not: the clock, the VMX-preemption timer and the conversion from cycles to timer ticks
//! (the kernel and `carousel-vmx` own those), and anything that knows why a VM blocked or woke. The
//! kernel reads the TSC and tells this crate what happened; the crate never reads time itself.
//! So the scheduling rules over a whole run (no VM overtaken twice, bounded waits, shares by
//! weight, conservation) are property-tested where they are kept, on the kernel's run loop
//! (`kernel/src/machine/properties.rs`); the tests here hold the policy and the accounting to
//! their own contracts.
//!
//! Cost: the kernel calls in on every VM exit and every switch, so those calls are O(1), never
//! allocate and never panic, whatever a guest makes the kernel report. All memory is allocated at
//! construction; only [`Accounting::summary`] allocates, once per report. Calls that do not fit
//! a VM's state are ignored and counted, never trusted.
//!
//! Time is in TSC cycles ([`Cycles`]); VMs are indices `0..n` ([`VmId`]).
//!
//! One turn of the kernel's run loop, with the clock and the guest faked:
//!
//! ```
//! use carousel_scheduler::{Accounting, Policy, RoundRobin, SliceEnd};
//!
//! let mut policy = RoundRobin::new(10_000, &[1, 2]).unwrap();
//! let mut accounting = Accounting::new(2, 0);
//! let (vm, slice) = policy.pick_next().unwrap();
//! assert_eq!((vm, slice), (0, 10_000));
//! accounting.root(None, 500); // the switch
//! accounting.switch_in(vm, 500);
//! accounting.guest(vm, 10_032); // the preemption timer fired one tick late
//! accounting.root(Some(vm), 200); // handling the preemption-timer exit
//! accounting.switch_out(vm, 10_732, SliceEnd::Preempted);
//! accounting.slice_quantum(vm, slice, 10_032);
//! policy.slice_expired(vm);
//!
//! let summary = accounting.summary(10_732);
//! assert_eq!(summary.conservation_error(), 0);
//! assert_eq!(summary.vms[0].quantum_error.unwrap().median_ppm, 3_200);
//! assert_eq!(policy.pick_next(), Some((1, 20_000)));
//! ```
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod accounting;
pub mod credit;
pub mod disk;
pub mod histogram;
pub mod round_robin;
pub mod slice;

pub use accounting::{
    jain_index, Accounting, LatencyStats, QuantumErrorStats, Runstate, RunstateTimes, SliceEnd,
    Summary, VmSummary,
};
pub use credit::{Credit, CreditTiming, CreditVm, Priority};
pub use disk::{
    DiskCompletion, DiskConfigError, DiskPolicy, DiskQueue, DiskQueueError, DiskShare, DiskTiming,
    MAX_DISK_WEIGHT,
};
pub use histogram::LatencyHistogram;
pub use round_robin::{ConfigError, QueueState, RoundRobin};
pub use slice::{QuantumClock, Slice};

/// A duration or an instant in TSC cycles.
pub type Cycles = u64;

/// A VM's index in the run's configuration, `0..n`.
pub type VmId = u16;

/// A scheduling policy: owns the run queue, decides who runs next and for how long.
///
/// The kernel calls [`pick_next`](Self::pick_next), runs the VM it names for (at most) the slice it
/// returns, then reports how the slice ended with exactly one of
/// [`slice_expired`](Self::slice_expired), [`yielded`](Self::yielded),
/// [`blocked`](Self::blocked) or [`finished`](Self::finished). Implementations must not panic on
/// calls that do not fit a VM's state (the kernel forwards what guests do): they ignore them.
pub trait Policy {
    /// The VM to run next and the length of its slice in cycles, removed from the run queue;
    /// None when no VM is runnable.
    fn pick_next(&mut self) -> Option<(VmId, Cycles)>;
    /// The running VM used its whole slice: back to the run queue.
    fn slice_expired(&mut self, vm: VmId);
    /// The running VM gave up the CPU but is still runnable (a voluntary yield).
    fn yielded(&mut self, vm: VmId);
    /// The running VM blocked (e.g. HLT with nothing pending): not runnable until woken.
    fn blocked(&mut self, vm: VmId);
    /// A blocked VM became runnable.
    fn woken(&mut self, vm: VmId);
    /// The VM left the run for good (from any state).
    fn finished(&mut self, vm: VmId);
    /// Short name for reports ("round-robin").
    fn name(&self) -> &'static str;

    /// The time now. The kernel calls this before [`pick_next`](Self::pick_next), before
    /// [`woken`](Self::woken) and before [`charge`](Self::charge); a policy that keeps time
    /// (credit refills) acts on it. The policy never reads a clock itself.
    fn advance(&mut self, _now: Cycles) {}
    /// The running VM consumed `cycles` of CPU in the slice that is ending (told before the call
    /// that says how it ended).
    fn charge(&mut self, _vm: VmId, _cycles: Cycles) {}
    /// When [`pick_next`](Self::pick_next) found nothing although VMs are runnable (held back by
    /// a cap): the instant the policy will have one again. The kernel idles until then (or
    /// until a VM wakes). None: nothing is held back.
    fn held_until(&self) -> Option<Cycles> {
        None
    }
    /// The instant the running VM's slice should end early for a VM that waits with a higher
    /// claim (a boosted waker, after the rate limit); None: the slice runs its length. The
    /// kernel asks after every wake.
    fn preempt_at(&self) -> Option<Cycles> {
        None
    }
    /// Calls ignored because they did not fit a VM's state (the kernel's tests expect none).
    fn ignored_calls(&self) -> u64;

    /// A new quantum, from now on: every slice [`pick_next`](Self::pick_next) hands out after
    /// this call is cut from it; a slice already handed out keeps its length. The kernel calls
    /// this between slices only. A refused value changes nothing.
    fn set_quantum(&mut self, quantum: Cycles) -> Result<(), ConfigError>;
    /// A new weight for `vm`, from now on (its next slice under round robin, the next refill's
    /// share under credit). A refused value changes nothing.
    fn set_weight(&mut self, vm: VmId, weight: u32) -> Result<(), ConfigError>;
    /// A new cap for `vm` (1 to 100 %; 0: uncapped), from now on. Only the credit policy has
    /// caps; the others refuse.
    fn set_cap(&mut self, _vm: VmId, _cap_pct: u32) -> Result<(), ConfigError> {
        Err(ConfigError::NoCaps)
    }
}
