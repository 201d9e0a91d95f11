//! The verdict of a run: from the model's facts (what the records on COM2 said), the few COM1
//! lines that matter, each VM's console script and how the run ended, decide per VM whether it
//! passed and which exit code the tool returns.
//!
//! A VM without a script passes by its EXIT hypercall with success (and no failed check). A VM
//! with a script passes when every step matched, unless it stopped with a failure or a check
//! failed; it need not stop at all (xv6 never does).
//!
//! Everything here is a pure function of its inputs ([`decide`]), so each rule has a unit test.
//! The outcome as text is [`crate::render::outcome`]'s.

use std::fmt;

use carousel_protocol::record::StopReason;

use crate::model::verdict::{Fact, VerdictInputs};

/// COM1 prefix of the hypervisor's fatal-before-start messages (e.g. no VMX).
pub const ERROR_PREFIX: &str = "[carousel] error: ";
/// COM1 prefix of the hypervisor's panic message.
pub const PANIC_PREFIX: &str = "[carousel] PANIC";

/// How the emulator run ended, as the run loop saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The RunEnd record arrived (the emulator was then given a moment to exit, or killed).
    RunEnd,
    /// The emulator exited on its own before any RunEnd record.
    EmulatorExited,
    /// The tool stopped the emulator after a fatal COM1 line (error before Hello, or panic).
    FatalLine,
    /// The whole-run timeout expired.
    TimedOut,
    /// The user pressed Ctrl-C.
    Interrupted,
    /// Every VM had stopped or finished its console script (some had not stopped), so the tool
    /// ended the emulator: the hypervisor sent no RunEnd, and no summaries.
    ScriptsFinished,
}

/// Where one VM's console script ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptResult {
    /// Every step matched.
    Finished { steps: usize },
    /// A step timed out: the reason names it; the VM's last console lines explain it.
    Failed {
        reason: String,
        last_lines: Vec<String>,
    },
    /// Still waiting for step `step` (1-based) and its pattern `expect` when the run ended.
    Pending { step: usize, expect: String },
}

/// What a run produced, as [`decide`] needs it.
#[derive(Debug, Clone)]
pub struct RunFacts<'a> {
    /// VM names from the lab file, indexed by VM id.
    pub vm_names: &'a [String],
    /// What the records said about the VMs (hellos, checks, stops, the run's end), in arrival
    /// order.
    pub inputs: VerdictInputs,
    /// First COM1 line starting with [`ERROR_PREFIX`], if any.
    pub error_line: Option<&'a str>,
    /// First COM1 line starting with [`PANIC_PREFIX`], if any.
    pub panic_line: Option<&'a str>,
    pub ending: Ending,
    /// The whole-run limit that applied, seconds (for messages).
    pub timeout_s: u64,
    /// Each VM's console script, indexed by VM id (None, or a short slice: no script).
    pub scripts: &'a [Option<ScriptResult>],
}

/// The verdict, which fixes the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every VM stopped with success and passed all its checks.
    Passed,
    /// The run ended in order but some VM failed or never stopped.
    VmFailed,
    /// The hypervisor could not run: an error before Hello, a panic, or an emulator that died
    /// without RunEnd.
    HypervisorFailed,
    /// The whole-run timeout expired.
    TimedOut,
    /// Stopped by Ctrl-C.
    Interrupted,
}

impl Verdict {
    /// The process exit code of the `run` command.
    pub fn exit_code(self) -> i32 {
        match self {
            Verdict::Passed => 0,
            Verdict::VmFailed => 1,
            Verdict::HypervisorFailed => 3,
            Verdict::TimedOut => 4,
            Verdict::Interrupted => 130,
        }
    }
}

/// What became of one VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmState {
    Passed,
    Failed,
    /// No VmStopped record arrived.
    NotStopped,
}

impl fmt::Display for VmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VmState::Passed => "passed",
            VmState::Failed => "FAILED",
            VmState::NotStopped => "not stopped",
        })
    }
}

/// One named check a guest reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    pub name: String,
    pub passed: bool,
}

