//! Typed errors, each carrying the byte offset where it was found.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::negotiate::VersionRange;

/// Everything that can go wrong while reading or negotiating a header.
///
/// Offsets are byte offsets from the start of the input the caller handed
/// in (plus the `base` offset the caller supplied, where a function takes
/// one).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input stops before the part being read is complete.
    #[error(
        "truncated {what} at byte offset {offset}: {needed} bytes needed, {available} available"
    )]
    Truncated {
        /// The part being read (`"fixed header"`, `"version header"`, ...).
        what: &'static str,
        /// Where the part starts.
        offset: u64,
        /// Bytes the part needs.
        needed: u64,
        /// Bytes that were there.
        available: u64,
    },
    /// The magic bytes are not the expected ones.
    #[error("bad magic at byte offset {offset}: found \"{}\", expected \"{}\"", .found.escape_ascii(), .expected.escape_ascii())]
    BadMagic {
        /// Where the magic starts.
        offset: u64,
        /// The bytes found.
        found: Vec<u8>,
        /// The bytes expected.
        expected: Vec<u8>,
    },
    /// `compat_version` is greater than `version`.
    #[error("compat_version {compat_version} is greater than version {version} (fixed header at byte offset {offset})")]
    CompatAboveVersion {
        /// Where the fixed header starts.
        offset: u64,
        /// The version field.
        version: u32,
        /// The compat_version field.
        compat_version: u32,
    },
    /// No supported version lies in the range the writer offered.
    #[error("unsupported: the stream offers versions {offered}, this reader supports {}", fmt_set(.supported))]
    Unsupported {
        /// `[compat_version, version]` of the writer.
        offered: VersionRange,
        /// The reader's supported versions, sorted, without duplicates.
        supported: Vec<u32>,
    },
    /// Two peers' version ranges do not overlap.
    #[error("no common version: ours are {ours}, theirs are {theirs}")]
    NoCommonVersion {
        /// Our range.
        ours: VersionRange,
        /// The peer's range.
        theirs: VersionRange,
    },
    /// A version range whose lower end is above its upper end.
    #[error("empty version range: {min} > {max}")]
    EmptyRange {
        /// Lower end.
        min: u32,
        /// Upper end.
        max: u32,
    },
    /// The version table has no entry for this version.
    #[error("no version table entry for version {version}")]
    NoTableEntry {
        /// The version looked up.
        version: u32,
    },
    /// A length prefix declares more bytes than the format allows.
    #[error("{what} at byte offset {offset} declares {len} bytes, more than the maximum {max}")]
    TooLong {
        /// The part being read.
        what: &'static str,
        /// Where its length field is.
        offset: u64,
        /// Declared length.
        len: u64,
        /// Largest length allowed.
        max: u64,
    },
    /// The endian tag is neither `0x12345678` big- nor little-endian.
    #[error("bad endian tag at byte offset {offset}: found {found:02x?}, expected 0x12345678 in either byte order")]
    BadEndianTag {
        /// Where the tag is.
        offset: u64,
        /// The four bytes found.
        found: [u8; 4],
    },
    /// The writer requires features this reader does not know.
    #[error("unknown required features {unknown:#018x} (required {required:#018x}, known {known:#018x}) at byte offset {offset}")]
    UnknownRequiredFeatures {
        /// Where the required-features field is.
        offset: u64,
        /// The required bits this reader does not know.
        unknown: u64,
        /// Every required bit.
        required: u64,
        /// The bits this reader knows.
        known: u64,
    },
    /// A count field declares more items than allowed.
    #[error("{what} count {count} at byte offset {offset} exceeds the maximum {max}")]
    TooMany {
        /// What is being counted.
        what: &'static str,
        /// Where the count is.
        offset: u64,
        /// Declared count.
        count: u64,
        /// Largest count allowed.
        max: u64,
    },
    /// A context name is not UTF-8.
    #[error("context name at byte offset {offset} is not UTF-8")]
    NameNotUtf8 {
        /// Where the name starts.
        offset: u64,
    },
    /// The same context id is advertised twice.
    #[error("context id {id} advertised twice (byte offset {offset})")]
    DuplicateAdvertisedContext {
        /// Where the second occurrence is.
        offset: u64,
        /// The id.
        id: u32,
    },
    /// A context selection asks for no context.
    #[error("empty context selection at byte offset {offset}")]
    EmptySelection {
        /// Where the selection's length field is.
        offset: u64,
    },
    /// A context selection's payload length is not a multiple of 4.
    #[error("context selection at byte offset {offset} has {len} bytes, not a multiple of 4")]
    SelectionLenNotMultipleOf4 {
        /// Where the selection's length field is.
        offset: u64,
        /// The declared length.
        len: u32,
    },
    /// A context selection asks for more ids than were negotiated.
    #[error("context selection at byte offset {offset} has {count} ids, more than the {negotiated} negotiated")]
    SelectionTooLong {
        /// Where the selection's length field is.
        offset: u64,
        /// Ids in the selection.
        count: u64,
        /// Contexts negotiated.
        negotiated: u64,
    },
    /// A context selection names an id that was not negotiated.
    #[error("context id {id} at byte offset {offset} was not negotiated")]
    UnknownContext {
        /// Where the id is.
        offset: u64,
        /// The id.
        id: u32,
    },
    /// A context selection names the same id twice.
    #[error("context id {id} at byte offset {offset} is selected twice")]
    DuplicateContext {
        /// Where the second occurrence is.
        offset: u64,
        /// The id.
        id: u32,
    },
    /// Encoding: a value does not fit its wire field.
    #[error("cannot encode {what}: {len} exceeds the maximum {max}")]
    EncodeTooLong {
        /// What was being encoded.
        what: &'static str,
        /// Its size or count.
        len: u64,
        /// The maximum.
        max: u64,
    },
}

impl Error {
    /// The byte offset the error names, where it names one (negotiation
    /// and encoding errors name none).
    pub fn offset(&self) -> Option<u64> {
        use Error as E;
        match self {
            E::Truncated { offset, .. }
            | E::BadMagic { offset, .. }
            | E::CompatAboveVersion { offset, .. }
            | E::TooLong { offset, .. }
            | E::BadEndianTag { offset, .. }
            | E::UnknownRequiredFeatures { offset, .. }
            | E::TooMany { offset, .. }
            | E::NameNotUtf8 { offset }
            | E::DuplicateAdvertisedContext { offset, .. }
            | E::EmptySelection { offset }
            | E::SelectionLenNotMultipleOf4 { offset, .. }
            | E::SelectionTooLong { offset, .. }
            | E::UnknownContext { offset, .. }
            | E::DuplicateContext { offset, .. } => Some(*offset),
            E::Unsupported { .. }
            | E::NoCommonVersion { .. }
            | E::EmptyRange { .. }
            | E::NoTableEntry { .. }
            | E::EncodeTooLong { .. } => None,
        }
    }
}

fn fmt_set(s: &[u32]) -> String {
    let mut out = String::from("{");
    for (i, v) in s.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&v.to_string());
    }
    out.push('}');
    out
}
