//! `carousel bench export`: what the record stream costs the guests.
//!
//! The same lab of [`VM_COUNT`] `spin` VMs runs once per trace level: `off` (only the records
//! verdicts need), `aggregate`, `switches` (the default) and `full` (every exit an event, on the
//! debug port). Spin counts loop iterations for a fixed stretch of TSC time, so every cycle the
//! hypervisor spends exporting is an iteration the guests lose: the overhead of a level is
//! `1 - iterations(level) / iterations(off)`. The iterations come from the guests' own last
//! console line (`spin: done, N iterations`), which every level keeps. In Bochs with
//! `clock: sync=none` the figures repeat exactly from run to run.
//!
//! The capacity rows ask how much the line carries when the guests give the hypervisor no
//! exits to feed it at: [`VM_COUNT`] spins with interrupts off (they never exit), then the same
//! as an operating system's idle loop (interrupts on, a 10 ms LAPIC tick), under a heavy record
//! load (a 100 µs quantum, 100 µs metric intervals, a working-set sample every millisecond).
//! The figure is records per second of TSC time that reached the host; the goal is that none
//! was dropped.

use std::fmt::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use carousel_protocol::record::{TraceLevel, TscSource};
use carousel_trace::decode::{frames_only, EventFrames};
use carousel_trace::format::group;
use carousel_trace::model::accounting::Accounting;
use carousel_trace::render::table::{Align, Table};
use serde::Serialize;

use super::{BenchError, Missing};
use crate::emulator::backend::BackendChoice;
use crate::lab::{Lab, TRACE_LEVELS};
use crate::session as run;

/// Spin VMs per run.
pub const VM_COUNT: u32 = 4;
/// The quantum, microseconds (the lab-file default).
pub const QUANTUM_US: u32 = 1_000;
/// TSC frequency of the generated lab: a nominal 1 GHz (one Bochs instruction per cycle).
pub const TSC_HZ: u64 = 1_000_000_000;
/// Bochs instructions per emulated second: paces the UARTs, as in every lab.
pub const IPS: u64 = 1_000_000;
/// How long each spin runs, milliseconds of TSC time.
pub const SPIN_MS: u64 = 150;
/// How often each spin reports its count through the METRIC hypercall, milliseconds.
pub const REPORT_MS: u64 = 10;
/// Goal: overhead of the default level, percent.
pub const GOAL_OVERHEAD_PCT: f64 = 1.0;
/// The capacity runs: quantum and metrics interval (µs), working-set sampling (ms), how long
/// each spin runs (ms).
pub const CAPACITY_QUANTUM_US: u32 = 100;
pub const CAPACITY_INTERVAL_US: u32 = 100;
pub const CAPACITY_SAMPLE_MS: u32 = 1;
pub const CAPACITY_SPIN_MS: u64 = 200;
/// The capacity runs' guests: name, and the spin arguments beyond the run time.
pub const CAPACITY_GUESTS: [(&str, &str); 2] = [("never exit", ""), ("idle loop", " tick_ms=10")];

/// One trace level's run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LevelRun {
    /// The `run.trace` value.
    pub level: String,
    /// Σ iterations over the spin VMs.
    pub iterations: u64,
    /// Iterations lost against `off`, percent.
    pub overhead_pct: f64,
    /// Bytes of the record stream (COM2, or the debug port's frames for `full`).
    pub stream_bytes: u64,
    /// Scheduler events in the stream, and the bytes of the frames that carry them per event
    /// (sequence number, CRC and COBS included); 0 for levels without events.
    pub events: u64,
    pub bytes_per_event: f64,
}

/// One capacity run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CapacityRun {
    /// What the guests do: `never exit` or `idle loop`.
    pub guests: String,
    /// Records and bytes that reached the host, over the run's elapsed TSC time.
    pub records: u64,
    pub stream_bytes: u64,
    pub seconds: f64,
    pub records_per_s: f64,
    pub bytes_per_s: f64,
    /// Records the hypervisor dropped (its export ring was full): the goal is 0.
    pub dropped: u64,
    /// The TSC frequency the run's Hello announced, and where it came from.
    #[serde(skip)]
    pub tsc_hz: u64,
    #[serde(skip)]
    pub tsc_source: TscSource,
}

