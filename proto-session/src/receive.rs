//! The receiver's side, sans-IO: where it stands across connections (last
//! seq received, sender instance, latest token), what it states in SELECT,
//! and the data phase: every unit checked before it is handed out,
//! duplicates discarded, acknowledgements once what was handed out is
//! durable.
//!
//! The caller owns the output and the I/O: [`Receiving::handle`] returns
//! the units to write ([`Action::deliver`]: one from a DATA frame, one or
//! more from a UNITS frame) and whether to make the output
//! durable now ([`Action::ack`]); after it has, [`Receiving::durable`]
//! queues the ACK that says so.
//!
//! A DATA frame may carry its unit compressed ([`crate::wire::FEATURE_ZSTD`],
//! which a receiver built with the `zstd` feature advertises): it is
//! decompressed into a buffer the receiver owns, never past the length the
//! frame declares nor past [`MAX_UNIT`], then checked like any other unit,
//! and its original bytes are handed out.

use alloc::boxed::Box;
use alloc::vec::Vec;

use proto_checkpoint::{Format, Validator, ValidatorState};
use proto_tlv::{Command, CrcVariant};

use crate::error::{BoxError, CompressedError, SessionError};
use crate::framer::{u64_attr, Data, Framer, Incoming};
use crate::handshake::{Accept, Select};
use crate::replay::{self, Limits, Receiver, ReplayError};
use crate::wire::{attr, frame, Resumed, MAX_UNIT};

/// A receiver's check of units, whatever their format.
pub trait Check: Send {
    /// Checks that `unit` is exactly the next unit of a valid stream: for a
    /// format whose units carry a CRC, that CRC included (a session's
    /// sender leaves the CRCs of commands below
    /// [`DERIVED_FROM`](crate::framer::DERIVED_FROM) to this check: see
    /// `proto_checkpoint::Emitter::set_unchecked_below`).
    fn unit(&mut self, unit: &[u8]) -> Result<(), BoxError>;
    /// Checks that the stream may end here.
    fn finish(&self) -> Result<(), BoxError>;
    /// The CRC variant of the commands of the stream being received, once
    /// its header is in (large DATA frames are then read on the fast path).
    fn unit_crc(&self) -> Option<CrcVariant>;
    /// Where the check stands, when it can be kept and resumed from
    /// ([`SessionFormat::resume_check`](crate::offer::SessionFormat::resume_check)).
    fn state(&self) -> Option<ValidatorState> {
        None
    }
}

impl<F: Format + Send> Check for Validator<F> {
    fn unit(&mut self, unit: &[u8]) -> Result<(), BoxError> {
        Validator::unit(self, unit).map_err(Into::into)
    }
    fn finish(&self) -> Result<(), BoxError> {
        Validator::finish(self).map_err(Into::into)
    }
    fn unit_crc(&self) -> Option<CrcVariant> {
        self.profile().map(|p| p.crc)
    }
    fn state(&self) -> Option<ValidatorState> {
        Some(Validator::state(self))
    }
}

/// What a receiver got, over its connections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReceiveStats {
    /// Reconnects where the sender had lost its window and re-armed from
    /// this receiver's checkpoint token (or from the start, when none had
    /// come yet), skipping what the receiver had.
    pub resumed_by_token: u64,
    /// Units handed out (checked).
    pub units: u64,
    /// Their bytes.
    pub bytes_delivered: u64,
    /// Unit bytes of every DATA and UNITS frame that arrived (duplicates included;
    /// a compressed unit counted at its declared, uncompressed length).
    pub bytes_received: u64,
    /// Payload bytes of every DATA and UNITS frame as they came on the wire
    /// (duplicates included): a compressed unit's zstd frame, another
    /// unit's own bytes. `bytes_received` less this is what compression
    /// saved.
    pub payload_wire_bytes: u64,
    /// DATA frames that came compressed (duplicates included).
    pub units_compressed: u64,
    /// Payload bytes the sender announced it would send again after a
    /// reconnect, plus duplicates that arrived.
    pub bytes_resent: u64,
    /// Units that arrived twice (discarded).
    pub duplicates: u64,
}

