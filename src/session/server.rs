//! The sending side of a session.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use proto_btrfs::Btrfs;
use proto_checkpoint::native::PRSTREAM;
use proto_checkpoint::{
    list_streams, Emitter, FileSource, Format, Producer, Source, Spans, StreamSpan, Token,
};
use proto_header::{advertised, Context, Endian, V1Header, VersionRange};
use proto_session::handshake::{Handshake, Select};
use proto_session::replay::Limits;
use proto_session::send::{Emission, SendConfig, Sending, Step};

use super::conn::Conn;
use super::{
    BoxError, ResumeError, SessionError, FEATURE_DEPS, FEATURE_REPLAY, KNOWN_FEATURES, MAX_UNIT,
    SESSION_VERSIONS,
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
    #[cfg(feature = "fault-injection")]
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
            #[cfg(feature = "fault-injection")]
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

/// Makes the emitter of the selected streams, from the start or re-armed
/// from a token, in the file's format.
type Arm =
    Box<dyn Fn(Spans<BoxSource>, Option<&Token>) -> Result<Box<dyn Emission>, SessionError> + Send>;

/// The sending side: serves one btrfs send-stream file (one stream or
/// several concatenated, each a context) to one receiver, over as many
/// connections as it takes.
pub struct Server {
    config: ServerConfig,
    open: Opener,
    arm: Arm,
    streams: Vec<StreamSpan>,
    hello: V1Header,
    sending: Sending,
    #[cfg(feature = "fault-injection")]
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
        let contexts = proto_checkpoint::contexts(&streams);
        let hello = V1Header {
            byte_order: Endian::Little,
            features_supported: advertised(config.features, FEATURE_DEPS),
            features_required: config.required,
            stream_id: producer.stream_id(),
            contexts,
        };
        Ok(Server {
            open,
            arm,
            streams,
            hello,
            // The emitter fills buffers of the file's largest unit; large
            // DATA frames take their CRC from their command's when all
            // streams checksum their commands alike.
            sending: Sending::new(
                config.window,
                SendConfig {
                    token_every: config.token_every,
                    max_unit,
                    unit_crc,
                },
            ),
            config,
            #[cfg(feature = "fault-injection")]
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
        let s = self.sending.stats();
        ServerStats {
            units_sent: s.units_sent,
            bytes_sent: s.bytes_sent,
            units_resent: s.units_resent,
            bytes_resent: s.bytes_resent,
            tokens_sent: s.tokens_sent,
            resumed_by_seq: s.resumed_by_seq,
            resumed_by_token: s.resumed_by_token,
            units_skipped: s.units_skipped,
            ..self.stats
        }
    }

    /// Forgets the transfer (the window and the position), as a restarted
    /// sender would: the receiver must resume from its checkpoint token.
    pub fn forget(&mut self) {
        self.sending.forget();
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
        let (open, streams, arm) = (&mut self.open, &self.streams, &self.arm);
        let mut arm =
            |selection: &[u32], token: Option<&Token>| arm(spans(open, streams, selection)?, token);
        let accept = self.sending.resume(&select, new_instance(), &mut arm)?;
        accept.write(conn.framer())?;
        conn.handshake_done();
        Ok(())
    }

    /// The data phase: units out, acks in, until the last unit is
    /// acknowledged.
    fn transmit<S: Read + Write>(&mut self, conn: &mut Conn<S>) -> Result<Served, SessionError> {
        loop {
            match self.sending.poll(conn.framer())? {
                Step::Data { body, .. } => {
                    match body {
                        Some(b) => conn.write_body(b)?,
                        None => conn.gathered()?,
                    }
                    #[cfg(feature = "fault-injection")]
                    self.kill_if_due()?;
                }
                Step::Wait => {
                    conn.flush()?;
                    let c = conn.read_frame("waiting for an ACK")?;
                    self.sending.handle(&c)?;
                }
                Step::Done { units } => {
                    conn.flush()?;
                    self.sending.forget();
                    // Let the receiver close first (its last ack may
                    // still be on the way); bounded by the connection's
                    // own timeouts.
                    while conn.read_frame("after BYE").is_ok() {}
                    return Ok(Served { units });
                }
            }
        }
    }

    /// Fault injection: past `kill_after` payload bytes, once, the sender
    /// forgets its transfer and drops the connection, as a killed process.
    #[cfg(feature = "fault-injection")]
    fn kill_if_due(&mut self) -> Result<(), SessionError> {
        let sent = self.sending.stats().bytes_sent;
        match self.config.kill_after {
            Some(k) if !self.killed && sent >= k => {
                self.killed = true;
                self.stats.restarts += 1;
                self.sending.forget();
                Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    format!(
                        "fault injection: the sender was killed after {sent} payload bytes and lost its window"
                    ),
                )
                .into())
            }
            _ => Ok(()),
        }
    }
}

/// The selected streams of the file, opened again.
fn spans(
    open: &mut Opener,
    streams: &[StreamSpan],
    selection: &[u32],
) -> Result<Spans<BoxSource>, SessionError> {
    let src = open().map_err(source_err)?;
    let ranges: Vec<(u64, u64)> = selection
        .iter()
        .filter_map(|id| streams.get((*id as usize).checked_sub(1)?))
        .map(|s| (s.offset, s.len))
        .collect();
    Spans::new(src, &ranges).map_err(source_err)
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
