//! The version table, the length-prefixed version header and the kit's v1
//! body.

use proptest::collection::vec;
use proptest::prelude::*;
use proto_header::{
    read_body, read_header, write_body, write_header, Context, Endian, Error, FixedHeaderFormat,
    ReadOptions, V1Header, VersionEntry, VersionRange, VersionTable, KIT_VERSIONS, MAX_CONTEXTS,
    MAX_CONTEXT_NAME_LEN, V1_FIELDS, V1_MAX_BODY_LEN, V1_PREFIX_LEN,
};

const FORMAT: FixedHeaderFormat = FixedHeaderFormat::native(b"PROTOSTR");
const ALL: ReadOptions = ReadOptions {
    known_features: u64::MAX,
};

fn sample(order: Endian) -> V1Header {
    V1Header {
        byte_order: order,
        features_supported: 0x8000_0000_0000_0003,
        features_required: 0x1,
        stream_id: *b"0123456789abcdef",
        contexts: vec![
            Context {
                id: 1,
                name: "base:allocation".into(),
            },
            Context {
                id: 7,
                name: "qemu:dirty-bitmap:é".into(),
            },
        ],
    }
}

fn body(h: &V1Header) -> Vec<u8> {
    let mut b = Vec::new();
    h.encode(&mut b).unwrap();
    assert_eq!(b.len(), h.encoded_len());
    b
}

#[test]
fn v1_roundtrip_both_byte_orders() {
    for order in [Endian::Big, Endian::Little] {
        let h = sample(order);
        let b = body(&h);
        let tag: &[u8] = match order {
            Endian::Big => &[0x12, 0x34, 0x56, 0x78],
            Endian::Little => &[0x78, 0x56, 0x34, 0x12],
        };
        assert_eq!(&b[..4], tag);
        assert_eq!(V1Header::decode(&b, 0, &ALL).unwrap(), h);
    }
}

#[test]
fn kit_table_has_v1_with_its_fields() {
    assert_eq!(KIT_VERSIONS.versions(), vec![1]);
    let e = KIT_VERSIONS.entry(1).unwrap();
    assert_eq!(e.fields, V1_FIELDS);
    assert_eq!(
        KIT_VERSIONS.entry(2).unwrap_err(),
        Error::NoTableEntry { version: 2 }
    );
}

#[test]
fn header_roundtrip_through_the_table() {
    let h = sample(Endian::Big);
    let mut out = Vec::new();
    write_header(&FORMAT, KIT_VERSIONS.entry(1).unwrap(), 1, &h, &mut out).unwrap();
    out.extend_from_slice(b"after");
    let r = read_header(&FORMAT, &KIT_VERSIONS, &out, &ALL).unwrap();
    assert_eq!(r.version, 1);
    assert_eq!(r.body, h);
    assert_eq!(r.len, 16 + 4 + h.encoded_len());
    assert_eq!(&out[r.len..], b"after");
}

#[test]
fn newer_compatible_writer_appends_and_reader_skips() {
    let h = sample(Endian::Little);
    let mut b = body(&h);
    b.extend_from_slice(&[0xAB; 100]);
    let mut out = Vec::new();
    FORMAT.encode(9, 1, &mut out).unwrap();
    write_body(&b, V1_MAX_BODY_LEN, &mut out).unwrap();
    out.extend_from_slice(b"tail");
    let r = read_header(&FORMAT, &KIT_VERSIONS, &out, &ALL).unwrap();
    assert_eq!(
        (r.fixed.version, r.fixed.compat_version, r.version),
        (9, 1, 1)
    );
    assert_eq!(r.body, h);
    assert_eq!(&out[r.len..], b"tail");
}

