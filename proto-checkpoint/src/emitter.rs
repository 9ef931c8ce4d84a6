//! Bounded-buffer emission with checkpoint tokens, and re-arming from one.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use proto_tlv::{crc32c_shift, frame_len, CmdBuf, CrcVariant, ErrorKind, Profile, CMD_HEADER_LEN};

use crate::producer::next_command;
use crate::split::{DataLayout, Split};
use crate::token::{Token, TokenError};
use crate::{Producer, Unit, UnitKind};

/// What one [`Emitter::fill`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fill {
    /// Bytes written at the start of the buffer. Where the emission
    /// stands after them is [`Emitter::token`], made when asked.
    pub written: usize,
    /// Whether the stream has been emitted to its end (no later fill
    /// writes anything).
    pub ended: bool,
    /// Units completed by this fill.
    pub units: u64,
    /// Pieces of split data commands written by this fill.
    pub pieces: u64,
}

/// Where an emission stands: the position a [`Token`] carries, kept in one
/// place (the emitter's) and copied into a token only when one is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cursor {
    /// Units completely emitted: the index of the next one.
    seq: u64,
    /// Output bytes emitted so far.
    offset: u64,
    /// Units completed since the producer's last safe point.
    since_safe_point: u64,
    /// Data bytes of unit `seq` already emitted in split pieces.
    split_done: u64,
    /// Whether the whole stream has been emitted.
    ended: bool,
}

impl Cursor {
    fn of(t: &Token) -> Cursor {
        Cursor {
            seq: t.seq,
            offset: t.offset,
            since_safe_point: t.since_safe_point,
            split_done: t.split_done,
            ended: t.ended,
        }
    }

    fn token(self, stream_id: [u8; 16], state: Vec<u8>) -> Token {
        Token {
            stream_id,
            seq: self.seq,
            offset: self.offset,
            since_safe_point: self.since_safe_point,
            split_done: self.split_done,
            ended: self.ended,
            state,
        }
    }
}

/// Why a token does not fit the stream it was given for. Nothing is
/// emitted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RearmError {
    /// The producer's position after restoring its state is not the one
    /// the token counts.
    #[error("token's safe point is unit {expected}, the restored producer is at unit {found}")]
    Position {
        /// `seq - since_safe_point` from the token.
        expected: u64,
        /// Where the producer says it is.
        found: u64,
    },
    /// The restored state is not a safe point of this stream.
    #[error("token's producer state is not a safe point of this stream")]
    NotASafePoint,
    /// The start of the stream is not a safe point (a producer bug).
    #[error("the producer is not at a safe point at the start of the stream")]
    NoSafePointAtStart,
    /// The stream ends before the units the token says were emitted.
    #[error("token skips {wanted} units after its safe point, the stream has only {found}")]
    SkipPastEnd {
        /// Units to skip.
        wanted: u64,
        /// Units there were.
        found: u64,
    },
    /// A safe point lies among the units to skip, so the emitter that made
    /// the token would have recorded it: the token is not from this stream.
    #[error("a safe point lies {after} units after the token's, inside the units it skips")]
    SafePointSkipped {
        /// Units after the token's safe point.
        after: u64,
    },
    /// The token says the stream ended, but it goes on.
    #[error("token says the stream has ended, but unit {seq} follows")]
    NotEnded {
        /// The next unit.
        seq: u64,
    },
    /// `split_done` names data of a unit that is not a splittable data
    /// command, or more data than it has.
    #[error("token has {split_done} data bytes of unit {seq} emitted, but {why}")]
    Split {
        /// The unit.
        seq: u64,
        /// The token's `split_done`.
        split_done: u64,
        /// What the unit is.
        why: String,
    },
}

