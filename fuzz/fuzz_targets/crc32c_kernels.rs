//! `crc32c_kernels`: every kernel of `proto-crc32c` against the `crc32c`
//! crate (the reference) and the portable tables.
//!
//! Input: a 4-byte seed, an alignment offset (0..64), a cut point, then the
//! message. Properties, for that seed, alignment and length:
//! - `crc32c_append` (the best kernel for the length), every kernel this
//!   CPU has (`Kernel::available`: portable, SSE4.2, AVX-512 VPCLMULQDQ) and
//!   `portable::crc32c_append` equal `crc32c::crc32c_append`;
//! - `crc32c_append2` over the message cut anywhere equals it too;
//! - `copy_crc32c_append`, through the best kernel and through each one,
//!   returns it and leaves an exact copy, into a destination at its own
//!   alignment;
//! - `crc32c_append_command`, through the best kernel and through each
//!   one, equals the reference over the message with bytes 6..10 (a TLV
//!   header's CRC field) zeroed, when the message holds a header;
//! - `crc32c_shift` carries a change of seed through the message.
#![cfg_attr(fuzzing, no_main)]

#[macro_use]
#[path = "common/harness.rs"]
mod harness;

target!(|data: &[u8]| {
    if data.len() < 7 {
        return;
    }
    let seed = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
    let align = usize::from(data[4] % 64);
    let dst_align = usize::from(data[5] % 64);
    let cut = usize::from(data[6]);
    // The message at the chosen alignment (relative to a 64-byte boundary).
    let mut backing = vec![0u8; data.len() + 128];
    let base = backing.as_ptr() as usize % 64;
    let start = (64 - base) % 64 + align;
    let msg_len = data.len() - 7;
    backing[start..start + msg_len].copy_from_slice(&data[7..]);
    let msg = &backing[start..start + msg_len];

    let want = crc32c::crc32c_append(seed, msg);
    assert_eq!(proto_crc32c::crc32c_append(seed, msg), want, "append");
    assert_eq!(proto_crc32c::portable::crc32c_append(seed, msg), want, "portable");
    let cut = cut.min(msg.len());
    assert_eq!(
        proto_crc32c::crc32c_append2(seed, &msg[..cut], &msg[cut..]),
        want,
        "append2 cut at {cut}"
    );
    let mut out = vec![0xA5u8; msg.len() + 128];
    let obase = out.as_ptr() as usize % 64;
    let ostart = (64 - obase) % 64 + dst_align;
    let dst = &mut out[ostart..ostart + msg.len()];
    assert_eq!(proto_crc32c::copy_crc32c_append(seed, msg, dst), want, "copy");
    assert_eq!(&*dst, msg, "copy's bytes");
    for k in proto_crc32c::Kernel::available() {
        assert_eq!(k.crc32c_append(seed, msg), want, "{k:?}");
        dst.fill(0x5A);
        assert_eq!(k.copy_crc32c_append(seed, msg, dst), want, "{k:?} copy");
        assert_eq!(&*dst, msg, "{k:?} copy's bytes");
    }
    if msg.len() >= proto_crc32c::COMMAND_HEADER {
        let mut masked = msg.to_vec();
        masked[6..10].fill(0);
        let want = crc32c::crc32c_append(seed, &masked);
        assert_eq!(proto_crc32c::crc32c_append_command(seed, msg), want, "command");
        for k in proto_crc32c::Kernel::available() {
            assert_eq!(k.crc32c_append_command(seed, msg), want, "{k:?} command");
        }
    }
    let delta = seed.rotate_left(7) | 1;
    assert_eq!(
        proto_crc32c::crc32c_append(seed ^ delta, msg),
        want ^ proto_crc32c::crc32c_shift(delta, msg.len() as u64),
        "shift"
    );
});
