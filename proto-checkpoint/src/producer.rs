//! Producers: what an [`Emitter`](crate::Emitter) emits, one unit at a time,
//! with safe points where the producer's state can be saved as bytes.

use alloc::vec::Vec;

use proto_tlv::{frame_len, CmdBuf, Profile, CMD_HEADER_LEN};
use zerocopy::byteorder::little_endian::U64;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// One unit of output: a stream header, or one encoded TLV command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unit<'a> {
    /// What the unit is.
    pub kind: UnitKind,
    /// Its bytes: never empty; for a command, the 10-byte header and
    /// exactly the payload it declares (the emitter checks that, and the
    /// CRC as it copies; a unit that breaks this is a `Corrupt` error).
    pub bytes: &'a [u8],
    /// Index of the command in its stream (for a header: the index the
    /// stream's first command will have, 0), for messages.
    pub index: u64,
    /// Byte offset of the unit in the producer's input, for messages.
    pub offset: u64,
}

/// The two kinds of unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnitKind {
    /// Bytes emitted whole and as they are (a stream header): never split.
    Raw,
    /// A TLV command of this profile: emitted whole, or split into valid
    /// commands by a [`Split`](crate::Split) when it is a data command.
    Command(Profile),
}

/// A cursor over the units of a stream: what [`compare`](crate::compare)
/// walks, and what a [`Producer`] builds its safe points on.
///
/// [`current`](Units::current) shows the unit at the cursor (the same one
/// until [`advance`](Units::advance)), and `None` at the end of the stream.
pub trait Units {
    /// What can go wrong while producing (I/O, a malformed input stream).
    type Error: core::error::Error + 'static;

    /// The unit at the cursor; `None` at the end of the stream.
    fn current(&mut self) -> Result<Option<Unit<'_>>, Self::Error>;

    /// Moves past the current unit. Called only after `current` returned a
    /// unit. Skipping after a re-arm calls this without looking at the unit
    /// when the producer can (the work is then proportional to the number of
    /// units skipped, not to their size).
    fn advance(&mut self) -> Result<(), Self::Error>;
}

/// A source of units with safe points, as the btrfs patch that this design
/// comes from has it: the kernel cannot checkpoint between any two commands,
/// only where its state can be written down; from there, it regenerates the
/// commands since and skips them.
pub trait Producer: Units {
    /// Whether the cursor is at a safe point. When it is, the producer
    /// remembers this point as its last safe point (cheaply: the emitter
    /// asks at every unit boundary, and needs the state written out only
    /// when it makes a token). The start of the stream must be a safe point.
    fn safe_point(&mut self) -> Result<bool, Self::Error>;

    /// Appends to `state` the state of the last safe point (at most
    /// [`MAX_STATE_LEN`](crate::token::MAX_STATE_LEN) bytes): what
    /// [`restore`](Producer::restore) takes back.
    fn save_state(&mut self, state: &mut Vec<u8>) -> Result<(), Self::Error>;

    /// Puts the cursor back at the safe point whose state is `state`.
    /// A state that is not one of this stream's is an error.
    fn restore(&mut self, state: &[u8]) -> Result<(), Self::Error>;

    /// Units advanced past since the start of the stream.
    fn position(&self) -> u64;

    /// The id that binds tokens to this stream.
    fn stream_id(&self) -> [u8; 16];

    /// Whole commands ahead, for an emitter that takes many at once: when
    /// the unit at the cursor is a command, the input from it on as one
    /// unit of kind [`UnitKind::Command`] whose bytes hold that command and
    /// those after it, or a part of them (at most `max` bytes; fewer
    /// wherever the producer likes). `None` (the default): the emitter
    /// takes units one at a time.
    ///
    /// The emitter frames each command of it itself (its length within the
    /// profile's maximum, its CRC), takes none that is its stream's END
    /// command, and moves past those it took with
    /// [`Producer::advance_commands`], stopping there at the last position
    /// where [`Producer::safe_points`] says a safe point may be, to ask
    /// [`Producer::safe_point`].
    fn commands_ahead(&mut self, max: usize) -> Result<Option<Unit<'_>>, Self::Error> {
        let _ = max;
        Ok(None)
    }

    /// Moves past `units` whole commands, `bytes` bytes in all, from the
    /// start of what [`Producer::commands_ahead`] returned (none an END
    /// command), as that many calls of [`Units::advance`] would.
    fn advance_commands(&mut self, units: u64, bytes: u64) -> Result<(), Self::Error> {
        let _ = bytes;
        for _ in 0..units {
            if self.current()?.is_none() {
                break;
            }
            self.advance()?;
        }
        Ok(())
    }

    /// Where the safe points are from the cursor on, when the producer
    /// knows: `Some((first, every))` says that [`Producer::safe_point`]
    /// says yes after the first `first` units, then after every `every`
    /// units more (both at least 1), and nowhere else. An emitter that
    /// takes runs of commands then asks `safe_point` only at the last of
    /// those positions in a run (the one a token starts from). `None` (the
    /// default): it asks after every unit.
    fn safe_points(&self) -> Option<(u64, u64)> {
        None
    }
}

