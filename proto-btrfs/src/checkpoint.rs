//! Checkpointable emission of btrfs send streams: the `WRITE` split rule,
//! and [`Btrfs`], the [`Format`] of btrfs send streams: producers over a
//! stream file with a safe point every K units, its contexts (the
//! concatenated streams of a file) and a receiver's validation.
//!
//! ```
//! use proto_btrfs::{Btrfs, BtrfsCommand, StreamWriter};
//! use proto_checkpoint::{compare, Emitter, Format, Outcome};
//!
//! let mut stream = Vec::new();
//! let w = StreamWriter::new(2, &mut stream).unwrap();
//! w.write(&BtrfsCommand::Subvol { path: b"snap", uuid: [1; 16], ctransid: 9 }, &mut stream).unwrap();
//! w.write(&BtrfsCommand::Mkfile { path: b"f", ino: 257 }, &mut stream).unwrap();
//! w.write(&BtrfsCommand::Write { path: b"f", offset: 0, data: &[0xab; 3000] }, &mut stream).unwrap();
//! w.finish(&mut stream).unwrap();
//!
//! // Re-emit through 1 KiB buffers: the write becomes several valid writes.
//! let mut emitter = Emitter::new(Btrfs.producer(&stream[..], 1).unwrap(), Btrfs.split()).unwrap();
//! let (mut out, mut buf) = (Vec::new(), vec![0; 1024]);
//! loop {
//!     let fill = emitter.fill(&mut buf).unwrap();
//!     out.extend_from_slice(&buf[..fill.written]);
//!     if fill.ended { break; }
//! }
//! let mut a = Btrfs.producer(&stream[..], 1).unwrap();
//! let mut b = Btrfs.producer(&out[..], 1).unwrap();
//! assert!(matches!(compare(&mut a, &mut b, &Btrfs.split()).unwrap(), Outcome::Equal { .. }));
//! ```

use proto_checkpoint::{DataSplit, Fault, Format, FormatProducer, Head, StreamHead};
use proto_header::FixedHeaderFormat;
use proto_tlv::{Command, Profile};

use crate::header::{parse_header, profile, HEADER_LEN};
use crate::{AttrType, CommandType, Error};

/// btrfs's split rule: a `WRITE` whose `DATA` is last becomes several
/// `WRITE`s, each with the same path, its share of the data, and the file
/// offset advanced by the data before it. No other command is split
/// (`ENCODED_WRITE` carries compressed extents, which cannot be cut).
pub const WRITE_SPLIT: DataSplit = DataSplit {
    cmd: CommandType::WRITE.0,
    offset_attr: AttrType::FILE_OFFSET.0,
    data_attr: AttrType::DATA.0,
    path_attr: Some(AttrType::PATH.0),
};

/// The btrfs send-stream family: the 17-byte header of
/// [`proto_header::BTRFS`], versions 1 to 3 with their profiles, streams
/// that concatenate (a full and incremental ones, as `btrfs receive` takes
/// them), [`WRITE_SPLIT`], contexts named `subvol:PATH` / `snapshot:PATH`
/// after their first command, and type 0 refused by receivers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Btrfs;

/// A producer over a btrfs stream file (see [`FormatProducer`]).
pub type StreamProducer<S> = FormatProducer<Btrfs, S>;

impl From<Fault> for Error {
    fn from(f: Fault) -> Self {
        match f {
            Fault::Io { offset, source } => Error::Io { offset, source },
            Fault::State { why } => Error::State { why },
            // Fault is non_exhaustive.
            other => Error::Io {
                offset: 0,
                source: std::io::Error::other(other.to_string()),
            },
        }
    }
}

impl Format for Btrfs {
    type Error = Error;
    type Split = DataSplit;

    fn name(&self) -> &'static str {
        "btrfs"
    }

    fn fixed_header(&self) -> &FixedHeaderFormat {
        &proto_header::BTRFS
    }

    fn head(&self, bytes: &[u8], offset: u64) -> Result<Head, Error> {
        if bytes.len() < HEADER_LEN && bytes.starts_with(&crate::MAGIC[..bytes.len().min(13)]) {
            return Ok(Head::Need(HEADER_LEN));
        }
        let version = parse_header(bytes).map_err(|e| e.header_at(offset))?;
        Ok(Head::Head(StreamHead {
            len: HEADER_LEN,
            version,
            profile: profile(version)?,
        }))
    }

    fn profile(&self, version: u32) -> Result<Profile, Error> {
        profile(version)
    }

    fn concatenates(&self) -> bool {
        true
    }

    fn split(&self) -> DataSplit {
        WRITE_SPLIT
    }

    fn check_command(&self, cmd: &Command<'_>) -> Result<(), Error> {
        if cmd.cmd() == CommandType::UNSPEC.0 {
            return Err(Error::UnspecCommand {
                index: cmd.index(),
                offset: cmd.offset(),
            });
        }
        Ok(())
    }

    fn context_name(&self, n: usize, first: Option<&Command<'_>>) -> String {
        let c = first.map(|c| CommandType(c.cmd()));
        let path = first.and_then(|c| c.attr(AttrType::PATH.0));
        match (c, path) {
            (Some(CommandType::SUBVOL), Some(p)) => {
                format!("subvol:{}", String::from_utf8_lossy(p.value()))
            }
            (Some(CommandType::SNAPSHOT), Some(p)) => {
                format!("snapshot:{}", String::from_utf8_lossy(p.value()))
            }
            _ => format!("stream:{n}"),
        }
    }
}
