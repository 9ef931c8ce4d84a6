//! The kit's v1 version-specific header body.
//!
//! All integers are in the sender's byte order, announced by the endian tag
//! that opens the body:
//!
//! | offset | field | type |
//! |---|---|---|
//! | 0 | endian_tag | u32, `0x12345678` in the sender's order |
//! | 4 | features_supported | u64 bitmask |
//! | 12 | features_required | u64 bitmask |
//! | 20 | stream_id | `[u8; 16]` |
//! | 36 | context_count | u32, at most [`MAX_CONTEXTS`] |
//! | 40 | contexts | `context_count` × (`id u32 \| name_len u16 \| name`) |
//!
//! Bytes after the contexts belong to newer compatible versions and are
//! skipped.

use alloc::borrow::ToOwned;
use alloc::string::String;
use alloc::vec::Vec;

use zerocopy::byteorder::{BigEndian, ByteOrder, LittleEndian, U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::features::check_required;
use crate::fixed::Endian;
use crate::version::{ReadOptions, VersionEntry, VersionTable};
use crate::Error;

/// The endian tag's value.
pub const ENDIAN_TAG: u32 = 0x1234_5678;
/// Most contexts a v1 header may list.
pub const MAX_CONTEXTS: u32 = 256;
/// Longest context name, in bytes.
pub const MAX_CONTEXT_NAME_LEN: u16 = 1024;
/// Largest v1 body accepted (room for every context at its longest, and for
/// what newer compatible versions append).
pub const V1_MAX_BODY_LEN: u32 = 1 << 20;
/// The v1 fields, in wire order.
pub const V1_FIELDS: &[&str] = &[
    "endian_tag",
    "features_supported",
    "features_required",
    "stream_id",
    "contexts",
];

/// The fixed part of the v1 body, in byte order `O`.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub(crate) struct V1Prefix<O: ByteOrder> {
    /// [`ENDIAN_TAG`].
    pub endian_tag: U32<O>,
    /// Features the sender supports.
    pub features_supported: U64<O>,
    /// Features the reader must know.
    pub features_required: U64<O>,
    /// Identifies the stream.
    pub stream_id: [u8; 16],
    /// Number of contexts that follow.
    pub context_count: U32<O>,
}
/// Size of the fixed part of the v1 body (endian tag, features supported
/// and required, stream id, context count).
pub const V1_PREFIX_LEN: usize = 40;
const _: () = assert!(core::mem::size_of::<V1Prefix<BigEndian>>() == V1_PREFIX_LEN);

/// The head of one context entry, in byte order `O`.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub(crate) struct ContextHead<O: ByteOrder> {
    /// The context id.
    pub id: U32<O>,
    /// Bytes of UTF-8 name that follow.
    pub name_len: U16<O>,
}
/// Size of [`ContextHead`].
pub(crate) const CONTEXT_HEAD_LEN: usize = 6;
const _: () = assert!(core::mem::size_of::<ContextHead<BigEndian>>() == CONTEXT_HEAD_LEN);

/// A context the sender can produce.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Context {
    /// Its id, used in selections.
    pub id: u32,
    /// Its name (UTF-8, at most [`MAX_CONTEXT_NAME_LEN`] bytes).
    pub name: String,
}

/// The kit's v1 version-specific header.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct V1Header {
    /// The sender's byte order, detected from the endian tag.
    pub byte_order: Endian,
    /// Features the sender supports.
    pub features_supported: u64,
    /// Features the reader must know.
    pub features_required: u64,
    /// Identifies the stream.
    pub stream_id: [u8; 16],
    /// Contexts the sender can produce (ids distinct).
    pub contexts: Vec<Context>,
}

/// The kit's version table: v1.
pub static KIT_VERSIONS: VersionTable<V1Header> = VersionTable::new(&[VersionEntry {
    version: 1,
    fields: V1_FIELDS,
    max_body_len: V1_MAX_BODY_LEN,
    decode: V1Header::decode,
    encode: V1Header::encode,
}]);

impl V1Header {
    /// Decodes a v1 body (`base`: its stream offset). Trailing bytes are
    /// ignored.
    ///
    /// Errors: [`Error::Truncated`], [`Error::BadEndianTag`],
    /// [`Error::UnknownRequiredFeatures`] (required bits outside
    /// `opts.known_features`), [`Error::TooMany`] (more than
    /// [`MAX_CONTEXTS`]), [`Error::TooLong`] (a name longer than
    /// [`MAX_CONTEXT_NAME_LEN`]), [`Error::NameNotUtf8`],
    /// [`Error::DuplicateAdvertisedContext`]. Counts and lengths are checked
    /// before anything is allocated.
    pub fn decode(body: &[u8], base: u64, opts: &ReadOptions) -> Result<V1Header, Error> {
        let Some(tag) = body.get(..4) else {
            return Err(truncated("v1 header", base, V1_PREFIX_LEN, body.len()));
        };
        let tag: [u8; 4] = [tag[0], tag[1], tag[2], tag[3]];
        if tag == ENDIAN_TAG.to_be_bytes() {
            decode_in::<BigEndian>(body, base, opts, Endian::Big)
        } else if tag == ENDIAN_TAG.to_le_bytes() {
            decode_in::<LittleEndian>(body, base, opts, Endian::Little)
        } else {
            Err(Error::BadEndianTag {
                offset: base,
                found: tag,
            })
        }
    }