/// The whole bench, as `--json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExportBench {
    pub vms: u32,
    pub quantum_us: u32,
    /// The TSC frequency the hypervisor announced: the lab's nominal 1 GHz in Bochs (a cycle
    /// per instruction), the host's as measured elsewhere.
    pub tsc_hz: u64,
    /// `LabFile`, `Pit` or `Cpuid` (the last two: TSC seconds are host seconds).
    pub tsc_source: TscSource,
    pub spin_ms: u64,
    pub levels: Vec<LevelRun>,
    pub capacity: Vec<CapacityRun>,
}

/// The lab the bench runs at `level` (a `run.trace` value).
pub fn lab(level: TraceLevel) -> Lab {
    let vms = super::guest_vms("spin", "spin", VM_COUNT, 4, |_| {
        format!("ms={SPIN_MS} report_ms={REPORT_MS}")
    });
    let mut lab = Lab::new(PathBuf::new(), vms);
    lab.quantum_us = QUANTUM_US;
    lab.ips = IPS;
    lab.tsc_hz = Some(TSC_HZ);
    lab.timeout_s = 300;
    lab.trace = level;
    lab
}

/// The capacity lab for guests that do `extra` (spin arguments) beside spinning.
pub fn capacity_lab(extra: &str) -> Lab {
    let vms = super::guest_vms("spin", "spin", VM_COUNT, 4, |_| {
        format!("ms={CAPACITY_SPIN_MS} report_ms=1000{extra}")
    });
    let mut lab = Lab::new(PathBuf::new(), vms);
    lab.quantum_us = CAPACITY_QUANTUM_US;
    lab.interval_us = CAPACITY_INTERVAL_US;
    lab.memory_sample_ms = CAPACITY_SAMPLE_MS;
    lab.ips = IPS;
    lab.tsc_hz = Some(TSC_HZ);
    lab.timeout_s = 300;
    lab
}

/// Runs one capacity lab.
fn run_capacity(
    (guests, extra): (&str, &str),
    backend: BackendChoice,
    interrupted: &AtomicBool,
) -> Result<CapacityRun, BenchError> {
    let name = format!("export-capacity-{}", guests.replace(' ', "-"));
    let finished = super::run_generated_lab(
        &name,
        capacity_lab(extra),
        &format!("Generated by `carousel bench export`: the line's capacity, {guests}."),
        backend,
        None,
        interrupted,
    )?;
    let stream_file = finished
        .out
        .join(run::record_stream_file(finished.backend, &finished.lab));
    let stream = std::fs::read(&stream_file).map_err(BenchError::file(stream_file))?;
    let accounting = &finished.model.accounting;
    capacity_run(
        guests,
        accounting,
        finished.records.len() as u64,
        stream.len() as u64,
    )
    .map_err(|missing| BenchError::Unmeasured {
        run: name.clone(),
        missing,
        out: finished.out.clone(),
    })
}

/// A capacity run's figures: `records` and `stream_bytes` reached the host over the run's
/// elapsed TSC time, at the frequency the hypervisor announced (QEMU's is the host's, not the
/// lab's nominal one).
pub fn capacity_run(
    guests: &str,
    accounting: &Accounting,
    records: u64,
    stream_bytes: u64,
) -> Result<CapacityRun, Missing> {
    let summary = accounting.run.as_ref().ok_or(Missing::RunSummary)?;
    let seconds = summary.elapsed as f64 / accounting.tsc_hz.unwrap_or(TSC_HZ) as f64;
    Ok(CapacityRun {
        guests: guests.to_string(),
        records,
        stream_bytes,
        seconds,
        records_per_s: records as f64 / seconds.max(f64::MIN_POSITIVE),
        bytes_per_s: stream_bytes as f64 / seconds.max(f64::MIN_POSITIVE),
        dropped: summary.dropped_records,
        tsc_hz: accounting.tsc_hz.unwrap_or(TSC_HZ),
        tsc_source: accounting.tsc_source.unwrap_or(TscSource::LabFile),
    })
}

/// Σ of the iterations the spin VMs printed on their last line, or None when one is missing.
pub fn iterations(console: &str) -> Option<u64> {
    let counts: Vec<u64> = console
        .lines()
        .filter_map(|line| line.split_once("] spin: done, "))
        .filter_map(|(_, rest)| rest.strip_suffix(" iterations"))
        .filter_map(|count| count.parse().ok())
        .collect();
    (counts.len() == VM_COUNT as usize).then(|| counts.iter().sum())
}

