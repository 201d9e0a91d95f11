//! The outcome of a run as text: the table `carousel run` prints (one row per VM, its checks
//! beneath it, the last console lines of a failed script, the warnings and problems), and the
//! result line.

use std::fmt;

use crate::escape;
use crate::verdict::{Outcome, ScriptResult, Verdict};

/// The summary: [`table`], then [`result_line`].
pub fn summary(outcome: &Outcome) -> String {
    format!("{}{}", table(outcome), result_line(outcome))
}

/// The outcome table: one row per VM, its checks beneath it, then the warnings and problems;
/// every line ends with a newline.
pub fn table(outcome: &Outcome) -> String {
    use fmt::Write;
    let width = outcome
        .rows
        .iter()
        .map(|row| row.name.len())
        .chain([2])
        .max()
        .unwrap_or(2);
    let mut out = String::new();
    let _ = writeln!(out, "{:<width$}  {:<11}  REASON", "VM", "OUTCOME");
    for row in &outcome.rows {
        let _ = writeln!(
            out,
            "{:<width$}  {:<11}  {}",
            row.name,
            row.state.to_string(),
            escape::message(&row.reason)
        );
        for check in &row.checks {
            let _ = writeln!(
                out,
                "{:<width$}    check {} {}",
                "",
                escape::name(&check.name),
                if check.passed { "passed" } else { "FAILED" }
            );
        }
        if let Some(ScriptResult::Failed { last_lines, .. }) = &row.script {
            let _ = writeln!(out, "{:<width$}    last console lines of {}:", "", row.name);
            for line in last_lines {
                let _ = writeln!(out, "{:<width$}    | {}", "", escape::console_line(line));
            }
        }
    }
    for warning in &outcome.warnings {
        let _ = writeln!(out, "warning: {}", escape::message(warning));
    }
    for problem in &outcome.problems {
        let _ = writeln!(out, "{}", escape::message(problem));
    }
    out
}

/// The last line of a run's report: `result: passed (exit code 0)`.
pub fn result_line(outcome: &Outcome) -> String {
    format!(
        "result: {} (exit code {})",
        match outcome.verdict {
            Verdict::Passed => "passed",
            Verdict::VmFailed => "VM failure",
            Verdict::HypervisorFailed => "the hypervisor could not run",
            Verdict::TimedOut => "timed out",
            Verdict::Interrupted => "interrupted",
        },
        outcome.exit_code()
    )
}
