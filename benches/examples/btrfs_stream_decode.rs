//! The whole-process peer of `proto-stream verify`: a bare `btrfs-stream`
//! decode of a file (`StreamReader` over a 256 KiB `BufReader`, every
//! command read, checked and built), printing the command count.
//!
//! ```text
//! cargo build --profile bench -p proto-stream-benches --example btrfs_stream_decode
//! hyperfine "target/release/examples/btrfs_stream_decode FILE" "proto-stream verify FILE"
//! ```

use std::io::BufReader;

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: btrfs_stream_decode FILE");
        std::process::exit(2)
    };
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{path}: {e}");
            std::process::exit(1)
        }
    };
    let mut rd = match btrfs_stream::StreamReader::new(BufReader::with_capacity(256 * 1024, file)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{path}: {e}");
            std::process::exit(1)
        }
    };
    let mut n = 0u64;
    loop {
        match rd.next_command() {
            Ok(Some(cmd)) => {
                std::hint::black_box(&cmd);
                n += 1;
            }
            Ok(None) => break,
            Err(e) => {
                eprintln!("{path}: command {n}: {e}");
                std::process::exit(1)
            }
        }
    }
    println!("{n} commands");
}
