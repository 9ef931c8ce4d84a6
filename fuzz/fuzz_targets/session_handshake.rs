//! `session_handshake`: arbitrary peer bytes fed to one side of a session
//! (`proto_stream::session`), on one connection.
//!
//! Input: a mode byte, then everything the peer sends (then EOF). Mode bits:
//! - bit 0: 0 = our side is a `Server` serving `nodata-v2.stream` and
//!   `incr-v2.stream` concatenated (two contexts; a window of 16 KiB /
//!   8 units, a token every 8 KiB); 1 = our side is a `Fetcher` writing
//!   into a `Vec`;
//! - bits 1-3: the most bytes one `read` returns (all, 1, 2, 3, 7, 64,
//!   4096, 65536);
//! - bit 4: server: it also requires the TOKENS feature; fetcher: it
//!   selects context "2" only;
//! - bit 5: our side offers session versions 1..=2 (only 1 exists).
//!
//! The seeds (`fuzz/seed-corpus.sh session_handshake`, from
//! `examples/session_transcript.rs`) are real transcripts: what a fetcher
//! sent to a server with this configuration (server seeds), and what that
//! server sent (fetcher seeds).
//!
//! Properties:
//! - no panic; the result is `Ok` or a typed `SessionError` whose message
//!   formats; `Closed` names an offset within the peer's bytes;
//! - what our side wrote is its 16-byte fixed header, then whole session
//!   frames (valid CRCs) of the types its role sends, REFUSE only last;
//! - every refusal is told to the peer: an error that is not retryable and
//!   not the peer's own refusal leaves a REFUSE frame last, with the error's
//!   code and a non-empty message of at most 4 KiB; no REFUSE otherwise;
//! - server: DATA seqs are consecutive from ACCEPT's SEQ, each payload is a
//!   whole unit (stream header or command) of the file; TOKEN seqs are
//!   already sent and their tokens decode; `Ok` only after FINISH then BYE,
//!   with every seq up to FINISH sent;
//! - fetcher: the output is always whole units of a valid stream (decoded
//!   with `StreamDecoder`: no partial unit), as many bytes as its stats
//!   say; `Ok` only when `done()`, the output then a complete stream.
#![cfg_attr(fuzzing, no_main)]

#[macro_use]
#[path = "common/harness.rs"]
mod harness;

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::sync::OnceLock;

use proto_btrfs::{Event, StreamDecoder};
use proto_session::replay::Limits;
use proto_checkpoint::Token;
use proto_header::VersionRange;
use proto_stream::session::{
    attr, frame, FetchConfig, Fetcher, Server, ServerConfig, SessionError, FEATURE_REPLAY,
    FEATURE_TOKENS, SESSION_FORMAT, SESSION_PROFILE, SESSION_VERSIONS,
};
use proto_tlv::decode_command;

/// The served file: two streams, so two contexts (as
/// `examples/session_transcript.rs` serves).
fn stream() -> &'static (Vec<u8>, HashSet<Vec<u8>>) {
    static S: OnceLock<(Vec<u8>, HashSet<Vec<u8>>)> = OnceLock::new();
    S.get_or_init(|| {
        let mut s = include_bytes!("../../testdata/btrfs/nodata-v2.stream").to_vec();
        s.extend_from_slice(include_bytes!("../../testdata/btrfs/incr-v2.stream"));
        // Every unit (stream header or command) of the file.
        let mut units = HashSet::new();
        let mut dec = StreamDecoder::new();
        let mut rest = &s[..];
        while !rest.is_empty() {
            let n = match dec.decode(rest).expect("fixture stream") {
                Event::Stream { consumed, .. } | Event::Command { consumed, .. } => consumed,
                Event::NeedMore { .. } => panic!("fixture stream cut"),
            };
            units.insert(rest[..n].to_vec());
            rest = &rest[n..];
        }
        (s, units)
    })
}

