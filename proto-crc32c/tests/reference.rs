//! Every kernel against the `crc32c` crate (the reference) and against the
//! portable tables, for every length up to past two long blocks, every
//! alignment and many seeds; proptest for the rest.

use proptest::prelude::*;

/// Deterministic bytes (xorshift), so a failure names its input.
fn bytes(n: usize, mut x: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn check(seed: u32, data: &[u8]) {
    let want = crc32c::crc32c_append(seed, data);
    assert_eq!(
        proto_crc32c::crc32c_append(seed, data),
        want,
        "append, len {}",
        data.len()
    );
    assert_eq!(
        proto_crc32c::portable::crc32c_append(seed, data),
        want,
        "portable, len {}",
        data.len()
    );
    let mut out = vec![0xA5u8; data.len()];
    assert_eq!(
        proto_crc32c::copy_crc32c_append(seed, data, &mut out),
        want,
        "copy, len {}",
        data.len()
    );
    assert_eq!(out, data, "copy's bytes, len {}", data.len());
    if data.len() >= proto_crc32c::COMMAND_HEADER {
        // The same bytes as a TLV command: the CRC field taken as zero.
        let mut masked = data.to_vec();
        masked[6..10].fill(0);
        let want = crc32c::crc32c_append(seed, &masked);
        assert_eq!(
            proto_crc32c::crc32c_append_command(seed, data),
            want,
            "command, len {}",
            data.len()
        );
        for k in proto_crc32c::Kernel::available() {
            assert_eq!(
                k.crc32c_append_command(seed, data),
                want,
                "command, {k:?}, len {}",
                data.len()
            );
        }
    }
    for cut in [0, 1, 7, 10, data.len() / 2, data.len()] {
        let cut = cut.min(data.len());
        let (h, t) = data.split_at(cut);
        assert_eq!(
            proto_crc32c::crc32c_append2(seed, h, t),
            want,
            "append2, len {}, cut {cut}",
            data.len()
        );
    }
}

#[test]
fn kernels_of_this_machine() {
    let ks: Vec<_> = proto_crc32c::Kernel::available().collect();
    eprintln!("kernels available here: {ks:?}");
    assert_eq!(ks[0], proto_crc32c::Kernel::Portable);
    if !cfg!(miri) && std::is_x86_feature_detected!("sse4.2") {
        assert!(ks.contains(&proto_crc32c::Kernel::Sse42));
    }
}

#[test]
fn check_value() {
    assert_eq!(proto_crc32c::crc32c(b"123456789"), 0xE306_9283);
    assert_eq!(
        proto_crc32c::portable::crc32c_append(0, b"123456789"),
        0xE306_9283
    );
}

/// Past one long block (3 x 8 KiB) plus a short block (3 x 128) plus a
/// tail; under Miri (which interprets, slowly) past the short blocks only.
const LONGEST: usize = if cfg!(miri) {
    3 * 128 * 2 + 17
} else {
    3 * 8192 + 3 * 128 + 17
};

#[test]
fn every_length_and_alignment() {
    let buf = bytes(LONGEST + 64, 0x9E37_79B9_7F4A_7C15);
    for off in 0..8 {
        let some = |l: &usize| {
            if cfg!(miri) {
                (off == 0 && l.is_multiple_of(5)) || l.is_multiple_of(97)
            } else {
                *l < 1100 || l.is_multiple_of(61) || off == 0
            }
        };
        for len in (0..=LONGEST).filter(some) {
            check(0xDEAD_BEEF ^ len as u32, &buf[off..off + len]);
        }
    }
    check(0, &buf);
    check(!0, &buf[3..]);
}

#[test]
fn seeds() {
    let buf = bytes(3 * 8192 + 1, 42);
    for seed in [0, 1, !0, 0x8000_0000, 0x1234_5678] {
        for len in [
            0,
            1,
            9,
            383,
            384,
            385,
            767,
            768,
            769,
            3 * 8192 - 1,
            3 * 8192,
            3 * 8192 + 1,
        ] {
            if cfg!(miri) && len > 1000 {
                continue;
            }
            check(seed, &buf[..len]);
        }
    }
}

#[test]
fn shift_carries_a_change_through_any_bytes() {
    let buf = bytes(70_000, 7);
    for len in [0usize, 1, 5, 64, 1000, 69_999] {
        if cfg!(miri) && len > 1000 {
            continue;
        }
        let b = &buf[..len];
        for (crc, delta) in [(0u32, 1u32), (0x1234_5678, 0xFFFF_FFFF), (!0, 0x8000_0001)] {
            assert_eq!(
                proto_crc32c::crc32c_append(crc ^ delta, b),
                proto_crc32c::crc32c_append(crc, b) ^ proto_crc32c::crc32c_shift(delta, len as u64)
            );
        }
    }
}

#[test]
#[should_panic(expected = "shorter than a command header")]
fn command_shorter_than_its_header_panics() {
    proto_crc32c::crc32c_append_command(0, &[0u8; 9]);
}

#[test]
#[should_panic(expected = "lengths differ")]
fn copy_of_unequal_lengths_panics() {
    let mut out = [0u8; 3];
    proto_crc32c::copy_crc32c_append(0, b"four", &mut out);
}

proptest! {
    // proptest keeps its failures in files, which Miri's isolation forbids;
    // the tests above cover Miri.
    #[cfg_attr(miri, ignore)]
    #[test]
    fn any_input(seed: u32, data in proptest::collection::vec(any::<u8>(), 0..20_000), off in 0usize..16) {
        let off = off.min(data.len());
        check(seed, &data[off..]);
    }
}
