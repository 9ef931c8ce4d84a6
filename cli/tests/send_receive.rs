//! `proto-stream send` and `receive` as a user runs them, over TCP on
//! 127.0.0.1 and over standard input and output: a receiver killed with
//! SIGKILL at random points (20 seeds) and started again with the same
//! command resumes from what it kept durably, and the final file is
//! byte-identical; a sender killed and started again is re-armed from the
//! receiver's token; another stream offered for the same output is
//! refused and what was kept is untouched; `--abort` drops a partial
//! transfer; plain TCP beyond loopback needs `--insecure`.
//!
//! Every child process is killed when its handle drops, and every wait has
//! a deadline.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{start, stream, Proc, TempDir};

const DEADLINE: Duration = Duration::from_secs(120);

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn with_suffix(p: &Path, suffix: &str) -> std::path::PathBuf {
    let mut o = p.as_os_str().to_owned();
    o.push(suffix);
    o.into()
}

/// `send FILE --listen 127.0.0.1:PORT ...`: the process and its address.
fn sender(file: &Path, listen: &str, extra: &[&str], deadline: Instant) -> (Proc, String) {
    let mut args = vec!["send", s(file), "--listen", listen, "--json"];
    args.extend_from_slice(extra);
    let p = start("send", &args);
    let line = p.line(deadline);
    let addr = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("send printed {line:?} first"))
        .to_string();
    (p, addr)
}

fn receiver(out: &Path, addr: &str) -> Proc {
    start(
        "receive",
        &[
            "receive",
            s(out),
            "--from",
            &format!("tcp://{addr}"),
            "--json",
            "--retry-for",
            "20",
        ],
    )
}

