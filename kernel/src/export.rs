//! The binary record stream on COM2 (or the debug port) (see `carousel_protocol::wire`).
//!
//! Records go into a bounded ring and leave through the UART without blocking the scheduler:
//! [`drain`] sends what the UART can take right now and returns. High-rate records (exit
//! statistics, disk I/O, guest metrics) go through [`emit_or_drop`]: when the ring is full they
//! are dropped and counted; the sequence number is used all the same, so the host sees the loss
//! as a gap, and the count travels in the run summary. Loss is never silent. The few records
//! verdicts depend on (Hello, checks, VM stops, summaries, RunEnd) go through [`emit`], which
//! waits for room instead.
//!
//! Scheduler events are gathered into batches ([`event`]) sent as one record each. In a
//! full-rate trace (every VM exit an event) the whole stream goes to the emulator's debug port
//! 0xE9 instead, which has no baud limit and never drops; on real hardware that port goes
//! nowhere, so full-rate traces need an emulator.

use alloc::vec::Vec;

use carousel_protocol::record::{Event, Record, TraceLevel};
use carousel_protocol::wire;
use spin::Mutex;

use crate::arch;
use crate::serial::TxRing;

/// Base port of COM2.
pub const COM2: u16 = 0x2F8;
/// The emulators' debug port (Bochs `port_e9_hack`, QEMU `-debugcon`): full-rate traces go
/// here, a frame at a time with no baud limit.
pub const DEBUG_PORT: u16 = 0xE9;
/// Largest encoded frame: a Hello record with 64 VM names fits easily.
const FRAME_BUFFER: usize = 4096;

/// Events a batch holds before it is sent (a batch also goes out at each metrics interval).
const EVENTS_PER_BATCH: usize = 32;

struct Exporter {
    tx: TxRing,
    /// What beyond the aggregates goes out.
    level: TraceLevel,
    /// The batch of events being gathered: the TSC its first event counts from, the TSC of
    /// its last event, and the events.
    batch_start: u64,
    last_event: u64,
    events: Vec<Event>,
    /// The drop count last announced by an [`Event::Dropped`].
    dropped_announced: u64,
    /// Where a frame is encoded before it enters the ring, and the working space of the
    /// encoding (both kept, so no per-record zeroing).
    scratch: Vec<u8>,
    plain: Vec<u8>,
    next_seq: u32,
    dropped: u64,
}

static EXPORTER: Mutex<Exporter> = Mutex::new(Exporter {
    tx: TxRing::new(),
    level: TraceLevel::Aggregate,
    batch_start: 0,
    last_event: 0,
    events: Vec::new(),
    dropped_announced: 0,
    scratch: Vec::new(),
    plain: Vec::new(),
    next_seq: 0,
    dropped: 0,
});

/// Initialises COM2 and the ring (the heap must be up). Without COM2 every record is dropped.
pub fn init() {
    let mut exporter = EXPORTER.lock();
    exporter.tx.reserve();
    exporter.events.reserve_exact(EVENTS_PER_BATCH);
    exporter.scratch.resize(FRAME_BUFFER, 0);
    exporter.plain.resize(FRAME_BUFFER, 0);
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

/// Sets what goes out beyond the aggregates (from the run configuration), before the first
/// record. A full-rate trace leaves through the debug port instead of COM2.
pub fn set_level(level: TraceLevel) {
    EXPORTER.lock().level = level;
}

/// Adds a scheduler event that happened at `now` (its `dt` is filled in here) to the batch,
/// sending the batch when it is full. Exit events go out only in full-rate traces, the others
/// unless the trace is aggregate-only.
pub fn event(now: u64, event: Event) {
    let mut guard = EXPORTER.lock();
    let exporter = &mut *guard;
    let wanted = match exporter.level {
        TraceLevel::Off | TraceLevel::Aggregate => false,
        TraceLevel::Switches => !matches!(event, Event::Exit { .. }),
        TraceLevel::Full => true,
    };
    if !wanted {
        return;
    }
    if exporter.events.is_empty() {
        exporter.batch_start = now;
        exporter.last_event = now;
    }
    let dt = now.saturating_sub(exporter.last_event);
    exporter.last_event = exporter.last_event.max(now);
    exporter.events.push(event.with_dt(dt));
    if exporter.events.len() >= EVENTS_PER_BATCH {
        exporter.send_events();
    }
}

/// Sends the events gathered so far (each metrics interval, and before the end-of-run
/// records), announcing new drops first.
pub fn flush_events(now: u64) {
    let dropped = dropped();
    let announce = {
        let exporter = EXPORTER.lock();
        exporter.level >= TraceLevel::Switches && dropped > exporter.dropped_announced
    };
    if announce {
        event(
            now,
            Event::Dropped {
                dt: 0,
                total: dropped,
            },
        );
        EXPORTER.lock().dropped_announced = dropped;
    }
    EXPORTER.lock().send_events();
}

impl Exporter {
    /// Sends the batch as one `Events` record (dropped and counted when the ring is full),
    /// keeping the vector for the next batch.
    fn send_events(&mut self) {
        if self.events.is_empty() {
            return;
        }
        let record = Record::Events {
            tsc: self.batch_start,
            events: core::mem::take(&mut self.events),
        };
        self.queue(&record, false);
        if let Record::Events { mut events, .. } = record {
            events.clear();
            self.events = events;
        }
    }

    fn queue(&mut self, record: &Record, wait: bool) {
        if self.level == TraceLevel::Off && !wait {
            // Export is off: only the records verdicts need go out.
            return;
        }
        let seq = self.next_seq;
        self.next_seq = seq.wrapping_add(1);
        let Ok(bytes) = wire::encode_ref(seq, record, &mut self.plain, &mut self.scratch) else {
            self.dropped += 1;
            return;
        };
        let length = bytes.len();
        if self.level == TraceLevel::Full {
            // The debug port takes a byte per OUT at once. A zero first: the emulator's own
            // text on the same stream (Bochs' stdout) never runs into a frame.
            // SAFETY: port 0xE9 is the emulator's debug port; writing to it has no other effect.
            unsafe {
                arch::outb(DEBUG_PORT, 0);
                for &byte in &self.scratch[..length] {
                    arch::outb(DEBUG_PORT, byte);
                }
            }
            return;
        }
        if !self.tx.has_port() {
            self.dropped += 1;
            return;
        }
        if wait {
            self.tx.wait_for_room(length);
        }
        if self.tx.room() >= length {
            self.tx.push(&self.scratch[..length]);
        } else {
            self.dropped += 1;
        }
        self.tx.send_available();
    }
}

fn queue(record: Record, wait: bool) {
    EXPORTER.lock().queue(&record, wait);
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
