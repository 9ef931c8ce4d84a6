//! Whole streams: in memory ([`BtrfsStream`]) or from any `Read`
//! ([`StreamReader`]), plus the stream writer.

use std::io::Read;

use proto_tlv::{Command, Commands, ErrorKind, Profile, ReadDecoder};
use zerocopy::IntoBytes;

use crate::header::{parse_header, profile, StreamHeader, HEADER_LEN};
use crate::{BtrfsCommand, Error};

/// An in-memory btrfs send stream: checked header, then the commands,
/// decoded without copying.
#[derive(Clone, Debug)]
pub struct BtrfsStream<'a> {
    version: u32,
    profile: Profile,
    body: &'a [u8],
}

impl<'a> BtrfsStream<'a> {
    /// Checks the header (magic, supported version) of `bytes`.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Error> {
        let version = parse_header(bytes)?;
        Ok(BtrfsStream {
            version,
            profile: profile(version)?,
            body: &bytes[HEADER_LEN..],
        })
    }
    /// Protocol version.
    pub fn version(&self) -> u32 {
        self.version
    }
    /// TLV profile of this version.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }
    /// The commands, up to and including END. Positions are stream offsets
    /// (the first command is at byte 17).
    pub fn commands(&self) -> Commands<'a> {
        Commands::new(self.body, self.profile, HEADER_LEN as u64)
    }
}

/// Reads btrfs send streams from any `Read`, one command at a time, through
/// one reused buffer. Like `btrfs receive`, it accepts several streams
/// concatenated: after an END, a following stream header starts a new
/// stream ([`StreamReader::next_stream`]).
#[derive(Debug)]
pub struct StreamReader<R> {
    dec: ReadDecoder<R>,
    version: u32,
}

impl<R: Read> StreamReader<R> {
    /// Reads and checks the first stream header.
    pub fn new(inner: R) -> Result<Self, Error> {
        // A v1 profile until the header says otherwise.
        let mut dec = ReadDecoder::new(inner, profile(1)?, 0);
        let version = match dec.read_prefix(HEADER_LEN)? {
            Some(h) => parse_header(h)?,
            None => {
                return Err(Error::Tlv(
                    ErrorKind::Truncated {
                        what: "stream header",
                        needed: HEADER_LEN as u64,
                        available: 0,
                    }
                    .at(0, 0),
                ))
            }
        };
        dec.set_profile(profile(version)?);
        Ok(StreamReader { dec, version })
    }

    /// Protocol version of the current stream.
    pub fn version(&self) -> u32 {
        self.version
    }
    /// Stream offset of the next undecoded byte.
    pub fn offset(&self) -> u64 {
        self.dec.offset()
    }

    /// The next command of the current stream; `Ok(None)` after its END.
    pub fn next_command(&mut self) -> Result<Option<Command<'_>>, Error> {
        Ok(self.dec.next_command()?)
    }

    /// After END: `Ok(Some(version))` if another stream header follows,
    /// `Ok(None)` at the end of input. Anything else after END is an error
    /// (bad magic or truncated header) at its offset.
    pub fn next_stream(&mut self) -> Result<Option<u32>, Error> {
        let at = self.dec.offset();
        let version = match self.dec.read_prefix(HEADER_LEN)? {
            None => return Ok(None),
            Some(h) => parse_header(h).map_err(|e| match e {
                Error::Tlv(t) => Error::Tlv(t.kind.at(0, at + t.offset)),
                other => other,
            })?,
        };
        self.dec.set_profile(profile(version)?);
        self.version = version;
        Ok(Some(version))
    }
}

/// Writes a btrfs send stream: the header, then commands.
#[derive(Debug)]
pub struct StreamWriter {
    profile: Profile,
    version: u32,
}

impl StreamWriter {
    /// Appends the header of a version-`version` stream to `out`.
    pub fn new(version: u32, out: &mut Vec<u8>) -> Result<Self, Error> {
        let profile = profile(version)?;
        out.extend_from_slice(StreamHeader::new(version).as_bytes());
        Ok(StreamWriter { profile, version })
    }
    /// Protocol version.
    pub fn version(&self) -> u32 {
        self.version
    }
    /// TLV profile in use.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }
    /// Appends one command.
    pub fn write(&self, cmd: &BtrfsCommand<'_>, out: &mut Vec<u8>) -> Result<usize, Error> {
        Ok(cmd.encode(&self.profile, out)?)
    }
    /// Appends the END command.
    pub fn finish(&self, out: &mut Vec<u8>) -> Result<usize, Error> {
        self.write(&BtrfsCommand::End, out)
    }
}

