//! Sessions over REAL TCP on 127.0.0.1: every kernel stream (and full +
//! incremental concatenated, one context each) served by a [`Server`] and
//! fetched by a [`Fetcher`] through connections that drop every N bytes on
//! either side, with windows small enough that acks and back-pressure
//! matter; context subsets by name and by id; senders that forget their
//! transfer (with and without a checkpoint token at the receiver); and
//! hostile peers on both sides, each refused with its exact typed error
//! here and the right `REFUSE` code on the wire.
//!
//! Every socket has read and write timeouts and every peer runs in a thread
//! joined with a deadline: a hung test fails, it does not hang.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use proto_stream::btrfs::checkpoint::WRITE_SPLIT;
use proto_stream::btrfs::Btrfs;
use proto_stream::btrfs::{BtrfsStream, StreamReader};
use proto_stream::checkpoint::{list_streams, Emitter, Format, TokenError, Units};
use proto_stream::header::{
    encode_selection, Context, Endian, Error as HeaderError, V1Header, VersionRange, KIT_VERSIONS,
};
use proto_stream::session::replay::{Limits, ReplayError};
use proto_stream::session::{
    attr, frame, Code, DropEvery, FetchConfig, FetchStats, Fetcher, ResumeError, Resumed, Server,
    ServerConfig, ServerStats, SessionError, FEATURE_REPLAY, KNOWN_FEATURES, SESSION_MAGIC,
    SESSION_PROFILE,
};
use proto_stream::tlv::{decode_command, encode_command, AttrValue, ErrorKind, Value};

/// Read and write timeout of every socket.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one transfer (or one hostile exchange) may take.
const DEADLINE: Duration = Duration::from_secs(90);
/// Handshake bytes (both fixed headers, HELLOs, SELECT with a token,
/// ACCEPT) and frame overhead, with a margin: a connection that drops after
/// fewer than the largest unit plus this many bytes may never deliver it.
const SLACK: u64 = 1024;

// ---------------------------------------------------------------- fixtures

#[path = "support/fixtures.rs"]
mod fixtures;

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn testdata() -> PathBuf {
    fixtures::testdata()
}

/// Full + incremental streams concatenated, of every set (the shipped one,
/// and the shared one when present): files with two contexts.
fn multi() -> Vec<(String, Vec<u8>)> {
    let pairs: &[(&str, &str)] = &[
        ("full-v1.stream", "incr-v1.stream"),
        ("full-v2.stream", "incr-v2.stream"),
    ];
    let mut out = Vec::new();
    for d in fixtures::sets() {
        for (a, b) in pairs {
            let mut bytes = read(&d, a);
            bytes.extend(read(&d, b));
            out.push((format!("{}: {a}+{b}", fixtures::label(&d)), bytes));
        }
    }
    out
}

/// Every stream of every set, then the concatenations.
fn fixtures() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for d in fixtures::sets() {
        for p in fixtures::streams_in(&d) {
            let name = p.file_name().unwrap().to_string_lossy();
            out.push((format!("{}: {name}", fixtures::label(&d)), read(&d, &name)));
        }
    }
    out.extend(multi());
    assert!(out.len() >= 8, "too few fixtures");
    out
}

/// The unit lengths of a stream file (stream headers and commands).
fn units(bytes: &[u8]) -> Vec<usize> {
    let mut p = Btrfs.units(bytes);
    let mut out = Vec::new();
    while let Some(u) = p.current().unwrap() {
        out.push(u.bytes.len());
        p.advance().unwrap();
    }
    out
}

fn largest(bytes: &[u8]) -> u64 {
    units(bytes).into_iter().max().unwrap() as u64
}

/// Parses every stream of `bytes` (CRCs included) and returns how many.
#[track_caller]
fn verify(bytes: &[u8]) -> u64 {
    let mut r = StreamReader::new(bytes).unwrap();
    let mut streams = 1;
    loop {
        while r.next_command().unwrap().is_some() {}
        match r.next_stream().unwrap() {
            Some(_) => streams += 1,
            None => return streams,
        }
    }
}

// ---------------------------------------------------------------- plumbing

/// A thread whose result is awaited with a deadline.
struct Bounded<T> {
    name: String,
    rx: mpsc::Receiver<std::thread::Result<T>>,
}

fn spawn<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> Bounded<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            let _ = tx.send(r);
        })
        .unwrap();
    Bounded {
        name: name.to_string(),
        rx,
    }
}

impl<T> Bounded<T> {
    #[track_caller]
    fn join(self, deadline: Instant) -> T {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.rx.recv_timeout(left) {
            Ok(Ok(v)) => v,
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(_) => panic!("{} did not finish in time: hung", self.name),
        }
    }
}

fn setup(s: &TcpStream) {
    s.set_nonblocking(false).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
}

/// A listener on 127.0.0.1 (free port) whose accepts give up at a deadline.
fn listen() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

