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
//!   With PCLMULQDQ (part of the `Vpclmul` kernel) the lanes start at 96
//!   bytes and take any whole number of words, joined by two 64-bit
//!   carry-less multiplications: a command of a few hundred bytes waits on
//!   the instruction's latency for a third of its words.
//! - [`crc32c_append_command`]: a TLV command as it lies in a buffer, its
//!   header's CRC field taken as zero without a masked copy. A short
//!   command costs its words' chain of `crc32` steps and little else: the
//!   payload's first `len % 8` bytes are one 8-byte step over a word that
//!   starts inside the header (masked), so no branch depends on the
//!   length's last bits. From 96 bytes on its words run in three lanes.
//! - Inputs from 1 KiB on (256 bytes for a copy), on CPUs with AVX-512 and
//!   VPCLMULQDQ: carry-less multiplication folds 256 bytes per round into
//!   four 512-bit accumulators, at about twice the CRC instruction's
//!   throughput.
//! - [`copy_crc32c_append`]: copies a buffer while it computes its CRC, in
//!   one pass over the bytes (what an emitter does to every byte it sends):
//!   each 64-byte vector is loaded once, folded and stored.
//! - [`crc32c_shift`]: how a change of the starting state carries through
//!   `len` more bytes, so one pass over some bytes serves any starting
//!   state.
//!
//! The hardware paths (x86-64 SSE4.2; AVX-512F with VPCLMULQDQ) are chosen
//! at run time with the `std` feature (on by default), or at build time
//! without it (`-C target-feature=...`). Everywhere else a portable
//! slicing-by-8 table runs, in `no_std`. [`Kernel`] names each kernel so
//! that they can be compared; the tests and the `crc32c_kernels` fuzz
//! target check every kernel the CPU has against the `crc32c` crate for
//! every length, alignment and seed.
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
//! This is the one crate of the kit that is allowed `unsafe`, for two
//! things: calling the `#[target_feature]` kernels once the CPU is known to
//! have the features, and the folding kernel's unaligned vector loads and
//! stores, each over a slice checked to hold the 16 or 64 bytes. Every
//! `unsafe` block has a `// SAFETY:` line (clippy's
//! `undocumented_unsafe_blocks` is denied). The `x86` kernels are safe
//! code (the intrinsics are safe inside a function with the feature
//! enabled, and every access is a slice access); `portable`, `shift` and
//! `x86` forbid `unsafe`.

#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

#[cfg(feature = "std")]
extern crate std;

#[cfg(target_arch = "x86_64")]
mod fold;
pub mod portable;
mod shift;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use shift::crc32c_shift;

/// Inputs from this many bytes on go through the folding kernel when the
/// CPU has it (below, the three lanes of `fold::update_mid` are as fast).
#[cfg(target_arch = "x86_64")]
const FOLD_FROM: usize = 1024;

/// A CRC-32C kernel. The free functions run the best one the CPU has
/// ([`Kernel::best`]); a kernel can also be called directly, e.g. to check
/// one against another, as the tests and the `crc32c_kernels` fuzz target
/// do.
///
/// ```
/// for k in proto_crc32c::Kernel::available() {
///     assert_eq!(k.crc32c_append(0, b"123456789"), 0xE306_9283, "{k:?}");
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// Slicing-by-8 tables: every CPU, `no_std`, no `unsafe`.
    Portable,
    /// The SSE4.2 `crc32` instruction: short inputs 8 bytes at a step,
    /// longer ones in three interleaved lanes (x86-64).
    Sse42,
    /// AVX-512F, VPCLMULQDQ and PCLMULQDQ besides SSE4.2: inputs from 1 KiB
    /// (copies from 256 bytes) folded 256 bytes per round on 512-bit
    /// vectors; from 96 bytes, three lanes of any whole number of words
    /// joined by 64-bit carry-less multiplications (x86-64).
    Vpclmul,
}

impl Kernel {
    /// The fastest kernel this CPU (and build) can run.
    #[inline]
    pub fn best() -> Kernel {
        if !sse42() {
            Kernel::Portable
        } else if vpclmul() {
            Kernel::Vpclmul
        } else {
            Kernel::Sse42
        }
    }

    /// Every kernel this CPU can run, the portable one first.
    pub fn available() -> impl Iterator<Item = Kernel> {
        [Kernel::Portable, Kernel::Sse42, Kernel::Vpclmul]
            .into_iter()
            .filter(|k| k.is_available())
    }

    /// Whether this CPU (and build) can run the kernel.
    #[inline]
    pub fn is_available(self) -> bool {
        match self {
            Kernel::Portable => true,
            Kernel::Sse42 => sse42(),
            Kernel::Vpclmul => sse42() && vpclmul(),
        }
    }

    fn assert_available(self) {
        assert!(self.is_available(), "{self:?} is not available on this CPU");
    }

