//! `carousel bench sched`: what scheduling costs and how exact it is, across quanta.
//!
//! For each quantum in [`QUANTA_US`] the bench generates a lab of [`VM_COUNT`] `spin` VMs (TSC at
//! [`TSC_HZ`], so a 1 ms quantum is a million instructions, as on a 1 GHz CPU), runs it quietly
//! through [`crate::session::execute`], [`PARALLEL_RUNS`](super::PARALLEL_RUNS) labs at a time, and reads four figures from
//! the hypervisor's summaries: switch cost, quantum error, Jain's fairness index and root-mode
//! overhead. Quanta are wall time (the default `run.quantum_clock`), and so is the quantum
//! error. One more run puts an exit-heavy neighbour among the spins (an `adversary` flooding
//! CPUID at the goal quantum): the spins must keep their fairness and the quantum its length.
//! And one runs the spins under the credit policy at the goal quantum with one of them capped
//! below its fair share ([`CREDIT_CAP_PCT`]): the capped spin must stay within its cap and the
//! others share the rest fairly.
//! What is not here: any measuring of its own (the hypervisor measures; see
//! [`carousel_trace::model::accounting`]) and any run machinery (it is `carousel run`'s, quiet).

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use carousel_protocol::record::TscSource;
use carousel_trace::format::group;
use carousel_trace::model::accounting::Accounting;
use carousel_trace::render::table::{Align, Table};
use carousel_trace::verdict::Verdict;
use serde::Serialize;

use super::error::{BenchError, Missing};
use super::tsc_said;
use crate::emulator::backend::{Backend, BackendChoice};
use crate::lab::{Lab, DEFAULT_CPU_MODEL};
use crate::session::{self, Console, RunOptions};

/// The quanta measured, in microseconds.
pub const QUANTA_US: [u32; 5] = [500, 1_000, 2_000, 5_000, 10_000];
/// Spin VMs per run.
pub const VM_COUNT: u32 = 8;
/// TSC frequency of the generated labs: a nominal 1 GHz clock (in Bochs one cycle is one
/// instruction), so a quantum holds as many instructions as it would on a real CPU.
pub const TSC_HZ: u64 = 1_000_000_000;
/// Bochs instructions per emulated second (paces only the UARTs here: nothing reads the PIT).
pub const IPS: u64 = 1_000_000;
/// Full rotations of all VMs each run lasts at least, so that every VM gets this many slices
/// even at the largest quantum. Jain's index over whole runs carries an edge effect: the spins
/// start one slice apart and stop at their own start plus the same time, so a VM may get one
/// slice more or less than another, which costs about 0.11 / ROTATIONS² of the index (0.0003
/// at 20 rotations; 0.0008 at 12, which would blur the 0.999 goal).
pub const ROTATIONS: u64 = 20;
/// Shortest spin, in milliseconds of TSC time: enough slices at small quanta for stable medians.
pub const MIN_SPIN_MS: u64 = 200;
/// Interval of the spin guests' progress reports, milliseconds.
pub const REPORT_MS: u64 = 50;
/// RAM per spin VM, MiB.
pub const MEMORY_MIB: u32 = 4;
/// Whole-run limit of each lab, seconds (the longest takes about 45 s).
pub const TIMEOUT_S: u64 = 300;

/// Goal: switch cost, cycles from a preemption exit to the next VM's entry.
pub const GOAL_SWITCH_CYCLES: u64 = 1_500;
/// Goal: |median quantum error| at [`GOAL_QUANTUM_ERROR_AT_US`], percent.
pub const GOAL_QUANTUM_ERROR_PCT: f64 = 1.0;
/// The quantum the quantum-error goal applies to, microseconds.
pub const GOAL_QUANTUM_ERROR_AT_US: u32 = 1_000;
/// Goal: Jain's index over the VMs' guest cycles.
pub const GOAL_JAIN: f64 = 0.999;
/// The exit-heavy neighbour's run: its quantum, and the neighbour's name and arguments (the
/// spins' run time is appended).
pub const NEIGHBOUR_QUANTUM_US: u32 = GOAL_QUANTUM_ERROR_AT_US;
pub const NEIGHBOUR_NAME: &str = "flood";
pub const NEIGHBOUR_ARGS: &str = "case=flood kind=cpuid";
/// The credit run: its quantum, the spin it caps and the cap (below the fair share of 1/8, so
/// that it binds).
pub const CREDIT_QUANTUM_US: u32 = GOAL_QUANTUM_ERROR_AT_US;
pub const CREDIT_CAPPED: &str = "spin0";
pub const CREDIT_CAP_PCT: u32 = 5;

