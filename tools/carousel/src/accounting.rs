//! Accounting: where each VM's time went, read from the records of one run.
//!
//! What is here: [`Accounting::from_records`] gathers the hypervisor's end-of-run summaries (one
//! `VmSummary` per VM, one `RunSummary`) and the guests' own `GuestMetric` reports into one
//! [`VmAccount`] per VM plus the run's summary; the figures derived from them (CPU shares, shares
//! of the elapsed time, Jain's fairness index, cycles in microseconds, the conservation check
//! "Σ guest + root + idle = elapsed"); and [`Accounting::report`], the tables `carousel run`
//! prints. What is not: measuring. The hypervisor measures (its scheduler crate keeps the
//! books); this module only does arithmetic on what arrived, and says so when something is
//! missing or does not add up.
//!
//! Units: time is in TSC cycles as the hypervisor counted them; `Hello.tsc_hz` converts cycles to
//! seconds (in Bochs the TSC counts instructions, so that frequency is the lab's choice).

use std::fmt::Write;

use carousel_protocol::record::{
    exit_reason_name, AddressSpace, Event, ExitStat, Record, RunSummary, SliceEnd, TraceLevel,
    VmSummary,
};

/// Parts per million in one percent.
pub const PPM_PER_PERCENT: f64 = 10_000.0;
/// Microseconds in one second.
const MICROS_PER_SECOND: f64 = 1_000_000.0;
/// Name of the `spin` guest's cumulative iteration counter.
pub const SPIN_ITERATIONS: &str = "iterations";
/// Name of the `sleepy` guest's per-wake lateness, in cycles.
pub const SLEEPY_WAKE_LATE: &str = "wake_late_cycles";

/// One guest metric, over all its reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metric {
    /// The name the guest gave it.
    pub name: String,
    /// The last value reported (for a cumulative counter: the total).
    pub last: u64,
    /// The largest value reported.
    pub max: u64,
    /// How many reports arrived.
    pub count: u64,
}

/// One VM's accounting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmAccount {
    /// VM id (its index in the lab).
    pub id: u16,
    /// Name from the Hello record (`vm<id>` if none named it).
    pub name: String,
    /// Scheduling weight as the lab gave it (1 when unknown).
    pub weight: u32,
    /// The hypervisor's end-of-run summary of this VM, if it arrived.
    pub summary: Option<VmSummary>,
    /// The guest's metrics, in the order of their first report.
    pub metrics: Vec<Metric>,
    /// LAPIC timer ticks and their injection lag, if the guest ran its timer.
    pub timer: Option<TimerLag>,
    /// Guest time by address space (CR3), largest first, if it arrived.
    pub spaces: Vec<AddressSpace>,
    /// This VM's exits over the whole run, by basic exit reason.
    pub exits: std::collections::BTreeMap<u16, ExitTotals>,
    /// This VM's scheduler events, counted (when the trace carries events).
    pub events: EventTally,
    /// What the working-set samples say, if the hypervisor described this VM's memory.
    pub memory: Option<MemoryAccount>,
    /// This VM's disk transfers over the whole run.
    pub disk: DiskTotals,
}

/// One VM's disk transfers (IDE commands): how many, and the sectors they moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskTotals {
    pub reads: u64,
    pub read_sectors: u64,
    pub writes: u64,
    pub written_sectors: u64,
}

impl DiskTotals {
    /// True when the VM used its disk.
    pub fn any(&self) -> bool {
        self.reads + self.writes > 0
    }
}

/// One VM's memory: its RAM and the working-set samples (EPT accessed/dirty flags).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryAccount {
    pub ram_pages: u64,
    /// The CPU has EPT accessed/dirty flags: without them there are no samples.
    pub accessed_dirty: bool,
    pub samples: u64,
    /// Pages accessed / written in the last sample's period, and the most in any period.
    pub last_accessed: u64,
    pub last_dirty: u64,
    pub max_accessed: u64,
    /// Pages touched at all by the last sample.
    pub ever: u64,
    /// Pages in the balloon now, the host's target, and pages given back and taken back
    /// over the run (the initial balloon is not counted as given back).
    pub ballooned: u64,
    pub target: u64,
    pub inflated: u64,
    pub deflated: u64,
    /// Pages sharing a frame with identical pages (same-page merging), at the last report.
    pub merged: u64,
    /// Times the balloon rule raised this VM's target.
    pub rule_requests: u64,
}

/// Same-page merging over the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MergeTotals {
    /// Pages scanned and the root cycles the scans took.
    pub scanned: u64,
    pub cycles: u64,
    /// At the last report: merges and copies on write so far, shared frames, frames saved.
    pub merges: u64,
    pub cow_breaks: u64,
    pub shared_frames: u64,
    pub frames_saved: u64,
}

/// One VM's events, counted: slices begun, how they ended, wakes, exits, console bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventTally {
    pub runs: u64,
    pub preempted: u64,
    pub yielded: u64,
    pub blocked: u64,
    pub stopped: u64,
    pub wakes: u64,
    pub exits: u64,
    pub console_bytes: u64,
}

impl EventTally {
    fn add(&mut self, event: &Event) {
        match *event {
            Event::Run { .. } => self.runs += 1,
            Event::Descheduled { why, .. } => match why {
                SliceEnd::Preempted => self.preempted += 1,
                SliceEnd::Yielded => self.yielded += 1,
                SliceEnd::Blocked => self.blocked += 1,
                SliceEnd::Stopped => self.stopped += 1,
            },
            Event::Wake { .. } => self.wakes += 1,
            Event::Exit { .. } => self.exits += 1,
            Event::Console { bytes, .. } => self.console_bytes += u64::from(bytes),
            Event::Dropped { .. } => {}
        }
    }
}

/// One exit reason over a run: exits, their root-mode cycles, and the extremes
/// of each exit's cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExitTotals {
    pub count: u64,
    pub cycles: u128,
    pub min: u64,
    pub max: u64,
}

impl ExitTotals {
    fn add(&mut self, stat: &ExitStat) {
        self.min = if self.count == 0 {
            stat.min
        } else {
            self.min.min(stat.min)
        };
        self.max = self.max.max(stat.max);
        self.count += stat.count;
        self.cycles += u128::from(stat.cycles);
    }

    /// Mean cycles per exit.
    pub fn mean(&self) -> f64 {
        self.cycles as f64 / self.count.max(1) as f64
    }
}

/// A VM's LAPIC timer ticks: delivered, folded in while waiting, and deadline-to-delivery lag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerLag {
    pub ticks: u64,
    pub coalesced: u64,
    pub lag_total: u64,
    pub lag_max: u64,
}

impl VmAccount {
    /// The metric called `name`, if the guest reported it.
    pub fn metric(&self, name: &str) -> Option<&Metric> {
        self.metrics.iter().find(|metric| metric.name == name)
    }

    /// Guest cycles, if the summary arrived.
    pub fn guest(&self) -> Option<u64> {
        self.summary.as_ref().map(|summary| summary.guest)
    }

    fn report_metric(&mut self, name: &str, value: u64) {
        match self.metrics.iter_mut().find(|metric| metric.name == name) {
            Some(metric) => {
                metric.last = value;
                metric.max = metric.max.max(value);
                metric.count += 1;
            }
            None => self.metrics.push(Metric {
                name: name.to_string(),
                last: value,
                max: value,
                count: 1,
            }),
        }
    }
}

/// The conservation rule: every elapsed cycle was guest, root or idle time, exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conservation {
    /// Σ guest cycles over the VMs whose summaries arrived.
    pub guest: u128,
    /// All root-mode cycles (RunSummary.root).
    pub root: u64,
    /// Cycles with no VM runnable (RunSummary.idle).
    pub idle: u64,
    /// RunSummary.elapsed.
    pub elapsed: u64,
}

