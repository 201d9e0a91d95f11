//! The run loop: mechanism only. The scheduler crate's policy decides who runs and for how long;
//! this loop arms the slice timer, enters the VM, measures, handles exits, wakes VMs whose
//! timers expired, and waits when nobody can run. It runs the same on the real machine and on
//! the host tests' fakes.
//!
//! Time accounting (all TSC cycles): every cycle from the start of the run belongs to exactly
//! one of guest mode (VM entry to VM exit, per VM), root mode (per VM while handling its exits,
//! unattributed while switching) or idle (no VM runnable). `mark` is the instant up to which
//! cycles have been handed out, so the three always add up to the elapsed time.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use carousel_devices::DiskImageError;
use carousel_protocol::config::{
    CompressionConfig, DiskSource, RunConfig, SchedulerPolicy, Setting, SettingError, VmConfig,
};
use carousel_protocol::record::{
    self, BlockedOn, ChangeSource, Event, Record, StopReason, TraceLevel,
};
use carousel_scheduler::{
    Accounting, ConfigError, Credit, CreditTiming, CreditVm, Cycles, LatencyHistogram, Policy,
    QuantumClock, RoundRobin, Slice, SliceEnd, VmId,
};

use crate::balloon::{Candidate, Rule};
use crate::compress::Ages;
use crate::disk::{Backing, Extent};
use crate::exit::Exit;
use crate::exits::{self, Context, Next};
use crate::host::Host;
use crate::input::{InputRouter, Routed};
use crate::memory::{Frames, GuestMemory, HostMemory, ScanCursor};
use crate::vcpu::{Reg, Vcpu, VcpuError};
use crate::vm::{self, Blocked, Built, CpuFacts, RunState, VcpuSetup, Vm};

mod disk;
mod periodic;
use periodic::Periodic;

/// An unfinished console line (a prompt) is printed after 1/20 s without output.
const CONSOLE_QUIET_DIVISOR: u64 = 20;
/// Housekeeping between slices runs at most this often a second of TSC time.
const HOUSEKEEPING_PER_SECOND: u64 = 1_000;
/// Address spaces reported per VM at the end.
const ADDRESS_SPACES_REPORTED: usize = 16;

/// Microseconds of TSC time in cycles, at `tsc_hz`.
pub fn us_to_cycles(us: u64, tsc_hz: u64) -> Cycles {
    (u128::from(tsc_hz) * u128::from(us) / 1_000_000).min(u128::from(u64::MAX)) as u64
}

/// Builds the VMs of `config`: `module` finds a GRUB module by name, `disk_module` hands out a
/// disk module's bytes to serve in place (once: a second call for the same name finds none),
/// `make_vcpu` makes the hardware vCPU of a VM. A VM that cannot be built is reported stopped
/// and left out.
#[allow(clippy::too_many_arguments)]
pub fn build_vms<'m, V: Vcpu, F: Frames, H: Host>(
    config: &RunConfig,
    module: impl Fn(&str) -> Option<&'m [u8]>,
    mut disk_module: impl FnMut(&str) -> Option<&'static mut [u8]>,
    pool: &mut HostMemory<F>,
    host: &mut H,
    cpu: CpuFacts,
    tsc_hz: u64,
    mut make_vcpu: impl FnMut(&VcpuSetup, &mut HostMemory<F>) -> Result<V, StopReason>,
) -> Vec<Option<Vm<V>>> {
    let mut vms = Vec::with_capacity(config.vms.len());
    for (id, vm_config) in config.vms.iter().enumerate() {
        let id = id as VmId;
        let built = build_one(
            vm_config,
            id,
            &module,
            &mut disk_module,
            pool,
            host,
            cpu,
            tsc_hz,
            &mut make_vcpu,
        );
        match built {
            Ok(vm) => {
                log::info!(
                    "vm {} ready: {} MiB, weight {}",
                    vm.name,
                    vm_config.memory_bytes >> 20,
                    vm_config.weight
                );
                vms.push(Some(vm));
            }
            Err(reason) => {
                log::error!("vm {} not started: {reason}", vm_config.name);
                let tsc = host.now();
                host.exporter().emit(&Record::VmStopped {
                    tsc,
                    vm: id,
                    reason,
                });
                vms.push(None);
            }
        }
    }
    vms
}

#[allow(clippy::too_many_arguments)]
fn build_one<'m, V: Vcpu, F: Frames, H: Host>(
    vm_config: &VmConfig,
    id: VmId,
    module: &impl Fn(&str) -> Option<&'m [u8]>,
    disk_module: &mut impl FnMut(&str) -> Option<&'static mut [u8]>,
    pool: &mut HostMemory<F>,
    host: &mut H,
    cpu: CpuFacts,
    tsc_hz: u64,
    make_vcpu: &mut impl FnMut(&VcpuSetup, &mut HostMemory<F>) -> Result<V, StopReason>,
) -> Result<Vm<V>, StopReason> {
    let image = module(&vm_config.kernel_module).ok_or_else(|| {
        vm::load_failed(format_args!(
            "module `{}` is missing",
            vm_config.kernel_module
        ))
    })?;
    let disk = match &vm_config.disk {
        None => Backing::None,
        Some(DiskSource::Module { name }) => {
            let bytes = disk_module(name)
                .ok_or_else(|| vm::load_failed(format_args!("module `{name}` is missing")))?;
            DiskImageError::check(bytes.len() as u64)
                .map_err(|error| vm::load_failed(format_args!("module `{name}`: {error}")))?;
            Backing::Memory(bytes)
        }
        Some(DiskSource::Drive { start, sectors }) => {
            let (start, sectors) = (*start, *sectors);
            let drive_sectors = host.drive().map(|drive| drive.sectors()).ok_or_else(|| {
                vm::load_failed("its disk is on the shared drive, and there is none")
            })?;
            Backing::Extent(Extent::new(start, sectors, drive_sectors).map_err(vm::load_failed)?)
        }
    };
    let blueprint = vm::Blueprint {
        id,
        config: vm_config,
        cpu,
        tsc_hz,
    };
    let built: Built = vm::build(pool, &blueprint, image, disk)?;
    let vcpu = make_vcpu(built.setup(), pool)?;
    Vm::new(built, vcpu, &blueprint, pool, host)
}

/// The exit being handled: its reason, when it happened (its cost ends at the next entry, or at
/// the end of the slice), and whether it was the hypervisor's business rather than the VM's.
#[derive(Debug, Clone, Copy)]
struct Handling {
    reason: u16,
    at: Cycles,
    foreign: bool,
}

/// A slice being run.
#[derive(Debug)]
struct SliceRun {
    slice: Slice,
    /// The slice the policy granted (the armed one is shorter by the last slice's overrun).
    granted: Cycles,
    /// When the slice began (the VM consumed the CPU from then to the slice's end).
    started: Cycles,
    /// The policy ended the slice early for a waiting VM (a boosted waker).
    cut_short: bool,
    handling: Option<Handling>,
    last_exit: Cycles,
}

