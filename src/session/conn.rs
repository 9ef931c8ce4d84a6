//! One connection: buffered frame reading and writing over a `Read + Write`.

use std::io::{self, Read, Write};

use proto_header::{FixedHeaderFormat, ParsedFixed, VersionRange};
use proto_tlv::{
    decode_command, encode_command, frame_len, AttrValue, Command, Profile, Value, CMD_HEADER_LEN,
};

use super::{attr, frame, Code, SessionError, HANDSHAKE_PROFILE, SESSION_PROFILE};

/// Writes are gathered up to this many bytes; larger payloads go straight
/// to the connection.
const WBUF: usize = 256 * 1024;
const RBUF: usize = 256 * 1024;
/// Header, SEQ attribute and PAYLOAD type of a DATA frame.
const DATA_PREFIX: usize = CMD_HEADER_LEN + 12 + 2;

pub(crate) struct Conn<S> {
    io: S,
    rbuf: Vec<u8>,
    rs: usize,
    re: usize,
    /// Bytes taken from the peer before `rbuf[rs]`, and frames read.
    in_off: u64,
    in_frames: u64,
    /// Header phase: frames limited to the handshake's size.
    profile: Profile,
    wbuf: Vec<u8>,
}

impl<S: Read + Write> Conn<S> {
    pub(crate) fn new(io: S) -> Self {
        Conn {
            io,
            rbuf: Vec::new(),
            rs: 0,
            re: 0,
            in_off: 0,
            in_frames: 0,
            profile: HANDSHAKE_PROFILE,
            wbuf: Vec::with_capacity(WBUF),
        }
    }

    /// The handshake is over: frames up to the session's maximum.
    pub(crate) fn handshake_done(&mut self) {
        self.profile = SESSION_PROFILE;
    }

    /// Bytes read from the peer (framed so far).
    pub(crate) fn in_bytes(&self) -> u64 {
        self.in_off
    }