#[test]
fn truncated_and_overlong_bodies() {
    let mut out = Vec::new();
    FORMAT.encode(1, 1, &mut out).unwrap();
    // Half a length prefix.
    let mut half = out.clone();
    half.extend_from_slice(&[0, 0]);
    assert_eq!(
        read_header(&FORMAT, &KIT_VERSIONS, &half, &ALL).unwrap_err(),
        Error::Truncated {
            what: "version header length",
            offset: 16,
            needed: 4,
            available: 2
        }
    );
    // Length beyond the input.
    let b = body(&sample(Endian::Big));
    let mut full = out.clone();
    write_body(&b, V1_MAX_BODY_LEN, &mut full).unwrap();
    assert_eq!(
        read_header(&FORMAT, &KIT_VERSIONS, &full[..full.len() - 1], &ALL).unwrap_err(),
        Error::Truncated {
            what: "version header body",
            offset: 20,
            needed: b.len() as u64,
            available: b.len() as u64 - 1
        }
    );
    // Length beyond the stated maximum: refused before the body is looked at.
    let mut long = out.clone();
    long.extend_from_slice(&(V1_MAX_BODY_LEN + 1).to_be_bytes());
    assert_eq!(
        read_header(&FORMAT, &KIT_VERSIONS, &long, &ALL).unwrap_err(),
        Error::TooLong {
            what: "version header",
            offset: 16,
            len: u64::from(V1_MAX_BODY_LEN) + 1,
            max: V1_MAX_BODY_LEN.into()
        }
    );
    assert!(matches!(
        write_body(&[0; 10], 9, &mut Vec::new()),
        Err(Error::EncodeTooLong { .. })
    ));
    // A body shorter than the v1 fields.
    let mut short = out.clone();
    write_body(&b[..V1_PREFIX_LEN - 1], V1_MAX_BODY_LEN, &mut short).unwrap();
    assert_eq!(
        read_header(&FORMAT, &KIT_VERSIONS, &short, &ALL).unwrap_err(),
        Error::Truncated {
            what: "v1 header",
            offset: 20,
            needed: V1_PREFIX_LEN as u64,
            available: V1_PREFIX_LEN as u64 - 1
        }
    );
}

#[test]
fn bad_endian_tag() {
    let mut b = body(&sample(Endian::Big));
    b[..4].copy_from_slice(&[0x12, 0x34, 0x78, 0x56]);
    let err = V1Header::decode(&b, 20, &ALL).unwrap_err();
    assert_eq!(
        err,
        Error::BadEndianTag {
            offset: 20,
            found: [0x12, 0x34, 0x78, 0x56]
        }
    );
    assert!(err.to_string().contains("byte offset 20"));
}

#[test]
fn unknown_required_feature_names_the_bits() {
    let b = body(&sample(Endian::Little));
    let opts = ReadOptions { known_features: 0 };
    let err = V1Header::decode(&b, 20, &opts).unwrap_err();
    assert_eq!(
        err,
        Error::UnknownRequiredFeatures {
            offset: 32,
            unknown: 1,
            required: 1,
            known: 0
        }
    );
    assert!(err.to_string().contains("0x0000000000000001"), "{err}");
    // Supported-but-not-required features need not be known.
    let opts = ReadOptions { known_features: 1 };
    assert!(V1Header::decode(&b, 20, &opts).is_ok());
}

fn with_contexts(order: Endian, contexts: Vec<Context>) -> V1Header {
    V1Header {
        contexts,
        ..sample(order)
    }
}

