//! The comparison: every run's result gathered from a sweep directory, one row per
//! configuration (repeats averaged, their spread kept), the knee of each line, and the text, CSV
//! and JSON forms of it (the HTML is [`super::html`]'s).
//!
//! A sweep directory holds `sweep.json` (the plan, when the sweep made it) and `runs/ID/` per
//! run, with `result.json` ([`RunResult`]) and, for a run that ended in order, `trace.bin`. The
//! figures are computed from the traces here, so `--collect` on results made elsewhere (or by
//! an older tool) gives the same comparison as the sweep that made them.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use carousel_trace::decode::decode_trace;
use carousel_trace::escape;
use carousel_trace::format::group;
use carousel_trace::model::phases::{phases, Phase};
use carousel_trace::model::steps::{time_steps, StepsFile, STEPS_FILE};
use carousel_trace::model::{Keep, Model, ModelBuilder};
use carousel_trace::render::table::{Align, Table};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::axes::{Config, Line, Point};
use super::figures::{self, Figures, VmInfo};
use crate::lab::sweep::quantum_text;

/// A run directory's record of the run.
pub const RESULT_FILE: &str = "result.json";
/// A run directory's record stream.
pub const TRACE_FILE: &str = "trace.bin";
/// A run directory's JSON report (`carousel report --format json`).
pub const REPORT_FILE: &str = "report.json";
/// The sweep directory's plan.
pub const PLAN_FILE: &str = "sweep.json";
/// The sweep directory's folder of run directories.
pub const RUNS_DIR: &str = "runs";
/// The knee is the smallest quantum whose overhead is at most this many percentage points above
/// the largest quantum's.
pub const KNEE_MARGIN_PCT: f64 = 1.0;

/// How a run ended, for the sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Every VM passed and the summaries arrived.
    Ok,
    /// Something went wrong; the reason says what.
    Failed,
    /// Ctrl-C ended it.
    Interrupted,
}

/// What a sweep writes into each run directory as `result.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// The run directory's name ([`Config::id`]).
    pub id: String,
    pub config: Config,
    /// The lab file, as given.
    pub lab: String,
    /// FNV-1a 64 of the lab file's text, `0x…` (from the run's Hello record when it came).
    pub lab_hash: String,
    /// The Carousel commit the run came from (the Hello record's, else the tool's).
    pub commit: String,
    pub backend: String,
    pub status: Status,
    /// Why the run did not pass.
    pub reason: Option<String>,
    /// The exit code `carousel run` would have given.
    pub exit_code: i32,
    /// Wall-clock seconds the run took (emulator start-up included).
    pub wall_s: f64,
    /// The TSC frequency the hypervisor reported.
    pub tsc_hz: Option<u64>,
    /// The clock the run's quanta were measured on (`wall` or `guest`, from its Hello record).
    #[serde(default)]
    pub quantum_clock: Option<String>,
    /// The run's VMs, in id order.
    pub vms: Vec<VmInfo>,
}

/// The plan a sweep writes as `sweep.json`: where the runs came from and which there are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub lab: String,
    pub lab_hash: String,
    pub commit: String,
    pub backend: String,
    /// The axes as text, for the reader.
    pub quanta: Vec<String>,
    pub policies: Vec<String>,
    pub weights: Vec<String>,
    pub workloads: Vec<String>,
    pub repeat: u32,
    /// Every configuration, in the order the sweep runs them.
    pub runs: Vec<Config>,
}

/// A figure over the runs of one configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    pub mean: f64,
    pub min: f64,
    pub max: f64,
    pub count: usize,
}

impl Stat {
    fn of(values: &[f64]) -> Option<Stat> {
        if values.is_empty() {
            return None;
        }
        Some(Stat {
            mean: values.iter().sum::<f64>() / values.len() as f64,
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            count: values.len(),
        })
    }
}

/// One configuration's row: its runs' figures, averaged.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub point: Point,
    /// Runs that gave figures.
    pub runs: usize,
    /// Runs that failed (or were interrupted, or never ran), with why.
    pub failures: Vec<String>,
    /// Figure name → mean, min, max over the runs that have it.
    pub stats: BTreeMap<String, Stat>,
    /// `throughput.vm.NAME` → unit.
    pub units: BTreeMap<String, String>,
    pub lab_hashes: Vec<String>,
    pub commits: Vec<String>,
    /// Whether this row is its line's knee.
    pub knee: bool,
}

impl Row {
    /// The mean of figure `name`, if some run had it.
    pub fn mean(&self, name: &str) -> Option<f64> {
        self.stats.get(name).map(|stat| stat.mean)
    }
}

/// One run as the summary lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunLine {
    pub id: String,
    /// `None`: planned, never run (no `result.json`).
    pub status: Option<Status>,
    pub reason: Option<String>,
}

/// The whole comparison.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Summary {
    pub plan: Option<Plan>,
    /// The TSC frequency of the runs (the first that reported one).
    pub tsc_hz: Option<u64>,
    /// The clocks the runs' quanta were measured on, each named once.
    pub quantum_clocks: Vec<String>,
    pub backend: Option<String>,
    /// One per configuration, in plan order (by workload, weight set, policy, quantum), or in
    /// the order the run directories sort without a plan.
    pub rows: Vec<Row>,
    /// Every run, planned or found.
    pub runs: Vec<RunLine>,
    /// Things the reader should know (unreadable results, differing commits).
    pub warnings: Vec<String>,
}

/// One run as found on disk: its result, and its figures or why there are none.
#[derive(Debug, Clone)]
pub struct FoundRun {
    pub result: RunResult,
    pub figures: Result<Figures, String>,
}

/// Reads one run directory: its `result.json` and, for a run that passed, the figures of its
/// trace.
pub fn read_run(dir: &Path) -> Result<FoundRun, String> {
    let path = dir.join(RESULT_FILE);
    let text = std::fs::read_to_string(&path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    let result: RunResult = serde_json::from_str(&text)
        .map_err(|error| format!("{} is not a run result: {error}", path.display()))?;
    let figures = if result.status == Status::Ok {
        let trace = dir.join(TRACE_FILE);
        match std::fs::read(&trace) {
            Ok(bytes) => {
                let weights = result.vms.iter().map(|vm| vm.weight).collect();
                let mut model = ModelBuilder::with_weights(Keep::Totals, weights);
                decode_trace(&bytes, |item| model.add_item(item));
                let mut model = model.finish();
                let steps = std::fs::read_to_string(dir.join(STEPS_FILE))
                    .ok()
                    .and_then(|text| serde_json::from_str::<StepsFile>(&text).ok())
                    .and_then(|file| time_steps(&file.vms, &model.console, &model.keys).ok());
                model.steps = steps;
                let names: Vec<String> = result.vms.iter().map(|vm| vm.name.clone()).collect();
                let phases = run_phases(&bytes, &model, &result);
                figures::figures(&model.accounting, &result.vms)
                    .map(|mut found| {
                        figures::latency_figures(
                            &mut found,
                            &names,
                            model.steps.as_deref(),
                            &model.keys,
                        );
                        if let Some(phases) = &phases {
                            figures::phase_figures(
                                &mut found,
                                &result.vms,
                                result.config.quantum_us,
                                phases,
                                result.tsc_hz.unwrap_or(0),
                            );
                        }
                        found
                    })
                    .map_err(|error| {
                        if model.damage.is_empty() {
                            error
                        } else {
                            let damage: Vec<String> =
                                model.damage.iter().map(ToString::to_string).collect();
                            format!("{error} (the trace is damaged: {})", damage.join("; "))
                        }
                    })
            }
            Err(error) => Err(format!("cannot read {}: {error}", trace.display())),
        }
    } else {
        Err(result
            .reason
            .clone()
            .unwrap_or_else(|| "the run failed".to_string()))
    };
    Ok(FoundRun { result, figures })
}

/// The phases of a run that changed a setting while it ran, from its trace; `None` for a run
/// that changed nothing (most: the trace is then read once, keeping totals only). Cutting needs
/// the timeline, so such a trace is read again keeping everything.
fn run_phases(bytes: &[u8], totals: &Model, result: &RunResult) -> Option<Vec<Phase>> {
    let settings = &totals.accounting.settings;
    if !settings.changes.iter().any(|change| change.made()) {
        return None;
    }
    let weights = result.vms.iter().map(|vm| vm.weight).collect();
    let mut model = ModelBuilder::with_weights(Keep::Everything, weights);
    decode_trace(bytes, |item| model.add_item(item));
    let model = model.finish();
    phases(model.timeline.as_ref()?, settings, &model.keys)
}

/// A planned (or found) run, and what was found of it.
type PlannedRun<'a> = (Config, Option<&'a FoundRun>);