/// What one level's run gave: iterations and stream bytes, or why not.
type LevelResult = Result<(u64, u64, EventFrames), BenchError>;

/// Runs one level; returns its iterations and stream bytes.
fn run_level(
    (level, trace): (&str, TraceLevel),
    backend: BackendChoice,
    interrupted: &AtomicBool,
) -> LevelResult {
    let name = format!("export-{level}");
    let finished = super::run_generated_lab(
        &name,
        lab(trace),
        &format!("Generated by `carousel bench export`: {VM_COUNT} spin VMs, trace level {level}."),
        backend,
        None,
        interrupted,
    )?;
    let out = &finished.out;
    let console = std::fs::read_to_string(out.join("com1.txt")).unwrap_or_default();
    let iterations = iterations(&console).ok_or_else(|| BenchError::Unmeasured {
        run: name.clone(),
        missing: Missing::SpinCount,
        out: out.clone(),
    })?;
    let frames = std::fs::read(out.join(run::record_stream_file(finished.backend, &finished.lab)))
        .map(|bytes| frames_only(&bytes))
        .unwrap_or_default();
    Ok((iterations, frames.len() as u64, EventFrames::of(&frames)))
}

/// One run of the bench.
#[derive(Clone, Copy)]
enum Job {
    Level(&'static str, TraceLevel),
    Capacity(&'static str, &'static str),
}

/// What one run gave.
enum JobResult {
    Level(LevelResult),
    Capacity(Result<CapacityRun, BenchError>),
}

/// Runs every level and both capacity labs, two at a time.
pub fn bench_export(
    backend: BackendChoice,
    interrupted: &AtomicBool,
) -> Result<ExportBench, BenchError> {
    let root = crate::repo::repo_root();
    crate::image::build::build(&root, &crate::image::build::target_dir(&root), &["spin"])?;
    let jobs: Vec<Job> = TRACE_LEVELS
        .iter()
        .map(|&(level, trace)| Job::Level(level, trace))
        .chain(
            CAPACITY_GUESTS
                .iter()
                .map(|&(guests, extra)| Job::Capacity(guests, extra)),
        )
        .collect();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<JobResult>>> = Mutex::new(jobs.iter().map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, Ordering::SeqCst);
                let Some(&job) = jobs.get(index) else {
                    return;
                };
                let result = match job {
                    Job::Level(level, trace) => {
                        eprintln!("bench: trace level {level}…");
                        JobResult::Level(run_level((level, trace), backend, interrupted))
                    }
                    Job::Capacity(guests, extra) => {
                        eprintln!("bench: capacity, {guests}…");
                        JobResult::Capacity(run_capacity((guests, extra), backend, interrupted))
                    }
                };
                let mut results = results.lock().unwrap_or_else(|poison| poison.into_inner());
                if let Some(slot) = results.get_mut(index) {
                    *slot = Some(result);
                }
            });
        }
    });
    let results = results
        .into_inner()
        .unwrap_or_else(|poison| poison.into_inner());
    let mut measured = Vec::new();
    let mut capacity = Vec::new();
    for (job, result) in jobs.iter().zip(results) {
        match (job, result) {
            (_, Some(JobResult::Level(result))) => {
                let Job::Level(level, _) = job else {
                    unreachable!("a level's result comes from a level's job")
                };
                let (iterations, stream_bytes, events) = result?;
                measured.push((level.to_string(), iterations, stream_bytes, events));
            }
            (_, Some(JobResult::Capacity(result))) => capacity.push(result?),
            (Job::Level(level, _), None) => {
                return Err(BenchError::Interrupted {
                    run: format!("export-{level}"),
                })
            }
            (Job::Capacity(guests, _), None) => {
                return Err(BenchError::Interrupted {
                    run: format!("capacity ({guests})"),
                })
            }
        }
    }
    let off = measured
        .iter()
        .find(|(level, ..)| level == "off")
        .map_or(0, |(_, iterations, ..)| *iterations);
    let levels = measured
        .into_iter()
        .map(|(level, iterations, stream_bytes, events)| LevelRun {
            overhead_pct: overhead_pct(iterations, off),
            level,
            iterations,
            stream_bytes,
            events: events.events,
            bytes_per_event: events.per_event(),
        })
        .collect();
    let (tsc_hz, tsc_source) = capacity
        .first()
        .map_or((TSC_HZ, TscSource::LabFile), |run: &CapacityRun| {
            (run.tsc_hz, run.tsc_source)
        });
    Ok(ExportBench {
        vms: VM_COUNT,
        quantum_us: QUANTUM_US,
        tsc_hz,
        tsc_source,
        spin_ms: SPIN_MS,
        levels,
        capacity,
    })
}