fn len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// A tiny deterministic generator for the seeds.
fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// Kills `p` with SIGKILL once `part` holds at least `at` bytes (or it
/// exits first). Whether it was killed.
fn kill_at(p: &mut Proc, part: &Path, at: u64, deadline: Instant) -> bool {
    loop {
        if p.child.try_wait().unwrap().is_some() {
            return false;
        }
        if len(part) >= at {
            p.child.kill().unwrap();
            p.child.wait().unwrap();
            return true;
        }
        assert!(Instant::now() < deadline, "{} made no progress", p.name);
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_receiver_killed_at_random_points_resumes_to_an_identical_file() {
    let d = TempDir::new("recv-kill");
    let want = stream(2, 1);
    let file = d.path("source.stream");
    std::fs::write(&file, &want).unwrap();
    let total = want.len() as u64;
    let mut resumed = 0;
    for seed in 1..=20u64 {
        let deadline = Instant::now() + DEADLINE;
        let out = d.path(&format!("out-{seed}.stream"));
        let part = with_suffix(&out, ".part");
        // 8 MB/s: about a quarter of a second for the whole stream.
        let (mut snd, addr) = sender(&file, "127.0.0.1:0", &["--rate-limit", "8000000"], deadline);
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let kills = 1 + next(&mut x) % 3;
        let mut kept = 0;
        let mut done = false;
        for _ in 0..kills {
            let mut r = receiver(&out, &addr);
            let at = kept + next(&mut x) % (total - kept).max(1);
            let killed = kill_at(&mut r, &part, at, deadline);
            // Whenever the final name exists, it holds the whole stream
            // (a kill may land just after the rename).
            if out.exists() {
                assert!(std::fs::read(&out).unwrap() == want, "seed {seed}: early");
                done = true;
                break;
            }
            assert!(
                killed,
                "seed {seed}: the receiver exited without {}",
                s(&out)
            );
            // What was kept is a prefix of the stream.
            let held = std::fs::read(&part).unwrap_or_default();
            assert!(want.starts_with(&held), "seed {seed}: kept bytes differ");
            kept = len(&part);
        }
        if done {
            continue;
        }
        let mut r = receiver(&out, &addr);
        let v = r.json(deadline);
        let got = std::fs::read(&out).unwrap();
        assert!(got == want, "seed {seed}: the received file differs");
        assert!(!part.exists() && !with_suffix(&out, ".part.state").exists());
        if v["resumed_from"].as_u64().unwrap() > 0 {
            resumed += 1;
            // Nothing it held durably came again: this process received
            // only what lay past where it resumed.
            assert_eq!(
                v["bytes_received"].as_u64().unwrap(),
                total - v["resumed_from"].as_u64().unwrap(),
                "seed {seed}: {v}"
            );
        }
        let (status, _, err) = snd.wait(deadline);
        assert!(status.success(), "seed {seed}: send: {err}");
    }
    // Most kills land after the first acknowledgement.
    assert!(
        resumed >= 5,
        "only {resumed} of 20 runs resumed from kept bytes"
    );
}

#[test]
fn a_sender_killed_and_started_again_is_rearmed_from_the_receivers_token() {
    let d = TempDir::new("send-kill");
    let want = stream(3, 2);
    let file = d.path("source.stream");
    std::fs::write(&file, &want).unwrap();
    let deadline = Instant::now() + DEADLINE;
    let out = d.path("out.stream");
    let (mut snd, addr) = sender(&file, "127.0.0.1:0", &["--rate-limit", "6000000"], deadline);
    let mut r = receiver(&out, &addr);
    // Kill the sender once the receiver holds a third of the stream.
    let part = with_suffix(&out, ".part");
    while len(&part) < want.len() as u64 / 3 {
        assert!(Instant::now() < deadline, "no progress");
        std::thread::sleep(Duration::from_millis(2));
    }
    snd.child.kill().unwrap();
    snd.child.wait().unwrap();
    // The same command again, on the same port: the receiver reconnects.
    let (mut snd, _) = sender(&file, &addr, &[], deadline);
    let v = r.json(deadline);
    assert!(std::fs::read(&out).unwrap() == want);
    assert!(v["reconnects"].as_u64().unwrap() >= 1, "{v}");
    let (status, lines, err) = snd.wait(deadline);
    assert!(status.success(), "{err}");
    let sv: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(sv["resumed_by_token"], 1, "{sv}");
}

#[test]
fn another_stream_for_the_same_output_is_refused_and_what_was_kept_stays() {
    let d = TempDir::new("other-stream");
    let (a, b) = (stream(2, 3), stream(2, 4));
    let (fa, fb) = (d.path("a.stream"), d.path("b.stream"));
    std::fs::write(&fa, &a).unwrap();
    std::fs::write(&fb, &b).unwrap();
    let deadline = Instant::now() + DEADLINE;
    let out = d.path("out.stream");
    let part = with_suffix(&out, ".part");
    let (_snd, addr) = sender(&fa, "127.0.0.1:0", &["--rate-limit", "4000000"], deadline);
    let mut r = receiver(&out, &addr);
    // Killed once something is durable (the state file exists).
    let state = with_suffix(&out, ".part.state");
    while !state.exists() {
        assert!(Instant::now() < deadline, "nothing was made durable");
        std::thread::sleep(Duration::from_millis(2));
    }
    r.child.kill().unwrap();
    r.child.wait().unwrap();
    drop(_snd);
    let kept_state = std::fs::read(&state).unwrap();
    let (_snd, addr) = sender(&fb, "127.0.0.1:0", &[], deadline);
    let mut r = receiver(&out, &addr);
    let (status, _, err) = r.wait(deadline);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("holds part of stream"), "{err}");
    // Nothing of B was appended: the kept bytes are A's, the state as it was.
    let held = std::fs::read(&part).unwrap();
    assert!(
        !held.is_empty() && a.starts_with(&held),
        "the kept bytes changed"
    );
    assert_eq!(std::fs::read(&state).unwrap(), kept_state);
    assert!(!out.exists());

    // --abort drops it; then B is received from the start.
    let mut ab = start("abort", &["receive", s(&out), "--abort"]);
    let (status, _, err) = ab.wait(deadline);
    assert!(status.success() && err.contains("dropped"), "{err}");
    assert!(!part.exists() && !state.exists());
    let mut r = receiver(&out, &addr);
    let v = r.json(deadline);
    assert_eq!(v["resumed_from"], 0);
    assert!(std::fs::read(&out).unwrap() == b);
}

/// `send --stdio` and `receive --stdio` joined by two pipes, as ssh would
/// join them.
#[test]
fn send_and_receive_over_standard_input_and_output() {
    let d = TempDir::new("stdio");
    let want = stream(1, 5);
    let file = d.path("source.stream");
    std::fs::write(&file, &want).unwrap();
    let out = d.path("out.stream");
    let bin = env!("CARGO_BIN_EXE_proto-stream");
    let mut snd = Command::new(bin)
        .args(["send", s(&file), "--stdio"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut rcv = Command::new(bin)
        .args(["receive", s(&out), "--stdio", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pump = |mut from: std::process::ChildStdout, mut to: std::process::ChildStdin| {
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 || to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        })
    };
    let a = pump(snd.stdout.take().unwrap(), rcv.stdin.take().unwrap());
    let b = pump(rcv.stdout.take().unwrap(), snd.stdin.take().unwrap());
    let deadline = Instant::now() + DEADLINE;
    let wait = |c: &mut std::process::Child| loop {
        if let Some(s) = c.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "hung");
        std::thread::sleep(Duration::from_millis(5));
    };
    let rs = wait(&mut rcv);
    let ss = wait(&mut snd);
    let mut err = String::new();
    rcv.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(rs.success() && ss.success(), "{rs} {ss}: {err}");
    // The summary goes to stderr: stdout is the transport.
    let v: serde_json::Value = serde_json::from_str(err.lines().last().unwrap()).unwrap();
    assert_eq!(v["ok"], true);
    assert!(std::fs::read(&out).unwrap() == want);
    a.join().unwrap();
    b.join().unwrap();
}

#[test]
fn plain_tcp_beyond_loopback_needs_insecure() {
    let d = TempDir::new("insecure");
    let file = d.path("source.stream");
    std::fs::write(&file, stream(1, 6)).unwrap();
    let deadline = Instant::now() + DEADLINE;
    // 192.0.2.1 is TEST-NET-1: refused before any connection is tried.
    let mut p = start("send", &["send", s(&file), "--to", "tcp://192.0.2.1:9"]);
    let (status, _, err) = p.wait(deadline);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("not a loopback address") && err.contains("--insecure"),
        "{err}"
    );
    let mut p = start(
        "receive",
        &["receive", s(&d.path("o")), "--listen", "0.0.0.0:0"],
    );
    let (status, _, err) = p.wait(deadline);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("--insecure"), "{err}");
    // An output that exists is not overwritten.
    std::fs::write(d.path("done"), b"x").unwrap();
    let mut p = start(
        "receive",
        &["receive", s(&d.path("done")), "--from", "tcp://127.0.0.1:9"],
    );
    let (status, _, err) = p.wait(deadline);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("exists"), "{err}");
}

