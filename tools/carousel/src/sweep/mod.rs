//! `carousel sweep`: runs a lab across quanta, policies, weight sets and workloads, each
//! configuration as its own emulator, several at a time, and compares what they did.
//!
//! What is here: settling the axes from the command line and the lab's `[sweep]` table
//! ([`axes`]), running the plan on a pool of workers with a progress bar per run and one for the
//! whole sweep, writing each run's directory (`runs/ID/`: the run's artifacts, `trace.bin`,
//! `report.json`, `result.json`), and the comparison ([`summary`], [`html`]) from the figures of
//! each trace ([`figures`]). For batch systems, `--emit-jobs` writes the plan and one command per
//! configuration (`--job` runs one), and `--collect` builds the comparison from whatever results
//! a directory holds. What is not here: running one lab (that is [`crate::session`], quietly).
//!
//! Exit codes: 0 every run measured; 1 some run failed (each one's reason is in the summary);
//! 2 bad lab file or arguments (nothing started); 5 the build or the sweep directory failed;
//! 130 Ctrl-C (the summary covers the runs that finished).

pub mod axes;
pub mod figures;
pub mod html;
pub mod summary;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use carousel_trace::verdict::Verdict;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use self::axes::{Axes, Config, ALL_VMS};
use self::figures::{Class, VmInfo};
use self::summary::{
    Plan, RunResult, Status, Summary, PLAN_FILE, REPORT_FILE, RESULT_FILE, RUNS_DIR, TRACE_FILE,
};
use crate::emulator::backend::BackendChoice;
use crate::lab::sweep::{self as sweep_table, Workload, REPEAT_RANGE};
use crate::lab::{Kernel, Lab};
use crate::session::{absolute, Console, RunError, RunOptions, EXIT_SETUP, EXIT_USAGE};

/// File that marks a directory as a sweep's, so that a new sweep may clear it.
pub const SWEEP_DIR_MARKER: &str = ".carousel-sweep";
/// What the marker file says.
const SWEEP_DIR_NOTE: &str = "made by `carousel sweep`; cleared by the next sweep into it\n";
/// The commands `--emit-jobs` writes, one per line.
pub const JOBS_FILE: &str = "jobs.txt";
/// Allowed `--jobs`.
pub const JOBS_RANGE: std::ops::RangeInclusive<usize> = 1..=64;
/// Exit code when some run failed.
pub const EXIT_RUN_FAILED: i32 = 1;
/// Exit code after Ctrl-C.
pub const EXIT_INTERRUPTED: i32 = 130;
/// Files of a run directory that are large and can be made again from the lab (the boot image
/// and its staging tree): removed once the run is over.
const REBUILDABLE: [&str; 2] = ["carousel.iso", "iso-root"];
/// How often the per-run spinners move.
const TICK: Duration = Duration::from_millis(200);

/// What `carousel sweep` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Run every configuration here, then compare.
    Run,
    /// Write the plan and one command per configuration; run nothing.
    EmitJobs,
    /// Run the one configuration the axes name (repetition `repeat`) into the sweep directory;
    /// write no comparison (what each `--emit-jobs` command does).
    Job { repeat: u32 },
    /// Compare the results a sweep directory holds.
    Collect,
}

