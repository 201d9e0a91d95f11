//! COM2: the binary record stream (see `carousel_protocol::wire`).
//!
//! Records go into a bounded ring and leave through the UART without blocking the scheduler:
//! [`drain`] sends what the UART can take right now and returns. High-rate records (exit
//! statistics, disk I/O, guest metrics) go through [`emit_or_drop`]: when the ring is full they
//! are dropped and counted; the sequence number is used all the same, so the host sees the loss
//! as a gap, and the count travels in the run summary. Loss is never silent. The few records
//! verdicts depend on (Hello, checks, VM stops, summaries, RunEnd) go through [`emit`], which
//! waits for room instead.

use alloc::vec::Vec;

use carousel_protocol::record::Record;
use carousel_protocol::wire::{self, Frame};
use spin::Mutex;

use crate::serial::TxRing;

/// Base port of COM2.
pub const COM2: u16 = 0x2F8;
/// Largest encoded frame: a Hello record with 64 VM names fits easily.
const FRAME_BUFFER: usize = 4096;

struct Exporter {
    tx: TxRing,
    /// Where a frame is encoded before it enters the ring (kept, so no per-record zeroing).
    scratch: Vec<u8>,
    next_seq: u32,
    dropped: u64,
}

static EXPORTER: Mutex<Exporter> = Mutex::new(Exporter {
    tx: TxRing::new(),
    scratch: Vec::new(),
    next_seq: 0,
    dropped: 0,
});

/// Initialises COM2 and the ring (the heap must be up). Without COM2 every record is dropped.
pub fn init() {
    let mut exporter = EXPORTER.lock();
    exporter.tx.reserve();
    exporter.scratch.resize(FRAME_BUFFER, 0);
    // SAFETY: COM2 is a standard port owned by the hypervisor; nothing else drives it.
    unsafe { exporter.tx.open(COM2) };
}

/// Queues a record the run's verdict depends on, waiting for room in the ring if need be.
pub fn emit(record: Record) {
    queue(record, true);
}

/// Queues a high-rate record; drops (and counts) it when the ring is full.
pub fn emit_or_drop(record: Record) {
    queue(record, false);
}

fn queue(record: Record, wait: bool) {
    let mut guard = EXPORTER.lock();
    let exporter = &mut *guard;
    let seq = exporter.next_seq;
    exporter.next_seq = seq.wrapping_add(1);
    let Ok(bytes) = wire::encode(&Frame { seq, record }, &mut exporter.scratch) else {
        exporter.dropped += 1;
        return;
    };
    let length = bytes.len();
    if !exporter.tx.has_port() {
        exporter.dropped += 1;
        return;
    }
    if wait {
        exporter.tx.wait_for_room(length);
    }
    if exporter.tx.room() >= length {
        exporter.tx.push(&exporter.scratch[..length]);
    } else {
        exporter.dropped += 1;
    }
    exporter.tx.send_available();
}

/// Sends what the UART can take now; returns at once when it is busy.
pub fn drain() {
    let mut exporter = EXPORTER.lock();
    if !exporter.tx.is_empty() {
        exporter.tx.send_available();
    }
}

/// True when records wait in the ring.
pub fn pending() -> bool {
    !EXPORTER.lock().tx.is_empty()
}

/// Records dropped so far because the ring was full (or COM2 is missing).
pub fn dropped() -> u64 {
    EXPORTER.lock().dropped
}

/// Sends everything left, waiting for the UART (end of the run only).
pub fn flush() {
    while pending() {
        drain();
        core::hint::spin_loop();
    }
}
