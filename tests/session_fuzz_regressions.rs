//! What the `session_handshake` fuzz target checks, on fixed inputs: one
//! side of a session (`Server::serve`, `Fetcher::fetch`) fed a peer's bytes
//! from memory (then EOF), its own output kept.
//!
//! - the real transcripts (recorded over TCP here, as
//!   `examples/session_transcript.rs` records the fuzz seeds) replay to a
//!   whole transfer on either side;
//! - a DATA frame damaged in transit (a data byte, the unit's own CRC, the
//!   seq, the frame's CRC), delivered or a duplicate, is refused as a frame
//!   error (`Code::Protocol` on the wire), as the fetcher's fast path
//!   (frame CRC derived from the unit's CRC) must keep it;
//! - every input saved in `fuzz/regressions/session_handshake/` (crashes
//!   found by the fuzzer, once fixed) passes the target's properties.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proto_stream::btrfs::{Event, StreamDecoder};
use proto_stream::session::replay::Limits;
use proto_stream::session::{
    attr, frame, Code, FetchConfig, Fetcher, Server, ServerConfig, SessionError, SESSION_FORMAT,
    SESSION_PROFILE, SESSION_VERSIONS,
};
use proto_stream::tlv::{decode_command, ErrorKind};

/// The fuzz target's file: two streams, two contexts.
fn stream() -> Vec<u8> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/btrfs");
    let mut s = std::fs::read(d.join("nodata-v2.stream")).unwrap();
    s.extend_from_slice(&std::fs::read(d.join("incr-v2.stream")).unwrap());
    s
}

/// The fuzz target's server configuration for mode bits 0.
fn server_config() -> ServerConfig {
    ServerConfig {
        window: Limits {
            max_bytes: 16 << 10,
            max_messages: 8,
        },
        token_every: 8 << 10,
        ..ServerConfig::default()
    }
}

/// A connection that keeps a copy of every byte read from it.
struct Tap {
    inner: TcpStream,
    log: Arc<Mutex<Vec<u8>>>,
}

impl Read for Tap {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.log.lock().unwrap().extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

impl Write for Tap {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// One whole transfer over TCP: (what the fetcher sent, what the server
/// sent).
fn transcripts() -> (Vec<u8>, Vec<u8>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let from_client = Arc::new(Mutex::new(Vec::new()));
    let log = from_client.clone();
    let server = std::thread::spawn(move || {
        let mut server = Server::from_bytes(stream(), server_config()).unwrap();
        let (conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        server.serve(Tap { inner: conn, log }).unwrap();
    });
    let from_server = Arc::new(Mutex::new(Vec::new()));
    let conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut out = Vec::new();
    let mut fetcher = Fetcher::new(&mut out, FetchConfig::default());
    fetcher
        .fetch(Tap {
            inner: conn,
            log: from_server.clone(),
        })
        .unwrap();
    server.join().unwrap();
    assert_eq!(out, stream());
    let c = from_client.lock().unwrap().clone();
    let s = from_server.lock().unwrap().clone();
    (c, s)
}

/// The peer: reads from `input` (at most `chunk` bytes each), then EOF;
/// writes kept.
struct Peer<'a> {
    input: &'a [u8],
    chunk: usize,
    out: Vec<u8>,
}

impl Read for Peer<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.chunk).min(self.input.len());
        buf[..n].copy_from_slice(&self.input[..n]);
        self.input = &self.input[n..];
        Ok(n)
    }
}

impl Write for Peer<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Our output: the fixed header, then whole frames; (type, REFUSE code).
fn frames(out: &[u8]) -> Vec<(u16, Option<u16>)> {
    let mut fixed = Vec::new();
    SESSION_FORMAT
        .encode(SESSION_VERSIONS.max, SESSION_VERSIONS.min, &mut fixed)
        .unwrap();
    assert!(out.starts_with(&fixed));
    let mut pos = fixed.len();
    let mut v = Vec::new();
    while pos < out.len() {
        let (c, n) = decode_command(&out[pos..], &SESSION_PROFILE, v.len() as u64, pos as u64)
            .expect("our frames decode");
        v.push((c.cmd(), c.attr(attr::CODE).map(|a| a.as_u16().unwrap())));
        pos += n;
    }
    v
}

/// The refusal rule: a non-retryable error that is not the peer's own
/// refusal leaves a REFUSE frame with its code last; nothing else does.
fn check_refusal<T>(r: &Result<T, SessionError>, out: &[u8]) {
    let f = frames(out);
    let last = f.last().copied();
    match r {
        Err(e) if !e.retryable() && !matches!(e, SessionError::Refused { .. }) => {
            assert_eq!(
                last,
                Some((frame::REFUSE, Some(e.code().to_u16()))),
                "{e:?}"
            );
        }
        _ => assert_ne!(
            last.map(|l| l.0),
            Some(frame::REFUSE),
            "{r:?}",
            r = r.as_ref().err()
        ),
    }
}