/// The `sweep` command's options, as given (the command line's `carousel sweep`).
#[derive(Debug, Clone, clap::Args)]
pub struct SweepArgs {
    /// The lab file (TOML); not with --collect.
    #[arg(required_unless_present = "collect", conflicts_with = "collect")]
    pub lab: Option<PathBuf>,
    /// Quanta, comma-separated, each with its unit: 500us,1ms,2ms,5ms,10ms.
    #[arg(long, value_name = "LIST")]
    pub quantum: Option<String>,
    /// Scheduling policies, comma-separated: round-robin, boost, credit.
    #[arg(long, value_name = "LIST")]
    pub policy: Option<String>,
    /// Weight sets, comma-separated; each is `lab`, weights in VM order (1:2:4) or named
    /// (spin0=4:disk=2).
    #[arg(long, value_name = "LIST")]
    pub weights: Option<String>,
    /// Workloads of the lab's [[sweep.workload]] tables to run, comma-separated (default:
    /// all; a lab without any has one, `all`, of every VM).
    #[arg(long, value_name = "LIST")]
    pub workload: Option<String>,
    /// Runs of each configuration (spread shows where runs differ).
    #[arg(long, value_name = "N")]
    pub repeat: Option<u32>,
    /// Runs side by side (default: the number of cores).
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Emulator (as for `run`).
    #[arg(long, value_enum, default_value_t = BackendChoice::Bochs)]
    pub backend: BackendChoice,
    /// Each run's limit in seconds (overrides the lab's timeout_s).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout: Option<u64>,
    /// The sweep directory (cleared first, unless it holds something that is not a sweep).
    #[arg(long, value_name = "DIR", required_unless_present = "collect")]
    pub out: Option<PathBuf>,
    /// Write DIR/sweep.json and one self-contained command per configuration (stdout and
    /// DIR/jobs.txt) for a batch system; run nothing.
    #[arg(long, conflicts_with_all = ["collect", "job"])]
    pub emit_jobs: bool,
    /// Run the one configuration the axes name into DIR/runs/ID (what --emit-jobs lines do);
    /// no comparison.
    #[arg(long, conflicts_with = "collect")]
    pub job: bool,
    /// With --job: which repetition this is.
    #[arg(long, value_name = "N", requires = "job", default_value_t = 1)]
    pub run: u32,
    /// Build the comparison from the results in DIR (after --emit-jobs jobs, or again).
    #[arg(long, value_name = "DIR")]
    pub collect: Option<PathBuf>,
}

impl SweepArgs {
    /// What the flags ask for.
    pub fn mode(&self) -> Mode {
        if self.collect.is_some() {
            Mode::Collect
        } else if self.emit_jobs {
            Mode::EmitJobs
        } else if self.job {
            Mode::Job { repeat: self.run }
        } else {
            Mode::Run
        }
    }

    /// The sweep directory: `--collect DIR`, else `--out DIR`.
    pub fn dir(&self) -> PathBuf {
        self.collect
            .clone()
            .or_else(|| self.out.clone())
            .unwrap_or_default()
    }
}

