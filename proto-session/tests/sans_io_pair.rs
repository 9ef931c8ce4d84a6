//! Both sans-IO sides of a session against each other in memory (no
//! socket, no clock; see `support/pair.rs`): the kit's native sample streams
//! arrive byte-identical through connections that drop, reads cut to any
//! size, and a sender that forgets its transfer; damage in transit is
//! refused with a typed error and never written.

#[path = "support/pair.rs"]
mod pair;

use pair::{run, small_units, Plan};
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
    assert!(o.out == file, "{what}: output differs");
    o
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
    use proto_checkpoint::native::{NativeFormat, PRSTREAM};
    use proto_checkpoint::Format;
    use proto_session::framer::Framer;
    use proto_session::handshake::Accept;
    use proto_session::receive::Receiving;
    use proto_session::replay::Resend;
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
                assert_eq!(action.deliver, Some(&file[..header_len]));
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
            if forget {
                assert_eq!(o.sent.resumed_by_token, o.connections - 1, "{what}");
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
