//! One connection's bytes, sans-IO: the peer's fixed header and frames
//! out of whatever arrived, frames into a buffer for the caller to send.
//!
//! The caller owns the I/O. Input: read into [`Framer::recv_buf`] and report
//! how much with [`Framer::received`] (0: the peer closed); then
//! [`Framer::fixed`] and [`Framer::next_frame`] return `Ok(None)` until a
//! whole header or frame is buffered. Output: every `write_*` appends to
//! [`Framer::pending`]; send it and report it with [`Framer::output_sent`].
//! A large DATA payload is not copied: [`Framer::write_data`] says when it
//! must go right after the pending bytes (one vectored write).
//!
//! ```
//! use proto_session::framer::{u64_attr, Framer};
//! use proto_session::wire::{attr, frame, SESSION_FORMAT, SESSION_VERSIONS};
//!
//! let mut a = Framer::new();
//! a.write_fixed(&SESSION_FORMAT, SESSION_VERSIONS);
//! a.write_seq(frame::ACK, 7).unwrap();
//! let wire = a.pending().to_vec();
//! a.output_sent(wire.len());
//!
//! // The peer gets the bytes one at a time.
//! let mut b = Framer::new();
//! let mut fed = 0;
//! let fixed = loop {
//!     if let Some(h) = b.fixed(&SESSION_FORMAT).unwrap() {
//!         break h;
//!     }
//!     b.recv_buf()[0] = wire[fed];
//!     b.received(1);
//!     fed += 1;
//! };
//! assert_eq!(fixed.range(), SESSION_VERSIONS);
//! let at = loop {
//!     if let Some(at) = b.next_frame("in the test").unwrap() {
//!         break at;
//!     }
//!     b.recv_buf()[0] = wire[fed];
//!     b.received(1);
//!     fed += 1;
//! };
//! let c = b.frame(at).unwrap();
//! assert_eq!(c.cmd(), frame::ACK);
//! assert_eq!(u64_attr(&c, attr::SEQ).unwrap(), 7);
//! ```

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use proto_header::{FixedHeaderFormat, ParsedFixed, VersionRange};
use proto_tlv::{
    crc32c_shift, decode_command, encode_command, frame_len, AttrValue, CmdBuf, Command,
    CrcVariant, Profile, Value, CMD_HEADER_LEN,
};

use crate::error::SessionError;
use crate::wire::{attr, frame, Code, HANDSHAKE_PROFILE, SESSION_PROFILE};

/// The read buffer: small during the handshake, then large enough that a
/// 128 KiB DATA frame cut by the end of the buffer (and moved to its front)
/// is rare, and reads take up to this much.
const RBUF_HANDSHAKE: usize = 16 * 1024;
const RBUF: usize = 1024 * 1024;
/// A DATA payload at least this large is not copied into the output: the
/// caller sends it after the pending bytes.
pub const INLINE_MAX: usize = 128 * 1024;

/// A DATA frame carrying a command of at least this many bytes takes its
/// CRC from the command's own (checked by the sender's emitter as it
/// copies it) instead of a pass over its bytes; a shorter one is
/// checksummed over its bytes (a CRC call costs what the shifts do).
pub const DERIVED_FROM: usize = 4096;
/// Header, SEQ attribute and PAYLOAD type of a DATA frame.
const DATA_PREFIX: usize = CMD_HEADER_LEN + 12 + 2;
/// A refusal's message is cut to this many bytes.
const REFUSE_MESSAGE_MAX: usize = 4096;

/// Where a frame is in the input buffer ([`Framer::next_frame`]); valid
/// until the buffer is next compacted by [`Framer::recv_buf`]. A stale one
/// reads as no bytes (its decode fails as truncated), never as other bytes
/// and never with a panic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameAt {
    start: usize,
    len: usize,
    /// The framer's compaction count when it was returned.
    moved: u64,
    /// Its frame index on this connection.
    pub index: u64,
    /// Its byte offset in the peer's input (fixed header included).
    pub offset: u64,
}

