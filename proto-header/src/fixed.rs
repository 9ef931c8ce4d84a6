//! The fixed header: the native 16-byte one ([`FixedHeader`]) and a generic
//! description ([`FixedHeaderFormat`]) that also covers foreign headers such
//! as btrfs's ([`BTRFS`]).

use alloc::vec::Vec;

use zerocopy::byteorder::{BigEndian, LittleEndian, U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::negotiate::VersionRange;
use crate::Error;

/// Size of the native [`FixedHeader`] on the wire.
pub const FIXED_HEADER_LEN: usize = 16;

/// The native fixed header, kept unchanged for every version:
/// `magic [u8; 8] | version u32 BE | compat_version u32 BE`.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct FixedHeader {
    /// Chosen by the application.
    pub magic: [u8; 8],
    /// The version the writer wrote.
    pub version: U32<BigEndian>,
    /// The oldest version whose readers can read this stream; `<= version`.
    pub compat_version: U32<BigEndian>,
}
const _: () = assert!(core::mem::size_of::<FixedHeader>() == FIXED_HEADER_LEN);

impl FixedHeader {
    /// A header for `magic`, `version` and `compat_version` (not checked:
    /// see [`FixedHeader::check`]).
    pub fn new(magic: [u8; 8], version: u32, compat_version: u32) -> Self {
        FixedHeader {
            magic,
            version: U32::new(version),
            compat_version: U32::new(compat_version),
        }
    }

    /// Borrows the header at the start of `bytes` and checks it against
    /// `magic`. Returns the header and the bytes after it.
    ///
    /// Errors: [`Error::Truncated`], [`Error::BadMagic`],
    /// [`Error::CompatAboveVersion`] (all at offset 0).
    pub fn parse<'a>(
        bytes: &'a [u8],
        magic: &[u8; 8],
    ) -> Result<(&'a FixedHeader, &'a [u8]), Error> {
        let Ok((hdr, rest)) = FixedHeader::ref_from_prefix(bytes) else {
            return Err(Error::Truncated {
                what: "fixed header",
                offset: 0,
                needed: FIXED_HEADER_LEN as u64,
                available: bytes.len() as u64,
            });
        };
        if &hdr.magic != magic {
            return Err(Error::BadMagic {
                offset: 0,
                found: hdr.magic.to_vec(),
                expected: magic.to_vec(),
            });
        }
        hdr.check()?;
        Ok((hdr, rest))
    }

    /// Checks that `compat_version <= version`.
    pub fn check(&self) -> Result<(), Error> {
        let (version, compat_version) = (self.version.get(), self.compat_version.get());
        if compat_version > version {
            return Err(Error::CompatAboveVersion {
                offset: 0,
                version,
                compat_version,
            });
        }
        Ok(())
    }

    /// `[compat_version, version]`.
    pub fn range(&self) -> VersionRange {
        VersionRange {
            min: self.compat_version.get(),
            max: self.version.get(),
        }
    }
}

/// Byte order of an integer field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endian {
    /// Most significant byte first (network order).
    Big,
    /// Least significant byte first.
    Little,
}

/// Width of an integer field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Width {
    /// One byte.
    U8,
    /// Two bytes.
    U16,
    /// Four bytes.
    U32,
}

/// How a version field is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IntField {
    /// Its width.
    pub width: Width,
    /// Its byte order.
    pub endian: Endian,
}

impl IntField {
    /// A u32 big-endian field (the native layout).
    pub const U32_BE: IntField = IntField {
        width: Width::U32,
        endian: Endian::Big,
    };
    /// A u32 little-endian field (btrfs's layout).
    pub const U32_LE: IntField = IntField {
        width: Width::U32,
        endian: Endian::Little,
    };

    /// Size on the wire.
    pub const fn size(&self) -> usize {
        match self.width {
            Width::U8 => 1,
            Width::U16 => 2,
            Width::U32 => 4,
        }
    }

    /// Largest value the field holds.
    pub const fn max(&self) -> u32 {
        match self.width {
            Width::U8 => u8::MAX as u32,
            Width::U16 => u16::MAX as u32,
            Width::U32 => u32::MAX,
        }
    }

    /// Reads the field from `b`, which is exactly [`IntField::size`] bytes.
    fn read(&self, b: &[u8]) -> u32 {
        match (self.width, self.endian) {
            (Width::U8, _) => u32::from(b[0]),
            (Width::U16, Endian::Big) => {
                U16::<BigEndian>::read_from_bytes(b).map_or(0, |v| u32::from(v.get()))
            }
            (Width::U16, Endian::Little) => {
                U16::<LittleEndian>::read_from_bytes(b).map_or(0, |v| u32::from(v.get()))
            }
            (Width::U32, Endian::Big) => {
                U32::<BigEndian>::read_from_bytes(b).map_or(0, |v| v.get())
            }
            (Width::U32, Endian::Little) => {
                U32::<LittleEndian>::read_from_bytes(b).map_or(0, |v| v.get())
            }
        }
    }