#[track_caller]
fn accept(l: &TcpListener, deadline: Instant) -> TcpStream {
    loop {
        match l.accept() {
            Ok((s, _)) => {
                setup(&s);
                return s;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "no connection came: hung");
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    setup(&s);
    Ok(s)
}

// ------------------------------------------------------- transfer harness

#[derive(Clone)]
struct Plan {
    server: ServerConfig,
    fetch: FetchConfig,
    /// `DropEvery` on the server's connections (0: never).
    server_drop: u64,
    /// `DropEvery` on the fetcher's connections (0: never).
    client_drop: u64,
    /// Before every k-th connection (after the first) the server forgets
    /// its transfer, once it has sent a token.
    forget_every: Option<u64>,
}

impl Plan {
    fn new(server: ServerConfig) -> Plan {
        Plan {
            server,
            fetch: FetchConfig::default(),
            server_drop: 0,
            client_drop: 0,
            forget_every: None,
        }
    }
}

struct Outcome {
    out: Vec<u8>,
    fetch: FetchStats,
    done: bool,
    finished: bool,
    server: ServerStats,
    /// The server's `bytes_resent` on each connection.
    resent_per_conn: Vec<u64>,
    forgot: u64,
}

/// Serves `file` over as many connections as it takes; the fetcher
/// reconnects after every retryable failure (like the CLI's `fetch`).
fn transfer(what: &str, file: &[u8], plan: Plan) -> Outcome {
    let deadline = Instant::now() + DEADLINE;
    let (listener, addr) = listen();
    let bytes = file.to_vec();
    let p = plan.clone();
    let what_s = what.to_string();
    let server = spawn(&format!("server {what}"), move || {
        let mut server = Server::from_bytes(bytes, p.server).unwrap();
        let mut per = Vec::new();
        let mut forgot = 0;
        for n in 0u64.. {
            let conn = accept(&listener, deadline);
            if let Some(k) = p.forget_every {
                if n > 0 && n % k == 0 && server.stats().send.tokens_sent > 0 {
                    server.forget();
                    forgot += 1;
                }
            }
            let before = server.stats().send.bytes_resent;
            let r = server.serve(DropEvery::new(&conn, p.server_drop));
            per.push(server.stats().send.bytes_resent - before);
            drop(conn);
            match r {
                Ok(_) => break,
                Err(e) if e.retryable() => {}
                Err(e) => panic!("{what_s}: server, connection {n}: {e}"),
            }
        }
        (server.stats(), per, forgot)
    });
    let p = plan;
    let what_s = what.to_string();
    let client = spawn(&format!("fetcher {what}"), move || {
        let mut f = Fetcher::new(Vec::new(), p.fetch);
        let mut stalls = 0;
        loop {
            assert!(Instant::now() < deadline, "{what_s}: fetch: hung");
            let conn = match connect(addr) {
                Ok(c) => c,
                // The server is gone after its goodbye; one lost on the
                // way is fine once everything is acknowledged.
                Err(_) if f.finished() => break,
                Err(e) => panic!("{what_s}: connect: {e}"),
            };
            let before = f.received();
            let r = f.fetch(DropEvery::new(&conn, p.client_drop));
            drop(conn);
            match r {
                Ok(()) => break,
                Err(e) if e.retryable() => {
                    if f.received() > before || f.finished() {
                        stalls = 0;
                    } else {
                        stalls += 1;
                        assert!(stalls < 100, "{what_s}: no progress: {e}");
                    }
                }
                Err(e) => panic!("{what_s}: fetch: {e}"),
            }
        }
        let (stats, done, finished) = (f.stats(), f.done(), f.finished());
        (f.into_inner(), stats, done, finished)
    });
    let (out, fetch, done, finished) = client.join(deadline);
    let (server, resent_per_conn, forgot) = server.join(deadline);
    Outcome {
        out,
        fetch,
        done,
        finished,
        server,
        resent_per_conn,
        forgot,
    }
}

#[track_caller]
fn assert_same(what: &str, got: &[u8], want: &[u8]) {
    if got != want {
        let at = got
            .iter()
            .zip(want)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        panic!(
            "{what}: output differs from the stream at byte {at} ({} bytes, {} expected)",
            got.len(),
            want.len()
        );
    }
}

fn config(window: Limits) -> ServerConfig {
    ServerConfig {
        window,
        token_every: 16 << 10,
        ..ServerConfig::default()
    }
}

const WINDOWS: [Limits; 2] = [
    Limits {
        max_bytes: 8 << 10,
        max_messages: 4,
    },
    Limits {
        max_bytes: 64 << 10,
        max_messages: 64,
    },
];

/// Drop sizes for a stream: a few KiB where its units allow, else just
/// above its largest unit plus the handshake; all below the file's length
/// so that connections do drop.
fn drop_sizes(file_len: u64, largest: u64) -> Vec<u64> {
    let min = largest + SLACK;
    let mut v: Vec<u64> = [1536, 4096, 10_000, min, min + 4099, 2 * min + 1]
        .iter()
        .map(|&s| s.max(min))
        .filter(|&s| s < file_len)
        .collect();
    v.sort_unstable();
    v.dedup();
    v.truncate(3);
    if v.is_empty() {
        v.push(min);
    }
    v
}

/// Transfers every fixture through drops on one side, at several sizes and
/// windows, checking the output and the resend accounting.
fn drops_on(side: &str) {
    let (mut runs, mut resent) = (0, 0);
    for (name, file) in fixtures() {
        let big = largest(&file);
        let n_units = units(&file).len() as u64;
        for every in drop_sizes(file.len() as u64, big) {
            for window in WINDOWS {
                let what = format!("{name}, {side} drops every {every}, window {window:?}");
                let mut plan = Plan::new(config(window));
                if side == "server" {
                    plan.server_drop = every;
                } else {
                    plan.client_drop = every;
                }
                let o = transfer(&what, &file, plan);
                assert_same(&what, &o.out, &file);
                // A goodbye cut off on the client side is not sent again:
                // the sender has completed.
                assert!(o.finished, "{what}");
                assert!(o.done || side == "client", "{what}: no goodbye");
                let (f, s) = (o.fetch, o.server);
                assert!(f.reconnects > 0, "{what}: no reconnect");
                assert_eq!(f.receive.units, n_units, "{what}");
                assert_eq!(f.receive.bytes_delivered, file.len() as u64, "{what}");
                // Nothing the receiver had crossed the wire again.
                assert_eq!(f.receive.duplicates, 0, "{what}");
                assert_eq!(f.receive.bytes_received, file.len() as u64, "{what}");
                assert_eq!(f.receive.resumed_by_token, 0, "{what}");
                assert_eq!(
                    s.send.bytes_sent - file.len() as u64,
                    s.send.bytes_resent,
                    "{what}: every byte sent once, plus the resends"
                );
                // Every reconnect resumed by seq, but those that found the
                // sender gone after a goodbye lost on the way.
                assert!(s.send.resumed_by_seq <= f.reconnects, "{what}");
                assert!(f.reconnects <= s.send.resumed_by_seq + 2, "{what}");
                assert_eq!(s.refused, 0, "{what}");
                // The receiver is told what is sent again; what actually
                // goes out again may be cut short by the next drop.
                assert!(f.receive.bytes_resent >= s.send.bytes_resent, "{what}");
                let bound = window.max_bytes as u64 + big;
                let worst = o.resent_per_conn.iter().copied().max().unwrap_or(0);
                assert!(
                    worst <= bound,
                    "{what}: {worst} bytes resent on one connection, more than the window bound {bound}"
                );
                if bound < file.len() as u64 {
                    assert!(worst < file.len() as u64, "{what}: the whole stream again");
                }
                runs += 1;
                resent += s.send.bytes_resent;
            }
        }
    }
    assert!(runs >= 8);
    // Units cut off by a drop were sent again.
    assert!(resent > 0);
}

#[test]
fn drops_on_the_server_side_resend_only_the_window() {
    drops_on("server");
}

#[test]
fn drops_on_the_client_side_resend_only_the_window() {
    drops_on("client");
}

// ---------------------------------------------------------------- contexts

#[test]
fn each_context_by_name_and_by_id_is_exactly_its_stream() {
    for (name, file) in multi() {
        let mut src = &file[..];
        let spans = list_streams(&Btrfs, &mut src).unwrap();
        assert_eq!(spans.len(), 2, "{name}");
        let offered = Server::from_bytes(file.clone(), ServerConfig::default())
            .unwrap()
            .contexts()
            .to_vec();
        assert_eq!(offered.len(), 2, "{name}");
        for (i, span) in spans.iter().enumerate() {
            let c = &offered[i];
            assert_eq!(c.id, i as u32 + 1);
            assert_eq!(c.name, span.name);
            let want = &file[span.offset as usize..(span.offset + span.len) as usize];
            for (how, key, drop) in [
                ("name", c.name.clone(), 0),
                ("id", c.id.to_string(), 0),
                (
                    "name, client drops",
                    c.name.clone(),
                    largest(want) + 4 * SLACK,
                ),
            ] {
                let what = format!("{name}: context {} by {how}", c.name);
                let mut plan = Plan::new(config(WINDOWS[1]));
                plan.fetch.contexts = vec![key];
                plan.client_drop = drop;
                let o = transfer(&what, &file, plan);
                assert_same(&what, &o.out, want);
                assert!(o.done, "{what}");
                for c in BtrfsStream::parse(&o.out).unwrap().commands() {
                    c.unwrap();
                }
                assert_eq!(verify(&o.out), 1, "{what}");
            }
        }
        // Both, named in the other order: the file's order.
        let what = format!("{name}: contexts 2,1");
        let mut plan = Plan::new(config(WINDOWS[1]));
        plan.fetch.contexts = vec!["2".into(), offered[0].name.clone()];
        let o = transfer(&what, &file, plan);
        assert_same(&what, &o.out, &file);
        assert_eq!(verify(&o.out), 2, "{what}");
    }
}

// ---------------------------------------------------------- sender restart

/// The sender is killed (forgets its window and position) after
/// `kill_after` payload bytes, once; the receiver re-arms it from its
/// token.
#[test]
fn a_killed_sender_resumes_from_the_receivers_token() {
    for (name, file) in fixtures() {
        let big = largest(&file);
        let window = Limits {
            max_bytes: (file.len() / 16).max(1024),
            max_messages: 8,
        };
        // Past one full window: the receiver has acknowledged units (and
        // so holds some) before the kill.
        let kill = window.max_bytes as u64 + big + 1;
        if kill >= file.len() as u64 {
            continue;
        }
        let what = format!("{name}: killed after {kill} bytes");
        let plan = Plan::new(ServerConfig {
            window,
            token_every: 1,
            kill_after: Some(kill),
            ..ServerConfig::default()
        });
        let o = transfer(&what, &file, plan);
        assert_same(&what, &o.out, &file);
        assert!(o.done, "{what}");
        assert_eq!(o.server.restarts, 1, "{what}");
        assert_eq!(o.fetch.reconnects, 1, "{what}");
        assert_eq!(o.fetch.receive.resumed_by_token, 1, "{what}");
        assert_eq!(o.server.send.resumed_by_token, 1, "{what}");
        // A token after every unit: the re-armed sender skipped at most the
        // units after the last token that arrived, not the whole prefix.
        assert!(
            o.server.send.units_skipped <= 8,
            "{what}: {} units skipped",
            o.server.send.units_skipped
        );
        assert_eq!(o.fetch.receive.duplicates, 0, "{what}");
    }
}

/// The sender forgets its transfer between connections (as a restarted
/// process would) while connections drop on the client side.
#[test]
fn a_sender_that_forgets_between_connections_resumes_from_tokens() {
    let mut cases = multi();
    for d in fixtures::sets() {
        let name = format!("{}: full-v1.stream", fixtures::label(&d));
        cases.push((name, read(&d, "full-v1.stream")));
    }
    for (name, file) in cases {
        let mut src = &file[..];
        let spans = list_streams(&Btrfs, &mut src).unwrap();
        // All of it, forgetting before every third connection; and the last
        // context alone, forgetting before every connection.
        let mut runs = vec![(3, vec![], file.clone())];
        if spans.len() > 1 {
            let s = &spans[spans.len() - 1];
            let want = file[s.offset as usize..(s.offset + s.len) as usize].to_vec();
            runs.push((1, vec![spans.len().to_string()], want));
        }
        for (k, contexts, want) in runs {
            let mut plan = Plan::new(ServerConfig {
                token_every: 8 << 10,
                ..config(WINDOWS[1])
            });
            let min = largest(&want) + SLACK;
            plan.client_drop = if (want.len() as u64) < 8 * min {
                min
            } else {
                min.max(96 << 10)
            };
            // A file too small for several connections between forgets
            // (the streams of the shipped set) forgets before every one.
            let k = if want.len() as u64 >= 4 * plan.client_drop {
                k
            } else {
                1
            };
            plan.forget_every = Some(k);
            plan.fetch.contexts = contexts.clone();
            let what =
                format!("{name}: forget before every connection {k} apart, contexts {contexts:?}");
            let o = transfer(&what, &file, plan);
            assert_same(&what, &o.out, &want);
            assert!(o.forgot >= 1, "{what}: never forgot");
            assert!(o.fetch.receive.resumed_by_token >= 1, "{what}");
            assert_eq!(
                o.fetch.receive.resumed_by_token, o.server.send.resumed_by_token,
                "{what}"
            );
            assert_eq!(o.fetch.receive.duplicates, 0, "{what}");
            verify(&o.out);
        }
    }
}

/// Eight small btrfs streams concatenated (eight contexts, units of at
/// most 96 bytes): the server takes many units per emitter fill, across
/// stream headers and END commands. Connections that drop inside a batch,
/// on either side, send again exactly what the receiver lacks; a sender
/// that forgets before every other connection is re-armed from the
/// receiver's token (one unit per fill until the next stream header, then
/// batches again). Every unit arrives once, the output is the file.
#[test]
fn small_units_batched_across_streams_survive_drops_and_restarts() {
    let one = read(&testdata(), "nodata-v2.stream");
    let file = one.repeat(8);
    let n_units = units(&file).len() as u64;
    let window = Limits {
        max_bytes: 8 << 10,
        max_messages: 256,
    };
    for (side, every, forget) in [
        ("server", 2500, None),
        ("client", 3001, None),
        ("client", 4000, Some(2)),
    ] {
        let what = format!("nodata-v2 x 8, {side} drops every {every}, forget {forget:?}");
        let mut plan = Plan::new(ServerConfig {
            token_every: 2048,
            ..config(window)
        });
        if side == "server" {
            plan.server_drop = every;
        } else {
            plan.client_drop = every;
        }
        plan.forget_every = forget;
        let o = transfer(&what, &file, plan);
        assert_same(&what, &o.out, &file);
        assert!(o.finished, "{what}");
        let (f, s) = (o.fetch, o.server);
        assert!(f.reconnects > 2, "{what}: {} reconnects", f.reconnects);
        assert_eq!(f.receive.units, n_units, "{what}");
        assert_eq!(f.receive.duplicates, 0, "{what}");
        if forget.is_some() {
            assert!(o.forgot > 0 && s.send.resumed_by_token > 0, "{what}");
            // Re-armed mid-stream, batches again after the next header.
            assert!(
                s.send.fills * 2 < s.send.units_sent,
                "{what}: {} fills for {} units",
                s.send.fills,
                s.send.units_sent
            );
            continue;
        }
        assert_eq!(
            s.send.bytes_sent - file.len() as u64,
            s.send.bytes_resent,
            "{what}: every byte sent once, plus the resends"
        );
        assert!(
            s.send.bytes_resent > 0,
            "{what}: nothing in flight at a drop"
        );
        assert!(
            s.send.fills * 4 < s.send.units_sent,
            "{what}: {} fills for {} units",
            s.send.fills,
            s.send.units_sent
        );
        let bound = window.max_bytes as u64 + largest(&file);
        let worst = o.resent_per_conn.iter().copied().max().unwrap_or(0);
        assert!(
            worst <= bound,
            "{what}: {worst} bytes resent on one connection"
        );
    }
}

/// Killed before the first token went out: the receiver has units but no
/// token, so the sender re-arms from the start and skips what it has.
#[test]
fn a_sender_killed_before_any_token_restarts_from_the_start_and_skips() {
    for (name, file) in fixtures() {
        let big = largest(&file);
        let window = Limits {
            max_bytes: (file.len() / 16).max(1024),
            max_messages: 8,
        };
        let kill = window.max_bytes as u64 + big + 1;
        if kill >= file.len() as u64 {
            continue;
        }
        let what = format!("{name}: killed after {kill} bytes, no token yet");
        let plan = Plan::new(ServerConfig {
            window,
            token_every: u64::MAX,
            kill_after: Some(kill),
            ..ServerConfig::default()
        });
        let o = transfer(&what, &file, plan);
        assert_same(&what, &o.out, &file);
        assert!(o.done, "{what}");
        assert_eq!(o.server.restarts, 1, "{what}");
        // Only the token after the last unit was ever made (by each
        // instance that got there).
        assert!(o.server.send.tokens_sent <= 2, "{what}");
        assert_eq!(o.fetch.receive.resumed_by_token, 1, "{what}");
        assert!(o.server.send.units_skipped > 0, "{what}: nothing skipped");
        assert_eq!(o.fetch.receive.duplicates, 0, "{what}");
    }
}

/// Fails the write of a BYE frame: the receiver gets every unit and the
/// FINISH, acknowledges them, and never hears the goodbye.
struct LoseBye<S>(S);

fn bye_frame() -> Vec<u8> {
    let mut v = Vec::new();
    encode_command(&SESSION_PROFILE, frame::BYE, &[], &mut v).unwrap();
    v
}

impl<S: Read> Read for LoseBye<S> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl<S: Write> Write for LoseBye<S> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.ends_with(&bye_frame()) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "fault injection: goodbye lost",
            ));
        }
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// The receiver has everything but the goodbye; the sender either kept
/// its transfer (seq resume: FINISH again) or restarted (re-armed from the
/// token after the last unit).
#[test]
fn a_lost_goodbye_then_a_reconnect_completes_with_or_without_a_restart() {
    let file = read(&testdata(), "incr-v2.stream");
    for restart in [false, true] {
        let what = format!("goodbye lost, sender restarted: {restart}");
        let deadline = Instant::now() + DEADLINE;
        let (listener, addr) = listen();
        let bytes = file.clone();
        let server = spawn("server", move || {
            let mut server = Server::from_bytes(bytes, ServerConfig::default()).unwrap();
            let conn = accept(&listener, deadline);
            let e = server.serve(LoseBye(&conn)).unwrap_err();
            assert!(e.retryable(), "{e}");
            drop(conn);
            if restart {
                server.forget();
            }
            let conn = accept(&listener, deadline);
            let served = server.serve(&conn).map_err(|e| e.to_string());
            (served, server.stats())
        });
        let client = spawn("fetcher", move || {
            let mut f = Fetcher::new(Vec::new(), FetchConfig::default());
            let e = f.fetch(connect(addr).unwrap()).unwrap_err();
            assert!(e.retryable(), "{e}");
            assert!(f.finished() && !f.done());
            let r = f.fetch(connect(addr).unwrap()).map_err(|e| e.to_string());
            let (stats, done) = (f.stats(), f.done());
            (r, stats, done, f.into_inner())
        });
        let (r, stats, done, out) = client.join(deadline);
        let (served, sstats) = server.join(deadline);
        assert_eq!(r, Ok(()), "{what}: fetcher");
        assert!(served.is_ok(), "{what}: server: {served:?}");
        assert!(done, "{what}");
        assert_same(&what, &out, &file);
        assert_eq!(stats.receive.resumed_by_token, u64::from(restart), "{what}");
        assert_eq!(sstats.send.resumed_by_token, u64::from(restart), "{what}");
        assert_eq!(sstats.send.resumed_by_seq, u64::from(!restart), "{what}");
        assert_eq!(stats.receive.units, units(&file).len() as u64, "{what}");
    }
}

