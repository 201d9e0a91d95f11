//! `carousel bench xv6 --kernel K --disk D`: what Carousel costs a real xv6, in cycles.
//!
//! - **Boot**: from xv6's `main` to its shell's first read of the console (the prompt `$ ` is
//!   out by then), under Carousel (one VM) and booted natively in the same Bochs, from the
//!   `xv6.img` that xv6's Makefile builds next to the kernel (its own boot block and this
//!   kernel). Both counts come from Bochs' debugger ([`crate::emulator::breakpoints`]): breakpoints on
//!   the kernel's `main` and `consoleread`, ticks at each; nothing in the guest is touched.
//! - **usertests**: from its first line (`usertests starting`) to `ALL TESTS PASSED`, alone
//!   in Carousel and beside three xv6 idle at their prompts, with idle detection off and on.
//!   The lines are timed by the hypervisor's console events ([`carousel_trace::model::console`]).
//!
//! In Bochs one cycle is one instruction (TSC and tick count alike), so every count here
//! repeats from run to run. The runs go two at a time; the longest (usertests beside three
//! spinning xv6) takes about ten minutes.
//!
//! Under QEMU (`--backend qemu`, `qemu-kvm`) there is no debugger to stop at `main`, and the
//! TSC keeps the host's time: every figure is host time, in TSC cycles and in microseconds.
//! Boot is counted between two lines both boots print, from xv6's first (`cpu0: starting`) to
//! init's `init: starting sh`, each stamped at its newline: under Carousel by the hypervisor's
//! console events, natively by the tool, which watches QEMU's COM1 file every millisecond (so
//! the native span is good to about a millisecond). There is no power-on figure. usertests is
//! timed as in Bochs. The figures vary from run to run by a few percent (TCG translates code
//! as it first meets it, and shares the host with everything else).

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use carousel_protocol::record::TscSource;
use carousel_trace::format::group;
use carousel_trace::model::console::{find_line, timed_lines, TimedLine};
use serde::Serialize;

use super::{BenchError, InputProblem, Missing};
use crate::emulator::backend::{self, Backend, BackendChoice, FlatDisk, CYLINDER_BYTES};
use crate::emulator::breakpoints::{self, SymbolError};
use crate::lab::script::{Pattern, Step};
use crate::lab::{Disk, Kernel, Lab, Vm, DEFAULT_CPU_MODEL, DEFAULT_IDLE_THRESHOLD_US};
use crate::session::RunError;

/// Bochs instructions per emulated second (the PIT, RTC and UART pace).
pub const IPS: u64 = 1_000_000;
/// TSC frequency of the generated labs: one cycle per instruction counts as 1 GHz.
pub const TSC_HZ: u64 = 1_000_000_000;
/// The quantum of the usertests labs, microseconds.
pub const QUANTUM_US: u32 = 10_000;
/// RAM per xv6 VM, MiB (xv6's PHYSTOP).
pub const XV6_MIB: u32 = 224;
/// Emulated RAM of the native boot, MiB: xv6's 224 and room for the BIOS.
pub const NATIVE_MEGS: u64 = 256;
/// Idle xv6 beside the one running usertests.
pub const IDLE_VMS: usize = 3;
/// Wall-clock limit of the native boot, seconds (it takes about 5).
pub const NATIVE_TIMEOUT_S: u64 = 300;
/// The native run's directory under `target/carousel/bench`.
const NATIVE_RUN: &str = "xv6-native";
/// The Carousel boot run's name.
const BOOT_RUN: &str = "xv6-boot";
/// The kernel symbol where boot is counted from.
pub const BOOT_FROM: &str = "main";
/// The kernel symbol where boot is counted to: the shell's first read of the console, just
/// after it printed `$ `.
pub const BOOT_TO: &str = "consoleread";
/// Under QEMU: the line boot is counted from, xv6's first (`mpmain`'s).
pub const QEMU_BOOT_FROM_LINE: &str = "cpu0: starting";
/// Under QEMU: the line boot is counted to, init's last before it runs the shell.
pub const QEMU_BOOT_TO_LINE: &str = "init: starting sh";
/// How often a native boot under QEMU reads its COM1 file, for its lines' stamps.
const NATIVE_POLL: Duration = Duration::from_millis(1);
/// The first line usertests prints.
pub const USERTESTS_FIRST: &str = "usertests starting";
/// The line usertests ends with when every test passed.
pub const USERTESTS_PASSED: &str = "ALL TESTS PASSED";

/// Goal: boot under Carousel against native.
pub const GOAL_BOOT_RATIO: f64 = 1.2;
/// Goal: usertests beside three idle xv6 against alone, idle detection on.
pub const GOAL_USERTESTS_RATIO_IDLE_ON: f64 = 1.3;

/// The xv6 build the bench runs.
#[derive(Debug, Clone)]
pub struct Xv6Files {
    /// xv6's `kernel` (an ELF with its symbols).
    pub kernel: PathBuf,
    /// xv6's `fs.img`.
    pub disk: PathBuf,
    /// xv6's `xv6.img` (boot block + kernel) for the native boot.
    pub image: PathBuf,
}

impl Xv6Files {
    /// The files, `image` defaulting to `xv6.img` next to the kernel.
    pub fn new(kernel: PathBuf, disk: PathBuf, image: Option<PathBuf>) -> Self {
        let image = image.unwrap_or_else(|| kernel.with_file_name("xv6.img"));
        Xv6Files {
            kernel: crate::session::absolute(&kernel),
            disk: crate::session::absolute(&disk),
            image: crate::session::absolute(&image),
        }
    }
}

/// The kernel addresses the boot is counted between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootSymbols {
    pub from: u64,
    pub to: u64,
}

/// [`BOOT_FROM`] and [`BOOT_TO`] in the kernel ELF `bytes`.
pub fn boot_symbols(bytes: &[u8]) -> Result<BootSymbols, InputProblem> {
    let find = |wanted: &'static str| {
        breakpoints::symbol_address(bytes, |name| name == wanted).map_err(|error| match error {
            SymbolError::NoMatch => InputProblem::NotXv6(wanted),
            error => InputProblem::Symbol(error),
        })
    };
    Ok(BootSymbols {
        from: find(BOOT_FROM)?,
        to: find(BOOT_TO)?,
    })
}

