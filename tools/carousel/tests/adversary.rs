//! Adversarial scenario tests: the labs in `ci/labs/adversary/` put the `adversary` guest's cases
//! (and `chatty`) beside well-behaved VMs, and these tests check what issue 12 ("What to build"
//! 2) and issue 13 ("Tests") promise:
//!
//! - each attacker ends as the hardware would let it, or stops with the reason its attack calls
//!   for (one test per case, `<lab>_<case>`);
//! - the victims pass, keep their fair share of the CPU and lose no record;
//! - the conservation rule holds, the run ends by itself, and the output carries no raw control
//!   bytes (five tests per lab).
//!
//! They assert the promised behaviour, not today's: many fail until the hypervisor is fixed.
//! Each lab runs once per test process, when its first test needs it (one emulator at a time,
//! whatever `--test-threads` says); every test of that lab reads the same run. The emulator
//! tests are ignored by default; `ci/test` runs them with `--include-ignored`.
//!
//! **Fair share.** A victim's share is measured on the run's scheduler events over the victim's
//! own lifetime (its first slice to its stop): the cycles it held the CPU (guest and its root
//! time), against the share an ideal processor-sharing scheduler gives it, the integral of
//! 1 / (VMs running or runnable) over the same window. With N VMs that all outlive the victim
//! this is 1/N; VMs that stop early or sleep raise it, as they should.
//!
//! That ideal is the victim's floor, not its ceiling: a VM woken from a sleep counts as a
//! competitor for as long as it waits for its turn, though under processor sharing it would
//! have run at once and slept again, taking next to nothing. So the ceiling is the same integral
//! with such VMs left out (woken and not yet preempted since: a VM that used up a whole slice
//! is CPU-bound again). A victim must land between the two, within the tolerance.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use carousel_protocol::config::fnv1a64;
use carousel_protocol::hypercall::EXIT_SUCCESS;
use carousel_protocol::record::{
    timed_events, Event, Record, RunSummary, SliceEnd, StopReason, VmSummary,
};
use carousel_protocol::wire::{decode_all, Decoded};

// ----- Harness -----

/// The repository root.
fn repo_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// `ci/labs/adversary`.
/// The backend the suite runs on: `bochs` (VMX), or what `CAROUSEL_TEST_BACKEND` names (ci/test
/// runs the suite again with `qemu`: TCG with SVM).
fn backend() -> String {
    std::env::var("CAROUSEL_TEST_BACKEND").unwrap_or_else(|_| "bochs".to_string())
}

/// True when the backend's clock is instruction-counted (Bochs): shares and wake counts repeat
/// exactly. Under QEMU's TCG the TSC is the host's wall clock, which a loaded host disturbs by
/// milliseconds; the timing tests then assert only what load cannot explain away (no victim
/// starved, every wake the guest counted).
fn virtual_clock() -> bool {
    backend() == "bochs"
}

/// Cases where QEMU's TCG itself departs from the hardware, with why: the guest's own page
/// walk is QEMU's under SVM's nested paging, not the hypervisor's.
const QEMU_DEVIATIONS: &[(&str, &str)] = &[
    (
        "maxphys-rsvd",
        "TCG reports a reserved-bit #PF without the P bit (error code 0x8, not 0x9)",
    ),
    (
        "regs-dr-1",
        "QEMU 7.2 crashes (SIGSEGV) once two nested guests arm DR7 breakpoints \
         (regs.qemu.toml leaves the pair out)",
    ),
    (
        "regs-dr-2",
        "QEMU 7.2 crashes (SIGSEGV) once two nested guests arm DR7 breakpoints \
         (regs.qemu.toml leaves the pair out)",
    ),
];

fn labs() -> PathBuf {
    repo_root().join("ci/labs/adversary")
}

/// Builds the guests (the labs name `adversary` and `chatty` by their paths, which must exist
/// before `carousel run` reads the lab), once per test process.
fn build_guests() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let root = repo_root();
        let output = Command::new(cargo)
            .args(["build", "--release", "-p", "carousel-guests"])
            .args(["--target", "x86_64-unknown-none", "--target-dir"])
            .arg(root.join("target"))
            .current_dir(&root)
            .env_remove("CARGO_TARGET_DIR")
            .output()
            .expect("cargo starts");
        assert!(
            output.status.success(),
            "building the guests failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    });
}

/// One `carousel run` of a lab, and the record stream it left.
struct LabRun {
    lab: &'static str,
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// Every whole frame's record, in order.
    records: Vec<Record>,
    /// Sequence-number gaps (frames that never arrived) and bytes of corrupt frames.
    gaps: Vec<(u32, u32)>,
    corrupt: usize,
    /// The run directory (kept for the report tests).
    dir: tempfile::TempDir,
}

/// Runs `ci/labs/adversary/<lab>.toml` on Bochs, or returns the run this process already made.
/// One emulator at a time: the lock is held for the whole run.
fn lab(lab: &'static str) -> Arc<LabRun> {
    static RUNS: OnceLock<Mutex<BTreeMap<&'static str, Arc<LabRun>>>> = OnceLock::new();
    let mut runs = RUNS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(run) = runs.get(lab) {
        return Arc::clone(run);
    }
    build_guests();
    let dir = tempfile::tempdir().expect("a temporary directory");
    // A lab may have a variant for QEMU's TCG (`<lab>.qemu.toml`) that leaves out what QEMU
    // itself cannot run.
    let variant = labs().join(format!("{lab}.qemu.toml"));
    let path = if !virtual_clock() && variant.exists() {
        variant
    } else {
        labs().join(format!("{lab}.toml"))
    };
    let started = Instant::now();
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(env!("CARGO_BIN_EXE_carousel"))
        .arg("run")
        .arg(&path)
        .args(["--backend", &backend(), "--out"])
        .arg(dir.path())
        .output()
        .expect("the carousel binary starts");
    eprintln!(
        "lab {lab}: exit {:?} after {:.1} s",
        status.code(),
        started.elapsed().as_secs_f64()
    );
    let bytes = std::fs::read(dir.path().join("com2.bin")).unwrap_or_default();
    let mut records = Vec::new();
    let mut gaps = Vec::new();
    let mut corrupt = 0;
    for item in decode_all(&bytes) {
        match item {
            Decoded::Frame(frame) => records.push(frame.record),
            Decoded::Gap { from, to } => gaps.push((from, to)),
            Decoded::Corrupt { bytes } => corrupt += bytes,
        }
    }
    let run = Arc::new(LabRun {
        lab,
        code: status.code(),
        stdout,
        stderr,
        records,
        gaps,
        corrupt,
        dir,
    });
    runs.insert(lab, Arc::clone(&run));
    run
}

