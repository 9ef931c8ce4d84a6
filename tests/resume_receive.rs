//! End to end: every kernel stream of every set (`tests/support/fixtures.rs`:
//! the one shipped in `testdata/btrfs/small/`, and `../shared/fixtures/btrfs/`
//! when present) is re-emitted through bounded buffers, stopped after a chunk
//! as a crash would, resumed from that chunk's token (as text, through other
//! buffer sizes, by a fresh producer), and the concatenation is piped into the
//! REAL `btrfs receive` on a loop-mounted btrfs. The tree it builds must equal
//! the one built from the original stream: contents, modes, owners, xattrs,
//! hard links, symlinks, times (`tests/support/receive.rs`).
//!
//! Skipped (loudly) without root, btrfs-progs or loop devices; with
//! `PROTO_STREAM_REQUIRE_BTRFS=1` (CI) only missing loop device support may skip.

#[path = "support/receive.rs"]
mod receive;

use std::path::Path;

use proto_stream::btrfs::checkpoint::WRITE_SPLIT;
use proto_stream::btrfs::Btrfs;
use proto_stream::checkpoint::{Emitter, Format, Token};
use receive::{tree, Scratch, Tree};

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Emits `bytes` through `first`-byte buffers with a safe point every
/// `safe_every` units, stops after chunk `stop` (or the middle one), then
/// resumes from that chunk's token, read back from its text form, through
/// `then`-byte buffers. Returns the concatenation and how many pieces of
/// split writes it holds.
fn crash_and_resume(bytes: &[u8], safe_every: u64, first: usize, then: usize) -> (Vec<u8>, u64) {
    // At least four chunks, so that there is a middle to stop after, in the
    // small shipped streams too.
    let first = first.min(bytes.len() / 4);
    let mut e = Emitter::new(Btrfs.producer(bytes, safe_every).unwrap(), WRITE_SPLIT).unwrap();
    let mut buf = vec![0u8; first];
    let mut chunks = Vec::new();
    let mut tokens = Vec::new();
    let mut pieces = 0;
    loop {
        let f = e.fill(&mut buf).unwrap();
        chunks.push(buf[..f.written].to_vec());
        tokens.push(e.token().to_text().unwrap());
        pieces += f.pieces;
        if f.ended {
            break;
        }
    }
    assert!(chunks.len() >= 3, "too few chunks to stop in the middle");
    let stop = chunks.len() / 2;
    let mut out = chunks[..=stop].concat();
    drop(e);

    let token: Token = tokens[stop].parse().unwrap();
    assert!(!token.ended);
    let mut e = Emitter::resume(
        Btrfs.producer(bytes, safe_every).unwrap(),
        WRITE_SPLIT,
        &token,
    )
    .unwrap();
    let mut buf = vec![0u8; then];
    loop {
        let f = e.fill(&mut buf).unwrap();
        out.extend_from_slice(&buf[..f.written]);
        pieces += f.pieces;
        if f.ended {
            break;
        }
    }
    (out, pieces)
}

fn received(streams: &[&[u8]]) -> Scratch {
    let fs = Scratch::new().unwrap();
    for (i, s) in streams.iter().enumerate() {
        fs.receive(s).unwrap_or_else(|e| panic!("stream {i}: {e}"));
    }
    fs
}

#[track_caller]
fn assert_same(a: &Tree, b: &Tree, what: &str) {
    if let Some(d) = a.diff(b) {
        panic!("{what}: trees differ: {d}");
    }
    assert_eq!(a, b, "{what}");
    assert!(!a.entries.is_empty(), "{what}: empty tree");
}

/// Full sends, protocol 1 and 2, plain, `--no-data` and `--compressed-data`.
#[test]
fn resumed_full_sends_receive_to_the_same_tree() {
    for dir in receive::fixtures_for("resumed_full_sends_receive_to_the_same_tree") {
        resumed_full_sends_receive_to_the_same_tree_in(&dir);
    }
}

