//! The trace decoder against damage it must survive: a stream of encoded records (each record
//! read from the input with postcard, so every kind of record appears) with random damage —
//! flipped bytes, bytes cut out, two frames run together, frames lost, garbage between frames,
//! runs longer than any frame, a truncated tail — decoded whole and in random pieces.
//!
//! Invariants:
//! - every record encodes to one frame;
//! - every undamaged frame is decoded, in order, exactly as sent;
//! - every damaged or garbage run between two zeros is reported as corrupt with its length
//!   (or, if the damage happened to make a valid frame, decodes as one: CRC-32 can be fooled on
//!   purpose, but never by chance here), and a truncated tail is reported as corrupt;
//! - lost frames are reported as a gap exactly when a sequence number jumps ahead, and nothing
//!   else is reported;
//! - the streaming decoder, fed in pieces, finds the same.
#![no_main]

use arbitrary::{Result, Unstructured};
use carousel_protocol::record::Record;
use carousel_protocol::wire::{decode_all, encode_vec, Decoded, Decoder, Frame, MAX_FRAME};
use libfuzzer_sys::fuzz_target;

/// Most frames in one stream.
const MAX_FRAMES: usize = 64;

/// One zero-terminated run of the stream (the tail may lack its zero), and what it should give.
#[derive(Debug)]
enum Piece {
    /// An intact frame.
    Good(Frame, Vec<u8>),
    /// A damaged frame, frames run together, or garbage: anything but a zero inside.
    Damaged(Vec<u8>),
    /// The stream's last run, cut short: no zero.
    Tail(Vec<u8>),
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok((pieces, seed)) = build(&mut u) else {
        return;
    };
    let mut stream = Vec::new();
    for piece in &pieces {
        match piece {
            Piece::Good(_, bytes) | Piece::Tail(bytes) => stream.extend_from_slice(bytes),
            Piece::Damaged(bytes) => {
                assert!(!bytes.contains(&0));
                stream.extend_from_slice(bytes);
                stream.push(0);
            }
        }
    }
    let all = decode_all(&stream);
    check(&pieces, &all);

    let mut decoder = Decoder::new();
    let mut streamed = Vec::new();
    for piece in carousel_fuzz::pieces(&stream, seed, 4096) {
        decoder.feed_each(piece, |decoded| streamed.push(decoded));
    }
    decoder.end(|decoded| streamed.push(decoded));
    assert_eq!(streamed, all, "streamed decoding differs");
});

/// A record from postcard bytes of the input, if they make one.
fn read_record(u: &mut Unstructured) -> Result<Option<Record>> {
    let len = u.int_in_range(0..=64usize)?;
    let bytes = u.bytes(len)?;
    Ok(postcard::take_from_bytes::<Record>(bytes)
        .ok()
        .map(|(record, _)| record))
}

/// Replaces each zero of `bytes` (content that must not end a run) by a byte of `u`'s choosing.
fn without_zeros(u: &mut Unstructured, bytes: &mut [u8]) -> Result<()> {
    for byte in bytes.iter_mut().filter(|byte| **byte == 0) {
        *byte = u.int_in_range(1..=255u8)?;
    }
    Ok(())
}

