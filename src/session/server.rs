//! The sending side of a session.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use proto_btrfs::Btrfs;
use proto_checkpoint::native::PRSTREAM;
use proto_checkpoint::{
    list_streams, Emitter, FileSource, Fill, Format, Producer, Source, Spans, Split, StreamSpan,
    Token,
};
use proto_header::{advertised, Context, Endian, V1Header, VersionRange};
use proto_session::framer::{expect, u64_attr};
use proto_session::handshake::{Accept, Handshake, Select};
use proto_session::replay::{Limits, ReplayError, Resend, Sender};
use proto_tlv::{AttrValue, CrcVariant, Value};

use super::conn::Conn;
use super::{
    attr, frame, BoxError, ResumeError, Resumed, SessionError, FEATURE_DEPS, FEATURE_REPLAY,
    KNOWN_FEATURES, MAX_UNIT, SESSION_VERSIONS,
};

/// How a [`Server`] behaves.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Session versions offered.
    pub versions: VersionRange,
    /// Features supported (advertised as far as their dependencies allow).
    pub features: u64,
    /// Features the receiver must support.
    pub required: u64,
    /// The window of unacknowledged units.
    pub window: Limits,
    /// A checkpoint token goes to the receiver after at least this many
    /// payload bytes (and after the last unit).
    pub token_every: u64,
    /// A safe point every this many units (see `StreamProducer`).
    pub safe_every: u64,
    /// Fault injection: after sending this many payload bytes, the sender
    /// drops the connection and forgets the transfer (its window, its
    /// position), as a restarted process would; the receiver must then
    /// resume from its checkpoint token. Once per server.
    pub kill_after: Option<u64>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            versions: SESSION_VERSIONS,
            features: KNOWN_FEATURES,
            required: FEATURE_REPLAY,
            window: Limits {
                max_bytes: 4 << 20,
                max_messages: 16 * 1024,
            },
            token_every: 1 << 20,
            safe_every: 1,
            kill_after: None,
        }
    }
}

/// What a [`Server`] did, over all its connections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Connections handed to [`Server::serve`].
    pub connections: u64,
    /// Connections refused (the peer was told why).
    pub refused: u64,
    /// Transfers resumed by seq exchange.
    pub resumed_by_seq: u64,
    /// Transfers resumed from a checkpoint token.
    pub resumed_by_token: u64,
    /// Units transmitted (resends included).
    pub units_sent: u64,
    /// Payload bytes transmitted (resends included).
    pub bytes_sent: u64,
    /// Units transmitted again after a reconnect.
    pub units_resent: u64,
    /// Their bytes.
    pub bytes_resent: u64,
    /// Units a re-armed sender regenerated and skipped because the receiver
    /// had them (sent by the instance before it).
    pub units_skipped: u64,
    /// Checkpoint tokens sent.
    pub tokens_sent: u64,
    /// Times the sender forgot its transfer (fault injection).
    pub restarts: u64,
}

/// A completed transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Served {
    /// Units in the stream sent (every one acknowledged).
    pub units: u64,
}

type BoxSource = Box<dyn Source + Send>;
type Opener = Box<dyn FnMut() -> io::Result<BoxSource> + Send>;

/// An emitter of any format, as the server drives it.
trait Units: Send {
    fn fill(&mut self, buf: &mut [u8]) -> Result<Fill, BoxError>;
    fn token(&self) -> Token;
    fn ended(&self) -> bool;
    fn set_units_per_fill(&mut self, n: u64);
}

impl<P, S> Units for Emitter<P, S>
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
}

/// Makes the emitter of the selected streams, from the start or re-armed
/// from a token, in the file's format.
type Arm =
    Box<dyn Fn(Spans<BoxSource>, Option<&Token>) -> Result<Box<dyn Units>, SessionError> + Send>;
type StreamEmitter = Box<dyn Units>;

/// What survives a reconnect: the emitter and the window.
struct Transfer {
    instance: [u8; 16],
    selection: Vec<u32>,
    emitter: StreamEmitter,
    replay: Sender,
    /// Tokens to send after the DATA of their seq.
    tokens: VecDeque<(u64, Vec<u8>)>,
    since_token: u64,
    /// The seq of the last unit, once the emitter has ended.
    last: Option<u64>,
}

