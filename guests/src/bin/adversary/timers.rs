//! Timers that must not stall the machine or hold the run.
//!
//! - `case=lapic-tiny mode=if0|masked|if1 ms=M`: the local APIC timer periodic with divide 1 and
//!   initial count 1 (a tick every nanosecond of its 1 GHz clock), then spinning for `ms` ms of
//!   TSC time (default 300). `if0`: unmasked, IF = 0 (nothing can be delivered); `masked`: LVT
//!   masked; `if1`: delivered to a handler that counts and sends EOI. The victim beside it must
//!   still get its share (issue 12, "What was found" 2). Reports `lapic_ticks` and
//!   `adversary_iterations`.
//! - `case=set-timer mode=far|max|halt-if1`: SET_TIMER 2^50 cycles ahead, or at u64::MAX, then
//!   HLT with IF = 0; or `STI; HLT` with no interrupt source at all. Nothing can wake it: once
//!   the other VMs are done it must stop as "halted with nothing left to wake it", not hold the
//!   run until the host's timeout (issue 12, 5).
//! - `case=mwait`: MONITOR on a line of its own, then MWAIT with IF = 0 (CPUID offers both; VMX
//!   does not make them exit): the VM must not hang the machine.

use core::sync::atomic::{AtomicU64, Ordering};

use carousel_guests::interrupts::{self, InterruptFrame};
use carousel_guests::lapic::{self, LVT_MASKED, LVT_PERIODIC};
use carousel_guests::{arch, hypercall, BootInfo};

use crate::{deadline_ms, say, Report};

/// The timer's vector.
const TIMER_VECTOR: u8 = 0x40;

static TICKS: AtomicU64 = AtomicU64::new(0);

fn tick(_: &InterruptFrame) {
    TICKS.fetch_add(1, Ordering::AcqRel);
    interrupts::end_of_interrupt();
}

pub fn lapic_tiny(boot: &BootInfo, report: &mut Report) {
    let mode = boot.arg("mode").unwrap_or("if0");
    let ms = boot.number("ms", 300);
    let lvt = match mode {
        "masked" => u32::from(TIMER_VECTOR) | LVT_PERIODIC | LVT_MASKED,
        _ => u32::from(TIMER_VECTOR) | LVT_PERIODIC,
    };
    interrupts::set_handler(TIMER_VECTOR, tick);
    // SAFETY: this guest's own local APIC, which nothing else in it uses; the timer's vector has
    // a handler.
    unsafe { lapic::start_timer(lvt, 1) };
    if mode == "if1" {
        interrupts::enable();
    }
    say!("LAPIC timer periodic, divide 1, count 1, mode {mode}: spinning {ms} ms");
    let end = deadline_ms(ms);
    let mut iterations: u64 = 0;
    while arch::rdtsc() < end {
        for _ in 0..1000 {
            iterations = core::hint::black_box(iterations + 1);
        }
    }
    interrupts::disable();
    lapic::stop_timer();
    let ticks = TICKS.load(Ordering::Acquire);
    say!("{iterations} iterations, {ticks} ticks taken");
    let _ = hypercall::metric("lapic_ticks", ticks);
    let _ = hypercall::metric("adversary_iterations", iterations);
    report.check("lapic-tiny-progress", iterations > 0);
    if mode == "if1" {
        report.check("lapic-tiny-ticks-delivered", ticks > 0);
    }
}

pub fn set_timer(boot: &BootInfo) -> ! {
    let mode = boot.arg("mode").unwrap_or("far");
    match mode {
        "halt-if1" => {
            say!("STI; HLT with no interrupt source");
            loop {
                interrupts::enable_and_halt();
                interrupts::disable();
            }
        }
        _ => {
            let deadline = if mode == "max" {
                u64::MAX
            } else {
                arch::rdtsc().wrapping_add(1 << 50)
            };
            let result = hypercall::set_timer(deadline);
            say!("SET_TIMER {deadline:#x}: {result:?}; HLT with IF = 0");
            let mut resumed: u64 = 0;
            loop {
                arch::halt();
                resumed += 1;
                if resumed == 1 || resumed.is_power_of_two() {
                    say!("resumed after HLT {resumed} times");
                }
            }
        }
    }
}

/// The line MONITOR watches (nothing writes it).
#[repr(C, align(64))]
struct Line([u8; 64]);
static MONITORED: Line = Line([0; 64]);

pub fn mwait(report: &mut Report) {
    let monitor = arch::cpuid(1, 0).ecx & (1 << 3) != 0;
    say!("CPUID.1:ECX.MONITOR = {monitor}; MONITOR + MWAIT with IF = 0");
    // SAFETY: MONITOR arms address monitoring on a static line; MWAIT waits for a write to it
    // or another break event (or raises #UD where MONITOR/MWAIT are not offered, which is
    // caught). Neither changes memory.
    let fault = unsafe {
        carousel_guests::probe!(
            "monitor",
            "xor eax, eax",
            "mwait",
            inout("rax") MONITORED.0.as_ptr() => _,
            in("ecx") 0,
            in("edx") 0,
        )
    };
    say!("MWAIT returned ({})", crate::Shown(fault));
    if monitor {
        report.expect_no_fault("mwait-returned", fault);
    } else {
        report.check(
            "mwait-ud",
            fault.is_some_and(|f| f.vector == crate::INVALID_OPCODE),
        );
    }
}