/// Where a receiver stands, as it must keep it across its own restarts
/// ([`Receiving::position`], [`Receiving::restore`]): the last seq it has,
/// the sender instance it came from and the latest checkpoint token (so
/// that a sender that lost its window re-arms from it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Position {
    /// The last seq received (every unit up to it handed out).
    pub received: u64,
    /// The sender instance it was received from (zero: none yet).
    pub instance: [u8; 16],
    /// The latest checkpoint token and its seq (at most `received`).
    pub token: Option<(u64, Vec<u8>)>,
    /// The seq of the last unit, once the sender said FINISH (every unit
    /// is then here and checked; only the goodbye may be missing).
    pub last: Option<u64>,
}

/// Checked units to write to the output, in order: one, or several that
/// came in one UNITS frame, one after the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Units<'a> {
    bytes: &'a [u8],
    /// Each unit's length (u32 little-endian); `None`: one unit.
    lens: Option<&'a [u8]>,
}

impl<'a> Units<'a> {
    /// One unit.
    pub fn one(unit: &'a [u8]) -> Self {
        Units {
            bytes: unit,
            lens: None,
        }
    }

    /// Their bytes, one unit after the other.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// How many units.
    pub fn count(&self) -> usize {
        self.lens.map_or(1, |l| l.len() / 4)
    }

    /// Each unit, in order.
    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let lens: &'a [u8] = self.lens.unwrap_or(&[]);
        let one = self.lens.is_none().then_some(self.bytes);
        let mut rest = self.bytes;
        one.into_iter().chain((0..lens.len() / 4).map(move |i| {
            let (unit, after) = rest.split_at(unit_len(lens, i).min(rest.len()));
            rest = after;
            unit
        }))
    }
}

/// The length of unit `i` in a UNITS frame's LENS attribute (u32
/// little-endian each; `lens` holds at least `i + 1` of them).
fn unit_len(lens: &[u8], i: usize) -> usize {
    let l = &lens[i * 4..i * 4 + 4];
    u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize
}

/// What to do with a frame's outcome ([`Receiving::handle`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Action<'a> {
    /// Checked units: write them to the output (in this order, before any
    /// later one).
    pub deliver: Option<Units<'a>>,
    /// Make the output durable now, then call [`Receiving::durable`].
    pub ack: bool,
    /// The sender said goodbye: the transfer is complete.
    pub done: bool,
    /// A unit after those in `deliver` (of the same UNITS frame) was
    /// refused: write them, then end the transfer with the error
    /// [`Receiving::take_refusal`] gives. The receiver stands after the
    /// last unit handed out, as it would had the refused unit come in a
    /// frame of its own.
    pub refused: bool,
}

/// The receiving side of one transfer, across its connections.
pub struct Receiving {
    rx: Receiver,
    check: Box<dyn Check>,
    instance: [u8; 16],
    token: Option<(u64, Vec<u8>)>,
    window: Limits,
    /// Units and bytes handed out since the last ack.
    unacked: (usize, usize),
    last: Option<u64>,
    done: bool,
    connections: u64,
    stats: ReceiveStats,
    /// The unit of the last compressed frame (its capacity: the largest
    /// declared length so far, at most [`MAX_UNIT`]).
    unzipped: Vec<u8>,
    /// The error of a unit refused after others of its UNITS frame were
    /// handed out ([`Action::refused`]).
    refusal: Option<SessionError>,
    #[cfg(feature = "zstd")]
    unzip: Option<zstd::bulk::Decompressor<'static>>,
}

