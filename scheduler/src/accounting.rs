//! Where the cycles went: per-VM runstates and counters, after Xen's xenalyze.
//!
//! Two views of time are kept apart on purpose:
//! - Runstates come from transitions. Every VM is in exactly one [`Runstate`] at a time, so a VM's
//!   four runstate times add up to the elapsed time. `Running` covers a whole slice, including the
//!   root-mode work done for the VM during it.
//! - Guest, root and idle cycles come from the kernel's measurements ([`Accounting::guest`],
//!   [`Accounting::root`], [`Accounting::idle`]). The kernel measures every cycle exactly once, so
//!   "Σ guest + root + idle = elapsed" ([`Summary::conservation_error`] is 0) checks that it did.
//!
//! Wake-to-run latency is the time from [`Accounting::woken`] to the next
//! [`Accounting::switch_in`], recorded once per wake. Quantum error is the signed relative error of
//! the guest cycles a preempted slice got against its configured length, in parts per million.
//!
//! Calls that do not fit a VM's state (switching in a VM that is not runnable, switching out one
//! that is not running, waking one that is not blocked, stopping one twice, an unknown id) are
//! ignored and counted in [`Accounting::ignored_calls`]. An instant earlier than the last one seen
//! for that VM closes the interval as empty. Cycle sums saturate. Nothing here panics.
//!
//! Every call except [`Accounting::summary`] is O(1) and allocation-free.

use alloc::vec::Vec;

use crate::histogram::LatencyHistogram;
use crate::{Cycles, VmId};

/// Parts per million in one.
const PPM: i128 = 1_000_000;

/// A VM's scheduling state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runstate {
    /// On the CPU: a slice is in progress.
    Running,
    /// Ready to run, waiting for a turn.
    Runnable,
    /// Waiting for an event (e.g. halted with nothing pending).
    Blocked,
    /// Gone for good.
    Stopped,
}

impl Runstate {
    /// Position in [`VmAccount::runstate_time`].
    fn index(self) -> usize {
        match self {
            Self::Running => 0,
            Self::Runnable => 1,
            Self::Blocked => 2,
            Self::Stopped => 3,
        }
    }
}

/// How a slice ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SliceEnd {
    /// The preemption timer fired: the VM is still runnable.
    Preempted,
    /// The VM gave up the CPU voluntarily and is still runnable.
    Yielded,
    /// The VM gave up the CPU voluntarily and waits for an event.
    Blocked,
    /// The VM stopped for good (finished or failed).
    Stopped,
}

/// Cycles a VM spent in each runstate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunstateTimes {
    /// Cycles in [`Runstate::Running`].
    pub running: Cycles,
    /// Cycles in [`Runstate::Runnable`].
    pub runnable: Cycles,
    /// Cycles in [`Runstate::Blocked`].
    pub blocked: Cycles,
    /// Cycles in [`Runstate::Stopped`].
    pub stopped: Cycles,
}

impl RunstateTimes {
    /// The four times added up: the elapsed time when no instant went backwards.
    pub fn total(&self) -> u128 {
        u128::from(self.running)
            + u128::from(self.runnable)
            + u128::from(self.blocked)
            + u128::from(self.stopped)
    }
}

/// Percentiles of a latency distribution, in cycles (each within 1/32 above the exact value; see
/// [`LatencyHistogram`]). `Default` is all zeros, for exporters that need numbers even without
/// samples (`wake_latency.unwrap_or_default()`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LatencyStats {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: Cycles,
    /// 95th percentile.
    pub p95: Cycles,
    /// 99th percentile.
    pub p99: Cycles,
    /// Largest sample, exact.
    pub max: Cycles,
}

impl LatencyStats {
    /// The statistics of `histogram`; `None` when it is empty.
    pub fn of(histogram: &LatencyHistogram) -> Option<Self> {
        Some(Self {
            count: histogram.count(),
            p50: histogram.percentile(500)?,
            p95: histogram.percentile(950)?,
            p99: histogram.percentile(990)?,
            max: histogram.max()?,
        })
    }
}

