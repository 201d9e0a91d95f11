//! The run loop: mechanism only. The scheduler crate's policy decides who runs and for how
//! long; this loop arms the VMX-preemption timer, enters the VM, measures, handles exits, wakes
//! VMs whose timers expired, and waits when nobody can run.
//!
//! Time accounting (all TSC cycles): every cycle from the start of the run belongs to exactly
//! one of guest mode (VM entry to VM exit, per VM), root mode (per VM while handling its exits,
//! unattributed while switching) or idle (no VM runnable). `mark` is the instant up to which
//! cycles have been handed out, so the three always add up to the elapsed time.

use alloc::string::String;
use alloc::vec::Vec;

use carousel_protocol::config::{RunConfig, SchedulerPolicy};
use carousel_protocol::record::{self, Event, Record, StopReason, TraceLevel};
use carousel_scheduler::{
    Accounting, Cycles, LatencyHistogram, Policy, RoundRobin, SliceEnd, VmId,
};
use carousel_vmx::controls::cycles_to_preemption_ticks;
use carousel_vmx::fail::VmFail;
use carousel_vmx::fields::{GUEST_RIP, VMX_PREEMPTION_TIMER_VALUE};
use carousel_vmx::instructions as vmx;

use carousel_kernel::balloon::{Candidate, Rule};
use carousel_kernel::input::{InputRouter, Routed};

use crate::exits::{self, Next};
use crate::vm::{load_failed, RunState, Vm};
use crate::vmm::Vmx;
use crate::{arch, console, export, merge};

