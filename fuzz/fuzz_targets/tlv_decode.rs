//! `tlv_decode`: arbitrary bytes as the command part of a stream (what
//! follows a stream header), decoded under three profiles (btrfs v1, btrfs
//! v2, and a standard-CRC profile with a small maximum and no data
//! attribute) in three ways that must agree exactly:
//!
//! 1. one-shot, with [`Commands`] over the whole input;
//! 2. incrementally, with [`Decoder`] fed pieces whose sizes (empty pieces
//!    included) are drawn from the input through `arbitrary::Unstructured`;
//! 3. through [`ReadDecoder`] over a reader that returns the same pieces
//!    (an empty piece becomes an `Interrupted` error), with a drawn chunk size.
//!
//! Properties:
//! - no panic;
//! - one-shot: commands are contiguous (index `i`, offsets add up), each one
//!   equals `decode_command` at its offset, its attributes' lengths add up to
//!   the payload, and re-encoding it (`OwnedCommand`) gives back its bytes;
//!   after an error or END the iterator yields nothing more;
//! - the three decoders yield the same commands (type, CRC, payload, index,
//!   offset) and the same outcome: the first error, kind, index and offset
//!   included; or, at the end of input, `Decoder::finish` gives what the
//!   one-shot iterator yields last (`MissingEnd` / `Truncated`); or, when
//!   bytes follow END, `TrailingData` at the end of END (its `len` is what
//!   the one call saw, so only `1 <= len <= trailing` is required);
//! - `Decoder` bookkeeping: `NeedMore` takes its whole input and names the
//!   same count as `needed()`; `offset()` is the stream offset of the next
//!   byte expected, `commands()` the count so far; a failed decoder stays
//!   failed.
#![cfg_attr(fuzzing, no_main)]

#[macro_use]
#[path = "common/harness.rs"]
mod harness;

use std::io::{self, Read};

use arbitrary::Unstructured;
use proto_tlv::{
    decode_command, Command, Commands, CrcVariant, Decoder, Error, ErrorKind, OwnedCommand,
    Profile, ReadDecoder, ReadError, Step, ATTR_HEADER_LEN, CMD_HEADER_LEN,
};

/// Stream offset of the first byte: as after a btrfs stream header.
const BASE: u64 = 17;

/// What a decoder handed out, copied so that the decoder can go on.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    cmd: u16,
    crc: u32,
    payload: Vec<u8>,
    index: u64,
    offset: u64,
}

impl From<&Command<'_>> for Seen {
    fn from(c: &Command<'_>) -> Self {
        Seen {
            cmd: c.cmd(),
            crc: c.crc(),
            payload: c.payload().to_vec(),
            index: c.index(),
            offset: c.offset(),
        }
    }
}

/// How a one-shot decoding ended.
#[derive(Debug)]
enum End {
    /// The iterator's error (its last item).
    Failed(Error),
    /// END was decoded; `trailing` bytes follow it, from stream offset `at`.
    Ended { trailing: usize, at: u64 },
}

fn profiles() -> [Profile; 3] {
    [
        proto_btrfs::profile(1).expect("btrfs v1 profile"),
        proto_btrfs::profile(2).expect("btrfs v2 profile"),
        Profile {
            crc: CrcVariant::Standard,
            max_payload_len: 4096,
            unbounded_data_attr: None,
            end_cmd: 21,
        },
    ]
}

fn one_shot(data: &[u8], profile: Profile) -> (Vec<Seen>, End) {
    let mut it = Commands::new(data, profile, BASE);
    let mut seen: Vec<Seen> = Vec::new();
    let mut next_offset = BASE;
    let end = loop {
        let Some(r) = it.next() else {
            // Only END stops the iterator without an error.
            let last = seen.last().expect("the iterator ends with END or an error");
            assert_eq!(
                last.cmd, profile.end_cmd,
                "iterator stopped after a non-END command"
            );
            break End::Ended {
                trailing: it.remainder().len(),
                at: it.offset(),
            };
        };
        match r {
            Ok(c) => {
                assert_eq!(c.index(), seen.len() as u64);
                assert_eq!(c.offset(), next_offset);
                assert_eq!(c.profile(), &profile);
                assert_eq!(c.is_end(), c.cmd() == profile.end_cmd);
                let start = (c.offset() - BASE) as usize;
                let bytes = &data[start..start + c.encoded_len()];
                check_command(&c, bytes, &profile);
                next_offset += c.encoded_len() as u64;
                assert_eq!(it.offset(), next_offset);
                seen.push(Seen::from(&c));
            }
            Err(e) => {
                assert_eq!(e.index, seen.len() as u64, "error index: {e}");
                if is_attr_error(&e.kind) {
                    // Positioned at the faulty attribute, inside the command.
                    assert!(e.offset >= next_offset + CMD_HEADER_LEN as u64, "{e}");
                    assert!(e.offset < BASE + data.len() as u64, "{e}");
                } else {
                    assert_eq!(e.offset, next_offset, "error offset: {e}");
                }
                break End::Failed(e);
            }
        }
    };
    // Stays done.
    assert!(it.next().is_none(), "iterator yields after its last item");
    (seen, end)
}

