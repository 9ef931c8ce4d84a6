//! `proto_stream::apply` with hostile and broken streams: nothing changes
//! outside the target directory, whatever the stream's paths and symlinks
//! say; only regular files are written; a stream that does not verify
//! stops at the failing command (index and offset named) with nothing
//! after it applied.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use proto_stream::apply::{apply, ApplyError, ApplyOptions};
use proto_stream::btrfs::{BtrfsCommand, CommandType, StreamWriter};
use proto_stream::tlv::Timespec;

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!(
            "proto-stream-apply-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        ));
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const UUID: [u8; 16] = [0x5a; 16];

/// A v2 stream: `subvol snap`, then `cmds`, then END.
fn stream(cmds: &[BtrfsCommand<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    let w = StreamWriter::new(2, &mut out).unwrap();
    w.write(
        &BtrfsCommand::Subvol {
            path: b"snap",
            uuid: UUID,
            ctransid: 1,
        },
        &mut out,
    )
    .unwrap();
    for c in cmds {
        w.write(c, &mut out).unwrap();
    }
    w.finish(&mut out).unwrap();
    out
}

/// A directory outside the target holding one file, and a listing of it
/// that changes with anything done to them.
struct Outside {
    dir: TempDir,
}

impl Outside {
    fn new() -> Outside {
        let dir = TempDir::new("outside");
        std::fs::write(dir.0.join("victim"), b"precious").unwrap();
        std::fs::set_permissions(dir.0.join("victim"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        Outside { dir }
    }
    fn path(&self) -> &Path {
        &self.dir.0
    }
    fn victim(&self) -> PathBuf {
        self.dir.0.join("victim")
    }
    fn state(&self) -> Vec<(String, u32, u64, i64, Vec<u8>, usize)> {
        let mut v: Vec<_> = std::fs::read_dir(&self.dir.0)
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                let md = std::fs::symlink_metadata(&p).unwrap();
                let data = if md.is_file() {
                    std::fs::read(&p).unwrap()
                } else {
                    Vec::new()
                };
                let xattrs = xattr::list(&p).map(|l| l.count()).unwrap_or(0);
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    md.mode(),
                    md.size(),
                    md.mtime(),
                    data,
                    xattrs,
                )
            })
            .collect();
        v.sort();
        v
    }
}

fn run(input: &[u8], dir: &Path) -> Result<proto_stream::apply::ApplyStats, ApplyError> {
    apply(input, dir, &ApplyOptions::default(), |_| {})
}

/// Applies `cmds` (after `subvol snap`); it must fail at command `index`
/// (the subvol is 0) with a message containing `says`, and change nothing
/// outside.
#[track_caller]
fn refused(outside: &Outside, cmds: &[BtrfsCommand<'_>], index: u64, says: &str) {
    let before = outside.state();
    let target = TempDir::new("target");
    let err = run(&stream(cmds), &target.0).expect_err("a hostile stream is refused");
    match &err {
        ApplyError::Command { index: i, .. } => assert_eq!(*i, index, "{err}"),
        other => panic!("not a command error: {other}"),
    }
    let text = err.to_string();
    assert!(text.contains(says), "{text:?} does not say {says:?}");
    assert!(text.contains("at byte offset"), "{text}");
    assert_eq!(outside.state(), before, "something changed outside: {text}");
}

fn utimes(path: &[u8]) -> BtrfsCommand<'_> {
    let t = Timespec { sec: 1, nsec: 0 };
    BtrfsCommand::Utimes {
        path,
        atime: t,
        mtime: t,
        ctime: t,
        otime: None,
    }
}

#[test]
fn paths_that_leave_the_tree_are_refused() {
    let out = Outside::new();
    let abs = out.victim();
    let abs = abs.to_str().unwrap().as_bytes();
    refused(
        &out,
        &[BtrfsCommand::Mkfile {
            path: abs,
            ino: 257,
        }],
        1,
        "an absolute path",
    );
    refused(
        &out,
        &[BtrfsCommand::Write {
            path: b"../../../../../../tmp/x",
            offset: 0,
            data: b"x",
        }],
        1,
        "a .. component",
    );
    refused(
        &out,
        &[
            BtrfsCommand::Mkfile {
                path: b"a",
                ino: 257,
            },
            BtrfsCommand::Rename {
                path: b"a",
                to: b"../../x",
            },
        ],
        2,
        "a .. component",
    );
    for name in [&b"../x"[..], b"a/b", b".proto-stream", b""] {
        let before = out.state();
        let target = TempDir::new("subvol-name");
        let mut s = Vec::new();
        let w = StreamWriter::new(2, &mut s).unwrap();
        w.write(
            &BtrfsCommand::Subvol {
                path: name,
                uuid: UUID,
                ctransid: 1,
            },
            &mut s,
        )
        .unwrap();
        w.finish(&mut s).unwrap();
        let err = run(&s, &target.0).expect_err("a subvolume name that is not one component");
        assert!(
            matches!(err, ApplyError::Command { index: 0, .. }),
            "{name:?}: {err}"
        );
        assert_eq!(out.state(), before);
    }
}

#[test]
fn symlinks_to_the_outside_are_never_followed() {
    let out = Outside::new();
    let dir = out.path().to_str().unwrap().as_bytes().to_vec();
    let victim = out.victim();
    let victim = victim.to_str().unwrap().as_bytes().to_vec();
    let dir_link = BtrfsCommand::Symlink {
        path: b"evil",
        ino: 257,
        link: &dir,
    };
    let file_link = BtrfsCommand::Symlink {
        path: b"l",
        ino: 258,
        link: &victim,
    };
    // Through a symlink to a directory outside.
    for (cmd, says) in [
        (
            BtrfsCommand::Mkfile {
                path: b"evil/x",
                ino: 259,
            },
            "open directory \"evil\"",
        ),
        (
            BtrfsCommand::Write {
                path: b"evil/victim",
                offset: 0,
                data: b"owned",
            },
            "open directory \"evil\"",
        ),
        (
            BtrfsCommand::Rename {
                path: b"evil/victim",
                to: b"stolen",
            },
            "open directory \"evil\"",
        ),
        (
            BtrfsCommand::Unlink {
                path: b"evil/victim",
            },
            "open directory \"evil\"",
        ),
        (
            BtrfsCommand::Chmod {
                path: b"evil/victim",
                mode: 0o777,
            },
            "open directory \"evil\"",
        ),
    ] {
        refused(&out, &[dir_link, cmd], 2, says);
    }
    // A symlink to a file outside, as the last component.
    for (cmd, says) in [
        (
            BtrfsCommand::Write {
                path: b"l",
                offset: 0,
                data: b"owned",
            },
            "only regular files",
        ),
        (
            BtrfsCommand::Truncate {
                path: b"l",
                size: 0,
            },
            "only regular files",
        ),
        (
            BtrfsCommand::Chmod {
                path: b"l",
                mode: 0o777,
            },
            "chmod of a symlink",
        ),
        (
            BtrfsCommand::Clone {
                path: b"f",
                offset: 0,
                len: 8,
                clone_uuid: UUID,
                clone_ctransid: 1,
                clone_path: b"l",
                clone_offset: 0,
            },
            "only regular files",
        ),
    ] {
        let mk = BtrfsCommand::Mkfile {
            path: b"f",
            ino: 259,
        };
        refused(&out, &[file_link, mk, cmd], 3, says);
    }
    // What acts on the symlink itself is allowed and leaves the victim be.
    let before = out.state();
    let target = TempDir::new("link-itself");
    run(
        &stream(&[
            file_link,
            BtrfsCommand::Chown {
                path: b"l",
                uid: 1234,
                gid: 1234,
            },
            utimes(b"l"),
            BtrfsCommand::Link {
                path: b"l2",
                link: b"l",
            },
        ]),
        &target.0,
    )
    .unwrap();
    assert_eq!(out.state(), before);
    let md = std::fs::symlink_metadata(target.0.join("snap/l2")).unwrap();
    assert!(md.file_type().is_symlink());
    assert_eq!((md.uid(), md.mtime(), md.nlink()), (1234, 1, 2));
}

#[test]
fn only_regular_files_are_opened_to_be_written() {
    let out = Outside::new();
    // /dev/null's numbers: opening it would be harmless, but it is refused
    // before it is opened at all.
    refused(
        &out,
        &[
            BtrfsCommand::Mknod {
                path: b"dev",
                ino: 257,
                rdev: (1 << 8) | 3,
                mode: 0o20644,
            },
            BtrfsCommand::Write {
                path: b"dev",
                offset: 0,
                data: b"x",
            },
        ],
        2,
        "only regular files",
    );
    // A FIFO would block an open for writing: refused, not hung.
    refused(
        &out,
        &[
            BtrfsCommand::Mkfifo {
                path: b"p",
                ino: 257,
                rdev: None,
                mode: None,
            },
            BtrfsCommand::Write {
                path: b"p",
                offset: 0,
                data: b"x",
            },
        ],
        2,
        "only regular files",
    );
    refused(
        &out,
        &[BtrfsCommand::Write {
            path: b"",
            offset: 0,
            data: b"x",
        }],
        1,
        "only regular files",
    );
}

#[test]
fn a_stream_that_does_not_verify_stops_before_the_bad_command() {
    let cmds: Vec<BtrfsCommand<'_>> = vec![
        BtrfsCommand::Mkfile {
            path: b"first",
            ino: 257,
        },
        BtrfsCommand::Mkfile {
            path: b"second",
            ino: 258,
        },
        BtrfsCommand::Mkfile {
            path: b"third",
            ino: 259,
        },
    ];
    let good = stream(&cmds);
    // Offsets of the commands: after the 17-byte header, subvol, then each.
    let mut offsets = Vec::new();
    let mut at = 17;
    while at < good.len() {
        offsets.push(at);
        let len = u32::from_le_bytes(good[at..at + 4].try_into().unwrap()) as usize;
        at += 10 + len;
    }
    assert_eq!(offsets.len(), 5, "subvol, three mkfile, end");
    // A damaged byte in the payload of command 2 ("second").
    let mut bad = good.clone();
    bad[offsets[2] + 12] ^= 1;
    let target = TempDir::new("bad-crc");
    let err = run(&bad, &target.0).expect_err("a CRC mismatch");
    let text = err.to_string();
    assert!(matches!(err, ApplyError::Stream(_)), "{text}");
    assert!(
        text.contains("command 2") && text.contains(&format!("offset {}", offsets[2])),
        "{text}"
    );
    assert!(target.0.join("snap/first").exists());
    assert!(!target.0.join("snap/second").exists());
    assert!(!target.0.join("snap/third").exists());

    // Cut inside command 3: the first two are applied, nothing else.
    let target = TempDir::new("truncated");
    let err = run(&good[..offsets[3] + 5], &target.0).expect_err("a truncated stream");
    assert!(matches!(err, ApplyError::Stream(_)), "{err}");
    assert!(target.0.join("snap/second").exists());
    assert!(!target.0.join("snap/third").exists());

    // No END: every command applied, then an error naming where it ends.
    let target = TempDir::new("no-end");
    let err = run(&good[..offsets[4]], &target.0).expect_err("a stream without END");
    let text = err.to_string();
    assert!(matches!(err, ApplyError::Stream(_)), "{text}");
    assert!(text.contains(&offsets[4].to_string()), "{text}");
    assert!(target.0.join("snap/third").exists());

    // And whole, it applies.
    let target = TempDir::new("good");
    let stats = run(&good, &target.0).unwrap();
    assert_eq!((stats.applied, stats.streams), (5, 1));
    assert_eq!(std::fs::read_dir(target.0.join("snap")).unwrap().count(), 3);
}

