//! What the CLI's process-level tests share: temporary directories that
//! go when dropped, and `proto-stream` child processes that are killed when
//! dropped, their output read with deadlines.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use proto_stream::header::{Endian, V1Header, KIT_VERSIONS};
use proto_stream::native::{Writer, NATIVE_DATA, NATIVE_DATA_CMD, NATIVE_OBJECT, NATIVE_OFFSET};
use proto_stream::tlv::{AttrValue, Value};

/// Prints a loud SKIPPED line past the test harness's capture.
pub fn skipped(what: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED: {what}");
}

/// A temporary directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!(
            "proto-stream-cli-test-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        ));
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `proto-stream`: killed when dropped.
pub struct Proc {
    pub name: String,
    pub child: Child,
    lines: mpsc::Receiver<String>,
    out: Option<JoinHandle<()>>,
    err: Option<JoinHandle<String>>,
}

/// Starts `proto-stream ARGS`, stdout read line by line.
pub fn start(name: &str, args: &[&str]) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_proto-stream"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let out = std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let mut stderr = child.stderr.take().unwrap();
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    Proc {
        name: name.to_string(),
        child,
        lines,
        out: Some(out),
        err: Some(err),
    }
}

impl Proc {
    /// The next line on its stdout.
    #[track_caller]
    pub fn line(&self, deadline: Instant) -> String {
        let left = deadline.saturating_duration_since(Instant::now());
        self.lines
            .recv_timeout(left)
            .unwrap_or_else(|e| panic!("{}: no line on stdout: {e}", self.name))
    }

    /// Waits for it to exit: its status, the rest of its stdout, its
    /// stderr.
    #[track_caller]
    pub fn wait(&mut self, deadline: Instant) -> (ExitStatus, Vec<String>, String) {
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("{} did not exit in time: hung", self.name);
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        if let Some(h) = self.out.take() {
            h.join().unwrap();
        }
        let err = self
            .err
            .take()
            .map(|h| h.join().unwrap())
            .unwrap_or_default();
        (status, self.lines.try_iter().collect(), err)
    }

    /// Waits for a successful exit; returns its last stdout line as JSON.
    #[track_caller]
    pub fn json(&mut self, deadline: Instant) -> serde_json::Value {
        let (status, lines, err) = self.wait(deadline);
        assert!(status.success(), "{}: {status}: {err}", self.name);
        let last = lines
            .last()
            .unwrap_or_else(|| panic!("{}: no output", self.name));
        let v: serde_json::Value =
            serde_json::from_str(last).unwrap_or_else(|e| panic!("{}: {e}: {last}", self.name));
        assert_eq!(v["ok"], true, "{}: {v}", self.name);
        v
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A native stream of about `mb` MiB: small commands between data
/// commands of 64 KiB, every byte depending on `seed`.
pub fn stream(mb: usize, seed: u8) -> Vec<u8> {
    let header = V1Header {
        byte_order: Endian::Little,
        features_supported: 0,
        features_required: 0,
        stream_id: [seed; 16],
        contexts: Vec::new(),
    };
    let entry = KIT_VERSIONS.entry(1).unwrap();
    let mut w = Writer::new(Vec::new(), entry, 1, &header).unwrap();
    for i in 0..(mb * 16) {
        let name = format!("section {i}");
        w.write_command(1, &[AttrValue::new(1, Value::Bytes(name.as_bytes()))])
            .unwrap();
        let data: Vec<u8> = (0..65536u32)
            .map(|b| (b.wrapping_mul(31) as u8) ^ (i as u8) ^ seed)
            .collect();
        w.write_command(
            NATIVE_DATA_CMD,
            &[
                AttrValue::new(NATIVE_OBJECT, Value::Bytes(b"memory")),
                AttrValue::new(NATIVE_OFFSET, Value::U64(i as u64 * 65536)),
                AttrValue::new(NATIVE_DATA, Value::Bytes(&data)),
            ],
        )
        .unwrap();
    }
    w.finish().unwrap()
}
