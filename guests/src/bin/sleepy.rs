//! `sleepy`: a guest that mostly sleeps. It arms its one-shot timer, halts, and on waking
//! measures how late it was (TSC now against the deadline), reporting each lateness through
//! the METRIC hypercall and the largest at the end.
//!
//! Arguments (`key=value`, all optional):
//! - `period_us`: how long each sleep is, in microseconds of TSC time (default 2000).
//! - `count`: how many sleeps (default 50).
//! - `max_late_us`: if set, exit with failure when any wake is later than this.
#![no_std]
#![no_main]

use carousel_guests::{arch, entry, hypercall, println, BootInfo};
use carousel_protocol::hypercall::{EXIT_FAILURE, EXIT_SUCCESS};

entry!(main);

fn main(boot: &BootInfo) -> ! {
    let period_us = boot.number("period_us", 2000).max(1);
    let count = boot.number("count", 50);
    let max_late_us = boot
        .arg("max_late_us")
        .map(|_| boot.number("max_late_us", 0));
    let tsc_hz = hypercall::tsc_hz().expect("TSC_KHZ hypercall");
    let period = period_us * tsc_hz / 1_000_000;
    println!("sleepy: {count} sleeps of {period_us} us ({period} cycles)");
    let mut latest = 0;
    for _ in 0..count {
        let deadline = arch::rdtsc() + period;
        hypercall::set_timer(deadline).expect("SET_TIMER hypercall");
        // Interrupts are off: the hypervisor resumes us after the HLT at the deadline. A
        // spurious early resume is caught by the loop.
        while arch::rdtsc() < deadline {
            arch::halt();
        }
        let late = arch::rdtsc() - deadline;
        latest = latest.max(late);
        hypercall::metric("wake_late_cycles", late).expect("METRIC hypercall");
    }
    let latest_us = latest * 1_000_000 / tsc_hz;
    println!("sleepy: done, latest wake {latest} cycles ({latest_us} us)");
    match max_late_us {
        Some(bound) if latest_us > bound => {
            println!("sleepy: latest wake {latest_us} us is over the bound of {bound} us");
            hypercall::exit(EXIT_FAILURE)
        }
        _ => hypercall::exit(EXIT_SUCCESS),
    }
}
