//! A producer over a stream as it is made: any `Read` (the stdout of a
//! running `btrfs send`, standard input), read once, front to back, through
//! one reused buffer ([`ReadBuf`]): nothing is spooled.
//!
//! A live stream cannot seek back, so a sender that lost its window
//! re-arms by making the stream again (`btrfs send` is deterministic for a
//! read-only snapshot) and skipping the units the receiver has: every unit
//! boundary is a safe point whose state is the unit number, the byte offset
//! and a digest of every unit before it and of the one at it (a CRC-32C
//! chain over the commands' lengths and their own CRCs, and the stream
//! headers' bytes: no second pass over the data; the unit at the safe point
//! is in it because an emitter may have sent part of it). [`restore`](Producer::restore) walks the new stream
//! to the token's unit and refuses it when the digest or the offset differ
//! — a snapshot replaced under the same name is a typed refusal, never a
//! spliced stream.
//!
//! The stream id binding its tokens is made of the first 64 KiB of the
//! stream (for btrfs: the header and the first command, which names the
//! snapshot's UUID and ctransid).

use std::io::Read;

use proto_tlv::{frame_len, CmdBuf, ErrorKind, Profile, ReadBuf, CMD_HEADER_LEN};
use zerocopy::byteorder::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::format::{Fault, Format, Head, StreamHead};
use crate::{Producer, Unit, UnitKind, Units};

/// Bytes of the stream's start its id is made of.
const ID_SPAN: usize = 64 * 1024;
/// Reads of at least this many bytes.
const CHUNK: usize = 256 * 1024;

/// A [`Producer`] over a stream of format `F` read from `R` as it comes
/// (see the module documentation). Every unit boundary is a safe point.
#[derive(Debug)]
pub struct ReadProducer<F, R> {
    format: F,
    r: R,
    buf: ReadBuf,
    /// Stream offset of the first available byte of `buf`.
    pos: u64,
    /// Units advanced past.
    unit: u64,
    cmd_index: u64,
    /// The current stream's profile; `None`: a stream header comes next,
    /// or the end of the input after an END.
    profile: Option<Profile>,
    /// Whether a stream has ended (the input may end here).
    ended: bool,
    /// The unit at `pos`, once framed, and the header's profile if it is one.
    framed: Option<(usize, UnitKind)>,
    head: Option<StreamHead>,
    digest: u32,
    last_safe: LiveState,
    stream_id: [u8; 16],
}

/// The state of a [`ReadProducer`] safe point.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
struct LiveState {
    version: u8,
    unit: U64,
    pos: U64,
    digest: U32,
}
const _: () = assert!(size_of::<LiveState>() == 21);

fn bad_state<E: From<Fault>>(why: &'static str) -> E {
    Fault::State { why }.into()
}

impl<F: Format, R: Read> ReadProducer<F, R> {
    /// A producer at the start of the stream `r` yields (reads its first
    /// 64 KiB, or all of it when shorter, to make the stream id).
    pub fn new(format: F, r: R) -> Result<Self, F::Error> {
        let mut p = ReadProducer {
            format,
            r,
            buf: ReadBuf::new(),
            pos: 0,
            unit: 0,
            cmd_index: 0,
            profile: None,
            ended: false,
            framed: None,
            head: None,
            digest: 0,
            last_safe: LiveState {
                version: 1,
                unit: 0.into(),
                pos: 0.into(),
                digest: 0.into(),
            },
            stream_id: [0; 16],
        };
        let have = p.fill(ID_SPAN)?;
        let start = &p.buf.available()[..have.min(ID_SPAN)];
        for (i, part) in p.stream_id.chunks_mut(4).enumerate() {
            let seeded = proto_crc32c::crc32c_append(0x5052_4c56 ^ i as u32, start);
            part.copy_from_slice(&seeded.to_le_bytes());
        }
        Ok(p)
    }

    /// Makes at least `n` bytes available unless the input ends first;
    /// how many are.
    fn fill(&mut self, n: usize) -> Result<usize, F::Error> {
        let pos = self.pos;
        self.buf.fill_from(&mut self.r, n, CHUNK).map_err(|source| {
            Fault::Io {
                offset: pos,
                source,
            }
            .into()
        })
    }

