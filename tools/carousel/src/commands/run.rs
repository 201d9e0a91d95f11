//! `carousel run`: the lab run live, then the outcome table, the accounting, what was persisted
//! and the result line; where the hypervisor could not run, where to look.

use std::fmt::Write;
use std::fs;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use carousel_protocol::record::TraceLevel;
use carousel_trace::decode::frames_only;
use carousel_trace::escape;
use carousel_trace::model::{timeline, Keep, ModelBuilder};
use carousel_trace::render::{outcome, text};
use carousel_trace::verdict::{Ending, Verdict};

use crate::emulator::Backend;
use crate::session::{
    execute, record_stream_file, Console, Finished, RunError, RunOptions, EXIT_SETUP,
};

/// Runs a lab (`carousel run`): shows it live (without the live figures when `quiet`), then
/// prints the outcome table, the accounting, what was persisted and the result line; returns
/// the exit code of the verdict (or [`EXIT_SETUP`] when the VMs passed but a disk write-back
/// failed). Interrupted, it prints all that as far as the records go.
pub fn run(options: &RunOptions, quiet: bool, interrupted: &AtomicBool) -> Result<i32, RunError> {
    let console = if quiet {
        Console::LiveQuiet
    } else {
        Console::Live
    };
    let finished = execute(options, console, interrupted)?;
    let outcome = &finished.outcome;
    println!();
    print!("{}", outcome::table(outcome));
    let accounting = finished.accounting();
    if accounting.has_summaries() {
        println!();
        print!("{}", text::report(accounting));
        println!();
    } else if finished.ending == Ending::ScriptsFinished {
        println!();
        println!(
            "accounting: none (the tool ended the run once the scripts finished; the hypervisor \
             sends its summaries when every VM has stopped)"
        );
        println!();
    } else if finished.ending == Ending::Interrupted {
        println!();
        print!("{}", partial_report(&finished));
        println!();
    } else if outcome.verdict == Verdict::Passed {
        println!();
        print!("{}", text::report(accounting));
        println!();
    }
    let latencies = text::latencies(&finished.model);
    if !latencies.is_empty() {
        print!("{latencies}");
        println!();
    }
    if !finished.stream_warnings.is_empty() {
        let count = finished.stream_warnings.len();
        println!(
            "warning: COM2 had {count} problem{} (see above)",
            if count == 1 { "" } else { "s" }
        );
    }
    for line in &finished.persisted {
        println!("{line}");
    }
    println!("{}", outcome::result_line(outcome));
    if outcome.verdict == Verdict::HypervisorFailed {
        for hint in failure_hints(finished.backend, &finished.out) {
            println!("{hint}");
        }
    }
    println!("artifacts: {}", finished.out.display());
    if let Some(trace) = &options.trace {
        let stream = finished
            .out
            .join(record_stream_file(finished.backend, &finished.lab));
        let copied = match finished.lab.trace {
            TraceLevel::Full => fs::read(&stream)
                .map(|bytes| frames_only(&bytes))
                .and_then(|frames| fs::write(trace, &frames).map(|()| frames.len() as u64)),
            _ => fs::copy(&stream, trace),
        };
        match copied {
            Ok(bytes) => println!(
                "trace: {} ({bytes} bytes; `carousel report` reads it)",
                trace.display()
            ),
            Err(error) => println!(
                "warning: cannot write the trace {}: {error}",
                trace.display()
            ),
        }
    }
    if finished.persist_failed && outcome.exit_code() == 0 {
        println!("error: a disk write-back failed (see above); exit code {EXIT_SETUP}");
        return Ok(EXIT_SETUP);
    }
    Ok(outcome.exit_code())
}

/// The accounting of a run cut short before the hypervisor sent its summaries (a second
/// Ctrl-C, or a hypervisor that did not answer the first), as far as the records go: what the
/// summary-less report says (memory, ballooning), each VM's runstates over the whole run from
/// the scheduler's events (one interval), and the exits by reason. The run's own model keeps no
/// timeline, so the records are folded again, keeping everything.
fn partial_report(finished: &Finished) -> String {
    let weights = finished.lab.vms.iter().map(|vm| vm.weight).collect();
    let mut builder = ModelBuilder::with_weights(Keep::Everything, weights);
    for record in &finished.records {
        builder.add(record);
    }
    let model = &builder.finish();
    let mut out = text::report(&model.accounting);
    let _ = writeln!(
        out,
        "what the records say up to the interrupt (the hypervisor's summaries never came):"
    );
    let whole_run = model.timeline.as_ref().and_then(|timeline| {
        timeline::intervals(
            timeline,
            &model.samples.exit_intervals,
            timeline.length().max(1),
        )
    });
    match whole_run {
        Some(rows) => out.push_str(&text::intervals(model, &rows)),
        None => out.push_str("no scheduler events arrived\n"),
    }
    let exits = text::exit_table(&model.accounting, None);
    if !exits.rows().is_empty() {
        out.push_str(
            "\nEXITS (all VMs; cost = root-mode cycles from the exit to the next entry)\n",
        );
        out.push_str(&exits.render());
    }
    out
}

/// Where to look when the hypervisor could not run: the files, and the emulator's own
/// complaints (Bochs' VMFAIL lines: failed VM-entry checks).
fn failure_hints(backend: Backend, out: &Path) -> Vec<String> {
    let log = out.join(backend.log_file());
    let mut hints = vec![format!(
        "look at {} and {} (and {} for port 0xE9 output)",
        log.display(),
        out.join("com1.txt").display(),
        out.join(backend.e9_file()).display()
    )];
    let text = fs::read(&log)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .filter(|line| {
            line.contains("VMFAIL")
                || (line.contains(">>PANIC<<") && !line.contains("shutdown requested"))
        })
        .collect();
    let shown = &lines[lines.len().saturating_sub(5)..];
    if !shown.is_empty() {
        hints.push(format!("from {}:", log.display()));
        hints.extend(shown.iter().map(|line| format!("  {}", printable(line))));
    }
    hints
}

/// `line` with its control characters (terminal escapes in emulator output) written
/// visibly, at most 300 chars.
fn printable(line: &str) -> String {
    escape::capped(&escape::visible(line), 300)
}
