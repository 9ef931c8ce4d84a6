//! Properties of the codec on generated streams.

use proptest::prelude::*;
use proto_tlv::{
    decode_command, encode_command, encode_command_into, encoded_len, AttrValue, Commands,
    CrcVariant, Decoder, ErrorKind, OwnedCommand, Profile, Step, Value,
};

const END: u16 = 21;

fn profiles() -> [Profile; 3] {
    [
        Profile {
            crc: CrcVariant::BtrfsRaw,
            max_payload_len: 64 * 1024,
            unbounded_data_attr: None,
            end_cmd: END,
        },
        Profile {
            crc: CrcVariant::BtrfsRaw,
            max_payload_len: 1 << 20,
            unbounded_data_attr: Some(19),
            end_cmd: END,
        },
        Profile {
            crc: CrcVariant::Standard,
            max_payload_len: 4096,
            unbounded_data_attr: Some(19),
            end_cmd: END,
        },
    ]
}

fn arb_command() -> impl Strategy<Value = OwnedCommand> {
    (
        (0u16..40).prop_filter("not END", |c| *c != END),
        prop::collection::vec(
            (
                (0u16..40).prop_filter("not DATA", |t| *t != 19),
                prop::collection::vec(any::<u8>(), 0..40),
            ),
            0..6,
        ),
        prop::option::of(prop::collection::vec(any::<u8>(), 0..300)),
    )
        .prop_map(|(cmd, mut attrs, data)| {
            if let Some(d) = data {
                attrs.push((19, d));
            }
            OwnedCommand { cmd, attrs }
        })
}

fn encode_stream(p: &Profile, cmds: &[OwnedCommand]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in cmds {
        c.encode(p, &mut out).unwrap();
    }
    encode_command(p, END, &[], &mut out).unwrap();
    out
}

