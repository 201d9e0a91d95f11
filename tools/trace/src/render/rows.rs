//! The rows the reports share, each figure named once: one VM's summary as CSV writes it and
//! JSON nests it, and one interval with its VMs.

use carousel_protocol::record::{BlockedOn, VmSummary};
use serde::Serialize;

use crate::model::accounting::{Accounting, VmAccount};
use crate::model::disk::DiskVmInterval;
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
    /// Cycles blocked on each reason, from the scheduler events (none without events).
    pub(crate) blocked_on_disk_cycles: Option<u64>,
    pub(crate) blocked_on_timer_cycles: Option<u64>,
    pub(crate) blocked_on_interrupt_cycles: Option<u64>,
    pub(crate) blocked_on_console_cycles: Option<u64>,
    pub(crate) blocked_on_records_cycles: Option<u64>,
    /// Records the VM asked for or caused that were dropped for its quota or its share of the
    /// ring (counted in the run's dropped records too where they left a gap).
    pub(crate) records_dropped: Option<u64>,
}

/// VM `vm`'s row: its summary's figures (none without a summary), and its blocked time by
/// reason (none when no event of it arrived).
pub(crate) fn vm_row(vm: &VmAccount) -> VmRow {
    let field = |get: fn(&VmSummary) -> u64| vm.summary.as_ref().map(get);
    let on = |on: BlockedOn| (vm.events.runs > 0).then(|| vm.events.blocked_on(on));
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
        blocked_on_disk_cycles: on(BlockedOn::Disk),
        blocked_on_timer_cycles: on(BlockedOn::Timer),
        blocked_on_interrupt_cycles: on(BlockedOn::Interrupt),
        blocked_on_console_cycles: on(BlockedOn::Console),
        blocked_on_records_cycles: on(BlockedOn::Records),
        records_dropped: field(|s| s.guest_records_dropped),
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
    /// The shared disk over the interval (a trace with a timed disk's requests only).
    pub(crate) disk: Option<DiskIntervalJson>,
}

/// The shared disk over one interval: requests outstanding on average and at most, and the
/// share of the interval the device was serving one.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct DiskIntervalJson {
    pub(crate) queue_average: f64,
    pub(crate) queue_max: u64,
    pub(crate) busy_share: f64,
}

/// One VM's requests the shared disk completed in one interval; wait and service in cycles
/// (none without a request).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct DiskVmJson {
    pub(crate) requests: u64,
    pub(crate) sectors_read: u64,
    pub(crate) sectors_written: u64,
    pub(crate) wait_p50: Option<u64>,
    pub(crate) wait_p99: Option<u64>,
    pub(crate) wait_max: Option<u64>,
    pub(crate) service_p50: Option<u64>,
    pub(crate) service_p99: Option<u64>,
    pub(crate) service_max: Option<u64>,
}

impl DiskVmJson {
    fn new(figures: &DiskVmInterval) -> Self {
        Self {
            requests: figures.requests,
            sectors_read: figures.sectors_read,
            sectors_written: figures.sectors_written,
            wait_p50: figures.wait.map(|spread| spread.p50),
            wait_p99: figures.wait.map(|spread| spread.p99),
            wait_max: figures.wait.map(|spread| spread.max),
            service_p50: figures.service.map(|spread| spread.p50),
            service_p99: figures.service.map(|spread| spread.p99),
            service_max: figures.service.map(|spread| spread.max),
        }
    }
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
    /// Of `blocked_cycles`, blocked on the shared disk.
    pub(crate) blocked_disk_cycles: u64,
    pub(crate) stopped_cycles: u64,
    pub(crate) switches: u64,
    pub(crate) exits: u64,
    pub(crate) exit_cycles: u64,
    /// Its requests through the shared disk in the interval (a timed disk only).
    pub(crate) disk: Option<DiskVmJson>,
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
                    blocked_disk_cycles: figures.blocked_disk,
                    stopped_cycles: figures.stopped,
                    switches: figures.switches,
                    exits: figures.exits,
                    exit_cycles: figures.exit_cycles,
                    disk: row
                        .disk
                        .as_ref()
                        .map(|disk| disk.vms.get(vm).map(DiskVmJson::new).unwrap_or_default()),
                })
                .collect(),
            disk: row.disk.as_ref().map(|disk| DiskIntervalJson {
                queue_average: disk.queue_average(row.length()),
                queue_max: disk.queue_max,
                busy_share: row.share(disk.busy),
            }),
        })
        .collect()
}

