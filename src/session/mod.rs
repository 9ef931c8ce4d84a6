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

pub use client::{BoxError, FetchConfig, FetchStats, Fetcher};
/// The sans-IO seq/ack replay this session is built on (`proto-session`).
pub use proto_session::replay;
pub use server::{Served, Server, ServerConfig, ServerStats};

use proto_checkpoint::TokenError;
use proto_header::{FixedHeaderFormat, VersionRange};
use proto_session::replay::ReplayError;
use proto_tlv::{CrcVariant, Profile};

/// The magic of the session's fixed header.
pub const SESSION_MAGIC: &[u8; 8] = b"PSESSION";
/// The session's fixed header: [`SESSION_MAGIC`], version and
/// compat_version as u32 big-endian.
pub const SESSION_FORMAT: FixedHeaderFormat = FixedHeaderFormat::native(SESSION_MAGIC);
/// The session versions this implementation speaks.
pub const SESSION_VERSIONS: VersionRange = VersionRange { min: 1, max: 1 };

/// Feature: seq/ack replay after a reconnect (required by both sides).
pub const FEATURE_REPLAY: u64 = 1 << 0;
/// Feature: a sender that lost its window resumes from a checkpoint token
/// (depends on [`FEATURE_REPLAY`]).
pub const FEATURE_TOKENS: u64 = 1 << 1;
/// Feature: the receiver selects contexts.
pub const FEATURE_CONTEXTS: u64 = 1 << 2;
/// Every feature this implementation knows.
pub const KNOWN_FEATURES: u64 = FEATURE_REPLAY | FEATURE_TOKENS | FEATURE_CONTEXTS;
/// Feature dependencies (a feature is advertised only with what it needs).
pub const FEATURE_DEPS: &[proto_header::FeatureDep] = &[proto_header::FeatureDep {
    feature: FEATURE_TOKENS,
    requires: FEATURE_REPLAY,
}];

/// Largest frame payload before the handshake completes.
pub const HANDSHAKE_MAX_PAYLOAD: u32 = 2 << 20;
/// Largest unit (stream header or command) a session carries: a command
/// of 16 MiB (the largest payload of btrfs v2 and of `PRSTREAM`) plus its
/// header.
pub const MAX_UNIT: usize = (16 << 20) + proto_tlv::CMD_HEADER_LEN;
/// The TLV profile of session frames: standard CRC-32C; the payload
/// attribute runs to the end of its frame.
pub const SESSION_PROFILE: Profile = Profile {
    crc: CrcVariant::Standard,
    max_payload_len: (MAX_UNIT + 64) as u32,
    unbounded_data_attr: Some(attr::PAYLOAD),
    end_cmd: frame::BYE,
};
const HANDSHAKE_PROFILE: Profile = Profile {
    max_payload_len: HANDSHAKE_MAX_PAYLOAD,
    ..SESSION_PROFILE
};

/// Frame types.
pub mod frame {
    /// Version header of the negotiated version (both peers).
    pub const HELLO: u16 = 1;
    /// Receiver: contexts, last seq received, sender instance, token.
    pub const SELECT: u16 = 2;
    /// Sender: the transfer resumes (instance, window, resend counts).
    pub const ACCEPT: u16 = 3;
    /// Either peer: a refusal (code and message); the connection closes.
    pub const REFUSE: u16 = 4;
    /// Sender: one unit with its seq.
    pub const DATA: u16 = 5;
    /// Sender: a checkpoint token valid after a seq.
    pub const TOKEN: u16 = 6;
    /// Receiver: every seq up to this one is durable.
    pub const ACK: u16 = 7;
    /// Sender: the stream ended at this seq.
    pub const FINISH: u16 = 8;
    /// Sender: the final ack arrived; the transfer is complete.
    pub const BYE: u16 = 9;

