//! The sending side of a session.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use proto_checkpoint::FileSource;
use proto_header::{advertised, Context, Endian, V1Header, VersionRange};
use proto_session::handshake::{Handshake, Select};
use proto_session::offer::{BoxSource, Offer, Open, SessionFormat};
use proto_session::replay::Limits;
use proto_session::send::{SendConfig, SendStats, Sending, Step};

use super::conn::Conn;
use super::io::{run_blocking, Blocking, Io};
use super::{
    SessionError, FEATURE_DEPS, FEATURE_REPLAY, KIT_FORMATS, KNOWN_FEATURES, SESSION_VERSIONS,
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
    /// Compress DATA frames with zstd when the receiver advertises
    /// [`FEATURE_ZSTD`](super::FEATURE_ZSTD) (and `features` has it); plain
    /// frames otherwise.
    pub compress: bool,
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
            compress: false,
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
    /// Times the sender forgot its transfer (fault injection).
    pub restarts: u64,
    /// What went out: units and bytes sent and resent, tokens, resumes.
    pub send: SendStats,
}

/// A completed transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Served {
    /// Units in the stream sent (every one acknowledged).
    pub units: u64,
}

/// The sending side: serves one stream file of any format (one stream,
/// or several concatenated where the format allows it, each a context) to
/// one receiver, over as many connections as it takes.
pub struct Server {
    config: ServerConfig,
    offer: Offer,
    hello: V1Header,
    sending: Sending,
    #[cfg(feature = "fault-injection")]
    killed: bool,
    stats: ServerStats,
}

impl Server {
    /// Serves the stream file at `path` (opened again whenever the sender
    /// re-arms), of any of the kit's formats ([`KIT_FORMATS`], told apart by
    /// magic).
    pub fn open(path: &Path, config: ServerConfig) -> Result<Server, SessionError> {
        let path = path.to_owned();
        Server::detect(
            Box::new(move || Ok(Box::new(FileSource::new(File::open(&path)?)?) as BoxSource)),
            config,
        )
    }

    /// Serves a stream held in memory, of any of the kit's formats.
    pub fn from_bytes(bytes: Vec<u8>, config: ServerConfig) -> Result<Server, SessionError> {
        Server::detect(in_memory(bytes), config)
    }

    /// Serves a stream of `format` held in memory.
    pub fn with_format<F: SessionFormat>(
        format: F,
        bytes: Vec<u8>,
        config: ServerConfig,
    ) -> Result<Server, SessionError> {
        let offer = format.offer(in_memory(bytes), config.safe_every)?;
        Ok(Server::with_offer(offer, config))
    }

    fn detect(open: Open, config: ServerConfig) -> Result<Server, SessionError> {
        let offer = Offer::detect(&KIT_FORMATS, open, config.safe_every)?;
        Ok(Server::with_offer(offer, config))
    }

    /// Serves what `offer` offers (a file of any format).
    pub fn with_offer(offer: Offer, config: ServerConfig) -> Server {
        let hello = V1Header {
            byte_order: Endian::Little,
            features_supported: advertised(config.features, FEATURE_DEPS),
            features_required: config.required,
            stream_id: offer.stream_id(),
            contexts: offer.contexts(),
        };
        // The emitter fills buffers of the file's largest unit; large DATA
        // frames take their CRC from their command's when all streams
        // checksum their commands alike.
        let sending = Sending::new(
            config.window,
            SendConfig {
                token_every: config.token_every,
                max_unit: offer.max_unit(),
                unit_crc: offer.unit_crc(),
                compress: config.compress,
            },
        );
        Server {
            offer,
            hello,
            sending,
            config,
            #[cfg(feature = "fault-injection")]
            killed: false,
            stats: ServerStats::default(),
        }
    }

    /// The contexts offered (one per stream in the file).
    pub fn contexts(&self) -> &[Context] {
        &self.hello.contexts
    }

