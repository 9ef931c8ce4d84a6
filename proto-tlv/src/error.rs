//! Typed errors: a kind, the command index and the stream byte offset.

use core::fmt;

/// What went wrong. Positions are carried by [`Error`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The input stops inside a command.
    #[error("truncated {what}: {needed} bytes needed, {available} available")]
    Truncated {
        /// The part being read (`"command header"`, `"command payload"`, ...).
        what: &'static str,
        /// Bytes the part needs.
        needed: u64,
        /// Bytes that were there.
        available: u64,
    },
    /// The stored CRC does not match the computed one.
    #[error(
        "CRC mismatch in command type {cmd:#06x}: stored {stored:#010x}, computed {computed:#010x}"
    )]
    CrcMismatch {
        /// The command type as read (may itself be corrupt).
        cmd: u16,
        /// CRC found in the header.
        stored: u32,
        /// CRC computed over header and payload.
        computed: u32,
    },
    /// The declared payload length exceeds the profile's maximum.
    #[error("command type {cmd:#06x} declares {len} payload bytes, more than the maximum {max}")]
    Oversized {
        /// The command type as read.
        cmd: u16,
        /// Declared payload length.
        len: u32,
        /// The profile's maximum.
        max: u32,
    },
    /// An attribute header does not fit in what is left of the payload.
    #[error("attribute header truncated: {needed} bytes needed, {remaining} left in command")]
    AttrHeaderTruncated {
        /// Bytes the header needs.
        needed: u32,
        /// Bytes left in the payload.
        remaining: u32,
    },
    /// An attribute's declared length runs past the end of the payload.
    #[error(
        "attribute type {attr_type} declares {declared} bytes, only {remaining} left in command"
    )]
    AttrOverrun {
        /// The attribute type.
        attr_type: u16,
        /// Declared value length.
        declared: u32,
        /// Bytes left in the payload after the attribute header.
        remaining: u32,
    },
    /// An attribute has the wrong size for its type.
    #[error("attribute type {attr_type} has {actual} bytes, expected {expected}")]
    AttrSize {
        /// The attribute type.
        attr_type: u16,
        /// Size the type requires.
        expected: usize,
        /// Size found.
        actual: usize,
    },
    /// A command lacks an attribute its profile requires.
    #[error("command type {cmd} lacks required attribute type {attr_type}")]
    MissingAttr {
        /// The command type.
        cmd: u16,
        /// The missing attribute type.
        attr_type: u16,
    },
    /// The stream stops without an END command.
    #[error("stream ends without an END command")]
    MissingEnd,
    /// Bytes follow the END command.
    #[error("{len} bytes after the END command")]
    TrailingData {
        /// How many (at least) trailing bytes were seen.
        len: u64,
    },
    /// Encoding: an attribute value is longer than its 16-bit length allows.
    #[error("attribute {attr_type} value of {len} bytes does not fit a 16-bit length")]
    AttrTooLong {
        /// The attribute type.
        attr_type: u16,
        /// Its value length.
        len: usize,
    },
    /// Encoding: an attribute follows the unbounded data attribute.
    #[error("attribute {attr_type} follows the unbounded data attribute, which must be last")]
    AttrAfterData {
        /// The attribute type that came after.
        attr_type: u16,
    },
    /// Encoding: the command does not fit in the caller's buffer. Nothing was
    /// written.
    #[error("command of {needed} bytes does not fit in {available} bytes")]
    DoesNotFit {
        /// Encoded size of the command.
        needed: usize,
        /// Space the caller offered.
        available: usize,
    },
}

impl ErrorKind {
    /// Attaches a position: command `index` (0-based) starting at stream byte
    /// `offset` (or, for attribute errors, the attribute's own offset).
    pub fn at(self, index: u64, offset: u64) -> Error {
        Error {
            kind: self,
            index,
            offset,
        }
    }
}

/// A codec error with its position: the 0-based command index and the byte
/// offset in the stream where the faulty element starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    /// What went wrong.
    pub kind: ErrorKind,
    /// 0-based index of the command concerned.
    pub index: u64,
    /// Stream byte offset of the faulty element.
    pub offset: u64,
}

impl Error {
    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// The byte offset of the faulty element in the stream.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The 0-based index of the command concerned.
    pub fn index(&self) -> u64 {
        self.index
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (command {}, byte offset {})",
            self.kind, self.index, self.offset
        )
    }
}

impl core::error::Error for Error {}
