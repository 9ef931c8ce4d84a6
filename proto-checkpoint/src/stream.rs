//! The producer over a stream file of any [`Format`], and the streams
//! (contexts) of a file.

use proto_tlv::{decode_command, frame_len, CmdBuf, ErrorKind, CMD_HEADER_LEN};

use crate::format::{Fault, Format, Head, StreamHead};
use crate::{Producer, Source, Unit, UnitKind, Units};
use zerocopy::byteorder::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

fn io_fault(offset: u64) -> impl FnOnce(std::io::Error) -> Fault {
    move |source| Fault::Io { offset, source }
}

fn bad_state<E: From<Fault>>(why: &'static str) -> E {
    Fault::State { why }.into()
}

/// Reads the stream header at `pos` of `src` (asking for more bytes as
/// long as the format needs them, never past the end of `src`).
fn read_head<F: Format, S: Source + ?Sized>(
    format: &F,
    src: &mut S,
    pos: u64,
) -> Result<StreamHead, F::Error> {
    let left = src.len() - pos;
    let mut want = format.fixed_header().encoded_len();
    loop {
        let n = (want as u64).min(left) as usize;
        let bytes = src.read_at(pos, n).map_err(io_fault(pos))?;
        match format.head(bytes, pos)? {
            Head::Head(h) => return Ok(h),
            // A format that asks for no more than it had, or for bytes
            // that are not there, has said all it can.
            Head::Need(more) if more > n && (n as u64) < left => {
                want = more;
            }
            Head::Need(more) => {
                return Err(ErrorKind::Truncated {
                    what: "stream header",
                    needed: more as u64,
                    available: n as u64,
                }
                .at(0, pos)
                .into())
            }
        }
    }
}

/// Frames the command at `pos` (whose index in its stream is `index`)
/// against `profile`: its whole length, within what `src` holds.
fn frame_command<F: Format, S: Source + ?Sized>(
    src: &mut S,
    profile: &proto_tlv::Profile,
    index: u64,
    pos: u64,
) -> Result<(usize, Option<u16>), F::Error> {
    let left = src.len() - pos;
    if left == 0 {
        return Err(ErrorKind::MissingEnd.at(index, pos).into());
    }
    let h = src
        .read_at(pos, left.min(CMD_HEADER_LEN as u64) as usize)
        .map_err(io_fault(pos))?;
    let total = frame_len(h, profile, index, pos)?;
    if total as u64 > left {
        return Err(ErrorKind::Truncated {
            what: "command payload",
            needed: total as u64,
            available: left,
        }
        .at(index, pos)
        .into());
    }
    Ok((total, CmdBuf::new_checked(h).map(|c| c.cmd())))
}

/// One stream of a file (see [`list_streams`]): a context a receiver can
/// select.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamSpan {
    /// Byte offset of its header in the file.
    pub offset: u64,
    /// Its length, header to END included.
    pub len: u64,
    /// Its version.
    pub version: u32,
    /// Its largest unit in bytes (stream header or whole command): a
    /// buffer of this size takes any of its commands unsplit.
    pub largest: usize,
    /// Its name, from its first command ([`Format::context_name`]).
    pub name: String,
}

/// The contexts of a file of `streams` ([`list_streams`]): one per stream,
/// id 1 for the first, named after its first command
/// ([`Format::context_name`]). A session offers these; a selection of ids
/// names the streams `id - 1`.
pub fn contexts(streams: &[StreamSpan]) -> Vec<proto_header::Context> {
    streams
        .iter()
        .enumerate()
        .map(|(i, s)| proto_header::Context {
            id: i as u32 + 1,
            name: s.name.clone(),
        })
        .collect()
}

/// The streams of `src` (one, or several concatenated where the format
/// allows it), found by walking command headers alone: each is framed
/// (header, lengths within the profile's maximum, END present) but no CRC
/// is checked (a stream whose first command is damaged is named as if it
/// had none).
pub fn list_streams<F: Format, S: Source + ?Sized>(
    format: &F,
    src: &mut S,
) -> Result<Vec<StreamSpan>, F::Error> {
    let len = src.len();
    let mut pos = 0u64;
    let mut out = Vec::new();
    while pos < len || out.is_empty() {
        if !out.is_empty() && !format.concatenates() {
            return Err(ErrorKind::TrailingData { len: len - pos }.at(0, pos).into());
        }
        let start = pos;
        let head = read_head(format, src, pos)?;
        let p = head.profile;
        pos += head.len as u64;
        let mut name = None;
        let mut index = 0u64;
        let mut largest = head.len;
        loop {
            let (total, cmd) = frame_command::<F, S>(src, &p, index, pos)?;
            if index == 0 {
                // Named after the first command when it decodes; a damaged
                // one (its CRC or attributes) is left to whoever emits or
                // validates the stream, which checks every command.
                let bytes = src.read_at(pos, total).map_err(io_fault(pos))?;
                if let Ok((c, _)) = decode_command(bytes, &p, index, pos) {
                    name = Some(format.context_name(out.len() + 1, Some(&c)));
                }
            }
            largest = largest.max(total);
            pos += total as u64;
            index += 1;
            if cmd == Some(p.end_cmd) {
                break;
            }
        }
        out.push(StreamSpan {
            offset: start,
            len: pos - start,
            version: head.version,
            largest,
            name: name.unwrap_or_else(|| format.context_name(out.len() + 1, None)),
        });
    }
    Ok(out)
}

