//! `carousel export TRACE --perfetto FILE`: a trace as Chrome trace-event JSON, the format
//! ui.perfetto.dev and chrome://tracing load (the JSON object form, `{"traceEvents": [...]}`).
//!
//! What is here: [`write`](fn@write) streams one event per line:
//! - process and thread names and sort order (`ph` "M");
//! - the process "CPU" with one track, `pCPU 0`: a complete event (`ph` "X") per slice, named
//!   after the VM that ran; and a counter of dropped records;
//! - a process per VM with the track `runstate` (an X event per runstate span: running,
//!   runnable, blocked (named for what it waited for: "blocked on disk", "blocked on timer"),
//!   stopped; together they cover the run without gaps), console writes and
//!   the stop as instants (`ph` "i"), and, in full-rate traces, the track `exits` (an X event per
//!   exit, named after its reason);
//! - with a timed shared disk, a VM's track `disk` (an X event per request's wait, "queued",
//!   and per its service, "read 8 sectors") and the CPU's counter "disk queue" (requests
//!   waiting or in service);
//! - counters (`ph` "C") per VM: cumulative disk sectors read and written, memory cells by state
//!   (from each memory sample), and exits and their root-mode cycles per exit interval.
//!
//! Times (`ts`, `dur`) are microseconds since the trace's earliest time, to the nanosecond, at
//! the Hello record's TSC frequency (at 1 GHz if it names none). What is not here: any figure
//! the model (its timeline and samples) does not hold.

use std::io::{self, Write};

use carousel_protocol::record::{exit_reason_name, BlockedOn, PageState, SliceEnd};
use serde::Serialize;
use serde_json::{json, Value};

use super::chart::PAGE_STATES;
use crate::model::Model;

/// Process id of the CPU, and the thread id of its one track.
const CPU_PID: u32 = 1;
const CPU_TID: u32 = 1;
/// Process id of VM 0 (VM n is `VM_PID_BASE + n`).
const VM_PID_BASE: u32 = 10;
/// Thread ids inside a VM's process.
const RUNSTATE_TID: u32 = 1;
const EXITS_TID: u32 = 2;
/// A VM's track of its requests through the shared disk.
const DISK_TID: u32 = 3;
/// Nanoseconds in a microsecond: `ts` and `dur` are rounded to them.
const NANOS_PER_MICRO: f64 = 1_000.0;
/// Hz assumed when the trace names no TSC frequency (one cycle per nanosecond).
const DEFAULT_HZ: u64 = 1_000_000_000;

/// One trace event, as the Chrome trace-event format spells it.
#[derive(Debug, Serialize)]
struct TraceEvent {
    name: String,
    ph: &'static str,
    ts: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    dur: Option<f64>,
    pid: u32,
    tid: u32,
    /// Instant scope: "t" (the thread's track).
    #[serde(skip_serializing_if = "Option::is_none")]
    s: Option<&'static str>,
    #[serde(skip_serializing_if = "Value::is_null")]
    args: Value,
}

/// Converts TSC values into trace-event microseconds.
#[derive(Debug, Clone, Copy)]
struct Clock {
    origin: u64,
    hz: u64,
}

impl Clock {
    /// `tsc` in µs since the origin, to the nanosecond (times before it are 0).
    fn micros(&self, tsc: u64) -> f64 {
        let cycles = tsc.saturating_sub(self.origin) as f64;
        let micros = cycles * 1_000_000.0 / self.hz as f64;
        (micros * NANOS_PER_MICRO).round() / NANOS_PER_MICRO
    }

    /// `[start, end)` as `ts` and `dur`; `dur` is the difference of the rounded ends, so that
    /// neighbours meet exactly.
    fn span(&self, start: u64, end: u64) -> (f64, f64) {
        let ts = self.micros(start);
        (ts, (self.micros(end) - ts).max(0.0))
    }
}

