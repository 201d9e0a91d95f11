//! `carousel report TRACE`: the accounting of a finished run, read back from its record stream
//! (the run directory's `com2.bin`, or the file `carousel run --trace FILE` wrote), as text, JSON
//! or CSV; with `--interval MS`, per-interval rows (after xenalyze's `--interval` mode); with
//! `--html FILE`, also the report page ([`crate::html`]). A damaged trace is reported as far as
//! it goes: every gap and corrupt frame is named and everything else still counts.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use carousel_protocol::record::{exit_reason_name, timed_events, Event, Record};
use carousel_protocol::wire::{decode_each, encode_vec, Decoded, Frame};
use serde_json::{json, Value};

use crate::accounting::{group, Accounting, AccountingBuilder, Align, Table};
use crate::timeline::{intervals, Interval, Timeline, MAX_INTERVALS};

/// What `report` prints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    #[default]
    Text,
    Json,
    /// One row per VM (the columns of the JSON `vms` entries).
    Csv,
}

/// The CSV header of [`csv_report`].
pub const CSV_HEADER: &str = "vm,running_cycles,runnable_cycles,blocked_cycles,guest_cycles,\
root_cycles,slices,preemptions,yields,wakes,wake_p50,wake_p95,wake_p99,wake_max";

/// One CSV row per VM; cells of a VM whose summary did not arrive are empty.
pub fn csv_report(records: &[Record]) -> String {
    let accounting = Accounting::from_records(records, &[]);
    let mut out = String::from(CSV_HEADER);
    out.push('\n');
    for vm in &accounting.vms {
        let cells: Vec<String> = match &vm.summary {
            Some(s) => [
                s.running,
                s.runnable,
                s.blocked,
                s.guest,
                s.root,
                s.slices,
                s.preemptions,
                s.yields,
                s.wakes,
                s.wake_p50,
                s.wake_p95,
                s.wake_p99,
                s.wake_max,
            ]
            .iter()
            .map(u64::to_string)
            .collect(),
            None => vec![String::new(); 13],
        };
        // VM names are [A-Za-z0-9_-]: no quoting needed.
        out.push_str(&vm.name);
        for cell in cells {
            out.push(',');
            out.push_str(&cell);
        }
        out.push('\n');
    }
    out
}

/// The records that concern VM `name` (by the Hello record's names), with that VM renumbered
/// to 0, plus the run-wide ones: a report of one VM (the run's totals are still every VM's).
pub fn only_vm(records: &[Record], name: &str) -> Option<Vec<Record>> {
    let id = records.iter().find_map(|record| match record {
        Record::Hello { vms, .. } => vms.iter().position(|vm| vm == name),
        _ => None,
    })? as u16;
    let records = records
        .iter()
        .filter_map(|record| {
            let mut record = record.clone();
            let keep = match vm_of(&mut record) {
                // Run-wide records stay.
                None => true,
                Some(vm) if *vm == id => {
                    *vm = 0;
                    true
                }
                Some(_) => false,
            };
            keep.then_some(record)
        })
        .map(|mut record| {
            match &mut record {
                Record::Hello { vms, weights, .. } => {
                    *vms = vec![name.to_string()];
                    *weights = weights.get(usize::from(id)).copied().into_iter().collect();
                }
                Record::Events { tsc, events } => *events = events_of_vm(*tsc, events, id),
                _ => {}
            }
            record
        })
        .collect();
    Some(records)
}

/// The events of a batch that concern VM `id` (renumbered to 0), plus drop counters, with
/// their time deltas recomputed.
fn events_of_vm(tsc: u64, events: &[Event], id: u16) -> Vec<Event> {
    let mut last = tsc;
    timed_events(tsc, events)
        .filter(|(_, event)| event.vm().is_none_or(|vm| vm == id))
        .map(|(now, event)| {
            let dt = now - last;
            last = now;
            match *event {
                Event::Run { .. } => Event::Run { dt, vm: 0 },
                Event::Descheduled { why, .. } => Event::Descheduled { dt, vm: 0, why },
                Event::Wake { .. } => Event::Wake { dt, vm: 0 },
                Event::Exit { reason, cycles, .. } => Event::Exit {
                    dt,
                    vm: 0,
                    reason,
                    cycles,
                },
                Event::Console { bytes, .. } => Event::Console { dt, vm: 0, bytes },
                Event::Dropped { total, .. } => Event::Dropped { dt, total },
            }
        })
        .collect()
}