/// One connection's input and output buffers.
#[derive(Debug)]
pub struct Framer {
    rbuf: Vec<u8>,
    rs: usize,
    re: usize,
    /// Bytes wanted buffered from `rs` for the item asked for last.
    need: usize,
    /// Bytes taken from the peer before `rbuf[rs]`, and frames read.
    in_off: u64,
    in_frames: u64,
    /// Frames limited to the handshake's size until [`Framer::handshake_done`].
    profile: Profile,
    rmin: usize,
    closed: bool,
    /// Times the buffer was compacted (a [`FrameAt`] of an earlier count
    /// is stale).
    moved: u64,
    out: Vec<u8>,
}

impl Default for Framer {
    fn default() -> Self {
        Self::new()
    }
}

impl Framer {
    /// A connection's framer, in its handshake.
    pub fn new() -> Self {
        Framer {
            rbuf: Vec::new(),
            rs: 0,
            re: 0,
            need: 1,
            in_off: 0,
            in_frames: 0,
            profile: HANDSHAKE_PROFILE,
            rmin: RBUF_HANDSHAKE,
            closed: false,
            moved: 0,
            out: Vec::new(),
        }
    }

    /// The handshake is over: frames up to the session's maximum, and a
    /// larger read buffer.
    pub fn handshake_done(&mut self) {
        self.profile = SESSION_PROFILE;
        self.rmin = RBUF;
    }

    /// Bytes taken from the peer (headers and frames returned so far).
    pub fn in_bytes(&self) -> u64 {
        self.in_off
    }

    /// Whether the peer closed its side.
    pub fn closed(&self) -> bool {
        self.closed
    }

    /// Where to put bytes read from the peer: never empty, and large enough
    /// for the header or frame asked for last. The buffer grows only to
    /// what was asked for, unless the caller feeds more than it asks to
    /// parse (a blocking driver reads only when a parse asked for more).
    pub fn recv_buf(&mut self) -> &mut [u8] {
        let n = self.need.max(1);
        if self.rbuf.len() - self.rs < n || self.re == self.rbuf.len() {
            self.rbuf.copy_within(self.rs..self.re, 0);
            self.re -= self.rs;
            self.rs = 0;
            self.moved += 1;
            // Room for the item asked for, and never an empty slice (a
            // caller may feed bytes beyond what it has asked to parse).
            let want = n.max(self.rmin).max(self.re + self.rmin.min(64 * 1024));
            if self.rbuf.len() < want {
                self.rbuf.resize(want, 0);
            }
        }
        &mut self.rbuf[self.re..]
    }

    /// `n` bytes were read into [`Framer::recv_buf`]; 0: the peer closed.
    pub fn received(&mut self, n: usize) {
        if n == 0 {
            self.closed = true;
        }
        self.re = (self.re + n).min(self.rbuf.len());
    }

    fn short(&mut self, during: &'static str, n: usize) -> Result<(), SessionError> {
        if self.closed {
            return Err(SessionError::Closed {
                during,
                offset: self.in_off + (self.re - self.rs) as u64,
            });
        }
        self.need = n;
        Ok(())
    }

    /// The peer's fixed header, once it is here.
    pub fn fixed(
        &mut self,
        format: &FixedHeaderFormat,
    ) -> Result<Option<ParsedFixed>, SessionError> {
        let n = format.encoded_len();
        if self.re - self.rs < n {
            self.short("in its fixed header", n)?;
            return Ok(None);
        }
        let parsed = format.parse(&self.rbuf[self.rs..self.rs + n]);
        self.rs += n;
        self.in_off += n as u64;
        Ok(Some(parsed?))
    }

    /// The next whole frame, once it is here (its length checked against
    /// the profile first, so a hostile length asks for nothing). `during`
    /// names what was being read if the peer closes first.
    pub fn next_frame(&mut self, during: &'static str) -> Result<Option<FrameAt>, SessionError> {
        let have = self.re - self.rs;
        if have < CMD_HEADER_LEN {
            self.short(during, CMD_HEADER_LEN)?;
            return Ok(None);
        }
        let (index, offset) = (self.in_frames, self.in_off);
        let len = frame_len(&self.rbuf[self.rs..self.re], &self.profile, index, offset)?;
        if have < len {
            self.short(during, len)?;
            return Ok(None);
        }
        let at = FrameAt {
            start: self.rs,
            len,
            moved: self.moved,
            index,
            offset,
        };
        self.rs += len;
        self.in_off += len as u64;
        self.in_frames += 1;
        self.need = 1;
        Ok(Some(at))
    }