fn build(u: &mut Unstructured) -> Result<(Vec<Piece>, u32)> {
    let seed: u32 = u.arbitrary()?;
    let mut seq: u32 = if u.arbitrary()? { 0 } else { u.arbitrary()? };
    let mut pieces = Vec::new();
    for _ in 0..MAX_FRAMES {
        if u.is_empty() {
            break;
        }
        // Mostly the next number; sometimes a restart or a wrap.
        if u.ratio(1, 32)? {
            seq = u.arbitrary()?;
        }
        let this_seq = seq;
        seq = seq.wrapping_add(1);
        let Some(record) = read_record(u)? else {
            continue;
        };
        let frame = Frame {
            seq: this_seq,
            record,
        };
        let bytes = encode_vec(&frame);
        assert!(!bytes.is_empty(), "{frame:?} does not encode");
        assert_eq!(
            bytes.iter().position(|&byte| byte == 0),
            Some(bytes.len() - 1)
        );
        let content = &bytes[..bytes.len() - 1];
        match u.int_in_range(0..=15u8)? {
            // Flip one byte (to something other than zero).
            0 => {
                let mut damaged = content.to_vec();
                let at = u.choose_index(damaged.len())?;
                let flip = u.int_in_range(1..=255u8)?;
                damaged[at] ^= flip;
                if damaged[at] == 0 {
                    damaged[at] = flip;
                }
                pieces.push(Piece::Damaged(damaged));
            }
            // Cut bytes out of the middle (the zero stays).
            1 => {
                let start = u.choose_index(content.len())?;
                let end = u.int_in_range(start + 1..=content.len())?;
                let mut damaged = content[..start].to_vec();
                damaged.extend_from_slice(&content[end..]);
                pieces.push(Piece::Damaged(damaged));
            }
            // The zero is lost: this frame runs into the next one.
            2 => {
                let Some(next) = read_record(u)? else {
                    continue;
                };
                let next = encode_vec(&Frame { seq, record: next });
                seq = seq.wrapping_add(1);
                let mut damaged = content.to_vec();
                damaged.extend_from_slice(&next[..next.len() - 1]);
                pieces.push(Piece::Damaged(damaged));
            }
            // The frame is lost whole.
            3 => {}
            // Garbage before the frame, then the frame intact.
            4 => {
                let len = u.int_in_range(0..=64usize)?;
                let mut garbage = u.bytes(len)?.to_vec();
                without_zeros(u, &mut garbage)?;
                pieces.push(Piece::Damaged(garbage));
                pieces.push(Piece::Good(frame, bytes));
            }
            // A run longer than any frame.
            5 if u.ratio(1, 8)? => {
                let len = u.int_in_range(MAX_FRAME - 2..=MAX_FRAME + 3)?;
                pieces.push(Piece::Damaged(vec![u.int_in_range(1..=255u8)?; len]));
            }
            _ => pieces.push(Piece::Good(frame, bytes)),
        }
    }
    // Sometimes the stream stops in the middle of one more frame.
    if u.ratio(1, 4)? {
        if let Some(record) = read_record(u)? {
            let bytes = encode_vec(&Frame { seq, record });
            let cut = u.choose_index(bytes.len() - 1)?;
            pieces.push(Piece::Tail(bytes[..cut].to_vec()));
        }
    }
    Ok((pieces, seed))
}

/// Walks the pieces and the decoder's output side by side.
fn check(pieces: &[Piece], decoded: &[Decoded]) {
    let mut outputs = decoded.iter().peekable();
    let mut expected_seq: Option<u32> = None;
    for piece in pieces {
        match piece {
            Piece::Good(frame, _) => {
                let found = take_frame(&mut outputs, &mut expected_seq);
                assert_eq!(
                    found.as_ref(),
                    Some(frame),
                    "an undamaged frame was not decoded"
                );
            }
            Piece::Damaged(bytes) if bytes.is_empty() => {}
            Piece::Damaged(bytes) => {
                let corrupt = Decoded::Corrupt {
                    bytes: bytes.len().min(MAX_FRAME + 1),
                };
                if outputs.peek() == Some(&&corrupt) {
                    outputs.next();
                } else {
                    // Damage that made a valid frame after all.
                    let frame = take_frame(&mut outputs, &mut expected_seq).unwrap_or_else(|| {
                        panic!("damaged run of {} bytes misreported", bytes.len())
                    });
                    let again = decode_all(&encode_vec(&frame));
                    assert_eq!(again, vec![Decoded::Frame(frame)], "a forged frame");
                }
            }
            Piece::Tail(bytes) if bytes.is_empty() => {}
            Piece::Tail(bytes) => {
                let corrupt = Decoded::Corrupt { bytes: bytes.len() };
                assert_eq!(outputs.next(), Some(&corrupt), "the truncated tail");
            }
        }
    }
    assert_eq!(outputs.next(), None, "output beyond the stream");
}

/// The decoder's outputs, as `check` walks them.
type Outputs<'a> = std::iter::Peekable<std::slice::Iter<'a, Decoded>>;

/// The next frame of `outputs` (with the gap before it when its number jumps ahead of
/// `expected_seq`), or `None` at a corrupt report.
fn take_frame(outputs: &mut Outputs<'_>, expected_seq: &mut Option<u32>) -> Option<Frame> {
    let gap_expected = |seq: u32| expected_seq.is_some_and(|expected| seq > expected);
    let frame = match outputs.next()? {
        Decoded::Gap { from, to } => {
            assert_eq!(Some(*from), *expected_seq, "gap start");
            let Some(Decoded::Frame(frame)) = outputs.next() else {
                panic!("gap {from}..{to} without its frame");
            };
            assert_eq!(frame.seq, *to, "gap end");
            assert!(gap_expected(frame.seq));
            frame.clone()
        }
        Decoded::Frame(frame) => {
            assert!(
                !gap_expected(frame.seq),
                "no gap before frame {}",
                frame.seq
            );
            frame.clone()
        }
        Decoded::Corrupt { .. } => return None,
    };
    *expected_seq = Some(frame.seq.wrapping_add(1));
    Some(frame)
}
