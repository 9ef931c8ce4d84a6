//! The sender's data phase, sans-IO: units out of an emitter into the
//! replay window and onto the wire, checkpoint tokens in band, FINISH and
//! BYE once the last unit is acknowledged.
//!
//! A [`Sending`] outlives its connections: each connection's handshake
//! ends with the receiver's SELECT, which [`Sending::resume`] answers with
//! ACCEPT (by seq when the window still holds what the receiver lacks,
//! else re-armed from the receiver's token or from the start through the
//! format's [`Arm`], the units the receiver has regenerated and skipped).
//! The caller owns the I/O, the clock and the instance ids:
//! [`Sending::poll`] writes frames into a [`Framer`] and says what to do
//! next ([`Step`]).
//!
//! Small units: the window takes them from the emitter several per fill
//! (whole units up to [`BATCH_BYTES`], within the window's room;
//! [`Emission::fill_units`] gives each one's length), so the emitter's
//! cost per call is paid per batch. Each unit is still a message of its
//! own (its seq, its ack and its resend after a reconnect); consecutive
//! small ones go several to a UNITS frame where the receiver reads them
//! ([`FEATURE_UNITS`]), one to a DATA frame otherwise.
//!
//! Compression ([`SendConfig::compress`]): on a connection whose receiver
//! advertised [`FEATURE_ZSTD`] (the caller tells [`Sending::negotiated`]
//! before [`Sending::resume`]), each unit of at least [`COMPRESS_MIN`]
//! bytes goes out as one zstd frame when that makes its DATA frame
//! shorter, plain otherwise. The window keeps the units themselves: a
//! resend is compressed again, for whatever its connection negotiated.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;

use proto_checkpoint::{Emitter, Fill, Producer, Split, Token};
use proto_tlv::{AttrValue, Command, CrcVariant, Value};

use crate::error::{BoxError, ResumeError, SessionError};
use crate::framer::{expect, u64_attr, Framer};
use crate::handshake::{Accept, Select};
use crate::replay::{Limits, ReplayError, Resend, Sender};
use crate::wire::{
    attr, frame, Code, Resumed, COMPRESS_MIN, FEATURE_UNITS, FEATURE_ZSTD, UNITS_BYTES, UNITS_MAX,
};

/// A fill of the emitter takes whole units up to this many bytes (or one
/// unit of the stream's largest size, when larger; and no more than the
/// window has room for): small units go into the window several per
/// emitter call.
pub const BATCH_BYTES: usize = 64 * 1024;

/// The zstd level of compressed DATA frames: fast.
pub const ZSTD_LEVEL: i32 = 1;
/// What a compressed DATA frame carries more than a plain one: its
/// [`attr::ZSTD_LEN`] attribute (type, length, u64).
#[cfg(feature = "zstd")]
const ZSTD_LEN_ATTR: usize = 4 + 8;

/// An emitter of any format, as a sending session drives it.
pub trait Emission: Send {
    /// Fills `buf` with the next units (one when
    /// [`Emission::set_units_per_fill`] is 1).
    fn fill(&mut self, buf: &mut [u8]) -> Result<Fill, BoxError>;
    /// Where the emission stands.
    fn token(&self) -> Token;
    /// Whether the stream has been emitted to its end.
    fn ended(&self) -> bool;
    /// Units per fill.
    fn set_units_per_fill(&mut self, n: u64);
    /// Fills `buf` with at most `max` whole units and appends the length
    /// of each to `lens` (one entry per message of the window); none is
    /// split to fill `buf`, which takes at least the largest unit. An
    /// emission that cannot tell its units apart in its output fills one
    /// (the default), as [`Emission::fill`] with one unit per fill does.
    fn fill_units(
        &mut self,
        buf: &mut [u8],
        max: u64,
        lens: &mut Vec<usize>,
    ) -> Result<Fill, BoxError> {
        let _ = max;
        fill_one(self, buf, lens)
    }
    /// From now on, checks every unit itself (its CRC included) before
    /// emitting it, where it left some to the receiver's check (see
    /// [`Sending::peer_refused`]). An emission that leaves nothing
    /// unchecked does nothing (the default).
    fn check_all(&mut self) {}
}

