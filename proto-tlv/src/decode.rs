//! Decoding: one command from a slice, a fast iterator over an in-memory
//! stream, and an incremental (sans-IO) decoder fed in arbitrary pieces.

use alloc::vec::Vec;

use zerocopy::byteorder::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::attr::{self, Attr, Attrs};
use crate::{Error, ErrorKind, Profile};

/// The 10-byte command header, little-endian.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct CmdHeader {
    /// Payload length (bytes after this header).
    pub len: U32,
    /// Command type.
    pub cmd: U16,
    /// CRC32C over this header (with `crc` zeroed) and the payload.
    pub crc: U32,
}

/// Size of [`CmdHeader`] on the wire.
pub const CMD_HEADER_LEN: usize = 10;
const _: () = assert!(core::mem::size_of::<CmdHeader>() == CMD_HEADER_LEN);

/// A decoded, CRC-checked command whose attributes were checked to fit. It
/// borrows its payload from the input (or from the incremental decoder's
/// buffer when the command arrived in pieces).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Command<'a> {
    cmd: u16,
    crc: u32,
    payload: &'a [u8],
    index: u64,
    offset: u64,
    profile: Profile,
}

impl<'a> Command<'a> {
    /// A command already checked (the codec's frames).
    #[cfg(feature = "tokio")]
    pub(crate) fn checked(
        cmd: u16,
        crc: u32,
        payload: &'a [u8],
        index: u64,
        offset: u64,
        profile: Profile,
    ) -> Self {
        Command {
            cmd,
            crc,
            payload,
            index,
            offset,
            profile,
        }
    }
    /// Command type.
    #[inline]
    pub fn cmd(&self) -> u16 {
        self.cmd
    }
    /// The CRC stored in (and checked against) the header.
    #[inline]
    pub fn crc(&self) -> u32 {
        self.crc
    }
    /// The payload: the encoded attributes.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }
    /// 0-based index of the command in its stream.
    #[inline]
    pub fn index(&self) -> u64 {
        self.index
    }
    /// Stream byte offset of the command header.
    #[inline]
    pub fn offset(&self) -> u64 {
        self.offset
    }
    /// Encoded size: header plus payload.
    #[inline]
    pub fn encoded_len(&self) -> usize {
        CMD_HEADER_LEN + self.payload.len()
    }
    /// Whether this is the profile's END command.
    #[inline]
    pub fn is_end(&self) -> bool {
        self.cmd == self.profile.end_cmd
    }
    /// The profile it was decoded with.
    #[inline]
    pub fn profile(&self) -> &Profile {
        &self.profile
    }
    /// The attributes, in wire order.
    #[inline]
    pub fn attrs(&self) -> Attrs<'a> {
        Attrs::new(
            self.payload,
            self.profile.unbounded_data_attr,
            self.offset,
            self.index,
        )
    }
    /// The attribute of type `ty`. When a command carries the same type more
    /// than once, the **last** one wins (the policy of btrfs-progs).
    pub fn attr(&self, ty: u16) -> Option<Attr<'a>> {
        self.attrs().filter(|a| a.ty() == ty).last()
    }
    /// Like [`Command::attr`], but a missing attribute is an error naming the
    /// command and attribute.
    pub fn require(&self, ty: u16) -> Result<Attr<'a>, Error> {
        self.attr(ty).ok_or_else(|| {
            ErrorKind::MissingAttr {
                cmd: self.cmd,
                attr_type: ty,
            }
            .at(self.index, self.offset)
        })
    }
}

/// Outcome of looking at the start of some input.
#[derive(Debug)]
pub(crate) enum Parse<'a> {
    /// A whole command and how many bytes it took.
    Complete(Command<'a>, usize),
    /// The input holds only part of a command, which needs `total` bytes in
    /// all (10 when even the header is incomplete).
    Incomplete { total: usize },
}

/// Reads the header of the command at the start of `input` and checks its
/// declared length against the profile: the full encoded size (header
/// included) of a command that may be read, before anything is allocated
/// for it. `input` needs only the [`CMD_HEADER_LEN`] header bytes; fewer is
/// a `Truncated` error. `index` and `offset` position errors. Neither the
/// CRC nor the attributes are checked ([`decode_command`] does that).
#[inline]
pub fn frame_len(input: &[u8], profile: &Profile, index: u64, offset: u64) -> Result<usize, Error> {
    let (hdr, _) = CmdHeader::ref_from_prefix(input).map_err(|_| {
        ErrorKind::Truncated {
            what: "command header",
            needed: CMD_HEADER_LEN as u64,
            available: input.len() as u64,
        }
        .at(index, offset)
    })?;
    let len = hdr.len.get();
    if len > profile.max_payload_len {
        return Err(ErrorKind::Oversized {
            cmd: hdr.cmd.get(),
            len,
            max: profile.max_payload_len,
        }
        .at(index, offset));
    }
    Ok((len as usize).saturating_add(CMD_HEADER_LEN))
}

