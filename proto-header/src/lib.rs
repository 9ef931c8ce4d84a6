//! # proto-header: fixed header, versions, features and contexts
//!
//! The front of a versioned stream, after passt's migration versioning:
//!
//! 1. A **fixed header** that never changes ([`FixedHeader`], 16 bytes,
//!    big-endian): `magic [u8; 8] | version u32 | compat_version u32`. The
//!    writer says which version it wrote and the oldest version whose
//!    readers can still read it. Foreign fixed headers are described with
//!    the same crate ([`FixedHeaderFormat`]; [`BTRFS`] is btrfs's
//!    `b"btrfs-stream\0"` + u32 LE version, without a compat field).
//! 2. **Negotiation**: a reader picks the highest version it supports in
//!    `[compat_version, version]` ([`negotiate`]); two peers pick the
//!    highest version in both ranges ([`negotiate_two_way`]).
//! 3. A **version-specific header**, length-prefixed (`len u32 BE | body`),
//!    defined per version by one [`VersionEntry`] in a [`VersionTable`]: a
//!    reader decodes the fields its version knows and skips what a newer
//!    compatible writer appended. The kit's v1 body ([`V1Header`], table
//!    [`KIT_VERSIONS`]) carries an endian tag, features supported and
//!    required, a stream id and the contexts the sender can produce.
//! 4. **Features and contexts**: a required feature the reader does not know
//!    is refused naming the bits ([`check_required`]); a feature is advertised
//!    only when what it depends on is ([`advertised`]); a peer selects
//!    negotiated contexts by id ([`parse_selection`]).
//!
//! Everything is sans-IO over `&[u8]`; errors ([`Error`]) are typed and say
//! at which byte offset they were found.
//!
//! Without its default `std` feature the crate is `no_std` (it needs
//! `alloc`), with nothing missing.
//!
//! ```
//! use proto_header::{
//!     read_header, write_body, Context, Endian, Error, FixedHeaderFormat, ReadOptions,
//!     V1Header, VersionRange, KIT_VERSIONS, V1_MAX_BODY_LEN,
//! };
//!
//! const FORMAT: FixedHeaderFormat = FixedHeaderFormat::native(b"PROTOSTR");
//! let v1_body = V1Header {
//!     byte_order: Endian::Little,
//!     features_supported: 0b11,
//!     features_required: 0b01,
//!     stream_id: [7; 16],
//!     contexts: vec![Context { id: 1, name: "base:allocation".into() }],
//! };
//!
//! // A v2 writer: version 2, compatible with v1 readers (compat_version 1).
//! // Its version header is the v1 body plus a field v2 appended.
//! let mut body = Vec::new();
//! v1_body.encode(&mut body).unwrap();
//! body.extend_from_slice(b"v2 appended this");
//! let mut stream = Vec::new();
//! FORMAT.encode(2, 1, &mut stream).unwrap();
//! write_body(&body, V1_MAX_BODY_LEN, &mut stream).unwrap();
//! stream.extend_from_slice(b"payload...");
//!
//! // A v1 reader (it knows feature bit 0) reads it as version 1, skipping
//! // what v2 appended.
//! let opts = ReadOptions { known_features: 0b01 };
//! let h = read_header(&FORMAT, &KIT_VERSIONS, &stream, &opts).unwrap();
//! assert_eq!((h.fixed.version, h.fixed.compat_version, h.version), (2, 1, 1));
//! assert_eq!(h.body, v1_body);
//! assert_eq!(&stream[h.len..], b"payload...");
//!
//! // A breaking v3 (compat_version 3): the v1 reader refuses it.
//! let mut v3 = Vec::new();
//! FORMAT.encode(3, 3, &mut v3).unwrap();
//! write_body(&body, V1_MAX_BODY_LEN, &mut v3).unwrap();
//! let err = read_header(&FORMAT, &KIT_VERSIONS, &v3, &opts).unwrap_err();
//! assert_eq!(err, Error::Unsupported {
//!     offered: VersionRange { min: 3, max: 3 },
//!     supported: vec![1],
//! });
//! assert_eq!(
//!     err.to_string(),
//!     "unsupported: the stream offers versions 3..=3, this reader supports {1}"
//! );
//! ```
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

mod contexts;
mod error;
mod features;
mod fixed;
mod negotiate;
mod v1;
mod version;

pub use contexts::{encode_selection, parse_selection};
pub use error::Error;
pub use features::{advertised, check_required, FeatureDep};
pub use fixed::{
    Endian, FixedHeader, FixedHeaderFormat, IntField, ParsedFixed, Width, BTRFS, FIXED_HEADER_LEN,
};
pub use negotiate::{negotiate, negotiate_two_way, VersionRange};
pub use v1::{
    stream_id_hex, Context, V1Header, ENDIAN_TAG, KIT_VERSIONS, MAX_CONTEXTS, MAX_CONTEXT_NAME_LEN,
    V1_FIELDS, V1_MAX_BODY_LEN, V1_PREFIX_LEN,
};
pub use version::{
    read_body, read_header, write_body, write_header, DecodeFn, EncodeFn, Header, ReadOptions,
    VersionEntry, VersionTable, LEN_PREFIX,
};