/// The state of one run.
pub struct Machine<V, F, H> {
    pub vms: Vec<Option<Vm<V>>>,
    pub pool: HostMemory<F>,
    pub host: H,
    policy: Box<dyn Policy>,
    accounting: Accounting,
    quantum: Cycles,
    quantum_clock: QuantumClock,
    tsc_hz: u64,
    start: Cycles,
    /// Cycles up to this instant have been accounted.
    mark: Cycles,
    /// The cost of each switch between VMs.
    switches: Switches,
    /// The VM whose vCPU the hardware holds now.
    current: Option<VmId>,
    /// Console input from the host, to the focused VM.
    input: InputRouter,
    /// A VM's unfinished console line goes out after this many quiet cycles.
    console_quiet: Cycles,
    /// When housekeeping, metrics intervals and working-set samples are due.
    periodic: Periodic,
    /// Every VM exit goes out as an event (a full-rate trace).
    exit_events: bool,
    /// The memory policies' state: the balloon rule, same-page merging's scan, the host
    /// memory last reported.
    memory: MemoryKeeping,
    /// Idle detection: guest cycles in the idle address space that make a VM idle.
    idle_threshold: Option<Cycles>,
    /// When a blocked VM may next wake, as last computed.
    wakes: WakeCache,
    /// Each VM's last wall-clock slice ran past its end by this much (the handling of its last
    /// exit): its next slice is that much shorter, so that over time it gets its share and no
    /// more.
    overrun: Vec<Cycles>,
    /// The interval's event batch waits to be flushed (held while a woken VM waits).
    events_due: bool,
    /// Setting changes: the lab's scheduled ones, what the policy is, and the refusals.
    settings: Settings,
    /// The shared disk's queue, when the lab gives it a service time or caps a VM.
    disk: Option<disk::SharedDisk>,
}

/// Setting changes during the run ([`Machine::change_setting`]).
#[derive(Debug)]
struct Settings {
    /// The lab's scheduled changes not yet made, latest first (the next is popped off the end).
    scheduled: Vec<(Cycles, Setting)>,
    /// When the next scheduled change is due; `Cycles::MAX`: none. The run loop compares this
    /// one number between slices, so a run without changes pays nothing more.
    next_at: Cycles,
    /// The run's policy (caps are only for credit).
    policy: SchedulerPolicy,
    /// Requests refused so far.
    refused: u64,
}

/// The memory policies' state.
#[derive(Debug)]
struct MemoryKeeping {
    /// Guest pages backed and free pages, as last sent.
    reported: Option<(u64, u64)>,
    /// The balloon rule, and the pages of the host's pool it measures against.
    balloon_rule: Option<Rule>,
    pool_pages: u64,
    /// Same-page merging: pages scanned per interval (0: off), and where the scan goes on.
    merge_scan_pages: u64,
    merge_cursor: ScanCursor,
    /// Compressing cold pages after each working-set sample.
    compression: CompressionConfig,
}

/// When a blocked VM may next wake: the earliest wake-up deadline, as last computed (None: not
/// known, look again), and whether a blocked VM waits for something other than time (room on a
/// serial line, an interrupt to take).
#[derive(Debug, Default)]
struct WakeCache {
    at: Option<Option<Cycles>>,
    beyond_timers: bool,
}

/// Switch costs: from the VM exit that ended the last slice by preemption to the next VM
/// entry.
#[derive(Debug, Default)]
struct Switches {
    from: Option<Cycles>,
    costs: LatencyHistogram,
}

/// Why a run could not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartError {
    /// The scheduler refused the run's quantum or weights.
    Scheduler(ConfigError),
    /// The shared disk's queue refused the VMs' disk weights or caps.
    Disk(carousel_scheduler::DiskConfigError),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Scheduler(error) => write!(f, "scheduler: {error}"),
            Self::Disk(error) => write!(f, "shared disk: {error}"),
        }
    }
}

impl<V: Vcpu, F: Frames, H: Host> Machine<V, F, H> {
    /// The machine of a run over `vms` (built by [`build_vms`]).
    pub fn new(
        config: &RunConfig,
        vms: Vec<Option<Vm<V>>>,
        pool: HostMemory<F>,
        mut host: H,
        tsc_hz: u64,
    ) -> Result<Self, StartError> {
        let quantum = us_to_cycles(u64::from(config.quantum_us), tsc_hz);
        let now = host.now();
        let policy =
            make_policy(config, quantum.max(1), tsc_hz, now).map_err(StartError::Scheduler)?;
        log::info!(
            "scheduler: {}, quantum {} us = {} cycles of {} time",
            policy.name(),
            config.quantum_us,
            quantum,
            config.quantum_clock.name(),
        );
        if config.policy == SchedulerPolicy::Credit {
            let capped = config.vms.iter().filter(|vm| vm.cap_pct > 0).count();
            log::info!(
                "credit: rate limit {} us, accounting period {} us, {capped} VMs capped",
                config.credit.ratelimit_us,
                config.credit.period_us,
            );
        }
        let disk = disk::SharedDisk::new(config, tsc_hz).map_err(StartError::Disk)?;
        let mut vms = vms;
        if disk.is_some() {
            for vm in vms.iter_mut().flatten() {
                vm.platform.ide.set_timed(true);
            }
        }
        let mut pool = pool;
        if config.compression.after_samples > 0 {
            pool.set_pool_limit(u64::from(config.compression.pool_pages));
            for vm in vms.iter_mut().flatten() {
                vm.ages = Ages::new(vm.memory.size_pages(), config.compression.after_samples);
            }
        }
        let pool_pages = config
            .guest_page_budget
            .unwrap_or(pool.guest_pages_backed() + pool.free_frames());
        let mut machine = Self {
            accounting: Accounting::new(vms.len(), now),
            vms,
            pool,
            host,
            policy,
            quantum,
            quantum_clock: match config.quantum_clock {
                carousel_protocol::config::QuantumClock::Wall => QuantumClock::Wall,
                carousel_protocol::config::QuantumClock::Guest => QuantumClock::Guest,
            },
            tsc_hz,
            start: now,
            mark: now,
            switches: Switches::default(),
            current: None,
            input: InputRouter::new(config.vms.len() as u16),
            console_quiet: tsc_hz / CONSOLE_QUIET_DIVISOR,
            periodic: Periodic::new(
                now,
                tsc_hz / HOUSEKEEPING_PER_SECOND,
                us_to_cycles(u64::from(config.interval_us), tsc_hz),
                us_to_cycles(u64::from(config.memory_sample_us), tsc_hz),
            ),
            exit_events: config.trace == TraceLevel::Full,
            memory: MemoryKeeping {
                reported: None,
                balloon_rule: config.balloon_when_free_below_pct.map(|pct| Rule {
                    free_below_pct: pct,
                    step_pages: config.balloon_step_pages,
                }),
                pool_pages,
                merge_scan_pages: u64::from(config.merge_scan_pages),
                merge_cursor: ScanCursor::default(),
                compression: config.compression,
            },
            idle_threshold: config
                .idle_threshold_us
                .map(|us| us_to_cycles(u64::from(us), tsc_hz).max(1)),
            overrun: alloc::vec![0; config.vms.len()],
            events_due: false,
            wakes: WakeCache::default(),
            settings: Settings::new(config, now, tsc_hz),
            disk,
        };
        if let Some(us) = config.idle_threshold_us {
            log::info!("idle detection on: {us} us in the idle address space with nothing pending");
        }
        // Staggered starts: VM i waits, blocked on its timer, until i × the stagger.
        let stagger = us_to_cycles(u64::from(config.boot_stagger_us), tsc_hz);
        for (index, vm) in machine.vms.iter_mut().enumerate().skip(1) {
            if let Some(vm) = vm.as_mut().filter(|_| stagger > 0) {
                vm.timer_deadline = Some(now + stagger * index as u64);
                vm.state = RunState::Blocked(Blocked::Held);
            }
        }
        if stagger > 0 {
            log::info!("staggered start: a VM every {} us", config.boot_stagger_us);
        }
        for id in 0..machine.vms.len() {
            if machine.vms[id].is_none() {
                machine.policy.finished(id as VmId);
                machine.accounting.stopped(id as VmId, now);
            }
        }
        Ok(machine)
    }

