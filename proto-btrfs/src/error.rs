//! Errors of the btrfs profile.

use proto_tlv::{ErrorKind, ReadError};

/// An error reading, checking or dumping a btrfs send stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A stream header does not start with `btrfs-stream\0`.
    #[error(
        "not a btrfs send stream: magic is {} (expected \"btrfs-stream\\0\") at byte offset {offset}",
        quoted(found)
    )]
    BadMagic {
        /// The 13 bytes found.
        found: [u8; 13],
        /// Stream offset of the header (0 for the first stream).
        offset: u64,
    },
    /// A stream header declares a version this crate does not read (the
    /// negotiation's own error, from `proto-header`, inside).
    #[error("unsupported stream version {version} at byte offset {offset}: {source}")]
    Version {
        /// The version declared.
        version: u32,
        /// Stream offset of the version field.
        offset: u64,
        /// Why `proto-header`'s negotiation refused it.
        #[source]
        source: proto_header::Error,
    },
    /// A stream header error not covered above, from `proto-header`.
    #[error(transparent)]
    Header(proto_header::Error),
    /// A framing, CRC or attribute error, with its position.
    #[error(transparent)]
    Tlv(#[from] proto_tlv::Error),
    /// Reading failed.
    #[error("read failed at byte offset {offset}: {source}")]
    Io {
        /// Stream offset reached.
        offset: u64,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Command type 0 (`unspec`), which no btrfs version sends. With the raw
    /// CRC of btrfs, ten zero bytes pass the CRC check, so this is how
    /// zero-filled corruption shows.
    #[error("command type 0 (unspec) is never valid, zero-filled data? (command {index}, byte offset {offset})")]
    UnspecCommand {
        /// Command index.
        index: u64,
        /// Stream offset of the command.
        offset: u64,
    },
    /// A checkpoint token's producer state does not fit this stream.
    #[error("checkpoint state refused: {why}")]
    State {
        /// What is wrong with it.
        why: &'static str,
    },
    /// The dump cannot print this command as btrfs-progs would.
    #[error("cannot dump command {index} at byte offset {offset}: {reason}")]
    Dump {
        /// Command index.
        index: u64,
        /// Stream offset of the command.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}

impl Clone for Error {
    /// I/O errors are cloned as their kind and message.
    fn clone(&self) -> Self {
        match self {
            Error::BadMagic { found, offset } => Error::BadMagic {
                found: *found,
                offset: *offset,
            },
            Error::Tlv(e) => Error::Tlv(e.clone()),
            Error::Header(e) => Error::Header(e.clone()),
            Error::Version {
                version,
                offset,
                source,
            } => Error::Version {
                version: *version,
                offset: *offset,
                source: source.clone(),
            },
            Error::Io { offset, source } => Error::Io {
                offset: *offset,
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            Error::State { why } => Error::State { why },
            Error::UnspecCommand { index, offset } => Error::UnspecCommand {
                index: *index,
                offset: *offset,
            },
            Error::Dump {
                index,
                offset,
                reason,
            } => Error::Dump {
                index: *index,
                offset: *offset,
                reason: reason.clone(),
            },
        }
    }
}

impl Error {
    /// Moves a header error found at offset 0 of a header to the stream
    /// offset `base` where that header starts.
    pub(crate) fn header_at(self, base: u64) -> Self {
        match self {
            Error::Tlv(t) => Error::Tlv(t.kind.at(0, base + t.offset)),
            Error::BadMagic { found, offset } => Error::BadMagic {
                found,
                offset: base + offset,
            },
            Error::Version {
                version,
                offset,
                source,
            } => Error::Version {
                version,
                offset: base + offset,
                source,
            },
            other => other,
        }
    }

    /// Stream byte offset of the fault, where known.
    pub fn offset(&self) -> Option<u64> {
        match self {
            Error::BadMagic { offset, .. }
            | Error::Version { offset, .. }
            | Error::Io { offset, .. }
            | Error::UnspecCommand { offset, .. }
            | Error::Dump { offset, .. } => Some(*offset),
            Error::Tlv(t) => Some(t.offset),
            Error::Header(_) | Error::State { .. } => None,
        }
    }

    /// Index of the command concerned, where there is one.
    pub fn command_index(&self) -> Option<u64> {
        match self {
            Error::Tlv(t) => Some(t.index),
            Error::UnspecCommand { index, .. } | Error::Dump { index, .. } => Some(*index),
            Error::BadMagic { .. }
            | Error::Version { .. }
            | Error::Io { .. }
            | Error::Header(_)
            | Error::State { .. } => None,
        }
    }

    /// The TLV error kind, when this is one.
    pub fn tlv_kind(&self) -> Option<&ErrorKind> {
        match self {
            Error::Tlv(e) => Some(&e.kind),
            _ => None,
        }
    }
}

impl From<ReadError> for Error {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Decode(e) => Error::Tlv(e),
            ReadError::Io { offset, source } => Error::Io { offset, source },
            _ => Error::Io {
                offset: 0,
                source: std::io::Error::other(e.to_string()),
            },
        }
    }
}

/// Bytes (a path, a name) as a quoted string with C escapes, for
/// messages: `"a\\x00b"`.
pub fn quoted(bytes: &[u8]) -> String {
    let mut s = String::from("\"");
    for b in bytes {
        s.extend(core::ascii::escape_default(*b).map(char::from));
    }
    s.push('"');
    s
}
