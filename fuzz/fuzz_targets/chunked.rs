//! Fuzzes the chunked decoder for split invariance.
//!
//! The proxy feeds the decoder whatever each read returned, so where the
//! reads happen to split a body must not change what the body is. The first
//! two input bytes choose a split point; the rest is a body, which is decoded
//! three ways: whole, in two pieces split there, and one byte at a time. All
//! three must agree on the outcome: the same error, or the same data bytes,
//! the same count of bytes that belong to the body, and whether it ended.
//!
//! Each step must also stay inside its input, and make progress on a
//! non-empty input unless the body is done (a step of zero bytes would spin
//! the proxy's relay loop forever). A body that neither ended nor failed
//! accounts for every byte it was given.

#![no_main]

use croupier::http1::chunked::{ChunkError, ChunkedDecoder};
use libfuzzer_sys::fuzz_target;

/// What decoding one body in some split gave.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The body was refused, after these data bytes had been handed out.
    /// How many framing bytes the failing call walked over is not reported
    /// by the decoder, so no byte count is compared.
    Failed { error: ChunkError, data: Vec<u8> },
    /// No error: the data bytes, how many input bytes belong to the body,
    /// and whether it ended.
    Read { data: Vec<u8>, consumed: usize, done: bool },
}

fuzz_target!(|input: &[u8]| {
    let [a, b, body @ ..] = input else {
        return;
    };
    let split = usize::from(u16::from_le_bytes([*a, *b])) % (body.len() + 1);

    let whole = decode(&[body]);
    let halves = decode(&[&body[..split], &body[split..]]);
    assert_eq!(whole, halves, "split at {split} changed the outcome");
    let bytes: Vec<&[u8]> = body.chunks(1).collect();
    assert_eq!(whole, decode(&bytes), "byte-by-byte feeding changed the outcome");

    if let Outcome::Read { consumed, done, .. } = whole {
        assert!(consumed <= body.len(), "consumed more than the input");
        if !done {
            assert_eq!(consumed, body.len(), "an unfinished body left bytes unread");
        }
    }
});

/// Feeds `pieces` to one decoder in order, as the proxy feeds it reads, and
/// stops where the body ends (what follows is the next message).
fn decode(pieces: &[&[u8]]) -> Outcome {
    let mut decoder = ChunkedDecoder::new();
    let mut data = Vec::new();
    let mut consumed = 0usize;
    for piece in pieces {
        let mut window: &[u8] = piece;
        while !window.is_empty() {
            let step = match decoder.decode(window) {
                Ok(step) => step,
                Err(error) => return Outcome::Failed { error, data },
            };
            assert!(step.consumed() <= window.len(), "step past its input: {step:?}");
            assert_eq!(step.done, decoder.is_done());
            data.extend_from_slice(&window[step.framing..step.consumed()]);
            consumed += step.consumed();
            window = &window[step.consumed()..];
            if step.done {
                return Outcome::Read { data, consumed, done: true };
            }
            assert!(step.consumed() > 0, "no progress on {} bytes", window.len());
        }
    }
    Outcome::Read { data, consumed, done: false }
}
