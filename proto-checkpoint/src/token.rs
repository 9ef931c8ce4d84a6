//! Checkpoint tokens: where an emission stopped, in a form that can be
//! stored, sent, typed on a command line and checked before anything is
//! emitted again.
//!
//! # Wire format, version 1 (packed, little-endian)
//!
//! | offset | field | type | meaning |
//! |---|---|---|---|
//! | 0 | `size` | u32 | total length of the token in bytes, this field and the CRC included |
//! | 4 | `version` | u16 | [`TOKEN_VERSION`] |
//! | 6 | `flags` | u16 | bit 0: the stream has ended; other bits must be 0 |
//! | 8 | `stream_id` | `[u8; 16]` | the stream the token belongs to |
//! | 24 | `seq` | u64 | units completely emitted (the index of the next one) |
//! | 32 | `offset` | u64 | output bytes emitted so far (the stream byte offset reached) |
//! | 40 | `since_safe_point` | u64 | units completed since the producer's last safe point |
//! | 48 | `split_done` | u64 | data bytes of unit `seq` already emitted in split pieces (0: none) |
//! | 56 | `state_len` | u32 | length of the producer state that follows |
//! | 60 | `state` | `[u8; state_len]` | the producer's state at its last safe point |
//! | 60 + `state_len` | `crc` | u32 | standard CRC-32C of every preceding byte |
//!
//! `size` and `version` come first so that a reader can size and route a
//! token before it understands it. The CRC covers every byte before it, and
//! the token must be exactly `size` bytes long, so neither a flipped bit nor
//! a trailing byte goes unnoticed (ZFS's resume-token checksum skips
//! trailing bytes; this one does not). The CRC detects damage, not forgery:
//! a token is not authenticated.
//!
//! The text form is `pstoken:` followed by the bytes in unpadded base64url:
//! one line, no spaces, safe on a command line.

use alloc::string::String;
use alloc::vec::Vec;

use base64::Engine as _;
use zerocopy::byteorder::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The token version this crate writes and reads.
pub const TOKEN_VERSION: u16 = 1;
/// Length of a version-1 token with an empty producer state.
pub const TOKEN_FIXED_LEN: usize = size_of::<TokenHeader>() + 4;
/// The largest producer state a token carries. A longer state is refused
/// when encoding and when decoding, before anything is allocated.
pub const MAX_STATE_LEN: usize = 4096;
/// The largest token, in bytes.
pub const MAX_TOKEN_LEN: usize = TOKEN_FIXED_LEN + MAX_STATE_LEN;
/// Prefix of the text form.
pub const TEXT_PREFIX: &str = "pstoken:";

const FLAG_ENDED: u16 = 1;

/// The fixed part of a version-1 token, before the producer state.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
struct TokenHeader {
    size: U32,
    version: U16,
    flags: U16,
    stream_id: [u8; 16],
    seq: U64,
    offset: U64,
    since_safe_point: U64,
    split_done: U64,
    state_len: U32,
}
const _: () = assert!(size_of::<TokenHeader>() == 60);

/// A decoded checkpoint token. See the [module documentation](self) for the
/// wire format.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Token {
    /// The stream this token belongs to.
    pub stream_id: [u8; 16],
    /// Units completely emitted: the index of the next one.
    pub seq: u64,
    /// Output bytes emitted so far.
    pub offset: u64,
    /// Units completed since the producer's last safe point.
    pub since_safe_point: u64,
    /// Data bytes of unit `seq` already emitted in split pieces.
    pub split_done: u64,
    /// Whether the whole stream has been emitted.
    pub ended: bool,
    /// The producer's state at its last safe point (at most
    /// [`MAX_STATE_LEN`] bytes).
    pub state: Vec<u8>,
}

