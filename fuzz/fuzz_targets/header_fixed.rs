//! `header_fixed`: arbitrary bytes as a fixed header.
//!
//! Properties:
//! - no panic; every error is one of the typed fixed-header errors
//!   (`Truncated`, `BadMagic`, `CompatAboveVersion`) at byte offset 0, and
//!   its message says so;
//! - `FixedHeader::parse` and `FixedHeaderFormat::native(..).parse` agree,
//!   on the input and on the input with its first 8 bytes replaced by the
//!   magic (so that the version fields are reached on every input);
//! - a parsed header re-encodes to the same 16 bytes (17 for `BTRFS`, and
//!   the same for a narrow little-endian format).
#![cfg_attr(fuzzing, no_main)]

#[macro_use]
#[path = "common/harness.rs"]
mod harness;

use proto_header::{
    Endian, Error, FixedHeader, FixedHeaderFormat, IntField, ParsedFixed, Width, BTRFS,
    FIXED_HEADER_LEN,
};
use zerocopy::IntoBytes;

const MAGIC: &[u8; 8] = b"PROTOSTR";

const NARROW: FixedHeaderFormat = FixedHeaderFormat {
    magic: b"N",
    version: IntField {
        width: Width::U16,
        endian: Endian::Little,
    },
    compat: Some(IntField {
        width: Width::U8,
        endian: Endian::Big,
    }),
};

fn check_error(e: &Error) {
    let offset = match e {
        Error::Truncated { offset, .. }
        | Error::BadMagic { offset, .. }
        | Error::CompatAboveVersion { offset, .. } => *offset,
        other => panic!("unexpected fixed-header error {other:?}"),
    };
    assert_eq!(offset, 0);
    let msg = e.to_string();
    assert!(msg.contains("byte offset 0"), "{msg}");
}

/// Parses with `format`; on success re-encodes and compares.
fn through(format: &FixedHeaderFormat, data: &[u8]) -> Result<ParsedFixed, Error> {
    let r = format.parse(data);
    match &r {
        Ok(p) => {
            assert_eq!(p.len, format.encoded_len());
            assert!(p.compat_version <= p.version);
            if format.compat.is_none() {
                assert_eq!(p.compat_version, p.version);
            }
            let mut enc = Vec::new();
            format
                .encode(p.version, p.compat_version, &mut enc)
                .expect("re-encoding a parsed header");
            assert_eq!(&enc[..], &data[..p.len]);
        }
        Err(e) => check_error(e),
    }
    r
}

fn native(magic: &'static [u8; 8], data: &[u8]) {
    let format = FixedHeaderFormat::native(magic);
    let generic = through(&format, data);
    let typed = FixedHeader::parse(data, magic);
    match (&generic, &typed) {
        (Ok(p), Ok((h, rest))) => {
            assert_eq!(p.len, FIXED_HEADER_LEN);
            assert_eq!(h.range(), p.range());
            assert_eq!(h.as_bytes(), &data[..FIXED_HEADER_LEN]);
            assert_eq!(*rest, &data[FIXED_HEADER_LEN..]);
            let again = FixedHeader::new(*magic, p.version, p.compat_version);
            assert_eq!(again.as_bytes(), &data[..FIXED_HEADER_LEN]);
        }
        (Err(a), Err(b)) => assert_eq!(a, b),
        _ => panic!("FixedHeader::parse {typed:?} and the native format {generic:?} disagree"),
    }
}

target!(|data: &[u8]| {
    native(MAGIC, data);
    if data.len() >= 8 {
        // The same input with the right magic: the version fields are reached.
        let mut fixed = data.to_vec();
        fixed[..8].copy_from_slice(MAGIC);
        native(MAGIC, &fixed);
    }
    let _ = through(&BTRFS, data);
    let _ = through(&NARROW, data);
});
