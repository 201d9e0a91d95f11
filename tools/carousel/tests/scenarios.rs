//! Scenario tests: the built `carousel` binary runs the labs in `ci/labs` (and a few written on
//! the spot) in an emulator and the tests check its console lines and exit status, for the
//! scheduling labs what the hypervisor measured (the records in the run directory's `com2.bin`),
//! and for the disk labs the images, and for `carousel sweep` the comparison it wrote. The
//! emulator ones are ignored by default (`ci/test` runs them with `--include-ignored`); the
//! broken-lab and broken-sweep tests run everywhere.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use carousel::emulator::Backend;
use carousel::image::disk::{blank_image, BLANK_MAGIC, SECTOR_BYTES};
use carousel::lab::Lab;
use carousel::session::record_stream_file;
use carousel_protocol::config::fnv1a64;
use carousel_protocol::record::{Event, Record, StopReason, TraceLevel};
use carousel_protocol::wire::{decode_all, Decoded};
use carousel_trace::decode::frames_only;
use carousel_trace::model::accounting::{Accounting, SLEEPY_WAKE_LATE, SPIN_ITERATIONS};
use serde_json::Value;

#[path = "support/chromium.rs"]
mod chromium;

/// The repository's `ci/labs` directory.
fn labs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ci/labs")
}

/// The backend the emulator scenarios run on: `bochs` (VMX), or what `CAROUSEL_TEST_BACKEND`
/// names (`ci/test` runs the suite again with `qemu`: TCG with AMD SVM).
fn backend() -> String {
    std::env::var("CAROUSEL_TEST_BACKEND").unwrap_or_else(|_| "bochs".to_string())
}

/// The scenarios checked on Bochs only, and why: Bochs' clock counts instructions, so its
/// figures repeat; under TCG the TSC and the LAPIC timer follow the host's wall clock, and a
/// loaded host moves them by milliseconds. The scenarios that name their backend in their name
/// (`*_on_qemu_svm`, `without_vmx_*`) run once, in the Bochs pass.
const QEMU_DEVIATIONS: &[(&str, &str)] = &[
    (
        "weights_give_proportional_shares",
        "shares within a few % of the weights; fair4_on_qemu_svm checks that none is starved",
    ),
    (
        "sleepy_wakes_within_one_turn",
        "a wake within the other slices plus 0.2 ms; the host moves TCG's clock by more",
    ),
    (
        "demo_passes_and_weights_show",
        "sleepy's wake bound and the weighted shares; demo_passes_on_qemu_svm checks the rest",
    ),
    (
        "a_scheduled_quantum_change_shows_in_the_trace",
        "the change within 1 ms of its time and every slice within half a quantum",
    ),
    (
        "a_fifo_disk_ignores_the_weights",
        "the device's 1 ms a request kept busy, and the shares within a few %",
    ),
    (
        "disk_weights_share_the_device",
        "the device's 1 ms a request kept busy, and the shares within a few %",
    ),
    (
        "fair4_shares_equally_and_preempts_with_interrupts_off",
        "shares within 3 points of a quarter; fair4_on_qemu_svm checks that none is starved",
    ),
    (
        "credit_caps_hold",
        "a 25 % cap within half a point of the run",
    ),
    (
        "keystroke_response_against_the_guest_alone",
        "the tool's keystroke response within one exit plus 1 % of the guest's own measure",
    ),
    (
        "keystroke_response_against_the_guest_beside_busy_vms",
        "the tool's keystroke response within one exit plus 1 % of the guest's own measure \
         (a host stall under TCG took 1.26 M cycles against a bound of 1.10 M)",
    ),
];

/// True, after saying why, when `test` is not checked on this run's backend.
fn not_on_this_backend(test: &str) -> bool {
    let backend = backend();
    if backend == "bochs" {
        return false;
    }
    let why = QEMU_DEVIATIONS
        .iter()
        .find(|(name, _)| *name == test)
        .map(|(_, why)| *why)
        .or_else(|| {
            (test.ends_with("_on_qemu_svm") || test.starts_with("without_vmx"))
                .then_some("it names its backend; it runs in the Bochs pass")
        });
    match why {
        Some(why) => {
            eprintln!("{test}: not checked on {backend}: {why}");
            true
        }
        None => false,
    }
}

/// What one `carousel run` printed, and how it ended.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    fn describe(&self) -> String {
        format!(
            "exit code {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn carousel(args: &[&str]) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(env!("CARGO_BIN_EXE_carousel"))
        .args(args)
        .output()
        .expect("the carousel binary starts");
    Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Runs `ci/labs/<lab>` on `backend` with a fresh run directory.
fn run_lab(lab: &str, backend: &str) -> Run {
    run_lab_kept(lab, backend).0
}

/// Runs `ci/labs/<lab>` on `backend`; the run directory lives as long as the returned handle.
fn run_lab_kept(lab: &str, backend: &str) -> (Run, tempfile::TempDir) {
    let out = tempfile::tempdir().expect("a temporary directory");
    let lab = labs().join(lab);
    let run = carousel(&[
        "run",
        lab.to_str().expect("a UTF-8 path"),
        "--backend",
        backend,
        "--out",
        out.path().to_str().expect("a UTF-8 path"),
    ]);
    (run, out)
}

/// Runs the lab file `lab` (anywhere) on Bochs with the run directory `out`, and `extra`
/// arguments.
fn run_file(lab: &Path, out: &Path, extra: &[&str]) -> Run {
    let backend = backend();
    let mut args = vec![
        "run",
        lab.to_str().expect("a UTF-8 path"),
        "--backend",
        &backend,
        "--out",
        out.to_str().expect("a UTF-8 path"),
    ];
    args.extend_from_slice(extra);
    carousel(&args)
}

/// Every record of a run directory's `com2.bin`; a damaged stream fails the test.
fn records_of(out: &Path, describe: &str) -> Vec<Record> {
    let bytes = std::fs::read(out.join("com2.bin")).expect("com2.bin is there");
    records_of_bytes(&bytes, describe)
}

/// Every record of a stream; a damaged stream fails the test.
fn records_of_bytes(bytes: &[u8], describe: &str) -> Vec<Record> {
    decode_all(bytes)
        .into_iter()
        .map(|item| match item {
            Decoded::Frame(frame) => frame.record,
            other => panic!("the record stream is damaged: {other:?}\n{describe}"),
        })
        .collect()
}

/// What one scheduling lab measured: the lab, every record of its COM2 stream, and the
/// accounting built from them.
struct Measured {
    lab: Lab,
    records: Vec<Record>,
    accounting: Accounting,
    /// The run's console and table output, for failure messages.
    describe: String,
}

impl Measured {
    /// Runs `ci/labs/<lab>` in Bochs, requires it to pass with an intact record stream, and
    /// decodes `com2.bin`.
    fn run(lab: &str) -> Self {
        Self::run_on(lab, &backend())
    }

    /// [`Self::run`] on `backend` (`bochs` or `qemu`: TCG with SVM).
    fn run_on(lab: &str, backend: &str) -> Self {
        let (run, out) = run_lab_kept(lab, backend);
        let describe = run.describe();
        assert_eq!(run.code, Some(0), "{describe}");
        let mechanism = if backend == "qemu" {
            "SVM on:"
        } else {
            "VMX on:"
        };
        assert!(
            describe.contains(mechanism),
            "not run on {backend}\n{describe}"
        );
        let lab = Lab::load(&labs().join(lab)).expect("the lab is valid");
        let records = if lab.trace == TraceLevel::Full {
            // The debug port's file also holds Bochs' own text: keep the frames.
            let which = if backend == "bochs" {
                Backend::Bochs
            } else {
                Backend::QemuSvm
            };
            let file = out.path().join(record_stream_file(which, &lab));
            let bytes = std::fs::read(&file).expect("the debug-port output is there");
            records_of_bytes(&frames_only(&bytes), &describe)
        } else {
            records_of(out.path(), &describe)
        };
        let weights: Vec<u32> = lab.vms.iter().map(|vm| vm.weight).collect();
        let accounting = Accounting::from_records(&records, &weights);
        assert!(accounting.run.is_some(), "no RunSummary\n{describe}");
        assert_eq!(
            accounting.vms.len(),
            lab.vms.len(),
            "VM count in the records\n{describe}"
        );
        for vm in &accounting.vms {
            assert!(
                vm.summary.is_some(),
                "no VmSummary for {}\n{describe}",
                vm.name
            );
        }
        Measured {
            lab,
            records,
            accounting,
            describe,
        }
    }

    /// The events agree with the summaries: per VM, slices begun, preemptions and wakes (and
    /// in a full-rate trace every exit).
    fn assert_events_match(&self) {
        assert!(self.accounting.has_events, "no events\n{}", self.describe);
        let mismatches = self.accounting.event_mismatches();
        assert!(mismatches.is_empty(), "{mismatches:#?}\n{}", self.describe);
        for vm in &self.accounting.vms {
            assert!(
                vm.events.runs > 0,
                "vm {}: no Run events\n{}",
                vm.name,
                self.describe
            );
        }
    }

    /// Every VM stopped with success (its own VmStopped record says so).
    fn assert_all_passed(&self) {
        for (id, vm) in self.lab.vms.iter().enumerate() {
            let stopped = self.records.iter().find_map(|record| match record {
                Record::VmStopped { vm, reason, .. } if usize::from(*vm) == id => Some(reason),
                _ => None,
            });
            assert!(
                stopped.is_some_and(|reason| reason.is_success()),
                "vm {}: {stopped:?}\n{}",
                vm.name,
                self.describe
            );
        }
    }

    /// VM `id` reported each of `checks` (CHECK hypercall) as passed.
    fn assert_checks_passed(&self, id: u16, checks: &[&str]) {
        for check in checks {
            assert!(
                self.records.iter().any(|record| matches!(record,
                    Record::Check { vm, name, passed: true, .. } if *vm == id && name == check)),
                "vm {id}: check {check} did not pass\n{}",
                self.describe
            );
        }
    }

    /// Σ guest + root + idle == elapsed, exactly; and each VM's runstates cover the run.
    fn assert_conservation(&self) {
        let conservation = self.accounting.conservation().expect("a RunSummary");
        assert!(
            conservation.holds(),
            "{conservation:?}: {:+} cycles\n{}",
            conservation.error(),
            self.describe
        );
        for (id, error) in self.accounting.runstate_errors() {
            assert_eq!(error, 0, "vm {id}'s runstates\n{}", self.describe);
        }
    }

    fn share(&self, name: &str) -> f64 {
        let vm = self.vm(name);
        self.accounting.cpu_share(vm.id).expect("a guest share")
    }

    fn vm(&self, name: &str) -> &carousel_trace::model::accounting::VmAccount {
        self.accounting
            .vms
            .iter()
            .find(|vm| vm.name == name)
            .unwrap_or_else(|| panic!("no VM {name}\n{}", self.describe))
    }
}

#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn hello_passes() {
    let run = run_lab("hello.toml", &backend());
    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert!(
        run.stdout
            .lines()
            .any(|line| line.starts_with("[hello] ") && line.contains("all checks passed")),
        "{}",
        run.describe()
    );
}

#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn hello_fail_fails() {
    let run = run_lab("hello-fail.toml", &backend());
    assert_eq!(run.code, Some(1), "{}", run.describe());
    assert!(
        run.stdout
            .lines()
            .any(|line| line.contains("hello-fail") && line.contains("failure")),
        "{}",
        run.describe()
    );
}

#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn hello_triple_fault_fails() {
    let run = run_lab("hello-triple.toml", &backend());
    assert_eq!(run.code, Some(1), "{}", run.describe());
    assert!(
        run.stdout
            .lines()
            .any(|line| line.contains("hello-triple") && line.contains("triple fault")),
        "{}",
        run.describe()
    );
}

#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn pair_fails_on_beta_and_alpha_passes() {
    let run = run_lab("hello-pair.toml", &backend());
    assert_eq!(run.code, Some(1), "{}", run.describe());
    assert!(
        run.stdout
            .lines()
            .any(|line| line == "vm beta: exited with failure (0x11)"),
        "{}",
        run.describe()
    );
    assert!(
        run.stdout
            .lines()
            .any(|line| line.starts_with("alpha ") && line.contains("passed")),
        "{}",
        run.describe()
    );
    assert!(
        !run.stdout.lines().any(|line| line.starts_with("vm alpha:")),
        "{}",
        run.describe()
    );
}

/// The demo lab on QEMU's software emulation, where the hypervisor runs on AMD SVM: every VM
/// passes, the accounting is conserved, the events agree with the summaries, and the weighted
/// spin gets about twice the other's CPU. TCG's clock is the host's wall clock, which a loaded
/// CI host disturbs by milliseconds (QEMU-SVM.md), so the band is wider than Bochs' and
/// sleepy's wake bound is left to the Bochs run.
#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn demo_passes_on_qemu_svm() {
    if not_on_this_backend("demo_passes_on_qemu_svm") {
        return;
    }
    let measured = Measured::run_on("demo.toml", "qemu");
    measured.assert_all_passed();
    measured.assert_conservation();
    measured.assert_events_match();
    assert!(
        measured.describe.contains("SVM on:"),
        "not the SVM backend\n{}",
        measured.describe
    );
    let id = |name: &str| measured.vm(name).id;
    let iterations = |vm: u16| -> Vec<u64> {
        measured
            .records
            .iter()
            .filter_map(|record| match record {
                Record::GuestMetric {
                    vm: v, name, value, ..
                } if *v == vm && name == SPIN_ITERATIONS => Some(*value),
                _ => None,
            })
            .collect()
    };
    // The ratio at each report both spins made while they competed (the last ones are after
    // spin-b ended), and its median: a host stall of QEMU shows in one report, not in all.
    let (a, b) = (iterations(id("spin-a")), iterations(id("spin-b")));
    let mut ratios: Vec<f64> = a
        .iter()
        .zip(&b)
        .take(6)
        .map(|(a, b)| *b as f64 / (*a).max(1) as f64)
        .collect();
    assert!(
        ratios.len() >= 5,
        "reports {a:?} and {b:?}\n{}",
        measured.describe
    );
    ratios.sort_by(f64::total_cmp);
    let ratio = ratios[ratios.len() / 2];
    assert!(
        (1.5..=2.5).contains(&ratio),
        "spin-b / spin-a = {ratio} (median of {ratios:?})"
    );
    // Every spin was preempted many times: the host LAPIC one-shot with the INTR intercept
    // takes the CPU from a guest with IF = 0.
    for name in ["spin-a", "spin-b"] {
        let summary = measured.vm(name).summary.as_ref().expect("a summary");
        assert!(summary.preemptions >= 20, "{name}: {summary:?}");
    }
}

#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn without_vmx_the_hypervisor_refuses() {
    if not_on_this_backend("without_vmx_the_hypervisor_refuses") {
        return;
    }
    let run = run_lab("hello.toml", "qemu-tcg");
    assert_eq!(run.code, Some(3), "{}", run.describe());
    assert!(
        run.stdout
            .lines()
            .any(|line| line.starts_with("[carousel] error: ") && line.contains("VMX")),
        "{}",
        run.describe()
    );
}

/// `run.deterministic` under QEMU (TCG with `-icount`): two runs of fair4 give every spin the
/// same guest cycles and the run the same length, to 10 ppm. Without it the shares follow the
/// host's load (see below), points apart from run to run.
#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn deterministic_runs_repeat_on_qemu() {
    let runs: Vec<Measured> = (0..2)
        .map(|_| Measured::run_on("fair4-deterministic.toml", "qemu"))
        .collect();
    let close = |a: u64, b: u64| a.abs_diff(b) as f64 <= a.max(b) as f64 * 1e-5;
    let elapsed: Vec<u64> = runs
        .iter()
        .map(|run| run.accounting.run.as_ref().expect("a run summary").elapsed)
        .collect();
    assert!(close(elapsed[0], elapsed[1]), "elapsed {elapsed:?}");
    for run in &runs {
        run.assert_all_passed();
        run.assert_conservation();
    }
    for (first, second) in runs[0].accounting.vms.iter().zip(&runs[1].accounting.vms) {
        let guest = |vm: &carousel_trace::model::accounting::VmAccount| {
            vm.summary.as_ref().expect("a summary").guest
        };
        assert!(
            close(guest(first), guest(second)),
            "{}: guest cycles {} and {}\n{}\n{}",
            first.name,
            guest(first),
            guest(second),
            runs[0].describe,
            runs[1].describe
        );
    }
}