/// Bytes hashed at each end of the stream for its id.
const ID_SPAN: u64 = 64 * 1024;
/// Bytes at a safe point whose CRC the state records.
const FINGERPRINT_SPAN: u64 = 64;
const STATE_VERSION: u8 = 1;
const FLAG_HEADER_NEXT: u8 = 1;

/// The units of a stream file of format `F` (one stream, or several
/// concatenated where the format allows it): each stream header, then each
/// command as it is in the file. What [`compare`](crate::compare) walks;
/// [`FormatProducer`] adds safe points to it.
///
/// Each unit is framed (header, command length within the profile's
/// maximum, END present) as the cursor reaches it; CRCs are left to whoever
/// reads the units (the emitter checks each as it copies).
#[derive(Debug)]
pub struct FormatUnits<F, S> {
    format: F,
    src: S,
    at: At,
    /// The current stream's profile; `None`: a stream header comes next
    /// (or the end of the input, after an END).
    profile: Option<proto_tlv::Profile>,
    /// Length and kind of the unit at `at.pos`, once framed, and whether
    /// it is its stream's END command.
    framed: Option<(usize, UnitKind, bool)>,
    /// The version and profile of the header at `at.pos`, once framed.
    head: Option<StreamHead>,
}

/// Where a cursor over a stream file is: what a safe point's state records
/// (with its fingerprint).
#[derive(Clone, Copy, Debug, Default)]
struct At {
    /// Byte offset of the unit at the cursor.
    pos: u64,
    /// Units advanced past.
    unit: u64,
    /// Index in its stream of the next command.
    cmd_index: u64,
    /// The current stream's version (0 before the first header).
    version: u32,
}

impl<F: Format, S: Source> FormatUnits<F, S> {
    /// A cursor at the start of `src`.
    pub fn new(format: F, src: S) -> Self {
        FormatUnits {
            format,
            src,
            at: At::default(),
            profile: None,
            framed: None,
            head: None,
        }
    }

    /// The format.
    pub fn format(&self) -> &F {
        &self.format
    }

    /// Byte offset of the unit at the cursor.
    pub fn offset(&self) -> u64 {
        self.at.pos
    }

    /// Frames the unit at the cursor: its length and kind, or `None` at the
    /// end of the input.
    fn frame(&mut self) -> Result<Option<(usize, UnitKind)>, F::Error> {
        if let Some((len, kind, _)) = self.framed {
            return Ok(Some((len, kind)));
        }
        let At {
            pos,
            unit,
            cmd_index,
            ..
        } = self.at;
        let left = self.src.len() - pos;
        let framed = match self.profile {
            None if left == 0 && unit > 0 => return Ok(None),
            None if unit > 0 && !self.format.concatenates() => {
                return Err(ErrorKind::TrailingData { len: left }
                    .at(cmd_index, pos)
                    .into())
            }
            None => {
                let head = read_head(&self.format, &mut self.src, pos)?;
                self.head = Some(head);
                (head.len, UnitKind::Raw, false)
            }
            Some(p) => {
                let (total, cmd) = frame_command::<F, S>(&mut self.src, &p, cmd_index, pos)?;
                (total, UnitKind::Command(p), cmd == Some(p.end_cmd))
            }
        };
        self.framed = Some(framed);
        Ok(Some((framed.0, framed.1)))
    }

    /// Puts the cursor at `at`, where a stream header comes next when
    /// `profile` is `None`.
    fn seek(&mut self, at: At, profile: Option<proto_tlv::Profile>) {
        self.at = at;
        self.profile = profile;
        self.framed = None;
        self.head = None;
    }

