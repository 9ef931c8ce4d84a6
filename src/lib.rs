//! # proto-stream
//!
//! The thin top crate of the kit: it re-exports the protocol crates so that
//! an application depends on one crate.
//!
//! Feature `tokio`: the async session driver (`session::Server::serve_async`,
//! `session::Fetcher::fetch_async`, `session::Fetcher::fetch_retrying_async`)
//! and proto-tlv's `tlv::CommandCodec`, a `tokio_util::codec` decoder and
//! encoder of commands. Feature `fault-injection`: `session::DropEvery` and
//! `ServerConfig::kill_after`, for tests.
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