/// fair4 on QEMU's TCG (SVM): every spin passes, the accounting holds, the events agree with
/// the summaries, and each spin, which runs with IF = 0, was preempted many times by the host
/// LAPIC's one-shot, and none is starved (at least 15 % of the CPU). Under TCG the TSC is the
/// host's clock, so how even the shares come out follows the host's load (32 % for one spin
/// on a loaded CI host): the exact shares are checked on Bochs, whose clock counts
/// instructions.
#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn fair4_on_qemu_svm_preempts_with_interrupts_off() {
    if not_on_this_backend("fair4_on_qemu_svm_preempts_with_interrupts_off") {
        return;
    }
    let measured = Measured::run_on("fair4.toml", "qemu");
    measured.assert_all_passed();
    measured.assert_conservation();
    measured.assert_events_match();
    for vm in &measured.accounting.vms {
        let summary = vm.summary.as_ref().expect("a summary");
        assert!(
            summary.preemptions >= 20,
            "{}: {summary:?}\n{}",
            vm.name,
            measured.describe
        );
        let share = measured.share(&vm.name);
        assert!(
            share >= 0.15,
            "{}: share {share}\n{}",
            vm.name,
            measured.describe
        );
    }
}

/// Four equal spins share the CPU equally. Spin runs with interrupts disabled (IF = 0)
/// throughout, so it never gives the CPU up: that each one was preempted many times checks that
/// the VMX-preemption timer takes the CPU from a guest with IF = 0.
#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn fair4_shares_equally_and_preempts_with_interrupts_off() {
    if not_on_this_backend("fair4_shares_equally_and_preempts_with_interrupts_off") {
        return;
    }
    let measured = Measured::run("fair4.toml");
    measured.assert_all_passed();
    measured.assert_conservation();
    measured.assert_events_match();
    // Working-set samples: spin touches a few dozen pages of its 1,024, a handful each period.
    for vm in &measured.accounting.vms {
        let memory = vm.memory.expect("a MemoryInfo record");
        assert!(
            memory.accessed_dirty,
            "Bochs has EPT A/D flags\n{}",
            measured.describe
        );
        assert_eq!(memory.ram_pages, 1024);
        assert!(memory.samples >= 2, "{memory:?}\n{}", measured.describe);
        assert!(
            (1..=100).contains(&memory.ever),
            "{memory:?}\n{}",
            measured.describe
        );
        assert!(memory.max_accessed >= memory.last_accessed && memory.max_accessed > 0);
    }
    let jain = measured
        .accounting
        .jain_guest(|_| true)
        .expect("guest cycles");
    assert!(jain >= 0.99, "Jain {jain}\n{}", measured.describe);
    for vm in &measured.accounting.vms {
        let share = measured.share(&vm.name);
        assert!(
            (share - 0.25).abs() <= 0.03,
            "{}: share {share}\n{}",
            vm.name,
            measured.describe
        );
        let summary = vm.summary.as_ref().expect("a summary");
        assert!(
            summary.preemptions >= 10,
            "{}: {} preemptions\n{}",
            vm.name,
            summary.preemptions,
            measured.describe
        );
        assert!(
            vm.metric(SPIN_ITERATIONS).is_some(),
            "{}",
            measured.describe
        );
    }
}

/// Weights 1, 2, 4 give CPU shares of 1/7, 2/7, 4/7.
///
/// Method: shares of the whole run's guest cycles. Each spin stops at its own start plus 2 s of
/// TSC time; the starts differ by 12 to 28 ms (w1 prints its start line over several of its
/// 1 ms slices), so all three compete for all but the edges of the run, where a share can only
/// be off by the edge's length. The test checks that assumption (no VM was stopped for more
/// than 2.5 % of the run) rather than trusting it. Measured: 15.14 %, 28.31 %, 56.55 % against
/// 14.29 %, 28.57 %, 57.14 %; the longest edge was 1.5 % of the run (at 1 s it reached 2.7 %
/// once the hypervisor's code moved the slices).
#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn weights_give_proportional_shares() {
    if not_on_this_backend("weights_give_proportional_shares") {
        return;
    }
    let measured = Measured::run("weights.toml");
    measured.assert_all_passed();
    measured.assert_conservation();
    let elapsed = measured
        .accounting
        .run
        .as_ref()
        .expect("a RunSummary")
        .elapsed;
    for (name, weight) in [("w1", 1.0), ("w2", 2.0), ("w4", 4.0)] {
        let stopped = measured
            .vm(name)
            .summary
            .as_ref()
            .expect("a summary")
            .stopped;
        assert!(
            stopped as f64 <= 0.025 * elapsed as f64,
            "{name} was stopped for {stopped} of {elapsed} cycles\n{}",
            measured.describe
        );
        let share = measured.share(name);
        let expected = weight / 7.0;
        assert!(
            (share - expected).abs() <= 0.02,
            "{name}: share {share}, expected {expected}\n{}",
            measured.describe
        );
    }
    let jain = measured
        .accounting
        .jain_guest(|_| true)
        .expect("guest cycles");
    assert!(jain >= 0.99, "weighted Jain {jain}\n{}", measured.describe);
}

/// Credit caps hold in Bochs: a `spin` capped at 25 % beside an uncapped one gets at most 25 %
/// of the run's elapsed time in guest mode (plus half a point: one slice's overshoot per 30 ms
/// period is 1/30 of a quantum, and the run's edges) and no less than 22 % (it is CPU-bound:
/// only root-mode time stands between it and its cap), while the uncapped one gets most of the
/// rest (all but the root-mode time and the capped VM's start and end). Measured: 24.0 % and
/// 68.6 % of 1.022 s, root 7.0 %, idle 0.4 % (the capped spin alone at the end, parked until
/// its refill). The report names the policy.
#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn credit_caps_hold() {
    if not_on_this_backend("credit_caps_hold") {
        return;
    }
    let measured = Measured::run("credit-cap.toml");
    measured.assert_all_passed();
    measured.assert_conservation();
    measured.assert_events_match();
    let run = measured.accounting.run.as_ref().expect("a RunSummary");
    assert_eq!(run.policy, "credit", "{}", measured.describe);
    let guest_share = |name: &str| {
        let guest = measured.vm(name).guest().expect("guest cycles");
        measured
            .accounting
            .share_of_elapsed(guest)
            .expect("a share")
    };
    let (capped, free) = (guest_share("capped"), guest_share("free"));
    assert!(
        capped <= 0.255,
        "capped: {capped:.4} of the run\n{}",
        measured.describe
    );
    assert!(
        capped >= 0.22,
        "capped: {capped:.4} of the run, held below its cap\n{}",
        measured.describe
    );
    assert!(
        free >= 0.65,
        "free: {free:.4} of the run (capped {capped:.4})\n{}",
        measured.describe
    );
    assert!(
        measured.describe.contains("policy credit"),
        "the report names the policy\n{}",
        measured.describe
    );
}

/// A quantum change the lab schedules shows in the trace at its time: `quantum-change.toml`
/// changes the quantum from 1 ms to 4 ms 400 ms into the run. The SettingChanged record lies
/// within one (old) slice of 400 ms after the run's first slice began (the run starts just
/// before it), no slice spans it, and every whole slice before it has the first length and every
/// one after it the second (each within the half of a slice a wall-clock slice may be shortened
/// by its last overrun, or run over by an exit).
#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn a_scheduled_quantum_change_shows_in_the_trace() {
    if not_on_this_backend("a_scheduled_quantum_change_shows_in_the_trace") {
        return;
    }
    use carousel_protocol::config::Setting;
    let measured = Measured::run("quantum-change.toml");
    measured.assert_all_passed();
    measured.assert_conservation();
    measured.assert_events_match();
    let describe = &measured.describe;
    // Cycles a millisecond: the lab's 50 MHz on Bochs, the calibrated TSC elsewhere.
    let ms = measured.accounting.tsc_hz.expect("the Hello's TSC rate") / 1000;
    let changes: Vec<(u64, Setting)> = measured
        .records
        .iter()
        .filter_map(|record| match *record {
            Record::SettingChanged { tsc, setting, .. } => Some((tsc, setting)),
            _ => None,
        })
        .collect();
    assert_eq!(changes.len(), 1, "{changes:?}\n{describe}");
    let (at, setting) = changes[0];
    assert_eq!(setting, Setting::Quantum { us: 4_000 });
    // Per VM, its slices as [Run, Descheduled).
    let mut slices: Vec<Vec<(u64, u64)>> = vec![Vec::new(); 2];
    let mut running = None;
    for record in &measured.records {
        if let Record::Events { tsc, events } = record {
            for (now, event) in carousel_protocol::record::timed_events(*tsc, events) {
                match *event {
                    Event::Run { vm, .. } => running = Some((vm, now)),
                    Event::Descheduled { vm, .. } => {
                        if let Some((_, since)) = running.take().filter(|&(id, _)| id == vm) {
                            slices[usize::from(vm)].push((since, now));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    let start = slices
        .iter()
        .filter_map(|s| s.first())
        .map(|s| s.0)
        .min()
        .expect("slices");
    let due = start + 400 * ms;
    assert!(
        at + ms >= due && at <= due + ms + ms / 5,
        "the change at {} ms into the run, due at 400 ms\n{describe}",
        (at - start) as f64 / ms as f64
    );
    for (vm, slices) in slices.iter().enumerate() {
        // The first and last slices begin and end the VM's run: of any length.
        let whole = &slices[1..slices.len() - 1];
        let before: Vec<u64> = whole
            .iter()
            .filter(|s| s.0 < at)
            .map(|s| s.1 - s.0)
            .collect();
        let after: Vec<u64> = whole
            .iter()
            .filter(|s| s.0 > at)
            .map(|s| s.1 - s.0)
            .collect();
        assert!(
            whole.iter().all(|&(begin, end)| end <= at || begin >= at),
            "vm {vm}: a slice spans the change\n{describe}"
        );
        assert!(
            before.len() > 100 && after.len() > 20,
            "vm {vm}: {} and {} slices",
            before.len(),
            after.len()
        );
        for (lengths, quantum) in [(&before, ms), (&after, 4 * ms)] {
            let (shortest, longest) =
                (lengths.iter().min().unwrap(), lengths.iter().max().unwrap());
            assert!(
                *shortest >= quantum / 2 && *longest <= quantum * 3 / 2,
                "vm {vm}: slices of {shortest} to {longest} cycles, quantum {quantum}\n{describe}"
            );
            let mean = lengths.iter().sum::<u64>() / lengths.len() as u64;
            assert!(
                mean.abs_diff(quantum) <= quantum / 10,
                "vm {vm}: mean slice {mean} cycles, quantum {quantum}\n{describe}"
            );
        }
    }
    assert!(
        measured.describe.contains("quantum 4 ms"),
        "the report lists the change\n{describe}"
    );
}

/// Slack on top of (N − 1) quanta for a wake-to-run latency, cycles: a fifth of a quantum (the
/// root-mode time of the slices in between) plus 30,000 cycles: exit handling, the switch, the
/// guest's own measurement, and one metrics-interval flush between two slices (encoding the
/// interval's exit statistics and event batch: about 22,000 cycles, measured with the events
/// of this lab). With 4 VMs and 50,000-cycle quanta the bound is 190,000 cycles, 3.8 quanta.
/// Measured on this lab: the latest wake was 178,936 cycles by the hypervisor's measure and
/// 179,509 by the guest's, when a flush fell just before the sleeper's turn. A kernel that
/// wakes a VM only between slices, so that it waits one slice more, measured 201,220 (4.02
/// quanta) and fails, as does any wake path that waits for a whole rotation plus a quantum.
const WAKE_SLACK_FIXED: u64 = 30_000;

/// A woken VM runs within one turn of the others: the latest wake is at most (N − 1) quanta
/// plus [`WAKE_SLACK_FIXED`] and a fifth of a quantum, by the hypervisor's measure and the
/// guest's own.
#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn sleepy_wakes_within_one_turn() {
    if not_on_this_backend("sleepy_wakes_within_one_turn") {
        return;
    }
    let measured = Measured::run("sleepy.toml");
    measured.assert_all_passed();
    measured.assert_conservation();
    measured.assert_events_match();
    let run = measured.accounting.run.as_ref().expect("a RunSummary");
    let vms = measured.lab.vms.len() as u64;
    assert_eq!(vms, 4);
    let bound = (vms - 1) * run.quantum_cycles + run.quantum_cycles / 5 + WAKE_SLACK_FIXED;
    let sleepy = measured.vm("sleepy");
    let summary = sleepy.summary.as_ref().expect("a summary");
    assert_eq!(summary.wakes, 30, "{}", measured.describe);
    assert!(
        summary.wake_max <= bound,
        "hypervisor: latest wake {} cycles, bound {bound}\n{}",
        summary.wake_max,
        measured.describe
    );
    let late = sleepy
        .metric(SLEEPY_WAKE_LATE)
        .expect("sleepy's wake metrics");
    assert_eq!(late.count, 30, "{}", measured.describe);
    assert!(
        late.max <= bound,
        "guest: latest wake {} cycles, bound {bound}\n{}",
        late.max,
        measured.describe
    );
    // The two views agree: the guest sees its wake a little later (after the entry), never
    // earlier, and never by more than the slack.
    assert!(
        late.max >= summary.wake_max && late.max - summary.wake_max <= WAKE_SLACK_FIXED,
        "guest {} vs hypervisor {}\n{}",
        late.max,
        summary.wake_max,
        measured.describe
    );
    // Sleepy spent its sleeps blocked, not runnable.
    assert!(summary.blocked > 0, "{}", measured.describe);
}

/// Sixteen VMs all boot, run and finish.
#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn many16_all_pass() {
    let measured = Measured::run("many16.toml");
    assert_eq!(measured.lab.vms.len(), 16);
    measured.assert_all_passed();
    measured.assert_conservation();
    for vm in &measured.accounting.vms {
        let summary = vm.summary.as_ref().expect("a summary");
        assert!(
            summary.guest > 0 && summary.slices > 0,
            "{}: {summary:?}",
            vm.name
        );
    }
}

/// The README's demo lab: four different guests pass, and the weighted spin gets about twice
/// the CPU of the other while both spin: each spin reports its iterations every 50 ms of its own
/// TSC time, and the weighted one has done about twice as many at its 300 ms report. (Shares of
/// the whole run depend on which spin exits first: the other has the CPU to itself after.)
#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn demo_passes_and_weights_show() {
    if not_on_this_backend("demo_passes_and_weights_show") {
        return;
    }
    let measured = Measured::run("demo.toml");
    measured.assert_all_passed();
    measured.assert_conservation();
    let report = |name: &str| {
        let id = measured.vm(name).id;
        measured
            .records
            .iter()
            .filter_map(|record| match record {
                Record::GuestMetric {
                    vm, name, value, ..
                } if *vm == id && name == SPIN_ITERATIONS => Some(*value),
                _ => None,
            })
            .nth(5)
            .unwrap_or_else(|| panic!("{name}: no 300 ms report\n{}", measured.describe))
    };
    let ratio = report("spin-b") as f64 / report("spin-a") as f64;
    assert!((1.8..=2.2).contains(&ratio), "spin-b / spin-a = {ratio}");
    // sleepy waits at most for the other VMs' slices (quantum × their weights: 1 + 2 + 1 ms)
    // plus 0.2 ms (issue 13: hello once held the CPU for 22 ms while printing).
    let tsc_hz = measured.accounting.tsc_hz.expect("the Hello's TSC rate");
    let others: u64 = measured
        .lab
        .vms
        .iter()
        .filter(|vm| vm.name != "sleepy")
        .map(|vm| u64::from(vm.weight))
        .sum();
    let bound = (u64::from(measured.lab.quantum_us) * others + 200) * tsc_hz / 1_000_000;
    let sleepy = measured
        .vm("sleepy")
        .summary
        .as_ref()
        .expect("sleepy's summary");
    assert!(
        sleepy.wake_max <= bound,
        "sleepy's latest wake {} cycles, bound {bound} (the other slices + 0.2 ms)\n{}",
        sleepy.wake_max,
        measured.describe
    );
}

/// A full-rate trace (`run.trace = "full"`) arrives through the debug port with every VM exit
/// as an event: per VM, the exit events equal the exit statistics' counts, and each exit
/// event's reason is one the statistics list.
#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn full_rate_trace_has_every_exit() {
    let measured = Measured::run("full2.toml");
    measured.assert_all_passed();
    measured.assert_conservation();
    measured.assert_events_match();
    for vm in &measured.accounting.vms {
        assert!(
            vm.events.exits > 0,
            "vm {}: no exit events\n{}",
            vm.name,
            measured.describe
        );
    }
    let reasons: std::collections::BTreeSet<(u16, u16)> = measured
        .records
        .iter()
        .filter_map(|record| match record {
            Record::Events { events, .. } => Some(events),
            _ => None,
        })
        .flatten()
        .filter_map(|event| match *event {
            Event::Exit { vm, reason, .. } => Some((vm, reason)),
            _ => None,
        })
        .collect();
    for (vm, reason) in reasons {
        assert!(
            measured.accounting.vms[usize::from(vm)]
                .exits
                .contains_key(&reason),
            "vm {vm}: exit reason {reason} in the events, not in the statistics\n{}",
            measured.describe
        );
    }
}

/// `carousel run --trace` keeps the record stream, and `carousel report --format json` reads it
/// back: the conservation rule holds and the four spins got equal shares. The trace's other
/// views follow ([`check_trace_views`]).
#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn fair4_trace_reports_as_json() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let trace = dir.path().join("fair4.trace");
    let run = run_file(
        &labs().join("fair4.toml"),
        &dir.path().join("run"),
        &["--trace", trace.to_str().expect("a UTF-8 path")],
    );
    assert_eq!(run.code, Some(0), "{}", run.describe());
    let report = carousel(&["report", trace.to_str().unwrap(), "--format", "json"]);
    assert_eq!(report.code, Some(0), "{}", report.describe());
    let json: serde_json::Value = serde_json::from_str(&report.stdout).expect("one JSON object");
    let vms = json["vms"].as_array().expect("vms");
    assert_eq!(vms.len(), 4, "{json:#}");
    let guest: Vec<u64> = vms
        .iter()
        .map(|vm| vm["guest_cycles"].as_u64().unwrap())
        .collect();
    let total: u64 = guest.iter().sum();
    let elapsed = json["elapsed_cycles"].as_u64().unwrap();
    let root = json["root_cycles"].as_u64().unwrap();
    let idle = json["idle_cycles"].as_u64().unwrap();
    assert_eq!(total + root + idle, elapsed, "conservation: {json:#}");
    for cycles in guest {
        let share = cycles as f64 / total as f64;
        assert!((share - 0.25).abs() <= 0.03, "share {share}: {json:#}");
    }
    assert_eq!(json["dropped"], 0);
    assert!(
        json["exits"]
            .as_array()
            .is_some_and(|exits| !exits.is_empty()),
        "{json:#}"
    );
    check_trace_views(&trace, &json, dir.path());
}

