//! # proto-btrfs: the btrfs send-stream profile
//!
//! Reads, writes and dumps the streams of `btrfs send` (protocol versions
//! 1, 2 and 3) on top of [`proto_tlv`]:
//!
//! - the 17-byte stream header and the TLV [`profile`] of each version
//!   (raw CRC32C, the unbounded DATA attribute from v2 on, per-version
//!   maximum command length);
//! - the command and attribute catalogue as open enums ([`CommandType`],
//!   [`AttrType`]): unknown values are kept and print in hex;
//! - typed views ([`BtrfsCommand`]) and an encoder that writes attributes in
//!   the kernel's order, so re-encoding a kernel stream reproduces it;
//! - [`Dumper`], the `btrfs receive --dump` format of btrfs-progs 6.2.
//!
//! ```
//! use proto_btrfs::{BtrfsCommand, BtrfsStream, Dumper, StreamWriter};
//!
//! // Write a small v2 stream...
//! let mut bytes = Vec::new();
//! let w = StreamWriter::new(2, &mut bytes).unwrap();
//! w.write(&BtrfsCommand::Subvol { path: b"snap", uuid: [0x11; 16], ctransid: 7 }, &mut bytes).unwrap();
//! w.write(&BtrfsCommand::Write { path: b"a file", offset: 0, data: b"hello" }, &mut bytes).unwrap();
//! w.finish(&mut bytes).unwrap();
//!
//! // ...and dump it as `btrfs receive --dump` would.
//! let stream = BtrfsStream::parse(&bytes).unwrap();
//! let mut dumper = Dumper::new();
//! let mut out = Vec::new();
//! for cmd in stream.commands() {
//!     dumper.dump(&cmd.unwrap(), &mut out).unwrap();
//! }
//! assert_eq!(String::from_utf8(out).unwrap(),
//!     "subvol          ./snap                          uuid=11111111-1111-1111-1111-111111111111 transid=7\n\
//!      write           ./snap/a\\ file                  offset=0 len=5\n");
//! ```
#![forbid(unsafe_code)]

mod catalogue;
mod check;
pub mod checkpoint;
mod dump;
mod error;
pub mod header;
mod stream;
mod view;

pub use catalogue::{AttrType, CommandType};
pub use check::CommandChecker;
pub use checkpoint::Btrfs;
pub use dump::{uuid_text, Dumper};
pub use error::{quoted, Error};
pub use header::{parse_header, profile, write_header, HEADER_LEN, MAGIC, SUPPORTED_VERSIONS};
pub use stream::{BtrfsStream, Event, StreamDecoder, StreamReader, StreamWriter, Visit};
pub use view::BtrfsCommand;
