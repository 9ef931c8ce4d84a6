//! `apply_stream`: `proto_stream::apply` carries out arbitrary btrfs send
//! streams in a scratch directory.
//!
//! The input is a list of commands (every type `apply` handles) over paths
//! built from a small set of components, `.`, `..`, empty and 255-byte
//! ones, absolute paths included, and symlinks whose targets point out of
//! the tree (`..`, `/`, the absolute path of a directory beside the
//! target); streams may follow each other (a new subvolume, or a snapshot
//! of an earlier one), and one byte of the encoded input may be damaged.
//!
//! Properties:
//! - no panic, no hang (FIFOs are never opened for writing);
//! - nothing changes outside the target: a directory beside it, with a
//!   file, keeps its entries, modes, sizes, times and contents, and the
//!   scratch directory holds nothing new;
//! - a stream error (a damaged byte, unless the CRC still matched) names a
//!   byte offset in the input, and no command at or after it was carried
//!   out; a command error names an offset in the input; no other error;
//! - files stay within `max_file_size` (1 MiB here), so no input fills the
//!   disk.
#![cfg_attr(fuzzing, no_main)]

#[macro_use]
#[path = "common/harness.rs"]
mod harness;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use proto_btrfs::{BtrfsCommand as B, StreamWriter};
use proto_stream::apply::{apply, ApplyError, ApplyOptions};
use proto_tlv::Timespec;

const COMPONENTS: &[&[u8]] = &[
    b"a",
    b"b",
    b"l",
    b"d",
    b"o257-7-0",
    b"\xc3\xa9 \xe2\x98\x83",
    b"..",
    b".",
    b"",
    b".proto-stream",
];

/// The scratch directory: `outside/` (which must never change) and the
/// targets.
fn base() -> &'static PathBuf {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| {
        // tmpfs when there is one: apply ends with a syncfs, cheap there.
        let shm = Path::new("/dev/shm");
        let root = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        // Scratch directories of earlier runs whose process is gone.
        const PREFIX: &str = "proto-stream-fuzz-apply-";
        for e in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix(PREFIX) {
                if !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let b = root.join(format!("{PREFIX}{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&b);
        std::fs::create_dir_all(b.join("outside/sub")).unwrap();
        std::fs::write(b.join("outside/victim"), b"precious").unwrap();
        b
    })
}

#[derive(Arbitrary, Debug)]
struct P {
    absolute: bool,
    parts: Vec<u8>,
}

impl P {
    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.absolute {
            out.extend_from_slice(base().join("outside").as_os_str().as_encoded_bytes());
        }
        for (i, &p) in self.parts.iter().take(6).enumerate() {
            if i > 0 || self.absolute {
                out.push(b'/');
            }
            if p == 255 {
                out.extend(std::iter::repeat_n(b'x', 255));
            } else {
                out.extend_from_slice(COMPONENTS[p as usize % COMPONENTS.len()]);
            }
        }
        out
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    Mkfile(P),
    Mkdir(P),
    Mknod(P, bool),
    Mkfifo(P),
    Mksock(P),
    /// Target: 0 `..`, 1 `/`, 2 the outside directory (absolute), 3 `../../outside`, else a path.
    Symlink(P, u8, P),
    Rename(P, P),
    Link(P, P),
    Unlink(P),
    Rmdir(P),
    Write(P, u32, u16),
    Clone(P, P, u32, u32, u32, bool),
    Truncate(P, u32),
    Chmod(P, u16),
    Chown(P, u16, u16),
    Utimes(P),
    SetXattr(P, u8, u8),
    RemoveXattr(P, u8),
    Fallocate(P, u8, u32, u32),
    EncodedWrite(P, u32, u16, u8),
    UpdateExtent(P),
    Fileattr(P),
    /// END, then a new stream: a subvolume, or a snapshot of the first.
    Stream(bool, u8),
}

#[derive(Arbitrary, Debug)]
struct Input {
    v2: bool,
    ops: Vec<Op>,
    damage: Option<(u32, u8)>,
}

fn t(s: u64) -> Timespec {
    Timespec { sec: s, nsec: 1 }
}