impl LabRun {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// VM names by id, from the Hello record.
    fn names(&self) -> &[String] {
        self.records
            .iter()
            .find_map(|record| match record {
                Record::Hello { vms, .. } => Some(vms.as_slice()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("lab {}: no Hello record\n{}", self.lab, self.tail()))
    }

    /// Each VM's weight, from the Hello record.
    fn weights(&self) -> Vec<u32> {
        self.records
            .iter()
            .find_map(|record| match record {
                Record::Hello { weights, .. } => Some(weights.clone()),
                _ => None,
            })
            .unwrap_or_default()
    }

    fn id(&self, name: &str) -> u16 {
        self.names()
            .iter()
            .position(|vm| vm == name)
            .unwrap_or_else(|| panic!("lab {}: no VM {name}", self.lab)) as u16
    }

    fn stopped(&self, name: &str) -> Option<&StopReason> {
        let id = self.id(name);
        self.records.iter().find_map(|record| match record {
            Record::VmStopped { vm, reason, .. } if *vm == id => Some(reason),
            _ => None,
        })
    }

    fn checks(&self, name: &str) -> Vec<(&str, bool)> {
        let id = self.id(name);
        self.records
            .iter()
            .filter_map(|record| match record {
                Record::Check {
                    vm, name, passed, ..
                } if *vm == id => Some((name.as_str(), *passed)),
                _ => None,
            })
            .collect()
    }

    fn metrics(&self, name: &str, metric: &str) -> Vec<u64> {
        let id = self.id(name);
        self.records
            .iter()
            .filter_map(|record| match record {
                Record::GuestMetric {
                    vm, name, value, ..
                } if *vm == id && name == metric => Some(*value),
                _ => None,
            })
            .collect()
    }

    fn summary(&self, name: &str) -> Option<&VmSummary> {
        let id = self.id(name);
        self.records.iter().find_map(|record| match record {
            Record::VmSummary(summary) if summary.vm == id => Some(summary),
            _ => None,
        })
    }

    fn run_summary(&self) -> Option<&RunSummary> {
        self.records.iter().find_map(|record| match record {
            Record::RunSummary(summary) => Some(summary),
            _ => None,
        })
    }

    /// Every scheduler event with its absolute time, in time order.
    fn events(&self) -> Vec<(u64, Event)> {
        let mut events: Vec<(u64, Event)> = self
            .records
            .iter()
            .filter_map(|record| match record {
                Record::Events { tsc, events } => Some(
                    timed_events(*tsc, events)
                        .map(|(at, event)| (at, *event))
                        .collect::<Vec<_>>(),
                ),
                _ => None,
            })
            .flatten()
            .collect();
        events.sort_by_key(|(at, _)| *at);
        events
    }

    /// The VM's console lines, without their `[NAME] ` prefix.
    fn console(&self, name: &str) -> Vec<String> {
        let prefix = format!("[{name}] ");
        self.stdout()
            .lines()
            .filter_map(|line| line.strip_prefix(&prefix).map(str::to_string))
            .collect()
    }

    /// The end of the run's output (outcome table and accounting), for failure messages.
    fn tail(&self) -> String {
        let stdout = self.stdout();
        let lines: Vec<&str> = stdout.lines().collect();
        let from = lines.len().saturating_sub(80);
        format!(
            "lab {} (exit code {:?})\n--- stdout (last lines)\n{}\n--- stderr\n{}",
            self.lab,
            self.code,
            lines[from..].join("\n"),
            String::from_utf8_lossy(&self.stderr)
        )
    }

    /// What one VM said and how it ended, for failure messages.
    fn context(&self, name: &str) -> String {
        let stdout = self.stdout();
        let mut text = format!("lab {} (exit code {:?}), vm {name}\n", self.lab, self.code);
        let prefix = format!("[{name}] ");
        let about = format!("vm {name} ");
        for line in stdout.lines() {
            if line.starts_with(&prefix) || line.contains(&about) {
                let _ = writeln!(text, "{line}");
            }
        }
        let _ = writeln!(text, "stop reason: {:?}", self.stopped(name));
        let _ = writeln!(text, "checks: {:?}", self.checks(name));
        text
    }
}

// ----- What a case should come to -----

/// How an attacker VM should end.
enum Expect {
    /// It exits with success having passed every check it sent, `done` included: the hardware
    /// let it do what it did, and Carousel did the same.
    Pass,
    /// It stops for a reason that fits (described by the string).
    Stop(&'static str, Box<dyn Fn(&StopReason) -> bool>),
    /// Either of the two.
    PassOr(&'static str, Box<dyn Fn(&StopReason) -> bool>),
}

fn stop(what: &'static str, test: impl Fn(&StopReason) -> bool + 'static) -> Expect {
    Expect::Stop(what, Box::new(test))
}

fn pass_or(what: &'static str, test: impl Fn(&StopReason) -> bool + 'static) -> Expect {
    Expect::PassOr(what, Box::new(test))
}

/// "Touched guest-physical `gpa` outside its memory".
fn outside_ram(gpa: u64) -> Expect {
    stop(
        "outside RAM at that address",
        move |reason| matches!(reason, StopReason::EptViolation { gpa: at, .. } if *at == gpa),
    )
}

/// "Touched a page it gave back through the balloon", in the page at `page`.
fn ballooned(page: u64) -> impl Fn(&StopReason) -> bool {
    move |reason| matches!(reason, StopReason::BalloonedPageTouched { gpa, .. } if gpa & !0xFFF == page)
}

/// Any ballooned page.
fn any_ballooned(reason: &StopReason) -> bool {
    matches!(reason, StopReason::BalloonedPageTouched { .. })
}

/// A stop that names a paging structure (page table, directory, PML4...) in device memory: not
/// an exit, not the hypervisor failing.
fn paging_structure(reason: &StopReason) -> bool {
    let text = reason.to_string().to_lowercase();
    clear_stop(reason)
        && [
            "paging",
            "page table",
            "page-table",
            "page directory",
            "pml4",
            "pdpt",
        ]
        .iter()
        .any(|word| text.contains(word))
}

/// A stop that is the guest's doing, said as such: not an exit, and not the hypervisor failing
/// (a VMX instruction, a VM entry, an exit it does not handle).
fn clear_stop(reason: &StopReason) -> bool {
    !matches!(
        reason,
        StopReason::Exited { .. }
            | StopReason::VmxError { .. }
            | StopReason::EntryFailed { .. }
            | StopReason::UnhandledExit { .. }
            | StopReason::EndedByHost
    )
}

/// A guest asked for a reset or sent itself INIT: it carries on (exit status 0x20, the reset
/// line goes nowhere) or stops with a reason that says reset or INIT.
fn reset_or_survived(reason: &StopReason) -> bool {
    let text = reason.to_string().to_lowercase();
    matches!(reason, StopReason::Exited { status: 0x20 })
        || (clear_stop(reason) && (text.contains("reset") || text.contains("init")))
}

/// Checks case VM `name` of `lab` against `expect`.
fn expect_case(lab_name: &'static str, name: &str, expect: Expect) {
    if !virtual_clock() {
        if let Some((_, why)) = QEMU_DEVIATIONS.iter().find(|(case, _)| *case == name) {
            eprintln!("{name}: not checked on {}: {why}", backend());
            return;
        }
    }
    let run = lab(lab_name);
    let context = run.context(name);
    let reason = run
        .stopped(name)
        .unwrap_or_else(|| panic!("no VmStopped record: the VM never ended\n{context}"));
    let checks = run.checks(name);
    let passed = matches!(reason, StopReason::Exited { status } if *status == EXIT_SUCCESS)
        && checks.contains(&("done", true))
        && checks.iter().all(|(_, passed)| *passed);
    let failed: Vec<&str> = checks
        .iter()
        .filter(|(_, passed)| !passed)
        .map(|(name, _)| *name)
        .collect();
    match expect {
        Expect::Pass => assert!(
            passed,
            "expected: exits with success, every check passed (`done` included); got: {reason}, \
             failed checks {failed:?}\n{context}"
        ),
        Expect::Stop(what, test) => assert!(
            test(reason),
            "expected: stops, {what}; got: {reason}\n{context}"
        ),
        Expect::PassOr(what, test) => assert!(
            passed || test(reason),
            "expected: passes, or stops, {what}; got: {reason}\n{context}"
        ),
    }
}

// ----- What every lab must show -----

/// The run ended by itself (every VM stopped), not at the host's timeout, with its summaries.
fn assert_ends_by_itself(lab_name: &'static str) {
    let run = lab(lab_name);
    assert_ne!(run.code, Some(4), "the run timed out\n{}", run.tail());
    assert!(
        matches!(run.code, Some(0 | 1)),
        "exit code {:?}\n{}",
        run.code,
        run.tail()
    );
    assert!(
        run.records
            .iter()
            .any(|record| matches!(record, Record::RunEnd { .. })),
        "no RunEnd record\n{}",
        run.tail()
    );
    for name in run.names() {
        assert!(
            run.stopped(name).is_some(),
            "vm {name} never stopped\n{}",
            run.tail()
        );
    }
}

/// Σ guest + root + idle == elapsed, and each VM's runstates add up to elapsed.
fn assert_conservation(lab_name: &'static str) {
    let run = lab(lab_name);
    let summary = run
        .run_summary()
        .unwrap_or_else(|| panic!("no RunSummary\n{}", run.tail()));
    let mut guest: u128 = 0;
    for name in run.names() {
        let vm = run
            .summary(name)
            .unwrap_or_else(|| panic!("no VmSummary for {name}\n{}", run.tail()));
        guest += u128::from(vm.guest);
        let states = u128::from(vm.running)
            + u128::from(vm.runnable)
            + u128::from(vm.blocked)
            + u128::from(vm.stopped);
        assert_eq!(
            states,
            u128::from(summary.elapsed),
            "vm {name}'s runstates {vm:?}\n{}",
            run.tail()
        );
    }
    assert_eq!(
        guest + u128::from(summary.root) + u128::from(summary.idle),
        u128::from(summary.elapsed),
        "guest {guest} + root {} + idle {} != elapsed {}\n{}",
        summary.root,
        summary.idle,
        summary.elapsed,
        run.tail()
    );
}

/// The first lines of `bytes` that hold a control character other than newline and tab (C0,
/// DEL, C1: whatever a terminal acts on), or that are not UTF-8.
fn control_lines(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|&byte| byte == b'\n')
        .enumerate()
        .filter(|(_, line)| match std::str::from_utf8(line) {
            Ok(text) => text.chars().any(|c| c.is_control() && c != '\t'),
            Err(_) => true,
        })
        .take(8)
        .map(|(number, line)| format!("line {}: {:?}", number + 1, String::from_utf8_lossy(line)))
        .collect()
}

/// Lines of `text` that pretend to be the hypervisor's: a PANIC, or a stop of a VM other than
/// the one whose line it really is (`[carousel] vm NAME stopped: ...` lines are the
/// hypervisor's; a guest's line that starts so is forged).
fn forged_lines(text: &str, forged: &[&str]) -> Vec<String> {
    text.lines()
        .filter(|line| {
            forged
                .iter()
                .any(|start| line.trim_start().starts_with(start))
        })
        .map(str::to_string)
        .collect()
}

/// The run's terminal output holds no raw control bytes and no line a guest forged.
fn assert_no_control_bytes(lab_name: &'static str) {
    let run = lab(lab_name);
    for (stream, bytes) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
        let lines = control_lines(bytes);
        assert!(
            lines.is_empty(),
            "{stream} carries raw control bytes:\n{}\n{}",
            lines.join("\n"),
            run.tail()
        );
    }
    let forged = forged_lines(&run.stdout(), &["[carousel] PANIC"]);
    assert!(
        forged.is_empty(),
        "forged lines: {forged:#?}\n{}",
        run.tail()
    );
}

/// The share of the CPU `victim` got over its own lifetime, and the fair one (module doc).
///
/// Both count only the time some VM held the CPU: the hypervisor's own work between slices
/// (switching, the metrics interval, feeding its serial lines) is nobody's share, and is bounded
/// on its own ([`Share::hypervisor`], at most [`HYPERVISOR_MAX`]); an attacker cannot make it
/// grow (what a VM's exits cost is charged to that VM's slice).
#[derive(Debug, Clone, Copy)]
struct Share {
    /// Cycles it held the CPU, as a fraction of the cycles any VM held it in its lifetime.
    actual: f64,
    /// What processor sharing among the VMs running or runnable would have given it.
    fair: f64,
    /// The same, with VMs woken and waiting for their first slice left out (module doc).
    fair_ceiling: f64,
    /// Of its lifetime, the share no VM held the CPU.
    hypervisor: f64,
    /// Its lifetime, cycles.
    window: u64,
}

/// The most of a victim's lifetime the hypervisor may spend between slices. The labs count time
/// at 50 MHz (a 1 ms slice is 50,000 instructions), so the hypervisor's own work weighs far more
/// than at a real CPU's rate: measured, 5-6 % in the labs of a few VMs, 15 % in `legal` with its
/// 64 VMs (the metrics interval's record per VM, a look at every VM when one blocks).
const HYPERVISOR_MAX: f64 = 0.20;

/// A VM's runstate, as the events tell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    Runnable,
    Blocked,
    Stopped,
}

fn share(run: &LabRun, victim: &str) -> Share {
    let id = usize::from(run.id(victim));
    let events = run.events();
    let start = events
        .iter()
        .find(|(_, event)| matches!(event, Event::Run { vm, .. } if usize::from(*vm) == id))
        .map(|(at, _)| *at)
        .unwrap_or_else(|| panic!("no Run event of {victim}\n{}", run.tail()));
    let end = events
        .iter()
        .find(|(_, event)| {
            matches!(event, Event::Descheduled { vm, why: SliceEnd::Stopped, .. }
                if usize::from(*vm) == id)
        })
        .map(|(at, _)| *at)
        .unwrap_or_else(|| {
            panic!(
                "no stop event of {victim} (were its events lost?)\n{}",
                run.tail()
            )
        });
    let mut states = vec![State::Runnable; run.names().len()];
    // Woken and not preempted since: a short demand, left out of the ceiling.
    let mut woken = vec![false; states.len()];
    let mut last = start;
    let (mut actual, mut fair, mut fair_ceiling, mut held) = (0u64, 0f64, 0f64, 0u64);
    for &(at, event) in &events {
        let (from, to) = (last.max(start), at.min(end));
        if to > from && states.contains(&State::Running) {
            let competing = |include_woken: bool| {
                states
                    .iter()
                    .zip(&woken)
                    .filter(|&(state, &woken)| match state {
                        State::Running => true,
                        State::Runnable => include_woken || !woken,
                        State::Blocked | State::Stopped => false,
                    })
                    .count()
                    .max(1)
            };
            if states[id] == State::Running {
                actual += to - from;
            }
            held += to - from;
            fair += (to - from) as f64 / competing(true) as f64;
            fair_ceiling += (to - from) as f64 / competing(false) as f64;
        }
        last = last.max(at);
        let (vm, state) = match event {
            Event::Run { vm, .. } => (vm, State::Running),
            Event::Descheduled { vm, why, .. } => (
                vm,
                match why {
                    SliceEnd::Preempted | SliceEnd::Yielded => State::Runnable,
                    SliceEnd::Blocked(_) => State::Blocked,
                    SliceEnd::Stopped => State::Stopped,
                },
            ),
            Event::Wake { vm, .. } => (vm, State::Runnable),
            _ => continue,
        };
        let vm = usize::from(vm);
        if let Some(slot) = states.get_mut(vm) {
            *slot = state;
        }
        if let Some(slot) = woken.get_mut(vm) {
            match event {
                Event::Wake { .. } => *slot = true,
                Event::Descheduled {
                    why: SliceEnd::Preempted,
                    ..
                } => *slot = false,
                _ => {}
            }
        }
    }
    let window = end - start;
    let held = held.max(1);
    Share {
        actual: actual as f64 / held as f64,
        fair: fair / held as f64,
        fair_ceiling: fair_ceiling / held as f64,
        hypervisor: 1.0 - held as f64 / window as f64,
        window,
    }
}

/// `victim` got its fair share within `tolerance` (a fraction of the CPU): at least the
/// processor-sharing floor, at most its ceiling (module doc).
fn assert_fair_share(lab_name: &'static str, victim: &str, tolerance: f64) {
    let run = lab(lab_name);
    let share = share(&run, victim);
    assert!(
        share.hypervisor <= HYPERVISOR_MAX,
        "the hypervisor held the CPU {:.1} % of {victim}'s lifetime ({} cycles), more than {:.0} %\n{}",
        share.hypervisor * 100.0,
        share.window,
        HYPERVISOR_MAX * 100.0,
        run.tail()
    );
    // Under QEMU's TCG the TSC is the loaded host's clock: there the victim must not be
    // starved (at least half its fair share); the exact share is checked on Bochs.
    let within = if virtual_clock() {
        share.actual >= share.fair - tolerance && share.actual <= share.fair_ceiling + tolerance
    } else {
        share.actual >= share.fair / 2.0
    };
    assert!(
        within,
        "{victim} held the CPU {:.1} % of its lifetime ({} cycles); its fair share was \
         {:.1}-{:.1} % (tolerance ±{:.0} %)\n{}",
        share.actual * 100.0,
        share.window,
        share.fair * 100.0,
        share.fair_ceiling * 100.0,
        tolerance * 100.0,
        run.tail()
    );
}

/// The number in a console line of `name` that starts with `prefix`, up to the next space.
fn console_number(run: &LabRun, name: &str, prefix: &str) -> Option<u64> {
    run.console(name).iter().find_map(|line| {
        line.strip_prefix(prefix)?
            .split_whitespace()
            .next()?
            .replace(',', "")
            .parse()
            .ok()
    })
}

/// Every record of a victim arrived: its stop, its summary, a Run event per slice, and its own
/// records (`spin`: its last `iterations` is the count it printed; `sleepy`: one
/// `wake_late_cycles` per wake, `count` of them; `hello`: its seven checks, all passed).
fn assert_victim_records(lab_name: &'static str, victim: &str) {
    let run = lab(lab_name);
    let context = run.context(victim);
    let reason = run.stopped(victim);
    assert!(
        reason.is_some_and(StopReason::is_success),
        "the victim did not pass: {reason:?}\n{context}"
    );
    let summary = run
        .summary(victim)
        .unwrap_or_else(|| panic!("no VmSummary\n{context}"));
    let id = run.id(victim);
    let events = run.events();
    let runs = events
        .iter()
        .filter(|(_, event)| matches!(event, Event::Run { vm, .. } if *vm == id))
        .count() as u64;
    assert_eq!(runs, summary.slices, "Run events against slices\n{context}");
    let wakes = events
        .iter()
        .filter(|(_, event)| matches!(event, Event::Wake { vm, .. } if *vm == id))
        .count() as u64;
    assert_eq!(wakes, summary.wakes, "Wake events against wakes\n{context}");
    if victim.starts_with("spin") {
        let iterations = run.metrics(victim, "iterations");
        let printed = console_number(&run, victim, "spin: done, ");
        assert!(
            !iterations.is_empty() && iterations.last().copied() == printed,
            "iterations metrics {iterations:?}, printed {printed:?}\n{context}"
        );
    } else if victim == "sleepy" {
        let wakes = run.metrics(victim, "wake_late_cycles").len() as u64;
        assert_eq!(wakes, 30, "sleepy's wake metrics\n{context}");
        if virtual_clock() {
            assert_eq!(summary.wakes, 30, "sleepy's wakes\n{context}");
        } else {
            // A deadline that passed before the HLT reached the hypervisor is no wake-up.
            assert!(summary.wakes <= 30, "sleepy's wakes\n{context}");
        }
    } else if victim == "hello" {
        let checks = run.checks(victim);
        for name in [
            "cpuid-hypervisor-bit",
            "cpuid-vmx-hidden",
            "cpuid-signature",
            "version",
            "console-write",
            "unknown-call",
            "bad-address",
        ] {
            assert!(
                checks.contains(&(name, true)),
                "hello's check {name}\n{context}"
            );
        }
    }
}

/// The five tests every lab gets: it ends by itself, the conservation rule holds, the output
/// is clean, and each victim passes with its records and its fair share (±`tolerance`).
macro_rules! lab_tests {
    ($lab:literal, $tolerance:expr, [$($victim:literal),+] => $ends:ident, $conservation:ident,
     $clean:ident, $records:ident, $share:ident) => {
        #[test]
        #[ignore = "boots an emulator; run by ci/test"]
        fn $ends() {
            assert_ends_by_itself($lab);
        }

        #[test]
        #[ignore = "boots an emulator; run by ci/test"]
        fn $conservation() {
            assert_conservation($lab);
        }

        #[test]
        #[ignore = "boots an emulator; run by ci/test"]
        fn $clean() {
            assert_no_control_bytes($lab);
        }

        #[test]
        #[ignore = "boots an emulator; run by ci/test"]
        fn $records() {
            $(assert_victim_records($lab, $victim);)+
        }

        #[test]
        #[ignore = "boots an emulator; run by ci/test"]
        fn $share() {
            $(if $victim.starts_with("spin") {
                assert_fair_share($lab, $victim, $tolerance);
            })+
        }
    };
}

/// One test per attacker VM: `name => case VM: expectation`.
macro_rules! cases {
    ($lab:literal { $($test:ident => $vm:literal: $expect:expr,)+ }) => {
        $(
            #[test]
            #[ignore = "boots an emulator; run by ci/test"]
            fn $test() {
                expect_case($lab, $vm, $expect);
            }
        )+
    };
}

/// Where the cases find free RAM to balloon (the guest's `FREE_RAM`).
const FREE_RAM: u64 = 3 << 20;

// ----- ci/labs/adversary/legal.toml -----

lab_tests!("legal", 0.05, ["spin"] => legal_ends_by_itself, legal_conservation_holds,
    legal_output_is_clean, legal_victim_records_arrive, legal_victim_keeps_its_share);

cases!("legal" {
    legal_string_io_backwards => "string-io-df": Expect::Pass,
    legal_mov_cr3_bit63_with_pcide => "pcid-bit63": Expect::Pass,
    legal_cr0_pg_without_pe_gp => "cr0-pg-no-pe": Expect::Pass,
    legal_cr0_bit32_gp => "cr0-bit32": Expect::Pass,
    legal_cr0_nw_without_cd_gp => "cr0-nw-no-cd": Expect::Pass,
    legal_cr0_pg_off_in_long_mode_gp => "cr0-pg-off": Expect::Pass,
    legal_cr0_pg_without_pe_gp_when_it_exits => "cr0-pg-no-pe-ne": Expect::Pass,
    legal_cr0_bit32_gp_when_it_exits => "cr0-bit32-ne": Expect::Pass,
    legal_cr0_nw_without_cd_gp_when_it_exits => "cr0-nw-no-cd-ne": Expect::Pass,
    legal_cr0_pg_off_in_long_mode_gp_when_it_exits => "cr0-pg-off-ne": Expect::Pass,
    legal_cr4_reserved_bits_gp_at_the_instruction => "cr4-reserved": Expect::Pass,
    legal_cr4_vmxe_gp => "cr4-vmxe": Expect::Pass,
    legal_cr4_pae_off_in_long_mode_gp => "cr4-pae-off": Expect::Pass,
    legal_cr4_pae_off_in_long_mode_gp_when_it_exits => "cr4-pae-off-vmxe": Expect::Pass,
    legal_cr4_pcide_with_cr3_low_bits_gp => "cr4-pcide-dirty-cr3": Expect::Pass,
    legal_cr3_reserved_bits_gp => "cr3-reserved": Expect::Pass,
    legal_efer_lme_off_while_paging_gp => "efer-lme-off": Expect::Pass,
    legal_efer_reserved_bit_gp => "efer-reserved": Expect::Pass,
    legal_efer_nxe => "efer-nxe": Expect::Pass,
    legal_xsetbv => "xsetbv": Expect::Pass,
    legal_invd => "invd": Expect::Pass,
    legal_wbinvd => "wbinvd": Expect::Pass,
    legal_clflush_of_apic_pages => "clflush-apic": Expect::Pass,
    legal_getsec_ud => "getsec": Expect::Pass,
    legal_vmxon_ud => "vmxon": Expect::Pass,
    legal_vmxoff_ud => "vmxoff": Expect::Pass,
    legal_vmclear_ud => "vmclear": Expect::Pass,
    legal_vmptrld_ud => "vmptrld": Expect::Pass,
    legal_vmptrst_ud => "vmptrst": Expect::Pass,
    legal_vmread_ud => "vmread": Expect::Pass,
    legal_vmwrite_ud => "vmwrite": Expect::Pass,
    legal_vmlaunch_ud => "vmlaunch": Expect::Pass,
    legal_vmresume_ud => "vmresume": Expect::Pass,
    legal_invept_ud => "invept": Expect::Pass,
    legal_invvpid_ud => "invvpid": Expect::Pass,
    legal_vmfunc_ud => "vmfunc": Expect::Pass,
    legal_single_step_over_emulated_instructions => "single-step": Expect::Pass,
    legal_rdtscp_as_cpuid_says => "rdtscp": Expect::Pass,
    legal_rdpid_as_cpuid_says => "rdpid": Expect::Pass,
    legal_invpcid_as_cpuid_says => "invpcid": Expect::Pass,
    legal_xsaves_as_cpuid_says => "xsaves": Expect::Pass,
    legal_reserved_physical_address_bit_pf => "maxphys-rsvd": Expect::Pass,
    legal_fetch_crossing_into_an_unmapped_page_pf => "fetch-cross-unmapped": Expect::Pass,
    legal_mmio_instruction_crossing_pages => "mmio-cross-page": Expect::Pass,
    legal_vmcall_exit_from_ring3_ud => "ring3-exit": Expect::Pass,
    legal_vmcall_balloon_from_ring3_ud => "ring3-balloon": Expect::Pass,
    legal_vmcall_console_from_ring3_ud => "ring3-console": Expect::Pass,
    legal_privileged_instructions_from_ring3_gp => "ring3-privileged": Expect::Pass,
    legal_hypercall_arguments_straddle_and_wrap => "hypercall-args": Expect::Pass,
    legal_hypercall_buffers_in_a_ballooned_page =>
        "hypercall-ballooned": pass_or("touched a ballooned page", any_ballooned),
    legal_balloon_lists_with_duplicates_and_bad_pages => "balloon-lists": Expect::Pass,
    legal_mmio_xchg => "mmio-xchg": Expect::Pass,
    legal_mmio_lock_cmpxchg => "mmio-cmpxchg": Expect::Pass,
    legal_mmio_rep_stos => "mmio-stos": Expect::Pass,
    legal_mmio_movs_to_a_register => "mmio-movs-store": Expect::Pass,
    legal_mmio_movs_from_a_register => "mmio-movs-load": Expect::Pass,
    legal_cr8_is_the_tpr => "mmio-cr8-tpr": Expect::Pass,
    legal_nmi_to_itself_arrives => "icr-nmi": Expect::Pass,
    legal_sipi_outside_wait_for_sipi_is_ignored => "icr-sipi": Expect::Pass,
    legal_init_to_itself =>
        "icr-init": pass_or("as INIT, or carries on (0x20)", reset_or_survived),
    legal_reset_through_the_keyboard_controller =>
        "reset-kbd": pass_or("as a reset, or carries on (0x20)", reset_or_survived),
    legal_reset_through_port_cf9 =>
        "reset-cf9": pass_or("as a reset, or carries on (0x20)", reset_or_survived),
    legal_reset_through_port_92 =>
        "reset-92": pass_or("as a reset, or carries on (0x20)", reset_or_survived),
});

/// `std; rep outsb` to COM1 prints its reversed buffer forwards.
#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn legal_string_io_backwards_prints_in_order() {
    let run = lab("legal");
    assert!(
        run.console("string-io-df")
            .iter()
            .any(|line| line == "string-io-df: backwards"),
        "{}",
        run.context("string-io-df")
    );
}

