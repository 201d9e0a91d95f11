//! `keyecho`: a guest that answers each line typed at its console and measures its own keystroke
//! response, so that a test can hold the hypervisor's figure (from an `Input` event to the VM's
//! `Answer`) against what the guest sees.
//!
//! It takes COM1's receive interrupt through the I/O APIC as xv6 does (IRQ 4, vector 36), prints
//! `keyecho: ready`, and for each line (bytes up to CR or LF):
//! - the receive handler reads the TSC first thing when it takes the line's first byte: the
//!   line's start;
//! - once the line is complete, the main loop prints `keyecho: got "LINE"` (the line as Rust's
//!   `{:?}` writes a string), and reads the TSC just before the `OUT` that puts the answer's
//!   first byte into the transmit holding register: the answer. That `OUT` exits, and the
//!   hypervisor notes its `Answer` (the VM's first output byte after input) during that exit,
//!   so the read before it is the guest's last instant before the hypervisor's;
//! - it reports `key_start_tsc` (the start, as a TSC value: the guest sees the host's TSC) and
//!   `key_cycles` (answer − start) through the METRIC hypercall, then prints the prompt again.
//!
//! The guest's figure leaves out what it cannot see: the hypervisor's clock starts when it puts
//! the byte into the UART, before the VM runs and the interrupt is injected. Time the VM spends
//! descheduled after its handler started is in both figures.
//!
//! After `count` lines it prints `keyecho: done, N lines` and exits with `EXIT_SUCCESS`. A byte
//! that arrives while a complete line waits for its answer is dropped (and counted in the
//! `done` line); an empty line is no line and is not answered.
//!
//! Arguments (`key=value`, all optional):
//! - `count`: how many lines to answer before exiting (default 1).
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use carousel_guests::interrupts::{self, InterruptFrame};
use carousel_guests::serial::{self, COM1, IER, IER_RECEIVED_DATA};
use carousel_guests::{arch, entry, hypercall, ioapic, lapic, println, BootInfo};
use carousel_protocol::hypercall::EXIT_SUCCESS;

entry!(main);

/// xv6's T_IRQ0: IRQ n arrives at vector 32 + n.
const IRQ0_VECTOR: u8 = 32;
/// COM1's IRQ.
const COM1_IRQ: u8 = 4;
/// The spurious-interrupt vector programmed in SVR (xv6's IRQ_SPURIOUS).
const SPURIOUS_VECTOR: u8 = IRQ0_VECTOR + 31;
/// Longest line kept; the rest of a longer line is dropped.
const LINE_CAPACITY: usize = 64;
/// What the answer starts with; its first byte is written on its own, timed.
const ANSWER_PREFIX: &str = "keyecho: got ";

/// The line the receive handler collects, and when it started.
#[derive(Debug)]
struct Line {
    /// The line's bytes, before its CR or LF.
    bytes: [AtomicU8; LINE_CAPACITY],
    /// How many of `bytes` are filled.
    length: AtomicUsize,
    /// Set by the handler at the line's first byte (even one past the capacity).
    begun: AtomicBool,
    /// Set by the handler at CR or LF after at least one byte; cleared by the main loop.
    complete: AtomicBool,
    /// The TSC when the handler took the line's first byte (valid once `begun`).
    started: AtomicU64,
    /// Bytes dropped: past the capacity, or while a complete line waited.
    dropped: AtomicU32,
}

static LINE: Line = Line {
    bytes: [const { AtomicU8::new(0) }; LINE_CAPACITY],
    length: AtomicUsize::new(0),
    begun: AtomicBool::new(false),
    complete: AtomicBool::new(false),
    started: AtomicU64::new(0),
    dropped: AtomicU32::new(0),
};