impl Conservation {
    /// `elapsed − (guest + root + idle)`: 0 when the rule holds; positive when cycles went
    /// unaccounted, negative when some were counted twice.
    pub fn error(&self) -> i128 {
        i128::from(self.elapsed)
            - (self.guest as i128 + i128::from(self.root) + i128::from(self.idle))
    }

    /// True when the rule holds exactly.
    pub fn holds(&self) -> bool {
        self.error() == 0
    }
}

/// Everything the records say about where the time went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accounting {
    /// TSC frequency from the Hello record (`None` if it was missing or 0).
    pub tsc_hz: Option<u64>,
    /// What a quantum measured (from the Hello record).
    pub quantum_clock: Option<carousel_protocol::config::QuantumClock>,
    /// One per VM, indexed by VM id.
    pub vms: Vec<VmAccount>,
    /// The hypervisor's whole-run summary, if it arrived.
    pub run: Option<RunSummary>,
    /// Records that did not fit (a VM id no VM has, a second summary).
    pub warnings: Vec<String>,
    /// The records cover only some of the run's VMs (`carousel report --vm`): the
    /// conservation rule, which balances every VM's guest time, is not checked.
    pub partial: bool,
    /// Event batches arrived (the trace level was not aggregate-only).
    pub has_events: bool,
    /// The trace level the Hello record announced.
    pub level: Option<TraceLevel>,
    /// Same-page merging, if it ran.
    pub merging: Option<MergeTotals>,
    /// Guest frames in use (HostMemory records): the most, and the last.
    pub host_pages: Option<HostPages>,
}

/// Guest frames in use over the run, in 4 KiB pages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostPages {
    pub peak: u64,
    pub last: u64,
    pub free_last: u64,
}

impl Accounting {
    /// Gathers the accounting from a run's records. `weights[id]` is VM `id`'s weight from the
    /// lab (1 for VMs it does not cover); weights only divide guest cycles for Jain's index.
    pub fn from_records(records: &[Record], weights: &[u32]) -> Self {
        let mut builder = AccountingBuilder::new(weights);
        for record in records {
            builder.add(record);
        }
        builder.finish()
    }
}

/// Gathers an [`Accounting`] a record at a time, as a trace decodes, so that no one needs to
/// hold the run's records.
#[derive(Debug)]
pub struct AccountingBuilder<'a> {
    accounting: Accounting,
    weights: &'a [u32],
    /// VMs the Hello record named.
    named: usize,
}

impl<'a> AccountingBuilder<'a> {
    /// An empty accounting; `weights` as for [`Accounting::from_records`].
    pub fn new(weights: &'a [u32]) -> Self {
        Self {
            accounting: Accounting {
                tsc_hz: None,
                quantum_clock: None,
                vms: Vec::new(),
                run: None,
                warnings: Vec::new(),
                partial: false,
                has_events: false,
                level: None,
                merging: None,
                host_pages: None,
            },
            weights,
            named: 0,
        }
    }

    /// Counts the next record of the run.
    pub fn add(&mut self, record: &Record) {
        let accounting = &mut self.accounting;
        let weights = self.weights;
        match record {
            Record::Hello {
                tsc_hz,
                vms,
                level,
                weights: announced,
                quantum_clock,
                ..
            } => {
                accounting.level = Some(*level);
                accounting.quantum_clock = Some(*quantum_clock);
                accounting.tsc_hz = (*tsc_hz != 0).then_some(*tsc_hz);
                self.named = vms.len();
                for (id, name) in vms.iter().enumerate() {
                    let vm = accounting.vm_mut(id as u16, weights);
                    vm.name = name.clone();
                    // The lab's weights when the caller has them, else the hypervisor's.
                    if weights.get(id).is_none() {
                        if let Some(&weight) = announced.get(id) {
                            vm.weight = weight.max(1);
                        }
                    }
                }
            }
            Record::GuestMetric {
                vm, name, value, ..
            } => accounting.vm_mut(*vm, weights).report_metric(name, *value),
            Record::VmSummary(summary) => {
                let vm = accounting.vm_mut(summary.vm, weights);
                if vm.summary.is_some() {
                    let name = vm.name.clone();
                    accounting.warnings.push(format!(
                        "a second VmSummary for VM {name} arrived; the last one counts"
                    ));
                }
                accounting.vm_mut(summary.vm, weights).summary = Some(summary.clone());
            }
            Record::RunSummary(summary) => {
                if accounting.run.is_some() {
                    accounting
                        .warnings
                        .push("a second RunSummary arrived; the last one counts".to_string());
                }
                accounting.run = Some(summary.clone());
            }
            Record::TimerLag {
                vm,
                ticks,
                coalesced,
                lag_total,
                lag_max,
            } => {
                accounting.vm_mut(*vm, weights).timer = Some(TimerLag {
                    ticks: *ticks,
                    coalesced: *coalesced,
                    lag_total: *lag_total,
                    lag_max: *lag_max,
                });
            }
            Record::ExitInterval { vm, exits, .. } => {
                let account = accounting.vm_mut(*vm, weights);
                for stat in exits {
                    account.exits.entry(stat.reason).or_default().add(stat);
                }
            }
            Record::AddressSpaces { vm, spaces } => {
                accounting.vm_mut(*vm, weights).spaces = spaces.clone();
            }
            Record::DiskIo {
                vm, sectors, write, ..
            } => {
                let disk = &mut accounting.vm_mut(*vm, weights).disk;
                if *write {
                    disk.writes += 1;
                    disk.written_sectors += u64::from(*sectors);
                } else {
                    disk.reads += 1;
                    disk.read_sectors += u64::from(*sectors);
                }
            }
            Record::MemoryInfo {
                vm,
                ram_pages,
                accessed_dirty,
                initial_balloon,
            } => {
                let memory = accounting
                    .vm_mut(*vm, weights)
                    .memory
                    .get_or_insert_default();
                memory.ram_pages = *ram_pages;
                memory.accessed_dirty = *accessed_dirty;
                memory.ballooned = *initial_balloon;
            }
            Record::HostMemory {
                backed_pages,
                free_pages,
                ..
            } => {
                let pages = accounting.host_pages.get_or_insert_default();
                pages.peak = pages.peak.max(*backed_pages);
                pages.last = *backed_pages;
                pages.free_last = *free_pages;
            }
            Record::Merging {
                scanned,
                cycles,
                merges,
                cow_breaks,
                shared_frames,
                frames_saved,
                merged_pages,
                ..
            } => {
                let totals = accounting.merging.get_or_insert_default();
                totals.scanned += scanned;
                totals.cycles += cycles;
                totals.merges = *merges;
                totals.cow_breaks = *cow_breaks;
                totals.shared_frames = *shared_frames;
                totals.frames_saved = *frames_saved;
                for (id, &pages) in merged_pages.iter().enumerate() {
                    let vm = accounting.vm_mut(id as u16, weights);
                    vm.memory.get_or_insert_default().merged = pages;
                }
            }
            Record::BalloonTarget { vm, target, .. } => {
                let memory = accounting
                    .vm_mut(*vm, weights)
                    .memory
                    .get_or_insert_default();
                memory.target = *target;
                memory.rule_requests += 1;
            }
            Record::Balloon {
                vm,
                inflate,
                pages,
                ballooned,
                target,
                ..
            } => {
                let memory = accounting
                    .vm_mut(*vm, weights)
                    .memory
                    .get_or_insert_default();
                memory.ballooned = *ballooned;
                memory.target = *target;
                if *inflate {
                    memory.inflated += u64::from(*pages);
                } else {
                    memory.deflated += u64::from(*pages);
                }
            }
            Record::WorkingSet {
                vm,
                accessed,
                dirty,
                ever,
                ..
            } => {
                let memory = accounting
                    .vm_mut(*vm, weights)
                    .memory
                    .get_or_insert_default();
                memory.samples += 1;
                memory.last_accessed = *accessed;
                memory.last_dirty = *dirty;
                memory.max_accessed = memory.max_accessed.max(*accessed);
                memory.ever = *ever;
            }
            Record::Events { events, .. } => {
                accounting.has_events = true;
                for event in events {
                    if let Some(vm) = event.vm() {
                        accounting.vm_mut(vm, weights).events.add(event);
                    }
                }
            }
            // Verdicts, events and whatever records come next are not accounting.
            _ => {}
        }
    }