/// How long each spin VM spins at `quantum_us`: [`ROTATIONS`] rotations of [`VM_COUNT`] slices,
/// at least [`MIN_SPIN_MS`].
pub fn spin_ms(quantum_us: u32) -> u64 {
    (ROTATIONS * u64::from(VM_COUNT) * u64::from(quantum_us))
        .div_ceil(1_000)
        .max(MIN_SPIN_MS)
}

/// The lab the bench runs at `quantum_us`, to be written to `path`.
pub fn lab(quantum_us: u32, path: PathBuf) -> Lab {
    let ms = spin_ms(quantum_us);
    let vms = super::guest_vms("spin", "spin", VM_COUNT, MEMORY_MIB, |_| {
        format!("ms={ms} report_ms={REPORT_MS}")
    });
    let mut lab = Lab::new(path, vms);
    lab.quantum_us = quantum_us;
    lab.ips = IPS;
    lab.tsc_hz = Some(TSC_HZ);
    lab.cpu_model = DEFAULT_CPU_MODEL.to_string();
    lab.timeout_s = TIMEOUT_S;
    lab
}

/// The lab with an exit-heavy neighbour: [`VM_COUNT`]` - 1` spins and one `adversary` (at
/// `adversary`, its binary) flooding CPUID for as long as they spin.
pub fn neighbour_lab(path: PathBuf, adversary: PathBuf) -> Lab {
    let mut lab = lab(NEIGHBOUR_QUANTUM_US, path);
    let ms = spin_ms(NEIGHBOUR_QUANTUM_US);
    if let Some(vm) = lab.vms.last_mut() {
        *vm = crate::lab::Vm::new(
            NEIGHBOUR_NAME,
            crate::lab::Kernel::File(adversary),
            MEMORY_MIB,
        );
        vm.args = format!("{NEIGHBOUR_ARGS} ms={ms}");
    }
    lab
}

/// The lab of the credit run: the spins at [`CREDIT_QUANTUM_US`] under the credit policy,
/// [`CREDIT_CAPPED`] capped at [`CREDIT_CAP_PCT`] %.
pub fn credit_lab(path: PathBuf) -> Lab {
    let mut lab = lab(CREDIT_QUANTUM_US, path);
    lab.policy = carousel_protocol::config::SchedulerPolicy::Credit;
    for vm in &mut lab.vms {
        if vm.name == CREDIT_CAPPED {
            vm.cap_pct = CREDIT_CAP_PCT;
        }
    }
    lab
}

/// The credit run's figures: the usual ones (Jain over the uncapped spins), and what the capped
/// spin got.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CreditRun {
    pub figures: BenchRun,
    /// The capped spin's cap, percent of the CPU.
    pub cap_pct: u32,
    /// Its guest cycles, percent of the run's elapsed time.
    pub capped_guest_pct: f64,
}

/// The figures of one quantum.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchRun {
    pub quantum_us: u32,
    /// RunSummary.switch_median, cycles.
    pub switch_cycles: u64,
    /// The same in wall-clock microseconds, when the TSC keeps the host's time (QEMU, KVM);
    /// `null` in Bochs, where a cycle is an instruction.
    pub switch_us: Option<f64>,
    /// Median over the VMs of their median quantum error, percent (signed).
    pub quantum_error_pct: f64,
    /// Jain's index over the VMs' guest cycles.
    pub jain: f64,
    /// RunSummary.root / elapsed, percent.
    pub root_overhead_pct: f64,
}

/// One of the bench's runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// [`VM_COUNT`] spins at a quantum.
    Spins(u32),
    /// The spins beside an exit-heavy neighbour.
    Neighbour,
    /// The spins under credit, one capped.
    Credit,
}

impl Variant {
    fn quantum_us(self) -> u32 {
        match self {
            Variant::Spins(quantum_us) => quantum_us,
            Variant::Neighbour => NEIGHBOUR_QUANTUM_US,
            Variant::Credit => CREDIT_QUANTUM_US,
        }
    }

    fn name(self) -> String {
        match self {
            Variant::Spins(quantum_us) => format!("sched-q{quantum_us}"),
            Variant::Neighbour => format!("sched-q{NEIGHBOUR_QUANTUM_US}-{NEIGHBOUR_NAME}"),
            Variant::Credit => format!("sched-q{CREDIT_QUANTUM_US}-credit"),
        }
    }

    /// How errors name the run.
    fn label(self) -> String {
        match self {
            Variant::Spins(quantum_us) => format!("quantum {quantum_us} us"),
            Variant::Neighbour => {
                format!("quantum {NEIGHBOUR_QUANTUM_US} us beside {NEIGHBOUR_NAME}")
            }
            Variant::Credit => format!("quantum {CREDIT_QUANTUM_US} us under credit"),
        }
    }
}

