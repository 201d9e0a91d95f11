//! A synthetic run for the tests that need a trace without an emulator (`tests/html.rs`,
//! `tests/web.rs`, `#[path]` modules): four VMs under round robin for two seconds, with every
//! kind of record the report page and the web page draw.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use carousel_protocol::record::{
    BlockedOn, Event, ExitStat, Record, RunSummary, SliceEnd, StopReason, TraceLevel, TscSource,
    VmSummary,
};

/// TSC frequency of the synthetic run.
pub const TSC_HZ: u64 = 1_000_000_000;
/// Its quantum: 1 ms.
pub const QUANTUM: u64 = TSC_HZ / 1_000;
/// Root cycles of a switch between two slices.
const SWITCH: u64 = 3_000;
/// Its exit intervals: 10 ms.
pub const INTERVAL: u64 = TSC_HZ / 100;

/// Every this many slices of a VM, it prints a console line (a `Console` event; [`com1_text`]
/// writes the lines).
pub const CONSOLE_EVERY: u64 = 40;

/// The COM1 text of a synthetic run: for each of its `Console` events, its VM's line
/// `[name] line N` (N counting each VM's lines from 0), in order.
pub fn com1_text(records: &[Record]) -> String {
    let names = records
        .iter()
        .find_map(|record| match record {
            Record::Hello { vms, .. } => Some(vms.clone()),
            _ => None,
        })
        .expect("a Hello record");
    let log = carousel_trace::model::console::ConsoleLog::of_records(records);
    let mut counts = vec![0; names.len()];
    let mut text = String::new();
    for mark in &log.marks {
        if let carousel_trace::model::console::ConsoleMark::Line { vm, .. } = *mark {
            let vm = usize::from(vm);
            text.push_str(&format!("[{}] line {}\n", names[vm], counts[vm]));
            counts[vm] += 1;
        }
    }
    text
}

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
pub fn synthetic_run(names: [&'static str; 4]) -> Vec<Record> {
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
        // Now and then a console line, printed as the slice starts.
        if slices[vm] % CONSOLE_EVERY == 1 {
            batch.push(now, |dt| Event::Console {
                dt,
                vm: vm as u16,
                bytes: 12,
            });
        }
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
            SliceEnd::Blocked(if behaviour.disk {
                BlockedOn::Disk
            } else {
                BlockedOn::Timer
            })
        } else {
            preemptions[vm] += 1;
            SliceEnd::Preempted
        };
        batch.push(now, |dt| Event::Descheduled {
            dt,
            vm: vm as u16,
            why,
        });
        if behaviour.disk && matches!(why, SliceEnd::Blocked(_)) {
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
pub fn write_trace(dir: &Path, name: &str, records: Vec<Record>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, carousel_trace::decode::encode_trace(records))
        .expect("the trace is written");
    path
}