/// Quantum error of preempted slices: `(actual − configured) / configured`, in parts per million.
/// Positive means the VM got more guest cycles than configured. `Default` is all zeros (no
/// samples).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QuantumErrorStats {
    /// Samples.
    pub count: u64,
    /// Signed (lower) median, within 1/32 of its magnitude.
    pub median_ppm: i64,
    /// Largest absolute error, exact.
    pub max_abs_ppm: u64,
}

/// One VM's accounting at the instant of the [`Summary`].
#[derive(Clone, Debug, PartialEq)]
pub struct VmSummary {
    /// Which VM.
    pub vm: VmId,
    /// Its runstate at that instant.
    pub runstate: Runstate,
    /// Cycles in each runstate, the current one closed at that instant.
    pub runstates: RunstateTimes,
    /// Cycles in guest mode (VM entry to VM exit).
    pub guest: Cycles,
    /// Root-mode cycles spent on this VM's behalf.
    pub root: Cycles,
    /// Slices started.
    pub slices: u64,
    /// Slices ended by the preemption timer.
    pub preemptions: u64,
    /// Slices ended voluntarily (yielded or blocked).
    pub yields: u64,
    /// Times woken from blocked.
    pub wakes: u64,
    /// Wake-to-run latency; `None` before the first woken VM ran.
    pub wake_latency: Option<LatencyStats>,
    /// Quantum error of preempted slices; `None` before the first sample.
    pub quantum_error: Option<QuantumErrorStats>,
}

/// The whole run's accounting at one instant.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// Cycles from [`Accounting::new`] to the instant of the summary.
    pub elapsed: Cycles,
    /// Cycles the CPU waited with no VM runnable.
    pub idle: Cycles,
    /// Guest cycles of all VMs.
    pub guest_total: Cycles,
    /// Root-mode cycles attributed to a VM, all VMs together.
    pub root_attributed: Cycles,
    /// Root-mode cycles attributed to no VM (switching, idle bookkeeping).
    pub root_unattributed: Cycles,
    /// Calls the accounting ignored because they did not fit a VM's state.
    pub ignored_calls: u64,
    /// Per VM, indexed by [`VmId`].
    pub vms: Vec<VmSummary>,
}

impl Summary {
    /// All root-mode cycles, attributed or not.
    pub fn root_total(&self) -> Cycles {
        self.root_attributed.saturating_add(self.root_unattributed)
    }

    /// `elapsed − (Σ guest + root + idle)`: 0 when the kernel accounted for every cycle exactly
    /// once; positive when cycles went unreported, negative when some were reported twice.
    pub fn conservation_error(&self) -> i128 {
        let guest: i128 = self.vms.iter().map(|vm| i128::from(vm.guest)).sum();
        let root: i128 = self.vms.iter().map(|vm| i128::from(vm.root)).sum::<i128>()
            + i128::from(self.root_unattributed);
        i128::from(self.elapsed) - (guest + root + i128::from(self.idle))
    }

    /// `vm`'s share of all guest cycles, 0.0 ..= 1.0 (0.0 when no VM has run); `None` for an
    /// unknown id.
    pub fn guest_share(&self, vm: VmId) -> Option<f64> {
        let guest = self.vms.get(usize::from(vm))?.guest;
        if self.guest_total == 0 {
            return Some(0.0);
        }
        Some(guest as f64 / self.guest_total as f64)
    }

    /// `vm`'s guest cycles as a share of the elapsed time (0.0 when no time has elapsed); `None`
    /// for an unknown id.
    pub fn cpu_share(&self, vm: VmId) -> Option<f64> {
        let guest = self.vms.get(usize::from(vm))?.guest;
        if self.elapsed == 0 {
            return Some(0.0);
        }
        Some(guest as f64 / self.elapsed as f64)
    }

