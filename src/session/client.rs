//! The receiving side of a session.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use proto_checkpoint::ValidatorState;
use proto_header::{advertised, Context, Endian, V1Header, VersionRange};
use proto_session::handshake::{resolve_contexts, Accept, Handshake};
use proto_session::offer::{Detect, SessionFormat};
use proto_session::receive::{Check, Position, ReceiveStats, Receiving, Units};
use proto_session::retry::{Retry, RetryPolicy, Verdict};

use super::conn::Conn;
use super::io::{run_blocking, Blocking, Io};
use super::{
    ResumeError, SessionError, FEATURE_DEPS, FEATURE_REPLAY, KIT_FORMATS, KNOWN_FEATURES,
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
    /// Bytes read from all connections (frames and headers).
    pub wire_bytes: u64,
    /// What arrived: units and bytes delivered, received and resent,
    /// duplicates, resumes from a token.
    pub receive: ReceiveStats,
}

/// Where a fetcher writes the units it checked, and how it makes them
/// durable before it acknowledges them. Every `Write` is one (`commit`
/// flushes it); [`DurableFile`](super::DurableFile) also keeps, with each
/// commit, where the receiver stands, so that a restarted receiver resumes.
pub trait Output {
    /// Appends one checked unit.
    fn write_unit(&mut self, unit: &[u8]) -> io::Result<()>;
    /// Appends checked units, in order (several came in one UNITS frame):
    /// by default [`Output::write_unit`] for each; an output that takes
    /// bytes whatever their units writes them at once.
    fn write_units(&mut self, units: Units<'_>) -> io::Result<()> {
        units.iter().try_for_each(|u| self.write_unit(u))
    }
    /// Makes every unit written so far durable; `kept` is where the
    /// receiver then stands (to keep with them when the output outlives
    /// the process).
    fn commit(&mut self, kept: &Kept) -> io::Result<()>;
}

impl<W: Write> Output for W {
    fn write_unit(&mut self, unit: &[u8]) -> io::Result<()> {
        self.write_all(unit)
    }
    fn write_units(&mut self, units: Units<'_>) -> io::Result<()> {
        self.write_all(units.bytes())
    }
    fn commit(&mut self, _: &Kept) -> io::Result<()> {
        self.flush()
    }
}

/// What a receiver keeps durably beside its output, to resume after a
/// restart ([`Fetcher::restore`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Kept {
    /// Where the session stood: last seq, sender instance, latest token.
    pub position: Position,
    /// The stream the units belong to (the sender's stream id).
    pub stream_id: [u8; 16],
    /// The contexts selected.
    pub selection: Vec<u32>,
    /// Bytes of the output (whole units, every one up to
    /// `position.received`).
    pub len: u64,
    /// Where the check of those bytes stands (its offset is `len`): a
    /// restarted receiver resumes it instead of checking them again.
    pub check: Option<ValidatorState>,
}

/// The receiving side: fetches a stream into `out` over as many
/// connections as it takes, checking every unit (stream header or command,
/// CRC included) before it is written, so that the output only ever holds
/// a prefix of a valid stream.
pub struct Fetcher<W: Output> {
    config: FetchConfig,
    out: W,
    /// The stream the units belong to (the sender's HELLO names it): set
    /// by the first handshake, or by what a restarted receiver kept; a
    /// sender that offers another is refused.
    stream_id: Option<[u8; 16]>,
    /// Output bytes kept from before this fetcher (a restarted receiver's).
    kept_len: u64,
    session: Receiving,
    offered: Vec<Context>,
    selection: Option<Vec<u32>>,
    /// Bytes read from all connections.
    wire_bytes: u64,
}

impl<W: Output> Fetcher<W> {
    /// A fetcher writing into `out` (a new transfer) that takes a stream
    /// of any of the kit's formats (btrfs or native `PRSTREAM`), told apart
    /// by the magic of the first unit.
    pub fn new(out: W, config: FetchConfig) -> Self {
        Self::with_check(Box::new(Detect::new(&KIT_FORMATS)), out, config)
    }

    /// A fetcher that takes streams of `format` only.
    pub fn with_format<F: SessionFormat>(format: F, out: W, config: FetchConfig) -> Self {
        Self::with_check(format.check(), out, config)
    }

