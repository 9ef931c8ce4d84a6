//! The carry-less multiplication kernel (x86-64 AVX-512 with VPCLMULQDQ):
//! CRC-32C by folding, 64 bytes per instruction, with or without copying
//! the bytes on the way. Long inputs only (at least [`MIN_LEN`] bytes); the
//! CRC instruction of `x86` finishes the last few bytes.
//!
//! The CRC is linear over GF(2): a 128-bit block `V` followed by `D` more
//! bits contributes `V * x^D mod P`, and for `V = H * x^64 + L` that is
//! `H * x^(D+64) + L * x^D`. Each half is multiplied (carry-less) by a
//! 32-bit constant `x^(D+63) mod P` or `x^(D-1) mod P` (the `-1`: the
//! product of two bit-reflected numbers comes out shifted by one bit), so
//! a block is carried `D` bits forward by two multiplications and folded
//! into the block found there. Four 512-bit accumulators (sixteen 128-bit
//! blocks) run side by side 2048 bits apart; at the end they are folded
//! into one 128-bit block, whose CRC-32C from a zero register (two `crc32`
//! instructions) is the CRC of everything folded into it.
//!
//! The `unsafe` blocks here are the unaligned vector loads and stores, each
//! over a 64- or 16-byte slice that `chunks_exact` just handed out.

use core::arch::x86_64::{
    __m128i, __m512i, _mm512_castsi512_si128, _mm512_clmulepi64_epi128, _mm512_extracti32x4_epi32,
    _mm512_loadu_si512, _mm512_set_epi64, _mm512_storeu_si512, _mm512_xor_si512,
    _mm512_zextsi128_si512, _mm_clmulepi64_si128, _mm_crc32_u64, _mm_cvtsi128_si64,
    _mm_cvtsi32_si128, _mm_extract_epi64, _mm_loadu_si128, _mm_set_epi64x, _mm_storeu_si128,
    _mm_xor_si128,
};

use crate::shift::x_pow;

/// The shortest input this kernel takes: one 256-byte round of the four
/// accumulators.
pub(crate) const MIN_LEN: usize = 256;

/// The two multipliers that carry a 128-bit block `d` bits forward, as
/// the operands of a carry-less multiplication (bit `63 - j` is `x^j`).
const fn consts(d: u64) -> (i64, i64) {
    (
        ((x_pow(d + 63) as u64) << 32) as i64,
        ((x_pow(d - 1) as u64) << 32) as i64,
    )
}

const K2048: (i64, i64) = consts(2048);
const K1536: (i64, i64) = consts(1536);
const K1024: (i64, i64) = consts(1024);
const K512: (i64, i64) = consts(512);
const K384: (i64, i64) = consts(384);
const K256: (i64, i64) = consts(256);
const K128: (i64, i64) = consts(128);

#[inline]
#[target_feature(enable = "avx512f,vpclmulqdq")]
fn wide(k: (i64, i64)) -> __m512i {
    _mm512_set_epi64(k.1, k.0, k.1, k.0, k.1, k.0, k.1, k.0)
}

#[inline]
#[target_feature(enable = "sse2")]
fn narrow(k: (i64, i64)) -> __m128i {
    _mm_set_epi64x(k.1, k.0)
}

/// Each of the four blocks of `v` carried forward by the distance of `k`.
#[inline]
#[target_feature(enable = "avx512f,vpclmulqdq")]
fn fold512(v: __m512i, k: __m512i) -> __m512i {
    _mm512_xor_si512(
        _mm512_clmulepi64_epi128::<0x00>(v, k),
        _mm512_clmulepi64_epi128::<0x11>(v, k),
    )
}

#[inline]
#[target_feature(enable = "pclmulqdq")]
fn fold128(v: __m128i, k: __m128i) -> __m128i {
    _mm_xor_si128(
        _mm_clmulepi64_si128::<0x00>(v, k),
        _mm_clmulepi64_si128::<0x11>(v, k),
    )
}

