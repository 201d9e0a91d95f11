//! The serial console: COM1, 115200 baud 8N1, polled. [`crate::print!`] and [`crate::println!`]
//! write here. For guests that take COM1's receive interrupt: its registers and the drain of
//! received bytes their handler runs ([`drain_received`]).
//!
//! Guests are single-threaded, and interrupt handlers do not print (see [`crate::interrupts`]), so
//! the console needs no lock. (An exception report may interleave with a line being printed.)

use core::fmt;

use crate::arch;

/// I/O base of COM1.
pub const COM1: u16 = 0x3F8;
/// Transmit holding register (write, DLAB = 0) / divisor latch low byte (DLAB = 1).
const THR: u16 = 0;
/// Receiver buffer register (read, DLAB = 0).
pub const RBR: u16 = 0;
/// Interrupt enable register (DLAB = 0) / divisor latch high byte (DLAB = 1).
pub const IER: u16 = 1;
/// FIFO control register (write).
const FCR: u16 = 2;
/// Line control register.
const LCR: u16 = 3;
/// Modem control register.
const MCR: u16 = 4;
/// Line status register.
pub const LSR: u16 = 5;

/// LCR: divisor latch access bit.
const LCR_DLAB: u8 = 1 << 7;
/// LCR: 8 data bits, no parity, 1 stop bit.
const LCR_8N1: u8 = 0b11;
/// FCR: enable and clear both FIFOs.
const FCR_ENABLE_AND_CLEAR: u8 = 0b111;
/// MCR: DTR and RTS asserted.
const MCR_DTR_RTS: u8 = 0b11;
/// LSR: data ready (a received byte waits in RBR).
pub const LSR_DATA_READY: u8 = 1 << 0;
/// LSR: transmit holding register empty.
pub const LSR_THRE: u8 = 1 << 5;
/// IER: received-data-available interrupt.
pub const IER_RECEIVED_DATA: u8 = 1 << 0;
/// Most bytes one [`drain_received`] takes (bounds a handler if LSR sticks at "data ready").
pub const DRAIN_LIMIT: usize = 4096;
/// Divisor of the 115200 Hz base clock for 115200 baud.
const DIVISOR_115200: u16 = 1;

/// Programs COM1 for 115200 baud 8N1 with interrupts off. Called once by the runtime before
/// the guest's main.
pub(crate) fn init() {
    let [divisor_low, divisor_high] = DIVISOR_115200.to_le_bytes();
    for (register, value) in [
        (IER, 0),
        (LCR, LCR_DLAB),
        (THR, divisor_low),
        (IER, divisor_high),
        (LCR, LCR_8N1),
        (FCR, FCR_ENABLE_AND_CLEAR),
        (MCR, MCR_DTR_RTS),
    ] {
        // SAFETY: the runtime is COM1's only user and this is its initialisation.
        unsafe { arch::outb(COM1 + register, value) };
    }
}

/// Sends one byte, waiting for the transmit holding register to empty first.
fn write_byte(byte: u8) {
    wait_for_room();
    // SAFETY: the THR is empty, and the runtime is COM1's only user.
    unsafe { arch::outb(COM1 + THR, byte) };
}

/// Sends one byte as [`crate::print!`] does, and returns the TSC read just before the `OUT` that
/// writes it: the guest's last instant before the byte goes (the `OUT` exits to the hypervisor,
/// which takes the byte during that exit).
pub fn write_byte_timed(byte: u8) -> u64 {
    wait_for_room();
    let before = arch::rdtsc();
    // SAFETY: the THR is empty, and the runtime is COM1's only user.
    unsafe { arch::outb(COM1 + THR, byte) };
    before
}

/// Waits for the transmit holding register to empty.
fn wait_for_room() {
    // SAFETY: reading the LSR has no side effect on transmission.
    while unsafe { arch::inb(COM1 + LSR) } & LSR_THRE == 0 {
        core::hint::spin_loop();
    }
}

/// Takes what COM1 has received, as xv6's `uartintr` does: reads RBR while LSR shows data (at
/// most [`DRAIN_LIMIT`] bytes), handing each byte to `take`. For a receive interrupt's handler.
///
/// Safe: popping received bytes touches no memory, and the runtime's own output never reads
/// RBR.
pub fn drain_received(mut take: impl FnMut(u8)) {
    for _ in 0..DRAIN_LIMIT {
        // SAFETY: reading the LSR has no side effect.
        if unsafe { arch::inb(COM1 + LSR) } & LSR_DATA_READY == 0 {
            break;
        }
        // SAFETY: RBR pops the byte the caller takes; the runtime's output never reads it.
        take(unsafe { arch::inb(COM1 + RBR) });
    }
}

/// COM1 as a [`fmt::Write`] sink. Lines end in a bare `\n`: the hypervisor's console model, not a
/// terminal, is on the other end.
#[derive(Debug, Clone, Copy, Default)]
pub struct Serial;

impl fmt::Write for Serial {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        text.bytes().for_each(write_byte);
        Ok(())
    }
}

#[doc(hidden)]
pub fn _print(arguments: fmt::Arguments<'_>) {
    // Serial::write_str never fails.
    let _ = fmt::Write::write_fmt(&mut Serial, arguments);
}

/// Prints to COM1, like `std::print!`.
#[macro_export]
macro_rules! print {
    ($($argument:tt)*) => {
        $crate::serial::_print(::core::format_args!($($argument)*))
    };
}

/// Prints a line to COM1, like `std::println!`.
#[macro_export]
macro_rules! println {
    () => {
        $crate::print!("\n")
    };
    ($($argument:tt)*) => {
        $crate::serial::_print(::core::format_args!("{}\n", ::core::format_args!($($argument)*)))
    };
}
