//! `ReadProducer`: a stream read once from a `Read` as it is made yields
//! the units a file producer yields; an emitter over it re-arms from a
//! token on the stream made again (the units before it skipped, their
//! digest checked), and a stream that differs before the token's position
//! is refused, typed, while one that differs only after it continues.

use std::io::{self, Read};

use proto_checkpoint::native::{
    Writer, NATIVE_DATA, NATIVE_DATA_CMD, NATIVE_OBJECT, NATIVE_OFFSET, PRSTREAM,
};
use proto_checkpoint::{EmitError, Emitter, Format, Producer, ReadProducer, Token, Units};
use proto_header::{Endian, V1Header, KIT_VERSIONS};
use proto_tlv::{AttrValue, Value};

/// A native stream of `n` data commands of 40,000 bytes (byte `flip` of
/// data command `at` changed when given), between small commands.
fn stream(n: usize, flip: Option<(usize, usize)>) -> Vec<u8> {
    let header = V1Header {
        byte_order: Endian::Little,
        features_supported: 0,
        features_required: 0,
        stream_id: [1; 16],
        contexts: Vec::new(),
    };
    let mut w = Writer::new(Vec::new(), KIT_VERSIONS.entry(1).unwrap(), 1, &header).unwrap();
    for i in 0..n {
        w.write_command(2, &[AttrValue::new(1, Value::U64(i as u64))])
            .unwrap();
        let mut data: Vec<u8> = (0..40_000u32).map(|b| (b ^ i as u32) as u8).collect();
        if let Some((at, byte)) = flip {
            if at == i {
                data[byte] ^= 0xFF;
            }
        }
        w.write_command(
            NATIVE_DATA_CMD,
            &[
                AttrValue::new(NATIVE_OBJECT, Value::Bytes(b"ram")),
                AttrValue::new(NATIVE_OFFSET, Value::U64(i as u64 * 40_000)),
                AttrValue::new(NATIVE_DATA, Value::Bytes(&data)),
            ],
        )
        .unwrap();
    }
    w.finish().unwrap()
}

/// A reader that returns at most `max` bytes per read.
struct Trickle<'a>(&'a [u8], usize);

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.1).min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

fn units<U: Units>(mut u: U) -> Vec<(Vec<u8>, u64, u64)> {
    let mut out = Vec::new();
    while let Some(unit) = u.current().unwrap() {
        out.push((unit.bytes.to_vec(), unit.index, unit.offset));
        u.advance().unwrap();
    }
    out
}

#[test]
fn a_read_stream_yields_the_units_of_the_file() {
    let s = stream(6, None);
    let want = units(PRSTREAM.units(&s[..]));
    for max in [1, 7, 4096, usize::MAX] {
        let got = units(ReadProducer::new(PRSTREAM, Trickle(&s, max)).unwrap());
        assert_eq!(got, want, "reads of at most {max} bytes");
    }
}

/// Emits `s` through buffers of `size`, stopping after `stop` fills: the
/// bytes and the token there.
fn emit_until(s: &[u8], size: usize, stop: usize) -> (Vec<u8>, Token) {
    let p = ReadProducer::new(PRSTREAM, Trickle(s, 5000)).unwrap();
    let mut e = Emitter::new(p, PRSTREAM.split()).unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0u8; size];
    for _ in 0..stop {
        let f = e.fill(&mut buf).unwrap();
        out.extend_from_slice(&buf[..f.written]);
    }
    (out, e.token())
}

fn emit_rest(s: &[u8], size: usize, token: &Token) -> Result<Vec<u8>, String> {
    let p = ReadProducer::new(PRSTREAM, Trickle(s, 5000)).unwrap();
    let mut e = Emitter::resume(p, PRSTREAM.split(), token).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; size];
    loop {
        let f = e.fill(&mut buf).map_err(|e| e.to_string())?;
        out.extend_from_slice(&buf[..f.written]);
        if f.ended {
            return Ok(out);
        }
    }
}

