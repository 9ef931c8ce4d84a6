//! Decoding btrfs send streams: proto-btrfs side by side with its peers, over
//! the same bytes in memory (decoders in `common/mod.rs`).
//!
//! - `large-data` (`Throughput::Bytes`): 512 MiB of 128 KiB `write`
//!   commands. The ceiling is `crc32c` alone over the same bytes: every
//!   decoder must checksum every byte once.
//! - `small-files` (`Throughput::Elements`, commands): 281k small commands,
//!   where per-command overhead dominates.
//!
//! Inputs: see the `proto-stream-benches` library (real perf streams when
//! present, else synthetic ones). Each group loads its input only when one
//! of its benches is selected by the command-line filter.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use proto_stream_benches::{large_input, small_input, Input};

mod common;
use common::{btrfs_stream, crc32c_only, Decoder};

/// Every decoder must see every command, outside the timed loop.
fn check(input: &Input, decoders: &[(&str, Decoder)]) {
    for (name, f) in decoders {
        assert_eq!(f(&input.bytes), input.commands, "{name}");
    }
}

/// The benchmark filter given on the command line (`cargo bench -- FILTER`),
/// if any: the first argument that is not an option.
fn filter() -> Option<String> {
    // criterion's options that take a value as the next argument.
    const WITH_VALUE: &[&str] = &[
        "--color",
        "--save-baseline",
        "--baseline",
        "--baseline-lenient",
        "--load-baseline",
        "--profile-time",
        "--sample-size",
        "--warm-up-time",
        "--measurement-time",
        "--nresamples",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--plotting-backend",
        "--output-format",
        "--format",
        "-c",
        "-s",
        "-b",
    ];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if WITH_VALUE.contains(&a.as_str()) {
            args.next();
        } else if !a.starts_with('-') {
            return Some(a);
        }
    }
    None
}

/// Whether any bench of `group` can match the filter (a plain substring or a
/// regex: when in doubt, run).
fn selected(group: &str, names: &[&str]) -> bool {
    let Some(f) = filter() else { return true };
    let plain = !f.contains(['^', '$', '*', '+', '?', '(', '[', '|', '\\', '.']);
    !plain
        || names
            .iter()
            .any(|n| format!("{group}/{n}").contains(f.as_str()))
}

fn large_data(c: &mut Criterion) {
    let decoders: [(&str, Decoder); 6] = [
        ("crc32c", crc32c_only),
        ("proto-crc32c", common::proto_crc32c_only),
        ("proto-btrfs-commands", common::proto_commands),
        ("proto-btrfs-reader", common::proto_reader),
        ("proto-btrfs-decoder-256k", common::proto_decoder),
        ("btrfs-stream", btrfs_stream),
    ];
    let names = decoders.map(|(n, _)| n);
    if !selected("large-data", &names) {
        return;
    }
    let input = large_input();
    eprintln!("large-data: {}", input.describe());
    check(&input, &decoders[2..]);

    let mut g = c.benchmark_group("large-data");
    g.throughput(Throughput::Bytes(input.bytes.len() as u64))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    for (name, f) in decoders {
        g.bench_function(name, |b| b.iter(|| f(black_box(&input.bytes))));
    }
    g.finish();
}

fn small_files(c: &mut Criterion) {
    let decoders: [(&str, Decoder); 9] = [
        ("crc32c", crc32c_only),
        ("proto-crc32c", common::proto_crc32c_only),
        ("proto-btrfs-commands", common::proto_commands),
        ("proto-btrfs-typed", common::proto_typed),
        ("proto-btrfs-reader", common::proto_reader),
        ("proto-btrfs-reader-typed", common::proto_reader_typed),
        ("proto-btrfs-decoder-256k", common::proto_decoder),
        ("proto-btrfs-verify-1m", common::proto_verify),
        ("btrfs-stream", btrfs_stream),
    ];
    let names = decoders.map(|(n, _)| n);
    if !selected("small-files", &names) {
        return;
    }
    let input = small_input();
    eprintln!("small-files: {}", input.describe());
    check(&input, &decoders[2..]);

    let mut g = c.benchmark_group("small-files");
    g.throughput(Throughput::Elements(input.commands))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    for (name, f) in decoders {
        g.bench_function(name, |b| b.iter(|| f(black_box(&input.bytes))));
    }
    g.finish();
}

criterion_group!(benches, large_data, small_files);
criterion_main!(benches);