    /// What the server did so far.
    pub fn stats(&self) -> ServerStats {
        ServerStats {
            send: self.sending.stats(),
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
        run_blocking(self.serve_on(Conn::new(Blocking(io))))
    }

    /// [`Server::serve`] over an `AsyncRead + AsyncWrite` (a tokio
    /// `TcpStream`, say), feature `tokio`: the same session (the same
    /// code: the blocking `serve` runs it over blocking I/O), every read,
    /// write and flush bounded by `io_timeout` (past it the connection
    /// fails with `TimedOut`, which is [retryable](SessionError::retryable)).
    /// The future is `Send` (it can be spawned) when `S` is.
    ///
    /// ```
    /// use std::time::Duration;
    /// use proto_stream::session::{FetchConfig, Fetcher, RetryPolicy, Server, ServerConfig};
    /// use tokio::net::{TcpListener, TcpStream};
    ///
    /// let file = include_bytes!("../../testdata/btrfs/incr-v2.stream");
    /// let io_timeout = Duration::from_secs(10);
    /// let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// rt.block_on(async {
    ///     let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    ///     let addr = listener.local_addr().unwrap();
    ///     let serve = async move {
    ///         let mut server = Server::from_bytes(file.to_vec(), ServerConfig::default()).unwrap();
    ///         loop {
    ///             // (bound the accept too in real code: tokio::time::timeout)
    ///             let (conn, _) = listener.accept().await.unwrap();
    ///             match server.serve_async(conn, io_timeout).await {
    ///                 Ok(served) => return served,
    ///                 Err(e) if e.retryable() => continue, // the fetcher connects again
    ///                 Err(e) => panic!("{e}"),
    ///             }
    ///         }
    ///     };
    ///     let fetch = async {
    ///         let mut fetcher = Fetcher::new(Vec::new(), FetchConfig::default());
    ///         let connect = || TcpStream::connect(addr);
    ///         let said_bye = fetcher
    ///             .fetch_retrying_async(connect, RetryPolicy::default(), io_timeout)
    ///             .await
    ///             .unwrap();
    ///         assert!(said_bye);
    ///         fetcher.into_inner()
    ///     };
    ///     let (served, out) = tokio::join!(serve, fetch);
    ///     assert_eq!(&out[..], &file[..]);
    ///     assert!(served.units > 2);
    /// });
    /// ```
    #[cfg(feature = "tokio")]
    pub async fn serve_async<S>(
        &mut self,
        io: S,
        io_timeout: std::time::Duration,
    ) -> Result<Served, SessionError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        self.serve_on(Conn::new(super::io::Tokio::new(io, io_timeout)))
            .await
    }

    async fn serve_on<S: Io>(&mut self, mut conn: Conn<S>) -> Result<Served, SessionError> {
        self.stats.connections += 1;
        let r = match self.handshake(&mut conn).await {
            Ok(()) => self.transmit(&mut conn).await,
            Err(e) => Err(e),
        };
        match r {
            Ok(served) => Ok(served),
            Err(e) => {
                // The receiver refused a unit: not sent again from the
                // window, the source read again and checked.
                self.sending.peer_refused(&e);
                let e = conn.refuse(e).await;
                if !e.retryable() {
                    self.stats.refused += 1;
                }
                Err(e)
            }
        }
    }

    async fn handshake<S: Io>(&mut self, conn: &mut Conn<S>) -> Result<(), SessionError> {
        let shared = Handshake::new(
            self.config.versions,
            self.config.required,
            self.hello.clone(),
        );
        let peer = conn.handshake(shared).await?.peer;
        // Compression: when asked, and both advertised it.
        self.sending
            .negotiated(peer.features_supported & self.hello.features_supported);

        let c = conn.read_frame("in the handshake (SELECT)").await?;
        let select = Select::read(&c, &self.hello.context_ids())?;
        let accept = self
            .sending
            .resume(&select, new_instance(), &mut self.offer)?;
        accept.write(conn.framer())?;
        conn.handshake_done();
        Ok(())
    }

    /// The data phase: units out, acks in, until the last unit is
    /// acknowledged.
    async fn transmit<S: Io>(&mut self, conn: &mut Conn<S>) -> Result<Served, SessionError> {
        loop {
            match self.sending.poll(conn.framer())? {
                Step::Data { body, .. } => {
                    match body {
                        Some(b) => conn.write_body(b).await?,
                        None if conn.gathered() => conn.flush().await?,
                        None => {}
                    }
                    #[cfg(feature = "fault-injection")]
                    self.kill_if_due()?;
                }
                Step::Wait => {
                    conn.flush().await?;
                    let c = conn.read_frame("waiting for an ACK").await?;
                    self.sending.handle(&c)?;
                }
                Step::Done { units } => {
                    conn.flush().await?;
                    self.sending.forget();
                    // Let the receiver close first (its last ack may
                    // still be on the way); bounded by the connection's
                    // own timeouts.
                    while conn.read_frame("after BYE").await.is_ok() {}
                    return Ok(Served { units });
                }
            }
        }
    }

    /// Fault injection: past `kill_after` payload bytes, once, the sender
    /// forgets its transfer and drops the connection, as a killed process.
    #[cfg(feature = "fault-injection")]
    fn kill_if_due(&mut self) -> Result<(), SessionError> {
        if self.killed || self.config.kill_after.is_none() {
            return Ok(());
        }
        let sent = self.sending.stats().bytes_sent;
        match self.config.kill_after {
            Some(k) if sent >= k => {
                self.killed = true;
                self.stats.restarts += 1;
                self.sending.forget();
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
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

/// Opens a stream held in memory, as often as asked.
fn in_memory(bytes: Vec<u8>) -> Open {
    let bytes: Arc<[u8]> = bytes.into();
    Box::new(move || Ok(Box::new(bytes.clone()) as BoxSource))
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
    let mix = proto_crc32c::crc32c(&id);
    id[12..].copy_from_slice(&(mix ^ n as u32).to_le_bytes());
    id
}