/// One VM's line in the summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmRow {
    pub name: String,
    pub state: VmState,
    /// Why it stopped (StopReason's Display), or why it did not.
    pub reason: String,
    /// The VmStopped record's reason, if one arrived.
    pub stop: Option<StopReason>,
    pub checks: Vec<CheckResult>,
    /// The VM's console script, if it has one.
    pub script: Option<ScriptResult>,
}

/// The decision: verdict, one row per VM, and the problems worth a line each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: Verdict,
    pub rows: Vec<VmRow>,
    /// Why the verdict is not [`Verdict::Passed`], one sentence each ("vm beta: exited with
    /// failure (0x11)").
    pub problems: Vec<String>,
    /// Inconsistencies in the record stream that do not change the verdict.
    pub warnings: Vec<String>,
}

impl Outcome {
    pub fn exit_code(&self) -> i32 {
        self.verdict.exit_code()
    }
}

/// Decides the outcome of a run.
pub fn decide(facts: &RunFacts<'_>) -> Outcome {
    let mut warnings = Vec::new();
    let mut hello_seen = false;
    let mut run_end_seen = false;
    let mut stopped: Vec<Option<StopReason>> = vec![None; facts.vm_names.len()];
    let mut checks: Vec<Vec<CheckResult>> = vec![Vec::new(); facts.vm_names.len()];

    for fact in &facts.inputs.facts {
        match fact {
            Fact::Hello { vms } => {
                if hello_seen {
                    warnings.push("a second Hello record arrived".to_string());
                }
                hello_seen = true;
                if vms.as_slice() != facts.vm_names {
                    warnings.push(format!(
                        "the hypervisor names the VMs {vms:?}, the lab file {:?}",
                        facts.vm_names
                    ));
                }
            }
            Fact::Check {
                vm, name, passed, ..
            } => match checks.get_mut(usize::from(*vm)) {
                Some(list) => list.push(CheckResult {
                    name: name.clone(),
                    passed: *passed,
                }),
                None => warnings.push(format!("a Check record names VM id {vm}, which no VM has")),
            },
            Fact::Stopped { vm, reason, .. } => match stopped.get_mut(usize::from(*vm)) {
                Some(slot @ None) => *slot = Some(reason.clone()),
                Some(Some(_)) => warnings.push(format!(
                    "VM {} stopped twice; the first reason stands",
                    facts.vm_names[usize::from(*vm)]
                )),
                None => warnings.push(format!(
                    "a VmStopped record names VM id {vm}, which no VM has"
                )),
            },
            Fact::RunEnd { .. } => run_end_seen = true,
        }
    }

    // Each row, and whether its reason is itself a problem (not so for a VM that failed only
    // through its checks: those are listed one by one).
    let rows: Vec<(VmRow, bool)> = facts
        .vm_names
        .iter()
        .zip(stopped)
        .zip(checks)
        .enumerate()
        .map(|(id, ((name, stop), checks))| {
            let script = facts.scripts.get(id).cloned().flatten();
            let checks_passed = checks.iter().all(|check| check.passed);
            let checks_state = if checks_passed {
                VmState::Passed
            } else {
                VmState::Failed
            };
            let (state, text, reason_is_problem) = match (&stop, &script) {
                // The tool ended the run because every script was done (or failed).
                (Some(StopReason::EndedByHost), Some(ScriptResult::Failed { reason, .. })) => {
                    (VmState::Failed, reason.clone(), true)
                }
                (Some(StopReason::EndedByHost), Some(ScriptResult::Finished { steps })) => (
                    checks_state,
                    format!(
                        "script finished ({steps} step{}); ended by the host",
                        if *steps == 1 { "" } else { "s" }
                    ),
                    false,
                ),
                // Ctrl-C: the tool asked the hypervisor to end the run, and it stopped the VMs
                // still running. They did not fail; the run was cut short.
                (Some(StopReason::EndedByHost), _) if facts.ending == Ending::Interrupted => (
                    VmState::NotStopped,
                    "still running when interrupted (the hypervisor ended it on the tool's \
                     request)"
                        .to_string(),
                    false,
                ),
                (Some(stop), _) if !stop.is_success() => (VmState::Failed, stop.to_string(), true),
                (_, Some(ScriptResult::Failed { reason, .. })) => {
                    (VmState::Failed, reason.clone(), true)
                }
                (Some(stop), Some(ScriptResult::Pending { step, expect })) => (
                    VmState::Failed,
                    format!("{stop} before its script finished (step {step} waits for {expect})"),
                    true,
                ),
                (Some(stop), _) => (checks_state, stop.to_string(), false),
                (None, Some(ScriptResult::Finished { steps })) => (
                    checks_state,
                    format!(
                        "script finished ({steps} step{})",
                        if *steps == 1 { "" } else { "s" }
                    ),
                    false,
                ),
                (None, Some(ScriptResult::Pending { step, expect })) => (
                    VmState::NotStopped,
                    format!(
                        "{}; script step {step} waits for {expect}",
                        not_stopped_reason(facts, hello_seen)
                    ),
                    true,
                ),
                (None, None) => (
                    VmState::NotStopped,
                    not_stopped_reason(facts, hello_seen),
                    true,
                ),
            };
            let row = VmRow {
                name: name.clone(),
                state,
                reason: text,
                stop,
                checks,
                script,
            };
            (row, reason_is_problem)
        })
        .collect();

    let vm_problems = || -> Vec<String> {
        let mut problems = Vec::new();
        for (row, reason_is_problem) in rows.iter().filter(|(row, _)| row.state != VmState::Passed)
        {
            if *reason_is_problem {
                problems.push(format!("vm {}: {}", row.name, row.reason));
            }
            for check in row.checks.iter().filter(|check| !check.passed) {
                problems.push(format!("vm {}: check {} FAILED", row.name, check.name));
            }
        }
        problems
    };

    let (verdict, problems) = if facts.ending == Ending::Interrupted {
        (
            Verdict::Interrupted,
            vec!["interrupted (Ctrl-C)".to_string()],
        )
    } else if let Some(line) = facts.panic_line {
        (
            Verdict::HypervisorFailed,
            vec![format!("the hypervisor panicked: {line}")],
        )
    } else if !hello_seen {
        match (facts.error_line, facts.ending) {
            (Some(line), _) => (Verdict::HypervisorFailed, vec![line.to_string()]),
            (None, Ending::ScriptsFinished) => (
                Verdict::HypervisorFailed,
                vec![
                    "the console scripts gave up before the hypervisor sent its Hello record"
                        .to_string(),
                ],
            ),
            (None, Ending::TimedOut) => (
                Verdict::TimedOut,
                vec![format!(
                    "the hypervisor sent no Hello record before the timeout ({} s)",
                    facts.timeout_s
                )],
            ),
            (None, _) => (
                Verdict::HypervisorFailed,
                vec![
                    "the emulator stopped before the hypervisor sent its Hello record".to_string(),
                ],
            ),
        }
    } else if facts.ending == Ending::TimedOut {
        let mut problems = vec![format!(
            "the run did not end before the timeout ({} s)",
            facts.timeout_s
        )];
        problems.extend(vm_problems());
        (Verdict::TimedOut, problems)
    } else if !run_end_seen && facts.ending != Ending::ScriptsFinished {
        let mut problems =
            vec!["the emulator stopped before the hypervisor sent its RunEnd record".to_string()];
        problems.extend(vm_problems());
        (Verdict::HypervisorFailed, problems)
    } else {
        let problems = vm_problems();
        if problems.is_empty() {
            (Verdict::Passed, problems)
        } else {
            (Verdict::VmFailed, problems)
        }
    };

    Outcome {
        verdict,
        rows: rows.into_iter().map(|(row, _)| row).collect(),
        problems,
        warnings,
    }
}