/// What one call to [`StreamDecoder::decode`] achieved.
#[derive(Debug)]
pub enum Event<'a> {
    /// A stream header was read: a (new) stream of this version starts.
    Stream {
        /// Its protocol version.
        version: u32,
        /// Bytes of this call's input used.
        consumed: usize,
    },
    /// A command was decoded.
    Command {
        /// The command (borrowing the input, or the decoder's buffer when it
        /// arrived in pieces).
        command: Command<'a>,
        /// Bytes of this call's input used.
        consumed: usize,
    },
    /// All of the input was taken; more is needed.
    NeedMore {
        /// Bytes of this call's input used (all of them).
        consumed: usize,
    },
}

/// Sans-IO decoder of btrfs send streams, one or several concatenated (as
/// `btrfs receive` accepts them), fed input in pieces of any size. Commands
/// that lie inside one piece are returned without copying.
///
/// ```
/// use proto_btrfs::{BtrfsCommand, Event, StreamDecoder, StreamWriter};
/// let mut bytes = Vec::new();
/// let w = StreamWriter::new(2, &mut bytes).unwrap();
/// w.write(&BtrfsCommand::Unlink { path: b"gone" }, &mut bytes).unwrap();
/// w.finish(&mut bytes).unwrap();
///
/// let mut dec = StreamDecoder::new();
/// let mut seen = 0;
/// for mut piece in bytes.chunks(7) {
///     while !piece.is_empty() {
///         let used = match dec.decode(piece).unwrap() {
///             Event::Stream { consumed, .. } | Event::NeedMore { consumed } => consumed,
///             Event::Command { consumed, .. } => { seen += 1; consumed }
///         };
///         piece = &piece[used..];
///     }
/// }
/// dec.finish().unwrap();
/// assert_eq!(seen, 2);
/// ```
#[derive(Debug, Default)]
pub struct StreamDecoder {
    header: Vec<u8>,
    dec: Option<proto_tlv::Decoder>,
    /// Stream offset where the pending header starts.
    offset: u64,
    streams: u64,
}

impl StreamDecoder {
    /// A decoder at the start of input.
    pub fn new() -> Self {
        Self::default()
    }

    /// Streams whose header has been read.
    pub fn streams(&self) -> u64 {
        self.streams
    }

    /// Whether the decoder is between streams (before the first header or
    /// after an END).
    pub fn between_streams(&self) -> bool {
        self.dec.is_none()
    }

    /// Stream offset of the next byte expected.
    pub fn offset(&self) -> u64 {
        match &self.dec {
            Some(d) => d.offset(),
            None => self.offset + self.header.len() as u64,
        }
    }

    /// Feeds `input`; returns the first event it completes.
    pub fn decode<'a>(&'a mut self, input: &'a [u8]) -> Result<Event<'a>, Error> {
        if let Some(dec) = &self.dec {
            if dec.ended() {
                self.offset = dec.offset();
                self.dec = None;
            }
        }
        if self.dec.is_none() {
            let take = (HEADER_LEN - self.header.len()).min(input.len());
            self.header.extend_from_slice(&input[..take]);
            if self.header.len() < HEADER_LEN {
                return Ok(Event::NeedMore { consumed: take });
            }
            let at = self.offset;
            let version = parse_header(&self.header).map_err(|e| match e {
                Error::Tlv(t) => Error::Tlv(t.kind.at(0, at + t.offset)),
                other => other,
            })?;
            self.header.clear();
            self.streams += 1;
            self.dec = Some(proto_tlv::Decoder::new(
                profile(version)?,
                at + HEADER_LEN as u64,
            ));
            return Ok(Event::Stream {
                version,
                consumed: take,
            });
        }
        // Set just above when it was `None`.
        let Some(dec) = self.dec.as_mut() else {
            return Err(Error::Tlv(ErrorKind::MissingEnd.at(0, self.offset)));
        };
        Ok(match dec.decode(input)? {
            proto_tlv::Step::Command { command, consumed } => Event::Command { command, consumed },
            proto_tlv::Step::NeedMore { consumed, .. } => Event::NeedMore { consumed },
        })
    }

    /// Declares the end of input: fine only between streams, after at least
    /// one stream, with no partial header.
    pub fn finish(&self) -> Result<(), Error> {
        match &self.dec {
            Some(d) if !d.ended() => Ok(d.finish()?),
            Some(_) => Ok(()),
            None if self.header.is_empty() && self.streams > 0 => Ok(()),
            None => Err(Error::Tlv(
                ErrorKind::Truncated {
                    what: "stream header",
                    needed: HEADER_LEN as u64,
                    available: self.header.len() as u64,
                }
                .at(0, self.offset),
            )),
        }
    }
}
