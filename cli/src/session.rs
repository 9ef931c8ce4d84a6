//! `serve` and `fetch`: a transfer over TCP that survives disconnects.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use proto_stream::session::replay::Limits;
use proto_stream::session::{
    DropEvery, FetchConfig, Fetcher, RetryPolicy, Server, ServerConfig, ServerStats,
};

use crate::Failure;

/// What `serve` was asked.
pub struct ServeArgs<'a> {
    pub file: &'a Path,
    pub listen: &'a str,
    pub drop_every: Option<u64>,
    pub kill_sender_after: Option<u64>,
    pub window_bytes: usize,
    pub window_messages: usize,
    pub token_every: u64,
    pub safe_every: u64,
    pub timeout: f64,
    pub io_timeout: f64,
    pub json: bool,
}

/// What `fetch` was asked.
pub struct FetchArgs<'a> {
    pub addr: &'a str,
    pub out: &'a Path,
    pub contexts: Option<&'a str>,
    pub drop_every: Option<u64>,
    pub retry_for: f64,
    pub io_timeout: f64,
    pub json: bool,
}

/// Connections in a row that deliver nothing before `fetch` gives up.
const MAX_STALLS: u32 = 50;

pub(crate) fn secs(s: f64) -> Option<Duration> {
    (s > 0.0).then(|| Duration::from_secs_f64(s))
}

/// The `--json` summary of a sender (`serve`, `send`) that served `units`.
pub(crate) fn served_json(units: u64, s: &ServerStats) -> serde_json::Value {
    serde_json::json!({
        "ok": true,
        "units": units,
        "connections": s.connections,
        "refused": s.refused,
        "resumed_by_seq": s.send.resumed_by_seq,
        "resumed_by_token": s.send.resumed_by_token,
        "units_sent": s.send.units_sent,
        "bytes_sent": s.send.bytes_sent,
        "payload_wire_bytes": s.send.payload_wire_bytes,
        "units_compressed": s.send.units_compressed,
        "units_frames": s.send.units_frames,
        "units_resent": s.send.units_resent,
        "bytes_resent": s.send.bytes_resent,
        "units_skipped": s.send.units_skipped,
        "tokens_sent": s.send.tokens_sent,
        "restarts": s.restarts,
    })
}

/// Connects to `addr`. With nothing listening on a loopback port in the
/// ephemeral range, the kernel may pick that very port for the socket and
/// connect it to itself, holding the port a peer is about to listen on
/// again: that is refused, not a connection.
pub(crate) fn connect(addr: impl std::net::ToSocketAddrs) -> io::Result<TcpStream> {
    let conn = TcpStream::connect(addr)?;
    if conn.local_addr()? == conn.peer_addr()? {
        return Err(io::ErrorKind::ConnectionRefused.into());
    }
    Ok(conn)
}

/// Binds a listener on `addr`. A process started again on its port may
/// find the connections of the one before still closing there (not yet in
/// TIME_WAIT): it waits for them, ten seconds at most.
pub(crate) fn bind(addr: impl std::net::ToSocketAddrs + Copy) -> io::Result<TcpListener> {
    let until = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match TcpListener::bind(addr) {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && std::time::Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(100));
            }
            r => return r,
        }
    }
}

pub(crate) fn setup(conn: &TcpStream, io_timeout: f64) -> io::Result<()> {
    conn.set_nodelay(true)?;
    conn.set_read_timeout(secs(io_timeout))?;
    conn.set_write_timeout(secs(io_timeout))
}