fn not_stopped_reason(facts: &RunFacts<'_>, hello_seen: bool) -> String {
    match facts.ending {
        Ending::EmulatorExited | Ending::FatalLine if !hello_seen => {
            "never started (the hypervisor did not start the run)".to_string()
        }
        Ending::TimedOut => format!("did not stop before the timeout ({} s)", facts.timeout_s),
        Ending::Interrupted => "still running when interrupted".to_string(),
        Ending::RunEnd => "never stopped (the run ended without its VmStopped record)".to_string(),
        Ending::ScriptsFinished => {
            "not stopped (the tool ended the run when the scripts finished)".to_string()
        }
        Ending::EmulatorExited | Ending::FatalLine => {
            "never stopped (the hypervisor did not finish the run)".to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use carousel_protocol::hypercall::{EXIT_FAILURE, EXIT_SUCCESS};
    use carousel_protocol::record::Record;

    use super::*;
    use crate::render::outcome::{result_line, summary, table};

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|name| name.to_string()).collect()
    }

    fn hello(vms: &[&str]) -> Record {
        crate::fixtures::hello(vms, 1_000_000)
    }

    fn stopped(vm: u16, reason: StopReason) -> Record {
        Record::VmStopped { tsc: 5, vm, reason }
    }

    fn exited(vm: u16, status: u32) -> Record {
        stopped(vm, StopReason::Exited { status })
    }

    fn check(vm: u16, name: &str, passed: bool) -> Record {
        Record::Check {
            tsc: 3,
            vm,
            name: name.to_string(),
            passed,
        }
    }

    const END: Record = Record::RunEnd { tsc: 9 };

    fn facts<'a>(vms: &'a [String], records: &[Record], ending: Ending) -> RunFacts<'a> {
        RunFacts {
            vm_names: vms,
            inputs: VerdictInputs::of_records(records),
            error_line: None,
            panic_line: None,
            ending,
            timeout_s: 30,
            scripts: &[],
        }
    }

    #[test]
    fn all_success_passes() {
        let vms = names(&["hello"]);
        let records = [
            hello(&["hello"]),
            check(0, "boot", true),
            exited(0, EXIT_SUCCESS),
            END,
        ];
        let outcome = decide(&facts(&vms, &records, Ending::RunEnd));
        assert_eq!(outcome.verdict, Verdict::Passed);
        assert_eq!(outcome.exit_code(), 0);
        assert_eq!(outcome.rows[0].state, VmState::Passed);
        assert_eq!(outcome.rows[0].reason, "exited with success (0x10)");
        assert!(outcome.problems.is_empty() && outcome.warnings.is_empty());
        let table = summary(&outcome);
        assert!(table.contains("check boot passed"), "{table}");
        assert!(table.ends_with("result: passed (exit code 0)"), "{table}");
    }

    #[test]
    fn failure_status_fails_and_names_the_vm() {
        let vms = names(&["alpha", "beta"]);
        let records = [
            hello(&["alpha", "beta"]),
            exited(1, EXIT_FAILURE),
            exited(0, EXIT_SUCCESS),
            END,
        ];
        let outcome = decide(&facts(&vms, &records, Ending::RunEnd));
        assert_eq!(outcome.exit_code(), 1);
        assert_eq!(outcome.rows[0].state, VmState::Passed);
        assert_eq!(outcome.rows[1].state, VmState::Failed);
        assert_eq!(
            outcome.problems,
            vec!["vm beta: exited with failure (0x11)"]
        );
    }

    #[test]
    fn triple_fault_fails() {
        let vms = names(&["boom"]);
        let records = [
            hello(&["boom"]),
            stopped(0, StopReason::TripleFault { rip: 0x1234 }),
            END,
        ];
        let outcome = decide(&facts(&vms, &records, Ending::RunEnd));
        assert_eq!(outcome.exit_code(), 1);
        assert_eq!(
            outcome.problems,
            vec!["vm boom: triple fault at rip 0x1234"]
        );
    }

    #[test]
    fn failed_check_fails_a_successful_exit() {
        let vms = names(&["x"]);
        let records = [
            hello(&["x"]),
            check(0, "one", true),
            check(0, "two", false),
            exited(0, EXIT_SUCCESS),
            END,
        ];
        let outcome = decide(&facts(&vms, &records, Ending::RunEnd));
        assert_eq!(outcome.exit_code(), 1);
        assert_eq!(outcome.rows[0].state, VmState::Failed);
        assert_eq!(outcome.problems, vec!["vm x: check two FAILED"]);
        let table = summary(&outcome);
        assert!(table.contains("check one passed"), "{table}");
        assert!(table.contains("check two FAILED"), "{table}");
    }

    #[test]
    fn a_vm_without_vm_stopped_fails_after_run_end() {
        let vms = names(&["a", "b"]);
        let records = [hello(&["a", "b"]), exited(0, EXIT_SUCCESS), END];
        let outcome = decide(&facts(&vms, &records, Ending::RunEnd));
        assert_eq!(outcome.exit_code(), 1);
        assert_eq!(outcome.rows[1].state, VmState::NotStopped);
        assert!(outcome.problems[0].starts_with("vm b: never stopped"));
    }

    #[test]
    fn other_status_is_a_failure() {
        let vms = names(&["a"]);
        let records = [hello(&["a"]), exited(0, 0), END];
        let outcome = decide(&facts(&vms, &records, Ending::RunEnd));
        assert_eq!(outcome.exit_code(), 1);
        assert_eq!(outcome.problems, vec!["vm a: exited with status 0x0"]);
    }

    #[test]
    fn timeout_lists_running_vms() {
        let vms = names(&["a", "x"]);
        let records = [hello(&["a", "x"]), exited(0, EXIT_SUCCESS)];
        let outcome = decide(&facts(&vms, &records, Ending::TimedOut));
        assert_eq!(outcome.exit_code(), 4);
        assert!(outcome
            .problems
            .contains(&"vm x: did not stop before the timeout (30 s)".to_string()));
        assert_eq!(outcome.rows[0].state, VmState::Passed);
    }

    #[test]
    fn timeout_without_hello() {
        let vms = names(&["a"]);
        let outcome = decide(&facts(&vms, &[], Ending::TimedOut));
        assert_eq!(outcome.exit_code(), 4);
    }

    #[test]
    fn error_line_without_hello_is_a_hypervisor_failure() {
        let vms = names(&["a"]);
        let line = "[carousel] error: this CPU cannot run Carousel: no VMX";
        for ending in [Ending::EmulatorExited, Ending::FatalLine, Ending::TimedOut] {
            let mut facts = facts(&vms, &[], ending);
            facts.error_line = Some(line);
            let outcome = decide(&facts);
            assert_eq!(outcome.exit_code(), 3);
            assert_eq!(outcome.problems, vec![line.to_string()]);
        }
    }

    #[test]
    fn panic_is_a_hypervisor_failure_even_after_hello() {
        let vms = names(&["a"]);
        let records = [hello(&["a"]), exited(0, EXIT_SUCCESS), END];
        let mut facts = facts(&vms, &records, Ending::RunEnd);
        facts.panic_line = Some("[carousel] PANIC at kernel/src/vm.rs:3: oops");
        let outcome = decide(&facts);
        assert_eq!(outcome.exit_code(), 3);
        assert!(outcome.problems[0].contains("oops"));
    }

    #[test]
    fn emulator_death_without_run_end() {
        let vms = names(&["a"]);
        let outcome = decide(&facts(&vms, &[], Ending::EmulatorExited));
        assert_eq!(outcome.exit_code(), 3);
        let records = [hello(&["a"]), exited(0, EXIT_SUCCESS)];
        let outcome = decide(&facts(&vms, &records, Ending::EmulatorExited));
        assert_eq!(outcome.exit_code(), 3);
        assert!(outcome.problems[0].contains("RunEnd"));
    }

    #[test]
    fn interrupt_wins() {
        let vms = names(&["a"]);
        let records = [hello(&["a"])];
        let outcome = decide(&facts(&vms, &records, Ending::Interrupted));
        assert_eq!(outcome.exit_code(), 130);
        assert_eq!(outcome.rows[0].reason, "still running when interrupted");
    }

    /// Ctrl-C answered in band: the hypervisor stopped the running VMs as "ended by the host".
    /// They were cut short, not failed; a VM that had already stopped keeps its own reason.
    #[test]
    fn an_answered_interrupt_is_not_a_failure() {
        let vms = names(&["a", "b"]);
        let records = [
            hello(&["a", "b"]),
            exited(1, EXIT_SUCCESS),
            stopped(0, StopReason::EndedByHost),
            END,
        ];
        let outcome = decide(&facts(&vms, &records, Ending::Interrupted));
        assert_eq!(outcome.exit_code(), 130);
        assert_eq!(outcome.rows[0].state, VmState::NotStopped);
        assert!(
            outcome.rows[0]
                .reason
                .starts_with("still running when interrupted"),
            "{:?}",
            outcome.rows[0]
        );
        assert_eq!(outcome.rows[1].state, VmState::Passed);
        // Without Ctrl-C, "ended by the host" stays what it says.
        let outcome = decide(&facts(&vms, &records, Ending::RunEnd));
        assert_eq!(outcome.rows[0].state, VmState::Failed);
    }

    #[test]
    fn inconsistent_records_warn() {
        let vms = names(&["a"]);
        let records = [
            hello(&["b"]),
            check(7, "c", true),
            exited(9, EXIT_SUCCESS),
            exited(0, EXIT_SUCCESS),
            exited(0, EXIT_FAILURE),
            END,
        ];
        let outcome = decide(&facts(&vms, &records, Ending::RunEnd));
        assert_eq!(outcome.exit_code(), 0);
        assert_eq!(outcome.warnings.len(), 4, "{:?}", outcome.warnings);
    }

    #[test]
    fn accounting_records_do_not_change_the_verdict() {
        use carousel_protocol::record::{RunSummary, VmSummary};
        let vms = names(&["a"]);
        let vm_summary = VmSummary {
            vm: 0,
            running: 1,
            runnable: 0,
            blocked: 0,
            stopped: 0,
            guest: 1,
            root: 0,
            slices: 1,
            preemptions: 0,
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
        };
        let run = RunSummary {
            policy: "round-robin".to_string(),
            quantum_cycles: 1,
            elapsed: 1,
            root: 0,
            idle: 0,
            switch_median: 0,
            switch_max: 0,
            switches: 0,
            dropped_records: 0,
        };
        let records = [
            hello(&["a"]),
            Record::GuestMetric {
                tsc: 1,
                vm: 7,
                name: "x".to_string(),
                value: 1,
            },
            exited(0, EXIT_SUCCESS),
            Record::VmSummary(vm_summary),
            Record::RunSummary(run),
            END,
        ];
        let outcome = decide(&facts(&vms, &records, Ending::RunEnd));
        assert_eq!(outcome.verdict, Verdict::Passed);
        assert!(outcome.warnings.is_empty(), "{:?}", outcome.warnings);
        assert_eq!(
            summary(&outcome),
            format!("{}{}", table(&outcome), result_line(&outcome))
        );
        assert!(table(&outcome).ends_with('\n'));
        assert_eq!(result_line(&outcome), "result: passed (exit code 0)");
    }

    fn finished(steps: usize) -> Option<ScriptResult> {
        Some(ScriptResult::Finished { steps })
    }

    #[test]
    fn a_run_the_host_ended_after_the_scripts_passes_only_scripted_vms() {
        let vms = names(&["xv6", "spin"]);
        let records = [
            hello(&["xv6", "spin"]),
            stopped(0, StopReason::EndedByHost),
            stopped(1, StopReason::EndedByHost),
            Record::RunEnd { tsc: 9 },
        ];
        let scripts = [finished(2), None];
        let mut facts = facts(&vms, &records, Ending::RunEnd);
        facts.scripts = &scripts;
        let outcome = decide(&facts);
        assert_eq!(outcome.rows[0].state, VmState::Passed, "{outcome:?}");
        assert_eq!(
            outcome.rows[0].reason,
            "script finished (2 steps); ended by the host"
        );
        assert_eq!(outcome.rows[1].state, VmState::Failed);
        assert_eq!(outcome.verdict, Verdict::VmFailed);
    }

    #[test]
    fn finished_scripts_pass_without_stopping() {
        let vms = names(&["xv6", "hello"]);
        let records = [hello(&["xv6", "hello"]), exited(1, EXIT_SUCCESS)];
        let scripts = [finished(3), None];
        let mut facts = facts(&vms, &records, Ending::ScriptsFinished);
        facts.scripts = &scripts;
        let outcome = decide(&facts);
        assert_eq!(outcome.verdict, Verdict::Passed, "{outcome:?}");
        assert_eq!(outcome.rows[0].state, VmState::Passed);
        assert_eq!(outcome.rows[0].reason, "script finished (3 steps)");
        assert_eq!(outcome.rows[1].reason, "exited with success (0x10)");
        assert!(outcome.problems.is_empty());
    }

    #[test]
    fn a_failed_script_fails_its_vm_and_shows_the_last_lines() {
        let vms = names(&["a", "b"]);
        let records = [hello(&["a", "b"])];
        let reason = "script step 2: no line matched /x/ within 5 s".to_string();
        let scripts = [
            Some(ScriptResult::Failed {
                reason: reason.clone(),
                last_lines: vec!["one".to_string(), "two".to_string()],
            }),
            finished(1),
        ];
        let mut facts = facts(&vms, &records, Ending::ScriptsFinished);
        facts.scripts = &scripts;
        let outcome = decide(&facts);
        assert_eq!(outcome.exit_code(), 1);
        assert_eq!(outcome.rows[0].state, VmState::Failed);
        assert_eq!(outcome.rows[1].state, VmState::Passed);
        assert_eq!(outcome.problems, vec![format!("vm a: {reason}")]);
        let table = summary(&outcome);
        assert!(table.contains("last console lines of a:"), "{table}");
        assert!(table.contains("| two"), "{table}");
    }

    #[test]
    fn scripts_do_not_excuse_failures() {
        let vms = names(&["a", "b", "c"]);
        let records = [
            hello(&["a", "b", "c"]),
            exited(0, EXIT_FAILURE),
            check(1, "disk", false),
            exited(2, EXIT_SUCCESS),
            END,
        ];
        let scripts = [
            finished(1),
            finished(1),
            Some(ScriptResult::Pending {
                step: 2,
                expect: "/ready/".to_string(),
            }),
        ];
        let mut facts = facts(&vms, &records, Ending::RunEnd);
        facts.scripts = &scripts;
        let outcome = decide(&facts);
        assert_eq!(outcome.exit_code(), 1);
        assert!(outcome.rows.iter().all(|row| row.state == VmState::Failed));
        assert_eq!(
            outcome.problems,
            vec![
                "vm a: exited with failure (0x11)".to_string(),
                "vm b: check disk FAILED".to_string(),
                "vm c: exited with success (0x10) before its script finished (step 2 waits \
                 for /ready/)"
                    .to_string(),
            ]
        );
    }

    #[test]
    fn a_pending_script_at_the_timeout_is_named() {
        let vms = names(&["a"]);
        let records = [hello(&["a"])];
        let scripts = [Some(ScriptResult::Pending {
            step: 1,
            expect: "/login/".to_string(),
        })];
        let mut facts = facts(&vms, &records, Ending::TimedOut);
        facts.scripts = &scripts;
        let outcome = decide(&facts);
        assert_eq!(outcome.exit_code(), 4);
        assert_eq!(
            outcome.problems[1],
            "vm a: did not stop before the timeout (30 s); script step 1 waits for /login/"
        );
    }

    #[test]
    fn scripts_ending_before_hello_is_a_hypervisor_failure() {
        let vms = names(&["a"]);
        let outcome = decide(&facts(&vms, &[], Ending::ScriptsFinished));
        assert_eq!(outcome.exit_code(), 3);
        assert!(
            outcome.problems[0].contains("Hello"),
            "{:?}",
            outcome.problems
        );
    }

    #[test]
    fn summary_has_one_row_per_vm() {
        let vms = names(&["alpha", "beta"]);
        let records = [
            hello(&["alpha", "beta"]),
            exited(0, EXIT_SUCCESS),
            exited(1, EXIT_FAILURE),
            END,
        ];
        let table = summary(&decide(&facts(&vms, &records, Ending::RunEnd)));
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("VM ") && lines[0].contains("OUTCOME"));
        assert!(lines[1].starts_with("alpha  passed "), "{table}");
        assert!(lines[2].starts_with("beta   FAILED "), "{table}");
        assert!(lines[2].ends_with("exited with failure (0x11)"), "{table}");
        assert_eq!(lines[3], "vm beta: exited with failure (0x11)");
        assert_eq!(lines[4], "result: VM failure (exit code 1)");
    }
}
