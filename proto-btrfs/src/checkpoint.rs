//! Checkpointable emission of btrfs send streams: the `WRITE` split rule,
//! and a [`Producer`] over a stream file with a safe point every K units.
//!
//! ```
//! use proto_btrfs::checkpoint::{StreamProducer, WRITE_SPLIT};
//! use proto_btrfs::{BtrfsCommand, StreamWriter};
//! use proto_checkpoint::{compare, Emitter, Outcome};
//!
//! let mut stream = Vec::new();
//! let w = StreamWriter::new(2, &mut stream).unwrap();
//! w.write(&BtrfsCommand::Subvol { path: b"snap", uuid: [1; 16], ctransid: 9 }, &mut stream).unwrap();
//! w.write(&BtrfsCommand::Mkfile { path: b"f", ino: 257 }, &mut stream).unwrap();
//! w.write(&BtrfsCommand::Write { path: b"f", offset: 0, data: &[0xab; 3000] }, &mut stream).unwrap();
//! w.finish(&mut stream).unwrap();
//!
//! // Re-emit through 1 KiB buffers: the write becomes several valid writes.
//! let mut emitter = Emitter::new(StreamProducer::new(&stream[..], 1).unwrap(), WRITE_SPLIT).unwrap();
//! let (mut out, mut buf) = (Vec::new(), vec![0; 1024]);
//! loop {
//!     let fill = emitter.fill(&mut buf).unwrap();
//!     out.extend_from_slice(&buf[..fill.written]);
//!     if fill.ended { break; }
//! }
//! let mut a = StreamProducer::new(&stream[..], 1).unwrap();
//! let mut b = StreamProducer::new(&out[..], 1).unwrap();
//! assert!(matches!(compare(&mut a, &mut b, &WRITE_SPLIT).unwrap(), Outcome::Equal { .. }));
//! ```

use std::io;

use proto_checkpoint::{DataSplit, Producer, Source, Unit, UnitKind};
use proto_tlv::{frame_len, ErrorKind, Profile, CMD_HEADER_LEN};

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

/// One stream of a file of concatenated streams (see [`list_streams`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamSpan {
    /// Byte offset of its header in the file.
    pub offset: u64,
    /// Its length, header to END included.
    pub len: u64,
    /// Its protocol version.
    pub version: u32,
    /// Its largest unit in bytes (stream header or whole command): a
    /// buffer of this size takes any of its commands unsplit.
    pub largest: usize,
    /// Its first command (`SUBVOL` or `SNAPSHOT` in a kernel stream) and
    /// that command's `PATH`, if it has one.
    pub first: Option<(CommandType, Vec<u8>)>,
}

impl StreamSpan {
    /// A short name: `subvol:PATH`, `snapshot:PATH`, or `stream:N` (N from
    /// 1) when the first command has no path.
    pub fn name(&self, n: usize) -> String {
        match &self.first {
            Some((c, path)) if *c == CommandType::SUBVOL || *c == CommandType::SNAPSHOT => {
                let kind = if *c == CommandType::SUBVOL {
                    "subvol"
                } else {
                    "snapshot"
                };
                format!("{kind}:{}", String::from_utf8_lossy(path))
            }
            _ => format!("stream:{n}"),
        }
    }
}