/// The VM id a record is about, if it is about one VM.
fn vm_of(record: &mut Record) -> Option<&mut u16> {
    match record {
        Record::Hello { .. }
        | Record::RunSummary(_)
        | Record::RunEnd { .. }
        | Record::Events { .. }
        | Record::Merging { .. }
        | Record::HostMemory { .. } => None,
        Record::Check { vm, .. }
        | Record::MemoryMap { vm, .. }
        | Record::MemoryInfo { vm, .. }
        | Record::Balloon { vm, .. }
        | Record::BalloonTarget { vm, .. }
        | Record::WorkingSet { vm, .. }
        | Record::GuestMetric { vm, .. }
        | Record::DiskIo { vm, .. }
        | Record::DiskSector { vm, .. }
        | Record::AddressSpaces { vm, .. }
        | Record::TimerLag { vm, .. }
        | Record::ExitInterval { vm, .. }
        | Record::VmStopped { vm, .. } => Some(vm),
        Record::VmSummary(summary) => Some(&mut summary.vm),
    }
}

/// `records` framed as a trace (sequence numbers from 0): what `carousel run --trace` writes.
pub fn encode_trace(records: impl IntoIterator<Item = Record>) -> Vec<u8> {
    records
        .into_iter()
        .enumerate()
        .flat_map(|(seq, record)| {
            encode_vec(&Frame {
                seq: seq as u32,
                record,
            })
        })
        .collect()
}

/// The records of a trace, and a line for every part that did not decode.
pub fn read_trace(bytes: &[u8]) -> (Vec<Record>, Vec<String>) {
    let mut records = Vec::new();
    let mut problems = Vec::new();
    decode_each(bytes, |decoded| match decoded {
        Decoded::Frame(frame) => records.push(frame.record),
        damage => problems.extend(problem(&damage)),
    });
    (records, problems)
}

/// The line a report prints for a part of the trace that did not decode.
fn problem(decoded: &Decoded) -> Option<String> {
    match decoded {
        Decoded::Frame(_) => None,
        Decoded::Corrupt { bytes } => Some(format!("a corrupt frame ({bytes} bytes)")),
        Decoded::Gap { from, to } => Some(format!("records {from}..{to} never arrived")),
    }
}

/// What [`account_trace`] found in a trace.
#[derive(Debug)]
pub struct TraceAccounting {
    pub accounting: Accounting,
    /// A line for every part that did not decode, as [`read_trace`] gives them.
    pub problems: Vec<String>,
    /// Frames that decoded whole.
    pub frames: u64,
}

/// The accounting of a trace, gathered frame by frame as [`decode_each`] decodes it: the same
/// as `Accounting::from_records(&read_trace(bytes).0, &[])`, without holding the records.
pub fn account_trace(bytes: &[u8]) -> TraceAccounting {
    let mut builder = AccountingBuilder::new(&[]);
    let mut problems = Vec::new();
    let mut frames = 0;
    decode_each(bytes, |decoded| match decoded {
        Decoded::Frame(frame) => {
            frames += 1;
            builder.add(&frame.record);
        }
        damage => problems.extend(problem(&damage)),
    });
    TraceAccounting {
        accounting: builder.finish(),
        problems,
        frames,
    }
}

/// The run as one JSON object: elapsed, root and idle cycles and dropped records at the top,
/// then `vms` (runstates, slices, wake latency), `exits` (per reason over all VMs) and `disk`
/// (sectors read and written per VM).
pub fn json_report(records: &[Record]) -> Value {
    json_of(&Accounting::from_records(records, &[]))
}