fn is_attr_error(k: &ErrorKind) -> bool {
    matches!(
        k,
        ErrorKind::AttrHeaderTruncated { .. } | ErrorKind::AttrOverrun { .. }
    )
}

/// Checks one decoded command against its own bytes.
fn check_command(c: &Command<'_>, bytes: &[u8], profile: &Profile) {
    let (again, n) = decode_command(bytes, profile, c.index(), c.offset())
        .expect("decode_command of a command the iterator decoded");
    assert_eq!(n, bytes.len());
    assert_eq!(&again, c);
    assert_eq!(c.payload(), &bytes[CMD_HEADER_LEN..]);

    // Attribute lengths add up to the payload, in order.
    let mut pos = 0usize;
    for a in c.attrs() {
        assert_eq!(a.offset(), c.offset() + (CMD_HEADER_LEN + pos) as u64);
        let hdr = if profile.unbounded_data_attr == Some(a.ty()) {
            2
        } else {
            ATTR_HEADER_LEN
        };
        pos += hdr + a.value().len();
    }
    assert_eq!(pos, c.payload().len(), "attribute lengths do not add up");

    // Re-encoding reproduces the command byte for byte.
    let owned = OwnedCommand::from(c);
    assert_eq!(
        owned.encoded_len(profile).expect("encoded_len"),
        bytes.len()
    );
    let mut out = Vec::new();
    owned.encode(profile, &mut out).expect("re-encode");
    assert_eq!(out, bytes, "re-encoding changed the command");
}

/// Piece sizes covering `len` bytes: small (empty included), medium, large
/// or everything left. Once the input runs out, the rest in one piece.
fn schedule(u: &mut Unstructured<'_>, len: usize) -> Vec<usize> {
    let mut v = Vec::new();
    let mut left = len;
    while left > 0 {
        let size = if u.is_empty() {
            left
        } else {
            let b = u.arbitrary::<u8>().unwrap_or(u8::MAX);
            match b >> 6 {
                0 => usize::from(b & 15),
                1 => 1 + usize::from(b & 63) * 5,
                2 => 1 + usize::from(u.arbitrary::<u16>().unwrap_or(0)),
                _ => left,
            }
        };
        let size = size.min(left);
        v.push(size);
        left -= size;
    }
    v
}

/// How an incremental decoding ended: `Ok` from `finish`, or the error with
/// the length of the input given to the failing `decode` call (`None` when
/// `finish` said it).
type Outcome = Result<(), (Error, Option<usize>)>;

/// Feeds `data` to a [`Decoder`] in `pieces`; returns what it handed out and
/// its outcome.
fn incremental(
    data: &[u8],
    profile: Profile,
    pieces: &[usize],
    empty_before_finish: bool,
) -> (Vec<Seen>, Outcome) {
    let mut dec = Decoder::new(profile, BASE);
    let mut seen = Vec::new();
    let mut fed = 0usize; // bytes of `data` consumed by the decoder
    let mut pos = 0usize; // bytes of `data` handed to pieces
    let mut pieces = pieces.iter();
    let outcome = 'outer: loop {
        let Some(&size) = pieces.next() else {
            if empty_before_finish {
                if let Err(e) = dec.decode(&[]) {
                    break 'outer Err((e, Some(0)));
                }
                check_bookkeeping(&dec, BASE + fed as u64, seen.len());
            }
            let r = dec.finish();
            assert_eq!(dec.finish(), r, "finish() is not idempotent");
            break r.map_err(|e| (e, None));
        };
        let mut piece = &data[pos..pos + size];
        pos += size;
        loop {
            let len = piece.len();
            match dec.decode(piece) {
                Ok(Step::Command { command, consumed }) => {
                    assert!(
                        consumed >= 1 && consumed <= len,
                        "consumed {consumed} of {len}"
                    );
                    assert_eq!(command.index(), seen.len() as u64);
                    seen.push(Seen::from(&command));
                    piece = &piece[consumed..];
                    fed += consumed;
                }
                Ok(Step::NeedMore { consumed, needed }) => {
                    assert_eq!(consumed, len, "NeedMore must take all its input");
                    piece = &piece[consumed..];
                    fed += consumed;
                    if dec.ended() {
                        assert_eq!(needed, 0);
                    } else {
                        assert!(needed >= 1);
                    }
                    assert_eq!(dec.needed(), needed, "NeedMore.needed vs needed()");
                }
                Err(e) => break 'outer Err((e, Some(len))),
            }
            check_bookkeeping(&dec, BASE + fed as u64, seen.len());
            if piece.is_empty() {
                break;
            }
        }
    };
    if let Err((e, Some(_))) = &outcome {
        // A failed decoder stays failed.
        assert_eq!(dec.needed(), 0);
        assert_eq!(dec.finish().as_ref(), Err(e));
        assert_eq!(dec.decode(b"more").err().as_ref(), Some(e));
        assert_eq!(dec.decode(&[]).err().as_ref(), Some(e));
    }
    (seen, outcome)
}