    /// Runs the VMs until every one has stopped, then sends the end-of-run records.
    pub fn run(&mut self) {
        self.run_loop();
        let now = self.host.now();
        self.flush_exit_stats(now, Flush::Now);
        self.report();
        for id in 0..self.vms.len() {
            let Some(vm) = self.vms[id].as_ref() else {
                continue;
            };
            let lag = vm.platform.timer_lag;
            let (vm_id, spaces) = (vm.id, vm.spaces.top(ADDRESS_SPACES_REPORTED));
            if lag.ticks > 0 {
                self.host.exporter().emit(&Record::TimerLag {
                    vm: vm_id,
                    ticks: lag.ticks,
                    coalesced: lag.coalesced,
                    lag_total: lag.total_cycles,
                    lag_max: lag.max_cycles,
                });
            }
            self.host
                .exporter()
                .emit(&Record::AddressSpaces { vm: vm_id, spaces });
        }
        // The VMs' frames are not given back one by one: the hypervisor exits next. With merging
        // on that walk was most of the end of a run (8 xv6 of 224 MiB: 1.8 G cycles, 40 s of
        // Bochs, unmapping 458,752 pages), past the tool's grace.
        // Every console byte leaves before RunEnd does: the tool takes RunEnd as "everything is
        // in" and ends the emulator soon after, so text still queued for COM1 behind a chatty
        // VM (COM1 runs at line rate) would be lost with it.
        self.host.flush_serial();
        let now = self.host.now();
        self.host.exporter().emit(&Record::RunEnd { tsc: now });
        self.host.flush_serial();
    }

    /// Changes `setting` now, at a clean point (no VM holds the CPU: between two slices, or
    /// idle), if it passes the lab's checks and the policy takes it; otherwise refuses it,
    /// counted. Either way a record says so. Nothing a request carries is trusted: it may come
    /// from whoever types on the console.
    pub fn change_setting(&mut self, setting: Setting, source: ChangeSource) {
        let now = self.host.now();
        let checked = setting
            .check(self.vms.len(), self.settings.policy)
            .and_then(|()| {
                let applied = match setting {
                    Setting::Quantum { us } => {
                        let quantum = us_to_cycles(u64::from(us), self.tsc_hz).max(1);
                        self.policy
                            .set_quantum(quantum)
                            .map(|()| self.quantum = quantum)
                    }
                    Setting::Weight { vm, weight } => self.policy.set_weight(vm, weight),
                    Setting::Cap { vm, cap_pct } => self.policy.set_cap(vm, cap_pct),
                };
                applied.map_err(|error| policy_refusal(setting, error, self.settings.policy))
            });
        match checked {
            Ok(()) => {
                log::info!("setting changed ({source:?}): {setting}");
                self.host.exporter().emit(&Record::SettingChanged {
                    tsc: now,
                    setting,
                    source,
                });
            }
            Err(reason) => {
                self.settings.refused += 1;
                log::warn!("setting refused ({source:?}): {setting}: {reason}");
                let refused = self.settings.refused;
                self.host.exporter().emit(&Record::SettingRefused {
                    tsc: now,
                    setting,
                    source,
                    reason,
                    refused,
                });
            }
        }
    }

    /// Requests refused so far (by the checks or by the policy, and requests of no known kind).
    pub fn settings_refused(&self) -> u64 {
        self.settings.refused
    }

    /// Makes the scheduled changes due by `now`, in their order.
    fn make_due_changes(&mut self, now: Cycles) {
        while let Some(&(at, setting)) = self.settings.scheduled.last() {
            if at > now {
                break;
            }
            self.settings.scheduled.pop();
            self.change_setting(setting, ChangeSource::Lab);
        }
        self.settings.next_at = self.settings.scheduled.last().map_or(Cycles::MAX, |c| c.0);
    }

    fn run_loop(&mut self) {
        loop {
            // Periodic work (console input, prompts, metric export, feeding the serial lines)
            // is not part of a switch: the switch cost leaves it out (it is root time all the
            // same).
            let before = self.host.now();
            self.housekeeping(before);
            self.host.feed_serial();
            // Wake-ups are due now, not at the next housekeeping (when every VM is blocked no
            // exit runs the check either).
            self.wake_expired(before);
            let after = self.host.now();
            if let Some(from) = self.switches.from.as_mut() {
                *from += after - before;
            }
            if after >= self.settings.next_at {
                self.make_due_changes(after);
            }
            self.policy.advance(after);
            if let Some((id, slice)) = self.policy.pick_next() {
                self.run_slice(id, slice);
                continue;
            }
            // Nothing runnable. A VM nothing can ever wake stops now, so that it cannot hold the
            // run; the others are waited for.
            let now = self.host.now();
            for id in 0..self.vms.len() {
                // A request of its in the shared disk's queue completes with an interrupt.
                let disk_pending = self
                    .disk
                    .as_ref()
                    .is_some_and(|disk| disk.outstanding(id as VmId));
                let never = self
                    .vm(id)
                    .filter(|vm| !disk_pending && vm.can_never_wake())
                    .map(|vm| match vm.state {
                        RunState::Blocked(Blocked::Halted { rip, .. }) => rip,
                        _ => 0,
                    });
                if let Some(rip) = never {
                    self.finish(id as VmId, StopReason::HaltedForever { rip }, now);
                }
            }
            // A VM held back by the policy (a cap) may run again at its refill: the CPU idles
            // until then, or until a VM wakes, whichever comes first.
            let held = self.policy.held_until();
            let deadline = [self.earliest_deadline(), held].into_iter().flatten().min();
            // A scheduled change is due on time even while every VM waits.
            let change = self.settings.next_at;
            match deadline {
                Some(deadline) => self.idle_until(deadline.min(change)),
                // Only console input can wake a VM halted with interrupts enabled, and only the
                // serial lines draining one waiting for room on them: wait for either.
                None if self
                    .vms
                    .iter()
                    .flatten()
                    .any(|vm| vm.waits_for_interrupt() || vm.waits_for_serial()) =>
                {
                    self.idle_until(change)
                }
                None if self.vms.iter().flatten().any(Vm::interrupt_waiting) => {}
                None => break,
            }
        }
        let now = self.host.now();
        self.accounting.root(None, now - self.mark);
        self.mark = now;
    }

    fn vm(&self, id: usize) -> Option<&Vm<V>> {
        self.vms.get(id).and_then(Option::as_ref)
    }

    /// Hands out [mark, now) as root time for `vm` (None: no VM's).
    fn account_root(&mut self, vm: Option<VmId>, now: Cycles) {
        self.accounting.root(vm, now.saturating_sub(self.mark));
        self.mark = now;
    }

    /// The earliest instant a blocked VM may wake: its SET_TIMER deadline, or its LAPIC timer
    /// when it halted with interrupts enabled.
    fn earliest_deadline(&mut self) -> Option<Cycles> {
        if let Some(known) = self.wakes.at {
            return known;
        }
        let disk = self.disk.as_ref().and_then(disk::SharedDisk::next_event);
        let earliest = self
            .vms
            .iter()
            .flatten()
            .filter_map(Vm::wake_deadline)
            .chain(disk)
            .min();
        self.wakes.at = Some(earliest);
        earliest
    }

    /// Something may have changed when a blocked VM wakes (a VM blocked, input arrived): the
    /// next [`Self::earliest_deadline`] and [`Self::wake_expired`] look at every VM again.
    fn wakes_changed(&mut self) {
        self.wakes.at = None;
    }

