//! `tlv_roundtrip`: an arbitrary list of [`OwnedCommand`]s and a profile
//! (btrfs v1/v2/v3, or any CRC variant, maximum, data attribute and END
//! type), encoded one by one.
//!
//! Some attribute values can be inflated past 64 KiB so that the length
//! limits are reached without megabyte-sized fuzz inputs.
//!
//! Properties, for each command:
//! - `encoded_len` and `encode_command` agree with a model of the rules: a
//!   bounded value over 65535 bytes is `AttrTooLong`; any attribute after the
//!   profile's unbounded data attribute is `AttrAfterData` (so a data-type
//!   attribute that is not last cannot be encoded, and one that is last can);
//!   a payload over the profile's maximum is `Oversized`; otherwise the
//!   encoded size is the model's (header 10, attribute header 4, or 2 for
//!   the data attribute, plus values);
//! - on error, `encode_command` leaves its output as it was;
//! - on success it appends exactly `encoded_len` bytes after what was there,
//!   and `decode_command` of them gives back an equal `OwnedCommand`, the
//!   same type, index, offset and length, and the stored CRC;
//! - `encode_command_into` a buffer of a drawn size (smaller, equal or
//!   larger): the same error as `encode_command` when the command cannot be
//!   encoded; else exactly the same bytes when it fits (the rest of the
//!   buffer untouched), or `DoesNotFit { needed, available }` writing
//!   nothing;
//! - the concatenation of the encoded commands decodes with `Commands` to the
//!   same list, up to the first END (then nothing more), or ends with
//!   `MissingEnd` at its end.
#![cfg_attr(fuzzing, no_main)]

#[macro_use]
#[path = "common/harness.rs"]
mod harness;

use arbitrary::Arbitrary;
use proto_tlv::{
    decode_command, encode_command, encode_command_into, encoded_len, Commands, CrcVariant,
    ErrorKind, OwnedCommand, Profile, ATTR_HEADER_LEN, CMD_HEADER_LEN,
};

#[derive(Arbitrary, Debug)]
enum ProfileChoice {
    /// `proto_btrfs::profile(1 + v % 3)`.
    Btrfs(u8),
    /// Anything.
    Custom {
        crc: CrcVariant,
        max_payload_len: u32,
        unbounded_data_attr: Option<u16>,
        end_cmd: u16,
    },
    /// A small maximum, so that `Oversized` is reached with small inputs.
    Small {
        crc: CrcVariant,
        max_payload_len: u8,
        unbounded_data_attr: Option<u16>,
    },
}

impl ProfileChoice {
    fn profile(&self) -> Profile {
        match *self {
            ProfileChoice::Btrfs(v) => {
                proto_btrfs::profile(1 + u32::from(v % 3)).expect("btrfs profile")
            }
            ProfileChoice::Custom {
                crc,
                max_payload_len,
                unbounded_data_attr,
                end_cmd,
            } => Profile {
                crc,
                max_payload_len,
                unbounded_data_attr,
                end_cmd,
            },
            ProfileChoice::Small {
                crc,
                max_payload_len,
                unbounded_data_attr,
            } => Profile {
                crc,
                max_payload_len: u32::from(max_payload_len),
                unbounded_data_attr,
                end_cmd: 21,
            },
        }
    }
}

/// Grows one attribute value by `extra % 140_000` bytes of `fill`.
#[derive(Arbitrary, Debug)]
struct Inflate {
    cmd: u8,
    attr: u8,
    extra: u32,
    fill: u8,
}

#[derive(Arbitrary, Debug)]
struct Input {
    profile: ProfileChoice,
    cmds: Vec<OwnedCommand>,
    inflate: Vec<Inflate>,
    /// Bytes already in the output vector before each `encode_command`.
    prefix: u8,
    /// Buffer sizes for `encode_command_into`, used in turn.
    into_sizes: Vec<(u8, u16)>,
}

/// What the rules say about a command: its encoded size, or the error.
#[derive(Debug, PartialEq, Eq)]
enum Expect {
    Len(usize),
    TooLong { attr_type: u16, len: usize },
    AfterData { attr_type: u16 },
    Oversized { len: usize },
}

