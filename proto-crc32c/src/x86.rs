//! The x86-64 SSE4.2 kernels. Each is a safe function compiled with the
//! `sse4.2` target feature: the `crc32` intrinsics are safe to call there,
//! and every load and store is a slice access. Calling one is `unsafe`
//! only because the CPU must have the feature; `lib.rs` checks it first.
//!
//! The entry points (`update`, `update2`, `copy_update`) are not
//! `#[inline]`: a function with a target feature cannot be inlined into a
//! caller without it anyway, and this way they are compiled here, at this
//! crate's optimization level, even in a caller's debug build.

#![forbid(unsafe_code)]

use core::arch::x86_64::{_mm_crc32_u16, _mm_crc32_u32, _mm_crc32_u64, _mm_crc32_u8};

use crate::shift::ShiftTable;

/// Lane lengths of the three-way kernel. A block is three lanes; the lanes'
/// CRCs are independent chains, so the instruction's throughput (one per
/// cycle), not its latency (three), bounds them. Joining them costs two
/// table shifts per block.
const LONG: usize = 8192;
const SHORT: usize = 128;
static LONG_SHIFT: ShiftTable = ShiftTable::new(LONG as u64);
static SHORT_SHIFT: ShiftTable = ShiftTable::new(SHORT as u64);

#[inline(always)]
pub(crate) fn word(b: &[u8]) -> u64 {
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// The register after `data`: 8-byte steps, then 4, 2, 1. No alignment
/// loop: unaligned loads cost nothing extra on the CPUs that have SSE4.2.
#[inline]
#[target_feature(enable = "sse4.2")]
pub(crate) fn short(reg: u32, data: &[u8]) -> u32 {
    let mut r = u64::from(reg);
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        r = _mm_crc32_u64(r, word(w));
    }
    let mut reg = r as u32;
    let mut rest = words.remainder();
    if rest.len() >= 4 {
        reg = _mm_crc32_u32(
            reg,
            u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]),
        );
        rest = &rest[4..];
    }
    if rest.len() >= 2 {
        reg = _mm_crc32_u16(reg, u16::from_le_bytes([rest[0], rest[1]]));
        rest = &rest[2..];
    }
    if let Some(&b) = rest.first() {
        reg = _mm_crc32_u8(reg, b);
    }
    reg
}

/// Payloads shorter than this go through [`command`]'s word loop; longer
/// ones through [`update`]'s lanes (or the caller's faster kernel).
pub(crate) const COMMAND_SHORT: usize = 3 * SHORT;

/// The register after a TLV command held in one slice: its 10-byte header
/// with bytes 6..10 (the CRC field) taken as zero, then its payload
/// (`command[10..]`). `command` must hold at least the header.
///
/// Short commands are mostly latency and branches: [`short`]'s tail (4, 2,
/// 1 bytes) takes a different path for each payload length. Here the only
/// branch is the word loop (see [`command_head`]).
#[inline]
#[target_feature(enable = "sse4.2")]
pub(crate) fn command(reg: u32, command: &[u8]) -> u32 {
    let (reg, words) = command_head(reg, command);
    whole_words(reg, words)
}

/// The register after `words` (a whole number of 8-byte words) from `reg`.
#[inline]
#[target_feature(enable = "sse4.2")]
pub(crate) fn whole_words(reg: u32, words: &[u8]) -> u32 {
    let mut r = u64::from(reg);
    for w in words.chunks_exact(8) {
        r = _mm_crc32_u64(r, word(w));
    }
    r as u32
}

/// A command's header and the first `len % 8` bytes of its payload, with
/// no branch: returns the register after them and the rest of the payload
/// (a whole number of words).
/// - The header is one 8-byte step over its first eight bytes, the CRC
///   field's first two masked in a register (no masked copy through
///   memory), and one 2-byte step over two zero bytes.
/// - The payload's first `t = len % 8` bytes are one 8-byte step over the
///   word that ends where they end, which starts inside the header: its
///   first `8 - t` bytes are masked to zero, and leading zeros do not move
///   a zero register. The register is folded into the word's data bytes
///   instead (the CRC is linear); what of it lies past those `t` bytes
///   (when `t < 4`) is shifted along, as a byte-wise step would.
#[inline]
#[target_feature(enable = "sse4.2")]
pub(crate) fn command_head(reg: u32, command: &[u8]) -> (u32, &[u8]) {
    let (head, payload) = command.split_at(10);
    let r = _mm_crc32_u64(u64::from(reg), word(head) & 0xffff_ffff_ffff);
    let x = u64::from(_mm_crc32_u16(r as u32, 0));
    let t = payload.len() % 8;
    // The eight bytes that end at payload[t] (the header holds ten).
    let w = word(&command[2 + t..10 + t]);
    let keep = (((1u128 << (8 * t)) - 1) << (64 - 8 * t)) as u64;
    let w = (w & keep) ^ ((u128::from(x) << (64 - 8 * t)) as u64);
    let r = _mm_crc32_u64(0, w) ^ (x >> (8 * t));
    (r as u32, &payload[t..])
}

