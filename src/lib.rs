//! # proto-stream
//!
//! The thin top crate of the kit: it re-exports the protocol crates so that
//! an application depends on one crate.
//!
//! ```
//! use proto_stream::btrfs::{BtrfsStream, CommandType};
//!
//! let bytes = include_bytes!("../testdata/btrfs/nodata-v2.stream");
//! let stream = BtrfsStream::parse(bytes).unwrap();
//! assert_eq!(stream.version(), 2);
//! let last = stream.commands().last().unwrap().unwrap();
//! assert_eq!(CommandType(last.cmd()), CommandType::END);
//! ```
#![forbid(unsafe_code)]

pub use proto_btrfs as btrfs;
pub use proto_checkpoint as checkpoint;
pub use proto_header as header;
pub use proto_tlv as tlv;

pub use proto_checkpoint::native;
pub mod apply;
pub mod session;