/// Decodes the command at the start of `input`: header, length limit, CRC and
/// attribute layout. `index` and `offset` position it in its stream.
#[inline]
pub(crate) fn parse<'a>(
    input: &'a [u8],
    profile: &Profile,
    index: u64,
    offset: u64,
) -> Result<Parse<'a>, Error> {
    if input.len() < CMD_HEADER_LEN {
        return Ok(Parse::Incomplete {
            total: CMD_HEADER_LEN,
        });
    }
    let total = frame_len(input, profile, index, offset)?;
    let Some(bytes) = input.get(..total) else {
        return Ok(Parse::Incomplete { total });
    };
    let (hdr, payload) = CmdHeader::ref_from_prefix(bytes).map_err(|_| {
        ErrorKind::Truncated {
            what: "command header",
            needed: CMD_HEADER_LEN as u64,
            available: bytes.len() as u64,
        }
        .at(index, offset)
    })?;
    let stored = hdr.crc.get();
    let computed = profile.crc.whole_command_crc(bytes);
    if stored != computed {
        return Err(ErrorKind::CrcMismatch {
            cmd: hdr.cmd.get(),
            stored,
            computed,
        }
        .at(index, offset));
    }
    attr::validate(payload, profile.unbounded_data_attr)
        .map_err(|(kind, pos)| kind.at(index, offset + (CMD_HEADER_LEN + pos) as u64))?;
    Ok(Parse::Complete(
        Command {
            cmd: hdr.cmd.get(),
            crc: stored,
            payload,
            index,
            offset,
            profile: *profile,
        },
        total,
    ))
}

/// Decodes exactly one command at the start of `bytes`, which is at stream
/// byte `offset` and is command number `index`. Returns it and its length.
pub fn decode_command<'a>(
    bytes: &'a [u8],
    profile: &Profile,
    index: u64,
    offset: u64,
) -> Result<(Command<'a>, usize), Error> {
    match parse(bytes, profile, index, offset)? {
        Parse::Complete(c, n) => Ok((c, n)),
        Parse::Incomplete { total } => Err(truncated(total, bytes.len(), index, offset)),
    }
}

fn truncated(total: usize, available: usize, index: u64, offset: u64) -> Error {
    ErrorKind::Truncated {
        what: if available < CMD_HEADER_LEN {
            "command header"
        } else {
            "command payload"
        },
        needed: total as u64,
        available: available as u64,
    }
    .at(index, offset)
}

/// The fast path: iterates the commands of an in-memory stream (the bytes
/// after any stream header), borrowing every payload from the input.
///
/// Yields each command, or one error and then nothing (it stays failed). It
/// stops after the END command; [`Commands::remainder`] then holds what
/// follows. Input that stops without END yields a `MissingEnd` error, and a
/// partial command a `Truncated` error.
#[derive(Clone, Debug)]
pub struct Commands<'a> {
    input: &'a [u8],
    pos: usize,
    base: u64,
    index: u64,
    profile: Profile,
    done: bool,
}

impl<'a> Commands<'a> {
    /// Iterates the commands in `input`, whose first byte is at stream byte
    /// `base_offset`.
    pub fn new(input: &'a [u8], profile: Profile, base_offset: u64) -> Self {
        Commands {
            input,
            pos: 0,
            base: base_offset,
            index: 0,
            profile,
            done: false,
        }
    }
    /// The bytes not yet decoded (after END: what follows it).
    pub fn remainder(&self) -> &'a [u8] {
        &self.input[self.pos.min(self.input.len())..]
    }
    /// Stream offset of the next byte to decode.
    pub fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }
}

impl<'a> Iterator for Commands<'a> {
    type Item = Result<Command<'a>, Error>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let rest = &self.input[self.pos..];
        let offset = self.base + self.pos as u64;
        if rest.is_empty() {
            self.done = true;
            return Some(Err(ErrorKind::MissingEnd.at(self.index, offset)));
        }
        let r = match parse(rest, &self.profile, self.index, offset) {
            Ok(Parse::Complete(c, n)) => {
                self.pos += n;
                self.index += 1;
                if c.is_end() {
                    self.done = true;
                }
                Ok(c)
            }
            Ok(Parse::Incomplete { total }) => {
                Err(truncated(total, rest.len(), self.index, offset))
            }
            Err(e) => Err(e),
        };
        if r.is_err() {
            self.done = true;
        }
        Some(r)
    }
}