impl core::fmt::Debug for Receiving {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Receiving")
            .field("received", &self.rx.last_received())
            .field("last", &self.last)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl Receiving {
    /// A new transfer, each unit checked by `check`.
    pub fn new(check: Box<dyn Check>) -> Self {
        Receiving {
            rx: Receiver::new(0),
            check,
            instance: [0; 16],
            token: None,
            window: Limits {
                max_bytes: 1,
                max_messages: 1,
            },
            unacked: (0, 0),
            last: None,
            done: false,
            connections: 0,
            stats: ReceiveStats::default(),
            unzipped: Vec::new(),
            refusal: None,
            #[cfg(feature = "zstd")]
            unzip: None,
        }
    }

    /// A transfer resumed by a receiver that restarted: it has every unit
    /// up to `at.received` durably, and `check` has seen them all (the
    /// caller feeds it the units it kept). The first connection states
    /// `at` in its SELECT.
    pub fn restore(check: Box<dyn Check>, at: Position) -> Self {
        let mut r = Receiving::new(check);
        r.rx = Receiver::new(at.received);
        r.instance = at.instance;
        r.token = at.token.filter(|(seq, _)| *seq <= at.received);
        r.last = at.last.filter(|l| *l == at.received);
        r
    }

    /// Where the check of the units stands (kept with them, a restarted
    /// receiver resumes it without checking them again).
    pub fn check_state(&self) -> Option<ValidatorState> {
        self.check.state()
    }

    /// Where the receiver stands: what to keep durably with the units
    /// handed out so far, for [`Receiving::restore`].
    pub fn position(&self) -> Position {
        Position {
            received: self.rx.last_received(),
            instance: self.instance,
            token: self.token.clone(),
            last: self.last,
        }
    }

    /// A connection starts. On every one after the first, the caller must
    /// have made its output durable first: the seq stated in SELECT lets
    /// the sender drop what it covers.
    pub fn connect(&mut self) -> Result<(), SessionError> {
        if self.connections > 0 {
            self.rx.reconnected();
            self.rx.mark_durable(self.rx.last_received())?;
        }
        self.connections += 1;
        Ok(())
    }

    /// The SELECT frame for `contexts`: the last seq received, the sender
    /// instance it came from, the latest token.
    pub fn select(&self, contexts: Vec<u32>) -> Select<'_> {
        Select {
            contexts,
            received: self.rx.last_received(),
            instance: self.instance,
            token: self.token.as_ref().map(|(_, t)| &t[..]),
        }
    }

    /// The sender's ACCEPT.
    pub fn accepted(&mut self, a: &Accept) -> Result<(), SessionError> {
        let expected = self.rx.last_received() + 1;
        if a.next > expected {
            return Err(ReplayError::Gap {
                expected,
                got: a.next,
            }
            .into());
        }
        self.instance = a.instance;
        self.window = a.window;
        self.stats.bytes_resent += a.resend.bytes;
        if a.resumed == Resumed::Token as u8 || a.resumed == Resumed::Start as u8 {
            self.stats.resumed_by_token += 1;
        }
        Ok(())
    }

    /// The CRC variant to read DATA frames with ([`Framer::incoming`]).
    pub fn unit_crc(&self) -> Option<CrcVariant> {
        self.check.unit_crc()
    }

    /// One frame of the data phase. The unit handed out borrows the frame,
    /// or the receiver when the frame was compressed.
    pub fn handle<'a>(&'a mut self, inc: Incoming<'a>) -> Result<Action<'a>, SessionError> {
        let c = match inc {
            Incoming::Data(d) => return self.data(d.seq, d.payload, Some(&d)),
            Incoming::Frame(c) => c,
        };
        match c.cmd() {
            frame::DATA => {
                let seq = u64_attr(&c, attr::SEQ)?;
                let payload = c.require(attr::PAYLOAD)?.value();
                match c.attr(attr::ZSTD_LEN) {
                    None => self.data(seq, payload, None),
                    Some(len) => self.compressed(seq, len.as_u64()?, payload, c.offset()),
                }
            }
            frame::UNITS => self.units(&c),
            frame::TOKEN => {
                let seq = u64_attr(&c, attr::SEQ)?;
                if seq > self.rx.last_received() {
                    return Err(ReplayError::FromTheFuture {
                        peer: seq,
                        sent: self.rx.last_received(),
                    }
                    .into());
                }
                self.token = Some((seq, c.require(attr::TOKEN)?.value().to_vec()));
                Ok(Action::default())
            }
            frame::FINISH => {
                let last = u64_attr(&c, attr::SEQ)?;
                let received = self.rx.last_received();
                if last != received {
                    return Err(SessionError::Finish { last, received });
                }
                self.check
                    .finish()
                    .map_err(|source| SessionError::Unit { seq: last, source })?;
                self.last = Some(last);
                Ok(Action {
                    ack: true,
                    ..Action::default()
                })
            }
            frame::BYE if self.last.is_some() => {
                self.done = true;
                Ok(Action {
                    done: true,
                    ..Action::default()
                })
            }
            got => Err(SessionError::Unexpected {
                expected: "DATA, UNITS, TOKEN or FINISH",
                got,
                offset: c.offset(),
            }),
        }
    }