/// Checks that `image` is a boot disk for `kernel` the way xv6's Makefile makes one: a
/// 512-byte boot sector, then the kernel ELF from sector 1.
pub fn check_image(image: &[u8], kernel: &[u8]) -> Result<(), InputProblem> {
    if image.len() < 512 || image[510..512] != [0x55, 0xAA] {
        return Err(InputProblem::NoBootSector);
    }
    if image.get(512..512 + kernel.len()) != Some(kernel) {
        return Err(InputProblem::OtherKernel);
    }
    Ok(())
}

/// The VMs of a usertests lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Company {
    /// usertests alone.
    Alone,
    /// Beside [`IDLE_VMS`] xv6 at their prompts, with idle detection on or off.
    Idle { detection: bool },
}

/// A script step waiting for a line matching `expect`, then sending `send` if given.
fn step(expect: &str, send: Option<&str>, timeout_s: u64) -> Step {
    Step {
        expect: Pattern::new(expect).expect("the bench's patterns compile"),
        send: send.map(str::to_string),
        timeout: Duration::from_secs(timeout_s),
        label: None,
        repeat: 1,
    }
}

/// A script step waiting for the shell's prompt (the hypervisor prints an unfinished line
/// after 50 ms of quiet), then sending `send` if given.
fn prompt_step(send: Option<&str>) -> Step {
    step(r"^\$ $", send, 600)
}

/// One xv6 VM of a generated lab, with its script.
fn xv6_vm(files: &Xv6Files, name: &str, script: Vec<Step>) -> Vm {
    let mut vm = Vm::new(name, Kernel::File(files.kernel.clone()), XV6_MIB);
    vm.disk = Some(Disk::File(files.disk.clone()));
    vm.script = script;
    vm
}

/// A generated lab of `vms` and the first line of its file (`what` it runs).
fn xv6_lab(what: &str, vms: Vec<Vm>, idle_detection: bool, timeout_s: u64) -> (Lab, String) {
    let mut lab = Lab::new(PathBuf::new(), vms);
    lab.quantum_us = QUANTUM_US;
    lab.ips = IPS;
    lab.tsc_hz = Some(TSC_HZ);
    lab.cpu_model = DEFAULT_CPU_MODEL.to_string();
    lab.timeout_s = timeout_s;
    lab.idle_threshold_us = idle_detection.then_some(DEFAULT_IDLE_THRESHOLD_US);
    (lab, format!("Generated by `carousel bench xv6`: {what}."))
}

/// The boot lab: one xv6 to its prompt.
pub fn boot_lab(files: &Xv6Files) -> (Lab, String) {
    let vm = xv6_vm(files, "xv6", vec![prompt_step(None)]);
    xv6_lab("one xv6 to its prompt", vec![vm], true, 600)
}

/// The usertests lab for `company`.
pub fn usertests_lab(files: &Xv6Files, company: Company) -> (Lab, String) {
    let (what, detection) = match company {
        Company::Alone => ("usertests alone".to_string(), true),
        Company::Idle { detection } => (
            format!(
                "usertests beside {IDLE_VMS} idle xv6, idle detection {}",
                if detection { "on" } else { "off" }
            ),
            detection,
        ),
    };
    let mut vms = vec![xv6_vm(
        files,
        "ut",
        vec![
            prompt_step(Some("usertests\n")),
            step(USERTESTS_PASSED, None, 3000),
        ],
    )];
    if company != Company::Alone {
        for index in 1..=IDLE_VMS {
            vms.push(xv6_vm(
                files,
                &format!("idle{index}"),
                vec![prompt_step(None)],
            ));
        }
    }
    xv6_lab(&what, vms, detection, 3_600)
}

/// Cycles from one point to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Span {
    pub start: u64,
    pub end: u64,
}

impl Span {
    pub fn cycles(self) -> u64 {
        self.end.saturating_sub(self.start)
    }
}

/// The span between the boot symbols in a debugger's output.
fn boot_span(
    output: &str,
    symbols: BootSymbols,
    run: &str,
    out: &Path,
) -> Result<Span, BenchError> {
    let hits = breakpoints::hits(output);
    breakpoints::ticks_between(&hits, symbols.from, symbols.to)
        .map(|(start, end)| Span { start, end })
        .ok_or_else(|| BenchError::Unmeasured {
            run: run.to_string(),
            missing: Missing::Breakpoints {
                from_name: BOOT_FROM,
                from: symbols.from,
                to_name: BOOT_TO,
                to: symbols.to,
                stops: hits.len(),
            },
            out: out.to_path_buf(),
        })
}

/// Copies `from` to `to` padded with zeros to whole cylinders; the cylinders.
fn flat_copy(from: &Path, to: &Path) -> Result<u64, BenchError> {
    std::fs::copy(from, to).map_err(BenchError::file(from))?;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(to)
        .map_err(BenchError::file(to))?;
    let len = file.metadata().map_err(BenchError::file(to))?.len();
    let cylinders = len.div_ceil(CYLINDER_BYTES).max(1);
    file.set_len(cylinders * CYLINDER_BYTES)
        .map_err(BenchError::file(to))?;
    Ok(cylinders)
}

/// The native run's directory, emptied, and where its copies of `xv6.img` and `fs.img` go.
fn native_dir() -> Result<(PathBuf, PathBuf, PathBuf), BenchError> {
    let out = crate::repo::repo_root().join(format!("target/carousel/bench/{NATIVE_RUN}"));
    crate::session::prepare_out_dir(&out).map_err(|source| BenchError::Run {
        run: NATIVE_RUN.to_string(),
        source: Box::new(source),
    })?;
    let (image, disk) = (out.join("xv6.img"), out.join("fs.img"));
    Ok((out, image, disk))
}

