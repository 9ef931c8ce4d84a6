//! Fault injection for tests, examples and the CLI (feature
//! `fault-injection`).

use std::io::{self, Read, Write};

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
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