    /// One DATA frame: its unit checked and handed out or, a duplicate,
    /// discarded. `fast`: the frame when its own CRC was not checked, only
    /// found to hold exactly when its unit's does ([`Framer::incoming`]);
    /// it is checked before any error is returned, and for a duplicate,
    /// whose unit is not checked, so that every frame is checked and a
    /// damaged one is named as such.
    fn data<'a>(
        &mut self,
        seq: u64,
        payload: &'a [u8],
        fast: Option<&Data<'_>>,
    ) -> Result<Action<'a>, SessionError> {
        let verify = || fast.map_or(Ok(()), Data::verify);
        self.stats.bytes_received += payload.len() as u64;
        self.stats.payload_wire_bytes += payload.len() as u64;
        // Taken only once checked: a unit refused is not received.
        let accept = match self.rx.expects(seq) {
            Ok(a) => a,
            Err(e) => {
                verify()?;
                return Err(e.into());
            }
        };
        match accept {
            replay::Accept::Deliver => {
                if let Err(source) = self.check.unit(payload) {
                    verify()?;
                    return Err(SessionError::Unit { seq, source });
                }
                self.rx.accept(seq)?;
                let ack = self.delivered(1, payload.len());
                Ok(Action {
                    deliver: Some(Units::one(payload)),
                    ack,
                    ..Action::default()
                })
            }
            replay::Accept::Duplicate => {
                verify()?;
                self.stats.duplicates += 1;
                self.stats.bytes_resent += payload.len() as u64;
                Ok(Action::default())
            }
        }
    }

    /// One UNITS frame: its lengths checked against its payload first
    /// (nothing is taken from a frame they do not cut into units), the
    /// units the receiver has discarded, the others checked one by one and
    /// handed out together.
    fn units<'a>(&mut self, c: &Command<'a>) -> Result<Action<'a>, SessionError> {
        let seq = u64_attr(c, attr::SEQ)?;
        let lens = c.require(attr::LENS)?.value();
        let payload = c.require(attr::PAYLOAD)?.value();
        let bad = |problem| SessionError::Units {
            offset: Some(c.offset()),
            problem,
        };
        if lens.is_empty() || lens.len() % 4 != 0 {
            return Err(bad("its LENS attribute is not one or more u32 lengths"));
        }
        let len_at = |i: usize| unit_len(lens, i);
        let n = lens.len() / 4;
        let mut total = 0usize;
        for i in 0..n {
            let l = len_at(i);
            if l == 0 {
                return Err(bad("it holds an empty unit"));
            }
            total = total.saturating_add(l);
        }
        if total != payload.len() {
            return Err(bad("its unit lengths do not add up to its payload"));
        }
        if seq.checked_add(n as u64).is_none() {
            return Err(bad("its seqs run past the largest"));
        }
        self.stats.bytes_received += total as u64;
        self.stats.payload_wire_bytes += total as u64;
        // The first units may be ones the receiver has (a resend).
        let last = self.rx.last_received();
        let dup = if seq > last {
            0
        } else {
            usize::try_from(last - seq + 1).map_or(n, |d| d.min(n))
        };
        let dup_bytes: usize = (0..dup).map(len_at).sum();
        self.stats.duplicates += dup as u64;
        self.stats.bytes_resent += dup_bytes as u64;
        if dup == n {
            return Ok(Action::default());
        }
        // The first new one must be the next seq (else a gap); each is
        // checked before it is taken, so a refused one leaves the receiver
        // after the last one handed out.
        let first = seq + dup as u64;
        self.rx.expects(first)?;
        let (mut at, mut good, mut refusal) = (dup_bytes, dup, None);
        for i in dup..n {
            let unit = &payload[at..at + len_at(i)];
            if let Err(source) = self.check.unit(unit) {
                let e = SessionError::Unit {
                    seq: seq + i as u64,
                    source,
                };
                if i == dup {
                    // The first new unit: nothing to hand out.
                    return Err(e);
                }
                refusal = Some(e);
                break;
            }
            at += unit.len();
            good = i + 1;
        }
        self.rx.accept_run(first, (good - dup) as u64)?;
        let ack = self.delivered((good - dup) as u64, at - dup_bytes);
        let refused = refusal.is_some();
        self.refusal = refusal;
        Ok(Action {
            deliver: Some(Units {
                bytes: &payload[dup_bytes..at],
                lens: Some(&lens[dup * 4..good * 4]),
            }),
            ack,
            refused,
            ..Action::default()
        })
    }

    /// The error of the unit refused after the units an [`Action`] with
    /// [`Action::refused`] handed out; `None` when there is none.
    pub fn take_refusal(&mut self) -> Option<SessionError> {
        self.refusal.take()
    }

    /// `units` units of `len` bytes in all were checked and are handed out:
    /// whether to ack.
    fn delivered(&mut self, units: u64, len: usize) -> bool {
        self.stats.units += units;
        self.stats.bytes_delivered += len as u64;
        self.unacked.0 += units as usize;
        self.unacked.1 += len;
        self.unacked.0 * 4 >= self.window.max_messages
            || self.unacked.1 * 4 >= self.window.max_bytes
    }

    /// One compressed DATA frame (checked in full, CRC included): a unit of
    /// `len` bytes as one zstd frame. A duplicate is discarded undecompressed;
    /// a new unit is decompressed into the receiver's buffer (never more
    /// than `len` bytes, and `len` at most [`MAX_UNIT`]), checked, and its
    /// original bytes handed out.
    fn compressed<'a>(
        &'a mut self,
        seq: u64,
        len: u64,
        zstd: &[u8],
        offset: u64,
    ) -> Result<Action<'a>, SessionError> {
        let refused = |problem| SessionError::Compressed {
            seq,
            offset,
            problem,
        };
        self.stats.bytes_received += len;
        self.stats.payload_wire_bytes += zstd.len() as u64;
        self.stats.units_compressed += 1;
        if len > MAX_UNIT as u64 {
            return Err(refused(CompressedError::TooLong {
                len,
                max: MAX_UNIT as u64,
            }));
        }
        match self.rx.expects(seq)? {
            replay::Accept::Duplicate => {
                self.stats.duplicates += 1;
                self.stats.bytes_resent += len;
                Ok(Action::default())
            }
            replay::Accept::Deliver => {
                let n = len as usize;
                self.unzip(n, zstd).map_err(refused)?;
                if let Err(source) = self.check.unit(&self.unzipped[..n]) {
                    return Err(SessionError::Unit { seq, source });
                }
                self.rx.accept(seq)?;
                let ack = self.delivered(1, n);
                Ok(Action {
                    deliver: Some(Units::one(&self.unzipped[..n])),
                    ack,
                    ..Action::default()
                })
            }
        }
    }

    /// Decompresses `zstd` into `self.unzipped`, which must then hold
    /// exactly `len` bytes (`len` at most [`MAX_UNIT`]): the output is
    /// bounded by the buffer's capacity, grown exactly to `len` when short,
    /// so it never exceeds the largest length declared so far.
    #[cfg(feature = "zstd")]
    fn unzip(&mut self, len: usize, zstd: &[u8]) -> Result<(), CompressedError> {
        let invalid = |e: std::io::Error| CompressedError::Invalid {
            len: len as u64,
            message: e.to_string(),
        };
        if self.unzip.is_none() {
            self.unzip = Some(zstd::bulk::Decompressor::new().map_err(invalid)?);
        }
        let Some(d) = self.unzip.as_mut() else {
            return Err(CompressedError::Unsupported);
        };
        self.unzipped.clear();
        self.unzipped.reserve_exact(len);
        let got = d
            .decompress_to_buffer(zstd, &mut self.unzipped)
            .map_err(invalid)?;
        if got != len {
            return Err(CompressedError::Length {
                len: len as u64,
                got: got as u64,
            });
        }
        Ok(())
    }

    /// Built without zstd: a compressed frame is refused as such.
    #[cfg(not(feature = "zstd"))]
    fn unzip(&mut self, _: usize, _: &[u8]) -> Result<(), CompressedError> {
        Err(CompressedError::Unsupported)
    }

    /// Everything handed out is durable: queues the ACK that says so.
    pub fn durable(&mut self, f: &mut Framer) -> Result<(), SessionError> {
        self.rx.mark_durable(self.rx.last_received())?;
        self.unacked = (0, 0);
        if let Some(a) = self.rx.take_ack() {
            f.write_seq(frame::ACK, a)?;
        }
        Ok(())
    }

    /// Whether the transfer is complete (the sender said goodbye).
    pub fn done(&self) -> bool {
        self.done
    }

    /// Whether every unit is here and checked (the sender's goodbye may
    /// still be missing).
    pub fn finished(&self) -> bool {
        self.last.is_some()
    }

    /// The last seq received.
    pub fn received(&self) -> u64 {
        self.rx.last_received()
    }

    /// Connections so far.
    pub fn connections(&self) -> u64 {
        self.connections
    }

    /// What arrived so far.
    pub fn stats(&self) -> ReceiveStats {
        self.stats
    }
}