/// The other views of a trace whose JSON report is `json`: per-interval rows whose running time
/// adds up to each VM's; a Perfetto export with a CPU slice per slice the summaries count, none
/// overlapping, and each VM's runstates without gaps; and the report page, which renders in
/// headless Chromium with every chart (the memory grid from the working-set samples).
fn check_trace_views(trace: &Path, json: &serde_json::Value, dir: &Path) {
    let trace = trace.to_str().expect("a UTF-8 path");
    let vms = json["vms"].as_array().expect("vms");

    let rows = carousel(&["report", trace, "--interval", "20", "--format", "json"]);
    assert_eq!(rows.code, Some(0), "{}", rows.describe());
    let rows: serde_json::Value = serde_json::from_str(&rows.stdout).expect("one JSON object");
    let intervals = rows["intervals"].as_array().expect("intervals");
    assert!(intervals.len() >= 10, "{} intervals", intervals.len());
    for (id, vm) in vms.iter().enumerate() {
        let sum = |key: &str| -> u64 {
            intervals
                .iter()
                .map(|row| row["vms"][id][key].as_u64().unwrap())
                .sum()
        };
        assert_eq!(sum("running_cycles"), vm["running_cycles"], "{vm}");
        assert_eq!(sum("switches"), vm["slices"], "{vm}");
    }

    let export = dir.join("fair4.json");
    let run = carousel(&["export", trace, "--perfetto", export.to_str().unwrap()]);
    assert_eq!(run.code, Some(0), "{}", run.describe());
    let perfetto: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&export).expect("the export")).expect("JSON");
    let events = perfetto["traceEvents"].as_array().expect("traceEvents");
    let bounds = |pid: u64, tid: u64| -> Vec<(f64, f64)> {
        events
            .iter()
            .filter(|event| event["ph"] == "X" && event["pid"] == pid && event["tid"] == tid)
            .map(|event| {
                let ts = event["ts"].as_f64().unwrap();
                let dur = event["dur"].as_f64().unwrap();
                assert!(dur >= 0.0, "{event}");
                (ts, ts + dur)
            })
            .collect()
    };
    let cpu = bounds(1, 1);
    let slices: u64 = vms.iter().map(|vm| vm["slices"].as_u64().unwrap()).sum();
    assert_eq!(cpu.len() as u64, slices);
    for pair in cpu.windows(2) {
        assert!(
            pair[0].1 <= pair[1].0 + 1e-6,
            "CPU slices overlap: {pair:?}"
        );
    }
    for vm in 0..vms.len() as u64 {
        let runstates = bounds(10 + vm, 1);
        assert!(!runstates.is_empty(), "no runstates for VM {vm}");
        for pair in runstates.windows(2) {
            assert!((pair[0].1 - pair[1].0).abs() < 1e-6, "a gap: {pair:?}");
        }
    }

    let page = dir.join("fair4.html");
    let run = carousel(&["report", trace, "--html", page.to_str().unwrap()]);
    assert_eq!(run.code, Some(0), "{}", run.describe());
    let rendered = chromium::render(&page);
    chromium::assert_rendered(&rendered, &["share", "gantt", "donuts", "memory"]);
    assert_eq!(
        chromium::chart_records(&rendered.dom, "disk"),
        Some(0),
        "fair4 has no disk"
    );
    chromium::screenshot(
        &page,
        &chromium::repo_root().join("target/carousel/fair4.png"),
        (1400, 2400),
    );
}

/// Every check devcheck reports, in its order (guests/src/bin/devcheck.rs).
const DEVCHECK_CHECKS: [&str; 18] = [
    "bda",
    "mp-table",
    "lapic-init",
    "ioapic-init",
    "uart-init",
    "timer",
    "timer-spin",
    "timer-windows",
    "timer-hlt",
    "crtc",
    "cga",
    "ide-probe",
    "ide-read",
    "ide-write",
    "ide-readback",
    "kbd",
    "uart-rx",
    "no-unexpected-vectors",
];

/// The sectors of a disk image.
fn sectors(image: &[u8]) -> Vec<&[u8]> {
    image.chunks(SECTOR_BYTES).collect()
}

/// A GiB of blank disk boots and works: devcheck reads sector 0 and writes and reads back its
/// last 8 sectors (`ci/labs/disk-1g.toml`); the drive image in the run directory stays sparse.
#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn a_one_gib_sparse_disk_boots() {
    use std::os::unix::fs::MetadataExt;
    let (run, out) = run_lab_kept("disk-1g.toml", &backend());
    let describe = run.describe();
    assert_eq!(run.code, Some(0), "{describe}");
    assert!(
        run.stdout.contains("[big] devcheck: ide-readback: ok"),
        "{describe}"
    );
    let drive = std::fs::metadata(out.path().join("drive.img")).expect("the drive");
    assert!(drive.len() > 1 << 30, "{}", drive.len());
    assert!(drive.blocks() * 512 < 16 << 20, "{} blocks", drive.blocks());
    assert!(!out.path().join("big.disk").exists(), "not persisted");
}

/// What the drive cannot hold, or an image that cannot be a disk, is refused before anything
/// builds or boots: exit 2, naming the key, the VM and the file.
#[test]
fn disks_the_drive_cannot_take_are_refused() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let vm = |name: &str, disk: &str| {
        format!("[[vm]]\nname = \"{name}\"\nkernel = \"hello\"\nmemory_mib = 4\n{disk}\n")
    };
    let largest = "blank_disk_kib = 134217728";
    let too_much: String = (0..5).map(|i| vm(&format!("v{i}"), largest)).collect();
    std::fs::write(dir.path().join("odd.img"), [0u8; 1000]).expect("written");
    std::fs::File::create(dir.path().join("huge.img"))
        .and_then(|file| file.set_len((1 << 37) + 512))
        .expect("a sparse file");
    for (name, text, expected) in [
        (
            "drive.toml",
            too_much,
            vec![
                "`vm[3].blank_disk_kib`",
                "\"v3\"",
                "shared drive cannot hold it",
            ],
        ),
        (
            "odd.toml",
            vm("a", "disk = \"odd.img\""),
            vec![
                "`vm[0].disk`",
                "odd.img",
                "not a whole number of 512-byte sectors",
            ],
        ),
        (
            "huge.toml",
            vm("a", "disk = \"huge.img\""),
            vec!["`vm[0].disk`", "huge.img", "28-bit LBA"],
        ),
        (
            "missing.toml",
            vm("a", "disk = \"nowhere.img\""),
            vec!["`vm[0].disk`", "nowhere.img"],
        ),
    ] {
        let lab = dir.path().join(name);
        std::fs::write(&lab, text).expect("written");
        let run = carousel(&["run", lab.to_str().expect("a UTF-8 path")]);
        assert_eq!(run.code, Some(2), "{name}\n{}", run.describe());
        for part in expected {
            assert!(
                run.stderr.contains(part),
                "{name}: {part}\n{}",
                run.describe()
            );
        }
    }
    let run = carousel(&["persist", dir.path().to_str().expect("a UTF-8 path")]);
    assert_eq!(run.code, Some(2), "not a run directory\n{}", run.describe());
}

/// Four devcheck VMs pass every check of the xv6 hardware contract, each typing "ping" into its
/// console through its script (the check `uart-rx`), each on a 64 MiB extent of the shared
/// drive, writing its last sectors; dev0's disk comes back into the run directory.
#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn devcheck4_passes_every_check_on_every_vm() {
    devcheck4_on(&backend());
}

/// devcheck4 on QEMU's TCG, where the hypervisor runs on AMD SVM: the same checks (the devices,
/// string I/O to the disk decoded without the hardware's help, MMIO from nested page faults,
/// console input, persistence).
#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn devcheck4_passes_every_check_on_qemu_svm() {
    if not_on_this_backend("devcheck4_passes_every_check_on_qemu_svm") {
        return;
    }
    devcheck4_on("qemu");
}

/// The checks of devcheck4 on `backend`.
fn devcheck4_on(backend: &str) {
    let (run, out) = run_lab_kept("devcheck4.toml", backend);
    let describe = run.describe();
    assert_eq!(run.code, Some(0), "{describe}");
    let records = records_of(out.path(), &describe);
    for vm in 0..4u16 {
        for name in DEVCHECK_CHECKS {
            let passed = records.iter().any(|record| {
                matches!(record, Record::Check { vm: id, name: check, passed: true, .. }
                    if *id == vm && check == name)
            });
            assert!(passed, "dev{vm}: check {name} did not pass\n{describe}");
        }
        let checks = records
            .iter()
            .filter(|record| matches!(record, Record::Check { vm: id, .. } if *id == vm))
            .count();
        assert_eq!(checks, DEVCHECK_CHECKS.len(), "dev{vm}\n{describe}");
        for line in [
            format!("[carousel] script dev{vm} step 1: sending \"ping\\n\""),
            format!("[dev{vm}] devcheck: received \"ping\""),
            format!("[dev{vm}] devcheck: all checks passed"),
        ] {
            assert!(run.stdout.lines().any(|l| l == line), "{line}\n{describe}");
        }
    }
    // dev0 persists into its blank disk: the last 8 of 131,072 sectors changed, nothing else.
    let disk0 = out.path().join("dev0.disk");
    let persisted = format!(
        "vm dev0: persisted its 65536 KiB disk to {}",
        disk0.display()
    );
    assert!(run.stdout.lines().any(|l| l == persisted), "{describe}");
    let blank = blank_image(65536);
    let image = std::fs::read(&disk0).expect("dev0.disk");
    assert_eq!(image.len(), blank.len());
    assert_eq!(&image[..BLANK_MAGIC.len()], BLANK_MAGIC);
    for (lba, (new, old)) in sectors(&image).iter().zip(sectors(&blank)).enumerate() {
        assert_eq!(
            new != &old,
            lba >= 131_064,
            "dev0.disk sector {lba}\n{describe}"
        );
    }
    // The others do not persist: their disks were never written outside the drive.
    for vm in 1..4 {
        assert!(
            !out.path().join(format!("dev{vm}.disk")).exists(),
            "dev{vm}"
        );
    }
}

/// A lab of one devcheck VM (no console input) on `disk.img` in `dir`, a fresh blank image of
/// 64 sectors; returns the lab's path.
fn devcheck_disk_lab(dir: &Path, persist: bool) -> PathBuf {
    std::fs::write(dir.join("disk.img"), blank_image(32)).expect("the image is written");
    let lab = dir.join("disk.toml");
    std::fs::write(
        &lab,
        format!(
            "[run]\ntsc_hz = 50_000_000\ntimeout_s = 120\n\n[[vm]]\nname = \"disk\"\n\
             kernel = \"devcheck\"\nmemory_mib = 8\ndisk = \"disk.img\"\n\
             args = \"disk_sectors=64\"\npersist = {persist}\n"
        ),
    )
    .expect("the lab file is written");
    lab
}

/// With `persist = true` the user's image changes in exactly the sectors devcheck wrote: its
/// scratch sectors, the last 8; sector 0 keeps its magic.
#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn persist_writes_back_exactly_the_written_sectors() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let lab = devcheck_disk_lab(dir.path(), true);
    let disk = dir
        .path()
        .join("disk.img")
        .canonicalize()
        .expect("the image");
    let before = std::fs::read(&disk).expect("the image");
    let run = run_file(&lab, &dir.path().join("run"), &[]);
    let describe = run.describe();
    assert_eq!(run.code, Some(0), "{describe}");
    let persisted = format!("vm disk: persisted its 32 KiB disk to {}", disk.display());
    assert!(run.stdout.lines().any(|l| l == persisted), "{describe}");
    let after = std::fs::read(&disk).expect("the image");
    assert_eq!(after.len(), before.len());
    assert_eq!(&after[..BLANK_MAGIC.len()], BLANK_MAGIC);
    let changed: Vec<usize> = sectors(&after)
        .iter()
        .zip(sectors(&before))
        .enumerate()
        .filter(|(_, (new, old))| *new != old)
        .map(|(lba, _)| lba)
        .collect();
    assert_eq!(changed, (56..64).collect::<Vec<_>>(), "{describe}");
    // No temporary copy is left next to it.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("the directory")
        .map(|entry| entry.expect("an entry").file_name())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
}

/// Without persist, the same run leaves the user's image byte for byte as it was.
#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn without_persist_the_disk_is_unchanged() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let lab = devcheck_disk_lab(dir.path(), false);
    let disk = dir.path().join("disk.img");
    let checksum = fnv1a64(&std::fs::read(&disk).expect("the image"));
    let run = run_file(&lab, &dir.path().join("run"), &[]);
    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert!(!run.stdout.contains("persisted"), "{}", run.describe());
    assert_eq!(
        fnv1a64(&std::fs::read(&disk).expect("the image")),
        checksum,
        "the image changed\n{}",
        run.describe()
    );
}

/// `disk_backend = "memory"`: the disk travels in the ISO as a module and is served in place;
/// devcheck reads its magic and writes and reads back its last sectors all the same, and no
/// shared drive is made.
#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn a_disk_in_memory_is_served_in_place() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(dir.path().join("disk.img"), blank_image(32)).expect("the image");
    let before = std::fs::read(dir.path().join("disk.img")).expect("the image");
    let lab = dir.path().join("memory.toml");
    std::fs::write(
        &lab,
        "[run]\ntsc_hz = 50_000_000\ntimeout_s = 120\ndisk_backend = \"memory\"\n\n\
         [[vm]]\nname = \"disk\"\nkernel = \"devcheck\"\nmemory_mib = 8\n\
         disk = \"disk.img\"\nargs = \"disk_sectors=64\"\n",
    )
    .expect("the lab");
    let out = dir.path().join("run");
    let run = run_file(&lab, &out, &[]);
    let describe = run.describe();
    assert_eq!(run.code, Some(0), "{describe}");
    assert!(
        run.stdout.contains("[disk] devcheck: ide-readback: ok"),
        "{describe}"
    );
    assert!(!out.join("drive.img").exists());
    assert_eq!(
        std::fs::read(dir.path().join("disk.img")).expect("the image"),
        before
    );
}

/// The ids of the processes whose command line names `needle` (the emulator of one run
/// directory, found by its bochsrc's path).
fn pids_naming(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|line| String::from_utf8_lossy(&line).contains(needle))
        })
        .collect()
}