/// The whole bench, as `--json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchReport {
    pub runs: Vec<BenchRun>,
    /// The spins beside an exit-heavy neighbour: Jain's index over the spins only.
    pub exit_heavy_neighbour: BenchRun,
    /// The spins under the credit policy, one capped.
    pub credit: CreditRun,
    /// The clock quanta and quantum errors are measured on.
    pub quantum_clock: String,
    /// The TSC frequency the hypervisor reported (Hello).
    pub tsc_hz: u64,
    /// Where that frequency came from: `LabFile` (Bochs: a cycle is an instruction), `Pit` or
    /// `Cpuid` (measured: cycles are host time, and the switches have microseconds too).
    pub tsc_source: TscSource,
    /// The emulator the runs used (`bochs`, `qemu-svm`, `qemu-kvm`).
    pub backend: String,
    /// Bochs' instructions per emulated second; `null` elsewhere.
    pub ips: Option<u64>,
    /// The Bochs CPU model; `null` elsewhere.
    pub cpu_model: Option<String>,
}

/// Why the bench could not give its figures.
/// The figures of one run, from its accounting; Jain's index over the VMs `fair` picks.
pub fn measure(
    quantum_us: u32,
    accounting: &Accounting,
    fair: impl Fn(&carousel_trace::model::accounting::VmAccount) -> bool,
) -> Result<BenchRun, Missing> {
    let run = accounting.run.as_ref().ok_or(Missing::RunSummary)?;
    let measured = accounting
        .vms
        .iter()
        .filter(|vm| vm.summary.is_some())
        .count();
    if measured != VM_COUNT as usize {
        return Err(Missing::VmSummaries {
            arrived: measured,
            expected: VM_COUNT as usize,
        });
    }
    Ok(BenchRun {
        quantum_us,
        switch_cycles: run.switch_median,
        switch_us: accounting.wall_micros(run.switch_median),
        quantum_error_pct: accounting
            .median_quantum_error_percent()
            .ok_or(Missing::Preemption)?,
        jain: accounting.jain_guest(fair).ok_or(Missing::GuestCycles)?,
        root_overhead_pct: accounting
            .share_of_elapsed(run.root)
            .ok_or(Missing::Elapsed)?
            * 100.0,
    })
}

/// The capped spin's guest cycles in the credit run, percent of the run's elapsed time.
pub fn capped_guest_pct(accounting: &Accounting) -> Result<f64, Missing> {
    let guest = accounting
        .vms
        .iter()
        .find(|vm| vm.name == CREDIT_CAPPED)
        .and_then(|vm| vm.guest())
        .ok_or(Missing::GuestCycles)?;
    Ok(accounting.share_of_elapsed(guest).ok_or(Missing::Elapsed)? * 100.0)
}

/// Where the bench keeps the run directory named `name`.
pub fn out_dir(root: &Path, name: &str) -> PathBuf {
    root.join("target/carousel/bench").join(name)
}

/// What one quantum's run gave.
#[derive(Debug)]
struct Measurement {
    figures: BenchRun,
    /// The capped spin's guest cycles, percent of the run (the credit run only).
    capped_guest_pct: Option<f64>,
    /// The TSC frequency the hypervisor reported, and where it came from.
    tsc_hz: u64,
    tsc_source: TscSource,
    /// The emulator that ran it.
    backend: Backend,
    /// Problems with the record stream or the accounting, one sentence each.
    warnings: Vec<String>,
}