// ------------------------------------------------------ raw frames on TCP

/// One side of a connection written by hand: frames read and written raw.
struct Raw {
    s: TcpStream,
    /// Bytes written (frames and fixed header).
    written: u64,
}

/// A decoded frame, owned.
#[derive(Debug)]
struct Frame {
    cmd: u16,
    attrs: Vec<(u16, Vec<u8>)>,
}

impl Frame {
    fn get(&self, ty: u16) -> Option<&[u8]> {
        self.attrs
            .iter()
            .find(|(t, _)| *t == ty)
            .map(|(_, v)| &v[..])
    }
    fn u64(&self, ty: u16) -> u64 {
        u64::from_le_bytes(self.get(ty).unwrap().try_into().unwrap())
    }
}

impl Raw {
    fn new(s: TcpStream) -> Raw {
        Raw { s, written: 0 }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).unwrap();
        self.written += bytes.len() as u64;
    }

    fn fixed(&mut self, magic: &[u8; 8], version: u32, compat: u32) {
        let mut h = magic.to_vec();
        h.extend(version.to_be_bytes());
        h.extend(compat.to_be_bytes());
        self.send(&h);
    }

    fn frame(&mut self, ty: u16, attrs: &[AttrValue<'_>]) -> usize {
        let mut v = Vec::new();
        encode_command(&SESSION_PROFILE, ty, attrs, &mut v).unwrap();
        self.send(&v);
        v.len()
    }

    /// The peer's fixed header: checks the magic, returns its range.
    fn read_fixed(&mut self) -> VersionRange {
        let mut h = [0u8; 16];
        self.s.read_exact(&mut h).unwrap();
        assert_eq!(&h[..8], SESSION_MAGIC);
        VersionRange {
            max: u32::from_be_bytes(h[8..12].try_into().unwrap()),
            min: u32::from_be_bytes(h[12..16].try_into().unwrap()),
        }
    }

    fn read_frame(&mut self) -> Frame {
        let mut h = [0u8; 10];
        self.s.read_exact(&mut h).unwrap();
        let len = u32::from_le_bytes(h[..4].try_into().unwrap()) as usize;
        let mut bytes = h.to_vec();
        bytes.resize(10 + len, 0);
        self.s.read_exact(&mut bytes[10..]).unwrap();
        let (c, n) = decode_command(&bytes, &SESSION_PROFILE, 0, 0).unwrap();
        assert_eq!(n, bytes.len());
        Frame {
            cmd: c.cmd(),
            attrs: c.attrs().map(|a| (a.ty(), a.value().to_vec())).collect(),
        }
    }

    /// Reads frames (skipping any of `skip`) until a REFUSE: checks its
    /// code, returns its message. Then the peer must close.
    #[track_caller]
    fn expect_refuse(&mut self, code: Code, skip: &[u16]) -> String {
        loop {
            let f = self.read_frame();
            if f.cmd == frame::REFUSE {
                let got = u16::from_le_bytes(f.get(attr::CODE).unwrap().try_into().unwrap());
                let message = String::from_utf8(f.get(attr::MESSAGE).unwrap().to_vec()).unwrap();
                assert_eq!(got, code.to_u16(), "REFUSE code; message: {message}");
                let mut rest = Vec::new();
                let _ = self.s.read_to_end(&mut rest);
                assert!(rest.is_empty(), "{} bytes after REFUSE", rest.len());
                return message;
            }
            assert!(
                skip.contains(&f.cmd),
                "{} frame ({}) before the REFUSE",
                frame::name(f.cmd),
                f.cmd
            );
        }
    }
}

