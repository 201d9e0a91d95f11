//! The reports as CSV (RFC 4180 quoting, through the `csv` crate): one row per VM, or one row
//! per interval and VM. Each row is a `Serialize` struct, so the header is its field names.

use serde::Serialize;

use super::rows::{interval_rows, latency_rows, setting_rows, vm_row};
use crate::model::accounting::Accounting;
use crate::model::timeline::Interval;
use crate::model::Model;

/// One VM over one interval: milliseconds to three decimals, shares to four.
#[derive(Debug, Default, Serialize)]
struct IntervalRow {
    start_ms: String,
    end_ms: String,
    vm: String,
    running_share: String,
    runnable_share: String,
    blocked_share: String,
    stopped_share: String,
    running_cycles: u64,
    runnable_cycles: u64,
    blocked_cycles: u64,
    blocked_disk_cycles: u64,
    stopped_cycles: u64,
    switches: u64,
    exits: u64,
    exit_cycles: u64,
    /// The VM's requests through a timed shared disk in the interval, and the device's queue
    /// and busy share (the same on each VM's row of the interval); empty without one.
    disk_requests: Option<u64>,
    disk_sectors_read: Option<u64>,
    disk_sectors_written: Option<u64>,
    disk_wait_p50: Option<u64>,
    disk_wait_p99: Option<u64>,
    disk_wait_max: Option<u64>,
    disk_service_p50: Option<u64>,
    disk_service_p99: Option<u64>,
    disk_service_max: Option<u64>,
    disk_queue_average: Option<String>,
    disk_queue_max: Option<u64>,
    disk_busy_share: Option<String>,
}

/// `rows` as CSV with a header line (also when there is no row).
pub fn write<T: Serialize + Default>(rows: impl IntoIterator<Item = T>) -> String {
    let mut rows = rows.into_iter().peekable();
    let mut writer = csv::Writer::from_writer(Vec::new());
    if rows.peek().is_none() {
        // The header comes with the first row: write one, keep only the header.
        let mut header = csv::Writer::from_writer(Vec::new());
        header
            .serialize(T::default())
            .expect("a row of numbers and strings");
        let bytes = header.into_inner().expect("a Vec takes every byte");
        let end = bytes
            .iter()
            .position(|&b| b == b'\n')
            .map_or(0, |at| at + 1);
        return String::from_utf8_lossy(&bytes[..end]).into_owned();
    }
    for row in rows {
        writer.serialize(row).expect("a row of numbers and strings");
    }
    let bytes = writer.into_inner().expect("a Vec takes every byte");
    String::from_utf8(bytes).expect("rows of UTF-8 strings")
}

/// One CSV row per VM.
pub fn vms(accounting: &Accounting) -> String {
    write(accounting.vms.iter().map(vm_row))
}

/// Each VM's timed script steps, keystroke response and keystroke wait as CSV, one row per VM and figure (the
/// JSON `latencies` entries).
pub fn latencies(model: &Model) -> String {
    write(latency_rows(model))
}

/// The run's setting changes as CSV, one row per change made or refused (the JSON `settings`
/// entries).
pub fn settings(accounting: &Accounting) -> String {
    write(setting_rows(accounting))
}

/// The per-interval rows as CSV: one row per interval and VM.
pub fn intervals(model: &Model, rows: &[Interval]) -> String {
    let rows = interval_rows(model, rows);
    write(rows.iter().flat_map(|row| {
        row.vms.iter().map(|vm| IntervalRow {
            start_ms: format!("{:.3}", row.start_ms),
            end_ms: format!("{:.3}", row.end_ms),
            vm: vm.name.clone(),
            running_share: format!("{:.4}", vm.running_share),
            runnable_share: format!("{:.4}", vm.runnable_share),
            blocked_share: format!("{:.4}", vm.blocked_share),
            stopped_share: format!("{:.4}", vm.stopped_share),
            running_cycles: vm.running_cycles,
            runnable_cycles: vm.runnable_cycles,
            blocked_cycles: vm.blocked_cycles,
            blocked_disk_cycles: vm.blocked_disk_cycles,
            stopped_cycles: vm.stopped_cycles,
            switches: vm.switches,
            exits: vm.exits,
            exit_cycles: vm.exit_cycles,
            disk_requests: vm.disk.map(|disk| disk.requests),
            disk_sectors_read: vm.disk.map(|disk| disk.sectors_read),
            disk_sectors_written: vm.disk.map(|disk| disk.sectors_written),
            disk_wait_p50: vm.disk.and_then(|disk| disk.wait_p50),
            disk_wait_p99: vm.disk.and_then(|disk| disk.wait_p99),
            disk_wait_max: vm.disk.and_then(|disk| disk.wait_max),
            disk_service_p50: vm.disk.and_then(|disk| disk.service_p50),
            disk_service_p99: vm.disk.and_then(|disk| disk.service_p99),
            disk_service_max: vm.disk.and_then(|disk| disk.service_max),
            disk_queue_average: row.disk.map(|disk| format!("{:.3}", disk.queue_average)),
            disk_queue_max: row.disk.map(|disk| disk.queue_max),
            disk_busy_share: row.disk.map(|disk| format!("{:.4}", disk.busy_share)),
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::report_trace;

    #[test]
    fn csv_has_a_row_per_vm() {
        let csv = vms(&Accounting::from_records(&report_trace(), &[]));
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[0],
            "vm,running_cycles,runnable_cycles,blocked_cycles,guest_cycles,root_cycles,slices,\
             preemptions,yields,wakes,wake_p50,wake_p95,wake_p99,wake_max,\
             blocked_on_disk_cycles,blocked_on_timer_cycles,blocked_on_interrupt_cycles,\
             blocked_on_console_cycles,blocked_on_records_cycles,records_dropped"
        );
        assert_eq!(lines[1], "a,110,5,0,100,10,3,2,1,1,7,8,9,9,,,,,,0");
        assert_eq!(lines.len(), 3);
    }

    #[test]
    fn without_rows_there_is_the_header() {
        assert_eq!(
            write(Vec::<IntervalRow>::new()),
            "start_ms,end_ms,vm,running_share,runnable_share,blocked_share,stopped_share,\
             running_cycles,runnable_cycles,blocked_cycles,\
             blocked_disk_cycles,stopped_cycles,switches,exits,exit_cycles,disk_requests,\
             disk_sectors_read,disk_sectors_written,disk_wait_p50,disk_wait_p99,disk_wait_max,\
             disk_service_p50,disk_service_p99,disk_service_max,disk_queue_average,\
             disk_queue_max,disk_busy_share\n"
        );
    }
}
