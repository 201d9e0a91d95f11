//! Framing of the record stream: each [`Frame`] is postcard-encoded, followed by a CRC-32
//! (postcard's CRC flavor), COBS-encoded (postcard's COBS flavor) and ended by a zero byte.
//!
//! The decoder never panics: a frame that fails COBS, CRC or postcard decoding is reported as
//! corrupt with its length, and decoding resumes at the next zero byte. Gaps in the sequence
//! numbers are reported as [`Decoded::Gap`], so loss is never silent.

use alloc::vec::Vec;

use crc::{Crc, CRC_32_ISO_HDLC};
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
    let crc = FRAME_CRC.checksum(&plain[..length]).to_le_bytes();
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

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds `bytes`, appending everything found to `out`.
    pub fn feed(&mut self, mut bytes: &[u8], out: &mut Vec<Decoded>) {
        while !bytes.is_empty() {
            let end = bytes.iter().position(|&byte| byte == 0);
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
            self.finish(out);
        }
    }

    /// Bytes held back waiting for their terminating zero (a truncated last frame).
    pub fn pending_bytes(&self) -> usize {
        self.pending.len()
    }

    /// Decodes the frame in `pending` (in place: the buffer is reused for the next frame).
    fn finish(&mut self, out: &mut Vec<Decoded>) {
        let bytes = &mut self.pending;
        let length = bytes.len();
        let decoded = if length > MAX_FRAME {
            None
        } else {
            cobs::decode_in_place(bytes).ok().and_then(|n| {
                postcard::from_bytes_crc32::<Frame>(&bytes[..n], FRAME_CRC.digest()).ok()
            })
        };
        self.pending.clear();
        let Some(frame) = decoded else {
            out.push(Decoded::Corrupt { bytes: length });
            return;
        };
        if let Some(expected) = self.next_seq {
            if frame.seq > expected {
                out.push(Decoded::Gap {
                    from: expected,
                    to: frame.seq,
                });
            }
        }
        self.next_seq = Some(frame.seq.wrapping_add(1));
        out.push(Decoded::Frame(frame));
    }
}

/// Decodes a whole byte stream (a finished trace).
pub fn decode_all(bytes: &[u8]) -> Vec<Decoded> {
    let mut decoder = Decoder::new();
    let mut out = Vec::new();
    decoder.feed(bytes, &mut out);
    if decoder.pending_bytes() > 0 {
        out.push(Decoded::Corrupt {
            bytes: decoder.pending_bytes(),
        });
    }
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

    proptest! {
        #[test]
        fn encoding_equals_postcards_flavors(seq in any::<u32>(), lba in any::<u32>(), data in proptest::collection::vec(any::<u8>(), 0..700)) {
            let frame = Frame { seq, record: Record::DiskSector { vm: 3, lba, data } };
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