/// Boots xv6 natively in Bochs from copies of `xv6.img` and `fs.img`, stopping at the shell's
/// first console read.
fn native_boot(
    files: &Xv6Files,
    symbols: BootSymbols,
    interrupted: &AtomicBool,
) -> Result<Timed, BenchError> {
    let (out, image, disk) = native_dir()?;
    let image_cylinders = flat_copy(&files.image, &image)?;
    let disk_cylinders = flat_copy(&files.disk, &disk)?;
    let bochsrc = out.join("bochsrc");
    let text = backend::native_bochsrc(
        NATIVE_MEGS,
        DEFAULT_CPU_MODEL,
        IPS,
        &out,
        FlatDisk {
            path: &image,
            cylinders: image_cylinders,
        },
        FlatDisk {
            path: &disk,
            cylinders: disk_cylinders,
        },
    );
    let script = out.join("breakpoints.rc");
    for (path, text) in [
        (&bochsrc, text),
        (
            &script,
            breakpoints::script(&[symbols.from, symbols.to], false),
        ),
    ] {
        std::fs::write(path, text).map_err(BenchError::file(path))?;
    }
    // Bochs takes everything from the bochsrc and the script; the image and port arguments
    // only matter to QEMU.
    let launch = backend::launch(
        Backend::Bochs,
        backend::EmulatorMemory::Megs(NATIVE_MEGS),
        backend::Media {
            iso: &image,
            drive: None,
            deterministic: false,
        },
        &out,
        &bochsrc,
        &script,
        0,
    );
    let output = out.join(launch.output);
    let mut emulator =
        crate::emulator::Emulator::spawn(launch.program, &launch.args, &launch.env, &output)
            .map_err(|source| BenchError::Spawn {
                program: launch.program.to_string(),
                source,
            })?;
    let started = Instant::now();
    while emulator.try_exited().is_none() {
        if interrupted.load(Ordering::SeqCst) {
            return Err(BenchError::Interrupted {
                run: NATIVE_RUN.to_string(),
            });
        }
        if started.elapsed() > Duration::from_secs(NATIVE_TIMEOUT_S) {
            return Err(BenchError::Native {
                problem: format!("native xv6 did not reach its shell in {NATIVE_TIMEOUT_S} s"),
                out,
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let console = std::fs::read_to_string(out.join("com1.txt")).unwrap_or_default();
    if !console.contains("init: starting sh") {
        return Err(BenchError::Native {
            problem: format!(
                "native xv6 did not start its shell (COM1: {:?})",
                console.lines().last().unwrap_or("")
            ),
            out,
        });
    }
    let output = std::fs::read_to_string(&output).unwrap_or_default();
    let span = boot_span(&output, symbols, NATIVE_RUN, &out)?;
    Ok(Timed::cycles(span, None))
}

/// Boots xv6 as the only VM under Carousel, with the debugger's breakpoints on.
fn carousel_boot(
    files: &Xv6Files,
    symbols: BootSymbols,
    interrupted: &AtomicBool,
) -> Result<Timed, BenchError> {
    let (lab, comment) = boot_lab(files);
    let finished = super::run_generated_lab(
        BOOT_RUN,
        lab,
        &comment,
        BackendChoice::Bochs,
        Some(breakpoints::script(&[symbols.from, symbols.to], true)),
        interrupted,
    )?;
    let e9 = finished.out.join(Backend::Bochs.e9_file());
    let output = std::fs::read_to_string(&e9).map_err(BenchError::file(e9))?;
    let span = boot_span(&output, symbols, BOOT_RUN, &finished.out)?;
    Ok(Timed::cycles(span, announced(&finished)))
}

/// The TSC a finished run's Hello announced.
fn announced(finished: &crate::session::Finished) -> Option<(u64, TscSource)> {
    let accounting = &finished.model.accounting;
    Some((accounting.tsc_hz?, accounting.tsc_source?))
}

/// The lines of a finished run's VM 0, with the hypervisor's stamps; `run` names it in errors.
fn vm0_lines(finished: &crate::session::Finished, run: &str) -> Result<Vec<TimedLine>, BenchError> {
    let com1_file = finished.out.join("com1.txt");
    let com1 = std::fs::read_to_string(&com1_file).map_err(BenchError::file(com1_file))?;
    let names: Vec<String> = finished.lab.vms.iter().map(|vm| vm.name.clone()).collect();
    let mut lines = timed_lines(&com1, &names, &finished.model.console).map_err(|problem| {
        BenchError::Unmeasured {
            run: run.to_string(),
            missing: Missing::Timing(problem),
            out: finished.out.clone(),
        }
    })?;
    Ok(lines.swap_remove(0))
}

/// Boots xv6 as the only VM under Carousel on a QEMU backend; from its first console line to
/// init's last, at the hypervisor's stamps.
fn carousel_boot_by_lines(
    files: &Xv6Files,
    backend: Backend,
    interrupted: &AtomicBool,
) -> Result<Timed, BenchError> {
    let (lab, comment) = boot_lab(files);
    let finished =
        super::run_generated_lab(BOOT_RUN, lab, &comment, backend.choice(), None, interrupted)?;
    let lines = vm0_lines(&finished, BOOT_RUN)?;
    let span = line_span(&lines, QEMU_BOOT_FROM_LINE, QEMU_BOOT_TO_LINE).map_err(|missing| {
        BenchError::Unmeasured {
            run: BOOT_RUN.to_string(),
            missing,
            out: finished.out.clone(),
        }
    })?;
    Ok(Timed::cycles(span, announced(&finished)))
}

/// From the first line containing `from` to the first after it containing `to`.
pub fn line_span(
    lines: &[TimedLine],
    from: &'static str,
    to: &'static str,
) -> Result<Span, Missing> {
    let (first, start) = find_line(lines, 0, from).ok_or(Missing::Line(from))?;
    let (_, end) = find_line(lines, first, to).ok_or(Missing::Line(to))?;
    Ok(Span { start, end })
}

/// Lines as they appear in a file another process writes, each stamped with the time its
/// newline was first seen (a native boot's COM1, read every millisecond).
#[derive(Debug, Default)]
pub struct LineStamps {
    /// Bytes of the line not yet ended.
    partial: Vec<u8>,
    pub lines: Vec<TimedLine>,
}

impl LineStamps {
    /// `bytes` arrived, read at `now` (nanoseconds since the boot began).
    pub fn feed(&mut self, bytes: &[u8], now: u64) {
        for &byte in bytes {
            match byte {
                b'\n' => {
                    let text = String::from_utf8_lossy(&self.partial)
                        .trim_end()
                        .to_string();
                    self.partial.clear();
                    self.lines.push(TimedLine { tsc: now, text });
                }
                byte => self.partial.push(byte),
            }
        }
    }
}

/// Boots xv6 natively under QEMU (`backend`) from copies of `xv6.img` and `fs.img`, until
/// init says it starts the shell; from xv6's first line to that one, in host nanoseconds.
fn native_qemu_boot(
    files: &Xv6Files,
    backend: Backend,
    interrupted: &AtomicBool,
) -> Result<Timed, BenchError> {
    let (out, image, disk) = native_dir()?;
    for (from, to) in [(&files.image, &image), (&files.disk, &disk)] {
        std::fs::copy(from, to).map_err(BenchError::file(from))?;
    }
    let com1 = out.join("com1.txt");
    let args = backend::native_qemu_args(backend, NATIVE_MEGS, &out, &image, &disk);
    let mut emulator =
        crate::emulator::Emulator::spawn(backend::QEMU, &args, &[], &out.join("qemu.txt"))
            .map_err(|source| BenchError::Spawn {
                program: backend::QEMU.to_string(),
                source,
            })?;
    let started = Instant::now();
    let mut stamps = LineStamps::default();
    let mut read = 0;
    loop {
        let bytes = std::fs::read(&com1).unwrap_or_default();
        if let Some(new) = bytes.get(read..) {
            stamps.feed(new, started.elapsed().as_nanos() as u64);
            read = bytes.len();
        }
        if let Ok(span) = line_span(&stamps.lines, QEMU_BOOT_FROM_LINE, QEMU_BOOT_TO_LINE) {
            emulator.kill();
            return Ok(Timed {
                span,
                host_nanos: true,
                tsc: None,
            });
        }
        if interrupted.load(Ordering::SeqCst) {
            return Err(BenchError::Interrupted {
                run: NATIVE_RUN.to_string(),
            });
        }
        let problem = if emulator.try_exited().is_some() {
            Some("QEMU exited".to_string())
        } else if started.elapsed() > Duration::from_secs(NATIVE_TIMEOUT_S) {
            Some(format!("{NATIVE_TIMEOUT_S} s went by"))
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(BenchError::Native {
                problem: format!(
                    "native xv6 did not print '{QEMU_BOOT_TO_LINE}': {problem} (COM1: {:?})",
                    stamps.lines.last().map_or("", |line| line.text.as_str())
                ),
                out,
            });
        }
        std::thread::sleep(NATIVE_POLL);
    }
}

/// Runs usertests in `company`; from its first line to its last.
fn usertests(
    files: &Xv6Files,
    company: Company,
    backend: Backend,
    interrupted: &AtomicBool,
) -> Result<Timed, BenchError> {
    let name = match company {
        Company::Alone => "xv6-usertests-alone",
        Company::Idle { detection: true } => "xv6-usertests-idle-on",
        Company::Idle { detection: false } => "xv6-usertests-idle-off",
    };
    let (lab, comment) = usertests_lab(files, company);
    let finished =
        super::run_generated_lab(name, lab, &comment, backend.choice(), None, interrupted)?;
    let lines = vm0_lines(&finished, name)?;
    let span = usertests_span(&lines).map_err(|missing| BenchError::Unmeasured {
        run: name.to_string(),
        missing,
        out: finished.out.clone(),
    })?;
    Ok(Timed::cycles(span, announced(&finished)))
}

/// From usertests' first line to its `ALL TESTS PASSED`.
pub fn usertests_span(lines: &[TimedLine]) -> Result<Span, Missing> {
    line_span(lines, USERTESTS_FIRST, USERTESTS_PASSED)
}

/// The bench's figures, as `--json` prints them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Xv6Bench {
    /// The emulator (`bochs`, `qemu-svm`, `qemu-kvm`).
    pub backend: String,
    /// What boot is counted between: `main` to `consoleread` (Bochs), or two console lines.
    pub boot_span: String,
    /// Boot under Carousel / native (goal ≤ [`GOAL_BOOT_RATIO`]).
    pub boot_ratio: f64,
    /// usertests beside 3 idle xv6 / alone, idle detection off.
    pub usertests_ratio_idle_off: f64,
    /// The same with idle detection on (goal ≤ [`GOAL_USERTESTS_RATIO_IDLE_ON`]).
    pub usertests_ratio_idle_on: f64,
    /// Cycles from `main` to the shell's first console read, native.
    pub boot_cycles_native: u64,
    /// The same under Carousel.
    pub boot_cycles_carousel: u64,
    /// Cycles from power-on to the shell's first console read, native (BIOS and boot block
    /// included); Bochs only (`null` elsewhere).
    pub power_on_to_prompt_cycles_native: Option<u64>,
    /// The same under Carousel (BIOS, GRUB and the hypervisor's start included).
    pub power_on_to_prompt_cycles_carousel: Option<u64>,
    /// Cycles from usertests' first line to `ALL TESTS PASSED`, alone.
    pub usertests_cycles_alone: u64,
    /// The same beside 3 idle xv6, idle detection off.
    pub usertests_cycles_idle_off: u64,
    /// The same, idle detection on.
    pub usertests_cycles_idle_on: u64,
    /// The same five spans in host microseconds, where the TSC keeps the host's time (QEMU,
    /// KVM); `null` in Bochs, whose cycles are instructions.
    pub boot_us_native: Option<f64>,
    pub boot_us_carousel: Option<f64>,
    pub usertests_us_alone: Option<f64>,
    pub usertests_us_idle_off: Option<f64>,
    pub usertests_us_idle_on: Option<f64>,
    pub tsc_hz: u64,
    /// `LabFile` (Bochs: a cycle per instruction), `Pit` or `Cpuid` (host time).
    pub tsc_source: TscSource,
    /// Bochs' instructions per emulated second and CPU model; `null` elsewhere.
    pub ips: Option<u64>,
    pub quantum_us: u32,
    pub cpu_model: Option<String>,
}

/// What one of the bench's runs measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timed {
    pub span: Span,
    /// The span is host nanoseconds, stamped by the tool (a native boot under QEMU); else
    /// TSC cycles.
    pub host_nanos: bool,
    /// The run's TSC frequency and its source, from its Hello (runs under Carousel).
    pub tsc: Option<(u64, TscSource)>,
}

impl Timed {
    /// A span the hypervisor or Bochs counted in TSC cycles.
    fn cycles(span: Span, tsc: Option<(u64, TscSource)>) -> Self {
        Timed {
            span,
            host_nanos: false,
            tsc,
        }
    }
}

/// The runs, longest first (two go at a time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Job {
    UsertestsIdleOff,
    UsertestsAlone,
    UsertestsIdleOn,
    CarouselBoot,
    NativeBoot,
}

const JOBS: [Job; 5] = [
    Job::UsertestsIdleOff,
    Job::UsertestsAlone,
    Job::UsertestsIdleOn,
    Job::CarouselBoot,
    Job::NativeBoot,
];

impl Job {
    fn describe(self) -> &'static str {
        match self {
            Job::UsertestsIdleOff => "usertests beside 3 idle xv6, idle detection off",
            Job::UsertestsAlone => "usertests alone",
            Job::UsertestsIdleOn => "usertests beside 3 idle xv6, idle detection on",
            Job::CarouselBoot => "boot under Carousel",
            Job::NativeBoot => "boot natively",
        }
    }

    fn run(
        self,
        files: &Xv6Files,
        symbols: BootSymbols,
        backend: Backend,
        interrupted: &AtomicBool,
    ) -> Result<Timed, BenchError> {
        let idle = |detection| Company::Idle { detection };
        match self {
            Job::UsertestsIdleOff => usertests(files, idle(false), backend, interrupted),
            Job::UsertestsAlone => usertests(files, Company::Alone, backend, interrupted),
            Job::UsertestsIdleOn => usertests(files, idle(true), backend, interrupted),
            Job::CarouselBoot if backend == Backend::Bochs => {
                carousel_boot(files, symbols, interrupted)
            }
            Job::CarouselBoot => carousel_boot_by_lines(files, backend, interrupted),
            Job::NativeBoot if backend == Backend::Bochs => {
                native_boot(files, symbols, interrupted)
            }
            Job::NativeBoot => native_qemu_boot(files, backend, interrupted),
        }
    }
}

