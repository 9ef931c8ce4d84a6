//! The receiving side of a session.

use std::io::{Read, Write};

use proto_btrfs::Btrfs;
use proto_checkpoint::native::{NativeFormat, PRSTREAM};
use proto_checkpoint::{Format, Validator};
use proto_header::{advertised, Context, Endian, V1Header, VersionRange};
use proto_session::framer::{u64_attr, Data, Incoming};
use proto_session::handshake::{Accept as AcceptFrame, Handshake, Select};
use proto_session::replay::{Accept, Limits, Receiver, ReplayError};
use proto_tlv::CrcVariant;

use super::conn::Conn;
use super::{
    attr, frame, BoxError, Resumed, SessionError, FEATURE_DEPS, FEATURE_REPLAY, KNOWN_FEATURES,
    SESSION_VERSIONS,
};

/// How a [`Fetcher`] behaves.
#[derive(Clone, Debug)]
pub struct FetchConfig {
    /// Session versions offered.
    pub versions: VersionRange,
    /// Features supported.
    pub features: u64,
    /// Features the sender must support.
    pub required: u64,
    /// The contexts wanted, by name or by id; empty: all of them.
    pub contexts: Vec<String>,
}

impl Default for FetchConfig {
    fn default() -> Self {
        FetchConfig {
            versions: SESSION_VERSIONS,
            features: KNOWN_FEATURES,
            required: FEATURE_REPLAY,
            contexts: Vec::new(),
        }
    }
}

/// What a [`Fetcher`] did, over all its connections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FetchStats {
    /// Connections handed to [`Fetcher::fetch`].
    pub connections: u64,
    /// Connections after the first.
    pub reconnects: u64,
    /// Reconnects where the sender had lost its window and re-armed from
    /// this receiver's checkpoint token (or from the start, when none had
    /// come yet), skipping what the receiver had.
    pub resumed_by_token: u64,
    /// Units delivered to the output.
    pub units: u64,
    /// Bytes written to the output.
    pub bytes_written: u64,
    /// Payload bytes of every DATA frame that arrived (duplicates included).
    pub bytes_received: u64,
    /// Payload bytes the sender announced it would send again after a
    /// reconnect, plus duplicates that arrived.
    pub bytes_resent: u64,
    /// Units that arrived twice (discarded).
    pub duplicates: u64,
    /// Bytes read from all connections (frames and headers).
    pub wire_bytes: u64,
}

/// The receiving side: fetches a stream into `out` over as many
/// connections as it takes, checking every unit (stream header or command,
/// CRC included) before it is written, so that the output only ever holds
/// a prefix of a valid stream.
pub struct Fetcher<W: Write> {
    config: FetchConfig,
    out: W,
    rx: Receiver,
    validator: Box<dyn UnitCheck>,
    instance: [u8; 16],
    offered: Vec<Context>,
    selection: Option<Vec<u32>>,
    token: Option<(u64, Vec<u8>)>,
    window: Limits,
    unacked: (usize, usize),
    last: Option<u64>,
    done: bool,
    stats: FetchStats,
}

impl<W: Write> Fetcher<W> {
    /// A fetcher writing into `out` (a new transfer) that takes a stream
    /// of any of the kit's formats (btrfs or native `PRSTREAM`), told apart
    /// by the magic of the first unit.
    pub fn new(out: W, config: FetchConfig) -> Self {
        Self::with_check(Box::new(Detect(None)), out, config)
    }