    /// Wakes every blocked VM whose timer expired or that has an interrupt to take by `now`.
    /// Runs after every exit, so it returns at once while no wake-up can be due: before the
    /// earliest deadline, with no VM waiting for input or for room on a serial line.
    fn wake_expired(&mut self, now: Cycles) {
        if let Some(known) = self.wakes.at {
            if !self.wakes.beyond_timers && known.is_none_or(|at| now < at) {
                return;
            }
        }
        self.wakes_changed();
        self.policy.advance(now);
        if let Some(disk) = self.disk.as_mut() {
            let vms = &mut self.vms;
            let host = &mut self.host;
            disk.complete_due(now, |completion| {
                if let Some(vm) = vms
                    .get_mut(usize::from(completion.vm))
                    .and_then(Option::as_mut)
                {
                    vm.platform.complete_disk();
                }
                host.exporter().emit_caused(
                    completion.vm,
                    &Record::DiskServed {
                        tsc: completion.completed,
                        vm: completion.vm,
                        sectors: completion.sectors,
                        write: completion.write,
                        wait: completion.wait(),
                        service: completion.service(),
                    },
                );
            });
        }
        let mut waits_beyond_timers = false;
        for id in 0..self.vms.len() {
            let Some(vm) = self.vms[id].as_mut() else {
                continue;
            };
            if let Some(event) = vm.wake_event(now, &mut self.host) {
                vm.state = RunState::Runnable;
                self.host.exporter().event(
                    now,
                    Event::Wake {
                        dt: 0,
                        vm: id as VmId,
                    },
                );
                self.policy.woken(id as VmId);
                // Latency counts from the event (a deadline), not from when it was noticed.
                self.accounting.woken(id as VmId, event);
                if let Some(disk) = self.disk.as_mut() {
                    disk.woken(id as VmId, event);
                }
            } else if vm.waits_for_serial() || vm.interrupt_waiting() {
                waits_beyond_timers = true;
            }
        }
        self.wakes.beyond_timers = waits_beyond_timers;
        let waiting = self.accounting.wake_waiting();
        self.host.exporter().hold(waiting);
    }

    /// Between slices, at most once a millisecond of TSC time: console input from the host,
    /// prompts left unfinished by quiet guests, and the wake-ups these cause. Input waits at
    /// most a slice this way, and the switch path stays short.
    fn housekeeping(&mut self, now: Cycles) {
        let Some(due) = self.periodic.pass(now) else {
            return;
        };
        // Input, flushed prompts and the wakes they cause come first: a VM they wake must not
        // wait behind this pass's measurement records (nor be found not waiting by the check
        // below that holds those records back while a woken VM waits).
        self.route_input();
        let quiet = self.console_quiet;
        for vm in self.vms.iter_mut().flatten() {
            // The VM's own time since the last pass: what it ran, or all of it if it waits for
            // an event now (a shell at its prompt); not the time it waited for the CPU.
            let (at, guest) = core::mem::replace(&mut vm.console_mark, (now, vm.guest_cycles));
            let own = match vm.state {
                RunState::Blocked(_) => now.saturating_sub(at),
                _ => vm.guest_cycles - guest,
            };
            let mut out = exits::Output {
                host: &mut self.host,
                vm: vm.id,
            };
            vm.platform.console.flush_idle(own, quiet, &mut out);
        }
        self.wake_expired(now);
        if due.interval {
            self.flush_exit_stats(now, Flush::Paced);
        }
        if !self.accounting.wake_waiting() {
            // Measurement records wait while a woken VM waits for the CPU: its wake latency
            // would include them.
            if self.events_due {
                self.events_due = false;
                self.host.exporter().flush_events(now);
            }
            self.send_due_intervals();
        }
        if due.memory_sample {
            self.sample_memory(now);
        }
    }

    /// Closes the metrics interval that ends at `now`: sends the scheduler events and host
    /// memory, and takes each VM's exit statistics out, to be sent now (the end of the run) or
    /// a few at a time by the next housekeeping passes ([`Self::send_due_intervals`]). Encoding
    /// them costs thousands of cycles a VM in Bochs: sent all at once between two slices they
    /// lengthened whoever waited across that gap (sleepy's latest wake in the demo, 4.36 ms
    /// against the 4.2 ms its test allows); charged to each VM's own slice instead, they took a
    /// larger part of a light VM's share than of a heavy one's.
    fn flush_exit_stats(&mut self, now: Cycles, when: Flush) {
        if when == Flush::Now {
            self.host.exporter().flush_events(now);
        } else {
            self.events_due = true;
        }
        if self.memory.merge_scan_pages > 0 {
            self.merge_pages(now);
        }
        // Host memory, when it changed (most intervals it does not: the record would only cost
        // root time).
        let host_memory = (self.pool.guest_pages_backed(), self.pool.free_frames());
        if self.memory.reported != Some(host_memory) {
            self.memory.reported = Some(host_memory);
            self.host.exporter().emit_or_drop(&Record::HostMemory {
                tsc: now,
                backed_pages: host_memory.0,
                peak_pages: self.pool.guest_pages_peak(),
                free_pages: host_memory.1,
            });
        }
        let interval = self.periodic.close_interval(now);
        for vm in self.vms.iter_mut().flatten() {
            let since = vm.stats_since.unwrap_or(now.saturating_sub(interval));
            if vm.interval_due.is_some() {
                if when == Flush::Paced {
                    // Its last figures have not gone yet: these go on counting, and its next
                    // record covers both intervals.
                    continue;
                }
                send_exit_interval(vm, &mut self.host);
            }
            if vm.exit_stats.is_empty() {
                vm.stats_since = Some(now);
                continue;
            }
            vm.exit_stats.take_into(&mut vm.exits_due);
            vm.interval_due = Some((now, now.saturating_sub(since)));
            vm.stats_since = Some(now);
            if when == Flush::Now {
                send_exit_interval(vm, &mut self.host);
            }
        }
    }

    /// Sends some of the exit statistics waiting since the last interval ended: one VM's per
    /// pass, more when many VMs wait (all of them within [`INTERVAL_SEND_PASSES`] passes).
    fn send_due_intervals(&mut self) {
        let waiting = self
            .vms
            .iter()
            .flatten()
            .filter(|vm| vm.interval_due.is_some())
            .count();
        let mut quota = waiting.div_ceil(INTERVAL_SEND_PASSES);
        for vm in self.vms.iter_mut().flatten() {
            if quota == 0 {
                break;
            }
            if vm.interval_due.is_some() {
                send_exit_interval(vm, &mut self.host);
                quota -= 1;
            }
        }
    }
    /// The balloon rule, after a working-set sample: when the host's pool runs low, the VM with
    /// a balloon driver and the most memory outside its working set is asked for more.
    fn apply_balloon_rule(&mut self, now: Cycles) {
        let Some(rule) = self.memory.balloon_rule else {
            return;
        };
        // One request at a time: while a VM's balloon is short of its target, the pool is about
        // to grow.
        let pending = self.vms.iter().flatten().any(|vm| {
            vm.balloon_driver && !vm.is_stopped() && vm.balloon.count() < vm.balloon.target
        });
        if pending {
            return;
        }
        // VMs waiting to grow (balloon above target) are not asked to shrink. Idle pages LZ4
        // refused stay for the balloon; with the pool full, so do all but patterns (counted as
        // the balloon's too: the rule errs towards asking).
        let compressing = self.memory.compression.after_samples > 0;
        let pool_has_room = self.pool.compress_pool_has_room();
        let candidates: Vec<Candidate> = self
            .vms
            .iter()
            .flatten()
            .filter(|vm| vm.balloon_driver && !vm.is_stopped())
            .filter(|vm| vm.balloon.count() <= vm.balloon.target)
            .map(|vm| {
                let ram = vm.memory.size_pages();
                let idle_pages = vm.memory.backed_pages().saturating_sub(vm.last_wss);
                let compressible_pages = if compressing && pool_has_room {
                    idle_pages.saturating_sub(vm.ages.refused_pages())
                } else {
                    0
                };
                Candidate {
                    vm: vm.id,
                    idle_pages,
                    compressible_pages,
                    target: vm.balloon.target,
                    max_target: ram - ram / 4,
                }
            })
            .collect();
        let available = self.pool.guest_pages_available();
        let Some((id, target)) = rule.decide(available, self.memory.pool_pages, &candidates) else {
            return;
        };
        let idle = candidates
            .iter()
            .find(|candidate| candidate.vm == id)
            .map_or(0, |candidate| candidate.idle_pages);
        if let Some(vm) = self.vms.get_mut(usize::from(id)).and_then(Option::as_mut) {
            vm.balloon.target = target;
            log::info!(
                "balloon rule: vm {} asked for a balloon of {target} pages",
                vm.name
            );
        }
        let pool = self.memory.pool_pages;
        self.host.exporter().emit(&Record::BalloonTarget {
            tsc: now,
            vm: id,
            target,
            idle,
            available,
            pool,
        });
    }

