//! The figures of one run of a sweep, from its record stream: what the hypervisor measured (root
//! overhead, switches, fairness, wake-to-run latency, timer lag) and what the guests measured
//! themselves (throughput from their progress counters, response times).
//!
//! Every figure is a number under a flat name ([`Figures`]), so that repeated runs average
//! figure by figure and every output (table, CSV, JSON, chart) reads the same names. What is not
//! here: deciding whether a run passed (the run's verdict does) and drawing anything.
//!
//! Classes of guests: a VM's class comes from its kernel ([`Class::of_kernel`] for Carousel's
//! own guests; any kernel file, xv6 for one, is [`Class::Unmodified`]); wake latency is reported
//! per class, and `wake_p50_cycles` / `wake_p99_cycles` are the worst of the classes whose wakes
//! answer events: the interactive guests and the unmodified ones (an xv6 with idle detection on
//! blocks in its idle loop and wakes on its timer, disk and console interrupts).

use std::collections::BTreeMap;

use carousel_protocol::config::Setting;
use carousel_trace::model::accounting::{Accounting, SLEEPY_WAKE_LATE, SPIN_ITERATIONS};
use carousel_trace::model::phases::Phase;
use carousel_trace::model::steps::{KeyLog, Spread, VmSteps};
use serde::{Deserialize, Serialize};

/// `diskio`'s cumulative count of sectors moved.
pub const DISKIO_SECTORS: &str = "sectors";
/// `interactive`'s per-event response time, in cycles.
pub const INTERACTIVE_RESPONSE: &str = "response_cycles";
/// Guest metrics that count work done so far, and the unit of their rate: a VM's throughput is
/// the counter's growth per second between its first and its last report.
pub const PROGRESS_COUNTERS: [(&str, &str); 2] =
    [(SPIN_ITERATIONS, "iterations"), (DISKIO_SECTORS, "sectors")];
/// Guest metrics that report one response time (cycles) per event, as the guest saw it.
pub const RESPONSE_METRICS: [&str; 2] = [INTERACTIVE_RESPONSE, SLEEPY_WAKE_LATE];

/// Root-mode cycles over elapsed cycles, percent.
pub const OVERHEAD_PCT: &str = "overhead_pct";
/// Idle cycles over elapsed cycles, percent.
pub const IDLE_PCT: &str = "idle_pct";
/// Jain's index over every VM's guest cycles ÷ weight.
pub const JAIN: &str = "jain";
/// Jain's index over the guest cycles ÷ weight of the VMs that never blocked (at least two).
pub const JAIN_CPU: &str = "jain_cpu";
/// Slices begun per second of TSC time, over all VMs.
pub const SWITCHES_PER_S: &str = "switches_per_s";
/// Wake-to-run latency, p50 (cycles): the worst of the interactive and unmodified classes.
pub const WAKE_P50: &str = "wake_p50_cycles";
/// Wake-to-run latency, p99 (cycles): the worst of the interactive and unmodified classes.
pub const WAKE_P99: &str = "wake_p99_cycles";
/// The guests' own response times, p50 over every event of the run (cycles).
pub const RESPONSE_P50: &str = "response_p50_cycles";
/// The guests' own response times, p99 over every event of the run (cycles).
pub const RESPONSE_P99: &str = "response_p99_cycles";
/// LAPIC timer ticks: mean lag from deadline to delivery over every tick (cycles).
pub const TIMER_LAG_MEAN: &str = "timer_lag_mean_cycles";
/// LAPIC timer ticks: the largest lag (cycles).
pub const TIMER_LAG_MAX: &str = "timer_lag_max_cycles";
/// Run length, TSC cycles.
pub const ELAPSED: &str = "elapsed_cycles";
/// Prefix of a VM's throughput: `throughput.vm.NAME`.
pub const THROUGHPUT_VM: &str = "throughput.vm.";
/// Prefix of a unit's aggregate throughput: `throughput.total.UNIT`.
pub const THROUGHPUT_TOTAL: &str = "throughput.total.";
/// Prefix of a class's wake latency: `wake.CLASS.p50_cycles`, `wake.CLASS.p99_cycles`.
pub const WAKE_CLASS: &str = "wake.";

