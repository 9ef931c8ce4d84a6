//! The portable kernel: slicing-by-8 tables built at compile time, no
//! `unsafe`, no `std`. The fallback where the CPU has no CRC-32C
//! instruction, and the second reference of the tests.
//!
//! ```
//! assert_eq!(
//!     proto_crc32c::portable::crc32c_append(0, b"123456789"),
//!     proto_crc32c::crc32c(b"123456789")
//! );
//! ```

#![forbid(unsafe_code)]

use crate::shift::POLY;

/// `TABLES[0]` is the byte-at-a-time table; `TABLES[k][b]` is the register
/// contribution of byte `b` followed by `k` zero bytes.
const TABLES: [[u32; 256]; 8] = {
    let mut t = [[0u32; 256]; 8];
    let mut b = 0;
    while b < 256 {
        let mut r = b as u32;
        let mut k = 0;
        while k < 8 {
            r = if r & 1 != 0 { (r >> 1) ^ POLY } else { r >> 1 };
            k += 1;
        }
        t[0][b] = r;
        b += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut b = 0;
        while b < 256 {
            let prev = t[k - 1][b];
            t[k][b] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            b += 1;
        }
        k += 1;
    }
    t
};

/// The register (no inversions) after `data`, from register `reg`.
pub(crate) fn update(mut reg: u32, data: &[u8]) -> u32 {
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        let lo = reg ^ u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        let hi = u32::from_le_bytes([w[4], w[5], w[6], w[7]]);
        reg = TABLES[7][(lo & 0xff) as usize]
            ^ TABLES[6][((lo >> 8) & 0xff) as usize]
            ^ TABLES[5][((lo >> 16) & 0xff) as usize]
            ^ TABLES[4][(lo >> 24) as usize]
            ^ TABLES[3][(hi & 0xff) as usize]
            ^ TABLES[2][((hi >> 8) & 0xff) as usize]
            ^ TABLES[1][((hi >> 16) & 0xff) as usize]
            ^ TABLES[0][(hi >> 24) as usize];
    }
    for &b in words.remainder() {
        reg = (reg >> 8) ^ TABLES[0][((reg ^ u32::from(b)) & 0xff) as usize];
    }
    reg
}

/// [`crate::crc32c_append`] through the portable tables only, whatever the
/// CPU has.
pub fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    !update(!crc, data)
}
