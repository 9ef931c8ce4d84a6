//! Every input saved in `fuzz/regressions/<target>/` (crashes the fuzzer
//! found, once fixed) runs through its target's properties as a stable
//! `#[test]`: `cargo test` here (on stable, as `scripts/test` runs it)
//! replays them without nightly or libFuzzer, as
//! `run-smoke.sh` does under the fuzzer. Each target is included as a
//! module (its body is `run_bytes`, see `fuzz_targets/common/harness.rs`).
//!
//! A target with no saved input passes with nothing to replay and says so;
//! the list below must name every `[[bin]]` of `Cargo.toml`
//! (`every_target_is_replayed` checks it).

#![allow(dead_code)]

use std::path::Path;

#[path = "../fuzz_targets/apply_stream.rs"]
mod apply_stream;
#[path = "../fuzz_targets/btrfs_dump.rs"]
mod btrfs_dump;
#[path = "../fuzz_targets/checkpoint_compare.rs"]
mod checkpoint_compare;
#[path = "../fuzz_targets/checkpoint_format.rs"]
mod checkpoint_format;
#[path = "../fuzz_targets/checkpoint_resume.rs"]
mod checkpoint_resume;
#[path = "../fuzz_targets/checkpoint_token.rs"]
mod checkpoint_token;
#[path = "../fuzz_targets/crc32c_kernels.rs"]
mod crc32c_kernels;
#[path = "../fuzz_targets/header_contexts.rs"]
mod header_contexts;
#[path = "../fuzz_targets/header_fixed.rs"]
mod header_fixed;
#[path = "../fuzz_targets/header_negotiate.rs"]
mod header_negotiate;
#[path = "../fuzz_targets/header_version.rs"]
mod header_version;
#[path = "../fuzz_targets/native_reader.rs"]
mod native_reader;
#[path = "../fuzz_targets/session_handshake.rs"]
mod session_handshake;
#[path = "../fuzz_targets/session_pair.rs"]
mod session_pair;
#[path = "../fuzz_targets/session_replay.rs"]
mod session_replay;
#[path = "../fuzz_targets/tlv_decode.rs"]
mod tlv_decode;
#[path = "../fuzz_targets/tlv_roundtrip.rs"]
mod tlv_roundtrip;

const TARGETS: &[&str] = &[
    "crc32c_kernels",
    "tlv_decode",
    "tlv_roundtrip",
    "btrfs_dump",
    "header_fixed",
    "header_version",
    "header_negotiate",
    "header_contexts",
    "native_reader",
    "checkpoint_token",
    "checkpoint_resume",
    "checkpoint_compare",
    "checkpoint_format",
    "session_replay",
    "session_handshake",
    "session_pair",
    "apply_stream",
];

/// Runs `run` on every file in `regressions/<target>/`.
fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("regressions")
        .join(target);
    let mut files: Vec<_> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd.map(|e| e.expect("a directory entry").path()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("{}: {e}", dir.display()),
    };
    files.sort();
    for f in &files {
        let data = std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        run(&data);
    }
    eprintln!("{target}: {} regression input(s) replayed", files.len());
}

#[test]
fn crc32c_kernels_regressions() {
    replay("crc32c_kernels", crc32c_kernels::run_bytes);
}
#[test]
fn tlv_decode_regressions() {
    replay("tlv_decode", tlv_decode::run_bytes);
}
#[test]
fn tlv_roundtrip_regressions() {
    replay("tlv_roundtrip", tlv_roundtrip::run_bytes);
}
#[test]
fn btrfs_dump_regressions() {
    replay("btrfs_dump", btrfs_dump::run_bytes);
}
#[test]
fn header_fixed_regressions() {
    replay("header_fixed", header_fixed::run_bytes);
}
#[test]
fn header_version_regressions() {
    replay("header_version", header_version::run_bytes);
}
#[test]
fn header_negotiate_regressions() {
    replay("header_negotiate", header_negotiate::run_bytes);
}
#[test]
fn header_contexts_regressions() {
    replay("header_contexts", header_contexts::run_bytes);
}
#[test]
fn native_reader_regressions() {
    replay("native_reader", native_reader::run_bytes);
}
#[test]
fn checkpoint_token_regressions() {
    replay("checkpoint_token", checkpoint_token::run_bytes);
}
#[test]
fn checkpoint_resume_regressions() {
    replay("checkpoint_resume", checkpoint_resume::run_bytes);
}
#[test]
fn checkpoint_compare_regressions() {
    replay("checkpoint_compare", checkpoint_compare::run_bytes);
}
#[test]
fn checkpoint_format_regressions() {
    replay("checkpoint_format", checkpoint_format::run_bytes);
}
#[test]
fn session_replay_regressions() {
    replay("session_replay", session_replay::run_bytes);
}
#[test]
fn session_handshake_regressions() {
    replay("session_handshake", session_handshake::run_bytes);
}
#[test]
fn session_pair_regressions() {
    replay("session_pair", session_pair::run_bytes);
}
#[test]
fn apply_stream_regressions() {
    replay("apply_stream", apply_stream::run_bytes);
}

/// The list above is the fuzz targets of `Cargo.toml`, and every directory
/// of saved inputs belongs to one of them.
#[test]
fn every_target_is_replayed() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let mut bins: Vec<&str> = manifest
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .filter_map(|l| l.strip_suffix('"'))
        .filter(|n| *n != "proto-stream-fuzz")
        .collect();
    bins.sort_unstable();
    let mut listed = TARGETS.to_vec();
    listed.sort_unstable();
    assert_eq!(
        bins, listed,
        "fuzz/tests/regressions.rs must list every target"
    );
    for e in std::fs::read_dir(root.join("regressions")).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        assert!(
            TARGETS.contains(&name.as_str()),
            "regressions/{name} names no target"
        );
    }
}
