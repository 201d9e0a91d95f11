//! `spin`: a CPU-bound guest. It counts loop iterations for a fixed stretch of TSC time and
//! reports its progress through the METRIC hypercall at intervals, so a report can compare
//! the guest's own throughput with the CPU share the hypervisor gave it.
//!
//! By default it runs with interrupts disabled throughout: it never exits by itself, and only the
//! VMX-preemption timer can take the CPU away from it. With `tick_ms` it is an operating
//! system's idle loop instead (xv6's scheduler with nothing to run): interrupts on and a
//! periodic local APIC timer, each tick an interrupt handled and acknowledged.
//!
//! Arguments (`key=value`, all optional):
//! - `ms`: how long to spin, in milliseconds of TSC time (default 500).
//! - `report_ms`: interval between progress reports (default 50).
//! - `tick_ms`: a local APIC timer tick every this many milliseconds of its 1 GHz clock, with
//!   interrupts enabled (default 0: no timer, interrupts off). The ticks taken are reported as
//!   the metric `ticks`.
//!
//! With ticks on it also checks that no tick arrived while its interrupts were disabled (the
//! processor never delivers one then): any such tick is reported as the metric `masked` and
//! fails the guest.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};

use carousel_guests::interrupts::{self, InterruptFrame};
use carousel_guests::{arch, entry, hypercall, lapic, println, BootInfo};
use carousel_protocol::hypercall::{EXIT_FAILURE, EXIT_SUCCESS};

entry!(main);

/// Iterations between two reads of the TSC (keeps the loop's overhead low).
const BATCH: u64 = 1000;

/// The timer's vector.
const TIMER_VECTOR: u8 = 0x40;

/// Ticks taken.
static TICKS: AtomicU64 = AtomicU64::new(0);

fn tick(_: &InterruptFrame) {
    TICKS.fetch_add(1, Ordering::AcqRel);
    interrupts::end_of_interrupt();
}

/// Starts a periodic local APIC timer every `tick_ms` milliseconds and enables interrupts.
fn start_ticking(tick_ms: u64) {
    let count = u32::try_from(tick_ms.saturating_mul(lapic::COUNTS_PER_MS)).unwrap_or(u32::MAX);
    interrupts::init();
    interrupts::set_handler(TIMER_VECTOR, tick);
    // SAFETY: the timer's vector has a handler, and nothing else in this guest uses the timer.
    unsafe { lapic::start_timer(u32::from(TIMER_VECTOR) | lapic::LVT_PERIODIC, count.max(1)) };
    interrupts::enable();
}

fn main(boot: &BootInfo) -> ! {
    let duration_ms = boot.number("ms", 500);
    let report_ms = boot.number("report_ms", 50).max(1);
    let tsc_hz = hypercall::tsc_hz().expect("TSC_KHZ hypercall");
    let cycles_per_ms = tsc_hz / 1000;
    let tick_ms = boot.number("tick_ms", 0);
    println!("spin: {duration_ms} ms at {tsc_hz} Hz, reporting every {report_ms} ms");
    if tick_ms > 0 {
        start_ticking(tick_ms);
    }
    let start = arch::rdtsc();
    let end = start + duration_ms * cycles_per_ms;
    let mut next_report = start + report_ms * cycles_per_ms;
    let mut iterations: u64 = 0;
    loop {
        for _ in 0..BATCH {
            iterations = core::hint::black_box(iterations + 1);
        }
        let now = arch::rdtsc();
        if now >= next_report || now >= end {
            hypercall::metric("iterations", iterations).expect("METRIC hypercall");
            next_report += report_ms * cycles_per_ms;
        }
        if now >= end {
            break;
        }
    }
    if tick_ms > 0 {
        interrupts::disable();
        lapic::stop_timer();
        hypercall::metric("ticks", TICKS.load(Ordering::Acquire)).expect("METRIC hypercall");
        let masked = interrupts::while_masked().count;
        hypercall::metric("masked", u64::from(masked)).expect("METRIC hypercall");
        if masked > 0 {
            println!("spin: {masked} tick(s) arrived with interrupts disabled");
            hypercall::exit(EXIT_FAILURE)
        }
    }
    println!("spin: done, {iterations} iterations");
    hypercall::exit(EXIT_SUCCESS)
}
