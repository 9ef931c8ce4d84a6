//! The native format through the generic machinery: a `PRSTREAM` stream
//! whose data commands exceed 64 KiB is chunked through small buffers
//! (its data commands split, nothing else), resumed from tokens, compared
//! and validated unit by unit; and a downstream format with its own magic
//! and no data command goes through the same code.

use proto_checkpoint::native::{
    Error, NativeFormat, Reader, Writer, NATIVE_DATA, NATIVE_DATA_CMD, NATIVE_OBJECT,
    NATIVE_OFFSET, PRSTREAM,
};
use proto_checkpoint::{
    compare, list_streams, Emitter, Format, Outcome, Token, UnitKind, Units, Validator,
};
use proto_header::{Context, Endian, FixedHeaderFormat, ReadOptions, V1Header, KIT_VERSIONS};
use proto_tlv::{AttrValue, ErrorKind, Value};

mod support;
use support::one_at_a_time;

fn header() -> V1Header {
    V1Header {
        byte_order: Endian::Little,
        features_supported: 0b11,
        features_required: 0b01,
        stream_id: [9; 16],
        contexts: vec![Context {
            id: 1,
            name: "ram".into(),
        }],
    }
}

/// A stream of small commands around two data commands of 100 000 and
/// 70 001 bytes.
fn stream(format: &NativeFormat, data_cmd: bool) -> Vec<u8> {
    let entry = KIT_VERSIONS.entry(1).unwrap();
    let mut w = Writer::with_format(format, Vec::new(), entry, 1, &header()).unwrap();
    w.write_command(1, &[AttrValue::new(1, Value::Bytes(b"begin"))])
        .unwrap();
    for (i, len) in [100_000usize, 70_001].into_iter().enumerate() {
        let data: Vec<u8> = (0..len).map(|b| (b * 7 + i) as u8).collect();
        if data_cmd {
            w.write_command(
                NATIVE_DATA_CMD,
                &[
                    AttrValue::new(NATIVE_OBJECT, Value::Bytes(b"memory")),
                    AttrValue::new(NATIVE_OFFSET, Value::U64(1 << 30)),
                    AttrValue::new(NATIVE_DATA, Value::Bytes(&data)),
                ],
            )
            .unwrap();
        } else {
            w.write_command(2, &[AttrValue::new(2, Value::Bytes(&data[..1000]))])
                .unwrap();
        }
        w.write_command(3, &[AttrValue::new(3, Value::U32(i as u32))])
            .unwrap();
    }
    w.finish().unwrap()
}

/// Every fill through `size`-byte buffers: (chunk, token) pairs.
fn chunks<F: Format>(format: &F, bytes: &[u8], size: usize) -> Vec<(Vec<u8>, Token)> {
    let mut e = Emitter::new(format.producer(bytes, 3).unwrap(), format.split()).unwrap();
    let mut buf = vec![0u8; size];
    let mut out = Vec::new();
    loop {
        let f = e.fill(&mut buf).unwrap();
        if f.written > 0 {
            out.push((buf[..f.written].to_vec(), e.token()));
        }
        if f.ended {
            return out;
        }
    }
}

#[track_caller]
fn assert_equal<F: Format>(format: &F, a: &[u8], b: &[u8]) {
    let mut pa = format.units(a);
    let mut pb = format.units(b);
    match compare(&mut pa, &mut pb, &format.split()).unwrap() {
        Outcome::Equal { .. } => {}
        Outcome::Differ(d) => panic!("differ: {d}"),
    }
}

/// Reads every command with the native reader (CRCs, framing, END).
fn read_all(format: &NativeFormat, bytes: &[u8]) -> Vec<(u16, usize)> {
    let opts = ReadOptions {
        known_features: u64::MAX,
    };
    let mut r = Reader::open(format, bytes, opts).unwrap();
    let mut out = Vec::new();
    while let Some(c) = r.next_command().unwrap() {
        out.push((c.cmd(), c.payload().len()));
    }
    out
}