/// Why a token was refused. Nothing is emitted from a refused token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Fewer bytes than the token needs.
    #[error("truncated checkpoint token: {needed} bytes needed, {available} available")]
    Truncated {
        /// Bytes needed (4 until `size` can be read, then `size`).
        needed: u64,
        /// Bytes there.
        available: u64,
    },
    /// More bytes than the token's `size` says.
    #[error("checkpoint token of {size} bytes is followed by {extra} more bytes")]
    TrailingBytes {
        /// The declared size.
        size: u64,
        /// Bytes past it.
        extra: u64,
    },
    /// The CRC does not match: the token was damaged.
    #[error("corrupt checkpoint token: CRC stored {stored:#010x}, computed {computed:#010x}")]
    Corrupt {
        /// CRC in the token.
        stored: u32,
        /// CRC of the bytes.
        computed: u32,
    },
    /// A version this crate does not read.
    #[error(
        "checkpoint token version {found} is not supported (this build reads version {supported})"
    )]
    UnknownVersion {
        /// The version found.
        found: u16,
        /// The version this crate reads.
        supported: u16,
    },
    /// The token belongs to another stream.
    #[error("checkpoint token is for stream {found}, not for this stream ({expected})", found = proto_header::stream_id_hex(.found), expected = proto_header::stream_id_hex(.expected))]
    WrongStream {
        /// This stream's id.
        expected: [u8; 16],
        /// The id in the token.
        found: [u8; 16],
    },
    /// A field holds a value that cannot be right.
    #[error("checkpoint token field `{field}` is out of range: {value} ({why})")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// What it should be.
        why: &'static str,
    },
    /// The text form is malformed.
    #[error("checkpoint token text is malformed at character {position}: {why}")]
    BadText {
        /// 0-based character position in the text.
        position: usize,
        /// What is wrong there.
        why: &'static str,
    },
}

fn out_of_range(field: &'static str, value: u64, why: &'static str) -> TokenError {
    TokenError::OutOfRange { field, value, why }
}

impl Token {
    /// A token at the very start of stream `stream_id`, with the producer's
    /// initial state.
    pub fn start(stream_id: [u8; 16], state: Vec<u8>) -> Token {
        Token {
            stream_id,
            seq: 0,
            offset: 0,
            since_safe_point: 0,
            split_done: 0,
            ended: false,
            state,
        }
    }

    /// Encoded length in bytes.
    pub fn encoded_len(&self) -> usize {
        TOKEN_FIXED_LEN + self.state.len()
    }

