//! `proto-stream chunk`, `resume` and `compare`, run as a user would: a
//! chunked run stopped after M chunks, resumed from the token file on disk
//! into the same directory, `cat D/chunk-*` compared with the original, and
//! (where root, btrfs-progs and loop devices are there) piped into the real
//! `btrfs receive`.

#[path = "../../tests/support/receive.rs"]
mod receive;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::TempDir;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_proto-stream"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/btrfs")
        .join(name)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[track_caller]
fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The chunk files of `dir` in name order, concatenated; checks each is at
/// most `max` bytes and has its token file.
fn joined(dir: &Path, max: usize) -> Vec<u8> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("chunk-"))
        .collect();
    names.sort();
    let mut out = Vec::new();
    for n in &names {
        let b = std::fs::read(dir.join(n)).unwrap();
        assert!(!b.is_empty() && b.len() <= max, "{n}: {} bytes", b.len());
        let t = n.replace("chunk-", "token-").replace(".bin", ".txt");
        let text = std::fs::read_to_string(dir.join(&t)).unwrap();
        assert!(text.starts_with("pstoken:") && text.ends_with('\n'), "{t}");
        out.extend(b);
    }
    out
}

/// chunk --stop-after M, then resume from D/token-00000M.txt into D, then
/// `cat D/chunk-*`: returns it.
fn chunk_stop_resume(stream: &Path, size: usize, stop: u64, then: usize, k: u64) -> Vec<u8> {
    let d = TempDir::new("csr");
    let dir = d.0.join("out");
    let (size_s, then_s, stop_s, k_s) = (
        size.to_string(),
        then.to_string(),
        stop.to_string(),
        k.to_string(),
    );
    let out = ok(&run(&[
        "chunk",
        s(stream),
        "--buffer-size",
        &size_s,
        "--out-dir",
        s(&dir),
        "--stop-after",
        &stop_s,
        "--safe-every",
        &k_s,
    ]));
    assert!(out.starts_with("stopped:"), "{out}");
    assert!(out.contains("resume with: proto-stream resume"), "{out}");
    let token = dir.join(format!("token-{stop:06}.txt"));
    let out = ok(&run(&[
        "resume",
        s(stream),
        "--token",
        s(&token),
        "--buffer-size",
        &then_s,
        "--out-dir",
        s(&dir),
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ended"], true, "{v}");
    assert_eq!(v["first_chunk"], stop + 1, "{v}");
    joined(&dir, size.max(then))
}

#[test]
fn chunk_stop_resume_compare_on_the_shipped_streams() {
    for name in ["incr-v1.stream", "incr-v2.stream", "nodata-v2.stream"] {
        let stream = testdata(name);
        let original = std::fs::read(&stream).unwrap();
        let out = chunk_stop_resume(&stream, 1000, 3, 7000, 2);
        let d = TempDir::new("cmp");
        let joined_path = d.0.join("joined.stream");
        std::fs::write(&joined_path, &out).unwrap();
        let cmp = run(&["compare", s(&stream), s(&joined_path)]);
        assert_eq!(cmp.status.code(), Some(0), "{name}: {}", ok(&cmp));
        let text = String::from_utf8(cmp.stdout).unwrap();
        assert!(text.starts_with("equal: the same commands"), "{text}");
        ok(&run(&["verify", s(&joined_path)]));
        if name.starts_with("nodata") {
            assert_eq!(out, original, "{name}: nothing to split");
        } else {
            assert_ne!(out, original, "{name}: writes were split");
        }
    }
}

/// The writer thread writes chunks while the emitter fills the next one: a
/// chunk that cannot be written stops the run with an error naming it,
/// what came before is complete (chunk and token), and nothing after it
/// is written.
#[test]
fn a_chunk_that_cannot_be_written_stops_the_run_and_names_it() {
    let stream = testdata("incr-v2.stream");
    let d = TempDir::new("chunk-fail");
    let dir = d.0.join("out");
    std::fs::create_dir(&dir).unwrap();
    // The temporary name of chunk 3 is a directory: writing it fails, even
    // as root.
    std::fs::create_dir(dir.join(".chunk-000003.bin.tmp")).unwrap();
    let out = run(&[
        "chunk",
        "--buffer-size",
        "1000",
        "--out-dir",
        s(&dir),
        s(&stream),
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("chunk-000003.bin"), "{err}");
    for i in 1..=2 {
        assert!(
            dir.join(format!("chunk-00000{i}.bin")).is_file(),
            "chunk {i}"
        );
        assert!(
            dir.join(format!("token-00000{i}.txt")).is_file(),
            "token {i}"
        );
    }
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert_eq!(names.len(), 4, "only chunks and tokens 1 and 2: {names:?}");
}

#[test]
fn compare_reports_the_first_divergence() {
    let a = testdata("incr-v2.stream");
    let d = TempDir::new("div");
    // Re-chunk, then change one data byte of a piece and fix its CRC.
    let dir = d.0.join("c");
    ok(&run(&[
        "chunk",
        s(&a),
        "--buffer-size",
        "3000",
        "--out-dir",
        s(&dir),
    ]));
    let mut bytes = joined(&dir, 3000);
    // The last command before END is a piece of the big write (incr-v2's
    // new.bin); find it by walking the frames.
    let mut pos = 17;
    let mut last_write = None;
    while pos + 10 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        if u16::from_le_bytes([bytes[pos + 4], bytes[pos + 5]]) == 15 {
            last_write = Some((pos, len));
        }
        pos += 10 + len;
    }
    let (at, len) = last_write.unwrap();
    let end = at + 10 + len;
    bytes[end - 1] ^= 0xff;
    bytes[at + 6..at + 10].fill(0);
    let crc = !crc32c_append(!0, &bytes[at..end]);
    bytes[at + 6..at + 10].copy_from_slice(&crc.to_le_bytes());
    let b = d.0.join("b.stream");
    std::fs::write(&b, &bytes).unwrap();
    ok(&run(&["verify", s(&b)]));

    let out = run(&["compare", s(&a), s(&b)]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("differ: data bytes differ"), "{text}");
    assert!(
        text.contains(&format!("first differing byte {}", end - 1)),
        "{text}"
    );
    assert!(text.contains("path \"docs/nested/new.bin\""), "{text}");

    let out = run(&["compare", s(&a), s(&b), "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["equal"], false);
    assert_eq!(v["b"]["byte_offset"], (end - 1) as u64, "{v}");
    assert_eq!(v["path"], "docs/nested/new.bin", "{v}");
    // The new.bin file is 70000 bytes written from offset 0: the last byte.
    assert_eq!(v["file_offset"], 69_999, "{v}");

    // Errors are exit 2 with one line naming the stream, command and offset.
    let mut broken = std::fs::read(&a).unwrap();
    broken[200] ^= 1;
    let c = d.0.join("broken.stream");
    std::fs::write(&c, &broken).unwrap();
    let out = run(&["compare", s(&a), s(&c)]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with("proto-stream: error: stream B: CRC mismatch"),
        "{err}"
    );
    assert!(err.contains("byte offset"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// The raw CRC32C of btrfs, without a dependency: bitwise.
fn crc32c_append(crc: u32, bytes: &[u8]) -> u32 {
    let mut c = !crc;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
        }
    }
    !c
}

#[test]
fn bad_tokens_and_buffers_are_refused_with_one_line() {
    let a = testdata("incr-v2.stream");
    let other = testdata("incr-v1.stream");
    let d = TempDir::new("bad");
    let dir = d.0.join("c");
    ok(&run(&[
        "chunk",
        s(&a),
        "--buffer-size",
        "4096",
        "--out-dir",
        s(&dir),
        "--stop-after",
        "2",
        "--safe-every",
        "3",
    ]));
    let token = dir.join("token-000002.txt");
    let text = std::fs::read_to_string(&token).unwrap();
    let e = d.0.join("e");
    let refused = |args: &[&str], want: &str| {
        let out = run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            !e.exists() || std::fs::read_dir(&e).unwrap().next().is_none(),
            "{args:?} wrote chunks"
        );
    };
    // Another stream's token.
    refused(
        &[
            "resume",
            s(&other),
            "--token",
            s(&token),
            "--buffer-size",
            "4096",
            "--out-dir",
            s(&e),
        ],
        "not for this stream",
    );
    // A damaged token (one character changed), as text on the command line.
    let mut chars: Vec<char> = text.trim().chars().collect();
    let i = chars.len() / 2;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    let damaged: String = chars.into_iter().collect();
    refused(
        &[
            "resume",
            s(&a),
            "--token",
            &damaged,
            "--buffer-size",
            "4096",
            "--out-dir",
            s(&e),
        ],
        "corrupt checkpoint token",
    );
    // A truncated one.
    refused(
        &[
            "resume",
            s(&a),
            "--token",
            &text.trim()[..40],
            "--buffer-size",
            "4096",
            "--out-dir",
            s(&e),
        ],
        "token",
    );
    // A buffer too small for a command that may not be split: an error
    // naming the command, after the chunks that did fit (here the 17-byte
    // stream header). Their last token resumes with a larger buffer.
    let small = d.0.join("small");
    let out = run(&[
        "chunk",
        s(&a),
        "--buffer-size",
        "20",
        "--out-dir",
        s(&small),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("unit 1 (command 0 at input byte offset 17) needs a buffer of at least"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(small.join("chunk-000001.bin")).unwrap().len(),
        17
    );
    let t1 = small.join("token-000001.txt");
    ok(&run(&[
        "resume",
        s(&a),
        "--token",
        s(&t1),
        "--buffer-size",
        "4096",
        "--out-dir",
        s(&small),
    ]));
    let whole = d.0.join("whole.stream");
    std::fs::write(&whole, joined(&small, 4096)).unwrap();
    assert_eq!(run(&["compare", s(&a), s(&whole)]).status.code(), Some(0));
    // Resuming into a directory whose later chunks would mix in.
    ok(&run(&[
        "chunk",
        s(&a),
        "--buffer-size",
        "4096",
        "--out-dir",
        s(&e),
    ]));
    let out = run(&[
        "resume",
        s(&a),
        "--token",
        s(&token),
        "--buffer-size",
        "4096",
        "--out-dir",
        s(&e),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already holds chunk-000003.bin"));
}

/// The binary's output through the real `btrfs receive`: the full and the
/// incremental v2 streams of every set (the shipped one, and the shared one
/// when present), chunked, stopped, resumed, concatenated and received, give
/// the same trees as the originals.
#[test]
fn resumed_chunks_through_the_real_btrfs_receive() {
    for dir in receive::fixtures_for("resumed_chunks_through_the_real_btrfs_receive") {
        eprintln!("set {}", dir.display());
        let (full, incr) = (dir.join("full-v2.stream"), dir.join("incr-v2.stream"));
        let originals = [std::fs::read(&full).unwrap(), std::fs::read(&incr).unwrap()];
        // Stopped half-way (17 chunks of 64 KiB into the shared full-v2).
        let stop = |bytes: &[u8], size: usize| (bytes.len() / size / 2).max(1) as u64;
        let full_out = chunk_stop_resume(&full, 65536, stop(&originals[0], 65536), 4096, 1);
        let incr_out = chunk_stop_resume(&incr, 2048, stop(&originals[1], 2048), 65536, 4);
        let want = receive::Scratch::new().unwrap();
        let got = receive::Scratch::new().unwrap();
        for (o, r) in originals.iter().zip([&full_out, &incr_out]) {
            assert_ne!(o, r);
            want.receive(o).unwrap();
            got.receive(r).unwrap();
        }
        for snap in ["snap1", "snap2"] {
            let w = receive::tree(&want.path().join(snap)).unwrap();
            let g = receive::tree(&got.path().join(snap)).unwrap();
            if let Some(d) = w.diff(&g) {
                panic!("{}: {snap}: {d}", dir.display());
            }
            assert_eq!(w, g);
        }
    }
}

/// A token carries every option its run was made with: `resume` takes the
/// token, the file and a buffer size, nothing else, and the chunks of both
/// runs compare equal to the original.
#[test]
fn resume_needs_only_the_token() {
    let a = testdata("incr-v2.stream");
    let d = TempDir::new("only-token");
    let dir = d.0.join("c");
    ok(&run(&[
        "chunk",
        s(&a),
        "--buffer-size",
        "4096",
        "--out-dir",
        s(&dir),
        "--stop-after",
        "3",
        "--safe-every",
        "7",
    ]));
    let token = dir.join("token-000003.txt");
    ok(&run(&[
        "resume",
        s(&a),
        "--token",
        s(&token),
        "--buffer-size",
        "10000",
        "--out-dir",
        s(&dir),
    ]));
    let joined_path = d.0.join("joined.stream");
    std::fs::write(&joined_path, joined(&dir, 10000)).unwrap();
    let out = ok(&run(&["compare", s(&a), s(&joined_path)]));
    assert!(out.starts_with("equal"), "{out}");
}