    /// Same-page merging's share of an interval: scans its pages, brings the changed EPT
    /// entries in, and sends the figures with the cycles it took.
    fn merge_pages(&mut self, now: Cycles) {
        let started = self.host.now();
        let mut memories: Vec<Option<&mut GuestMemory>> = self
            .vms
            .iter_mut()
            .map(|vm| vm.as_mut().map(|vm| &mut vm.memory))
            .collect();
        let scanned = self.pool.merge_scan(
            &mut memories,
            &mut self.memory.merge_cursor,
            self.memory.merge_scan_pages,
        );
        drop(memories);
        for id in 0..self.vms.len() {
            self.sync_or_stop(id, "same-page merging", now);
        }
        let totals = self.pool.merge_totals();
        let merged_pages = self
            .vms
            .iter()
            .map(|vm| vm.as_ref().map_or(0, |vm| vm.memory.shared_pages()))
            .collect();
        let cycles = self.host.now() - started;
        self.host.exporter().emit_or_drop(&Record::Merging {
            tsc: now,
            scanned,
            cycles,
            merges: totals.merges,
            cow_breaks: totals.cow_breaks,
            shared_frames: totals.shared_frames,
            frames_saved: totals.frames_saved,
            merged_pages,
        });
    }

    /// Brings VM `id`'s EPT up to date with its memory.
    fn sync_vm(&mut self, id: usize) -> Result<(), VcpuError> {
        let Some(vm) = self.vms[id].as_mut() else {
            return Ok(());
        };
        if vm.memory.pending.is_empty() || vm.is_stopped() {
            return Ok(());
        }
        vm.sync_ept(&mut self.pool)
    }

    /// [`Self::sync_vm`] after `what` changed VM `id`'s memory; a VM whose flush fails leaves
    /// the run.
    fn sync_or_stop(&mut self, id: usize, what: &str, now: Cycles) {
        if let Err(error) = self.sync_vm(id) {
            let reason = StopReason::VmxError {
                message: alloc::format!("EPT flush after {what}: {error}"),
            };
            self.finish(id as VmId, reason, now);
        }
    }

    /// Takes and sends a working-set sample of every VM that has not stopped (its time is root
    /// time for no VM). A VM whose flush fails leaves the run.
    fn sample_memory(&mut self, now: Cycles) {
        for id in 0..self.vms.len() {
            let Some(vm) = self.vms[id].as_mut() else {
                continue;
            };
            if vm.is_stopped() {
                continue;
            }
            if let Err(error) = vm.sample_memory(now, &mut self.pool, &mut self.host) {
                let reason = StopReason::VmxError {
                    message: alloc::format!("EPT flush after the working-set walk: {error}"),
                };
                self.finish(id as VmId, reason, now);
            }
        }
        if self.memory.compression.after_samples > 0 {
            self.compress_pages(now);
        }
        self.apply_balloon_rule(now);
    }

    /// Compression's share of a working-set sample: a pass over each running VM's cold pages,
    /// their EPT entries taken out, and the figures sent with the cycles it took.
    fn compress_pages(&mut self, now: Cycles) {
        let started = self.host.now();
        let settings = self.memory.compression;
        let mut compressed_now = 0;
        for id in 0..self.vms.len() {
            let Some(vm) = self.vms[id].as_mut() else {
                continue;
            };
            if vm.is_stopped() {
                continue;
            }
            compressed_now += self.pool.compress_cold(
                &mut vm.memory,
                &mut vm.ages,
                u64::from(settings.scan_pages),
            );
            self.sync_or_stop(id, "compression", now);
        }
        let totals = self.pool.compress_totals();
        let compressed_pages = self
            .vms
            .iter()
            .map(|vm| vm.as_ref().map_or(0, |vm| vm.memory.compressed_pages()))
            .collect();
        let cycles = self.host.now() - started;
        self.host.exporter().emit_or_drop(&Record::Compression {
            tsc: now,
            compressed_now,
            cycles,
            compressed: totals.compressed,
            decompressed: totals.decompressed,
            decompress_cycles: totals.decompress_cycles,
            incompressible: totals.incompressible,
            pool_full: totals.pool_full,
            pool_frames: totals.pool_frames,
            pool_bytes: totals.pool_bytes,
            blob_pages: totals.blob_pages,
            compressed_pages,
        });
    }

    /// Sends console input waiting on the host line to the focused VM.
    fn route_input(&mut self) {
        // Bytes put in one VM's UART in a row and not yet stamped: the VM sees them together
        // (it does not run while they are routed), so one Input event stamps them once the
        // last is in.
        let mut batch: Option<(u16, u32)> = None;
        while let Some(byte) = self.host.poll_input() {
            let routed = self.input.route(byte);
            if !matches!(routed, Routed::Deliver { vm, .. } if batch.is_some_and(|(id, _)| id == vm))
            {
                self.input_stamped(batch.take());
            }
            match routed {
                Routed::Deliver { vm, byte } => {
                    if batch.is_none() {
                        self.send_answer(usize::from(vm));
                    }
                    self.input_delivered(vm, byte);
                    let (_, bytes) = batch.get_or_insert((vm, 0));
                    *bytes += 1;
                    self.wakes_changed();
                }
                Routed::EndRun => self.end_run(),
                // Input is routed only between slices or while idle: a clean point.
                Routed::Setting(setting) => self.change_setting(setting, ChangeSource::Console),
                Routed::BadSetting { kind } => {
                    self.settings.refused += 1;
                    log::warn!("setting request of unknown kind {kind} refused");
                }
                Routed::Focused { .. } | Routed::Nothing => {}
            }
        }
        self.input_stamped(batch.take());
    }

    /// Console input `byte` for VM `vm`: into its UART ([`Self::route_input`] sends the VM's
    /// answer to its previous input first, and stamps the bytes with an [`Event::Input`] once
    /// a batch is in). Out of line and cold: the run loop polls for input all the time and
    /// nearly never finds any (in Bochs every instruction is TSC time).
    #[cold]
    #[inline(never)]
    fn input_delivered(&mut self, id: u16, byte: u8) {
        if let Some(vm) = self.vms.get_mut(usize::from(id)).and_then(Option::as_mut) {
            vm.platform.push_console_input(&[byte]);
        }
    }

    /// The [`Event::Input`] of a batch of `bytes` bytes just put in VM `id`'s UART: stamped now,
    /// when the VM can see them all.
    #[cold]
    #[inline(never)]
    fn input_stamped(&mut self, batch: Option<(u16, u32)>) {
        let Some((id, bytes)) = batch else {
            return;
        };
        if self.vms.get(usize::from(id)).is_some_and(Option::is_some) {
            let now = self.host.now();
            self.host.exporter().event(
                now,
                Event::Input {
                    dt: 0,
                    vm: id,
                    bytes,
                },
            );
        }
    }

