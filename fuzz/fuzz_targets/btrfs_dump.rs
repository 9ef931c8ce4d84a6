//! `btrfs_dump`: a valid 17-byte btrfs stream header (version 1, 2 or 3,
//! from the first input byte) followed by the rest of the input, read two
//! ways:
//!
//! 1. in memory: `BtrfsStream::parse`, its `commands()`; after END, if bytes
//!    remain, `BtrfsStream::parse` of the remainder as a further stream (as
//!    `btrfs receive` accepts concatenated streams);
//! 2. `StreamReader` over the same bytes (`next_command`, then
//!    `next_stream` after each END), through a reader whose largest read is
//!    chosen by the first input byte too (`byte / 3`: 0 = no limit, else
//!    1, 2, 3, 5, ... bytes), so that stream headers and commands also
//!    arrive in pieces;
//! 3. `StreamDecoder` (sans-IO, the CLI's path) fed pieces of that same size.
//!
//! Each command goes through `BtrfsCommand::parse` and `Dumper::dump` (one
//! dumper per side, kept across streams).
//!
//! Properties:
//! - no panic;
//! - the three ways yield the same commands (type, payload, index, offset), the
//!   same stream versions, the same dump results and byte-identical dump
//!   output, and fail the same way (TLV errors: kind, index and offset; a bad
//!   following stream header: kind and offset);
//! - `StreamDecoder` bookkeeping: `NeedMore` takes all its input, `offset()`
//!   is the stream offset of the next byte expected, `streams()` counts the
//!   headers read, `between_streams()` is true exactly before a header is
//!   expected (at the start and after an END), and after an error it stays
//!   failed (`decode` and `finish` give the same error again);
//! - an error from `StreamReader` or `StreamDecoder` names the stream byte
//!   offset where it happened (for a refused following header: where that
//!   header starts, or the faulty field in it);
//! - `dump` appends nothing when it fails or prints nothing, and a line
//!   ending in `\n` otherwise; a view that fails to parse fails with
//!   `MissingAttr` or `AttrSize`;
//! - every parsed known view re-encodes under the stream's profile, the
//!   result decodes as one command, parses to an equal view, and re-encoding
//!   that view gives the same bytes (the kernel order is canonical).
#![cfg_attr(fuzzing, no_main)]

#[macro_use]
#[path = "common/harness.rs"]
mod harness;

use std::io::{self, Read};

use proto_btrfs::{
    BtrfsCommand, BtrfsStream, Dumper, Error, Event as DecEvent, StreamDecoder, StreamReader,
    HEADER_LEN, MAGIC,
};
use proto_tlv::{decode_command, Command, ErrorKind, Profile};

/// One observable event, comparable between the two ways.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    /// A stream header was accepted.
    Stream { version: u32 },
    /// A command, then what dumping it gave and printed.
    Cmd {
        cmd: u16,
        payload: Vec<u8>,
        index: u64,
        offset: u64,
        dump: Result<bool, String>,
        printed: Vec<u8>,
    },
    /// Decoding failed (a TLV error, as positioned by the decoder).
    Tlv(proto_tlv::Error),
    /// A following stream header was refused (header errors are compared by
    /// kind and stream offset).
    BadHeader { kind: String, offset: u64 },
}

/// `tlv_base` is added to a TLV error's offset; `at` is the stream offset of
/// the refused header.
fn header_error(e: &Error, tlv_base: u64, at: u64) -> Event {
    match e {
        Error::Tlv(t) => Event::BadHeader {
            kind: format!("{:?}", t.kind),
            offset: tlv_base + t.offset,
        },
        Error::BadMagic { found, .. } => Event::BadHeader {
            kind: format!("BadMagic({found:?})"),
            offset: at,
        },
        Error::Version {
            version, offset, ..
        } => {
            // The version field, 13 bytes into the refused header
            // (`tlv_base` for errors of a parser given the stream alone).
            let offset = tlv_base + offset;
            assert_eq!(offset, at + 13, "a version error names its field: {e}");
            Event::BadHeader {
                kind: format!("Version({version})"),
                offset,
            }
        }
        other => panic!("unexpected header error: {other:?}"),
    }
}

/// The message of a header error refused at stream offset `at` must say so.
fn check_header_position(e: &Error, at: u64, who: &str) {
    let Event::BadHeader { offset, .. } = header_error(e, 0, at) else {
        unreachable!()
    };
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("byte offset {offset}")),
        "{who}: the error for a stream header at byte offset {at} does not name \
         byte offset {offset}: {msg}"
    );
}