fn check_bookkeeping(dec: &Decoder, next_byte: u64, count: usize) {
    assert_eq!(dec.commands(), count as u64, "Decoder::commands()");
    assert_eq!(
        dec.offset(),
        next_byte,
        "Decoder::offset() is not the stream offset of the next byte expected"
    );
}

/// A reader that returns `data` in `pieces`; an empty piece is an
/// `Interrupted` error, which `ReadDecoder` must retry.
struct PieceReader<'a> {
    data: &'a [u8],
    pieces: std::slice::Iter<'a, usize>,
    left_in_piece: usize,
}

impl Read for PieceReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.data.is_empty() {
            return Ok(0);
        }
        if self.left_in_piece == 0 {
            match self.pieces.next() {
                Some(0) => return Err(io::ErrorKind::Interrupted.into()),
                Some(&n) => self.left_in_piece = n,
                None => self.left_in_piece = self.data.len(),
            }
        }
        let n = self.left_in_piece.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        self.left_in_piece -= n;
        Ok(n)
    }
}

fn via_read(
    data: &[u8],
    profile: Profile,
    pieces: &[usize],
    chunk: usize,
) -> (Vec<Seen>, Result<bool, Error>) {
    let reader = PieceReader {
        data,
        pieces: pieces.iter(),
        left_in_piece: 0,
    };
    let mut dec = ReadDecoder::with_chunk(reader, profile, BASE, chunk);
    let mut seen = Vec::new();
    let outcome = loop {
        match dec.next_command() {
            Ok(Some(c)) => seen.push(Seen::from(&c)),
            Ok(None) => {
                assert!(dec.ended());
                break Ok(dec.at_eof().expect("no I/O error"));
            }
            Err(ReadError::Decode(e)) => {
                // Stays failed.
                match dec.next_command() {
                    Err(ReadError::Decode(again)) => assert_eq!(again, e),
                    other => panic!("ReadDecoder did not stay failed: {other:?}"),
                }
                break Err(e);
            }
            Err(e) => panic!("unexpected ReadDecoder error: {e}"),
        }
    };
    assert_eq!(dec.commands(), seen.len() as u64);
    (seen, outcome)
}

target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    for profile in profiles() {
        let (expected, end) = one_shot(data, profile);

        let pieces = schedule(&mut u, data.len());
        let empty_before_finish = u.arbitrary::<bool>().unwrap_or(false);
        let (seen, outcome) = incremental(data, profile, &pieces, empty_before_finish);
        assert_eq!(
            seen, expected,
            "Decoder and Commands yield different commands"
        );
        match (&end, &outcome) {
            (End::Failed(want), Err((got, _))) => {
                assert_eq!(got, want, "Decoder and Commands fail differently")
            }
            (End::Ended { trailing: 0, .. }, Ok(())) => {}
            (End::Ended { trailing, at }, Err((got, fed))) if *trailing > 0 => {
                let ErrorKind::TrailingData { len } = got.kind else {
                    panic!("after END with {trailing} trailing bytes, Decoder says {got:?}");
                };
                assert_eq!(
                    (got.index, got.offset),
                    (expected.len() as u64, *at),
                    "{got}"
                );
                assert_eq!(Some(len as usize), *fed, "{got}");
                assert!(len >= 1 && len as usize <= *trailing, "{got}");
            }
            _ => panic!("Decoder outcome {outcome:?}, Commands outcome {end:?}"),
        }

        let chunk = usize::from(u.arbitrary::<u16>().unwrap_or(0));
        let (seen, outcome) = via_read(data, profile, &pieces, chunk);
        assert_eq!(
            seen, expected,
            "ReadDecoder and Commands yield different commands"
        );
        match (&end, &outcome) {
            (End::Failed(want), Err(got)) => {
                assert_eq!(got, want, "ReadDecoder and Commands fail differently")
            }
            (End::Ended { trailing, .. }, Ok(at_eof)) => assert_eq!(*at_eof, *trailing == 0),
            _ => panic!("ReadDecoder outcome {outcome:?}, Commands outcome {end:?}"),
        }
    }
});