/// Prefix of a script step's duration in one run: `step.VM.STEP.mean_cycles` (the mean over
/// its repetitions), `.min_cycles`, `.max_cycles`, `.count`; STEP is its label or `step N`.
pub const STEP: &str = "step.";
/// The VM and step of a step's mean duration figure, `step.VM.STEP.mean_cycles`; `None` for any
/// other figure. A VM name has no dot (the lab refuses one), so the first dot ends it; STEP may
/// hold dots.
pub fn step_of(name: &str) -> Option<(&str, &str)> {
    name.strip_prefix(STEP)?
        .strip_suffix(".mean_cycles")?
        .split_once('.')
}

/// Prefix of a VM's whole script, first timed send to last match: `script.VM.cycles`.
pub const SCRIPT: &str = "script.";
/// Prefix of a VM's keystroke response: `keys.VM.p50_cycles`, `keys.VM.p99_cycles`, and
/// `keys.VM.wait_p99_cycles` (the part runnable, not running, when the trace tells).
pub const KEYS: &str = "keys.";

/// Prefix of a VM's requests through the shared disk's queue (runs whose disk was timed):
/// `disk.VM.requests_per_s`, `disk.VM.sectors_per_s`, `disk.VM.wait_p99_cycles`,
/// `disk.VM.blocked_pct` (percent of the run it sat blocked on its disk).
pub const DISK: &str = "disk.";

/// Prefix of one phase's figures (a stretch of a run between two setting changes, K from 0):
/// `phase.K.from_cycles` (its start, cycles after the first phase's), `phase.K.cycles` (its
/// length), `phase.K.quantum_us` (the quantum in force), `phase.K.switches_per_s`,
/// `phase.K.wake_p50_cycles` / `phase.K.wake_p99_cycles` (interactive and unmodified guests
/// together), and per VM `phase.K.share.VM` (percent of the phase it ran), `phase.K.weight.VM`
/// (the weight in force), `phase.K.keys.VM.p99_cycles`.
pub const PHASE: &str = "phase.";

/// Percent in a whole.
const PERCENT: f64 = 100.0;

/// What kind of work a guest does, for latency per class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// CPU-bound (`spin`).
    Cpu,
    /// I/O-bound (`diskio`).
    Io,
    /// Waits for events and answers them (`interactive`, `sleepy`).
    Interactive,
    /// A kernel file the user gave, such as xv6: the guest Carousel runs as it is.
    Unmodified,
    /// Carousel's other guests (`hello`, `devcheck`, ...).
    Other,
}

impl Class {
    /// The class of a VM running Carousel's guest `name`.
    pub fn of_kernel(name: &str) -> Self {
        match name {
            "spin" => Class::Cpu,
            "diskio" => Class::Io,
            "interactive" | "sleepy" => Class::Interactive,
            _ => Class::Other,
        }
    }

    /// True for the classes whose wakes answer events, which the WAKE figures cover.
    pub fn wakes_answer_events(self) -> bool {
        matches!(self, Class::Interactive | Class::Unmodified)
    }

    /// The class's name in figure names and reports.
    pub fn name(self) -> &'static str {
        match self {
            Class::Cpu => "cpu",
            Class::Io => "io",
            Class::Interactive => "interactive",
            Class::Unmodified => "unmodified",
            Class::Other => "other",
        }
    }
}

/// What a sweep records about each VM of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmInfo {
    pub name: String,
    /// The built-in guest's name, or the kernel file.
    pub kernel: String,
    pub class: Class,
    pub weight: u32,
}

/// One run's figures by name, and the unit of each VM's throughput.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    pub values: BTreeMap<String, f64>,
    /// `throughput.vm.NAME` → the counter's unit ("iterations", "sectors").
    pub units: BTreeMap<String, String>,
}

impl Figures {
    fn set(&mut self, name: &str, value: Option<f64>) {
        if let Some(value) = value.filter(|value| value.is_finite()) {
            self.values.insert(name.to_string(), value);
        }
    }

    /// The figure called `name`, if the run has it.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.values.get(name).copied()
    }
}

/// The nearest-rank percentile `percent` (0 < percent ≤ 100) of `values`, which it sorts.
pub fn percentile(values: &mut [u64], percent: u32) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = (u64::from(percent) * values.len() as u64)
        .div_ceil(100)
        .max(1);
    Some(values[rank as usize - 1])
}

