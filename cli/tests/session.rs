//! `proto-stream serve` and `fetch` as a user runs them, over TCP on
//! 127.0.0.1: connections dropped on both sides, a sender that forgets its
//! transfer (`--kill-sender-after`), a context subset that `verify`
//! accepts, a serve process killed with SIGKILL mid-transfer and another
//! started on its port (the fetch resumes from its checkpoint token), and
//! an unknown context name.
//!
//! Every child process is killed when its handle drops, and every wait has
//! a deadline: a hung test fails, it does not hang.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use std::time::{Duration, Instant};

use proto_stream::btrfs::Btrfs;
use proto_stream::checkpoint::Units;
use proto_stream::checkpoint::{list_streams, Format, StreamSpan};

const DEADLINE: Duration = Duration::from_secs(90);

mod common;
use common::{start, Proc, TempDir};

/// A full stream with an incremental one after it (two contexts): the v2
/// streams of the set shipped in `testdata/btrfs/small/`, written into
/// `dir`: its path and bytes.
fn two_streams(dir: &TempDir) -> (PathBuf, Vec<u8>) {
    let set = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/btrfs/small");
    let mut bytes = std::fs::read(set.join("full-v2.stream")).unwrap();
    bytes.extend(std::fs::read(set.join("incr-v2.stream")).unwrap());
    let p = dir.path("both.stream");
    std::fs::write(&p, &bytes).unwrap();
    (p, bytes)
}

fn spans(bytes: &[u8]) -> Vec<StreamSpan> {
    let mut src = bytes;
    list_streams(&Btrfs, &mut src).unwrap()
}

fn largest_unit(bytes: &[u8]) -> u64 {
    let mut p = Btrfs.units(bytes);
    let mut max = 0;
    while let Some(u) = p.current().unwrap() {
        max = max.max(u.bytes.len() as u64);
        p.advance().unwrap();
    }
    max
}

// ------------------------------------------------------------- processes

/// `serve FILE --listen LISTEN ...`: the process and the address it
/// printed first.
fn serve(file: &Path, listen: &str, extra: &[&str], deadline: Instant) -> (Proc, SocketAddr) {
    let mut args = vec![
        "serve",
        file.to_str().unwrap(),
        "--listen",
        listen,
        "--timeout",
        "80",
        "--io-timeout",
        "10",
        "--json",
    ];
    args.extend_from_slice(extra);
    let p = start("serve", &args);
    let first = p.line(deadline);
    let addr = first
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("serve: first line {first:?}"))
        .parse()
        .unwrap();
    (p, addr)
}

fn fetch(addr: &str, out: &Path, extra: &[&str]) -> Proc {
    let mut args = vec![
        "fetch",
        addr,
        "--out",
        out.to_str().unwrap(),
        "--retry-for",
        "20",
        "--io-timeout",
        "10",
        "--json",
    ];
    args.extend_from_slice(extra);
    start("fetch", &args)
}

fn n(v: &serde_json::Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no number {key:?} in {v}"))
}

#[track_caller]
fn assert_same_file(out: &Path, want: &[u8]) {
    let got = std::fs::read(out).unwrap();
    if got != want {
        let at = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "{} differs from the stream (first difference at {at:?}; {} bytes, {} expected)",
            out.display(),
            got.len(),
            want.len()
        );
    }
}

// ------------------------------------------------------------------ tests

#[test]
fn serve_and_fetch_with_drops_on_both_sides() {
    let deadline = Instant::now() + DEADLINE;
    let d = TempDir::new("drops");
    let (file, bytes) = two_streams(&d);
    let big = largest_unit(&bytes);
    let window = 64u64 << 10;
    let (server_drop, client_drop) = ((big + 9001).to_string(), (big + 17003).to_string());
    let (mut s, addr) = serve(
        &file,
        "127.0.0.1:0",
        &[
            "--drop-every",
            &server_drop,
            "--window",
            &window.to_string(),
            "--token-every",
            "65536",
        ],
        deadline,
    );
    let out = d.path("out.stream");
    let mut f = fetch(&addr.to_string(), &out, &["--drop-every", &client_drop]);
    let fv = f.json(deadline);
    let sv = s.json(deadline);
    assert_same_file(&out, &bytes);

    let len = bytes.len() as u64;
    assert_eq!(n(&fv, "bytes"), len, "{fv}");
    // Nothing the fetcher had came again: every DATA payload that arrived
    // was written.
    assert_eq!(n(&fv, "duplicates"), 0, "{fv}");
    assert_eq!(n(&fv, "bytes_received"), len, "{fv}");
    let reconnects = n(&fv, "reconnects");
    assert!(reconnects >= len / (big + 17003), "{fv}");
    assert_eq!(n(&fv, "resumed_by_token"), 0, "{fv}");
    let resent = n(&fv, "bytes_resent");
    assert!(resent > 0, "{fv}");
    // At most a window and one unit per reconnect: never the whole stream.
    assert!(resent <= reconnects * (window + big), "{fv}");
    assert!(n(&fv, "wire_bytes") > len, "{fv}");
    assert_eq!(fv["contexts"].as_array().unwrap().len(), 2, "{fv}");

    assert_eq!(n(&sv, "bytes_sent") - len, n(&sv, "bytes_resent"), "{sv}");
    assert!(n(&sv, "bytes_resent") <= resent, "{sv} {fv}");
    // Small units went several to a frame, through the drops.
    assert!(n(&sv, "units_frames") > 0, "{sv}");
    assert!(n(&sv, "connections") >= 2, "{sv}");
    assert_eq!(n(&sv, "refused"), 0, "{sv}");
    assert_eq!(n(&sv, "restarts"), 0, "{sv}");
}

