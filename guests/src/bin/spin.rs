//! `spin`: a CPU-bound guest. It counts loop iterations for a fixed stretch of TSC time and
//! reports its progress through the METRIC hypercall at intervals, so a report can compare
//! the guest's own throughput with the CPU share the hypervisor gave it.
//!
//! It runs with interrupts disabled throughout (the runtime never enables them): only the
//! VMX-preemption timer can take the CPU away from it.
//!
//! Arguments (`key=value`, all optional):
//! - `ms`: how long to spin, in milliseconds of TSC time (default 500).
//! - `report_ms`: interval between progress reports (default 50).
#![no_std]
#![no_main]

use carousel_guests::{arch, entry, hypercall, println, BootInfo};
use carousel_protocol::hypercall::EXIT_SUCCESS;

entry!(main);

/// Iterations between two reads of the TSC (keeps the loop's overhead low).
const BATCH: u64 = 1000;

fn main(boot: &BootInfo) -> ! {
    let duration_ms = boot.number("ms", 500);
    let report_ms = boot.number("report_ms", 50).max(1);
    let tsc_hz = hypercall::tsc_hz().expect("TSC_KHZ hypercall");
    let cycles_per_ms = tsc_hz / 1000;
    println!("spin: {duration_ms} ms at {tsc_hz} Hz, reporting every {report_ms} ms");
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
    println!("spin: done, {iterations} iterations");
    hypercall::exit(EXIT_SUCCESS)
}