/// `send -`: a stream on standard input, read once as it comes.
#[test]
fn a_stream_on_standard_input_is_sent_as_it_comes() {
    let d = TempDir::new("stdin");
    let want = stream(2, 7);
    let file = d.path("source.stream");
    std::fs::write(&file, &want).unwrap();
    let deadline = Instant::now() + DEADLINE;
    let out = d.path("out.stream");
    let mut rcv = start(
        "receive",
        &["receive", s(&out), "--listen", "127.0.0.1:0", "--json"],
    );
    let addr = rcv
        .line(deadline)
        .strip_prefix("listening on ")
        .unwrap()
        .to_string();
    let snd = Command::new(env!("CARGO_BIN_EXE_proto-stream"))
        .args(["send", "-", "--to", &format!("tcp://{addr}"), "--json"])
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .unwrap();
    assert!(
        snd.status.success(),
        "{}",
        String::from_utf8_lossy(&snd.stderr)
    );
    rcv.json(deadline);
    assert!(std::fs::read(&out).unwrap() == want);
    // Standard input cannot be the stream and the connection at once.
    let bad = Command::new(env!("CARGO_BIN_EXE_proto-stream"))
        .args(["send", "-", "--stdio"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("both the stream and the connection"));
}

/// `--key`: a receiver listening beyond loopback with a key takes only a
/// sender that proves it holds the key; one with another key or none is
/// refused before a byte of the stream moves, and the receiver goes on
/// waiting for the right one.
#[test]
fn with_a_key_only_a_sender_that_holds_it_is_served() {
    let d = TempDir::new("key");
    let want = stream(1, 8);
    let file = d.path("source.stream");
    std::fs::write(&file, &want).unwrap();
    std::fs::write(d.path("key"), b"correct horse battery staple\n").unwrap();
    std::fs::write(d.path("other"), b"another key of enough bytes\n").unwrap();
    std::fs::write(d.path("short"), b"tiny\n").unwrap();
    let deadline = Instant::now() + DEADLINE;
    let out = d.path("out.stream");
    // Beyond loopback: allowed with a key.
    let mut rcv = start(
        "receive",
        &[
            "receive",
            s(&out),
            "--listen",
            "0.0.0.0:0",
            "--key",
            s(&d.path("key")),
            "--json",
        ],
    );
    let line = rcv.line(deadline);
    let port = line.rsplit(':').next().unwrap().to_string();
    let to = format!("tcp://127.0.0.1:{port}");
    let send = |key: Option<&str>| {
        let mut args = vec![
            "send".to_string(),
            s(&file).into(),
            "--to".into(),
            to.clone(),
        ];
        if let Some(k) = key {
            args.extend(["--key".into(), s(&d.path(k)).into()]);
        }
        Command::new(env!("CARGO_BIN_EXE_proto-stream"))
            .args(&args)
            .args(["--retry-for", "5"])
            .output()
            .unwrap()
    };
    let wrong = send(Some("other"));
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert_eq!(wrong.status.code(), Some(3), "{err}");
    assert!(err.contains("proof of the key does not hold"), "{err}");
    let none = send(None);
    let err = String::from_utf8_lossy(&none.stderr);
    assert!(!none.status.success(), "{err}");
    assert!(err.contains("magic"), "{err}");
    let short = send(Some("short"));
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 16"));
    // Nothing of the stream moved, and the receiver is still waiting.
    assert!(rcv.child.try_wait().unwrap().is_none());
    assert_eq!(
        std::fs::metadata(format!("{}.part", s(&out)))
            .unwrap()
            .len(),
        0
    );
    let right = send(Some("key"));
    assert!(
        right.status.success(),
        "{}",
        String::from_utf8_lossy(&right.stderr)
    );
    rcv.json(deadline);
    assert!(std::fs::read(&out).unwrap() == want);
}

/// `send --compress` of a compressible stream: the file arrives identical,
/// and the sender's JSON shows far fewer payload bytes on the wire than
/// the stream holds (the receiver's too).
#[test]
fn send_compress_puts_fewer_bytes_on_the_wire() {
    let d = TempDir::new("compress");
    let want = stream(2, 7);
    let file = d.path("source.stream");
    std::fs::write(&file, &want).unwrap();
    let total = want.len() as u64;
    let deadline = Instant::now() + DEADLINE;
    let out = d.path("out.stream");
    let (mut snd, addr) = sender(&file, "127.0.0.1:0", &["--compress"], deadline);
    let rv = receiver(&out, &addr).json(deadline);
    let sv = snd.json(deadline);
    assert!(
        std::fs::read(&out).unwrap() == want,
        "the received file differs"
    );
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k}: {v}"));
    assert_eq!(n(&sv, "bytes_sent"), total, "{sv}");
    assert!(n(&sv, "units_compressed") > 0, "{sv}");
    assert!(
        n(&sv, "payload_wire_bytes") * 10 < total,
        "{} payload bytes on the wire for a stream of {total}: {sv}",
        n(&sv, "payload_wire_bytes")
    );
    assert_eq!(n(&rv, "bytes_received"), total, "{rv}");
    assert_eq!(
        n(&rv, "payload_wire_bytes"),
        n(&sv, "payload_wire_bytes"),
        "{rv}"
    );
    assert!(n(&rv, "wire_bytes") * 10 < total, "{rv}");
}