fn hello(features: u64, required: u64, contexts: Vec<Context>) -> Vec<u8> {
    let h = V1Header {
        byte_order: Endian::Little,
        features_supported: features,
        features_required: required,
        stream_id: [7; 16],
        contexts,
    };
    let mut body = Vec::new();
    KIT_VERSIONS.entry(1).unwrap().write(&h, &mut body).unwrap();
    body
}

fn selection(ids: &[u32]) -> Vec<u8> {
    let mut v = Vec::new();
    encode_selection(ids, &mut v).unwrap();
    v
}

/// A hostile client's side of the handshake up to its HELLO: returns the
/// contexts the server offered.
fn client_hello(raw: &mut Raw) -> Vec<Context> {
    raw.fixed(SESSION_MAGIC, 1, 1);
    assert_eq!(raw.read_fixed(), VersionRange { min: 1, max: 1 });
    let f = raw.read_frame();
    assert_eq!(f.cmd, frame::HELLO);
    let opts = proto_stream::header::ReadOptions {
        known_features: KNOWN_FEATURES,
    };
    let (h, _) = KIT_VERSIONS
        .entry(1)
        .unwrap()
        .read(f.get(attr::BODY).unwrap(), 0, &opts)
        .unwrap();
    raw.frame(
        frame::HELLO,
        &[AttrValue::new(
            attr::BODY,
            Value::Bytes(&hello(KNOWN_FEATURES, FEATURE_REPLAY, vec![])),
        )],
    );
    h.contexts
}

fn select(raw: &mut Raw, sel: &[u8], received: u64, instance: [u8; 16], token: Option<&[u8]>) {
    let mut attrs = vec![
        AttrValue::new(attr::SELECTION, Value::Bytes(sel)),
        AttrValue::new(attr::RECEIVED, Value::U64(received)),
        AttrValue::new(attr::INSTANCE, Value::Uuid(instance)),
    ];
    if let Some(t) = token {
        attrs.push(AttrValue::new(attr::TOKEN, Value::Bytes(t)));
    }
    raw.frame(frame::SELECT, &attrs);
}

/// Runs `hostile` (which makes `conns` connections) against a server of
/// `file`, then a good fetch on the same server, which must succeed.
/// Returns the server's results of the hostile connections, what `hostile`
/// returned, and the server's stats.
fn against_server<T: Send + 'static>(
    file: &[u8],
    conns: usize,
    hostile: impl FnOnce(SocketAddr) -> T + Send + 'static,
) -> (Vec<Result<(), SessionError>>, T, ServerStats) {
    let deadline = Instant::now() + DEADLINE;
    let (listener, addr) = listen();
    let bytes = file.to_vec();
    let server = spawn("server", move || {
        let mut server = Server::from_bytes(
            bytes,
            ServerConfig {
                window: WINDOWS[1],
                ..ServerConfig::default()
            },
        )
        .unwrap();
        let mut results = Vec::new();
        for _ in 0..conns {
            let conn = accept(&listener, deadline);
            results.push(server.serve(&conn).map(|_| ()));
        }
        // And then a good one.
        let conn = accept(&listener, deadline);
        let good = server.serve(&conn).map_err(|e| e.to_string());
        (results, good, server.stats())
    });
    let t = spawn("hostile client", move || hostile(addr)).join(deadline);
    let good = spawn("good fetcher", move || {
        let mut f = Fetcher::new(Vec::new(), FetchConfig::default());
        f.fetch(connect(addr).unwrap()).map_err(|e| e.to_string())?;
        Ok::<_, String>(f.into_inner())
    })
    .join(deadline);
    let (results, served, stats) = server.join(deadline);
    assert!(
        served.is_ok(),
        "the good fetch after the hostile one: {served:?}"
    );
    assert_same("the good fetch after the hostile one", &good.unwrap(), file);
    (results, t, stats)
}

