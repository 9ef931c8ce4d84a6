//! Transfers that survive disconnects: a session over any `Read + Write`.
//!
//! A [`Server`] sends a stream file of any [`Format`](proto_checkpoint::Format)
//! (btrfs send streams and native `PRSTREAM` streams told apart by magic, or
//! one given with [`Server::with_format`]); a [`Fetcher`] receives it,
//! checking each unit with that format's validator.
//! Each connection starts with a handshake, then carries the stream one
//! unit (stream header or command) per message, each with a sequence
//! number ([`proto_session::replay`]). When the connection breaks, the
//! caller connects again and hands the new connection to the same
//! `Server`/`Fetcher`: the handshake exchanges the last seq received, and
//! only what the receiver lacks is sent again. When the sender restarted
//! and lost its window, the receiver's latest checkpoint token (sent in
//! band every [`ServerConfig::token_every`] bytes) re-arms it.
//!
//! # The handshake
//!
//! 1. Both peers send the fixed header ([`SESSION_FORMAT`]: magic
//!    [`SESSION_MAGIC`], their version range as `version` and
//!    `compat_version`), and each picks the highest version in both ranges
//!    ([`proto_header::negotiate_two_way`]).
//! 2. Both send `HELLO` with the version header of that version
//!    ([`V1Header`](proto_header::V1Header): features supported and required, stream id, and for
//!    the sender the contexts it can produce). A required feature the peer
//!    does not know is refused, naming the bits.
//! 3. The receiver sends `SELECT`: the contexts it wants (as
//!    [`proto_header::encode_selection`]; the sender checks them with
//!    [`proto_header::parse_selection`]), the last seq it received, the
//!    sender instance it received it from, and its latest checkpoint token.
//! 4. The sender answers `ACCEPT` (its instance, window, how it resumed
//!    and what it will send again) or `REFUSE`.
//!
//! Every refusal is a typed [`SessionError`], told to the peer in a
//! `REFUSE` frame ([`Code`] and message) before the connection is dropped.
//!
//! # Frames
//!
//! After the fixed headers everything is a TLV frame ([`SESSION_PROFILE`]:
//! the btrfs framing with standard CRC-32C), so garbage is caught by its
//! CRC and named by frame index and byte offset. Before the handshake
//! completes a frame may carry at most [`HANDSHAKE_MAX_PAYLOAD`] bytes.
//!
//! # Contexts
//!
//! The contexts of a file are its streams ([`proto_checkpoint::list_streams`]):
//! for btrfs its concatenated streams, named after their first command
//! (`subvol:PATH`, `snapshot:PATH`); a native stream is one context. A
//! receiver that selects some gets those streams, which together are a
//! valid stream.
//!
//! ```
//! use std::io::{Read, Write};
//! use std::net::{TcpListener, TcpStream};
//! use proto_stream::session::{FetchConfig, Fetcher, Server, ServerConfig};
//!
//! let file = include_bytes!("../../testdata/btrfs/incr-v2.stream");
//! let listener = TcpListener::bind("127.0.0.1:0").unwrap();
//! let addr = listener.local_addr().unwrap();
//! let server = std::thread::spawn(move || {
//!     let mut server = Server::from_bytes(file.to_vec(), ServerConfig::default()).unwrap();
//!     let (conn, _) = listener.accept().unwrap();
//!     server.serve(conn).unwrap();
//! });
//! let mut out = Vec::new();
//! let mut fetcher = Fetcher::new(&mut out, FetchConfig::default());
//! fetcher.fetch(TcpStream::connect(addr).unwrap()).unwrap();
//! assert!(fetcher.done());
//! server.join().unwrap();
//! assert_eq!(&out[..], &file[..]);
//! ```

mod client;
mod conn;
mod server;

use std::io::{self, Read, Write};

pub use client::{FetchConfig, FetchStats, Fetcher};
/// The sans-IO seq/ack replay this session is built on (`proto-session`).
pub use proto_session::replay;
pub use server::{Served, Server, ServerConfig, ServerStats};

pub use proto_session::error::{BoxError, ResumeError, SessionError};
pub use proto_session::wire::*;

/// A connection that fails after every `every` bytes read or written (fault
/// injection for tests and the CLI's `--drop-every`): the read or write that
/// would cross the limit transfers up to it, and the next one fails with
/// `ConnectionAborted`.
#[derive(Debug)]
pub struct DropEvery<S> {
    inner: S,
    every: u64,
    count: u64,
}

impl<S> DropEvery<S> {
    /// Wraps `inner`; `every` of 0 never drops.
    pub fn new(inner: S, every: u64) -> Self {
        DropEvery {
            inner,
            every,
            count: 0,
        }
    }

    fn budget(&self, want: usize) -> io::Result<usize> {
        if self.every == 0 {
            return Ok(want);
        }
        let left = self.every.saturating_sub(self.count);
        if left == 0 && want > 0 {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!(
                    "fault injection: connection dropped after {} bytes",
                    self.count
                ),
            ));
        }
        Ok(want.min(usize::try_from(left).unwrap_or(usize::MAX)))
    }
}

impl<S: Read> Read for DropEvery<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.budget(buf.len())?;
        let k = self.inner.read(&mut buf[..n])?;
        self.count += k as u64;
        Ok(k)
    }
}

impl<S: Write> Write for DropEvery<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.budget(buf.len())?;
        let k = self.inner.write(&buf[..n])?;
        self.count += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
