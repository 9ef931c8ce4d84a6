//! The async session driver (feature `tokio`) over REAL TCP on 127.0.0.1:
//! `Server::serve_async` and `Fetcher::fetch_retrying_async` through a
//! proxy task that cuts the connection after N bytes several times (and a
//! sender that forgets its transfer, resumed from the receiver's token);
//! the async fetcher against the blocking server and the blocking fetcher
//! against the async server, through connections that drop; a silent peer
//! ends a connection at the I/O timeout.
//!
//! Every read, write, connect and accept is bounded in time, and each test
//! as a whole runs under a deadline: a hung test fails, it does not hang.
#![cfg(feature = "tokio")]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proto_stream::btrfs::Btrfs;
use proto_stream::checkpoint::{Format, Units};
use proto_stream::native::PRSTREAM;
use proto_stream::session::replay::Limits;
use proto_stream::session::{
    DropEvery, FetchConfig, FetchStats, Fetcher, Kept, Output, RetryPolicy, Server, ServerConfig,
    ServerStats,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

/// Every read, write, flush and connect.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// One whole transfer.
const DEADLINE: Duration = Duration::from_secs(90);
/// Handshake bytes and frame overhead, with a margin: a connection cut
/// after the largest unit plus this many bytes has delivered a unit.
const SLACK: u64 = 1024;

fn testdata(path: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(path);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The files sent: a full and an incremental btrfs stream concatenated
/// (two contexts), and a native stream with data commands over 64 KiB.
fn files() -> Vec<(&'static str, Vec<u8>)> {
    let mut both = testdata("btrfs/small/full-v2.stream");
    both.extend(testdata("btrfs/small/incr-v2.stream"));
    vec![
        ("btrfs full + incremental", both),
        ("native data-v1", testdata("native/data-v1.stream")),
    ]
}

/// The files of the interop tests, whose units are small enough for
/// connections that drop every few KiB more than the largest: a full
/// btrfs v1 stream and the native one.
fn interop_files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("btrfs full-v1", testdata("btrfs/small/full-v1.stream")),
        ("native data-v1", testdata("native/data-v1.stream")),
    ]
}

/// Connections that each carried at most `drop_every` bytes: at least
/// as many reconnects as that takes for `file`, each resumed by seq.
#[track_caller]
fn assert_resumed(
    what: &str,
    file: &[u8],
    drop_every: u64,
    fetch: &FetchStats,
    server: &ServerStats,
) {
    let least = (file.len() as u64).div_ceil(drop_every) - 1;
    assert!(least >= 2, "{what}: {least}");
    assert!(fetch.reconnects >= least, "{what}: {fetch:?}");
    assert!(server.send.resumed_by_seq >= least, "{what}: {server:?}");
}

/// The units (stream headers and commands) of `file`, in order.
fn units(file: &[u8]) -> Vec<Vec<u8>> {
    fn all<F: Format>(f: &F, file: &[u8]) -> Vec<Vec<u8>> {
        let mut p = f.units(file);
        let mut out = Vec::new();
        while let Some(u) = p.current().unwrap() {
            out.push(u.bytes.to_vec());
            p.advance().unwrap();
        }
        out
    }
    if file.starts_with(b"PRSTREAM") {
        all(&PRSTREAM, file)
    } else {
        all(&Btrfs, file)
    }
}

/// A fetcher's output that keeps every unit it is given, one by one
/// (several from one UNITS frame each on its own): what was delivered, how
/// often and in which order.
#[derive(Default)]
struct Delivered(Vec<Vec<u8>>);

impl Output for Delivered {
    fn write_unit(&mut self, unit: &[u8]) -> std::io::Result<()> {
        self.0.push(unit.to_vec());
        Ok(())
    }
    fn commit(&mut self, _: &Kept) -> std::io::Result<()> {
        Ok(())
    }
}

/// The output is the file byte for byte, and each of its units was
/// delivered exactly once, in order.
#[track_caller]
fn assert_delivered_once(what: &str, got: &Delivered, file: &[u8]) {
    let want = units(file);
    let bytes: Vec<u8> = got.0.concat();
    assert!(bytes == file, "{what}: the output differs from the file");
    assert_eq!(got.0.len(), want.len(), "{what}: units delivered");
    assert!(
        got.0 == want,
        "{what}: a unit delivered twice or out of order"
    );
}

