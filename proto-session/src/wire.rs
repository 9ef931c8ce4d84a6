//! The session's wire: its fixed header, features, frame and attribute
//! numbers, refusal codes and TLV profiles.

use proto_header::{FixedHeaderFormat, VersionRange};
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
/// Feature: DATA frames may carry their unit compressed with zstd
/// ([`attr::ZSTD_LEN`]). A receiver advertises it when it can decompress;
/// a sender compresses only when asked and the receiver advertised it.
pub const FEATURE_ZSTD: u64 = 1 << 3;
/// Feature: the sender may carry several consecutive units in one
/// [`frame::UNITS`] frame. A receiver advertises it when it reads them; a
/// sender sends them only when the receiver advertised it (plain DATA
/// frames otherwise, one unit each).
pub const FEATURE_UNITS: u64 = 1 << 4;
/// Every feature this implementation knows ([`FEATURE_ZSTD`] only with the
/// crate's `zstd` feature).
#[cfg(feature = "zstd")]
pub const KNOWN_FEATURES: u64 =
    FEATURE_REPLAY | FEATURE_TOKENS | FEATURE_CONTEXTS | FEATURE_ZSTD | FEATURE_UNITS;
/// Every feature this implementation knows ([`FEATURE_ZSTD`] only with the
/// crate's `zstd` feature).
#[cfg(not(feature = "zstd"))]
pub const KNOWN_FEATURES: u64 = FEATURE_REPLAY | FEATURE_TOKENS | FEATURE_CONTEXTS | FEATURE_UNITS;
/// A [`frame::UNITS`] frame carries at most this many units (its
/// [`attr::LENS`] attribute, 4 bytes a unit, stays under 64 KiB).
pub const UNITS_MAX: usize = 16 * 1024 - 1;
/// A sender puts consecutive units into one [`frame::UNITS`] frame while
/// their bytes stay within this; a unit this large or larger goes alone, in
/// a DATA frame.
pub const UNITS_BYTES: usize = 64 * 1024;
/// DATA units shorter than this are never compressed.
pub const COMPRESS_MIN: usize = 512;
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
/// The profile of frames before the handshake completes (payloads of at
/// most [`HANDSHAKE_MAX_PAYLOAD`]).
pub const HANDSHAKE_PROFILE: Profile = Profile {
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
    /// Sender: several consecutive units, the first with its seq
    /// ([`super::FEATURE_UNITS`]).
    pub const UNITS: u16 = 10;

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
            UNITS => "UNITS",
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
    /// DATA, TOKEN, ACK, FINISH: a seq (u64); UNITS: its first unit's.
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
    /// DATA: the unit's length (u64) when [`PAYLOAD`] holds the unit
    /// compressed, as one zstd frame ([`super::FEATURE_ZSTD`]); absent: the
    /// payload is the unit itself. It comes before [`PAYLOAD`] (which runs
    /// to the end of the frame, the only attribute that may be longer
    /// than 64 KiB).
    pub const ZSTD_LEN: u16 = 14;
    /// UNITS: the length of each unit (u32 little-endian each, at least
    /// one, none zero), in order; [`PAYLOAD`] holds the units one after the
    /// other and nothing else. It comes before [`PAYLOAD`].
    pub const LENS: u16 = 15;
    /// DATA: the unit, or its zstd frame ([`ZSTD_LEN`]); UNITS: the units.
    /// Runs to the end of the frame.
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

impl core::fmt::Display for Code {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
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
