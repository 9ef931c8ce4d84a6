//! Native streams: writer and reader over `std::io`, version negotiation
//! within compat, typed errors with positions, and the committed sample.

use proto_stream::header::{
    self, Context, Endian, ReadOptions, V1Header, VersionEntry, VersionRange, VersionTable,
    KIT_VERSIONS, V1_FIELDS, V1_MAX_BODY_LEN,
};
use proto_stream::native::{
    Error, Reader, Writer, NATIVE_END, NATIVE_MAGIC, NATIVE_MAX_PAYLOAD, PRSTREAM,
};
use proto_stream::tlv::{AttrValue, ErrorKind, OwnedCommand, Value};

#[path = "../examples/make_native_sample.rs"]
mod make_native_sample;
use make_native_sample::{data_v1, sample_header, sample_v1};

const KNOWN: ReadOptions = ReadOptions {
    known_features: 0b1,
};

/// Reads every command (END included) into owned form.
fn read_all(bytes: &[u8], opts: ReadOptions) -> Result<(u32, V1Header, Vec<OwnedCommand>), Error> {
    let mut r = Reader::new(bytes, opts)?;
    let mut out = Vec::new();
    while let Some(c) = r.next_command()? {
        out.push(OwnedCommand::from(&c));
    }
    Ok((r.version(), r.header().clone(), out))
}

fn header() -> V1Header {
    V1Header {
        byte_order: Endian::Big,
        features_supported: 0b11,
        features_required: 0b01,
        stream_id: [9; 16],
        contexts: vec![Context {
            id: 7,
            name: "ctx".into(),
        }],
    }
}

#[test]
fn round_trip() {
    let big = vec![0x5a; 60_000];
    let mut w = Writer::v1(Vec::new(), &header()).unwrap();
    w.write_command(1, &[AttrValue::new(1, Value::Bytes(b"a"))])
        .unwrap();
    w.write_command(2, &[]).unwrap();
    w.write_command(
        3,
        &[
            AttrValue::new(1, Value::U64(42)),
            AttrValue::new(2, Value::Bytes(&big)),
        ],
    )
    .unwrap();
    assert_eq!(w.commands(), 3);
    let bytes = w.finish().unwrap();
    assert_eq!(&bytes[..8], NATIVE_MAGIC);

    let mut r = Reader::new(&bytes[..], KNOWN).unwrap();
    assert_eq!((r.fixed().version, r.fixed().compat_version), (1, 1));
    assert_eq!(r.version(), 1);
    assert_eq!(r.header(), &header());
    let first = r.header_len();
    let c = r.next_command().unwrap().unwrap();
    assert_eq!((c.cmd(), c.index(), c.offset()), (1, 0, first));
    assert_eq!(c.attr(1).unwrap().value(), b"a");
    assert_eq!(r.next_command().unwrap().unwrap().cmd(), 2);
    let c = r.next_command().unwrap().unwrap();
    assert_eq!(c.require(1).unwrap().as_u64().unwrap(), 42);
    assert_eq!(c.require(2).unwrap().value(), &big[..]);
    let end = r.next_command().unwrap().unwrap();
    assert!(end.is_end());
    assert_eq!(end.cmd(), NATIVE_END);
    assert!(r.next_command().unwrap().is_none());
    assert!(r.next_command().unwrap().is_none());
    assert_eq!(r.offset(), bytes.len() as u64);
    assert_eq!(r.commands(), 4);
}

#[test]
fn writer_refuses_the_end_type_and_oversized_commands() {
    let mut w = Writer::v1(Vec::new(), &header()).unwrap();
    w.write_command(1, &[]).unwrap();
    let e = w.write_command(NATIVE_END, &[]).unwrap_err();
    assert!(matches!(e, Error::ReservedCommand { index: 1, .. }), "{e}");
    // 300 attributes of 60000 bytes: over 16 MiB.
    let v = vec![0u8; 60_000];
    let attrs: Vec<_> = (0..300)
        .map(|i| AttrValue::new(i, Value::Bytes(&v)))
        .collect();
    let e = w.write_command(5, &attrs).unwrap_err();
    match e {
        Error::Tlv(e) => {
            assert!(matches!(
                e.kind,
                ErrorKind::Oversized {
                    cmd: 5,
                    max: NATIVE_MAX_PAYLOAD,
                    ..
                }
            ));
            assert_eq!(e.index, 1);
        }
        e => panic!("{e}"),
    }
    // Nothing was written by the refused commands.
    let bytes = w.finish().unwrap();
    let (_, _, cmds) = read_all(&bytes, KNOWN).unwrap();
    assert_eq!(cmds.len(), 2);
}

/// A v2 writer: the v1 body plus a field that v2 appended.
fn encode_v2(h: &V1Header, out: &mut Vec<u8>) -> Result<(), header::Error> {
    h.encode(out)?;
    out.extend_from_slice(b"v2 appended this");
    Ok(())
}

