//! `carousel bench decode`: how fast the host turns a record stream into a report. It encodes
//! a synthetic trace of about 100 MB shaped like a default run of 16 VMs on one CPU (see
//! [`synthetic_trace`]), decodes every frame with its CRC check, gathers the accounting and
//! builds the JSON report, and prints the rate.

use std::time::Instant;

use carousel_protocol::config::DEFAULT_INTERVAL_US;
use carousel_protocol::record::{
    BlockedOn, Event, ExitStat, Record, RunSummary, SliceEnd, TraceLevel, TscSource, VmSummary,
};
use carousel_protocol::wire::encode_ref;
use carousel_trace::model::{Keep, Model};
use carousel_trace::render::json;
use serde::Serialize;

use crate::lab::DEFAULT_QUANTUM_US;

/// VMs in the synthetic trace.
const VMS: u16 = 16;
/// TSC frequency of the synthetic run: 1 GHz, so a microsecond is 1000 cycles.
const TSC_HZ: u64 = 1_000_000_000;
/// Cycles per microsecond at [`TSC_HZ`].
const CYCLES_PER_US: u64 = TSC_HZ / 1_000_000;
/// A slice: the default quantum (each ends in a switch: one CPU, every VM always runnable).
const QUANTUM: u64 = DEFAULT_QUANTUM_US as u64 * CYCLES_PER_US;
/// A metrics interval: the default one (10 slices).
const INTERVAL: u64 = DEFAULT_INTERVAL_US as u64 * CYCLES_PER_US;
/// Root-mode cycles of a switch, from one slice's end to the next slice's first entry.
const SWITCH: u64 = 1_400;
/// Events per `Events` record, as the hypervisor batches them (kernel/src/export.rs).
const EVENTS_PER_BATCH: usize = 32;
/// Largest encoded frame of the synthetic trace (the Hello record is the largest).
const FRAME_BUFFER: usize = 4096;

/// Frames the synthetic trace is made of, encoded as the hypervisor encodes them.
struct TraceWriter {
    bytes: Vec<u8>,
    seq: u32,
    plain: Vec<u8>,
    out: Vec<u8>,
    /// The batch of events being gathered: the TSC its first event counts from, the TSC of
    /// its last event, and the events (as kernel/src/export.rs gathers them).
    batch_start: u64,
    last_event: u64,
    events: Vec<Event>,
}

impl TraceWriter {
    fn new(capacity: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(capacity),
            seq: 0,
            plain: vec![0; FRAME_BUFFER],
            out: vec![0; FRAME_BUFFER],
            batch_start: 0,
            last_event: 0,
            events: Vec::with_capacity(EVENTS_PER_BATCH),
        }
    }

    fn push(&mut self, record: &Record) {
        let frame = encode_ref(self.seq, record, &mut self.plain, &mut self.out)
            .expect("every synthetic record fits the frame buffer");
        self.bytes.extend_from_slice(frame);
        self.seq += 1;
    }

    /// Adds an event that happened at `now` to the batch, sending the batch when it is full.
    fn event(&mut self, now: u64, event: Event) {
        if self.events.is_empty() {
            self.batch_start = now;
            self.last_event = now;
        }
        self.events.push(event.with_dt(now - self.last_event));
        self.last_event = now;
        if self.events.len() >= EVENTS_PER_BATCH {
            self.flush_events();
        }
    }

    /// Sends the events gathered so far.
    fn flush_events(&mut self) {
        if self.events.is_empty() {
            return;
        }
        let record = Record::Events {
            tsc: self.batch_start,
            events: std::mem::take(&mut self.events),
        };
        self.push(&record);
        if let Record::Events { mut events, .. } = record {
            events.clear();
            self.events = events;
        }
    }
}

/// What the synthetic run counted for one VM, for its summary.
#[derive(Debug, Default, Clone, Copy)]
struct VmCounts {
    slices: u64,
    preemptions: u64,
    blocks: u64,
    wakes: u64,
}

/// The exits of one slice of VM `vm` that ended `why` (SDM basic exit reasons: port I/O, CR
/// access, EPT violations, and the exit that ended the slice).
fn slice_exits(vm: u16, why: SliceEnd) -> Vec<ExitStat> {
    /// HLT and PREEMPTION_TIMER.
    const HLT: u16 = 12;
    const PREEMPTION_TIMER: u16 = 52;
    let last = if matches!(why, SliceEnd::Blocked(_)) {
        HLT
    } else {
        PREEMPTION_TIMER
    };
    [(30u16, 90u64 + u64::from(vm)), (28, 4), (48, 10), (last, 1)]
        .into_iter()
        .map(|(reason, count)| ExitStat {
            reason,
            count,
            cycles: count * 1_500,
            min: 900,
            max: 9_000,
            log2: vec![(10, count as u32), (11, 3), (13, 1)],
        })
        .collect()
}