/// What one call to [`Decoder::decode`] achieved.
#[derive(Debug)]
pub enum Step<'a> {
    /// A command was decoded after taking `consumed` bytes of the input.
    Command {
        /// The command.
        command: Command<'a>,
        /// Bytes of this call's input used (the rest is for the next call).
        consumed: usize,
    },
    /// All `consumed` bytes were buffered; at least `needed` more bytes are
    /// required before the next command can be decoded.
    NeedMore {
        /// Bytes of this call's input buffered (always all of them).
        consumed: usize,
        /// Bytes still missing from the pending command (a lower bound while
        /// its header is incomplete).
        needed: usize,
    },
}

/// Incremental, sans-IO decoder: feed input in pieces of any size; it hands
/// back each command as soon as its last byte arrives, without copying when
/// a piece holds a whole command, and says how many more bytes it needs.
///
/// It buffers at most one command, and never more than the profile's
/// maximum command length: the declared length is checked as soon as the
/// 10-byte header is complete. After an error it stays failed.
///
/// ```
/// use proto_tlv::{encode_command, AttrValue, CrcVariant, Decoder, Profile, Step, Value};
/// let profile = Profile { crc: CrcVariant::Standard, max_payload_len: 1 << 16,
///                         unbounded_data_attr: None, end_cmd: 21 };
/// let mut wire = Vec::new();
/// encode_command(&profile, 3, &[AttrValue::new(15, Value::Bytes(b"a/b"))], &mut wire).unwrap();
/// encode_command(&profile, 21, &[], &mut wire).unwrap();
///
/// let mut dec = Decoder::new(profile, 0);
/// let mut types = Vec::new();
/// for piece in wire.chunks(3) {
///     let mut piece = piece;
///     while !piece.is_empty() {
///         match dec.decode(piece).unwrap() {
///             Step::Command { command, consumed } => { types.push(command.cmd()); piece = &piece[consumed..]; }
///             Step::NeedMore { consumed, .. } => piece = &piece[consumed..],
///         }
///     }
/// }
/// dec.finish().unwrap();
/// assert_eq!(types, [3, 21]);
/// ```
#[derive(Debug)]
pub struct Decoder {
    profile: Profile,
    buf: Vec<u8>,
    /// The buffered command was handed out; drop it on the next call.
    buf_done: bool,
    index: u64,
    offset: u64,
    ended: bool,
    failed: Option<Error>,
}

impl Decoder {
    /// A decoder whose first input byte is at stream byte `base_offset`.
    pub fn new(profile: Profile, base_offset: u64) -> Self {
        Decoder {
            profile,
            buf: Vec::new(),
            buf_done: false,
            index: 0,
            offset: base_offset,
            ended: false,
            failed: None,
        }
    }

    /// Number of commands decoded so far.
    pub fn commands(&self) -> u64 {
        self.index
    }
    /// Stream offset of the next byte expected.
    pub fn offset(&self) -> u64 {
        self.offset + self.buf.len() as u64
    }
    /// Whether the END command was decoded.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// How many more bytes are needed before the next command can complete
    /// (a lower bound while its header is incomplete). 0 after END.
    pub fn needed(&self) -> usize {
        if self.ended || self.failed.is_some() {
            return 0;
        }
        let have = if self.buf_done { 0 } else { self.buf.len() };
        let total = if have < crate::CMD_HEADER_LEN {
            crate::CMD_HEADER_LEN
        } else {
            frame_len(&self.buf, &self.profile, self.index, self.offset)
                .unwrap_or(crate::CMD_HEADER_LEN)
        };
        total.saturating_sub(have)
    }

    fn fail(&mut self, e: Error) -> Error {
        self.failed = Some(e.clone());
        e
    }

