//! What ends a session connection: one error type for both roles, every
//! refusal with the [`Code`] it carries on the wire.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
#[cfg(feature = "std")]
use std::io;

use crate::replay::ReplayError;
use proto_checkpoint::TokenError;

use crate::wire::{frame, Code};

/// An error of a stream's own format (a unit refused, a source that failed),
/// kept with its type for the caller to downcast.
pub type BoxError = Box<dyn core::error::Error + Send + Sync>;

/// What ends a session connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The connection failed: connect again and resume (feature `std`).
    #[cfg(feature = "std")]
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
    Resume(#[from] ResumeError),
    /// A checkpoint token did not decode.
    #[error("checkpoint token: {0}")]
    Token(#[from] TokenError),
    /// The sender's stream could not be read or produced (its own error:
    /// `io::Error` or the format's, positioned).
    #[error("source stream: {0}")]
    Source(BoxError),
    /// A unit the receiver got is not a valid stream header or command
    /// (nothing of it was written).
    #[error("unit {seq}: {source}")]
    Unit {
        /// Its seq.
        seq: u64,
        /// What is wrong with it, in the stream format's own terms.
        source: BoxError,
    },
    /// The receiver could not write its output (not retryable; feature
    /// `std`).
    #[cfg(feature = "std")]
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
    /// A compressed DATA frame ([`crate::wire::attr::ZSTD_LEN`]) whose
    /// payload does not decompress to its unit (nothing of it was written).
    #[error("compressed DATA frame (seq {seq}) at byte {offset}: {problem}")]
    Compressed {
        /// Its seq.
        seq: u64,
        /// Its byte offset in the peer's input.
        offset: u64,
        /// What is wrong with it.
        problem: CompressedError,
    },
    /// A UNITS frame ([`crate::wire::frame::UNITS`]) whose unit lengths do
    /// not cut its payload into units (nothing of it was delivered), or
    /// units a sender cannot frame as one.
    #[error("UNITS frame{}: {problem}", at_byte(*offset))]
    Units {
        /// Its byte offset in the peer's input (a frame received).
        offset: Option<u64>,
        /// What is wrong with it.
        problem: &'static str,
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
        match self {
            #[cfg(feature = "std")]
            SessionError::Io(_) => true,
            SessionError::Closed { .. } => true,
            _ => false,
        }
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
            SessionError::Source(_) | SessionError::Unit { .. } => Code::Stream,
            #[cfg(feature = "std")]
            SessionError::Output(_) => Code::Stream,
            SessionError::Refused { code, .. } => *code,
            _ => Code::Protocol,
        }
    }
}

impl SessionError {
    /// The byte offset the error names, where it names one: in the peer's
    /// input for handshake, frame and unexpected-frame errors, in the unit's
    /// stream for [`SessionError::Unit`] when its format's error says so.
    pub fn offset(&self) -> Option<u64> {
        match self {
            SessionError::Closed { offset, .. }
            | SessionError::Unexpected { offset, .. }
            | SessionError::Compressed { offset, .. } => Some(*offset),
            SessionError::Units { offset, .. } => *offset,
            SessionError::Header(e) => e.offset(),
            SessionError::Frame(e) => Some(e.offset()),
            _ => None,
        }
    }
}

/// " at byte N", or nothing.
fn at_byte(offset: Option<u64>) -> String {
    offset.map_or_else(String::new, |o| alloc::format!(" at byte {o}"))
}