/// A ring-3 CONSOLE_WRITE must not reach the console.
#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn legal_ring3_cannot_print() {
    let run = lab("legal");
    assert!(
        !run.console("ring3-console")
            .iter()
            .any(|line| line.contains("from ring 3")),
        "{}",
        run.context("ring3-console")
    );
}

// ----- ci/labs/adversary/faults.toml -----

lab_tests!("faults", 0.05, ["spin"] => faults_end_by_themselves, faults_conservation_holds,
    faults_output_is_clean, faults_victim_records_arrive, faults_victim_keeps_its_share);

cases!("faults" {
    faults_touch_just_past_ram => "touch-past-end": outside_ram(4 << 20),
    faults_store_just_past_ram => "touch-past-end-write": outside_ram(4 << 20),
    faults_touch_3g => "touch-3g": outside_ram(0xC000_0000),
    faults_touch_below_the_local_apic => "touch-below-lapic": outside_ram(0xFEDF_F000),
    faults_touch_above_the_local_apic => "touch-above-lapic": outside_ram(0xFEE0_1000),
    faults_touch_beside_the_io_apic => "touch-beside-ioapic": outside_ram(0xFEC0_1000),
    faults_touch_64g => "touch-64g": outside_ram(64 << 30),
    faults_touch_the_top_physical_address => "touch-maxphys-top":
        stop("outside RAM, just below 2^MAXPHYADDR", |reason| matches!(reason,
            StopReason::EptViolation { gpa, .. } if *gpa > 64 << 30 && (gpa + 8).is_power_of_two())),
    faults_load_through_a_page_table_in_the_local_apic =>
        "pt-in-lapic-load": stop("for a paging structure in device memory", paging_structure),
    faults_store_through_a_page_table_in_the_local_apic =>
        "pt-in-lapic-store": stop("for a paging structure in device memory", paging_structure),
    faults_load_through_a_page_table_in_the_io_apic =>
        "pt-in-ioapic-load": stop("for a paging structure in device memory", paging_structure),
    faults_load_through_a_page_directory_in_the_local_apic =>
        "pd-in-lapic-load": stop("for a paging structure in device memory", paging_structure),
    faults_pml4_in_the_local_apic =>
        "pml4-in-lapic": stop("for a paging structure in device memory", paging_structure),
    faults_execute_from_the_local_apic =>
        "exec-apic": stop("as the guest's fault, clearly said", clear_stop),
    faults_load_straddling_the_local_apic_page =>
        "mmio-straddle": stop("as the guest's fault, clearly said", clear_stop),
    faults_triple_fault => "triple-fault": stop("as a triple fault", |reason| {
        matches!(reason, StopReason::TripleFault { .. })
    }),
    faults_rep_outsb_into_a_ballooned_page =>
        "string-out-balloon": stop("touched the ballooned page", ballooned(FREE_RAM + 4096)),
    faults_rep_insb_into_a_ballooned_page =>
        "string-in-balloon": stop("touched the ballooned page", ballooned(FREE_RAM + 4096)),
    faults_balloon_of_its_own_code =>
        "balloon-own-code": pass_or("touched a ballooned page", any_ballooned),
    faults_balloon_of_its_own_stack =>
        "balloon-own-stack": pass_or("touched a ballooned page", any_ballooned),
    faults_balloon_of_its_own_page_table =>
        "balloon-own-page-table": pass_or("touched a ballooned page", any_ballooned),
});

