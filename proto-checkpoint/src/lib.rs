//! # proto-checkpoint: checkpoints, resumable emission, comparison
//!
//! A stream that breaks must resume where it stopped, not from zero. This
//! crate holds the pieces, sans-IO, on top of [`proto_tlv`]:
//!
//! - [`Format`]: one description of a family of streams (its fixed
//!   header, stream header and profile, split rule, what receivers check,
//!   its contexts), and [`FormatProducer`], the producer over a stream file
//!   of any format. `proto-btrfs` implements it for btrfs send streams;
//!   [`native::NativeFormat`] for any native format, the kit's own
//!   `PRSTREAM` ([`native::PRSTREAM`]) among them, with a generic
//!   [`native::Reader`]/[`native::Writer`].
//! - [`Units`]: a cursor over the units of a stream (stream headers and TLV
//!   commands), over memory ([`Commands`]) or a stream file of any format
//!   ([`FormatUnits`]); what [`compare`] walks.
//! - [`Producer`]: units with *safe points*, where its state can be written down as bytes. Between
//!   safe points it cannot checkpoint, so a re-armed producer regenerates
//!   the units since its last safe point and skips them (the design of the
//!   btrfs send-with-checkpoint patch).
//! - [`Emitter`]: fills caller buffers with whole units. A data command that
//!   does not fit is split by the profile's [`Split`] rule into valid
//!   commands (for btrfs `WRITE`: pieces with adjusted file offsets); no
//!   other command is ever split, and a buffer too small for one is an
//!   error. Every fill returns the bytes written, a [`Token`] and whether
//!   the stream ended; [`Emitter::resume`] re-arms from a token.
//! - [`Source`]: random access to the bytes of a stream, over memory, a
//!   file ([`FileSource`]) or selected byte ranges of another ([`Spans`]).
//! - [`Token`]: versioned, size-prefixed, little-endian, CRC-checked over
//!   every byte, bound to its stream, with a one-line text form.
//! - [`compare`]: two streams are equal when they carry the same commands,
//!   however their data commands were split; the first divergence names
//!   the command index, path, file offset and byte offset.
//!
//! Without its default `std` feature the crate is `no_std` (it needs
//! `alloc`); what reads or writes through std I/O is missing: [`Source`]
//! and what takes one ([`FormatProducer`], [`FormatUnits`],
//! [`list_streams`], `Format::units`/`producer`), [`ReadProducer`], the
//! native [`Reader`](native::Reader)/[`Writer`](native::Writer).
//!
//! ```
//! use proto_checkpoint::{compare, Commands, CommandsProducer, DataSplit, Emitter, Outcome, Token};
//! use proto_tlv::{encode_command, AttrValue, CrcVariant, Profile, Value};
//!
//! // A stream of three commands: a 100-byte write, a chmod, END.
//! let profile = Profile { crc: CrcVariant::BtrfsRaw, max_payload_len: 1 << 16,
//!                         unbounded_data_attr: Some(19), end_cmd: 21 };
//! let mut stream = Vec::new();
//! encode_command(&profile, 15, &[AttrValue::new(15, Value::Bytes(b"file")),
//!     AttrValue::new(18, Value::U64(4096)), AttrValue::new(19, Value::Bytes(&[7; 100]))],
//!     &mut stream).unwrap();
//! encode_command(&profile, 20, &[AttrValue::new(15, Value::Bytes(b"file")),
//!     AttrValue::new(6, Value::U64(0o644))], &mut stream).unwrap();
//! encode_command(&profile, 21, &[], &mut stream).unwrap();
//!
//! let write = DataSplit { cmd: 15, offset_attr: 18, data_attr: 19, path_attr: Some(15) };
//! let id = [42; 16];
//! let mut emitter = Emitter::new(CommandsProducer::new(&stream, profile, id, 1), write).unwrap();
//!
//! // 64-byte buffers: the write goes out in pieces. Stop after the first
//! // fill, as a crash would, keeping only its token (as text).
//! let mut out = Vec::new();
//! let mut buf = [0u8; 64];
//! let fill = emitter.fill(&mut buf).unwrap();
//! out.extend_from_slice(&buf[..fill.written]);
//! let saved = emitter.token().to_text().unwrap();
//! drop(emitter);
//!
//! // Later: re-arm from the token and finish.
//! let token: Token = saved.parse().unwrap();
//! let producer = CommandsProducer::new(&stream, profile, id, 1);
//! let mut emitter = Emitter::resume(producer, write, &token).unwrap();
//! loop {
//!     let fill = emitter.fill(&mut buf).unwrap();
//!     out.extend_from_slice(&buf[..fill.written]);
//!     if fill.ended { break; }
//! }
//!
//! // Cut differently, the same commands.
//! assert_ne!(out, stream);
//! let mut a = Commands::new(&stream, profile);
//! let mut b = Commands::new(&out, profile);
//! assert!(matches!(compare(&mut a, &mut b, &write).unwrap(), Outcome::Equal { .. }));
//!
//! // A token for another stream is refused, and nothing is emitted.
//! let other = CommandsProducer::new(&stream, profile, [7; 16], 1);
//! assert!(Emitter::resume(other, write, &token).is_err());
//! ```
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

mod compare;
mod emitter;
mod format;
#[cfg(feature = "std")]
mod live;
pub mod native;
mod producer;
#[cfg(feature = "std")]
mod source;
mod split;
#[cfg(feature = "std")]
mod stream;
pub mod token;

pub use compare::{compare, At, CompareError, Divergence, DivergenceKind, Outcome, Side};
pub use emitter::{EmitError, Emitter, Fill, RearmError};
pub use format::{Fault, Format, Head, StreamHead, Validator, ValidatorState};
#[cfg(feature = "std")]
pub use live::ReadProducer;
pub use producer::{Commands, CommandsError, CommandsProducer, Producer, Unit, UnitKind, Units};
#[cfg(feature = "std")]
pub use source::{FileSource, Source, Spans, READ_AHEAD};
pub use split::{DataLayout, DataSplit, Split};
#[cfg(feature = "std")]
pub use stream::{contexts, list_streams, FormatProducer, FormatUnits, StreamSpan};
pub use token::{Token, TokenError};
