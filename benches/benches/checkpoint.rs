//! Checkpointed emission of btrfs send streams (`proto-checkpoint` with the
//! `proto-btrfs` producer), side by side with plain copies of the same bytes
//! through the same buffers, in the same run.
//!
//! - `emit-64k` (`Throughput::Bytes`, the large-data stream: 128 KiB
//!   writes, so every write is split across 64 KiB buffers and needs new
//!   CRCs): `plain-copy` copies the stream through one 64 KiB buffer;
//!   `copy+crc32c` also checksums each buffer in the same pass (the least any
//!   emitter that checks what it passes on can do); `emitter` is
//!   `Emitter::fill` with `StreamProducer` over the same bytes, a safe point
//!   after every command, a token after every fill.
//! - `emit-64k-small` (`Throughput::Bytes`, the small-files stream: 281k
//!   commands, per-command work dominates): the same three.
//! - `rearm` (large-data stream): `Emitter::resume` (a producer over the
//!   stream, restored at the token's safe point, the commands since skipped)
//!   from a token at 10% and at 90% of the stream, with a safe point every
//!   command and every 64 commands (63 commands to skip at both cuts);
//!   `+fill`: the same and the first 64 KiB fill after it; `replay-to-10%`
//!   emits from the start up to the 10% token, which is what re-arming
//!   saves.
//!
//! Inputs: see the `proto-stream-benches` library.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use proto_btrfs::checkpoint::{StreamProducer, WRITE_SPLIT};
use proto_btrfs::Btrfs;
use proto_checkpoint::{DataSplit, Emitter, Format, Token};
use proto_stream_benches::{large_input, small_input, Input};

const BUF: usize = 64 * 1024;

fn emitter(bytes: &[u8], safe_every: u64) -> Emitter<StreamProducer<&[u8]>, DataSplit> {
    Emitter::new(Btrfs.producer(bytes, safe_every).unwrap(), WRITE_SPLIT).unwrap()
}

/// The stream through `buf` by the emitter; returns the bytes emitted.
fn emit_all(bytes: &[u8], buf: &mut [u8]) -> u64 {
    let mut e = emitter(bytes, 1);
    let mut n = 0u64;
    loop {
        let f = e.fill(buf).unwrap();
        black_box(&buf[..f.written]);
        n += f.written as u64;
        if f.ended {
            return n;
        }
    }
}

/// The peer: the same bytes copied through `buf`.
fn plain_copy(bytes: &[u8], buf: &mut [u8]) -> u64 {
    for c in bytes.chunks(buf.len()) {
        buf[..c.len()].copy_from_slice(c);
        black_box(&buf[..c.len()]);
    }
    bytes.len() as u64
}

/// Copy and CRC-32C of each buffer in one pass, 16 KiB at a time (the CRC
/// reads the block just copied, while it is in cache), as the emitter copies
/// a whole command.
fn copy_crc(bytes: &[u8], buf: &mut [u8]) -> u64 {
    let mut crc = 0;
    for c in bytes.chunks(buf.len()) {
        let d = &mut buf[..c.len()];
        for (x, y) in d.chunks_mut(16 * 1024).zip(c.chunks(16 * 1024)) {
            x.copy_from_slice(y);
            crc = crc32c::crc32c_append(crc, y);
        }
        black_box(&buf[..c.len()]);
    }
    black_box(crc);
    bytes.len() as u64
}

fn emit_group(c: &mut Criterion, group: &str, input: &Input) {
    eprintln!("{group}: {}", input.describe());
    let bytes = &input.bytes[..];
    let mut buf = vec![0u8; BUF];
    // The emitter's output is longer than the input by the prefixes of the
    // split writes; the throughput counts the input.
    let emitted = emit_all(bytes, &mut buf);
    eprintln!(
        "{group}: the emitter writes {emitted} bytes for {} input bytes ({:+.3}%)",
        bytes.len(),
        (emitted as f64 / bytes.len() as f64 - 1.0) * 100.0
    );
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Bytes(bytes.len() as u64))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    g.bench_function("plain-copy", |b| {
        b.iter(|| plain_copy(black_box(bytes), &mut buf))
    });
    g.bench_function("copy+crc32c", |b| {
        b.iter(|| copy_crc(black_box(bytes), &mut buf))
    });
    g.bench_function("emitter", |b| {
        b.iter(|| emit_all(black_box(bytes), &mut buf))
    });
    g.finish();
}

fn emit_large(c: &mut Criterion) {
    emit_group(c, "emit-64k", &large_input());
}

fn emit_small(c: &mut Criterion) {
    emit_group(c, "emit-64k-small", &small_input());
}

/// Tokens at a command boundary near each of `fractions` of the stream, with
/// a safe point every `safe_every` commands and the most commands to skip
/// (`safe_every - 1`): the same re-arm work wherever the cut is.
fn tokens_at(bytes: &[u8], safe_every: u64, fractions: &[f64]) -> Vec<Token> {
    let mut e = emitter(bytes, safe_every);
    e.set_units_per_fill(1);
    let mut buf = vec![0u8; 1 << 20];
    let mut all = Vec::new();
    loop {
        let f = e.fill(&mut buf).unwrap();
        if f.ended {
            break;
        }
        all.push(e.token());
    }
    fractions
        .iter()
        .map(|fr| {
            let want = (bytes.len() as f64 * fr) as u64;
            all.iter()
                .find(|t| t.offset >= want && t.since_safe_point == safe_every - 1)
                .unwrap()
                .clone()
        })
        .collect()
}

fn rearm(c: &mut Criterion) {
    let input = large_input();
    eprintln!("rearm: {}", input.describe());
    let bytes = &input.bytes[..];
    let mut g = c.benchmark_group("rearm");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let mut buf = vec![0u8; BUF];
    for k in [1u64, 64] {
        let tokens = tokens_at(bytes, k, &[0.1, 0.9]);
        for (pct, t) in ["10%", "90%"].iter().zip(&tokens) {
            eprintln!(
                "rearm: safe every {k}, {pct}: offset {} of {}, {} commands to skip",
                t.offset,
                bytes.len(),
                t.since_safe_point,
            );
            // Re-arming: a producer over the stream, restored at the safe
            // point, the commands since skipped.
            g.bench_function(format!("safe-every-{k}/{pct}"), |b| {
                b.iter(|| {
                    let p = Btrfs.producer(black_box(bytes), k).unwrap();
                    Emitter::resume(p, WRITE_SPLIT, black_box(t)).unwrap()
                })
            });
            // And the first 64 KiB after it (a 128 KiB write checked whole,
            // half of it copied).
            g.bench_function(format!("safe-every-{k}+fill/{pct}"), |b| {
                b.iter(|| {
                    let p = Btrfs.producer(black_box(bytes), k).unwrap();
                    let mut e = Emitter::resume(p, WRITE_SPLIT, black_box(t)).unwrap();
                    e.fill(&mut buf).unwrap().written
                })
            });
        }
        if k == 1 {
            // What re-arming saves: emitting again from the start.
            let stop = tokens[0].offset;
            g.bench_function("replay-to-10%", |b| {
                b.iter(|| {
                    let mut e = emitter(black_box(bytes), 1);
                    while e.offset() < stop {
                        black_box(e.fill(&mut buf).unwrap().written);
                    }
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, emit_large, emit_small, rearm);
criterion_main!(benches);