    /// Sends VM `id`'s answer to console input, if one waits, as a [`Record::Answer`].
    fn send_answer(&mut self, id: usize) {
        let answered = self
            .vms
            .get_mut(id)
            .and_then(Option::as_mut)
            .and_then(|vm| vm.platform.take_answer());
        if let Some(tsc) = answered {
            self.host
                .exporter()
                .emit_or_drop(&Record::Answer { tsc, vm: id as u16 });
        }
    }

    /// Waits with no VM runnable until `deadline` or until console input gives a halted VM an
    /// interrupt, sending output meanwhile.
    fn idle_until(&mut self, deadline: Cycles) {
        let now = self.host.now();
        self.account_root(None, now);
        while self.host.now() < deadline {
            self.host.feed_serial();
            self.route_input();
            let all_stopped = self.vms.iter().flatten().all(Vm::is_stopped);
            let serial_room = self.vms.iter().flatten().any(Vm::waits_for_serial) && {
                let now = self.host.now();
                self.wake_expired(now);
                self.vms
                    .iter()
                    .flatten()
                    .any(|vm| vm.state == RunState::Runnable)
            };
            if all_stopped || serial_room || self.vms.iter().flatten().any(Vm::interrupt_waiting) {
                break;
            }
            self.host.wait(deadline);
        }
        let now = self.host.now();
        self.accounting.idle(now - self.mark);
        self.mark = now;
    }

    /// The host ended the run: every VM still in it stops (no VM holds the CPU here).
    fn end_run(&mut self) {
        log::info!("the host ended the run");
        let now = self.host.now();
        for id in 0..self.vms.len() {
            let Some(vm) = self.vms[id].as_mut().filter(|vm| !vm.is_stopped()) else {
                continue;
            };
            let line = vm.state_line();
            log::info!("vm {} at the end: {line}", vm.name);
            self.finish(id as VmId, StopReason::EndedByHost, now);
        }
    }

    /// Takes a VM out of the run: its own record and message, the policy and the accounting.
    fn finish(&mut self, id: VmId, reason: StopReason, now: Cycles) {
        if let Some(vm) = self.vms[usize::from(id)].as_mut() {
            vm.stop(reason, &mut self.host);
        }
        if let Some(disk) = self.disk.as_mut() {
            disk.stopped(id, now);
            self.wakes.at = None;
        }
        self.policy.finished(id);
        self.accounting.stopped(id, now);
    }

    /// Gives the hardware VM `id`'s vCPU state, saving the previous VM's first (nothing to do
    /// when `id` ran last: its state is still there).
    fn switch_to(&mut self, id: VmId) -> Result<(), VcpuError> {
        if self.current == Some(id) {
            return Ok(());
        }
        if let Some(previous) = self.current.take() {
            if let Some(vm) = self.vms[usize::from(previous)].as_mut() {
                vm.vcpu.switch_out()?;
            }
        }
        self.current = Some(id);
        match self.vms[usize::from(id)].as_mut() {
            Some(vm) => vm.vcpu.switch_in(),
            None => Ok(()),
        }
    }

    /// The event of VM `id`'s slice ending for `why`, with what it waits for if it blocked.
    fn descheduled(&self, id: VmId, why: SliceEnd) -> Event {
        let disk = self.disk.as_ref().is_some_and(|disk| disk.outstanding(id));
        let on = self.vms[usize::from(id)]
            .as_ref()
            .and_then(|vm| vm.blocked_on(disk));
        descheduled(id, why, on)
    }

    /// Runs VM `id` for one slice of `length` cycles on the run's quantum clock: until the
    /// slice is over, the VM blocks, or it stops. Other VMs' wake-up deadlines and this VM's
    /// own interrupts interrupt the slice (the timer is armed for the nearest) so that they
    /// happen on time; the slice then goes on.
    fn run_slice(&mut self, id: VmId, length: Cycles) {
        let start = self.host.now();
        self.account_root(None, start);
        self.accounting.switch_in(id, start);
        let waiting = self.accounting.wake_waiting();
        self.host.exporter().hold(waiting);
        self.host
            .exporter()
            .event(start, Event::Run { dt: 0, vm: id });
        let Some(vm) = self.vms[usize::from(id)].as_ref() else {
            return;
        };
        if vm.state == RunState::Blocked(Blocked::Held) {
            // A VM whose start is staggered leaves the run queue, blocked until its start.
            self.accounting.switch_out(id, start, SliceEnd::Blocked);
            let event = self.descheduled(id, SliceEnd::Blocked);
            self.host.exporter().event(start, event);
            self.policy.blocked(id);
            return;
        }
        if let Err(error) = self.switch_to(id) {
            return self.vcpu_failed(id, error);
        }
        let debt = self.overrun.get(usize::from(id)).copied().unwrap_or(0);
        let mut run = SliceRun {
            slice: Slice::new(
                self.quantum_clock,
                start,
                length.saturating_sub(debt).max(length / 2).max(1),
            ),
            granted: length,
            started: start,
            cut_short: false,
            handling: None,
            last_exit: start,
        };
        let end = loop {
            match self.step(id, &mut run) {
                Ok(None) => continue,
                Ok(Some(end)) => break end,
                Err(error) => return self.vcpu_failed(id, error),
            }
        };
        self.end_slice(id, &run, end);
    }

    /// The nearest instant the hypervisor must act while VM `id` runs: another VM's wake-up,
    /// the serial lines' next feed, this VM's next LAPIC tick that raises something (the vector
    /// not already waiting: a deadline that changes nothing must not shorten the slice), or the
    /// moment idle detection would call it idle (only when it could: the same rule).
    fn deadline_for(&mut self, id: VmId, now: Cycles) -> Result<Option<Cycles>, VcpuError> {
        let others = self.earliest_deadline();
        // The policy may want the slice to end early for a waiting VM (a boosted waker once the
        // rate limit has passed).
        let policy = self.policy.preempt_at();
        // The serial lines' next feed: an exit of the hypervisor's own, so that they keep up
        // with guests that never exit.
        let feed = self.host.next_feed();
        let threshold = self.idle_threshold;
        let Some(vm) = self.vms[usize::from(id)].as_mut() else {
            return Ok([others, policy, feed].into_iter().flatten().min());
        };
        // The VM's own tick, whether or not it has interrupts on now: at the deadline the vector
        // becomes pending, and if IF = 0 the interrupt window delivers it the moment the guest
        // enables interrupts (xv6 holds spinlocks with IF = 0; waiting for its next slice would
        // cost a rotation). Once it is pending, later expiries fold into it and stop nobody.
        let own = vm.platform.lapic.deliverable_deadline();
        // The moment idle detection would call it idle, if it can: a VM inside an interrupt
        // handler, or with one pending, is never called idle, so that moment would end every
        // entry at once and change nothing (a preemption-timer exit per instruction, charged
        // to no slice).
        let idle = threshold
            .and_then(|threshold| vm.idle_in(threshold))
            .map(|cycles| now.saturating_add(cycles));
        Ok([others, policy, feed, own, idle]
            .into_iter()
            .flatten()
            .min())
    }