/// The streams of `src` (one, or several concatenated), found by walking
/// command headers alone: each header is framed (magic, version, lengths
/// within the version's maximum, END present) but no CRC is checked.
///
/// Errors: as [`StreamProducer`] frames them (byte offset and command
/// index), and [`Error::Io`].
pub fn list_streams<S: Source + ?Sized>(src: &mut S) -> Result<Vec<StreamSpan>, Error> {
    let len = src.len();
    let mut pos = 0u64;
    let mut out = Vec::new();
    while pos < len || out.is_empty() {
        let start = pos;
        let h = src
            .read_at(pos, (len - pos).min(HEADER_LEN as u64) as usize)
            .map_err(io_error(pos))?;
        let version = parse_header(h).map_err(|e| e.header_at(pos))?;
        let p = profile(version)?;
        pos += HEADER_LEN as u64;
        let mut first = None;
        let mut index = 0u64;
        let mut largest = HEADER_LEN;
        loop {
            let left = len - pos;
            if left == 0 {
                return Err(ErrorKind::MissingEnd.at(index, pos).into());
            }
            let h = src
                .read_at(pos, left.min(CMD_HEADER_LEN as u64) as usize)
                .map_err(io_error(pos))?;
            let total = frame_len(h, &p, index, pos)?;
            if total as u64 > left {
                return Err(ErrorKind::Truncated {
                    what: "command payload",
                    needed: total as u64,
                    available: left,
                }
                .at(index, pos)
                .into());
            }
            let cmd = u16::from_le_bytes([h[4], h[5]]);
            if index == 0 {
                let bytes = src.read_at(pos, total).map_err(io_error(pos))?;
                let (c, _) = proto_tlv::decode_command(bytes, &p, index, pos)?;
                let path = c.attr(AttrType::PATH.0).map(|a| a.value().to_vec());
                first = path.map(|path| (CommandType(cmd), path));
            }
            largest = largest.max(total);
            pos += total as u64;
            index += 1;
            if cmd == p.end_cmd {
                break;
            }
        }
        out.push(StreamSpan {
            offset: start,
            len: pos - start,
            version,
            largest,
            first,
        });
    }
    Ok(out)
}

/// Bytes hashed at each end of the stream for its id.
const ID_SPAN: u64 = 64 * 1024;
/// Bytes at a safe point whose CRC the state records.
const FINGERPRINT_SPAN: u64 = 64;
const STATE_VERSION: u8 = 1;
const STATE_LEN: usize = 42;
const FLAG_HEADER_NEXT: u8 = 1;

/// A [`Producer`] over a btrfs send stream file (one stream, or several
/// concatenated as `btrfs receive` takes them), unit by unit: each stream
/// header, then each command as it is in the file. A safe point comes every
/// `safe_every` units, as the kernel can checkpoint only where its state can
/// be written down; re-arming then skips the units since.
///
/// Each unit is framed (header magic and version, command length within
/// the version's maximum, END present) as the cursor reaches it; CRCs are
/// checked by the emitter as it copies.
///
/// # Stream id and state
///
/// A btrfs stream has no id of its own. Tokens are bound to the file by
/// an id made of its length and the CRC-32C of its first and last 64 KiB;
/// each safe-point state also records the CRC-32C of the 64 bytes at the
/// safe point, which [`restore`](Producer::restore) checks. The state (42
/// bytes, little-endian): version 1, flags (bit 0: a stream header comes
/// next), byte offset, unit number, command index in its stream, the
/// stream's protocol version, fingerprint, and the safe-point interval,
/// which [`restore`](Producer::restore) adopts: a token carries the
/// interval it was made with, so its resumer need not know it.
#[derive(Debug)]
pub struct StreamProducer<S> {
    src: S,
    safe_every: u64,
    stream_id: [u8; 16],
    /// Byte offset of the unit at the cursor.
    pos: u64,
    /// Units advanced past.
    unit: u64,
    /// Index in its stream of the next command.
    cmd_index: u64,
    /// The current stream's version; `None`: a stream header comes next
    /// (or the end of the input, after an END).
    version: Option<u32>,
    profile: Option<Profile>,
    /// Length and kind of the unit at `pos`, once framed.
    framed: Option<(usize, UnitKind)>,
    /// The last safe point: the cursor fields there.
    last_safe: SafeAt,
}

/// Where a safe point is: what its state records (but the fingerprint,
/// computed when the state is written out).
#[derive(Clone, Copy, Debug, Default)]
struct SafeAt {
    pos: u64,
    unit: u64,
    cmd_index: u64,
    version: u32,
    header_next: bool,
}

fn io_error(offset: u64) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Io { offset, source }
}