/// Parses, dumps and re-encodes one command.
fn visit(c: &Command<'_>, profile: &Profile, dumper: &mut Dumper, out: &mut Vec<u8>) -> Event {
    match BtrfsCommand::parse(c) {
        Ok(view) => {
            assert_eq!(view.command_type().0, c.cmd());
            if !matches!(view, BtrfsCommand::Unknown { .. }) {
                reencode(&view, c, profile);
            }
        }
        Err(e) => assert!(
            matches!(
                e.kind,
                ErrorKind::MissingAttr { .. } | ErrorKind::AttrSize { .. }
            ),
            "BtrfsCommand::parse failed with {e:?}"
        ),
    }
    let start = out.len();
    let dump = dumper.dump(c, out).map_err(|e| e.to_string());
    let printed = out[start..].to_vec();
    match dump {
        Ok(true) => assert_eq!(printed.last(), Some(&b'\n'), "dump line without newline"),
        _ => assert!(
            printed.is_empty(),
            "dump printed {printed:?} but returned {dump:?}"
        ),
    }
    Event::Cmd {
        cmd: c.cmd(),
        payload: c.payload().to_vec(),
        index: c.index(),
        offset: c.offset(),
        dump,
        printed,
    }
}

fn reencode(view: &BtrfsCommand<'_>, c: &Command<'_>, profile: &Profile) {
    let mut bytes = Vec::new();
    let n = view
        .encode(profile, &mut bytes)
        .unwrap_or_else(|e| panic!("re-encoding parsed {view:?}: {e}"));
    assert_eq!(n, bytes.len());
    let (c2, m) = decode_command(&bytes, profile, c.index(), c.offset())
        .unwrap_or_else(|e| panic!("decoding re-encoded {view:?}: {e}"));
    assert_eq!(m, n);
    assert_eq!(c2.cmd(), c.cmd());
    let view2 =
        BtrfsCommand::parse(&c2).unwrap_or_else(|e| panic!("parsing re-encoded {view:?}: {e}"));
    assert_eq!(view2, *view, "re-encoded command parses to another view");
    let mut again = Vec::new();
    view2.encode(profile, &mut again).expect("re-encode twice");
    assert_eq!(again, bytes, "re-encoding is not canonical");
}

fn in_memory(bytes: &[u8]) -> Vec<Event> {
    let mut events = Vec::new();
    let mut dumper = Dumper::new();
    let mut out = Vec::new();
    let mut base = 0u64; // stream offset of the current stream's header
    let mut rest = bytes;
    loop {
        let stream = match BtrfsStream::parse(rest) {
            Ok(s) => s,
            Err(e) => {
                assert!(base > 0, "the first header is valid: {e}");
                events.push(header_error(&e, base, base));
                return events;
            }
        };
        events.push(Event::Stream {
            version: stream.version(),
        });
        let profile = *stream.profile();
        let mut it = stream.commands();
        for r in it.by_ref() {
            match r {
                Ok(c) => {
                    let mut ev = visit(&c, &profile, &mut dumper, &mut out);
                    if let Event::Cmd { offset, .. } = &mut ev {
                        *offset += base;
                    }
                    events.push(ev);
                }
                Err(mut e) => {
                    e.offset += base;
                    events.push(Event::Tlv(e));
                    return events;
                }
            }
        }
        // Commands were positioned from this stream's header.
        let done = it.offset() as usize;
        rest = &rest[done..];
        base += done as u64;
        if rest.is_empty() {
            return events;
        }
    }
}

/// Largest read of [`ShortReads`], by `first byte / 3 - 1`.
const READ_SIZES: [usize; 12] = [1, 2, 3, 5, 7, 10, 13, 17, 31, 64, 1000, 4096];

/// A reader that returns at most `max` bytes per call.
struct ShortReads<'a> {
    data: &'a [u8],
    max: usize,
}

impl Read for ShortReads<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.max.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fn via_reader(bytes: &[u8], max_read: usize) -> Vec<Event> {
    let mut events = Vec::new();
    let mut dumper = Dumper::new();
    let mut out = Vec::new();
    let reader = ShortReads {
        data: bytes,
        max: max_read,
    };
    let mut r = StreamReader::new(reader).expect("the first header is valid");
    events.push(Event::Stream {
        version: r.version(),
    });
    loop {
        let profile = proto_btrfs::profile(r.version()).expect("profile of a read version");
        match r.next_command() {
            Ok(Some(c)) => events.push(visit(&c, &profile, &mut dumper, &mut out)),
            Ok(None) => {
                let at = r.offset();
                match r.next_stream() {
                    Ok(Some(version)) => events.push(Event::Stream { version }),
                    Ok(None) => return events,
                    Err(e) => {
                        // StreamReader positions header errors in the stream.
                        check_header_position(&e, at, "StreamReader::next_stream");
                        events.push(header_error(&e, 0, at));
                        return events;
                    }
                }
            }
            Err(Error::Tlv(e)) => {
                events.push(Event::Tlv(e));
                return events;
            }
            Err(e) => panic!("unexpected StreamReader error: {e:?}"),
        }
    }
}

