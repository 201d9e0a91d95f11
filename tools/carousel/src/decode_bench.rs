//! `carousel bench decode`: how fast the host turns a record stream into a report. It encodes
//! a synthetic trace of about 100 MB (a Hello, then per-interval exit statistics, disk I/O and
//! guest metrics for 16 VMs, then the end-of-run summaries), decodes it and builds the JSON
//! report, and prints the rate.

use std::time::Instant;

use carousel_protocol::record::{ExitStat, Record, RunSummary, TscSource, VmSummary};
use carousel_protocol::wire::{encode_vec, Frame};
use serde_json::json;

use crate::report;

/// VMs in the synthetic trace.
const VMS: u16 = 16;

/// A synthetic trace of at least `target` bytes, and its record count.
pub fn synthetic_trace(target: usize) -> (Vec<u8>, u64) {
    let mut bytes = Vec::with_capacity(target + 4096);
    let mut seq = 0u32;
    let mut push = |record: Record, bytes: &mut Vec<u8>| {
        bytes.extend_from_slice(&encode_vec(&Frame { seq, record }));
        seq += 1;
    };
    push(
        Record::Hello {
            version: carousel_protocol::FORMAT_VERSION,
            lab_hash: 1,
            tsc_hz: 1_000_000_000,
            tsc_source: TscSource::LabFile,
            preemption_timer_rate: 0,
            cpu: "synthetic".into(),
            vms: (0..VMS).map(|vm| format!("vm{vm}")).collect(),
            commit: "test".into(),
            level: carousel_protocol::record::TraceLevel::Switches,
        },
        &mut bytes,
    );
    let mut tsc = 0u64;
    while bytes.len() < target {
        tsc += 10_000_000;
        for vm in 0..VMS {
            let exits = [(30u16, 900u64), (28, 40), (48, 100), (52, 1)]
                .into_iter()
                .map(|(reason, count)| ExitStat {
                    reason,
                    count: count + u64::from(vm),
                    cycles: count * 1_500,
                    min: 900,
                    max: 9_000,
                    log2: vec![(10, count as u32), (11, 3), (13, 1)],
                })
                .collect();
            push(
                Record::ExitInterval {
                    tsc,
                    vm,
                    interval: 10_000_000,
                    exits,
                },
                &mut bytes,
            );
            push(
                Record::DiskIo {
                    tsc,
                    vm,
                    lba: (tsc as u32) % 1000,
                    sectors: 1,
                    write: vm % 2 == 0,
                },
                &mut bytes,
            );
            push(
                Record::GuestMetric {
                    tsc,
                    vm,
                    name: "iterations".into(),
                    value: tsc / 7,
                },
                &mut bytes,
            );
        }
    }
    for vm in 0..VMS {
        push(
            Record::VmSummary(VmSummary {
                vm,
                running: tsc / 16,
                runnable: tsc - tsc / 16,
                blocked: 0,
                stopped: 0,
                guest: tsc / 17,
                root: tsc / 16 - tsc / 17,
                slices: tsc / 10_000_000,
                preemptions: tsc / 10_000_000,
                yields: 0,
                wakes: 0,
                wake_p50: 0,
                wake_p95: 0,
                wake_p99: 0,
                wake_max: 0,
                quantum_error_median_ppm: 10,
                quantum_error_max_ppm: 100,
            }),
            &mut bytes,
        );
    }
    push(
        Record::RunSummary(RunSummary {
            policy: "round-robin".into(),
            quantum_cycles: 10_000_000,
            elapsed: tsc,
            root: tsc - (tsc / 17) * u64::from(VMS),
            idle: 0,
            switch_median: 1_400,
            switch_max: 2_000,
            switches: tsc / 10_000_000,
            dropped_records: 0,
        }),
        &mut bytes,
    );
    push(Record::RunEnd { tsc }, &mut bytes);
    (bytes, u64::from(seq))
}

/// `carousel bench decode [--json]`: decodes and reports a synthetic ~100 MB trace.
pub fn decode_command(json_output: bool) -> i32 {
    const TARGET: usize = 100 << 20;
    eprintln!("bench: encoding a synthetic trace of {} MiB…", TARGET >> 20);
    let (bytes, records) = synthetic_trace(TARGET);
    let start = Instant::now();
    let (frames, problems) = report::read_trace(&bytes);
    let decode_seconds = start.elapsed().as_secs_f64();
    let report = report::json_report(&frames);
    let seconds = start.elapsed().as_secs_f64();
    let mb_per_s = bytes.len() as f64 / 1e6 / seconds;
    let ok = problems.is_empty()
        && frames.len() as u64 == records
        && report["vms"]
            .as_array()
            .is_some_and(|v| v.len() == usize::from(VMS));
    if json_output {
        println!(
            "{}",
            json!({"bytes": bytes.len(), "records": records, "seconds": seconds, "decode_seconds": decode_seconds, "mb_per_s": mb_per_s, "goal_mb_per_s": 100})
        );
    } else {
        println!(
            "decoded and reported {:.1} MB ({records} records) in {seconds:.2} s ({decode_seconds:.2} s decoding): {mb_per_s:.0} MB/s (goal ≥ 100 MB/s)",
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
    use super::*;

    #[test]
    fn the_synthetic_trace_decodes_whole_and_reports_every_vm() {
        let (bytes, records) = synthetic_trace(200_000);
        assert!(bytes.len() >= 200_000);
        let (frames, problems) = report::read_trace(&bytes);
        assert!(
            problems.is_empty(),
            "no gap, no corrupt frame: {problems:?}"
        );
        assert_eq!(frames.len() as u64, records);
        let report = report::json_report(&frames);
        assert_eq!(report["vms"].as_array().unwrap().len(), usize::from(VMS));
        assert!(report["exits"].as_array().unwrap().len() == 4);
    }
}