/// One run: generate its lab, run it quietly, measure.
fn bench_one(
    variant: Variant,
    backend: BackendChoice,
    labs: &Path,
    root: &Path,
    guests: &Path,
    interrupted: &AtomicBool,
) -> Result<Measurement, BenchError> {
    let quantum_us = variant.quantum_us();
    let path = labs.join(format!("{}.toml", variant.name()));
    let (mut lab, comment) = match variant {
        Variant::Spins(_) => (
            lab(quantum_us, path),
            format!("{VM_COUNT} spin VMs, quantum {quantum_us} us"),
        ),
        Variant::Neighbour => (
            neighbour_lab(path, guests.join("adversary")),
            format!(
                "{} spin VMs and an adversary ({NEIGHBOUR_ARGS}), quantum {quantum_us} us",
                VM_COUNT - 1
            ),
        ),
        Variant::Credit => (
            credit_lab(path),
            format!(
                "{VM_COUNT} spin VMs under credit, {CREDIT_CAPPED} capped at {CREDIT_CAP_PCT} %, \
                 quantum {quantum_us} us"
            ),
        ),
    };
    let text = lab
        .save(&format!("Generated by `carousel bench sched`: {comment}."))
        .map_err(BenchError::file(&lab.path))?;
    let out = out_dir(root, &variant.name());
    let options = RunOptions::generated(lab.path.clone(), backend, out.clone());
    let finished =
        session::execute_lab(lab, &options, Console::Quiet, interrupted).map_err(|source| {
            BenchError::Run {
                run: variant.label(),
                source: Box::new(source),
            }
        })?;
    // Keep the lab next to its artifacts, so the run can be repeated with `carousel run`.
    let _ = std::fs::write(out.join("lab.toml"), &text);
    if finished.outcome.verdict != Verdict::Passed {
        return Err(BenchError::Failed {
            run: variant.label(),
            verdict: finished.outcome.verdict,
            problems: finished.outcome.problems.clone(),
            out,
        });
    }
    let accounting = finished.accounting();
    let unmeasured = |missing| BenchError::Unmeasured {
        run: variant.label(),
        missing,
        out: out.clone(),
    };
    let fair = |vm: &carousel_trace::model::accounting::VmAccount| {
        vm.name != NEIGHBOUR_NAME && !(variant == Variant::Credit && vm.name == CREDIT_CAPPED)
    };
    let figures = measure(quantum_us, accounting, fair).map_err(unmeasured)?;
    let capped_guest_pct = match variant {
        Variant::Credit => Some(capped_guest_pct(accounting).map_err(unmeasured)?),
        _ => None,
    };
    let mut warnings: Vec<String> = finished.stream_warnings.clone();
    warnings.extend(accounting.problems());
    let warnings = warnings
        .into_iter()
        .map(|warning| format!("quantum {quantum_us} us: {warning}"))
        .collect();
    Ok(Measurement {
        figures,
        capped_guest_pct,
        tsc_hz: accounting.tsc_hz.unwrap_or(TSC_HZ),
        tsc_source: accounting.tsc_source.unwrap_or(TscSource::LabFile),
        backend: finished.backend,
        warnings,
    })
}

/// Runs the scheduling bench; progress and warnings go to stderr.
pub fn bench_sched(
    backend: BackendChoice,
    jobs: usize,
    interrupted: &AtomicBool,
) -> Result<BenchReport, BenchError> {
    let root = crate::repo::repo_root();
    let labs = tempfile::tempdir().map_err(BenchError::file(std::env::temp_dir()))?;
    // Build once up front, so that the parallel runs find everything fresh.
    eprintln!("bench: building the hypervisor, the spin guest and the adversary…");
    let built = crate::image::build::build(
        &root,
        &crate::image::build::target_dir(&root),
        &["spin", "adversary"],
    )?;
    let started = Instant::now();
    let variants: Vec<Variant> = QUANTA_US
        .iter()
        .map(|&quantum_us| Variant::Spins(quantum_us))
        .chain([Variant::Neighbour, Variant::Credit])
        .collect();
    // Longest runs first, so that the two workers finish together.
    let mut order: Vec<usize> = (0..variants.len()).collect();
    order.sort_by_key(|&index| std::cmp::Reverse(spin_ms(variants[index].quantum_us())));
    let in_order = super::run_parallel_by(&order, jobs, interrupted, |&index| {
        let variant = variants[index];
        let name = variant.name();
        eprintln!(
            "bench: {name}: {VM_COUNT} VMs, {} ms each…",
            spin_ms(variant.quantum_us())
        );
        let began = Instant::now();
        let result = bench_one(
            variant,
            backend,
            labs.path(),
            &root,
            &built.guests_dir,
            interrupted,
        );
        eprintln!(
            "bench: {name}: {} in {:.1} s",
            if result.is_ok() { "done" } else { "FAILED" },
            began.elapsed().as_secs_f64()
        );
        result
    });
    let mut results: Vec<Option<Result<Measurement, BenchError>>> =
        variants.iter().map(|_| None).collect();
    for (index, result) in order.iter().zip(in_order) {
        results[*index] = result;
    }
    let mut runs = Vec::new();
    let mut neighbour = None;
    let mut credit = None;
    let mut clock = None;
    for (result, variant) in results.into_iter().zip(&variants) {
        match result {
            Some(Ok(measurement)) => {
                for warning in &measurement.warnings {
                    eprintln!("warning: {warning}");
                }
                clock.get_or_insert((
                    measurement.tsc_hz,
                    measurement.tsc_source,
                    measurement.backend,
                ));
                match variant {
                    Variant::Spins(_) => runs.push(measurement.figures),
                    Variant::Neighbour => neighbour = Some(measurement.figures),
                    Variant::Credit => {
                        credit = measurement
                            .capped_guest_pct
                            .map(|capped_guest_pct| CreditRun {
                                figures: measurement.figures,
                                cap_pct: CREDIT_CAP_PCT,
                                capped_guest_pct,
                            })
                    }
                }
            }
            Some(Err(error)) => return Err(error),
            None => {
                return Err(BenchError::Interrupted {
                    run: variant.label(),
                })
            }
        }
    }
    eprintln!(
        "bench: {} runs in {:.1} s",
        variants.len(),
        started.elapsed().as_secs_f64()
    );
    let exit_heavy_neighbour = neighbour.ok_or(BenchError::Interrupted {
        run: Variant::Neighbour.label(),
    })?;
    let credit = credit.ok_or(BenchError::Interrupted {
        run: Variant::Credit.label(),
    })?;
    let (tsc_hz, tsc_source, backend) =
        clock.unwrap_or((TSC_HZ, TscSource::LabFile, Backend::Bochs));
    let bochs = backend == Backend::Bochs;
    Ok(BenchReport {
        runs,
        exit_heavy_neighbour,
        credit,
        quantum_clock: "wall".to_string(),
        tsc_hz,
        tsc_source,
        backend: backend.to_string(),
        ips: bochs.then_some(IPS),
        cpu_model: bochs.then(|| DEFAULT_CPU_MODEL.to_string()),
    })
}