/// The sending side: serves one btrfs send-stream file (one stream or
/// several concatenated, each a context) to one receiver, over as many
/// connections as it takes.
pub struct Server {
    config: ServerConfig,
    open: Opener,
    arm: Arm,
    streams: Vec<StreamSpan>,
    /// The largest unit of the file: the emitter's buffer.
    max_unit: usize,
    /// The CRC variant of the file's commands, when all its streams have
    /// the same (DATA frames take their CRC from their command's).
    unit_crc: Option<CrcVariant>,
    hello: V1Header,
    transfer: Option<Transfer>,
    killed: bool,
    stats: ServerStats,
}

impl Server {
    /// Serves the stream file at `path` (opened again whenever the sender
    /// re-arms), of any of the kit's formats: native `PRSTREAM` by its
    /// magic, else btrfs.
    pub fn open(path: &Path, config: ServerConfig) -> Result<Server, SessionError> {
        let path = path.to_owned();
        Server::detect(
            Box::new(move || {
                let f = File::open(&path)?;
                Ok(Box::new(FileSource::new(f)?) as BoxSource)
            }),
            config,
        )
    }

    /// Serves a stream held in memory, of any of the kit's formats.
    pub fn from_bytes(bytes: Vec<u8>, config: ServerConfig) -> Result<Server, SessionError> {
        let bytes: Arc<[u8]> = bytes.into();
        Server::detect(
            Box::new(move || Ok(Box::new(bytes.clone()) as BoxSource)),
            config,
        )
    }

    /// Serves a stream of `format` held in memory.
    pub fn with_format<F>(
        format: F,
        bytes: Vec<u8>,
        config: ServerConfig,
    ) -> Result<Server, SessionError>
    where
        F: Format + Send + 'static,
        F::Split: Send,
    {
        let bytes: Arc<[u8]> = bytes.into();
        Server::with_opener(
            format,
            Box::new(move || Ok(Box::new(bytes.clone()) as BoxSource)),
            config,
        )
    }

    fn detect(mut open: Opener, config: ServerConfig) -> Result<Server, SessionError> {
        let mut src = open().map_err(source_err)?;
        let n = src.len().min(PRSTREAM.fixed.magic.len() as u64) as usize;
        let head = src.read_at(0, n).map_err(source_err)?;
        if PRSTREAM.recognises(head) {
            Server::with_opener(PRSTREAM, open, config)
        } else {
            Server::with_opener(Btrfs, open, config)
        }
    }

    fn with_opener<F>(
        format: F,
        mut open: Opener,
        config: ServerConfig,
    ) -> Result<Server, SessionError>
    where
        F: Format + Send + 'static,
        F::Split: Send,
    {
        let mut src = open().map_err(source_err)?;
        let streams = list_streams(&format, &mut *src).map_err(source_err)?;
        // The emitter fills buffers of the file's largest unit, so it never
        // splits a command, and the window reserves what the file needs,
        // not 16 MiB more for every transfer.
        let max_unit = streams
            .iter()
            .map(|s| s.largest)
            .max()
            .unwrap_or(MAX_UNIT)
            .min(MAX_UNIT);
        let crcs = streams
            .iter()
            .map(|s| format.profile(s.version).map(|p| p.crc))
            .collect::<Result<Vec<_>, _>>()
            .map_err(source_err)?;
        let unit_crc = crcs
            .first()
            .copied()
            .filter(|c| crcs.iter().all(|x| x == c));
        let producer = format
            .producer(src, config.safe_every)
            .map_err(source_err)?;
        let safe_every = config.safe_every;
        let arm: Arm = Box::new(move |spans, token| {
            let p = format.producer(spans, safe_every).map_err(source_err)?;
            Ok(match token {
                Some(t) => Box::new(
                    Emitter::resume(p, format.split(), t)
                        .map_err(|e| ResumeError::TokenRefused(e.into()))?,
                ),
                None => Box::new(Emitter::new(p, format.split()).map_err(source_err)?),
            })
        });
        let contexts = streams
            .iter()
            .enumerate()
            .map(|(i, s)| Context {
                id: i as u32 + 1,
                name: s.name.clone(),
            })
            .collect();
        let hello = V1Header {
            byte_order: Endian::Little,
            features_supported: advertised(config.features, FEATURE_DEPS),
            features_required: config.required,
            stream_id: producer.stream_id(),
            contexts,
        };
        Ok(Server {
            config,
            open,
            arm,
            streams,
            max_unit,
            unit_crc,
            hello,
            transfer: None,
            killed: false,
            stats: ServerStats::default(),
        })
    }