/// Checks the files and returns the kernel's boot symbols, before anything runs.
pub fn check_files(files: &Xv6Files) -> Result<BootSymbols, BenchError> {
    let input = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |problem| BenchError::Input {
            what,
            path,
            problem,
        }
    };
    let read = |what: &'static str, path: &Path| {
        std::fs::read(path).map_err(|error| input(what, path)(InputProblem::Read(error)))
    };
    let kernel = read("kernel", &files.kernel)?;
    let symbols = boot_symbols(&kernel).map_err(input("kernel", &files.kernel))?;
    if !files.disk.is_file() {
        return Err(input("disk", &files.disk)(InputProblem::Missing));
    }
    let image = std::fs::read(&files.image)
        .map_err(|error| input("native boot disk", &files.image)(InputProblem::NoImage(error)))?;
    // No path check for bochsrc: the files travel as copies (the ISO, the native run's
    // directory), never by their own paths.
    check_image(&image, &kernel).map_err(input("native boot disk", &files.image))?;
    Ok(symbols)
}

/// Runs the whole bench on files [`check_files`] accepted (`symbols` is what it found);
/// progress goes to stderr.
pub fn bench_xv6(
    files: &Xv6Files,
    symbols: BootSymbols,
    backend: Backend,
    interrupted: &AtomicBool,
) -> Result<Xv6Bench, BenchError> {
    if backend == Backend::QemuTcg {
        return Err(BenchError::Run {
            run: "the bench needs a backend that runs Carousel".to_string(),
            source: Box::new(RunError::Unavailable(
                "QEMU without SVM or KVM only shows the no-virtualization message".to_string(),
            )),
        });
    }
    if let Some(problem) = backend::unavailable(backend) {
        return Err(BenchError::Run {
            run: format!("the bench runs on {backend}"),
            source: Box::new(RunError::Unavailable(problem)),
        });
    }
    let root = crate::repo::repo_root();
    eprintln!("bench: building the hypervisor…");
    crate::image::build::build(&root, &crate::image::build::target_dir(&root), &[])?;
    let started = Instant::now();
    let results = super::run_parallel(&JOBS, interrupted, |&job| {
        eprintln!("bench: {}…", job.describe());
        let began = Instant::now();
        let result = job.run(files, symbols, backend, interrupted);
        eprintln!(
            "bench: {}: {} in {:.0} s",
            job.describe(),
            match &result {
                Ok(timed) if timed.host_nanos => {
                    format!("{:.1} ms", timed.span.cycles() as f64 / 1e6)
                }
                Ok(timed) => format!("{} cycles", group(timed.span.cycles())),
                Err(_) => "FAILED".to_string(),
            },
            began.elapsed().as_secs_f64()
        );
        result
    });
    let mut spans = Vec::new();
    for (job, result) in JOBS.iter().zip(results) {
        match result {
            Some(Ok(timed)) => spans.push(timed),
            Some(Err(error)) => return Err(error),
            None => {
                return Err(BenchError::Interrupted {
                    run: job.describe().to_string(),
                })
            }
        }
    }
    eprintln!("bench: 5 runs in {:.0} s", started.elapsed().as_secs_f64());
    let [idle_off, alone, idle_on, boot, native] = spans[..] else {
        unreachable!("one span per job")
    };
    Ok(figures(backend, native, boot, alone, idle_off, idle_on))
}