    /// The accounting of the records added, with warnings about what did not arrive.
    pub fn finish(self) -> Accounting {
        let mut accounting = self.accounting;
        let named = self.named;
        if named > 0 && accounting.vms.len() > named {
            accounting.warnings.push(format!(
                "records name VM ids up to {}, but the Hello record names {named} VMs",
                accounting.vms.len() - 1
            ));
        }
        if accounting.run.is_some() {
            for vm in accounting.vms.iter().filter(|vm| vm.summary.is_none()) {
                accounting
                    .warnings
                    .push(format!("no VmSummary arrived for VM {}", vm.name));
            }
        }
        accounting
    }
}

impl Accounting {
    /// VM `id`'s account, created (with the ones before it) on first mention.
    fn vm_mut(&mut self, id: u16, weights: &[u32]) -> &mut VmAccount {
        let index = usize::from(id);
        while self.vms.len() <= index {
            let id = self.vms.len();
            self.vms.push(VmAccount {
                id: id as u16,
                name: format!("vm{id}"),
                weight: weights.get(id).copied().unwrap_or(1).max(1),
                summary: None,
                metrics: Vec::new(),
                timer: None,
                spaces: Vec::new(),
                exits: std::collections::BTreeMap::new(),
                events: EventTally::default(),
                memory: None,
                disk: DiskTotals::default(),
            });
        }
        &mut self.vms[index]
    }

    /// `cycles` in µs when the TSC frequency is known, else in cycles.
    fn cycles_text(&self, cycles: u64) -> String {
        match self.micros(cycles) {
            Some(us) => format!("{us:.1} µs"),
            None => format!("{} cycles", group(cycles)),
        }
    }

    /// True when the hypervisor sent any summary: there is something to report.
    pub fn has_summaries(&self) -> bool {
        self.run.is_some() || self.vms.iter().any(|vm| vm.summary.is_some())
    }

    /// Σ guest cycles over the VMs whose summaries arrived.
    pub fn guest_total(&self) -> u128 {
        self.vms
            .iter()
            .filter_map(VmAccount::guest)
            .map(u128::from)
            .sum()
    }

    /// VM `id`'s CPU share: its guest cycles over all VMs' guest cycles (0.0 ..= 1.0).
    pub fn cpu_share(&self, id: u16) -> Option<f64> {
        let guest = self.vms.get(usize::from(id))?.guest()?;
        fraction(u128::from(guest), self.guest_total())
    }

    /// `cycles` as a share of the run's elapsed time (0.0 ..= 1.0 when they are part of it).
    pub fn share_of_elapsed(&self, cycles: u64) -> Option<f64> {
        fraction(u128::from(cycles), u128::from(self.run.as_ref()?.elapsed))
    }

    /// `cycles` in microseconds at the run's TSC frequency.
    pub fn micros(&self, cycles: u64) -> Option<f64> {
        Some(cycles_to_micros(cycles, self.tsc_hz?))
    }

    /// The conservation rule's terms; `None` without a RunSummary, or for a partial account.
    pub fn conservation(&self) -> Option<Conservation> {
        if self.partial {
            return None;
        }
        let run = self.run.as_ref()?;
        Some(Conservation {
            guest: self.guest_total(),
            root: run.root,
            idle: run.idle,
            elapsed: run.elapsed,
        })
    }

    /// Per VM whose summary arrived: `elapsed − (running + runnable + blocked + stopped)`, which
    /// is 0 when the VM's four runstates cover the run exactly.
    pub fn runstate_errors(&self) -> Vec<(u16, i128)> {
        let Some(run) = &self.run else {
            return Vec::new();
        };
        self.vms
            .iter()
            .filter_map(|vm| {
                let s = vm.summary.as_ref()?;
                let total = u128::from(s.running)
                    + u128::from(s.runnable)
                    + u128::from(s.blocked)
                    + u128::from(s.stopped);
                Some((vm.id, i128::from(run.elapsed) - total as i128))
            })
            .collect()
    }

    /// Jain's index over the guest cycles of the VMs `include` accepts (and whose summaries
    /// arrived), each divided by its weight.
    pub fn jain_guest(&self, include: impl Fn(&VmAccount) -> bool) -> Option<f64> {
        let values: Vec<f64> = self
            .vms
            .iter()
            .filter(|vm| include(vm))
            .filter_map(|vm| Some(vm.guest()? as f64 / f64::from(vm.weight)))
            .collect();
        jain_index(&values)
    }

    /// Jain's index over the last value of metric `name`, each divided by its VM's weight, over
    /// the VMs that reported it (with `iterations`: the spin guests' throughput).
    pub fn jain_metric(&self, name: &str) -> Option<f64> {
        let values: Vec<f64> = self
            .vms
            .iter()
            .filter_map(|vm| Some(vm.metric(name)?.last as f64 / f64::from(vm.weight)))
            .collect();
        jain_index(&values)
    }

    /// The VMs that never blocked (their summary shows no blocked time): the CPU-bound ones.
    pub fn never_blocked(vm: &VmAccount) -> bool {
        vm.summary.as_ref().is_some_and(|s| s.blocked == 0)
    }

    /// Median over the VMs with preempted slices of their median quantum error, in percent.
    pub fn median_quantum_error_percent(&self) -> Option<f64> {
        let mut errors: Vec<i64> = self
            .vms
            .iter()
            .filter_map(|vm| vm.summary.as_ref())
            .filter(|s| s.preemptions > 0)
            .map(|s| s.quantum_error_median_ppm)
            .collect();
        if errors.is_empty() {
            return None;
        }
        errors.sort_unstable();
        let middle = errors.len() / 2;
        let median = if errors.len() % 2 == 1 {
            errors[middle] as f64
        } else {
            (errors[middle - 1] as f64 + errors[middle] as f64) / 2.0
        };
        Some(median / PPM_PER_PERCENT)
    }