static V2: VersionEntry<V1Header> = VersionEntry {
    version: 2,
    fields: V1_FIELDS,
    max_body_len: V1_MAX_BODY_LEN,
    decode: V1Header::decode,
    encode: encode_v2,
};

#[test]
fn v1_reader_reads_a_v2_stream_within_compat() {
    let mut w = Writer::new(Vec::new(), &V2, 1, &header()).unwrap();
    w.write_command(1, &[AttrValue::new(1, Value::U32(5))])
        .unwrap();
    let bytes = w.finish().unwrap();

    let mut r = Reader::new(&bytes[..], KNOWN).unwrap();
    assert_eq!((r.fixed().version, r.fixed().compat_version), (2, 1));
    assert_eq!(r.version(), 1);
    assert_eq!(r.header(), &header());
    let c = r.next_command().unwrap().unwrap();
    assert_eq!(c.require(1).unwrap().as_u32().unwrap(), 5);
    assert!(r.next_command().unwrap().unwrap().is_end());

    // A reader with a two-entry table chooses v2.
    static BOTH: VersionTable<V1Header> = VersionTable::new(&[
        VersionEntry {
            version: 1,
            fields: V1_FIELDS,
            max_body_len: V1_MAX_BODY_LEN,
            decode: V1Header::decode,
            encode: V1Header::encode,
        },
        VersionEntry {
            version: 2,
            fields: V1_FIELDS,
            max_body_len: V1_MAX_BODY_LEN,
            decode: V1Header::decode,
            encode: encode_v2,
        },
    ]);
    let r = Reader::with_table(&bytes[..], &BOTH, KNOWN).unwrap();
    assert_eq!(r.version(), 2);
}

#[test]
fn a_breaking_version_is_refused() {
    static V3: VersionEntry<V1Header> = VersionEntry {
        version: 3,
        fields: V1_FIELDS,
        max_body_len: V1_MAX_BODY_LEN,
        decode: V1Header::decode,
        encode: encode_v2,
    };
    let bytes = Writer::new(Vec::new(), &V3, 3, &header())
        .unwrap()
        .finish()
        .unwrap();
    let e = Reader::new(&bytes[..], KNOWN).unwrap_err();
    match &e {
        Error::Header(header::Error::Unsupported { offered, supported }) => {
            assert_eq!(*offered, VersionRange { min: 3, max: 3 });
            assert_eq!(supported, &vec![1]);
        }
        e => panic!("{e}"),
    }
    assert_eq!(
        e.to_string(),
        "stream header: unsupported: the stream offers versions 3..=3, this reader supports {1}"
    );
    assert_eq!(KIT_VERSIONS.versions(), vec![1]);
}

#[test]
fn unknown_required_feature_is_refused() {
    let bytes = sample_v1();
    let e = Reader::new(&bytes[..], ReadOptions { known_features: 0 }).unwrap_err();
    match e {
        Error::Header(header::Error::UnknownRequiredFeatures {
            unknown, offset, ..
        }) => {
            assert_eq!(unknown, 0b1);
            // fixed header 16 + length prefix 4 + features_required at 12.
            assert_eq!(offset, 32);
        }
        e => panic!("{e}"),
    }
}

#[test]
fn truncation_at_every_offset_is_an_error() {
    let bytes = sample_v1();
    for n in 0..bytes.len() {
        let e = read_all(&bytes[..n], KNOWN).unwrap_err();
        assert!(e.offset().is_some(), "cut at {n}: {e}");
        if n >= Reader::new(&bytes[..], KNOWN).unwrap().header_len() as usize {
            assert!(matches!(e, Error::Tlv(_)), "cut at {n}: {e}");
        } else {
            assert!(matches!(e, Error::Header(_)), "cut at {n}: {e}");
        }
    }
    assert!(read_all(&bytes, KNOWN).is_ok());
}

#[test]
fn missing_end_and_trailing_data_are_errors() {
    let bytes = sample_v1();
    let end_at = bytes.len() - 10;
    let e = read_all(&bytes[..end_at], KNOWN).unwrap_err();
    match e {
        Error::Tlv(e) => {
            assert_eq!(e.kind, ErrorKind::MissingEnd);
            assert_eq!((e.index, e.offset), (4, end_at as u64));
        }
        e => panic!("{e}"),
    }
    let mut more = bytes.clone();
    more.push(0);
    let e = read_all(&more, KNOWN).unwrap_err();
    assert!(
        matches!(e, Error::TrailingData { index: 5, offset } if offset == bytes.len() as u64),
        "{e}"
    );
}