/// The figures from the five runs under `backend`.
pub fn figures(
    backend: Backend,
    native: Timed,
    boot: Timed,
    alone: Timed,
    idle_off: Timed,
    idle_on: Timed,
) -> Xv6Bench {
    // Every run under Carousel announced the same TSC; the first that did speaks for all.
    let (tsc_hz, tsc_source) = [boot, alone, idle_off, idle_on]
        .iter()
        .find_map(|timed| timed.tsc)
        .unwrap_or((TSC_HZ, TscSource::LabFile));
    let wall = tsc_source != TscSource::LabFile;
    // A span the tool stamped in host nanoseconds, in cycles of the host-time TSC.
    let cycles = |timed: Timed| match timed.host_nanos {
        true => (u128::from(timed.span.cycles()) * u128::from(tsc_hz) / 1_000_000_000) as u64,
        false => timed.span.cycles(),
    };
    let ratio = |a: Timed, b: Timed| cycles(a) as f64 / cycles(b).max(1) as f64;
    let micros = |timed: Timed| wall.then(|| cycles(timed) as f64 * 1e6 / tsc_hz as f64);
    let bochs = backend == Backend::Bochs;
    Xv6Bench {
        backend: backend.to_string(),
        boot_span: if bochs {
            format!("{BOOT_FROM} to the shell's first {BOOT_TO}")
        } else {
            format!("the lines '{QEMU_BOOT_FROM_LINE}' to '{QEMU_BOOT_TO_LINE}'")
        },
        boot_ratio: ratio(boot, native),
        usertests_ratio_idle_off: ratio(idle_off, alone),
        usertests_ratio_idle_on: ratio(idle_on, alone),
        boot_cycles_native: cycles(native),
        boot_cycles_carousel: cycles(boot),
        power_on_to_prompt_cycles_native: bochs.then_some(native.span.end),
        power_on_to_prompt_cycles_carousel: bochs.then_some(boot.span.end),
        usertests_cycles_alone: cycles(alone),
        usertests_cycles_idle_off: cycles(idle_off),
        usertests_cycles_idle_on: cycles(idle_on),
        boot_us_native: micros(native),
        boot_us_carousel: micros(boot),
        usertests_us_alone: micros(alone),
        usertests_us_idle_off: micros(idle_off),
        usertests_us_idle_on: micros(idle_on),
        tsc_hz,
        tsc_source,
        ips: bochs.then_some(IPS),
        quantum_us: QUANTUM_US,
        cpu_model: bochs.then(|| DEFAULT_CPU_MODEL.to_string()),
    }
}

