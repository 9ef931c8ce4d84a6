//! CRC-32C arithmetic over GF(2): multiplication modulo the polynomial, the
//! operator of `n` zero bytes, and the tables that join the three lanes of
//! the hardware kernel.

#![forbid(unsafe_code)]

/// The reflected CRC-32C polynomial.
pub(crate) const POLY: u32 = 0x82F6_3B78;

/// `a * b mod P` in the reflected representation (bit 31 is `x^0`).
const fn mult_mod_p(a: u32, mut b: u32) -> u32 {
    let mut m = 1u32 << 31;
    let mut p = 0u32;
    while m != 0 {
        if a & m != 0 {
            p ^= b;
            if a & (m - 1) == 0 {
                break;
            }
        }
        m >>= 1;
        b = if b & 1 != 0 { (b >> 1) ^ POLY } else { b >> 1 };
    }
    p
}

/// `X2N[k] = x^(2^k) mod P`, for every bit of the exponent `8 * len` with
/// `len` a u64 (bits 3..=66), so no periodicity of `x` is assumed.
const X2N: [u32; 67] = {
    let mut t = [0u32; 67];
    let mut p = 1u32 << 30; // x^1
    let mut k = 0;
    while k < 67 {
        t[k] = p;
        p = mult_mod_p(p, p);
        k += 1;
    }
    t
};

/// `x^(8 * len) mod P`: the operator of `len` zero bytes.
const fn x_pow_8n(len: u64) -> u32 {
    x_pow_from(len, 3) // 8 = 2^3
}

/// `x^n mod P`, for a number of bits `n`.
pub(crate) const fn x_pow(n: u64) -> u32 {
    x_pow_from(n, 0)
}

/// `x^(n * 2^k) mod P`.
const fn x_pow_from(n: u64, mut k: usize) -> u32 {
    let mut p = 1u32 << 31; // x^0
    let mut n = n;
    while n != 0 {
        if n & 1 != 0 {
            p = mult_mod_p(X2N[k], p);
        }
        n >>= 1;
        k += 1;
    }
    p
}

/// How a change in a running CRC carries through `len` more bytes: for any
/// `crc`, change `delta` and bytes `b`,
/// `crc32c_append(crc ^ delta, b) == crc32c_append(crc, b) ^ crc32c_shift(delta, b.len() as u64)`.
///
/// The CRC is affine in its starting state, so one pass over some bytes
/// serves any number of starting states: an emitter that re-frames a
/// command (a new header, the same data) checks the original CRC and
/// computes the new one from a single pass over the data. Costs a few
/// dozen shifts and XORs per set bit of `len` (zlib's `multmodp`).
///
/// ```
/// use proto_crc32c::{crc32c_append, crc32c_shift};
/// let b = b"the same bytes";
/// let (crc, delta) = (0x1234_5678, 0x0F0F_0000);
/// assert_eq!(
///     crc32c_append(crc ^ delta, b),
///     crc32c_append(crc, b) ^ crc32c_shift(delta, b.len() as u64)
/// );
/// ```
pub fn crc32c_shift(delta: u32, len: u64) -> u32 {
    mult_mod_p(x_pow_8n(len), delta)
}

/// Multiplication by `x^(8 * len)` (the operator of `len` zero bytes) as
/// four table look-ups: `SHIFT[k][b]` is `b << 8k` times the operator.
pub(crate) struct ShiftTable([[u32; 256]; 4]);

impl ShiftTable {
    /// The table of `len` zero bytes.
    pub(crate) const fn new(len: u64) -> ShiftTable {
        let op = x_pow_8n(len);
        let mut t = [[0u32; 256]; 4];
        let mut k = 0;
        while k < 4 {
            let mut b = 0;
            while b < 256 {
                t[k][b] = mult_mod_p(op, (b as u32) << (8 * k));
                b += 1;
            }
            k += 1;
        }
        ShiftTable(t)
    }

    /// The register `reg` carried through the table's zero bytes.
    #[inline(always)]
    pub(crate) fn apply(&self, reg: u32) -> u32 {
        self.0[0][(reg & 0xff) as usize]
            ^ self.0[1][((reg >> 8) & 0xff) as usize]
            ^ self.0[2][((reg >> 16) & 0xff) as usize]
            ^ self.0[3][(reg >> 24) as usize]
    }
}