#[test]
fn data_commands_split_and_resume_from_every_token() {
    let original = stream(&PRSTREAM, true);
    assert!(original.len() > 170_000);
    let run = chunks(&PRSTREAM, &original, 4096);
    let joined: Vec<u8> = run.iter().flat_map(|(c, _)| c.clone()).collect();
    assert!(run.iter().all(|(c, _)| c.len() <= 4096));
    assert_ne!(joined, original, "the data commands must have been split");
    // Every piece is a valid command: data commands of at most 4 KiB, the
    // others as they were.
    let cmds = read_all(&PRSTREAM, &joined);
    assert!(cmds
        .iter()
        .all(|(c, len)| *c != NATIVE_DATA_CMD || *len < 4096));
    assert!(cmds.iter().filter(|(c, _)| *c == NATIVE_DATA_CMD).count() > 40);
    assert_equal(&PRSTREAM, &original, &joined);

    // A crash after any fill: resume from its token (text form) through
    // another buffer size, and the whole compares equal.
    for k in (0..run.len()).step_by(7) {
        let token: Token = run[k].1.to_text().unwrap().parse().unwrap();
        let p = PRSTREAM.producer(&original[..], 1).unwrap();
        let mut e = Emitter::resume(p, PRSTREAM.split(), &token).unwrap();
        // The token carried its safe-point interval.
        assert_eq!(e.producer().safe_every(), 3);
        let mut out: Vec<u8> = run[..=k].iter().flat_map(|(c, _)| c.clone()).collect();
        let mut buf = vec![0u8; 10_000];
        loop {
            let f = e.fill(&mut buf).unwrap();
            out.extend_from_slice(&buf[..f.written]);
            if f.ended {
                break;
            }
        }
        read_all(&PRSTREAM, &out);
        assert_equal(&PRSTREAM, &original, &out);
    }
}

#[test]
fn buffers_as_large_as_the_largest_unit_reproduce_the_stream() {
    let original = stream(&PRSTREAM, true);
    let spans = list_streams(&PRSTREAM, &mut &original[..]).unwrap();
    assert_eq!(spans.len(), 1);
    assert_eq!((spans[0].offset, spans[0].len), (0, original.len() as u64));
    assert_eq!(spans[0].name, "stream:1");
    assert_eq!(spans[0].largest, 10 + 4 + 6 + 4 + 8 + 2 + 100_000);
    // One unit per buffer of the largest unit's size: nothing is split.
    let mut e = Emitter::new(
        PRSTREAM.producer(&original[..], 1).unwrap(),
        PRSTREAM.split(),
    )
    .unwrap();
    e.set_units_per_fill(1);
    let mut buf = vec![0u8; spans[0].largest];
    let mut joined = Vec::new();
    loop {
        let f = e.fill(&mut buf).unwrap();
        assert_eq!(f.pieces, 0);
        joined.extend_from_slice(&buf[..f.written]);
        if f.ended {
            break;
        }
    }
    assert!(
        joined == original,
        "one unit per fill must reproduce the stream"
    );
}

#[test]
fn the_validator_takes_exactly_the_units_of_a_valid_stream() {
    let original = stream(&PRSTREAM, true);
    let mut p = PRSTREAM.units(&original[..]);
    let mut v = PRSTREAM.validator();
    let mut units = Vec::new();
    while let Some(u) = p.current().unwrap() {
        units.push((u.kind, u.bytes.to_vec()));
        p.advance().unwrap();
    }
    assert!(matches!(units[0].0, UnitKind::Raw));
    for (_, u) in &units {
        v.unit(u).unwrap();
    }
    v.finish().unwrap();
    // Anything after END is refused.
    let e = v.unit(&units[1].1).unwrap_err();
    assert!(
        matches!(e, Error::Tlv(ref t) if matches!(t.kind, ErrorKind::TrailingData { .. })),
        "{e}"
    );

    // A damaged unit is refused at its command index and offset, and the
    // validator can go on with the right one.
    let mut v = PRSTREAM.validator();
    v.unit(&units[0].1).unwrap();
    v.unit(&units[1].1).unwrap();
    let mut bad = units[2].1.clone();
    bad[50] ^= 1;
    let e = v.unit(&bad).unwrap_err();
    let at = (units[0].1.len() + units[1].1.len()) as u64;
    assert_eq!(e.command_index(), Some(1), "{e}");
    assert_eq!(e.offset(), Some(at), "{e}");
    assert!(matches!(e, Error::Tlv(ref t) if matches!(t.kind, ErrorKind::CrcMismatch { .. })));
    v.unit(&units[2].1).unwrap();
    // Half a unit, or two units at once, are refused.
    assert!(v.unit(&units[3].1[..5]).is_err());
    let two = [units[3].1.clone(), units[4].1.clone()].concat();
    assert!(v.unit(&two).is_err());
    // A stream cut short does not finish.
    assert!(v.finish().is_err());

    // Resumed from its state at every unit boundary (the header read again
    // from where the state says), a validator takes the rest of the stream
    // as the one that went on did, errors at the same positions included.
    for k in 0..=units.len() {
        let mut v = PRSTREAM.validator();
        for (_, u) in &units[..k] {
            v.unit(u).unwrap();
        }
        let state = v.state();
        let header: &[u8] = match state.head {
            Some((at, len)) => &original[at as usize..at as usize + len as usize],
            None => &[],
        };
        let mut r = Validator::resume(PRSTREAM, state, header).unwrap();
        assert_eq!(r.state(), state);
        if let Some((_, u)) = units.get(k).filter(|_| k > 0) {
            let mut bad = u.clone();
            let n = bad.len() - 1;
            bad[n] ^= 1;
            assert_eq!(
                r.unit(&bad).map_err(|e| e.to_string()),
                v.unit(&bad).map_err(|e| e.to_string())
            );
        }
        for (_, u) in &units[k..] {
            r.unit(u).unwrap();
        }
        r.finish().unwrap();
    }
    // A header that is not the kept one's length is refused.
    let mut v = PRSTREAM.validator();
    v.unit(&units[0].1).unwrap();
    let state = v.state();
    let header = &units[0].1[..units[0].1.len() - 1];
    assert!(Validator::resume(PRSTREAM, state, header).is_err());
}

