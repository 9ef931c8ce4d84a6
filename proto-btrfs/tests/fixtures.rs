//! Every real kernel stream (`../../tests/support/fixtures.rs`): those shipped
//! in `testdata/btrfs/` and in the complete small set `testdata/btrfs/small/`
//! (made by `scripts/mkfixtures.sh`), and the set in `../shared/fixtures/btrfs/`
//! when it is there.

#[path = "../../tests/support/fixtures.rs"]
mod fixtures;

use std::path::PathBuf;

use proto_btrfs::{
    BtrfsCommand, BtrfsStream, Dumper, Error, Event, StreamDecoder, StreamReader, Visit, HEADER_LEN,
};
use proto_tlv::{Command, Commands, Decoder, ErrorKind, OwnedCommand, Step};

fn workspace() -> PathBuf {
    fixtures::workspace()
}

/// (name, stream bytes, reference dump) for every fixture found.
fn fixtures() -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for dir in fixtures::stream_dirs() {
        for p in fixtures::streams_in(&dir) {
            let dump = std::fs::read(p.with_extension("dump")).unwrap();
            out.push((p.display().to_string(), std::fs::read(&p).unwrap(), dump));
        }
    }
    assert!(out.len() >= 9, "too few fixtures found");
    out
}

fn all_commands(bytes: &[u8]) -> Vec<Command<'_>> {
    BtrfsStream::parse(bytes)
        .unwrap()
        .commands()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn dump_is_byte_identical_to_btrfs_progs() {
    for (name, bytes, reference) in fixtures() {
        let mut out = Vec::new();
        let mut d = Dumper::new();
        for c in all_commands(&bytes) {
            d.dump(&c, &mut out).unwrap();
        }
        if out != reference {
            let ours = String::from_utf8_lossy(&out);
            let theirs = String::from_utf8_lossy(&reference);
            let line = ours.lines().zip(theirs.lines()).position(|(a, b)| a != b);
            panic!("{name}: dump differs from btrfs-progs at line {line:?}");
        }
    }
}

#[test]
fn read_adapter_agrees_with_slice_decoder() {
    for (name, bytes, _) in fixtures() {
        let fast = all_commands(&bytes);
        // Small chunks force commands to straddle reads.
        let mut rd = StreamReader::new(&bytes[..]).unwrap();
        let mut n = 0;
        while let Some(c) = rd.next_command().unwrap() {
            assert_eq!(c, fast[n], "{name}: command {n}");
            n += 1;
        }
        assert_eq!(n, fast.len(), "{name}");
        assert_eq!(rd.next_stream().unwrap(), None, "{name}");
    }
}

#[test]
fn decode_then_encode_reproduces_every_stream() {
    for (name, bytes, _) in fixtures() {
        let stream = BtrfsStream::parse(&bytes).unwrap();
        let profile = *stream.profile();
        let mut raw = bytes[..HEADER_LEN].to_vec();
        let mut typed = bytes[..HEADER_LEN].to_vec();
        for c in stream.commands() {
            let c = c.unwrap();
            // Through the generic owned form...
            OwnedCommand::from(&c).encode(&profile, &mut raw).unwrap();
            // ...and through the typed view, in the kernel's attribute order.
            let view = BtrfsCommand::parse(&c).unwrap();
            assert!(!matches!(view, BtrfsCommand::Unknown { .. }), "{name}");
            view.encode(&profile, &mut typed).unwrap();
        }
        assert!(raw == bytes, "{name}: raw re-encoding differs");
        assert!(typed == bytes, "{name}: typed re-encoding differs");
    }
}