/// Fills `buf` with the next unit of `e` and appends its length to `lens`:
/// one unit per fill.
pub(crate) fn fill_one<E: Emission + ?Sized>(
    e: &mut E,
    buf: &mut [u8],
    lens: &mut Vec<usize>,
) -> Result<Fill, BoxError> {
    e.set_units_per_fill(1);
    let fill = e.fill(buf)?;
    lens.push(fill.written);
    Ok(fill)
}

impl<P, S> Emission for Emitter<P, S>
where
    P: Producer + Send,
    P::Error: Send + Sync,
    S: Split + Send,
{
    fn fill(&mut self, buf: &mut [u8]) -> Result<Fill, BoxError> {
        Emitter::fill(self, buf).map_err(Into::into)
    }
    fn token(&self) -> Token {
        Emitter::token(self)
    }
    fn ended(&self) -> bool {
        Emitter::ended(self)
    }
    fn set_units_per_fill(&mut self, n: u64) {
        Emitter::set_units_per_fill(self, n)
    }
    fn check_all(&mut self) {
        Emitter::set_unchecked_below(self, 0)
    }
    /// The emitter knows its units: a fill of several, their lengths from
    /// the emitter itself.
    fn fill_units(
        &mut self,
        buf: &mut [u8],
        max: u64,
        lens: &mut Vec<usize>,
    ) -> Result<Fill, BoxError> {
        let fill = Emitter::fill_units(self, buf, max, lens)?;
        if fill.pieces > 0 {
            return Err("a fill of whole units split one".into());
        }
        Ok(fill)
    }
}

/// What a sender transmitted, over its connections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendStats {
    /// Units transmitted (resends included), counted when attempted: a unit
    /// cut off by a failure is sent again in full.
    pub units_sent: u64,
    /// Unit bytes transmitted (resends included; a compressed unit counted
    /// at its own, uncompressed length).
    pub bytes_sent: u64,
    /// Payload bytes of the DATA and UNITS frames as they went on the wire
    /// (resends included): a compressed unit's zstd frame, other units'
    /// own bytes.
    /// `bytes_sent` less this is what compression saved.
    pub payload_wire_bytes: u64,
    /// DATA frames sent compressed (resends included).
    pub units_compressed: u64,
    /// Units transmitted again after a reconnect.
    pub units_resent: u64,
    /// Their bytes.
    pub bytes_resent: u64,
    /// Checkpoint tokens sent.
    pub tokens_sent: u64,
    /// Transfers resumed by seq exchange.
    pub resumed_by_seq: u64,
    /// Transfers re-armed from the receiver's checkpoint token (or from
    /// the start when it had none yet).
    pub resumed_by_token: u64,
    /// Units a re-armed sender regenerated and skipped because the
    /// receiver had them (sent by the instance before it).
    pub units_skipped: u64,
    /// Emitter fills that took units into the window: fewer than the
    /// units when small ones go several per fill ([`BATCH_BYTES`]).
    pub fills: u64,
    /// UNITS frames sent, each with several units
    /// ([`FEATURE_UNITS`]); the other units went in DATA frames.
    pub units_frames: u64,
}

/// What to do after [`Sending::poll`].
#[derive(Debug)]
pub enum Step<'a> {
    /// A DATA or UNITS frame went into the framer. `body`: its payload,
    /// when large, was not copied: send it right after the pending bytes,
    /// before anything else. Then poll again.
    Data {
        /// Its seq (a UNITS frame's last).
        seq: u64,
        /// The payload to send after the pending bytes, if not inline.
        body: Option<&'a [u8]>,
    },
    /// Everything due is in the framer and the window is full or the
    /// stream ended: send the output, read a frame, give it to
    /// [`Sending::handle`], poll again.
    Wait,
    /// BYE is in the framer: every unit is acknowledged and the transfer
    /// is complete. Send the output.
    Done {
        /// Units in the stream.
        units: u64,
    },
}

