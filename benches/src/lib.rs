//! # proto-stream-benches: the inputs of the criterion benches
//!
//! Every bench measures the same bytes with proto-stream and with its peers,
//! in the same run. The bytes are the real `btrfs send` streams made by
//! `scripts/mkperf.sh` (in the repository) when they are present in the perf
//! directory, else synthetic streams with the same command mix, built in
//! memory at bench start with proto-btrfs's [`StreamWriter`] (never
//! committed):
//!
//! - **large-data** ([`large_input`]): `big-v2.stream`, four files of 128 MiB
//!   of random data, sent as 128 KiB `write` commands (the size the kernel
//!   uses with `--proto 2`);
//! - **small-files** ([`small_input`]): `small-v2.stream`, 40,000 files of
//!   64..964 bytes in 200 directories, each `mkfile`, `rename`, `set_xattr`,
//!   `write`, `chown`, `chmod`, `utimes`.
//!
//! Environment:
//!
//! | variable | effect |
//! |---|---|
//! | `PROTO_STREAM_PERF_DIR` | where the real streams are (default `<workspace>/perf`) |
//! | `PROTO_STREAM_BENCH_SMALL=1` | CI-sized run: a synthetic large-data stream of 64 MiB instead of 512 MiB |
//! | `PROTO_STREAM_BENCH_SYNTHETIC=1` | ignore the real streams, always synthesize |
//!
//! ```
//! use proto_stream_benches::{count_commands, synthetic_large, synthetic_small};
//!
//! let large = synthetic_large(1 << 20); // 8 writes of 128 KiB
//! assert_eq!(count_commands(&large), 1 + 2 + 4 * (5 + 2) + 1 + 1);
//! let small = synthetic_small(3);
//! assert_eq!(count_commands(&small), 1 + 2 + 5 + 3 * 7 + 1 + 1);
//! ```
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use proto_btrfs::{BtrfsCommand, BtrfsStream, StreamWriter};
use proto_tlv::Timespec;

/// Size of the `write` commands of a `--proto 2` kernel stream (the data
/// attribute of every write in `big-v2.stream`).
pub const V2_WRITE_LEN: usize = 128 * 1024;
/// Data bytes of the full large-data stream (4 files × 128 MiB).
pub const LARGE_DATA_BYTES: usize = 512 << 20;
/// Data bytes of the large-data stream with `PROTO_STREAM_BENCH_SMALL=1`.
pub const LARGE_DATA_BYTES_SMALL: usize = 64 << 20;
/// Files in the small-files stream (200 directories × 200 files).
pub const SMALL_FILES: usize = 40_000;
/// Files per directory in the small-files stream.
pub const FILES_PER_DIR: usize = 200;

/// Where a bench input comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A real stream read from this file.
    Real(PathBuf),
    /// Built in memory at bench start.
    Synthetic,
}

/// One bench input: a whole btrfs send stream in memory.
#[derive(Debug)]
pub struct Input {
    /// Where it comes from.
    pub source: Source,
    /// The stream, header included.
    pub bytes: Vec<u8>,
    /// Its number of commands, END included.
    pub commands: u64,
}

impl Input {
    fn new(source: Source, bytes: Vec<u8>) -> Self {
        let commands = count_commands(&bytes);
        Input {
            source,
            bytes,
            commands,
        }
    }

    /// One line for the bench log: what is measured.
    pub fn describe(&self) -> String {
        let from = match &self.source {
            Source::Real(p) => format!("real stream {}", p.display()),
            Source::Synthetic => "synthetic stream".to_owned(),
        };
        format!(
            "{from}: {} bytes ({:.1} MiB), {} commands",
            self.bytes.len(),
            self.bytes.len() as f64 / (1 << 20) as f64,
            self.commands
        )
    }
}

fn env_flag(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty() && v != "0")
}

/// The perf directory: `PROTO_STREAM_PERF_DIR`, else `<workspace>/perf`.
pub fn perf_dir() -> PathBuf {
    match std::env::var_os("PROTO_STREAM_PERF_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../perf"),
    }
}

/// Whether `PROTO_STREAM_BENCH_SMALL` asks for a CI-sized run.
pub fn small_run() -> bool {
    env_flag("PROTO_STREAM_BENCH_SMALL")
}

fn real(name: &str) -> Option<Input> {
    if env_flag("PROTO_STREAM_BENCH_SYNTHETIC") {
        return None;
    }
    let path = perf_dir().join(name);
    let bytes = std::fs::read(&path).ok()?;
    let path = path.canonicalize().unwrap_or(path);
    Some(Input::new(Source::Real(path), bytes))
}

/// The large-data input: `big-v2.stream`, or a synthetic stream of 512 MiB
/// of data (64 MiB, always synthetic, with `PROTO_STREAM_BENCH_SMALL=1`).
pub fn large_input() -> Input {
    if small_run() {
        return Input::new(Source::Synthetic, synthetic_large(LARGE_DATA_BYTES_SMALL));
    }
    real("big-v2.stream")
        .unwrap_or_else(|| Input::new(Source::Synthetic, synthetic_large(LARGE_DATA_BYTES)))
}

