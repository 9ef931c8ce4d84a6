//! Buffered reading: [`ReadBuf`], the one routine every reader of the kit
//! fills its buffer with, and [`ReadDecoder`], commands from any
//! `std::io::Read` through it.

use std::io::{self, Read};

use crate::decode::{decode_command, frame_len};
use crate::{Command, Error, ErrorKind, Profile, CMD_HEADER_LEN};

/// An error from [`ReadDecoder`]: I/O, or the stream itself.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// Reading failed.
    #[error("read failed at byte offset {offset}: {source}")]
    Io {
        /// Stream offset reached.
        offset: u64,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The stream is malformed.
    #[error(transparent)]
    Decode(#[from] Error),
}

/// A reused read buffer: the bytes read from a `Read` and not consumed yet.
///
/// It grows only to fit what is asked of it: [`fill_from`](ReadBuf::fill_from)
/// makes at least `n` bytes available in reads of at least `chunk` bytes,
/// moving what is left to the front only when the end of the buffer is
/// reached, so many small units cost one `read` call between them.
#[derive(Debug, Default)]
pub struct ReadBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
}

impl ReadBuf {
    /// An empty buffer (nothing is allocated until the first fill).
    pub fn new() -> Self {
        Self::default()
    }

    /// The bytes read and not consumed.
    pub fn available(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Drops the first `n` available bytes (at most all of them).
    pub fn consume(&mut self, n: usize) {
        self.start += n.min(self.end - self.start);
    }

    /// Consumes the first `n` available bytes (at most all of them) and
    /// returns them: they stay in the buffer until the next fill.
    pub fn take(&mut self, n: usize) -> &[u8] {
        let s = self.start;
        self.consume(n);
        &self.buf[s..self.start]
    }

    /// Drops every byte and forgets the end of input (after the reader
    /// was moved, say).
    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
        self.eof = false;
    }

    /// Whether a read returned 0 bytes (the end of input).
    pub fn eof(&self) -> bool {
        self.eof
    }

    /// Reads from `r` until at least `n` bytes are available or the input
    /// ends, in reads of at least `chunk` bytes; returns how many are
    /// available (fewer than `n` only at the end of input). Interrupted
    /// reads are retried; on an error, what was read before it stays
    /// available.
    pub fn fill_from<R: Read + ?Sized>(
        &mut self,
        r: &mut R,
        n: usize,
        chunk: usize,
    ) -> io::Result<usize> {
        while self.end - self.start < n && !self.eof {
            if self.buf.len() - self.start < n || self.end == self.buf.len() {
                // Move what is left to the front.
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
                // Room for several units of this size, so that the move
                // above happens about once every few units rather than
                // before each one (units of up to 1 MiB; a larger one gets
                // exactly its size, so a hostile length costs no more
                // than the caller's limit on it).
                let want = if n <= 1 << 20 { n * 4 } else { n }.max(chunk);
                if self.buf.len() < want {
                    self.buf.resize(want, 0);
                }
            }
            match r.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(k) => self.end += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(self.end - self.start)
    }
}

/// Decodes commands from any `Read`, through one buffer that is reused and
/// only grows to fit the largest command (itself bounded by the profile).
///
/// Reads are large (`chunk` bytes, 256 KiB by default), so many small commands
/// cost one `read` call between them.
#[derive(Debug)]
pub struct ReadDecoder<R> {
    inner: R,
    profile: Profile,
    buf: ReadBuf,
    chunk: usize,
    /// Stream offset of the first available byte.
    offset: u64,
    index: u64,
    ended: bool,
    failed: Option<Error>,
}

impl<R: Read> ReadDecoder<R> {
    /// Default read size.
    pub const DEFAULT_CHUNK: usize = 256 * 1024;

    /// A decoder over `inner`, whose next byte is at stream byte `base_offset`.
    pub fn new(inner: R, profile: Profile, base_offset: u64) -> Self {
        Self::with_chunk(inner, profile, base_offset, Self::DEFAULT_CHUNK)
    }

    /// Same, reading `chunk` bytes at a time.
    pub fn with_chunk(inner: R, profile: Profile, base_offset: u64, chunk: usize) -> Self {
        ReadDecoder {
            inner,
            profile,
            buf: ReadBuf::new(),
            chunk: chunk.max(CMD_HEADER_LEN),
            offset: base_offset,
            index: 0,
            ended: false,
            failed: None,
        }
    }

