//! `interactive`: a guest that waits for timer events and measures how long it takes to answer
//! each one, as an interactive program sees its response time.
//!
//! It arms its local APIC timer (one-shot, vector 32), waits in `STI; HLT`, and when the
//! interrupt has come does a little work (the "answer"), then reports the response time: from the
//! timer's deadline to the end of the answer, in TSC cycles, through the METRIC hypercall. Then it
//! arms the timer again, for a fixed stretch of TSC time. A scheduler that lets the guest wait
//! behind other VMs' slices after its timer expired shows here as the guest sees it (the
//! hypervisor measures the same wait from its side as wake-to-run latency and timer lag).
//!
//! The deadline is taken as the TSC just before the write that arms the timer, plus the period:
//! the write itself exits to the hypervisor, which starts the timer a little later, so the
//! response time is overstated by that exit's cost (a few thousand cycles), never understated.
//! The local APIC timer counts at 1 GHz of TSC time (Carousel's platform, as QEMU/KVM;
//! XV6-CONTRACT §9), with divide-by-1.
//!
//! Metrics: `response_cycles`, one report per event; `responses`, the number of events answered,
//! at the end.
//!
//! Arguments (`key=value`, all optional):
//! - `ms`: how long to run, in milliseconds of TSC time (default 300).
//! - `period_us`: from arming the timer to its deadline, microseconds of TSC time (default 2000).
//! - `work_us`: the answer's work, microseconds of guest time (default 50).
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, Ordering};

use carousel_guests::interrupts::{self, InterruptFrame, LOCAL_APIC_BASE};
use carousel_guests::mmio::Registers;
use carousel_guests::{arch, entry, hypercall, println, BootInfo};
use carousel_protocol::hypercall::EXIT_SUCCESS;

entry!(main);

/// The timer's vector (xv6's T_IRQ0 + IRQ_TIMER).
const TIMER_VECTOR: u8 = 32;
/// The spurious-interrupt vector programmed in SVR.
const SPURIOUS_VECTOR: u8 = 63;
/// The local APIC timer's input clock, ticks per second of TSC time.
const APIC_TIMER_HZ: u64 = 1_000_000_000;
/// Local APIC registers.
const LOCAL_APIC: Registers = Registers::new(LOCAL_APIC_BASE);
/// Spurious interrupt vector register.
const LAPIC_SVR: usize = 0xF0;
/// SVR: APIC software enable.
const LAPIC_SVR_ENABLE: u32 = 0x100;
/// LVT timer register (one-shot mode: bits 18:17 clear).
const LAPIC_TIMER: usize = 0x320;
/// Timer initial count: writing it starts the countdown.
const LAPIC_TICR: usize = 0x380;
/// Timer divide configuration.
const LAPIC_TDCR: usize = 0x3E0;
/// TDCR: divide by 1.
const TDCR_DIVIDE_BY_1: u32 = 0xB;
/// Loop iterations timed to calibrate the work loop.
const CALIBRATION_ITERATIONS: u64 = 10_000;
/// Calibration rounds; the fastest counts (a round the scheduler interrupted is slower).
const CALIBRATION_ROUNDS: u32 = 5;

/// Set by the timer's handler, cleared before the timer is armed.
static FIRED: AtomicBool = AtomicBool::new(false);

fn main(boot: &BootInfo) -> ! {
    let duration_ms = boot.number("ms", 300);
    let period_us = boot.number("period_us", 2000).max(1);
    let work_us = boot.number("work_us", 50);
    let tsc_hz = hypercall::tsc_hz().expect("TSC_KHZ hypercall");
    let period = period_us * tsc_hz / 1_000_000;
    let count = u32::try_from(period_us * (APIC_TIMER_HZ / 1_000_000))
        .expect("period_us fits the timer's 32-bit initial count");
    let work_iterations = work_us * tsc_hz / 1_000_000 * CALIBRATION_ITERATIONS / calibrate();
    println!(
        "interactive: {duration_ms} ms, a timer event every {period_us} us, {work_us} us of \
         work each ({work_iterations} iterations)"
    );

    interrupts::init();
    interrupts::set_handler(TIMER_VECTOR, timer_interrupt);
    interrupts::set_handler(SPURIOUS_VECTOR, spurious_interrupt);
    // SAFETY: this guest owns its local APIC; these writes enable it and set up its timer, whose
    // vector has a handler.
    unsafe {
        LOCAL_APIC.write(LAPIC_SVR, LAPIC_SVR_ENABLE | u32::from(SPURIOUS_VECTOR));
        LOCAL_APIC.write(LAPIC_TDCR, TDCR_DIVIDE_BY_1);
        LOCAL_APIC.write(LAPIC_TIMER, u32::from(TIMER_VECTOR));
    }

    let end = arch::rdtsc() + duration_ms * tsc_hz / 1000;
    let mut responses: u64 = 0;
    let mut slowest: u64 = 0;
    while arch::rdtsc() < end {
        interrupts::disable();
        FIRED.store(false, Ordering::Release);
        let deadline = arch::rdtsc() + period;
        // SAFETY: arming the one-shot timer, whose vector has a handler.
        unsafe { LOCAL_APIC.write(LAPIC_TICR, count) };
        while !FIRED.load(Ordering::Acquire) {
            // STI; HLT: the tick cannot slip in between the check and the halt.
            interrupts::enable_and_halt();
            interrupts::disable();
        }
        work(work_iterations);
        let response = arch::rdtsc().saturating_sub(deadline);
        slowest = slowest.max(response);
        responses += 1;
        hypercall::metric("response_cycles", response).expect("METRIC hypercall");
    }
    hypercall::metric("responses", responses).expect("METRIC hypercall");
    println!(
        "interactive: done, {responses} responses, slowest {} us",
        slowest * 1_000_000 / tsc_hz
    );
    hypercall::exit(EXIT_SUCCESS)
}

/// Vector 32: the timer expired.
fn timer_interrupt(_frame: &InterruptFrame) {
    FIRED.store(true, Ordering::Release);
    interrupts::end_of_interrupt();
}

/// Vector 63: acknowledged, as xv6 does.
fn spurious_interrupt(_frame: &InterruptFrame) {
    interrupts::end_of_interrupt();
}

/// `iterations` rounds of the work loop.
fn work(iterations: u64) {
    let mut value: u64 = 0;
    for _ in 0..iterations {
        value = core::hint::black_box(value + 1);
    }
}

/// TSC cycles that [`CALIBRATION_ITERATIONS`] rounds of the work loop take, at least 1.
fn calibrate() -> u64 {
    (0..CALIBRATION_ROUNDS)
        .map(|_| {
            let start = arch::rdtsc();
            work(CALIBRATION_ITERATIONS);
            arch::rdtsc() - start
        })
        .min()
        .unwrap_or(1)
        .max(1)
}
