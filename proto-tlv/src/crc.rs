//! The two CRC32C variants used by TLV profiles.

/// How a profile checksums each command.
///
/// Both use the Castagnoli polynomial (CRC-32C) over the command header, with
/// its `crc` field zeroed, followed by the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum CrcVariant {
    /// btrfs send streams: the raw function, seed 0, no final inversion
    /// (`crc32c(0, buf)` in the kernel's naming). An all-zero command has CRC 0,
    /// so zero-filled corruption is *not* detected by the CRC alone.
    BtrfsRaw,
    /// Standard CRC-32C (initial value and final XOR `!0`), as used by native
    /// streams. An all-zero command does not check.
    Standard,
}

impl CrcVariant {
    /// The running state before any byte.
    #[inline]
    pub const fn init(self) -> u32 {
        match self {
            CrcVariant::BtrfsRaw => !0,
            CrcVariant::Standard => 0,
        }
    }

    /// Feeds `bytes` into a running state.
    #[inline]
    pub fn update(self, state: u32, bytes: &[u8]) -> u32 {
        crc32c::crc32c_append(state, bytes)
    }

    /// Turns a running state into the CRC stored on the wire.
    #[inline]
    pub const fn finish(self, state: u32) -> u32 {
        match self {
            CrcVariant::BtrfsRaw => !state,
            CrcVariant::Standard => state,
        }
    }

    /// The CRC of one contiguous buffer.
    #[inline]
    pub fn checksum(self, bytes: &[u8]) -> u32 {
        self.finish(self.update(self.init(), bytes))
    }

    /// The CRC of a command: its 10-byte header with the `crc` field taken as
    /// zero, then its payload. `header` must hold at least the first 6 bytes
    /// (`len` and `cmd`); bytes 6.. are ignored.
    #[inline]
    pub fn command_crc(self, header: &[u8], payload: &[u8]) -> u32 {
        let mut h = [0u8; crate::CMD_HEADER_LEN];
        h[..6].copy_from_slice(&header[..6]);
        let s = self.update(self.init(), &h);
        self.finish(self.update(s, payload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_check_value() {
        // The CRC-32C check value of "123456789".
        assert_eq!(CrcVariant::Standard.checksum(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn btrfs_raw_is_seed_zero_no_inversion() {
        // Raw CRC32C with seed 0 of an all-zero buffer stays 0; the standard
        // one does not.
        assert_eq!(CrcVariant::BtrfsRaw.checksum(&[0u8; 10]), 0);
        assert_ne!(CrcVariant::Standard.checksum(&[0u8; 10]), 0);
        // raw(0, x) == !standard-with-init(!0)... i.e. the bitwise complement
        // relation between the two variants on any input.
        let x = b"btrfs-stream";
        assert_eq!(
            CrcVariant::BtrfsRaw.checksum(x),
            !crc32c::crc32c_append(!0, x)
        );
    }

    #[test]
    fn incremental_equals_one_shot() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        for v in [CrcVariant::BtrfsRaw, CrcVariant::Standard] {
            let (a, b) = data.split_at(333);
            let s = v.update(v.update(v.init(), a), b);
            assert_eq!(v.finish(s), v.checksum(&data));
        }
    }
}
