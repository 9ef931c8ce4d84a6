//! The `proto-stream` binary, run as a user would.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use proto_stream::btrfs::BtrfsCommand as B;

mod common;
use common::TempDir;
mod gen;
use gen::Item;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_proto-stream"));
    c.env("TZ", "UTC");
    c
}

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/btrfs")
        .join(name)
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

fn run_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut child = bin()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // The command may stop reading early (at an error): write from a
    // thread, and ignore the closed pipe.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

#[test]
fn dump_matches_btrfs_progs_from_file_and_stdin() {
    for name in ["nodata-v2", "incr-v1", "incr-v2"] {
        let stream = testdata(&format!("{name}.stream"));
        let reference = std::fs::read(testdata(&format!("{name}.dump"))).unwrap();
        let out = run(&["dump", stream.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout == reference, "{name}: dump differs");
        assert!(out.stderr.is_empty());
        let out = run_stdin(&["dump", "-"], &std::fs::read(&stream).unwrap());
        assert!(out.status.success());
        assert!(out.stdout == reference, "{name}: dump of stdin differs");
    }
}

#[test]
fn verify_prints_a_summary_and_json() {
    let stream = testdata("incr-v2.stream");
    let out = run(&["verify", stream.to_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("ok: btrfs send stream v2, 1 stream(s), 28 commands, 71635 bytes"),
        "{text}"
    );

    let out = run(&["verify", "--json", stream.to_str().unwrap()]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["version"], 2);
    assert_eq!(v["commands"], 28);
    assert_eq!(v["bytes"], 71635);
    assert_eq!(v["commands_by_type"]["write"], 2);
    assert_eq!(v["commands_by_type"]["end"], 1);
}

#[test]
fn corruption_fails_with_one_line_naming_command_and_offset() {
    let mut bytes = std::fs::read(testdata("nodata-v2.stream")).unwrap();
    // A byte inside the payload of the third command.
    let mut off = 17usize;
    for _ in 0..2 {
        off += 10 + u32::from_le_bytes(bytes[off..off + 4].try_into().unwrap()) as usize;
    }
    bytes[off + 12] ^= 0x40;
    for sub in ["dump", "verify"] {
        let out = run_stdin(&[sub, "-"], &bytes);
        assert_eq!(out.status.code(), Some(1), "{sub}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{sub}: {err}");
        assert!(err.contains("CRC mismatch"), "{err}");
        assert!(
            err.contains(&format!("command 2, byte offset {off}")),
            "{sub}: {err}"
        );
    }
    let out = run_stdin(&["verify", "--json", "-"], &bytes);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["command_index"], 2);
    assert_eq!(v["byte_offset"], off as u64);
}

#[test]
fn truncated_and_foreign_input_fail_clearly() {
    let bytes = std::fs::read(testdata("nodata-v2.stream")).unwrap();
    let out = run_stdin(&["verify", "-"], &bytes[..bytes.len() - 10]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("without an END"), "{err}");

    let out = run_stdin(&["verify", "-"], &bytes[..bytes.len() - 3]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("truncated command"), "{err}");

    let out = run_stdin(
        &["dump", "-"],
        b"PK\x03\x04 this is a zip file, not a stream",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("not a btrfs send stream"), "{err}");

    let mut v9 = bytes.clone();
    v9[13] = 9;
    let out = run_stdin(&["dump", "-"], &v9);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("unsupported stream version 9"), "{err}");

    let out = run(&["verify", "/nonexistent/stream"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("/nonexistent/stream"));
}

#[test]
fn concatenated_streams_verify_and_dump_only_the_first() {
    let a = std::fs::read(testdata("nodata-v2.stream")).unwrap();
    let b = std::fs::read(testdata("incr-v1.stream")).unwrap();
    let both = [a.clone(), b].concat();
    let out = run_stdin(&["verify", "--json", "-"], &both);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["streams"], 2);
    assert_eq!(v["commands"], 61 + 29);

    let out = run_stdin(&["dump", "-"], &both);
    assert!(out.status.success());
    assert!(out.stdout == std::fs::read(testdata("nodata-v2.dump")).unwrap());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("input continues after the END at byte offset 3013"),
        "{err}"
    );

    // Garbage after END: verify refuses it where it starts; dump, like
    // btrfs receive --dump, never reads past the first END.
    let junk = [a.clone(), b"junk after the end....".to_vec()].concat();
    let out = run_stdin(&["verify", "-"], &junk);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("not a btrfs send stream") && err.contains("byte offset 3023"),
        "{err}"
    );
    let out = run_stdin(&["verify", "--json", "-"], &junk);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["byte_offset"], 3023);
    let out = run_stdin(&["dump", "-"], &junk);
    assert!(out.status.success());
    assert!(out.stdout == std::fs::read(testdata("nodata-v2.dump")).unwrap());
}