/// [`json_report`] of an accounting already gathered.
pub fn json_of(accounting: &Accounting) -> Value {
    let run = accounting.run.as_ref();
    let vms: Vec<Value> = accounting
        .vms
        .iter()
        .map(|vm| {
            let summary = vm.summary.as_ref();
            let field = |get: fn(&carousel_protocol::record::VmSummary) -> u64| summary.map(get);
            json!({
                "name": vm.name,
                "running_cycles": field(|s| s.running),
                "runnable_cycles": field(|s| s.runnable),
                "blocked_cycles": field(|s| s.blocked),
                "guest_cycles": field(|s| s.guest),
                "root_cycles": field(|s| s.root),
                "slices": field(|s| s.slices),
                "preemptions": field(|s| s.preemptions),
                "yields": field(|s| s.yields),
                "wake_latency": {
                    "count": field(|s| s.wakes),
                    "p50": field(|s| s.wake_p50),
                    "p95": field(|s| s.wake_p95),
                    "p99": field(|s| s.wake_p99),
                    "max": field(|s| s.wake_max),
                },
            })
        })
        .collect();
    let mut exits: BTreeMap<u16, (u64, u128, u64, u64)> = BTreeMap::new();
    for vm in &accounting.vms {
        for (&reason, totals) in &vm.exits {
            let entry = exits.entry(reason).or_insert((0, 0, u64::MAX, 0));
            entry.0 += totals.count;
            entry.1 += totals.cycles;
            entry.2 = entry.2.min(totals.min);
            entry.3 = entry.3.max(totals.max);
        }
    }
    let exits: Vec<Value> = exits
        .into_iter()
        .map(|(reason, (count, cycles, min, max))| {
            json!({"reason": exit_reason_name(reason), "count": count, "cycles": cycles as u64, "min": min, "max": max})
        })
        .collect();
    let disk: Vec<Value> = accounting
        .vms
        .iter()
        .filter(|vm| vm.disk.any())
        .map(|vm| {
            json!({"vm": vm.name, "reads": vm.disk.read_sectors, "writes": vm.disk.written_sectors})
        })
        .collect();
    json!({
        "elapsed_cycles": run.map(|r| r.elapsed),
        "root_cycles": run.map(|r| r.root),
        "idle_cycles": run.map(|r| r.idle),
        "dropped": run.map(|r| r.dropped_records),
        "tsc_hz": accounting.tsc_hz,
        "vms": vms,
        "exits": exits,
        "disk": disk,
    })
}

/// Why a trace has no per-interval rows.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IntervalError {
    #[error(
        "the trace holds no scheduler events (it was recorded at trace level `aggregate`); \
         per-interval rows need `run.trace = \"switches\"` (the default) or `\"full\"` in the lab"
    )]
    NoEvents,
    #[error("the trace names no TSC frequency, so {ms} ms cannot be converted to cycles")]
    NoTscFrequency { ms: f64 },
    #[error(
        "{ms} ms intervals would cut this trace into more than {MAX_INTERVALS} rows; \
         choose a longer interval"
    )]
    TooMany { ms: f64 },
}

/// The timeline of `records` cut into intervals of `ms` milliseconds of TSC time.
pub fn interval_rows(records: &[Record], ms: f64) -> Result<Vec<Interval>, IntervalError> {
    let timeline = Timeline::from_records(records).ok_or(IntervalError::NoEvents)?;
    let hz = timeline
        .tsc_hz
        .ok_or(IntervalError::NoTscFrequency { ms })?;
    let length = (ms / 1_000.0 * hz as f64).round();
    if !(1.0..=u64::MAX as f64).contains(&length) {
        return Err(IntervalError::TooMany { ms });
    }
    intervals(&timeline, records, length as u64).ok_or(IntervalError::TooMany { ms })
}

/// The names of the VMs of `records` (from Hello; `vm<id>` for ids it does not name), at least
/// `count` of them.
fn vm_names(records: &[Record], count: usize) -> Vec<String> {
    let mut names: Vec<String> = Accounting::from_records(records, &[])
        .vms
        .into_iter()
        .map(|vm| vm.name)
        .collect();
    while names.len() < count {
        names.push(format!("vm{}", names.len()));
    }
    names
}

/// Cycles since `origin` in milliseconds at `hz`.
fn millis(cycles: u64, origin: u64, hz: u64) -> f64 {
    cycles.saturating_sub(origin) as f64 * 1_000.0 / hz.max(1) as f64
}