/// What can go wrong while emitting or re-arming. `E` is the producer's
/// error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmitError<E: core::error::Error + 'static> {
    /// The producer failed (I/O, malformed input).
    #[error(transparent)]
    Producer(E),
    /// A command is damaged (its CRC does not match, or the producer gave
    /// a unit whose framing is broken), with its index and byte offset in
    /// the producer's input.
    #[error(transparent)]
    Corrupt(proto_tlv::Error),
    /// The buffer cannot hold the next unit, which may not be split (or
    /// not even one byte of data with its command's prefix).
    #[error("unit {seq} (command {index} at input byte offset {offset}) needs a buffer of at least {needed} bytes; the buffer has {available}")]
    DoesNotFit {
        /// The unit's sequence number in the output.
        seq: u64,
        /// Its command index in its stream.
        index: u64,
        /// Its byte offset in the producer's input.
        offset: u64,
        /// The smallest buffer that would take it (or a piece of it).
        needed: usize,
        /// The buffer's size.
        available: usize,
    },
    /// The token is malformed or for another stream.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The producer refused the token's state.
    #[error("token's producer state refused: {0}")]
    BadState(E),
    /// The token does not fit this stream.
    #[error(transparent)]
    Rearm(#[from] RearmError),
    /// An earlier fill failed; the emitter stays failed. Re-arm from the
    /// last token.
    #[error("the emitter failed earlier (at unit {seq}); re-arm from the last token")]
    Failed {
        /// The unit being emitted when it failed.
        seq: u64,
    },
}

/// CRC progress through the data command being split, kept between fills
/// so that each data byte is checksummed once.
#[derive(Clone, Copy, Debug)]
struct Progress {
    /// The unit it belongs to.
    seq: u64,
    /// `state_at` is the input command's running CRC state after its
    /// prefix and `data[..at]`.
    at: u64,
    state_at: u32,
    /// The running state after the whole input command (checked).
    state_end: u32,
    /// `Framer::marks[i]` is the running state after `data[..marks_base +
    /// (i + 1) * MARK]`, recorded while the rest of the command was checked.
    marks_base: u64,
}

/// Interval of the running states recorded while the data after the first
/// piece of a split command is checked: a later piece that ends inside the
/// command starts its CRC from the last mark before its end, so no data byte
/// is checksummed twice but for at most this many per piece.
const MARK: usize = 4096;

/// Copies `src` to `dst` (same length) and returns the running CRC state
/// after `src`, from `state`: one pass over the bytes (each word is loaded
/// once, fed to the CRC and stored: `proto_crc32c::copy_crc32c_append`).
#[inline]
fn copy_crc(crc: CrcVariant, state: u32, src: &[u8], dst: &mut [u8]) -> u32 {
    crc.copy_update(state, src, dst)
}

fn stored_crc(cmd: &[u8]) -> u32 {
    u32::from_le_bytes([cmd[6], cmd[7], cmd[8], cmd[9]])
}

fn crc_error<E: core::error::Error>(u: &Unit<'_>, stored: u32, computed: u32) -> EmitError<E> {
    EmitError::Corrupt(
        ErrorKind::CrcMismatch {
            cmd: CmdBuf::new_checked(u.bytes).map_or(0, |c| c.cmd()),
            stored,
            computed,
        }
        .at(u.index, u.offset),
    )
}

/// Checks the CRC of a whole command.
fn verify<E: core::error::Error>(profile: &Profile, u: &Unit<'_>) -> Result<(), EmitError<E>> {
    let crc = profile.crc;
    let computed = crc.whole_command_crc(u.bytes);
    let stored = stored_crc(u.bytes);
    if computed != stored {
        return Err(crc_error(u, stored, computed));
    }
    Ok(())
}

/// Commands shorter than this are copied, then checked by
/// [`CrcVariant::whole_command_crc`] (one kernel call, no branch on the
/// length's last bits); longer ones are copied and checked in one pass.
const FUSED_FROM: usize = 256;

/// A run's commands that are not checked in the pass that copies them are
/// copied this far ahead of the one at hand (see `Emitter::take_commands`).
const COPY_AHEAD: usize = 4096;