#[test]
fn bytes_after_end_and_a_cut_header_are_typed_errors() {
    let mut original = stream(&PRSTREAM, true);
    original.extend_from_slice(b"junk");
    let e = list_streams(&PRSTREAM, &mut &original[..]).unwrap_err();
    assert!(
        matches!(e, Error::Tlv(ref t) if matches!(t.kind, ErrorKind::TrailingData { len: 4 })),
        "{e}"
    );
    let mut p = PRSTREAM.units(&original[..]);
    let mut err = None;
    for _ in 0..10 {
        match p.current() {
            Ok(Some(_)) => p.advance().unwrap(),
            Ok(None) => break,
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    let e = err.expect("trailing bytes must be an error");
    assert_eq!(e.offset(), Some(original.len() as u64 - 4), "{e}");

    for cut in [3, 16, 19, 30] {
        let e = list_streams(&PRSTREAM, &mut &original[..cut]).unwrap_err();
        assert!(
            matches!(e, Error::Tlv(_) | Error::Header(_)),
            "cut {cut}: {e}"
        );
    }
    // Another format's magic.
    let e = list_streams(&PRSTREAM, &mut &b"btrfs-stream\0\x02\0\0\0"[..]).unwrap_err();
    assert!(matches!(e, Error::Header(_)), "{e}");
}

/// A downstream format: its own magic, END type and no data command.
const DEVICE: NativeFormat = NativeFormat {
    name: "device",
    fixed: FixedHeaderFormat::native(b"DEVSTATE"),
    versions: &KIT_VERSIONS,
    profile: proto_tlv::Profile {
        end_cmd: 0x00FF,
        ..PRSTREAM.profile
    },
    split: None,
    known_features: 0b11,
};

#[test]
fn a_downstream_format_goes_through_the_same_code() {
    let original = stream(&DEVICE, false);
    assert!(DEVICE.recognises(&original));
    assert!(!PRSTREAM.recognises(&original));
    let run = chunks(&DEVICE, &original, 1100);
    let joined: Vec<u8> = run.iter().flat_map(|(c, _)| c.clone()).collect();
    // Nothing is split: the output is the stream itself.
    assert_eq!(joined, original);
    assert_equal(&DEVICE, &original, &joined);
    // A command larger than the buffer, with no split rule, does not fit.
    let mut e = Emitter::new(DEVICE.producer(&original[..], 1).unwrap(), DEVICE.split()).unwrap();
    let mut buf = vec![0u8; 500];
    let mut got = None;
    for _ in 0..10 {
        match e.fill(&mut buf) {
            Ok(f) if f.ended => break,
            Ok(_) => {}
            Err(err) => {
                got = Some(err);
                break;
            }
        }
    }
    let err = got.expect("a 1000-byte command in 500-byte buffers");
    assert!(
        err.to_string().contains("needs a buffer of at least"),
        "{err}"
    );
    // A PRSTREAM token is refused by the device stream (another stream).
    let token = chunks(&PRSTREAM, &stream(&PRSTREAM, true), 4096)[3]
        .1
        .clone();
    let p = DEVICE.producer(&original[..], 1).unwrap();
    assert!(Emitter::resume(p, DEVICE.split(), &token).is_err());
}

/// One fill of an emitter into a buffer, with the token after it.
type FillFn<'a> = dyn FnMut(&mut [u8]) -> Result<(proto_checkpoint::Fill, Token), String> + 'a;

/// A stream of many small commands and two data commands, through a
/// `FormatProducer` (its header, END and safe points between runs of
/// commands): the same fills, bytes and tokens as the
/// same producer taken one unit at a time, for several buffer sizes, safe
/// point intervals and units per fill; and a damaged command in a run is
/// the same error, at the same command index and byte offset.
#[test]
fn runs_of_commands_emit_what_units_one_at_a_time_do() {
    let entry = KIT_VERSIONS.entry(1).unwrap();
    let mut w = Writer::new(Vec::new(), entry, 1, &header()).unwrap();
    for i in 0..900u32 {
        let body = vec![b'a' + (i % 26) as u8; (i * 7) as usize % 200];
        w.write_command(
            1 + (i % 3) as u16,
            &[AttrValue::new(2, Value::Bytes(&body))],
        )
        .unwrap();
        if i % 400 == 150 {
            let data: Vec<u8> = (0..20_000u32).map(|b| (b * 3) as u8).collect();
            w.write_command(
                NATIVE_DATA_CMD,
                &[
                    AttrValue::new(NATIVE_OBJECT, Value::Bytes(b"memory")),
                    AttrValue::new(NATIVE_OFFSET, Value::U64(0)),
                    AttrValue::new(NATIVE_DATA, Value::Bytes(&data)),
                ],
            )
            .unwrap();
        }
    }
    let file = w.finish().unwrap();
    let fills = |bytes: &[u8], runs: bool, size: usize, safe_every: u64, per_fill: u64| {
        let p = PRSTREAM.producer(bytes, safe_every).unwrap();
        let mut out = Vec::new();
        let mut buf = vec![0u8; size];
        let mut fill_all = |e: &mut FillFn<'_>| loop {
            match e(&mut buf) {
                Ok((f, t)) => {
                    let ended = f.ended;
                    out.push(Ok((buf[..f.written].to_vec(), f, t)));
                    if ended {
                        break;
                    }
                }
                Err(e) => {
                    out.push(Err(e));
                    break;
                }
            }
        };
        if runs {
            let mut e = Emitter::new(p, PRSTREAM.split()).unwrap();
            e.set_units_per_fill(per_fill);
            fill_all(&mut |b| e.fill(b).map(|f| (f, e.token())).map_err(|e| e.to_string()));
        } else {
            let mut e = Emitter::new(one_at_a_time(p), PRSTREAM.split()).unwrap();
            e.set_units_per_fill(per_fill);
            fill_all(&mut |b| e.fill(b).map(|f| (f, e.token())).map_err(|e| e.to_string()));
        }
        out
    };
    // The last byte of unit 500 (a command of the second stream).
    let mut units = PRSTREAM.units(&file[..]);
    for _ in 0..500 {
        units.advance().unwrap();
    }
    let u = units.current().unwrap().unwrap();
    assert!(matches!(u.kind, UnitKind::Command(_)));
    let mut damaged = file.clone();
    damaged[u.offset as usize + u.bytes.len() - 1] ^= 0x10;
    for size in [30_000usize, 64 * 1024, 300_000] {
        for safe_every in [1u64, 3, 7, 1000] {
            for per_fill in [2u64, 17, u64::MAX] {
                let what = format!(
                    "{size}-byte buffers, safe point every {safe_every}, {per_fill} a fill"
                );
                let a = fills(&file, true, size, safe_every, per_fill);
                assert!(matches!(a.last(), Some(Ok((_, f, _))) if f.ended), "{what}");
                assert_eq!(a, fills(&file, false, size, safe_every, per_fill), "{what}");
                let a = fills(&damaged, true, size, safe_every, per_fill);
                assert!(
                    matches!(a.last(), Some(Err(e)) if e.contains("CRC")),
                    "{what}: {:?}",
                    a.last()
                );
                assert_eq!(
                    a,
                    fills(&damaged, false, size, safe_every, per_fill),
                    "{what}"
                );
            }
        }
    }
}