#[track_caller]
fn one_refusal(results: Vec<Result<(), SessionError>>, stats: &ServerStats) -> SessionError {
    let refused = results
        .iter()
        .filter(|r| r.as_ref().is_err_and(|e| !e.retryable()))
        .count();
    assert_eq!(stats.refused, refused as u64);
    let e = results.into_iter().last().unwrap().unwrap_err();
    assert!(!e.retryable(), "{e}");
    e
}

fn small() -> Vec<u8> {
    read(&testdata(), "incr-v2.stream")
}

fn two_contexts() -> Vec<u8> {
    multi().remove(0).1
}

#[test]
fn server_refuses_a_wrong_magic() {
    let (r, msg, stats) = against_server(&small(), 1, |addr| {
        let mut raw = Raw::new(connect(addr).unwrap());
        raw.fixed(b"XSESSION", 1, 1);
        raw.read_fixed();
        raw.expect_refuse(Code::Protocol, &[])
    });
    let e = one_refusal(r, &stats);
    assert!(
        matches!(&e, SessionError::Header(HeaderError::BadMagic { offset: 0, found, .. }) if found == b"XSESSION"),
        "{e:?}"
    );
    assert!(msg.contains("bad magic"), "{msg}");
}

#[test]
fn server_refuses_when_no_version_is_common() {
    let (r, msg, stats) = against_server(&small(), 1, |addr| {
        let mut raw = Raw::new(connect(addr).unwrap());
        raw.fixed(SESSION_MAGIC, 9, 7);
        raw.read_fixed();
        raw.expect_refuse(Code::Version, &[])
    });
    let e = one_refusal(r, &stats);
    assert!(
        matches!(
            e,
            SessionError::Header(HeaderError::NoCommonVersion {
                ours: VersionRange { min: 1, max: 1 },
                theirs: VersionRange { min: 7, max: 9 },
            })
        ),
        "{e:?}"
    );
    assert!(msg.contains("no common version"), "{msg}");
}

#[test]
fn server_refuses_an_unknown_required_feature() {
    let (r, msg, stats) = against_server(&small(), 1, |addr| {
        let mut raw = Raw::new(connect(addr).unwrap());
        raw.fixed(SESSION_MAGIC, 1, 1);
        raw.read_fixed();
        assert_eq!(raw.read_frame().cmd, frame::HELLO);
        let body = hello(KNOWN_FEATURES | 1 << 40, FEATURE_REPLAY | 1 << 40, vec![]);
        raw.frame(
            frame::HELLO,
            &[AttrValue::new(attr::BODY, Value::Bytes(&body))],
        );
        raw.expect_refuse(Code::Feature, &[])
    });
    let e = one_refusal(r, &stats);
    assert!(
        matches!(
            e,
            SessionError::Header(HeaderError::UnknownRequiredFeatures { unknown, .. }) if unknown == 1 << 40
        ),
        "{e:?}"
    );
    assert!(msg.contains("0x0000010000000000"), "{msg}");
}

#[test]
fn server_refuses_bad_context_selections() {
    let file = two_contexts();
    let mut five = selection(&[1, 2]);
    five[3] = 5; // declares 5 bytes
    five.truncate(9);
    type Check = fn(&HeaderError) -> bool;
    let cases: Vec<(&str, Vec<u8>, Check)> = vec![
        ("unknown id", selection(&[7]), |e| {
            matches!(e, HeaderError::UnknownContext { id: 7, .. })
        }),
        ("duplicate id", selection(&[1, 1]), |e| {
            matches!(e, HeaderError::DuplicateContext { id: 1, .. })
        }),
        ("empty", selection(&[]), |e| {
            matches!(e, HeaderError::EmptySelection { .. })
        }),
        ("len 5", five, |e| {
            matches!(e, HeaderError::SelectionLenNotMultipleOf4 { len: 5, .. })
        }),
    ];
    for (what, sel, check) in cases {
        let (r, _, stats) = against_server(&file, 1, move |addr| {
            let mut raw = Raw::new(connect(addr).unwrap());
            assert_eq!(client_hello(&mut raw).len(), 2);
            select(&mut raw, &sel, 0, [0; 16], None);
            raw.expect_refuse(Code::Selection, &[])
        });
        match one_refusal(r, &stats) {
            SessionError::Header(h) if check(&h) => {}
            e => panic!("{what}: {e:?}"),
        }
    }
}

#[test]
fn server_refuses_a_seq_from_the_future() {
    let file = small();
    let n = units(&file).len() as u64;
    // A new receiver that claims to have far more than the stream holds.
    let (r, _, stats) = against_server(&file, 1, |addr| {
        let mut raw = Raw::new(connect(addr).unwrap());
        client_hello(&mut raw);
        select(&mut raw, &selection(&[1]), 1_000_000, [0; 16], None);
        raw.expect_refuse(Code::Seq, &[])
    });
    match one_refusal(r, &stats) {
        SessionError::Replay(ReplayError::FromTheFuture {
            peer: 1_000_000,
            sent,
        }) => assert_eq!(sent, n),
        e => panic!("{e:?}"),
    }

    // The current instance, after a partial transfer.
    let (r, sent, stats) = against_server(&file, 2, |addr| {
        let mut raw = Raw::new(connect(addr).unwrap());
        client_hello(&mut raw);
        select(&mut raw, &selection(&[1]), 0, [0; 16], None);
        let a = raw.read_frame();
        assert_eq!(a.cmd, frame::ACCEPT);
        assert_eq!(a.get(attr::RESUMED), Some(&[Resumed::Fresh as u8][..]));
        let instance: [u8; 16] = a.get(attr::INSTANCE).unwrap().try_into().unwrap();
        let mut got = 0;
        while got < 3 {
            let f = raw.read_frame();
            if f.cmd == frame::DATA {
                got += 1;
                assert_eq!(f.u64(attr::SEQ), got);
            }
        }
        drop(raw);
        let mut raw = Raw::new(connect(addr).unwrap());
        client_hello(&mut raw);
        select(&mut raw, &selection(&[1]), 1_000_000, instance, None);
        raw.expect_refuse(Code::Seq, &[]);
        got
    });
    assert_eq!(sent, 3);
    assert!(r[0].as_ref().is_err_and(|e| e.retryable()), "{:?}", r[0]);
    match one_refusal(r, &stats) {
        SessionError::Replay(ReplayError::FromTheFuture {
            peer: 1_000_000,
            sent,
        }) => assert!((3..=n).contains(&sent), "sent {sent}"),
        e => panic!("{e:?}"),
    }
}

/// A token of another stream, emitted after `seq` units.
fn foreign_token(seq: u64) -> Vec<u8> {
    let other = read(&testdata(), "nodata-v2.stream");
    let mut e = Emitter::new(Btrfs.producer(&other[..], 1).unwrap(), WRITE_SPLIT).unwrap();
    e.set_units_per_fill(1);
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..seq {
        e.fill(&mut buf).unwrap();
    }
    let token = e.token();
    assert_eq!(token.seq, seq);
    token.to_bytes().unwrap()
}