/// A progress counter's reports: (TSC, value) in arrival order.
fn rate_per_second(reports: &[(u64, u64)], tsc_hz: u64) -> Option<f64> {
    let (first_tsc, first) = *reports.first()?;
    let (last_tsc, last) = *reports.last()?;
    let cycles = last_tsc
        .checked_sub(first_tsc)
        .filter(|&cycles| cycles > 0)?;
    let work = last.checked_sub(first)?;
    Some(work as f64 * tsc_hz as f64 / cycles as f64)
}

/// The figures of one run, from its accounting (gathered with the VMs' weights); `vms` are the
/// run's VMs in id order (their classes and weights). An error when the hypervisor's summaries
/// are missing.
pub fn figures(accounting: &Accounting, vms: &[VmInfo]) -> Result<Figures, String> {
    let run = accounting
        .run
        .as_ref()
        .ok_or("the hypervisor sent no RunSummary")?;
    let missing: Vec<&str> = accounting
        .vms
        .iter()
        .filter(|vm| vm.summary.is_none())
        .map(|vm| vm.name.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(format!("no VmSummary for {}", missing.join(", ")));
    }
    let class_of = |id: usize| vms.get(id).map_or(Class::Other, |vm| vm.class);
    let mut figures = Figures::default();
    figures.set(ELAPSED, Some(run.elapsed as f64));
    figures.set(
        OVERHEAD_PCT,
        accounting
            .share_of_elapsed(run.root)
            .map(|share| share * PERCENT),
    );
    figures.set(
        IDLE_PCT,
        accounting
            .share_of_elapsed(run.idle)
            .map(|share| share * PERCENT),
    );
    figures.set(JAIN, accounting.jain_guest(|_| true));
    let never_blocked = accounting
        .vms
        .iter()
        .filter(|vm| Accounting::never_blocked(vm))
        .count();
    if never_blocked >= 2 {
        figures.set(JAIN_CPU, accounting.jain_guest(Accounting::never_blocked));
    }
    let slices: u64 = accounting
        .vms
        .iter()
        .filter_map(|vm| vm.summary.as_ref())
        .map(|summary| summary.slices)
        .sum();
    if let (Some(tsc_hz), true) = (accounting.tsc_hz, run.elapsed > 0) {
        figures.set(
            SWITCHES_PER_S,
            Some(slices as f64 * tsc_hz as f64 / run.elapsed as f64),
        );
    }

    // Wake-to-run latency per class: the worst VM of the class.
    let mut wake: BTreeMap<Class, (u64, u64)> = BTreeMap::new();
    for (id, vm) in accounting.vms.iter().enumerate() {
        let Some(summary) = vm.summary.as_ref().filter(|summary| summary.wakes > 0) else {
            continue;
        };
        let entry = wake.entry(class_of(id)).or_default();
        entry.0 = entry.0.max(summary.wake_p50);
        entry.1 = entry.1.max(summary.wake_p99);
    }
    for (class, (p50, p99)) in &wake {
        let prefix = format!("{WAKE_CLASS}{}.", class.name());
        figures.set(&format!("{prefix}p50_cycles"), Some(*p50 as f64));
        figures.set(&format!("{prefix}p99_cycles"), Some(*p99 as f64));
    }
    let answering = wake
        .iter()
        .filter(|(class, _)| class.wakes_answer_events())
        .map(|(_, &latency)| latency)
        .reduce(|a, b| (a.0.max(b.0), a.1.max(b.1)));
    if let Some((p50, p99)) = answering {
        figures.set(WAKE_P50, Some(p50 as f64));
        figures.set(WAKE_P99, Some(p99 as f64));
    }

    // The guests' own view: response times, and throughput from progress counters.
    let mut responses: Vec<u64> = Vec::new();
    let mut progress: BTreeMap<(u16, &str), Vec<(u64, u64)>> = BTreeMap::new();
    for (vm, account) in accounting.vms.iter().enumerate() {
        for metric in &account.metrics {
            if RESPONSE_METRICS.contains(&metric.name.as_str()) {
                responses.extend(metric.reports.iter().map(|&(_, value)| value));
            } else if let Some((counter, _)) = PROGRESS_COUNTERS
                .iter()
                .find(|(counter, _)| *counter == metric.name)
            {
                progress.insert((vm as u16, counter), metric.reports.clone());
            }
        }
    }
    figures.set(
        RESPONSE_P50,
        percentile(&mut responses, 50).map(|cycles| cycles as f64),
    );
    figures.set(
        RESPONSE_P99,
        percentile(&mut responses, 99).map(|cycles| cycles as f64),
    );
    if let Some(tsc_hz) = accounting.tsc_hz {
        let mut totals: BTreeMap<&str, f64> = BTreeMap::new();
        for ((vm, counter), reports) in &progress {
            let Some(rate) = rate_per_second(reports, tsc_hz) else {
                continue;
            };
            let unit = PROGRESS_COUNTERS
                .iter()
                .find(|(name, _)| name == counter)
                .map_or(*counter, |(_, unit)| unit);
            let name = accounting
                .vms
                .get(usize::from(*vm))
                .map_or_else(|| format!("vm{vm}"), |vm| vm.name.clone());
            let key = format!("{THROUGHPUT_VM}{name}");
            figures.set(&key, Some(rate));
            figures.units.insert(key, unit.to_string());
            *totals.entry(unit).or_default() += rate;
        }
        for (unit, total) in totals {
            figures.set(&format!("{THROUGHPUT_TOTAL}{unit}"), Some(total));
        }
    }

    // The shared disk's queue, per VM.
    let seconds = accounting
        .tsc_hz
        .filter(|&hz| hz > 0)
        .map(|hz| run.elapsed as f64 / hz as f64);
    for vm in &accounting.vms {
        let Some(queue) = vm.disk_queue else {
            continue;
        };
        let prefix = format!("{DISK}{}.", vm.name);
        figures.set(
            &format!("{prefix}requests_per_s"),
            seconds.map(|s| queue.requests as f64 / s.max(f64::MIN_POSITIVE)),
        );
        figures.set(
            &format!("{prefix}sectors_per_s"),
            seconds.map(|s| queue.sectors as f64 / s.max(f64::MIN_POSITIVE)),
        );
        figures.set(
            &format!("{prefix}wait_p99_cycles"),
            Some(queue.wait_p99 as f64),
        );
        figures.set(
            &format!("{prefix}blocked_pct"),
            accounting
                .share_of_elapsed(queue.blocked_disk)
                .map(|share| share * PERCENT),
        );
    }

    // LAPIC timer lag, over every VM that ran its timer.
    let timers: Vec<_> = accounting.vms.iter().filter_map(|vm| vm.timer).collect();
    let ticks: u64 = timers.iter().map(|timer| timer.ticks).sum();
    if ticks > 0 {
        let lag: u128 = timers.iter().map(|timer| u128::from(timer.lag_total)).sum();
        figures.set(TIMER_LAG_MEAN, Some(lag as f64 / ticks as f64));
        figures.set(
            TIMER_LAG_MAX,
            timers
                .iter()
                .map(|timer| timer.lag_max)
                .max()
                .map(|max| max as f64),
        );
    }
    Ok(figures)
}

