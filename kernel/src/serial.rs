//! The hypervisor's own serial lines (COM1 text, COM2 records): a UART and a bounded ring of
//! bytes waiting for it, drained without waiting ([`TxRing::send_available`]). The console
//! and the exporter each own one and decide what happens when it is full.

use alloc::collections::VecDeque;

use uart_16550::backend::PioBackend;
use uart_16550::{Config, Uart16550};

/// Bytes a ring holds: several emulated seconds of a 115200-baud line.
pub const RING_BYTES: usize = 64 << 10;

/// A UART (if one answered) and the bytes queued for it.
#[derive(Debug)]
pub struct TxRing {
    port: Option<Uart16550<PioBackend>>,
    ring: VecDeque<u8>,
}

impl TxRing {
    /// No UART yet, and an empty ring that has not allocated (fit for a `static`).
    pub const fn new() -> Self {
        Self {
            port: None,
            ring: VecDeque::new(),
        }
    }

    /// Opens the 16550 at `base` (8N1, the crate's default rate). Without it nothing is sent.
    ///
    /// # Safety
    /// The port range must belong to a UART the hypervisor owns, with nothing else driving it.
    pub unsafe fn open(&mut self, base: u16) {
        // SAFETY: forwarded to the caller.
        if let Ok(mut port) = unsafe { Uart16550::new_port(base) } {
            if port.init(Config::default()).is_ok() {
                self.port = Some(port);
            }
        }
    }

    /// Allocates the ring (the heap must be up).
    pub fn reserve(&mut self) {
        self.ring.reserve_exact(RING_BYTES);
    }

    pub fn port(&mut self) -> Option<&mut Uart16550<PioBackend>> {
        self.port.as_mut()
    }

    pub fn has_port(&self) -> bool {
        self.port.is_some()
    }

    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// Free bytes in the ring.
    pub fn room(&self) -> usize {
        RING_BYTES.saturating_sub(self.ring.len())
    }

    /// Queues `bytes`; the caller has checked the room.
    pub fn push(&mut self, bytes: &[u8]) {
        self.ring.extend(bytes.iter());
    }

    /// Sends what the UART takes now and returns; without a UART the bytes are discarded.
    pub fn send_available(&mut self) {
        let Some(port) = self.port.as_mut() else {
            self.ring.clear();
            return;
        };
        while !self.ring.is_empty() {
            let sent = port.send_bytes(self.ring.as_slices().0);
            if sent == 0 {
                break;
            }
            self.ring.drain(..sent);
        }
    }

    /// Waits until there is room for `length` bytes, sending meanwhile.
    pub fn wait_for_room(&mut self, length: usize) {
        while self.has_port() && self.room() < length {
            self.send_available();
            core::hint::spin_loop();
        }
    }
}