/// Feeds `bytes` to an incremental decoder in pieces of the given sizes and
/// collects the commands and the outcome.
fn incremental(
    p: Profile,
    bytes: &[u8],
    sizes: &[usize],
) -> (Vec<OwnedCommand>, Result<(), proto_tlv::Error>) {
    let mut dec = Decoder::new(p, 0);
    let mut got = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    while pos < bytes.len() {
        let n = sizes[i % sizes.len()].max(1).min(bytes.len() - pos);
        i += 1;
        let mut piece = &bytes[pos..pos + n];
        pos += n;
        while !piece.is_empty() {
            match dec.decode(piece) {
                Ok(Step::Command { command, consumed }) => {
                    got.push(OwnedCommand::from(&command));
                    piece = &piece[consumed..];
                }
                Ok(Step::NeedMore { consumed, needed }) => {
                    assert_eq!(consumed, piece.len());
                    assert!(needed > 0);
                    assert_eq!(needed, dec.needed());
                    piece = &[];
                }
                Err(e) => return (got, Err(e)),
            }
        }
    }
    (got, dec.finish())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn incremental_equals_one_shot(
        cmds in prop::collection::vec(arb_command(), 0..8),
        sizes in prop::collection::vec(1usize..64, 1..8),
        cut in any::<prop::sample::Index>(),
        flip in any::<Option<(prop::sample::Index, u8)>>(),
    ) {
        for p in profiles() {
            let Ok(_) = cmds.iter().map(|c| c.encoded_len(&p)).collect::<Result<Vec<_>, _>>() else { continue };
            let mut bytes = encode_stream(&p, &cmds);
            if let Some((at, x)) = flip {
                let i = at.index(bytes.len());
                bytes[i] ^= x;
            }
            let bytes = &bytes[..cut.index(bytes.len() + 1)];
            let one: Vec<_> = Commands::new(bytes, p, 0).collect();
            let (got, outcome) = incremental(p, bytes, &sizes);
            let ok: Vec<OwnedCommand> = one.iter().filter_map(|r| r.as_ref().ok()).map(OwnedCommand::from).collect();
            prop_assert_eq!(&got, &ok);
            match one.last() {
                Some(Err(e)) => prop_assert_eq!(outcome.unwrap_err(), e.clone()),
                Some(Ok(c)) => {
                    prop_assert!(c.is_end());
                    let fine = match &outcome { Ok(()) => true, Err(e) => matches!(e.kind, ErrorKind::TrailingData { .. }) };
                    prop_assert!(fine);
                }
                None => prop_assert!(false, "one-shot yields at least one item"),
            }
        }
    }

    #[test]
    fn encode_decode_roundtrip(cmd in arb_command(), room in 0usize..400) {
        for p in profiles() {
            let attrs = cmd.attr_values();
            match encoded_len(&p, &attrs) {
                Err(e) => { let oversized = matches!(e.kind, ErrorKind::Oversized { .. }); prop_assert!(oversized); continue; }
                Ok(n) => {
                    let mut v = Vec::new();
                    prop_assert_eq!(encode_command(&p, cmd.cmd, &attrs, &mut v).unwrap(), n);
                    prop_assert_eq!(v.len(), n);
                    let (back, used) = decode_command(&v, &p, 0, 0).unwrap();
                    prop_assert_eq!(used, n);
                    prop_assert_eq!(OwnedCommand::from(&back), cmd.clone());
                    let mut buf = vec![0xAAu8; room];
                    match encode_command_into(&p, cmd.cmd, &attrs, &mut buf) {
                        Ok(w) => { prop_assert_eq!(w, n); prop_assert_eq!(&buf[..n], &v[..]); }
                        Err(e) => {
                            prop_assert!(room < n);
                            prop_assert_eq!(e.kind, ErrorKind::DoesNotFit { needed: n, available: room });
                            prop_assert!(buf.iter().all(|&b| b == 0xAA), "nothing written");
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn encoder_rules() {
    let p = profiles()[1];
    let data_then_more = [
        AttrValue::new(19, Value::Bytes(b"x")),
        AttrValue::new(15, Value::Bytes(b"p")),
    ];
    assert_eq!(
        encoded_len(&p, &data_then_more).unwrap_err().kind,
        ErrorKind::AttrAfterData { attr_type: 15 }
    );
    let big = vec![0u8; 70_000];
    let e = encoded_len(&p, &[AttrValue::new(15, Value::Bytes(&big))]).unwrap_err();
    assert_eq!(
        e.kind,
        ErrorKind::AttrTooLong {
            attr_type: 15,
            len: 70_000
        }
    );
    // The unbounded data attribute may exceed 64 KiB.
    assert_eq!(
        encoded_len(&p, &[AttrValue::new(19, Value::Bytes(&big))]).unwrap(),
        10 + 2 + 70_000
    );
    // In a profile without it, type 19 is an ordinary attribute.
    let p1 = profiles()[0];
    assert!(encoded_len(&p1, &[AttrValue::new(19, Value::Bytes(&big))]).is_err());
}

#[test]
fn oversized_length_is_refused_before_the_payload_arrives() {
    let p = profiles()[2];
    let mut hdr = [0u8; 10];
    hdr[..4].copy_from_slice(&u32::MAX.to_le_bytes());
    let mut dec = Decoder::new(p, 100);
    let e = dec.decode(&hdr).unwrap_err();
    assert_eq!(
        e.kind,
        ErrorKind::Oversized {
            cmd: 0,
            len: u32::MAX,
            max: 4096
        }
    );
    assert_eq!((e.index, e.offset), (0, 100));
    assert_eq!((e.index(), e.offset()), (e.index, e.offset));
    // It stays failed.
    assert_eq!(dec.decode(b"more").unwrap_err(), e);
    // Header in two pieces: same verdict.
    let mut dec = Decoder::new(p, 100);
    assert!(matches!(
        dec.decode(&hdr[..7]).unwrap(),
        Step::NeedMore {
            consumed: 7,
            needed: 3
        }
    ));
    assert_eq!(dec.decode(&hdr[7..]).unwrap_err(), e);
    let e2 = Commands::new(&hdr, p, 100).next().unwrap().unwrap_err();
    assert_eq!(e2, e);
}

#[test]
fn attribute_overrun_names_the_attribute_and_its_offset() {
    let p = profiles()[0];
    let mut v = Vec::new();
    encode_command(
        &p,
        3,
        &[
            AttrValue::new(15, Value::Bytes(b"abc")),
            AttrValue::new(3, Value::U64(9)),
        ],
        &mut v,
    )
    .unwrap();
    // Make the second attribute claim 200 bytes, then fix the CRC so that only
    // the layout is wrong.
    v[10 + 7 + 2..10 + 7 + 4].copy_from_slice(&200u16.to_le_bytes());
    v[6..10].fill(0);
    let crc = p.crc.checksum(&v);
    v[6..10].copy_from_slice(&crc.to_le_bytes());
    let e = decode_command(&v, &p, 5, 1000).unwrap_err();
    assert_eq!(
        e.kind,
        ErrorKind::AttrOverrun {
            attr_type: 3,
            declared: 200,
            remaining: 8
        }
    );
    assert_eq!((e.index, e.offset), (5, 1000 + 10 + 7));
    assert!(e.to_string().contains("command 5, byte offset 1017"), "{e}");
}

#[test]
fn crc_mismatch_reports_stored_and_computed() {
    let p = profiles()[0];
    let mut v = Vec::new();
    encode_command(&p, 3, &[AttrValue::new(15, Value::Bytes(b"abc"))], &mut v).unwrap();
    let good = u32::from_le_bytes(v[6..10].try_into().unwrap());
    v[6] ^= 0xff;
    let e = decode_command(&v, &p, 0, 0).unwrap_err();
    assert_eq!(
        e.kind,
        ErrorKind::CrcMismatch {
            cmd: 3,
            stored: good ^ 0xff,
            computed: good
        }
    );
}

#[test]
fn standard_crc_rejects_an_all_zero_command_btrfs_raw_does_not() {
    let zeros = [0u8; 10];
    let std_p = profiles()[2];
    assert!(matches!(
        decode_command(&zeros, &std_p, 0, 0).unwrap_err().kind,
        ErrorKind::CrcMismatch { .. }
    ));
    let raw = profiles()[0];
    assert_eq!(decode_command(&zeros, &raw, 0, 0).unwrap().0.cmd(), 0);
}

#[test]
fn missing_end_and_trailing_data() {
    let p = profiles()[0];
    let mut v = Vec::new();
    encode_command(&p, 3, &[], &mut v).unwrap();
    let e = Commands::new(&v, p, 17).nth(1).unwrap().unwrap_err();
    assert_eq!((e.kind, e.index, e.offset), (ErrorKind::MissingEnd, 1, 27));
    encode_command(&p, END, &[], &mut v).unwrap();
    v.extend_from_slice(b"junk");
    let mut it = Commands::new(&v, p, 0);
    assert_eq!(it.by_ref().count(), 2);
    assert_eq!(it.remainder(), b"junk");
    let mut dec = Decoder::new(p, 0);
    let mut rest = &v[..];
    loop {
        match dec.decode(rest) {
            Ok(Step::Command { consumed, .. }) => rest = &rest[consumed..],
            Ok(Step::NeedMore { .. }) => panic!("all there"),
            Err(e) => {
                assert_eq!(e.kind, ErrorKind::TrailingData { len: 4 });
                assert_eq!(e.offset, 20);
                break;
            }
        }
    }
}

#[test]
fn typed_accessors_check_sizes() {
    let p = profiles()[0];
    let ts = proto_tlv::Timespec {
        sec: 1_700_000_000,
        nsec: 5,
    };
    let mut v = Vec::new();
    encode_command(
        &p,
        1,
        &[
            AttrValue::new(1, Value::U8(7)),
            AttrValue::new(2, Value::U16(0x1234)),
            AttrValue::new(3, Value::U32(0xdead_beef)),
            AttrValue::new(4, Value::U64(u64::MAX - 1)),
            AttrValue::new(5, Value::Uuid([9; 16])),
            AttrValue::new(6, Value::Timespec(ts)),
            AttrValue::new(7, Value::Bytes(b"p\xffth")),
        ],
        &mut v,
    )
    .unwrap();
    let (c, _) = decode_command(&v, &p, 0, 0).unwrap();
    assert_eq!(c.require(1).unwrap().as_u8().unwrap(), 7);
    assert_eq!(c.require(2).unwrap().as_u16().unwrap(), 0x1234);
    assert_eq!(c.require(3).unwrap().as_u32().unwrap(), 0xdead_beef);
    assert_eq!(c.require(4).unwrap().as_u64().unwrap(), u64::MAX - 1);
    assert_eq!(c.require(5).unwrap().as_uuid().unwrap(), [9; 16]);
    assert_eq!(c.require(6).unwrap().as_timespec().unwrap(), ts);
    assert_eq!(c.require(7).unwrap().as_path(), b"p\xffth");
    let e = c.require(4).unwrap().as_u32().unwrap_err();
    assert_eq!(
        e.kind,
        ErrorKind::AttrSize {
            attr_type: 4,
            expected: 4,
            actual: 8
        }
    );
    assert_eq!(e.offset, 10 + 5 + 6 + 8);
    let e = c.require(8).unwrap_err();
    assert_eq!(
        e.kind,
        ErrorKind::MissingAttr {
            cmd: 1,
            attr_type: 8
        }
    );
}