    /// A fetcher that checks units with `check` (a format's, or a
    /// [`Detect`] over several).
    pub fn with_check(check: Box<dyn Check>, out: W, config: FetchConfig) -> Self {
        Fetcher {
            config,
            out,
            stream_id: None,
            kept_len: 0,
            session: Receiving::new(check),
            offered: Vec::new(),
            selection: None,
            wire_bytes: 0,
        }
    }

    /// A fetcher that continues a transfer a receiver kept durably (see
    /// [`DurableFile`](super::DurableFile)): `out` holds its first
    /// `kept.len` bytes, and `check` has seen them
    /// ([`SessionFormat::revalidate`]). Its first connection states where
    /// it stood; a sender that offers another stream is refused
    /// ([`ResumeError::OtherStream`](super::ResumeError::OtherStream)).
    pub fn restore(check: Box<dyn Check>, out: W, config: FetchConfig, kept: Kept) -> Self {
        Fetcher {
            config,
            out,
            stream_id: Some(kept.stream_id),
            kept_len: kept.len,
            session: Receiving::restore(check, kept.position),
            offered: Vec::new(),
            selection: Some(kept.selection),
            wire_bytes: 0,
        }
    }

    /// What to keep durably with the output as it stands: where the
    /// receiver is, the stream, the selection, the output's length.
    pub fn kept(&self) -> Kept {
        Kept {
            position: self.session.position(),
            stream_id: self.stream_id.unwrap_or_default(),
            selection: self.selection.clone().unwrap_or_default(),
            len: self.kept_len + self.session.stats().bytes_delivered,
            check: self.session.check_state(),
        }
    }

    /// Bytes of the output kept from before this fetcher (where a
    /// restarted receiver resumed).
    pub fn resumed_from(&self) -> u64 {
        self.kept_len
    }

    /// The output, to look at.
    pub fn output(&self) -> &W {
        &self.out
    }

    fn commit(&mut self) -> Result<(), SessionError> {
        let kept = self.kept();
        self.out.commit(&kept).map_err(SessionError::Output)
    }

    /// Whether the transfer is complete (the sender said goodbye).
    pub fn done(&self) -> bool {
        self.session.done()
    }

    /// Whether every unit is here and durable (the sender's goodbye may
    /// still be missing).
    pub fn finished(&self) -> bool {
        self.session.finished()
    }

    /// What the fetcher did so far.
    pub fn stats(&self) -> FetchStats {
        let connections = self.session.connections();
        FetchStats {
            connections,
            reconnects: connections.saturating_sub(1),
            wire_bytes: self.wire_bytes,
            receive: self.session.stats(),
        }
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
        self.session.received()
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
        run_blocking(self.fetch_on(Conn::new(Blocking(io))))
    }