impl<S: Source> StreamProducer<S> {
    /// A producer at the start of `src`, with a safe point every
    /// `safe_every` units (0 is taken as 1).
    pub fn new(mut src: S, safe_every: u64) -> Result<Self, Error> {
        let len = src.len();
        let head = crc32c::crc32c(
            src.read_at(0, len.min(ID_SPAN) as usize)
                .map_err(io_error(0))?,
        );
        let tail_at = len.saturating_sub(ID_SPAN);
        let tail = crc32c::crc32c(
            src.read_at(tail_at, (len - tail_at) as usize)
                .map_err(io_error(tail_at))?,
        );
        let mut stream_id = [0u8; 16];
        stream_id[..8].copy_from_slice(&len.to_le_bytes());
        stream_id[8..12].copy_from_slice(&head.to_le_bytes());
        stream_id[12..].copy_from_slice(&tail.to_le_bytes());
        Ok(StreamProducer {
            src,
            safe_every: safe_every.max(1),
            stream_id,
            pos: 0,
            unit: 0,
            cmd_index: 0,
            version: None,
            profile: None,
            framed: None,
            last_safe: SafeAt {
                header_next: true,
                ..SafeAt::default()
            },
        })
    }

    /// The units' safe-point interval.
    pub fn safe_every(&self) -> u64 {
        self.safe_every
    }

    /// Byte offset of the unit at the cursor.
    pub fn offset(&self) -> u64 {
        self.pos
    }

    /// Frames the unit at the cursor: its length and kind, or `None` at the
    /// end of the input.
    fn frame(&mut self) -> Result<Option<(usize, UnitKind)>, Error> {
        if let Some(f) = self.framed {
            return Ok(Some(f));
        }
        let len = self.src.len();
        let left = len - self.pos;
        let framed = match self.profile {
            None if left == 0 && self.unit > 0 => return Ok(None),
            None => {
                let h = self
                    .src
                    .read_at(self.pos, left.min(HEADER_LEN as u64) as usize)
                    .map_err(io_error(self.pos))?;
                let version = parse_header(h).map_err(|e| e.header_at(self.pos))?;
                self.version = Some(version);
                (HEADER_LEN, UnitKind::Raw)
            }
            Some(p) => {
                let at = (self.cmd_index, self.pos);
                if left == 0 {
                    return Err(ErrorKind::MissingEnd.at(at.0, at.1).into());
                }
                let h = self
                    .src
                    .read_at(self.pos, left.min(CMD_HEADER_LEN as u64) as usize)
                    .map_err(io_error(self.pos))?;
                let total = frame_len(h, &p, at.0, at.1)?;
                if total as u64 > left {
                    return Err(ErrorKind::Truncated {
                        what: "command payload",
                        needed: total as u64,
                        available: left,
                    }
                    .at(at.0, at.1)
                    .into());
                }
                (total, UnitKind::Command(p))
            }
        };
        self.framed = Some(framed);
        Ok(Some(framed))
    }

    /// CRC-32C of the (up to) 64 bytes at `pos` (within the stream).
    fn fingerprint_at(&mut self, pos: u64) -> Result<u32, Error> {
        let n = (self.src.len() - pos).min(FINGERPRINT_SPAN) as usize;
        let b = self.src.read_at(pos, n).map_err(io_error(pos))?;
        Ok(crc32c::crc32c(b))
    }
}

fn bad_state(why: &'static str) -> Error {
    Error::State { why }
}

impl<S: Source> Producer for StreamProducer<S> {
    type Error = Error;