#[test]
fn kill_sender_after_resumes_from_a_token() {
    let deadline = Instant::now() + DEADLINE;
    let d = TempDir::new("kill");
    let (file, bytes) = two_streams(&d);
    let big = largest_unit(&bytes);
    let window = (bytes.len() as u64 / 16).clamp(1024, 64 << 10);
    // Past a full window: the fetcher has acknowledged units (and tokens)
    // before the sender forgets everything.
    let kill = window + big + 1;
    assert!(kill < bytes.len() as u64);
    let (mut s, addr) = serve(
        &file,
        "127.0.0.1:0",
        &[
            "--kill-sender-after",
            &kill.to_string(),
            "--window",
            &window.to_string(),
            "--token-every",
            "4096",
        ],
        deadline,
    );
    let out = d.path("out.stream");
    let fv = fetch(&addr.to_string(), &out, &[]).json(deadline);
    let sv = s.json(deadline);
    assert_same_file(&out, &bytes);
    assert_eq!(n(&fv, "resumed_by_token"), 1, "{fv}");
    assert_eq!(n(&fv, "reconnects"), 1, "{fv}");
    assert_eq!(fv["goodbye"], true, "{fv}");
    assert_eq!(n(&sv, "restarts"), 1, "{sv}");
    assert_eq!(n(&sv, "resumed_by_token"), 1, "{sv}");
}

#[test]
fn a_context_subset_is_a_stream_that_verifies() {
    let deadline = Instant::now() + DEADLINE;
    let d = TempDir::new("subset");
    let (file, bytes) = two_streams(&d);
    let sp = spans(&bytes);
    let name = sp[1].name.clone();
    assert!(name.starts_with("snapshot:"), "{name}");
    let (mut s, addr) = serve(&file, "127.0.0.1:0", &[], deadline);
    let out = d.path("out.stream");
    let fv = fetch(&addr.to_string(), &out, &["--contexts", &name]).json(deadline);
    s.json(deadline);
    let want = &bytes[sp[1].offset as usize..(sp[1].offset + sp[1].len) as usize];
    assert_same_file(&out, want);
    assert_eq!(fv["contexts"], serde_json::json!([name]), "{fv}");
    assert_eq!(n(&fv, "bytes"), want.len() as u64, "{fv}");

    let mut v = start("verify", &["verify", out.to_str().unwrap(), "--json"]);
    let vv = v.json(deadline);
    assert_eq!(n(&vv, "streams"), 1, "{vv}");
    assert_eq!(n(&vv, "bytes"), want.len() as u64, "{vv}");
}

#[test]
fn an_unknown_context_name_fails_in_one_line_naming_the_offered_ones() {
    let deadline = Instant::now() + DEADLINE;
    let d = TempDir::new("unknown");
    let (file, bytes) = two_streams(&d);
    let (_s, addr) = serve(&file, "127.0.0.1:0", &[], deadline);
    let out = d.path("out.stream");
    let mut f = fetch(&addr.to_string(), &out, &["--contexts", "snapshot:nope"]);
    let (status, stdout, stderr) = f.wait(deadline);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stdout.is_empty(), "{stdout:?}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("proto-stream: error: "), "{stderr}");
    assert!(stderr.contains("\"snapshot:nope\""), "{stderr}");
    for (i, s) in spans(&bytes).iter().enumerate() {
        assert!(
            stderr.contains(&format!("{} ({})", s.name, i + 1)),
            "{stderr}"
        );
    }
}

// ------------------------------------------- a real sender restart

/// A TCP relay to `upstream`. Its first connection carries at most
/// `budget` bytes from the server; then it holds (`holding`) until `cut`,
/// and closes both ends. Later connections are relayed freely.
struct Relay {
    addr: SocketAddr,
    holding: Arc<AtomicBool>,
    cut: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut.store(true, Ordering::SeqCst);
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    limit: Option<(u64, Arc<AtomicBool>, Arc<AtomicBool>)>,
) {
    let mut buf = vec![0u8; 16 << 10];
    let mut left = limit.as_ref().map_or(u64::MAX, |l| l.0);
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let k = match from.read(&mut buf[..want]) {
            Ok(0) | Err(_) => break,
            Ok(k) => k,
        };
        if to.write_all(&buf[..k]).is_err() {
            break;
        }
        left -= k as u64;
    }
    if let Some((_, holding, cut)) = limit {
        holding.store(true, Ordering::SeqCst);
        while !cut.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = from.shutdown(Shutdown::Both);
    }
    let _ = to.shutdown(Shutdown::Both);
}