/// Copies a whole command to the start of `out`, checking its CRC in the
/// same pass (a short one right after the copy, while it is in cache; none
/// when it is shorter than `unchecked_below`: see
/// [`Emitter::set_unchecked_below`]); returns its length.
fn copy_command<E: core::error::Error>(
    profile: &Profile,
    u: &Unit<'_>,
    out: &mut [u8],
    unchecked_below: usize,
) -> Result<usize, EmitError<E>> {
    let (cmd, crc) = (u.bytes, profile.crc);
    let out = &mut out[..cmd.len()];
    if cmd.len() < unchecked_below.max(FUSED_FROM) {
        out.copy_from_slice(cmd);
        if cmd.len() >= unchecked_below {
            verify(profile, u)?;
        }
        return Ok(cmd.len());
    }
    out[..CMD_HEADER_LEN].copy_from_slice(&cmd[..CMD_HEADER_LEN]);
    let state = copy_crc(
        crc,
        crc.header_state(cmd),
        &cmd[CMD_HEADER_LEN..],
        &mut out[CMD_HEADER_LEN..],
    );
    let (stored, computed) = (stored_crc(cmd), crc.finish(state));
    if stored != computed {
        return Err(crc_error(u, stored, computed));
    }
    Ok(cmd.len())
}

/// What one step of a fill did with the unit at the cursor.
enum Step {
    /// Wrote the whole unit (this many bytes).
    Whole(usize),
    /// Wrote a piece of a data command (this many bytes); `done`: it was
    /// the last piece.
    Piece { written: usize, done: bool },
    /// No room for the unit in what is left of the buffer: the fill ends.
    Full,
}

/// The part of the emitter that frames units into a buffer: the split
/// rule and what it remembers about the unit at the cursor.
#[derive(Debug)]
struct Framer<S> {
    split: S,
    /// The layout of unit `.0`, once asked for.
    layout: Option<(u64, Option<DataLayout>)>,
    progress: Option<Progress>,
    /// Running states every [`MARK`] bytes (see [`Progress::marks_base`]).
    marks: Vec<u32>,
    /// Commands shorter than this are not checked (see
    /// [`Emitter::set_unchecked_below`]).
    unchecked_below: usize,
}

impl<S: Split> Framer<S> {
    /// Writes the unit at the cursor (unit `seq`, of which `split_done`
    /// data bytes went out before) at the start of `out`, or the largest
    /// piece of it that fits. `first`: nothing precedes it in the buffer
    /// (whose whole size is `buf_len`), so a unit that does not fit is an
    /// error rather than the end of the fill.
    fn step<E: core::error::Error>(
        &mut self,
        u: &Unit<'_>,
        seq: u64,
        split_done: u64,
        out: &mut [u8],
        first: bool,
        buf_len: usize,
    ) -> Result<Step, EmitError<E>> {
        let avail = out.len();
        let no_room = |needed: usize| {
            if first {
                Err(EmitError::DoesNotFit {
                    seq,
                    index: u.index,
                    offset: u.offset,
                    needed,
                    available: buf_len,
                })
            } else {
                Ok(Step::Full)
            }
        };
        let profile = match u.kind {
            // A producer's unit is never empty (every unit moves the offset).
            UnitKind::Raw if u.bytes.is_empty() => {
                return Err(EmitError::Corrupt(
                    ErrorKind::Truncated {
                        what: "unit",
                        needed: 1,
                        available: 0,
                    }
                    .at(u.index, u.offset),
                ))
            }
            UnitKind::Raw if u.bytes.len() <= avail => {
                out[..u.bytes.len()].copy_from_slice(u.bytes);
                return Ok(Step::Whole(u.bytes.len()));
            }
            UnitKind::Raw => return no_room(u.bytes.len()),
            UnitKind::Command(p) => p,
        };
        // Whatever the producer, a command is its header and exactly the
        // payload it declares, within the profile's maximum.
        let framed = frame_len(u.bytes, &profile, u.index, u.offset).map_err(EmitError::Corrupt)?;
        if framed != u.bytes.len() {
            return Err(EmitError::Corrupt(
                ErrorKind::Truncated {
                    what: "command payload",
                    needed: framed as u64,
                    available: u.bytes.len() as u64,
                }
                .at(u.index, u.offset),
            ));
        }
        if split_done == 0 && u.bytes.len() <= avail {
            return copy_command(&profile, u, out, self.unchecked_below).map(Step::Whole);
        }
        // It does not go whole (or went partly already): split it.
        let layout = match self.layout {
            Some((s, l)) if s == seq => l,
            _ => {
                let l = self.split.layout(&profile, u.bytes);
                self.layout = Some((seq, l));
                l
            }
        };
        let Some(layout) = layout else {
            if first {
                // A damaged command is reported as such, not as too big.
                verify(&profile, u)?;
            }
            return no_room(u.bytes.len());
        };
        let room = avail.saturating_sub(layout.data_start);
        if room == 0 {
            return no_room(layout.data_start + 1);
        }
        let remaining = layout.data_len - split_done;
        let len = usize::try_from(remaining).map_or(room, |r| r.min(room));
        let written = self.piece(&profile, u, &layout, seq, split_done, len, out)?;
        Ok(Step::Piece {
            written,
            done: split_done + len as u64 == layout.data_len,
        })
    }