/// How to use `carousel sweep` beyond one machine, and what a lab's `[sweep]` table holds.
pub const HELP: &str = "\
A lab's [sweep] table gives the axes the command line leaves out:
  [sweep]
  quantum = [\"500us\", \"2ms\", \"8ms\"]
  policy = [\"round-robin\", \"boost\"]
  weights = [\"lab\", \"1:2:4\"]
  repeat = 1
  [[sweep.workload]]          # a named group of the lab's VMs, swept on its own
  name = \"mix\"
  vms = [\"spin0\", \"disk\", \"tick\"]

Batch systems: `carousel sweep LAB ... --out DIR --emit-jobs` writes DIR/sweep.json and one
command per configuration to DIR/jobs.txt (and stdout); run them anywhere that sees DIR and this
checkout (`parallel < DIR/jobs.txt`, or line $SLURM_ARRAY_TASK_ID of it in a Slurm array), then
`carousel sweep --collect DIR`.";

/// Why a sweep could not start (or finish its comparison): the message and the exit code.
#[derive(Debug)]
pub struct SweepError {
    pub message: String,
    pub exit_code: i32,
}

impl SweepError {
    fn usage(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            exit_code: EXIT_USAGE,
        }
    }

    fn setup(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            exit_code: EXIT_SETUP,
        }
    }
}

/// Settles the axes: the command line's lists, else the lab's `[sweep]` table, else the lab's
/// own quantum, policy and weights; every workload the lab defines (or all its VMs as
/// [`ALL_VMS`]).
pub fn resolve_axes(lab: &Lab, options: &SweepArgs) -> Result<Axes, String> {
    let table = &lab.sweep;
    let quanta_us = match &options.quantum {
        Some(list) => {
            sweep_table::parse_quantum_list(list).map_err(|error| format!("--quantum: {error}"))?
        }
        None => table
            .quanta_us
            .clone()
            .unwrap_or_else(|| vec![lab.quantum_us]),
    };
    let policies = match &options.policy {
        Some(list) => {
            sweep_table::parse_policy_list(list).map_err(|error| format!("--policy: {error}"))?
        }
        None => table.policies.clone().unwrap_or_else(|| vec![lab.policy]),
    };
    let weights = match &options.weights {
        Some(list) => {
            let sets = sweep_table::parse_weight_list(list)
                .map_err(|error| format!("--weights: {error}"))?;
            for set in &sets {
                let unknown = set.unknown_names_in(lab.vms.iter().map(|vm| vm.name.as_str()));
                if !unknown.is_empty() {
                    return Err(format!(
                        "--weights: weight set {} names VMs the lab does not have: {} (VMs: {})",
                        set.label(),
                        unknown.join(", "),
                        vm_names(lab)
                    ));
                }
            }
            sets
        }
        None => table
            .weights
            .clone()
            .unwrap_or_else(|| vec![sweep_table::WeightSet::Lab]),
    };
    let defined: Vec<Workload> = if table.workloads.is_empty() {
        vec![Workload {
            name: ALL_VMS.to_string(),
            vms: (0..lab.vms.len()).collect(),
        }]
    } else {
        table.workloads.clone()
    };
    let workloads = match &options.workload {
        None => defined,
        Some(list) => {
            let mut chosen: Vec<Workload> = Vec::new();
            for name in list.split(',').map(str::trim) {
                let Some(workload) = defined.iter().find(|workload| workload.name == name) else {
                    return Err(format!(
                        "--workload: the lab has no workload {name:?}; it has: {}",
                        defined
                            .iter()
                            .map(|workload| workload.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                };
                if chosen.iter().any(|workload| workload.name == name) {
                    return Err(format!("--workload: {name:?} is given twice"));
                }
                chosen.push(workload.clone());
            }
            chosen
        }
    };
    let repeat = options.repeat.or(table.repeat).unwrap_or(1);
    if !REPEAT_RANGE.contains(&repeat) {
        return Err(format!(
            "--repeat {repeat} is outside {}..={}",
            REPEAT_RANGE.start(),
            REPEAT_RANGE.end()
        ));
    }
    let axes = Axes {
        workloads,
        weights,
        policies,
        quanta_us,
        repeat,
    };
    if axes.run_count() > axes::MAX_RUNS {
        return Err(format!(
            "the sweep would take {} runs; at most {} are allowed (fewer quanta, policies, \
             weight sets, workloads or repeats)",
            axes.run_count(),
            axes::MAX_RUNS
        ));
    }
    Ok(axes)
}

fn vm_names(lab: &Lab) -> String {
    lab.vms
        .iter()
        .map(|vm| vm.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the sweep records about each VM of a configuration's lab.
pub fn vm_infos(lab: &Lab) -> Vec<VmInfo> {
    lab.vms
        .iter()
        .map(|vm| {
            let (kernel, class) = match &vm.kernel {
                Kernel::Builtin(name) => (name.clone(), Class::of_kernel(name)),
                Kernel::File(path) => (path.display().to_string(), Class::Unmodified),
            };
            VmInfo {
                name: vm.name.clone(),
                class,
                kernel,
                weight: vm.weight,
            }
        })
        .collect()
}

/// Makes `dir` a fresh sweep directory: an existing one is cleared only when it is empty or a
/// sweep's (it holds [`SWEEP_DIR_MARKER`]).
pub fn prepare_sweep_dir(dir: &Path) -> Result<(), SweepError> {
    crate::session::prepare_marked_dir(dir, SWEEP_DIR_MARKER, "a sweep directory", SWEEP_DIR_NOTE)
        .map_err(|error| SweepError {
            message: error.to_string(),
            exit_code: error.exit_code(),
        })?;
    mark_sweep_dir(dir)
}

/// Creates `dir` (if needed) with its marker and its runs folder, keeping what it holds.
fn mark_sweep_dir(dir: &Path) -> Result<(), SweepError> {
    std::fs::create_dir_all(dir.join(RUNS_DIR))
        .map_err(|error| SweepError::setup(format!("cannot create {}: {error}", dir.display())))?;
    write_file(&dir.join(SWEEP_DIR_MARKER), SWEEP_DIR_NOTE)
}

/// The `--backend` value that selects `choice`.
fn backend_name(choice: BackendChoice) -> String {
    clap::ValueEnum::to_possible_value(&choice)
        .map(|value| value.get_name().to_string())
        .unwrap_or_else(|| format!("{choice:?}"))
}

/// `text` as one shell word.
fn shell_word(text: &str) -> String {
    if !text.is_empty()
        && text
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-_./:=,@%+".contains(&byte))
    {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

/// The self-contained command that runs `config` alone into the sweep directory `out`.
pub fn job_command(
    program: &Path,
    lab: &Path,
    config: &Config,
    options: &SweepArgs,
    out: &Path,
) -> String {
    let mut words: Vec<String> = vec![
        program.display().to_string(),
        "sweep".into(),
        lab.display().to_string(),
        "--job".into(),
        "--quantum".into(),
        sweep_table::quantum_text(config.quantum_us),
        "--policy".into(),
        config.policy.clone(),
        "--weights".into(),
        config.weights.clone(),
        "--workload".into(),
        config.workload.clone(),
        "--run".into(),
        config.repeat.to_string(),
        "--backend".into(),
        backend_name(options.backend),
    ];
    if let Some(timeout) = options.timeout {
        words.extend(["--timeout".into(), timeout.to_string()]);
    }
    words.extend(["--out".into(), out.display().to_string()]);
    words
        .iter()
        .map(|word| shell_word(word))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The lab, the axes, every configuration and its lab: everything checked before anything
/// starts.
struct Prepared {
    lab: Lab,
    axes: Axes,
    runs: Vec<(Config, Lab)>,
}

fn prepare(options: &SweepArgs) -> Result<Prepared, SweepError> {
    let Some(path) = &options.lab else {
        return Err(SweepError::usage("give the lab file (or --collect DIR)"));
    };
    let lab = Lab::load(path).map_err(|error| SweepError::usage(error.to_string()))?;
    let axes = resolve_axes(&lab, options).map_err(SweepError::usage)?;
    let mut runs = Vec::new();
    for config in axes.configurations() {
        let configured = axes.lab_for(&lab, &config).map_err(|error| {
            SweepError::usage(format!("configuration {}: {error}", config.id()))
        })?;
        runs.push((config, configured));
    }
    if let Some(jobs) = options.jobs.filter(|jobs| !JOBS_RANGE.contains(jobs)) {
        return Err(SweepError::usage(format!(
            "--jobs {jobs} is outside {}..={}",
            JOBS_RANGE.start(),
            JOBS_RANGE.end()
        )));
    }
    Ok(Prepared { lab, axes, runs })
}

/// The plan of `prepared`, as `sweep.json` holds it.
fn plan(prepared: &Prepared, options: &SweepArgs) -> Plan {
    let axes = &prepared.axes;
    Plan {
        lab: prepared.lab.path.display().to_string(),
        lab_hash: format!("{:#018x}", prepared.lab.hash),
        commit: crate::repo::commit(),
        backend: backend_name(options.backend),
        quanta: axes
            .quanta_us
            .iter()
            .map(|&q| sweep_table::quantum_text(q))
            .collect(),
        policies: axes.policies.iter().map(|p| p.name().to_string()).collect(),
        weights: axes
            .weights
            .iter()
            .map(sweep_table::WeightSet::label)
            .collect(),
        workloads: axes.workloads.iter().map(|w| w.name.clone()).collect(),
        repeat: axes.repeat,
        runs: prepared
            .runs
            .iter()
            .map(|(config, _)| config.clone())
            .collect(),
    }
}

/// Makes `out` a fresh sweep directory holding the plan of `prepared`.
fn start_sweep_dir(out: &Path, prepared: &Prepared, options: &SweepArgs) -> Result<(), SweepError> {
    prepare_sweep_dir(out)?;
    let plan = serde_json::to_string_pretty(&plan(prepared, options))
        .map_err(|error| SweepError::setup(format!("cannot encode the plan: {error}")))?;
    write_file(&out.join(PLAN_FILE), plan + "\n")
}

fn write_file(path: &Path, contents: impl AsRef<[u8]>) -> Result<(), SweepError> {
    std::fs::write(path, contents)
        .map_err(|error| SweepError::setup(format!("cannot write {}: {error}", path.display())))
}

/// Builds the hypervisor and every built-in guest the runs use, once, before they start.
fn build_all(runs: &[(Config, Lab)]) -> Result<(), SweepError> {
    let mut guests: Vec<&str> = runs
        .iter()
        .flat_map(|(_, lab)| lab.builtin_guests())
        .collect();
    guests.sort_unstable();
    guests.dedup();
    let root = crate::repo::repo_root();
    crate::image::build::build(&root, &crate::image::build::target_dir(&root), &guests)
        .map(|_| ())
        .map_err(|error| SweepError::setup(error.to_string()))
}

/// Runs one configuration into `dir` and records it there (`result.json`, `trace.bin`,
/// `report.json`); never fails: what went wrong is the result's reason.
fn run_one(
    config: &Config,
    lab: Lab,
    dir: &Path,
    options: &SweepArgs,
    interrupted: &AtomicBool,
) -> RunResult {
    let started = Instant::now();
    let vms = vm_infos(&lab);
    let mut result = RunResult {
        id: config.id(),
        config: config.clone(),
        lab: lab.path.display().to_string(),
        lab_hash: format!("{:#018x}", lab.hash),
        commit: crate::repo::commit(),
        backend: backend_name(options.backend),
        status: Status::Failed,
        reason: None,
        exit_code: 0,
        wall_s: 0.0,
        tsc_hz: None,
        quantum_clock: None,
        vms,
    };
    let run_options = RunOptions {
        timeout_s: options.timeout,
        ..RunOptions::generated(lab.path.clone(), options.backend, dir.to_path_buf())
    };
    match crate::session::execute_lab(lab, &run_options, Console::Quiet, interrupted) {
        Ok(finished) => {
            result.exit_code = finished.outcome.exit_code();
            result.backend = finished.backend.to_string();
            if let Some(hello) = &finished.model.hello {
                result.lab_hash = format!("{:#018x}", hello.lab_hash);
                result.commit = hello.commit.clone();
                result.quantum_clock = Some(hello.quantum_clock.name().to_string());
            }
            let accounting = finished.accounting();
            result.tsc_hz = accounting.tsc_hz;
            let _ = std::fs::copy(finished.out.join("com2.bin"), dir.join(TRACE_FILE));
            let report = carousel_trace::render::json::report(finished.accounting());
            let _ = std::fs::write(dir.join(REPORT_FILE), format!("{report:#}\n"));
            let mut problems = finished.outcome.problems.clone();
            match finished.outcome.verdict {
                Verdict::Passed if accounting.has_summaries() => result.status = Status::Ok,
                Verdict::Passed => problems.push("the hypervisor sent no summaries".into()),
                Verdict::Interrupted => result.status = Status::Interrupted,
                Verdict::VmFailed | Verdict::HypervisorFailed | Verdict::TimedOut => {}
            }
            if result.status != Status::Ok {
                if problems.is_empty() {
                    problems.push(format!("{:?}", finished.outcome.verdict));
                }
                result.reason = Some(problems.join("; "));
            }
        }
        Err(error) => {
            result.exit_code = error.exit_code();
            result.status = if matches!(error, RunError::Interrupted) {
                Status::Interrupted
            } else {
                Status::Failed
            };
            result.reason = Some(error.to_string());
        }
    }
    result.wall_s = started.elapsed().as_secs_f64();
    for name in REBUILDABLE {
        let path = dir.join(name);
        let _ = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
    }
    let _ = std::fs::create_dir_all(dir);
    if let Ok(text) = serde_json::to_string_pretty(&result) {
        let _ = std::fs::write(dir.join(RESULT_FILE), text + "\n");
    }
    result
}

/// Progress on the terminal: a spinner per run in flight and a bar for the sweep; a plain line
/// per run when stderr is not a terminal.
struct Progress {
    multi: MultiProgress,
    overall: ProgressBar,
    live: bool,
}

impl Progress {
    fn new(total: usize) -> Self {
        let live = std::io::stderr().is_terminal();
        let multi = if live {
            MultiProgress::new()
        } else {
            MultiProgress::with_draw_target(ProgressDrawTarget::hidden())
        };
        let overall = multi.add(ProgressBar::new(total as u64));
        overall.set_style(
            ProgressStyle::with_template(
                "[{bar:32.cyan/blue}] {pos}/{len} runs, {elapsed} so far, ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        Self {
            multi,
            overall,
            live,
        }
    }

    fn say(&self, line: String) {
        if self.live {
            let _ = self.multi.println(line);
        } else {
            eprintln!("{line}");
        }
    }

    fn start(&self, id: &str) -> ProgressBar {
        let bar = self
            .multi
            .insert_before(&self.overall, ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(id.to_string());
        bar.enable_steady_tick(TICK);
        if !self.live {
            eprintln!("sweep: {id}: started");
        }
        bar
    }

    fn finish(&self, bar: ProgressBar, result: &RunResult) {
        bar.finish_and_clear();
        self.multi.remove(&bar);
        self.overall.inc(1);
        let done = self.overall.position();
        let total = self.overall.length().unwrap_or(done);
        let status = match result.status {
            Status::Ok => "ok".to_string(),
            Status::Failed => format!(
                "FAILED: {}",
                result.reason.as_deref().unwrap_or("unknown reason")
            ),
            Status::Interrupted => "interrupted".to_string(),
        };
        self.say(format!(
            "sweep: [{done}/{total}] {} {status} ({:.1} s)",
            result.id, result.wall_s
        ));
    }

    fn done(&self) {
        self.overall.finish_and_clear();
    }
}

/// Runs `runs` on `jobs` workers into `out/runs/`; returns the results in plan order (`None`
/// for runs that never started because of Ctrl-C).
fn run_pool(
    runs: &[(Config, Lab)],
    jobs: usize,
    out: &Path,
    options: &SweepArgs,
    interrupted: &AtomicBool,
) -> Vec<Option<RunResult>> {
    let progress = Progress::new(runs.len());
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<RunResult>>> = Mutex::new(vec![None; runs.len()]);
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(runs.len()) {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, Ordering::SeqCst);
                let Some((config, lab)) = runs.get(index) else {
                    break;
                };
                if interrupted.load(Ordering::SeqCst) {
                    break;
                }
                let id = config.id();
                let bar = progress.start(&id);
                let dir = out.join(RUNS_DIR).join(&id);
                let result = run_one(config, lab.clone(), &dir, options, interrupted);
                progress.finish(bar, &result);
                results.lock().unwrap_or_else(|poison| poison.into_inner())[index] = Some(result);
            });
        }
    });
    progress.done();
    results
        .into_inner()
        .unwrap_or_else(|poison| poison.into_inner())
}

/// Writes `summary.{txt,csv,json,html}` into `dir`.
fn write_summary(dir: &Path, summary: &Summary) -> Result<(), SweepError> {
    write_file(&dir.join("summary.txt"), summary.text())?;
    write_file(&dir.join("summary.csv"), summary.csv())?;
    write_file(&dir.join("summary.json"), format!("{:#}\n", summary.json()))?;
    write_file(&dir.join("summary.html"), html::page(summary))
}

/// Gathers `dir`, writes the comparison and prints it; the exit code says whether every run
/// gave figures.
fn compare(dir: &Path) -> Result<i32, SweepError> {
    let summary = summary::collect(dir).map_err(SweepError::usage)?;
    write_summary(dir, &summary)?;
    print!("{}", summary.text());
    println!(
        "summary: {}",
        dir.join("summary.{txt,csv,json,html}").display()
    );
    let (_, failed) = summary.counts();
    Ok(if failed == 0 { 0 } else { EXIT_RUN_FAILED })
}

/// The default number of runs side by side: one per core.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |cores| cores.get())
}

fn sweep(options: &SweepArgs, interrupted: &AtomicBool) -> Result<i32, SweepError> {
    let out = absolute(&options.dir());
    let mode = options.mode();
    if mode == Mode::Collect {
        return compare(&out);
    }
    let prepared = prepare(options)?;
    match mode {
        Mode::Collect => unreachable!("handled above"),
        Mode::EmitJobs => {
            start_sweep_dir(&out, &prepared, options)?;
            let program = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("carousel"));
            let lab = absolute(&prepared.lab.path);
            let commands: Vec<String> = prepared
                .runs
                .iter()
                .map(|(config, _)| job_command(&program, &lab, config, options, &out))
                .collect();
            write_file(&out.join(JOBS_FILE), commands.join("\n") + "\n")?;
            for command in &commands {
                println!("{command}");
            }
            eprintln!(
                "sweep: {} jobs in {}; when they are done: carousel sweep --collect {}",
                commands.len(),
                out.join(JOBS_FILE).display(),
                out.display()
            );
            Ok(0)
        }
        Mode::Job { repeat } => {
            let single = [
                ("--quantum", prepared.axes.quanta_us.len()),
                ("--policy", prepared.axes.policies.len()),
                ("--weights", prepared.axes.weights.len()),
                ("--workload", prepared.axes.workloads.len()),
            ];
            if let Some((flag, count)) = single.iter().find(|(_, count)| *count != 1) {
                return Err(SweepError::usage(format!(
                    "--job runs one configuration: {flag} has {count} values"
                )));
            }
            let (mut config, lab) = prepared.runs[0].clone();
            config.repeat = repeat;
            mark_sweep_dir(&out)?;
            build_all(&prepared.runs)?;
            let dir = out.join(RUNS_DIR).join(config.id());
            let result = run_one(&config, lab, &dir, options, interrupted);
            println!(
                "{}: {}{} ({:.1} s); {}",
                result.id,
                match result.status {
                    Status::Ok => "ok",
                    Status::Failed => "FAILED",
                    Status::Interrupted => "interrupted",
                },
                result
                    .reason
                    .as_ref()
                    .map(|reason| format!(": {reason}"))
                    .unwrap_or_default(),
                result.wall_s,
                dir.display()
            );
            Ok(match result.status {
                Status::Ok => 0,
                Status::Interrupted => EXIT_INTERRUPTED,
                Status::Failed => EXIT_RUN_FAILED,
            })
        }
        Mode::Run => {
            start_sweep_dir(&out, &prepared, options)?;
            let jobs = options.jobs.unwrap_or_else(default_jobs);
            eprintln!(
                "sweep: {} runs ({} quanta × {} policies × {} weight sets × {} workloads × {} \
                 repeats), {jobs} at a time, into {}",
                prepared.runs.len(),
                prepared.axes.quanta_us.len(),
                prepared.axes.policies.len(),
                prepared.axes.weights.len(),
                prepared.axes.workloads.len(),
                prepared.axes.repeat,
                out.display()
            );
            eprintln!("sweep: building the hypervisor and the guests…");
            build_all(&prepared.runs)?;
            let started = Instant::now();
            let results = run_pool(&prepared.runs, jobs, &out, options, interrupted);
            eprintln!(
                "sweep: {} of {} runs done in {:.1} s",
                results.iter().flatten().count(),
                results.len(),
                started.elapsed().as_secs_f64()
            );
            let code = compare(&out)?;
            Ok(if interrupted.load(Ordering::SeqCst) {
                EXIT_INTERRUPTED
            } else {
                code
            })
        }
    }
}

/// `carousel sweep`: returns the exit code.
pub fn sweep_command(options: &SweepArgs, interrupted: &AtomicBool) -> i32 {
    match sweep(options, interrupted) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("carousel sweep: {}", error.message);
            error.exit_code
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAB: &str = "[run]\nquantum_us = 2000\n\
                       [[vm]]\nname = \"a\"\nkernel = \"spin\"\nmemory_mib = 4\n\
                       [[vm]]\nname = \"b\"\nkernel = \"interactive\"\nmemory_mib = 4\n";

    fn options() -> SweepArgs {
        SweepArgs {
            lab: Some(PathBuf::from("lab.toml")),
            quantum: None,
            policy: None,
            weights: None,
            workload: None,
            repeat: None,
            jobs: None,
            backend: BackendChoice::Bochs,
            timeout: None,
            out: Some(PathBuf::from("out")),
            emit_jobs: false,
            job: false,
            run: 1,
            collect: None,
        }
    }

    #[test]
    fn the_flags_choose_the_mode() {
        let mut options = options();
        assert_eq!(options.mode(), Mode::Run);
        assert_eq!(options.dir(), Path::new("out"));
        options.job = true;
        options.run = 3;
        assert_eq!(options.mode(), Mode::Job { repeat: 3 });
        options.emit_jobs = true;
        assert_eq!(options.mode(), Mode::EmitJobs);
        options.collect = Some(PathBuf::from("there"));
        assert_eq!(options.mode(), Mode::Collect);
        assert_eq!(options.dir(), Path::new("there"));
    }

    fn lab(text: &str) -> Lab {
        Lab::parse(Path::new("lab.toml"), text).unwrap()
    }

    #[test]
    fn without_axes_the_lab_is_one_configuration() {
        let axes = resolve_axes(&lab(LAB), &options()).unwrap();
        assert_eq!(axes.quanta_us, [2_000]);
        assert_eq!(axes.run_count(), 1);
        assert_eq!(axes.workloads[0].name, ALL_VMS);
        assert_eq!(axes.workloads[0].vms, [0, 1]);
    }

    #[test]
    fn the_command_line_overrides_the_sweep_table() {
        let text = format!(
            "{LAB}[sweep]\nquantum = [\"1ms\", \"5ms\"]\npolicy = [\"boost\"]\nrepeat = 2\n\
             [[sweep.workload]]\nname = \"solo\"\nvms = [\"a\"]\n\
             [[sweep.workload]]\nname = \"pair\"\nvms = [\"b\", \"a\"]\n"
        );
        let lab = lab(&text);
        let axes = resolve_axes(&lab, &options()).unwrap();
        assert_eq!(axes.quanta_us, [1_000, 5_000]);
        assert_eq!(axes.repeat, 2);
        assert_eq!(axes.workloads.len(), 2);
        assert_eq!(axes.workloads[1].vms, [0, 1]);
        let mut options = options();
        options.quantum = Some("500us".into());
        options.policy = Some("round-robin,boost".into());
        options.workload = Some("pair".into());
        options.repeat = Some(1);
        options.weights = Some("lab,a=3".into());
        let axes = resolve_axes(&lab, &options).unwrap();
        assert_eq!(axes.quanta_us, [500]);
        assert_eq!(axes.policies.len(), 2);
        assert_eq!(axes.workloads.len(), 1);
        assert_eq!(axes.run_count(), 4);
    }

    #[test]
    fn bad_axes_are_named() {
        let lab = lab(LAB);
        let error = |change: &dyn Fn(&mut SweepArgs)| {
            let mut options = options();
            change(&mut options);
            resolve_axes(&lab, &options).unwrap_err()
        };
        assert!(error(&|o| o.quantum = Some("1ms,x".into())).starts_with("--quantum: "));
        assert!(error(&|o| o.policy = Some("cfs".into())).starts_with("--policy: "));
        let unknown = error(&|o| o.weights = Some("zz=2".into()));
        assert!(
            unknown.contains("zz") && unknown.contains("VMs: a, b"),
            "{unknown}"
        );
        let workload = error(&|o| o.workload = Some("mix".into()));
        assert!(workload.contains("no workload \"mix\"") && workload.contains("all"));
        assert!(error(&|o| o.repeat = Some(0)).contains("--repeat 0"));
        let many = error(&|o| {
            o.quantum = Some(
                (1..=40)
                    .map(|ms| format!("{ms}ms"))
                    .collect::<Vec<_>>()
                    .join(","),
            );
            o.repeat = Some(30);
        });
        assert!(many.contains("1200 runs"), "{many}");
    }

    #[test]
    fn job_commands_are_single_shell_lines() {
        let config = Config {
            workload: "mix".into(),
            weights: "a=2:b=1".into(),
            policy: "boost".into(),
            quantum_us: 500,
            repeat: 3,
        };
        let command = job_command(
            Path::new("/opt/carousel"),
            Path::new("/labs/my lab.toml"),
            &config,
            &options(),
            Path::new("/tmp/out"),
        );
        assert_eq!(
            command,
            "/opt/carousel sweep '/labs/my lab.toml' --job --quantum 500us --policy boost \
             --weights a=2:b=1 --workload mix --run 3 --backend bochs --out /tmp/out"
        );
        assert_eq!(shell_word("it's"), "'it'\\''s'");
    }

    #[test]
    fn sweep_directories_are_never_someone_elses() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("sweep");
        prepare_sweep_dir(&out).unwrap();
        std::fs::write(out.join("summary.txt"), "old").unwrap();
        prepare_sweep_dir(&out).unwrap();
        assert!(!out.join("summary.txt").exists());
        assert!(out.join(RUNS_DIR).is_dir());
        let mine = dir.path().join("mine");
        std::fs::create_dir(&mine).unwrap();
        std::fs::write(mine.join("notes.txt"), "keep").unwrap();
        let error = prepare_sweep_dir(&mine).unwrap_err();
        assert_eq!(error.exit_code, EXIT_USAGE);
        assert!(mine.join("notes.txt").exists());
    }

    #[test]
    fn vm_infos_carry_classes_and_weights() {
        let text = LAB.replace(
            "kernel = \"interactive\"\nmemory_mib = 4\n",
            "kernel = \"interactive\"\nmemory_mib = 4\nweight = 3\n",
        );
        let infos = vm_infos(&lab(&text));
        assert_eq!(infos[0].class, Class::Cpu);
        assert_eq!(infos[1].class, Class::Interactive);
        assert_eq!(infos[1].weight, 3);
    }

    #[test]
    fn a_kernel_file_is_an_unmodified_guest() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("kernel");
        std::fs::write(&kernel, b"\x7fELF\x01\x01\x01").unwrap();
        let text = format!(
            "[[vm]]\nname = \"xv6\"\nkernel = \"{}\"\nmemory_mib = 64\n\
             [[vm]]\nname = \"s\"\nkernel = \"spin\"\nmemory_mib = 4\n",
            kernel.display()
        );
        let infos = vm_infos(&lab(&text));
        assert_eq!(infos[0].class, Class::Unmodified);
        assert_eq!(infos[1].class, Class::Cpu);
    }
}
