//! `adversary`: a guest that attacks the hypervisor and its neighbours, one case per VM, chosen
//! by its command line (`case=NAME` and the case's own `key=value` arguments). Each case does
//! what a hostile or merely unusual guest might, and reports what the processor (as Carousel
//! presents it) did: a `CHECK` per expectation, then `EXIT`. Cases in which the hypervisor is
//! expected to stop the VM (a touch outside RAM, a page table in a device page) end with
//! `EXIT_FAILURE` if they are still running afterwards.
//!
//! Every case that survives ends with the check `done` (passed when all its other checks
//! passed), then `EXIT_SUCCESS` or `EXIT_FAILURE`: a VM that stops without `done` never got to
//! its end, however it stopped. The scenario tests in `tools/carousel/tests/adversary.rs` know
//! what each case should come to; the labs in `ci/labs/adversary/` run them beside well-behaved
//! VMs.
//!
//! Cases (see each module for the details and the arguments):
//! - [`regs`] `case=regs class=fpu|dr|kgsb|cr8|msr seed=N`: register state that must not cross
//!   between VMs (x87/SSE, debug registers, IA32_KERNEL_GS_BASE, CR8, the SYSCALL MSRs).
//! - [`timers`] `case=lapic-tiny mode=if0|masked|if1`, `case=set-timer mode=far|max|halt-if1`,
//!   `case=mwait`: timers that must not livelock the machine or hold the run.
//! - [`floods`] `case=flood kind=...`: record floods (CHECK, METRIC, balloon, metric names) and
//!   exit floods (port I/O, CPUID, VMCALL, console, self-IPIs, one huge `rep outsb`).
//! - [`escapes`] `case=escapes`: control bytes, ESC sequences and forged lines in every string a
//!   guest hands over.
//! - [`memory`] `case=touch where=...`, `case=pt-in-mmio ...`, `case=exec-apic`,
//!   `case=mmio-straddle`, `case=triple-fault`: accesses the hypervisor must stop the VM for.
//! - [`legal`] `case=legal insn=...`: instructions whose hardware behaviour the guest expects
//!   (a #GP, a #UD, or success).
//! - [`user`] `case=ring3 call=...`: hypercalls and privileged instructions from CPL 3.
//! - [`devices`] `case=mmio op=...`, `case=icr ...`, `case=reset ...`, `case=io-sweep`,
//!   `case=mmio-sweep ...`: device pages and ports driven the way hardware allows.
//! - [`hypercalls`] `case=hypercall-args`, `case=hypercall-ballooned`, `case=balloon-lists`,
//!   `case=balloon-own ...`:
//!   arguments that straddle the end of RAM, wrap, repeat or point at the guest's own image.
#![no_std]
#![no_main]

mod devices;
mod escapes;
mod floods;
mod hypercalls;
mod legal;
mod memory;
mod regs;
mod timers;
mod user;

use core::fmt::{self, Write as _};

use carousel_guests::interrupts::{self, Fault};
use carousel_guests::{arch, entry, hypercall, BootInfo};
use carousel_protocol::hypercall::{CONSOLE_WRITE_MAX, EXIT_FAILURE, EXIT_SUCCESS};

entry!(main);

/// Exit status of a case that did something hardware would answer with a reset or an INIT and
/// found itself still running: neither success nor failure.
pub const EXIT_SURVIVED: u32 = 0x20;
/// Vector #DB.
pub const DEBUG: u8 = 1;
/// Vector NMI.
pub const NMI: u8 = 2;
/// Vector #UD.
pub const INVALID_OPCODE: u8 = 6;
/// Vector #GP.
pub const GENERAL_PROTECTION: u8 = 13;
/// Vector #PF.
pub const PAGE_FAULT: u8 = 14;
/// Where the case guests find free RAM for pages they give back or fill: 3 MiB, above the
/// image (which ends below 2 MiB) and below the end of the smallest VM the labs give them
/// (4 MiB).
pub const FREE_RAM: u64 = 3 << 20;
/// 4 KiB.
pub const PAGE: u64 = 4096;

fn main(boot: &BootInfo) -> ! {
    interrupts::init();
    let case = boot.arg("case").unwrap_or("");
    say!("case {case} ({})", boot.cmdline);
    let mut report = Report::new();
    match case {
        "regs" => regs::run(boot, &mut report),
        "lapic-tiny" => timers::lapic_tiny(boot, &mut report),
        "set-timer" => timers::set_timer(boot),
        "mwait" => timers::mwait(&mut report),
        "flood" => floods::run(boot, &mut report),
        "escapes" => escapes::run(&mut report),
        "touch" => memory::touch(boot),
        "pt-in-mmio" => memory::page_table_in_mmio(boot),
        "exec-apic" => memory::execute_apic(),
        "mmio-straddle" => memory::mmio_straddle(),
        "triple-fault" => arch::triple_fault(),
        "legal" => legal::run(boot, &mut report),
        "ring3" => user::run(boot, &mut report),
        "mmio" => devices::mmio_instruction(boot, &mut report),
        "icr" => devices::icr(boot, &mut report),
        "reset" => devices::reset(boot),
        "io-sweep" => devices::io_sweep(&mut report),
        "mmio-sweep" => devices::mmio_sweep(boot, &mut report),
        "hypercall-args" => hypercalls::arguments(boot, &mut report),
        "balloon-lists" => hypercalls::balloon_lists(boot, &mut report),
        "hypercall-ballooned" => hypercalls::ballooned_buffers(&mut report),
        "balloon-own" => hypercalls::balloon_own(boot, &mut report),
        other => {
            say!("unknown case {other:?}");
            hypercall::exit(EXIT_FAILURE)
        }
    }
    report.finish()
}