    /// Writes the piece of `u` that carries data bytes `from..from + len`
    /// at the start of `out`; returns its length.
    ///
    /// The first time this emitter touches the command, the whole original
    /// is checked: its prefix and the data before `from` are checksummed,
    /// the piece is copied and checksummed in one pass, then the rest is
    /// checksummed, recording the running state every [`MARK`] bytes. The
    /// running states before and after a piece give the piece's own CRC
    /// through [`crc32c_shift`]. Later pieces copy themselves and checksum
    /// at most [`MARK`] bytes (from the last mark before their end); the
    /// last piece only copies.
    #[allow(clippy::too_many_arguments)]
    fn piece<E: core::error::Error>(
        &mut self,
        profile: &Profile,
        u: &Unit<'_>,
        layout: &DataLayout,
        seq: u64,
        from: u64,
        len: usize,
        out: &mut [u8],
    ) -> Result<usize, EmitError<E>> {
        let (cmd, crc) = (u.bytes, profile.crc);
        let ds = layout.data_start;
        let data = &cmd[ds..];
        let (a, b) = (from as usize, from as usize + len);
        let out = &mut out[..ds + len];
        let (state_from, state_to, state_end, marks_base) = match self.progress {
            Some(p) if p.seq == seq && p.at == from => {
                out[ds..].copy_from_slice(&data[a..b]);
                let to = if b == data.len() {
                    p.state_end
                } else {
                    // The best known state at or before `b`: the piece's
                    // start, or the last mark before its end.
                    let k = (b as u64).saturating_sub(p.marks_base) / MARK as u64;
                    let mark_at = p.marks_base + k * MARK as u64;
                    let (mut at, mut st) = (a, p.state_at);
                    if k > 0 && mark_at > from {
                        if let Some(m) = self.marks.get(k as usize - 1) {
                            (at, st) = (mark_at as usize, *m);
                        }
                    }
                    crc.update(st, &data[at..b])
                };
                (p.state_at, to, p.state_end, p.marks_base)
            }
            _ => {
                let mut s = crc.command_state(cmd, &cmd[CMD_HEADER_LEN..ds]);
                s = crc.update(s, &data[..a]);
                let to = copy_crc(crc, s, &data[a..b], &mut out[ds..]);
                // Check the rest, recording the running state every MARK
                // bytes for the pieces to come.
                self.marks.clear();
                let mut end = to;
                for block in data[b..].chunks(MARK) {
                    end = crc.update(end, block);
                    self.marks.push(end);
                }
                let (stored, computed) = (stored_crc(cmd), crc.finish(end));
                if stored != computed {
                    return Err(crc_error(u, stored, computed));
                }
                (s, to, end, b as u64)
            }
        };
        self.progress = Some(Progress {
            seq,
            at: b as u64,
            state_at: state_to,
            state_end,
            marks_base,
        });
        self.split
            .write_prefix(profile, cmd, layout, from, len, &mut out[..ds]);
        let prefix_state = crc.command_state(out, &out[CMD_HEADER_LEN..ds]);
        let piece_state = state_to ^ crc32c_shift(state_from ^ prefix_state, len as u64);
        if let Some(mut c) = CmdBuf::new_checked(&mut *out) {
            c.set_crc(crc.finish(piece_state));
        }
        Ok(out.len())
    }
}

