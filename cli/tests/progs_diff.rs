//! Differential test against the real `btrfs receive --dump` (btrfs-progs
//! 6.2): streams with every awkward value we can think of, plus random ones,
//! must dump to the same bytes and fail in the same cases.
//!
//! Needs the `btrfs` binary. Without it the test prints SKIPPED and passes,
//! unless `PROTO_STREAM_REQUIRE_BTRFS=1` (set by CI), where it fails.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

use proto_stream::btrfs::{AttrType, BtrfsCommand as B, CommandType};
use proto_stream::tlv::{AttrValue, Timespec, Value};

mod gen;
use gen::{random_stream, stream, Item};

fn btrfs() -> Option<PathBuf> {
    [
        "/usr/bin/btrfs",
        "/bin/btrfs",
        "/usr/sbin/btrfs",
        "/sbin/btrfs",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

fn edge_streams() -> Vec<(&'static str, Vec<u8>)> {
    let long = vec![b'x'; 4090];
    let longer = vec![b'y'; 5000];
    let big = vec![0x5a; 100_000];
    let weird: &[u8] = b"sp ace/new\nline/tab\t/back\\slash/\x01\x7f\xe9\xff/quote\"%s%n";
    let nul: &[u8] = b"before\0after";
    let t = |s| Timespec {
        sec: s as u64,
        nsec: 999_999_999,
    };
    let mut v = vec![
        (
            "weird-paths-v1",
            stream(
                1,
                &[
                    Item::Typed(B::Subvol {
                        path: b"sub vol/",
                        uuid: [0x42; 16],
                        ctransid: 1,
                    }),
                    Item::Typed(B::Mkdir {
                        path: weird,
                        ino: 257,
                    }),
                    Item::Typed(B::Mkfile {
                        path: nul,
                        ino: 258,
                    }),
                    Item::Typed(B::Rename {
                        path: weird,
                        to: nul,
                    }),
                    Item::Typed(B::Link {
                        path: b"",
                        link: weird,
                    }),
                    Item::Typed(B::Symlink {
                        path: b"/abs/",
                        ino: 1,
                        link: b"target with space\n",
                    }),
                    Item::Typed(B::SetXattr {
                        path: weird,
                        name: b"user.n a\nme",
                        data: b"da\0ta",
                    }),
                    Item::Typed(B::SetXattr {
                        path: b"e",
                        name: b"",
                        data: b"",
                    }),
                    Item::Typed(B::RemoveXattr {
                        path: b"e",
                        name: b"x\0y",
                    }),
                    Item::Typed(B::Clone {
                        path: b"c",
                        offset: 1,
                        len: 2,
                        clone_uuid: [3; 16],
                        clone_ctransid: 4,
                        clone_path: weird,
                        clone_offset: 5,
                    }),
                    Item::Typed(B::Chmod {
                        path: b"m",
                        mode: 0o107777,
                    }),
                    Item::Typed(B::Chown {
                        path: b"o",
                        uid: u64::MAX,
                        gid: 0,
                    }),
                    Item::Typed(B::Mknod {
                        path: b"dev",
                        ino: 9,
                        rdev: 0xdead_beef_cafe,
                        mode: 0o20600,
                    }),
                    Item::Typed(B::Mkfifo {
                        path: b"fifo",
                        ino: 10,
                        rdev: None,
                        mode: None,
                    }),
                    Item::Typed(B::Mksock {
                        path: b"sock",
                        ino: 11,
                        rdev: Some(0),
                        mode: Some(0o140755),
                    }),
                    Item::Typed(B::Truncate {
                        path: b"t",
                        size: u64::MAX,
                    }),
                    Item::Typed(B::UpdateExtent {
                        path: b"u",
                        offset: 0,
                        size: 1,
                    }),
                    Item::Typed(B::Utimes {
                        path: b"times",
                        atime: t(0),
                        mtime: t(-1),
                        ctime: t(-62_198_755_200),
                        otime: None,
                    }),
                    Item::Typed(B::Utimes {
                        path: b"times2",
                        atime: t(253_402_300_800),
                        mtime: t(67_767_976_233_316_800),
                        ctime: t(1_700_000_000),
                        otime: Some(t(5)),
                    }),
                    Item::Typed(B::Write {
                        path: b"w",
                        offset: 7,
                        data: b"",
                    }),
                ],
            ),
        ),
        (
            "v2-commands",
            stream(
                2,
                &[
                    Item::Typed(B::Snapshot {
                        path: b"snap",
                        uuid: [1; 16],
                        ctransid: 2,
                        clone_uuid: [0xfe; 16],
                        clone_ctransid: 3,
                    }),
                    Item::Typed(B::Write {
                        path: b"big",
                        offset: 0,
                        data: &big,
                    }),
                    Item::Typed(B::Fallocate {
                        path: b"f",
                        mode: 0xffff_ffff,
                        offset: 1,
                        size: 2,
                    }),
                    Item::Typed(B::Fallocate {
                        path: b"f",
                        mode: 3,
                        offset: 1,
                        size: 2,
                    }),
                    Item::Typed(B::Fileattr {
                        path: b"fa",
                        attr: 0x10,
                    }),
                    Item::Typed(B::EncodedWrite {
                        path: b"e",
                        offset: 4096,
                        unencoded_file_len: 1,
                        unencoded_len: 2,
                        unencoded_offset: 3,
                        compression: None,
                        encryption: None,
                        data: b"zz",
                    }),
                    Item::Typed(B::EncodedWrite {
                        path: b"e",
                        offset: 0,
                        unencoded_file_len: 1,
                        unencoded_len: 2,
                        unencoded_offset: 3,
                        compression: Some(3),
                        encryption: Some(0),
                        data: &big,
                    }),
                ],
            ),
        ),
        (
            "unknown-command-types",
            stream(
                2,
                &[
                    Item::Typed(B::Subvol {
                        path: b"s",
                        uuid: [0; 16],
                        ctransid: 0,
                    }),
                    Item::Raw(99, vec![AttrValue::new(15, Value::Bytes(b"x"))]),
                    Item::Raw(0, vec![]),
                    Item::Typed(B::Unlink { path: b"after" }),
                ],
            ),
        ),
        (
            "duplicate-attributes-last-wins",
            stream(
                1,
                &[
                    Item::Raw(
                        CommandType::UNLINK.0,
                        vec![
                            AttrValue::new(15, Value::Bytes(b"first")),
                            AttrValue::new(15, Value::Bytes(b"second")),
                        ],
                    ),
                    Item::Raw(
                        CommandType::TRUNCATE.0,
                        vec![
                            AttrValue::new(AttrType::SIZE.0, Value::U64(1)),
                            AttrValue::new(15, Value::Bytes(b"p")),
                            AttrValue::new(AttrType::SIZE.0, Value::U64(2)),
                        ],
                    ),
                ],
            ),
        ),
        (
            "path-near-path-max",
            stream(
                1,
                &[Item::Typed(B::Unlink {
                    path: &long[..4090 - 3],
                })],
            ),
        ),
        (
            "path-over-path-max",
            stream(
                1,
                &[
                    Item::Typed(B::Unlink { path: b"ok" }),
                    Item::Typed(B::Unlink { path: &longer }),
                ],
            ),
        ),
        (
            "missing-attribute",
            stream(
                1,
                &[
                    Item::Typed(B::Unlink { path: b"ok" }),
                    Item::Raw(
                        CommandType::CHMOD.0,
                        vec![AttrValue::new(15, Value::Bytes(b"nomode"))],
                    ),
                ],
            ),
        ),
        (
            "wrong-attribute-size",
            stream(
                1,
                &[Item::Raw(
                    CommandType::CHMOD.0,
                    vec![
                        AttrValue::new(15, Value::Bytes(b"p")),
                        AttrValue::new(AttrType::MODE.0, Value::U32(0o644)),
                    ],
                )],
            ),
        ),
        (
            "time-out-of-range",
            stream(
                1,
                &[
                    Item::Typed(B::Unlink { path: b"ok" }),
                    Item::Typed(B::Utimes {
                        path: b"t",
                        atime: t(0),
                        mtime: t(0),
                        ctime: t(i64::MAX),
                        otime: None,
                    }),
                ],
            ),
        ),
    ];
    let attr = |ty: u16| AttrValue::new(ty, Value::U64(1));
    v.push((
        "attribute-type-0",
        stream(
            1,
            &[
                Item::Typed(B::Unlink { path: b"ok" }),
                Item::Raw(
                    CommandType::UNLINK.0,
                    vec![AttrValue::new(15, Value::Bytes(b"p")), attr(0)],
                ),
            ],
        ),
    ));
    v.push((
        "attribute-type-36",
        stream(
            2,
            &[Item::Raw(
                CommandType::TRUNCATE.0,
                vec![AttrValue::new(15, Value::Bytes(b"p")), attr(4), attr(36)],
            )],
        ),
    ));
    v.push((
        "attribute-type-36-in-unknown-command",
        stream(2, &[Item::Raw(77, vec![attr(36)])]),
    ));
    v.push((
        "optional-attributes-malformed",
        stream(
            2,
            &[
                Item::Raw(
                    CommandType::MKFIFO.0,
                    vec![
                        AttrValue::new(15, Value::Bytes(b"fifo")),
                        attr(3),
                        AttrValue::new(AttrType::MODE.0, Value::U32(0o644)),
                    ],
                ),
                Item::Raw(
                    CommandType::MKSOCK.0,
                    vec![
                        AttrValue::new(15, Value::Bytes(b"sock")),
                        attr(3),
                        AttrValue::new(AttrType::RDEV.0, Value::Bytes(b"")),
                    ],
                ),
                Item::Raw(
                    CommandType::UTIMES.0,
                    vec![
                        AttrValue::new(15, Value::Bytes(b"t")),
                        AttrValue::new(AttrType::ATIME.0, Value::Timespec(t(1))),
                        AttrValue::new(AttrType::MTIME.0, Value::Timespec(t(2))),
                        AttrValue::new(AttrType::CTIME.0, Value::Timespec(t(3))),
                        AttrValue::new(AttrType::OTIME.0, Value::U8(9)),
                    ],
                ),
            ],
        ),
    ));
    v.push((
        "clone-length-through-int",
        stream(
            1,
            &[
                Item::Typed(B::Clone {
                    path: b"c",
                    offset: 0,
                    len: (1 << 32) + 5,
                    clone_uuid: [0; 16],
                    clone_ctransid: 0,
                    clone_path: b"s",
                    clone_offset: 0,
                }),
                Item::Typed(B::Clone {
                    path: b"c",
                    offset: 0,
                    len: 1 << 31,
                    clone_uuid: [0; 16],
                    clone_ctransid: 0,
                    clone_path: b"s",
                    clone_offset: 0,
                }),
                Item::Typed(B::Clone {
                    path: b"c",
                    offset: 0,
                    len: u64::MAX,
                    clone_uuid: [0; 16],
                    clone_ctransid: 0,
                    clone_path: b"s",
                    clone_offset: 0,
                }),
            ],
        ),
    ));
    // What follows the first END is never read by btrfs receive --dump.
    let first = stream(1, &[Item::Typed(B::Unlink { path: b"first" })]);
    v.push((
        "garbage-after-end",
        [
            first.clone(),
            b"this is not a stream header at all".to_vec(),
        ]
        .concat(),
    ));
    v.push((
        "short-garbage-after-end",
        [first.clone(), b"xy".to_vec()].concat(),
    ));
    let mut v9 = stream(1, &[Item::Typed(B::Unlink { path: b"second" })]);
    v9[13] = 9;
    v.push(("unsupported-second-stream", [first.clone(), v9].concat()));
    v.push((
        "two-streams",
        [
            first.clone(),
            stream(2, &[Item::Typed(B::Unlink { path: b"second" })]),
        ]
        .concat(),
    ));
    // Truncated stream and corrupted CRC: both refuse.
    let mut cut = v[0].1.clone();
    cut.truncate(cut.len() - 5);
    v.push(("truncated", cut));
    let mut bad = v[0].1.clone();
    bad[40] ^= 1;
    v.push(("crc", bad));
    let mut noend = v[0].1.clone();
    noend.truncate(noend.len() - 10);
    v.push(("no-end", noend));
    v
}

#[test]
fn dump_agrees_with_btrfs_receive_dump() {
    let Some(progs) = btrfs() else {
        assert!(
            std::env::var_os("PROTO_STREAM_REQUIRE_BTRFS").is_none(),
            "PROTO_STREAM_REQUIRE_BTRFS is set but no btrfs binary was found"
        );
        let _ = writeln!(std::io::stderr(), "SKIPPED: dump_agrees_with_btrfs_receive_dump: no `btrfs` binary (apt-get install btrfs-progs)");
        return;
    };
    let dir = std::env::temp_dir().join(format!("proto-stream-progs-diff-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cases = edge_streams();
    for seed in 1..=150 {
        cases.push(("random", random_stream(seed)));
    }
    let mut failures = Vec::new();
    for (i, (name, bytes)) in cases.iter().enumerate() {
        let f = dir.join(format!("{i}-{name}.stream"));
        std::fs::write(&f, bytes).unwrap();
        let theirs = Command::new(&progs)
            .args(["receive", "--dump", "-f"])
            .arg(&f)
            .env("TZ", "UTC")
            .output()
            .unwrap();
        let ours = Command::new(env!("CARGO_BIN_EXE_proto-stream"))
            .arg("dump")
            .arg(&f)
            .env("TZ", "UTC")
            .output()
            .unwrap();
        if theirs.stdout != ours.stdout || theirs.status.success() != ours.status.success() {
            failures.push(format!(
                "{}: progs exit {:?}, ours {:?}; stderr progs {:?} ours {:?}; first differing line {:?}",
                f.display(),
                theirs.status.code(),
                ours.status.code(),
                String::from_utf8_lossy(&theirs.stderr),
                String::from_utf8_lossy(&ours.stderr),
                theirs.stdout.split(|&b| b == b'\n').zip(ours.stdout.split(|&b| b == b'\n'))
                    .find(|(a, b)| a != b)
                    .map(|(a, b)| (String::from_utf8_lossy(a).into_owned(), String::from_utf8_lossy(b).into_owned())),
            ));
        } else {
            std::fs::remove_file(&f).unwrap();
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} streams differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