/// Nothing a guest saw completed is lost when the emulator is killed mid-run: devcheck writes
/// its last 8 sectors and reads them back, then waits for console input that never comes; the
/// emulator is killed with SIGKILL from outside. The tool still copies the extent back, and the
/// image's checksum is the drive extent's; `carousel persist RUN_DIR` later does the same again.
#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn persist_survives_a_killed_emulator() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(dir.path().join("disk.img"), blank_image(32)).expect("the image");
    let lab = dir.path().join("kill.toml");
    std::fs::write(
        &lab,
        "[run]\ntsc_hz = 50_000_000\ntimeout_s = 200\n\n[[vm]]\nname = \"disk\"\n\
         kernel = \"devcheck\"\nmemory_mib = 8\ndisk = \"disk.img\"\npersist = true\n\
         args = \"disk_sectors=64 expect_input=never input_timeout_ms=50000\"\n",
    )
    .expect("the lab");
    let out = dir.path().join("run");
    let disk = dir.path().join("disk.img");
    let before = std::fs::read(&disk).expect("the image");
    let backend = backend();
    let child = Command::new(env!("CARGO_BIN_EXE_carousel"))
        .args([
            "run",
            lab.to_str().expect("UTF-8"),
            "--backend",
            &backend,
            "--quiet",
        ])
        .args(["--out", out.to_str().expect("UTF-8")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("carousel starts");
    let readback = "[disk] devcheck: ide-readback: ok";
    let start = std::time::Instant::now();
    while !std::fs::read_to_string(out.join("com1.txt")).is_ok_and(|text| text.contains(readback)) {
        assert!(start.elapsed().as_secs() < 150, "devcheck never read back");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // The emulator's command line names its bochsrc (Bochs) or its COM2 file (QEMU).
    let named = if backend == "bochs" {
        "bochsrc"
    } else {
        "com2.bin"
    };
    let named = out.join(named).display().to_string();
    let emulators = pids_naming(&named)
        .into_iter()
        .filter(|pid| *pid != child.id())
        .collect::<Vec<_>>();
    assert_eq!(emulators.len(), 1, "{emulators:?}");
    let killed = Command::new("kill")
        .args(["-KILL", &emulators[0].to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let output = child.wait_with_output().expect("carousel ends");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let describe = format!("{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert_ne!(output.status.code(), Some(0), "{describe}");
    let canonical = disk.canonicalize().expect("the image");
    let persisted = format!(
        "vm disk: persisted its 32 KiB disk to {}",
        canonical.display()
    );
    assert!(stdout.lines().any(|l| l == persisted), "{describe}");

    // The image is the drive's extent, sector for sector, and differs from before exactly in
    // devcheck's scratch sectors.
    let after = std::fs::read(&disk).expect("the image");
    let drive = std::fs::read(out.join("drive.img")).expect("the drive");
    let manifest = carousel::image::drive::read_manifest(&out).expect("the manifest");
    let extent = manifest.vms[0].extent;
    let start = extent.start as usize * SECTOR_BYTES;
    let extent_bytes = &drive[start..start + extent.sectors as usize * SECTOR_BYTES];
    assert_eq!(fnv1a64(&after), fnv1a64(extent_bytes), "{describe}");
    let changed: Vec<usize> = sectors(&after)
        .iter()
        .zip(sectors(&before))
        .enumerate()
        .filter(|(_, (new, old))| *new != old)
        .map(|(lba, _)| lba)
        .collect();
    assert_eq!(changed, (56..64).collect::<Vec<_>>(), "{describe}");

    // Had the tool been killed too, `carousel persist` does it from the run directory.
    std::fs::write(&disk, &before).expect("the old image back");
    let again = carousel(&["persist", out.to_str().expect("UTF-8")]);
    assert_eq!(again.code, Some(0), "{}", again.describe());
    assert!(again.stdout.contains(&persisted), "{}", again.describe());
    assert_eq!(std::fs::read(&disk).expect("the image"), after);
}

/// A script step that never matches fails its VM once its timeout has passed, naming the step
/// and showing the VM's last lines; the tool then ends the run (the VM itself would spin on
/// for seconds) and exits with 1.
#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn a_script_step_that_times_out_fails_the_vm() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let lab = dir.path().join("timeout.toml");
    std::fs::write(
        &lab,
        "[run]\ntimeout_s = 90\n\n[[vm]]\nname = \"slow\"\nkernel = \"spin\"\nmemory_mib = 4\n\
         args = \"ms=600000 report_ms=100000\"\n\n\
         [[vm.script]]\nexpect = '^spin: '\n\n\
         [[vm.script]]\nexpect = 'never printed'\ntimeout_s = 2\n",
    )
    .expect("the lab file is written");
    let start = std::time::Instant::now();
    let run = run_file(&lab, &dir.path().join("run"), &[]);
    let describe = run.describe();
    assert_eq!(run.code, Some(1), "{describe}");
    for line in [
        "vm slow: script step 2: no line matched /never printed/ within 2 s",
        "[carousel] all scripts finished (1 failed); ending the run",
    ] {
        assert!(run.stdout.lines().any(|l| l == line), "{line}\n{describe}");
    }
    assert!(
        run.stdout.contains("last console lines of slow:"),
        "{describe}"
    );
    assert!(start.elapsed().as_secs() < 60, "{describe}");
}

/// `carousel report --format json` of a run directory's `com2.bin`.
fn report_json(out: &Path) -> Value {
    let report = carousel(&[
        "report",
        out.join("com2.bin").to_str().expect("a UTF-8 path"),
        "--format",
        "json",
    ]);
    assert_eq!(report.code, Some(0), "{}", report.describe());
    serde_json::from_str(&report.stdout).expect("the report is JSON")
}

/// The report's per-interval disk figures (`--interval 100`, rebuilt by the tool from each
/// request's record) add up to the hypervisor's own end-of-run `disk_queue` rows: every VM's
/// requests and sectors, its largest wait and service; the device's queue never holds more than
/// one request per VM (each diskio VM has one outstanding) and is busy at most all the time.
fn assert_disk_intervals_add_up(out: &Path, summaries: &[Value]) {
    let report = carousel(&[
        "report",
        out.join("com2.bin").to_str().expect("a UTF-8 path"),
        "--format",
        "json",
        "--interval",
        "100",
    ]);
    assert_eq!(report.code, Some(0), "{}", report.describe());
    let report: Value = serde_json::from_str(&report.stdout).expect("the report is JSON");
    let intervals = report["intervals"].as_array().expect("intervals");
    assert!(intervals.len() >= 15, "{} intervals", intervals.len());
    for summary in summaries {
        let name = summary["vm"].as_str().expect("a VM name");
        let (mut requests, mut sectors, mut wait_max, mut service_max) = (0, 0, 0, 0);
        for interval in intervals {
            let disk = &interval["disk"];
            assert!(
                disk["queue_max"].as_u64().is_some_and(|max| max <= 4),
                "{disk}"
            );
            assert!(
                disk["busy_share"]
                    .as_f64()
                    .is_some_and(|share| share <= 1.0),
                "{disk}"
            );
            let vm = interval["vms"]
                .as_array()
                .and_then(|vms| vms.iter().find(|vm| vm["name"] == name))
                .expect("the VM's interval row");
            let figures = &vm["disk"];
            requests += figures["requests"].as_u64().expect("requests");
            sectors += figures["sectors_read"].as_u64().expect("read")
                + figures["sectors_written"].as_u64().expect("written");
            wait_max = wait_max.max(figures["wait_max"].as_u64().unwrap_or(0));
            service_max = service_max.max(figures["service_max"].as_u64().unwrap_or(0));
        }
        assert_eq!(requests, summary["requests"], "{name}: {summary}");
        assert_eq!(sectors, summary["sectors"], "{name}: {summary}");
        assert_eq!(wait_max, summary["wait_max"], "{name}: {summary}");
        assert_eq!(service_max, summary["service_max"], "{name}: {summary}");
    }
}

/// Runs `ci/labs/disk-shares.toml` (four interrupt-driven `diskio` VMs of disk weights 1, 2, 4
/// and 8, always waiting for their disk, in front of a device that takes 1 ms a request) with
/// the queue `policy`, and returns each VM's requests from the report's `disk_queue` rows, in
/// lab order, after checking what holds under any policy: the run passed, the device was kept
/// busy (its 1.5 s hold about 1,500 requests of 1 ms; at least `busy` of them), every request
/// took the device's 1 ms, and every VM sat blocked on its disk for most of the run.
fn disk_shares(policy: &str, busy: f64) -> Vec<f64> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let text = std::fs::read_to_string(labs().join("disk-shares.toml")).expect("the lab");
    let lab = dir.path().join("disk-shares.toml");
    std::fs::write(
        &lab,
        text.replace("policy = \"wfq\"", &format!("policy = \"{policy}\"")),
    )
    .expect("the lab is written");
    let out = dir.path().join("run");
    let run = run_file(&lab, &out, &[]);
    let describe = run.describe();
    assert_eq!(run.code, Some(0), "{describe}");
    assert!(run.stdout.contains("SHARED DISK"), "{describe}");
    assert!(run.stdout.contains("BLOCKED ON"), "{describe}");
    let report = report_json(&out);
    let rows = report["disk_queue"].as_array().expect("disk_queue rows");
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert_disk_intervals_add_up(&out, rows);
    // Cycles a millisecond: the lab's 50 MHz on Bochs, the calibrated TSC elsewhere.
    let ms = report["tsc_hz"].as_f64().expect("the report's TSC rate") / 1000.0;
    let mut requests = Vec::new();
    for (row, name) in rows.iter().zip(["w1", "w2", "w4", "w8"]) {
        assert_eq!(row["vm"], name, "{rows:?}");
        let figure = |key: &str| row[key].as_f64().unwrap_or_else(|| panic!("{key}: {row}"));
        // Histogram buckets: within 1 % of the device's 1 ms.
        assert!(
            (0.99 * ms..=1.01 * ms).contains(&figure("service_p50")),
            "{row}"
        );
        assert!(
            figure("blocked_disk") > 500.0 * ms,
            "{name} blocked on disk: {row}"
        );
        // The runstate reason in the scheduler events tells the same story as the shared
        // disk's own count: blocked on disk from each blocking slice end to its wake.
        let vm = report["vms"]
            .as_array()
            .and_then(|vms| vms.iter().find(|vm| vm["name"] == name))
            .unwrap_or_else(|| panic!("no vms row of {name}"));
        let on_disk = vm["blocked_on"]["disk"]
            .as_f64()
            .unwrap_or_else(|| panic!("{name} blocked_on: {vm}"));
        assert!(
            (on_disk - figure("blocked_disk")).abs() <= 0.02 * figure("blocked_disk"),
            "{name}: blocked on disk {on_disk} by the events, {} by the disk\n{vm}",
            figure("blocked_disk")
        );
        requests.push(figure("requests"));
    }
    let total: f64 = requests.iter().sum();
    assert!(
        (busy..=1_520.0).contains(&total),
        "the device served {total} requests in 1.5 s of 1 ms each: {requests:?}\n{describe}"
    );
    requests.iter().map(|count| count / total).collect()
}

/// Weighted fair queueing shares the contended disk by `disk_weight`: 1, 2, 4 and 8 get
/// 1/15, 2/15, 4/15 and 8/15 of the requests, each within 5 % of its share. Each VM has one
/// request at a time, so this needs the queue's anticipation (the lab's 1 ms window):
/// without it the weight-8 VM got 36 % and the weight-1 VM 9 % (a fixed point of "every other
/// request"). The device idles for the think time it anticipates, so it serves fewer requests
/// than under FIFO (measured: 1,312 against 1,504).
#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn disk_weights_share_the_device() {
    if not_on_this_backend("disk_weights_share_the_device") {
        return;
    }
    let shares = disk_shares("wfq", 1_150.0);
    for (share, weight) in shares.iter().zip([1.0, 2.0, 4.0, 8.0]) {
        let ideal = weight / 15.0;
        assert!(
            (share / ideal - 1.0).abs() <= 0.05,
            "weight {weight}: {:.2} % of the requests against {:.2} %: {shares:?}",
            share * 100.0,
            ideal * 100.0
        );
    }
}

/// FIFO serves the same four VMs in arrival order, whatever their weights: a quarter each,
/// within 5 %.
#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn a_fifo_disk_ignores_the_weights() {
    if not_on_this_backend("a_fifo_disk_ignores_the_weights") {
        return;
    }
    let shares = disk_shares("fifo", 1_400.0);
    for share in &shares {
        assert!((share / 0.25 - 1.0).abs() <= 0.05, "shares {shares:?}");
    }
}

/// VM 0's Input events (time, bytes) and Answer records (time) in stream order.
fn inputs_and_answers(records: &[Record]) -> (Vec<(u64, u32)>, Vec<u64>) {
    let mut inputs = Vec::new();
    let mut answers = Vec::new();
    for record in records {
        match record {
            Record::Events { tsc, events } => {
                for (now, event) in carousel_protocol::record::timed_events(*tsc, events) {
                    if let Event::Input { vm: 0, bytes, .. } = event {
                        inputs.push((now, *bytes));
                    }
                }
            }
            Record::Answer { tsc, vm: 0 } => answers.push(*tsc),
            _ => {}
        }
    }
    (inputs, answers)
}

/// Task latencies from the console, with Carousel's devcheck guest: its script step "ping"
/// is timed from the hypervisor delivering the typed line's first byte (an Input event) to the
/// console line that matched the next step, and the keystroke response from that input to the
/// guest's first output byte after it (an Answer record). Both are checked against the TSC
/// times of the same events in the trace, read here on their own (the console line's time is
/// its console event's, paired with com1.txt), in the run's table and in `carousel report`.
#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn step_durations_and_keystroke_response_come_from_the_trace() {
    use carousel_trace::model::console::{find_line, timed_lines, ConsoleLog};

    let dir = tempfile::tempdir().expect("a temporary directory");
    let lab = dir.path().join("steps.toml");
    std::fs::write(
        &lab,
        "[run]\nquantum_us = 1000\nips = 1_000_000\ntsc_hz = 50_000_000\ntimeout_s = 120\n\n\
         [[vm]]\nname = \"dev\"\nkernel = \"devcheck\"\nmemory_mib = 8\nargs = \"expect_input=ping\"\n\n\
         [[vm.script]]\nexpect = '^devcheck: waiting for input$'\nsend = \"ping\\n\"\nlabel = \"ping\"\n\n\
         [[vm.script]]\nexpect = '^devcheck: received \"ping\"$'\n",
    )
    .expect("the lab file is written");
    let out = dir.path().join("run");
    let run = run_file(&lab, &out, &[]);
    let describe = run.describe();
    assert_eq!(run.code, Some(0), "{describe}");
    assert!(run.stdout.contains("STEPS"), "{describe}");
    assert!(run.stdout.contains("KEYSTROKE RESPONSE"), "{describe}");

    // The same events, read from the trace and COM1 here.
    let records = records_of(&out, &describe);
    let com1 = std::fs::read_to_string(out.join("com1.txt")).expect("com1.txt is there");
    let names = vec!["dev".to_string()];
    let lines = timed_lines(&com1, &names, &ConsoleLog::of_records(&records)).expect("paired");
    let (waiting_at, waiting) =
        find_line(&lines[0], 0, "devcheck: waiting for input").expect("the prompt is timed");
    let (_, received) =
        find_line(&lines[0], waiting_at, "devcheck: received").expect("the answer is timed");
    let (inputs, answers) = inputs_and_answers(&records);
    assert_eq!(
        inputs.iter().map(|(_, bytes)| bytes).sum::<u32>(),
        5,
        "\"ping\\n\" is five bytes: {inputs:?}\n{describe}"
    );
    let sent = inputs[0].0;
    assert!(
        waiting <= sent && sent < received,
        "input at {sent} lies between the prompt ({waiting}) and the answer ({received})"
    );
    assert_eq!(answers.len(), 1, "one answer: {answers:?}\n{describe}");
    assert!(sent < answers[0] && answers[0] <= received, "{answers:?}");

    let json = report_json(&out);
    let rows = json["latencies"].as_array().expect("a latencies array");
    let step = rows
        .iter()
        .find(|row| row["kind"] == "step")
        .unwrap_or_else(|| panic!("a step row: {rows:?}"));
    assert_eq!(step["name"], "ping");
    assert_eq!(step["count"], 1);
    assert_eq!(step["mean_cycles"], received - sent, "{rows:?}");
    let keys = rows
        .iter()
        .find(|row| row["kind"] == "keystroke")
        .unwrap_or_else(|| panic!("a keystroke row: {rows:?}"));
    assert_eq!(keys["count"], 1);
    assert_eq!(keys["mean_cycles"], answers[0] - sent, "{rows:?}");
    eprintln!(
        "ping step {} cycles, keystroke response {} cycles (at 50 MHz)",
        received - sent,
        answers[0] - sent
    );
}

/// The `keyecho` lab of the keystroke scenarios: one `keyecho` VM answering five lines, typed
/// by one script step repeated five times (`send = "hello\n"`, `repeat = 5`), beside `busy`
/// CPU-bound `spin` VMs (whose scripts finish at their first line, so that the run ends once
/// keyecho is done), round robin at 5 ms.
fn keyecho_lab(busy: usize) -> String {
    let mut lab = String::from(
        "[run]\nquantum_us = 5000\nips = 1_000_000\ntsc_hz = 50_000_000\ntimeout_s = 180\n\n\
         [[vm]]\nname = \"key\"\nkernel = \"keyecho\"\nmemory_mib = 8\nargs = \"count=5\"\n\n\
         [[vm.script]]\nexpect = '^keyecho: ready$'\nsend = \"hello\\n\"\nlabel = \"hello\"\n\
         repeat = 5\n\n\
         [[vm.script]]\nexpect = '^keyecho: done, 5 lines \\(0 bytes dropped\\)$'\n",
    );
    for index in 0..busy {
        lab.push_str(&format!(
            "\n[[vm]]\nname = \"busy{index}\"\nkernel = \"spin\"\nmemory_mib = 4\n\
             args = \"ms=100000 report_ms=100000\"\n\n[[vm.script]]\nexpect = '^spin: '\n"
        ));
    }
    lab
}

