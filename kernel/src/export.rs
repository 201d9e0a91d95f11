//! The binary record stream (see `carousel_protocol::wire`): records are encoded into frames and
//! queued in a bounded ring that the host side drains into COM2 without waiting
//! ([`Exporter::drain`]), or, in a full-rate trace, into the emulator's debug port, which has no
//! baud limit ([`Exporter::drain_debug`]).
//!
//! Three ways in, by what may happen when the ring is full:
//! - [`Exporter::emit`]: records verdicts depend on (Hello, VM stops, summaries, RunEnd). Never
//!   dropped: the ring grows past its bound for them (they are few, and bounded by the run's
//!   shape, not by what a guest does).
//! - [`Exporter::emit_or_drop`]: high-rate records of the hypervisor's own (exit statistics,
//!   memory samples, event batches). Dropped and counted when the ring is full; the sequence
//!   number is used all the same, so the host sees a gap, and the count travels in the run
//!   summary. Loss is never silent.
//! - [`Exporter::emit_guest`]: records a guest asks for (checks, metrics, balloon operations).
//!   Each VM has a quota of ring bytes in flight; a record beyond it is refused, and the caller
//!   blocks or drops it against that VM. One VM's flood never takes another's room.
//! - [`Exporter::emit_caused`]: high-rate records of the hypervisor's that a guest's own actions
//!   cause (a disk request, its completion). Each VM may hold at most its share of half the
//!   ring ([`Exporter::caused_room`]); beyond it, or when the ring is full, the record is dropped
//!   and counted, both in the run's drops (its sequence number is used, so the host sees the
//!   gap) and against the VM. A disk-flooding guest loses its own records, never another VM's
//!   room or the hypervisor's event batches. The share is apart from the guest quota above, so
//!   its disk never makes a VM's checks wait.
//!
//! Scheduler events are gathered into batches ([`Exporter::event`]) sent as one record each.

use alloc::collections::VecDeque;

use crate::ring::ByteRing;
use alloc::vec::Vec;

use carousel_protocol::record::{Event, Record, TraceLevel};
use carousel_protocol::wire;

/// Bytes the ring holds before high-rate records are dropped: several emulated seconds of a
/// 115200-baud line.
pub const RING_BYTES: usize = 64 << 10;
/// Ring bytes one VM's own records may hold at once.
pub const GUEST_QUOTA_BYTES: usize = 2 << 10;
/// Largest encoded frame: a Hello record with 64 VM names fits easily.
const FRAME_BUFFER: usize = 4096;
/// Events a batch holds before it is sent (a batch also goes out at each metrics interval).
const EVENTS_PER_BATCH: usize = 32;
/// Events a batch may hold while sends are held back ([`Exporter::hold`]).
const EVENTS_HELD: usize = 4 * EVENTS_PER_BATCH;

/// A guest record did not fit in its VM's quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaFull;

/// Whose room a span of the ring counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// The hypervisor's own records.
    Host,
    /// Records VM `vm` asked for (its guest quota).
    Guest(u16),
    /// Records VM `vm`'s actions caused (its share of the ring).
    Caused(u16),
}

/// Who queued a span of the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    bytes: usize,
    owner: Owner,
}

/// The record exporter.
#[derive(Debug)]
pub struct Exporter {
    /// What beyond the aggregates goes out.
    level: TraceLevel,
    /// Frames waiting for COM2, and who queued them.
    ring: ByteRing,
    spans: VecDeque<Span>,
    /// Each VM's bytes in the ring.
    guest_bytes: Vec<usize>,
    /// Each VM's records refused for its quota (and dropped by the caller), and the records its
    /// actions caused that were dropped.
    guest_dropped: Vec<u64>,
    /// Each VM's bytes in the ring of records its actions caused.
    caused_bytes: Vec<usize>,
    /// Frames for the debug port (full-rate traces), drained whole.
    debug: Vec<u8>,
    /// The batch of events being gathered: the TSC its first event counts from, the TSC of its
    /// last event, and the events.
    batch_start: u64,
    last_event: u64,
    events: Vec<Event>,
    /// Full batches wait (see [`Exporter::hold`]).
    held: bool,
    /// The drop count last announced by an [`Event::Dropped`].
    dropped_announced: u64,
    /// Where a frame is encoded, and the working space of the encoding (kept, so no
    /// per-record zeroing).
    scratch: Vec<u8>,
    plain: Vec<u8>,
    next_seq: u32,
    dropped: u64,
}