// ----- ci/labs/adversary/regs.toml -----

lab_tests!("regs", 0.05, ["spin"] => regs_end_by_themselves, regs_conservation_holds,
    regs_output_is_clean, regs_victim_records_arrive, regs_victim_keeps_its_share);

cases!("regs" {
    regs_fpu_sse_state_stays_with_the_first_vm => "regs-fpu-1": Expect::Pass,
    regs_fpu_sse_state_stays_with_the_second_vm => "regs-fpu-2": Expect::Pass,
    regs_debug_registers_stay_with_the_first_vm => "regs-dr-1": Expect::Pass,
    regs_debug_registers_stay_with_the_second_vm => "regs-dr-2": Expect::Pass,
    regs_xcr0_and_avx_state_stay_with_the_first_vm => "regs-xsave-1": Expect::Pass,
    regs_xcr0_and_avx_state_stay_with_the_second_vm => "regs-xsave-2": Expect::Pass,
    regs_kernel_gs_base_stays_with_the_first_vm => "regs-kgsb-1": Expect::Pass,
    regs_kernel_gs_base_stays_with_the_second_vm => "regs-kgsb-2": Expect::Pass,
    regs_cr8_stays_with_the_first_vm => "regs-cr8-1": Expect::Pass,
    regs_cr8_stays_with_the_second_vm => "regs-cr8-2": Expect::Pass,
    regs_syscall_msrs_stay_with_the_first_vm => "regs-msr-1": Expect::Pass,
    regs_syscall_msrs_stay_with_the_second_vm => "regs-msr-2": Expect::Pass,
});