    /// [`Fetcher::fetch`] over an `AsyncRead + AsyncWrite` (a tokio
    /// `TcpStream`, say): the same session, every read, write and flush
    /// bounded by `io_timeout` (past it the connection fails with
    /// `TimedOut`, which is [retryable](SessionError::retryable)). The
    /// output is written and committed ([`Output`]) on the task itself:
    /// a `Vec` or a buffered file costs nothing there, a
    /// [`DurableFile`](super::DurableFile) (an fsync per commit) is better
    /// run under `tokio::task::block_in_place` or on a thread of its own.
    #[cfg(feature = "tokio")]
    pub async fn fetch_async<S>(
        &mut self,
        io: S,
        io_timeout: std::time::Duration,
    ) -> Result<(), SessionError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        self.fetch_on(Conn::new(super::io::Tokio::new(io, io_timeout)))
            .await
    }

    async fn fetch_on<S: Io>(&mut self, mut conn: Conn<S>) -> Result<(), SessionError> {
        if self.session.connections() > 0 {
            // The seq stated in the handshake lets the sender drop what it
            // covers: make it durable first.
            self.commit()?;
        }
        self.session.connect()?;
        let r = match self.handshake(&mut conn).await {
            Ok(()) => self.receive(&mut conn).await,
            Err(e) => Err(e),
        };
        self.wire_bytes += conn.in_bytes();
        match r {
            Ok(()) => Ok(()),
            Err(e) => Err(conn.refuse(e).await),
        }
    }

    /// Runs the whole transfer, as `proto-stream fetch` does: connects
    /// with `connect`, runs [`Fetcher::fetch`] on each connection, and
    /// after every retryable failure connects again, as `policy` allows
    /// (for `retry_for` since the last progress; at most `max_stalls`
    /// connections in a row without a new unit). Returns whether the
    /// sender's goodbye arrived: `false` when every unit was acknowledged
    /// but the sender was gone before it said goodbye. Failed connection
    /// attempts are spaced 50 ms apart; one that fails with
    /// `PermissionDenied` (the peer refused before any session: a wrong
    /// key) ends it at once.
    pub fn fetch_retrying<S, C>(
        &mut self,
        mut connect: C,
        policy: RetryPolicy,
    ) -> Result<bool, FetchError>
    where
        S: Read + Write,
        C: FnMut() -> io::Result<S>,
    {
        let mut again = Reconnect::new(policy);
        loop {
            let conn = match connect() {
                Ok(c) => c,
                Err(error) => {
                    if let Some(done) = again.connect_failed(error, self.finished()) {
                        return done;
                    }
                    std::thread::sleep(CONNECT_PAUSE);
                    continue;
                }
            };
            let before = self.received();
            let r = self.fetch(conn);
            if let Some(done) = again.ended(r, self.received() > before || self.finished()) {
                return done;
            }
        }
    }

    /// [`Fetcher::fetch_retrying`] over tokio: `connect` makes a
    /// connection (`|| tokio::net::TcpStream::connect(addr)`, say), each
    /// attempt bounded by `io_timeout` as every read and write of
    /// [`Fetcher::fetch_async`] is; the same policy, the same outcomes.
    #[cfg(feature = "tokio")]
    pub async fn fetch_retrying_async<S, C, F>(
        &mut self,
        mut connect: C,
        policy: RetryPolicy,
        io_timeout: std::time::Duration,
    ) -> Result<bool, FetchError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
        C: FnMut() -> F,
        F: std::future::Future<Output = io::Result<S>>,
    {
        let mut again = Reconnect::new(policy);
        loop {
            let conn = match super::io::timed(io_timeout, "connecting", connect()).await {
                Ok(c) => c,
                Err(error) => {
                    if let Some(done) = again.connect_failed(error, self.finished()) {
                        return done;
                    }
                    tokio::time::sleep(CONNECT_PAUSE).await;
                    continue;
                }
            };
            let before = self.received();
            let r = self.fetch_async(conn, io_timeout).await;
            if let Some(done) = again.ended(r, self.received() > before || self.finished()) {
                return done;
            }
        }
    }

    async fn handshake<S: Io>(&mut self, conn: &mut Conn<S>) -> Result<(), SessionError> {
        let hello = V1Header {
            byte_order: Endian::Little,
            features_supported: advertised(self.config.features, FEATURE_DEPS),
            features_required: self.config.required,
            stream_id: [0; 16],
            contexts: Vec::new(),
        };
        let shared = Handshake::new(self.config.versions, self.config.required, hello);
        let peer = conn.handshake(shared).await?.peer;
        match self.stream_id {
            Some(kept) if kept != peer.stream_id => {
                return Err(ResumeError::OtherStream {
                    kept,
                    offered: peer.stream_id,
                }
                .into())
            }
            _ => self.stream_id = Some(peer.stream_id),
        }
        self.offered = peer.contexts;

        let ids = match &self.selection {
            Some(ids) => ids.clone(),
            None => resolve_contexts(&self.offered, &self.config.contexts)?,
        };
        self.session.select(ids.clone()).write(conn.framer())?;
        conn.flush().await?;

        let c = conn.read_frame("in the handshake (ACCEPT)").await?;
        let accept = Accept::read(&c)?;
        self.session.accepted(&accept)?;
        self.selection = Some(ids);
        conn.handshake_done();
        Ok(())
    }

    async fn receive<S: Io>(&mut self, conn: &mut Conn<S>) -> Result<(), SessionError> {
        const DURING: &str = "in the transfer";
        loop {
            // Every whole frame a read brought, one after the other with
            // nothing awaited between them (a read holds thousands of small
            // units); then the next read.
            while let Some(at) = conn.framer().next_frame(DURING)? {
                let inc = conn.framer().incoming(at, self.session.unit_crc())?;
                let action = self.session.handle(inc)?;
                if let Some(units) = action.deliver {
                    self.out.write_units(units).map_err(SessionError::Output)?;
                }
                if action.refused {
                    // The units before the refused one are written; the
                    // receiver stands after them.
                    let e = self.session.take_refusal();
                    return Err(e.unwrap_or(SessionError::Units {
                        offset: None,
                        problem: "a unit was refused",
                    }));
                }
                let (ack, done) = (action.ack, action.done);
                if ack {
                    self.commit()?;
                    self.session.durable(conn.framer())?;
                    conn.flush().await?;
                }
                if done {
                    return Ok(());
                }
            }
            conn.read_more().await?;
        }
    }
}

