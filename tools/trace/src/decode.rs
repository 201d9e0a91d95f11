//! Reading a record stream: the frames, and the damage between them, typed ([`Damage`]). The
//! same decoder serves a run as its stream grows ([`StreamDecoder::feed`]) and a finished trace
//! ([`decode_trace`], [`read_trace`]); the model folds what it gives
//! ([`crate::model::ModelBuilder::add_item`]).
//!
//! Also here: the records of one VM (`--vm`, [`only_vm`]), framing records as a trace
//! ([`encode_trace`]), the frames of a stream without what else shares it ([`frames_only`])
//! and the bytes a stream spends on its events ([`EventFrames`]).

use std::fmt;

use carousel_protocol::config::Setting;
use carousel_protocol::record::{timed_events, Event, Record};
use carousel_protocol::wire::{encode_vec, Decoded, Decoder, Frame};

/// A part of a stream that did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// Bytes between two zero bytes that were not a valid frame.
    Corrupt { bytes: usize },
    /// Frames `from..to` (sequence numbers) never arrived.
    Gap { from: u32, to: u32 },
    /// The stream ends inside a frame of this many bytes.
    Truncated { bytes: usize },
}

impl Damage {
    /// Records the damage stands for (the frames of a gap).
    pub fn lost_records(&self) -> u64 {
        match *self {
            Damage::Gap { from, to } => u64::from(to.wrapping_sub(from)),
            Damage::Corrupt { .. } | Damage::Truncated { .. } => 0,
        }
    }
}

/// The line a report prints for it.
impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Damage::Corrupt { bytes } | Damage::Truncated { bytes } => {
                write!(f, "a corrupt frame ({bytes} bytes)")
            }
            Damage::Gap { from, to } => write!(f, "records {from}..{to} never arrived"),
        }
    }
}

/// What a stream holds, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Record(Record),
    Damage(Damage),
}

/// What else may share the stream's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Only frames (COM2, a trace file): anything else is damage.
    Frames,
    /// The emulator's debug port (a full-rate trace): the emulator's own text lies between the
    /// frames, so what is not a frame is skipped, and only gaps are damage.
    SharedPort,
}

/// Decodes a stream as its bytes arrive.
#[derive(Debug)]
pub struct StreamDecoder {
    decoder: Decoder,
    stream: Stream,
}

impl StreamDecoder {
    pub fn new(stream: Stream) -> Self {
        Self {
            decoder: Decoder::new(),
            stream,
        }
    }

    /// Feeds `bytes`, handing each record and each damage to `each` in stream order.
    pub fn feed(&mut self, bytes: &[u8], mut each: impl FnMut(Item)) {
        let stream = self.stream;
        self.decoder.feed_each(bytes, |decoded| match decoded {
            Decoded::Frame(frame) => each(Item::Record(frame.record)),
            Decoded::Corrupt { .. } if stream == Stream::SharedPort => {}
            Decoded::Corrupt { bytes } => each(Item::Damage(Damage::Corrupt { bytes })),
            Decoded::Gap { from, to } => each(Item::Damage(Damage::Gap { from, to })),
        });
    }

    /// Ends the stream: an unfinished last frame is damage.
    pub fn finish(self, mut each: impl FnMut(Item)) {
        let bytes = self.decoder.pending_bytes();
        if bytes > 0 && self.stream == Stream::Frames {
            each(Item::Damage(Damage::Truncated { bytes }));
        }
    }
}

/// Decodes a finished trace, handing each record and each damage to `each` in stream order.
pub fn decode_trace(bytes: &[u8], mut each: impl FnMut(Item)) {
    let mut decoder = StreamDecoder::new(Stream::Frames);
    decoder.feed(bytes, &mut each);
    decoder.finish(each);
}

/// The records of a trace, and every part that did not decode.
pub fn read_trace(bytes: &[u8]) -> (Vec<Record>, Vec<Damage>) {
    let mut records = Vec::new();
    let mut damage = Vec::new();
    decode_trace(bytes, |item| match item {
        Item::Record(record) => records.push(record),
        Item::Damage(found) => damage.push(found),
    });
    (records, damage)
}

