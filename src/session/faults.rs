//! Fault injection for tests, examples and the CLI (feature
//! `fault-injection`).

use std::io::{self, IoSlice, Read, Write};

/// A connection that fails after every `every` bytes read or written (fault
/// injection for tests and the CLI's `--drop-every`): the read or write that
/// would cross the limit transfers up to it, and the next one fails with
/// `ConnectionAborted`.
#[derive(Debug)]
pub struct DropEvery<S> {
    inner: S,
    every: u64,
    count: u64,
}

impl<S> DropEvery<S> {
    /// Wraps `inner`; `every` of 0 never drops.
    pub fn new(inner: S, every: u64) -> Self {
        DropEvery {
            inner,
            every,
            count: 0,
        }
    }

    fn budget(&self, want: usize) -> io::Result<usize> {
        if self.every == 0 {
            return Ok(want);
        }
        let left = self.every.saturating_sub(self.count);
        if left == 0 && want > 0 {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!(
                    "fault injection: connection dropped after {} bytes",
                    self.count
                ),
            ));
        }
        Ok(want.min(usize::try_from(left).unwrap_or(usize::MAX)))
    }
}

impl<S: Read> Read for DropEvery<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.budget(buf.len())?;
        let k = self.inner.read(&mut buf[..n])?;
        self.count += k as u64;
        Ok(k)
    }
}

impl<S: Write> Write for DropEvery<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.budget(buf.len())?;
        let k = self.inner.write(&buf[..n])?;
        self.count += k as u64;
        Ok(k)
    }
    /// Vectored as the connection is (a large DATA frame goes out with its
    /// prefix in one write), cut at the limit like `write`.
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let n = self.budget(total)?;
        if n < total {
            let first = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &b[..]);
            return self.write(&first[..first.len().min(n)]);
        }
        let k = self.inner.write_vectored(bufs)?;
        self.count += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectored writes pass whole when there is no limit, and stop at the
    /// limit (then fail) when there is one.
    #[test]
    fn vectored_writes_pass_or_stop_at_the_limit() {
        let bufs = [IoSlice::new(b"12345678"), IoSlice::new(b"abcdefgh")];
        let mut plain = DropEvery::new(Vec::new(), 0);
        assert_eq!(plain.write_vectored(&bufs).unwrap(), 16);
        assert_eq!(&plain.inner[..], b"12345678abcdefgh");

        let mut cut = DropEvery::new(Vec::new(), 10);
        let mut sent = 0;
        let err = loop {
            let rest: Vec<u8> = b"12345678abcdefgh"[sent..].to_vec();
            match cut.write_vectored(&[IoSlice::new(&rest)]) {
                Ok(n) => sent += n,
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
        assert_eq!(&cut.inner[..], b"12345678ab");
        let mut cut = DropEvery::new(Vec::new(), 10);
        assert_eq!(cut.write_vectored(&bufs).unwrap(), 8);
        assert_eq!(cut.write_vectored(&[IoSlice::new(b"abcdefgh")]).unwrap(), 2);
        assert!(cut.write_vectored(&[IoSlice::new(b"cdefgh")]).is_err());
    }
}
