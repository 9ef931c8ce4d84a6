//! The I/O a session's drivers are written against: one read, whole
//! writes, a flush. The drivers ([`Server`](super::Server),
//! [`Fetcher`](super::Fetcher)) are `async` code over [`Io`], written once;
//! [`Blocking`] runs them over a blocking `Read + Write` (its futures are
//! ready when first polled: the call blocks, as the blocking API says), and
//! with the feature `tokio` they run over an `AsyncRead + AsyncWrite`.

use std::future::Future;
use std::io::{self, IoSlice, Read, Write};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use super::SessionError;

/// A connection's bytes, as the session drivers use them.
pub(crate) trait Io {
    /// One read into `buf`: how many bytes came (0 at the end of input).
    fn read(&mut self, buf: &mut [u8]) -> impl Future<Output = io::Result<usize>>;
    /// Writes all of `buf`.
    fn write_all(&mut self, buf: &[u8]) -> impl Future<Output = io::Result<()>>;
    /// Writes all of `a`, then all of `b`, in vectored writes where the
    /// connection takes them.
    fn write_both(&mut self, a: &[u8], b: &[u8]) -> impl Future<Output = io::Result<()>>;
    /// Flushes what was written.
    fn flush(&mut self) -> impl Future<Output = io::Result<()>>;
}

/// A blocking `Read + Write` as an [`Io`] (its timeouts, if any, are its
/// own: a `TcpStream`'s read and write timeouts, say).
pub(crate) struct Blocking<S>(pub(crate) S);

impl<S: Read + Write> Io for Blocking<S> {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.0.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => return r,
            }
        }
    }

    async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf)
    }

    async fn write_both(&mut self, a: &[u8], b: &[u8]) -> io::Result<()> {
        let (mut a, mut b) = (a, b);
        while !a.is_empty() || !b.is_empty() {
            let n = match self.0.write_vectored(&[IoSlice::new(a), IoSlice::new(b)]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let k = n.min(a.len());
            a = &a[k..];
            b = &b[(n - k).min(b.len())..];
        }
        Ok(())
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// Runs a driver over [`Blocking`] I/O to its end: every future it awaits
/// is ready when first polled, so one poll completes it.
pub(crate) fn run_blocking<T>(
    driver: impl Future<Output = Result<T, SessionError>>,
) -> Result<T, SessionError> {
    let mut driver = pin!(driver);
    match driver
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(r) => r,
        // Not reached: no blocking future is ever pending.
        Poll::Pending => Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            "a blocking session driver was left pending",
        )
        .into()),
    }
}

/// An `AsyncRead + AsyncWrite` as an [`Io`] (feature `tokio`): every read,
/// write and flush bounded by one timeout.
#[cfg(feature = "tokio")]
pub(crate) struct Tokio<S> {
    io: S,
    timeout: std::time::Duration,
}

#[cfg(feature = "tokio")]
impl<S> Tokio<S> {
    pub(crate) fn new(io: S, timeout: std::time::Duration) -> Self {
        Tokio { io, timeout }
    }
}

/// `op`, or a `TimedOut` error naming `what` when it takes longer than
/// `limit`.
#[cfg(feature = "tokio")]
pub(crate) async fn timed<T>(
    limit: std::time::Duration,
    what: &str,
    op: impl Future<Output = io::Result<T>>,
) -> io::Result<T> {
    match tokio::time::timeout(limit, op).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{what}: nothing for {} s", limit.as_secs_f64()),
        )),
    }
}

#[cfg(feature = "tokio")]
impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> Io for Tokio<S> {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use tokio::io::AsyncReadExt;
        timed(self.timeout, "reading", self.io.read(buf)).await
    }

    async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.write_both(buf, &[]).await
    }

    async fn write_both(&mut self, a: &[u8], b: &[u8]) -> io::Result<()> {
        use tokio::io::AsyncWriteExt;
        let (mut a, mut b) = (a, b);
        while !a.is_empty() || !b.is_empty() {
            let slices = [IoSlice::new(a), IoSlice::new(b)];
            let n = timed(self.timeout, "writing", self.io.write_vectored(&slices)).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            let k = n.min(a.len());
            a = &a[k..];
            b = &b[(n - k).min(b.len())..];
        }
        Ok(())
    }

    async fn flush(&mut self) -> io::Result<()> {
        use tokio::io::AsyncWriteExt;
        timed(self.timeout, "flushing", self.io.flush()).await
    }
}
