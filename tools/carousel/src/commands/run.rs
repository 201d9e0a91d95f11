//! `carousel run`: the lab run live, then the outcome table, the accounting, what was persisted
//! and the result line; where the hypervisor could not run, where to look.

use std::fs;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use carousel_protocol::record::TraceLevel;
use carousel_trace::decode::frames_only;
use carousel_trace::escape;
use carousel_trace::render::{outcome, text};
use carousel_trace::verdict::{Ending, Verdict};

use crate::emulator::Backend;
use crate::session::{execute, record_stream_file, Console, RunError, RunOptions, EXIT_SETUP};

/// Runs a lab (`carousel run`): shows it live, then prints the outcome table, the accounting,
/// what was persisted and the result line; returns the exit code of the verdict (or
/// [`EXIT_SETUP`] when the VMs passed but a disk write-back failed).
pub fn run(options: &RunOptions, interrupted: &AtomicBool) -> Result<i32, RunError> {
    let finished = execute(options, Console::Live, interrupted)?;
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
    } else if outcome.verdict == Verdict::Passed {
        println!();
        print!("{}", text::report(accounting));
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
