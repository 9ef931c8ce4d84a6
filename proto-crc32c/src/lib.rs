//! # proto-crc32c: the CRC-32C kernels of the proto-stream kit
//!
//! Every command of a TLV stream carries a CRC-32C (Castagnoli) of its
//! header and payload. Most commands are short (a file's metadata is a
//! hundred bytes or so), so the cost that matters is the *latency* of one
//! short CRC, not the throughput over megabytes. This crate has three
//! kernels, each with the same result as the reference `crc32c` crate:
//!
//! - [`crc32c_append`] and [`crc32c_append2`] (a header, then a payload, in
//!   one call): short inputs go through the CPU's CRC instruction 8 bytes
//!   at a time with unaligned loads, then 4, 2, 1: no alignment loop, no
//!   second call for the header. Inputs from 384 bytes on run three
//!   independent lanes interleaved, joined by table look-ups (the CRC is
//!   linear), so the instruction's throughput, not its latency, is the limit.
//! - [`copy_crc32c_append`]: copies a buffer while it computes its CRC, in
//!   one pass over the bytes (what an emitter does to every byte it sends).
//! - [`crc32c_shift`]: how a change of the starting state carries through
//!   `len` more bytes, so one pass over some bytes serves any starting
//!   state.
//!
//! The hardware path (x86-64 SSE4.2) is chosen at run time with the `std`
//! feature (on by default), or at build time without it
//! (`-C target-feature=+sse4.2`). Everywhere else a portable slicing-by-8
//! table runs, in `no_std`. [`portable`] exposes it, so the two can be
//! compared; the tests and the `crc32c_kernels` fuzz target check both
//! against the `crc32c` crate for every length, alignment and seed.
//!
//! ```
//! // The standard check value of "123456789".
//! assert_eq!(proto_crc32c::crc32c(b"123456789"), 0xE306_9283);
//!
//! // A header (its CRC field zeroed) and a payload, in one call.
//! let (head, payload) = ([10u8, 0, 0, 0, 15, 0, 0, 0, 0, 0], b"payload!!!");
//! let mut whole = head.to_vec();
//! whole.extend_from_slice(payload);
//! assert_eq!(
//!     proto_crc32c::crc32c_append2(0, &head, payload),
//!     proto_crc32c::crc32c(&whole)
//! );
//!
//! // Copy and CRC in one pass.
//! let mut out = vec![0u8; whole.len()];
//! let crc = proto_crc32c::copy_crc32c_append(0, &whole, &mut out);
//! assert_eq!((crc, &out), (proto_crc32c::crc32c(&whole), &whole));
//! ```
//!
//! ## `unsafe`
//!
//! This is the one crate of the kit that is allowed `unsafe`, and only for
//! one thing: calling the `#[target_feature(enable = "sse4.2")]` kernels of
//! the `x86` module once the CPU is known to have SSE4.2. Each such call
//! has a `// SAFETY:` line; the kernels themselves are safe code (the
//! intrinsics are safe inside a function with the feature enabled, and every
//! load and store is a bounds-checked slice access). Every other module
//! forbids `unsafe`.

#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

#[cfg(feature = "std")]
extern crate std;

pub mod portable;
mod shift;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use shift::crc32c_shift;

/// Whether the CPU's CRC-32C instruction is used (checked once per call:
/// with `std`, `is_x86_feature_detected!` caches the answer in an atomic).
#[inline]
pub fn hardware() -> bool {
    #[cfg(all(target_arch = "x86_64", feature = "std", not(miri)))]
    {
        std::is_x86_feature_detected!("sse4.2")
    }
    #[cfg(all(target_arch = "x86_64", not(all(feature = "std", not(miri)))))]
    {
        cfg!(target_feature = "sse4.2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The standard CRC-32C of `data` (initial value and final XOR `!0`):
/// `crc32c(b"123456789") == 0xE306_9283`.
#[inline]
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c_append(0, data)
}

/// Extends a standard CRC-32C `crc` (of the bytes before) by `data`:
/// `crc32c_append(crc32c(a), b) == crc32c(a ++ b)`, the same function as
/// the `crc32c` crate's `crc32c_append`.
#[inline]
pub fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if hardware() {
        // SAFETY: the CPU has SSE4.2 (`hardware()` checked it at run time,
        // or the build enabled it for every CPU it runs on).
        return !unsafe { x86::update(!crc, data) };
    }
    !portable::update(!crc, data)
}

/// [`crc32c_append`] over `head` and then `tail`, in one call: a command's
/// header (its CRC field zeroed by the caller) and its payload, with no
/// copy of the two into one buffer and no second dispatch.
#[inline]
pub fn crc32c_append2(crc: u32, head: &[u8], tail: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if hardware() {
        // SAFETY: as in `crc32c_append`: SSE4.2 is present.
        return !unsafe { x86::update2(!crc, head, tail) };
    }
    !portable::update(portable::update(!crc, head), tail)
}

/// Copies `src` into `dst` and returns `crc32c_append(crc, src)`, in one
/// pass over the bytes: each 8-byte word is loaded once, fed to the CRC and
/// stored.
///
/// # Panics
///
/// If `dst.len() != src.len()`, as `copy_from_slice` does.
#[inline]
pub fn copy_crc32c_append(crc: u32, src: &[u8], dst: &mut [u8]) -> u32 {
    assert_eq!(
        src.len(),
        dst.len(),
        "copy_crc32c_append: source and destination lengths differ"
    );
    #[cfg(target_arch = "x86_64")]
    if hardware() {
        // SAFETY: as in `crc32c_append`: SSE4.2 is present.
        return !unsafe { x86::copy_update(!crc, src, dst) };
    }
    dst.copy_from_slice(src);
    !portable::update(!crc, src)
}