/// The three registers after three lanes of equal length (whole words),
/// run interleaved: `a` from `reg`, `b` and `c` from zero. The caller joins
/// them by carrying `ra` and `rb` through the lanes after theirs.
#[inline]
#[target_feature(enable = "sse4.2")]
pub(crate) fn lanes(reg: u32, a: &[u8], b: &[u8], c: &[u8]) -> (u32, u32, u32) {
    let (mut ra, mut rb, mut rc) = (u64::from(reg), 0u64, 0u64);
    for ((wa, wb), wc) in a
        .chunks_exact(8)
        .zip(b.chunks_exact(8))
        .zip(c.chunks_exact(8))
    {
        ra = _mm_crc32_u64(ra, word(wa));
        rb = _mm_crc32_u64(rb, word(wb));
        rc = _mm_crc32_u64(rc, word(wc));
    }
    (ra as u32, rb as u32, rc as u32)
}

/// Whole blocks of three `L`-byte lanes; returns the register and what is
/// left (less than one block).
#[inline]
#[target_feature(enable = "sse4.2")]
fn three_way<'a, const L: usize>(
    mut reg: u32,
    data: &'a [u8],
    shift: &ShiftTable,
) -> (u32, &'a [u8]) {
    let mut blocks = data.chunks_exact(3 * L);
    for block in &mut blocks {
        let (a, bc) = block.split_at(L);
        let (b, c) = bc.split_at(L);
        let (ra, rb, rc) = lanes(reg, a, b, c);
        reg = shift.apply(shift.apply(ra) ^ rb) ^ rc;
    }
    (reg, blocks.remainder())
}

/// The register after `data`, from `reg`.
#[target_feature(enable = "sse4.2")]
pub(crate) fn update(reg: u32, data: &[u8]) -> u32 {
    if data.len() < 3 * SHORT {
        return short(reg, data);
    }
    let (reg, rest) = three_way::<LONG>(reg, data, &LONG_SHIFT);
    let (reg, rest) = three_way::<SHORT>(reg, rest, &SHORT_SHIFT);
    short(reg, rest)
}

/// The register after `head` and then `tail`.
#[target_feature(enable = "sse4.2")]
pub(crate) fn update2(reg: u32, head: &[u8], tail: &[u8]) -> u32 {
    update(short(reg, head), tail)
}

/// Copies one block of three `L`-byte lanes while it computes their CRCs.
#[inline]
#[target_feature(enable = "sse4.2")]
fn copy_three_way<const L: usize>(
    mut reg: u32,
    src: &[u8],
    dst: &mut [u8],
    shift: &ShiftTable,
) -> u32 {
    for (block, out) in src.chunks_exact(3 * L).zip(dst.chunks_exact_mut(3 * L)) {
        let (a, bc) = block.split_at(L);
        let (b, c) = bc.split_at(L);
        let (oa, obc) = out.split_at_mut(L);
        let (ob, oc) = obc.split_at_mut(L);
        let (mut ra, mut rb, mut rc) = (u64::from(reg), 0u64, 0u64);
        for (((((wa, wb), wc), da), db), dc) in a
            .chunks_exact(8)
            .zip(b.chunks_exact(8))
            .zip(c.chunks_exact(8))
            .zip(oa.chunks_exact_mut(8))
            .zip(ob.chunks_exact_mut(8))
            .zip(oc.chunks_exact_mut(8))
        {
            let (xa, xb, xc) = (word(wa), word(wb), word(wc));
            ra = _mm_crc32_u64(ra, xa);
            rb = _mm_crc32_u64(rb, xb);
            rc = _mm_crc32_u64(rc, xc);
            da.copy_from_slice(&xa.to_le_bytes());
            db.copy_from_slice(&xb.to_le_bytes());
            dc.copy_from_slice(&xc.to_le_bytes());
        }
        reg = shift.apply(shift.apply(ra as u32) ^ rb as u32) ^ rc as u32;
    }
    reg
}

/// Copies `src` into `dst` (of the same length) and returns the register
/// after `src`.
#[target_feature(enable = "sse4.2")]
pub(crate) fn copy_update(reg: u32, src: &[u8], dst: &mut [u8]) -> u32 {
    let long = src.len() / (3 * LONG) * (3 * LONG);
    let reg = copy_three_way::<LONG>(reg, &src[..long], &mut dst[..long], &LONG_SHIFT);
    let (src, dst) = (&src[long..], &mut dst[long..]);
    let short_len = src.len() / (3 * SHORT) * (3 * SHORT);
    let reg = copy_three_way::<SHORT>(reg, &src[..short_len], &mut dst[..short_len], &SHORT_SHIFT);
    let (src, dst) = (&src[short_len..], &mut dst[short_len..]);
    dst.copy_from_slice(src);
    short(reg, src)
}
