//! Per-stream-format parameters of the TLV framing.

use crate::CrcVariant;

/// Everything the TLV codec needs to know about one stream format (and, for
/// btrfs, one protocol version): which CRC, how long a command may be, which
/// attribute (if any) is the unbounded data attribute, and which command ends
/// the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Profile {
    /// CRC variant used for every command.
    pub crc: CrcVariant,
    /// Largest accepted payload length (bytes after the 10-byte header). A
    /// longer declared length is refused before anything is allocated.
    pub max_payload_len: u32,
    /// The attribute type that carries no length field and runs to the end of
    /// the command (btrfs v2+: `DATA` = 19). `None`: every attribute has a
    /// 16-bit length.
    pub unbounded_data_attr: Option<u16>,
    /// The command type that ends a stream.
    pub end_cmd: u16,
}

impl Profile {
    /// The length of the encoded attribute header for attribute type `ty`.
    #[inline]
    pub fn attr_header_len(&self, ty: u16) -> usize {
        if self.unbounded_data_attr == Some(ty) {
            2
        } else {
            crate::ATTR_HEADER_LEN
        }
    }
}