fn encode(input: &Input) -> Vec<u8> {
    let version = if input.v2 { 2 } else { 1 };
    let data = vec![0x5au8; 70_000];
    let zstd = zstd::bulk::compress(&data[..4096], 1).unwrap();
    let mut out = Vec::new();
    let mut w = StreamWriter::new(version, &mut out).unwrap();
    let uuid = |n: u8| [n; 16];
    let _ = w.write(
        &B::Subvol {
            path: b"snap0",
            uuid: uuid(1),
            ctransid: 1,
        },
        &mut out,
    );
    let outside = base().join("outside");
    let outside = outside.as_os_str().as_encoded_bytes();
    for (n, op) in input.ops.iter().take(64).enumerate() {
        let (a, b);
        let c = match op {
            Op::Mkfile(p) => {
                a = p.bytes();
                B::Mkfile { path: &a, ino: 0 }
            }
            Op::Mkdir(p) => {
                a = p.bytes();
                B::Mkdir { path: &a, ino: 0 }
            }
            Op::Mknod(p, blk) => {
                a = p.bytes();
                // /dev/null's and /dev/loop0's numbers.
                let (mode, rdev) = if *blk {
                    (0o60600, (7 << 8))
                } else {
                    (0o20600, (1 << 8) | 3)
                };
                B::Mknod {
                    path: &a,
                    ino: 0,
                    rdev,
                    mode,
                }
            }
            Op::Mkfifo(p) => {
                a = p.bytes();
                B::Mkfifo {
                    path: &a,
                    ino: 0,
                    rdev: None,
                    mode: None,
                }
            }
            Op::Mksock(p) => {
                a = p.bytes();
                B::Mksock {
                    path: &a,
                    ino: 0,
                    rdev: None,
                    mode: None,
                }
            }
            Op::Symlink(p, k, q) => {
                a = p.bytes();
                b = match k % 5 {
                    0 => b"..".to_vec(),
                    1 => b"/".to_vec(),
                    2 => outside.to_vec(),
                    3 => b"../../outside".to_vec(),
                    _ => q.bytes(),
                };
                B::Symlink {
                    path: &a,
                    ino: 0,
                    link: &b,
                }
            }
            Op::Rename(p, q) => {
                a = p.bytes();
                b = q.bytes();
                B::Rename { path: &a, to: &b }
            }
            Op::Link(p, q) => {
                a = p.bytes();
                b = q.bytes();
                B::Link { path: &a, link: &b }
            }
            Op::Unlink(p) => {
                a = p.bytes();
                B::Unlink { path: &a }
            }
            Op::Rmdir(p) => {
                a = p.bytes();
                B::Rmdir { path: &a }
            }
            Op::Write(p, off, len) => {
                a = p.bytes();
                B::Write {
                    path: &a,
                    offset: u64::from(*off),
                    data: &data[..(*len as usize).min(data.len())],
                }
            }
            Op::Clone(p, q, off, len, src_off, other) => {
                a = p.bytes();
                b = q.bytes();
                B::Clone {
                    path: &a,
                    offset: u64::from(*off),
                    len: u64::from(*len),
                    clone_uuid: uuid(if *other { 1 } else { 2 + n as u8 % 2 }),
                    clone_ctransid: 1,
                    clone_path: &b,
                    clone_offset: u64::from(*src_off),
                }
            }
            Op::Truncate(p, size) => {
                a = p.bytes();
                B::Truncate {
                    path: &a,
                    size: u64::from(*size),
                }
            }
            Op::Chmod(p, mode) => {
                a = p.bytes();
                B::Chmod {
                    path: &a,
                    mode: u64::from(*mode),
                }
            }
            Op::Chown(p, u, g) => {
                a = p.bytes();
                B::Chown {
                    path: &a,
                    uid: u64::from(*u),
                    gid: u64::from(*g),
                }
            }
            Op::Utimes(p) => {
                a = p.bytes();
                B::Utimes {
                    path: &a,
                    atime: t(5),
                    mtime: t(6),
                    ctime: t(7),
                    otime: None,
                }
            }
            Op::SetXattr(p, name, len) => {
                a = p.bytes();
                b = format!("user.x{}", name % 4).into_bytes();
                B::SetXattr {
                    path: &a,
                    name: &b,
                    data: &data[..*len as usize],
                }
            }
            Op::RemoveXattr(p, name) => {
                a = p.bytes();
                b = format!("user.x{}", name % 4).into_bytes();
                B::RemoveXattr { path: &a, name: &b }
            }
            Op::Fallocate(p, mode, off, len) if version >= 2 => {
                a = p.bytes();
                B::Fallocate {
                    path: &a,
                    mode: u32::from(*mode),
                    offset: u64::from(*off),
                    size: u64::from(*len),
                }
            }
            Op::EncodedWrite(p, off, file_len, kind) if version >= 2 => {
                a = p.bytes();
                let zstd_data = kind % 2 == 0;
                B::EncodedWrite {
                    path: &a,
                    offset: u64::from(*off),
                    unencoded_file_len: u64::from(*file_len),
                    unencoded_len: 4096,
                    unencoded_offset: 0,
                    compression: Some(if zstd_data { 2 } else { u32::from(*kind % 8) }),
                    encryption: None,
                    data: if zstd_data { &zstd } else { &data[..100] },
                }
            }
            Op::UpdateExtent(p) => {
                a = p.bytes();
                B::UpdateExtent {
                    path: &a,
                    offset: 0,
                    size: 4096,
                }
            }
            Op::Fileattr(p) if version >= 2 => {
                a = p.bytes();
                B::Fileattr { path: &a, attr: 0 }
            }
            Op::Stream(snapshot, name) => {
                let _ = w.finish(&mut out);
                w = StreamWriter::new(version, &mut out).unwrap();
                a = format!("snap{}", 1 + name % 3).into_bytes();
                if *snapshot {
                    B::Snapshot {
                        path: &a,
                        uuid: uuid(2 + name % 2),
                        ctransid: 2,
                        clone_uuid: uuid(1),
                        clone_ctransid: 1,
                    }
                } else {
                    B::Subvol {
                        path: &a,
                        uuid: uuid(2 + name % 2),
                        ctransid: 2,
                    }
                }
            }
            _ => continue,
        };
        let _ = w.write(&c, &mut out);
    }
    let _ = w.finish(&mut out);
    out
}