/// One transfer's sending side: the emitter, the window, the tokens to
/// send; it survives reconnects.
pub(crate) struct Transfer {
    instance: [u8; 16],
    selection: Vec<u32>,
    units: Box<dyn Emission>,
    replay: Sender,
    /// Tokens to send after the DATA of their seq.
    tokens: VecDeque<(u64, Vec<u8>)>,
    since_token: u64,
    token_every: u64,
    /// The emitter's buffer: the largest unit.
    max_unit: usize,
    unit_crc: Option<CrcVariant>,
    /// The seq of the last unit, once the emitter has ended.
    last: Option<u64>,
    /// This connection: the DATA just written (its tokens follow it) and
    /// whether FINISH went out.
    just_sent: Option<u64>,
    finish_sent: bool,
    /// A fill failed after the emitter had moved past units the window did
    /// not take: this transfer cannot go on (the next connection arms a
    /// new one from the receiver's token or from the start).
    poisoned: bool,
    /// This connection compresses DATA (asked, and the receiver can).
    compress: bool,
    /// This connection's UNITS frames carry at most this many unit bytes
    /// (0: it sends none: the receiver does not read them, or the
    /// connection compresses each unit on its own).
    units_bytes: usize,
    /// The compressor (made on first use) and its output.
    #[cfg(feature = "zstd")]
    zip: Option<zstd::bulk::Compressor<'static>>,
    #[cfg(feature = "zstd")]
    zipped: Vec<u8>,
}

impl core::fmt::Debug for Transfer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Transfer")
            .field("selection", &self.selection)
            .field("acked", &self.replay.acked())
            .field("sent", &self.replay.sent())
            .field("last", &self.last)
            .finish_non_exhaustive()
    }
}

/// How a [`Sending`] sends each transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendConfig {
    /// A checkpoint token goes out after at least this many payload bytes
    /// (and after the last unit).
    pub token_every: u64,
    /// The largest unit: the emitter fills buffers of this size, so it
    /// never splits a command.
    pub max_unit: usize,
    /// The CRC variant of the stream's commands, when every stream sent
    /// has the same: large DATA frames take their CRC from their command's.
    pub unit_crc: Option<CrcVariant>,
    /// Compress DATA frames with zstd where the receiver advertised
    /// [`FEATURE_ZSTD`] (see [`Sending::negotiated`]); plain frames
    /// otherwise. Without the crate's `zstd` feature, never.
    pub compress: bool,
}

impl Transfer {
    /// A transfer of the units `units` emits, sender instance `instance`,
    /// contexts `selection`, the window `replay` (its first seq after the
    /// units the receiver has). `last`: the seq of the last unit when the
    /// emitter has already ended (the receiver has everything).
    pub(crate) fn new(
        instance: [u8; 16],
        selection: Vec<u32>,
        units: Box<dyn Emission>,
        replay: Sender,
        last: Option<u64>,
        config: SendConfig,
    ) -> Self {
        Transfer {
            instance,
            selection,
            units,
            replay,
            tokens: VecDeque::new(),
            since_token: 0,
            token_every: config.token_every,
            max_unit: config.max_unit,
            unit_crc: config.unit_crc,
            last,
            just_sent: None,
            finish_sent: false,
            poisoned: false,
            compress: false,
            units_bytes: 0,
            #[cfg(feature = "zstd")]
            zip: None,
            #[cfg(feature = "zstd")]
            zipped: Vec::new(),
        }
    }

    /// A new connection starts its data phase; `compress`: its DATA frames
    /// may be compressed; `units_bytes`: the unit bytes of its UNITS frames
    /// (0: none).
    pub(crate) fn connected(&mut self, compress: bool, units_bytes: usize) {
        self.just_sent = None;
        self.finish_sent = false;
        self.compress = compress;
        self.units_bytes = units_bytes;
    }