/// The pause between failed connection attempts.
const CONNECT_PAUSE: Duration = Duration::from_millis(50);

/// The decisions of a reconnect loop ([`Fetcher::fetch_retrying`] and its
/// async twin), the loop itself doing the connecting and the waiting.
struct Reconnect {
    retry: Retry,
    /// The error that ended the last connection.
    last: Option<SessionError>,
}

impl Reconnect {
    fn new(policy: RetryPolicy) -> Self {
        Reconnect {
            retry: Retry::new(policy, Instant::now()),
            last: None,
        }
    }

    /// A connection attempt failed: `None` to wait and try again, or how
    /// the transfer ends (`finished`: every unit is here and durable).
    fn connect_failed(
        &mut self,
        error: io::Error,
        finished: bool,
    ) -> Option<Result<bool, FetchError>> {
        // The sender is gone after its goodbye; one lost on the way is
        // fine once everything is acknowledged.
        if finished {
            return Some(Ok(false));
        }
        // Refused before any session (authentication, say): not worth
        // another try.
        if error.kind() == io::ErrorKind::PermissionDenied {
            return Some(Err(FetchError::Refused(error)));
        }
        if self.retry.connect_failed(Instant::now()) == Verdict::GiveUp {
            return Some(Err(FetchError::Unreachable {
                waited: self.retry.waited(Instant::now()),
                error,
                last: self.last.take().map(Box::new),
            }));
        }
        None
    }

    /// A connection ended with `r` (`progressed`: a new unit came, or
    /// every unit is here): `None` to connect again, or how the transfer
    /// ends.
    fn ended(
        &mut self,
        r: Result<(), SessionError>,
        progressed: bool,
    ) -> Option<Result<bool, FetchError>> {
        match r {
            Ok(()) => Some(Ok(true)),
            Err(e) if e.retryable() => {
                if self.retry.ended(progressed, Instant::now()) == Verdict::GiveUp {
                    return Some(Err(FetchError::Stalled {
                        stalls: self.retry.stalls(),
                        last: Box::new(e),
                    }));
                }
                self.last = Some(e);
                None
            }
            Err(e) => Some(Err(FetchError::Session(e))),
        }
    }
}

/// Why [`Fetcher::fetch_retrying`] stopped short of the whole stream (the
/// output holds the valid units received before).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// No connection could be made for the policy's `retry_for`.
    #[error("{error} (no connection for {} s since the last progress{})", waited.as_secs_f64(), last.as_ref().map(|e| format!("; last error: {e}")).unwrap_or_default())]
    Unreachable {
        /// How long it tried.
        waited: Duration,
        /// The last connection error.
        error: io::Error,
        /// The error that ended the last connection, if one was made.
        last: Option<Box<SessionError>>,
    },
    /// The policy's `max_stalls` connections in a row ended without a new
    /// unit.
    #[error("no unit arrived over {stalls} connections in a row; last error: {last}")]
    Stalled {
        /// Connections in a row without progress.
        stalls: u32,
        /// The error that ended the last one.
        last: Box<SessionError>,
    },
    /// Connecting was refused before any session (`PermissionDenied`: a
    /// wrong key, say).
    #[error("the peer refused the connection: {0}")]
    Refused(io::Error),
    /// A failure that connecting again cannot mend (a refusal, a bad unit,
    /// the output).
    #[error(transparent)]
    Session(SessionError),
}
