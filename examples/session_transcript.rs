//! Records what each peer of a real session sends, for the seed corpus of
//! the `session_handshake` fuzz target: a `Server` serving
//! `testdata/btrfs/nodata-v2.stream` and `incr-v2.stream` concatenated (two
//! contexts) and a `Fetcher`, over TCP on 127.0.0.1, each connection tapped.
//!
//! ```text
//! cargo run --example session_transcript OUTDIR
//! ```
//!
//! Writes, for each scenario, `server-NAME` (a mode byte for the target's
//! server mode, then every byte the fetcher sent) and `fetcher-NAME` (a mode
//! byte for its fetcher mode, then every byte the server sent). The server
//! and fetcher configurations must be the ones the fuzz target builds for
//! those mode bytes (see `fuzz/fuzz_targets/session_handshake.rs`): the
//! fetcher's ACKs follow the server's window, so a transcript replays only
//! against the same window.
//!
//! Scenarios: `all` (every context), `ctx2` (the fetcher selects context
//! id 2, the second stream, only), `refused` (the fetcher asks for a context the server does not
//! offer and says so in a REFUSE frame), `token` (the first connection is
//! cut after 40,000 bytes and the server forgets the transfer: the seed is
//! the fetcher's second connection, whose SELECT carries a checkpoint
//! token).

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use proto_stream::session::replay::Limits;
use proto_stream::session::{DropEvery, FetchConfig, Fetcher, Server, ServerConfig};

/// The served file: two streams, so two contexts (as the fuzz target's).
fn stream() -> Vec<u8> {
    let mut s = include_bytes!("../testdata/btrfs/nodata-v2.stream").to_vec();
    s.extend_from_slice(include_bytes!("../testdata/btrfs/incr-v2.stream"));
    s
}

/// The fuzz target's server configuration (keep in step with
/// `server_config` there).
fn server_config() -> ServerConfig {
    ServerConfig {
        window: Limits {
            max_bytes: 16 << 10,
            max_messages: 8,
        },
        token_every: 8 << 10,
        ..ServerConfig::default()
    }
}

/// A connection that keeps a copy of every byte read from it.
struct Tap {
    inner: TcpStream,
    log: Arc<Mutex<Vec<u8>>>,
}

impl Read for Tap {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.log
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?
            .extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

impl Write for Tap {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Runs one session over `drops + 1` connections: the first `drops` are
/// cut after `drop_every` bytes on the fetcher's side, and the server
/// forgets the transfer after each (a restarted sender: the fetcher resumes
/// from its checkpoint token). Returns (bytes the fetcher sent, bytes the
/// server sent) on the last connection, and the fetcher's output.
fn transcript(
    fetch: FetchConfig,
    drops: usize,
    drop_every: u64,
) -> io::Result<(Vec<u8>, Vec<u8>, Vec<u8>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let server = std::thread::spawn(move || -> io::Result<Vec<u8>> {
        let mut server = Server::from_bytes(stream(), server_config())
            .map_err(|e| io::Error::other(e.to_string()))?;
        let mut log = Arc::new(Mutex::new(Vec::new()));
        for _ in 0..=drops {
            let (conn, _) = listener.accept()?;
            log = Arc::new(Mutex::new(Vec::new()));
            // The outcome is in the transcript (a refusal included).
            if server
                .serve(Tap {
                    inner: conn,
                    log: log.clone(),
                })
                .is_err()
            {
                server.forget();
            }
        }
        Ok(take(&log))
    });
    let mut out = Vec::new();
    let mut fetcher = Fetcher::new(&mut out, fetch);
    let mut from_server = Arc::new(Mutex::new(Vec::new()));
    for i in 0..=drops {
        from_server = Arc::new(Mutex::new(Vec::new()));
        let conn = Tap {
            inner: TcpStream::connect(addr)?,
            log: from_server.clone(),
        };
        let every = if i < drops { drop_every } else { 0 };
        let r = fetcher.fetch(DropEvery::new(conn, every));
        eprintln!("fetcher, connection {}: {r:?}", i + 1);
    }
    eprintln!("fetcher: {:?}", fetcher.stats());
    let from_client = server
        .join()
        .map_err(|_| io::Error::other("server thread panicked"))??;
    Ok((from_client, take(&from_server), out))
}

fn take(log: &Arc<Mutex<Vec<u8>>>) -> Vec<u8> {
    log.lock().map(|v| v.clone()).unwrap_or_default()
}

/// One recorded session.
struct Scenario {
    name: &'static str,
    /// The fetcher's contexts.
    contexts: &'static [&'static str],
    /// Connections cut (and forgotten by the server) before the recorded one.
    drops: usize,
    /// The mode byte of the fetcher seed, if one is written.
    fetcher_mode: Option<u8>,
}

impl Scenario {
    const fn new(
        name: &'static str,
        contexts: &'static [&'static str],
        drops: usize,
        fetcher_mode: Option<u8>,
    ) -> Self {
        Scenario {
            name,
            contexts,
            drops,
            fetcher_mode,
        }
    }
}

fn main() -> io::Result<()> {
    let dir = PathBuf::from(
        std::env::args_os()
            .nth(1)
            .unwrap_or_else(|| "session-transcripts".into()),
    );
    std::fs::create_dir_all(&dir)?;
    // Mode bytes: bit 0 picks the fetcher mode, bit 4 there selects context
    // "2". A fetcher seed of the `token` scenario would start past seq 1,
    // which a new fetcher refuses at once: none is written.
    let scenarios = [
        Scenario::new("all", &[], 0, Some(0x01)),
        Scenario::new("ctx2", &["2"], 0, Some(0x11)),
        Scenario::new("refused", &["no-such-context"], 0, Some(0x01)),
        Scenario::new("token", &[], 1, None),
    ];
    let server_mode = 0x00;
    for Scenario {
        name,
        contexts,
        drops,
        fetcher_mode,
    } in scenarios
    {
        let fetch = FetchConfig {
            contexts: contexts.iter().map(|s| s.to_string()).collect(),
            ..FetchConfig::default()
        };
        let (client, server, out) = transcript(fetch, drops, 40_000)?;
        if contexts.is_empty() && out != stream() {
            return Err(io::Error::other("the fetched stream differs from the file"));
        }
        let seeds = [
            Some((format!("server-{name}"), server_mode, &client)),
            fetcher_mode.map(|m| (format!("fetcher-{name}"), m, &server)),
        ];
        for (file, mode, bytes) in seeds.into_iter().flatten() {
            let mut seed = vec![mode];
            seed.extend_from_slice(bytes);
            std::fs::write(dir.join(&file), &seed)?;
            eprintln!("{}: {} bytes", dir.join(&file).display(), seed.len());
        }
    }
    Ok(())
}