    /// Writes what is due into `f`: the tokens of the units written last,
    /// the next units the window holds unsent (topped up from the emitter
    /// while it has room: a DATA frame, or a UNITS frame of several small
    /// ones), FINISH once the last unit is sent, BYE once it is
    /// acknowledged.
    pub(crate) fn poll(
        &mut self,
        f: &mut Framer,
        stats: &mut SendStats,
    ) -> Result<Step<'_>, SessionError> {
        if let Some(seq) = self.just_sent.take() {
            while let Some((ts, _)) = self.tokens.front() {
                if *ts > seq {
                    break;
                }
                if let Some((ts, tb)) = self.tokens.pop_front() {
                    f.write_frame(
                        frame::TOKEN,
                        &[
                            AttrValue::new(attr::SEQ, Value::U64(ts)),
                            AttrValue::new(attr::TOKEN, Value::Bytes(&tb)),
                        ],
                    )?;
                    stats.tokens_sent += 1;
                }
            }
        }
        if !self.replay.has_unsent() && self.last.is_none() && self.replay.has_room() {
            if let Err(e) = self.top_up() {
                self.poisoned = true;
                return Err(e);
            }
            stats.fills += 1;
        }
        if self.replay.has_unsent() {
            // Several units to one UNITS frame where the connection sends
            // them.
            let max = if self.units_bytes > 0 { UNITS_MAX } else { 1 };
            // Every path returns: the borrow of the window ends here.
            let Some(run) = self.replay.next_run(max, self.units_bytes) else {
                return Ok(Step::Wait);
            };
            stats.units_sent += run.count() as u64;
            stats.bytes_sent += run.bytes.len() as u64;
            stats.units_resent += run.resent().0;
            stats.bytes_resent += run.resent().1;
            self.just_sent = Some(run.last());
            if run.count() > 1 {
                stats.payload_wire_bytes += run.bytes.len() as u64;
                stats.units_frames += 1;
                f.write_units(run.seq, run.bytes, run.lens())?;
                return Ok(Step::Data {
                    seq: run.last(),
                    body: None,
                });
            }
            let (seq, bytes) = (run.seq, run.bytes);
            if self.compress && bytes.len() >= COMPRESS_MIN {
                #[cfg(feature = "zstd")]
                if let Some(zipped) = compress(&mut self.zip, &mut self.zipped, bytes) {
                    f.write_frame(
                        frame::DATA,
                        &[
                            AttrValue::new(attr::SEQ, Value::U64(seq)),
                            AttrValue::new(attr::ZSTD_LEN, Value::U64(bytes.len() as u64)),
                            AttrValue::new(attr::PAYLOAD, Value::Bytes(zipped)),
                        ],
                    )?;
                    stats.payload_wire_bytes += zipped.len() as u64;
                    stats.units_compressed += 1;
                    return Ok(Step::Data { seq, body: None });
                }
            }
            stats.payload_wire_bytes += bytes.len() as u64;
            let follows = f.write_data(seq, bytes, self.unit_crc);
            return Ok(Step::Data {
                seq,
                body: follows.then_some(bytes),
            });
        }
        if let Some(last) = self.last {
            if !self.finish_sent && self.replay.sent() >= last {
                f.write_seq(frame::FINISH, last)?;
                self.finish_sent = true;
            }
            if self.replay.acked() >= last {
                f.write_frame(frame::BYE, &[])?;
                return Ok(Step::Done { units: last });
            }
        }
        Ok(Step::Wait)
    }

    /// Takes the emitter's next units into the window (as many as
    /// [`Transfer::batch`] allows, in one fill), and queues a token after
    /// the last when one is due.
    fn top_up(&mut self) -> Result<(), SessionError> {
        let (len, max) = self.fill_size();
        let units = &mut self.units;
        let mut filled = None;
        let pushed = self.replay.push_many_with(len, |buf, lens| {
            filled = Some(units.fill_units(buf, max, lens)?);
            Ok(())
        })?;
        let seq = pushed.map_err(SessionError::Source)?;
        let Some(fill) = filled else {
            return Ok(());
        };
        self.since_token += fill.written as u64;
        if fill.ended {
            self.last = Some(seq);
        }
        if fill.ended || self.since_token >= self.token_every {
            self.since_token = 0;
            self.tokens.push_back((seq, self.units.token().to_bytes()?));
        }
        Ok(())
    }

    /// The buffer and the most units of a fill: [`BATCH_BYTES`] of whole
    /// units (or the largest unit, when larger), within the window's room
    /// in bytes and messages; one unit of the largest size when the room
    /// is less (a single message may take the window past its bound). Small
    /// units then cost one emitter call (and one save of its state) per
    /// 64 KiB, not per unit.
    fn fill_size(&self) -> (usize, u64) {
        let room = self.replay.room();
        let largest = self.max_unit.max(1);
        let messages = self.replay.room_messages().max(1) as u64;
        if room < largest {
            (largest, 1)
        } else {
            (room.min(BATCH_BYTES.max(largest)), messages)
        }
    }

    /// A frame from the receiver during the data phase: an ACK.
    pub(crate) fn handle(&mut self, c: &Command<'_>) -> Result<(), SessionError> {
        expect(c, frame::ACK)?;
        self.replay.ack(u64_attr(c, attr::SEQ)?)?;
        Ok(())
    }
}