#[test]
fn context_list_bounds_checked_before_allocating() {
    // A count of u32::MAX is refused from the count alone.
    let mut b = body(&with_contexts(Endian::Big, vec![]));
    b[36..40].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(
        V1Header::decode(&b, 0, &ALL).unwrap_err(),
        Error::TooMany {
            what: "context",
            offset: 36,
            count: u32::MAX.into(),
            max: MAX_CONTEXTS.into()
        }
    );
    // A count within the maximum but beyond what the bytes can hold.
    b[36..40].copy_from_slice(&MAX_CONTEXTS.to_be_bytes());
    assert!(matches!(
        V1Header::decode(&b, 0, &ALL),
        Err(Error::Truncated {
            what: "v1 context list",
            offset: 40,
            ..
        })
    ));
    // A name length above the maximum.
    let mut b = body(&with_contexts(
        Endian::Little,
        vec![Context {
            id: 3,
            name: "x".into(),
        }],
    ));
    b[44..46].copy_from_slice(&(MAX_CONTEXT_NAME_LEN + 1).to_le_bytes());
    assert_eq!(
        V1Header::decode(&b, 0, &ALL).unwrap_err(),
        Error::TooLong {
            what: "context name",
            offset: 44,
            len: u64::from(MAX_CONTEXT_NAME_LEN) + 1,
            max: MAX_CONTEXT_NAME_LEN.into()
        }
    );
    // A name running past the body.
    b[44..46].copy_from_slice(&2u16.to_le_bytes());
    assert_eq!(
        V1Header::decode(&b, 0, &ALL).unwrap_err(),
        Error::Truncated {
            what: "context name",
            offset: 46,
            needed: 2,
            available: 1
        }
    );
    // A name that is not UTF-8.
    b[44..46].copy_from_slice(&1u16.to_le_bytes());
    b[46] = 0xFF;
    assert_eq!(
        V1Header::decode(&b, 0, &ALL).unwrap_err(),
        Error::NameNotUtf8 { offset: 46 }
    );
}

#[test]
fn duplicate_advertised_context() {
    let c = Context {
        id: 5,
        name: "a".into(),
    };
    let b = body(&with_contexts(Endian::Big, vec![c.clone(), c]));
    assert_eq!(
        V1Header::decode(&b, 100, &ALL).unwrap_err(),
        Error::DuplicateAdvertisedContext { offset: 147, id: 5 }
    );
}

#[test]
fn encoder_refuses_what_the_decoder_would() {
    let many = (0..=MAX_CONTEXTS)
        .map(|id| Context {
            id,
            name: String::new(),
        })
        .collect();
    let mut out = Vec::new();
    assert!(matches!(
        with_contexts(Endian::Big, many).encode(&mut out),
        Err(Error::EncodeTooLong {
            what: "context count",
            ..
        })
    ));
    let long = vec![Context {
        id: 1,
        name: "n".repeat(usize::from(MAX_CONTEXT_NAME_LEN) + 1),
    }];
    assert!(matches!(
        with_contexts(Endian::Big, long).encode(&mut out),
        Err(Error::EncodeTooLong {
            what: "context name",
            ..
        })
    ));
    assert!(out.is_empty());
}

/// A two-version table: v2 appends a u64 to the v1 body.
#[derive(Debug, PartialEq)]
enum Hdr {
    V1(V1Header),
    V2(V1Header, u64),
}

fn dec_v1(b: &[u8], base: u64, o: &ReadOptions) -> Result<Hdr, Error> {
    V1Header::decode(b, base, o).map(Hdr::V1)
}
fn dec_v2(b: &[u8], base: u64, o: &ReadOptions) -> Result<Hdr, Error> {
    let h = V1Header::decode(b, base, o)?;
    let at = h.encoded_len();
    let Some(x) = b.get(at..at + 8) else {
        return Err(Error::Truncated {
            what: "v2 field",
            offset: base + at as u64,
            needed: 8,
            available: b.len().saturating_sub(at) as u64,
        });
    };
    let mut a = [0; 8];
    a.copy_from_slice(x);
    Ok(Hdr::V2(h, u64::from_be_bytes(a)))
}
fn enc(h: &Hdr, out: &mut Vec<u8>) -> Result<(), Error> {
    match h {
        Hdr::V1(h) => h.encode(out),
        Hdr::V2(h, x) => {
            h.encode(out)?;
            out.extend_from_slice(&x.to_be_bytes());
            Ok(())
        }
    }
}

static V1_ONLY: VersionTable<Hdr> = VersionTable::new(&[VersionEntry {
    version: 1,
    fields: V1_FIELDS,
    max_body_len: 4096,
    decode: dec_v1,
    encode: enc,
}]);
static V1_V2: VersionTable<Hdr> = VersionTable::new(&[
    VersionEntry {
        version: 1,
        fields: V1_FIELDS,
        max_body_len: 4096,
        decode: dec_v1,
        encode: enc,
    },
    VersionEntry {
        version: 2,
        fields: &[
            "endian_tag",
            "features_supported",
            "features_required",
            "stream_id",
            "contexts",
            "extra",
        ],
        max_body_len: 4096,
        decode: dec_v2,
        encode: enc,
    },
]);