    /// The frame's bytes (none when `at` is stale).
    pub fn bytes(&self, at: FrameAt) -> &[u8] {
        if at.moved != self.moved {
            return &[];
        }
        self.rbuf.get(at.start..at.start + at.len).unwrap_or(&[])
    }

    /// Decodes a frame (CRC checked). A REFUSE frame is returned as
    /// [`SessionError::Refused`].
    pub fn frame(&self, at: FrameAt) -> Result<Command<'_>, SessionError> {
        let (c, _) = decode_command(self.bytes(at), &self.profile, at.index, at.offset)?;
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

    /// A frame, a plain DATA frame on the fast path: laid out as
    /// [`Framer::write_data`] lays it out, it is read without the generic
    /// decode (no attribute table, no look-ups). For a large unit its CRC
    /// is not even computed over its bytes but derived from its unit's own
    /// CRC (the function `command_register`); when that matches the
    /// frame's, the frame's CRC holds exactly when the unit's does, which
    /// the receiver's check of the unit computes anyway (one pass over the
    /// bytes instead of two). Any other DATA frame of that layout is
    /// checksummed in one pass. `unit_crc`: the CRC variant of the commands
    /// now arriving (the receiver's validator knows it once the stream
    /// header is in); `None` checksums every frame over its bytes. Frames
    /// of any other layout, and frames whose CRC does not hold, are decoded
    /// as [`Framer::frame`] decodes them (which names the damage).
    pub fn incoming(
        &self,
        at: FrameAt,
        unit_crc: Option<CrcVariant>,
    ) -> Result<Incoming<'_>, SessionError> {
        let bytes = self.bytes(at);
        if let Some((seq, payload, checked)) = fast_data(bytes, unit_crc) {
            return Ok(Incoming::Data(Data {
                seq,
                payload,
                frame: bytes,
                checked,
                index: at.index,
                offset: at.offset,
            }));
        }
        self.frame(at).map(Incoming::Frame)
    }

    /// The bytes to send.
    pub fn pending(&self) -> &[u8] {
        &self.out
    }

    /// The first `n` pending bytes were sent.
    pub fn output_sent(&mut self, n: usize) {
        if n >= self.out.len() {
            self.out.clear();
        } else {
            self.out.drain(..n);
        }
    }

    /// Our fixed header, offering `range`.
    pub fn write_fixed(&mut self, format: &FixedHeaderFormat, range: VersionRange) {
        // The range is ours and valid, and native formats take any u32.
        let _ = format.encode(range.max, range.min, &mut self.out);
    }

    /// A frame.
    pub fn write_frame(&mut self, ty: u16, attrs: &[AttrValue<'_>]) -> Result<(), SessionError> {
        encode_command(&SESSION_PROFILE, ty, attrs, &mut self.out)?;
        Ok(())
    }

    /// A frame whose one attribute is a seq (ACK, FINISH).
    pub fn write_seq(&mut self, ty: u16, seq: u64) -> Result<(), SessionError> {
        self.write_frame(ty, &[AttrValue::new(attr::SEQ, Value::U64(seq))])
    }

    /// A DATA frame: header and SEQ, then the payload. Returns `true` when
    /// the payload is large ([`INLINE_MAX`]) and was not copied: the caller
    /// must send it right after the pending bytes, before anything else is
    /// written. `unit_crc`: the CRC variant of the stream's commands, when
    /// every stream sent has the same (the frame's CRC is then derived from
    /// a large command's own); `None` checksums the frame over its bytes.
    pub fn write_data(&mut self, seq: u64, payload: &[u8], unit_crc: Option<CrcVariant>) -> bool {
        let len = (DATA_PREFIX - CMD_HEADER_LEN + payload.len()) as u32;
        let mut p = [0u8; DATA_PREFIX];
        if let Some(mut head) = CmdBuf::new_checked(&mut p[..]) {
            head.set_payload_len(len);
            head.set_cmd(frame::DATA);
        }
        p[10..12].copy_from_slice(&attr::SEQ.to_le_bytes());
        p[12..14].copy_from_slice(&8u16.to_le_bytes());
        p[14..22].copy_from_slice(&seq.to_le_bytes());
        p[22..24].copy_from_slice(&attr::PAYLOAD.to_le_bytes());
        // A large command's frame CRC comes from the command's own CRC (the
        // emitter checked it, or made it for a piece of a split write): the
        // unit is checksummed once on this side, not twice.
        let derived = unit_crc.and_then(|crc| data_crc_from_unit(&p, payload, crc));
        let follows = payload.len() >= INLINE_MAX;
        let start = self.out.len();
        self.out.extend_from_slice(&p);
        if !follows {
            self.out.extend_from_slice(payload);
        }
        let sum = derived.unwrap_or_else(|| {
            if follows {
                let crc = SESSION_PROFILE.crc;
                let state = crc.command_state(&p, &p[CMD_HEADER_LEN..]);
                crc.finish(crc.update(state, payload))
            } else {
                // The whole frame is in the output: one pass.
                frame_crc(&self.out[start..])
            }
        });
        if let Some(mut head) = CmdBuf::new_checked(&mut self.out[start..]) {
            head.set_crc(sum);
        }
        follows
    }

    /// A UNITS frame ([`frame::UNITS`]): header, SEQ (`seq`, the first
    /// unit's), LENS (each of `lens`), then `units`, the units one after
    /// the other, copied into the output and checksummed with the frame in
    /// one pass. `lens` must add up to `units.len()`, none zero, at most
    /// [`UNITS_MAX`] of them, and the frame must stay within the session's
    /// largest (the sender's runs stay within [`UNITS_BYTES`]); an error
    /// otherwise, with nothing written.
    ///
    /// [`UNITS_MAX`]: crate::wire::UNITS_MAX
    /// [`UNITS_BYTES`]: crate::wire::UNITS_BYTES
    pub fn write_units(
        &mut self,
        seq: u64,
        units: &[u8],
        lens: impl ExactSizeIterator<Item = usize> + Clone,
    ) -> Result<(), SessionError> {
        let n = lens.len();
        let lens_len = n * 4;
        let total = lens.clone().try_fold(0usize, |a, l| {
            (l > 0 && l <= u32::MAX as usize)
                .then(|| a.checked_add(l))
                .flatten()
        });
        let frame_len = CMD_HEADER_LEN + 12 + 4 + lens_len + 2 + units.len();
        if n == 0
            || n > crate::wire::UNITS_MAX
            || total != Some(units.len())
            || frame_len - CMD_HEADER_LEN > SESSION_PROFILE.max_payload_len as usize
        {
            return Err(SessionError::Units {
                offset: None,
                problem: "its unit lengths do not cut its units",
            });
        }
        let start = self.out.len();
        self.out.reserve(frame_len);
        self.out.extend_from_slice(&[0u8; CMD_HEADER_LEN]);
        self.out.extend_from_slice(&attr::SEQ.to_le_bytes());
        self.out.extend_from_slice(&8u16.to_le_bytes());
        self.out.extend_from_slice(&seq.to_le_bytes());
        self.out.extend_from_slice(&attr::LENS.to_le_bytes());
        self.out.extend_from_slice(&(lens_len as u16).to_le_bytes());
        for l in lens {
            self.out.extend_from_slice(&(l as u32).to_le_bytes());
        }
        self.out.extend_from_slice(&attr::PAYLOAD.to_le_bytes());
        self.out.extend_from_slice(units);
        if let Some(mut head) = CmdBuf::new_checked(&mut self.out[start..]) {
            head.set_payload_len((frame_len - CMD_HEADER_LEN) as u32);
            head.set_cmd(frame::UNITS);
        }
        // The whole frame is in the output: one pass (the CRC field is taken
        // as zero).
        let sum = frame_crc(&self.out[start..]);
        if let Some(mut head) = CmdBuf::new_checked(&mut self.out[start..]) {
            head.set_crc(sum);
        }
        Ok(())
    }

    /// Queues a REFUSE frame telling the peer why (code and message, cut
    /// to 4 KiB), unless the error is the peer's own refusal or a broken
    /// connection. Returns whether one was queued.
    pub fn refuse(&mut self, err: &SessionError) -> bool {
        if matches!(err, SessionError::Refused { .. }) || err.retryable() {
            return false;
        }
        let mut message = err.to_string();
        if message.len() > REFUSE_MESSAGE_MAX {
            let mut cut = REFUSE_MESSAGE_MAX;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let code = err.code().to_u16();
        self.write_frame(
            frame::REFUSE,
            &[
                AttrValue::new(attr::CODE, Value::U16(code)),
                AttrValue::new(attr::MESSAGE, Value::Bytes(message.as_bytes())),
            ],
        )
        .is_ok()
    }
}

/// A DATA frame read on the fast path ([`Framer::incoming`]): its CRC was
/// checked, or is known to hold exactly when its unit's own CRC does.
#[derive(Debug)]
pub struct Data<'a> {
    /// Its seq.
    pub seq: u64,
    /// Its unit.
    pub payload: &'a [u8],
    frame: &'a [u8],
    /// Its CRC was computed over its bytes (not derived from its unit's).
    checked: bool,
    index: u64,
    offset: u64,
}