    /// One entry into VM `id` and the handling of its exit. Returns how the slice ended, or
    /// None when it goes on.
    fn step(&mut self, id: VmId, run: &mut SliceRun) -> Result<Option<SliceEnd>, VcpuError> {
        let now = self.host.now();
        let deadline = self.deadline_for(id, now)?;
        let Some(timer) = run.slice.timer(now, deadline) else {
            return Ok(Some(SliceEnd::Preempted));
        };
        let Some(vm) = self.vms[usize::from(id)].as_mut() else {
            return Ok(Some(SliceEnd::Stopped));
        };
        vm.inject_pending_interrupt(now)?;
        vm.refresh_lapic_page(&mut self.pool, now);
        let entry = self.host.now();
        if let Some(handling) = run.handling.take() {
            vm.exit_stats.record(handling.reason, entry - handling.at);
            if handling.foreign {
                // A timer exit for another VM's deadline, or a host interrupt: the hypervisor's
                // own work, not this VM's.
                run.slice.exclude(entry - handling.at);
            }
        }
        self.accounting
            .root(Some(id), entry.saturating_sub(self.mark));
        if let Some(from) = self.switches.from.take() {
            self.switches.costs.record(entry - from);
        }
        let entered = vm.vcpu.enter(timer);
        let exit = self.host.now();
        self.mark = exit;
        run.last_exit = exit;
        let entered = entered?;
        self.accounting.guest(id, exit - entry);
        vm.guest_cycles += exit - entry;
        vm.spaces.charge(exit - entry);
        run.slice.guest_ran(entered.timer_used.min(timer));
        let foreign = match entered.exit {
            Exit::Timer => run.slice.left(exit).is_some(),
            Exit::HostInterrupt => true,
            _ => false,
        };
        run.handling = Some(Handling {
            reason: entered.reason,
            at: exit,
            foreign,
        });
        let mut cx = Context {
            vm,
            pool: &mut self.pool,
            host: &mut self.host,
        };
        let next = exits::handle(&mut cx, &entered.exit)?;
        // The handler may have written into a merged page (its copy needs its mapping).
        cx.vm.sync_ept(cx.pool)?;
        if let Some(disk) = self.disk.as_mut() {
            if disk.take_from(exit, id, &mut vm.platform) {
                self.wakes.at = None;
            }
        }
        if let (Some(threshold), Next::Resume) = (self.idle_threshold, next) {
            if vm.looks_idle(threshold) {
                let rip = vm.vcpu.read(Reg::Rip)?;
                vm.state = RunState::Blocked(Blocked::Halted {
                    rip,
                    interrupts: true,
                });
            }
        }
        let blocked = matches!(vm.state, RunState::Blocked(_));
        // Every exit is an event only in full-rate traces: elsewhere this hot path stays free of
        // the exporter's work.
        if self.exit_events {
            let cycles = u32::try_from(self.host.now() - exit).unwrap_or(u32::MAX);
            self.host.exporter().event(
                exit,
                Event::Exit {
                    dt: 0,
                    vm: id,
                    reason: entered.reason,
                    cycles,
                },
            );
        }
        Ok(match next {
            // Idle detection found the VM idle.
            Next::Resume if blocked => Some(SliceEnd::Blocked),
            Next::Resume => {
                // Feed the serial lines and wake whoever is due. This follows from the exit, so
                // the slice pays for it (only exits for other VMs' deadlines and host interrupts
                // are excluded). After the slice's last exit the run loop does it among the work
                // between slices that the switch cost leaves out.
                let now = self.host.now();
                if run.slice.left(now).is_none() {
                    return Ok(Some(SliceEnd::Preempted));
                }
                self.host.feed_serial();
                self.wake_expired(now);
                if self.policy.preempt_at().is_some_and(|at| now >= at) {
                    run.cut_short = true;
                    return Ok(Some(SliceEnd::Preempted));
                }
                None
            }
            Next::Leave if blocked => Some(SliceEnd::Blocked),
            Next::Leave => Some(SliceEnd::Stopped),
        })
    }

    /// The slice of VM `id` ended for `end`: the last exit's cost, the accounting and the
    /// policy.
    fn end_slice(&mut self, id: VmId, run: &SliceRun, end: SliceEnd) {
        let now = self.host.now();
        if let (Some(handling), Some(vm)) = (run.handling, self.vms[usize::from(id)].as_mut()) {
            vm.exit_stats.record(handling.reason, now - handling.at);
        }
        self.account_root(Some(id), now);
        self.accounting.switch_out(id, now, end);
        let event = self.descheduled(id, end);
        self.host.exporter().event(now, event);
        // What the slice consumed, from its start to now, for policies that keep credit.
        self.policy.advance(now);
        self.policy.charge(id, now.saturating_sub(run.started));
        match end {
            SliceEnd::Preempted if run.cut_short => {
                // Ended early for a waiting VM: no quantum error to take, nothing carries over.
                if let Some(overrun) = self.overrun.get_mut(usize::from(id)) {
                    *overrun = 0;
                }
                self.policy.slice_expired(id);
                self.switches.from = Some(run.last_exit);
            }
            SliceEnd::Preempted => {
                // The quantum error on the slice's own clock: wall time to the last exit (less
                // the hypervisor's own work), or guest time, against the slice granted.
                let used = run.slice.used(run.last_exit);
                self.accounting.slice_quantum(id, run.granted, used);
                if self.quantum_clock == QuantumClock::Wall {
                    if let Some(overrun) = self.overrun.get_mut(usize::from(id)) {
                        *overrun = used.saturating_sub(run.slice.length()).min(run.granted / 2);
                    }
                }
                self.policy.slice_expired(id);
                self.switches.from = Some(run.last_exit);
            }
            SliceEnd::Blocked | SliceEnd::Yielded | SliceEnd::Stopped => {
                // It gave the CPU up before its slice ended: nothing carries over.
                if let Some(overrun) = self.overrun.get_mut(usize::from(id)) {
                    *overrun = 0;
                }
                self.wakes_changed();
                if let (SliceEnd::Blocked, Some(disk)) = (end, self.disk.as_mut()) {
                    disk.blocked(id, now);
                }
                match end {
                    SliceEnd::Blocked => self.policy.blocked(id),
                    SliceEnd::Yielded => self.policy.yielded(id),
                    _ => self.policy.finished(id),
                }
            }
        }
    }

    /// A vCPU operation failed while VM `id` held the CPU: it leaves the run.
    fn vcpu_failed(&mut self, id: VmId, error: VcpuError) {
        let now = self.host.now();
        self.account_root(Some(id), now);
        self.accounting.switch_out(id, now, SliceEnd::Stopped);
        self.host
            .exporter()
            .event(now, descheduled(id, SliceEnd::Stopped, None));
        if let Some(vm) = self.vms[usize::from(id)].as_mut() {
            vm.stop(
                StopReason::VmxError {
                    message: alloc::format!("{error}"),
                },
                &mut self.host,
            );
        }
        if let Some(disk) = self.disk.as_mut() {
            disk.stopped(id, now);
            self.wakes.at = None;
        }
        self.policy.finished(id);
    }