    /// The wire form. Fails only when a field is out of range (see
    /// [`Token::check`]), a state longer than [`MAX_STATE_LEN`] included.
    pub fn to_bytes(&self) -> Result<Vec<u8>, TokenError> {
        self.check()?;
        let size = self.encoded_len();
        let header = TokenHeader {
            size: U32::new(size as u32),
            version: U16::new(TOKEN_VERSION),
            flags: U16::new(if self.ended { FLAG_ENDED } else { 0 }),
            stream_id: self.stream_id,
            seq: U64::new(self.seq),
            offset: U64::new(self.offset),
            since_safe_point: U64::new(self.since_safe_point),
            split_done: U64::new(self.split_done),
            state_len: U32::new(self.state.len() as u32),
        };
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(&self.state);
        let crc = proto_crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    /// Reads a token. Checks, in order: that `size` can be read and is
    /// plausible, that the input is exactly `size` bytes, the CRC, the
    /// version, then every field.
    pub fn from_bytes(bytes: &[u8]) -> Result<Token, TokenError> {
        let available = bytes.len() as u64;
        let Some(size) = bytes.first_chunk::<4>().map(|b| u32::from_le_bytes(*b)) else {
            return Err(TokenError::Truncated {
                needed: 4,
                available,
            });
        };
        let size = u64::from(size);
        if size < 10 {
            return Err(out_of_range(
                "size",
                size,
                "too small to hold size, version and CRC",
            ));
        }
        if size > MAX_TOKEN_LEN as u64 {
            return Err(out_of_range(
                "size",
                size,
                "larger than any token (64 bytes + at most 4096 bytes of state)",
            ));
        }
        if available < size {
            return Err(TokenError::Truncated {
                needed: size,
                available,
            });
        }
        if available > size {
            return Err(TokenError::TrailingBytes {
                size,
                extra: available - size,
            });
        }
        // `size` (>= 10) bytes are there: split off the CRC.
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        let computed = proto_crc32c::crc32c(body);
        if stored != computed {
            return Err(TokenError::Corrupt { stored, computed });
        }
        let version = u16::from_le_bytes([body[4], body[5]]);
        if version != TOKEN_VERSION {
            return Err(TokenError::UnknownVersion {
                found: version,
                supported: TOKEN_VERSION,
            });
        }
        let Ok((h, state)) = TokenHeader::ref_from_prefix(body) else {
            return Err(out_of_range(
                "size",
                size,
                "a version-1 token has at least 64 bytes",
            ));
        };
        let flags = h.flags.get();
        if flags & !FLAG_ENDED != 0 {
            return Err(out_of_range(
                "flags",
                u64::from(flags),
                "only bit 0 (ended) is defined",
            ));
        }
        let state_len = h.state_len.get();
        if state_len as usize != state.len() {
            return Err(out_of_range(
                "state_len",
                u64::from(state_len),
                "must be the token size minus 64",
            ));
        }
        let token = Token {
            stream_id: h.stream_id,
            seq: h.seq.get(),
            offset: h.offset.get(),
            since_safe_point: h.since_safe_point.get(),
            split_done: h.split_done.get(),
            ended: flags & FLAG_ENDED != 0,
            state: state.to_vec(),
        };
        token.check()?;
        Ok(token)
    }

    /// Checks the relations between fields that any token satisfies (the
    /// emitter checks the rest against the stream when it is re-armed).
    pub fn check(&self) -> Result<(), TokenError> {
        if self.state.len() > MAX_STATE_LEN {
            return Err(out_of_range(
                "state_len",
                self.state.len() as u64,
                "at most 4096 bytes",
            ));
        }
        if self.since_safe_point > self.seq {
            return Err(out_of_range(
                "since_safe_point",
                self.since_safe_point,
                "more units since the safe point than emitted in all",
            ));
        }
        if self.ended && self.split_done != 0 {
            return Err(out_of_range(
                "split_done",
                self.split_done,
                "an ended stream has no unit in progress",
            ));
        }
        // Every unit is at least one byte long, and so is every piece.
        if self.seq > self.offset || (self.split_done > 0 && self.seq >= self.offset) {
            return Err(out_of_range(
                "seq",
                self.seq,
                "more units than bytes emitted",
            ));
        }
        if self.split_done > self.offset {
            return Err(out_of_range(
                "split_done",
                self.split_done,
                "more data bytes than bytes emitted",
            ));
        }
        Ok(())
    }

    /// Refuses the token unless it belongs to stream `expected`.
    pub fn check_stream(&self, expected: &[u8; 16]) -> Result<(), TokenError> {
        if &self.stream_id != expected {
            return Err(TokenError::WrongStream {
                expected: *expected,
                found: self.stream_id,
            });
        }
        Ok(())
    }

    /// The one-line text form: `pstoken:` + unpadded base64url.
    pub fn to_text(&self) -> Result<String, TokenError> {
        let bytes = self.to_bytes()?;
        let mut s = String::with_capacity(TEXT_PREFIX.len() + bytes.len().div_ceil(3) * 4);
        s.push_str(TEXT_PREFIX);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(&bytes, &mut s);
        Ok(s)
    }

    /// Reads the text form. Surrounding whitespace (a trailing newline from
    /// a file) is ignored; anything else that is not base64url is refused
    /// with its position.
    pub fn from_text(text: &str) -> Result<Token, TokenError> {
        // Positions count characters (leading whitespace may not be ASCII).
        let lead = text[..text.len() - text.trim_start().len()].chars().count();
        let t = text.trim();
        let Some(b64) = t.strip_prefix(TEXT_PREFIX) else {
            return Err(TokenError::BadText {
                position: lead,
                why: "does not start with `pstoken:`",
            });
        };
        let base = lead + TEXT_PREFIX.len();
        // Bound the work before decoding: no token is longer than this. The
        // position is a character's: more bytes than that but no more
        // characters means a character that is not ASCII, found below.
        let max_chars = MAX_TOKEN_LEN.div_ceil(3) * 4;
        if b64.len() > max_chars && b64.chars().nth(max_chars).is_some() {
            return Err(TokenError::BadText {
                position: base + max_chars,
                why: "longer than any token",
            });
        }
        // The first character outside the alphabet, by its character
        // position: the decoder gives byte offsets, and with 4k + 1 bytes
        // it reports a bad last byte before any other.
        let alphabet = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if let Some((i, c)) = b64.chars().enumerate().find(|&(_, c)| !alphabet(c)) {
            return Err(TokenError::BadText {
                position: base + i,
                why: if c == '=' {
                    "padding is not used"
                } else {
                    "not a base64url character"
                },
            });
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(b64)
            .map_err(|e| {
                let (position, why) = match e {
                    base64::DecodeError::InvalidByte(at, _) => (at, "not a base64url character"),
                    base64::DecodeError::InvalidLength(at) => (at, "impossible base64 length"),
                    base64::DecodeError::InvalidLastSymbol(at, _) => {
                        (at, "last base64 character has stray bits")
                    }
                    base64::DecodeError::InvalidPadding => (b64.len(), "padding is not used"),
                };
                TokenError::BadText {
                    position: base + position,
                    why,
                }
            })?;
        Token::from_bytes(&bytes)
    }
}

impl core::fmt::Display for Token {
    /// The text form; a token that fails [`Token::check`] shows as
    /// `pstoken:<invalid: …>`.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.to_text() {
            Ok(t) => f.write_str(&t),
            Err(e) => write!(f, "{TEXT_PREFIX}<invalid: {e}>"),
        }
    }
}

impl core::str::FromStr for Token {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<Token, TokenError> {
        Token::from_text(s)
    }
}