    /// [`crc32c_append`] through this kernel.
    ///
    /// # Panics
    ///
    /// If the kernel is not [available](Kernel::is_available).
    pub fn crc32c_append(self, crc: u32, data: &[u8]) -> u32 {
        self.assert_available();
        // SAFETY: the kernel is available (asserted above).
        unsafe { self.append2_unchecked(crc, &[], data) }
    }

    /// [`crc32c_append2`] through this kernel.
    ///
    /// # Panics
    ///
    /// If the kernel is not [available](Kernel::is_available).
    pub fn crc32c_append2(self, crc: u32, head: &[u8], tail: &[u8]) -> u32 {
        self.assert_available();
        // SAFETY: the kernel is available (asserted above).
        unsafe { self.append2_unchecked(crc, head, tail) }
    }

    /// [`crc32c_append_command`] through this kernel.
    ///
    /// # Panics
    ///
    /// If the kernel is not [available](Kernel::is_available), or if
    /// `command` is shorter than [`COMMAND_HEADER`].
    pub fn crc32c_append_command(self, crc: u32, command: &[u8]) -> u32 {
        self.assert_available();
        assert_command(command);
        // SAFETY: the kernel is available and the command holds its header
        // (asserted above).
        unsafe { self.command_unchecked(crc, command) }
    }

    /// [`copy_crc32c_append`] through this kernel.
    ///
    /// # Panics
    ///
    /// If the kernel is not [available](Kernel::is_available), or if
    /// `dst.len() != src.len()`.
    pub fn copy_crc32c_append(self, crc: u32, src: &[u8], dst: &mut [u8]) -> u32 {
        self.assert_available();
        // SAFETY: the kernel is available (asserted above).
        unsafe { self.copy_unchecked(crc, src, dst) }
    }

