//! `header_version`: the version-specific header through the kit's table.
//!
//! - `Raw`: arbitrary bytes as a length-prefixed version header read by the
//!   v1 entry of `KIT_VERSIONS` (with the reader's known features from the
//!   input). Properties: no panic; errors are typed and positioned inside
//!   the input (offset ≤ base + input length); a decoded header re-encodes to
//!   the bytes it was read from (its known prefix; the rest of the body was
//!   skipped as appended by a newer writer).
//! - `Structured`: an arbitrary `V1Header` (either byte order), written
//!   with a fixed header offering `[compat, version]` around 1, with bytes
//!   appended to its body. Properties: `decode(encode(x)) == x` through
//!   `read_header`, `len` covers both headers, and a writer whose range
//!   excludes 1 is refused with `Unsupported`.
#![cfg_attr(fuzzing, no_main)]

#[macro_use]
#[path = "common/harness.rs"]
mod harness;

use arbitrary::Arbitrary;
use proto_header::{
    read_header, write_body, Context, Endian, Error, FixedHeaderFormat, ReadOptions, V1Header,
    VersionRange, KIT_VERSIONS, LEN_PREFIX, MAX_CONTEXTS, MAX_CONTEXT_NAME_LEN, V1_MAX_BODY_LEN,
};

const FORMAT: FixedHeaderFormat = FixedHeaderFormat::native(b"PROTOSTR");

#[derive(Arbitrary, Debug)]
enum Input {
    Raw {
        known_features: u64,
        base: u32,
        bytes: Vec<u8>,
    },
    Structured {
        big_endian: bool,
        features_supported: u64,
        features_required: u64,
        stream_id: [u8; 16],
        contexts: Vec<(u32, String)>,
        appended: Vec<u8>,
        version: u8,
        compat: u8,
    },
}

fn offset_of(e: &Error) -> Option<u64> {
    match e {
        Error::Truncated { offset, .. }
        | Error::TooLong { offset, .. }
        | Error::BadEndianTag { offset, .. }
        | Error::UnknownRequiredFeatures { offset, .. }
        | Error::TooMany { offset, .. }
        | Error::NameNotUtf8 { offset }
        | Error::DuplicateAdvertisedContext { offset, .. } => Some(*offset),
        _ => None,
    }
}

target!(|input: Input| {
    let entry = KIT_VERSIONS.entry(1).expect("v1 entry");
    match input {
        Input::Raw {
            known_features,
            base,
            bytes,
        } => {
            let base = u64::from(base);
            let opts = ReadOptions { known_features };
            match entry.read(&bytes, base, &opts) {
                Ok((h, used)) => {
                    assert!(used <= bytes.len());
                    assert_eq!(h.features_required & !known_features, 0);
                    let mut body = Vec::new();
                    h.encode(&mut body).expect("re-encoding a decoded header");
                    assert_eq!(body.len(), h.encoded_len());
                    let start = LEN_PREFIX;
                    assert_eq!(&body[..], &bytes[start..start + body.len()]);
                    assert!(start + body.len() <= used);
                }
                Err(e) => {
                    let offset = offset_of(&e)
                        .unwrap_or_else(|| panic!("unexpected version header error {e:?}"));
                    assert!(
                        offset >= base && offset <= base + bytes.len() as u64,
                        "{e:?}"
                    );
                    let msg = e.to_string();
                    assert!(msg.contains(&format!("byte offset {offset}")), "{msg}");
                }
            }
        }
        Input::Structured {
            big_endian,
            features_supported,
            features_required,
            stream_id,
            contexts,
            appended,
            version,
            compat,
        } => {
            let mut cs: Vec<Context> = Vec::new();
            for (id, mut name) in contexts.into_iter().take(MAX_CONTEXTS as usize) {
                if cs.iter().any(|c| c.id == id) {
                    continue;
                }
                while name.len() > usize::from(MAX_CONTEXT_NAME_LEN) {
                    name.pop();
                }
                cs.push(Context { id, name });
            }
            let h = V1Header {
                byte_order: if big_endian {
                    Endian::Big
                } else {
                    Endian::Little
                },
                features_supported,
                features_required,
                stream_id,
                contexts: cs,
            };
            let mut body = Vec::new();
            h.encode(&mut body).expect("encoding a valid header");
            assert_eq!(body.len(), h.encoded_len());
            body.extend_from_slice(&appended);
            let (version, compat) = (u32::from(version % 4), u32::from(compat % 4));
            let (compat, version) = (compat.min(version), compat.max(version));
            let mut stream = Vec::new();
            FORMAT
                .encode(version, compat, &mut stream)
                .expect("fixed header");
            write_body(&body, V1_MAX_BODY_LEN, &mut stream).expect("body fits");
            stream.extend_from_slice(b"payload");
            let opts = ReadOptions {
                known_features: features_required,
            };
            match read_header(&FORMAT, &KIT_VERSIONS, &stream, &opts) {
                Ok(r) => {
                    assert!(compat <= 1 && 1 <= version);
                    assert_eq!(r.version, 1);
                    assert_eq!(r.body, h);
                    assert_eq!(r.len, stream.len() - b"payload".len());
                }
                Err(e) => {
                    assert!(!(compat <= 1 && 1 <= version), "refused {e:?}");
                    assert_eq!(
                        e,
                        Error::Unsupported {
                            offered: VersionRange {
                                min: compat,
                                max: version
                            },
                            supported: vec![1],
                        }
                    );
                }
            }
            // A reader that knows none of the required bits names them all.
            if features_required != 0 {
                let err = read_header(
                    &FORMAT,
                    &KIT_VERSIONS,
                    &stream,
                    &ReadOptions { known_features: 0 },
                );
                if compat <= 1 && 1 <= version {
                    assert!(matches!(
                        err,
                        Err(Error::UnknownRequiredFeatures { unknown, offset: 32, .. })
                            if unknown == features_required
                    ));
                }
            }
        }
    }
});