/// A synthetic trace of at least `target` bytes, and its record count.
///
/// It follows a default run (quantum 1 ms, metrics interval 10 ms, TSC at 1 GHz) of 16 always
/// busy VMs round-robin on one CPU, as the hypervisor sends it at the `switches` trace level:
/// every slice gives a `Run` and a `Descheduled` event (one slice in eight ends blocked, and
/// the VM's `Wake` follows in the next slice), one slice in three a `Console` event; events
/// leave in batches of up to 32, and at least once an interval. Each interval also gives an
/// `ExitInterval` record per VM that ran; one slice in four a `DiskIo` record, one in ten a
/// `GuestMetric`. The end-of-run summaries agree with the events.
pub fn synthetic_trace(target: usize) -> (Vec<u8>, u64) {
    let mut writer = TraceWriter::new(target + 4096);
    writer.push(&Record::Hello {
        version: carousel_protocol::FORMAT_VERSION,
        lab_hash: 1,
        tsc_hz: TSC_HZ,
        tsc_source: TscSource::LabFile,
        preemption_timer_rate: 0,
        cpu: "synthetic".into(),
        vms: (0..VMS).map(|vm| format!("vm{vm}")).collect(),
        commit: "test".into(),
        level: TraceLevel::Switches,
        weights: Vec::new(),
        quantum_clock: carousel_protocol::config::QuantumClock::Wall,
    });
    let mut counts = [VmCounts::default(); VMS as usize];
    // VMs that ran in the current interval, with their exits, in the order they ran.
    let mut ran: Vec<(u16, Vec<ExitStat>)> = Vec::new();
    let mut blocked: Option<u16> = None;
    let mut tsc = 0u64;
    let mut slice = 0u64;
    while writer.bytes.len() < target {
        if tsc > 0 && tsc.is_multiple_of(INTERVAL) {
            writer.flush_events();
            ran.sort_by_key(|(vm, _)| *vm);
            for (vm, exits) in ran.drain(..) {
                writer.push(&Record::ExitInterval {
                    tsc,
                    vm,
                    interval: INTERVAL,
                    exits,
                });
            }
        }
        let vm = (slice % u64::from(VMS)) as u16;
        let why = if slice % 8 == 7 {
            SliceEnd::Blocked(BlockedOn::Timer)
        } else {
            SliceEnd::Preempted
        };
        let account = &mut counts[usize::from(vm)];
        account.slices += 1;
        match why {
            SliceEnd::Blocked(_) => account.blocks += 1,
            _ => account.preemptions += 1,
        }
        writer.event(tsc + SWITCH, Event::Run { dt: 0, vm });
        if slice.is_multiple_of(3) {
            writer.event(
                tsc + QUANTUM / 4,
                Event::Console {
                    dt: 0,
                    vm,
                    bytes: 40,
                },
            );
        }
        if let Some(sleeper) = blocked.take() {
            counts[usize::from(sleeper)].wakes += 1;
            writer.event(tsc + QUANTUM / 2, Event::Wake { dt: 0, vm: sleeper });
        }
        if slice % 4 == 1 {
            writer.push(&Record::DiskIo {
                tsc: tsc + QUANTUM / 2,
                vm,
                lba: (slice % 1000) as u32,
                sectors: 8,
                write: vm.is_multiple_of(2),
            });
        }
        if slice.is_multiple_of(10) {
            writer.push(&Record::GuestMetric {
                tsc: tsc + QUANTUM / 2,
                vm,
                name: "iterations".into(),
                value: slice * 1_000,
            });
        }
        tsc += QUANTUM;
        writer.event(tsc, Event::Descheduled { dt: 0, vm, why });
        if matches!(why, SliceEnd::Blocked(_)) {
            blocked = Some(vm);
        }
        ran.push((vm, slice_exits(vm, why)));
        slice += 1;
    }
    writer.flush_events();
    for (vm, count) in (0..VMS).zip(counts) {
        let running = count.slices * QUANTUM;
        let root = count.slices * 115 * 1_500;
        writer.push(&Record::VmSummary(VmSummary {
            vm,
            running,
            runnable: tsc - running,
            blocked: 0,
            stopped: 0,
            guest: running - root,
            root,
            slices: count.slices,
            preemptions: count.preemptions,
            yields: count.blocks,
            wakes: count.wakes,
            wake_p50: 15 * QUANTUM,
            wake_p95: 15 * QUANTUM,
            wake_p99: 15 * QUANTUM,
            wake_max: 15 * QUANTUM,
            quantum_error_median_ppm: 10,
            quantum_error_max_ppm: 100,
            blocked_console: 0,
            blocked_records: 0,
            guest_records_dropped: 0,
        }));
    }
    writer.push(&Record::RunSummary(RunSummary {
        policy: "round-robin".into(),
        quantum_cycles: QUANTUM,
        elapsed: tsc,
        root: slice * (115 * 1_500 + SWITCH),
        idle: 0,
        switch_median: SWITCH,
        switch_max: SWITCH,
        switches: slice,
        dropped_records: 0,
    }));
    writer.push(&Record::RunEnd { tsc });
    (writer.bytes, u64::from(writer.seq))
}

/// Goal: megabytes of trace a second, decoded and reported.
const GOAL_MB_PER_S: u64 = 100;

