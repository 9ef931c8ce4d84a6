//! Native streams: a reusable description of a versioned TLV stream
//! format ([`NativeFormat`]), its [`Format`] implementation, and a
//! [`Writer`]/[`Reader`] over `std::io` for any such format. The kit's own
//! `PRSTREAM` format is one value of it ([`PRSTREAM`]); an application
//! describes its own (its magic, version table, profile, data commands)
//! and gets chunking, resume, compare and sessions without copying code.
//!
//! A native stream is, in order:
//!
//! 1. the 16-byte fixed header (the format's magic, then version and
//!    compat_version as u32 big-endian);
//! 2. the length-prefixed version-specific header of the negotiated
//!    version, read through the format's [`VersionTable`] (a reader skips
//!    what a newer compatible writer appended);
//! 3. TLV commands of the format's profile (for `PRSTREAM`: standard
//!    CRC-32C, payloads of at most [`NATIVE_MAX_PAYLOAD`] bytes, the data
//!    attribute [`NATIVE_DATA`] unbounded);
//! 4. an END command of the profile's END type, with no attributes, after
//!    which nothing follows (native streams do not concatenate).
//!
//! Errors ([`Error`]) name the byte offset, and for commands the 0-based
//! command index.
//!
//! # Adding header fields in a later version
//!
//! The version-specific header is length-prefixed and every version's
//! reader ignores what follows the fields it knows. A version 2 that appends
//! fields writes the v1 body followed by them, with compat_version 1: a v1
//! reader reads it as v1. Its own reader gets the appended bytes with
//! [`Reader::header_extension`] (everything after the fields of the
//! negotiated entry's body decoder, found by re-encoding them), so no
//! superset struct is needed per version: the application decodes its
//! appended fields from those bytes (see `examples/migration.rs`).
//!
//! ```
//! use proto_checkpoint::native::{Reader, Writer, PRSTREAM};
//! use proto_header::{Context, Endian, ReadOptions, V1Header};
//! use proto_tlv::{AttrValue, Value};
//!
//! let header = V1Header {
//!     byte_order: Endian::Little,
//!     features_supported: 0b1,
//!     features_required: 0b1,
//!     stream_id: [0xab; 16],
//!     contexts: vec![Context { id: 1, name: "base".into() }],
//! };
//! let mut w = Writer::v1(Vec::new(), &header).unwrap();
//! w.write_command(1, &[AttrValue::new(1, Value::Bytes(b"hello"))]).unwrap();
//! let bytes = w.finish().unwrap();
//!
//! let mut r = Reader::new(&bytes[..], ReadOptions { known_features: 0b1 }).unwrap();
//! assert_eq!((r.version(), r.header()), (1, &header));
//! let cmd = r.next_command().unwrap().unwrap();
//! assert_eq!(cmd.cmd(), 1);
//! assert_eq!(cmd.attr(1).unwrap().value(), b"hello");
//! assert!(r.next_command().unwrap().unwrap().is_end());
//! assert!(r.next_command().unwrap().is_none());
//! assert_eq!(PRSTREAM.name, "native");
//! ```

#[cfg(feature = "std")]
use std::io::{self, Read, Write};

#[cfg(feature = "std")]
use proto_header::{write_header, ParsedFixed, VersionEntry};
use proto_header::{
    FixedHeaderFormat, ReadOptions, V1Header, VersionTable, KIT_VERSIONS, LEN_PREFIX,
};
#[cfg(feature = "std")]
use proto_tlv::{encode_command, AttrValue, Command, ReadDecoder, ReadError};
use proto_tlv::{CrcVariant, Profile};

use crate::format::{Fault, Format, Head, StreamHead};
use crate::split::DataSplit;

