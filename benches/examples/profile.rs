//! Runs one decoder of the `decode` bench in a loop, for a profiler:
//!
//! ```text
//! cargo build --profile bench -p proto-stream-benches --example profile
//! perf record -g target/release/examples/profile small proto-btrfs-typed 5
//! ```
//!
//! Arguments: `large|small`, a decoder name (see `benches/common/mod.rs`),
//! seconds to run (default 5). The input is loaded before the loop starts
//! and the loop's share of the profile is under `profile::run`.

use std::time::{Duration, Instant};

use proto_stream_benches::{large_input, small_input};

#[path = "../benches/common/mod.rs"]
mod common;

#[inline(never)]
fn run(f: common::Decoder, bytes: &[u8], secs: f64) -> (u64, Duration) {
    let start = Instant::now();
    let mut iters = 0;
    while start.elapsed().as_secs_f64() < secs {
        std::hint::black_box(f(std::hint::black_box(bytes)));
        iters += 1;
    }
    (iters, start.elapsed())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || -> ! {
        let names: Vec<_> = common::ALL.iter().map(|(n, _)| *n).collect();
        eprintln!("usage: profile large|small DECODER [SECONDS]; decoders: {names:?}");
        std::process::exit(2)
    };
    let (Some(which), Some(name)) = (args.first(), args.get(1)) else {
        usage()
    };
    let Some(f) = common::by_name(name) else {
        usage()
    };
    let secs: f64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let input = match which.as_str() {
        "large" => large_input(),
        "small" => small_input(),
        _ => usage(),
    };
    eprintln!("{which}: {}", input.describe());
    let (iters, t) = run(f, &input.bytes, secs);
    let per = t.as_secs_f64() / iters as f64;
    eprintln!(
        "{name}: {iters} iterations, {:.3} ms each, {:.2} GiB/s, {:.2} M commands/s",
        per * 1e3,
        input.bytes.len() as f64 / per / (1u64 << 30) as f64,
        input.commands as f64 / per / 1e6
    );
}
