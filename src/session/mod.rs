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
//! [`Fetcher::fetch_retrying`] is the whole reconnect loop of
//! `proto-stream fetch` (a [`RetryPolicy`]: how long to keep connecting
//! since the last progress, how many connections in a row may end without
//! a new unit), for a library user who gives it a way to connect.
//!
//! # Async (feature `tokio`)
//!
//! `Server::serve_async`, `Fetcher::fetch_async` and
//! `Fetcher::fetch_retrying_async` run the same session over any tokio
//! `AsyncRead + AsyncWrite`: the drivers are written once, as `async` code
//! over the connection's reads and writes, and the blocking
//! [`Server::serve`] and [`Fetcher::fetch`] run that code over a blocking
//! `Read + Write` (its futures are ready at once). Both sides interoperate
//! with either kind of peer, with the same reconnect and resume semantics;
//! every read, write, flush and connect of the async driver is bounded by
//! the timeout it is given (a blocking connection's timeouts are its own,
//! a `TcpStream`'s read and write timeouts, say).
//!
//! # The handshake
//!
//! The sans-IO [`proto_session::handshake`], one for both roles: fixed
//! headers ([`SESSION_FORMAT`]) and two-way version negotiation, `HELLO`
//! with features both ways and the required-feature check, then the
//! receiver's `SELECT` (contexts, last seq received, sender instance,
//! latest checkpoint token) and the sender's `ACCEPT` or `REFUSE`. The
//! connection's bytes go through a [`proto_session::framer::Framer`];
//! this module only moves them over a `Read + Write`.
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

pub mod auth;
mod client;
mod conn;
pub(crate) mod durable;
#[cfg(feature = "fault-injection")]
mod faults;
mod io;
mod rate;
mod server;

pub use client::{FetchConfig, FetchError, FetchStats, Fetcher, Kept, Output};
pub use durable::{DurableError, DurableFile};
#[cfg(feature = "fault-injection")]
pub use faults::DropEvery;
/// The sans-IO seq/ack replay this session is built on (`proto-session`).
pub use proto_session::replay;
pub use proto_session::retry::RetryPolicy;
pub use rate::RateLimit;
pub use server::{Served, Server, ServerConfig, ServerStats};

pub use proto_session::error::{BoxError, ResumeError, SessionError};
pub use proto_session::offer::{self, Detect, Offer, SessionFormat};
pub use proto_session::receive::{Position, ReceiveStats, Units};
pub use proto_session::send::SendStats;

/// The kit's formats as [`Server::open`] and [`Fetcher::new`] tell them
/// apart: native `PRSTREAM` by its magic, else btrfs (the fallback, whose
/// errors say what was found instead of its magic).
pub static KIT_FORMATS: [&dyn SessionFormat; 2] =
    [&proto_checkpoint::native::PRSTREAM, &proto_btrfs::Btrfs];
pub use proto_session::wire::*;
