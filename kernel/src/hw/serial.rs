//! The hypervisor's own serial lines (COM1 text, COM2 records): a 16550 driven by polling,
//! never waited on except at the very end of a run. `carousel_kernel::feed` decides when to
//! poll it next.

use carousel_kernel::feed::LineStatus;
use uart_16550::backend::PioBackend;
use uart_16550::spec::registers::LSR;
use uart_16550::{BaudRate, Config, Uart16550};

/// The lines' rate: the fastest standard one (the crate's default is 9,600). Emulators pace
/// their UARTs by it (Bochs in emulated time); QEMU sends at once.
pub const BAUD: u32 = 115_200;

/// A UART, if one answered at its port.
#[derive(Debug)]
pub struct Serial {
    port: Option<Uart16550<PioBackend>>,
}

impl Serial {
    /// No UART yet (fit for a `static`).
    pub const fn none() -> Self {
        Self { port: None }
    }

    /// Opens the 16550 at `base` (8N1 at [`BAUD`]). Without it nothing is sent.
    ///
    /// # Safety
    /// The port range must belong to a UART the hypervisor owns, with nothing else driving it.
    pub unsafe fn open(base: u16) -> Self {
        // SAFETY: forwarded to the caller.
        let port = unsafe { Uart16550::new_port(base) }
            .ok()
            .and_then(|mut port| {
                let config = Config {
                    baud_rate: BaudRate::from_integer(BAUD),
                    ..Config::default()
                };
                port.init(config).ok().map(|()| port)
            });
        Self { port }
    }

    /// True when a UART answered.
    pub fn is_present(&self) -> bool {
        self.port.is_some()
    }

    /// Sends what the UART takes now; returns how many bytes it took. Without a UART every
    /// byte counts as sent (and goes nowhere).
    pub fn send(&mut self, bytes: &[u8]) -> usize {
        match self.port.as_mut() {
            Some(port) => port.send_bytes(bytes),
            None => bytes.len(),
        }
    }

    /// What the transmitter is doing: its FIFO still busy, empty with the last byte on the
    /// wire, or idle. Without a UART, idle.
    pub fn status(&mut self) -> LineStatus {
        let Some(port) = self.port.as_mut() else {
            return LineStatus::Idle;
        };
        let lsr = port.lsr();
        if !lsr.contains(LSR::THR_EMPTY) {
            LineStatus::Busy
        } else if lsr.contains(LSR::TRANSMITTER_EMPTY) {
            LineStatus::Idle
        } else {
            LineStatus::Draining
        }
    }

    /// Sends all of `bytes`, waiting for the UART (before the heap, and for panics).
    pub fn send_all(&mut self, bytes: &[u8]) {
        if let Some(port) = self.port.as_mut() {
            port.send_bytes_exact(bytes);
        }
    }

    /// A received byte, if one waits.
    pub fn receive(&mut self) -> Option<u8> {
        self.port.as_mut()?.try_receive_byte().ok()
    }
}
