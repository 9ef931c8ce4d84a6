//! Both sans-IO sides of a session against each other in memory (no
//! socket, no clock; see `support/pair.rs`): the kit's native sample streams
//! arrive byte-identical through connections that drop, reads cut to any
//! size, and a sender that forgets its transfer; damage in transit is
//! refused with a typed error and never written.

#[path = "support/pair.rs"]
mod pair;

use pair::{run, small_units, units_with_bodies, Plan};
use proto_session::replay::Limits;
use proto_session::SessionError;

fn sample(name: &str) -> Vec<u8> {
    let path = format!("{}/../testdata/native/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Runs `plan` over `file`: the transfer ends without an error and the
/// output is the file.
#[track_caller]
fn arrives(what: &str, file: &[u8], plan: &Plan, max_connections: u64) -> pair::Outcome {
    let o = run(file, plan, max_connections);
    assert!(o.error.is_none(), "{what}: {:?}", o.error);
    if o.out != file {
        let at = o.out.iter().zip(file).position(|(a, b)| a != b);
        panic!(
            "{what}: output differs: {} bytes against {}, first difference at {at:?}; {:?} {:?}",
            o.out.len(),
            file.len(),
            o.sent,
            o.received
        );
    }
    o
}

/// A receiver of the native format in its data phase, its first seq 1.
fn native_receiver() -> proto_session::receive::Receiving {
    use proto_checkpoint::native::{NativeFormat, PRSTREAM};
    use proto_checkpoint::Format;
    use proto_session::handshake::Accept;
    use proto_session::receive::Receiving;
    use proto_session::replay::Resend;

    let mut r = Receiving::new(Box::new(<NativeFormat as Format>::validator(&PRSTREAM)));
    r.connect().unwrap();
    r.accepted(&Accept {
        instance: [1; 16],
        resumed: 0,
        next: 1,
        window: small_window(),
        resend: Resend::default(),
    })
    .unwrap();
    r
}

fn small_window() -> Limits {
    Limits {
        max_bytes: 200_000,
        max_messages: 3,
    }
}

#[test]
fn a_clean_transfer_is_byte_identical() {
    for name in ["data-v1.stream", "sample-v1.stream"] {
        let file = sample(name);
        for chunk in [usize::MAX, 1, 7, 4096] {
            let plan = Plan {
                chunk,
                ..Plan::clean()
            };
            let o = run(&file, &plan, 1);
            assert!(o.error.is_none(), "{name}, chunk {chunk}: {:?}", o.error);
            assert!(o.out == file, "{name}, chunk {chunk}: output differs");
            assert_eq!(o.connections, 1);
            assert_eq!(o.received.duplicates, 0);
            assert_eq!(o.sent.units_resent, 0);
        }
    }
}

#[test]
fn drops_resend_only_what_the_receiver_lacks() {
    let file = sample("data-v1.stream");
    for drop in [1, 150_000, 260_000, 300_000] {
        let plan = Plan {
            window: small_window(),
            drops: vec![drop],
            chunk: 9000,
            ..Plan::clean()
        };
        let o = arrives(&format!("drop {drop}"), &file, &plan, 50);
        assert!(o.connections > 1, "drop {drop}: never dropped");
        assert_eq!(o.received.duplicates, 0, "drop {drop}");
        assert_eq!(o.sent.resumed_by_seq, o.connections - 1, "drop {drop}");
        // Resent: only the unacknowledged window, never more than it holds.
        assert!(
            o.sent.units_resent <= (o.connections - 1) * small_window().max_messages as u64,
            "drop {drop}: {} units resent over {} connections",
            o.sent.units_resent,
            o.connections
        );
    }
}

#[test]
fn a_sender_that_forgets_resumes_from_the_receivers_token() {
    let file = sample("data-v1.stream");
    for token_every in [1, 1 << 20] {
        let plan = Plan {
            window: small_window(),
            token_every,
            drops: vec![200_000],
            forget: vec![true],
            chunk: 5000,
            ..Plan::clean()
        };
        let o = run(&file, &plan, 50);
        assert!(
            o.error.is_none(),
            "token every {token_every}: {:?}",
            o.error
        );
        assert!(o.out == file, "token every {token_every}: output differs");
        assert!(o.forgot > 0);
        assert!(o.sent.resumed_by_token > 0, "token every {token_every}");
        assert_eq!(o.received.resumed_by_token, o.sent.resumed_by_token);
        assert_eq!(o.sent.resumed_by_seq, 0);
        assert_eq!(o.received.duplicates, 0);
    }
}

/// A byte damaged in transit: the frame's CRC (or the unit's) refuses it,
/// with a typed error; the output is a prefix of the stream, never a
/// damaged unit. The flipped bytes cover the handshake, frame headers and
/// the middle of a 150 KB data command.
#[test]
fn damage_in_transit_is_refused_and_never_written() {
    let file = sample("data-v1.stream");
    for (at, compress) in [3u64, 20, 40, 200, 300, 1000, 100_500, 200_000, 300_000]
        .into_iter()
        .flat_map(|at| [(at, false), (at, true)])
    {
        // Compressed: the frames are shorter, the offsets land elsewhere.
        let plan = Plan {
            flip: Some(at),
            compress,
            ..Plan::clean()
        };
        let o = run(&file, &plan, 1);
        assert!(
            file.starts_with(&o.out),
            "flip at {at}: output not a prefix"
        );
        match &o.error {
            Some(SessionError::Frame(_) | SessionError::Header(_) | SessionError::Unit { .. }) => {}
            e => panic!(
                "flip at {at}: {e:?} (output {} of {})",
                o.out.len(),
                file.len()
            ),
        }
    }
}

/// Found by the `session_pair` fuzz target (its harness then lost what a
/// receiver read just before a drop): a window larger than the stream,
/// no token ever, whole-buffer deliveries, a drop on every connection and
/// a sender that forgets before each one. Every connection still moves
/// the receiver forward and the stream arrives whole.
#[test]
fn a_sender_that_forgets_every_time_and_no_token_still_completes() {
    let file = sample("data-v1.stream");
    let plan = Plan {
        window: Limits {
            max_bytes: 2 << 20,
            max_messages: 63,
        },
        token_every: u64::MAX,
        drops: vec![200_000, 10_000],
        forget: vec![true],
        ..Plan::clean()
    };
    let o = run(&file, &plan, 20);
    assert!(o.error.is_none(), "{:?}", o.error);
    assert!(o.out == file, "output differs");
    assert!(o.connections > 1 && o.forgot == o.connections - 1);
    assert_eq!(o.sent.resumed_by_token, o.connections - 1);
    assert!(o.sent.units_skipped > 0);
    assert_eq!(o.received.duplicates, 0);
}

/// A native stream that compresses well: text-like data commands of
/// 300 B (below the threshold), 5 KB, 70 KB and 200 KB (past the framer's
/// inline limit), each after a small command, and one 150 KB data command
/// of pseudo-random bytes (which stays plain).
fn compressible() -> Vec<u8> {
    native(true)
}

/// A native stream, its commands when `commands`, else its header and end.
fn native(commands: bool) -> Vec<u8> {
    use proto_checkpoint::native::{
        Writer, NATIVE_DATA, NATIVE_DATA_CMD, NATIVE_OBJECT, NATIVE_OFFSET,
    };
    use proto_header::{Endian, V1Header, KIT_VERSIONS};
    use proto_tlv::{AttrValue, Value};

    let header = V1Header {
        byte_order: Endian::Little,
        features_supported: 0,
        features_required: 0,
        stream_id: *b"compressible....",
        contexts: Vec::new(),
    };
    let mut w = Writer::new(Vec::new(), KIT_VERSIONS.entry(1).unwrap(), 1, &header).unwrap();
    let text: Vec<u8> = (0..200_000u32)
        .flat_map(|i| format!("line {} of a log, status ok; ", i % 977).into_bytes())
        .take(200_000)
        .collect();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let noise: Vec<u8> = (0..150_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let mut offset = 0u64;
    let n = if commands { 12 } else { 0 };
    for (i, data) in [
        &text[..300],
        &text[..5000],
        &noise[..],
        &text[..70_000],
        &text[..],
    ]
    .iter()
    .cycle()
    .take(n)
    .enumerate()
    {
        w.write_command(1, &[AttrValue::new(1, Value::U64(i as u64))])
            .unwrap();
        w.write_command(
            NATIVE_DATA_CMD,
            &[
                AttrValue::new(NATIVE_OBJECT, Value::Bytes(b"log")),
                AttrValue::new(NATIVE_OFFSET, Value::U64(offset)),
                AttrValue::new(NATIVE_DATA, Value::Bytes(data)),
            ],
        )
        .unwrap();
        offset += data.len() as u64;
    }
    w.finish().unwrap()
}

/// Compression asked and advertised: the stream arrives byte-identical,
/// cleanly, in pieces, through dropped connections and a sender that
/// forgets (its resends compressed again); fewer payload bytes cross the
/// wire than the stream holds, and the noise and the short units go plain.
#[cfg(feature = "zstd")]
#[test]
fn a_compressed_transfer_is_byte_identical() {
    let file = compressible();
    let plans = [
        ("clean", Plan::clean()),
        (
            "cut reads",
            Plan {
                chunk: 777,
                ..Plan::clean()
            },
        ),
        (
            "drops",
            Plan {
                window: small_window(),
                drops: vec![150_000, 40_000],
                chunk: 9000,
                ..Plan::clean()
            },
        ),
        (
            "a sender that forgets",
            Plan {
                window: small_window(),
                token_every: 1,
                drops: vec![100_000],
                forget: vec![true],
                chunk: 5000,
                ..Plan::clean()
            },
        ),
    ];
    for (what, plan) in plans {
        let plan = Plan {
            compress: true,
            ..plan
        };
        let o = run(&file, &plan, 100);
        assert!(o.error.is_none(), "{what}: {:?}", o.error);
        assert!(o.out == file, "{what}: output differs");
        assert_eq!(o.received.duplicates, 0, "{what}");
        let (s, r) = (o.sent, o.received);
        assert!(
            s.units_compressed > 0 && r.units_compressed > 0,
            "{what}: {s:?}"
        );
        // Plain units too: the header, the short commands, the noise.
        assert!(s.units_compressed < s.units_sent, "{what}: {s:?}");
        assert!(
            s.payload_wire_bytes * 2 < s.bytes_sent,
            "{what}: {} payload bytes on the wire for {}",
            s.payload_wire_bytes,
            s.bytes_sent
        );
        assert!(r.payload_wire_bytes < r.bytes_received, "{what}: {r:?}");
        if what == "a sender that forgets" {
            assert!(o.forgot > 0 && s.resumed_by_token > 0, "{what}: {s:?}");
        }
        if what == "drops" {
            assert!(o.connections > 1 && s.units_resent > 0, "{what}: {s:?}");
        }
        if o.connections == 1 {
            assert_eq!(s.payload_wire_bytes, r.payload_wire_bytes, "{what}");
            assert_eq!(r.bytes_delivered, file.len() as u64, "{what}");
        }
    }
}

/// A receiver that does not advertise zstd gets plain frames, however
/// much the sender was asked to compress; a sender not asked sends plain.
#[test]
fn without_the_feature_on_both_sides_frames_are_plain() {
    let file = compressible();
    for (compress, receiver_zstd) in [(true, false), (false, true)] {
        let plan = Plan {
            compress,
            receiver_zstd,
            drops: vec![120_000],
            ..Plan::clean()
        };
        let o = run(&file, &plan, 20);
        assert!(o.error.is_none(), "{:?}", o.error);
        assert!(o.out == file, "output differs");
        assert_eq!(o.sent.units_compressed, 0);
        assert_eq!(o.received.units_compressed, 0);
        assert_eq!(o.sent.payload_wire_bytes, o.sent.bytes_sent);
        assert_eq!(o.received.payload_wire_bytes, o.received.bytes_received);
    }
}

/// Compressed DATA frames built by hand: the receiver decompresses no
/// further than the length the frame declares, never past `MAX_UNIT`, and
/// refuses a bomb, garbage or a wrong length with a typed error naming the
/// frame (its seq and offset); nothing is handed out.
#[test]
fn a_bad_compressed_frame_is_a_typed_error() {
    use proto_session::framer::Framer;
    use proto_session::wire::{attr, frame, MAX_UNIT};
    use proto_session::CompressedError;
    use proto_tlv::{AttrValue, Value};

    let file = compressible();
    // The stream header, the first unit: a stream of no command less its
    // end command.
    let header_len = native(false).len() - proto_tlv::CMD_HEADER_LEN;
    let zip = |bytes: &[u8]| -> Vec<u8> {
        #[cfg(feature = "zstd")]
        {
            zstd::bulk::compress(bytes, 1).unwrap()
        }
        // Without zstd, any bytes do: the frame is refused unread.
        #[cfg(not(feature = "zstd"))]
        {
            bytes[..bytes.len().min(64)].to_vec()
        }
    };
    let bomb = zip(&vec![0u8; 2 * MAX_UNIT]);
    assert!(bomb.len() < 1 << 20);
    let cases: Vec<(&str, u64, Vec<u8>)> = vec![
        (
            "a declared length past MAX_UNIT",
            MAX_UNIT as u64 + 1,
            bomb.clone(),
        ),
        ("a bomb within the bound", MAX_UNIT as u64, bomb.clone()),
        ("a bomb past a short length", 1000, bomb),
        ("garbage", 100, b"this is not a zstd frame at all".to_vec()),
        (
            "a shorter unit",
            header_len as u64 + 1,
            zip(&file[..header_len]),
        ),
        (
            "a valid header",
            header_len as u64,
            zip(&file[..header_len]),
        ),
    ];
    for (what, len, payload) in cases {
        let mut r = native_receiver();
        let mut tx = Framer::new();
        tx.write_frame(
            frame::DATA,
            &[
                AttrValue::new(attr::SEQ, Value::U64(1)),
                AttrValue::new(attr::ZSTD_LEN, Value::U64(len)),
                AttrValue::new(attr::PAYLOAD, Value::Bytes(&payload)),
            ],
        )
        .unwrap();
        let mut rx = Framer::new();
        rx.handshake_done();
        let wire = tx.pending().to_vec();
        let mut rest = &wire[..];
        while !rest.is_empty() {
            let buf = rx.recv_buf();
            let n = buf.len().min(rest.len());
            buf[..n].copy_from_slice(&rest[..n]);
            rx.received(n);
            rest = &rest[n..];
        }
        let at = rx.next_frame("test").unwrap().unwrap();
        let crc = r.unit_crc();
        let result = r.handle(rx.incoming(at, crc).unwrap());
        match (what, result) {
            #[cfg(feature = "zstd")]
            ("a valid header", Ok(action)) => {
                assert_eq!(action.deliver.map(|u| u.bytes()), Some(&file[..header_len]));
                continue;
            }
            (_, Ok(action)) => panic!("{what}: accepted: {action:?}"),
            (_, Err(e)) => {
                let SessionError::Compressed {
                    seq,
                    offset,
                    problem,
                } = &e
                else {
                    panic!("{what}: {e:?}");
                };
                assert_eq!((*seq, *offset), (1, 0), "{what}");
                assert_eq!(e.offset(), Some(0), "{what}");
                assert!(
                    e.to_string().contains("compressed DATA frame (seq 1)"),
                    "{e}"
                );
                #[cfg(feature = "zstd")]
                match (what, problem) {
                    ("a declared length past MAX_UNIT", CompressedError::TooLong { .. })
                    | ("a bomb within the bound", CompressedError::Invalid { .. })
                    | ("a bomb past a short length", CompressedError::Invalid { .. })
                    | ("garbage", CompressedError::Invalid { .. })
                    | ("a shorter unit", CompressedError::Length { .. }) => {}
                    _ => panic!("{what}: {e}"),
                }
                #[cfg(not(feature = "zstd"))]
                assert!(
                    matches!(
                        problem,
                        CompressedError::Unsupported | CompressedError::TooLong { .. }
                    ),
                    "{what}: {e}"
                );
            }
        }
        assert_eq!(r.stats().units, 0, "{what}");
    }
}

/// Small units go into the window many per emitter fill. Connections that
/// drop inside a batch (at several offsets, delivered in pieces), with and
/// without a sender that forgets its transfer before each reconnect (then
/// re-armed from the receiver's token): the stream arrives byte-identical,
/// each unit once; resumed by seq, exactly what the receiver lacked is sent
/// again.
#[test]
fn small_units_go_several_per_fill_and_a_drop_inside_a_batch_resends_exactly_the_rest() {
    let n = 5000;
    let file = small_units(n);
    for drop in [9000, 20_011, 33_333] {
        for forget in [false, true] {
            let what = format!("drop every {drop}, forget {forget}");
            let plan = Plan {
                window: Limits {
                    max_bytes: 32 << 10,
                    max_messages: 512,
                },
                token_every: 4096,
                drops: vec![drop],
                forget: vec![forget],
                chunk: 1000,
                ..Plan::clean()
            };
            let o = arrives(&what, &file, &plan, 200);
            assert!(o.connections > 2, "{what}: {} connections", o.connections);
            assert_eq!(o.received.units, n as u64 + 2, "{what}");
            assert_eq!(o.received.duplicates, 0, "{what}");
            // Units go several to a UNITS frame (up to 64 KiB of them,
            // halved after each connection that got nothing through: a
            // link that breaks every 9,000 bytes gets frames it can carry
            // after at most four such connections).
            assert!(o.sent.units_frames > 0, "{what}: no UNITS frame");
            if forget {
                // Re-armed from the token, or from the start while the
                // receiver had nothing.
                let fresh = o.connections - 1 - o.sent.resumed_by_token;
                assert!(fresh <= 4, "{what}: {fresh} connections got nothing");
            } else {
                assert_eq!(o.sent.resumed_by_seq, o.connections - 1, "{what}");
                // Every byte sent once, plus the resends; several units
                // per fill.
                assert_eq!(
                    o.sent.bytes_sent - file.len() as u64,
                    o.sent.bytes_resent,
                    "{what}"
                );
                assert!(o.sent.bytes_resent > 0, "{what}: nothing in flight");
                assert!(
                    o.sent.fills * 8 < o.sent.units_sent,
                    "{what}: {} fills for {} units",
                    o.sent.fills,
                    o.sent.units_sent
                );
            }
        }
    }
}

/// The units of a native stream: its header, then each command.
fn cut_units(file: &[u8]) -> Vec<&[u8]> {
    let header_len = small_units(0).len() - proto_tlv::CMD_HEADER_LEN;
    let mut units = vec![&file[..header_len]];
    let mut at = header_len;
    while at < file.len() {
        let len = u32::from_le_bytes(file[at..at + 4].try_into().unwrap()) as usize;
        let n = proto_tlv::CMD_HEADER_LEN + len;
        units.push(&file[at..at + n]);
        at += n;
    }
    units
}

/// UNITS frames built by hand, fed to a receiver one after the other: the
/// units it has are discarded and the rest handed out in one piece, each
/// checked; a gap, a damaged unit and lengths that do not cut the payload
/// into units are typed errors naming the frame's offset (or the unit's
/// seq), and nothing of such a frame is handed out.
#[test]
fn units_frames_deliver_what_the_receiver_lacks_and_bad_ones_are_refused() {
    use proto_session::framer::Framer;
    use proto_session::replay::ReplayError;
    use proto_session::wire::{attr, frame};
    use proto_tlv::{AttrValue, Value};

    let file = small_units(40);
    let units = cut_units(&file);
    assert_eq!(units.len(), 42);
    let receiving = native_receiver;
    // Units `from..to` (0-based) as a UNITS frame from the sender's writer.
    let good = |seq: u64, from: usize, to: usize| {
        let mut tx = Framer::new();
        let bytes = units[from..to].concat();
        tx.write_units(seq, &bytes, units[from..to].iter().map(|u| u.len()))
            .unwrap();
        tx.pending().to_vec()
    };
    // A UNITS frame with any LENS (its bytes; `None`: none) and payload.
    let raw_lens = |seq: u64, lens: Option<&[u8]>, payload: &[u8]| {
        let mut attrs = vec![AttrValue::new(attr::SEQ, Value::U64(seq))];
        if let Some(lens) = lens {
            attrs.push(AttrValue::new(attr::LENS, Value::Bytes(lens)));
        }
        attrs.push(AttrValue::new(attr::PAYLOAD, Value::Bytes(payload)));
        let mut tx = Framer::new();
        tx.write_frame(frame::UNITS, &attrs).unwrap();
        tx.pending().to_vec()
    };
    let raw = |seq: u64, lens: &[u32], payload: &[u8]| {
        let lens: Vec<u8> = lens.iter().flat_map(|l| l.to_le_bytes()).collect();
        raw_lens(seq, Some(&lens), payload)
    };
    // Feeds `frames` to a new receiver; returns what it handed out, frame
    // by frame, and the error that stopped it.
    let feed = |frames: &[Vec<u8>]| {
        let mut r = receiving();
        let mut rx = Framer::new();
        rx.handshake_done();
        let mut out = Vec::new();
        for wire in frames {
            rx.recv_buf()[..wire.len()].copy_from_slice(wire);
            rx.received(wire.len());
            let at = rx.next_frame("test").unwrap().unwrap();
            let crc = r.unit_crc();
            match r.handle(rx.incoming(at, crc).unwrap()) {
                Ok(a) => {
                    out.push(a.deliver.map(|u| {
                        assert_eq!(u.iter().map(<[u8]>::len).sum::<usize>(), u.bytes().len());
                        (u.count(), u.bytes().to_vec())
                    }));
                    if a.refused {
                        let e = r.take_refusal().expect("the refusal");
                        return (out, Some((e, at.offset)), r.stats(), r.received());
                    }
                }
                Err(e) => return (out, Some((e, at.offset)), r.stats(), r.received()),
            }
        }
        (out, None, r.stats(), r.received())
    };

    // Units 0..10, then 5..15 (5 it has), then 0..3 (all had), then a gap.
    let (out, err, stats, received) = feed(&[
        good(1, 0, 10),
        good(6, 5, 15),
        good(1, 0, 3),
        good(20, 19, 25),
    ]);
    assert_eq!(received, 15);
    assert_eq!(out.len(), 3);
    assert_eq!(out[0], Some((10, units[..10].concat())));
    assert_eq!(out[1], Some((5, units[10..15].concat())));
    assert_eq!(out[2], None);
    assert_eq!((stats.units, stats.duplicates), (15, 8));
    let (e, _) = err.expect("a gap");
    assert!(
        matches!(
            e,
            SessionError::Replay(ReplayError::Gap {
                expected: 16,
                got: 20
            })
        ),
        "{e}"
    );

    // A damaged unit (its CRC) in the middle: named by its seq.
    let mut bytes = units[..6].concat();
    let at = units[..4].iter().map(|u| u.len()).sum::<usize>() + 12;
    bytes[at] ^= 1;
    let lens: Vec<u32> = units[..6].iter().map(|u| u.len() as u32).collect();
    // The four before it are handed out and received, it is not: the
    // receiver states seq 4, as it would after six DATA frames.
    let (out, err, stats, received) = feed(&[raw(1, &lens, &bytes)]);
    assert_eq!(out, [Some((4, units[..4].concat()))]);
    let (e, _) = err.expect("a damaged unit");
    assert!(matches!(e, SessionError::Unit { seq: 5, .. }), "{e}");
    assert_eq!((stats.units, received), (4, 4));
    // The damaged unit first in its frame: nothing handed out.
    let (out, err, stats, received) = feed(&[good(1, 0, 4), raw(5, &lens[4..], &bytes[at - 12..])]);
    assert_eq!(out.len(), 1);
    let (e, _) = err.expect("a damaged unit");
    assert!(matches!(e, SessionError::Unit { seq: 5, .. }), "{e}");
    assert_eq!((stats.units, received), (4, 4));

    // The same unit in a DATA frame of its own: refused, not received.
    let mut tx = Framer::new();
    tx.write_data(5, &bytes[at - 12..at - 12 + lens[4] as usize], None);
    let (out, err, stats, received) = feed(&[good(1, 0, 4), tx.pending().to_vec()]);
    assert_eq!(out.len(), 1);
    let (e, _) = err.expect("a damaged unit");
    assert!(matches!(e, SessionError::Unit { seq: 5, .. }), "{e}");
    assert_eq!((stats.units, received), (4, 4));

    // Lengths that do not cut the payload, after one good frame: the
    // error names the bad frame's offset; nothing of it is handed out.
    let payload = units[2..5].concat();
    let l = |i: usize| units[i].len() as u32;
    let first = good(1, 0, 2);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("no lengths", raw(3, &[], &payload)),
        ("no LENS attribute", raw_lens(3, None, &payload)),
        (
            "a LENS of 6 bytes",
            raw_lens(3, Some(&[1, 0, 0, 0, 1, 0]), &payload),
        ),
        ("an empty unit", raw(3, &[l(2), 0, l(3) + l(4)], &payload)),
        (
            "lengths short of the payload",
            raw(3, &[l(2), l(3)], &payload),
        ),
        (
            "lengths past the payload",
            raw(3, &[l(2), l(3), l(4) + 1], &payload),
        ),
        ("lengths that overflow", raw(3, &[u32::MAX; 5], &payload)),
        (
            "seqs past the largest",
            raw(u64::MAX, &[l(2), l(3) + l(4)], &payload),
        ),
    ];
    for (what, wire) in cases {
        let (out, err, stats, received) = feed(&[first.clone(), wire]);
        assert_eq!(received, 2, "{what}");
        assert_eq!(out.len(), 1, "{what}");
        let (e, offset) = err.unwrap_or_else(|| panic!("{what}: accepted"));
        assert_eq!(offset, first.len() as u64, "{what}");
        match what {
            "no LENS attribute" => assert!(matches!(e, SessionError::Frame(_)), "{what}: {e}"),
            _ => assert!(
                matches!(e, SessionError::Units { offset: Some(o), .. } if o == offset),
                "{what}: {e}"
            ),
        }
        assert_eq!(stats.units, 2, "{what}");
    }
}

/// A short command damaged in the sender's source: the sender leaves its
/// CRC to the receiver (`Emitter::set_unchecked_below`), which refuses it by
/// its seq before taking it. The output stops right before it, in UNITS
/// frames (units of about 70 bytes) and in compressed DATA frames (units of
/// about 650 bytes, past `COMPRESS_MIN`) alike: the damage is never
/// written.
#[test]
fn a_damaged_short_command_at_the_source_is_refused_by_the_receiver() {
    for compress in [false, true] {
        let pad = if compress { 600 } else { 0 };
        let file = units_with_bodies(
            (0..300).map(|i| format!("unit {i} {}", "x".repeat(pad + i % 37)).into_bytes()),
        );
        // A byte of command 150's body ("unit 150 x..."), covered by its CRC.
        let body = b"unit 150 x";
        let at = file
            .windows(body.len())
            .position(|w| w == body)
            .expect("command 150");
        let mut bad = file.clone();
        bad[at + 5] ^= 0x01;
        let plan = Plan {
            compress,
            ..Plan::clean()
        };
        let o = run(&bad, &plan, 1);
        if compress {
            assert!(o.sent.units_compressed > 100, "{:?}", o.sent);
            assert_eq!(o.sent.units_frames, 0);
        } else {
            assert!(o.sent.units_frames > 0, "{:?}", o.sent);
        }
        assert!(
            file.starts_with(&o.out),
            "compress {compress}: not a prefix"
        );
        // Stopped right before the damaged command: its header and the
        // attributes before the body are all that lie between.
        assert!(
            o.out.len() <= at && at - o.out.len() < 40,
            "compress {compress}: output {} bytes, damage at {at}",
            o.out.len()
        );
        match &o.error {
            Some(SessionError::Unit { seq, source }) => {
                // Seq 1 is the stream header, command k is seq k + 2.
                assert_eq!(*seq, 152, "compress {compress}: {source}");
                assert!(source.to_string().contains("CRC"), "{source}");
            }
            e => panic!("compress {compress}: {e:?}"),
        }
    }
}

/// The boundary between the two checks, `DERIVED_FROM` (4 KiB): a damaged
/// command of 4,095 bytes is left to the receiver, which refuses it by its
/// seq; one of 4,096 or 4,097 bytes (whose DATA frame takes its CRC from
/// the command's) is checked by the sender, which refuses it naming its
/// offset. Neither is written.
#[test]
fn damaged_commands_either_side_of_derived_from_are_refused_by_the_right_side() {
    // The bytes a command adds besides its body: measured, not assumed.
    let overhead = units_with_bodies([vec![]]).len() - units_with_bodies([]).len();
    let derived_from = proto_session::framer::DERIVED_FROM;
    for total in [derived_from - 1, derived_from, derived_from + 1] {
        let mut bodies: Vec<Vec<u8>> = (0..20).map(|i| vec![b'a' + i as u8; 100]).collect();
        bodies[10] = vec![b'z'; total - overhead];
        let file = units_with_bodies(bodies);
        let at = file.windows(64).position(|w| w == [b'z'; 64]).unwrap();
        let command_at = (at + (total - overhead)) - total;
        let mut bad = file.clone();
        bad[at + 7] ^= 0x01;
        for compress in [false, true] {
            let what = format!("{total} bytes, compress {compress}");
            let plan = Plan {
                compress,
                ..Plan::clean()
            };
            let o = run(&bad, &plan, 1);
            assert!(
                file.starts_with(&o.out) && o.out.len() <= command_at,
                "{what}"
            );
            match (&o.error, total < derived_from) {
                (Some(SessionError::Unit { seq, source }), true) => {
                    assert_eq!(*seq, 12, "{what}: {source}");
                    assert!(source.to_string().contains("CRC"), "{what}: {source}");
                }
                (Some(SessionError::Source(e)), false) => {
                    let e = e.to_string();
                    assert!(
                        e.contains("CRC") && e.contains(&format!("offset {command_at}")),
                        "{what}: {e}"
                    );
                }
                (e, _) => panic!("{what}: {e:?}"),
            }
        }
    }
}

/// A large command (past `DERIVED_FROM`) damaged in the sender's source:
/// the sender's emitter checks it as it copies it (its DATA frame's CRC is
/// derived from the command's) and stops there with an error of its own,
/// naming the command; the receiver never gets it.
#[test]
fn a_damaged_large_command_at_the_source_is_refused_by_the_sender() {
    let file = sample("data-v1.stream");
    let mut bad = file.clone();
    bad[100_500] ^= 0x01;
    let o = run(&bad, &Plan::clean(), 1);
    assert!(file.starts_with(&o.out) && o.out.len() < 100_500);
    match &o.error {
        Some(SessionError::Source(e)) => {
            let e = e.to_string();
            assert!(e.contains("CRC") && e.contains("offset 100168"), "{e}");
        }
        e => panic!("{e:?}"),
    }
}
