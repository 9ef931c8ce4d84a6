//! Whole streams: in memory ([`BtrfsStream`]) or from any `Read`
//! ([`StreamReader`]), plus the stream writer.

use std::io::Read;

use proto_tlv::{Command, Commands, ErrorKind, Profile, ReadDecoder};

use crate::header::{parse_header, profile, write_header, HEADER_LEN};
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

    /// Moves to the next concatenated stream: `Ok(Some(version))` if another
    /// stream header follows, `Ok(None)` at the end of input. Anything else
    /// after END is an error (bad magic, truncated header, unsupported
    /// version) at its offset, after which the reader stays failed. Called
    /// before the current stream's END, it first reads (and checks) the rest
    /// of that stream.
    pub fn next_stream(&mut self) -> Result<Option<u32>, Error> {
        // Called before END: check and skip the rest of this stream.
        while self.dec.next_command()?.is_some() {}
        let at = self.dec.offset();
        let version = match self.dec.read_prefix(HEADER_LEN)? {
            None => return Ok(None),
            Some(h) => match parse_header(h) {
                Ok(v) => v,
                Err(e) => {
                    let e = e.header_at(at);
                    // Nothing after a bad header is read as commands.
                    if let Error::Tlv(t) = &e {
                        self.dec.poison(t.clone());
                    } else {
                        self.dec.poison(ErrorKind::MissingEnd.at(0, at));
                    }
                    return Err(e);
                }
            },
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
        write_header(version, out)?;
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

/// An event as [`StreamDecoder::decode_each`] hands it to its visitor.
#[derive(Debug)]
pub enum Visit<'c, 'a> {
    /// A stream header: a stream of this version starts.
    Stream {
        /// Its protocol version.
        version: u32,
    },
    /// A command of the current stream.
    Command(&'c Command<'a>),
}

/// A decoding error or the visitor's, inside [`StreamDecoder::decode_each`].
enum Fail<E> {
    Tlv(proto_tlv::Error),
    Visit(E),
}

impl<E> From<proto_tlv::Error> for Fail<E> {
    fn from(e: proto_tlv::Error) -> Self {
        Fail::Tlv(e)
    }
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
    failed: Option<Error>,
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
        self.dec.as_ref().is_none_or(|d| d.ended())
    }

    /// Stream offset of the next byte expected.
    pub fn offset(&self) -> u64 {
        match &self.dec {
            Some(d) => d.offset(),
            None => self.offset + self.header.len() as u64,
        }
    }

    /// Feeds `input`; returns the first event it completes. After an error
    /// it stays failed.
    pub fn decode<'a>(&'a mut self, input: &'a [u8]) -> Result<Event<'a>, Error> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
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
            let version = match parse_header(&self.header) {
                Ok(v) => v,
                Err(e) => {
                    let e = e.header_at(at);
                    self.failed = Some(e.clone());
                    return Err(e);
                }
            };
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
        match dec.decode(input) {
            Ok(proto_tlv::Step::Command { command, consumed }) => {
                Ok(Event::Command { command, consumed })
            }
            Ok(proto_tlv::Step::NeedMore { consumed, .. }) => Ok(Event::NeedMore { consumed }),
            // The TLV decoder keeps its own error for later calls.
            Err(e) => Err(Error::Tlv(e)),
        }
    }

    /// Feeds `input` and hands every event it completes to `visit`, which
    /// returns `Ok(false)` to stop. Returns how many bytes of `input` were
    /// used (when `visit` stopped: up to the end of the event it stopped
    /// at) and whether it stopped. The same events, errors and state as
    /// calling [`StreamDecoder::decode`] until `input` is used up, but the
    /// commands that lie whole in `input` are decoded in one tight loop.
    pub fn decode_each<E: From<Error>>(
        &mut self,
        input: &[u8],
        mut visit: impl FnMut(Visit<'_, '_>) -> Result<bool, E>,
    ) -> Result<(usize, bool), E> {
        let mut pos = 0;
        while pos < input.len() {
            if self.failed.is_none() {
                if let Some(dec) = self.dec.as_mut().filter(|d| !d.ended()) {
                    let (n, stopped) = dec
                        .decode_each(&input[pos..], |c| {
                            visit(Visit::Command(c)).map_err(Fail::Visit)
                        })
                        .map_err(|e| match e {
                            Fail::Tlv(e) => E::from(Error::Tlv(e)),
                            Fail::Visit(e) => e,
                        })?;
                    pos += n;
                    if stopped {
                        return Ok((pos, true));
                    }
                    continue;
                }
            }
            // Between streams (a header), or failed.
            let go_on = match self.decode(&input[pos..])? {
                Event::Stream { version, consumed } => {
                    pos += consumed;
                    visit(Visit::Stream { version })?
                }
                Event::Command { command, consumed } => {
                    pos += consumed;
                    visit(Visit::Command(&command))?
                }
                Event::NeedMore { consumed } => {
                    pos += consumed;
                    true
                }
            };
            if !go_on {
                return Ok((pos, true));
            }
        }
        Ok((pos, false))
    }

    /// Declares the end of input: fine only between streams, after at least
    /// one stream, with no partial header.
    pub fn finish(&self) -> Result<(), Error> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
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