    /// Jain's fairness index of the guest cycles of `vms`, each divided by its weight:
    /// `(Σx)² / (n·Σx²)`, from `1/n` (one VM got everything) to 1.0 (shares exactly in proportion
    /// to the weights). Unknown ids and zero weights are skipped.
    pub fn weighted_jain_index(&self, vms: impl IntoIterator<Item = (VmId, u32)>) -> f64 {
        let mut sum = 0.0;
        let mut sum_of_squares = 0.0;
        let mut n = 0u32;
        for (vm, weight) in vms {
            let Some(summary) = self.vms.get(usize::from(vm)) else {
                continue;
            };
            if weight == 0 {
                continue;
            }
            let x = summary.guest as f64 / f64::from(weight);
            sum += x;
            sum_of_squares += x * x;
            n += 1;
        }
        jain_from_sums(sum, sum_of_squares, n)
    }
}

/// Jain's fairness index `(Σx)² / (n·Σx²)` of `values`: 1.0 when all are equal, `1/n` when one
/// holds everything. 1.0 for no values or all zeros (nobody is treated worse than anybody else).
pub fn jain_index(values: &[f64]) -> f64 {
    let sum = values.iter().sum();
    let sum_of_squares = values.iter().map(|x| x * x).sum();
    jain_from_sums(sum, sum_of_squares, values.len() as u32)
}

/// Jain's index from `Σx`, `Σx²` and `n`.
fn jain_from_sums(sum: f64, sum_of_squares: f64, n: u32) -> f64 {
    if n == 0 || sum_of_squares == 0.0 {
        return 1.0;
    }
    sum * sum / (f64::from(n) * sum_of_squares)
}

/// One VM's running account.
#[derive(Clone, Debug)]
struct VmAccount {
    /// Current runstate.
    state: Runstate,
    /// When the current runstate began.
    since: Cycles,
    /// Closed runstate time, indexed by [`Runstate::index`].
    runstate_time: [Cycles; 4],
    /// Guest cycles.
    guest: Cycles,
    /// Root cycles on this VM's behalf.
    root: Cycles,
    /// Slices started.
    slices: u64,
    /// Slices ended by preemption.
    preemptions: u64,
    /// Slices ended voluntarily.
    yields: u64,
    /// Wakes.
    wakes: u64,
    /// When the VM was last woken, until it runs.
    woken_at: Option<Cycles>,
    /// Wake-to-run latency.
    wake_latency: LatencyHistogram,
    /// Magnitudes of negative quantum errors (the slice came up short), ppm.
    quantum_short_ppm: LatencyHistogram,
    /// Non-negative quantum errors (the slice ran long or exact), ppm.
    quantum_long_ppm: LatencyHistogram,
}

impl VmAccount {
    fn new(now: Cycles) -> Self {
        Self {
            state: Runstate::Runnable,
            since: now,
            runstate_time: [0; 4],
            guest: 0,
            root: 0,
            slices: 0,
            preemptions: 0,
            yields: 0,
            wakes: 0,
            woken_at: None,
            wake_latency: LatencyHistogram::new(),
            quantum_short_ppm: LatencyHistogram::new(),
            quantum_long_ppm: LatencyHistogram::new(),
        }
    }

    /// Closes the current runstate at `now` and enters `state`.
    fn enter(&mut self, state: Runstate, now: Cycles) {
        let slot = &mut self.runstate_time[self.state.index()];
        *slot = slot.saturating_add(now.saturating_sub(self.since));
        self.state = state;
        self.since = self.since.max(now);
    }

    /// The runstate times with the current one closed at `now`.
    fn times_at(&self, now: Cycles) -> RunstateTimes {
        let mut time = self.runstate_time;
        let slot = &mut time[self.state.index()];
        *slot = slot.saturating_add(now.saturating_sub(self.since));
        RunstateTimes {
            running: time[Runstate::Running.index()],
            runnable: time[Runstate::Runnable.index()],
            blocked: time[Runstate::Blocked.index()],
            stopped: time[Runstate::Stopped.index()],
        }
    }