/// [`Producer::safe_points`] of a producer with a safe point every `every`
/// units, `position` units in.
pub(crate) fn every_nth(position: u64, every: u64) -> Option<(u64, u64)> {
    let first = if every <= 1 {
        1
    } else {
        every - position % every
    };
    Some((first, every.max(1)))
}

/// Whether `position` is a safe point of a producer with one every `every`
/// units (no division when it is every unit).
pub(crate) fn is_nth(position: u64, every: u64) -> bool {
    every <= 1 || position.is_multiple_of(every)
}

/// The whole commands at the start of `bytes` (a run that a producer's
/// [`Producer::commands_ahead`] gave), as far as they go: the length of
/// each, until one is its stream's END, is cut short by the end of
/// `bytes`, or does not frame (the emitter then takes it alone, which
/// names what is wrong with it).
pub(crate) fn next_command(bytes: &[u8], profile: &Profile) -> Option<usize> {
    let c = CmdBuf::new_checked(bytes)?;
    if c.cmd() == profile.end_cmd {
        return None;
    }
    let len = frame_len(bytes, profile, 0, 0).ok()?;
    (len <= bytes.len()).then_some(len)
}

/// Why [`Commands`] or [`CommandsProducer`] refused its input or a state.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandsError {
    /// The input's framing is broken (a truncated or oversized command, a
    /// missing END), positioned by command index and byte offset.
    #[error(transparent)]
    Tlv(#[from] proto_tlv::Error),
    /// A state that this producer did not write for this input.
    #[error("producer state refused: {why}")]
    BadState {
        /// What is wrong with it.
        why: &'static str,
    },
}

/// The units of TLV commands held in memory: one profile, commands up to
/// and including END (bytes after it are an error). Each command is framed
/// (length within the profile's maximum, END present) as the cursor reaches
/// it; its CRC is left to whoever reads the unit (the emitter checks each
/// as it copies, [`compare`](crate::compare) compares bytes).
#[derive(Clone, Debug)]
pub struct Commands<'a> {
    input: &'a [u8],
    profile: Profile,
    at: CommandsAt,
    /// Length of the command at `at.pos`, once framed.
    current: Option<usize>,
}

/// Where a [`Commands`] cursor is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct CommandsAt {
    pos: usize,
    index: u64,
    ended: bool,
}

impl<'a> Commands<'a> {
    /// A cursor at the start of `input` (commands only, no stream header).
    pub fn new(input: &'a [u8], profile: Profile) -> Self {
        Commands {
            input,
            profile,
            at: CommandsAt::default(),
            current: None,
        }
    }
}

impl Units for Commands<'_> {
    type Error = CommandsError;

    fn current(&mut self) -> Result<Option<Unit<'_>>, CommandsError> {
        let CommandsAt { pos, index, ended } = self.at;
        if ended {
            // Bytes after END are an error, as in every decoder of the kit.
            let left = self.input.len() - pos;
            if left > 0 {
                return Err(proto_tlv::ErrorKind::TrailingData { len: left as u64 }
                    .at(index, pos as u64)
                    .into());
            }
            return Ok(None);
        }
        let len = match self.current {
            Some(len) => len,
            None => {
                let rest = &self.input[pos..];
                if rest.is_empty() {
                    return Err(proto_tlv::ErrorKind::MissingEnd
                        .at(index, pos as u64)
                        .into());
                }
                let len = frame_len(rest, &self.profile, index, pos as u64)?;
                if len > rest.len() {
                    return Err(proto_tlv::ErrorKind::Truncated {
                        what: "command payload",
                        needed: len as u64,
                        available: rest.len() as u64,
                    }
                    .at(index, pos as u64)
                    .into());
                }
                self.current = Some(len);
                len
            }
        };
        Ok(Some(Unit {
            kind: UnitKind::Command(self.profile),
            bytes: &self.input[pos..pos + len],
            index,
            offset: pos as u64,
        }))
    }

    fn advance(&mut self) -> Result<(), CommandsError> {
        let len = match self.current.take() {
            Some(len) => len,
            None => match self.current()? {
                Some(u) => u.bytes.len(),
                None => return Ok(()),
            },
        };
        self.current = None;
        let cmd = CmdBuf::new_checked(&self.input[self.at.pos..]).map(|c| c.cmd());
        self.at.pos += len;
        self.at.index += 1;
        if cmd == Some(self.profile.end_cmd) {
            self.at.ended = true;
        }
        Ok(())
    }
}

