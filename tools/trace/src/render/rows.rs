//! The rows the reports share, each figure named once: one VM's summary as CSV writes it and
//! JSON nests it, and one interval with its VMs.

use carousel_protocol::record::VmSummary;
use serde::Serialize;

use crate::model::accounting::VmAccount;
use crate::model::timeline::Interval;
use crate::model::Model;

/// One VM's runstates, slices and wake latency; empty cells where its summary did not arrive.
#[derive(Debug, Default, Serialize)]
pub(crate) struct VmRow {
    pub(crate) vm: String,
    pub(crate) running_cycles: Option<u64>,
    pub(crate) runnable_cycles: Option<u64>,
    pub(crate) blocked_cycles: Option<u64>,
    pub(crate) guest_cycles: Option<u64>,
    pub(crate) root_cycles: Option<u64>,
    pub(crate) slices: Option<u64>,
    pub(crate) preemptions: Option<u64>,
    pub(crate) yields: Option<u64>,
    pub(crate) wakes: Option<u64>,
    pub(crate) wake_p50: Option<u64>,
    pub(crate) wake_p95: Option<u64>,
    pub(crate) wake_p99: Option<u64>,
    pub(crate) wake_max: Option<u64>,
}

/// VM `vm`'s row: its summary's figures (none without a summary).
pub(crate) fn vm_row(vm: &VmAccount) -> VmRow {
    let field = |get: fn(&VmSummary) -> u64| vm.summary.as_ref().map(get);
    VmRow {
        vm: vm.name.clone(),
        running_cycles: field(|s| s.running),
        runnable_cycles: field(|s| s.runnable),
        blocked_cycles: field(|s| s.blocked),
        guest_cycles: field(|s| s.guest),
        root_cycles: field(|s| s.root),
        slices: field(|s| s.slices),
        preemptions: field(|s| s.preemptions),
        yields: field(|s| s.yields),
        wakes: field(|s| s.wakes),
        wake_p50: field(|s| s.wake_p50),
        wake_p95: field(|s| s.wake_p95),
        wake_p99: field(|s| s.wake_p99),
        wake_max: field(|s| s.wake_max),
    }
}

/// One interval: its bounds in cycles and in milliseconds since the first one, and its VMs.
#[derive(Debug, Serialize)]
pub(crate) struct IntervalJson {
    pub(crate) start_cycles: u64,
    pub(crate) end_cycles: u64,
    pub(crate) start_ms: f64,
    pub(crate) end_ms: f64,
    pub(crate) vms: Vec<IntervalVmJson>,
}

/// One VM over one interval: its runstates' shares and cycles, switches and exits.
#[derive(Debug, Serialize)]
pub(crate) struct IntervalVmJson {
    pub(crate) name: String,
    pub(crate) running_share: f64,
    pub(crate) runnable_share: f64,
    pub(crate) blocked_share: f64,
    pub(crate) stopped_share: f64,
    pub(crate) running_cycles: u64,
    pub(crate) runnable_cycles: u64,
    pub(crate) blocked_cycles: u64,
    pub(crate) stopped_cycles: u64,
    pub(crate) switches: u64,
    pub(crate) exits: u64,
    pub(crate) exit_cycles: u64,
}

/// Cycles since `origin` in milliseconds at `hz`.
pub(crate) fn millis(cycles: u64, origin: u64, hz: u64) -> f64 {
    cycles.saturating_sub(origin) as f64 * 1_000.0 / hz.max(1) as f64
}

/// The per-interval rows, one [`IntervalJson`] per interval.
pub(crate) fn interval_rows(model: &Model, rows: &[Interval]) -> Vec<IntervalJson> {
    let hz = model.accounting.tsc_hz.unwrap_or(1);
    let origin = rows.first().map_or(0, |row| row.start);
    let names = model.vm_names(rows.first().map_or(0, |row| row.vms.len()));
    rows.iter()
        .map(|row| IntervalJson {
            start_cycles: row.start,
            end_cycles: row.end,
            start_ms: millis(row.start, origin, hz),
            end_ms: millis(row.end, origin, hz),
            vms: row
                .vms
                .iter()
                .enumerate()
                .map(|(vm, figures)| IntervalVmJson {
                    name: names[vm].clone(),
                    running_share: row.share(figures.running),
                    runnable_share: row.share(figures.runnable),
                    blocked_share: row.share(figures.blocked),
                    stopped_share: row.share(figures.stopped),
                    running_cycles: figures.running,
                    runnable_cycles: figures.runnable,
                    blocked_cycles: figures.blocked,
                    stopped_cycles: figures.stopped,
                    switches: figures.switches,
                    exits: figures.exits,
                    exit_cycles: figures.exit_cycles,
                })
                .collect(),
        })
        .collect()
}
