//! `carousel report TRACE`: the accounting of a finished run, read back from its record stream
//! (the run directory's `com2.bin`, or the file `carousel run --trace FILE` wrote), as text, JSON
//! or CSV; with `--interval MS`, per-interval rows; with `--html FILE`, also the report page. The
//! work is `carousel_trace`'s; this is the command: files, messages and exit codes.

use std::path::Path;

use carousel_protocol::record::Record;
use carousel_trace::accounting::Accounting;
use carousel_trace::report::{
    csv_report, interval_csv, interval_json, interval_rows, interval_text, json_report, only_vm,
    read_trace,
};

/// What `report` prints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    #[default]
    Text,
    Json,
    /// One row per VM (the columns of the JSON `vms` entries).
    Csv,
}

/// The records of the trace file `path` (with `vm`, that VM's: [`only_vm`]) and the damage
/// [`read_trace`] found, each line of which goes to stderr as a warning. When there is nothing
/// to work with (the file cannot be read, holds no record, names no such VM) `carousel
/// <command>` says why and the error is the exit code, 2.
pub fn load_trace(
    path: &Path,
    vm: Option<&str>,
    command: &str,
) -> Result<(Vec<Record>, Vec<String>), i32> {
    let bytes = std::fs::read(path).map_err(|error| {
        eprintln!(
            "carousel {command}: cannot read {}: {error}",
            path.display()
        );
        2
    })?;
    let (records, problems) = read_trace(&bytes);
    for problem in &problems {
        eprintln!("warning: {}: {problem}", path.display());
    }
    if records.is_empty() {
        eprintln!("carousel {command}: {} holds no record", path.display());
        return Err(2);
    }
    let Some(name) = vm else {
        return Ok((records, problems));
    };
    match only_vm(&records, name) {
        Some(records) => Ok((records, problems)),
        None => {
            eprintln!("carousel {command}: the trace names no VM {name:?}");
            Err(2)
        }
    }
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
}

/// `carousel report TRACE [--format text|json|csv] [--vm NAME] [--interval MS] [--html FILE]`;
/// returns the exit code: 0, or 2 when the file cannot be read, holds no record at all, names
/// no such VM, has no events for `--interval`, or the page cannot be written.
pub fn report_command(path: &Path, options: &ReportOptions) -> i32 {
    let (records, problems) = match load_trace(path, options.vm, "report") {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let intervals = match options.interval_ms.map(|ms| interval_rows(&records, ms)) {
        None => None,
        Some(Ok(rows)) => Some(rows),
        Some(Err(error)) => {
            eprintln!("carousel report: {}: {error}", path.display());
            return 2;
        }
    };
    if let Some(page) = options.html {
        let source = carousel_trace::html::Source {
            name: &path.display().to_string(),
            damage: &problems,
            only_vm: options.vm,
        };
        let html = carousel_trace::html::page(&records, &source);
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
        (Format::Text, None) => {
            let mut accounting = Accounting::from_records(&records, &[]);
            // One VM's guest time cannot balance the whole run's elapsed time.
            accounting.partial = options.vm.is_some();
            accounting.report()
        }
        (Format::Text, Some(rows)) => interval_text(&records, rows),
        (Format::Json, rows) => {
            let mut report = json_report(&records);
            if let Some(rows) = rows {
                report["intervals"] = interval_json(&records, rows);
            }
            format!("{report:#}\n")
        }
        (Format::Csv, None) => csv_report(&records),
        (Format::Csv, Some(rows)) => interval_csv(&records, rows),
    };
    // A reader that stops early (`| head`) is not an error worth a panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
    0
}