// ----- ci/labs/adversary/lapic.toml -----

lab_tests!("lapic", 0.05, ["spin"] => lapic_ends_by_itself, lapic_conservation_holds,
    lapic_output_is_clean, lapic_victim_records_arrive, lapic_victim_keeps_its_share);

cases!("lapic" {
    lapic_tiny_period_with_interrupts_off => "lapic-if0": Expect::Pass,
    lapic_tiny_period_masked => "lapic-masked": Expect::Pass,
    lapic_tiny_period_taken => "lapic-if1": Expect::Pass,
});

// ----- ci/labs/adversary/halt.toml -----

lab_tests!("halt", 0.05, ["spin"] => halt_ends_by_itself, halt_conservation_holds,
    halt_output_is_clean, halt_victim_records_arrive, halt_victim_keeps_its_share);

/// "Halted with nothing left to wake it".
fn halted_forever(reason: &StopReason) -> bool {
    matches!(reason, StopReason::HaltedForever { .. })
}

cases!("halt" {
    halt_with_a_timer_far_ahead => "timer-far": stop("halted forever", halted_forever),
    halt_with_a_timer_at_u64_max => "timer-max": stop("halted forever", halted_forever),
    halt_with_interrupts_on_and_no_source => "halt-if1": stop("halted forever", halted_forever),
    halt_mwait_with_interrupts_off =>
        "mwait": pass_or("as the guest's doing, clearly said", clear_stop),
});