/// Stray and hostile clients on a listening side (garbage, a peer that
/// hangs up at once) neither end nor reset the transfer: the right peer is
/// served after them.
#[test]
fn stray_clients_do_not_end_a_listening_side() {
    use std::net::TcpStream;
    let d = TempDir::new("stray");
    let want = stream(1, 9);
    let file = d.path("source.stream");
    std::fs::write(&file, &want).unwrap();
    let deadline = Instant::now() + DEADLINE;
    let strays = |addr: &str| {
        let mut c = TcpStream::connect(addr).unwrap();
        let _ = c.write_all(b"GET / HTTP/1.0\r\n\r\n this is not a session at all, just garbage");
        drop(c);
        drop(TcpStream::connect(addr).unwrap());
        let mut c = TcpStream::connect(addr).unwrap();
        let _ = c.write_all(&[0xFF; 4096]);
    };
    // A listening receiver.
    let out = d.path("out.stream");
    let mut rcv = start(
        "receive",
        &["receive", s(&out), "--listen", "127.0.0.1:0", "--json"],
    );
    let addr = rcv
        .line(deadline)
        .strip_prefix("listening on ")
        .unwrap()
        .to_string();
    strays(&addr);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        rcv.child.try_wait().unwrap().is_none(),
        "the receiver ended"
    );
    let snd = Command::new(env!("CARGO_BIN_EXE_proto-stream"))
        .args(["send", s(&file), "--to", &format!("tcp://{addr}")])
        .output()
        .unwrap();
    assert!(
        snd.status.success(),
        "{}",
        String::from_utf8_lossy(&snd.stderr)
    );
    rcv.json(deadline);
    assert!(std::fs::read(&out).unwrap() == want);
    // A listening sender.
    let out2 = d.path("out2.stream");
    let (mut snd, addr) = sender(&file, "127.0.0.1:0", &[], deadline);
    strays(&addr);
    std::thread::sleep(Duration::from_millis(200));
    assert!(snd.child.try_wait().unwrap().is_none(), "the sender ended");
    let mut r = receiver(&out2, &addr);
    r.json(deadline);
    snd.json(deadline);
    assert!(std::fs::read(&out2).unwrap() == want);
}
