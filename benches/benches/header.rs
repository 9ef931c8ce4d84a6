//! Stream headers: parsing and negotiation in `proto-header`, side by side
//! with the least any reader must do.
//!
//! - `fixed`: the 16-byte native header through the zerocopy struct and
//!   through the generic `FixedHeaderFormat`, against a hand-written
//!   `from_be_bytes` parse (the floor: read three fields, compare the magic).
//!   Also the 17-byte btrfs header through `proto_header::BTRFS`.
//! - `negotiate`: one-way (a reader's supported set against a stream's
//!   range) and two-way (two ranges), against a brute-force scan.
//! - `version-header`: the whole front of a native stream (fixed header,
//!   negotiation, the v1 version header with 8 contexts) read and written.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use proto_header::{
    negotiate, negotiate_two_way, read_header, write_header, Context, Endian, FixedHeader,
    FixedHeaderFormat, ReadOptions, V1Header, VersionRange, BTRFS, KIT_VERSIONS,
};

const MAGIC: &[u8; 8] = b"PROTOSTR";
const FORMAT: FixedHeaderFormat = FixedHeaderFormat::native(MAGIC);

/// The floor: what any parser of this header must do.
fn by_hand(b: &[u8]) -> Option<(u32, u32)> {
    let h: &[u8; 16] = b.get(..16)?.try_into().ok()?;
    if &h[..8] != MAGIC {
        return None;
    }
    let v = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
    let c = u32::from_be_bytes([h[12], h[13], h[14], h[15]]);
    (c <= v).then_some((v, c))
}

fn fixed(c: &mut Criterion) {
    let mut native = Vec::new();
    FORMAT.encode(5, 2, &mut native).unwrap();
    let btrfs = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/btrfs/incr-v2.stream"
    ))
    .unwrap();
    let mut g = c.benchmark_group("fixed");
    g.throughput(Throughput::Elements(1));
    g.bench_function("by-hand-from_be_bytes", |b| {
        b.iter(|| by_hand(black_box(&native)))
    });
    g.bench_function("FixedHeader::parse", |b| {
        b.iter(|| {
            FixedHeader::parse(black_box(&native), MAGIC)
                .map(|(h, _)| h.range())
                .ok()
        })
    });
    g.bench_function("FixedHeaderFormat::parse", |b| {
        b.iter(|| FORMAT.parse(black_box(&native)).map(|p| p.range()).ok())
    });
    g.bench_function("BTRFS::parse", |b| {
        b.iter(|| BTRFS.parse(black_box(&btrfs)).map(|p| p.version).ok())
    });
    g.bench_function("proto_btrfs::parse_header", |b| {
        b.iter(|| proto_btrfs::parse_header(black_box(&btrfs)).ok())
    });
    g.finish();
}

fn brute_force(supported: &[u32], r: VersionRange) -> Option<u32> {
    (r.min..=r.max.min(1 << 16))
        .rev()
        .find(|v| supported.contains(v))
}

fn negotiation(c: &mut Criterion) {
    let supported: Vec<u32> = (1..=40).filter(|v| v % 3 != 0).collect();
    let offered = VersionRange::new(7, 1000).unwrap();
    assert_eq!(
        negotiate(&supported, offered).ok(),
        brute_force(&supported, offered)
    );
    let mut g = c.benchmark_group("negotiate");
    g.throughput(Throughput::Elements(1));
    g.bench_function("brute-force-scan", |b| {
        b.iter(|| brute_force(black_box(&supported), black_box(offered)))
    });
    g.bench_function("one-way", |b| {
        b.iter(|| negotiate(black_box(&supported), black_box(offered)).ok())
    });
    let ours = VersionRange::new(3, 9).unwrap();
    g.bench_function("two-way", |b| {
        b.iter(|| negotiate_two_way(black_box(ours), black_box(offered)).ok())
    });
    g.finish();
}

fn version_header(c: &mut Criterion) {
    let body = V1Header {
        byte_order: Endian::Little,
        features_supported: 0b1011,
        features_required: 0b0001,
        stream_id: [0x5a; 16],
        contexts: (1..=8)
            .map(|id| Context {
                id,
                name: format!("context:{id}"),
            })
            .collect(),
    };
    let entry = KIT_VERSIONS.entry(1).unwrap();
    let mut stream = Vec::new();
    write_header(&FORMAT, entry, 1, &body, &mut stream).unwrap();
    let opts = ReadOptions {
        known_features: 0b1111,
    };
    let mut g = c.benchmark_group("version-header");
    g.throughput(Throughput::Bytes(stream.len() as u64));
    g.bench_function("read_header", |b| {
        b.iter(|| {
            read_header(&FORMAT, &KIT_VERSIONS, black_box(&stream), &opts)
                .map(|h| h.len)
                .ok()
        })
    });
    let mut out = Vec::with_capacity(stream.len());
    g.bench_function("write_header", |b| {
        b.iter(|| {
            out.clear();
            write_header(&FORMAT, entry, 1, black_box(&body), &mut out).unwrap();
            out.len()
        })
    });
    g.finish();
}

criterion_group!(benches, fixed, negotiation, version_header);
criterion_main!(benches);