    /// `crc` extended by `head` and then `tail`.
    ///
    /// # Safety
    ///
    /// The kernel must be [available](Kernel::is_available).
    #[inline]
    unsafe fn append2_unchecked(self, crc: u32, head: &[u8], tail: &[u8]) -> u32 {
        match self {
            Kernel::Portable => !portable::update(portable::update(!crc, head), tail),
            #[cfg(target_arch = "x86_64")]
            Kernel::Sse42 => {
                // SAFETY: the CPU has SSE4.2 (the caller's contract).
                !unsafe { x86::update2(!crc, head, tail) }
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Vpclmul if tail.len() >= FOLD_FROM => {
                // SAFETY: the CPU has SSE4.2, AVX-512F, VPCLMULQDQ and
                // PCLMULQDQ (the caller's contract); `tail` is long enough
                // for the folding kernel.
                !unsafe { fold::update(x86::update(!crc, head), tail) }
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Vpclmul => {
                // SAFETY: as above (PCLMULQDQ and SSE4.2 are part of it).
                !unsafe { fold::update2_mid(!crc, head, tail) }
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => unreachable!("only the portable kernel is available here"),
        }
    }

    /// `crc` extended by a TLV command held in one slice: its header with
    /// bytes 6..10 taken as zero, then its payload.
    ///
    /// # Safety
    ///
    /// The kernel must be [available](Kernel::is_available), and `command`
    /// must hold at least [`COMMAND_HEADER`] bytes.
    #[inline]
    // Only the x86-64 paths look at the payload's length.
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
    unsafe fn command_unchecked(self, crc: u32, command: &[u8]) -> u32 {
        let payload_len = command.len() - COMMAND_HEADER;
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Sse42 if payload_len < x86::COMMAND_SHORT => {
                // SAFETY: the CPU has SSE4.2 (the caller's contract).
                !unsafe { x86::command(!crc, command) }
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Vpclmul if payload_len < fold::MID_FROM => {
                // SAFETY: the CPU has SSE4.2 (part of the contract).
                !unsafe { x86::command(!crc, command) }
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Vpclmul if payload_len < FOLD_FROM => {
                // SAFETY: the CPU has PCLMULQDQ and SSE4.2 (part of the
                // contract).
                !unsafe { fold::command_mid(!crc, command) }
            }
            // SAFETY: the caller's contract.
            _ => unsafe { self.command_other(crc, command) },
        }
    }

    /// [`Kernel::command_unchecked`] off its short-command paths: the
    /// portable kernel, and long payloads (a masked copy of the header,
    /// then the payload through [`Kernel::append2_unchecked`]). Not inlined,
    /// so the short paths' caller stays small (no registers to save).
    ///
    /// # Safety
    ///
    /// As [`Kernel::command_unchecked`].
    #[inline(never)]
    unsafe fn command_other(self, crc: u32, command: &[u8]) -> u32 {
        let (head, payload) = command.split_at(COMMAND_HEADER);
        match self {
            Kernel::Portable => !portable::update(portable::update(!crc, &masked(head)), payload),
            // SAFETY: the caller's contract.
            _ => unsafe { self.append2_unchecked(crc, &masked(head), payload) },
        }
    }

    /// Copies `src` into `dst` and returns `crc` extended by `src`.
    ///
    /// # Safety
    ///
    /// The kernel must be [available](Kernel::is_available).
    #[inline]
    unsafe fn copy_unchecked(self, crc: u32, src: &[u8], dst: &mut [u8]) -> u32 {
        assert_eq!(
            src.len(),
            dst.len(),
            "copy_crc32c_append: source and destination lengths differ"
        );
        match self {
            Kernel::Portable => {
                dst.copy_from_slice(src);
                !portable::update(!crc, src)
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Sse42 => {
                // SAFETY: the CPU has SSE4.2 (the caller's contract).
                !unsafe { x86::copy_update(!crc, src, dst) }
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Vpclmul if src.len() >= fold::MIN_LEN => {
                // SAFETY: the CPU has what the folding kernel needs (the
                // caller's contract), and the input is long enough.
                !unsafe { fold::copy_update(!crc, src, dst) }
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Vpclmul => {
                // SAFETY: the CPU has SSE4.2 (part of the contract).
                !unsafe { x86::copy_update(!crc, src, dst) }
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => unreachable!("only the portable kernel is available here"),
        }
    }
}

/// Whether the CPU has SSE4.2 (with `std`, `is_x86_feature_detected!`
/// caches the answer in an atomic; without it, the build decides).
#[inline]
fn sse42() -> bool {
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

/// Whether the CPU has what the folding kernel needs besides SSE4.2.
#[inline]
fn vpclmul() -> bool {
    #[cfg(all(target_arch = "x86_64", feature = "std", not(miri)))]
    {
        std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("vpclmulqdq")
            && std::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(all(target_arch = "x86_64", not(all(feature = "std", not(miri)))))]
    {
        cfg!(all(
            target_feature = "avx512f",
            target_feature = "vpclmulqdq",
            target_feature = "pclmulqdq"
        ))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the CPU's CRC-32C instruction is used.
#[inline]
pub fn hardware() -> bool {
    sse42()
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
    crc32c_append2(crc, &[], data)
}

/// [`crc32c_append`] over `head` and then `tail`, in one call: a command's
/// header (its CRC field zeroed by the caller) and its payload, with no
/// copy of the two into one buffer and no second dispatch.
#[inline]
pub fn crc32c_append2(crc: u32, head: &[u8], tail: &[u8]) -> u32 {
    // SAFETY: `best` returns a kernel this CPU has.
    unsafe { Kernel::best().append2_unchecked(crc, head, tail) }
}

/// The length of a TLV command header: `len` (4 bytes), `cmd` (2), then the
/// CRC field (4), which [`crc32c_append_command`] takes as zero.
pub const COMMAND_HEADER: usize = 10;

/// [`crc32c_append`] over a TLV command held in one slice: its
/// [`COMMAND_HEADER`]-byte header with bytes 6..10 (the CRC field) taken as
/// zero, then its payload. The same as [`crc32c_append2`] over a masked
/// copy of the header and the payload, without the copy, and for short
/// payloads without a branch on their length's last bits: one 8-byte step
/// covers the payload's first `len % 8` bytes.
///
/// ```
/// let mut command = vec![4u8, 0, 0, 0, 15, 0, 0xaa, 0xbb, 0xcc, 0xdd];
/// command.extend_from_slice(b"data");
/// let mut masked = command.clone();
/// masked[6..10].fill(0);
/// assert_eq!(
///     proto_crc32c::crc32c_append_command(0, &command),
///     proto_crc32c::crc32c(&masked)
/// );
/// ```
///
/// # Panics
///
/// If `command` is shorter than [`COMMAND_HEADER`].
#[inline]
pub fn crc32c_append_command(crc: u32, command: &[u8]) -> u32 {
    assert_command(command);
    // SAFETY: `best` returns a kernel this CPU has; the command holds its
    // header (asserted above).
    unsafe { Kernel::best().command_unchecked(crc, command) }
}

#[inline]
#[track_caller]
fn assert_command(command: &[u8]) {
    assert!(
        command.len() >= COMMAND_HEADER,
        "crc32c_append_command: {} bytes, shorter than a command header",
        command.len()
    );
}

/// A command header's first six bytes and a zero CRC field.
#[inline(always)]
fn masked(head: &[u8]) -> [u8; COMMAND_HEADER] {
    [
        head[0], head[1], head[2], head[3], head[4], head[5], 0, 0, 0, 0,
    ]
}

/// Copies `src` into `dst` and returns `crc32c_append(crc, src)`, in one
/// pass over the bytes: each 64-byte block (8-byte word on CPUs without
/// AVX-512) is loaded once, folded into the CRC and stored.
///
/// # Panics
///
/// If `dst.len() != src.len()`, as `copy_from_slice` does.
#[inline]
pub fn copy_crc32c_append(crc: u32, src: &[u8], dst: &mut [u8]) -> u32 {
    // SAFETY: `best` returns a kernel this CPU has.
    unsafe { Kernel::best().copy_unchecked(crc, src, dst) }
}