/// The magic of the kit's own native streams.
pub const NATIVE_MAGIC: &[u8; 8] = b"PRSTREAM";
/// The command type that ends a `PRSTREAM` stream (reserved: no other
/// command may use it). It carries no attributes.
pub const NATIVE_END: u16 = 0xFFFF;
/// Largest `PRSTREAM` command payload (bytes after the 10-byte command
/// header): 16 MiB.
pub const NATIVE_MAX_PAYLOAD: u32 = 16 * 1024 * 1024;
/// `PRSTREAM`'s data command: bytes of an object (attribute
/// [`NATIVE_OBJECT`]) at a position in it ([`NATIVE_OFFSET`], u64), the
/// bytes in [`NATIVE_DATA`]. Chunking splits it into data commands with the
/// position advanced; no other command is split.
pub const NATIVE_DATA_CMD: u16 = 0xFFFE;
/// Attribute: the object a data command writes to.
pub const NATIVE_OBJECT: u16 = 0x7FFD;
/// Attribute: the position (u64) of a data command's first byte.
pub const NATIVE_OFFSET: u16 = 0x7FFE;
/// Attribute: a data command's bytes. It has no length field: it is the
/// last attribute and runs to the end of its command, so a data command
/// may carry up to [`NATIVE_MAX_PAYLOAD`] bytes.
pub const NATIVE_DATA: u16 = 0x7FFF;
/// The TLV profile of `PRSTREAM` streams: standard CRC-32C,
/// [`NATIVE_DATA`] unbounded, [`NATIVE_MAX_PAYLOAD`], END =
/// [`NATIVE_END`].
pub const NATIVE_PROFILE: Profile = Profile {
    crc: CrcVariant::Standard,
    max_payload_len: NATIVE_MAX_PAYLOAD,
    unbounded_data_attr: Some(NATIVE_DATA),
    end_cmd: NATIVE_END,
};
/// The split rule of `PRSTREAM`'s data command.
pub const NATIVE_SPLIT: DataSplit = DataSplit {
    cmd: NATIVE_DATA_CMD,
    offset_attr: NATIVE_OFFSET,
    data_attr: NATIVE_DATA,
    path_attr: Some(NATIVE_OBJECT),
};

/// A native stream format: everything that tells one application's
/// streams from another's. A `const` of this type is a complete format:
/// [`Format`] is implemented for it, and [`Reader`]/[`Writer`] take it.
#[derive(Clone, Copy, Debug)]
pub struct NativeFormat {
    /// A short name, for messages.
    pub name: &'static str,
    /// The fixed header (`FixedHeaderFormat::native(magic)`).
    pub fixed: FixedHeaderFormat,
    /// One entry per version: the version-specific header of each.
    pub versions: &'static VersionTable<V1Header>,
    /// The TLV profile of its commands (its END type included).
    pub profile: Profile,
    /// Its data command, if it has one: the only command chunking splits.
    pub split: Option<DataSplit>,
    /// Feature bits producers and validators of this format accept in a
    /// stream's required features (they carry streams, they do not
    /// interpret them; a [`Reader`] takes its own).
    pub known_features: u64,
}

/// The kit's own native format: magic [`NATIVE_MAGIC`], [`KIT_VERSIONS`],
/// [`NATIVE_PROFILE`], data command [`NATIVE_SPLIT`].
pub const PRSTREAM: NativeFormat = NativeFormat {
    name: "native",
    fixed: FixedHeaderFormat::native(NATIVE_MAGIC),
    versions: &KIT_VERSIONS,
    profile: NATIVE_PROFILE,
    split: Some(NATIVE_SPLIT),
    known_features: u64::MAX,
};