    /// The quantum-error statistics; `None` before the first sample.
    fn quantum_error(&self) -> Option<QuantumErrorStats> {
        let short = &self.quantum_short_ppm;
        let long = &self.quantum_long_ppm;
        let count = short.count() + long.count();
        if count == 0 {
            return None;
        }
        // In ascending signed order the short samples come first, largest magnitude first.
        let rank = count.div_ceil(2);
        let median_ppm = if rank <= short.count() {
            let magnitude = short.value_at_rank(short.count() - rank + 1)?;
            0i64.saturating_sub_unsigned(magnitude)
        } else {
            i64::try_from(long.value_at_rank(rank - short.count())?).unwrap_or(i64::MAX)
        };
        let max_abs_ppm = short.max().unwrap_or(0).max(long.max().unwrap_or(0));
        Some(QuantumErrorStats {
            count,
            median_ppm,
            max_abs_ppm,
        })
    }
}

/// The accounting for one run.
#[derive(Clone, Debug)]
pub struct Accounting {
    /// When the run started.
    start: Cycles,
    /// Per VM, indexed by [`VmId`].
    vms: Vec<VmAccount>,
    /// Idle cycles.
    idle: Cycles,
    /// Root cycles attributed to no VM.
    root_unattributed: Cycles,
    /// Calls ignored because they did not fit a VM's state.
    ignored: u64,
}

impl Accounting {
    /// Accounting for `vm_count` VMs (ids `0..vm_count`), all runnable at `now`. Allocates
    /// everything the run needs: three histograms (15 KiB each) per VM.
    pub fn new(vm_count: usize, now: Cycles) -> Self {
        let mut vms = Vec::with_capacity(vm_count);
        vms.resize_with(vm_count, || VmAccount::new(now));
        Self {
            start: now,
            vms,
            idle: 0,
            root_unattributed: 0,
            ignored: 0,
        }
    }

    /// Number of VMs accounted for.
    pub fn vm_count(&self) -> usize {
        self.vms.len()
    }

    /// `vm`'s current runstate; `None` for an unknown id.
    pub fn runstate(&self, vm: VmId) -> Option<Runstate> {
        self.vms.get(usize::from(vm)).map(|account| account.state)
    }

    /// Calls ignored because they did not fit a VM's state.
    pub fn ignored_calls(&self) -> u64 {
        self.ignored
    }

    /// `vm`'s account if the id is known and `accepts` its state; otherwise counts an ignored call.
    fn account_if(
        &mut self,
        vm: VmId,
        accepts: impl FnOnce(Runstate) -> bool,
    ) -> Option<&mut VmAccount> {
        match self.vms.get_mut(usize::from(vm)) {
            Some(account) if accepts(account.state) => Some(account),
            _ => {
                self.ignored += 1;
                None
            }
        }
    }

    /// True while a VM that woke waits for the CPU: work that can wait should, or it lengthens
    /// the wake latency being measured.
    pub fn wake_waiting(&self) -> bool {
        self.vms.iter().any(|account| account.woken_at.is_some())
    }

    /// A slice starts: `vm` goes from Runnable to Running. If it was woken since it last ran, the
    /// wake-to-run latency is recorded.
    pub fn switch_in(&mut self, vm: VmId, now: Cycles) {
        let Some(account) = self.account_if(vm, |state| state == Runstate::Runnable) else {
            return;
        };
        account.enter(Runstate::Running, now);
        account.slices += 1;
        if let Some(woken_at) = account.woken_at.take() {
            account.wake_latency.record(now.saturating_sub(woken_at));
        }
    }

    /// A slice ends: `vm` goes from Running to Runnable (preempted or yielded), Blocked or Stopped.
    pub fn switch_out(&mut self, vm: VmId, now: Cycles, why: SliceEnd) {
        let Some(account) = self.account_if(vm, |state| state == Runstate::Running) else {
            return;
        };
        let next = match why {
            SliceEnd::Preempted => {
                account.preemptions += 1;
                Runstate::Runnable
            }
            SliceEnd::Yielded => {
                account.yields += 1;
                Runstate::Runnable
            }
            SliceEnd::Blocked => {
                account.yields += 1;
                Runstate::Blocked
            }
            SliceEnd::Stopped => Runstate::Stopped,
        };
        account.enter(next, now);
    }