#[inline]
#[target_feature(enable = "avx512f")]
fn load64(b: &[u8]) -> __m512i {
    assert!(b.len() >= 64);
    // SAFETY: `b` holds at least 64 readable bytes (checked above); the
    // load is unaligned.
    unsafe { _mm512_loadu_si512(b.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx512f")]
fn store64(b: &mut [u8], v: __m512i) {
    assert!(b.len() >= 64);
    // SAFETY: `b` holds at least 64 writable bytes (checked above), borrowed
    // mutably; the store is unaligned.
    unsafe { _mm512_storeu_si512(b.as_mut_ptr().cast(), v) }
}

#[inline]
#[target_feature(enable = "sse2")]
fn load16(b: &[u8]) -> __m128i {
    assert!(b.len() >= 16);
    // SAFETY: `b` holds at least 16 readable bytes (checked above).
    unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "sse2")]
fn store16(b: &mut [u8], v: __m128i) {
    assert!(b.len() >= 16);
    // SAFETY: `b` holds at least 16 writable bytes (checked above).
    unsafe { _mm_storeu_si128(b.as_mut_ptr().cast(), v) }
}

/// The register after `src` from `reg` (`src.len() >= MIN_LEN`), copying
/// `src` into `dst` on the way when `COPY` (`dst` is then as long as
/// `src`; it is not touched otherwise).
#[inline]
#[target_feature(enable = "avx512f,vpclmulqdq,pclmulqdq,sse4.2")]
fn run<const COPY: bool>(reg: u32, src: &[u8], dst: &mut [u8]) -> u32 {
    debug_assert!(src.len() >= MIN_LEN && (!COPY || dst.len() == src.len()));
    let n = src.len();
    let mut x = [
        load64(&src[0..]),
        load64(&src[64..]),
        load64(&src[128..]),
        load64(&src[192..]),
    ];
    if COPY {
        for (j, v) in x.iter().enumerate() {
            store64(&mut dst[64 * j..], *v);
        }
    }
    x[0] = _mm512_xor_si512(x[0], _mm512_zextsi128_si512(_mm_cvtsi32_si128(reg as i32)));
    let k2048 = wide(K2048);
    let mut i = MIN_LEN;
    while i + 256 <= n {
        for (j, acc) in x.iter_mut().enumerate() {
            let d = load64(&src[i + 64 * j..]);
            if COPY {
                store64(&mut dst[i + 64 * j..], d);
            }
            *acc = _mm512_xor_si512(fold512(*acc, k2048), d);
        }
        i += 256;
    }
    let mut v = _mm512_xor_si512(
        _mm512_xor_si512(fold512(x[0], wide(K1536)), fold512(x[1], wide(K1024))),
        _mm512_xor_si512(fold512(x[2], wide(K512)), x[3]),
    );
    let k512 = wide(K512);
    while i + 64 <= n {
        let d = load64(&src[i..]);
        if COPY {
            store64(&mut dst[i..], d);
        }
        v = _mm512_xor_si512(fold512(v, k512), d);
        i += 64;
    }
    let lanes = [
        _mm512_castsi512_si128(v),
        _mm512_extracti32x4_epi32::<1>(v),
        _mm512_extracti32x4_epi32::<2>(v),
        _mm512_extracti32x4_epi32::<3>(v),
    ];
    let mut w = _mm_xor_si128(
        _mm_xor_si128(
            fold128(lanes[0], narrow(K384)),
            fold128(lanes[1], narrow(K256)),
        ),
        _mm_xor_si128(fold128(lanes[2], narrow(K128)), lanes[3]),
    );
    let k128 = narrow(K128);
    while i + 16 <= n {
        let d = load16(&src[i..]);
        if COPY {
            store16(&mut dst[i..], d);
        }
        w = _mm_xor_si128(fold128(w, k128), d);
        i += 16;
    }
    let lo = _mm_cvtsi128_si64(w) as u64;
    let hi = _mm_extract_epi64::<1>(w) as u64;
    let reg = _mm_crc32_u64(_mm_crc32_u64(0, lo), hi) as u32;
    if COPY {
        dst[i..].copy_from_slice(&src[i..]);
    }
    crate::x86::short(reg, &src[i..])
}

/// The register after `src` (at least [`MIN_LEN`] bytes) from `reg`.
#[target_feature(enable = "avx512f,vpclmulqdq,pclmulqdq,sse4.2")]
pub(crate) fn update(reg: u32, src: &[u8]) -> u32 {
    run::<false>(reg, src, &mut [])
}

/// Copies `src` (at least [`MIN_LEN`] bytes) into `dst` (as long) and
/// returns the register after it from `reg`.
#[target_feature(enable = "avx512f,vpclmulqdq,pclmulqdq,sse4.2")]
pub(crate) fn copy_update(reg: u32, src: &[u8], dst: &mut [u8]) -> u32 {
    run::<true>(reg, src, dst)
}

/// Multipliers that carry a register `8 * n` bytes forward through one
/// carry-less multiplication and one `crc32` (see [`shift`]): entry `n`
/// is `x^(64 * n - 33) mod P`, for lanes of `8 * n` bytes, `n < LANE_STEPS`.
const LANE_STEPS: usize = 1024;
static LANE_SHIFT: [u32; LANE_STEPS] = {
    let mut t = [0u32; LANE_STEPS];
    let mut n = 1;
    while n < LANE_STEPS {
        t[n] = x_pow(64 * n as u64 - 33);
        n += 1;
    }
    t
};

/// The register `reg` carried through `8 * n` zero bytes (`0 < n <
/// LANE_STEPS`; [`update_mid`] asks for at most `2 * (12 * LANE_STEPS / 24)`): `reg * x^(64n)` is `reg * x^(64n - 33) * x^33`, and a
/// carry-less product of the register and the multiplier, reduced by the
/// `crc32` instruction from a zero register, multiplies by the `x^33`.
#[inline]
#[target_feature(enable = "pclmulqdq,sse4.2")]
fn shift(reg: u32, n: usize) -> u32 {
    let p = _mm_clmulepi64_si128::<0x00>(
        _mm_cvtsi32_si128(reg as i32),
        _mm_cvtsi32_si128(LANE_SHIFT[n] as i32),
    );
    _mm_crc32_u64(0, _mm_cvtsi128_si64(p) as u64) as u32
}

/// Inputs from this many bytes on are cut into three lanes of any whole
/// number of words by [`update_mid`].
pub(crate) const MID_FROM: usize = 96;

/// The register after `data` from `reg`, for inputs shorter than the
/// folding kernel takes: from [`MID_FROM`] bytes on, three lanes of equal
/// length (a multiple of 8 bytes, whatever the input's length) run
/// interleaved and are joined by two [`shift`]s, so a command of a few
/// hundred bytes pays the `crc32` instruction's latency about once a
/// third of its words, not once a word; the rest (less than 24 bytes) and
/// shorter inputs go through `x86::short`.
#[target_feature(enable = "pclmulqdq,sse4.2")]
pub(crate) fn update_mid(reg: u32, data: &[u8]) -> u32 {
    if data.len() < MID_FROM || data.len() >= 12 * LANE_STEPS {
        return crate::x86::update(reg, data);
    }
    let (reg, tail) = three_lanes(reg, data);
    crate::x86::short(reg, tail)
}

/// The register after the first `3 * 8 * n` bytes of `data` (`n =
/// data.len() / 24`, `0 < n < LANE_STEPS / 2`): three lanes of `n` words
/// each, interleaved, joined by two [`shift`]s; and the rest of `data`
/// (less than 24 bytes).
#[inline]
#[target_feature(enable = "pclmulqdq,sse4.2")]
fn three_lanes(reg: u32, data: &[u8]) -> (u32, &[u8]) {
    let n = data.len() / 24;
    let lane = 8 * n;
    let (a, rest) = data.split_at(lane);
    let (b, rest) = rest.split_at(lane);
    let (c, tail) = rest.split_at(lane);
    let (ra, rb, rc) = crate::x86::lanes(reg, a, b, c);
    (shift(ra, 2 * n) ^ shift(rb, n) ^ rc, tail)
}

/// The register after a TLV command (see `x86::command`) whose payload is
/// shorter than the folding kernel takes: the header and the payload's
/// first `len % 8` bytes as `x86::command_head` takes them, then the
/// payload's words in three lanes of equal length joined as in
/// [`update_mid`], then the zero to two words left.
#[target_feature(enable = "pclmulqdq,sse4.2")]
pub(crate) fn command_mid(reg: u32, command: &[u8]) -> u32 {
    let (reg, words) = crate::x86::command_head(reg, command);
    if words.len() < 24 || words.len() >= 12 * LANE_STEPS {
        return crate::x86::whole_words(reg, words);
    }
    let (reg, tail) = three_lanes(reg, words);
    crate::x86::whole_words(reg, tail)
}

/// The register after `head` and then `tail` (shorter than the folding
/// kernel takes), from `reg`.
#[target_feature(enable = "pclmulqdq,sse4.2")]
pub(crate) fn update2_mid(reg: u32, head: &[u8], tail: &[u8]) -> u32 {
    update_mid(crate::x86::short(reg, head), tail)
}