/// What [`write`](fn@write) wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Trace events written.
    pub events: u64,
    /// Notes for the user: what the trace lacked, what the replay found.
    pub notes: Vec<String>,
}

/// Writes one event per line, counting them.
struct Out<'a, W: Write> {
    writer: &'a mut W,
    events: u64,
}

impl<W: Write> Out<'_, W> {
    fn emit(&mut self, event: &TraceEvent) -> io::Result<()> {
        if self.events > 0 {
            self.writer.write_all(b",\n")?;
        }
        serde_json::to_writer(&mut *self.writer, event)?;
        self.events += 1;
        Ok(())
    }

    fn metadata(&mut self, name: &str, pid: u32, tid: u32, args: Value) -> io::Result<()> {
        self.emit(&TraceEvent {
            name: name.to_string(),
            ph: "M",
            ts: 0.0,
            dur: None,
            pid,
            tid,
            s: None,
            args,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn complete(
        &mut self,
        name: &str,
        clock: &Clock,
        start: u64,
        end: u64,
        pid: u32,
        tid: u32,
        args: Value,
    ) -> io::Result<()> {
        let (ts, dur) = clock.span(start, end);
        self.emit(&TraceEvent {
            name: name.to_string(),
            ph: "X",
            ts,
            dur: Some(dur),
            pid,
            tid,
            s: None,
            args,
        })
    }

    fn counter(&mut self, name: &str, ts: f64, pid: u32, args: Value) -> io::Result<()> {
        self.emit(&TraceEvent {
            name: name.to_string(),
            ph: "C",
            ts,
            dur: None,
            pid,
            tid: 0,
            s: None,
            args,
        })
    }

    fn instant(&mut self, name: &str, ts: f64, pid: u32, tid: u32, args: Value) -> io::Result<()> {
        self.emit(&TraceEvent {
            name: name.to_string(),
            ph: "i",
            ts,
            dur: None,
            pid,
            tid,
            s: Some("t"),
            args,
        })
    }
}

fn vm_pid(vm: u16) -> u32 {
    VM_PID_BASE + u32::from(vm)
}

fn slice_end_name(ended: Option<SliceEnd>) -> &'static str {
    match ended {
        Some(SliceEnd::Preempted) => "preempted",
        Some(SliceEnd::Yielded) => "yielded",
        Some(SliceEnd::Blocked(on)) => match on {
            BlockedOn::Disk => "blocked on disk",
            BlockedOn::Timer => "blocked on timer",
            BlockedOn::Interrupt => "blocked on interrupt",
            BlockedOn::Console => "blocked on console",
            BlockedOn::Records => "blocked on records",
        },
        Some(SliceEnd::Stopped) => "stopped",
        None => "unknown (trace ended, or events lost)",
    }
}

/// Writes the model as a Chrome trace-event JSON object to `writer`.
pub fn write(model: &Model, writer: &mut impl Write) -> io::Result<Written> {
    let accounting = &model.accounting;
    let timeline = &model.timeline;
    // The earliest time the trace names (the timeline's start if that is earlier).
    let earliest = timeline
        .as_ref()
        .map(|timeline| timeline.start)
        .into_iter()
        .chain(model.samples.earliest)
        .min()
        .unwrap_or(0);
    let clock = Clock {
        origin: earliest,
        hz: accounting.tsc_hz.unwrap_or(DEFAULT_HZ),
    };
    let mut notes = Vec::new();
    if accounting.tsc_hz.is_none() {
        notes.push("the trace names no TSC frequency: a cycle is shown as a nanosecond".into());
    }
    match &timeline {
        None => notes.push(
            "the trace holds no scheduler events (trace level aggregate): no CPU or runstate \
             tracks, only counters"
                .into(),
        ),
        Some(timeline) => notes.extend(timeline.problems.iter().cloned()),
    }
    let vms = accounting
        .vms
        .len()
        .max(timeline.as_ref().map_or(0, |t| t.runstates.len()));
    let name = |vm: usize| {
        accounting
            .vms
            .get(vm)
            .map_or_else(|| format!("vm{vm}"), |vm| vm.name.clone())
    };

    writer.write_all(b"{\"displayTimeUnit\":\"ns\",\"otherData\":")?;
    let hello = model.hello.as_ref().map(|hello| {
        json!({"carousel_format": hello.version, "commit": hello.commit, "cpu": hello.cpu, "tsc_hz": hello.tsc_hz})
    });
    serde_json::to_writer(&mut *writer, &hello.unwrap_or(json!({})))?;
    writer.write_all(b",\"traceEvents\":[\n")?;
    let mut out = Out { writer, events: 0 };

    // Names and order: the CPU first, then the VMs by id.
    out.metadata("process_name", CPU_PID, 0, json!({"name": "CPU"}))?;
    out.metadata("process_sort_index", CPU_PID, 0, json!({"sort_index": 0}))?;
    out.metadata("thread_name", CPU_PID, CPU_TID, json!({"name": "pCPU 0"}))?;
    for vm in 0..vms as u16 {
        let pid = vm_pid(vm);
        out.metadata(
            "process_name",
            pid,
            0,
            json!({"name": format!("VM {}", name(usize::from(vm)))}),
        )?;
        out.metadata(
            "process_sort_index",
            pid,
            0,
            json!({"sort_index": u32::from(vm) + 1}),
        )?;
        out.metadata(
            "thread_name",
            pid,
            RUNSTATE_TID,
            json!({"name": "runstate"}),
        )?;
        out.metadata(
            "thread_sort_index",
            pid,
            RUNSTATE_TID,
            json!({"sort_index": 0}),
        )?;
        if model
            .samples
            .disk_served
            .iter()
            .any(|request| request.vm == vm)
        {
            out.metadata("thread_name", pid, DISK_TID, json!({"name": "disk"}))?;
            out.metadata("thread_sort_index", pid, DISK_TID, json!({"sort_index": 2}))?;
        }
        if timeline.as_ref().is_some_and(|t| !t.exits.is_empty()) {
            out.metadata("thread_name", pid, EXITS_TID, json!({"name": "exits"}))?;
            out.metadata(
                "thread_sort_index",
                pid,
                EXITS_TID,
                json!({"sort_index": 1}),
            )?;
        }
    }

    if let Some(timeline) = &timeline {
        for slice in &timeline.slices {
            out.complete(
                &name(usize::from(slice.vm)),
                &clock,
                slice.start,
                slice.end,
                CPU_PID,
                CPU_TID,
                json!({"ended": slice_end_name(slice.ended)}),
            )?;
        }
        for (vm, spans) in timeline.runstates.iter().enumerate() {
            for span in spans {
                // A blocked span says what the VM waited for ("blocked on disk").
                let (name, args) = match span.on {
                    Some(on) => (
                        format!("{} on {}", span.state.name(), on.name()),
                        json!({"blocked_on": on.name()}),
                    ),
                    None => (span.state.name().to_string(), Value::Null),
                };
                out.complete(
                    &name,
                    &clock,
                    span.start,
                    span.end,
                    vm_pid(vm as u16),
                    RUNSTATE_TID,
                    args,
                )?;
            }
        }
        // Each exit lasts until the next entry; clipped at the VM's next exit, so that one
        // track's slices never overlap.
        let mut pending: Vec<Option<(u64, u64, u16)>> = vec![None; vms];
        let exit = |out: &mut Out<_>, vm: usize, (tsc, end, reason): (u64, u64, u16)| {
            out.complete(
                exit_reason_name(reason),
                &clock,
                tsc,
                end,
                vm_pid(vm as u16),
                EXITS_TID,
                json!({"reason": reason, "root_cycles": end - tsc}),
            )
        };
        for event in &timeline.exits {
            let vm = usize::from(event.vm);
            if let Some((tsc, end, reason)) = pending[vm].take() {
                exit(&mut out, vm, (tsc, end.min(event.tsc), reason))?;
            }
            let end = event.tsc.saturating_add(u64::from(event.cycles));
            pending[vm] = Some((event.tsc, end, event.reason));
        }
        for (vm, last) in pending.into_iter().enumerate() {
            if let Some(last) = last {
                exit(&mut out, vm, last)?;
            }
        }
        for console in &timeline.consoles {
            let vm = console.vm.unwrap_or(0);
            out.instant(
                "console",
                clock.micros(console.tsc),
                vm_pid(vm),
                RUNSTATE_TID,
                json!({"bytes": console.value}),
            )?;
        }
        for dropped in &timeline.dropped {
            out.counter(
                "dropped records",
                clock.micros(dropped.tsc),
                CPU_PID,
                json!({"total": dropped.value}),
            )?;
        }
    }

    let mut disk = vec![(0u64, 0u64); vms];
    for transfer in &model.samples.disk_transfers {
        let Some(totals) = disk.get_mut(usize::from(transfer.vm)) else {
            continue;
        };
        if transfer.write {
            totals.1 += u64::from(transfer.sectors);
        } else {
            totals.0 += u64::from(transfer.sectors);
        }
        out.counter(
            "disk sectors",
            clock.micros(transfer.tsc),
            vm_pid(transfer.vm),
            json!({"read": totals.0, "written": totals.1}),
        )?;
    }
    // The shared disk: each request's wait and service on its VM's disk track (one request of
    // a VM at a time, so they never overlap), and the device's queue as a counter.
    for request in &model.samples.disk_served {
        let pid = vm_pid(request.vm);
        let args = json!({"sectors": request.sectors, "wait_cycles": request.wait,
            "service_cycles": request.service});
        if request.wait > 0 {
            out.complete(
                "queued",
                &clock,
                request.arrived(),
                request.started(),
                pid,
                DISK_TID,
                args.clone(),
            )?;
        }
        let what = if request.write { "write" } else { "read" };
        out.complete(
            &format!("{what} {} sectors", request.sectors),
            &clock,
            request.started(),
            request.tsc,
            pid,
            DISK_TID,
            args,
        )?;
    }
    let queue = crate::model::disk::queue_changes(&model.samples.disk_served);
    let mut outstanding = 0i64;
    for (index, &(tsc, change)) in queue.iter().enumerate() {
        outstanding += change;
        // One sample per instant: the length after every change at that time.
        if queue.get(index + 1).is_some_and(|&(next, _)| next == tsc) {
            continue;
        }
        out.counter(
            "disk queue",
            clock.micros(tsc),
            CPU_PID,
            json!({"requests": outstanding}),
        )?;
    }
    for map in &model.samples.memory_maps {
        let mut counts = [0u64; PAGE_STATES.len()];
        for &cell in &map.cells {
            counts[PageState::from_byte(cell) as usize] += 1;
        }
        let args: serde_json::Map<String, Value> = PAGE_STATES
            .iter()
            .zip(counts)
            .map(|((name, _), count)| (name.to_string(), json!(count)))
            .collect();
        out.counter(
            "memory cells",
            clock.micros(map.tsc),
            vm_pid(map.vm),
            Value::Object(args),
        )?;
    }
    for pass in &model.samples.compressed {
        for (vm, &pages) in pass.pages.iter().enumerate() {
            out.counter(
                "compressed pages",
                clock.micros(pass.tsc),
                vm_pid(vm as u16),
                json!({"pages": pages}),
            )?;
        }
    }
    for sample in &model.samples.exit_intervals {
        out.counter(
            "exits per interval",
            clock.micros(sample.tsc),
            vm_pid(sample.vm),
            json!({"exits": sample.exits}),
        )?;
        out.counter(
            "exit root cycles per interval",
            clock.micros(sample.tsc),
            vm_pid(sample.vm),
            json!({"cycles": sample.cycles}),
        )?;
    }
    for (tsc, vm, reason) in model.verdict.stops() {
        out.instant(
            "stopped",
            clock.micros(tsc),
            vm_pid(vm),
            RUNSTATE_TID,
            json!({"reason": reason.to_string()}),
        )?;
    }
    let names = model.vm_names(vms);
    for change in &model.accounting.settings.changes {
        let what = crate::model::settings::describe(change.setting, &names);
        let (name, reason) = match change.refused {
            None => (format!("setting: {what}"), Value::Null),
            Some(reason) => (
                format!("setting refused: {what}"),
                json!(reason.to_string()),
            ),
        };
        out.instant(
            &name,
            clock.micros(change.tsc),
            CPU_PID,
            CPU_TID,
            json!({
                "source": crate::model::settings::source_name(change.source),
                "reason": reason,
            }),
        )?;
    }
    let events = out.events;
    writer.write_all(b"\n]}\n")?;
    Ok(Written { events, notes })
}

#[cfg(test)]
mod tests {
    use carousel_protocol::record::{Event, ExitStat, Record, StopReason};

    use super::*;
    use crate::model::timeline::tests::{batch, hello, off, run, two_vms_with, wake};

    /// The trace as JSON, and its events.
    fn export(records: &[Record]) -> (Value, Vec<Value>, Written) {
        let mut bytes = Vec::new();
        let written = write(&Model::of_records(records), &mut bytes).expect("writes to memory");
        let json: Value = serde_json::from_slice(&bytes).expect("valid JSON");
        let events = json["traceEvents"].as_array().expect("traceEvents").clone();
        assert_eq!(events.len() as u64, written.events);
        (json, events, written)
    }

    fn of<'a>(events: &'a [Value], ph: &str, pid: u32, tid: u32) -> Vec<&'a Value> {
        events
            .iter()
            .filter(|event| event["ph"] == ph && event["pid"] == pid && event["tid"] == tid)
            .collect()
    }

    /// `(ts, ts + dur)` of each event.
    fn bounds(events: &[&Value]) -> Vec<(f64, f64)> {
        events
            .iter()
            .map(|event| {
                let ts = event["ts"].as_f64().unwrap();
                (ts, ts + event["dur"].as_f64().unwrap())
            })
            .collect()
    }

    /// A full-rate trace of two VMs: scheduler events, exits, console, disk, memory, a stop.
    /// The scheduling is that of [`two_vms`]: a runs 100..400, b 410..600 (then blocks), a
    /// 610..900, b 910..1000 (then stops), the run ends at 1200.
    fn full_rate() -> Vec<Record> {
        let exit = |reason, cycles| Event::Exit {
            dt: 0,
            vm: 0,
            reason,
            cycles,
        };
        let console = Event::Console {
            dt: 0,
            vm: 0,
            bytes: 12,
        };
        let mut records =
            two_vms_with(&[(150, exit(30, 20)), (160, exit(52, 400)), (160, console)]);
        records.extend([
            Record::DiskIo {
                tsc: 500,
                vm: 1,
                lba: 0,
                sectors: 8,
                write: false,
            },
            Record::DiskIo {
                tsc: 550,
                vm: 1,
                lba: 8,
                sectors: 2,
                write: true,
            },
            Record::MemoryMap {
                tsc: 800,
                vm: 0,
                pages_per_cell: 1,
                cells: vec![0, 1, 2, 2],
            },
            Record::ExitInterval {
                tsc: 1_000,
                vm: 0,
                interval: 500,
                exits: vec![ExitStat {
                    reason: 30,
                    count: 2,
                    cycles: 50,
                    min: 20,
                    max: 30,
                    log2: vec![],
                }],
            },
            Record::VmStopped {
                tsc: 1_000,
                vm: 1,
                reason: StopReason::EndedByHost,
            },
        ]);
        records
    }

    #[test]
    fn every_event_is_well_formed() {
        let (json, events, written) = export(&full_rate());
        assert_eq!(json["displayTimeUnit"], "ns");
        assert!(written.notes.is_empty(), "{:?}", written.notes);
        for event in &events {
            for key in ["ph", "ts", "pid", "tid", "name"] {
                assert!(!event[key].is_null(), "no {key}: {event}");
            }
            assert!(event["ts"].as_f64().unwrap() >= 0.0, "{event}");
            if event["ph"] == "X" {
                assert!(event["dur"].as_f64().unwrap() >= 0.0, "{event}");
            }
        }
        let names: Vec<&Value> = events
            .iter()
            .filter(|event| event["ph"] == "M" && event["name"] == "process_name")
            .map(|event| &event["args"]["name"])
            .collect();
        assert_eq!(names, ["CPU", "VM a", "VM b"]);
    }

    /// Each request a timed disk served shows on its VM's disk track as its wait and its
    /// service, and the CPU's "disk queue" counter follows the requests outstanding.
    #[test]
    fn served_requests_fill_each_vms_disk_track_and_the_queue_counter() {
        let mut records = full_rate();
        records.extend([
            Record::DiskServed {
                tsc: 400,
                vm: 0,
                sectors: 8,
                write: false,
                wait: 0,
                service: 100,
            },
            Record::DiskServed {
                tsc: 500,
                vm: 1,
                sectors: 2,
                write: true,
                wait: 50,
                service: 100,
            },
        ]);
        let (_, events, _) = export(&records);
        let zero = of(&events, "X", vm_pid(0), DISK_TID);
        assert_eq!(zero.len(), 1, "{zero:?}");
        assert_eq!(zero[0]["name"], "read 8 sectors");
        // 1 MHz from the first event at 100: served 300..400 is 200..300 µs.
        assert_eq!(bounds(&zero), [(200.0, 300.0)]);
        let one = of(&events, "X", vm_pid(1), DISK_TID);
        let names: Vec<&Value> = one.iter().map(|event| &event["name"]).collect();
        assert_eq!(names, ["queued", "write 2 sectors"]);
        assert_eq!(bounds(&one), [(250.0, 300.0), (300.0, 400.0)]);
        let queue: Vec<(f64, i64)> = events
            .iter()
            .filter(|event| event["ph"] == "C" && event["name"] == "disk queue")
            .map(|event| {
                (
                    event["ts"].as_f64().unwrap(),
                    event["args"]["requests"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(queue, [(200.0, 1), (250.0, 2), (300.0, 1), (400.0, 0)]);
    }

    #[test]
    fn compression_passes_give_each_vm_a_compressed_pages_counter() {
        let mut records = full_rate();
        records.push(Record::Compression {
            tsc: 300,
            compressed_now: 5,
            cycles: 10,
            compressed: 5,
            decompressed: 0,
            decompress_cycles: 0,
            incompressible: 0,
            pool_full: 0,
            pool_frames: 0,
            pool_bytes: 0,
            blob_pages: 0,
            compressed_pages: vec![2, 3],
        });
        let (_, events, _) = export(&records);
        for (vm, pages) in [(0u16, 2), (1, 3)] {
            let counters: Vec<&Value> = events
                .iter()
                .filter(|event| {
                    event["ph"] == "C"
                        && event["name"] == "compressed pages"
                        && event["pid"] == vm_pid(vm)
                })
                .collect();
            assert_eq!(counters.len(), 1, "{counters:?}");
            assert_eq!(counters[0]["args"]["pages"], pages);
            assert_eq!(counters[0]["ts"], 200.0);
        }
    }

    #[test]
    fn cpu_slices_never_overlap_and_name_their_vm() {
        let (_, events, _) = export(&full_rate());
        let slices = of(&events, "X", CPU_PID, CPU_TID);
        assert_eq!(slices.len(), 4);
        assert_eq!(slices[0]["name"], "a");
        assert_eq!(slices[1]["name"], "b");
        assert_eq!(slices[1]["args"]["ended"], "blocked on timer");
        // 1 MHz: a cycle is a microsecond; the origin is the first event, at 100.
        assert_eq!(bounds(&slices)[0], (0.0, 300.0));
        for pair in bounds(&slices).windows(2) {
            assert!(pair[0].1 <= pair[1].0, "{pair:?}");
        }
    }

    #[test]
    fn each_vm_has_one_gapless_runstate_sequence() {
        let (_, events, _) = export(&full_rate());
        for vm in 0..2 {
            let spans = of(&events, "X", vm_pid(vm), RUNSTATE_TID);
            let bounds = bounds(&spans);
            assert_eq!(bounds.first().unwrap().0, 0.0);
            assert_eq!(bounds.last().unwrap().1, 1_100.0, "to RunEnd");
            for pair in bounds.windows(2) {
                assert_eq!(pair[0].1, pair[1].0, "vm {vm}: {bounds:?}");
            }
            let states: Vec<&str> = spans
                .iter()
                .map(|span| span["name"].as_str().unwrap())
                .collect();
            if vm == 1 {
                assert_eq!(
                    states,
                    [
                        "runnable",
                        "running",
                        "blocked on timer",
                        "runnable",
                        "running",
                        "stopped"
                    ]
                );
            }
        }
    }

    #[test]
    fn exits_counters_and_instants_are_there() {
        let (_, events, _) = export(&full_rate());
        let exits = of(&events, "X", vm_pid(0), EXITS_TID);
        assert_eq!(exits.len(), 2);
        assert_eq!(exits[0]["name"], "IO_INSTRUCTION");
        // The first exit lasts its 20 cycles; the second is clipped at nothing.
        // The first exit's 20 cycles end early, at the second exit; the second keeps its 400.
        assert_eq!(bounds(&exits), [(50.0, 60.0), (60.0, 460.0)]);
        let disk = of(&events, "C", vm_pid(1), 0);
        assert_eq!(disk.len(), 2);
        assert_eq!(disk[1]["args"], json!({"read": 8, "written": 2}));
        let memory: Vec<&Value> = of(&events, "C", vm_pid(0), 0)
            .into_iter()
            .filter(|event| event["name"] == "memory cells")
            .collect();
        assert_eq!(memory[0]["args"]["dirty"], 2);
        assert_eq!(memory[0]["args"]["untouched"], 1);
        let instants = of(&events, "i", vm_pid(0), RUNSTATE_TID);
        assert_eq!(instants[0]["args"]["bytes"], 12);
        let stopped = of(&events, "i", vm_pid(1), RUNSTATE_TID);
        assert_eq!(stopped[0]["args"]["reason"], "ended by the host");
    }

    #[test]
    fn an_aggregate_trace_still_exports_its_counters() {
        let records: Vec<Record> = full_rate()
            .into_iter()
            .filter(|record| !matches!(record, Record::Events { .. }))
            .collect();
        let (_, events, written) = export(&records);
        assert!(written.notes[0].contains("no scheduler events"));
        assert!(of(&events, "X", CPU_PID, CPU_TID).is_empty());
        assert_eq!(of(&events, "C", vm_pid(1), 0).len(), 2);
    }

    #[test]
    fn lost_events_are_noted_and_slices_still_do_not_overlap() {
        let records = [
            hello(&["a", "b"]),
            batch(&[
                (10, run(0)),
                (20, run(1)),
                (30, off(0, SliceEnd::Preempted)),
                (40, wake(1)),
            ]),
        ];
        let (_, events, written) = export(&records);
        assert_eq!(written.notes.len(), 2, "{:?}", written.notes);
        for pair in bounds(&of(&events, "X", CPU_PID, CPU_TID)).windows(2) {
            assert!(pair[0].1 <= pair[1].0, "{pair:?}");
        }
    }
}
