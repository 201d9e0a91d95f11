//! The report page and the Perfetto export of a synthetic trace, through the `carousel` binary:
//! the page renders in headless Chromium without errors and with every chart (the test saves a
//! screenshot to `target/carousel/report.png`), and the export is valid trace-event JSON.
//!
//! The Chromium tests are ignored by default (`ci/test` runs them with `--include-ignored`, after
//! installing Debian's `chromium`); without Chromium they fail and name the package.

#[path = "support/chromium.rs"]
mod chromium;

use std::path::{Path, PathBuf};
use std::process::Command;

use carousel_protocol::record::{
    Event, ExitStat, Record, RunSummary, SliceEnd, StopReason, TraceLevel, TscSource, VmSummary,
};

/// TSC frequency of the synthetic run.
const TSC_HZ: u64 = 1_000_000_000;
/// Its quantum: 1 ms.
const QUANTUM: u64 = TSC_HZ / 1_000;
/// Root cycles of a switch between two slices.
const SWITCH: u64 = 3_000;
/// Its exit intervals: 10 ms.
const INTERVAL: u64 = TSC_HZ / 100;

/// How a synthetic VM behaves: the share of a quantum it runs before it blocks (1.0: never
/// blocks), how long it then sleeps, and when it stops.
struct Behaviour {
    name: &'static str,
    runs: f64,
    sleeps: u64,
    stops_at: u64,
    disk: bool,
}

/// One VM's state in the simulation.
#[derive(Clone, Copy, PartialEq)]
enum State {
    Runnable,
    BlockedUntil(u64),
    Stopped,
}

