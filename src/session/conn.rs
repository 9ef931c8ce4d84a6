//! One connection: the sans-IO [`Framer`] driven over an [`Io`], a
//! blocking `Read + Write` or (feature `tokio`) an `AsyncRead + AsyncWrite`.

use std::io;

use proto_session::framer::{FrameAt, Framer};
use proto_session::handshake::{Established, Handshake};
use proto_tlv::Command;

use super::io::Io;
use super::SessionError;

/// Writes are gathered up to this many bytes before they go out.
const WBUF: usize = 256 * 1024;

pub(crate) struct Conn<S> {
    io: S,
    f: Framer,
}

impl<S: Io> Conn<S> {
    pub(crate) fn new(io: S) -> Self {
        Conn {
            io,
            f: Framer::new(),
        }
    }

    /// The framer, to write frames into.
    pub(crate) fn framer(&mut self) -> &mut Framer {
        &mut self.f
    }

    /// Bytes read from the peer (framed so far).
    pub(crate) fn in_bytes(&self) -> u64 {
        self.f.in_bytes()
    }

    /// One read from the connection into the framer.
    pub(crate) async fn read_more(&mut self) -> Result<(), SessionError> {
        let n = self.io.read(self.f.recv_buf()).await?;
        self.f.received(n);
        Ok(())
    }

    /// Runs the shared handshake to its end (fixed headers, negotiation,
    /// HELLOs), then frames up to the session's maximum.
    pub(crate) async fn handshake(
        &mut self,
        mut hs: Handshake,
    ) -> Result<Established, SessionError> {
        loop {
            let done = hs.poll(&mut self.f)?;
            self.flush().await?;
            if let Some(e) = done {
                return Ok(e);
            }
            self.read_more().await?;
        }
    }

    /// The handshake is over: frames up to the session's maximum.
    pub(crate) fn handshake_done(&mut self) {
        self.f.handshake_done();
    }

    async fn next_frame(&mut self, during: &'static str) -> Result<FrameAt, SessionError> {
        loop {
            if let Some(at) = self.f.next_frame(during)? {
                return Ok(at);
            }
            self.read_more().await?;
        }
    }

    /// Reads one frame. A REFUSE frame is returned as
    /// [`SessionError::Refused`].
    pub(crate) async fn read_frame(
        &mut self,
        during: &'static str,
    ) -> Result<Command<'_>, SessionError> {
        let at = self.next_frame(during).await?;
        self.f.frame(at)
    }

    /// Whether enough bytes are gathered to send them ([`Conn::flush`]).
    pub(crate) fn gathered(&self) -> bool {
        self.f.pending().len() >= WBUF
    }

    /// Writes the gathered bytes then `tail` (a DATA payload the framer did
    /// not copy), in vectored writes where the connection takes them (a
    /// TCP socket with `TCP_NODELAY` would send the gathered frame prefix
    /// as a segment of its own otherwise).
    pub(crate) async fn write_body(&mut self, tail: &[u8]) -> io::Result<()> {
        self.io.write_both(self.f.pending(), tail).await?;
        self.f.output_sent(usize::MAX);
        Ok(())
    }

    pub(crate) async fn flush(&mut self) -> Result<(), SessionError> {
        if !self.f.pending().is_empty() {
            self.io.write_all(self.f.pending()).await?;
            self.f.output_sent(usize::MAX);
        }
        self.io.flush().await?;
        Ok(())
    }

    /// Tells the peer why, best effort, and gives the error back.
    pub(crate) async fn refuse(&mut self, err: SessionError) -> SessionError {
        if self.f.refuse(&err) {
            let _ = self.flush().await;
        }
        err
    }
}