fn relay(upstream: SocketAddr, budget: u64) -> Relay {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let r = Relay {
        addr: l.local_addr().unwrap(),
        holding: Arc::new(AtomicBool::new(false)),
        cut: Arc::new(AtomicBool::new(false)),
        stop: Arc::new(AtomicBool::new(false)),
    };
    let (holding, cut, stop) = (r.holding.clone(), r.cut.clone(), r.stop.clone());
    std::thread::spawn(move || {
        let mut conns = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let client = match l.accept() {
                Ok((c, _)) => c,
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                }
            };
            let _ = client.set_nonblocking(false);
            let Ok(server) = TcpStream::connect(upstream) else {
                continue;
            };
            conns += 1;
            let limit = (conns == 1).then(|| (budget, holding.clone(), cut.clone()));
            let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || pump(client, server, None));
            std::thread::spawn(move || pump(s2, c2, limit));
        }
    });
    r
}

#[test]
fn a_serve_process_killed_mid_transfer_is_replaced_and_the_fetch_resumes_from_its_token() {
    let deadline = Instant::now() + DEADLINE;
    let d = TempDir::new("restart");
    let (file, bytes) = two_streams(&d);
    let flags = ["--window", "32768", "--token-every", "4096"];
    let (mut a, port) = serve(&file, "127.0.0.1:0", &flags, deadline);
    // The fetch reaches serve A through a relay that stops after this
    // many bytes from A: A is killed while the transfer is under way.
    let budget = (bytes.len() as u64 / 2).min(400_000);
    let r = relay(port, budget);
    let out = d.path("out.stream");
    let mut f = fetch(&r.addr.to_string(), &out, &[]);
    // Held, and the fetch has acknowledged (and so written) units: it has
    // received a checkpoint token (one every 4 KiB, acks every 8 KiB).
    while !(r.holding.load(Ordering::SeqCst) && std::fs::metadata(&out).map_or(0, |m| m.len()) > 0)
    {
        assert!(Instant::now() < deadline, "the transfer never got going");
        assert!(f.child.try_wait().unwrap().is_none(), "fetch exited early");
        std::thread::sleep(Duration::from_millis(5));
    }
    let had = std::fs::metadata(&out).unwrap().len();
    assert!(had < bytes.len() as u64);
    a.child.kill().unwrap(); // SIGKILL
    let (status, _, _) = a.wait(deadline);
    assert!(!status.success());

    // Serve B on the same port, then let the fetch see the connection
    // break: it reconnects (through the relay) to B.
    let (mut b, again) = serve(&file, &port.to_string(), &flags, deadline);
    assert_eq!(again, port);
    r.cut.store(true, Ordering::SeqCst);

    let fv = f.json(deadline);
    let bv = b.json(deadline);
    assert_same_file(&out, &bytes);
    assert_eq!(n(&fv, "resumed_by_token"), 1, "{fv}");
    assert!(n(&fv, "reconnects") >= 1, "{fv}");
    assert_eq!(fv["goodbye"], true, "{fv}");
    assert_eq!(n(&bv, "resumed_by_token"), 1, "{bv}");
    assert_eq!(n(&bv, "connections"), 1, "{bv}");
    // B sent only what the fetch lacked (from its last token on).
    assert!(n(&bv, "bytes_sent") < bytes.len() as u64, "{bv}");
}

/// The shipped native stream (data commands over 64 KiB) through `serve`
/// and `fetch` with drops on both sides, then with the sender killed once:
/// the fetched file is the stream, byte for byte, and verifies.
#[test]
fn serve_and_fetch_a_native_stream() {
    let deadline = Instant::now() + DEADLINE;
    let d = TempDir::new("native");
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/native/data-v1.stream");
    let bytes = std::fs::read(&file).unwrap();
    for extra in [
        &["--drop-every", "200000"][..],
        &["--kill-sender-after", "200000", "--token-every", "4096"][..],
    ] {
        let (mut s, addr) = serve(&file, "127.0.0.1:0", extra, deadline);
        let out = d.path("out.stream");
        let fv = fetch(&addr.to_string(), &out, &["--drop-every", "230000"]).json(deadline);
        let sv = s.json(deadline);
        assert_same_file(&out, &bytes);
        assert_eq!(n(&fv, "bytes"), bytes.len() as u64, "{fv}");
        assert!(n(&fv, "reconnects") >= 1, "{fv}");
        if extra[0] == "--kill-sender-after" {
            assert_eq!(n(&sv, "restarts"), 1, "{sv}");
            assert_eq!(n(&fv, "resumed_by_token"), 1, "{fv}");
        }
        let v = start("verify", &["verify", "--json", out.to_str().unwrap()]).json(deadline);
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(fv["contexts"].as_array().unwrap().len(), 1, "{fv}");
    }
}