/// A two-second run of four VMs under round robin: two CPU-bound, one that blocks often, one
/// that does disk I/O and stops early; with exit intervals, memory samples, disk transfers and
/// the summaries (they obey the conservation rule).
fn synthetic_run(names: [&'static str; 4]) -> Vec<Record> {
    let second = TSC_HZ;
    let behaviours = [
        Behaviour {
            name: names[0],
            runs: 1.0,
            sleeps: 0,
            stops_at: u64::MAX,
            disk: false,
        },
        Behaviour {
            name: names[1],
            runs: 1.0,
            sleeps: 0,
            stops_at: u64::MAX,
            disk: false,
        },
        Behaviour {
            name: names[2],
            runs: 0.3,
            sleeps: 2 * QUANTUM,
            stops_at: u64::MAX,
            disk: true,
        },
        Behaviour {
            name: names[3],
            runs: 0.6,
            sleeps: 5 * QUANTUM,
            stops_at: second * 3 / 2,
            disk: true,
        },
    ];
    let start = 10_000u64;
    let end = start + 2 * second;
    let mut records = vec![Record::Hello {
        version: carousel_protocol::FORMAT_VERSION,
        lab_hash: 7,
        tsc_hz: TSC_HZ,
        tsc_source: TscSource::LabFile,
        preemption_timer_rate: 0,
        cpu: "synthetic".into(),
        vms: behaviours.iter().map(|b| b.name.to_string()).collect(),
        commit: "synthetic".into(),
        level: TraceLevel::Switches,
        weights: Vec::new(),
        quantum_clock: carousel_protocol::config::QuantumClock::Wall,
    }];
    let vms = behaviours.len();
    let mut state = vec![State::Runnable; vms];
    let mut running = vec![0u64; vms];
    let mut root = vec![0u64; vms];
    let mut slices = vec![0u64; vms];
    let mut preemptions = vec![0u64; vms];
    let mut yields = vec![0u64; vms];
    let mut wakes = vec![0u64; vms];
    let mut exit_cycles = vec![0u64; vms];
    let mut next_interval = start + INTERVAL;
    let mut next_sample = start;
    let (mut idle, mut switching) = (0u64, 0u64);
    let mut batch = Batcher {
        events: Vec::new(),
        base: start,
        last: start,
    };
    let mut now = start;
    let mut turn = 0usize;
    let mut lba = [0u32; 4];
    while now < end {
        for (vm, state) in state.iter_mut().enumerate() {
            if let State::BlockedUntil(until) = *state {
                if until <= now {
                    *state = State::Runnable;
                    wakes[vm] += 1;
                    batch.push(now, |dt| Event::Wake { dt, vm: vm as u16 });
                }
            }
        }
        let Some(vm) = (0..vms)
            .map(|offset| (turn + offset) % vms)
            .find(|&vm| state[vm] == State::Runnable)
        else {
            // Nobody can run: idle until the next wake.
            let wake = state
                .iter()
                .filter_map(|s| match s {
                    State::BlockedUntil(until) => Some(*until),
                    _ => None,
                })
                .min()
                .unwrap_or(end)
                .min(end);
            idle += wake - now;
            now = wake;
            continue;
        };
        turn = vm + 1;
        let behaviour = &behaviours[vm];
        let length = ((QUANTUM as f64 * behaviour.runs) as u64).min(end - now);
        batch.push(now, |dt| Event::Run { dt, vm: vm as u16 });
        slices[vm] += 1;
        // A tenth of a percent of each slice is root time for its exits, more for disk VMs.
        let exits = length / if behaviour.disk { 50 } else { 500 };
        root[vm] += exits;
        exit_cycles[vm] += exits;
        running[vm] += length;
        now += length;
        let why = if now >= behaviour.stops_at {
            state[vm] = State::Stopped;
            SliceEnd::Stopped
        } else if behaviour.runs < 1.0 {
            state[vm] = State::BlockedUntil(now + behaviour.sleeps);
            yields[vm] += 1;
            SliceEnd::Blocked
        } else {
            preemptions[vm] += 1;
            SliceEnd::Preempted
        };
        batch.push(now, |dt| Event::Descheduled {
            dt,
            vm: vm as u16,
            why,
        });
        if behaviour.disk && why == SliceEnd::Blocked {
            let sectors = if vm == 2 { 8 } else { 64 };
            records.push(Record::DiskIo {
                tsc: now,
                vm: vm as u16,
                lba: lba[vm],
                sectors,
                write: slices[vm].is_multiple_of(3),
            });
            lba[vm] = (lba[vm] + u32::from(sectors)) % 60_000;
        }
        if why == SliceEnd::Stopped {
            records.push(Record::VmStopped {
                tsc: now,
                vm: vm as u16,
                reason: StopReason::Exited { status: 0x10 },
            });
        }
        let gap = SWITCH.min(end - now);
        switching += gap;
        now += gap;
        while now >= next_interval {
            batch.flush(&mut records);
            for (vm, cycles) in exit_cycles.iter_mut().enumerate() {
                if *cycles > 0 {
                    records.push(exit_interval(vm as u16, next_interval, *cycles));
                    *cycles = 0;
                }
            }
            next_interval += INTERVAL;
        }
        if now >= next_sample {
            for vm in 0..vms {
                records.push(memory_map(vm, now - start, now));
            }
            next_sample += second / 4;
        }
    }
    batch.flush(&mut records);
    let elapsed = end - start;
    records.push(Record::RunEnd { tsc: end });
    // Runstates from the events, as the hypervisor would have counted them.
    let timeline =
        carousel_trace::model::timeline::Timeline::from_records(&records).expect("events");
    for vm in 0..vms {
        let mut time = [0u64; 4];
        for span in &timeline.runstates[vm] {
            let index = carousel_trace::model::timeline::RunState::ALL
                .iter()
                .position(|&state| state == span.state)
                .unwrap();
            time[index] += span.end - span.start;
        }
        records.push(Record::VmSummary(VmSummary {
            vm: vm as u16,
            running: time[0],
            runnable: time[1],
            blocked: time[2],
            stopped: time[3],
            guest: running[vm] - root[vm],
            root: root[vm],
            slices: slices[vm],
            preemptions: preemptions[vm],
            yields: yields[vm],
            wakes: wakes[vm],
            wake_p50: 40_000,
            wake_p95: 900_000,
            wake_p99: 1_500_000,
            wake_max: 2_000_000,
            quantum_error_median_ppm: 120,
            quantum_error_max_ppm: 2_400,
            blocked_console: 0,
            blocked_records: 0,
            guest_records_dropped: 0,
        }));
        records.push(Record::TimerLag {
            vm: vm as u16,
            ticks: 200,
            coalesced: vm as u64 * 3,
            lag_total: 200 * 30_000,
            lag_max: 2_500_000,
        });
    }
    let root_total: u64 = root.iter().sum::<u64>() + switching;
    records.insert(
        records.len() - 2 * vms,
        Record::RunSummary(RunSummary {
            policy: "round-robin".into(),
            quantum_cycles: QUANTUM,
            elapsed,
            root: root_total,
            idle,
            switch_median: SWITCH,
            switch_max: SWITCH,
            switches: slices.iter().sum(),
            dropped_records: 0,
        }),
    );
    records
}

/// Events gathered into batches, as the hypervisor sends them.
struct Batcher {
    events: Vec<Event>,
    /// The batch's `tsc`: the time of the previous batch's last event.
    base: u64,
    /// The time of the last event.
    last: u64,
}

impl Batcher {
    /// Adds the event `make(dt)` at time `at`.
    fn push(&mut self, at: u64, make: impl Fn(u64) -> Event) {
        self.events.push(make(at - self.last));
        self.last = at;
    }

    /// Ends the batch (if it has events) as a record.
    fn flush(&mut self, records: &mut Vec<Record>) {
        if self.events.is_empty() {
            return;
        }
        records.push(Record::Events {
            tsc: self.base,
            events: std::mem::take(&mut self.events),
        });
        self.base = self.last;
    }
}

/// One interval's exits of `vm`: `cycles` of root time spread over a few reasons.
fn exit_interval(vm: u16, tsc: u64, cycles: u64) -> Record {
    let reasons: &[(u16, u64)] = match vm {
        2 | 3 => &[(30, 60), (48, 15), (12, 15), (1, 10)],
        _ => &[(52, 45), (30, 25), (10, 15), (48, 15)],
    };
    let exits = reasons
        .iter()
        .map(|&(reason, percent)| {
            let cycles = cycles * percent / 100;
            let count = (cycles / 2_000).max(1);
            ExitStat {
                reason,
                count,
                cycles,
                min: 800,
                max: 12_000,
                log2: vec![(10, count as u32)],
            }
        })
        .collect();
    Record::ExitInterval {
        tsc,
        vm,
        interval: INTERVAL,
        exits,
    }
}

/// A memory sample of `vm` `age` cycles into the run: 1,024 cells of 4 pages (16 MiB).
fn memory_map(vm: usize, age: u64, tsc: u64) -> Record {
    let touched = (200 + age / 4_000_000 + vm as u64 * 100).min(1_024) as usize;
    let cells = (0..1_024usize)
        .map(|cell| {
            if cell >= touched {
                0
            } else if cell % 17 == (age / 1_000_000) as usize % 17 || cell % 29 == vm {
                2
            } else if cell < 64 || cell % 7 == 0 {
                1
            } else if vm == 1 && cell % 5 == 0 {
                3
            } else {
                5
            }
        })
        .collect();
    Record::MemoryMap {
        tsc,
        vm: vm as u16,
        pages_per_cell: 4,
        cells,
    }
}

/// `records` framed as a trace file in `dir`.
fn write_trace(dir: &Path, name: &str, records: Vec<Record>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, carousel_trace::decode::encode_trace(records))
        .expect("the trace is written");
    path
}