/// Gathers a sweep directory: the plan if there is one, every run directory with a result.
pub fn collect(dir: &Path) -> Result<Summary, String> {
    let plan_path = dir.join(PLAN_FILE);
    let plan: Option<Plan> = match std::fs::read_to_string(&plan_path) {
        Ok(text) => Some(
            serde_json::from_str(&text)
                .map_err(|error| format!("{} is not a sweep plan: {error}", plan_path.display()))?,
        ),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => return Err(format!("cannot read {}: {error}", plan_path.display())),
    };
    let runs_dir = dir.join(RUNS_DIR);
    let mut found = Vec::new();
    let mut warnings = Vec::new();
    match std::fs::read_dir(&runs_dir) {
        Ok(entries) => {
            let mut dirs: Vec<_> = entries
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|path| path.is_dir())
                .collect();
            dirs.sort();
            for run_dir in dirs {
                if !run_dir.join(RESULT_FILE).exists() {
                    warnings.push(format!(
                        "{} has no {RESULT_FILE} (a run still going, or one that was killed)",
                        run_dir.display()
                    ));
                    continue;
                }
                match read_run(&run_dir) {
                    Ok(run) => found.push(run),
                    Err(error) => warnings.push(error),
                }
            }
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound && plan.is_some() => {}
        Err(error) => {
            return Err(format!(
                "{} holds no sweep ({}: {error})",
                dir.display(),
                runs_dir.display()
            ))
        }
    }
    if plan.is_none() && found.is_empty() {
        return Err(format!(
            "{} holds no sweep: no {PLAN_FILE} and no run results in {}",
            dir.display(),
            runs_dir.display()
        ));
    }
    let mut summary = summarize(plan, &found);
    summary.warnings.splice(0..0, warnings);
    Ok(summary)
}