/// One task latency of one VM: a script step's durations, the keystroke responses, or the part
/// of each keystroke response the VM waited for its turn on the CPU, in cycles and (when the
/// trace gives the TSC frequency) microseconds. The percentiles and the largest are there when
/// the figure has more than one sample.
#[derive(Debug, Default, Serialize)]
pub(crate) struct LatencyRow {
    pub(crate) vm: String,
    /// `step`, `keystroke` or `keystroke_wait`.
    pub(crate) kind: String,
    /// The step's label (or `step N`); `keystroke` for the keystroke response; `waiting for its
    /// turn` for the keystrokes' waits.
    pub(crate) name: String,
    pub(crate) count: usize,
    pub(crate) mean_cycles: u64,
    pub(crate) p50_cycles: Option<u64>,
    pub(crate) p99_cycles: Option<u64>,
    pub(crate) max_cycles: Option<u64>,
    pub(crate) mean_us: Option<f64>,
    pub(crate) p50_us: Option<f64>,
    pub(crate) p99_us: Option<f64>,
    pub(crate) max_us: Option<f64>,
}

/// The name of a VM's keystroke-wait row.
pub(crate) const WAIT_NAME: &str = "waiting for its turn";

/// Every VM's timed steps, then its keystroke response and the keystrokes' waits (of those
/// whose wait the trace tells), VM by VM.
pub(crate) fn latency_rows(model: &Model) -> Vec<LatencyRow> {
    use crate::model::steps::Spread;
    let steps = model.steps.as_deref().unwrap_or(&[]);
    let count = steps.len().max(model.keys.vm_count());
    let names = model.vm_names(count);
    let micros = |cycles: u64| model.accounting.micros(cycles);
    let row = |vm: usize, kind: &str, name: String, spread: Spread| {
        let many = |value: u64| (spread.count > 1).then_some(value);
        LatencyRow {
            vm: names[vm].clone(),
            kind: kind.to_string(),
            name,
            count: spread.count,
            mean_cycles: spread.mean,
            p50_cycles: many(spread.p50),
            p99_cycles: many(spread.p99),
            max_cycles: many(spread.max),
            mean_us: micros(spread.mean),
            p50_us: many(spread.p50).and_then(micros),
            p99_us: many(spread.p99).and_then(micros),
            max_us: many(spread.max).and_then(micros),
        }
    };
    let mut rows = Vec::new();
    for vm in 0..count {
        for step in steps.get(vm).map_or(&[][..], |vm| &vm.steps) {
            if let Some(spread) = Spread::of(&step.durations) {
                rows.push(row(vm, "step", step.name(), spread));
            }
        }
        let keystrokes = model.keys.keystrokes_of(vm);
        let responses: Vec<u64> = keystrokes.iter().map(|key| key.response).collect();
        if let Some(spread) = Spread::of(&responses) {
            rows.push(row(vm, "keystroke", "keystroke".to_string(), spread));
        }
        let waits: Vec<u64> = keystrokes.iter().filter_map(|key| key.wait).collect();
        if let Some(spread) = Spread::of(&waits) {
            rows.push(row(vm, "keystroke_wait", WAIT_NAME.to_string(), spread));
        }
    }
    rows
}

/// One setting change the hypervisor made or refused: when (TSC, and milliseconds from the
/// run's first event when the trace gives the TSC frequency), who asked (`lab` or `console`),
/// what (as the text report says it), and for a refused one why.
#[derive(Debug, Default, Serialize)]
pub(crate) struct SettingRow {
    pub(crate) tsc: u64,
    pub(crate) at_ms: Option<f64>,
    pub(crate) source: String,
    pub(crate) setting: String,
    pub(crate) made: bool,
    /// Why it was refused; empty when it was made.
    pub(crate) reason: String,
}