fn via_stream_decoder(bytes: &[u8], piece: usize) -> Vec<Event> {
    let mut events = Vec::new();
    let mut dumper = Dumper::new();
    let mut out = Vec::new();
    let mut dec = StreamDecoder::new();
    let mut fed = 0u64; // bytes consumed so far
    let mut expect_header = true;
    let mut headers = 0u64;
    // Stream offset where the expected (or current) stream header starts; it
    // may arrive over several calls.
    let mut header_at = 0u64;
    let mut failed = None;
    // Checked last, so that the other checks are reached first.
    let mut between_mismatch = None;
    assert!(
        dec.between_streams(),
        "StreamDecoder::between_streams() at the start"
    );
    'pieces: for mut p in bytes.chunks(piece) {
        while !p.is_empty() {
            let len = p.len();
            let consumed = match dec.decode(p) {
                Ok(DecEvent::Stream { version, consumed }) => {
                    assert!(
                        expect_header,
                        "a stream header where a command was expected"
                    );
                    expect_header = false;
                    headers += 1;
                    events.push(Event::Stream { version });
                    consumed
                }
                Ok(DecEvent::Command { command, consumed }) => {
                    assert!(!expect_header, "a command where a header was expected");
                    let profile = *command.profile();
                    expect_header = command.is_end();
                    header_at = command.offset() + command.encoded_len() as u64;
                    events.push(visit(&command, &profile, &mut dumper, &mut out));
                    consumed
                }
                Ok(DecEvent::NeedMore { consumed }) => {
                    assert_eq!(consumed, len, "NeedMore must take all its input");
                    consumed
                }
                Err(e) => {
                    failed = Some(e.to_string());
                    events.push(match e {
                        Error::Tlv(t) if !expect_header => Event::Tlv(t),
                        e => {
                            check_header_position(&e, header_at, "StreamDecoder::decode");
                            header_error(&e, 0, header_at)
                        }
                    });
                    break 'pieces;
                }
            };
            assert!(consumed <= len);
            p = &p[consumed..];
            fed += consumed as u64;
            assert_eq!(dec.offset(), fed, "StreamDecoder::offset()");
            assert_eq!(dec.streams(), headers, "StreamDecoder::streams()");
            if dec.between_streams() != expect_header && between_mismatch.is_none() {
                between_mismatch = Some(format!(
                    "StreamDecoder::between_streams() is {} at byte {fed}, after {:?}",
                    !expect_header,
                    events.last()
                ));
            }
        }
    }
    match failed {
        None => {
            if let Err(e) = dec.finish() {
                events.push(match e {
                    Error::Tlv(t) if !expect_header => Event::Tlv(t),
                    e => {
                        check_header_position(&e, header_at, "StreamDecoder::finish");
                        header_error(&e, 0, header_at)
                    }
                });
            }
        }
        Some(first) => {
            // A failed decoder stays failed.
            let again = dec.decode(b"more").map(|_| ()).map_err(|e| e.to_string());
            assert_eq!(
                again,
                Err(first.clone()),
                "StreamDecoder::decode after an error"
            );
            let fin = dec.finish().map_err(|e| e.to_string());
            assert_eq!(fin, Err(first), "StreamDecoder::finish after an error");
        }
    }
    // Documented: "between streams (before the first header or after an END)".
    if let Some(m) = between_mismatch {
        panic!("{m}");
    }
    events
}

target!(|data: &[u8]| {
    let Some((&v, body)) = data.split_first() else {
        return;
    };
    let version = 1 + u32::from(v % 3);
    let max_read = match usize::from(v / 3) {
        0 => usize::MAX,
        n => READ_SIZES[(n - 1) % READ_SIZES.len()],
    };
    let mut bytes = Vec::with_capacity(HEADER_LEN + body.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&version.to_le_bytes());
    bytes.extend_from_slice(body);

    let a = in_memory(&bytes);
    let b = via_reader(&bytes, max_read);
    let c = via_stream_decoder(&bytes, max_read);
    assert_eq!(a.first(), Some(&Event::Stream { version }));
    for (name, other) in [("StreamReader", &b), ("StreamDecoder", &c)] {
        if a != *other {
            let i = a
                .iter()
                .zip(other.iter())
                .position(|(x, y)| x != y)
                .unwrap_or(a.len().min(other.len()));
            panic!(
                "in-memory and {name} differ at event {i}:\n  in memory: {:?}\n  {name}: {:?}",
                a.get(i),
                other.get(i)
            );
        }
    }
});
