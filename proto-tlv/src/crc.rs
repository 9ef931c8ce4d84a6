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
        proto_crc32c::crc32c_append(state, bytes)
    }

    /// Copies `src` into `dst` (of the same length) and feeds `src` into a
    /// running state, in one pass over the bytes.
    ///
    /// # Panics
    ///
    /// If the lengths differ.
    #[inline]
    pub fn copy_update(self, state: u32, src: &[u8], dst: &mut [u8]) -> u32 {
        proto_crc32c::copy_crc32c_append(state, src, dst)
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

    /// The running state ([`CrcVariant::update`]'s domain) after a command
    /// header whose CRC field is taken as zero: what the payload is then fed
    /// into. `header` must hold at least the first 6 bytes (`len` and
    /// `cmd`).
    #[inline]
    pub fn header_state(self, header: &[u8]) -> u32 {
        self.command_state(header, &[])
    }

    /// The running state after a command header (its `crc` field taken as
    /// zero) and then `payload` (the whole payload or its first part), in
    /// one call: what [`CrcVariant::command_crc`] finishes. `header` must
    /// hold at least the first 6 bytes (`len` and `cmd`); bytes 6.. are
    /// ignored.
    ///
    /// One call into `proto-crc32c`'s short-input kernel: the header is one
    /// 8-byte step (the CRC field's first half masked) and one 2-byte step,
    /// then the payload, with no alignment loop and no second dispatch.
    #[inline]
    pub fn command_state(self, header: &[u8], payload: &[u8]) -> u32 {
        proto_crc32c::crc32c_append2(self.init(), &masked(header), payload)
    }

    /// The CRC of a command: its 10-byte header with the `crc` field taken as
    /// zero, then its payload. `header` must hold at least the first 6 bytes
    /// (`len` and `cmd`); bytes 6.. are ignored.
    #[inline]
    pub fn command_crc(self, header: &[u8], payload: &[u8]) -> u32 {
        self.finish(self.command_state(header, payload))
    }
}

impl CrcVariant {
    /// [`CrcVariant::command_crc`] of a command held in one slice: its
    /// 10-byte header, then its payload (`command[10..]`). Faster for short
    /// commands: no masked copy of the header, and one step over the
    /// payload's first `len % 8` bytes instead of a branch per length.
    ///
    /// ```
    /// use proto_tlv::CrcVariant;
    /// let mut command = vec![3u8, 0, 0, 0, 15, 0, 9, 9, 9, 9];
    /// command.extend_from_slice(b"abc");
    /// let v = CrcVariant::BtrfsRaw;
    /// assert_eq!(v.whole_command_crc(&command), v.command_crc(&command[..10], b"abc"));
    /// ```
    ///
    /// # Panics
    ///
    /// If `command` is shorter than a command header.
    #[inline]
    pub fn whole_command_crc(self, command: &[u8]) -> u32 {
        self.finish(proto_crc32c::crc32c_append_command(self.init(), command))
    }
}

/// A command header's first six bytes (`len`, `cmd`) and a zero CRC field.
#[inline(always)]
fn masked(header: &[u8]) -> [u8; 10] {
    [
        header[0], header[1], header[2], header[3], header[4], header[5], 0, 0, 0, 0,
    ]
}

/// How a change in a running state ([`CrcVariant::update`]'s domain) carries
/// through `len` more bytes: for any state `s`, change `delta` and bytes `b`,
/// `update(s ^ delta, b) == update(s, b) ^ crc32c_shift(delta, b.len())`.
///
/// The CRC is affine in its starting state, so one pass over some bytes
/// serves any number of starting states: an emitter that re-frames a
/// command (a new header, the same data) checks the original CRC and
/// computes the new one from a single pass over the data. Costs a few
/// dozen shifts and XORs per set bit of `len` (zlib's `multmodp`).
#[inline]
pub fn crc32c_shift(delta: u32, len: u64) -> u32 {
    proto_crc32c::crc32c_shift(delta, len)
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
    fn header_tables_agree_with_the_crc32c_crate() {
        let mut x = 0x1234_5678_9abc_def0u64;
        for round in 0..20_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut h = x.to_le_bytes();
            if round % 7 == 0 {
                h = [0; 8];
                h[(round as usize / 7) % 6] = round as u8;
            }
            let six: [u8; 6] = [h[0], h[1], h[2], h[3], h[4], h[5]];
            let mut full = [0u8; 10];
            full[..6].copy_from_slice(&six);
            let payload = &h[..(round % 9) as usize];
            for v in [CrcVariant::BtrfsRaw, CrcVariant::Standard] {
                assert_eq!(v.header_state(&six), v.update(v.init(), &full));
                let mut whole = full.to_vec();
                whole.extend_from_slice(payload);
                assert_eq!(v.command_crc(&h, payload), v.checksum(&whole));
            }
        }
    }

    #[test]
    fn shift_carries_a_state_change_through_any_bytes() {
        let data: Vec<u8> = (0..70_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let mut x = 0x9e37_79b9u32;
        for len in [
            0usize, 1, 2, 3, 7, 8, 9, 63, 64, 65, 1000, 4096, 65_535, 70_000,
        ] {
            for _ in 0..8 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let (s, delta) = (x, x.rotate_left(7) ^ 0x1234_5678);
                let b = &data[..len];
                assert_eq!(
                    crc32c::crc32c_append(s ^ delta, b),
                    crc32c::crc32c_append(s, b) ^ crc32c_shift(delta, len as u64),
                    "len {len}"
                );
            }
        }
        // Zero change stays zero; zero bytes change nothing.
        assert_eq!(crc32c_shift(0, 12345), 0);
        assert_eq!(crc32c_shift(0xdead_beef, 0), 0xdead_beef);
        // Very long runs: shifting by a + b is shifting by a, then by b.
        let (a, b) = (u64::MAX / 3, (1u64 << 40) + 17);
        assert_eq!(
            crc32c_shift(crc32c_shift(0x0bad_cafe, a), b),
            crc32c_shift(0x0bad_cafe, a + b)
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
