//! Records for unit tests: the pieces every module's tests build traces from.

use carousel_protocol::record::{ExitStat, Record, RunSummary, TraceLevel, TscSource, VmSummary};

use crate::model::accounting::SPIN_ITERATIONS;

/// A Hello record naming `names` (VM ids in order) at `tsc_hz`, level `switches`.
pub fn hello(names: &[&str], tsc_hz: u64) -> Record {
    Record::Hello {
        version: 1,
        lab_hash: 0,
        tsc_hz,
        tsc_source: TscSource::LabFile,
        preemption_timer_rate: 0,
        cpu: "GenuineIntel".to_string(),
        vms: names.iter().map(|name| name.to_string()).collect(),
        commit: "test".into(),
        level: TraceLevel::Switches,
        weights: Vec::new(),
        quantum_clock: carousel_protocol::config::QuantumClock::Wall,
    }
}

/// A CPU-bound VM: running `guest + root` cycles, runnable the rest of `elapsed`.
pub(crate) fn busy(vm: u16, guest: u64, root: u64, elapsed: u64) -> VmSummary {
    VmSummary {
        vm,
        running: guest + root,
        runnable: elapsed - guest - root,
        blocked: 0,
        stopped: 0,
        guest,
        root,
        slices: 10,
        preemptions: 9,
        yields: 1,
        wakes: 0,
        wake_p50: 0,
        wake_p95: 0,
        wake_p99: 0,
        wake_max: 0,
        quantum_error_median_ppm: 100,
        quantum_error_max_ppm: 2_000,
        blocked_console: 0,
        blocked_records: 0,
        guest_records_dropped: 0,
    }
}

pub(crate) fn run(elapsed: u64, root: u64, idle: u64) -> RunSummary {
    RunSummary {
        policy: "round-robin".to_string(),
        quantum_cycles: 50_000,
        elapsed,
        root,
        idle,
        switch_median: 900,
        switch_max: 1_400,
        switches: 40,
        dropped_records: 0,
    }
}

pub(crate) fn metric(vm: u16, name: &str, value: u64) -> Record {
    Record::GuestMetric {
        tsc: 0,
        vm,
        name: name.to_string(),
        value,
    }
}

/// Two busy VMs, 300 + 100 guest cycles, roots 10 + 10, switching 30, idle 50: 500 in all.
pub(crate) fn two_vm_records() -> Vec<Record> {
    vec![
        hello(&["a", "b"], 1_000_000),
        metric(0, SPIN_ITERATIONS, 10),
        metric(0, SPIN_ITERATIONS, 30),
        metric(1, SPIN_ITERATIONS, 10),
        Record::VmSummary(busy(0, 300, 10, 500)),
        Record::VmSummary(busy(1, 100, 10, 500)),
        Record::RunSummary(run(500, 50, 50)),
        Record::RunEnd { tsc: 600 },
    ]
}

/// A VM summary for [`report_trace`]: `guest` cycles, a few slices and wakes.
pub(crate) fn report_summary(vm: u16, guest: u64) -> VmSummary {
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

/// Two VMs with disk transfers, an exit interval and the summaries (the report tests' trace).
pub(crate) fn report_trace() -> Vec<Record> {
    vec![
        hello(&["a", "b"], 1_000_000),
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
        Record::VmSummary(report_summary(0, 100)),
        Record::VmSummary(report_summary(1, 50)),
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
