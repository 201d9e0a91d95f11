//! The reports as JSON: one object for the run, with its VMs, exits and disks, and the
//! per-interval rows. Each shape is a `Serialize` struct, so every field is named once; the
//! objects' keys come out sorted, as `serde_json` writes a [`Value`].

use carousel_protocol::record::exit_reason_name;
use serde::Serialize;
use serde_json::Value;

use super::rows::{interval_rows, latency_rows, setting_rows, vm_row, SettingRow};
use crate::model::accounting::Accounting;
use crate::model::timeline::Interval;
use crate::model::Model;

/// The run: elapsed, root and idle cycles and dropped records at the top, then `vms`, `exits`
/// (per reason over all VMs), `disk` (sectors read and written per VM) and `settings` (each
/// setting change made or refused, `settings_dropped` more past the model's limit).
#[derive(Debug, Serialize)]
struct Report {
    elapsed_cycles: Option<u64>,
    root_cycles: Option<u64>,
    idle_cycles: Option<u64>,
    dropped: Option<u64>,
    tsc_hz: Option<u64>,
    /// The clock the quanta were measured on (`wall` or `guest`).
    quantum_clock: Option<&'static str>,
    vms: Vec<VmJson>,
    exits: Vec<ExitJson>,
    disk: Vec<DiskJson>,
    /// Per VM, its requests through the shared disk's queue (when the disk was timed).
    disk_queue: Vec<DiskQueueJson>,
    settings: Vec<SettingRow>,
    settings_dropped: u64,
}

/// One VM's runstates, slices and wake latency (null where its summary did not arrive).
#[derive(Debug, Serialize)]
struct VmJson {
    name: String,
    running_cycles: Option<u64>,
    runnable_cycles: Option<u64>,
    blocked_cycles: Option<u64>,
    guest_cycles: Option<u64>,
    root_cycles: Option<u64>,
    slices: Option<u64>,
    preemptions: Option<u64>,
    yields: Option<u64>,
    wake_latency: WakeJson,
    /// Cycles blocked on each reason (`disk`, `timer`, `interrupt`, `console`, `records`), from
    /// the scheduler events; null without events.
    blocked_on: Option<BlockedOnJson>,
    /// Records the VM asked for or caused that were dropped for its quota or its share of the
    /// ring.
    records_dropped: Option<u64>,
}

/// One VM's blocked time by reason, cycles.
#[derive(Debug, Serialize)]
struct BlockedOnJson {
    disk: u64,
    timer: u64,
    interrupt: u64,
    console: u64,
    records: u64,
}

/// Wake-to-run latency: wakes, and percentiles in cycles.
#[derive(Debug, Serialize)]
struct WakeJson {
    count: Option<u64>,
    p50: Option<u64>,
    p95: Option<u64>,
    p99: Option<u64>,
    max: Option<u64>,
}

/// One exit reason over every VM.
#[derive(Debug, Serialize)]
struct ExitJson {
    reason: &'static str,
    count: u64,
    cycles: u64,
    min: u64,
    max: u64,
}

/// One VM's requests through the shared disk: the hypervisor's figures, times in cycles.
#[derive(Debug, Serialize)]
struct DiskQueueJson {
    vm: String,
    requests: u64,
    sectors: u64,
    wait_p50: u64,
    wait_p99: u64,
    wait_max: u64,
    service_p50: u64,
    service_p99: u64,
    service_max: u64,
    blocked_disk: u64,
}

/// One VM's disk: sectors read and written.
#[derive(Debug, Serialize)]
struct DiskJson {
    vm: String,
    reads: u64,
    writes: u64,
}