/// The bench's figures, as `--json` prints them.
#[derive(Debug, Serialize)]
struct DecodeBench {
    bytes: usize,
    records: u64,
    seconds: f64,
    decode_seconds: f64,
    mb_per_s: f64,
    goal_mb_per_s: u64,
}

/// `carousel bench decode [--json]`: decodes and reports a synthetic ~100 MB trace.
pub fn decode_command(json_output: bool) -> i32 {
    const TARGET: usize = 100 << 20;
    eprintln!("bench: encoding a synthetic trace of {} MiB…", TARGET >> 20);
    let (bytes, records) = synthetic_trace(TARGET);
    let start = Instant::now();
    let traced = Model::read(&bytes, Keep::Totals);
    let decode_seconds = start.elapsed().as_secs_f64();
    let report = json::report(&traced.accounting);
    let seconds = start.elapsed().as_secs_f64();
    let mb_per_s = bytes.len() as f64 / 1e6 / seconds;
    let ok = traced.damage.is_empty()
        && traced.frames == records
        && report["vms"]
            .as_array()
            .is_some_and(|v| v.len() == usize::from(VMS));
    if json_output {
        println!(
            "{}",
            json::value(&DecodeBench {
                bytes: bytes.len(),
                records,
                seconds,
                decode_seconds,
                mb_per_s,
                goal_mb_per_s: GOAL_MB_PER_S,
            })
        );
    } else {
        println!(
            "decoded and reported {:.1} MB ({records} records) in {seconds:.2} s ({decode_seconds:.2} s decoding and accounting): {mb_per_s:.0} MB/s (goal ≥ {GOAL_MB_PER_S} MB/s)",
            bytes.len() as f64 / 1e6
        );
    }
    if ok {
        0
    } else {
        eprintln!("carousel bench decode: the decoded trace does not match what was encoded");
        1
    }
}

#[cfg(test)]
mod tests {
    use carousel_protocol::wire::{decode_all, Decoded};
    use carousel_trace::decode::read_trace;
    use carousel_trace::model::accounting::Accounting;

    use super::*;

    fn json_report(records: &[Record]) -> serde_json::Value {
        json::report(&Accounting::from_records(records, &[]))
    }

    #[test]
    fn the_synthetic_trace_decodes_whole_and_reports_every_vm() {
        let (bytes, records) = synthetic_trace(200_000);
        assert!(bytes.len() >= 200_000);
        let (frames, problems) = read_trace(&bytes);
        assert!(
            problems.is_empty(),
            "no gap, no corrupt frame: {problems:?}"
        );
        assert_eq!(frames.len() as u64, records);
        let report = json_report(&frames);
        assert_eq!(report["vms"].as_array().unwrap().len(), usize::from(VMS));
        assert_eq!(report["exits"].as_array().unwrap().len(), 5);
    }

    #[test]
    fn the_synthetic_events_agree_with_the_summaries() {
        let (bytes, _) = synthetic_trace(200_000);
        let (records, _) = read_trace(&bytes);
        let accounting = Accounting::from_records(&records, &[]);
        assert!(accounting.has_events);
        assert_eq!(accounting.event_mismatches(), Vec::<String>::new());
        assert!(accounting.warnings.is_empty(), "{:?}", accounting.warnings);
        let batches: Vec<usize> = records
            .iter()
            .filter_map(|record| match record {
                Record::Events { events, .. } => Some(events.len()),
                _ => None,
            })
            .collect();
        assert!(batches.iter().all(|&n| (1..=EVENTS_PER_BATCH).contains(&n)));
        // One Run and one Descheduled per slice, a slice a quantum.
        let slices: u64 = accounting.vms.iter().map(|vm| vm.events.runs).sum();
        let elapsed = accounting.run.as_ref().unwrap().elapsed;
        assert_eq!(slices, elapsed / QUANTUM);
    }

    #[test]
    fn streamed_accounting_equals_the_accounting_of_all_records() {
        let (mut bytes, _) = synthetic_trace(300_000);
        // Damage: a flipped byte, garbage, a lost frame, and a truncated tail.
        bytes[100_000] ^= 0x55;
        bytes.splice(200_000..200_000, [7u8, 9, 0, 3]);
        let lost = 250_000 + bytes[250_000..].iter().position(|&b| b == 0).unwrap() + 1;
        let next = lost + bytes[lost..].iter().position(|&b| b == 0).unwrap() + 1;
        bytes.drain(lost..next);
        bytes.truncate(bytes.len() - 3);
        // The simple path: every record decoded one after the other, then the report.
        let mut records = Vec::new();
        let mut problems = 0;
        for decoded in decode_all(&bytes) {
            match decoded {
                Decoded::Frame(frame) => records.push(frame.record),
                _ => problems += 1,
            }
        }
        // The flipped frame and its gap; the two halves of the frame the garbage split, and
        // their gap; the lost frame's gap; the truncated tail.
        assert_eq!(problems, 7);
        let traced = Model::read(&bytes, Keep::Totals);
        assert_eq!(traced.damage, read_trace(&bytes).1);
        assert_eq!(traced.damage.len(), problems);
        assert_eq!(traced.frames, records.len() as u64);
        assert_eq!(json::report(&traced.accounting), json_report(&records));
    }
}
