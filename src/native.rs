//! Native proto-stream streams over `std::io`.
//!
//! A native stream is, in order:
//!
//! 1. the native fixed header ([`NATIVE_FORMAT`]: magic [`NATIVE_MAGIC`],
//!    version and compat_version as u32 big-endian);
//! 2. the length-prefixed version-specific header of the negotiated
//!    version (the kit's [`V1Header`], table [`KIT_VERSIONS`]);
//! 3. TLV commands ([`NATIVE_PROFILE`]: standard CRC-32C, every attribute
//!    with a 16-bit length, payloads of at most [`NATIVE_MAX_PAYLOAD`]
//!    bytes);
//! 4. an END command of type [`NATIVE_END`], with no attributes, after which
//!    nothing follows.
//!
//! [`Writer`] writes one over any `io::Write`; [`Reader`] reads one from any
//! `io::Read`, negotiating the version, exposing the headers and yielding
//! the commands. Errors ([`Error`]) name the byte offset, and for commands
//! the 0-based command index.
//!
//! ```
//! use proto_stream::header::{Context, Endian, ReadOptions, V1Header};
//! use proto_stream::native::{Reader, Writer};
//! use proto_stream::tlv::{AttrValue, Value};
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
//! ```

use std::io::{self, Read, Write};

use proto_header::{
    write_header, FixedHeaderFormat, ParsedFixed, ReadOptions, V1Header, VersionEntry,
    VersionTable, KIT_VERSIONS, LEN_PREFIX,
};
use proto_tlv::{encode_command, AttrValue, Command, CrcVariant, Profile, ReadDecoder, ReadError};