impl Default for Exporter {
    fn default() -> Self {
        Self::new()
    }
}

impl Exporter {
    /// An exporter that has not allocated yet (fit for a `static`); [`Self::reserve`] allocates.
    pub const fn new() -> Self {
        Self {
            level: TraceLevel::Aggregate,
            ring: ByteRing::new(),
            spans: VecDeque::new(),
            guest_bytes: Vec::new(),
            guest_dropped: Vec::new(),
            caused_bytes: Vec::new(),
            debug: Vec::new(),
            batch_start: 0,
            last_event: 0,
            events: Vec::new(),
            held: false,
            dropped_announced: 0,
            scratch: Vec::new(),
            plain: Vec::new(),
            next_seq: 0,
            dropped: 0,
        }
    }

    /// Allocates the ring and the encoding buffers (the heap must be up).
    pub fn reserve(&mut self) {
        self.ring.reserve(RING_BYTES);
        self.events.reserve_exact(EVENTS_PER_BATCH);
        self.scratch.resize(FRAME_BUFFER, 0);
        self.plain.resize(FRAME_BUFFER, 0);
    }

    /// Sets what goes out beyond the aggregates (from the run configuration), before the first
    /// record. A full-rate trace leaves through the debug port instead of COM2.
    pub fn set_level(&mut self, level: TraceLevel) {
        self.level = level;
    }

    /// The trace level.
    pub fn level(&self) -> TraceLevel {
        self.level
    }

    /// Sets the number of VMs whose quotas are kept.
    pub fn set_vms(&mut self, count: usize) {
        self.guest_bytes = alloc::vec![0; count];
        self.guest_dropped = alloc::vec![0; count];
        self.caused_bytes = alloc::vec![0; count];
    }

    /// Queues a record the run's verdict depends on. Never dropped.
    pub fn emit(&mut self, record: &Record) {
        let _always_queued = self.queue(record, Class::Always);
    }

    /// Queues a high-rate record; drops (and counts) it when the ring is full.
    pub fn emit_or_drop(&mut self, record: &Record) {
        let _queued_or_dropped = self.queue(record, Class::Droppable);
    }

    /// Queues a record VM `vm` asked for, within its quota. A record beyond the quota is
    /// refused (nothing is queued and no sequence number is used); the caller blocks the VM or
    /// drops the record with [`Self::count_guest_drop`].
    pub fn emit_guest(&mut self, vm: u16, record: &Record) -> Result<(), QuotaFull> {
        self.queue(record, Class::Guest(vm))
    }

    /// Queues a high-rate record that VM `vm`'s own action caused, within the VM's share of the
    /// ring; drops it (counted in the run's drops and against the VM) beyond that share or when
    /// the ring is full.
    pub fn emit_caused(&mut self, vm: u16, record: &Record) {
        let _queued_or_dropped = self.queue(record, Class::Caused(vm));
    }

    /// Ring bytes the records one VM's actions cause may hold at once: its share of half the
    /// ring, so all VMs together leave the other half to the hypervisor's own records.
    pub fn caused_room(&self) -> usize {
        RING_BYTES / 2 / self.caused_bytes.len().max(1)
    }

    /// Counts a guest record dropped for its quota.
    pub fn count_guest_drop(&mut self, vm: u16) {
        if let Some(count) = self.guest_dropped.get_mut(usize::from(vm)) {
            *count += 1;
        }
    }

    /// Records of VM `vm` dropped for its quota or its share of the ring.
    pub fn guest_dropped(&self, vm: u16) -> u64 {
        self.guest_dropped
            .get(usize::from(vm))
            .copied()
            .unwrap_or(0)
    }

    /// True when VM `vm` has room in its quota for a record of at most `bytes` encoded bytes.
    pub fn guest_room(&self, vm: u16, bytes: usize) -> bool {
        self.guest_bytes
            .get(usize::from(vm))
            .is_some_and(|&used| used + bytes <= GUEST_QUOTA_BYTES)
    }