/// One keystroke of the `keyecho` VM (VM 0) as both sides saw it, in cycles.
#[derive(Debug)]
struct Keystroke {
    /// The hypervisor's: the line's first Input event and the Answer (the response is the
    /// difference), and the runnable time between them, from the trace's runstates.
    input: u64,
    answer: u64,
    wait: u64,
    /// The guest's: its receive handler's TSC at the line's first byte (`key_start_tsc`) and
    /// from there to the answer's first byte (`key_cycles`).
    guest_start: u64,
    guest: u64,
    /// From the trace's runstates: blocked from the input to the guest's start (from the
    /// line's Input event, stamped once the whole line is in the UART, to the wake), and
    /// runnable within the guest's own interval (a descheduling the guest cannot see).
    blocked_before: u64,
    waited_inside: u64,
}

impl Keystroke {
    fn response(&self) -> u64 {
        self.answer - self.input
    }

    /// The hypervisor's figure less the guest's, less what the report shows apart: the wait
    /// for the CPU outside the guest's interval. What is left is the hypervisor's work the
    /// guest cannot see: the wake after the line is in (`blocked_before`), the entry that
    /// delivers the interrupt up to the handler's RDTSC, and the answer's OUT exit up to the
    /// hypervisor noting the byte. Negative when the figures contradict each other.
    fn remainder(&self) -> i128 {
        i128::from(self.response())
            - i128::from(self.guest)
            - (i128::from(self.wait) - i128::from(self.waited_inside))
    }
}

/// What a keystroke scenario measured.
struct KeyEchoRun {
    /// How many busy VMs ran beside keyecho.
    busy: usize,
    run: Run,
    keystrokes: Vec<Keystroke>,
    /// The costliest I/O-instruction exit of the keyecho VM in the run (the exit that carries
    /// the answer's byte), cycles.
    io_exit_max: u64,
    quantum: u64,
    /// `carousel report --format json`'s `latencies` rows of the keyecho VM.
    latencies: Vec<Value>,
}

/// Runs [`keyecho_lab`] with `busy` spins and gathers each keystroke from the records (Input
/// and Answer records, the guest's metrics, the runstates replayed by the trace's timeline).
/// Checks on the way what every such run must show: it passed; 30 bytes of input (six a
/// line) and five answers; five reports of each guest metric; the STEPS row of the repeated
/// step, five times; and the report's keystroke response and wait rows equal to the figures
/// computed here from the records.
fn run_keyecho(busy: usize) -> KeyEchoRun {
    use carousel_trace::model::timeline::{RunState, Span, Timeline};

    let dir = tempfile::tempdir().expect("a temporary directory");
    let lab = dir.path().join("keyecho.toml");
    std::fs::write(&lab, keyecho_lab(busy)).expect("the lab file is written");
    let out = dir.path().join("run");
    let run = run_file(&lab, &out, &[]);
    let describe = run.describe();
    assert_eq!(run.code, Some(0), "{describe}");
    let records = records_of(&out, &describe);

    let (inputs, mut answers) = inputs_and_answers(&records);
    let metric = |name: &str| -> Vec<u64> {
        records
            .iter()
            .filter_map(|record| match record {
                Record::GuestMetric {
                    vm: 0,
                    name: n,
                    value,
                    ..
                } if n == name => Some(*value),
                _ => None,
            })
            .collect()
    };
    answers.sort_unstable();
    assert_eq!(
        inputs.iter().map(|(_, bytes)| bytes).sum::<u32>(),
        30,
        "five times \"hello\\n\": {inputs:?}\n{describe}"
    );
    assert_eq!(answers.len(), 5, "{answers:?}\n{describe}");
    let (starts, cycles) = (metric("key_start_tsc"), metric("key_cycles"));
    assert_eq!(
        (starts.len(), cycles.len()),
        (5, 5),
        "{starts:?} {cycles:?}\n{describe}"
    );

    let timeline = Timeline::from_records(&records).expect("the trace has scheduler events");
    assert!(timeline.problems.is_empty(), "{:?}", timeline.problems);
    let spans = &timeline.runstates[0];
    let cycles_in = |spans: &[Span], state: RunState, from: u64, to: u64| -> u64 {
        spans
            .iter()
            .filter(|span| span.state == state)
            .map(|span| span.end.min(to).saturating_sub(span.start.max(from)))
            .sum()
    };
    let mut previous = 0;
    let keystrokes: Vec<Keystroke> = answers
        .iter()
        .zip(starts.iter().zip(&cycles))
        .map(|(&answer, (&guest_start, &guest))| {
            // The line's first byte: the first input after the previous answer.
            let input = inputs
                .iter()
                .map(|&(tsc, _)| tsc)
                .find(|&tsc| tsc > previous)
                .expect("an input before each answer");
            previous = answer;
            Keystroke {
                input,
                answer,
                wait: cycles_in(spans, RunState::Runnable, input, answer),
                guest_start,
                guest,
                blocked_before: cycles_in(spans, RunState::Blocked, input, guest_start),
                waited_inside: cycles_in(
                    spans,
                    RunState::Runnable,
                    guest_start,
                    guest_start + guest,
                ),
            }
        })
        .collect();

    let accounting = Accounting::from_records(&records, &vec![1; busy + 1]);
    let io_exit_max = accounting.vms[0]
        .exits
        .get(&30)
        .expect("keyecho's I/O-instruction exits")
        .max;
    let quantum = accounting
        .run
        .as_ref()
        .expect("a RunSummary")
        .quantum_cycles;

    let json = report_json(&out);
    let latencies: Vec<Value> = json["latencies"]
        .as_array()
        .expect("a latencies array")
        .iter()
        .filter(|row| row["vm"] == "key")
        .cloned()
        .collect();
    let row = |kind: &str| {
        latencies
            .iter()
            .find(|row| row["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} row: {latencies:?}"))
    };
    let step = row("step");
    assert_eq!(
        (&step["name"], &step["count"]),
        (&Value::from("hello"), &Value::from(5)),
        "the repeated step, timed five times: {latencies:?}"
    );
    let mean = |values: Vec<u64>| values.iter().sum::<u64>() / values.len() as u64;
    let responses: Vec<u64> = keystrokes.iter().map(Keystroke::response).collect();
    let waits: Vec<u64> = keystrokes.iter().map(|key| key.wait).collect();
    let keys = row("keystroke");
    assert_eq!(keys["count"], 5, "{latencies:?}");
    assert_eq!(keys["mean_cycles"], mean(responses), "{latencies:?}");
    let wait = row("keystroke_wait");
    assert_eq!(wait["name"], "waiting for its turn");
    assert_eq!(wait["count"], 5, "{latencies:?}");
    assert_eq!(wait["mean_cycles"], mean(waits.clone()), "{latencies:?}");
    let longest = waits.iter().max().copied().expect("five waits");
    assert_eq!(wait["max_cycles"], longest, "{latencies:?}");
    for heading in ["STEPS", "KEYSTROKE RESPONSE"] {
        assert!(run.stdout.contains(heading), "{describe}");
    }
    assert!(
        run.stdout
            .lines()
            .any(|line| line.starts_with("key ") && line.contains("waiting for its turn")),
        "{describe}"
    );
    KeyEchoRun {
        busy,
        run,
        keystrokes,
        io_exit_max,
        quantum,
        latencies,
    }
}

/// Checks what holds for every keystroke, alone or beside busy VMs: the guest's interval lies
/// within the hypervisor's (so the hypervisor's figure is at least the guest's), and the
/// hypervisor's figure less the guest's, less the wait outside the guest's interval, which the
/// report shows apart ([`Keystroke::remainder`]), is at least 0 and at most one exit plus 1 %:
/// one exit being the costliest I/O-instruction exit of the same run, and 1 % of the
/// hypervisor's figure.
fn assert_keystrokes_agree(measured: &KeyEchoRun) {
    let describe = measured.run.describe();
    for (index, key) in measured.keystrokes.iter().enumerate() {
        let bound = measured.io_exit_max + key.response() / 100;
        let context = format!(
            "keystroke {}: {key:?}, response {}, remainder {}, bound {bound} (one exit {} + 1 %)\n\
             {describe}",
            index + 1,
            key.response(),
            key.remainder(),
            measured.io_exit_max
        );
        assert!(
            key.input <= key.guest_start && key.guest_start + key.guest <= key.answer,
            "the guest's interval lies within the hypervisor's: {context}"
        );
        assert!(key.response() >= key.guest, "{context}");
        assert!(
            (0..=i128::from(bound)).contains(&key.remainder()),
            "{context}"
        );
        eprintln!(
            "keyecho beside {} busy VMs: hypervisor {} cycles (wait {}, {} of it inside the \
             guest's, blocked {}), guest {}, remainder {} (one exit {} + 1 %)",
            measured.busy,
            key.response(),
            key.wait,
            key.waited_inside,
            key.blocked_before,
            key.guest,
            key.remainder(),
            measured.io_exit_max
        );
    }
}

/// Keystroke response against what the guest measures itself, the guest alone. `keyecho`
/// reads the TSC first thing in its receive handler at a line's first byte and again just
/// before the OUT of its answer's first byte (the hypervisor notes the Answer during that
/// OUT's exit), and reports the difference. The hypervisor's figure runs from the line's Input
/// event (stamped once the line is in the UART: the VM sees it whole) to the Answer, so it is
/// at least the guest's, and on top of it holds only:
/// - the wait for the CPU, which the report shows apart: alone, only the switch into the VM,
///   at most one exit's worth (checked). It used to be 8,097 to 9,503 cycles whenever a
///   metrics interval was due: the housekeeping pass flushed the interval's records before it
///   registered the wake, so its check that no woken VM waits found none;
/// - what the guest cannot see: the wake after the line is in, the entry that delivers the
///   interrupt, and the answer's OUT exit up to the note: within one exit (the costliest I/O
///   exit of the run) plus 1 % of the figure.
///
/// Measured (Bochs, 50 MHz TSC): responses of 31,455 cycles, the guest's 25,726, the wait
/// 2,435 (the end of the housekeeping pass that routed the line, and the switch), the
/// remainder 3,294 against one exit of 3,638 plus 1 %. Before the line's Input event was
/// stamped at its end, the hypervisor's clock also counted the routing of the line's other
/// bytes (1,883 cycles for six), outside that bound.
#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn keystroke_response_against_the_guest_alone() {
    if not_on_this_backend("keystroke_response_against_the_guest_alone") {
        return;
    }
    let measured = run_keyecho(0);
    assert_keystrokes_agree(&measured);
    for key in &measured.keystrokes {
        assert!(
            key.wait <= measured.io_exit_max,
            "alone, a keystroke waited {} cycles for the CPU, more than one exit ({}): {key:?}\n{}",
            key.wait,
            measured.io_exit_max,
            measured.run.describe()
        );
    }
}

/// Keystroke response against what the guest measures itself, beside three busy `spin` VMs
/// (round robin at 5 ms): the hypervisor's figure is still at least the guest's, and now
/// holds the wait for the guest's turn, which the report (text, JSON) shows apart as
/// `waiting for its turn`: at least one busy VM's quantum for every keystroke (measured over
/// three runs: about three quanta, 757,284 to 759,655 cycles of 787,841 to 790,212; the
/// guest's 25,681).
///
/// Less the whole wait, the figure could fall below the guest's: a VM descheduled after its
/// handler started waits inside the guest's own interval, and the guest counts that wait as
/// its own time (it cannot see it). So only the wait outside the guest's interval is taken
/// out (the part inside, from the runstates between the guest's two TSC readings, stays on
/// both sides), with the blocked time before the wake as alone, and the remainder must be 0
/// to one exit plus 1 % ([`assert_keystrokes_agree`]). Here the whole line arrives in one
/// routing pass, so nothing waits inside, and the remainder is 3,251 cycles against one exit
/// of 3,875 plus 1 %.
#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn keystroke_response_against_the_guest_beside_busy_vms() {
    if not_on_this_backend("keystroke_response_against_the_guest_beside_busy_vms") {
        return;
    }
    let measured = run_keyecho(3);
    assert_keystrokes_agree(&measured);
    for key in &measured.keystrokes {
        assert!(
            key.wait >= measured.quantum,
            "a keystroke waited less than one quantum ({}) behind three busy VMs: {key:?}\n{}",
            measured.quantum,
            measured.run.describe()
        );
    }
    eprintln!("report rows: {:?}", measured.latencies);
}

/// A run that reaches its timeout is ended by the hypervisor, not cut off: the verdict is
/// "timed out", yet the accounting report comes and the log says where each VM stood.
#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn a_run_that_times_out_still_reports() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let lab = dir.path().join("long.toml");
    std::fs::write(
        &lab,
        "[run]\ntimeout_s = 10\n\n[[vm]]\nname = \"long\"\nkernel = \"spin\"\nmemory_mib = 4\n\
         args = \"ms=600000 report_ms=100000\"\n",
    )
    .expect("the lab file is written");
    let run = run_file(&lab, &dir.path().join("run"), &[]);
    let describe = run.describe();
    assert_eq!(run.code, Some(4), "{describe}");
    assert!(
        run.stdout
            .contains("[carousel] the timeout has come; ending the run"),
        "{describe}"
    );
    let state = run
        .stdout
        .lines()
        .find(|line| line.starts_with("[carousel] vm long at the end: rip 0x"))
        .unwrap_or_else(|| panic!("no end state for the VM\n{describe}"));
    assert!(
        state.contains(" irr [") && state.contains(" isr ["),
        "{state}"
    );
    assert!(run.stdout.contains("ACCOUNTING"), "{describe}");
    assert!(
        run.stdout.contains("result: timed out (exit code 4)"),
        "{describe}"
    );
}

/// A VM that exits while its script still waits fails, naming the step it waited at.
#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn a_vm_that_exits_before_its_script_finished_fails() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let lab = dir.path().join("early.toml");
    std::fs::write(
        &lab,
        "[run]\ntimeout_s = 60\n\n[[vm]]\nname = \"hello\"\nkernel = \"hello\"\n\
         memory_mib = 8\n\n[[vm.script]]\nexpect = 'never printed'\ntimeout_s = 30\n",
    )
    .expect("the lab file is written");
    let run = run_file(&lab, &dir.path().join("run"), &[]);
    let describe = run.describe();
    assert_eq!(run.code, Some(1), "{describe}");
    let line = "vm hello: exited with success (0x10) before its script finished (step 1 waits \
                for /never printed/)";
    assert!(run.stdout.lines().any(|l| l == line), "{describe}");
}

#[test]
fn broken_lab_is_refused_before_anything_starts() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let lab = dir.path().join("broken.toml");
    std::fs::write(
        &lab,
        "[run]\ntimeout_s = 10\n\n[[vm]]\nname = \"a\"\nkernel = \"hello\"\nmemory_mib = 8\n\
         colour = \"blue\"\n",
    )
    .expect("the lab file is written");
    let out = dir.path().join("run");
    let run = carousel(&[
        "run",
        lab.to_str().expect("a UTF-8 path"),
        "--backend",
        "bochs",
        "--out",
        out.to_str().expect("a UTF-8 path"),
    ]);
    assert_eq!(run.code, Some(2), "{}", run.describe());
    assert!(run.output().contains("colour"), "{}", run.describe());
    assert!(run.output().contains("broken.toml"), "{}", run.describe());
    assert!(!out.exists(), "the run directory was created");
    assert!(
        !run.stdout.contains("building"),
        "a build started: {}",
        run.describe()
    );
}

/// A cap out of its range, a cap without the credit policy, a rate limit out of its range, or a
/// scheduled change out of its range or of a VM the lab lacks is refused before anything starts:
/// exit 2, naming the key.
#[test]
fn bad_credit_keys_are_refused() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let vm = "[[vm]]\nname = \"a\"\nkernel = \"spin\"\nmemory_mib = 4\n";
    let credit = "[run]\npolicy = \"credit\"\n";
    for (name, text, key, part) in [
        (
            "cap-range.toml",
            format!("{credit}{vm}cap_pct = 101\n"),
            "`vm[0].cap_pct`",
            "1..=100",
        ),
        (
            "cap-policy.toml",
            format!("[run]\npolicy = \"boost\"\n{vm}cap_pct = 25\n"),
            "`vm[0].cap_pct`",
            "run.policy = \"credit\"",
        ),
        (
            "ratelimit.toml",
            format!("{credit}[run.credit]\nratelimit_us = -1\n{vm}"),
            "`run.credit.ratelimit_us`",
            "0..=1000000",
        ),
        (
            "change-quantum.toml",
            format!("{credit}[[run.change]]\nat_ms = 10\nquantum_us = 0\n{vm}"),
            "`run.change[0].quantum_us`",
            "1..=1000000",
        ),
        (
            "change-vm.toml",
            format!("{credit}[[run.change]]\nat_ms = 10\nvm = \"b\"\ncap_pct = 5\n{vm}"),
            "`run.change[0].vm`",
            "no vm \"b\"",
        ),
    ] {
        let lab = dir.path().join(name);
        std::fs::write(&lab, text).expect("written");
        let run = carousel(&["run", lab.to_str().expect("a UTF-8 path")]);
        assert_eq!(run.code, Some(2), "{name}\n{}", run.describe());
        for expected in [key, part] {
            assert!(
                run.output().contains(expected),
                "{name}: {expected}\n{}",
                run.describe()
            );
        }
    }
}

