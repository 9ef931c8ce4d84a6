//! Random access to the bytes of a stream: [`Source`], over memory
//! (`&[u8]`, `Arc<[u8]>`), a file ([`FileSource`]: any `Read + Seek`, read
//! ahead through one page-aligned window) or byte ranges of another source
//! ([`Spans`]: the contexts a receiver selected).

use std::io::{self, Read, Seek, SeekFrom};

use proto_tlv::ReadBuf;

/// Random access to the bytes of a stream.
pub trait Source {
    /// Length of the stream in bytes.
    fn len(&self) -> u64;
    /// Whether the stream is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The `len` bytes at `offset`, which lie within the stream.
    fn read_at(&mut self, offset: u64, len: usize) -> io::Result<&[u8]>;
    /// How many bytes from `offset` on [`Source::read_at`] gives without
    /// joining pieces of the source (a copy): to the end by default.
    fn contiguous(&self, offset: u64) -> u64 {
        self.len().saturating_sub(offset)
    }
}

/// The end of `len` bytes at `offset` in a source of `total` bytes, or
/// `UnexpectedEof` when they run past it.
fn end_within(offset: u64, len: usize, total: u64) -> io::Result<u64> {
    offset
        .checked_add(len as u64)
        .filter(|e| *e <= total)
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end"))
}

/// `len` bytes of `bytes` at `offset`.
fn slice_at(bytes: &[u8], offset: u64, len: usize) -> io::Result<&[u8]> {
    let end = end_within(offset, len, bytes.len() as u64)?;
    Ok(&bytes[offset as usize..end as usize])
}

impl Source for &[u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }
    fn read_at(&mut self, offset: u64, len: usize) -> io::Result<&[u8]> {
        slice_at(self, offset, len)
    }
}

/// A stream held in memory and shared (a server re-opens it for each
/// transfer without copying it).
impl Source for std::sync::Arc<[u8]> {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }
    fn read_at(&mut self, offset: u64, len: usize) -> io::Result<&[u8]> {
        slice_at(self, offset, len)
    }
}

impl<S: Source + ?Sized> Source for Box<S> {
    fn len(&self) -> u64 {
        (**self).len()
    }
    fn read_at(&mut self, offset: u64, len: usize) -> io::Result<&[u8]> {
        (**self).read_at(offset, len)
    }
    fn contiguous(&self, offset: u64) -> u64 {
        (**self).contiguous(offset)
    }
}

/// A [`Source`] made of byte ranges of another, in order, read as one
/// stream: the streams of a file that a receiver selected (ranges as
/// [`list_streams`](crate::list_streams) gives them).
#[derive(Debug)]
pub struct Spans<S> {
    inner: S,
    /// (offset in `inner`, length, offset in this source).
    ranges: Vec<(u64, u64, u64)>,
    len: u64,
    scratch: Vec<u8>,
}

impl<S: Source> Spans<S> {
    /// The ranges `(offset, len)` of `inner`, in this order.
    ///
    /// Errors: a range that does not lie within `inner`.
    pub fn new(inner: S, ranges: &[(u64, u64)]) -> io::Result<Self> {
        let mut out = Vec::with_capacity(ranges.len());
        let mut at = 0u64;
        for &(off, len) in ranges {
            if off.checked_add(len).is_none_or(|e| e > inner.len()) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("range {off}+{len} past the end ({})", inner.len()),
                ));
            }
            out.push((off, len, at));
            at += len;
        }
        Ok(Spans {
            inner,
            ranges: out,
            len: at,
            scratch: Vec::new(),
        })
    }
}

impl<S> Spans<S> {
    /// The range holding `offset` (the last one whose start is at or before
    /// it): its index and (base in the inner source, length, start here).
    fn range_of(&self, offset: u64) -> Option<(usize, (u64, u64, u64))> {
        let i = self
            .ranges
            .partition_point(|r| r.2 <= offset)
            .saturating_sub(1);
        self.ranges.get(i).map(|r| (i, *r))
    }
}

impl<S: Source> Source for Spans<S> {
    fn len(&self) -> u64 {
        self.len
    }

    /// To the end of the range `offset` lies in (and no further than the
    /// inner source gives in one piece there).
    fn contiguous(&self, offset: u64) -> u64 {
        match self.range_of(offset) {
            Some((_, (base, rlen, at))) if offset < at + rlen => {
                (at + rlen - offset).min(self.inner.contiguous(base + (offset - at)))
            }
            _ => 0,
        }
    }

    fn read_at(&mut self, offset: u64, len: usize) -> io::Result<&[u8]> {
        let end = end_within(offset, len, self.len)?;
        let Some((i, (base, rlen, at))) = self.range_of(offset) else {
            return Ok(&[]);
        };
        if end <= at + rlen {
            return self.inner.read_at(base + (offset - at), len);
        }
        // Across ranges: gather into the scratch buffer.
        self.scratch.clear();
        let mut pos = offset;
        for &(base, rlen, at) in &self.ranges[i..] {
            if pos >= end {
                break;
            }
            let take = (end.min(at + rlen) - pos) as usize;
            let piece = self.inner.read_at(base + (pos - at), take)?;
            self.scratch.extend_from_slice(piece);
            pos += take as u64;
        }
        Ok(&self.scratch)
    }
}

/// A [`Source`] over a file (any `Read + Seek`), read ahead through one
/// reused buffer (a [`ReadBuf`], the routine every reader of the kit
/// fills its buffer with): sequential access reads each byte once, in
/// large reads; a seek costs one read.
#[derive(Debug)]
pub struct FileSource<R> {
    inner: R,
    len: u64,
    buf: ReadBuf,
    /// Stream offset of the first available byte in `buf`, which is where
    /// `inner`'s cursor was when the buffer was last cleared.
    at: u64,
}

/// Read-ahead of [`FileSource`].
pub const READ_AHEAD: usize = 1 << 20;

impl<R: Read + Seek> FileSource<R> {
    /// Wraps `inner`, whose length is found by seeking to its end.
    pub fn new(mut inner: R) -> io::Result<Self> {
        let len = inner.seek(SeekFrom::End(0))?;
        inner.seek(SeekFrom::Start(0))?;
        Ok(FileSource {
            inner,
            len,
            buf: ReadBuf::new(),
            at: 0,
        })
    }
}

impl<R: Read + Seek> Source for FileSource<R> {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&mut self, offset: u64, len: usize) -> io::Result<&[u8]> {
        let end = end_within(offset, len, self.len)?;
        let held = self.buf.available().len() as u64;
        if offset < self.at || offset > self.at + held {
            // Not within or right after what the buffer holds (`inner`'s
            // cursor is at its end): seek, and start over.
            self.inner.seek(SeekFrom::Start(offset))?;
            self.buf.clear();
            self.at = offset;
        } else if end > self.at + held {
            // Going on from what the buffer holds: drop what comes before
            // `offset`, and read on.
            self.buf.consume((offset - self.at) as usize);
            self.at = offset;
        }
        let from = (offset - self.at) as usize;
        let need = from + len;
        if self.buf.available().len() < need {
            let have = self.buf.fill_from(&mut self.inner, need, READ_AHEAD)?;
            if have < need {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file is shorter than it was when opened",
                ));
            }
        }
        Ok(&self.buf.available()[from..need])
    }
}