fn resumed_full_sends_receive_to_the_same_tree_in(dir: &Path) {
    eprintln!("set {}", dir.display());
    for (name, safe_every, first, then) in [
        ("full-v1.stream", 1, 5000, 70_001),
        ("full-v2.stream", 3, 40_000, 4099),
        ("compressed-v2.stream", 5, 150_000, 9000),
        ("nodata-v2.stream", 2, 300, 1000),
    ] {
        if !dir.join(name).is_file() {
            receive::skipped(&format!(
                "resumed_full_sends_receive_to_the_same_tree: no {name} in {}",
                dir.display()
            ));
            continue;
        }
        let original = read(dir, name);
        let (resumed, pieces) = crash_and_resume(&original, safe_every, first, then);
        if name.starts_with("nodata") {
            assert_eq!(
                resumed, original,
                "{name}: nothing to split, so byte-identical"
            );
        } else {
            assert!(
                pieces > 0,
                "{name}: no write was split, the test proves less"
            );
            assert_ne!(resumed, original);
        }
        let want = tree(&received(&[&original]).path().join("snap1")).unwrap();
        let got = tree(&received(&[&resumed]).path().join("snap1")).unwrap();
        assert_same(&want, &got, name);
        eprintln!(
            "{name}: {} bytes resumed ({pieces} write pieces), {} entries received identically",
            resumed.len(),
            got.entries.len()
        );
    }
}

/// An incremental send (rename, unlink, rmdir, clone, truncate, xattr changes)
/// resumed after a crash, received on top of its parent; and full + incremental
/// as one concatenated input, resumed across the boundary between the streams.
#[test]
fn resumed_incremental_sends_receive_to_the_same_tree() {
    for dir in receive::fixtures_for("resumed_incremental_sends_receive_to_the_same_tree") {
        resumed_incremental_sends_receive_to_the_same_tree_in(&dir);
    }
}

fn resumed_incremental_sends_receive_to_the_same_tree_in(dir: &Path) {
    eprintln!("set {}", dir.display());
    for v in ["v1", "v2"] {
        let full = read(dir, &format!("full-{v}.stream"));
        let incr = read(dir, &format!("incr-{v}.stream"));
        let (resumed, pieces) = crash_and_resume(&incr, 1, 3000, 20_000);
        assert!(pieces > 0);
        let want = received(&[&full, &incr]);
        let got = received(&[&full, &resumed]);
        for snap in ["snap1", "snap2"] {
            let (w, g) = (
                tree(&want.path().join(snap)).unwrap(),
                tree(&got.path().join(snap)).unwrap(),
            );
            assert_same(&w, &g, &format!("incr-{v} resumed: {snap}"));
        }

        let mut both = full.clone();
        both.extend_from_slice(&incr);
        let (resumed, _) = crash_and_resume(&both, 4, 64 * 1024, 7777);
        let got = received(&[&resumed]);
        for snap in ["snap1", "snap2"] {
            let (w, g) = (
                tree(&want.path().join(snap)).unwrap(),
                tree(&got.path().join(snap)).unwrap(),
            );
            assert_same(
                &w,
                &g,
                &format!("full+incr {v} concatenated, resumed: {snap}"),
            );
        }
    }
}

/// Negative control: the same pipeline with one data byte changed in the
/// resumed half (its CRC fixed, so `btrfs receive` accepts it) gives a tree
/// the comparison rejects, naming the file.
#[test]
fn a_changed_byte_after_resume_is_noticed() {
    for dir in receive::fixtures_for("a_changed_byte_after_resume_is_noticed") {
        a_changed_byte_after_resume_is_noticed_in(&dir);
    }
}

fn a_changed_byte_after_resume_is_noticed_in(dir: &Path) {
    eprintln!("set {}", dir.display());
    let original = read(dir, "full-v2.stream");
    let (mut resumed, _) = crash_and_resume(&original, 1, 40_000, 4099);
    // The last write piece before END: change its last data byte, re-CRC it.
    let mut p = Btrfs.units(&resumed[..]);
    let mut last = None;
    use proto_stream::checkpoint::{Split, UnitKind, Units};
    while let Some(u) = p.current().unwrap() {
        if let UnitKind::Command(pr) = u.kind {
            if let Some(l) = WRITE_SPLIT.layout(&pr, u.bytes) {
                last = Some((u.offset as usize, u.bytes.len(), l));
            }
        }
        p.advance().unwrap();
    }
    let (off, len, _) = last.unwrap();
    let cmd = &mut resumed[off..off + len];
    cmd[len - 1] ^= 0x55;
    cmd[6..10].fill(0);
    let crc = proto_stream::tlv::CrcVariant::BtrfsRaw.checksum(cmd);
    cmd[6..10].copy_from_slice(&crc.to_le_bytes());
    let want = tree(&received(&[&original]).path().join("snap1")).unwrap();
    let got = tree(&received(&[&resumed]).path().join("snap1")).unwrap();
    let d = want.diff(&got).expect("the changed byte went unnoticed");
    assert!(d.contains(": content"), "{d}");
}