#[test]
fn table_picks_one_entry_per_stream() {
    let h = sample(Endian::Big);
    let mut out = Vec::new();
    write_header(
        &FORMAT,
        V1_V2.entry(2).unwrap(),
        1,
        &Hdr::V2(h.clone(), 42),
        &mut out,
    )
    .unwrap();
    // A v1+v2 reader reads it as v2 ...
    let r = read_header(&FORMAT, &V1_V2, &out, &ALL).unwrap();
    assert_eq!((r.version, r.body), (2, Hdr::V2(h.clone(), 42)));
    // ... a v1 reader as v1, skipping the extra field.
    let r = read_header(&FORMAT, &V1_ONLY, &out, &ALL).unwrap();
    assert_eq!((r.version, r.body), (1, Hdr::V1(h.clone())));
    assert_eq!(r.len, out.len());
    assert_eq!(
        V1_V2
            .negotiate(VersionRange { min: 1, max: 1 })
            .unwrap()
            .version,
        1
    );
    assert_eq!(V1_V2.entry(2).unwrap().fields.len(), 6);
    // A breaking v3 is refused by both.
    let mut v3 = Vec::new();
    FORMAT.encode(3, 3, &mut v3).unwrap();
    write_body(&[], 4096, &mut v3).unwrap();
    assert_eq!(
        read_header(&FORMAT, &V1_V2, &v3, &ALL).unwrap_err(),
        Error::Unsupported {
            offered: VersionRange { min: 3, max: 3 },
            supported: vec![1, 2]
        }
    );
}

#[test]
fn read_body_positions() {
    let mut b = Vec::new();
    write_body(b"abc", 10, &mut b).unwrap();
    assert_eq!(read_body(&b, 7, 10).unwrap(), (&b"abc"[..], 7));
    assert_eq!(
        read_body(&b, 7, 2).unwrap_err(),
        Error::TooLong {
            what: "version header",
            offset: 7,
            len: 3,
            max: 2
        }
    );
}

fn context() -> impl Strategy<Value = Context> {
    (any::<u32>(), "\\PC{0,12}").prop_map(|(id, name)| Context { id, name })
}

fn v1() -> impl Strategy<Value = V1Header> {
    (
        any::<bool>(),
        any::<u64>(),
        any::<u64>(),
        any::<[u8; 16]>(),
        vec(context(), 0..8),
    )
        .prop_map(|(big, s, r, id, mut cs)| {
            let mut seen = std::collections::HashSet::new();
            cs.retain(|c| seen.insert(c.id));
            V1Header {
                byte_order: if big { Endian::Big } else { Endian::Little },
                features_supported: s,
                features_required: r,
                stream_id: id,
                contexts: cs,
            }
        })
}

proptest! {
    #[test]
    fn v1_decode_encode_roundtrip(h in v1(), extra in vec(any::<u8>(), 0..16)) {
        let mut b = Vec::new();
        h.encode(&mut b).unwrap();
        prop_assert_eq!(b.len(), h.encoded_len());
        b.extend_from_slice(&extra);
        prop_assert_eq!(V1Header::decode(&b, 0, &ALL).unwrap(), h);
    }

    #[test]
    fn v1_arbitrary_bytes_give_typed_errors(b in vec(any::<u8>(), 0..200), flip in any::<bool>()) {
        let mut b = b;
        if flip && b.len() >= 4 {
            b[..4].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        }
        if let Ok(h) = V1Header::decode(&b, 0, &ALL) {
            let mut again = Vec::new();
            h.encode(&mut again).unwrap();
            prop_assert_eq!(&again[..], &b[..h.encoded_len()]);
        }
    }
}