    /// Feeds `input`. Returns the next command if it completed, with how much
    /// of `input` it took, or that all of `input` was buffered.
    pub fn decode<'a>(&'a mut self, input: &'a [u8]) -> Result<Step<'a>, Error> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.buf_done {
            self.offset += self.buf.len() as u64;
            self.buf.clear();
            self.buf_done = false;
        }
        if self.ended {
            if input.is_empty() {
                return Ok(Step::NeedMore {
                    consumed: 0,
                    needed: 0,
                });
            }
            let e = ErrorKind::TrailingData {
                len: input.len() as u64,
            }
            .at(self.index, self.offset);
            return Err(self.fail(e));
        }
        if self.buf.is_empty() {
            // Zero-copy path: the whole command may be in `input`.
            match parse(input, &self.profile, self.index, self.offset) {
                Ok(Parse::Complete(c, n)) => {
                    self.index += 1;
                    self.offset += n as u64;
                    self.ended = c.is_end();
                    return Ok(Step::Command {
                        command: c,
                        consumed: n,
                    });
                }
                Ok(Parse::Incomplete { total }) => {
                    self.buf.extend_from_slice(input);
                    return Ok(Step::NeedMore {
                        consumed: input.len(),
                        needed: total - input.len(),
                    });
                }
                Err(e) => return Err(self.fail(e)),
            }
        }
        // Slow path: complete the buffered command, header first.
        let mut consumed = 0;
        if self.buf.len() < crate::CMD_HEADER_LEN {
            let want = crate::CMD_HEADER_LEN - self.buf.len();
            let take = want.min(input.len());
            self.buf.extend_from_slice(&input[..take]);
            consumed = take;
            if take < want {
                return Ok(Step::NeedMore {
                    consumed,
                    needed: want - take,
                });
            }
        }
        let total = match frame_len(&self.buf, &self.profile, self.index, self.offset) {
            Ok(t) => t,
            Err(e) => return Err(self.fail(e)),
        };
        let want = total - self.buf.len();
        let take = want.min(input.len() - consumed);
        self.buf
            .extend_from_slice(&input[consumed..consumed + take]);
        consumed += take;
        if take < want {
            return Ok(Step::NeedMore {
                consumed,
                needed: want - take,
            });
        }
        let result = parse(&self.buf, &self.profile, self.index, self.offset);
        match result {
            Ok(Parse::Complete(command, _)) => {
                self.index += 1;
                self.ended = command.is_end();
                self.buf_done = true;
                Ok(Step::Command { command, consumed })
            }
            Ok(Parse::Incomplete { total }) => {
                let e = truncated(total, self.buf.len(), self.index, self.offset);
                self.failed = Some(e.clone());
                Err(e)
            }
            Err(e) => {
                self.failed = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Feeds `input` and hands every command it completes to `visit`, which
    /// returns `Ok(false)` to stop. Returns how many bytes of `input` were
    /// used and whether `visit` stopped; it stops after END too (what
    /// follows is not taken). Commands that lie whole in `input` are
    /// decoded in a tight loop, without copying: the same commands, errors
    /// and state as calling [`Decoder::decode`] until `input` is used up.
    pub fn decode_each<E: From<Error>>(
        &mut self,
        input: &[u8],
        mut visit: impl FnMut(&Command<'_>) -> Result<bool, E>,
    ) -> Result<(usize, bool), E> {
        let mut pos = 0;
        while pos < input.len() && !self.ended {
            if self.buf.is_empty() && self.failed.is_none() {
                if let Ok(Parse::Complete(c, n)) =
                    parse(&input[pos..], &self.profile, self.index, self.offset)
                {
                    self.index += 1;
                    self.offset += n as u64;
                    self.ended = c.is_end();
                    pos += n;
                    if !visit(&c)? {
                        return Ok((pos, true));
                    }
                    continue;
                }
            }
            // A command in pieces, or an error: the general path.
            match self.decode(&input[pos..])? {
                Step::Command { command, consumed } => {
                    pos += consumed;
                    if !visit(&command)? {
                        return Ok((pos, true));
                    }
                }
                Step::NeedMore { consumed, .. } => pos += consumed,
            }
        }
        Ok((pos, false))
    }

    /// Declares the end of input: succeeds only when the END command was
    /// decoded and nothing is left over.
    pub fn finish(&self) -> Result<(), Error> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let pending = if self.buf_done { 0 } else { self.buf.len() };
        if pending > 0 {
            let total = if pending < crate::CMD_HEADER_LEN {
                crate::CMD_HEADER_LEN
            } else {
                frame_len(&self.buf, &self.profile, self.index, self.offset)?
            };
            return Err(truncated(total, pending, self.index, self.offset));
        }
        if !self.ended {
            return Err(ErrorKind::MissingEnd.at(self.index, self.offset()));
        }
        Ok(())
    }
}