fn largest(file: &[u8]) -> u64 {
    units(file).iter().map(Vec::len).max().unwrap() as u64
}

fn small_window(token_every: u64) -> ServerConfig {
    ServerConfig {
        window: Limits {
            max_bytes: 8 << 10,
            max_messages: 4,
        },
        token_every,
        ..ServerConfig::default()
    }
}

fn policy() -> RetryPolicy {
    RetryPolicy {
        retry_for: Duration::from_secs(20),
        max_stalls: 20,
    }
}

async fn accept(l: &TcpListener) -> TcpStream {
    let (s, _) = timeout(IO_TIMEOUT, l.accept())
        .await
        .expect("no connection came: hung")
        .unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Serves `file` on `listener` over as many connections as it takes.
async fn serve_all(what: String, listener: TcpListener, mut server: Server) -> ServerStats {
    for n in 0u64.. {
        let conn = accept(&listener).await;
        match server.serve_async(conn, IO_TIMEOUT).await {
            Ok(_) => break,
            Err(e) if e.retryable() => {}
            Err(e) => panic!("{what}: server, connection {n}: {e}"),
        }
    }
    server.stats()
}

/// Copies `from` to `to` until the end of input (then shuts `to` down),
/// or, with a `cut`, until that many bytes went through: whether it
/// stopped there.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: Option<u64>,
) -> bool {
    let mut buf = vec![0u8; 16 << 10];
    let mut sent = 0u64;
    loop {
        let room = cut.map_or(buf.len() as u64, |c| (c - sent).min(buf.len() as u64)) as usize;
        if room == 0 {
            return true;
        }
        let n = match timeout(IO_TIMEOUT, from.read(&mut buf[..room])).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => n,
        };
        if !matches!(
            timeout(IO_TIMEOUT, to.write_all(&buf[..n])).await,
            Ok(Ok(()))
        ) {
            return false;
        }
        sent += n as u64;
    }
    let _ = timeout(IO_TIMEOUT, to.shutdown()).await;
    false
}

