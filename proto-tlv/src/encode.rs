//! Encoding: attributes first, then the header's length and CRC.

use alloc::vec::Vec;

use crate::attr::{AttrValue, ATTR_HEADER_LEN};
use crate::cmdbuf::CmdBuf;
use crate::{Command, Error, ErrorKind, Profile, CMD_HEADER_LEN};

/// Checks the attribute list against the profile's rules and returns the
/// payload length. Errors are positioned at command `index` (offset 0: nothing
/// has been written).
pub fn payload_len(profile: &Profile, attrs: &[AttrValue<'_>]) -> Result<usize, Error> {
    let mut len = 0usize;
    let mut after_data = false;
    for a in attrs {
        if after_data {
            return Err(ErrorKind::AttrAfterData { attr_type: a.ty }.at(0, 0));
        }
        let vlen = a.value.len();
        if profile.unbounded_data_attr == Some(a.ty) {
            after_data = true;
            len += 2 + vlen;
        } else {
            if vlen > usize::from(u16::MAX) {
                return Err(ErrorKind::AttrTooLong {
                    attr_type: a.ty,
                    len: vlen,
                }
                .at(0, 0));
            }
            len += ATTR_HEADER_LEN + vlen;
        }
    }
    Ok(len)
}

/// The encoded size of a command with these attributes (header included),
/// or why it cannot be encoded under this profile (too long, attribute after
/// the unbounded data attribute, value over 64 KiB).
pub fn encoded_len(profile: &Profile, attrs: &[AttrValue<'_>]) -> Result<usize, Error> {
    let len = payload_len(profile, attrs)?;
    if len > profile.max_payload_len as usize {
        return Err(ErrorKind::Oversized {
            cmd: 0,
            len: u32::try_from(len).unwrap_or(u32::MAX),
            max: profile.max_payload_len,
        }
        .at(0, 0));
    }
    Ok(CMD_HEADER_LEN + len)
}

/// Names the command type in an `Oversized` error from [`encoded_len`].
pub(crate) fn with_cmd(mut e: Error, cmd: u16) -> Error {
    if let ErrorKind::Oversized { cmd: c, .. } = &mut e.kind {
        *c = cmd;
    }
    e
}

/// Writes a command of `encoded_len` bytes into `out` (exactly that long).
fn write_into(profile: &Profile, cmd: u16, attrs: &[AttrValue<'_>], out: &mut [u8]) {
    let payload_len = (out.len() - CMD_HEADER_LEN) as u32;
    let mut pos = CMD_HEADER_LEN;
    for a in attrs {
        out[pos..pos + 2].copy_from_slice(&a.ty.to_le_bytes());
        pos += 2;
        let vlen = a.value.len();
        if profile.unbounded_data_attr != Some(a.ty) {
            out[pos..pos + 2].copy_from_slice(&(vlen as u16).to_le_bytes());
            pos += 2;
        }
        a.value.write_to(&mut out[pos..pos + vlen]);
        pos += vlen;
    }
    if let Some(mut c) = CmdBuf::new_checked(out) {
        c.set_payload_len(payload_len);
        c.set_cmd(cmd);
        c.seal(profile.crc);
    }
}

/// Appends one command to `out`. Returns the number of bytes appended. On
/// error `out` is left as it was.
pub fn encode_command(
    profile: &Profile,
    cmd: u16,
    attrs: &[AttrValue<'_>],
    out: &mut Vec<u8>,
) -> Result<usize, Error> {
    let n = encoded_len(profile, attrs).map_err(|e| with_cmd(e, cmd))?;
    let start = out.len();
    out.resize(start + n, 0);
    write_into(profile, cmd, attrs, &mut out[start..]);
    Ok(n)
}

/// Writes one command at the start of the caller's bounded buffer. Returns the
/// number of bytes written, or [`ErrorKind::DoesNotFit`] (with the size it
/// needs) having written nothing.
pub fn encode_command_into(
    profile: &Profile,
    cmd: u16,
    attrs: &[AttrValue<'_>],
    out: &mut [u8],
) -> Result<usize, Error> {
    let n = encoded_len(profile, attrs).map_err(|e| with_cmd(e, cmd))?;
    let Some(dst) = out.get_mut(..n) else {
        return Err(ErrorKind::DoesNotFit {
            needed: n,
            available: out.len(),
        }
        .at(0, 0));
    };
    write_into(profile, cmd, attrs, dst);
    Ok(n)
}

/// Appends a command whose payload (its encoded attributes) is given as is:
/// pass-through of a decoded command, say. Only the length limit is checked;
/// the header and CRC are computed. On error `out` is left as it was.
pub fn encode_raw(
    profile: &Profile,
    cmd: u16,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<usize, Error> {
    let header = raw_header(profile, cmd, payload)?;
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
    Ok(CMD_HEADER_LEN + payload.len())
}

/// The header of a command of type `cmd` whose payload is `payload`: its
/// length (checked against the profile) and CRC.
pub(crate) fn raw_header(
    profile: &Profile,
    cmd: u16,
    payload: &[u8],
) -> Result<[u8; CMD_HEADER_LEN], Error> {
    if payload.len() > profile.max_payload_len as usize {
        return Err(ErrorKind::Oversized {
            cmd,
            len: u32::try_from(payload.len()).unwrap_or(u32::MAX),
            max: profile.max_payload_len,
        }
        .at(0, 0));
    }
    let mut header = [0u8; CMD_HEADER_LEN];
    let mut h = CmdBuf::header_mut(&mut header);
    h.set_payload_len(payload.len() as u32);
    h.set_cmd(cmd);
    let crc = profile.crc.command_crc(&header, payload);
    CmdBuf::header_mut(&mut header).set_crc(crc);
    Ok(header)
}

/// An owned command: type and attributes in wire order, each kept as raw
/// bytes. Useful for pass-through, tests and fuzzing.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct OwnedCommand {
    /// Command type.
    pub cmd: u16,
    /// Attributes in wire order: (type, value).
    pub attrs: Vec<(u16, Vec<u8>)>,
}

impl OwnedCommand {
    /// Borrowed attribute values, ready for the encoder.
    pub fn attr_values(&self) -> Vec<AttrValue<'_>> {
        self.attrs
            .iter()
            .map(|(t, v)| AttrValue::new(*t, crate::Value::Bytes(v)))
            .collect()
    }
    /// Encoded size under `profile`, or why it cannot be encoded.
    pub fn encoded_len(&self, profile: &Profile) -> Result<usize, Error> {
        encoded_len(profile, &self.attr_values())
    }
    /// Appends the encoded command to `out`.
    pub fn encode(&self, profile: &Profile, out: &mut Vec<u8>) -> Result<usize, Error> {
        encode_command(profile, self.cmd, &self.attr_values(), out)
    }
}

impl From<&Command<'_>> for OwnedCommand {
    fn from(c: &Command<'_>) -> Self {
        OwnedCommand {
            cmd: c.cmd(),
            attrs: c.attrs().map(|a| (a.ty(), a.value().to_vec())).collect(),
        }
    }
}