/// The run's setting changes, in the hypervisor's time order.
pub(crate) fn setting_rows(accounting: &Accounting) -> Vec<SettingRow> {
    use crate::model::settings::{describe, source_name};
    let settings = &accounting.settings;
    let names: Vec<String> = accounting.vms.iter().map(|vm| vm.name.clone()).collect();
    settings
        .changes
        .iter()
        .map(|change| SettingRow {
            tsc: change.tsc,
            at_ms: accounting
                .tsc_hz
                .and_then(|hz| settings.ms_into_run(change.tsc, hz)),
            source: source_name(change.source).to_string(),
            setting: describe(change.setting, &names),
            made: change.made(),
            reason: change
                .refused
                .map_or_else(String::new, |reason| reason.to_string()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use carousel_protocol::record::{Event, Record};

    use crate::fixtures::hello;
    use crate::model::steps::{time_steps, StepMatch};
    use crate::model::Model;
    use crate::render::{csv, json, text};

    /// At 1 GHz: VM "sh" types and is answered after 2 and 4 µs, the first time after waiting
    /// 1 µs for its turn (it runs from then on); its step "echo" runs twice (3 µs and 5 µs), its
    /// second step once (1 µs).
    fn model() -> Model {
        let input = |dt| Event::Input {
            dt,
            vm: 1,
            bytes: 1,
        };
        let line = |dt| Event::Console {
            dt,
            vm: 1,
            bytes: 2,
        };
        let records = vec![
            hello(&["idle", "sh"], 1_000_000_000),
            Record::Events {
                tsc: 10_000,
                events: vec![
                    line(0),
                    input(0),
                    Event::Run { dt: 1_000, vm: 1 },
                    line(2_000),
                    input(0),
                    line(5_000),
                    input(0),
                    line(1_000),
                ],
            },
            Record::Answer { tsc: 12_000, vm: 1 },
            Record::Answer { tsc: 17_000, vm: 1 },
        ];
        let mut model = Model::of_records(&records);
        let step = |step, label: Option<&str>, line| StepMatch {
            step,
            label: label.map(str::to_string),
            line,
            sends: true,
        };
        let matches = vec![
            Vec::new(),
            vec![
                step(0, Some("echo"), 0),
                step(0, Some("echo"), 1),
                step(1, None, 2),
                step(2, None, 3),
            ],
        ];
        model.steps = Some(time_steps(&matches, &model.console, &model.keys).unwrap());
        model
    }

    #[test]
    fn the_reports_carry_steps_and_keystrokes() {
        let model = model();
        let text = text::latencies(&model);
        assert!(text.contains("STEPS"), "{text}");
        let echo = text
            .lines()
            .find(|l| l.starts_with("sh  echo"))
            .expect(&text);
        let cells: Vec<&str> = echo.split("  ").filter(|c| !c.is_empty()).collect();
        assert_eq!(
            cells,
            ["sh", "echo", "2", "4.0 µs", "3.0 µs", "5.0 µs", "5.0 µs"],
            "{text}"
        );
        let single = text.lines().find(|l| l.contains("step 2")).expect(&text);
        assert!(
            single.contains("1.0 µs") && single.trim_end().ends_with('-'),
            "{text}"
        );
        let keys = text
            .lines()
            .find(|l| l.contains("keystroke "))
            .expect(&text);
        assert!(keys.contains("3.0 µs") && keys.contains("4.0 µs"), "{text}");
        let wait = text
            .lines()
            .find(|l| l.starts_with("sh  waiting for its turn"))
            .expect(&text);
        let cells: Vec<&str> = wait.split("  ").filter(|c| !c.is_empty()).collect();
        assert_eq!(
            cells,
            [
                "sh",
                "waiting for its turn",
                "2",
                "0.5 µs",
                "0.0 µs",
                "1.0 µs",
                "1.0 µs"
            ],
            "{text}"
        );

        let value = json::latencies(&model);
        let rows = value.as_array().unwrap();
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[0]["name"], "echo");
        assert_eq!(rows[0]["p99_cycles"], 5_000);
        assert_eq!(rows[1]["mean_cycles"], 1_000);
        assert!(rows[1]["p50_cycles"].is_null());
        assert_eq!(rows[2]["kind"], "keystroke");
        assert_eq!(rows[2]["max_us"], 4.0);
        assert_eq!(rows[3]["kind"], "keystroke_wait");
        assert_eq!(rows[3]["name"], "waiting for its turn");
        assert_eq!(rows[3]["max_cycles"], 1_000);

        let csv = csv::latencies(&model);
        let mut lines = csv.lines();
        assert_eq!(
            lines.next(),
            Some(
                "vm,kind,name,count,mean_cycles,p50_cycles,p99_cycles,max_cycles,\
                 mean_us,p50_us,p99_us,max_us"
            )
        );
        assert_eq!(
            lines.next(),
            Some("sh,step,echo,2,4000,3000,5000,5000,4.0,3.0,5.0,5.0")
        );
        assert_eq!(
            lines.nth(2),
            Some("sh,keystroke_wait,waiting for its turn,2,500,0,1000,1000,0.5,0.0,1.0,1.0")
        );
        assert_eq!(lines.count(), 0);
    }

    #[test]
    fn a_model_without_latencies_renders_none() {
        let model = Model::of_records(&[hello(&["a"], 1_000)]);
        assert_eq!(text::latencies(&model), "");
        assert_eq!(json::latencies(&model), serde_json::json!([]));
        assert_eq!(csv::latencies(&model).lines().count(), 1);
    }
}