/// A proxy on 127.0.0.1 in front of `server`: each of its first `cuts`
/// connections is cut (both sides dropped) once `cut_after` bytes went
/// from the server to the fetcher; later ones pass everything. Returns
/// its address and how many connections it cut.
async fn cutting_proxy(
    server: SocketAddr,
    cuts: u64,
    cut_after: u64,
) -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let done = Arc::new(AtomicU64::new(0));
    let counted = done.clone();
    tokio::spawn(async move {
        for k in 0u64.. {
            let Ok(Ok((down, _))) = timeout(DEADLINE, listener.accept()).await else {
                return;
            };
            let Ok(Ok(up)) = timeout(IO_TIMEOUT, TcpStream::connect(server)).await else {
                continue;
            };
            let cut = (k < cuts).then_some(cut_after);
            let counted = counted.clone();
            tokio::spawn(async move {
                let (down_r, down_w) = down.into_split();
                let (up_r, up_w) = up.into_split();
                let to_server = pipe(down_r, up_w, None);
                let to_fetcher = pipe(up_r, down_w, cut);
                tokio::pin!(to_server);
                // Ends when the server's side ends (at the cut, or when
                // it closed): both halves are dropped then.
                let was_cut = tokio::select! {
                    was_cut = to_fetcher => was_cut,
                    () = async { (&mut to_server).await; std::future::pending::<()>().await } => false,
                };
                if was_cut {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    (addr, done)
}

struct Outcome {
    out: Delivered,
    fetch: FetchStats,
    server: ServerStats,
    cut: u64,
}

/// `file` from an async server to an async fetcher through a proxy that
/// cuts `cuts` connections after `cut_after` bytes each.
async fn through_proxy(
    what: &str,
    file: &[u8],
    config: ServerConfig,
    cuts: u64,
    cut_after: u64,
) -> Outcome {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server_addr = listener.local_addr().unwrap();
    let server = Server::from_bytes(file.to_vec(), config).unwrap();
    let server = tokio::spawn(serve_all(what.to_string(), listener, server));
    let (proxy, cut) = cutting_proxy(server_addr, cuts, cut_after).await;

    let mut fetcher = Fetcher::new(Delivered::default(), FetchConfig::default());
    let said_bye = timeout(
        DEADLINE,
        fetcher.fetch_retrying_async(|| TcpStream::connect(proxy), policy(), IO_TIMEOUT),
    )
    .await
    .expect("the transfer hung")
    .unwrap_or_else(|e| panic!("{what}: fetch: {e}"));
    assert!(said_bye && fetcher.done(), "{what}: no goodbye");
    let server = timeout(DEADLINE, server)
        .await
        .expect("the server hung")
        .unwrap();
    Outcome {
        fetch: fetcher.stats(),
        out: fetcher.into_inner(),
        server,
        cut: cut.load(Ordering::Relaxed),
    }
}

/// Async server and async fetcher through a proxy that cuts six
/// connections in a row, each after 5000 bytes (inside units, between
/// them, inside units larger than that): the output is the file byte for
/// byte, every unit delivered exactly once, six reconnects, each resumed
/// by seq, and what was in flight at a cut sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_connections_resume_by_seq_and_deliver_each_unit_once() {
    for (what, file) in files() {
        let (cuts, cut_after) = (6, 5000);
        assert!(
            cuts * cut_after < file.len() as u64 / 2,
            "{what}: cuts too late"
        );
        let o = through_proxy(what, &file, small_window(16 << 10), cuts, cut_after).await;
        assert_delivered_once(what, &o.out, &file);
        assert_eq!(o.cut, cuts, "{what}: connections cut");
        assert_eq!(o.fetch.reconnects, cuts, "{what}: reconnects");
        assert_eq!(o.fetch.receive.units, units(&file).len() as u64, "{what}");
        assert!(
            o.server.send.bytes_resent > 0,
            "{what}: nothing was in flight at a cut"
        );
        assert!(
            o.server.send.resumed_by_seq >= cuts,
            "{what}: {:?}",
            o.server.send
        );
        assert_eq!(o.server.restarts, 0, "{what}");
    }
}

/// Small units (eight small btrfs streams concatenated, units of at most
/// 96 bytes) go into the async server's window many per emitter fill;
/// connections cut inside a batch resume by seq and every unit arrives
/// exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_units_batched_survive_cut_connections() {
    let file = testdata("btrfs/nodata-v2.stream").repeat(8);
    let what = "nodata-v2 x 8";
    let config = ServerConfig {
        window: Limits {
            max_bytes: 8 << 10,
            max_messages: 256,
        },
        token_every: 2048,
        ..ServerConfig::default()
    };
    let (cuts, cut_after) = (4, 3000);
    let o = through_proxy(what, &file, config, cuts, cut_after).await;
    assert_delivered_once(what, &o.out, &file);
    assert_eq!(o.fetch.reconnects, cuts, "{what}: reconnects");
    let send = o.server.send;
    assert!(send.resumed_by_seq >= cuts, "{what}: {send:?}");
    assert!(send.bytes_resent > 0, "{what}: nothing in flight at a cut");
    assert_eq!(
        send.bytes_sent - file.len() as u64,
        send.bytes_resent,
        "{what}"
    );
    assert!(send.fills * 4 < send.units_sent, "{what}: {send:?}");
}

/// A sender that is killed mid-way (it forgets its window and position,
/// `ServerConfig::kill_after`) while connections are also being cut: the
/// async fetcher's checkpoint token re-arms it, and still every unit
/// arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_async_sender_resumes_from_the_receivers_token() {
    for (what, file) in files() {
        let config = ServerConfig {
            kill_after: Some(file.len() as u64 / 2),
            ..small_window(4 << 10)
        };
        let o = through_proxy(what, &file, config, 2, 5000).await;
        assert_delivered_once(what, &o.out, &file);
        assert_eq!(o.server.restarts, 1, "{what}");
        assert!(
            o.server.send.resumed_by_token >= 1,
            "{what}: {:?}",
            o.server.send
        );
        assert!(
            o.fetch.receive.resumed_by_token >= 1,
            "{what}: {:?}",
            o.fetch.receive
        );
    }
}

/// The async fetcher against the blocking `Server` (on a thread, its
/// connections dropping every few KiB): the same session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_fetcher_and_blocking_server_interoperate() {
    for (what, file) in interop_files() {
        let drop_every = largest(&file) + SLACK + 2048;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let bytes = file.clone();
        let server = tokio::task::spawn_blocking(move || {
            let mut server = Server::from_bytes(bytes, small_window(16 << 10)).unwrap();
            listener.set_nonblocking(false).unwrap();
            loop {
                let (conn, _) = listener.accept().unwrap();
                conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                conn.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
                match server.serve(DropEvery::new(&conn, drop_every)) {
                    Ok(_) => return server.stats(),
                    Err(e) if e.retryable() => {}
                    Err(e) => panic!("blocking server: {e}"),
                }
            }
        });
        let mut fetcher = Fetcher::new(Delivered::default(), FetchConfig::default());
        let r = timeout(
            DEADLINE,
            fetcher.fetch_retrying_async(|| TcpStream::connect(addr), policy(), IO_TIMEOUT),
        )
        .await
        .expect("the transfer hung");
        assert!(
            r.unwrap_or_else(|e| panic!("{what}: {e}")),
            "{what}: no goodbye"
        );
        let stats = timeout(DEADLINE, server)
            .await
            .expect("the server hung")
            .unwrap();
        assert_resumed(what, &file, drop_every, &fetcher.stats(), &stats);
        assert_delivered_once(what, fetcher.output(), &file);
    }
}

/// The blocking `Fetcher` (on a thread, its connections dropping every
/// few KiB) against the async server: the same session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_fetcher_and_async_server_interoperate() {
    for (what, file) in interop_files() {
        let drop_every = largest(&file) + SLACK + 2048;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = Server::from_bytes(file.clone(), small_window(16 << 10)).unwrap();
        let server = tokio::spawn(serve_all(what.to_string(), listener, server));
        let fetcher = tokio::task::spawn_blocking(move || {
            let mut fetcher = Fetcher::new(Delivered::default(), FetchConfig::default());
            let said_bye = fetcher
                .fetch_retrying(
                    || {
                        let c = std::net::TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
                        c.set_read_timeout(Some(IO_TIMEOUT))?;
                        c.set_write_timeout(Some(IO_TIMEOUT))?;
                        Ok(DropEvery::new(c, drop_every))
                    },
                    policy(),
                )
                .unwrap();
            (said_bye, fetcher.stats(), fetcher.into_inner())
        });
        let (said_bye, stats, out) = timeout(DEADLINE, fetcher)
            .await
            .expect("the transfer hung")
            .unwrap();
        assert!(said_bye, "{what}: no goodbye");
        let server = timeout(DEADLINE, server)
            .await
            .expect("the server hung")
            .unwrap();
        assert_resumed(what, &file, drop_every, &stats, &server);
        assert_delivered_once(what, &out, &file);
    }
}

