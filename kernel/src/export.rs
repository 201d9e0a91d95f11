//! COM2: the binary record stream (see `carousel_protocol::wire`). Every record gets the next
//! sequence number, sent or not, so the host sees any loss as a gap.
//!
//! For now records are written synchronously: the run produces a handful of low-rate records.
//! The bounded ring drained without blocking arrives with interval metrics.

use carousel_protocol::record::Record;
use carousel_protocol::wire::{self, Frame};
use spin::Mutex;
use uart_16550::backend::PioBackend;
use uart_16550::{Config, Uart16550};

/// Base port of COM2.
pub const COM2: u16 = 0x2F8;
/// Largest encoded frame: a Hello record with 64 VM names fits easily.
const FRAME_BUFFER: usize = 4096;

struct Exporter {
    port: Option<Uart16550<PioBackend>>,
    next_seq: u32,
    dropped: u32,
}

static EXPORTER: Mutex<Exporter> = Mutex::new(Exporter {
    port: None,
    next_seq: 0,
    dropped: 0,
});

/// Initialises COM2. Without it records are counted as dropped.
pub fn init() {
    // SAFETY: COM2 is a standard port owned by the hypervisor; nothing else drives it.
    if let Ok(mut port) = unsafe { Uart16550::new_port(COM2) } {
        if port.init(Config::default()).is_ok() {
            EXPORTER.lock().port = Some(port);
        }
    }
}

/// Sends one record.
pub fn emit(record: Record) {
    let mut exporter = EXPORTER.lock();
    let seq = exporter.next_seq;
    exporter.next_seq = seq.wrapping_add(1);
    let mut buffer = [0u8; FRAME_BUFFER];
    let sent = match (
        wire::encode(&Frame { seq, record }, &mut buffer),
        exporter.port.as_mut(),
    ) {
        (Ok(bytes), Some(port)) => {
            port.send_bytes_exact(bytes);
            true
        }
        _ => false,
    };
    if !sent {
        exporter.dropped += 1;
    }
}
