//! `inspect`, `dump`, `verify`, `chunk`, `resume` and `compare` of native
//! streams, run as a user would.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::TempDir;

fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(rel)
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_proto-stream"))
        .env("TZ", "UTC")
        .args(args)
        .output()
        .unwrap()
}

fn ok_stdout(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stderr.is_empty());
    String::from_utf8(out.stdout).unwrap()
}

fn sample() -> String {
    testdata("native/sample-v1.stream")
        .to_str()
        .unwrap()
        .to_owned()
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s.trim()).unwrap()
}

#[test]
fn inspect_native_text_and_json() {
    let text = ok_stdout(&["inspect", &sample()]);
    assert_eq!(
        text,
        "format: native\n\
         magic: \"PRSTREAM\"\n\
         version: 1\n\
         compat_version: 1\n\
         chosen version: 1\n\
         header length: 99\n\
         endian: little\n\
         features supported: 0x0000000000000007\n\
         features required: 0x0000000000000001\n\
         stream id: 70726f746f2d73747265616d2d763121\n\
         contexts: 1=base:allocation, 2=device:state\n"
    );
    let v = json(&ok_stdout(&["inspect", "--json", &sample()]));
    assert_eq!(v["format"], "native");
    assert_eq!(v["magic"], "PRSTREAM");
    assert_eq!(
        (&v["version"], &v["compat_version"], &v["chosen_version"]),
        (&1.into(), &1.into(), &1.into())
    );
    let h = &v["version_header"];
    assert_eq!(h["endian"], "little");
    assert_eq!(h["features_supported"], "0x0000000000000007");
    assert_eq!(h["features_required"], "0x0000000000000001");
    assert_eq!(h["stream_id"], "70726f746f2d73747265616d2d763121");
    assert_eq!(h["contexts"][1]["id"], 2);
    assert_eq!(h["contexts"][1]["name"], "device:state");
}

#[test]
fn inspect_btrfs_text_and_json() {
    let f = testdata("btrfs/incr-v2.stream");
    let text = ok_stdout(&["inspect", f.to_str().unwrap()]);
    assert!(text.starts_with("format: btrfs\n"), "{text}");
    assert!(text.contains("\nversion: 2\n"), "{text}");
    assert!(text.contains("\nchosen version: 2\n"), "{text}");
    assert!(text.contains("no version-specific header"), "{text}");
    let v = json(&ok_stdout(&["inspect", "--json", f.to_str().unwrap()]));
    assert_eq!(v["format"], "btrfs");
    assert_eq!(v["version"], 2);
    assert_eq!(v["compat_version"], 2);
    assert_eq!(v["chosen_version"], 2);
    assert_eq!(v["header_len"], 17);
    assert!(v["version_header"].is_null());
}