impl BenchReport {
    /// The report as one JSON object.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report of numbers and strings serialises")
    }

    /// The report as a text table, each figure with its goal.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let machine = match (&self.cpu_model, self.ips) {
            (Some(model), Some(ips)) => format!("Bochs {model}, ips {}", group(ips)),
            _ => self.backend.clone(),
        };
        let _ = writeln!(
            out,
            "carousel bench sched: {VM_COUNT} spin VMs per run, {machine}, TSC {} Hz ({}); \
             quanta and quantum errors on the {} clock",
            group(self.tsc_hz),
            tsc_said(self.tsc_source),
            self.quantum_clock
        );
        let mark = |ok: bool| if ok { "ok" } else { "MISSED" };
        let wall = self.tsc_source != TscSource::LabFile;
        let mut columns = vec![
            ("QUANTUM µs", Align::Left),
            ("SWITCH cyc", Align::Right),
            ("", Align::Left),
        ];
        if wall {
            columns.push(("SWITCH µs", Align::Right));
        }
        columns.extend([
            ("QUANTUM ERROR %", Align::Right),
            ("", Align::Left),
            ("JAIN", Align::Right),
            ("", Align::Left),
            ("ROOT %", Align::Right),
        ]);
        let mut table = Table::new(&columns);
        let row = |label: String, run: &BenchRun, goal_error: bool| {
            let mut cells = vec![
                label,
                group(run.switch_cycles),
                mark(run.switch_cycles <= GOAL_SWITCH_CYCLES).to_string(),
            ];
            if wall {
                cells.push(
                    run.switch_us
                        .map_or("-".to_string(), |us| format!("{us:.2}")),
                );
            }
            cells.extend([
                format!("{:+.3}", run.quantum_error_pct),
                if goal_error {
                    mark(run.quantum_error_pct.abs() <= GOAL_QUANTUM_ERROR_PCT).to_string()
                } else {
                    String::new()
                },
                format!("{:.5}", run.jain),
                mark(run.jain >= GOAL_JAIN).to_string(),
                format!("{:.3}", run.root_overhead_pct),
            ]);
            cells
        };
        for run in &self.runs {
            table.push(row(
                group(run.quantum_us),
                run,
                run.quantum_us == GOAL_QUANTUM_ERROR_AT_US,
            ));
        }
        table.push(row(
            format!(
                "{} + {NEIGHBOUR_NAME}",
                group(self.exit_heavy_neighbour.quantum_us)
            ),
            &self.exit_heavy_neighbour,
            true,
        ));
        table.push(row(
            format!("{} credit", group(self.credit.figures.quantum_us)),
            &self.credit.figures,
            true,
        ));
        out.push_str(&table.render());
        let credit = &self.credit;
        let _ = write!(
            out,
            "goals: switch <= {} cycles; |quantum error| <= {GOAL_QUANTUM_ERROR_PCT}% at {} us; \
             Jain >= {GOAL_JAIN}\n\
             '+ {NEIGHBOUR_NAME}': {} spins beside an adversary ({NEIGHBOUR_ARGS}); Jain over the \
             spins\n\
             'credit': {VM_COUNT} spins under the credit policy, {CREDIT_CAPPED} capped at {}%: it \
             got {:.3}% of the run in guest mode (goal <= {}%) {}; Jain over the other {}",
            group(GOAL_SWITCH_CYCLES),
            group(GOAL_QUANTUM_ERROR_AT_US),
            VM_COUNT - 1,
            credit.cap_pct,
            credit.capped_guest_pct,
            credit.cap_pct,
            mark(credit.capped_guest_pct <= f64::from(credit.cap_pct)),
            VM_COUNT - 1
        );
        if wall {
            let _ = write!(
                out,
                "\nthe switch goal is set in Bochs' cycles, one per instruction; here a cycle is \
                 host time, and {} emulates each world switch instruction by instruction",
                self.backend
            );
        }
        out
    }
}