impl Xv6Bench {
    /// The figures as text, each ratio beside its goal.
    pub fn text(&self) -> String {
        let mark = |ok: bool| if ok { "ok" } else { "MISSED" };
        // Cycles, and their host time where the TSC keeps it.
        let span = |cycles: u64, micros: Option<f64>| match micros {
            Some(us) if us < 10_000_000.0 => {
                format!("{} cycles ({:.1} ms)", group(cycles), us / 1e3)
            }
            Some(us) => format!("{} cycles ({:.2} s)", group(cycles), us / 1e6),
            None => format!("{} cycles", group(cycles)),
        };
        let mut out = String::new();
        let machine = match (&self.cpu_model, self.ips) {
            (Some(model), Some(ips)) => format!("Bochs {model}, ips {}", group(ips)),
            _ => self.backend.clone(),
        };
        let _ = writeln!(
            out,
            "carousel bench xv6: {machine}, TSC {} Hz ({}), quantum {} µs",
            group(self.tsc_hz),
            super::tsc_said(self.tsc_source),
            self.quantum_us
        );
        let _ = writeln!(
            out,
            "boot, {}:\n  native {}, Carousel {} = {:.3}× (goal ≤ {GOAL_BOOT_RATIO}: {})",
            self.boot_span,
            span(self.boot_cycles_native, self.boot_us_native),
            span(self.boot_cycles_carousel, self.boot_us_carousel),
            self.boot_ratio,
            mark(self.boot_ratio <= GOAL_BOOT_RATIO)
        );
        if let (Some(native), Some(carousel)) = (
            self.power_on_to_prompt_cycles_native,
            self.power_on_to_prompt_cycles_carousel,
        ) {
            let _ = writeln!(
                out,
                "  from power-on: native {} cycles, Carousel {} cycles (BIOS, GRUB and the \
                 hypervisor's start)",
                group(native),
                group(carousel)
            );
        }
        let _ = writeln!(
            out,
            "usertests alone:                     {}",
            span(self.usertests_cycles_alone, self.usertests_us_alone)
        );
        let _ = writeln!(
            out,
            "  beside 3 idle xv6, detection off:  {} = {:.3}×",
            span(self.usertests_cycles_idle_off, self.usertests_us_idle_off),
            self.usertests_ratio_idle_off
        );
        let _ = writeln!(
            out,
            "  beside 3 idle xv6, detection on:   {} = {:.3}× (goal ≤ \
             {GOAL_USERTESTS_RATIO_IDLE_ON}: {})",
            span(self.usertests_cycles_idle_on, self.usertests_us_idle_on),
            self.usertests_ratio_idle_on,
            mark(self.usertests_ratio_idle_on <= GOAL_USERTESTS_RATIO_IDLE_ON)
        );
        if self.tsc_source != TscSource::LabFile {
            let _ = writeln!(
                out,
                "the goals are set in Bochs, a cycle an instruction; here a cycle is host time, \
                 and every exit costs a world switch {} emulates (tens of µs), so xv6's port \
                 I/O weighs far more than on hardware",
                self.backend
            );
        }
        out
    }
}