    /// The problems worth a warning line: records that did not fit, a conservation error,
    /// runstates that do not cover the run, dropped records.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = self.warnings.clone();
        if let Some(conservation) = self.conservation() {
            if !conservation.holds() {
                problems.push(format!(
                    "conservation does not hold: guest {} + root {} + idle {} = {}, elapsed is \
                     {} ({:+} cycles unaccounted)",
                    group(conservation.guest),
                    group(conservation.root),
                    group(conservation.idle),
                    group(
                        conservation.guest
                            + u128::from(conservation.root)
                            + u128::from(conservation.idle)
                    ),
                    group(conservation.elapsed),
                    conservation.error()
                ));
            }
        }
        for (id, error) in self.runstate_errors() {
            if error != 0 {
                problems.push(format!(
                    "VM {}'s runstates do not add up to the elapsed time ({error:+} cycles)",
                    self.vms[usize::from(id)].name
                ));
            }
        }
        problems.extend(self.event_mismatches());
        if let Some(run) = self.run.as_ref().filter(|run| run.dropped_records > 0) {
            problems.push(format!(
                "the hypervisor dropped {} record{} (its export ring was full)",
                run.dropped_records,
                plural(run.dropped_records)
            ));
        }
        problems
    }

    /// The memory table: per VM its RAM, its balloon (pages ballooned now, given back and
    /// taken back over the run), and from the working-set samples the pages touched at all,
    /// the working set (pages accessed in the last sampling period, and the most in any) and
    /// pages written in the last one. Empty when nothing happened to any VM's memory; sampled
    /// columns read "-" without samples, and a line says so when the CPU has no EPT
    /// accessed/dirty flags (no figures are made up).
    pub fn memory_table(&self) -> String {
        let described: Vec<(&VmAccount, &MemoryAccount)> = self
            .vms
            .iter()
            .filter_map(|vm| vm.memory.as_ref().map(|memory| (vm, memory)))
            .collect();
        let ballooning = described
            .iter()
            .any(|(_, memory)| memory.ballooned > 0 || memory.inflated > 0 || memory.deflated > 0);
        let sampled = described.iter().any(|(_, memory)| memory.samples > 0);
        if !ballooning && !sampled && self.merging.is_none() {
            return String::new();
        }
        let mut table = Table::new(&[
            ("VM", Align::Left),
            ("RAM pages", Align::Right),
            ("BALLOONED", Align::Right),
            ("GAVE", Align::Right),
            ("TOOK", Align::Right),
            ("MERGED", Align::Right),
            ("TOUCHED", Align::Right),
            ("WSS", Align::Right),
            ("WSS max", Align::Right),
            ("DIRTY", Align::Right),
            ("SAMPLES", Align::Right),
        ]);
        for (vm, memory) in &described {
            let sampled = |pages: u64| {
                if memory.samples > 0 {
                    group(pages)
                } else {
                    "-".to_string()
                }
            };
            table.push(vec![
                vm.name.clone(),
                group(memory.ram_pages),
                group(memory.ballooned),
                group(memory.inflated),
                group(memory.deflated),
                group(memory.merged),
                sampled(memory.ever),
                sampled(memory.last_accessed),
                sampled(memory.max_accessed),
                sampled(memory.last_dirty),
                group(memory.samples),
            ]);
        }
        let mut out = format!(
            "\nMEMORY (4 KiB pages; GAVE/TOOK = ballooned out/back over the run; from EPT \
             accessed/dirty samples, WSS = pages touched in the last period)\n{}",
            table.render()
        );
        if let Some(pages) = &self.host_pages {
            out.push_str(&format!(
                "host memory for guests: {:.1} MiB at the end, {:.1} MiB at most; {:.1} MiB free\n",
                pages.last as f64 / 256.0,
                pages.peak as f64 / 256.0,
                pages.free_last as f64 / 256.0
            ));
        }
        if let Some(merging) = &self.merging {
            let share = self
                .share_of_elapsed(merging.cycles)
                .map_or(String::new(), |share| {
                    format!(" ({:.2}% of elapsed)", share * 100.0)
                });
            out.push_str(&format!(
                "merging: {} pages scanned in {} root cycles{share}; {} merges, {} copies on \
                 write; {} shared frames stand for {} more pages: {:.1} MiB saved\n",
                group(merging.scanned),
                group(merging.cycles),
                group(merging.merges),
                group(merging.cow_breaks),
                group(merging.shared_frames),
                group(merging.frames_saved),
                merging.frames_saved as f64 / 256.0
            ));
        }
        if described.iter().any(|(_, memory)| !memory.accessed_dirty) {
            out.push_str(
                "memory: this CPU has no EPT accessed/dirty flags, so there are no working-set \
                 figures\n",
            );
        }
        out
    }

    /// Where the events disagree with the summaries: slices begun and slices preempted per VM
    /// must match the hypervisor's counts when no record was lost, and in a full-rate trace
    /// the exit events must match the exit statistics.
    pub fn event_mismatches(&self) -> Vec<String> {
        let lossless = self
            .run
            .as_ref()
            .is_some_and(|run| run.dropped_records == 0);
        if !self.has_events || !lossless {
            return Vec::new();
        }
        let mut problems = Vec::new();
        for vm in &self.vms {
            let Some(summary) = &vm.summary else { continue };
            let full = self.level == Some(TraceLevel::Full);
            let exits: u64 = vm.exits.values().map(|totals| totals.count).sum();
            for (what, events, summary) in [
                ("slices", Some(vm.events.runs), summary.slices),
                (
                    "preemptions",
                    Some(vm.events.preempted),
                    summary.preemptions,
                ),
                ("wakes", Some(vm.events.wakes), summary.wakes),
                ("exits", full.then_some(vm.events.exits), exits),
            ] {
                let Some(events) = events else { continue };
                if events != summary {
                    problems.push(format!(
                        "VM {}: the events show {events} {what}, the summary {summary}",
                        vm.name
                    ));
                }
            }
        }
        problems
    }

    /// The accounting tables `carousel run` prints: the run, per-VM time, per-VM scheduling
    /// events and guest metrics, fairness, conservation, and warnings.
    pub fn report(&self) -> String {
        let mut out = String::new();
        let Some(run) = &self.run else {
            if self.vms.iter().any(|vm| vm.summary.is_some()) {
                out.push_str("accounting: VM summaries arrived, but no RunSummary\n");
            } else {
                out.push_str("accounting: the hypervisor sent no summary records\n");
            }
            // What the interval records say still stands (memory, merging, ballooning).
            out.push_str(&self.memory_table());
            return out;
        };
        let micros = |cycles: u64| -> String {
            self.micros(cycles)
                .map(|us| format!(" = {}", format_micros(us)))
                .unwrap_or_default()
        };
        let percent = |cycles: u64| {
            self.share_of_elapsed(cycles)
                .map(|share| format!("{:.2}%", share * 100.0))
                .unwrap_or_else(|| "-".to_string())
        };
        let _ = writeln!(
            out,
            "ACCOUNTING  policy {}, quantum {} cycles{} of {} time, TSC {} Hz",
            run.policy,
            group(run.quantum_cycles),
            micros(run.quantum_cycles),
            self.quantum_clock.map_or("unknown", |clock| clock.name()),
            self.tsc_hz.map_or("unknown".to_string(), group)
        );
        let _ = writeln!(
            out,
            "run: elapsed {} cycles{}; guest {}, root {}, idle {} of it",
            group(run.elapsed),
            micros(run.elapsed),
            match fraction(self.guest_total(), u128::from(run.elapsed)) {
                Some(share) => format!("{:.2}%", share * 100.0),
                None => "-".to_string(),
            },
            percent(run.root),
            percent(run.idle)
        );
        let _ = writeln!(
            out,
            "switches: {}, cost median {} / max {} cycles; dropped records {}",
            group(run.switches),
            group(run.switch_median),
            group(run.switch_max),
            run.dropped_records
        );
        out.push('\n');
        out.push_str(&self.time_table().render());
        out.push('\n');
        out.push_str(&self.events_table().render());
        out.push('\n');
        let mut fairness = Vec::new();
        let all = self.vms.iter().filter(|vm| vm.summary.is_some()).count();
        if let Some(jain) = self.jain_guest(|_| true) {
            fairness.push(format!("guest cycles/weight {jain:.4} ({all} VMs)"));
        }
        let busy = self.vms.iter().filter(|vm| Self::never_blocked(vm)).count();
        if busy > 1 && busy < all {
            if let Some(jain) = self.jain_guest(Self::never_blocked) {
                fairness.push(format!(
                    "guest cycles/weight {jain:.4} ({busy} never-blocked VMs)"
                ));
            }
        }
        let reporting = self
            .vms
            .iter()
            .filter(|vm| vm.metric(SPIN_ITERATIONS).is_some())
            .count();
        if reporting > 1 {
            if let Some(jain) = self.jain_metric(SPIN_ITERATIONS) {
                fairness.push(format!(
                    "{SPIN_ITERATIONS}/weight {jain:.4} ({reporting} VMs)"
                ));
            }
        }
        let exits = self.exit_table(None);
        if !exits.rows.is_empty() {
            let _ = writeln!(
                out,
                "\nEXITS (all VMs; cost = root-mode cycles from the exit to the next entry)"
            );
            out.push_str(&exits.render());
            out.push('\n');
        }
        for vm in &self.vms {
            if let Some(timer) = vm.timer {
                let mean = timer.lag_total / timer.ticks.max(1);
                let _ = writeln!(
                    out,
                    "timer {}: {} ticks delivered, {} more folded in while waiting; lag from deadline mean {} / max {}",
                    vm.name,
                    group(u128::from(timer.ticks)),
                    group(u128::from(timer.coalesced)),
                    self.cycles_text(mean),
                    self.cycles_text(timer.lag_max),
                );
            }
        }
        out.push_str(&self.memory_table());
        for vm in self.vms.iter().filter(|vm| vm.disk.any()) {
            let disk = vm.disk;
            let _ = writeln!(
                out,
                "disk {}: read {} sector{} in {} transfer{}, wrote {} sector{} in {} transfer{}",
                vm.name,
                group(disk.read_sectors),
                plural(disk.read_sectors),
                group(disk.reads),
                plural(disk.reads),
                group(disk.written_sectors),
                plural(disk.written_sectors),
                group(disk.writes),
                plural(disk.writes),
            );
        }
        for vm in self.vms.iter().filter(|vm| vm.spaces.len() > 1) {
            let total: u64 = vm.spaces.iter().map(|space| space.cycles).sum();
            let top: Vec<String> = vm
                .spaces
                .iter()
                .take(3)
                .map(|space| {
                    let share = space.cycles as f64 * 100.0 / total.max(1) as f64;
                    let cr3 = if space.cr3 == u64::MAX {
                        "other".to_string()
                    } else {
                        format!("{:#x}", space.cr3)
                    };
                    format!("{cr3} {share:.1}% ({} loads)", space.loads)
                })
                .collect();
            let _ = writeln!(out, "address spaces {}: {}", vm.name, top.join(", "));
        }
        if !fairness.is_empty() {
            let _ = writeln!(
                out,
                "fairness (Jain's index, 1 = fair): {}",
                fairness.join("; ")
            );
        }
        if let Some(conservation) = self.conservation() {
            let sum =
                conservation.guest + u128::from(conservation.root) + u128::from(conservation.idle);
            let _ = writeln!(
                out,
                "conservation: guest {} + root {} + idle {} = {} cycles; elapsed {}: {}",
                group(conservation.guest),
                group(conservation.root),
                group(conservation.idle),
                group(sum),
                group(conservation.elapsed),
                if conservation.holds() {
                    "holds".to_string()
                } else {
                    format!("DOES NOT HOLD ({:+} cycles)", conservation.error())
                }
            );
        }
        for problem in self.problems() {
            let _ = writeln!(out, "warning: {problem}");
        }
        out
    }

    /// Exits summed per reason over every VM (`vm` None) or one VM, in the columns of `perf kvm
    /// stat`: samples and their share, time share, min, max and mean cycles; the costliest reason
    /// first.
    pub fn exit_table(&self, vm: Option<u16>) -> Table {
        let mut totals: std::collections::BTreeMap<u16, ExitTotals> = Default::default();
        for vm in self
            .vms
            .iter()
            .filter(|account| vm.is_none_or(|id| id == account.id))
        {
            for (&reason, vm_totals) in &vm.exits {
                let entry = totals.entry(reason).or_default();
                entry.min = if entry.count == 0 {
                    vm_totals.min
                } else {
                    entry.min.min(vm_totals.min)
                };
                entry.max = entry.max.max(vm_totals.max);
                entry.count += vm_totals.count;
                entry.cycles += vm_totals.cycles;
            }
        }
        let count: u64 = totals.values().map(|t| t.count).sum();
        let cycles: u128 = totals.values().map(|t| t.cycles).sum();
        let mut rows: Vec<(u16, ExitTotals)> = totals.into_iter().collect();
        rows.sort_by_key(|row| std::cmp::Reverse(row.1.cycles));
        let mut table = Table::new(&[
            ("REASON", Align::Left),
            ("SAMPLES", Align::Right),
            ("SAMPLES%", Align::Right),
            ("TIME%", Align::Right),
            ("MIN cyc", Align::Right),
            ("MAX cyc", Align::Right),
            ("AVG cyc", Align::Right),
        ]);
        for (reason, t) in rows {
            table.rows.push(vec![
                exit_reason_name(reason).to_string(),
                group(t.count),
                format!("{:.2}", t.count as f64 * 100.0 / count.max(1) as f64),
                format!("{:.2}", t.cycles as f64 * 100.0 / cycles.max(1) as f64),
                group(t.min),
                group(t.max),
                format!("{:.0}", t.mean()),
            ]);
        }
        table
    }

    /// Per VM: weight, CPU share, guest and root cycles, and the four runstates (cycles and
    /// share of the elapsed time).
    pub fn time_table(&self) -> Table {
        let mut table = Table::new(&[
            ("VM", Align::Left),
            ("W", Align::Right),
            ("CPU%", Align::Right),
            ("GUEST cyc", Align::Right),
            ("ROOT cyc", Align::Right),
            ("RUNNING cyc", Align::Right),
            ("%", Align::Right),
            ("RUNNABLE cyc", Align::Right),
            ("%", Align::Right),
            ("BLOCKED cyc", Align::Right),
            ("%", Align::Right),
            ("STOPPED cyc", Align::Right),
            ("%", Align::Right),
        ]);
        for vm in &self.vms {
            let mut row = vec![vm.name.clone(), vm.weight.to_string()];
            match &vm.summary {
                Some(s) => {
                    row.push(
                        self.cpu_share(vm.id)
                            .map_or("-".to_string(), |share| format!("{:.2}", share * 100.0)),
                    );
                    row.push(group(s.guest));
                    row.push(group(s.root));
                    for cycles in [s.running, s.runnable, s.blocked, s.stopped] {
                        row.push(group(cycles));
                        row.push(
                            self.share_of_elapsed(cycles)
                                .map_or("-".to_string(), |share| format!("{:.1}", share * 100.0)),
                        );
                    }
                }
                None => row.push("(no summary)".to_string()),
            }
            table.push(row);
        }
        table
    }

    /// Per VM: slices, how they ended, wakes and wake-to-run latency, quantum error, and the
    /// guest's metrics.
    pub fn events_table(&self) -> Table {
        let unit = if self.tsc_hz.is_some() { "µs" } else { "cyc" };
        let wake_header = format!("WAKE p50/p95/p99/max {unit}");
        let mut table = Table::new(&[
            ("VM", Align::Left),
            ("SLICES", Align::Right),
            ("PREEMPT", Align::Right),
            ("YIELDS", Align::Right),
            ("WAKES", Align::Right),
            (wake_header.as_str(), Align::Left),
            ("QERR med/max %", Align::Left),
            ("GUEST METRICS (last, max, reports)", Align::Left),
        ]);
        for vm in &self.vms {
            let mut row = vec![vm.name.clone()];
            match &vm.summary {
                Some(s) => {
                    row.push(group(s.slices));
                    row.push(group(s.preemptions));
                    row.push(group(s.yields));
                    row.push(group(s.wakes));
                    row.push(if s.wakes == 0 {
                        "-".to_string()
                    } else {
                        [s.wake_p50, s.wake_p95, s.wake_p99, s.wake_max]
                            .iter()
                            .map(|&cycles| match self.micros(cycles) {
                                Some(us) => format!("{us:.1}"),
                                None => group(cycles),
                            })
                            .collect::<Vec<_>>()
                            .join("/")
                    });
                    row.push(if s.preemptions == 0 {
                        "-".to_string()
                    } else {
                        format!(
                            "{:+.3}/{:.3}",
                            ppm_to_percent(s.quantum_error_median_ppm),
                            ppm_to_percent(s.quantum_error_max_ppm)
                        )
                    });
                }
                None => {
                    row.extend(std::iter::repeat_n("-".to_string(), 6));
                }
            }
            row.push(
                vm.metrics
                    .iter()
                    .map(|metric| {
                        if metric.count == 1 {
                            format!("{} {}", metric.name, group(metric.last))
                        } else {
                            format!(
                                "{} {}, {}, {}",
                                metric.name,
                                group(metric.last),
                                group(metric.max),
                                metric.count
                            )
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
            );
            table.push(row);
        }
        table
    }
}

/// `part / whole`; `None` when `whole` is 0.
pub fn fraction(part: u128, whole: u128) -> Option<f64> {
    (whole != 0).then(|| part as f64 / whole as f64)
}

/// Jain's fairness index `(Σx)² / (n · Σx²)`: 1.0 when all values are equal, `1/n` when one
/// holds everything. `None` for no values or when all are 0 (nothing was shared).
pub fn jain_index(values: &[f64]) -> Option<f64> {
    let sum: f64 = values.iter().sum();
    let sum_of_squares: f64 = values.iter().map(|x| x * x).sum();
    if values.is_empty() || sum_of_squares == 0.0 {
        return None;
    }
    Some(sum * sum / (values.len() as f64 * sum_of_squares))
}

/// `cycles` in microseconds at `tsc_hz`.
pub fn cycles_to_micros(cycles: u64, tsc_hz: u64) -> f64 {
    cycles as f64 * MICROS_PER_SECOND / tsc_hz as f64
}

/// Parts per million in percent.
pub fn ppm_to_percent(ppm: i64) -> f64 {
    ppm as f64 / PPM_PER_PERCENT
}

/// Microseconds with a unit that keeps them short: `850.0 µs`, `12.345 ms`, `1.234567 s`.
pub fn format_micros(us: f64) -> String {
    if us < 1_000.0 {
        format!("{us:.1} µs")
    } else if us < 1_000_000.0 {
        format!("{:.3} ms", us / 1_000.0)
    } else {
        format!("{:.6} s", us / 1_000_000.0)
    }
}

/// An integer with thousands separators: `12,345,678`.
pub fn group(value: impl Into<u128>) -> String {
    let digits = value.into().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

fn plural(count: u64) -> &'static str {
    if count == 1 {
        ""
    } else {
        "s"
    }
}

/// Column alignment in a [`Table`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A text table: columns two spaces apart, each as wide as its widest cell, no trailing
/// blanks. A row shorter than the header leaves the remaining cells empty.
#[derive(Debug, Clone)]
pub struct Table {
    header: Vec<String>,
    align: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(columns: &[(&str, Align)]) -> Self {
        Self {
            header: columns.iter().map(|(name, _)| name.to_string()).collect(),
            align: columns.iter().map(|(_, align)| *align).collect(),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    /// The column names.
    pub fn header(&self) -> &[String] {
        &self.header
    }

    /// The rows, each as long as the header or shorter.
    pub fn rows(&self) -> &[Vec<String>] {
        &self.rows
    }

    /// How column `column` is aligned (left past the last one).
    pub fn align(&self, column: usize) -> Align {
        self.align.get(column).copied().unwrap_or(Align::Left)
    }

    pub fn render(&self) -> String {
        let width =
            |row: &[String], column: usize| row.get(column).map_or(0, |cell| cell.chars().count());
        let widths: Vec<usize> = (0..self.header.len())
            .map(|column| {
                std::iter::once(&self.header)
                    .chain(&self.rows)
                    .map(|row| width(row, column))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (column, &column_width) in widths.iter().enumerate() {
                let cell = row.get(column).map_or("", String::as_str);
                let pad = column_width - cell.chars().count();
                if column > 0 {
                    line.push_str("  ");
                }
                match self.align[column] {
                    Align::Left => {
                        line.push_str(cell);
                        line.extend(std::iter::repeat_n(' ', pad));
                    }
                    Align::Right => {
                        line.extend(std::iter::repeat_n(' ', pad));
                        line.push_str(cell);
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    use crate::fixtures::hello;

    #[test]
    fn weights_come_from_the_hello_record_when_the_caller_has_none() {
        let mut hello = hello(&["a", "b"], 1_000);
        if let Record::Hello { weights, .. } = &mut hello {
            *weights = vec![1, 3];
        }
        let records = [
            hello,
            Record::VmSummary(busy(0, 100, 0, 400)),
            Record::VmSummary(busy(1, 300, 0, 400)),
        ];
        let from_trace = Accounting::from_records(&records, &[]);
        assert_eq!(from_trace.vms[1].weight, 3);
        assert!((from_trace.jain_guest(|_| true).unwrap() - 1.0).abs() < 1e-9);
        // The lab's weights win when given.
        let from_lab = Accounting::from_records(&records, &[1, 1]);
        assert_eq!(from_lab.vms[1].weight, 1);
        assert!(from_lab.jain_guest(|_| true).unwrap() < 0.9);
    }

    /// A CPU-bound VM: running `guest + root` cycles, runnable the rest of `elapsed`.
    fn busy(vm: u16, guest: u64, root: u64, elapsed: u64) -> VmSummary {
        VmSummary {
            vm,
            running: guest + root,
            runnable: elapsed - guest - root,
            blocked: 0,
            stopped: 0,
            guest,
            root,
            slices: 10,
            preemptions: 9,
            yields: 1,
            wakes: 0,
            wake_p50: 0,
            wake_p95: 0,
            wake_p99: 0,
            wake_max: 0,
            quantum_error_median_ppm: 100,
            quantum_error_max_ppm: 2_000,
            blocked_console: 0,
            blocked_records: 0,
            guest_records_dropped: 0,
        }
    }

    fn run(elapsed: u64, root: u64, idle: u64) -> RunSummary {
        RunSummary {
            policy: "round-robin".to_string(),
            quantum_cycles: 50_000,
            elapsed,
            root,
            idle,
            switch_median: 900,
            switch_max: 1_400,
            switches: 40,
            dropped_records: 0,
        }
    }

    fn metric(vm: u16, name: &str, value: u64) -> Record {
        Record::GuestMetric {
            tsc: 0,
            vm,
            name: name.to_string(),
            value,
        }
    }

    /// Two busy VMs, 300 + 100 guest cycles, roots 10 + 10, switching 30, idle 50: 500 in all.
    fn two_vm_records() -> Vec<Record> {
        vec![
            hello(&["a", "b"], 1_000_000),
            metric(0, SPIN_ITERATIONS, 10),
            metric(0, SPIN_ITERATIONS, 30),
            metric(1, SPIN_ITERATIONS, 10),
            Record::VmSummary(busy(0, 300, 10, 500)),
            Record::VmSummary(busy(1, 100, 10, 500)),
            Record::RunSummary(run(500, 50, 50)),
            Record::RunEnd { tsc: 600 },
        ]
    }

    #[test]
    fn exits_sum_over_intervals_and_vms_into_one_table() {
        let stat = |reason, count, cycles, min, max| ExitStat {
            reason,
            count,
            cycles,
            min,
            max,
            log2: vec![],
        };
        let mut records = two_vm_records();
        for (vm, exits) in [
            (
                0,
                vec![stat(30, 3, 3_000, 500, 1_500), stat(52, 1, 900, 900, 900)],
            ),
            (0, vec![stat(30, 1, 1_000, 1_000, 1_000)]),
            (1, vec![stat(30, 4, 2_000, 100, 800)]),
        ] {
            records.insert(
                1,
                Record::ExitInterval {
                    tsc: 1,
                    vm,
                    interval: 10,
                    exits,
                },
            );
        }
        let accounting = Accounting::from_records(&records, &[1, 1]);
        assert_eq!(accounting.vms[0].exits[&30].count, 4);
        assert_eq!(accounting.vms[0].exits[&30].min, 500);
        let table = accounting.exit_table(None);
        assert_eq!(table.rows.len(), 2);
        assert_eq!(
            table.rows[0][..4],
            ["IO_INSTRUCTION", "8", "88.89", "86.96"]
        );
        assert_eq!(table.rows[0][4..], ["100", "1,500", "750"]);
        assert_eq!(table.rows[1][0], "PREEMPTION_TIMER");
    }

    #[test]
    fn timer_lag_and_address_spaces_are_reported() {
        let mut records = two_vm_records();
        records.insert(
            1,
            Record::TimerLag {
                vm: 0,
                ticks: 10,
                coalesced: 3,
                lag_total: 20_000,
                lag_max: 5_000,
            },
        );
        records.insert(
            1,
            Record::AddressSpaces {
                vm: 0,
                spaces: vec![
                    AddressSpace {
                        cr3: 0x3ff000,
                        cycles: 300,
                        loads: 7,
                    },
                    AddressSpace {
                        cr3: 0xdf76000,
                        cycles: 100,
                        loads: 2,
                    },
                ],
            },
        );
        let report = Accounting::from_records(&records, &[1, 1]).report();
        assert!(
            report.contains("timer a: 10 ticks delivered, 3 more folded in while waiting; lag from deadline mean 2000.0 µs / max 5000.0 µs"),
            "{report}"
        );
        assert!(
            report
                .contains("address spaces a: 0x3ff000 75.0% (7 loads), 0xdf76000 25.0% (2 loads)"),
            "{report}"
        );
        assert!(!report.contains("address spaces b"), "{report}");
    }

    #[test]
    fn disk_transfers_are_summed_per_vm() {
        let mut records = two_vm_records();
        for (lba, sectors, write) in [(0, 8, false), (8, 1, false), (100, 2, true)] {
            records.insert(
                1,
                Record::DiskIo {
                    tsc: 1,
                    vm: 1,
                    lba,
                    sectors,
                    write,
                },
            );
        }
        let accounting = Accounting::from_records(&records, &[]);
        assert!(!accounting.vms[0].disk.any());
        let disk = accounting.vms[1].disk;
        assert_eq!((disk.reads, disk.read_sectors), (2, 9));
        assert_eq!((disk.writes, disk.written_sectors), (1, 2));
        let report = accounting.report();
        assert!(
            report
                .contains("disk b: read 9 sectors in 2 transfers, wrote 2 sectors in 1 transfer\n"),
            "{report}"
        );
        assert!(!report.contains("disk a"), "{report}");
    }

    #[test]
    fn shares_are_of_all_guest_cycles_and_of_elapsed() {
        let accounting = Accounting::from_records(&two_vm_records(), &[1, 1]);
        assert_eq!(accounting.vms.len(), 2);
        assert_eq!(accounting.vms[1].name, "b");
        assert_eq!(accounting.guest_total(), 400);
        assert_eq!(accounting.cpu_share(0), Some(0.75));
        assert_eq!(accounting.cpu_share(1), Some(0.25));
        assert_eq!(accounting.cpu_share(2), None);
        assert_eq!(accounting.share_of_elapsed(50), Some(0.1));
        assert!(
            accounting.problems().is_empty(),
            "{:?}",
            accounting.problems()
        );
    }

    #[test]
    fn metrics_keep_last_max_and_count() {
        let accounting = Accounting::from_records(&two_vm_records(), &[]);
        let iterations = accounting.vms[0].metric(SPIN_ITERATIONS).unwrap();
        assert_eq!(
            (iterations.last, iterations.max, iterations.count),
            (30, 30, 2)
        );
        let records = [
            metric(0, SLEEPY_WAKE_LATE, 70),
            metric(0, SLEEPY_WAKE_LATE, 900),
            metric(0, SLEEPY_WAKE_LATE, 40),
        ];
        let accounting = Accounting::from_records(&records, &[]);
        let late = accounting.vms[0].metric(SLEEPY_WAKE_LATE).unwrap();
        assert_eq!((late.last, late.max, late.count), (40, 900, 3));
        assert_eq!(accounting.vms[0].name, "vm0");
    }

    #[test]
    fn jain_on_known_inputs() {
        assert_eq!(jain_index(&[5.0, 5.0, 5.0, 5.0]), Some(1.0));
        // One of n holds everything: 1/n.
        assert_eq!(jain_index(&[0.0, 0.0, 7.0, 0.0]), Some(0.25));
        // (1+2+3)² / (3·(1+4+9)) = 36/42.
        let jain = jain_index(&[1.0, 2.0, 3.0]).unwrap();
        assert!((jain - 36.0 / 42.0).abs() < 1e-12, "{jain}");
        // Half the VMs get twice as much: (2+2+1+1)² / (4·(4+4+1+1)) = 0.9.
        let jain = jain_index(&[2.0, 2.0, 1.0, 1.0]).unwrap();
        assert!((jain - 0.9).abs() < 1e-12, "{jain}");
        // Scale does not matter.
        assert_eq!(jain_index(&[3e9, 3e9]), Some(1.0));
        assert_eq!(jain_index(&[]), None);
        assert_eq!(jain_index(&[0.0, 0.0]), None);
    }

    #[test]
    fn jain_divides_guest_cycles_by_weight() {
        // Guest cycles 100, 200, 400 with weights 1, 2, 4: perfectly weighted-fair.
        let elapsed = 1_000;
        let records = [
            hello(&["w1", "w2", "w4"], 1_000),
            Record::VmSummary(busy(0, 100, 0, elapsed)),
            Record::VmSummary(busy(1, 200, 0, elapsed)),
            Record::VmSummary(busy(2, 400, 0, elapsed)),
            metric(0, SPIN_ITERATIONS, 1_000),
            metric(1, SPIN_ITERATIONS, 2_000),
            metric(2, SPIN_ITERATIONS, 4_000),
        ];
        let weighted = Accounting::from_records(&records, &[1, 2, 4]);
        assert_eq!(weighted.jain_guest(|_| true), Some(1.0));
        assert_eq!(weighted.jain_metric(SPIN_ITERATIONS), Some(1.0));
        assert_eq!(weighted.jain_metric("nothing"), None);
        // Without weights the same run is unfair: 700² / (3·210000).
        let unweighted = Accounting::from_records(&records, &[]);
        let jain = unweighted.jain_guest(|_| true).unwrap();
        assert!((jain - 490_000.0 / 630_000.0).abs() < 1e-12, "{jain}");
        // A subset.
        assert_eq!(unweighted.jain_guest(|vm| vm.id == 1), Some(1.0));
    }

    #[test]
    fn conservation_is_checked_exactly() {
        let accounting = Accounting::from_records(&two_vm_records(), &[]);
        let conservation = accounting.conservation().unwrap();
        assert_eq!(conservation.guest, 400);
        assert_eq!(conservation.error(), 0);
        assert!(conservation.holds());
        assert!(accounting.report().contains("holds"));

        // One cycle missing, then one counted twice.
        for (idle, error) in [(49, 1), (51, -1)] {
            let mut records = two_vm_records();
            records[6] = Record::RunSummary(run(500, 50, idle));
            let accounting = Accounting::from_records(&records, &[]);
            assert_eq!(accounting.conservation().unwrap().error(), error);
            let problems = accounting.problems();
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert!(
                problems[0].starts_with("conservation does not hold"),
                "{problems:?}"
            );
            assert!(
                problems[0].contains(&format!("{error:+} cycles")),
                "{problems:?}"
            );
            assert!(accounting.report().contains("DOES NOT HOLD"));
        }
        assert_eq!(Accounting::from_records(&[], &[]).conservation(), None);
    }

    #[test]
    fn runstates_must_cover_the_run() {
        let mut records = two_vm_records();
        let mut summary = busy(1, 100, 10, 500);
        summary.runnable -= 7;
        records[5] = Record::VmSummary(summary);
        let accounting = Accounting::from_records(&records, &[]);
        assert_eq!(accounting.runstate_errors(), vec![(0, 0), (1, 7)]);
        assert!(accounting.problems()[0].contains("VM b's runstates"));
    }

    #[test]
    fn missing_and_extra_records_warn() {
        let records = [
            hello(&["a", "b"], 1_000),
            Record::VmSummary(busy(0, 10, 0, 20)),
            Record::VmSummary(busy(0, 10, 0, 20)),
            Record::VmSummary(busy(2, 10, 0, 20)),
            Record::RunSummary(run(20, 0, 0)),
        ];
        let accounting = Accounting::from_records(&records, &[]);
        let problems = accounting.problems();
        assert!(
            problems
                .iter()
                .any(|p| p.contains("second VmSummary for VM a")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("names 2 VMs")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p == "no VmSummary arrived for VM b"),
            "{problems:?}"
        );

        let nothing = Accounting::from_records(&[hello(&["a"], 1_000)], &[]);
        assert!(!nothing.has_summaries());
        assert_eq!(
            nothing.report(),
            "accounting: the hypervisor sent no summary records\n"
        );
    }

    #[test]
    fn dropped_records_warn() {
        let mut records = two_vm_records();
        let mut summary = run(500, 50, 50);
        summary.dropped_records = 3;
        records[6] = Record::RunSummary(summary);
        let problems = Accounting::from_records(&records, &[]).problems();
        assert_eq!(
            problems,
            vec!["the hypervisor dropped 3 records (its export ring was full)"]
        );
    }

    #[test]
    fn percentiles_convert_to_microseconds() {
        assert_eq!(cycles_to_micros(50_000, 50_000_000), 1_000.0);
        assert_eq!(cycles_to_micros(1_500, 1_000_000_000), 1.5);
        assert_eq!(cycles_to_micros(1, 1_000_000), 1.0);
        let mut records = two_vm_records();
        let mut sleepy = busy(1, 100, 10, 500);
        sleepy.wakes = 30;
        sleepy.wake_p50 = 2_500;
        sleepy.wake_p95 = 25_000;
        sleepy.wake_p99 = 50_000;
        sleepy.wake_max = 60_000;
        records[0] = hello(&["a", "b"], 50_000_000);
        records[5] = Record::VmSummary(sleepy);
        let accounting = Accounting::from_records(&records, &[]);
        assert_eq!(accounting.micros(60_000), Some(1_200.0));
        let report = accounting.report();
        assert!(report.contains("WAKE p50/p95/p99/max µs"), "{report}");
        assert!(report.contains("50.0/500.0/1000.0/1200.0"), "{report}");
        // Without a frequency, cycles.
        records[0] = hello(&["a", "b"], 0);
        let accounting = Accounting::from_records(&records, &[]);
        assert_eq!(accounting.micros(60_000), None);
        let report = accounting.report();
        assert!(report.contains("2,500/25,000/50,000/60,000"), "{report}");
    }

    #[test]
    fn quantum_error_is_ppm_in_percent() {
        assert_eq!(ppm_to_percent(10_000), 1.0);
        assert_eq!(ppm_to_percent(-2_500), -0.25);
        assert_eq!(ppm_to_percent(0), 0.0);
        let mut records = two_vm_records();
        let mut summary = busy(1, 100, 10, 500);
        summary.quantum_error_median_ppm = 300;
        records[5] = Record::VmSummary(summary);
        let accounting = Accounting::from_records(&records, &[]);
        // Median of 100 and 300 ppm.
        assert_eq!(accounting.median_quantum_error_percent(), Some(0.02));
        let report = accounting.report();
        assert!(report.contains("+0.010/0.200"), "{report}");
    }

    #[test]
    fn report_is_aligned_and_names_units() {
        let report = Accounting::from_records(&two_vm_records(), &[1, 3]).report();
        assert!(report.starts_with("ACCOUNTING  policy round-robin, quantum 50,000 cycles = 50.000 ms of wall time, TSC 1,000,000 Hz\n"), "{report}");
        assert!(
            report.contains(
                "run: elapsed 500 cycles = 500.0 µs; guest 80.00%, root 10.00%, idle 10.00% of it"
            ),
            "{report}"
        );
        assert!(
            report.contains("switches: 40, cost median 900 / max 1,400 cycles"),
            "{report}"
        );
        let lines: Vec<&str> = report.lines().collect();
        let header = lines
            .iter()
            .position(|line| line.starts_with("VM "))
            .unwrap();
        // Columns line up: every row of the time table has its CPU% figure ending where the
        // header's does.
        let end = lines[header].find("CPU%").unwrap() + "CPU%".len();
        assert_eq!(&lines[header + 1][end - 5..end], "75.00", "{report}");
        assert_eq!(&lines[header + 2][end - 5..end], "25.00", "{report}");
        let first_two = |line: &str| {
            line.split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(first_two(lines[header + 1]), "a 1", "{report}");
        assert_eq!(first_two(lines[header + 2]), "b 3", "{report}");
        assert!(report.contains("iterations 30, 30, 2"), "{report}");
        assert!(
            report.contains("fairness (Jain's index, 1 = fair): guest cycles/weight"),
            "{report}"
        );
        assert!(!report.lines().any(|line| line.ends_with(' ')), "{report}");
    }

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(group(0u64), "0");
        assert_eq!(group(999u64), "999");
        assert_eq!(group(1_000u64), "1,000");
        assert_eq!(group(1_234_567u64), "1,234,567");
        assert_eq!(group(u64::MAX), "18,446,744,073,709,551,615");
        assert_eq!(format_micros(850.0), "850.0 µs");
        assert_eq!(format_micros(12_345.0), "12.345 ms");
        assert_eq!(format_micros(1_234_567.0), "1.234567 s");
    }

    #[test]
    fn table_pads_short_rows() {
        let mut table = Table::new(&[("A", Align::Left), ("BB", Align::Right)]);
        table.push(vec!["long".to_string(), "1".to_string()]);
        table.push(vec!["x".to_string()]);
        assert_eq!(table.render(), "A     BB\nlong   1\nx\n");
    }
}