    /// A frame type's name, for messages.
    pub fn name(ty: u16) -> &'static str {
        match ty {
            HELLO => "HELLO",
            SELECT => "SELECT",
            ACCEPT => "ACCEPT",
            REFUSE => "REFUSE",
            DATA => "DATA",
            TOKEN => "TOKEN",
            ACK => "ACK",
            FINISH => "FINISH",
            BYE => "BYE",
            _ => "unknown",
        }
    }
}

/// Attribute types of frames.
pub mod attr {
    /// HELLO: the length-prefixed version header.
    pub const BODY: u16 = 1;
    /// SELECT: the context selection (length-prefixed ids).
    pub const SELECTION: u16 = 2;
    /// SELECT: last seq received (u64).
    pub const RECEIVED: u16 = 3;
    /// SELECT, ACCEPT: sender instance (16 bytes).
    pub const INSTANCE: u16 = 4;
    /// SELECT, TOKEN: checkpoint token bytes.
    pub const TOKEN: u16 = 5;
    /// DATA, TOKEN, ACK, FINISH: a seq (u64).
    pub const SEQ: u16 = 6;
    /// ACCEPT: window bytes (u64).
    pub const WINDOW_BYTES: u16 = 7;
    /// ACCEPT: window messages (u64).
    pub const WINDOW_MESSAGES: u16 = 8;
    /// ACCEPT: how the transfer resumed (u8, [`super::Resumed`]).
    pub const RESUMED: u16 = 9;
    /// REFUSE: the [`super::Code`] (u16).
    pub const CODE: u16 = 10;
    /// REFUSE: a message (UTF-8).
    pub const MESSAGE: u16 = 11;
    /// ACCEPT: messages the sender will send again (u64).
    pub const RESEND_MESSAGES: u16 = 12;
    /// ACCEPT: bytes the sender will send again (u64).
    pub const RESEND_BYTES: u16 = 13;
    /// DATA: the unit; runs to the end of the frame.
    pub const PAYLOAD: u16 = 0x7fff;
}

/// How a transfer resumed (in ACCEPT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resumed {
    /// From the start.
    Fresh = 0,
    /// The sender still had its window: seq exchange.
    Seq = 1,
    /// The sender had lost its window: re-armed from the receiver's token.
    Token = 2,
    /// The sender had lost its window and the receiver had no token yet:
    /// re-armed from the start, the units the receiver has skipped.
    Start = 3,
}

/// Why a peer was refused: sent in REFUSE frames as a u16.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Code {
    /// A malformed or unexpected frame, or a broken fixed header (1).
    Protocol,
    /// No common version (2).
    Version,
    /// A required feature the peer does not know (3).
    Feature,
    /// An invalid context selection (4).
    Selection,
    /// The transfer cannot resume: no window and no usable token, a
    /// changed selection, a bad token (5).
    Resume,
    /// A seq from the future, or a gap (6).
    Seq,
    /// The sender's stream is broken, or a unit the receiver got is not
    /// valid (7).
    Stream,
    /// A code this implementation does not know (from a newer peer), kept
    /// as it came.
    Other(u16),
}

impl Code {
    /// The code of a u16 on the wire; unknown values are kept
    /// ([`Code::Other`]).
    pub fn from_u16(v: u16) -> Code {
        match v {
            1 => Code::Protocol,
            2 => Code::Version,
            3 => Code::Feature,
            4 => Code::Selection,
            5 => Code::Resume,
            6 => Code::Seq,
            7 => Code::Stream,
            v => Code::Other(v),
        }
    }

    /// The u16 on the wire.
    pub fn to_u16(self) -> u16 {
        match self {
            Code::Protocol => 1,
            Code::Version => 2,
            Code::Feature => 3,
            Code::Selection => 4,
            Code::Resume => 5,
            Code::Seq => 6,
            Code::Stream => 7,
            Code::Other(v) => v,
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Code::Protocol => "protocol",
            Code::Version => "version",
            Code::Feature => "feature",
            Code::Selection => "selection",
            Code::Resume => "resume",
            Code::Seq => "seq",
            Code::Stream => "stream",
            Code::Other(v) => return write!(f, "code {v:#06x}"),
        };
        f.write_str(s)
    }
}