fn assert_same(a: &[u8], b: &[u8], what: &str) {
    let (mut pa, mut pb) = (PRSTREAM.units(a), PRSTREAM.units(b));
    match proto_checkpoint::compare(&mut pa, &mut pb, &PRSTREAM.split()).unwrap() {
        proto_checkpoint::Outcome::Equal { .. } => {}
        proto_checkpoint::Outcome::Differ(d) => panic!("{what}: {d}"),
    }
}

#[test]
fn a_stream_made_again_resumes_from_a_token_at_every_point() {
    let s = stream(5, None);
    // Whole units per fill (the largest is about 40 KB) and split ones.
    for size in [50_000, 9_000] {
        for stop in 0..12 {
            let (mut head, token) = emit_until(&s, size, stop);
            // Through the token's text form, as a receiver keeps it.
            let token: Token = token.to_string().parse().unwrap();
            head.extend(emit_rest(&s, size, &token).unwrap());
            // The same commands, their data cut where buffers ended.
            assert_same(&s, &head, &format!("size {size}, stop {stop}"));
        }
    }
}

#[test]
fn a_stream_that_differs_before_the_token_is_refused_and_after_it_continues() {
    let a = stream(6, None);
    // Data command 4 differs: far past the first 64 KiB, so the stream id
    // (made of them) is the same.
    let b = stream(6, Some((4, 123)));
    let id = |s: &[u8]| {
        ReadProducer::new(PRSTREAM, Trickle(s, usize::MAX))
            .unwrap()
            .stream_id()
    };
    assert_eq!(id(&a), id(&b));
    // A token past the difference: refused, naming why.
    let (_, late) = emit_until(&a, 50_000, 11);
    let e = emit_rest(&b, 50_000, &late).unwrap_err();
    assert!(
        e.contains("differs from the one the token was made over"),
        "{e}"
    );
    // A token inside the differing unit (its first part, which holds the
    // difference, already sent): refused too.
    let (_, inside) = emit_until(&a, 50_000, 4);
    let e = emit_rest(&b, 50_000, &inside).unwrap_err();
    assert!(
        e.contains("differs from the one the token was made over"),
        "{e}"
    );
    // A token before it: the receiver's prefix is b's too; b continues.
    let (mut head, early) = emit_until(&a, 50_000, 3);
    head.extend(emit_rest(&b, 50_000, &early).unwrap());
    assert_same(&b, &head, "b after a's prefix");
    // A stream whose start differs is another stream: its id differs.
    let mut c = a.clone();
    let n = c.len();
    c[n - 20] ^= 1;
    let other = stream(6, Some((0, 5)));
    assert_ne!(id(&a), id(&other));
    let (_, t) = emit_until(&a, 50_000, 3);
    let p = ReadProducer::new(PRSTREAM, Trickle(&other, usize::MAX)).unwrap();
    assert!(matches!(
        Emitter::resume(p, PRSTREAM.split(), &t),
        Err(EmitError::Token(_))
    ));
}

#[test]
fn a_truncated_or_damaged_stream_is_a_typed_error() {
    let s = stream(2, None);
    for cut in [0, 5, 16, 40, s.len() / 2, s.len() - 1] {
        let p = ReadProducer::new(PRSTREAM, Trickle(&s[..cut], 999));
        let r = p.and_then(|mut p| {
            while p.current()?.is_some() {
                p.advance()?;
            }
            Ok(())
        });
        let e = r.expect_err("a cut stream ends with an error");
        assert!(!e.to_string().is_empty(), "cut at {cut}");
    }
    // Bytes after END: a native stream does not concatenate.
    let mut t = s.clone();
    t.extend_from_slice(b"more");
    let mut p = ReadProducer::new(PRSTREAM, &t[..]).unwrap();
    let r = loop {
        match p.current() {
            Ok(Some(_)) => p.advance().unwrap(),
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    let e = r.expect_err("bytes after END are an error").to_string();
    assert!(e.contains("bytes after the END"), "{e}");
}