/// Fills caller buffers with whole units, splitting data commands (as the
/// [`Split`] rule allows) to fill each buffer; after every fill, a token to
/// continue from.
///
/// Every command's CRC is checked as it is copied (unless
/// [`Emitter::set_unchecked_below`] leaves short ones to a consumer that
/// checks them): a damaged command is an error, never passed on, and a
/// split piece gets a CRC of its own only
/// after the whole original was checked. Data is read once: the pieces'
/// CRCs are derived from the one pass that checks the original (see
/// [`proto_tlv::crc32c_shift`]).
#[derive(Debug)]
pub struct Emitter<P, S> {
    producer: P,
    framer: Framer<S>,
    stream_id: [u8; 16],
    /// Where the emission stands (what a token carries besides the stream
    /// id and the producer's state).
    at: Cursor,
    /// The state of the producer's last safe point, as the token carries
    /// it; written out only when a token is made after the safe point moved.
    safe_state: Vec<u8>,
    safe_state_stale: bool,
    units_per_fill: u64,
    /// The unit at which a fill failed.
    failed: Option<u64>,
}

impl<P: Producer, S: Split> Emitter<P, S> {
    /// An emitter at the start of `producer`'s stream, splitting data
    /// commands by `split`.
    pub fn new(mut producer: P, split: S) -> Result<Self, EmitError<P::Error>> {
        if !producer.safe_point().map_err(EmitError::Producer)? {
            return Err(RearmError::NoSafePointAtStart.into());
        }
        let mut state = Vec::new();
        producer
            .save_state(&mut state)
            .map_err(EmitError::Producer)?;
        let stream_id = producer.stream_id();
        Ok(Self::with(producer, split, Token::start(stream_id, state)))
    }

    fn with(producer: P, split: S, t: Token) -> Self {
        Emitter {
            producer,
            framer: Framer {
                split,
                layout: None,
                progress: None,
                marks: Vec::new(),
                unchecked_below: 0,
            },
            stream_id: t.stream_id,
            at: Cursor::of(&t),
            safe_state: t.state,
            safe_state_stale: false,
            units_per_fill: u64::MAX,
            failed: None,
        }
    }

    /// Re-arms from `token`: restores the producer at the token's safe
    /// point, skips the units emitted since (without looking at their
    /// bytes when the producer can) and the data bytes of a split command
    /// already emitted. The work is proportional to what is skipped.
    ///
    /// A token for another stream, or one that does not fit this stream, is
    /// refused with a typed error; nothing is emitted.
    pub fn resume(mut producer: P, split: S, token: &Token) -> Result<Self, EmitError<P::Error>> {
        token.check()?;
        token.check_stream(&producer.stream_id())?;
        producer
            .restore(&token.state)
            .map_err(EmitError::BadState)?;
        let base = token.seq - token.since_safe_point;
        if producer.position() != base {
            return Err(RearmError::Position {
                expected: base,
                found: producer.position(),
            }
            .into());
        }
        if !producer.safe_point().map_err(EmitError::BadState)? {
            return Err(RearmError::NotASafePoint.into());
        }
        let mut state = Vec::new();
        producer
            .save_state(&mut state)
            .map_err(EmitError::BadState)?;
        if state != token.state {
            return Err(RearmError::NotASafePoint.into());
        }
        for i in 0..token.since_safe_point {
            if producer.current().map_err(EmitError::Producer)?.is_none() {
                return Err(RearmError::SkipPastEnd {
                    wanted: token.since_safe_point,
                    found: i,
                }
                .into());
            }
            producer.advance().map_err(EmitError::Producer)?;
            if producer.safe_point().map_err(EmitError::Producer)? {
                return Err(RearmError::SafePointSkipped { after: i + 1 }.into());
            }
        }
        let split_problem = match producer.current().map_err(EmitError::Producer)? {
            Some(_) if token.ended => return Err(RearmError::NotEnded { seq: token.seq }.into()),
            _ if token.split_done == 0 => None,
            None => Some("the stream has ended".to_string()),
            Some(u) => match u.kind {
                UnitKind::Command(p) => match split.layout(&p, u.bytes) {
                    None => Some("it is not a data command that may be split".into()),
                    Some(l) if token.split_done >= l.data_len => {
                        Some(format!("it carries only {} data bytes", l.data_len))
                    }
                    Some(_) => None,
                },
                UnitKind::Raw => Some("it is a stream header".into()),
            },
        };
        if let Some(why) = split_problem {
            return Err(RearmError::Split {
                seq: token.seq,
                split_done: token.split_done,
                why,
            }
            .into());
        }
        Ok(Self::with(producer, split, token.clone()))
    }

