//! Accounting: where each VM's time went, read from the records of one run.
//!
//! What is here: [`Accounting::from_records`] gathers the hypervisor's end-of-run summaries (one
//! `VmSummary` per VM, one `RunSummary`) and the guests' own `GuestMetric` reports into one
//! [`VmAccount`] per VM plus the run's summary; the figures derived from them (CPU shares, shares
//! of the elapsed time, Jain's fairness index, cycles in microseconds, the conservation check
//! "Σ guest + root + idle = elapsed"). What is not: measuring, or text (the tables are
//! [`crate::render::text`]'s). The hypervisor measures (its scheduler crate keeps the
//! books); this module only does arithmetic on what arrived, and says so when something is
//! missing or does not add up.
//!
//! Units: time is in TSC cycles as the hypervisor counted them; `Hello.tsc_hz` converts cycles to
//! seconds (in Bochs the TSC counts instructions, so that frequency is the lab's choice).

use std::collections::BTreeMap;

use carousel_protocol::record::{
    timed_events, AddressSpace, BlockedOn, Event, ExitStat, Record, RunSummary, SliceEnd,
    TraceLevel, TscSource, VmSummary,
};

use crate::escape;
use crate::format::{group, plural};

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
    /// Every report: when it came (TSC) and its value, in arrival order.
    pub reports: Vec<(u64, u64)>,
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
    pub exits: BTreeMap<u16, ExitTotals>,
    /// This VM's scheduler events, counted (when the trace carries events).
    pub events: EventTally,
    /// What the working-set samples say, if the hypervisor described this VM's memory.
    pub memory: Option<MemoryAccount>,
    /// This VM's disk transfers over the whole run.
    pub disk: DiskTotals,
    /// Its requests through the shared disk's queue, when the disk had a service time or a
    /// cap (the hypervisor's end-of-run figures).
    pub disk_queue: Option<carousel_protocol::record::DiskQueueSummary>,
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
    /// Root cycles the samples took: all of them, the most one took, and the last one's.
    pub sample_cycles: u64,
    pub sample_cycles_max: u64,
    pub last_sample_cycles: u64,
    /// Pages in the balloon now, the host's target, and pages given back and taken back
    /// over the run (the initial balloon is not counted as given back).
    pub ballooned: u64,
    pub target: u64,
    pub inflated: u64,
    pub deflated: u64,
    /// Pages sharing a frame with identical pages (same-page merging), at the last report.
    pub merged: u64,
    /// Pages compressed (cold, frame given back), at the last report.
    pub compressed: u64,
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

/// Compressing cold pages over the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompressionTotals {
    /// Root cycles of the compression passes, and of the decompressions on guest touches.
    pub cycles: u64,
    pub decompress_cycles: u64,
    /// At the last report: pages compressed and decompressed so far, cold pages left as they
    /// were (incompressible, pool full), the pool's frames, its blobs' bytes and the pages they
    /// hold, and pages compressed now over all VMs.
    pub compressed: u64,
    pub decompressed: u64,
    pub incompressible: u64,
    pub pool_full: u64,
    pub pool_frames: u64,
    pub pool_bytes: u64,
    pub blob_pages: u64,
    pub compressed_pages: u64,
}

/// One VM's events, counted: slices begun, how they ended, wakes, exits, console bytes, and
/// the cycles it sat blocked on each reason (from a blocking slice end to its wake).
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
    /// Cycles blocked on each reason, in the order of [`BlockedOn::ALL`]; a block the trace
    /// never saw end (it was still blocked at the trace's end) is not counted.
    pub blocked_on: [u64; BlockedOn::ALL.len()],
    /// The block in progress: on what, since when.
    blocked_since: Option<(BlockedOn, u64)>,
}

impl EventTally {
    fn add(&mut self, at: u64, event: &Event) {
        match *event {
            Event::Run { .. } => {
                // A Run of a VM still blocked means its Wake was lost: the block ends anyway.
                self.end_block(at);
                self.runs += 1;
            }
            Event::Descheduled { why, .. } => match why {
                SliceEnd::Preempted => self.preempted += 1,
                SliceEnd::Yielded => self.yielded += 1,
                SliceEnd::Blocked(on) => {
                    self.blocked += 1;
                    self.blocked_since = Some((on, at));
                }
                SliceEnd::Stopped => {
                    self.end_block(at);
                    self.stopped += 1;
                }
            },
            Event::Wake { .. } => {
                self.end_block(at);
                self.wakes += 1;
            }
            Event::Exit { .. } => self.exits += 1,
            Event::Console { bytes, .. } => self.console_bytes += u64::from(bytes),
            Event::Dropped { .. } | Event::Input { .. } => {}
        }
    }

