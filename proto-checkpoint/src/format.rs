//! One description of a family of streams: [`Format`].
//!
//! Everything above the codec (the emitter, tokens, compare, sessions and
//! every command of the CLI) works on any stream made of *stream headers*
//! and TLV commands, one stream or several concatenated, each ending with
//! END. What differs between families is said once, by a `Format`:
//!
//! - how a stream is recognised: its fixed header ([`Format::fixed_header`]);
//! - how long its stream header is and which TLV [`Profile`] its commands
//!   use ([`Format::head`], [`Format::profile`]);
//! - its split rule ([`Format::split`]): the format owns it, so a producer
//!   and the rule it is emitted with cannot disagree;
//! - what a receiver checks in a command beyond its framing and CRC
//!   ([`Format::check_command`]), through the generic [`Validator`];
//! - its contexts: the streams of a file ([`list_streams`](crate::list_streams)),
//!   named by [`Format::context_name`];
//! - how a producer is made over a [`Source`] ([`Format::producer`]).

use alloc::format;
use alloc::string::String;
use core::fmt;
#[cfg(feature = "std")]
use std::io;

use proto_header::FixedHeaderFormat;
use proto_tlv::{decode_command, Command, ErrorKind, Profile};

use crate::split::Split;
#[cfg(feature = "std")]
use crate::stream::{FormatProducer, FormatUnits};
#[cfg(feature = "std")]
use crate::Source;

/// A stream header, as [`Format::head`] reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamHead {
    /// Its length in bytes: where the first command starts.
    pub len: usize,
    /// The stream's version (the one chosen by negotiation).
    pub version: u32,
    /// The TLV profile of its commands.
    pub profile: Profile,
}

/// What [`Format::head`] makes of the bytes it was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Head {
    /// The header is longer: call again with at least this many bytes
    /// (fewer are there only when the input ends: a truncated header).
    Need(usize),
    /// The whole header.
    Head(StreamHead),
}

/// A fault of the layer under a format's decoders: reading the source
/// failed, or a producer state was refused. Every format's error takes one
/// (`From<Fault>`), so generic producers report in the format's own terms.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Fault {
    /// Reading the source failed (feature `std`).
    #[cfg(feature = "std")]
    #[error("read failed at byte offset {offset}: {source}")]
    Io {
        /// Stream offset of the read.
        offset: u64,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A checkpoint state that is not one of this stream's.
    #[error("checkpoint state refused: {why}")]
    State {
        /// What is wrong with it.
        why: &'static str,
    },
}

/// A family of streams: how it is recognised, its stream header and
/// profile, its split rule, what receivers check, its contexts and its
/// producers (see the crate documentation).
///
/// Implementations are small values (usually `Copy` constants) describing
/// the family; `proto-btrfs` implements it for btrfs send streams, and
/// [`NativeFormat`](crate::native::NativeFormat) for every native format,
/// the kit's own `PRSTREAM` among them.
pub trait Format: Clone + fmt::Debug {
    /// Errors of this family's decoders, positioned (command index, byte
    /// offset).
    type Error: core::error::Error + From<proto_tlv::Error> + From<Fault> + Send + Sync + 'static;
    /// The split rule of its data commands.
    type Split: Split + Clone + fmt::Debug;

    /// A short name for messages (`btrfs`, `native`).
    fn name(&self) -> &'static str;

    /// Its fixed header.
    fn fixed_header(&self) -> &FixedHeaderFormat;

    /// Whether `head` (the first bytes of an input) starts a stream of this
    /// family: its magic.
    fn recognises(&self, head: &[u8]) -> bool {
        head.starts_with(self.fixed_header().magic)
    }

    /// Reads the stream header at the start of `bytes` (which lie at
    /// stream offset `offset`): its length and the profile of what follows,
    /// or how many bytes it needs. Errors name the offset.
    fn head(&self, bytes: &[u8], offset: u64) -> Result<Head, Self::Error>;

    /// The profile of a stream of `version` (a producer restored at a safe
    /// point inside a stream needs it without the header).
    fn profile(&self, version: u32) -> Result<Profile, Self::Error>;

    /// Whether several streams may follow one another in one input (btrfs:
    /// a full and incremental streams, as `btrfs receive` takes them).
    fn concatenates(&self) -> bool;

    /// The split rule of its data commands.
    fn split(&self) -> Self::Split;

    /// What a receiver checks in a command beyond its framing, CRC and
    /// attribute layout (btrfs refuses type 0, which zeroes pass the CRC
    /// of). Default: nothing.
    fn check_command(&self, _cmd: &Command<'_>) -> Result<(), Self::Error> {
        Ok(())
    }

    /// The name of stream `n` (from 1) of an input, from its first command:
    /// the context a receiver selects it by.
    fn context_name(&self, n: usize, _first: Option<&Command<'_>>) -> String {
        format!("stream:{n}")
    }

    /// The units of `src`, for walking or comparing it (no safe points, no
    /// stream id: nothing read ahead of the cursor).
    #[cfg(feature = "std")]
    fn units<S: Source>(&self, src: S) -> FormatUnits<Self, S> {
        FormatUnits::new(self.clone(), src)
    }

    /// A producer over `src` (a safe point every `safe_every` units; 0 is
    /// taken as 1).
    #[cfg(feature = "std")]
    fn producer<S: Source>(
        &self,
        src: S,
        safe_every: u64,
    ) -> Result<FormatProducer<Self, S>, Self::Error> {
        FormatProducer::new(self.clone(), src, safe_every)
    }