    /// Reads until `n` bytes are buffered or the peer closes; returns the
    /// bytes buffered.
    fn fill(&mut self, n: usize) -> io::Result<usize> {
        while self.re - self.rs < n {
            if self.rbuf.len() - self.rs < n || self.re == self.rbuf.len() {
                self.rbuf.copy_within(self.rs..self.re, 0);
                self.re -= self.rs;
                self.rs = 0;
                if self.rbuf.len() < n {
                    self.rbuf.resize(n.max(RBUF), 0);
                }
            }
            match self.io.read(&mut self.rbuf[self.re..]) {
                Ok(0) => break,
                Ok(k) => self.re += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(self.re - self.rs)
    }

    /// Reads the peer's fixed header.
    pub(crate) fn read_fixed(
        &mut self,
        format: &FixedHeaderFormat,
    ) -> Result<ParsedFixed, SessionError> {
        let n = format.encoded_len();
        let have = self.fill(n)?;
        if have < n {
            return Err(SessionError::Closed {
                during: "in its fixed header",
                offset: self.in_off + have as u64,
            });
        }
        let parsed = format.parse(&self.rbuf[self.rs..self.rs + n]);
        self.rs += n;
        self.in_off += n as u64;
        Ok(parsed?)
    }

    /// Reads one frame. A REFUSE frame is returned as
    /// [`SessionError::Refused`].
    pub(crate) fn read_frame(&mut self, during: &'static str) -> Result<Command<'_>, SessionError> {
        let have = self.fill(CMD_HEADER_LEN)?;
        if have < CMD_HEADER_LEN {
            return Err(SessionError::Closed {
                during,
                offset: self.in_off + have as u64,
            });
        }
        let (index, offset) = (self.in_frames, self.in_off);
        let total = frame_len(&self.rbuf[self.rs..self.re], &self.profile, index, offset)?;
        let have = self.fill(total)?;
        if have < total {
            return Err(SessionError::Closed {
                during,
                offset: self.in_off + have as u64,
            });
        }
        let s = self.rs;
        self.rs += total;
        self.in_off += total as u64;
        self.in_frames += 1;
        let (c, _) = decode_command(&self.rbuf[s..s + total], &self.profile, index, offset)?;
        if c.cmd() == frame::REFUSE {
            let code = c
                .attr(attr::CODE)
                .and_then(|a| a.as_u16().ok())
                .unwrap_or(0);
            let message = c
                .attr(attr::MESSAGE)
                .map(|a| String::from_utf8_lossy(a.value()).into_owned())
                .unwrap_or_default();
            return Err(SessionError::Refused {
                code: Code::from_u16(code),
                message,
            });
        }
        Ok(c)
    }

    pub(crate) fn write_raw(&mut self, bytes: &[u8]) {
        self.wbuf.extend_from_slice(bytes);
    }

    pub(crate) fn write_fixed(&mut self, format: &FixedHeaderFormat, range: VersionRange) {
        let mut h = Vec::new();
        // The range is ours and valid, and native formats take any u32.
        if format.encode(range.max, range.min, &mut h).is_ok() {
            self.write_raw(&h);
        }
    }

    pub(crate) fn write_frame(
        &mut self,
        ty: u16,
        attrs: &[AttrValue<'_>],
    ) -> Result<(), SessionError> {
        encode_command(&SESSION_PROFILE, ty, attrs, &mut self.wbuf)?;
        if self.wbuf.len() >= WBUF {
            self.flush()?;
        }
        Ok(())
    }

    pub(crate) fn write_seq(&mut self, ty: u16, seq: u64) -> Result<(), SessionError> {
        self.write_frame(ty, &[AttrValue::new(attr::SEQ, Value::U64(seq))])
    }

    /// A DATA frame: header, SEQ, then the payload, which goes straight to
    /// the connection when it is large (one copy fewer).
    pub(crate) fn write_data(&mut self, seq: u64, payload: &[u8]) -> Result<(), SessionError> {
        let len = (DATA_PREFIX - CMD_HEADER_LEN + payload.len()) as u32;
        let mut p = [0u8; DATA_PREFIX];
        p[0..4].copy_from_slice(&len.to_le_bytes());
        p[4..6].copy_from_slice(&frame::DATA.to_le_bytes());
        p[10..12].copy_from_slice(&attr::SEQ.to_le_bytes());
        p[12..14].copy_from_slice(&8u16.to_le_bytes());
        p[14..22].copy_from_slice(&seq.to_le_bytes());
        p[22..24].copy_from_slice(&attr::PAYLOAD.to_le_bytes());
        let crc = SESSION_PROFILE.crc;
        let state = crc.update(crc.header_state(&p), &p[CMD_HEADER_LEN..]);
        let sum = crc.finish(crc.update(state, payload));
        p[6..10].copy_from_slice(&sum.to_le_bytes());
        if self.wbuf.len() + p.len() + payload.len() > WBUF {
            self.flush()?;
        }
        self.wbuf.extend_from_slice(&p);
        if payload.len() >= WBUF / 2 {
            self.flush()?;
            self.io.write_all(payload)?;
        } else {
            self.wbuf.extend_from_slice(payload);
        }
        Ok(())
    }

    pub(crate) fn flush(&mut self) -> Result<(), SessionError> {
        if !self.wbuf.is_empty() {
            self.io.write_all(&self.wbuf)?;
            self.wbuf.clear();
        }
        self.io.flush()?;
        Ok(())
    }

    /// Tells the peer why, best effort, and gives the error back.
    pub(crate) fn refuse(&mut self, err: SessionError) -> SessionError {
        if matches!(err, SessionError::Refused { .. }) || err.retryable() {
            return err;
        }
        let mut message = err.to_string();
        if message.len() > 4096 {
            let mut cut = 4096;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let code = err.code() as u16;
        let sent = self.write_frame(
            frame::REFUSE,
            &[
                AttrValue::new(attr::CODE, Value::U16(code)),
                AttrValue::new(attr::MESSAGE, Value::Bytes(message.as_bytes())),
            ],
        );
        if sent.is_ok() {
            let _ = self.flush();
        }
        err
    }
}

/// A required u64 attribute of a frame.
pub(crate) fn u64_attr(c: &Command<'_>, ty: u16) -> Result<u64, SessionError> {
    Ok(c.require(ty)?.as_u64()?)
}

/// Checks a frame's type.
pub(crate) fn expect(c: &Command<'_>, ty: u16) -> Result<(), SessionError> {
    if c.cmd() == ty {
        Ok(())
    } else {
        Err(SessionError::Unexpected {
            expected: frame::name(ty),
            got: c.cmd(),
            offset: c.offset(),
        })
    }
}