    /// A fetcher that takes streams of `format` only.
    pub fn with_format<F: Format + 'static>(format: F, out: W, config: FetchConfig) -> Self {
        Self::with_check(Box::new(format.validator()), out, config)
    }

    fn with_check(validator: Box<dyn UnitCheck>, out: W, config: FetchConfig) -> Self {
        Fetcher {
            config,
            out,
            rx: Receiver::new(0),
            validator,
            instance: [0; 16],
            offered: Vec::new(),
            selection: None,
            token: None,
            window: Limits {
                max_bytes: 1,
                max_messages: 1,
            },
            unacked: (0, 0),
            last: None,
            done: false,
            stats: FetchStats::default(),
        }
    }

    /// Whether the transfer is complete (the sender said goodbye).
    pub fn done(&self) -> bool {
        self.done
    }

    /// Whether every unit is here and durable (the sender's goodbye may
    /// still be missing).
    pub fn finished(&self) -> bool {
        self.last.is_some()
    }

    /// What the fetcher did so far.
    pub fn stats(&self) -> FetchStats {
        self.stats
    }

    /// The contexts the sender offered (after a handshake).
    pub fn offered(&self) -> &[Context] {
        &self.offered
    }

    /// The context ids selected (after a handshake).
    pub fn selection(&self) -> Option<&[u32]> {
        self.selection.as_deref()
    }

    /// The last seq received.
    pub fn received(&self) -> u64 {
        self.rx.last_received()
    }

    /// The output.
    pub fn into_inner(self) -> W {
        self.out
    }

    /// Runs one connection: the handshake (resuming where the last
    /// connection stopped), then the transfer until the sender's goodbye
    /// (`Ok`) or a failure. After a [retryable](SessionError::retryable)
    /// failure, connect again and call this again. A refusal is told to the
    /// peer before the error is returned.
    pub fn fetch<S: Read + Write>(&mut self, io: S) -> Result<(), SessionError> {
        if self.stats.connections > 0 {
            self.stats.reconnects += 1;
            self.rx.reconnected();
            // The seq stated in the handshake lets the sender drop what it
            // covers: make it durable first.
            self.out.flush().map_err(SessionError::Output)?;
            self.rx.mark_durable(self.rx.last_received())?;
        }
        self.stats.connections += 1;
        let mut conn = Conn::new(io);
        let r = self
            .handshake(&mut conn)
            .and_then(|()| self.receive(&mut conn));
        self.stats.wire_bytes += conn.in_bytes();
        r.map_err(|e| conn.refuse(e))
    }

    fn handshake<S: Read + Write>(&mut self, conn: &mut Conn<S>) -> Result<(), SessionError> {
        let hello = V1Header {
            byte_order: Endian::Little,
            features_supported: advertised(self.config.features, FEATURE_DEPS),
            features_required: self.config.required,
            stream_id: [0; 16],
            contexts: Vec::new(),
        };
        let shared = Handshake::new(self.config.versions, self.config.required, hello);
        self.offered = conn.handshake(shared)?.peer.contexts;

        let ids = match &self.selection {
            Some(ids) => ids.clone(),
            None => self.resolve()?,
        };
        Select {
            contexts: ids.clone(),
            received: self.rx.last_received(),
            instance: self.instance,
            token: self.token.as_ref().map(|(_, t)| &t[..]),
        }
        .write(conn.framer())?;
        conn.flush()?;

        let c = conn.read_frame("in the handshake (ACCEPT)")?;
        let accept = AcceptFrame::read(&c)?;
        let expected = self.rx.last_received() + 1;
        if accept.next > expected {
            return Err(ReplayError::Gap {
                expected,
                got: accept.next,
            }
            .into());
        }
        self.instance = accept.instance;
        self.window = accept.window;
        self.stats.bytes_resent += accept.resend.bytes;
        if accept.resumed == Resumed::Token as u8 || accept.resumed == Resumed::Start as u8 {
            self.stats.resumed_by_token += 1;
        }
        self.selection = Some(ids);
        conn.handshake_done();
        Ok(())
    }

    /// The ids of the contexts asked for (all when none were named).
    fn resolve(&self) -> Result<Vec<u32>, SessionError> {
        if self.config.contexts.is_empty() {
            return Ok(self.offered.iter().map(|c| c.id).collect());
        }
        self.config
            .contexts
            .iter()
            .map(|name| {
                if let Some(c) = self.offered.iter().find(|c| &c.name == name) {
                    return Ok(c.id);
                }
                name.parse::<u32>()
                    .map_err(|_| SessionError::UnknownContext {
                        name: name.clone(),
                        offered: self
                            .offered
                            .iter()
                            .map(|c| format!("{} ({})", c.name, c.id))
                            .collect::<Vec<_>>()
                            .join(", "),
                    })
            })
            .collect()
    }

    fn receive<S: Read + Write>(&mut self, conn: &mut Conn<S>) -> Result<(), SessionError> {
        loop {
            let unit_crc = self.validator.unit_crc();
            let c = match conn.read_incoming("in the transfer", unit_crc)? {
                Incoming::Data(d) => {
                    if self.data(d.seq, d.payload, Some(&d))? {
                        self.ack(conn)?;
                    }
                    continue;
                }
                Incoming::Frame(c) => c,
            };
            match c.cmd() {
                frame::DATA => {
                    let seq = u64_attr(&c, attr::SEQ)?;
                    let payload = c.require(attr::PAYLOAD)?.value();
                    if self.data(seq, payload, None)? {
                        self.ack(conn)?;
                    }
                }
                frame::TOKEN => {
                    let seq = u64_attr(&c, attr::SEQ)?;
                    if seq > self.rx.last_received() {
                        return Err(ReplayError::FromTheFuture {
                            peer: seq,
                            sent: self.rx.last_received(),
                        }
                        .into());
                    }
                    let t = c.require(attr::TOKEN)?.value().to_vec();
                    self.token = Some((seq, t));
                }
                frame::FINISH => {
                    let last = u64_attr(&c, attr::SEQ)?;
                    let received = self.rx.last_received();
                    if last != received {
                        return Err(SessionError::Finish { last, received });
                    }
                    self.validator
                        .finish()
                        .map_err(|source| SessionError::Unit { seq: last, source })?;

                    self.last = Some(last);
                    self.ack(conn)?;
                }
                frame::BYE if self.last.is_some() => {
                    self.done = true;
                    return Ok(());
                }
                got => {
                    return Err(SessionError::Unexpected {
                        expected: "DATA, TOKEN or FINISH",
                        got,
                        offset: c.offset(),
                    })
                }
            }
        }
    }

    /// One DATA frame: its unit delivered (checked and written) or, a
    /// duplicate, discarded. `fast`: the frame when its own CRC was not
    /// checked, only found to hold exactly when its unit's does
    /// ([`Conn::read_incoming`]); it is checked before any error is
    /// returned, and for a duplicate, whose unit is not checked, so that
    /// every frame is checked and a damaged one is named as before. Returns
    /// whether to acknowledge now.
    fn data(
        &mut self,
        seq: u64,
        payload: &[u8],
        fast: Option<&Data<'_>>,
    ) -> Result<bool, SessionError> {
        let verify = || fast.map_or(Ok(()), Data::verify);
        self.stats.bytes_received += payload.len() as u64;
        let accept = match self.rx.accept(seq) {
            Ok(a) => a,
            Err(e) => {
                verify()?;
                return Err(e.into());
            }
        };
        match accept {
            Accept::Deliver => {
                if let Err(e) = self.deliver(seq, payload) {
                    verify()?;
                    return Err(e);
                }
                Ok(self.unacked.0 * 4 >= self.window.max_messages
                    || self.unacked.1 * 4 >= self.window.max_bytes)
            }
            Accept::Duplicate => {
                verify()?;
                self.stats.duplicates += 1;
                self.stats.bytes_resent += payload.len() as u64;
                Ok(false)
            }
        }
    }

    /// Checks one unit and writes it.
    fn deliver(&mut self, seq: u64, payload: &[u8]) -> Result<(), SessionError> {
        self.validator
            .unit(payload)
            .map_err(|source| SessionError::Unit { seq, source })?;
        self.out.write_all(payload).map_err(SessionError::Output)?;
        self.stats.units += 1;
        self.stats.bytes_written += payload.len() as u64;
        self.unacked.0 += 1;
        self.unacked.1 += payload.len();
        Ok(())
    }

    /// Makes what was received durable (flushes the output) and
    /// acknowledges it.
    fn ack<S: Read + Write>(&mut self, conn: &mut Conn<S>) -> Result<(), SessionError> {
        self.out.flush().map_err(SessionError::Output)?;
        self.rx.mark_durable(self.rx.last_received())?;
        self.unacked = (0, 0);
        if let Some(a) = self.rx.take_ack() {
            conn.write_seq(frame::ACK, a)?;
            conn.flush()?;
        }
        Ok(())
    }
}