/// `carousel bench sched`: runs the bench and prints its report; returns the exit code.
pub fn sched_command(
    backend: BackendChoice,
    json: bool,
    jobs: usize,
    interrupted: &AtomicBool,
) -> i32 {
    match bench_sched(backend, jobs, interrupted) {
        Ok(report) => {
            if json {
                println!("{}", report.json());
            } else {
                println!("{}", report.table());
            }
            0
        }
        Err(error) => {
            eprintln!("carousel bench: {error}");
            if let BenchError::Failed { out, .. } = &error {
                eprintln!(
                    "carousel bench: `carousel run {}` repeats that run live",
                    out.join("lab.toml").display()
                );
            }
            error.exit_code()
        }
    }
}

#[cfg(test)]
mod tests {
    use carousel_protocol::record::{Record, RunSummary, VmSummary};

    use super::*;

    fn report() -> BenchReport {
        BenchReport {
            runs: vec![
                BenchRun {
                    quantum_us: 500,
                    switch_cycles: 1_200,
                    switch_us: None,
                    quantum_error_pct: 0.25,
                    jain: 0.99995,
                    root_overhead_pct: 0.5,
                },
                BenchRun {
                    quantum_us: 1_000,
                    switch_cycles: 1_600,
                    switch_us: None,
                    quantum_error_pct: -1.5,
                    jain: 0.998,
                    root_overhead_pct: 0.25,
                },
            ],
            exit_heavy_neighbour: BenchRun {
                quantum_us: 1_000,
                switch_cycles: 1_300,
                switch_us: None,
                quantum_error_pct: 0.5,
                jain: 0.9995,
                root_overhead_pct: 4.0,
            },
            credit: CreditRun {
                figures: BenchRun {
                    quantum_us: 1_000,
                    switch_cycles: 1_250,
                    switch_us: None,
                    quantum_error_pct: 0.125,
                    jain: 0.9996,
                    root_overhead_pct: 3.5,
                },
                cap_pct: 5,
                capped_guest_pct: 4.75,
            },
            quantum_clock: "wall".to_string(),
            tsc_hz: TSC_HZ,
            tsc_source: TscSource::LabFile,
            backend: "bochs".to_string(),
            ips: Some(IPS),
            cpu_model: Some(DEFAULT_CPU_MODEL.to_string()),
        }
    }

    /// The report as QEMU's runs give it: the TSC measured, every switch in microseconds too.
    fn qemu_report() -> BenchReport {
        let mut report = report();
        let runs = report
            .runs
            .iter_mut()
            .chain([&mut report.exit_heavy_neighbour, &mut report.credit.figures]);
        for run in runs {
            run.switch_cycles *= 40;
            run.switch_us = Some(run.switch_cycles as f64 / 2_600.0);
        }
        report.tsc_hz = 2_600_000_000;
        report.tsc_source = TscSource::Pit;
        report.backend = "qemu-svm".to_string();
        report.ips = None;
        report.cpu_model = None;
        report
    }