    /// CRC-32C of the (up to) 64 bytes at `pos` (within the stream).
    fn fingerprint_at(&mut self, pos: u64) -> Result<u32, F::Error> {
        let n = (self.src.len() - pos).min(FINGERPRINT_SPAN) as usize;
        let b = self.src.read_at(pos, n).map_err(io_fault(pos))?;
        Ok(proto_crc32c::crc32c(b))
    }
}

impl<F: Format, S: Source> Units for FormatUnits<F, S> {
    type Error = F::Error;

    fn current(&mut self) -> Result<Option<Unit<'_>>, F::Error> {
        let Some((len, kind)) = self.frame()? else {
            return Ok(None);
        };
        let pos = self.at.pos;
        let bytes = self.src.read_at(pos, len).map_err(io_fault(pos))?;
        Ok(Some(Unit {
            kind,
            bytes,
            index: self.at.cmd_index,
            offset: pos,
        }))
    }

    fn advance(&mut self) -> Result<(), F::Error> {
        if self.frame()?.is_none() {
            return Ok(());
        }
        let Some((len, kind, end)) = self.framed else {
            return Ok(());
        };
        match kind {
            UnitKind::Raw => {
                if let Some(h) = self.head.take() {
                    self.at.version = h.version;
                    self.profile = Some(h.profile);
                }
                self.at.cmd_index = 0;
            }
            UnitKind::Command(_) => {
                if end {
                    self.profile = None;
                }
                self.at.cmd_index += 1;
            }
        }
        self.at.pos += len as u64;
        self.at.unit += 1;
        self.framed = None;
        Ok(())
    }
}

/// A [`Producer`] over a stream file of format `F`: its
/// [`FormatUnits`], with a safe point every `safe_every` units; re-arming
/// then skips the units since.
///
/// # Stream id and state
///
/// Tokens are bound to the file by an id made of its length and the
/// CRC-32C of its first and last 64 KiB; each safe-point state also
/// records the CRC-32C of the 64 bytes at the safe point, which
/// [`restore`](Producer::restore) checks. The state (42 bytes,
/// little-endian): version 1, flags (bit 0: a stream header comes next),
/// byte offset, unit number, command index in its stream, the stream's
/// version, fingerprint, and the safe-point interval, which `restore`
/// adopts: a token carries the interval it was made with, so its resumer
/// need not know it.
#[derive(Debug)]
pub struct FormatProducer<F, S> {
    units: FormatUnits<F, S>,
    safe_every: u64,
    stream_id: [u8; 16],
    /// The last safe point, and whether a stream header comes next there.
    last_safe: (At, bool),
}

/// The state of a [`FormatProducer`] safe point, as its tokens carry it.
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
struct FormatState {
    version: u8,
    flags: u8,
    pos: U64,
    unit: U64,
    cmd_index: U64,
    stream_version: U32,
    fingerprint: U32,
    safe_every: U64,
}
const _: () = assert!(size_of::<FormatState>() == 42);

impl<F: Format, S: Source> FormatProducer<F, S> {
    /// A producer at the start of `src`, with a safe point every
    /// `safe_every` units (0 is taken as 1).
    pub fn new(format: F, mut src: S, safe_every: u64) -> Result<Self, F::Error> {
        let len = src.len();
        let head = proto_crc32c::crc32c(
            src.read_at(0, len.min(ID_SPAN) as usize)
                .map_err(io_fault(0))?,
        );
        let tail_at = len.saturating_sub(ID_SPAN);
        let tail = proto_crc32c::crc32c(
            src.read_at(tail_at, (len - tail_at) as usize)
                .map_err(io_fault(tail_at))?,
        );
        let mut stream_id = [0u8; 16];
        stream_id[..8].copy_from_slice(&len.to_le_bytes());
        stream_id[8..12].copy_from_slice(&head.to_le_bytes());
        stream_id[12..].copy_from_slice(&tail.to_le_bytes());
        Ok(FormatProducer {
            units: FormatUnits::new(format, src),
            safe_every: safe_every.max(1),
            stream_id,
            last_safe: (At::default(), true),
        })
    }

    /// The format.
    pub fn format(&self) -> &F {
        self.units.format()
    }

    /// The units' safe-point interval.
    pub fn safe_every(&self) -> u64 {
        self.safe_every
    }

    /// Byte offset of the unit at the cursor.
    pub fn offset(&self) -> u64 {
        self.units.offset()
    }
}

impl<F: Format, S: Source> Units for FormatProducer<F, S> {
    type Error = F::Error;

    fn current(&mut self) -> Result<Option<Unit<'_>>, F::Error> {
        self.units.current()
    }

    fn advance(&mut self) -> Result<(), F::Error> {
        self.units.advance()
    }
}