/// A [`Producer`] over TLV commands held in memory ([`Commands`]), with a
/// safe point every `safe_every` commands (the start included; not right
/// after END when bytes follow it). Its state is the byte offset and index
/// of the command at the safe point, and whether the stream has ended
/// there (18 bytes).
///
/// Its state is not tied to the bytes: a token forged for another command
/// boundary of the same input would be taken (the producer over stream
/// files, [`FormatProducer`](crate::FormatProducer), records a fingerprint
/// of the bytes at its safe point).
#[derive(Clone, Debug)]
pub struct CommandsProducer<'a> {
    units: Commands<'a>,
    stream_id: [u8; 16],
    safe_every: u64,
    last_safe: CommandsAt,
}

/// The state of a [`CommandsProducer`] safe point, as its tokens carry it.
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
struct CommandsState {
    version: u8,
    /// 1: the stream has ended here.
    ended: u8,
    pos: U64,
    index: U64,
}
const _: () = assert!(size_of::<CommandsState>() == 18);
const COMMANDS_STATE_VERSION: u8 = 1;

impl<'a> CommandsProducer<'a> {
    /// A producer over `input` (commands only, no stream header). A
    /// `safe_every` of 0 is taken as 1.
    pub fn new(input: &'a [u8], profile: Profile, stream_id: [u8; 16], safe_every: u64) -> Self {
        CommandsProducer {
            units: Commands::new(input, profile),
            stream_id,
            safe_every: safe_every.max(1),
            last_safe: CommandsAt::default(),
        }
    }
}

impl Units for CommandsProducer<'_> {
    type Error = CommandsError;

    fn current(&mut self) -> Result<Option<Unit<'_>>, CommandsError> {
        self.units.current()
    }

    fn advance(&mut self) -> Result<(), CommandsError> {
        self.units.advance()
    }
}

impl Producer for CommandsProducer<'_> {
    fn safe_point(&mut self) -> Result<bool, CommandsError> {
        if !is_nth(self.units.at.index, self.safe_every) {
            return Ok(false);
        }
        self.last_safe = self.units.at;
        Ok(true)
    }

    fn save_state(&mut self, state: &mut Vec<u8>) -> Result<(), CommandsError> {
        let CommandsAt { pos, index, ended } = self.last_safe;
        let s = CommandsState {
            version: COMMANDS_STATE_VERSION,
            ended: u8::from(ended),
            pos: U64::new(pos as u64),
            index: U64::new(index),
        };
        state.extend_from_slice(s.as_bytes());
        Ok(())
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), CommandsError> {
        let bad = |why| CommandsError::BadState { why };
        let s = CommandsState::ref_from_bytes(state).map_err(|_| bad("not 18 bytes long"))?;
        if s.version != COMMANDS_STATE_VERSION {
            return Err(bad("unknown state version"));
        }
        let ended = match s.ended {
            0 => false,
            1 => true,
            _ => return Err(bad("flags other than `ended`")),
        };
        let (pos, index) = (s.pos.get(), s.index.get());
        if index % self.safe_every != 0 {
            return Err(bad("command index is not a safe point"));
        }
        let input = self.units.input;
        let pos = usize::try_from(pos)
            .ok()
            .filter(|p| *p <= input.len())
            .ok_or(bad("byte offset beyond the input"))?;
        if index > pos as u64 / CMD_HEADER_LEN as u64 {
            return Err(bad("more commands than fit before the byte offset"));
        }
        if ended && (pos != input.len() || index == 0) {
            return Err(bad("ended before the end of the input"));
        }
        let at = CommandsAt { pos, index, ended };
        self.units.at = at;
        self.units.current = None;
        self.last_safe = at;
        Ok(())
    }

    fn position(&self) -> u64 {
        self.units.at.index
    }

    fn stream_id(&self) -> [u8; 16] {
        self.stream_id
    }

    fn commands_ahead(&mut self, max: usize) -> Result<Option<Unit<'_>>, CommandsError> {
        let CommandsAt { pos, index, ended } = self.units.at;
        if ended {
            return Ok(None);
        }
        let end = pos.saturating_add(max).min(self.units.input.len());
        Ok(Some(Unit {
            kind: UnitKind::Command(self.units.profile),
            bytes: &self.units.input[pos..end],
            index,
            offset: pos as u64,
        }))
    }

    fn advance_commands(&mut self, units: u64, bytes: u64) -> Result<(), CommandsError> {
        self.units.current = None;
        self.units.at.pos += bytes as usize;
        self.units.at.index += units;
        Ok(())
    }

    fn safe_points(&self) -> Option<(u64, u64)> {
        every_nth(self.units.at.index, self.safe_every)
    }
}