#[test]
fn broken_lab_creates_no_default_run_dir() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let stem = format!("broken-lab-{}", std::process::id());
    let lab = dir.path().join(format!("{stem}.toml"));
    std::fs::write(
        &lab,
        "[[vm]]\nname = \"a\"\nkernel = \"hello\"\nmemory_mib = 1\n",
    )
    .expect("the lab file is written");
    let run = carousel(&["run", lab.to_str().expect("a UTF-8 path")]);
    assert_eq!(run.code, Some(2), "{}", run.describe());
    assert!(
        run.output().contains("vm[0].memory_mib"),
        "{}",
        run.describe()
    );
    let default = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/carousel/runs")
        .join(stem);
    assert!(!default.exists(), "{} was created", default.display());
}

#[test]
fn checked_in_labs_are_valid() {
    // `carousel run` on an unknown backend value is a usage error (2) before the lab is read,
    // so validate the labs through the library instead. `*.example.toml` labs name files
    // outside the repository through environment variables (xv6): every variable stands for
    // an ELF-looking placeholder here, one sector long so that it also passes as a disk image.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let placeholder = dir.path().join("placeholder.elf");
    let mut bytes = b"\x7fELF placeholder".to_vec();
    bytes.resize(SECTOR_BYTES, 0);
    std::fs::write(&placeholder, bytes).expect("the placeholder is written");
    let placeholder = placeholder.display().to_string();
    let env = |_: &str| Some(placeholder.clone());
    let mut examples = 0;
    for entry in std::fs::read_dir(labs()).expect("ci/labs exists") {
        let path = entry.expect("a directory entry").path();
        let name = path
            .file_name()
            .expect("a name")
            .to_string_lossy()
            .into_owned();
        if name.ends_with(".example.toml") {
            examples += 1;
            let text = std::fs::read_to_string(&path).expect("the lab is readable");
            if let Err(error) = Lab::parse_with_env(&path, &text, &env) {
                panic!("{error}");
            }
        } else if name.ends_with(".toml") {
            if let Err(error) = Lab::load(&path) {
                panic!("{error}");
            }
        }
    }
    assert!(examples >= 1, "xv6.example.toml is missing");
}

/// The labs written with templates read as the labs they stand for, written out VM by VM as
/// they were before templates (only the file's hash differs).
#[test]
fn template_labs_are_the_labs_they_stand_for() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let placeholder = dir.path().join("placeholder.elf");
    let mut bytes = b"\x7fELF placeholder".to_vec();
    bytes.resize(SECTOR_BYTES, 0);
    std::fs::write(&placeholder, bytes).expect("the placeholder is written");
    let placeholder = placeholder.display().to_string();
    let env = |_: &str| Some(placeholder.clone());
    let xv6_script = "[[vm.script]]\nexpect = '^\\$ $'\nsend = \"ls\\n\"\ntimeout_s = 300\n\
                      [[vm.script]]\nexpect = 'README'\ntimeout_s = 120\n\
                      [[vm.script]]\nexpect = '^\\$ $'\nsend = \"stressfs\\n\"\ntimeout_s = 120\n\
                      [[vm.script]]\nexpect = 'stressfs starting'\ntimeout_s = 120\n\
                      [[vm.script]]\nexpect = '^\\$ $'\ntimeout_s = 300\n";
    let xv6 = |name: &str| {
        format!(
            "[[vm]]\nname = \"{name}\"\nkernel = \"${{XV6_KERNEL}}\"\ndisk = \"${{XV6_FS}}\"\n\
             memory_mib = 224\n"
        )
    };
    let idle = |name: &str| {
        format!(
            "{}[[vm.script]]\nexpect = '^\\$ $'\ntimeout_s = 600\n",
            xv6(name)
        )
    };
    let written: [(&str, String); 3] = [
        (
            "many16.toml",
            (0..16)
                .map(|i| {
                    format!(
                        "[[vm]]\nname = \"spin{i}\"\nkernel = \"spin\"\nmemory_mib = 4\n\
                         args = \"ms=100 report_ms=50\"\n"
                    )
                })
                .collect(),
        ),
        (
            "xv6.example.toml",
            (0..4)
                .map(|i| format!("{}{xv6_script}", xv6(&format!("xv6-{i}"))))
                .collect(),
        ),
        (
            "xv6-usertests.example.toml",
            format!(
                "{}[[vm.script]]\nexpect = '^\\$ $'\nsend = \"usertests\\n\"\ntimeout_s = 600\n\
                 [[vm.script]]\nexpect = 'ALL TESTS PASSED'\ntimeout_s = 2900\n{}{}{}",
                xv6("ut"),
                idle("idle1"),
                idle("idle2"),
                idle("idle3")
            ),
        ),
    ];
    for (name, vms) in written {
        let path = labs().join(name);
        let text = std::fs::read_to_string(&path).expect("the lab is readable");
        // The file's [run] table, then its VMs written out.
        let run = text.find("[run]").expect("a [run] table");
        let end = text
            .find("\n[vm_defaults]")
            .or_else(|| text.find("\n[[vm]]"))
            .expect("VMs");
        let explicit = format!("{}\n{vms}", &text[run..end]);
        let templates = Lab::parse_with_env(&path, &text, &env).unwrap_or_else(|e| panic!("{e}"));
        let mut expected =
            Lab::parse_with_env(&path, &explicit, &env).unwrap_or_else(|e| panic!("{e}"));
        assert!(expected.vms.len() >= 4, "{name}: {explicit}");
        expected.hash = templates.hash;
        assert_eq!(templates, expected, "{name}");
    }
}

/// Bad templates are refused before anything builds or boots: exit 2, naming the key.
#[test]
fn bad_templates_are_refused_before_anything_starts() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let spin = "kernel = \"spin\"\nmemory_mib = 4\n";
    for (name, text, parts) in [
        (
            "zero.toml",
            format!("[[vm]]\nname = \"s{{i}}\"\ncount = 0\n{spin}"),
            vec!["`vm[0].count` = 0", "1..=64"],
        ),
        (
            "many.toml",
            format!("[[vm]]\nname = \"s{{i}}\"\ncount = 65\n{spin}"),
            vec!["`vm[0].count` = 65", "1..=64"],
        ),
        (
            "text.toml",
            format!("[[vm]]\nname = \"s{{i}}\"\ncount = \"4\"\n{spin}"),
            vec!["`vm[0].count` = \"4\"", "whole number"],
        ),
        (
            "total.toml",
            format!(
                "[[vm]]\nname = \"a{{i}}\"\ncount = 60\n{spin}\
                 [[vm]]\nname = \"b{{i}}\"\ncount = 5\n{spin}"
            ),
            vec!["`vm[1].count`", "65 VMs"],
        ),
        (
            "kernel.toml",
            "[vm_defaults]\nkernel = \"guest{i}.elf\"\n\
             [[vm]]\nname = \"s{i}\"\ncount = 2\nmemory_mib = 4\n"
                .to_string(),
            vec!["`vm_defaults.kernel`", "{i}"],
        ),
        (
            "clash.toml",
            format!("[[vm]]\nname = \"same\"\ncount = 2\n{spin}"),
            vec!["`vm[0].name`", "{i}"],
        ),
        (
            "range.toml",
            format!("[[vm]]\nname = \"w{{i}}\"\ncount = 4\n{spin}weight = 99\n"),
            vec!["`vm[0].weight` = 99", "vm \"w0\" (from [[vm]] 0, count 4)"],
        ),
        (
            "repeat.toml",
            format!(
                "[[vm]]\nname = \"r{{i}}\"\ncount = 2\n{spin}\
                 [[vm.script]]\nexpect = 'x'\nrepeat = 10001\n"
            ),
            vec!["`vm[0].script[0].repeat` = 10001", "1..=10000", "vm \"r0\""],
        ),
        (
            "label.toml",
            format!("[[vm]]\nname = \"l\"\n{spin}[[vm.script]]\nexpect = 'x'\nlabel = ''\n"),
            vec!["`vm[0].script[0].label`", "cannot be empty"],
        ),
    ] {
        let lab = dir.path().join(name);
        std::fs::write(&lab, text).expect("written");
        let out = dir.path().join(format!("{name}.run"));
        let run = carousel(&[
            "run",
            lab.to_str().expect("a UTF-8 path"),
            "--out",
            out.to_str().expect("a UTF-8 path"),
        ]);
        assert_eq!(run.code, Some(2), "{name}\n{}", run.describe());
        for part in parts {
            assert!(
                run.stderr.contains(part),
                "{name}: {part}\n{}",
                run.describe()
            );
        }
        assert!(!out.exists(), "{name}: the run directory was created");
    }
}

// ----- carousel sweep -----

fn path(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

fn json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// The rows of `summary` for `workload`, by ascending quantum.
fn line<'a>(summary: &'a Value, workload: &str) -> Vec<&'a Value> {
    let mut rows: Vec<&Value> = summary["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter(|row| row["workload"] == workload)
        .collect();
    rows.sort_by_key(|row| row["quantum_us"].as_u64());
    rows
}

fn figure(row: &Value, name: &str) -> f64 {
    row[name]
        .as_f64()
        .unwrap_or_else(|| panic!("row without {name}: {row:#}"))
}

/// The sweep compares settings within one run: `quantum-change.toml` goes from 1 ms to 4 ms
/// at 400 ms, and the sweep's figures for that run come in two phases cut at the change, each
/// naming the quantum in force, with about a quarter of the switches per second in the second
/// and both spins sharing each phase evenly.
#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn a_sweep_compares_the_phases_of_a_run() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let out = dir.path().join("sweep");
    let lab = labs().join("quantum-change.toml");
    let ran = carousel(&[
        "sweep",
        path(&lab),
        "--quantum",
        "1ms",
        "--jobs",
        "1",
        "--out",
        path(&out),
    ]);
    let describe = ran.describe();
    assert_eq!(ran.code, Some(0), "{describe}");
    assert!(ran.stdout.contains("PHASES within runs"), "{describe}");
    let summary = json(&out.join("summary.json"));
    let phases = &summary["rows"][0]["phases"];
    let phase = |name: &str| {
        phases[name]
            .as_f64()
            .unwrap_or_else(|| panic!("no {name}: {phases:#}\n{describe}"))
    };
    assert_eq!(phase("phase.0.quantum_us"), 1_000.0);
    assert_eq!(phase("phase.1.quantum_us"), 4_000.0);
    assert!(phases.get("phase.2.from_cycles").is_none(), "{phases:#}");
    // Made between two slices at 400 ms (50 MHz): within one 1 ms slice of it.
    let from = phase("phase.1.from_cycles");
    assert!(
        (19_950_000.0..=20_050_000.0).contains(&from),
        "the second phase starts at {from} cycles"
    );
    let ratio = phase("phase.0.switches_per_s") / phase("phase.1.switches_per_s");
    assert!(
        (3.5..=4.5).contains(&ratio),
        "1 ms slices against 4 ms ones: {ratio:.2} times the switches\n{phases:#}"
    );
    for index in 0..2 {
        for vm in ["a", "b"] {
            let share = phase(&format!("phase.{index}.share.{vm}"));
            assert!(
                (45.0..=52.0).contains(&share),
                "{vm} ran {share:.1} % of phase {index}\n{phases:#}"
            );
        }
    }
}

#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn sweep_mini_moves_the_figures_as_expected() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let out = dir.path().join("sweep");
    let lab = labs().join("sweep-mini.toml");
    let ran = carousel(&["sweep", path(&lab), "--jobs", "2", "--out", path(&out)]);
    let describe = ran.describe();
    assert_eq!(ran.code, Some(0), "{describe}");

    let summary = json(&out.join("summary.json"));
    let rows = summary["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 6, "3 quanta × 2 workloads\n{describe}");
    let lab_text = std::fs::read(&lab).expect("the lab is readable");
    let lab_hash = format!("{:#018x}", fnv1a64(&lab_text));
    for workload in ["cpu", "mix"] {
        let rows = line(&summary, workload);
        let quanta: Vec<u64> = rows
            .iter()
            .filter_map(|row| row["quantum_us"].as_u64())
            .collect();
        assert_eq!(quanta, [500, 2_000, 8_000], "{workload}");
        for row in &rows {
            assert_eq!(row["runs"], 1, "{row:#}");
            assert_eq!(row["policy"], "round-robin", "{row:#}");
            assert_eq!(row["lab_hash"], lab_hash.as_str(), "{row:#}");
            let commit = row["commit"].as_str().expect("a commit");
            assert!(!commit.is_empty() && commit != "unknown", "{row:#}");
            let jain = figure(row, "jain");
            assert!(jain > 0.0 && jain <= 1.0, "{row:#}");
            assert!(figure(row, "switches_per_s") > 0.0, "{row:#}");
            assert!(
                figure(row, "response_p99_cycles") >= figure(row, "response_p50_cycles"),
                "{row:#}"
            );
            assert!(
                row["throughput"]["aggregate"]["iterations/s"].as_f64() > Some(0.0),
                "{row:#}"
            );
            assert_eq!(
                row["throughput"]["vms"]["spin0"]["unit"], "iterations",
                "{row:#}"
            );
        }
        if workload == "mix" {
            assert!(rows
                .iter()
                .all(|row| row["throughput"]["vms"]["disk"]["per_s"].as_f64() > Some(0.0)));
        }
        // What the sweep is for: longer slices cost less root time per second...
        for pair in rows.windows(2) {
            let (shorter, longer) = (pair[0], pair[1]);
            assert!(
                figure(longer, "overhead_pct") < figure(shorter, "overhead_pct"),
                "{workload}: overhead must fall as the quantum grows\n{shorter:#}\n{longer:#}"
            );
            assert!(
                figure(longer, "switches_per_s") < figure(shorter, "switches_per_s"),
                "{workload}: fewer switches as the quantum grows\n{shorter:#}\n{longer:#}"
            );
            // ...and keep a waking interactive guest waiting longer.
            assert!(
                figure(longer, "wake_p99_cycles") > figure(shorter, "wake_p99_cycles"),
                "{workload}: interactive wake latency must rise with the quantum\n{shorter:#}\n\
                 {longer:#}"
            );
        }
        let knees = rows.iter().filter(|row| row["knee"] == true).count();
        assert_eq!(knees, 1, "one knee per line\n{describe}");
    }

    // Every run's directory holds its trace, its report and its result.
    for run in summary["runs"].as_array().expect("runs") {
        assert_eq!(run["status"], "ok", "{run:#}");
        let dir = out.join("runs").join(run["id"].as_str().expect("an id"));
        assert!(dir.join("trace.bin").is_file(), "{}", dir.display());
        let report = json(&dir.join("report.json"));
        assert!(report["elapsed_cycles"].as_u64() > Some(0), "{report:#}");
        let result = json(&dir.join("result.json"));
        assert_eq!(result["lab_hash"], lab_hash.as_str());
        assert_eq!(result["exit_code"], 0);
        assert!(
            !dir.join("carousel.iso").exists(),
            "the boot image is removed"
        );
    }
    let csv = std::fs::read_to_string(out.join("summary.csv")).expect("summary.csv");
    assert_eq!(csv.lines().count(), 7, "{csv}");
    let text = std::fs::read_to_string(out.join("summary.txt")).expect("summary.txt");
    assert!(
        ran.stdout.contains(&text),
        "the summary is printed\n{describe}"
    );
    let html = std::fs::read_to_string(out.join("summary.html")).expect("summary.html");
    assert!(html.contains("<svg") && html.contains("class=\"knee\""));
    assert!(!html.contains("<script") && !html.contains("http"));
    // Chromium draws it: a chart of each figure per workload (overhead, switches, Jain, wake
    // p99 and p50, response, timer lag, iterations; sectors for mix only).
    let rendered = chromium::render(&out.join("summary.html"));
    assert_eq!(
        rendered.dom.matches("<svg class=\"sweep-chart\"").count(),
        17,
        "{}",
        rendered.log
    );
    chromium::screenshot(
        &out.join("summary.html"),
        &chromium::repo_root().join("target/carousel/sweep-mini.png"),
        (1400, 2100),
    );

    // --collect rebuilds the same comparison from the run directories.
    let again = carousel(&["sweep", "--collect", path(&out)]);
    assert_eq!(again.code, Some(0), "{}", again.describe());
    assert_eq!(json(&out.join("summary.json"))["rows"], summary["rows"]);
}