    /// Replaces the profile (e.g. once a stream header named the version).
    pub fn set_profile(&mut self, profile: Profile) {
        self.profile = profile;
    }
    /// The current profile.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }
    /// Stream offset of the next undecoded byte.
    pub fn offset(&self) -> u64 {
        self.offset
    }
    /// Commands decoded so far.
    pub fn commands(&self) -> u64 {
        self.index
    }
    /// Whether the END command was decoded.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Makes at least `n` bytes available, reading as needed. Returns how
    /// many are (fewer than `n` only at end of input).
    fn fill(&mut self, n: usize) -> Result<usize, ReadError> {
        let (offset, chunk) = (self.offset, self.chunk);
        let buf = &mut self.buf;
        buf.fill_from(&mut self.inner, n, chunk)
            .map_err(|source| ReadError::Io {
                offset: offset + buf.available().len() as u64,
                source,
            })
    }

    /// Up to `n` bytes at the decoder's position, not consumed (fewer
    /// only at end of input): a stream header to look at before
    /// [`read_prefix`](ReadDecoder::read_prefix) takes it.
    pub fn peek(&mut self, n: usize) -> Result<&[u8], ReadError> {
        let have = self.fill(n)?;
        Ok(&self.buf.available()[..have.min(n)])
    }

    /// Reads exactly `n` raw bytes outside the command framing (a stream
    /// header, say) and re-arms the decoder for a new stream after them.
    /// `Ok(None)` at a clean end of input (no byte at all).
    pub fn read_prefix(&mut self, n: usize) -> Result<Option<&[u8]>, ReadError> {
        if let Some(e) = &self.failed {
            return Err(e.clone().into());
        }
        let have = self.fill(n)?;
        if have == 0 {
            return Ok(None);
        }
        if have < n {
            return Err(self.fail(
                ErrorKind::Truncated {
                    what: "stream header",
                    needed: n as u64,
                    available: have as u64,
                }
                .at(0, self.offset),
            ));
        }
        self.offset += n as u64;
        self.ended = false;
        self.index = 0;
        Ok(Some(self.buf.take(n)))
    }

    /// Marks the decoder failed with `e` (say, the caller found the stream
    /// header it read with [`ReadDecoder::read_prefix`] invalid): every later
    /// call returns it.
    pub fn poison(&mut self, e: Error) {
        self.failed = Some(e);
    }

    /// Whether any byte follows (reads ahead if needed).
    pub fn at_eof(&mut self) -> Result<bool, ReadError> {
        Ok(self.fill(1)? == 0)
    }

    /// The next command; `Ok(None)` once the END command has been returned.
    /// A stream that stops without END, or inside a command, is an error.
    pub fn next_command(&mut self) -> Result<Option<Command<'_>>, ReadError> {
        if self.ended {
            return Ok(None);
        }
        if let Some(e) = &self.failed {
            return Err(e.clone().into());
        }
        let have = self.fill(CMD_HEADER_LEN)?;
        if have < CMD_HEADER_LEN {
            let kind = if have == 0 {
                ErrorKind::MissingEnd
            } else {
                ErrorKind::Truncated {
                    what: "command header",
                    needed: CMD_HEADER_LEN as u64,
                    available: have as u64,
                }
            };
            return Err(self.fail(kind.at(self.index, self.offset)));
        }
        let total = match frame_len(self.buf.available(), &self.profile, self.index, self.offset) {
            Ok(t) => t,
            Err(e) => return Err(self.fail(e)),
        };
        let have = self.fill(total)?;
        if have < total {
            return Err(self.fail(
                ErrorKind::Truncated {
                    what: "command payload",
                    needed: total as u64,
                    available: have as u64,
                }
                .at(self.index, self.offset),
            ));
        }
        // Taken before it is decoded: a command that fails to decode fails
        // the decoder for good.
        let bytes = self.buf.take(total);
        match decode_command(bytes, &self.profile, self.index, self.offset) {
            Ok((c, n)) => {
                self.offset += n as u64;
                self.index += 1;
                self.ended = c.is_end();
                Ok(Some(c))
            }
            Err(e) => {
                self.failed = Some(e.clone());
                Err(e.into())
            }
        }
    }

    fn fail(&mut self, e: Error) -> ReadError {
        self.failed = Some(e.clone());
        e.into()
    }
}