/// Runs `carousel` with `args`; its stdout, after requiring exit code 0.
fn carousel(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_carousel"))
        .args(args)
        .output()
        .expect("the carousel binary starts");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "carousel {args:?}: {:?}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The SVG charts a page with events, memory samples and disk transfers has.
const CHARTS: [&str; 5] = ["donut", "share-chart", "gantt", "memgrid", "diskgrid"];

#[test]
fn the_synthetic_run_obeys_the_conservation_rule() {
    let records = synthetic_run(["web", "db", "cache", "backup"]);
    let accounting = carousel_trace::model::accounting::Accounting::from_records(&records, &[]);
    let conservation = accounting.conservation().expect("a RunSummary");
    assert!(conservation.holds(), "{conservation:?}");
    assert!(
        accounting.problems().is_empty(),
        "{:?}",
        accounting.problems()
    );
}

#[test]
fn interval_rows_come_as_text_json_and_csv() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let trace = write_trace(dir.path(), "run.trace", synthetic_run(["a", "b", "c", "d"]));
    let trace = trace.to_str().expect("a UTF-8 path");
    let text = carousel(&["report", trace, "--interval", "100"]);
    // Two seconds in 100 ms intervals, four VMs each: 80 rows and the header.
    assert_eq!(
        text.lines().filter(|line| line.contains(" a ")).count(),
        20,
        "{text}"
    );
    assert!(text.lines().nth(1).unwrap().contains("CPU%"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&carousel(&[
        "report",
        trace,
        "--interval",
        "100",
        "--format",
        "json",
    ]))
    .expect("one JSON object");
    let intervals = json["intervals"].as_array().expect("intervals");
    assert_eq!(intervals.len(), 20);
    assert_eq!(json["vms"].as_array().map(Vec::len), Some(4));
    // The CPU-bound VMs run in every interval, and exits fall into every interval.
    for interval in intervals {
        let vms = interval["vms"].as_array().unwrap();
        assert!(
            vms[0]["running_share"].as_f64().unwrap() > 0.1,
            "{interval}"
        );
        assert!(vms[0]["exits"].as_u64().unwrap() > 0, "{interval}");
        let total: f64 = [
            "running_share",
            "runnable_share",
            "blocked_share",
            "stopped_share",
        ]
        .iter()
        .map(|key| vms[3][key].as_f64().unwrap())
        .sum();
        assert!((total - 1.0).abs() < 1e-9, "{interval}");
    }
    let last = &intervals[19]["vms"][3];
    assert!(
        last["stopped_share"].as_f64().unwrap() > 0.99,
        "d stopped at 1.5 s: {last}"
    );
    let csv = carousel(&["report", trace, "--interval", "100", "--format", "csv"]);
    assert_eq!(csv.lines().count(), 1 + 80, "{csv}");
    assert!(csv.starts_with("start_ms,end_ms,vm,running_share"), "{csv}");
}

#[test]
fn intervals_without_events_are_refused_clearly() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let records: Vec<Record> = synthetic_run(["a", "b", "c", "d"])
        .into_iter()
        .filter(|record| !matches!(record, Record::Events { .. }))
        .collect();
    let trace = write_trace(dir.path(), "aggregate.trace", records);
    let output = Command::new(env!("CARGO_BIN_EXE_carousel"))
        .args(["report", trace.to_str().unwrap(), "--interval", "10"])
        .output()
        .expect("the carousel binary starts");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("holds no scheduler events"), "{stderr}");
    assert!(stderr.contains("run.trace"), "{stderr}");
}