/// The comparison of `found` runs; with a `plan`, runs it lists that are not among them show as
/// never run, and runs it does not list are left out.
pub fn summarize(plan: Option<Plan>, found: &[FoundRun]) -> Summary {
    let mut quantum_clocks: Vec<String> = Vec::new();
    for clock in found
        .iter()
        .filter_map(|run| run.result.quantum_clock.as_ref())
    {
        if !quantum_clocks.contains(clock) {
            quantum_clocks.push(clock.clone());
        }
    }
    let mut summary = Summary {
        tsc_hz: found.iter().find_map(|run| run.result.tsc_hz),
        quantum_clocks,
        backend: plan
            .as_ref()
            .map(|plan| plan.backend.clone())
            .or_else(|| found.first().map(|run| run.result.backend.clone())),
        ..Summary::default()
    };
    let by_id: BTreeMap<&str, &FoundRun> = found
        .iter()
        .map(|run| (run.result.id.as_str(), run))
        .collect();
    // The runs that count, in plan order (or in the order found).
    let mut counted: Vec<PlannedRun> = Vec::new();
    match &plan {
        Some(plan) => {
            for config in &plan.runs {
                counted.push((config.clone(), by_id.get(config.id().as_str()).copied()));
            }
            let extra = found
                .iter()
                .filter(|run| !plan.runs.iter().any(|config| config.id() == run.result.id))
                .count();
            if extra > 0 {
                summary.warnings.push(format!(
                    "{extra} run directories are not in the plan ({PLAN_FILE}); left out"
                ));
            }
        }
        None => {
            for run in found {
                counted.push((run.result.config.clone(), Some(run)));
            }
        }
    }
    // Rows in the order their first run comes (the plan's: workload, weights, policy, quantum).
    let mut rows: Vec<(Point, Vec<PlannedRun>)> = Vec::new();
    for (config, run) in counted {
        summary.runs.push(RunLine {
            id: config.id(),
            status: run.map(|run| run.result.status),
            reason: run.and_then(|run| match &run.figures {
                Ok(_) => None,
                Err(reason) => Some(reason.clone()),
            }),
        });
        let point = config.point();
        match rows.iter_mut().find(|(other, _)| *other == point) {
            Some((_, runs)) => runs.push((config, run)),
            None => rows.push((point, vec![(config, run)])),
        }
    }
    for (point, runs) in rows {
        let mut row = Row {
            point,
            runs: 0,
            failures: Vec::new(),
            stats: BTreeMap::new(),
            units: BTreeMap::new(),
            lab_hashes: Vec::new(),
            commits: Vec::new(),
            knee: false,
        };
        let mut values: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        for (config, run) in &runs {
            let Some(run) = run else {
                row.failures.push(format!("{}: never ran", config.id()));
                continue;
            };
            for (list, value) in [
                (&mut row.lab_hashes, &run.result.lab_hash),
                (&mut row.commits, &run.result.commit),
            ] {
                if !list.contains(value) {
                    list.push(value.clone());
                }
            }
            match &run.figures {
                Ok(figures) => {
                    row.runs += 1;
                    for (name, value) in &figures.values {
                        values.entry(name).or_default().push(*value);
                    }
                    row.units.extend(figures.units.clone());
                }
                Err(reason) => row.failures.push(format!("{}: {reason}", config.id())),
            }
        }
        row.stats = values
            .into_iter()
            .filter_map(|(name, values)| Some((name.to_string(), Stat::of(&values)?)))
            .collect();
        summary.rows.push(row);
    }
    let commits: Vec<&String> = {
        let mut commits: Vec<&String> = summary.rows.iter().flat_map(|row| &row.commits).collect();
        commits.sort();
        commits.dedup();
        commits
    };
    if commits.len() > 1 {
        summary.warnings.push(format!(
            "the runs come from {} commits: {}",
            commits.len(),
            commits
                .iter()
                .map(|commit| commit.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    mark_knees(&mut summary.rows);
    summary.plan = plan;
    summary
}

/// Marks each line's knee: the smallest quantum whose overhead is within
/// [`KNEE_MARGIN_PCT`] percentage points of the largest quantum's.
fn mark_knees(rows: &mut [Row]) {
    let mut lines: BTreeMap<Line, Vec<usize>> = BTreeMap::new();
    for (index, row) in rows.iter().enumerate() {
        if row.mean(figures::OVERHEAD_PCT).is_some() {
            lines.entry(row.point.line()).or_default().push(index);
        }
    }
    for indices in lines.values() {
        let Some(&largest) = indices
            .iter()
            .max_by_key(|&&index| rows[index].point.quantum_us)
        else {
            continue;
        };
        let Some(limit) = rows[largest]
            .mean(figures::OVERHEAD_PCT)
            .map(|overhead| overhead + KNEE_MARGIN_PCT)
        else {
            continue;
        };
        let knee = indices
            .iter()
            .filter(|&&index| {
                rows[index]
                    .mean(figures::OVERHEAD_PCT)
                    .is_some_and(|overhead| overhead <= limit)
            })
            .min_by_key(|&&index| rows[index].point.quantum_us);
        if let Some(&knee) = knee {
            rows[knee].knee = true;
        }
    }
}

impl Summary {
    /// The knee of every line, in row order.
    pub fn knees(&self) -> Vec<(Line, u32)> {
        self.rows
            .iter()
            .filter(|row| row.knee)
            .map(|row| (row.point.line(), row.point.quantum_us))
            .collect()
    }

    /// Runs that gave figures, and runs that did not (failed, interrupted or never ran).
    pub fn counts(&self) -> (usize, usize) {
        let ok = self.rows.iter().map(|row| row.runs).sum();
        let failed = self.rows.iter().map(|row| row.failures.len()).sum();
        (ok, failed)
    }

    /// Every throughput unit any row has, sorted.
    pub fn units(&self) -> Vec<String> {
        self.names_after(figures::THROUGHPUT_TOTAL)
    }

    /// Every VM with a throughput in any row, sorted.
    fn throughput_vms(&self) -> Vec<String> {
        self.names_after(figures::THROUGHPUT_VM)
    }

    /// The task latency figures of every row (steps, scripts, keystrokes), sorted, each once.
    pub(super) fn latency_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .rows
            .iter()
            .flat_map(|row| row.stats.keys())
            .filter(|name| is_latency(name))
            .cloned()
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// The phase figures of every row, sorted, each once.
    fn phase_names(&self) -> Vec<String> {
        self.names_after(figures::PHASE)
            .into_iter()
            .map(|rest| format!("{}{rest}", figures::PHASE))
            .collect()
    }

    /// The STEPS and KEYSTROKE tables of the text form: per configuration, each VM's steps
    /// (mean duration over the repeats and runs, and the range of the runs' means), its whole
    /// script, and its keystroke response p50/p99. Empty when no run timed any.
    fn latency_text(&self) -> String {
        let mut out = String::new();
        let config_cells = |row: &Row| {
            vec![
                row.point.workload.clone(),
                row.point.policy.clone(),
                row.point.weights.clone(),
                quantum_text(row.point.quantum_us),
            ]
        };
        let unit = if self.tsc_hz.is_some() { "µs" } else { "cyc" };
        let mut columns: Vec<(&str, Align)> = vec![
            ("WORKLOAD", Align::Left),
            ("POLICY", Align::Left),
            ("WEIGHTS", Align::Left),
            ("QUANTUM", Align::Right),
            ("VM", Align::Left),
            ("STEP", Align::Left),
            ("COUNT", Align::Right),
        ];
        let mean_header = format!("MEAN {unit}");
        let range_header = format!("MIN..MAX {unit}");
        columns.push((mean_header.as_str(), Align::Right));
        columns.push((range_header.as_str(), Align::Right));
        let mut steps = Table::new(&columns);
        let keys_header = format!("KEYSTROKE p50/p99 {unit}");
        let wait_header = format!("OF IT WAITING p99 {unit}");
        let mut keys = Table::new(&[
            ("WORKLOAD", Align::Left),
            ("POLICY", Align::Left),
            ("WEIGHTS", Align::Left),
            ("QUANTUM", Align::Right),
            ("VM", Align::Left),
            (keys_header.as_str(), Align::Right),
            (wait_header.as_str(), Align::Right),
        ]);
        for row in &self.rows {
            for (name, stat) in &row.stats {
                if let Some((vm, step)) = figures::step_of(name) {
                    let prefix = format!("{}{vm}.{step}.", figures::STEP);
                    let figure = |what: &str| row.mean(&format!("{prefix}{what}"));
                    let mut cells = config_cells(row);
                    cells.extend([
                        vm.to_string(),
                        step.to_string(),
                        figure("count").map_or("-".to_string(), |count| format!("{count:.0}")),
                        self.time_text(Some(stat.mean)),
                        format!(
                            "{}..{}",
                            self.time_text(figure("min_cycles")),
                            self.time_text(figure("max_cycles"))
                        ),
                    ]);
                    steps.push(cells);
                } else if let Some(vm) = name
                    .strip_prefix(figures::SCRIPT)
                    .and_then(|rest| rest.strip_suffix(".cycles"))
                {
                    let mut cells = config_cells(row);
                    cells.extend([
                        vm.to_string(),
                        "(whole script)".to_string(),
                        String::new(),
                        self.time_text(Some(stat.mean)),
                        String::new(),
                    ]);
                    steps.push(cells);
                } else if let Some(vm) = name
                    .strip_prefix(figures::KEYS)
                    .and_then(|rest| rest.strip_suffix(".p50_cycles"))
                {
                    let mut cells = config_cells(row);
                    cells.extend([
                        vm.to_string(),
                        format!(
                            "{}/{}",
                            self.time_text(Some(stat.mean)),
                            self.time_text(row.mean(&format!("{}{vm}.p99_cycles", figures::KEYS)))
                        ),
                        self.time_text(row.mean(&format!("{}{vm}.wait_p99_cycles", figures::KEYS))),
                    ]);
                    keys.push(cells);
                }
            }
        }
        if !steps.rows().is_empty() {
            out.push_str(
                "\nSTEPS per VM (from a send reaching the VM to the next step's line; mean over \
                 repeats, MIN..MAX of a run's repeats)\n",
            );
            out.push_str(&steps.render());
        }
        if !keys.rows().is_empty() {
            out.push_str(
                "\nKEYSTROKE RESPONSE per VM (from input reaching the VM to its next output)\n",
            );
            out.push_str(&keys.render());
        }
        out
    }

    /// The PHASES tables of the text form, for the configurations whose runs changed a setting
    /// while they ran: each phase's start, length, quantum in force, switches per second and
    /// wake latency, then each VM's weight, share of the phase and keystroke response p99 in
    /// it. Empty when no run changed anything.
    fn phase_text(&self) -> String {
        let unit = if self.tsc_hz.is_some() { "µs" } else { "cyc" };
        let config = [
            ("WORKLOAD", Align::Left),
            ("POLICY", Align::Left),
            ("WEIGHTS", Align::Left),
            ("QUANTUM", Align::Right),
            ("PHASE", Align::Right),
        ];
        let wake_header = format!("WAKE p50/p99 {unit}");
        let mut phase_columns = config.to_vec();
        phase_columns.extend([
            ("FROM", Align::Right),
            ("LENGTH", Align::Right),
            ("QUANTUM IN FORCE", Align::Right),
            ("SWITCHES/s", Align::Right),
            (wake_header.as_str(), Align::Right),
        ]);
        let keys_header = format!("KEYSTROKE p99 {unit}");
        let mut vm_columns = config.to_vec();
        vm_columns.extend([
            ("VM", Align::Left),
            ("WEIGHT", Align::Right),
            ("SHARE %", Align::Right),
            (keys_header.as_str(), Align::Right),
        ]);
        let mut phases = Table::new(&phase_columns);
        let mut shares = Table::new(&vm_columns);
        let vms = self.names_after(figures::PHASE);
        for row in &self.rows {
            for index in 0.. {
                let prefix = format!("{}{index}.", figures::PHASE);
                let figure = |what: &str| row.mean(&format!("{prefix}{what}"));
                let Some(from) = figure("from_cycles") else {
                    break;
                };
                let cells = vec![
                    row.point.workload.clone(),
                    row.point.policy.clone(),
                    row.point.weights.clone(),
                    quantum_text(row.point.quantum_us),
                    index.to_string(),
                ];
                let mut phase = cells.clone();
                phase.extend([
                    self.duration_text(from),
                    self.duration_text(figure("cycles").unwrap_or(0.0)),
                    figure("quantum_us").map_or("-".to_string(), |us| quantum_text(us as u32)),
                    figure("switches_per_s").map_or("-".to_string(), |rate| format!("{rate:.0}")),
                    format!(
                        "{}/{}",
                        self.time_text(figure("wake_p50_cycles")),
                        self.time_text(figure("wake_p99_cycles"))
                    ),
                ]);
                phases.push(phase);
                let share_prefix = format!("{index}.share.");
                for vm in vms
                    .iter()
                    .filter_map(|name| name.strip_prefix(&share_prefix))
                {
                    let mut line = cells.clone();
                    line.extend([
                        vm.to_string(),
                        figure(&format!("weight.{vm}"))
                            .map_or("-".to_string(), |weight| format!("{weight:.0}")),
                        figure(&format!("share.{vm}"))
                            .map_or("-".to_string(), |share| format!("{share:.1}")),
                        self.time_text(figure(&format!("keys.{vm}.p99_cycles"))),
                    ]);
                    shares.push(line);
                }
            }
        }
        if phases.rows().is_empty() {
            return String::new();
        }
        let mut out = String::from(
            "\nPHASES within runs (each run cut at its setting changes; a wake counts in the \
             phase its wait began, a keystroke in the phase of its input)\n",
        );
        out.push_str(&phases.render());
        out.push_str("\nPHASE SHARES per VM (of each phase's cycles)\n");
        out.push_str(&shares.render());
        out
    }

    /// The SHARED DISK table of the text form, for configurations whose disk was timed: each
    /// VM's requests and sectors a second, its queue wait p99 and the share of the run it sat
    /// blocked on its disk. Empty when no run's disk was timed.
    fn disk_text(&self) -> String {
        let unit = if self.tsc_hz.is_some() { "µs" } else { "cyc" };
        let wait_header = format!("WAIT p99 {unit}");
        let mut table = Table::new(&[
            ("WORKLOAD", Align::Left),
            ("POLICY", Align::Left),
            ("WEIGHTS", Align::Left),
            ("QUANTUM", Align::Right),
            ("VM", Align::Left),
            ("REQUESTS/s", Align::Right),
            ("SECTORS/s", Align::Right),
            (wait_header.as_str(), Align::Right),
            ("BLOCKED ON DISK %", Align::Right),
        ]);
        let vms: Vec<String> = self
            .names_after(figures::DISK)
            .into_iter()
            .filter_map(|rest| rest.strip_suffix(".wait_p99_cycles").map(str::to_string))
            .collect();
        for row in &self.rows {
            for vm in &vms {
                let figure = |what: &str| row.mean(&format!("{}{vm}.{what}", figures::DISK));
                let Some(wait) = figure("wait_p99_cycles") else {
                    continue;
                };
                let rate =
                    |value: Option<f64>| value.map_or("-".to_string(), |v| format!("{v:.0}"));
                table.push(vec![
                    row.point.workload.clone(),
                    row.point.policy.clone(),
                    row.point.weights.clone(),
                    quantum_text(row.point.quantum_us),
                    vm.clone(),
                    rate(figure("requests_per_s")),
                    rate(figure("sectors_per_s")),
                    self.time_text(Some(wait)),
                    figure("blocked_pct").map_or("-".to_string(), |pct| format!("{pct:.1}")),
                ]);
            }
        }
        if table.rows().is_empty() {
            return String::new();
        }
        format!(
            "\nSHARED DISK per VM (its requests through the timed disk's queue)\n{}",
            table.render()
        )
    }

    /// `cycles` of TSC time as milliseconds when the TSC frequency is known, else cycles.
    fn duration_text(&self, cycles: f64) -> String {
        match self.tsc_hz {
            Some(hz) => format!("{:.1} ms", cycles * 1_000.0 / hz as f64),
            None => format!("{cycles:.0} cyc"),
        }
    }

    /// What follows `prefix` in the figure names of every row, sorted, each once.
    fn names_after(&self, prefix: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .rows
            .iter()
            .flat_map(|row| row.stats.keys())
            .filter_map(|name| name.strip_prefix(prefix))
            .map(str::to_string)
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Cycles as microseconds at the runs' TSC frequency (or cycles when it is unknown).
    fn time_text(&self, cycles: Option<f64>) -> String {
        match (cycles, self.tsc_hz) {
            (None, _) => "-".to_string(),
            (Some(cycles), Some(hz)) => format!("{:.1}", cycles * 1e6 / hz as f64),
            (Some(cycles), None) => format!("{cycles:.0}"),
        }
    }

    /// The first lines of every form: the lab, its hash, the commit, the backend.
    fn header(&self) -> String {
        let (ok, failed) = self.counts();
        let mut out = String::new();
        match &self.plan {
            Some(plan) => {
                let _ = writeln!(
                    out,
                    "carousel sweep: {} (lab hash {}, commit {}), {}",
                    plan.lab, plan.lab_hash, plan.commit, plan.backend
                );
            }
            None => {
                let _ = writeln!(out, "carousel sweep (collected, no plan)");
            }
        }
        let _ = writeln!(
            out,
            "{} configurations, {ok} runs measured, {failed} not{}{}",
            self.rows.len(),
            self.tsc_hz
                .map(|hz| format!("; TSC {} Hz (times in µs)", group(hz)))
                .unwrap_or_default(),
            match self.quantum_clocks.as_slice() {
                [] => String::new(),
                [clock] => format!("; quanta on the {clock} clock"),
                clocks => format!(
                    "; quanta on the {} clocks (runs differ)",
                    clocks.join(" and ")
                ),
            }
        );
        out
    }

    /// The text table (`summary.txt`).
    pub fn text(&self) -> String {
        let mut out = self.header();
        out.push('\n');
        let time_unit = if self.tsc_hz.is_some() { "µs" } else { "cyc" };
        let wake = format!("WAKE p50/p99 {time_unit}");
        let response = format!("RESPONSE p50/p99 {time_unit}");
        let lag = format!("TIMER LAG max {time_unit}");
        let units = self.units();
        let unit_headers: Vec<String> = units.iter().map(|unit| format!("{unit}/s")).collect();
        let mut columns: Vec<(&str, Align)> = vec![
            ("WORKLOAD", Align::Left),
            ("POLICY", Align::Left),
            ("WEIGHTS", Align::Left),
            ("QUANTUM", Align::Right),
            ("RUNS", Align::Right),
            ("OVERHEAD %", Align::Right),
            ("SWITCHES/s", Align::Right),
            ("JAIN", Align::Right),
            (wake.as_str(), Align::Right),
            (response.as_str(), Align::Right),
            (lag.as_str(), Align::Right),
        ];
        columns.extend(
            unit_headers
                .iter()
                .map(|unit| (unit.as_str(), Align::Right)),
        );
        let mut table = Table::new(&columns);
        for row in &self.rows {
            let stat = |name: &str| row.stats.get(name);
            let number = |name: &str, decimals: usize| match stat(name) {
                None => "-".to_string(),
                Some(stat) if stat.count > 1 && stat.max > stat.min => format!(
                    "{:.decimals$}±{:.decimals$}",
                    stat.mean,
                    (stat.max - stat.min) / 2.0
                ),
                Some(stat) => format!("{:.decimals$}", stat.mean),
            };
            let pair = |low: &str, high: &str| {
                format!(
                    "{}/{}",
                    self.time_text(row.mean(low)),
                    self.time_text(row.mean(high))
                )
            };
            let mut cells = vec![
                row.point.workload.clone(),
                row.point.policy.clone(),
                row.point.weights.clone(),
                format!(
                    "{}{}",
                    quantum_text(row.point.quantum_us),
                    if row.knee { " *" } else { "" }
                ),
                if row.failures.is_empty() {
                    row.runs.to_string()
                } else {
                    format!("{} ({} failed)", row.runs, row.failures.len())
                },
                number(figures::OVERHEAD_PCT, 3),
                number(figures::SWITCHES_PER_S, 0),
                number(figures::JAIN, 4),
                pair(figures::WAKE_P50, figures::WAKE_P99),
                pair(figures::RESPONSE_P50, figures::RESPONSE_P99),
                self.time_text(row.mean(figures::TIMER_LAG_MAX)),
            ];
            for unit in &units {
                cells.push(number(&format!("{}{unit}", figures::THROUGHPUT_TOTAL), 0));
            }
            table.push(cells);
        }
        out.push_str(&table.render());
        let _ = writeln!(
            out,
            "\n* knee: the smallest quantum whose overhead is within {KNEE_MARGIN_PCT} percentage \
             point of the largest quantum's (per workload, policy and weights)"
        );
        let _ = writeln!(
            out,
            "WAKE: the hypervisor's wake-to-run latency of the interactive and unmodified \
             guests (worst VM); RESPONSE: the guests' own response times; throughput: the \
             guests' progress counters, summed per unit"
        );
        let vms = self.throughput_vms();
        if !vms.is_empty() {
            out.push_str("\nTHROUGHPUT per VM (per second of TSC time)\n");
            let mut columns: Vec<(&str, Align)> = vec![
                ("WORKLOAD", Align::Left),
                ("POLICY", Align::Left),
                ("WEIGHTS", Align::Left),
                ("QUANTUM", Align::Right),
            ];
            let headers: Vec<String> = vms
                .iter()
                .map(|vm| {
                    let unit = self
                        .rows
                        .iter()
                        .find_map(|row| row.units.get(&format!("{}{vm}", figures::THROUGHPUT_VM)))
                        .cloned()
                        .unwrap_or_default();
                    format!("{vm} {unit}")
                })
                .collect();
            columns.extend(headers.iter().map(|header| (header.as_str(), Align::Right)));
            let mut table = Table::new(&columns);
            for row in &self.rows {
                let mut cells = vec![
                    row.point.workload.clone(),
                    row.point.policy.clone(),
                    row.point.weights.clone(),
                    quantum_text(row.point.quantum_us),
                ];
                for vm in &vms {
                    cells.push(
                        row.mean(&format!("{}{vm}", figures::THROUGHPUT_VM))
                            .map_or("-".to_string(), |rate| format!("{rate:.0}")),
                    );
                }
                table.push(cells);
            }
            out.push_str(&table.render());
        }
        out.push_str(&self.latency_text());
        out.push_str(&self.phase_text());
        out.push_str(&self.disk_text());
        let failures: Vec<&String> = self.rows.iter().flat_map(|row| &row.failures).collect();
        if !failures.is_empty() {
            out.push_str("\nRUNS WITHOUT FIGURES\n");
            for failure in failures {
                let _ = writeln!(out, "  {}", escape::message(failure));
            }
        }
        for warning in &self.warnings {
            let _ = writeln!(out, "warning: {}", escape::message(warning));
        }
        out
    }

    /// The CSV form (`summary.csv`): one line per configuration, the means.
    pub fn csv(&self) -> String {
        let fixed = [
            figures::OVERHEAD_PCT,
            figures::IDLE_PCT,
            figures::JAIN,
            figures::JAIN_CPU,
            figures::SWITCHES_PER_S,
            figures::WAKE_P50,
            figures::WAKE_P99,
            figures::RESPONSE_P50,
            figures::RESPONSE_P99,
            figures::TIMER_LAG_MEAN,
            figures::TIMER_LAG_MAX,
            figures::ELAPSED,
        ];
        let dynamic: Vec<String> = self
            .units()
            .iter()
            .map(|unit| format!("{}{unit}", figures::THROUGHPUT_TOTAL))
            .chain(
                self.throughput_vms()
                    .iter()
                    .map(|vm| format!("{}{vm}", figures::THROUGHPUT_VM)),
            )
            .chain(self.latency_names())
            .chain(self.phase_names())
            .chain(
                self.names_after(figures::DISK)
                    .into_iter()
                    .map(|rest| format!("{}{rest}", figures::DISK)),
            )
            .collect();
        let names: Vec<&str> = fixed
            .iter()
            .copied()
            .chain(dynamic.iter().map(String::as_str))
            .collect();
        let mut header: Vec<String> = [
            "workload",
            "policy",
            "weights",
            "quantum_us",
            "runs",
            "failed",
            "knee",
        ]
        .map(String::from)
        .to_vec();
        header.extend(
            names
                .iter()
                .map(|name| name.replace('.', "_").replace('/', "_per_")),
        );
        let mut lines = vec![header];
        for row in &self.rows {
            let mut cells = vec![
                row.point.workload.clone(),
                row.point.policy.clone(),
                row.point.weights.clone(),
                row.point.quantum_us.to_string(),
                row.runs.to_string(),
                row.failures.len().to_string(),
                u8::from(row.knee).to_string(),
            ];
            cells.extend(names.iter().map(|name| {
                row.mean(name)
                    .map_or(String::new(), |value| value.to_string())
            }));
            lines.push(cells);
        }
        write_csv(lines)
    }

    /// The JSON form (`summary.json`): `rows`, one per configuration, plus the plan, the knees
    /// and every run's status.
    pub fn json(&self) -> Value {
        let (ok, failed) = self.counts();
        let summary = SummaryJson {
            lab: self.plan.as_ref().map(|plan| plan.lab.clone()),
            lab_hash: self.plan.as_ref().map(|plan| plan.lab_hash.clone()),
            commit: self.plan.as_ref().map(|plan| plan.commit.clone()),
            backend: self.backend.clone(),
            tsc_hz: self.tsc_hz,
            quantum_clocks: self.quantum_clocks.clone(),
            knee_margin_pct: KNEE_MARGIN_PCT,
            runs_measured: ok,
            runs_failed: failed,
            rows: self.rows.iter().map(RowJson::of).collect(),
            knees: self
                .knees()
                .into_iter()
                .map(|(line, quantum_us)| KneeJson {
                    workload: line.workload,
                    policy: line.policy,
                    weights: line.weights,
                    quantum_us,
                })
                .collect(),
            runs: self
                .runs
                .iter()
                .map(|run| RunJson {
                    id: run.id.clone(),
                    status: match run.status {
                        Some(status) => RunStatus::Ran(status),
                        None => RunStatus::NotRun("not run"),
                    },
                    reason: run.reason.clone(),
                })
                .collect(),
            warnings: self.warnings.clone(),
        };
        serde_json::to_value(&summary).expect("a summary of numbers and strings")
    }
}

/// True for a task latency figure (a step, a whole script, a keystroke response).
fn is_latency(name: &str) -> bool {
    [figures::STEP, figures::SCRIPT, figures::KEYS]
        .iter()
        .any(|prefix| name.starts_with(prefix))
}

/// True for a figure of the shared disk's queue ([`figures::DISK`]).
fn is_disk(name: &str) -> bool {
    name.starts_with(figures::DISK)
}

/// True for a figure of one phase of a run ([`figures::PHASE`]).
fn is_phase(name: &str) -> bool {
    name.starts_with(figures::PHASE)
}

/// `lines` (the header first) as CSV.
fn write_csv(lines: Vec<Vec<String>>) -> String {
    let mut writer = csv::Writer::from_writer(Vec::new());
    for line in lines {
        writer
            .write_record(&line)
            .expect("a Vec takes every record");
    }
    String::from_utf8(writer.into_inner().expect("a Vec takes every byte"))
        .expect("records of UTF-8 strings")
}

/// `summary.json`.
#[derive(Debug, Serialize)]
struct SummaryJson {
    lab: Option<String>,
    lab_hash: Option<String>,
    commit: Option<String>,
    backend: Option<String>,
    tsc_hz: Option<u64>,
    quantum_clocks: Vec<String>,
    knee_margin_pct: f64,
    runs_measured: usize,
    runs_failed: usize,
    rows: Vec<RowJson>,
    knees: Vec<KneeJson>,
    runs: Vec<RunJson>,
    warnings: Vec<String>,
}

/// One line's knee.
#[derive(Debug, Serialize)]
struct KneeJson {
    workload: String,
    policy: String,
    weights: String,
    quantum_us: u32,
}

/// One run and how it ended.
#[derive(Debug, Serialize)]
struct RunJson {
    id: String,
    status: RunStatus,
    reason: Option<String>,
}

/// A run's status, or `"not run"`.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum RunStatus {
    Ran(Status),
    NotRun(&'static str),
}

/// One row: the figures the issue names at the top level, then the nested ones.
#[derive(Debug, Serialize)]
struct RowJson {
    workload: String,
    policy: String,
    weights: String,
    quantum_us: u32,
    runs: usize,
    failed: usize,
    failures: Vec<String>,
    knee: bool,
    overhead_pct: Option<f64>,
    idle_pct: Option<f64>,
    jain: Option<f64>,
    jain_cpu: Option<f64>,
    switches_per_s: Option<f64>,
    wake_p50_cycles: Option<f64>,
    wake_p99_cycles: Option<f64>,
    /// Wake latency per class: class → figure → mean.
    wake: BTreeMap<String, BTreeMap<String, f64>>,
    response_p50_cycles: Option<f64>,
    response_p99_cycles: Option<f64>,
    timer_lag_mean_cycles: Option<f64>,
    timer_lag_max_cycles: Option<f64>,
    elapsed_cycles: Option<f64>,
    throughput: ThroughputJson,
    /// Task latencies by figure name (`step.VM.STEP.mean_cycles`, `script.VM.cycles`,
    /// `keys.VM.p99_cycles`...): means over the runs.
    latencies: BTreeMap<String, f64>,
    /// Figures of each phase of runs that changed a setting while they ran
    /// (`phase.K.switches_per_s`, `phase.K.share.VM`...): means over the runs.
    phases: BTreeMap<String, f64>,
    /// The shared disk's figures per VM (`disk.VM.requests_per_s`, `disk.VM.wait_p99_cycles`,
    /// ...): means over the runs.
    disk: BTreeMap<String, f64>,
    /// Per figure, with repeats: min and max over the runs.
    spread: BTreeMap<String, SpreadJson>,
    lab_hash: String,
    commit: String,
}

/// Throughput per VM (with the counter's unit) and per unit over all VMs.
#[derive(Debug, Serialize)]
struct ThroughputJson {
    vms: BTreeMap<String, VmThroughputJson>,
    aggregate: BTreeMap<String, f64>,
}

#[derive(Debug, Serialize)]
struct VmThroughputJson {
    per_s: f64,
    unit: Option<String>,
}

#[derive(Debug, Serialize)]
struct SpreadJson {
    min: f64,
    max: f64,
}

impl RowJson {
    fn of(row: &Row) -> Self {
        let mean = |name: &str| row.mean(name);
        let mut wake: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
        let mut vms = BTreeMap::new();
        let mut aggregate = BTreeMap::new();
        let mut spread = BTreeMap::new();
        for (name, stat) in &row.stats {
            if let Some((class, figure)) = name
                .strip_prefix(figures::WAKE_CLASS)
                .and_then(|rest| rest.split_once('.'))
            {
                wake.entry(class.to_string())
                    .or_default()
                    .insert(figure.to_string(), stat.mean);
            }
            if let Some(vm) = name.strip_prefix(figures::THROUGHPUT_VM) {
                vms.insert(
                    vm.to_string(),
                    VmThroughputJson {
                        per_s: stat.mean,
                        unit: row.units.get(name).cloned(),
                    },
                );
            } else if let Some(unit) = name.strip_prefix(figures::THROUGHPUT_TOTAL) {
                aggregate.insert(format!("{unit}/s"), stat.mean);
            }
            if row.runs > 1 {
                spread.insert(
                    name.clone(),
                    SpreadJson {
                        min: stat.min,
                        max: stat.max,
                    },
                );
            }
        }
        RowJson {
            workload: row.point.workload.clone(),
            policy: row.point.policy.clone(),
            weights: row.point.weights.clone(),
            quantum_us: row.point.quantum_us,
            runs: row.runs,
            failed: row.failures.len(),
            failures: row.failures.clone(),
            knee: row.knee,
            overhead_pct: mean(figures::OVERHEAD_PCT),
            idle_pct: mean(figures::IDLE_PCT),
            jain: mean(figures::JAIN),
            jain_cpu: mean(figures::JAIN_CPU),
            switches_per_s: mean(figures::SWITCHES_PER_S),
            wake_p50_cycles: mean(figures::WAKE_P50),
            wake_p99_cycles: mean(figures::WAKE_P99),
            wake,
            response_p50_cycles: mean(figures::RESPONSE_P50),
            response_p99_cycles: mean(figures::RESPONSE_P99),
            timer_lag_mean_cycles: mean(figures::TIMER_LAG_MEAN),
            timer_lag_max_cycles: mean(figures::TIMER_LAG_MAX),
            elapsed_cycles: mean(figures::ELAPSED),
            throughput: ThroughputJson { vms, aggregate },
            latencies: row
                .stats
                .iter()
                .filter(|(name, _)| is_latency(name))
                .map(|(name, stat)| (name.clone(), stat.mean))
                .collect(),
            phases: row
                .stats
                .iter()
                .filter(|(name, _)| is_phase(name))
                .map(|(name, stat)| (name.clone(), stat.mean))
                .collect(),
            disk: row
                .stats
                .iter()
                .filter(|(name, _)| is_disk(name))
                .map(|(name, stat)| (name.clone(), stat.mean))
                .collect(),
            spread,
            lab_hash: row.lab_hashes.join(","),
            commit: row.commits.join(","),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::figures::Class;

    fn config(workload: &str, policy: &str, quantum_us: u32, repeat: u32) -> Config {
        Config {
            workload: workload.into(),
            weights: "lab".into(),
            policy: policy.into(),
            quantum_us,
            repeat,
        }
    }

    fn found(config: Config, figures: Result<&[(&str, f64)], &str>) -> FoundRun {
        FoundRun {
            result: RunResult {
                id: config.id(),
                config,
                lab: "lab.toml".into(),
                lab_hash: "0x7".into(),
                commit: "abc".into(),
                backend: "bochs".into(),
                status: if figures.is_ok() {
                    Status::Ok
                } else {
                    Status::Failed
                },
                reason: figures.err().map(str::to_string),
                exit_code: 0,
                wall_s: 1.0,
                tsc_hz: Some(1_000_000),
                quantum_clock: Some("wall".into()),
                vms: vec![VmInfo {
                    name: "s".into(),
                    kernel: "spin".into(),
                    class: Class::Cpu,
                    weight: 1,
                }],
            },
            figures: figures
                .map(|values| Figures {
                    values: values
                        .iter()
                        .map(|(name, value)| (name.to_string(), *value))
                        .collect(),
                    units: [("throughput.vm.s".to_string(), "iterations".to_string())]
                        .into_iter()
                        .collect(),
                })
                .map_err(str::to_string),
        }
    }

    fn overhead(value: f64) -> Vec<(&'static str, f64)> {
        vec![
            (figures::OVERHEAD_PCT, value),
            (figures::WAKE_P99, value * 1_000.0),
            ("throughput.vm.s", 100.0),
            ("throughput.total.iterations", 100.0),
        ]
    }

    #[test]
    fn steps_and_keystrokes_are_summarized_per_vm_and_label() {
        // At 1 MHz a cycle is a microsecond.
        let run = |mean: f64, p99: f64| {
            vec![
                ("step.sh.echo.mean_cycles", mean),
                ("step.sh.echo.min_cycles", mean - 10.0),
                ("step.sh.echo.max_cycles", mean + 10.0),
                ("step.sh.echo.count", 50.0),
                ("script.sh.cycles", mean * 50.0),
                ("keys.sh.p50_cycles", 7.0),
                ("keys.sh.p99_cycles", p99),
                ("keys.sh.wait_p99_cycles", p99 / 2.0),
            ]
        };
        let runs = vec![
            found(config("w", "boost", 1_000, 1), Ok(&run(100.0, 20.0))),
            found(config("w", "boost", 1_000, 2), Ok(&run(200.0, 40.0))),
        ];
        let summary = summarize(None, &runs);
        let text = summary.text();
        let echo = text
            .lines()
            .find(|line| line.contains(" sh ") && line.contains("echo"))
            .unwrap_or_else(|| panic!("a step line\n{text}"));
        let cells: Vec<&str> = echo.split_whitespace().collect();
        assert_eq!(
            cells[4..],
            ["sh", "echo", "50", "150.0", "140.0..160.0"],
            "{text}"
        );
        assert!(
            text.contains("(whole script)") && text.contains("7500.0"),
            "{text}"
        );
        let keys = text
            .lines()
            .find(|line| line.contains("7.0/30.0"))
            .unwrap_or_else(|| panic!("a keystroke line\n{text}"));
        assert!(keys.contains(" sh "), "{text}");
        // The waiting part of it, p99 (mean of 10 and 20).
        assert!(keys.trim_end().ends_with(" 15.0"), "{keys}");

        let csv = summary.csv();
        let header = csv.lines().next().unwrap();
        assert!(header.contains("step_sh_echo_mean_cycles"), "{header}");
        assert!(header.contains("keys_sh_p99_cycles"), "{header}");
        let json = summary.json();
        assert_eq!(
            json["rows"][0]["latencies"]["step.sh.echo.mean_cycles"],
            150.0
        );
        assert_eq!(json["rows"][0]["latencies"]["keys.sh.p99_cycles"], 30.0);
        assert_eq!(
            json["rows"][0]["spread"]["step.sh.echo.mean_cycles"]["max"],
            200.0
        );
    }

    #[test]
    fn the_knee_is_the_smallest_quantum_within_a_point_of_the_largest() {
        let runs: Vec<FoundRun> = [(500, 4.0), (1_000, 2.5), (2_000, 1.9), (5_000, 1.2)]
            .into_iter()
            .map(|(quantum, value)| {
                found(config("w", "round-robin", quantum, 1), Ok(&overhead(value)))
            })
            .collect();
        let summary = summarize(None, &runs);
        assert_eq!(summary.rows.len(), 4);
        let knees = summary.knees();
        assert_eq!(knees.len(), 1);
        assert_eq!(
            knees[0].1, 2_000,
            "1.9 is within 1 point of 1.2; 2.5 is not"
        );
        let json = summary.json();
        assert_eq!(json["rows"][2]["knee"], true);
        assert_eq!(json["knees"][0]["quantum_us"], 2_000);
    }

    #[test]
    fn repeats_average_and_keep_their_spread_and_failures_are_listed() {
        let runs = vec![
            found(config("w", "boost", 1_000, 1), Ok(&overhead(2.0))),
            found(config("w", "boost", 1_000, 2), Ok(&overhead(4.0))),
            found(
                config("w", "boost", 1_000, 3),
                Err("vm s: exited with failure (0x11)"),
            ),
        ];
        let summary = summarize(None, &runs);
        assert_eq!(summary.rows.len(), 1);
        let row = &summary.rows[0];
        assert_eq!(row.runs, 2);
        assert_eq!(row.failures.len(), 1);
        assert!(row.failures[0].contains("exited with failure"));
        let stat = row.stats[figures::OVERHEAD_PCT];
        assert_eq!(
            (stat.mean, stat.min, stat.max, stat.count),
            (3.0, 2.0, 4.0, 2)
        );
        let json = summary.json();
        let row = &json["rows"][0];
        assert_eq!(row["overhead_pct"], 3.0);
        assert_eq!(row["wake_p99_cycles"], 3_000.0);
        assert_eq!(row["spread"]["overhead_pct"]["max"], 4.0);
        assert_eq!(row["throughput"]["vms"]["s"]["unit"], "iterations");
        assert_eq!(row["throughput"]["aggregate"]["iterations/s"], 100.0);
        assert_eq!(row["lab_hash"], "0x7");
        assert_eq!(row["commit"], "abc");
        assert_eq!(json["runs"][2]["status"], "failed");
        assert_eq!(json["quantum_clocks"][0], "wall");
        let text = summary.text();
        assert!(text.contains("quanta on the wall clock"), "{text}");
        assert!(text.contains("3.000±1.000"), "{text}");
        assert!(text.contains("2 (1 failed)"), "{text}");
        assert!(text.contains("RUNS WITHOUT FIGURES"), "{text}");
        // 3,000 cycles at 1 MHz.
        assert!(text.contains("3000.0"), "{text}");
    }

    #[test]
    fn a_plan_shows_runs_that_never_ran() {
        let configs = vec![
            config("w", "round-robin", 500, 1),
            config("w", "round-robin", 1_000, 1),
        ];
        let plan = Plan {
            lab: "lab.toml".into(),
            lab_hash: "0x7".into(),
            commit: "abc".into(),
            backend: "bochs".into(),
            quanta: vec!["500us".into(), "1ms".into()],
            policies: vec!["round-robin".into()],
            weights: vec!["lab".into()],
            workloads: vec!["w".into()],
            repeat: 1,
            runs: configs.clone(),
        };
        let runs = vec![found(configs[0].clone(), Ok(&overhead(1.0)))];
        let summary = summarize(Some(plan), &runs);
        assert_eq!(summary.rows.len(), 2);
        assert_eq!(summary.rows[1].runs, 0);
        assert_eq!(
            summary.rows[1].failures,
            vec!["w.round-robin.w-lab.q1ms.r1: never ran"]
        );
        assert_eq!(summary.json()["runs"][1]["status"], "not run");
        assert!(summary
            .text()
            .starts_with("carousel sweep: lab.toml (lab hash 0x7, commit abc), bochs"));
    }

    #[test]
    fn csv_has_a_line_per_configuration() {
        let runs = vec![
            found(config("w", "round-robin", 500, 1), Ok(&overhead(2.0))),
            found(config("w", "round-robin", 1_000, 1), Ok(&overhead(1.5))),
        ];
        let csv = summarize(None, &runs).csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0]
            .starts_with("workload,policy,weights,quantum_us,runs,failed,knee,overhead_pct,"));
        assert!(
            lines[0].ends_with(",throughput_total_iterations,throughput_vm_s"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].starts_with("w,round-robin,lab,500,1,0,1,2,"),
            "{}",
            lines[1]
        );
        let columns = lines[0].split(',').count();
        assert!(lines.iter().all(|line| line.split(',').count() == columns));
    }

    /// Two spins at 1 MHz take turns in slices of 1,000 cycles; at 8,000 the quantum becomes
    /// 4,000 (a scheduled change), and they go on to 24,000. The run's figures are cut there:
    /// phase 0 has four times the switches per second of phase 1, each phase names the quantum
    /// in force, and the text, CSV and JSON show the phases.
    #[test]
    fn a_run_that_changed_its_quantum_is_compared_phase_by_phase() {
        use carousel_protocol::config::Setting;
        use carousel_protocol::record::{
            ChangeSource, Event, Record, RunSummary, SliceEnd, TraceLevel, TscSource, VmSummary,
        };
        use carousel_trace::decode::encode_trace;

        let slices = |from: u64, to: u64, length: u64| {
            let mut events = Vec::new();
            let mut vm = 0;
            let mut at = from;
            while at < to {
                events.push(Event::Run { dt: 0, vm });
                events.push(Event::Descheduled {
                    dt: length,
                    vm,
                    why: SliceEnd::Preempted,
                });
                vm = 1 - vm;
                at += length;
            }
            Record::Events { tsc: from, events }
        };
        let summary = |vm| {
            Record::VmSummary(VmSummary {
                vm,
                running: 12_000,
                runnable: 12_000,
                blocked: 0,
                stopped: 0,
                guest: 12_000,
                root: 0,
                slices: 8,
                preemptions: 8,
                yields: 0,
                wakes: 0,
                wake_p50: 0,
                wake_p95: 0,
                wake_p99: 0,
                wake_max: 0,
                quantum_error_median_ppm: 0,
                quantum_error_max_ppm: 0,
                blocked_console: 0,
                blocked_records: 0,
                guest_records_dropped: 0,
            })
        };
        let records = vec![
            Record::Hello {
                version: 1,
                lab_hash: 7,
                tsc_hz: 1_000_000,
                tsc_source: TscSource::LabFile,
                preemption_timer_rate: 0,
                cpu: "test".into(),
                vms: vec!["a".into(), "b".into()],
                commit: "abc".into(),
                level: TraceLevel::Switches,
                weights: Vec::new(),
                quantum_clock: carousel_protocol::config::QuantumClock::Wall,
            },
            slices(0, 8_000, 1_000),
            Record::SettingChanged {
                tsc: 8_000,
                setting: Setting::Quantum { us: 4_000 },
                source: ChangeSource::Lab,
            },
            slices(8_000, 24_000, 4_000),
            Record::RunEnd { tsc: 24_000 },
            summary(0),
            summary(1),
            Record::RunSummary(RunSummary {
                policy: "round-robin".into(),
                quantum_cycles: 1_000,
                elapsed: 24_000,
                root: 0,
                idle: 0,
                switch_median: 1,
                switch_max: 1,
                switches: 12,
                dropped_records: 0,
            }),
        ];
        let mut run = found(config("w", "round-robin", 1_000, 1), Ok(&[]));
        run.result.vms = ["a", "b"]
            .map(|name| VmInfo {
                name: name.into(),
                kernel: "spin".into(),
                class: Class::Cpu,
                weight: 1,
            })
            .to_vec();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(RESULT_FILE),
            serde_json::to_string(&run.result).unwrap(),
        )
        .unwrap();
        std::fs::write(dir.path().join(TRACE_FILE), encode_trace(records)).unwrap();
        let read = read_run(dir.path()).unwrap();
        let figures = read.figures.clone().expect("the run has figures");
        let get = |name: &str| figures.get(name).unwrap_or_else(|| panic!("no {name}"));
        assert_eq!(get("phase.0.from_cycles"), 0.0);
        assert_eq!(get("phase.1.from_cycles"), 8_000.0);
        assert_eq!(get("phase.0.quantum_us"), 1_000.0);
        assert_eq!(get("phase.1.quantum_us"), 4_000.0);
        // 8 slices in 8,000 cycles, then 4 in 16,000: 1,000 and 250 a second at 1 MHz.
        assert_eq!(get("phase.0.switches_per_s"), 1_000.0);
        assert_eq!(get("phase.1.switches_per_s"), 250.0);
        assert_eq!(get("phase.0.share.a"), 50.0);
        assert_eq!(get("phase.1.share.b"), 50.0);
        assert!(figures.get("phase.2.from_cycles").is_none());

        let summary = summarize(None, &[read]);
        let text = summary.text();
        assert!(text.contains("PHASES within runs"), "{text}");
        let phase_line = text
            .lines()
            .find(|line| line.contains("8.0 ms") && line.contains("4ms"))
            .unwrap_or_else(|| panic!("phase 1 from 8 ms at 4 ms: {text}"));
        assert!(phase_line.contains("250"), "{phase_line}");
        assert!(summary.csv().contains("phase_1_switches_per_s"));
        assert_eq!(
            summary.json()["rows"][0]["phases"]["phase.1.quantum_us"],
            4_000.0
        );
    }

    /// A run whose disk was timed shows its per-VM disk figures in the SHARED DISK table, the
    /// CSV and the JSON; one without shows no such table.
    #[test]
    fn disk_figures_are_summarized_per_vm() {
        let mut values = overhead(3.0);
        values.extend([
            ("disk.d.requests_per_s", 150.0),
            ("disk.d.sectors_per_s", 300.0),
            ("disk.d.wait_p99_cycles", 4_000_000.0),
            ("disk.d.blocked_pct", 25.0),
        ]);
        let summary = summarize(
            None,
            &[found(config("w", "round-robin", 500, 1), Ok(&values))],
        );
        let text = summary.text();
        let line = text
            .lines()
            .skip_while(|line| !line.starts_with("SHARED DISK per VM"))
            .find(|line| line.starts_with("w "))
            .unwrap_or_else(|| panic!("no row: {text}"));
        assert!(line.contains(" 150 ") && line.contains(" 300 "), "{line}");
        // 4,000,000 cycles at 1 MHz: 4,000,000 µs.
        assert!(
            line.contains(" 4000000.0 ") && line.ends_with("25.0"),
            "{line}"
        );
        assert!(summary.csv().contains("disk_d_wait_p99_cycles"));
        assert_eq!(
            summary.json()["rows"][0]["disk"]["disk.d.blocked_pct"],
            25.0
        );
        let plain = summarize(
            None,
            &[found(
                config("w", "round-robin", 500, 1),
                Ok(&overhead(3.0)),
            )],
        );
        assert!(!plain.text().contains("SHARED DISK"));
    }

    /// A run that changed nothing has no phase figures and no PHASES table.
    #[test]
    fn a_run_without_changes_has_no_phases() {
        let summary = summarize(
            None,
            &[found(
                config("w", "round-robin", 500, 1),
                Ok(&overhead(3.0)),
            )],
        );
        assert!(!summary.text().contains("PHASES"));
        assert!(!summary.csv().contains("phase_"));
    }

    #[test]
    fn collect_reads_result_files_and_refuses_an_empty_directory() {
        let dir = tempfile::tempdir().unwrap();
        let error = collect(dir.path()).unwrap_err();
        assert!(error.contains("holds no sweep"), "{error}");
        let run = found(config("w", "round-robin", 500, 1), Err("the emulator died"));
        let run_dir = dir.path().join(RUNS_DIR).join(&run.result.id);
        std::fs::create_dir_all(&run_dir).unwrap();
        std::fs::write(
            run_dir.join(RESULT_FILE),
            serde_json::to_string(&run.result).unwrap(),
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join(RUNS_DIR).join("half-done")).unwrap();
        let summary = collect(dir.path()).unwrap();
        assert_eq!(summary.rows.len(), 1);
        assert_eq!(summary.rows[0].failures.len(), 1);
        assert!(summary.rows[0].failures[0].contains("the emulator died"));
        assert!(
            summary.warnings[0].contains("half-done"),
            "{:?}",
            summary.warnings
        );
    }
}
