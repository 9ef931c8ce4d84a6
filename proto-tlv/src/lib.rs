//! # proto-tlv: the TLV command codec
//!
//! The framing of btrfs send streams, shared by every profile of the
//! proto-stream kit: each command is a 10-byte little-endian header
//! (`len u32 | cmd u16 | crc u32`) followed by `len` bytes of attributes
//! (`type u16 | len u16 | value`), checked by CRC32C.
//!
//! - [`Profile`] says what varies between stream formats: the CRC variant
//!   ([`CrcVariant::BtrfsRaw`] or [`CrcVariant::Standard`]), the maximum
//!   command length (checked before anything is allocated), the unbounded
//!   data attribute of btrfs v2+, and the END command.
//! - Decoding borrows: [`Commands`] iterates an in-memory stream without
//!   copying, [`Decoder`] is fed pieces of any size (sans-IO) and says how many
//!   more bytes it needs, [`ReadDecoder`] reads any `std::io::Read` through one
//!   reused buffer, and (feature `tokio`) `CommandCodec` is a
//!   `tokio_util::codec` decoder and encoder of commands for `FramedRead` /
//!   `FramedWrite` over any `AsyncRead` / `AsyncWrite`.
//! - Encoding ([`encode_command`], [`encode_command_into`]) writes attributes,
//!   then the length and CRC; into a caller's bounded slice it writes a whole
//!   command or nothing.
//! - Errors ([`Error`]) carry a kind, the command index and the byte offset.
//!
//! Without its default `std` feature the crate is `no_std` (it needs
//! `alloc`); only the `std::io::Read` adapter ([`ReadDecoder`], [`ReadBuf`],
//! [`ReadError`]) and the `tokio` codec are missing.
//!
//! ```
//! use proto_tlv::{encode_command, AttrValue, Commands, CrcVariant, ErrorKind, Profile, Value};
//!
//! let profile = Profile {
//!     crc: CrcVariant::BtrfsRaw,
//!     max_payload_len: 64 * 1024,
//!     unbounded_data_attr: Some(19),
//!     end_cmd: 21,
//! };
//! let mut stream = Vec::new();
//! encode_command(&profile, 15, &[
//!     AttrValue::new(15, Value::Bytes(b"dir/file")),
//!     AttrValue::new(18, Value::U64(4096)),
//!     AttrValue::new(19, Value::Bytes(b"data runs to the end of the command")),
//! ], &mut stream).unwrap();
//! encode_command(&profile, 21, &[], &mut stream).unwrap();
//!
//! let cmds: Vec<_> = Commands::new(&stream, profile, 0).collect::<Result<_, _>>().unwrap();
//! assert_eq!(cmds.len(), 2);
//! assert_eq!(cmds[0].require(15).unwrap().as_path(), b"dir/file");
//! assert_eq!(cmds[0].require(18).unwrap().as_u64().unwrap(), 4096);
//! assert!(cmds[1].is_end());
//!
//! // One flipped bit is caught, with its position.
//! stream[12] ^= 1;
//! let err = Commands::new(&stream, profile, 0).next().unwrap().unwrap_err();
//! assert!(matches!(err.kind, ErrorKind::CrcMismatch { .. }));
//! assert_eq!((err.index, err.offset), (0, 0));
//! ```
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

mod attr;
mod cmdbuf;
#[cfg(feature = "tokio")]
mod codec;
mod crc;
mod decode;
mod encode;
mod error;
#[cfg(feature = "std")]
mod io;
mod profile;

pub use attr::{Attr, AttrHeader, AttrValue, Attrs, Timespec, Value, ATTR_HEADER_LEN};
pub use cmdbuf::CmdBuf;
#[cfg(feature = "tokio")]
pub use codec::{CodecError, CommandCodec, CommandFrame};
pub use crc::{crc32c_shift, CrcVariant};
pub use decode::{
    decode_command, frame_len, CmdHeader, Command, Commands, Decoder, Step, CMD_HEADER_LEN,
};
pub use encode::{
    encode_command, encode_command_into, encode_raw, encoded_len, payload_len, OwnedCommand,
};
pub use error::{Error, ErrorKind};
#[cfg(feature = "std")]
pub use io::{ReadBuf, ReadDecoder, ReadError};
pub use profile::Profile;