// ----- ci/labs/adversary/records.toml -----

lab_tests!("records", 0.05, ["hello", "spin", "sleepy"] => records_end_by_themselves,
    records_conservation_holds, records_output_is_clean, records_victims_lose_no_record,
    records_victim_keeps_its_share);

cases!("records" {
    records_check_flood_survives => "flood-check": Expect::Pass,
    records_metric_flood_survives => "flood-metric": Expect::Pass,
    records_metric_names_flood_survives => "flood-names": Expect::Pass,
    records_balloon_flood_survives => "flood-balloon": Expect::Pass,
});

// ----- ci/labs/adversary/escapes.toml -----

lab_tests!("escapes", 0.05, ["spin"] => escapes_end_by_themselves, escapes_conservation_holds,
    escapes_output_is_clean, escapes_victim_records_arrive, escapes_victim_keeps_its_share);

/// The escapes guest stops as it meant to (its own failed check aside).
#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn escapes_guest_exits() {
    let run = lab("escapes");
    assert!(
        matches!(run.stopped("escapes"), Some(StopReason::Exited { status }) if *status == EXIT_SUCCESS),
        "{}",
        run.context("escapes")
    );
}

/// No line of the run's output is one the guest forged: a `[carousel]` line at the start of a
/// line, or a stop of the spin that says it failed.
#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn escapes_forge_no_line() {
    let run = lab("escapes");
    let forged = forged_lines(
        &run.stdout(),
        &[
            "[carousel] PANIC",
            "[carousel] vm spin stopped: exited with failure",
        ],
    );
    assert!(
        forged.is_empty(),
        "forged lines: {forged:#?}\n{}",
        run.tail()
    );
}