#[test]
fn server_refuses_foreign_and_garbage_tokens() {
    let file = small();
    let token = foreign_token(3);
    let (r, msg, stats) = against_server(&file, 1, move |addr| {
        let mut raw = Raw::new(connect(addr).unwrap());
        client_hello(&mut raw);
        select(&mut raw, &selection(&[1]), 3, [9; 16], Some(&token));
        raw.expect_refuse(Code::Resume, &[])
    });
    match one_refusal(r, &stats) {
        SessionError::Resume(ResumeError::TokenRefused(e)) => {
            let m = e.to_string();
            assert!(m.contains("is for stream"), "{m}");
        }
        e => panic!("{e:?}"),
    }
    assert!(msg.contains("cannot resume"), "{msg}");

    // A token past what the receiver says it has.
    let token = foreign_token(3);
    let (r, _, stats) = against_server(&file, 1, move |addr| {
        let mut raw = Raw::new(connect(addr).unwrap());
        client_hello(&mut raw);
        select(&mut raw, &selection(&[1]), 2, [9; 16], Some(&token));
        raw.expect_refuse(Code::Resume, &[])
    });
    match one_refusal(r, &stats) {
        SessionError::Resume(ResumeError::TokenAhead {
            token: 3,
            received: 2,
        }) => {}
        e => panic!("{e:?}"),
    }

    // Garbage.
    let (r, _, stats) = against_server(&file, 1, |addr| {
        let mut raw = Raw::new(connect(addr).unwrap());
        client_hello(&mut raw);
        let garbage: Vec<u8> = (0..80u32).map(|i| (i * 37 + 11) as u8).collect();
        select(&mut raw, &selection(&[1]), 3, [9; 16], Some(&garbage));
        raw.expect_refuse(Code::Resume, &[])
    });
    match one_refusal(r, &stats) {
        SessionError::Token(TokenError::OutOfRange { field: "size", .. }) => {}
        e => panic!("{e:?}"),
    }
}

/// The hostile client's handshake through ACCEPT; returns the bytes it
/// wrote (where its next frame starts).
fn client_accepted(raw: &mut Raw) -> u64 {
    client_hello(raw);
    select(raw, &selection(&[1]), 0, [0; 16], None);
    assert_eq!(raw.read_frame().cmd, frame::ACCEPT);
    raw.written
}

#[test]
fn server_refuses_garbage_after_the_handshake() {
    let (r, (at, msg), stats) = against_server(&small(), 1, |addr| {
        let mut raw = Raw::new(connect(addr).unwrap());
        let at = client_accepted(&mut raw);
        // An ACK-shaped frame whose bytes after the header are random.
        let mut ack = Vec::new();
        encode_command(
            &SESSION_PROFILE,
            frame::ACK,
            &[AttrValue::new(attr::SEQ, Value::U64(1))],
            &mut ack,
        )
        .unwrap();
        let mut x = 0x9e37_79b9u32;
        for b in &mut ack[10..] {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
        raw.send(&ack);
        let msg = raw.expect_refuse(Code::Protocol, &[frame::DATA, frame::TOKEN, frame::FINISH]);
        (at, msg)
    });
    match one_refusal(r, &stats) {
        SessionError::Frame(e) => {
            assert!(
                matches!(e.kind, ErrorKind::CrcMismatch { cmd, .. } if cmd == frame::ACK),
                "{e:?}"
            );
            // After HELLO (frame 0) and SELECT (frame 1).
            assert_eq!((e.index, e.offset), (2, at), "{e}");
        }
        e => panic!("{e:?}"),
    }
    assert!(
        msg.contains(&format!("command 2, byte offset {at}")),
        "{msg}"
    );
}

#[test]
fn server_refuses_an_ack_for_a_seq_never_sent() {
    let n = units(&small()).len() as u64;
    let (r, _, stats) = against_server(&small(), 1, |addr| {
        let mut raw = Raw::new(connect(addr).unwrap());
        client_accepted(&mut raw);
        raw.frame(
            frame::ACK,
            &[AttrValue::new(attr::SEQ, Value::U64(1_000_000))],
        );
        raw.expect_refuse(Code::Seq, &[frame::DATA, frame::TOKEN, frame::FINISH])
    });
    match one_refusal(r, &stats) {
        SessionError::Replay(ReplayError::FromTheFuture {
            peer: 1_000_000,
            sent,
        }) => assert!((1..=n).contains(&sent), "sent {sent}"),
        e => panic!("{e:?}"),
    }
}

// --------------------------------------------------- hostile servers

/// Runs a fetcher against `hostile` (the server side of one connection);
/// returns what the fetcher returned, its output, and the hostile side's
/// result.
fn against_fetcher<T: Send + 'static>(
    hostile: impl FnOnce(Raw) -> T + Send + 'static,
) -> (Result<(), SessionError>, Vec<u8>, T) {
    let deadline = Instant::now() + DEADLINE;
    let (listener, addr) = listen();
    let server = spawn("hostile server", move || {
        hostile(Raw::new(accept(&listener, deadline)))
    });
    let client = spawn("fetcher", move || {
        let mut f = Fetcher::new(Vec::new(), FetchConfig::default());
        let r = f.fetch(connect(addr).unwrap());
        (r, f.into_inner())
    });
    let (r, out) = client.join(deadline);
    let t = server.join(deadline);
    (r, out, t)
}

/// The hostile server's handshake through ACCEPT, offering the contexts of
/// `file`.
fn server_accept(raw: &mut Raw, file: &[u8]) {
    raw.fixed(SESSION_MAGIC, 1, 1);
    raw.read_fixed();
    assert_eq!(raw.read_frame().cmd, frame::HELLO);
    let contexts = Server::from_bytes(file.to_vec(), ServerConfig::default())
        .unwrap()
        .contexts()
        .to_vec();
    let body = hello(KNOWN_FEATURES, FEATURE_REPLAY, contexts);
    raw.frame(
        frame::HELLO,
        &[AttrValue::new(attr::BODY, Value::Bytes(&body))],
    );
    let s = raw.read_frame();
    assert_eq!(s.cmd, frame::SELECT);
    assert_eq!(s.get(attr::SELECTION), Some(&selection(&[1])[..]));
    assert_eq!(s.u64(attr::RECEIVED), 0);
    raw.frame(
        frame::ACCEPT,
        &[
            AttrValue::new(attr::INSTANCE, Value::Uuid([5; 16])),
            AttrValue::new(attr::RESUMED, Value::U8(Resumed::Fresh as u8)),
            AttrValue::new(attr::SEQ, Value::U64(1)),
            AttrValue::new(attr::WINDOW_BYTES, Value::U64(1 << 30)),
            AttrValue::new(attr::WINDOW_MESSAGES, Value::U64(1 << 20)),
            AttrValue::new(attr::RESEND_MESSAGES, Value::U64(0)),
            AttrValue::new(attr::RESEND_BYTES, Value::U64(0)),
        ],
    );
}

fn data(raw: &mut Raw, seq: u64, unit: &[u8]) {
    raw.frame(
        frame::DATA,
        &[
            AttrValue::new(attr::SEQ, Value::U64(seq)),
            AttrValue::new(attr::PAYLOAD, Value::Bytes(unit)),
        ],
    );
}

/// The units of `file` as byte slices.
fn unit_bytes(file: &[u8]) -> Vec<Vec<u8>> {
    let mut at = 0;
    units(file)
        .into_iter()
        .map(|n| {
            at += n;
            file[at - n..at].to_vec()
        })
        .collect()
}

#[test]
fn fetcher_refuses_a_wrong_magic() {
    let (r, out, msg) = against_fetcher(|mut raw| {
        raw.fixed(b"NOTMAGIC", 1, 1);
        raw.read_fixed();
        raw.expect_refuse(Code::Protocol, &[])
    });
    assert!(
        matches!(&r, Err(SessionError::Header(HeaderError::BadMagic { found, .. })) if found == b"NOTMAGIC"),
        "{r:?}"
    );
    assert!(out.is_empty());
    assert!(msg.contains("bad magic"), "{msg}");
}

#[test]
fn fetcher_refuses_an_unknown_required_feature() {
    let (r, _, _) = against_fetcher(|mut raw| {
        raw.fixed(SESSION_MAGIC, 1, 1);
        raw.read_fixed();
        assert_eq!(raw.read_frame().cmd, frame::HELLO);
        let body = hello(KNOWN_FEATURES | 1 << 40, FEATURE_REPLAY | 1 << 40, vec![]);
        raw.frame(
            frame::HELLO,
            &[AttrValue::new(attr::BODY, Value::Bytes(&body))],
        );
        raw.expect_refuse(Code::Feature, &[])
    });
    assert!(
        matches!(
            r,
            Err(SessionError::Header(HeaderError::UnknownRequiredFeatures { unknown, .. })) if unknown == 1 << 40
        ),
        "{r:?}"
    );
}