    /// The end-of-run accounting: a table on COM1 and summary records on COM2.
    fn report(&mut self) {
        let now = self.mark;
        self.host.exporter().flush_events(now);
        let summary = self.accounting.summary(now);
        let elapsed = now - self.start;
        log::info!(
            "accounting (TSC cycles, {} Hz): elapsed {elapsed}, root {}, idle {}, conservation \
             error {}",
            self.tsc_hz,
            summary.root_total(),
            summary.idle,
            summary.conservation_error()
        );
        log::info!(
            "{:<12} {:>12} {:>12} {:>12} {:>12} {:>7} {:>7} {:>7} {:>10} {:>10}",
            "vm",
            "guest",
            "root",
            "runnable",
            "blocked",
            "slices",
            "preempt",
            "yields",
            "wake p99",
            "wake max"
        );
        for id in 0..summary.vms.len() {
            self.send_answer(id);
        }
        for (id, vm) in summary.vms.iter().enumerate() {
            let name = self.vm(id).map_or("?", |vm| vm.name.as_str());
            let (blocked_console, blocked_records) = self
                .vm(id)
                .map_or((0, 0), |vm| (vm.blocked_console, vm.blocked_records));
            let wake = vm.wake_latency.unwrap_or_default();
            let quantum_error = vm.quantum_error.unwrap_or_default();
            log::info!(
                "{:<12} {:>12} {:>12} {:>12} {:>12} {:>7} {:>7} {:>7} {:>10} {:>10}",
                name,
                vm.guest,
                vm.root,
                vm.runstates.runnable,
                vm.runstates.blocked,
                vm.slices,
                vm.preemptions,
                vm.yields,
                wake.p99,
                wake.max
            );
            let guest_records_dropped = self.host.exporter().guest_dropped(id as u16);
            self.host
                .exporter()
                .emit(&Record::VmSummary(record::VmSummary {
                    vm: id as u16,
                    running: vm.runstates.running,
                    runnable: vm.runstates.runnable,
                    blocked: vm.runstates.blocked,
                    stopped: vm.runstates.stopped,
                    guest: vm.guest,
                    root: vm.root,
                    slices: vm.slices,
                    preemptions: vm.preemptions,
                    yields: vm.yields,
                    wakes: vm.wakes,
                    wake_p50: wake.p50,
                    wake_p95: wake.p95,
                    wake_p99: wake.p99,
                    wake_max: wake.max,
                    quantum_error_median_ppm: quantum_error.median_ppm,
                    quantum_error_max_ppm: quantum_error.max_abs_ppm as i64,
                    blocked_console,
                    blocked_records,
                    guest_records_dropped,
                }));
        }
        if let Some(disk) = self.disk.as_mut() {
            let end = self.host.now();
            for id in 0..self.vms.len() {
                disk.woken(id as VmId, end);
            }
            for summary in disk.summaries() {
                log::info!(
                    "shared disk {}: {} requests, {} sectors, wait p99 {} max {}, service p99 {}, blocked on disk {}",
                    self.vms
                        .get(usize::from(summary.vm))
                        .and_then(Option::as_ref)
                        .map_or("?", |vm| vm.name.as_str()),
                    summary.requests,
                    summary.sectors,
                    summary.wait_p99,
                    summary.wait_max,
                    summary.service_p99,
                    summary.blocked_disk,
                );
                self.host.exporter().emit(&Record::DiskQueue(summary));
            }
        }
        let dropped = self.host.exporter().dropped();
        self.host
            .exporter()
            .emit(&Record::RunSummary(record::RunSummary {
                policy: String::from(self.policy.name()),
                quantum_cycles: self.quantum,
                elapsed,
                root: summary.root_total(),
                idle: summary.idle,
                switch_median: self.switches.costs.percentile(500).unwrap_or(0),
                switch_max: self.switches.costs.max().unwrap_or(0),
                switches: self.switches.costs.count(),
                dropped_records: dropped,
            }));
    }
}

/// The policy `config` asks for, over its VMs, its first accounting period starting at `now`.
fn make_policy(
    config: &RunConfig,
    quantum: Cycles,
    tsc_hz: u64,
    now: Cycles,
) -> Result<Box<dyn Policy>, ConfigError> {
    let weights: Vec<u32> = config.vms.iter().map(|vm| vm.weight).collect();
    Ok(match config.policy {
        SchedulerPolicy::RoundRobin => Box::new(RoundRobin::new(quantum, &weights)?),
        SchedulerPolicy::Boost => Box::new(RoundRobin::new(quantum, &weights)?.with_wake_boost()),
        SchedulerPolicy::Credit => {
            let timing = CreditTiming {
                quantum,
                period: us_to_cycles(u64::from(config.credit.period_us), tsc_hz),
                ratelimit: us_to_cycles(u64::from(config.credit.ratelimit_us), tsc_hz),
            };
            let vms: Vec<CreditVm> = config
                .vms
                .iter()
                .map(|vm| CreditVm {
                    weight: vm.weight,
                    cap_pct: vm.cap_pct,
                })
                .collect();
            Box::new(Credit::new(timing, &vms, now)?)
        }
    })
}

impl Settings {
    /// The changes `config` schedules, on the clock of a run that starts at `start`.
    fn new(config: &RunConfig, start: Cycles, tsc_hz: u64) -> Self {
        let mut scheduled: Vec<(Cycles, Setting)> = config
            .changes
            .iter()
            .map(|change| {
                let at = start.saturating_add(us_to_cycles(change.at_us, tsc_hz));
                (at, change.setting)
            })
            .collect();
        // Latest first; changes due at the same time keep the lab's order.
        scheduled.sort_by_key(|&(at, _)| at);
        scheduled.reverse();
        let next_at = scheduled.last().map_or(Cycles::MAX, |change| change.0);
        Self {
            scheduled,
            next_at,
            policy: config.policy,
            refused: 0,
        }
    }
}

/// Why the policy refused a setting that passed the lab's checks (the checks should leave it
/// nothing to refuse; this keeps the refusal honest if they ever do).
fn policy_refusal(setting: Setting, error: ConfigError, policy: SchedulerPolicy) -> SettingError {
    match (setting, error) {
        (Setting::Weight { vm, .. } | Setting::Cap { vm, .. }, ConfigError::UnknownVm { .. }) => {
            SettingError::UnknownVm { vm }
        }
        (Setting::Cap { .. }, ConfigError::NoCaps) => SettingError::CapNeedsCredit { policy },
        (Setting::Quantum { us }, _) => SettingError::Quantum { us },
        (Setting::Weight { weight, .. }, _) => SettingError::Weight { weight },
        (Setting::Cap { cap_pct, .. }, _) => SettingError::Cap { cap_pct },
    }
}

/// The event of VM `vm`'s slice ending for `why`; a VM that blocked waits `on` something
/// (`Interrupt` if its state does not say: it cannot, a blocked slice leaves the VM blocked).
fn descheduled(vm: VmId, why: SliceEnd, on: Option<BlockedOn>) -> Event {
    let why = match why {
        SliceEnd::Preempted => record::SliceEnd::Preempted,
        SliceEnd::Yielded => record::SliceEnd::Yielded,
        SliceEnd::Blocked => record::SliceEnd::Blocked(on.unwrap_or(BlockedOn::Interrupt)),
        SliceEnd::Stopped => record::SliceEnd::Stopped,
    };
    Event::Descheduled { dt: 0, vm, why }
}

impl<V, F, H> core::fmt::Debug for Machine<V, F, H> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Machine")
            .field("vms", &self.vms.len())
            .field("start", &self.start)
            .field("mark", &self.mark)
            .finish_non_exhaustive()
    }
}

/// The exit handler's entry for one exit, outside a run (tests drive single exits this way).
pub fn handle_exit<V: Vcpu, F: Frames, H: Host>(
    vm: &mut Vm<V>,
    pool: &mut HostMemory<F>,
    host: &mut H,
    exit: &Exit,
) -> Result<Next, VcpuError> {
    let mut cx = Context { vm, pool, host };
    let next = exits::handle(&mut cx, exit)?;
    cx.vm.sync_ept(cx.pool)?;
    Ok(next)
}

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;

/// When [`Machine::flush_exit_stats`] sends the VMs' exit statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flush {
    /// Now: the run is over.
    Now,
    /// A few at a time, over the next housekeeping passes.
    Paced,
}

/// The housekeeping passes (at most one a millisecond) over which the exit statistics of one
/// interval are sent, within the default 10 ms interval. When intervals are shorter, what is
/// still waiting at an interval's end is sent then, before the new figures are taken.
const INTERVAL_SEND_PASSES: usize = 8;

/// Sends the exit statistics waiting in `vm` as the record of their interval.
fn send_exit_interval<V: Vcpu, H: Host>(vm: &mut Vm<V>, host: &mut H) {
    let Some((tsc, interval)) = vm.interval_due.take() else {
        return;
    };
    let record = Record::ExitInterval {
        tsc,
        vm: vm.id,
        interval,
        exits: core::mem::take(&mut vm.exits_due),
    };
    host.exporter().emit_or_drop(&record);
    // The vectors serve the next interval.
    if let Record::ExitInterval { exits, .. } = record {
        vm.exits_due = exits;
    }
}