impl Data<'_> {
    /// Checks the frame as [`Framer::frame`] would have, when its CRC was
    /// derived from its unit's: for a unit whose own check failed or was
    /// not made (a duplicate, a seq refused), so that a frame damaged in
    /// transit is named as such.
    pub fn verify(&self) -> Result<(), SessionError> {
        if !self.checked {
            decode_command(self.frame, &SESSION_PROFILE, self.index, self.offset)?;
        }
        Ok(())
    }
}

/// What [`Framer::incoming`] read.
#[derive(Debug)]
pub enum Incoming<'a> {
    /// A DATA frame on the fast path.
    Data(Data<'a>),
    /// Any other frame (a DATA frame included), decoded and checked.
    Frame(Command<'a>),
}

/// The seq and unit of a DATA frame laid out as [`Framer::write_data`]
/// lays it out, whose CRC holds (`true`: computed over its bytes) or
/// matches the one derived from its unit's own CRC (`false`: a unit that
/// frames as a large command checksummed with `unit_crc`).
fn fast_data(bytes: &[u8], unit_crc: Option<CrcVariant>) -> Option<(u64, &[u8], bool)> {
    let p = bytes.get(..DATA_PREFIX)?;
    let head = CmdBuf::new_checked(p)?;
    let u16_at = |i: usize| u16::from_le_bytes([p[i], p[i + 1]]);
    if head.cmd() != frame::DATA
        || u16_at(10) != attr::SEQ
        || u16_at(12) != 8
        || u16_at(22) != attr::PAYLOAD
    {
        return None;
    }
    let payload = &bytes[DATA_PREFIX..];
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&p[14..22]);
    let seq = u64::from_le_bytes(seq);
    if unit_crc.and_then(|crc| data_crc_from_unit(p, payload, crc)) == Some(head.crc()) {
        return Some((seq, payload, false));
    }
    (frame_crc(bytes) == head.crc()).then_some((seq, payload, true))
}

