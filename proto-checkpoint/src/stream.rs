//! The producer over a stream file of any [`Format`], and the streams
//! (contexts) of a file.

use proto_tlv::{decode_command, frame_len, CmdBuf, ErrorKind, CMD_HEADER_LEN};

use crate::format::{Fault, Format, Head, StreamHead};
use crate::{Producer, Source, Unit, UnitKind};

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
) -> Result<usize, F::Error> {
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
    Ok(total)
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
            let total = frame_command::<F, S>(src, &p, index, pos)?;
            let h = src.read_at(pos, CMD_HEADER_LEN).map_err(io_fault(pos))?;
            let cmd = CmdBuf::new_checked(h).map(|c| c.cmd());
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
const STATE_LEN: usize = 42;
const FLAG_HEADER_NEXT: u8 = 1;

/// A [`Producer`] over a stream file of format `F` (one stream, or several
/// concatenated where the format allows it), unit by unit: each stream
/// header, then each command as it is in the file. A safe point comes every
/// `safe_every` units; re-arming then skips the units since.
///
/// Each unit is framed (header, command length within the profile's
/// maximum, END present) as the cursor reaches it; CRCs are checked by the
/// emitter as it copies.
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
    format: F,
    src: S,
    safe_every: u64,
    stream_id: [u8; 16],
    /// Byte offset of the unit at the cursor.
    pos: u64,
    /// Units advanced past.
    unit: u64,
    /// Index in its stream of the next command.
    cmd_index: u64,
    /// The current stream's version (0 before the first header).
    version: u32,
    /// The current stream's profile; `None`: a stream header comes next
    /// (or the end of the input, after an END).
    profile: Option<proto_tlv::Profile>,
    /// Length and kind of the unit at `pos`, once framed.
    framed: Option<(usize, UnitKind)>,
    /// The version and profile of the header at `pos`, once framed.
    head: Option<StreamHead>,
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

impl<F: Format, S: Source> FormatProducer<F, S> {
    /// A producer at the start of `src`, with a safe point every
    /// `safe_every` units (0 is taken as 1).
    pub fn new(format: F, mut src: S, safe_every: u64) -> Result<Self, F::Error> {
        let len = src.len();
        let head = crc32c::crc32c(
            src.read_at(0, len.min(ID_SPAN) as usize)
                .map_err(io_fault(0))?,
        );
        let tail_at = len.saturating_sub(ID_SPAN);
        let tail = crc32c::crc32c(
            src.read_at(tail_at, (len - tail_at) as usize)
                .map_err(io_fault(tail_at))?,
        );
        let mut stream_id = [0u8; 16];
        stream_id[..8].copy_from_slice(&len.to_le_bytes());
        stream_id[8..12].copy_from_slice(&head.to_le_bytes());
        stream_id[12..].copy_from_slice(&tail.to_le_bytes());
        Ok(FormatProducer {
            format,
            src,
            safe_every: safe_every.max(1),
            stream_id,
            pos: 0,
            unit: 0,
            cmd_index: 0,
            version: 0,
            profile: None,
            framed: None,
            head: None,
            last_safe: SafeAt {
                header_next: true,
                ..SafeAt::default()
            },
        })
    }

    /// The format.
    pub fn format(&self) -> &F {
        &self.format
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
    fn frame(&mut self) -> Result<Option<(usize, UnitKind)>, F::Error> {
        if let Some(f) = self.framed {
            return Ok(Some(f));
        }
        let left = self.src.len() - self.pos;
        let framed = match self.profile {
            None if left == 0 && self.unit > 0 => return Ok(None),
            None if self.unit > 0 && !self.format.concatenates() => {
                return Err(ErrorKind::TrailingData { len: left }
                    .at(self.cmd_index, self.pos)
                    .into())
            }
            None => {
                let head = read_head(&self.format, &mut self.src, self.pos)?;
                self.head = Some(head);
                (head.len, UnitKind::Raw)
            }
            Some(p) => {
                let total = frame_command::<F, S>(&mut self.src, &p, self.cmd_index, self.pos)?;
                (total, UnitKind::Command(p))
            }
        };
        self.framed = Some(framed);
        Ok(Some(framed))
    }

    /// CRC-32C of the (up to) 64 bytes at `pos` (within the stream).
    fn fingerprint_at(&mut self, pos: u64) -> Result<u32, F::Error> {
        let n = (self.src.len() - pos).min(FINGERPRINT_SPAN) as usize;
        let b = self.src.read_at(pos, n).map_err(io_fault(pos))?;
        Ok(crc32c::crc32c(b))
    }
}

impl<F: Format, S: Source> Producer for FormatProducer<F, S> {
    type Error = F::Error;

    fn current(&mut self) -> Result<Option<Unit<'_>>, F::Error> {
        let Some((len, kind)) = self.frame()? else {
            return Ok(None);
        };
        let bytes = self
            .src
            .read_at(self.pos, len)
            .map_err(io_fault(self.pos))?;
        Ok(Some(Unit {
            kind,
            bytes,
            index: self.cmd_index,
            offset: self.pos,
        }))
    }

    fn advance(&mut self) -> Result<(), F::Error> {
        let Some((len, kind)) = self.frame()? else {
            return Ok(());
        };
        match kind {
            UnitKind::Raw => {
                if let Some(h) = self.head.take() {
                    self.version = h.version;
                    self.profile = Some(h.profile);
                }
                self.cmd_index = 0;
            }
            UnitKind::Command(p) => {
                let h = self
                    .src
                    .read_at(self.pos, CMD_HEADER_LEN)
                    .map_err(io_fault(self.pos))?;
                if CmdBuf::new_checked(h).map(|c| c.cmd()) == Some(p.end_cmd) {
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

    fn safe_point(&mut self) -> Result<bool, F::Error> {
        if self.unit % self.safe_every != 0 {
            return Ok(false);
        }
        self.last_safe = SafeAt {
            pos: self.pos,
            unit: self.unit,
            cmd_index: self.cmd_index,
            version: self.version,
            header_next: self.profile.is_none(),
        };
        Ok(true)
    }

    fn save_state(&mut self, state: &mut Vec<u8>) -> Result<(), F::Error> {
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

    fn restore(&mut self, state: &[u8]) -> Result<(), F::Error> {
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
            Some(
                self.format
                    .profile(version)
                    .map_err(|_| bad_state::<F::Error>("unsupported stream version"))?,
            )
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
        self.version = version;
        self.profile = profile;
        self.framed = None;
        self.head = None;
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
