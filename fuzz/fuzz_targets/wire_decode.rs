//! The trace decoder, `carousel_protocol::wire`, on arbitrary bytes: `decode_all` and the
//! streaming `Decoder` fed the same bytes in pieces.
//!
//! Invariants:
//! - nothing panics;
//! - each zero-terminated run of bytes (and an unterminated tail) yields exactly one frame or one
//!   corrupt report, whose length is the run's (capped one past `MAX_FRAME`); empty runs yield
//!   nothing;
//! - a gap is reported exactly when a frame's sequence number jumps ahead of the one expected,
//!   and spans the missing numbers;
//! - every frame re-encodes to one valid frame (one zero, at the end) that decodes back to
//!   itself;
//! - the streaming decoder, fed in arbitrary pieces, finds the same as `decode_all`, holds back
//!   exactly the unfinished tail, and expects the sequence number after the last frame.
#![no_main]

use carousel_protocol::wire::{decode_all, decode_each, encode_vec, Decoded, Decoder, MAX_FRAME};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte seeds the piece sizes for the streaming decoder; the rest is the stream.
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let all = decode_all(stream);

    // One output per non-empty run between zeros, in order.
    let mut runs: Vec<&[u8]> = stream.split(|&byte| byte == 0).collect();
    let tail = runs.pop().unwrap_or(&[]);
    runs.retain(|run| !run.is_empty());
    let mut next_seq: Option<u32> = None;
    let mut outputs = all.iter();
    for run in &runs {
        match outputs.next() {
            Some(Decoded::Corrupt { bytes }) => {
                assert_eq!(*bytes, run.len().min(MAX_FRAME + 1), "corrupt length");
            }
            Some(Decoded::Gap { from, to }) => {
                assert_eq!(Some(*from), next_seq, "gap start");
                assert!(from < to, "gap {from}..{to}");
                let Some(Decoded::Frame(frame)) = outputs.next() else {
                    panic!("a gap not followed by its frame");
                };
                assert_eq!(frame.seq, *to);
                check_frame(frame, run);
                next_seq = Some(frame.seq.wrapping_add(1));
            }
            Some(Decoded::Frame(frame)) => {
                assert!(
                    next_seq.is_none_or(|expected| frame.seq <= expected),
                    "frame {} after {next_seq:?} without a gap",
                    frame.seq
                );
                check_frame(frame, run);
                next_seq = Some(frame.seq.wrapping_add(1));
            }
            None => panic!("a run of {} bytes yielded nothing", run.len()),
        }
    }
    // An unfinished last frame is reported as corrupt, whatever it holds.
    if !tail.is_empty() {
        let expected = Decoded::Corrupt {
            bytes: tail.len().min(MAX_FRAME + 1),
        };
        assert_eq!(outputs.next(), Some(&expected), "the unfinished tail");
    }
    assert!(outputs.next().is_none(), "more outputs than runs");

    let mut each = Vec::new();
    decode_each(stream, |decoded| each.push(decoded));
    assert_eq!(each, all);

    // The same stream through the streaming decoder, in pieces of 1 to 256 bytes.
    let mut decoder = Decoder::new();
    let mut streamed = Vec::new();
    for piece in carousel_fuzz::pieces(stream, u32::from(seed), 256) {
        decoder.feed(piece, &mut streamed);
    }
    assert_eq!(
        decoder.pending_bytes(),
        tail.len().min(MAX_FRAME + 1),
        "bytes held back"
    );
    assert_eq!(decoder.next_seq(), next_seq);
    decoder.end(|decoded| streamed.push(decoded));
    assert_eq!(streamed, all, "streamed decoding differs");
});

/// A decoded frame encodes back to one frame that decodes to itself; the run it came from
/// decodes to it too.
fn check_frame(frame: &carousel_protocol::wire::Frame, run: &[u8]) {
    let bytes = encode_vec(frame);
    assert_eq!(
        bytes.last(),
        Some(&0),
        "an encoded frame ends with its zero"
    );
    assert_eq!(bytes.iter().filter(|&&byte| byte == 0).count(), 1);
    assert_eq!(decode_all(&bytes), vec![Decoded::Frame(frame.clone())]);
    let mut alone = run.to_vec();
    alone.push(0);
    assert_eq!(decode_all(&alone), vec![Decoded::Frame(frame.clone())]);
}
