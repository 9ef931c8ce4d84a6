//! `checkpoint_format`: the generic stream machinery of `proto-checkpoint`
//! (`list_streams`, `FormatProducer`, `Validator`, the emitter over them)
//! on arbitrary bytes, read as a btrfs stream and as a native `PRSTREAM`
//! stream (the first byte picks the format and the buffer size; the rest
//! is the stream, the format's magic put in front when the input lacks it).
//!
//! Properties, beyond "no panic, typed errors":
//! - framing agrees: `list_streams` succeeds exactly when the producer
//!   walks to the end, and then the spans and the units each cover the
//!   input exactly;
//! - the validator, fed the producer's units, accepts them all and
//!   finishes only when the emitter (which checks framing and every CRC)
//!   re-emits the whole stream without error (it is stricter: attribute
//!   layouts, the format's own rules);
//! - then the re-emitted stream (split through small buffers) validates
//!   and compares equal to the input.
#![cfg_attr(fuzzing, no_main)]

#[macro_use]
#[path = "common/harness.rs"]
mod harness;

use proto_btrfs::Btrfs;
use proto_checkpoint::native::PRSTREAM;
use proto_checkpoint::{compare, list_streams, Emitter, Format, Outcome, Units};

/// Every unit of `data` as the format's cursor (the producer's) frames it,
/// or its error.
fn units<F: Format>(f: &F, data: &[u8]) -> Result<Vec<Vec<u8>>, F::Error> {
    let mut p = f.units(data);
    let mut out = Vec::new();
    while let Some(u) = p.current()? {
        assert!(!u.bytes.is_empty());
        out.push(u.bytes.to_vec());
        p.advance()?;
    }
    Ok(out)
}

/// Whether the validator takes `units` and the end after them.
fn validates<F: Format>(f: &F, units: &[Vec<u8>]) -> bool {
    let mut v = f.validator();
    units.iter().all(|u| v.unit(u).is_ok()) && v.finish().is_ok()
}

fn check<F: Format>(f: &F, data: &[u8], size: usize) {
    let spans = list_streams(f, &mut &data[..]);
    let walked = units(f, data);
    assert_eq!(spans.is_ok(), walked.is_ok(), "framing disagrees");
    let (Ok(spans), Ok(units)) = (spans, walked) else {
        return;
    };
    assert_eq!(spans.iter().map(|s| s.len).sum::<u64>(), data.len() as u64);
    assert_eq!(units.iter().map(Vec::len).sum::<usize>(), data.len());

    let valid = validates(f, &units);
    let mut e = Emitter::new(f.producer(data, 2).unwrap(), f.split()).unwrap();
    let mut buf = vec![0u8; size];
    let mut out = Vec::new();
    let emitted = loop {
        match e.fill(&mut buf) {
            Ok(fill) => {
                out.extend_from_slice(&buf[..fill.written]);
                if fill.ended {
                    break true;
                }
            }
            // Too small a buffer for an unsplittable unit: retry with one
            // that takes the largest unit, as a caller would.
            Err(proto_checkpoint::EmitError::DoesNotFit { needed, .. }) if needed > buf.len() => {
                buf = vec![0u8; needed];
            }
            Err(_) => break false,
        }
    };
    // The validator is the stricter: beyond framing and every CRC (which
    // the emitter checks too) it checks attribute layouts and the format's
    // own rules (btrfs: no type 0).
    assert!(!valid || emitted, "the validator took a stream the emitter refused");
    if !valid {
        return;
    }
    let again = units_of(f, &out);
    assert!(validates(f, &again), "re-emitted stream does not validate");
    let mut a = f.units(data);
    let mut b = f.units(&out[..]);
    match compare(&mut a, &mut b, &f.split()) {
        Ok(Outcome::Equal { .. }) => {}
        other => panic!("re-emitted stream differs: {other:?}"),
    }
}

fn units_of<F: Format>(f: &F, data: &[u8]) -> Vec<Vec<u8>> {
    match units(f, data) {
        Ok(u) => u,
        Err(e) => panic!("re-emitted stream does not frame: {e}"),
    }
}

target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    let size = 32 + usize::from(mode >> 1) * 16;
    let mut data = Vec::with_capacity(rest.len() + 16);
    if mode & 1 == 0 {
        if !rest.starts_with(b"btrfs-stream\0") {
            data.extend_from_slice(b"btrfs-stream\0");
        }
        data.extend_from_slice(rest);
        check(&Btrfs, &data, size);
    } else {
        if !rest.starts_with(b"PRSTREAM") {
            data.extend_from_slice(b"PRSTREAM");
        }
        data.extend_from_slice(rest);
        check(&PRSTREAM, &data, size);
    }
});