    /// `vm` goes from Blocked to Runnable; the wake time is kept for the latency.
    pub fn woken(&mut self, vm: VmId, now: Cycles) {
        let Some(account) = self.account_if(vm, |state| state == Runstate::Blocked) else {
            return;
        };
        account.enter(Runstate::Runnable, now);
        account.wakes += 1;
        account.woken_at = Some(now);
    }

    /// `vm` stops for good from whatever state it is in (e.g. it failed while not running).
    pub fn stopped(&mut self, vm: VmId, now: Cycles) {
        let Some(account) = self.account_if(vm, |state| state != Runstate::Stopped) else {
            return;
        };
        account.enter(Runstate::Stopped, now);
        account.woken_at = None;
    }

    /// `vm` spent `cycles` in guest mode (one VM entry to the next VM exit). An unknown id is
    /// ignored (and the cycles then show up as a conservation error).
    pub fn guest(&mut self, vm: VmId, cycles: Cycles) {
        let Some(account) = self.account_if(vm, |_| true) else {
            return;
        };
        account.guest = account.guest.saturating_add(cycles);
    }

    /// The hypervisor spent `cycles` in root mode, on behalf of `vm` if `Some` (exit handling),
    /// else of nobody (switching, idle bookkeeping). Cycles for an unknown id count as
    /// unattributed, and the call as ignored.
    pub fn root(&mut self, vm: Option<VmId>, cycles: Cycles) {
        if let Some(vm) = vm {
            if let Some(account) = self.account_if(vm, |_| true) {
                account.root = account.root.saturating_add(cycles);
                return;
            }
        }
        self.root_unattributed = self.root_unattributed.saturating_add(cycles);
    }

    /// The CPU waited `cycles` with no VM runnable.
    pub fn idle(&mut self, cycles: Cycles) {
        self.idle = self.idle.saturating_add(cycles);
    }

    /// A slice of `vm` that ended by preemption was configured for `configured` cycles and gave the
    /// guest `actual_guest`: one quantum-error sample. Ignored when `configured` is 0.
    pub fn slice_quantum(&mut self, vm: VmId, configured: Cycles, actual_guest: Cycles) {
        let Some(account) = self.account_if(vm, |_| configured != 0) else {
            return;
        };
        let error =
            (i128::from(actual_guest) - i128::from(configured)) * PPM / i128::from(configured);
        let magnitude = u64::try_from(error.unsigned_abs()).unwrap_or(u64::MAX);
        if error < 0 {
            account.quantum_short_ppm.record(magnitude);
        } else {
            account.quantum_long_ppm.record(magnitude);
        }
    }

