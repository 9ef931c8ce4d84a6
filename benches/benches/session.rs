//! Sessions (`proto_stream::session`): what a reconnect sends again, and
//! the throughput of a whole transfer over TCP on 127.0.0.1 beside a plain
//! copy of the same bytes through a local socket, in the same run.
//!
//! - `session/resend` (the sans-IO `proto_session::replay::Sender` with
//!   the server's default window, 4 MiB / 16k units, over the units of the
//!   large-data stream): half-way through the stream the window is full and
//!   transmitted; the receiver has acknowledged its first half and received
//!   a quarter more (not yet acknowledged); the connection drops with the
//!   last quarter in flight. Measured: `reconnect` to the receiver's last
//!   seq, then every unit it sends again copied into a connection buffer.
//!   Printed once, from the API: bytes sent again / bytes that were in
//!   flight (transmitted, never received) — must be 1.0 — and bytes sent
//!   again / stream length.
//! - `session/loopback` (`Throughput::Bytes`, the stream's length): a
//!   `Server` (default config, the stream in memory) in a thread serving
//!   one connection per iteration, a `Fetcher` writing into `io::sink()`,
//!   both sockets `TCP_NODELAY` as the CLI sets them. Every unit is
//!   checked (its CRC) by the fetcher before it is taken, and commands of
//!   4 KiB and more by the server's emitter as well, in the pass that
//!   copies them (the CRC of their DATA frames is derived from theirs;
//!   shorter ones are left to the fetcher: `Emitter::set_unchecked_below`);
//!   every frame carries a CRC of its own,
//!   and every unit is acknowledged.
//! - `session/plain-copy`: the peer: a thread `write_all`s the same bytes in
//!   256 KiB chunks to a local TCP socket, the bench thread reads them into
//!   a 256 KiB buffer until EOF.
//!
//! Group `session-small`: `loopback` and `plain-copy` again, over the
//! small-files stream (281,005 commands of about 100 bytes each), where the
//! session's cost per unit shows.
//!
//! Input of group `session`: `big-v2.stream` from the perf directory when
//! present (512 MiB; not with `PROTO_STREAM_BENCH_SMALL=1`), else a synthetic
//! large-data stream of 64 MiB (`synthetic_large`, the same shape). Of group
//! `session-small`: `small-v2.stream` when present, else its synthetic twin
//! (`synthetic_small`). See the `proto-stream-benches` library.

use std::hint::black_box;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, SamplingMode, Throughput};
use proto_btrfs::{Event, StreamDecoder};
use proto_session::replay::Sender;
use proto_stream::session::{FetchConfig, Fetcher, Server, ServerConfig};
use proto_stream_benches::{
    count_commands, large_input, perf_dir, small_input, small_run, synthetic_large, Input, Source,
    LARGE_DATA_BYTES_SMALL,
};

const CHUNK: usize = 256 * 1024;

/// Criterion's directory, as `benches/ratios.sh` finds it:
/// `$CARGO_TARGET_DIR/criterion`, else the workspace's `target/criterion`.
fn criterion_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("criterion"),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/criterion"),
    }
}

/// `big-v2.stream` when present (and not a CI-sized run), else 64 MiB of
/// synthetic large data.
fn input() -> Input {
    if !small_run() && perf_dir().join("big-v2.stream").exists() {
        let input = large_input();
        if matches!(input.source, Source::Real(_)) {
            return input;
        }
    }
    let bytes = synthetic_large(LARGE_DATA_BYTES_SMALL);
    Input {
        source: Source::Synthetic,
        commands: count_commands(&bytes),
        bytes,
    }
}

/// The session's units: each stream header and each command.
fn units(bytes: &[u8]) -> Vec<&[u8]> {
    let mut dec = StreamDecoder::new();
    let mut rest = bytes;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let n = match dec.decode(rest).expect("a valid stream") {
            Event::Stream { consumed, .. } | Event::Command { consumed, .. } => consumed,
            Event::NeedMore { .. } => panic!("the stream is cut"),
        };
        out.push(&rest[..n]);
        rest = &rest[n..];
    }
    out
}

/// The sender when the connection drops, the receiver's last seq, and the
/// bytes that were in flight (transmitted after it).
fn dropped(units: &[&[u8]]) -> (Sender, u64, u64) {
    let limits = ServerConfig::default().window;
    // Half-way through: every unit before is acknowledged.
    let start = units.len() / 2;
    let mut tx = Sender::new(limits, start as u64);
    let mut next = start;
    while tx.has_room() && next < units.len() {
        tx.push(units[next]).expect("room");
        next += 1;
    }
    let mut transmitted = Vec::new();
    while let Some((seq, b)) = tx.next_to_send() {
        transmitted.push((seq, b.len() as u64));
    }
    let held = transmitted.len() as u64;
    let start = start as u64;
    // The receiver acknowledged the first half of the window and received a
    // quarter more; the last quarter was in flight.
    let acked = start + held / 2;
    tx.ack(acked).expect("acked");
    let received = acked + held / 4;
    let in_flight = transmitted
        .iter()
        .filter(|(seq, _)| *seq > received)
        .map(|(_, n)| n)
        .sum();
    (tx, received, in_flight)
}