/// The server's configuration (`examples/session_transcript.rs` records
/// its seeds with the same window: keep them in step).
fn server_config(mode: u8) -> ServerConfig {
    ServerConfig {
        window: Limits {
            max_bytes: 16 << 10,
            max_messages: 8,
        },
        token_every: 8 << 10,
        versions: versions(mode),
        required: if mode & 0x10 != 0 {
            FEATURE_REPLAY | FEATURE_TOKENS
        } else {
            FEATURE_REPLAY
        },
        ..ServerConfig::default()
    }
}

fn fetch_config(mode: u8) -> FetchConfig {
    FetchConfig {
        versions: versions(mode),
        contexts: if mode & 0x10 != 0 {
            vec!["2".into()]
        } else {
            Vec::new()
        },
        ..FetchConfig::default()
    }
}

fn versions(mode: u8) -> VersionRange {
    if mode & 0x20 != 0 {
        VersionRange { min: 1, max: 2 }
    } else {
        SESSION_VERSIONS
    }
}

/// The peer: reads come from the input (at most `chunk` bytes each), then
/// EOF; writes are kept.
struct Peer<'a> {
    input: &'a [u8],
    chunk: usize,
    read: usize,
    out: Vec<u8>,
}

impl Read for Peer<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.chunk).min(self.input.len() - self.read);
        buf[..n].copy_from_slice(&self.input[self.read..self.read + n]);
        self.read += n;
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

/// A frame our side wrote: type and attributes we check.
struct Frame {
    ty: u16,
    seq: Option<u64>,
    code: Option<u16>,
    message_len: usize,
    payload: Option<Vec<u8>>,
    token: Option<Vec<u8>>,
}

/// Our fixed header then whole frames.
fn our_frames(out: &[u8], versions: VersionRange) -> Vec<Frame> {
    let mut fixed = Vec::new();
    SESSION_FORMAT
        .encode(versions.max, versions.min, &mut fixed)
        .expect("our fixed header");
    assert!(
        out.starts_with(&fixed),
        "our output starts with our fixed header"
    );
    let mut pos = fixed.len();
    let mut frames = Vec::new();
    while pos < out.len() {
        let (c, n) = decode_command(
            &out[pos..],
            &SESSION_PROFILE,
            frames.len() as u64,
            pos as u64,
        )
        .unwrap_or_else(|e| panic!("our frame at byte {pos} does not decode: {e}"));
        let u64_of = |ty| c.attr(ty).map(|a| a.as_u64().expect("a u64 attribute"));
        frames.push(Frame {
            ty: c.cmd(),
            seq: u64_of(attr::SEQ),
            code: c.attr(attr::CODE).map(|a| a.as_u16().expect("a u16 code")),
            message_len: c.attr(attr::MESSAGE).map_or(0, |a| a.value().len()),
            payload: c.attr(attr::PAYLOAD).map(|a| a.value().to_vec()),
            token: c.attr(attr::TOKEN).map(|a| a.value().to_vec()),
        });
        pos += n;
    }
    frames
}

/// Checks the refusal rule and the error itself; returns our frames.
fn check_common<T>(
    r: &Result<T, SessionError>,
    out: &[u8],
    input_len: usize,
    versions: VersionRange,
    allowed: &[u16],
) -> Vec<Frame> {
    let frames = our_frames(out, versions);
    for (i, f) in frames.iter().enumerate() {
        assert!(
            allowed.contains(&f.ty),
            "frame {i}: our side may not send {}",
            frame::name(f.ty)
        );
        assert!(
            f.ty != frame::REFUSE || i + 1 == frames.len(),
            "REFUSE is our last frame"
        );
    }
    let last = frames.last().map(|f| f.ty);
    match r {
        Ok(_) => assert_ne!(last, Some(frame::REFUSE), "Ok after a refusal"),
        Err(e) => {
            assert!(!e.to_string().is_empty());
            if let SessionError::Closed { offset, .. } = e {
                assert!(
                    *offset <= input_len as u64,
                    "Closed at {offset} of {input_len}"
                );
            }
            if e.retryable() || matches!(e, SessionError::Refused { .. }) {
                assert_ne!(last, Some(frame::REFUSE), "refused on {e:?}");
            } else {
                let Some(f) = frames.last().filter(|f| f.ty == frame::REFUSE) else {
                    panic!("{e:?} was not told to the peer");
                };
                assert_eq!(f.code, Some(e.code().to_u16()), "the code of {e:?}");
                assert!(f.message_len > 0 && f.message_len <= 4096);
            }
        }
    }
    frames
}