    /// Appends `v` (which fits) to `out`.
    fn write(&self, v: u32, out: &mut Vec<u8>) {
        match (self.width, self.endian) {
            (Width::U8, _) => out.push(v as u8),
            (Width::U16, Endian::Big) => {
                out.extend_from_slice(U16::<BigEndian>::new(v as u16).as_bytes())
            }
            (Width::U16, Endian::Little) => {
                out.extend_from_slice(U16::<LittleEndian>::new(v as u16).as_bytes())
            }
            (Width::U32, Endian::Big) => out.extend_from_slice(U32::<BigEndian>::new(v).as_bytes()),
            (Width::U32, Endian::Little) => {
                out.extend_from_slice(U32::<LittleEndian>::new(v).as_bytes())
            }
        }
    }
}

/// A description of a fixed header: magic bytes of any length, then a
/// version field, then optionally a compat_version field. Without a compat
/// field, compat_version is taken to be the version itself (the writer's
/// version is the only one offered).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FixedHeaderFormat {
    /// The magic bytes at offset 0.
    pub magic: &'static [u8],
    /// The version field, right after the magic.
    pub version: IntField,
    /// The compat_version field, right after the version, if any.
    pub compat: Option<IntField>,
}

/// The btrfs send-stream header: `b"btrfs-stream\0"` then a u32
/// little-endian version, no compat field.
pub const BTRFS: FixedHeaderFormat = FixedHeaderFormat {
    magic: b"btrfs-stream\0",
    version: IntField::U32_LE,
    compat: None,
};

/// A fixed header as read through a [`FixedHeaderFormat`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ParsedFixed {
    /// The version the writer wrote.
    pub version: u32,
    /// The oldest version whose readers can read the stream (the version
    /// itself when the format has no compat field).
    pub compat_version: u32,
    /// Bytes the header took: where the next part starts.
    pub len: usize,
}

impl ParsedFixed {
    /// `[compat_version, version]`.
    pub fn range(&self) -> VersionRange {
        VersionRange {
            min: self.compat_version,
            max: self.version,
        }
    }
}

impl FixedHeaderFormat {
    /// The native 16-byte layout with the application's 8-byte `magic`.
    pub const fn native(magic: &'static [u8; 8]) -> Self {
        FixedHeaderFormat {
            magic,
            version: IntField::U32_BE,
            compat: Some(IntField::U32_BE),
        }
    }

    /// Size of the header on the wire.
    pub const fn encoded_len(&self) -> usize {
        self.magic.len()
            + self.version.size()
            + match self.compat {
                Some(c) => c.size(),
                None => 0,
            }
    }

    /// Reads the header at the start of `bytes`.
    ///
    /// Errors: [`Error::Truncated`], [`Error::BadMagic`] (showing the bytes
    /// found), [`Error::CompatAboveVersion`].
    pub fn parse(&self, bytes: &[u8]) -> Result<ParsedFixed, Error> {
        let len = self.encoded_len();
        let Some(hdr) = bytes.get(..len) else {
            return Err(Error::Truncated {
                what: "fixed header",
                offset: 0,
                needed: len as u64,
                available: bytes.len() as u64,
            });
        };
        let (magic, rest) = hdr.split_at(self.magic.len());
        if magic != self.magic {
            return Err(Error::BadMagic {
                offset: 0,
                found: magic.to_vec(),
                expected: self.magic.to_vec(),
            });
        }
        let (v, rest) = rest.split_at(self.version.size());
        let version = self.version.read(v);
        let compat_version = match self.compat {
            Some(c) => c.read(rest),
            None => version,
        };
        if compat_version > version {
            return Err(Error::CompatAboveVersion {
                offset: 0,
                version,
                compat_version,
            });
        }
        Ok(ParsedFixed {
            version,
            compat_version,
            len,
        })
    }

    /// Appends a header for `version` / `compat_version` to `out`.
    ///
    /// Errors: [`Error::CompatAboveVersion`]; [`Error::EncodeTooLong`] when a
    /// value does not fit its field, or when the format has no compat field
    /// and `compat_version != version`. Nothing is written on error.
    pub fn encode(
        &self,
        version: u32,
        compat_version: u32,
        out: &mut Vec<u8>,
    ) -> Result<(), Error> {
        if compat_version > version {
            return Err(Error::CompatAboveVersion {
                offset: 0,
                version,
                compat_version,
            });
        }
        if version > self.version.max() {
            return Err(Error::EncodeTooLong {
                what: "version",
                len: version.into(),
                max: self.version.max().into(),
            });
        }
        match self.compat {
            Some(c) if compat_version > c.max() => {
                return Err(Error::EncodeTooLong {
                    what: "compat_version",
                    len: compat_version.into(),
                    max: c.max().into(),
                })
            }
            None if compat_version != version => {
                return Err(Error::EncodeTooLong {
                    what: "compat_version (format has no compat field; must equal version)",
                    len: compat_version.into(),
                    max: version.into(),
                })
            }
            _ => {}
        }
        out.extend_from_slice(self.magic);
        self.version.write(version, out);
        if let Some(c) = self.compat {
            c.write(compat_version, out);
        }
        Ok(())
    }
}