impl Line {
    /// Takes one received byte that arrived in the interrupt whose handler read `now` (called
    /// by the handler only).
    fn push(&self, byte: u8, now: u64) {
        if self.complete.load(Ordering::Acquire) {
            self.dropped.fetch_add(1, Ordering::AcqRel);
        } else if byte == b'\r' || byte == b'\n' {
            if self.begun.load(Ordering::Acquire) {
                self.complete.store(true, Ordering::Release);
            }
        } else {
            if !self.begun.swap(true, Ordering::AcqRel) {
                self.started.store(now, Ordering::Release);
            }
            let length = self.length.load(Ordering::Acquire);
            match self.bytes.get(length) {
                Some(slot) => {
                    slot.store(byte, Ordering::Release);
                    self.length.store(length + 1, Ordering::Release);
                }
                None => {
                    self.dropped.fetch_add(1, Ordering::AcqRel);
                }
            }
        }
    }

    /// Empties the line for the next one (interrupts disabled: the handler does not run).
    fn clear(&self) {
        self.length.store(0, Ordering::Release);
        self.begun.store(false, Ordering::Release);
        self.complete.store(false, Ordering::Release);
    }
}

fn main(boot: &BootInfo) -> ! {
    let count = boot.number("count", 1);
    println!("keyecho: answering {count} lines");
    interrupts::init();
    interrupts::set_handler(IRQ0_VECTOR + COM1_IRQ, uart_interrupt);
    interrupts::set_handler(SPURIOUS_VECTOR, spurious_interrupt);
    // SAFETY: this guest owns its local APIC, its I/O APIC and COM1. The APIC is enabled with a
    // spurious vector that has a handler; IRQ 4's entry sends vector 36, which has one too; the
    // runtime's polled output needs only THRE, which the received-data interrupt leaves alone.
    unsafe {
        lapic::LOCAL_APIC.write(lapic::SVR, lapic::SVR_ENABLE | u32::from(SPURIOUS_VECTOR));
        ioapic::enable(COM1_IRQ, IRQ0_VECTOR + COM1_IRQ);
        arch::outb(COM1 + IER, IER_RECEIVED_DATA);
    }
    for _ in 0..count {
        println!("keyecho: ready");
        // Interrupts stay off from the check to the halt (STI; HLT), and while answering.
        interrupts::disable();
        while !LINE.complete.load(Ordering::Acquire) {
            interrupts::enable_and_halt();
            interrupts::disable();
        }
        let started = LINE.started.load(Ordering::Acquire);
        let answered = answer();
        LINE.clear();
        interrupts::enable();
        hypercall::metric("key_start_tsc", started).expect("METRIC hypercall");
        hypercall::metric("key_cycles", answered - started).expect("METRIC hypercall");
    }
    println!(
        "keyecho: done, {count} lines ({} bytes dropped)",
        LINE.dropped.load(Ordering::Acquire)
    );
    hypercall::exit(EXIT_SUCCESS)
}

/// Prints the answer to the complete line and returns the TSC just before its first byte went
/// to the transmit holding register.
fn answer() -> u64 {
    let length = LINE.length.load(Ordering::Acquire);
    let bytes: [u8; LINE_CAPACITY] =
        core::array::from_fn(|index| LINE.bytes[index].load(Ordering::Acquire));
    let text = core::str::from_utf8(&bytes[..length]).unwrap_or("(not UTF-8)");
    let (first, rest) = ANSWER_PREFIX.split_at(1);
    let answered = serial::write_byte_timed(first.as_bytes()[0]);
    println!("{rest}{text:?}");
    answered
}

/// Vector 36: reads the TSC first, then takes the received bytes as xv6's `uartintr` does;
/// then EOI.
fn uart_interrupt(_frame: &InterruptFrame) {
    let now = arch::rdtsc();
    serial::drain_received(|byte| LINE.push(byte, now));
    interrupts::end_of_interrupt();
}

/// The spurious vector: acknowledged, as xv6 does.
fn spurious_interrupt(_frame: &InterruptFrame) {
    interrupts::end_of_interrupt();
}
