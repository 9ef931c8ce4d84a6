//! The CRC-32C kernels of `proto-crc32c` beside the `crc32c` crate (0.6,
//! SSE4.2 with its own three-way interleave), on the same bytes:
//!
//! - `crc-commands` (`Throughput::Elements`, commands): the CRC of every
//!   command of the small-files stream, the header with its CRC field
//!   zeroed and then the payload, as a decoder must check it.
//!   - `crc32c-append-x2`: two `crc32c_append` calls (a 10-byte header copy,
//!     then the payload): what btrfs-stream and the first proto-tlv did;
//!   - `crc32c-one-call`: one `crc32c` call over the command as it lies in
//!     the buffer (ignores the zeroing, so not a valid check: the call
//!     overhead alone);
//!   - `proto-crc32c-append2`: `crc32c_append2` (one 8-byte step for the
//!     masked header, one 2-byte step, the payload);
//!   - `proto-crc32c-command`: `crc32c_append_command` over the command as
//!     it lies in the buffer (the header masked in a register, the payload's
//!     first `len % 8` bytes in one step): what proto-tlv's decoder does now.
//! - `crc-bulk` (`Throughput::Bytes`): one call over a 64 MiB buffer.
//! - `crc-copy-64k` (`Throughput::Bytes`): 64 MiB copied through a 64 KiB
//!   buffer: a plain copy, a copy then a `crc32c` pass, and
//!   `copy_crc32c_append` (copy and CRC in one pass).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use proto_stream_benches::small_input;

/// (offset, payload length) of every command of a btrfs stream, found by
/// proto-btrfs's decoder before anything is timed, so the timed loops do
/// no parsing.
fn commands(bytes: &[u8]) -> Vec<(usize, usize)> {
    proto_btrfs::BtrfsStream::parse(bytes)
        .expect("a btrfs stream")
        .commands()
        .map(|c| {
            let c = c.expect("a command");
            (c.offset() as usize, c.payload().len())
        })
        .collect()
}

fn crc_commands(c: &mut Criterion) {
    let input = small_input();
    eprintln!("crc-commands: {}", input.describe());
    let bytes = &input.bytes[..];
    let cmds = commands(bytes);
    assert_eq!(cmds.len() as u64, input.commands);
    // Every variant that checks gives the stored CRCs.
    let stored: u64 = cmds
        .iter()
        .map(|&(at, _)| {
            u64::from(u32::from_le_bytes(
                bytes[at + 6..at + 10].try_into().unwrap(),
            ))
        })
        .sum();

    let mut g = c.benchmark_group("crc-commands");
    g.throughput(Throughput::Elements(cmds.len() as u64))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let x2 = |bytes: &[u8]| -> u64 {
        cmds.iter()
            .map(|&(at, len)| {
                let mut h = [0u8; 10];
                h[..6].copy_from_slice(&bytes[at..at + 6]);
                let s = crc32c::crc32c_append(!0, &h);
                u64::from(!crc32c::crc32c_append(s, &bytes[at + 10..at + 10 + len]))
            })
            .sum()
    };
    let append2 = |bytes: &[u8]| -> u64 {
        cmds.iter()
            .map(|&(at, len)| {
                let h = [
                    bytes[at],
                    bytes[at + 1],
                    bytes[at + 2],
                    bytes[at + 3],
                    bytes[at + 4],
                    bytes[at + 5],
                    0,
                    0,
                    0,
                    0,
                ];
                u64::from(!proto_crc32c::crc32c_append2(
                    !0,
                    &h,
                    &bytes[at + 10..at + 10 + len],
                ))
            })
            .sum()
    };
    let command = |bytes: &[u8]| -> u64 {
        cmds.iter()
            .map(|&(at, len)| {
                u64::from(!proto_crc32c::crc32c_append_command(
                    !0,
                    &bytes[at..at + 10 + len],
                ))
            })
            .sum()
    };
    assert_eq!(x2(bytes), stored, "crc32c-append-x2");
    assert_eq!(command(bytes), stored, "proto-crc32c-command");
    assert_eq!(append2(bytes), stored, "proto-crc32c-append2");
    g.bench_function("crc32c-append-x2", |b| b.iter(|| x2(black_box(bytes))));
    g.bench_function("crc32c-one-call", |b| {
        b.iter(|| {
            let bytes = black_box(bytes);
            cmds.iter()
                .map(|&(at, len)| u64::from(crc32c::crc32c(&bytes[at..at + 10 + len])))
                .sum::<u64>()
        })
    });
    g.bench_function("proto-crc32c-append2", |b| {
        b.iter(|| append2(black_box(bytes)))
    });
    g.bench_function("proto-crc32c-command", |b| {
        b.iter(|| command(black_box(bytes)))
    });
    g.finish();
}

fn pseudo_random(n: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..n / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect()
}

fn crc_bulk(c: &mut Criterion) {
    let data = pseudo_random(64 << 20);
    assert_eq!(crc32c::crc32c(&data), proto_crc32c::crc32c(&data));
    let mut g = c.benchmark_group("crc-bulk");
    g.throughput(Throughput::Bytes(data.len() as u64))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g.bench_function("crc32c", |b| b.iter(|| crc32c::crc32c(black_box(&data))));
    g.bench_function("proto-crc32c", |b| {
        b.iter(|| proto_crc32c::crc32c(black_box(&data)))
    });
    g.finish();
}

fn crc_copy(c: &mut Criterion) {
    const BUF: usize = 64 * 1024;
    let data = pseudo_random(64 << 20);
    let mut buf = vec![0u8; BUF];
    let mut g = c.benchmark_group("crc-copy-64k");
    g.throughput(Throughput::Bytes(data.len() as u64))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g.bench_function("plain-copy", |b| {
        b.iter(|| {
            for piece in black_box(&data[..]).chunks(BUF) {
                buf[..piece.len()].copy_from_slice(piece);
                black_box(&buf);
            }
        })
    });
    g.bench_function("copy+crc32c", |b| {
        b.iter(|| {
            let mut crc = 0;
            for piece in black_box(&data[..]).chunks(BUF) {
                buf[..piece.len()].copy_from_slice(piece);
                crc = crc32c::crc32c_append(crc, &buf[..piece.len()]);
                black_box(&buf);
            }
            crc
        })
    });
    g.bench_function("proto-crc32c-fused", |b| {
        b.iter(|| {
            let mut crc = 0;
            for piece in black_box(&data[..]).chunks(BUF) {
                crc = proto_crc32c::copy_crc32c_append(crc, piece, &mut buf[..piece.len()]);
                black_box(&buf);
            }
            crc
        })
    });
    g.finish();
}

criterion_group!(benches, crc_commands, crc_bulk, crc_copy);
criterion_main!(benches);