/// A peer that accepts and never says a word: the async fetcher's
/// connection ends at its I/O timeout with a retryable `TimedOut`, and
/// `fetch_retrying_async` gives up after the policy's stalls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_ends_at_the_io_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok(Ok((s, _))) = timeout(DEADLINE, listener.accept()).await {
            held.push(s);
        }
    });
    let io_timeout = Duration::from_millis(200);
    let mut fetcher = Fetcher::new(Delivered::default(), FetchConfig::default());
    let conn = TcpStream::connect(addr).await.unwrap();
    let started = std::time::Instant::now();
    let fetch = fetcher.fetch_async(conn, io_timeout);
    // (A fetch can be spawned on a multi-thread runtime.)
    fn spawnable<T: Send>(_: &T) {}
    spawnable(&fetch);
    let err = timeout(DEADLINE, fetch)
        .await
        .expect("the timeout did not fire")
        .unwrap_err();
    assert!(err.retryable(), "{err}");
    assert!(
        matches!(&err, proto_stream::session::SessionError::Io(e) if e.kind() == std::io::ErrorKind::TimedOut),
        "{err:?}"
    );
    assert!(started.elapsed() >= io_timeout, "{:?}", started.elapsed());

    let policy = RetryPolicy {
        retry_for: Duration::from_secs(20),
        max_stalls: 3,
    };
    let err = timeout(
        DEADLINE,
        fetcher.fetch_retrying_async(|| TcpStream::connect(addr), policy, io_timeout),
    )
    .await
    .expect("the retry loop hung")
    .unwrap_err();
    assert!(
        matches!(
            err,
            proto_stream::session::FetchError::Stalled { stalls: 3, .. }
        ),
        "{err}"
    );
    assert!(fetcher.output().0.is_empty());
    silent.abort();
}