pub fn serve(a: &ServeArgs<'_>) -> Result<(), Failure> {
    let config = ServerConfig {
        window: Limits {
            max_bytes: a.window_bytes,
            max_messages: a.window_messages,
        },
        token_every: a.token_every,
        safe_every: a.safe_every,
        kill_after: a.kill_sender_after,
        ..ServerConfig::default()
    };
    let mut server = Server::open(a.file, config).map_err(Failure::Session)?;
    let listener = bind(a.listen).map_err(|e| Failure::io(a.listen, e))?;
    let local = listener
        .local_addr()
        .map_err(|e| Failure::io(a.listen, e))?;
    {
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "listening on {local}");
        let _ = out.flush();
    }
    for c in server.contexts() {
        eprintln!("proto-stream: serve: context {} {}", c.id, c.name);
    }
    if let Some(t) = secs(a.timeout) {
        std::thread::spawn(move || {
            std::thread::sleep(t);
            eprintln!(
                "proto-stream: error: serve: no complete transfer within {} s (--timeout)",
                t.as_secs_f64()
            );
            std::process::exit(1);
        });
    }
    loop {
        let (conn, peer) = listener.accept().map_err(|e| Failure::io("accept", e))?;
        if let Err(e) = setup(&conn, a.io_timeout) {
            eprintln!("proto-stream: serve: connection from {peer}: {e}");
            continue;
        }
        let r = server.serve(DropEvery::new(&conn, a.drop_every.unwrap_or(0)));
        drop(conn);
        match r {
            Ok(served) => {
                let s = server.stats();
                if a.json {
                    let v = served_json(served.units, &s);
                    let _ = writeln!(io::stdout(), "{v}");
                } else {
                    let _ = writeln!(
                        io::stdout(),
                        "served {} units over {} connections: {} bytes sent, {} resent ({} units), {} resumed by seq, {} from a token, {} refused",
                        served.units,
                        s.connections,
                        s.send.bytes_sent,
                        s.send.bytes_resent,
                        s.send.units_resent,
                        s.send.resumed_by_seq,
                        s.send.resumed_by_token,
                        s.refused
                    );
                }
                return Ok(());
            }
            Err(e) => eprintln!("proto-stream: serve: connection from {peer}: {e}"),
        }
    }
}

pub fn fetch(a: &FetchArgs<'_>) -> Result<(), Failure> {
    let out_name = a.out.display().to_string();
    let file = File::create(a.out).map_err(|e| Failure::io(&out_name, e))?;
    let contexts = a
        .contexts
        .map(|s| s.split(',').map(|c| c.trim().to_owned()).collect())
        .unwrap_or_default();
    let config = FetchConfig {
        contexts,
        ..FetchConfig::default()
    };
    let mut f = Fetcher::new(BufWriter::with_capacity(1 << 20, file), config);
    let policy = RetryPolicy {
        retry_for: Duration::from_secs_f64(a.retry_for.max(0.0)),
        max_stalls: MAX_STALLS,
    };
    let connect = || {
        let conn = connect(a.addr)?;
        setup(&conn, a.io_timeout)?;
        Ok(DropEvery::new(conn, a.drop_every.unwrap_or(0)))
    };
    let bye = match f.fetch_retrying(connect, policy) {
        Ok(bye) => bye,
        Err(error) => {
            return Err(Failure::Fetch {
                from: a.addr.to_string(),
                error,
                out: out_name,
                units: f.stats().receive.units,
            })
        }
    };
    let stats = f.stats();
    let names: Vec<String> = f
        .selection()
        .unwrap_or_default()
        .iter()
        .filter_map(|id| f.offered().iter().find(|c| c.id == *id))
        .map(|c| c.name.clone())
        .collect();
    let w = f.into_inner();
    let file = w
        .into_inner()
        .map_err(|e| Failure::io(&out_name, e.into_error()))?;
    file.sync_all().map_err(|e| Failure::io(&out_name, e))?;
    if a.json {
        let v = serde_json::json!({
            "ok": true,
            "out": out_name,
            "contexts": names,
            "units": stats.receive.units,
            "bytes": stats.receive.bytes_delivered,
            "bytes_received": stats.receive.bytes_received,
            "bytes_resent": stats.receive.bytes_resent,
            "duplicates": stats.receive.duplicates,
            "reconnects": stats.reconnects,
            "resumed_by_token": stats.receive.resumed_by_token,
            "wire_bytes": stats.wire_bytes,
            "goodbye": bye,
        });
        let _ = writeln!(io::stdout(), "{v}");
    } else {
        let _ = writeln!(
            io::stdout(),
            "fetched {} bytes ({} units; contexts {}) into {}: {} bytes received, {} bytes resent, {} reconnects ({} resumed from a checkpoint token){}",
            stats.receive.bytes_delivered,
            stats.receive.units,
            names.join(","),
            out_name,
            stats.receive.bytes_received,
            stats.receive.bytes_resent,
            stats.reconnects,
            stats.receive.resumed_by_token,
            if bye { "" } else { "; the sender's goodbye was lost, every unit had been acknowledged" }
        );
    }
    Ok(())
}