/// Reconnect, then every unit sent again copied into `conn`; returns the
/// bytes sent again.
fn resend(tx: &mut Sender, received: u64, conn: &mut Vec<u8>) -> u64 {
    let r = tx.reconnect(received).expect("reconnect");
    conn.clear();
    for _ in 0..r.messages {
        let (_, b) = tx.next_to_send().expect("a unit to send again");
        conn.extend_from_slice(b);
    }
    black_box(&conn[..]);
    conn.len() as u64
}

fn resend_bench(c: &mut Criterion, input: &Input) {
    let units = units(&input.bytes);
    let (tx, received, in_flight) = dropped(&units);
    let (held_units, held_bytes) = tx.unacked();
    let mut probe = tx.clone();
    let r = probe.reconnect(received).expect("reconnect");
    let mut conn = Vec::new();
    let resent = resend(&mut tx.clone(), received, &mut conn);
    assert_eq!(
        resent, r.bytes,
        "the bytes sent again are the ones announced"
    );
    let figures = format!(
        "resent bytes / in-flight bytes     {} / {in_flight} = {:.3} (must be 1.0)\n\
         resent bytes / stream length       {} / {} = {:.5}\n\
         window at the drop                 {held_units} units, {held_bytes} bytes unacknowledged\n\
         received, unacknowledged, dropped  {} units\n",
        r.bytes,
        r.bytes as f64 / in_flight as f64,
        r.bytes,
        input.bytes.len(),
        r.bytes as f64 / input.bytes.len() as f64,
        r.dropped,
    );
    for line in figures.lines() {
        eprintln!("session/resend: {line}");
    }
    // For benches/ratios.sh, beside criterion's estimates.
    let dir = criterion_dir().join("session");
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::write(
            dir.join("resend-figures.txt"),
            format!("{}\n{figures}", input.describe()),
        );
    }
    let mut g = c.benchmark_group("session");
    g.sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g.bench_function("resend", |b| {
        b.iter_batched_ref(
            || tx.clone(),
            |tx| resend(tx, received, &mut conn),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// A thread serving every connection of `listener` with `serve` until
/// `stop` is set (then one more connection wakes it).
struct Peer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Peer {
    fn spawn(mut serve: impl FnMut(TcpStream) + Send + 'static) -> io::Result<Peer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(conn) = conn {
                    serve(conn);
                }
            }
        });
        Ok(Peer {
            addr,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `loopback` beside `plain-copy` over `input`, in criterion group `group`.
fn loopback_bench(c: &mut Criterion, group: &str, input: &Input) {
    let len = input.bytes.len();
    let mut server =
        Server::from_bytes(input.bytes.clone(), ServerConfig::default()).expect("the stream");
    let session = Peer::spawn(move |conn| {
        let _ = conn.set_nodelay(true);
        server.serve(conn).expect("a whole transfer");
    })
    .expect("listen");
    let bytes: Arc<[u8]> = input.bytes.clone().into();
    let plain = Peer::spawn(move |mut conn| {
        for c in bytes.chunks(CHUNK) {
            conn.write_all(c).expect("write");
        }
    })
    .expect("listen");

    let fetch = |addr| {
        let conn = TcpStream::connect(addr).expect("connect");
        conn.set_nodelay(true).expect("nodelay");
        let mut f = Fetcher::new(io::sink(), FetchConfig::default());
        f.fetch(conn).expect("fetch");
        assert!(f.done());
        f.stats().receive.bytes_delivered
    };
    let mut buf = vec![0u8; CHUNK];
    let mut copy = |addr| {
        let mut conn = TcpStream::connect(addr).expect("connect");
        let mut n = 0u64;
        loop {
            match conn.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => n += k as u64,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("read: {e}"),
            }
        }
        n
    };
    assert_eq!(fetch(session.addr), len as u64);
    assert_eq!(copy(plain.addr), len as u64);

    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Bytes(len as u64))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));
    g.bench_function("loopback", |b| b.iter(|| fetch(session.addr)));
    g.bench_function("plain-copy", |b| b.iter(|| copy(plain.addr)));
    g.finish();
}

fn session(c: &mut Criterion) {
    let input = input();
    eprintln!("session: {}", input.describe());
    resend_bench(c, &input);
    loopback_bench(c, "session", &input);
    drop(input);
    let small = small_input();
    eprintln!("session-small: {}", small.describe());
    loopback_bench(c, "session-small", &small);
}

criterion_group!(benches, session);
criterion_main!(benches);