fn model(profile: &Profile, cmd: &OwnedCommand) -> Expect {
    let mut len = 0usize;
    let mut after_data = false;
    for (ty, value) in &cmd.attrs {
        if after_data {
            return Expect::AfterData { attr_type: *ty };
        }
        if profile.unbounded_data_attr == Some(*ty) {
            after_data = true;
            len += 2 + value.len();
        } else if value.len() > 0xFFFF {
            return Expect::TooLong {
                attr_type: *ty,
                len: value.len(),
            };
        } else {
            len += ATTR_HEADER_LEN + value.len();
        }
    }
    if len > profile.max_payload_len as usize {
        return Expect::Oversized { len };
    }
    Expect::Len(CMD_HEADER_LEN + len)
}

/// Checks an encoder error against the model.
fn check_error(e: &proto_tlv::Error, want: &Expect, profile: &Profile) {
    assert_eq!((e.index, e.offset), (0, 0), "encoder error position: {e}");
    match (&e.kind, want) {
        (
            ErrorKind::AttrTooLong { attr_type, len },
            Expect::TooLong {
                attr_type: t,
                len: l,
            },
        ) => assert_eq!((attr_type, len), (t, l)),
        (ErrorKind::AttrAfterData { attr_type }, Expect::AfterData { attr_type: t }) => {
            assert_eq!(attr_type, t)
        }
        (ErrorKind::Oversized { len, max, .. }, Expect::Oversized { len: l }) => {
            assert_eq!(*len, u32::try_from(*l).unwrap_or(u32::MAX));
            assert_eq!(*max, profile.max_payload_len);
        }
        _ => panic!("encoder error {e:?}, the rules say {want:?}"),
    }
}

