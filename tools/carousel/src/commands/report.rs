//! `carousel report TRACE`: the accounting of a finished run, read back from its record stream
//! (the run directory's `com2.bin`, or the file `carousel run --trace FILE` wrote), as text, JSON
//! or CSV; with `--interval MS`, per-interval rows (after xenalyze's `--interval` mode); with
//! `--html FILE`, also the report page. A damaged trace is reported as far as it goes: every
//! gap and corrupt frame is named and everything else still counts. The work is
//! `carousel_trace`'s; this is the command: files, messages and exit codes.

use std::path::Path;

use carousel_trace::decode::{only_vm, read_trace};
use carousel_trace::model::feed::{Delta, Feed};
use carousel_trace::model::steps::{time_steps, StepsFile, STEPS_FILE};
use carousel_trace::model::{Keep, Model, ModelBuilder};
use carousel_trace::render::{csv, html, json, text};

/// What `report` prints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    #[default]
    Text,
    Json,
    /// One row per VM (the columns of the JSON `vms` entries).
    Csv,
}

/// The model of the trace file `path` (with `vm`, of that VM's records: [`only_vm`]), its
/// damage included, each part of which goes to stderr as a warning. When there is nothing to
/// work with (the file cannot be read, holds no record, names no such VM) `carousel <command>`
/// says why and the error is the exit code, 2.
pub fn load_trace(path: &Path, vm: Option<&str>, command: &str) -> Result<Model, i32> {
    load(path, vm, command, false).map(|(model, _)| model)
}

/// [`load_trace`], and with `feed` the web page's deltas of the same records (empty without).
fn load(
    path: &Path,
    vm: Option<&str>,
    command: &str,
    feed: bool,
) -> Result<(Model, Vec<Delta>), i32> {
    let bytes = std::fs::read(path).map_err(|error| {
        eprintln!(
            "carousel {command}: cannot read {}: {error}",
            path.display()
        );
        2
    })?;
    let (records, damage) = read_trace(&bytes);
    for damage in &damage {
        eprintln!("warning: {}: {damage}", path.display());
    }
    if records.is_empty() {
        eprintln!("carousel {command}: {} holds no record", path.display());
        return Err(2);
    }
    let records = match vm {
        None => records,
        Some(name) => only_vm(&records, name).ok_or_else(|| {
            eprintln!("carousel {command}: the trace names no VM {name:?}");
            2
        })?,
    };
    let deltas = if feed {
        Feed::of_trace(&records, &damage)
    } else {
        Vec::new()
    };
    let mut model = ModelBuilder::new(Keep::Everything);
    for record in &records {
        model.add(record);
    }
    for damage in damage {
        model.add_damage(damage);
    }
    let mut model = model.finish();
    // One VM's guest time cannot balance the whole run's elapsed time.
    model.accounting.partial = vm.is_some();
    Ok((model, deltas))
}

/// What `carousel report` was asked for beyond the trace.
#[derive(Debug, Clone, Default)]
pub struct ReportOptions<'a> {
    pub format: Format,
    /// `--vm NAME`: only this VM's records (and the run-wide ones).
    pub vm: Option<&'a str>,
    /// `--interval MS`: per-interval rows instead of the whole-run tables (JSON: the whole-run
    /// object gains an `intervals` array).
    pub interval_ms: Option<f64>,
    /// `--html FILE`: also write the report page there.
    pub html: Option<&'a Path>,
    /// `--latencies`: CSV of the task latencies instead of the VM rows.
    pub latencies: bool,
    /// `--settings`: CSV of the setting changes instead of the VM rows.
    pub settings: bool,
}

/// Times the script steps of `model` from the run's [`STEPS_FILE`] beside the trace at `path`
/// (which step matched which console line: `carousel run` writes it). Nothing to do without
/// the file or with `--vm` (the trace's VM ids are renumbered then); a file that cannot be
/// read or steps that cannot be timed are a warning.
fn time_steps_beside(path: &Path, model: &mut Model) {
    let file = path.with_file_name(STEPS_FILE);
    let Ok(text) = std::fs::read_to_string(&file) else {
        return;
    };
    let timed = serde_json::from_str::<StepsFile>(&text)
        .map_err(|error| error.to_string())
        .and_then(|steps| time_steps(&steps.vms, &model.console, &model.keys));
    match timed {
        Ok(steps) => model.steps = Some(steps),
        Err(problem) => eprintln!(
            "warning: {}: script steps are not timed: {problem}",
            file.display()
        ),
    }
}

/// `carousel report TRACE [--format text|json|csv] [--vm NAME] [--interval MS] [--html FILE]`;
/// returns the exit code: 0, or 2 when the file cannot be read, holds no record at all, names
/// no such VM, has no events for `--interval`, or the page cannot be written.
pub fn report_command(path: &Path, options: &ReportOptions) -> i32 {
    let (mut model, deltas) = match load(path, options.vm, "report", options.html.is_some()) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    if options.vm.is_none() {
        time_steps_beside(path, &mut model);
    }
    let intervals = match options.interval_ms.map(|ms| model.intervals(ms)) {
        None => None,
        Some(Ok(rows)) => Some(rows),
        Some(Err(error)) => {
            eprintln!("carousel report: {}: {error}", path.display());
            return 2;
        }
    };
    if let Some(page) = options.html {
        let source = html::Source {
            name: &path.display().to_string(),
            only_vm: options.vm,
        };
        let html = html::page(&model, &deltas, &source);
        if let Err(error) = std::fs::write(page, &html) {
            eprintln!("carousel report: cannot write {}: {error}", page.display());
            return 2;
        }
        eprintln!(
            "carousel report: wrote {} ({} KB)",
            page.display(),
            html.len().div_ceil(1024)
        );
    }
    let text = match (options.format, &intervals) {
        (Format::Text, None) => text::report(&model.accounting) + &text::latencies(&model),
        (Format::Text, Some(rows)) => text::intervals(&model, rows),
        (Format::Csv, _) if options.latencies => csv::latencies(&model),
        (Format::Csv, _) if options.settings => csv::settings(&model.accounting),
        (Format::Json, rows) => {
            let mut report = json::report(&model.accounting);
            report["latencies"] = json::latencies(&model);
            if let Some(rows) = rows {
                report["intervals"] = json::intervals(&model, rows);
            }
            format!("{report:#}\n")
        }
        (Format::Csv, None) => csv::vms(&model.accounting),
        (Format::Csv, Some(rows)) => csv::intervals(&model, rows),
    };
    // A reader that stops early (`| head`) is not an error worth a panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
    0
}