/// The CRC of a whole frame (its CRC field taken as zero), in one pass.
/// Both callers hold a DATA frame's [`DATA_PREFIX`] bytes at least, so the
/// frame holds its header.
fn frame_crc(frame: &[u8]) -> u32 {
    SESSION_PROFILE.crc.whole_command_crc(frame)
}

/// The CRC of a DATA frame (its [`DATA_PREFIX`] bytes, then `unit`), for a
/// unit of at least 4 KiB that frames as a command checksummed with
/// `unit_crc`, computed from the command's own CRC instead of its bytes
/// ([`command_register`]): correct exactly when that command's CRC is.
/// `None` for other units.
fn data_crc_from_unit(prefix: &[u8], unit: &[u8], unit_crc: CrcVariant) -> Option<u32> {
    let reg = command_register(unit, unit_crc)?;
    let crc = SESSION_PROFILE.crc;
    let state = crc.command_state(prefix, prefix.get(CMD_HEADER_LEN..DATA_PREFIX)?);
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
    let c = CmdBuf::new_checked(unit)?;
    if !c.is_whole() || unit.len() < DERIVED_FROM {
        // Short units: a CRC call is as cheap as the shifts.
        return None;
    }
    let len = c.payload_len();
    let stored = c.crc();
    let zeroed = match variant {
        CrcVariant::BtrfsRaw => stored,
        CrcVariant::Standard => !stored ^ crc32c_shift(!0, unit.len() as u64),
    };
    let field = CrcVariant::BtrfsRaw.checksum(&stored.to_le_bytes());
    Some(zeroed ^ crc32c_shift(field, u64::from(len)))
}