/// The per-interval rows as a text table: one row per interval and VM.
pub fn interval_text(records: &[Record], rows: &[Interval]) -> String {
    let hz = Accounting::from_records(records, &[]).tsc_hz.unwrap_or(1);
    let origin = rows.first().map_or(0, |row| row.start);
    let names = vm_names(records, rows.first().map_or(0, |row| row.vms.len()));
    let mut table = Table::new(&[
        ("FROM ms", Align::Right),
        ("TO ms", Align::Right),
        ("VM", Align::Left),
        ("CPU%", Align::Right),
        ("RUNNABLE%", Align::Right),
        ("BLOCKED%", Align::Right),
        ("STOPPED%", Align::Right),
        ("SWITCHES", Align::Right),
        ("EXITS", Align::Right),
        ("EXIT cyc", Align::Right),
    ]);
    let percent = |row: &Interval, cycles: u64| format!("{:.1}", row.share(cycles) * 100.0);
    for row in rows {
        for (vm, figures) in row.vms.iter().enumerate() {
            table.push(vec![
                format!("{:.3}", millis(row.start, origin, hz)),
                format!("{:.3}", millis(row.end, origin, hz)),
                names[vm].clone(),
                percent(row, figures.running),
                percent(row, figures.runnable),
                percent(row, figures.blocked),
                percent(row, figures.stopped),
                group(figures.switches),
                group(figures.exits),
                group(figures.exit_cycles),
            ]);
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "INTERVALS  from the first event; shares of each interval's TSC time; SWITCHES = slices \
         begun; exits from the hypervisor's exit intervals, each counted where its middle falls"
    );
    out.push_str(&table.render());
    out
}

/// The per-interval rows as JSON: one object per interval with its `vms`.
pub fn interval_json(records: &[Record], rows: &[Interval]) -> Value {
    let hz = Accounting::from_records(records, &[]).tsc_hz.unwrap_or(1);
    let origin = rows.first().map_or(0, |row| row.start);
    let names = vm_names(records, rows.first().map_or(0, |row| row.vms.len()));
    let rows: Vec<Value> = rows
        .iter()
        .map(|row| {
            let vms: Vec<Value> = row
                .vms
                .iter()
                .enumerate()
                .map(|(vm, figures)| {
                    json!({
                        "name": names[vm],
                        "running_share": row.share(figures.running),
                        "runnable_share": row.share(figures.runnable),
                        "blocked_share": row.share(figures.blocked),
                        "stopped_share": row.share(figures.stopped),
                        "running_cycles": figures.running,
                        "runnable_cycles": figures.runnable,
                        "blocked_cycles": figures.blocked,
                        "stopped_cycles": figures.stopped,
                        "switches": figures.switches,
                        "exits": figures.exits,
                        "exit_cycles": figures.exit_cycles,
                    })
                })
                .collect();
            json!({
                "start_cycles": row.start,
                "end_cycles": row.end,
                "start_ms": millis(row.start, origin, hz),
                "end_ms": millis(row.end, origin, hz),
                "vms": vms,
            })
        })
        .collect();
    Value::Array(rows)
}

/// The CSV header of [`interval_csv`].
pub const INTERVAL_CSV_HEADER: &str = "start_ms,end_ms,vm,running_share,runnable_share,\
blocked_share,stopped_share,running_cycles,runnable_cycles,blocked_cycles,stopped_cycles,\
switches,exits,exit_cycles";

/// The per-interval rows as CSV: one row per interval and VM.
pub fn interval_csv(records: &[Record], rows: &[Interval]) -> String {
    let mut out = String::from(INTERVAL_CSV_HEADER);
    out.push('\n');
    let Value::Array(rows) = interval_json(records, rows) else {
        return out;
    };
    for row in &rows {
        for vm in row["vms"].as_array().into_iter().flatten() {
            // VM names are [A-Za-z0-9_-]: no quoting needed.
            let _ = write!(
                out,
                "{:.3},{:.3},{}",
                row["start_ms"].as_f64().unwrap_or_default(),
                row["end_ms"].as_f64().unwrap_or_default(),
                vm["name"].as_str().unwrap_or_default()
            );
            for share in [
                "running_share",
                "runnable_share",
                "blocked_share",
                "stopped_share",
            ] {
                let _ = write!(out, ",{:.4}", vm[share].as_f64().unwrap_or_default());
            }
            for count in [
                "running_cycles",
                "runnable_cycles",
                "blocked_cycles",
                "stopped_cycles",
                "switches",
                "exits",
                "exit_cycles",
            ] {
                let _ = write!(out, ",{}", vm[count].as_u64().unwrap_or_default());
            }
            out.push('\n');
        }
    }
    out
}

/// The records of the trace file `path` (with `vm`, that VM's: [`only_vm`]) and the damage
/// [`read_trace`] found, each line of which goes to stderr as a warning. When there is nothing
/// to work with (the file cannot be read, holds no record, names no such VM) `carousel
/// <command>` says why and the error is the exit code, 2.
pub fn load_trace(
    path: &Path,
    vm: Option<&str>,
    command: &str,
) -> Result<(Vec<Record>, Vec<String>), i32> {
    let bytes = std::fs::read(path).map_err(|error| {
        eprintln!(
            "carousel {command}: cannot read {}: {error}",
            path.display()
        );
        2
    })?;
    let (records, problems) = read_trace(&bytes);
    for problem in &problems {
        eprintln!("warning: {}: {problem}", path.display());
    }
    if records.is_empty() {
        eprintln!("carousel {command}: {} holds no record", path.display());
        return Err(2);
    }
    let Some(name) = vm else {
        return Ok((records, problems));
    };
    match only_vm(&records, name) {
        Some(records) => Ok((records, problems)),
        None => {
            eprintln!("carousel {command}: the trace names no VM {name:?}");
            Err(2)
        }
    }
}

/// What `carousel report` was asked for beyond the trace.
#[derive(Debug, Clone, Default)]
pub struct ReportOptions<'a> {
    pub format: Format,
    /// `--vm NAME`: only this VM's records (and the run-wide ones).
    pub vm: Option<&'a str>,
    /// `--interval MS`: per-interval rows instead of the whole-run tables (JSON: the whole-run
    /// object gains an `intervals` array).
    pub interval_ms: Option<f64>,
    /// `--html FILE`: also write the report page there.
    pub html: Option<&'a Path>,
}