/// `unit` as one zstd frame in `out`, when its DATA frame comes out
/// shorter than the plain one (else, or when zstd fails, `None`).
#[cfg(feature = "zstd")]
fn compress<'z>(
    zip: &mut Option<zstd::bulk::Compressor<'static>>,
    out: &'z mut Vec<u8>,
    unit: &[u8],
) -> Option<&'z [u8]> {
    if zip.is_none() {
        *zip = zstd::bulk::Compressor::new(ZSTD_LEVEL).ok();
    }
    let z = zip.as_mut()?;
    // Room for less than the unit less the attribute that says it is
    // compressed: zstd stops (an error) where it would not shrink the frame.
    let room = unit.len().checked_sub(ZSTD_LEN_ATTR + 1)?;
    out.clear();
    out.reserve_exact(room);
    let n = z.compress_to_buffer(unit, out).ok()?;
    (n <= room).then_some(&out[..n])
}

/// Makes the emitter of the contexts `selection`, from the start or
/// re-armed from a checkpoint token: the format's part of a resume.
pub trait Arm {
    /// The emitter, positioned at `token` when given.
    fn arm(
        &mut self,
        selection: &[u32],
        token: Option<&Token>,
    ) -> Result<Box<dyn Emission>, SessionError>;
}

impl<F> Arm for F
where
    F: FnMut(&[u32], Option<&Token>) -> Result<Box<dyn Emission>, SessionError>,
{
    fn arm(
        &mut self,
        selection: &[u32],
        token: Option<&Token>,
    ) -> Result<Box<dyn Emission>, SessionError> {
        self(selection, token)
    }
}

/// The sending side of a transfer across connections: resume by seq when
/// the window still holds what the receiver lacks, else re-armed from the
/// receiver's checkpoint token (or from the start), the units it has
/// regenerated and skipped.
#[derive(Debug)]
pub struct Sending {
    transfer: Option<Transfer>,
    window: Limits,
    config: SendConfig,
    stats: SendStats,
    /// The features negotiated on the connection about to resume.
    features: u64,
    /// The unit bytes of a UNITS frame: [`UNITS_BYTES`], halved after each
    /// connection over which the receiver got nothing (a link that breaks
    /// more often than a frame's length still moves the transfer on, down
    /// to one unit a frame), doubled again after each that got something,
    /// and full again when a receiver states less than the one before (a
    /// different receiver).
    units_bytes: usize,
    /// The last seq the receiver stated on the connection before, while
    /// the transfer runs.
    last_received: Option<u64>,
    /// A receiver refused a unit it got ([`Sending::peer_refused`]): every
    /// emitter armed from then on checks every unit itself.
    check_all: bool,
}

