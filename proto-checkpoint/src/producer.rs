//! Producers: what an [`Emitter`](crate::Emitter) emits, one unit at a time,
//! with safe points where the producer's state can be saved as bytes.

use proto_tlv::{frame_len, Profile};

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

/// A source of units with safe points, as the btrfs patch that this design
/// comes from has it: the kernel cannot checkpoint between any two commands,
/// only where its state can be written down; from there, it regenerates the
/// commands since and skips them.
///
/// The producer is a cursor: [`current`](Producer::current) shows the unit
/// at the cursor (the same one until [`advance`](Producer::advance)), and
/// `None` at the end of the stream.
pub trait Producer {
    /// What can go wrong while producing (I/O, a malformed input stream).
    type Error: std::error::Error + 'static;

    /// The unit at the cursor; `None` at the end of the stream.
    fn current(&mut self) -> Result<Option<Unit<'_>>, Self::Error>;

    /// Moves past the current unit. Called only after `current` returned a
    /// unit. Skipping after a re-arm calls this without looking at the unit
    /// when the producer can (the work is then proportional to the number of
    /// units skipped, not to their size).
    fn advance(&mut self) -> Result<(), Self::Error>;

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
}

/// Why [`CommandsProducer`] refused its input or a state.
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

/// A producer over TLV commands held in memory: one profile, commands up
/// to and including END, and a safe point every `safe_every` commands (the
/// start included; not right after END when bytes follow it, which are
/// ignored). Its state is the byte offset and index of the command at the
/// safe point, and whether the stream has ended there (18 bytes).
///
/// It frames commands (length within the profile's maximum, END present,
/// nothing after it) but leaves their CRCs to the emitter, which checks each
/// as it copies. Its state is not tied to the bytes: a token forged for
/// another command boundary of the same input would be taken (the btrfs
/// producer records a fingerprint of the bytes at its safe point).
#[derive(Clone, Debug)]
pub struct CommandsProducer<'a> {
    input: &'a [u8],
    profile: Profile,
    stream_id: [u8; 16],
    safe_every: u64,
    pos: usize,
    index: u64,
    /// Length of the command at `pos`, once framed.
    current: Option<usize>,
    ended: bool,
    /// (pos, index, ended) at the last safe point.
    last_safe: (usize, u64, bool),
}

const COMMANDS_STATE_VERSION: u8 = 1;
const COMMANDS_STATE_LEN: usize = 18;

impl<'a> CommandsProducer<'a> {
    /// A producer over `input` (commands only, no stream header). A
    /// `safe_every` of 0 is taken as 1.
    pub fn new(input: &'a [u8], profile: Profile, stream_id: [u8; 16], safe_every: u64) -> Self {
        CommandsProducer {
            input,
            profile,
            stream_id,
            safe_every: safe_every.max(1),
            pos: 0,
            index: 0,
            current: None,
            ended: false,
            last_safe: (0, 0, false),
        }
    }
}

impl Producer for CommandsProducer<'_> {
    type Error = CommandsError;

    fn current(&mut self) -> Result<Option<Unit<'_>>, CommandsError> {
        if self.ended {
            // Bytes after END are an error, as in every decoder of the kit.
            let left = self.input.len() - self.pos;
            if left > 0 {
                return Err(proto_tlv::ErrorKind::TrailingData { len: left as u64 }
                    .at(self.index, self.pos as u64)
                    .into());
            }
            return Ok(None);
        }
        let len = match self.current {
            Some(len) => len,
            None => {
                let rest = &self.input[self.pos..];
                let at = (self.index, self.pos as u64);
                if rest.is_empty() {
                    return Err(proto_tlv::ErrorKind::MissingEnd.at(at.0, at.1).into());
                }
                let len = frame_len(rest, &self.profile, at.0, at.1)?;
                if len > rest.len() {
                    return Err(proto_tlv::ErrorKind::Truncated {
                        what: "command payload",
                        needed: len as u64,
                        available: rest.len() as u64,
                    }
                    .at(at.0, at.1)
                    .into());
                }
                self.current = Some(len);
                len
            }
        };
        Ok(Some(Unit {
            kind: UnitKind::Command(self.profile),
            bytes: &self.input[self.pos..self.pos + len],
            index: self.index,
            offset: self.pos as u64,
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
        let cmd = u16::from_le_bytes([self.input[self.pos + 4], self.input[self.pos + 5]]);
        self.pos += len;
        self.index += 1;
        if cmd == self.profile.end_cmd {
            self.ended = true;
        }
        Ok(())
    }

    fn safe_point(&mut self) -> Result<bool, CommandsError> {
        if self.index % self.safe_every != 0 {
            return Ok(false);
        }
        self.last_safe = (self.pos, self.index, self.ended);
        Ok(true)
    }

    fn save_state(&mut self, state: &mut Vec<u8>) -> Result<(), CommandsError> {
        let (pos, index, ended) = self.last_safe;
        state.push(COMMANDS_STATE_VERSION);
        state.push(u8::from(ended));
        state.extend_from_slice(&(pos as u64).to_le_bytes());
        state.extend_from_slice(&index.to_le_bytes());
        Ok(())
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), CommandsError> {
        let bad = |why| CommandsError::BadState { why };
        let Ok::<&[u8; COMMANDS_STATE_LEN], _>(state) = state.try_into() else {
            return Err(bad("not 18 bytes long"));
        };
        if state[0] != COMMANDS_STATE_VERSION {
            return Err(bad("unknown state version"));
        }
        let ended = match state[1] {
            0 => false,
            1 => true,
            _ => return Err(bad("flags other than `ended`")),
        };
        let le = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&state[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let (pos, index) = (le(2), le(10));
        if index % self.safe_every != 0 {
            return Err(bad("command index is not a safe point"));
        }
        let pos = usize::try_from(pos)
            .ok()
            .filter(|p| *p <= self.input.len())
            .ok_or(bad("byte offset beyond the input"))?;
        if index > pos as u64 / 10 {
            return Err(bad("more commands than fit before the byte offset"));
        }
        if ended && (pos != self.input.len() || index == 0) {
            return Err(bad("ended before the end of the input"));
        }
        *self = CommandsProducer {
            pos,
            index,
            current: None,
            ended,
            last_safe: (pos, index, ended),
            ..*self
        };
        Ok(())
    }

    fn position(&self) -> u64 {
        self.index
    }

    fn stream_id(&self) -> [u8; 16] {
        self.stream_id
    }
}