#[test]
fn fetcher_refuses_a_unit_with_a_bad_crc_and_keeps_the_valid_prefix() {
    let file = small();
    let us = unit_bytes(&file);
    let good = 4;
    let f2 = file.clone();
    let (r, out, _) = against_fetcher(move |mut raw| {
        server_accept(&mut raw, &f2);
        let us = unit_bytes(&f2);
        for (i, u) in us.iter().take(good).enumerate() {
            data(&mut raw, i as u64 + 1, u);
        }
        let mut bad = us[good].clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x40; // inside the command: its CRC no longer matches
        data(&mut raw, good as u64 + 1, &bad);
        raw.expect_refuse(Code::Stream, &[frame::ACK])
    });
    match r {
        Err(SessionError::Unit { seq, source }) => {
            assert_eq!(seq, good as u64 + 1);
            assert!(source.to_string().contains("CRC mismatch"), "{source}");
        }
        r => panic!("{r:?}"),
    }
    let prefix: usize = us[..good].iter().map(Vec::len).sum();
    assert_same("the output before the bad unit", &out, &file[..prefix]);
}

#[test]
fn fetcher_refuses_a_gap() {
    let file = small();
    let f2 = file.clone();
    let (r, out, _) = against_fetcher(move |mut raw| {
        server_accept(&mut raw, &f2);
        let us = unit_bytes(&f2);
        data(&mut raw, 1, &us[0]);
        data(&mut raw, 3, &us[2]);
        raw.expect_refuse(Code::Seq, &[frame::ACK])
    });
    assert!(
        matches!(
            r,
            Err(SessionError::Replay(ReplayError::Gap {
                expected: 2,
                got: 3
            }))
        ),
        "{r:?}"
    );
    assert_same("the output before the gap", &out, &unit_bytes(&file)[0]);
}

#[test]
fn fetcher_refuses_a_finish_at_another_seq() {
    let file = small();
    let f2 = file.clone();
    let (r, out, _) = against_fetcher(move |mut raw| {
        server_accept(&mut raw, &f2);
        let us = unit_bytes(&f2);
        data(&mut raw, 1, &us[0]);
        data(&mut raw, 2, &us[1]);
        raw.frame(frame::FINISH, &[AttrValue::new(attr::SEQ, Value::U64(5))]);
        raw.expect_refuse(Code::Seq, &[frame::ACK])
    });
    assert!(
        matches!(
            r,
            Err(SessionError::Finish {
                last: 5,
                received: 2
            })
        ),
        "{r:?}"
    );
    assert_eq!(out.len(), units(&file)[..2].iter().sum::<usize>());
}

// ------------------------------------------------------- native streams

fn native_data() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/native/data-v1.stream"
    ))
    .unwrap()
}

/// A native stream (data commands of 100 000 to 150 000 bytes) goes through
/// the same session as btrfs streams: drops on either side and a sender
/// that forgets its transfer, and the output is byte-identical.
#[test]
fn native_streams_survive_drops_and_restarts() {
    let file = native_data();
    let window = Limits {
        max_bytes: 1 << 20,
        max_messages: 64,
    };
    for (server_drop, client_drop, forget) in [
        (200_000, 0, None),
        (0, 170_000, None),
        (180_000, 0, Some(2)),
    ] {
        let what = format!(
            "native data-v1, server drops {server_drop}, client drops {client_drop}, forget {forget:?}"
        );
        let mut plan = Plan::new(config(window));
        plan.server_drop = server_drop;
        plan.client_drop = client_drop;
        plan.forget_every = forget;
        let o = transfer(&what, &file, plan);
        assert_same(&what, &o.out, &file);
        assert!(o.finished, "{what}");
        assert!(o.fetch.reconnects > 0, "{what}: no reconnect");
        assert_eq!(o.fetch.receive.bytes_delivered, file.len() as u64, "{what}");
        if forget.is_some() {
            assert!(o.forgot > 0, "{what}: the sender never forgot");
            assert!(
                o.fetch.receive.resumed_by_token > 0,
                "{what}: no resume by token"
            );
        } else {
            assert_eq!(o.fetch.receive.duplicates, 0, "{what}");
        }
    }
}

/// A fetcher bound to the btrfs format refuses a native stream at its first
/// unit, says why, and writes nothing.
#[test]
fn a_fetcher_of_one_format_refuses_another() {
    let deadline = Instant::now() + DEADLINE;
    let (listener, addr) = listen();
    let server = spawn("server native", move || {
        let mut server = Server::from_bytes(native_data(), ServerConfig::default()).unwrap();
        let conn = accept(&listener, deadline);
        server.serve(&conn).map(|_| ())
    });
    let mut out = Vec::new();
    let mut f = Fetcher::with_format(Btrfs, &mut out, FetchConfig::default());
    let r = f.fetch(connect(addr).unwrap());
    match r {
        Err(SessionError::Unit { seq: 1, source }) => {
            assert!(
                source.to_string().contains("not a btrfs send stream"),
                "{source}"
            );
        }
        r => panic!("{r:?}"),
    }
    drop(f);
    assert!(out.is_empty());
    let served = server.join(deadline);
    // The sender reads the refusal, or finds the connection reset while
    // it still writes: either way the transfer did not complete.
    let e = served.unwrap_err();
    assert!(
        matches!(
            e,
            SessionError::Refused {
                code: Code::Stream,
                ..
            }
        ) || e.retryable(),
        "{e}"
    );
}

/// A refusal code this implementation does not know (from a newer peer) is
/// kept as it came, not folded into a catch-all.
#[test]
fn an_unknown_refusal_code_is_kept() {
    let file = small();
    let f2 = file.clone();
    let (r, out, _) = against_fetcher(move |mut raw| {
        server_accept(&mut raw, &f2);
        raw.frame(
            frame::REFUSE,
            &[
                AttrValue::new(attr::CODE, Value::U16(0x1234)),
                AttrValue::new(attr::MESSAGE, Value::Bytes(b"a reason from the future")),
            ],
        );
    });
    match r {
        Err(SessionError::Refused { code, message }) => {
            assert_eq!(code, Code::Other(0x1234));
            assert_eq!(code.to_u16(), 0x1234);
            assert_eq!(message, "a reason from the future");
            let e = SessionError::Refused { code, message };
            assert!(e.to_string().contains("code 0x1234"), "{e}");
        }
        r => panic!("{r:?}"),
    }
    assert!(out.is_empty());
    for v in 0..=u16::MAX {
        assert_eq!(Code::from_u16(v).to_u16(), v);
    }
}

