//! Attributes: `type u16 | len u16 | value[len]`, little-endian, and the
//! unbounded data attribute (type only, value to the end of the command).

use zerocopy::byteorder::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::{Error, ErrorKind, CMD_HEADER_LEN};

/// The 4-byte header of a length-prefixed attribute.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct AttrHeader {
    /// Attribute type.
    pub ty: U16,
    /// Value length in bytes.
    pub len: U16,
}

/// Size of [`AttrHeader`] on the wire.
pub const ATTR_HEADER_LEN: usize = 4;
const _: () = assert!(core::mem::size_of::<AttrHeader>() == ATTR_HEADER_LEN);

/// A timestamp attribute: `sec u64 | nsec u32`, little-endian (12 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Timespec {
    /// Seconds since the epoch as stored (the kernel stores a signed value).
    pub sec: u64,
    /// Nanoseconds.
    pub nsec: u32,
}

impl Timespec {
    /// Seconds as the signed `time_t` the kernel meant.
    pub fn sec_signed(&self) -> i64 {
        self.sec as i64
    }
    /// Encoded form.
    pub fn to_bytes(&self) -> [u8; 12] {
        let mut b = [0u8; 12];
        b[..8].copy_from_slice(&self.sec.to_le_bytes());
        b[8..].copy_from_slice(&self.nsec.to_le_bytes());
        b
    }
}

#[derive(FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct TimespecWire {
    sec: U64,
    nsec: U32,
}
const _: () = assert!(core::mem::size_of::<TimespecWire>() == 12);

/// One attribute of a decoded command, borrowing its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr<'a> {
    ty: u16,
    value: &'a [u8],
    /// Stream byte offset of this attribute's header.
    offset: u64,
    /// Index of the command holding it.
    index: u64,
}

impl<'a> Attr<'a> {
    /// Attribute type.
    #[inline]
    pub fn ty(&self) -> u16 {
        self.ty
    }
    /// The raw value bytes.
    #[inline]
    pub fn value(&self) -> &'a [u8] {
        self.value
    }
    /// Stream byte offset of the attribute header.
    #[inline]
    pub fn offset(&self) -> u64 {
        self.offset
    }

    fn size_err(&self, expected: usize) -> Error {
        ErrorKind::AttrSize {
            attr_type: self.ty,
            expected,
            actual: self.value.len(),
        }
        .at(self.index, self.offset)
    }

    fn fixed<const N: usize>(&self) -> Result<[u8; N], Error> {
        <[u8; N]>::try_from(self.value).map_err(|_| self.size_err(N))
    }

    /// The value as a `u8` (exactly 1 byte).
    pub fn as_u8(&self) -> Result<u8, Error> {
        Ok(self.fixed::<1>()?[0])
    }
    /// The value as a little-endian `u16` (exactly 2 bytes).
    pub fn as_u16(&self) -> Result<u16, Error> {
        Ok(u16::from_le_bytes(self.fixed()?))
    }
    /// The value as a little-endian `u32` (exactly 4 bytes).
    pub fn as_u32(&self) -> Result<u32, Error> {
        Ok(u32::from_le_bytes(self.fixed()?))
    }
    /// The value as a little-endian `u64` (exactly 8 bytes).
    pub fn as_u64(&self) -> Result<u64, Error> {
        Ok(u64::from_le_bytes(self.fixed()?))
    }
    /// The value as a 16-byte UUID.
    pub fn as_uuid(&self) -> Result<[u8; 16], Error> {
        self.fixed()
    }
    /// The value as a [`Timespec`] (exactly 12 bytes).
    pub fn as_timespec(&self) -> Result<Timespec, Error> {
        let w = TimespecWire::ref_from_bytes(self.value).map_err(|_| self.size_err(12))?;
        Ok(Timespec {
            sec: w.sec.get(),
            nsec: w.nsec.get(),
        })
    }
    /// The value as path bytes (any length, not NUL-terminated, not
    /// necessarily UTF-8).
    pub fn as_path(&self) -> &'a [u8] {
        self.value
    }
    /// The value as opaque bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.value
    }
}

/// Walks the attributes of a payload, checking that each header and value
/// fits. Returns the first fault as (kind, payload-relative offset).
pub(crate) fn validate(payload: &[u8], data_attr: Option<u16>) -> Result<(), (ErrorKind, usize)> {
    let mut pos = 0usize;
    while pos < payload.len() {
        let rest = &payload[pos..];
        let Ok((ty, _)) = U16::read_from_prefix(rest) else {
            return Err((
                ErrorKind::AttrHeaderTruncated {
                    needed: 2,
                    remaining: rest.len() as u32,
                },
                pos,
            ));
        };
        if data_attr == Some(ty.get()) {
            return Ok(());
        }
        let Ok((hdr, _)) = AttrHeader::ref_from_prefix(rest) else {
            return Err((
                ErrorKind::AttrHeaderTruncated {
                    needed: ATTR_HEADER_LEN as u32,
                    remaining: rest.len() as u32,
                },
                pos,
            ));
        };
        let ty = hdr.ty.get();
        let len = usize::from(hdr.len.get());
        let avail = rest.len() - ATTR_HEADER_LEN;
        if len > avail {
            return Err((
                ErrorKind::AttrOverrun {
                    attr_type: ty,
                    declared: len as u32,
                    remaining: avail as u32,
                },
                pos,
            ));
        }
        pos += ATTR_HEADER_LEN + len;
    }
    Ok(())
}

