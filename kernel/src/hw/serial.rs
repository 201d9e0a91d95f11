//! The hypervisor's own serial lines (COM1 text, COM2 records): a 16550 driven by polling,
//! never waited on except at the very end of a run.

use uart_16550::backend::PioBackend;
use uart_16550::{Config, Uart16550};

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

    /// Opens the 16550 at `base` (8N1, the crate's default rate). Without it nothing is sent.
    ///
    /// # Safety
    /// The port range must belong to a UART the hypervisor owns, with nothing else driving it.
    pub unsafe fn open(base: u16) -> Self {
        // SAFETY: forwarded to the caller.
        let port = unsafe { Uart16550::new_port(base) }
            .ok()
            .and_then(|mut port| port.init(Config::default()).ok().map(|()| port));
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