    /// Emits at most `n` units (whole, or one piece of a split data
    /// command) per fill, whatever the buffer's size: `1` is the seed's
    /// test mode that gives a token at every possible point. Default:
    /// unlimited.
    pub fn set_units_per_fill(&mut self, n: u64) {
        self.units_per_fill = n.max(1);
    }

    /// Commands shorter than `len` bytes are copied without a check of
    /// their CRC (default 0: every command is checked).
    ///
    /// Only for a consumer that checks every command's own CRC before it
    /// takes the command, as a session's receiver does
    /// (`proto_session::receive::Receiving`, through its format's check):
    /// the check then happens once, end to end, where the units are used,
    /// instead of once more here. A damaged command below `len` is then
    /// passed on (its framing is still checked) and refused by that
    /// consumer, which names it. A session keeps the check of the commands
    /// whose CRC it derives its DATA frames' CRCs from (4 KiB and more).
    pub fn set_unchecked_below(&mut self, len: usize) {
        self.framer.unchecked_below = len;
    }

    /// The token for where the emission stands now: after a failed fill,
    /// where the last good fill left it.
    pub fn token(&self) -> Token {
        self.at.token(self.stream_id, self.safe_state.clone())
    }

    /// Whether the stream has been emitted to its end.
    pub fn ended(&self) -> bool {
        self.at.ended
    }

    /// Output bytes emitted so far.
    pub fn offset(&self) -> u64 {
        self.at.offset
    }

    /// The producer.
    pub fn producer(&self) -> &P {
        &self.producer
    }

    /// Fills the start of `buf` with whole units, and with a piece of a data
    /// command when the next one does not fit whole; returns how many bytes
    /// it wrote. [`Emitter::token`] then says where the emission stands
    /// (made only when asked: a fill clones no state).
    ///
    /// A buffer too small for the next unit that may not be split (or for
    /// a piece with one data byte) is a [`EmitError::DoesNotFit`] error,
    /// which changes nothing: a larger buffer may follow. After any other
    /// error the buffer's content is unspecified and the emitter stays
    /// failed ([`EmitError::Failed`]); [`Emitter::token`] still gives the
    /// token of the last good fill, to re-arm from.
    pub fn fill(&mut self, buf: &mut [u8]) -> Result<Fill, EmitError<P::Error>> {
        self.fill_with(buf, None)
    }

    /// [`Emitter::fill`] with whole units only, at most `max` of them (the
    /// number of units a fill takes from then on), appending the length of
    /// each to `lens`, in order: what a caller that keeps units apart (a
    /// session's window) needs, without reading the output again. The fill
    /// ends before a unit that does not fit whole in what is left of `buf`
    /// (a data command is not split to fill it); one that does not fit an
    /// empty `buf` is a [`EmitError::DoesNotFit`] error.
    pub fn fill_units(
        &mut self,
        buf: &mut [u8],
        max: u64,
        lens: &mut Vec<usize>,
    ) -> Result<Fill, EmitError<P::Error>> {
        self.set_units_per_fill(max);
        self.fill_with(buf, Some(lens))
    }