    fn current(&mut self) -> Result<Option<Unit<'_>>, Error> {
        let Some((len, kind)) = self.frame()? else {
            return Ok(None);
        };
        let bytes = self
            .src
            .read_at(self.pos, len)
            .map_err(io_error(self.pos))?;
        Ok(Some(Unit {
            kind,
            bytes,
            index: self.cmd_index,
            offset: self.pos,
        }))
    }

    fn advance(&mut self) -> Result<(), Error> {
        let Some((len, kind)) = self.frame()? else {
            return Ok(());
        };
        match kind {
            UnitKind::Raw => {
                let v = self.version.unwrap_or(1);
                self.profile = Some(profile(v)?);
                self.cmd_index = 0;
            }
            UnitKind::Command(p) => {
                let h = self
                    .src
                    .read_at(self.pos, CMD_HEADER_LEN)
                    .map_err(io_error(self.pos))?;
                if u16::from_le_bytes([h[4], h[5]]) == p.end_cmd {
                    self.profile = None;
                }
                self.cmd_index += 1;
            }
        }
        self.pos += len as u64;
        self.unit += 1;
        self.framed = None;
        Ok(())
    }

    fn safe_point(&mut self) -> Result<bool, Error> {
        if self.unit % self.safe_every != 0 {
            return Ok(false);
        }
        self.last_safe = SafeAt {
            pos: self.pos,
            unit: self.unit,
            cmd_index: self.cmd_index,
            version: self.version.unwrap_or(0),
            header_next: self.profile.is_none(),
        };
        Ok(true)
    }

    fn save_state(&mut self, state: &mut Vec<u8>) -> Result<(), Error> {
        let at = self.last_safe;
        let fingerprint = self.fingerprint_at(at.pos)?;
        state.push(STATE_VERSION);
        state.push(if at.header_next { FLAG_HEADER_NEXT } else { 0 });
        state.extend_from_slice(&at.pos.to_le_bytes());
        state.extend_from_slice(&at.unit.to_le_bytes());
        state.extend_from_slice(&at.cmd_index.to_le_bytes());
        state.extend_from_slice(&at.version.to_le_bytes());
        state.extend_from_slice(&fingerprint.to_le_bytes());
        state.extend_from_slice(&self.safe_every.to_le_bytes());
        Ok(())
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), Error> {
        let Ok::<&[u8; STATE_LEN], _>(s) = state.try_into() else {
            return Err(bad_state("not 42 bytes long"));
        };
        if s[0] != STATE_VERSION {
            return Err(bad_state("unknown state version"));
        }
        let header_next = match s[1] {
            0 => false,
            FLAG_HEADER_NEXT => true,
            _ => return Err(bad_state("unknown flags")),
        };
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&s[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let (pos, unit, cmd_index) = (u64_at(2), u64_at(10), u64_at(18));
        let version = u32::from_le_bytes([s[26], s[27], s[28], s[29]]);
        let fingerprint = u32::from_le_bytes([s[30], s[31], s[32], s[33]]);
        // The interval the token was made with wins: a resumer need not
        // repeat it.
        let safe_every = u64_at(34);
        if safe_every == 0 {
            return Err(bad_state("a safe-point interval of 0"));
        }
        if pos > self.src.len() {
            return Err(bad_state("byte offset beyond the end of the stream"));
        }
        if unit % safe_every != 0 {
            return Err(bad_state("unit is not a safe point at this interval"));
        }
        // Each unit is at least a 10-byte command.
        if unit > pos / CMD_HEADER_LEN as u64 || cmd_index > unit {
            return Err(bad_state("more units than fit before the byte offset"));
        }
        let profile = if header_next {
            if version == 0 && unit > 0 {
                return Err(bad_state("no stream version after a stream"));
            }
            None
        } else {
            Some(profile(version).map_err(|_| bad_state("unsupported stream version"))?)
        };
        if self.fingerprint_at(pos)? != fingerprint {
            return Err(bad_state(
                "the bytes at the safe point are not the ones the token was made over",
            ));
        }
        self.safe_every = safe_every;
        self.pos = pos;
        self.unit = unit;
        self.cmd_index = cmd_index;
        self.version = (version != 0).then_some(version);
        self.profile = profile;
        self.framed = None;
        self.last_safe = SafeAt {
            pos,
            unit,
            cmd_index,
            version,
            header_next,
        };
        Ok(())
    }

    fn position(&self) -> u64 {
        self.unit
    }

    fn stream_id(&self) -> [u8; 16] {
        self.stream_id
    }
}