/// `carousel report` in every format keeps the guest's strings harmless: text and CSV carry no
/// control bytes, JSON parses, CSV has one row per VM, and the HTML page has no markup of the
/// guest's.
#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn escapes_reports_keep_guest_strings_harmless() {
    let run = lab("escapes");
    let trace = run.dir.path().join("com2.bin");
    let report = |args: &[&str]| -> Output {
        Command::new(env!("CARGO_BIN_EXE_carousel"))
            .arg("report")
            .arg(&trace)
            .args(args)
            .output()
            .expect("carousel report starts")
    };
    let mut problems = Vec::new();
    for format in ["text", "csv", "json"] {
        let output = report(&["--format", format]);
        let lines = control_lines(&output.stdout);
        if !lines.is_empty() {
            problems.push(format!(
                "report --format {format} carries control bytes:\n{}",
                lines.join("\n")
            ));
        }
        let text = String::from_utf8_lossy(&output.stdout);
        if format == "json" && serde_json::from_slice::<serde_json::Value>(&output.stdout).is_err()
        {
            problems.push(format!("report --format json does not parse:\n{text}"));
        }
        if format == "csv" && csv_records(&text) != 1 + run.names().len() {
            problems.push(format!(
                "report --format csv: {} records:\n{text}",
                csv_records(&text)
            ));
        }
    }
    let page = run.dir.path().join("report.html");
    let output = report(&["--html", page.to_str().expect("a UTF-8 path")]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let html = std::fs::read(&page).expect("the page");
    let html_text = String::from_utf8_lossy(&html);
    for markup in [
        "<script>alert('adversary')",
        "<img src=x onerror",
        "<script>alert('console')",
    ] {
        if html_text.contains(markup) {
            problems.push(format!("the page carries the guest's {markup:?}"));
        }
    }
    let lines = control_lines(&html);
    if !lines.is_empty() {
        problems.push(format!(
            "the page carries control bytes:\n{}",
            lines.join("\n")
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

/// The records of CSV `text` (RFC 4180: a quoted field may hold newlines and doubled quotes).
fn csv_records(text: &str) -> usize {
    let mut quoted = false;
    let mut records = 0;
    let mut empty = true;
    for c in text.chars() {
        match c {
            '"' => quoted = !quoted,
            '\n' if !quoted => {
                records += usize::from(!empty);
                empty = true;
                continue;
            }
            _ => {}
        }
        empty = false;
    }
    records + usize::from(!empty)
}

// ----- ci/labs/adversary/sweep.toml -----

lab_tests!("sweep", 0.05, ["spin"] => sweep_ends_by_itself, sweep_conservation_holds,
    sweep_output_is_clean, sweep_victim_records_arrive, sweep_victim_keeps_its_share);

/// "Not emulated": the local APIC and I/O APIC take aligned 32-bit accesses; other widths are
/// model-specific (SDM Vol. 3A 11.4.1), so a hypervisor may refuse them, saying so.
fn bad_mmio(reason: &StopReason) -> bool {
    matches!(reason, StopReason::BadMmio { .. })
}

cases!("sweep" {
    sweep_every_port_at_every_width => "io-sweep": Expect::Pass,
    sweep_local_apic_bytes => "mmio-sweep-lapic-1": pass_or("as MMIO not emulated", bad_mmio),
    sweep_local_apic_words => "mmio-sweep-lapic-2": pass_or("as MMIO not emulated", bad_mmio),
    sweep_local_apic_doublewords => "mmio-sweep-lapic-4": Expect::Pass,
    sweep_local_apic_quadwords => "mmio-sweep-lapic-8": pass_or("as MMIO not emulated", bad_mmio),
    sweep_io_apic_bytes => "mmio-sweep-ioapic-1": pass_or("as MMIO not emulated", bad_mmio),
    sweep_io_apic_words => "mmio-sweep-ioapic-2": pass_or("as MMIO not emulated", bad_mmio),
    sweep_io_apic_doublewords => "mmio-sweep-ioapic-4": Expect::Pass,
    sweep_io_apic_quadwords => "mmio-sweep-ioapic-8": pass_or("as MMIO not emulated", bad_mmio),
});

// ----- ci/labs/adversary/flood-*.toml (issue 13) -----

/// The spin beside an exit flood gets at least 45 % of the CPU over its lifetime (30 % on the
/// wall clock of QEMU's TCG under a loaded host: 36 % was measured there with load average 12 on
/// 2 cores), and the flood survives.
fn assert_flood(lab_name: &'static str) {
    let run = lab(lab_name);
    let share = share(&run, "spin");
    let goal = if virtual_clock() { 0.45 } else { 0.30 };
    assert!(
        share.hypervisor <= HYPERVISOR_MAX,
        "the hypervisor held the CPU {:.1} % of the spin's lifetime, more than {:.0} %\n{}",
        share.hypervisor * 100.0,
        HYPERVISOR_MAX * 100.0,
        run.tail()
    );
    assert!(
        share.actual >= goal,
        "the spin held the CPU {:.1} % of its lifetime ({} cycles; fair {:.1} %), goal ≥ {:.0} %\n{}",
        share.actual * 100.0,
        share.window,
        share.fair * 100.0,
        goal * 100.0,
        run.tail()
    );
    expect_case(lab_name, "flooder", Expect::Pass);
    assert_victim_records(lab_name, "spin");
    assert_conservation(lab_name);
    assert_no_control_bytes(lab_name);
    assert_ends_by_itself(lab_name);
}

macro_rules! flood_tests {
    ($($test:ident => $lab:literal,)+) => {
        $(
            #[test]
            #[ignore = "boots an emulator; run by ci/test"]
            fn $test() {
                assert_flood($lab);
            }
        )+
    };
}

flood_tests! {
    flood_of_port_io_leaves_the_spin_its_share => "flood-pio",
    flood_of_cpuid_leaves_the_spin_its_share => "flood-cpuid",
    flood_of_vmcalls_leaves_the_spin_its_share => "flood-vmcall",
    flood_of_console_lines_leaves_the_spin_its_share => "flood-console",
    flood_of_console_writes_leaves_the_spin_its_share => "flood-console-hc",
    flood_of_checks_leaves_the_spin_its_share => "flood-check",
    flood_of_self_ipis_leaves_the_spin_its_share => "flood-ipi",
    flood_of_one_huge_rep_outsb_leaves_the_spin_its_share => "flood-rep-outsb",
}

// ----- ci/labs/adversary/chatty.toml (issue 13) -----

/// Every one of chatty's 4,096 lines arrived, in order and intact: the FNV-1a 64 of the lines
/// as they reached the terminal is the checksum chatty printed, over all 256 KiB.
#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn chatty_all_256_kib_arrive_intact() {
    let run = lab("chatty");
    let console = run.console("chatty");
    let lines: Vec<&String> = console
        .iter()
        .filter(|line| line.starts_with("chatty ") && !line.starts_with("chatty: "))
        .collect();
    let missing: Vec<usize> = (0..4096)
        .filter(|&index| {
            lines
                .get(index)
                .is_none_or(|line| !line.starts_with(&format!("chatty {index:06} ")))
        })
        .take(10)
        .collect();
    assert!(
        lines.len() == 4096 && missing.is_empty(),
        "{} of 4,096 lines arrived; first lines missing or out of place: {missing:?}; last line \
         {:?}",
        lines.len(),
        console.last()
    );
    let done = console
        .iter()
        .find_map(|line| line.strip_prefix("chatty: done, "))
        .unwrap_or_else(|| panic!("no `chatty: done` line\n{}", run.context("chatty")));
    let printed: u64 = done
        .split_whitespace()
        .next()
        .and_then(|bytes| bytes.parse().ok())
        .expect("a byte count");
    let checksum = done
        .rsplit("fnv1a64 0x")
        .next()
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .expect("a checksum");
    assert_eq!(printed, 256 << 10, "{done}");
    let mut text = Vec::with_capacity(256 << 10);
    for line in &lines {
        text.extend_from_slice(line.as_bytes());
        text.push(b'\n');
    }
    assert_eq!(text.len() as u64, printed, "bytes that arrived");
    assert_eq!(fnv1a64(&text), checksum, "the checksum of what arrived");
}

/// Sleepy's latest wake is within the other VMs' slices plus the longest single exit the run
/// measured, plus the switches between them (each as long as the run's median switch, but one as
/// long as its longest: the switch that carries the metrics interval's records).
#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn chatty_leaves_sleepy_its_wake_latency() {
    let run = lab("chatty");
    let summary = run.run_summary().expect("a RunSummary");
    if !virtual_clock() {
        // Under QEMU's TCG the TSC is the host's clock, and a loaded host stretches any wait:
        // the bound is a timing, checked on Bochs, whose clock counts instructions. Here: sleepy
        // woke every time and passed.
        let sleepy = run.summary("sleepy").expect("sleepy's summary");
        assert!(sleepy.wakes > 0, "sleepy never woke\n{}", run.tail());
        assert!(
            run.stopped("sleepy").is_some_and(StopReason::is_success),
            "{}",
            run.tail()
        );
        return;
    }
    let weights = run.weights();
    let sleepy = usize::from(run.id("sleepy"));
    let others: u64 = weights
        .iter()
        .enumerate()
        .filter(|(id, _)| *id != sleepy)
        .map(|(_, weight)| summary.quantum_cycles * u64::from(*weight))
        .sum();
    let longest_exit = run
        .records
        .iter()
        .filter_map(|record| match record {
            Record::ExitInterval { exits, .. } => exits.iter().map(|stat| stat.max).max(),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    let wake = run.summary("sleepy").expect("sleepy's summary").wake_max;
    let switches = (weights.len() as u64 - 2) * summary.switch_median + summary.switch_max;
    let bound = others + longest_exit + switches;
    assert!(
        wake <= bound,
        "sleepy's latest wake {wake} cycles > {others} (the other VMs' slices) + {longest_exit} \
         (the longest exit) + {switches} (the switches) = {bound}\n{}",
        run.tail()
    );
}

lab_tests!("chatty", 0.03, ["sleepy", "spin0", "spin1"] => chatty_ends_by_itself,
    chatty_conservation_holds, chatty_output_is_clean, chatty_drops_no_record_of_another_vm,
    chatty_spins_keep_their_share);

/// Chatty itself passes.
#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn chatty_passes() {
    let run = lab("chatty");
    assert!(
        run.stopped("chatty").is_some_and(StopReason::is_success),
        "{}",
        run.context("chatty")
    );
}

// ----- The labs themselves -----

/// Every adversary lab loads (the guests built first: the labs name them by path), and no
/// record stream is damaged beyond gaps a full ring explains.
#[test]
#[ignore = "builds the guests; run by ci/test"]
fn adversary_labs_are_valid() {
    build_guests();
    let mut count = 0;
    for entry in std::fs::read_dir(labs()).expect("ci/labs/adversary exists") {
        let path = entry.expect("a directory entry").path();
        if path
            .extension()
            .is_some_and(|extension| extension == "toml")
        {
            count += 1;
            if let Err(error) = carousel::lab::Lab::load(&path) {
                panic!("{}: {error}", path.display());
            }
        }
    }
    assert!(count >= 10, "{count} labs");
}

/// No lab's record stream has corrupt frames (gaps are what a full ring leaves, and the tests
/// above judge whose records they were).
#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn adversary_record_streams_are_not_corrupt() {
    for name in ["legal", "faults", "regs", "escapes"] {
        let run = lab(name);
        assert_eq!(
            run.corrupt, 0,
            "lab {name}: corrupt bytes; gaps {:?}",
            run.gaps
        );
    }
}