    /// The contexts offered (one per stream in the file).
    pub fn contexts(&self) -> &[Context] {
        &self.hello.contexts
    }

    /// What the server did so far.
    pub fn stats(&self) -> ServerStats {
        self.stats
    }

    /// Forgets the transfer (the window and the position), as a restarted
    /// sender would: the receiver must resume from its checkpoint token.
    pub fn forget(&mut self) {
        self.transfer = None;
    }

    /// Runs one connection: the handshake, then the transfer until it is
    /// complete ([`Served`]) or the connection fails (connect again and call
    /// this again: the transfer resumes). A refusal is told to the peer
    /// before the error is returned.
    pub fn serve<S: Read + Write>(&mut self, io: S) -> Result<Served, SessionError> {
        self.stats.connections += 1;
        let mut conn = Conn::new(io);
        let r = self
            .handshake(&mut conn)
            .and_then(|()| self.transmit(&mut conn));
        r.map_err(|e| {
            let e = conn.refuse(e);
            if !e.retryable() {
                self.stats.refused += 1;
            }
            e
        })
    }

    fn handshake<S: Read + Write>(&mut self, conn: &mut Conn<S>) -> Result<(), SessionError> {
        let shared = Handshake::new(
            self.config.versions,
            self.config.required,
            self.hello.clone(),
        );
        conn.handshake(shared)?;

        let c = conn.read_frame("in the handshake (SELECT)")?;
        let select = Select::read(&c, &self.hello.context_ids())?;
        let token = select.token.map(<[u8]>::to_vec);
        let (selection, received, instance) = (select.contexts, select.received, select.instance);

        let (how, resend) = self.resume(selection, received, instance, token)?;
        let Some(t) = &self.transfer else {
            return Err(ResumeError::NoTransfer.into());
        };
        Accept {
            instance: t.instance,
            resumed: how as u8,
            next: t.replay.acked() + 1,
            window: t.replay.limits(),
            resend,
        }
        .write(conn.framer())?;
        conn.handshake_done();
        Ok(())
    }

