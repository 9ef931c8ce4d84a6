//! The native fixed header, the generic format, and btrfs's header on real
//! streams.

use proto_header::{
    Endian, Error, FixedHeader, FixedHeaderFormat, IntField, ParsedFixed, Width, BTRFS,
    FIXED_HEADER_LEN,
};
use zerocopy::IntoBytes;

const MAGIC: &[u8; 8] = b"PROTOSTR";
const NATIVE: FixedHeaderFormat = FixedHeaderFormat::native(MAGIC);

#[test]
fn native_layout_is_big_endian() {
    let h = FixedHeader::new(*MAGIC, 0x0102_0304, 0x0000_0102);
    let bytes = h.as_bytes();
    assert_eq!(bytes.len(), FIXED_HEADER_LEN);
    assert_eq!(&bytes[..8], MAGIC);
    assert_eq!(&bytes[8..], &[1, 2, 3, 4, 0, 0, 1, 2]);
    let mut enc = Vec::new();
    NATIVE.encode(0x0102_0304, 0x102, &mut enc).unwrap();
    assert_eq!(enc, bytes);
}

#[test]
fn native_parse_both_ways_agree() {
    let mut bytes = FixedHeader::new(*MAGIC, 5, 2).as_bytes().to_vec();
    bytes.extend_from_slice(b"rest");
    let (h, rest) = FixedHeader::parse(&bytes, MAGIC).unwrap();
    assert_eq!((h.version.get(), h.compat_version.get()), (5, 2));
    assert_eq!(rest, b"rest");
    assert_eq!(h.range(), NATIVE.parse(&bytes).unwrap().range());
    assert_eq!(
        NATIVE.parse(&bytes).unwrap(),
        ParsedFixed {
            version: 5,
            compat_version: 2,
            len: 16
        }
    );
}

#[test]
fn wrong_magic_shows_the_bytes_found() {
    let bytes = FixedHeader::new(*b"NOTMAGIC", 1, 1).as_bytes().to_vec();
    let want = Error::BadMagic {
        offset: 0,
        found: b"NOTMAGIC".to_vec(),
        expected: MAGIC.to_vec(),
    };
    assert_eq!(FixedHeader::parse(&bytes, MAGIC).unwrap_err(), want);
    let err = NATIVE.parse(&bytes).unwrap_err();
    assert_eq!(err, want);
    let msg = err.to_string();
    assert!(msg.contains("found \"NOTMAGIC\""), "{msg}");
    assert!(msg.contains("byte offset 0"), "{msg}");
}

#[test]
fn compat_above_version_is_refused() {
    let bytes = FixedHeader::new(*MAGIC, 2, 3).as_bytes().to_vec();
    let want = Error::CompatAboveVersion {
        offset: 0,
        version: 2,
        compat_version: 3,
    };
    assert_eq!(FixedHeader::parse(&bytes, MAGIC).unwrap_err(), want);
    assert_eq!(NATIVE.parse(&bytes).unwrap_err(), want);
    assert_eq!(NATIVE.encode(2, 3, &mut Vec::new()).unwrap_err(), want);
}

#[test]
fn short_input_says_needed_and_available() {
    let bytes = FixedHeader::new(*MAGIC, 1, 1).as_bytes().to_vec();
    for n in 0..FIXED_HEADER_LEN {
        let want = Error::Truncated {
            what: "fixed header",
            offset: 0,
            needed: 16,
            available: n as u64,
        };
        assert_eq!(FixedHeader::parse(&bytes[..n], MAGIC).unwrap_err(), want);
        assert_eq!(NATIVE.parse(&bytes[..n]).unwrap_err(), want);
    }
}

#[test]
fn btrfs_format_reads_real_streams() {
    for (bytes, version) in [
        (
            &include_bytes!("../../testdata/btrfs/incr-v1.stream")[..],
            1,
        ),
        (
            &include_bytes!("../../testdata/btrfs/incr-v2.stream")[..],
            2,
        ),
        (
            &include_bytes!("../../testdata/btrfs/nodata-v2.stream")[..],
            2,
        ),
    ] {
        let p = BTRFS.parse(bytes).unwrap();
        assert_eq!(
            p,
            ParsedFixed {
                version,
                compat_version: version,
                len: 17
            }
        );
        let mut enc = Vec::new();
        BTRFS.encode(version, version, &mut enc).unwrap();
        assert_eq!(enc, &bytes[..17]);
    }
    assert_eq!(BTRFS.encoded_len(), 17);
}

#[test]
fn btrfs_format_errors() {
    let bytes = include_bytes!("../../testdata/btrfs/incr-v1.stream");
    assert_eq!(
        BTRFS.parse(&bytes[..16]).unwrap_err(),
        Error::Truncated {
            what: "fixed header",
            offset: 0,
            needed: 17,
            available: 16
        }
    );
    let mut bad = bytes[..17].to_vec();
    bad[0] = b'B';
    assert!(
        matches!(BTRFS.parse(&bad), Err(Error::BadMagic { ref found, .. }) if found == b"Btrfs-stream\0")
    );
    // No compat field: compat_version must equal version.
    assert!(matches!(
        BTRFS.encode(3, 1, &mut Vec::new()),
        Err(Error::EncodeTooLong { .. })
    ));
}

#[test]
fn narrow_and_little_endian_fields() {
    const F: FixedHeaderFormat = FixedHeaderFormat {
        magic: b"XY",
        version: IntField {
            width: Width::U16,
            endian: Endian::Little,
        },
        compat: Some(IntField {
            width: Width::U8,
            endian: Endian::Big,
        }),
    };
    let mut out = Vec::new();
    F.encode(0x0102, 7, &mut out).unwrap();
    assert_eq!(out, b"XY\x02\x01\x07");
    assert_eq!(
        F.parse(&out).unwrap(),
        ParsedFixed {
            version: 0x102,
            compat_version: 7,
            len: 5
        }
    );
    assert!(matches!(
        F.encode(0x1_0000, 1, &mut Vec::new()),
        Err(Error::EncodeTooLong { .. })
    ));
    assert!(matches!(
        F.encode(0x1000, 0x100, &mut Vec::new()),
        Err(Error::EncodeTooLong { .. })
    ));
}

proptest::proptest! {
    #[test]
    fn native_parse_encode_roundtrip(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..40)) {
        match NATIVE.parse(&bytes) {
            Ok(p) => {
                let mut enc = Vec::new();
                NATIVE.encode(p.version, p.compat_version, &mut enc).unwrap();
                proptest::prop_assert_eq!(&enc[..], &bytes[..16]);
            }
            Err(e) => {
                let typed = matches!(
                    e,
                    Error::Truncated { .. } | Error::BadMagic { .. } | Error::CompatAboveVersion { .. }
                );
                proptest::prop_assert!(typed, "{:?}", e);
            }
        }
    }

    #[test]
    fn native_encode_parse_roundtrip(v in proptest::num::u32::ANY, c in proptest::num::u32::ANY) {
        let mut enc = Vec::new();
        match NATIVE.encode(v, c, &mut enc) {
            Ok(()) => {
                let p = NATIVE.parse(&enc).unwrap();
                proptest::prop_assert_eq!((p.version, p.compat_version, p.len), (v, c, 16));
            }
            Err(e) => {
                proptest::prop_assert!(c > v);
                let typed = matches!(e, Error::CompatAboveVersion { .. });
                proptest::prop_assert!(typed, "{:?}", e);
                proptest::prop_assert!(enc.is_empty());
            }
        }
    }
}