/// A run of commands ([`Producer::commands_ahead`]) reads at most this far
/// ahead: a quarter of what a [`FileSource`](crate::FileSource) reads
/// ahead, so that its buffer does not grow past that for a run.
const RUN_AHEAD: usize = crate::source::READ_AHEAD / 4;

impl<F: Format, S: Source> Producer for FormatProducer<F, S> {
    fn safe_point(&mut self) -> Result<bool, F::Error> {
        if !crate::producer::is_nth(self.units.at.unit, self.safe_every) {
            return Ok(false);
        }
        self.last_safe = (self.units.at, self.units.profile.is_none());
        Ok(true)
    }

    fn commands_ahead(&mut self, max: usize) -> Result<Option<Unit<'_>>, F::Error> {
        let u = &mut self.units;
        let Some(p) = u.profile else {
            return Ok(None);
        };
        let pos = u.at.pos;
        // Within one range of the source (no copy across ranges) and at
        // most RUN_AHEAD (a file source then holds no more than it does
        // anyway).
        let take = u.src.contiguous(pos).min(max as u64).min(RUN_AHEAD as u64) as usize;
        if take < proto_tlv::CMD_HEADER_LEN {
            return Ok(None);
        }
        let bytes = u.src.read_at(pos, take).map_err(io_fault(pos))?;
        Ok(Some(Unit {
            kind: UnitKind::Command(p),
            bytes,
            index: u.at.cmd_index,
            offset: pos,
        }))
    }

    fn advance_commands(&mut self, units: u64, bytes: u64) -> Result<(), F::Error> {
        let u = &mut self.units;
        u.at.pos += bytes;
        u.at.unit += units;
        u.at.cmd_index += units;
        u.framed = None;
        Ok(())
    }

    fn safe_points(&self) -> Option<(u64, u64)> {
        crate::producer::every_nth(self.units.at.unit, self.safe_every)
    }

    fn save_state(&mut self, state: &mut Vec<u8>) -> Result<(), F::Error> {
        let (at, header_next) = self.last_safe;
        let s = FormatState {
            version: STATE_VERSION,
            flags: if header_next { FLAG_HEADER_NEXT } else { 0 },
            pos: U64::new(at.pos),
            unit: U64::new(at.unit),
            cmd_index: U64::new(at.cmd_index),
            stream_version: U32::new(at.version),
            fingerprint: U32::new(self.units.fingerprint_at(at.pos)?),
            safe_every: U64::new(self.safe_every),
        };
        state.extend_from_slice(s.as_bytes());
        Ok(())
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), F::Error> {
        let s = FormatState::ref_from_bytes(state)
            .map_err(|_| bad_state::<F::Error>("not 42 bytes long"))?;
        if s.version != STATE_VERSION {
            return Err(bad_state("unknown state version"));
        }
        let header_next = match s.flags {
            0 => false,
            FLAG_HEADER_NEXT => true,
            _ => return Err(bad_state("unknown flags")),
        };
        let at = At {
            pos: s.pos.get(),
            unit: s.unit.get(),
            cmd_index: s.cmd_index.get(),
            version: s.stream_version.get(),
        };
        // The interval the token was made with wins: a resumer need not
        // repeat it.
        let safe_every = s.safe_every.get();
        if safe_every == 0 {
            return Err(bad_state("a safe-point interval of 0"));
        }
        if at.pos > self.units.src.len() {
            return Err(bad_state("byte offset beyond the end of the stream"));
        }
        if !at.unit.is_multiple_of(safe_every) {
            return Err(bad_state("unit is not a safe point at this interval"));
        }
        // Each unit is at least a 10-byte command.
        if at.unit > at.pos / CMD_HEADER_LEN as u64 || at.cmd_index > at.unit {
            return Err(bad_state("more units than fit before the byte offset"));
        }
        let profile = if header_next {
            if at.version == 0 && at.unit > 0 {
                return Err(bad_state("no stream version after a stream"));
            }
            None
        } else {
            Some(
                self.units
                    .format
                    .profile(at.version)
                    .map_err(|_| bad_state::<F::Error>("unsupported stream version"))?,
            )
        };
        if self.units.fingerprint_at(at.pos)? != s.fingerprint.get() {
            return Err(bad_state(
                "the bytes at the safe point are not the ones the token was made over",
            ));
        }
        self.safe_every = safe_every;
        self.units.seek(at, profile);
        self.last_safe = (at, header_next);
        Ok(())
    }

    fn position(&self) -> u64 {
        self.units.at.unit
    }

    fn stream_id(&self) -> [u8; 16] {
        self.stream_id
    }
}
