//! A typed view of a command's bytes (netlink's `NlaBuffer` style): the
//! header's fields read and written by name, never by byte position.

use crate::decode::CMD_HEADER_LEN;

/// A command's bytes: at least its 10-byte header (`len` u32, `cmd` u16,
/// `crc` u32, little-endian), then whatever of its payload the buffer
/// holds.
///
/// ```
/// use proto_tlv::{CmdBuf, CrcVariant};
///
/// let mut bytes = [0u8; 14];
/// let mut c = CmdBuf::new_checked(&mut bytes[..]).unwrap();
/// c.set_payload_len(4);
/// c.set_cmd(21);
/// c.payload_mut().copy_from_slice(b"data");
/// c.seal(CrcVariant::Standard);
/// let c = CmdBuf::new_checked(&bytes[..]).unwrap();
/// assert_eq!((c.payload_len(), c.cmd(), c.is_whole()), (4, 21, true));
/// assert_eq!(c.crc(), CrcVariant::Standard.command_crc(c.header(), c.payload()));
/// assert!(CmdBuf::new_checked(&bytes[..9]).is_none());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CmdBuf<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> CmdBuf<T> {
    /// A view of `buf`, which must hold at least a command header.
    pub fn new_checked(buf: T) -> Option<Self> {
        (buf.as_ref().len() >= CMD_HEADER_LEN).then_some(CmdBuf { buf })
    }

    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }

    /// The `len` field: payload bytes after the header.
    pub fn payload_len(&self) -> u32 {
        let b = self.b();
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    /// The `cmd` field: the command type.
    pub fn cmd(&self) -> u16 {
        let b = self.b();
        u16::from_le_bytes([b[4], b[5]])
    }

    /// The `crc` field.
    pub fn crc(&self) -> u32 {
        let b = self.b();
        u32::from_le_bytes([b[6], b[7], b[8], b[9]])
    }

    /// The header's 10 bytes.
    pub fn header(&self) -> &[u8] {
        &self.b()[..CMD_HEADER_LEN]
    }

    /// The bytes after the header (the payload as far as the buffer holds
    /// it, and whatever follows when it holds more).
    pub fn payload(&self) -> &[u8] {
        &self.b()[CMD_HEADER_LEN..]
    }

    /// Whether the buffer is exactly the command: header and `len` bytes.
    pub fn is_whole(&self) -> bool {
        (self.payload_len() as usize).checked_add(CMD_HEADER_LEN) == Some(self.b().len())
    }

    /// The bytes viewed.
    pub fn into_inner(self) -> T {
        self.buf
    }
}

impl<'a> CmdBuf<&'a mut [u8]> {
    /// A view of a header alone (no check needed: it is exactly one).
    pub(crate) fn header_mut(buf: &'a mut [u8; CMD_HEADER_LEN]) -> Self {
        CmdBuf { buf: &mut buf[..] }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> CmdBuf<T> {
    fn m(&mut self) -> &mut [u8] {
        self.buf.as_mut()
    }

    /// Sets the `len` field.
    pub fn set_payload_len(&mut self, len: u32) {
        self.m()[0..4].copy_from_slice(&len.to_le_bytes());
    }

    /// Sets the `cmd` field.
    pub fn set_cmd(&mut self, cmd: u16) {
        self.m()[4..6].copy_from_slice(&cmd.to_le_bytes());
    }

    /// Sets the `crc` field.
    pub fn set_crc(&mut self, crc: u32) {
        self.m()[6..10].copy_from_slice(&crc.to_le_bytes());
    }

    /// The bytes after the header, to write the payload into.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.m()[CMD_HEADER_LEN..]
    }

    /// Sets the `crc` field to the CRC of the header (its `crc` taken as
    /// zero) and every byte after it, in `variant`.
    pub fn seal(&mut self, variant: crate::CrcVariant) {
        let b = self.b();
        let crc = variant.whole_command_crc(b);
        self.set_crc(crc);
    }
}
