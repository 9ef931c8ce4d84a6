//! `std::io::Read` adapter with a reused buffer.

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

/// Decodes commands from any `Read`, through one buffer that is reused and
/// only grows to fit the largest command (itself bounded by the profile).
///
/// Reads are large (`chunk` bytes, 256 KiB by default), so many small commands
/// cost one `read` call between them.
#[derive(Debug)]
pub struct ReadDecoder<R> {
    inner: R,
    profile: Profile,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    chunk: usize,
    eof: bool,
    /// Stream offset of `buf[start]`.
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
            buf: Vec::new(),
            start: 0,
            end: 0,
            chunk: chunk.max(CMD_HEADER_LEN),
            eof: false,
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

    /// Makes `buf[start..end]` hold at least `n` bytes, reading as needed.
    /// Returns how many it holds (fewer than `n` only at end of input).
    fn fill(&mut self, n: usize) -> Result<usize, ReadError> {
        while self.end - self.start < n && !self.eof {
            if self.buf.len() - self.start < n {
                // Move what is left to the front, and grow to fit `n`.
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
                // Room for several commands of this size, so that the move
                // above happens about once every few commands rather than
                // before each one.
                // (Commands of up to 1 MiB; a larger declared length gets
                // exactly its size, so a hostile header costs no more than
                // the profile's limit.)
                let want = if n <= 1 << 20 { n * 4 } else { n }.max(self.chunk);
                if self.buf.len() < want {
                    self.buf.resize(want, 0);
                }
            } else if self.end == self.buf.len() {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(k) => self.end += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(ReadError::Io {
                        offset: self.offset + (self.end - self.start) as u64,
                        source,
                    });
                }
            }
        }
        Ok(self.end - self.start)
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
        let s = self.start;
        self.start += n;
        self.offset += n as u64;
        self.ended = false;
        self.index = 0;
        Ok(Some(&self.buf[s..s + n]))
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
        let total = match frame_len(
            &self.buf[self.start..self.end],
            &self.profile,
            self.index,
            self.offset,
        ) {
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
        let s = self.start;
        match decode_command(
            &self.buf[s..s + total],
            &self.profile,
            self.index,
            self.offset,
        ) {
            Ok((c, n)) => {
                self.start += n;
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
