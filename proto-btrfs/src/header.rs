//! The btrfs stream header: `b"btrfs-stream\0"` then a little-endian u32
//! version, described by `proto-header` ([`proto_header::BTRFS`]); and the
//! TLV profile of each protocol version.

use crate::{AttrType, CommandType, Error};
use proto_tlv::{CrcVariant, ErrorKind, Profile};

/// The 13-byte magic, NUL included.
pub const MAGIC: &[u8; 13] = b"btrfs-stream\0";

/// Size of the stream header on the wire.
pub const HEADER_LEN: usize = 17;
const _: () = assert!(MAGIC.len() + 4 == HEADER_LEN);

/// Largest command payload accepted in a v1 stream: the kernel's v1 send
/// buffer is 64 KiB, header included.
pub const V1_MAX_PAYLOAD: u32 = 64 * 1024;
/// Largest command payload accepted in a v2/v3 stream. The kernel emits at
/// most about 144 KiB (16 KiB + 128 KiB of compressed data); 16 MiB leaves
/// room for other producers while bounding what a reader allocates.
pub const V2_MAX_PAYLOAD: u32 = 16 * 1024 * 1024;

/// Appends the header of a version-`version` stream.
pub fn write_header(version: u32, out: &mut Vec<u8>) -> Result<(), Error> {
    profile(version)?;
    proto_header::BTRFS
        .encode(version, version, out)
        .map_err(header_error)
}

/// Where the version field is in a stream header.
const VERSION_OFFSET: u64 = 13;

/// The versions this crate reads.
pub const SUPPORTED_VERSIONS: [u32; 3] = [1, 2, 3];

/// Checks the stream header at the start of `bytes` and returns the
/// protocol version. The header is read through `proto-header`'s
/// description of it ([`proto_header::BTRFS`]: 13-byte magic, u32
/// little-endian version, no compat field) and the version negotiated against
/// [`SUPPORTED_VERSIONS`]. Errors: short input, wrong magic (showing what was
/// found), or a version outside 1..=3 (naming it).
pub fn parse_header(bytes: &[u8]) -> Result<u32, Error> {
    let parsed = proto_header::BTRFS.parse(bytes).map_err(header_error)?;
    proto_header::negotiate(&SUPPORTED_VERSIONS, parsed.range()).map_err(|source| Error::Version {
        version: parsed.version,
        offset: VERSION_OFFSET,
        source,
    })
}

/// `proto-header`'s errors in this crate's terms.
fn header_error(e: proto_header::Error) -> Error {
    match e {
        proto_header::Error::BadMagic { offset, found, .. } => {
            let mut magic = [0u8; 13];
            let n = found.len().min(13);
            magic[..n].copy_from_slice(&found[..n]);
            Error::BadMagic {
                found: magic,
                offset,
            }
        }
        proto_header::Error::Truncated {
            offset,
            needed,
            available,
            ..
        } => Error::Tlv(
            ErrorKind::Truncated {
                what: "stream header",
                needed,
                available,
            }
            .at(0, offset),
        ),
        other => Error::Header(other),
    }
}

/// The TLV profile of protocol `version`: raw CRC32C, END = 21, from v2 on
/// the unbounded DATA attribute, and the per-version maximum command length.
pub fn profile(version: u32) -> Result<Profile, Error> {
    if !SUPPORTED_VERSIONS.contains(&version) {
        let offered = proto_header::VersionRange {
            min: version,
            max: version,
        };
        return Err(Error::Version {
            version,
            offset: VERSION_OFFSET,
            source: proto_header::Error::Unsupported {
                offered,
                supported: SUPPORTED_VERSIONS.to_vec(),
            },
        });
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
