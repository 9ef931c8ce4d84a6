//! One connection: buffered frame reading and writing over a `Read + Write`.

use std::io::{self, IoSlice, Read, Write};

use proto_header::{FixedHeaderFormat, ParsedFixed, VersionRange};
use proto_tlv::{
    crc32c_shift, decode_command, encode_command, frame_len, AttrValue, Command, CrcVariant,
    Profile, Value, CMD_HEADER_LEN,
};

use super::{attr, frame, Code, SessionError, HANDSHAKE_PROFILE, SESSION_PROFILE};

/// Writes are gathered up to this many bytes; larger payloads go straight
/// to the connection.
const WBUF: usize = 256 * 1024;
/// The read buffer: small during the handshake, then large enough that a
/// 128 KiB DATA frame cut by the end of the buffer (and moved to its front)
/// is rare, and reads take up to this much.
const RBUF_HANDSHAKE: usize = 16 * 1024;
const RBUF: usize = 1024 * 1024;
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
    /// The read buffer's size (grown for larger frames).
    rmin: usize,
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
            rmin: RBUF_HANDSHAKE,
            wbuf: Vec::with_capacity(WBUF),
        }
    }

    /// The handshake is over: frames up to the session's maximum.
    pub(crate) fn handshake_done(&mut self) {
        self.profile = SESSION_PROFILE;
        self.rmin = RBUF;
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
                if self.rbuf.len() < n.max(self.rmin) {
                    self.rbuf.resize(n.max(self.rmin), 0);
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
        let (s, total, index, offset) = self.next_frame(during)?;
        self.decode(s, total, index, offset)
    }

    /// Reads one frame, a DATA frame of a large unit on the fast path: its
    /// CRC is not computed over its bytes but derived from its unit's own
    /// CRC ([`data_crc_from_unit`]); when that matches the frame's, the
    /// frame's CRC holds exactly when the unit's does, which the receiver's
    /// check of the unit computes anyway (one pass over the bytes instead of
    /// two). Any other frame is decoded as [`Conn::read_frame`] does.
    ///
    /// `unit_crc`: the CRC variant of the commands now arriving (the
    /// receiver's validator knows it once the stream header is in); `None`
    /// reads every frame in full.
    pub(crate) fn read_incoming(
        &mut self,
        during: &'static str,
        unit_crc: Option<CrcVariant>,
    ) -> Result<Incoming<'_>, SessionError> {
        let (s, total, index, offset) = self.next_frame(during)?;
        let bytes = &self.rbuf[s..s + total];
        if let Some((seq, payload)) = unit_crc.and_then(|crc| fast_data(bytes, crc)) {
            return Ok(Incoming::Data(Data {
                seq,
                payload,
                frame: bytes,
                index,
                offset,
            }));
        }
        self.decode(s, total, index, offset).map(Incoming::Frame)
    }

    /// Reads the next frame's bytes: (start in `rbuf`, length, frame index,
    /// byte offset).
    fn next_frame(
        &mut self,
        during: &'static str,
    ) -> Result<(usize, usize, u64, u64), SessionError> {
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
        Ok((s, total, index, offset))
    }

    /// Decodes the frame at `rbuf[s..s + total]`.
    fn decode(
        &self,
        s: usize,
        total: usize,
        index: u64,
        offset: u64,
    ) -> Result<Command<'_>, SessionError> {
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
    /// the connection when it is large (one copy fewer). `unit_crc`: the CRC
    /// variant of the stream's commands, when every stream sent has the
    /// same; `None` checksums every frame over its bytes.
    pub(crate) fn write_data(
        &mut self,
        seq: u64,
        payload: &[u8],
        unit_crc: Option<CrcVariant>,
    ) -> Result<(), SessionError> {
        let len = (DATA_PREFIX - CMD_HEADER_LEN + payload.len()) as u32;
        let mut p = [0u8; DATA_PREFIX];
        p[0..4].copy_from_slice(&len.to_le_bytes());
        p[4..6].copy_from_slice(&frame::DATA.to_le_bytes());
        p[10..12].copy_from_slice(&attr::SEQ.to_le_bytes());
        p[12..14].copy_from_slice(&8u16.to_le_bytes());
        p[14..22].copy_from_slice(&seq.to_le_bytes());
        p[22..24].copy_from_slice(&attr::PAYLOAD.to_le_bytes());
        // A large command's frame CRC comes from the command's own CRC (the
        // emitter checked it, or made it for a piece of a split write): the
        // unit is checksummed once on this side, not twice.
        let derived = unit_crc.and_then(|crc| data_crc_from_unit(&p, payload, crc));
        let sum = derived.unwrap_or_else(|| {
            let crc = SESSION_PROFILE.crc;
            let state = crc.update(crc.header_state(&p), &p[CMD_HEADER_LEN..]);
            crc.finish(crc.update(state, payload))
        });
        p[6..10].copy_from_slice(&sum.to_le_bytes());
        if self.wbuf.len() + p.len() + payload.len() > WBUF {
            self.flush()?;
        }
        self.wbuf.extend_from_slice(&p);
        if payload.len() >= WBUF / 2 {
            self.write_with(payload)?;
        } else {
            self.wbuf.extend_from_slice(payload);
        }
        Ok(())
    }

    /// Writes the gathered bytes then `tail`, in one vectored write where
    /// the connection takes it (a TCP socket with `TCP_NODELAY` would send
    /// the gathered frame prefix as a segment of its own otherwise).
    fn write_with(&mut self, tail: &[u8]) -> io::Result<()> {
        let (mut a, mut b) = (&self.wbuf[..], tail);
        while !a.is_empty() || !b.is_empty() {
            let n = match self.io.write_vectored(&[IoSlice::new(a), IoSlice::new(b)]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let k = n.min(a.len());
            a = &a[k..];
            b = &b[(n - k).min(b.len())..];
        }
        self.wbuf.clear();
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
        let code = err.code().to_u16();
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

/// A DATA frame read on the fast path ([`Conn::read_incoming`]): its CRC
/// is known to hold exactly when its unit's own CRC does.
pub(crate) struct Data<'a> {
    /// Its seq.
    pub(crate) seq: u64,
    /// Its unit.
    pub(crate) payload: &'a [u8],
    frame: &'a [u8],
    index: u64,
    offset: u64,
}

impl Data<'_> {
    /// Checks the frame as [`Conn::read_frame`] would have: for a unit whose
    /// own check failed or was not made (a duplicate, a seq refused), so
    /// that a frame damaged in transit is named as such.
    pub(crate) fn verify(&self) -> Result<(), SessionError> {
        decode_command(self.frame, &SESSION_PROFILE, self.index, self.offset)?;
        Ok(())
    }
}