impl Sending {
    /// A sender with no transfer yet; each transfer gets a window of
    /// `window`.
    pub fn new(window: Limits, config: SendConfig) -> Self {
        Sending {
            transfer: None,
            window,
            config,
            stats: SendStats::default(),
            features: 0,
            units_bytes: UNITS_BYTES,
            last_received: None,
            check_all: false,
        }
    }

    /// The features of the connection whose SELECT comes next: those the
    /// receiver advertised in its HELLO (and the sender too). Call it after
    /// the handshake, before [`Sending::resume`], on every connection:
    /// `resume` takes them for that connection only, and without them a
    /// connection's DATA frames are plain, one unit each. [`FEATURE_ZSTD`]
    /// there and [`SendConfig::compress`]: DATA frames are compressed;
    /// [`FEATURE_UNITS`] (and no compression): consecutive small units go
    /// several to a UNITS frame.
    pub fn negotiated(&mut self, features: u64) {
        self.features = features;
    }

    /// Forgets the transfer (the window and the position), as a restarted
    /// sender would, or once it is complete.
    pub fn forget(&mut self) {
        self.transfer = None;
    }

    /// Takes the error a connection ended with. When it is the receiver's
    /// refusal of the stream ([`Code::Stream`]: a unit it got is not
    /// valid, or it cannot write it), the units the window holds are not
    /// sent again: the transfer is forgotten, so that the next SELECT
    /// re-arms from the receiver's token and reads the source again, and
    /// every emitter from then on checks every unit itself. A command
    /// damaged at the source (which the emitter leaves to the receiver's
    /// check when it is short, [`DERIVED_FROM`](crate::framer::DERIVED_FROM))
    /// is then refused by the sender, which names where it lies, instead of
    /// being sent again to every receiver that resumes; damage that was
    /// passing (a read fault) is read again right. Any other error leaves
    /// the transfer as it is.
    pub fn peer_refused(&mut self, err: &SessionError) {
        if matches!(
            err,
            SessionError::Refused {
                code: Code::Stream,
                ..
            }
        ) {
            self.transfer = None;
            self.check_all = true;
        }
    }

    /// What went out so far.
    pub fn stats(&self) -> SendStats {
        self.stats
    }

    /// The answer to a receiver's SELECT: the transfer it names resumes by
    /// seq, or a new one (sender instance `instance`, supplied by the
    /// caller) is armed by `arm` from the receiver's token or from the
    /// start, skipping the units the receiver has. Then the connection's
    /// data phase starts.
    pub fn resume(
        &mut self,
        select: &Select<'_>,
        instance: [u8; 16],
        arm: &mut dyn Arm,
    ) -> Result<Accept, SessionError> {
        let received = select.received;
        let features = core::mem::take(&mut self.features);
        let (how, resend) = self.settle(select, instance, arm)?;
        let Some(t) = self.transfer.as_mut() else {
            return Err(ResumeError::NoTransfer.into());
        };
        let compress = self.config.compress && features & FEATURE_ZSTD != 0;
        self.units_bytes = match self.last_received {
            // Nothing got through on the connection before.
            Some(r) if received == r => (self.units_bytes / 2).max(1),
            Some(r) if received > r => (self.units_bytes * 2).min(UNITS_BYTES),
            // Another receiver (or one that lost what it had): start over.
            _ => UNITS_BYTES,
        };
        self.last_received = Some(received);
        let compress = compress && cfg!(feature = "zstd");
        // A compressing connection sends each unit alone (each compressed
        // on its own).
        let units_bytes = if features & FEATURE_UNITS != 0 && !compress {
            self.units_bytes
        } else {
            0
        };
        t.connected(compress, units_bytes);
        Ok(Accept {
            instance: t.instance,
            resumed: how as u8,
            next: t.replay.acked() + 1,
            window: t.replay.limits(),
            resend,
        })
    }