    #[test]
    fn json_is_one_object_of_the_documented_shape() {
        let value: serde_json::Value = serde_json::from_str(&report().json()).unwrap();
        let object = value.as_object().unwrap();
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "backend",
                "cpu_model",
                "credit",
                "exit_heavy_neighbour",
                "ips",
                "quantum_clock",
                "runs",
                "tsc_hz",
                "tsc_source"
            ]
        );
        assert_eq!(object["quantum_clock"], "wall");
        assert_eq!(object["exit_heavy_neighbour"]["jain"], 0.9995);
        assert_eq!(object["credit"]["cap_pct"], 5);
        assert_eq!(object["credit"]["capped_guest_pct"], 4.75);
        assert_eq!(object["credit"]["figures"]["jain"], 0.9996);
        assert_eq!(object["tsc_hz"], 1_000_000_000u64);
        assert_eq!(object["ips"], 1_000_000u64);
        assert_eq!(object["cpu_model"], "corei7_skylake_x");
        assert_eq!(object["tsc_source"], "LabFile");
        assert_eq!(object["backend"], "bochs");
        let runs = object["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 2);
        for run in runs {
            let mut keys: Vec<&str> = run
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            keys.sort_unstable();
            assert_eq!(
                keys,
                [
                    "jain",
                    "quantum_error_pct",
                    "quantum_us",
                    "root_overhead_pct",
                    "switch_cycles",
                    "switch_us"
                ]
            );
        }
        assert_eq!(runs[1]["quantum_us"], 1_000);
        assert_eq!(runs[1]["switch_cycles"], 1_600);
        assert_eq!(runs[1]["quantum_error_pct"], -1.5);
        assert_eq!(runs[0]["jain"], 0.99995);
        assert_eq!(runs[0]["root_overhead_pct"], 0.5);
        assert!(runs[0]["switch_us"].is_null());
        let qemu: serde_json::Value = serde_json::from_str(&qemu_report().json()).unwrap();
        assert_eq!(qemu["runs"][0]["switch_cycles"], 48_000);
        assert_eq!(qemu["runs"][0]["switch_us"], 48_000.0 / 2_600.0);
        assert_eq!(qemu["tsc_source"], "Pit");
        assert!(qemu["ips"].is_null() && qemu["cpu_model"].is_null());
    }

    #[test]
    fn where_the_tsc_keeps_host_time_the_table_gives_switches_in_microseconds() {
        let table = qemu_report().table();
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[0].contains("qemu-svm, TSC 2,600,000,000 Hz (measured against the PIT"),
            "{table}"
        );
        assert!(!lines[0].contains("ips"), "{table}");
        assert!(lines[1].contains("SWITCH cyc") && lines[1].contains("SWITCH µs"));
        let first: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            first,
            ["500", "48,000", "MISSED", "18.46", "+0.250", "0.99995", "ok", "0.500"]
        );
        assert!(table.contains("here a cycle is host time"), "{table}");
        // Bochs' table has no such column: its cycles are instructions.
        let bochs = report().table();
        assert!(
            !bochs.contains("SWITCH µs") && !bochs.contains("host time"),
            "{bochs}"
        );
        assert!(bochs
            .lines()
            .next()
            .unwrap()
            .contains("Bochs corei7_skylake_x, ips 1,000,000"));
    }

    #[test]
    fn table_marks_each_goal() {
        let table = report().table();
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].contains("8 spin VMs") && lines[0].contains("TSC 1,000,000,000 Hz"));
        assert!(lines[0].contains("on the wall clock"), "{table}");
        assert!(lines[1].starts_with("QUANTUM µs"), "{table}");
        let first: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            first,
            ["500", "1,200", "ok", "+0.250", "0.99995", "ok", "0.500"]
        );
        let second: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(
            second,
            ["1,000", "1,600", "MISSED", "-1.500", "MISSED", "0.99800", "MISSED", "0.250"]
        );
        let neighbour: Vec<&str> = lines[4].split_whitespace().collect();
        assert_eq!(
            neighbour,
            ["1,000", "+", "flood", "1,300", "ok", "+0.500", "ok", "0.99950", "ok", "4.000"]
        );
        let credit: Vec<&str> = lines[5].split_whitespace().collect();
        assert_eq!(
            credit,
            ["1,000", "credit", "1,250", "ok", "+0.125", "ok", "0.99960", "ok", "3.500"]
        );
        assert!(
            lines[6].starts_with("goals: switch <= 1,500 cycles"),
            "{table}"
        );
        assert!(
            lines[8].contains(
                "spin0 capped at 5%: it got 4.750% of the run in guest mode (goal <= 5%) ok"
            ),
            "{table}"
        );
    }

    #[test]
    fn every_vm_gets_enough_slices() {
        for quantum_us in QUANTA_US {
            let ms = spin_ms(quantum_us);
            assert!(ms >= MIN_SPIN_MS);
            let slices = ms * 1_000 / (u64::from(VM_COUNT) * u64::from(quantum_us));
            assert!(slices >= ROTATIONS, "{quantum_us} us: {slices} slices");
        }
        assert_eq!(spin_ms(10_000), 1_600);
        assert_eq!(spin_ms(500), MIN_SPIN_MS);
    }

    #[test]
    fn the_neighbour_lab_is_valid() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let adversary = dir.path().join("adversary");
        // The lab checks only that the kernel is an ELF file: its magic.
        std::fs::write(&adversary, b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0").expect("written");
        let generated = neighbour_lab(PathBuf::from("sched.toml"), adversary.clone());
        let text = generated.to_toml("sched");
        let lab = crate::lab::Lab::parse(Path::new("sched.toml"), &text).unwrap();
        assert_eq!(lab.vms, generated.vms);
        assert_eq!(lab.vms.len(), VM_COUNT as usize);
        assert_eq!(lab.quantum_us, NEIGHBOUR_QUANTUM_US);
        let flood = lab.vms.last().unwrap();
        assert_eq!(flood.name, NEIGHBOUR_NAME);
        assert_eq!(flood.kernel, crate::lab::Kernel::File(adversary));
        assert!(flood.args.starts_with(NEIGHBOUR_ARGS), "{}", flood.args);
        assert_eq!(
            lab.vms
                .iter()
                .filter(|vm| vm.name.starts_with("spin"))
                .count(),
            VM_COUNT as usize - 1
        );
    }

    #[test]
    fn the_credit_lab_is_valid() {
        let generated = credit_lab(PathBuf::from("sched.toml"));
        let text = generated.to_toml("sched");
        let lab = crate::lab::Lab::parse(Path::new("sched.toml"), &text).unwrap();
        assert_eq!(lab.vms, generated.vms);
        assert_eq!(
            lab.policy,
            carousel_protocol::config::SchedulerPolicy::Credit
        );
        let capped: Vec<(&str, u32)> = lab
            .vms
            .iter()
            .filter(|vm| vm.cap_pct > 0)
            .map(|vm| (vm.name.as_str(), vm.cap_pct))
            .collect();
        assert_eq!(capped, [(CREDIT_CAPPED, CREDIT_CAP_PCT)]);
        const { assert!(CREDIT_CAP_PCT * VM_COUNT < 100, "the cap binds") };
    }

    #[test]
    fn generated_labs_are_valid() {
        for quantum_us in QUANTA_US {
            let generated = lab(quantum_us, PathBuf::from("sched.toml"));
            let text = generated.to_toml("sched");
            let lab = crate::lab::Lab::parse(Path::new("sched.toml"), &text).unwrap();
            assert_eq!(lab.vms, generated.vms);
            assert_eq!(lab.quantum_us, quantum_us);
            assert_eq!(lab.tsc_hz, Some(TSC_HZ));
            assert_eq!(lab.ips, IPS);
            assert_eq!(lab.vms.len(), VM_COUNT as usize);
            let ms = spin_ms(quantum_us);
            assert!(lab
                .vms
                .iter()
                .all(|vm| vm.args == format!("ms={ms} report_ms={REPORT_MS}")));
        }
    }

    fn summary(vm: u16, guest: u64, error_ppm: i64) -> VmSummary {
        VmSummary {
            vm,
            running: guest,
            runnable: 1_000_000 - guest,
            blocked: 0,
            stopped: 0,
            guest,
            root: 0,
            slices: 12,
            preemptions: 12,
            yields: 0,
            wakes: 0,
            wake_p50: 0,
            wake_p95: 0,
            wake_p99: 0,
            wake_max: 0,
            quantum_error_median_ppm: error_ppm,
            quantum_error_max_ppm: error_ppm.abs(),
            blocked_console: 0,
            blocked_records: 0,
            guest_records_dropped: 0,
        }
    }

    #[test]
    fn figures_come_from_the_summaries() {
        let mut records = vec![Record::Hello {
            version: 1,
            lab_hash: 0,
            tsc_hz: TSC_HZ,
            tsc_source: TscSource::LabFile,
            preemption_timer_rate: 0,
            cpu: String::new(),
            vms: (0..VM_COUNT).map(|i| format!("spin{i}")).collect(),
            commit: "test".into(),
            level: carousel_protocol::record::TraceLevel::Switches,
            weights: Vec::new(),
            quantum_clock: carousel_protocol::config::QuantumClock::Wall,
        }];
        for vm in 0..VM_COUNT as u16 {
            records.push(Record::VmSummary(summary(vm, 100_000, i64::from(vm) * 100)));
        }
        records.push(Record::RunSummary(RunSummary {
            policy: "round-robin".to_string(),
            quantum_cycles: 1_000_000,
            elapsed: 1_000_000,
            root: 20_000,
            idle: 180_000,
            switch_median: 1_100,
            switch_max: 2_000,
            switches: 96,
            dropped_records: 0,
        }));
        let accounting = Accounting::from_records(&records, &[]);
        let figures = measure(1_000, &accounting, |_| true).unwrap();
        assert_eq!(figures.quantum_us, 1_000);
        assert_eq!(figures.switch_cycles, 1_100);
        // A lab-file TSC (Bochs) counts instructions: no microseconds.
        assert_eq!(figures.switch_us, None);
        let mut measured = records.clone();
        if let Record::Hello { tsc_source, .. } = &mut measured[0] {
            *tsc_source = TscSource::Pit;
        }
        let measured = Accounting::from_records(&measured, &[]);
        let at_pit = measure(1_000, &measured, |_| true).unwrap();
        assert_eq!(at_pit.switch_us, Some(1.1));
        // Medians 0, 100, ..., 700 ppm: the median of the eight is 350 ppm = 0.035 %.
        assert!((figures.quantum_error_pct - 0.035).abs() < 1e-12);
        assert_eq!(figures.jain, 1.0);
        // Jain's index over the VMs the filter keeps: spin0 alone is perfectly fair.
        let alone = measure(1_000, &accounting, |vm| vm.name == "spin0").unwrap();
        assert_eq!(alone.jain, 1.0);
        assert!((figures.root_overhead_pct - 2.0).abs() < 1e-12);

        // A missing VM summary is an error, not a figure.
        records.remove(3);
        let accounting = Accounting::from_records(&records, &[]);
        assert_eq!(
            measure(1_000, &accounting, |_| true).unwrap_err(),
            Missing::VmSummaries {
                arrived: 7,
                expected: 8
            }
        );
        assert!(measure(1_000, &Accounting::from_records(&[], &[]), |_| true).is_err());
    }
}