/// `carousel bench xv6`: runs it and prints the figures; the exit code.
/// Exit code 2 when the files are not a usable xv6 build (nothing ran).
pub fn xv6_command(
    files: &Xv6Files,
    backend: BackendChoice,
    json: bool,
    interrupted: &AtomicBool,
) -> i32 {
    let symbols = match check_files(files) {
        Ok(symbols) => symbols,
        Err(error) => {
            eprintln!("carousel bench xv6: {error}");
            return error.exit_code();
        }
    };
    super::print_result(
        "xv6",
        bench_xv6(files, symbols, backend::resolve_here(backend), interrupted),
        json,
        Xv6Bench::text,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use carousel_trace::model::console::TimedLine;

    fn files(dir: &Path) -> Xv6Files {
        Xv6Files::new(dir.join("kernel"), dir.join("fs.img"), None)
    }

    #[test]
    fn generated_labs_are_valid() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let files = files(dir.path());
        std::fs::write(&files.kernel, b"\x7fELF").expect("written");
        std::fs::write(&files.disk, [0u8; 512]).expect("written");
        assert_eq!(files.image, dir.path().join("xv6.img"));
        let load = |name: &str, (lab, comment): (Lab, String)| {
            let path = dir.path().join(name);
            std::fs::write(&path, lab.to_toml(&comment)).expect("written");
            crate::lab::Lab::load(&path).expect("a valid lab")
        };
        let boot = load("boot.toml", boot_lab(&files));
        assert_eq!(boot.vms.len(), 1);
        let alone = load("alone.toml", usertests_lab(&files, Company::Alone));
        assert_eq!(alone.vms.len(), 1);
        assert_eq!(alone.vms[0].name, "ut");
        for detection in [false, true] {
            let lab = load(
                "idle.toml",
                usertests_lab(&files, Company::Idle { detection }),
            );
            assert_eq!(lab.vms.len(), 1 + IDLE_VMS);
            assert_eq!(lab.idle_threshold_us.is_some(), detection);
            assert_eq!(lab.vms[0].name, "ut");
            assert_eq!(lab.quantum_us, QUANTUM_US);
        }
    }

    #[test]
    fn images_must_hold_the_kernel_after_a_boot_sector() {
        let kernel = b"\x7fELF kernel bytes".to_vec();
        let mut image = vec![0u8; 512];
        image[510] = 0x55;
        image[511] = 0xAA;
        image.extend_from_slice(&kernel);
        image.resize(4096, 0);
        assert!(check_image(&image, &kernel).is_ok());
        let mut other = kernel.clone();
        other[5] ^= 1;
        assert!(matches!(
            check_image(&image, &other),
            Err(InputProblem::OtherKernel)
        ));
        image[511] = 0;
        assert!(matches!(
            check_image(&image, &kernel),
            Err(InputProblem::NoBootSector)
        ));
        assert!(check_image(&[], &kernel).is_err());
    }

    /// A little-endian ELF32 (as xv6's kernel is) holding only a symbol table of `symbols`.
    fn elf32_with_symbols(symbols: &[(&str, u32)]) -> Vec<u8> {
        let mut strtab = vec![0u8];
        let mut symtab = vec![0u8; 16];
        for (name, value) in symbols {
            let st_name = strtab.len() as u32;
            strtab.extend_from_slice(name.as_bytes());
            strtab.push(0);
            symtab.extend_from_slice(&st_name.to_le_bytes());
            symtab.extend_from_slice(&value.to_le_bytes());
            symtab.extend_from_slice(&0u32.to_le_bytes());
            // STB_GLOBAL, STT_FUNC; section 1.
            symtab.extend_from_slice(&[0x12, 0, 1, 0]);
        }
        strtab.resize(strtab.len().next_multiple_of(4), 0);
        let strtab_at = 52u32;
        let symtab_at = strtab_at + strtab.len() as u32;
        let sections_at = symtab_at + symtab.len() as u32;
        let mut elf = vec![0x7f, b'E', b'L', b'F', 1, 1, 1];
        elf.resize(16, 0);
        for half in [2u16, 3] {
            elf.extend_from_slice(&half.to_le_bytes());
        }
        for word in [1u32, 0x0010_000c, 0, sections_at, 0] {
            elf.extend_from_slice(&word.to_le_bytes());
        }
        for half in [52u16, 32, 0, 40, 3, 0] {
            elf.extend_from_slice(&half.to_le_bytes());
        }
        elf.extend_from_slice(&strtab);
        elf.extend_from_slice(&symtab);
        let section = |kind: u32, offset: u32, size: usize, link: u32, entsize: u32| {
            [0, kind, 0, 0, offset, size as u32, link, 1, 4, entsize]
        };
        for header in [
            [0u32; 10],
            section(2, symtab_at, symtab.len(), 2, 16),
            section(3, strtab_at, strtab.len(), 0, 0),
        ] {
            for word in header {
                elf.extend_from_slice(&word.to_le_bytes());
            }
        }
        elf
    }

    #[test]
    fn finds_the_boot_symbols_in_an_elf32() {
        let elf = elf32_with_symbols(&[
            ("consoleinit", 0x8010_0100),
            ("consoleread", 0x8010_0280),
            ("main", 0x8010_30c0),
        ]);
        assert_eq!(
            boot_symbols(&elf).ok(),
            Some(BootSymbols {
                from: 0x8010_30c0,
                to: 0x8010_0280
            })
        );
        let error = boot_symbols(&elf32_with_symbols(&[("main", 0x10)])).unwrap_err();
        assert!(
            matches!(error, InputProblem::NotXv6("consoleread")),
            "{error}"
        );
        assert!(matches!(
            boot_symbols(b"not an elf"),
            Err(InputProblem::Symbol(SymbolError::NotElf(_)))
        ));
    }

    #[test]
    fn usertests_span_runs_from_its_first_line_to_passed() {
        let line = |tsc: u64, text: &str| TimedLine {
            tsc,
            text: text.to_string(),
        };
        let lines = [
            line(10, "ALL TESTS PASSED"),
            line(20, "$ "),
            line(30, "usertests starting"),
            line(40, "test one ok"),
            line(90, "ALL TESTS PASSED"),
        ];
        assert_eq!(usertests_span(&lines), Ok(Span { start: 30, end: 90 }));
        assert_eq!(
            usertests_span(&lines[..4]),
            Err(Missing::Line(USERTESTS_PASSED))
        );
        assert_eq!(
            usertests_span(&lines[..2]),
            Err(Missing::Line(USERTESTS_FIRST))
        );
    }

    #[test]
    fn figures_are_ratios_of_the_spans() {
        let bochs = Some((TSC_HZ, TscSource::LabFile));
        let span = |start, end| Timed::cycles(Span { start, end }, bochs);
        let bench = figures(
            Backend::Bochs,
            Timed::cycles(Span { start: 4, end: 104 }, None),
            span(150, 260),
            span(0, 1_000),
            span(0, 3_800),
            span(500, 1_570),
        );
        assert_eq!(bench.boot_cycles_native, 100);
        assert_eq!(bench.boot_cycles_carousel, 110);
        assert!((bench.boot_ratio - 1.1).abs() < 1e-9);
        assert!((bench.usertests_ratio_idle_off - 3.8).abs() < 1e-9);
        assert!((bench.usertests_ratio_idle_on - 1.07).abs() < 1e-9);
        assert_eq!(bench.power_on_to_prompt_cycles_native, Some(104));
        assert_eq!(bench.power_on_to_prompt_cycles_carousel, Some(260));
        // Bochs' cycles are instructions: no microseconds.
        assert_eq!(
            (bench.boot_us_native, bench.usertests_us_alone),
            (None, None)
        );
        let json = serde_json::to_value(&bench).expect("serialises");
        for key in [
            "boot_ratio",
            "usertests_ratio_idle_off",
            "usertests_ratio_idle_on",
            "boot_cycles_native",
            "boot_cycles_carousel",
            "usertests_cycles_alone",
            "usertests_cycles_idle_off",
            "usertests_cycles_idle_on",
            "usertests_us_idle_on",
            "tsc_source",
            "backend",
        ] {
            assert!(json.get(key).is_some(), "{key}");
        }
        let text = bench.text();
        assert!(text.contains("1.100× (goal ≤ 1.2: ok)"), "{text}");
        assert!(text.contains("1.070× (goal ≤ 1.3: ok)"), "{text}");
        assert!(
            text.contains("main to the shell's first consoleread"),
            "{text}"
        );
        assert!(text.contains("from power-on"), "{text}");
        assert!(
            !text.contains(" ms)") && !text.contains("host time"),
            "{text}"
        );
    }

    #[test]
    fn under_qemu_the_native_boots_nanoseconds_meet_the_runs_host_time_tsc() {
        // A 2.5 GHz TSC measured against the PIT; the native boot stamped by the tool in ns.
        let qemu = Some((2_500_000_000, TscSource::Pit));
        let span = |start, end| Timed::cycles(Span { start, end }, qemu);
        let native = Timed {
            span: Span {
                start: 1_000_000_000,
                end: 1_200_000_000,
            },
            host_nanos: true,
            tsc: None,
        };
        let bench = figures(
            Backend::QemuSvm,
            native,
            span(0, 550_000_000),
            span(0, 25_000_000_000),
            span(0, 75_000_000_000),
            span(0, 30_000_000_000),
        );
        // 200 ms natively = 500 M cycles; 550 M under Carousel.
        assert_eq!(bench.boot_cycles_native, 500_000_000);
        assert!(
            (bench.boot_ratio - 1.1).abs() < 1e-9,
            "{}",
            bench.boot_ratio
        );
        assert_eq!(bench.boot_us_native, Some(200_000.0));
        assert_eq!(bench.boot_us_carousel, Some(220_000.0));
        assert_eq!(bench.usertests_us_alone, Some(10_000_000.0));
        assert!((bench.usertests_ratio_idle_on - 1.2).abs() < 1e-9);
        assert_eq!(
            (bench.tsc_hz, bench.tsc_source),
            (2_500_000_000, TscSource::Pit)
        );
        assert_eq!(bench.power_on_to_prompt_cycles_native, None);
        assert_eq!((bench.ips, bench.cpu_model.as_deref()), (None, None));
        let text = bench.text();
        assert!(
            text.contains("'cpu0: starting' to 'init: starting sh'"),
            "{text}"
        );
        assert!(
            text.contains("native 500,000,000 cycles (200.0 ms)"),
            "{text}"
        );
        assert!(text.contains("25,000,000,000 cycles (10.00 s)"), "{text}");
        assert!(text.contains("measured against the PIT"), "{text}");
        assert!(
            !text.contains("power-on") && !text.contains("ips"),
            "{text}"
        );
        assert!(text.contains("here a cycle is host time"), "{text}");
    }

    #[test]
    fn native_lines_are_stamped_when_their_newline_is_read() {
        let mut stamps = LineStamps::default();
        stamps.feed(b"SeaBIOS\r\n\ncpu0: sta", 10);
        stamps.feed(b"rting 0\n", 25);
        stamps.feed(b"init: starting sh\n$ ", 40);
        let texts: Vec<(&str, u64)> = stamps
            .lines
            .iter()
            .map(|line| (line.text.as_str(), line.tsc))
            .collect();
        assert_eq!(
            texts,
            [
                ("SeaBIOS", 10),
                ("", 10),
                ("cpu0: starting 0", 25),
                ("init: starting sh", 40)
            ]
        );
        assert_eq!(
            line_span(&stamps.lines, QEMU_BOOT_FROM_LINE, QEMU_BOOT_TO_LINE),
            Ok(Span { start: 25, end: 40 })
        );
        // init's line before xv6's first does not count.
        let early = [
            TimedLine {
                tsc: 1,
                text: "init: starting sh".to_string(),
            },
            TimedLine {
                tsc: 2,
                text: "cpu0: starting 0".to_string(),
            },
        ];
        assert_eq!(
            line_span(&early, QEMU_BOOT_FROM_LINE, QEMU_BOOT_TO_LINE),
            Err(Missing::Line(QEMU_BOOT_TO_LINE))
        );
    }
}