    fn fill_with(
        &mut self,
        buf: &mut [u8],
        lens: Option<&mut Vec<usize>>,
    ) -> Result<Fill, EmitError<P::Error>> {
        if let Some(seq) = self.failed {
            return Err(EmitError::Failed { seq });
        }
        // Where the last good fill left the emission: what `token` says
        // after a failure (the producer has moved on, so the emitter stays
        // failed, but the caller's last token stays right).
        let before = (self.at, self.safe_state_stale);
        match self.fill_inner(buf, lens) {
            Ok(fill) => Ok(fill),
            // Nothing was written and nothing moved: the caller may try
            // again with a larger buffer.
            Err(e @ EmitError::DoesNotFit { .. }) => Err(e),
            Err(e) => {
                let failed_at = self.at.seq;
                (self.at, self.safe_state_stale) = before;
                self.failed = Some(failed_at);
                Err(e)
            }
        }
    }

    fn fill_inner(
        &mut self,
        buf: &mut [u8],
        mut lens: Option<&mut Vec<usize>>,
    ) -> Result<Fill, EmitError<P::Error>> {
        let mut w = 0usize;
        let (mut units, mut pieces, mut steps) = (0u64, 0u64, 0u64);
        let buf_len = buf.len();
        while !self.at.ended {
            if self.at.split_done == 0 && steps < self.units_per_fill {
                // Whole commands in a run, where the producer gives them.
                let (k, n) = self.take_commands(
                    &mut buf[w..],
                    self.units_per_fill - steps,
                    lens.as_deref_mut(),
                )?;
                if k > 0 {
                    w += n;
                    units += k;
                    steps += k;
                    continue;
                }
            }
            let step = match self.producer.current().map_err(EmitError::Producer)? {
                None => None,
                Some(_) if steps >= self.units_per_fill => break,
                // Whole units only (`fill_units`): the fill ends before one
                // that does not fit.
                Some(u)
                    if lens.is_some() && self.at.split_done == 0 && u.bytes.len() > buf_len - w =>
                {
                    if w > 0 {
                        break;
                    }
                    return Err(EmitError::DoesNotFit {
                        seq: self.at.seq,
                        index: u.index,
                        offset: u.offset,
                        needed: u.bytes.len(),
                        available: buf_len,
                    });
                }
                Some(u) => Some(self.framer.step(
                    &u,
                    self.at.seq,
                    self.at.split_done,
                    &mut buf[w..],
                    w == 0,
                    buf_len,
                )?),
            };
            match step {
                None => self.at.ended = true,
                Some(Step::Full) => break,
                Some(Step::Whole(n)) => {
                    if let Some(l) = lens.as_deref_mut() {
                        l.push(n);
                    }
                    w += n;
                    units += 1;
                    steps += 1;
                    self.complete()?;
                }
                Some(Step::Piece { written, done }) => {
                    if let Some(l) = lens.as_deref_mut() {
                        l.push(written);
                    }
                    w += written;
                    pieces += 1;
                    steps += 1;
                    if done {
                        units += 1;
                        self.complete()?;
                    } else {
                        // Split because the buffer is full: the fill ends.
                        self.at.split_done = self.framer.progress.map_or(0, |p| p.at);
                        break;
                    }
                }
            }
        }
        self.at.offset += w as u64;
        if self.safe_state_stale {
            self.safe_state.clear();
            self.producer
                .save_state(&mut self.safe_state)
                .map_err(EmitError::Producer)?;
            self.safe_state_stale = false;
        }
        Ok(Fill {
            written: w,
            ended: self.at.ended,
            units,
            pieces,
        })
    }