/// What ends a session connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The connection failed: connect again and resume.
    #[error("connection: {0}")]
    Io(#[from] io::Error),
    /// The peer closed the connection (at a frame boundary or inside one).
    #[error("the peer closed the connection {during} (at byte {offset} of its input)")]
    Closed {
        /// What was being read.
        during: &'static str,
        /// Bytes read from the peer on this connection.
        offset: u64,
    },
    /// The fixed header, version negotiation, the version header, the
    /// features or the context selection were refused (byte offsets inside).
    #[error("handshake: {0}")]
    Header(#[from] proto_header::Error),
    /// A frame is malformed (frame index and byte offset inside).
    #[error("session frame: {0}")]
    Frame(#[from] proto_tlv::Error),
    /// A well-formed frame that does not belong here.
    #[error("unexpected {} frame ({got}) at byte {offset}: expected {expected}", frame::name(*got))]
    Unexpected {
        /// What was expected.
        expected: &'static str,
        /// The frame type that came.
        got: u16,
        /// Its byte offset.
        offset: u64,
    },
    /// The peer refused (its code and message).
    #[error("refused by the peer ({code}): {message}")]
    Refused {
        /// Why.
        code: Code,
        /// Its message.
        message: String,
    },
    /// A seq out of place: from the future, a gap, a peer that lost data.
    #[error("seq: {0}")]
    Replay(#[from] ReplayError),
    /// The transfer cannot resume as asked.
    #[error("cannot resume: {0}")]
    Resume(String),
    /// A checkpoint token did not decode.
    #[error("checkpoint token: {0}")]
    Token(#[from] TokenError),
    /// The sender's stream could not be produced.
    #[error("source stream: {0}")]
    Source(String),
    /// A unit the receiver got is not a valid stream header or command
    /// (nothing of it was written).
    #[error("unit {seq}: {source}")]
    Unit {
        /// Its seq.
        seq: u64,
        /// What is wrong with it, in the stream format's own terms.
        source: client::BoxError,
    },
    /// The receiver could not write its output (not retryable).
    #[error("writing the output: {0}")]
    Output(io::Error),
    /// The sender finished at another seq than the last one received.
    #[error("the sender finished at seq {last}, but the last seq received is {received}")]
    Finish {
        /// The sender's last seq.
        last: u64,
        /// The receiver's.
        received: u64,
    },
    /// The receiver asked for a context name the sender does not offer.
    #[error("unknown context {name:?}; the sender offers: {offered}")]
    UnknownContext {
        /// The name asked for.
        name: String,
        /// The names offered.
        offered: String,
    },
}

impl SessionError {
    /// Whether connecting again may succeed (the connection broke; nothing
    /// was refused).
    pub fn retryable(&self) -> bool {
        matches!(self, SessionError::Io(_) | SessionError::Closed { .. })
    }

    /// The code a refusal for this error carries.
    pub fn code(&self) -> Code {
        use proto_header::Error as H;
        match self {
            SessionError::Header(H::NoCommonVersion { .. } | H::EmptyRange { .. }) => Code::Version,
            SessionError::Header(H::UnknownRequiredFeatures { .. }) => Code::Feature,
            SessionError::Header(
                H::SelectionLenNotMultipleOf4 { .. }
                | H::EmptySelection { .. }
                | H::SelectionTooLong { .. }
                | H::UnknownContext { .. }
                | H::DuplicateContext { .. },
            )
            | SessionError::UnknownContext { .. } => Code::Selection,
            SessionError::Replay(_) | SessionError::Finish { .. } => Code::Seq,
            SessionError::Resume(_) | SessionError::Token(_) => Code::Resume,
            SessionError::Source(_) | SessionError::Unit { .. } | SessionError::Output(_) => {
                Code::Stream
            }
            SessionError::Refused { code, .. } => *code,
            _ => Code::Protocol,
        }
    }
}

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