/// The magic of native streams.
pub const NATIVE_MAGIC: &[u8; 8] = b"PRSTREAM";
/// The native fixed header: [`NATIVE_MAGIC`], version u32 BE,
/// compat_version u32 BE (16 bytes).
pub const NATIVE_FORMAT: FixedHeaderFormat = FixedHeaderFormat::native(NATIVE_MAGIC);
/// The command type that ends a native stream (reserved: no other command
/// may use it). It carries no attributes.
pub const NATIVE_END: u16 = 0xFFFF;
/// Largest command payload (bytes after the 10-byte command header): 16 MiB.
pub const NATIVE_MAX_PAYLOAD: u32 = 16 * 1024 * 1024;
/// The TLV profile of native streams: standard CRC-32C, no unbounded data
/// attribute, [`NATIVE_MAX_PAYLOAD`], END = [`NATIVE_END`].
pub const NATIVE_PROFILE: Profile = Profile {
    crc: CrcVariant::Standard,
    max_payload_len: NATIVE_MAX_PAYLOAD,
    unbounded_data_attr: None,
    end_cmd: NATIVE_END,
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
    /// Reading failed.
    #[error("read failed at byte offset {offset}: {source}")]
    Read {
        /// Stream offset reached.
        offset: u64,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Writing failed.
    #[error("write failed at byte offset {offset}: {source}")]
    Write {
        /// Stream offset of the first byte not known to be written.
        offset: u64,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A command uses the reserved END type ([`NATIVE_END`]); only
    /// [`Writer::finish`] writes it.
    #[error("command {index} uses the reserved END type {NATIVE_END:#06x}")]
    ReservedCommand {
        /// 0-based index the command would have had.
        index: u64,
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
            Error::ReservedCommand { index } | Error::TrailingData { index, .. } => Some(*index),
            _ => None,
        }
    }

    /// The stream byte offset where the error was found, where known.
    pub fn offset(&self) -> Option<u64> {
        match self {
            Error::Header(e) => header_offset(e),
            Error::Tlv(e) => Some(e.offset),
            Error::Read { offset, .. }
            | Error::Write { offset, .. }
            | Error::TrailingData { offset, .. } => Some(*offset),
            Error::ReservedCommand { .. } => None,
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

/// Writes a native stream: the headers on creation, then commands, then END
/// on [`Writer::finish`].
#[derive(Debug)]
pub struct Writer<W: Write> {
    inner: W,
    buf: Vec<u8>,
    offset: u64,
    index: u64,
}

impl<W: Write> Writer<W> {
    /// Writes the fixed header (`entry.version`, `compat_version`) and
    /// `entry`'s version-specific header for `header`.
    pub fn new(
        mut inner: W,
        entry: &VersionEntry<V1Header>,
        compat_version: u32,
        header: &V1Header,
    ) -> Result<Self, Error> {
        let mut buf = Vec::new();
        write_header(&NATIVE_FORMAT, entry, compat_version, header, &mut buf)?;
        inner
            .write_all(&buf)
            .map_err(|source| Error::Write { offset: 0, source })?;
        let offset = buf.len() as u64;
        buf.clear();
        Ok(Writer {
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
        if cmd == NATIVE_END {
            return Err(Error::ReservedCommand { index: self.index });
        }
        self.put(cmd, attrs)
    }

    fn put(&mut self, cmd: u16, attrs: &[AttrValue<'_>]) -> Result<(), Error> {
        self.buf.clear();
        encode_command(&NATIVE_PROFILE, cmd, attrs, &mut self.buf).map_err(|mut e| {
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
        self.put(NATIVE_END, &[])?;
        self.inner.flush().map_err(|source| Error::Write {
            offset: self.offset,
            source,
        })?;
        Ok(self.inner)
    }
}

/// Reads a native stream: the headers on creation, then one command at a
/// time with [`Reader::next_command`].
#[derive(Debug)]
pub struct Reader<R: Read> {
    fixed: ParsedFixed,
    version: u32,
    header: V1Header,
    header_len: u64,
    dec: ReadDecoder<R>,
    done: bool,
}

/// Reads up to `n` bytes into `buf` (fewer only at end of input).
fn read_up_to<R: Read>(r: &mut R, buf: &mut Vec<u8>, n: usize) -> Result<(), Error> {
    let start = buf.len();
    buf.resize(start + n, 0);
    let mut got = 0;
    while got < n {
        match r.read(&mut buf[start + got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(Error::Read {
                    offset: (start + got) as u64,
                    source,
                })
            }
        }
    }
    buf.truncate(start + got);
    Ok(())
}

impl<R: Read> Reader<R> {
    /// Reads the headers with the kit's table ([`KIT_VERSIONS`]).
    pub fn new(inner: R, opts: ReadOptions) -> Result<Self, Error> {
        Self::with_table(inner, &KIT_VERSIONS, opts)
    }

    /// Reads the fixed header, negotiates against `table` (the highest
    /// supported version in `[compat_version, version]`), then reads that
    /// version's header (its declared length is checked against the entry's
    /// maximum before the body is read; appended fields are skipped).
    pub fn with_table(
        mut inner: R,
        table: &VersionTable<V1Header>,
        opts: ReadOptions,
    ) -> Result<Self, Error> {
        let flen = NATIVE_FORMAT.encoded_len();
        let mut buf = Vec::with_capacity(flen + LEN_PREFIX);
        read_up_to(&mut inner, &mut buf, flen)?;
        let fixed = NATIVE_FORMAT.parse(&buf)?;
        let entry = table.negotiate(fixed.range())?;
        read_up_to(&mut inner, &mut buf, LEN_PREFIX)?;
        if let Some(p) = buf.get(flen..flen + LEN_PREFIX) {
            let len = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
            // Bounded: longer declared lengths fail below without reading.
            if len <= entry.max_body_len {
                read_up_to(&mut inner, &mut buf, len as usize)?;
            }
        }
        let (header, used) = entry.read(&buf[flen..], flen as u64, &opts)?;
        let header_len = (flen + used) as u64;
        Ok(Reader {
            fixed,
            version: entry.version,
            header,
            header_len,
            dec: ReadDecoder::new(inner, NATIVE_PROFILE, header_len),
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