target!(|input: Input| {
    let profile = input.profile.profile();
    let mut cmds = input.cmds;
    // Inflate a few values (bounded, to keep runs fast).
    for inf in input.inflate.iter().take(3) {
        if cmds.is_empty() {
            break;
        }
        let c = usize::from(inf.cmd) % cmds.len();
        let attrs = &mut cmds[c].attrs;
        if attrs.is_empty() {
            continue;
        }
        let a = usize::from(inf.attr) % attrs.len();
        let extra = (inf.extra % 140_000) as usize;
        let value = &mut attrs[a].1;
        value.resize(value.len() + extra, inf.fill);
    }

    let prefix = vec![0xEE; usize::from(input.prefix)];
    let mut sizes = input.into_sizes.iter().cycle();
    let mut stream = Vec::new();
    let mut encoded: Vec<&OwnedCommand> = Vec::new();

    for (i, cmd) in cmds.iter().enumerate() {
        let want = model(&profile, cmd);
        let attrs = cmd.attr_values();
        let predicted = encoded_len(&profile, &attrs);
        assert_eq!(
            predicted.as_ref().ok(),
            cmd.encoded_len(&profile).as_ref().ok()
        );

        let mut out = prefix.clone();
        let result = encode_command(&profile, cmd.cmd, &attrs, &mut out);

        // A buffer smaller, equal or larger than needed.
        let need = match want {
            Expect::Len(n) => n,
            _ => CMD_HEADER_LEN,
        };
        let into_len = match sizes.next() {
            None => need,
            Some(&(mode, k)) => match mode % 4 {
                0 => need.saturating_sub(1 + usize::from(k % 16)),
                1 => need + usize::from(k % 64),
                2 => need,
                _ => usize::from(k),
            },
        };
        let mut buf = vec![0xA5u8; into_len];
        let into = encode_command_into(&profile, cmd.cmd, &attrs, &mut buf);

        let n = match want {
            Expect::Len(n) => n,
            ref want => {
                let e = predicted.expect_err("encoded_len accepted what the rules refuse");
                check_error(&e, want, &profile);
                // `encoded_len` does not know the command type; the encoders
                // name it in `Oversized`, and otherwise agree exactly.
                let mut named = e.clone();
                if let ErrorKind::Oversized { cmd: c, .. } = &mut named.kind {
                    *c = cmd.cmd;
                }
                assert_eq!(
                    result.as_ref().err(),
                    Some(&named),
                    "encode_command vs encoded_len"
                );
                assert_eq!(out, prefix, "a failed encode_command changed its output");
                assert_eq!(
                    into.as_ref().err(),
                    Some(&named),
                    "encode_command_into vs encoded_len"
                );
                assert!(
                    buf.iter().all(|&b| b == 0xA5),
                    "a failed encode_command_into wrote"
                );
                if let Expect::AfterData { .. } = want {
                    // The data attribute was there, and not last.
                    let d = profile
                        .unbounded_data_attr
                        .expect("AfterData needs a data attribute");
                    let first = cmd
                        .attrs
                        .iter()
                        .position(|(t, _)| *t == d)
                        .expect("data attr");
                    assert!(first + 1 < cmd.attrs.len());
                }
                continue;
            }
        };
        assert_eq!(
            predicted.as_ref().ok(),
            Some(&n),
            "encoded_len vs the rules"
        );
        assert_eq!(
            result.as_ref().ok(),
            Some(&n),
            "encode_command's return value"
        );
        assert_eq!(out.len(), prefix.len() + n);
        assert_eq!(
            &out[..prefix.len()],
            &prefix[..],
            "encode_command overwrote"
        );
        let bytes = &out[prefix.len()..];

        // encode_command_into: the same bytes, or nothing.
        if into_len >= n {
            assert_eq!(
                into.as_ref().ok(),
                Some(&n),
                "encode_command_into: {into:?}"
            );
            assert_eq!(&buf[..n], bytes, "encode_command_into wrote other bytes");
            assert!(
                buf[n..].iter().all(|&b| b == 0xA5),
                "wrote past the command"
            );
        } else {
            let e = into.expect_err("encode_command_into into a too small buffer");
            assert_eq!(
                e.kind,
                ErrorKind::DoesNotFit {
                    needed: n,
                    available: into_len
                }
            );
            assert!(buf.iter().all(|&b| b == 0xA5), "DoesNotFit, yet it wrote");
        }

        // Decoding gives it back.
        let offset = stream.len() as u64;
        let (c, m) = decode_command(bytes, &profile, i as u64, offset)
            .unwrap_or_else(|e| panic!("decoding what was just encoded: {e}"));
        assert_eq!(m, n);
        assert_eq!(
            (c.cmd(), c.index(), c.offset()),
            (cmd.cmd, i as u64, offset)
        );
        assert_eq!(c.encoded_len(), n);
        assert_eq!(
            c.crc(),
            u32::from_le_bytes(bytes[6..10].try_into().unwrap())
        );
        assert_eq!(&OwnedCommand::from(&c), cmd, "decode(encode(x)) != x");
        if let Some(d) = profile.unbounded_data_attr {
            if let Some(p) = cmd.attrs.iter().position(|(t, _)| *t == d) {
                assert_eq!(
                    p + 1,
                    cmd.attrs.len(),
                    "a data attribute not last was encoded"
                );
            }
        }

        stream.extend_from_slice(bytes);
        encoded.push(cmd);
    }

    // The stream of everything that encoded decodes to the same list.
    let mut it = Commands::new(&stream, profile, 0);
    let mut offset = 0u64;
    for (i, cmd) in encoded.iter().enumerate() {
        let c = it
            .next()
            .expect("a command")
            .unwrap_or_else(|e| panic!("stream decode: {e}"));
        assert_eq!((c.index(), c.offset()), (i as u64, offset));
        assert_eq!(&OwnedCommand::from(&c), *cmd);
        offset += c.encoded_len() as u64;
        if cmd.cmd == profile.end_cmd {
            assert!(it.next().is_none(), "Commands yields after END");
            assert_eq!(it.remainder(), &stream[offset as usize..]);
            return;
        }
    }
    let e = it.next().expect("an error").expect_err("MissingEnd");
    assert_eq!(e, ErrorKind::MissingEnd.at(encoded.len() as u64, offset));
});
