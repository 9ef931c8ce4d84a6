//! `CommandCodec` (feature `tokio`) on the real kernel streams of
//! `testdata/btrfs/`: framed reads in small chunks give exactly the
//! commands of the one-shot decoder, errors at the end of input included,
//! and framed writes give the stream back byte for byte.
#![cfg(feature = "tokio")]

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::{SinkExt, StreamExt};
use proto_tlv::{
    CodecError, CommandCodec, CommandFrame, Commands, CrcVariant, Error, ErrorKind, OwnedCommand,
    Profile,
};
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::codec::{FramedRead, FramedWrite};

/// The btrfs stream header: 13 bytes of magic, a u32 LE version.
const HEADER_LEN: usize = 17;

/// The btrfs profile of `version` (written out here: proto-tlv depends on
/// no other crate of the kit).
fn btrfs_profile(version: u32) -> Profile {
    Profile {
        crc: CrcVariant::BtrfsRaw,
        max_payload_len: if version == 1 { 64 * 1024 } else { 16 << 20 },
        unbounded_data_attr: (version >= 2).then_some(19),
        end_cmd: 21,
    }
}

/// Every kernel stream shipped in testdata/btrfs/ (and small/).
fn streams() -> Vec<(String, Vec<u8>, Profile)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/btrfs");
    let mut out = Vec::new();
    for dir in [root.clone(), root.join("small")] {
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "stream"))
            .collect();
        names.sort();
        for p in names {
            let bytes = std::fs::read(&p).unwrap();
            assert_eq!(&bytes[..13], b"btrfs-stream\0", "{}", p.display());
            let version = u32::from_le_bytes(bytes[13..17].try_into().unwrap());
            out.push((p.display().to_string(), bytes, btrfs_profile(version)));
        }
    }
    assert!(out.len() >= 9, "the fixtures are missing: {}", out.len());
    out
}

/// An `AsyncRead` that hands out at most `chunk` bytes per read.
struct Chunked {
    data: Vec<u8>,
    pos: usize,
    chunk: usize,
}

impl AsyncRead for Chunked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = self
            .chunk
            .min(self.data.len() - self.pos)
            .min(buf.remaining());
        let pos = self.pos;
        buf.put_slice(&self.data[pos..pos + n]);
        self.pos += n;
        Poll::Ready(Ok(()))
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

/// Everything a framed read of `commands` (the bytes after the stream
/// header) in pieces of `chunk` bytes yields, up to and including the
/// first error.
fn framed(
    commands: &[u8],
    profile: Profile,
    chunk: usize,
) -> (Vec<CommandFrame>, Option<CodecError>) {
    runtime().block_on(async {
        let reader = Chunked {
            data: commands.to_vec(),
            pos: 0,
            chunk,
        };
        let codec = CommandCodec::with_offset(profile, HEADER_LEN as u64);
        let mut framed = FramedRead::new(reader, codec);
        let mut frames = Vec::new();
        while let Some(item) = framed.next().await {
            match item {
                Ok(f) => frames.push(f),
                Err(e) => return (frames, Some(e)),
            }
        }
        (frames, None)
    })
}

/// What the one-shot decoder yields: (cmd, index, offset, encoded bytes)
/// of each command, then its error, if any.
type Decoded = (Vec<(u16, u64, u64, Vec<u8>)>, Option<Error>);