/// Adds each VM's task latencies to `figures`: its timed script steps (`steps`, by VM id,
/// when the run's steps were timed) and its keystroke response (`keys`). `names` are the VMs'
/// names by id.
pub fn latency_figures(
    figures: &mut Figures,
    names: &[String],
    steps: Option<&[VmSteps]>,
    keys: &KeyLog,
) {
    let name = |vm: usize| names.get(vm).cloned().unwrap_or_else(|| format!("vm{vm}"));
    for (vm, timed) in steps.unwrap_or(&[]).iter().enumerate() {
        for step in &timed.steps {
            let Some(spread) = Spread::of(&step.durations) else {
                continue;
            };
            let prefix = format!("{STEP}{}.{}.", name(vm), step.name());
            figures.set(&format!("{prefix}mean_cycles"), Some(spread.mean as f64));
            figures.set(&format!("{prefix}min_cycles"), Some(spread.min as f64));
            figures.set(&format!("{prefix}max_cycles"), Some(spread.max as f64));
            figures.set(&format!("{prefix}count"), Some(spread.count as f64));
        }
        figures.set(
            &format!("{SCRIPT}{}.cycles", name(vm)),
            timed.script.map(|cycles| cycles as f64),
        );
    }
    for vm in 0..keys.vm_count() {
        let keystrokes = keys.keystrokes_of(vm);
        let responses: Vec<u64> = keystrokes.iter().map(|key| key.response).collect();
        if let Some(spread) = Spread::of(&responses) {
            let prefix = format!("{KEYS}{}.", name(vm));
            figures.set(&format!("{prefix}p50_cycles"), Some(spread.p50 as f64));
            figures.set(&format!("{prefix}p99_cycles"), Some(spread.p99 as f64));
            // The part spent waiting for the CPU, when every keystroke's is known.
            let waits: Option<Vec<u64>> = keystrokes.iter().map(|key| key.wait).collect();
            if let Some(wait) = waits.as_deref().and_then(Spread::of) {
                figures.set(&format!("{prefix}wait_p99_cycles"), Some(wait.p99 as f64));
            }
        }
    }
}