/// The small-files input: `small-v2.stream`, or a synthetic stream of
/// 40,000 small files.
pub fn small_input() -> Input {
    real("small-v2.stream")
        .unwrap_or_else(|| Input::new(Source::Synthetic, synthetic_small(SMALL_FILES)))
}

/// Counts the commands of a stream (END included), checking every CRC.
///
/// # Panics
/// When the stream is not a valid btrfs send stream.
pub fn count_commands(bytes: &[u8]) -> u64 {
    let stream = BtrfsStream::parse(bytes).expect("stream header");
    let mut n = 0;
    for cmd in stream.commands() {
        cmd.expect("valid command");
        n += 1;
    }
    n
}

/// xorshift64*: cheap pseudo-random bytes (the real streams carry
/// `/dev/urandom` data; only incompressibility and size matter here).
struct Rng(u64);

impl Rng {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

const UUID: [u8; 16] = [
    0xd7, 0xa3, 0x46, 0x7d, 0xe7, 0xcd, 0x04, 0x46, 0x9f, 0x87, 0x0e, 0x30, 0x45, 0x0b, 0x6a, 0xe2,
];
const CTRANSID: u64 = 7;
const FIRST_INO: u64 = 257;

fn ts(i: u64) -> Timespec {
    Timespec {
        sec: 1_763_780_000 + i / 1000,
        nsec: (i % 1000) as u32 * 1_000_000,
    }
}

/// The commands that end an inode in a kernel stream: owner, mode, times
/// (v2 sends `otime` too).
fn finish_inode(w: &StreamWriter, out: &mut Vec<u8>, path: &[u8], mode: u64, t: u64) {
    let cmds = [
        BtrfsCommand::Chown {
            path,
            uid: 0,
            gid: 0,
        },
        BtrfsCommand::Chmod { path, mode },
    ];
    for c in &cmds {
        w.write(c, out).expect("encode");
    }
    utimes(w, out, path, t);
}

fn utimes(w: &StreamWriter, out: &mut Vec<u8>, path: &[u8], t: u64) {
    let c = BtrfsCommand::Utimes {
        path,
        atime: ts(t),
        mtime: ts(t),
        ctime: ts(t),
        otime: Some(ts(t)),
    };
    w.write(&c, out).expect("encode");
}

/// Creates inode `ino` under its temporary name `o<ino>-7-0` and renames
/// it to `path`, as the kernel does.
fn create(w: &StreamWriter, out: &mut Vec<u8>, dir: bool, ino: u64, path: &[u8]) {
    let tmp = format!("o{ino}-{CTRANSID}-0");
    let tmp = tmp.as_bytes();
    let mk = if dir {
        BtrfsCommand::Mkdir { path: tmp, ino }
    } else {
        BtrfsCommand::Mkfile { path: tmp, ino }
    };
    w.write(&mk, out).expect("encode");
    w.write(
        &BtrfsCommand::Rename {
            path: tmp,
            to: path,
        },
        out,
    )
    .expect("encode");
}

/// A v2 stream shaped like `big-v2.stream`: subvol, four files `f1`..`f4`
/// holding `data_bytes / 4` pseudo-random bytes each, in `write` commands of
/// [`V2_WRITE_LEN`] bytes, then END.
///
/// # Panics
/// Never for sizes that fit in memory.
pub fn synthetic_large(data_bytes: usize) -> Vec<u8> {
    let per_file = data_bytes / 4;
    let writes = per_file.div_ceil(V2_WRITE_LEN);
    let mut out = Vec::with_capacity(data_bytes + 4 * writes * 32 + 4096);
    let w = StreamWriter::new(2, &mut out).expect("v2 header");
    w.write(
        &BtrfsCommand::Subvol {
            path: b"big.s",
            uuid: UUID,
            ctransid: CTRANSID,
        },
        &mut out,
    )
    .expect("encode");
    w.write(
        &BtrfsCommand::Chown {
            path: b"",
            uid: 0,
            gid: 0,
        },
        &mut out,
    )
    .expect("encode");
    w.write(
        &BtrfsCommand::Chmod {
            path: b"",
            mode: 0o755,
        },
        &mut out,
    )
    .expect("encode");
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut data = vec![0u8; V2_WRITE_LEN];
    for f in 0..4u64 {
        let path = format!("f{}", f + 1);
        let path = path.as_bytes();
        create(&w, &mut out, false, FIRST_INO + f, path);
        let mut offset = 0;
        while offset < per_file {
            let n = V2_WRITE_LEN.min(per_file - offset);
            rng.fill(&mut data[..n]);
            w.write(
                &BtrfsCommand::Write {
                    path,
                    offset: offset as u64,
                    data: &data[..n],
                },
                &mut out,
            )
            .expect("encode");
            offset += n;
        }
        finish_inode(&w, &mut out, path, 0o644, f);
    }
    utimes(&w, &mut out, b"", 0);
    w.finish(&mut out).expect("encode");
    out
}

/// A v2 stream shaped like `small-v2.stream`: `files` files of 64..964
/// bytes, 200 per directory `d<N>`, each `mkfile`, `rename`, `set_xattr`
/// (`user.tag`), `write`, `chown`, `chmod`, `utimes`; each directory
/// `mkdir`, `rename`, `chown`, `chmod` and (at the end) `utimes`; then END.
///
/// # Panics
/// Never.
pub fn synthetic_small(files: usize) -> Vec<u8> {
    let dirs = files.div_ceil(FILES_PER_DIR);
    let mut out = Vec::with_capacity(files * 820 + 4096);
    let w = StreamWriter::new(2, &mut out).expect("v2 header");
    w.write(
        &BtrfsCommand::Subvol {
            path: b"small.s",
            uuid: UUID,
            ctransid: CTRANSID,
        },
        &mut out,
    )
    .expect("encode");
    w.write(
        &BtrfsCommand::Chown {
            path: b"",
            uid: 0,
            gid: 0,
        },
        &mut out,
    )
    .expect("encode");
    w.write(
        &BtrfsCommand::Chmod {
            path: b"",
            mode: 0o755,
        },
        &mut out,
    )
    .expect("encode");
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut data = [0u8; 1024];
    let mut ino = FIRST_INO;
    let mut left = files;
    for d in 0..dirs {
        let dir = format!("d{d}");
        create(&w, &mut out, true, ino, dir.as_bytes());
        ino += 1;
        for cmd in [
            BtrfsCommand::Chown {
                path: dir.as_bytes(),
                uid: 0,
                gid: 0,
            },
            BtrfsCommand::Chmod {
                path: dir.as_bytes(),
                mode: 0o755,
            },
        ] {
            w.write(&cmd, &mut out).expect("encode");
        }
        for f in 0..FILES_PER_DIR.min(left) {
            let path = format!("d{d}/f{f}");
            let path = path.as_bytes();
            create(&w, &mut out, false, ino, path);
            ino += 1;
            let tag = format!("v{f}");
            w.write(
                &BtrfsCommand::SetXattr {
                    path,
                    name: b"user.tag",
                    data: tag.as_bytes(),
                },
                &mut out,
            )
            .expect("encode");
            let n = 64 + (f * 37) % 900;
            rng.fill(&mut data[..n]);
            w.write(
                &BtrfsCommand::Write {
                    path,
                    offset: 0,
                    data: &data[..n],
                },
                &mut out,
            )
            .expect("encode");
            finish_inode(&w, &mut out, path, 0o644, ino);
        }
        left = left.saturating_sub(FILES_PER_DIR);
    }
    for d in (0..dirs).rev() {
        utimes(&w, &mut out, format!("d{d}").as_bytes(), d as u64);
    }
    utimes(&w, &mut out, b"", 0);
    w.finish(&mut out).expect("encode");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn mix(bytes: &[u8]) -> (BTreeMap<String, u64>, u64) {
        let stream = BtrfsStream::parse(bytes).unwrap();
        let mut by_type = BTreeMap::new();
        let mut data = 0;
        for c in stream.commands() {
            let c = c.unwrap();
            if let BtrfsCommand::Write { data: d, .. } = BtrfsCommand::parse(&c).unwrap() {
                assert!(d.len() <= V2_WRITE_LEN);
                data += d.len() as u64;
            }
            *by_type
                .entry(proto_btrfs::CommandType(c.cmd()).to_string())
                .or_default() += 1;
        }
        (by_type, data)
    }

    /// The synthetic small-files stream has the command mix of the real one
    /// (`proto-stream verify --json perf/small-v2.stream`).
    #[test]
    fn small_mix_matches_real() {
        let (by_type, data) = mix(&synthetic_small(SMALL_FILES));
        let want: BTreeMap<String, u64> = [
            ("chmod", 40201),
            ("chown", 40201),
            ("end", 1),
            ("mkdir", 200),
            ("mkfile", 40000),
            ("rename", 40200),
            ("set_xattr", 40000),
            ("subvol", 1),
            ("utimes", 40201),
            ("write", 40000),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        assert_eq!(by_type, want);
        assert_eq!(data, 20_040_000);
    }

    /// The synthetic large-data stream has the command mix of the real one
    /// (`proto-stream verify --json perf/big-v2.stream`), scaled.
    #[test]
    fn large_mix_matches_real() {
        let (by_type, data) = mix(&synthetic_large(LARGE_DATA_BYTES_SMALL));
        assert_eq!(data, LARGE_DATA_BYTES_SMALL as u64);
        assert_eq!(
            by_type["write"],
            (LARGE_DATA_BYTES_SMALL / V2_WRITE_LEN) as u64
        );
        assert_eq!(by_type["utimes"], 5);
        assert_eq!(by_type["mkfile"], 4);
        assert_eq!(by_type.len(), 8);
    }

    /// When the real streams are present, the synthetic ones are within a
    /// few percent of their size.
    #[test]
    fn synthetic_sizes_close_to_real() {
        if let Some(real) = real("small-v2.stream") {
            let syn = synthetic_small(SMALL_FILES).len() as f64;
            let r = real.bytes.len() as f64;
            assert!((syn / r - 1.0).abs() < 0.05, "{syn} vs {r}");
        }
    }
}