fn one_shot(commands: &[u8], profile: Profile) -> Decoded {
    let mut out = Vec::new();
    for c in Commands::new(commands, profile, HEADER_LEN as u64) {
        match c {
            Ok(c) => {
                let start = c.offset() as usize - HEADER_LEN;
                let bytes = commands[start..start + c.encoded_len()].to_vec();
                out.push((c.cmd(), c.index(), c.offset(), bytes));
            }
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

fn as_decoded(frames: Vec<CommandFrame>, err: Option<CodecError>) -> Decoded {
    let frames = frames
        .into_iter()
        .map(|f| {
            // The borrowed view agrees with the frame.
            let c = f.command();
            assert_eq!(
                (c.cmd(), c.index(), c.offset()),
                (f.cmd(), f.index(), f.offset())
            );
            assert_eq!(c.encoded_len(), f.bytes().len());
            (f.cmd(), f.index(), f.offset(), f.bytes().to_vec())
        })
        .collect();
    let err = err.map(|e| match e {
        CodecError::Tlv(e) => e,
        other => panic!("not a codec error: {other}"),
    });
    (frames, err)
}

/// Framed reads in pieces of 1, 3, 10, 64, 4 KiB and 1 MiB give the same
/// commands (type, index, offset, bytes) as the one-shot decoder, on
/// every fixture, and the stream ends cleanly after END.
#[test]
fn framed_reads_in_any_chunk_size_agree_with_the_one_shot_decoder() {
    for (name, bytes, profile) in streams() {
        let commands = &bytes[HEADER_LEN..];
        let want = one_shot(commands, profile);
        assert!(want.1.is_none(), "{name}: {:?}", want.1);
        assert!(want.0.len() > 2, "{name}");
        assert_eq!(want.0.last().unwrap().0, 21, "{name}: ends with END");
        for chunk in [1, 3, 10, 64, 4096, 1 << 20] {
            let (frames, err) = framed(commands, profile, chunk);
            assert_eq!(as_decoded(frames, err), want, "{name}, chunks of {chunk}");
        }
    }
}

/// A stream cut anywhere (inside a header, inside a payload, between
/// commands) ends with the same typed error, index and offset as the
/// one-shot decoder gives, after the same commands: `decode_eof` names a
/// partial command `Truncated` and a stream without END `MissingEnd`.
#[test]
fn a_cut_stream_ends_with_the_one_shot_decoders_error() {
    for (name, bytes, profile) in streams().into_iter().take(3) {
        let commands = &bytes[HEADER_LEN..];
        let (whole, _) = one_shot(commands, profile);
        // Cuts: 0, inside the first header, each command boundary and
        // 1 and 11 bytes past it (for the first 40 commands).
        let mut cuts = vec![0, 5];
        for (_, _, offset, b) in whole.iter().take(40) {
            let end = *offset as usize - HEADER_LEN + b.len();
            cuts.extend([end, end + 1, end + 11]);
        }
        let mut kinds = [0usize; 2];
        for cut in cuts.into_iter().filter(|&c| c < commands.len()) {
            let piece = &commands[..cut];
            let want = one_shot(piece, profile);
            let err = want.1.as_ref().expect("a cut stream is an error");
            match err.kind {
                ErrorKind::Truncated { .. } => kinds[0] += 1,
                ErrorKind::MissingEnd => kinds[1] += 1,
                ref k => panic!("{name}: cut at {cut}: {k:?}"),
            }
            for chunk in [1, 7, 4096] {
                let (frames, err) = framed(piece, profile, chunk);
                assert_eq!(
                    as_decoded(frames, err),
                    want,
                    "{name}: cut at {cut}, chunks of {chunk}"
                );
            }
        }
        assert!(kinds[0] > 0 && kinds[1] > 0, "{name}: {kinds:?}");
    }
}

/// A damaged byte is the one-shot decoder's CRC error, at the same command
/// and offset, after the same commands.
#[test]
fn a_damaged_command_is_the_same_crc_error() {
    let (name, bytes, profile) = streams().remove(0);
    let mut commands = bytes[HEADER_LEN..].to_vec();
    let at = commands.len() / 2;
    commands[at] ^= 0x40;
    let want = one_shot(&commands, profile);
    assert!(
        matches!(want.1.as_ref().unwrap().kind, ErrorKind::CrcMismatch { .. }),
        "{name}: {want:?}"
    );
    for chunk in [1, 64, 1 << 20] {
        let (frames, err) = framed(&commands, profile, chunk);
        assert_eq!(as_decoded(frames, err), want, "{name}, chunks of {chunk}");
    }
}

/// A declared length over the profile's maximum is refused from the
/// header alone, before the read buffer is asked for room for it.
#[test]
fn an_oversized_length_is_refused_before_any_room_is_reserved() {
    let profile = btrfs_profile(2);
    // A header declaring 1 GiB, then 64 KiB of bytes.
    let mut wire = Vec::new();
    wire.extend_from_slice(&(1u32 << 30).to_le_bytes());
    wire.extend_from_slice(&15u16.to_le_bytes());
    wire.extend_from_slice(&0u32.to_le_bytes());
    wire.resize(64 * 1024, 0xAB);
    runtime().block_on(async {
        let reader = Chunked {
            data: wire,
            pos: 0,
            chunk: 10,
        };
        let mut framed = FramedRead::new(reader, CommandCodec::new(profile));
        let err = framed.next().await.unwrap().unwrap_err();
        let err = err.tlv().unwrap();
        assert_eq!(
            err.kind,
            ErrorKind::Oversized {
                cmd: 15,
                len: 1 << 30,
                max: 16 << 20
            }
        );
        assert_eq!((err.index, err.offset), (0, 0));
        // Nothing near the declared length was reserved (FramedRead starts
        // with 8 KiB).
        assert!(
            framed.read_buffer().capacity() <= 64 * 1024,
            "{}",
            framed.read_buffer().capacity()
        );
    });
}

/// Framed writes give each stream back byte for byte: frames as they were
/// decoded, borrowed commands passed through, and owned commands encoded
/// from their attributes.
#[test]
fn framed_writes_give_the_stream_back() {
    for (name, bytes, profile) in streams() {
        let commands = &bytes[HEADER_LEN..];
        let (frames, err) = framed(commands, profile, 4096);
        assert!(err.is_none(), "{name}");
        let written = runtime().block_on(async {
            let mut by_frame = FramedWrite::new(Vec::new(), CommandCodec::new(profile));
            let mut by_view = FramedWrite::new(Vec::new(), CommandCodec::new(profile));
            let mut by_attrs = FramedWrite::new(Vec::new(), CommandCodec::new(profile));
            for f in &frames {
                by_view.feed(f.command()).await.unwrap();
                by_attrs.feed(OwnedCommand::from(f)).await.unwrap();
                by_frame.send(f.clone()).await.unwrap();
            }
            SinkExt::<OwnedCommand>::flush(&mut by_attrs).await.unwrap();
            // (any item type names the sink to flush)
            SinkExt::<OwnedCommand>::flush(&mut by_view).await.unwrap();
            [
                by_frame.into_inner(),
                by_view.into_inner(),
                by_attrs.into_inner(),
            ]
        });
        for (how, w) in ["frames", "views", "attributes"].iter().zip(written) {
            assert!(w == commands, "{name}: written from {how} differs");
        }
    }
}

/// Encoding refuses what the profile cannot carry, with the command type,
/// and writes nothing.
#[test]
fn encoding_refuses_an_oversized_command_and_writes_nothing() {
    use tokio_util::codec::Encoder;
    let profile = btrfs_profile(1);
    let mut codec = CommandCodec::new(profile);
    let mut dst = bytes::BytesMut::new();
    let big = OwnedCommand {
        cmd: 15,
        attrs: vec![(1, vec![0; 60_000]), (2, vec![0; 60_000])],
    };
    let err = codec.encode(&big, &mut dst).unwrap_err();
    assert!(
        matches!(
            err.tlv().unwrap().kind,
            ErrorKind::Oversized { cmd: 15, .. }
        ),
        "{err}"
    );
    assert!(dst.is_empty());
}

/// Concatenated streams (a full and an incremental one, as `btrfs send`
/// writes them for several snapshots): after each END the caller takes
/// the next stream header off the buffer and `restart`s the codec; it
/// yields each stream's commands as the one-shot decoder does, numbered
/// from 0 in each, at their offsets in the concatenation.
#[test]
fn restart_takes_the_next_of_concatenated_streams() {
    use tokio_util::codec::Decoder;
    let all = streams();
    let pick = |n: &str| all.iter().find(|s| s.0.ends_with(n)).unwrap().clone();
    let (_, full, profile) = pick("small/full-v2.stream");
    let (_, incr, _) = pick("small/incr-v2.stream");
    let mut want = one_shot(&full[HEADER_LEN..], profile).0;
    let base = full.len() as u64;
    want.extend(
        one_shot(&incr[HEADER_LEN..], profile)
            .0
            .into_iter()
            .map(|(cmd, index, offset, b)| (cmd, index, offset + base, b)),
    );
    let wire = [full.clone(), incr.clone()].concat();
    for chunk in [1, 100, 4096] {
        let mut codec = CommandCodec::with_offset(profile, HEADER_LEN as u64);
        let mut buf = bytes::BytesMut::new();
        let (mut got, mut ends) = (Vec::new(), 0);
        let mut at = HEADER_LEN; // the first header is skipped
        let mut header_due = false;
        for piece in wire[HEADER_LEN..].chunks(chunk) {
            buf.extend_from_slice(piece);
            loop {
                if header_due {
                    if buf.len() < HEADER_LEN {
                        break;
                    }
                    let header = buf.split_to(HEADER_LEN);
                    assert_eq!(&header[..13], b"btrfs-stream\0");
                    codec.restart(profile, (at + HEADER_LEN) as u64);
                    at += HEADER_LEN;
                    header_due = false;
                }
                match codec.decode(&mut buf).unwrap() {
                    Some(f) => {
                        at += f.bytes().len();
                        if f.is_end() {
                            ends += 1;
                            header_due = true;
                        }
                        got.push((f.cmd(), f.index(), f.offset(), f.bytes().to_vec()));
                    }
                    None => break,
                }
            }
        }
        assert!(codec.decode_eof(&mut buf).unwrap().is_none());
        assert_eq!(ends, 2, "chunks of {chunk}");
        assert!(got == want, "chunks of {chunk}: the commands differ");
    }
}