    /// Appends the v1 body in [`V1Header::byte_order`].
    ///
    /// Errors: [`Error::EncodeTooLong`] for more than [`MAX_CONTEXTS`]
    /// contexts or a name longer than [`MAX_CONTEXT_NAME_LEN`]. Nothing is
    /// written on error.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        if self.contexts.len() > MAX_CONTEXTS as usize {
            return Err(Error::EncodeTooLong {
                what: "context count",
                len: self.contexts.len() as u64,
                max: MAX_CONTEXTS.into(),
            });
        }
        if let Some(c) = self
            .contexts
            .iter()
            .find(|c| c.name.len() > usize::from(MAX_CONTEXT_NAME_LEN))
        {
            return Err(Error::EncodeTooLong {
                what: "context name",
                len: c.name.len() as u64,
                max: MAX_CONTEXT_NAME_LEN.into(),
            });
        }
        match self.byte_order {
            Endian::Big => self.encode_in::<BigEndian>(out),
            Endian::Little => self.encode_in::<LittleEndian>(out),
        }
        Ok(())
    }

    fn encode_in<O: ByteOrder>(&self, out: &mut Vec<u8>) {
        let prefix = V1Prefix::<O> {
            endian_tag: U32::new(ENDIAN_TAG),
            features_supported: U64::new(self.features_supported),
            features_required: U64::new(self.features_required),
            stream_id: self.stream_id,
            context_count: U32::new(self.contexts.len() as u32),
        };
        out.extend_from_slice(prefix.as_bytes());
        for c in &self.contexts {
            let head = ContextHead::<O> {
                id: U32::new(c.id),
                name_len: U16::new(c.name.len() as u16),
            };
            out.extend_from_slice(head.as_bytes());
            out.extend_from_slice(c.name.as_bytes());
        }
    }

    /// The advertised context ids, in order: what a selection
    /// ([`crate::parse_selection`]) is checked against.
    pub fn context_ids(&self) -> Vec<u32> {
        self.contexts.iter().map(|c| c.id).collect()
    }

    /// The length of the encoded body.
    pub fn encoded_len(&self) -> usize {
        V1_PREFIX_LEN
            + self
                .contexts
                .iter()
                .map(|c| CONTEXT_HEAD_LEN + c.name.len())
                .sum::<usize>()
    }
}

fn truncated(what: &'static str, offset: u64, needed: usize, available: usize) -> Error {
    Error::Truncated {
        what,
        offset,
        needed: needed as u64,
        available: available as u64,
    }
}

fn decode_in<O: ByteOrder>(
    body: &[u8],
    base: u64,
    opts: &ReadOptions,
    byte_order: Endian,
) -> Result<V1Header, Error> {
    let Ok((p, mut rest)) = V1Prefix::<O>::ref_from_prefix(body) else {
        return Err(truncated("v1 header", base, V1_PREFIX_LEN, body.len()));
    };
    let required = p.features_required.get();
    check_required(required, opts.known_features, base + 12)?;
    let count = p.context_count.get();
    if count > MAX_CONTEXTS {
        return Err(Error::TooMany {
            what: "context",
            offset: base + 36,
            count: count.into(),
            max: MAX_CONTEXTS.into(),
        });
    }
    // Every entry takes at least its head: refuse before allocating.
    let min_len = count as usize * CONTEXT_HEAD_LEN;
    if rest.len() < min_len {
        return Err(truncated(
            "v1 context list",
            base + V1_PREFIX_LEN as u64,
            min_len,
            rest.len(),
        ));
    }
    let mut contexts: Vec<Context> = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let at = base + (body.len() - rest.len()) as u64;
        let Ok((head, after)) = ContextHead::<O>::ref_from_prefix(rest) else {
            return Err(truncated("context entry", at, CONTEXT_HEAD_LEN, rest.len()));
        };
        let name_len = head.name_len.get();
        if name_len > MAX_CONTEXT_NAME_LEN {
            return Err(Error::TooLong {
                what: "context name",
                offset: at + 4,
                len: name_len.into(),
                max: MAX_CONTEXT_NAME_LEN.into(),
            });
        }
        let name_at = at + CONTEXT_HEAD_LEN as u64;
        let Some(name) = after.get(..usize::from(name_len)) else {
            return Err(truncated(
                "context name",
                name_at,
                name_len.into(),
                after.len(),
            ));
        };
        let Ok(name) = core::str::from_utf8(name) else {
            return Err(Error::NameNotUtf8 { offset: name_at });
        };
        let id = head.id.get();
        if contexts.iter().any(|c| c.id == id) {
            return Err(Error::DuplicateAdvertisedContext { offset: at, id });
        }
        contexts.push(Context {
            id,
            name: name.to_owned(),
        });
        rest = &after[usize::from(name_len)..];
    }
    Ok(V1Header {
        byte_order,
        features_supported: p.features_supported.get(),
        features_required: required,
        stream_id: p.stream_id,
        contexts,
    })
}

/// A stream id as 32 lower-case hex digits, as messages and `inspect` show
/// it.
pub fn stream_id_hex(id: &[u8; 16]) -> String {
    use core::fmt::Write as _;
    let mut s = String::with_capacity(32);
    for b in id {
        let _ = write!(s, "{b:02x}");
    }
    s
}