/// The run as one JSON object.
pub fn report(accounting: &Accounting) -> Value {
    let run = accounting.run.as_ref();
    let vms = accounting
        .vms
        .iter()
        .map(|vm| {
            let row = vm_row(vm);
            VmJson {
                name: row.vm,
                running_cycles: row.running_cycles,
                runnable_cycles: row.runnable_cycles,
                blocked_cycles: row.blocked_cycles,
                guest_cycles: row.guest_cycles,
                root_cycles: row.root_cycles,
                slices: row.slices,
                preemptions: row.preemptions,
                yields: row.yields,
                wake_latency: WakeJson {
                    count: row.wakes,
                    p50: row.wake_p50,
                    p95: row.wake_p95,
                    p99: row.wake_p99,
                    max: row.wake_max,
                },
                // The row's cells, all there or none (no event of the VM arrived).
                blocked_on: row.blocked_on_disk_cycles.map(|disk| BlockedOnJson {
                    disk,
                    timer: row.blocked_on_timer_cycles.unwrap_or(0),
                    interrupt: row.blocked_on_interrupt_cycles.unwrap_or(0),
                    console: row.blocked_on_console_cycles.unwrap_or(0),
                    records: row.blocked_on_records_cycles.unwrap_or(0),
                }),
                records_dropped: row.records_dropped,
            }
        })
        .collect();
    let exits = accounting
        .exits_by_reason(None)
        .into_iter()
        .map(|(reason, totals)| ExitJson {
            reason: exit_reason_name(reason),
            count: totals.count,
            cycles: totals.cycles as u64,
            min: totals.min,
            max: totals.max,
        })
        .collect();
    let disk = accounting
        .vms
        .iter()
        .filter(|vm| vm.disk.any())
        .map(|vm| DiskJson {
            vm: vm.name.clone(),
            reads: vm.disk.read_sectors,
            writes: vm.disk.written_sectors,
        })
        .collect();
    value(&Report {
        elapsed_cycles: run.map(|r| r.elapsed),
        root_cycles: run.map(|r| r.root),
        idle_cycles: run.map(|r| r.idle),
        dropped: run.map(|r| r.dropped_records),
        tsc_hz: accounting.tsc_hz,
        quantum_clock: accounting.quantum_clock.map(|clock| clock.name()),
        vms,
        exits,
        disk,
        disk_queue: accounting
            .vms
            .iter()
            .filter_map(|vm| {
                vm.disk_queue.map(|queue| DiskQueueJson {
                    vm: vm.name.clone(),
                    requests: queue.requests,
                    sectors: queue.sectors,
                    wait_p50: queue.wait_p50,
                    wait_p99: queue.wait_p99,
                    wait_max: queue.wait_max,
                    service_p50: queue.service_p50,
                    service_p99: queue.service_p99,
                    service_max: queue.service_max,
                    blocked_disk: queue.blocked_disk,
                })
            })
            .collect(),
        settings: setting_rows(accounting),
        settings_dropped: accounting.settings.dropped,
    })
}

/// Each VM's timed script steps, keystroke response and keystroke wait (the rows of the text
/// report's STEPS and KEYSTROKE tables, `kind` telling them apart: `step`, `keystroke`,
/// `keystroke_wait`).
pub fn latencies(model: &Model) -> Value {
    value(&latency_rows(model))
}

/// The per-interval rows as JSON: one object per interval with its `vms`.
pub fn intervals(model: &Model, rows: &[Interval]) -> Value {
    value(&interval_rows(model, rows))
}

/// `shape` as a JSON value (its maps' keys sorted).
pub fn value(shape: &impl Serialize) -> Value {
    serde_json::to_value(shape).expect("report shapes hold only numbers and strings")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::fixtures::report_trace;

    #[test]
    fn json_has_the_documented_layout() {
        let report = report(&Accounting::from_records(&report_trace(), &[]));
        assert_eq!(report["elapsed_cycles"], 185);
        assert_eq!(report["root_cycles"], 30);
        assert_eq!(report["idle_cycles"], 5);
        assert_eq!(report["dropped"], 0);
        assert_eq!(report["quantum_clock"], "wall");
        // Without a Hello the clock is unknown.
        let records: Vec<_> = report_trace()
            .into_iter()
            .filter(|record| !matches!(record, carousel_protocol::record::Record::Hello { .. }))
            .collect();
        let unnamed = super::report(&Accounting::from_records(&records, &[]));
        assert_eq!(unnamed["quantum_clock"], Value::Null);
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
}