/// Records what is read from a connection.
struct Recorded<S> {
    inner: S,
    log: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl<S: Read> Read for Recorded<S> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.log.lock().unwrap().extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

impl<S: Write> Write for Recorded<S> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Every frame a server sends checks in full (`decode_command`, CRC
/// included), for btrfs streams (raw CRC-32C commands) and native ones
/// (standard CRC-32C): the server derives a large DATA frame's CRC from its
/// command's own, and a receiver without that fast path (or a duplicate,
/// which is checked in full) must find it right. A regression test: the
/// derivation once assumed the btrfs variant for every stream.
#[test]
fn every_frame_a_server_sends_checks_in_full() {
    let btrfs = std::fs::read(testdata().join("incr-v2.stream")).unwrap();
    for (what, file) in [("native data-v1", native_data()), ("btrfs incr-v2", btrfs)] {
        let deadline = Instant::now() + DEADLINE;
        let (listener, addr) = listen();
        let bytes = file.clone();
        let server = spawn(&format!("server {what}"), move || {
            let mut server = Server::from_bytes(bytes, ServerConfig::default()).unwrap();
            let conn = accept(&listener, deadline);
            server.serve(&conn).map(|_| ())
        });
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let conn = Recorded {
            inner: connect(addr).unwrap(),
            log: log.clone(),
        };
        let mut f = Fetcher::new(Vec::new(), FetchConfig::default());
        f.fetch(conn).unwrap();
        assert!(f.done(), "{what}");
        server.join(deadline).unwrap();
        assert_same(what, &f.into_inner(), &file);

        let log = log.lock().unwrap();
        let mut at = 16; // the server's fixed header
        let (mut frames, mut large) = (0u64, 0u64);
        while at < log.len() {
            let (c, n) = decode_command(&log[at..], &SESSION_PROFILE, frames, at as u64)
                .unwrap_or_else(|e| panic!("{what}: frame {frames}: {e}"));
            if c.cmd() == frame::DATA && c.attr(attr::PAYLOAD).unwrap().value().len() >= 4096 {
                large += 1;
            }
            at += n;
            frames += 1;
        }
        assert!(
            large > 0,
            "{what}: no large DATA frame: the fast path was not tried"
        );
    }
}

// ------------------------------------------------ the reconnecting driver

/// `Fetcher::fetch_retrying` (what `proto-stream fetch` runs): through
/// connections that drop it completes; when every connection is cut before
/// a whole unit it gives up after the policy's stalls; with nobody
/// listening it gives up after `retry_for`.
#[test]
fn fetch_retrying_completes_gives_up_on_stalls_and_on_silence() {
    use proto_stream::session::{FetchError, RetryPolicy};
    let file = std::fs::read(testdata().join("incr-v2.stream")).unwrap();
    let policy = RetryPolicy {
        retry_for: Duration::from_secs(10),
        max_stalls: 3,
    };
    let enough = largest(&file) + SLACK + 1000;
    for (drop, stalls) in [(enough, false), (120, true)] {
        let deadline = Instant::now() + DEADLINE;
        let (listener, addr) = listen();
        let bytes = file.clone();
        let server = spawn("server retrying", move || {
            let mut server = Server::from_bytes(bytes, ServerConfig::default()).unwrap();
            // Serve until the fetcher stops coming (a refused connection
            // after it gave up ends the loop through the deadline).
            listener.set_nonblocking(true).unwrap();
            let mut idle = Instant::now();
            loop {
                match listener.accept() {
                    Ok((conn, _)) => {
                        conn.set_nonblocking(false).unwrap();
                        setup(&conn);
                        idle = Instant::now();
                        if server.serve(DropEvery::new(&conn, drop)).is_ok() {
                            return server.stats();
                        }
                    }
                    Err(_) if idle.elapsed() > Duration::from_secs(2) => return server.stats(),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
                assert!(Instant::now() < deadline, "server: hung");
            }
        });
        let mut f = Fetcher::new(Vec::new(), FetchConfig::default());
        let r = f.fetch_retrying(|| connect(addr), policy);
        let stats = server.join(deadline);
        if stalls {
            match r {
                Err(FetchError::Stalled { stalls: 3, last }) => assert!(last.retryable(), "{last}"),
                r => panic!("drop {drop}: {r:?}"),
            }
            assert!(file.starts_with(&f.into_inner()));
        } else {
            assert!(r.unwrap(), "the goodbye arrived");
            assert!(f.stats().reconnects > 0);
            assert_same("fetch_retrying", &f.into_inner(), &file);
            assert!(stats.connections > 1);
        }
    }
    // Nobody listens: the port of a listener just closed.
    let (listener, addr) = listen();
    drop(listener);
    let quick = RetryPolicy {
        retry_for: Duration::from_millis(300),
        max_stalls: 3,
    };
    let started = Instant::now();
    let mut f = Fetcher::new(Vec::new(), FetchConfig::default());
    match f.fetch_retrying(|| connect(addr), quick) {
        Err(e @ FetchError::Unreachable { .. }) => {
            assert!(e.to_string().contains("no connection for"), "{e}");
        }
        r => panic!("{r:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(300));
}

/// The offset of a short command (under the 4 KiB from which the sender
/// checks commands itself) near the middle of `file`, and its length.
fn short_command_near_the_middle(file: &[u8]) -> (usize, usize) {
    let stream = BtrfsStream::parse(file).unwrap();
    let mut best: Option<(usize, usize)> = None;
    for c in stream.commands() {
        let c = c.unwrap();
        let (at, len) = (c.offset() as usize, 10 + c.payload().len());
        let near = |o: usize| o.abs_diff(file.len() / 2);
        if (64..4096).contains(&len) && best.is_none_or(|(b, _)| near(at) < near(b)) {
            best = Some((at, len));
        }
    }
    best.expect("a short command")
}

/// A short command damaged at the source (its CRC left to the receiver):
/// the fetcher refuses it by its seq and keeps the prefix before it. The
/// server does not send the window's copy again: the next connection
/// re-arms from the receiver's token and reads the file again, every
/// command now checked by the sender itself. Still damaged, the sender
/// refuses it, naming its offset; repaired in between (damage that
/// passed, a read fault), the transfer completes with exactly the file.
#[test]
fn a_unit_the_receiver_refused_is_read_again_and_checked_by_the_sender() {
    let file = small();
    let (at, len) = short_command_near_the_middle(&file);
    let mut bad = file.clone();
    bad[at + len - 1] ^= 0x01;
    for repair in [false, true] {
        let what = if repair { "repaired" } else { "still damaged" };
        let dir = std::env::temp_dir().join(format!(
            "proto-stream-refused-{}-{repair}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.stream");
        std::fs::write(&path, &bad).unwrap();
        let deadline = Instant::now() + DEADLINE;
        let (listener, addr) = listen();
        let (p, good) = (path.clone(), file.clone());
        let server = spawn("server", move || {
            let mut server = Server::open(&p, config(WINDOWS[1])).unwrap();
            let mut results = Vec::new();
            for _ in 0..2 {
                let conn = accept(&listener, deadline);
                results.push(server.serve(&conn));
                if repair {
                    std::fs::write(&p, &good).unwrap();
                }
            }
            (results, server.stats())
        });
        let fetcher = spawn("fetcher", move || {
            let mut f = Fetcher::new(Vec::new(), FetchConfig::default());
            let mut results = Vec::new();
            for _ in 0..2 {
                let conn = connect(addr).unwrap();
                results.push(f.fetch(&conn));
            }
            (results, f.into_inner())
        });
        let (fetched, out) = fetcher.join(deadline);
        let (served, stats) = server.join(deadline);
        // The first connection: the receiver refuses the unit.
        match &fetched[0] {
            Err(SessionError::Unit { source, .. }) => {
                assert!(source.to_string().contains("CRC"), "{what}: {source}")
            }
            r => panic!("{what}: first fetch: {r:?}"),
        }
        assert!(
            matches!(
                served[0],
                Err(SessionError::Refused {
                    code: Code::Stream,
                    ..
                })
            ),
            "{what}: {:?}",
            served[0]
        );
        // The second: re-armed from the token, not resumed by seq.
        assert_eq!(stats.send.resumed_by_seq, 0, "{what}");
        assert_eq!(stats.send.resumed_by_token, 1, "{what}");
        if repair {
            assert!(fetched[1].is_ok(), "{what}: {:?}", fetched[1]);
            assert!(served[1].is_ok(), "{what}: {:?}", served[1]);
            assert_same(what, &out, &file);
        } else {
            let named = format!("offset {at}");
            match &served[1] {
                Err(SessionError::Source(e)) => {
                    assert!(e.to_string().contains(&named), "{what}: {e}")
                }
                r => panic!("{what}: second serve: {r:?}"),
            }
            match &fetched[1] {
                Err(SessionError::Refused {
                    code: Code::Stream,
                    message,
                }) => assert!(message.contains(&named), "{what}: {message}"),
                r => panic!("{what}: second fetch: {r:?}"),
            }
            assert!(out.len() <= at && file.starts_with(&out), "{what}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