/// Adds the figures of each phase of a run that changed its settings (see [`PHASE`]), as
/// [`carousel_trace::model::phases::phases`] cut it. `quantum_us` is the run's quantum at its
/// start, `tsc_hz` its TSC frequency (0: unknown, no rates).
pub fn phase_figures(
    figures: &mut Figures,
    vms: &[VmInfo],
    quantum_us: u32,
    phases: &[Phase],
    tsc_hz: u64,
) {
    let Some(first) = phases.first() else {
        return;
    };
    let name = |vm: usize| {
        vms.get(vm)
            .map_or_else(|| format!("vm{vm}"), |info| info.name.clone())
    };
    let mut quantum = quantum_us;
    let mut weights: Vec<u32> = vms.iter().map(|vm| vm.weight).collect();
    for (index, phase) in phases.iter().enumerate() {
        for change in &phase.changes {
            match *change {
                Setting::Quantum { us } => quantum = us,
                Setting::Weight { vm, weight } => {
                    if let Some(slot) = weights.get_mut(usize::from(vm)) {
                        *slot = weight;
                    }
                }
                Setting::Cap { .. } => {}
            }
        }
        let prefix = format!("{PHASE}{index}.");
        let length = phase.length().max(1);
        figures.set(
            &format!("{prefix}from_cycles"),
            Some((phase.start - first.start) as f64),
        );
        figures.set(&format!("{prefix}cycles"), Some(phase.length() as f64));
        figures.set(&format!("{prefix}quantum_us"), Some(f64::from(quantum)));
        let switches: u64 = phase.vms.iter().map(|vm| vm.switches).sum();
        figures.set(
            &format!("{prefix}switches_per_s"),
            (tsc_hz > 0).then(|| switches as f64 * tsc_hz as f64 / length as f64),
        );
        let mut wakes: Vec<u64> = phase
            .vms
            .iter()
            .enumerate()
            .filter(|(vm, _)| {
                vms.get(*vm)
                    .is_some_and(|info| info.class.wakes_answer_events())
            })
            .flat_map(|(_, vm)| vm.wakes.iter().copied())
            .collect();
        figures.set(
            &format!("{prefix}wake_p50_cycles"),
            percentile(&mut wakes, 50).map(|cycles| cycles as f64),
        );
        figures.set(
            &format!("{prefix}wake_p99_cycles"),
            percentile(&mut wakes, 99).map(|cycles| cycles as f64),
        );
        for (vm, row) in phase.vms.iter().enumerate() {
            let vm_name = name(vm);
            figures.set(
                &format!("{prefix}share.{vm_name}"),
                Some(row.running as f64 * PERCENT / length as f64),
            );
            figures.set(
                &format!("{prefix}weight.{vm_name}"),
                weights.get(vm).map(|&weight| f64::from(weight)),
            );
            let mut keys = row.keystrokes.clone();
            figures.set(
                &format!("{prefix}keys.{vm_name}.p99_cycles"),
                percentile(&mut keys, 99).map(|cycles| cycles as f64),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use carousel_protocol::record::{Record, RunSummary, TraceLevel, TscSource, VmSummary};

    use super::*;

    /// The figures of `records`, gathered with the weights of `vms`.
    fn figures(records: &[Record], vms: &[VmInfo]) -> Result<Figures, String> {
        let weights: Vec<u32> = vms.iter().map(|vm| vm.weight).collect();
        super::figures(&Accounting::from_records(records, &weights), vms)
    }

    fn hello(names: &[&str]) -> Record {
        Record::Hello {
            version: 1,
            lab_hash: 7,
            tsc_hz: 1_000_000,
            tsc_source: TscSource::LabFile,
            preemption_timer_rate: 0,
            cpu: "test".into(),
            vms: names.iter().map(|name| name.to_string()).collect(),
            commit: "abc".into(),
            level: TraceLevel::Switches,
            weights: Vec::new(),
            quantum_clock: carousel_protocol::config::QuantumClock::Wall,
        }
    }

    fn summary(vm: u16, guest: u64, blocked: u64, wakes: u64, p99: u64) -> Record {
        Record::VmSummary(VmSummary {
            vm,
            running: guest,
            runnable: 0,
            blocked,
            stopped: 0,
            guest,
            root: 0,
            slices: 10,
            preemptions: 5,
            yields: 5,
            wakes,
            wake_p50: p99 / 2,
            wake_p95: p99,
            wake_p99: p99,
            wake_max: p99,
            quantum_error_median_ppm: 0,
            quantum_error_max_ppm: 0,
            blocked_console: 0,
            blocked_records: 0,
            guest_records_dropped: 0,
        })
    }

    fn metric(tsc: u64, vm: u16, name: &str, value: u64) -> Record {
        Record::GuestMetric {
            tsc,
            vm,
            name: name.into(),
            value,
        }
    }

    fn vm(name: &str, kernel: &str) -> VmInfo {
        VmInfo {
            name: name.into(),
            kernel: kernel.into(),
            class: Class::of_kernel(kernel),
            weight: 1,
        }
    }

    /// A spin, a second spin, a diskio and an interactive VM over 2,000,000 cycles at 1 MHz.
    fn records() -> Vec<Record> {
        vec![
            hello(&["s0", "s1", "d", "i"]),
            metric(100_000, 0, SPIN_ITERATIONS, 1_000),
            metric(600_000, 0, SPIN_ITERATIONS, 6_000),
            metric(100_000, 1, SPIN_ITERATIONS, 0),
            metric(1_100_000, 1, SPIN_ITERATIONS, 5_000),
            metric(200_000, 2, DISKIO_SECTORS, 10),
            metric(300_000, 2, DISKIO_SECTORS, 30),
            metric(5, 3, INTERACTIVE_RESPONSE, 400),
            metric(6, 3, INTERACTIVE_RESPONSE, 100),
            metric(7, 3, INTERACTIVE_RESPONSE, 300),
            metric(8, 3, INTERACTIVE_RESPONSE, 200),
            Record::TimerLag {
                vm: 3,
                ticks: 4,
                coalesced: 0,
                lag_total: 1_000,
                lag_max: 600,
            },
            summary(0, 500_000, 0, 0, 0),
            summary(1, 500_000, 0, 0, 0),
            summary(2, 250_000, 10, 3, 9_000),
            summary(3, 250_000, 10, 4, 4_000),
            run_summary(2_000_000, 500_000, 500_000),
        ]
    }

    fn run_summary(elapsed: u64, root: u64, idle: u64) -> Record {
        Record::RunSummary(RunSummary {
            policy: "round-robin".into(),
            quantum_cycles: 1_000,
            elapsed,
            root,
            idle,
            switch_median: 1,
            switch_max: 1,
            switches: 20,
            dropped_records: 0,
        })
    }

    fn vms() -> Vec<VmInfo> {
        vec![
            vm("s0", "spin"),
            vm("s1", "spin"),
            vm("d", "diskio"),
            vm("i", "interactive"),
        ]
    }

    /// An xv6 (a kernel file) blocks and wakes with idle detection on: its wakes are in the
    /// WAKE figures, beside or without an interactive guest, the worst of them.
    /// A VM's DiskQueue record becomes its disk figures: rates over the run's 2 s, the wait
    /// p99, the share of the run blocked on disk; a VM without one has none.
    #[test]
    fn the_shared_disk_gives_per_vm_disk_figures() {
        let mut records = records();
        records.insert(
            1,
            Record::DiskQueue(carousel_protocol::record::DiskQueueSummary {
                vm: 2,
                requests: 300,
                sectors: 600,
                wait_p50: 10,
                wait_p99: 4_000,
                wait_max: 5_000,
                service_p50: 1_000,
                service_p99: 1_000,
                service_max: 1_000,
                blocked_disk: 500_000,
            }),
        );
        let figures = figures(&records, &vms()).unwrap();
        assert_eq!(figures.get("disk.d.requests_per_s"), Some(150.0));
        assert_eq!(figures.get("disk.d.sectors_per_s"), Some(300.0));
        assert_eq!(figures.get("disk.d.wait_p99_cycles"), Some(4_000.0));
        assert_eq!(figures.get("disk.d.blocked_pct"), Some(25.0));
        assert_eq!(figures.get("disk.s0.requests_per_s"), None);
    }

    #[test]
    fn unmodified_guests_count_in_the_wake_figures() {
        let mut vms = vms();
        vms[3] = VmInfo {
            class: Class::Unmodified,
            ..vm("xv6", "/home/me/xv6/kernel")
        };
        let found = figures(&records(), &vms).unwrap();
        assert_eq!(found.get("wake.unmodified.p99_cycles"), Some(4_000.0));
        assert_eq!(found.get(WAKE_P99), Some(4_000.0));
        assert!(found.get("wake.interactive.p99_cycles").is_none());
        // Beside an interactive guest whose wakes are quicker, the worst of the two.
        let mut records = records();
        records.insert(1, hello(&["s0", "s1", "d", "i", "xv6"]));
        records.remove(0);
        records.push(summary(4, 100_000, 10, 4, 12_000));
        let mut vms = self::vms();
        vms.push(VmInfo {
            class: Class::Unmodified,
            ..vm("xv6", "/home/me/xv6/kernel")
        });
        let figures = figures(&records, &vms).unwrap();
        assert_eq!(figures.get("wake.interactive.p99_cycles"), Some(4_000.0));
        assert_eq!(figures.get("wake.unmodified.p99_cycles"), Some(12_000.0));
        assert_eq!(figures.get(WAKE_P99), Some(12_000.0));
        assert_eq!(figures.get(WAKE_P50), Some(6_000.0));
    }

    #[test]
    fn every_figure_from_known_records() {
        let figures = figures(&records(), &vms()).unwrap();
        let get = |name: &str| figures.get(name).unwrap_or_else(|| panic!("no {name}"));
        assert_eq!(get(OVERHEAD_PCT), 25.0);
        assert_eq!(get(IDLE_PCT), 25.0);
        assert_eq!(get(ELAPSED), 2_000_000.0);
        // 40 slices in 2 s of TSC time.
        assert_eq!(get(SWITCHES_PER_S), 20.0);
        assert_eq!(get(JAIN_CPU), 1.0);
        // (0.5+0.5+0.25+0.25)² / (4 · (0.25+0.25+0.0625+0.0625)) = 2.25 / 2.5.
        assert!((get(JAIN) - 0.9).abs() < 1e-12);
        assert_eq!(get(WAKE_P99), 4_000.0);
        assert_eq!(get(WAKE_P50), 2_000.0);
        assert_eq!(get("wake.io.p99_cycles"), 9_000.0);
        assert!(figures.get("wake.cpu.p99_cycles").is_none());
        // 5,000 iterations in 0.5 s; 5,000 in 1 s; 20 sectors in 0.1 s.
        assert_eq!(get("throughput.vm.s0"), 10_000.0);
        assert_eq!(get("throughput.vm.s1"), 5_000.0);
        assert_eq!(get("throughput.vm.d"), 200.0);
        assert_eq!(get("throughput.total.iterations"), 15_000.0);
        assert_eq!(get("throughput.total.sectors"), 200.0);
        assert_eq!(figures.units["throughput.vm.d"], "sectors");
        assert_eq!(get(RESPONSE_P50), 200.0);
        assert_eq!(get(RESPONSE_P99), 400.0);
        assert_eq!(get(TIMER_LAG_MEAN), 250.0);
        assert_eq!(get(TIMER_LAG_MAX), 600.0);
    }

    #[test]
    fn weights_divide_guest_cycles_for_jain() {
        let mut vms = vms();
        vms[2].weight = 2;
        vms[3].weight = 2;
        let mut records = records();
        records.retain(|record| !matches!(record, Record::VmSummary(_)));
        for (id, guest) in [(0, 500_000), (1, 500_000), (2, 1_000_000), (3, 1_000_000)] {
            records.insert(1, summary(id, guest, 0, 0, 0));
        }
        let figures = figures(&records, &vms).unwrap();
        assert_eq!(figures.get(JAIN), Some(1.0));
    }

    #[test]
    fn missing_summaries_are_an_error() {
        let mut records = records();
        records.retain(|record| !matches!(record, Record::RunSummary(_)));
        assert!(figures(&records, &vms())
            .unwrap_err()
            .contains("RunSummary"));
        let mut records = self::records();
        records.retain(|record| !matches!(record, Record::VmSummary(s) if s.vm == 2));
        let error = figures(&records, &vms()).unwrap_err();
        assert!(error.contains("no VmSummary for d"), "{error}");
    }

    #[test]
    fn one_report_gives_no_rate_and_one_cpu_vm_no_jain_cpu() {
        let records = vec![
            hello(&["s0", "i"]),
            metric(100, 0, SPIN_ITERATIONS, 1_000),
            summary(0, 500_000, 0, 0, 0),
            summary(1, 500_000, 10, 2, 50),
            run_summary(1_000_000, 0, 0),
        ];
        let vms = [vm("s0", "spin"), vm("i", "sleepy")];
        let figures = figures(&records, &vms).unwrap();
        assert!(figures.get("throughput.vm.s0").is_none());
        assert!(figures.get(JAIN_CPU).is_none());
        assert_eq!(figures.get(WAKE_P99), Some(50.0));
        assert!(figures.get(RESPONSE_P99).is_none());
        assert!(figures.get(TIMER_LAG_MEAN).is_none());
    }

    #[test]
    fn latencies_are_figures_per_vm_and_step() {
        use carousel_trace::model::steps::StepDurations;
        let steps = vec![
            VmSteps::default(),
            VmSteps {
                steps: vec![
                    StepDurations {
                        step: 0,
                        label: Some("echo".into()),
                        durations: vec![10, 30, 20],
                    },
                    StepDurations {
                        step: 2,
                        label: None,
                        durations: vec![5],
                    },
                ],
                script: Some(70),
            },
        ];
        let mut keys = KeyLog::default();
        use carousel_protocol::record::Event;
        // VM 1 blocks, gets a byte at 0, wakes at 2, runs from 5: it waited 3 of its 9.
        keys.add(&Record::Events {
            tsc: 0,
            events: vec![
                Event::Run { dt: 0, vm: 1 },
                Event::Descheduled {
                    dt: 0,
                    vm: 1,
                    why: carousel_protocol::record::SliceEnd::Blocked(
                        carousel_protocol::record::BlockedOn::Timer,
                    ),
                },
                Event::Input {
                    dt: 0,
                    vm: 1,
                    bytes: 1,
                },
                Event::Wake { dt: 2, vm: 1 },
                Event::Run { dt: 3, vm: 1 },
            ],
        });
        keys.add(&Record::Answer { tsc: 9, vm: 1 });
        let mut figures = Figures::default();
        let names = vec!["a".to_string(), "sh".to_string()];
        latency_figures(&mut figures, &names, Some(&steps), &keys);
        for (name, value) in [
            ("step.sh.echo.mean_cycles", 20.0),
            ("step.sh.echo.min_cycles", 10.0),
            ("step.sh.echo.max_cycles", 30.0),
            ("step.sh.echo.count", 3.0),
            ("step.sh.step 3.mean_cycles", 5.0),
            ("script.sh.cycles", 70.0),
            ("keys.sh.p50_cycles", 9.0),
            ("keys.sh.p99_cycles", 9.0),
            ("keys.sh.wait_p99_cycles", 3.0),
        ] {
            assert_eq!(figures.get(name), Some(value), "{name}: {figures:?}");
        }
        assert!(figures.values.keys().all(|name| !name.contains(".a.")));
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut values: Vec<u64> = (1..=100).rev().collect();
        assert_eq!(percentile(&mut values, 50), Some(50));
        assert_eq!(percentile(&mut values, 99), Some(99));
        assert_eq!(percentile(&mut values, 100), Some(100));
        assert_eq!(percentile(&mut [7], 99), Some(7));
        assert_eq!(percentile(&mut [1, 2], 50), Some(1));
        assert_eq!(percentile(&mut [], 50), None);
    }

    #[test]
    fn classes_follow_the_kernel() {
        assert_eq!(Class::of_kernel("spin"), Class::Cpu);
        assert_eq!(Class::of_kernel("diskio"), Class::Io);
        assert_eq!(Class::of_kernel("interactive"), Class::Interactive);
        assert_eq!(Class::of_kernel("sleepy"), Class::Interactive);
        assert_eq!(Class::of_kernel("devcheck"), Class::Other);
    }
}