fn run_server(mode: u8, peer: &mut Peer<'_>) {
    let (file, units) = stream();
    let mut server = Server::from_bytes(file.clone(), server_config(mode)).expect("the fixture");
    let r = server.serve(&mut *peer);
    let frames = check_common(
        &r,
        &peer.out,
        peer.input.len(),
        versions(mode),
        &[
            frame::HELLO,
            frame::ACCEPT,
            frame::DATA,
            frame::TOKEN,
            frame::FINISH,
            frame::BYE,
            frame::REFUSE,
        ],
    );
    let mut next = None;
    let mut sent = 0;
    let mut finish = None;
    for f in &frames {
        match f.ty {
            frame::ACCEPT => {
                assert!(next.is_none(), "one ACCEPT");
                let seq = f.seq.expect("ACCEPT has a SEQ");
                assert!(seq >= 1);
                next = Some(seq);
                sent = seq - 1;
            }
            frame::DATA => {
                let seq = f.seq.expect("DATA has a SEQ");
                assert_eq!(Some(seq), next, "DATA seqs are consecutive from ACCEPT's");
                next = Some(seq + 1);
                sent = seq;
                let p = f.payload.as_ref().expect("DATA has a payload");
                assert!(units.contains(p), "DATA {seq} is not a unit of the file");
            }
            frame::TOKEN => {
                let seq = f.seq.expect("TOKEN has a SEQ");
                assert!(
                    next.is_some() && seq <= sent,
                    "TOKEN {seq} ahead of DATA {sent}"
                );
                let t = Token::from_bytes(f.token.as_ref().expect("TOKEN has a token"))
                    .expect("our token decodes");
                assert_eq!(t.seq, seq);
            }
            frame::FINISH => {
                let seq = f.seq.expect("FINISH has a SEQ");
                assert!(finish.is_none());
                assert_eq!(seq, sent, "FINISH after the last DATA");
                finish = Some(seq);
            }
            frame::BYE => assert!(finish.is_some(), "BYE after FINISH"),
            _ => {}
        }
    }
    if let Ok(served) = r {
        assert_eq!(frames.last().map(|f| f.ty), Some(frame::BYE));
        assert_eq!(finish, Some(served.units));
    }
}

fn run_fetcher(mode: u8, peer: &mut Peer<'_>) {
    let mut out = Vec::new();
    let mut fetcher = Fetcher::new(&mut out, fetch_config(mode));
    let r = fetcher.fetch(&mut *peer);
    let done = fetcher.done();
    let stats = fetcher.stats();
    check_common(
        &r,
        &peer.out,
        peer.input.len(),
        versions(mode),
        &[frame::HELLO, frame::SELECT, frame::ACK, frame::REFUSE],
    );
    assert_eq!(stats.receive.bytes_delivered, out.len() as u64);
    // Whole units of a valid stream, never a part of one.
    let mut dec = StreamDecoder::new();
    let mut rest = &out[..];
    let mut units = 0;
    while !rest.is_empty() {
        match dec.decode(rest) {
            Ok(Event::Stream { consumed, .. } | Event::Command { consumed, .. }) => {
                rest = &rest[consumed..];
                units += 1;
            }
            Ok(Event::NeedMore { .. }) => panic!("the output ends inside a unit"),
            Err(e) => panic!("the output is not a valid stream: {e}"),
        }
    }
    assert_eq!(units, stats.receive.units);
    if r.is_ok() {
        assert!(done);
        dec.finish().expect("a complete stream on Ok");
    }
}

target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    let chunk = [usize::MAX, 1, 2, 3, 7, 64, 4096, 65536][usize::from((mode >> 1) & 7)];
    let mut peer = Peer {
        input,
        chunk,
        read: 0,
        out: Vec::new(),
    };
    if mode & 1 == 0 {
        run_server(mode, &mut peer);
    } else {
        run_fetcher(mode, &mut peer);
    }
});