/// The command containing stream offset `k` (the last one starting at or
/// before it).
fn containing(cmds: &[Command<'_>], k: usize) -> usize {
    cmds.partition_point(|c| c.offset() as usize <= k)
        .saturating_sub(1)
}

#[test]
fn truncation_at_every_byte_offset_is_reported() {
    for (name, bytes, _) in fixtures() {
        let stream = BtrfsStream::parse(&bytes).unwrap();
        let profile = *stream.profile();
        let cmds = all_commands(&bytes);
        // Cuts inside the stream header.
        for k in 0..HEADER_LEN {
            let e = BtrfsStream::parse(&bytes[..k]).unwrap_err();
            assert!(
                matches!(
                    e.tlv_kind(),
                    Some(ErrorKind::Truncated {
                        what: "stream header",
                        ..
                    })
                ),
                "{name}: cut at {k}: {e}"
            );
        }
        // The incremental decoder fed one byte at a time: at every cut,
        // `finish` must say truncated (inside a command) or missing END (at
        // a command boundary), with the right position.
        let mut dec = Decoder::new(profile, HEADER_LEN as u64);
        for k in HEADER_LEN..bytes.len() {
            let e = dec.finish().unwrap_err();
            let i = containing(&cmds, k);
            if cmds.iter().any(|c| c.offset() as usize == k) {
                assert_eq!(e.kind, ErrorKind::MissingEnd, "{name}: cut at {k}");
                assert_eq!(e.offset as usize, k);
            } else {
                assert!(
                    matches!(e.kind, ErrorKind::Truncated { .. }),
                    "{name}: cut at {k}: {e}"
                );
                assert_eq!(e.offset, cmds[i].offset(), "{name}: cut at {k}");
            }
            assert_eq!(e.index as usize, i, "{name}: cut at {k}");
            match dec.decode(&bytes[k..k + 1]).unwrap() {
                Step::Command { consumed, command } => {
                    assert_eq!(consumed, 1);
                    assert_eq!(
                        command.offset() + command.encoded_len() as u64,
                        k as u64 + 1
                    );
                }
                Step::NeedMore { consumed, needed } => {
                    assert_eq!(consumed, 1);
                    assert!(needed > 0);
                }
            }
        }
        dec.finish().unwrap();
        // The one-shot decoder on every cut: the commands before the cut are
        // unaffected, so decode from the start of the containing command.
        for k in HEADER_LEN..bytes.len() {
            let i = containing(&cmds, k);
            let start = cmds[i].offset() as usize;
            let mut it = Commands::new(&bytes[start..k], profile, start as u64);
            let e = it.next().unwrap().unwrap_err();
            if k == start {
                assert_eq!(e.kind, ErrorKind::MissingEnd, "{name}: cut at {k}");
            } else {
                assert!(
                    matches!(e.kind, ErrorKind::Truncated { .. }),
                    "{name}: cut at {k}: {e}"
                );
            }
            assert_eq!(e.offset as usize, start);
            assert!(it.next().is_none());
        }
    }
}

#[test]
fn truncated_files_fail_through_the_reader_too() {
    // The whole pipeline (header, reader, views) on every prefix of the
    // small no-data stream.
    let bytes = std::fs::read(workspace().join("testdata/btrfs/nodata-v2.stream")).unwrap();
    for k in 0..bytes.len() {
        let r = (|| -> Result<(), Error> {
            let mut rd = StreamReader::new(&bytes[..k])?;
            while let Some(c) = rd.next_command()? {
                BtrfsCommand::parse(&c)?;
            }
            Ok(())
        })();
        let e = r.expect_err("a cut stream must fail");
        assert!(
            matches!(
                e.tlv_kind(),
                Some(ErrorKind::Truncated { .. }) | Some(ErrorKind::MissingEnd)
            ),
            "cut at {k}: {e}"
        );
    }
}

#[test]
fn every_single_byte_change_inside_a_command_is_detected() {
    for (name, bytes, _) in fixtures() {
        let stream = BtrfsStream::parse(&bytes).unwrap();
        let profile = *stream.profile();
        let cmds: Vec<(usize, usize)> = all_commands(&bytes)
            .iter()
            .map(|c| (c.offset() as usize, c.encoded_len()))
            .collect();
        let mut work = bytes.clone();
        for &(start, len) in &cmds {
            // Only this command and what follows can be affected; decode from
            // its start (the commands before it are untouched).
            for pos in start..start + len {
                // One change per byte, its bit moving along (a full byte flip
                // in the header, where lengths and types live).
                let orig = work[pos];
                let delta = if pos - start < 10 {
                    0xff
                } else {
                    1u8 << (pos % 8)
                };
                work[pos] = orig ^ delta;
                let r: Result<Vec<_>, _> =
                    Commands::new(&work[start..], profile, start as u64).collect();
                let e = r.expect_err("a changed byte must be detected");
                assert!(
                    e.offset as usize >= start && e.offset as usize <= start + len,
                    "{name}: change at {pos} reported at {}",
                    e.offset
                );
                work[pos] = orig;
            }
        }
    }
}

#[test]
fn unsupported_versions_are_refused_by_name() {
    let good = std::fs::read(workspace().join("testdata/btrfs/nodata-v2.stream")).unwrap();
    for v in [0u32, 4, 5, 0xffff_ffff] {
        let mut b = good.clone();
        b[13..17].copy_from_slice(&v.to_le_bytes());
        for e in [
            BtrfsStream::parse(&b).unwrap_err(),
            StreamReader::new(&b[..]).unwrap_err(),
        ] {
            assert!(
                matches!(&e, Error::Version { version, offset: 13, source: proto_header::Error::Unsupported { supported, .. } } if *version == v && supported == &[1, 2, 3]),
                "{e}"
            );
            assert!(e.to_string().contains(&format!("version {v}")), "{e}");
        }
    }
    let mut b = good.clone();
    b[0] = b'B';
    let e = BtrfsStream::parse(&b).unwrap_err();
    assert!(matches!(e, Error::BadMagic { .. }));
    assert!(e.to_string().contains("Btrfs-stream"), "{e}");
}

/// Feeds `bytes` to a `StreamDecoder` in pieces of `size` bytes; returns the
/// (command offset, command type) seen and the outcome.
fn stream_decoder(bytes: &[u8], size: usize) -> (Vec<(u64, u16)>, Result<(), Error>) {
    let mut dec = StreamDecoder::new();
    let mut seen = Vec::new();
    for piece in bytes.chunks(size) {
        let mut p = piece;
        while !p.is_empty() {
            let used = match dec.decode(p) {
                Ok(Event::Stream { consumed, .. } | Event::NeedMore { consumed }) => consumed,
                Ok(Event::Command { command, consumed }) => {
                    seen.push((command.offset(), command.cmd()));
                    consumed
                }
                Err(e) => return (seen, Err(e)),
            };
            p = &p[used..];
        }
    }
    let r = dec.finish();
    // decode_each, in the same pieces, sees the same and ends the same.
    let mut dec = StreamDecoder::new();
    let mut each = Vec::new();
    let mut r_each = Ok(());
    for piece in bytes.chunks(size) {
        let visit = |v: Visit<'_, '_>| {
            if let Visit::Command(c) = v {
                each.push((c.offset(), c.cmd()));
            }
            Ok::<_, Error>(true)
        };
        match dec.decode_each(piece, visit) {
            Ok((used, stopped)) => assert!(used == piece.len() && !stopped),
            Err(e) => {
                r_each = Err(e);
                break;
            }
        }
    }
    let r_each = r_each.and_then(|()| dec.finish());
    assert_eq!(each, seen, "decode_each, pieces of {size}");
    assert_eq!(
        r_each.as_ref().map_err(|e| e.to_string()),
        r.as_ref().map_err(|e| e.to_string()),
        "decode_each, pieces of {size}"
    );
    (seen, r)
}

#[test]
fn stream_decoder_in_pieces_agrees_and_handles_concatenation() {
    for (name, bytes, _) in fixtures() {
        let expect: Vec<_> = all_commands(&bytes)
            .iter()
            .map(|c| (c.offset(), c.cmd()))
            .collect();
        for size in [1, 7, 10, 17, 4096, 1 << 20] {
            if bytes.len() > 100_000 && size < 4096 {
                continue;
            }
            let (seen, r) = stream_decoder(&bytes, size);
            r.unwrap();
            assert_eq!(seen, expect, "{name}: pieces of {size}");
        }
        // Two streams back to back: the second's offsets follow the first.
        let both = [bytes.clone(), bytes.clone()].concat();
        let (seen, r) = stream_decoder(&both, 65536);
        r.unwrap();
        assert_eq!(seen.len(), 2 * expect.len());
        assert_eq!(seen[expect.len()].0, bytes.len() as u64 + HEADER_LEN as u64);
        // Garbage after END: refused where it starts.
        let junk = [bytes.clone(), b"not a stream header".to_vec()].concat();
        let (_, r) = stream_decoder(&junk, 65536);
        assert!(
            matches!(r, Err(Error::BadMagic { offset, .. }) if offset == bytes.len() as u64),
            "{name}"
        );
        let (_, r) = stream_decoder(&junk[..bytes.len() + 5], 65536);
        let e = r.unwrap_err();
        assert!(
            matches!(
                e.tlv_kind(),
                Some(ErrorKind::Truncated {
                    what: "stream header",
                    ..
                })
            ),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains(&format!("byte offset {}", bytes.len())),
            "{e}"
        );
    }
}

/// Found by the `btrfs_dump` fuzz target (inputs in
/// `fuzz/regressions/btrfs_dump/`): state right after END, the error kept
/// after a bad header, and the offset of a following stream's bad magic.
#[test]
fn stream_decoders_after_end_and_after_a_bad_header() {
    let good = std::fs::read(workspace().join("testdata/btrfs/nodata-v2.stream")).unwrap();
    let mut bad_version = good.clone();
    bad_version[13] = 9;
    let input = [good.clone(), bad_version, good.clone()].concat();

    let mut dec = StreamDecoder::new();
    assert!(dec.between_streams());
    let mut p = &input[..];
    let err = loop {
        match dec.decode(p) {
            Ok(Event::Command { command, consumed }) => {
                let end = command.is_end();
                p = &p[consumed..];
                if end {
                    assert!(dec.between_streams(), "right after END");
                }
            }
            Ok(Event::Stream { consumed, .. } | Event::NeedMore { consumed }) => p = &p[consumed..],
            Err(e) => break e,
        }
    };
    assert!(matches!(err, Error::Version { version: 9, .. }), "{err}");
    assert_eq!(err.offset(), Some(good.len() as u64 + 13));
    // It stays failed, with the same error, for decode and finish alike.
    assert_eq!(dec.decode(&good).unwrap_err().to_string(), err.to_string());
    assert_eq!(dec.finish().unwrap_err().to_string(), err.to_string());

    // The Read adapter: a bad second header fails, and nothing after it is
    // decoded under the first stream's rules.
    let mut rd = StreamReader::new(&input[..]).unwrap();
    let e = rd.next_stream().unwrap_err();
    assert!(matches!(e, Error::Version { version: 9, .. }), "{e}");
    assert!(rd.next_command().is_err());
    assert!(rd.next_stream().is_err());

    // A following stream with a bad magic: the error names where it starts.
    let junk = [good.clone(), vec![b'X'; 40]].concat();
    let mut rd = StreamReader::new(&junk[..]).unwrap();
    let e = rd.next_stream().unwrap_err();
    assert!(
        matches!(e, Error::BadMagic { offset, .. } if offset == good.len() as u64),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains(&format!("byte offset {}", good.len())),
        "{e}"
    );
}