/// Builds the VMs of `config` and runs them until every one has stopped.
pub fn run(vmx: &Vmx, config: &RunConfig, modules: &[(String, &[u8])], tsc_hz: u64) {
    let quantum = tsc_hz.saturating_mul(u64::from(config.quantum_us)) / 1_000_000;
    crate::memory::set_guest_page_budget(config.guest_page_budget);
    let weights: Vec<u32> = config.vms.iter().map(|vm| vm.weight).collect();
    let mut vms: Vec<Option<Vm>> = Vec::with_capacity(config.vms.len());
    for (id, vm_config) in config.vms.iter().enumerate() {
        let id = id as VmId;
        let module = |name: &str| {
            modules
                .iter()
                .find(|(cmdline, _)| cmdline == name)
                .map(|(_, bytes)| *bytes)
        };
        let built = match (module(&vm_config.kernel_module), &vm_config.disk_module) {
            (None, _) => Err(load_failed(format_args!(
                "module `{}` is missing",
                vm_config.kernel_module
            ))),
            (Some(image), None) => Vm::new(vmx, id, vm_config, image, None, tsc_hz),
            (Some(image), Some(disk)) => match module(disk) {
                Some(bytes) => Vm::new(vmx, id, vm_config, image, Some(bytes), tsc_hz),
                None => Err(load_failed(format_args!("module `{disk}` is missing"))),
            },
        };
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
                export::emit(Record::VmStopped {
                    tsc: arch::rdtsc(),
                    vm: id,
                    reason,
                });
                vms.push(None);
            }
        }
    }
    let policy = match RoundRobin::new(quantum.max(1), &weights) {
        Ok(policy) if config.policy == SchedulerPolicy::Boost => policy.with_wake_boost(),
        Ok(policy) => policy,
        Err(error) => {
            log::error!("scheduler: {error}");
            return;
        }
    };
    log::info!(
        "scheduler: {}, quantum {} us = {} cycles = {} timer ticks",
        policy.name(),
        config.quantum_us,
        quantum,
        cycles_to_preemption_ticks(quantum, vmx.negotiated.preemption_timer_rate)
    );
    let now = arch::rdtsc();
    let mut machine = Machine {
        accounting: Accounting::new(vms.len(), now),
        vms,
        policy,
        rate: vmx.negotiated.preemption_timer_rate,
        start: now,
        mark: now,
        switch_from: None,
        switch_costs: LatencyHistogram::new(),
        input: InputRouter::new(config.vms.len() as u16),
        console_quiet: tsc_hz / CONSOLE_QUIET_DIVISOR,
        interval: (tsc_hz.saturating_mul(u64::from(config.interval_us)) / 1_000_000).max(1),
        interval_start: now,
        next_interval: now,
        exit_events: config.trace == TraceLevel::Full,
        host_memory: None,
        balloon_rule: config.balloon_when_free_below_pct.map(|pct| Rule {
            free_below_pct: pct,
            step_pages: config.balloon_step_pages,
        }),
        pool_pages: config.guest_page_budget.unwrap_or(
            crate::memory::guest_pages_backed()
                + crate::memory::free_bytes() / carousel_kernel::PAGE_SIZE,
        ),
        merge_scan_pages: u64::from(config.merge_scan_pages),
        merge_cursor: merge::Cursor::default(),
        memory_sample: (tsc_hz.saturating_mul(u64::from(config.memory_sample_us)) / 1_000_000),
        next_memory_sample: now,
        housekeeping_period: tsc_hz / 1000,
        next_housekeeping: 0,
        idle_threshold: config
            .idle_threshold_us
            .map(|us| (tsc_hz.saturating_mul(u64::from(us)) / 1_000_000).max(1)),
    };
    if let Some(us) = config.idle_threshold_us {
        log::info!("idle detection on: {us} us in the idle address space with nothing pending");
    }
    // Staggered starts: VM i waits, blocked on its timer, until i × the stagger.
    let stagger = tsc_hz.saturating_mul(u64::from(config.boot_stagger_us)) / 1_000_000;
    for (index, vm) in machine.vms.iter_mut().enumerate().skip(1) {
        if let Some(vm) = vm.as_mut().filter(|_| stagger > 0) {
            vm.held = true;
            vm.timer_deadline = Some(now + stagger * index as u64);
            vm.state = RunState::Blocked {
                rip: 0,
                interrupts: false,
            };
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
    machine.run();
    machine.flush_exit_stats(arch::rdtsc());
    machine.report(quantum, tsc_hz);
    for (vm, vm_config) in machine.vms.iter().zip(&config.vms) {
        let Some(vm) = vm else { continue };
        let lag = vm.platform.timer_lag;
        if lag.ticks > 0 {
            export::emit(Record::TimerLag {
                vm: vm.id,
                ticks: lag.ticks,
                coalesced: lag.coalesced,
                lag_total: lag.total_cycles,
                lag_max: lag.max_cycles,
            });
        }
        export::emit(Record::AddressSpaces {
            vm: vm.id,
            spaces: vm.spaces.top(ADDRESS_SPACES_REPORTED),
        });
        if vm_config.persist {
            persist_disk(vm);
        }
    }
    for vm in machine.vms.into_iter().flatten() {
        vm.memory.release();
    }
}

struct Machine {
    vms: Vec<Option<Vm>>,
    policy: RoundRobin,
    accounting: Accounting,
    /// IA32_VMX_MISC[4:0]: timer ticks are TSC cycles >> rate.
    rate: u8,
    start: Cycles,
    /// Cycles up to this instant have been accounted.
    mark: Cycles,
    /// The VM exit that ended the last slice by preemption: the switch cost runs from there to
    /// the next VM entry.
    switch_from: Option<Cycles>,
    switch_costs: LatencyHistogram,
    /// Console input from the host, to the focused VM.
    input: InputRouter,
    /// A VM's unfinished console line goes out after this many quiet cycles.
    console_quiet: Cycles,
    /// Metrics interval (exit statistics), its start, and when the next one ends.
    interval: Cycles,
    interval_start: Cycles,
    next_interval: Cycles,
    /// Every VM exit goes out as an event (a full-rate trace).
    exit_events: bool,
    /// Guest pages backed and free pages, as last sent.
    host_memory: Option<(u64, u64)>,
    /// The balloon rule, and the pages of the host's pool it measures against.
    balloon_rule: Option<Rule>,
    pool_pages: u64,
    /// Same-page merging: pages scanned per interval (0: off), and where the scan goes on.
    merge_scan_pages: u64,
    merge_cursor: merge::Cursor,
    /// Working-set sampling period (0: off) and when the next sample is due.
    memory_sample: Cycles,
    next_memory_sample: Cycles,
    /// Housekeeping runs at most once per period (a millisecond of TSC time).
    housekeeping_period: Cycles,
    next_housekeeping: Cycles,
    /// Idle detection: a VM that spends this many guest cycles in its idle address space
    /// with nothing pending is treated as halted until its next interrupt. None: off.
    idle_threshold: Option<Cycles>,
}

/// Address spaces per VM in the end-of-run record.
const ADDRESS_SPACES_REPORTED: usize = 16;

/// Sends every disk sector `vm` wrote back to the host (lab `persist = true`), waiting for
/// the line as needed: the run is over, and nothing the guest wrote may be lost.
fn persist_disk(vm: &Vm) {
    let ide = &vm.platform.ide;
    let mut sent = 0u64;
    for lba in ide.dirty_sectors() {
        let Some(data) = ide.sector(lba) else {
            continue;
        };
        export::flush();
        export::emit(Record::DiskSector {
            vm: vm.id,
            lba,
            data: data.to_vec(),
        });
        sent += 1;
    }
    export::flush();
    log::info!("vm {}: {sent} written disk sectors sent back", vm.name);
}

/// The event of VM `vm`'s slice ending for `why`.
fn descheduled(vm: VmId, why: SliceEnd) -> Event {
    let why = match why {
        SliceEnd::Preempted => record::SliceEnd::Preempted,
        SliceEnd::Yielded => record::SliceEnd::Yielded,
        SliceEnd::Blocked => record::SliceEnd::Blocked,
        SliceEnd::Stopped => record::SliceEnd::Stopped,
    };
    Event::Descheduled { dt: 0, vm, why }
}

/// An unfinished console line (a prompt) is printed after 1/20 s without output.
const CONSOLE_QUIET_DIVISOR: u64 = 20;

impl Machine {
    fn run(&mut self) {
        loop {
            // Periodic work (console input, prompts, metric export, feeding the serial lines)
            // is not part of a switch: the switch cost leaves it out (it is root time all the
            // same).
            let before = arch::rdtsc();
            self.housekeeping(before);
            console::drain();
            export::drain();
            // Wake-ups are due now, not at the next housekeeping (when every VM is blocked no
            // exit runs the check either).
            self.wake_expired(before);
            if let Some(from) = self.switch_from.as_mut() {
                *from += arch::rdtsc() - before;
            }
            if let Some((id, slice)) = self.policy.pick_next() {
                self.run_slice(id, slice);
                continue;
            }
            match self.earliest_deadline() {
                Some(deadline) => self.idle_until(deadline),
                // Only console input can wake a VM halted with interrupts enabled: wait for it.
                None if self.vms.iter().flatten().any(Vm::waits_for_interrupt) => {
                    self.idle_until(Cycles::MAX)
                }
                None => {
                    // Nothing runnable and nothing that can wake a blocked VM.
                    let now = arch::rdtsc();
                    let mut any = false;
                    for id in 0..self.vms.len() {
                        if let Some(RunState::Blocked { rip, .. }) =
                            self.vm(id).map(|vm| vm.state.clone())
                        {
                            any = true;
                            self.finish(id as VmId, StopReason::HaltedForever { rip }, now);
                        }
                    }
                    if !any {
                        break;
                    }
                }
            }
        }
        let now = arch::rdtsc();
        self.accounting.root(None, now - self.mark);
        self.mark = now;
    }

    fn vm(&self, id: usize) -> Option<&Vm> {
        self.vms.get(id).and_then(Option::as_ref)
    }

    /// Hands out [mark, now) as root time for `vm` (None: no VM's).
    fn account_root(&mut self, vm: Option<VmId>, now: Cycles) {
        self.accounting.root(vm, now.saturating_sub(self.mark));
        self.mark = now;
    }

    /// The earliest instant a blocked VM may wake: its SET_TIMER deadline, or its LAPIC timer
    /// when it halted with interrupts enabled.
    fn earliest_deadline(&self) -> Option<Cycles> {
        self.vms
            .iter()
            .flatten()
            .filter_map(Vm::wake_deadline)
            .min()
    }

    /// Wakes every blocked VM whose timer expired or that has an interrupt to take by `now`.
    /// Runs after every exit, so it stays small.
    fn wake_expired(&mut self, now: Cycles) {
        for id in 0..self.vms.len() {
            let Some(vm) = self.vms[id].as_mut() else {
                continue;
            };
            if let Some(event) = vm.wake_event(now) {
                vm.state = RunState::Runnable;
                vm.held = false;
                export::event(
                    now,
                    Event::Wake {
                        dt: 0,
                        vm: id as VmId,
                    },
                );
                self.policy.woken(id as VmId);
                // Latency counts from the event (a deadline), not from when it was noticed.
                self.accounting.woken(id as VmId, event);
            }
        }
    }

    /// Between slices, at most once a millisecond of TSC time: console input from the host,
    /// prompts left unfinished by quiet guests, and the wake-ups these cause. Input waits at
    /// most a slice this way, and the switch path stays short.
    fn housekeeping(&mut self, now: Cycles) {
        if now < self.next_housekeeping {
            return;
        }
        self.next_housekeeping = now + self.housekeeping_period;
        if now >= self.next_interval {
            self.flush_exit_stats(now);
            self.next_interval = now + self.interval;
        }
        if self.memory_sample > 0 && now >= self.next_memory_sample {
            self.sample_memory(now);
            self.next_memory_sample = now + self.memory_sample;
        }
        self.route_input();
        for vm in self.vms.iter_mut().flatten() {
            vm.platform.console.flush_idle(now, self.console_quiet);
        }
        self.wake_expired(now);
    }

    /// Sends each VM's exit statistics of the interval that ends at `now`.
    fn flush_exit_stats(&mut self, now: Cycles) {
        export::flush_events(now);
        if self.merge_scan_pages > 0 {
            self.merge_pages(now);
        }
        // Host memory, when it changed (most intervals it does not: the record would only
        // cost root time).
        let host = (
            crate::memory::guest_pages_backed(),
            crate::memory::free_bytes() / carousel_kernel::PAGE_SIZE,
        );
        if self.host_memory != Some(host) {
            self.host_memory = Some(host);
            export::emit_or_drop(Record::HostMemory {
                tsc: now,
                backed_pages: host.0,
                free_pages: host.1,
            });
        }
        let interval = now - self.interval_start;
        self.interval_start = now;
        for vm in self.vms.iter_mut().flatten() {
            if !vm.exit_stats.is_empty() {
                let exits = vm.exit_stats.take();
                export::emit_or_drop(Record::ExitInterval {
                    tsc: now,
                    vm: vm.id,
                    interval,
                    exits,
                });
            }
        }
    }

    /// The balloon rule, after a working-set sample: when the host's pool runs low, the VM
    /// with a balloon driver and the most memory outside its working set is asked for more.
    fn apply_balloon_rule(&mut self, now: Cycles) {
        let Some(rule) = self.balloon_rule else {
            return;
        };
        // One request at a time: while a VM's balloon is short of its target, the pool is
        // about to grow.
        let pending = self.vms.iter().flatten().any(|vm| {
            vm.balloon_driver
                && !matches!(vm.state, RunState::Stopped(_))
                && vm.balloon.count() < vm.balloon.target
        });
        if pending {
            return;
        }
        // VMs waiting to grow (balloon above target) are not asked to shrink.
        let candidates: Vec<Candidate> = self
            .vms
            .iter()
            .flatten()
            .filter(|vm| vm.balloon_driver && !matches!(vm.state, RunState::Stopped(_)))
            .filter(|vm| vm.balloon.count() <= vm.balloon.target)
            .map(|vm| {
                let ram = vm.memory.size_pages();
                Candidate {
                    vm: vm.id,
                    idle_pages: vm.memory.backed_pages().saturating_sub(vm.last_wss),
                    target: vm.balloon.target,
                    max_target: ram - ram / 4,
                }
            })
            .collect();
        let available = crate::memory::guest_pages_available();
        let Some((id, target)) = rule.decide(available, self.pool_pages, &candidates) else {
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
        export::emit(Record::BalloonTarget {
            tsc: now,
            vm: id,
            target,
            idle,
            available,
            pool: self.pool_pages,
        });
    }

    /// Same-page merging's share of an interval: scans its pages, brings the changed EPT
    /// entries in, and sends the figures with the cycles it took.
    fn merge_pages(&mut self, now: Cycles) {
        let started = arch::rdtsc();
        let scanned = merge::scan(&mut self.vms, &mut self.merge_cursor, self.merge_scan_pages);
        for id in 0..self.vms.len() {
            let synced = self.vms[id].as_mut().map_or(Ok(()), Vm::sync_ept);
            if let Err(error) = synced {
                let reason = StopReason::VmxError {
                    message: alloc::format!("INVEPT after same-page merging: {error}"),
                };
                self.finish(id as VmId, reason, now);
            }
        }
        let (merges, cow_breaks, shared_frames, frames_saved) = merge::totals();
        export::emit_or_drop(Record::Merging {
            tsc: now,
            scanned,
            cycles: arch::rdtsc() - started,
            merges,
            cow_breaks,
            shared_frames,
            frames_saved,
            merged_pages: self
                .vms
                .iter()
                .map(|vm| vm.as_ref().map_or(0, |vm| vm.memory.shared_pages()))
                .collect(),
        });
    }

    /// Takes and sends a working-set sample of every VM that has not stopped (its time is root
    /// time for no VM). A VM whose INVEPT fails leaves the run.
    fn sample_memory(&mut self, now: Cycles) {
        for id in 0..self.vms.len() {
            let Some(vm) = self.vms[id].as_mut() else {
                continue;
            };
            if matches!(vm.state, RunState::Stopped(_)) {
                continue;
            }
            if let Err(error) = vm.sample_memory(now) {
                let reason = StopReason::VmxError {
                    message: alloc::format!("INVEPT after the working-set walk: {error}"),
                };
                self.finish(id as VmId, reason, now);
            }
        }
        self.apply_balloon_rule(now);
    }

    /// Sends console input waiting on the host line to the focused VM.
    fn route_input(&mut self) {
        while let Some(byte) = console::poll_input() {
            match self.input.route(byte) {
                Routed::Deliver { vm, byte } => {
                    if let Some(vm) = self.vms.get_mut(usize::from(vm)).and_then(Option::as_mut) {
                        vm.platform.push_console_input(&[byte]);
                    }
                }
                Routed::EndRun => self.end_run(),
                Routed::Focused { .. } | Routed::Nothing => {}
            }
        }
    }

    /// Waits with no VM runnable until `deadline` or until console input gives a halted VM an
    /// interrupt, sending output meanwhile.
    fn idle_until(&mut self, deadline: Cycles) {
        let now = arch::rdtsc();
        self.account_root(None, now);
        while arch::rdtsc() < deadline {
            console::drain();
            export::drain();
            self.route_input();
            let all_stopped = self
                .vms
                .iter()
                .flatten()
                .all(|vm| matches!(vm.state, RunState::Stopped(_)));
            if all_stopped || self.vms.iter().flatten().any(Vm::interrupt_waiting) {
                break;
            }
            core::hint::spin_loop();
        }
        let now = arch::rdtsc();
        self.accounting.idle(now - self.mark);
        self.mark = now;
    }

    /// The host ended the run: every VM still in it stops (no VM holds the CPU here).
    fn end_run(&mut self) {
        log::info!("the host ended the run");
        let now = arch::rdtsc();
        for id in 0..self.vms.len() {
            if let Some(vm) = self
                .vm(id)
                .filter(|vm| !matches!(vm.state, RunState::Stopped(_)))
            {
                crate::println!(
                    "{}vm {} at the end: {}",
                    crate::console::PREFIX,
                    vm.name,
                    vm.state_line()
                );
                self.finish(id as VmId, StopReason::EndedByHost, now);
            }
        }
    }

    /// Takes a VM out of the run: its own record and message, the policy and the accounting.
    fn finish(&mut self, id: VmId, reason: StopReason, now: Cycles) {
        if let Some(vm) = self.vms[usize::from(id)].as_mut() {
            if !matches!(vm.state, RunState::Stopped(_)) {
                vm.stop(reason);
            }
        }
        self.policy.finished(id);
        self.accounting.stopped(id, now);
    }

    /// Runs VM `id` for at most `slice` cycles of guest time: until the slice is used up, the
    /// VM blocks, or it stops. Other VMs' timer deadlines interrupt the slice (the timer is
    /// armed for the nearer of the two) so that they are woken on time; the slice then goes on.
    fn run_slice(&mut self, id: VmId, slice: Cycles) {
        let start = arch::rdtsc();
        self.account_root(None, start);
        self.accounting.switch_in(id, start);
        export::event(start, Event::Run { dt: 0, vm: id });
        if self.vms[usize::from(id)].as_ref().is_some_and(|vm| vm.held) {
            // A VM whose start is staggered leaves the run queue, blocked until its start.
            self.accounting.switch_out(id, start, SliceEnd::Blocked);
            export::event(start, descheduled(id, SliceEnd::Blocked));
            self.policy.blocked(id);
            return;
        }
        let rate = self.rate;
        let mut slice_left = cycles_to_preemption_ticks(slice, rate).max(1);
        let mut guest_in_slice: Cycles = 0;
        let mut last_exit;
        // The exit being handled: its reason and when it happened (its cost ends at the next
        // entry, or at the end of the slice).
        let mut handling: Option<(u16, Cycles)> = None;
        let Some(vm) = self.vms[usize::from(id)].as_mut() else {
            return;
        };
        if let Err(error) = vm.make_current() {
            return self.vmx_failed(id, error);
        }
        let end = loop {
            let now = arch::rdtsc();
            // Wake other VMs on time, and give this one its own LAPIC ticks on time.
            let own = self.vms[usize::from(id)]
                .as_ref()
                .and_then(|vm| vm.platform.next_deadline());
            let until_deadline = self
                .earliest_deadline()
                .into_iter()
                .chain(own)
                .min()
                .map_or(u32::MAX, |deadline| {
                    cycles_to_preemption_ticks(deadline.saturating_sub(now), rate)
                });
            let until_idle = match (self.idle_threshold, self.vms[usize::from(id)].as_ref()) {
                (Some(threshold), Some(vm)) => vm.spaces.idle_for().map_or(u32::MAX, |spent| {
                    cycles_to_preemption_ticks(threshold.saturating_sub(spent), rate)
                }),
                _ => u32::MAX,
            };
            let armed = slice_left.min(until_deadline).min(until_idle).max(1);
            let vm = self.vms[usize::from(id)]
                .as_mut()
                .expect("running VM exists");
            if let Err(error) = vm.inject_pending_interrupt(now) {
                return self.vmx_failed(id, error);
            }
            // SAFETY: this VM's VMCS is current (make_current above); the value is a count.
            if let Err(error) = unsafe { vmx::vmwrite32(VMX_PREEMPTION_TIMER_VALUE, armed) } {
                return self.vmx_failed(id, error);
            }
            let entry = arch::rdtsc();
            if let Some((reason, at)) = handling.take() {
                vm.exit_stats.record(reason, entry - at);
            }
            self.accounting
                .root(Some(id), entry.saturating_sub(self.mark));
            if let Some(from) = self.switch_from.take() {
                self.switch_costs.record(entry - from);
            }
            let entered = vm.enter();
            let exit = arch::rdtsc();
            self.mark = exit;
            last_exit = exit;
            if let Err(error) = entered {
                return self.vmx_failed(id, error);
            }
            self.accounting.guest(id, exit - entry);
            vm.spaces.charge(exit - entry);
            guest_in_slice += exit - entry;
            // The timer counts only in guest mode; its saved value is what is left of `armed`.
            let left = vmx::vmread32(VMX_PREEMPTION_TIMER_VALUE).unwrap_or(0);
            slice_left = slice_left.saturating_sub(armed.saturating_sub(left));
            let raw = vmx::read_exit();
            if let Ok(raw) = &raw {
                handling = Some(((raw.reason & 0xFFFF) as u16, exit));
            }
            let next = raw.and_then(|raw| {
                vm.reinject_interrupted_event()?;
                let next = exits::handle(vm, &raw)?;
                // The handler may have written into a merged page (its copy needs its mapping).
                vm.sync_ept()?;
                Ok(next)
            });
            if let (Some(threshold), Ok(Next::Resume)) = (self.idle_threshold, &next) {
                if vm.looks_idle(threshold) {
                    vm.state = RunState::Blocked {
                        rip: vmx::vmread_natural(GUEST_RIP).unwrap_or(0),
                        interrupts: true,
                    };
                }
            }
            let blocked = matches!(vm.state, RunState::Blocked { .. });
            // Every exit is an event only in full-rate traces: elsewhere this hot path stays
            // free of the exporter's lock.
            if let Some((reason, at)) = handling.filter(|_| self.exit_events) {
                let cycles = arch::rdtsc() - at;
                let cycles = u32::try_from(cycles).unwrap_or(u32::MAX);
                export::event(
                    at,
                    Event::Exit {
                        dt: 0,
                        vm: id,
                        reason,
                        cycles,
                    },
                );
            }
            match next {
                // Idle detection found the VM idle.
                Ok(Next::Resume) if blocked => break SliceEnd::Blocked,
                // Any other exit, or a timer exit for another VM's deadline: go on, feeding
                // the serial lines first. After the slice's last exit the run loop feeds them,
                // among the work between slices that the switch cost leaves out.
                Ok(Next::Resume) if slice_left > 0 => {
                    console::drain();
                    export::drain();
                    self.wake_expired(arch::rdtsc());
                    continue;
                }
                Ok(Next::Resume) => break SliceEnd::Preempted,
                Ok(Next::Leave) if blocked => break SliceEnd::Blocked,
                Ok(Next::Leave) => break SliceEnd::Stopped,
                Err(error) => return self.vmx_failed(id, error),
            }
        };
        let now = arch::rdtsc();
        if let (Some((reason, at)), Some(vm)) = (handling, self.vms[usize::from(id)].as_mut()) {
            vm.exit_stats.record(reason, now - at);
        }
        self.account_root(Some(id), now);
        self.accounting.switch_out(id, now, end);
        export::event(now, descheduled(id, end));
        match end {
            SliceEnd::Preempted => {
                self.accounting.slice_quantum(id, slice, guest_in_slice);
                self.policy.slice_expired(id);
                self.switch_from = Some(last_exit);
            }
            SliceEnd::Blocked => self.policy.blocked(id),
            SliceEnd::Yielded => self.policy.yielded(id),
            SliceEnd::Stopped => self.policy.finished(id),
        }
    }

    /// A VMX instruction failed while VM `id` held the CPU: it leaves the run.
    fn vmx_failed(&mut self, id: VmId, error: VmFail) {
        let now = arch::rdtsc();
        self.account_root(Some(id), now);
        self.accounting.switch_out(id, now, SliceEnd::Stopped);
        export::event(now, descheduled(id, SliceEnd::Stopped));
        if let Some(vm) = self.vms[usize::from(id)].as_mut() {
            vm.stop(StopReason::VmxError {
                message: alloc::format!("{error}"),
            });
        }
        self.policy.finished(id);
    }

    /// The end-of-run accounting: a table on COM1 and summary records on COM2.
    fn report(&self, quantum: Cycles, tsc_hz: u64) {
        let now = self.mark;
        export::flush_events(now);
        let summary = self.accounting.summary(now);
        let elapsed = now - self.start;
        crate::println!(
            "{}accounting (TSC cycles, {tsc_hz} Hz): elapsed {elapsed}, root {}, idle {}, \
             conservation error {}",
            crate::console::PREFIX,
            summary.root_total(),
            summary.idle,
            summary.conservation_error()
        );
        crate::println!(
            "{}{:<12} {:>12} {:>12} {:>12} {:>12} {:>7} {:>7} {:>7} {:>10} {:>10}",
            crate::console::PREFIX,
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
        for (id, vm) in summary.vms.iter().enumerate() {
            let name = self.vm(id).map_or("?", |vm| vm.name.as_str());
            let wake = vm.wake_latency.unwrap_or_default();
            let quantum_error = vm.quantum_error.unwrap_or_default();
            crate::println!(
                "{}{:<12} {:>12} {:>12} {:>12} {:>12} {:>7} {:>7} {:>7} {:>10} {:>10}",
                crate::console::PREFIX,
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
            export::emit(Record::VmSummary(record::VmSummary {
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
            }));
        }
        export::emit(Record::RunSummary(record::RunSummary {
            policy: String::from(self.policy.name()),
            quantum_cycles: quantum,
            elapsed,
            root: summary.root_total(),
            idle: summary.idle,
            switch_median: self.switch_costs.percentile(500).unwrap_or(0),
            switch_max: self.switch_costs.max().unwrap_or(0),
            switches: self.switch_costs.count(),
            dropped_records: export::dropped(),
        }));
    }
}