/// What can go wrong reading or writing a native stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The fixed or version-specific header is invalid, or no version can be
    /// agreed on (offsets inside).
    #[error("stream header: {0}")]
    Header(#[from] proto_header::Error),
    /// A command is malformed (command index and byte offset inside).
    #[error(transparent)]
    Tlv(#[from] proto_tlv::Error),
    /// Reading failed (feature `std`).
    #[cfg(feature = "std")]
    #[error("read failed at byte offset {offset}: {source}")]
    Read {
        /// Stream offset reached.
        offset: u64,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Writing failed (feature `std`).
    #[cfg(feature = "std")]
    #[error("write failed at byte offset {offset}: {source}")]
    Write {
        /// Stream offset of the first byte not known to be written.
        offset: u64,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A command uses the format's END type; only [`Writer::finish`]
    /// writes it.
    #[error("command {index} uses the reserved END type {end:#06x}")]
    ReservedCommand {
        /// 0-based index the command would have had.
        index: u64,
        /// The END type.
        end: u16,
    },
    /// A checkpoint state that is not one of this stream's.
    #[error("checkpoint state refused: {why}")]
    State {
        /// What is wrong with it.
        why: &'static str,
    },
    /// Bytes follow the END command.
    #[error("bytes follow the END command (command {index}, byte offset {offset})")]
    TrailingData {
        /// Index the next command would have.
        index: u64,
        /// Where the trailing bytes start.
        offset: u64,
    },
}

impl Error {
    /// The 0-based command index concerned, if the error is about a command.
    pub fn command_index(&self) -> Option<u64> {
        match self {
            Error::Tlv(e) => Some(e.index),
            Error::ReservedCommand { index, .. } | Error::TrailingData { index, .. } => {
                Some(*index)
            }
            _ => None,
        }
    }

    /// The stream byte offset where the error was found, where known.
    pub fn offset(&self) -> Option<u64> {
        match self {
            Error::Header(e) => header_offset(e),
            Error::Tlv(e) => Some(e.offset),
            #[cfg(feature = "std")]
            Error::Read { offset, .. } | Error::Write { offset, .. } => Some(*offset),
            Error::TrailingData { offset, .. } => Some(*offset),
            Error::ReservedCommand { .. } | Error::State { .. } => None,
        }
    }
}

fn header_offset(e: &proto_header::Error) -> Option<u64> {
    use proto_header::Error as H;
    match e {
        H::Truncated { offset, .. }
        | H::BadMagic { offset, .. }
        | H::CompatAboveVersion { offset, .. }
        | H::TooLong { offset, .. }
        | H::BadEndianTag { offset, .. }
        | H::UnknownRequiredFeatures { offset, .. }
        | H::TooMany { offset, .. }
        | H::NameNotUtf8 { offset }
        | H::DuplicateAdvertisedContext { offset, .. } => Some(*offset),
        H::Unsupported { .. } | H::NoTableEntry { .. } => Some(0),
        _ => None,
    }
}

#[cfg(feature = "std")]
impl From<ReadError> for Error {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Io { offset, source } => Error::Read { offset, source },
            ReadError::Decode(e) => Error::Tlv(e),
            // ReadError is non_exhaustive.
            other => Error::Read {
                offset: 0,
                source: io::Error::other(other.to_string()),
            },
        }
    }
}

#[cfg(feature = "std")]
/// Writes a native stream: the headers on creation, then commands, then END
/// on [`Writer::finish`].
#[derive(Debug)]
pub struct Writer<W: Write> {
    format: NativeFormat,
    inner: W,
    buf: Vec<u8>,
    offset: u64,
    index: u64,
}

#[cfg(feature = "std")]
impl<W: Write> Writer<W> {
    /// A `PRSTREAM` stream: see [`Writer::with_format`].
    pub fn new(
        inner: W,
        entry: &VersionEntry<V1Header>,
        compat_version: u32,
        header: &V1Header,
    ) -> Result<Self, Error> {
        Self::with_format(&PRSTREAM, inner, entry, compat_version, header)
    }

    /// A stream of `format`: writes the fixed header (`entry.version`,
    /// `compat_version`) and `entry`'s version-specific header for
    /// `header` (for a version that appends fields, write them with
    /// [`Writer::with_body`]).
    pub fn with_format(
        format: &NativeFormat,
        inner: W,
        entry: &VersionEntry<V1Header>,
        compat_version: u32,
        header: &V1Header,
    ) -> Result<Self, Error> {
        Self::with_body(format, inner, entry, compat_version, header, &[])
    }

    /// As [`Writer::with_format`], with `appended` written after the
    /// fields of `entry` in the version-specific header: the fields a later
    /// version adds, which older compatible readers skip.
    pub fn with_body(
        format: &NativeFormat,
        mut inner: W,
        entry: &VersionEntry<V1Header>,
        compat_version: u32,
        header: &V1Header,
        appended: &[u8],
    ) -> Result<Self, Error> {
        let mut buf = Vec::new();
        if appended.is_empty() {
            write_header(&format.fixed, entry, compat_version, header, &mut buf)?;
        } else {
            let mut body = Vec::new();
            (entry.encode)(header, &mut body)?;
            body.extend_from_slice(appended);
            format
                .fixed
                .encode(entry.version, compat_version, &mut buf)?;
            proto_header::write_body(&body, entry.max_body_len, &mut buf)?;
        }
        inner
            .write_all(&buf)
            .map_err(|source| Error::Write { offset: 0, source })?;
        let offset = buf.len() as u64;
        buf.clear();
        Ok(Writer {
            format: *format,
            inner,
            buf,
            offset,
            index: 0,
        })
    }

    /// A version 1 stream (compat_version 1) through [`KIT_VERSIONS`].
    pub fn v1(inner: W, header: &V1Header) -> Result<Self, Error> {
        Self::new(inner, KIT_VERSIONS.entry(1)?, 1, header)
    }

    /// Writes one command. Refused: the END type ([`Error::ReservedCommand`]),
    /// an attribute over 64 KiB, a payload over [`NATIVE_MAX_PAYLOAD`].
    /// Nothing is written on error.
    pub fn write_command(&mut self, cmd: u16, attrs: &[AttrValue<'_>]) -> Result<(), Error> {
        let end = self.format.profile.end_cmd;
        if cmd == end {
            return Err(Error::ReservedCommand {
                index: self.index,
                end,
            });
        }
        self.put(cmd, attrs)
    }

    fn put(&mut self, cmd: u16, attrs: &[AttrValue<'_>]) -> Result<(), Error> {
        self.buf.clear();
        encode_command(&self.format.profile, cmd, attrs, &mut self.buf).map_err(|mut e| {
            e.index = self.index;
            e.offset = self.offset;
            e
        })?;
        self.inner
            .write_all(&self.buf)
            .map_err(|source| Error::Write {
                offset: self.offset,
                source,
            })?;
        self.offset += self.buf.len() as u64;
        self.index += 1;
        Ok(())
    }

    /// Bytes written so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Commands written so far.
    pub fn commands(&self) -> u64 {
        self.index
    }

    /// Writes the END command, flushes, and returns the inner writer.
    pub fn finish(mut self) -> Result<W, Error> {
        self.put(self.format.profile.end_cmd, &[])?;
        self.inner.flush().map_err(|source| Error::Write {
            offset: self.offset,
            source,
        })?;
        Ok(self.inner)
    }
}

#[cfg(feature = "std")]
/// Reads a native stream: the headers on creation, then one command at a
/// time with [`Reader::next_command`].
#[derive(Debug)]
pub struct Reader<R: Read> {
    fixed: ParsedFixed,
    version: u32,
    header: V1Header,
    extension: Vec<u8>,
    header_len: u64,
    dec: ReadDecoder<R>,
    done: bool,
}

#[cfg(feature = "std")]
impl<R: Read> Reader<R> {
    /// Reads a `PRSTREAM` stream's headers ([`PRSTREAM`]).
    pub fn new(inner: R, opts: ReadOptions) -> Result<Self, Error> {
        Self::open(&PRSTREAM, inner, opts)
    }

    /// Reads a stream of `format` (its fixed header, its version table,
    /// its profile).
    pub fn open(format: &NativeFormat, inner: R, opts: ReadOptions) -> Result<Self, Error> {
        Self::read(format, format.versions, inner, opts)
    }

    /// A `PRSTREAM` stream read through another version `table` (a reader
    /// that supports fewer versions).
    pub fn with_table(
        inner: R,
        table: &VersionTable<V1Header>,
        opts: ReadOptions,
    ) -> Result<Self, Error> {
        Self::read(&PRSTREAM, table, inner, opts)
    }

    /// Reads the fixed header, negotiates against `table` (the highest
    /// supported version in `[compat_version, version]`), then reads that
    /// version's header (its declared length is checked against the entry's
    /// maximum before the body is read; appended fields are skipped).
    fn read(
        format: &NativeFormat,
        table: &VersionTable<V1Header>,
        inner: R,
        opts: ReadOptions,
    ) -> Result<Self, Error> {
        // The headers are read through the decoder's own buffer (peeked,
        // then taken as the prefix of the commands).
        let mut dec = ReadDecoder::new(inner, format.profile, 0);
        let flen = format.fixed.encoded_len();
        let fixed = format.fixed.parse(dec.peek(flen)?)?;
        let entry = table.negotiate(fixed.range())?;
        let mut want = flen + LEN_PREFIX;
        if let Some(p) = dec.peek(want)?.get(flen..want) {
            let len = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
            // Bounded: longer declared lengths fail below without reading.
            if len <= entry.max_body_len {
                want += len as usize;
            }
        }
        let buf = dec.peek(want)?;
        let (header, used) = entry.read(&buf[flen..], flen as u64, &opts)?;
        let header_len = flen + used;
        let extension = extension(entry, &header, &buf[flen + LEN_PREFIX..header_len]);
        dec.read_prefix(header_len)?;
        Ok(Reader {
            fixed,
            version: entry.version,
            header,
            extension,
            header_len: header_len as u64,
            dec,
            done: false,
        })
    }

    /// The fixed header (the writer's version and compat_version).
    pub fn fixed(&self) -> &ParsedFixed {
        &self.fixed
    }

    /// The negotiated version.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The version-specific header, as the negotiated version reads it.
    pub fn header(&self) -> &V1Header {
        &self.header
    }

    /// The bytes of the version-specific header after the fields the
    /// negotiated version's entry decodes: what a later compatible version
    /// appended (empty when nothing was).
    pub fn header_extension(&self) -> &[u8] {
        &self.extension
    }

    /// Bytes taken by both headers: where the first command starts.
    pub fn header_len(&self) -> u64 {
        self.header_len
    }

    /// Stream offset of the next undecoded byte.
    pub fn offset(&self) -> u64 {
        self.dec.offset()
    }

    /// Commands decoded so far (END included).
    pub fn commands(&self) -> u64 {
        self.dec.commands()
    }

    /// The next command (the END command too); `Ok(None)` after END, once
    /// it is known that nothing follows it. A stream that stops without END
    /// or inside a command, a CRC mismatch, an oversized or malformed
    /// command, and bytes after END are errors; a reader that failed stays
    /// failed.
    pub fn next_command(&mut self) -> Result<Option<Command<'_>>, Error> {
        if self.dec.ended() {
            if !self.done {
                if !self.dec.at_eof()? {
                    let e = Error::TrailingData {
                        index: self.dec.commands(),
                        offset: self.dec.offset(),
                    };
                    return Err(e);
                }
                self.done = true;
            }
            return Ok(None);
        }
        Ok(self.dec.next_command()?)
    }
}

#[cfg(feature = "std")]
/// What follows the fields `entry` decodes in `body`: re-encoding the
/// decoded header gives their length (a decoder reads exactly what its
/// encoder writes).
fn extension(entry: &VersionEntry<V1Header>, header: &V1Header, body: &[u8]) -> Vec<u8> {
    let mut known = Vec::new();
    if (entry.encode)(header, &mut known).is_err() {
        return Vec::new();
    }
    body.get(known.len()..).unwrap_or_default().to_vec()
}

impl From<Fault> for Error {
    fn from(f: Fault) -> Self {
        match f {
            #[cfg(feature = "std")]
            Fault::Io { offset, source } => Error::Read { offset, source },
            Fault::State { why } => Error::State { why },
        }
    }
}

impl NativeFormat {
    /// Reads the headers at the start of `bytes`: the fixed header, the
    /// negotiated version and its version-specific header; `Ok(None)` when
    /// `bytes` is too short, with the length needed.
    fn read_head(&self, bytes: &[u8]) -> Result<Result<StreamHead, usize>, Error> {
        let flen = self.fixed.encoded_len();
        if bytes.len() < flen {
            if !bytes.starts_with(&self.fixed.magic[..bytes.len().min(self.fixed.magic.len())]) {
                // A wrong magic is reported as such, however short.
                self.fixed.parse(bytes)?;
            }
            return Ok(Err(flen + LEN_PREFIX));
        }
        let fixed = self.fixed.parse(bytes)?;
        let entry = self.versions.negotiate(fixed.range())?;
        let Some(p) = bytes.get(flen..flen + LEN_PREFIX) else {
            return Ok(Err(flen + LEN_PREFIX));
        };
        let len = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
        let total = flen + LEN_PREFIX + len as usize;
        if len <= entry.max_body_len && bytes.len() < total {
            return Ok(Err(total));
        }
        let opts = ReadOptions {
            known_features: self.known_features,
        };
        let (_, used) = entry.read(&bytes[flen..], flen as u64, &opts)?;
        Ok(Ok(StreamHead {
            len: flen + used,
            version: entry.version,
            profile: self.profile,
        }))
    }
}

impl Format for NativeFormat {
    type Error = Error;
    type Split = Option<DataSplit>;

    fn name(&self) -> &'static str {
        self.name
    }

    fn fixed_header(&self) -> &FixedHeaderFormat {
        &self.fixed
    }

    /// The header of a native stream is always at offset 0 (native streams
    /// do not concatenate), so header errors keep their offsets.
    fn head(&self, bytes: &[u8], _offset: u64) -> Result<Head, Error> {
        Ok(match self.read_head(bytes)? {
            Ok(h) => Head::Head(h),
            Err(n) => Head::Need(n),
        })
    }

    fn profile(&self, version: u32) -> Result<Profile, Error> {
        self.versions.entry(version)?;
        Ok(self.profile)
    }

    fn concatenates(&self) -> bool {
        false
    }

    fn split(&self) -> Option<DataSplit> {
        self.split
    }
}