/// `carousel report TRACE [--format text|json|csv] [--vm NAME] [--interval MS] [--html FILE]`;
/// returns the exit code: 0, or 2 when the file cannot be read, holds no record at all, names
/// no such VM, has no events for `--interval`, or the page cannot be written.
pub fn report_command(path: &Path, options: &ReportOptions) -> i32 {
    let (records, problems) = match load_trace(path, options.vm, "report") {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let intervals = match options.interval_ms.map(|ms| interval_rows(&records, ms)) {
        None => None,
        Some(Ok(rows)) => Some(rows),
        Some(Err(error)) => {
            eprintln!("carousel report: {}: {error}", path.display());
            return 2;
        }
    };
    if let Some(page) = options.html {
        let source = crate::html::Source {
            name: &path.display().to_string(),
            damage: &problems,
            only_vm: options.vm,
        };
        let html = crate::html::page(&records, &source);
        if let Err(error) = std::fs::write(page, &html) {
            eprintln!("carousel report: cannot write {}: {error}", page.display());
            return 2;
        }
        eprintln!(
            "carousel report: wrote {} ({} KB)",
            page.display(),
            html.len().div_ceil(1024)
        );
    }
    let text = match (options.format, &intervals) {
        (Format::Text, None) => {
            let mut accounting = Accounting::from_records(&records, &[]);
            // One VM's guest time cannot balance the whole run's elapsed time.
            accounting.partial = options.vm.is_some();
            accounting.report()
        }
        (Format::Text, Some(rows)) => interval_text(&records, rows),
        (Format::Json, rows) => {
            let mut report = json_report(&records);
            if let Some(rows) = rows {
                report["intervals"] = interval_json(&records, rows);
            }
            format!("{report:#}\n")
        }
        (Format::Csv, None) => csv_report(&records),
        (Format::Csv, Some(rows)) => interval_csv(&records, rows),
    };
    // A reader that stops early (`| head`) is not an error worth a panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
    0
}

#[cfg(test)]
mod tests {
    use carousel_protocol::record::{ExitStat, RunSummary, VmSummary};

    use super::*;

    fn summary(vm: u16, guest: u64) -> VmSummary {
        VmSummary {
            vm,
            running: guest + 10,
            runnable: 5,
            blocked: 0,
            stopped: 0,
            guest,
            root: 10,
            slices: 3,
            preemptions: 2,
            yields: 1,
            wakes: 1,
            wake_p50: 7,
            wake_p95: 8,
            wake_p99: 9,
            wake_max: 9,
            quantum_error_median_ppm: 0,
            quantum_error_max_ppm: 0,
            blocked_console: 0,
            blocked_records: 0,
            guest_records_dropped: 0,
        }
    }

    fn trace() -> Vec<Record> {
        vec![
            crate::fixtures::hello(&["a", "b"], 1_000_000),
            Record::DiskIo {
                tsc: 1,
                vm: 1,
                lba: 3,
                sectors: 2,
                write: true,
            },
            Record::DiskIo {
                tsc: 2,
                vm: 1,
                lba: 3,
                sectors: 1,
                write: false,
            },
            Record::ExitInterval {
                tsc: 3,
                vm: 0,
                interval: 10,
                exits: vec![ExitStat {
                    reason: 30,
                    count: 2,
                    cycles: 300,
                    min: 100,
                    max: 200,
                    log2: vec![],
                }],
            },
            Record::VmSummary(summary(0, 100)),
            Record::VmSummary(summary(1, 50)),
            Record::RunSummary(RunSummary {
                policy: "round-robin".into(),
                quantum_cycles: 10,
                elapsed: 185,
                root: 30,
                idle: 5,
                switch_median: 1,
                switch_max: 1,
                switches: 1,
                dropped_records: 0,
            }),
            Record::RunEnd { tsc: 200 },
        ]
    }

    #[test]
    fn json_has_the_documented_layout() {
        let report = json_report(&trace());
        assert_eq!(report["elapsed_cycles"], 185);
        assert_eq!(report["root_cycles"], 30);
        assert_eq!(report["idle_cycles"], 5);
        assert_eq!(report["dropped"], 0);
        assert_eq!(report["vms"][0]["name"], "a");
        assert_eq!(report["vms"][1]["running_cycles"], 60);
        assert_eq!(report["vms"][0]["wake_latency"]["p99"], 9);
        assert_eq!(report["exits"][0]["reason"], "IO_INSTRUCTION");
        assert_eq!(report["exits"][0]["count"], 2);
        assert_eq!(report["exits"][0]["min"], 100);
        assert_eq!(
            report["disk"][0],
            json!({"vm": "b", "reads": 1, "writes": 2})
        );
    }

    #[test]
    fn csv_has_a_row_per_vm() {
        let csv = csv_report(&trace());
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], CSV_HEADER);
        assert_eq!(lines[1], "a,110,5,0,100,10,3,2,1,1,7,8,9,9");
        assert_eq!(lines.len(), 3);
    }

    #[test]
    fn one_vm_keeps_its_records_and_the_run_wide_ones() {
        let records = only_vm(&trace(), "b").expect("b is in the trace");
        let report = json_report(&records);
        assert_eq!(report["vms"].as_array().unwrap().len(), 1);
        assert_eq!(report["vms"][0]["name"], "b");
        assert_eq!(report["vms"][0]["guest_cycles"], 50);
        assert_eq!(report["disk"][0]["writes"], 2);
        assert_eq!(
            report["exits"].as_array().unwrap().len(),
            0,
            "vm a's exits are gone"
        );
        assert_eq!(report["elapsed_cycles"], 185);
        let mut accounting = Accounting::from_records(&records, &[]);
        accounting.partial = true;
        let text = accounting.report();
        assert!(!text.contains("conservation"), "{text}");
        assert!(only_vm(&trace(), "c").is_none());
    }

    #[test]
    fn a_corrupted_trace_names_its_damage_and_keeps_the_rest() {
        let mut bytes = encode_trace(trace());
        // Damage the second frame (a DiskIo record).
        let second = bytes.iter().position(|&b| b == 0).unwrap() + 3;
        bytes[second] ^= 0x55;
        let (records, problems) = read_trace(&bytes);
        assert_eq!(records.len(), trace().len() - 1);
        assert!(
            problems.iter().any(|p| p.starts_with("a corrupt frame")),
            "{problems:?}"
        );
        assert!(
            problems.contains(&"records 1..2 never arrived".to_string()),
            "{problems:?}"
        );
        let report = json_report(&records);
        assert_eq!(report["elapsed_cycles"], 185);
        assert_eq!(report["disk"][0]["reads"], 1);
        assert_eq!(report["disk"][0]["writes"], 0);
    }
}