    /// A receiver's validator of units of this family.
    fn validator(&self) -> Validator<Self> {
        Validator::new(self.clone())
    }
}

/// Checks units (stream headers and whole commands) as a receiver gets
/// them, one at a time: each must be exactly the next unit of a valid
/// stream of its format (header, framing, CRC, attribute layout, the
/// format's own checks), and [`finish`](Validator::finish) that every stream
/// ended.
#[derive(Clone, Debug)]
pub struct Validator<F: Format> {
    format: F,
    /// The profile of the stream being received; `None` between streams.
    profile: Option<Profile>,
    streams: u64,
    index: u64,
    offset: u64,
    /// A stream ended and the format does not concatenate.
    closed: bool,
    /// Where the header of the stream being received lies (offset,
    /// length): what [`Validator::resume`] reads the profile from again.
    head: Option<(u64, u32)>,
}

/// Where a [`Validator`] stands, to keep beside the units it checked
/// ([`Validator::state`]) and continue from without checking them again
/// ([`Validator::resume`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ValidatorState {
    /// Streams begun.
    pub streams: u64,
    /// Index of the next command in its stream.
    pub index: u64,
    /// Offset of the next unit.
    pub offset: u64,
    /// A stream ended and the format does not concatenate.
    pub closed: bool,
    /// The header of the stream being received (offset, length); `None`
    /// between streams.
    pub head: Option<(u64, u32)>,
}

impl<F: Format> Validator<F> {
    /// A validator at the start of an input.
    pub fn new(format: F) -> Self {
        Validator {
            format,
            profile: None,
            streams: 0,
            index: 0,
            offset: 0,
            closed: false,
            head: None,
        }
    }

    /// Where it stands (see [`Validator::resume`]).
    pub fn state(&self) -> ValidatorState {
        ValidatorState {
            streams: self.streams,
            index: self.index,
            offset: self.offset,
            closed: self.closed,
            head: self.head,
        }
    }

    /// A validator that continues from `state`, as one that checked the
    /// units before it would: `header` holds the bytes of the header of the
    /// stream being received (at `state.head`), read again for its profile,
    /// when `state` is inside a stream. The units before are not checked
    /// again: keep the state with them, durably, and only with them.
    pub fn resume(format: F, state: ValidatorState, header: &[u8]) -> Result<Self, F::Error> {
        let profile = match state.head {
            None => None,
            Some((at, len)) => match format.head(header, at)? {
                Head::Head(h) if h.len == len as usize && h.len == header.len() => Some(h.profile),
                _ => {
                    return Err(Fault::State {
                        why: "the kept stream header does not read as one of its length",
                    }
                    .into())
                }
            },
        };
        if state.head.is_some() && state.streams == 0 {
            return Err(Fault::State {
                why: "inside a stream, but no stream begun",
            }
            .into());
        }
        Ok(Validator {
            format,
            profile,
            streams: state.streams,
            index: state.index,
            offset: state.offset,
            closed: state.closed,
            head: state.head,
        })
    }

    /// Stream offset of the next unit.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The profile of the stream being received: `None` before its header
    /// and between streams.
    pub fn profile(&self) -> Option<&Profile> {
        self.profile.as_ref()
    }

    /// Checks that `unit` is exactly the next unit. Nothing changes on
    /// error.
    pub fn unit(&mut self, unit: &[u8]) -> Result<(), F::Error> {
        let whole = |needed: usize| {
            ErrorKind::Truncated {
                what: "unit (exactly one stream header or one whole command)",
                needed: needed as u64,
                available: unit.len() as u64,
            }
            .at(0, 0)
        };
        match self.profile {
            None => {
                if self.closed {
                    let len = unit.len() as u64;
                    return Err(ErrorKind::TrailingData { len }
                        .at(self.index, self.offset)
                        .into());
                }
                let head = match self.format.head(unit, self.offset)? {
                    Head::Head(h) if h.len == unit.len() => h,
                    Head::Head(h) => {
                        let mut e = whole(h.len);
                        e.offset = self.offset;
                        return Err(e.into());
                    }
                    Head::Need(n) => {
                        let mut e = whole(n);
                        e.offset = self.offset;
                        return Err(e.into());
                    }
                };
                self.profile = Some(head.profile);
                self.head = Some((self.offset, head.len as u32));
                self.streams += 1;
                self.index = 0;
            }
            Some(p) => {
                let (cmd, used) = decode_command(unit, &p, self.index, self.offset)?;
                if used != unit.len() {
                    let mut e = whole(used);
                    (e.index, e.offset) = (self.index, self.offset);
                    return Err(e.into());
                }
                self.format.check_command(&cmd)?;
                if cmd.cmd() == p.end_cmd {
                    self.profile = None;
                    self.head = None;
                    self.closed = !self.format.concatenates();
                }
                self.index += 1;
            }
        }
        self.offset += unit.len() as u64;
        Ok(())
    }

    /// Checks that the input may end here: at least one stream, every
    /// stream ended with END.
    pub fn finish(&self) -> Result<(), F::Error> {
        if self.profile.is_some() {
            return Err(ErrorKind::MissingEnd.at(self.index, self.offset).into());
        }
        if self.streams == 0 {
            return Err(ErrorKind::Truncated {
                what: "stream header",
                needed: self.format.fixed_header().encoded_len() as u64,
                available: 0,
            }
            .at(0, 0)
            .into());
        }
        Ok(())
    }
}