/// The whole frames of a stream, re-encoded (byte for byte what was sent) without whatever
/// else shares the stream: a debug-port file holds the emulator's own text too.
pub fn frames_only(bytes: &[u8]) -> Vec<u8> {
    let mut frames = Vec::new();
    let mut decoder = Decoder::new();
    decoder.feed_each(bytes, |decoded| {
        if let Decoded::Frame(frame) = decoded {
            frames.extend(encode_vec(&frame));
        }
    });
    frames
}

/// The events of a stream of whole frames, and the bytes of the frames that carry them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EventFrames {
    pub events: u64,
    pub bytes: u64,
}

impl EventFrames {
    /// Counts the events of a stream of whole frames, and the bytes of the frames carrying
    /// them.
    pub fn of(frames: &[u8]) -> Self {
        let mut size = Self::default();
        let mut decoder = Decoder::new();
        decoder.feed_each(frames, |decoded| {
            if let Decoded::Frame(frame) = decoded {
                if let Record::Events { events, .. } = &frame.record {
                    size.events += events.len() as u64;
                    size.bytes += encode_vec(&frame).len() as u64;
                }
            }
        });
        size
    }

    /// Bytes per event (0 without events).
    pub fn per_event(self) -> f64 {
        if self.events == 0 {
            0.0
        } else {
            self.bytes as f64 / self.events as f64
        }
    }
}

/// The records that concern VM `name` (by the Hello record's names), with that VM renumbered
/// to 0, plus the run-wide ones: a report of one VM (the run's totals are still every VM's).
pub fn only_vm(records: &[Record], name: &str) -> Option<Vec<Record>> {
    let id = records.iter().find_map(|record| match record {
        Record::Hello { vms, .. } => vms.iter().position(|vm| vm == name),
        _ => None,
    })? as u16;
    let records = records
        .iter()
        .filter_map(|record| {
            let mut record = record.clone();
            let keep = match vm_of(&mut record) {
                // Run-wide records stay.
                None => true,
                Some(vm) if *vm == id => {
                    *vm = 0;
                    true
                }
                Some(_) => false,
            };
            keep.then_some(record)
        })
        .map(|mut record| {
            match &mut record {
                Record::Hello { vms, weights, .. } => {
                    *vms = vec![name.to_string()];
                    *weights = weights.get(usize::from(id)).copied().into_iter().collect();
                }
                Record::Events { tsc, events } => *events = events_of_vm(*tsc, events, id),
                _ => {}
            }
            record
        })
        .collect();
    Some(records)
}

/// The events of a batch that concern VM `id` (renumbered to 0), plus drop counters, with
/// their time deltas recomputed.
fn events_of_vm(tsc: u64, events: &[Event], id: u16) -> Vec<Event> {
    let mut last = tsc;
    timed_events(tsc, events)
        .filter(|(_, event)| event.vm().is_none_or(|vm| vm == id))
        .map(|(now, event)| {
            let dt = now - last;
            last = now;
            match *event {
                Event::Run { .. } => Event::Run { dt, vm: 0 },
                Event::Descheduled { why, .. } => Event::Descheduled { dt, vm: 0, why },
                Event::Wake { .. } => Event::Wake { dt, vm: 0 },
                Event::Exit { reason, cycles, .. } => Event::Exit {
                    dt,
                    vm: 0,
                    reason,
                    cycles,
                },
                Event::Console { bytes, .. } => Event::Console { dt, vm: 0, bytes },
                Event::Dropped { total, .. } => Event::Dropped { dt, total },
                Event::Input { bytes, .. } => Event::Input { dt, vm: 0, bytes },
            }
        })
        .collect()
}