    /// Where the transfer resumes for a receiver that has every seq up to
    /// `received`, last from sender `instance`.
    fn resume(
        &mut self,
        selection: Vec<u32>,
        received: u64,
        instance: [u8; 16],
        token: Option<Vec<u8>>,
    ) -> Result<(Resumed, Resend), SessionError> {
        if let Some(t) = self.transfer.as_mut().filter(|t| t.instance == instance) {
            if t.selection != selection {
                return Err(ResumeError::SelectionChanged {
                    was: t.selection.clone(),
                    asked: selection,
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
                Err(ReplayError::PeerRegressed { .. }) if token.is_some() => {}
                Err(e) => return Err(e.into()),
            }
        }
        let spans = self.spans(&selection)?;
        let (emitter, how) = match token {
            Some(bytes) => {
                let token = Token::from_bytes(&bytes)?;
                if token.seq > received {
                    return Err(ResumeError::TokenAhead {
                        token: token.seq,
                        received,
                    }
                    .into());
                }
                ((self.arm)(spans, Some(&token))?, Resumed::Token)
            }
            // A receiver that has units but no token (the sender lost its
            // window before the first token went out) is served from the
            // start: the units it has are regenerated and skipped.
            None => {
                let e = (self.arm)(spans, None)?;
                let how = if received == 0 {
                    Resumed::Fresh
                } else {
                    Resumed::Start
                };
                (e, how)
            }
        };
        let mut emitter = emitter;
        emitter.set_units_per_fill(1);
        let mut at = emitter.token().seq;
        // A token from after the last unit: the receiver has everything
        // (only the goodbye was lost), and there is nothing left to emit.
        let mut last = emitter.ended().then_some(at);
        if at < received {
            // The receiver has units past the token (sent by the instance
            // before this one): regenerate them without sending.
            let mut scratch = vec![0u8; self.max_unit];
            while at < received {
                let fill = emitter.fill(&mut scratch).map_err(source_err)?;
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
        self.transfer = Some(Transfer {
            instance: new_instance(),
            selection,
            emitter,
            replay: Sender::new(self.config.window, received),
            tokens: VecDeque::new(),
            since_token: 0,
            last,
        });
        Ok((how, Resend::default()))
    }

    fn spans(&mut self, selection: &[u32]) -> Result<Spans<BoxSource>, SessionError> {
        let src = (self.open)().map_err(source_err)?;
        let ranges: Vec<(u64, u64)> = selection
            .iter()
            .filter_map(|id| self.streams.get((*id as usize).checked_sub(1)?))
            .map(|s| (s.offset, s.len))
            .collect();
        Spans::new(src, &ranges).map_err(source_err)
    }

    /// The data phase: units out, acks in, until the last unit is
    /// acknowledged.
    fn transmit<S: Read + Write>(&mut self, conn: &mut Conn<S>) -> Result<Served, SessionError> {
        let mut finish_sent = false;
        loop {
            let Some(t) = self.transfer.as_mut() else {
                return Err(ResumeError::NoTransfer.into());
            };
            loop {
                let high = t.replay.sent();
                let Some((seq, bytes)) = t.replay.next_to_send() else {
                    break;
                };
                // Counted when attempted: a unit cut off by a failure is
                // sent again in full.
                self.stats.units_sent += 1;
                self.stats.bytes_sent += bytes.len() as u64;
                if seq <= high {
                    self.stats.units_resent += 1;
                    self.stats.bytes_resent += bytes.len() as u64;
                }
                conn.write_data(seq, bytes, self.unit_crc)?;
                while let Some((ts, _)) = t.tokens.front() {
                    if *ts > seq {
                        break;
                    }
                    if let Some((ts, tb)) = t.tokens.pop_front() {
                        conn.write_frame(
                            frame::TOKEN,
                            &[
                                AttrValue::new(attr::SEQ, Value::U64(ts)),
                                AttrValue::new(attr::TOKEN, Value::Bytes(&tb)),
                            ],
                        )?;
                        self.stats.tokens_sent += 1;
                    }
                }
                if let Some(k) = self.config.kill_after {
                    if !self.killed && self.stats.bytes_sent >= k {
                        self.killed = true;
                        self.stats.restarts += 1;
                        self.transfer = None;
                        return Err(io::Error::new(
                            io::ErrorKind::ConnectionAborted,
                            format!(
                                "fault injection: the sender was killed after {} payload bytes and lost its window",
                                self.stats.bytes_sent
                            ),
                        )
                        .into());
                    }
                }
            }
            if t.last.is_none() && t.replay.has_room() {
                let mut filled = None;
                let pushed = t.replay.push_with(self.max_unit, |buf| {
                    let f = t.emitter.fill(buf)?;
                    let n = f.written;
                    filled = Some(f);
                    Ok(n)
                })?;
                let seq = pushed.map_err(SessionError::Source)?;
                let Some(fill) = filled else { continue };
                t.since_token += fill.written as u64;
                if fill.ended {
                    t.last = Some(seq);
                }
                if fill.ended || t.since_token >= self.config.token_every {
                    t.since_token = 0;
                    t.tokens.push_back((seq, fill.token.to_bytes()?));
                }
                continue;
            }
            if let Some(last) = t.last {
                if !finish_sent && t.replay.sent() >= last {
                    conn.write_seq(frame::FINISH, last)?;
                    finish_sent = true;
                }
                if t.replay.acked() >= last {
                    conn.write_frame(frame::BYE, &[])?;
                    conn.flush()?;
                    self.transfer = None;
                    // Let the receiver close first (its last ack may
                    // still be on the way); bounded by the connection's
                    // own timeouts.
                    while conn.read_frame("after BYE").is_ok() {}
                    return Ok(Served { units: last });
                }
            }
            conn.flush()?;
            let c = conn.read_frame("waiting for an ACK")?;
            expect(&c, frame::ACK)?;
            let seq = u64_attr(&c, attr::SEQ)?;
            t.replay.ack(seq)?;
        }
    }
}

/// The source stream failed (its own error kept).
fn source_err(e: impl Into<BoxError>) -> SessionError {
    SessionError::Source(e.into())
}

/// A new sender instance id: time, process id and a counter, mixed.
fn new_instance() -> [u8; 16] {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&t.to_le_bytes());
    id[8..12].copy_from_slice(&std::process::id().to_le_bytes());
    id[12..].copy_from_slice(&(n as u32).to_le_bytes());
    let mix = crc32c::crc32c(&id);
    id[12..].copy_from_slice(&(mix ^ n as u32).to_le_bytes());
    id
}