/// Iterator over the attributes of a validated command.
#[derive(Clone, Debug)]
pub struct Attrs<'a> {
    payload: &'a [u8],
    pos: usize,
    data_attr: Option<u16>,
    /// Stream offset of the payload's first byte.
    base: u64,
    index: u64,
}

impl<'a> Attrs<'a> {
    /// The attributes of a command payload not decoded with
    /// [`decode_command`](crate::decode_command) (which checks them): the
    /// layout is checked first (every header and value within the
    /// payload; `data_attr`, the profile's unbounded data attribute, runs
    /// to the end). Offsets are counted from the command's start, so an
    /// attribute's value starts at `offset() + 4` (`+ 2` for `data_attr`).
    pub fn checked(payload: &'a [u8], data_attr: Option<u16>) -> Result<Self, ErrorKind> {
        validate(payload, data_attr).map_err(|(kind, _)| kind)?;
        Ok(Attrs::new(payload, data_attr, 0, 0))
    }

    pub(crate) fn new(
        payload: &'a [u8],
        data_attr: Option<u16>,
        cmd_offset: u64,
        index: u64,
    ) -> Self {
        Attrs {
            payload,
            pos: 0,
            data_attr,
            base: cmd_offset + CMD_HEADER_LEN as u64,
            index,
        }
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Attr<'a>;

    fn next(&mut self) -> Option<Attr<'a>> {
        // The payload was validated when the command was decoded, so every
        // header and value fits; the `get`s below only guard that invariant.
        let rest = self.payload.get(self.pos..)?;
        let (ty, _) = U16::read_from_prefix(rest).ok()?;
        let ty = ty.get();
        let offset = self.base + self.pos as u64;
        let value = if self.data_attr == Some(ty) {
            let v = rest.get(2..)?;
            self.pos = self.payload.len();
            v
        } else {
            let (hdr, after) = AttrHeader::ref_from_prefix(rest).ok()?;
            let len = usize::from(hdr.len.get());
            let v = after.get(..len)?;
            self.pos += ATTR_HEADER_LEN + len;
            v
        };
        Some(Attr {
            ty,
            value,
            offset,
            index: self.index,
        })
    }
}

/// A value to encode as an attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value<'a> {
    /// One byte.
    U8(u8),
    /// Little-endian u16.
    U16(u16),
    /// Little-endian u32.
    U32(u32),
    /// Little-endian u64.
    U64(u64),
    /// A 16-byte UUID.
    Uuid([u8; 16]),
    /// A timestamp (12 bytes).
    Timespec(Timespec),
    /// Raw bytes (paths, names, data).
    Bytes(&'a [u8]),
}

impl Value<'_> {
    /// Encoded value length.
    #[inline]
    pub fn len(&self) -> usize {
        match self {
            Value::U8(_) => 1,
            Value::U16(_) => 2,
            Value::U32(_) => 4,
            Value::U64(_) => 8,
            Value::Uuid(_) => 16,
            Value::Timespec(_) => 12,
            Value::Bytes(b) => b.len(),
        }
    }
    /// Whether the encoded value is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Writes the value into `out`, which is exactly `self.len()` long.
    #[inline]
    pub(crate) fn write_to(&self, out: &mut [u8]) {
        match self {
            Value::U8(v) => out[0] = *v,
            Value::U16(v) => out.copy_from_slice(&v.to_le_bytes()),
            Value::U32(v) => out.copy_from_slice(&v.to_le_bytes()),
            Value::U64(v) => out.copy_from_slice(&v.to_le_bytes()),
            Value::Uuid(v) => out.copy_from_slice(v),
            Value::Timespec(t) => out.copy_from_slice(&t.to_bytes()),
            Value::Bytes(b) => out.copy_from_slice(b),
        }
    }
}

/// An attribute to encode: type and value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttrValue<'a> {
    /// Attribute type.
    pub ty: u16,
    /// Its value.
    pub value: Value<'a>,
}

impl<'a> AttrValue<'a> {
    /// Shorthand constructor.
    pub const fn new(ty: u16, value: Value<'a>) -> Self {
        AttrValue { ty, value }
    }
}

impl<'a> From<Attr<'a>> for AttrValue<'a> {
    fn from(a: Attr<'a>) -> Self {
        AttrValue::new(a.ty(), Value::Bytes(a.value()))
    }
}
