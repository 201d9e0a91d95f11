//! Framing of the record stream: each [`Frame`] is postcard-encoded, followed by a CRC-32
//! (postcard's CRC flavor), COBS-encoded (postcard's COBS flavor) and ended by a zero byte.
//!
//! The decoder never panics: a frame that fails COBS, CRC or postcard decoding is reported as
//! corrupt with its length, and decoding resumes at the next zero byte. Gaps in the sequence
//! numbers are reported as [`Decoded::Gap`], so loss is never silent.

use alloc::vec::Vec;

use crc::{Crc, Table, CRC_32_ISO_HDLC};
use serde::{Deserialize, Serialize};

use crate::record::Record;

/// The CRC every frame carries (the common CRC-32 of zlib and Ethernet).
pub const FRAME_CRC: Crc<u32> = Crc::<u32>::new(&CRC_32_ISO_HDLC);

/// One record with its sequence number. Sequence numbers start at 0 and grow by one per frame
/// the hypervisor produced, whether or not it could send it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    pub seq: u32,
    pub record: Record,
}

/// Why a frame could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeError(pub postcard::Error);

/// Encodes `frame` into `buf`, returning the bytes to send, including the final zero.
pub fn encode<'a>(frame: &Frame, buf: &'a mut [u8]) -> Result<&'a mut [u8], EncodeError> {
    let mut plain = alloc::vec![0u8; buf.len()];
    encode_ref(frame.seq, &frame.record, &mut plain, buf)
}

/// A [`Frame`] that borrows its record: it serialises to the same bytes.
#[derive(Serialize)]
struct FrameRef<'a> {
    seq: u32,
    record: &'a Record,
}

/// Encodes the frame of `record` with sequence number `seq` into `out` without owning the
/// record (the hypervisor keeps its buffers), returning the bytes to send with the final zero.
/// `plain` is working space: the postcard bytes and their CRC go there first, then COBS
/// encodes them into `out` in one pass. The bytes are those of postcard's CRC and COBS
/// flavors stacked (a test holds them equal, but for a redundant empty block the flavor adds
/// when a COBS block ends exactly at 254 bytes); this way costs a few times fewer instructions
/// per byte, which is root-mode time taken from the VMs.
pub fn encode_ref<'a>(
    seq: u32,
    record: &Record,
    plain: &mut [u8],
    out: &'a mut [u8],
) -> Result<&'a mut [u8], EncodeError> {
    let length = postcard::to_slice(&FrameRef { seq, record }, plain)
        .map_err(EncodeError)?
        .len();
    let crc = FAST_CRC.checksum(&plain[..length]).to_le_bytes();
    let with_crc = plain
        .get_mut(length..length + crc.len())
        .ok_or(EncodeError(postcard::Error::SerializeBufferFull))?;
    with_crc.copy_from_slice(&crc);
    let message = &plain[..length + crc.len()];
    if out.len() < cobs::max_encoding_length(message.len()) + 1 {
        return Err(EncodeError(postcard::Error::SerializeBufferFull));
    }
    let encoded = cobs::encode(message, out);
    out[encoded] = 0;
    Ok(&mut out[..=encoded])
}

/// Encodes `frame` into a new vector (host side and tests).
pub fn encode_vec(frame: &Frame) -> Vec<u8> {
    let mut buf = alloc::vec![0u8; 64 + 2 * postcard::to_allocvec(frame).map_or(0, |v| v.len())];
    let len = encode(frame, &mut buf)
        .map(|bytes| bytes.len())
        .unwrap_or(0);
    buf.truncate(len);
    buf
}

/// What the decoder found in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A whole, checked frame.
    Frame(Frame),
    /// Bytes between two zero bytes that were not a valid frame.
    Corrupt { bytes: usize },
    /// Frames `from..to` (sequence numbers) never arrived.
    Gap { from: u32, to: u32 },
}

/// Incremental decoder: feed it bytes as they arrive.
#[derive(Debug, Default)]
pub struct Decoder {
    pending: Vec<u8>,
    next_seq: Option<u32>,
}