#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn a_failed_run_is_recorded_and_the_sweep_goes_on() {
    // sleepy fails when a wake is later than 2 ms: it passes beside a spin at 500 us slices and
    // fails at 8 ms ones.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let lab = dir.path().join("bound.toml");
    std::fs::write(
        &lab,
        "[run]\nips = 1_000_000\ntsc_hz = 50_000_000\ntimeout_s = 60\n\
         [[vm]]\nname = \"spin0\"\nkernel = \"spin\"\nmemory_mib = 4\nargs = \"ms=150\"\n\
         [[vm]]\nname = \"sleepy\"\nkernel = \"sleepy\"\nmemory_mib = 4\n\
         args = \"period_us=3300 count=20 max_late_us=2000\"\n",
    )
    .expect("the lab is written");
    let out = dir.path().join("sweep");
    let ran = carousel(&[
        "sweep",
        path(&lab),
        "--quantum",
        "500us,8ms",
        "--jobs",
        "2",
        "--out",
        path(&out),
    ]);
    let describe = ran.describe();
    assert_eq!(ran.code, Some(1), "{describe}");
    let summary = json(&out.join("summary.json"));
    let rows = line(&summary, "all");
    assert_eq!(rows.len(), 2, "{describe}");
    assert_eq!(rows[0]["runs"], 1, "{describe}");
    assert_eq!(rows[0]["failed"], 0, "{describe}");
    assert!(rows[0]["overhead_pct"].is_number(), "{describe}");
    assert_eq!(rows[1]["runs"], 0, "{describe}");
    assert_eq!(rows[1]["failed"], 1, "{describe}");
    let failure = rows[1]["failures"][0].as_str().expect("a reason");
    assert!(
        failure.contains("sleepy") && failure.contains("failure"),
        "{failure}"
    );
    let result = json(&out.join("runs/all.round-robin.w-lab.q8ms.r1/result.json"));
    assert_eq!(result["status"], "failed");
    assert_eq!(result["exit_code"], 1);
    assert!(ran.stdout.contains("RUNS WITHOUT FIGURES"), "{describe}");
}

#[test]
fn bad_sweeps_are_refused_before_anything_starts() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let out = dir.path().join("sweep");
    let lab = labs().join("sweep-mini.toml");
    for (args, says) in [
        (
            vec!["--quantum", "500us,fast"],
            "--quantum: \"fast\" is not a quantum",
        ),
        (vec!["--quantum", "1ms,1000us"], "same quantum"),
        (vec!["--quantum", "5"], "give a number and a unit"),
        (
            vec!["--policy", "cfs"],
            "--policy: \"cfs\" is not a scheduling policy",
        ),
        (
            vec!["--weights", "1:2"],
            "has 2 weights, but the run has 3 VMs",
        ),
        (vec!["--workload", "io"], "no workload \"io\""),
        (vec!["--repeat", "0"], "--repeat 0"),
        (vec!["--jobs", "0"], "--jobs 0"),
        (
            vec!["--job"],
            "--job runs one configuration: --quantum has 3 values",
        ),
    ] {
        let mut all = vec!["sweep", path(&lab), "--out", path(&out)];
        all.extend(args.iter().copied());
        let ran = carousel(&all);
        assert_eq!(ran.code, Some(2), "{args:?}\n{}", ran.describe());
        assert!(ran.stderr.contains(says), "{args:?}\n{}", ran.describe());
        assert!(!out.exists(), "{args:?}: the sweep directory was made");
    }
    let broken = dir.path().join("broken.toml");
    std::fs::write(
        &broken,
        "[sweep]\nquantum = [\"1ms\"]\n[[vm]]\nname = \"a\"\n",
    )
    .expect("the lab is written");
    let ran = carousel(&["sweep", path(&broken), "--out", path(&out)]);
    assert_eq!(ran.code, Some(2), "{}", ran.describe());
    assert!(ran.stderr.contains("broken.toml"), "{}", ran.describe());
    let ran = carousel(&["sweep", "--collect", path(dir.path())]);
    assert_eq!(ran.code, Some(2), "{}", ran.describe());
    assert!(ran.stderr.contains("holds no sweep"), "{}", ran.describe());
    // A directory with someone's files in it is never cleared.
    std::fs::create_dir(&out).expect("a directory");
    std::fs::write(out.join("thesis.tex"), "precious").expect("a file");
    let ran = carousel(&["sweep", path(&lab), "--out", path(&out)]);
    assert_eq!(ran.code, Some(2), "{}", ran.describe());
    assert!(out.join("thesis.tex").is_file());
}

#[test]
fn emit_jobs_writes_one_self_contained_command_per_configuration() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let out = dir.path().join("sweep");
    let lab = labs().join("sweep-mini.toml");
    let ran = carousel(&[
        "sweep",
        path(&lab),
        "--policy",
        "round-robin,boost",
        "--out",
        path(&out),
        "--emit-jobs",
    ]);
    assert_eq!(ran.code, Some(0), "{}", ran.describe());
    let lines: Vec<&str> = ran.stdout.lines().collect();
    assert_eq!(lines.len(), 12, "3 quanta × 2 policies × 2 workloads");
    let jobs = std::fs::read_to_string(out.join("jobs.txt")).expect("jobs.txt");
    assert_eq!(jobs.lines().collect::<Vec<_>>(), lines);
    for line in &lines {
        assert!(line.contains(" sweep "), "{line}");
        assert!(line.contains(" --job "), "{line}");
        assert!(
            line.contains(&format!(" --out {}", out.display())),
            "{line}"
        );
        assert!(line.contains("sweep-mini.toml"), "{line}");
    }
    assert!(lines[0]
        .contains("--quantum 500us --policy round-robin --weights lab --workload cpu --run 1"));
    let plan = json(&out.join("sweep.json"));
    assert_eq!(plan["runs"].as_array().map(Vec::len), Some(12));
    assert_eq!(plan["quanta"], serde_json::json!(["500us", "2ms", "8ms"]));
    // Nothing ran yet: collecting shows every configuration as never run.
    let collected = carousel(&["sweep", "--collect", path(&out)]);
    assert_eq!(collected.code, Some(1), "{}", collected.describe());
    let summary = json(&out.join("summary.json"));
    assert_eq!(summary["rows"].as_array().map(Vec::len), Some(12));
    assert_eq!(summary["runs"][0]["status"], "not run");
}

#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn an_emitted_job_runs_alone_and_collect_compares_it() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let out = dir.path().join("sweep");
    let lab = labs().join("sweep-mini.toml");
    let emitted = carousel(&[
        "sweep",
        path(&lab),
        "--quantum",
        "2ms",
        "--workload",
        "cpu",
        "--out",
        path(&out),
        "--emit-jobs",
    ]);
    assert_eq!(emitted.code, Some(0), "{}", emitted.describe());
    let command = emitted.stdout.trim();
    assert_eq!(command.lines().count(), 1, "{}", emitted.describe());
    let job = Command::new("sh")
        .arg("-c")
        .arg(command)
        .output()
        .expect("sh runs the job");
    assert!(
        job.status.success(),
        "{command}\n{}{}",
        String::from_utf8_lossy(&job.stdout),
        String::from_utf8_lossy(&job.stderr)
    );
    let collected = carousel(&["sweep", "--collect", path(&out)]);
    assert_eq!(collected.code, Some(0), "{}", collected.describe());
    let summary = json(&out.join("summary.json"));
    assert_eq!(summary["rows"].as_array().map(Vec::len), Some(1));
    let row = &summary["rows"][0];
    assert_eq!(row["quantum_us"], 2_000);
    assert_eq!(row["workload"], "cpu");
    assert!(row["overhead_pct"].is_number(), "{row:#}");
    assert!(row["wake_p99_cycles"].is_number(), "{row:#}");
    assert!(out.join("summary.html").is_file());
}

/// `ci/labs/balloon.toml`: the donor gives 8 MiB back and the grower takes 8 MiB back, but only
/// as the donor's pages reach the host's pool (the run's budget leaves no room otherwise): at
/// every moment the grower took back at most what the donor gave. Both drivers' checks pass (bad calls
/// refused, pages taken back zeroed and usable), and the report's memory table shows it.
#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn balloon_moves_memory_from_one_vm_to_another() {
    let measured = Measured::run("balloon.toml");
    measured.assert_all_passed();
    measured.assert_conservation();
    let balloon_ops: Vec<(u64, u16, bool, u32)> = measured
        .records
        .iter()
        .filter_map(|record| match *record {
            Record::Balloon {
                tsc,
                vm,
                inflate,
                pages,
                ..
            } => Some((tsc, vm, inflate, pages)),
            _ => None,
        })
        .collect();
    let total = |vm: u16, inflate: bool| -> u32 {
        balloon_ops
            .iter()
            .filter(|op| op.1 == vm && op.2 == inflate)
            .map(|op| op.3)
            .sum()
    };
    let (donor, grower) = (0u16, 1u16);
    assert_eq!(total(donor, true), 2048, "{balloon_ops:?}");
    assert_eq!(total(grower, false), 2048, "{balloon_ops:?}");
    assert_eq!(
        total(donor, false) + total(grower, true),
        0,
        "{balloon_ops:?}"
    );
    // The budget at work: at every moment the grower has taken back at most what the donor
    // had given back by then.
    let mut given = 0u32;
    for &(_, _, inflate, pages) in &balloon_ops {
        if inflate {
            given += pages;
        } else {
            given = given.checked_sub(pages).unwrap_or_else(|| {
                panic!("the grower grew before the donor gave back: {balloon_ops:?}")
            });
        }
    }
    // The grower had to wait: it slept (yielded) while the host had no room. In Bochs the
    // donor's inflation outlasts the grower's first turns, so the grower always asks before
    // there is room; under TCG the donor can finish first, by host timing (seen once in CI:
    // no yield at all), so there the budget check above is what holds.
    let grower_account = measured.vm("grower");
    let yields = grower_account.summary.as_ref().unwrap().yields;
    assert!(
        yields > 0 || backend() != "bochs",
        "the grower never waited"
    );
    let memory = |name: &str| measured.vm(name).memory.expect("memory facts");
    assert_eq!(
        (memory("donor").ballooned, memory("donor").inflated),
        (2048, 2048)
    );
    assert_eq!(
        (memory("grower").ballooned, memory("grower").deflated),
        (0, 2048)
    );
    let table = carousel_trace::render::text::memory_table(&measured.accounting);
    assert!(table.contains("BALLOONED"), "{table}");
    for check in ["balloon-bad-calls-refused", "balloon-reached-target"] {
        for vm in [donor, grower] {
            assert!(
                measured.records.iter().any(|record| matches!(record,
                    Record::Check { vm: id, name, passed: true, .. } if *id == vm && name == check)),
                "vm {vm}: check {check} did not pass\n{}",
                measured.describe
            );
        }
    }
}

/// A guest that touches a page it gave back is stopped for it, with the page named; the VM
/// beside it runs on and passes.
#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn touching_a_ballooned_page_stops_only_that_vm() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let lab = dir.path().join("touch.toml");
    std::fs::write(
        &lab,
        "[run]\nips = 1_000_000\ntsc_hz = 50_000_000\ntimeout_s = 60\n\n\
         [[vm]]\nname = \"toucher\"\nkernel = \"balloon\"\nmemory_mib = 8\n\
         balloon_target_mib = 1\nargs = \"touch=1\"\n\n\
         [[vm]]\nname = \"spin\"\nkernel = \"spin\"\nmemory_mib = 4\nargs = \"ms=100\"\n",
    )
    .expect("the lab is written");
    let run = run_file(&lab, &dir.path().join("run"), &[]);
    let output = run.describe();
    assert_eq!(run.code, Some(1), "{output}");
    let records = records_of(&dir.path().join("run"), &output);
    let stopped = |id: u16| {
        records.iter().find_map(|record| match record {
            Record::VmStopped { vm, reason, .. } if *vm == id => Some(reason.clone()),
            _ => None,
        })
    };
    match stopped(0) {
        Some(StopReason::BalloonedPageTouched { gpa, .. }) => {
            assert!((4 << 20..8 << 20).contains(&gpa), "{gpa:#x}\n{output}")
        }
        other => panic!("toucher: {other:?}\n{output}"),
    }
    assert!(
        stopped(1).is_some_and(|reason| reason.is_success()),
        "{output}"
    );
    assert!(
        run.stdout
            .contains("a page it gave back through the balloon"),
        "{output}"
    );
}

/// `ci/labs/merge.toml`: the 0x01 pages of three VMs come to share frames, every page still
/// reads what its guest wrote, and the guests' writes into merged pages stay private (copy on
/// write), as the guests check themselves.
#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn merging_shares_identical_pages_and_copies_on_write() {
    let measured = Measured::run("merge.toml");
    measured.assert_all_passed();
    measured.assert_conservation();
    let merging = measured.accounting.merging.expect("Merging records");
    // Each VM's 1,024 pages of 0x01 need at most one frame for all three VMs.
    assert!(
        merging.frames_saved >= 2 * 1024,
        "{merging:?}\n{}",
        measured.describe
    );
    // Every 16th of them was written after the wait: 64 copies per VM at least.
    assert!(merging.cow_breaks >= 3 * 64, "{merging:?}");
    assert!(merging.cycles > 0 && merging.scanned > 0, "{merging:?}");
    for vm in &measured.accounting.vms {
        let memory = vm.memory.expect("memory facts");
        assert!(memory.merged >= 1024 - 64, "{}: {memory:?}", vm.name);
        measured.assert_checks_passed(vm.id, &["merged-pages-read-back", "cow-writes-private"]);
    }
}

/// `ci/labs/balloon-rule.toml`: no VM has a target of its own. The grower's wish to grow
/// empties the host's pool; the rule asks the VM with the most idle memory (the donor, which
/// touches little of its RAM) for more, never the grower, and the grower gets all it wanted.
#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn the_balloon_rule_asks_the_idle_vm_and_the_other_grows() {
    let measured = Measured::run("balloon-rule.toml");
    measured.assert_all_passed();
    let requests: Vec<(u16, u64)> = measured
        .records
        .iter()
        .filter_map(|record| match *record {
            Record::BalloonTarget { vm, target, .. } => Some((vm, target)),
            _ => None,
        })
        .collect();
    assert!(
        !requests.is_empty(),
        "the rule never fired\n{}",
        measured.describe
    );
    assert!(
        requests.iter().all(|&(vm, _)| vm == 0),
        "the rule asked the grower: {requests:?}"
    );
    let donor = measured.vm("donor").memory.expect("memory facts");
    let grower = measured.vm("grower").memory.expect("memory facts");
    assert!(donor.inflated >= 2048, "{donor:?}");
    assert_eq!((grower.ballooned, grower.deflated), (0, 2048), "{grower:?}");
    assert!(donor.samples > 0 && donor.rule_requests == requests.len() as u64);
}

/// `ci/labs/compress.toml`: eight VMs fill 8 MiB each exactly as xv6's kfree leaves free
/// pages (no two alike, so merging could save nothing). Compression takes every page that
/// stays untouched, the guests read every page back (each read unpacks one) and check it,
/// rewrite some, check again and idle: at the end the host holds at most 10 % of the RAM the
/// VMs were promised.
#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn compression_takes_cold_kfree_pages_and_every_page_reads_back() {
    let measured = Measured::run("compress.toml");
    measured.assert_all_passed();
    measured.assert_conservation();
    let promised: u64 = 8 * 16 * 256;
    let pages = measured.accounting.host_pages.expect("HostMemory records");
    assert!(
        pages.last * 10 <= promised,
        "{} frames at the end of {promised} promised\n{}",
        pages.last,
        measured.describe
    );
    let compression = measured
        .accounting
        .compression
        .expect("Compression records");
    // Each VM's 2,048 kfree pages went cold once before the check and once after it; the
    // check unpacked every one of them.
    assert!(compression.compressed >= 2 * 8 * 2048, "{compression:?}");
    assert!(compression.decompressed >= 8 * 2048, "{compression:?}");
    assert!(compression.cycles > 0 && compression.decompress_cycles > 0);
    for vm in &measured.accounting.vms {
        let memory = vm.memory.expect("memory facts");
        assert!(memory.compressed >= 2048, "{}: {memory:?}", vm.name);
        assert_eq!(memory.merged, 0, "{}: nothing to merge", vm.name);
        measured.assert_checks_passed(vm.id, &["merged-pages-read-back", "cow-writes-private"]);
    }
}