// A regular file of 64 MiB or more is read by two threads, each taking
// every other 1 MiB chunk by positional reads. What `verify` and `dump`
// print (summaries, dumps, errors with their command index and byte
// offset) must be what they print for the same bytes through standard
// input, which one thread reads in order.

/// A v2 stream of a little over 70 MiB: one file written in 60,000-byte
/// commands (not a divisor of 1 MiB, so commands straddle every chunk
/// boundary), every byte depending on its offset.
fn large_stream() -> Vec<u8> {
    let mut items = vec![
        Item::Typed(B::Subvol {
            path: b"large",
            uuid: [7; 16],
            ctransid: 1,
        }),
        Item::Typed(B::Mkfile {
            path: b"o257-1-0",
            ino: 257,
        }),
        Item::Typed(B::Rename {
            path: b"o257-1-0",
            to: b"f",
        }),
    ];
    const LEN: usize = 60_000;
    let data: Vec<Vec<u8>> = (0..1230u64)
        .map(|i| {
            (0..LEN as u64)
                .map(|b| (((i * LEN as u64 + b) * 2_654_435_761) >> 13) as u8)
                .collect()
        })
        .collect();
    for (i, d) in data.iter().enumerate() {
        items.push(Item::Typed(B::Write {
            path: b"f",
            offset: (i * LEN) as u64,
            data: d,
        }));
    }
    let s = gen::stream(2, &items);
    assert!(s.len() as u64 > 70 << 20, "{} bytes", s.len());
    s
}

/// The index and byte offset of the command that holds byte `at`.
fn command_at(stream: &[u8], at: usize) -> (u64, usize) {
    let mut off = 17;
    let mut index = 0;
    loop {
        let len = u32::from_le_bytes(stream[off..off + 4].try_into().unwrap()) as usize;
        if at < off + 10 + len {
            return (index, off);
        }
        off += 10 + len;
        index += 1;
    }
}

/// Exit status, stdout and stderr of `args` on `path` and on the same bytes
/// through standard input (`-`), which must be the same.
fn same_as_stdin(args: &[&str], path: &Path, bytes: &[u8]) -> (Option<i32>, Vec<u8>, String) {
    let mut a: Vec<&str> = args.to_vec();
    a.push(path.to_str().unwrap());
    let file = run(&a);
    *a.last_mut().unwrap() = "-";
    let stdin = run_stdin(&a, bytes);
    assert_eq!(file.status.code(), stdin.status.code(), "{args:?}");
    assert!(file.stdout == stdin.stdout, "{args:?}: stdout differs");
    let (fe, se) = (
        String::from_utf8(file.stderr).unwrap(),
        String::from_utf8(stdin.stderr).unwrap(),
    );
    assert_eq!(fe, se, "{args:?}: stderr");
    (file.status.code(), file.stdout, fe)
}

#[test]
fn a_large_file_reads_as_standard_input_does() {
    let d = TempDir::new("large");
    let mut bytes = large_stream();
    let path = d.path("large.stream");
    std::fs::write(&path, &bytes).unwrap();

    let (code, out, _) = same_as_stdin(&["verify"], &path, &bytes);
    assert_eq!(code, Some(0));
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.starts_with("ok: btrfs send stream v2, 1 stream(s), 1234 commands"),
        "{text}"
    );
    let (code, out, _) = same_as_stdin(&["dump"], &path, &bytes);
    assert_eq!(code, Some(0));
    let dump = String::from_utf8(out).unwrap();
    assert_eq!(dump.lines().count(), 1233, "every command but END");
    assert!(
        dump.lines()
            .last()
            .unwrap()
            .contains("offset=73740000 len=60000"),
        "{}",
        dump.lines().last().unwrap()
    );

    // A bit flipped in the second reader's chunks (chunk 41, bytes from
    // 41 MiB) and in the first's (chunk 66): the first is reported, by
    // command index and byte offset.
    let second = (41 << 20) + 12_345;
    let first = (66 << 20) + 999;
    bytes[second] ^= 0x10;
    bytes[first] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();
    let (code, _, err) = same_as_stdin(&["verify"], &path, &bytes);
    assert_eq!(code, Some(1));
    assert!(err.contains("CRC mismatch"), "{err}");
    let (index, offset) = command_at(&bytes, second);
    assert!(
        err.contains(&format!("command {index}, byte offset {offset}")),
        "want command {index} at {offset}: {err}"
    );
    bytes[second] ^= 0x10;
    bytes[first] ^= 0x10;

    // Cut in the middle of a chunk (67, 68: whichever thread reads it),
    // and on a chunk boundary, the file still large enough for positional
    // reads: the same truncation error as one reader gives.
    for cut in [(67 << 20) + 77, (68 << 20) + 3, 69 << 20] {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let (code, _, err) = same_as_stdin(&["verify"], &path, &bytes[..cut]);
        assert_eq!(code, Some(1), "cut at {cut}");
        assert!(!err.is_empty(), "cut at {cut}");
    }
}