    /// Forgets a transfer whose emitter ran past what its window holds
    /// (see `Transfer::poisoned`): resuming it by seq would skip units.
    fn drop_poisoned(&mut self) {
        if self.transfer.as_ref().is_some_and(|t| t.poisoned) {
            self.transfer = None;
        }
    }

    fn settle(
        &mut self,
        select: &Select<'_>,
        instance: [u8; 16],
        arm: &mut dyn Arm,
    ) -> Result<(Resumed, Resend), SessionError> {
        self.drop_poisoned();
        let received = select.received;
        if let Some(t) = self
            .transfer
            .as_mut()
            .filter(|t| t.instance == select.instance)
        {
            if t.selection != select.contexts {
                return Err(ResumeError::SelectionChanged {
                    was: t.selection.clone(),
                    asked: select.contexts.clone(),
                }
                .into());
            }
            match t.replay.reconnect(received) {
                Ok(r) => {
                    self.stats.resumed_by_seq += 1;
                    return Ok((Resumed::Seq, r));
                }
                // The receiver lost what it had acknowledged: only its
                // token can help.
                Err(ReplayError::PeerRegressed { .. }) if select.token.is_some() => {}
                Err(e) => return Err(e.into()),
            }
        }
        let (mut units, how) = match select.token {
            Some(bytes) => {
                let token = Token::from_bytes(bytes)?;
                if token.seq > received {
                    return Err(ResumeError::TokenAhead {
                        token: token.seq,
                        received,
                    }
                    .into());
                }
                (arm.arm(&select.contexts, Some(&token))?, Resumed::Token)
            }
            // A receiver that has units but no token (the sender lost its
            // window before the first token went out) is served from the
            // start: the units it has are regenerated and skipped.
            None => {
                let how = if received == 0 {
                    Resumed::Fresh
                } else {
                    Resumed::Start
                };
                (arm.arm(&select.contexts, None)?, how)
            }
        };
        units.set_units_per_fill(1);
        if self.check_all {
            units.check_all();
        }
        let mut at = units.token().seq;
        // A token from after the last unit: the receiver has everything
        // (only the goodbye was lost), and there is nothing left to emit.
        let mut last = units.ended().then_some(at);
        if at < received {
            // The receiver has units past the token (sent by the instance
            // before this one): regenerate them without sending.
            let mut scratch = vec![0u8; self.config.max_unit];
            while at < received {
                let fill = units.fill(&mut scratch).map_err(SessionError::Source)?;
                if fill.written == 0 {
                    return Err(ReplayError::FromTheFuture {
                        peer: received,
                        sent: at,
                    }
                    .into());
                }
                at += 1;
                self.stats.units_skipped += 1;
                if fill.ended {
                    last = Some(at);
                }
            }
        }
        if matches!(how, Resumed::Token | Resumed::Start) {
            self.stats.resumed_by_token += 1;
        }
        self.transfer = Some(Transfer::new(
            instance,
            select.contexts.clone(),
            units,
            Sender::new(self.window, received),
            last,
            self.config,
        ));
        Ok((how, Resend::default()))
    }

    /// Writes what is due into `f`: the tokens of the units written last,
    /// the next units the window holds unsent (topped up from the emitter
    /// while it has room: a DATA frame, or a UNITS frame of several small
    /// ones), FINISH once the last unit is sent, BYE once it is
    /// acknowledged.
    pub fn poll(&mut self, f: &mut Framer) -> Result<Step<'_>, SessionError> {
        self.drop_poisoned();
        let Some(t) = self.transfer.as_mut() else {
            return Err(ResumeError::NoTransfer.into());
        };
        let step = t.poll(f, &mut self.stats)?;
        if matches!(step, Step::Done { .. }) {
            // The next SELECT starts another transfer.
            self.last_received = None;
        }
        Ok(step)
    }

    /// A frame from the receiver during the data phase: an ACK.
    pub fn handle(&mut self, c: &Command<'_>) -> Result<(), SessionError> {
        match self.transfer.as_mut() {
            Some(t) => t.handle(c),
            None => Err(ResumeError::NoTransfer.into()),
        }
    }
}
