//! The `proto-stream` binary, run as a user would.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

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
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
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
