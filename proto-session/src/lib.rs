//! # proto-session: sans-IO sessions that survive reconnects
//!
//! The general session layer of the kit, for any stream format: nothing
//! here does I/O, reads a clock or names a format. Today it holds
//! [`replay`], the seq/ack replay after a reconnect (ceph's
//! `RECONNECT_SEQ`): a bounded window of unacknowledged messages on the
//! sending side, duplicates discarded and gaps refused on the receiving
//! side. [`wire`] holds the session's wire numbers (fixed header,
//! features, frames, attributes, refusal [`wire::Code`]s as an open set,
//! TLV profiles) and [`error`] the one error type both roles report, every
//! refusal with its code and, where it has one, its byte offset
//! ([`SessionError::offset`]). [`framer`] turns one connection's bytes
//! into frames and frames into bytes (the caller does the I/O; large DATA
//! payloads are not copied, and their CRC is derived from their command's
//! own), and [`handshake`] is the one handshake both roles run (fixed
//! headers, two-way version negotiation, HELLO with features, the
//! required-feature check) with the typed `SELECT` and `ACCEPT` frames
//! that end it. [`offer`] is what a sender offers of a file of any format
//! (its streams as contexts, and the `Arm` that makes their emitter), and
//! formats told apart by magic for a driver that takes several. [`send`] is the sender across connections and restarts
//! (resume by seq, or re-armed from the receiver's checkpoint token through
//! the format's `Arm`, then units out of the window, tokens in band,
//! FINISH, BYE), and [`receive`] the receiver (what it states in SELECT;
//! every unit checked before it is handed out, duplicates discarded, ACKs
//! once the caller made the output durable). The top crate's
//! `session` is a blocking driver of these over `Read + Write`.
//!
//! Without its default `std` feature the crate is `no_std` (it needs
//! `alloc`); [`offer`] (over proto-checkpoint's sources), [`retry`] (over
//! `Instant`), the `zstd` feature and the I/O variants of
//! [`SessionError`] are missing.
//!
//! ```
//! use proto_session::replay::{Accept, Limits, Receiver, Sender};
//!
//! let mut tx = Sender::new(Limits { max_bytes: 1 << 20, max_messages: 8 }, 0);
//! let mut rx = Receiver::new(0);
//! tx.push(b"unit one").unwrap();
//! let (seq, bytes) = tx.next_to_send().unwrap();
//! assert_eq!((seq, bytes), (1, &b"unit one"[..]));
//! assert_eq!(rx.accept(seq).unwrap(), Accept::Deliver);
//! // The connection drops before the ack: the receiver states seq 1 and
//! // nothing is sent again.
//! let resend = tx.reconnect(rx.last_received()).unwrap();
//! assert_eq!(resend.messages, 0);
//! assert!(tx.next_to_send().is_none());
//! ```
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod error;
pub mod framer;
pub mod handshake;
#[cfg(feature = "std")]
pub mod offer;
pub mod receive;
pub mod replay;
#[cfg(feature = "std")]
pub mod retry;
pub mod send;
pub mod wire;

pub use error::{BoxError, CompressedError, ResumeError, SessionError};