    /// Frames the unit at the cursor: its length and kind, or `None` at
    /// the end of the input (after an END).
    fn frame(&mut self) -> Result<Option<(usize, UnitKind)>, F::Error> {
        if let Some(f) = self.framed {
            return Ok(Some(f));
        }
        let pos = self.pos;
        let f = match self.profile {
            None => {
                if self.ended && self.fill(1)? == 0 {
                    return Ok(None);
                }
                if self.ended && !self.format.concatenates() {
                    let len = self.buf.available().len() as u64;
                    return Err(ErrorKind::TrailingData { len }.at(0, pos).into());
                }
                let mut want = self.format.fixed_header().encoded_len();
                loop {
                    let have = self.fill(want)?;
                    match self
                        .format
                        .head(&self.buf.available()[..have.min(want)], pos)?
                    {
                        Head::Head(h) => {
                            self.head = Some(h);
                            break (h.len, UnitKind::Raw);
                        }
                        Head::Need(more) if more > have.min(want) && have >= want => want = more,
                        Head::Need(more) => {
                            return Err(ErrorKind::Truncated {
                                what: "stream header",
                                needed: more as u64,
                                available: have as u64,
                            }
                            .at(0, pos)
                            .into())
                        }
                    }
                }
            }
            Some(p) => {
                let index = self.cmd_index;
                let have = self.fill(CMD_HEADER_LEN)?;
                if have == 0 {
                    return Err(ErrorKind::MissingEnd.at(index, pos).into());
                }
                let total = frame_len(self.buf.available(), &p, index, pos)?;
                let have = self.fill(total)?;
                if have < total {
                    return Err(ErrorKind::Truncated {
                        what: "command payload",
                        needed: total as u64,
                        available: have as u64,
                    }
                    .at(index, pos)
                    .into());
                }
                (total, UnitKind::Command(p))
            }
        };
        self.framed = Some(f);
        Ok(Some(f))
    }
}

impl<F: Format, R: Read> Units for ReadProducer<F, R> {
    type Error = F::Error;

    fn current(&mut self) -> Result<Option<Unit<'_>>, F::Error> {
        let Some((len, kind)) = self.frame()? else {
            return Ok(None);
        };
        Ok(Some(Unit {
            kind,
            bytes: &self.buf.available()[..len],
            index: self.cmd_index,
            offset: self.pos,
        }))
    }

    fn advance(&mut self) -> Result<(), F::Error> {
        let Some((len, kind)) = self.frame()? else {
            return Ok(());
        };
        let bytes = &self.buf.available()[..len];
        self.digest = link(self.digest, kind, bytes);
        match kind {
            UnitKind::Raw => {
                self.profile = self.head.take().map(|h| h.profile);
                self.cmd_index = 0;
            }
            UnitKind::Command(p) => {
                if CmdBuf::new_checked(bytes).map(|c| c.cmd()) == Some(p.end_cmd) {
                    self.profile = None;
                    self.ended = true;
                }
                self.cmd_index += 1;
            }
        }
        self.buf.consume(len);
        self.pos += len as u64;
        self.unit += 1;
        self.framed = None;
        Ok(())
    }
}

impl<F: Format, R: Read> ReadProducer<F, R> {
    /// The digest of every unit before the cursor chained with the one at
    /// it (whose start a token may have been made in: an emitter that split
    /// it re-arms past the part it sent).
    fn digest_through_current(&mut self) -> Result<u32, F::Error> {
        let digest = self.digest;
        Ok(match self.current()? {
            None => digest,
            Some(u) => link(digest, u.kind, u.bytes),
        })
    }
}

/// The digest chained with one unit: a header's bytes, a command's length
/// and its own CRC.
fn link(digest: u32, kind: UnitKind, bytes: &[u8]) -> u32 {
    match kind {
        UnitKind::Raw => proto_crc32c::crc32c_append(digest, bytes),
        UnitKind::Command(_) => {
            let mut l = [0u8; 12];
            l[..8].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
            if let Some(c) = CmdBuf::new_checked(bytes) {
                l[8..].copy_from_slice(&c.crc().to_le_bytes());
            }
            proto_crc32c::crc32c_append(digest, &l)
        }
    }
}

impl<F: Format, R: Read> Producer for ReadProducer<F, R> {
    fn safe_point(&mut self) -> Result<bool, F::Error> {
        self.last_safe = LiveState {
            version: 1,
            unit: self.unit.into(),
            pos: self.pos.into(),
            digest: self.digest_through_current()?.into(),
        };
        Ok(true)
    }

    fn save_state(&mut self, state: &mut Vec<u8>) -> Result<(), F::Error> {
        state.extend_from_slice(self.last_safe.as_bytes());
        Ok(())
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), F::Error> {
        let s = LiveState::read_from_bytes(state)
            .map_err(|_| bad_state::<F::Error>("not a live stream's state (21 bytes)"))?;
        if s.version != 1 {
            return Err(bad_state("unknown live state version"));
        }
        if s.unit.get() < self.unit {
            return Err(bad_state(
                "a live stream cannot go back: make the stream again from its start",
            ));
        }
        while self.unit < s.unit.get() {
            if self.frame()?.is_none() {
                return Err(bad_state(
                    "the stream made again ends before the token's position",
                ));
            }
            self.advance()?;
        }
        if self.pos != s.pos.get() || self.digest_through_current()? != s.digest.get() {
            return Err(bad_state(
                "the stream made again differs from the one the token was made over (was the snapshot replaced?)",
            ));
        }
        self.last_safe = s;
        Ok(())
    }

    fn position(&self) -> u64 {
        self.unit
    }

    fn stream_id(&self) -> [u8; 16] {
        self.stream_id
    }
}