fn stream_error_offset(e: &proto_btrfs::Error) -> Option<u64> {
    use proto_btrfs::Error as E;
    match e {
        E::Tlv(t) => Some(t.offset),
        E::BadMagic { offset, .. }
        | E::Version { offset, .. }
        | E::UnspecCommand { offset, .. } => Some(*offset),
        E::Io { offset, .. } => Some(*offset),
        _ => None,
    }
}

/// Everything under `dir`: names, modes, sizes, mtimes, contents.
fn listing(dir: &Path, out: &mut Vec<(PathBuf, u32, u64, i64, Vec<u8>)>) {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for p in names {
        let md = std::fs::symlink_metadata(&p).unwrap();
        let data = if md.is_file() {
            std::fs::read(&p).unwrap()
        } else {
            Vec::new()
        };
        out.push((p.clone(), md.mode(), md.size(), md.mtime(), data));
        if md.is_dir() {
            listing(&p, out);
        }
    }
}

target!(|input: Input| {
    let base = base();
    let mut before = Vec::new();
    listing(&base.join("outside"), &mut before);
    let mut stream = encode(&input);
    if let Some((at, x)) = input.damage {
        let at = at as usize % stream.len();
        stream[at] ^= x;
    }
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let target = base.join(format!(
        "target-{}",
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir(&target).unwrap();
    let opts = ApplyOptions {
        sync_every: 0,
        max_file_size: Some(1 << 20),
        ..ApplyOptions::default()
    };
    // The byte offset of the last command carried out.
    let mut last = None;
    let r = apply(&stream[..], &target, &opts, |step| last = Some(step.offset));
    match &r {
        Err(ApplyError::Stream(e)) => {
            // A stream error names where; nothing at or after it was applied.
            let at = stream_error_offset(e).unwrap_or_else(|| panic!("no offset in {e}"));
            assert!(at <= stream.len() as u64, "{e}");
            if let Some(l) = last {
                assert!(
                    l < at,
                    "command at {l} applied, at or after the error at {at}: {e}"
                );
            }
        }
        Err(ApplyError::Command { offset, .. }) => {
            assert!(*offset < stream.len() as u64, "{r:?}");
        }
        Err(e) => panic!("apply into a fresh directory failed outside any command: {e}"),
        Ok(_) => {}
    }
    // Nothing outside changed; nothing new beside the targets.
    let mut after = Vec::new();
    listing(&base.join("outside"), &mut after);
    assert_eq!(
        before, after,
        "the directory outside the target changed: {r:?}"
    );
    for e in std::fs::read_dir(base).unwrap() {
        let name = e.unwrap().file_name();
        let name = name.to_string_lossy();
        assert!(
            name == "outside" || name.starts_with("target-"),
            "{name} appeared beside the target"
        );
    }
    // Files within the bound.
    let mut made = Vec::new();
    listing(&target, &mut made);
    for (p, mode, size, _, _) in &made {
        if mode & 0o170000 == 0o100000 {
            assert!(*size <= 1 << 20, "{}: {size} bytes", p.display());
        }
    }
    if std::fs::remove_dir_all(&target).is_err() {
        // A directory left without permissions: make it removable.
        let _ = std::process::Command::new("chmod")
            .args(["-R", "u+rwx"])
            .arg(&target)
            .status();
        let _ = std::fs::remove_dir_all(&target);
    }
});