/// `ci/labs/compress-merge.toml`: the rewriter's 0x01 pages are compressed while the merger's
/// identical ones are merged; the rewriter then rewrites every one (unpacking each) and both
/// read back exactly what they wrote.
#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn a_vm_rewrites_its_compressed_pages_while_another_merges_the_same_contents() {
    let measured = Measured::run("compress-merge.toml");
    measured.assert_all_passed();
    measured.assert_conservation();
    let (rewriter, merger) = (measured.vm("rewriter").id, measured.vm("merger").id);
    let most = |pages: &dyn Fn(&Record) -> Option<u64>| {
        measured.records.iter().filter_map(pages).max().unwrap_or(0)
    };
    let compressed = most(&|record| match record {
        Record::Compression {
            compressed_pages, ..
        } => compressed_pages.get(usize::from(rewriter)).copied(),
        _ => None,
    });
    let merged = most(&|record| match record {
        Record::Merging { merged_pages, .. } => merged_pages.get(usize::from(merger)).copied(),
        _ => None,
    });
    // The rewriter's 1,024 pages of 0x01 were all compressed at once; the merger's shared.
    assert!(
        compressed >= 1024,
        "rewriter compressed {compressed}\n{}",
        measured.describe
    );
    // How many the merge scans reach before the merger is done follows the TSC: in Bochs
    // instructions, where at least 900 always are; under TCG host time (897 in one CI run), so
    // there more than half.
    let at_least = if backend() == "bochs" { 900 } else { 512 };
    assert!(
        merged >= at_least,
        "merger merged {merged}\n{}",
        measured.describe
    );
    let compression = measured
        .accounting
        .compression
        .expect("Compression records");
    assert!(compression.decompressed >= 1024, "{compression:?}");
    for id in [rewriter, merger] {
        measured.assert_checks_passed(id, &["merged-pages-read-back", "cow-writes-private"]);
    }
}

/// `ci/labs/sample4.toml`: four 32 MiB VMs reading 2 MiB each over and over, a working-set
/// sample of each every 100 ms. The samples' root cycles stay within 2 % of the run, and, on
/// Bochs, the root share of the whole run is within 2 points of the same lab without samples
/// (Bochs counts instructions, so both runs repeat).
#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn working_set_samples_cost_at_most_two_percent() {
    let sampled = Measured::run("sample4.toml");
    sampled.assert_all_passed();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let text = std::fs::read_to_string(labs().join("sample4.toml")).expect("the lab");
    assert!(text.contains("memory_sample_ms = 100"));
    let unsampled = dir.path().join("sample4-off.toml");
    std::fs::write(
        &unsampled,
        text.replace("memory_sample_ms = 100", "memory_sample_ms = 0"),
    )
    .expect("written");
    let plain = Measured::run(unsampled.to_str().expect("a UTF-8 path"));
    plain.assert_all_passed();
    let (samples, cycles) = sampled.accounting.vms.iter().fold((0, 0), |(n, sum), vm| {
        let memory = vm.memory.unwrap_or_default();
        (n + memory.samples, sum + memory.sample_cycles)
    });
    // 1 s of reading at 10 samples a second, and the fill before it.
    assert!(samples >= 4 * 10, "{samples} samples\n{}", sampled.describe);
    let share = sampled
        .accounting
        .share_of_elapsed(cycles)
        .expect("a RunSummary");
    assert!(
        share <= 0.02,
        "samples took {:.2} % of the run\n{}",
        share * 100.0,
        sampled.describe
    );
    let root = |measured: &Measured| {
        let run = measured.accounting.run.as_ref().expect("a RunSummary");
        run.root as f64 / run.elapsed as f64
    };
    let overhead = root(&sampled) - root(&plain);
    // Two runs' root shares compare only where the clock counts instructions: under TCG each
    // flush after a sample empties QEMU's soft TLB, and two runs on a loaded host differ by
    // more than the samples cost (19.5 % against 7.3 % in one CI run, within 2 points in
    // others). The samples' own cycles are checked above on every backend.
    if backend() != "bochs" {
        eprintln!(
            "root {:.2} % sampled against {:.2} % not: compared on Bochs only",
            root(&sampled) * 100.0,
            root(&plain) * 100.0
        );
        return;
    }
    assert!(
        overhead <= 0.02,
        "root {:.2} % sampled against {:.2} % not\n{}",
        root(&sampled) * 100.0,
        root(&plain) * 100.0,
        sampled.describe
    );
}

/// `ci/labs/lazy-stagger.toml`: with lazily backed RAM only touched pages get frames (the
/// peak stays well below the VMs' RAM), VM i first runs no earlier than i × 100 ms, and the
/// guests still read back every page and keep their writes private.
#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn lazy_memory_and_staggered_starts_keep_the_peak_low() {
    let measured = Measured::run("lazy-stagger.toml");
    measured.assert_all_passed();
    measured.assert_conservation();
    let pages = measured.accounting.host_pages.expect("HostMemory records");
    let ram: u64 = 3 * 16 * 256;
    assert!(pages.peak < ram / 2, "peak {} of {ram} pages", pages.peak);
    // Each VM's real slices: its Run events that are not the held start's empty one.
    let mut runs: Vec<Vec<u64>> = vec![Vec::new(); 3];
    for record in &measured.records {
        if let Record::Events { tsc, events } = record {
            for (now, event) in carousel_protocol::record::timed_events(*tsc, events) {
                if let Event::Run { vm, .. } = *event {
                    runs[usize::from(vm)].push(now);
                }
            }
        }
    }
    // VM 0's first slice begins a little after the run's start (the first housekeeping pass
    // comes before it): allow 2 ms for that.
    let start = runs[0][0];
    let stagger = 100 * 50_000; // 100 ms at 50 MHz
    let slack = 2 * 50_000;
    for (vm, times) in runs.iter().enumerate().skip(1) {
        // The first Run is the empty slice that takes the held VM out of the queue.
        let first_real = times.get(1).copied().expect("a second Run event");
        assert!(
            first_real - start + slack >= vm as u64 * stagger,
            "vm {vm} ran at {} cycles, before its start\n{}",
            first_real - start,
            measured.describe
        );
    }
}

/// Bochs' debugger stops in guest code under the hypervisor, which is how `carousel bench
/// xv6` counts a boot: breakpoints on the hypervisor's `vmxon` (so that the guest's
/// addresses are watched only once GRUB is gone), then on the `hello` guest's main and on its
/// exit hypercall. The stops come in that order, the run still passes, and both guest stops
/// lie inside the VM's time on the CPU as the hypervisor's own events tell it (the debugger's
/// tick count is the TSC).
#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn debugger_breakpoints_stop_inside_the_guest() {
    use carousel::emulator::breakpoints;

    let root = carousel::repo::repo_root();
    let built = carousel::image::build::build(
        &root,
        &carousel::image::build::target_dir(&root),
        &["hello"],
    )
    .expect("the hypervisor and hello build");
    let read = |path: &Path| std::fs::read(path).expect("a built ELF");
    let hypervisor = read(&built.kernel);
    let guest = read(&built.guest("hello"));
    let vmxon =
        breakpoints::symbol_address(&hypervisor, |name| name.contains("12instructions5vmxon"))
            .expect("the hypervisor's vmxon");
    let main = breakpoints::symbol_address(&guest, |name| name == "carousel_guest_main")
        .expect("the guest's main");
    let exit = breakpoints::symbol_address(&guest, |name| name.contains("9hypercall4exit"))
        .expect("the guest's exit hypercall");
    let lab = "[run]\nips = 1_000_000\ntimeout_s = 120\n\n[[vm]]\nname = \"hello\"\n\
               kernel = \"hello\"\nmemory_mib = 8\n";
    let lab = Lab::parse(Path::new("debugger-hello.toml"), lab).expect("a valid lab");
    let finished = carousel::commands::bench::run_generated_lab(
        "debugger-hello",
        lab,
        "Written by the debugger scenario test.",
        carousel::emulator::BackendChoice::Bochs,
        Some(breakpoints::script(&[vmxon, main, exit], true)),
        &std::sync::atomic::AtomicBool::new(false),
    )
    .expect("the run passes with the breakpoints set");
    let output = std::fs::read_to_string(finished.out.join("bochs.out")).expect("bochs.out");
    let hits = breakpoints::hits(&output);
    let addresses: Vec<u64> = hits.iter().map(|hit| hit.address).collect();
    assert_eq!(addresses, [vmxon, main, exit], "{output}");
    assert!(
        hits.windows(2).all(|pair| pair[0].tick < pair[1].tick),
        "{hits:?}"
    );
    let mut first_run = None;
    let mut stopped = None;
    for record in &finished.records {
        if let Record::Events { tsc, events } = record {
            for (now, event) in carousel_protocol::record::timed_events(*tsc, events) {
                match *event {
                    Event::Run { vm: 0, .. } => {
                        first_run.get_or_insert(now);
                    }
                    Event::Descheduled { vm: 0, .. } => stopped = Some(now),
                    _ => {}
                }
            }
        }
    }
    let (first_run, stopped) = (
        first_run.expect("a Run event"),
        stopped.expect("a Descheduled event"),
    );
    assert!(
        hits[0].tick < first_run && first_run < hits[1].tick && hits[2].tick < stopped,
        "vmxon at {}, the VM ran from {first_run}, main at {}, exit at {}, stopped at {stopped}",
        hits[0].tick,
        hits[1].tick,
        hits[2].tick
    );
}

/// `carousel bench xv6` checks its files before it runs anything: each bad one gets a clear
/// error and exit code 2.
#[test]
fn bench_xv6_refuses_bad_files() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = |name: &str| dir.path().join(name).to_str().expect("UTF-8").to_string();
    std::fs::write(path("kernel"), b"not an elf").expect("written");
    std::fs::write(path("fs.img"), [0u8; 512]).expect("written");
    let bench = |kernel: &str, disk: &str| {
        carousel(&["bench", "xv6", "--kernel", kernel, "--disk", disk, "--json"])
    };
    let run = bench(&path("kernel"), &path("fs.img"));
    assert_eq!(run.code, Some(2), "{}", run.describe());
    assert!(run.stderr.contains("not an ELF file"), "{}", run.describe());
    assert!(run.stdout.is_empty(), "{}", run.describe());
    let run = bench(&path("missing"), &path("fs.img"));
    assert_eq!(run.code, Some(2), "{}", run.describe());
    assert!(run.stderr.contains("missing"), "{}", run.describe());
}

use std::time::Duration;

/// What an interrupted `carousel run` printed, and how long it took to end once signalled.
struct Interrupted {
    run: Run,
    /// From the first SIGINT to the process's exit.
    took: std::time::Duration,
    /// The run directory (alive as long as this).
    out: tempfile::TempDir,
}

/// Runs the lab `text` on Bochs, reading its stdout as it comes; at the first line `when`
/// accepts, sends the `carousel` process a SIGINT, and one more after each of `gaps`, then
/// waits for it to end (at most 30 s: it is killed after that and the test fails).
fn interrupt_run(text: &str, when: impl Fn(&str) -> bool, gaps: &[Duration]) -> Interrupted {
    use std::io::{BufRead, BufReader, Read};
    use std::process::Stdio;
    use std::sync::mpsc::RecvTimeoutError;
    use std::time::Instant;

    let out = tempfile::tempdir().expect("a temporary directory");
    let lab = out.path().join("lab.toml");
    std::fs::write(&lab, text).expect("the lab file is written");
    let mut child = Command::new(env!("CARGO_BIN_EXE_carousel"))
        .args(["run", path(&lab), "--backend", &backend(), "--out"])
        .arg(out.path().join("run"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the carousel binary starts");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut stdout = String::new();
    let mut signalled = None;
    let started = Instant::now();
    let mut lines = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();
    for line in lines.by_ref() {
        let line = line.expect("stdout is text");
        stdout.push_str(&line);
        stdout.push('\n');
        if when(&line) {
            signalled = Some(Instant::now());
            for gap in [Duration::ZERO].iter().chain(gaps) {
                std::thread::sleep(*gap);
                let sent = Command::new("kill")
                    .args(["-INT", &child.id().to_string()])
                    .status()
                    .expect("kill runs");
                assert!(sent.success(), "SIGINT sent");
            }
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the awaited line never came:\n{stdout}"
        );
    }
    let signalled = signalled.unwrap_or_else(|| panic!("the awaited line never came:\n{stdout}"));
    // The rest of stdout, then the exit; the watchdog kills a run that does not end (before
    // it is reaped, so the pid is still this child's).
    let pid = child.id();
    let (ended, watched) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if let Err(RecvTimeoutError::Timeout) = watched.recv_timeout(Duration::from_secs(30)) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    });
    for line in lines {
        stdout.push_str(&line.expect("stdout is text"));
        stdout.push('\n');
    }
    let status = child.wait().expect("carousel is reaped");
    let took = signalled.elapsed();
    drop(ended);
    watchdog.join().expect("the watchdog");
    Interrupted {
        run: Run {
            code: status.code(),
            stdout,
            stderr: stderr.join().expect("the stderr reader"),
        },
        took,
        out,
    }
}

impl Interrupted {
    /// Checks what every interrupted run must do: exit with 130 within `limit` of the signal,
    /// print the outcome table, the result line and each of `texts`, and leave no emulator.
    fn assert_ended(&self, limit: Duration, texts: &[&str]) {
        let run = &self.run;
        let describe = format!("took {:?}\n{}", self.took, run.describe());
        assert_eq!(run.code, Some(130), "{describe}");
        assert!(self.took < limit, "{describe}");
        assert!(has_outcome_table(&run.stdout), "{describe}");
        for text in ["result: interrupted (exit code 130)"].iter().chain(texts) {
            assert!(run.stdout.contains(text), "{text}\n{describe}");
        }
        let left = processes_naming(self.out.path());
        assert!(left.is_empty(), "left behind: {left:?}\n{describe}");
    }
}

/// Whether `stdout` has the outcome table's header.
fn has_outcome_table(stdout: &str) -> bool {
    stdout.lines().any(|line| {
        line.starts_with("VM ") && line.contains(" OUTCOME ") && line.ends_with("REASON")
    })
}

/// Processes whose command line names `dir` (an emulator of that run, left behind).
fn processes_naming(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .expect("/proc is there")
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .map(|bytes| String::from_utf8_lossy(&bytes).replace('\0', " "))
        .filter(|cmdline| cmdline.contains(&needle))
        .collect()
}

/// Two spins that would run for ten minutes.
const NEVER_ENDING: &str = "[run]\nquantum_us = 1000\nips = 1_000_000\ntsc_hz = 50_000_000\n\
    timeout_s = 600\n\n[[vm]]\nname = \"long\"\nkernel = \"spin\"\nmemory_mib = 4\n\
    args = \"ms=600000 report_ms=100\"\n\n[[vm]]\nname = \"long2\"\nkernel = \"spin\"\n\
    memory_mib = 4\nargs = \"ms=600000 report_ms=100\"\n";

/// Ctrl-C while the guests run: the hypervisor is asked to end the run, so the outcome table
/// and the whole accounting report still come, within a second or so; exit code 130, and no
/// emulator is left behind.
#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn ctrl_c_ends_a_running_lab_with_its_report() {
    let seen = std::cell::Cell::new(0);
    let interrupted = interrupt_run(
        NEVER_ENDING,
        |line| {
            // Both guests have started and the live line shows they run.
            if line.starts_with("[long2] spin: ") || line.starts_with("[carousel] live ") {
                seen.set(seen.get() + 1);
            }
            seen.get() >= 2 && line.starts_with("[carousel] live ")
        },
        &[],
    );
    interrupted.assert_ended(
        Duration::from_secs(3),
        &[
            "[carousel] interrupted (Ctrl-C): ending the run",
            "ACCOUNTING  policy round-robin",
            "conservation: ",
        ],
    );
}

/// Two Ctrl-C while the emulator boots (nobody answers the first): the second ends the run at
/// once, not at the first's grace (600 ms); the report is what the records say, nothing here.
#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn a_second_ctrl_c_ends_at_once() {
    let interrupted = interrupt_run(
        NEVER_ENDING,
        |line| line.starts_with("running 2 VMs"),
        &[Duration::from_millis(100)],
    );
    interrupted.assert_ended(
        Duration::from_millis(550),
        &[
            "long   not stopped  still running when interrupted",
            "accounting: the hypervisor sent no summary records",
            "what the records say up to the interrupt",
        ],
    );
}

/// Ctrl-C while the emulator boots (BIOS and GRUB take seconds; no Hello yet): nobody answers
/// the request, so the tool ends the emulator at the interrupt's grace.
#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn ctrl_c_while_booting_ends_at_the_interrupt_grace() {
    let interrupted = interrupt_run(NEVER_ENDING, |line| line.starts_with("running 2 VMs"), &[]);
    interrupted.assert_ended(Duration::from_secs(2), &[]);
}

/// Ctrl-C in the grace after every script finished (the VM itself would spin for minutes): the
/// run ends within a second with 130 and the report, instead of at the grace's end.
#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn ctrl_c_after_the_scripts_finished_ends_with_the_report() {
    let lab = "[run]\nquantum_us = 1000\nips = 1_000_000\ntsc_hz = 50_000_000\ntimeout_s = 600\n\n\
        [[vm]]\nname = \"slow\"\nkernel = \"spin\"\nmemory_mib = 4\n\
        args = \"ms=600000 report_ms=100000\"\n\n[[vm.script]]\nexpect = '^spin: '\n";
    let interrupted = interrupt_run(lab, |line| line == "[carousel] script slow finished", &[]);
    interrupted.assert_ended(
        Duration::from_secs(3),
        &[
            "[carousel] interrupted (Ctrl-C)",
            "ACCOUNTING  policy round-robin",
        ],
    );
}