/// Iterations lost against the baseline, percent (0 without a baseline).
pub fn overhead_pct(iterations: u64, baseline: u64) -> f64 {
    if baseline == 0 {
        return 0.0;
    }
    (1.0 - iterations as f64 / baseline as f64) * 100.0
}

impl ExportBench {
    /// The text table, with the goal marked on the default level.
    pub fn table(&self) -> String {
        let mut out = format!(
            "carousel bench export: {} spin VMs, {} ms each, quantum {} µs, TSC {} Hz ({})\n",
            self.vms,
            self.spin_ms,
            self.quantum_us,
            group(self.tsc_hz),
            super::tsc_said(self.tsc_source)
        );
        let mut table = Table::new(&[
            ("TRACE", Align::Left),
            ("ITERATIONS", Align::Right),
            ("OVERHEAD %", Align::Right),
            ("STREAM bytes", Align::Right),
            ("EVENTS", Align::Right),
            ("B/EVENT", Align::Right),
            ("", Align::Left),
        ]);
        for run in &self.levels {
            let goal = match run.level.as_str() {
                "switches" if run.overhead_pct <= GOAL_OVERHEAD_PCT => "ok (default level)",
                "switches" => "MISSED (default level)",
                _ => "",
            };
            table.push(vec![
                run.level.clone(),
                group(run.iterations),
                format!("{:.3}", run.overhead_pct),
                group(run.stream_bytes),
                group(run.events),
                if run.events > 0 {
                    format!("{:.2}", run.bytes_per_event)
                } else {
                    "-".to_string()
                },
                goal.to_string(),
            ]);
        }
        out.push_str(&table.render());
        let _ = writeln!(
            out,
            "goal: the default level costs the guests <= {GOAL_OVERHEAD_PCT}% of their iterations"
        );
        if self.tsc_source != TscSource::LabFile {
            let _ = writeln!(
                out,
                "here the TSC is host time: the iterations in {} ms follow the host's load and \
                 TCG's translation, and vary by several % from run to run; Bochs (one cycle an \
                 instruction) gives the overhead that repeats",
                self.spin_ms
            );
        }
        let _ = writeln!(
            out,
            "\ncapacity: {} spin VMs, {} ms each, quantum {} µs, metrics every {} µs, a working-set \
             sample every {} ms",
            self.vms, CAPACITY_SPIN_MS, CAPACITY_QUANTUM_US, CAPACITY_INTERVAL_US, CAPACITY_SAMPLE_MS
        );
        let mut table = Table::new(&[
            ("GUESTS", Align::Left),
            ("RECORDS", Align::Right),
            ("STREAM bytes", Align::Right),
            ("TSC s", Align::Right),
            ("RECORDS/s", Align::Right),
            ("BYTES/s", Align::Right),
            ("DROPPED", Align::Right),
            ("", Align::Left),
        ]);
        for run in &self.capacity {
            table.push(vec![
                run.guests.clone(),
                group(run.records),
                group(run.stream_bytes),
                format!("{:.3}", run.seconds),
                group(run.records_per_s.round() as u64),
                group(run.bytes_per_s.round() as u64),
                group(run.dropped),
                if run.dropped == 0 { "ok" } else { "MISSED" }.to_string(),
            ]);
        }
        out.push_str(&table.render());
        out.push_str("goal: 0 records dropped while the guests give the hypervisor no exits");
        out
    }
}