    /// Copies the whole commands at the cursor that the producer gives as a
    /// run ([`Producer::commands_ahead`]) into `out`, at most `max` of them,
    /// checking each CRC (and appending each length to `lens`), and moves
    /// past them: the units and bytes taken.
    /// Stops at a command that does not fit, is an END, or does not frame
    /// (the one-unit path then takes it, and names what is wrong with it).
    /// The producer is asked for a safe point only at the last position of
    /// the run where one may be ([`Producer::safe_points`]): the one a token
    /// would start from.
    fn take_commands(
        &mut self,
        out: &mut [u8],
        max: u64,
        mut lens: Option<&mut Vec<usize>>,
    ) -> Result<(u64, usize), EmitError<P::Error>> {
        // Where safe points may be; not known: after every unit, so a run
        // takes one unit and asks.
        let (first, every, max) = match self.producer.safe_points() {
            Some((first, every)) => (first, every.max(1), max),
            None => (1, 1, max.min(1)),
        };
        let room = out.len();
        let Some(run) = self
            .producer
            .commands_ahead(room)
            .map_err(EmitError::Producer)?
        else {
            return Ok((0, 0));
        };
        let UnitKind::Command(profile) = run.kind else {
            return Ok((0, 0));
        };
        // At most what `out` takes, whatever the producer gave.
        let bytes = &run.bytes[..run.bytes.len().min(room)];
        let unchecked_below = self.framer.unchecked_below;
        // `out[at..copied]` holds `bytes[at..copied]`: commands not
        // checked in the pass that copies them are copied ahead of the walk,
        // several at a time. The copy streams the run through the cache in
        // order, so the headers the walk reads next are there (reading them
        // alone, one dependent miss after another, costs far more).
        let (mut k, mut at, mut copied) = (0u64, 0usize, 0usize);
        // The last position of the run where a safe point may be: units
        // and bytes up to it.
        let (mut safe, mut next_safe) = (None, first.max(1));
        while k < max {
            let rest = &bytes[at..];
            let Some(len) = next_command(rest, &profile) else {
                break;
            };
            let u = Unit {
                kind: run.kind,
                bytes: &rest[..len],
                index: run.index + k,
                offset: run.offset + at as u64,
            };
            let checked = if len >= unchecked_below.max(FUSED_FROM) {
                copy_command(&profile, &u, &mut out[at..], unchecked_below).map(drop)
            } else {
                if copied < at + len {
                    let from = copied.max(at);
                    let end = (at + len + COPY_AHEAD).min(bytes.len());
                    out[from..end].copy_from_slice(&bytes[from..end]);
                    copied = end;
                }
                if len < unchecked_below {
                    Ok(())
                } else {
                    verify(&profile, &u)
                }
            };
            if let Err(e) = checked {
                // The fill fails at this unit.
                self.at.seq += k;
                return Err(e);
            }
            if let Some(l) = lens.as_deref_mut() {
                l.push(len);
            }
            at += len;
            k += 1;
            if k == next_safe {
                safe = Some((k, at));
                next_safe += every;
            }
        }
        if k == 0 {
            return Ok((0, 0));
        }
        let (mut done, mut done_bytes) = (0, 0);
        if let Some((k_safe, at_safe)) = safe {
            self.producer
                .advance_commands(k_safe, at_safe as u64)
                .map_err(EmitError::Producer)?;
            self.at.seq += k_safe;
            self.at.since_safe_point += k_safe - 1;
            self.note_safe_point()?;
            (done, done_bytes) = (k_safe, at_safe);
        }
        if k > done {
            // No safe point may be past the last one noted.
            self.producer
                .advance_commands(k - done, (at - done_bytes) as u64)
                .map_err(EmitError::Producer)?;
            self.at.seq += k - done;
            self.at.since_safe_point += k - done;
        }
        Ok((k, at))
    }

    /// The unit at the cursor was emitted entirely: move past it and note a
    /// safe point if the producer is at one.
    fn complete(&mut self) -> Result<(), EmitError<P::Error>> {
        self.producer.advance().map_err(EmitError::Producer)?;
        self.at.seq += 1;
        self.at.split_done = 0;
        self.note_safe_point()
    }

    /// After a unit: notes a safe point if the producer is at one.
    fn note_safe_point(&mut self) -> Result<(), EmitError<P::Error>> {
        if self.producer.safe_point().map_err(EmitError::Producer)? {
            self.safe_state_stale = true;
            self.at.since_safe_point = 0;
        } else {
            self.at.since_safe_point += 1;
        }
        Ok(())
    }
}