#[test]
fn errors_name_the_command_and_what_failed() {
    let target = TempDir::new("errors");
    let err = run(
        &stream(&[BtrfsCommand::Rename {
            path: b"missing",
            to: b"x",
        }]),
        &target.0,
    )
    .unwrap_err();
    match &err {
        ApplyError::Command {
            index,
            offset,
            command,
            source,
            ..
        } => {
            assert_eq!((*index, *command), (1, CommandType::RENAME));
            assert!(*offset > 17);
            assert_eq!(
                source.as_ref().map(|e| e.kind()),
                Some(std::io::ErrorKind::NotFound)
            );
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("rename \"missing\""), "{err}");
    // A snapshot whose parent was never received here.
    let mut s = Vec::new();
    let w = StreamWriter::new(2, &mut s).unwrap();
    w.write(
        &BtrfsCommand::Snapshot {
            path: b"snap2",
            uuid: [1; 16],
            ctransid: 2,
            clone_uuid: [2; 16],
            clone_ctransid: 1,
        },
        &mut s,
    )
    .unwrap();
    w.finish(&mut s).unwrap();
    let target = TempDir::new("no-parent");
    let err = run(&s, &target.0).unwrap_err().to_string();
    assert!(
        err.contains("cannot find parent subvolume 02020202-0202-0202-0202-020202020202"),
        "{err}"
    );
}

#[test]
fn a_clone_of_a_terabyte_of_holes_writes_only_its_data() {
    let big = 1u64 << 40;
    let cmds = [
        BtrfsCommand::Mkfile {
            path: b"a",
            ino: 257,
        },
        BtrfsCommand::Truncate {
            path: b"a",
            size: big,
        },
        BtrfsCommand::Write {
            path: b"a",
            offset: big - 4,
            data: b"tail",
        },
        BtrfsCommand::Write {
            path: b"a",
            offset: 1 << 20,
            data: b"middle",
        },
        BtrfsCommand::Mkfile {
            path: b"b",
            ino: 258,
        },
        BtrfsCommand::Write {
            path: b"b",
            offset: 0,
            data: &[0xee; 8192],
        },
        BtrfsCommand::Clone {
            path: b"b",
            offset: 0,
            len: 0,
            clone_uuid: UUID,
            clone_ctransid: 1,
            clone_path: b"a",
            clone_offset: 0,
        },
    ];
    let target = TempDir::new("sparse-clone");
    run(&stream(&cmds), &target.0).unwrap();
    let b = target.0.join("snap/b");
    let md = std::fs::metadata(&b).unwrap();
    assert_eq!(md.len(), big);
    assert!(
        md.blocks() * 512 < 1 << 20,
        "{} bytes allocated",
        md.blocks() * 512
    );
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(&b).unwrap();
    let mut buf = [0xffu8; 8];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(buf, [0; 8], "the hole over b's old data reads as zeros");
    f.read_exact_at(&mut buf[..6], 1 << 20).unwrap();
    assert_eq!(&buf[..6], b"middle");
    f.read_exact_at(&mut buf[..4], big - 4).unwrap();
    assert_eq!(&buf[..4], b"tail");

    // With a bound, the same stream is refused at the truncate.
    let target = TempDir::new("bounded");
    let opts = ApplyOptions {
        max_file_size: Some(1 << 30),
        ..ApplyOptions::default()
    };
    let err = apply(&stream(&cmds)[..], &target.0, &opts, |_| {}).unwrap_err();
    assert!(matches!(err, ApplyError::Command { index: 2, .. }), "{err}");
    assert!(
        err.to_string().contains("largest file size allowed"),
        "{err}"
    );
}

#[test]
fn a_command_that_failed_is_not_taken_as_done_when_run_again() {
    // mkfile over a directory the stream made: EEXIST, a real failure. Run
    // again, the journal says the command failed: it fails again rather
    // than being found "already done".
    let cmds = [
        BtrfsCommand::Mkdir {
            path: b"x",
            ino: 257,
        },
        BtrfsCommand::Mkfile {
            path: b"x",
            ino: 258,
        },
        BtrfsCommand::Write {
            path: b"x",
            offset: 0,
            data: b"never",
        },
    ];
    let target = TempDir::new("failed-twice");
    let s = stream(&cmds);
    for run in 0..2 {
        let err = run_once(&s, &target.0).expect_err("mkfile over a directory");
        assert!(
            matches!(err, ApplyError::Command { index: 2, .. }),
            "run {run}: {err}"
        );
    }
    assert!(target.0.join("snap/x").is_dir());
}

fn run_once(input: &[u8], dir: &Path) -> Result<proto_stream::apply::ApplyStats, ApplyError> {
    apply(input, dir, &ApplyOptions::default(), |_| {})
}
