//! The version table and the length-prefixed version-specific header.
//!
//! Everything about one version lives in one [`VersionEntry`] (the passt
//! lesson): its number, the fields its header carries, the largest body
//! accepted, and its codec. A reader looks the negotiated version up once
//! ([`VersionTable::negotiate`]) and keeps the entry.
//!
//! On the wire the version-specific header follows the fixed header as
//! `len u32 BE | body[len]`. A reader decodes the fields its version knows
//! from the body and skips the rest, which a newer compatible writer may
//! have appended.

use alloc::vec::Vec;

use zerocopy::byteorder::{BigEndian, U32};
use zerocopy::{FromBytes, IntoBytes};

use crate::fixed::{FixedHeaderFormat, ParsedFixed};
use crate::negotiate::{negotiate, VersionRange};
use crate::Error;

/// Size of the version header's length prefix.
pub const LEN_PREFIX: usize = 4;

/// What a reader brings to decoding a version header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// Feature bits this reader knows; a required feature outside them is
    /// an error ([`Error::UnknownRequiredFeatures`]).
    pub known_features: u64,
}

/// Decodes a version header body: `(body, offset of the body, options)`.
pub type DecodeFn<H> = fn(&[u8], u64, &ReadOptions) -> Result<H, Error>;
/// Appends a version header body.
pub type EncodeFn<H> = fn(&H, &mut Vec<u8>) -> Result<(), Error>;

/// Everything about one version.
#[derive(Debug)]
pub struct VersionEntry<H: 'static> {
    /// The version number.
    pub version: u32,
    /// The fields this version's header carries, in wire order.
    pub fields: &'static [&'static str],
    /// Largest body accepted (a longer declared length is an error before
    /// anything else is read).
    pub max_body_len: u32,
    /// Body decoder: reads the fields it knows, ignores trailing bytes.
    pub decode: DecodeFn<H>,
    /// Body encoder.
    pub encode: EncodeFn<H>,
}

impl<H> VersionEntry<H> {
    /// Reads a length-prefixed version header at the start of `bytes`
    /// (`base` is the offset of `bytes` in the stream). Returns the decoded
    /// header and the bytes taken (prefix and whole body, appended fields
    /// included).
    ///
    /// Errors: [`Error::Truncated`], [`Error::TooLong`], and whatever the
    /// body decoder refuses.
    pub fn read(&self, bytes: &[u8], base: u64, opts: &ReadOptions) -> Result<(H, usize), Error> {
        let (body, used) = read_body(bytes, base, self.max_body_len)?;
        let h = (self.decode)(body, base + LEN_PREFIX as u64, opts)?;
        Ok((h, used))
    }

    /// Appends `h` as a length-prefixed version header. Nothing is written
    /// on error.
    pub fn write(&self, h: &H, out: &mut Vec<u8>) -> Result<(), Error> {
        let mut body = Vec::new();
        (self.encode)(h, &mut body)?;
        write_body(&body, self.max_body_len, out)
    }
}

/// Splits a length-prefixed body off the start of `bytes`: returns the body
/// and the bytes taken (`4 + len`).
///
/// Errors: [`Error::TooLong`] if the declared length exceeds `max` (checked
/// first), [`Error::Truncated`] if the prefix or the body runs past the input.
pub fn read_body(bytes: &[u8], base: u64, max: u32) -> Result<(&[u8], usize), Error> {
    let Ok((len, rest)) = U32::<BigEndian>::read_from_prefix(bytes) else {
        return Err(Error::Truncated {
            what: "version header length",
            offset: base,
            needed: LEN_PREFIX as u64,
            available: bytes.len() as u64,
        });
    };
    let len = len.get();
    if len > max {
        return Err(Error::TooLong {
            what: "version header",
            offset: base,
            len: len.into(),
            max: max.into(),
        });
    }
    let Some(body) = rest.get(..len as usize) else {
        return Err(Error::Truncated {
            what: "version header body",
            offset: base + LEN_PREFIX as u64,
            needed: len.into(),
            available: rest.len() as u64,
        });
    };
    Ok((body, LEN_PREFIX + body.len()))
}

/// Appends `body` with its u32 BE length prefix.
///
/// Errors: [`Error::EncodeTooLong`] if `body` is longer than `max`.
pub fn write_body(body: &[u8], max: u32, out: &mut Vec<u8>) -> Result<(), Error> {
    if body.len() as u64 > u64::from(max) {
        return Err(Error::EncodeTooLong {
            what: "version header body",
            len: body.len() as u64,
            max: max.into(),
        });
    }
    out.extend_from_slice(U32::<BigEndian>::new(body.len() as u32).as_bytes());
    out.extend_from_slice(body);
    Ok(())
}

/// One entry per supported version.
#[derive(Debug)]
pub struct VersionTable<H: 'static> {
    entries: &'static [VersionEntry<H>],
}

impl<H> VersionTable<H> {
    /// A table over `entries` (one per version; the first entry for a
    /// version wins).
    pub const fn new(entries: &'static [VersionEntry<H>]) -> Self {
        VersionTable { entries }
    }

    /// Every entry.
    pub fn entries(&self) -> &'static [VersionEntry<H>] {
        self.entries
    }

    /// The supported versions, in table order.
    pub fn versions(&self) -> Vec<u32> {
        self.entries.iter().map(|e| e.version).collect()
    }

    /// The entry for `version`; [`Error::NoTableEntry`] if there is none.
    pub fn entry(&self, version: u32) -> Result<&'static VersionEntry<H>, Error> {
        self.entries
            .iter()
            .find(|e| e.version == version)
            .ok_or(Error::NoTableEntry { version })
    }

    /// The entry of the highest supported version in `offered`
    /// ([`negotiate`]), looked up once.
    pub fn negotiate(&self, offered: VersionRange) -> Result<&'static VersionEntry<H>, Error> {
        let v = negotiate(&self.versions(), offered)?;
        self.entry(v)
    }
}

/// A header read by [`read_header`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header<H> {
    /// The fixed header.
    pub fixed: ParsedFixed,
    /// The version chosen: the highest supported one in
    /// `[compat_version, version]`.
    pub version: u32,
    /// The version-specific header, as the chosen version reads it.
    pub body: H,
    /// Bytes taken by both headers: where the stream's payload starts.
    pub len: usize,
}

/// Reads the fixed header (through `format`), negotiates against `table`,
/// then reads the version-specific header with the chosen entry.
pub fn read_header<H>(
    format: &FixedHeaderFormat,
    table: &VersionTable<H>,
    bytes: &[u8],
    opts: &ReadOptions,
) -> Result<Header<H>, Error> {
    let fixed = format.parse(bytes)?;
    let entry = table.negotiate(fixed.range())?;
    let (body, used) = entry.read(&bytes[fixed.len..], fixed.len as u64, opts)?;
    Ok(Header {
        fixed,
        version: entry.version,
        body,
        len: fixed.len + used,
    })
}

/// Writes the fixed header (`entry.version`, `compat_version`) and the
/// version-specific header `body`. Nothing is written on error.
pub fn write_header<H>(
    format: &FixedHeaderFormat,
    entry: &VersionEntry<H>,
    compat_version: u32,
    body: &H,
    out: &mut Vec<u8>,
) -> Result<(), Error> {
    let mut buf = Vec::new();
    format.encode(entry.version, compat_version, &mut buf)?;
    entry.write(body, &mut buf)?;
    out.extend_from_slice(&buf);
    Ok(())
}