/// A receiver's check of units, whatever their format.
trait UnitCheck {
    /// Checks that `unit` is exactly the next unit of a valid stream.
    fn unit(&mut self, unit: &[u8]) -> Result<(), BoxError>;
    /// Checks that the stream may end here.
    fn finish(&self) -> Result<(), BoxError>;
    /// The CRC variant of the commands of the stream being received, once
    /// its header is in.
    fn unit_crc(&self) -> Option<CrcVariant>;
}

impl<F: Format> UnitCheck for Validator<F> {
    fn unit(&mut self, unit: &[u8]) -> Result<(), BoxError> {
        Validator::unit(self, unit).map_err(Into::into)
    }
    fn finish(&self) -> Result<(), BoxError> {
        Validator::finish(self).map_err(Into::into)
    }
    fn unit_crc(&self) -> Option<CrcVariant> {
        self.profile().map(|p| p.crc)
    }
}

/// The validator of the format the first unit (a stream header) names:
/// the kit's native `PRSTREAM` by its magic, else btrfs (whose errors say
/// what was found).
struct Detect(Option<Box<dyn UnitCheck>>);

impl UnitCheck for Detect {
    fn unit(&mut self, unit: &[u8]) -> Result<(), BoxError> {
        let v = self.0.get_or_insert_with(|| {
            if PRSTREAM.recognises(unit) {
                Box::new(<NativeFormat as Format>::validator(&PRSTREAM))
            } else {
                Box::new(Btrfs.validator())
            }
        });
        v.unit(unit)
    }
    fn finish(&self) -> Result<(), BoxError> {
        match &self.0 {
            Some(v) => v.finish(),
            None => Btrfs.validator().finish().map_err(Into::into),
        }
    }
    fn unit_crc(&self) -> Option<CrcVariant> {
        self.0.as_ref().and_then(|v| v.unit_crc())
    }
}