/// The fetcher fed `input`: its result, its output, what it wrote.
fn fetch(input: &[u8], chunk: usize) -> (Result<(), SessionError>, Vec<u8>, Vec<u8>) {
    let mut peer = Peer {
        input,
        chunk,
        out: Vec::new(),
    };
    let mut out = Vec::new();
    let mut f = Fetcher::new(&mut out, FetchConfig::default());
    let r = f.fetch(&mut peer);
    assert_eq!(r.is_ok(), f.done());
    check_refusal(&r, &peer.out);
    // Whole units of a valid stream.
    let mut dec = StreamDecoder::new();
    let mut rest = &out[..];
    while !rest.is_empty() {
        match dec.decode(rest).expect("a valid stream") {
            Event::Stream { consumed, .. } | Event::Command { consumed, .. } => {
                rest = &rest[consumed..]
            }
            Event::NeedMore { .. } => panic!("a partial unit"),
        }
    }
    if r.is_ok() {
        dec.finish().unwrap();
    }
    (r, out, peer.out)
}

/// The server's DATA frames in a transcript: (offset, length, payload
/// length).
fn data_frames(server: &[u8]) -> Vec<(usize, usize, usize)> {
    let mut pos = SESSION_FORMAT.encoded_len();
    let mut v = Vec::new();
    while pos < server.len() {
        let (c, n) = decode_command(&server[pos..], &SESSION_PROFILE, 0, pos as u64).unwrap();
        if c.cmd() == frame::DATA {
            v.push((pos, n, c.attr(attr::PAYLOAD).unwrap().value().len()));
        }
        pos += n;
    }
    v
}

#[test]
fn transcripts_replay_to_a_whole_transfer() {
    let (client, server) = transcripts();
    for chunk in [usize::MAX, 1, 7, 4096] {
        let (r, out, _) = fetch(&server, chunk);
        r.unwrap();
        assert_eq!(out, stream());

        let mut peer = Peer {
            input: &client,
            chunk,
            out: Vec::new(),
        };
        let mut s = Server::from_bytes(stream(), server_config()).unwrap();
        let served = s.serve(&mut peer).unwrap();
        assert_eq!(frames(&peer.out).last().map(|f| f.0), Some(frame::BYE));
        assert!(served.units > 0);
    }
}

#[test]
fn a_damaged_data_frame_is_a_frame_error() {
    let (_, server) = transcripts();
    // The largest unit: its frame's CRC is derived from the unit's CRC on
    // both sides (at least 4 KiB).
    let &(at, len, plen) = data_frames(&server)
        .iter()
        .max_by_key(|d| d.2)
        .expect("DATA frames");
    assert!(plen >= 4096, "a unit of {plen} bytes");
    let payload = at + 24;
    // A data byte, the unit's CRC field, its length field, a seq byte, the
    // frame's CRC.
    for (what, byte) in [
        ("data", payload + plen - 1),
        ("unit crc", payload + 7),
        ("unit len", payload + 1),
        ("seq", at + 14),
        ("frame crc", at + 6),
    ] {
        let mut bad = server.clone();
        bad[byte] ^= 0x10;
        let (r, _, wrote) = fetch(&bad, usize::MAX);
        match &r {
            Err(SessionError::Frame(e)) => {
                assert!(
                    matches!(e.kind(), ErrorKind::CrcMismatch { .. }),
                    "{what}: {e}"
                );
                assert_eq!(e.offset, at as u64, "{what}: {e}");
            }
            other => panic!("{what}: {other:?}"),
        }
        assert_eq!(
            frames(&wrote).last(),
            Some(&(frame::REFUSE, Some(Code::Protocol.to_u16()))),
            "{what}"
        );

        // The same damage in a copy of the frame sent again right after it:
        // a duplicate, whose unit is not checked, must still be refused.
        let mut dup = server[..at + len].to_vec();
        dup.extend_from_slice(&bad[at..at + len]);
        dup.extend_from_slice(&server[at + len..]);
        let (r, _, _) = fetch(&dup, usize::MAX);
        assert!(
            matches!(&r, Err(SessionError::Frame(e)) if matches!(e.kind(), ErrorKind::CrcMismatch { .. })),
            "duplicate, {what}: {r:?}"
        );
    }
}

/// A crash input of the fuzz target: mode byte, then the peer's bytes.
fn replay_fuzz_input(data: &[u8]) {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    let chunk = [usize::MAX, 1, 2, 3, 7, 64, 4096, 65536][usize::from((mode >> 1) & 7)];
    if mode & 1 == 1 {
        // Other mode bits change the configuration; the defaults are kept
        // here, the properties are the same.
        let _ = fetch(input, chunk);
    } else {
        let mut peer = Peer {
            input,
            chunk,
            out: Vec::new(),
        };
        let mut s = Server::from_bytes(stream(), server_config()).unwrap();
        let r = s.serve(&mut peer);
        check_refusal(&r, &peer.out);
    }
}

#[test]
fn fuzz_regressions() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/session_handshake");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for e in entries {
        let path = e.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        eprintln!("{}", path.display());
        replay_fuzz_input(&data);
    }
}
