//! The btrfs stream header: `b"btrfs-stream\0"` then a little-endian u32
//! version; and the TLV profile of each protocol version.

use zerocopy::byteorder::little_endian::U32;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::{AttrType, CommandType, Error};
use proto_tlv::{CrcVariant, ErrorKind, Profile};

/// The 13-byte magic, NUL included.
pub const MAGIC: &[u8; 13] = b"btrfs-stream\0";

/// The 17-byte stream header.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct StreamHeader {
    /// `b"btrfs-stream\0"`.
    pub magic: [u8; 13],
    /// Protocol version.
    pub version: U32,
}

/// Size of [`StreamHeader`] on the wire.
pub const HEADER_LEN: usize = 17;
const _: () = assert!(core::mem::size_of::<StreamHeader>() == HEADER_LEN);

/// Lowest protocol version read.
pub const MIN_VERSION: u32 = 1;
/// Highest protocol version read.
pub const MAX_VERSION: u32 = 3;

/// Largest command payload accepted in a v1 stream: the kernel's v1 send
/// buffer is 64 KiB, header included.
pub const V1_MAX_PAYLOAD: u32 = 64 * 1024;
/// Largest command payload accepted in a v2/v3 stream. The kernel emits at
/// most about 144 KiB (16 KiB + 128 KiB of compressed data); 16 MiB leaves
/// room for other producers while bounding what a reader allocates.
pub const V2_MAX_PAYLOAD: u32 = 16 * 1024 * 1024;

impl StreamHeader {
    /// A header for `version`.
    pub fn new(version: u32) -> Self {
        StreamHeader {
            magic: *MAGIC,
            version: U32::new(version),
        }
    }
}

/// Checks the stream header at the start of `bytes` and returns the
/// protocol version. Errors: short input, wrong magic (showing what was
/// found), or a version outside 1..=3 (naming it).
pub fn parse_header(bytes: &[u8]) -> Result<u32, Error> {
    let Ok((hdr, _)) = StreamHeader::ref_from_prefix(bytes) else {
        return Err(Error::Tlv(
            ErrorKind::Truncated {
                what: "stream header",
                needed: HEADER_LEN as u64,
                available: bytes.len() as u64,
            }
            .at(0, 0),
        ));
    };
    if &hdr.magic != MAGIC {
        return Err(Error::BadMagic {
            found: hdr.magic,
            offset: 0,
        });
    }
    let version = hdr.version.get();
    profile(version)?;
    Ok(version)
}

/// The TLV profile of protocol `version`: raw CRC32C, END = 21, from v2 on
/// the unbounded DATA attribute, and the per-version maximum command length.
pub fn profile(version: u32) -> Result<Profile, Error> {
    if !(MIN_VERSION..=MAX_VERSION).contains(&version) {
        return Err(Error::Tlv(
            ErrorKind::UnsupportedVersion {
                version,
                min: MIN_VERSION,
                max: MAX_VERSION,
            }
            .at(0, 13),
        ));
    }
    Ok(Profile {
        crc: CrcVariant::BtrfsRaw,
        max_payload_len: if version == 1 {
            V1_MAX_PAYLOAD
        } else {
            V2_MAX_PAYLOAD
        },
        unbounded_data_attr: (version >= 2).then_some(AttrType::DATA.0),
        end_cmd: CommandType::END.0,
    })
}