/// The end of the VM's RAM (multiboot `mem_upper` counts from 1 MiB).
pub fn ram_end(boot: &BootInfo) -> u64 {
    let memory = boot.memory.expect("the loader gives the memory size");
    (1 << 20) + u64::from(memory.upper_kib) * 1024
}

/// A console line assembled in place (the hypervisor's console takes it in one hypercall, so
/// a case's output costs one exit per line, not two per byte as COM1 would).
#[derive(Debug)]
pub struct Line {
    bytes: [u8; 256],
    length: usize,
}

impl Line {
    pub const fn new() -> Self {
        Self {
            bytes: [0; 256],
            length: 0,
        }
    }

    /// The bytes so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.length]
    }

    /// The text so far (cut back to whole characters if it was cut at the end).
    pub fn as_str(&self) -> &str {
        match core::str::from_utf8(self.as_bytes()) {
            Ok(text) => text,
            Err(error) => core::str::from_utf8(&self.bytes[..error.valid_up_to()]).unwrap_or(""),
        }
    }
}

impl core::ops::Deref for Line {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

/// A check name made from parts (`check_name(format_args!("{name}-ud"))`).
pub fn check_name(arguments: fmt::Arguments<'_>) -> Line {
    let mut line = Line::new();
    let _ = line.write_fmt(arguments);
    line
}

impl Default for Line {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Write for Line {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        for &byte in text.as_bytes() {
            if self.length < self.bytes.len() {
                self.bytes[self.length] = byte;
                self.length += 1;
            }
        }
        Ok(())
    }
}

/// Prints `adversary: ` and the formatted text as one console line (through CONSOLE_WRITE).
pub fn say_line(arguments: fmt::Arguments<'_>) {
    let mut line = Line::new();
    let _ = line.write_str("adversary: ");
    let _ = line.write_fmt(arguments);
    let _ = line.write_str("\n");
    let bytes = line.as_bytes();
    let _ = hypercall::console_write(&bytes[..bytes.len().min(CONSOLE_WRITE_MAX as usize)]);
}

/// Prints one line to the console, like `println!`, through CONSOLE_WRITE.
#[macro_export]
macro_rules! say {
    ($($argument:tt)*) => {
        $crate::say_line(::core::format_args!($($argument)*))
    };
}

/// The case's checks so far.
#[derive(Debug)]
pub struct Report {
    failed: u32,
    passed: u32,
}

impl Default for Report {
    fn default() -> Self {
        Self::new()
    }
}

impl Report {
    pub const fn new() -> Self {
        Self {
            failed: 0,
            passed: 0,
        }
    }

    /// Reports check `name` (CHECK hypercall and a console line).
    pub fn check(&mut self, name: &str, passed: bool) {
        self.check_detail(name, passed, format_args!(""));
    }

    /// Reports check `name` with a detail on its console line.
    pub fn check_detail(&mut self, name: &str, passed: bool, detail: fmt::Arguments<'_>) {
        if passed {
            self.passed += 1;
            say!("check {name}: ok {detail}");
        } else {
            self.failed += 1;
            say!("check {name}: FAILED {detail}");
        }
        if let Err(error) = hypercall::check(name, passed) {
            say!("check {name}: the CHECK hypercall failed: {error}");
        }
    }

    /// Checks that `fault` is the exception `vector` raised by the instruction at `rip` (a
    /// fault: the processor pushes the faulting instruction's address).
    pub fn expect_fault(&mut self, name: &str, fault: Option<Fault>, vector: u8, rip: u64) {
        let passed = fault.is_some_and(|fault| fault.vector == vector && fault.rip == rip);
        self.check_detail(
            name,
            passed,
            format_args!(
                "(expected vector {vector} at {rip:#x}, got {})",
                Shown(fault)
            ),
        );
    }

    /// Checks that `fault` is `None`: the instruction completed.
    pub fn expect_no_fault(&mut self, name: &str, fault: Option<Fault>) {
        self.check_detail(
            name,
            fault.is_none(),
            format_args!("(expected no exception, got {})", Shown(fault)),
        );
    }

    /// Sends `done` and exits: success when every check passed.
    pub fn finish(self) -> ! {
        let passed = self.failed == 0;
        say!("{} checks passed, {} failed", self.passed, self.failed);
        let _ = hypercall::check("done", passed);
        hypercall::exit(if passed { EXIT_SUCCESS } else { EXIT_FAILURE })
    }
}

/// A fault as a console word.
#[derive(Debug)]
pub struct Shown(pub Option<Fault>);

impl fmt::Display for Shown {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => write!(formatter, "none"),
            Some(fault) => write!(
                formatter,
                "vector {} error {:#x} at {:#x} cpl {} cr2 {:#x}",
                fault.vector,
                fault.error_code,
                fault.rip,
                fault.cpl(),
                fault.cr2
            ),
        }
    }
}

/// The TSC deadline `ms` milliseconds of TSC time from now.
pub fn deadline_ms(ms: u64) -> u64 {
    let hz = hypercall::tsc_hz().expect("TSC_KHZ hypercall");
    arch::rdtsc() + ms * hz / 1000
}

/// Ends a case that was meant to be stopped by the hypervisor and is still running.
pub fn survived(what: fmt::Arguments<'_>) -> ! {
    say!("still running after {what}: the hypervisor should have stopped this VM");
    hypercall::exit(EXIT_FAILURE)
}