/// What [`Conn::read_incoming`] read.
pub(crate) enum Incoming<'a> {
    /// A DATA frame on the fast path.
    Data(Data<'a>),
    /// Any other frame (a DATA frame included), decoded and checked.
    Frame(Command<'a>),
}

/// The seq and unit of a DATA frame laid out as [`Conn::write_data`] lays
/// it out, whose unit frames as a large command and whose CRC matches the
/// one derived from the unit's own CRC.
fn fast_data(bytes: &[u8], unit_crc: CrcVariant) -> Option<(u64, &[u8])> {
    let p = bytes.get(..DATA_PREFIX)?;
    let u16_at = |i: usize| u16::from_le_bytes([p[i], p[i + 1]]);
    if u16_at(4) != frame::DATA
        || u16_at(10) != attr::SEQ
        || u16_at(12) != 8
        || u16_at(22) != attr::PAYLOAD
    {
        return None;
    }
    let payload = &bytes[DATA_PREFIX..];
    let stored = u32::from_le_bytes([p[6], p[7], p[8], p[9]]);
    if data_crc_from_unit(p, payload, unit_crc)? != stored {
        return None;
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&p[14..22]);
    Some((u64::from_le_bytes(seq), payload))
}

/// The CRC of a DATA frame (its [`DATA_PREFIX`] bytes, then `unit`), for a
/// unit of at least 4 KiB that frames as a command checksummed with
/// `unit_crc`, computed from the command's own CRC instead of its bytes
/// ([`command_register`]): correct exactly when that command's CRC is.
/// `None` for other units.
fn data_crc_from_unit(prefix: &[u8], unit: &[u8], unit_crc: CrcVariant) -> Option<u32> {
    let reg = command_register(unit, unit_crc)?;
    let crc = SESSION_PROFILE.crc;
    let state = crc.update(
        crc.header_state(prefix),
        prefix.get(CMD_HEADER_LEN..DATA_PREFIX)?,
    );
    // update(s, P) = !(L(!s, 0^n) ^ L(0, P)): `update` inverts on the way
    // in and out, L (the raw register) is linear.
    Some(crc.finish(!(crc32c_shift(!state, unit.len() as u64) ^ reg)))
}

/// `L(0, unit)`: the raw CRC-32C register (seed 0, no inversions) after a
/// unit that frames as a command (its length field matches) checksummed
/// with `variant`, computed from the command's own CRC instead of its
/// bytes, so the server checksums each unit once (the emitter's check)
/// rather than twice.
///
/// Let `Z` be the command with its CRC field zeroed, `n` its length. `L`
/// is linear in the start register and in the bytes, and
/// `L(r, 0^n) = crc32c_shift(r, n)`. The stored CRC `c` gives `L(0, Z)`:
/// - `CrcVariant::BtrfsRaw` (seed 0, no final inversion): `c = L(0, Z)`;
/// - `CrcVariant::Standard` (seed and final XOR `!0`):
///   `c = !L(!0, Z) = !(shift(!0, n) ^ L(0, Z))`, so
///   `L(0, Z) = !c ^ shift(!0, n)`.
///
/// Then `L(0, unit) = L(0, Z) ^ L(0, [0; 6] ++ c ++ [0; n - 10])`, the
/// second term the register of the 4 CRC bytes carried through `n - 10`
/// zero bytes.
///
/// Every unit a server sends is a stream header (which never frames as a
/// command: its length field would read part of its magic, far more than
/// the unit) or a command whose CRC the emitter checked, or made for a
/// piece of a split write. Were a command's CRC wrong all the same (or
/// `variant` not its stream's), the DATA frame's CRC would come out wrong
/// and the receiver would refuse the frame: nothing wrong is ever accepted.
fn command_register(unit: &[u8], variant: CrcVariant) -> Option<u32> {
    let h: [u8; CMD_HEADER_LEN] = unit.get(..CMD_HEADER_LEN)?.try_into().ok()?;
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
    if len.checked_add(CMD_HEADER_LEN)? != unit.len() || unit.len() < 4096 {
        // Short units: a CRC call is as cheap as the shifts.
        return None;
    }
    let stored = u32::from_le_bytes([h[6], h[7], h[8], h[9]]);
    let zeroed = match variant {
        CrcVariant::BtrfsRaw => stored,
        CrcVariant::Standard => !stored ^ crc32c_shift(!0, unit.len() as u64),
    };
    let field = CrcVariant::BtrfsRaw.checksum(&h[6..10]);
    Some(zeroed ^ crc32c_shift(field, len as u64))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A unit of `n` data bytes checksummed with `crc`: one command whose
    /// data attribute runs to its end (as btrfs v2 and `PRSTREAM` data
    /// commands do).
    fn unit(crc: CrcVariant, data: &[u8]) -> Vec<u8> {
        let profile = Profile {
            crc,
            max_payload_len: 1 << 20,
            unbounded_data_attr: Some(7),
            end_cmd: 0xffff,
        };
        let mut out = Vec::new();
        let attrs = [
            AttrValue::new(1, Value::U64(42)),
            AttrValue::new(7, Value::Bytes(data)),
        ];
        encode_command(&profile, 16, &attrs, &mut out).unwrap();
        out
    }

    /// For both CRC variants, the DATA frame's CRC derived from a command's
    /// own CRC equals the CRC of its bytes; the fast path reads the frame
    /// back under the right variant only; and a (long) command whose CRC is
    /// wrong gives a frame the receiver refuses.
    #[test]
    fn data_crc_from_the_command_crc() {
        let data: Vec<u8> = (0..200_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for variant in [CrcVariant::BtrfsRaw, CrcVariant::Standard] {
            let other = match variant {
                CrcVariant::BtrfsRaw => CrcVariant::Standard,
                CrcVariant::Standard => CrcVariant::BtrfsRaw,
            };
            for n in [0, 1, 4095, 4096, 70_000, 200_000] {
                let unit = unit(variant, &data[..n]);
                for damage in [false, true] {
                    let what = format!("{variant:?}, {n} bytes, damaged: {damage}");
                    let mut unit = unit.clone();
                    if damage {
                        let last = unit.len() - 1;
                        unit[last] ^= 1;
                    }
                    let mut conn = Conn::new(io::Cursor::new(Vec::new()));
                    conn.write_data(7, &unit, Some(variant)).unwrap();
                    conn.flush().unwrap();
                    let out = conn.io.into_inner();
                    let r = decode_command(&out, &SESSION_PROFILE, 0, 0);
                    // Short units are checksummed directly: their frame is
                    // sound, and the receiver's check of the unit refuses it.
                    let derived = unit.len() >= 4096;
                    assert_eq!(r.is_ok(), !(damage && derived), "{what}");
                    if let Ok((c, len)) = r {
                        assert_eq!(len, out.len(), "{what}");
                        assert!(c.attr(attr::PAYLOAD).unwrap().value() == &unit[..]);
                    }
                    let fast = fast_data(&out, variant);
                    assert_eq!(fast.is_some(), derived, "{what}");
                    if let Some((seq, payload)) = fast {
                        assert_eq!(seq, 7, "{what}");
                        assert!(payload == &unit[..], "{what}");
                    }
                    if derived && !damage {
                        assert!(fast_data(&out, other).is_none(), "{what}: other variant");
                    }
                }
            }
        }
    }
}