#[test]
fn dump_and_verify_the_native_sample() {
    let dump = ok_stdout(&["dump", &sample()]);
    assert_eq!(
        dump,
        "index=0 offset=99 cmd=0x0001 len=17 attrs=0x0001:4,0x0002:5\n\
         index=1 offset=126 cmd=0x0002 len=42 attrs=0x0001:4,0x0003:8,0x0004:18\n\
         index=2 offset=178 cmd=0x0003 len=0 attrs=-\n\
         index=3 offset=188 cmd=0x0100 len=20 attrs=0x0005:16\n\
         index=4 offset=218 cmd=0xffff len=0 attrs=-\n"
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_proto-stream"))
        .args(["dump", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        &std::fs::read(sample()).unwrap(),
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        dump,
        "dump of stdin"
    );
    let text = ok_stdout(&["verify", &sample()]);
    assert_eq!(
        text,
        "ok: native stream v1 (version 1, compat_version 1), 5 commands, 228 bytes\n"
    );
    let v = json(&ok_stdout(&["verify", "--json", &sample()]));
    assert_eq!(v["ok"], true);
    assert_eq!(v["format"], "native");
    assert_eq!(v["version"], 1);
    assert_eq!(v["commands"], 5);
    assert_eq!(v["bytes"], 228);
    assert_eq!(v["commands_by_type"]["0xffff"], 1);
}

#[test]
fn a_corrupted_native_stream_fails_naming_command_and_offset() {
    let mut bytes = std::fs::read(sample()).unwrap();
    // Last byte of command 1 (offset 126, 10 + 42 bytes).
    bytes[126 + 52 - 1] ^= 0x40;
    let dir = std::env::temp_dir().join(format!("proto-stream-native-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.stream");
    std::fs::write(&bad, &bytes).unwrap();
    let bad = bad.to_str().unwrap();
    for args in [vec!["verify", bad], vec!["dump", bad]] {
        let out = run(&args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with("proto-stream: error: CRC mismatch"),
            "{err}"
        );
        assert!(err.contains("(command 1, byte offset 126)"), "{err}");
    }
    let out = run(&["verify", "--json", bad]);
    assert!(!out.status.success());
    let v = json(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(v["ok"], false);
    assert_eq!(v["command_index"], 1);
    assert_eq!(v["byte_offset"], 126);

    // Without END.
    let cut = dir.join("cut.stream");
    let good = std::fs::read(sample()).unwrap();
    std::fs::write(&cut, &good[..good.len() - 10]).unwrap();
    let out = run(&["verify", cut.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("without an END"), "{err}");
    assert!(err.contains("(command 4, byte offset 218)"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The chunks of `dir` in name order, concatenated; each at most `max`.
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
        out.extend_from_slice(&b);
    }
    out
}

/// `chunk` a native stream whose data commands exceed 64 KiB through 4 KiB
/// buffers, stop, `resume` from the token alone through larger ones: the
/// result verifies, dumps, and compares equal to the original although its
/// data commands were split; `compare` names a divergence and refuses a
/// stream of another format.
#[test]
fn chunk_resume_compare_native() {
    let data = testdata("native/data-v1.stream");
    let data_s = data.to_str().unwrap();
    let d = TempDir::new("chunk");
    let dir = d.0.join("c");
    let dir_s = dir.to_str().unwrap();
    let out = ok_stdout(&[
        "chunk",
        data_s,
        "--buffer-size",
        "4096",
        "--out-dir",
        dir_s,
        "--stop-after",
        "20",
        "--safe-every",
        "3",
    ]);
    assert!(out.starts_with("stopped: 20 chunks"), "{out}");
    let token = dir.join("token-000020.txt");
    let v = json(&ok_stdout(&[
        "resume",
        data_s,
        "--token",
        token.to_str().unwrap(),
        "--buffer-size",
        "10000",
        "--out-dir",
        dir_s,
        "--json",
    ]));
    assert_eq!(v["ended"], true, "{v}");
    assert_eq!(v["first_chunk"], 21, "{v}");
    assert!(v["pieces"].as_u64().unwrap() > 30, "{v}");
    let whole = joined(&dir, 10000);
    let original = std::fs::read(&data).unwrap();
    assert!(whole != original, "the data commands must have been split");
    let resumed = d.0.join("resumed.stream");
    std::fs::write(&resumed, &whole).unwrap();
    let resumed_s = resumed.to_str().unwrap();

    let v = json(&ok_stdout(&["verify", "--json", resumed_s]));
    assert_eq!(v["ok"], true, "{v}");
    let dump = ok_stdout(&["dump", resumed_s]);
    assert!(dump.lines().count() > 40, "{} lines", dump.lines().count());
    assert!(dump.lines().all(|l| l.starts_with("index=")), "{dump}");
    let out = ok_stdout(&["compare", data_s, resumed_s]);
    assert!(out.starts_with("equal: the same commands"), "{out}");

    // One data byte changed: its command's CRC no longer holds.
    let mut changed = whole.clone();
    let at = whole.len() / 2;
    changed[at] ^= 0x40;
    let changed_path = d.0.join("changed.stream");
    std::fs::write(&changed_path, &changed).unwrap();
    let out = run(&["compare", data_s, changed_path.to_str().unwrap()]);
    // An error (2) naming stream B and its offset.
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with("proto-stream: error: stream B: CRC mismatch"),
        "{err}"
    );
    assert!(err.contains("byte offset"), "{err}");

    // Different formats: refused, exit 2, one line.
    let btrfs = testdata("btrfs/incr-v2.stream");
    let out = run(&["compare", data_s, btrfs.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("is a native stream and B"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    // A token of the native stream does not resume the btrfs one.
    let out = run(&[
        "resume",
        btrfs.to_str().unwrap(),
        "--token",
        token.to_str().unwrap(),
        "--buffer-size",
        "4096",
        "--out-dir",
        d.0.join("e").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("not for this stream"), "{err}");
}
