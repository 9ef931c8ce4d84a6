//! Sanity checks of `tests/support/receive.rs` against the real kernel streams of
//! every set (`tests/support/fixtures.rs`: the one shipped in `testdata/btrfs/small/`,
//! and `../shared/fixtures/btrfs/` when present): the real `btrfs receive` applies
//! them to loop-mounted btrfs filesystems, and the listing of what it built is
//! deterministic, agrees with the `snap*.tree` listings made at the source, and does
//! notice changes.
//!
//! Skipped (loudly) without root, btrfs-progs or loop devices; with
//! `PROTO_STREAM_REQUIRE_BTRFS=1` only missing loop device support may skip.

#[path = "support/receive.rs"]
mod receive;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use receive::{tree, Scratch, Tree};

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn text(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A fresh filesystem with `streams` received one after another.
fn received(dir: &Path, streams: &[&str]) -> Scratch {
    let fs = Scratch::new().unwrap();
    for s in streams {
        fs.receive(&read(dir, s))
            .unwrap_or_else(|e| panic!("receiving {s}: {e}"));
    }
    fs
}

fn listing(fs: &Scratch, subvol: &str) -> Tree {
    tree(&fs.path().join(subvol)).unwrap()
}

#[track_caller]
fn assert_same(a: &Tree, b: &Tree, what: &str) {
    if let Some(d) = a.diff(b) {
        panic!("{what}: trees differ: {d}");
    }
    assert_eq!(a, b, "{what}: diff found nothing but the trees differ");
}

#[test]
fn listing_is_deterministic_and_matches_the_source() {
    for dir in receive::fixtures_for("listing_is_deterministic_and_matches_the_source") {
        listing_is_deterministic_and_matches_the_source_in(&dir);
    }
}

fn listing_is_deterministic_and_matches_the_source_in(dir: &Path) {
    eprintln!("set {}", dir.display());
    let (a, b) = (
        received(dir, &["full-v2.stream"]),
        received(dir, &["full-v2.stream"]),
    );
    let (ta, tb) = (listing(&a, "snap1"), listing(&b, "snap1"));
    assert_same(&ta, &tb, "full-v2 on two filesystems");
    ta.check_find_listing(&text(dir, "snap1.tree")).unwrap();

    // Spot checks that the listing carries what the fixture script made.
    let hello = ta.get("docs/hello.txt").unwrap();
    let hard = ta.get("docs/nested/hardlink").unwrap();
    assert_eq!(hello.link_group, Some("docs/hello.txt".into()));
    assert_eq!(hello.link_group, hard.link_group);
    assert_eq!(hello.nlink, 2);
    assert_eq!(ta.get("docs/empty").unwrap().link_group, None);
    assert_eq!(
        hello
            .xattrs
            .get(&receive::Bytes(b"user.color".to_vec()))
            .map(|v| v.0.as_slice()),
        Some(&b"blue"[..])
    );
    let nested = ta.get("docs/nested").unwrap();
    assert_eq!((nested.uid, nested.gid), (1000, 1000));
    assert_eq!(
        ta.get("docs/link-to-hello").unwrap().target,
        Some(receive::Bytes(b"hello.txt".to_vec()))
    );
}

#[test]
fn protocol_versions_and_incrementals_agree() {
    for dir in receive::fixtures_for("protocol_versions_and_incrementals_agree") {
        protocol_versions_and_incrementals_agree_in(&dir);
    }
}

fn protocol_versions_and_incrementals_agree_in(dir: &Path) {
    eprintln!("set {}", dir.display());
    let v1 = received(dir, &["full-v1.stream", "incr-v1.stream"]);
    // Protocol 2 as one concatenated stream on stdin: receive reads to end of input.
    let v2 = Scratch::new().unwrap();
    let mut both = read(dir, "full-v2.stream");
    both.extend(read(dir, "incr-v2.stream"));
    v2.receive(&both).unwrap();

    let snap1 = listing(&v1, "snap1");
    assert_same(
        &snap1,
        &listing(&v2, "snap1"),
        "snap1 from full-v1 vs full-v2",
    );
    snap1.check_find_listing(&text(dir, "snap1.tree")).unwrap();

    let snap2 = listing(&v1, "snap2");
    assert_same(
        &snap2,
        &listing(&v2, "snap2"),
        "snap2 from full+incr v1 vs v2",
    );
    snap2.check_find_listing(&text(dir, "snap2.tree")).unwrap();
    assert!(
        snap1.diff(&snap2).is_some(),
        "the incremental changed nothing"
    );
}

/// Negative control: the comparison does fail, and names the path and the field.
#[test]
fn diff_notices_changes() {
    for dir in receive::fixtures_for("diff_notices_changes") {
        diff_notices_changes_in(&dir);
    }
}

fn diff_notices_changes_in(dir: &Path) {
    eprintln!("set {}", dir.display());
    let (a, b) = (
        received(dir, &["full-v2.stream"]),
        received(dir, &["full-v2.stream"]),
    );
    let good = listing(&a, "snap1");
    assert_same(&good, &listing(&b, "snap1"), "before any change");
    b.set_writable("snap1").unwrap();
    let root = b.path().join("snap1");
    let r = |p: &str| root.join(p);

    // Content: one byte in the middle of a file, size unchanged.
    let mut bytes = std::fs::read(r("docs/blob.bin")).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(r("docs/blob.bin"), &bytes).unwrap();
    // Content: one byte inside the hole of the sparse file (size unchanged).
    let f = std::fs::File::options()
        .write(true)
        .open(r("docs/sparse"))
        .unwrap();
    std::os::unix::fs::FileExt::write_at(&f, b"x", 1 << 20).unwrap();
    drop(f);
    // Mode.
    std::fs::set_permissions(r("docs/text.log"), PermissionsExt::from_mode(0o640)).unwrap();
    // Owner.
    std::os::unix::fs::lchown(r("docs/nested"), Some(1001), None).unwrap();
    // Xattrs: a changed value, and a new one on a fifo.
    xattr::set(r("docs/hello.txt"), "user.color", b"red").unwrap();
    xattr::set(r("docs/fifo"), "trusted.new", b"").unwrap();
    // Symlink target (same length).
    std::fs::remove_file(r("docs/link-to-hello")).unwrap();
    std::os::unix::fs::symlink("hello.txz", r("docs/link-to-hello")).unwrap();

    let changed = listing(&b, "snap1");
    assert_ne!(good, changed);
    let diffs = good.diffs(&changed);
    eprintln!("differences found:\n  {}", diffs.join("\n  "));
    assert_eq!(good.diff(&changed).as_ref(), diffs.first());
    for (path, what) in [
        ("docs/blob.bin", "content"),
        ("docs/sparse", "content"),
        ("docs/text.log", "mode 100644 vs 100640"),
        ("docs/nested", "uid 1000 vs 1001"),
        ("docs/hello.txt", "xattr \"user.color\" \"blue\" vs \"red\""),
        // The same inode, so the same xattr change.
        ("docs/nested/hardlink", "xattr \"user.color\""),
        ("docs/fifo", "xattr \"trusted.new\" only on the right"),
        (
            "docs/link-to-hello",
            "target \"hello.txt\" vs \"hello.txz\"",
        ),
    ] {
        let line = format!("{path}: {what}");
        assert!(
            diffs.iter().any(|d| d.starts_with(&line)),
            "{line:?} not among the differences"
        );
    }
    // Nothing reported that was not touched.
    for d in &diffs {
        assert!(
            !d.starts_with("docs/empty") && !d.contains("text.log: content"),
            "spurious {d:?}"
        );
    }

    // A removed xattr, and a broken hard link (same bytes, separate inode).
    xattr::set(r("docs/hello.txt"), "user.color", b"blue").unwrap();
    xattr::remove(r("docs/fifo"), "trusted.new").unwrap();
    let data = std::fs::read(r("docs/nested/hardlink")).unwrap();
    std::fs::remove_file(r("docs/nested/hardlink")).unwrap();
    std::fs::write(r("docs/nested/hardlink"), data).unwrap();
    let diffs = good.diffs(&listing(&b, "snap1"));
    eprintln!("then:\n  {}", diffs.join("\n  "));
    for line in [
        "docs/hello.txt: nlink 2 vs 1",
        "docs/nested/hardlink: nlink 2 vs 1",
        "docs/nested/hardlink: xattr \"user.color\" only on the left",
        "docs/hello.txt: link_group \"docs/hello.txt\" vs none",
        "docs/nested/hardlink: link_group \"docs/hello.txt\" vs none",
    ] {
        assert!(
            diffs.iter().any(|d| d.starts_with(line)),
            "{line:?} not among the differences"
        );
    }
    assert!(
        !diffs.iter().any(|d| d.starts_with("docs/fifo")),
        "{diffs:?}"
    );
}

/// `--no-data` and `--compressed-data` streams through the real tool.
#[test]
fn nodata_and_compressed_streams() {
    for dir in receive::fixtures_for("nodata_and_compressed_streams") {
        nodata_and_compressed_streams_in(&dir);
    }
}

fn nodata_and_compressed_streams_in(dir: &Path) {
    eprintln!("set {}", dir.display());
    let full = listing(&received(dir, &["full-v2.stream"]), "snap1");

    // `btrfs receive` ignores update_extent, the only thing a no-data stream says
    // about file content: regular files come out empty, except where the stream
    // also truncates (docs/sparse: a hole of its full size).  All else is as sent.
    let nodata = listing(&received(dir, &["nodata-v2.stream"]), "snap1");
    let empty = receive::Sha256Digest([
        0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9,
        0x24, 0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52,
        0xb8, 0x55,
    ]);
    assert_eq!(full.entries.len(), nodata.entries.len());
    for (x, y) in full.entries.iter().zip(&nodata.entries) {
        let p = x.path.to_str().unwrap();
        assert_eq!(
            (&x.path, x.kind, x.mode, x.uid, x.gid, x.nlink, &x.target),
            (&y.path, y.kind, y.mode, y.uid, y.gid, y.nlink, &y.target),
        );
        assert_eq!(
            (&x.xattrs, &x.link_group),
            (&y.xattrs, &y.link_group),
            "{p}"
        );
        assert_eq!((x.mtime, x.rdev), (y.mtime, y.rdev), "{p}");
        match (x.kind, p) {
            (receive::Kind::File, "docs/sparse") => {
                assert_eq!(y.size, 5 << 20);
                assert_ne!(x.content, y.content, "the tail of docs/sparse arrived");
            }
            (receive::Kind::File, _) => {
                assert_eq!((y.size, y.content), (0, Some(empty)), "{p}")
            }
            _ => assert_eq!(x.size, y.size, "{p}"),
        }
    }

    // compressed-v2 (encoded_write commands).  In the shipped set it is the same
    // snapshot as full-v2 (the same subvolume UUID in both dumps' first line): the
    // same tree, exactly.  The shared set's comes from another run of the fixture
    // script (another source subvolume): the same tree but its own times and its
    // own random docs/blob.bin.  Everything else, the content of the compressed
    // text.log included, must match.
    let Some(comp) = dir
        .join("compressed-v2.stream")
        .is_file()
        .then(|| listing(&received(dir, &["compressed-v2.stream"]), "snap1"))
    else {
        receive::skipped(&format!(
            "nodata_and_compressed_streams: no compressed-v2.stream in {} (made with COMPRESS=zstd)",
            dir.display()
        ));
        return;
    };
    comp.check_find_listing(&text(dir, "snap1.tree")).unwrap();
    let first_line = |name: &str| text(dir, name).lines().next().unwrap().to_string();
    if first_line("full-v2.dump") == first_line("compressed-v2.dump") {
        assert_same(
            &full,
            &comp,
            "compressed-v2 vs full-v2 of the same snapshot",
        );
    }
    for d in full.diffs(&comp) {
        assert!(
            d.contains(": mtime ") || d.starts_with("docs/blob.bin: content "),
            "compressed-v2 vs full-v2: {d}"
        );
    }
    let log = |t: &Tree| t.get("docs/text.log").unwrap().content;
    assert_eq!(log(&full), log(&comp));
}