/// A required u64 attribute of a frame.
pub fn u64_attr(c: &Command<'_>, ty: u16) -> Result<u64, SessionError> {
    Ok(c.require(ty)?.as_u64()?)
}

/// Checks a frame's type.
pub fn expect(c: &Command<'_>, ty: u16) -> Result<(), SessionError> {
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

    /// A UNITS frame decodes to what was written; lengths that do not cut
    /// the units are refused with nothing written.
    #[test]
    fn units_frames_are_written_whole_or_not_at_all() {
        let mut f = Framer::new();
        f.write_units(7, b"abcdefg", [3, 4].into_iter()).unwrap();
        let wire = f.pending().to_vec();
        let (c, n) = decode_command(&wire, &SESSION_PROFILE, 0, 0).unwrap();
        assert_eq!((c.cmd(), n), (frame::UNITS, wire.len()));
        assert_eq!(u64_attr(&c, attr::SEQ).unwrap(), 7);
        assert_eq!(
            c.attr(attr::LENS).unwrap().value(),
            [3, 0, 0, 0, 4, 0, 0, 0]
        );
        assert_eq!(c.attr(attr::PAYLOAD).unwrap().value(), b"abcdefg");
        let too_many = alloc::vec![1usize; crate::wire::UNITS_MAX + 1];
        let bad: [(&[usize], &[u8]); 5] = [
            (&[], b""),
            (&[3, 0, 4], b"abcdefg"),
            (&[3, 3], b"abcdefg"),
            (&[3, 5], b"abcdefg"),
            (&too_many, &[0u8; crate::wire::UNITS_MAX + 1]),
        ];
        for (lens, units) in bad {
            let mut f = Framer::new();
            let e = f.write_units(1, units, lens.iter().copied()).unwrap_err();
            assert!(matches!(e, SessionError::Units { offset: None, .. }), "{e}");
            assert!(f.pending().is_empty());
        }
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
                    let mut f = Framer::new();
                    let follows = f.write_data(7, &unit, Some(variant));
                    assert_eq!(follows, unit.len() >= INLINE_MAX, "{what}");
                    let mut out = f.pending().to_vec();
                    if follows {
                        out.extend_from_slice(&unit);
                    }
                    let r = decode_command(&out, &SESSION_PROFILE, 0, 0);
                    // Short units are checksummed directly: their frame is
                    // sound, and the receiver's check of the unit refuses it.
                    let derived = unit.len() >= 4096;
                    assert_eq!(r.is_ok(), !(damage && derived), "{what}");
                    if let Ok((c, len)) = r {
                        assert_eq!(len, out.len(), "{what}");
                        assert!(c.attr(attr::PAYLOAD).unwrap().value() == &unit[..]);
                    }
                    // The fast path reads every such frame: a large unit's
                    // by its derived CRC (not checked), another's checked.
                    let fast = fast_data(&out, Some(variant));
                    let Some((seq, payload, checked)) = fast else {
                        panic!("{what}: not on the fast path");
                    };
                    assert_eq!(checked, !derived, "{what}");
                    assert_eq!(seq, 7, "{what}");
                    assert!(payload == &unit[..], "{what}");
                    // Under the other variant (or none) the derived CRC does
                    // not match: the frame is checksummed, and holds exactly
                    // when the command was sound.
                    for crc in [Some(other), None] {
                        let full = fast_data(&out, crc);
                        assert_eq!(full.is_some(), !(damage && derived), "{what}: {crc:?}");
                        assert!(full.is_none_or(|(_, _, checked)| checked), "{what}");
                    }
                    // A byte damaged in transit: off the fast path (the
                    // frame's decode names it), or, derived, caught by the
                    // unit's own check.
                    let mut hurt = out.clone();
                    hurt[DATA_PREFIX + unit.len() / 2] ^= 0x10;
                    if let Some((_, _, checked)) = fast_data(&hurt, Some(variant)) {
                        assert!(!checked && derived, "{what}: damage accepted");
                    }
                }
            }
        }
    }

    fn feed_all(b: &mut Framer, mut rest: &[u8]) {
        while !rest.is_empty() {
            let buf = b.recv_buf();
            let n = buf.len().min(rest.len());
            buf[..n].copy_from_slice(&rest[..n]);
            b.received(n);
            rest = &rest[n..];
        }
    }

    /// Frames come out whole however the input is cut, a hostile length is
    /// refused before anything is buffered for it, and a peer that closes
    /// inside a frame is named with the offset it reached.
    #[test]
    fn frames_out_of_any_cut_and_closes_named() {
        let mut a = Framer::new();
        a.write_fixed(&crate::wire::SESSION_FORMAT, crate::wire::SESSION_VERSIONS);
        for seq in 1..=20u64 {
            a.write_seq(frame::ACK, seq).unwrap();
        }
        let wire = a.pending().to_vec();
        for cut in [1, 2, 3, 7, 16, 17, 64, wire.len()] {
            let mut b = Framer::new();
            let mut fed = 0;
            let mut feed = |b: &mut Framer| {
                let buf = b.recv_buf();
                let n = cut.min(wire.len() - fed).min(buf.len());
                buf[..n].copy_from_slice(&wire[fed..fed + n]);
                b.received(n);
                fed += n;
            };
            while b.fixed(&crate::wire::SESSION_FORMAT).unwrap().is_none() {
                feed(&mut b);
            }
            let mut seqs = Vec::new();
            while seqs.len() < 20 {
                match b.next_frame("test").unwrap() {
                    Some(at) => seqs.push(u64_attr(&b.frame(at).unwrap(), attr::SEQ).unwrap()),
                    None => feed(&mut b),
                }
            }
            assert_eq!(seqs, (1..=20).collect::<Vec<_>>(), "cut {cut}");
            assert_eq!(b.in_bytes(), wire.len() as u64);
            // The peer closes inside the next frame.
            let buf = b.recv_buf();
            buf[..5].copy_from_slice(&wire[16..21]);
            b.received(5);
            assert!(b.next_frame("test").unwrap().is_none());
            b.received(0);
            match b.next_frame("in the test") {
                Err(SessionError::Closed { during, offset }) => {
                    assert_eq!((during, offset), ("in the test", wire.len() as u64 + 5));
                }
                r => panic!("{r:?}"),
            }
        }
        // A caller that feeds more than it asks to parse (the whole wire at
        // once, in pieces as large as it is offered) always gets room.
        let mut b = Framer::new();
        let big: Vec<u8> = wire.iter().copied().cycle().take(200_000).collect();
        let mut rest = &big[..];
        while !rest.is_empty() {
            let buf = b.recv_buf();
            assert!(!buf.is_empty());
            let n = buf.len().min(rest.len());
            buf[..n].copy_from_slice(&rest[..n]);
            b.received(n);
            rest = &rest[n..];
        }
        assert!(b.fixed(&crate::wire::SESSION_FORMAT).unwrap().is_some());
        assert!(b.next_frame("test").unwrap().is_some());
        // A frame position kept past a compaction reads as nothing: a
        // typed error, not another frame's bytes.
        let mut b = Framer::new();
        feed_all(&mut b, &wire[16..]);
        let at = b.next_frame("test").unwrap().unwrap();
        assert!(b.frame(at).is_ok());
        // Bytes fed while the position is held do not move it...
        feed_all(&mut b, &[0; 100]);
        assert!(b.frame(at).is_ok());
        // ...a compaction does.
        let before = b.moved;
        while b.moved == before {
            let buf = b.recv_buf();
            let n = buf.len();
            b.received(n);
        }
        assert!(matches!(b.frame(at), Err(SessionError::Frame(_))));
        assert!(b.bytes(at).is_empty());
        // A frame header declaring more than the handshake allows.
        let mut b = Framer::new();
        let mut hostile = vec![0u8; CMD_HEADER_LEN];
        hostile[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        b.recv_buf()[..CMD_HEADER_LEN].copy_from_slice(&hostile);
        b.received(CMD_HEADER_LEN);
        assert!(matches!(b.next_frame("test"), Err(SessionError::Frame(_))));
        assert!(b.rbuf.len() <= RBUF_HANDSHAKE);
    }
}