/// Frames longer than this are treated as corrupt without decoding (no real frame comes near).
pub const MAX_FRAME: usize = 1 << 16;

/// [`FRAME_CRC`] computed sixteen bytes at a time (slice-by-16, a 16 KiB table), for encoding
/// and checking alike: the hypervisor encodes between and within slices, where every cycle is
/// taken from the VMs (in Bochs it is about a third fewer instructions a byte than the one-byte
/// table), and the host decodes hundreds of megabytes.
static FAST_CRC: Crc<u32, Table<16>> = Crc::<u32, Table<16>>::new(&CRC_32_ISO_HDLC);

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds `bytes`, appending everything found to `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<Decoded>) {
        self.feed_each(bytes, |decoded| out.push(decoded));
    }

    /// Feeds `bytes`, handing everything found to `each` in stream order (nothing is held
    /// back but the bytes of an unfinished frame).
    pub fn feed_each(&mut self, mut bytes: &[u8], mut each: impl FnMut(Decoded)) {
        while !bytes.is_empty() {
            let end = memchr::memchr(0, bytes);
            let chunk = &bytes[..end.unwrap_or(bytes.len())];
            // Keep at most one byte past the limit: the frame is known to be corrupt by then.
            let room = (MAX_FRAME + 1).saturating_sub(self.pending.len());
            self.pending
                .extend_from_slice(&chunk[..chunk.len().min(room)]);
            let Some(end) = end else { return };
            bytes = &bytes[end + 1..];
            if self.pending.is_empty() {
                continue;
            }
            self.finish(&mut each);
        }
    }

    /// Ends the stream: a truncated last frame is reported as corrupt.
    pub fn end(self, mut each: impl FnMut(Decoded)) {
        if !self.pending.is_empty() {
            each(Decoded::Corrupt {
                bytes: self.pending.len(),
            });
        }
    }

    /// Bytes held back waiting for their terminating zero (a truncated last frame).
    pub fn pending_bytes(&self) -> usize {
        self.pending.len()
    }

    /// The sequence number the next frame should carry (none before the first frame).
    pub fn next_seq(&self) -> Option<u32> {
        self.next_seq
    }

    /// Decodes the frame in `pending` (in place: the buffer is reused for the next frame).
    fn finish(&mut self, each: &mut impl FnMut(Decoded)) {
        let length = self.pending.len();
        let decoded = if length > MAX_FRAME {
            None
        } else {
            decode_frame(&mut self.pending)
        };
        self.pending.clear();
        let Some(frame) = decoded else {
            each(Decoded::Corrupt { bytes: length });
            return;
        };
        if let Some(gap) = gap(self.next_seq, frame.seq) {
            each(gap);
        }
        self.next_seq = Some(frame.seq.wrapping_add(1));
        each(Decoded::Frame(frame));
    }
}

/// The gap before a frame numbered `seq` when `expected` was due: frames that went missing.
/// A number that goes back (a restarted hypervisor, a wrap) is no gap.
pub fn gap(expected: Option<u32>, seq: u32) -> Option<Decoded> {
    let from = expected?;
    (seq > from).then_some(Decoded::Gap { from, to: seq })
}

/// Decodes one frame: its COBS bytes without the zero that ended them, decoded in place. The
/// same as postcard's COBS and CRC flavors stacked (`from_bytes_crc32`): the CRC covers the
/// bytes the frame's fields took and follows them; bytes after the CRC are ignored. Here the
/// CRC is checked in one pass over the fields' bytes instead of a byte at a time as postcard
/// reads them.
fn decode_frame(bytes: &mut [u8]) -> Option<Frame> {
    let length = cobs::decode_in_place(bytes).ok()?;
    let message = &bytes[..length];
    let (frame, rest) = postcard::take_from_bytes::<Frame>(message).ok()?;
    let fields = length - rest.len();
    let crc = rest.get(..4)?;
    (FAST_CRC.checksum(&message[..fields]).to_le_bytes() == crc).then_some(frame)
}

/// Decodes a whole byte stream (a finished trace), handing everything found to `each` in
/// stream order.
pub fn decode_each(bytes: &[u8], mut each: impl FnMut(Decoded)) {
    let mut decoder = Decoder::new();
    decoder.feed_each(bytes, &mut each);
    decoder.end(each);
}

/// Decodes a whole byte stream (a finished trace).
pub fn decode_all(bytes: &[u8]) -> Vec<Decoded> {
    let mut out = Vec::new();
    decode_each(bytes, |decoded| out.push(decoded));
    out
}

#[cfg(test)]
mod tests {
    use alloc::string::ToString;
    use alloc::vec;

    use proptest::prelude::*;

    use super::*;
    use crate::record::StopReason;

    fn frame(seq: u32) -> Frame {
        Frame {
            seq,
            record: Record::VmStopped {
                tsc: 99,
                vm: 1,
                reason: StopReason::Exited { status: 0x10 },
            },
        }
    }

    fn frames(decoded: &[Decoded]) -> Vec<u32> {
        decoded
            .iter()
            .filter_map(|d| match d {
                Decoded::Frame(frame) => Some(frame.seq),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn frame_has_one_trailing_zero() {
        let bytes = encode_vec(&frame(0));
        assert_eq!(bytes.iter().filter(|&&b| b == 0).count(), 1);
        assert_eq!(*bytes.last().unwrap(), 0);
    }

    #[test]
    fn flipped_byte_is_corrupt_and_the_rest_survives() {
        let mut stream = encode_vec(&frame(0));
        let second = encode_vec(&frame(1));
        let start = stream.len();
        stream.extend_from_slice(&second);
        stream.extend_from_slice(&encode_vec(&frame(2)));
        stream[start + 2] ^= 0x40;
        let decoded = decode_all(&stream);
        assert_eq!(frames(&decoded), vec![0, 2]);
        assert!(decoded.contains(&Decoded::Corrupt {
            bytes: second.len() - 1
        }));
        assert!(decoded.contains(&Decoded::Gap { from: 1, to: 2 }));
    }

    #[test]
    fn truncated_tail_is_reported() {
        let mut stream = encode_vec(&frame(0));
        stream.extend_from_slice(&encode_vec(&frame(1))[..5]);
        let decoded = decode_all(&stream);
        assert_eq!(frames(&decoded), vec![0]);
        assert_eq!(decoded.last(), Some(&Decoded::Corrupt { bytes: 5 }));
    }

    #[test]
    fn hello_round_trips() {
        let hello = Frame {
            seq: 0,
            record: Record::Hello {
                version: 1,
                lab_hash: 5,
                tsc_hz: 1_000_000,
                tsc_source: crate::record::TscSource::LabFile,
                preemption_timer_rate: 0,
                cpu: "GenuineIntel".to_string(),
                vms: vec!["a".to_string(), "b".to_string()],
                commit: "v0-1-gabc".to_string(),
                level: crate::record::TraceLevel::Switches,
                weights: Vec::new(),
                quantum_clock: crate::config::QuantumClock::Wall,
            },
        };
        assert_eq!(decode_all(&encode_vec(&hello)), vec![Decoded::Frame(hello)]);
    }

    /// The reference: postcard's CRC flavor inside its COBS flavor.
    fn encode_with_flavors(frame: &Frame) -> Vec<u8> {
        use postcard::ser_flavors::{Cobs, Slice};
        let mut buf = vec![0u8; 1 << 16];
        let flavor = postcard::ser_flavors::crc::CrcModifier::new(
            Cobs::try_new(Slice::new(&mut buf)).unwrap(),
            FRAME_CRC.digest(),
        );
        postcard::serialize_with_flavor(frame, flavor)
            .unwrap()
            .to_vec()
    }

    /// The decoder as it was before the CRC moved out of postcard's flavor: the reference the
    /// faster one must match, output for output.
    fn reference_decode_all(bytes: &[u8]) -> Vec<Decoded> {
        let mut out = Vec::new();
        let mut next_seq: Option<u32> = None;
        let mut chunks: Vec<&[u8]> = bytes.split(|&byte| byte == 0).collect();
        let tail = chunks.pop().unwrap_or(&[]);
        for chunk in chunks.into_iter().filter(|chunk| !chunk.is_empty()) {
            let length = chunk.len().min(MAX_FRAME + 1);
            let mut buffer = chunk[..length].to_vec();
            let decoded = if length > MAX_FRAME {
                None
            } else {
                cobs::decode_in_place(&mut buffer).ok().and_then(|n| {
                    postcard::from_bytes_crc32::<Frame>(&buffer[..n], FRAME_CRC.digest()).ok()
                })
            };
            let Some(frame) = decoded else {
                out.push(Decoded::Corrupt { bytes: length });
                continue;
            };
            if let Some(expected) = next_seq {
                if frame.seq > expected {
                    out.push(Decoded::Gap {
                        from: expected,
                        to: frame.seq,
                    });
                }
            }
            next_seq = Some(frame.seq.wrapping_add(1));
            out.push(Decoded::Frame(frame));
        }
        if !tail.is_empty() {
            out.push(Decoded::Corrupt {
                bytes: tail.len().min(MAX_FRAME + 1),
            });
        }
        out
    }

    /// A frame whose CRC is followed by `extra` bytes before the COBS encoding.
    fn with_trailing_bytes(frame: &Frame, extra: &[u8]) -> Vec<u8> {
        let mut plain = postcard::to_allocvec(frame).unwrap();
        plain.extend_from_slice(&FRAME_CRC.checksum(&plain).to_le_bytes());
        plain.extend_from_slice(extra);
        let mut out = vec![0u8; cobs::max_encoding_length(plain.len()) + 1];
        let length = cobs::encode(&plain, &mut out);
        out.truncate(length + 1);
        out
    }

    #[test]
    fn bytes_after_the_crc_are_ignored_as_postcard_ignores_them() {
        let stream = with_trailing_bytes(&frame(4), &[1, 2, 3]);
        assert_eq!(decode_all(&stream), vec![Decoded::Frame(frame(4))]);
        assert_eq!(decode_all(&stream), reference_decode_all(&stream));
    }

    #[test]
    fn an_oversized_frame_is_one_corrupt_frame() {
        let mut stream = vec![7u8; MAX_FRAME + 10];
        stream.push(0);
        stream.extend_from_slice(&encode_vec(&frame(1)));
        stream.extend_from_slice(&[9u8; 3]);
        let decoded = decode_all(&stream);
        assert_eq!(decoded, reference_decode_all(&stream));
        assert_eq!(
            decoded[0],
            Decoded::Corrupt {
                bytes: MAX_FRAME + 1
            }
        );
        assert_eq!(decoded.last(), Some(&Decoded::Corrupt { bytes: 3 }));
    }

    /// Frames of several kinds, some with gaps and repeats in their sequence numbers.
    fn sample_stream(seqs: &[u32]) -> Vec<u8> {
        seqs.iter()
            .enumerate()
            .flat_map(|(index, &seq)| {
                let record = match index % 3 {
                    0 => frame(seq).record,
                    1 => Record::Events {
                        tsc: u64::from(seq) << 20,
                        events: vec![
                            crate::record::Event::Run { dt: 5, vm: 1 },
                            crate::record::Event::Console {
                                dt: 900_000,
                                vm: 1,
                                bytes: 12,
                            },
                        ],
                    },
                    _ => Record::GuestMetric {
                        tsc: 1,
                        vm: 2,
                        name: "iterations".to_string(),
                        value: u64::from(seq),
                    },
                };
                encode_vec(&Frame { seq, record })
            })
            .collect()
    }

    proptest! {
        #[test]
        fn encoding_equals_postcards_flavors(seq in any::<u32>(), lba in any::<u32>(), data in proptest::collection::vec(any::<u8>(), 0..700)) {
            let record = Record::MemoryMap { tsc: u64::from(lba), vm: 3, pages_per_cell: lba, cells: data };
            let frame = Frame { seq, record };
            let ours = encode_vec(&frame);
            let theirs = encode_with_flavors(&frame);
            prop_assert_eq!(decode_all(&ours), vec![Decoded::Frame(frame.clone())]);
            prop_assert_eq!(decode_all(&theirs), vec![Decoded::Frame(frame)]);
            // Equal bytes, but where a COBS block ends exactly at 254 bytes the flavor adds a
            // redundant empty block.
            let theirs_trimmed = match theirs.len() - ours.len() {
                1 => [&theirs[..theirs.len() - 2], &[0u8]].concat(),
                _ => theirs,
            };
            prop_assert_eq!(ours, theirs_trimmed);
        }

        #[test]
        fn summaries_round_trip(values in proptest::collection::vec(any::<u64>(), 16), ppm in any::<i64>()) {
            let vm = crate::record::VmSummary {
                vm: values[0] as u16, running: values[1], runnable: values[2], blocked: values[3],
                stopped: values[4], guest: values[5], root: values[6], slices: values[7],
                preemptions: values[8], yields: values[9], wakes: values[10], wake_p50: values[11],
                wake_p95: values[12], wake_p99: values[13], wake_max: values[14],
                quantum_error_median_ppm: ppm, quantum_error_max_ppm: -ppm.wrapping_add(1),
                blocked_console: values[15], blocked_records: values[14] ^ values[15],
                guest_records_dropped: values[13] ^ 1,
            };
            let run = crate::record::RunSummary {
                policy: "round-robin".to_string(), quantum_cycles: values[0], elapsed: values[1],
                root: values[2], idle: values[3], switch_median: values[4], switch_max: values[5],
                switches: values[6], dropped_records: values[7],
            };
            for (seq, record) in [(0, Record::VmSummary(vm)), (1, Record::RunSummary(run))] {
                let frame = Frame { seq, record };
                prop_assert_eq!(decode_all(&encode_vec(&frame)), vec![Decoded::Frame(frame)]);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode_all(&bytes);
        }

        #[test]
        fn garbage_between_frames_is_skipped(
            garbage in proptest::collection::vec(1u8..=255, 1..64),
            status in any::<u32>(),
        ) {
            let first = Frame { seq: 7, record: Record::VmStopped { tsc: 1, vm: 0, reason: StopReason::Exited { status } } };
            let mut stream = encode_vec(&first);
            stream.extend_from_slice(&garbage);
            stream.push(0);
            stream.extend_from_slice(&encode_vec(&frame(8)));
            let decoded = decode_all(&stream);
            prop_assert_eq!(frames(&decoded), vec![7, 8]);
            prop_assert!(decoded.first() == Some(&Decoded::Frame(first)));
        }

        #[test]
        fn decoding_matches_the_reference_on_damaged_streams(
            seqs in proptest::collection::vec(0u32..40, 1..12),
            damage in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 0..8),
        ) {
            let mut stream = sample_stream(&seqs);
            for (at, byte, how) in damage {
                let at = at % (stream.len() + 1);
                match how {
                    0 if at < stream.len() => stream[at] ^= byte.max(1),
                    1 => stream.insert(at, byte),
                    _ => stream.truncate(at.max(1)),
                }
            }
            prop_assert_eq!(decode_all(&stream), reference_decode_all(&stream));
        }

        #[test]
        fn decoding_matches_the_reference_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            prop_assert_eq!(decode_all(&bytes), reference_decode_all(&bytes));
        }

        #[test]
        fn split_feeding_matches_whole(split in 0usize..40, seqs in proptest::collection::vec(0u32..1000, 1..6)) {
            let stream: Vec<u8> = seqs.iter().flat_map(|&s| encode_vec(&frame(s))).collect();
            let split = split.min(stream.len());
            let mut decoder = Decoder::new();
            let mut out = Vec::new();
            decoder.feed(&stream[..split], &mut out);
            decoder.feed(&stream[split..], &mut out);
            prop_assert_eq!(out, decode_all(&stream));
        }
    }
}