#[test]
fn the_perfetto_export_is_trace_event_json() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let trace = write_trace(dir.path(), "run.trace", synthetic_run(["a", "b", "c", "d"]));
    let out = dir.path().join("run.json");
    carousel(&[
        "export",
        trace.to_str().unwrap(),
        "--perfetto",
        out.to_str().unwrap(),
    ]);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&out).expect("the export")).expect("JSON");
    let events = json["traceEvents"].as_array().expect("traceEvents");
    let slices = events
        .iter()
        .filter(|event| event["ph"] == "X" && event["pid"] == 1)
        .count();
    assert!(slices > 1_000, "{slices} CPU slices");
    assert!(events
        .iter()
        .any(|event| event["ph"] == "C" && event["name"] == "disk sectors"));
    assert!(events
        .iter()
        .any(|event| event["ph"] == "C" && event["name"] == "memory cells"));
}

#[test]
#[ignore = "needs headless Chromium; run by ci/test"]
fn the_page_renders_in_chromium_without_errors() {
    // Kept in target/carousel for a look: report.trace, report.html, report.png.
    let dir = chromium::repo_root().join("target/carousel");
    std::fs::create_dir_all(&dir).expect("target/carousel");
    let trace = write_trace(
        &dir,
        "report.trace",
        synthetic_run(["web", "db", "cache", "backup"]),
    );
    let page = dir.join("report.html");
    carousel(&[
        "report",
        trace.to_str().unwrap(),
        "--html",
        page.to_str().unwrap(),
    ]);
    let size = std::fs::metadata(&page).expect("the page").len();
    assert!(size < 3_000_000, "the page is {size} bytes");
    let rendered = chromium::render(&page);
    chromium::assert_rendered(&rendered, &CHARTS);
    chromium::screenshot(&page, &dir.join("report.png"), (1400, 2400));
}

#[test]
#[ignore = "needs headless Chromium; run by ci/test"]
fn hostile_vm_names_stay_text_in_the_browser() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let names = [
        "<img src=x onerror=alert(1)>",
        "</script><script>boom()</script>",
        "a\"b'c&d",
        "ok",
    ];
    let trace = write_trace(dir.path(), "evil.trace", synthetic_run(names));
    let page = dir.path().join("evil.html");
    carousel(&[
        "report",
        trace.to_str().unwrap(),
        "--html",
        page.to_str().unwrap(),
    ]);
    let rendered = chromium::render(&page);
    chromium::assert_rendered(&rendered, &CHARTS);
    assert!(!rendered.dom.contains("<img"), "a name became an element");
    assert!(rendered.dom.contains("&lt;img src=x onerror=alert(1)&gt;"));
}