    /// Adds a scheduler event that happened at `now` (its `dt` is filled in here) to the batch,
    /// sending the batch when it is full. Exit events go out only in full-rate traces, the others
    /// unless the trace is aggregate-only.
    pub fn event(&mut self, now: u64, event: Event) {
        let wanted = match self.level {
            TraceLevel::Off | TraceLevel::Aggregate => false,
            TraceLevel::Switches => !matches!(event, Event::Exit { .. }),
            TraceLevel::Full => true,
        };
        if !wanted {
            return;
        }
        if self.events.is_empty() {
            self.batch_start = now;
            self.last_event = now;
        }
        let dt = now.saturating_sub(self.last_event);
        self.last_event = self.last_event.max(now);
        self.events.push(event.with_dt(dt));
        let full = if self.held {
            EVENTS_HELD
        } else {
            EVENTS_PER_BATCH
        };
        if self.events.len() >= full {
            self.send_events();
        }
    }

    /// Holds back (or lets go) the sending of event batches that are merely full: while a
    /// woken VM waits for the CPU, encoding them would lengthen the wait being measured. A
    /// held batch goes out at 128 events.
    pub fn hold(&mut self, held: bool) {
        self.held = held;
    }

    /// True when a batch of events waits that a flush would send.
    pub fn events_waiting(&self) -> bool {
        !self.events.is_empty()
    }

    /// Sends the events gathered so far (each metrics interval, and before the end-of-run
    /// records), announcing new drops first.
    pub fn flush_events(&mut self, now: u64) {
        if self.level >= TraceLevel::Switches && self.dropped > self.dropped_announced {
            let total = self.dropped;
            self.event(now, Event::Dropped { dt: 0, total });
            self.dropped_announced = total;
        }
        self.send_events();
    }

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
        let _queued_or_dropped = self.queue(&record, Class::Droppable);
        if let Record::Events { mut events, .. } = record {
            events.clear();
            self.events = events;
        }
    }

    fn queue(&mut self, record: &Record, class: Class) -> Result<(), QuotaFull> {
        if self.level == TraceLevel::Off && matches!(class, Class::Droppable | Class::Caused(_)) {
            // Export is off: only the records verdicts need go out.
            return Ok(());
        }
        if self.scratch.len() < FRAME_BUFFER {
            self.reserve();
        }
        // Encode before taking a sequence number: a refused guest record uses none.
        let Ok(bytes) = wire::encode_ref(self.next_seq, record, &mut self.plain, &mut self.scratch)
        else {
            self.next_seq = self.next_seq.wrapping_add(1);
            self.dropped += 1;
            return Ok(());
        };
        let length = bytes.len();
        let owner = match class {
            Class::Guest(vm) => {
                if !self.guest_room(vm, length) {
                    return Err(QuotaFull);
                }
                Owner::Guest(vm)
            }
            Class::Caused(vm) => Owner::Caused(vm),
            Class::Always | Class::Droppable => Owner::Host,
        };
        self.next_seq = self.next_seq.wrapping_add(1);
        if self.level == TraceLevel::Full {
            // The debug port takes everything at once. A zero first: the emulator's own text on
            // the same stream (Bochs' stdout) never runs into a frame.
            self.debug.push(0);
            self.debug.extend_from_slice(&self.scratch[..length]);
            return Ok(());
        }
        let ring_full = self.ring.len() + length > RING_BYTES;
        match owner {
            Owner::Host if class == Class::Droppable && ring_full => {
                self.dropped += 1;
                return Ok(());
            }
            Owner::Caused(vm) => {
                let used = self.caused_bytes.get(usize::from(vm)).copied();
                if ring_full || used.is_none_or(|used| used + length > self.caused_room()) {
                    self.dropped += 1;
                    self.count_guest_drop(vm);
                    return Ok(());
                }
            }
            _ => {}
        }
        self.ring.push(&self.scratch[..length]);
        if let Some(used) = self.owner_bytes(owner) {
            *used += length;
        }
        match self.spans.back_mut() {
            Some(last) if last.owner == owner => last.bytes += length,
            _ => self.spans.push_back(Span {
                bytes: length,
                owner,
            }),
        }
        Ok(())
    }

    /// Hands queued bytes to `send` (which returns how many it took, 0 when the line is busy)
    /// until it takes no more or the ring is empty.
    pub fn drain(&mut self, mut send: impl FnMut(&[u8]) -> usize) {
        while !self.ring.is_empty() {
            let sent = send(self.ring.front());
            if sent == 0 {
                break;
            }
            self.ring.consume(sent);
            self.release(sent);
        }
    }

    /// Frees `sent` bytes of the spans at the front of the ring.
    fn release(&mut self, mut sent: usize) {
        while sent > 0 {
            let Some(span) = self.spans.front_mut() else {
                return;
            };
            let taken = span.bytes.min(sent);
            span.bytes -= taken;
            sent -= taken;
            let (owner, left) = (span.owner, span.bytes);
            if let Some(used) = self.owner_bytes(owner) {
                *used -= taken;
            }
            if left == 0 {
                self.spans.pop_front();
            }
        }
    }

    /// The count of ring bytes `owner`'s records hold (none for the hypervisor's own).
    fn owner_bytes(&mut self, owner: Owner) -> Option<&mut usize> {
        match owner {
            Owner::Host => None,
            Owner::Guest(vm) => self.guest_bytes.get_mut(usize::from(vm)),
            Owner::Caused(vm) => self.caused_bytes.get_mut(usize::from(vm)),
        }
    }

    /// Hands every debug-port byte to `send` (the debug port never refuses).
    pub fn drain_debug(&mut self, send: impl FnOnce(&[u8])) {
        if !self.debug.is_empty() {
            send(&self.debug);
            self.debug.clear();
        }
    }

    /// True when records wait for COM2 or the debug port.
    pub fn pending(&self) -> bool {
        !self.ring.is_empty() || !self.debug.is_empty()
    }

    /// Bytes waiting for COM2.
    pub fn queued_bytes(&self) -> usize {
        self.ring.len()
    }

    /// Records dropped so far because the ring was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Drops everything queued (no line to send it on).
    pub fn discard(&mut self) {
        let queued = self.ring.len();
        self.ring.clear();
        self.release(queued);
    }
}