#[test]
fn a_flipped_byte_is_a_crc_error_naming_command_and_offset() {
    let bytes = sample_v1();
    let mut r = Reader::new(&bytes[..], KNOWN).unwrap();
    let mut offsets = Vec::new();
    while let Some(c) = r.next_command().unwrap() {
        offsets.push((c.offset(), c.encoded_len()));
    }
    // Flip the last payload byte of command 1.
    let (at, len) = offsets[1];
    let mut bad = bytes.clone();
    bad[at as usize + len - 1] ^= 0x40;
    let e = read_all(&bad, KNOWN).unwrap_err();
    assert_eq!(e.command_index(), Some(1));
    assert_eq!(e.offset(), Some(at));
    match &e {
        Error::Tlv(t) => assert!(matches!(t.kind, ErrorKind::CrcMismatch { cmd: 2, .. })),
        e => panic!("{e}"),
    }
    assert!(e
        .to_string()
        .contains(&format!("command 1, byte offset {at}")));
    // Every single flipped bit in the commands is an error (the headers
    // carry no CRC: a flipped feature or stream id bit reads as another value).
    for i in offsets[0].0 as usize..bytes.len() {
        let mut bad = bytes.clone();
        bad[i] ^= 1;
        assert!(read_all(&bad, KNOWN).is_err(), "flip at {i}");
    }
}

#[test]
fn an_oversized_declared_length_is_refused_before_reading() {
    let bytes = sample_v1();
    let first = Reader::new(&bytes[..], KNOWN).unwrap().header_len() as usize;
    let mut bad = bytes[..first].to_vec();
    bad.extend_from_slice(&(NATIVE_MAX_PAYLOAD + 1).to_le_bytes());
    bad.extend_from_slice(&[1, 0, 0, 0, 0, 0]);
    let e = read_all(&bad, KNOWN).unwrap_err();
    match e {
        Error::Tlv(e) => {
            assert!(matches!(e.kind, ErrorKind::Oversized { .. }));
            assert_eq!((e.index, e.offset), (0, first as u64));
        }
        e => panic!("{e}"),
    }
    // A version header longer than allowed is refused from its prefix.
    let mut bad = Vec::new();
    PRSTREAM.fixed.encode(1, 1, &mut bad).unwrap();
    bad.extend_from_slice(&(V1_MAX_BODY_LEN + 1).to_be_bytes());
    let e = Reader::new(&bad[..], KNOWN).unwrap_err();
    assert!(
        matches!(e, Error::Header(header::Error::TooLong { offset: 16, .. })),
        "{e}"
    );
    // Wrong magic.
    let e = Reader::new(&b"btrfs-stream\0\x02\0\0\0"[..], KNOWN).unwrap_err();
    assert!(
        matches!(e, Error::Header(header::Error::BadMagic { offset: 0, .. })),
        "{e}"
    );
}

#[test]
fn committed_sample_matches_the_example() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/native/sample-v1.stream"
    );
    let committed = std::fs::read(path).unwrap();
    assert!(
        committed == sample_v1(),
        "testdata/native/sample-v1.stream is stale: cargo run --example make_native_sample"
    );
    let (version, h, cmds) = read_all(&committed, KNOWN).unwrap();
    assert_eq!((version, h), (1, sample_header()));
    let types: Vec<u16> = cmds.iter().map(|c| c.cmd).collect();
    assert_eq!(types, [1, 2, 3, 0x0100, NATIVE_END]);

    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/native/data-v1.stream"
    );
    let committed = std::fs::read(path).unwrap();
    assert!(
        committed == data_v1(),
        "testdata/native/data-v1.stream is stale: cargo run --example make_native_sample"
    );
    let (_, _, cmds) = read_all(&committed, KNOWN).unwrap();
    let data: Vec<usize> = cmds
        .iter()
        .filter(|c| c.cmd == proto_stream::native::NATIVE_DATA_CMD)
        .map(|c| c.attrs.iter().map(|(_, v)| v.len()).sum::<usize>())
        .collect();
    assert_eq!(data.len(), 3);
    assert!(data.iter().all(|len| *len > 64 * 1024), "{data:?}");
}

/// Hands out one byte per `read` call.
struct OneByte<'a>(&'a [u8]);

impl std::io::Read for OneByte<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match (self.0.split_first(), buf.first_mut()) {
            (Some((b, rest)), Some(dst)) => {
                *dst = *b;
                self.0 = rest;
                Ok(1)
            }
            _ => Ok(0),
        }
    }
}

#[test]
fn short_reads_give_the_same_stream() {
    let bytes = sample_v1();
    let mut r = Reader::new(OneByte(&bytes), KNOWN).unwrap();
    assert_eq!(r.header(), &sample_header());
    let mut got = Vec::new();
    while let Some(c) = r.next_command().unwrap() {
        got.push(OwnedCommand::from(&c));
    }
    assert_eq!(got, read_all(&bytes, KNOWN).unwrap().2);
    // Truncated, read one byte at a time: still an error at every cut.
    for n in 0..bytes.len() {
        let r = Reader::new(OneByte(&bytes[..n]), KNOWN);
        let e = match r {
            Err(e) => e,
            Ok(mut r) => loop {
                match r.next_command() {
                    Ok(Some(_)) => {}
                    Ok(None) => panic!("cut at {n} read as complete"),
                    Err(e) => break e,
                }
            },
        };
        assert!(e.offset().is_some(), "cut at {n}: {e}");
    }
}