    fn end_block(&mut self, at: u64) {
        if let Some((on, since)) = self.blocked_since.take() {
            let index = BlockedOn::ALL.iter().position(|&reason| reason == on);
            if let Some(cycles) = index.and_then(|index| self.blocked_on.get_mut(index)) {
                *cycles += at.saturating_sub(since);
            }
        }
    }

    /// Cycles blocked on `on`.
    pub fn blocked_on(&self, on: BlockedOn) -> u64 {
        BlockedOn::ALL
            .iter()
            .position(|&reason| reason == on)
            .and_then(|index| self.blocked_on.get(index).copied())
            .unwrap_or(0)
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
        self.merge(&ExitTotals {
            count: stat.count,
            cycles: u128::from(stat.cycles),
            min: stat.min,
            max: stat.max,
        });
    }

    /// Adds `other`'s exits to these.
    pub fn merge(&mut self, other: &ExitTotals) {
        self.min = if self.count == 0 {
            other.min
        } else {
            self.min.min(other.min)
        };
        self.max = self.max.max(other.max);
        self.count += other.count;
        self.cycles += other.cycles;
    }

    /// Mean cycles per exit.
    pub fn mean(&self) -> f64 {
        self.cycles as f64 / self.count.max(1) as f64
    }
}

/// A VM's LAPIC timer ticks: delivered, folded into a tick still pending, and deadline-to-delivery lag.
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

    fn report_metric(&mut self, tsc: u64, name: &str, value: u64) {
        match self.metrics.iter_mut().find(|metric| metric.name == name) {
            Some(metric) => {
                metric.last = value;
                metric.max = metric.max.max(value);
                metric.count += 1;
                metric.reports.push((tsc, value));
            }
            None => self.metrics.push(Metric {
                name: name.to_string(),
                last: value,
                max: value,
                count: 1,
                reports: vec![(tsc, value)],
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
    /// Where the hypervisor took `tsc_hz` from (the Hello record).
    pub tsc_source: Option<TscSource>,
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
    /// Compression, if it ran.
    pub compression: Option<CompressionTotals>,
    /// Guest frames in use (HostMemory records): the most, and the last.
    pub host_pages: Option<HostPages>,
    /// Setting changes made and refused during the run (`[[run.change]]`, console `~`).
    pub settings: super::settings::Settings,
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
        let mut builder = AccountingBuilder::new(weights.to_vec());
        for record in records {
            builder.add(record);
        }
        builder.finish()
    }
}

/// Gathers an [`Accounting`] a record at a time, as a trace decodes, so that no one needs to
/// hold the run's records.
#[derive(Debug)]
pub struct AccountingBuilder {
    accounting: Accounting,
    weights: Vec<u32>,
    /// VMs the Hello record named.
    named: usize,
}

impl AccountingBuilder {
    /// An empty accounting; `weights` as for [`Accounting::from_records`].
    pub fn new(weights: Vec<u32>) -> Self {
        Self {
            accounting: Accounting {
                tsc_hz: None,
                tsc_source: None,
                quantum_clock: None,
                vms: Vec::new(),
                run: None,
                warnings: Vec::new(),
                partial: false,
                has_events: false,
                level: None,
                merging: None,
                compression: None,
                host_pages: None,
                settings: super::settings::Settings::default(),
            },
            weights,
            named: 0,
        }
    }

    /// Counts the next record of the run.
    pub fn add(&mut self, record: &Record) {
        let accounting = &mut self.accounting;
        accounting.settings.add(record);
        let weights = self.weights.as_slice();
        match record {
            Record::Hello {
                tsc_hz,
                tsc_source,
                vms,
                level,
                weights: announced,
                quantum_clock,
                ..
            } => {
                accounting.level = Some(*level);
                accounting.quantum_clock = Some(*quantum_clock);
                accounting.tsc_hz = (*tsc_hz != 0).then_some(*tsc_hz);
                accounting.tsc_source = Some(*tsc_source);
                self.named = vms.len();
                for (id, name) in vms.iter().enumerate() {
                    let vm = accounting.vm_mut(id as u16, weights);
                    vm.name = escape::name(name);
                    // The lab's weights when the caller has them, else the hypervisor's.
                    if weights.get(id).is_none() {
                        if let Some(&weight) = announced.get(id) {
                            vm.weight = weight.max(1);
                        }
                    }
                }
            }
            Record::GuestMetric {
                tsc,
                vm,
                name,
                value,
            } => accounting
                .vm_mut(*vm, weights)
                .report_metric(*tsc, &escape::name(name), *value),
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
                accounting.run = Some(RunSummary {
                    policy: escape::name(&summary.policy),
                    ..summary.clone()
                });
            }
            Record::DiskQueue(summary) => {
                accounting.vm_mut(summary.vm, weights).disk_queue = Some(*summary);
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
                peak_pages,
                free_pages,
                ..
            } => {
                let pages = accounting.host_pages.get_or_insert_default();
                pages.peak = pages.peak.max(*backed_pages).max(*peak_pages);
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
            Record::Compression {
                cycles,
                compressed,
                decompressed,
                decompress_cycles,
                incompressible,
                pool_full,
                pool_frames,
                pool_bytes,
                blob_pages,
                compressed_pages,
                ..
            } => {
                let totals = accounting.compression.get_or_insert_default();
                totals.cycles += cycles;
                totals.decompress_cycles = *decompress_cycles;
                totals.compressed = *compressed;
                totals.decompressed = *decompressed;
                totals.incompressible = *incompressible;
                totals.pool_full = *pool_full;
                totals.pool_frames = *pool_frames;
                totals.pool_bytes = *pool_bytes;
                totals.blob_pages = *blob_pages;
                totals.compressed_pages = compressed_pages.iter().sum();
                for (id, &pages) in compressed_pages.iter().enumerate() {
                    let vm = accounting.vm_mut(id as u16, weights);
                    vm.memory.get_or_insert_default().compressed = pages;
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
                cycles,
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
                memory.sample_cycles += *cycles;
                memory.sample_cycles_max = memory.sample_cycles_max.max(*cycles);
                memory.last_sample_cycles = *cycles;
            }
            Record::Events { tsc, events } => {
                accounting.has_events = true;
                for (at, event) in timed_events(*tsc, events) {
                    if let Some(vm) = event.vm() {
                        accounting.vm_mut(vm, weights).events.add(at, event);
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
                exits: BTreeMap::new(),
                events: EventTally::default(),
                memory: None,
                disk: DiskTotals::default(),
                disk_queue: None,
            });
        }
        &mut self.vms[index]
    }

    /// `cycles` in µs when the TSC frequency is known, else in cycles.
    /// Exits summed per reason over every VM (`vm` None) or one VM.
    pub fn exits_by_reason(&self, vm: Option<u16>) -> BTreeMap<u16, ExitTotals> {
        let mut totals: BTreeMap<u16, ExitTotals> = BTreeMap::new();
        for account in self
            .vms
            .iter()
            .filter(|account| vm.is_none_or(|id| id == account.id))
        {
            for (&reason, exits) in &account.exits {
                totals.entry(reason).or_default().merge(exits);
            }
        }
        totals
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

    /// The TSC frequency when the TSC keeps the host's time: the hypervisor measured it (QEMU,
    /// KVM, hardware). `None` when the lab file chose it: in Bochs a cycle is an instruction,
    /// and its microseconds are the emulated machine's, not anyone's wall clock.
    pub fn wall_tsc_hz(&self) -> Option<u64> {
        match self.tsc_source? {
            TscSource::LabFile => None,
            TscSource::Pit | TscSource::Cpuid => self.tsc_hz,
        }
    }

    /// `cycles` in wall-clock microseconds, when the TSC keeps the host's time
    /// ([`Self::wall_tsc_hz`]).
    pub fn wall_micros(&self, cycles: u64) -> Option<f64> {
        Some(cycles_to_micros(cycles, self.wall_tsc_hz()?))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{busy, hello, metric, run, two_vm_records};

    #[test]
    fn wall_clock_microseconds_only_when_the_hypervisor_measured_its_tsc() {
        let at = |source: TscSource| {
            let mut hello = hello(&["a"], 2_000_000_000);
            if let Record::Hello { tsc_source, .. } = &mut hello {
                *tsc_source = source;
            }
            Accounting::from_records(&[hello], &[])
        };
        // Bochs: the lab's frequency converts cycles, but they are instructions, not time.
        let lab = at(TscSource::LabFile);
        assert_eq!(lab.micros(3_000), Some(1.5));
        assert_eq!((lab.wall_tsc_hz(), lab.wall_micros(3_000)), (None, None));
        for measured in [TscSource::Pit, TscSource::Cpuid] {
            let run = at(measured);
            assert_eq!(run.wall_tsc_hz(), Some(2_000_000_000));
            assert_eq!(run.wall_micros(3_000), Some(1.5));
        }
        assert_eq!(Accounting::from_records(&[], &[]).wall_micros(1), None);
    }

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
}