/// What may happen to a record when there is no room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Always,
    Droppable,
    Guest(u16),
    Caused(u16),
}

#[cfg(test)]
mod tests {
    use carousel_protocol::wire::{decode_all, Decoded};

    use super::*;

    fn metric(vm: u16) -> Record {
        Record::GuestMetric {
            tsc: 1,
            vm,
            name: alloc::string::String::from("flood"),
            value: 7,
        }
    }

    fn records(bytes: &[u8]) -> Vec<Record> {
        decode_all(bytes)
            .into_iter()
            .filter_map(|item| match item {
                Decoded::Frame(frame) => Some(frame.record),
                // Dropped records leave gaps in the sequence numbers.
                Decoded::Gap { .. } => None,
                other => panic!("damaged stream: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn one_vms_flood_never_takes_anothers_quota() {
        let mut exporter = Exporter::new();
        exporter.set_vms(2);
        let mut refused = 0;
        for _ in 0..10_000 {
            if exporter.emit_guest(0, &metric(0)).is_err() {
                refused += 1;
            }
        }
        assert!(refused > 9_000, "the quota held only {refused} back");
        assert!(exporter.emit_guest(1, &metric(1)).is_ok());
        let mut sent = Vec::new();
        exporter.drain(|bytes| {
            sent.extend_from_slice(bytes);
            bytes.len()
        });
        // Every queued record arrives, without gaps (refused ones took no sequence number).
        let got = records(&sent);
        assert!(got.contains(&metric(1)));
        assert_eq!(exporter.queued_bytes(), 0);
        // Draining freed the quota.
        assert!(exporter.emit_guest(0, &metric(0)).is_ok());
    }

    #[test]
    fn held_batches_wait_until_let_go_or_much_fuller() {
        let mut exporter = Exporter::new();
        exporter.set_level(TraceLevel::Switches);
        let run = |vm| Event::Run { dt: 0, vm };
        exporter.hold(true);
        for at in 0..EVENTS_PER_BATCH as u64 {
            exporter.event(at, run(0));
        }
        // Full, but held: nothing is encoded yet.
        assert_eq!(exporter.queued_bytes(), 0);
        assert!(exporter.events_waiting());
        for at in EVENTS_PER_BATCH as u64..EVENTS_HELD as u64 {
            exporter.event(at, run(1));
        }
        // At the held limit the batch goes anyway.
        assert!(exporter.queued_bytes() > 0);
        assert!(!exporter.events_waiting());
        exporter.hold(false);
        let before = exporter.queued_bytes();
        for at in 0..EVENTS_PER_BATCH as u64 {
            exporter.event(1_000 + at, run(0));
        }
        assert!(
            exporter.queued_bytes() > before,
            "let go, a full batch is sent"
        );
        let mut sent = Vec::new();
        exporter.drain(|bytes| {
            sent.extend_from_slice(bytes);
            bytes.len()
        });
        let events: usize = records(&sent)
            .iter()
            .map(|record| match record {
                Record::Events { events, .. } => events.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(events, EVENTS_HELD + EVENTS_PER_BATCH);
    }

    #[test]
    fn a_partial_drain_frees_the_quota_of_what_left() {
        let mut exporter = Exporter::new();
        exporter.set_vms(1);
        while exporter.emit_guest(0, &metric(0)).is_ok() {}
        assert!(!exporter.guest_room(0, 16));
        let mut budget = 64;
        exporter.drain(|bytes| {
            let take = bytes.len().min(budget);
            budget -= take;
            take
        });
        assert!(exporter.guest_room(0, 16));
    }

    fn served(vm: u16) -> Record {
        Record::DiskServed {
            tsc: 1,
            vm,
            sectors: 8,
            write: true,
            wait: 1_000,
            service: 2_000,
        }
    }

    #[test]
    fn records_one_vms_disk_causes_never_crowd_out_anothers_or_the_hypervisors() {
        let mut exporter = Exporter::new();
        exporter.set_level(TraceLevel::Switches);
        exporter.set_vms(4);
        // VM 0 floods: far more than the ring holds.
        for _ in 0..20_000 {
            exporter.emit_caused(0, &served(0));
        }
        let flood_dropped = exporter.guest_dropped(0);
        assert!(flood_dropped > 15_000, "only {flood_dropped} held back");
        assert_eq!(exporter.dropped(), flood_dropped, "each drop leaves a gap");
        assert!(exporter.queued_bytes() <= exporter.caused_room());
        // Another VM's records and the hypervisor's own still find room.
        exporter.emit_caused(1, &served(1));
        exporter.emit_or_drop(&metric(9));
        assert_eq!(exporter.guest_dropped(1), 0);
        assert_eq!(exporter.dropped(), flood_dropped);
        // Its checks are not held back by its disk records: the guest quota is apart.
        assert!(exporter.emit_guest(0, &metric(0)).is_ok());
        let mut sent = Vec::new();
        exporter.drain(|bytes| {
            sent.extend_from_slice(bytes);
            bytes.len()
        });
        let got = records(&sent);
        assert!(got.contains(&served(1)) && got.contains(&metric(9)) && got.contains(&metric(0)));
        // Draining frees the share: the flooding VM's next record goes out.
        exporter.emit_caused(0, &served(0));
        assert_eq!(exporter.guest_dropped(0), flood_dropped);
        assert!(exporter.queued_bytes() > 0);
    }

    #[test]
    fn all_vms_caused_records_leave_half_the_ring_to_the_hypervisor() {
        let mut exporter = Exporter::new();
        exporter.set_level(TraceLevel::Switches);
        exporter.set_vms(64);
        for round in 0..1_000 {
            for vm in 0..64 {
                exporter.emit_caused(vm, &served(vm));
            }
            assert!(exporter.queued_bytes() <= RING_BYTES / 2, "round {round}");
        }
        let before = exporter.dropped();
        exporter.emit_or_drop(&metric(9));
        assert_eq!(
            exporter.dropped(),
            before,
            "the hypervisor's record found room"
        );
    }

    #[test]
    fn verdict_records_are_never_dropped() {
        let mut exporter = Exporter::new();
        for _ in 0..20_000 {
            exporter.emit_or_drop(&metric(0));
        }
        assert!(exporter.dropped() > 0);
        exporter.emit(&Record::RunEnd { tsc: 5 });
        let mut sent = Vec::new();
        exporter.drain(|bytes| {
            sent.extend_from_slice(bytes);
            bytes.len()
        });
        assert_eq!(records(&sent).last(), Some(&Record::RunEnd { tsc: 5 }));
    }
}