/// The VM id a record is about, if it is about one VM.
fn vm_of(record: &mut Record) -> Option<&mut u16> {
    match record {
        Record::Hello { .. }
        | Record::RunSummary(_)
        | Record::RunEnd { .. }
        | Record::Events { .. }
        | Record::Merging { .. }
        | Record::Compression { .. }
        | Record::HostMemory { .. } => None,
        Record::Check { vm, .. }
        | Record::MemoryMap { vm, .. }
        | Record::MemoryInfo { vm, .. }
        | Record::Balloon { vm, .. }
        | Record::BalloonTarget { vm, .. }
        | Record::WorkingSet { vm, .. }
        | Record::GuestMetric { vm, .. }
        | Record::DiskIo { vm, .. }
        | Record::DiskServed { vm, .. }
        | Record::AddressSpaces { vm, .. }
        | Record::TimerLag { vm, .. }
        | Record::ExitInterval { vm, .. }
        | Record::VmStopped { vm, .. }
        | Record::Answer { vm, .. } => Some(vm),
        Record::VmSummary(summary) => Some(&mut summary.vm),
        Record::DiskQueue(summary) => Some(&mut summary.vm),
        Record::SettingChanged { setting, .. } | Record::SettingRefused { setting, .. } => {
            match setting {
                // The quantum is the run's.
                Setting::Quantum { .. } => None,
                Setting::Weight { vm, .. } | Setting::Cap { vm, .. } => Some(vm),
            }
        }
    }
}

/// `records` framed as a trace (sequence numbers from 0): what `carousel run --trace` writes.
pub fn encode_trace(records: impl IntoIterator<Item = Record>) -> Vec<u8> {
    records
        .into_iter()
        .enumerate()
        .flat_map(|(seq, record)| {
            encode_vec(&Frame {
                seq: seq as u32,
                record,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use carousel_protocol::record::Event;
    use carousel_protocol::wire::Frame;

    use super::*;
    use crate::fixtures::report_trace;
    use crate::model::accounting::Accounting;
    use crate::render::json;
    use crate::render::text;

    fn json_report(records: &[Record]) -> serde_json::Value {
        json::report(&Accounting::from_records(records, &[]))
    }

    #[test]
    fn one_vm_keeps_its_records_and_the_run_wide_ones() {
        let records = only_vm(&report_trace(), "b").expect("b is in the trace");
        let report = json_report(&records);
        assert_eq!(report["vms"].as_array().unwrap().len(), 1);
        assert_eq!(report["vms"][0]["name"], "b");
        assert_eq!(report["vms"][0]["guest_cycles"], 50);
        assert_eq!(report["disk"][0]["writes"], 2);
        assert_eq!(
            report["exits"].as_array().unwrap().len(),
            0,
            "vm a's exits are gone"
        );
        assert_eq!(report["elapsed_cycles"], 185);
        let mut accounting = Accounting::from_records(&records, &[]);
        accounting.partial = true;
        let text = text::report(&accounting);
        assert!(!text.contains("conservation"), "{text}");
        assert!(only_vm(&report_trace(), "c").is_none());
    }

    #[test]
    fn a_corrupted_trace_names_its_damage_and_keeps_the_rest() {
        let mut bytes = encode_trace(report_trace());
        // Damage the second frame (a DiskIo record).
        let second = bytes.iter().position(|&b| b == 0).unwrap() + 3;
        bytes[second] ^= 0x55;
        let (records, damage) = read_trace(&bytes);
        let problems: Vec<String> = damage.iter().map(ToString::to_string).collect();
        assert_eq!(records.len(), report_trace().len() - 1);
        assert!(
            problems.iter().any(|p| p.starts_with("a corrupt frame")),
            "{problems:?}"
        );
        assert!(
            problems.contains(&"records 1..2 never arrived".to_string()),
            "{problems:?}"
        );
        let report = json_report(&records);
        assert_eq!(report["elapsed_cycles"], 185);
        assert_eq!(report["disk"][0]["reads"], 1);
        assert_eq!(report["disk"][0]["writes"], 0);
    }

    #[test]
    fn event_size_counts_events_and_their_frames_only() {
        let events = Frame {
            seq: 1,
            record: Record::Events {
                tsc: 0,
                events: vec![Event::Run { dt: 0, vm: 0 }, Event::Wake { dt: 300, vm: 1 }],
            },
        };
        let other = Frame {
            seq: 2,
            record: Record::RunEnd { tsc: 9 },
        };
        let mut stream = encode_vec(&events);
        let event_bytes = stream.len() as u64;
        stream.extend(encode_vec(&other));
        let size = EventFrames::of(&stream);
        assert_eq!(
            size,
            EventFrames {
                events: 2,
                bytes: event_bytes
            }
        );
        assert!((size.per_event() - event_bytes as f64 / 2.0).abs() < 1e-9);
        assert_eq!(EventFrames::default().per_event(), 0.0);
    }
}