/// Why a compressed DATA frame was refused ([`SessionError::Compressed`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompressedError {
    /// This receiver was built without zstd (the crate's `zstd` feature)
    /// and did not advertise [`crate::wire::FEATURE_ZSTD`].
    #[error("this receiver was built without zstd")]
    Unsupported,
    /// The unit length it declares is more than a session carries
    /// ([`crate::wire::MAX_UNIT`]): nothing was decompressed.
    #[error("it declares a unit of {len} bytes, more than the {max} a session carries")]
    TooLong {
        /// The length declared.
        len: u64,
        /// The largest unit.
        max: u64,
    },
    /// zstd refused the payload: not a zstd frame, damaged, or longer than
    /// its declared length once decompressed (decompression stops there).
    #[error("its zstd payload does not decompress to its declared {len} bytes: {message}")]
    Invalid {
        /// The length declared.
        len: u64,
        /// zstd's message.
        message: String,
    },
    /// The payload decompressed to another length than declared.
    #[error("its zstd payload decompresses to {got} bytes, not its declared {len}")]
    Length {
        /// The length declared.
        len: u64,
        /// The length it decompressed to.
        got: u64,
    },
}

/// Why a transfer cannot resume as the receiver asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResumeError {
    /// The receiver asked for other contexts than the transfer it resumes.
    #[error("the selection changed: contexts {was:?} were being sent, {asked:?} were asked for")]
    SelectionChanged {
        /// The contexts being sent.
        was: Vec<u32>,
        /// The contexts asked for now.
        asked: Vec<u32>,
    },
    /// The receiver's checkpoint token decoded but its stream refused it
    /// (another stream, another file, a position that is not a safe point).
    #[error("the token was refused: {0}")]
    TokenRefused(BoxError),
    /// The receiver's token is past the last seq it says it received.
    #[error("the token is at seq {token}, past the last seq received ({received})")]
    TokenAhead {
        /// The token's seq.
        token: u64,
        /// The last seq received.
        received: u64,
    },
    /// The sender has no transfer to continue (it ended or was forgotten).
    #[error("the sender has no transfer to continue")]
    NoTransfer,
    /// The receiver holds part of another stream than the one the sender
    /// offers (a file replaced under the same name, another sender): what
    /// it holds is never continued with another stream's units.
    #[error(
        "the receiver holds part of stream {}, the sender offers stream {}",
        proto_header::stream_id_hex(kept),
        proto_header::stream_id_hex(offered)
    )]
    OtherStream {
        /// The stream id the receiver's units belong to.
        kept: [u8; 16],
        /// The stream id the sender offers.
        offered: [u8; 16],
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each error names the code its refusal carries and, where it has one,
    /// its byte offset.
    #[test]
    fn codes_and_offsets() {
        let tlv = proto_tlv::Error {
            kind: proto_tlv::ErrorKind::CrcMismatch {
                cmd: 5,
                stored: 1,
                computed: 2,
            },
            index: 3,
            offset: 40,
        };
        let cases: Vec<(SessionError, Code, Option<u64>)> = vec![
            (SessionError::Frame(tlv), Code::Protocol, Some(40)),
            (
                SessionError::Header(proto_header::Error::EmptySelection { offset: 7 }),
                Code::Selection,
                Some(7),
            ),
            (
                SessionError::Resume(ResumeError::TokenAhead {
                    token: 5,
                    received: 4,
                }),
                Code::Resume,
                None,
            ),
            (
                SessionError::Resume(ResumeError::SelectionChanged {
                    was: vec![1],
                    asked: vec![2],
                }),
                Code::Resume,
                None,
            ),
            (
                SessionError::Source(Box::new(io::Error::other("disk"))),
                Code::Stream,
                None,
            ),
            (
                SessionError::Closed {
                    during: "in the transfer",
                    offset: 99,
                },
                Code::Protocol,
                Some(99),
            ),
        ];
        for (e, code, offset) in cases {
            assert_eq!(e.code(), code, "{e}");
            assert_eq!(e.offset(), offset, "{e}");
            assert!(!e.to_string().is_empty());
        }
        let e = SessionError::Resume(ResumeError::TokenAhead {
            token: 5,
            received: 4,
        });
        assert_eq!(
            e.to_string(),
            "cannot resume: the token is at seq 5, past the last seq received (4)"
        );
    }
}