    /// The accounting at `now`, each VM's current runstate closed at `now` (nothing changes).
    /// Allocates the summary.
    pub fn summary(&self, now: Cycles) -> Summary {
        let vms: Vec<VmSummary> = self
            .vms
            .iter()
            .enumerate()
            .map(|(vm, account)| VmSummary {
                vm: vm as VmId,
                runstate: account.state,
                runstates: account.times_at(now),
                guest: account.guest,
                root: account.root,
                slices: account.slices,
                preemptions: account.preemptions,
                yields: account.yields,
                wakes: account.wakes,
                wake_latency: LatencyStats::of(&account.wake_latency),
                quantum_error: account.quantum_error(),
            })
            .collect();
        let sum = |field: fn(&VmSummary) -> Cycles| {
            vms.iter()
                .fold(0 as Cycles, |total, vm| total.saturating_add(field(vm)))
        };
        Summary {
            elapsed: now.saturating_sub(self.start),
            idle: self.idle,
            guest_total: sum(|vm| vm.guest),
            root_attributed: sum(|vm| vm.root),
            root_unattributed: self.root_unattributed,
            ignored_calls: self.ignored,
            vms,
        }
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec;

    use proptest::prelude::*;

    use super::*;

    /// Start of every unit test's clock, not 0 so that "elapsed" and "now" differ.
    const START: Cycles = 1_000;

    #[test]
    fn every_vm_starts_runnable() {
        let accounting = Accounting::new(3, START);
        let summary = accounting.summary(START + 500);
        assert_eq!(summary.elapsed, 500);
        for vm in &summary.vms {
            assert_eq!(vm.runstate, Runstate::Runnable);
            assert_eq!(vm.runstates.runnable, 500);
            assert_eq!(vm.runstates.total(), 500);
        }
    }

    #[test]
    fn transitions_split_the_runstates() {
        let mut accounting = Accounting::new(1, START);
        accounting.switch_in(0, START + 10);
        accounting.switch_out(0, START + 110, SliceEnd::Preempted);
        accounting.switch_in(0, START + 120);
        accounting.switch_out(0, START + 150, SliceEnd::Yielded);
        accounting.switch_in(0, START + 160);
        accounting.switch_out(0, START + 200, SliceEnd::Blocked);
        accounting.woken(0, START + 300);
        accounting.stopped(0, START + 400);
        let summary = accounting.summary(START + 1_000);
        let vm = &summary.vms[0];
        assert_eq!(
            vm.runstates,
            RunstateTimes {
                running: 100 + 30 + 40,
                runnable: 10 + 10 + 10 + 100,
                blocked: 100,
                stopped: 600,
            }
        );
        assert_eq!(
            (vm.slices, vm.preemptions, vm.yields, vm.wakes),
            (3, 1, 2, 1)
        );
        assert_eq!(vm.runstate, Runstate::Stopped);
        assert_eq!(summary.ignored_calls, 0);
    }

    #[test]
    fn summary_does_not_change_the_accounting() {
        let mut accounting = Accounting::new(2, START);
        accounting.switch_in(1, START + 5);
        let first = accounting.summary(START + 50);
        let again = accounting.summary(START + 50);
        assert_eq!(first, again);
        assert_eq!(first.vms[1].runstates.running, 45);
        accounting.switch_out(1, START + 60, SliceEnd::Preempted);
        assert_eq!(accounting.summary(START + 60).vms[1].runstates.running, 55);
    }

    #[test]
    fn wake_latency_is_recorded_once_per_wake() {
        let mut accounting = Accounting::new(1, START);
        accounting.switch_in(0, START);
        accounting.switch_out(0, START + 10, SliceEnd::Blocked);
        accounting.woken(0, START + 100);
        accounting.switch_in(0, START + 130);
        accounting.switch_out(0, START + 140, SliceEnd::Preempted);
        // Not woken since: no second sample.
        accounting.switch_in(0, START + 150);
        accounting.switch_out(0, START + 160, SliceEnd::Blocked);
        // A second wake while already runnable is ignored, so the latency counts from the first.
        accounting.woken(0, START + 200);
        accounting.woken(0, START + 250);
        accounting.switch_in(0, START + 260);
        let latency = accounting.summary(START + 300).vms[0].wake_latency.unwrap();
        assert_eq!(latency.count, 2);
        assert_eq!(latency.max, 60);
        assert_eq!(latency.p50, 30);
        assert_eq!(accounting.ignored_calls(), 1);
    }

    #[test]
    fn no_wakes_means_no_latency() {
        let mut accounting = Accounting::new(1, START);
        accounting.switch_in(0, START);
        let summary = accounting.summary(START + 1);
        assert_eq!(summary.vms[0].wake_latency, None);
        assert_eq!(summary.vms[0].quantum_error, None);
    }

    #[test]
    fn quantum_error_has_a_sign() {
        let mut accounting = Accounting::new(2, START);
        // VM 0 overshoots: 1 % long twice, exact once.
        accounting.slice_quantum(0, 10_000, 10_100);
        accounting.slice_quantum(0, 10_000, 10_100);
        accounting.slice_quantum(0, 10_000, 10_000);
        // VM 1 comes up short: 2 % and 5 %.
        accounting.slice_quantum(1, 10_000, 9_800);
        accounting.slice_quantum(1, 10_000, 9_500);
        let summary = accounting.summary(START);
        let long = summary.vms[0].quantum_error.unwrap();
        assert_eq!(long.count, 3);
        assert!(long.median_ppm > 0);
        assert!((10_000..=10_000 + 10_000 / 32).contains(&long.median_ppm));
        assert_eq!(long.max_abs_ppm, 10_000);
        let short = summary.vms[1].quantum_error.unwrap();
        assert_eq!(short.count, 2);
        // The lower median of {−50 000, −20 000}.
        assert!((-50_000 - 50_000 / 32..=-50_000).contains(&short.median_ppm));
        assert_eq!(short.max_abs_ppm, 50_000);
    }

    #[test]
    fn quantum_error_extremes_do_not_overflow() {
        let mut accounting = Accounting::new(1, START);
        accounting.slice_quantum(0, 1, u64::MAX);
        accounting.slice_quantum(0, u64::MAX, 0);
        accounting.slice_quantum(0, 0, 5);
        let error = accounting.summary(START).vms[0].quantum_error.unwrap();
        assert_eq!(error.count, 2);
        assert_eq!(error.max_abs_ppm, u64::MAX);
        assert_eq!(error.median_ppm, -1_000_000);
        assert_eq!(accounting.ignored_calls(), 1);
    }

    #[test]
    fn conservation_counts_guest_root_and_idle() {
        let mut accounting = Accounting::new(2, START);
        accounting.guest(0, 300);
        accounting.guest(1, 200);
        accounting.root(Some(0), 50);
        accounting.root(None, 25);
        accounting.idle(400);
        let summary = accounting.summary(START + 1_000);
        assert_eq!(summary.conservation_error(), 25);
        assert_eq!(summary.root_total(), 75);
        assert_eq!(summary.guest_total, 500);
        accounting.root(Some(9), 25); // unknown VM: unattributed, still conserved
        let summary = accounting.summary(START + 1_000);
        assert_eq!(summary.conservation_error(), 0);
        assert_eq!(summary.ignored_calls, 1);
        assert_eq!(summary.guest_share(0), Some(0.6));
        assert_eq!(summary.cpu_share(1), Some(0.2));
        assert_eq!(summary.guest_share(2), None);
    }

    #[test]
    fn jain_index_bounds() {
        assert_eq!(jain_index(&[]), 1.0);
        assert_eq!(jain_index(&[0.0, 0.0]), 1.0);
        assert_eq!(jain_index(&[3.0, 3.0, 3.0]), 1.0);
        assert_eq!(jain_index(&[1.0, 0.0, 0.0, 0.0]), 0.25);
        let mut accounting = Accounting::new(2, START);
        accounting.guest(0, 100);
        accounting.guest(1, 300);
        let summary = accounting.summary(START + 400);
        assert_eq!(summary.weighted_jain_index([(0, 1), (1, 3)]), 1.0);
        assert_eq!(summary.weighted_jain_index([(0, 1), (1, 1)]), 0.8);
        assert_eq!(summary.weighted_jain_index([(0, 1), (7, 1), (1, 0)]), 1.0);
    }

    /// One random call to the accounting.
    #[derive(Clone, Debug)]
    enum Call {
        SwitchIn(VmId),
        SwitchOut(VmId, SliceEnd),
        Woken(VmId),
        Stopped(VmId),
        Guest(VmId, Cycles),
        Root(Option<VmId>, Cycles),
        Idle(Cycles),
        Quantum(VmId, Cycles, Cycles),
    }

    fn call(vm_count: VmId) -> impl Strategy<Value = Call> {
        let vm = 0..vm_count + 2;
        let cycles = prop_oneof![0u64..10_000, any::<u64>()];
        let end = prop_oneof![
            Just(SliceEnd::Preempted),
            Just(SliceEnd::Yielded),
            Just(SliceEnd::Blocked),
            Just(SliceEnd::Stopped),
        ];
        prop_oneof![
            vm.clone().prop_map(Call::SwitchIn),
            (vm.clone(), end).prop_map(|(vm, end)| Call::SwitchOut(vm, end)),
            vm.clone().prop_map(Call::Woken),
            vm.clone().prop_map(Call::Stopped),
            (vm.clone(), cycles.clone()).prop_map(|(vm, c)| Call::Guest(vm, c)),
            (prop::option::of(vm.clone()), cycles.clone()).prop_map(|(vm, c)| Call::Root(vm, c)),
            cycles.clone().prop_map(Call::Idle),
            (vm, cycles.clone(), cycles).prop_map(|(vm, a, b)| Call::Quantum(vm, a, b)),
        ]
    }

    fn apply(accounting: &mut Accounting, call: &Call, now: Cycles) {
        match *call {
            Call::SwitchIn(vm) => accounting.switch_in(vm, now),
            Call::SwitchOut(vm, why) => accounting.switch_out(vm, now, why),
            Call::Woken(vm) => accounting.woken(vm, now),
            Call::Stopped(vm) => accounting.stopped(vm, now),
            Call::Guest(vm, cycles) => accounting.guest(vm, cycles),
            Call::Root(vm, cycles) => accounting.root(vm, cycles),
            Call::Idle(cycles) => accounting.idle(cycles),
            Call::Quantum(vm, configured, actual) => {
                accounting.slice_quantum(vm, configured, actual)
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// With time moving forward, any sequence of calls keeps every VM's runstate times adding
        /// up to the elapsed time, and the summary's counters consistent.
        #[test]
        fn runstates_cover_elapsed_time(
            (vm_count, steps) in (1u16..=8).prop_flat_map(|n| (
                Just(n),
                prop::collection::vec((call(n), 0u64..1_000), 0..150),
            )),
        ) {
            let mut accounting = Accounting::new(usize::from(vm_count), START);
            let mut now = START;
            for (call, advance) in &steps {
                now += advance;
                apply(&mut accounting, call, now);
                let summary = accounting.summary(now);
                for vm in &summary.vms {
                    prop_assert_eq!(vm.runstates.total(), u128::from(summary.elapsed));
                    prop_assert!(vm.preemptions + vm.yields <= vm.slices);
                    prop_assert!(vm.wake_latency.map_or(0, |l| l.count) <= vm.wakes);
                }
            }
        }

        /// Time going backwards, huge cycle counts and nonsense calls never panic.
        #[test]
        fn arbitrary_calls_never_panic(
            vm_count in 0u16..=4,
            steps in prop::collection::vec((call(4), any::<u64>()), 0..100),
            end in any::<u64>(),
        ) {
            let mut accounting = Accounting::new(usize::from(vm_count), START);
            for (call, now) in &steps {
                apply(&mut accounting, call, *now);
            }
            let summary = accounting.summary(end);
            let _ = summary.conservation_error();
            let _ = summary.weighted_jain_index((0..6).map(|vm| (vm, 1)));
            prop_assert_eq!(summary.vms.len(), usize::from(vm_count));
        }
    }

    #[test]
    fn unknown_ids_are_ignored() {
        let mut accounting = Accounting::new(1, START);
        accounting.switch_in(3, START);
        accounting.switch_out(3, START, SliceEnd::Preempted);
        accounting.woken(3, START);
        accounting.stopped(3, START);
        accounting.guest(3, 10);
        accounting.slice_quantum(3, 10, 10);
        assert_eq!(accounting.ignored_calls(), 6);
        assert_eq!(accounting.runstate(3), None);
        let summary = accounting.summary(START + 10);
        assert_eq!(summary.conservation_error(), 10);
        assert_eq!(
            vec![Runstate::Runnable],
            summary.vms.iter().map(|vm| vm.runstate).collect::<Vec<_>>()
        );
    }
}
