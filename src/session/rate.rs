//! A connection whose writes are held to a rate.

use std::io::{self, IoSlice, Read, Write};
use std::time::{Duration, Instant};

/// Wraps a connection so that what is written through it goes out at no
/// more than `bytes_per_s` on average (reads pass through): each write is
/// cut to a tenth of a second's worth and waits until the bytes before it
/// are due. The average holds from the wrap on, so a stall is not made up
/// for in a burst larger than a tenth of a second's worth.
#[derive(Debug)]
pub struct RateLimit<S> {
    inner: S,
    rate: u64,
    start: Instant,
    sent: u64,
}

impl<S> RateLimit<S> {
    /// Wraps `inner`; `bytes_per_s` of 0 is no limit.
    pub fn new(inner: S, bytes_per_s: u64) -> Self {
        RateLimit {
            inner,
            rate: bytes_per_s,
            start: Instant::now(),
            sent: 0,
        }
    }

    /// How many of `want` bytes may go now, after waiting as needed.
    fn admit(&mut self, want: usize) -> usize {
        if self.rate == 0 || want == 0 {
            return want;
        }
        let burst = (self.rate / 10).max(1);
        let n = (want as u64).min(burst);
        // Due: when the bytes before these are paid for, less one burst.
        let due = Duration::from_secs_f64(
            (self.sent + n).saturating_sub(burst) as f64 / self.rate as f64,
        );
        let now = self.start.elapsed();
        if now < due {
            std::thread::sleep(due - now);
        } else if now > due + Duration::from_millis(100) {
            // Idle time is not saved up beyond one burst.
            let behind = now - due - Duration::from_millis(100);
            self.sent += (behind.as_secs_f64() * self.rate as f64) as u64;
        }
        n as usize
    }
}

impl<S: Read> Read for RateLimit<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

impl<S: Write> Write for RateLimit<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.admit(buf.len());
        let k = self.inner.write(&buf[..n])?;
        self.sent += k as u64;
        Ok(k)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &b[..]);
        self.write(first)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 300 KB at 1 MB/s take at least 0.2 s (one burst of 0.1 s goes at
    /// once). Only the lower bound is checked: a busy machine is slower.
    #[test]
    fn writes_are_held_to_the_rate() {
        let mut w = RateLimit::new(Vec::new(), 1_000_000);
        let t = Instant::now();
        let data = vec![7u8; 300_000];
        w.write_all(&data).unwrap();
        let took = t.elapsed();
        assert_eq!(w.inner, data);
        assert!(took >= Duration::from_millis(190), "{took:?}");
    }

    #[test]
    fn zero_is_no_limit() {
        let mut w = RateLimit::new(Vec::new(), 0);
        w.write_all(&vec![1u8; 10 << 20]).unwrap();
        assert_eq!(w.inner.len(), 10 << 20);
    }
}