/// `carousel bench export`: runs the bench and prints its report; returns the exit code.
pub fn export_command(backend: BackendChoice, json: bool, interrupted: &AtomicBool) -> i32 {
    super::print_result(
        "export",
        bench_export(backend, interrupted),
        json,
        ExportBench::table,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iterations_add_every_spins_last_line() {
        let console = "[spin0] spin: 150 ms\n[spin0] spin: done, 1000 iterations\n\
                       [spin1] spin: done, 2000 iterations\n[spin2] spin: done, 3000 iterations\n\
                       [spin3] spin: done, 4000 iterations\n";
        assert_eq!(iterations(console), Some(10_000));
        let missing = console.replace("[spin3] spin: done, 4000 iterations\n", "");
        assert_eq!(iterations(&missing), None);
    }

    #[test]
    fn capacity_seconds_are_at_the_announced_tsc_frequency() {
        use carousel_protocol::record::{Record, RunSummary};
        let records = |tsc_hz: u64, tsc_source: TscSource| {
            let hello = Record::Hello {
                version: 1,
                lab_hash: 0,
                tsc_hz,
                tsc_source,
                preemption_timer_rate: 0,
                cpu: String::new(),
                vms: vec!["spin0".to_string()],
                commit: "test".into(),
                level: TraceLevel::Switches,
                weights: Vec::new(),
                quantum_clock: carousel_protocol::config::QuantumClock::Wall,
            };
            let summary = RunSummary {
                policy: "round-robin".to_string(),
                quantum_cycles: 1,
                elapsed: 2_600_000_000,
                root: 0,
                idle: 0,
                switch_median: 0,
                switch_max: 0,
                switches: 0,
                dropped_records: 3,
            };
            Accounting::from_records(&[hello, Record::RunSummary(summary)], &[])
        };
        // QEMU: 2.6 G cycles of a 2.6 GHz TSC are one second, not 2.6.
        let qemu = capacity_run(
            "never exit",
            &records(2_600_000_000, TscSource::Pit),
            5_000,
            80_000,
        )
        .unwrap();
        assert!((qemu.seconds - 1.0).abs() < 1e-12, "{qemu:?}");
        assert_eq!((qemu.records_per_s, qemu.bytes_per_s), (5_000.0, 80_000.0));
        assert_eq!((qemu.dropped, qemu.tsc_source), (3, TscSource::Pit));
        let bochs = capacity_run(
            "never exit",
            &records(TSC_HZ, TscSource::LabFile),
            5_000,
            80_000,
        )
        .unwrap();
        assert!((bochs.seconds - 2.6).abs() < 1e-12, "{bochs:?}");
        let no_summary = Accounting::from_records(&[], &[]);
        assert!(matches!(
            capacity_run("idle loop", &no_summary, 0, 0),
            Err(Missing::RunSummary)
        ));
    }

    #[test]
    fn the_table_says_where_its_tsc_came_from() {
        let mut bench = ExportBench {
            vms: VM_COUNT,
            quantum_us: QUANTUM_US,
            tsc_hz: TSC_HZ,
            tsc_source: TscSource::LabFile,
            spin_ms: SPIN_MS,
            levels: Vec::new(),
            capacity: Vec::new(),
        };
        let bochs = bench.table();
        assert!(bochs.contains("TSC 1,000,000,000 Hz (the lab's, one cycle per instruction)"));
        assert!(!bochs.contains("host time"), "{bochs}");
        (bench.tsc_hz, bench.tsc_source) = (2_600_000_000, TscSource::Pit);
        let qemu = bench.table();
        assert!(
            qemu.contains("TSC 2,600,000,000 Hz (measured against the PIT"),
            "{qemu}"
        );
        assert!(qemu.contains("vary by several % from run to run"), "{qemu}");
        let json: serde_json::Value = serde_json::to_value(&bench).unwrap();
        assert_eq!(json["tsc_source"], "Pit");
    }

    #[test]
    fn overhead_is_the_share_of_iterations_lost() {
        assert!((overhead_pct(990, 1000) - 1.0).abs() < 1e-9);
        assert_eq!(overhead_pct(5, 0), 0.0);
    }

    #[test]
    fn generated_labs_are_valid() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        for (level, expected) in TRACE_LEVELS {
            let path = dir.path().join(format!("{level}.toml"));
            std::fs::write(&path, lab(expected).to_toml(level)).expect("written");
            let lab = crate::lab::Lab::load(&path).expect("a valid lab");
            assert_eq!(lab.trace, expected);
            assert_eq!(lab.vms.len(), VM_COUNT as usize);
        }
        for (guests, extra) in CAPACITY_GUESTS {
            let path = dir.path().join("capacity.toml");
            std::fs::write(&path, capacity_lab(extra).to_toml(guests)).expect("written");
            let lab = crate::lab::Lab::load(&path).expect("a valid lab");
            assert_eq!(lab.quantum_us, CAPACITY_QUANTUM_US);
            assert!(lab.vms.iter().all(|vm| vm.args.ends_with(extra)));
        }
    }
}
